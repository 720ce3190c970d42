//! `portolan firewall` from a policy file, end to end: `plan` prints the table a policy
//! asks for; in two network namespaces joined by a veth pair (198.18.78.0/24), `apply`
//! loads it in the target, portolan's scanner in the peer sees exactly the allowed ports
//! (and the SSH guard's), an unconfirmed apply rolls back by itself, a confirmed one stays,
//! `remove` deletes it. Root only (CI runs it); namespaces, listeners, state and the
//! watchdog are removed afterwards.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{portolan, portolan_cmd, run_cmd};

const TARGET: &str = "198.18.78.1";
const PEER: &str = "198.18.78.2";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("portolan-fw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const POLICY: &str = r#"version = 1

[[allow]]
port = 8001
proto = "tcp"
comment = "web"

[[allow]]
port = "8002-8003"
proto = "tcp"
from = ["198.18.78.0/24"]
comment = "internal"

[[allow]]
port = 9000
proto = "tcp"
address = ["loopback"]
comment = "local only"
"#;

#[test]
fn plan_prints_exactly_what_the_policy_allows() {
    let dir = Scratch::new("plan");
    let policy = dir.write("policy.toml", POLICY);
    let r = portolan(&["firewall", "plan", "--policy", &policy]);
    r.expect_code(0);
    let t = &r.stdout;
    assert!(t.contains("table inet portolan {"), "{t}");
    assert!(t.contains("policy drop;"), "{t}");
    assert!(t.contains("tcp dport 8001 accept"), "{t}");
    assert!(
        t.contains("ip saddr 198.18.78.0/24 tcp dport 8002-8003 accept"),
        "{t}"
    );
    // Loopback-only entries need no inbound rule (loopback is always let in).
    assert!(!t.contains("dport 9000"), "{t}");
    assert!(t.contains("iif \"lo\" accept"), "{t}");
    // The SSH guard is there unless asked away.
    assert!(t.contains("SSH guard"), "{t}");
    let r = portolan(&["firewall", "plan", "--policy", &policy, "--no-ssh-guard"]);
    assert!(!r.stdout.contains("SSH guard"), "{}", r.stdout);

    // A bad policy: file, line and column; nothing printed.
    let bad = dir.write("bad.toml", "version = 1\n[[allow]]\nport = 70000\n");
    let r = portolan(&["firewall", "plan", "--policy", &bad]);
    r.expect_code(2);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("bad.toml:3:"), "{}", r.stderr);
}

/// Two namespaces joined by a veth pair, deleted when dropped (with whatever runs there).
struct Lab {
    target: String,
    peer: String,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

impl Lab {
    fn new() -> Lab {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = std::process::id();
        let lab = Lab {
            target: format!("pfw-t-{id}-{n}"),
            peer: format!("pfw-p-{id}-{n}"),
        };
        ip(&["netns", "add", &lab.target]);
        ip(&["netns", "add", &lab.peer]);
        ip(&[
            "-n",
            &lab.target,
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            &lab.peer,
        ]);
        ip(&[
            "-n",
            &lab.target,
            "addr",
            "add",
            &format!("{TARGET}/24"),
            "dev",
            "veth0",
        ]);
        ip(&[
            "-n",
            &lab.peer,
            "addr",
            "add",
            &format!("{PEER}/24"),
            "dev",
            "veth0",
        ]);
        for ns in [&lab.target, &lab.peer] {
            ip(&["-n", ns, "link", "set", "veth0", "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// `portolan ARGS` inside namespace `ns`.
    fn portolan_in(ns: &str, args: &[&str]) -> common::Run {
        let bin = portolan_cmd(&[]).get_program().to_owned();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(bin).args(args);
        c.env("NO_COLOR", "1").env_remove("SSH_CONNECTION");
        run_cmd(c)
    }

    /// `nft list ruleset` in the target.
    fn nft_ruleset(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.target, "nft", "list", "ruleset"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    /// The ports of `list` that the scanner in the peer finds open on the target.
    fn open(&self, list: &[u16]) -> BTreeSet<u16> {
        let ports: Vec<String> = list.iter().map(ToString::to_string).collect();
        let r = Lab::portolan_in(
            &self.peer,
            &[
                "scan",
                TARGET,
                "-p",
                &ports.join(","),
                "-n",
                "--json",
                "--timeout",
                "400",
                "--max-retries",
                "1",
            ],
        );
        let v = r.json();
        v["ports"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "open")
            .map(|p| u16::try_from(p["port"].as_u64().unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Our table and its state (under /run, per namespace), even after a failure.
        let _ = Lab::portolan_in(&self.target, &["firewall", "remove"]);
        for ns in [&self.target, &self.peer] {
            // Whatever still runs there (listeners, a watchdog) goes with it.
            let _ = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                });
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

#[test]
fn apply_rolls_back_unless_confirmed_and_the_scanner_sees_only_what_is_allowed() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::root().and_then(|()| {
        if Command::new("nft").arg("--version").output().is_ok() {
            Ok(())
        } else {
            Err("needs nft (scripts/test.sh installs nftables)".into())
        }
    })) {
        return;
    }
    let dir = Scratch::new("apply");
    let policy = dir.write("policy.toml", POLICY);
    let lab = Lab::new();
    let all = [22u16, 8001, 8002, 8003, 8004];
    let _l = lab.listen(&all);
    let everything: BTreeSet<u16> = all.into_iter().collect();
    assert_eq!(lab.open(&all), everything, "before any apply");
    apply_scenario(&lab, &policy, &all);
}

impl Lab {
    /// Listeners in the target on `ports`, until dropped.
    fn listen(&self, all: &[u16]) -> common::KillOnDrop {
        let code = format!(
            "import socket, time\nls = []\nfor p in {all:?}:\n    s = socket.socket()\n    \
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    s.bind(('{TARGET}', p))\n    \
         s.listen(16)\n    ls.append(s)\nprint('up', flush=True)\ntime.sleep(120)\n"
        );
        let mut listeners = Command::new("ip")
            .args(["netns", "exec", &self.target, common::python(), "-c", &code])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(listeners.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "up");
        common::KillOnDrop(listeners)
    }
}

fn apply_scenario(lab: &Lab, policy: &str, all: &[u16]) {
    let policy = policy.to_owned();
    let all = all.to_vec();
    let everything: BTreeSet<u16> = all.iter().copied().collect();

    // Apply with a 3 s window: only the policy's ports and the guard's are reachable.
    let r = Lab::portolan_in(
        &lab.target,
        &[
            "firewall",
            "apply",
            "--policy",
            &policy,
            "--confirm-within",
            "3",
        ],
    );
    r.expect_code(0);
    assert!(r.stdout.contains("confirm"), "{}", r.stdout);
    let allowed: BTreeSet<u16> = [22, 8001, 8002, 8003].into_iter().collect();
    assert_eq!(lab.open(&all), allowed, "after apply");
    let st = Lab::portolan_in(&lab.target, &["firewall", "status"]);
    assert!(st.stdout.contains("pending"), "{}", st.stdout);

    // Not confirmed: it rolls back by itself, and everything is reachable again.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let st = Lab::portolan_in(&lab.target, &["firewall", "status"]);
        if st.stdout.contains("rolled back") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let st = Lab::portolan_in(&lab.target, &["firewall", "status"]);
    assert!(st.stdout.contains("rolled back"), "{}", st.stdout);
    assert!(st.stdout.contains("not loaded"), "{}", st.stdout);
    assert_eq!(lab.open(&all), everything, "after the rollback");

    // Applied and confirmed in time: it stays past the window.
    Lab::portolan_in(
        &lab.target,
        &[
            "firewall",
            "apply",
            "--policy",
            &policy,
            "--confirm-within",
            "3",
        ],
    )
    .expect_code(0);
    Lab::portolan_in(&lab.target, &["firewall", "confirm"]).expect_code(0);
    std::thread::sleep(Duration::from_secs(4));
    let st = Lab::portolan_in(&lab.target, &["firewall", "status"]);
    assert!(st.stdout.contains("confirmed"), "{}", st.stdout);
    assert_eq!(lab.open(&all), allowed, "confirmed");

    // Removed: all reachable again, and our table is gone.
    Lab::portolan_in(&lab.target, &["firewall", "remove"]).expect_code(0);
    assert_eq!(lab.open(&all), everything, "after remove");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.target, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("portolan"),
        "table left behind"
    );
}

#[test]
fn without_root_it_says_so_plainly() {
    use std::os::unix::fs::PermissionsExt;
    if !portolan_testsupport::skip_unless(portolan_testsupport::root()) {
        return;
    }
    // The binary and the policy where user nobody can read them.
    let dir = Scratch::new("nobody");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.0.join("portolan");
    std::fs::copy(portolan_cmd(&[]).get_program(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = dir.write("policy.toml", POLICY);
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(args)
            .current_dir("/");
        run_cmd(c)
    };
    for args in [
        &["firewall", "apply", "--policy", policy.as_str()][..],
        &["firewall", "confirm"],
        &["firewall", "status"],
        &["firewall", "remove"],
    ] {
        let r = as_nobody(args);
        r.expect_code(2);
        assert!(r.stderr.contains("needs root"), "{args:?}: {}", r.stderr);
    }
    // Planning needs no privilege; the audit says what it skipped.
    as_nobody(&["firewall", "plan", "--policy", &policy]).expect_code(0);
    let r = as_nobody(&["audit"]);
    assert!(
        r.stderr.contains("firewall verdicts skipped"),
        "{}",
        r.stderr
    );
}

/// The state directory portolan uses for namespace `ns` (per network namespace inode).
fn state_dir_of(ns: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino();
    PathBuf::from(format!("/run/portolan/firewall/netns-{ino}"))
}

/// Issue 12: the rollback must not depend on the watchdog surviving. SIGKILL it: at the
/// deadline the kernel stops admitting by the unconfirmed rules by itself (seen from the
/// peer before any portolan command runs), and the next `status` tidies up and says so.
#[test]
fn a_killed_watchdog_still_rolls_back_and_status_says_what_happened() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::all([
        portolan_testsupport::root(),
        portolan_testsupport::program("nft"),
    ])) {
        return;
    }
    let dir = Scratch::new("killdog");
    let policy = dir.write("policy.toml", POLICY);
    let lab = Lab::new();
    let all = [22u16, 8001, 8002, 8003, 8004];
    let _l = lab.listen(&all);
    let everything: BTreeSet<u16> = all.into_iter().collect();
    assert_eq!(lab.open(&all), everything, "before any apply");
    let pristine = lab.nft_ruleset();
    Lab::portolan_in(
        &lab.target,
        &[
            "firewall",
            "apply",
            "--policy",
            &policy,
            "--confirm-within",
            "3",
        ],
    )
    .expect_code(0);
    let allowed: BTreeSet<u16> = [22, 8001, 8002, 8003].into_iter().collect();
    assert_eq!(lab.open(&all), allowed, "after apply");
    let pid: i32 = std::fs::read_to_string(state_dir_of(&lab.target).join("watchdog.pid"))
        .expect("watchdog.pid")
        .trim()
        .parse()
        .unwrap();
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        common::wait_for(Duration::from_secs(2), || !common::pid_alive(
            u32::try_from(pid).unwrap()
        )),
        "watchdog {pid} survived SIGKILL"
    );
    let st = Lab::portolan_in(&lab.target, &["firewall", "status"]);
    assert!(
        st.stdout.contains(&format!("watchdog pid {pid} dead")),
        "{}",
        st.stdout
    );
    assert!(
        st.stdout.contains("kernel holds the deadline"),
        "{}",
        st.stdout
    );
    // Past the deadline, before any portolan command: the kernel alone rolled back.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        lab.open(&all),
        everything,
        "after the deadline, watchdog dead"
    );
    let st = Lab::portolan_in(&lab.target, &["firewall", "status"]);
    st.expect_code(1);
    assert!(
        st.stdout.contains("rollback overdue: performed now"),
        "{}",
        st.stdout
    );
    assert!(st.stdout.contains("not loaded"), "{}", st.stdout);
    assert_eq!(
        lab.nft_ruleset(),
        pristine,
        "the ruleset is as before apply"
    );
    // Asked again, it is history, not news.
    let st = Lab::portolan_in(&lab.target, &["firewall", "status"]);
    assert!(
        st.stdout.contains("rolled back") && !st.stdout.contains("performed now"),
        "{}",
        st.stdout
    );
    // Too late to confirm.
    let c = Lab::portolan_in(&lab.target, &["firewall", "confirm"]);
    c.expect_code(2);
    assert!(c.stderr.contains("too late"), "{}", c.stderr);
}

const SSH_RESTRICTED: &str = r#"version = 1

[[allow]]
port = 22
proto = "tcp"
from = ["198.18.5.5"]
comment = "ssh from the bastion only"

[[allow]]
port = 8001
proto = "tcp"
"#;

/// `firewall plan` with SSH_CONNECTION set (or removed) in the environment.
fn plan_with_session(policy: &str, session: Option<&str>) -> common::Run {
    let mut c = portolan_cmd(&["firewall", "plan", "--policy", policy]);
    match session {
        Some(s) => c.env("SSH_CONNECTION", s),
        None => c.env_remove("SSH_CONNECTION"),
    };
    run_cmd(c)
}

/// Issue 12: a policy that restricts the SSH port's sources is followed by the guard; the
/// guard no longer opens tcp/22 to everyone behind the policy's back.
#[test]
fn the_ssh_guard_follows_the_policys_sources() {
    let dir = Scratch::new("guard");
    let policy = dir.write("policy.toml", SSH_RESTRICTED);
    let r = plan_with_session(&policy, None);
    r.expect_code(0);
    let guard_lines: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("dport 22 "))
        .collect();
    assert!(!guard_lines.is_empty(), "{}", r.stdout);
    for l in &guard_lines {
        assert!(
            l.trim_start()
                .starts_with("ip saddr 198.18.5.5 tcp dport 22 accept"),
            "tcp/22 admitted beyond the policy's sources: {l}\n{}",
            r.stdout
        );
    }
    assert!(
        r.stdout.contains("SSH guard"),
        "the guard rule is still there: {}",
        r.stdout
    );
    // Inside an SSH session from elsewhere, the guard keeps that client in, and says so.
    let r = plan_with_session(&policy, Some("198.51.100.9 50000 198.18.0.1 22"));
    r.expect_code(0);
    assert!(
        r.stdout
            .contains("ip saddr { 198.18.5.5, 198.51.100.9 } tcp dport 22 accept"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("warning")
            && r.stderr.contains("198.51.100.9")
            && r.stderr.contains("--no-ssh-guard"),
        "{}",
        r.stderr
    );
    // A policy without an entry for the port: the guard opens it to all, and says so.
    let open = dir.write("open.toml", "version = 1\n[[allow]]\nport = 8001\n");
    let r = plan_with_session(&open, None);
    assert!(r.stdout.contains("\ttcp dport 22 accept"), "{}", r.stdout);
    assert!(
        r.stderr.contains("every source") && r.stderr.contains("--no-ssh-guard"),
        "{}",
        r.stderr
    );
}

/// The same in a namespace: the peer (198.18.78.2) is not the policy's SSH source, so
/// tcp/22 is closed to it, while the policy's open port stays reachable.
#[test]
fn the_ssh_guard_follows_the_policys_sources_on_the_wire() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::all([
        portolan_testsupport::root(),
        portolan_testsupport::program("nft"),
    ])) {
        return;
    }
    let dir = Scratch::new("guardwire");
    let policy = dir.write("policy.toml", SSH_RESTRICTED);
    let lab = Lab::new();
    let all = [22u16, 8001, 8002];
    let _l = lab.listen(&all);
    Lab::portolan_in(
        &lab.target,
        &[
            "firewall",
            "apply",
            "--policy",
            &policy,
            "--confirm-within",
            "0",
        ],
    )
    .expect_code(0);
    let open: BTreeSet<u16> = [8001].into_iter().collect();
    assert_eq!(lab.open(&all), open, "tcp/22 must follow the policy's from");
    Lab::portolan_in(&lab.target, &["firewall", "remove"]).expect_code(0);
}
