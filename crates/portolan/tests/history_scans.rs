//! `portolan history` with the port scans that `portolan sentry` records: scans written
//! into a SQLite store through the portolan-watch API, beside listener events, read back
//! through the binary as a user reads them (table, JSON, JSON Lines, CSV, filters), with a
//! hostile trait in a scan escaped wherever it reaches a terminal; and a store of the
//! schema before scans, read as it is.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::portolan;
use portolan_core::escape::is_dangerous;
use portolan_core::{Exposure, Protocol};
use portolan_watch::model::{Event, EventKind, Listener, Owner, ScanRecord};

/// 2026-11-22 08:25:00 UTC.
const BASE: i64 = 1_795_335_900_000;
const MIN: i64 = 60_000;

/// What a scanner could make the sentry quote as its tool's trait: a title-setting escape
/// sequence, markup, a line break and a right-to-left override.
const HOSTILE: &str = "window 1024\x1b]0;owned\x07 <script>alert(1)</script>\r\nfake\u{202e}";
/// The same, as a terminal must show it.
const HOSTILE_SHOWN: &str =
    r"window 1024\x1b]0;owned\x07 <script>alert(1)</script>\r\nfake\u{202e}";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!(
            "portolan-history-scans-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn event(host: &str, ts_ms: i64, kind: EventKind, port: u16, process: &str) -> Event {
    Event {
        ts_ms,
        host: host.into(),
        kind,
        listener: Listener {
            proto: Protocol::Tcp,
            address: "0.0.0.0".parse().unwrap(),
            port,
            exposure: Exposure::AllInterfaces,
            owner: Owner {
                pid: Some(500),
                process: Some(process.into()),
                exe: None,
                exe_deleted: false,
                user: Some("root".into()),
                uid: 0,
                unit: None,
                container: None,
            },
        },
        previous: None,
        note: None,
    }
}

fn scan(host: &str, key: &str, started_ms: i64, source: &str, ports: &[&str]) -> ScanRecord {
    ScanRecord {
        host: host.into(),
        key: key.into(),
        started_ms,
        detected_ms: started_ms + 500,
        last_ms: started_ms + 1000,
        ended_ms: None,
        sources: vec![source.parse().unwrap()],
        sources_total: 1,
        detector: "vertical".into(),
        kinds: vec!["connect".into()],
        tool: None,
        tool_because: None,
        ports: ports.iter().map(|&p| p.to_owned()).collect(),
        ports_total: u64::try_from(ports.len()).unwrap(),
        probes: 3,
        failed: 2,
        probes_to_detect: 3,
        blocked_until_ms: None,
    }
}

/// A store with, by time: sshd present on web-3 (08:25:00), a scan of db-2 (08:25:30), an
/// ended distributed nmap scan of web-3, blocked, with the hostile trait (08:26:00), a
/// listener opened on web-3 (08:27:00), an ongoing scan of web-3's 9999/udp (08:28:00).
fn store(dir: &Scratch) -> String {
    let db = dir.0.join("history.sqlite");
    let db = db.to_str().unwrap().to_owned();
    // The watcher's part: its own handle, with the host's claim.
    let mut watcher = portolan_watch::store::open(&db).expect("open the store");
    watcher.claim_host("web-3").unwrap();
    watcher
        .record(
            "web-3",
            BASE,
            &[event("web-3", BASE, EventKind::Present, 22, "sshd")],
        )
        .unwrap();
    watcher
        .record(
            "web-3",
            BASE + 2 * MIN,
            &[event(
                "web-3",
                BASE + 2 * MIN,
                EventKind::Opened,
                8080,
                "python3",
            )],
        )
        .unwrap();
    // The sentry's part: another handle, no claim, each scan recorded as it grows.
    let mut sentry = portolan_watch::store::open(&db).expect("open the store again");
    let nmap = ScanRecord {
        last_ms: BASE + MIN + MIN / 2,
        ended_ms: Some(BASE + MIN + 40_000),
        sources: vec![
            "203.0.113.9".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        ],
        sources_total: 40,
        detector: "distributed".into(),
        kinds: vec!["syn".into(), "fin".into()],
        tool: Some("nmap".into()),
        tool_because: Some(HOSTILE.into()),
        ports: [
            "22/tcp", "80/tcp", "443/tcp", "8080/tcp", "3306/tcp", "5432/tcp",
        ]
        .map(String::from)
        .to_vec(),
        ports_total: 1000,
        probes: 5000,
        failed: 4990,
        probes_to_detect: 12,
        blocked_until_ms: Some(BASE + 61 * MIN),
        ..scan(
            "web-3",
            "77-1795335800000-2",
            BASE + MIN,
            "203.0.113.9",
            &[],
        )
    };
    let early = ScanRecord {
        ended_ms: None,
        last_ms: BASE + MIN + 1000,
        probes: 10,
        ports: vec!["22/tcp".into()],
        ports_total: 1,
        ..nmap.clone()
    };
    sentry.record_scan(&early).unwrap();
    sentry.record_scan(&nmap).unwrap();
    sentry
        .record_scan(&scan(
            "db-2",
            "77-1795335800000-1",
            BASE + MIN / 2,
            "198.51.100.200",
            &["5432/tcp"],
        ))
        .unwrap();
    sentry
        .record_scan(&scan(
            "web-3",
            "77-1795335800000-3",
            BASE + 3 * MIN,
            "198.51.100.4",
            &["9999/udp"],
        ))
        .unwrap();
    db
}

/// The stdout lines after the header that name `what`.
fn rows_with<'a>(stdout: &'a str, what: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .skip(1)
        .filter(|l| l.contains(what))
        .collect()
}

/// Nothing a terminal would act on: no control character but line ends, no bidi override.
fn assert_inert(text: &str) {
    assert!(
        !text.chars().any(|c| c != '\n' && is_dangerous(c)),
        "raw control characters: {text:?}"
    );
}

#[test]
fn history_shows_scans_among_listener_events() {
    let dir = Scratch::new("table");
    let db = store(&dir);
    let r = portolan(&["history", "--db", &db]);
    r.expect_code(0);
    let out = &r.stdout;
    assert_inert(out);
    let header = out.lines().next().unwrap();
    for col in ["TIME (UTC)", "HOST", "EVENT", "ADDRESS", "CHANGE"] {
        assert!(header.contains(col), "{header}");
    }
    // One line each, in time order.
    let order: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(3).unwrap_or(""))
        .collect();
    assert_eq!(
        order,
        ["present", "scan", "scan", "opened", "scan"],
        "{out}"
    );
    let nmap = rows_with(out, "08:26:00");
    assert_eq!(nmap.len(), 1, "{out}");
    let line = nmap[0];
    for part in [
        "2026-11-22 08:26:00",
        "web-3",
        " scan ",
        "from 203.0.113.9 +39 more",
        "syn, fin; 1000 ports: 22/tcp 80/tcp 443/tcp 8080/tcp 3306/tcp +995 more",
        &format!("likely nmap ({HOSTILE_SHOWN})"),
        "detector distributed",
        "blocked until 2026-11-22 09:26:00",
        "ended 2026-11-22 08:26:40",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    assert!(!line.contains("ongoing"), "{line}");
    // The protocols of its ports, in the PROTO column.
    assert!(line.contains(" tcp "), "{line}");
    let ongoing = rows_with(out, "08:28:00");
    assert_eq!(ongoing.len(), 1, "{out}");
    for part in [
        " udp ",
        "from 198.51.100.4 ",
        "connect; 1 port: 9999/udp; detector vertical; ongoing",
    ] {
        assert!(ongoing[0].contains(part), "{part:?} not in {}", ongoing[0]);
    }
    assert!(!ongoing[0].contains('+'), "a lone source: {}", ongoing[0]);
    assert!(!ongoing[0].contains("likely"), "no tool: {}", ongoing[0]);
    let db2 = rows_with(out, "db-2");
    assert_eq!(db2.len(), 1, "{out}");
    assert!(db2[0].contains("from 198.51.100.200"), "{}", db2[0]);

    // In colour, the scan word is painted, and the trait is escaped all the same.
    let r = portolan(&["history", "--db", &db, "--color", "always"]);
    r.expect_code(0);
    assert!(r.stdout.contains("\x1b[1;31mscan\x1b[0m"), "{:?}", r.stdout);
    assert!(r.stdout.contains(HOSTILE_SHOWN), "{:?}", r.stdout);
    let mut plain = String::new();
    let mut rest = r.stdout.as_str();
    while let Some(i) = rest.find("\x1b[") {
        plain.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('m').expect("every escape sequence is a colour");
        assert!(
            after[..end]
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b';'),
            "{:?}",
            &after[..end]
        );
        rest = &after[end + 1..];
    }
    plain.push_str(rest);
    assert_inert(&plain);
}

#[test]
fn history_json_lists_scans_beside_events() {
    let dir = Scratch::new("json");
    let db = store(&dir);
    let r = portolan(&["history", "--db", &db, "--json"]);
    r.expect_code(0);
    let doc = r.json();
    assert_eq!(doc["events"].as_array().unwrap().len(), 2);
    let scans = doc["scans"].as_array().unwrap();
    let keys: Vec<&str> = scans.iter().map(|s| s["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "77-1795335800000-1",
            "77-1795335800000-2",
            "77-1795335800000-3"
        ],
        "oldest first"
    );
    let nmap = &scans[1];
    assert_eq!(nmap["kind"], "scan");
    assert_eq!(nmap["host"], "web-3");
    assert_eq!(nmap["started_ms"], BASE + MIN);
    assert_eq!(nmap["ended_ms"], BASE + MIN + 40_000);
    assert_eq!(
        nmap["sources"],
        serde_json::json!(["203.0.113.9", "2001:db8::7"])
    );
    assert_eq!(nmap["sources_total"], 40);
    assert_eq!(nmap["kinds"], serde_json::json!(["syn", "fin"]));
    assert_eq!(nmap["tool"], "nmap");
    // JSON escapes itself: the trait comes back exactly as recorded.
    assert_eq!(nmap["tool_because"], HOSTILE);
    assert_eq!(nmap["ports"].as_array().unwrap().len(), 6);
    assert_eq!(nmap["ports_total"], 1000);
    assert_eq!(nmap["probes"], 5000, "the last recording wins");
    assert_eq!(nmap["blocked_until_ms"], BASE + 61 * MIN);
    // An ongoing scan without a tool or block has no such fields at all.
    let ongoing = &scans[2];
    for absent in ["ended_ms", "tool", "tool_because", "blocked_until_ms"] {
        assert!(ongoing.get(absent).is_none(), "{absent}: {ongoing}");
    }
    // JSON escapes control characters itself (a bidi override stays, as in every string
    // of the JSON reports).
    assert!(
        !r.stdout.chars().any(|c| c != '\n' && c.is_control()),
        "{:?}",
        r.stdout
    );

    // JSON Lines: events and scans in one stream, by time; `kind` tells them apart.
    let r = portolan(&["history", "--db", &db, "--jsonl"]);
    r.expect_code(0);
    let lines = r.jsonl();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["present", "scan", "scan", "opened", "scan"]);
    assert_eq!(lines[2]["tool_because"], HOSTILE);

    // CSV: a row per scan among the events, escaped like every field.
    let r = portolan(&["history", "--db", &db, "--csv"]);
    r.expect_code(0);
    assert_inert(&r.stdout);
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("2026-11-22T08:26:00.000Z,web-3,scan,tcp,203.0.113.9,"))
        .unwrap_or_else(|| panic!("no scan row: {}", r.stdout));
    assert!(
        row.contains("likely nmap (window 1024\\x1b]0;owned"),
        "{row}"
    );
}

fn keys_of(r: &common::Run) -> Vec<String> {
    let doc = r.json();
    let mut out: Vec<String> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}:{}", e["kind"].as_str().unwrap(), e["listener"]["port"]))
        .collect();
    out.extend(doc["scans"].as_array().unwrap().iter().map(|s| {
        let key = s["key"].as_str().unwrap();
        format!("scan:{}", key.rsplit('-').next().unwrap())
    }));
    out
}

#[test]
fn history_filters_reach_scans() {
    let dir = Scratch::new("filters");
    let db = store(&dir);
    let run = |extra: &[&str]| {
        let mut args = vec!["history", "--db", db.as_str(), "--json"];
        args.extend_from_slice(extra);
        let r = portolan(&args);
        assert!(matches!(r.code(), 0 | 1), "{extra:?}: {}", r.stderr);
        keys_of(&r)
    };
    // A port: its events, and the scans that tried it (of any protocol).
    assert_eq!(run(&["22"]), ["present:22", "scan:2"]);
    assert_eq!(run(&["9999"]), ["scan:3"]);
    assert_eq!(run(&["5432"]), ["scan:1", "scan:2"]);
    // Only scans, or none.
    assert_eq!(run(&["--scans"]), ["scan:1", "scan:2", "scan:3"]);
    assert_eq!(run(&["--no-scans"]), ["present:22", "opened:8080"]);
    // Filters that only listeners have leave scans out.
    assert_eq!(run(&["--kind", "opened"]), ["opened:8080"]);
    assert_eq!(run(&["--process", "sshd"]), ["present:22"]);
    assert_eq!(run(&["--proto", "tcp"]), ["present:22", "opened:8080"]);
    // A host; a time range (a scan counts when it overlaps the range).
    assert_eq!(run(&["--host", "db-2"]), ["scan:1"]);
    assert_eq!(
        run(&["--since", "2026-11-22T08:26", "--until", "2026-11-22T08:27"]),
        ["opened:8080", "scan:2"]
    );
    // The newest N of events and scans together.
    assert_eq!(run(&["--limit", "2"]), ["opened:8080", "scan:3"]);
    let r = portolan(&["history", "--db", &db, "--limit", "2"]);
    r.expect_code(0);
    assert!(
        r.stderr
            .contains("showing the newest 2 events and scans; --limit N shows more"),
        "{}",
        r.stderr
    );

    // Only scans, as a table of their own.
    let r = portolan(&["history", "--db", &db, "--scans"]);
    r.expect_code(0);
    let header = r.stdout.lines().next().unwrap();
    assert!(
        header.contains("SOURCE") && header.contains("SCAN") && !header.contains("OWNER"),
        "{header}"
    );
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);

    // Nothing found: exit 1, and the note says what was looked for.
    let r = portolan(&["history", "--db", &db, "--scans", "--host", "nobody"]);
    r.expect_code(1);
    assert!(r.stderr.contains("no scans in "), "{}", r.stderr);
    let r = portolan(&["history", "--db", &db, "--host", "nobody"]);
    r.expect_code(1);
    assert!(r.stderr.contains("no events or scans in "), "{}", r.stderr);

    // --scans with a listener-only filter, or with --no-scans, is refused.
    for extra in [
        &["--kind", "opened"][..],
        &["--process", "sshd"],
        &["--unit", "ssh.service"],
        &["--proto", "tcp"],
        &["--no-scans"],
    ] {
        let mut args = vec!["history", "--db", db.as_str(), "--scans"];
        args.extend_from_slice(extra);
        let r = portolan(&args);
        r.expect_code(2);
        assert!(
            r.stderr.contains("cannot be used with"),
            "{extra:?}: {}",
            r.stderr
        );
    }
}

/// Runs a SQL script on a SQLite file (with python3's sqlite3, another program than
/// portolan), then prints what `query` returns.
fn sqlite(db: &str, script: &str, query: &str) -> String {
    let out = Command::new(common::python())
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); \
             print(c.execute(sys.argv[3]).fetchone()); c.commit(); c.close()",
            db,
            script,
            query,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The store's schema version and how many scans tables it has.
const VERSION_AND_SCANS: &str = "SELECT (SELECT MAX(version) FROM schema_version), \
     (SELECT COUNT(*) FROM sqlite_master WHERE name = 'scans')";

/// A history that a `portolan watch` from before scans keeps (schema 1, never upgraded:
/// reading must not need a writer): `history` shows its events, has no scans (an empty
/// `scans` list in JSON), `diff` compares its states, and both leave it at schema 1.
#[test]
fn history_reads_a_store_of_the_schema_before_scans() {
    let dir = Scratch::new("schema1");
    let db = dir.0.join("history.sqlite");
    let db = db.to_str().unwrap().to_owned();
    {
        let mut watcher = portolan_watch::store::open(&db).expect("open the store");
        for (ts, kind, port, process) in [
            (BASE, EventKind::Present, 22, "sshd"),
            (BASE + 2 * MIN, EventKind::Opened, 8080, "python3"),
        ] {
            watcher
                .record("web-3", ts, &[event("web-3", ts, kind, port, process)])
                .unwrap();
        }
    }
    // What schema 1 was: no scans table, one version row.
    let left = sqlite(
        &db,
        "DROP TABLE scans; DELETE FROM schema_version WHERE version > 1;",
        VERSION_AND_SCANS,
    );
    assert_eq!(left, "(1, 0)");

    let r = portolan(&["history", "--db", &db]);
    r.expect_code(0);
    let rows: Vec<Vec<&str>> = r
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", r.stdout);
    // One host: no HOST column.
    assert_eq!(&rows[0][..4], ["2026-11-22", "08:25:00", "present", "tcp"]);
    assert_eq!(&rows[1][..4], ["2026-11-22", "08:27:00", "opened", "tcp"]);
    assert!(rows[0].contains(&"sshd[500]"), "{}", r.stdout);
    assert!(rows[1].contains(&"python3[500]"), "{}", r.stdout);
    assert!(!r.stderr.contains("schema"), "{}", r.stderr);

    let r = portolan(&["history", "--db", &db, "--json"]);
    r.expect_code(0);
    let doc = r.json();
    let events: Vec<(String, u64)> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["listener"]["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [("present".to_owned(), 22), ("opened".to_owned(), 8080)]
    );
    assert_eq!(doc["scans"], serde_json::json!([]));

    // Only scans: none, which is "nothing found", not an error.
    let r = portolan(&["history", "--db", &db, "--scans"]);
    r.expect_code(1);
    assert!(r.stderr.contains("no scans in "), "{}", r.stderr);

    // `diff` reads it too: web-3 now (its last state) versus 08:26.
    let r = portolan(&[
        "diff",
        "--db",
        &db,
        "--host",
        "web-3",
        "--since",
        "2026-11-22T08:26",
        "--json",
    ]);
    r.expect_code(0);
    let changes = r.json()["changes"].clone();
    assert_eq!(changes.as_array().map(Vec::len), Some(1), "{changes}");
    assert_eq!(changes[0]["change"], "added");
    assert_eq!(changes[0]["port"], 8080);

    assert_eq!(
        sqlite(&db, "", VERSION_AND_SCANS),
        "(1, 0)",
        "still schema 1"
    );
}
