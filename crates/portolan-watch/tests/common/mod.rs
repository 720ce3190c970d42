//! Shared by the store tests: temporary directories, events to record, the behaviour every
//! backend must have (one body run over `Box<dyn Store>` for SQLite and PostgreSQL), and a
//! throwaway PostgreSQL server on loopback.
#![allow(dead_code, clippy::print_stderr, clippy::missing_panics_doc)]

use std::net::{IpAddr, TcpListener};

use portolan_core::{Exposure, Protocol};
use portolan_watch::model::{Event, EventKind, Listener, Owner, Previous, ScanRecord};
use portolan_watch::store::{EventFilter, HostInfo, ScanFilter, StateAt, Store, StoreError};

// ------------------------------------------------------------------------------------------
// Temporary directories.

pub use portolan_testbed::pg::TempDir;

/// The effective uid.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

// ------------------------------------------------------------------------------------------
// Events.

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

pub fn owner(pid: u32, process: &str, exe: &str, unit: Option<&str>) -> Owner {
    Owner {
        pid: Some(pid),
        process: Some(process.into()),
        exe: Some(exe.into()),
        exe_deleted: false,
        user: Some("root".into()),
        uid: 0,
        unit: unit.map(Into::into),
        container: None,
    }
}

pub fn listener(proto: Protocol, address: &str, port: u16, owner: Owner) -> Listener {
    let address = ip(address);
    Listener {
        proto,
        address,
        port,
        exposure: Exposure::of(address),
        owner,
    }
}

pub fn event(host: &str, ts_ms: i64, kind: EventKind, listener: &Listener) -> Event {
    Event {
        ts_ms,
        host: host.into(),
        kind,
        listener: listener.clone(),
        previous: None,
        note: None,
    }
}

/// An event with what the listener was before.
pub fn change(host: &str, ts_ms: i64, kind: EventKind, now: &Listener, before: &Listener) -> Event {
    Event {
        previous: Some(Previous {
            address: before.address,
            exposure: before.exposure,
            owner: before.owner.clone(),
        }),
        ..event(host, ts_ms, kind, now)
    }
}

/// One host's story, sample by sample (time, events), with what its listeners are after
/// each step, plus a second host. Every event kind appears, a listener moves from loopback
/// to all interfaces, and a closed key opens again.
pub struct Story {
    pub samples: Vec<(&'static str, i64, Vec<Event>)>,
    /// (time, listeners of `web-1` at that time, sorted by key)
    pub web_states: Vec<(i64, Vec<Listener>)>,
}

pub const WEB: &str = "web-1";
pub const DB: &str = "db-2";

/// A process name a hostile program could choose: quotes, SQL, an escape sequence, a
/// right-to-left override and non-ASCII. Stored exactly as given.
pub const HOSTILE: &str = "we'ird\"; DROP TABLE events; --\x1b[31m\u{202e}名";

pub fn story() -> Story {
    use EventKind::{Closed, ExposureChanged, Opened, OwnerChanged, Present, Restarted};
    let pg = listener(
        Protocol::Tcp,
        "127.0.0.1",
        5432,
        owner(
            700,
            "postgres",
            "/usr/lib/postgresql/15/bin/postgres",
            Some("postgresql@15-main.service"),
        ),
    );
    let ssh = listener(
        Protocol::Tcp,
        "0.0.0.0",
        22,
        owner(500, "sshd", "/usr/sbin/sshd", Some("ssh.service")),
    );
    let dns = listener(
        Protocol::Udp,
        "::",
        53,
        owner(
            300,
            "systemd-resolve",
            "/usr/lib/systemd/systemd-resolved",
            Some("systemd-resolved.service"),
        ),
    );
    let mut app = listener(
        Protocol::Tcp,
        "127.0.0.1",
        8080,
        Owner {
            pid: Some(4242),
            process: Some("python3".into()),
            exe: Some("/usr/bin/python3.11".into()),
            exe_deleted: false,
            user: Some("alice".into()),
            uid: 1000,
            unit: None,
            container: None,
        },
    );
    app.owner.user = Some("alice".into());
    let app_all = listener(Protocol::Tcp, "0.0.0.0", 8080, app.owner.clone());
    let ssh2 = listener(
        Protocol::Tcp,
        "0.0.0.0",
        22,
        owner(501, "sshd", "/usr/sbin/sshd", Some("ssh.service")),
    );
    let dns2 = listener(
        Protocol::Udp,
        "::",
        53,
        owner(900, "dnsmasq", "/usr/sbin/dnsmasq", Some("dnsmasq.service")),
    );
    let pg2 = listener(
        Protocol::Tcp,
        "127.0.0.1",
        5432,
        owner(
            710,
            "postgres",
            "/usr/lib/postgresql/15/bin/postgres",
            Some("postgresql@15-main.service"),
        ),
    );
    // An owner with nothing readable but its uid, and a hostile name in a container.
    let weird = listener(
        Protocol::Udp,
        "::1",
        6379,
        Owner {
            pid: None,
            process: Some(HOSTILE.into()),
            exe: None,
            exe_deleted: false,
            user: None,
            uid: 4_000_000_000,
            unit: None,
            container: Some("docker:0123456789ab".into()),
        },
    );
    let redis = listener(
        Protocol::Tcp,
        "10.0.0.5",
        6379,
        owner(80, "redis-server", "/usr/bin/redis-server", None),
    );

    let mut opened_note = event(WEB, 2000, Opened, &app);
    opened_note.note = Some(format!("note with {HOSTILE}"));
    let samples = vec![
        (
            WEB,
            1000,
            vec![
                event(WEB, 1000, Present, &pg),
                event(WEB, 1000, Present, &ssh),
                event(WEB, 1000, Present, &dns),
            ],
        ),
        (DB, 1500, vec![event(DB, 1500, Present, &redis)]),
        (WEB, 2000, vec![opened_note]),
        (
            WEB,
            3000,
            vec![
                change(WEB, 3000, ExposureChanged, &app_all, &app),
                change(WEB, 3000, Restarted, &ssh2, &ssh),
            ],
        ),
        (
            WEB,
            4000,
            vec![
                event(WEB, 4000, Closed, &pg),
                change(WEB, 4000, OwnerChanged, &dns2, &dns),
                event(WEB, 4000, Opened, &weird),
            ],
        ),
        (DB, 4500, vec![]),
        (WEB, 5000, vec![event(WEB, 5000, Opened, &pg2)]),
        (WEB, 6000, vec![]),
        (
            WEB,
            7000,
            vec![
                event(WEB, 7000, Closed, &app_all),
                event(WEB, 7000, Closed, &weird),
            ],
        ),
    ];
    let sorted = |mut v: Vec<Listener>| {
        v.sort_by_key(Listener::key);
        v
    };
    let web_states = vec![
        (999, vec![]),
        (1000, sorted(vec![pg.clone(), ssh.clone(), dns.clone()])),
        (
            2000,
            sorted(vec![pg.clone(), ssh.clone(), dns.clone(), app.clone()]),
        ),
        (
            2999,
            sorted(vec![pg.clone(), ssh.clone(), dns.clone(), app.clone()]),
        ),
        (
            3000,
            sorted(vec![pg.clone(), ssh2.clone(), dns.clone(), app_all.clone()]),
        ),
        (
            4000,
            sorted(vec![
                ssh2.clone(),
                dns2.clone(),
                app_all.clone(),
                weird.clone(),
            ]),
        ),
        (
            5000,
            sorted(vec![
                pg2.clone(),
                ssh2.clone(),
                dns2.clone(),
                app_all.clone(),
                weird.clone(),
            ]),
        ),
        (7000, sorted(vec![pg2.clone(), ssh2.clone(), dns2.clone()])),
        (i64::MAX, sorted(vec![pg2, ssh2, dns2])),
    ];
    Story {
        samples,
        web_states,
    }
}

pub fn record_story(store: &mut dyn Store, story: &Story) {
    for (host, ts, events) in &story.samples {
        store
            .record(host, *ts, events)
            .unwrap_or_else(|e| panic!("record {host} at {ts}: {e}"));
    }
}

fn all_events(story: &Story) -> Vec<Event> {
    let mut all: Vec<Event> = story
        .samples
        .iter()
        .flat_map(|(_, _, e)| e.clone())
        .collect();
    all.sort_by_key(|e| e.ts_ms); // stable: recording order within a time
    all
}

fn kinds_of(events: &[Event]) -> Vec<(i64, EventKind, u16)> {
    events
        .iter()
        .map(|e| (e.ts_ms, e.kind, e.listener.port))
        .collect()
}

// ------------------------------------------------------------------------------------------
// The behaviour every backend must have.

/// Records the story into an empty store and checks everything the API promises.
pub fn behaviour(store: &mut dyn Store) {
    let story = story();

    // Nothing yet.
    assert_eq!(store.hosts().unwrap(), vec![]);
    assert_eq!(store.last_state(WEB).unwrap(), None);
    assert_eq!(
        store.state_at(WEB, 5000).unwrap(),
        StateAt {
            listeners: vec![],
            history_starts_ms: None
        }
    );
    assert_eq!(store.events(&EventFilter::default()).unwrap(), vec![]);

    record_story(store, &story);

    // Round trip: every kind, every field, exactly as given.
    let all = all_events(&story);
    let back = store.events(&EventFilter::default()).unwrap();
    assert_eq!(back, all);
    for kind in EventKind::ALL {
        assert!(back.iter().any(|e| e.kind == kind), "{kind} round trips");
    }
    assert!(back
        .iter()
        .any(|e| e.listener.owner.process.as_deref() == Some(HOSTILE)));

    // Replay at several times.
    for (ts, expected) in &story.web_states {
        let at = store.state_at(WEB, *ts).unwrap();
        assert_eq!(&at.listeners, expected, "{WEB} at {ts}");
        assert_eq!(at.history_starts_ms, Some(1000), "{WEB} at {ts}");
    }
    let db_at = store.state_at(DB, 1499).unwrap();
    assert_eq!(db_at.listeners, vec![]);
    assert_eq!(db_at.history_starts_ms, Some(1500));
    assert_eq!(store.state_at(DB, 9999).unwrap().listeners.len(), 1);
    assert_eq!(
        store.state_at("nobody", 9999).unwrap(),
        StateAt {
            listeners: vec![],
            history_starts_ms: None
        }
    );

    // The current table is the replay of everything.
    let last = store.last_state(WEB).unwrap().expect("web-1 recorded");
    assert_eq!(last.last_sample_ms, 7000);
    assert_eq!(
        last.listeners,
        store.state_at(WEB, i64::MAX).unwrap().listeners
    );
    let db = store.last_state(DB).unwrap().expect("db-2 recorded");
    assert_eq!(db.last_sample_ms, 4500, "an empty sample still counts");
    assert_eq!(db.listeners.len(), 1);

    assert_eq!(
        store.hosts().unwrap(),
        vec![
            HostInfo {
                host: DB.into(),
                first_sample_ms: 1500,
                last_sample_ms: 4500,
                listeners: 1
            },
            HostInfo {
                host: WEB.into(),
                first_sample_ms: 1000,
                last_sample_ms: 7000,
                listeners: 3
            },
        ]
    );

    filters(store);

    // A sample whose events belong to another host is refused, and nothing is written.
    let stray = event(DB, 8000, EventKind::Opened, &story.samples[0].2[0].listener);
    let e = store.record(WEB, 8000, &[stray]).unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
    assert_eq!(store.last_state(WEB).unwrap().unwrap().last_sample_ms, 7000);
    assert_eq!(
        store.events(&EventFilter::default()).unwrap().len(),
        all.len()
    );

    // The same sample again, as a writer sends it after its COMMIT failed (it cannot know
    // whether the sample was recorded): a no-op, not a duplicate.
    let host = "retried-3";
    let only = EventFilter {
        host: Some(host.into()),
        ..EventFilter::default()
    };
    let l = &story.samples[0].2[0].listener;
    let sample = [event(host, 9000, EventKind::Opened, l)];
    store.record(host, 9000, &sample).unwrap();
    store.record(host, 9000, &sample).unwrap();
    assert_eq!(store.events(&only).unwrap().len(), 1);
    // The next sample, of the same listener, is recorded as usual.
    let next = [event(host, 9001, EventKind::Closed, l)];
    store.record(host, 9001, &next).unwrap();
    assert_eq!(store.events(&only).unwrap().len(), 2);
    assert_eq!(store.last_state(host).unwrap().unwrap().listeners, vec![]);
}

fn count(store: &mut dyn Store, f: &EventFilter) -> Vec<(i64, EventKind, u16)> {
    kinds_of(&store.events(f).unwrap())
}

fn filters(store: &mut dyn Store) {
    use EventKind::{Closed, ExposureChanged, Opened, OwnerChanged, Present, Restarted};
    let app = vec![
        (2000, Opened, 8080),
        (3000, ExposureChanged, 8080),
        (7000, Closed, 8080),
    ];
    let by_port = EventFilter {
        port: Some(8080),
        ..EventFilter::default()
    };
    assert_eq!(count(store, &by_port), app);
    for name in ["python3", "python3.11", "/usr/bin/python3.11"] {
        let f = EventFilter {
            process: Some(name.into()),
            ..EventFilter::default()
        };
        assert_eq!(count(store, &f), app, "process {name}");
    }
    for name in ["python", "bin/python3.11", "PYTHON3", "3.11", ""] {
        let f = EventFilter {
            process: Some(name.into()),
            ..EventFilter::default()
        };
        assert_eq!(
            count(store, &f),
            vec![],
            "process {name:?} matches only exactly"
        );
    }
    // The owner before a change counts too.
    let f = EventFilter {
        process: Some("systemd-resolved".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        count(store, &f),
        vec![(1000, Present, 53), (4000, OwnerChanged, 53)]
    );
    let f = EventFilter {
        process: Some("dnsmasq".into()),
        ..EventFilter::default()
    };
    assert_eq!(count(store, &f), vec![(4000, OwnerChanged, 53)]);
    let f = EventFilter {
        process: Some(HOSTILE.into()),
        ..EventFilter::default()
    };
    assert_eq!(
        count(store, &f),
        vec![(4000, Opened, 6379), (7000, Closed, 6379)]
    );

    let f = EventFilter {
        unit: Some("ssh.service".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        count(store, &f),
        vec![(1000, Present, 22), (3000, Restarted, 22)]
    );

    let f = EventFilter {
        kinds: vec![Closed, Restarted],
        ..EventFilter::default()
    };
    assert_eq!(
        count(store, &f),
        vec![
            (3000, Restarted, 22),
            (4000, Closed, 5432),
            (7000, Closed, 8080),
            (7000, Closed, 6379)
        ]
    );

    let f = EventFilter {
        proto: Some(Protocol::Udp),
        ..EventFilter::default()
    };
    assert_eq!(
        count(store, &f),
        vec![
            (1000, Present, 53),
            (4000, OwnerChanged, 53),
            (4000, Opened, 6379),
            (7000, Closed, 6379)
        ]
    );

    let f = EventFilter {
        since_ms: Some(3000),
        until_ms: Some(4000),
        ..EventFilter::default()
    };
    assert_eq!(
        count(store, &f),
        vec![
            (3000, ExposureChanged, 8080),
            (3000, Restarted, 22),
            (4000, Closed, 5432),
            (4000, OwnerChanged, 53),
            (4000, Opened, 6379)
        ],
        "since and until are inclusive"
    );

    let f = EventFilter {
        limit: Some(3),
        ..EventFilter::default()
    };
    assert_eq!(
        count(store, &f),
        vec![
            (5000, Opened, 5432),
            (7000, Closed, 8080),
            (7000, Closed, 6379)
        ],
        "the newest N, oldest first"
    );
    let f = EventFilter {
        limit: Some(0),
        ..EventFilter::default()
    };
    assert_eq!(count(store, &f), vec![]);
    let f = EventFilter {
        limit: Some(usize::MAX),
        ..EventFilter::default()
    };
    assert_eq!(count(store, &f).len(), 13);

    let f = EventFilter {
        host: Some(DB.into()),
        ..EventFilter::default()
    };
    assert_eq!(count(store, &f), vec![(1500, Present, 6379)]);
    let f = EventFilter {
        host: Some(WEB.into()),
        port: Some(6379),
        ..EventFilter::default()
    };
    assert_eq!(
        count(store, &f),
        vec![(4000, Opened, 6379), (7000, Closed, 6379)]
    );
    let f = EventFilter {
        host: Some(WEB.into()),
        kinds: vec![Opened],
        since_ms: Some(2500),
        limit: Some(1),
        ..EventFilter::default()
    };
    assert_eq!(count(store, &f), vec![(5000, Opened, 5432)]);
}

/// What a database that another program wrote badly reads as: an error naming the row,
/// never a panic. `exec` runs SQL directly on the store's database.
pub fn bad_rows(store: &mut dyn Store, exec: &mut dyn FnMut(&str)) {
    let story = story();
    record_story(store, &story);

    exec("UPDATE events SET kind = 'bogus' WHERE ts_ms = 2000");
    let e = store
        .events(&EventFilter::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("events row 5"), "{e}");
    assert!(e.contains("unknown kind \"bogus\""), "{e}");
    let e = store.state_at(WEB, 9999).unwrap_err().to_string();
    assert!(e.contains("events row 5"), "{e}");
    exec("UPDATE events SET kind = 'opened' WHERE ts_ms = 2000");

    exec("UPDATE events SET address = 'not-an-ip\x1b[2J' WHERE ts_ms = 1500");
    let e = store
        .events(&EventFilter::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("events row 4"), "{e}");
    assert!(e.contains("is not an IP address"), "{e}");
    assert!(!e.contains('\x1b'), "escaped: {e}");
    exec("UPDATE events SET address = '10.0.0.5' WHERE ts_ms = 1500");

    exec("UPDATE events SET previous_exposure = 'everywhere' WHERE kind = 'exposure_changed'");
    let e = store
        .events(&EventFilter::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown previous_exposure \"everywhere\""),
        "{e}"
    );
    exec("UPDATE events SET previous_exposure = 'loopback' WHERE kind = 'exposure_changed'");

    exec("UPDATE events SET port = 70000 WHERE ts_ms = 1500");
    let e = store
        .events(&EventFilter::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("port 70000 is out of range"), "{e}");
    exec("UPDATE events SET port = 6379 WHERE ts_ms = 1500");

    exec("UPDATE listeners SET proto = 'carrier-pigeon' WHERE port = 22");
    let e = store.last_state(WEB).unwrap_err().to_string();
    assert!(
        e.contains("listeners row (\"web-1\", \"carrier-pigeon\", \"0.0.0.0\", 22)"),
        "{e}"
    );
    exec("UPDATE listeners SET proto = 'tcp' WHERE port = 22");

    exec("UPDATE listeners SET address = '300.1.2.3' WHERE port = 22");
    let e = store.last_state(WEB).unwrap_err().to_string();
    assert!(
        e.contains("address \"300.1.2.3\" is not an IP address"),
        "{e}"
    );
    exec("UPDATE listeners SET address = '0.0.0.0' WHERE port = 22");

    // Repaired, everything reads again.
    assert_eq!(store.events(&EventFilter::default()).unwrap().len(), 13);
    assert_eq!(store.last_state(WEB).unwrap().unwrap().listeners.len(), 3);
}

// ------------------------------------------------------------------------------------------
// Scans.

/// A tool's trait as a hostile scanner could make the sentry quote it: an escape sequence
/// that sets the terminal's title, markup, quotes, SQL, a line break, a right-to-left
/// override and non-ASCII. Stored and read back exactly as given.
pub const HOSTILE_BECAUSE: &str =
    "window 1024\x1b]0;owned\x07 <b>&amp;</b> it's\"; DROP TABLE scans; --\r\nfake\u{202e}名";

/// A scan of `host` with key `key`, from `sources`, of `ports`; started at `started_ms`,
/// last probe 1 s later, ongoing, no tool.
pub fn scan(
    host: &str,
    key: &str,
    started_ms: i64,
    sources: &[&str],
    ports: &[&str],
) -> ScanRecord {
    ScanRecord {
        host: host.into(),
        key: key.into(),
        started_ms,
        detected_ms: started_ms + 200,
        last_ms: started_ms + 1000,
        ended_ms: None,
        sources: sources.iter().map(|s| ip(s)).collect(),
        sources_total: u64::try_from(sources.len()).unwrap(),
        detector: "vertical".into(),
        kinds: vec!["syn".into()],
        tool: None,
        tool_because: None,
        ports: ports.iter().map(|&p| p.to_owned()).collect(),
        ports_total: u64::try_from(ports.len()).unwrap(),
        probes: 10,
        failed: 9,
        probes_to_detect: 8,
        blocked_until_ms: None,
    }
}

/// Four scans, recorded out of start order: (A) an ended distributed scan of web-1 with
/// every field set and a hostile trait, (B) an ongoing scan of db-2, (C) an ended scan of
/// web-1 late on, (D) an ongoing scan of web-1 recorded last but started second.
pub fn scan_story() -> [ScanRecord; 4] {
    let a = ScanRecord {
        ended_ms: Some(13_000),
        sources_total: 40,
        detector: "distributed".into(),
        kinds: vec!["syn".into(), "fin".into(), "udp".into()],
        tool: Some("nmap".into()),
        tool_because: Some(HOSTILE_BECAUSE.into()),
        ports_total: 1000,
        probes: 5000,
        failed: 4990,
        probes_to_detect: 12,
        blocked_until_ms: Some(99_000),
        last_ms: 12_000,
        ..scan(
            WEB,
            "100-1700000000000-a",
            10_000,
            &["203.0.113.9", "2001:db8::7", "198.51.100.1"],
            &["22/tcp", "443/tcp", "53/udp"],
        )
    };
    let b = ScanRecord {
        last_ms: 25_000,
        ..scan(
            DB,
            "200-1700000000000-b",
            20_000,
            &["203.0.113.99"],
            &["8080/tcp", "122/tcp"],
        )
    };
    let c = ScanRecord {
        last_ms: 30_500,
        ended_ms: Some(31_000),
        ..scan(
            WEB,
            "100-1700000000000-c",
            30_000,
            &["203.0.113.9"],
            &["2222/tcp", "22/udp"],
        )
    };
    let d = ScanRecord {
        last_ms: 16_000,
        ..scan(
            WEB,
            "100-1700000000000-d",
            15_000,
            &["2001:db8::8"],
            &["2222/tcp", "1/tcp"],
        )
    };
    [a, b, c, d]
}

fn keys(scans: &[ScanRecord]) -> Vec<&str> {
    scans
        .iter()
        .map(|s| s.key.rsplit('-').next().unwrap_or(""))
        .collect()
}

/// Records [`scan_story`] (after checking the store is empty) and checks what `record_scan`
/// and `scans` promise: round trip, upsert, refusals, filters. Needs no claim.
pub fn scan_behaviour(store: &mut dyn Store) {
    let all = ScanFilter::default();
    assert_eq!(store.scans(&all).unwrap(), vec![]);
    let [a, b, c, d] = scan_story();
    for s in [&a, &b, &c, &d] {
        store
            .record_scan(s)
            .unwrap_or_else(|e| panic!("{}: {e}", s.key));
    }

    // Round trip, every field exactly as given (the hostile trait too), oldest first.
    let back = store.scans(&all).unwrap();
    assert_eq!(back, vec![a.clone(), d.clone(), b.clone(), c.clone()]);
    assert_eq!(back[0].tool_because.as_deref(), Some(HOSTILE_BECAUSE));

    // Upsert: the same host and key again replaces every field, in one row.
    let grown = ScanRecord {
        started_ms: 19_000,
        detected_ms: 21_000,
        last_ms: 28_000,
        ended_ms: Some(29_000),
        sources: vec![ip("203.0.113.99"), ip("203.0.113.100")],
        sources_total: 70,
        detector: "slow".into(),
        kinds: vec!["connect".into(), "syn".into()],
        tool: Some("masscan".into()),
        tool_because: Some("ip id 0".into()),
        ports: vec!["8080/tcp".into(), "122/tcp".into(), "9/udp".into()],
        ports_total: 300,
        probes: 7000,
        failed: 6999,
        probes_to_detect: 40,
        blocked_until_ms: Some(50_000),
        ..b.clone()
    };
    store.record_scan(&grown).unwrap();
    store.record_scan(&grown).unwrap();
    let only_db = ScanFilter {
        host: Some(DB.into()),
        ..ScanFilter::default()
    };
    assert_eq!(store.scans(&only_db).unwrap(), vec![grown.clone()]);
    // And back: fields that were set become unset.
    store.record_scan(&b).unwrap();
    assert_eq!(store.scans(&only_db).unwrap(), vec![b.clone()]);
    // The same key on another host is another scan.
    let twin = ScanRecord {
        host: "db-3".into(),
        ..b.clone()
    };
    store.record_scan(&twin).unwrap();
    assert_eq!(store.scans(&all).unwrap().len(), 5);
    let only_twin = ScanFilter {
        host: Some("db-3".into()),
        ..ScanFilter::default()
    };
    assert_eq!(store.scans(&only_twin).unwrap(), vec![twin]);

    // Refused, nothing written: no key, no host, lists beyond their caps, counts beyond
    // what a signed 64-bit column holds.
    let many_sources: Vec<IpAddr> = (0..=64u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
    for (bad, why) in [
        (
            ScanRecord {
                key: String::new(),
                ..a.clone()
            },
            "without a key",
        ),
        (
            ScanRecord {
                host: String::new(),
                ..a.clone()
            },
            "without a host",
        ),
        (
            ScanRecord {
                sources: many_sources,
                key: "x-1".into(),
                ..a.clone()
            },
            "65 sources listed, at most 64",
        ),
        (
            ScanRecord {
                ports: (0..257).map(|p| format!("{p}/tcp")).collect(),
                key: "x-2".into(),
                ..a.clone()
            },
            "257 ports listed, at most 256",
        ),
        (
            ScanRecord {
                probes: u64::MAX,
                key: "x-3".into(),
                ..a.clone()
            },
            "probes 18446744073709551615 is beyond",
        ),
    ] {
        let err = store.record_scan(&bad).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains(why), "{err}");
    }
    assert_eq!(store.scans(&all).unwrap().len(), 5);
    // At the caps exactly, kept.
    let full = ScanRecord {
        host: "caps".into(),
        key: "100-1700000000000-caps".into(),
        sources: (0..64u8).map(|i| IpAddr::from([192, 0, 2, i])).collect(),
        ports: (1..=256).map(|p| format!("{p}/udp")).collect(),
        probes: u64::try_from(i64::MAX).unwrap(),
        ..a.clone()
    };
    store.record_scan(&full).unwrap();
    let only_caps = ScanFilter {
        host: Some("caps".into()),
        ..ScanFilter::default()
    };
    assert_eq!(store.scans(&only_caps).unwrap(), vec![full]);

    scan_filters(store);

    // Scans are apart from the listener history: no events, no hosts.
    assert_eq!(store.events(&EventFilter::default()).unwrap(), vec![]);
    assert_eq!(store.hosts().unwrap(), vec![]);
}

fn scan_filters(store: &mut dyn Store) {
    let web = |f: ScanFilter| ScanFilter {
        host: Some(WEB.into()),
        ..f
    };
    let mut got = |f: ScanFilter| keys(&store.scans(&f).unwrap()).join(",");
    let d = ScanFilter::default;
    // Web's scans: A (10-13 s), D (15-16 s, ongoing), C (30-31 s).
    assert_eq!(got(web(d())), "a,d,c");
    // Since: the scan's last probe or its end is at or after it.
    let since = |t| {
        web(ScanFilter {
            since_ms: Some(t),
            ..d()
        })
    };
    assert_eq!(got(since(13_000)), "a,d,c", "ended at 13 s");
    assert_eq!(got(since(13_001)), "d,c");
    assert_eq!(got(since(16_000)), "d,c", "last probe at 16 s");
    assert_eq!(got(since(16_001)), "c", "ongoing, but silent since 16 s");
    assert_eq!(got(since(31_001)), "");
    // Until: started at or before it.
    let until = |t| {
        web(ScanFilter {
            until_ms: Some(t),
            ..d()
        })
    };
    assert_eq!(got(until(9_999)), "");
    assert_eq!(got(until(10_000)), "a");
    assert_eq!(got(until(15_000)), "a,d");
    // A range: every scan that overlaps it.
    let range = |s, u| ScanFilter {
        since_ms: Some(s),
        until_ms: Some(u),
        ..d()
    };
    assert_eq!(
        got(range(14_000, 21_000)),
        "d,b,b",
        "D, then B of db-2 and db-3"
    );
    assert_eq!(got(web(range(12_500, 12_600))), "a", "inside A");
    // Source: a whole listed address, IPv6 however it is written.
    let source = |s: &str| ScanFilter {
        source: Some(ip(s)),
        ..d()
    };
    assert_eq!(got(source("203.0.113.9")), "a,c", "not 203.0.113.99");
    assert_eq!(got(web(source("2001:0DB8:0::7"))), "a");
    assert_eq!(got(source("203.0.113.99")), "b,b", "db-2 and db-3");
    assert_eq!(got(source("203.0.113.98")), "");
    // Port: a listed port of any protocol, the whole number.
    let port = |p| {
        web(ScanFilter {
            port: Some(p),
            ..d()
        })
    };
    assert_eq!(got(port(22)), "a,c", "22/tcp, 22/udp; not 2222 or 122");
    assert_eq!(got(port(2222)), "d,c");
    assert_eq!(got(port(53)), "a");
    assert_eq!(got(port(2)), "");
    assert_eq!(
        got(ScanFilter {
            port: Some(122),
            ..d()
        }),
        "caps,b,b",
        "122/udp of caps, 122/tcp of db-2 and db-3"
    );
    // Limit: the N that started last, oldest first.
    let limit = |n| {
        web(ScanFilter {
            limit: Some(n),
            ..d()
        })
    };
    assert_eq!(got(limit(2)), "d,c");
    assert_eq!(got(limit(0)), "");
    assert_eq!(got(limit(usize::MAX)), "a,d,c");
    assert_eq!(
        got(web(ScanFilter {
            port: Some(22),
            limit: Some(1),
            ..d()
        })),
        "c"
    );
}

/// What a scans table that another program wrote badly reads as: an error naming the row,
/// never a panic. `exec` runs SQL directly on the store's database.
pub fn scan_bad_rows(store: &mut dyn Store, exec: &mut dyn FnMut(&str)) {
    let story = scan_story();
    for s in &story {
        store.record_scan(s).unwrap();
    }
    let key = &story[0].key;
    let row = format!("scans row (\"{WEB}\", \"{key}\")");
    for (set, want) in [
        (
            // JSON's own escape: the list is valid, its address is not.
            "sources = '[\"not-an-ip\\u001b[2J\"]'",
            "sources \"not-an-ip\\\\x1b[2J\" is not an IP address",
        ),
        ("ports = 'oops'", "ports is not a JSON list of strings"),
        ("kinds = '[1, 2]'", "kinds is not a JSON list of strings"),
        ("probes = -1", "probes -1 is out of range"),
    ] {
        exec(&format!("UPDATE scans SET {set} WHERE scan_key = '{key}'"));
        let e = store.scans(&ScanFilter::default()).unwrap_err().to_string();
        assert!(e.contains(&row), "{set}: {e}");
        assert!(e.contains(want), "{set}: {e}");
        assert!(!e.contains('\x1b'), "escaped: {e}");
        exec(&format!(
            "UPDATE scans SET sources = '[\"203.0.113.9\"]', ports = '[]', kinds = '[]', \
             probes = 1, detector = 'trw' WHERE scan_key = '{key}'"
        ));
    }
    // Repaired, it reads again; the other scans were never touched.
    let back = store.scans(&ScanFilter::default()).unwrap();
    assert_eq!(back.len(), 4);
    assert_eq!(
        back[1..],
        [story[3].clone(), story[1].clone(), story[2].clone()]
    );
}

#[allow(unused_imports)] // store_postgres uses it
pub use portolan_testbed::pg::PgServer;
