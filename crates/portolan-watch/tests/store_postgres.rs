//! The PostgreSQL history store against a real server that the test starts on 127.0.0.1
//! (a throwaway cluster in a temporary directory). Without the server binaries the tests
//! skip with a reason, except under CI=true, where they fail.
#![allow(clippy::print_stderr)]

mod common;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::{
    bad_rows, behaviour, event, free_port, listener, owner, record_story, scan_bad_rows,
    scan_behaviour, scan_story, story, PgServer, WEB,
};
use portolan_core::Protocol;
use portolan_watch::model::EventKind;
use portolan_watch::store::{self, EventFilter, ScanFilter, StoreError, SCHEMA_VERSION};

fn case(name: &str, f: impl FnOnce()) {
    let start = Instant::now();
    eprintln!("postgres case: {name} ...");
    f();
    eprintln!("postgres case: {name} ok ({:?})", start.elapsed());
}

fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("a direct client")
}

/// Ends every portolan session on database `db` (as an administrator or a server restart
/// would), through `admin`; returns how many it ended.
fn end_sessions(admin: &mut postgres::Client, db: &str) -> i64 {
    admin
        .query_one(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'portolan') t",
            &[&db],
        )
        .unwrap()
        .get(0)
}

/// (table, column, integer-or-text, not null) for the store's tables in PostgreSQL.
fn pg_columns(url: &str) -> Vec<(String, String, &'static str, bool)> {
    client(url)
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns WHERE table_schema = 'public' \
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let ty: String = r.get(2);
            let class = match ty.as_str() {
                "bigint" => "integer",
                "text" => "text",
                other => panic!("unexpected type {other}"),
            };
            (r.get(0), r.get(1), class, r.get::<_, String>(3) == "NO")
        })
        .collect()
}

/// The same for a SQLite file.
fn sqlite_columns(path: &std::path::Path) -> Vec<(String, String, &'static str, bool)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut out = Vec::new();
    for table in ["events", "hosts", "listeners", "scans", "schema_version"] {
        let mut st = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .unwrap();
        let rows = st
            .query_map([], |r| {
                let ty: String = r.get(2)?;
                let pk: i64 = r.get(5)?;
                let notnull: i64 = r.get(3)?;
                Ok((r.get::<_, String>(1)?, ty, notnull == 1 || pk > 0))
            })
            .unwrap();
        for row in rows {
            let (col, ty, notnull) = row.unwrap();
            let class = match ty.as_str() {
                "INTEGER" => "integer",
                "TEXT" => "text",
                other => panic!("unexpected type {other}"),
            };
            out.push((table.to_owned(), col, class, notnull));
        }
    }
    out
}

#[test]
fn postgres_backend() {
    let Some(server) = PgServer::start() else {
        return;
    };

    case("the behaviour every store has", || {
        let url = server.fresh_db("behaviour");
        let mut s = store::open(&url).expect("open");
        assert_eq!(s.describe(), url);
        behaviour(s.as_mut());
    });

    case("rows another program wrote badly", || {
        let url = server.fresh_db("badrows");
        let mut s = store::open(&url).expect("open");
        let mut raw = client(&url);
        bad_rows(s.as_mut(), &mut |sql| raw.batch_execute(sql).expect(sql));
    });

    case("the same schema as SQLite", || {
        let url = server.fresh_db("schema");
        drop(store::open(&url).expect("open"));
        let dir = common::TempDir::new("schema");
        let path = dir.join("history.sqlite");
        drop(store::open(path.to_str().unwrap()).expect("open sqlite"));
        let pg = pg_columns(&url);
        assert!(pg.len() > 40, "{pg:?}");
        assert_eq!(pg, sqlite_columns(&path));
        let indexes: i64 = client(&url)
            .query_one(
                "SELECT COUNT(*) FROM pg_indexes WHERE indexname IN \
                 ('events_host_ts', 'events_port', 'events_ts', 'scans_host_started')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(indexes, 4);
    });

    case("scans: round trip, upsert, refusals, filters", || {
        let url = server.fresh_db("scans");
        let mut s = store::open(&url).expect("open");
        scan_behaviour(s.as_mut());
        // A reader reads them too.
        let mut reader = store::open_read_only(&url).expect("open for reading");
        assert_eq!(
            reader.scans(&ScanFilter::default()).unwrap(),
            s.scans(&ScanFilter::default()).unwrap()
        );
    });

    case(
        "a store of schema 1 (before scans) is read as it is",
        || {
            let url = server.fresh_db("schema1");
            let story = story();
            let want = {
                let mut s = store::open(&url).expect("open");
                record_story(s.as_mut(), &story);
                s.events(&EventFilter::default()).unwrap()
            };
            let mut raw = client(&url);
            raw.batch_execute("DROP TABLE scans; DELETE FROM schema_version WHERE version > 1")
                .unwrap();
            let mut reader = store::open_read_only(&url).expect("a reader reads schema 1");
            assert_eq!(reader.events(&EventFilter::default()).unwrap(), want);
            assert_eq!(reader.hosts().unwrap().len(), 2);
            let (ts, web) = story.web_states.last().unwrap();
            assert_eq!(&reader.state_at(WEB, *ts).unwrap().listeners, web);
            assert_eq!(reader.scans(&ScanFilter::default()).unwrap(), vec![]);
            let e = reader.record_scan(&scan_story()[0]).unwrap_err();
            assert!(
                e.to_string()
                    .ends_with("its schema (version 1) has no scans"),
                "{e}"
            );
            drop(reader);
            let left: (i64, i64) = {
                let row = raw
                    .query_one(
                        "SELECT (SELECT MAX(version) FROM schema_version), \
                         (SELECT COUNT(*) FROM pg_tables WHERE tablename = 'scans')",
                        &[],
                    )
                    .unwrap();
                (row.get(0), row.get(1))
            };
            assert_eq!(left, (1, 0), "the reader left it at schema 1");
            // Every table of schema 1 is still checked.
            raw.batch_execute("ALTER TABLE events DROP COLUMN note")
                .unwrap();
            let e = store::open_read_only(&url).err().expect("refused");
            assert!(matches!(e, StoreError::NotHistory { .. }), "{e}");
            assert!(
                e.to_string()
                    .contains("its table events lacks what portolan reads"),
                "{e}"
            );
        },
    );

    case("scans another program wrote badly", || {
        let url = server.fresh_db("scanrows");
        let mut s = store::open(&url).expect("open");
        let mut raw = client(&url);
        scan_bad_rows(s.as_mut(), &mut |sql| raw.batch_execute(sql).expect(sql));
    });

    case(
        "a scan is recorded beside the host's recorder, without its claim",
        || {
            let url = server.fresh_db("scanclaim");
            let mut watcher = store::open(&url).expect("open");
            watcher.claim_host(WEB).expect("claim");
            let mut sentry = store::open(&url).expect("open");
            let [a, ..] = scan_story();
            sentry.record_scan(&a).expect("recorded without the claim");
            let l = listener(
                Protocol::Tcp,
                "0.0.0.0",
                22,
                owner(1, "sshd", "/usr/sbin/sshd", None),
            );
            watcher
                .record(WEB, 5, &[event(WEB, 5, EventKind::Opened, &l)])
                .expect("the recorder goes on");
            assert_eq!(watcher.scans(&ScanFilter::default()).unwrap(), vec![a]);
            // The sentry's session holds no claim: the host is still the watcher's alone.
            assert!(matches!(
                sentry.claim_host(WEB).unwrap_err(),
                StoreError::Busy { .. }
            ));
        },
    );

    case(
        "one recorder per host, again after the first one's session ends",
        || {
            let url = server.fresh_db("claims");
            let mut first = store::open(&url).expect("open");
            first.claim_host("web-3").expect("first claim");
            first.claim_host("web-3").expect("claiming twice is fine");
            let mut second = store::open(&url).expect("open");
            let e = second.claim_host("web-3").unwrap_err();
            assert!(matches!(e, StoreError::Busy { .. }), "{e}");
            assert!(
                e.to_string().contains("already recording host web-3"),
                "{e}"
            );
            second.claim_host("web-4").expect("another host is free");
            drop(first);
            let mut third = store::open(&url).expect("open");
            third
                .claim_host("web-3")
                .expect("free once the first session ended");
        },
    );

    case("two hosts writing at once", || {
        let url = server.fresh_db("twohosts");
        drop(store::open(&url).expect("migrate first"));
        std::thread::scope(|scope| {
            for host in ["alpha", "beta"] {
                let url = url.clone();
                scope.spawn(move || {
                    let mut s = store::open(&url).expect("open");
                    for i in 1..=40u16 {
                        let l = listener(
                            Protocol::Tcp,
                            "127.0.0.1",
                            9000 + i % 7,
                            owner(u32::from(i), host, "/usr/bin/x", None),
                        );
                        let kind = if i % 3 == 0 {
                            EventKind::Closed
                        } else {
                            EventKind::Opened
                        };
                        let ts = i64::from(i) * 10;
                        s.record(host, ts, &[event(host, ts, kind, &l)])
                            .expect("record");
                    }
                });
            }
        });
        let mut s = store::open(&url).expect("open");
        for host in ["alpha", "beta"] {
            let f = EventFilter {
                host: Some(host.into()),
                ..EventFilter::default()
            };
            let events = s.events(&f).unwrap();
            assert_eq!(events.len(), 40);
            assert!(events
                .iter()
                .all(|e| e.host == host && e.listener.owner.process.as_deref() == Some(host)));
            let now = s.last_state(host).unwrap().unwrap();
            assert_eq!(now.last_sample_ms, 400);
            assert_eq!(now.listeners, s.state_at(host, i64::MAX).unwrap().listeners);
        }
        let hosts = s.hosts().unwrap();
        assert_eq!(
            hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(),
            ["alpha", "beta"]
        );
        assert_eq!(s.events(&EventFilter::default()).unwrap().len(), 80);
    });

    case("agents migrating at the same moment", || {
        for round in 0..3 {
            let url = server.fresh_db(&format!("race{round}"));
            let barrier = Barrier::new(4);
            let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        let url = url.clone();
                        let barrier = &barrier;
                        scope.spawn(move || {
                            barrier.wait();
                            store::open(&url).map(drop).map_err(|e| e.to_string())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for r in &results {
                assert!(r.is_ok(), "round {round}: {r:?}");
            }
            let n: i64 = client(&url)
                .query_one("SELECT COUNT(*) FROM schema_version", &[])
                .unwrap()
                .get(0);
            assert_eq!(n, SCHEMA_VERSION, "each migration applied once");
        }
    });

    case("a newer schema is refused", || {
        let url = server.fresh_db("newer");
        drop(store::open(&url).expect("open"));
        client(&url)
            .batch_execute("INSERT INTO schema_version (version, applied_ms) VALUES (7, 0)")
            .unwrap();
        let e = store::open(&url).err().expect("refused");
        assert!(
            matches!(e, StoreError::NewerSchema { found: 7, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(&format!(
                "PostgreSQL at {url} was written by a newer portolan (schema 7, this one knows {SCHEMA_VERSION})"
            )),
            "{e}"
        );
    });

    case("a lost connection is opened again", || {
        let url = server.fresh_db("reconnect");
        let mut s = store::open(&url).expect("open");
        let l = listener(
            Protocol::Tcp,
            "127.0.0.1",
            8443,
            owner(1, "x", "/usr/bin/x", None),
        );
        s.record("h", 1, &[event("h", 1, EventKind::Opened, &l)])
            .unwrap();
        let ended = end_sessions(&mut client(&server.url("postgres")), "reconnect");
        assert_eq!(ended, 1);
        s.record("h", 2, &[event("h", 2, EventKind::Closed, &l)])
            .expect("recorded after connecting again");
        assert_eq!(s.events(&EventFilter::default()).unwrap().len(), 2);
        assert_eq!(s.last_state("h").unwrap().unwrap().listeners, vec![]);
    });

    case(
        "sessions ended between writes, 20 times: nothing lost, nothing twice",
        || {
            let url = server.fresh_db("terminated");
            let mut s = store::open(&url).expect("open");
            s.claim_host("h").expect("claim");
            let mut admin = client(&server.url("postgres"));
            let mut recorded = 0usize;
            for round in 0..20i64 {
                let l = listener(
                    Protocol::Tcp,
                    "127.0.0.1",
                    9000 + u16::try_from(round).unwrap(),
                    owner(1, "x", "/usr/bin/x", None),
                );
                let ts = round * 10 + 1;
                s.record("h", ts, &[event("h", ts, EventKind::Opened, &l)])
                    .unwrap_or_else(|e| panic!("round {round}, before the end: {e}"));
                recorded += 1;
                let ended = end_sessions(&mut admin, "terminated");
                assert_eq!(ended, 1, "round {round}");
                // The next write comes at once, a little later or after the goodbye has
                // surely arrived: the server's 57P01 may reach the client before or after
                // the client sees the socket close.
                std::thread::sleep(Duration::from_millis(
                    [0, 2, 20][usize::try_from(round % 3).unwrap()],
                ));
                let ts = round * 10 + 2;
                s.record("h", ts, &[event("h", ts, EventKind::Closed, &l)])
                    .unwrap_or_else(|e| panic!("round {round}, after the end: {e}"));
                recorded += 1;
            }
            let events = s.events(&EventFilter::default()).unwrap();
            assert_eq!(events.len(), recorded, "{events:?}");
            let stamps: Vec<i64> = events.iter().map(|e| e.ts_ms).collect();
            let want: Vec<i64> = (0..20).flat_map(|r| [r * 10 + 1, r * 10 + 2]).collect();
            assert_eq!(stamps, want);
            assert_eq!(s.last_state("h").unwrap().unwrap().listeners, vec![]);
            // The claim was taken again on each new session.
            let mut other = store::open(&url).expect("open");
            assert!(matches!(
                other.claim_host("h").unwrap_err(),
                StoreError::Busy { .. }
            ));
        },
    );

    case("a reader's statement is bounded in time", || {
        let url = server.fresh_db("bounded");
        drop(store::open(&url).expect("open"));
        let mut reader = store::open_read_only(&url).expect("open for reading");
        let mut admin = client(&url);
        let mut tx = admin.transaction().unwrap();
        tx.batch_execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            .unwrap();
        let (done, waited) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let start = Instant::now();
            let got = reader.events(&EventFilter::default()).map(|e| e.len());
            let _ = done.send((got, start.elapsed()));
        });
        let (got, took) = waited
            .recv_timeout(Duration::from_secs(30))
            .expect("the reader still waits for the lock after 30 s");
        tx.rollback().unwrap();
        let e = got
            .expect_err("refused while the table is locked")
            .to_string();
        assert!(e.contains("statement timeout"), "{e}");
        assert!(took >= Duration::from_secs(5), "{took:?}");
    });

    case("passwords never show", || {
        let url = server.fresh_db("secret");
        let with_pw = url.replace("postgres@", "postgres:s3cret-pw@");
        let s = store::open(&with_pw).expect("trust ignores the password");
        assert_eq!(s.describe(), url.replace("postgres@", "postgres:***@"));
        let missing = with_pw.replace("/secret", "/nosuchdb");
        let e = store::open(&missing).err().expect("no such database");
        let msg = e.to_string();
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(
            msg.starts_with(&format!(
                "PostgreSQL at postgres://postgres:***@127.0.0.1:{}/nosuchdb: ",
                server.port
            )),
            "{msg}"
        );
        assert!(
            msg.contains("database \"nosuchdb\" does not exist"),
            "{msg}"
        );
    });
}

#[test]
fn connection_refused_is_clear_and_fast() {
    let port = free_port();
    let url = format!("postgres://agent:hunter2@127.0.0.1:{port}/history");
    let start = Instant::now();
    let e = store::open(&url).err().expect("nobody listens there");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(e, StoreError::Connect { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("PostgreSQL at postgres://agent:***@127.0.0.1:{port}/history: connection refused")
    );
    assert!(!format!("{e:?}").contains("hunter2"));
}

#[test]
fn bad_urls_are_clear() {
    for (url, expected) in [
        (
            "postgres://u:pw-one@127.0.0.1:notaport/db",
            "invalid PostgreSQL URL postgres://u:***@127.0.0.1:notaport/db: ",
        ),
        (
            "postgresql://u:pw-two@[::1/db",
            "invalid PostgreSQL URL postgresql://u:***@[::1/db: ",
        ),
        (
            "postgres://127.0.0.1/db?password=pw-three&frobnicate=1",
            "invalid PostgreSQL URL postgres://127.0.0.1/db?password=***&frobnicate=1: ",
        ),
        (
            "postgres://127.0.0.1/db?sslmode=sometimes\x1b[2J",
            "invalid PostgreSQL URL postgres://127.0.0.1/db?sslmode=sometimes\\x1b[2J: ",
        ),
    ] {
        let e = store::open(url).err().expect("refused");
        let msg = e.to_string();
        assert!(matches!(e, StoreError::BadUrl { .. }), "{url}: {e:?}");
        assert!(msg.starts_with(expected), "{url}: {msg}");
        assert!(!msg.contains("pw-"), "{msg}");
        assert!(!msg.contains('\x1b'), "{msg}");
    }
}
