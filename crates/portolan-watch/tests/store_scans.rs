//! Scans in the SQLite store: what `record_scan` and `scans` promise, rows written badly,
//! a history of schema 1 that readers read as it is and a scan writer upgrades, readers,
//! and the sentry writing the same file as the watcher from another process, with no claim
//! of its own.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    event, listener, owner, record_story, scan, scan_bad_rows, scan_behaviour, scan_story, story,
    TempDir, DB, WEB,
};
use portolan_core::Protocol;
use portolan_watch::history;
use portolan_watch::model::{now_ms, EventKind, ScanRecord};
use portolan_watch::store::{self, EventFilter, ScanFilter, Store, StoreError, SCHEMA_VERSION};

fn raw(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("raw connection");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c
}

/// Takes a store of this build back to what schema 1 was (what `portolan watch` wrote before
/// scans existed): no scans table, one version row.
fn to_schema_1(path: &Path) {
    raw(path)
        .execute_batch("DROP TABLE scans; DELETE FROM schema_version WHERE version > 1;")
        .unwrap();
}

/// The store's schema version and whether it has a scans table, read directly.
fn version_and_scans_table(path: &Path) -> (i64, bool) {
    let c = raw(path);
    let version = c
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    let scans: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'scans'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (version, scans == 1)
}

/// Everything a reader asks of the listener history, for comparing two handles.
fn listener_history(
    s: &mut dyn Store,
) -> (
    Vec<portolan_watch::model::Event>,
    Vec<store::HostInfo>,
    Vec<Option<store::HostState>>,
    Vec<store::StateAt>,
) {
    let events = s.events(&EventFilter::default()).unwrap();
    let hosts = s.hosts().unwrap();
    let last = [WEB, DB, "nobody"]
        .into_iter()
        .map(|h| s.last_state(h).unwrap())
        .collect();
    let at = story()
        .web_states
        .iter()
        .map(|(ts, _)| s.state_at(WEB, *ts).unwrap())
        .collect();
    (events, hosts, last, at)
}

#[test]
fn scans_round_trip_upsert_and_filter() {
    let dir = TempDir::new("scans");
    let path = dir.join("history.sqlite");
    let mut s = store::open(path.to_str().unwrap()).expect("open");
    scan_behaviour(s.as_mut());
    // A reader (history) reads the same.
    let mut reader = store::open_read_only(path.to_str().unwrap()).expect("open for reading");
    assert_eq!(
        reader.scans(&ScanFilter::default()).unwrap(),
        s.scans(&ScanFilter::default()).unwrap()
    );
    // ... and cannot write.
    let e = reader.record_scan(&scan_story()[0]).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "history database {}: recording a scan failed: ",
            path.display()
        )),
        "{e}"
    );
}

#[test]
fn scan_rows_written_badly_name_the_row() {
    let dir = TempDir::new("scans");
    let path = dir.join("history.sqlite");
    let mut s = store::open(path.to_str().unwrap()).expect("open");
    let conn = raw(&path);
    scan_bad_rows(s.as_mut(), &mut |sql| conn.execute_batch(sql).expect(sql));
    // SQLite keeps whatever type it is given.
    let key = &scan_story()[0].key;
    for (set, want) in [
        ("started_ms = 'soon'", "started_ms holds the text \"soon\""),
        ("sources = x'00ff'", "sources holds a blob of 2 bytes"),
        ("probes = 1.5", "probes holds the floating-point number 1.5"),
    ] {
        conn.execute_batch(&format!("UPDATE scans SET {set} WHERE scan_key = '{key}'"))
            .unwrap();
        let e = s.scans(&ScanFilter::default()).unwrap_err().to_string();
        assert!(e.contains("scans row (\"web-1\", "), "{set}: {e}");
        assert!(e.contains(want), "{set}: {e}");
        conn.execute_batch(&format!(
            "UPDATE scans SET started_ms = 10000, sources = '[]', probes = 1 \
             WHERE scan_key = '{key}'"
        ))
        .unwrap();
    }
    assert_eq!(s.scans(&ScanFilter::default()).unwrap().len(), 4);
}

/// A history that `portolan watch` wrote before scans existed (schema 1), read by this
/// build: everything the listener history held, as a writer of this build read it, and no
/// scans; the reader cannot record one, and the file is left as it was (still schema 1).
#[test]
fn a_reader_reads_a_history_of_schema_1_as_it_is() {
    let dir = TempDir::new("scans");
    let path = dir.join("history.sqlite");
    let spec = path.to_str().unwrap();
    let want = {
        let mut s = store::open(spec).expect("open");
        record_story(s.as_mut(), &story());
        listener_history(s.as_mut())
    };
    assert!(want.0.len() > 10, "{:?}", want.0);
    to_schema_1(&path);
    assert_eq!(version_and_scans_table(&path), (1, false));
    let bytes = std::fs::read(&path).unwrap();

    let mut reader = store::open_read_only(spec).expect("a reader reads schema 1");
    assert_eq!(listener_history(reader.as_mut()), want);
    assert_eq!(reader.scans(&ScanFilter::default()).unwrap(), vec![]);
    let narrow = ScanFilter {
        host: Some(WEB.into()),
        since_ms: Some(0),
        until_ms: Some(i64::MAX),
        source: Some("203.0.113.9".parse().unwrap()),
        port: Some(22),
        limit: Some(5),
    };
    assert_eq!(reader.scans(&narrow).unwrap(), vec![]);
    let e = reader.record_scan(&scan_story()[0]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "history database {}: recording a scan failed: it is open for reading only, and \
             its schema (version 1) has no scans",
            path.display()
        )
    );
    // The way `portolan history` opens it.
    let mut history = history::open_history(Some(&path), None).expect("history reads it");
    assert_eq!(history.events(&EventFilter::default()).unwrap(), want.0);
    assert_eq!(history.scans(&ScanFilter::default()).unwrap(), vec![]);
    drop((reader, history));

    assert_eq!(version_and_scans_table(&path), (1, false));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a reader changed the file"
    );
}

/// Reading schema 1 is not reading anything: a store of version 1 must still have every
/// table of version 1, each a table with every column readers read. What schema 2 added is
/// not looked at (a `scans` that is not portolan's, even an endless view, is no scans of
/// it), while a store of version 2 must have it. Other versions keep their errors.
#[test]
fn a_reader_of_schema_1_checks_what_schema_1_has() {
    let dir = TempDir::new("scans");
    let refused = |name: &str, sql: &str| {
        let path = dir.join(name);
        drop(store::open(path.to_str().unwrap()).expect("create"));
        to_schema_1(&path);
        raw(&path).execute_batch(sql).unwrap();
        let e = store::open_read_only(path.to_str().unwrap())
            .err()
            .unwrap_or_else(|| panic!("{sql}: not refused"));
        assert!(matches!(e, StoreError::NotHistory { .. }), "{sql}: {e}");
        e.to_string()
    };
    let e = refused("narrow.sqlite", "ALTER TABLE events DROP COLUMN note");
    assert!(
        e.contains("its table events lacks what portolan reads") && e.contains("note"),
        "{e}"
    );
    let e = refused("nolisteners.sqlite", "DROP TABLE listeners");
    assert!(e.ends_with("it has no table listeners"), "{e}");
    let e = refused(
        "hostsview.sqlite",
        "ALTER TABLE hosts RENAME TO h; CREATE VIEW hosts AS SELECT * FROM h",
    );
    assert!(e.ends_with("its hosts is a view, not a table"), "{e}");
    // Version 0 (no version row, every table of this build) is older than this build reads.
    let path = dir.join("version0.sqlite");
    drop(store::open(path.to_str().unwrap()).expect("create"));
    raw(&path)
        .execute_batch("DELETE FROM schema_version")
        .unwrap();
    let e = store::open_read_only(path.to_str().unwrap())
        .err()
        .expect("refused");
    assert!(matches!(e, StoreError::NotHistory { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!(
            "its schema is version 0, older than this portolan reads (1 to {SCHEMA_VERSION})"
        )),
        "{e}"
    );

    let path = dir.join("foreign.sqlite");
    drop(store::open(path.to_str().unwrap()).expect("create"));
    to_schema_1(&path);
    raw(&path)
        .execute_batch(
            "CREATE VIEW scans AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) \
             SELECT n AS id FROM r",
        )
        .unwrap();
    let start = Instant::now();
    let mut reader = store::open_read_only(path.to_str().unwrap()).expect("read");
    assert_eq!(reader.scans(&ScanFilter::default()).unwrap(), vec![]);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // Schema 2 without its scans table is refused, as before.
    let path = dir.join("noscans.sqlite");
    drop(store::open(path.to_str().unwrap()).expect("create"));
    raw(&path).execute_batch("DROP TABLE scans").unwrap();
    let e = store::open_read_only(path.to_str().unwrap())
        .err()
        .expect("refused");
    assert!(matches!(e, StoreError::NotHistory { .. }), "{e}");
    assert!(e.to_string().ends_with("it has no table scans"), "{e}");
}

/// A history of schema 1: the sentry, opening it the way every writer does
/// (`history::open_store`), upgrades it and records, and the listener history is kept;
/// a reader that opened it before the upgrade still has no scans, a reader opened after
/// has them.
#[test]
fn a_history_of_schema_1_gains_the_scans_table() {
    let dir = TempDir::new("scans");
    let path = dir.join("history.sqlite");
    let l = listener(
        Protocol::Tcp,
        "0.0.0.0",
        22,
        owner(1, "sshd", "/usr/sbin/sshd", None),
    );
    {
        let mut s = store::open(path.to_str().unwrap()).expect("open");
        s.record(WEB, 1000, &[event(WEB, 1000, EventKind::Present, &l)])
            .unwrap();
    }
    to_schema_1(&path);
    let mut before = store::open_read_only(path.to_str().unwrap()).expect("a reader reads it");
    assert_eq!(before.events(&EventFilter::default()).unwrap().len(), 1);
    assert_eq!(before.scans(&ScanFilter::default()).unwrap(), vec![]);
    assert_eq!(version_and_scans_table(&path), (1, false));

    let mut sentry = history::open_store(Some(&path), None).expect("a writer upgrades it");
    let [a, ..] = scan_story();
    sentry.record_scan(&a).expect("recorded");
    assert_eq!(before.scans(&ScanFilter::default()).unwrap(), vec![]);
    let mut reader = store::open_read_only(path.to_str().unwrap()).expect("read again");
    assert_eq!(reader.scans(&ScanFilter::default()).unwrap(), vec![a]);
    assert_eq!(reader.events(&EventFilter::default()).unwrap().len(), 1);
    assert_eq!(version_and_scans_table(&path), (SCHEMA_VERSION, true));
}

#[test]
fn a_reader_refuses_a_scans_table_without_a_column_it_reads() {
    let dir = TempDir::new("scans");
    let path = dir.join("narrow.sqlite");
    drop(store::open(path.to_str().unwrap()).expect("create"));
    raw(&path)
        .execute_batch("ALTER TABLE scans DROP COLUMN tool_because")
        .unwrap();
    let e = store::open_read_only(path.to_str().unwrap())
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(matches!(e, StoreError::NotHistory { .. }), "{msg}");
    assert!(
        msg.contains("its table scans lacks what portolan reads") && msg.contains("tool_because"),
        "{msg}"
    );
}

/// How many scans the sentry child records, and how many times it records each (a scan is
/// recorded again as it grows).
const CHILD_SCANS: i64 = 60;
const CHILD_ROUNDS: i64 = 3;
/// How many samples the watcher (this process) records at least.
const SAMPLES: i64 = 150;

/// The scan the child records for (`i`, `round`): it grows each round, ends in the last.
fn child_scan(i: i64, round: i64) -> ScanRecord {
    let port = format!("{}/tcp", 1000 + round);
    let ports: Vec<String> = (0..=round).map(|r| format!("{}/tcp", 1000 + r)).collect();
    let mut s = scan(
        WEB,
        &format!("4242-1700000000000-{i}"),
        i * 10,
        &["203.0.113.9"],
        &[port.as_str()],
    );
    s.ports_total = u64::try_from(ports.len()).unwrap();
    s.ports = ports;
    s.probes = u64::try_from(round + 1).unwrap();
    s.ended_ms = (round == CHILD_ROUNDS - 1).then_some(i * 10 + 5000);
    s
}

/// The sentry of the test below: another process writing the file the watcher writes,
/// opened as every writer opens it, with no claim.
#[test]
#[ignore = "not a test: the sentry process that the test below runs"]
fn sentry_child() {
    let Some(path) = std::env::var_os("PORTOLAN_SCAN_CHILD_DB") else {
        return;
    };
    let mut s = match history::open_store(Some(Path::new(&path)), None) {
        Ok(s) => s,
        Err(e) => {
            println!("RESULT: err {e}");
            return;
        }
    };
    let first = now_ms();
    for round in 0..CHILD_ROUNDS {
        for i in 0..CHILD_SCANS {
            if let Err(e) = s.record_scan(&child_scan(i, round)) {
                println!("RESULT: err {e}");
                return;
            }
        }
    }
    println!("RESULT: ok {first} {}", now_ms());
}

/// `portolan sentry` records scans into the SQLite file that `portolan watch` records into
/// and has claimed: two processes, each writing in its own short transactions, take turns
/// at the write lock (WAL, busy timeout) and neither fails nor loses a write.
#[test]
fn the_sentry_and_the_watcher_write_one_file_at_once() {
    let dir = TempDir::new("scans-two");
    let path = dir.join("history.sqlite");
    let mut watcher = store::open(path.to_str().unwrap()).expect("open");
    watcher.claim_host(WEB).expect("the watcher's claim");

    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "sentry_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PORTOLAN_SCAN_CHILD_DB", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the sentry child");

    // The watcher records a sample after another for as long as the child runs (and at
    // least SAMPLES), so every write of the child meets the watcher's.
    let start = Instant::now();
    let watcher_first = now_ms();
    let mut child = child;
    let mut ts = 0;
    loop {
        ts += 1;
        let l = listener(
            Protocol::Tcp,
            "127.0.0.1",
            20_000 + u16::try_from(ts % 30_000).unwrap(),
            owner(1, "x", "/usr/bin/x", None),
        );
        watcher
            .record(WEB, ts, &[event(WEB, ts, EventKind::Opened, &l)])
            .unwrap_or_else(|e| panic!("sample {ts}: {e}"));
        let done = child.try_wait().expect("the child's status").is_some();
        if done && ts >= SAMPLES {
            break;
        }
        // A watcher samples once a second; back to back, its writes starved the child's
        // (SQLite's busy handler polls; a writer that takes the lock again at once can hold it
        // past the child's 5 s timeout: one CI run in several). A pause as long as a write
        // still overlaps every write of the child with the watcher's.
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the sentry child still runs after 2 minutes"
        );
    }
    let watcher_last = now_ms();
    let out = child.wait_with_output().expect("the sentry child ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT: ").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "no result from the child: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let span: Vec<i64> = result
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("the sentry child failed: {result}"))
        .split(' ')
        .map(|t| t.parse().unwrap())
        .collect();
    let (sentry_first, sentry_last) = (span[0], span[1]);
    assert!(
        sentry_first <= watcher_last && watcher_first <= sentry_last,
        "the two writers overlapped: watcher {watcher_first}..{watcher_last}, \
         sentry {sentry_first}..{sentry_last}"
    );
    eprintln!(
        "{ts} samples and {} scan writes from two processes in {:?}",
        CHILD_SCANS * CHILD_ROUNDS,
        start.elapsed()
    );

    let events = watcher.events(&EventFilter::default()).unwrap();
    assert_eq!(events.len(), usize::try_from(ts).unwrap());
    let scans = watcher.scans(&ScanFilter::default()).unwrap();
    let want: Vec<ScanRecord> = (0..CHILD_SCANS)
        .map(|i| child_scan(i, CHILD_ROUNDS - 1))
        .collect();
    assert_eq!(scans, want, "one row per scan, each at its last state");
    let ok: String = raw(&path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}
