//! Questions to the recorded history, answered as typed reports: which store to open, this
//! machine's name, what changed between a past moment and now (`diff`), and what holds a
//! port according to the last sample (`history PORT`). The binary renders the reports.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portolan_core::{Exposure, Protocol};
use portolan_sockets::SocketsError;
use serde::Serialize;

use crate::model::{rfc3339_ms, EventKind, Listener, Owner};
use crate::sampler::Sampler;
use crate::store::{self, Store, StoreError};
use crate::tracker::{by_place, owner_change};

/// What can go wrong answering a question about the history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The live sample for "now" failed.
    #[error("cannot sample this machine's listeners: {0}")]
    Sample(#[from] SocketsError),
    /// The store has nothing for the host.
    #[error("{store} has no history for host {host}; `portolan watch` records it")]
    NoHistory { store: String, host: String },
    /// The host has events but no current state (a damaged store).
    #[error("{store}: host {host} has events but no recorded state")]
    NoState { store: String, host: String },
}

/// This machine's name, as the kernel has it (`uname -n`); `localhost` when empty.
pub fn hostname() -> String {
    let uts = rustix::system::uname();
    let name = uts.nodename().to_string_lossy().trim().to_owned();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

/// Opens the store a user named, for recording (`watch`): a SQLite file (`--db`), else a
/// spec (`--store`: a file or a `postgres://` URL), else `$PORTOLAN_STORE` when set and not
/// blank, else the default SQLite file ([`store::default_sqlite_path`]). Creates and
/// migrates what is missing. Claims nothing: `watch` claims its host afterwards
/// ([`Store::claim_host`]); a writer beside it (`portolan sentry`, recording scans with
/// [`Store::record_scan`]) opens the same store the same way and must not claim the host.
pub fn open_store(db: Option<&Path>, spec: Option<&str>) -> Result<Box<dyn Store>, StoreError> {
    match store_target(db, spec, std::env::var_os("PORTOLAN_STORE"))? {
        Target::File(path) => store::open_sqlite(&path),
        Target::Spec(spec) => store::open(&spec),
    }
}

/// Opens the same store as [`open_store`] for reading (`history`, `diff`): nothing is
/// created, migrated or written ([`store::open_read_only`]), so a store that an older
/// `portolan watch` keeps at an older schema is read as it is (schema 1: no scans).
pub fn open_history(db: Option<&Path>, spec: Option<&str>) -> Result<Box<dyn Store>, StoreError> {
    match store_target(db, spec, std::env::var_os("PORTOLAN_STORE"))? {
        Target::File(path) => store::open_sqlite_read_only(&path),
        Target::Spec(spec) => store::open_read_only(&spec),
    }
}

/// Where the store a user named is.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// A SQLite file, by path (any bytes).
    File(PathBuf),
    /// A spec: a file or a `postgres://` URL.
    Spec(String),
}

/// `--db`, else `--store`, else `env` (`$PORTOLAN_STORE`) when set and not blank, else the
/// default file. A `$PORTOLAN_STORE` that is not UTF-8 is an error, not a reason to fall
/// back to the default store.
fn store_target(
    db: Option<&Path>,
    spec: Option<&str>,
    env: Option<OsString>,
) -> Result<Target, StoreError> {
    if let Some(path) = db {
        return Ok(Target::File(path.to_owned()));
    }
    if let Some(spec) = spec {
        return Ok(Target::Spec(spec.to_owned()));
    }
    match env.map(OsString::into_string) {
        Some(Ok(s)) if !s.trim().is_empty() => Ok(Target::Spec(s)),
        Some(Err(raw)) => Err(StoreError::Invalid {
            store: "$PORTOLAN_STORE".into(),
            reason: format!(
                "{} is not UTF-8; name such a file with --db",
                portolan_core::escape::path_for_terminal(Path::new(&raw))
            ),
        }),
        _ => Ok(Target::File(store::default_sqlite_path()?)),
    }
}

/// How one listener differs between two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Listening now, not then.
    Added,
    /// Another program or user holds the place now.
    OwnerChanged,
    /// Listening then, not now.
    Removed,
}

impl Change {
    pub const fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::OwnerChanged => "owner_changed",
            Change::Removed => "removed",
        }
    }
}

/// One difference between two states of a host's listeners. For `removed`, the listener
/// as it was; otherwise as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffEntry {
    pub change: Change,
    pub proto: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub exposure: Exposure,
    pub owner: Owner,
    /// For `owner_changed`: who held it then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_owner: Option<Owner>,
}

/// The listeners added, removed or handed to another program or user between `before` and
/// `after`, by place (protocol, address, port; of several sockets on one place the lowest
/// pid speaks). A restart (same program, new pid) is no change. Sorted by port, protocol,
/// address, change.
pub fn diff_states(before: &[Listener], after: &[Listener]) -> Vec<DiffEntry> {
    let before = by_place(before);
    let after = by_place(after);
    let entry = |change, l: &Listener, previous_owner| DiffEntry {
        change,
        proto: l.proto,
        address: l.address,
        port: l.port,
        exposure: l.exposure,
        owner: l.owner.clone(),
        previous_owner,
    };
    let mut out = Vec::new();
    for (k, l) in &after {
        match before.get(k) {
            None => out.push(entry(Change::Added, l, None)),
            Some(b) if owner_change(&b.owner, &l.owner) == Some(EventKind::OwnerChanged) => {
                out.push(entry(Change::OwnerChanged, l, Some(b.owner.clone())));
            }
            Some(_) => {}
        }
    }
    for (k, b) in &before {
        if !after.contains_key(k) {
            out.push(entry(Change::Removed, b, None));
        }
    }
    out.sort_by_key(|e| (e.port, e.proto, e.address, e.change));
    out
}

/// What "now" is in a diff (for the table's heading; not in the JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// A live sample of this machine.
    Live,
    /// Another host: its last recorded sample.
    LastSample { ts_ms: i64 },
}

/// `portolan diff`: a host's listeners at a past moment against now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffReport {
    pub host: String,
    /// The moment compared with (the history's start when the asked moment is before it).
    pub then_ms: i64,
    /// `then_ms` in RFC 3339 (UTC).
    pub then: String,
    /// The host's first recorded sample, RFC 3339 (UTC).
    pub history_starts: String,
    pub changes: Vec<DiffEntry>,
    /// What the changes are measured against.
    #[serde(skip)]
    pub now: Now,
    /// The moment asked for, when it was before the history began (and `then_ms` moved).
    #[serde(skip)]
    pub asked_before_history_ms: Option<i64>,
}

/// Compares `host` (default: this machine) at `since_ms` with now: a live sample when the
/// host is this machine, else the host's last recorded sample. A moment before the history
/// begins is compared from the history's first state (and the report says so).
pub fn diff(
    store: &mut dyn Store,
    host: Option<&str>,
    since_ms: i64,
) -> Result<DiffReport, HistoryError> {
    let me = hostname();
    let host = host.map_or_else(|| me.clone(), str::to_owned);
    let asked = store.state_at(&host, since_ms)?;
    let Some(starts) = asked.history_starts_ms else {
        return Err(HistoryError::NoHistory {
            store: store.describe(),
            host: portolan_core::escape::for_terminal(&host).into_owned(),
        });
    };
    let (then_ms, then, asked_before) = if since_ms < starts {
        (starts, store.state_at(&host, starts)?, Some(since_ms))
    } else {
        (since_ms, asked, None)
    };
    let (now_listeners, now) = if host == me {
        (Sampler::new(Duration::MAX).sample()?, Now::Live)
    } else {
        let st = store
            .last_state(&host)?
            .ok_or_else(|| HistoryError::NoState {
                store: store.describe(),
                host: portolan_core::escape::for_terminal(&host).into_owned(),
            })?;
        (
            st.listeners,
            Now::LastSample {
                ts_ms: st.last_sample_ms,
            },
        )
    };
    Ok(DiffReport {
        changes: diff_states(&then.listeners, &now_listeners),
        host,
        then_ms,
        then: rfc3339_ms(then_ms),
        history_starts: rfc3339_ms(starts),
        now,
        asked_before_history_ms: asked_before,
    })
}

/// What holds a port on a host according to the store's last sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortNow {
    pub host: String,
    pub port: u16,
    pub last_sample_ms: i64,
    /// The listeners on the port (empty: nothing listened).
    pub holders: Vec<Listener>,
}

/// The last recorded state of `port` on `host` (default: this machine); `None` when the
/// host never recorded.
pub fn port_now(
    store: &mut dyn Store,
    host: Option<&str>,
    port: u16,
) -> Result<Option<PortNow>, StoreError> {
    let host = host.map_or_else(hostname, str::to_owned);
    let Some(state) = store.last_state(&host)? else {
        return Ok(None);
    };
    Ok(Some(PortNow {
        holders: state
            .listeners
            .into_iter()
            .filter(|l| l.port == port)
            .collect(),
        host,
        port,
        last_sample_ms: state.last_sample_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(addr: &str, port: u16, pid: u32, process: &str) -> Listener {
        Listener::new(
            Protocol::Tcp,
            std::net::SocketAddr::new(addr.parse().unwrap(), port),
            Owner {
                pid: Some(pid),
                process: Some(process.into()),
                exe: Some(format!("/usr/bin/{process}")),
                uid: 0,
                ..Owner::default()
            },
        )
    }

    #[test]
    fn added_removed_and_owner_changed_by_place() {
        let before = [
            l("0.0.0.0", 22, 10, "sshd"),
            l("127.0.0.1", 5432, 20, "postgres"),
            l("0.0.0.0", 8080, 30, "python3"),
        ];
        let after = [
            l("0.0.0.0", 22, 11, "sshd"),      // restarted: no change
            l("0.0.0.0", 8080, 40, "node"),    // another program
            l("0.0.0.0", 6379, 50, "redis"),   // new
            l("127.0.0.1", 8080, 60, "nginx"), // another place
        ];
        let d = diff_states(&before, &after);
        let got: Vec<(Change, &str, u16)> = d
            .iter()
            .map(|e| (e.change, e.owner.process.as_deref().unwrap(), e.port))
            .collect();
        assert_eq!(
            got,
            [
                (Change::Removed, "postgres", 5432),
                (Change::Added, "redis", 6379),
                (Change::OwnerChanged, "node", 8080),
                (Change::Added, "nginx", 8080),
            ]
        );
        let changed = &d[2];
        assert_eq!(
            changed.previous_owner.as_ref().unwrap().process.as_deref(),
            Some("python3")
        );
        assert!(d
            .iter()
            .all(|e| e.change == Change::OwnerChanged || e.previous_owner.is_none()));
    }

    #[test]
    fn another_uid_is_an_owner_change_and_equal_states_are_no_change() {
        let before = [l("::", 443, 5, "nginx")];
        let mut after = before.clone();
        assert!(diff_states(&before, &after).is_empty());
        after[0].owner.uid = 1000;
        let d = diff_states(&before, &after);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].change, Change::OwnerChanged);
        let v = serde_json::to_value(&d[0]).unwrap();
        assert_eq!(v["change"], "owner_changed");
        assert_eq!(v["exposure"], "all_interfaces");
        assert_eq!(v["previous_owner"]["uid"], 0);
    }

    #[test]
    fn sockets_sharing_a_place_speak_through_the_lowest_pid() {
        let before = [l("0.0.0.0", 80, 100, "nginx")];
        let after = [
            l("0.0.0.0", 80, 300, "php-fpm"),
            l("0.0.0.0", 80, 100, "nginx"),
        ];
        assert!(diff_states(&before, &after).is_empty());
        assert!(diff_states(&[], &[]).is_empty());
        let gone = diff_states(&after, &[]);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].owner.pid, Some(100));
    }

    #[test]
    fn store_paths_keep_their_bytes_and_a_non_utf8_environment_is_refused() {
        use std::os::unix::ffi::OsStrExt as _;
        let raw = std::ffi::OsStr::from_bytes(b"/tmp/h\xff.sqlite");
        assert_eq!(
            store_target(Some(Path::new(raw)), Some("postgres://x/y"), None).unwrap(),
            Target::File(PathBuf::from(raw))
        );
        assert_eq!(
            store_target(None, Some("postgres://x/y"), Some(raw.to_owned())).unwrap(),
            Target::Spec("postgres://x/y".into())
        );
        assert_eq!(
            store_target(None, None, Some("/srv/h.sqlite".into())).unwrap(),
            Target::Spec("/srv/h.sqlite".into())
        );
        let e = store_target(None, None, Some(raw.to_owned()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "$PORTOLAN_STORE: /tmp/h\\xff.sqlite is not UTF-8; name such a file with --db"
        );
        // Blank: the default file.
        if let Ok(default) = store::default_sqlite_path() {
            assert_eq!(
                store_target(None, None, Some(" ".into())).unwrap(),
                Target::File(default)
            );
        }
    }

    #[test]
    fn a_non_utf8_db_path_opens_that_very_file() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = std::env::temp_dir().join(format!("portolan-history-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut name = dir.clone().into_os_string();
        name.push(std::ffi::OsStr::from_bytes(b"/h\xff.sqlite"));
        let path = PathBuf::from(name);
        drop(open_store(Some(&path), None).expect("create"));
        assert!(path.is_file(), "{}", path.display());
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            files
                .iter()
                .all(|f| f.as_bytes().starts_with(b"h\xff.sqlite")),
            "{files:?}"
        );
        drop(open_history(Some(&path), None).expect("read"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_hostname_is_the_kernels() {
        let want = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(hostname(), want.trim());
    }
}
