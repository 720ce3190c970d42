//! The network-layer packet NFLOG hands over (an IPv4 or IPv6 header, then TCP or UDP),
//! read into the few fields the guard decides on: addresses, ports, TCP flags, payload.
//!
//! Everything here comes off the network from anyone: every length a header states is
//! checked against the bytes actually there, a packet that does not add up is refused
//! (`None`), and nothing panics or reads past the input. Fragments are refused too: only a
//! whole datagram can be an authorization packet, and the kernel reassembles before the
//! input hook whenever conntrack is loaded (our table's `ct state` rule loads it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::L4;

/// IP protocol numbers (and IPv6 next-header values) this module knows.
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const V6_HOP_BY_HOP: u8 = 0;
const V6_ROUTING: u8 = 43;
const V6_FRAGMENT: u8 = 44;
const V6_AH: u8 = 51;
const V6_DEST_OPTS: u8 = 60;
/// More extension headers than any real packet carries: a chain longer than this is
/// refused rather than walked.
const MAX_V6_EXTENSIONS: usize = 8;

/// What one packet says, as far as the guard cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The source address (the client, or what it looks like from here).
    pub src: IpAddr,
    /// The destination address (one of ours).
    pub dst: IpAddr,
    /// TCP or UDP.
    pub proto: L4,
    /// The source port.
    pub sport: u16,
    /// The destination port (the SPA port, or a knock port).
    pub dport: u16,
    /// The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...); 0 for UDP.
    pub tcp_flags: u8,
    /// The transport payload: for UDP exactly the datagram's data (as its length field
    /// says), for TCP the bytes after the header up to the IP packet's end.
    pub payload: Vec<u8>,
}

/// TCP flag bits (the low byte of the flags field).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Reads an IPv4 or IPv6 packet carrying TCP or UDP; `None` for anything else, for
/// fragments, and for any packet whose stated lengths do not fit the bytes given.
pub fn parse(packet: &[u8]) -> Option<Seen> {
    match packet.first()? >> 4 {
        4 => parse_v4(packet),
        6 => parse_v6(packet),
        _ => None,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn parse_v4(p: &[u8]) -> Option<Seen> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let total = usize::from(be16(p, 2)?);
    // The packet ends where its header says, which may be before the buffer's end (link
    // padding) but never after it (a truncated copy) or inside the header.
    if total < ihl || total > p.len() {
        return None;
    }
    let flags_frag = be16(p, 6)?;
    // More fragments (0x2000) or a non-zero offset: a piece of a datagram, not one.
    if flags_frag & 0x3fff != 0 {
        return None;
    }
    let proto = *p.get(9)?;
    let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
    let l4 = p.get(ihl..total)?;
    transport(
        proto,
        l4,
        IpAddr::V4(Ipv4Addr::from(src)),
        IpAddr::V4(Ipv4Addr::from(dst)),
    )
}

fn parse_v6(p: &[u8]) -> Option<Seen> {
    if p.len() < 40 {
        return None;
    }
    let payload_len = usize::from(be16(p, 4)?);
    // 0 is a jumbogram (a hop-by-hop option gives the length): never an SPA packet.
    if payload_len == 0 || 40 + payload_len > p.len() {
        return None;
    }
    let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
    let body = p.get(40..40 + payload_len)?;
    let mut next = *p.get(6)?;
    let mut at = 0usize;
    for _ in 0..=MAX_V6_EXTENSIONS {
        match next {
            PROTO_TCP | PROTO_UDP => {
                return transport(
                    next,
                    body.get(at..)?,
                    IpAddr::V6(Ipv6Addr::from(src)),
                    IpAddr::V6(Ipv6Addr::from(dst)),
                );
            }
            V6_HOP_BY_HOP | V6_ROUTING | V6_DEST_OPTS => {
                let h = body.get(at..at.checked_add(2)?)?;
                next = h[0];
                at = at.checked_add((usize::from(h[1]) + 1) * 8)?;
            }
            V6_FRAGMENT => {
                let h = body.get(at..at.checked_add(8)?)?;
                let off_m = u16::from_be_bytes([h[2], h[3]]);
                // Offset (high 13 bits) or the M flag (bit 0): a real fragment. An
                // "atomic" fragment (both zero) is a whole datagram: read on.
                if off_m & 0xfff9 != 0 {
                    return None;
                }
                next = h[0];
                at = at.checked_add(8)?;
            }
            V6_AH => {
                let h = body.get(at..at.checked_add(2)?)?;
                next = h[0];
                at = at.checked_add((usize::from(h[1]) + 2) * 4)?;
            }
            // ESP (encrypted: nothing to read), no next header, ICMPv6, anything else.
            _ => return None,
        }
    }
    None
}

fn transport(proto: u8, l4: &[u8], src: IpAddr, dst: IpAddr) -> Option<Seen> {
    let sport = be16(l4, 0)?;
    let dport = be16(l4, 2)?;
    match proto {
        PROTO_UDP => {
            let len = usize::from(be16(l4, 4)?);
            if len < 8 || len > l4.len() {
                return None;
            }
            Some(Seen {
                src,
                dst,
                proto: L4::Udp,
                sport,
                dport,
                tcp_flags: 0,
                payload: l4.get(8..len)?.to_vec(),
            })
        }
        PROTO_TCP => {
            let off = usize::from(*l4.get(12)? >> 4) * 4;
            if off < 20 || off > l4.len() {
                return None;
            }
            Some(Seen {
                src,
                dst,
                proto: L4::Tcp,
                sport,
                dport,
                tcp_flags: *l4.get(13)?,
                payload: l4.get(off..)?.to_vec(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A UDP datagram (header and data) from `sport` to `dport`.
    pub(crate) fn udp(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
        let len = u16::try_from(8 + data.len()).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(data);
        v
    }

    /// A TCP segment with a 20-byte header plus `opts` (a multiple of 4 bytes).
    pub(crate) fn tcp(sport: u16, dport: u16, flags: u8, opts: &[u8], data: &[u8]) -> Vec<u8> {
        let doff = u8::try_from((20 + opts.len()) / 4).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        v.push(doff << 4);
        v.push(flags);
        v.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        v.extend_from_slice(opts);
        v.extend_from_slice(data);
        v
    }

    pub(crate) fn v4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + l4.len()).unwrap();
        let mut v = vec![0x45, 0];
        v.extend_from_slice(&total.to_be_bytes());
        v.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
        v.extend_from_slice(&src);
        v.extend_from_slice(&dst);
        v.extend_from_slice(l4);
        v
    }

    /// An IPv6 packet: `ext` is the extension-header chain (already linked), `first` the
    /// next-header value of the fixed header.
    pub(crate) fn v6(first: u8, src: Ipv6Addr, dst: Ipv6Addr, ext: &[u8], l4: &[u8]) -> Vec<u8> {
        let plen = u16::try_from(ext.len() + l4.len()).unwrap();
        let mut v = vec![0x60, 0, 0, 0];
        v.extend_from_slice(&plen.to_be_bytes());
        v.push(first);
        v.push(64);
        v.extend_from_slice(&src.octets());
        v.extend_from_slice(&dst.octets());
        v.extend_from_slice(ext);
        v.extend_from_slice(l4);
        v
    }

    const A: [u8; 4] = [198, 18, 0, 2];
    const B: [u8; 4] = [198, 18, 0, 1];

    fn a6() -> Ipv6Addr {
        "2001:2::2".parse().unwrap()
    }
    fn b6() -> Ipv6Addr {
        "2001:2::1".parse().unwrap()
    }

    #[test]
    fn ipv4_udp() {
        let p = v4(PROTO_UDP, A, B, &udp(40000, 62201, b"hello"));
        let s = parse(&p).unwrap();
        assert_eq!(s.src, IpAddr::from(A));
        assert_eq!(s.dst, IpAddr::from(B));
        assert_eq!((s.proto, s.sport, s.dport), (L4::Udp, 40000, 62201));
        assert_eq!(s.tcp_flags, 0);
        assert_eq!(s.payload, b"hello");
    }

    #[test]
    fn ipv4_with_options_and_link_padding() {
        let mut p = v4(PROTO_UDP, A, B, &udp(1, 2, b"xy"));
        // IHL 6: four bytes of options (NOPs) after the fixed header.
        p[0] = 0x46;
        p.splice(20..20, [1, 1, 1, 0]);
        let total = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&total.to_be_bytes());
        // Ethernet-style padding past the IP total length is ignored.
        p.extend_from_slice(&[0xee; 10]);
        let s = parse(&p).unwrap();
        assert_eq!(s.payload, b"xy");
    }

    #[test]
    fn udp_payload_ends_at_the_udp_length() {
        let mut l4 = udp(1, 2, b"abcdef");
        l4[4..6].copy_from_slice(&10u16.to_be_bytes());
        let s = parse(&v4(PROTO_UDP, A, B, &l4)).unwrap();
        assert_eq!(s.payload, b"ab");
    }

    #[test]
    fn ipv4_tcp_syn_with_options() {
        let seg = tcp(40001, 7000, tcp_flags::SYN, &[2, 4, 5, 0xb4], b"");
        let s = parse(&v4(PROTO_TCP, A, B, &seg)).unwrap();
        assert_eq!((s.proto, s.sport, s.dport), (L4::Tcp, 40001, 7000));
        assert_eq!(s.tcp_flags, tcp_flags::SYN);
        assert!(s.payload.is_empty());
        let seg = tcp(1, 2, tcp_flags::PSH | tcp_flags::ACK, &[], b"data");
        assert_eq!(parse(&v4(PROTO_TCP, A, B, &seg)).unwrap().payload, b"data");
    }

    #[test]
    fn ipv6_udp_and_tcp() {
        let s = parse(&v6(PROTO_UDP, a6(), b6(), &[], &udp(5, 62201, b"spa"))).unwrap();
        assert_eq!(s.src, IpAddr::V6(a6()));
        assert_eq!(s.dst, IpAddr::V6(b6()));
        assert_eq!((s.proto, s.dport), (L4::Udp, 62201));
        assert_eq!(s.payload, b"spa");
        let seg = tcp(5, 22, tcp_flags::SYN, &[], b"");
        let s = parse(&v6(PROTO_TCP, a6(), b6(), &[], &seg)).unwrap();
        assert_eq!(
            (s.proto, s.dport, s.tcp_flags),
            (L4::Tcp, 22, tcp_flags::SYN)
        );
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        // hop-by-hop (8 bytes) -> destination options (16 bytes) -> atomic fragment -> UDP
        let mut ext = vec![V6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[V6_FRAGMENT, 1, 1, 12]);
        ext.extend_from_slice(&[0; 12]);
        ext.extend_from_slice(&[PROTO_UDP, 0, 0, 0, 0, 0, 0, 7]);
        let p = v6(V6_HOP_BY_HOP, a6(), b6(), &ext, &udp(9, 62201, b"z"));
        let s = parse(&p).unwrap();
        assert_eq!((s.sport, s.dport), (9, 62201));
        assert_eq!(s.payload, b"z");
        // AH: length in 4-byte units minus 2; 12 bytes here.
        let mut ah = vec![PROTO_TCP, 1, 0, 0];
        ah.extend_from_slice(&[0; 8]);
        let p = v6(V6_AH, a6(), b6(), &ah, &tcp(1, 2, tcp_flags::SYN, &[], b""));
        assert_eq!(parse(&p).unwrap().dport, 2);
    }

    #[test]
    fn fragments_are_refused() {
        let mut p = v4(PROTO_UDP, A, B, &udp(1, 2, b"x"));
        p[6] = 0x20; // more fragments
        assert_eq!(parse(&p), None);
        let mut p = v4(PROTO_UDP, A, B, &udp(1, 2, b"x"));
        p[7] = 0x01; // offset 8
        assert_eq!(parse(&p), None);
        for off_m in [0x0001u16, 0x0008] {
            let mut frag = vec![PROTO_UDP, 0];
            frag.extend_from_slice(&off_m.to_be_bytes());
            frag.extend_from_slice(&[0, 0, 0, 1]);
            let p = v6(V6_FRAGMENT, a6(), b6(), &frag, &udp(1, 2, b"x"));
            assert_eq!(parse(&p), None, "{off_m:#x}");
        }
    }

    #[test]
    fn hostile_lengths_are_refused() {
        let good = v4(PROTO_UDP, A, B, &udp(1, 2, b"payload"));
        // Every truncation of a good packet is refused (its total length no longer fits).
        for n in 0..good.len() {
            assert_eq!(parse(&good[..n]), None, "truncated to {n}");
        }
        let mut p = good.clone();
        p[0] = 0x44; // IHL 4 < 5
        assert_eq!(parse(&p), None);
        let mut p = good.clone();
        p[0] = 0x4f; // IHL 15: 60 bytes > total
        assert_eq!(parse(&p), None);
        let mut p = good.clone();
        p[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(parse(&p), None);
        let mut p = good.clone();
        p[20 + 4..20 + 6].copy_from_slice(&7u16.to_be_bytes()); // UDP length < 8
        assert_eq!(parse(&p), None);
        let mut p = good.clone();
        p[20 + 4..20 + 6].copy_from_slice(&200u16.to_be_bytes()); // past the packet
        assert_eq!(parse(&p), None);
        // TCP data offset below 5 or past the segment.
        for doff in [0u8, 4, 15] {
            let mut seg = tcp(1, 2, tcp_flags::SYN, &[], b"");
            seg[12] = doff << 4;
            assert_eq!(parse(&v4(PROTO_TCP, A, B, &seg)), None, "doff {doff}");
        }
        // Other protocols, other versions, empty input.
        assert_eq!(parse(&v4(1, A, B, &[8, 0, 0, 0, 0, 0, 0, 0])), None);
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x50; 60]), None);
    }

    #[test]
    fn hostile_ipv6_is_refused() {
        let good = v6(PROTO_UDP, a6(), b6(), &[], &udp(1, 2, b"abc"));
        for n in 0..good.len() {
            assert_eq!(parse(&good[..n]), None, "truncated to {n}");
        }
        let mut p = good.clone();
        p[4..6].copy_from_slice(&0u16.to_be_bytes()); // jumbogram
        assert_eq!(parse(&p), None);
        // An extension header whose length runs past the packet.
        let ext = [PROTO_UDP, 200, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse(&v6(V6_DEST_OPTS, a6(), b6(), &ext, &udp(1, 2, b""))),
            None
        );
        // A chain of more extension headers than any packet needs.
        let mut ext = Vec::new();
        for _ in 0..=MAX_V6_EXTENSIONS {
            ext.extend_from_slice(&[V6_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        assert_eq!(
            parse(&v6(V6_DEST_OPTS, a6(), b6(), &ext, &udp(1, 2, b""))),
            None
        );
        // ESP and no-next-header.
        assert_eq!(parse(&v6(50, a6(), b6(), &[], &[0; 16])), None);
        assert_eq!(parse(&v6(59, a6(), b6(), &[], &[0; 16])), None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap stand-in for the fuzz target: mutate good packets byte by byte.
        let seeds = [
            v4(PROTO_UDP, A, B, &udp(1, 2, b"payload")),
            v4(PROTO_TCP, A, B, &tcp(1, 2, 2, &[1, 1, 1, 1], b"x")),
            v6(
                V6_HOP_BY_HOP,
                a6(),
                b6(),
                &[PROTO_UDP, 0, 1, 4, 0, 0, 0, 0],
                &udp(1, 2, b"y"),
            ),
        ];
        for seed in &seeds {
            for i in 0..seed.len() {
                for v in [0u8, 1, 0x0f, 0x40, 0x7f, 0x80, 0xff] {
                    let mut p = seed.clone();
                    p[i] = v;
                    let _ = parse(&p);
                }
            }
        }
    }
}
