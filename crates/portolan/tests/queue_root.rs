//! Scans queued on PostgreSQL and scanned by many workers (`scan --queue`, `worker`):
//! four workers scan a /20 x top-100 while one of them is killed with SIGKILL mid-chunk,
//! and the union of what they wrote equals a single machine's scan of the same targets,
//! port for port and state for state: no gap, no duplicate.
//!
//! The targets: a network namespace of the test's own where all of 198.18.32.0/20 is
//! local (`ip route add local`), a process listening on a few of the ports on 0.0.0.0 (so
//! every address has them open), and an nftables rule that drops two ports of one /24
//! (filtered). Everything else answers with a reset (closed). The PostgreSQL server runs
//! outside the namespace; workers reach it over its Unix socket.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portolan_testsupport::{skip_unless, Netns};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portolan");

/// The scan both ways: the same targets, ports, seed and timing.
const SCAN: &[&str] = &[
    "198.18.32.0/20",
    "--top",
    "100",
    "-Pn",
    "-n",
    "--seed",
    "7",
    "--timeout",
    "300",
    "--max-retries",
    "1",
    // Loopback delivers through a backlog of 1,000 packets a CPU (netdev_max_backlog):
    // faster bursts are dropped, and a dropped SYN and its retry read as filtered. A queued
    // scan shares this rate among its workers.
    "--max-rate",
    "15000",
];

/// The ports of the top 100 that listen in the namespace.
const OPEN: &[u16] = &[22, 80, 443, 3306, 8080];

fn lab() -> Netns {
    let ns = Netns::new("queue");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["route", "add", "local", "198.18.32.0/20", "dev", "lo"]);
    let nft =
        "table inet portolan_qtest {\n chain input {\n  type filter hook input priority 0;\n  \
               ip daddr 198.18.40.0/24 tcp dport { 80, 443 } drop\n }\n}\n";
    let ok = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(nft.as_bytes())?;
            c.wait()
        })
        .expect("nft");
    assert!(ok.success(), "nft rule");
    ns
}

fn listeners(ns: &Netns) -> common::KillOnDrop {
    let ports: Vec<String> = OPEN.iter().map(ToString::to_string).collect();
    // Accepts and closes, so the accept queues never fill across three scans.
    let script = "import socket,sys,select,time\nss=[]\nfor p in sys.argv[1:]:\n s=socket.socket()\n s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n s.bind(('0.0.0.0',int(p)))\n s.listen(4096)\n s.setblocking(False)\n ss.append(s)\nprint('ready',flush=True)\nend=time.time()+600\nwhile time.time()<end:\n r,_,_=select.select(ss,[],[],1)\n for s in r:\n  while True:\n   try:\n    c,_=s.accept(); c.close()\n   except BlockingIOError:\n    break\n";
    let mut c = ns
        .command("python3")
        .arg("-c")
        .arg(script)
        .args(&ports)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 listeners");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    common::KillOnDrop(c)
}

type Key = (String, u64, String);

/// (host, port, proto) -> state, and how many records there were.
fn states(jsonl: &str) -> (BTreeMap<Key, String>, usize) {
    let mut m = BTreeMap::new();
    let mut n = 0;
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        n += 1;
        m.insert(
            (
                v["host"].as_str().unwrap().to_owned(),
                v["port"].as_u64().unwrap(),
                v["proto"].as_str().unwrap().to_owned(),
            ),
            v["state"].as_str().unwrap().to_owned(),
        );
    }
    (m, n)
}

fn worker(ns: &Netns, url: &str, name: &str) -> Child {
    ns.command(BIN)
        .args([
            "worker",
            "--name",
            name,
            "--lease",
            "3s",
            "--exit-when-done",
            "--for",
            "300s",
        ])
        .env("PORTOLAN_QUEUE", url)
        .stdout(Stdio::null())
        .spawn()
        .expect("start a worker")
}

fn status(ns: &Netns, url: &str, id: &str) -> (i32, Value) {
    let out = ns
        .command(BIN)
        .args(["scan", "--status", id, "--json"])
        .env("PORTOLAN_QUEUE", url)
        .output()
        .expect("scan --status");
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("status: {}", String::from_utf8_lossy(&out.stderr)));
    (code, v)
}

#[test]
fn four_workers_one_killed_equal_one_machine() {
    if !skip_unless(portolan_testsupport::all([
        portolan_testsupport::root(),
        Netns::ready(),
        portolan_testsupport::program("nft"),
    ])) {
        return;
    }
    let Some(pg) = portolan_testbed::pg::PgServer::start() else {
        return;
    };
    pg.fresh_db("qscan");
    let url = pg.socket_url("qscan");
    let ns = lab();
    let _listening = listeners(&ns);

    // One machine.
    let out = ns
        .command(BIN)
        .arg("scan")
        .args(SCAN)
        .args(["--jsonl", "--no-progress"])
        .output()
        .expect("the single scan");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (single, n_single) = states(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(n_single, 4094 * 100, "one record per position");
    assert_eq!(single.len(), n_single);
    let mut by_port: BTreeMap<(u64, &str), usize> = BTreeMap::new();
    for ((_, port, _), st) in &single {
        if st != "closed" {
            *by_port.entry((*port, st.as_str())).or_default() += 1;
        }
    }
    // Every address has the listeners, but for the /24 whose 80 and 443 are dropped.
    let want: BTreeMap<(u64, &str), usize> = OPEN
        .iter()
        .map(|&p| {
            let n = if p == 80 || p == 443 {
                4094 - 256
            } else {
                4094
            };
            ((u64::from(p), "open"), n)
        })
        .chain([((80, "filtered"), 256), ((443, "filtered"), 256)])
        .collect();
    assert_eq!(by_port, want, "the single scan's open and filtered ports");

    // Queued, 50 chunks.
    let out = ns
        .command(BIN)
        .arg("scan")
        .args(SCAN)
        .args(["--queue", "--chunk-size", "8192"])
        .env("PORTOLAN_QUEUE", &url)
        .output()
        .expect("scan --queue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(id.parse::<i64>().is_ok(), "the scan's id on stdout: {id:?}");

    let mut workers: Vec<common::KillOnDrop> = (0..4)
        .map(|i| common::KillOnDrop(worker(&ns, &url, &format!("w{i}"))))
        .collect();
    // Kill w0 with SIGKILL while it holds a chunk (the status names its chunk).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = status(&ns, &url, &id);
        let holds = s["workers"].as_array().is_some_and(|ws| {
            ws.iter()
                .any(|w| w["name"] == "w0" && !w["leased_chunk"].is_null())
        });
        if holds {
            break;
        }
        assert!(Instant::now() < deadline, "w0 never leased a chunk: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = workers[0].0.id();
    let killed = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let _ = workers[0].0.wait();

    // The others finish it all, w0's chunk included once its lease runs out.
    let deadline = Instant::now() + Duration::from_secs(240);
    let s = loop {
        let (code, s) = status(&ns, &url, &id);
        if code == 0 {
            break s;
        }
        assert!(Instant::now() < deadline, "not complete: {s}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(s["state"], "complete");
    assert_eq!(s["done"], s["chunks"]);
    for w in workers.iter_mut().skip(1) {
        let st = w.0.wait().expect("a worker ends when the queue is empty");
        assert!(st.success(), "a worker failed");
    }

    // The union equals the single machine's scan: no gap, no duplicate, the same states.
    let out = ns
        .command(BIN)
        .args(["scan", "--results", &id, "--jsonl"])
        .env("PORTOLAN_QUEUE", &url)
        .output()
        .expect("scan --results");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (queued, n_queued) = states(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(n_queued, queued.len(), "duplicates in the results");
    let missing: BTreeSet<&Key> = single.keys().filter(|k| !queued.contains_key(*k)).collect();
    let extra: BTreeSet<&Key> = queued.keys().filter(|k| !single.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} gaps, e.g. {:?}",
        missing.len(),
        missing.iter().next()
    );
    assert!(
        extra.is_empty(),
        "{} extra, e.g. {:?}",
        extra.len(),
        extra.iter().next()
    );
    let differ: Vec<(&Key, &String, &String)> = single
        .iter()
        .filter(|&(k, v)| queued[k] != *v)
        .map(|(k, v)| (k, v, &queued[k]))
        .collect();
    assert!(
        differ.is_empty(),
        "{} states differ, e.g. {:?}",
        differ.len(),
        differ.first()
    );

    // The dashboard reads the same store: /scans lists the queued scan, and its page
    // shows what the workers found.
    let mut serve = common::KillOnDrop(
        ns.command(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--for",
                "60s",
                "--queue",
                "--no-firewall",
            ])
            .env("PORTOLAN_QUEUE", &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("portolan serve"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(serve.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let token = line.trim().rsplit_once("token=").unwrap().1.to_owned();
    let port: u16 = line
        .trim()
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    let get = |path: &str| -> String {
        // The server listens inside the namespace: ask from there.
        let out = ns
            .command("curl")
            .args([
                "-s",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("http://127.0.0.1:{port}{path}"),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let page = get("/scans");
    assert!(
        page.contains(&format!("href=\"/scans/queued/{id}\"")),
        "{page}"
    );
    let page = get(&format!("/scans/queued/{id}"));
    assert!(
        page.contains("198.18.32.1<") && page.contains(">open<"),
        "{}",
        &page[..page.len().min(2000)]
    );
    drop(serve);

    // The audit reads it too (`--from-scan queued:ID`): the comparison runs, no error.
    let out = ns
        .command(BIN)
        .args([
            "audit",
            "--no-firewall",
            "--json",
            "--from-scan",
            &format!("queued:{id}"),
        ])
        .env("PORTOLAN_QUEUE", &url)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("audit --json");
    assert!(v["findings"].is_array());

    // The table and nmap XML come out as a local scan's do.
    let out = ns
        .command(BIN)
        .args(["scan", "--results", &id])
        .env("PORTOLAN_QUEUE", &url)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("198.18.32.1") && table.contains("8080"),
        "{table}"
    );
}
