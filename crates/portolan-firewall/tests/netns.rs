//! End to end, in two network namespaces joined by a veth pair: real listeners in the
//! target, portolan's plan applied there commit-confirmed, portolan's scanner run from
//! the peer. Asserts exactly the allowed ports (and the SSH guard port) are reachable, that
//! an unconfirmed apply rolls back by itself, that a confirmed one stays, and that
//! `remove` leaves no trace. Needs root; builds nothing (run `cargo build -p portolan`
//! first).

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{portolan_bin, privileged_or_skip, Netns, TempDir};
use portolan_core::{Port, PortRange};
use portolan_firewall::{
    apply, confirm, default_state_dir, our_table, remove_table, status, ApplyOptions, CommitState,
    Guard, InboundRule, WatchdogLauncher, L4,
};

const TARGET: &str = "198.18.77.1";
const PEER: &str = "198.18.77.2";
const GUARD: u16 = 2222;
const PORTS: [u16; 5] = [2222, 8001, 8002, 8003, 8004];

struct Lab {
    target: Netns,
    peer: Netns,
    _listeners: Vec<TcpListener>,
    state: TempDir,
}

impl Lab {
    fn new() -> Lab {
        let target = Netns::new("t");
        let peer = Netns::new("p");
        target.ip(&[
            "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", &peer.name,
        ]);
        target.ip(&["addr", "add", &format!("{TARGET}/24"), "dev", "veth0"]);
        peer.ip(&["addr", "add", &format!("{PEER}/24"), "dev", "veth0"]);
        target.ip(&["link", "set", "veth0", "up"]);
        peer.ip(&["link", "set", "veth0", "up"]);
        let listeners = target.run_in(|| {
            PORTS
                .iter()
                .map(|p| TcpListener::bind((TARGET, *p)).expect("bind in target"))
                .collect()
        });
        Lab {
            target,
            peer,
            _listeners: listeners,
            state: TempDir::new("state"),
        }
    }

    /// The ports portolan's scanner finds open from the peer.
    fn scan_open(&self) -> BTreeSet<u16> {
        let list: Vec<String> = PORTS.iter().map(ToString::to_string).collect();
        let out = common::run(self.peer.command(portolan_bin()).args([
            "scan",
            TARGET,
            "-p",
            &list.join(","),
            "-n",
            "--json",
            "--timeout",
            "400",
            "--max-retries",
            "1",
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).expect("scan --json output");
        let ports = v["ports"].as_array().expect("ports array");
        let mut open = BTreeSet::new();
        for p in ports {
            let port = u16::try_from(p["port"].as_u64().unwrap()).unwrap();
            match p["state"].as_str() {
                Some("open") => {
                    open.insert(port);
                }
                // Our table drops: no RST, no ICMP, so the scanner sees "filtered".
                Some("filtered") => {}
                other => panic!("port {port}: unexpected state {other:?} in {out}"),
            }
        }
        open
    }

    fn opts(&self, confirm_within: Duration) -> ApplyOptions {
        ApplyOptions {
            state_dir: self.state.0.clone(),
            confirm_within,
            watchdog: WatchdogLauncher {
                program: portolan_bin(),
                args: vec!["firewall".into(), "__watchdog".into()],
            },
        }
    }

    fn ruleset(&self) -> String {
        self.target.nft(&["list", "ruleset"])
    }

    fn commit_state(&self) -> CommitState {
        let dir = self.state.0.clone();
        self.target.run_in(|| status(&dir).expect("status").commit)
    }

    /// Waits (at most 10 s) for the watchdog to roll back.
    fn wait_reverted(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if matches!(self.commit_state(), CommitState::Reverted { .. }) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no rollback within 10 s: {:?}", self.commit_state());
    }
}

fn allow(ports: &[u16]) -> Vec<InboundRule> {
    ports
        .iter()
        .map(|&p| InboundRule {
            proto: L4::Tcp,
            ports: PortRange::single(Port::new(p)),
            from: Vec::new(),
            comment: format!("test port {p}"),
        })
        .collect()
}

fn guard() -> Guard {
    Guard::from_sources(Some(&format!("{PEER} 40000 {TARGET} {GUARD}")), None)
}

fn set(ports: &[u16]) -> BTreeSet<u16> {
    ports.iter().copied().collect()
}

fn session_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" that ends the command name: state ppid pgrp session ...
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(3)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
}

#[test]
fn apply_confirm_rollback_and_remove_as_seen_by_the_scanner() {
    if !privileged_or_skip() {
        return;
    }
    let lab = Lab::new();
    // Someone else's table, which nothing of ours may touch.
    let out = lab.target.nft_load(
        "table inet bystander {\n chain c { type filter hook input priority 50; policy accept; tcp dport 9 counter; }\n}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = set(&PORTS);
    assert_eq!(lab.scan_open(), all, "before any firewall");
    let pristine = lab.ruleset();

    // 1. Apply with a 3 s window and let it lapse: everything comes back by itself.
    let script = portolan_firewall::render(&allow(&[8001, 8002]), &guard()).unwrap();
    let opts = lab.opts(Duration::from_secs(3));
    let report = lab.target.run_in(|| apply(&script, &opts)).expect("apply");
    assert!(!report.had_previous);
    let pid = report.watchdog_pid.expect("a watchdog");
    // setsid() is the watchdog's first act; give it a moment to start.
    let start = Instant::now();
    while session_of(pid) != Some(pid) && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        session_of(pid),
        Some(pid),
        "the watchdog leads its own session"
    );
    assert!(
        matches!(lab.commit_state(), CommitState::Pending { seconds_left, kernel_deadline: true, .. } if seconds_left <= 3)
    );
    assert_eq!(lab.scan_open(), set(&[GUARD, 8001, 8002]), "plan applied");
    lab.wait_reverted();
    assert_eq!(
        lab.ruleset(),
        pristine,
        "rollback restores the ruleset exactly"
    );
    assert!(lab.target.run_in(our_table).unwrap().is_none());
    assert_eq!(lab.scan_open(), all, "after the rollback");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!alive(pid), "the watchdog exits after rolling back");

    // 2. Apply and confirm in time: it stays past the window.
    let report = lab.target.run_in(|| apply(&script, &opts)).expect("apply");
    let pid = report.watchdog_pid.unwrap();
    let dir = lab.state.0.clone();
    lab.target.run_in(|| confirm(&dir)).expect("confirm");
    assert!(!alive(pid), "confirm stops the watchdog");
    let dir = lab.state.0.clone();
    let st = lab.target.run_in(|| status(&dir)).expect("status");
    assert!(matches!(st.commit, CommitState::Confirmed { .. }));
    assert!(st
        .table
        .as_deref()
        .is_some_and(|t| t.contains("policy: test port 8001")));
    assert!(
        st.warnings
            .iter()
            .any(|w| w.contains("table inet bystander")),
        "{:?}",
        st.warnings
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(matches!(lab.commit_state(), CommitState::Confirmed { .. }));
    assert_eq!(
        lab.scan_open(),
        set(&[GUARD, 8001, 8002]),
        "confirmed plan stays"
    );
    let confirmed = lab.ruleset();
    assert!(confirmed.contains("table inet bystander"));

    // 3. A second plan that does not list the guard port: the guard keeps it open; left
    //    unconfirmed, the confirmed first plan comes back.
    let script_b = portolan_firewall::render(&allow(&[8003]), &guard()).unwrap();
    let report = lab
        .target
        .run_in(|| apply(&script_b, &opts))
        .expect("apply b");
    assert!(report.had_previous);
    assert_eq!(lab.scan_open(), set(&[GUARD, 8003]), "plan b applied");
    lab.wait_reverted();
    assert_eq!(
        lab.ruleset(),
        confirmed,
        "rollback restores the confirmed plan"
    );
    assert_eq!(lab.scan_open(), set(&[GUARD, 8001, 8002]));
    let dir = lab.state.0.clone();
    let late = lab.target.run_in(|| confirm(&dir));
    assert!(late.is_err(), "confirm after the rollback is refused");

    // 4. Without the guard the port is closed: the guard rule is what kept it open.
    let unguarded = portolan_firewall::render(&allow(&[8004]), &Guard::none()).unwrap();
    let opts0 = lab.opts(Duration::ZERO);
    let report = lab
        .target
        .run_in(|| apply(&unguarded, &opts0))
        .expect("apply");
    assert!(report.watchdog_pid.is_none());
    assert_eq!(lab.scan_open(), set(&[8004]), "no guard, no port 2222");

    // 5. Remove: our table is gone, the bystander's is untouched, nothing left behind.
    let dir = lab.state.0.clone();
    assert!(lab.target.run_in(|| remove_table(&dir)).expect("remove"));
    assert!(
        !dir.exists(),
        "the state directory {} is left",
        dir.display()
    );
    assert!(lab.target.run_in(our_table).unwrap().is_none());
    assert_eq!(lab.ruleset(), pristine);
    assert_eq!(lab.scan_open(), all, "after remove");
    let left: Vec<u32> = lab.target.pids();
    assert!(
        left.is_empty(),
        "processes left in the target namespace: {left:?}"
    );
}

#[test]
fn rendered_plan_is_valid_nft_and_rejects_nothing_it_should_not() {
    if !privileged_or_skip() {
        return;
    }
    let ns = Netns::new("c");
    let rules = vec![InboundRule {
        proto: L4::Udp,
        ports: PortRange::new(Port::new(60000), Port::new(61000)).unwrap(),
        from: vec![
            "198.18.0.0/15".parse().unwrap(),
            "2001:2::/48".parse().unwrap(),
        ],
        comment: "mosh \"quoted\"; flush ruleset".to_owned(),
    }];
    let script = portolan_firewall::render(&rules, &guard()).unwrap();
    let out = ns.nft_load(&script);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Loading it twice replaces, never duplicates.
    let out = ns.nft_load(&script);
    assert!(out.status.success());
    let listed = ns.nft(&["list", "ruleset"]);
    assert_eq!(listed.matches("table inet portolan").count(), 1);
    assert_eq!(
        listed.matches("udp dport 60000-61000").count(),
        2,
        "{listed}"
    );
    assert!(
        listed.contains("policy: mosh ?quoted?; flush ruleset"),
        "{listed}"
    );
}

#[test]
fn a_second_apply_while_pending_rolls_back_to_the_state_before_the_first() {
    if !privileged_or_skip() {
        return;
    }
    let ns = Netns::new("twice");
    let state = TempDir::new("state2");
    let dir = state.0.clone();
    let nothing = ns.run_in(|| confirm(&dir));
    assert!(
        matches!(
            nothing,
            Err(portolan_firewall::FirewallError::NothingPending)
        ),
        "{nothing:?}"
    );
    let pristine = ns.nft(&["list", "ruleset"]);
    let opts = ApplyOptions {
        state_dir: dir.clone(),
        confirm_within: Duration::from_secs(3),
        watchdog: WatchdogLauncher {
            program: portolan_bin(),
            args: vec!["firewall".into(), "__watchdog".into()],
        },
    };
    let a = portolan_firewall::render(&allow(&[8001]), &guard()).unwrap();
    let b = portolan_firewall::render(&allow(&[8002]), &guard()).unwrap();
    let first = ns.run_in(|| apply(&a, &opts)).expect("apply a");
    let second = ns.run_in(|| apply(&b, &opts)).expect("apply b");
    assert!(
        !second.had_previous,
        "the state before the first apply is kept"
    );
    assert!(ns.nft(&["list", "ruleset"]).contains("dport 8002"));
    // The first watchdog sees it was superseded and leaves; the second rolls back.
    let start = Instant::now();
    while alive(first.watchdog_pid.unwrap()) && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(first.watchdog_pid.unwrap()),
        "superseded watchdog exits"
    );
    let start = Instant::now();
    while ns.nft(&["list", "ruleset"]) != pristine && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ns.nft(&["list", "ruleset"]), pristine);
    let st = ns.run_in(|| status(&dir)).unwrap();
    assert!(matches!(st.commit, CommitState::Reverted { .. }), "{st:?}");
    assert!(st.table.is_none());
}

/// A `confirm` that cannot read the ruleset (nft's listing fails) must fail, not record a
/// confirmation while the kernel still holds the window and later rolls the plan back.
#[test]
fn confirm_that_cannot_list_the_ruleset_fails_instead_of_confirming() {
    if !privileged_or_skip() {
        return;
    }
    let ns = Netns::new("blind");
    // `portolan firewall confirm` uses the namespace's default state directory; removed on
    // drop like a scratch directory.
    let state = TempDir(ns.run_in(default_state_dir));
    let dir = state.0.clone();
    let opts = ApplyOptions {
        state_dir: dir.clone(),
        confirm_within: Duration::from_secs(3),
        watchdog: WatchdogLauncher {
            program: portolan_bin(),
            args: vec!["firewall".into(), "__watchdog".into()],
        },
    };
    let script = portolan_firewall::render(&allow(&[8001]), &guard()).unwrap();
    let report = ns.run_in(|| apply(&script, &opts)).expect("apply");
    assert!(report.kernel_deadline, "{report:?}");

    // An nft that loads scripts but refuses to list anything.
    let fake = TempDir::new("fake-nft");
    let real = common::run(std::process::Command::new("sh").args(["-c", "command -v nft"]));
    let wrapper = fake.0.join("nft");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = list ]; then echo 'the test refuses to list' >&2; exit 1; fi\ndone\nexec {} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        fake.0.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = ns
        .command(portolan_bin())
        .args(["firewall", "confirm"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "confirm succeeded without reading the window: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let st = ns.run_in(|| status(&dir)).expect("status");
    assert!(
        matches!(
            st.commit,
            CommitState::Pending {
                kernel_deadline: true,
                ..
            }
        ),
        "{st:?}"
    );

    // With a working nft, confirm ends the window: the plan outlives it.
    ns.run_in(|| confirm(&dir)).expect("confirm");
    std::thread::sleep(Duration::from_secs(4));
    let st = ns.run_in(|| status(&dir)).expect("status");
    assert!(matches!(st.commit, CommitState::Confirmed { .. }), "{st:?}");
    let listed = ns.nft(&["list", "ruleset"]);
    assert!(listed.contains("dport 8001"), "{listed}");
    assert!(!listed.contains("set window"), "{listed}");
    assert!(ns.run_in(|| remove_table(&dir)).expect("remove"));
}
