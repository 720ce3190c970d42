//! Every report's JSON is described by a schema in `crates/portolan/schemas/`, and these
//! tests keep the two honest: they run the real binary and validate what it printed with a
//! real JSON Schema validator (Python's `jsonschema`, draft 2020-12). A field added to a
//! report without its schema, or a type that changes, fails here.

mod common;

use std::io::BufRead;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Command;

use common::{portolan, python, skip_unless};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// `Ok` when the validator can run.
fn validator_ready() -> Result<(), String> {
    let ok = Command::new(python())
        .args(["-c", "import jsonschema"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("python3's jsonschema module is missing (Debian: python3-jsonschema)".into())
    }
}

/// Runs portolan with `args`, then validates its stdout against `schema` (`NAME`, or
/// `NAME#DEF` for JSON Lines of one definition).
fn check(args: &[&str], schema: &str) {
    let r = portolan(args);
    assert!(matches!(r.code(), 0 | 1), "{args:?} failed: {}", r.stderr);
    assert!(!r.stdout.trim().is_empty(), "{args:?} printed nothing");
    validate(&format!("{args:?}"), &r.stdout, schema);
}

/// Validates `text` (what `what` gave) against `schema`.
fn validate(what: &str, text: &str, schema: &str) {
    let args = what;
    let dir = std::env::temp_dir().join(format!("portolan-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{}.json", schema.replace('#', "-")));
    std::fs::write(&file, text).expect("write output");
    let mut cmd = Command::new(python());
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schema_check.py"))
        .arg(schema_dir())
        .arg(schema)
        .arg(&file);
    if schema.contains('#') {
        cmd.arg("--lines");
    }
    let out = cmd.output().expect("run the validator");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{args:?} does not match {schema}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn schemas_are_valid_json_with_ids() {
    for entry in std::fs::read_dir(schema_dir()).expect("schemas dir") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read schema");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            v["$id"].as_str().is_some_and(|id| id.ends_with(&name)),
            "{name}: $id must end with the file name"
        );
    }
}

#[test]
fn sockets_reports_match_their_schema() {
    if !skip_unless("sockets_reports_match_their_schema", validator_ready()) {
        return;
    }
    // Our own listeners, so the lists hold owned sockets of both protocols.
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tcp");
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp");
    let port = tcp.local_addr().unwrap().port().to_string();
    let _client = std::net::TcpStream::connect(tcp.local_addr().unwrap()).expect("connect");
    check(&["ls", "-a", "--json"], "sockets");
    check(&["ls", "--json", "--pretty"], "sockets");
    check(&["ls", "-a", "--jsonl"], "sockets#socket");
    check(&["who", &port, "--json"], "sockets");
    check(&["who", &port, "--jsonl"], "sockets#socket");
    check(&["--json"], "sockets");
    // With --probe: the answers object of each probed listener.
    check(&["who", &port, "--probe", "--json"], "sockets");
    drop(udp);
}

#[test]
fn info_reports_match_their_schema() {
    if !skip_unless("info_reports_match_their_schema", validator_ready()) {
        return;
    }
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tcp");
    let port = tcp.local_addr().unwrap().port().to_string();
    check(
        &[
            "info",
            "22",
            "53/udp",
            "6000-6063",
            "postgres",
            &port,
            "--json",
        ],
        "info",
    );
    check(&["info", "443", "ssh", "--jsonl"], "info#result");
}

#[test]
fn free_reports_match_their_schema() {
    if !skip_unless("free_reports_match_their_schema", validator_ready()) {
        return;
    }
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tcp");
    let port = tcp.local_addr().unwrap().port().to_string();
    check(&["free", "-n", "3", "--json"], "free");
    check(&["free", &port, "--addr", "127.0.0.1", "--json"], "free");
}

#[test]
fn kill_and_probe_reports_match_their_schema() {
    if !skip_unless(
        "kill_and_probe_reports_match_their_schema",
        validator_ready(),
    ) {
        return;
    }
    // A service that speaks first (an SSH greeting), and a port nothing listens on.
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind tcp");
    let addr = tcp.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Write as _;
        for mut c in tcp.incoming().flatten().take(16) {
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n");
        }
    });
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let port = addr.port().to_string();
    check(&["kill", &port, "--dry-run", "--json"], "kill");
    let target = addr.to_string();
    let refused = format!("127.0.0.1:{closed_port}");
    check(&["probe", &target, &refused, "--json"], "probe");
    check(&["probe", &target, "--jsonl"], "probe#result");
}

#[test]
fn audit_reports_match_their_schema() {
    if !skip_unless("audit_reports_match_their_schema", validator_ready()) {
        return;
    }
    // A listener on all interfaces on a port no registry names: at least one finding
    // (PA006). The kernel's pick may be a registered port, which the audit names and
    // passes, so bind until the port is one the catalog does not know.
    let tcp = (0..200)
        .map(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind 0.0.0.0:0"))
        .find(|l| {
            let port = portolan_core::Port::new(l.local_addr().expect("addr").port());
            portolan_catalog::note(port, portolan_core::Protocol::Tcp).is_none()
                && portolan_catalog::service_name(port, portolan_core::Protocol::Tcp).is_none()
        })
        .expect("an unregistered port within 200 binds");
    check(&["audit", "--no-firewall", "--json"], "audit");
    check(&["audit", "--no-firewall", "--jsonl"], "audit#finding");
    drop(tcp);
}

/// Scans for the history schema: ongoing and bare, ended with every field set, and one
/// that tried `port`.
fn schema_scans(port: &str) -> Vec<portolan_watch::model::ScanRecord> {
    use portolan_watch::model::{now_ms, ScanRecord};
    let now = now_ms();
    let bare = ScanRecord {
        host: "schema-host".into(),
        key: format!("{}-{now}-1", std::process::id()),
        started_ms: now - 60_000,
        detected_ms: now - 59_000,
        last_ms: now - 1000,
        ended_ms: None,
        sources: vec!["203.0.113.9".parse().unwrap()],
        sources_total: 1,
        detector: "trw".into(),
        kinds: vec!["syn".into()],
        tool: None,
        tool_because: None,
        ports: vec!["22/tcp".into()],
        ports_total: 1,
        probes: 3,
        failed: 3,
        probes_to_detect: 3,
        blocked_until_ms: None,
    };
    let full = ScanRecord {
        key: format!("{}-{now}-2", std::process::id()),
        ended_ms: Some(now - 500),
        sources: vec![
            "2001:db8::7".parse().unwrap(),
            "198.51.100.4".parse().unwrap(),
        ],
        sources_total: 70,
        detector: "distributed".into(),
        kinds: vec!["fin".into(), "udp".into()],
        tool: Some("nmap".into()),
        tool_because: Some("window 1024\x1b[2J <b>".into()),
        ports: vec![format!("{port}/tcp"), "53/udp".into()],
        ports_total: 1000,
        blocked_until_ms: Some(now + 3_600_000),
        ..bare.clone()
    };
    vec![bare, full]
}

#[test]
fn history_and_diff_reports_match_their_schema() {
    if !skip_unless(
        "history_and_diff_reports_match_their_schema",
        validator_ready(),
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("portolan-schema-db-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("history.sqlite");
    let db = db.to_str().expect("UTF-8 path");
    let watch = |n: &str| {
        portolan(&[
            "watch",
            "--db",
            db,
            "--interval",
            "200ms",
            "--samples",
            n,
            "--grace",
            "0",
            "-q",
        ])
        .expect_code(0);
    };
    watch("2");
    // A listener that opens between two runs, and closes before the third.
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = tcp.local_addr().unwrap().port().to_string();
    watch("2");
    // Scans that `portolan sentry` recorded: one ongoing with only what is required, one
    // ended with every field set (a hostile trait among them), one on the listener's port.
    let mut store = portolan_watch::store::open(db).expect("open the store");
    for scan in schema_scans(&port) {
        store.record_scan(&scan).expect("record a scan");
    }
    drop(store);
    check(&["history", "--db", db, "--json"], "history");
    check(&["history", &port, "--db", db, "--json"], "history");
    check(&["history", "--db", db, "--jsonl"], "history#line");
    check(&["history", "--db", db, "--scans", "--json"], "history");
    check(
        &["history", "--db", db, "--scans", "--jsonl"],
        "history#scan",
    );
    check(
        &["history", "--db", db, "--no-scans", "--jsonl"],
        "history#event",
    );
    check(&["diff", "--db", db, "--since", "1h", "--json"], "diff");
    drop(tcp);
    watch("2");
    check(
        &["diff", "--db", db, "--since", "1h", "--jsonl"],
        "diff#change",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn forward_list_matches_its_schema() {
    if !skip_unless("forward_list_matches_its_schema", validator_ready()) {
        return;
    }
    // A forwarder of our own, so the list has a row to check.
    let target = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind target");
    let tport = target.local_addr().unwrap().port();
    let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let lport = free.local_addr().unwrap().port();
    drop(free);
    let mut child = Command::new(env!("CARGO_BIN_EXE_portolan"))
        .args([
            "forward",
            &format!("127.0.0.1:{lport}"),
            &format!("127.0.0.1:{tport}"),
            "--for",
            "20s",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start portolan forward");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, lport)).is_err()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    check(&["forward", "--list", "--json"], "forward");
    check(&["forward", "--list", "--jsonl"], "forward#forward");
    let _ = child.kill();
    let _ = child.wait();
}

/// One GET with the bearer token; the body.
fn get(port: u16, token: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to serve");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read the answer");
    let (head, body) = buf.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    body.to_owned()
}

/// The dashboard's own document (`/api/map`) matches its schema, with a listener the test
/// opened in it; its other documents are the command line's, checked above.
#[test]
fn serve_map_matches_its_schema() {
    if !skip_unless("serve_map_matches_its_schema", validator_ready()) {
        return;
    }
    let mut child = common::KillOnDrop(
        common::portolan_cmd(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--for",
            "60s",
            "--interval",
            "0.2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start serve"),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the login URL");
    let url = line.trim();
    let token = url.rsplit_once("token=").expect("a token").1.to_owned();
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the URL");
    let mine = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let my_port = mine.local_addr().unwrap().port();
    let needle = format!("\"port\":{my_port},");
    let mut doc = String::new();
    let seen = common::wait_for(std::time::Duration::from_secs(10), || {
        doc = get(port, &token, "/api/map");
        doc.contains(&needle)
    });
    assert!(seen, "the listener on {my_port} never reached /api/map");
    validate("GET /api/map", &doc, "serve-map");
    let before: serde_json::Value = serde_json::from_str(&doc).unwrap();
    drop(mine);
    // Gone from the listeners, and a `closed` event in `recent` (after the restart grace).
    let closed = common::wait_for(std::time::Duration::from_secs(10), || {
        doc = get(port, &token, "/api/map");
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let listed = v["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["listener"]["port"] == my_port);
        let event = v["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "closed" && e["listener"]["port"] == my_port);
        !listed && event
    });
    assert!(
        closed,
        "the closed listener {my_port} stayed on /api/map, or no closed event"
    );
    validate("GET /api/map", &doc, "serve-map");
    let after: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(
        after["version"].as_u64() > before["version"].as_u64(),
        "the change was published with a new version"
    );
}
