//! The findings engine: each listener, judged with the catalog, the probes, the policy and
//! the firewall, becomes zero or more findings, each with a rule id, a severity and a fix.
//!
//! Rules (ids are stable; the suffix after the number may be read by people only):
//!
//! | id | severity | what |
//! |----|----------|------|
//! | PA001-sensitive-on-all-interfaces | high | database, cache, queue, admin or debug service on the wildcard address |
//! | PA002-sensitive-on-network-address | medium | the same, bound to one non-loopback address |
//! | PA003-cleartext-login | high (telnet, r-services) / medium (FTP, POP3, IMAP) | passwords in clear text on a non-loopback address |
//! | PA004-http-login-without-tls | medium | HTTP asks for credentials (401) without TLS, non-loopback |
//! | PA005-debugger-exposed | critical / medium on loopback | an interactive debugger (Werkzeug) answers |
//! | PA006-unknown-service | low | a non-loopback listener nothing names |
//! | PA007-executable-deleted | high / medium on loopback | the owner's executable was deleted or replaced |
//! | PA008-unexpected-service | medium / info on loopback | the probe names another service than the port's usual one |
//! | PA009-default-port | low | a service on a port the policy asks to avoid |
//! | PA010-open-to-outside | info | the firewall lets outside connections reach this listener |
//! | PA011-firewall-blocks | info | the firewall blocks outside connections to this listener |
//! | PP001-not-allowed | high | the policy allows nothing on this port |
//! | PP002-address-not-allowed | high | allowed port, address not allowed |
//! | PP003-owner-mismatch | high / low when the owner cannot be read | allowed port and address, another owner |
//! | PP004-required-missing | medium | a `required` entry has no listener |
//! | PP005-exception-expired | medium | an exception has expired and no longer applies |
//!
//! When the firewall says a listener is open to outside, its exposure findings go up one
//! severity; when it says blocked, that is noted in their detail.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use portolan_catalog::Advice;
use portolan_core::escape::for_terminal;
use portolan_core::{Port, Protocol};
use portolan_probe::{Report, Transport};
use serde::Serialize;

use crate::date::Date;
use crate::listener::{esc, Describe, Listener, Owner};
use crate::policy::{OwnerCheck, Policy};
use crate::rules;

/// How bad a finding is; ordered from `Info` (least) to `Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// One step up, saturating at `Critical`.
    #[must_use]
    pub fn raised(self) -> Severity {
        match self {
            Severity::Info => Severity::Low,
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            _ => Err(format!(
                "`{}` is not a severity: info, low, medium, high or critical",
                for_terminal(s)
            )),
        }
    }
}

/// The socket a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SocketRef {
    pub proto: Protocol,
    pub addr: IpAddr,
    pub port: u16,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `PA001-sensitive-on-all-interfaces`.
    pub id: &'static str,
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    /// A concrete command or configuration change.
    pub fix: String,
    pub socket: Option<SocketRef>,
    pub owner: Option<Owner>,
    /// Set when a policy exception accepts this finding: its line and reason. Accepted
    /// findings are kept (shown as such) but must not fail a CI run.
    pub accepted: Option<String>,
}

impl Finding {
    /// Whether this finding fails a run whose bar is `bar` (`--fail-on`): at or above it,
    /// and not accepted by a policy exception. The exit code and JUnit's failures both
    /// follow this one rule.
    pub fn fails(&self, bar: Severity) -> bool {
        self.accepted.is_none() && self.severity >= bar
    }
}

/// What the live firewall does to an inbound connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "verdict", content = "why")]
pub enum Verdict {
    /// An outside host can connect.
    Open,
    /// The firewall drops or rejects it.
    Blocked,
    /// The rules could not be read or judged; why.
    Unknown(String),
}

/// An oracle for inbound reachability: answers, for a local listener, whether a connection
/// from outside this machine would get through the live firewall. Implemented by the
/// firewall crate from the nftables/iptables ruleset.
pub trait Reachability {
    /// The verdict for a new inbound connection from a non-local host to `local`.
    fn inbound(&self, proto: Protocol, local: SocketAddr) -> Verdict;
}

/// Everything the audit judges.
pub struct AuditInput<'a> {
    pub listeners: &'a [Listener],
    /// Probe results, matched to listeners by protocol and port (and address unless the
    /// listener is on the wildcard address).
    pub probes: &'a [Report],
    pub policy: Option<&'a Policy>,
    pub reachability: Option<&'a dyn Reachability>,
    /// The day exception expiry is judged against (normally [`Date::today`]).
    pub today: Date,
}

impl fmt::Debug for AuditInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditInput")
            .field("listeners", &self.listeners.len())
            .field("probes", &self.probes.len())
            .field("policy", &self.policy.is_some())
            .field("reachability", &self.reachability.is_some())
            .field("today", &self.today)
            .finish()
    }
}

impl<'a> AuditInput<'a> {
    /// Listeners only; no probes, policy or firewall; today's date.
    pub fn new(listeners: &'a [Listener]) -> Self {
        AuditInput {
            listeners,
            probes: &[],
            policy: None,
            reachability: None,
            today: Date::today(),
        }
    }
}

/// The probe report for a listener.
fn probe_for<'a>(probes: &'a [Report], l: &Listener) -> Option<&'a Report> {
    let want = match l.proto {
        Protocol::Udp => Transport::Udp,
        _ => Transport::Tcp,
    };
    probes.iter().find(|r| {
        r.proto == want
            && r.addr.port() == l.port
            && r.error.is_none()
            && (l.address.is_unspecified()
                || crate::policy::canonical(r.addr.ip()) == crate::policy::canonical(l.address))
    })
}

/// What the port usually is, from the catalog: the curated note's service, or IANA's name.
fn usual_service(l: &Listener) -> Option<&'static str> {
    let port = Port::new(l.port);
    portolan_catalog::note(port, l.proto)
        .map(|n| n.service)
        .or_else(|| portolan_catalog::service_name(port, l.proto))
}

/// Names that mean the same service for PA008 (`https` is `http` in TLS, aliases count).
fn same_service(found: &str, l: &Listener) -> bool {
    let f = found.to_ascii_lowercase();
    let f = f.trim_start_matches("ssl/").trim_start_matches("tls/");
    let port = Port::new(l.port);
    let mut names: Vec<&str> = Vec::new();
    if let Some(n) = portolan_catalog::note(port, l.proto) {
        names.push(n.service);
        names.extend(n.aliases.iter().copied());
    }
    names.extend(portolan_catalog::service_name(port, l.proto));
    names.iter().any(|n| {
        let n = n.to_ascii_lowercase();
        n == f
            || n.starts_with(f)
            || f.starts_with(n.as_str())
            || (f == "http" && n.contains("http"))
    })
}

struct Ctx<'a> {
    l: &'a Listener,
    verdict: Option<Verdict>,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn push(
        &mut self,
        id: &'static str,
        severity: Severity,
        title: String,
        detail: String,
        fix: String,
    ) {
        self.out.push(Finding {
            id,
            severity,
            title,
            detail,
            fix,
            socket: Some(SocketRef {
                proto: self.l.proto,
                addr: self.l.address,
                port: self.l.port,
            }),
            owner: Some(self.l.owner.clone()),
            accepted: None,
        });
    }

    /// An exposure finding: raised when the firewall lets outsiders in, noted when blocked.
    fn exposure(
        &mut self,
        id: &'static str,
        severity: Severity,
        title: String,
        detail: String,
        fix: String,
    ) {
        let (severity, detail) = match &self.verdict {
            Some(Verdict::Open) => (
                severity.raised(),
                format!("{detail} The live firewall lets outside connections in (severity raised)."),
            ),
            Some(Verdict::Blocked) => (
                severity,
                format!("{detail} The live firewall blocks outside connections for now; the service is still bound where the firewall is its only guard."),
            ),
            Some(Verdict::Unknown(why)) => (severity, format!("{detail} Firewall verdict unknown: {}.", esc(why))),
            None => (severity, detail),
        };
        self.push(id, severity, title, detail, fix);
    }
}

fn where_bound(l: &Listener) -> &'static str {
    if l.address.is_unspecified() {
        "on all interfaces"
    } else {
        "on a network address"
    }
}

fn check_sensitive(c: &mut Ctx<'_>, name: Option<&str>, probe_named: bool) {
    let l = c.l;
    if l.is_loopback() {
        return;
    }
    let known = match name {
        Some(n) => rules::sensitive_by_name(n),
        None => None,
    }
    .or_else(|| {
        if probe_named {
            None
        } else {
            rules::sensitive_by_port(l.port)
        }
    });
    let note = portolan_catalog::note(Port::new(l.port), l.proto)
        .filter(|n| n.exposure == Advice::Never && !probe_named)
        .filter(|n| rules::cleartext_login(n.service).is_none());
    let (kind, fix, risk) = match (known, note) {
        (Some(s), _) => (s.kind.to_owned(), s.fix.to_owned(), String::new()),
        (None, Some(n)) => (
            format!("{} ({})", n.service, n.title),
            format!("bind it to 127.0.0.1 in its configuration, or firewall the port: `nft add rule inet filter input {} dport {} drop`", l.proto, l.port),
            format!(" {}", n.risk),
        ),
        (None, None) => return,
    };
    let (id, sev) = if l.address.is_unspecified() {
        ("PA001-sensitive-on-all-interfaces", Severity::High)
    } else {
        ("PA002-sensitive-on-network-address", Severity::Medium)
    };
    c.exposure(
        id,
        sev,
        format!("{kind} listening {} ({})", where_bound(l), l.label()),
        format!(
            "{} listens on {}; a {kind} should never face an untrusted network.{risk}",
            l.owner_label(),
            l.label()
        ),
        fix,
    );
}

fn check_cleartext(c: &mut Ctx<'_>, name: Option<&str>, probe: Option<&Report>) {
    let l = c.l;
    if l.is_loopback() {
        return;
    }
    let Some((svc, high, fix)) = name.and_then(rules::cleartext_login) else {
        return;
    };
    let starttls = probe.and_then(|p| p.tls.as_ref()).is_some();
    let (sev, extra) = match (high, starttls) {
        (true, _) => (Severity::High, ""),
        (false, false) => (Severity::Medium, ""),
        (false, true) => (Severity::Low, " It offers STARTTLS, but clients may still log in before upgrading; make TLS mandatory."),
    };
    c.exposure(
        "PA003-cleartext-login",
        sev,
        format!("{svc} sends logins in clear text ({})", l.label()),
        format!("{} serves {svc} on {}; passwords cross the network readable by anyone on the path.{extra}", l.owner_label(), l.label()),
        fix.to_owned(),
    );
}

fn check_probe(c: &mut Ctx<'_>, probe: &Report) {
    let l = c.l;
    let Some(http) = &probe.http else { return };
    if http.frameworks.iter().any(|f| f == "Werkzeug debugger") {
        let sev = if l.is_loopback() {
            Severity::Medium
        } else {
            Severity::Critical
        };
        c.exposure(
            "PA005-debugger-exposed",
            sev,
            format!("Werkzeug interactive debugger answers on {}", l.label()),
            format!("{} serves a Flask/Werkzeug app in debug mode: its debugger runs Python code for whoever reaches it (or guesses its PIN).", l.owner_label()),
            "turn debug mode off (no `debug=True`, `FLASK_DEBUG=0`) and serve the app with a production server (gunicorn); for development bind it to 127.0.0.1".into(),
        );
    }
    if http.status == 401 && probe.tls.is_none() && !l.is_loopback() {
        c.exposure(
            "PA004-http-login-without-tls",
            Severity::Medium,
            format!("HTTP asks for credentials without TLS ({})", l.label()),
            format!("{} answers 401 (authentication required) in clear HTTP; credentials sent to it can be read on the path.", l.owner_label()),
            "serve it over HTTPS (a TLS listener or a reverse proxy with a certificate) and stop answering in clear, or bind it to 127.0.0.1".into(),
        );
    }
}

fn check_identity(c: &mut Ctx<'_>, probe: Option<&Report>) {
    let l = c.l;
    let id = probe.and_then(|p| p.identity.as_ref());
    if let Some(id) = id {
        if usual_service(l).is_some() && !same_service(&id.service, l) {
            let sev = if l.is_loopback() {
                Severity::Info
            } else {
                Severity::Medium
            };
            let usual = usual_service(l).unwrap_or("?");
            c.push(
                "PA008-unexpected-service",
                sev,
                format!("{} answers where {usual} is expected ({})", esc(&id.service), l.label()),
                format!("{} listens on {}, a port registered for {usual}, and the probe identified {}{}. Scanners, firewalls and people will assume {usual}.", l.owner_label(), l.label(), esc(&id.service), id.product.as_deref().map(|p| format!(" ({})", esc(p))).unwrap_or_default()),
                format!("confirm it is intended; otherwise stop it (`portolan kill {}`) or move it to a port of its own", l.port_arg()),
            );
        }
        return;
    }
    if l.is_loopback() || usual_service(l).is_some() {
        return;
    }
    let banner = probe
        .and_then(|p| p.banner.as_deref())
        .map(|b| {
            format!(
                " It said: \"{}\".",
                esc(&b.chars().take(80).collect::<String>())
            )
        })
        .unwrap_or_default();
    c.exposure(
        "PA006-unknown-service",
        Severity::Low,
        format!("unknown service reachable {} ({})", where_bound(l), l.label()),
        format!("{} listens on {}, a port no registry or probe names.{banner}", l.owner_label(), l.label()),
        format!("find out what it is (`portolan who {port}`, `portolan probe 127.0.0.1:{port}`); stop it, bind it to 127.0.0.1, or allow it in the policy", port = l.port_arg()),
    );
}

fn check_exe(c: &mut Ctx<'_>) {
    let l = c.l;
    if !l.owner.exe_deleted {
        return;
    }
    let sev = if l.is_loopback() {
        Severity::Medium
    } else {
        Severity::High
    };
    let pid = l
        .owner
        .pid
        .map_or_else(|| "PID".to_owned(), |p| p.to_string());
    let restart = l.owner.unit.as_deref().map_or_else(
        || format!("restart pid {pid} from the installed binary"),
        |u| format!("`systemctl restart {}`", esc(u)),
    );
    c.push(
        "PA007-executable-deleted",
        sev,
        format!("listener runs a deleted or replaced executable ({})", l.label()),
        format!("{} runs {}, which no longer exists on disk as it started: an upgrade that was not followed by a restart, or a program that removed itself (a classic sign of an intruder).", l.owner_label(), l.owner.exe.as_deref().map_or_else(|| "an unreadable path".to_string(), esc)),
        format!("if a package upgrade replaced it: {restart}; if not, keep a copy for analysis (`cp /proc/{pid}/exe /root/evidence-{pid}`) and investigate before killing it"),
    );
}

fn check_firewall(c: &mut Ctx<'_>) {
    let l = c.l;
    match c.verdict {
        Some(Verdict::Open) => c.push(
            "PA010-open-to-outside",
            Severity::Info,
            format!("the firewall lets outside connections reach {}", l.label()),
            format!("{} on {} is reachable from other hosts under the live ruleset.", l.owner_label(), l.label()),
            format!("if only some hosts need it, allow only them (`portolan firewall plan --policy FILE` with `from = [...]`, or `nft add rule inet filter input {} dport {} ip saddr != NET drop`)", l.proto, l.port),
        ),
        Some(Verdict::Blocked) => c.push(
            "PA011-firewall-blocks",
            Severity::Info,
            format!("the firewall blocks outside connections to {}", l.label()),
            format!("{} listens {} but the live ruleset drops inbound connections to it.", l.owner_label(), where_bound(l)),
            "nothing while the rule stays; binding the service to 127.0.0.1 would remove the exposure even if the firewall changes".into(),
        ),
        _ => {}
    }
}

fn check_policy(c: &mut Ctx<'_>, policy: &Policy) {
    let l = c.l;
    if policy.settings.avoid_default_ports.contains(&l.port) {
        c.push(
            "PA009-default-port",
            Severity::Low,
            format!("service on its default port {} where the policy asks otherwise", l.port),
            format!("{} listens on {}; the policy's `avoid_default_ports` lists this port.", l.owner_label(), l.label()),
            "move the service to another port in its configuration, then update the policy's [[allow]] entry".into(),
        );
    }
    if l.is_loopback() && policy.settings.allow_loopback {
        return;
    }
    let covering: Vec<_> = policy.allow.iter().filter(|r| r.covers_port(l)).collect();
    let stanza = format!(
        "[[allow]] port = {} proto = \"{}\" address = [\"{}\"]",
        l.port, l.proto, l.address
    );
    if covering.is_empty() {
        let stop = l.owner.unit.as_deref().map_or_else(
            || format!("`portolan kill {}`", l.port_arg()),
            |u| format!("`systemctl disable --now {}`", esc(u)),
        );
        c.exposure(
            "PP001-not-allowed",
            Severity::High,
            format!("listener not allowed by the policy ({})", l.label()),
            format!(
                "{} listens on {}; no [[allow]] entry covers {}/{}.",
                l.owner_label(),
                l.label(),
                l.port,
                l.proto
            ),
            format!("stop it ({stop}) or, if it belongs, add `{stanza}` to the policy"),
        );
        return;
    }
    let addr_ok: Vec<_> = covering.iter().filter(|r| r.allows_addr(l)).collect();
    if addr_ok.is_empty() {
        let allowed: Vec<String> = covering
            .iter()
            .flat_map(|r| r.addresses.iter().map(ToString::to_string))
            .collect();
        c.exposure(
            "PP002-address-not-allowed",
            Severity::High,
            format!(
                "listener on an address the policy does not allow ({})",
                l.label()
            ),
            format!(
                "{} listens on {}; the policy allows {}/{} only on {} (line {}).",
                l.owner_label(),
                l.label(),
                l.port,
                l.proto,
                allowed.join(", "),
                covering[0].line
            ),
            format!(
                "bind the service to {} in its configuration, or widen the entry's `address`",
                allowed.join(" or ")
            ),
        );
        return;
    }
    let mut first = None;
    for r in &addr_ok {
        match r.owner.check(l) {
            OwnerCheck::Matches => return,
            other => {
                first.get_or_insert((r.line, other));
            }
        }
    }
    let Some((line, check)) = first else { return };
    let (sev, title, detail) = match check {
        OwnerCheck::Differs(field, want, found) => (
            Severity::High,
            format!("listener owned by another {field} than the policy allows ({})", l.label()),
            format!("{} listens on {}; the policy (line {line}) wants {field} `{}`, found `{}`.", l.owner_label(), l.label(), esc(&want), esc(&found)),
        ),
        OwnerCheck::Unknown(field) => (
            Severity::Low,
            format!("owner of {} could not be verified", l.label()),
            format!("the policy (line {line}) constrains the {field}, which could not be read (run as root)."),
        ),
        OwnerCheck::Matches => return,
    };
    c.push("PP003-owner-mismatch", sev, title, detail, "find who owns it (`portolan who PORT`); stop the impostor, or correct the entry's process/exe/user/unit".replace("PORT", &l.port_arg()));
}

fn policy_wide(policy: &Policy, listeners: &[Listener], today: Date, out: &mut Vec<Finding>) {
    for r in policy.allow.iter().filter(|r| r.required) {
        if listeners.iter().any(|l| r.matches(l)) {
            continue;
        }
        let addrs: Vec<String> = r.addresses.iter().map(ToString::to_string).collect();
        out.push(Finding {
            id: "PP004-required-missing",
            severity: Severity::Medium,
            title: format!("required listener {} is missing", r.port_label()),
            detail: format!("the policy (line {}) requires a listener on {} at {}; none matches (nothing listens there, or with another address or owner).", r.line, r.port_label(), addrs.join(", ")),
            fix: format!("start the service that should listen on {} (e.g. `systemctl start UNIT`) and check its bind address", r.port_label()),
            socket: None,
            owner: None,
            accepted: None,
        });
    }
    for e in policy.exceptions.iter().filter(|e| e.expired(today)) {
        out.push(Finding {
            id: "PP005-exception-expired",
            severity: Severity::Medium,
            title: format!("policy exception for {} expired on {}", crate::policy::port_label(e.proto, e.ports), e.expires.map(|d| d.to_string()).unwrap_or_default()),
            detail: format!("the exception at line {} (\"{}\") no longer applies; findings it accepted are reported again.", e.line, esc(&e.reason)),
            fix: "fix what it excused and delete the exception, or renew it with a new `expires` date and an up-to-date reason".into(),
            socket: None,
            owner: None,
            accepted: None,
        });
    }
}

/// Marks `l`'s findings that an exception of `policy` in force on `today` accepts.
fn apply_exceptions(policy: &Policy, today: Date, l: &Listener, out: &mut [Finding]) {
    for f in out.iter_mut() {
        if let Some(e) = policy
            .exceptions
            .iter()
            .find(|e| !e.expired(today) && e.matches(l) && e.covers_rule(f.id))
        {
            let until = e.expires.map(|d| format!(" until {d}")).unwrap_or_default();
            f.accepted = Some(format!("policy line {}{until}: {}", e.line, esc(&e.reason)));
        }
    }
}

/// For a watcher's alerts: whether a change to `l` concerns the policy. A listener that
/// `closed` matters when the policy requires it; any other listener when the policy does not
/// allow it (a PP finding on its socket that no exception accepts).
pub fn outside_policy(policy: &Policy, l: &Listener, closed: bool) -> bool {
    if closed {
        return policy
            .allow
            .iter()
            .any(|r| r.required && r.covers_port(l) && r.allows_addr(l));
    }
    // The policy's part of [`audit`] for this one listener: its policy findings, and the
    // exceptions that accept them.
    let mut c = Ctx {
        l,
        verdict: None,
        out: Vec::new(),
    };
    check_policy(&mut c, policy);
    apply_exceptions(policy, Date::today(), l, &mut c.out);
    c.out
        .iter()
        .any(|f| f.id.starts_with("PP") && f.accepted.is_none())
}

/// Judges every listener and the policy as a whole. Findings come most severe first.
pub fn audit(input: &AuditInput<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for l in input.listeners {
        let verdict = if l.is_loopback() {
            None
        } else {
            input
                .reachability
                .map(|r| r.inbound(l.proto, l.socket_addr()))
        };
        let mut c = Ctx {
            l,
            verdict,
            out: Vec::new(),
        };
        let probe = probe_for(input.probes, l);
        let probe_name = probe
            .and_then(|p| p.identity.as_ref())
            .map(|i| i.service.as_str());
        let title_name = probe
            .and_then(|p| p.http.as_ref())
            .and_then(|h| h.title.as_deref())
            .filter(|t| t.contains("Jupyter"))
            .map(|_| "jupyter");
        let name = title_name.or(probe_name).or_else(|| usual_service(l));
        check_sensitive(&mut c, name, probe_name.is_some() || title_name.is_some());
        check_cleartext(&mut c, name, probe);
        if let Some(p) = probe {
            check_probe(&mut c, p);
        }
        check_identity(&mut c, probe);
        check_exe(&mut c);
        if let Some(policy) = input.policy {
            check_policy(&mut c, policy);
        }
        check_firewall(&mut c);
        if let Some(policy) = input.policy {
            apply_exceptions(policy, input.today, l, &mut c.out);
        }
        out.append(&mut c.out);
    }
    if let Some(policy) = input.policy {
        policy_wide(policy, input.listeners, input.today, &mut out);
    }
    sort(&mut out);
    out
}

/// The order findings are shown in: most severe first, then by socket (port, protocol,
/// address), then by rule id. `audit` returns them so; a caller that adds findings of its
/// own (the comparison with a scan) sorts the whole list again with this.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| {
                a.socket
                    .map(|s| (s.port, s.proto, s.addr))
                    .cmp(&b.socket.map(|s| (s.port, s.proto, s.addr)))
            })
            .then_with(|| a.id.cmp(b.id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_parse_and_raise() {
        assert!(Severity::Info < Severity::Low && Severity::High < Severity::Critical);
        assert_eq!("HIGH".parse::<Severity>(), Ok(Severity::High));
        assert!("severe\u{1b}"
            .parse::<Severity>()
            .unwrap_err()
            .contains("\\x1b"));
        assert_eq!(Severity::Medium.raised(), Severity::High);
        assert_eq!(Severity::Critical.raised(), Severity::Critical);
        assert_eq!(
            serde_json::to_string(&Severity::Critical).unwrap(),
            "\"critical\""
        );
    }

    #[test]
    fn outside_policy_agrees_with_the_audit() {
        let policy = Policy::parse(
            "p.toml",
            "[[allow]]\nport = 22\naddress = \"any\"\n\n[[exception]]\nport = 8080\nreason = \"lab box\"\n",
        )
        .unwrap();
        let on = |port: u16| {
            Listener::new(
                Protocol::Tcp,
                std::net::SocketAddr::from(([0, 0, 0, 0], port)),
                portolan_core::Owner::default(),
            )
        };
        let listeners = [on(22), on(8080), on(9090)];
        let found = audit(&AuditInput {
            policy: Some(&policy),
            ..AuditInput::new(&listeners)
        });
        for l in &listeners {
            let by_audit = found.iter().any(|f| {
                f.id.starts_with("PP")
                    && f.socket.is_some_and(|s| s.port == l.port)
                    && f.accepted.is_none()
            });
            assert_eq!(outside_policy(&policy, l, false), by_audit, "{}", l.port);
        }
        let outside: Vec<u16> = listeners
            .iter()
            .filter(|l| outside_policy(&policy, l, false))
            .map(|l| l.port)
            .collect();
        assert_eq!(outside, [9090]);
    }
}
