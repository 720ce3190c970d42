//! The history store: every event the watcher recorded, each host's current listeners,
//! when each host was sampled, and the port scans `portolan sentry` detected, in SQLite (one machine) or PostgreSQL (many agents writing to
//! one database). Both backends share one schema (`schema.rs`), one set of SQL statements
//! and one implementation of what a sample does to the tables (this file); the backends only
//! run SQL (`sqlite.rs`, `postgres.rs`).
//!
//! Every sample is one transaction: its events, what they do to the current listeners and
//! the host's sample times are written together or not at all. The current-listeners table
//! is therefore always the replay of the events (`state_at` computes that replay).
//!
//! Scans are apart from all that: one row per scan (`scans`), written by another process
//! than the host's recorder (`record_scan` needs no claim), never part of a replay.

mod postgres;
mod schema;
mod sqlite;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use portolan_core::escape::for_terminal;
use portolan_core::{Exposure, Protocol};

use crate::model::{Event, EventKind, Key, Listener, Owner, Previous, ScanRecord};

use self::postgres::PostgresStore;
pub use self::schema::SCHEMA_VERSION;
use self::sqlite::SqliteStore;

/// A place that keeps the watcher's history. Methods take `&mut self` because both
/// backends hold one connection; a `Store` is used from one thread at a time.
///
/// The PostgreSQL backend uses the synchronous `postgres` client, which runs its own small
/// runtime: call it from a plain thread (or `spawn_blocking`), never from inside an async
/// task.
pub trait Store: Send {
    /// One transaction per sample: append `events` (may be empty), apply them to the host's
    /// current-listeners table (present/opened -> upsert; closed -> delete;
    /// restarted/owner_changed -> update owner; exposure_changed -> delete the previous
    /// address's row, upsert the new), and record `ts_ms` as the host's last sample time (and
    /// first sample time if new). All or nothing. Every event's `host` must be `host`.
    fn record(&mut self, host: &str, ts_ms: i64, events: &[Event]) -> Result<(), StoreError>;

    /// What the store last knew of a host: last sample time and its current listeners
    /// (sorted by key); None if the host never recorded.
    fn last_state(&mut self, host: &str) -> Result<Option<HostState>, StoreError>;

    /// Events matching the filter, oldest first (by time, then by the order recorded).
    fn events(&mut self, filter: &EventFilter) -> Result<Vec<Event>, StoreError>;

    /// The host's listeners (sorted by key) as they were at `ts_ms`, by replaying its events
    /// up to and including `ts_ms`. `history_starts_ms` is the host's first sample time
    /// (None when the host never recorded), so a caller can warn when `ts_ms` is before it.
    fn state_at(&mut self, host: &str, ts_ms: i64) -> Result<StateAt, StoreError>;

    /// Every host in the store (sorted by name) with its first and last sample times and
    /// current listener count.
    fn hosts(&mut self) -> Result<Vec<HostInfo>, StoreError>;

    /// Records a port scan that `portolan sentry` detected: inserts it, or, when the store
    /// already holds a scan of `scan.host` with `scan.key`, replaces every other field of
    /// that row with `scan`'s (the sentry records a scan again as it grows, and once more
    /// when it ends). One short write transaction; recording the same record twice is
    /// harmless, so a writer that cannot know whether its COMMIT took effect may send it
    /// again.
    ///
    /// Does not need [`Store::claim_host`], and must not be made to: the sentry writes
    /// beside the `portolan watch` that holds the host's claim. On SQLite the two processes
    /// take turns at the file's write lock (WAL; each waits up to the 5 s busy timeout).
    /// Refuses ([`StoreError::Invalid`], nothing written) an empty host or key, more than
    /// [`ScanRecord::MAX_SOURCES`] sources or [`ScanRecord::MAX_PORTS`] ports, and a count
    /// beyond `i64::MAX`. Never touches the events, listeners or hosts tables.
    fn record_scan(&mut self, scan: &ScanRecord) -> Result<(), StoreError>;

    /// Scans matching the filter, oldest first (by start time, then in the order first
    /// recorded). A store of a schema before scans (version 1), opened for reading, has
    /// none: the list is empty.
    fn scans(&mut self, filter: &ScanFilter) -> Result<Vec<ScanRecord>, StoreError>;

    /// Makes this handle the only recorder of `host` in this store while it lives. A second
    /// `portolan watch` writing the same host into the same store would record every change
    /// twice and fight over the current state, so it is refused. SQLite: an exclusive
    /// `flock` on `FILE-watch.lock` (one recorder per file); PostgreSQL: a session advisory
    /// lock per host, taken again after a reconnect.
    fn claim_host(&mut self, host: &str) -> Result<(), StoreError>;

    /// Where the store is, for messages: a path, or the PostgreSQL URL with any password
    /// replaced by `***`. Control characters are escaped.
    fn describe(&self) -> String;
}

/// What the store last knew of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub last_sample_ms: i64,
    pub listeners: Vec<Listener>,
}

/// A host's listeners at some moment, from the replay of its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateAt {
    pub listeners: Vec<Listener>,
    /// The host's first sample time; None when the host has no history at all.
    pub history_starts_ms: Option<i64>,
}

/// One host of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub host: String,
    pub first_sample_ms: i64,
    pub last_sample_ms: i64,
    /// How many listeners the host has now (the current-listeners table).
    pub listeners: usize,
}

/// Which events to read. Every field narrows; the default is every event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub host: Option<String>,
    /// At or after this time (inclusive).
    pub since_ms: Option<i64>,
    /// At or before this time (inclusive).
    pub until_ms: Option<i64>,
    pub port: Option<u16>,
    pub proto: Option<Protocol>,
    /// Matches, exactly, the owner's command name, its executable path or the executable's
    /// file name; the owner before the change counts too (so an owner change away from
    /// `nginx` is among nginx's events).
    pub process: Option<String>,
    /// Matches the owner's systemd unit exactly (before or after the change).
    pub unit: Option<String>,
    /// Empty means every kind.
    pub kinds: Vec<EventKind>,
    /// Only the newest N matching events (still returned oldest first).
    pub limit: Option<usize>,
}

/// Which scans to read. Every field narrows; the default is every scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanFilter {
    pub host: Option<String>,
    /// Scans that went on at or after this time: their last probe or their end is at or
    /// after it (inclusive).
    pub since_ms: Option<i64>,
    /// Scans that started at or before this time (inclusive). With `since_ms`: every scan
    /// that overlaps the range.
    pub until_ms: Option<i64>,
    /// Scans from this address: one of the listed sources (a distributed scan lists at most
    /// [`ScanRecord::MAX_SOURCES`]; sources beyond those are not known to the store).
    pub source: Option<IpAddr>,
    /// Scans that tried this port, of any protocol: one of the listed ports (at most
    /// [`ScanRecord::MAX_PORTS`]).
    pub port: Option<u16>,
    /// Only the N scans that started last (still returned oldest first).
    pub limit: Option<usize>,
}

/// Everything that can go wrong with the history store. Messages name the store (a path, or
/// the PostgreSQL URL with the password replaced by `***`) and what failed; they never hold
/// a password, and text from the database or the user is escaped for a terminal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite file (or its directory) could not be opened, created or read as a database.
    #[error("cannot open {store}: {reason}")]
    Open { store: String, reason: String },
    /// The PostgreSQL server could not be reached or refused us.
    #[error("{store}: {reason}")]
    Connect { store: String, reason: String },
    /// A reader was pointed at a store that does not exist (reading never creates one).
    #[error("no history at {store}: start `portolan watch` first")]
    Missing { store: String },
    /// A reader was pointed at a database that is not a portolan history (or not one it
    /// can read); it was left as it was.
    #[error("{store} is not a portolan history: {reason}")]
    NotHistory { store: String, reason: String },
    /// A `postgres://` URL that does not parse.
    #[error("invalid PostgreSQL URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The schema is newer than this build knows.
    #[error(
        "{store} was written by a newer portolan (schema {found}, this one knows {known}); \
         upgrade portolan to use it"
    )]
    NewerSchema {
        store: String,
        found: i64,
        known: i64,
    },
    /// Creating or upgrading the schema failed.
    #[error("{store}: cannot create or upgrade the schema: {reason}")]
    Migrate { store: String, reason: String },
    /// A statement failed.
    #[error("{store}: {action} failed: {reason}")]
    Failed {
        store: String,
        action: &'static str,
        reason: String,
    },
    /// A row holds something this build cannot read (written by another program, or damaged).
    #[error("{store}: {table} row {row}: {reason}")]
    BadRow {
        store: String,
        table: &'static str,
        row: String,
        reason: String,
    },
    /// The caller asked for something the store cannot do.
    #[error("{store}: {reason}")]
    Invalid { store: String, reason: String },
    /// Another process already records this host into this store.
    #[error("{store}: another portolan watch is already recording {what}{holder}; stop it first")]
    Busy {
        store: String,
        what: String,
        /// ` (pid N)` when known.
        holder: String,
    },
    /// No default place for the SQLite file.
    #[error(
        "cannot choose where to keep the history: neither XDG_DATA_HOME nor HOME is set; \
         name a database file or a postgres:// URL"
    )]
    NoDataDir,
}

/// Opens (creating and migrating as needed) the store that `spec` names: a URL starting
/// with `postgres://` or `postgresql://` is a PostgreSQL database, anything else a SQLite
/// file path (missing parent directories are created with mode 0700, a new file with 0600).
pub fn open(spec: &str) -> Result<Box<dyn Store>, StoreError> {
    if is_postgres_url(spec) {
        Ok(Box::new(PostgresStore::connect(spec)?))
    } else {
        open_sqlite(Path::new(spec))
    }
}

/// [`open`] for a SQLite file named by a path, whatever its bytes (a path need not be
/// UTF-8, a spec must).
pub fn open_sqlite(path: &Path) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(SqliteStore::open(path)?))
}

/// Opens the store that `spec` names for reading only, as `history` and `diff` do: nothing
/// is created, migrated or written. A store of an older schema that this build still reads
/// (from version 1, before scans) is read as it is: what a later migration added is
/// missing from it (its [`Store::scans`] are none). A missing SQLite file is
/// [`StoreError::Missing`]; a database without portolan's tables (or whose tables are
/// views, or of a schema version this build does not read) is [`StoreError::NotHistory`]
/// (a newer one [`StoreError::NewerSchema`]) and is left untouched. Every SQLite statement
/// is bounded in time, so a hostile file gives an error rather than a hang.
pub fn open_read_only(spec: &str) -> Result<Box<dyn Store>, StoreError> {
    if is_postgres_url(spec) {
        Ok(Box::new(PostgresStore::connect_read_only(spec)?))
    } else {
        open_sqlite_read_only(Path::new(spec))
    }
}

/// [`open_read_only`] for a SQLite file named by a path, whatever its bytes.
pub fn open_sqlite_read_only(path: &Path) -> Result<Box<dyn Store>, StoreError> {
    Ok(Box::new(SqliteStore::open_read_only(path)?))
}

/// True when `spec` names a PostgreSQL database rather than a file.
fn is_postgres_url(spec: &str) -> bool {
    let lower = spec.get(..13).unwrap_or(spec).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Where the SQLite history lives by default: `/var/lib/portolan/history.sqlite` for root,
/// else `$XDG_DATA_HOME/portolan/history.sqlite`, else
/// `$HOME/.local/share/portolan/history.sqlite`.
pub fn default_sqlite_path() -> Result<PathBuf, StoreError> {
    if rustix::process::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/portolan/history.sqlite"));
    }
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(data) = absolute("XDG_DATA_HOME") {
        return Ok(data.join("portolan/history.sqlite"));
    }
    if let Some(home) = absolute("HOME") {
        return Ok(home.join(".local/share/portolan/history.sqlite"));
    }
    Err(StoreError::NoDataDir)
}

// ---------------------------------------------------------------------------------------
// What the backends provide: SQL with numbered parameters, values of three shapes.

/// A value crossing the SQL boundary. Both schemas use only integers and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    /// Something read back that is neither (a float, a blob, text that is not UTF-8): kept
    /// as a description so that the row's reader can name the row in its error.
    Other(String),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<Option<&str>> for Value {
    fn from(s: Option<&str>) -> Self {
        s.map_or(Value::Null, Value::from)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<Option<u32>> for Value {
    fn from(i: Option<u32>) -> Self {
        i.map_or(Value::Null, |i| Value::Int(i64::from(i)))
    }
}

/// A database error's message, already free of secrets, for `StoreError`'s `reason`.
#[derive(Debug)]
pub(crate) struct DbError(pub String);

/// SQL execution, as both backends provide it. Statements are written with PostgreSQL's
/// `$1` placeholders; the SQLite backend turns them into `?1`.
pub(crate) trait Sql {
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError>;
}

/// A backend: runs a closure inside one transaction (a write transaction when `write`, else
/// a read-only snapshot), committing when it returns Ok and rolling back otherwise.
pub(crate) trait Backend {
    /// "history database PATH" or "PostgreSQL at URL", escaped, for error messages.
    fn label(&self) -> &str;
    /// The store's schema version: [`SCHEMA_VERSION`] for a writer (it migrated); for a
    /// reader, what the store had when it was opened (from [`schema::OLDEST_READ`] on).
    fn schema_version(&self) -> i64;
    fn transaction(
        &mut self,
        write: bool,
        action: &'static str,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// `Store` for a `Backend`: every method is the shared function of this module over that
/// backend; `describe` is the backend's own.
macro_rules! store_over_backend {
    ($ty:ty, |$s:ident| $describe:expr) => {
        impl $crate::store::Store for $ty {
            fn record(
                &mut self,
                host: &str,
                ts_ms: i64,
                events: &[$crate::model::Event],
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::record(self, host, ts_ms, events)
            }
            fn last_state(
                &mut self,
                host: &str,
            ) -> Result<Option<$crate::store::HostState>, $crate::store::StoreError> {
                $crate::store::last_state(self, host)
            }
            fn events(
                &mut self,
                filter: &$crate::store::EventFilter,
            ) -> Result<Vec<$crate::model::Event>, $crate::store::StoreError> {
                $crate::store::events(self, filter)
            }
            fn state_at(
                &mut self,
                host: &str,
                ts_ms: i64,
            ) -> Result<$crate::store::StateAt, $crate::store::StoreError> {
                $crate::store::state_at(self, host, ts_ms)
            }
            fn hosts(&mut self) -> Result<Vec<$crate::store::HostInfo>, $crate::store::StoreError> {
                $crate::store::hosts(self)
            }
            fn record_scan(
                &mut self,
                scan: &$crate::model::ScanRecord,
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::record_scan(self, scan)
            }
            fn scans(
                &mut self,
                filter: &$crate::store::ScanFilter,
            ) -> Result<Vec<$crate::model::ScanRecord>, $crate::store::StoreError> {
                $crate::store::scans(self, filter)
            }
            fn claim_host(&mut self, host: &str) -> Result<(), $crate::store::StoreError> {
                self.claim(host)
            }
            fn describe(&self) -> String {
                let $s = self;
                $describe
            }
        }
    };
}
pub(crate) use store_over_backend;

/// Runs `f` in a transaction and hands back what it produced.
fn in_tx<T>(
    db: &mut dyn Backend,
    write: bool,
    action: &'static str,
    mut f: impl FnMut(&mut dyn Sql, &str) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let label = db.label().to_owned();
    let mut out = None;
    db.transaction(write, action, &mut |sql| {
        out = Some(f(sql, &label)?);
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Failed {
        store: label,
        action,
        reason: "the transaction produced no result".into(),
    })
}

fn failed<'a>(store: &'a str, action: &'static str) -> impl FnOnce(DbError) -> StoreError + 'a {
    move |e| StoreError::Failed {
        store: store.to_owned(),
        action,
        reason: e.0,
    }
}

// ---------------------------------------------------------------------------------------
// The statements, shared by both backends.

/// What readers select from `hosts`, in the order `hosts` reads them.
const HOST_COLS: &str = "host, first_sample_ms, last_sample_ms";

/// What readers select from `listeners` (a host's), in the order [`RowReader::listener`]
/// reads them.
const LISTENER_COLS: &str =
    "proto, address, port, exposure, pid, process, exe, user_name, uid, unit, container";

/// What readers select from `events`, in the order `event_from_row` reads them.
const EVENT_COLS: &str = "id, host, ts_ms, kind, proto, address, port, exposure, \
     pid, process, exe, user_name, uid, unit, container, \
     previous_address, previous_exposure, previous_pid, previous_process, previous_exe, \
     previous_user_name, previous_uid, previous_unit, previous_container, note";

const INSERT_EVENT: &str = "INSERT INTO events (host, ts_ms, kind, proto, address, port, \
     exposure, pid, process, exe, user_name, uid, unit, container, previous_address, \
     previous_exposure, previous_pid, previous_process, previous_exe, previous_user_name, \
     previous_uid, previous_unit, previous_container, note) VALUES ($1, $2, $3, $4, $5, $6, \
     $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)";

const UPSERT_LISTENER: &str = "INSERT INTO listeners (host, proto, address, port, exposure, \
     pid, process, exe, user_name, uid, unit, container) VALUES ($1, $2, $3, $4, $5, $6, $7, \
     $8, $9, $10, $11, $12) ON CONFLICT (host, proto, address, port) DO UPDATE SET \
     exposure = excluded.exposure, pid = excluded.pid, process = excluded.process, \
     exe = excluded.exe, user_name = excluded.user_name, uid = excluded.uid, \
     unit = excluded.unit, container = excluded.container";

const DELETE_LISTENER: &str =
    "DELETE FROM listeners WHERE host = $1 AND proto = $2 AND address = $3 AND port = $4";

const UPSERT_HOST: &str = "INSERT INTO hosts (host, first_sample_ms, last_sample_ms) \
     VALUES ($1, $2, $2) ON CONFLICT (host) DO UPDATE SET last_sample_ms = excluded.last_sample_ms";

/// What readers select from `scans`, in the order `scan_from_row` reads them.
const SCAN_COLS: &str = "id, host, scan_key, started_ms, detected_ms, last_ms, ended_ms, \
     sources, sources_total, detector, kinds, tool, tool_because, ports, ports_total, probes, \
     failed, probes_to_detect, blocked_until_ms";

/// A scan's row, inserted or (same host and key) replaced field by field.
const UPSERT_SCAN: &str = "INSERT INTO scans (host, scan_key, started_ms, detected_ms, \
     last_ms, ended_ms, sources, sources_total, detector, kinds, tool, tool_because, ports, \
     ports_total, probes, failed, probes_to_detect, blocked_until_ms) VALUES ($1, $2, $3, $4, \
     $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
     ON CONFLICT (host, scan_key) DO UPDATE SET started_ms = excluded.started_ms, \
     detected_ms = excluded.detected_ms, last_ms = excluded.last_ms, \
     ended_ms = excluded.ended_ms, sources = excluded.sources, \
     sources_total = excluded.sources_total, detector = excluded.detector, \
     kinds = excluded.kinds, tool = excluded.tool, tool_because = excluded.tool_because, \
     ports = excluded.ports, ports_total = excluded.ports_total, probes = excluded.probes, \
     failed = excluded.failed, probes_to_detect = excluded.probes_to_detect, \
     blocked_until_ms = excluded.blocked_until_ms";

fn owner_params(o: &Owner) -> [Value; 7] {
    [
        Value::from(o.pid),
        Value::from(o.process.as_deref()),
        Value::from(o.exe.as_deref()),
        Value::from(o.user.as_deref()),
        Value::Int(i64::from(o.uid)),
        Value::from(o.unit.as_deref()),
        Value::from(o.container.as_deref()),
    ]
}

fn key_params(host: &str, proto: Protocol, address: IpAddr, port: u16) -> Vec<Value> {
    vec![
        Value::from(host),
        Value::from(proto.as_str()),
        Value::Text(address.to_string()),
        Value::Int(i64::from(port)),
    ]
}

fn upsert_listener(db: &mut dyn Sql, host: &str, l: &Listener) -> Result<u64, DbError> {
    let mut p = key_params(host, l.proto, l.address, l.port);
    p.push(Value::from(l.exposure.as_str()));
    p.extend(owner_params(&l.owner));
    db.execute(UPSERT_LISTENER, &p)
}

fn delete_listener(db: &mut dyn Sql, host: &str, key: Key) -> Result<u64, DbError> {
    db.execute(
        DELETE_LISTENER,
        &key_params(host, key.proto, key.address, key.port),
    )
}

/// What one event does to a host's listeners: the place it empties, if any, then the
/// listener it puts in place, if any. `record` applies this to the current-listeners table
/// and `state_at`'s replay to a map, so the two cannot disagree.
fn effect(e: &Event) -> (Option<Key>, Option<&Listener>) {
    match e.kind {
        EventKind::Present | EventKind::Opened | EventKind::Restarted | EventKind::OwnerChanged => {
            (None, Some(&e.listener))
        }
        EventKind::Closed => (Some(e.listener.key()), None),
        // The same protocol and port at the previous address.
        EventKind::ExposureChanged => (
            e.previous.as_ref().map(|prev| Key {
                address: prev.address,
                ..e.listener.key()
            }),
            Some(&e.listener),
        ),
    }
}

/// One event of `state_at`'s replay.
fn apply(state: &mut BTreeMap<Key, Listener>, e: &Event) {
    let (gone, now) = effect(e);
    if let Some(key) = gone {
        state.remove(&key);
    }
    if let Some(l) = now {
        state.insert(l.key(), l.clone());
    }
}

fn event_params(host: &str, e: &Event) -> Vec<Value> {
    let l = &e.listener;
    let mut p = vec![
        Value::from(host),
        Value::Int(e.ts_ms),
        Value::from(e.kind.as_str()),
        Value::from(l.proto.as_str()),
        Value::Text(l.address.to_string()),
        Value::Int(i64::from(l.port)),
        Value::from(l.exposure.as_str()),
    ];
    p.extend(owner_params(&l.owner));
    match &e.previous {
        Some(prev) => {
            p.push(Value::Text(prev.address.to_string()));
            p.push(Value::from(prev.exposure.as_str()));
            p.extend(owner_params(&prev.owner));
        }
        None => p.extend(std::iter::repeat_n(Value::Null, 9)),
    }
    p.push(Value::from(e.note.as_deref()));
    p
}

// ---------------------------------------------------------------------------------------
// The operations, over any backend.

fn record(
    db: &mut dyn Backend,
    host: &str,
    ts_ms: i64,
    events: &[Event],
) -> Result<(), StoreError> {
    const ACTION: &str = "recording a sample";
    if let Some(e) = events.iter().find(|e| e.host != host) {
        return Err(StoreError::Invalid {
            store: db.label().to_owned(),
            reason: format!(
                "an event of host {:?} was given to record for host {:?}",
                for_terminal(&e.host),
                for_terminal(host)
            ),
        });
    }
    in_tx(db, true, ACTION, |sql, label| {
        let fail = || failed(label, ACTION);
        if already_recorded(sql, host, ts_ms, events).map_err(fail())? {
            return Ok(());
        }
        for e in events {
            sql.execute(INSERT_EVENT, &event_params(host, e))
                .map_err(fail())?;
            let (gone, now) = effect(e);
            if let Some(key) = gone {
                delete_listener(sql, host, key).map_err(fail())?;
            }
            if let Some(l) = now {
                upsert_listener(sql, host, l).map_err(fail())?;
            }
        }
        sql.execute(UPSERT_HOST, &[Value::from(host), Value::Int(ts_ms)])
            .map_err(fail())?;
        Ok(())
    })
}

/// True when this very sample is already in the store: the host's last sample is at
/// `ts_ms` and its newest event matches this sample's last (time, kind, protocol, address,
/// port and pid). A writer whose COMMIT failed on a
/// lost connection cannot know whether it took effect and records the sample again; this
/// makes that second attempt a no-op instead of a duplicate.
fn already_recorded(
    sql: &mut dyn Sql,
    host: &str,
    ts_ms: i64,
    events: &[Event],
) -> Result<bool, DbError> {
    let Some(last) = events.last() else {
        return Ok(false);
    };
    let rows = sql.query(
        "SELECT last_sample_ms FROM hosts WHERE host = $1",
        &[Value::from(host)],
    )?;
    if rows.first().and_then(|r| r.first()) != Some(&Value::Int(ts_ms)) {
        return Ok(false);
    }
    let rows = sql.query(
        "SELECT ts_ms, kind, proto, address, port, pid FROM events WHERE host = $1 \
         ORDER BY id DESC LIMIT 1",
        &[Value::from(host)],
    )?;
    let l = &last.listener;
    let want = vec![
        Value::Int(last.ts_ms),
        Value::from(last.kind.as_str()),
        Value::from(l.proto.as_str()),
        Value::Text(l.address.to_string()),
        Value::Int(i64::from(l.port)),
        Value::from(l.owner.pid),
    ];
    Ok(rows.first() == Some(&want))
}

fn host_times(
    sql: &mut dyn Sql,
    label: &str,
    action: &'static str,
    host: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let rows = sql
        .query(
            "SELECT first_sample_ms, last_sample_ms FROM hosts WHERE host = $1",
            &[Value::from(host)],
        )
        .map_err(failed(label, action))?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut r = RowReader::new(label, "hosts", format!("{:?}", for_terminal(host)), row);
    Ok(Some((r.int("first_sample_ms")?, r.int("last_sample_ms")?)))
}

fn current_listeners(
    sql: &mut dyn Sql,
    label: &str,
    action: &'static str,
    host: &str,
) -> Result<Vec<Listener>, StoreError> {
    let rows = sql
        .query(
            &format!("SELECT {LISTENER_COLS} FROM listeners WHERE host = $1"),
            &[Value::from(host)],
        )
        .map_err(failed(label, action))?;
    let mut out = rows
        .iter()
        .map(|row| {
            let name = format!(
                "({:?}, {}, {}, {})",
                for_terminal(host),
                describe_value(row.first()),
                describe_value(row.get(1)),
                describe_value(row.get(2))
            );
            let mut r = RowReader::new(label, "listeners", name, row);
            r.listener()
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(Listener::key);
    Ok(out)
}

fn last_state(db: &mut dyn Backend, host: &str) -> Result<Option<HostState>, StoreError> {
    const ACTION: &str = "reading the last state";
    in_tx(db, false, ACTION, |sql, label| {
        let Some((_, last)) = host_times(sql, label, ACTION, host)? else {
            return Ok(None);
        };
        Ok(Some(HostState {
            last_sample_ms: last,
            listeners: current_listeners(sql, label, ACTION, host)?,
        }))
    })
}

fn read_events(
    sql: &mut dyn Sql,
    label: &str,
    action: &'static str,
    query: &str,
    params: &[Value],
) -> Result<Vec<Event>, StoreError> {
    let rows = sql.query(query, params).map_err(failed(label, action))?;
    rows.iter().map(|row| event_from_row(label, row)).collect()
}

/// Adds a parameter, giving its placeholder.
fn next(v: Value, params: &mut Vec<Value>) -> String {
    params.push(v);
    format!("${}", params.len())
}

/// The WHERE clause and parameters for a filter (parameters numbered from 1).
fn filter_sql(f: &EventFilter) -> (String, Vec<Value>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some(h) = &f.host {
        clauses.push(format!(
            "host = {}",
            next(Value::from(h.as_str()), &mut params)
        ));
    }
    if let Some(t) = f.since_ms {
        clauses.push(format!("ts_ms >= {}", next(Value::Int(t), &mut params)));
    }
    if let Some(t) = f.until_ms {
        clauses.push(format!("ts_ms <= {}", next(Value::Int(t), &mut params)));
    }
    if let Some(p) = f.port {
        clauses.push(format!(
            "port = {}",
            next(Value::Int(i64::from(p)), &mut params)
        ));
    }
    if let Some(p) = f.proto {
        clauses.push(format!(
            "proto = {}",
            next(Value::from(p.as_str()), &mut params)
        ));
    }
    if let Some(name) = &f.process {
        // A name with a slash is a path: only the whole executable path matches it.
        let n = next(Value::from(name.as_str()), &mut params);
        let tail =
            (!name.contains('/')).then(|| next(Value::Text(format!("/{name}")), &mut params));
        let mut any = Vec::new();
        for prefix in ["", "previous_"] {
            any.push(format!(
                "{prefix}process = CAST({n} AS TEXT) OR {prefix}exe = CAST({n} AS TEXT)"
            ));
            if let Some(tail) = &tail {
                any.push(format!(
                    "substr({prefix}exe, length({prefix}exe) - length(CAST({tail} AS TEXT)) + 1) \
                     = CAST({tail} AS TEXT)"
                ));
            }
        }
        clauses.push(format!("({})", any.join(" OR ")));
    }
    if let Some(u) = &f.unit {
        let n = next(Value::from(u.as_str()), &mut params);
        clauses.push(format!(
            "(unit = CAST({n} AS TEXT) OR previous_unit = CAST({n} AS TEXT))"
        ));
    }
    if !f.kinds.is_empty() {
        let list: Vec<String> = f
            .kinds
            .iter()
            .map(|k| next(Value::from(k.as_str()), &mut params))
            .collect();
        clauses.push(format!("kind IN ({})", list.join(", ")));
    }
    let mut out = String::new();
    if !clauses.is_empty() {
        let _ = write!(out, " WHERE {}", clauses.join(" AND "));
    }
    (out, params)
}

fn events(db: &mut dyn Backend, filter: &EventFilter) -> Result<Vec<Event>, StoreError> {
    const ACTION: &str = "reading events";
    if filter.limit == Some(0) {
        return Ok(Vec::new());
    }
    let (clause, mut params) = filter_sql(filter);
    let query = match filter.limit {
        None => format!("SELECT {EVENT_COLS} FROM events{clause} ORDER BY ts_ms, id"),
        Some(n) => {
            params.push(Value::Int(i64::try_from(n).unwrap_or(i64::MAX)));
            format!(
                "SELECT {EVENT_COLS} FROM events{clause} ORDER BY ts_ms DESC, id DESC LIMIT ${}",
                params.len()
            )
        }
    };
    let mut out = in_tx(db, false, ACTION, |sql, label| {
        read_events(sql, label, ACTION, &query, &params)
    })?;
    if filter.limit.is_some() {
        out.reverse();
    }
    Ok(out)
}

/// A scan's parameters for [`UPSERT_SCAN`], or why the store refuses the record.
fn scan_params(scan: &ScanRecord) -> Result<Vec<Value>, String> {
    if scan.host.is_empty() {
        return Err("a scan without a host".into());
    }
    if scan.key.is_empty() {
        return Err(format!(
            "a scan of host {:?} without a key",
            for_terminal(&scan.host)
        ));
    }
    let named = |what: String| {
        format!(
            "scan {:?} of host {:?}: {what}",
            for_terminal(&scan.key),
            for_terminal(&scan.host)
        )
    };
    if scan.sources.len() > ScanRecord::MAX_SOURCES {
        return Err(named(format!(
            "{} sources listed, at most {} are kept",
            scan.sources.len(),
            ScanRecord::MAX_SOURCES
        )));
    }
    if scan.ports.len() > ScanRecord::MAX_PORTS {
        return Err(named(format!(
            "{} ports listed, at most {} are kept",
            scan.ports.len(),
            ScanRecord::MAX_PORTS
        )));
    }
    let count = |name: &str, n: u64| {
        i64::try_from(n)
            .map(Value::Int)
            .map_err(|_| named(format!("{name} {n} is beyond what the store keeps")))
    };
    let list = |items: Vec<String>| {
        serde_json::to_string(&items)
            .map(Value::Text)
            .map_err(|e| named(format!("cannot write a list: {e}")))
    };
    let opt_int = |v: Option<i64>| v.map_or(Value::Null, Value::Int);
    Ok(vec![
        Value::from(scan.host.as_str()),
        Value::from(scan.key.as_str()),
        Value::Int(scan.started_ms),
        Value::Int(scan.detected_ms),
        Value::Int(scan.last_ms),
        opt_int(scan.ended_ms),
        list(scan.sources.iter().map(ToString::to_string).collect())?,
        count("sources_total", scan.sources_total)?,
        Value::from(scan.detector.as_str()),
        list(scan.kinds.clone())?,
        Value::from(scan.tool.as_deref()),
        Value::from(scan.tool_because.as_deref()),
        list(scan.ports.clone())?,
        count("ports_total", scan.ports_total)?,
        count("probes", scan.probes)?,
        count("failed", scan.failed)?,
        count("probes_to_detect", scan.probes_to_detect)?,
        opt_int(scan.blocked_until_ms),
    ])
}

fn record_scan(db: &mut dyn Backend, scan: &ScanRecord) -> Result<(), StoreError> {
    const ACTION: &str = "recording a scan";
    let params = scan_params(scan).map_err(|reason| StoreError::Invalid {
        store: db.label().to_owned(),
        reason,
    })?;
    // Only a reader has an older schema (a writer migrated): say why rather than "no such
    // table".
    let version = db.schema_version();
    if version < schema::SCANS_SINCE {
        return Err(StoreError::Failed {
            store: db.label().to_owned(),
            action: ACTION,
            reason: format!(
                "it is open for reading only, and its schema (version {version}) has no scans"
            ),
        });
    }
    in_tx(db, true, ACTION, |sql, label| {
        sql.execute(UPSERT_SCAN, &params)
            .map_err(failed(label, ACTION))?;
        Ok(())
    })
}

/// The WHERE clause and parameters for a scan filter (parameters numbered from 1).
///
/// The lists are JSON arrays of strings, matched with LIKE on the quoted entry, which both
/// backends read alike: `"203.0.113.9"` is a whole source (an address holds no quote, `%`
/// or `_`), `"22/` the start of a port entry. Sources are compared in lower case (an IPv6
/// address written in capitals by another program is the same address).
fn scan_filter_sql(f: &ScanFilter) -> (String, Vec<Value>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some(h) = &f.host {
        clauses.push(format!(
            "host = {}",
            next(Value::from(h.as_str()), &mut params)
        ));
    }
    if let Some(t) = f.since_ms {
        let t = next(Value::Int(t), &mut params);
        clauses.push(format!("(last_ms >= {t} OR ended_ms >= {t})"));
    }
    if let Some(t) = f.until_ms {
        clauses.push(format!(
            "started_ms <= {}",
            next(Value::Int(t), &mut params)
        ));
    }
    if let Some(ip) = f.source {
        let pattern = format!("%\"{}\"%", ip.to_string().to_ascii_lowercase());
        clauses.push(format!(
            "lower(sources) LIKE {}",
            next(Value::Text(pattern), &mut params)
        ));
    }
    if let Some(p) = f.port {
        clauses.push(format!(
            "ports LIKE {}",
            next(Value::Text(format!("%\"{p}/%")), &mut params)
        ));
    }
    let mut out = String::new();
    if !clauses.is_empty() {
        let _ = write!(out, " WHERE {}", clauses.join(" AND "));
    }
    (out, params)
}

fn scans(db: &mut dyn Backend, filter: &ScanFilter) -> Result<Vec<ScanRecord>, StoreError> {
    const ACTION: &str = "reading scans";
    // A store of a schema before scans, read as it is: it holds none.
    if filter.limit == Some(0) || db.schema_version() < schema::SCANS_SINCE {
        return Ok(Vec::new());
    }
    let (clause, mut params) = scan_filter_sql(filter);
    let query = match filter.limit {
        None => format!("SELECT {SCAN_COLS} FROM scans{clause} ORDER BY started_ms, id"),
        Some(n) => {
            params.push(Value::Int(i64::try_from(n).unwrap_or(i64::MAX)));
            format!(
                "SELECT {SCAN_COLS} FROM scans{clause} \
                 ORDER BY started_ms DESC, id DESC LIMIT ${}",
                params.len()
            )
        }
    };
    let mut out: Vec<ScanRecord> = in_tx(db, false, ACTION, |sql, label| {
        let rows = sql.query(&query, &params).map_err(failed(label, ACTION))?;
        rows.iter().map(|row| scan_from_row(label, row)).collect()
    })?;
    if filter.limit.is_some() {
        out.reverse();
    }
    Ok(out)
}

fn state_at(db: &mut dyn Backend, host: &str, ts_ms: i64) -> Result<StateAt, StoreError> {
    const ACTION: &str = "replaying events";
    in_tx(db, false, ACTION, |sql, label| {
        let first = host_times(sql, label, ACTION, host)?.map(|(first, _)| first);
        let replay = read_events(
            sql,
            label,
            ACTION,
            &format!(
                "SELECT {EVENT_COLS} FROM events WHERE host = $1 AND ts_ms <= $2 \
                 ORDER BY ts_ms, id"
            ),
            &[Value::from(host), Value::Int(ts_ms)],
        )?;
        let mut state = BTreeMap::new();
        for e in &replay {
            apply(&mut state, e);
        }
        Ok(StateAt {
            listeners: state.into_values().collect(),
            history_starts_ms: first,
        })
    })
}

fn hosts(db: &mut dyn Backend) -> Result<Vec<HostInfo>, StoreError> {
    const ACTION: &str = "listing hosts";
    let mut out = in_tx(db, false, ACTION, |sql, label| {
        let rows = sql
            .query(
                &format!(
                    "SELECT {HOST_COLS}, \
                     (SELECT COUNT(*) FROM listeners l WHERE l.host = hosts.host) FROM hosts"
                ),
                &[],
            )
            .map_err(failed(label, ACTION))?;
        rows.iter()
            .map(|row| {
                let mut r = RowReader::new(label, "hosts", describe_value(row.first()), row);
                Ok(HostInfo {
                    host: r.text("host")?,
                    first_sample_ms: r.int("first_sample_ms")?,
                    last_sample_ms: r.int("last_sample_ms")?,
                    listeners: r.number("listener count")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()
    })?;
    out.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Reading rows back, with errors that name the row.

fn describe_value(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "NULL".into(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Text(s)) => format!("{:?}", for_terminal(s)),
        Some(Value::Other(what)) => what.clone(),
    }
}

fn event_from_row(label: &str, row: &[Value]) -> Result<Event, StoreError> {
    let mut r = RowReader::new(label, "events", describe_value(row.first()), row);
    let _id = r.int("id")?;
    let host = r.text("host")?;
    let ts_ms = r.int("ts_ms")?;
    let kind = r.parse("kind", |s| {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    })?;
    let listener = r.listener()?;
    let previous = match r.opt_text("previous_address")? {
        None => {
            r.skip(8);
            None
        }
        Some(addr) => {
            let address = parse_address("previous_address", &addr).map_err(|e| r.bad(e))?;
            let exposure = r.parse("previous_exposure", parse_exposure)?;
            let owner = r.owner("previous_")?;
            Some(Previous {
                address,
                exposure,
                owner,
            })
        }
    };
    let note = r.opt_text("note")?;
    Ok(Event {
        ts_ms,
        host,
        kind,
        listener,
        previous,
        note,
    })
}

fn scan_from_row(label: &str, row: &[Value]) -> Result<ScanRecord, StoreError> {
    let name = format!(
        "({}, {})",
        describe_value(row.get(1)),
        describe_value(row.get(2))
    );
    let mut r = RowReader::new(label, "scans", name, row);
    let _id = r.int("id")?;
    let host = r.text("host")?;
    let key = r.text("scan_key")?;
    let started_ms = r.int("started_ms")?;
    let detected_ms = r.int("detected_ms")?;
    let last_ms = r.int("last_ms")?;
    let ended_ms = r.opt_int("ended_ms")?;
    let sources = r
        .list("sources")?
        .iter()
        .map(|s| parse_address("sources", s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| r.bad(e))?;
    Ok(ScanRecord {
        host,
        key,
        started_ms,
        detected_ms,
        last_ms,
        ended_ms,
        sources,
        sources_total: r.number("sources_total")?,
        detector: r.text("detector")?,
        kinds: r.list("kinds")?,
        tool: r.opt_text("tool")?,
        tool_because: r.opt_text("tool_because")?,
        ports: r.list("ports")?,
        ports_total: r.number("ports_total")?,
        probes: r.number("probes")?,
        failed: r.number("failed")?,
        probes_to_detect: r.number("probes_to_detect")?,
        blocked_until_ms: r.opt_int("blocked_until_ms")?,
    })
}

fn parse_exposure(s: &str) -> Option<Exposure> {
    [
        Exposure::AllInterfaces,
        Exposure::Specific,
        Exposure::Loopback,
    ]
    .into_iter()
    .find(|e| e.as_str() == s)
}

fn parse_address(col: &str, s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{col} {:?} is not an IP address", for_terminal(s)))
}

/// Reads a row's columns in order, naming the row (and column) in any error.
struct RowReader<'a> {
    store: &'a str,
    table: &'static str,
    name: String,
    row: &'a [Value],
    at: usize,
}

impl<'a> RowReader<'a> {
    fn new(store: &'a str, table: &'static str, name: String, row: &'a [Value]) -> Self {
        RowReader {
            store,
            table,
            name,
            row,
            at: 0,
        }
    }

    fn bad(&self, reason: String) -> StoreError {
        StoreError::BadRow {
            store: self.store.to_owned(),
            table: self.table,
            row: self.name.clone(),
            reason,
        }
    }

    fn next(&mut self) -> &'a Value {
        let v = self.row.get(self.at).unwrap_or(&Value::Null);
        self.at += 1;
        v
    }

    fn skip(&mut self, n: usize) {
        self.at += n;
    }

    fn opt_text(&mut self, col: &str) -> Result<Option<String>, StoreError> {
        match self.next() {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            Value::Int(i) => Err(self.bad(format!("{col} holds the number {i}, not text"))),
            Value::Other(what) => Err(self.bad(format!("{col} holds {what}, not text"))),
        }
    }

    fn text(&mut self, col: &str) -> Result<String, StoreError> {
        self.opt_text(col)?
            .ok_or_else(|| self.bad(format!("{col} is NULL")))
    }

    fn opt_int(&mut self, col: &str) -> Result<Option<i64>, StoreError> {
        match self.next() {
            Value::Null => Ok(None),
            Value::Int(i) => Ok(Some(*i)),
            Value::Text(s) => Err(self.bad(format!(
                "{col} holds the text {:?}, not a number",
                for_terminal(s)
            ))),
            Value::Other(what) => Err(self.bad(format!("{col} holds {what}, not a number"))),
        }
    }

    fn int(&mut self, col: &str) -> Result<i64, StoreError> {
        self.opt_int(col)?
            .ok_or_else(|| self.bad(format!("{col} is NULL")))
    }

    /// An integer that must fit `T` (a port, a pid, a uid, a count).
    fn number<T: TryFrom<i64>>(&mut self, col: &str) -> Result<T, StoreError> {
        let i = self.int(col)?;
        T::try_from(i).map_err(|_| self.bad(format!("{col} {i} is out of range")))
    }

    fn opt_number<T: TryFrom<i64>>(&mut self, col: &str) -> Result<Option<T>, StoreError> {
        match self.opt_int(col)? {
            None => Ok(None),
            Some(i) => T::try_from(i)
                .map(Some)
                .map_err(|_| self.bad(format!("{col} {i} is out of range"))),
        }
    }

    /// A JSON array of strings (the scans table's lists).
    fn list(&mut self, col: &str) -> Result<Vec<String>, StoreError> {
        let s = self.text(col)?;
        serde_json::from_str(&s).map_err(|e| {
            // serde's message may quote the column's text: escaped like the text itself.
            self.bad(format!(
                "{col} is not a JSON list of strings ({})",
                for_terminal(&e.to_string())
            ))
        })
    }

    fn parse<T>(&mut self, col: &str, f: impl FnOnce(&str) -> Option<T>) -> Result<T, StoreError> {
        let s = self.text(col)?;
        f(&s).ok_or_else(|| self.bad(format!("unknown {col} {:?}", for_terminal(&s))))
    }

    /// `pid, process, exe, user_name, uid, unit, container`.
    fn owner(&mut self, prefix: &str) -> Result<Owner, StoreError> {
        Ok(Owner {
            pid: self.opt_number(&format!("{prefix}pid"))?,
            process: self.opt_text(&format!("{prefix}process"))?,
            exe: self.opt_text(&format!("{prefix}exe"))?,
            // Not a column: the store's schema predates it, and an owner's identity
            // (program, uid, pid) does not depend on it.
            exe_deleted: false,
            user: self.opt_text(&format!("{prefix}user_name"))?,
            uid: self.number(&format!("{prefix}uid"))?,
            unit: self.opt_text(&format!("{prefix}unit"))?,
            container: self.opt_text(&format!("{prefix}container"))?,
        })
    }

    /// `proto, address, port, exposure` and the owner's columns.
    fn listener(&mut self) -> Result<Listener, StoreError> {
        let proto = self.parse("proto", |s| {
            Protocol::ALL.into_iter().find(|p| p.as_str() == s)
        })?;
        let address = self.text("address")?;
        let address = parse_address("address", &address).map_err(|e| self.bad(e))?;
        let port = self.number("port")?;
        let exposure = self.parse("exposure", parse_exposure)?;
        Ok(Listener {
            proto,
            address,
            port,
            exposure,
            owner: self.owner("")?,
        })
    }
}

/// An I/O error as a short lower-case reason: "permission denied", not
/// "Permission denied (os error 13)".
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => &s[..i],
        None => &s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
