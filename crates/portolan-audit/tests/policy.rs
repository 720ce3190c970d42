//! Policy parsing: good files, and hostile or malformed ones that must be rejected whole,
//! with file:line:column and the bad key or value named.

use std::fmt::Write as _;

use portolan_audit::{AddrMatch, Date, Policy, PolicyError};
use portolan_core::Protocol;

fn err(text: &str) -> PolicyError {
    match Policy::parse("p.toml", text) {
        Ok(p) => panic!("accepted a bad policy: {p:?}\n{text}"),
        Err(e) => e,
    }
}

/// The error text, asserting it is located and mentions every `needle`.
fn rejects(text: &str, line: usize, needles: &[&str]) -> String {
    let e = err(text);
    let s = e.to_string();
    assert!(
        s.starts_with(&format!("p.toml:{line}:")),
        "wanted line {line}: {s}"
    );
    for n in needles {
        assert!(s.contains(n), "`{n}` not in: {s}");
    }
    assert!(
        !s.chars().any(portolan_core::escape::is_dangerous),
        "raw control characters in: {s:?}"
    );
    s
}

const GOOD: &str = r#"
version = 1

[settings]
allow_loopback = false
avoid_default_ports = [22]

[[allow]]
port = 2222
proto = "tcp"
address = ["any"]
process = "sshd"
user = "root"
required = true
from = ["198.18.0.0/15", "2001:db8::/32"]
comment = "ssh, moved"

[[allow]]
port = "8000-8099"
address = ["loopback", "10.0.0.0/8", "192.0.2.7"]

[[exception]]
port = 6379
address = "0.0.0.0"
reason = "legacy cache, ticket OPS-12"
expires = 2030-01-31
rules = ["PA001"]
"#;

#[test]
fn a_full_policy_parses() {
    let p = Policy::parse("p.toml", GOOD).unwrap();
    assert!(!p.settings.allow_loopback);
    assert_eq!(p.settings.avoid_default_ports, [22]);
    assert_eq!(p.allow.len(), 2);
    let ssh = &p.allow[0];
    assert_eq!(
        (ssh.ports, ssh.proto, ssh.required),
        ((2222, 2222), Protocol::Tcp, true)
    );
    assert_eq!(ssh.line, 8, "line of the [[allow]] header");
    assert_eq!(ssh.owner.process.as_deref(), Some("sshd"));
    assert_eq!(ssh.from.len(), 2);
    assert_eq!(p.allow[1].ports, (8000, 8099));
    assert_eq!(p.allow[1].addresses[0], AddrMatch::Loopback);
    assert!(p.allow[1].addresses[1].allows("10.1.2.3".parse().unwrap()));
    assert!(!p.allow[1].addresses[1].allows("0.0.0.0".parse().unwrap()));
    let e = &p.exceptions[0];
    assert_eq!(e.expires, Date::new(2030, 1, 31));
    assert!(e.covers_rule("PA001-sensitive-on-all-interfaces"));
    assert!(!e.covers_rule("PA007-executable-deleted"));
}

#[test]
fn bad_ports_are_named() {
    rejects("[[allow]]\nport = 0\n", 2, &["`port` = 0", "1 to 65535"]);
    rejects("[[allow]]\nport = 70000\n", 2, &["70000"]);
    rejects("[[allow]]\nport = -1\n", 2, &["-1"]);
    rejects("[[allow]]\nport = \"9-1\"\n", 2, &["backwards"]);
    rejects("[[allow]]\nport = \"http\"\n", 2, &["\"http\""]);
    rejects("[[allow]]\nport = 1.5\n", 2, &["1.5"]);
    rejects("[[allow]]\nproto = \"tcp\"\n", 1, &["no `port`"]);
    rejects(
        "[settings]\navoid_default_ports = [22, 0]\n",
        2,
        &["avoid_default_ports"],
    );
}

#[test]
fn bad_addresses_and_networks() {
    rejects(
        "[[allow]]\nport = 22\naddress = [\"10.0.0.0/33\"]\n",
        3,
        &["10.0.0.0/33", "prefix length must be 0 to 32"],
    );
    rejects(
        "[[allow]]\nport = 22\naddress = [\"10.0.0.1/8\"]\n",
        3,
        &["host bits", "10.0.0.0/8"],
    );
    rejects(
        "[[allow]]\nport = 22\naddress = [\"300.1.1.1\"]\n",
        3,
        &["300.1.1.1"],
    );
    rejects(
        "[[allow]]\nport = 22\naddress = [\"everywhere\"]\n",
        3,
        &["everywhere", "loopback"],
    );
    rejects("[[allow]]\nport = 22\naddress = []\n", 3, &["empty list"]);
    rejects(
        "[[allow]]\nport = 22\nfrom = [\"fe80::/129\"]\n",
        3,
        &["129"],
    );
    rejects(
        "[[allow]]\nport = 22\nfrom = [\"loopback\"]\n",
        3,
        &["from"],
    );
    rejects("[[allow]]\nport = 22\nproto = \"sctp\"\n", 3, &["\"sctp\""]);
}

#[test]
fn unknown_and_misplaced_keys() {
    rejects(
        "[[allow]]\nport = 22\nprocesss = \"sshd\"\n",
        3,
        &["processs"],
    );
    rejects("[setings]\nallow_loopback = true\n", 1, &["setings"]);
    rejects("[settings]\nallow_loopbak = true\n", 2, &["allow_loopbak"]);
    rejects(
        "[[allow]]\nport = 22\nreason = \"x\"\n",
        3,
        &["`reason` does not belong in [[allow]]"],
    );
    rejects(
        "[[exception]]\nport = 22\nreason = \"x\"\nrequired = true\n",
        4,
        &["`required` does not belong"],
    );
    rejects("version = 2\n", 1, &["version"]);
}

#[test]
fn exceptions_need_a_reason_and_a_real_date() {
    rejects("\n[[exception]]\nport = 22\n", 2, &["no `reason`"]);
    rejects(
        "[[exception]]\nport = 22\nreason = \"   \"\n",
        3,
        &["`reason` is empty"],
    );
    rejects(
        "[[exception]]\nport = 22\nreason = \"x\"\nexpires = \"tomorrow\"\n",
        4,
        &["\"tomorrow\"", "not a date"],
    );
    rejects(
        "[[exception]]\nport = 22\nreason = \"x\"\nexpires = \"2026-02-30\"\n",
        4,
        &["2026-02-30"],
    );
    rejects(
        "[[exception]]\nport = 22\nreason = \"x\"\nexpires = 2026-01-01T10:00:00Z\n",
        4,
        &["not a date"],
    );
    rejects(
        "[[exception]]\nport = 22\nreason = \"x\"\nexpires = 20260101\n",
        4,
        &["20260101"],
    );
    // A quoted ISO date is accepted as well as a TOML date.
    let p = Policy::parse(
        "p.toml",
        "[[exception]]\nport = 22\nreason = \"x\"\nexpires = \"2027-03-01\"\n",
    )
    .unwrap();
    assert_eq!(p.exceptions[0].expires, Date::new(2027, 3, 1));
}

#[test]
fn duplicates_are_rejected() {
    let s = rejects(
        "[[allow]]\nport = 22\n\n[[allow]]\nport = 22\nproto = \"tcp\"\naddress = \"any\"\n",
        4,
        &["duplicate", "line 1"],
    );
    assert!(s.contains("duplicate [[allow]]"), "{s}");
    // Same port, different address: not a duplicate.
    Policy::parse("p.toml", "[[allow]]\nport = 22\naddress = \"loopback\"\n[[allow]]\nport = 22\naddress = \"10.0.0.0/8\"\n").unwrap();
}

#[test]
fn control_characters_are_refused_and_escaped() {
    let s = rejects(
        "[[allow]]\nport = 22\nprocess = \"ss\\u001b[2Jhd\"\n",
        3,
        &["U+001B", "\\x1b[2J"],
    );
    assert!(!s.contains('\u{1b}'));
    rejects(
        "[[exception]]\nport = 22\nreason = \"ok \\u202e gnp\"\n",
        3,
        &["U+202E"],
    );
    // A raw control character is a TOML syntax error, located.
    let e = err("[[allow]]\nport = 22\ncomment = \"a\u{7}b\"\n");
    assert_eq!(e.errors[0].line, 3, "{e}");
    assert!(!e.to_string().contains('\u{7}'));
}

#[test]
fn syntax_errors_have_line_and_column() {
    let e = err("[[allow]]\nport = 22\naddress = [\"any\"\n");
    assert!(e.errors[0].line >= 3, "{e}");
    let e = err("[[allow]]\nport = = 22\n");
    assert_eq!((e.errors[0].line, e.errors[0].column), (2, 8), "{e}");
    let e = err("[[allow]]\nport = 22\n[[allow]]\nport = 23\nport = 24\n");
    assert_eq!(e.errors[0].line, 5, "{e}");
    // Not UTF-8 does not reach the parser (the caller reads text); invalid TOML types do.
    err("allow = 5\n");
    err("[[allow]]\nport = 22\nrequired = \"yes\"\n");
}

#[test]
fn a_policy_never_half_applies() {
    // One good entry and two bad ones: nothing is returned, both errors are reported.
    let e = err("[[allow]]\nport = 22\n\n[[allow]]\nport = 0\n\n[[allow]]\nport = 80\naddress = \"nowhere\"\n");
    assert_eq!(e.errors.len(), 2, "{e}");
    assert_eq!(e.errors[0].line, 5);
    assert_eq!(e.errors[1].line, 9);
}

#[test]
fn huge_and_deep_files_are_bounded() {
    let big = format!(
        "# {}\n",
        "x".repeat(portolan_audit::policy::MAX_POLICY_BYTES)
    );
    rejects(&big, 1, &["limit"]);
    let deep = format!("x = {}{}", "[".repeat(5000), "]".repeat(5000));
    let e = err(&deep);
    assert_eq!(e.errors[0].line, 1);
    let many = (1..=10_001).fold(String::new(), |mut s, i| {
        let _ = write!(s, "[[allow]]\nport = {}\n", i % 60000 + 1);
        s
    });
    rejects(&many, 1, &["10000 entries"]);
}

#[test]
fn hostile_file_names_are_escaped() {
    let e = Policy::parse("evil\u{1b}]0;x\u{7}.toml", "port = 1\n").unwrap_err();
    assert!(
        !e.to_string()
            .chars()
            .any(portolan_core::escape::is_dangerous),
        "{e}"
    );
}
