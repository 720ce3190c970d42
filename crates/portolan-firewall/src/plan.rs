//! The plan: an inbound allow-list rendered as the nftables text of portolan's own table,
//! `table inet portolan`. The text replaces that table in one transaction and names no
//! other table.

use std::fmt::Write as _;
use std::net::IpAddr;

use portolan_core::{Port, PortRange};

use crate::{Cidr, FirewallError};

/// The nftables family of portolan's table.
pub const TABLE_FAMILY: &str = "inet";
/// The name of portolan's table.
pub const TABLE_NAME: &str = "portolan";
/// The longest comment nftables stores (its limit is 128 bytes; we keep a margin).
const MAX_COMMENT: usize = 120;

/// A transport protocol the plan can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl L4 {
    /// The nftables (and everyday) name: `tcp`, `udp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// One thing the policy allows inbound: a protocol, a port range, and the sources it may
/// come from (empty: anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRule {
    /// TCP or UDP.
    pub proto: L4,
    /// The destination ports.
    pub ports: PortRange,
    /// Allowed sources; empty means any source.
    pub from: Vec<Cidr>,
    /// Names the policy entry; becomes the rule's comment.
    pub comment: String,
}

/// The anti-lock-out rule: the TCP port that stays open whatever the policy's other
/// entries say. It admits every source, unless [`Guard::follow_policy`] restricted it to
/// the sources the policy gives that port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The port to keep open; `None` turns the guard off.
    pub ssh_port: Option<u16>,
    /// Where the port came from, for the rule's comment.
    pub reason: String,
    /// The sources admitted; empty: any source.
    pub from: Vec<Cidr>,
    /// The client of the SSH session this process runs in (`$SSH_CONNECTION`), if any.
    pub client: Option<IpAddr>,
}

/// Whom the guard admits once it has read the policy ([`Guard::follow_policy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardScope {
    /// No guard.
    Off,
    /// Every source: the policy has no inbound entry for the port.
    EveryoneNoEntry,
    /// Every source, as the policy's entry for the port says.
    EveryoneAsPolicy,
    /// Exactly the policy's sources for the port.
    PolicySources,
    /// The policy's sources and the client of the current SSH session, which they do not
    /// include (so that applying cannot cut the session that applies it).
    PolicySourcesAndClient(IpAddr),
}

impl Guard {
    /// The SSH port to keep open: the server port of the SSH session this process runs in
    /// (`$SSH_CONNECTION`), else `sshd_listening` (sshd's listening port from the
    /// inventory), else 22.
    pub fn detect(sshd_listening: Option<u16>) -> Guard {
        let env = std::env::var("SSH_CONNECTION").ok();
        Guard::from_sources(env.as_deref(), sshd_listening)
    }

    /// [`Guard::detect`] with the environment value given (for tests and callers that
    /// read it elsewhere).
    pub fn from_sources(ssh_connection: Option<&str>, sshd_listening: Option<u16>) -> Guard {
        let (client, session_port) = ssh_connection.map_or((None, None), parse_ssh_connection);
        let (port, reason) = if let Some(port) = session_port {
            (port, "port of the current SSH session")
        } else if let Some(port) = sshd_listening {
            (port, "sshd's listening port")
        } else {
            (22, "default SSH port")
        };
        Guard {
            ssh_port: Some(port),
            reason: reason.to_owned(),
            from: Vec::new(),
            client,
        }
    }

    /// Restricts the guard to the sources the policy gives its port: when every inbound
    /// TCP rule covering the port lists sources, the guard admits their union (plus the
    /// current SSH session's client when they leave it out: the guard exists so that the
    /// plan cannot lock that session out; the caller warns about it). When a covering rule
    /// admits any source, or no rule covers the port, the guard stays open to all.
    #[must_use]
    pub fn follow_policy(mut self, rules: &[InboundRule]) -> (Guard, GuardScope) {
        let Some(port) = self.ssh_port else {
            return (self, GuardScope::Off);
        };
        let covering: Vec<&InboundRule> = rules
            .iter()
            .filter(|r| r.proto == L4::Tcp && r.ports.contains(Port::new(port)))
            .collect();
        if covering.is_empty() {
            return (self, GuardScope::EveryoneNoEntry);
        }
        if covering.iter().any(|r| r.from.is_empty()) {
            return (self, GuardScope::EveryoneAsPolicy);
        }
        let mut from: Vec<Cidr> = covering
            .iter()
            .flat_map(|r| r.from.iter().copied())
            .collect();
        let mut scope = GuardScope::PolicySources;
        if let Some(client) = self.client {
            if !from.iter().any(|c| c.contains(client)) {
                from.push(Cidr::host(client));
                scope = GuardScope::PolicySourcesAndClient(client);
            }
        }
        self.from = minimal_sources(&from);
        (self, scope)
    }

    /// No guard at all (the caller has said lock-out is acceptable).
    pub fn none() -> Guard {
        Guard {
            ssh_port: None,
            reason: String::new(),
            from: Vec::new(),
            client: None,
        }
    }
}

/// `$SSH_CONNECTION` ("client_ip client_port server_ip server_port"): the client's
/// address and the server port (not 0), each when its field parses; neither unless there
/// are exactly four fields.
fn parse_ssh_connection(s: &str) -> (Option<IpAddr>, Option<u16>) {
    let fields: Vec<&str> = s.split_ascii_whitespace().collect();
    match fields.as_slice() {
        [client, _, _, port] => (client.parse().ok(), port.parse().ok().filter(|&p| p != 0)),
        _ => (None, None),
    }
}

/// Makes a policy string safe inside an nftables double-quoted comment: printable ASCII
/// only (no `"` or `\`), at most [`MAX_COMMENT`] bytes.
pub fn comment_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    out.truncate(MAX_COMMENT);
    out.trim().to_owned()
}

/// Sources without blocks that another listed block already covers (nftables refuses
/// overlapping intervals in one anonymous set), sorted.
fn minimal_sources(from: &[Cidr]) -> Vec<Cidr> {
    let mut v: Vec<Cidr> = from.to_vec();
    v.sort_by_key(|c| (c.prefix(), *c));
    v.dedup();
    let mut kept: Vec<Cidr> = Vec::new();
    for c in v {
        if !kept
            .iter()
            .any(|k| k.prefix() <= c.prefix() && k.contains(c.addr()))
        {
            kept.push(c);
        }
    }
    kept.sort();
    kept
}

fn set_text(items: &[Cidr]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("{{ {} }}", parts.join(", "))
    }
}

fn ports_text(r: PortRange) -> String {
    if r.start() == r.end() {
        r.start().get().to_string()
    } else {
        format!("{}-{}", r.start().get(), r.end().get())
    }
}

/// The nft lines for one allow rule: one without a source match when it is open to any
/// source, else one per address family that has sources.
fn rule_lines(rule: &InboundRule) -> Vec<String> {
    lines_with_comment(rule, &format!("policy: {}", rule.comment))
}

fn lines_with_comment(rule: &InboundRule, comment: &str) -> Vec<String> {
    let l4 = rule.proto.as_str();
    let ports = ports_text(rule.ports);
    let comment = comment_text(comment);
    let tail = format!("{l4} dport {ports} accept comment \"{comment}\"");
    let from = minimal_sources(&rule.from);
    if from.is_empty()
        || from.iter().any(|c| c.is_any() && c.is_ipv4())
            && from.iter().any(|c| c.is_any() && !c.is_ipv4())
    {
        return vec![tail];
    }
    let mut lines = Vec::new();
    let v4: Vec<Cidr> = from.iter().copied().filter(|c| c.is_ipv4()).collect();
    let v6: Vec<Cidr> = from.iter().copied().filter(|c| !c.is_ipv4()).collect();
    if !v4.is_empty() {
        lines.push(format!("ip saddr {} {tail}", set_text(&v4)));
    }
    if !v6.is_empty() {
        lines.push(format!("ip6 saddr {} {tail}", set_text(&v6)));
    }
    lines
}

/// ICMP types that keep IPv4 working: ping, unreachable (with fragmentation-needed, which
/// path MTU discovery relies on), time exceeded, parameter problem.
const ICMP_ESSENTIALS: &str =
    "icmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem }";
/// ICMPv6 types that keep IPv6 working: ping, errors (packet-too-big for PMTU), and
/// neighbour discovery (router and neighbour advertisements and solicitations).
const ICMPV6_ESSENTIALS: &str = "icmpv6 type { echo-request, destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query }";

/// The sorted order rules are rendered in, so the same policy always gives the same text.
fn sorted_rules(rules: &[InboundRule]) -> Vec<&InboundRule> {
    let mut v: Vec<&InboundRule> = rules.iter().collect();
    v.sort_by(|a, b| {
        (
            a.proto,
            a.ports.start(),
            a.ports.end(),
            minimal_sources(&a.from),
            &a.comment,
        )
            .cmp(&(
                b.proto,
                b.ports.start(),
                b.ports.end(),
                minimal_sources(&b.from),
                &b.comment,
            ))
    });
    v
}

/// The body of `table inet portolan { ... }`: one base chain on the input hook, policy
/// drop, that accepts loopback, established/related traffic, essential ICMP, the guard
/// port and each rule.
pub fn table_text(rules: &[InboundRule], guard: &Guard) -> Result<String, FirewallError> {
    let mut body = Vec::new();
    body.push("iif \"lo\" accept comment \"loopback\"".to_owned());
    body.push(
        "ct state established,related accept comment \"replies to connections already allowed\""
            .to_owned(),
    );
    body.push(format!(
        "{ICMP_ESSENTIALS} accept comment \"ICMP essentials\""
    ));
    body.push(format!(
        "{ICMPV6_ESSENTIALS} accept comment \"ICMPv6 essentials\""
    ));
    if let Some(port) = guard.ssh_port {
        let rule = InboundRule {
            proto: L4::Tcp,
            ports: PortRange::single(Port::new(port)),
            from: guard.from.clone(),
            comment: String::new(),
        };
        body.extend(lines_with_comment(
            &rule,
            &format!("SSH guard: {}", guard.reason),
        ));
    }
    for rule in sorted_rules(rules) {
        if rule.ports.is_empty() {
            return Err(FirewallError::BadRule(format!(
                "policy entry {:?} has no ports",
                comment_text(&rule.comment)
            )));
        }
        body.extend(rule_lines(rule));
    }
    let mut s = format!("table {TABLE_FAMILY} {TABLE_NAME} {{\n\tchain input {{\n");
    s.push_str("\t\ttype filter hook input priority filter; policy drop;\n");
    for line in body {
        let _ = writeln!(s, "\t\t{line}");
    }
    s.push_str("\t}\n}\n");
    Ok(s)
}

/// The lines that make the following table text replace ours atomically: `add` makes sure
/// it exists (so `delete` cannot fail), `delete` empties the slate.
pub fn replace_prefix() -> String {
    format!("add table {TABLE_FAMILY} {TABLE_NAME}\ndelete table {TABLE_FAMILY} {TABLE_NAME}\n")
}

/// The complete nft script of a plan: a header comment, then one transaction that replaces
/// `table inet portolan` with the planned one. Deterministic: rules are sorted.
pub fn render(rules: &[InboundRule], guard: &Guard) -> Result<String, FirewallError> {
    let table = table_text(rules, guard)?;
    Ok(format!(
        "#!/usr/sbin/nft -f\n\
         # portolan firewall plan: inbound traffic is allowed only as listed below.\n\
         # Replaces table {TABLE_FAMILY} {TABLE_NAME} in one transaction; no other table is touched.\n\
         {}{table}",
        replace_prefix()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(proto: L4, a: u16, b: u16, from: &[&str], comment: &str) -> InboundRule {
        InboundRule {
            proto,
            ports: PortRange::new(Port::new(a), Port::new(b)).unwrap(),
            from: from.iter().map(|s| s.parse().unwrap()).collect(),
            comment: comment.to_owned(),
        }
    }

    #[test]
    fn golden_ruleset() {
        let rules = vec![
            rule(L4::Udp, 53, 53, &[], "dns"),
            rule(
                L4::Tcp,
                5432,
                5432,
                &["10.1.0.0/16", "10.0.0.0/8", "2001:db8::/32", "192.0.2.7"],
                "postgres \"internal\"",
            ),
            rule(L4::Tcp, 80, 80, &[], "web"),
            rule(L4::Tcp, 8000, 8100, &["0.0.0.0/0", "::/0"], "dev servers"),
        ];
        let guard = Guard::from_sources(Some("198.51.100.9 50000 192.0.2.1 2222"), Some(22));
        let got = render(&rules, &guard).unwrap();
        let want = "#!/usr/sbin/nft -f
# portolan firewall plan: inbound traffic is allowed only as listed below.
# Replaces table inet portolan in one transaction; no other table is touched.
add table inet portolan
delete table inet portolan
table inet portolan {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tiif \"lo\" accept comment \"loopback\"
\t\tct state established,related accept comment \"replies to connections already allowed\"
\t\ticmp type { echo-request, destination-unreachable, time-exceeded, parameter-problem } accept comment \"ICMP essentials\"
\t\ticmpv6 type { echo-request, destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query } accept comment \"ICMPv6 essentials\"
\t\ttcp dport 2222 accept comment \"SSH guard: port of the current SSH session\"
\t\ttcp dport 80 accept comment \"policy: web\"
\t\tip saddr { 10.0.0.0/8, 192.0.2.7 } tcp dport 5432 accept comment \"policy: postgres ?internal?\"
\t\tip6 saddr 2001:db8::/32 tcp dport 5432 accept comment \"policy: postgres ?internal?\"
\t\ttcp dport 8000-8100 accept comment \"policy: dev servers\"
\t\tudp dport 53 accept comment \"policy: dns\"
\t}
}
";
        assert_eq!(got, want);
        // The same rules in another order give the same text.
        let mut rev = rules.clone();
        rev.reverse();
        assert_eq!(render(&rev, &guard).unwrap(), got);
    }

    #[test]
    fn guard_sources_in_order() {
        assert_eq!(
            Guard::from_sources(Some("1.2.3.4 5 6.7.8.9 2200"), Some(22)).ssh_port,
            Some(2200)
        );
        assert_eq!(
            Guard::from_sources(Some("garbage"), Some(2022)).ssh_port,
            Some(2022)
        );
        assert_eq!(Guard::from_sources(None, None).ssh_port, Some(22));
        let none = render(&[], &Guard::none()).unwrap();
        assert!(!none.contains("SSH guard"));
    }

    #[test]
    fn comments_cannot_break_out() {
        let c = comment_text("a\"; flush ruleset; \\ \u{1b}[31m é");
        assert!(!c.contains('"') && !c.contains('\\') && !c.contains('\u{1b}'));
        assert_eq!(comment_text(&"x".repeat(500)).len(), MAX_COMMENT);
    }

    #[test]
    fn the_guard_follows_the_policys_sources() {
        let ssh = |from: &[&str]| rule(L4::Tcp, 22, 22, from, "ssh");
        let g = Guard::from_sources(None, None);
        let (g1, scope) = g.clone().follow_policy(&[ssh(&["198.18.5.5"])]);
        assert_eq!(scope, GuardScope::PolicySources);
        let text = render(&[ssh(&["198.18.5.5"])], &g1).unwrap();
        assert!(!text.contains("\ttcp dport 22 accept"), "{text}");
        assert!(text.contains("ip saddr 198.18.5.5 tcp dport 22 accept comment \"SSH guard"));
        // A range that covers the port counts; a UDP rule does not.
        let (_, scope) = g
            .clone()
            .follow_policy(&[rule(L4::Udp, 22, 22, &["198.18.5.5"], "u")]);
        assert_eq!(scope, GuardScope::EveryoneNoEntry);
        let (_, scope) = g
            .clone()
            .follow_policy(&[rule(L4::Tcp, 1, 1024, &[], "low")]);
        assert_eq!(scope, GuardScope::EveryoneAsPolicy);
        // The session's client (IPv6 here) is kept in, and reported.
        let g = Guard::from_sources(Some("2001:db8::9 50000 2001:db8::1 22"), None);
        let (g2, scope) = g.follow_policy(&[ssh(&["198.18.5.5"])]);
        assert_eq!(
            scope,
            GuardScope::PolicySourcesAndClient("2001:db8::9".parse().unwrap())
        );
        let text = render(&[], &g2).unwrap();
        assert!(text.contains("ip saddr 198.18.5.5 tcp dport 22"), "{text}");
        assert!(
            text.contains("ip6 saddr 2001:db8::9 tcp dport 22"),
            "{text}"
        );
        assert_eq!(
            Guard::none().follow_policy(&[ssh(&["198.18.5.5"])]).1,
            GuardScope::Off
        );
    }
}
