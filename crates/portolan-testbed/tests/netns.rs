//! Privileged tests: real namespaces, TUN devices, nftables and the wire. They skip (with a
//! note) without root, and fail instead when CI=true.

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portolan_testbed::{
    check_prerequisites, connect, netns, HostSpec, PortState, PortTruth, Testbed,
};

/// Whether the machine has what a testbed needs ([`check_prerequisites`]); see
/// [`portolan_testsupport::skip_unless`] for what happens when not.
fn privileged() -> bool {
    portolan_testsupport::skip_unless(check_prerequisites())
}

const A4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
const DOWN4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const DOWN6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x11);

fn host() -> HostSpec {
    HostSpec::new(A4)
        .with_v6(A6)
        .with_open([22, 80, 443])
        .with_drop(1000, 1010)
        .with_icmp(2000, 2000)
        .with_reset(3000, 3005)
}

fn down_host() -> HostSpec {
    HostSpec::new(DOWN4).with_v6(DOWN6).with_open([22]).down()
}

/// What a connect scanner concludes from one connect.
fn classify(r: &std::io::Result<TcpStream>) -> PortState {
    match r {
        Ok(_) => PortState::Open,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => PortState::Closed,
        Err(_) => PortState::Filtered,
    }
}

#[test]
fn port_states_v4_and_v6_match_ground_truth() {
    if !privileged() {
        return;
    }
    let tb = Testbed::builder()
        .host(host())
        .host(down_host())
        .build()
        .unwrap();
    assert_eq!(tb.listener_count(), 6);
    let probes: Vec<(IpAddr, u16)> = [IpAddr::V4(A4), IpAddr::V6(A6)]
        .into_iter()
        .flat_map(|a| [22, 80, 443, 1000, 1010, 2000, 3000, 3005, 4000, 65535].map(|p| (a, p)))
        .chain([(IpAddr::V4(DOWN4), 22), (IpAddr::V6(DOWN6), 22)])
        .chain([(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99)), 22)])
        .collect();
    let results = tb
        .run_in_scanner(|| {
            std::thread::scope(|s| {
                let handles: Vec<_> = probes
                    .iter()
                    .map(|&(a, p)| {
                        s.spawn(move || {
                            TcpStream::connect_timeout(
                                &SocketAddr::new(a, p),
                                Duration::from_millis(400),
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .unwrap();
    for (&(addr, port), r) in probes.iter().zip(&results) {
        let truth = tb.truth(addr, port);
        assert_eq!(
            classify(r),
            truth.state(),
            "{addr} port {port}: {truth:?} but connect gave {r:?}"
        );
        // The errno a connect scanner sees, per kind of answer.
        let err = r.as_ref().err();
        match truth {
            PortTruth::Open => assert!(r.is_ok()),
            PortTruth::ClosedKernel | PortTruth::ClosedReset => {
                assert_eq!(err.unwrap().raw_os_error(), Some(libc_errno::ECONNREFUSED));
            }
            PortTruth::FilteredDrop | PortTruth::HostDown | PortTruth::UnknownHost => {
                assert_eq!(
                    err.unwrap().kind(),
                    std::io::ErrorKind::TimedOut,
                    "{addr}:{port}"
                );
            }
            PortTruth::FilteredIcmp(_) => {
                let code = err.unwrap().raw_os_error();
                assert!(
                    [
                        libc_errno::EHOSTUNREACH,
                        libc_errno::ENETUNREACH,
                        libc_errno::EACCES
                    ]
                    .map(Some)
                    .contains(&code),
                    "{addr}:{port} ICMP reject gave {code:?}"
                );
            }
            PortTruth::SynAckAll
            | PortTruth::UdpOpen(_)
            | PortTruth::UdpClosed
            | PortTruth::UdpDrop
            | PortTruth::UdpIcmp(_) => panic!("{addr}:{port}: {truth:?} is no TCP answer here"),
        }
    }
    // The helper for external programs runs them in the scanner namespace.
    let out = tb
        .command_in_scanner("ip")
        .args(["-o", "addr", "show", "dev", "pt-wire"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("198.19.255.1/32"));
    let stats = tb.wire_stats();
    assert_eq!(stats.to_targets.lost + stats.to_scanner.lost, 0);
    assert_eq!(stats.to_targets.foreign + stats.to_scanner.foreign, 0);
    tb.shutdown().unwrap();
}

/// errno values (Linux), to avoid a libc dependency in the tests.
mod libc_errno {
    pub const EACCES: i32 = 13;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTUNREACH: i32 = 113;
}

#[test]
fn rtt_is_applied() {
    if !privileged() {
        return;
    }
    let tb = Testbed::builder()
        .rtt(Duration::from_millis(100))
        .host(host())
        .build()
        .unwrap();
    for addr in [IpAddr::V4(A4), IpAddr::V6(A6)] {
        let mut samples = tb
            .run_in_scanner(|| {
                (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        TcpStream::connect_timeout(
                            &SocketAddr::new(addr, 22),
                            Duration::from_millis(900),
                        )
                        .map(|_| t.elapsed())
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .unwrap();
        samples.sort();
        let median = samples[2];
        assert!(
            median >= Duration::from_millis(85) && median <= Duration::from_millis(115),
            "{addr}: median connect time {median:?} (samples {samples:?})"
        );
    }
}

#[test]
fn loss_happens_in_both_directions() {
    if !privileged() {
        return;
    }
    let tb = Testbed::builder()
        .loss(0.2)
        .seed(7)
        .host(host())
        .build()
        .unwrap();
    let n: u32 = 500;
    let ok = tb
        .run_in_scanner(|| {
            connect::concurrent(
                SocketAddr::new(IpAddr::V4(A4), 80),
                usize::try_from(n).unwrap(),
                Duration::from_millis(900),
            )
        })
        .unwrap();
    let rate = f64::from(u32::try_from(ok).unwrap()) / f64::from(n);
    // SYN and SYN-ACK each survive with 0.8: 0.64 expected; 0.8 would mean one-way loss.
    assert!((0.54..=0.74).contains(&rate), "success rate {rate}");
    let s = tb.wire_stats();
    // Counters of a 500-connect test fit in u32.
    let frac = |a: u64, b: u64| {
        f64::from(u32::try_from(a).unwrap()) / f64::from(u32::try_from(b).unwrap())
    };
    let out = frac(s.to_targets.lost, s.to_targets.received);
    assert!((0.13..=0.27).contains(&out), "{s:?}");
    let back = frac(s.to_scanner.lost, s.to_scanner.received);
    assert!((0.12..=0.28).contains(&back), "{s:?}");
}

#[test]
fn everything_is_gone_after_drop() {
    if !privileged() {
        return;
    }
    let tb = Testbed::builder()
        .rtt(Duration::from_millis(10))
        .reorder(0.5)
        .host(host())
        .build()
        .unwrap();
    let id = tb.id().to_owned();
    let mine = |names: Vec<String>| {
        names
            .into_iter()
            .filter(|n| n.starts_with(&format!("{id}-")))
            .count()
    };
    assert_eq!(mine(netns::list()), 2);
    // A process left running inside the scanner namespace is killed on Drop.
    let mut child = tb
        .command_in_scanner("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    // Give `ip netns exec` time to enter the namespace and exec sleep.
    std::thread::sleep(Duration::from_millis(200));
    // Reordering happens on a live wire.
    let reordered = tb
        .run_in_scanner(|| {
            connect::concurrent(
                SocketAddr::new(IpAddr::V6(A6), 443),
                100,
                Duration::from_millis(500),
            )
        })
        .unwrap();
    assert_eq!(reordered, 100);
    assert!(tb.wire_stats().to_targets.reordered > 10);
    drop(tb);
    assert_eq!(mine(netns::list()), 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "sleep still runs after Drop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    // No table was ever created outside the testbed's own namespaces.
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("pt-"));
}

fn cli_up(extra: &[&str]) -> (std::process::Child, serde_json::Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portolan-testbed"))
        .args([
            "up",
            "--rtt-ms",
            "2",
            "--seed",
            "1",
            "--hosts",
            "v4=198.18.1.1 v6=2001:2::1:1 open=22 count=3",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (child, v)
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "portolan-testbed up did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cli_up_stops_on_sigterm_and_on_stdin_close() {
    if !privileged() {
        return;
    }
    // SIGTERM.
    let (mut child, v) = cli_up(&[]);
    let ns = v["scanner_ns"].as_str().unwrap().to_owned();
    assert_eq!(v["hosts"].as_array().unwrap().len(), 3);
    assert!(netns::list().contains(&ns));
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "-o", "route"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("198.18.0.0/15"));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert!(wait_exit(&mut child).success());
    assert!(!netns::list().contains(&ns));

    // stdin closing.
    let (mut child, v) = cli_up(&["--hold"]);
    let ns = v["target_ns"].as_str().unwrap().to_owned();
    assert!(netns::list().contains(&ns));
    drop(child.stdin.take());
    assert!(wait_exit(&mut child).success());
    assert!(!netns::list().contains(&ns));
}
