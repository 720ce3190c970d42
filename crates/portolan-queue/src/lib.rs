//! Distributed scans on PostgreSQL: a scan split into chunks, each chunk leased to one
//! worker at a time, its results stored once.
//!
//! Why it is built this way:
//! - **The database is the only coordinator.** Workers never talk to each other; a lease
//!   is a row lock taken with `FOR UPDATE SKIP LOCKED`, so many workers leasing at once
//!   each get a different chunk without waiting for one another.
//! - **Time is the database's.** Lease expiry compares with the server's `now()` in
//!   milliseconds, so a worker whose clock is wrong can neither keep a lease forever nor
//!   steal a live one.
//! - **Fencing.** Every lease carries a `lease_id` from a sequence. `renew` and `complete`
//!   succeed only while the chunk still carries that id: a worker that stalled past its
//!   lease and was taken over writes nothing, however late it wakes up.
//! - **Results are keyed, not appended.** A result row is upserted on (scan, host, port,
//!   protocol), so a chunk that runs twice (a takeover, an operator's re-run) never
//!   duplicates a port; the last writer's record stands.
//! - **One transaction per completion.** The records, the chunk's `done` and the worker's
//!   counters commit together or not at all, so a crash mid-way leaves the chunk leased
//!   (to expire and run again), never half written.
//!
//! All calls block (the sync `postgres` client); do not call them from inside a tokio
//! runtime. Nothing here prints: every outcome is a value or a [`QueueError`].

mod error;
mod lease;
mod scan;
mod schema;
mod url;

use std::collections::HashMap;
use std::time::Duration;

use postgres::{Client, Config, NoTls, Statement};
use serde::Serialize;

pub use error::{QueueError, Result};
pub use lease::BATCH;
pub use scan::MAX_CHUNKS;
pub use schema::SCHEMA_VERSION;

/// A scan record as the queue stores and returns it: the TLS and HTTP details kept as
/// JSON, whatever the scanner wrote there (the same type the dashboard reads scan files
/// into), so a round trip through the database loses nothing.
pub type Record = portolan_core::ScanRecord<serde_json::Value, serde_json::Value>;

/// The server's clock in milliseconds since the Unix epoch, as SQL: the one clock that
/// leases are judged by.
macro_rules! now_ms {
    () => {
        "(extract(epoch from now()) * 1000)::bigint"
    };
}
pub(crate) use now_ms;

/// How long connecting may take when the URL does not say: a worker pointed at the wrong
/// host gives an error, not a wait of minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long sent data may stay unacknowledged before the connection counts as dead (a
/// server that vanished mid-lease gives an error, not a hang).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// A chunk leased to a worker: what it needs to scan its share, and the fencing token that
/// proves the chunk is still its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lease {
    pub scan_id: i64,
    /// This chunk's index, 0 to `chunks - 1`.
    pub chunk: u32,
    /// How many chunks the scan has (the worker's share is `chunk` of `chunks`).
    pub chunks: u32,
    /// The fencing token: new for every lease of this chunk.
    pub lease_id: i64,
    /// The scan's spec, as `create_scan` was given it.
    pub spec: serde_json::Value,
    pub seed: u64,
    /// This worker's share of the scan's `max_rate` (packets per second): the scan's rate
    /// divided by the workers that held a lease of it within the last lease period, this
    /// one included. None when the scan has no rate limit.
    pub rate: Option<f64>,
}

/// Where a scan is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanState {
    /// Created, or resumed after a cancel; no chunk leased since.
    Queued,
    /// At least one chunk was leased.
    Running,
    /// Every chunk is done.
    Complete,
    /// Stopped by `cancel`: nothing of it is leased until `resume`.
    Cancelled,
}

impl ScanState {
    pub const fn as_str(self) -> &'static str {
        match self {
            ScanState::Queued => "queued",
            ScanState::Running => "running",
            ScanState::Complete => "complete",
            ScanState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<ScanState> {
        Some(match s {
            "queued" => ScanState::Queued,
            "running" => ScanState::Running,
            "complete" => ScanState::Complete,
            "cancelled" => ScanState::Cancelled,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ScanState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scan's progress, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub id: i64,
    pub state: ScanState,
    pub created_ms: i64,
    /// The first lease (None before any).
    pub started_ms: Option<i64>,
    /// When the last chunk was done (None until the scan is complete; when cancelled,
    /// when it was cancelled).
    pub finished_ms: Option<i64>,
    /// The database's clock when this status was read: ages (a worker's last sign of life)
    /// are to be measured against it, not against the reader's clock.
    pub now_ms: i64,
    pub chunks: u32,
    pub done: u32,
    /// Chunks under a lease that has not expired.
    pub leased: u32,
    /// Chunks waiting for a worker, expired leases included (any worker may take them).
    pub pending: u32,
    /// Positions (host x port) of the whole scan, as `create_scan` was told.
    pub positions: u64,
    /// Positions that the done chunks covered, as their workers reported.
    pub positions_done: u64,
    /// Result rows stored (distinct host, port, protocol).
    pub results: u64,
    /// Of which open.
    pub open: u64,
    /// Workers that did a chunk of this scan, hold a lease of it, or last said they work
    /// on it; by name.
    pub workers: Vec<WorkerStatus>,
    /// Positions per second over the chunks finished in the last 60 s (or since the first
    /// lease, for a younger scan); for a complete scan, over its whole run. None before any
    /// chunk is done.
    pub rate_pps: Option<f64>,
    /// Seconds to go at `rate_pps`: None when the rate is unknown or zero, or the scan is
    /// cancelled; 0 when complete.
    pub eta_s: Option<f64>,
}

/// One worker as a scan's status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerStatus {
    pub name: String,
    /// The database's clock at the worker's last call (lease, renew, complete,
    /// heartbeat); 0 when the worker has no row (never happens through this crate).
    pub last_seen_ms: i64,
    /// Chunks of this scan the worker finished.
    pub chunks_done: u64,
    /// Positions those chunks covered.
    pub positions_done: u64,
    /// The chunk of this scan it holds a live lease on (the lowest, if several).
    pub leased_chunk: Option<u32>,
}

/// One line of the list of scans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanSummary {
    pub id: i64,
    pub created_ms: i64,
    pub state: ScanState,
    pub chunks: u32,
    pub done: u32,
    /// Open ports found so far.
    pub open: u64,
}

/// A connection to the queue's database.
pub struct Queue {
    conn: Conn,
    who: Who,
}

/// The session and what it needs to start again.
struct Conn {
    client: Client,
    /// To connect again after the connection was lost (a server restart).
    config: Config,
    /// Statements prepared on this session (they go with it).
    statements: HashMap<&'static str, Statement>,
}

/// How to name this queue in an error, and what to hide there.
struct Who {
    /// The URL with its password replaced by `***`, escaped.
    shown: String,
    /// The password as written and as decoded.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("url", &self.who.shown)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Connects to the database `url` names (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`,
    /// or `postgresql://`), and creates or upgrades the queue's tables there. Plain TCP, a
    /// 5 s connect timeout unless the URL sets one.
    pub fn connect(url: &str) -> Result<Queue> {
        let shown = url::for_humans(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(QueueError::NotPostgres { url: shown });
        }
        let mut secrets = url::written_secrets(url);
        let mut config: Config = url
            .parse()
            .map_err(|e: postgres::Error| QueueError::BadUrl {
                url: shown.clone(),
                reason: url::scrub(&url::reason(&e), &secrets),
            })?;
        if let Some(pw) = config.get_password() {
            secrets.push(String::from_utf8_lossy(pw).into_owned());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("portolan-queue");
        }
        let who = Who { shown, secrets };
        let mut client = who.connect(&config)?;
        schema::migrate(&mut client).map_err(|e| match e {
            schema::MigrateError::Db(e) => who.db("creating the queue's tables")(e),
            schema::MigrateError::TooNew(found) => QueueError::SchemaTooNew {
                url: who.shown.clone(),
                found,
                supported: SCHEMA_VERSION,
            },
        })?;
        Ok(Queue {
            conn: Conn {
                client,
                config,
                statements: HashMap::new(),
            },
            who,
        })
    }

    /// `url` as it may be shown to people: the password replaced by `***`, control
    /// characters escaped.
    pub fn url_for_humans(url: &str) -> String {
        url::for_humans(url)
    }
}

/// A name for this worker process: the machine's name and the process id
/// (`scanner-3:4121`), unique among the workers of one queue as long as machines' names
/// are.
pub fn worker_name() -> String {
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("{host}:{}", rustix::process::getpid().as_raw_nonzero())
}

impl Who {
    fn connect(&self, config: &Config) -> Result<Client> {
        config.connect(NoTls).map_err(|e| QueueError::Connect {
            url: self.shown.clone(),
            reason: url::scrub(&url::reason(&e), &self.secrets),
        })
    }

    /// Turns a client error during `action` into the crate's error.
    fn db(&self, action: &'static str) -> impl Fn(postgres::Error) -> QueueError + '_ {
        move |e| QueueError::Db {
            url: self.shown.clone(),
            action,
            reason: url::scrub(&url::reason(&e), &self.secrets),
        }
    }
}

impl Conn {
    /// Opens a new session when the last one was lost (a server restart, a network cut):
    /// the call that saw the loss failed; the next one works again without the caller
    /// having to connect anew.
    fn live(&mut self, who: &Who) -> Result<()> {
        if self.client.is_closed() {
            self.client = who.connect(&self.config)?;
            self.statements.clear();
        }
        Ok(())
    }

    /// `sql` prepared on this session, once.
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql)?;
        self.statements.insert(sql, st.clone());
        Ok(st)
    }

    /// Several statements prepared, in order.
    fn statements<const N: usize>(
        &mut self,
        sql: [&'static str; N],
    ) -> Result<[Statement; N], postgres::Error> {
        let mut out = Vec::with_capacity(N);
        for s in sql {
            out.push(self.statement(s)?);
        }
        Ok(out
            .try_into()
            .unwrap_or_else(|_| unreachable!("one statement per text")))
    }
}

/// A count from the database (BIGINT, never negative) as a u32, saturating.
fn count_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// The same as a u64.
fn count_u64(v: i64) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(0)
}

/// A duration as whole milliseconds for the database: at least 1, at most a week (a
/// longer lease is a mistake, and the bound keeps `now + lease` far from overflow).
fn lease_ms(action: &'static str, d: Duration) -> Result<i64> {
    const WEEK_MS: u128 = 7 * 24 * 3600 * 1000;
    let ms = d.as_millis();
    if ms == 0 || ms > WEEK_MS {
        return Err(QueueError::Invalid {
            action,
            reason: format!(
                "a lease of {} ms; it must last 1 ms to a week",
                d.as_millis()
            ),
        });
    }
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// A worker's name, checked before it reaches the database: not empty, at most 200
/// bytes, no NUL (which PostgreSQL's text cannot hold).
fn check_worker(action: &'static str, worker: &str) -> Result<()> {
    let why = if worker.is_empty() {
        "the worker's name is empty"
    } else if worker.len() > 200 {
        "the worker's name is longer than 200 bytes"
    } else if worker.contains('\0') {
        "the worker's name contains a NUL character"
    } else {
        return Ok(());
    };
    Err(QueueError::Invalid {
        action,
        reason: why.to_owned(),
    })
}
