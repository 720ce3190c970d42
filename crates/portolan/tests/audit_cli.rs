//! `portolan audit` and `portolan policy init` end to end, on a listener this test binds.

mod common;

use std::net::TcpListener;

use common::portolan;
use serde_json::Value;

/// A port in IANA's dynamic range, free on every address.
fn free_unnamed_port() -> u16 {
    (49_152 + u16::try_from(std::process::id() % 8000).unwrap()..65_000)
        .step_by(13)
        .take(1000)
        .find(|&p| TcpListener::bind(("0.0.0.0", p)).is_ok())
        .expect("a free port")
}

fn findings(doc: &Value) -> Vec<Value> {
    doc["findings"].as_array().expect("findings array").clone()
}

fn on_port(fs: &[Value], port: u16) -> Vec<&Value> {
    fs.iter()
        .filter(|f| f["socket"]["port"].as_u64() == Some(u64::from(port)))
        .collect()
}

#[test]
fn init_then_audit_and_a_policy_that_forbids() {
    let p = free_unnamed_port();
    let _l = TcpListener::bind(("0.0.0.0", p)).unwrap();
    let dir = std::env::temp_dir().join(format!("portolan-audit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let init = portolan(&["policy", "init"]);
    init.expect_code(0);
    assert!(
        init.stdout.contains(&format!("port = {p}\n")),
        "{}",
        init.stdout
    );
    let file = dir.join("policy.toml");
    std::fs::write(&file, &init.stdout).unwrap();

    // Against its own init, the listener is allowed: only the unknown-service note remains.
    let r = portolan(&[
        "audit",
        "--json",
        "--fail-on",
        "low",
        "--policy",
        file.to_str().unwrap(),
    ]);
    let doc = r.json();
    let fs = findings(&doc);
    assert!(
        fs.iter()
            .all(|f| !f["id"].as_str().unwrap().starts_with("PP")),
        "{doc:#}"
    );
    let mine = on_port(&fs, p);
    assert_eq!(mine.len(), 1, "{doc:#}");
    assert_eq!(mine[0]["id"], "PA006-unknown-service");
    assert_eq!(
        mine[0]["owner"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    r.expect_code(1); // a low finding exists and --fail-on low

    // A policy that allows nothing but loopback: this listener is a high finding, exit 1.
    let strict = dir.join("strict.toml");
    std::fs::write(&strict, "[settings]\nallow_loopback = true\n").unwrap();
    let r = portolan(&["audit", "--json", "--policy", strict.to_str().unwrap()]);
    let fs = findings(&r.json());
    assert!(on_port(&fs, p)
        .iter()
        .any(|f| f["id"] == "PP001-not-allowed" && f["severity"] == "high"));
    r.expect_code(1);

    // A bad policy: exit 2, file:line:column, nothing judged.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[allow]]\nport = 22\n\n[[allow]]\nport = 70000\n").unwrap();
    let r = portolan(&["audit", "--policy", bad.to_str().unwrap()]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("bad.toml:5:8: `port` = 70000"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
