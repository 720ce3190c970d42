//! What a host is (addresses, port sets, up or down), the ground truth a scanner should
//! report for each port, validation, and the compact text form the CLI reads.
//! No I/O here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::TestbedError;

/// The scanner namespace's IPv4 address (on its side of the wire). Hosts may not use it.
pub const SCANNER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
/// The scanner namespace's IPv6 address. Hosts may not use it.
pub const SCANNER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0xffff, 0, 0, 0, 1);

/// 198.18.0.0/15, the IPv4 benchmarking range (RFC 2544).
pub fn in_v4_range(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 198 && (o[1] & 0xfe) == 18
}

/// 2001:2::/48, the IPv6 benchmarking range (RFC 5180).
pub fn in_v6_range(a: Ipv6Addr) -> bool {
    let s = a.segments();
    s[0] == 0x2001 && s[1] == 2 && s[2] == 0
}

/// One target host. Port ranges are inclusive `(first, last)`.
///
/// When sets overlap, the first match wins in this order (the order of the nftables rules,
/// which run before any socket): `filtered_drop`, `filtered_icmp`, `closed_reset`, `open`.
/// Every other port is closed by the kernel (RST).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    pub v4: Ipv4Addr,
    #[serde(default)]
    pub v6: Option<Ipv6Addr>,
    /// Ports with a real listener.
    #[serde(default)]
    pub open: Vec<u16>,
    /// Ports whose SYNs nftables drops: no answer at all.
    #[serde(default)]
    pub filtered_drop: Vec<(u16, u16)>,
    /// Ports nftables rejects with an ICMP error (see [`IcmpReject`]).
    #[serde(default)]
    pub filtered_icmp: Vec<(u16, u16)>,
    /// Ports nftables rejects with a TCP reset (closed, like the kernel's own RST).
    #[serde(default)]
    pub closed_reset: Vec<(u16, u16)>,
    /// A down host's address is routed through the wire but owned by nobody: its packets
    /// vanish on the target side.
    #[serde(default = "yes")]
    pub up: bool,
    /// A host name for both addresses, in the scanner namespace's /etc/hosts (so forward and
    /// reverse lookups answer there without any DNS traffic).
    #[serde(default)]
    pub name: Option<String>,
}

fn yes() -> bool {
    true
}

impl HostSpec {
    /// An up host at `v4` with no IPv6 address, no open port and no firewall rule.
    pub fn new(v4: Ipv4Addr) -> Self {
        Self {
            v4,
            v6: None,
            open: Vec::new(),
            filtered_drop: Vec::new(),
            filtered_icmp: Vec::new(),
            closed_reset: Vec::new(),
            up: true,
            name: None,
        }
    }

    /// Names both addresses `name` (letters, digits, dots and hyphens).
    #[must_use]
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    #[must_use]
    pub fn with_v6(mut self, v6: Ipv6Addr) -> Self {
        self.v6 = Some(v6);
        self
    }

    #[must_use]
    pub fn with_open(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.open.extend(ports);
        self
    }

    #[must_use]
    pub fn with_drop(mut self, first: u16, last: u16) -> Self {
        self.filtered_drop.push((first, last));
        self
    }

    #[must_use]
    pub fn with_icmp(mut self, first: u16, last: u16) -> Self {
        self.filtered_icmp.push((first, last));
        self
    }

    #[must_use]
    pub fn with_reset(mut self, first: u16, last: u16) -> Self {
        self.closed_reset.push((first, last));
        self
    }

    #[must_use]
    pub fn down(mut self) -> Self {
        self.up = false;
        self
    }

    /// Whether `addr` is one of this host's addresses.
    pub fn has_addr(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => a == self.v4,
            IpAddr::V6(a) => self.v6 == Some(a),
        }
    }

    /// What really happens to a SYN sent to `port` on this host.
    pub fn truth(&self, port: u16, icmp: IcmpReject) -> PortTruth {
        let hit = |ranges: &[(u16, u16)]| ranges.iter().any(|&(a, b)| (a..=b).contains(&port));
        if !self.up {
            PortTruth::HostDown
        } else if hit(&self.filtered_drop) {
            PortTruth::FilteredDrop
        } else if hit(&self.filtered_icmp) {
            PortTruth::FilteredIcmp(icmp)
        } else if hit(&self.closed_reset) {
            PortTruth::ClosedReset
        } else if port != 0 && self.open.contains(&port) {
            PortTruth::Open
        } else {
            PortTruth::ClosedKernel
        }
    }
}

/// The state a TCP scanner should report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    Open,
    Closed,
    Filtered,
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Filtered => "filtered",
        })
    }
}

/// The ICMP error nftables answers `filtered_icmp` ports with. For IPv6 the matching
/// ICMPv6 code is used (admin-prohibited, port-unreachable, addr-unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcmpReject {
    /// ICMP type 3 code 13 / ICMPv6 type 1 code 1: a connect sees EHOSTUNREACH (v4) or
    /// EACCES (v6).
    #[default]
    AdminProhibited,
    /// ICMP type 3 code 3 / ICMPv6 type 1 code 4: a connect sees ECONNREFUSED.
    PortUnreachable,
    /// ICMP type 3 code 1 / ICMPv6 type 1 code 3: a connect sees EHOSTUNREACH.
    HostUnreachable,
}

impl IcmpReject {
    pub(crate) fn nft_v4(self) -> &'static str {
        match self {
            Self::AdminProhibited => "admin-prohibited",
            Self::PortUnreachable => "port-unreachable",
            Self::HostUnreachable => "host-unreachable",
        }
    }

    pub(crate) fn nft_v6(self) -> &'static str {
        match self {
            Self::AdminProhibited => "admin-prohibited",
            Self::PortUnreachable => "port-unreachable",
            Self::HostUnreachable => "addr-unreachable",
        }
    }
}

/// Why a port has the state it has: what the testbed does to a SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortTruth {
    /// A listener accepts.
    Open,
    /// No listener: the kernel answers RST.
    ClosedKernel,
    /// nftables answers RST.
    ClosedReset,
    /// nftables drops the SYN.
    FilteredDrop,
    /// nftables answers with this ICMP error.
    FilteredIcmp(IcmpReject),
    /// The host is down: the SYN vanishes.
    HostDown,
    /// No host has this address: the SYN vanishes like for a down host.
    UnknownHost,
}

impl PortTruth {
    /// The state a TCP connect scanner should report. ICMP-rejected ports are filtered
    /// (nmap's convention), whatever errno the connect got.
    pub fn state(self) -> PortState {
        match self {
            Self::Open => PortState::Open,
            Self::ClosedKernel | Self::ClosedReset => PortState::Closed,
            Self::FilteredDrop | Self::FilteredIcmp(_) | Self::HostDown | Self::UnknownHost => {
                PortState::Filtered
            }
        }
    }
}

/// Sorts and merges overlapping or adjacent inclusive ranges (nftables refuses overlapping
/// interval elements).
pub fn merge_ranges(ranges: &[(u16, u16)]) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = ranges.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Checks addresses (in the benchmarking ranges, unique, not the scanner's) and ranges.
pub fn validate(hosts: &[HostSpec]) -> Result<(), TestbedError> {
    let bad = |msg: String| Err(TestbedError::Spec(msg));
    let mut seen = std::collections::HashSet::new();
    for h in hosts {
        if !in_v4_range(h.v4) {
            return bad(format!("{} is outside 198.18.0.0/15", h.v4));
        }
        if h.v4 == SCANNER_V4 {
            return bad(format!("{} is the scanner's own address", h.v4));
        }
        if !seen.insert(IpAddr::V4(h.v4)) {
            return bad(format!("{} is given to two hosts", h.v4));
        }
        if let Some(v6) = h.v6 {
            if !in_v6_range(v6) {
                return bad(format!("{v6} is outside 2001:2::/48"));
            }
            if v6 == SCANNER_V6 {
                return bad(format!("{v6} is the scanner's own address"));
            }
            if !seen.insert(IpAddr::V6(v6)) {
                return bad(format!("{v6} is given to two hosts"));
            }
        }
        if let Some(name) = &h.name {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && !name.starts_with(['.', '-']);
            if !ok {
                return bad(format!(
                    "{}: host name {name:?} must be letters, digits, dots and hyphens",
                    h.v4
                ));
            }
        }
        if h.open.contains(&0) {
            return bad(format!("{}: port 0 cannot be open", h.v4));
        }
        for (name, ranges) in [
            ("filtered_drop", &h.filtered_drop),
            ("filtered_icmp", &h.filtered_icmp),
            ("closed_reset", &h.closed_reset),
        ] {
            if let Some((a, b)) = ranges.iter().find(|(a, b)| a > b) {
                return bad(format!("{}: {name} range {a}-{b} is reversed", h.v4));
            }
        }
    }
    Ok(())
}

fn parse_ports(v: &str) -> Result<Vec<(u16, u16)>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let num = |s: &str| {
                s.trim()
                    .parse::<u16>()
                    .map_err(|_| format!("bad port `{s}` in `{v}`"))
            };
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!("reversed range `{item}`"));
                    }
                    Ok((a, b))
                }
                None => num(item).map(|p| (p, p)),
            }
        })
        .collect()
}

/// Parses the CLI's compact host form: whitespace-separated `key=value` words,
///
/// ```text
/// v4=198.18.0.10 v6=2001:2::10 name=web.test open=22,80,8000-8010 drop=1000-2000 icmp=3000 reset=4000 [down] [count=N]
/// ```
///
/// `count=N` makes N hosts with consecutive addresses (IPv4 and, if given, IPv6) and the same
/// ports; a name becomes `h<i>.<name>` for each.
pub fn parse_compact(text: &str) -> Result<Vec<HostSpec>, String> {
    let mut v4 = None;
    let mut spec = HostSpec::new(Ipv4Addr::UNSPECIFIED);
    let mut count: u32 = 1;
    for word in text.split_whitespace() {
        if word == "down" {
            spec.up = false;
            continue;
        }
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got `{word}`"))?;
        match k {
            "v4" => {
                v4 = Some(
                    v.parse::<Ipv4Addr>()
                        .map_err(|e| format!("v4 `{v}`: {e}"))?,
                );
            }
            "v6" => {
                spec.v6 = Some(
                    v.parse::<Ipv6Addr>()
                        .map_err(|e| format!("v6 `{v}`: {e}"))?,
                );
            }
            "open" => {
                for (a, b) in parse_ports(v)? {
                    spec.open.extend(a..=b);
                }
            }
            "drop" => spec.filtered_drop.extend(parse_ports(v)?),
            "icmp" => spec.filtered_icmp.extend(parse_ports(v)?),
            "reset" => spec.closed_reset.extend(parse_ports(v)?),
            "name" => spec.name = Some(v.to_owned()),
            "count" => {
                count = v.parse().map_err(|_| format!("bad count `{v}`"))?;
                if count == 0 || count > 65_536 {
                    return Err(format!("count {count} out of 1..=65536"));
                }
            }
            _ => {
                return Err(format!(
                    "unknown key `{k}` (v4, v6, name, open, drop, icmp, reset, count, down)"
                ))
            }
        }
    }
    spec.v4 = v4.ok_or_else(|| format!("`{text}`: v4=ADDRESS is required"))?;
    let mut out = Vec::new();
    for i in 0..count {
        let mut h = spec.clone();
        if count > 1 {
            h.name = spec.name.as_ref().map(|n| format!("h{i}.{n}"));
        }
        h.v4 = Ipv4Addr::from(
            u32::from(spec.v4)
                .checked_add(i)
                .ok_or("count runs past 255.255.255.255")?,
        );
        if let Some(v6) = spec.v6 {
            h.v6 = Some(Ipv6Addr::from(
                u128::from(v6)
                    .checked_add(u128::from(i))
                    .ok_or("count runs past the IPv6 space")?,
            ));
        }
        out.push(h);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge() {
        assert_eq!(
            merge_ranges(&[(10, 20), (1, 3), (4, 5), (15, 30), (40, 40)]),
            vec![(1, 5), (10, 30), (40, 40)]
        );
        assert_eq!(
            merge_ranges(&[(65535, 65535), (0, 65534)]),
            vec![(0, 65535)]
        );
        assert!(merge_ranges(&[]).is_empty());
    }

    #[test]
    fn truth_precedence() {
        let h = HostSpec::new(Ipv4Addr::new(198, 18, 0, 10))
            .with_open([22, 80, 443])
            .with_drop(80, 80)
            .with_icmp(443, 500)
            .with_reset(490, 600);
        let t = |p| h.truth(p, IcmpReject::AdminProhibited);
        assert_eq!(t(22), PortTruth::Open);
        assert_eq!(t(80), PortTruth::FilteredDrop);
        assert_eq!(t(443), PortTruth::FilteredIcmp(IcmpReject::AdminProhibited));
        assert_eq!(t(495), PortTruth::FilteredIcmp(IcmpReject::AdminProhibited));
        assert_eq!(t(501), PortTruth::ClosedReset);
        assert_eq!(t(23), PortTruth::ClosedKernel);
        assert_eq!(t(23).state(), PortState::Closed);
        assert_eq!(
            h.clone().down().truth(22, IcmpReject::default()),
            PortTruth::HostDown
        );
    }

    #[test]
    fn validation() {
        let ok = HostSpec::new(Ipv4Addr::new(198, 19, 0, 1)).with_v6("2001:2::1".parse().unwrap());
        assert!(validate(std::slice::from_ref(&ok)).is_ok());
        assert!(validate(&[ok.clone(), ok.clone()]).is_err());
        assert!(validate(&[HostSpec::new(Ipv4Addr::new(10, 0, 0, 1))]).is_err());
        assert!(validate(&[HostSpec::new(Ipv4Addr::new(198, 20, 0, 1))]).is_err());
        assert!(validate(&[HostSpec::new(SCANNER_V4)]).is_err());
        let v6_out =
            HostSpec::new(Ipv4Addr::new(198, 18, 0, 1)).with_v6("2001:3::1".parse().unwrap());
        assert!(validate(&[v6_out]).is_err());
        assert!(validate(&[HostSpec::new(Ipv4Addr::new(198, 18, 0, 1)).with_drop(5, 1)]).is_err());
    }

    #[test]
    fn compact_form() {
        let hs = parse_compact(
            "v4=198.18.0.10 v6=2001:2::10 open=22,80,8000-8002 drop=1000-2000 icmp=3000 reset=4000,4001 count=2",
        )
        .unwrap();
        assert_eq!(hs.len(), 2);
        assert_eq!(hs[1].v4, Ipv4Addr::new(198, 18, 0, 11));
        assert_eq!(hs[1].v6, Some("2001:2::11".parse().unwrap()));
        assert_eq!(hs[0].open, vec![22, 80, 8000, 8001, 8002]);
        assert_eq!(hs[0].filtered_drop, vec![(1000, 2000)]);
        assert_eq!(hs[0].filtered_icmp, vec![(3000, 3000)]);
        assert_eq!(hs[0].closed_reset, vec![(4000, 4000), (4001, 4001)]);
        assert!(hs[0].up);
        assert!(!parse_compact("v4=198.18.0.9 down").unwrap()[0].up);
        assert!(parse_compact("open=22").is_err());
        assert!(parse_compact("v4=198.18.0.9 open=99999").is_err());
        assert!(parse_compact("v4=198.18.0.9 colour=blue").is_err());
    }

    #[test]
    fn json_form_defaults() {
        let h: HostSpec =
            serde_json::from_str(r#"{"v4":"198.18.0.5","open":[22],"filtered_drop":[[1,9]]}"#)
                .unwrap();
        assert!(h.up);
        assert_eq!(h.filtered_drop, vec![(1, 9)]);
        assert_eq!(h.v6, None);
    }
}
