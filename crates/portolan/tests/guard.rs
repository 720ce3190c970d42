//! `portolan guard` and `portolan knock`, end to end, as root: a server namespace runs the
//! guard in front of a TCP service, a client namespace (joined by a veth pair, 198.18.60.0/24
//! and 2001:2:60::/64) knocks. Checked as a user would: whether a connection gets through,
//! from which address, for how long, and what the guard's event stream says. Namespaces
//! (and with them the guard, its table and the service) are removed at the end.

mod common;

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portolan_guard::client::spa_packet;
use portolan_guard::keys::ClientKeyFile;
use portolan_guard::run::unix_now;
use portolan_testsupport::Netns;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portolan");
const S4: &str = "198.18.60.1";
const C4: &str = "198.18.60.2";
const C4B: &str = "198.18.60.3";
const S6: &str = "2001:2:60::1";
const C6: &str = "2001:2:60::2";
const SERVICE: u16 = 2222;

fn ready() -> bool {
    portolan_testsupport::skip_unless(portolan_testsupport::all([
        Netns::ready(),
        portolan_testsupport::program("nft"),
        portolan_testsupport::program("socat"),
    ]))
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loads an nftables script in a namespace.
fn nft_load(ns: &Netns, script: &str) {
    let mut nft = ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft -f: {script}");
}

/// Two namespaces joined by a veth pair; a service that echoes in the server namespace.
struct Lab {
    server: Netns,
    client: Netns,
    dir: PathBuf,
    guard: Option<Child>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let server = Netns::with_prefix("pg", &format!("{tag}s"));
        let client = Netns::with_prefix("pg", &format!("{tag}c"));
        ip(&[
            "link",
            "add",
            "gv0",
            "netns",
            &server.name,
            "type",
            "veth",
            "peer",
            "name",
            "gv1",
            "netns",
            &client.name,
        ]);
        server.ip(&["addr", "add", &format!("{S4}/24"), "dev", "gv0"]);
        server.ip(&["addr", "add", &format!("{S6}/64"), "dev", "gv0", "nodad"]);
        server.ip(&["link", "set", "gv0", "up"]);
        for a in [C4, C4B] {
            client.ip(&["addr", "add", &format!("{a}/24"), "dev", "gv1"]);
        }
        client.ip(&["addr", "add", &format!("{C6}/64"), "dev", "gv1", "nodad"]);
        client.ip(&["link", "set", "gv1", "up"]);
        let dir = std::env::temp_dir().join(format!("portolan-guard-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The service: a dual-stack echo listener inside the server namespace.
        let listener =
            server.run_in(|| TcpListener::bind(("::", SERVICE)).expect("bind the service"));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Lab {
            server,
            client,
            dir,
            guard: None,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    fn init(&self) {
        let r = common::portolan(&[
            "guard",
            "init",
            "--port",
            &format!("{SERVICE}/tcp"),
            "--client",
            "alice",
            "--dir",
            self.dir.to_str().unwrap(),
        ]);
        r.expect_code(0);
        assert!(r.stdout.contains("portolan knock HOST"), "{}", r.stdout);
    }

    fn started_count(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "started")
            .count()
    }

    fn start_guard(&mut self) {
        self.start_guard_with(None, &[]);
    }

    /// Starts the guard with `extra` arguments after the usual ones; with `ssh`, as if
    /// from inside that SSH session (`$SSH_CONNECTION`), with the SSH guard on.
    fn start_guard_with(&mut self, ssh: Option<&str>, extra: &[&str]) {
        let before = self.started_count();
        let events = self.path("events.jsonl");
        let mut cmd = self.server.command(BIN);
        cmd.args([
            "guard",
            "--config",
            &self.path("guard.toml"),
            "--events",
            &events,
        ]);
        match ssh {
            Some(conn) => {
                cmd.env("SSH_CONNECTION", conn);
            }
            None => {
                cmd.env_remove("SSH_CONNECTION").arg("--no-ssh-guard");
            }
        }
        let child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path("guard.stderr"))
                    .unwrap(),
            )
            .spawn()
            .expect("start the guard");
        self.guard = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.started_count() == before || !self.table_loaded() {
            if let Some(status) = self.guard.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the guard exited ({status}): {}",
                    std::fs::read_to_string(self.path("guard.stderr")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the guard did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_guard(&mut self) {
        if let Some(mut c) = self.guard.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "the guard did not stop on SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn table_loaded(&self) -> bool {
        let out = self
            .server
            .command("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("portolan_guard")
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The results of the decisions so far, in order.
    fn results(&self) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "decision")
            .map(|e| e["decision"]["result"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Waits until there are `n` decisions; their results.
    fn wait_results(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = self.results();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a TCP connection from the client namespace (from `src`) to `dst` gets through
    /// within a second.
    fn connects(&self, src: &str, dst: &str) -> bool {
        let target = if dst.contains(':') {
            format!("TCP6:[{dst}]:{SERVICE},bind=[{src}],connect-timeout=1")
        } else {
            format!("TCP4:{dst}:{SERVICE},bind={src},connect-timeout=1")
        };
        self.client
            .command("socat")
            .args(["-T1", "/dev/null", &target])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    fn knock(&self, args: &[&str]) -> common::Run {
        let mut cmd = self.client.command(BIN);
        cmd.arg("knock").args(args);
        common::run_cmd(cmd)
    }

    /// Sends raw bytes to the guard's SPA port from `src` in the client namespace.
    fn send_from(&self, src: &str, bytes: &[u8]) {
        let src: std::net::IpAddr = src.parse().unwrap();
        let dst: std::net::IpAddr = if src.is_ipv4() {
            S4.parse().unwrap()
        } else {
            S6.parse().unwrap()
        };
        self.client.run_in(|| {
            let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
            s.send_to(
                bytes,
                SocketAddr::new(dst, portolan_guard::DEFAULT_SPA_PORT),
            )
            .unwrap();
        });
    }

    fn alice(&self) -> ClientKeyFile {
        ClientKeyFile::load(Path::new(&self.path("alice.key"))).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.guard.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_knock_opens_the_port_for_that_address_only_and_for_a_while() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("open");
    lab.init();
    assert!(
        lab.connects(C4, S4),
        "the service answers before the guard starts"
    );
    lab.start_guard();
    assert!(!lab.connects(C4, S4), "guarded: filtered before a knock");
    let key = lab.path("alice.key");
    let pkt = lab.path("alice.pkt");
    let r = lab.knock(&[
        S4,
        "-p",
        "2222/tcp",
        "--key",
        &key,
        "--for",
        "3s",
        "--save-packet",
        &pkt,
    ]);
    r.expect_code(0);
    assert!(r.stdout.contains("answers"), "{}", r.stdout);
    assert_eq!(lab.wait_results(1), ["accepted"]);
    assert!(lab.connects(C4, S4), "open for the knocking address");
    assert!(
        !lab.connects(C4B, S4),
        "not for another address of the same machine"
    );
    // An established connection outlives the access.
    let mut held = lab.client.run_in(|| {
        TcpStream::connect_timeout(
            &format!("{S4}:{SERVICE}").parse().unwrap(),
            Duration::from_secs(1),
        )
        .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(8);
    while lab.connects(C4, S4) {
        assert!(
            Instant::now() < deadline,
            "access did not end after --for 3s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    held.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    held.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    held.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");

    // The captured packet, replayed from another address and from the same one: refused.
    let bytes = std::fs::read(&pkt).unwrap();
    lab.send_from(C4B, &bytes);
    lab.send_from(C4, &bytes);
    assert_eq!(lab.wait_results(3), ["accepted", "replay", "replay"]);
    assert!(!lab.connects(C4B, S4) && !lab.connects(C4, S4));
    // Also after the guard restarts.
    lab.stop_guard();
    lab.start_guard();
    lab.send_from(C4, &bytes);
    assert_eq!(lab.wait_results(4)[3], "replay");
    assert!(!lab.connects(C4, S4));

    // Outside the window, a flipped byte, a stranger's key, a port the client may not open,
    // an address the client may not name.
    let alice = lab.alice();
    let port: portolan_guard::PortProto = "2222/tcp".parse().unwrap();
    let old = spa_packet(&alice, &[port], None, None, unix_now() - 120).unwrap();
    lab.send_from(C4, &old);
    let mut bad = spa_packet(&alice, &[port], None, None, unix_now()).unwrap();
    bad[60] ^= 0x20;
    lab.send_from(C4, &bad);
    let stranger_dir = lab.dir.join("stranger");
    portolan_guard::config::init(
        &stranger_dir,
        &[port],
        "alice",
        portolan_guard::DEFAULT_SPA_PORT,
        None,
    )
    .unwrap();
    let stranger = ClientKeyFile::load(&stranger_dir.join("alice.key")).unwrap();
    lab.send_from(
        C4,
        &spa_packet(&stranger, &[port], None, None, unix_now()).unwrap(),
    );
    let other: portolan_guard::PortProto = "2223/tcp".parse().unwrap();
    lab.send_from(
        C4,
        &spa_packet(&alice, &[other], None, None, unix_now()).unwrap(),
    );
    let elsewhere = Some(C4B.parse().unwrap());
    lab.send_from(
        C4,
        &spa_packet(&alice, &[port], None, elsewhere, unix_now()).unwrap(),
    );
    assert_eq!(
        lab.wait_results(9)[4..],
        [
            "outside_window",
            "bad_mac",
            "unknown_client",
            "not_allowed",
            "address_not_allowed"
        ]
    );
    assert!(
        !lab.connects(C4, S4) && !lab.connects(C4B, S4),
        "nothing opened"
    );

    // A spoofed source: a valid "as seen" packet sent with a forged source address opens
    // for that address, which the sender does not hold: the sender gets nothing.
    let fresh = spa_packet(&alice, &[port], None, None, unix_now()).unwrap();
    let spoof = lab.path("spoof.bin");
    std::fs::write(&spoof, &fresh).unwrap();
    let sent = lab
        .client
        .command("python3")
        .args([
            "-c",
            r#"
import socket, struct, sys
data = open(sys.argv[1], "rb").read()
src, dst = socket.inet_aton("198.18.60.77"), socket.inet_aton(sys.argv[2])
udp = struct.pack("!HHHH", 40000, 62201, 8 + len(data), 0) + data
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(ip + udp, (sys.argv[2], 0))
"#,
            &spoof,
            S4,
        ])
        .status()
        .unwrap();
    assert!(sent.success());
    let r = lab.wait_results(10);
    assert_eq!(r[9], "accepted", "{r:?}");
    let last = lab
        .events()
        .into_iter()
        .rfind(|e| e["event"] == "decision")
        .unwrap();
    assert_eq!(last["decision"]["grant"]["addr"], "198.18.60.77", "{last}");
    assert!(
        !lab.connects(C4, S4) && !lab.connects(C4B, S4),
        "the spoofer gets nothing"
    );

    // IPv6: the same knock over IPv6 opens for the IPv6 address.
    assert!(!lab.connects(C6, S6));
    lab.knock(&[S6, "-p", "2222/tcp", "--key", &key])
        .expect_code(0);
    assert!(lab.connects(C6, S6));
    assert!(!lab.connects(C4, S4), "IPv6 access is not IPv4 access");

    // status lists the access; the guard's stderr names every decision, escaped.
    let st = lab
        .server
        .command(BIN)
        .args(["guard", "status"])
        .output()
        .unwrap();
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(st.contains(C6) && st.contains("2222"), "{st}");
    let err = std::fs::read_to_string(lab.path("guard.stderr")).unwrap();
    assert!(
        err.contains("refused spa") && err.contains("replay"),
        "{err}"
    );
    lab.stop_guard();
    assert!(
        lab.table_loaded(),
        "the table stays when the guard stops: the port stays hidden"
    );
    assert!(!lab.connects(C4B, S4));
    let r = common::run_cmd({
        let mut c = lab.server.command(BIN);
        c.args(["guard", "remove"]);
        c
    });
    r.expect_code(0);
    assert!(!lab.table_loaded());
    assert!(
        lab.connects(C4B, S4),
        "after remove the port is reachable again"
    );
}

/// A webhook receiver on loopback in `ns` (where the guard runs): records each JSON POST
/// body, answers 200.
fn webhook_receiver(ns: &Netns) -> (String, Arc<Mutex<Vec<Value>>>) {
    common::webhook_receiver_on(
        ns.run_in(|| TcpListener::bind(("127.0.0.1", 0)).expect("bind the receiver")),
    )
}

#[test]
fn decisions_reach_the_webhook() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("hook");
    lab.init();
    let (url, posted) = webhook_receiver(&lab.server);
    // A URL that is not http(s) stops the guard before it starts, without echoing a token.
    let r = common::run_cmd({
        let mut c = lab.server.command(BIN);
        c.args(["guard", "--config", &lab.path("guard.toml")])
            .args(["--webhook", "ftp://example.com/hook?token=zzz"]);
        c
    });
    r.expect_code(2);
    assert!(
        r.stderr.contains("--webhook") && !r.stderr.contains("zzz"),
        "{}",
        r.stderr
    );
    assert!(!lab.table_loaded());
    lab.start_guard_with(None, &["--webhook", &url, "--webhook-retries", "1"]);
    let key = lab.path("alice.key");
    let pkt = lab.path("alice.pkt");
    lab.knock(&[S4, "-p", "2222/tcp", "--key", &key, "--save-packet", &pkt])
        .expect_code(0);
    // The same packet again: a refusal, alerted too.
    lab.send_from(C4, &std::fs::read(&pkt).unwrap());
    assert_eq!(lab.wait_results(2), ["accepted", "replay"]);
    let hooked = || -> Vec<Value> {
        posted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| {
                let obj = body.as_object().expect("the body is one JSON object");
                assert_eq!(
                    obj.len(),
                    1,
                    "only `events` in the body, as watch sends: {body}"
                );
                obj["events"]
                    .as_array()
                    .expect("an array of events")
                    .clone()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while hooked().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the webhook got {:#?}\nthe guard said:\n{}",
            hooked(),
            std::fs::read_to_string(lab.path("guard.stderr")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = hooked();
    assert_eq!(got.len(), 2, "decisions only (no `started`): {got:#?}");
    let accepted = &got[0];
    assert_eq!(accepted["event"], "decision", "{accepted}");
    assert_eq!(accepted["decision"]["result"], "accepted", "{accepted}");
    assert_eq!(accepted["decision"]["client"], "alice", "{accepted}");
    assert_eq!(accepted["decision"]["source"], C4, "{accepted}");
    assert_eq!(got[1]["decision"]["result"], "replay", "{got:#?}");
    // The very objects --events has (same timestamps).
    let file: Vec<Value> = lab
        .events()
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .collect();
    assert_eq!(got, file);
    lab.stop_guard();
}

#[test]
fn a_fixed_knock_sequence_opens_and_a_wrong_one_does_not() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("seq");
    lab.init();
    let mut cfg = std::fs::read_to_string(lab.path("guard.toml")).unwrap();
    cfg.push_str(
        "\n[[knock]]\nname = \"legacy\"\nsequence = [\"7000/tcp\", \"8000/udp\", \"9000/tcp\"]\nwithin = \"5s\"\nopen = [\"2222/tcp\"]\nopen_for = \"20s\"\n",
    );
    std::fs::write(lab.path("guard.toml"), cfg).unwrap();
    lab.start_guard();
    assert!(!lab.connects(C4, S4));
    // Wrong order: nothing.
    lab.knock(&[S4, "--sequence", "7000/tcp,9000/tcp,8000/udp", "--no-check"])
        .expect_code(0);
    assert!(!lab.connects(C4, S4));
    let r = lab.knock(&[
        S4,
        "--sequence",
        "7000/tcp,8000/udp,9000/tcp",
        "-p",
        "2222/tcp",
    ]);
    r.expect_code(0);
    assert!(lab.connects(C4, S4));
    assert!(!lab.connects(C4B, S4));
    assert!(
        lab.results().contains(&"accepted".to_owned()),
        "{:?}",
        lab.results()
    );
    // Once open, the command after `--` runs, and its exit status is knock's.
    let marker = lab.path("ran");
    let r = lab.knock(&[
        S4,
        "--sequence",
        "7000/tcp,8000/udp,9000/tcp",
        "-p",
        "2222/tcp",
        "--",
        "touch",
        &marker,
    ]);
    r.expect_code(0);
    assert!(Path::new(&marker).exists(), "the command ran");
    let r = lab.knock(&[
        S4,
        "--sequence",
        "7000/tcp,8000/udp,9000/tcp",
        "-p",
        "2222/tcp",
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    r.expect_code(7);
}

/// nmap's verdict for each port of `ports` (`-sS` or `-sU`) from the client namespace, from
/// `src`.
fn nmap_states(
    lab: &Lab,
    scan: &str,
    src: &str,
    ports: &str,
) -> std::collections::BTreeMap<u16, String> {
    let out = lab
        .client
        .command("nmap")
        .args([
            scan,
            "-n",
            "-Pn",
            "-T4",
            "--max-retries",
            "2",
            "-S",
            src,
            "-e",
            "gv1",
            "-p",
            ports,
            "-oG",
            "-",
            S4,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run nmap");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut states = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("Ports:")) {
        let ports = line.split("Ports:").nth(1).unwrap_or("");
        for item in ports.split(',') {
            let f: Vec<&str> = item.trim().split('/').collect();
            if f.len() > 2 {
                if let Ok(p) = f[0].parse::<u16>() {
                    states.insert(p, f[1].to_owned());
                }
            }
        }
    }
    states
}

#[test]
fn nmap_cannot_tell_the_spa_port_or_a_guarded_port_from_a_filtered_one() {
    if !ready() || !portolan_testsupport::skip_unless(portolan_testsupport::program("nmap")) {
        return;
    }
    let mut lab = Lab::new("nmap");
    lab.init();
    // Reference ports dropped by a plain firewall rule: what "filtered" looks like here.
    let rules = "table inet reference {\n chain input {\n  type filter hook input priority filter; policy accept;\n  tcp dport 2224 drop\n  udp dport 2225 drop\n }\n}\n";
    nft_load(&lab.server, rules);
    // alice may open another address than its own (here: the scanner's neighbour).
    let cfg = std::fs::read_to_string(lab.path("guard.toml")).unwrap();
    std::fs::write(
        lab.path("guard.toml"),
        cfg.replace("allow = [", "open_other = true\nallow = ["),
    )
    .unwrap();
    lab.start_guard();
    let spa = portolan_guard::DEFAULT_SPA_PORT;
    for round in ["before a knock", "after someone else's knock"] {
        let tcp = nmap_states(&lab, "-sS", C4, &format!("{SERVICE},2224,{spa}"));
        assert_eq!(tcp.get(&SERVICE), tcp.get(&2224), "{round}: {tcp:?}");
        assert_eq!(tcp.get(&spa), tcp.get(&2224), "{round}: {tcp:?}");
        assert_eq!(
            tcp.get(&2224).map(String::as_str),
            Some("filtered"),
            "{round}: {tcp:?}"
        );
        let udp = nmap_states(&lab, "-sU", C4, &format!("{spa},2225"));
        assert_eq!(udp.get(&spa), udp.get(&2225), "{round}: {udp:?}");
        assert_eq!(
            udp.get(&2225).map(String::as_str),
            Some("open|filtered"),
            "{round}: {udp:?}"
        );
        if round == "before a knock" {
            // Someone else (C4B) opens the service for themselves.
            lab.knock(&[
                S4,
                "-p",
                "2222/tcp",
                "--key",
                &lab.path("alice.key"),
                "--open-for",
                C4B,
                "--no-check",
            ])
            .expect_code(0);
            // (nmap's own UDP probes to the SPA port were refused as bad_mac before it.)
            let deadline = Instant::now() + Duration::from_secs(5);
            while !lab.results().iter().any(|r| r == "accepted") {
                assert!(Instant::now() < deadline, "{:?}", lab.results());
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(lab.connects(C4B, S4), "the other address has access");
        }
    }
    // The guard answered nobody: no reply of any kind left the server for the SPA port.
    assert!(!lab.connects(C4, S4));
}

#[test]
fn a_client_behind_nat_opens_for_the_address_the_guard_sees() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("nat");
    lab.init();
    // A third namespace behind the client namespace, which masquerades it.
    let inner = Netns::with_prefix("pg", "nati");
    ip(&[
        "link",
        "add",
        "nv0",
        "netns",
        &lab.client.name,
        "type",
        "veth",
        "peer",
        "name",
        "nv1",
        "netns",
        &inner.name,
    ]);
    lab.client
        .ip(&["addr", "add", "198.18.61.1/24", "dev", "nv0"]);
    lab.client.ip(&["link", "set", "nv0", "up"]);
    inner.ip(&["addr", "add", "198.18.61.2/24", "dev", "nv1"]);
    inner.ip(&["link", "set", "nv1", "up"]);
    inner.ip(&["route", "add", "default", "via", "198.18.61.1"]);
    let ok = lab
        .client
        .command("sysctl")
        .args(["-qw", "net.ipv4.ip_forward=1"])
        .status()
        .unwrap();
    assert!(ok.success());
    let masq = "table ip natlab {\n chain post {\n  type nat hook postrouting priority srcnat;\n  oifname \"gv1\" masquerade\n }\n}\n";
    nft_load(&lab.client, masq);
    lab.start_guard();
    let reach = |ns: &Netns| {
        ns.command("socat")
            .args([
                "-T1",
                "/dev/null",
                &format!("TCP4:{S4}:{SERVICE},connect-timeout=1"),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(!reach(&inner));
    // Asking for its own (private) address is refused: the guard sees the router's.
    let mut cmd = inner.command(BIN);
    cmd.args([
        "knock",
        S4,
        "-p",
        "2222/tcp",
        "--key",
        &lab.path("alice.key"),
        "--open-for",
        "198.18.61.2",
        "--wait",
        "1s",
    ]);
    common::run_cmd(cmd).expect_code(1);
    assert_eq!(lab.wait_results(1), ["address_not_allowed"]);
    // "As seen" (the default) opens for the NAT's address, and the client gets through.
    let mut cmd = inner.command(BIN);
    cmd.args([
        "knock",
        S4,
        "-p",
        "2222/tcp",
        "--key",
        &lab.path("alice.key"),
    ]);
    common::run_cmd(cmd).expect_code(0);
    let d = lab
        .events()
        .into_iter()
        .rfind(|e| e["event"] == "decision")
        .unwrap();
    assert_eq!(d["decision"]["grant"]["addr"], C4, "{d}");
    assert!(reach(&inner));
}

#[test]
fn a_one_time_sequence_opens_once() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("otp");
    let r = common::portolan(&[
        "guard",
        "init",
        "--port",
        "2222/tcp",
        "--client",
        "alice",
        "--dir",
        lab.dir.to_str().unwrap(),
        "--one-time-knock",
    ]);
    r.expect_code(0);
    lab.start_guard();
    assert!(!lab.connects(C4, S4));
    let key = lab.path("knock.key");
    // Knock early in a period, so that the sequence the test works out below is the one
    // the client knocked (periods are 30 s).
    let period = Duration::from_secs(30);
    while unix_now().rem_euclid(30) > 20 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let now = unix_now();
    lab.knock(&[S4, "--one-time-key", &key, "-p", "2222/tcp"])
        .expect_code(0);
    assert!(lab.connects(C4, S4));
    assert!(!lab.connects(C4B, S4));
    // The same ports in the same order again, as someone who watched them would knock
    // them (from another address): a replay, nothing opens.
    let secret = ClientKeyFile::load(Path::new(&key)).unwrap().secret;
    let secret = portolan_guard::keys::unb64_32(&secret).unwrap();
    let seq = portolan_guard::knock::one_time_sequence(
        &secret,
        3,
        (40000, 40999),
        portolan_guard::knock::period_of(now, period),
    );
    let seq: Vec<String> = seq.iter().map(ToString::to_string).collect();
    let mut cmd = lab.client.command("sh");
    cmd.args(["-c", &format!(
        "for p in {}; do socat -T1 /dev/null TCP4:{S4}:$p,bind={C4B},connect-timeout=0.05 2>/dev/null; done; true",
        seq.iter().map(|p| p.trim_end_matches("/tcp").to_owned()).collect::<Vec<_>>().join(" ")
    )]);
    common::run_cmd(cmd).expect_code(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab.results().iter().any(|r| r == "replay") {
        assert!(Instant::now() < deadline, "{:?}", lab.results());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !lab.connects(C4B, S4),
        "the replayed sequence opened nothing"
    );
}

/// `fwknop --key-gen`'s two keys.
fn fwknop_keys() -> (String, String) {
    let out = Command::new("fwknop")
        .arg("--key-gen")
        .output()
        .expect("fwknop --key-gen");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |name: &str| {
        let v = text.lines().find_map(|l| l.strip_prefix(name));
        let v = v.unwrap_or_else(|| panic!("{name} in {text}"));
        v.trim_start_matches(':').trim().to_owned()
    };
    (get("KEY_BASE64"), get("HMAC_KEY_BASE64"))
}

#[test]
fn the_real_fwknop_client_opens_a_port_on_portolan_guard() {
    if !ready() || !portolan_testsupport::skip_unless(portolan_testsupport::program("fwknop")) {
        return;
    }
    let mut lab = Lab::new("fwc");
    lab.init();
    let (k, h) = fwknop_keys();
    let mut cfg = std::fs::read_to_string(lab.path("guard.toml")).unwrap();
    let _ = write!(
        cfg,
        "\n[[client]]\nname = \"bob\"\nfwknop_key = \"{k}\"\nfwknop_hmac_key = \"{h}\"\nallow = [\"2222/tcp\"]\n"
    );
    std::fs::write(lab.path("guard.toml"), cfg).unwrap();
    lab.start_guard();
    assert!(!lab.connects(C4, S4));
    let home = lab.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = lab
        .client
        .command("fwknop")
        .args([
            "--no-rc-file",
            "-A",
            "tcp/2222",
            "-a",
            C4,
            "-D",
            S4,
            "--use-hmac",
            "--key-base64-rijndael",
            &k,
            "--key-base64-hmac",
            &h,
        ])
        .env("HOME", &home)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.wait_results(1), ["accepted"]);
    let d = lab
        .events()
        .into_iter()
        .rfind(|e| e["event"] == "decision")
        .unwrap();
    assert_eq!(d["decision"]["via"], "fwknop", "{d}");
    assert_eq!(d["decision"]["client"], "bob", "{d}");
    assert!(lab.connects(C4, S4));
    assert!(!lab.connects(C4B, S4));
}

#[test]
fn portolan_knock_opens_a_port_on_the_real_fwknopd() {
    if !ready()
        || !portolan_testsupport::skip_unless(portolan_testsupport::all([
            portolan_testsupport::program("fwknopd"),
            portolan_testsupport::program("fwknop"),
            portolan_testsupport::program("iptables"),
        ]))
    {
        return;
    }
    let lab = Lab::new("fwd");
    let (k, h) = fwknop_keys();
    let run = lab.dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let conf = lab.path("fwknopd.conf");
    let access = lab.path("access.conf");
    std::fs::write(
        &conf,
        format!(
            "ENABLE_UDP_SERVER Y;\nUDPSERV_PORT 62201;\nPCAP_INTF gv0;\nFWKNOP_RUN_DIR {};\n",
            run.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &access,
        format!("SOURCE ANY\nOPEN_PORTS tcp/2222\nKEY_BASE64 {k}\nHMAC_KEY_BASE64 {h}\nFW_ACCESS_TIMEOUT 30\n"),
    )
    .unwrap();
    for f in [&conf, &access] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let ok = lab
        .server
        .command("iptables")
        .args(["-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"])
        .status()
        .unwrap();
    assert!(ok.success());
    let log = lab.path("fwknopd.log");
    let mut fwknopd = lab
        .server
        .command("fwknopd")
        .args(["-f", "-c", &conf, "-a", &access, "-d"])
        .arg(run.join("digest.cache"))
        .arg("-p")
        .arg(run.join("fwknopd.pid"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::OpenOptions::new().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("Kicking off UDP server")
    {
        assert!(Instant::now() < deadline, "fwknopd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!lab.connects(C4, S4));
    let keys = lab.path("fwknop.keys");
    std::fs::write(&keys, format!("KEY_BASE64: {k}\nHMAC_KEY_BASE64: {h}\n")).unwrap();
    let r = lab.knock(&[S4, "-p", "2222/tcp", "--fwknop", "--key", &keys]);
    r.expect_code(0);
    assert!(r.stdout.contains("answers"), "{}", r.stdout);
    assert!(lab.connects(C4, S4));
    assert!(
        !lab.connects(C4B, S4),
        "fwknopd opened it for the knocking address only"
    );
    let _ = fwknopd.kill();
    let _ = fwknopd.wait();
}

#[test]
fn the_ssh_session_that_starts_the_guard_is_not_locked_out() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("ssh");
    lab.init();
    // The guard is started from an SSH session of C4's to the guarded port.
    lab.start_guard_with(Some(&format!("{C4} 50022 {S4} {SERVICE}")), &[]);
    assert!(
        lab.connects(C4, S4),
        "the session's client still reaches its port"
    );
    assert!(!lab.connects(C4B, S4), "nobody else does");
    let err = std::fs::read_to_string(lab.path("guard.stderr")).unwrap();
    assert!(
        err.contains(&format!("SSH port {SERVICE} kept open")),
        "{err}"
    );
}

#[test]
fn access_given_survives_a_restart_of_the_guard() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("keep");
    lab.init();
    lab.start_guard();
    let key = lab.path("alice.key");
    lab.knock(&[S4, "-p", "2222/tcp", "--key", &key, "--for", "60s"])
        .expect_code(0);
    assert!(lab.connects(C4, S4));
    lab.stop_guard();
    lab.start_guard();
    assert!(
        lab.connects(C4, S4),
        "alice keeps her access across the restart"
    );
    assert!(!lab.connects(C4B, S4), "and nobody else gets any");
    let err = std::fs::read_to_string(lab.path("guard.stderr")).unwrap();
    assert!(err.contains("is kept"), "{err}");
}
