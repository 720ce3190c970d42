//! The inbound packet NFLOG (or an AF_PACKET socket) hands over, read into the fields scan
//! detection decides on: addresses, ports, TCP flags, and the header traits that tell one
//! scanner from another (TTL, IP identification, don't-fragment, TCP window, sequence and
//! acknowledgement numbers, the TCP options and their order).
//!
//! Everything here comes off the network from anyone: every length a header states is
//! checked against the bytes there, a packet that does not add up is refused (`None`), and
//! nothing panics or reads past the input (a fuzz target, `sentry_packet`, holds it to that).
//! Fragments after the first are refused: they carry no ports. A first fragment is read
//! (its ports are there) but marked, since fragmenting probes is itself a scanner's trait.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const V6_HOP_BY_HOP: u8 = 0;
const V6_ROUTING: u8 = 43;
const V6_FRAGMENT: u8 = 44;
const V6_AH: u8 = 51;
const V6_DEST_OPTS: u8 = 60;
/// A longer chain of IPv6 extension headers than any real packet carries is refused.
const MAX_V6_EXTENSIONS: usize = 8;

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// TCP flag bits (the low byte of the flags field).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// The TCP options of a segment, as far as telling stacks apart needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TcpOptions {
    /// Maximum segment size, when the option is there.
    pub mss: Option<u16>,
    /// Window scale shift, when the option is there.
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack_ok: bool,
    /// A timestamp option.
    pub timestamp: bool,
    /// The option kinds in order, NOP and EOL included, at most 10 of them (the rest are
    /// counted in `count` but not kept): the "layout" p0f-style fingerprints compare.
    pub layout: [u8; 10],
    /// How many options (NOP and EOL included) the header carries.
    pub count: u8,
}

impl TcpOptions {
    /// The option kinds in order, as far as kept.
    pub fn kinds(&self) -> &[u8] {
        &self.layout[..usize::from(self.count).min(self.layout.len())]
    }

    /// Whether the options are exactly one MSS option.
    pub fn mss_only(&self) -> bool {
        self.count == 1 && self.mss.is_some()
    }
}

/// One inbound packet, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    pub sport: u16,
    pub dport: u16,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// IPv4 identification; `None` for IPv6.
    pub ip_id: Option<u16>,
    /// IPv4 don't-fragment; false for IPv6.
    pub df: bool,
    /// The first fragment of a fragmented datagram.
    pub fragment: bool,
    /// TCP flags byte; 0 for UDP.
    pub flags: u8,
    /// TCP window; 0 for UDP.
    pub window: u16,
    /// TCP sequence and acknowledgement numbers; 0 for UDP.
    pub seq: u32,
    pub ack: u32,
    /// TCP options; empty for UDP.
    pub options: TcpOptions,
    /// Bytes of transport payload (UDP: as its length field says; TCP: after the header to
    /// the IP packet's end, as far as the copy reaches).
    pub payload_len: u16,
}

impl Packet {
    /// Whether this is a TCP segment with `bits` set and none of `mask`'s other bits.
    pub fn tcp_flags_are(&self, mask: u8, bits: u8) -> bool {
        self.transport == Transport::Tcp && self.flags & mask == bits
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads an IPv4 or IPv6 packet carrying TCP or UDP. `None` for other protocols, later
/// fragments, and any packet whose lengths do not add up. The copy may be shorter than the
/// packet (a snap length): what the headers need must be there; the payload may be cut.
pub fn parse(packet: &[u8]) -> Option<Packet> {
    match packet.first()? >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        _ => None,
    }
}

/// The IP header's facts a transport parse carries along.
#[allow(clippy::struct_field_names)] // ip_id is the header field's name
struct Ip {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    ip_id: Option<u16>,
    df: bool,
    fragment: bool,
    /// Bytes of transport (header and payload) the IP header says there are.
    l4_len: usize,
}

fn parse_v4(p: &[u8]) -> Option<Packet> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    if ihl < 20 || ihl > p.len() {
        return None;
    }
    let total = usize::from(be16(p, 2)?);
    if total < ihl {
        return None;
    }
    let flags_frag = be16(p, 6)?;
    // A non-zero offset: a later piece, without ports.
    if flags_frag & 0x1fff != 0 {
        return None;
    }
    let ip = Ip {
        src: IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(p.get(12..16)?).ok()?)),
        dst: IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(p.get(16..20)?).ok()?)),
        ttl: *p.get(8)?,
        ip_id: Some(be16(p, 4)?),
        df: flags_frag & 0x4000 != 0,
        fragment: flags_frag & 0x2000 != 0,
        l4_len: total - ihl,
    };
    transport(*p.get(9)?, p.get(ihl..)?, &ip)
}

fn parse_v6(p: &[u8]) -> Option<Packet> {
    if p.len() < 40 {
        return None;
    }
    let payload_len = usize::from(be16(p, 4)?);
    // 0 is a jumbogram: not a probe anyone sends.
    if payload_len == 0 {
        return None;
    }
    let body = p.get(40..)?;
    let mut ip = Ip {
        src: IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p.get(8..24)?).ok()?)),
        dst: IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(p.get(24..40)?).ok()?)),
        ttl: *p.get(7)?,
        ip_id: None,
        df: false,
        fragment: false,
        l4_len: payload_len,
    };
    let mut next = *p.get(6)?;
    let mut at = 0usize;
    for _ in 0..=MAX_V6_EXTENSIONS {
        match next {
            PROTO_TCP | PROTO_UDP => {
                ip.l4_len = ip.l4_len.checked_sub(at)?;
                return transport(next, body.get(at..)?, &ip);
            }
            V6_HOP_BY_HOP | V6_ROUTING | V6_DEST_OPTS => {
                let h = body.get(at..at.checked_add(2)?)?;
                next = h[0];
                at = at.checked_add((usize::from(h[1]) + 1) * 8)?;
            }
            V6_FRAGMENT => {
                let h = body.get(at..at.checked_add(8)?)?;
                let off_m = u16::from_be_bytes([h[2], h[3]]);
                if off_m & 0xfff8 != 0 {
                    return None;
                }
                ip.fragment |= off_m & 1 != 0;
                next = h[0];
                at = at.checked_add(8)?;
            }
            V6_AH => {
                let h = body.get(at..at.checked_add(2)?)?;
                next = h[0];
                at = at.checked_add((usize::from(h[1]) + 2) * 4)?;
            }
            _ => return None,
        }
    }
    None
}

fn transport(proto: u8, l4: &[u8], ip: &Ip) -> Option<Packet> {
    let sport = be16(l4, 0)?;
    let dport = be16(l4, 2)?;
    let mut pk = Packet {
        src: ip.src,
        dst: ip.dst,
        transport: Transport::Udp,
        sport,
        dport,
        ttl: ip.ttl,
        ip_id: ip.ip_id,
        df: ip.df,
        fragment: ip.fragment,
        flags: 0,
        window: 0,
        seq: 0,
        ack: 0,
        options: TcpOptions::default(),
        payload_len: 0,
    };
    match proto {
        PROTO_UDP => {
            let len = usize::from(be16(l4, 4)?);
            // The UDP length may not claim more than the IP header gives it (the copy
            // may hold less: a snap length).
            if len < 8 || len > ip.l4_len {
                return None;
            }
            pk.payload_len = u16::try_from(len - 8).ok()?;
            Some(pk)
        }
        PROTO_TCP => {
            let off = usize::from(*l4.get(12)? >> 4) * 4;
            if off < 20 || off > ip.l4_len {
                return None;
            }
            pk.transport = Transport::Tcp;
            pk.seq = be32(l4, 4)?;
            pk.ack = be32(l4, 8)?;
            pk.flags = *l4.get(13)?;
            pk.window = be16(l4, 14)?;
            pk.options = tcp_options(l4.get(20..off)?)?;
            pk.payload_len = u16::try_from(ip.l4_len - off).ok()?;
            Some(pk)
        }
        _ => None,
    }
}

/// Walks TCP options; `None` when an option's length runs past the header (a malformed
/// header, as a stack would refuse it).
fn tcp_options(mut o: &[u8]) -> Option<TcpOptions> {
    let mut t = TcpOptions::default();
    while let Some(&kind) = o.first() {
        if let Some(slot) = t.layout.get_mut(usize::from(t.count)) {
            *slot = kind;
        }
        t.count = t.count.saturating_add(1);
        match kind {
            0 => break,
            1 => {
                o = &o[1..];
                continue;
            }
            _ => {}
        }
        let len = usize::from(*o.get(1)?);
        if len < 2 || len > o.len() {
            return None;
        }
        let body = &o[2..len];
        match (kind, body.len()) {
            (2, 2) => t.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            (3, 1) => t.wscale = Some(body[0]),
            (4, 0) => t.sack_ok = true,
            (8, 8) => t.timestamp = true,
            _ => {}
        }
        o = &o[len..];
    }
    Some(t)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPv4 TCP packet with the given traits (checksums left zero: nothing reads them).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tcp4(
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        flags: u8,
        ttl: u8,
        ip_id: u16,
        window: u16,
        options: &[u8],
    ) -> Vec<u8> {
        assert!(options.len().is_multiple_of(4));
        let tcp_len = 20 + options.len();
        let total = 20 + tcp_len;
        let mut v = vec![0x45, 0, 0, 0];
        v[2..4].copy_from_slice(&u16::try_from(total).unwrap().to_be_bytes());
        v.extend_from_slice(&ip_id.to_be_bytes());
        v.extend_from_slice(&[0, 0, ttl, PROTO_TCP, 0, 0]);
        v.extend_from_slice(&src);
        v.extend_from_slice(&dst);
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.push(u8::try_from(tcp_len / 4).unwrap() << 4);
        v.push(flags);
        v.extend_from_slice(&window.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(options);
        v
    }

    /// Linux's SYN options: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    pub(crate) const LINUX_SYN_OPTIONS: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    #[test]
    fn reads_a_linux_syn() {
        let p = tcp4(
            [198, 18, 0, 1],
            [198, 18, 0, 2],
            40000,
            22,
            flags::SYN,
            64,
            7,
            64240,
            &LINUX_SYN_OPTIONS,
        );
        let k = parse(&p).unwrap();
        assert_eq!(k.transport, Transport::Tcp);
        assert_eq!((k.sport, k.dport, k.ttl, k.window), (40000, 22, 64, 64240));
        assert_eq!(k.options.mss, Some(1460));
        assert_eq!(k.options.wscale, Some(7));
        assert!(k.options.sack_ok && k.options.timestamp);
        assert_eq!(k.options.kinds(), &[2, 4, 8, 1, 3]);
        assert!(!k.options.mss_only());
        assert_eq!(k.ip_id, Some(7));
    }

    #[test]
    fn reads_udp_and_ipv6() {
        let mut v6 = vec![0x60, 0, 0, 0, 0, 12, PROTO_UDP, 57];
        v6.extend_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1).octets());
        v6.extend_from_slice(&Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2).octets());
        v6.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        let k = parse(&v6).unwrap();
        assert_eq!(k.transport, Transport::Udp);
        assert_eq!((k.sport, k.dport, k.ttl, k.payload_len), (12345, 53, 57, 4));
        assert_eq!(k.ip_id, None);
    }

    #[test]
    fn a_snap_length_may_cut_the_payload_but_not_the_headers() {
        let mut p = tcp4(
            [1, 1, 1, 1],
            [2, 2, 2, 2],
            1,
            2,
            flags::SYN,
            64,
            1,
            1024,
            &[],
        );
        // Claim 100 bytes of payload the copy does not hold.
        p[2..4].copy_from_slice(&140u16.to_be_bytes());
        assert_eq!(parse(&p).unwrap().payload_len, 100);
        // Cut into the TCP header: refused.
        assert_eq!(parse(&p[..30]), None);
    }

    #[test]
    fn hostile_packets_are_refused_without_panicking() {
        let good = tcp4(
            [1, 1, 1, 1],
            [2, 2, 2, 2],
            1,
            2,
            flags::SYN,
            64,
            1,
            1024,
            &LINUX_SYN_OPTIONS,
        );
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        // An option whose length runs past the header.
        let mut bad = good.clone();
        bad[40 + 1] = 40;
        assert_eq!(parse(&bad), None);
        // A zero-length option (would loop forever if trusted).
        let mut zero = good.clone();
        zero[40 + 1] = 0;
        assert_eq!(parse(&zero), None);
        // Total length shorter than the header.
        let mut short = good.clone();
        short[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse(&short), None);
        // A later fragment.
        let mut frag = good.clone();
        frag[6..8].copy_from_slice(&0x0010u16.to_be_bytes());
        assert_eq!(parse(&frag), None);
        // Every byte value in every position of a small packet.
        for i in 0..good.len() {
            for b in [0u8, 1, 0x0f, 0x40, 0x45, 0x60, 0xff] {
                let mut m = good.clone();
                m[i] = b;
                let _ = parse(&m);
            }
        }
    }
}
