//! The coordinator's side: creating a scan, watching it, reading its results, resuming
//! and cancelling it.

use std::collections::BTreeMap;

use postgres::IsolationLevel;
use serde_json::Value;

use crate::lease::FINISH;
use crate::{
    count_u32, count_u64, now_ms, Queue, QueueError, Record, Result, ScanState, ScanSummary,
    Status, WorkerStatus,
};

/// The most chunks a scan may have: far more than workers will ever share one scan, and a
/// bound on the rows one `create_scan` writes.
pub const MAX_CHUNKS: u32 = 1_000_000;

/// How far back the rate of a running scan looks.
const RATE_WINDOW_MS: i64 = 60_000;

/// How many result rows are fetched per round trip while reading results.
const FETCH: i32 = 5_000;

const NEW_SCAN: &str = concat!(
    "INSERT INTO portolan_q_scans (created_ms, spec, seed, chunks, positions, max_rate, state) \
     VALUES (",
    now_ms!(),
    ", $1::text::jsonb, $2::bigint, $3::int, $4::bigint, $5::double precision, 'queued') \
     RETURNING id"
);

const NEW_CHUNKS: &str = "INSERT INTO portolan_q_chunks (scan_id, idx, state) \
     SELECT $1::bigint, g, 'pending' FROM generate_series(0, $2::int - 1) AS g";

const SCAN: &str = concat!(
    "SELECT state, created_ms, chunks, positions, started_ms, finished_ms, ",
    now_ms!(),
    " FROM portolan_q_scans WHERE id = $1"
);

/// The chunks' counts; $2 is where the rate's window starts.
const CHUNK_COUNTS: &str = concat!(
    "SELECT COUNT(*) FILTER (WHERE state = 'done'), \
       COUNT(*) FILTER (WHERE state = 'leased' AND lease_until_ms >= ",
    now_ms!(),
    "), COALESCE(SUM(positions) FILTER (WHERE state = 'done'), 0)::bigint, \
       COALESCE(SUM(positions) FILTER (WHERE state = 'done' AND finished_ms >= $2), 0)::bigint \
     FROM portolan_q_chunks WHERE scan_id = $1"
);

const RESULT_COUNTS: &str = "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'open') \
     FROM portolan_q_results WHERE scan_id = $1";

const WORKERS_DONE: &str = "SELECT worker, COUNT(*), COALESCE(SUM(positions), 0)::bigint \
     FROM portolan_q_chunks WHERE scan_id = $1 AND state = 'done' AND worker IS NOT NULL \
     GROUP BY worker";

const WORKERS_LEASED: &str = concat!(
    "SELECT worker, MIN(idx) FROM portolan_q_chunks \
     WHERE scan_id = $1 AND state = 'leased' AND worker IS NOT NULL AND lease_until_ms >= ",
    now_ms!(),
    " GROUP BY worker"
);

const WORKERS_SEEN: &str = "SELECT name, last_seen_ms FROM portolan_q_workers \
     WHERE scan_id = $1 OR name = ANY($2::text[])";

/// Sorted as people read addresses (by `inet`, so 10.0.0.9 before 10.0.0.10 and IPv4
/// before IPv6), then protocol, then port.
const RESULTS: &str = "SELECT host, port, proto, record::text FROM portolan_q_results \
     WHERE scan_id = $1 ORDER BY host::inet, proto, port";

const SCANS: &str = "SELECT s.id, s.created_ms, s.state, s.chunks, \
       (SELECT COUNT(*) FROM portolan_q_chunks c WHERE c.scan_id = s.id AND c.state = 'done'), \
       (SELECT COUNT(*) FROM portolan_q_results r WHERE r.scan_id = s.id AND r.state = 'open') \
     FROM portolan_q_scans s ORDER BY s.id";

const SCAN_STATE: &str = "SELECT state FROM portolan_q_scans WHERE id = $1 FOR NO KEY UPDATE";

/// Expired leases back to pending; their old holders' fencing tokens are void.
const REQUEUE: &str = concat!(
    "UPDATE portolan_q_chunks SET state = 'pending', lease_id = NULL, worker = NULL, \
       lease_until_ms = NULL, started_ms = NULL \
     WHERE scan_id = $1 AND state = 'leased' AND lease_until_ms < ",
    now_ms!()
);

const UNCANCEL: &str = "UPDATE portolan_q_scans SET state = 'queued', finished_ms = NULL \
     WHERE id = $1 AND state = 'cancelled'";

/// Every chunk not done back to pending, leased or not: touching the pending ones too makes
/// this wait for any lease being taken right now, and then void it, so that no lease of
/// the scan survives a cancel.
const WITHDRAW: &str = "UPDATE portolan_q_chunks SET state = 'pending', lease_id = NULL, \
       worker = NULL, lease_until_ms = NULL, started_ms = NULL \
     WHERE scan_id = $1 AND state <> 'done'";

const CANCEL: &str = concat!(
    "UPDATE portolan_q_scans SET state = 'cancelled', finished_ms = ",
    now_ms!(),
    " WHERE id = $1 AND state IN ('queued', 'running')"
);

fn state_of(action: &'static str, id: i64, s: &str) -> Result<ScanState> {
    ScanState::parse(s).ok_or_else(|| QueueError::Corrupt {
        action,
        what: format!("scan {id}'s state"),
        reason: format!(
            "{:?} is not a state",
            portolan_core::escape::for_terminal(s)
        ),
    })
}

impl Queue {
    /// Creates a scan of `chunks` chunks covering `positions` positions, all pending, in one
    /// transaction; its id. `spec` is kept as given (the argument list and settings, for
    /// the workers); `max_rate` is the whole scan's packets per second, shared among its
    /// workers.
    pub fn create_scan(
        &mut self,
        spec: &Value,
        seed: u64,
        chunks: u32,
        positions: u64,
        max_rate: Option<f64>,
    ) -> Result<i64> {
        const ACTION: &str = "creating a scan";
        let invalid = |reason: String| QueueError::Invalid {
            action: ACTION,
            reason,
        };
        if chunks == 0 || chunks > MAX_CHUNKS {
            return Err(invalid(format!(
                "{chunks} chunks; a scan has 1 to {MAX_CHUNKS}"
            )));
        }
        let positions = i64::try_from(positions)
            .map_err(|_| invalid(format!("{positions} positions do not fit a BIGINT")))?;
        if let Some(r) = max_rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(invalid(format!(
                    "a rate of {r} packets per second; it must be a positive number"
                )));
            }
        }
        let spec_text = spec_text(spec).map_err(invalid)?;
        let chunks = i32::try_from(chunks).unwrap_or(i32::MAX);
        let seed = i64::from_ne_bytes(seed.to_ne_bytes());
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let [new_scan, new_chunks] = conn.statements([NEW_SCAN, NEW_CHUNKS]).map_err(&fail)?;
        let mut tx = conn.client.transaction().map_err(&fail)?;
        let id: i64 = tx
            .query_one(
                &new_scan,
                &[&spec_text, &seed, &chunks, &positions, &max_rate],
            )
            .map_err(&fail)?
            .get(0);
        tx.execute(&new_chunks, &[&id, &chunks]).map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        Ok(id)
    }

    /// The scan's progress, read in one snapshot.
    pub fn status(&mut self, id: i64) -> Result<Status> {
        const ACTION: &str = "reading a scan's status";
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let [scan, chunk_counts, result_counts, workers_done, workers_leased, workers_seen] = conn
            .statements([
                SCAN,
                CHUNK_COUNTS,
                RESULT_COUNTS,
                WORKERS_DONE,
                WORKERS_LEASED,
                WORKERS_SEEN,
            ])
            .map_err(&fail)?;
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(&fail)?;
        let Some(row) = tx.query_opt(&scan, &[&id]).map_err(&fail)? else {
            return Err(QueueError::NoSuchScan { action: ACTION, id });
        };
        let state = state_of(ACTION, id, row.get(0))?;
        let created_ms: i64 = row.get(1);
        let chunks: i32 = row.get(2);
        let positions: i64 = row.get(3);
        let started_ms: Option<i64> = row.get(4);
        let finished_ms: Option<i64> = row.get(5);
        let now_ms: i64 = row.get(6);
        let window_start = started_ms.map_or(now_ms, |s| s.max(now_ms - RATE_WINDOW_MS));

        let counts = tx
            .query_one(&chunk_counts, &[&id, &window_start])
            .map_err(&fail)?;
        let done = count_u32(counts.get(0));
        let leased = count_u32(counts.get(1));
        let positions_done = count_u64(counts.get(2));
        let window_positions = count_u64(counts.get(3));
        let results = tx.query_one(&result_counts, &[&id]).map_err(&fail)?;

        let mut workers: BTreeMap<String, WorkerStatus> = BTreeMap::new();
        let blank = |name: &str| WorkerStatus {
            name: name.to_owned(),
            last_seen_ms: 0,
            chunks_done: 0,
            positions_done: 0,
            leased_chunk: None,
        };
        for r in tx.query(&workers_done, &[&id]).map_err(&fail)? {
            let name: String = r.get(0);
            let w = workers.entry(name.clone()).or_insert_with(|| blank(&name));
            w.chunks_done = count_u64(r.get(1));
            w.positions_done = count_u64(r.get(2));
        }
        for r in tx.query(&workers_leased, &[&id]).map_err(&fail)? {
            let name: String = r.get(0);
            let w = workers.entry(name.clone()).or_insert_with(|| blank(&name));
            w.leased_chunk = Some(count_u32(r.get::<_, i32>(1).into()));
        }
        let names: Vec<&str> = workers.keys().map(String::as_str).collect();
        let seen = tx.query(&workers_seen, &[&id, &names]).map_err(&fail)?;
        for r in seen {
            let name: String = r.get(0);
            let w = workers.entry(name.clone()).or_insert_with(|| blank(&name));
            w.last_seen_ms = r.get(1);
        }
        tx.commit().map_err(&fail)?;

        let chunks = count_u32(chunks.into());
        let positions = count_u64(positions);
        let (rate_pps, eta_s) = rate_and_eta(&Progress {
            state,
            now_ms,
            started_ms,
            finished_ms,
            done,
            positions,
            positions_done,
            window_start,
            window_positions,
        });
        Ok(Status {
            id,
            state,
            created_ms,
            started_ms,
            finished_ms,
            now_ms,
            chunks,
            done,
            leased,
            pending: chunks.saturating_sub(done).saturating_sub(leased),
            positions,
            positions_done,
            results: count_u64(results.get(0)),
            open: count_u64(results.get(1)),
            workers: workers.into_values().collect(),
            rate_pps,
            eta_s,
        })
    }

    /// Every result of the scan, sorted by host (as addresses sort), protocol and port.
    /// For a large scan, [`Queue::results_with`] keeps only one record in memory at a time.
    pub fn results(&mut self, id: i64) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        self.results_with(id, |r| out.push(r))?;
        Ok(out)
    }

    /// Every result of the scan, in the order of [`Queue::results`], handed to `each` as
    /// it is read (fetched a few thousand rows at a time, in one snapshot).
    pub fn results_with(&mut self, id: i64, mut each: impl FnMut(Record)) -> Result<()> {
        const ACTION: &str = "reading a scan's results";
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let [scan, results] = conn.statements([SCAN, RESULTS]).map_err(&fail)?;
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(&fail)?;
        if tx.query_opt(&scan, &[&id]).map_err(&fail)?.is_none() {
            return Err(QueueError::NoSuchScan { action: ACTION, id });
        }
        let portal = tx.bind(&results, &[&id]).map_err(&fail)?;
        loop {
            let rows = tx.query_portal(&portal, FETCH).map_err(&fail)?;
            if rows.is_empty() {
                break;
            }
            for r in rows {
                let text: &str = r.get(3);
                let record: Record =
                    serde_json::from_str(text).map_err(|e| QueueError::Corrupt {
                        action: ACTION,
                        what: format!(
                            "scan {id}'s record of {} port {}/{}",
                            portolan_core::escape::for_terminal(r.get::<_, &str>(0)),
                            r.get::<_, i32>(1),
                            portolan_core::escape::for_terminal(r.get::<_, &str>(2)),
                        ),
                        reason: e.to_string(),
                    })?;
                each(record);
            }
        }
        tx.commit().map_err(&fail)?;
        Ok(())
    }

    /// Every scan, oldest first.
    pub fn scans(&mut self) -> Result<Vec<ScanSummary>> {
        const ACTION: &str = "listing scans";
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let st = conn.statement(SCANS).map_err(&fail)?;
        let rows = conn.client.query(&st, &[]).map_err(&fail)?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.get(0);
                Ok(ScanSummary {
                    id,
                    created_ms: r.get(1),
                    state: state_of(ACTION, id, r.get(2))?,
                    chunks: count_u32(r.get::<_, i32>(3).into()),
                    done: count_u32(r.get(4)),
                    open: count_u64(r.get(5)),
                })
            })
            .collect()
    }

    /// Puts every chunk whose lease expired back to pending (its old holder can no longer
    /// renew or complete it), and a cancelled scan back to queued; how many chunks went
    /// back. Live leases are left alone. A scan with nothing left to do is marked complete.
    pub fn resume(&mut self, id: i64) -> Result<u32> {
        const ACTION: &str = "resuming a scan";
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let [requeue, scan_state, uncancel, finish] = conn
            .statements([REQUEUE, SCAN_STATE, UNCANCEL, FINISH])
            .map_err(&fail)?;
        let mut tx = conn.client.transaction().map_err(&fail)?;
        // Chunks before the scan's row, the order every writer locks in.
        let n = tx.execute(&requeue, &[&id]).map_err(&fail)?;
        if tx.query_opt(&scan_state, &[&id]).map_err(&fail)?.is_none() {
            return Err(QueueError::NoSuchScan { action: ACTION, id });
        }
        tx.execute(&uncancel, &[&id]).map_err(&fail)?;
        tx.execute(&finish, &[&id]).map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Stops the scan: nothing of it is leased any more, and every lease of it is void
    /// (its workers' `renew` and `complete` answer false, so they stop and write nothing).
    /// What is done stays done, results included; [`Queue::resume`] starts it again. A
    /// complete scan stays complete.
    pub fn cancel(&mut self, id: i64) -> Result<()> {
        const ACTION: &str = "cancelling a scan";
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let [scan, withdraw, cancel] = conn.statements([SCAN, WITHDRAW, CANCEL]).map_err(&fail)?;
        let mut tx = conn.client.transaction().map_err(&fail)?;
        let Some(row) = tx.query_opt(&scan, &[&id]).map_err(&fail)? else {
            return Err(QueueError::NoSuchScan { action: ACTION, id });
        };
        if state_of(ACTION, id, row.get(0))? == ScanState::Complete {
            return Ok(());
        }
        // Chunks before the scan's row, the order every writer locks in.
        tx.execute(&withdraw, &[&id]).map_err(&fail)?;
        tx.execute(&cancel, &[&id]).map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        Ok(())
    }
}

/// The spec as JSON text PostgreSQL can store and this crate can read back: no NUL (text
/// cannot hold it; an argument list never has one), nesting serde_json reads back.
fn spec_text(spec: &Value) -> Result<String, String> {
    let text = serde_json::to_string(spec).map_err(|e| format!("the spec: {e}"))?;
    serde_json::from_str::<Value>(&text)
        .map_err(|e| format!("the spec would not read back: {e}"))?;
    if text.contains("\\u0000") && has_nul(spec) {
        return Err("the spec contains a NUL character, which PostgreSQL cannot store".into());
    }
    Ok(text)
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// What the rate and the ETA are computed from.
struct Progress {
    state: ScanState,
    now_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    done: u32,
    positions: u64,
    positions_done: u64,
    window_start: i64,
    window_positions: u64,
}

/// Positions per second and seconds to go (see [`Status::rate_pps`]).
// Positions and milliseconds are far below 2^52: the conversions to f64 are exact.
#[allow(clippy::cast_precision_loss)]
fn rate_and_eta(p: &Progress) -> (Option<f64>, Option<f64>) {
    if p.done == 0 {
        return (None, None);
    }
    if p.state == ScanState::Complete {
        let rate = match (p.started_ms, p.finished_ms) {
            (Some(s), Some(f)) if f > s => Some(p.positions_done as f64 * 1000.0 / (f - s) as f64),
            _ => None,
        };
        return (rate, Some(0.0));
    }
    let window = p.now_ms - p.window_start;
    if window <= 0 {
        return (None, None);
    }
    let rate = p.window_positions as f64 * 1000.0 / window as f64;
    let eta = (p.state != ScanState::Cancelled && rate > 0.0)
        .then(|| p.positions.saturating_sub(p.positions_done) as f64 / rate);
    (Some(rate), eta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_the_window() {
        let p = Progress {
            state: ScanState::Running,
            now_ms: 100_000,
            started_ms: Some(90_000),
            finished_ms: None,
            done: 2,
            positions: 1000,
            positions_done: 200,
            window_start: 90_000,
            window_positions: 200,
        };
        let (rate, eta) = rate_and_eta(&p);
        assert_eq!(rate, Some(20.0));
        assert_eq!(eta, Some(40.0));
        let none = Progress { done: 0, ..p };
        assert_eq!(rate_and_eta(&none), (None, None));
    }

    #[test]
    fn specs_postgres_cannot_hold_are_refused() {
        assert!(spec_text(&serde_json::json!(["a\u{0}b"])).is_err());
        assert!(spec_text(&serde_json::json!({"k\u{0}": 1})).is_err());
        assert!(spec_text(&serde_json::json!(["\\u0000 as text is fine"])).is_ok());
        let mut deep = serde_json::json!(1);
        for _ in 0..200 {
            deep = Value::Array(vec![deep]);
        }
        assert!(spec_text(&deep).is_err());
    }
}
