//! `portolan sentry` against real scanners, as root, in network namespaces of the test's
//! own: each test builds a guarded host `g` and a scanning (or ordinary) host `s` joined by
//! a veth pair, runs the real binary in `g` and the real tool in `s`, and reads the scan
//! events the sentry writes (`--events`, JSON lines), as a user's script would.
//!
//! ```text
//!   s 198.18.94.2 (+ .10-.21 for many-source tests)  --veth--  g 198.18.94.1 (+ 198.18.95.1-64 on lo)
//!     2001:2:0:5e::2                                              2001:2:0:5e::1
//! ```
//!
//! `g` listens on TCP 22, 80 and 443 and UDP 53 (std sockets; nothing else): what a scan
//! finds open. Each scanner test checks what a user would: the scan is reported once it
//! starts, with the right kind (syn, connect, fin, null, xmas, udp), within 10 probes and
//! 1 s of its first probe for a fast scan (2 minutes for nmap -T2), naming the tool where
//! the tool leaves a trait. The ordinary-traffic test checks the other side: hard use of
//! open ports, a client retrying a closed port, DNS and NTP answers, a browser's pattern
//! and the answers to `g`'s own outbound connections give no alarm at all.
//!
//! Needs root, `ip`, `nft`, nmap, masscan and zmap (Debian's packages; `scripts/test.sh`
//! installs them) and python3; RustScan when `PORTOLAN_RUSTSCAN` names its binary or it is
//! on PATH (the test setup builds it). Without them a test says so and returns; under
//! CI=true it fails.

#![allow(clippy::format_push_string, clippy::many_single_char_names)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{python, BIN};
use portolan_testsupport::{all, program, skip_unless, Netns};
use serde_json::Value;

const G4: &str = "198.18.94.1";
const S4: &str = "198.18.94.2";
const G6: &str = "2001:2:0:5e::1";
const S6: &str = "2001:2:0:5e::2";
/// The many-source tests' extra addresses of `s`: 198.18.94.10 onwards.
const EXTRA_BASE: u8 = 10;

fn ready() -> Result<(), String> {
    all([
        Netns::ready(),
        program("nft"),
        program("nmap"),
        program("masscan"),
        program("zmap"),
        program("python3"),
    ])
}

/// A directory of the test's own under the system's temporary directory.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portolan-sentry-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the test's directory");
    d
}

/// The guarded host, the other host, and what `g` listens on.
struct Lab {
    g: Netns,
    s: Netns,
    dir: PathBuf,
    /// The MAC address of `g`'s end of the link (masscan and zmap build frames).
    g_mac: String,
    _tcp: Vec<TcpListener>,
    _udp: Vec<UdpSocket>,
    stop: Arc<AtomicBool>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let g = Netns::with_prefix("pse", &format!("{tag}g"));
        let s = Netns::with_prefix("pse", &format!("{tag}s"));
        g.ip(&[
            "link", "add", "vg", "type", "veth", "peer", "name", "vs", "netns", &s.name,
        ]);
        for (ns, dev, v4, v6) in [(&g, "vg", G4, G6), (&s, "vs", S4, S6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        // 64 more addresses of g's (a sweep's targets), routed from s.
        for i in 1..=64u8 {
            g.ip(&["addr", "add", &format!("198.18.95.{i}/32"), "dev", "lo"]);
        }
        s.ip(&["route", "add", "198.18.95.0/24", "via", G4]);
        let out = Command::new("ip")
            .args(["-n", &g.name, "-j", "link", "show", "vg"])
            .output()
            .expect("ip link show");
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        let g_mac = v[0]["address"].as_str().expect("a MAC address").to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let (tcp, udp) = g.run_in(|| {
            let mut tcp = Vec::new();
            for addr in [
                format!("{G4}:22"),
                format!("{G4}:80"),
                format!("{G4}:443"),
                format!("[{G6}]:22"),
            ] {
                tcp.push(TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
            }
            let udp = vec![UdpSocket::bind(format!("{G4}:53")).expect("bind udp 53")];
            (tcp, udp)
        });
        // Accept and close, so connections to open ports complete as a server's would.
        for l in &tcp {
            let l = l.try_clone().expect("clone listener");
            l.set_nonblocking(true).expect("nonblocking");
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut c, _)) => {
                            let _ = c.write_all(b"hello\n");
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        Lab {
            g,
            s,
            dir: temp_dir(tag),
            g_mac,
            _tcp: tcp,
            _udp: udp,
            stop,
        }
    }

    /// Adds `n` more addresses to `s` (198.18.94.10 onwards).
    fn extra_sources(&self, n: u8) -> Vec<String> {
        (0..n)
            .map(|i| {
                let a = format!("198.18.94.{}", EXTRA_BASE + i);
                self.s.ip(&["addr", "add", &format!("{a}/24"), "dev", "vs"]);
                a
            })
            .collect()
    }

    /// Starts `portolan sentry` in `g` and waits for its start.
    fn sentry(&self, extra: &[&str]) -> Sentry {
        let events = self.dir.join("events.jsonl");
        let _ = std::fs::remove_file(&events);
        let stderr = self.dir.join("sentry.err");
        let mut c = self.g.command(BIN);
        c.args(["sentry", "--events"])
            .arg(&events)
            .arg("--db")
            .arg(self.dir.join("history.sqlite"))
            .args(["--for", "300s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = c.spawn().expect("start portolan sentry");
        let s = Sentry {
            child,
            events,
            stderr,
        };
        assert!(
            s.wait_event(Duration::from_secs(20), |e| e["event"] == "started")
                .is_some(),
            "the sentry did not start: {}",
            s.stderr_text()
        );
        s
    }

    /// Starts a command in `s`, output discarded.
    fn spawn_in_s(&self, program: &str, args: &[&str]) -> Child {
        self.s
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A sentry killed with its namespace (SIGKILL) cannot remove its lock file.
        {
            use std::os::unix::fs::MetadataExt as _;
            if let Ok(m) = std::fs::metadata(format!("/run/netns/{}", self.g.name)) {
                let _ = std::fs::remove_file(format!("/run/portolan/sentry-{}.lock", m.ino()));
            }
        }
        // The table lives in g's namespace and goes with it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Sentry {
    child: Child,
    events: PathBuf,
    stderr: PathBuf,
}

impl Sentry {
    fn all_events(&self) -> Vec<Value> {
        read_events(&self.events)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_event(&self, timeout: Duration, want: impl Fn(&Value) -> bool) -> Option<Value> {
        let start = Instant::now();
        loop {
            if let Some(e) = self.all_events().into_iter().find(|e| want(e)) {
                return Some(e);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_scan(&self, timeout: Duration) -> Value {
        self.wait_event(timeout, |e| e["event"] == "scan" && e["phase"] == "start")
            .unwrap_or_else(|| {
                panic!(
                    "no scan reported within {timeout:?}\nevents: {:#?}\nstderr: {}",
                    self.all_events(),
                    self.stderr_text()
                )
            })
    }

    /// SIGTERM, then the exit status and stderr.
    fn stop(mut self) -> (Option<i32>, String) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
            .expect("a pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                break st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the sentry did not stop"
            );
            thread::sleep(Duration::from_millis(20));
        };
        (status.code(), self.stderr_text())
    }
}

impl Drop for Sentry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_events(path: &Path) -> Vec<Value> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What every fast scan's start must say.
fn check_fast(e: &Value, kind: &str, tool: Option<&str>) {
    assert_eq!(e["kinds"][0], kind, "{e:#}");
    let probes = e["probes_to_detect"].as_u64().expect("probes_to_detect");
    assert!(probes <= 10, "detected after {probes} probes: {e:#}");
    let ms = e["detected_ms"].as_i64().unwrap() - e["started_ms"].as_i64().unwrap();
    assert!(ms <= 1000, "detected {ms} ms after the first probe: {e:#}");
    if let Some(t) = tool {
        assert_eq!(e["tool"]["tool"], t, "{e:#}");
        assert!(!e["tool"]["because"].as_str().unwrap().is_empty());
    }
}

/// Runs one scanner from `s` against `g`, waits for the report, stops the scanner.
fn scanned_by(
    tag: &str,
    program: &str,
    args: &[&str],
    sentry_args: &[&str],
) -> (Lab, Sentry, Value) {
    let lab = Lab::new(tag);
    let sentry = lab.sentry(sentry_args);
    let scanner = Kill(lab.spawn_in_s(program, args));
    let e = sentry.wait_scan(Duration::from_secs(60));
    drop(scanner);
    (lab, sentry, e)
}

#[test]
fn nmap_syn_scan_is_named_counted_and_exported() {
    if !skip_unless(ready()) {
        return;
    }
    let (lab, sentry, e) = scanned_by(
        "syn",
        "nmap",
        &["-sS", "-T4", "--top-ports", "1000", "-n", "-Pn", G4],
        &["--metrics", "127.0.0.1:9479"],
    );
    check_fast(&e, "syn", Some("nmap"));
    assert_eq!(e["sources"][0], S4);
    assert_eq!(e["detector"], "trw");
    // The metrics endpoint counts it.
    let body = lab.g.run_in(|| {
        let mut c = TcpStream::connect("127.0.0.1:9479").expect("metrics endpoint");
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    });
    assert!(
        body.contains("portolan_sentry_scans_total{detector=\"trw\"} 1"),
        "{body}"
    );
    assert!(body.contains("portolan_sentry_packets_total"), "{body}");
    // When the scan is over (30 s of quiet, or the sentry stopping), its end names every
    // port it tried; the stop line counts it.
    let (code, err) = sentry.stop();
    assert_eq!(code, Some(0), "{err}");
    let end = read_events(&lab.dir.join("events.jsonl"))
        .into_iter()
        .find(|e| e["event"] == "scan" && e["phase"] == "end")
        .expect("an end event");
    assert!(end["ports_total"].as_u64().unwrap() >= 10, "{end:#}");
    assert!(err.contains("1 scan(s) detected"), "{err}");
    assert!(err.contains("scan started: 198.18.94.2"), "{err}");
    // The history store has it, and `portolan history` shows it beside listener changes.
    let hist = Command::new(BIN)
        .args(["history", "--scans", "--json", "--db"])
        .arg(lab.dir.join("history.sqlite"))
        .output()
        .expect("portolan history");
    let doc: Value = serde_json::from_slice(&hist.stdout).unwrap_or_else(|e| {
        panic!(
            "history --json: {e}: {}{}",
            String::from_utf8_lossy(&hist.stdout),
            String::from_utf8_lossy(&hist.stderr)
        )
    });
    let scans = doc["scans"].as_array().expect("a scans list");
    assert_eq!(scans.len(), 1, "{doc:#}");
    assert_eq!(scans[0]["sources"][0], S4, "{doc:#}");
    assert_eq!(scans[0]["kinds"][0], "syn", "{doc:#}");
    assert_eq!(scans[0]["tool"], "nmap", "{doc:#}");
    assert!(scans[0]["ended_ms"].as_i64().is_some(), "{doc:#}");
    let text = Command::new(BIN)
        .args(["history", "--db"])
        .arg(lab.dir.join("history.sqlite"))
        .output()
        .expect("portolan history");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("scan") && text.contains(S4) && text.contains("likely nmap"),
        "{text}"
    );
    // Every line of the stream matches the schema users read it by.
    if skip_unless(program("python3").and_then(|()| {
        Command::new("python3")
            .args(["-c", "import jsonschema"])
            .status()
            .ok()
            .filter(std::process::ExitStatus::success)
            .map(drop)
            .ok_or_else(|| "python3's jsonschema module is missing".to_owned())
    })) {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("python3")
            .arg(manifest.join("tests/schema_check.py"))
            .arg(manifest.join("schemas"))
            .arg("sentry#event")
            .arg(lab.dir.join("events.jsonl"))
            .arg("--lines")
            .output()
            .expect("schema_check.py");
        assert!(
            out.status.success(),
            "the events do not match sentry.schema.json: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn nmap_connect_scan() {
    if !skip_unless(ready()) {
        return;
    }
    let (_lab, _s, e) = scanned_by(
        "con",
        "nmap",
        &["-sT", "-T4", "--top-ports", "1000", "-n", "-Pn", G4],
        &[],
    );
    check_fast(&e, "connect", None);
}

#[test]
fn nmap_fin_null_and_xmas_scans() {
    if !skip_unless(ready()) {
        return;
    }
    for (flag, kind) in [("-sF", "fin"), ("-sN", "null"), ("-sX", "xmas")] {
        let (_lab, _s, e) = scanned_by(
            &kind[..1],
            "nmap",
            &[flag, "-T4", "--top-ports", "1000", "-n", "-Pn", G4],
            &[],
        );
        check_fast(&e, kind, Some("nmap"));
    }
}

#[test]
fn nmap_udp_scan() {
    if !skip_unless(ready()) {
        return;
    }
    let (_lab, _s, e) = scanned_by(
        "udp",
        "nmap",
        &["-sU", "-T4", "--top-ports", "100", "-n", "-Pn", G4],
        &[],
    );
    check_fast(&e, "udp", Some("nmap"));
}

#[test]
fn nmap_slow_scan_is_found_within_two_minutes() {
    if !skip_unless(ready()) {
        return;
    }
    let (_lab, _s, e) = scanned_by(
        "t2",
        "nmap",
        &["-sS", "-T2", "--top-ports", "1000", "-n", "-Pn", G4],
        &[],
    );
    assert_eq!(e["kinds"][0], "syn", "{e:#}");
    let ms = e["detected_ms"].as_i64().unwrap() - e["started_ms"].as_i64().unwrap();
    assert!(ms <= 120_000, "{ms} ms: {e:#}");
    assert!(e["probes_to_detect"].as_u64().unwrap() <= 10, "{e:#}");
}

#[test]
fn nmap_over_ipv6() {
    if !skip_unless(ready()) {
        return;
    }
    let (_lab, _s, e) = scanned_by(
        "v6",
        "nmap",
        &["-6", "-sS", "-T4", "--top-ports", "1000", "-n", "-Pn", G6],
        &[],
    );
    check_fast(&e, "syn", Some("nmap"));
    assert_eq!(e["sources"][0], S6);
}

#[test]
fn masscan() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new("mas");
    let sentry = lab.sentry(&[]);
    let mac = lab.g_mac.clone();
    let scanner = Kill(lab.spawn_in_s(
        "masscan",
        &[
            "-p",
            "1-2000",
            G4,
            "--rate",
            "2000",
            "--wait",
            "0",
            "-e",
            "vs",
            "--router-mac",
            &mac,
        ],
    ));
    let e = sentry.wait_scan(Duration::from_secs(60));
    drop(scanner);
    check_fast(&e, "syn", Some("masscan"));
}

#[test]
fn zmap_sweep() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new("zm");
    let sentry = lab.sentry(&[]);
    // zmap's built-in blacklist covers 198.18.0.0/15: an empty one of our own.
    let bl = lab.dir.join("blacklist");
    std::fs::write(&bl, "").unwrap();
    let mac = lab.g_mac.clone();
    let scanner = Kill(lab.spawn_in_s(
        "zmap",
        &[
            "-p",
            "8080",
            "198.18.95.0/26",
            "-B",
            "1M",
            "-c",
            "1",
            "-i",
            "vs",
            "-G",
            &mac,
            "-b",
            bl.to_str().unwrap(),
        ],
    ));
    let e = sentry.wait_scan(Duration::from_secs(60));
    drop(scanner);
    check_fast(&e, "syn", Some("zmap"));
    assert!(e["addresses_total"].as_u64().unwrap() >= 5, "{e:#}");
}

#[test]
fn portolan_scans_syn_and_connect() {
    if !skip_unless(ready()) {
        return;
    }
    let (_lab, _s, e) = scanned_by(
        "pss",
        BIN,
        &["scan", "-sS", G4, "-p", "1-1000", "-n", "-Pn"],
        &[],
    );
    check_fast(&e, "syn", Some("portolan"));
    let (_lab, _s, e) = scanned_by("psc", BIN, &["scan", G4, "-p", "1-1000", "-n", "-Pn"], &[]);
    check_fast(&e, "connect", None);
}

/// RustScan's binary: `PORTOLAN_RUSTSCAN`, else `rustscan` on PATH.
fn rustscan() -> Option<String> {
    if let Ok(p) = std::env::var("PORTOLAN_RUSTSCAN") {
        return Some(p);
    }
    program("rustscan").ok().map(|()| "rustscan".to_owned())
}

#[test]
fn rustscan_connect_bursts() {
    if !skip_unless(ready().and_then(|()| {
        rustscan()
            .map(drop)
            .ok_or_else(|| "rustscan is not installed (PORTOLAN_RUSTSCAN or PATH)".to_owned())
    })) {
        return;
    }
    let bin = rustscan().unwrap();
    let lab = Lab::new("rs");
    let sentry = lab.sentry(&[]);
    let mut scanner =
        Kill(lab.spawn_in_s(&bin, &["-a", G4, "-r", "1-2000", "-g", "--ulimit", "5000"]));
    let e = sentry.wait_scan(Duration::from_secs(60));
    check_fast(&e, "connect", None);
    // RustScan's trait (ports in ascending order, thousands at once) is in the scan's
    // report once enough of its connects came in: at its end.
    assert!(common::wait_for(Duration::from_secs(60), || scanner
        .0
        .try_wait()
        .ok()
        .flatten()
        .is_some()));
    let (code, err) = sentry.stop();
    assert_eq!(code, Some(0), "{err}");
    let end = read_events(&lab.dir.join("events.jsonl"))
        .into_iter()
        .find(|e| e["event"] == "scan" && e["phase"] == "end")
        .expect("an end event");
    assert_eq!(end["kinds"][0], "connect", "{end:#}");
    assert_eq!(end["tool"]["tool"], "rustscan", "{end:#}");
}

#[test]
fn many_sources_a_few_ports_each_are_one_distributed_scan() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new("dist");
    let srcs = lab.extra_sources(12);
    let sentry = lab.sentry(&[]);
    // Each source tries three closed ports, a different three: none is a scanner alone.
    let mut script = String::from("import socket\n");
    for (i, src) in srcs.iter().enumerate() {
        for k in 0..3 {
            let port = 2000 + i * 10 + k;
            script.push_str(&format!(
                "s = socket.socket(); s.settimeout(1); s.bind(('{src}', 0))\ntry:\n    s.connect(('{G4}', {port}))\nexcept OSError:\n    pass\ns.close()\n"
            ));
        }
    }
    let st = lab
        .s
        .command(python())
        .args(["-c", &script])
        .status()
        .expect("python");
    assert!(st.success());
    let e = sentry.wait_scan(Duration::from_secs(10));
    assert_eq!(e["detector"], "distributed", "{e:#}");
    assert!(e["sources_total"].as_u64().unwrap() >= 4, "{e:#}");
    assert_eq!(e["kinds"][0], "connect");
    // No single source was reported.
    let singles = sentry
        .all_events()
        .into_iter()
        .filter(|e| e["event"] == "scan" && e["detector"] != "distributed")
        .count();
    assert_eq!(singles, 0);
}

#[test]
fn ordinary_traffic_gives_no_alarm() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new("ord");
    let srcs = lab.extra_sources(12);
    // Servers in s that g's own traffic goes to: DNS and NTP answer each datagram, a TCP
    // server sends a page on each connection.
    let servers = Kill(
        lab.s
            .command(python())
            .args([
                "-c",
                &format!(
                    "import socket, threading\n\
def udp(port):\n    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('{S4}', port))\n    while True:\n        d, a = u.recvfrom(2048); u.sendto(d[:2] + b'answer' * 8, a)\n\
for p in (53, 123):\n    threading.Thread(target=udp, args=(p,), daemon=True).start()\n\
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('{S4}', 8080)); t.listen(512)\n\
while True:\n    c, _ = t.accept(); c.sendall(b'x' * 20000); c.close()\n"
                ),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("servers in s"),
    );
    thread::sleep(Duration::from_millis(500));
    let sentry = lab.sentry(&[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Many clients hitting the open ports hard, and a browser's pattern (several parallel
    // connections to 443 and 80, again and again), from 12 addresses.
    let mut clients = String::from("import socket, threading, time\n");
    clients.push_str(&format!(
        "def hammer(src):\n    for i in range(150):\n        for port in (80, 443, 22):\n            s = socket.socket(); s.settimeout(2); s.bind((src, 0))\n            try:\n                s.connect(('{G4}', port)); s.recv(16)\n            except OSError:\n                pass\n            s.close()\n\
def browser(src):\n    for i in range(20):\n        conns = []\n        for port in (443,) * 6 + (80,) * 2:\n            s = socket.socket(); s.settimeout(2); s.bind((src, 0))\n            try:\n                s.connect(('{G4}', port))\n            except OSError:\n                pass\n            conns.append(s)\n        time.sleep(0.05)\n        for s in conns:\n            s.close()\n\
def retry_closed(src):\n    for i in range(30):\n        s = socket.socket(); s.settimeout(1); s.bind((src, 0))\n        try:\n            s.connect(('{G4}', 8443))\n        except OSError:\n            pass\n        s.close(); time.sleep(0.3)\n\
ts = []\n"
    ));
    for (i, src) in srcs.iter().enumerate() {
        let f = match i % 3 {
            0 => "hammer",
            1 => "browser",
            _ => "retry_closed",
        };
        clients.push_str(&format!(
            "ts.append(threading.Thread(target={f}, args=('{src}',)))\n"
        ));
    }
    clients.push_str("[t.start() for t in ts]\n[t.join() for t in ts]\n");
    let mut client_proc = Kill(
        lab.s
            .command(python())
            .args(["-c", &clients])
            .stdin(Stdio::null())
            .spawn()
            .expect("clients in s"),
    );
    // g's own outbound traffic: DNS and NTP queries, TCP downloads; the answers come back
    // to g's ephemeral ports.
    let own = Kill(
        lab.g
            .command(python())
            .args([
                "-c",
                &format!(
                    "import socket, time\n\
for i in range(200):\n    for port in (53, 123):\n        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(1)\n        u.sendto(b'\\x12\\x34query', ('{S4}', port))\n        try:\n            u.recvfrom(2048)\n        except OSError:\n            pass\n        u.close()\n    t = socket.create_connection(('{S4}', 8080), timeout=2)\n    while t.recv(65536):\n        pass\n    t.close()\n    time.sleep(0.02)\n"
                ),
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("g's own traffic"),
    );
    while Instant::now() < deadline {
        if client_proc.0.try_wait().ok().flatten().is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    drop(own);
    drop(servers);
    let (code, err) = sentry.stop();
    assert_eq!(code, Some(0), "{err}");
    let scans: Vec<Value> = read_events(&lab.dir.join("events.jsonl"))
        .into_iter()
        .filter(|e| e["event"] == "scan")
        .collect();
    assert!(scans.is_empty(), "false alarm: {scans:#?}");
    // It did see the traffic.
    let read: u64 = err
        .lines()
        .find_map(|l| l.split("stopped: ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(read >= 1000, "only {read} packets read: {err}");
}

#[test]
fn blocking_works_expires_and_spares_the_allow_list() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new("blk");
    let srcs = lab.extra_sources(1);
    let allowed = srcs[0].clone();
    let exec_out = lab.dir.join("exec.out");
    let sentry = lab.sentry(&[
        "--block",
        "6s",
        "--allow",
        &allowed,
        "--exec",
        &format!(
            "echo \"$PORTOLAN_EVENT $PORTOLAN_SOURCES $PORTOLAN_SCAN_KINDS\" >> {}",
            exec_out.display()
        ),
    ]);
    let reach = |src: &str| -> bool {
        let st = lab
            .s
            .command(python())
            .args([
                "-c",
                &format!(
                    "import socket, sys\ns = socket.socket(); s.settimeout(1); s.bind(('{src}', 0))\ntry:\n    s.connect(('{G4}', 80)); sys.exit(0)\nexcept OSError:\n    sys.exit(1)\n"
                ),
            ])
            .status()
            .expect("python");
        st.success()
    };
    assert!(
        reach(S4) && reach(&allowed),
        "g:80 not reachable before any scan"
    );
    let scanner = Kill(lab.spawn_in_s(
        "nmap",
        &[
            "-sS",
            "-T4",
            "--top-ports",
            "200",
            "-n",
            "-Pn",
            "-S",
            S4,
            "-e",
            "vs",
            G4,
        ],
    ));
    let e = sentry.wait_scan(Duration::from_secs(30));
    drop(scanner);
    assert_eq!(e["blocked"][0], S4, "{e:#}");
    assert!(e["blocked_until_ms"].as_i64().is_some());
    // The block is written by the sentry's own thread: give it a moment, no more.
    assert!(
        common::wait_for(Duration::from_secs(5), || !reach(S4)),
        "the scanner still reaches g:80"
    );
    // `sentry status` lists it.
    let st = lab
        .g
        .command(BIN)
        .args(["sentry", "status"])
        .output()
        .expect("sentry status");
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains(S4) && text.contains("blocked"), "{text}");
    // The allow-listed address scans too: reported, never blocked.
    let scanner = Kill(lab.spawn_in_s(
        "nmap",
        &[
            "-sS",
            "-T4",
            "--top-ports",
            "200",
            "-n",
            "-Pn",
            "-S",
            &allowed,
            "-e",
            "vs",
            G4,
        ],
    ));
    let e2 = sentry
        .wait_event(Duration::from_secs(30), |e| {
            e["event"] == "scan" && e["phase"] == "start" && e["sources"][0] == allowed.as_str()
        })
        .expect("the allow-listed scan is reported");
    drop(scanner);
    assert_eq!(e2["blocked"].as_array().map(Vec::len), Some(0), "{e2:#}");
    assert_eq!(e2["not_blocked"][0]["reason"], "allowed", "{e2:#}");
    assert!(reach(&allowed));
    // The block expires by itself.
    assert!(
        common::wait_for(Duration::from_secs(12), || reach(S4)),
        "the block did not expire"
    );
    // --exec ran once per scan start, with the scan in its environment.
    let ran = std::fs::read_to_string(&exec_out).unwrap_or_default();
    assert!(ran.contains(&format!("scan_start {S4} syn")), "{ran}");
    assert!(ran.contains(&format!("scan_start {allowed} syn")), "{ran}");
    let (code, err) = sentry.stop();
    assert_eq!(code, Some(0), "{err}");
    // Its lock under /run went with it.
    let ino = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(format!("/run/netns/{}", lab.g.name))
            .unwrap()
            .ino()
    };
    assert!(
        !Path::new(&format!("/run/portolan/sentry-{ino}.lock")).exists(),
        "the lock file was left behind"
    );
    // remove deletes the table.
    let out = lab
        .g
        .command(BIN)
        .args(["sentry", "remove"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = lab
        .g
        .command("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&t.stdout).contains("portolan_sentry"));
}

#[test]
fn without_privilege_it_says_what_it_needs() {
    if !skip_unless(all([portolan_testsupport::root(), program("setpriv")])) {
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            BIN,
            "sentry",
            "--for",
            "1s",
        ])
        .output()
        .expect("setpriv");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("root") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );
}

#[test]
fn af_packet_fallback_finds_scans_and_ignores_answers_to_our_own_queries() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new("afp");
    // A DNS-like server in s that g queries from many ephemeral ports: without conntrack,
    // the fallback must know these answers are answers.
    let server = Kill(
        lab.s
            .command(python())
            .args([
                "-c",
                &format!(
                    "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('{S4}', 53))\nwhile True:\n    d, a = u.recvfrom(2048); u.sendto(d, a)\n"
                ),
            ])
            .spawn()
            .expect("server"),
    );
    thread::sleep(Duration::from_millis(300));
    let sentry = lab.sentry(&["--capture", "packet"]);
    let started = sentry
        .wait_event(Duration::from_secs(5), |e| e["event"] == "started")
        .unwrap();
    assert_eq!(started["capture"], "AF_PACKET", "{started:#}");
    let st = lab
        .g
        .command(python())
        .args([
            "-c",
            &format!(
                "import socket\nfor i in range(300):\n    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(1)\n    u.sendto(b'q%d' % i, ('{S4}', 53)); u.recvfrom(100); u.close()\n"
            ),
        ])
        .status()
        .expect("queries");
    assert!(st.success());
    thread::sleep(Duration::from_millis(300));
    let early: Vec<Value> = sentry
        .all_events()
        .into_iter()
        .filter(|e| e["event"] == "scan")
        .collect();
    assert!(early.is_empty(), "answers taken for a scan: {early:#?}");
    drop(server);
    for (flag, kind) in [("-sS", "syn"), ("-sF", "fin")] {
        let scanner = Kill(lab.spawn_in_s(
            "nmap",
            &[flag, "-T4", "--top-ports", "300", "-n", "-Pn", G4],
        ));
        let e = sentry
            .wait_event(Duration::from_secs(30), |e| {
                e["event"] == "scan" && e["phase"] == "start" && e["kinds"][0] == kind
            })
            .unwrap_or_else(|| panic!("{flag} not reported: {:#?}", sentry.all_events()));
        drop(scanner);
        check_fast(&e, kind, Some("nmap"));
        // The next scan from the same source must be a new one: let this one end.
        if flag == "-sS" {
            assert!(
                sentry
                    .wait_event(Duration::from_secs(45), |e| e["event"] == "scan"
                        && e["phase"] == "end")
                    .is_some(),
                "the SYN scan did not end"
            );
        }
    }
}

#[test]
fn never_blocks_its_gateway_and_a_second_sentry_is_refused() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new("gw");
    // s is g's default gateway: blocking it would cut g off.
    lab.g.ip(&["route", "add", "default", "via", S4]);
    let sentry = lab.sentry(&["--block", "1h"]);
    let second = lab
        .g
        .command(BIN)
        .args(["sentry", "--no-store", "--for", "2s"])
        .output()
        .expect("a second sentry");
    assert_eq!(second.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another portolan sentry"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let scanner = Kill(lab.spawn_in_s(
        "nmap",
        &["-sS", "-T4", "--top-ports", "200", "-n", "-Pn", G4],
    ));
    let e = sentry.wait_scan(Duration::from_secs(30));
    drop(scanner);
    assert_eq!(e["blocked"].as_array().map(Vec::len), Some(0), "{e:#}");
    assert_eq!(e["not_blocked"][0]["address"], S4, "{e:#}");
    assert_eq!(e["not_blocked"][0]["reason"], "infrastructure", "{e:#}");
    // The first sentry still watches: its table's chain is whole.
    let t = lab
        .g
        .command("nft")
        .args(["list", "chain", "inet", "portolan_sentry", "watch"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
}

#[test]
fn the_version_probes_after_a_syn_scan_are_named() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new("ver");
    let sentry = lab.sentry(&[]);
    let mut scanner = Kill(lab.spawn_in_s(
        "nmap",
        &[
            "-sS",
            "-sV",
            "--version-intensity",
            "0",
            "-T4",
            "-p",
            "1-200,443",
            "-n",
            "-Pn",
            G4,
        ],
    ));
    let e = sentry.wait_scan(Duration::from_secs(30));
    assert_eq!(e["kinds"][0], "syn", "{e:#}");
    assert!(
        common::wait_for(Duration::from_secs(90), || scanner
            .0
            .try_wait()
            .ok()
            .flatten()
            .is_some()),
        "nmap -sV did not finish"
    );
    let (code, err) = sentry.stop();
    assert_eq!(code, Some(0), "{err}");
    let end = read_events(&lab.dir.join("events.jsonl"))
        .into_iter()
        .find(|e| e["event"] == "scan" && e["phase"] == "end")
        .expect("an end event");
    let kinds: Vec<&str> = end["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        kinds.contains(&"syn") && kinds.contains(&"version"),
        "{end:#}"
    );
}
