//! What kind of scan a probe belongs to, and which tool likely sent it.
//!
//! The kind comes from the TCP flags alone (nmap's names): a SYN, a FIN, no flags (NULL),
//! FIN+PSH+URG (Xmas), a bare ACK, FIN+ACK (Maimon), or a UDP datagram. A SYN that carries
//! the option set operating systems put on their own connections (SACK permitted,
//! timestamps or window scaling) is called a connect scan: it came from `connect()`, so the
//! scanner's kernel completes the handshake with open ports. A SYN without them was built by
//! the scanner itself (a half-open "SYN scan"). That is a trait, not a proof: a raw scanner
//! may copy an operating system's options, and is then reported as a connect scan.
//!
//! The tool comes from traits its packets share, observed (July-December 2026) on Debian's
//! nmap 7.93, masscan 1.3.2 and zmap 2.1.1, RustScan 2.x and portolan itself:
//! - zmap: IPv4 identification 54321 on every probe, TTL 255, no TCP options.
//! - masscan: TTL 255, window 1024, a SYN without options, no don't-fragment bit.
//! - nmap (raw scans): window 1024, 2048, 3072 or 4096, a SYN with one MSS option and
//!   nothing else, or a FIN/NULL/Xmas/ACK probe with no options; a new random TTL on
//!   almost every probe, and one sequence number for every port of a scan.
//! - portolan `scan -sS`: window 1024 and one MSS option like nmap, but a fixed TTL, a
//!   sequence number per probe (a keyed hash) and source ports from one block of eight.
//! - RustScan (and other connect scanners): the kernel's own SYNs; RustScan tries ports in
//!   ascending order, thousands at a time.
//!
//! Each guess is reported as "likely", with the trait that decided it.

use std::fmt;

use serde::Serialize;

use crate::packet::{flags, Packet, Transport};

/// How a scan probes, in nmap's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    /// Half-open: SYNs the scanner built itself.
    Syn,
    /// Full connections: the scanner's kernel sent the SYNs.
    Connect,
    Fin,
    Null,
    Xmas,
    Ack,
    /// FIN+ACK.
    Maimon,
    /// Any other combination of TCP flags on a first packet.
    OtherTcp,
    Udp,
    /// Connections to ports the scan found open: service and version detection (nmap
    /// -sV, `portolan scan --probe`) following the port scan.
    Version,
}

impl ScanKind {
    pub const ALL: [ScanKind; 10] = [
        ScanKind::Syn,
        ScanKind::Connect,
        ScanKind::Fin,
        ScanKind::Null,
        ScanKind::Xmas,
        ScanKind::Ack,
        ScanKind::Maimon,
        ScanKind::OtherTcp,
        ScanKind::Udp,
        ScanKind::Version,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ScanKind::Syn => "syn",
            ScanKind::Connect => "connect",
            ScanKind::Fin => "fin",
            ScanKind::Null => "null",
            ScanKind::Xmas => "xmas",
            ScanKind::Ack => "ack",
            ScanKind::Maimon => "maimon",
            ScanKind::OtherTcp => "other_tcp",
            ScanKind::Udp => "udp",
            ScanKind::Version => "version",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ScanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a SYN carries an operating system's own options.
fn os_syn(p: &Packet) -> bool {
    p.options.sack_ok || p.options.timestamp || p.options.wscale.is_some()
}

/// The kind of scan one first packet belongs to.
pub fn kind(p: &Packet) -> ScanKind {
    const F: u8 = flags::FIN | flags::SYN | flags::RST | flags::PSH | flags::ACK | flags::URG;
    if p.transport == Transport::Udp {
        return ScanKind::Udp;
    }
    match p.flags & F {
        flags::SYN => {
            if os_syn(p) {
                ScanKind::Connect
            } else {
                ScanKind::Syn
            }
        }
        flags::FIN => ScanKind::Fin,
        0 => ScanKind::Null,
        f if f == flags::FIN | flags::PSH | flags::URG => ScanKind::Xmas,
        flags::ACK => ScanKind::Ack,
        f if f == flags::FIN | flags::ACK => ScanKind::Maimon,
        _ => ScanKind::OtherTcp,
    }
}

/// A scanning tool portolan can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    Nmap,
    Masscan,
    Zmap,
    Rustscan,
    Portolan,
}

impl Tool {
    pub const fn as_str(self) -> &'static str {
        match self {
            Tool::Nmap => "nmap",
            Tool::Masscan => "masscan",
            Tool::Zmap => "zmap",
            Tool::Rustscan => "rustscan",
            Tool::Portolan => "portolan",
        }
    }
}

/// A tool guess and the trait that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolGuess {
    pub tool: Tool,
    /// The trait, in words.
    pub because: String,
}

/// The traits of one source's first packets, gathered as they come.
#[derive(Debug, Clone, Default)]
pub struct Traits {
    kinds: [u32; ScanKind::ALL.len()],
    probes: u32,
    ttl_min: u8,
    ttl_max: u8,
    /// Distinct TTL changes between consecutive probes.
    ttl_changes: u32,
    last_ttl: Option<u8>,
    first_seq: Option<u32>,
    same_seq: u32,
    /// IPv4 identification 54321 with no options.
    zmap_like: u32,
    /// TTL 255, window 1024, SYN without options.
    masscan_like: u32,
    /// Window 1024-4096 step 1024, SYN with MSS only, or a stealth probe without options.
    nmapish: u32,
    /// The kernel's own SYNs.
    os_syns: u32,
    sport_min: u16,
    sport_max: u16,
    /// Consecutive first contacts whose port was above the one before (TCP connect).
    ascending: u32,
    steps: u32,
    last_port: Option<u16>,
}

impl Traits {
    /// Takes one first packet (a new contact) into account.
    pub fn observe(&mut self, p: &Packet) {
        self.observe_as(p, kind(p));
    }

    /// [`Traits::observe`], with the kind decided by the caller (a connection to a port
    /// the scan found open is [`ScanKind::Version`]).
    pub fn observe_as(&mut self, p: &Packet, k: ScanKind) {
        self.kinds[k.index()] = self.kinds[k.index()].saturating_add(1);
        if self.probes == 0 {
            self.ttl_min = p.ttl;
            self.ttl_max = p.ttl;
            self.sport_min = p.sport;
            self.sport_max = p.sport;
        }
        self.probes = self.probes.saturating_add(1);
        self.ttl_min = self.ttl_min.min(p.ttl);
        self.ttl_max = self.ttl_max.max(p.ttl);
        if self.last_ttl.is_some_and(|t| t != p.ttl) {
            self.ttl_changes = self.ttl_changes.saturating_add(1);
        }
        self.last_ttl = Some(p.ttl);
        self.sport_min = self.sport_min.min(p.sport);
        self.sport_max = self.sport_max.max(p.sport);
        if p.transport == Transport::Tcp {
            match self.first_seq {
                None => self.first_seq = Some(p.seq),
                Some(s) if s == p.seq => self.same_seq = self.same_seq.saturating_add(1),
                Some(_) => {}
            }
        }
        let no_opts = p.options.count == 0;
        if p.ip_id == Some(54321) && no_opts {
            self.zmap_like = self.zmap_like.saturating_add(1);
        }
        match k {
            ScanKind::Syn => {
                if p.ttl == 255 && p.window == 1024 && no_opts && !p.df {
                    self.masscan_like = self.masscan_like.saturating_add(1);
                }
                if matches!(p.window, 1024 | 2048 | 3072 | 4096) && p.options.mss_only() && !p.df {
                    self.nmapish = self.nmapish.saturating_add(1);
                }
            }
            ScanKind::Fin
            | ScanKind::Null
            | ScanKind::Xmas
            | ScanKind::Ack
            | ScanKind::Maimon
            | ScanKind::OtherTcp => {
                if matches!(p.window, 1024 | 2048 | 3072 | 4096) && no_opts && !p.df {
                    self.nmapish = self.nmapish.saturating_add(1);
                }
            }
            ScanKind::Connect => {
                self.os_syns = self.os_syns.saturating_add(1);
                if let Some(last) = self.last_port {
                    self.steps = self.steps.saturating_add(1);
                    if p.dport > last {
                        self.ascending = self.ascending.saturating_add(1);
                    }
                }
                self.last_port = Some(p.dport);
            }
            ScanKind::Udp | ScanKind::Version => {}
        }
    }

    /// First packets seen.
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// The kinds seen, most frequent first; kinds below a twentieth of the probes are left
    /// out unless nothing else is there (a stray packet does not make a scan a Xmas scan).
    pub fn kinds(&self) -> Vec<ScanKind> {
        let mut v: Vec<(u32, ScanKind)> = ScanKind::ALL
            .into_iter()
            .map(|k| (self.kinds[k.index()], k))
            .filter(|(n, _)| *n > 0)
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let total: u64 = v.iter().map(|(n, _)| u64::from(*n)).sum();
        let mut out: Vec<ScanKind> = v
            .iter()
            .filter(|(n, _)| u64::from(*n) * 20 >= total)
            .map(|(_, k)| *k)
            .collect();
        if out.is_empty() {
            out.extend(v.first().map(|(_, k)| *k));
        }
        // Version detection is a few connections after many probes: always named.
        if self.kinds[ScanKind::Version.index()] > 0 && !out.contains(&ScanKind::Version) {
            out.push(ScanKind::Version);
        }
        out
    }

    /// How many of the first packets were of kind `k`.
    pub fn count(&self, k: ScanKind) -> u32 {
        self.kinds[k.index()]
    }

    /// The likely tool, once enough probes agree (at least 3, and most of them).
    pub fn tool(&self) -> Option<ToolGuess> {
        let n = self.probes;
        if n < 3 {
            return None;
        }
        let most = |k: u32| u64::from(k) * 10 >= u64::from(n) * 7;
        let guess = |tool, because: String| Some(ToolGuess { tool, because });
        if most(self.zmap_like) {
            return guess(
                Tool::Zmap,
                format!(
                    "IP identification 54321 and no TCP options on {} of {n} probes",
                    self.zmap_like
                ),
            );
        }
        if most(self.masscan_like) {
            return guess(
                Tool::Masscan,
                format!(
                    "TTL 255, window 1024 and a SYN without options on {} of {n} probes",
                    self.masscan_like
                ),
            );
        }
        let tcp = n.saturating_sub(self.kinds[ScanKind::Udp.index()]);
        if tcp >= 3 && most(self.nmapish) {
            let varied_ttl = u64::from(self.ttl_changes) * 2 >= u64::from(n.saturating_sub(1));
            let one_seq = self.same_seq + 1 >= tcp;
            if varied_ttl || one_seq {
                return guess(
                    Tool::Nmap,
                    format!(
                        "window {} with {} on {} of {n} probes, {}",
                        "1024-4096",
                        if self.kinds[ScanKind::Syn.index()] > 0 {
                            "a SYN carrying only an MSS option"
                        } else {
                            "no TCP options"
                        },
                        self.nmapish,
                        if varied_ttl {
                            format!(
                                "a new TTL on most probes ({}-{})",
                                self.ttl_min, self.ttl_max
                            )
                        } else {
                            "one sequence number for every port".to_owned()
                        }
                    ),
                );
            }
            if self.ttl_min == self.ttl_max && self.sport_max - self.sport_min < 8 {
                return guess(
                    Tool::Portolan,
                    format!(
                        "window 1024 with a SYN carrying only an MSS option, a fixed TTL \
                         ({}), a sequence number per probe and source ports {}-{}",
                        self.ttl_min, self.sport_min, self.sport_max
                    ),
                );
            }
        }
        // nmap's UDP scan: raw datagrams with a new TTL on most probes, from one port.
        let udp = self.kinds[ScanKind::Udp.index()];
        if udp >= 3
            && most(udp)
            && self.sport_min == self.sport_max
            && u64::from(self.ttl_changes) * 2 >= u64::from(n.saturating_sub(1))
        {
            return guess(
                Tool::Nmap,
                format!(
                    "UDP probes from one source port with a new TTL on most ({}-{})",
                    self.ttl_min, self.ttl_max
                ),
            );
        }
        if self.os_syns >= 20
            && most(self.os_syns)
            && u64::from(self.ascending) * 10 >= u64::from(self.steps) * 9
        {
            return guess(
                Tool::Rustscan,
                format!(
                    "connect() SYNs to ports in ascending order ({} of {} steps up)",
                    self.ascending, self.steps
                ),
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::parse;
    use crate::packet::tests::{tcp4, LINUX_SYN_OPTIONS};

    fn syn(ttl: u8, ip_id: u16, window: u16, opts: &[u8], dport: u16) -> Packet {
        parse(&tcp4(
            [198, 18, 0, 9],
            [198, 18, 0, 2],
            40000,
            dport,
            flags::SYN,
            ttl,
            ip_id,
            window,
            opts,
        ))
        .unwrap()
    }

    #[test]
    fn kinds_from_flags() {
        let mut p = syn(64, 1, 64240, &LINUX_SYN_OPTIONS, 80);
        assert_eq!(kind(&p), ScanKind::Connect);
        p.options = crate::packet::TcpOptions::default();
        assert_eq!(kind(&p), ScanKind::Syn);
        for (f, k) in [
            (flags::FIN, ScanKind::Fin),
            (0, ScanKind::Null),
            (flags::FIN | flags::PSH | flags::URG, ScanKind::Xmas),
            (flags::ACK, ScanKind::Ack),
            (flags::FIN | flags::ACK, ScanKind::Maimon),
            (flags::SYN | flags::FIN, ScanKind::OtherTcp),
            // ECN bits do not change what a SYN is.
            (flags::SYN | flags::ECE | flags::CWR, ScanKind::Syn),
        ] {
            p.flags = f;
            assert_eq!(kind(&p), k, "flags {f:#x}");
        }
    }

    #[test]
    #[allow(clippy::many_single_char_names)]
    fn names_zmap_masscan_nmap_and_portolan_by_their_traits() {
        let mut z = Traits::default();
        for port in 1..=5 {
            z.observe(&syn(255, 54321, 65535, &[], port));
        }
        assert_eq!(z.tool().unwrap().tool, Tool::Zmap);

        let mut m = Traits::default();
        for port in 1..=5 {
            m.observe(&syn(255, port * 77, 1024, &[], port));
        }
        assert_eq!(m.tool().unwrap().tool, Tool::Masscan);

        let mss = [2, 4, 0x05, 0xb4];
        let mut n = Traits::default();
        for (i, port) in (1..=6).enumerate() {
            n.observe(&syn(37 + u8::try_from(i * 3).unwrap(), 9, 1024, &mss, port));
        }
        let g = n.tool().unwrap();
        assert_eq!(g.tool, Tool::Nmap, "{}", g.because);
        assert_eq!(n.kinds(), vec![ScanKind::Syn]);

        let mut p = Traits::default();
        for port in 1..=6 {
            let mut k = syn(64, 9, 1024, &mss, port);
            k.seq = u32::from(port) * 7919;
            k.sport = 50000 + port % 8;
            p.observe(&k);
        }
        assert_eq!(p.tool().unwrap().tool, Tool::Portolan);
    }

    #[test]
    fn ascending_connects_are_rustscan_random_ones_are_not_named() {
        let mut r = Traits::default();
        for port in 1..=40 {
            r.observe(&syn(64, 1, 64240, &LINUX_SYN_OPTIONS, port));
        }
        assert_eq!(r.tool().unwrap().tool, Tool::Rustscan);
        assert_eq!(r.kinds(), vec![ScanKind::Connect]);
        let mut c = Traits::default();
        let mut x = 7u16;
        for _ in 0..40 {
            x = x.wrapping_mul(31).wrapping_add(17) % 1000;
            c.observe(&syn(64, 1, 64240, &LINUX_SYN_OPTIONS, x));
        }
        assert_eq!(c.tool(), None);
    }

    #[test]
    fn a_stray_packet_does_not_change_the_kind() {
        let mut t = Traits::default();
        for port in 1..=40 {
            t.observe(&syn(64, 1, 64240, &LINUX_SYN_OPTIONS, port));
        }
        let mut x = syn(64, 1, 64240, &[], 9);
        x.flags = flags::FIN | flags::PSH | flags::URG;
        t.observe(&x);
        assert_eq!(t.kinds(), vec![ScanKind::Connect]);
    }
}
