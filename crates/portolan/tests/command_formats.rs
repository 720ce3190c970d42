//! Each of audit, policy, firewall, history, diff and kill renders exactly the formats it
//! declares: the declared ones are real (JSON is one object, JSON Lines are objects, CSV has
//! a header), and the others are refused by clap with exit 2 and nothing on stdout.

mod common;

use std::net::TcpListener;

use common::portolan;
use serde_json::Value;

fn refused(args: &[&str]) {
    let r = portolan(args);
    r.expect_code(2);
    assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    assert!(r.stderr.contains("error:"), "{args:?}: {}", r.stderr);
}

/// A scratch directory, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("portolan-fmt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn formats_not_declared_are_refused() {
    let dir = Scratch::new("refused");
    let policy = dir.path("p.toml");
    std::fs::write(&policy, "").unwrap();
    for args in [
        &["audit", "--csv", "--no-firewall"][..],
        &["audit", "--sarif", "--json", "--no-firewall"],
        &["audit", "--junit", "--jsonl", "--no-firewall"],
        &["audit", "--sarif", "--junit", "--no-firewall"],
        &["policy", "init", "--json"],
        &["policy", "init", "--jsonl"],
        &["firewall", "plan", "--policy", &policy, "--json"],
        &["firewall", "plan", "--policy", &policy, "--csv"],
        &["firewall", "status", "--jsonl"],
        &["firewall", "remove", "--json"],
        &["kill", "8080", "--csv", "--dry-run"],
        &["watch", "--csv"],
    ] {
        refused(args);
    }
}

#[test]
fn audit_renders_json_jsonl_sarif_and_junit() {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let r = portolan(&["audit", "--no-firewall", "--json", "--fail-on", "critical"]);
    r.expect_code(0);
    assert_eq!(r.stdout.lines().count(), 1, "compact JSON: {}", r.stdout);
    let doc = r.json();
    let findings = doc["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|f| f["socket"]["port"].as_u64() == Some(u64::from(port))),
        "{doc}"
    );
    let r = portolan(&["audit", "--no-firewall", "--jsonl", "--fail-on", "critical"]);
    r.expect_code(0);
    let lines = r.jsonl();
    // One finding per line. Other tests of this binary open listeners at the same time, so
    // compare this test's own listener's findings, not the totals.
    let mine = |fs: &[serde_json::Value]| {
        fs.iter()
            .filter(|f| f["socket"]["port"].as_u64() == Some(u64::from(port)))
            .count()
    };
    assert!(mine(findings) > 0);
    assert_eq!(mine(&lines), mine(findings), "one finding per line");
    assert!(lines
        .iter()
        .all(|f| f["id"].is_string() && f["severity"].is_string()));
    let r = portolan(&["audit", "--no-firewall", "--sarif", "--fail-on", "critical"]);
    r.expect_code(0);
    assert_eq!(r.json()["version"], "2.1.0");
    let r = portolan(&["audit", "--no-firewall", "--junit", "--fail-on", "critical"]);
    r.expect_code(0);
    assert!(r.stdout.starts_with("<?xml"), "{}", r.stdout);
    assert!(r.stdout.contains("<testsuites"), "{}", r.stdout);
    drop(l);
}

#[test]
fn policy_init_prints_a_policy_that_parses() {
    let r = portolan(&["policy", "init"]);
    r.expect_code(0);
    let dir = Scratch::new("init");
    let policy = dir.path("p.toml");
    std::fs::write(&policy, &r.stdout).unwrap();
    portolan(&["audit", "--no-firewall", "--policy", &policy, "--json"]).expect_code(0);
}

#[test]
fn history_and_diff_render_json_jsonl_and_csv() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let dir = Scratch::new("history");
    let db = dir.path("h.sqlite");
    portolan(&["watch", "--db", &db, "--samples", "1", "--quiet"]).expect_code(0);

    let r = portolan(&["history", "--db", &db, "--json", &port]);
    r.expect_code(0);
    let doc = r.json();
    let events = doc["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{doc}");
    assert_eq!(events[0]["kind"], "present");
    // With a port, what holds it per the last sample.
    assert_eq!(
        doc["now"]["port"].as_u64().map(|p| p.to_string()),
        Some(port.clone())
    );
    assert_eq!(
        doc["now"]["holders"].as_array().map(Vec::len),
        Some(1),
        "{doc}"
    );
    let r = portolan(&["history", "--db", &db, "--jsonl", &port]);
    r.expect_code(0);
    assert_eq!(r.jsonl().len(), 1, "{}", r.stdout);
    let r = portolan(&["history", "--db", &db, "--csv", &port]);
    r.expect_code(0);
    let rows: Vec<&str> = r.stdout.lines().collect();
    assert!(
        rows[0].starts_with("time,host,event,proto,address,port"),
        "{}",
        r.stdout
    );
    assert_eq!(rows.len(), 2, "{}", r.stdout);
    let r = portolan(&["history", "--db", &db, &port]);
    r.expect_code(0);
    assert!(r.stdout.contains("now: tcp 127.0.0.1:"), "{}", r.stdout);

    // The listener closes: diff against the recorded state says it was removed.
    drop(l);
    let r = portolan(&["diff", "--db", &db, "--since", "1h", "--json"]);
    r.expect_code(0);
    let doc = r.json();
    let removed: Vec<&Value> = doc["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["port"].as_u64().map(|p| p.to_string()) == Some(port.clone()))
        .collect();
    assert_eq!(removed.len(), 1, "{doc}");
    assert_eq!(removed[0]["change"], "removed");
    assert!(
        doc["then"].is_string() && doc["history_starts"].is_string(),
        "{doc}"
    );
    let r = portolan(&["diff", "--db", &db, "--since", "1h", "--csv"]);
    r.expect_code(0);
    assert!(
        r.stdout
            .starts_with("change,proto,address,port,exposure,pid,process,previous_process\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("removed,tcp,127.0.0.1,{port},")),
        "{}",
        r.stdout
    );
    let r = portolan(&["diff", "--db", &db, "--since", "1h", "--jsonl"]);
    r.expect_code(0);
    assert!(
        r.jsonl().iter().all(|c| c["change"].is_string()),
        "{}",
        r.stdout
    );
}

#[test]
fn kill_takes_a_port_as_who_parses_it() {
    for (arg, mention) in [
        ("99999", "99999"),
        ("pid:5", "kill takes a port"),
        ("nginx", "kill takes a port"),
        ("80/xyz", "xyz"),
    ] {
        let r = portolan(&["kill", arg, "--dry-run"]);
        r.expect_code(2);
        let lines = r.stderr_lines();
        assert_eq!(lines.len(), 1, "{arg}: {}", r.stderr);
        assert!(lines[0].contains(mention), "{arg}: {}", r.stderr);
    }
    // `:PORT` and `PORT/udp` are ports; nothing listens on port 1 here.
    let l = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    for arg in [format!(":{port}"), format!("{port}/udp")] {
        let r = portolan(&["kill", &arg, "--dry-run"]);
        r.expect_code(1);
        assert!(
            r.stderr.contains("nothing listens on"),
            "{arg}: {}",
            r.stderr
        );
    }
}
