//! `portolan audit` and `portolan policy init` end to end, on a listener this test binds.

mod common;

use std::net::TcpListener;
use std::sync::{Mutex, MutexGuard};

use common::portolan;
use serde_json::Value;

/// A listener on all interfaces, on a port in IANA's dynamic range (so no service is
/// named for it). The port is bound here and handed back bound: the tests in this file
/// run in parallel threads of one process, and a port found free and bound later could
/// be taken by the other test in between.
fn listener_on_unnamed_port() -> (u16, TcpListener) {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = u16::try_from(std::process::id() % 8000).unwrap() + call * 997;
    (0..1000u16)
        .map(|i| 49_152 + (start + i * 13) % 15_000)
        .find_map(|p| TcpListener::bind(("0.0.0.0", p)).ok().map(|l| (p, l)))
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

/// The audit judges every listener of the machine, and the tests in this file each open
/// one: run one at a time, so that one test's listener never appears in another's counts
/// (a CI run saw the JUnit test count a listener of the policy test).
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn init_then_audit_and_a_policy_that_forbids() {
    let _serial = one_at_a_time();
    let (p, _l) = listener_on_unnamed_port();
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
        "--no-firewall",
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
    let r = portolan(&[
        "audit",
        "--no-firewall",
        "--json",
        "--policy",
        strict.to_str().unwrap(),
    ]);
    let fs = findings(&r.json());
    assert!(on_port(&fs, p)
        .iter()
        .any(|f| f["id"] == "PP001-not-allowed" && f["severity"] == "high"));
    r.expect_code(1);

    // A bad policy: exit 2, file:line:column, nothing judged.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[allow]]\nport = 22\n\n[[allow]]\nport = 70000\n").unwrap();
    let r = portolan(&["audit", "--no-firewall", "--policy", bad.to_str().unwrap()]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("bad.toml:5:8: `port` = 70000"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sarif_and_junit_carry_the_same_findings_as_json() {
    let _serial = one_at_a_time();
    let (p, _l) = listener_on_unnamed_port();
    let json = portolan(&["audit", "--json", "--no-firewall"]);
    let fs = findings(&json.json());
    assert!(!on_port(&fs, p).is_empty(), "{fs:?}");

    // SARIF 2.1.0: one result per finding, each naming its rule and the socket.
    let sarif = portolan(&["audit", "--sarif", "--no-firewall"]);
    let doc: Value = serde_json::from_str(&sarif.stdout).expect("SARIF is JSON");
    assert_eq!(doc["version"], "2.1.0");
    let results = doc["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), fs.len(), "{doc:#}");
    let rules = doc["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    for r in results {
        let idx = usize::try_from(r["ruleIndex"].as_u64().unwrap()).unwrap();
        assert_eq!(rules[idx]["id"], r["ruleId"]);
        assert!(["error", "warning", "note"].contains(&r["level"].as_str().unwrap()));
    }
    assert!(
        results
            .iter()
            .any(|r| r["locations"][0]["logicalLocations"][0]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with(&format!(":{p}")))),
        "{doc:#}"
    );

    // JUnit: one test case per finding; failures are the findings at or above --fail-on,
    // which is also what the exit code says.
    let junit = portolan(&["audit", "--junit", "--no-firewall", "--fail-on", "info"]);
    junit.expect_code(1);
    let x = &junit.stdout;
    assert!(x.starts_with("<?xml version=\"1.0\""), "{x}");
    assert_eq!(x.matches("<testcase ").count(), fs.len(), "{x}");
    assert_eq!(x.matches("<failure ").count(), fs.len(), "{x}");
    let relaxed = portolan(&["audit", "--junit", "--no-firewall", "--fail-on", "critical"]);
    let failing = fs.iter().filter(|f| f["severity"] == "critical").count();
    assert_eq!(relaxed.stdout.matches("<failure ").count(), failing);
}

/// Issue 12: `--policy` and `--from-scan` refuse what is not a regular file (a FIFO used to
/// block forever, /dev/zero was read 256 MiB deep) before reading, and a file over the
/// limit is refused at once with its real size and the real limit.
#[test]
fn policy_and_scan_files_refuse_fifos_devices_directories_and_oversize_files() {
    let _serial = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("portolan-audit-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let big = dir.join("big.toml");
    let limit = portolan_audit::MAX_INPUT_BYTES;
    // Sparse: costs no disk, and must cost no reading either.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(limit + 1)
        .unwrap();
    let cases: [(&std::path::Path, &str); 4] = [
        (&fifo, "not a regular file (a FIFO)"),
        (
            std::path::Path::new("/dev/zero"),
            "not a regular file (a character device)",
        ),
        (&dir, "not a regular file (a directory)"),
        (
            &big,
            "is 268435457 bytes, more than the limit of 268435456 (256 MiB)",
        ),
    ];
    for (path, want) in cases {
        let p = path.to_str().unwrap();
        for args in [
            vec!["audit", "--no-firewall", "--policy", p],
            vec!["audit", "--no-firewall", "--from-scan", p],
            vec!["firewall", "plan", "--policy", p],
        ] {
            let start = std::time::Instant::now();
            let r = portolan(&args);
            r.expect_code(2);
            assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "{args:?} took {:?}",
                start.elapsed()
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
