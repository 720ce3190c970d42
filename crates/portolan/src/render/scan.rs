//! `portolan scan` for people: one table per host at the end of the scan, the progress
//! line on stderr, and the service name as a person should read it (shared with the nmap
//! XML and greppable writers).

use std::io::{self, Write};

use portolan_core::{PortState, ServiceSource};
use portolan_scan::{HostSummary, PortRecord, Progress, SessionSummary};
use serde::Serialize;

use super::{esc, write_table, Cell, Report, Style, BOLD, DIM, GREEN, YELLOW};

/// The service of a port as a person reads it: a service detection found inside TLS is
/// named as such (`https`, `ssl/redis`), and with `detection` a name that only came from
/// the port table gets a `?` (nmap's `http?`): it was guessed, not heard.
pub fn shown_service(rec: &PortRecord, detection: bool) -> Option<String> {
    match &rec.tls {
        Some(t) if t.starttls.is_none() && rec.service_source != Some(ServiceSource::PortTable) => {
            rec.service.as_deref().map(tls_wrapped)
        }
        _ => rec.service_guess_marked(detection),
    }
}

/// The name of a service spoken inside TLS (the probe engine's naming).
pub fn tls_wrapped(name: &str) -> String {
    portolan_probe::tls_name(name)
}

/// Whether the port's service was found inside TLS (nmap's `tunnel="ssl"`).
pub fn in_tls(rec: &PortRecord) -> bool {
    rec.service_source == Some(ServiceSource::Probe)
        && rec.tls.as_ref().is_some_and(|t| t.starttls.is_none())
}

/// Product, version and extra information as one text: `OpenSSH 9.2p1 (protocol 2.0)`.
pub fn version_text(rec: &PortRecord) -> String {
    portolan_probe::version_text(
        rec.product.as_deref(),
        rec.version.as_deref(),
        rec.info.as_deref(),
    )
}

/// The progress line on stderr (redrawn in place).
// Counts far below 2^52: f64 is exact for a progress line.
#[allow(clippy::cast_precision_loss)]
pub fn progress_line(p: &Progress) -> String {
    let pct = if p.total == 0 {
        100.0
    } else {
        p.done as f64 * 100.0 / p.total as f64
    };
    let eta = if p.rate > 0.0 {
        (p.total - p.done) as f64 / p.rate
    } else {
        0.0
    };
    format!(
        "\r\x1b[2K{:>5.1}%  {}/{} ports  {} open  {:.0} probes/s  {} in flight  ETA {:.0}s",
        pct, p.done, p.total, p.open, p.rate, p.in_flight, eta
    )
}

fn state_color(s: PortState) -> &'static str {
    match s {
        PortState::Open => GREEN,
        PortState::Filtered => YELLOW,
        PortState::Closed => DIM,
    }
}

/// The groups of a host not listed port by port: `100 closed (conn-refused: 100)`.
pub fn not_shown(h: &HostSummary) -> Vec<String> {
    h.not_shown
        .iter()
        .map(|g| {
            let reasons: Vec<String> = g.reasons.iter().map(|(r, c)| format!("{r}: {c}")).collect();
            format!("{} {} ({})", g.count, g.state, reasons.join(", "))
        })
        .collect()
}

/// The hosts the reports list one by one, and how many others did not answer at all. A
/// scan of several hosts lists those that answered and counts the silent ones (so `-Pn`
/// on a /16 is not 65,534 blocks; nmap leaves down hosts out of its reports too); a scan
/// of one host lists it whatever it did. JSON and JSON Lines are not summarised: they
/// carry every port record asked for.
pub fn shown_hosts(hosts: &[HostSummary]) -> (Vec<&HostSummary>, usize) {
    if hosts.len() == 1 {
        return (hosts.iter().collect(), 0);
    }
    let shown: Vec<&HostSummary> = hosts.iter().filter(|h| h.up).collect();
    let silent = hosts.len() - shown.len();
    (shown, silent)
}

/// A count with thousands separators: `65,534`.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The end of a scan, for the table: every host, then one line of totals.
#[derive(Debug, Serialize)]
pub struct ScanTable<'a> {
    pub hosts: &'a [HostSummary],
    pub summary: &'a SessionSummary,
    /// Service detection ran (adds the VERSION column and marks guessed names).
    pub detection: bool,
}

impl Report for ScanTable<'_> {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        let (shown, silent) = shown_hosts(self.hosts);
        for h in shown {
            let status = if h.up { "up" } else { "no answer" };
            let rtt = h
                .avg_rtt
                .map(|d| format!(", rtt {:.1} ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_default();
            let name = h
                .name
                .as_ref()
                .map(|n| format!(" ({})", esc(&n.name)))
                .unwrap_or_default();
            writeln!(
                w,
                "{}{name}  {status}{rtt}",
                style.paint(BOLD, &h.host.to_string())
            )?;
            let mut listed: Vec<&PortRecord> = h.ports.iter().collect();
            listed.sort_by_key(|r| (r.state, r.port));
            if !listed.is_empty() {
                let rows: Vec<Vec<Cell>> = listed
                    .iter()
                    .map(|r| {
                        let mut row = vec![
                            Cell::plain(format!("{}/{}", r.port, r.proto)),
                            Cell::colored(r.state.as_str(), state_color(r.state)),
                            Cell::plain(
                                shown_service(r, self.detection)
                                    .map(|s| esc(&s).into_owned())
                                    .unwrap_or_default(),
                            ),
                            Cell::plain(r.reason.as_ref()),
                            Cell::plain(
                                r.rtt_ms.map(|ms| format!("{ms:.1} ms")).unwrap_or_default(),
                            ),
                        ];
                        if self.detection {
                            row.push(Cell::plain(esc(&version_text(r)).into_owned()));
                        }
                        row
                    })
                    .collect();
                let mut headers = vec!["PORT", "STATE", "SERVICE", "REASON", "RTT"];
                if self.detection {
                    headers.push("VERSION");
                }
                write_table(w, style, &headers, &rows, "  ")?;
            }
            let hidden = not_shown(h);
            if !hidden.is_empty() {
                writeln!(w, "  not shown: {}", hidden.join("; "))?;
            }
            writeln!(w)?;
        }
        if silent > 0 {
            let what = if silent == 1 { "host" } else { "hosts" };
            writeln!(
                w,
                "{} {what} did not answer (every port filtered)\n",
                grouped(silent)
            )?;
        }
        let s = self.summary;
        writeln!(
            w,
            "{}",
            style.paint(
                DIM,
                &format!(
                    "{}scanned {} host(s) x {} port(s) in {:.2}s: {} up, {} open port(s), {} probes",
                    if s.interrupted { "interrupted: " } else { "" },
                    s.hosts,
                    s.ports,
                    s.elapsed.as_secs_f64(),
                    s.hosts_up,
                    s.open,
                    s.probes
                )
            )
        )
    }

    fn found(&self) -> bool {
        self.summary.open > 0
    }
}
