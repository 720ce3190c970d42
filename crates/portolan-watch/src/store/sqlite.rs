//! The SQLite backend: one file, WAL journal, `synchronous=FULL`, 5 s busy timeout.
//!
//! WAL lets `portolan history` read while the daemon writes; a write transaction either
//! reaches the WAL whole (and is replayed on the next open) or not at all, so a daemon
//! killed mid-sample leaves a consistent store. `synchronous=FULL` syncs the WAL at every
//! commit, so a committed sample also survives a power cut.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portolan_core::escape::{for_terminal, path_for_terminal};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::schema::{self, Dialect};
use super::{io_reason, Backend, DbError, Sql, StoreError, Value};

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reader's transaction may run before it is interrupted: a hostile file (a
/// recursive view named `events`, a table of billions of rows) gives an error, not a hang.
const READ_TIME_LIMIT: Duration = Duration::from_secs(5);

/// How many SQLite virtual-machine steps run between looks at the clock.
const PROGRESS_STEPS: std::os::raw::c_int = 10_000;

/// The history in one SQLite file.
#[derive(Debug)]
pub(crate) struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    label: String,
    /// Held (flocked) while this handle records a host: see [`Store::claim_host`].
    claim: Option<std::fs::File>,
    /// For a reader: its time bound, shared with the connection's progress handler.
    limit: Option<Arc<ReadLimit>>,
    /// The schema version: [`schema::SCHEMA_VERSION`] once migrated; for a reader, the
    /// version the file had when it was opened.
    version: i64,
}

/// A reader's time bound: the progress handler interrupts the running statement once
/// `deadline` (set at each BEGIN) has passed, and records that it did in `fired`, so that
/// the error is reported as an interruption only when it was one (a statement that waited
/// out the busy timeout fails after as long).
#[derive(Debug)]
struct ReadLimit {
    deadline: Mutex<Instant>,
    fired: AtomicBool,
}

impl ReadLimit {
    /// Whether the running statement must stop now; remembers a yes.
    fn expired(&self) -> bool {
        let expired = self.deadline.lock().is_ok_and(|d| Instant::now() >= *d);
        if expired {
            self.fired.store(true, Ordering::Relaxed);
        }
        expired
    }

    /// A new transaction's bound, from now.
    fn restart(&self) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = Instant::now() + READ_TIME_LIMIT;
        }
        self.fired.store(false, Ordering::Relaxed);
    }
}

impl SqliteStore {
    /// Opens the file at `path`, creating it (mode 0600, parent directories 0700) when
    /// missing, and migrates its schema.
    pub(crate) fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let (_, label) = names(path);
        let open_err = |reason: String| StoreError::Open {
            store: label.clone(),
            reason,
        };
        prepare_file(path).map_err(open_err)?;

        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| open_err(reason(&e)))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_err(reason(&e)))?;
        // Reading the journal mode back is the first read of the file: a file that is not
        // SQLite fails here, untouched.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| open_err(reason(&e)))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "cannot switch the journal to WAL (it stays {mode:?})"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| open_err(reason(&e)))?;

        let mut store = SqliteStore {
            conn,
            path: path.to_owned(),
            label,
            claim: None,
            limit: None,
            version: schema::SCHEMA_VERSION,
        };
        schema::migrate(&mut store, Dialect::Sqlite, None)?;
        Ok(store)
    }

    /// Opens the file at `path` for reading only: never creates, migrates or writes it
    /// (the schema is checked instead, and may be an older one: [`schema::check`]), and
    /// bounds every statement in time ([`READ_TIME_LIMIT`]).
    ///
    /// A WAL database is read through its `-shm` index, which SQLite creates when missing;
    /// a reader who may not create files beside the database (the daemon's directory
    /// belongs to root) then gets "attempt to write a readonly database". When there is no
    /// `-wal` file nothing is being written (a writer keeps it while it runs), and the file
    /// is read as immutable, which needs no index. With a `-wal` file the reader needs read
    /// access to the `-shm` file beside it, and is told so.
    pub(crate) fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let (shown, label) = names(path);
        let open_err = |reason: String| StoreError::Open {
            store: label.clone(),
            reason,
        };
        if !inspect(path).map_err(open_err)? {
            return Err(StoreError::Missing { store: shown });
        }

        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let (conn, limit) = match read_only_conn(path, flags) {
            Ok(opened) => opened,
            Err(e) if needs_index(&e) => {
                let mut wal = path.as_os_str().to_owned();
                wal.push("-wal");
                if Path::new(&wal).exists() {
                    return Err(open_err(format!(
                        "it is being written (its -wal file exists) and reading it needs read \
                         access to {shown}-wal and {shown}-shm ({})",
                        reason(&e)
                    )));
                }
                let uri = format!("file:{}?immutable=1", uri_path(path));
                read_only_conn(Path::new(&uri), flags | OpenFlags::SQLITE_OPEN_URI)
                    .map_err(|e| open_err(reason(&e)))?
            }
            Err(e) => return Err(open_err(reason(&e))),
        };
        let mut store = SqliteStore {
            conn,
            path: path.to_owned(),
            label,
            claim: None,
            limit: Some(limit),
            version: 0,
        };
        store.version = schema::check(&mut store, Dialect::Sqlite)?;
        Ok(store)
    }

    /// One recorder per file: an exclusive, non-blocking `flock` on `FILE-watch.lock`,
    /// which holds the recorder's pid for the message a second one gets. The kernel drops
    /// the lock when the process ends, however it ends.
    fn claim(&mut self, _host: &str) -> Result<(), StoreError> {
        use std::io::{Read, Seek, Write};
        if self.claim.is_some() {
            return Ok(());
        }
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push("-watch.lock");
        let fail = |reason: String| StoreError::Open {
            store: self.label.clone(),
            reason,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| fail(format!("cannot open its lock file: {}", io_reason(&e))))?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut held = String::new();
            let _ = file.read_to_string(&mut held);
            let holder = held
                .trim()
                .parse::<u32>()
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default();
            return Err(StoreError::Busy {
                store: self.label.clone(),
                what: "into this file".into(),
                holder,
            });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        self.claim = Some(file);
        Ok(())
    }
}

/// `path` as messages show it (escaped, every byte kept), and the store's label for errors.
fn names(path: &Path) -> (String, String) {
    let shown = path_for_terminal(path);
    let label = format!("history database {shown}");
    (shown, label)
}

/// Looks at what is at `path` before SQLite sees it, for clear errors (SQLite would say
/// "unable to open database file" for all of these): true when it is a file we may read,
/// false when nothing is there.
fn inspect(path: &Path) -> Result<bool, String> {
    if path.as_os_str().is_empty() {
        return Err("the path is empty".into());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err("it is a directory".into()),
        Ok(_) => std::fs::File::open(path)
            .map(|_| true)
            .map_err(|e| io_reason(&e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_reason(&e)),
    }
}

/// A read-only connection to `target` (the path, or a `file:` URI) with its time bound;
/// its first read is done here, so that a file that is not SQLite, or a WAL file without
/// its index, fails here.
fn read_only_conn(
    target: &Path,
    flags: OpenFlags,
) -> Result<(Connection, Arc<ReadLimit>), rusqlite::Error> {
    let conn = Connection::open_with_flags(target, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let limit = Arc::new(ReadLimit {
        deadline: Mutex::new(Instant::now() + READ_TIME_LIMIT),
        fired: AtomicBool::new(false),
    });
    let seen = Arc::clone(&limit);
    conn.progress_handler(PROGRESS_STEPS, Some(move || seen.expired()))?;
    let _: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
    Ok((conn, limit))
}

/// Checks what is at `path` ([`inspect`]) and creates what is missing: parent
/// directories (0700) and an empty file (0600).
fn prepare_file(path: &Path) -> Result<(), String> {
    if inspect(path)? {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| {
                    format!(
                        "cannot create directory {}: {}",
                        path_for_terminal(parent),
                        io_reason(&e)
                    )
                })?;
        }
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_reason(&e)),
    }
}

/// True when SQLite could not read a WAL file for want of its `-shm` index (it could not
/// create or write it).
fn needs_index(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

/// A path as the path part of a `file:` URI: every byte but unreserved ones and `/`
/// percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A rusqlite error as a short reason ("file is not a database", "database is locked"),
/// escaped for a terminal: SQLite's messages can quote the file's own contents (a table
/// name in "malformed database schema (NAME)").
fn reason(e: &rusqlite::Error) -> String {
    let text = match e {
        rusqlite::Error::SqliteFailure(err, Some(msg)) if msg.is_empty() => err.to_string(),
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        rusqlite::Error::SqliteFailure(err, None) => err.to_string(),
        other => other.to_string(),
    };
    for_terminal(&text).into_owned()
}

fn db_err(e: &rusqlite::Error) -> DbError {
    DbError(reason(e))
}

/// `$1` placeholders become `?1` (SQLite accepts both spellings of numbered parameters
/// only as `?NNN`). The shared statements contain no `$` elsewhere.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

fn to_sqlite(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null | Value::Other(_) => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
    }
}

fn from_sqlite(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => Value::Text(s.to_owned()),
            Err(_) => Value::Other("text that is not UTF-8".into()),
        },
        ValueRef::Real(f) => Value::Other(format!("the floating-point number {f}")),
        ValueRef::Blob(b) => Value::Other(format!("a blob of {} bytes", b.len())),
    }
}

struct Lite<'c>(&'c Connection);

impl Sql for Lite<'_> {
    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.0
            .execute_batch(&sqlite_sql(sql))
            .map_err(|e| db_err(&e))
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut st = self
            .0
            .prepare_cached(&sqlite_sql(sql))
            .map_err(|e| db_err(&e))?;
        let n = st
            .execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))
            .map_err(|e| db_err(&e))?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let mut st = self
            .0
            .prepare_cached(&sqlite_sql(sql))
            .map_err(|e| db_err(&e))?;
        let width = st.column_count();
        let mut rows = st
            .query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))
            .map_err(|e| db_err(&e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| db_err(&e))? {
            let mut vals = Vec::with_capacity(width);
            for i in 0..width {
                vals.push(row.get_ref(i).map_or_else(
                    |e| Value::Other(format!("an unreadable value ({})", reason(&e))),
                    from_sqlite,
                ));
            }
            out.push(vals);
        }
        Ok(out)
    }
}

impl Backend for SqliteStore {
    fn label(&self) -> &str {
        &self.label
    }

    fn schema_version(&self) -> i64 {
        self.version
    }

    fn transaction(
        &mut self,
        write: bool,
        action: &'static str,
        f: &mut dyn FnMut(&mut dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let fail = |e: &rusqlite::Error| StoreError::Failed {
            store: self.label.clone(),
            action,
            reason: reason(e),
        };
        // A writer takes the write lock at BEGIN (waiting up to the busy timeout), so it
        // never has to upgrade a read lock, which SQLite cannot wait for.
        let behavior = if write {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        if let Some(limit) = &self.limit {
            limit.restart();
        }
        let tx = self
            .conn
            .transaction_with_behavior(behavior)
            .map_err(|e| fail(&e))?;
        let done = f(&mut Lite(&tx));
        let interrupted = self
            .limit
            .as_ref()
            .is_some_and(|l| l.fired.load(Ordering::Relaxed));
        if done.is_err() && interrupted {
            return Err(StoreError::Failed {
                store: self.label.clone(),
                action,
                reason: format!(
                    "interrupted after {} s (is this a portolan history?)",
                    READ_TIME_LIMIT.as_secs()
                ),
            });
        }
        done?;
        tx.commit().map_err(|e| fail(&e))
    }
}

super::store_over_backend!(SqliteStore, |s| path_for_terminal(&s.path));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_s_endless_query_is_interrupted() {
        let dir = std::env::temp_dir().join(format!("portolan-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("h.sqlite");
        drop(SqliteStore::open(&path).expect("create"));
        let mut ro = SqliteStore::open_read_only(&path).expect("read only");
        let start = Instant::now();
        let e = ro
            .transaction(false, "reading forever", &mut |sql| {
                sql.query(
                    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
                     SELECT COUNT(*) FROM r",
                    &[],
                )
                .map_err(|e| StoreError::Failed {
                    store: String::new(),
                    action: "reading forever",
                    reason: e.0,
                })?;
                Ok(())
            })
            .unwrap_err();
        let took = start.elapsed();
        assert!(took >= READ_TIME_LIMIT, "{took:?}");
        assert!(took < READ_TIME_LIMIT + Duration::from_secs(3), "{took:?}");
        assert!(e.to_string().contains("interrupted after 5 s"), "{e}");
        // The next transaction gets its own time.
        ro.transaction(false, "reading", &mut |sql| {
            sql.query("SELECT COUNT(*) FROM events", &[])
                .map(drop)
                .map_err(|e| StoreError::Failed {
                    store: String::new(),
                    action: "reading",
                    reason: e.0,
                })
        })
        .expect("a short read after the interrupted one");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_reader_kept_waiting_by_a_lock_is_not_called_interrupted() {
        let dir = std::env::temp_dir().join(format!("portolan-ro-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("h.sqlite");
        drop(SqliteStore::open(&path).expect("create"));
        // A rollback journal (not WAL), where a writer's exclusive lock keeps readers out.
        let holder = Connection::open(&path).expect("holder");
        let mode: String = holder
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .expect("journal mode");
        assert_eq!(mode, "delete");
        let mut ro = SqliteStore::open_read_only(&path).expect("read only");
        // The other connection holds the file exclusively: the reader waits out its busy
        // timeout, as long as its time limit, and is refused.
        holder
            .execute_batch("BEGIN EXCLUSIVE")
            .expect("exclusive lock");
        let start = Instant::now();
        let e = ro
            .transaction(false, "reading", &mut |sql| {
                sql.query("SELECT COUNT(*) FROM events", &[])
                    .map(drop)
                    .map_err(|e| StoreError::Failed {
                        store: String::new(),
                        action: "reading",
                        reason: e.0,
                    })
            })
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() >= BUSY_TIMEOUT, "{:?}", start.elapsed());
        assert!(e.contains("locked"), "{e}");
        assert!(!e.contains("interrupted"), "{e}");
        drop(holder);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
