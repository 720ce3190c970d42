//! The findings engine on real listeners: sockets this test binds, Debian's redis-server
//! and memcached on ports of their own, and a listener whose executable was deleted.

#![allow(clippy::print_stderr)]

mod common;

use std::net::{SocketAddr, TcpListener};

use common::{deleted_socat_copy, have, listeners_on, probe, start, unnamed_free_port};
use portolan_audit::{audit, AuditInput, Date, Finding, Policy, Reachability, Severity, Verdict};
use portolan_core::Protocol;

fn on_port(f: &[Finding], port: u16) -> Vec<&Finding> {
    f.iter()
        .filter(|f| f.socket.is_some_and(|s| s.port == port))
        .collect()
}

fn ids(f: &[&Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.id).collect()
}

#[test]
fn unknown_wildcard_listener_is_found_and_loopback_is_not() {
    let p = unnamed_free_port();
    let wild = TcpListener::bind(("0.0.0.0", p)).unwrap();
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let q = local.local_addr().unwrap().port();
    let ls = listeners_on(&[p, q]);
    assert_eq!(ls.len(), 2, "{ls:?}");
    let found = audit(&AuditInput::new(&ls));
    let on_p = on_port(&found, p);
    assert_eq!(ids(&on_p), ["PA006-unknown-service"], "{found:#?}");
    let f = on_p[0];
    assert_eq!(f.severity, Severity::Low);
    let owner = f.owner.as_ref().unwrap();
    assert_eq!(owner.pid, Some(std::process::id()));
    assert!(f.detail.contains(&format!("0.0.0.0:{p}")), "{}", f.detail);
    assert!(!f.fix.is_empty());
    assert!(
        on_port(&found, q).is_empty(),
        "loopback listener judged: {found:#?}"
    );
    drop(wild);
}

/// A fixed firewall answer: the verdict is input to the engine (the firewall crate
/// computes it from the live ruleset).
struct Says(Verdict);
impl Reachability for Says {
    fn inbound(&self, _: Protocol, _: SocketAddr) -> Verdict {
        self.0.clone()
    }
}

#[test]
fn redis_on_all_interfaces_is_high_and_its_fix_binds_loopback() {
    if !have("/usr/bin/redis-server") {
        return;
    }
    let p = unnamed_free_port();
    let port = p.to_string();
    let _redis = start(
        "/usr/bin/redis-server",
        &[
            "--port",
            &port,
            "--bind",
            "0.0.0.0",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        p,
    );
    let ls = listeners_on(&[p]);
    assert!(!ls.is_empty());
    assert_eq!(
        ls[0].owner.process.as_deref(),
        Some("redis-server"),
        "{ls:?}"
    );
    // Without a probe the port means nothing: an unknown service.
    let plain = audit(&AuditInput::new(&ls));
    assert_eq!(ids(&on_port(&plain, p)), ["PA006-unknown-service"]);
    // The probe names Redis on its unusual port: a cache on all interfaces.
    let report = probe(p);
    assert_eq!(
        report.identity.as_ref().map(|i| i.service.as_str()),
        Some("redis"),
        "{report:?}"
    );
    let probes = [report];
    let input = AuditInput {
        probes: &probes,
        ..AuditInput::new(&ls)
    };
    let found = audit(&input);
    let f = found
        .iter()
        .find(|f| f.id == "PA001-sensitive-on-all-interfaces")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(f.severity, Severity::High);
    assert!(f.title.contains("Redis"), "{}", f.title);
    assert!(f.fix.contains("bind 127.0.0.1"), "{}", f.fix);
    assert!(f.detail.contains("redis-server"), "{}", f.detail);
    assert!(!found.iter().any(|f| f.id == "PA006-unknown-service"));

    // The firewall says outsiders get in: severity up. (The oracle is the engine's input;
    // the firewall crate implements it from the live ruleset.)
    let open = Says(Verdict::Open);
    let found = audit(&AuditInput {
        reachability: Some(&open),
        ..AuditInput {
            probes: &probes,
            ..AuditInput::new(&ls)
        }
    });
    let f = found
        .iter()
        .find(|f| f.id == "PA001-sensitive-on-all-interfaces")
        .unwrap();
    assert_eq!(f.severity, Severity::Critical);
    assert!(found.iter().any(|f| f.id == "PA010-open-to-outside"));
    let blocked = Says(Verdict::Blocked);
    let found = audit(&AuditInput {
        reachability: Some(&blocked),
        ..AuditInput {
            probes: &probes,
            ..AuditInput::new(&ls)
        }
    });
    let f = found
        .iter()
        .find(|f| f.id == "PA001-sensitive-on-all-interfaces")
        .unwrap();
    assert_eq!(f.severity, Severity::High);
    assert!(f.detail.contains("blocks"), "{}", f.detail);
    assert!(found.iter().any(|f| f.id == "PA011-firewall-blocks"));

    // An exception with a reason accepts it; an expired one does not, and is a finding.
    let today = Date::new(2026, 6, 1).unwrap();
    let text = format!("[[allow]]\nport = {p}\n\n[[exception]]\nport = {p}\nreason = \"lab cache\"\nexpires = 2026-07-01\nrules = [\"PA001\"]\n");
    let policy = Policy::parse("p.toml", &text).unwrap();
    let found = audit(&AuditInput {
        policy: Some(&policy),
        today,
        ..AuditInput {
            probes: &probes,
            ..AuditInput::new(&ls)
        }
    });
    let f = found
        .iter()
        .find(|f| f.id == "PA001-sensitive-on-all-interfaces")
        .unwrap();
    assert!(
        f.accepted
            .as_deref()
            .is_some_and(|a| a.contains("lab cache") && a.contains("2026-07-01")),
        "{f:?}"
    );
    let later = Date::new(2026, 7, 1).unwrap();
    let found = audit(&AuditInput {
        policy: Some(&policy),
        today: later,
        ..AuditInput {
            probes: &probes,
            ..AuditInput::new(&ls)
        }
    });
    let f = found
        .iter()
        .find(|f| f.id == "PA001-sensitive-on-all-interfaces")
        .unwrap();
    assert_eq!(f.accepted, None);
    assert!(found
        .iter()
        .any(|f| f.id == "PP005-exception-expired" && f.detail.contains("lab cache")));
}

#[test]
fn memcached_named_by_the_probe_on_a_port_of_its_own() {
    if !have("/usr/bin/memcached") {
        return;
    }
    let p = unnamed_free_port();
    let port = p.to_string();
    let _mc = start(
        "/usr/bin/memcached",
        &["-l", "0.0.0.0", "-p", &port, "-U", "0", "-u", "root"],
        p,
    );
    let ls = listeners_on(&[p]);
    let probes = [probe(p)];
    assert_eq!(
        probes[0].identity.as_ref().map(|i| i.service.as_str()),
        Some("memcached"),
        "{:?}",
        probes[0]
    );
    let found = audit(&AuditInput {
        probes: &probes,
        ..AuditInput::new(&ls)
    });
    let f = found
        .iter()
        .find(|f| f.id == "PA001-sensitive-on-all-interfaces")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert!(f.title.contains("Memcached"), "{}", f.title);
    assert_eq!(
        f.owner.as_ref().unwrap().process.as_deref(),
        Some("memcached")
    );
    assert!(f.fix.contains("-l 127.0.0.1"));
}

#[test]
fn the_catalog_judges_a_default_port_without_a_probe() {
    // In a network namespace of the test's own: port 2375 is free there whatever the
    // machine runs, and the namespace has a non-loopback address (from 198.18.0.0/15).
    if !portolan_testsupport::skip_unless(portolan_testsupport::Netns::ready()) {
        return;
    }
    let ns = portolan_testsupport::Netns::new("audit-2375");
    let ip = std::net::Ipv4Addr::new(198, 18, 0, 1);
    ns.add_address(ip);
    ns.run_in(|| {
        // Whatever listens on 2375 on all interfaces is taken for the Docker API.
        let l = TcpListener::bind(("0.0.0.0", 2375)).expect("bind 0.0.0.0:2375 in the namespace");
        let ls = listeners_on(&[2375]);
        let found = audit(&AuditInput::new(&ls));
        let f = found
            .iter()
            .find(|f| f.id == "PA001-sensitive-on-all-interfaces")
            .unwrap_or_else(|| panic!("{found:#?}"));
        assert!(f.title.contains("Docker"), "{}", f.title);
        assert!(f.fix.contains("2376"), "{}", f.fix);
        drop(l);
        // Bound to one network address instead: medium, PA002 (any local non-loopback address).
        let _l = TcpListener::bind((ip, 2375)).expect("bind 198.18.0.1:2375 in the namespace");
        let found = audit(&AuditInput::new(&listeners_on(&[2375])));
        assert!(
            found
                .iter()
                .any(|f| f.id == "PA002-sensitive-on-network-address"
                    && f.severity == Severity::Medium),
            "{found:#?}"
        );
    });
}

#[test]
fn a_listener_whose_executable_was_deleted_is_found() {
    if !have("/usr/bin/socat") {
        return;
    }
    let p = unnamed_free_port();
    let _srv = deleted_socat_copy("del", "socat-copy", p);
    let ls = listeners_on(&[p]);
    assert!(ls[0].owner.exe_deleted, "{ls:?}");
    let found = audit(&AuditInput::new(&ls));
    let f = found
        .iter()
        .find(|f| f.id == "PA007-executable-deleted")
        .unwrap_or_else(|| panic!("{found:#?}"));
    assert_eq!(f.severity, Severity::High);
    assert!(f.detail.contains("socat-copy"), "{}", f.detail);
    assert!(f.fix.contains("/proc/"), "{}", f.fix);
    // The same program, not deleted, is not a finding.
    let q = unnamed_free_port();
    let listen = format!("TCP-LISTEN:{q},bind=127.0.0.1,reuseaddr");
    let _ok = start("/usr/bin/socat", &[&listen, "STDOUT"], q);
    assert!(!audit(&AuditInput::new(&listeners_on(&[q])))
        .iter()
        .any(|f| f.id == "PA007-executable-deleted"));
}

#[test]
fn policy_violations_on_real_listeners() {
    let p = unnamed_free_port();
    let _wild = TcpListener::bind(("0.0.0.0", p)).unwrap();
    let missing = unnamed_free_port();
    let ls = listeners_on(&[p]);
    let me = ls[0].owner.process.clone().unwrap();
    let run = |text: &str| {
        let policy = Policy::parse("p.toml", text).unwrap_or_else(|e| panic!("{e}"));
        let found = audit(&AuditInput {
            policy: Some(&policy),
            ..AuditInput::new(&ls)
        });
        found
            .into_iter()
            .filter(|f| f.id.starts_with("PP") || f.id.starts_with("PA009"))
            .collect::<Vec<_>>()
    };
    let f = run("[settings]\nallow_loopback = true\n");
    assert_eq!(
        f.iter().map(|f| f.id).collect::<Vec<_>>(),
        ["PP001-not-allowed"]
    );
    assert!(f[0].fix.contains(&format!("port = {p}")), "{}", f[0].fix);
    let f = run(&format!(
        "[[allow]]\nport = {p}\naddress = [\"loopback\", \"10.0.0.0/8\"]\n"
    ));
    assert_eq!(
        f.iter().map(|f| f.id).collect::<Vec<_>>(),
        ["PP002-address-not-allowed"]
    );
    assert!(
        f[0].detail.contains("loopback, 10.0.0.0/8"),
        "{}",
        f[0].detail
    );
    let f = run(&format!("[[allow]]\nport = {p}\nprocess = \"nginx\"\n"));
    assert_eq!(
        f.iter().map(|f| f.id).collect::<Vec<_>>(),
        ["PP003-owner-mismatch"]
    );
    assert!(
        f[0].detail.contains("`nginx`") && f[0].detail.contains(&me),
        "{}",
        f[0].detail
    );
    let f = run(&format!("[[allow]]\nport = {p}\nprocess = \"{me}\"\n\n[[allow]]\nport = {missing}\nrequired = true\n"));
    assert_eq!(
        f.iter().map(|f| f.id).collect::<Vec<_>>(),
        ["PP004-required-missing"]
    );
    assert!(f[0].title.contains(&format!("{missing}/tcp")));
    let f = run(&format!(
        "[settings]\navoid_default_ports = [{p}]\n[[allow]]\nport = \"{}-{}\"\n",
        p - 1,
        p + 1
    ));
    assert_eq!(
        f.iter().map(|f| f.id).collect::<Vec<_>>(),
        ["PA009-default-port"]
    );
    // allow_loopback = false: a loopback listener needs an entry too.
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let lp = local.local_addr().unwrap().port();
    let lls = listeners_on(&[lp]);
    let strict = Policy::parse("p.toml", "[settings]\nallow_loopback = false\n").unwrap();
    assert!(audit(&AuditInput {
        policy: Some(&strict),
        ..AuditInput::new(&lls)
    })
    .iter()
    .any(|f| f.id == "PP001-not-allowed"));
    let lax = Policy::parse("p.toml", "").unwrap();
    assert!(audit(&AuditInput {
        policy: Some(&lax),
        ..AuditInput::new(&lls)
    })
    .is_empty());
}

#[test]
fn policy_init_round_trips_on_this_machine() {
    // Listeners of our own so the machine has something non-loopback to write down.
    let p = unnamed_free_port();
    let _a = TcpListener::bind(("0.0.0.0", p)).unwrap();
    let _b = TcpListener::bind(("::", p)).ok();
    let ls = common::all_listeners();
    let policy = Policy::from_inventory(&ls);
    assert!(policy.allow.iter().any(|r| r.ports == (p, p)), "{policy:?}");
    let text = policy.to_toml();
    let back = Policy::parse("init.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back.allow.len(), policy.allow.len());
    for (a, b) in policy.allow.iter().zip(&back.allow) {
        assert_eq!(
            (a.proto, a.ports, &a.addresses, &a.owner),
            (b.proto, b.ports, &b.addresses, &b.owner)
        );
    }
    let found = audit(&AuditInput {
        policy: Some(&back),
        ..AuditInput::new(&ls)
    });
    let pp: Vec<_> = found.iter().filter(|f| f.id.starts_with("PP")).collect();
    assert!(
        pp.is_empty(),
        "init -> parse -> audit gave policy findings: {pp:#?}\n{text}"
    );
}

#[test]
fn hostile_process_names_reach_findings_escaped() {
    if !have("/usr/bin/socat") {
        return;
    }
    // A program whose name (and so its comm and exe path) holds terminal escapes.
    let p = unnamed_free_port();
    let _srv = deleted_socat_copy("esc", "x\u{1b}]0;pwn\u{7}\u{1b}[2J", p);
    let found = audit(&AuditInput::new(&listeners_on(&[p])));
    assert!(
        found.iter().any(|f| f.id == "PA007-executable-deleted"),
        "{found:#?}"
    );
    let json = serde_json::to_string(&found).unwrap();
    for f in &found {
        for text in [&f.title, &f.detail, &f.fix] {
            assert!(
                !text.chars().any(portolan_core::escape::is_dangerous),
                "{text:?}"
            );
        }
        // The owner is model data: as the kernel gave it (the exe path holds the escapes);
        // renderers escape it, and JSON escapes control characters itself.
        let o = f.owner.as_ref().unwrap();
        assert!(
            o.exe
                .as_deref()
                .is_some_and(|e| e.contains("\u{1b}]0;pwn\u{7}")),
            "{o:?}"
        );
    }
    // The finding's text carries the escaped name; the JSON has no raw control byte.
    assert!(json.contains("\\\\x1b]0;pwn\\\\x07"), "{json}");
    assert!(json.contains("\\u001b]0;pwn\\u0007"), "{json}");
    assert!(!json.chars().any(char::is_control), "{json}");
}

/// Issue 12: every command a finding suggests for a UDP listener names the port with
/// `/udp` (`portolan kill 53` would look for a TCP listener and miss it).
#[test]
fn fixes_for_a_udp_listener_say_udp() {
    let p = unnamed_free_port();
    let sock = std::net::UdpSocket::bind(("0.0.0.0", p)).unwrap();
    let ls: Vec<_> = listeners_on(&[p])
        .into_iter()
        .filter(|l| l.proto == Protocol::Udp)
        .collect();
    assert_eq!(ls.len(), 1, "{ls:?}");
    let commands = |f: &Finding| -> Vec<String> {
        // The `...` spans of the fix: the commands a person would paste.
        f.fix
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let check = |f: &Finding| {
        let cmds = commands(f);
        assert!(!cmds.is_empty(), "{}: no command in {:?}", f.id, f.fix);
        for c in cmds {
            if c.starts_with("portolan ") {
                assert!(
                    c.contains(&format!("{p}/udp")),
                    "{}: `{c}` names UDP port {p} without /udp",
                    f.id
                );
            }
        }
    };
    let found = audit(&AuditInput::new(&ls));
    let unknown = on_port(&found, p);
    assert_eq!(ids(&unknown), ["PA006-unknown-service"], "{found:#?}");
    check(unknown[0]);
    let me = ls[0].owner.process.clone().unwrap();
    for (text, id) in [
        (
            "[settings]\nallow_loopback = true\n".to_owned(),
            "PP001-not-allowed",
        ),
        (
            format!("[[allow]]\nport = {p}\nproto = \"udp\"\nprocess = \"not-{me}\"\n"),
            "PP003-owner-mismatch",
        ),
    ] {
        let policy = Policy::parse("p.toml", &text).unwrap();
        let found = audit(&AuditInput {
            policy: Some(&policy),
            ..AuditInput::new(&ls)
        });
        let f = found
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no {id} in {found:#?}"));
        check(f);
    }
    drop(sock);
}
