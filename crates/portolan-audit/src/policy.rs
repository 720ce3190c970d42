//! Policy as code: which listeners may exist, parsed from TOML (see `POLICY.md`).
//!
//! Parsing is all or nothing: the whole file is parsed and every entry validated, and only a
//! policy without a single error is returned. Every error names the file, line and column
//! (from the TOML parser's spans) and the bad key or value, escaped.

use std::fmt;
use std::net::IpAddr;

use portolan_core::escape::{for_terminal, is_dangerous};
use portolan_core::Protocol;
use serde::Deserialize;
use toml::Spanned;

use crate::date::Date;
use crate::listener::Listener;

/// Largest policy file accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 1 << 20;
/// Most `[[allow]]` plus `[[exception]]` entries accepted.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest string value accepted, in characters.
const MAX_STRING: usize = 4096;

/// A validated policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub settings: Settings,
    pub allow: Vec<Rule>,
    pub exceptions: Vec<Exception>,
}

/// The `[settings]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Loopback-only listeners need no `[[allow]]` entry (default true).
    pub allow_loopback: bool,
    /// Ports a service must not use by default (the policy asks it be moved).
    pub avoid_default_ports: Vec<u16>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_loopback: true,
            avoid_default_ports: Vec::new(),
        }
    }
}

/// Where a listener may be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrMatch {
    /// Any address, the wildcard included.
    Any,
    /// 127.0.0.0/8 or ::1.
    Loopback,
    /// Exactly this address (`0.0.0.0` and `::` are exact addresses too).
    Exact(IpAddr),
    /// An address inside this network; the wildcard is inside only `0.0.0.0/0` and `::/0`.
    Net(Cidr),
}

pub(crate) use portolan_core::cidr::canonical;
/// An IP network, `198.18.0.0/15` (one type with the firewall's rule sources).
pub use portolan_core::Cidr;

/// Constraints on who owns a listener; `None` fields are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct OwnerMatch {
    /// The process name (kernel `comm`) or the file name of its executable.
    pub process: Option<String>,
    /// The executable's full path.
    pub exe: Option<String>,
    /// A user name or a numeric uid.
    pub user: Option<String>,
    /// A systemd unit (`nginx.service`).
    pub unit: Option<String>,
}

/// One `[[allow]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Line of the entry in the policy file (0 for policies built in memory).
    pub line: usize,
    pub proto: Protocol,
    /// Inclusive port range.
    pub ports: (u16, u16),
    pub addresses: Vec<AddrMatch>,
    pub owner: OwnerMatch,
    /// A missing listener is a finding.
    pub required: bool,
    /// Inbound sources the firewall plan admits (empty: from anywhere).
    pub from: Vec<Cidr>,
    pub comment: Option<String>,
}

/// One `[[exception]]` entry: findings on matching listeners are accepted, for a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exception {
    pub line: usize,
    pub proto: Protocol,
    pub ports: (u16, u16),
    /// Empty: any address.
    pub addresses: Vec<AddrMatch>,
    pub owner: OwnerMatch,
    pub reason: String,
    /// From this day on the exception no longer applies.
    pub expires: Option<Date>,
    /// Rule id prefixes it covers (`PA001`); empty: every rule.
    pub rules: Vec<String>,
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Why a policy was rejected: every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    pub errors: Vec<Located>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, e.line, e.column, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

impl AddrMatch {
    /// Parses `any`, `loopback`, an IP address or a CIDR network.
    pub fn parse(s: &str) -> Result<AddrMatch, String> {
        match s {
            "any" => Ok(AddrMatch::Any),
            "loopback" => Ok(AddrMatch::Loopback),
            _ if s.contains('/') => Cidr::parse_network(s)
                .map(AddrMatch::Net)
                .map_err(|e| e.to_string()),
            _ => s.parse().map(|ip| AddrMatch::Exact(canonical(ip))).map_err(|_| {
                format!(
                    "`{}` is not an address: use `any`, `loopback`, an IP address or a network like 10.0.0.0/8",
                    echo(s)
                )
            }),
        }
    }

    /// True when a listener bound to `ip` is allowed by this.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match self {
            AddrMatch::Any => true,
            AddrMatch::Loopback => ip.is_loopback(),
            AddrMatch::Exact(a) => *a == ip,
            AddrMatch::Net(c) => c.contains(ip),
        }
    }
}

impl fmt::Display for AddrMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrMatch::Any => f.write_str("any"),
            AddrMatch::Loopback => f.write_str("loopback"),
            AddrMatch::Exact(a) => write!(f, "{a}"),
            AddrMatch::Net(c) => write!(f, "{c}"),
        }
    }
}

/// How an owner constraint compares with a listener's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerCheck {
    Matches,
    /// The owner is known and differs: which field, wanted, found.
    Differs(&'static str, String, String),
    /// The field could not be read (another user's process without root).
    Unknown(&'static str),
}

impl OwnerMatch {
    /// True when no field is constrained.
    pub fn is_empty(&self) -> bool {
        self.process.is_none() && self.exe.is_none() && self.user.is_none() && self.unit.is_none()
    }

    /// Compares with a listener's owner, field by field; the first failing field decides.
    pub fn check(&self, l: &Listener) -> OwnerCheck {
        let o = &l.owner;
        if let Some(want) = &self.process {
            let base = o.exe.as_deref().and_then(|e| e.rsplit('/').next());
            match (&o.process, base) {
                (None, None) => return OwnerCheck::Unknown("process"),
                (p, b) if p.as_deref() == Some(want.as_str()) || b == Some(want.as_str()) => {}
                (p, b) => {
                    let found = p.clone().or(b.map(str::to_owned)).unwrap_or_default();
                    return OwnerCheck::Differs("process", want.clone(), found);
                }
            }
        }
        if let Some(want) = &self.exe {
            match &o.exe {
                None => return OwnerCheck::Unknown("exe"),
                Some(e) if e == want => {}
                Some(e) => return OwnerCheck::Differs("exe", want.clone(), e.clone()),
            }
        }
        if let Some(want) = &self.user {
            let uid = o.uid.to_string();
            if o.user.as_deref() != Some(want.as_str()) && uid != *want {
                let found = o.user.clone().unwrap_or(uid);
                return OwnerCheck::Differs("user", want.clone(), found);
            }
        }
        if let Some(want) = &self.unit {
            match &o.unit {
                None if o.pid.is_none() && o.container.is_none() => {
                    return OwnerCheck::Unknown("unit")
                }
                Some(u) if u == want => {}
                found => {
                    let found = found.clone().unwrap_or_else(|| "no unit".into());
                    return OwnerCheck::Differs("unit", want.clone(), found);
                }
            }
        }
        OwnerCheck::Matches
    }
}

fn ports_cover(ports: (u16, u16), port: u16) -> bool {
    ports.0 <= port && port <= ports.1
}

impl Rule {
    /// Same protocol and port.
    pub fn covers_port(&self, l: &Listener) -> bool {
        self.proto == l.proto && ports_cover(self.ports, l.port)
    }

    /// The bound address is one the rule allows.
    pub fn allows_addr(&self, l: &Listener) -> bool {
        self.addresses.iter().any(|a| a.allows(l.address))
    }

    /// Port, address and owner all match.
    pub fn matches(&self, l: &Listener) -> bool {
        self.covers_port(l) && self.allows_addr(l) && self.owner.check(l) == OwnerCheck::Matches
    }

    /// `22/tcp` or `8000-8099/tcp`.
    pub fn port_label(&self) -> String {
        port_label(self.proto, self.ports)
    }
}

pub(crate) fn port_label(proto: Protocol, ports: (u16, u16)) -> String {
    if ports.0 == ports.1 {
        format!("{}/{proto}", ports.0)
    } else {
        format!("{}-{}/{proto}", ports.0, ports.1)
    }
}

impl Exception {
    /// Applies to this listener (ignoring expiry).
    pub fn matches(&self, l: &Listener) -> bool {
        self.proto == l.proto
            && ports_cover(self.ports, l.port)
            && (self.addresses.is_empty() || self.addresses.iter().any(|a| a.allows(l.address)))
            && self.owner.check(l) == OwnerCheck::Matches
    }

    /// Covers findings of this rule id.
    pub fn covers_rule(&self, id: &str) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|r| id.starts_with(r.as_str()))
    }

    /// Expired on `today` (the expiry day itself is the first day it no longer applies).
    pub fn expired(&self, today: Date) -> bool {
        self.expires.is_some_and(|e| e <= today)
    }
}

// ---------------------------------------------------------------------------------------
// Parsing.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<Spanned<i64>>,
    settings: Option<RawSettings>,
    #[serde(default)]
    allow: Vec<Spanned<RawEntry>>,
    #[serde(default)]
    exception: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    allow_loopback: Option<bool>,
    avoid_default_ports: Option<Vec<Spanned<toml::Value>>>,
}

/// `[[allow]]` and `[[exception]]` share one shape; keys that belong to the other kind are
/// rejected during validation with a message that says so.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    port: Option<Spanned<toml::Value>>,
    proto: Option<Spanned<String>>,
    address: Option<Spanned<toml::Value>>,
    process: Option<Spanned<String>>,
    exe: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    unit: Option<Spanned<String>>,
    required: Option<Spanned<bool>>,
    from: Option<Spanned<toml::Value>>,
    comment: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
    expires: Option<Spanned<toml::Value>>,
    rules: Option<Spanned<toml::Value>>,
}

/// Shortens and escapes user text for an error message.
fn echo(s: &str) -> String {
    let cut: String = s.chars().take(80).collect();
    let more = if cut.len() < s.len() { "..." } else { "" };
    format!("{}{more}", for_terminal(&cut))
}

fn value_echo(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("\"{}\"", echo(s)),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

struct Ctx<'a> {
    text: &'a str,
    errors: Vec<Located>,
}

impl Ctx<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(Located {
            line,
            column,
            message,
        });
    }

    fn line(&self, span: &std::ops::Range<usize>) -> usize {
        line_col(self.text, span.start).0
    }

    /// A string value: no control or bidi characters, bounded length.
    fn string(&mut self, key: &str, v: &Spanned<String>) -> Option<String> {
        let s = v.get_ref();
        if let Some(c) = s.chars().find(|&c| is_dangerous(c)) {
            self.at(
                v.span(),
                format!(
                    "`{key}` contains the control character U+{:04X}: `{}`",
                    u32::from(c),
                    echo(s)
                ),
            );
            return None;
        }
        if s.chars().count() > MAX_STRING {
            self.at(
                v.span(),
                format!("`{key}` is longer than {MAX_STRING} characters"),
            );
            return None;
        }
        if s.trim().is_empty() {
            self.at(v.span(), format!("`{key}` is empty"));
            return None;
        }
        Some(s.clone())
    }

    fn opt_string(&mut self, key: &str, v: Option<&Spanned<String>>) -> Option<String> {
        v.and_then(|v| self.string(key, v))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn port_number(ctx: &mut Ctx<'_>, span: std::ops::Range<usize>, n: i64, key: &str) -> Option<u16> {
    match u16::try_from(n) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            ctx.at(
                span,
                format!("`{key}` = {n} is not a port: ports are 1 to 65535"),
            );
            None
        }
    }
}

fn parse_ports(ctx: &mut Ctx<'_>, v: &Spanned<toml::Value>) -> Option<(u16, u16)> {
    let span = v.span();
    match v.get_ref() {
        toml::Value::Integer(n) => port_number(ctx, span, *n, "port").map(|p| (p, p)),
        toml::Value::String(s) => {
            let parsed = s.split_once('-').and_then(|(a, b)| {
                Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?))
            });
            let Some((a, b)) = parsed else {
                ctx.at(
                    span,
                    format!(
                        "`port` = \"{}\" is not a port or a range like \"8000-8099\"",
                        echo(s)
                    ),
                );
                return None;
            };
            let a = port_number(ctx, span.clone(), a, "port")?;
            let b = port_number(ctx, span.clone(), b, "port")?;
            if a > b {
                ctx.at(span, format!("`port` range \"{}\" runs backwards", echo(s)));
                return None;
            }
            Some((a, b))
        }
        other => {
            ctx.at(
                span,
                format!(
                    "`port` must be a number or a range string, not {}",
                    value_echo(other)
                ),
            );
            None
        }
    }
}

/// A string or an array of strings, each checked.
fn string_list(ctx: &mut Ctx<'_>, key: &str, v: &Spanned<toml::Value>) -> Option<Vec<String>> {
    let span = v.span();
    let items: Vec<&toml::Value> = match v.get_ref() {
        toml::Value::Array(a) => a.iter().collect(),
        s @ toml::Value::String(_) => vec![s],
        other => {
            ctx.at(
                span,
                format!(
                    "`{key}` must be a string or a list of strings, not {}",
                    value_echo(other)
                ),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        if let toml::Value::String(s) = item {
            ok &= ctx
                .string(key, &Spanned::new(span.clone(), s.clone()))
                .map(|s| out.push(s))
                .is_some();
        } else {
            ctx.at(
                span.clone(),
                format!("`{key}` holds {} where a string belongs", value_echo(item)),
            );
            ok = false;
        }
    }
    ok.then_some(out)
}

fn parse_addresses(
    ctx: &mut Ctx<'_>,
    key: &str,
    v: &Spanned<toml::Value>,
) -> Option<Vec<AddrMatch>> {
    let list = string_list(ctx, key, v)?;
    if list.is_empty() {
        ctx.at(
            v.span(),
            format!("`{key}` is an empty list: leave it out, or name at least one address"),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for s in &list {
        match AddrMatch::parse(s) {
            Ok(a) => out.push(a),
            Err(e) => {
                ctx.at(v.span(), format!("`{key}`: {e}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn parse_from(ctx: &mut Ctx<'_>, v: &Spanned<toml::Value>) -> Option<Vec<Cidr>> {
    let mut out = Vec::new();
    let mut ok = true;
    for a in parse_addresses(ctx, "from", v)? {
        match a {
            AddrMatch::Any => {
                out.push(Cidr::parse_network("0.0.0.0/0").ok()?);
                out.push(Cidr::parse_network("::/0").ok()?);
            }
            AddrMatch::Net(c) => out.push(c),
            AddrMatch::Exact(ip) => out.push(Cidr::host(ip)),
            AddrMatch::Loopback => {
                ctx.at(v.span(), "`from` = \"loopback\" says nothing to a firewall: loopback traffic is always allowed; name networks or `any`".into());
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn parse_date(ctx: &mut Ctx<'_>, v: &Spanned<toml::Value>) -> Option<Date> {
    let span = v.span();
    let d = match v.get_ref() {
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
            dt.date.and_then(|d| Date::new(d.year, d.month, d.day))
        }
        toml::Value::String(s) => Date::parse(s),
        _ => None,
    };
    if d.is_none() {
        ctx.at(
            span,
            format!(
                "`expires` = {} is not a date: write it as 2026-12-31",
                value_echo(v.get_ref())
            ),
        );
    }
    d
}

struct Common {
    line: usize,
    proto: Protocol,
    ports: (u16, u16),
    addresses: Vec<AddrMatch>,
    owner: OwnerMatch,
}

fn parse_common(ctx: &mut Ctx<'_>, e: &Spanned<RawEntry>, kind: &str) -> Option<Common> {
    let span = e.span();
    let r = e.get_ref();
    let ports = if let Some(p) = &r.port {
        parse_ports(ctx, p)
    } else {
        ctx.at(span.clone(), format!("[[{kind}]] entry has no `port`"));
        None
    };
    let proto = match &r.proto {
        None => Some(Protocol::Tcp),
        Some(p) => match p.get_ref().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            other => {
                ctx.at(
                    p.span(),
                    format!("`proto` = \"{}\" is not tcp or udp", echo(other)),
                );
                None
            }
        },
    };
    let addresses = match &r.address {
        Some(a) => parse_addresses(ctx, "address", a),
        None if kind == "allow" => Some(vec![AddrMatch::Any]),
        None => Some(Vec::new()),
    };
    let owner = OwnerMatch {
        process: ctx.opt_string("process", r.process.as_ref()),
        exe: ctx.opt_string("exe", r.exe.as_ref()),
        user: ctx.opt_string("user", r.user.as_ref()),
        unit: ctx.opt_string("unit", r.unit.as_ref()),
    };
    let owner_ok = [
        (&r.process, &owner.process),
        (&r.exe, &owner.exe),
        (&r.user, &owner.user),
        (&r.unit, &owner.unit),
    ]
    .iter()
    .all(|(raw, parsed)| raw.is_none() == parsed.is_none());
    if let Some(exe) = &owner.exe {
        if !exe.starts_with('/') {
            ctx.at(
                r.exe.as_ref().map_or(span.clone(), Spanned::span),
                format!("`exe` = \"{}\" must be an absolute path", echo(exe)),
            );
            return None;
        }
    }
    Some(Common {
        line: ctx.line(&span),
        proto: proto?,
        ports: ports?,
        addresses: addresses?,
        owner: owner_ok.then_some(owner)?,
    })
}

fn reject_keys(
    ctx: &mut Ctx<'_>,
    kind: &str,
    keys: &[(&str, Option<std::ops::Range<usize>>)],
    hint: &str,
) {
    for (key, span) in keys {
        if let Some(s) = span {
            ctx.at(
                s.clone(),
                format!("`{key}` does not belong in [[{kind}]]: {hint}"),
            );
        }
    }
}

fn parse_allow(ctx: &mut Ctx<'_>, e: &Spanned<RawEntry>) -> Option<Rule> {
    let r = e.get_ref();
    reject_keys(
        ctx,
        "allow",
        &[
            ("reason", r.reason.as_ref().map(Spanned::span)),
            ("expires", r.expires.as_ref().map(Spanned::span)),
            ("rules", r.rules.as_ref().map(Spanned::span)),
        ],
        "it is a key of [[exception]]",
    );
    let c = parse_common(ctx, e, "allow");
    let from = match &r.from {
        Some(f) => parse_from(ctx, f),
        None => Some(Vec::new()),
    };
    let comment = match &r.comment {
        Some(c) => ctx.string("comment", c).map(Some),
        None => Some(None),
    };
    let c = c?;
    Some(Rule {
        line: c.line,
        proto: c.proto,
        ports: c.ports,
        addresses: c.addresses,
        owner: c.owner,
        required: r.required.as_ref().is_some_and(|b| *b.get_ref()),
        from: from?,
        comment: comment?,
    })
}

fn parse_exception(ctx: &mut Ctx<'_>, e: &Spanned<RawEntry>) -> Option<Exception> {
    let r = e.get_ref();
    reject_keys(
        ctx,
        "exception",
        &[
            ("required", r.required.as_ref().map(Spanned::span)),
            ("from", r.from.as_ref().map(Spanned::span)),
            ("comment", r.comment.as_ref().map(Spanned::span)),
        ],
        "it is a key of [[allow]] (say why in `reason`)",
    );
    let c = parse_common(ctx, e, "exception");
    let reason = if let Some(s) = &r.reason {
        ctx.string("reason", s)
    } else {
        ctx.at(
            e.span(),
            "[[exception]] entry has no `reason`: every exception must say why it exists".into(),
        );
        None
    };
    let expires = match &r.expires {
        Some(v) => parse_date(ctx, v).map(Some),
        None => Some(None),
    };
    let rules = match &r.rules {
        Some(v) => string_list(ctx, "rules", v),
        None => Some(Vec::new()),
    };
    let c = c?;
    Some(Exception {
        line: c.line,
        proto: c.proto,
        ports: c.ports,
        addresses: c.addresses,
        owner: c.owner,
        reason: reason?,
        expires: expires?,
        rules: rules?,
    })
}

fn parse_settings(ctx: &mut Ctx<'_>, s: Option<&RawSettings>) -> Settings {
    let mut out = Settings::default();
    let Some(s) = s else { return out };
    if let Some(b) = s.allow_loopback {
        out.allow_loopback = b;
    }
    for v in s.avoid_default_ports.iter().flatten() {
        match v.get_ref() {
            toml::Value::Integer(n) => {
                if let Some(p) = port_number(ctx, v.span(), *n, "avoid_default_ports") {
                    out.avoid_default_ports.push(p);
                }
            }
            other => ctx.at(
                v.span(),
                format!(
                    "`avoid_default_ports` holds {} where a port number belongs",
                    value_echo(other)
                ),
            ),
        }
    }
    out
}

/// Rejects an entry identical to an earlier one (same protocol, ports, addresses, owner).
fn check_duplicates<T>(
    ctx: &mut Ctx<'_>,
    kind: &str,
    items: &[T],
    key: impl Fn(&T) -> (usize, String),
) {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for it in items {
        let (line, k) = key(it);
        if let Some(first) = seen.get(&k) {
            ctx.errors.push(Located {
                line,
                column: 1,
                message: format!("duplicate [[{kind}]] entry: the same as the one at line {first}"),
            });
        } else {
            seen.insert(k, line);
        }
    }
}

impl Policy {
    /// Parses and validates a policy. `file` names it in error messages.
    pub fn parse(file: &str, text: &str) -> Result<Policy, PolicyError> {
        let fail = |line, column, message| PolicyError {
            file: echo(file),
            errors: vec![Located {
                line,
                column,
                message,
            }],
        };
        if text.len() > MAX_POLICY_BYTES {
            return Err(fail(
                1,
                1,
                format!(
                    "the policy is {} bytes; the limit is {MAX_POLICY_BYTES}",
                    text.len()
                ),
            ));
        }
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            fail(line, column, for_terminal(e.message()).into_owned())
        })?;
        let mut ctx = Ctx {
            text,
            errors: Vec::new(),
        };
        if let Some(v) = &raw.version {
            if *v.get_ref() != 1 {
                ctx.at(
                    v.span(),
                    format!(
                        "`version` = {} is not supported: this portolan reads version 1",
                        v.get_ref()
                    ),
                );
            }
        }
        if raw.allow.len() + raw.exception.len() > MAX_ENTRIES {
            return Err(fail(
                1,
                1,
                format!("the policy has more than {MAX_ENTRIES} entries"),
            ));
        }
        let settings = parse_settings(&mut ctx, raw.settings.as_ref());
        let allow: Vec<Rule> = raw
            .allow
            .iter()
            .filter_map(|e| parse_allow(&mut ctx, e))
            .collect();
        let exceptions: Vec<Exception> = raw
            .exception
            .iter()
            .filter_map(|e| parse_exception(&mut ctx, e))
            .collect();
        check_duplicates(&mut ctx, "allow", &allow, |r| {
            (
                r.line,
                format!("{:?}{:?}{:?}{:?}", r.proto, r.ports, r.addresses, r.owner),
            )
        });
        check_duplicates(&mut ctx, "exception", &exceptions, |r| {
            (
                r.line,
                format!(
                    "{:?}{:?}{:?}{:?}{:?}",
                    r.proto, r.ports, r.addresses, r.owner, r.rules
                ),
            )
        });
        if ctx.errors.is_empty() {
            Ok(Policy {
                settings,
                allow,
                exceptions,
            })
        } else {
            ctx.errors.sort_by_key(|e| (e.line, e.column));
            Err(PolicyError {
                file: echo(file),
                errors: ctx.errors,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_what_they_should() {
        let n = Cidr::parse_network("198.18.0.0/15").unwrap();
        assert!(n.contains(ip("198.19.255.255")));
        assert!(!n.contains(ip("198.20.0.0")));
        assert!(
            n.contains(ip("::ffff:198.18.0.1")),
            "mapped IPv4 judged as IPv4"
        );
        assert!(!n.contains(ip("2001:db8::1")));
        let all = Cidr::parse_network("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("0.0.0.0")) && all.contains(ip("255.255.255.255")));
        let v6 = Cidr::parse_network("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(Cidr::parse_network("::1/128").unwrap().contains(ip("::1")));
        assert!(Cidr::parse_network("10.0.0.0").is_err());
        assert!(Cidr::parse_network("10.0.0.0/").is_err());
        assert!(Cidr::parse_network("10.0.0.0/+8").is_err());
    }

    #[test]
    fn addresses_allow_binds() {
        let a = |s: &str| AddrMatch::parse(s).unwrap();
        assert!(a("any").allows(ip("::")));
        assert!(a("loopback").allows(ip("127.0.0.53")));
        assert!(a("loopback").allows(ip("::1")));
        assert!(!a("loopback").allows(ip("0.0.0.0")));
        assert!(a("0.0.0.0").allows(ip("0.0.0.0")));
        assert!(!a("0.0.0.0").allows(ip("::")));
        assert!(a("192.0.2.7").allows(ip("::ffff:192.0.2.7")));
        assert!(
            !a("10.0.0.0/8").allows(ip("0.0.0.0")),
            "a network never allows the wildcard"
        );
        assert_eq!(a("2001:db8::/32").to_string(), "2001:db8::/32");
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("x", 99), (1, 2));
    }
}
