//! The local sinks: the stderr line, the JSONL file and `--exec` with real processes.

mod sinks;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use portolan_watch::alert::{
    exec_run, journal_line, line, priority, AlertConfig, Alerts, EventsOut, ExecOutcome,
};
use portolan_watch::metrics::Metrics;
use portolan_watch::model::{Event, EventKind, Owner};
use sinks::{event, owner, wait_for, with_previous, TempDir, HOSTILE};

fn no_controls(s: &str) -> bool {
    !s.chars().any(portolan_core::escape::is_dangerous)
}

// ---- the stderr line ----

#[test]
fn lines_read_as_sentences() {
    let opened = event(EventKind::Opened, 8080);
    assert_eq!(
        line(&opened),
        "opened tcp 0.0.0.0:8080 (all interfaces) python3[4242] user alice unit app.service"
    );
    let mut closed = event(EventKind::Closed, 8080);
    closed.listener = sinks::listener("::1", 8080, owner(7, "node"));
    closed.note = Some("closed while nothing was watching".into());
    assert_eq!(
        line(&closed),
        "closed tcp [::1]:8080 (loopback) node[7] user alice unit app.service; closed while nothing was watching"
    );
    let mut restarted = event(EventKind::Restarted, 5432);
    restarted.listener = sinks::listener("127.0.0.1", 5432, owner(202, "postgres"));
    let restarted = with_previous(restarted, "127.0.0.1", owner(101, "postgres"));
    assert_eq!(
        line(&restarted),
        "restarted tcp 127.0.0.1:5432 (loopback) postgres[101 -> 202] user alice unit app.service"
    );
    let mut new_owner = owner(20, "python3");
    new_owner.user = Some("bob".into());
    new_owner.uid = 1001;
    new_owner.unit = None;
    let mut changed = event(EventKind::OwnerChanged, 80);
    changed.listener.owner = new_owner;
    let changed = with_previous(changed, "0.0.0.0", owner(10, "nginx"));
    assert_eq!(
        line(&changed),
        "owner_changed tcp 0.0.0.0:80 (all interfaces) nginx[10] -> python3[20] user bob (was alice)"
    );
    let moved = with_previous(
        event(EventKind::ExposureChanged, 8080),
        "127.0.0.1",
        owner(42, "python3"),
    );
    assert!(
        line(&moved).starts_with(
            "exposure_changed tcp 127.0.0.1:8080 (loopback) -> 0.0.0.0:8080 (all interfaces) python3[4242]"
        ),
        "{}",
        line(&moved)
    );
    let mut nobody = event(EventKind::Opened, 53);
    nobody.listener.owner = Owner {
        uid: 0,
        ..Owner::default()
    };
    assert_eq!(
        line(&nobody),
        "opened tcp 0.0.0.0:53 (all interfaces) unknown process uid 0"
    );
}

#[test]
fn hostile_strings_are_escaped_in_lines() {
    let evil = Owner {
        pid: Some(666),
        process: Some(HOSTILE.into()),
        exe: Some(format!("/tmp/{HOSTILE}")),
        exe_deleted: false,
        user: Some("u\x1b]0;title\x07".into()),
        uid: 1000,
        unit: Some("x\r\n.service".into()),
        container: Some("docker:\x1b[2J".into()),
    };
    let mut e = event(EventKind::OwnerChanged, 8080);
    e.listener.owner = evil.clone();
    e.note = Some("note\n\x1b[1A".into());
    // Same process name, other exe: the exes are shown too.
    let mut before = evil;
    before.exe = Some("/usr/bin/\x1b[0m".into());
    before.pid = Some(1);
    let e = with_previous(e, "0.0.0.0", before);
    for text in [line(&e), journal_line(&e)] {
        assert!(no_controls(&text), "{text:?}");
        assert!(!text.contains('\n') && !text.contains('\x1b'), "{text:?}");
        assert!(text.contains("evil\\n\\x1b[31mred\\x07"), "{text:?}");
        assert!(text.contains("\\u{202e}"), "{text:?}");
        assert!(text.contains("x\\r\\n.service"), "{text:?}");
    }
}

#[test]
fn journal_lines_carry_a_priority() {
    let mut loopback = event(EventKind::Opened, 5432);
    loopback.listener = sinks::listener("127.0.0.1", 5432, owner(1, "postgres"));
    let cases = [
        (event(EventKind::Opened, 80), 4),
        (loopback, 5),
        (event(EventKind::Closed, 80), 5),
        (event(EventKind::Present, 80), 6),
        (
            with_previous(
                event(EventKind::ExposureChanged, 80),
                "127.0.0.1",
                owner(1, "x"),
            ),
            4,
        ),
    ];
    for (e, p) in cases {
        assert_eq!(priority(&e), p, "{}", line(&e));
        assert_eq!(journal_line(&e), format!("<{p}>{}", line(&e)));
    }
}

// ---- JSONL ----

#[test]
fn jsonl_file_reads_back_as_the_same_events_and_is_private() {
    let dir = TempDir::new("jsonl");
    let path = dir.0.join("events.jsonl");
    let mut hostile = event(EventKind::Opened, 9);
    hostile.listener.owner.process = Some(HOSTILE.into());
    hostile.note = Some("\u{0}nul and \u{7f}del".into());
    let first = vec![event(EventKind::Present, 22), hostile];
    let second = vec![with_previous(
        event(EventKind::Restarted, 22),
        "0.0.0.0",
        owner(1, "python3"),
    )];
    for batch in [&first, &second] {
        // A new Alerts each time: the file is appended to, not truncated.
        let cfg = AlertConfig {
            events: Some(EventsOut::File(path.clone())),
            ..AlertConfig::default()
        };
        let mut a = Alerts::new(cfg, Metrics::new("t")).unwrap();
        a.send(batch);
        // Flushed per batch: readable before shutdown.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        a.shutdown(Duration::from_secs(1));
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let back: Vec<Event> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: Vec<Event> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(back, want);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn an_events_file_that_cannot_be_opened_is_a_clear_error() {
    let dir = TempDir::new("jsonl-bad");
    let path = dir.0.join("no\x1bsuch-dir").join("events.jsonl");
    let cfg = AlertConfig {
        events: Some(EventsOut::File(path)),
        ..AlertConfig::default()
    };
    let e = Alerts::new(cfg, Metrics::new("t")).unwrap_err().to_string();
    assert!(e.contains("cannot open the events file"), "{e}");
    assert!(no_controls(&e), "{e:?}");
}

// ---- --exec ----

/// Reads `env -0` output into a map.
fn read_env(path: &std::path::Path) -> HashMap<String, String> {
    let raw = std::fs::read(path).unwrap();
    raw.split(|&b| b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let kv = String::from_utf8(kv.to_vec()).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[test]
fn exec_gets_the_event_in_its_environment_unmangled() {
    let dir = TempDir::new("exec-env");
    let cmd = format!(
        "cd '{}' && env -0 > \"$PORTOLAN_PORT.env\"",
        dir.0.display()
    );
    let mut hostile = with_previous(
        event(EventKind::OwnerChanged, 8080),
        "127.0.0.1",
        owner(10, "nginx"),
    );
    hostile.listener.owner.process = Some(HOSTILE.into());
    hostile.listener.owner.exe = Some(format!("/tmp/{HOSTILE}"));
    let mut unknown = event(EventKind::Opened, 9090);
    unknown.listener.owner = Owner {
        uid: 0,
        ..Owner::default()
    };
    let metrics = Metrics::new("t");
    let cfg = AlertConfig {
        exec: Some(cmd),
        ..AlertConfig::default()
    };
    let mut a = Alerts::new(cfg, metrics.clone()).unwrap();
    let t = Instant::now();
    a.send(&[
        hostile.clone(),
        unknown.clone(),
        event(EventKind::Present, 7070),
    ]);
    assert!(t.elapsed() < Duration::from_millis(50));
    assert!(wait_for(Duration::from_secs(20), || metrics
        .exec_counts()
        .0
        == 2));
    a.shutdown(Duration::from_secs(5));
    assert_eq!(metrics.exec_counts(), (2, 0));

    let env = read_env(&dir.0.join("8080.env"));
    let want = [
        ("PORTOLAN_EVENT", "owner_changed"),
        ("PORTOLAN_HOST", "web-3"),
        ("PORTOLAN_TIME", "2026-11-22T08:25:00.123Z"),
        ("PORTOLAN_PROTO", "tcp"),
        ("PORTOLAN_ADDRESS", "0.0.0.0"),
        ("PORTOLAN_PORT", "8080"),
        ("PORTOLAN_EXPOSURE", "all_interfaces"),
        ("PORTOLAN_PID", "4242"),
        ("PORTOLAN_PROCESS", HOSTILE),
        ("PORTOLAN_USER", "alice"),
        ("PORTOLAN_UNIT", "app.service"),
        ("PORTOLAN_PREVIOUS_ADDRESS", "127.0.0.1"),
        ("PORTOLAN_PREVIOUS_PID", "10"),
        ("PORTOLAN_PREVIOUS_PROCESS", "nginx"),
    ];
    for (k, v) in want {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(env["PORTOLAN_EXE"], format!("/tmp/{HOSTILE}"));
    assert!(!env.contains_key("PORTOLAN_CONTAINER"));
    let json: Event = serde_json::from_str(&env["PORTOLAN_EVENT_JSON"]).unwrap();
    assert_eq!(json, hostile);
    // The name was data, not shell: nothing ran from it.
    assert!(!dir.0.join("pwned").exists());
    assert!(!std::path::Path::new("pwned").exists());

    let env = read_env(&dir.0.join("9090.env"));
    assert_eq!(env["PORTOLAN_EVENT"], "opened");
    for k in [
        "PORTOLAN_PID",
        "PORTOLAN_PROCESS",
        "PORTOLAN_EXE",
        "PORTOLAN_USER",
        "PORTOLAN_UNIT",
        "PORTOLAN_PREVIOUS_ADDRESS",
        "PORTOLAN_PREVIOUS_PID",
        "PORTOLAN_PREVIOUS_PROCESS",
    ] {
        assert!(!env.contains_key(k), "{k} is unset when unknown");
    }
    assert_eq!(
        serde_json::from_str::<Event>(&env["PORTOLAN_EVENT_JSON"]).unwrap(),
        unknown
    );
    // `present` is never alerted.
    assert!(!dir.0.join("7070.env").exists());
}

#[test]
fn failing_commands_are_counted() {
    let metrics = Metrics::new("t");
    let cfg = AlertConfig {
        exec: Some("test \"$PORTOLAN_PORT\" = 1 || exit 3".into()),
        ..AlertConfig::default()
    };
    let mut a = Alerts::new(cfg, metrics.clone()).unwrap();
    a.send(&[
        event(EventKind::Opened, 1),
        event(EventKind::Opened, 2),
        event(EventKind::Opened, 3),
    ]);
    assert!(wait_for(Duration::from_secs(20), || {
        let (ok, failed) = metrics.exec_counts();
        ok + failed == 3
    }));
    a.shutdown(Duration::from_secs(5));
    assert_eq!(metrics.exec_counts(), (1, 2));
    let text = metrics.render();
    assert!(text.contains("portolan_exec_runs_total{result=\"ok\"} 1"));
    assert!(text.contains("portolan_exec_runs_total{result=\"failed\"} 2"));
}

#[test]
fn a_command_past_its_time_is_killed_with_its_children() {
    let dir = TempDir::new("exec-kill");
    let pidfile = dir.0.join("pid");
    let cmd = format!("sleep 30 & echo $! > '{}'; wait", pidfile.display());
    let t = Instant::now();
    let outcome = exec_run(
        &cmd,
        &event(EventKind::Opened, 1),
        Duration::from_millis(300),
    );
    let took = t.elapsed();
    assert!(matches!(outcome, ExecOutcome::TimedOut), "{outcome:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The background `sleep` was in the run's process group: killed too.
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = wait_for(Duration::from_secs(3), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            let state = s.rsplit_once(')').map(|(_, r)| r.trim_start());
            state.is_some_and(|r| r.starts_with('Z') || r.starts_with('X'))
        })
    });
    assert!(gone, "sleep {pid} outlived the run");
}

#[test]
fn exec_outcomes_are_told_apart() {
    let e = event(EventKind::Opened, 1);
    assert!(exec_run("true", &e, Duration::from_secs(10)).is_success());
    assert!(matches!(
        exec_run("exit 7", &e, Duration::from_secs(10)),
        ExecOutcome::Failed(st) if st.code() == Some(7)
    ));
    assert!(matches!(
        exec_run("kill -9 $$", &e, Duration::from_secs(10)),
        ExecOutcome::Failed(st) if st.code().is_none()
    ));
    // stdin is /dev/null: a reader sees end of file at once.
    assert!(exec_run("read x; test -z \"$x\"", &e, Duration::from_secs(10)).is_success());
}

#[test]
fn an_empty_command_is_refused() {
    let cfg = AlertConfig {
        exec: Some("  ".into()),
        ..AlertConfig::default()
    };
    let e = Alerts::new(cfg, Metrics::new("t")).unwrap_err();
    assert!(e.to_string().contains("--exec"), "{e}");
}
