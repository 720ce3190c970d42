//! Reachability from outside, for real: what a scan of this host from another machine
//! reached, compared with what this host says it listens on.
//!
//! The scan is what `portolan scan --json` prints (`{"scan": {...}, "ports": [{"host",
//! "port", "proto", "state", ...}], "summary": {...}}`) or `--jsonl` (one port object a
//! line), read as core's [`ScanRecord`], the type the scanner writes. `host`, `port`,
//! `proto` and `state` are required; unknown keys are ignored.
//!
//! Rules:
//!
//! | id | severity | what |
//! |----|----------|------|
//! | PS001-reachable-but-local | critical | reached from outside, but every local listener on it is loopback-only, or the firewall was thought to block it |
//! | PS002-not-reached | info | listens on a non-loopback address, the scan tried it and did not reach it: the firewall works |
//! | PS003-reached-not-listening | high | reached from outside, but nothing here listens on it: NAT, forwarding, or another host answered |

use std::fmt;

use portolan_core::escape::for_terminal;
use portolan_core::{Protocol, ScanRecord};
use serde::Deserialize;

use crate::findings::{Finding, Reachability, Severity, SocketRef, Verdict};
use crate::listener::{Describe, Listener};

/// Largest scan text accepted, in bytes: what the loader reads of a file at most
/// ([`MAX_INPUT_BYTES`](crate::MAX_INPUT_BYTES)), for text that came another way.
#[allow(clippy::cast_possible_truncation)] // 256 MiB fits any usize this runs on
pub const MAX_SCAN_BYTES: usize = crate::load::MAX_INPUT_BYTES as usize;

/// One port of a scan: core's scan record, the type `portolan scan` writes (the service
/// detection details, which this comparison does not use, are skipped unread).
pub type ScanPort = ScanRecord;

/// Why a scan file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// 1-based line (the record's line for JSONL; the parser's line for JSON).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ScanError {}

#[derive(Deserialize)]
struct RawDoc {
    ports: Vec<ScanPort>,
}

fn err(line: usize, column: usize, message: String) -> ScanError {
    ScanError {
        line,
        column,
        message,
    }
}

/// What the record type leaves open: the comparison knows TCP and UDP only.
fn check(p: ScanPort, line: usize) -> Result<ScanPort, ScanError> {
    match p.proto {
        Protocol::Tcp | Protocol::Udp => Ok(p),
        other => Err(err(
            line,
            1,
            format!("`proto` = \"{other}\" is not tcp or udp"),
        )),
    }
}

fn json_err(e: &serde_json::Error) -> ScanError {
    err(
        e.line().max(1),
        e.column().max(1),
        for_terminal(&e.to_string()).into_owned(),
    )
}

/// Parses `portolan scan --json` or `--jsonl` output.
pub fn parse_scan(text: &str) -> Result<Vec<ScanPort>, ScanError> {
    if text.len() > MAX_SCAN_BYTES {
        return Err(err(
            1,
            1,
            format!(
                "the scan file is {} bytes; the limit is {MAX_SCAN_BYTES}",
                text.len()
            ),
        ));
    }
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(err(1, 1, "the scan file is empty".into()));
    }
    let is_doc = trimmed.starts_with('{')
        && serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.get("ports").is_some());
    if is_doc {
        let doc: RawDoc = serde_json::from_str(text).map_err(|e| json_err(&e))?;
        return doc.ports.into_iter().map(|p| check(p, 1)).collect();
    }
    if trimmed.starts_with('{') && !text.contains('\n') && !text.contains("\"host\"") {
        return Err(err(
            1,
            1,
            "this JSON has no `ports` list: is it the output of `portolan scan --json`?".into(),
        ));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: ScanPort = serde_json::from_str(line).map_err(|e| {
            let mut e2 = json_err(&e);
            e2.line = i + 1;
            e2.message = format!("not a `portolan scan --jsonl` record: {}", e2.message);
            e2
        })?;
        out.push(check(raw, i + 1)?);
    }
    Ok(out)
}

fn finding(
    id: &'static str,
    severity: Severity,
    p: &ScanPort,
    title: String,
    detail: String,
    fix: String,
    l: Option<&Listener>,
) -> Finding {
    Finding {
        id,
        severity,
        title,
        detail,
        fix,
        socket: Some(SocketRef {
            proto: p.proto,
            addr: l.map_or(p.host, |l| l.address),
            port: p.port,
        }),
        owner: l.map(|l| l.owner.clone()),
        accepted: None,
    }
}

/// Compares local listeners with a scan of this host made from another machine. Every port
/// in the scan is taken as a port of this host (scan only this host, or filter first). The
/// optional oracle says what the local firewall was believed to do.
pub fn compare(
    listeners: &[Listener],
    scan: &[ScanPort],
    firewall: Option<&dyn Reachability>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in scan.iter().filter(|p| p.is_open()) {
        let here: Vec<&Listener> = listeners
            .iter()
            .filter(|l| l.proto == p.proto && l.port == p.port)
            .collect();
        let target = format!("{} {}:{}", p.proto, p.host, p.port);
        if here.is_empty() {
            out.push(finding(
                "PS003-reached-not-listening",
                Severity::High,
                p,
                format!("reached from outside, but nothing here listens ({target})"),
                format!("the scan reached {target}, and no local socket listens on {}/{}: a NAT or port forward sends it elsewhere, a container runtime answers from another namespace, or another host answered for this address.", p.port, p.proto),
                format!("find who answers: check `nft list ruleset` / `iptables -t nat -S` for DNAT to port {}, container port mappings (`docker ps`), and whether the scanned address belongs to this host", p.port),
                None,
            ));
            continue;
        }
        let exposed: Vec<&&Listener> = here.iter().filter(|l| !l.is_loopback()).collect();
        if exposed.is_empty() {
            let l = here[0];
            out.push(finding(
                "PS001-reachable-but-local",
                Severity::Critical,
                p,
                format!("reachable from outside, but this host listens on loopback only ({target})"),
                format!("{} listens only on {} here, yet the scan reached {target}: something forwards outside traffic to it (a proxy, a port forward, route_localnet) or another host answers.", l.owner_label(), l.label()),
                format!("look for what forwards port {}: `nft list ruleset`, `iptables -t nat -S`, `sysctl net.ipv4.conf.all.route_localnet`, proxies (`portolan who {}`)", p.port, l.port_arg()),
                Some(l),
            ));
            continue;
        }
        if let Some(fw) = firewall {
            for l in exposed {
                if fw.inbound(l.proto, l.socket_addr()) == Verdict::Blocked {
                    out.push(finding(
                        "PS001-reachable-but-local",
                        Severity::Critical,
                        p,
                        format!("reachable from outside, but the firewall was thought to block it ({target})"),
                        format!("{} listens on {}; the live ruleset says inbound connections are blocked, yet the scan reached {target}: another rule, table or path lets them in.", l.owner_label(), l.label()),
                        "list every table (`nft list ruleset`, `iptables-save`): Docker, ufw or firewalld rules may accept earlier in another chain; fix the rule that lets it in".into(),
                        Some(l),
                    ));
                }
            }
        }
    }
    for l in listeners.iter().filter(|l| !l.is_loopback()) {
        let tried: Vec<&ScanPort> = scan
            .iter()
            .filter(|p| p.proto == l.proto && p.port == l.port)
            .collect();
        if !tried.is_empty() && tried.iter().all(|p| !p.is_open()) {
            let p = tried[0];
            out.push(finding(
                "PS002-not-reached",
                Severity::Info,
                p,
                format!("listens {}, not reached from outside ({})", if l.address.is_unspecified() { "on all interfaces" } else { "on a network address" }, l.label()),
                format!("{} listens on {}; the scan found {}:{} {}: the firewall (or the network) keeps outsiders away.", l.owner_label(), l.label(), p.host, p.port, p.state),
                "nothing needed; binding it to 127.0.0.1 would keep it closed even if the firewall changes".into(),
                Some(l),
            ));
        }
    }
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.socket.map(|s| s.port).cmp(&b.socket.map(|s| s.port)))
    });
    out
}
