//! `ss` (iproute2) as the oracle: with thousands of the test's own sockets open, every
//! socket ss sees before and after a portolan run must be in portolan's list, and every
//! socket portolan lists must have been seen by ss.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use common::{portolan_json, run_cmd, sockets};
use serde_json::Value;

/// The tests here compare machine-wide snapshots: one at a time, so one test's sockets
/// opening or closing never lands between another's ss and portolan runs.
static SERIAL: Mutex<()> = Mutex::new(());

/// (proto, local address, local port, remote (address, port), state), normalised.
type Tuple = (String, String, u16, Option<(String, u16)>, String);

/// An address as both tools agree on it: brackets and `%iface` dropped, unspecified
/// addresses (`0.0.0.0`, `::`, ss's `*`) as `*`, IPv6 in canonical form.
fn norm_ip(s: &str) -> String {
    let s = s.trim_start_matches('[').trim_end_matches(']');
    let s = s.split('%').next().unwrap_or(s);
    if s == "*" {
        return "*".into();
    }
    let ip: IpAddr = s
        .parse()
        .unwrap_or_else(|e| panic!("unparseable address {s:?}: {e}"));
    if ip.is_unspecified() {
        "*".into()
    } else {
        ip.to_string()
    }
}

fn ss_state(proto: &str, name: &str) -> &'static str {
    match name {
        "ESTAB" => "established",
        "LISTEN" => "listen",
        "TIME-WAIT" => "time_wait",
        "SYN-RECV" => "syn_recv",
        "SYN-SENT" => "syn_sent",
        "FIN-WAIT-1" => "fin_wait1",
        "FIN-WAIT-2" => "fin_wait2",
        "CLOSE-WAIT" => "close_wait",
        "LAST-ACK" => "last_ack",
        "CLOSING" => "closing",
        "UNCONN" if proto == "udp" => "unconn",
        "UNCONN" | "CLOSE" => "close",
        other => panic!("unknown ss state {other:?}"),
    }
}

fn ss_endpoint(ep: &str) -> (String, Option<u16>) {
    let (a, p) = ep
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("ss endpoint without a port: {ep:?}"));
    let port = (p != "*").then(|| p.parse().unwrap_or_else(|e| panic!("port in {ep:?}: {e}")));
    (norm_ip(a), port)
}

/// One `ss -[t|u]anH` snapshot.
fn ss(proto: &str) -> BTreeSet<Tuple> {
    let mut cmd = Command::new("ss");
    cmd.arg(if proto == "tcp" { "-tanH" } else { "-uanH" });
    let r = run_cmd(cmd);
    r.expect_code(0);
    r.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 5, "unexpected ss line {l:?}");
            let (lip, lport) = ss_endpoint(f[3]);
            let (rip, rport) = ss_endpoint(f[4]);
            (
                proto.to_string(),
                lip,
                lport.unwrap_or(0),
                rport.map(|p| (rip, p)),
                ss_state(proto, f[0]).to_string(),
            )
        })
        .collect()
}

fn portolan_tuples(doc: &Value) -> BTreeSet<Tuple> {
    sockets(doc)
        .iter()
        .map(|s| {
            let remote = s["remote_addr"].as_str().and_then(|a| {
                let port = u16::try_from(s["remote_port"].as_u64()?).ok()?;
                let ip = norm_ip(a);
                (!(ip == "*" && port == 0)).then_some((ip, port))
            });
            (
                s["proto"].as_str().expect("proto").to_string(),
                norm_ip(s["local_addr"].as_str().expect("local_addr")),
                u16::try_from(s["local_port"].as_u64().expect("local_port")).expect("port"),
                remote,
                s["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

fn tuple(proto: &str, local: SocketAddr, remote: Option<SocketAddr>, state: &str) -> Tuple {
    (
        proto.into(),
        norm_ip(&local.ip().to_string()),
        local.port(),
        remote.map(|r| (norm_ip(&r.ip().to_string()), r.port())),
        state.into(),
    )
}

fn show(set: &BTreeSet<&Tuple>) -> String {
    let mut out = String::new();
    for t in set.iter().take(20) {
        let _ = writeln!(out, "  {t:?}");
    }
    out
}

/// ss, portolan, ss; compares. Returns the differences found (empty: agreement). The
/// test's own sockets must be in portolan's answer every time.
fn compare_once(proto: &str, source: &str, own: &BTreeSet<Tuple>) -> Option<String> {
    let before = ss(proto);
    let flag = if proto == "tcp" { "-t" } else { "-u" };
    let doc = portolan_json(&[
        "ls",
        "-a",
        flag,
        "--json",
        "--no-processes",
        "--source",
        source,
    ]);
    let after = ss(proto);
    assert_eq!(doc["source"], source);
    let ours = portolan_tuples(&doc);
    let missing_own: BTreeSet<&Tuple> = own.difference(&ours).collect();
    assert!(
        missing_own.is_empty(),
        "{} of the test's own {proto} sockets are missing from portolan ({source}), e.g.:\n{}",
        missing_own.len(),
        show(&missing_own)
    );
    assert!(
        before.is_superset(own) || after.is_superset(own),
        "ss itself misses our sockets"
    );
    let stable: BTreeSet<Tuple> = before.intersection(&after).cloned().collect();
    let seen: BTreeSet<Tuple> = before.union(&after).cloned().collect();
    let missing: BTreeSet<&Tuple> = stable.difference(&ours).collect();
    let invented: BTreeSet<&Tuple> = ours.difference(&seen).collect();
    if missing.is_empty() && invented.is_empty() {
        return None;
    }
    Some(format!(
        "{proto}/{source}: {} socket(s) in both ss runs are missing from portolan:\n{}\
         {} socket(s) listed by portolan were in neither ss run:\n{}",
        missing.len(),
        show(&missing),
        invented.len(),
        show(&invented)
    ))
}

/// Other programs open and close sockets too: a disagreement must persist over three
/// attempts before it counts.
fn compare(proto: &str, source: &str, own: &BTreeSet<Tuple>) {
    let mut last = None;
    for _ in 0..3 {
        last = compare_once(proto, source, own);
        if last.is_none() {
            return;
        }
    }
    panic!("portolan disagrees with ss:\n{}", last.unwrap_or_default());
}

/// How many connections this process can afford (two fds each), at most 1500.
fn connection_budget() -> usize {
    let limit = usize::try_from(common::fd_limit()).unwrap_or(1024);
    (limit.saturating_sub(300) / 2).min(1500)
}

/// The test's own TCP sockets: listeners on 127.0.0.1 and ::1 (and one dual-stack on
/// `::` reached over IPv4), with connections spread over them.
struct TcpSet {
    _listeners: Vec<TcpListener>,
    _conns: Vec<(TcpStream, TcpStream)>,
    tuples: BTreeSet<Tuple>,
}

fn open_tcp() -> TcpSet {
    let addrs: [IpAddr; 4] = [
        Ipv4Addr::LOCALHOST.into(),
        Ipv4Addr::LOCALHOST.into(),
        Ipv6Addr::LOCALHOST.into(),
        Ipv6Addr::LOCALHOST.into(),
    ];
    let mut listeners: Vec<TcpListener> = addrs
        .iter()
        .map(|a| TcpListener::bind((*a, 0)).expect("bind loopback listener"))
        .collect();
    let dual = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)).expect("bind [::]:0");
    let dual_port = dual.local_addr().unwrap().port();
    listeners.push(dual);
    let mut tuples = BTreeSet::new();
    for lst in &listeners {
        tuples.insert(tuple("tcp", lst.local_addr().unwrap(), None, "listen"));
    }
    let n = connection_budget();
    assert!(
        n >= 500,
        "fd limit too low for this test: {}",
        common::fd_limit()
    );
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        // Every 100th connection goes to the dual-stack listener over IPv4: mapped addresses.
        let (lst, to) = if i % 100 == 0 {
            (
                &listeners[4],
                SocketAddr::from((Ipv4Addr::LOCALHOST, dual_port)),
            )
        } else {
            let lst = &listeners[i % 4];
            (lst, lst.local_addr().unwrap())
        };
        let client = TcpStream::connect(to).expect("connect");
        let (server, _) = lst.accept().expect("accept");
        for sock in [&client, &server] {
            let t = tuple(
                "tcp",
                sock.local_addr().unwrap(),
                Some(sock.peer_addr().unwrap()),
                "established",
            );
            tuples.insert(t);
        }
        conns.push((client, server));
    }
    assert!(
        tuples.iter().any(|t| t.1.starts_with("::ffff:127.0.0.1")),
        "the dual-stack listener saw IPv4-mapped peers"
    );
    TcpSet {
        _listeners: listeners,
        _conns: conns,
        tuples,
    }
}

/// The test's own UDP sockets: unconnected ones, and pairs connected to each other.
fn open_udp() -> (Vec<UdpSocket>, BTreeSet<Tuple>) {
    let mut socks = Vec::new();
    for i in 0..300 {
        let ip: IpAddr = if i % 3 == 2 {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        socks.push(UdpSocket::bind((ip, 0)).expect("bind udp"));
    }
    // Connect every fourth socket to the next one of the same family.
    for i in (0..socks.len() - 3).step_by(4) {
        let peer = socks[i + 3].local_addr().unwrap();
        socks[i].connect(peer).expect("connect udp");
    }
    let tuples = socks
        .iter()
        .map(|s| {
            let local = s.local_addr().unwrap();
            match s.peer_addr() {
                Ok(peer) => tuple("udp", local, Some(peer), "established"),
                Err(_) => tuple("udp", local, None, "unconn"),
            }
        })
        .collect();
    (socks, tuples)
}

#[test]
fn tcp_agrees_with_ss_over_netlink() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let set = open_tcp();
    assert!(set.tuples.len() > 2 * 500);
    compare("tcp", "netlink", &set.tuples);
}

#[test]
fn tcp_agrees_with_ss_over_proc() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let set = open_tcp();
    compare("tcp", "proc", &set.tuples);
}

#[test]
fn udp_agrees_with_ss_over_netlink() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let (_socks, own) = open_udp();
    assert_eq!(own.iter().filter(|t| t.4 == "established").count(), 75);
    compare("udp", "netlink", &own);
}

#[test]
fn udp_agrees_with_ss_over_proc() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let (_socks, own) = open_udp();
    compare("udp", "proc", &own);
}

#[test]
fn normalisation_matches_ss_notation() {
    assert_eq!(norm_ip("[::ffff:127.0.0.1]"), "::ffff:127.0.0.1");
    assert_eq!(norm_ip("[fe80::1%eth0]"), "fe80::1");
    assert_eq!(norm_ip("*"), "*");
    assert_eq!(norm_ip("0.0.0.0"), "*");
    assert_eq!(norm_ip("[::]"), "*");
    assert_eq!(norm_ip("[0:0::1]"), "::1");
    assert_eq!(ss_endpoint("*:*"), ("*".to_string(), None));
    assert_eq!(ss_endpoint("[::1]:8080"), ("::1".to_string(), Some(8080)));
    assert_eq!(ss_state("tcp", "FIN-WAIT-1"), "fin_wait1");
    assert_eq!(ss_state("udp", "UNCONN"), "unconn");
}
