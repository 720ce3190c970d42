//! nmap's XML output format (xmloutputversion 1.05), valid against nmap's own DTD
//! (`nmap.dtd`) except for one liberty: `scanner="portolan"`. So ndiff, Metasploit's
//! db_import and other nmap consumers read portolan's results.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portolan_core::{Port, PortRange, PortSpec, ServiceSource};
use portolan_scan::HostSummary;

use super::scan::{in_tls, shown_hosts};
use super::xml::escape as xa;

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The document for a scan of `hosts` over `ports`; `args` is the command line. A scan
/// that stopped early (`interrupted` says how far it got) is still a complete, valid
/// document: its hosts as far as the scan went, and `exit="error"` with the reason.
pub fn document(
    hosts: &[HostSummary],
    ports: &[Port],
    args: &str,
    start: SystemTime,
    elapsed: Duration,
    interrupted: Option<&str>,
) -> String {
    let mut x = String::new();
    let spec = PortSpec::from_ranges(ports.iter().map(|p| PortRange::single(*p)).collect());
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE nmaprun>\n");
    let _ = writeln!(
        x,
        "<nmaprun scanner=\"portolan\" args=\"{}\" start=\"{}\" version=\"{}\" xmloutputversion=\"1.05\">",
        xa(args),
        epoch(start),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        x,
        "<scaninfo type=\"connect\" protocol=\"tcp\" numservices=\"{}\" services=\"{spec}\"/>",
        ports.len()
    );
    x.push_str("<verbose level=\"0\"/>\n<debugging level=\"0\"/>\n");
    let end = epoch(start + elapsed);
    let exit = interrupted.map_or_else(
        || "success".to_string(),
        |why| format!("error\" errormsg=\"{}", xa(why)),
    );
    let up = hosts.iter().filter(|h| h.up).count();
    // Hosts that did not answer are counted in runstats, not listed (nmap's way).
    for h in shown_hosts(hosts).0 {
        let (state, reason) = if h.up {
            if h.open > 0 {
                ("up", "syn-ack")
            } else {
                ("up", "conn-refused")
            }
        } else {
            ("down", "no-response")
        };
        let _ = writeln!(
            x,
            "<host starttime=\"{}\" endtime=\"{end}\"><status state=\"{state}\" reason=\"{reason}\" reason_ttl=\"0\"/>",
            epoch(start)
        );
        let kind = if h.host.is_ipv4() { "ipv4" } else { "ipv6" };
        let _ = writeln!(
            x,
            "<address addr=\"{}\" addrtype=\"{kind}\"/>\n<hostnames>",
            h.host
        );
        if let Some(n) = &h.name {
            let _ = writeln!(
                x,
                "<hostname name=\"{}\" type=\"{}\"/>",
                xa(&n.name),
                n.source.as_str()
            );
        }
        x.push_str("</hostnames>\n<ports>\n");
        for g in &h.not_shown {
            let _ = writeln!(
                x,
                "<extraports state=\"{}\" count=\"{}\">",
                g.state, g.count
            );
            for (r, c) in &g.reasons {
                let _ = writeln!(
                    x,
                    "<extrareasons reason=\"{}\" count=\"{c}\" proto=\"{}\"/>",
                    xa(r),
                    g.proto
                );
            }
            x.push_str("</extraports>\n");
        }
        for r in &h.ports {
            let _ = write!(
                x,
                "<port protocol=\"{}\" portid=\"{}\"><state state=\"{}\" reason=\"{}\" reason_ttl=\"{}\"/>",
                r.proto,
                r.port,
                r.state,
                xa(&r.reason),
                r.ttl.unwrap_or(0)
            );
            match (&r.service, r.service_source) {
                (Some(name), Some(source @ (ServiceSource::Probe | ServiceSource::Weak))) => {
                    let _ = write!(x, "<service name=\"{}\"", xa(name));
                    for (k, v) in [
                        ("product", &r.product),
                        ("version", &r.version),
                        ("extrainfo", &r.info),
                    ] {
                        if let Some(v) = v {
                            let _ = write!(x, " {k}=\"{}\"", xa(v));
                        }
                    }
                    if in_tls(r) {
                        x.push_str(" tunnel=\"ssl\"");
                    }
                    // A weak match was heard but not proven: below a detection's 10, above
                    // the port table's 3.
                    let conf = if source == ServiceSource::Weak { 5 } else { 10 };
                    let _ = write!(x, " method=\"probed\" conf=\"{conf}\">");
                    if let Some(cpe) = &r.cpe {
                        let _ = write!(x, "<cpe>{}</cpe>", xa(cpe));
                    }
                    x.push_str("</service>");
                }
                (Some(name), _) => {
                    let _ = write!(
                        x,
                        "<service name=\"{}\" method=\"table\" conf=\"3\"/>",
                        xa(name)
                    );
                }
                (None, _) => {}
            }
            x.push_str("</port>\n");
        }
        x.push_str("</ports>\n");
        if let Some(rtt) = h.avg_rtt {
            let us = rtt.as_micros();
            let _ = writeln!(
                x,
                "<times srtt=\"{us}\" rttvar=\"{}\" to=\"{}\"/>",
                us / 2,
                us * 3
            );
        }
        x.push_str("</host>\n");
    }
    let _ = writeln!(
        x,
        "<runstats><finished time=\"{end}\" elapsed=\"{:.2}\" summary=\"portolan done: {} IP address(es) ({up} host(s) up) scanned in {:.2} seconds\" exit=\"{exit}\"/><hosts up=\"{up}\" down=\"{}\" total=\"{}\"/>\n</runstats>\n</nmaprun>",
        elapsed.as_secs_f64(),
        hosts.len(),
        elapsed.as_secs_f64(),
        hosts.len() - up,
        hosts.len()
    );
    x
}
