//! `portolan scan` against real listeners on loopback: every state exact, every output
//! format readable, shards and resume covering the scan exactly once, a tiny descriptor
//! limit, and bad target-list entries. (Delay, loss and filtering need the namespace
//! testbed; these tests need neither root nor namespaces.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::Command;

use common::{portolan, run_cmd, BIN};
use serde_json::Value;

/// Listeners the test holds, and closed ports next to them. A closed port stays bound to a
/// socket that never listens: a SYN to it gets a reset, and no other test running in
/// parallel (nor any ephemeral port choice) can take it over while the scene lives.
struct Scene {
    _listeners: Vec<TcpListener>,
    _closed_holders: Vec<std::os::fd::OwnedFd>,
    open: BTreeSet<u16>,
    closed: BTreeSet<u16>,
}

fn scene(n_open: usize, n_closed: usize) -> Scene {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let listeners: Vec<TcpListener> = (0..n_open)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let open: BTreeSet<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let mut closed = BTreeSet::new();
    let mut holders = Vec::new();
    while closed.len() < n_closed {
        // CLOEXEC: the scanner under test must not inherit these.
        let fd = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        rustix::net::bind(&fd, &any).unwrap();
        let local = std::net::SocketAddr::try_from(rustix::net::getsockname(&fd).unwrap()).unwrap();
        closed.insert(local.port());
        holders.push(fd);
    }
    Scene {
        _listeners: listeners,
        _closed_holders: holders,
        open,
        closed,
    }
}

fn port_list(s: &Scene) -> String {
    s.open
        .iter()
        .chain(&s.closed)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn states(lines: &[Value]) -> BTreeMap<u16, String> {
    let mut m = BTreeMap::new();
    for v in lines {
        let port = u16::try_from(v["port"].as_u64().unwrap()).unwrap();
        let prev = m.insert(port, v["state"].as_str().unwrap().to_string());
        assert!(prev.is_none(), "port {port} reported twice");
    }
    m
}

fn assert_exact(s: &Scene, got: &BTreeMap<u16, String>) {
    assert_eq!(
        got.len(),
        s.open.len() + s.closed.len(),
        "every port has one verdict"
    );
    for p in &s.open {
        assert_eq!(got[p], "open", "port {p}");
    }
    for p in &s.closed {
        assert_eq!(got[p], "closed", "port {p}");
    }
}

#[test]
fn every_state_exact_in_every_format() {
    let s = scene(6, 200);
    let ports = port_list(&s);
    let r = portolan(&[
        "scan",
        "127.0.0.1",
        "-p",
        &ports,
        "--jsonl",
        "--no-progress",
    ]);
    r.expect_code(0);
    let lines = r.jsonl();
    assert_exact(&s, &states(&lines));
    for v in &lines {
        assert_eq!(v["host"], "127.0.0.1");
        assert_eq!(v["proto"], "tcp");
        let want = if v["state"] == "open" {
            "syn-ack"
        } else {
            "conn-refused"
        };
        assert_eq!(v["reason"], want);
        assert!(v["rtt_ms"].as_f64().unwrap() >= 0.0);
    }
    // One JSON document with the same verdicts and a summary.
    let r = portolan(&["scan", "127.0.0.1", "-p", &ports, "--json", "--no-progress"]);
    let doc = r.json();
    assert_exact(&s, &states(doc["ports"].as_array().unwrap()));
    assert_eq!(doc["summary"]["open"], s.open.len() as u64);
    // CSV.
    let r = portolan(&["scan", "127.0.0.1", "-p", &ports, "--csv", "--no-progress"]);
    let mut csv = r.stdout.lines();
    assert_eq!(
        csv.next(),
        Some("host,port,proto,state,reason,rtt_ms,service,hostname,product,version")
    );
    let rows: Vec<&str> = csv.collect();
    assert_eq!(rows.len(), s.open.len() + s.closed.len());
    // 127.0.0.1's reverse name comes from /etc/hosts (no DNS involved).
    assert!(
        rows.iter()
            .all(|r| r.split(',').nth(7).is_some_and(|h| !h.is_empty())),
        "every row names the host: {:?}",
        &rows[..2]
    );
    // Table: open ports listed, closed summarised.
    let r = portolan(&["scan", "127.0.0.1", "-p", &ports, "--no-progress"]);
    r.expect_code(0);
    for p in &s.open {
        assert!(r.stdout.contains(&format!("{p}/tcp")), "{}", r.stdout);
    }
    assert!(
        r.stdout.contains("200 closed (conn-refused: 200)"),
        "{}",
        r.stdout
    );
}

#[test]
fn nmap_xml_and_greppable_outputs() {
    let s = scene(3, 60);
    let dir = std::env::temp_dir().join(format!("portolan-scan-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (xml, grep) = (dir.join("out.xml"), dir.join("out.gnmap"));
    let r = portolan(&[
        "scan",
        "127.0.0.1",
        "-p",
        &port_list(&s),
        "-oX",
        xml.to_str().unwrap(),
        "-oG",
        grep.to_str().unwrap(),
        "--no-progress",
    ]);
    r.expect_code(0);
    let x = std::fs::read_to_string(&xml).unwrap();
    assert!(
        x.starts_with("<?xml")
            && x.contains("<nmaprun scanner=\"portolan\"")
            && x.trim_end().ends_with("</nmaprun>")
    );
    for p in &s.open {
        assert!(
            x.contains(&format!(
                "portid=\"{p}\"><state state=\"open\" reason=\"syn-ack\""
            )),
            "{x}"
        );
    }
    assert!(
        x.contains("<extraports state=\"closed\" count=\"60\">"),
        "{x}"
    );
    // Well-formed: python's XML parser reads it and finds the same open ports.
    let py = Command::new(common::python())
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; t=E.parse(sys.argv[1]); \
             print(','.join(p.get('portid') for p in t.iter('port') if p.find('state').get('state')=='open'))",
            xml.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let got: BTreeSet<u16> = String::from_utf8(py.stdout)
        .unwrap()
        .trim()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(got, s.open);
    let g = std::fs::read_to_string(&grep).unwrap();
    for p in &s.open {
        assert!(g.contains(&format!("{p}/open/tcp//")), "{g}");
    }
    assert!(g.contains("Ignored State: closed (60)"), "{g}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_merge_to_the_whole_scan_and_resume_finishes_it() {
    let s = scene(4, 300);
    let ports = port_list(&s);
    let mut merged: Vec<Value> = Vec::new();
    for i in 0..3 {
        let shard = format!("{i}/3");
        let r = portolan(&[
            "scan",
            "127.0.0.1",
            "-p",
            &ports,
            "--seed",
            "99",
            "--shard",
            &shard,
            "--jsonl",
            "--no-progress",
        ]);
        assert!(matches!(r.code(), 0 | 1), "{r:?}");
        merged.extend(r.jsonl());
    }
    assert_exact(&s, &states(&merged));
    // A resume file from a finished scan: the second run scans nothing new.
    let path = std::env::temp_dir().join(format!("portolan-resume-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // Exit 0 when the run found an open port, 1 when it found none.
    let resume = |want: i32| {
        let r = portolan(&[
            "scan",
            "127.0.0.1",
            "-p",
            &ports,
            "--resume",
            path.to_str().unwrap(),
            "--jsonl",
            "--no-progress",
        ]);
        r.expect_code(want);
        r
    };
    let r = resume(0);
    assert_exact(&s, &states(&r.jsonl()));
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(st["checkpoint"], st["total"]);
    // Nothing is left to scan, so nothing open is found.
    let again = resume(1);
    assert!(again.jsonl().is_empty(), "{}", again.stdout);
    assert!(again.stderr.contains("resuming from"), "{}", again.stderr);
    // A resume file from another scan is refused.
    let other = portolan(&[
        "scan",
        "127.0.0.1",
        "-p",
        "1-10",
        "--resume",
        path.to_str().unwrap(),
        "--no-progress",
    ]);
    other.expect_code(2);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_descriptor_limit_of_256_loses_nothing() {
    let s = scene(5, 1500);
    let ports = port_list(&s);
    let mut cmd = Command::new("prlimit");
    cmd.args([
        "--nofile=256:256",
        BIN,
        "scan",
        "127.0.0.1",
        "-p",
        &ports,
        "--jsonl",
        "--no-progress",
        "-T5",
    ]);
    let r = run_cmd(cmd);
    r.expect_code(0);
    assert_exact(&s, &states(&r.jsonl()));
}

#[test]
fn bad_entries_in_a_target_list_are_reported_and_the_rest_scanned() {
    let s = scene(2, 10);
    let list = std::env::temp_dir().join(format!("portolan-targets-{}.txt", std::process::id()));
    std::fs::write(
        &list,
        "# lab hosts\n127.0.0.1\nnot_a_host!\n999.1.1.1\n198.18.0.0/33\n\n",
    )
    .unwrap();
    let r = portolan(&[
        "scan",
        "-iL",
        list.to_str().unwrap(),
        "-p",
        &port_list(&s),
        "--jsonl",
        "--no-progress",
    ]);
    r.expect_code(0);
    assert_exact(&s, &states(&r.jsonl()));
    let skipped = r
        .stderr
        .lines()
        .filter(|l| l.contains("skipping target"))
        .count();
    assert_eq!(skipped, 3, "{}", r.stderr);
    let _ = std::fs::remove_file(&list);
    // Only bad targets: an error, exit 2.
    portolan(&["scan", "not a host!", "-p", "80", "--no-progress"]).expect_code(2);
}

#[test]
fn bad_scan_options_are_one_line_errors() {
    for args in [
        &["scan", "127.0.0.1", "-p", "0"][..],
        &["scan", "127.0.0.1", "-p", "70000"],
        &["scan", "127.0.0.1", "-p", "U:53"],
        &["scan", "127.0.0.1", "--top", "0"],
        &["scan", "127.0.0.1", "-T", "warp"],
        &["scan", "127.0.0.1", "--shard", "3/3", "--seed", "1"],
        &["scan", "127.0.0.1", "--max-rate", "-5"],
        &["scan", "127.0.0.1", "--exclude", "bad!"],
    ] {
        let r = portolan(args);
        r.expect_code(2);
        assert!(
            r.stderr.starts_with("portolan: error:") || r.stderr.starts_with("error:"),
            "{args:?}: {}",
            r.stderr
        );
    }
}

#[test]
fn no_open_port_exits_1() {
    let s = scene(0, 20);
    let r = portolan(&["scan", "127.0.0.1", "-p", &port_list(&s), "--no-progress"]);
    r.expect_code(1);
}

#[test]
fn hostile_target_list_names_and_entries_never_reach_stderr_raw() {
    let dir = std::env::temp_dir().join(format!("portolan-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("evil\x1b]0;pwned\x07.txt");
    std::fs::write(&list, "bad\x1b[2Jentry\n").unwrap();
    let r = portolan(&[
        "scan",
        "-iL",
        list.to_str().unwrap(),
        "-p",
        "1",
        "--no-progress",
    ]);
    r.expect_code(2);
    assert!(r.stderr.contains("skipping target"), "{}", r.stderr);
    assert!(
        !r.stderr.contains('\x1b') && !r.stderr.contains('\x07'),
        "{:?}",
        r.stderr
    );
    assert!(
        r.stderr.contains("evil\\x1b]0;pwned\\x07.txt"),
        "{}",
        r.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn results_stream_while_the_scan_runs() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let s = scene(1, 0);
    let open = *s.open.iter().next().unwrap();
    // 100 probes at 40 per second: about 2.5 s, far less than a buffer's worth of output.
    let mut child = common::portolan_cmd(&[
        "scan",
        "127.0.0.1",
        "-p",
        &format!("{open},1-99"),
        "--max-rate",
        "40",
        "--jsonl",
        "--no-progress",
        "-n",
    ])
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let start = Instant::now();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let first_at = start.elapsed();
    let still_running = child.try_wait().unwrap().is_none();
    let rest = lines.count();
    let total = start.elapsed();
    let _ = child.wait();
    assert!(first.contains("\"port\""), "{first}");
    assert_eq!(rest + 1, 100);
    assert!(
        still_running && first_at + Duration::from_secs(1) < total,
        "first result after {first_at:?}, scan took {total:?}: results were not streamed"
    );
}

#[test]
fn a_closed_output_stops_the_scan() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    // 2,000 probes at 100 per second would take 20 s; the reader leaves after one line.
    let mut child = common::portolan_cmd(&[
        "scan",
        "127.0.0.1",
        "-p",
        "1-2000",
        "--max-rate",
        "100",
        "--jsonl",
        "--no-progress",
        "-n",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let start = Instant::now();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(first.contains("\"port\""), "{first}");
    // The pipe is closed now (the reader was dropped): the next write fails and the scan
    // stops, instead of probing the rest for nobody.
    let ended = common::wait_for(Duration::from_secs(8), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    let took = start.elapsed();
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "the scan went on after its output closed ({took:?})");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
