//! `--from-scan`: real local listeners compared with a scan of this host from elsewhere, in
//! the exact shapes `portolan scan --json` and `--jsonl` print.

mod common;

use std::net::TcpListener;

use common::{listeners_on, unnamed_free_port};
use portolan_audit::{compare, parse_scan, Severity};
use portolan_core::{PortState, Protocol, ScanRecord};

/// A record as the scanner writes it: core's scan record, serialised (the binary's own
/// output is read in crates/portolan/tests/scan_loopback.rs).
fn rec(host: &str, port: u16, state: &str) -> String {
    let state: PortState = serde_json::from_value(serde_json::Value::from(state)).unwrap();
    let mut r: ScanRecord<(), ()> =
        ScanRecord::new(host.parse().unwrap(), port, Protocol::Tcp, state);
    r.reason = "syn-ack".into();
    r.rtt_ms = Some(0.4);
    serde_json::to_string(&r).unwrap()
}

fn doc(records: &[String]) -> String {
    format!(
        r#"{{"scan":{{"scanner":"portolan","version":"0.1.0","type":"connect","seed":1,"shard":null,"hosts":1,"ports":3}},"ports":[{}],"summary":{{"elapsed_s":0.1,"probes":3,"results":3,"hosts_up":1,"open":2}}}}
"#,
        records.join(",")
    )
}

#[test]
fn every_kind_of_difference_is_named() {
    let local = TcpListener::bind("127.0.0.1:0").unwrap();
    let lp = local.local_addr().unwrap().port();
    let wp = unnamed_free_port();
    let _wild = TcpListener::bind(("0.0.0.0", wp)).unwrap();
    let nobody = unnamed_free_port();
    let ls = listeners_on(&[lp, wp, nobody]);
    assert_eq!(ls.len(), 2);
    let records = [
        rec("198.18.0.7", lp, "open"),
        rec("198.18.0.7", wp, "filtered"),
        rec("198.18.0.7", nobody, "open"),
    ];
    for text in [doc(&records), records.join("\n") + "\n"] {
        let scan = parse_scan(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(scan.len(), 3);
        let found = compare(&ls, &scan, None);
        let by = |port: u16| {
            found
                .iter()
                .find(|f| f.socket.unwrap().port == port)
                .unwrap_or_else(|| panic!("{port}: {found:#?}"))
        };
        let f = by(lp);
        assert_eq!(
            (f.id, f.severity),
            ("PS001-reachable-but-local", Severity::Critical)
        );
        assert_eq!(f.owner.as_ref().unwrap().pid, Some(std::process::id()));
        let f = by(wp);
        assert_eq!((f.id, f.severity), ("PS002-not-reached", Severity::Info));
        let f = by(nobody);
        assert_eq!(
            (f.id, f.severity),
            ("PS003-reached-not-listening", Severity::High)
        );
        assert!(f.fix.contains("DNAT"), "{}", f.fix);
        assert_eq!(found.len(), 3, "{found:#?}");
    }
    // Reached and listening on all interfaces: as expected, nothing to say.
    let scan = parse_scan(&rec("198.18.0.7", wp, "open")).unwrap();
    assert!(compare(&ls, &scan, None).is_empty());
}

#[test]
fn malformed_scans_get_clear_errors() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("{\"scan\":{}}", "no `ports`"),
        ("{\"ports\":[{\"host\":\"x\",\"port\":1,\"proto\":\"tcp\",\"state\":\"open\"}]}", "\"x\" is not an IP"),
        ("{\"ports\":[{\"host\":\"10.0.0.1\",\"port\":70000,\"proto\":\"tcp\",\"state\":\"open\"}]}", "70000"),
        ("{\"ports\":[{\"host\":\"10.0.0.1\",\"port\":0,\"proto\":\"tcp\",\"state\":\"open\"}]}", "`port` = 0"),
        ("{\"ports\":[{\"host\":\"10.0.0.1\",\"port\":22,\"proto\":\"icmp\",\"state\":\"open\"}]}", "icmp"),
        ("{\"ports\":[{\"host\":\"10.0.0.1\",\"port\":22,\"state\":\"open\"}]}", "proto"),
        ("{\"ports\":[{\"host\":\"10.0.0.1\",\"port\":22,\"proto\":\"tcp\",\"state\":\"op\\u001b[2Jen\"}]}", "\\x1b"),
        ("host,port\n10.0.0.1,22\n", "line 1"),
        (&format!("{}\n{{\"host\":\"10.0.0.1\"", rec("10.0.0.1", 22, "open")), "line 2"),
    ];
    for (text, needle) in cases {
        let e = parse_scan(text).expect_err(text).to_string();
        assert!(e.contains(needle), "`{needle}` not in `{e}` for {text}");
        assert!(!e.chars().any(portolan_core::escape::is_dangerous), "{e:?}");
    }
}
