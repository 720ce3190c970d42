//! The PostgreSQL backend: many hosts' agents writing to one database.
//!
//! Plain TCP (`NoTls`), a 5 s connect timeout unless the URL sets one, a 5 s statement
//! timeout for readers (as SQLite's readers have) unless the URL sets one, and migrations
//! under a transaction-scoped advisory lock so that agents starting together do not race
//! to create the tables. Every message shows the URL with its password replaced by `***`, and
//! any error text is scrubbed of the password as well.

use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use ::postgres::types::{ToSql, Type};
use ::postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Statement};
use portolan_core::escape::for_terminal;

use super::schema::{self, Dialect};
use super::{io_reason, Backend, DbError, Sql, StoreError, Value};

/// How long connecting may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long sent data may stay unacknowledged before the connection counts as dead (a
/// server that vanished mid-sample gives an error, not a wait of many minutes).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a reader's statement may run (`statement_timeout`) unless the URL says: a
/// huge or locked table gives an error, not a hang.
const READ_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock key taken around migrations ("portolan" in ASCII).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(8102082078014398830)";

/// The history in a PostgreSQL database.
pub(crate) struct PostgresStore {
    client: Client,
    /// To connect again after the connection is lost (a server restart).
    config: Config,
    statements: HashMap<String, Statement>,
    /// The URL with the password replaced by `***`, escaped.
    shown: String,
    label: String,
    /// The password, to scrub from any error text.
    secret: Option<String>,
    /// The host this session records, held by an advisory lock: see [`Store::claim_host`].
    claimed: Option<String>,
    /// The schema version: [`schema::SCHEMA_VERSION`] once migrated; for a reader, the
    /// version the database had when it was opened.
    version: i64,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database that `url` (`postgres://user:password@host:port/db?...`)
    /// names and migrates its schema.
    pub(crate) fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let mut store = Self::connect_only(url, false)?;
        schema::migrate(&mut store, Dialect::Postgres, Some(MIGRATION_LOCK))?;
        store.version = schema::SCHEMA_VERSION;
        Ok(store)
    }

    /// Connects for reading: the schema is checked (it may be an older one:
    /// [`schema::check`]), never created or upgraded, and every statement is bounded in
    /// time ([`READ_STATEMENT_TIMEOUT`]).
    pub(crate) fn connect_read_only(url: &str) -> Result<PostgresStore, StoreError> {
        let mut store = Self::connect_only(url, true)?;
        store.version = schema::check(&mut store, Dialect::Postgres)?;
        Ok(store)
    }

    fn connect_only(url: &str, reader: bool) -> Result<PostgresStore, StoreError> {
        let shown = for_terminal(&redact_url(url)).into_owned();
        let label = format!("PostgreSQL at {shown}");
        let mut secret = url_password(url);
        let mut config: Config =
            url.parse()
                .map_err(|e: ::postgres::Error| StoreError::BadUrl {
                    url: shown.clone(),
                    reason: scrub(&error_reason(&e), secret.as_deref()),
                })?;
        if let Some(pw) = config.get_password() {
            secret = Some(String::from_utf8_lossy(pw).into_owned());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("portolan");
        }
        let options = config.get_options().unwrap_or_default();
        if reader && !options.contains("statement_timeout") {
            // In the startup packet, so that a session opened again after a lost connection
            // has it too.
            let bounded = format!(
                "{options} -c statement_timeout={}",
                READ_STATEMENT_TIMEOUT.as_millis()
            );
            config.options(bounded.trim_start());
        }
        let client = connect(&config, &label, secret.as_deref())?;
        Ok(PostgresStore {
            client,
            config,
            statements: HashMap::new(),
            shown,
            label,
            secret,
            claimed: None,
            version: 0,
        })
    }
}

fn connect(config: &Config, label: &str, secret: Option<&str>) -> Result<Client, StoreError> {
    config.connect(NoTls).map_err(|e| StoreError::Connect {
        store: label.to_owned(),
        reason: scrub(&error_reason(&e), secret),
    })
}

impl PostgresStore {
    /// Connects again when the connection was lost.
    fn reconnect_if_closed(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() {
            self.reconnect()?;
        }
        Ok(())
    }

    /// A new session in place of the old one; prepared statements go with the old.
    fn reconnect(&mut self) -> Result<(), StoreError> {
        self.client = connect(&self.config, &self.label, self.secret.as_deref())?;
        self.statements.clear();
        // The advisory lock went with the old session.
        if let Some(host) = self.claimed.take() {
            self.claim(&host)?;
        }
        Ok(())
    }

    /// A session advisory lock on the host's name: held while this connection lives, so a
    /// second agent with the same `--host` is refused while the first runs, and may take
    /// over the moment the first one's connection ends.
    fn claim(&mut self, host: &str) -> Result<(), StoreError> {
        if self.claimed.as_deref() == Some(host) {
            return Ok(());
        }
        let key = format!("portolan watch {host}");
        let got: bool = self
            .client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&key],
            )
            .and_then(|row| row.try_get(0))
            .map_err(|e| StoreError::Failed {
                store: self.label.clone(),
                action: "claiming the host",
                reason: scrub(&error_reason(&e), self.secret.as_deref()),
            })?;
        if !got {
            return Err(StoreError::Busy {
                store: self.label.clone(),
                what: format!("host {}", for_terminal(host)),
                holder: String::new(),
            });
        }
        self.claimed = Some(host.to_string());
        Ok(())
    }
}

/// BEGIN: a write transaction at the default isolation (each host's agent writes only its
/// own rows), or a read-only snapshot so that a replay and the host's times agree.
fn begin(
    client: &mut Client,
    write: bool,
) -> Result<::postgres::Transaction<'_>, ::postgres::Error> {
    if write {
        client.transaction()
    } else {
        client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
    }
}

/// The URL with the password (in the user-info part and any `password=` parameter)
/// replaced by `***`. Errs on the side of hiding: everything from the first `:` of the
/// user info to the last `@` is hidden, since an unencoded `@` or `/` may be part of the
/// password.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return redact_params(url);
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, tail) = rest.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{tail}", &userinfo[..colon]),
                None => rest.to_owned(),
            }
        }
        None => rest.to_owned(),
    };
    format!("{scheme}{}", redact_params(&rest))
}

/// `password=VALUE` parameters become `password=***`.
fn redact_params(s: &str) -> String {
    let Some(q) = s.find('?') else {
        return s.to_owned();
    };
    let (head, query) = s.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{head}{}", params.join("&"))
}

/// The password as written in the URL (undecoded), for scrubbing when parsing fails.
fn url_password(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let userinfo = &rest[..rest.rfind('@')?];
    let pw = &userinfo[userinfo.find(':')? + 1..];
    (!pw.is_empty()).then(|| pw.to_owned())
}

/// Removes `secret` from a message.
fn scrub(msg: &str, secret: Option<&str>) -> String {
    let msg = match secret {
        Some(s) if !s.is_empty() => msg.replace(s, "***"),
        _ => msg.to_owned(),
    };
    for_terminal(&msg).into_owned()
}

/// A short reason for a postgres error: the server's message, else the I/O error
/// ("connection refused", "connection timed out"), else the innermost cause.
fn error_reason(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    let mut last = None;
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        last = Some(c);
        cause = c.source();
    }
    if e.is_closed() {
        return "the connection was closed".into();
    }
    match last {
        Some(c) => format!("{e}: {c}"),
        None => e.to_string(),
    }
}

/// A value bound to a parameter of the type the server expects.
fn bind(v: &Value, ty: &Type, n: usize) -> Result<Box<dyn ToSql + Sync>, DbError> {
    let out_of_range = |i: i64| DbError(format!("parameter ${n}: {i} does not fit {ty}"));
    Ok(match v {
        Value::Null | Value::Other(_) => {
            if *ty == Type::INT8 {
                Box::new(None::<i64>)
            } else if *ty == Type::INT4 {
                Box::new(None::<i32>)
            } else if *ty == Type::INT2 {
                Box::new(None::<i16>)
            } else {
                Box::new(None::<String>)
            }
        }
        Value::Int(i) => {
            if *ty == Type::INT8 {
                Box::new(*i)
            } else if *ty == Type::INT4 {
                Box::new(i32::try_from(*i).map_err(|_| out_of_range(*i))?)
            } else if *ty == Type::INT2 {
                Box::new(i16::try_from(*i).map_err(|_| out_of_range(*i))?)
            } else {
                return Err(DbError(format!(
                    "parameter ${n}: a number where the server expects {ty}"
                )));
            }
        }
        Value::Text(s) => Box::new(s.clone()),
    })
}

fn read(row: &::postgres::Row, i: usize) -> Value {
    let ty = row.columns()[i].type_();
    let got = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int))
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)
            .map(|v| v.map(|v| Value::Int(i64::from(v))))
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)
            .map(|v| v.map(|v| Value::Int(i64::from(v))))
    } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
        row.try_get::<_, Option<String>>(i)
            .map(|v| v.map(Value::Text))
    } else {
        return Value::Other(format!("a value of type {ty}"));
    };
    match got {
        Ok(v) => v.unwrap_or(Value::Null),
        Err(e) => Value::Other(format!("an unreadable value ({e})")),
    }
}

struct Pg<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
    secret: Option<&'a str>,
    /// Set when a statement failed because the session is gone.
    lost: &'a std::cell::Cell<bool>,
}

impl<C: GenericClient> Pg<'_, C> {
    fn err(&self, e: &::postgres::Error) -> DbError {
        if connection_lost(e) {
            self.lost.set(true);
        }
        DbError(scrub(&error_reason(e), self.secret))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).map_err(|e| self.err(&e))?;
        self.statements.insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    fn bound(st: &Statement, params: &[Value]) -> Result<Vec<Box<dyn ToSql + Sync>>, DbError> {
        if st.params().len() != params.len() {
            return Err(DbError(format!(
                "the statement takes {} parameters, {} given",
                st.params().len(),
                params.len()
            )));
        }
        params
            .iter()
            .zip(st.params())
            .enumerate()
            .map(|(i, (v, ty))| bind(v, ty, i + 1))
            .collect()
    }
}

impl<C: GenericClient> Sql for Pg<'_, C> {
    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.client.batch_execute(sql).map_err(|e| self.err(&e))
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let st = self.statement(sql)?;
        let bound = Self::bound(&st, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(AsRef::as_ref).collect();
        self.client.execute(&st, &refs).map_err(|e| self.err(&e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, DbError> {
        let st = self.statement(sql)?;
        let bound = Self::bound(&st, params)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(AsRef::as_ref).collect();
        let rows = self.client.query(&st, &refs).map_err(|e| self.err(&e))?;
        Ok(rows
            .iter()
            .map(|row| (0..row.len()).map(|i| read(row, i)).collect())
            .collect())
    }
}

impl Backend for PostgresStore {
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
        // A lost connection (the server restarted, an administrator ended the session) shows
        // either as a closed client or, when the server's goodbye (SQLSTATE 57P01) arrives
        // before the client has noticed the socket close, as an error of the next statement.
        // Either way: connect again and run the transaction once more. The failed attempt
        // never reached COMMIT, and a session the server ends rolls back, so the retry
        // cannot apply anything twice. A COMMIT that fails is not retried here (whether it
        // took effect is unknown); the caller keeps the sample and `record` skips a sample
        // that is already in the store.
        for attempt in 0..2 {
            if attempt > 0 {
                self.reconnect()?;
            } else {
                self.reconnect_if_closed()?;
            }
            let secret = self.secret.as_deref();
            let label = &self.label;
            let fail = |e: &::postgres::Error| StoreError::Failed {
                store: label.clone(),
                action,
                reason: scrub(&error_reason(e), secret),
            };
            let lost = std::cell::Cell::new(false);
            let err = match begin(&mut self.client, write) {
                Ok(mut tx) => {
                    let done = f(&mut Pg {
                        client: &mut tx,
                        statements: &mut self.statements,
                        secret,
                        lost: &lost,
                    });
                    match done {
                        Ok(()) => return tx.commit().map_err(|e| fail(&e)),
                        Err(e) => e,
                    }
                }
                Err(e) => {
                    lost.set(connection_lost(&e));
                    fail(&e)
                }
            };
            if attempt > 0 || !(lost.get() || self.client.is_closed()) {
                return Err(err);
            }
        }
        Err(StoreError::Failed {
            store: self.label.clone(),
            action,
            reason: "the connection was closed".into(),
        })
    }
}

/// True when `e` means the session is gone (or going): the client saw the connection
/// close, an I/O error, SQLSTATE class 08 (connection exception), or 57P01/57P02/57P03
/// (the server is shutting down, crashed or not yet accepting sessions).
fn connection_lost(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

super::store_over_backend!(PostgresStore, |s| s.shown.clone());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://u:secret@127.0.0.1:5432/db"),
            "postgres://u:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact_url("postgresql://u@127.0.0.1/db?password=secret&sslmode=disable"),
            "postgresql://u@127.0.0.1/db?password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgres://127.0.0.1/db"),
            "postgres://127.0.0.1/db"
        );
        // An unencoded @ or / in the password is hidden too.
        let r = redact_url("postgres://u:p@ss/w@127.0.0.1/db");
        assert!(!r.contains("ss/w") && !r.contains("p@"), "{r}");
        assert_eq!(
            url_password("postgres://u:p%40ss@h/db").as_deref(),
            Some("p%40ss")
        );
        assert_eq!(scrub("bad p4ss here", Some("p4ss")), "bad *** here");
    }
}
