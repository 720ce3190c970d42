//! Reading the live firewall: `nft -j list ruleset`, parsed, and evaluated for one
//! question: would a new inbound connection from an outside address to a local port be
//! accepted by every input-hook base chain?
//!
//! The evaluator knows the common matches (protocol, destination port as value, set, range
//! or named set, `iif`/`iifname`, source and destination address, `ct state`, `fib daddr
//! type`, `tcp flags`), verdicts (accept, drop, reject, jump, goto, return) and verdict maps
//! on these keys. Anything else that could decide the answer makes it [`Verdict::Unknown`]
//! with the reason.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use crate::{Cidr, FirewallError, L4};

/// How deep jumps may nest (nftables itself stops at 16).
const MAX_DEPTH: usize = 16;

/// The answer for one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every input-hook chain accepts a new connection from anywhere.
    Open {
        /// What let it through (or that nothing filters).
        by: String,
    },
    /// Accepted only from some sources or interfaces; dropped for the rest.
    Restricted {
        /// The conditions under which it is accepted.
        only: String,
        /// What drops everything else.
        by: String,
    },
    /// Dropped or rejected for every source.
    Blocked {
        /// The rule or chain policy that drops it.
        by: String,
    },
    /// The ruleset holds something this evaluator cannot decide.
    Unknown {
        /// What, and where.
        why: String,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Open { by } => write!(f, "open ({by})"),
            Verdict::Restricted { only, by } => write!(f, "restricted: only {only} ({by})"),
            Verdict::Blocked { by } => write!(f, "blocked by {by}"),
            Verdict::Unknown { why } => write!(f, "unknown: {why}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Chain {
    family: String,
    table: String,
    name: String,
    hook: Option<String>,
    kind: Option<String>,
    prio: i64,
    policy: Option<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    handle: u64,
    comment: Option<String>,
    expr: Vec<Value>,
}

type ChainKey = (String, String, String);

/// A parsed `nft -j list ruleset`.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    tables: Vec<(String, String)>,
    chains: Vec<Chain>,
    rules: HashMap<ChainKey, Vec<Rule>>,
    sets: HashMap<ChainKey, Vec<Value>>,
}

fn s(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl Ruleset {
    /// Parses the JSON that `nft -j list ruleset` prints.
    pub fn from_json(text: &str) -> Result<Ruleset, FirewallError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| FirewallError::Json(e.to_string()))?;
        let items = root
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or_else(|| FirewallError::Json("no \"nftables\" array".to_owned()))?;
        let mut rs = Ruleset::default();
        for item in items {
            if let Some(t) = item.get("table") {
                rs.tables.push((s(t, "family"), s(t, "name")));
            } else if let Some(c) = item.get("chain") {
                rs.chains.push(Chain {
                    family: s(c, "family"),
                    table: s(c, "table"),
                    name: s(c, "name"),
                    hook: c.get("hook").and_then(Value::as_str).map(str::to_owned),
                    kind: c.get("type").and_then(Value::as_str).map(str::to_owned),
                    prio: c.get("prio").and_then(Value::as_i64).unwrap_or(0),
                    policy: c.get("policy").and_then(Value::as_str).map(str::to_owned),
                });
            } else if let Some(r) = item.get("rule") {
                let key = (s(r, "family"), s(r, "table"), s(r, "chain"));
                rs.rules.entry(key).or_default().push(Rule {
                    handle: r.get("handle").and_then(Value::as_u64).unwrap_or(0),
                    comment: r.get("comment").and_then(Value::as_str).map(str::to_owned),
                    expr: r
                        .get("expr")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                });
            } else if let Some(st) = item.get("set").or_else(|| item.get("map")) {
                let key = (s(st, "family"), s(st, "table"), s(st, "name"));
                let elems = st
                    .get("elem")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                rs.sets.insert(key, elems);
            }
        }
        Ok(rs)
    }

    /// Reads the live ruleset with `nft -j list ruleset` (needs CAP_NET_ADMIN).
    pub fn load() -> Result<Ruleset, FirewallError> {
        Ruleset::from_json(&crate::nft::ruleset_json()?)
    }

    /// The tables present, as `(family, name)`.
    pub fn tables(&self) -> &[(String, String)] {
        &self.tables
    }

    /// Whether the ruleset has this table.
    pub fn has_table(&self, family: &str, name: &str) -> bool {
        self.tables.iter().any(|(f, n)| f == family && n == name)
    }

    /// How many elements set `name` of table `family table` holds (expired ones are not
    /// listed), or `None` when there is no such set.
    pub fn set_len(&self, family: &str, table: &str, name: &str) -> Option<usize> {
        self.sets
            .get(&(family.to_owned(), table.to_owned(), name.to_owned()))
            .map(Vec::len)
    }

    /// Chain names of table `family name`.
    pub fn chain_names(&self, family: &str, table: &str) -> Vec<&str> {
        self.chains
            .iter()
            .filter(|c| c.family == family && c.table == table)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The comments of chain `chain`'s rules in table `family table`, in the chain's order
    /// (`None` for a rule without one); `None` when there is no such chain.
    pub fn rule_comments(
        &self,
        family: &str,
        table: &str,
        chain: &str,
    ) -> Option<Vec<Option<&str>>> {
        let exists = self
            .chains
            .iter()
            .any(|c| c.family == family && c.table == table && c.name == chain);
        if !exists {
            return None;
        }
        let key = (family.to_owned(), table.to_owned(), chain.to_owned());
        Some(
            self.rules
                .get(&key)
                .map(|rules| rules.iter().map(|r| r.comment.as_deref()).collect())
                .unwrap_or_default(),
        )
    }

    /// `(family, table, chain)` of every filter base chain on `hook` whose policy is drop,
    /// lowest priority first (a packet must pass every one of them).
    pub fn dropping_chains(&self, hook: &str) -> Vec<(String, String, String)> {
        let mut v: Vec<&Chain> = self
            .chains
            .iter()
            .filter(|c| {
                c.hook.as_deref() == Some(hook)
                    && c.kind.as_deref() == Some("filter")
                    && c.policy.as_deref() == Some("drop")
            })
            .collect();
        v.sort_by_key(|c| c.prio);
        v.iter()
            .map(|c| (c.family.clone(), c.table.clone(), c.name.clone()))
            .collect()
    }

    /// `(family, table, chain)` of every filter base chain on the input hook, lowest
    /// priority first.
    pub fn input_chains(&self) -> Vec<(String, String, String)> {
        let mut v: Vec<&Chain> = self
            .chains
            .iter()
            .filter(|c| c.hook.as_deref() == Some("input") && c.kind.as_deref() == Some("filter"))
            .collect();
        v.sort_by_key(|c| c.prio);
        v.iter()
            .map(|c| (c.family.clone(), c.table.clone(), c.name.clone()))
            .collect()
    }

    /// Whether a new connection from an outside address to `local:port` over `proto`
    /// would be accepted by every input-hook filter chain of every table.
    pub fn inbound_verdict(&self, proto: L4, local: IpAddr, port: u16) -> Verdict {
        let pkt = Packet {
            proto,
            daddr: local,
            dport: port,
        };
        let mut accepted_by = Vec::new();
        let mut restricted = Vec::new();
        let mut unknown = None;
        let mut chains: Vec<&Chain> = self
            .chains
            .iter()
            .filter(|c| {
                c.hook.as_deref() == Some("input")
                    && c.kind.as_deref() == Some("filter")
                    && family_applies(&c.family, local)
            })
            .collect();
        chains.sort_by_key(|c| c.prio);
        for chain in chains {
            let mut ev = Eval {
                rs: self,
                pkt: &pkt,
                only: Vec::new(),
            };
            let flow = ev.chain(&chain.family, &chain.table, &chain.name, 0);
            let flow = match flow {
                Flow::Continue | Flow::Return => {
                    let by = format!("policy of {}", where_chain(chain));
                    if chain.policy.as_deref() == Some("drop") {
                        Flow::Drop(by)
                    } else {
                        Flow::Accept(by)
                    }
                }
                f => f,
            };
            match flow {
                Flow::Drop(by) if ev.only.is_empty() => return Verdict::Blocked { by },
                Flow::Drop(by) => restricted.push((ev.only.join("; "), by)),
                Flow::Accept(by) => accepted_by.push(by),
                Flow::Unknown(why) => {
                    unknown.get_or_insert(why);
                }
                Flow::Continue | Flow::Return => {}
            }
        }
        if let Some(why) = unknown {
            return Verdict::Unknown { why };
        }
        if let Some((only, by)) = restricted.into_iter().next() {
            return Verdict::Restricted { only, by };
        }
        if accepted_by.is_empty() {
            Verdict::Open {
                by: "no input-hook filter chain".to_owned(),
            }
        } else {
            Verdict::Open {
                by: accepted_by.join("; "),
            }
        }
    }
}

/// Reads the live ruleset and answers [`Ruleset::inbound_verdict`].
pub fn inbound_verdict(proto: L4, local: IpAddr, port: u16) -> Result<Verdict, FirewallError> {
    Ok(Ruleset::load()?.inbound_verdict(proto, local, port))
}

fn family_applies(family: &str, addr: IpAddr) -> bool {
    match family {
        "inet" => true,
        "ip" => addr.is_ipv4(),
        "ip6" => addr.is_ipv6(),
        _ => false,
    }
}

fn where_chain(c: &Chain) -> String {
    format!("chain {} of table {} {}", c.name, c.family, c.table)
}

struct Packet {
    proto: L4,
    daddr: IpAddr,
    dport: u16,
}

/// What evaluating a chain came to.
enum Flow {
    /// Fell off the end.
    Continue,
    /// A `return` statement.
    Return,
    Accept(String),
    Drop(String),
    Unknown(String),
}

/// Whether one match holds for the packet.
enum Cond {
    Yes,
    No,
    /// Holds for some outside senders only (a source address or an interface).
    Depends(String),
    Unknown(String),
}

/// A statement's role in a rule.
enum Stmt {
    Cond(Cond),
    Verdict(Value),
    /// Counters, logs, set updates and the like: no effect on the verdict.
    Ignore,
}

struct Eval<'a> {
    rs: &'a Ruleset,
    pkt: &'a Packet,
    /// Conditions under which some senders were accepted.
    only: Vec<String>,
}

fn compact(v: &Value) -> String {
    let mut t = v.to_string();
    if t.len() > 120 {
        let mut cut = 117;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t.push_str("...");
    }
    t
}

impl Eval<'_> {
    fn chain(&mut self, family: &str, table: &str, name: &str, depth: usize) -> Flow {
        if depth > MAX_DEPTH {
            return Flow::Unknown(format!(
                "jumps nest deeper than {MAX_DEPTH} at chain {name}"
            ));
        }
        let key = (family.to_owned(), table.to_owned(), name.to_owned());
        let Some(rules) = self.rs.rules.get(&key) else {
            return Flow::Continue;
        };
        for rule in rules {
            let at = match &rule.comment {
                Some(c) => format!("rule {c:?} in chain {name} of table {family} {table}"),
                None => format!(
                    "rule #{} in chain {name} of table {family} {table}",
                    rule.handle
                ),
            };
            match self.rule(rule, family, table, &at, depth) {
                Flow::Continue => {}
                f => return f,
            }
        }
        Flow::Continue
    }

    fn rule(&mut self, rule: &Rule, family: &str, table: &str, at: &str, depth: usize) -> Flow {
        let mut depends: Vec<String> = Vec::new();
        let mut unknown: Option<String> = None;
        for e in &rule.expr {
            match self.stmt(e, family, table) {
                Stmt::Ignore | Stmt::Cond(Cond::Yes) => {}
                Stmt::Cond(Cond::No) => return Flow::Continue,
                Stmt::Cond(Cond::Depends(d)) => depends.push(d),
                Stmt::Cond(Cond::Unknown(u)) => {
                    unknown.get_or_insert(u);
                }
                Stmt::Verdict(v) => {
                    if let Some(u) = unknown {
                        return Flow::Unknown(format!("{at}: {u}"));
                    }
                    let flow = self.verdict(&v, family, table, at, depth);
                    if depends.is_empty() {
                        return flow;
                    }
                    // Applies to some senders only: remember accepts, go on for the rest.
                    return match flow {
                        Flow::Accept(_) => {
                            self.only.push(format!("{} ({at})", depends.join(", ")));
                            Flow::Continue
                        }
                        Flow::Unknown(u) => Flow::Unknown(u),
                        _ => Flow::Continue,
                    };
                }
            }
        }
        Flow::Continue
    }

    fn verdict(&mut self, v: &Value, family: &str, table: &str, at: &str, depth: usize) -> Flow {
        let Some((kind, arg)) = v.as_object().and_then(|o| o.iter().next()) else {
            return Flow::Unknown(format!("{at}: unreadable verdict {}", compact(v)));
        };
        match kind.as_str() {
            "accept" => Flow::Accept(at.to_owned()),
            "drop" | "reject" => Flow::Drop(at.to_owned()),
            "return" => Flow::Return,
            "continue" => Flow::Continue,
            "jump" | "goto" => {
                let target = arg
                    .get("target")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match self.chain(family, table, target, depth + 1) {
                    Flow::Return | Flow::Continue if kind == "goto" => Flow::Return,
                    Flow::Return => Flow::Continue,
                    f => f,
                }
            }
            other => Flow::Unknown(format!(
                "{at}: verdict {other} (e.g. queue) is not evaluated"
            )),
        }
    }

    fn stmt(&mut self, e: &Value, family: &str, table: &str) -> Stmt {
        let Some((kind, arg)) = e.as_object().and_then(|o| o.iter().next()) else {
            return Stmt::Cond(Cond::Unknown(format!(
                "unreadable expression {}",
                compact(e)
            )));
        };
        match kind.as_str() {
            "accept" | "drop" | "reject" | "return" | "jump" | "goto" | "continue" | "queue" => {
                Stmt::Verdict(e.clone())
            }
            "match" => Stmt::Cond(self.matches(arg, family, table)),
            "vmap" => self.vmap(arg, family, table),
            "counter" | "log" | "set" | "mangle" | "notrack" | "meta" | "ct" | "nat" | "snat"
            | "dnat" | "masquerade" | "redirect" | "dup" | "fwd" | "synproxy" => Stmt::Ignore,
            "limit" | "quota" | "ct count" => Stmt::Cond(Cond::Unknown(format!(
                "{kind} statement (accepts only while under a rate or count)"
            ))),
            "xt" => Stmt::Cond(Cond::Unknown(
                "an iptables-nft extension (xt) match that nft cannot show".to_owned(),
            )),
            _ => Stmt::Cond(Cond::Unknown(format!("expression {}", compact(e)))),
        }
    }

    fn vmap(&mut self, arg: &Value, family: &str, table: &str) -> Stmt {
        let key = arg.get("key").unwrap_or(&Value::Null);
        let entries: Vec<Value> = match arg.get("data") {
            Some(Value::String(name)) if name.starts_with('@') => self
                .rs
                .sets
                .get(&(family.to_owned(), table.to_owned(), name[1..].to_owned()))
                .cloned()
                .unwrap_or_default(),
            Some(d) => d
                .get("set")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for entry in entries {
            let Some([k, verdict]) = entry.as_array().map(Vec::as_slice) else {
                return Stmt::Cond(Cond::Unknown(format!(
                    "verdict map entry {}",
                    compact(&entry)
                )));
            };
            let m = serde_json::json!({"op": "==", "left": key, "right": k});
            match self.matches(&m, family, table) {
                Cond::Yes => return Stmt::Verdict(verdict.clone()),
                Cond::No => {}
                Cond::Depends(d) => {
                    return Stmt::Cond(Cond::Unknown(format!("verdict map keyed on {d}")))
                }
                Cond::Unknown(u) => return Stmt::Cond(Cond::Unknown(u)),
            }
        }
        Stmt::Ignore
    }

    fn matches(&self, m: &Value, family: &str, table: &str) -> Cond {
        let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
        let left = m.get("left").unwrap_or(&Value::Null);
        let right = m.get("right").unwrap_or(&Value::Null);
        let right = self.resolve_set(right, family, table);
        let positive = match op {
            "==" | "in" => true,
            "!=" => false,
            _ => return Cond::Unknown(format!("match with operator {op} on {}", compact(left))),
        };
        let c = self.match_left(left, &right, op);
        match (c, positive) {
            (Cond::Yes, false) => Cond::No,
            (Cond::No, false) => Cond::Yes,
            (Cond::Depends(d), false) => Cond::Depends(format!("not {d}")),
            (c, _) => c,
        }
    }

    /// `@name` becomes the named set's elements.
    fn resolve_set(&self, right: &Value, family: &str, table: &str) -> Value {
        if let Some(name) = right.as_str().and_then(|r| r.strip_prefix('@')) {
            let key = (family.to_owned(), table.to_owned(), name.to_owned());
            let elems = self.rs.sets.get(&key).cloned().unwrap_or_default();
            return serde_json::json!({ "set": elems });
        }
        right.clone()
    }

    fn match_left(&self, left: &Value, right: &Value, op: &str) -> Cond {
        let pkt = self.pkt;
        let v4 = pkt.daddr.is_ipv4();
        if let Some(meta) = left.get("meta") {
            return match meta.get("key").and_then(Value::as_str).unwrap_or_default() {
                "iif" | "iifname" => iface(right),
                "l4proto" => yes_if(values(right).iter().any(|v| is_proto(v, pkt.proto))),
                "nfproto" => yes_if(
                    values(right)
                        .iter()
                        .any(|v| v.as_str() == Some(if v4 { "ipv4" } else { "ipv6" })),
                ),
                "pkttype" => yes_if(values(right).iter().any(|v| v.as_str() == Some("host"))),
                k => Cond::Unknown(format!("match on meta {k}")),
            };
        }
        if let Some(p) = left.get("payload") {
            return self.payload(p, right, op);
        }
        if let Some(ct) = left.get("ct") {
            return match ct.get("key").and_then(Value::as_str).unwrap_or_default() {
                "state" => yes_if(values(right).iter().any(|v| v.as_str() == Some("new"))),
                "status" => yes_if(false),
                k => Cond::Unknown(format!("match on ct {k}")),
            };
        }
        if let Some(fib) = left.get("fib") {
            let flags: Vec<&str> = fib
                .get("flags")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let result = fib
                .get("result")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if result == "type" && flags == ["daddr"] {
                return yes_if(values(right).iter().any(|v| v.as_str() == Some("local")));
            }
            if result == "oif" && flags.contains(&"saddr") && right == &Value::Bool(false) {
                // Reverse-path check "oif missing": a routable outside sender passes it.
                return Cond::No;
            }
            return Cond::Unknown(format!("fib lookup {}", compact(fib)));
        }
        Cond::Unknown(format!("match on {}", compact(left)))
    }

    fn payload(&self, p: &Value, right: &Value, op: &str) -> Cond {
        let pkt = self.pkt;
        let v4 = pkt.daddr.is_ipv4();
        let proto = p
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let field = p.get("field").and_then(Value::as_str).unwrap_or_default();
        match (proto, field) {
            // A transport header of another protocol: nft's implicit l4proto dependency fails.
            (
                "tcp" | "udp" | "icmp" | "icmpv6" | "sctp" | "dccp" | "udplite" | "igmp" | "esp"
                | "ah" | "comp",
                _,
            ) if proto != pkt.proto.as_str() => Cond::No,
            ("ip", _) if !v4 => Cond::No,
            ("ip6", _) if v4 => Cond::No,
            ("tcp" | "udp" | "th", "dport") => yes_if(port_in(pkt.dport, right)),
            ("tcp" | "udp" | "th", "sport") => {
                Cond::Depends(format!("from source port {}", compact(right)))
            }
            ("tcp", "flags") if op == "in" || op == "==" => {
                yes_if(values(right).iter().any(|v| v.as_str() == Some("syn")))
            }
            ("ip" | "ip6", "saddr") => Cond::Depends(format!("from {}", addrs_text(right))),
            ("ip" | "ip6", "daddr") => match addr_in(pkt.daddr, right) {
                Some(b) => yes_if(b),
                None => Cond::Unknown(format!("destination address match {}", compact(right))),
            },
            ("ip", "protocol") | ("ip6", "nexthdr") => {
                yes_if(values(right).iter().any(|v| is_proto(v, pkt.proto)))
            }
            _ => Cond::Unknown(format!("match on {proto} {field}")),
        }
    }
}

fn yes_if(b: bool) -> Cond {
    if b {
        Cond::Yes
    } else {
        Cond::No
    }
}

/// The values of a right-hand side: a scalar, an array, or `{"set": [...]}`.
fn values(right: &Value) -> Vec<Value> {
    match right {
        Value::Array(a) => a.clone(),
        Value::Object(o) if o.contains_key("set") => {
            o["set"].as_array().cloned().unwrap_or_default()
        }
        v => vec![v.clone()],
    }
}

fn is_proto(v: &Value, proto: L4) -> bool {
    match v {
        Value::String(s) => s == proto.as_str(),
        Value::Number(n) => n.as_u64() == Some(if proto == L4::Tcp { 6 } else { 17 }),
        _ => false,
    }
}

/// Input interface: an outside packet never comes in on `lo`; any other name depends on
/// which interface it arrives on.
fn iface(right: &Value) -> Cond {
    let names: Vec<String> = values(right)
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect();
    let others: Vec<&String> = names.iter().filter(|n| n.as_str() != "lo").collect();
    if others.is_empty() {
        Cond::No
    } else {
        let list: Vec<&str> = others.iter().map(|s| s.as_str()).collect();
        Cond::Depends(format!("arriving on interface {}", list.join(", ")))
    }
}

fn port_in(port: u16, right: &Value) -> bool {
    values(right).iter().any(|v| match v {
        Value::Number(n) => n.as_u64() == Some(u64::from(port)),
        Value::Object(o) => o
            .get("range")
            .and_then(Value::as_array)
            .and_then(|r| Some((r.first()?.as_u64()?, r.get(1)?.as_u64()?)))
            .is_some_and(|(a, b)| (a..=b).contains(&u64::from(port))),
        _ => false,
    })
}

/// Whether `addr` is in the right-hand side; `None` when some element is unreadable.
fn addr_in(addr: IpAddr, right: &Value) -> Option<bool> {
    let mut hit = false;
    for v in values(right) {
        let inside = match &v {
            Value::String(s) => s.parse::<IpAddr>().ok()? == addr,
            Value::Object(o) if o.contains_key("prefix") => {
                let p = &o["prefix"];
                let net: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
                let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
                Cidr::new(net, len)?.contains(addr)
            }
            Value::Object(o) if o.contains_key("range") => {
                let r = o["range"].as_array()?;
                let a: IpAddr = r.first()?.as_str()?.parse().ok()?;
                let b: IpAddr = r.get(1)?.as_str()?.parse().ok()?;
                a <= addr && addr <= b && a.is_ipv4() == addr.is_ipv4()
            }
            _ => return None,
        };
        hit |= inside;
    }
    Some(hit)
}

fn addrs_text(right: &Value) -> String {
    let parts: Vec<String> = values(right)
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Object(o) if o.contains_key("prefix") => format!(
                "{}/{}",
                o["prefix"]
                    .get("addr")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
                o["prefix"].get("len").and_then(Value::as_u64).unwrap_or(0)
            ),
            other => compact(other),
        })
        .collect();
    parts.join(", ")
}
