//! PROXY protocol headers (HAProxy's specification, versions 1 and 2), written to the
//! target before the client's first byte, so the target sees the real client address.
//!
//! Addresses are canonical first (an IPv4 client on a dual-stack listener arrives as
//! `::ffff:a.b.c.d` and is sent as IPv4); when the two ends are of different families
//! after that, both are sent as IPv6 (IPv4-mapped).

use std::net::{IpAddr, SocketAddr};

use portolan_core::cidr::canonical;

use crate::spec::ProxyVersion;

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

fn pair(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let c = SocketAddr::new(canonical(client.ip()), client.port());
    let l = SocketAddr::new(canonical(local.ip()), local.port());
    match (c.ip(), l.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (c, l),
        _ => (mapped(c), mapped(l)),
    }
}

fn mapped(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    }
}

/// The header for a TCP connection from `client` that arrived at `local`.
pub fn header(version: ProxyVersion, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (c, l) = pair(client, local);
    match version {
        ProxyVersion::V1 => {
            let fam = if c.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {fam} {} {} {} {}\r\n",
                c.ip(),
                l.ip(),
                c.port(),
                l.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => {
            let mut out = Vec::with_capacity(16 + 36);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, command PROXY
            match (c.ip(), l.ip()) {
                (IpAddr::V4(ci), IpAddr::V4(li)) => {
                    out.push(0x11); // AF_INET, STREAM
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&ci.octets());
                    out.extend_from_slice(&li.octets());
                }
                (ci, li) => {
                    let v6 = |ip: IpAddr| match ip {
                        IpAddr::V6(a) => a.octets(),
                        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                    };
                    out.push(0x21); // AF_INET6, STREAM
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&v6(ci));
                    out.extend_from_slice(&v6(li));
                }
            }
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&l.port().to_be_bytes());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_lines() {
        let h = header(
            ProxyVersion::V1,
            "198.18.0.5:40000".parse().unwrap(),
            "198.18.0.1:8080".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 198.18.0.5 198.18.0.1 40000 8080\r\n");
        let h = header(
            ProxyVersion::V1,
            "[::ffff:198.18.0.5]:40000".parse().unwrap(),
            "[::ffff:198.18.0.1]:8080".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 198.18.0.5 198.18.0.1 40000 8080\r\n");
        let h = header(
            ProxyVersion::V1,
            "[2001:2::5]:1".parse().unwrap(),
            "198.18.0.1:2".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP6 2001:2::5 ::ffff:198.18.0.1 1 2\r\n");
    }

    #[test]
    fn v2_layout() {
        let h = header(
            ProxyVersion::V2,
            "198.18.0.5:40000".parse().unwrap(),
            "198.18.0.1:8080".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 12);
        assert_eq!(&h[..12], &V2_SIGNATURE);
        assert_eq!(h[12..16], [0x21, 0x11, 0, 12]);
        assert_eq!(h[16..20], [198, 18, 0, 5]);
        assert_eq!(h[24..26], 40000u16.to_be_bytes());
        let h = header(
            ProxyVersion::V2,
            "[2001:2::5]:1".parse().unwrap(),
            "[2001:2::1]:2".parse().unwrap(),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(h[13], 0x21);
    }
}
