//! The raw scans' packets: probes built in user space, answers read from untrusted bytes.
//! No I/O here.
//!
//! A probe carries a cookie: its sequence number (and, for ACK probes, its acknowledgement
//! number) is a keyed hash of the target's address and port and our source port, plus a
//! small offset that tells kinds of probes apart (every retry of a probe carries the same
//! number, as TCP's own retransmissions do). An answer is matched by recomputing the hash: a SYN-ACK or reset
//! acknowledges `cookie + 1`, an ICMP error quotes our header with the cookie in it. A
//! packet that does not carry the right value (a stray, a forgery, another program's
//! traffic) is ignored, and no per-probe state is needed to tell.
//!
//! Every parser takes any bytes and returns `None` for anything it cannot read; it never
//! panics and never reads past the slice (fuzzed: `fuzz/fuzz_targets/raw_packet.rs`).

use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use siphasher::sip::SipHasher24;

use crate::icmp::checksum;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// IP protocol numbers.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Offsets a cookie can tell apart (the offset is added to the hash).
pub const MAX_ATTEMPTS: u32 = 64;

/// The TCP window our probes advertise, and the MSS option they carry (a SYN without
/// options looks odd to some stacks and middleboxes).
const WINDOW: u16 = 1024;
const MSS: u16 = 1460;
/// TCP header with the MSS option.
const TCP_LEN: usize = 24;

/// Size of the largest probe [`build_tcp`] writes.
pub const MAX_TCP_PROBE: usize = 40 + TCP_LEN;

/// The per-scan key of the probes' cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookie {
    k0: u64,
    k1: u64,
}

impl Cookie {
    pub fn new(k0: u64, k1: u64) -> Cookie {
        Cookie { k0, k1 }
    }

    /// The hash of one flow: the remote address and port, our source port and the
    /// protocol. Truncated to 32 bits, the width of a sequence number.
    pub fn flow(&self, remote: SocketAddr, local_port: u16, proto: u8) -> u32 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        match remote.ip() {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        h.write(&remote.port().to_be_bytes());
        h.write(&local_port.to_be_bytes());
        h.write_u8(proto);
        // The low half of the hash: a sequence number's width.
        #[allow(clippy::cast_possible_truncation)]
        let v = h.finish() as u32;
        v
    }

    /// The sequence number of a probe of this flow with offset `attempt`.
    pub fn seq(&self, remote: SocketAddr, local_port: u16, attempt: u8) -> u32 {
        self.flow(remote, local_port, PROTO_TCP)
            .wrapping_add(u32::from(attempt))
    }

    /// The offset a value carried back (a sequence number or `ack - 1`) holds, if it is
    /// one of ours.
    pub fn attempt(&self, remote: SocketAddr, local_port: u16, value: u32) -> Option<u8> {
        let d = value.wrapping_sub(self.flow(remote, local_port, PROTO_TCP));
        if d < MAX_ATTEMPTS {
            u8::try_from(d).ok()
        } else {
            None
        }
    }
}

/// One TCP probe.
#[derive(Debug, Clone, Copy)]
pub struct TcpProbe {
    pub src: IpAddr,
    pub dst: SocketAddr,
    pub sport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub ttl: u8,
    /// IPv4 identification (ignored for IPv6).
    pub ip_id: u16,
}

/// Sums 16-bit words for a checksum, without folding or inverting.
fn sum_words(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// The transport checksum over the pseudo-header of `src` and `dst` and `segment` (whose
/// checksum field must be zero). `None` when the two addresses are of different families.
pub fn transport_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> Option<u16> {
    let len = u32::try_from(segment.len()).ok()?;
    let mut sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut s = sum_words(&s.octets(), 0);
            s = sum_words(&d.octets(), s);
            s + u32::from(proto) + len
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut s = sum_words(&s.octets(), 0);
            s = sum_words(&d.octets(), s);
            s + (len >> 16) + (len & 0xffff) + u32::from(proto)
        }
        _ => return None,
    };
    sum = sum_words(segment, sum);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded to 16 bits above.
    #[allow(clippy::cast_possible_truncation)]
    let folded = sum as u16;
    // A computed UDP checksum of zero is sent as all ones (zero means "none").
    Some(if folded == 0xffff && proto == PROTO_UDP {
        0xffff
    } else {
        !folded
    })
}

/// Writes the IP header for a transport segment of `payload_len` bytes; returns its length.
fn write_ip(
    buf: &mut [u8],
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ttl: u8,
    id: u16,
    payload_len: usize,
) -> Option<usize> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + payload_len).ok()?;
            let h = buf.get_mut(..20)?;
            h.fill(0);
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&id.to_be_bytes());
            h[8] = ttl;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = checksum(h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            Some(20)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(payload_len).ok()?;
            let h = buf.get_mut(..40)?;
            h.fill(0);
            h[0] = 0x60;
            h[4..6].copy_from_slice(&plen.to_be_bytes());
            h[6] = proto;
            h[7] = ttl;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
            Some(40)
        }
        _ => None,
    }
}

/// Writes a whole TCP probe, IP header included, into `buf`; returns its length. `None`
/// when the addresses are of different families or `buf` is too small.
pub fn build_tcp(buf: &mut [u8], p: &TcpProbe) -> Option<usize> {
    let ip_len = write_ip(buf, p.src, p.dst.ip(), PROTO_TCP, p.ttl, p.ip_id, TCP_LEN)?;
    let t = buf.get_mut(ip_len..ip_len + TCP_LEN)?;
    t[0..2].copy_from_slice(&p.sport.to_be_bytes());
    t[2..4].copy_from_slice(&p.dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&p.seq.to_be_bytes());
    t[8..12].copy_from_slice(&p.ack.to_be_bytes());
    t[12] = 6 << 4; // data offset: 6 words (the MSS option)
    t[13] = p.flags;
    t[14..16].copy_from_slice(&WINDOW.to_be_bytes());
    t[16..20].fill(0); // checksum, urgent pointer
    t[20] = 2; // MSS
    t[21] = 4;
    t[22..24].copy_from_slice(&MSS.to_be_bytes());
    let c = transport_checksum(p.src, p.dst.ip(), PROTO_TCP, t)?;
    t[16..18].copy_from_slice(&c.to_be_bytes());
    Some(ip_len + TCP_LEN)
}

/// Writes a whole UDP probe, IP header included, into `buf`; returns its length.
#[allow(clippy::too_many_arguments)]
pub fn build_udp(
    buf: &mut Vec<u8>,
    src: IpAddr,
    dst: SocketAddr,
    sport: u16,
    ttl: u8,
    ip_id: u16,
    payload: &[u8],
) -> Option<usize> {
    let udp_len = 8 + payload.len();
    let len16 = u16::try_from(udp_len).ok()?;
    buf.clear();
    buf.resize(40 + udp_len, 0);
    let ip_len = write_ip(buf, src, dst.ip(), PROTO_UDP, ttl, ip_id, udp_len)?;
    let u = buf.get_mut(ip_len..ip_len + udp_len)?;
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dst.port().to_be_bytes());
    u[4..6].copy_from_slice(&len16.to_be_bytes());
    u[6..8].fill(0);
    u[8..].copy_from_slice(payload);
    let c = transport_checksum(src, dst.ip(), PROTO_UDP, u)?;
    u[6..8].copy_from_slice(&c.to_be_bytes());
    buf.truncate(ip_len + udp_len);
    Some(buf.len())
}

/// What an ICMP destination-unreachable says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreach {
    Net,
    Host,
    Protocol,
    Port,
    /// Administratively prohibited (IPv4 codes 9, 10, 13; ICMPv6 code 1) or a
    /// source-policy failure (ICMPv6 codes 5 and 6).
    Prohibited,
    /// Any other code (IPv4 code 4 "fragmentation needed" among them).
    Other,
}

/// The header of one of our probes as an ICMP error quotes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub proto: u8,
    /// Our address as the probe carried it (with several `-S` addresses, which one).
    pub src: IpAddr,
    pub dst: SocketAddr,
    pub sport: u16,
    /// The TCP sequence number (the first 8 bytes of the transport header are always
    /// quoted, RFC 792 and 4443, and carry it).
    pub seq: Option<u32>,
}

/// A packet the raw scans care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Tcp {
        from: SocketAddr,
        to_port: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        ttl: Option<u8>,
    },
    Udp {
        from: SocketAddr,
        to_port: u16,
        ttl: Option<u8>,
    },
    Unreachable {
        /// Who sent the error: the target itself or a router on the way.
        from: IpAddr,
        kind: Unreach,
        quoted: Quoted,
        ttl: Option<u8>,
    },
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// An IPv4 header: (header length, protocol, source, destination, ttl, payload end).
fn ipv4_header(p: &[u8]) -> Option<(usize, u8, Ipv4Addr, Ipv4Addr, u8, usize)> {
    let first = *p.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return None;
    }
    // A later fragment has no transport header.
    if be16(p, 6)? & 0x1fff != 0 {
        return None;
    }
    let total = usize::from(be16(p, 2)?);
    let end = total.clamp(ihl, p.len());
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(p.get(12..16)?).ok()?);
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(p.get(16..20)?).ok()?);
    Some((ihl, p[9], src, dst, p[8], end))
}

/// Reads a TCP or UDP header from `from`.
fn transport(proto: u8, seg: &[u8], from: IpAddr, ttl: Option<u8>) -> Option<Answer> {
    match proto {
        PROTO_TCP => {
            if seg.len() < 20 {
                return None;
            }
            Some(Answer::Tcp {
                from: SocketAddr::new(from, be16(seg, 0)?),
                to_port: be16(seg, 2)?,
                seq: be32(seg, 4)?,
                ack: be32(seg, 8)?,
                flags: seg[13],
                ttl,
            })
        }
        PROTO_UDP => {
            if seg.len() < 8 {
                return None;
            }
            Some(Answer::Udp {
                from: SocketAddr::new(from, be16(seg, 0)?),
                to_port: be16(seg, 2)?,
                ttl,
            })
        }
        _ => None,
    }
}

/// The quoted probe: its transport protocol, destination, source port and sequence number.
fn quoted(proto: u8, src: IpAddr, dst: IpAddr, t: &[u8]) -> Option<Quoted> {
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    Some(Quoted {
        proto,
        src,
        dst: SocketAddr::new(dst, be16(t, 2)?),
        sport: be16(t, 0)?,
        seq: if proto == PROTO_TCP { be32(t, 4) } else { None },
    })
}

/// Reads a packet from an IPv4 raw socket (which delivers the IP header).
pub fn parse_ipv4(p: &[u8]) -> Option<Answer> {
    let (ihl, proto, src, _dst, ttl, end) = ipv4_header(p)?;
    let body = p.get(ihl..end)?;
    match proto {
        PROTO_TCP | PROTO_UDP => transport(proto, body, IpAddr::V4(src), Some(ttl)),
        PROTO_ICMP => {
            // Destination unreachable, with the offending header quoted after 8 bytes.
            if *body.first()? != 3 {
                return None;
            }
            let kind = match body.get(1)? {
                0 => Unreach::Net,
                1 => Unreach::Host,
                2 => Unreach::Protocol,
                3 => Unreach::Port,
                9 | 10 | 13 => Unreach::Prohibited,
                _ => Unreach::Other,
            };
            let inner = body.get(8..)?;
            let (iihl, iproto, isrc, idst, _, _) = ipv4_header(inner)?;
            let q = quoted(
                iproto,
                IpAddr::V4(isrc),
                IpAddr::V4(idst),
                inner.get(iihl..)?,
            )?;
            Some(Answer::Unreachable {
                from: IpAddr::V4(src),
                kind,
                quoted: q,
                ttl: Some(ttl),
            })
        }
        _ => None,
    }
}

/// Reads a TCP segment or UDP datagram from an IPv6 raw socket (which delivers no IP
/// header: the source comes from the socket address).
pub fn parse_transport6(proto: u8, seg: &[u8], from: Ipv6Addr) -> Option<Answer> {
    transport(proto, seg, IpAddr::V6(from), None)
}

/// Reads an ICMPv6 message from a raw socket.
pub fn parse_icmp6(msg: &[u8], from: Ipv6Addr) -> Option<Answer> {
    if *msg.first()? != 1 {
        return None;
    }
    let kind = match msg.get(1)? {
        0 => Unreach::Net,
        1 | 5 | 6 => Unreach::Prohibited,
        3 => Unreach::Host,
        4 => Unreach::Port,
        _ => Unreach::Other,
    };
    let inner = msg.get(8..)?;
    if inner.first()? >> 4 != 6 {
        return None;
    }
    // Probes carry no extension headers: the next header is the transport.
    let proto = *inner.get(6)?;
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(inner.get(8..24)?).ok()?);
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(inner.get(24..40)?).ok()?);
    let q = quoted(proto, IpAddr::V6(src), IpAddr::V6(dst), inner.get(40..)?)?;
    Some(Answer::Unreachable {
        from: IpAddr::V6(from),
        kind,
        quoted: q,
        ttl: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(src: &str, dst: &str) -> TcpProbe {
        TcpProbe {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: 61_234,
            seq: 0xdead_beef,
            ack: 0,
            flags: SYN,
            ttl: 64,
            ip_id: 7,
        }
    }

    #[test]
    fn cookie_round_trips_and_rejects_others() {
        let c = Cookie::new(1, 2);
        let r: SocketAddr = "198.18.0.1:80".parse().unwrap();
        for a in [0u8, 1, 5, 63] {
            assert_eq!(c.attempt(r, 40_000, c.seq(r, 40_000, a)), Some(a));
        }
        // Another port, another source port, another key: not ours.
        let other: SocketAddr = "198.18.0.1:81".parse().unwrap();
        assert_eq!(c.attempt(other, 40_000, c.seq(r, 40_000, 0)), None);
        assert_eq!(c.attempt(r, 40_001, c.seq(r, 40_000, 0)), None);
        assert_eq!(
            Cookie::new(1, 3).attempt(r, 40_000, c.seq(r, 40_000, 0)),
            None
        );
    }

    #[test]
    fn syn_v4_is_well_formed() {
        let mut buf = [0u8; MAX_TCP_PROBE];
        let n = build_tcp(&mut buf, &probe("198.19.255.1", "198.18.0.10:443")).unwrap();
        assert_eq!(n, 44);
        let p = &buf[..n];
        // The IP header's checksum verifies (sums to zero).
        assert_eq!(checksum(&p[..20]), 0);
        // So does the TCP checksum over the pseudo-header.
        let seg = &p[20..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, PROTO_TCP, 0, 24]);
        pseudo.extend_from_slice(seg);
        assert_eq!(checksum(&pseudo), 0);
        // Reading it back gives the fields written.
        match parse_ipv4(p).unwrap() {
            Answer::Tcp {
                from,
                to_port,
                flags,
                seq,
                ttl,
                ..
            } => {
                assert_eq!(from, "198.19.255.1:61234".parse().unwrap());
                assert_eq!(to_port, 443);
                assert_eq!(flags, SYN);
                assert_eq!(seq, 0xdead_beef);
                assert_eq!(ttl, Some(64));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syn_v6_checksum_verifies() {
        let mut buf = [0u8; MAX_TCP_PROBE];
        let n = build_tcp(&mut buf, &probe("2001:2:0:ffff::1", "[2001:2::10]:22")).unwrap();
        assert_eq!(n, 64);
        let p = &buf[..n];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[8..40]);
        pseudo.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, PROTO_TCP]);
        pseudo.extend_from_slice(&p[40..]);
        assert_eq!(checksum(&pseudo), 0);
        let a = parse_transport6(PROTO_TCP, &p[40..], "2001:2:0:ffff::1".parse().unwrap());
        assert!(matches!(a, Some(Answer::Tcp { to_port: 22, .. })));
    }

    #[test]
    fn mixed_families_are_refused() {
        let mut buf = [0u8; MAX_TCP_PROBE];
        assert!(build_tcp(&mut buf, &probe("198.19.255.1", "[2001:2::10]:22")).is_none());
        assert!(build_tcp(&mut [0u8; 10], &probe("198.19.255.1", "198.18.0.1:1")).is_none());
    }

    #[test]
    fn icmp_unreachable_quotes_the_probe() {
        let mut buf = [0u8; MAX_TCP_PROBE];
        let n = build_tcp(&mut buf, &probe("198.19.255.1", "198.18.0.10:20000")).unwrap();
        // A router's admin-prohibited, quoting the probe's IP header and 8 bytes.
        let mut icmp = vec![3, 13, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&buf[..28]);
        let mut pkt = vec![0u8; 20];
        let total = u16::try_from(20 + icmp.len()).unwrap();
        pkt[0] = 0x45;
        pkt[2..4].copy_from_slice(&total.to_be_bytes());
        pkt[8] = 61;
        pkt[9] = PROTO_ICMP;
        pkt[12..16].copy_from_slice(&[198, 18, 0, 1]);
        pkt[16..20].copy_from_slice(&[198, 19, 255, 1]);
        pkt.extend_from_slice(&icmp);
        let _ = n;
        match parse_ipv4(&pkt).unwrap() {
            Answer::Unreachable {
                from,
                kind,
                quoted,
                ttl,
            } => {
                assert_eq!(from, "198.18.0.1".parse::<IpAddr>().unwrap());
                assert_eq!(kind, Unreach::Prohibited);
                assert_eq!(quoted.dst, "198.18.0.10:20000".parse().unwrap());
                assert_eq!(quoted.sport, 61_234);
                assert_eq!(quoted.seq, Some(0xdead_beef));
                assert_eq!(ttl, Some(61));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn udp_probe_and_icmp6_port_unreachable() {
        let mut buf = Vec::new();
        let src: IpAddr = "2001:2:0:ffff::1".parse().unwrap();
        let dst: SocketAddr = "[2001:2::10]:53".parse().unwrap();
        let n = build_udp(&mut buf, src, dst, 50_000, 64, 0, b"hello").unwrap();
        assert_eq!(n, 40 + 8 + 5);
        let mut msg = vec![1, 4, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&buf);
        match parse_icmp6(&msg, "2001:2::10".parse().unwrap()).unwrap() {
            Answer::Unreachable { kind, quoted, .. } => {
                assert_eq!(kind, Unreach::Port);
                assert_eq!(quoted.proto, PROTO_UDP);
                assert_eq!(quoted.dst, dst);
                assert_eq!(quoted.sport, 50_000);
                assert_eq!(quoted.seq, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_bytes_never_panic() {
        // Every prefix of valid packets, and bytes that claim more than they hold.
        let mut buf = [0u8; MAX_TCP_PROBE];
        let n = build_tcp(&mut buf, &probe("198.19.255.1", "198.18.0.10:443")).unwrap();
        for i in 0..=n {
            let _ = parse_ipv4(&buf[..i]);
            let _ = parse_icmp6(&buf[..i], Ipv6Addr::LOCALHOST);
            let _ = parse_transport6(PROTO_TCP, &buf[..i], Ipv6Addr::LOCALHOST);
        }
        let lies = [
            vec![0x4f; 3],
            vec![0x4f; 60],
            vec![
                0x45, 0, 0xff, 0xff, 0, 0, 0, 0, 64, 1, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3,
            ],
            vec![0x41, 0, 0, 20],
            vec![1, 0, 0, 0, 0, 0, 0, 0, 0x60],
        ];
        for l in &lies {
            let _ = parse_ipv4(l);
            let _ = parse_icmp6(l, Ipv6Addr::LOCALHOST);
        }
        assert!(parse_ipv4(&[]).is_none());
    }
}
