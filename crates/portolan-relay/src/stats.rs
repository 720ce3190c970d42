//! Per-rule counters, shared by every task of a rule, kept across reloads (by rule name),
//! and rendered as Prometheus text for `--metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a connection (or UDP datagram) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is not in `allow`.
    NotAllowed,
    /// `max_conns` reached.
    MaxConns,
    /// `max_conns_per_source` reached.
    MaxPerSource,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::MaxConns => "max_conns",
            Refusal::MaxPerSource => "max_conns_per_source",
        }
    }
}

/// One rule's counters. All relaxed atomics: they are read only for reports.
#[derive(Debug, Default)]
pub struct RuleStats {
    /// Connections accepted and relayed (TCP) or sessions opened (UDP).
    pub accepted: AtomicU64,
    /// Open now (connections or sessions).
    pub active: AtomicU64,
    pub refused_not_allowed: AtomicU64,
    pub refused_max_conns: AtomicU64,
    pub refused_per_source: AtomicU64,
    /// The target refused, was unreachable or did not answer in time.
    pub target_failed: AtomicU64,
    /// Other errors (a reset in the middle, accept errors, EMFILE).
    pub errors: AtomicU64,
    /// Bytes from clients to the target.
    pub bytes_up: AtomicU64,
    /// Bytes from the target to clients.
    pub bytes_down: AtomicU64,
    /// UDP sessions evicted by the cap (least recently used).
    pub udp_evicted: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_closed: AtomicU64,
}

impl RuleStats {
    pub fn refused(&self, why: Refusal) {
        let c = match why {
            Refusal::NotAllowed => &self.refused_not_allowed,
            Refusal::MaxConns => &self.refused_max_conns,
            Refusal::MaxPerSource => &self.refused_per_source,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Prometheus label value escaping (backslash, quote, newline).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The metric families of every rule, in the text exposition format.
pub fn render(rules: &[(String, &str, &RuleStats)]) -> String {
    let mut out = String::new();
    let g = RuleStats::get;
    let mut family =
        |name: &str, kind: &str, help: &str, f: &dyn Fn(&RuleStats) -> Vec<(&'static str, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (rule, proto, s) in rules {
                for (extra, v) in f(s) {
                    let _ = writeln!(
                        out,
                        "{name}{{rule=\"{}\",proto=\"{proto}\"{extra}}} {v}",
                        label(rule)
                    );
                }
            }
        };
    family(
        "portolan_forward_connections_total",
        "counter",
        "Connections (TCP) or sessions (UDP) of each rule, by result.",
        &|s| {
            vec![
                (",result=\"accepted\"", g(&s.accepted)),
                (",result=\"not_allowed\"", g(&s.refused_not_allowed)),
                (",result=\"max_conns\"", g(&s.refused_max_conns)),
                (",result=\"max_conns_per_source\"", g(&s.refused_per_source)),
                (",result=\"target_failed\"", g(&s.target_failed)),
            ]
        },
    );
    family(
        "portolan_forward_active",
        "gauge",
        "Connections (TCP) or sessions (UDP) open now.",
        &|s| vec![("", g(&s.active))],
    );
    family(
        "portolan_forward_bytes_total",
        "counter",
        "Bytes relayed, up (client to target) and down.",
        &|s| {
            vec![
                (",direction=\"up\"", g(&s.bytes_up)),
                (",direction=\"down\"", g(&s.bytes_down)),
            ]
        },
    );
    family(
        "portolan_forward_errors_total",
        "counter",
        "Connections ended by an error other than the target failing.",
        &|s| vec![("", g(&s.errors))],
    );
    family(
        "portolan_forward_closed_total",
        "counter",
        "Connections closed by the idle timeout, and UDP sessions evicted by the cap.",
        &|s| {
            vec![
                (",why=\"idle\"", g(&s.idle_closed)),
                (",why=\"evicted\"", g(&s.udp_evicted)),
            ]
        },
    );
    out
}
