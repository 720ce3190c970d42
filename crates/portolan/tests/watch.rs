//! `portolan watch`, `history` and `diff` end to end: the daemon runs against real
//! listeners that the tests open, restart, move and close, and the tests read what it
//! recorded (store, JSONL stream, webhook, --exec, /metrics) the way a user would.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{portolan, wait_for, BIN};
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("portolan-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `portolan watch`; SIGTERM and reaped on drop.
struct Watcher {
    child: Child,
    stderr: Arc<Mutex<String>>,
    metrics: Option<String>,
}

impl Watcher {
    fn start(args: &[&str]) -> Watcher {
        let mut child = Command::new(BIN)
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start portolan watch");
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut w = Watcher {
            child,
            stderr,
            metrics: None,
        };
        assert!(
            wait_for(Duration::from_secs(20), || w
                .stderr()
                .contains("watching every")
                || !matches!(w.child.try_wait(), Ok(None))),
            "watch did not start"
        );
        assert!(
            matches!(w.child.try_wait(), Ok(None)),
            "watch exited: {}",
            w.stderr()
        );
        w.metrics = w
            .stderr()
            .split("metrics at http://")
            .nth(1)
            .and_then(|r| r.split("/metrics").next())
            .map(str::to_owned);
        w
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// SIGTERM, then waits (bounded) for a clean exit; returns its exit code.
    fn stop(mut self) -> (i32, String) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.pid()).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let start = Instant::now();
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "watch ignored SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        };
        thread::sleep(Duration::from_millis(50));
        (code, self.stderr())
    }

    fn metrics(&self) -> String {
        let addr = self
            .metrics
            .as_deref()
            .expect("watch started with --metrics");
        http_get(addr, "/metrics")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// A Python listener on ADDR:PORT (a real, separate program), killed on drop.
struct PyListener(Child);

impl PyListener {
    fn start(addr: &str, port: u16) -> PyListener {
        let code = format!(
            "import socket,sys,time\n\
             s=socket.socket(socket.AF_INET)\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{addr}',{port}))\n\
             s.listen(8)\n\
             print('up',flush=True)\n\
             time.sleep(120)\n"
        );
        let mut c = Command::new(PY)
            .args(["-c", &code])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "up",
            "python listener on {addr}:{port} did not start"
        );
        PyListener(c)
    }
    fn pid(&self) -> u64 {
        u64::from(self.0.id())
    }
}

impl Drop for PyListener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSONL event stream, read so far.
fn events(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event line {l:?}: {e}")))
        .collect()
}

fn on_port(evs: &[Value], port: u16) -> Vec<Value> {
    evs.iter()
        .filter(|e| e["listener"]["port"].as_u64() == Some(u64::from(port)))
        .cloned()
        .collect()
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the events on `port` number `n`, and returns them.
fn wait_events(file: &Path, port: u16, n: usize, w: &Watcher) -> Vec<Value> {
    let ok = wait_for(Duration::from_secs(15), || {
        on_port(&events(file), port).len() >= n
    });
    let evs = on_port(&events(file), port);
    assert!(
        ok,
        "wanted {n} event(s) on port {port}, got {evs:#?}\nwatch said:\n{}",
        w.stderr()
    );
    evs
}

/// A webhook receiver on loopback: records each POST body, answers 200.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    common::webhook_receiver_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
}

/// A listener on `ip`, on a port below the ephemeral range that is free on every address.
/// The tests of this binary run in parallel threads and bind port 0; a port just released
/// is soon handed out again, and another test's listener there would look like this one's
/// program moving address (same program, same port). Bound here, so no other test can
/// take the port between the look and the bind; each call starts elsewhere.
fn fixed_listener(ip: Ipv4Addr) -> (u16, TcpListener) {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = 30_000 + u16::try_from(std::process::id() % 1000).unwrap() + call * 211;
    (0..700u16)
        .map(|i| 30_000 + (start - 30_000 + i * 7) % 2700)
        .find_map(|p| {
            let wild = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)).ok()?;
            drop(wild);
            TcpListener::bind((ip, p)).ok().map(|l| (p, l))
        })
        .expect("a free port in 30000-32699")
}

/// A port below the ephemeral range, free on every address (see [`fixed_listener`]).
fn free_port() -> u16 {
    fixed_listener(Ipv4Addr::UNSPECIFIED).0
}

#[test]
fn a_port_s_life_reaches_the_store_the_stream_the_webhook_exec_and_metrics() {
    let dir = Scratch::new("life");
    let db = dir.path("h.sqlite");
    let stream = dir.path("events.jsonl");
    let exec_log = dir.path("exec.log");
    let (hook, posted) = webhook_receiver();
    let host = format!("life-{}", std::process::id());
    let exec = format!(
        "printf '%s %s %s %s\\n' \"$PORTOLAN_EVENT\" \"$PORTOLAN_PORT\" \"$PORTOLAN_PID\" \"$PORTOLAN_EXPOSURE\" >> {}",
        exec_log.display()
    );
    let w = Watcher::start(&[
        "--db",
        db.to_str().unwrap(),
        "--interval",
        "200ms",
        "--grace",
        "1s",
        "--host",
        &host,
        "--events",
        stream.to_str().unwrap(),
        "--webhook",
        &hook,
        "--exec",
        &exec,
        "--metrics",
        "127.0.0.1:0",
    ]);
    let port = free_port();

    // One recorder per store: a second watch on the same file is refused, clearly.
    let r = portolan(&[
        "watch",
        "--db",
        db.to_str().unwrap(),
        "--samples",
        "1",
        "--host",
        &host,
    ]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("already recording") && r.stderr.contains(&format!("pid {}", w.pid())),
        "{}",
        r.stderr
    );

    // Opened, on loopback, by a python3 process.
    let first = PyListener::start("127.0.0.1", port);
    let evs = wait_events(&stream, port, 1, &w);
    assert_eq!(kinds(&evs), ["opened"]);
    assert_eq!(
        evs[0]["listener"]["owner"]["pid"].as_u64(),
        Some(first.pid())
    );
    assert_eq!(evs[0]["listener"]["exposure"], "loopback");
    assert_eq!(evs[0]["host"], host.as_str());
    let m = w.metrics();
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(
        m.lines().any(|l| l.starts_with("portolan_listeners{")
            && l.contains(&format!("port=\"{port}\""))
            && l.contains("exposure=\"loopback\"")
            && l.ends_with(" 1")),
        "{m}"
    );

    // Restarted: the same program, a new pid, the same place: one event.
    let old = first.pid();
    drop(first);
    let second = PyListener::start("127.0.0.1", port);
    let evs = wait_events(&stream, port, 2, &w);
    assert_eq!(kinds(&evs), ["opened", "restarted"]);
    assert_eq!(evs[1]["previous"]["owner"]["pid"].as_u64(), Some(old));
    assert_eq!(
        evs[1]["listener"]["owner"]["pid"].as_u64(),
        Some(second.pid())
    );

    // Exposure changed: the same program moves the port to every interface.
    drop(second);
    let third = PyListener::start("0.0.0.0", port);
    let evs = wait_events(&stream, port, 3, &w);
    assert_eq!(kinds(&evs)[2], "exposure_changed");
    assert_eq!(evs[2]["previous"]["exposure"], "loopback");
    assert_eq!(evs[2]["listener"]["exposure"], "all_interfaces");
    let moved_at = evs[2]["ts_ms"].as_i64().unwrap();
    thread::sleep(Duration::from_millis(1200));

    // Owner changed: another program (this test) takes the place.
    drop(third);
    let mine = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
    let evs = wait_events(&stream, port, 4, &w);
    assert_eq!(kinds(&evs)[3], "owner_changed");
    assert_eq!(
        evs[3]["listener"]["owner"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );

    // Closed, once the grace has passed.
    drop(mine);
    let evs = wait_events(&stream, port, 5, &w);
    assert_eq!(
        kinds(&evs),
        [
            "opened",
            "restarted",
            "exposure_changed",
            "owner_changed",
            "closed"
        ]
    );
    thread::sleep(Duration::from_millis(600));
    let m = w.metrics();
    let (code, said) = w.stop();
    assert_eq!(code, 0, "{said}");
    assert!(
        !m.contains(&format!("port=\"{port}\"")),
        "a closed listener stays in the gauge:\n{m}"
    );
    for k in [
        "opened",
        "restarted",
        "exposure_changed",
        "owner_changed",
        "closed",
    ] {
        assert!(
            m.lines().any(
                |l| l.starts_with(&format!("portolan_events_total{{kind=\"{k}\"}}"))
                    && !l.ends_with(" 0")
            ),
            "{k} not counted:\n{m}"
        );
    }
    // The stderr line names each change, for people and the journal.
    assert!(said.contains(&format!(":{port}")), "{said}");

    // The store: `history PORT` tells the same life, in order, and what holds it now.
    let r = portolan(&[
        "history",
        "--db",
        db.to_str().unwrap(),
        &port.to_string(),
        "--json",
    ]);
    r.expect_code(0);
    let doc = r.json();
    let stored: Vec<Value> = doc["events"].as_array().unwrap().clone();
    assert_eq!(
        kinds(&stored),
        [
            "opened",
            "restarted",
            "exposure_changed",
            "owner_changed",
            "closed"
        ],
        "{doc:#}"
    );
    let r = portolan(&[
        "history",
        "--db",
        db.to_str().unwrap(),
        &port.to_string(),
        "--host",
        &host,
    ]);
    r.expect_code(0);
    assert!(r.stdout.contains("exposure_changed"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("now: nothing listens on port {port}")),
        "{}",
        r.stdout
    );
    let r = portolan(&[
        "history",
        "--db",
        db.to_str().unwrap(),
        "--kind",
        "restarted,owner_changed",
        "--jsonl",
    ]);
    let picked: Vec<Value> = r
        .jsonl()
        .into_iter()
        .filter(|e| e["listener"]["port"] == port)
        .collect();
    assert_eq!(kinds(&picked), ["restarted", "owner_changed"]);

    // diff: when python3 held it on every interface, versus the host's last state.
    let then = format!("@{}", moved_at / 1000 + 1);
    let r = portolan(&[
        "diff",
        "--db",
        db.to_str().unwrap(),
        "--since",
        &then,
        "--host",
        &host,
        "--json",
    ]);
    r.expect_code(0);
    let doc = r.json();
    let mine: Vec<&Value> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["port"] == port)
        .collect();
    assert_eq!(mine.len(), 1, "{doc:#}");
    assert_eq!(mine[0]["change"], "removed");
    assert_eq!(mine[0]["address"], "0.0.0.0");

    // The webhook got the same five events; --exec ran once for each.
    assert!(wait_for(Duration::from_secs(10), || {
        posted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["listener"]["port"] == port)
            .count()
            >= 5
    }));
    let hooked: Vec<Value> = posted
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["listener"]["port"] == port)
        .collect();
    assert_eq!(
        kinds(&hooked),
        [
            "opened",
            "restarted",
            "exposure_changed",
            "owner_changed",
            "closed"
        ]
    );
    let ran = std::fs::read_to_string(&exec_log).unwrap_or_default();
    let ran: Vec<&str> = ran
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some(&port.to_string()))
        .collect();
    assert_eq!(ran.len(), 5, "{ran:?}");
    assert!(
        ran[0].starts_with("opened ") && ran[0].ends_with(" loopback"),
        "{ran:?}"
    );
    assert!(
        ran[2].starts_with("exposure_changed ") && ran[2].ends_with(" all_interfaces"),
        "{ran:?}"
    );
}

#[test]
fn a_restarted_daemon_records_what_changed_while_it_was_not_watching() {
    let dir = Scratch::new("resume");
    let db = dir.path("h.sqlite");
    let stream = dir.path("events.jsonl");
    let host = format!("resume-{}", std::process::id());
    let args = [
        "--db",
        db.to_str().unwrap(),
        "--interval",
        "200ms",
        "--grace",
        "1s",
        "--host",
        &host,
        "--events",
        stream.to_str().unwrap(),
    ];
    let (kept_port, kept) = fixed_listener(Ipv4Addr::LOCALHOST);
    let (gone_port, gone) = fixed_listener(Ipv4Addr::LOCALHOST);

    let w = Watcher::start(&args);
    thread::sleep(Duration::from_millis(800));
    let (code, said) = w.stop();
    assert_eq!(code, 0, "{said}");
    // The first run on a host is its baseline: recorded as present, never alerted.
    assert!(on_port(&events(&stream), kept_port).is_empty());
    let r = portolan(&[
        "history",
        "--db",
        db.to_str().unwrap(),
        &kept_port.to_string(),
        "--json",
    ]);
    assert_eq!(kinds(r.json()["events"].as_array().unwrap()), ["present"]);

    drop(gone);
    let (new_port, new) = fixed_listener(Ipv4Addr::LOCALHOST);
    let w = Watcher::start(&args);
    let g = wait_events(&stream, gone_port, 1, &w);
    let n = wait_events(&stream, new_port, 1, &w);
    assert_eq!(kinds(&g), ["closed"]);
    assert_eq!(kinds(&n), ["opened"]);
    for e in g.iter().chain(&n) {
        assert!(
            e["note"]
                .as_str()
                .unwrap_or("")
                .contains("while nothing was watching"),
            "{e:#}"
        );
    }
    thread::sleep(Duration::from_millis(500));
    let (code, said) = w.stop();
    assert_eq!(code, 0, "{said}");
    assert!(
        on_port(&events(&stream), kept_port).is_empty(),
        "an unchanged listener was alerted"
    );
    drop(kept);
    drop(new);
}

#[test]
fn only_exposed_alerts_skip_loopback_but_the_store_keeps_everything() {
    let dir = Scratch::new("exposed");
    let db = dir.path("h.sqlite");
    let stream = dir.path("events.jsonl");
    let host = format!("exposed-{}", std::process::id());
    let w = Watcher::start(&[
        "--db",
        db.to_str().unwrap(),
        "--interval",
        "200ms",
        "--grace",
        "0s",
        "--host",
        &host,
        "--events",
        stream.to_str().unwrap(),
        "--only-exposed",
    ]);
    let (lp, local) = fixed_listener(Ipv4Addr::LOCALHOST);
    let (wp, wild) = fixed_listener(Ipv4Addr::UNSPECIFIED);
    wait_events(&stream, wp, 1, &w);
    thread::sleep(Duration::from_millis(500));
    let (code, said) = w.stop();
    assert_eq!(code, 0, "{said}");
    assert!(on_port(&events(&stream), lp).is_empty());
    let r = portolan(&[
        "history",
        "--db",
        db.to_str().unwrap(),
        &lp.to_string(),
        "--json",
    ]);
    assert_eq!(kinds(r.json()["events"].as_array().unwrap()), ["opened"]);
    drop((local, wild));
}

#[test]
fn a_daemon_killed_mid_write_leaves_a_store_that_opens_and_agrees_with_itself() {
    let dir = Scratch::new("crash");
    let db = dir.path("h.sqlite");
    let host = format!("crash-{}", std::process::id());
    let args = [
        "--db",
        db.to_str().unwrap(),
        "--interval",
        "100ms",
        "--grace",
        "0s",
        "--host",
        &host,
        "--quiet",
    ];
    // Churn: listeners open and close all the time, so nearly every sample writes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut held: Vec<TcpListener> = Vec::new();
            let start = Instant::now();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(60)
            {
                if held.len() < 150 {
                    let ip = Ipv4Addr::new(127, 0, 42, u8::try_from(i % 200 + 1).unwrap());
                    if let Ok(l) = TcpListener::bind((ip, 0)) {
                        held.push(l);
                    }
                } else {
                    held.drain(..50);
                }
                i += 1;
                thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let mut seed = u64::from(std::process::id());
    for round in 0..5 {
        let w = Watcher::start(&args);
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        thread::sleep(Duration::from_millis(300 + seed % 700));
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(w.pid()).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        drop(w);
        // The store opens, answers, and its current state is the replay of its events.
        let r = portolan(&[
            "history",
            "--db",
            db.to_str().unwrap(),
            "--host",
            &host,
            "--json",
            "--limit",
            "1000000",
        ]);
        r.expect_code(0);
        let mut store = portolan_watch::store::open(db.to_str().unwrap())
            .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        let last = store.last_state(&host).unwrap().expect("a recorded state");
        let replay = store.state_at(&host, i64::MAX).unwrap();
        let keys = |ls: &[portolan_watch::model::Listener]| {
            let mut k: Vec<_> = ls
                .iter()
                .map(portolan_watch::model::Listener::key)
                .collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&last.listeners),
            keys(&replay.listeners),
            "round {round}: current listeners differ from the replay of the events"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

#[test]
fn bad_arguments_get_clear_errors() {
    let dir = Scratch::new("errors");
    for (args, want) in [
        (vec!["watch", "--interval", "2x"], "--interval"),
        (vec!["watch", "--interval", "10ms"], "at least 100ms"),
        (vec!["watch", "--grace=-1s"], "--grace"),
        (vec!["watch", "--metrics", "nowhere"], "--metrics"),
        (
            vec!["watch", "--webhook", "ftp://127.0.0.1/x", "--db", "DB"],
            "http",
        ),
        (
            vec!["history", "--since", "yesterday", "--db", "DB"],
            "--since",
        ),
        (
            vec!["history", "--kind", "\x1b[2Jexploded", "--db", "DB"],
            "unknown event kind",
        ),
        (vec!["history", "--db", "DIR"], "DIR"),
        (
            vec!["diff", "--since", "2026-02-30", "--db", "DB"],
            "no such day",
        ),
    ] {
        let db = dir.path("e.sqlite");
        let args: Vec<String> = args
            .into_iter()
            .map(|a| match a {
                "DB" => db.to_string_lossy().into_owned(),
                "DIR" => dir.0.to_string_lossy().into_owned(),
                other => other.to_string(),
            })
            .collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = portolan(&argv);
        r.expect_code(2);
        let want = if want == "DIR" {
            dir.0.to_str().unwrap()
        } else {
            want
        };
        assert!(r.stderr.contains(want), "{argv:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains('\x1b') && !r.stderr.contains("panicked"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn many_hosts_share_one_postgresql_store_and_history_reads_one() {
    let Some(pg) = portolan_testbed::pg::PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("fleet");
    let dir = Scratch::new("fleet");
    let (port, l) = fixed_listener(Ipv4Addr::LOCALHOST);
    // Two agents write to one database at once, one naming the store on the command
    // line, the other through $PORTOLAN_STORE (which keeps a password out of `ps`).
    let web3 = Watcher::start(&[
        "--store",
        &url,
        "--interval",
        "200ms",
        "--host",
        "web-3",
        "--quiet",
        "--events",
        dir.path("web3.jsonl").to_str().unwrap(),
    ]);
    // The same host name twice is refused while the first agent runs.
    let r = portolan(&[
        "watch",
        "--store",
        &url,
        "--host",
        "web-3",
        "--samples",
        "1",
    ]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("already recording host web-3"),
        "{}",
        r.stderr
    );
    let mut web4 = Command::new(BIN);
    web4.args([
        "watch",
        "--interval",
        "200ms",
        "--host",
        "web-4",
        "--quiet",
        "--samples",
        "5",
    ])
    .env("PORTOLAN_STORE", &url)
    .env_remove("NO_COLOR");
    let r = common::run_cmd(web4);
    r.expect_code(0);
    let (op, opened) = fixed_listener(Ipv4Addr::LOCALHOST);
    wait_events(&dir.path("web3.jsonl"), op, 1, &web3);
    let (code, said) = web3.stop();
    assert_eq!(code, 0, "{said}");

    let r = portolan(&[
        "history", "--store", &url, "--host", "web-3", "--json", "--limit", "100000",
    ]);
    r.expect_code(0);
    let evs: Vec<Value> = r.json()["events"].as_array().unwrap().clone();
    assert!(
        evs.iter().all(|e| e["host"] == "web-3"),
        "another host's events"
    );
    assert_eq!(kinds(&on_port(&evs, port)), ["present"]);
    assert_eq!(kinds(&on_port(&evs, op)), ["opened"]);
    let mut all = Command::new(BIN);
    all.args(["history", "--jsonl", "--limit", "100000", &port.to_string()])
        .env("PORTOLAN_STORE", &url);
    let hosts: Vec<String> = common::run_cmd(all)
        .jsonl()
        .iter()
        .map(|e| e["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts, ["web-3", "web-4"]);
    // Another host's "now" is its last recorded state.
    let r = portolan(&["diff", "--store", &url, "--host", "web-3", "--since", "1h"]);
    r.expect_code(0);
    assert!(r.stdout.contains("web-3:"), "{}", r.stdout);
    assert!(r.stderr.contains("starts at"), "{}", r.stderr);
    // A wrong password or a dead server is a clear error, with no password in it.
    let dead = format!(
        "postgres://portolan:s3cret@127.0.0.1:{}/x",
        common::free_port()
    );
    let r = portolan(&["history", "--store", &dead]);
    r.expect_code(2);
    assert!(
        !r.stderr.contains("s3cret") && r.stderr.contains("127.0.0.1"),
        "{}",
        r.stderr
    );
    drop((l, opened));
}

#[test]
fn with_a_policy_only_what_it_forbids_alerts() {
    let dir = Scratch::new("policy");
    let (ap, allowed) = fixed_listener(Ipv4Addr::UNSPECIFIED);
    let policy = dir.path("ports.toml");
    std::fs::write(
        &policy,
        format!("[[allow]]\nport = {ap}\nproto = \"tcp\"\nrequired = true\n"),
    )
    .unwrap();
    let stream = dir.path("events.jsonl");
    let w = Watcher::start(&[
        "--db",
        dir.path("h.sqlite").to_str().unwrap(),
        "--interval",
        "200ms",
        "--grace",
        "0s",
        "--host",
        "policy",
        "--events",
        stream.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    // Forbidden: a new listener on all interfaces that no [[allow]] covers.
    let (fp, forbidden) = fixed_listener(Ipv4Addr::UNSPECIFIED);
    wait_events(&stream, fp, 1, &w);
    // The allowed one was there from the start (recorded as present, never alerted);
    // closing it is an alert, since the policy requires it.
    drop(allowed);
    wait_events(&stream, ap, 1, &w);
    let evs = events(&stream);
    assert_eq!(kinds(&on_port(&evs, ap)), ["closed"]);
    assert_eq!(kinds(&on_port(&evs, fp)), ["opened"]);
    let (code, said) = w.stop();
    assert_eq!(code, 0, "{said}");
    drop(forbidden);
}

/// Runs Python's sqlite3 on `db` with `script` (the tests' way to write SQLite files that
/// portolan did not write).
fn sqlite_script(db: &Path, script: &str) {
    let out = Command::new(PY)
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit(); c.close()",
        ])
        .arg(db)
        .arg(script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bytes and modification time of a file, and whether SQLite left companions beside it.
fn fingerprint(db: &Path) -> (Vec<u8>, std::time::SystemTime, bool) {
    let side = |s: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(s);
        Path::new(&p).exists()
    };
    (
        std::fs::read(db).unwrap(),
        std::fs::metadata(db).unwrap().modified().unwrap(),
        side("-wal") || side("-shm"),
    )
}

#[test]
fn history_and_diff_only_read() {
    let dir = Scratch::new("readonly");
    let readers = |db: &Path| {
        let db = db.to_str().unwrap().to_owned();
        [
            vec!["history".to_owned(), "--db".to_owned(), db.clone()],
            vec![
                "history".to_owned(),
                "--db".to_owned(),
                db.clone(),
                "22".to_owned(),
            ],
            vec![
                "diff".to_owned(),
                "--since".to_owned(),
                "1h".to_owned(),
                "--db".to_owned(),
                db.clone(),
            ],
            vec!["history".to_owned(), "--store".to_owned(), db],
        ]
    };

    // A path where nothing is: a clear error, and still nothing there.
    let missing = dir.path("sub/none.sqlite");
    for args in readers(&missing) {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = portolan(&argv);
        assert_ne!(r.code(), 0, "{argv:?}");
        assert!(
            r.stderr.contains(&format!(
                "no history at {}: start `portolan watch` first",
                missing.display()
            )),
            "{argv:?}: {}",
            r.stderr
        );
        assert!(!missing.exists(), "{argv:?} created {}", missing.display());
        assert!(!dir.path("sub").exists(), "{argv:?} created the directory");
    }

    // Another program's SQLite file: refused, byte for byte and mtime unchanged.
    let other = dir.path("notes.sqlite");
    sqlite_script(
        &other,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('keep me');",
    );
    let before = fingerprint(&other);
    thread::sleep(Duration::from_millis(20));
    for args in readers(&other) {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = portolan(&argv);
        assert_ne!(r.code(), 0, "{argv:?}");
        assert!(
            r.stderr.contains("is not a portolan history"),
            "{argv:?}: {}",
            r.stderr
        );
        assert_eq!(fingerprint(&other), before, "{argv:?} changed the file");
    }

    // A hostile file: portolan's tables, but `events` an endless recursive view. An error
    // within a few seconds, never a hang.
    let hostile = dir.path("hostile.sqlite");
    sqlite_script(
        &hostile,
        "CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_ms INTEGER NOT NULL);
         INSERT INTO schema_version VALUES (1, 0);
         CREATE TABLE hosts (host TEXT NOT NULL PRIMARY KEY, first_sample_ms INTEGER NOT NULL, last_sample_ms INTEGER NOT NULL);
         CREATE TABLE listeners (host TEXT NOT NULL, proto TEXT NOT NULL, address TEXT NOT NULL, port INTEGER NOT NULL, exposure TEXT NOT NULL, pid INTEGER, process TEXT, exe TEXT, user_name TEXT, uid INTEGER NOT NULL, unit TEXT, container TEXT, PRIMARY KEY (host, proto, address, port));
         CREATE VIEW events AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r)
           SELECT n AS id, 'h' AS host, n AS ts_ms, 'opened' AS kind, 'tcp' AS proto, '127.0.0.1' AS address, 1 AS port, 'loopback' AS exposure,
             NULL AS pid, NULL AS process, NULL AS exe, NULL AS user_name, 0 AS uid, NULL AS unit, NULL AS container,
             NULL AS previous_address, NULL AS previous_exposure, NULL AS previous_pid, NULL AS previous_process, NULL AS previous_exe,
             NULL AS previous_user_name, NULL AS previous_uid, NULL AS previous_unit, NULL AS previous_container, NULL AS note FROM r;",
    );
    let before = fingerprint(&hostile);
    for args in readers(&hostile) {
        let mut cmd = common::portolan_cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().unwrap();
        let ended = wait_for(Duration::from_secs(10), || {
            child.try_wait().unwrap().is_some()
        });
        if !ended {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still ran after 10 s");
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!child.wait().unwrap().success(), "{args:?}");
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "{args:?}: {:?}",
            start.elapsed()
        );
        assert!(
            err.contains("is not a portolan history: its events is a view, not a table"),
            "{args:?}: {err}"
        );
        assert_eq!(fingerprint(&hostile), before, "{args:?} changed the file");
    }
}

#[test]
fn another_user_reads_a_history_root_wrote() {
    if !common::root_or_skip("another_user_reads_a_history_root_wrote") {
        return;
    }
    let dir = Scratch::new("otheruser");
    let db = dir.path("history.sqlite");
    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            BIN,
        ])
        .args(args);
        common::run_cmd(cmd)
    };
    let dbs = db.to_str().unwrap();

    // Running: the -wal and -shm files exist; with both readable, nobody reads.
    let w = Watcher::start(&["--db", dbs, "--interval", "100ms", "--quiet"]);
    assert!(wait_for(Duration::from_secs(10), || {
        let mut shm = db.as_os_str().to_owned();
        shm.push("-shm");
        Path::new(&shm).exists()
    }));
    std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut shm = db.as_os_str().to_owned();
    shm.push("-shm");
    let shm = PathBuf::from(shm);
    // The index root's SQLite made (mode 0600 like the file then): a clear word on what
    // is needed.
    std::fs::set_permissions(&shm, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let r = as_nobody(&["history", "--db", dbs, "--json"]);
    assert_ne!(r.code(), 0);
    assert!(
        r.stderr.contains("needs read access to") && r.stderr.contains("-shm"),
        "{}",
        r.stderr
    );
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    for f in [PathBuf::from(wal), shm.clone()] {
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let r = as_nobody(&["history", "--db", dbs, "--json"]);
    r.expect_code(0);
    assert!(
        r.json()["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{}",
        r.stdout
    );
    let (code, said) = w.stop();
    assert_eq!(code, 0, "{said}");

    // Stopped: no -wal or -shm, a directory nobody may write: read all the same.
    assert!(!shm.exists());
    let r = as_nobody(&["history", "--db", dbs, "--json"]);
    r.expect_code(0);
    assert!(
        r.json()["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("readonly"), "{}", r.stderr);
}

/// Parses a scrape with Python's `prometheus_client` (the reference parser of the text
/// format), printing `name<TAB>labels as JSON<TAB>value` per sample; None when the module
/// is missing.
type Parsed = Result<Vec<(String, Value, f64)>, String>;

fn prometheus_parse(text: &str) -> Option<Parsed> {
    let code = "import sys,json\n\
                from prometheus_client.parser import text_string_to_metric_families as p\n\
                for f in p(sys.stdin.read()):\n\
                \x20   for s in f.samples:\n\
                \x20       print(json.dumps([s.name, s.labels, s.value]))\n";
    let have = Command::new(PY)
        .args(["-c", "import prometheus_client.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        return None;
    }
    let mut child = Command::new(PY)
        .args(["-c", code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Some(Err(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    Some(Ok(String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v[0].as_str().unwrap().to_owned(),
                v[1].clone(),
                v[2].as_f64().unwrap(),
            )
        })
        .collect()))
}

#[test]
fn metrics_labels_show_control_bytes_of_process_names() {
    // A real process whose name holds ESC, a tab, a quote and a backslash.
    let port = free_port();
    let name = "p\x1b[31m\t\"\\y";
    let code = format!(
        "import socket,time\n\
         open('/proc/self/comm','w').write('p\\x1b[31m\\t\"\\\\y')\n\
         s=socket.socket(socket.AF_INET)\n\
         s.bind(('127.0.0.1',{port}))\n\
         s.listen(8)\n\
         print('up',flush=True)\n\
         time.sleep(120)\n"
    );
    let mut py = Command::new(PY)
        .args(["-c", &code])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(py.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "up");
    let comm = common::comm(py.id());
    assert_eq!(comm, name, "the kernel kept the name");

    let dir = Scratch::new("metricsnames");
    let db = dir.path("h.sqlite");
    let w = Watcher::start(&[
        "--db",
        db.to_str().unwrap(),
        "--interval",
        "100ms",
        "--quiet",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let mut scrape = String::new();
    assert!(wait_for(Duration::from_secs(10), || {
        scrape = w.metrics();
        scrape.contains(&format!("port=\"{port}\""))
    }));
    let _ = py.kill();
    let _ = py.wait();
    let body = scrape.split("\r\n\r\n").nth(1).unwrap().to_owned();

    // No raw control character but the line ends, and our line reads as it should.
    assert!(
        !body.chars().any(|c| c != '\n' && c.is_control()),
        "raw control bytes in the scrape:\n{body:?}"
    );
    let ours = body
        .lines()
        .find(|l| l.starts_with("portolan_listeners{") && l.contains(&format!("port=\"{port}\"")))
        .unwrap_or_else(|| panic!("no listener line for {port}:\n{body}"));
    // Made visible (`\x1b`, `\t`, the backslash doubled as in every escaped name), then
    // the format's own escapes (backslash, quote).
    assert!(ours.contains(r#"process="p\\x1b[31m\\t\"\\\\y""#), "{ours}");

    // The reference parser reads the scrape, and reads the name as the visible text.
    match prometheus_parse(&body) {
        Some(Ok(samples)) => {
            let s = samples
                .iter()
                .find(|(n, l, _)| {
                    n == "portolan_listeners" && l["port"].as_str() == Some(&port.to_string())
                })
                .expect("our listener among the parsed samples");
            assert_eq!(s.1["process"], r#"p\x1b[31m\t"\\y"#, "{s:?}");
        }
        Some(Err(e)) => panic!("prometheus_client refused the scrape: {e}\n{body}"),
        None => portolan_testsupport::skip_or_fail(
            "python3-prometheus-client is not installed (the scrape was checked by line only)",
        ),
    }
    drop(w);
}

/// One churning listener place: opens, holds, closes, waits, again, on one address and
/// port, counting what it did.
struct Churner {
    ip: Ipv4Addr,
    port: u16,
    opened: Arc<std::sync::atomic::AtomicU32>,
    closed: Arc<std::sync::atomic::AtomicU32>,
}

#[test]
fn fast_churn_records_only_what_happened() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let dir = Scratch::new("churn");
    let db = dir.path("h.sqlite");
    let stream = dir.path("events.jsonl");
    let w = Watcher::start(&[
        "--db",
        db.to_str().unwrap(),
        "--events",
        stream.to_str().unwrap(),
        "--interval",
        "100ms",
        "--grace",
        "0s",
        "--quiet",
    ]);
    thread::sleep(Duration::from_millis(300));

    // Places on addresses of our own (127.0.77.0/24), each with a port no other place of
    // ours uses (the same program on one port at two addresses would be an exposure
    // change). Places 1-4 live slowly (0.5 s up, 0.5 s down: every change is seen, so the
    // store must hold exactly what they did); places 101-108 flicker (up 0-100 ms, down
    // 0-40 ms), so sockets close while a sample is being taken.
    let mut ports = std::collections::HashSet::new();
    let mut places = Vec::new();
    for last in (1..=4u8).chain(101..=108) {
        let ip = Ipv4Addr::new(127, 0, 77, last);
        let port = loop {
            let l = TcpListener::bind((ip, 0)).unwrap();
            let p = l.local_addr().unwrap().port();
            if ports.insert(p) {
                break p;
            }
        };
        places.push(Churner {
            ip,
            port,
            opened: Arc::new(AtomicU32::new(0)),
            closed: Arc::new(AtomicU32::new(0)),
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = places
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (ip, port) = (p.ip, p.port);
            let (opened, closed) = (Arc::clone(&p.opened), Arc::clone(&p.closed));
            let stop = Arc::clone(&stop);
            let slow = ip.octets()[3] < 100;
            thread::spawn(move || {
                let mut seed = u64::from(std::process::id()) * 31 + i as u64;
                let mut rand = |n: u64| {
                    seed = seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (seed >> 33) % n
                };
                while !stop.load(Ordering::Relaxed) {
                    let Ok(l) = TcpListener::bind((ip, port)) else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    opened.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(if slow { 500 } else { rand(100) }));
                    drop(l);
                    closed.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(if slow { 500 } else { rand(40) }));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Every socket is closed: a few samples see that, then the daemon stops.
    thread::sleep(Duration::from_millis(600));
    let (code, said) = w.stop();
    assert_eq!(code, 0, "{said}");

    let all = events(&stream);
    let me = u64::from(std::process::id());
    let mut flickered = 0;
    for p in &places {
        let evs: Vec<&Value> = all
            .iter()
            .filter(|e| {
                e["listener"]["address"] == p.ip.to_string()
                    && e["listener"]["port"].as_u64() == Some(u64::from(p.port))
            })
            .collect();
        let place = format!("{}:{}", p.ip, p.port);
        for e in &evs {
            let kind = e["kind"].as_str().unwrap();
            assert!(
                kind == "opened" || kind == "closed",
                "{place}: a {kind} event (an owner that could not be found read as a change?): {e}"
            );
            assert_eq!(
                e["listener"]["owner"]["pid"].as_u64(),
                Some(me),
                "{place}: {kind} without our pid: {e}"
            );
        }
        let ks: Vec<&str> = evs.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        for (i, k) in ks.iter().enumerate() {
            let want = if i % 2 == 0 { "opened" } else { "closed" };
            assert_eq!(*k, want, "{place}: event {i} of {ks:?}");
        }
        let (opened, closed) = (
            p.opened.load(Ordering::SeqCst),
            p.closed.load(Ordering::SeqCst),
        );
        assert_eq!(opened, closed);
        let n = u32::try_from(ks.len()).unwrap();
        if p.ip.octets()[3] < 100 {
            // Slow places: events recorded == events caused.
            assert_eq!(n, opened + closed, "{place}: {ks:?}");
        } else {
            assert!(
                n <= opened + closed,
                "{place}: {n} events for {opened} sockets"
            );
            flickered += n;
        }
    }
    assert!(
        flickered > 50,
        "the flickering places were hardly seen ({flickered} events)"
    );
}
