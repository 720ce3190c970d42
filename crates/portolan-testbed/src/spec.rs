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
/// TCP: when sets overlap, the first match wins in this order (the order of the nftables
/// rules, which run before any socket): `filtered_drop`, `filtered_icmp`, `closed_reset`,
/// `open`. Every other port is closed by the kernel (RST). A [`UdpService::Dns`] service
/// also listens on TCP port 53 (dnsmasq always does). A `synack_all` host has no TCP port
/// sets: every TCP port completes the handshake.
///
/// UDP: `udp_drop`, then `udp_icmp`, then a responder (a named service's port, or a
/// `udp_open` port answered by the echo responder). Every other UDP port is closed: the
/// kernel answers ICMP port unreachable (rate-limited unless the builder's
/// `icmp_rate_limit(false)`, the default, lifted the limits).
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
    /// UDP ports with a responder: a named service's port, else the echo responder.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp_open: Vec<u16>,
    /// UDP ports whose datagrams nftables drops: silence (`open|filtered`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp_drop: Vec<(u16, u16)>,
    /// UDP ports nftables rejects with the testbed's [`IcmpReject`] (`filtered`, or `closed`
    /// when that is port-unreachable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp_icmp: Vec<(u16, u16)>,
    /// Real UDP services started for this host (on its v4 and, if any, v6 address); each
    /// one's port is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp_services: Vec<UdpService>,
    /// A SYN-ACK-everything middlebox: nftables sends every TCP port of this host to one
    /// listener, so every handshake completes ([`PortTruth::SynAckAll`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub synack_all: bool,
}

fn yes() -> bool {
    true
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes &T"
)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// A real UDP service the testbed runs in the target namespace (see
/// [`HostSpec::with_udp_service`]). One process per kind serves every host that asks for it,
/// bound to those hosts' addresses only; it is killed, and its files removed, when the
/// testbed drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UdpService {
    /// dnsmasq on port 53 (`--no-resolv --no-hosts`); answers `*.x.test` A queries with
    /// 198.18.9.9 ([`DNS_ANSWER`]), refuses or fails the rest. Also listens on TCP 53.
    Dns,
    /// Debian's snmpd (net-snmp) on port 161, community `public` read-only (v1 and v2c).
    Snmp,
    /// ntpsec's ntpd on port 123, with no upstream servers: it answers client-mode
    /// packets (unsynchronised) and never touches the clock.
    Ntp,
    /// The testbed's own echo responder (a thread of the testbed process) on port 7: each
    /// datagram comes back as it was.
    Echo,
}

/// The name dnsmasq answers for (any name under it), with [`DNS_ANSWER`].
pub const DNS_ZONE: &str = "x.test";
/// The A record dnsmasq gives every name under [`DNS_ZONE`].
pub const DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 9);

impl UdpService {
    /// Every service, in a fixed order.
    pub const ALL: [UdpService; 4] = [Self::Dns, Self::Snmp, Self::Ntp, Self::Echo];

    /// The UDP port it serves.
    pub fn port(self) -> u16 {
        match self {
            Self::Dns => 53,
            Self::Snmp => 161,
            Self::Ntp => 123,
            Self::Echo => 7,
        }
    }

    /// The name used in the compact form and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Snmp => "snmp",
            Self::Ntp => "ntp",
            Self::Echo => "echo",
        }
    }

    /// Parses [`UdpService::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }

    /// The external program (and its Debian package) it needs; `None` for the built-in echo.
    pub fn program(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Dns => Some(("dnsmasq", "dnsmasq-base")),
            Self::Snmp => Some(("snmpd", "snmpd")),
            Self::Ntp => Some(("ntpd", "ntpsec")),
            Self::Echo => None,
        }
    }
}

impl fmt::Display for UdpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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
            udp_open: Vec::new(),
            udp_drop: Vec::new(),
            udp_icmp: Vec::new(),
            udp_services: Vec::new(),
            synack_all: false,
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

    /// UDP ports answered by the echo responder (unless a named service holds the port).
    #[must_use]
    pub fn with_udp_open(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.udp_open.extend(ports);
        self
    }

    /// UDP ports whose datagrams nftables drops (`open|filtered`).
    #[must_use]
    pub fn with_udp_drop(mut self, first: u16, last: u16) -> Self {
        self.udp_drop.push((first, last));
        self
    }

    /// UDP ports nftables rejects with the testbed's ICMP error (`filtered`).
    #[must_use]
    pub fn with_udp_icmp(mut self, first: u16, last: u16) -> Self {
        self.udp_icmp.push((first, last));
        self
    }

    /// Runs a real UDP service for this host on its port ([`UdpService::port`]).
    #[must_use]
    pub fn with_udp_service(mut self, service: UdpService) -> Self {
        if !self.udp_services.contains(&service) {
            self.udp_services.push(service);
        }
        self
    }

    /// Makes the host a SYN-ACK-everything middlebox (a tarpit): every TCP port completes
    /// the handshake. It may have no other TCP port sets.
    #[must_use]
    pub fn with_synack_all(mut self) -> Self {
        self.synack_all = true;
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
        } else if self.synack_all {
            PortTruth::SynAckAll
        } else if port != 0 && (self.open.contains(&port) || self.tcp_service_port(port)) {
            PortTruth::Open
        } else {
            PortTruth::ClosedKernel
        }
    }

    /// Whether one of the host's services listens on TCP `port` too (dnsmasq on 53).
    pub(crate) fn tcp_service_port(&self, port: u16) -> bool {
        port == UdpService::Dns.port() && self.udp_services.contains(&UdpService::Dns)
    }

    /// Who answers UDP `port` on this host (ignoring the firewall sets): a named service
    /// on its port, else the echo responder for a `udp_open` port.
    pub fn udp_responder(&self, port: u16) -> Option<UdpService> {
        if port == 0 {
            return None;
        }
        self.udp_services
            .iter()
            .copied()
            .find(|s| s.port() == port)
            .or_else(|| self.udp_open.contains(&port).then_some(UdpService::Echo))
    }

    /// The UDP ports the built-in echo responder serves on this host, sorted, no duplicates.
    pub(crate) fn echo_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .udp_open
            .iter()
            .copied()
            .chain(
                self.udp_services
                    .contains(&UdpService::Echo)
                    .then_some(UdpService::Echo.port()),
            )
            .filter(|&p| self.udp_responder(p) == Some(UdpService::Echo))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// What really happens to a UDP datagram sent to `port` on this host.
    pub fn truth_udp(&self, port: u16, icmp: IcmpReject) -> PortTruth {
        let hit = |ranges: &[(u16, u16)]| ranges.iter().any(|&(a, b)| (a..=b).contains(&port));
        if !self.up {
            PortTruth::HostDown
        } else if hit(&self.udp_drop) {
            PortTruth::UdpDrop
        } else if hit(&self.udp_icmp) {
            PortTruth::UdpIcmp(icmp)
        } else if let Some(s) = self.udp_responder(port) {
            PortTruth::UdpOpen(s)
        } else {
            PortTruth::UdpClosed
        }
    }
}

/// The state a scanner should report (nmap's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    Open,
    Closed,
    Filtered,
    /// UDP only: no answer at all, which a dropping firewall and a silent service both give.
    #[serde(rename = "open|filtered")]
    OpenFiltered,
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Filtered => "filtered",
            Self::OpenFiltered => "open|filtered",
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

/// Why a port has the state it has: what the testbed does to a SYN (the first variants,
/// from [`HostSpec::truth`]) or to a UDP datagram (the `Udp*` variants, from
/// [`HostSpec::truth_udp`]; `HostDown` and `UnknownHost` are shared).
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
    /// A SYN-ACK-everything middlebox (`synack_all`): the handshake completes on every
    /// port. The kernel says open; a scanner should report the host as a tarpit rather
    /// than 65,535 open ports.
    SynAckAll,
    /// UDP: this responder answers.
    UdpOpen(UdpService),
    /// UDP: no socket; the kernel answers ICMP port unreachable.
    UdpClosed,
    /// UDP: nftables drops the datagram; nothing comes back.
    UdpDrop,
    /// UDP: nftables answers with this ICMP error.
    UdpIcmp(IcmpReject),
}

impl PortTruth {
    /// The state a TCP connect scanner should report. ICMP-rejected ports are filtered
    /// (nmap's convention), whatever errno the connect got.
    ///
    /// UDP (nmap's `-sU` convention): a reply is open, ICMP port unreachable closed, any
    /// other ICMP error filtered, silence `open|filtered`. `HostDown` and `UnknownHost` stay
    /// `filtered` here (the TCP answer); [`PortTruth::state_udp`] makes them `open|filtered`.
    /// `SynAckAll` is open, as the kernel sees it.
    pub fn state(self) -> PortState {
        match self {
            Self::Open | Self::SynAckAll | Self::UdpOpen(_) => PortState::Open,
            Self::ClosedKernel
            | Self::ClosedReset
            | Self::UdpClosed
            | Self::UdpIcmp(IcmpReject::PortUnreachable) => PortState::Closed,
            Self::FilteredDrop
            | Self::FilteredIcmp(_)
            | Self::HostDown
            | Self::UnknownHost
            | Self::UdpIcmp(_) => PortState::Filtered,
            Self::UdpDrop => PortState::OpenFiltered,
        }
    }

    /// The state a UDP scanner should report: like [`PortTruth::state`], except that a
    /// silent (down or unknown) host is `open|filtered`, as for any UDP port that never
    /// answers.
    pub fn state_udp(self) -> PortState {
        match self {
            Self::HostDown | Self::UnknownHost => PortState::OpenFiltered,
            t => t.state(),
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
        if h.open.contains(&0) || h.udp_open.contains(&0) {
            return bad(format!("{}: port 0 cannot be open", h.v4));
        }
        if h.synack_all
            && !(h.open.is_empty()
                && h.filtered_drop.is_empty()
                && h.filtered_icmp.is_empty()
                && h.closed_reset.is_empty())
        {
            return bad(format!(
                "{}: a SYN-ACK-all host answers every TCP port; it takes no TCP port sets",
                h.v4
            ));
        }
        for (name, ranges) in [
            ("filtered_drop", &h.filtered_drop),
            ("filtered_icmp", &h.filtered_icmp),
            ("closed_reset", &h.closed_reset),
            ("udp_drop", &h.udp_drop),
            ("udp_icmp", &h.udp_icmp),
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

/// Open TCP and UDP port entries one compact spec may expand to, over all its hosts (each
/// becomes a socket; 16 Mi entries are far beyond any testbed, and keep a hostile
/// `open=1-65535,1-65535,...` or `count=` from exhausting memory).
const MAX_PORT_ENTRIES: usize = 1 << 24;

fn check_port_entries(spec: &HostSpec, count: u32) -> Result<(), String> {
    let n = (spec.open.len() + spec.udp_open.len())
        .saturating_mul(usize::try_from(count).unwrap_or(usize::MAX));
    if n > MAX_PORT_ENTRIES {
        return Err(format!(
            "{n} open port entries in one spec (at most {MAX_PORT_ENTRIES})"
        ));
    }
    Ok(())
}

/// Parses the CLI's compact host form: whitespace-separated `key=value` words,
///
/// ```text
/// v4=198.18.0.10 v6=2001:2::10 name=web.test open=22,80,8000-8010 drop=1000-2000 icmp=3000 reset=4000 [down] [count=N]
/// v4=198.18.0.11 udp=9,5000-5010 udp-drop=6000-6999 udp-icmp=7000 svc=dns,snmp,ntp,echo
/// v4=198.18.0.12 tarpit
/// ```
///
/// `udp=` ports are answered by the echo responder, `svc=` starts real UDP services
/// ([`UdpService`]), `tarpit` makes every TCP port answer SYN-ACK (`synack_all`).
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
        if word == "tarpit" {
            spec.synack_all = true;
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
                    check_port_entries(&spec, 1)?;
                }
            }
            "drop" => spec.filtered_drop.extend(parse_ports(v)?),
            "icmp" => spec.filtered_icmp.extend(parse_ports(v)?),
            "reset" => spec.closed_reset.extend(parse_ports(v)?),
            "udp" => {
                for (a, b) in parse_ports(v)? {
                    spec.udp_open.extend(a..=b);
                    check_port_entries(&spec, 1)?;
                }
            }
            "udp-drop" => spec.udp_drop.extend(parse_ports(v)?),
            "udp-icmp" => spec.udp_icmp.extend(parse_ports(v)?),
            "svc" => {
                for name in v.split(',').filter(|s| !s.is_empty()) {
                    let svc = UdpService::from_name(name).ok_or_else(|| {
                        format!("unknown service `{name}` (dns, snmp, ntp, echo)")
                    })?;
                    spec = spec.with_udp_service(svc);
                }
            }
            "name" => spec.name = Some(v.to_owned()),
            "count" => {
                count = v.parse().map_err(|_| format!("bad count `{v}`"))?;
                if count == 0 || count > 65_536 {
                    return Err(format!("count {count} out of 1..=65536"));
                }
            }
            _ => {
                return Err(format!(
                    "unknown key `{k}` (v4, v6, name, open, drop, icmp, reset, udp, udp-drop, \
                     udp-icmp, svc, count, down, tarpit)"
                ))
            }
        }
    }
    spec.v4 = v4.ok_or_else(|| format!("`{text}`: v4=ADDRESS is required"))?;
    check_port_entries(&spec, count)?;
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
    fn udp_truth() {
        let h = HostSpec::new(Ipv4Addr::new(198, 18, 200, 1))
            .with_udp_open([53, 5000, 6000])
            .with_udp_service(UdpService::Dns)
            .with_udp_service(UdpService::Echo)
            .with_udp_drop(6000, 6100)
            .with_udp_icmp(7000, 7001);
        let t = |p| h.truth_udp(p, IcmpReject::AdminProhibited);
        assert_eq!(t(53), PortTruth::UdpOpen(UdpService::Dns));
        assert_eq!(t(7), PortTruth::UdpOpen(UdpService::Echo));
        assert_eq!(t(5000), PortTruth::UdpOpen(UdpService::Echo));
        assert_eq!(t(6000), PortTruth::UdpDrop);
        assert_eq!(t(6000).state(), PortState::OpenFiltered);
        assert_eq!(t(7001).state(), PortState::Filtered);
        assert_eq!(
            h.truth_udp(7001, IcmpReject::PortUnreachable).state(),
            PortState::Closed
        );
        assert_eq!(t(5001), PortTruth::UdpClosed);
        assert_eq!(t(5001).state(), PortState::Closed);
        assert_eq!(t(0), PortTruth::UdpClosed);
        assert_eq!(t(123).state(), PortState::Closed);
        // dnsmasq also holds TCP 53; the echo responder never takes a service's port.
        assert_eq!(h.truth(53, IcmpReject::default()), PortTruth::Open);
        assert_eq!(
            h.truth(5000, IcmpReject::default()),
            PortTruth::ClosedKernel
        );
        assert_eq!(h.echo_ports(), vec![7, 5000, 6000]);
        let down = h.clone().down();
        assert_eq!(
            down.truth_udp(53, IcmpReject::default()),
            PortTruth::HostDown
        );
        assert_eq!(PortTruth::HostDown.state_udp(), PortState::OpenFiltered);
        assert_eq!(PortTruth::UnknownHost.state_udp(), PortState::OpenFiltered);
        assert_eq!(PortTruth::HostDown.state(), PortState::Filtered);
        assert_eq!(PortState::OpenFiltered.to_string(), "open|filtered");
        assert_eq!(
            serde_json::to_string(&PortState::OpenFiltered).unwrap(),
            r#""open|filtered""#
        );
    }

    #[test]
    fn tarpit_truth_and_validation() {
        let h = HostSpec::new(Ipv4Addr::new(198, 18, 200, 2))
            .with_synack_all()
            .with_udp_open([9]);
        for p in [0, 1, 22, 31337, 65535] {
            assert_eq!(h.truth(p, IcmpReject::default()), PortTruth::SynAckAll);
        }
        assert_eq!(PortTruth::SynAckAll.state(), PortState::Open);
        assert_eq!(
            h.truth_udp(9, IcmpReject::default()),
            PortTruth::UdpOpen(UdpService::Echo)
        );
        assert!(validate(std::slice::from_ref(&h)).is_ok());
        assert!(validate(&[h.clone().with_open([22])]).is_err());
        assert!(validate(&[h.clone().with_drop(1, 2)]).is_err());
        assert!(validate(&[h.clone().with_udp_open([0])]).is_err());
        assert!(validate(&[h.clone().with_udp_drop(9, 1)]).is_err());
        assert!(validate(&[h.with_udp_icmp(9, 1)]).is_err());
    }

    #[test]
    fn compact_udp_and_tarpit() {
        let hs = parse_compact(
            "v4=198.18.200.1 v6=2001:2:0:c8::1 udp=9,5000-5002 udp-drop=6000-6999 udp-icmp=7000 svc=dns,snmp,,ntp,echo,dns",
        )
        .unwrap();
        let h = &hs[0];
        assert_eq!(h.udp_open, vec![9, 5000, 5001, 5002]);
        assert_eq!(h.udp_drop, vec![(6000, 6999)]);
        assert_eq!(h.udp_icmp, vec![(7000, 7000)]);
        assert_eq!(
            h.udp_services,
            vec![
                UdpService::Dns,
                UdpService::Snmp,
                UdpService::Ntp,
                UdpService::Echo
            ]
        );
        assert!(!h.synack_all);
        let t = parse_compact("v4=198.18.200.2 tarpit count=2").unwrap();
        assert!(t.iter().all(|h| h.synack_all));
        // Hostile and malformed input: errors, never panics.
        for bad in [
            "v4=198.18.200.1 svc=dhcp",
            "v4=198.18.200.1 svc=DNS",
            "v4=198.18.200.1 udp=70000",
            "v4=198.18.200.1 udp=5-1",
            "v4=198.18.200.1 udp-drop=a-b",
            "v4=198.18.200.1 udp-icmp=-",
            "v4=198.18.200.1 udp-icmp=1--2",
            "v4=198.18.200.1 tarpit=1",
            "v4=198.18.200.1 udp",
            "tarpit svc=echo",
            "v4=198.18.200.1 svc=\u{0}",
        ] {
            assert!(parse_compact(bad).is_err(), "{bad}");
        }
        // Expansions that would exhaust memory are refused before they do.
        let many = format!("v4=198.18.200.1 udp={}", ["1-65535"; 300].join(","));
        assert!(parse_compact(&many).is_err());
        assert!(parse_compact("v4=198.18.0.1 open=1-65535 udp=1-65535 count=65536").is_err());
        assert_eq!(
            parse_compact("v4=198.18.0.1 open=1-1000 count=254")
                .unwrap()
                .len(),
            254
        );
        for word in ["svc=", "udp=", "udp=,,,", "svc=,"] {
            let hs = parse_compact(&format!("v4=198.18.200.1 {word}")).unwrap();
            assert!(hs[0].udp_open.is_empty() && hs[0].udp_services.is_empty());
        }
    }

    #[test]
    fn json_stays_compatible() {
        // A spec without the UDP and tarpit fields serialises as before...
        let h = HostSpec::new(Ipv4Addr::new(198, 18, 0, 5)).with_open([22]);
        let text = serde_json::to_string(&h).unwrap();
        assert!(!text.contains("udp") && !text.contains("synack"), "{text}");
        // ...and the new fields round-trip.
        let h = h
            .with_udp_open([9])
            .with_udp_drop(1, 2)
            .with_udp_service(UdpService::Snmp);
        let back: HostSpec = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        let t: HostSpec =
            serde_json::from_str(r#"{"v4":"198.18.0.6","synack_all":true,"udp_services":["ntp"]}"#)
                .unwrap();
        assert!(t.synack_all);
        assert_eq!(t.udp_services, vec![UdpService::Ntp]);
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
