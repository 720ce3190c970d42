//! The queue's tables, created and upgraded by [`crate::Queue::connect`].
//!
//! Every name starts with `portolan_q` so the queue can share a database with
//! portolan-watch's store. The version lives in `portolan_queue_meta`; migrating runs in
//! one transaction under a transaction-level advisory lock, so that many workers started
//! at once neither race to create the same tables (PostgreSQL's `IF NOT EXISTS` is not
//! safe against a concurrent creator) nor see a half-made schema: the second one waits,
//! then finds the version already current. DDL is transactional in PostgreSQL, so a
//! migration that fails leaves nothing behind.

use postgres::Client;

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// The advisory lock taken around migrations: another key than portolan-watch's, so a
/// store and a queue in one database do not wait for each other.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(8102082078014398833)";

/// Version 1. Why some choices:
/// - `seed` is the scan's u64 seed stored by bit pattern in a BIGINT (PostgreSQL has no
///   unsigned type; the value is only ever handed back, never compared).
/// - `started_ms`/`finished_ms` on a scan (beyond the contract's list) date the first
///   lease and the last chunk, for the rate "since start" of a young scan.
/// - `portolan_q_results` has no foreign key: its rows are written only by `complete`,
///   which holds a lock on a chunk of the same scan, and a per-row foreign-key check
///   would be paid 400,000 times by a large scan.
/// - The partial index on chunks not yet done keeps leasing quick when an old scan has
///   many finished chunks before the pending ones.
const V1: &str = "
CREATE TABLE portolan_q_scans (
    id BIGSERIAL PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    spec JSONB NOT NULL,
    seed BIGINT NOT NULL,
    chunks INT NOT NULL CHECK (chunks > 0),
    positions BIGINT NOT NULL CHECK (positions >= 0),
    max_rate DOUBLE PRECISION NULL CHECK (max_rate > 0),
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'complete', 'cancelled')),
    started_ms BIGINT NULL,
    finished_ms BIGINT NULL,
    note TEXT NULL
);
CREATE SEQUENCE portolan_q_lease_ids;
CREATE TABLE portolan_q_chunks (
    scan_id BIGINT NOT NULL REFERENCES portolan_q_scans (id) ON DELETE CASCADE,
    idx INT NOT NULL CHECK (idx >= 0),
    state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done')),
    lease_id BIGINT NULL,
    worker TEXT NULL,
    lease_until_ms BIGINT NULL,
    attempts INT NOT NULL DEFAULT 0,
    started_ms BIGINT NULL,
    finished_ms BIGINT NULL,
    results INT NULL,
    positions BIGINT NULL,
    PRIMARY KEY (scan_id, idx)
);
CREATE INDEX portolan_q_chunks_open ON portolan_q_chunks (scan_id, idx) WHERE state <> 'done';
CREATE TABLE portolan_q_results (
    scan_id BIGINT NOT NULL,
    host TEXT NOT NULL,
    port INT NOT NULL,
    proto TEXT NOT NULL,
    state TEXT NOT NULL,
    record JSONB NOT NULL,
    chunk INT NOT NULL,
    PRIMARY KEY (scan_id, host, port, proto)
);
CREATE TABLE portolan_q_workers (
    name TEXT PRIMARY KEY,
    scan_id BIGINT NULL,
    last_seen_ms BIGINT NOT NULL,
    chunks_done BIGINT NOT NULL DEFAULT 0,
    positions_done BIGINT NOT NULL DEFAULT 0,
    started_ms BIGINT NOT NULL,
    max_rate DOUBLE PRECISION NULL
);
";

/// What went wrong while migrating: the database's error, or a schema that is newer than
/// this build.
pub enum MigrateError {
    Db(postgres::Error),
    TooNew(i32),
}

impl From<postgres::Error> for MigrateError {
    fn from(e: postgres::Error) -> Self {
        MigrateError::Db(e)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] (or leaves it there), in one transaction under
/// the advisory lock.
pub fn migrate(client: &mut Client) -> Result<(), MigrateError> {
    let mut tx = client.transaction()?;
    tx.batch_execute(MIGRATION_LOCK)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS portolan_queue_meta (version INT NOT NULL)")?;
    let version: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM portolan_queue_meta",
            &[],
        )?
        .get(0);
    if version > SCHEMA_VERSION {
        return Err(MigrateError::TooNew(version));
    }
    if version < 1 {
        tx.batch_execute(V1)?;
    }
    if version < SCHEMA_VERSION {
        tx.execute("DELETE FROM portolan_queue_meta", &[])?;
        tx.execute(
            "INSERT INTO portolan_queue_meta (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}
