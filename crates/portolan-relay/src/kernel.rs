//! `portolan forward --kernel`: forwarding rules as nftables DNAT and masquerade in
//! portolan's own table, `table inet portolan_forward`, so that the kernel forwards at line
//! rate with no process in the path; and the redirect ranges the userspace forwarder asks
//! for (`range_mode = "redirect"`), in chains of their own in the same table.
//!
//! The table (nothing here reads or writes any other):
//!
//! | chain         | hook, priority              | one rule per kernel forward                              |
//! |---------------|-----------------------------|----------------------------------------------------------|
//! | `prerouting`  | nat prerouting, dstnat      | DNAT of traffic arriving from outside                    |
//! | `output`      | nat output, -100            | DNAT of connections made on this machine                 |
//! | `postrouting` | nat postrouting, srcnat     | masquerade of the DNATed flows to another host           |
//! | `forward`     | filter forward, filter      | `ct status dnat ... accept` of the DNATed flows          |
//! | `redirect_PID_START_N_pre`/`_out` | nat prerouting/output | one redirect range of a running forwarder  |
//!
//! - **Where the rules live: the table itself.** Each forward's `prerouting` rule carries
//!   `PROTO LISTEN TARGET` as its comment and its `output` rule `name: NAME`; [`list`]
//!   reads them back from what is loaded (`nft -j list ruleset`). There is no state file
//!   to keep in step: a rollback (by the kernel's window, by the watchdog, or by a later
//!   command) restores the table, and with it the list.
//! - **Commit-confirm** is the firewall engine's ([`portolan_firewall::apply_managed`] with
//!   [`ForwardTable`]): every change replaces the managed chains in one transaction, and
//!   with a confirm window the table is *gated* like the firewall's: the new rules in
//!   chains `cand_*`, the ones before in `prev_*`, and each base chain does
//!   `meta nfproto @window goto cand_X` and then `goto prev_X`. `goto`, not `jump`: a
//!   packet that no candidate rule matches must not fall through to a forward the change
//!   removed. NAT chains see only the first packet of a connection, so the gate decides
//!   per new connection; connections made during the window keep their translation after
//!   it (conntrack holds it), with either form.
//! - **Only the forwards' flows are touched.** `*` means "any address of this machine"
//!   (`fib daddr type local`), never traffic routed through it; masquerade and the forward
//!   accept match `ct status dnat` and the connection's original destination.
//! - **Another table still decides**: a packet must pass every base chain of a hook, so a
//!   forward chain of another table (Docker's, a distribution firewall's) that drops it
//!   still drops it, whatever our `accept` says; [`ForwardTable`]'s warnings name such
//!   chains. A forward to this machine is also filtered by the input hook with the target
//!   port (after DNAT): portolan's firewall must allow that port.
//!
//! Everything here works on the network namespace of the calling thread.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use portolan_core::escape::for_terminal;
use portolan_core::{Port, PortRange};
pub use portolan_firewall::{
    ApplyOptions, ApplyReport, CommitState, WatchdogLauncher, DEFAULT_CONFIRM_WITHIN,
    MAX_CONFIRM_WITHIN,
};
use portolan_firewall::{FirewallError, ManagedTable, Ruleset, WINDOW_SET};
use serde::Serialize;

use crate::spec::{default_name, parse_listen, parse_target, TargetHost};
use crate::{Listen, Proto, RelayError, Rule, Target};

/// The table's family.
pub const FAMILY: &str = "inet";
/// The table's name.
pub const TABLE: &str = "portolan_forward";
/// The flag the CLI takes to forward over the SSH port anyway (named in the refusal).
pub const SSH_GUARD_OVERRIDE: &str = "--no-ssh-guard";
/// The flag the CLI takes to set the sysctls a forward needs (named in the refusal).
pub const SET_SYSCTL_FLAG: &str = "--set-sysctl";

/// The managed base chains, with their declarations.
const HOOKS: [(&str, &str); 4] = [
    (
        "prerouting",
        "type nat hook prerouting priority dstnat; policy accept;",
    ),
    (
        "output",
        "type nat hook output priority -100; policy accept;",
    ),
    (
        "postrouting",
        "type nat hook postrouting priority srcnat; policy accept;",
    ),
    (
        "forward",
        "type filter hook forward priority filter; policy accept;",
    ),
];
/// Chains of a gated table: the candidate rules and the ones before.
const CAND: &str = "cand_";
const PREV: &str = "prev_";
/// The prefix of a redirect range's chains.
const REDIRECT: &str = "redirect_";
/// The prefix of the `output` rule's comment that holds the forward's name.
const NAME_TAG: &str = "name: ";
/// The longest comment written (nftables keeps 128 bytes).
const MAX_COMMENT: usize = 120;

/// One kernel forward: DNAT from `listen` to `target` (always an address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct KernelForward {
    pub proto: Proto,
    pub listen: Listen,
    pub target: Target,
    /// `LISTEN -> TARGET` unless given.
    pub name: String,
}

/// Where a forward listens, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// Any address of this machine (of the target's family).
    Local,
    /// One address.
    Addr(IpAddr),
}

fn family_words(ip: IpAddr) -> (&'static str, &'static str) {
    if ip.is_ipv4() {
        ("ipv4", "ip")
    } else {
        ("ipv6", "ip6")
    }
}

/// An address as nft takes it after `to`: `[v6]` in brackets.
fn nat_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// Whether `ip` is an address of this machine (in the calling thread's namespace): it can
/// be bound.
pub(crate) fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn canonical_listen(l: &Listen) -> Listen {
    Listen {
        addr: l.addr.map(portolan_core::cidr::canonical),
        ports: l.ports,
    }
}

impl KernelForward {
    /// A forward named `LISTEN -> TARGET`, checked ([`KernelForward::check`]).
    pub fn new(proto: Proto, listen: Listen, target: Target) -> Result<Self, RelayError> {
        let name = default_name(proto, &listen, &target);
        KernelForward::named(proto, listen, target, name)
    }

    /// A forward with a name of its own (at most 100 characters, none a control
    /// character), checked.
    pub fn named(
        proto: Proto,
        listen: Listen,
        target: Target,
        name: String,
    ) -> Result<Self, RelayError> {
        let listen = canonical_listen(&listen);
        let target = match target.host {
            TargetHost::Ip(ip) => Target {
                host: TargetHost::Ip(portolan_core::cidr::canonical(ip)),
                ports: target.ports,
            },
            TargetHost::Name(_) => target,
        };
        let f = KernelForward {
            proto,
            listen,
            target,
            name,
        };
        f.check()?;
        Ok(f)
    }

    /// From the command line's words (`LISTEN TARGET`).
    pub fn parse(proto: Proto, listen: &str, target: &str) -> Result<Self, RelayError> {
        KernelForward::new(proto, parse_listen(listen)?, parse_target(target)?)
    }

    /// From a forwarding rule. Options the kernel cannot honour (a source allow-list,
    /// connection caps, a PROXY header) are refused rather than dropped in silence; the
    /// timeouts, keepalive and splice options mean nothing to the kernel and are ignored.
    pub fn from_rule(rule: &Rule) -> Result<Self, RelayError> {
        let here = format!("{} -> {}", rule.listen, rule.target);
        let o = &rule.options;
        let refuse = |what: &str| {
            Err(RelayError::spec(
                &here,
                &format!("{what} is for the userspace forwarder; a kernel forward cannot apply it"),
            ))
        };
        if !o.allow.is_empty() {
            return refuse("allow");
        }
        if o.max_conns.is_some() || o.max_conns_per_source.is_some() {
            return refuse("a connection cap");
        }
        if o.proxy_protocol.is_some() {
            return refuse("the PROXY protocol header");
        }
        KernelForward::named(
            rule.proto,
            rule.listen,
            rule.target.clone(),
            rule.name.clone(),
        )
    }

    /// The target's address (checked to be one).
    pub fn target_ip(&self) -> Option<IpAddr> {
        match self.target.host {
            TargetHost::Ip(ip) => Some(ip),
            TargetHost::Name(_) => None,
        }
    }

    fn here(&self) -> String {
        format!("{} -> {}", self.listen, self.target)
    }

    fn dest(&self) -> Dest {
        match self.listen.addr {
            None => Dest::Local,
            Some(a) if a.is_unspecified() => Dest::Local,
            Some(a) => Dest::Addr(a),
        }
    }

    /// Whether the forward listens on loopback only.
    fn listens_on_loopback(&self) -> bool {
        self.listen.addr.is_some_and(|a| a.is_loopback())
    }

    /// What the kernel can do: an address target of the listening address's family, port
    /// ranges that line up, IPv6 loopback only to and from loopback, a name that fits a
    /// comment.
    pub fn check(&self) -> Result<(), RelayError> {
        let here = self.here();
        let bad = |why: &str| Err(RelayError::spec(&here, why));
        let Some(t) = self.target_ip() else {
            return bad("a kernel forward needs the target's address, not a name (the kernel does not resolve names)");
        };
        let (l, tp) = (self.listen.ports, self.target.ports);
        if l.start().get() == 0 || tp.start().get() == 0 {
            return bad("port 0 cannot be forwarded");
        }
        if tp.len() != 1 && tp.len() != l.len() {
            return bad("the target range must be one port or as long as the listening range");
        }
        if t.is_unspecified() || t.is_multicast() {
            return bad("the target must be a unicast address");
        }
        match self.listen.addr {
            Some(a) if a.is_ipv4() != t.is_ipv4() && !(a.is_unspecified() && a.is_ipv6()) => {
                return bad("the listening address and the target are of different families; the kernel does not translate between IPv4 and IPv6 (the userspace forwarder does)");
            }
            _ => {}
        }
        if t.is_ipv6() && (t.is_loopback() != self.listens_on_loopback()) {
            return bad("IPv6 has no route_localnet: the kernel forwards to ::1 only from ::1, and from ::1 only to ::1 (use the userspace forwarder, or an address of this machine)");
        }
        if self.name.trim().is_empty()
            || self.name.chars().count() > 100
            || self.name.chars().any(char::is_control)
        {
            return bad("name: 1 to 100 characters, no control characters");
        }
        if NAME_TAG.len() + encode_name(&self.name).len() > MAX_COMMENT {
            return bad("the name is too long to keep in the table (at most 114 bytes once non-ASCII is %-encoded)");
        }
        Ok(())
    }

    /// `PROTO LISTEN TARGET`: the `prerouting` rule's comment, read back by [`list`].
    fn spec_comment(&self) -> String {
        format!("{} {} {}", self.proto, self.listen, self.target)
    }

    /// The addresses it takes: one, or every address of this machine of the target's
    /// family (a `*` forward to an IPv4 target leaves IPv6 to another forward).
    fn cover(&self) -> Cover {
        match (self.dest(), self.target_ip()) {
            (Dest::Addr(a), _) => Cover::Addr(a),
            (Dest::Local, Some(t)) => Cover::Local {
                v4: t.is_ipv4(),
                v6: t.is_ipv6(),
            },
            (Dest::Local, None) => Cover::Local { v4: true, v6: true },
        }
    }

    /// Whether the two take a common port of a common address, for one protocol.
    fn overlaps(&self, other: &KernelForward) -> bool {
        self.proto == other.proto
            && ports_overlap(self.listen.ports, other.listen.ports)
            && self.cover().overlaps(other.cover())
    }
}

/// The addresses a forward or a redirect takes.
#[derive(Debug, Clone, Copy)]
enum Cover {
    Addr(IpAddr),
    /// Every address of this machine, of one family or both.
    Local {
        v4: bool,
        v6: bool,
    },
}

impl Cover {
    /// A listening address as the userspace forwarder binds it: `*` and `[::]` are
    /// dual-stack, `0.0.0.0` IPv4 only.
    fn of_listen(l: &Listen) -> Cover {
        match l.addr {
            None => Cover::Local { v4: true, v6: true },
            Some(a) if a.is_unspecified() => Cover::Local {
                v4: true,
                v6: a.is_ipv6(),
            },
            Some(a) => Cover::Addr(a),
        }
    }

    fn overlaps(self, other: Cover) -> bool {
        match (self, other) {
            (Cover::Addr(x), Cover::Addr(y)) => x == y,
            (Cover::Addr(x), Cover::Local { v4, v6 })
            | (Cover::Local { v4, v6 }, Cover::Addr(x)) => {
                if x.is_ipv4() {
                    v4
                } else {
                    v6
                }
            }
            (Cover::Local { v4: a4, v6: a6 }, Cover::Local { v4: b4, v6: b6 }) => {
                (a4 && b4) || (a6 && b6)
            }
        }
    }
}

fn ports_overlap(a: PortRange, b: PortRange) -> bool {
    a.start() <= b.end() && b.start() <= a.end()
}

/// The name as a comment keeps it: printable ASCII but `"`, `\` and `%` as is, every other
/// byte `%XX`.
fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if (b.is_ascii_graphic() || b == b' ') && !matches!(b, b'"' | b'\\' | b'%') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn decode_name(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn ports_text(r: PortRange) -> String {
    r.to_string()
}

/// The rules of one forward, one per managed chain (`postrouting` and `forward` only for
/// a target on another host).
struct Lines {
    prerouting: String,
    output: String,
    postrouting: Option<String>,
    forward: Option<String>,
}

fn lines_of(f: &KernelForward, remote: bool) -> Lines {
    let t = f
        .target_ip()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let (fam, ipk) = family_words(t);
    let l4 = f.proto.as_str();
    let lp = f.listen.ports;
    let tp = f.target.ports;
    let dnat = if tp.len() == 1 {
        format!("dnat {ipk} to {}:{}", nat_addr(t), tp.start())
    } else if tp == lp {
        format!("dnat {ipk} to {}", nat_addr(t))
    } else {
        let pairs: Vec<String> = lp
            .iter()
            .zip(tp.iter())
            .map(|(a, b)| format!("{a} : {b}"))
            .collect();
        format!(
            "dnat {ipk} to {} : {l4} dport map {{ {} }}",
            nat_addr(t),
            pairs.join(", ")
        )
    };
    let (pre_dst, out_dst, orig) = match f.dest() {
        Dest::Local => {
            // On this machine, 127.0.0.1:PORT with a target elsewhere would need
            // route_localnet; left out, such a connection is refused as without the forward.
            let out = if remote {
                let lo = if t.is_ipv4() { "127.0.0.0/8" } else { "::1" };
                format!("fib daddr type local {ipk} daddr != {lo}")
            } else {
                "fib daddr type local".to_owned()
            };
            ("fib daddr type local".to_owned(), out, String::new())
        }
        Dest::Addr(a) => {
            let m = format!("{ipk} daddr {a}");
            (m.clone(), m, format!("ct original {ipk} daddr {a} "))
        }
    };
    let spec = f.spec_comment();
    let ports = ports_text(lp);
    Lines {
        prerouting: format!(
            "meta nfproto {fam} {pre_dst} {l4} dport {ports} {dnat} comment \"{spec}\""
        ),
        output: format!(
            "meta nfproto {fam} {out_dst} {l4} dport {ports} {dnat} comment \"{NAME_TAG}{}\"",
            encode_name(&f.name)
        ),
        postrouting: remote.then(|| format!(
            "meta nfproto {fam} meta l4proto {l4} ct status dnat {orig}ct original proto-dst {ports} {ipk} daddr {t} masquerade comment \"{spec}\""
        )),
        forward: remote.then(|| format!(
            "meta nfproto {fam} meta l4proto {l4} ct status dnat {orig}ct original proto-dst {ports} accept comment \"{spec}\""
        )),
    }
}

/// Whether the forward's target is another host (so it needs masquerade and forwarding).
fn target_remote(f: &KernelForward) -> bool {
    f.target_ip().is_some_and(|t| !is_local(t))
}

/// The lines that clear the managed part of the table (base chains, the gated form's
/// chains and window set) whether or not it is loaded, leaving redirect chains alone.
fn replace_prefix() -> String {
    let mut s = format!("add table {FAMILY} {TABLE}\n");
    // Base chains first: they jump to the others.
    for prefix in ["", CAND, PREV] {
        for (chain, _) in HOOKS {
            let _ = writeln!(s, "add chain {FAMILY} {TABLE} {prefix}{chain}");
            let _ = writeln!(s, "delete chain {FAMILY} {TABLE} {prefix}{chain}");
        }
    }
    let _ = writeln!(
        s,
        "add set {FAMILY} {TABLE} {WINDOW_SET} {{ type nf_proto; flags timeout; }}"
    );
    let _ = writeln!(s, "delete set {FAMILY} {TABLE} {WINDOW_SET}");
    s
}

/// The script that makes `forwards` the table's forwards: the prefix, then the base
/// chains with one rule each (no chain at all without forwards). Deterministic: sorted.
fn render(forwards: &[KernelForward]) -> String {
    let mut v: Vec<&KernelForward> = forwards.iter().collect();
    v.sort();
    let mut chains: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for f in &v {
        let l = lines_of(f, target_remote(f));
        chains.entry("prerouting").or_default().push(l.prerouting);
        chains.entry("output").or_default().push(l.output);
        if let Some(p) = l.postrouting {
            chains.entry("postrouting").or_default().push(p);
        }
        if let Some(p) = l.forward {
            chains.entry("forward").or_default().push(p);
        }
    }
    let mut s = format!(
        "#!/usr/sbin/nft -f\n# portolan forward --kernel: {} forward(s).\n# Replaces the forwards of table {FAMILY} {TABLE} in one transaction; no other table is touched.\n",
        v.len()
    );
    s.push_str(&replace_prefix());
    if v.is_empty() {
        return s;
    }
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    for (chain, decl) in HOOKS {
        let Some(rules) = chains.get(chain) else {
            continue;
        };
        let _ = writeln!(s, "\tchain {chain} {{\n\t\t{decl}");
        for r in rules {
            let _ = writeln!(s, "\t\t{r}");
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// The rule lines of each chain of a script [`render`] wrote; `None` for anything else.
fn chain_rules(script: &str) -> Option<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_table = false;
    let mut chain: Option<String> = None;
    let open = format!("table {FAMILY} {TABLE} {{");
    for raw in script.lines() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if !in_table {
            if l == open {
                in_table = true;
            } else if !(l.starts_with("add ") || l.starts_with("delete ")) {
                return None;
            }
            continue;
        }
        match &chain {
            Some(c) => {
                if l == "}" {
                    chain = None;
                } else if !l.starts_with("type ") {
                    out.entry(c.clone()).or_default().push(l.to_owned());
                }
            }
            None => {
                if l == "}" {
                    in_table = false;
                } else {
                    let name = l.strip_prefix("chain ")?.strip_suffix(" {")?;
                    if !HOOKS.iter().any(|(h, _)| *h == name) {
                        return None;
                    }
                    out.entry(name.to_owned()).or_default();
                    chain = Some(name.to_owned());
                }
            }
        }
    }
    (!in_table && chain.is_none()).then_some(out)
}

/// The gated form (see the module docs) of `script` over `previous`, both from
/// [`render`].
fn gated_script(script: &str, previous: &str, within: Duration) -> Option<String> {
    let new = chain_rules(script)?;
    let old = chain_rules(previous)?;
    let secs = within.as_secs().max(1);
    let mut s = replace_prefix();
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    let _ = write!(
        s,
        "\tset {WINDOW_SET} {{\n\t\ttype nf_proto\n\t\tflags timeout\n\t\telements = {{ ipv4 timeout {secs}s, ipv6 timeout {secs}s }}\n\t}}\n"
    );
    let empty = Vec::new();
    for (chain, decl) in HOOKS {
        for (prefix, rules) in [
            (CAND, new.get(chain).unwrap_or(&empty)),
            (PREV, old.get(chain).unwrap_or(&empty)),
        ] {
            let _ = writeln!(s, "\tchain {prefix}{chain} {{");
            for r in rules {
                let _ = writeln!(s, "\t\t{r}");
            }
            s.push_str("\t}\n");
        }
        let _ = write!(
            s,
            "\tchain {chain} {{\n\t\t{decl}\n\t\tmeta nfproto @{WINDOW_SET} goto {CAND}{chain} comment \"unconfirmed: until the window expires\"\n\t\tgoto {PREV}{chain} comment \"after the window: the forwards before\"\n\t}}\n"
        );
    }
    s.push_str("}\n");
    Some(s)
}

/// `table inet portolan_forward` for the firewall engine's commit-confirm cycle: only the
/// forwards' chains (and the gated form's) are replaced, redirect chains stay.
#[derive(Debug, Clone, Copy, Default)]
pub struct ForwardTable;

impl ManagedTable for ForwardTable {
    fn family(&self) -> &'static str {
        FAMILY
    }
    fn name(&self) -> &'static str {
        TABLE
    }
    fn command(&self) -> &'static str {
        "portolan forward"
    }
    fn replace_prefix(&self) -> String {
        replace_prefix()
    }
    fn restore_script(&self, live: &Ruleset) -> Result<String, FirewallError> {
        let forwards = forwards_in(live).map_err(|e| FirewallError::BadRule(e.to_string()))?;
        Ok(render(&forwards))
    }
    fn restores_something(&self, restore: &str) -> bool {
        restore.contains("\tchain ")
    }
    fn gated(&self, script: &str, previous: &str, within: Duration) -> Option<String> {
        gated_script(script, previous, within)
    }
    fn warnings(&self, live: &Ruleset) -> Vec<String> {
        warnings(live)
    }
}

fn warnings(live: &Ruleset) -> Vec<String> {
    let mut out = Vec::new();
    for (f, t, c) in live.dropping_chains("forward") {
        if f == FAMILY && t == TABLE {
            continue;
        }
        out.push(format!(
            "chain {} of table {} {} drops forwarded traffic by default: a kernel forward to another host passes through it too and needs it to accept the flow (ct status dnat accept)",
            for_terminal(&c),
            for_terminal(&f),
            for_terminal(&t)
        ));
    }
    if live.has_table(
        portolan_firewall::TABLE_FAMILY,
        portolan_firewall::TABLE_NAME,
    ) {
        out.push(format!(
            "portolan's firewall (table {} {}) filters the input hook after DNAT: a kernel forward to this machine needs its target port allowed there",
            portolan_firewall::TABLE_FAMILY,
            portolan_firewall::TABLE_NAME
        ));
    }
    out
}

/// The names of the chains that hold the forwards in `live`: the plain ones, or in a
/// gated table the candidate chains while the window is open and the previous ones after.
fn effective(live: &Ruleset) -> (String, String) {
    let prefix = match live.set_len(FAMILY, TABLE, WINDOW_SET) {
        Some(n) if n > 0 => CAND,
        Some(_) => PREV,
        None => "",
    };
    (format!("{prefix}prerouting"), format!("{prefix}output"))
}

fn edited(chain: &str, why: &str) -> RelayError {
    RelayError::Nft(format!(
        "table {FAMILY} {TABLE} has a rule portolan did not write (chain {}: {why}); remove the kernel forwards (or the table) and add them again",
        for_terminal(chain)
    ))
}

/// The kernel forwards loaded in `live` (the effective ones when the table is gated).
fn forwards_in(live: &Ruleset) -> Result<Vec<KernelForward>, RelayError> {
    if !live.has_table(FAMILY, TABLE) {
        return Ok(Vec::new());
    }
    let (pre, out) = effective(live);
    let specs = live.rule_comments(FAMILY, TABLE, &pre).unwrap_or_default();
    let names = live.rule_comments(FAMILY, TABLE, &out).unwrap_or_default();
    if specs.len() != names.len() {
        return Err(edited(&pre, "chains prerouting and output differ"));
    }
    let mut v = Vec::with_capacity(specs.len());
    for (spec, name) in specs.iter().zip(&names) {
        let spec = spec.ok_or_else(|| edited(&pre, "a rule without a comment"))?;
        let f = parse_spec(spec)
            .ok_or_else(|| edited(&pre, &format!("comment \"{}\"", for_terminal(spec))))?;
        let name = name
            .and_then(|n| n.strip_prefix(NAME_TAG))
            .and_then(decode_name)
            .ok_or_else(|| edited(&out, "a rule without the forward's name"))?;
        v.push(KernelForward { name, ..f });
    }
    Ok(v)
}

/// A forward from its `PROTO LISTEN TARGET` comment (name left empty).
fn parse_spec(s: &str) -> Option<KernelForward> {
    let mut it = s.split(' ');
    let proto = match it.next()? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    let listen = parse_listen(it.next()?).ok()?;
    let target = parse_target(it.next()?).ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(KernelForward {
        proto,
        listen,
        target,
        name: String::new(),
    })
}

impl From<FirewallError> for RelayError {
    fn from(e: FirewallError) -> Self {
        match e {
            FirewallError::NotPermitted(why) => RelayError::Privileges(format!(
                "kernel forwarding needs root (CAP_NET_ADMIN): {why}; run it with sudo"
            )),
            FirewallError::NothingPending => RelayError::Nft(
                "nothing to confirm: no kernel forward change is waiting for confirmation"
                    .to_owned(),
            ),
            FirewallError::AlreadyReverted(at) => RelayError::Nft(format!(
                "too late: the confirm window closed and the kernel forwards from before the change were restored at {at}"
            )),
            FirewallError::Io { what, path, source } => RelayError::io(
                format!(
                    "{what} {}",
                    portolan_core::escape::path_for_terminal(&path)
                ),
                source,
            ),
            other => RelayError::Nft(other.to_string()),
        }
    }
}

fn require_privileges() -> Result<(), RelayError> {
    portolan_firewall::require_privileges().map_err(RelayError::from)
}

/// The state directory of the commit-confirm cycle for the current network namespace:
/// `/run/portolan/forward/netns-INODE`.
pub fn default_state_dir() -> PathBuf {
    portolan_firewall::state_dir_for("forward")
}

/// This executable with `forward __watchdog`, for [`ApplyOptions::watchdog`].
pub fn watchdog_launcher() -> Result<WatchdogLauncher, RelayError> {
    Ok(WatchdogLauncher::current_exe_with(&[
        "forward",
        "__watchdog",
    ])?)
}

/// The body of `portolan forward __watchdog STATE_DIR GENERATION` (see
/// [`portolan_firewall::run_watchdog`]). Returns whether it rolled back.
pub fn run_watchdog(state_dir: &Path, generation: u128) -> Result<bool, RelayError> {
    Ok(portolan_firewall::run_watchdog_managed(
        &ForwardTable,
        state_dir,
        generation,
    )?)
}

/// The kernel forwards loaded now (while a change waits for confirmation: the ones new
/// connections get, the candidate's until the window closes).
pub fn list() -> Result<Vec<KernelForward>, RelayError> {
    require_privileges()?;
    forwards_in(&Ruleset::load()?)
}

/// What a change did.
#[derive(Debug, Clone)]
pub struct Change {
    /// The forwards added or removed.
    pub changed: Vec<KernelForward>,
    /// Every kernel forward after the change.
    pub forwards: Vec<KernelForward>,
    /// The commit-confirm engine's report (watchdog, deadline, whether the kernel holds
    /// it, warnings about other tables).
    pub report: ApplyReport,
}

/// The SSH guard: kernel forwards (and redirects) must not capture the SSH port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshGuard {
    /// Ports sshd listens on (the CLI passes them from the inventory): refused on any
    /// listening address.
    pub protect: Vec<u16>,
    /// The server side of the SSH session this process runs in (`$SSH_CONNECTION`):
    /// refused on that address or every address.
    pub session: Option<SocketAddr>,
    /// The guard is off (the user passed [`SSH_GUARD_OVERRIDE`]).
    pub off: bool,
}

impl SshGuard {
    /// The guard for `protect` and the current SSH session (`$SSH_CONNECTION`).
    pub fn detect(protect: &[u16]) -> SshGuard {
        SshGuard::from_sources(std::env::var("SSH_CONNECTION").ok().as_deref(), protect)
    }

    /// [`SshGuard::detect`] with the environment value given.
    pub fn from_sources(ssh_connection: Option<&str>, protect: &[u16]) -> SshGuard {
        let session = ssh_connection.and_then(|s| {
            let f: Vec<&str> = s.split_ascii_whitespace().collect();
            let [_, _, ip, port] = f.as_slice() else {
                return None;
            };
            let ip: IpAddr = ip.parse().ok()?;
            let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
            Some(SocketAddr::new(portolan_core::cidr::canonical(ip), port))
        });
        SshGuard {
            protect: protect.to_vec(),
            session,
            off: false,
        }
    }

    /// No guard.
    pub fn off() -> SshGuard {
        SshGuard {
            off: true,
            ..SshGuard::default()
        }
    }

    /// Refuses `proto listen` when it would capture the session's port or a protected
    /// one; `what` names the rule in the message.
    pub fn check(&self, proto: Proto, listen: &Listen, what: &str) -> Result<(), RelayError> {
        if self.off || proto != Proto::Tcp {
            return Ok(());
        }
        let refuse = |port: u16, whose: String| {
            Err(RelayError::SshGuard(format!(
                "refusing {}: it would capture TCP port {port}, {whose}, and new SSH connections would go to the target instead; pass {SSH_GUARD_OVERRIDE} to do it anyway",
                for_terminal(what)
            )))
        };
        if let Some(s) = self.session {
            let addr_hit = match listen.addr.map(portolan_core::cidr::canonical) {
                None => true,
                Some(a) if a.is_unspecified() => a.is_ipv4() == s.ip().is_ipv4() || a.is_ipv6(),
                Some(a) => a == s.ip(),
            };
            if addr_hit && listen.ports.contains(Port::new(s.port())) {
                return refuse(
                    s.port(),
                    format!("the port of the current SSH session ({s})"),
                );
            }
        }
        if let Some(&p) = self
            .protect
            .iter()
            .find(|&&p| listen.ports.contains(Port::new(p)))
        {
            return refuse(p, "a port sshd listens on".to_owned());
        }
        Ok(())
    }
}

/// Adds `fwd` to the kernel forwards, keeping the others (read from the live table under
/// the state directory's lock), commit-confirmed as `opts` says. Refused when it would
/// capture the SSH port (unless the guard is off), overlaps another kernel forward or a
/// running redirect range, or asks what the kernel cannot do. The sysctls it needs are
/// not checked here: [`sysctl_needs`].
pub fn add(
    fwd: &KernelForward,
    guard: &SshGuard,
    opts: &ApplyOptions,
) -> Result<Change, RelayError> {
    fwd.check()?;
    guard.check(
        fwd.proto,
        &fwd.listen,
        &format!("kernel forward {}", fwd.name),
    )?;
    require_privileges()?;
    let mut after = Vec::new();
    let report = portolan_firewall::apply_managed(&ForwardTable, opts, |live| {
        let mut all = forwards_in(live)?;
        if let Some(o) = all.iter().find(|o| o.overlaps(fwd)) {
            return Err(RelayError::spec(
                &fwd.here(),
                &format!(
                    "kernel forward {} already listens there",
                    for_terminal(&o.name)
                ),
            ));
        }
        if let Some(r) = redirects_in(live).iter().find(|r| {
            r.alive
                && r.proto == fwd.proto
                && ports_overlap(r.listen.ports, fwd.listen.ports)
                && Cover::of_listen(&r.listen).overlaps(fwd.cover())
        }) {
            return Err(RelayError::spec(
                &fwd.here(),
                &format!(
                    "the redirect range {} of process {} (a userspace forwarder) already takes it",
                    r.listen, r.pid
                ),
            ));
        }
        all.push(fwd.clone());
        all.sort();
        let script = render(&all);
        after = all;
        Ok(script)
    })?;
    Ok(Change {
        changed: vec![fwd.clone()],
        forwards: after,
        report,
    })
}

/// Removes the kernel forwards that listen on `listen` (of `proto`, or both protocols),
/// commit-confirmed as `opts` says. An error when none does.
pub fn remove(
    listen: &Listen,
    proto: Option<Proto>,
    opts: &ApplyOptions,
) -> Result<Change, RelayError> {
    require_privileges()?;
    let listen = canonical_listen(listen);
    let mut gone = Vec::new();
    let mut after = Vec::new();
    let report = portolan_firewall::apply_managed(&ForwardTable, opts, |live| {
        let all = forwards_in(live)?;
        let (g, keep): (Vec<_>, Vec<_>) = all
            .into_iter()
            .partition(|f| f.listen == listen && proto.is_none_or(|p| f.proto == p));
        if g.is_empty() {
            let what = match proto {
                Some(p) => format!("{p} {listen}"),
                None => listen.to_string(),
            };
            return Err(RelayError::spec(&what, "no kernel forward listens there"));
        }
        let script = render(&keep);
        gone = g;
        after = keep;
        Ok(script)
    })?;
    Ok(Change {
        changed: gone,
        forwards: after,
        report,
    })
}

/// Keeps the last change: ends the confirm window and stops the watchdog.
pub fn confirm(state_dir: &Path) -> Result<(), RelayError> {
    Ok(portolan_firewall::confirm_managed(
        &ForwardTable,
        state_dir,
    )?)
}

/// The kernel forwards and where the commit-confirm cycle stands.
#[derive(Debug, Clone)]
pub struct KernelStatus {
    /// The forwards loaded now (see [`list`]).
    pub forwards: Vec<KernelForward>,
    /// The commit-confirm state.
    pub commit: CommitState,
    /// Other tables' rules that stand in the forwards' way.
    pub warnings: Vec<String>,
}

/// [`list`] and the commit-confirm state (an overdue rollback is performed first).
pub fn status(state_dir: &Path) -> Result<KernelStatus, RelayError> {
    let st = portolan_firewall::status_managed(&ForwardTable, state_dir)?;
    Ok(KernelStatus {
        forwards: forwards_in(&Ruleset::load()?)?,
        commit: st.commit,
        warnings: st.warnings,
    })
}

/// Removes every kernel forward at once (no confirm window: removing is what a rollback
/// would do), cancels a pending change, removes the redirect chains of processes that are
/// gone, and deletes the table when nothing else is left in it. Returns whether the table
/// was loaded.
pub fn remove_all(state_dir: &Path) -> Result<bool, RelayError> {
    let had = portolan_firewall::remove_managed(&ForwardTable, state_dir)?;
    let _lock = NetnsLock::take()?;
    remove_stale_locked()?;
    let live = Ruleset::load()?;
    if live.has_table(FAMILY, TABLE) && live.chain_names(FAMILY, TABLE).is_empty() {
        portolan_firewall::load_text(&format!("delete table {FAMILY} {TABLE}\n"))?;
    }
    Ok(had)
}

// ---------------------------------------------------------------------------------------
// sysctls

/// A sysctl a kernel forward needs set to 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysctlNeed {
    /// `net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding` or
    /// `net.ipv4.conf.all.route_localnet`.
    pub name: &'static str,
    /// Its value now (`None`: unreadable).
    pub current: Option<String>,
    /// Which forward needs it and why (and, for IPv6 forwarding, what else it changes).
    pub why: String,
}

impl SysctlNeed {
    /// Whether it is set already.
    pub fn met(&self) -> bool {
        self.current.as_deref() == Some("1")
    }

    /// Its file under /proc/sys.
    pub fn path(&self) -> PathBuf {
        sysctl_path(self.name)
    }
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(name))
        .ok()
        .map(|s| s.trim().to_owned())
}

const IP_FORWARD: &str = "net.ipv4.ip_forward";
const IP6_FORWARD: &str = "net.ipv6.conf.all.forwarding";
const ROUTE_LOCALNET: &str = "net.ipv4.conf.all.route_localnet";

/// The sysctls `forwards` need (each once, for the first forward that needs it), with their
/// values now, in the calling thread's network namespace:
///
/// - a target on another host, reached from outside: `net.ipv4.ip_forward` (IPv4) or
///   `net.ipv6.conf.all.forwarding` (IPv6);
/// - an IPv4 loopback target reached from outside, or a loopback listening address with a
///   target elsewhere: `net.ipv4.conf.all.route_localnet` (the kernel drops 127.0.0.0/8
///   on the wire otherwise).
pub fn sysctl_needs(forwards: &[KernelForward]) -> Vec<SysctlNeed> {
    let mut out: Vec<SysctlNeed> = Vec::new();
    let mut need = |name: &'static str, why: String| {
        if !out.iter().any(|n| n.name == name) {
            out.push(SysctlNeed {
                name,
                current: read_sysctl(name),
                why,
            });
        }
    };
    for f in forwards {
        let Some(t) = f.target_ip() else {
            continue;
        };
        let what = format!("kernel forward {}", for_terminal(&f.name));
        let remote = target_remote(f);
        let lo_listen = f.listens_on_loopback();
        if remote && !lo_listen {
            if t.is_ipv4() {
                need(
                    IP_FORWARD,
                    format!("{what} sends traffic from outside on to another host"),
                );
            } else {
                need(
                    IP6_FORWARD,
                    format!("{what} sends traffic from outside on to another host; note that with forwarding on, interfaces whose accept_ra is 1 stop taking router advertisements (set accept_ra=2 where this host needs them)"),
                );
            }
        }
        if t.is_ipv4() && t.is_loopback() && !lo_listen {
            need(
                ROUTE_LOCALNET,
                format!("{what} sends traffic from outside to a loopback address"),
            );
        }
        if t.is_ipv4() && remote && lo_listen {
            need(
                ROUTE_LOCALNET,
                format!("{what} sends connections to a loopback address on to another host"),
            );
        }
    }
    out
}

/// Refuses, naming each sysctl that is not set, its value and the flag that sets them.
pub fn check_sysctls(needs: &[SysctlNeed]) -> Result<(), RelayError> {
    let unmet: Vec<String> = needs
        .iter()
        .filter(|n| !n.met())
        .map(|n| {
            format!(
                "{}=1 (now {}): {}",
                n.name,
                n.current.as_deref().map_or("unreadable", |c| c),
                n.why
            )
        })
        .collect();
    if unmet.is_empty() {
        return Ok(());
    }
    Err(RelayError::Sysctl(format!(
        "the kernel forward needs {}; pass {SET_SYSCTL_FLAG} to set it (it stays set until reboot or until you set it back)",
        for_terminal(&unmet.join("; "))
    )))
}

/// Sets every sysctl in `needs` that is not set yet to 1 (in the calling thread's network
/// namespace).
pub fn set_sysctls(needs: &[SysctlNeed]) -> Result<(), RelayError> {
    for n in needs.iter().filter(|n| !n.met()) {
        let path = n.path();
        std::fs::write(&path, "1\n")
            .map_err(|e| RelayError::io(format!("set {} ({})", n.name, path.display()), e))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// redirect ranges

/// An exclusive flock on this network namespace's nsfs inode (every open of
/// /proc/*/ns/net of one namespace is the same inode): serialises making redirect chains
/// against deleting the emptied table, with no file to create or clean up.
struct NetnsLock(#[allow(dead_code)] File);

impl NetnsLock {
    fn take() -> Result<NetnsLock, RelayError> {
        let path = "/proc/thread-self/ns/net";
        let f = File::open(path).map_err(|e| RelayError::io(format!("open {path}"), e))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| RelayError::io(format!("lock {path}"), e.into()))?;
        Ok(NetnsLock(f))
    }
}

/// A running redirect range: its chains in the table, deleted when it is dropped or
/// [`Redirect::remove`]d. Drop it on a thread of the network namespace it was made in.
#[derive(Debug)]
pub struct Redirect {
    proto: Proto,
    listen: Listen,
    to_port: u16,
    chain: String,
    active: bool,
}

static NEXT_REDIRECT: AtomicU32 = AtomicU32::new(0);

/// A redirect range as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedirectInfo {
    /// The process that made it.
    pub pid: u32,
    /// Whether that process still runs (its pid and start time match).
    pub alive: bool,
    pub proto: Proto,
    pub listen: Listen,
    pub to_port: u16,
    /// Its chains' common prefix.
    pub chain: String,
}

/// The start time of process `pid` in clock ticks since boot (field 22 of its stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Fields after ")" start at field 3 (state).
    rest.split(' ').nth(22 - 3)?.parse().ok()
}

fn redirect_comment(proto: Proto, listen: &Listen, to_port: u16) -> String {
    format!("redirect {proto} {listen} to :{to_port}")
}

fn parse_redirect_comment(s: &str) -> Option<(Proto, Listen, u16)> {
    let mut it = s.split(' ');
    (it.next()? == "redirect").then_some(())?;
    let proto = match it.next()? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    let listen = parse_listen(it.next()?).ok()?;
    (it.next()? == "to").then_some(())?;
    let port = it.next()?.strip_prefix(':')?.parse().ok()?;
    it.next().is_none().then_some((proto, listen, port))
}

/// The redirect ranges in `live`.
fn redirects_in(live: &Ruleset) -> Vec<RedirectInfo> {
    let mut out = Vec::new();
    for chain in live.chain_names(FAMILY, TABLE) {
        let Some(base) = chain
            .strip_prefix(REDIRECT)
            .and_then(|c| c.strip_suffix("_pre"))
        else {
            continue;
        };
        let mut parts = base.split('_');
        let (Some(pid), Some(start)) = (
            parts.next().and_then(|p| p.parse::<u32>().ok()),
            parts.next().and_then(|p| p.parse::<u64>().ok()),
        ) else {
            continue;
        };
        let comment = live
            .rule_comments(FAMILY, TABLE, chain)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .find_map(parse_redirect_comment);
        let Some((proto, listen, to_port)) = comment else {
            continue;
        };
        out.push(RedirectInfo {
            pid,
            alive: start_time(pid) == Some(start),
            proto,
            listen,
            to_port,
            chain: format!("{REDIRECT}{base}"),
        });
    }
    out
}

/// The redirect ranges loaded now, of running and of dead processes.
pub fn list_redirects() -> Result<Vec<RedirectInfo>, RelayError> {
    require_privileges()?;
    Ok(redirects_in(&Ruleset::load()?))
}

fn delete_chains_script(chain: &str) -> String {
    let mut s = format!("add table {FAMILY} {TABLE}\n");
    for suffix in ["_pre", "_out"] {
        let _ = writeln!(s, "add chain {FAMILY} {TABLE} {chain}{suffix}");
        let _ = writeln!(s, "delete chain {FAMILY} {TABLE} {chain}{suffix}");
    }
    s
}

/// Redirects TCP connections to `listen`'s ports (on its address, or any address of this
/// machine) to port `to_port`, where the userspace forwarder listens, and reads the
/// original port back with [`original_port`]. From outside (prerouting) and from this
/// machine (output), in chains of their own (`redirect_PID_START_N_pre`/`_out`), so the
/// kernel forwards are not disturbed. `*` uses `redirect to :PORT` (the listener must be
/// bound to every address: from this machine, connections arrive on loopback); a specific
/// address uses `dnat to ADDR:PORT`, which keeps the address the listener is bound to.
///
/// Refused for UDP (a UDP socket has no SO_ORIGINAL_DST), and when a kernel forward or
/// another running redirect takes one of the ports. The SSH guard is the caller's:
/// [`SshGuard::check`] first.
pub fn redirect(proto: Proto, listen: &Listen, to_port: u16) -> Result<Redirect, RelayError> {
    let listen = canonical_listen(listen);
    let here = format!("{listen} -> :{to_port}");
    if proto == Proto::Udp {
        return Err(RelayError::spec(
            &here,
            "a redirect range is for TCP only (the original port of a UDP datagram cannot be read back)",
        ));
    }
    if to_port == 0 || listen.ports.start().get() == 0 {
        return Err(RelayError::spec(&here, "port 0 cannot be redirected"));
    }
    require_privileges()?;
    let _lock = NetnsLock::take()?;
    // Chains of a forwarder that died (SIGKILL, the OOM killer) would come first and send
    // the range to a port nobody listens on: removed before ours is added.
    remove_stale_locked()?;
    let live = Ruleset::load()?;
    let cover = Cover::of_listen(&listen);
    if let Some(f) = forwards_in(&live)?.iter().find(|f| {
        f.proto == proto && ports_overlap(f.listen.ports, listen.ports) && f.cover().overlaps(cover)
    }) {
        return Err(RelayError::spec(
            &here,
            &format!(
                "kernel forward {} already takes these ports",
                for_terminal(&f.name)
            ),
        ));
    }
    if let Some(r) = redirects_in(&live).iter().find(|r| {
        r.alive
            && r.proto == proto
            && ports_overlap(r.listen.ports, listen.ports)
            && Cover::of_listen(&r.listen).overlaps(cover)
    }) {
        return Err(RelayError::spec(
            &here,
            &format!(
                "process {} already redirects {} {}",
                r.pid, r.proto, r.listen
            ),
        ));
    }
    let pid = std::process::id();
    let start = start_time(pid).unwrap_or(0);
    let n = NEXT_REDIRECT.fetch_add(1, Ordering::Relaxed);
    let chain = format!("{REDIRECT}{pid}_{start}_{n}");
    let l4 = proto.as_str();
    let ports = ports_text(listen.ports);
    let (dst, action) = match listen.addr {
        None => (
            "fib daddr type local".to_owned(),
            format!("redirect to :{to_port}"),
        ),
        Some(a) if a.is_unspecified() => {
            // `[::]` is bound IPv6-only (a bare port or `*` is the dual-stack form), so
            // its redirect must not take IPv4 connections either.
            let fam = if a.is_ipv4() {
                "meta nfproto ipv4 "
            } else {
                "meta nfproto ipv6 "
            };
            (
                format!("{fam}fib daddr type local"),
                format!("redirect to :{to_port}"),
            )
        }
        Some(a) => {
            let (_, ipk) = family_words(a);
            (
                format!("{ipk} daddr {a}"),
                format!("dnat {ipk} to {}:{to_port}", nat_addr(a)),
            )
        }
    };
    let comment = redirect_comment(proto, &listen, to_port);
    let rule = format!("meta l4proto {l4} {dst} {l4} dport {ports} {action} comment \"{comment}\"");
    let mut s = format!("add table {FAMILY} {TABLE}\ntable {FAMILY} {TABLE} {{\n");
    for (suffix, decl) in [("_pre", HOOKS[0].1), ("_out", HOOKS[1].1)] {
        let _ = writeln!(
            s,
            "\tchain {chain}{suffix} {{\n\t\t{decl}\n\t\t{rule}\n\t}}"
        );
    }
    s.push_str("}\n");
    portolan_firewall::load_text(&s)?;
    Ok(Redirect {
        proto,
        listen,
        to_port,
        chain,
        active: true,
    })
}

impl Redirect {
    /// Its chains' common prefix (`redirect_PID_START_N`).
    pub fn chain(&self) -> &str {
        &self.chain
    }
    pub fn proto(&self) -> Proto {
        self.proto
    }
    pub fn listen(&self) -> &Listen {
        &self.listen
    }
    pub fn to_port(&self) -> u16 {
        self.to_port
    }

    /// Deletes the redirect's chains now, saying whether that worked (drop does it
    /// quietly).
    pub fn remove(mut self) -> Result<(), RelayError> {
        self.active = false;
        Ok(portolan_firewall::load_text(&delete_chains_script(
            &self.chain,
        ))?)
    }
}

impl Drop for Redirect {
    fn drop(&mut self) {
        if self.active {
            let _ = portolan_firewall::load_text(&delete_chains_script(&self.chain));
        }
    }
}

fn remove_stale_locked() -> Result<Vec<RedirectInfo>, RelayError> {
    let dead: Vec<RedirectInfo> = redirects_in(&Ruleset::load()?)
        .into_iter()
        .filter(|r| !r.alive)
        .collect();
    if !dead.is_empty() {
        let script: String = dead
            .iter()
            .map(|r| delete_chains_script(&r.chain))
            .collect();
        portolan_firewall::load_text(&script)?;
    }
    Ok(dead)
}

/// Removes the redirect ranges whose process is gone (a forwarder that was killed before it
/// could remove them); returns them.
pub fn remove_stale_redirects() -> Result<Vec<RedirectInfo>, RelayError> {
    require_privileges()?;
    let _lock = NetnsLock::take()?;
    remove_stale_locked()
}

/// The destination port a redirected (or DNATed) TCP connection was made to, before the
/// redirect: SO_ORIGINAL_DST, or IP6T_SO_ORIGINAL_DST for IPv6 (an IPv4 connection
/// accepted on a dual-stack socket asks the IPv4 one).
pub fn original_port(sock: &socket2::SockRef<'_>) -> io::Result<u16> {
    original_dst(sock).map(|a| a.port())
}

/// The whole destination a redirected (or DNATed) TCP connection was made to, before the
/// kernel rewrote it: what the client dialled (the PROXY header's destination).
pub fn original_dst(sock: &socket2::SockRef<'_>) -> io::Result<SocketAddr> {
    let local = sock.local_addr()?;
    let v4 = match local.as_socket() {
        Some(SocketAddr::V4(_)) => true,
        Some(SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_some(),
        None => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an IP socket",
            ))
        }
    };
    let orig = if v4 {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    orig.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST gave no IP address",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(proto: Proto, l: &str, t: &str) -> KernelForward {
        KernelForward::parse(proto, l, t).unwrap()
    }

    #[test]
    fn names_survive_a_comment() {
        for n in [
            "web",
            "tcp *:8080 -> 198.18.81.2:80",
            "a \"quoted\" \\ name 100% ünïcode",
        ] {
            let e = encode_name(n);
            assert!(!e.contains('"') && !e.contains('\\') && e.is_ascii(), "{e}");
            assert_eq!(decode_name(&e).as_deref(), Some(n));
        }
        assert_eq!(decode_name("%ZZ"), None);
        assert_eq!(decode_name("%4"), None);
    }

    #[test]
    fn specs_read_back() {
        for (p, l, t) in [
            (Proto::Tcp, "8080", "198.18.81.2:80"),
            (
                Proto::Udp,
                "198.18.80.1:20000-20010",
                "198.18.81.2:30000-30010",
            ),
            (
                Proto::Tcp,
                "[2001:2:0:50::a:1]:443",
                "[2001:2:0:50::b:2]:8443",
            ),
        ] {
            let f = fwd(p, l, t);
            let back = parse_spec(&f.spec_comment()).unwrap();
            assert_eq!(
                (back.proto, back.listen, back.target),
                (f.proto, f.listen, f.target.clone())
            );
            assert!(f.spec_comment().len() <= MAX_COMMENT);
        }
        assert!(parse_spec("tcp 8080").is_none());
        assert!(parse_spec("sctp 1 1.2.3.4:5").is_none());
        assert!(parse_spec("tcp 1 1.2.3.4:5 extra").is_none());
    }

    #[test]
    fn what_the_kernel_cannot_do_is_refused() {
        let bad = [
            ("198.18.80.1:80", "host.example:80", "not a name"),
            (
                "198.18.80.1:80",
                "[2001:2:0:50::b:2]:80",
                "different families",
            ),
            (
                "[2001:2:0:50::a:1]:80",
                "198.18.81.2:80",
                "different families",
            ),
            ("0.0.0.0:80", "[2001:2:0:50::b:2]:80", "different families"),
            ("80", "[::1]:80", "route_localnet"),
            ("[::1]:80", "[2001:2:0:50::b:2]:80", "route_localnet"),
            ("80-90", "198.18.81.2:80-81", "as long as"),
        ];
        for (l, t, want) in bad {
            let e = KernelForward::parse(Proto::Tcp, l, t)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{l} {t}: {e}");
        }
        assert!(KernelForward::parse(Proto::Tcp, "[::]:80", "198.18.81.2:80").is_ok());
        assert!(KernelForward::parse(Proto::Tcp, "[::1]:80", "[::1]:81").is_ok());
        let long = "é".repeat(60);
        let e = KernelForward::named(
            Proto::Tcp,
            parse_listen("80").unwrap(),
            parse_target("198.18.81.2:80").unwrap(),
            long,
        )
        .unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        let mut rule = Rule::parse(Proto::Tcp, "80", "198.18.81.2:80").unwrap();
        rule.options.allow = vec!["198.18.80.0/24".parse().unwrap()];
        let e = KernelForward::from_rule(&rule).unwrap_err().to_string();
        assert!(e.contains("allow"), "{e}");
    }

    #[test]
    fn the_rules_of_a_forward() {
        let f = fwd(
            Proto::Tcp,
            "198.18.80.1:20000-20002",
            "198.18.81.2:30000-30002",
        );
        let l = lines_of(&f, true);
        assert_eq!(
            l.prerouting,
            "meta nfproto ipv4 ip daddr 198.18.80.1 tcp dport 20000-20002 dnat ip to 198.18.81.2 : tcp dport map { 20000 : 30000, 20001 : 30001, 20002 : 30002 } comment \"tcp 198.18.80.1:20000-20002 198.18.81.2:30000-30002\""
        );
        assert_eq!(
            l.postrouting.as_deref(),
            Some("meta nfproto ipv4 meta l4proto tcp ct status dnat ct original ip daddr 198.18.80.1 ct original proto-dst 20000-20002 ip daddr 198.18.81.2 masquerade comment \"tcp 198.18.80.1:20000-20002 198.18.81.2:30000-30002\"")
        );
        let f = fwd(Proto::Udp, "5353", "[2001:2:0:50::b:2]:53");
        let l = lines_of(&f, true);
        assert!(l.prerouting.starts_with(
            "meta nfproto ipv6 fib daddr type local udp dport 5353 dnat ip6 to [2001:2:0:50::b:2]:53 "
        ), "{}", l.prerouting);
        assert!(l.output.contains("ip6 daddr != ::1"), "{}", l.output);
        let f = fwd(Proto::Tcp, "8000-8009", "127.0.0.1:8000-8009");
        let l = lines_of(&f, false);
        assert!(
            l.prerouting.contains("dnat ip to 127.0.0.1 comment"),
            "{}",
            l.prerouting
        );
        assert!(l.postrouting.is_none() && l.forward.is_none());
        assert!(!l.output.contains("!="), "{}", l.output);
    }

    #[test]
    fn gated_form_of_a_rendered_table() {
        let a = vec![fwd(Proto::Tcp, "8080", "127.0.0.1:80")];
        let b = vec![
            fwd(Proto::Tcp, "8080", "127.0.0.1:80"),
            fwd(Proto::Udp, "5353", "127.0.0.1:53"),
        ];
        let (ra, rb) = (render(&a), render(&b));
        let rules = chain_rules(&rb).unwrap();
        assert_eq!(rules["prerouting"].len(), 2);
        assert_eq!(rules["output"].len(), 2);
        let none = render(&[]);
        assert!(!none.contains("\tchain "), "{none}");
        assert_eq!(chain_rules(&none).unwrap().len(), 0);
        let g = gated_script(&rb, &ra, Duration::from_secs(7)).unwrap();
        assert!(
            g.contains("elements = { ipv4 timeout 7s, ipv6 timeout 7s }"),
            "{g}"
        );
        assert!(g.contains("meta nfproto @window goto cand_prerouting"));
        assert!(g.contains("goto prev_output"));
        let g0 = gated_script(&ra, &none, Duration::from_secs(7)).unwrap();
        assert!(g0.contains("\tchain prev_prerouting {\n\t}\n"), "{g0}");
        assert!(chain_rules("table inet portolan_forward {\n\tset s {\n\t}\n}\n").is_none());
        assert!(chain_rules("flush ruleset\n").is_none());
    }

    #[test]
    fn the_ssh_guard() {
        let g = SshGuard::from_sources(Some("198.18.80.2 50000 198.18.80.1 2222"), &[22]);
        let l = |s: &str| parse_listen(s).unwrap();
        let e = g
            .check(Proto::Tcp, &l("2000-3000"), "kernel forward x")
            .unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("port 2222")
                && e.contains("198.18.80.1:2222")
                && e.contains(SSH_GUARD_OVERRIDE),
            "{e}"
        );
        assert!(g.check(Proto::Tcp, &l("198.18.80.1:2222"), "x").is_err());
        assert!(g.check(Proto::Tcp, &l("198.18.80.9:2222"), "x").is_ok());
        assert!(g.check(Proto::Udp, &l("2222"), "x").is_ok());
        let e = g
            .check(Proto::Tcp, &l("198.18.80.9:22"), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port 22, a port sshd listens on"), "{e}");
        assert!(SshGuard::off().check(Proto::Tcp, &l("22"), "x").is_ok());
        let g = SshGuard::from_sources(Some("::ffff:198.18.80.2 1 ::ffff:198.18.80.1 22"), &[]);
        assert_eq!(g.session, Some("198.18.80.1:22".parse().unwrap()));
        assert!(SshGuard::from_sources(Some("junk"), &[]).session.is_none());
        let e = g
            .check(Proto::Tcp, &l("22"), "evil\u{1b}[2J")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn overlaps_follow_the_family() {
        let v4 = fwd(Proto::Tcp, "8080", "198.18.81.2:80");
        let v6 = fwd(Proto::Tcp, "8080", "[2001:2:0:50::b:2]:80");
        assert!(!v4.overlaps(&v6), "a dual-stack pair");
        assert!(v4.overlaps(&fwd(Proto::Tcp, "198.18.80.1:8000-9000", "198.18.81.2:80")));
        assert!(!v4.overlaps(&fwd(Proto::Udp, "8080", "198.18.81.2:80")));
        assert!(!v4.overlaps(&fwd(
            Proto::Tcp,
            "[2001:2:0:50::a:1]:8080",
            "[2001:2:0:50::b:2]:80"
        )));
        assert!(v6.overlaps(&fwd(
            Proto::Tcp,
            "[2001:2:0:50::a:1]:8080",
            "[2001:2:0:50::b:2]:80"
        )));
        assert!(!v4.overlaps(&fwd(Proto::Tcp, "8081", "198.18.81.2:80")));
        let l = |s: &str| Cover::of_listen(&parse_listen(s).unwrap());
        assert!(l("0.0.0.0:1").overlaps(v4.cover()) && !l("0.0.0.0:1").overlaps(v6.cover()));
        assert!(l("[::]:1").overlaps(v4.cover()) && l("*:1").overlaps(v6.cover()));
    }

    #[test]
    fn redirect_comments_read_back() {
        let l = parse_listen("198.18.80.1:20000-20100").unwrap();
        let c = redirect_comment(Proto::Tcp, &l, 19999);
        assert_eq!(parse_redirect_comment(&c), Some((Proto::Tcp, l, 19999)));
        assert_eq!(parse_redirect_comment("redirect tcp 80 to 81"), None);
        assert!(start_time(std::process::id()).is_some());
    }
}
