//! The reachability evaluator on JSON that real `nft -j list ruleset` printed: each case
//! loads a ruleset in a fresh network namespace, dumps it, and evaluates ports.

mod common;

use std::net::IpAddr;

use common::{privileged_or_skip, Netns};
use portolan_core::{Port, PortRange};
use portolan_firewall::{override_warnings, render, Guard, InboundRule, Ruleset, Verdict, L4};

const V4: &str = "198.18.0.1";
const V6: &str = "2001:2::1";

/// Loads `script` in a fresh namespace and returns the ruleset nft reports back.
fn live(script: &str) -> Ruleset {
    let ns = Netns::new("v");
    let out = ns.nft_load(script);
    assert!(
        out.status.success(),
        "nft refused the script: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = ns.nft(&["-j", "list", "ruleset"]);
    Ruleset::from_json(&json).expect("parse nft -j output")
}

fn v(rs: &Ruleset, proto: L4, addr: &str, port: u16) -> Verdict {
    rs.inbound_verdict(proto, addr.parse::<IpAddr>().unwrap(), port)
}

fn kind(v: &Verdict) -> &'static str {
    match v {
        Verdict::Open { .. } => "open",
        Verdict::Restricted { .. } => "restricted",
        Verdict::Blocked { .. } => "blocked",
        Verdict::Unknown { .. } => "unknown",
    }
}

fn rule(proto: L4, a: u16, b: u16, from: &[&str], comment: &str) -> InboundRule {
    InboundRule {
        proto,
        ports: PortRange::new(Port::new(a), Port::new(b)).unwrap(),
        from: from.iter().map(|s| s.parse().unwrap()).collect(),
        comment: comment.to_owned(),
    }
}

#[test]
fn empty_ruleset_is_open() {
    if !privileged_or_skip() {
        return;
    }
    let rs = live("");
    let got = v(&rs, L4::Tcp, V4, 80);
    assert_eq!(kind(&got), "open", "{got}");
}

#[test]
fn our_own_plan_evaluates_as_planned() {
    if !privileged_or_skip() {
        return;
    }
    let rules = vec![
        rule(L4::Tcp, 80, 80, &[], "web"),
        rule(L4::Tcp, 5432, 5432, &["10.0.0.0/8"], "db"),
        rule(L4::Udp, 53, 53, &[], "dns"),
        rule(L4::Tcp, 8000, 8100, &[], "dev"),
    ];
    let guard = Guard::from_sources(Some("192.0.2.9 40000 198.18.0.1 2222"), None);
    let rs = live(&render(&rules, &guard).unwrap());
    let cases: &[(L4, &str, u16, &str)] = &[
        (L4::Tcp, V4, 80, "open"),
        (L4::Tcp, V6, 80, "open"),
        (L4::Tcp, V4, 8050, "open"),
        (L4::Tcp, V4, 8101, "blocked"),
        (L4::Tcp, V4, 5432, "restricted"),
        (L4::Tcp, V6, 5432, "blocked"),
        (L4::Udp, V4, 53, "open"),
        (L4::Udp, V4, 80, "blocked"),
        (L4::Tcp, V4, 53, "blocked"),
        (L4::Tcp, V4, 2222, "open"),
        (L4::Tcp, V4, 22, "blocked"),
    ];
    for &(p, a, port, want) in cases {
        let got = v(&rs, p, a, port);
        assert_eq!(kind(&got), want, "{} {a} {port}: {got}", p.as_str());
    }
    match v(&rs, L4::Tcp, V4, 80) {
        Verdict::Open { by } => assert!(by.contains("policy: web"), "{by}"),
        other => panic!("{other}"),
    }
    match v(&rs, L4::Tcp, V4, 5432) {
        Verdict::Restricted { only, by } => {
            assert!(only.contains("10.0.0.0/8"), "{only}");
            assert!(
                by.contains("policy of chain input of table inet portolan"),
                "{by}"
            );
        }
        other => panic!("{other}"),
    }
}

const MIXED: &str = r#"
table inet t {
  set allowed { type inet_service; elements = { 443, 8443 }; }
  chain input { type filter hook input priority filter; policy drop;
    iif "lo" accept
    iifname "eth0" tcp dport 9 accept
    ct state established,related accept
    ct state vmap { invalid : drop, established : accept }
    tcp dport { 80, 8000-8100 } accept
    meta l4proto { tcp, udp } th dport 53 accept
    tcp dport @allowed counter accept
    udp dport 1000-2000 jump sub
    tcp dport vmap { 22 : accept, 23 : drop }
    ip daddr 198.18.0.1 tcp dport 7 reject with tcp reset
    fib daddr type local tcp dport 6 accept
    tcp dport 3000 goto empty
    tcp dport 1-5 tcp flags syn limit rate 10/second accept
  }
  chain sub {
    udp dport 1500 return
    accept
  }
  chain empty {
    counter
  }
}
table ip filter {
  chain INPUT { type filter hook input priority 0; policy accept; }
}
"#;

#[test]
fn matches_sets_maps_jumps_and_unknowns() {
    if !privileged_or_skip() {
        return;
    }
    let rs = live(MIXED);
    let cases: &[(L4, &str, u16, &str)] = &[
        (L4::Tcp, V4, 9, "restricted"),
        (L4::Tcp, V4, 80, "open"),
        (L4::Tcp, V4, 8100, "open"),
        (L4::Tcp, V4, 53, "open"),
        (L4::Udp, V6, 53, "open"),
        (L4::Tcp, V4, 8443, "open"),
        (L4::Udp, V4, 1200, "open"),
        (L4::Udp, V4, 1500, "blocked"),
        (L4::Udp, V4, 999, "blocked"),
        (L4::Tcp, V4, 22, "open"),
        (L4::Tcp, V4, 23, "blocked"),
        (L4::Tcp, V4, 7, "blocked"),
        (L4::Tcp, V4, 6, "open"),
        (L4::Tcp, V4, 3000, "blocked"),
        // The rate-limited accept decides: not evaluable.
        (L4::Tcp, "198.18.0.2", 7, "blocked"),
        (L4::Tcp, V4, 1, "unknown"),
    ];
    for &(p, a, port, want) in cases {
        let got = v(&rs, p, a, port);
        assert_eq!(kind(&got), want, "{} {a} {port}: {got}", p.as_str());
    }
    match v(&rs, L4::Tcp, V4, 1) {
        Verdict::Unknown { why } => assert!(why.contains("limit"), "{why}"),
        other => panic!("{other}"),
    }
    match v(&rs, L4::Tcp, V4, 23) {
        Verdict::Blocked { by } => assert!(by.contains("chain input of table inet t"), "{by}"),
        other => panic!("{other}"),
    }
}

#[test]
fn every_table_must_accept() {
    if !privileged_or_skip() {
        return;
    }
    let rs = live(
        "table inet a {\n chain input { type filter hook input priority 0; policy drop; tcp dport 80 accept; }\n}\n\
         table ip b {\n chain input { type filter hook input priority 10; policy drop; }\n}\n\
         table ip6 c {\n chain input { type filter hook input priority 10; policy accept; tcp dport 80 ip6 saddr 2001:db8::/32 accept; tcp dport 80 drop; }\n}\n",
    );
    // IPv4: table a accepts, table b drops everything.
    match v(&rs, L4::Tcp, V4, 80) {
        Verdict::Blocked { by } => assert!(by.contains("table ip b"), "{by}"),
        other => panic!("{other}"),
    }
    // IPv6: table a accepts, table c accepts only a source block.
    match v(&rs, L4::Tcp, V6, 80) {
        Verdict::Restricted { only, by } => {
            assert!(only.contains("2001:db8::/32"), "{only}");
            assert!(by.contains("table ip6 c"), "{by}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(kind(&v(&rs, L4::Tcp, V6, 81)), "blocked");
}

#[test]
fn warns_about_docker_ufw_firewalld_and_other_input_chains() {
    if !privileged_or_skip() {
        return;
    }
    let rs = live(
        "table ip filter {\n chain INPUT { type filter hook input priority 0; policy accept; }\n\
           chain DOCKER-USER { }\n chain ufw-user-input { }\n}\n\
         table inet firewalld {\n chain filter_INPUT { type filter hook input priority 10; policy accept; }\n}\n\
         table inet other {\n chain in { type filter hook input priority 5; policy accept; }\n}\n\
         table inet portolan {\n chain input { type filter hook input priority 0; policy drop; }\n}\n",
    );
    let w = override_warnings(&rs).join("\n");
    for needle in [
        "Docker",
        "ufw",
        "firewalld",
        "iptables-nft",
        "table inet other also has an input-hook chain",
    ] {
        assert!(w.contains(needle), "no {needle:?} in:\n{w}");
    }
    assert!(!w.contains("table inet portolan also"), "{w}");
    let clean = live(
        "table inet portolan {\n chain input { type filter hook input priority 0; policy drop; }\n}\n",
    );
    assert!(override_warnings(&clean).is_empty());
}
