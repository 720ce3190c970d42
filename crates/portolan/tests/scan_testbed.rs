//! `portolan scan` against hosts in network namespaces behind the user-space wire
//! (portolan-testbed): real delay, jitter and loss, nftables DROP and REJECT, IPv6, a
//! host that is down, several hosts. Every port's state is checked against the ground
//! truth. Needs root; without it these tests say so and skip, except in CI where a missing
//! prerequisite fails.

#![allow(clippy::print_stderr)] // timings are reported on stderr

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use common::{run_cmd, BIN};
use portolan_testbed::{HostSpec, Testbed};
use serde_json::Value;

/// Whether the machine can build a testbed (root, `ip`, `nft`); see
/// [`portolan_testsupport::skip_unless`].
fn privileged() -> bool {
    portolan_testsupport::skip_unless(portolan_testbed::check_prerequisites())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs `portolan scan ARGS --jsonl` in the scanner namespace; returns verdicts and time.
fn scan(tb: &Testbed, args: &[&str]) -> (BTreeMap<(IpAddr, u16), Value>, Duration, common::Run) {
    let mut cmd = tb.command_in_scanner(BIN);
    cmd.args(["scan", "--jsonl", "--no-progress"]).args(args);
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
        match got.get(&(host, p)) {
            None => wrong.push(format!("{host} {p}: missing (want {want})")),
            Some(v) if v["state"] != want.as_str() => wrong.push(format!(
                "{host} {p}: {} (want {want}, truth {:?})",
                v["state"],
                tb.truth(host, p)
            )),
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

/// The issue's reference network: 13 open, 1,102 filtered, the rest closed.
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
fn full_range_at_20ms_every_state_exact_v4_and_v6() {
    if !privileged() {
        return;
    }
    let v4 = Ipv4Addr::new(198, 18, 0, 10);
    let v6: Ipv6Addr = "2001:2::10".parse().unwrap();
    let tb = Testbed::builder()
        .rtt(ms(20))
        .jitter(ms(2))
        .seed(1)
        .host(reference_host(v4, v6))
        .build()
        .unwrap();
    let (got, took, _) = scan(&tb, &["198.18.0.10", "-p-"]);
    assert_truth(&tb, IpAddr::V4(v4), 1..=65535, &got);
    let filtered: Vec<&Value> = got.values().filter(|v| v["state"] == "filtered").collect();
    assert_eq!(filtered.len(), 1001 + 50);
    assert!(
        filtered
            .iter()
            .filter(|v| v["reason"] == "host-unreach")
            .count()
            == 50,
        "ICMP admin-prohibited is reported as host-unreach"
    );
    eprintln!("full range at 20 ms: {took:?}");
    // IPv6, a slice of the range with every kind of port in it.
    let (got6, _, _) = scan(
        &tb,
        &[
            "2001:2::10",
            "-p",
            "1-1024,8080,9990-10010,20040-20060,30040-30060",
        ],
    );
    let ports: Vec<u16> = (1..=1024)
        .chain([8080])
        .chain(9990..=10010)
        .chain(20040..=20060)
        .chain(30040..=30060)
        .collect();
    assert_truth(&tb, IpAddr::V6(v6), ports.into_iter(), &got6);
}

#[test]
fn lossy_slow_link_every_state_exact() {
    if !privileged() {
        return;
    }
    let v4 = Ipv4Addr::new(198, 18, 1, 10);
    let host = HostSpec::new(v4)
        .with_open([22, 80, 443, 5432, 8080])
        .with_drop(2000, 3999); // 2,000 filtered
    let tb = Testbed::builder()
        .rtt(ms(150))
        .jitter(ms(5))
        .loss(0.05)
        .seed(7)
        .host(host)
        .build()
        .unwrap();
    let (got, took, _) = scan(&tb, &["198.18.1.10", "-p", "1-12000"]);
    assert_truth(&tb, IpAddr::V4(v4), 1..=12000, &got);
    eprintln!("12,000 ports at 150 ms RTT, 5% loss: {took:?}");
    assert!(took < Duration::from_secs(120), "no crawl: {took:?}");
}

#[test]
fn blocks_discovery_down_hosts_and_several_hosts() {
    if !privileged() {
        return;
    }
    let a = Ipv4Addr::new(198, 18, 2, 1);
    let b = Ipv4Addr::new(198, 18, 2, 2);
    let c = Ipv4Addr::new(198, 18, 2, 3);
    let tb = Testbed::builder()
        .rtt(ms(10))
        .seed(3)
        .host(HostSpec::new(a).with_open([22, 80]))
        .host(HostSpec::new(b).with_open([80]).down())
        .host(HostSpec::new(c).with_open([443]).with_drop(1, 100))
        .build()
        .unwrap();
    // A block: discovery keeps the two hosts that answer, and scans only those.
    let (got, _, r) = scan(&tb, &["198.18.2.0/29", "-p", "1-200,443"]);
    let hosts: std::collections::BTreeSet<IpAddr> = got.keys().map(|(h, _)| *h).collect();
    assert_eq!(hosts, [IpAddr::V4(a), IpAddr::V4(c)].into(), "{}", r.stderr);
    assert!(r.stderr.contains("2 of 6 hosts answered"), "{}", r.stderr);
    for h in [a, c] {
        assert_truth(&tb, IpAddr::V4(h), (1..=200).chain([443]), &got);
    }
    // A down host named explicitly: scanned anyway, every port filtered, and it ends.
    let (got, took, _) = scan(&tb, &["198.18.2.2", "-p", "1-300", "-T4"]);
    assert_truth(&tb, IpAddr::V4(b), 1..=300, &got);
    assert!(got.values().all(|v| v["reason"] == "no-response"));
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn host_names_forward_reverse_and_numeric() {
    if !privileged() {
        return;
    }
    let web = Ipv4Addr::new(198, 18, 3, 1);
    let web6: Ipv6Addr = "2001:2:0:3::1".parse().unwrap();
    let plain = Ipv4Addr::new(198, 18, 3, 2);
    // The testbed gives the scanner namespace its own /etc/hosts (with these names) and a
    // resolver on its loopback: no lookup leaves the testbed.
    let tb = Testbed::builder()
        .rtt(ms(5))
        .seed(4)
        .host(
            HostSpec::new(web)
                .with_v6(web6)
                .with_name("web.test")
                .with_open([80]),
        )
        .host(HostSpec::new(plain).with_open([22]))
        .build()
        .unwrap();
    let name_of = |got: &BTreeMap<(IpAddr, u16), Value>, h: IpAddr, p: u16| {
        got[&(h, p)]["hostname"].as_str().map(str::to_owned)
    };
    // By address: the reverse name (PTR) where there is one, none elsewhere.
    let (got, _, _) = scan(&tb, &["198.18.3.1", "198.18.3.2", "-p", "22,80"]);
    assert_eq!(
        name_of(&got, IpAddr::V4(web), 80).as_deref(),
        Some("web.test")
    );
    assert_eq!(name_of(&got, IpAddr::V4(plain), 22), None);
    // By name: every address it resolves to is scanned, under the given name.
    let (got, _, _) = scan(&tb, &["web.test", "-p", "80"]);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[&(IpAddr::V6(web6), 80)]["state"], "open");
    assert_eq!(
        name_of(&got, IpAddr::V6(web6), 80).as_deref(),
        Some("web.test")
    );
    // -n: no reverse lookups (and no service names).
    let (got, _, _) = scan(&tb, &["198.18.3.1", "-p", "80", "-n"]);
    assert_eq!(name_of(&got, IpAddr::V4(web), 80), None);
    assert!(got[&(IpAddr::V4(web), 80)]["service"].is_null());
    // The table and nmap's formats carry the name too.
    let xml = std::env::temp_dir().join(format!("portolan-names-{}.xml", std::process::id()));
    let mut cmd = tb.command_in_scanner(BIN);
    cmd.args(["scan", "198.18.3.1", "-p", "80", "--no-progress", "-oX"])
        .arg(&xml);
    let r = run_cmd(cmd);
    assert!(r.stdout.contains("198.18.3.1 (web.test)"), "{}", r.stdout);
    let x = std::fs::read_to_string(&xml).unwrap();
    let _ = std::fs::remove_file(&xml);
    assert!(
        x.contains(r#"<hostname name="web.test" type="PTR"/>"#),
        "{x}"
    );
}

#[test]
fn icmp_echo_finds_a_host_whose_tcp_ports_are_all_dropped() {
    if !privileged() {
        return;
    }
    let quiet = Ipv4Addr::new(198, 18, 5, 1);
    let down = Ipv4Addr::new(198, 18, 5, 2);
    let tb = Testbed::builder()
        .rtt(ms(10))
        .seed(6)
        .host(HostSpec::new(quiet).with_drop(1, 65_535))
        .host(HostSpec::new(down).down())
        .build()
        .unwrap();
    // No connect ping can tell `quiet` is there (every SYN is dropped); its kernel still
    // answers echo requests, which a root scanner sends.
    let (got, _, r) = scan(&tb, &["198.18.5.0/30", "-p", "22,80", "-T4"]);
    assert!(
        r.stderr.contains("1 of 2 hosts answered") && r.stderr.contains("ICMP echo"),
        "{}",
        r.stderr
    );
    let hosts: std::collections::BTreeSet<IpAddr> = got.keys().map(|(h, _)| *h).collect();
    assert_eq!(hosts, [IpAddr::V4(quiet)].into());
    assert_truth(&tb, IpAddr::V4(quiet), [22, 80].into_iter(), &got);
}

#[test]
fn a_block_with_no_route_says_so_at_once() {
    use portolan_testsupport::Netns;
    if !portolan_testsupport::skip_unless(Netns::ready()) {
        return;
    }
    // A namespace with loopback only: no route to anything in 198.18.0.0/15.
    let ns = Netns::new("noroute");
    for extra in [&[][..], &["-Pn"][..]] {
        let mut cmd = ns.command(BIN);
        cmd.args([
            "scan",
            "198.18.0.0/16",
            "-p",
            "80,443",
            "--no-progress",
            "-n",
        ])
        .args(extra);
        let start = Instant::now();
        let r = run_cmd(cmd);
        let took = start.elapsed();
        eprintln!("no route, {extra:?}: {took:?}");
        r.expect_code(2);
        assert!(
            r.stderr
                .contains("network unreachable: no route to 198.18.0.0/16"),
            "{}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        // Every connect fails at once; nothing waits for a timeout.
        assert!(took < Duration::from_millis(1500), "{extra:?}: {took:?}");
    }
    // One routable target among them: the scan goes on, the unroutable ones are filtered
    // with the kernel's reason.
    ns.add_address(Ipv4Addr::new(198, 18, 9, 1));
    let mut cmd = ns.command(BIN);
    cmd.args([
        "scan",
        "198.18.9.1",
        "198.19.0.1",
        "-p",
        "80",
        "--jsonl",
        "--no-progress",
        "-n",
    ]);
    let r = run_cmd(cmd);
    r.expect_code(1);
    let recs = r.jsonl();
    assert_eq!(recs.len(), 2, "{}", r.stdout);
    assert!(
        recs.iter()
            .any(|v| v["host"] == "198.19.0.1" && v["reason"] == "net-unreach"),
        "{}",
        r.stdout
    );
}

#[test]
fn silent_hosts_of_a_block_are_one_line_in_the_table() {
    use portolan_testsupport::Netns;
    if !portolan_testsupport::skip_unless(Netns::ready()) {
        return;
    }
    // A route through a gateway whose (permanent) neighbour entry names a MAC address no
    // one has: every SYN leaves on a veth and nothing ever answers.
    let ns = Netns::new("silent");
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&["addr", "add", "198.19.0.1/24", "dev", "v0"]);
    ns.ip(&[
        "neigh",
        "add",
        "198.19.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "v0",
        "nud",
        "permanent",
    ]);
    ns.ip(&[
        "route",
        "add",
        "198.18.16.0/20",
        "via",
        "198.19.0.2",
        "dev",
        "v0",
    ]);
    let dir = std::env::temp_dir().join(format!("portolan-silent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let xml = dir.join("scan.xml");
    let grep = dir.join("scan.gnmap");
    let args = [
        "scan",
        "198.18.16.0/20",
        "-Pn",
        "-n",
        "-p",
        "80",
        "--timeout",
        "200",
        "--max-retries",
        "0",
        "--no-progress",
    ];
    let mut cmd = ns.command(BIN);
    cmd.args(args)
        .args(["-oX", xml.to_str().unwrap(), "-oG", grep.to_str().unwrap()]);
    let r = run_cmd(cmd);
    r.expect_code(1);
    let lines: Vec<&str> = r.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() <= 3, "{} lines:\n{}", lines.len(), r.stdout);
    assert!(
        r.stdout.contains("4,094 hosts did not answer"),
        "{}",
        r.stdout
    );
    // The files list the hosts that answered (none) and count the rest, as nmap does.
    let x = std::fs::read_to_string(&xml).unwrap();
    assert!(!x.contains("<host "), "{x}");
    assert!(x.contains("down=\"4094\""), "{x}");
    let g = std::fs::read_to_string(&grep).unwrap();
    assert!(g.lines().count() <= 3, "{g}");
    // JSON Lines still carry every port record asked for.
    let mut cmd = ns.command(BIN);
    cmd.args(args).arg("--jsonl");
    let r = run_cmd(cmd);
    r.expect_code(1);
    let recs = r.jsonl();
    assert_eq!(recs.len(), 4094);
    assert!(recs.iter().all(|v| v["reason"] == "no-response"));
    let _ = std::fs::remove_dir_all(&dir);
}
