//! `portolan scan --syn` (`-sS`): raw SYN probes against hosts in network namespaces behind
//! the user-space wire (real delay, jitter and loss), every port checked against the
//! ground truth, IPv4 and IPv6; host discovery by SYN/ACK ping; the errors a user meets
//! (no privilege, a missing interface, a source address that is not ours, a zero rate).
//! Needs root; without it these tests say so and skip, except in CI where a missing
//! prerequisite fails.

#![allow(clippy::print_stderr)] // timings are reported on stderr

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_cmd, BIN};
use portolan_testbed::{HostSpec, Testbed};
use serde_json::Value;

fn privileged() -> bool {
    portolan_testsupport::skip_unless(portolan_testbed::check_prerequisites())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs `portolan scan --syn ARGS --jsonl` in the scanner namespace.
fn syn_scan(
    tb: &Testbed,
    args: &[&str],
) -> (BTreeMap<(IpAddr, u16), Value>, Duration, common::Run) {
    let mut cmd = tb.command_in_scanner(BIN);
    cmd.args(["scan", "-sS", "--jsonl", "--no-progress"])
        .args(args);
    let start = Instant::now();
    let r = run_cmd(cmd);
    let took = start.elapsed();
    assert!(matches!(r.code(), 0 | 1), "{r:?}");
    let mut m = BTreeMap::new();
    for v in r.jsonl() {
        let host: IpAddr = v["host"].as_str().unwrap().parse().unwrap();
        let port = u16::try_from(v["port"].as_u64().unwrap()).unwrap();
        assert!(
            m.insert((host, port), v).is_none(),
            "{host} {port} reported twice"
        );
    }
    (m, took, r)
}

/// Every port's state against the testbed's truth, and the reason a SYN scan gives for it.
fn assert_truth(
    tb: &Testbed,
    host: IpAddr,
    ports: impl Iterator<Item = u16>,
    got: &BTreeMap<(IpAddr, u16), Value>,
) {
    let mut wrong = Vec::new();
    let mut n = 0;
    for p in ports {
        n += 1;
        let want = tb.expected(host, p).to_string();
        let want_reason = match want.as_str() {
            "open" => &["syn-ack"][..],
            "closed" => &["reset"][..],
            _ => &["no-response", "admin-prohibited", "host-unreach"][..],
        };
        match got.get(&(host, p)) {
            None => wrong.push(format!("{host} {p}: missing (want {want})")),
            Some(v) if v["state"] != want.as_str() => wrong.push(format!(
                "{host} {p}: {} (want {want}, truth {:?})",
                v["state"],
                tb.truth(host, p)
            )),
            Some(v) if !want_reason.contains(&v["reason"].as_str().unwrap_or("")) => {
                wrong.push(format!("{host} {p}: reason {}", v["reason"]));
            }
            Some(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {n} ports wrong, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// The reference network: 13 open, 1,102 filtered (1,001 dropped, 50 rejected by
/// ICMP admin-prohibited, 51 reset by the firewall: closed), the rest closed.
fn reference_host(v4: Ipv4Addr, v6: Ipv6Addr) -> HostSpec {
    HostSpec::new(v4)
        .with_v6(v6)
        .with_open([
            22, 25, 53, 80, 110, 143, 443, 3306, 5432, 6379, 8080, 8443, 27017,
        ])
        .with_drop(10_000, 11_000)
        .with_icmp(20_000, 20_049)
        .with_reset(30_000, 30_050)
}

#[test]
fn syn_full_range_at_20ms_every_state_exact_v4_and_v6() {
    if !privileged() {
        return;
    }
    let v4 = Ipv4Addr::new(198, 18, 40, 10);
    let v6: Ipv6Addr = "2001:2::40:10".parse().unwrap();
    let tb = Testbed::builder()
        .rtt(ms(20))
        .jitter(ms(2))
        .seed(41)
        .host(reference_host(v4, v6))
        .build()
        .unwrap();
    for target in [IpAddr::V4(v4), IpAddr::V6(v6)] {
        let (got, took, r) = syn_scan(&tb, &[&target.to_string(), "-p-", "-n"]);
        assert_truth(&tb, target, 1..=65535, &got);
        // The ICMP-rejected ports say so: ICMP admin-prohibited read from the wire.
        let icmp = (20_000..20_050)
            .filter(|p| got[&(target, *p)]["reason"] == "admin-prohibited")
            .count();
        assert_eq!(icmp, 50, "{target}: {}", r.stderr);
        // An RTT on answered ports: at least the wire's. An answer that came after a
        // retry had gone carries none (Karn: it could be either attempt's), which a
        // loaded machine can cause for any one port: look at all the open ones.
        let open = &got[&(target, 22)];
        let rtts: Vec<f64> = got
            .iter()
            .filter(|((t, _), v)| *t == target && v["state"] == "open")
            .filter_map(|(_, v)| v["rtt_ms"].as_f64())
            .collect();
        assert!(!rtts.is_empty(), "{target}: no open port has an RTT");
        assert!(rtts.iter().all(|r| *r >= 10.0), "{target}: {rtts:?}");
        // The answer's TTL where the kernel gives it (an IPv4 raw socket sees the header).
        if target.is_ipv4() {
            assert!(
                open["ttl"].as_u64().is_some_and(|t| (1..=255).contains(&t)),
                "{open}"
            );
        }
        eprintln!("-sS full range at 20 ms, {target}: {took:?}");
    }
    // Nothing lingers on the target: the kernel reset every SYN-ACK (no socket held them).
    let half_open = tb
        .run_in_target(|| {
            std::fs::read_to_string("/proc/thread-self/net/tcp")
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("03"))
                .count()
        })
        .unwrap();
    assert_eq!(half_open, 0, "SYN_RECV entries left on the target");
}

#[test]
fn syn_full_range_at_100ms_with_5_percent_loss_is_exact() {
    if !privileged() {
        return;
    }
    let v4 = Ipv4Addr::new(198, 18, 41, 10);
    let v6: Ipv6Addr = "2001:2::41:10".parse().unwrap();
    let tb = Testbed::builder()
        .rtt(ms(100))
        .jitter(ms(5))
        .loss(0.05)
        .seed(42)
        .host(reference_host(v4, v6))
        .build()
        .unwrap();
    let (got, took, _) = syn_scan(&tb, &["198.18.41.10", "-p-", "-n"]);
    assert_truth(&tb, IpAddr::V4(v4), 1..=65535, &got);
    eprintln!("-sS full range at 100 ms, 5% loss: {took:?}");
    assert!(took < Duration::from_secs(60), "no crawl: {took:?}");
}

#[test]
fn syn_discovery_finds_live_hosts_of_a_block() {
    if !privileged() {
        return;
    }
    let a = Ipv4Addr::new(198, 18, 42, 1);
    let b = Ipv4Addr::new(198, 18, 42, 2);
    let c = Ipv4Addr::new(198, 18, 42, 3);
    let tb = Testbed::builder()
        .rtt(ms(10))
        .seed(43)
        .host(HostSpec::new(a).with_open([22, 80]))
        .host(HostSpec::new(b).with_open([80]).down())
        // Every TCP port but 80 dropped: only the bare ACK to 80 (a reset) or the echo
        // finds this one.
        .host(HostSpec::new(c).with_drop(1, 79).with_drop(81, 65535))
        .build()
        .unwrap();
    let (got, _, r) = syn_scan(&tb, &["198.18.42.0/29", "-p", "1-100,443"]);
    let hosts: BTreeSet<IpAddr> = got.keys().map(|(h, _)| *h).collect();
    assert_eq!(hosts, [IpAddr::V4(a), IpAddr::V4(c)].into(), "{}", r.stderr);
    assert!(r.stderr.contains("2 of 6 hosts answered"), "{}", r.stderr);
    assert!(r.stderr.contains("SYN/ACK ping"), "{}", r.stderr);
    for h in [a, c] {
        assert_truth(&tb, IpAddr::V4(h), (1..=100).chain([443]), &got);
    }
}

#[test]
fn syn_source_address_and_interface_options() {
    if !privileged() {
        return;
    }
    let v4 = Ipv4Addr::new(198, 18, 43, 10);
    let tb = Testbed::builder()
        .seed(44)
        .host(HostSpec::new(v4).with_open([22, 443]))
        .build()
        .unwrap();
    let (scanner_v4, _) = tb.scanner_addrs();
    // -S with the scanner's own address, -g a chosen source port: the same answers.
    let (got, _, r) = syn_scan(
        &tb,
        &[
            "198.18.43.10",
            "-p",
            "1-1024",
            "-S",
            &scanner_v4.to_string(),
            "-g",
            "40123",
        ],
    );
    assert_truth(&tb, IpAddr::V4(v4), 1..=1024, &got);
    assert!(
        r.stderr.is_empty() || !r.stderr.contains("error"),
        "{}",
        r.stderr
    );
    // An address this machine does not have, an interface that does not exist, a zero
    // rate: a clear error and exit 2.
    for (args, says) in [
        (vec!["-S", "198.18.99.99"], "not an address of this machine"),
        (
            vec!["-e", "nosuch0"],
            "no network interface named `nosuch0`",
        ),
        (vec!["--rate", "0"], "--rate must be a positive number"),
        (vec!["-g", "0"], "--source-port must be between 1 and 65535"),
        (vec!["-S", "not-an-ip"], "not an IP address"),
    ] {
        let mut cmd = tb.command_in_scanner(BIN);
        cmd.args(["scan", "-sS", "198.18.43.10", "-p", "22"])
            .args(&args);
        let r = run_cmd(cmd);
        assert_eq!(r.code(), 2, "{args:?}: {r:?}");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    // -S on a connect scan is refused: the kernel picks the source there.
    let mut cmd = tb.command_in_scanner(BIN);
    cmd.args([
        "scan",
        "198.18.43.10",
        "-p",
        "22",
        "-S",
        &scanner_v4.to_string(),
    ]);
    let r = run_cmd(cmd);
    assert_eq!(r.code(), 2, "{r:?}");
    assert!(
        r.stderr.contains("applies to the raw SYN scan"),
        "{}",
        r.stderr
    );
}

#[test]
fn syn_without_privilege_says_why_and_exits_2() {
    if !portolan_testsupport::skip_unless(common::root_required()) {
        return;
    }
    // An unprivileged user (nobody), no capabilities: the raw scan cannot start.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--inh-caps=-all",
        BIN,
        "scan",
        "-sS",
        "127.0.0.1",
        "-p",
        "22",
    ]);
    let r = run_cmd(cmd);
    assert_eq!(r.code(), 2, "{r:?}");
    assert!(r.stderr.contains("root or the CAP_NET_RAW"), "{}", r.stderr);
    assert!(r.stderr.contains("connect scan"), "{}", r.stderr);
    // The same user's connect scan works.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        BIN,
        "scan",
        "127.0.0.1",
        "-p",
        "1",
        "--jsonl",
    ]);
    let r = run_cmd(cmd);
    assert!(matches!(r.code(), 0 | 1), "{r:?}");
}

#[test]
fn syn_scan_tells_a_syn_ack_everything_host_from_open_ports() {
    if !privileged() {
        return;
    }
    let tarpit = Ipv4Addr::new(198, 18, 45, 10);
    let normal = Ipv4Addr::new(198, 18, 45, 11);
    let tb = Testbed::builder()
        .rtt(ms(10))
        .seed(46)
        .host(HostSpec::new(tarpit).with_synack_all())
        .host(HostSpec::new(normal).with_open([22, 80, 443, 8080]))
        .build()
        .unwrap();
    let (got, _, r) = syn_scan(&tb, &["198.18.45.10", "198.18.45.11", "-p", "1-3000", "-n"]);
    // The middlebox: no port reported open, every one said to be hidden behind it.
    let t = IpAddr::V4(tarpit);
    let open: Vec<u16> = (1..=3000)
        .filter(|p| got[&(t, *p)]["state"] == "open")
        .collect();
    assert!(open.is_empty(), "tarpit ports reported open: {open:?}");
    assert!(
        (1..=3000).all(|p| got[&(t, p)]["reason"] == "syn-ack-all"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("198.18.45.10 answers SYN-ACK on random ports too"),
        "{}",
        r.stderr
    );
    // The ordinary host beside it keeps its open ports.
    assert_truth(&tb, IpAddr::V4(normal), 1..=3000, &got);
}

#[test]
fn udp_services_closed_dropped_and_rejected_ports_exact_under_the_icmp_rate_limit() {
    use portolan_testbed::UdpService;
    let services = [
        UdpService::Dns,
        UdpService::Snmp,
        UdpService::Ntp,
        UdpService::Echo,
    ];
    if !portolan_testsupport::skip_unless(portolan_testbed::check_services(services)) {
        return;
    }
    let v4 = Ipv4Addr::new(198, 18, 46, 10);
    let v6: Ipv6Addr = "2001:2::46:10".parse().unwrap();
    let mut host = HostSpec::new(v4)
        .with_v6(v6)
        .with_udp_open([5000])
        .with_udp_drop(6000, 6003)
        .with_udp_icmp(7000, 7004);
    for s in services {
        host = host.with_udp_service(s);
    }
    // The target keeps Linux's ICMP rate limits: about one error per second per peer
    // (IPv4) after a burst of six, ten per second (IPv6).
    let tb = Testbed::builder()
        .rtt(ms(10))
        .seed(47)
        .icmp_rate_limit(true)
        .host(host)
        .build()
        .unwrap();
    let ports: Vec<u16> = [7, 53, 123, 161, 5000]
        .into_iter()
        .chain(6000..=6003)
        .chain(7000..=7004)
        .chain(20..=34)
        .collect();
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for (target, probe) in [(IpAddr::V4(v4), true), (IpAddr::V6(v6), false)] {
        let mut cmd = tb.command_in_scanner(BIN);
        cmd.args(["scan", "-sU", "--jsonl", "--no-progress", "-n", "-p", &list])
            .arg(target.to_string());
        if probe {
            cmd.arg("--probe");
        }
        let start = Instant::now();
        let r = run_cmd(cmd);
        let took = start.elapsed();
        assert!(matches!(r.code(), 0 | 1), "{r:?}");
        let got: BTreeMap<u16, Value> = r
            .jsonl()
            .into_iter()
            .map(|v| (u16::try_from(v["port"].as_u64().unwrap()).unwrap(), v))
            .collect();
        let mut wrong = Vec::new();
        for p in &ports {
            let want = tb.expected_udp(target, *p).to_string();
            match got.get(p) {
                None => wrong.push(format!("{p}: missing (want {want})")),
                Some(v) if v["state"] != want.as_str() => {
                    wrong.push(format!("{p}: {} (want {want})", v["state"]));
                }
                Some(v) => {
                    // Closed only on an ICMP port unreachable, open only on an answer.
                    let why = v["reason"].as_str().unwrap_or("");
                    let ok = match want.as_str() {
                        "closed" => why == "port-unreach",
                        "open" => why == "udp-response",
                        "open|filtered" => why == "no-response",
                        _ => why == "admin-prohibited",
                    };
                    if !ok {
                        wrong.push(format!("{p}: {want} with reason {why}"));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{target}: {wrong:?}\n{}", r.stderr);
        if probe {
            // -sU --probe names what answers.
            for (p, name) in [(53, "domain"), (161, "snmp"), (123, "ntp"), (7, "echo")] {
                assert_eq!(got[&p]["service"], name, "{p}: {}", got[&p]);
                assert_eq!(got[&p]["service_source"], "probe", "{p}: {}", got[&p]);
            }
        }
        eprintln!("-sU {target}: {} ports in {took:?}", ports.len());
    }
}
