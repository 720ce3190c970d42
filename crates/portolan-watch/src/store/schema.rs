//! The schema, as an ordered list of migrations shared by both backends. Migration N
//! brings the schema from version N-1 to N; `schema_version` holds one row per applied
//! migration. Each migration is written once, with `{id}` and `{int}` standing for the
//! backend's auto-increment key and 64-bit integer types, so both backends have the same
//! tables, columns and indexes.
//!
//! Never edit a released migration: append a new one.

use super::{
    Backend, DbError, Sql, StoreError, Value, EVENT_COLS, HOST_COLS, LISTENER_COLS, SCAN_COLS,
};

/// The SQL dialect a migration is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

const MIGRATIONS: &[&str] = &[
    // 1: events, current listeners, hosts.
    "CREATE TABLE hosts (
        host TEXT NOT NULL PRIMARY KEY,
        first_sample_ms {int} NOT NULL,
        last_sample_ms {int} NOT NULL
    );
    CREATE TABLE events (
        id {id},
        host TEXT NOT NULL,
        ts_ms {int} NOT NULL,
        kind TEXT NOT NULL,
        proto TEXT NOT NULL,
        address TEXT NOT NULL,
        port {int} NOT NULL,
        exposure TEXT NOT NULL,
        pid {int},
        process TEXT,
        exe TEXT,
        user_name TEXT,
        uid {int} NOT NULL,
        unit TEXT,
        container TEXT,
        previous_address TEXT,
        previous_exposure TEXT,
        previous_pid {int},
        previous_process TEXT,
        previous_exe TEXT,
        previous_user_name TEXT,
        previous_uid {int},
        previous_unit TEXT,
        previous_container TEXT,
        note TEXT
    );
    CREATE INDEX events_host_ts ON events (host, ts_ms);
    CREATE INDEX events_ts ON events (ts_ms);
    CREATE INDEX events_port ON events (port);
    CREATE TABLE listeners (
        host TEXT NOT NULL,
        proto TEXT NOT NULL,
        address TEXT NOT NULL,
        port {int} NOT NULL,
        exposure TEXT NOT NULL,
        pid {int},
        process TEXT,
        exe TEXT,
        user_name TEXT,
        uid {int} NOT NULL,
        unit TEXT,
        container TEXT,
        PRIMARY KEY (host, proto, address, port)
    );",
    // 2: port scans that `portolan sentry` detected, one row per scan, upserted on
    // (host, scan_key) as the scan goes on. The lists are JSON arrays of strings.
    "CREATE TABLE scans (
        id {id},
        host TEXT NOT NULL,
        scan_key TEXT NOT NULL,
        started_ms {int} NOT NULL,
        detected_ms {int} NOT NULL,
        last_ms {int} NOT NULL,
        ended_ms {int},
        sources TEXT NOT NULL,
        sources_total {int} NOT NULL,
        detector TEXT NOT NULL,
        kinds TEXT NOT NULL,
        tool TEXT,
        tool_because TEXT,
        ports TEXT NOT NULL,
        ports_total {int} NOT NULL,
        probes {int} NOT NULL,
        failed {int} NOT NULL,
        probes_to_detect {int} NOT NULL,
        blocked_until_ms {int},
        UNIQUE (host, scan_key)
    );
    CREATE INDEX scans_host_started ON scans (host, started_ms);",
];

/// The schema version this build writes, and the newest it reads.
#[allow(clippy::cast_possible_wrap)] // a handful of migrations
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The oldest schema version readers read, as it is: a store that no writer of this build
/// has opened yet (an older `portolan watch` may keep one for months) must stay readable,
/// since reading never writes. What a later migration added is then simply not there.
pub(crate) const OLDEST_READ: i64 = 1;

/// The migration that added the `scans` table: a store of an older version (read as it is)
/// has no scans.
pub(crate) const SCANS_SINCE: i64 = 2;

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version {int} NOT NULL PRIMARY KEY,
    applied_ms {int} NOT NULL
)";

/// The store was written by a newer portolan than this one.
fn newer(label: &str, found: i64) -> StoreError {
    StoreError::NewerSchema {
        store: label.to_owned(),
        found,
        known: SCHEMA_VERSION,
    }
}

/// Why a reader refuses a store of a schema older than it reads, and what upgrades it.
fn older(found: i64) -> String {
    let reads = if OLDEST_READ == SCHEMA_VERSION {
        SCHEMA_VERSION.to_string()
    } else {
        format!("{OLDEST_READ} to {SCHEMA_VERSION}")
    };
    format!(
        "its schema is version {found}, older than this portolan reads ({reads}); \
         `portolan watch` upgrades it"
    )
}

/// A migration's SQL for one backend.
pub(crate) fn render(sql: &str, dialect: Dialect) -> String {
    let (id, int) = match dialect {
        Dialect::Sqlite => ("INTEGER PRIMARY KEY", "INTEGER"),
        Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "BIGINT"),
    };
    sql.replace("{id}", id).replace("{int}", int)
}

/// The schema version, 0 when there is no schema yet.
fn current(sql: &mut dyn Sql, dialect: Dialect) -> Result<i64, DbError> {
    let exists = match dialect {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        }
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM pg_catalog.pg_tables \
             WHERE tablename = 'schema_version' AND schemaname = ANY (current_schemas(false))"
        }
    };
    if sql.query(exists, &[])?.first().and_then(|r| r.first()) == Some(&Value::Int(0)) {
        return Ok(0);
    }
    let rows = sql.query("SELECT MAX(version) FROM schema_version", &[])?;
    match rows.first().and_then(|r| r.first()) {
        Some(Value::Int(v)) => Ok(*v),
        Some(Value::Null) | None => Ok(0),
        Some(other) => Err(DbError(format!(
            "schema_version holds {other:?}, not a number"
        ))),
    }
}

/// Brings the schema up to date. First a read-only look (so that an up-to-date store, the
/// usual case, takes no write lock); if anything is missing, one write transaction that
/// looks again (another process may have migrated meanwhile) and applies every missing
/// migration in order. `lock`, when given, is run first in that transaction (PostgreSQL's
/// advisory lock, which serialises agents migrating at the same moment).
pub(crate) fn migrate(
    db: &mut dyn Backend,
    dialect: Dialect,
    lock: Option<&str>,
) -> Result<(), StoreError> {
    let label = db.label().to_owned();
    let migrate_err = |e: DbError| StoreError::Migrate {
        store: label.clone(),
        reason: e.0,
    };
    let newer = |found: i64| newer(&label, found);

    let mut seen = 0;
    db.transaction(false, "reading the schema version", &mut |sql| {
        seen = current(sql, dialect).map_err(migrate_err)?;
        Ok(())
    })?;
    if seen > SCHEMA_VERSION {
        return Err(newer(seen));
    }
    if seen == SCHEMA_VERSION {
        return Ok(());
    }
    db.transaction(true, "upgrading the schema", &mut |sql| {
        if let Some(lock) = lock {
            sql.query(lock, &[]).map_err(migrate_err)?;
        }
        sql.batch(&render(VERSION_TABLE, dialect))
            .map_err(migrate_err)?;
        let found = current(sql, dialect).map_err(migrate_err)?;
        if found > SCHEMA_VERSION {
            return Err(newer(found));
        }
        for (version, migration) in (1..).zip(MIGRATIONS) {
            if version <= found {
                continue;
            }
            sql.batch(&render(migration, dialect))
                .map_err(|e| migrate_err(DbError(format!("migration {version}: {}", e.0))))?;
            sql.execute(
                "INSERT INTO schema_version (version, applied_ms) VALUES ($1, $2)",
                &[Value::Int(version), Value::Int(crate::model::now_ms())],
            )
            .map_err(migrate_err)?;
        }
        Ok(())
    })
}

/// What readers select from each table (`WHERE 1 = 0`: nothing is read), with the
/// schema version that added the table. A store that answers every probe of its version
/// has every column the readers ask for.
fn reader_probes() -> [(&'static str, i64, String); 5] {
    let probe = |table: &str, cols: &str| format!("SELECT {cols} FROM {table} WHERE 1 = 0");
    [
        ("schema_version", 1, probe("schema_version", "version")),
        ("hosts", 1, probe("hosts", HOST_COLS)),
        ("events", 1, probe("events", EVENT_COLS)),
        // Readers select a host's listeners.
        (
            "listeners",
            1,
            probe("listeners", &format!("host, {LISTENER_COLS}")),
        ),
        ("scans", SCANS_SINCE, probe("scans", SCAN_COLS)),
    ]
}

/// For readers, which never migrate: checks that the store is a portolan history of a
/// version this build reads ([`OLDEST_READ`] to [`SCHEMA_VERSION`]), the tables of that
/// version being tables (not views, which could make any query endless) that answer what
/// readers select from them ([`reader_probes`]), and returns that version. A table that a
/// later migration added is not looked at in a store of an older version (whatever may
/// bear its name there is not portolan's). Nothing is written.
pub(crate) fn check(db: &mut dyn Backend, dialect: Dialect) -> Result<i64, StoreError> {
    let label = db.label().to_owned();
    let not_ours = |why: String| StoreError::NotHistory {
        store: label.clone(),
        reason: why,
    };
    let mut problem: Option<String> = None;
    let mut version = 0;
    db.transaction(false, "reading the schema", &mut |sql| {
        let kind_sql = match dialect {
            Dialect::Sqlite => "SELECT type FROM sqlite_master WHERE name = $1",
            Dialect::Postgres => {
                "SELECT CASE table_type WHEN 'BASE TABLE' THEN 'table' ELSE lower(table_type) END \
                 FROM information_schema.tables \
                 WHERE table_name = $1 AND table_schema = ANY (current_schemas(false))"
            }
        };
        for (table, since, probe) in reader_probes() {
            // The version table comes first: once it has answered its probe, the version
            // says which of the other tables the store has.
            if table != "schema_version" && (OLDEST_READ..since).contains(&version) {
                continue;
            }
            let kinds = sql
                .query(kind_sql, &[Value::from(table)])
                .map_err(|e| not_ours(e.0))?;
            match kinds.first().and_then(|r| r.first()) {
                None => {
                    // In a store older than this build reads, say that rather than name
                    // the first table missing.
                    problem = Some(if (1..OLDEST_READ).contains(&version) {
                        older(version)
                    } else {
                        format!("it has no table {table}")
                    });
                    return Ok(());
                }
                Some(Value::Text(t)) if t == "table" => {}
                Some(other) => {
                    let what = match other {
                        Value::Text(t) => super::for_terminal(t).into_owned(),
                        _ => "something else".into(),
                    };
                    problem = Some(format!("its {table} is a {what}, not a table"));
                    return Ok(());
                }
            }
            // Only a table (checked above) is probed: a view's query could run endlessly.
            sql.query(&probe, &[]).map_err(|e| {
                not_ours(format!(
                    "its table {table} lacks what portolan reads: {}",
                    e.0
                ))
            })?;
            if table == "schema_version" {
                version = current(sql, dialect).map_err(|e| not_ours(e.0))?;
            }
        }
        Ok(())
    })?;
    if let Some(why) = problem {
        return Err(not_ours(why));
    }
    match version {
        v if v > SCHEMA_VERSION => Err(newer(&label, v)),
        v if v < OLDEST_READ => Err(not_ours(older(v))),
        v => Ok(v),
    }
}
