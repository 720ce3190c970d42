//! Privileged tests of the UDP side and the SYN-ACK-all host: real dnsmasq, snmpd and ntpd
//! in the target namespace, the built-in echo responder, the kernel's port unreachables,
//! nftables drops and rejects, the ICMP rate limit, and cleanup (also after a panic).
//! They skip (with a note) without root or the daemons, and fail instead when CI=true.
//! Every test uses its own addresses in 198.18.200.0/24 and 2001:2:0:c8::/64.
#![allow(clippy::print_stderr)] // the measured ICMP rate limit is told on stderr

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use portolan_testbed::{
    check_prerequisites, check_services, netns, HostSpec, IcmpReject, PortState, PortTruth,
    Testbed, UdpService, DNS_ANSWER, SNMP_SYS_DESCR,
};

fn privileged() -> bool {
    portolan_testsupport::skip_unless(check_prerequisites())
}

fn with_services() -> bool {
    portolan_testsupport::skip_unless(check_services(UdpService::ALL))
}

fn v4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 200, n)
}

fn v6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0xc8, 0, 0, 0, n)
}

/// What one datagram to a port got back.
#[derive(Debug)]
enum Reply {
    Data(Vec<u8>),
    /// ICMP port unreachable (ECONNREFUSED on a connected socket).
    Refused,
    /// Another ICMP error, as an errno.
    Error(Option<i32>),
    Silence,
}

/// Sends `payload` to `to` from a connected UDP socket and waits at most `wait` for one
/// reply or error. Runs in the scanner namespace (call it inside `run_in_scanner`).
fn ask(to: SocketAddr, payload: &[u8], wait: Duration) -> Reply {
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(local).unwrap();
    s.connect(to).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    if let Err(e) = s.send(payload) {
        return Reply::Error(e.raw_os_error());
    }
    let mut buf = vec![0u8; 65_536];
    match s.recv(&mut buf) {
        Ok(n) => Reply::Data(buf[..n].to_vec()),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Reply::Refused,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Reply::Silence,
        Err(e) => Reply::Error(e.raw_os_error()),
    }
}

/// The state a UDP scanner concludes from one probe.
fn classify(r: &Reply) -> PortState {
    match r {
        Reply::Data(_) => PortState::Open,
        Reply::Refused => PortState::Closed,
        Reply::Error(_) => PortState::Filtered,
        Reply::Silence => PortState::OpenFiltered,
    }
}

/// A DNS query (id 0x5054, recursion desired) for `name`, type A, class IN.
fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x50, 0x54, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap());
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A BER tag-length-value (short lengths only: everything here is under 128 bytes).
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag, u8::try_from(body.len()).unwrap()];
    v.extend_from_slice(body);
    v
}

/// An SNMPv2c GetRequest for sysDescr.0 with community `public`.
fn snmp_get_sys_descr() -> Vec<u8> {
    let oid = [0x2b, 6, 1, 2, 1, 1, 1, 0]; // 1.3.6.1.2.1.1.1.0
    let varbind = tlv(0x30, &[tlv(0x06, &oid), tlv(0x05, &[])].concat());
    let pdu = tlv(
        0xa0,
        &[
            tlv(0x02, &[0x12, 0x34, 0x56, 0x78]),
            tlv(0x02, &[0]),
            tlv(0x02, &[0]),
            tlv(0x30, &varbind),
        ]
        .concat(),
    );
    tlv(0x30, &[tlv(0x02, &[1]), tlv(0x04, b"public"), pdu].concat())
}

/// An NTPv4 client-mode packet (LI 0, VN 4, mode 3), zero otherwise.
fn ntp_client() -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23;
    p
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn service_dir(id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("portolan-testbed-{id}"))
}

/// Waits (at most 3 s) until none of `pids` exists any more.
fn gone(pids: &[u32]) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        if pids
            .iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn udp_services_and_port_states_match_ground_truth() {
    if !with_services() {
        return;
    }
    let (a4, a6) = (v4(10), v6(0x10));
    let tb = Testbed::builder()
        .host(
            HostSpec::new(a4)
                .with_v6(a6)
                .with_udp_service(UdpService::Dns)
                .with_udp_service(UdpService::Snmp)
                .with_udp_service(UdpService::Ntp)
                .with_udp_service(UdpService::Echo)
                .with_udp_open([5000, 5001])
                .with_udp_drop(6000, 6010)
                .with_udp_icmp(7000, 7000),
        )
        .build()
        .unwrap();
    // Echo on 7, 5000 and 5001, each on both addresses.
    assert_eq!(tb.udp_echo_count(), 6);
    let pids = tb.service_pids();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let id = tb.id().to_owned();
    assert!(service_dir(&id).is_dir());

    let echo = b"portolan echo \x00\xff".to_vec();
    let probes: Vec<(IpAddr, u16, Vec<u8>)> = [IpAddr::V4(a4), IpAddr::V6(a6)]
        .into_iter()
        .flat_map(|a| {
            [
                (a, 7, echo.clone()),
                (a, 5000, echo.clone()),
                (a, 53, dns_query("host.x.test")),
                (a, 161, snmp_get_sys_descr()),
                (a, 123, ntp_client()),
                (a, 5002, echo.clone()),
                (a, 40000, echo.clone()),
                (a, 6005, echo.clone()),
                (a, 7000, echo.clone()),
            ]
            .map(|(a, p, d)| (a, p, d))
        })
        .collect();
    let replies = tb
        .run_in_scanner(|| {
            std::thread::scope(|s| {
                let handles: Vec<_> = probes
                    .iter()
                    .map(|(a, p, d)| {
                        s.spawn(move || ask(SocketAddr::new(*a, *p), d, Duration::from_secs(2)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .unwrap();
    for ((addr, port, sent), reply) in probes.iter().zip(&replies) {
        let truth = tb.truth_udp(*addr, *port);
        assert_eq!(
            classify(reply),
            tb.expected_udp(*addr, *port),
            "{addr} udp/{port}: {truth:?} but got {reply:?}"
        );
        match (truth, reply) {
            (PortTruth::UdpOpen(UdpService::Echo), Reply::Data(d)) => assert_eq!(d, sent),
            (PortTruth::UdpOpen(UdpService::Dns), Reply::Data(d)) => {
                assert_eq!(&d[..2], &[0x50, 0x54], "DNS id");
                assert_eq!(d[3] & 0x0f, 0, "DNS rcode: {d:?}");
                assert!(contains(d, &DNS_ANSWER.octets()), "{d:?}");
            }
            (PortTruth::UdpOpen(UdpService::Snmp), Reply::Data(d)) => {
                assert!(contains(d, &[0xa2]), "no GetResponse: {d:?}");
                assert!(contains(d, SNMP_SYS_DESCR.as_bytes()), "{d:?}");
            }
            (PortTruth::UdpOpen(UdpService::Ntp), Reply::Data(d)) => {
                assert!(d.len() >= 48, "{d:?}");
                assert_eq!(d[0] & 7, 4, "NTP server mode: {d:?}");
            }
            (PortTruth::UdpClosed, Reply::Refused) | (PortTruth::UdpDrop, Reply::Silence) => {}
            (PortTruth::UdpIcmp(IcmpReject::AdminProhibited), Reply::Error(code)) => {
                // EHOSTUNREACH (v4 code 13) or EACCES (v6 admin-prohibited).
                assert!([Some(113), Some(13)].contains(code), "{addr}: {code:?}");
            }
            (t, r) => panic!("{addr} udp/{port}: {t:?} but {r:?}"),
        }
    }
    // dnsmasq holds TCP 53 too, and the ground truth says so.
    assert_eq!(tb.expected(IpAddr::V4(a4), 53), PortState::Open);
    let tcp = tb
        .run_in_scanner(|| {
            [IpAddr::V4(a4), IpAddr::V6(a6)].map(|a| {
                TcpStream::connect_timeout(&SocketAddr::new(a, 53), Duration::from_secs(1)).is_ok()
            })
        })
        .unwrap();
    assert_eq!(tcp, [true, true]);

    // Teardown: the daemons, the namespaces and the service directory are gone.
    drop(tb);
    let pids: Vec<u32> = pids.into_iter().map(|(_, p)| p).collect();
    assert!(
        gone(&pids),
        "service processes {pids:?} outlive the testbed"
    );
    assert!(!netns::list()
        .iter()
        .any(|n| n.starts_with(&format!("{id}-"))));
    assert!(!service_dir(&id).exists());
}

#[test]
fn services_are_killed_when_a_test_panics() {
    if !with_services() {
        return;
    }
    let seen = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let tb = Testbed::builder()
            .host(
                HostSpec::new(v4(30))
                    .with_v6(v6(0x30))
                    .with_udp_service(UdpService::Dns)
                    .with_udp_service(UdpService::Ntp),
            )
            .build()
            .unwrap();
        let dnsmasq = tb
            .command_in_scanner("true")
            .status()
            .map(|_| tb.service_pids());
        *seen.lock().unwrap() = Some((tb.id().to_owned(), tb.target_ns().to_owned(), dnsmasq));
        panic!("a test failing with a testbed up");
    }));
    assert!(r.is_err());
    let (id, target, pids) = seen.into_inner().unwrap().unwrap();
    let pids: Vec<u32> = pids.unwrap().into_iter().map(|(_, p)| p).collect();
    assert_eq!(pids.len(), 2);
    assert!(gone(&pids), "{pids:?} outlive the panicking test");
    assert!(!netns::list().contains(&target));
    assert!(!service_dir(&id).exists());
    // `ip netns pids` of the target namespace cannot even be asked any more.
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &target])
        .output()
        .unwrap();
    assert!(!out.status.success() || out.stdout.is_empty());
}

#[test]
fn tarpit_host_completes_every_handshake() {
    if !privileged() {
        return;
    }
    let (t4, t6) = (v4(20), v6(0x20));
    let plain = v4(21);
    let tb = Testbed::builder()
        .host(
            HostSpec::new(t4)
                .with_v6(t6)
                .with_synack_all()
                .with_udp_open([9]),
        )
        .host(HostSpec::new(plain).with_open([22]))
        .build()
        .unwrap();
    // Ports picked from the clock: a tarpit answers whatever is asked.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ports: Vec<u16> = (0..8u32)
        .map(|i| {
            u16::try_from((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % 65_535)
                .unwrap()
                + 1
        })
        .chain([1, 22, 65_535])
        .collect();
    let targets: Vec<SocketAddr> = ports
        .iter()
        .flat_map(|&p| {
            [
                SocketAddr::new(IpAddr::V4(t4), p),
                SocketAddr::new(IpAddr::V6(t6), p),
            ]
        })
        .collect();
    let results = tb
        .run_in_scanner(|| {
            let tcp: Vec<std::io::Result<SocketAddr>> = targets
                .iter()
                .map(|to| {
                    // The peer is the port asked for: conntrack undoes the redirect.
                    TcpStream::connect_timeout(to, Duration::from_secs(1))
                        .and_then(|s| s.peer_addr())
                })
                .collect();
            let plain_closed = TcpStream::connect_timeout(
                &SocketAddr::new(IpAddr::V4(plain), 23),
                Duration::from_secs(1),
            );
            let udp = ask(
                SocketAddr::new(IpAddr::V4(t4), 9),
                b"x",
                Duration::from_secs(1),
            );
            (tcp, plain_closed, udp)
        })
        .unwrap();
    let (tcp, plain_closed, udp) = results;
    for (to, r) in targets.iter().zip(&tcp) {
        assert_eq!(r.as_ref().ok(), Some(to), "{to}: {r:?}");
        assert_eq!(tb.truth(to.ip(), to.port()), PortTruth::SynAckAll);
        assert_eq!(tb.expected(to.ip(), to.port()), PortState::Open);
    }
    assert_eq!(
        plain_closed.unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );
    assert_eq!(tb.truth(IpAddr::V4(plain), 23), PortTruth::ClosedKernel);
    assert!(matches!(udp, Reply::Data(ref d) if d == b"x"), "{udp:?}");
}

/// Sends one datagram to each of `n` closed ports of `to` from `n` connected sockets at
/// once and counts the port unreachables that come back within `wait`.
fn port_unreachables(to: IpAddr, first_port: u16, n: u16, wait: Duration) -> usize {
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socks: Vec<UdpSocket> = (0..n)
        .map(|i| {
            let s = UdpSocket::bind(local).unwrap();
            s.connect(SocketAddr::new(to, first_port + i)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    for s in &socks {
        let _ = s.send(b"?");
    }
    // Each socket reports its ICMP error once; poll until all have or `wait` is over.
    let mut answered = vec![false; socks.len()];
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + wait;
    loop {
        for (s, a) in socks.iter().zip(answered.iter_mut()).filter(|(_, a)| !**a) {
            *a = matches!(s.recv(&mut buf), Err(e) if e.kind() == ErrorKind::ConnectionRefused);
        }
        if answered.iter().all(|&a| a) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    answered.iter().filter(|&&a| a).count()
}

/// Closed UDP ports probed at once by the rate-limit test.
const N: u16 = 200;

#[test]
fn icmp_rate_limit_covers_udp_port_unreachables() {
    if !privileged() {
        return;
    }
    let mut counts = Vec::new();
    for (limit, n) in [(false, 40u8), (true, 41)] {
        let (a4, a6) = (v4(n), v6(u16::from(n)));
        let tb = Testbed::builder()
            .icmp_rate_limit(limit)
            .host(HostSpec::new(a4).with_v6(a6))
            .build()
            .unwrap();
        assert_eq!(tb.expected_udp(IpAddr::V4(a4), 20_000), PortState::Closed);
        let got = tb
            .run_in_scanner(|| {
                [IpAddr::V4(a4), IpAddr::V6(a6)]
                    .map(|a| port_unreachables(a, 20_000, N, Duration::from_millis(1500)))
            })
            .unwrap();
        eprintln!(
            "icmp_rate_limit({limit}): {N} closed UDP ports answered v4 {} v6 {}",
            got[0], got[1]
        );
        counts.push(got);
    }
    // Without the limit every closed port answers...
    assert_eq!(counts[0], [usize::from(N); 2]);
    // ...with Linux's defaults only a burst does (6 per peer, then 1/s v4 and 10/s v6).
    assert!(counts[1][0] <= 20, "{counts:?}");
    assert!(counts[1][1] <= 20, "{counts:?}");
    assert!(counts[1][0] >= 1 && counts[1][1] >= 1, "{counts:?}");
}

#[test]
fn cli_up_builds_udp_services_and_tarpits() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    if !with_services() {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_portolan-testbed"))
        .args(["up", "--max-duration", "60", "--hosts"])
        .arg("v4=198.18.200.50 v6=2001:2:0:c8::50 udp=9,5000-5001 udp-drop=6000 udp-icmp=7000 svc=dns,echo")
        .arg("v4=198.18.200.51 tarpit")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["udp_open"], serde_json::json!([9, 5000, 5001]));
    assert_eq!(hosts[0]["udp_drop"], serde_json::json!([[6000, 6000]]));
    assert_eq!(hosts[0]["udp_services"], serde_json::json!(["dns", "echo"]));
    assert_eq!(hosts[1]["synack_all"], serde_json::json!(true));
    let target = v["target_ns"].as_str().unwrap().to_owned();
    let id = v["id"].as_str().unwrap().to_owned();
    let ss = |flags: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &target, "ss", "-Hn", flags])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let udp = ss("-lu");
    for want in [
        "198.18.200.50:53 ",
        "198.18.200.50:7 ",
        "198.18.200.50:9 ",
        "198.18.200.50:5001 ",
        "[2001:2:0:c8::50]:53 ",
        "[2001:2:0:c8::50]:5000 ",
    ] {
        assert!(udp.contains(want), "{want} not bound: {udp}");
    }
    let tcp = ss("-lt");
    assert!(tcp.contains("198.18.200.51:1 "), "{tcp}");
    assert!(tcp.contains("198.18.200.50:53 "), "{tcp}");
    // Closing stdin stops it; dnsmasq goes with the testbed.
    drop(child.stdin.take());
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "up did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!netns::list().contains(&target));
    assert!(!service_dir(&id).exists());
}
