//! nmap's greppable format (`-oG`): one `Host:` line for the status and one for the ports
//! of each host.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use portolan_scan::HostSummary;

use super::scan::{shown_hosts, shown_service, version_text};

/// A host's name (names are plain host-name characters: checked at the source, see
/// `rdns::plausible_name` and the target parser).
fn gname(h: &HostSummary) -> &str {
    h.name.as_ref().map_or("", |n| n.name.as_str())
}

/// The greppable text of a scan; `args` is the command line; `interrupted` says how far a
/// scan that stopped early got.
pub fn document(
    hosts: &[HostSummary],
    args: &str,
    start: SystemTime,
    interrupted: Option<&str>,
) -> String {
    let mut g = format!(
        "# portolan {} scan initiated {} as: {}\n",
        env!("CARGO_PKG_VERSION"),
        start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        args.replace('\n', " ")
    );
    // Hosts that did not answer are counted at the end, not listed (nmap's way).
    for h in shown_hosts(hosts).0 {
        let _ = writeln!(
            g,
            "Host: {} ({})\tStatus: {}",
            h.host,
            gname(h),
            if h.up { "Up" } else { "Down" }
        );
        let ports: Vec<String> = h
            .ports
            .iter()
            .map(|r| {
                // With --probe, what answered: service and version, as nmap writes them.
                let service = shown_service(r, false).unwrap_or_default();
                format!(
                    "{}/{}/{}//{}//{}/",
                    r.port,
                    r.state,
                    r.proto,
                    service.replace('/', "|"),
                    version_text(r).replace('/', "|")
                )
            })
            .collect();
        let ignored: Vec<String> = h
            .not_shown
            .iter()
            .map(|n| format!("{} ({})", n.state, n.count))
            .collect();
        let _ = write!(
            g,
            "Host: {} ({})\tPorts: {}",
            h.host,
            gname(h),
            ports.join(", ")
        );
        if !ignored.is_empty() {
            let _ = write!(g, "\tIgnored State: {}", ignored.join(", "));
        }
        g.push('\n');
    }
    let _ = write!(
        g,
        "# portolan done: {} IP address(es) ({} host(s) up) scanned",
        hosts.len(),
        hosts.iter().filter(|h| h.up).count()
    );
    if let Some(why) = interrupted {
        let _ = write!(g, " ({})", why.replace('\n', " "));
    }
    g.push('\n');
    g
}
