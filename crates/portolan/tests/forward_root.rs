//! `portolan forward` through the real binary, where forward.rs's loopback tests do not
//! go: as root, kernel forwards (nftables DNAT) and redirect ranges between network
//! namespaces of the test's own, and IPv4 to IPv6 and back; on loopback, the forwarder
//! under pressure (a low open-files limit, a client that never reads).
//!
//! The namespace tests build three namespaces each, a client, the forwarding host and a
//! server, joined by two veth pairs (every test its own three, so the same addresses serve
//! them all in parallel):
//!
//! ```text
//!   client 198.18.92.2        forwarder 198.18.92.1 | 198.18.93.1        server 198.18.93.2
//!          2001:2:0:5c::2               ::1         | ::1:1                     ::1:2
//! ```
//!
//! The server has no route back to the client: a kernel forward's reply only arrives when
//! masquerade did its part. The servers (std, here) answer each connection with a line
//! `PORT PEER` (the port it was reached on, the address it came from) and then echo, each
//! UDP datagram with that line. The forwarder runs in its namespace as
//! `ip netns exec NS portolan forward ...`; the namespaces are deleted when a test ends,
//! also when it fails, with every process still inside (forwarders, watchdogs), after the
//! kernel forwards' table and the state directory under /run are removed.
//!
//! The loopback tests (no namespace, no root) use 127.92.T.0/24, T being the test's number.
//!
//! The namespace tests need root, `ip`, `nft` and `ss`, the open-files test `prlimit`;
//! without them a test says so and returns, under CI=true it fails.

mod common;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::servers::{connect_from, free_tcp_port, listen_tcp, raise_nofile, Daemon, Echo};
use common::{pid_alive, run_cmd, wait_for, Run, BIN};
use portolan_testsupport::{all, program, skip_unless, Netns};
use rustix::process::Signal;

const FWD4: &str = "198.18.92.1";
const CLI4: &str = "198.18.92.2";
const FWD4_SRV: &str = "198.18.93.1";
const SRV4: &str = "198.18.93.2";
const FWD6: &str = "2001:2:0:5c::1";
const CLI6: &str = "2001:2:0:5c::2";
const FWD6_SRV: &str = "2001:2:0:5c::1:1";
const SRV6: &str = "2001:2:0:5c::1:2";

/// How long a connection that should work may take.
const WAIT: Duration = Duration::from_secs(3);
/// How long a client waits for bytes that should come.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn sa(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

fn ns_ready() -> Result<(), String> {
    all([Netns::ready(), program("nft"), program("ss")])
}

// ---------------------------------------------------------------------------------------
// The namespaces

/// The three namespaces. On drop: the kernel forwards' table deleted if left, the CLI's
/// state directory for the forwarding namespace removed, then the namespaces deleted
/// with every process inside.
struct Lab {
    cli: Netns,
    fwd: Netns,
    srv: Netns,
    /// `/run/portolan/forward/netns-INODE`: where `--kernel` keeps its commit-confirm state
    /// for the forwarding namespace.
    state_dir: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let cli = Netns::with_prefix("pfr", &format!("{tag}c"));
        let fwd = Netns::with_prefix("pfr", &format!("{tag}f"));
        let srv = Netns::with_prefix("pfr", &format!("{tag}s"));
        let ino = std::fs::metadata(format!("/run/netns/{}", fwd.name))
            .expect("the namespace's file")
            .ino();
        let lab = Lab {
            state_dir: PathBuf::from(format!("/run/portolan/forward/netns-{ino}")),
            cli,
            fwd,
            srv,
        };
        for (dev, peer) in [("vc", &lab.cli), ("vs", &lab.srv)] {
            let netns = peer.name.as_str();
            lab.fwd.ip(&[
                "link", "add", dev, "type", "veth", "peer", "name", dev, "netns", netns,
            ]);
        }
        for (ns, dev, v4, v6) in [
            (&lab.fwd, "vc", FWD4, FWD6),
            (&lab.fwd, "vs", FWD4_SRV, FWD6_SRV),
            (&lab.cli, "vc", CLI4, CLI6),
            (&lab.srv, "vs", SRV4, SRV6),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/112"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
        }
        lab
    }

    /// `portolan ARGS` in the forwarding namespace, to its end.
    fn portolan(&self, args: &[&str]) -> Run {
        let mut c = self.fwd.command(BIN);
        c.args(args).env_remove("NO_COLOR");
        run_cmd(c)
    }

    /// `portolan forward ARGS` in the forwarding namespace, running.
    fn forward(&self, args: &[&str], listeners: usize) -> Forward {
        let mut c = self.fwd.command(BIN);
        c.arg("forward").args(args).env_remove("NO_COLOR");
        Forward::start(c, listeners, false)
    }

    /// `nft ARGS` in the forwarding namespace: its stdout, or `None` when it failed.
    fn nft(&self, args: &[&str]) -> Option<String> {
        let out = self.fwd.command("nft").args(args).output().expect("nft");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn table(&self) -> Option<String> {
        self.nft(&["list", "table", "inet", "portolan_forward"])
    }

    /// The kernel rows of `portolan forward --list --json` in the forwarding namespace.
    fn kernel_forwards(&self) -> Vec<serde_json::Value> {
        let r = self.portolan(&["forward", "--list", "--json"]);
        let all = r.json()["forwards"]
            .as_array()
            .unwrap_or_else(|| panic!("no forwards array: {}", r.stdout))
            .clone();
        // 0 when it lists any, 1 when none (nothing matched).
        r.expect_code(i32::from(all.is_empty()));
        all.into_iter().filter(|f| f["kind"] == "kernel").collect()
    }

    /// The `portolan forward __watchdog` processes running in the forwarding namespace.
    fn watchdogs(&self) -> Vec<u32> {
        self.fwd
            .pids()
            .into_iter()
            .filter(|&p| {
                pid_alive(p)
                    && std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c.split(|&b| b == 0).any(|w| w == b"__watchdog"))
            })
            .collect()
    }

    /// A sysctl in the forwarding namespace (`net/ipv4/ip_forward`).
    fn sysctl(&self, path: &str) -> String {
        let p = format!("/proc/sys/{path}");
        self.fwd
            .run_in(|| std::fs::read_to_string(&p))
            .unwrap_or_else(|e| panic!("read {p}: {e}"))
            .trim()
            .to_owned()
    }

    fn set_sysctl(&self, path: &str, v: &str) {
        let p = format!("/proc/sys/{path}");
        self.fwd
            .run_in(|| std::fs::write(&p, format!("{v}\n")))
            .unwrap_or_else(|e| panic!("write {p}: {e}"));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.table().is_some() {
            let _ = self
                .fwd
                .command("nft")
                .args(["delete", "table", "inet", "portolan_forward"])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
        // Then the fields: each namespace deleted, every process inside killed first.
    }
}

// ---------------------------------------------------------------------------------------
// Servers in a namespace

/// TCP listeners (a thread each) that answer every connection with `PORT PEER\n` and then
/// echo until EOF, and UDP sockets that answer every datagram with that line. Stopped on
/// drop: the flag set, the listeners shut down (which wakes a blocked accept), the
/// listening threads joined; a connection's thread sees the flag within 100 ms.
struct Servers {
    stop: Arc<AtomicBool>,
    listeners: Vec<TcpListener>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(ns: &Netns, tcp: &[SocketAddr], udp: &[SocketAddr]) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut listeners = Vec::new();
        let mut threads = Vec::new();
        for &a in tcp {
            let l = ns
                .run_in(|| TcpListener::bind(a))
                .unwrap_or_else(|e| panic!("bind {a}: {e}"));
            listeners.push(l.try_clone().expect("dup the listener"));
            let stop = Arc::clone(&stop);
            let t = thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    for c in l.incoming() {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(c) = c else {
                            thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        let stop = Arc::clone(&stop);
                        let _ = thread::Builder::new()
                            .stack_size(128 * 1024)
                            .spawn(move || answer(c, &stop));
                    }
                })
                .expect("a server thread");
            threads.push(t);
        }
        for &a in udp {
            let u = ns
                .run_in(|| UdpSocket::bind(a))
                .unwrap_or_else(|e| panic!("bind udp {a}: {e}"));
            u.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let stop = Arc::clone(&stop);
            threads.push(thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = u.recv_from(&mut buf) {
                        let _ = u.send_to(format!("{} {}\n", a.port(), peer.ip()).as_bytes(), peer);
                    }
                }
            }));
        }
        Servers {
            stop,
            listeners,
            threads,
        }
    }
}

/// One connection: the line, then the echo, until EOF or the stop flag.
fn answer(mut c: TcpStream, stop: &AtomicBool) {
    let (Ok(local), Ok(peer)) = (c.local_addr(), c.peer_addr()) else {
        return;
    };
    if c.write_all(format!("{} {}\n", local.port(), peer.ip()).as_bytes())
        .is_err()
    {
        return;
    }
    let _ = c.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for l in &self.listeners {
            let _ = rustix::net::shutdown(l, rustix::net::Shutdown::Read);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Clients in a namespace

/// A connection from `ns` to `to`: the server's `PORT PEER` line, and the connection.
fn tcp_line(ns: &Netns, to: SocketAddr, within: Duration) -> io::Result<(String, TcpStream)> {
    let mut s = ns.run_in(|| TcpStream::connect_timeout(&to, within))?;
    s.set_read_timeout(Some(within))?;
    s.set_write_timeout(Some(within))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 200 {
        match s.read(&mut b)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no line")),
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
    }
    Ok((String::from_utf8_lossy(&line).into_owned(), s))
}

/// Just the line of [`tcp_line`].
fn line_from(ns: &Netns, to: SocketAddr) -> io::Result<String> {
    tcp_line(ns, to, WAIT).map(|(l, _)| l)
}

/// A datagram from `ns` to `to`: the server's answer line.
fn udp_line(ns: &Netns, to: SocketAddr, within: Duration) -> io::Result<String> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = ns.run_in(|| UdpSocket::bind(any))?;
    s.set_read_timeout(Some(within))?;
    s.send_to(b"hello", to)?;
    let mut buf = [0u8; 256];
    let (n, _) = s.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}

/// Sends `msg` on `s` and expects it back whole.
fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg);
}

// ---------------------------------------------------------------------------------------
// The forwarder

/// A running `portolan forward`; on drop, stopped with SIGTERM, and killed with its
/// process group if that is not enough.
struct Forward {
    d: Daemon,
}

impl Forward {
    /// Starts `cmd` and waits until it has printed `listeners` listening lines (and, with
    /// `metrics`, the metrics line).
    fn start(cmd: Command, listeners: usize, metrics: bool) -> Forward {
        let mut d = Daemon::spawn(cmd);
        let up = d.wait_stderr(Duration::from_secs(20), |e| {
            bound_lines(e) >= listeners && (!metrics || e.contains("metrics at http://"))
        });
        assert!(
            up && d.running(),
            "`{}` did not start: {}",
            d.what(),
            d.stderr()
        );
        Forward { d }
    }

    fn stderr(&self) -> String {
        self.d.stderr()
    }

    /// SIGTERM, then its exit code (within 10 s).
    fn stop(&mut self) -> i32 {
        self.d.signal(Signal::TERM);
        let st = self
            .d
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("still runs 10 s after SIGTERM:\n{}", self.stderr()));
        st.code()
            .unwrap_or_else(|| panic!("ended by a signal ({st}):\n{}", self.stderr()))
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.d.terminate(Duration::from_secs(1));
    }
}

/// The listening lines (`portolan forward: tcp ADDR -> TARGET`) in stderr, not the event
/// lines (`portolan forward: tcp PEER on RULE: ...`).
fn bound_lines(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| {
            (l.starts_with("portolan forward: tcp ") || l.starts_with("portolan forward: udp "))
                && l.contains(" -> ")
                && !l.contains(" on ")
        })
        .count()
}

// ---------------------------------------------------------------------------------------
// 1. Kernel forwards through the CLI

#[test]
fn kernel_forward_through_the_cli_needs_the_sysctl_masquerades_lists_and_removes() {
    if !skip_unless(ns_ready()) {
        return;
    }
    let lab = Lab::new("k");
    let _servers = Servers::start(&lab.srv, &[sa(SRV4, 80)], &[sa(SRV4, 53)]);
    lab.set_sysctl("net/ipv4/ip_forward", "0");
    let listen = "0.0.0.0:8080";
    let target = format!("{SRV4}:80");
    let at = sa(FWD4, 8080);
    assert!(line_from(&lab.cli, at).is_err(), "nothing forwards yet");

    // Options a kernel rule cannot honour are refused, saying so; nothing is loaded.
    for (flag, value, what) in [
        ("--allow", "198.18.92.0/24", "allow"),
        ("--proxy-protocol", "v1", "the PROXY protocol header"),
    ] {
        let r = lab.portolan(&["forward", "--kernel", flag, value, listen, &target]);
        r.expect_code(2);
        let want =
            format!("{what} is for the userspace forwarder; a kernel forward cannot apply it");
        assert!(
            r.stderr.contains(&want),
            "{flag}: want {want:?} in:\n{}",
            r.stderr
        );
    }
    assert!(
        lab.table().is_none(),
        "a refused rule loaded: {:?}",
        lab.table()
    );

    // Forwarding off: refused, naming the sysctl and the flag that sets it.
    let r = lab.portolan(&["forward", "--kernel", listen, &target]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("net.ipv4.ip_forward=1 (now 0)") && r.stderr.contains("--set-sysctl"),
        "{}",
        r.stderr
    );
    assert_eq!(lab.sysctl("net/ipv4/ip_forward"), "0", "left as it was");
    assert!(line_from(&lab.cli, at).is_err());

    // With --set-sysctl: set, and the kernel forwards; the server sees the forwarder's
    // address (masquerade: it has no route back to the client).
    let r = lab.portolan(&["forward", "--kernel", "--set-sysctl", listen, &target]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("setting net.ipv4.ip_forward = 1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("kernel forward added: tcp {listen} -> {target}")),
        "{}",
        r.stderr
    );
    assert_eq!(lab.sysctl("net/ipv4/ip_forward"), "1");
    let (line, mut s) = tcp_line(&lab.cli, at, WAIT).expect("through the kernel forward");
    assert_eq!(line, format!("80 {FWD4_SRV}"));
    roundtrip(&mut s, b"through the kernel");
    drop(s);

    // Listed, as a kernel forward.
    let rows = lab.kernel_forwards();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["proto"], "tcp");
    assert_eq!(rows[0]["listen"], listen);
    assert_eq!(rows[0]["target"], target.as_str());
    assert!(rows[0]["pid"].is_null(), "{rows:?}");

    // UDP as well.
    let r = lab.portolan(&[
        "forward",
        "--kernel",
        "--udp",
        "0.0.0.0:5353",
        &format!("{SRV4}:53"),
    ]);
    r.expect_code(0);
    assert_eq!(
        udp_line(&lab.cli, sa(FWD4, 5353), WAIT).expect("a UDP answer through the kernel"),
        format!("53 {FWD4_SRV}")
    );
    assert_eq!(lab.kernel_forwards().len(), 2);

    // Removed: the port is refused again; the UDP one stays.
    let r = lab.portolan(&["forward", "--kernel", "--remove", listen]);
    r.expect_code(0);
    assert!(
        r.stderr
            .contains(&format!("kernel forward removed: tcp {listen} -> {target}")),
        "{}",
        r.stderr
    );
    match line_from(&lab.cli, at) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("after --remove: expected refused, got {other:?}"),
    }
    let rows = lab.kernel_forwards();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["proto"], "udp");
    assert!(udp_line(&lab.cli, sa(FWD4, 5353), WAIT).is_ok());
    let r = lab.portolan(&["forward", "--kernel", "--remove", listen]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("no kernel forward listens there"),
        "{}",
        r.stderr
    );
    // The last one: done, 0, though no forward is left.
    let r = lab.portolan(&["forward", "--kernel", "--udp", "--remove", "0.0.0.0:5353"]);
    r.expect_code(0);
    assert_eq!(r.stdout, "no forwards\n");
    assert!(udp_line(&lab.cli, sa(FWD4, 5353), Duration::from_millis(500)).is_err());
    assert!(lab.kernel_forwards().is_empty());
    assert!(lab.watchdogs().is_empty(), "no window, no watchdog");
}

#[test]
fn kernel_forward_unconfirmed_rolls_back_by_itself_and_confirmed_stays() {
    if !skip_unless(ns_ready()) {
        return;
    }
    let lab = Lab::new("w");
    let _servers = Servers::start(&lab.srv, &[sa(SRV4, 81), sa(SRV4, 82)], &[]);
    lab.set_sysctl("net/ipv4/ip_forward", "1");

    // Left unconfirmed: works at once, gone after the 2 s window, by itself.
    let r = lab.portolan(&[
        "forward",
        "--kernel",
        "--confirm-within",
        "2s",
        "0.0.0.0:8081",
        &format!("{SRV4}:81"),
    ]);
    r.expect_code(0);
    let added = Instant::now();
    assert!(
        r.stderr
            .contains("with `portolan forward --kernel --confirm`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        line_from(&lab.cli, sa(FWD4, 8081)).expect("during the window"),
        format!("81 {FWD4_SRV}")
    );
    assert_eq!(lab.kernel_forwards().len(), 1);
    assert_eq!(lab.watchdogs().len(), 1, "a watchdog waits for the window");
    let stopped = wait_for(Duration::from_secs(8), || {
        line_from(&lab.cli, sa(FWD4, 8081)).is_err()
    });
    let took = added.elapsed();
    assert!(stopped, "still forwarding {took:?} after a 2 s window");
    assert!(
        took >= Duration::from_millis(500),
        "rolled back after only {took:?}"
    );
    assert!(
        lab.kernel_forwards().is_empty(),
        "{:?}",
        lab.kernel_forwards()
    );
    assert!(
        wait_for(Duration::from_secs(5), || lab.watchdogs().is_empty()),
        "the watchdog outlived its rollback: {:?}",
        lab.watchdogs()
    );
    let r = lab.portolan(&["forward", "--kernel", "--confirm"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("too late: the confirm window closed"),
        "after the rollback: {}",
        r.stderr
    );

    // Confirmed in time: stays past the window.
    lab.portolan(&[
        "forward",
        "--kernel",
        "--confirm-within",
        "2s",
        "0.0.0.0:8082",
        &format!("{SRV4}:82"),
    ])
    .expect_code(0);
    let r = lab.portolan(&["forward", "--kernel", "--confirm"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("kernel forwards confirmed"),
        "{}",
        r.stderr
    );
    thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        line_from(&lab.cli, sa(FWD4, 8082)).expect("confirmed: past the window"),
        format!("82 {FWD4_SRV}")
    );
    let rows = lab.kernel_forwards();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["listen"], "0.0.0.0:8082");
    assert!(
        wait_for(Duration::from_secs(3), || lab.watchdogs().is_empty()),
        "a watchdog left after the confirm: {:?}",
        lab.watchdogs()
    );
}

// ---------------------------------------------------------------------------------------
// 2. Redirect ranges and listener ranges through the CLI

/// Whether the table in the forwarding namespace has a redirect chain.
fn has_redirect_chain(lab: &Lab) -> bool {
    lab.table().is_some_and(|t| t.contains("redirect_"))
}

/// TCP sockets listening in `ns` on ports `lo..=hi` (`ss -Htln`).
fn listening_in(ns: &Netns, lo: u16, hi: u16) -> usize {
    let out = ns.command("ss").args(["-Htln"]).output().expect("ss");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
        .filter(|p| (lo..=hi).contains(p))
        .count()
}

#[test]
fn a_redirect_range_through_the_cli_reaches_the_target_port_by_port_and_cleans_up() {
    if !skip_unless(ns_ready()) {
        return;
    }
    let lab = Lab::new("r");
    let mut ports: Vec<SocketAddr> = (31000..31100).map(|p| sa(SRV4, p)).collect();
    ports.push(sa(SRV4, 7000));
    let _servers = Servers::start(&lab.srv, &ports, &[]);
    let range = "0.0.0.0:21000-21099";

    // To one port: every port of the range reaches it, one socket listens.
    let mut fwd = lab.forward(
        &["--range-mode", "redirect", range, &format!("{SRV4}:7000")],
        1,
    );
    assert!(
        fwd.stderr()
            .contains(&format!("(range {range} redirected by nftables)")),
        "{}",
        fwd.stderr()
    );
    assert!(has_redirect_chain(&lab), "{:?}", lab.table());
    assert_eq!(
        listening_in(&lab.fwd, 21000, 21099),
        0,
        "no socket per port"
    );
    for p in [21000, 21001, 21042, 21098, 21099] {
        let (line, mut s) = tcp_line(&lab.cli, sa(FWD4, p), WAIT)
            .unwrap_or_else(|e| panic!("port {p}: {e}\n{}", fwd.stderr()));
        assert_eq!(line, format!("7000 {FWD4_SRV}"), "port {p}");
        roundtrip(&mut s, format!("via {p}").as_bytes());
    }
    assert!(
        line_from(&lab.cli, sa(FWD4, 21100)).is_err(),
        "past the range"
    );
    assert_eq!(fwd.stop(), 0, "{}", fwd.stderr());
    assert!(
        !has_redirect_chain(&lab),
        "the redirect chains outlived the forwarder: {:?}",
        lab.table()
    );
    assert!(line_from(&lab.cli, sa(FWD4, 21000)).is_err());

    // To a range: port 21000+i reaches 31000+i (the original port read back).
    let mut fwd = lab.forward(
        &[
            "--range-mode",
            "redirect",
            range,
            &format!("{SRV4}:31000-31099"),
        ],
        1,
    );
    for i in 0..100u16 {
        let line = line_from(&lab.cli, sa(FWD4, 21000 + i))
            .unwrap_or_else(|e| panic!("port {}: {e}\n{}", 21000 + i, fwd.stderr()));
        assert_eq!(line, format!("{} {FWD4_SRV}", 31000 + i));
    }
    assert_eq!(fwd.stop(), 0, "{}", fwd.stderr());
    assert!(!has_redirect_chain(&lab), "{:?}", lab.table());

    // The default, listeners: a socket per port (100), all forwarding, and no chain.
    let fwd = lab.forward(&[range, &format!("{SRV4}:31000-31099")], 1);
    assert!(fwd.stderr().contains("(100 sockets)"), "{}", fwd.stderr());
    assert_eq!(listening_in(&lab.fwd, 21000, 21099), 100);
    assert!(!has_redirect_chain(&lab), "{:?}", lab.table());
    for i in 0..100u16 {
        let line = line_from(&lab.cli, sa(FWD4, 21000 + i))
            .unwrap_or_else(|e| panic!("port {}: {e}\n{}", 21000 + i, fwd.stderr()));
        assert_eq!(line, format!("{} {FWD4_SRV}", 31000 + i));
    }
}

// ---------------------------------------------------------------------------------------
// 5. IPv4 to IPv6 and back through the userspace forwarder

#[test]
fn the_userspace_forwarder_crosses_from_ipv4_to_ipv6_and_back() {
    if !skip_unless(ns_ready()) {
        return;
    }
    let lab = Lab::new("6");
    let _servers = Servers::start(&lab.srv, &[sa(SRV4, 9000), sa(SRV6, 9000)], &[]);
    let _to6 = lab.forward(&["0.0.0.0:8000", &format!("[{SRV6}]:9000")], 1);
    let _to4 = lab.forward(&[&format!("[{FWD6}]:8001"), &format!("{SRV4}:9000")], 1);

    // An IPv4 client; the server sees an IPv6 connection from the forwarder.
    let (line, mut s) = tcp_line(&lab.cli, sa(FWD4, 8000), WAIT).expect("4 -> 6");
    assert_eq!(line, format!("9000 {FWD6_SRV}"));
    roundtrip(&mut s, b"from IPv4 to IPv6");
    assert_eq!(s.local_addr().unwrap().ip(), ip(CLI4));
    // An IPv6 client; the server sees an IPv4 connection.
    let (line, mut s) = tcp_line(&lab.cli, sa(FWD6, 8001), WAIT).expect("6 -> 4");
    assert_eq!(line, format!("9000 {FWD4_SRV}"));
    roundtrip(&mut s, b"from IPv6 to IPv4");
    assert_eq!(s.local_addr().unwrap().ip(), ip(CLI6));
    // The IPv4 listener is IPv4 only, the IPv6 one on its own address only.
    assert!(line_from(&lab.cli, sa(FWD6, 8000)).is_err());
    assert!(line_from(&lab.cli, sa(FWD4, 8001)).is_err());
}

// ---------------------------------------------------------------------------------------
// 3. The open-files limit

/// 127.92.T.H: host H of test T's loopback addresses.
fn lo(t: u8, h: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 92, t, h)
}

/// `msg` sent from `src` to `dst` and echoed back whole (`Err` says what went wrong).
fn echo_once(src: Ipv4Addr, dst: SocketAddr, msg: &[u8]) -> io::Result<TcpStream> {
    let mut s = connect_from(IpAddr::V4(src), dst)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::other("another connection's bytes"));
    }
    Ok(s)
}

#[test]
fn out_of_file_descriptors_the_forwarder_slows_down_and_recovers() {
    const T: u8 = 3;
    const N: usize = 60;
    if !skip_unless(program("prlimit")) {
        return;
    }
    raise_nofile(4096);
    let echo = Echo::start(lo(T, 2), None);
    let listen = SocketAddr::from((lo(T, 1), free_tcp_port(lo(T, 1))));
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", BIN, "forward"])
        .args([listen.to_string(), echo.addr.to_string()])
        .env_remove("NO_COLOR");
    let mut fwd = Forward::start(cmd, 1, false);
    assert!(
        fwd.stderr().contains("the open-files limit is 64"),
        "{}",
        fwd.stderr()
    );

    // 60 clients at once, more than 64 descriptors can serve (two sockets each, and
    // pipes): all connected (in the backlog) before any sends, then each sends, reads its
    // echo and closes. The ones that find no descriptor wait; none is reset.
    let go = Arc::new(Barrier::new(N));
    let clients: Vec<_> = (0..N)
        .map(|i| {
            let go = Arc::clone(&go);
            thread::spawn(move || -> Result<(), String> {
                let s = connect_from(IpAddr::V4(lo(T, 3)), listen);
                go.wait();
                let mut s = s.map_err(|e| format!("connect: {e}"))?;
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                let msg = format!("client {i:02} of {N}");
                s.write_all(msg.as_bytes())
                    .map_err(|e| format!("write: {e}"))?;
                let mut back = vec![0; msg.len()];
                s.read_exact(&mut back).map_err(|e| format!("read: {e}"))?;
                if back != msg.as_bytes() {
                    return Err(format!("got {:?}", String::from_utf8_lossy(&back)));
                }
                Ok(())
            })
        })
        .collect();
    let failed: Vec<String> = clients
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| match t.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("client {i}: {e}")),
            Err(_) => Some(format!("client {i}: panicked")),
        })
        .collect();
    assert!(fwd.d.running(), "the forwarder died:\n{}", fwd.stderr());
    let e = fwd.stderr();
    assert!(
        failed.is_empty(),
        "{} of {N} clients without their echo: {failed:?}\n{e}",
        failed.len()
    );
    let accept_errors = e
        .lines()
        .filter(|l| {
            l.contains(": accept: Too many open files")
                && l.ends_with("(accepting again in 50 ms; raise the open-files limit)")
        })
        .count();
    assert!(
        (1..=3).contains(&accept_errors),
        "{accept_errors} accept error lines (want 1 to 3: the descriptors ran out, and the line is rate-limited):\n{e}"
    );
    assert!(!e.contains("failed"), "{e}");

    // Room again: new connections work, each its own echo.
    assert!(
        wait_for(Duration::from_secs(10), || echo
            .open
            .load(Ordering::Relaxed)
            == 0),
        "the forwarder kept connections to the server open"
    );
    for i in 0..20 {
        let msg = format!("after the burst {i}");
        echo_once(lo(T, 4), listen, msg.as_bytes())
            .unwrap_or_else(|e| panic!("connection {i} after the burst: {e}\n{}", fwd.stderr()));
    }
    let held: Vec<TcpStream> = (0..5)
        .map(|i| {
            echo_once(lo(T, 4), listen, format!("held {i}").as_bytes())
                .unwrap_or_else(|e| panic!("held connection {i}: {e}\n{}", fwd.stderr()))
        })
        .collect();
    drop(held);
    assert!(fwd.d.running(), "{}", fwd.stderr());
    assert_eq!(fwd.stop(), 0, "{}", fwd.stderr());
}

// ---------------------------------------------------------------------------------------
// 4. A client that never reads

/// A target on `ip`: a connection whose first byte is `B` gets up to `total` bytes as fast
/// as it takes them (the count in `sent`), one whose first byte is `E` an echo.
fn blaster(ip: Ipv4Addr, total: u64, sent: Arc<AtomicU64>) -> SocketAddr {
    let l = listen_tcp(ip, 0);
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let sent = Arc::clone(&sent);
            thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = c.set_write_timeout(Some(Duration::from_secs(30)));
                let mut first = [0u8; 1];
                if c.read_exact(&mut first).is_err() {
                    return;
                }
                if first[0] == b'B' {
                    let chunk = vec![0x5a_u8; 1 << 20];
                    let mut left = total;
                    while left > 0 {
                        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap();
                        match c.write(&chunk[..n]) {
                            Ok(w) => {
                                left -= w as u64;
                                sent.fetch_add(w as u64, Ordering::Relaxed);
                            }
                            Err(_) => return,
                        }
                    }
                } else {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// `portolan_forward_bytes_total{...,direction="down"}` from the metrics page at `m`.
fn bytes_down(m: SocketAddr) -> u64 {
    let mut s = TcpStream::connect_timeout(&m, IO_TIMEOUT).expect("connect to metrics");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {m}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    page.lines()
        .find(|l| {
            l.starts_with("portolan_forward_bytes_total{") && l.contains("direction=\"down\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no bytes down in:\n{page}"))
}

/// Resident memory of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    st.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in:\n{st}"))
}

#[test]
fn a_client_that_never_reads_holds_the_target_back_not_memory() {
    const T: u8 = 4;
    const TOTAL: u64 = 500 << 20;
    const RSS_MAX_KIB: u64 = 64 << 10;
    let sent = Arc::new(AtomicU64::new(0));
    let target = blaster(lo(T, 2), TOTAL, Arc::clone(&sent));
    // With splice, and with the read/write copy.
    let held: Vec<_> = [&[][..], &["--no-splice"][..]]
        .iter()
        .map(|extra| {
            let listen = SocketAddr::from((lo(T, 1), free_tcp_port(lo(T, 1))));
            let metrics = SocketAddr::from((lo(T, 1), free_tcp_port(lo(T, 1))));
            let mut cmd = Command::new(BIN);
            cmd.arg("forward")
                .args(*extra)
                .args(["--metrics", &metrics.to_string()])
                .args([listen.to_string(), target.to_string()])
                .env_remove("NO_COLOR");
            let fwd = Forward::start(cmd, 1, true);
            let mut lazy = connect_from(IpAddr::V4(lo(T, 3)), listen).expect("connect");
            lazy.write_all(b"B").unwrap();
            let mode = if extra.is_empty() { "splice" } else { "copy" };
            (fwd, listen, metrics, lazy, mode)
        })
        .collect();

    for (fwd, listen, metrics, _lazy, mode) in &held {
        // Flow control: the count stops growing, far short of what the target would send.
        let mut last = bytes_down(*metrics);
        let mut still_since = Instant::now();
        let settled = wait_for(Duration::from_secs(15), || {
            thread::sleep(Duration::from_millis(200));
            let now = bytes_down(*metrics);
            if now != last {
                last = now;
                still_since = Instant::now();
            }
            last > 0 && still_since.elapsed() >= Duration::from_secs(1)
        });
        assert!(
            settled,
            "{mode}: bytes down still growing ({last}) while the client reads nothing"
        );
        assert!(
            last < 64 << 20,
            "{mode}: {last} bytes relayed to a client that reads nothing"
        );
        thread::sleep(Duration::from_millis(500));
        assert_eq!(bytes_down(*metrics), last, "{mode}: grew again");
        let rss = rss_kib(fwd.d.pid());
        assert!(
            rss < RSS_MAX_KIB,
            "{mode}: the forwarder's RSS is {rss} KiB with {last} bytes relayed"
        );
        // Still responsive: another connection gets its echo.
        let mut s = connect_from(IpAddr::V4(lo(T, 4)), *listen).expect("a second connection");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(b"E").unwrap();
        roundtrip(&mut s, b"still responsive");
    }
    assert!(
        sent.load(Ordering::Relaxed) < TOTAL,
        "the target sent everything"
    );
    drop(held);
}
