//! Pieces of the watch history as people read them (`history`, `diff`): times, owners,
//! places, scans. Owner strings came from /proc and a scan's from the sentry (a tool's
//! trait may quote what a scanner sent): all are escaped here.

use std::fmt::Write as _;

use portolan_watch::model::{rfc3339_ms, Owner, ScanRecord};

use super::esc;

/// `2026-11-22 08:25:00` (UTC) for tables.
pub fn when(ts_ms: i64) -> String {
    // Split at the `T` rather than at fixed offsets: a year past 9999 has five digits.
    let s = rfc3339_ms(ts_ms);
    let (date, time) = s.split_once('T').unwrap_or((&s, ""));
    let time = time.split(['.', 'Z']).next().unwrap_or("");
    format!("{date} {time}")
}

pub fn owner_text(o: &Owner) -> String {
    let mut s = match (&o.process, o.pid) {
        (Some(p), Some(pid)) => format!("{}[{pid}]", esc(p)),
        (Some(p), None) => esc(p).into_owned(),
        (None, Some(pid)) => format!("[{pid}]"),
        (None, None) => "?".to_string(),
    };
    if let Some(u) = o.unit.as_deref().or(o.container.as_deref()) {
        s = format!("{s} ({})", esc(u));
    }
    s
}

/// `addr:port`, with brackets for IPv6.
pub fn place(addr: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// How many of a scan's ports a line lists before `+N more`.
const SCAN_PORTS_SHOWN: usize = 5;

/// Where a scan came from: `from 203.0.113.9`, or `from 203.0.113.9 +39 more` for a
/// distributed one (the total counts the sources the record does not list).
pub fn scan_sources(s: &ScanRecord) -> String {
    let total = usize::try_from(s.sources_total)
        .unwrap_or(usize::MAX)
        .max(s.sources.len());
    let Some(first) = s.sources.first() else {
        return match total {
            0 => String::new(),
            n => format!("from {n} unlisted"),
        };
    };
    match total - 1 {
        0 => format!("from {first}"),
        more => format!("from {first} +{more} more"),
    }
}

/// The protocols of a scan's listed ports (`tcp`, `udp`, `tcp,udp`), escaped.
pub fn scan_protos(s: &ScanRecord) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for p in &s.ports {
        if let Some((_, proto)) = p.split_once('/') {
            if !seen.contains(&proto) {
                seen.push(proto);
            }
        }
    }
    esc(&seen.join(",")).into_owned()
}

/// A scan for people, on one line, every string escaped: its probe kinds, the ports tried
/// (how many, the first few), the likely tool and why, the detector that fired, a block,
/// and whether it goes on: `syn, fin; 1000 ports: 22/tcp 443/tcp 53/udp +997 more; likely
/// nmap (window 1024); detector vertical; blocked until 2026-11-22 09:00:00; ongoing`.
pub fn scan_summary(s: &ScanRecord) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !s.kinds.is_empty() {
        let kinds: Vec<String> = s.kinds.iter().map(|k| esc(k).into_owned()).collect();
        parts.push(kinds.join(", "));
    }
    let total = usize::try_from(s.ports_total)
        .unwrap_or(usize::MAX)
        .max(s.ports.len());
    if total > 0 {
        let mut ports = format!("{total} {}", if total == 1 { "port" } else { "ports" });
        let shown: Vec<String> = s
            .ports
            .iter()
            .take(SCAN_PORTS_SHOWN)
            .map(|p| esc(p).into_owned())
            .collect();
        if !shown.is_empty() {
            let _ = write!(ports, ": {}", shown.join(" "));
            let more = total - shown.len();
            if more > 0 {
                let _ = write!(ports, " +{more} more");
            }
        }
        parts.push(ports);
    }
    if let Some(tool) = &s.tool {
        let mut t = format!("likely {}", esc(tool));
        if let Some(why) = &s.tool_because {
            let _ = write!(t, " ({})", esc(why));
        }
        parts.push(t);
    }
    parts.push(format!("detector {}", esc(&s.detector)));
    if let Some(until) = s.blocked_until_ms {
        parts.push(format!("blocked until {}", when(until)));
    }
    parts.push(match s.ended_ms {
        None => "ongoing".to_owned(),
        Some(t) => format!("ended {}", when(t)),
    });
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan() -> ScanRecord {
        ScanRecord {
            host: "web-3".into(),
            key: "1-2-3".into(),
            started_ms: 1_795_335_900_000,
            detected_ms: 1_795_335_900_500,
            last_ms: 1_795_335_960_000,
            ended_ms: None,
            sources: vec!["203.0.113.9".parse().unwrap()],
            sources_total: 1,
            detector: "vertical".into(),
            kinds: vec!["syn".into()],
            tool: None,
            tool_because: None,
            ports: vec!["22/tcp".into()],
            ports_total: 1,
            probes: 1,
            failed: 1,
            probes_to_detect: 1,
            blocked_until_ms: None,
        }
    }

    #[test]
    fn a_scan_reads_as_one_line() {
        let s = scan();
        assert_eq!(scan_sources(&s), "from 203.0.113.9");
        assert_eq!(scan_protos(&s), "tcp");
        assert_eq!(
            scan_summary(&s),
            "syn; 1 port: 22/tcp; detector vertical; ongoing"
        );
        let big = ScanRecord {
            sources: vec![
                "2001:db8::1".parse().unwrap(),
                "203.0.113.9".parse().unwrap(),
            ],
            sources_total: 40,
            kinds: vec!["syn".into(), "udp".into()],
            ports: (1..=8)
                .map(|p| format!("{p}/{}", if p % 2 == 0 { "udp" } else { "tcp" }))
                .collect(),
            ports_total: 1000,
            tool: Some("nmap".into()),
            tool_because: Some("window 1024".into()),
            blocked_until_ms: Some(1_795_339_500_000),
            ended_ms: Some(1_795_336_000_000),
            ..s
        };
        assert_eq!(scan_sources(&big), "from 2001:db8::1 +39 more");
        assert_eq!(scan_protos(&big), "tcp,udp");
        assert_eq!(
            scan_summary(&big),
            "syn, udp; 1000 ports: 1/tcp 2/udp 3/tcp 4/udp 5/tcp +995 more; \
             likely nmap (window 1024); detector vertical; \
             blocked until 2026-11-22 09:25:00; ended 2026-11-22 08:26:40"
        );
    }

    #[test]
    fn a_scan_s_strings_are_escaped() {
        let s = ScanRecord {
            kinds: vec!["syn\x1b[2J".into()],
            ports: vec!["22/t\u{202e}cp".into()],
            tool: Some("nm\x07ap".into()),
            tool_because: Some("<b>\x1b]0;owned\x07</b>\nnext".into()),
            detector: "v\rx".into(),
            ..scan()
        };
        let line = format!("{} {}", scan_protos(&s), scan_summary(&s));
        assert!(
            !line.chars().any(portolan_core::escape::is_dangerous),
            "{line}"
        );
        assert!(
            line.contains("likely nm\\x07ap (<b>\\x1b]0;owned\\x07</b>\\nnext)"),
            "{line}"
        );
        assert!(line.contains("syn\\x1b[2J"), "{line}");
        assert!(line.contains("detector v\\rx"), "{line}");
    }

    #[test]
    fn odd_totals_do_not_underflow() {
        let s = ScanRecord {
            sources: vec![],
            sources_total: 3,
            ports: vec!["1/tcp".into(), "2/tcp".into()],
            ports_total: 0,
            kinds: vec![],
            ..scan()
        };
        assert_eq!(scan_sources(&s), "from 3 unlisted");
        assert_eq!(
            scan_summary(&s),
            "2 ports: 1/tcp 2/tcp; detector vertical; ongoing"
        );
        let none = ScanRecord {
            sources_total: 0,
            ..s
        };
        assert_eq!(scan_sources(&none), "");
    }

    #[test]
    fn table_times_keep_every_digit() {
        assert_eq!(when(1_795_335_900_123), "2026-11-22 08:25:00");
        // 10000-01-01T00:00:00Z, and a moment before 1970.
        assert_eq!(when(253_402_300_800_000), "+10000-01-01 00:00:00");
        assert_eq!(when(-1), "1969-12-31 23:59:59");
    }
}
