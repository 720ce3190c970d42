//! Kernel forwards and redirect ranges against the real kernel, with real traffic: three
//! network namespaces of the test's own, a client, the forwarding host and a server,
//! joined by two veth pairs:
//!
//! ```text
//!   client 198.18.80.2        forwarder 198.18.80.1 | 198.18.81.1        server 198.18.81.2
//!          2001:2:0:50::a:2             ::a:1       | ::b:1                     ::b:2
//! ```
//!
//! The client routes through the forwarder; the server has no route back to the client,
//! so a reply only arrives when masquerade did its part. The servers (written here with
//! std) answer each connection or datagram with the port it reached and the address it
//! came from. Needs root, `ip` and `nft`; skipped without them, failed under CI=true. The
//! namespaces (and with them every table in them) are deleted when a test ends, also when
//! it fails; the state directories are temporary ones, removed too.
//!
//! The confirm-window test needs a watchdog process: this test binary, run again with
//! `--exact watchdog_process` and the marker [`WATCHDOG_MARKER`] (see that test).

use std::io::{BufRead as _, BufReader, ErrorKind, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portolan_relay::kernel::{
    self, ApplyOptions, CommitState, KernelForward, SshGuard, WatchdogLauncher,
};
use portolan_relay::spec::{parse_listen, parse_target};
use portolan_relay::{Proto, RelayError};
use portolan_testsupport::{skip_unless, Netns};

const FWD4: &str = "198.18.80.1";
const CLI4: &str = "198.18.80.2";
const FWD4_SRV: &str = "198.18.81.1";
const SRV4: &str = "198.18.81.2";
const FWD6: &str = "2001:2:0:50::a:1";
const CLI6: &str = "2001:2:0:50::a:2";
const FWD6_SRV: &str = "2001:2:0:50::b:1";
const SRV6: &str = "2001:2:0:50::b:2";
/// The server's ports: one, and a range of ten.
const SRV_PORT: u16 = 80;
const SRV_RANGE: u16 = 30000;
/// How long a connection that should work may take.
const WAIT: Duration = Duration::from_secs(3);

/// The marker that makes [`watchdog_process`] the watchdog.
const WATCHDOG_MARKER: &str = "__portolan_forward_test_watchdog";

fn ready() -> Result<(), String> {
    portolan_testsupport::all([Netns::ready(), portolan_testsupport::program("nft")])
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A server in a namespace: TCP and UDP sockets that answer `PORT PEER_ADDRESS\n` (the
/// port reached, the address the packet came from). Stopped and joined on drop.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    fn start(ns: &Netns, addrs: &[&str], ports: &[u16]) -> Servers {
        let mut tcp = Vec::new();
        let mut udp = Vec::new();
        for a in addrs {
            for &p in ports {
                let addr = SocketAddr::new(ip(a), p);
                tcp.push(ns.run_in(|| TcpListener::bind(addr)).expect("bind tcp"));
                udp.push(ns.run_in(|| UdpSocket::bind(addr)).expect("bind udp"));
            }
        }
        Servers::serve(tcp, udp, |s: &TcpStream| {
            s.local_addr().map_or(0, |a| a.port())
        })
    }

    /// Serves `tcp` (answering with `port_of` the accepted stream) and `udp`.
    fn serve(
        tcp: Vec<TcpListener>,
        udp: Vec<UdpSocket>,
        port_of: fn(&TcpStream) -> u16,
    ) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for l in tcp {
            l.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut s, peer)) => {
                            let _ = s.set_nonblocking(false);
                            let line = format!("{} {}\n", port_of(&s), peer.ip());
                            let _ = s.write_all(line.as_bytes());
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        for u in udp {
            u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let port = u.local_addr().map_or(0, |a| a.port());
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = u.recv_from(&mut buf) {
                        let _ = u.send_to(format!("{port} {}\n", peer.ip()).as_bytes(), peer);
                    }
                }
            }));
        }
        Servers { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "prk-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The three namespaces and the servers. Dropped (also on a panic): servers stopped,
/// namespaces deleted with everything in them, the state directory removed.
struct Lab {
    // Field order is drop order: the servers' sockets first.
    _servers: Servers,
    cli: Netns,
    fwd: Netns,
    _srv: Netns,
    state: TempDir,
}

impl Lab {
    fn new() -> Lab {
        let cli = Netns::with_prefix("prk", "cli");
        let fwd = Netns::with_prefix("prk", "fwd");
        let srv = Netns::with_prefix("prk", "srv");
        fwd.ip(&[
            "link", "add", "vc", "type", "veth", "peer", "name", "vc", "netns", &cli.name,
        ]);
        fwd.ip(&[
            "link", "add", "vs", "type", "veth", "peer", "name", "vs", "netns", &srv.name,
        ]);
        let add = |ns: &Netns, dev: &str, a: &str, v6: bool| {
            let cidr = if v6 {
                format!("{a}/112")
            } else {
                format!("{a}/24")
            };
            let mut args = vec!["addr", "add", &cidr, "dev", dev];
            if v6 {
                args.push("nodad");
            }
            ns.ip(&args);
        };
        add(&fwd, "vc", FWD4, false);
        add(&fwd, "vc", FWD6, true);
        add(&fwd, "vs", FWD4_SRV, false);
        add(&fwd, "vs", FWD6_SRV, true);
        add(&cli, "vc", CLI4, false);
        add(&cli, "vc", CLI6, true);
        add(&srv, "vs", SRV4, false);
        add(&srv, "vs", SRV6, true);
        for (ns, dev) in [(&fwd, "vc"), (&fwd, "vs"), (&cli, "vc"), (&srv, "vs")] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        cli.ip(&["route", "add", "default", "via", FWD4]);
        cli.ip(&["-6", "route", "add", "default", "via", FWD6]);
        let mut ports = vec![SRV_PORT];
        ports.extend(SRV_RANGE..SRV_RANGE + 10);
        let servers = Servers::start(&srv, &[SRV4, SRV6], &ports);
        Lab {
            _servers: servers,
            cli,
            fwd,
            _srv: srv,
            state: TempDir::new("state"),
        }
    }

    fn opts(&self, confirm_within: Duration) -> ApplyOptions {
        ApplyOptions {
            state_dir: self.state.0.clone(),
            confirm_within,
            watchdog: test_watchdog(),
        }
    }

    /// Runs `f` in the forwarding namespace.
    fn at_fwd<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.fwd.run_in(f)
    }

    fn nft(&self, args: &[&str]) -> String {
        let out = self.fwd.command("nft").args(args).output().expect("nft");
        assert!(
            out.status.success(),
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn nft_load(&self, script: &str) {
        let mut child = self
            .fwd
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{script}");
    }

    fn our_table_loaded(&self) -> bool {
        self.nft(&["list", "tables"])
            .lines()
            .any(|l| l.trim() == "table inet portolan_forward")
    }
}

/// This test binary as the watchdog: `--exact watchdog_process` runs that test alone,
/// and the words after `--` (the marker, then the state directory and generation the
/// engine appends) are test-name filters that match nothing else.
fn test_watchdog() -> WatchdogLauncher {
    WatchdogLauncher {
        program: std::env::current_exe().expect("the test binary"),
        args: vec![
            "watchdog_process".into(),
            "--exact".into(),
            "--quiet".into(),
            "--test-threads=1".into(),
            "--".into(),
            WATCHDOG_MARKER.into(),
        ],
    }
}

/// Not a test of its own: the body of the watchdog process (see [`test_watchdog`]). Run
/// as a test without the marker, it does nothing.
#[test]
fn watchdog_process() {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == WATCHDOG_MARKER) else {
        return;
    };
    let (Some(dir), Some(generation)) = (args.get(at + 1), args.get(at + 2)) else {
        return;
    };
    let Ok(generation) = generation.parse::<u128>() else {
        return;
    };
    // Its result is recorded in the state directory; nobody reads this process's output.
    let _ = kernel::run_watchdog(std::path::Path::new(dir), generation);
}

/// Connects from the client namespace and reads the server's `PORT PEER` line.
fn tcp_from(ns: &Netns, to: SocketAddr, within: Duration) -> std::io::Result<String> {
    let s = ns.run_in(|| TcpStream::connect_timeout(&to, within))?;
    s.set_read_timeout(Some(within))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// Sends a datagram from the client namespace and reads the server's `PORT PEER` line.
fn udp_from(ns: &Netns, to: SocketAddr, within: Duration) -> std::io::Result<String> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = ns.run_in(|| UdpSocket::bind(any))?;
    s.set_read_timeout(Some(within))?;
    s.send_to(b"hello", to)?;
    let mut buf = [0u8; 128];
    let (n, _) = s.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}

fn sa(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

fn kf(proto: Proto, listen: &str, target: &str) -> KernelForward {
    KernelForward::parse(proto, listen, target).expect("a forward")
}

/// Whether `pid` runs (a zombie does not: the watchdog is our child, never waited for).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

/// Waits until `f` holds (at most `within`).
fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn forwards_tcp_and_udp_over_ipv4_and_ipv6_and_lists_and_removes_them() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new();
    // Someone else's table, which nothing here may touch.
    lab.nft_load(
        "table ip bystander {\n\tchain c {\n\t\ttype filter hook forward priority 10; policy accept;\n\t\tudp dport 9 counter\n\t}\n}\n",
    );
    let bystander = lab.nft(&["list", "table", "ip", "bystander"]);
    let now = lab.opts(Duration::ZERO);

    let web = KernelForward::named(
        Proto::Tcp,
        parse_listen("8080").unwrap(),
        parse_target(&format!("{SRV4}:{SRV_PORT}")).unwrap(),
        "web \"front\" ü".to_owned(),
    )
    .unwrap();
    let forwards = vec![
        web.clone(),
        kf(Proto::Tcp, "8080", &format!("[{SRV6}]:{SRV_PORT}")),
        kf(
            Proto::Tcp,
            &format!("{FWD4}:20000-20009"),
            &format!("{SRV4}:{SRV_RANGE}-{}", SRV_RANGE + 9),
        ),
        kf(
            Proto::Tcp,
            &format!("[{FWD6}]:21000-21009"),
            &format!("[{SRV6}]:{SRV_PORT}"),
        ),
        kf(
            Proto::Udp,
            &format!("{FWD4}:5353"),
            &format!("{SRV4}:{SRV_PORT}"),
        ),
        kf(Proto::Udp, "5353", &format!("[{SRV6}]:{SRV_PORT}")),
    ];

    // The sysctls: forwarding off is refused, naming the sysctl and the flag; set, met.
    lab.at_fwd(|| {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0\n").unwrap();
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "0\n").unwrap();
    });
    let needs = lab.at_fwd(|| kernel::sysctl_needs(&forwards));
    let names: Vec<&str> = needs.iter().map(|n| n.name).collect();
    assert_eq!(
        names,
        ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"],
        "{needs:?}"
    );
    assert!(needs.iter().all(|n| n.current.as_deref() == Some("0")));
    let e = kernel::check_sysctls(&needs).unwrap_err().to_string();
    assert!(
        e.contains("net.ipv4.ip_forward=1 (now 0)") && e.contains(kernel::SET_SYSCTL_FLAG),
        "{e}"
    );
    lab.at_fwd(|| kernel::set_sysctls(&needs))
        .expect("set sysctls");
    let needs = lab.at_fwd(|| kernel::sysctl_needs(&forwards));
    assert!(needs.iter().all(kernel::SysctlNeed::met), "{needs:?}");
    kernel::check_sysctls(&needs).unwrap();

    // Before: nothing forwards (the forwarder has no listener: refused at once).
    assert!(tcp_from(&lab.cli, sa(FWD4, 8080), WAIT).is_err());

    // Added one at a time, each keeping the ones before.
    for (i, f) in forwards.iter().enumerate() {
        let change = lab
            .at_fwd(|| kernel::add(f, &SshGuard::off(), &now))
            .unwrap_or_else(|e| panic!("add {}: {e}", f.name));
        assert_eq!(change.forwards.len(), i + 1);
        assert!(change.report.watchdog_pid.is_none());
    }
    // The same listening port again is refused; a different family is not the same port.
    let again = lab.at_fwd(|| {
        kernel::add(
            &kf(Proto::Tcp, &format!("{FWD4}:8080"), &format!("{SRV4}:81")),
            &SshGuard::off(),
            &now,
        )
    });
    assert!(
        matches!(&again, Err(RelayError::Spec { why, .. }) if why.contains("already listens there")),
        "{again:?}"
    );

    // Traffic: the server sees the forwarder's address (masquerade) and the mapped port.
    let fwd_srv4 = format!("{SRV_PORT} {FWD4_SRV}");
    let fwd_srv6 = format!("{SRV_PORT} {FWD6_SRV}");
    assert_eq!(tcp_from(&lab.cli, sa(FWD4, 8080), WAIT).unwrap(), fwd_srv4);
    assert_eq!(tcp_from(&lab.cli, sa(FWD6, 8080), WAIT).unwrap(), fwd_srv6);
    for off in [0, 3, 9] {
        assert_eq!(
            tcp_from(&lab.cli, sa(FWD4, 20000 + off), WAIT).unwrap(),
            format!("{} {FWD4_SRV}", SRV_RANGE + off),
            "range to range"
        );
        assert_eq!(
            tcp_from(&lab.cli, sa(FWD6, 21000 + off), WAIT).unwrap(),
            fwd_srv6,
            "range to one port"
        );
    }
    assert!(
        tcp_from(&lab.cli, sa(FWD4, 20010), WAIT).is_err(),
        "past the range"
    );
    assert_eq!(udp_from(&lab.cli, sa(FWD4, 5353), WAIT).unwrap(), fwd_srv4);
    assert_eq!(udp_from(&lab.cli, sa(FWD6, 5353), WAIT).unwrap(), fwd_srv6);
    // From the forwarding host itself (the output chain).
    assert!(tcp_from(&lab.fwd, sa(FWD4, 8080), WAIT)
        .unwrap()
        .starts_with("80 "));

    // The list is read back from the table: the same forwards, names and all.
    let mut want = forwards.clone();
    want.sort();
    let listed = lab.at_fwd(kernel::list).expect("list");
    assert_eq!(listed, want);
    assert!(listed.iter().any(|f| f.name == "web \"front\" ü"));

    // Remove by LISTEN (and protocol): only that one goes.
    let change = lab
        .at_fwd(|| kernel::remove(&parse_listen("*:8080").unwrap(), Some(Proto::Tcp), &now))
        .expect("remove");
    assert_eq!(change.changed.len(), 2, "both families of *:8080");
    assert!(tcp_from(&lab.cli, sa(FWD4, 8080), WAIT).is_err());
    assert!(tcp_from(&lab.cli, sa(FWD6, 8080), WAIT).is_err());
    assert_eq!(
        tcp_from(&lab.cli, sa(FWD4, 20001), WAIT).unwrap(),
        format!("{} {FWD4_SRV}", SRV_RANGE + 1)
    );
    assert_eq!(lab.at_fwd(kernel::list).unwrap().len(), 4);
    let none = lab.at_fwd(|| kernel::remove(&parse_listen("7777").unwrap(), None, &now));
    assert!(
        matches!(&none, Err(RelayError::Spec { why, .. }) if why.contains("no kernel forward")),
        "{none:?}"
    );

    // Remove everything: the table goes, the bystander's stays exactly as it was.
    let dir = lab.state.0.clone();
    assert!(lab.at_fwd(|| kernel::remove_all(&dir)).expect("remove all"));
    assert!(!lab.our_table_loaded());
    assert_eq!(lab.nft(&["list", "table", "ip", "bystander"]), bystander);
    assert!(lab.at_fwd(kernel::list).unwrap().is_empty());
    assert!(udp_from(&lab.cli, sa(FWD4, 5353), Duration::from_millis(500)).is_err());
}

#[test]
fn an_unconfirmed_change_rolls_back_by_itself_and_a_confirmed_one_stays() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new();
    let a = kf(Proto::Tcp, "8080", &format!("{SRV4}:{SRV_PORT}"));
    let b = kf(Proto::Tcp, "8081", &format!("{SRV4}:{}", SRV_RANGE + 1));
    let dir = lab.state.0.clone();
    lab.at_fwd(|| kernel::set_sysctls(&kernel::sysctl_needs(std::slice::from_ref(&a))))
        .unwrap();
    lab.at_fwd(|| kernel::add(&a, &SshGuard::off(), &lab.opts(Duration::ZERO)))
        .expect("add a");
    let window = Duration::from_secs(2);

    // 1. B with a 2 s window, left unconfirmed: it works at once, and is gone after.
    let change = lab
        .at_fwd(|| kernel::add(&b, &SshGuard::off(), &lab.opts(window)))
        .expect("add b");
    assert!(change.report.kernel_deadline, "{:?}", change.report);
    assert!(change.report.watchdog_pid.is_some());
    assert_eq!(
        tcp_from(&lab.cli, sa(FWD4, 8081), WAIT).unwrap(),
        format!("{} {FWD4_SRV}", SRV_RANGE + 1)
    );
    assert_eq!(lab.at_fwd(kernel::list).unwrap().len(), 2);
    let st = lab.at_fwd(|| kernel::status(&dir)).unwrap();
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
    let pid = change.report.watchdog_pid.unwrap();
    assert!(
        eventually(Duration::from_secs(6), || !alive(pid)),
        "the watchdog rolls back and exits"
    );
    let st = lab.at_fwd(|| kernel::status(&dir)).unwrap();
    assert!(
        matches!(&st.commit, CommitState::Reverted { now: false, by: Some(by), .. } if by == "the watchdog"),
        "{st:?}"
    );
    assert!(
        tcp_from(&lab.cli, sa(FWD4, 8081), WAIT).is_err(),
        "rolled back"
    );
    assert!(tcp_from(&lab.cli, sa(FWD4, 8080), WAIT).is_ok(), "a stays");
    assert_eq!(lab.at_fwd(kernel::list).unwrap(), vec![a.clone()]);
    let late = lab.at_fwd(|| kernel::confirm(&dir));
    assert!(late.is_err(), "nothing to confirm after the rollback");

    // 2. The kernel holds the deadline: with the watchdog killed, B still stops at the
    //    window's end; the next command tidies up and says so.
    let change = lab
        .at_fwd(|| kernel::add(&b, &SshGuard::off(), &lab.opts(window)))
        .expect("add b again");
    let pid = change.report.watchdog_pid.expect("a watchdog");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(tcp_from(&lab.cli, sa(FWD4, 8081), WAIT).is_ok());
    std::thread::sleep(window + Duration::from_millis(1500));
    assert!(
        tcp_from(&lab.cli, sa(FWD4, 8081), WAIT).is_err(),
        "the kernel's window closed without the watchdog"
    );
    assert_eq!(
        lab.at_fwd(kernel::list).unwrap(),
        vec![a.clone()],
        "list reads the rules in effect"
    );
    let st = lab.at_fwd(|| kernel::status(&dir)).unwrap();
    assert!(
        matches!(&st.commit, CommitState::Reverted { now: true, by: Some(by), .. } if by.contains("portolan forward status")),
        "{st:?}"
    );

    // 3. Confirmed in time: B stays past the window.
    lab.at_fwd(|| kernel::add(&b, &SshGuard::off(), &lab.opts(window)))
        .expect("add b a third time");
    lab.at_fwd(|| kernel::confirm(&dir)).expect("confirm");
    std::thread::sleep(window + Duration::from_millis(1500));
    assert!(
        tcp_from(&lab.cli, sa(FWD4, 8081), WAIT).is_ok(),
        "confirmed"
    );
    let st = lab.at_fwd(|| kernel::status(&dir)).unwrap();
    assert!(matches!(st.commit, CommitState::Confirmed { .. }), "{st:?}");
    assert_eq!(st.forwards.len(), 2);
    let table = lab.nft(&["list", "table", "inet", "portolan_forward"]);
    assert!(
        !table.contains("window") && !table.contains("cand_"),
        "the plain form after confirm: {table}"
    );

    // 4. Removing, unconfirmed, rolls back too: B comes back.
    lab.at_fwd(|| kernel::remove(&b.listen, None, &lab.opts(window)))
        .expect("remove b");
    assert!(tcp_from(&lab.cli, sa(FWD4, 8081), WAIT).is_err(), "removed");
    assert!(eventually(Duration::from_secs(6), || {
        tcp_from(&lab.cli, sa(FWD4, 8081), Duration::from_millis(500)).is_ok()
    }));
    assert_eq!(lab.at_fwd(kernel::list).unwrap().len(), 2);
    assert!(
        eventually(Duration::from_secs(3), || lab.fwd.pids().is_empty()),
        "no watchdog left: {:?}",
        lab.fwd.pids()
    );
}

#[test]
fn the_ssh_guard_refuses_to_capture_the_ssh_port() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new();
    let now = lab.opts(Duration::ZERO);
    let guard = SshGuard::from_sources(Some(&format!("{CLI4} 50000 {FWD4} 2222")), &[22]);
    for (listen, port) in [("2000-3000", "2222"), (&*format!("{FWD4}:22"), "22")] {
        let f = kf(Proto::Tcp, listen, &format!("{SRV4}:{SRV_PORT}"));
        let e = lab
            .at_fwd(|| kernel::add(&f, &guard, &now))
            .expect_err("refused");
        let msg = e.to_string();
        assert!(matches!(e, RelayError::SshGuard(_)), "{e:?}");
        assert!(
            msg.contains(&f.name)
                && msg.contains(&format!("TCP port {port}"))
                && msg.contains(kernel::SSH_GUARD_OVERRIDE),
            "{msg}"
        );
    }
    assert!(!lab.our_table_loaded(), "nothing was loaded");
    // Another address than the session's, and the override, are allowed.
    let other = kf(
        Proto::Tcp,
        &format!("[{FWD6}]:2222"),
        &format!("[{SRV6}]:{SRV_PORT}"),
    );
    lab.at_fwd(|| kernel::add(&other, &guard, &now))
        .expect("not the session's address");
    let f = kf(Proto::Tcp, "22", &format!("{SRV4}:{SRV_PORT}"));
    lab.at_fwd(|| kernel::add(&f, &SshGuard::off(), &now))
        .expect("the guard is off");
    assert_eq!(lab.at_fwd(kernel::list).unwrap().len(), 2);
}

#[test]
fn a_redirect_range_feeds_one_listener_that_reads_the_original_port() {
    if !skip_unless(ready()) {
        return;
    }
    let lab = Lab::new();
    // The forwarder's listeners: every address (dual-stack) for `*`, one address for a
    // specific one. Each answers with the original port, read back with SO_ORIGINAL_DST.
    let any = lab
        .at_fwd(|| {
            let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
            s.set_only_v6(false)?;
            s.bind(&"[::]:19999".parse::<SocketAddr>().unwrap().into())?;
            s.listen(16)?;
            Ok::<_, std::io::Error>(TcpListener::from(s))
        })
        .expect("dual-stack listener");
    let one = lab
        .at_fwd(|| TcpListener::bind(sa(FWD4, 19998)))
        .expect("listener");
    let _listeners = Servers::serve(vec![any, one], Vec::new(), |s| {
        kernel::original_port(&socket2::SockRef::from(s)).unwrap_or(0)
    });

    let all = parse_listen("20000-20009").unwrap();
    let specific = parse_listen(&format!("{FWD4}:21000-21009")).unwrap();
    let r_all = lab
        .at_fwd(|| kernel::redirect(Proto::Tcp, &all, 19999))
        .expect("redirect *");
    let r_one = lab
        .at_fwd(|| kernel::redirect(Proto::Tcp, &specific, 19998))
        .expect("redirect one address");
    for off in [0, 4, 9] {
        let p = 20000 + off;
        assert!(tcp_from(&lab.cli, sa(FWD4, p), WAIT)
            .unwrap()
            .starts_with(&format!("{p} ")));
        assert!(tcp_from(&lab.cli, sa(FWD6, p), WAIT)
            .unwrap()
            .starts_with(&format!("{p} ")));
        let p = 21000 + off;
        assert!(tcp_from(&lab.cli, sa(FWD4, p), WAIT)
            .unwrap()
            .starts_with(&format!("{p} ")));
    }
    // From the forwarding host itself (the output chain), to its own address.
    assert!(tcp_from(&lab.fwd, sa(FWD4, 20005), WAIT)
        .unwrap()
        .starts_with("20005 "));
    assert!(tcp_from(&lab.fwd, sa(FWD4, 21005), WAIT)
        .unwrap()
        .starts_with("21005 "));

    // Kernel forwards and redirects do not share ports.
    let clash = kf(Proto::Tcp, "20005", &format!("{SRV4}:{SRV_PORT}"));
    let e = lab
        .at_fwd(|| kernel::add(&clash, &SshGuard::off(), &lab.opts(Duration::ZERO)))
        .expect_err("taken by the redirect");
    assert!(e.to_string().contains("redirect range"), "{e}");
    assert!(lab
        .at_fwd(|| kernel::redirect(Proto::Tcp, &parse_listen("20009-20020").unwrap(), 19997))
        .is_err());
    assert!(lab
        .at_fwd(|| kernel::redirect(Proto::Udp, &parse_listen("22000-22009").unwrap(), 19997))
        .is_err());
    // A kernel forward elsewhere lives beside them, and is listed alone.
    let fwd = kf(Proto::Tcp, "8080", &format!("{SRV4}:{SRV_PORT}"));
    lab.at_fwd(|| kernel::set_sysctls(&kernel::sysctl_needs(std::slice::from_ref(&fwd))))
        .unwrap();
    lab.at_fwd(|| kernel::add(&fwd, &SshGuard::off(), &lab.opts(Duration::ZERO)))
        .expect("a kernel forward beside the redirects");
    assert_eq!(lab.at_fwd(kernel::list).unwrap(), vec![fwd.clone()]);
    assert!(tcp_from(&lab.cli, sa(FWD4, 20002), WAIT)
        .unwrap()
        .starts_with("20002 "));
    let redirects = lab.at_fwd(kernel::list_redirects).unwrap();
    assert_eq!(redirects.len(), 2);
    assert!(redirects
        .iter()
        .all(|r| r.alive && r.pid == std::process::id()));

    // Leftovers of a dead process go; a live one's stay.
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    lab.nft_load(&format!(
        "table inet portolan_forward {{\n\tchain redirect_{dead_pid}_1_0_pre {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\ttcp dport 23000 redirect to :19999 comment \"redirect tcp *:23000 to :19999\"\n\t}}\n\tchain redirect_{dead_pid}_1_0_out {{\n\t\ttype nat hook output priority -100; policy accept;\n\t}}\n}}\n"
    ));
    let removed = lab.at_fwd(kernel::remove_stale_redirects).unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].pid, dead_pid);
    assert_eq!(lab.at_fwd(kernel::list_redirects).unwrap().len(), 2);

    // Removed explicitly, or dropped: the chains go, the ports are refused again.
    lab.at_fwd(|| r_one.remove()).expect("remove");
    assert!(tcp_from(&lab.cli, sa(FWD4, 21003), WAIT).is_err());
    lab.at_fwd(|| drop(r_all));
    assert!(tcp_from(&lab.cli, sa(FWD4, 20003), WAIT).is_err());
    let table = lab.nft(&["list", "table", "inet", "portolan_forward"]);
    assert!(!table.contains("redirect_"), "{table}");
    assert!(
        tcp_from(&lab.cli, sa(FWD4, 8080), WAIT).is_ok(),
        "the kernel forward stays"
    );
}
