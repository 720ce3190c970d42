//! A worker's side: leasing a chunk, keeping it, giving it back, and completing it with
//! its records.

use std::collections::HashMap;
use std::time::Duration;

use portolan_core::{Protocol, ScanRecord};
use serde::Serialize;
use serde_json::Value;

use crate::{check_worker, lease_ms, now_ms, Lease, Queue, QueueError, Result};

/// How many records one INSERT carries. Large enough that a round trip and a statement
/// are paid per thousand rows, not per row; small enough that a batch's arrays stay a
/// few hundred kilobytes.
pub const BATCH: usize = 1000;

/// The next chunk for a worker: of the oldest queued or running scan (or of the one asked
/// for), a pending chunk or one whose lease ran out, lowest index first. `SKIP LOCKED`:
/// a chunk another worker is leasing this instant is passed over, not waited for. The
/// scan's row is read, not locked (`OF c`), so leasers of one scan do not queue on it.
const PICK: &str = concat!(
    "SELECT c.scan_id, c.idx, s.chunks, s.spec::text, s.seed, s.max_rate \
     FROM portolan_q_chunks c JOIN portolan_q_scans s ON s.id = c.scan_id \
     WHERE s.state IN ('queued', 'running') AND c.state <> 'done' \
       AND (c.state = 'pending' OR c.lease_until_ms < ",
    now_ms!(),
    ") AND ($1::bigint IS NULL OR c.scan_id = $1) \
     ORDER BY c.scan_id, c.idx LIMIT 1 \
     FOR UPDATE OF c SKIP LOCKED"
);

/// Takes the picked chunk (a new fencing token, one more attempt), starts its scan if it
/// was queued, notes the worker as seen, and counts the other workers that held a lease
/// of the scan within the last lease period ($4 ms), for the rate share. One statement:
/// the data-modifying parts run whether or not the final SELECT reads them, and the
/// count sees the table as it was before this lease (so the worker is counted once, by
/// the caller).
///
/// It also reads the scan's state again, in this statement's newer snapshot: PICK may
/// have locked a chunk that a cancel had just put back, judging the scan by the state
/// it read before that cancel committed (a locked row is re-checked, the joined scan row
/// is not). A cancel that committed before this statement shows here, and the lease is
/// rolled back; one that commits later had to wait for PICK's lock, and voids the lease
/// itself.
const TAKE: &str = concat!(
    "WITH taken AS (\
       UPDATE portolan_q_chunks SET state = 'leased', \
         lease_id = nextval('portolan_q_lease_ids'), worker = $3::text, \
         lease_until_ms = ",
    now_ms!(),
    " + $4::bigint, attempts = attempts + 1, started_ms = ",
    now_ms!(),
    ", finished_ms = NULL \
       WHERE scan_id = $1 AND idx = $2 RETURNING lease_id), \
     started AS (\
       UPDATE portolan_q_scans SET state = 'running', started_ms = COALESCE(started_ms, ",
    now_ms!(),
    ") WHERE id = $1 AND state = 'queued' RETURNING id), \
     seen AS (\
       INSERT INTO portolan_q_workers (name, scan_id, last_seen_ms, started_ms) \
       VALUES ($3::text, $1, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ") ON CONFLICT (name) DO UPDATE SET scan_id = EXCLUDED.scan_id, \
         last_seen_ms = EXCLUDED.last_seen_ms RETURNING name) \
     SELECT (SELECT lease_id FROM taken), \
       (SELECT COUNT(DISTINCT worker) FROM portolan_q_chunks \
        WHERE scan_id = $1 AND worker <> $3::text AND (\
          (state = 'leased' AND lease_until_ms >= ",
    now_ms!(),
    " - $4::bigint) OR (state = 'done' AND finished_ms >= ",
    now_ms!(),
    " - $4::bigint))), \
       (SELECT state FROM portolan_q_scans WHERE id = $1)"
);

/// Extends a lease that the chunk still carries, of a scan not cancelled; notes the
/// worker as seen. Returns one row per lease renewed (0 or 1).
const RENEW: &str = concat!(
    "WITH r AS (\
       UPDATE portolan_q_chunks c SET lease_until_ms = ",
    now_ms!(),
    " + $4::bigint \
       FROM portolan_q_scans s \
       WHERE c.scan_id = $1 AND c.idx = $2 AND c.lease_id = $3 AND c.state = 'leased' \
         AND s.id = c.scan_id AND s.state IN ('queued', 'running') \
       RETURNING c.worker), \
     w AS (UPDATE portolan_q_workers SET last_seen_ms = ",
    now_ms!(),
    " WHERE name IN (SELECT worker FROM r) RETURNING name) \
     SELECT COUNT(*) FROM r"
);

/// Gives a chunk back, if this lease still holds it.
const RELEASE: &str = "UPDATE portolan_q_chunks SET state = 'pending', lease_id = NULL, \
     worker = NULL, lease_until_ms = NULL, started_ms = NULL \
     WHERE scan_id = $1 AND idx = $2 AND lease_id = $3 AND state = 'leased'";

const HEARTBEAT: &str = concat!(
    "INSERT INTO portolan_q_workers (name, scan_id, last_seen_ms, started_ms, max_rate) \
     VALUES ($1::text, $2::bigint, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ", $3::double precision) \
     ON CONFLICT (name) DO UPDATE SET scan_id = EXCLUDED.scan_id, \
       last_seen_ms = EXCLUDED.last_seen_ms, max_rate = EXCLUDED.max_rate"
);

/// The chunk's holder, locked until the completion commits: no lease can take it over
/// meanwhile (a leaser skips it), and a cancel waits for it.
const HOLDER: &str = "SELECT state, lease_id, worker FROM portolan_q_chunks \
     WHERE scan_id = $1 AND idx = $2 FOR UPDATE";

/// One batch of records: arrays unnested into rows, so that one prepared statement
/// serves every batch size. A key that exists is overwritten (the newest run of a port
/// stands).
const UPSERT: &str = "INSERT INTO portolan_q_results \
       (scan_id, host, port, proto, state, record, chunk) \
     SELECT $1::bigint, t.host, t.port, t.proto, t.state, t.record::jsonb, $2::int \
     FROM unnest($3::text[], $4::int[], $5::text[], $6::text[], $7::text[]) \
       AS t(host, port, proto, state, record) \
     ON CONFLICT (scan_id, host, port, proto) DO UPDATE SET \
       state = EXCLUDED.state, record = EXCLUDED.record, chunk = EXCLUDED.chunk";

const DONE: &str = concat!(
    "UPDATE portolan_q_chunks SET state = 'done', finished_ms = ",
    now_ms!(),
    ", lease_until_ms = NULL, results = $3::int, positions = $4::bigint \
     WHERE scan_id = $1 AND idx = $2"
);

const WORKER_DONE: &str = concat!(
    "INSERT INTO portolan_q_workers \
       (name, scan_id, last_seen_ms, chunks_done, positions_done, started_ms) \
     VALUES ($1::text, $2::bigint, ",
    now_ms!(),
    ", 1, $3::bigint, ",
    now_ms!(),
    ") ON CONFLICT (name) DO UPDATE SET scan_id = EXCLUDED.scan_id, \
       last_seen_ms = EXCLUDED.last_seen_ms, \
       chunks_done = portolan_q_workers.chunks_done + 1, \
       positions_done = portolan_q_workers.positions_done + EXCLUDED.positions_done"
);

/// The scan's row, locked so that two workers finishing the last two chunks at once
/// cannot both miss the other's: the second waits here, and its next statement (a new
/// snapshot under READ COMMITTED) sees the first one's chunk done.
const LOCK_SCAN: &str = "SELECT state FROM portolan_q_scans WHERE id = $1 FOR NO KEY UPDATE";

pub(crate) const FINISH: &str = concat!(
    "UPDATE portolan_q_scans SET state = 'complete', finished_ms = ",
    now_ms!(),
    " WHERE id = $1 AND state IN ('queued', 'running') AND NOT EXISTS (\
       SELECT 1 FROM portolan_q_chunks WHERE scan_id = $1 AND state <> 'done')"
);

/// One record ready for the database.
struct Row {
    host: String,
    port: i32,
    proto: &'static str,
    state: &'static str,
    json: String,
}

/// The chunk index as the database's INT; an index no chunk can have for a forged lease
/// (indexes are checked non-negative), so it matches nothing.
fn idx(lease: &Lease) -> i32 {
    i32::try_from(lease.chunk).unwrap_or(-1)
}

impl Queue {
    /// Leases one chunk to `worker` for `lease_for` (by the database's clock): of `scan`,
    /// or of the oldest queued or running scan. None when there is nothing to do.
    pub fn lease(
        &mut self,
        worker: &str,
        lease_for: Duration,
        scan: Option<i64>,
    ) -> Result<Option<Lease>> {
        const ACTION: &str = "leasing a chunk";
        check_worker(ACTION, worker)?;
        let ms = lease_ms(ACTION, lease_for)?;
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let [pick, take] = conn.statements([PICK, TAKE]).map_err(&fail)?;
        // A second try only after a cancel that came between PICK and TAKE (a rare race);
        // the next PICK no longer sees that scan.
        for _ in 0..3 {
            let mut tx = conn.client.transaction().map_err(&fail)?;
            let Some(row) = tx.query_opt(&pick, &[&scan]).map_err(&fail)? else {
                return Ok(None);
            };
            let scan_id: i64 = row.get(0);
            let chunk: i32 = row.get(1);
            let chunks: i32 = row.get(2);
            let spec_text: String = row.get(3);
            let seed: i64 = row.get(4);
            let max_rate: Option<f64> = row.get(5);
            let spec: Value =
                serde_json::from_str(&spec_text).map_err(|e| QueueError::Corrupt {
                    action: ACTION,
                    what: format!("scan {scan_id}'s spec"),
                    reason: e.to_string(),
                })?;
            let taken = tx
                .query_one(&take, &[&scan_id, &chunk, &worker, &ms])
                .map_err(&fail)?;
            let lease_id: i64 = taken.get(0);
            let others: i64 = taken.get(1);
            let state: Option<&str> = taken.get(2);
            if !matches!(state, Some("queued" | "running")) {
                // Dropping the transaction rolls it back.
                continue;
            }
            tx.commit().map_err(&fail)?;
            // Counts are small; the share is a rate, not a count.
            #[allow(clippy::cast_precision_loss)]
            let holders = (others.max(0) + 1) as f64;
            return Ok(Some(Lease {
                scan_id,
                chunk: crate::count_u32(chunk.into()),
                chunks: crate::count_u32(chunks.into()),
                lease_id,
                spec,
                seed: u64::from_ne_bytes(seed.to_ne_bytes()),
                rate: max_rate.map(|r| r / holders),
            }));
        }
        Ok(None)
    }

    /// Extends the lease by `lease_for` from now (the database's). False when the lease
    /// was lost: taken over after it expired, given back by `resume` or `cancel`, or the
    /// chunk is done; the worker should stop work on it.
    pub fn renew(&mut self, lease: &Lease, lease_for: Duration) -> Result<bool> {
        const ACTION: &str = "renewing a lease";
        let ms = lease_ms(ACTION, lease_for)?;
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let st = conn.statement(RENEW).map_err(&fail)?;
        let n: i64 = conn
            .client
            .query_one(&st, &[&lease.scan_id, &idx(lease), &lease.lease_id, &ms])
            .map_err(&fail)?
            .get(0);
        Ok(n > 0)
    }

    /// Gives the chunk back (pending, for any worker) on a clean stop, when this lease
    /// still holds it; whether it did.
    pub fn release(&mut self, lease: &Lease) -> Result<bool> {
        const ACTION: &str = "releasing a chunk";
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let st = conn.statement(RELEASE).map_err(&fail)?;
        let n = conn
            .client
            .execute(&st, &[&lease.scan_id, &idx(lease), &lease.lease_id])
            .map_err(&fail)?;
        Ok(n > 0)
    }

    /// Notes that `worker` is alive, on which scan, at what local rate limit.
    pub fn heartbeat(
        &mut self,
        worker: &str,
        scan: Option<i64>,
        max_rate: Option<f64>,
    ) -> Result<()> {
        const ACTION: &str = "recording a heartbeat";
        check_worker(ACTION, worker)?;
        let max_rate = max_rate.filter(|r| r.is_finite());
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let st = conn.statement(HEARTBEAT).map_err(&fail)?;
        conn.client
            .execute(&st, &[&worker, &scan, &max_rate])
            .map_err(&fail)?;
        Ok(())
    }

    /// Completes the leased chunk with its `records` and the number of `positions` it
    /// covered, in one transaction: when the chunk no longer carries this lease, nothing is
    /// written and the answer is false; otherwise every record is upserted on (host, port,
    /// protocol), in batches of [`BATCH`], the chunk is done, the worker's counters grow,
    /// and the scan is complete when no chunk is left. A second call with the same lease
    /// after a first that committed (its answer lost with the connection) writes nothing
    /// and answers true.
    ///
    /// Records that share a key within one call count once, the last one standing.
    /// PostgreSQL's text cannot hold U+0000: a NUL in any string of a record is stored as
    /// the four characters `\x00`, the escape portolan writes for bytes it shows.
    pub fn complete<T: Serialize, H: Serialize>(
        &mut self,
        lease: &Lease,
        records: &[ScanRecord<T, H>],
        positions: u64,
    ) -> Result<bool> {
        const ACTION: &str = "completing a chunk";
        let positions = i64::try_from(positions).map_err(|_| QueueError::Invalid {
            action: ACTION,
            reason: format!("{positions} positions do not fit the database's BIGINT"),
        })?;
        // Serialized before the transaction, so the chunk's lock is held for the writes
        // only.
        let rows = rows(records).map_err(|reason| QueueError::Invalid {
            action: ACTION,
            reason,
        })?;
        let n_rows = i32::try_from(rows.len()).unwrap_or(i32::MAX);
        let chunk = idx(lease);
        let Queue { conn, who } = self;
        let fail = who.db(ACTION);
        conn.live(who)?;
        let [holder, upsert, done, worker_done, lock_scan, finish] = conn
            .statements([HOLDER, UPSERT, DONE, WORKER_DONE, LOCK_SCAN, FINISH])
            .map_err(&fail)?;
        let mut tx = conn.client.transaction().map_err(&fail)?;
        let Some(row) = tx
            .query_opt(&holder, &[&lease.scan_id, &chunk])
            .map_err(&fail)?
        else {
            return Ok(false);
        };
        let state: String = row.get(0);
        let lease_id: Option<i64> = row.get(1);
        let worker: Option<String> = row.get(2);
        if lease_id != Some(lease.lease_id) {
            return Ok(false);
        }
        if state == "done" {
            return Ok(true);
        }
        if state != "leased" {
            return Ok(false);
        }
        for batch in rows.chunks(BATCH) {
            let hosts: Vec<&str> = batch.iter().map(|r| r.host.as_str()).collect();
            let ports: Vec<i32> = batch.iter().map(|r| r.port).collect();
            let protos: Vec<&str> = batch.iter().map(|r| r.proto).collect();
            let states: Vec<&str> = batch.iter().map(|r| r.state).collect();
            let json: Vec<&str> = batch.iter().map(|r| r.json.as_str()).collect();
            tx.execute(
                &upsert,
                &[
                    &lease.scan_id,
                    &chunk,
                    &hosts,
                    &ports,
                    &protos,
                    &states,
                    &json,
                ],
            )
            .map_err(&fail)?;
        }
        tx.execute(&done, &[&lease.scan_id, &chunk, &n_rows, &positions])
            .map_err(&fail)?;
        if let Some(worker) = worker {
            tx.execute(&worker_done, &[&worker, &lease.scan_id, &positions])
                .map_err(&fail)?;
        }
        tx.query_opt(&lock_scan, &[&lease.scan_id]).map_err(&fail)?;
        tx.execute(&finish, &[&lease.scan_id]).map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        Ok(true)
    }
}

/// The records as rows, one per (host, port, protocol), the last of a key standing: one
/// INSERT ... ON CONFLICT DO UPDATE may not touch a row twice.
fn rows<T: Serialize, H: Serialize>(records: &[ScanRecord<T, H>]) -> Result<Vec<Row>, String> {
    let mut out: Vec<Row> = Vec::with_capacity(records.len());
    let mut at: HashMap<(std::net::IpAddr, u16, Protocol), usize> =
        HashMap::with_capacity(records.len());
    for r in records {
        let json = record_json(r)?;
        let row = Row {
            host: r.host.to_string(),
            port: i32::from(r.port),
            proto: r.proto.as_str(),
            state: r.state.as_str(),
            json,
        };
        match at.entry((r.host, r.port, r.proto)) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()] = row,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(row);
            }
        }
    }
    Ok(out)
}

/// Nesting deeper than this would not read back (serde_json stops at 128 levels), so it
/// is refused when written rather than found when the results are read.
const MAX_DEPTH: usize = 100;

/// A record as the JSON `portolan scan --jsonl` writes, made storable: NUL characters
/// (which JSONB refuses) become `\x00`; nesting too deep to read back is refused.
fn record_json<T: Serialize, H: Serialize>(r: &ScanRecord<T, H>) -> Result<String, String> {
    let bad = |e: serde_json::Error| format!("{} port {}/{}: {e}", r.host, r.port, r.proto);
    let text = serde_json::to_string(r).map_err(bad)?;
    let brackets = text.bytes().filter(|b| matches!(b, b'{' | b'[')).count();
    if brackets > MAX_DEPTH && depth(&text) > MAX_DEPTH {
        return Err(format!(
            "{} port {}/{}: the record nests deeper than {MAX_DEPTH} levels",
            r.host, r.port, r.proto
        ));
    }
    if !text.contains("\\u0000") {
        return Ok(text);
    }
    let mut v = serde_json::to_value(r).map_err(bad)?;
    without_nul(&mut v);
    serde_json::to_string(&v).map_err(bad)
}

/// The deepest nesting of arrays and objects in JSON text (strings skipped).
fn depth(json: &str) -> usize {
    let (mut now, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                now += 1;
                max = max.max(now);
            }
            b'}' | b']' => now = now.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Every NUL in the value's strings and keys as `\x00`.
pub(crate) fn without_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\\x00"),
        Value::Array(items) => items.iter_mut().for_each(without_nul),
        Value::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut item) in old {
                without_nul(&mut item);
                map.insert(k.replace('\0', "\\x00"), item);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portolan_core::PortState;

    #[test]
    fn nesting_depth_ignores_strings() {
        assert_eq!(depth(r#"{"a":[1,{"b":"[[[{{"}]}"#), 3);
        assert_eq!(depth(r#""\"[""#), 0);
    }

    #[test]
    fn duplicate_keys_keep_the_last() {
        let mut a: ScanRecord<Value, Value> =
            ScanRecord::new([10, 0, 0, 1].into(), 22, Protocol::Tcp, PortState::Closed);
        let mut b = a.clone();
        b.state = PortState::Open;
        a.banner = Some("first\0".into());
        let rows = rows(&[
            a,
            b.clone(),
            ScanRecord::new([10, 0, 0, 1].into(), 22, Protocol::Udp, PortState::Open),
        ])
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, "open");
        assert_eq!(rows[0].json, serde_json::to_string(&b).unwrap());
        assert_eq!(rows[1].proto, "udp");
    }

    #[test]
    fn nul_becomes_an_escape() {
        let mut a: ScanRecord<Value, Value> =
            ScanRecord::new([10, 0, 0, 1].into(), 22, Protocol::Tcp, PortState::Open);
        a.banner = Some("SSH\0x".into());
        a.tls = Some(serde_json::json!({"k\u{0}": ["\u{0}"]}));
        let text = record_json(&a).unwrap();
        assert!(!text.contains("\\u0000"), "{text}");
        assert!(text.contains(r#""banner":"SSH\\x00x""#), "{text}");
        assert!(text.contains(r#"{"k\\x00":["\\x00"]}"#), "{text}");
    }
}
