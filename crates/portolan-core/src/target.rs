//! Scan targets as a person writes them: addresses, CIDR blocks, IPv4 ranges and host
//! names. A spec knows how many addresses it holds and can produce the i-th one, so a
//! scanner can visit a /16 in random order without ever materialising the list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::cidr::Cidr;
use crate::error::{echo, ParseError};

/// One target item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetSpec {
    Addr(IpAddr),
    /// A CIDR block. Network and broadcast addresses of IPv4 blocks /30 and wider are
    /// skipped unless asked (`with_edges`).
    Cidr {
        net: IpAddr,
        prefix: u8,
        with_edges: bool,
    },
    /// An inclusive IPv4 range: `198.18.0.1-20` or `198.18.0.1-198.18.0.20`.
    Range4 {
        start: Ipv4Addr,
        end: Ipv4Addr,
    },
    /// A host name, resolved at scan time to every address it has.
    Name(String),
}

pub(crate) fn bad(input: &str, reason: &'static str) -> ParseError {
    ParseError::InvalidTarget {
        input: echo(input),
        reason,
    }
}

/// The largest number of addresses one spec may hold (2^32: an IPv4 /0 or an IPv6 /96).
pub const MAX_TARGETS_PER_SPEC: u64 = 1 << 32;

impl TargetSpec {
    /// How many addresses the spec holds; host names count as one until resolved.
    pub fn len(&self) -> u64 {
        match self {
            TargetSpec::Addr(_) | TargetSpec::Name(_) => 1,
            TargetSpec::Range4 { start, end } => {
                u64::from(u32::from(*end)) - u64::from(u32::from(*start)) + 1
            }
            TargetSpec::Cidr {
                net,
                prefix,
                with_edges,
            } => {
                let (bits, skip) = cidr_shape(*net, *prefix, *with_edges);
                (1u64 << bits) - 2 * skip // bits <= 32 by construction
            }
        }
    }

    /// A spec always holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The i-th address (`i < len()`); `None` for host names and out-of-range indices.
    pub fn nth(&self, i: u64) -> Option<IpAddr> {
        if i >= self.len() {
            return None;
        }
        match self {
            TargetSpec::Addr(a) => Some(*a),
            TargetSpec::Name(_) => None,
            TargetSpec::Range4 { start, .. } => {
                let v = u64::from(u32::from(*start)) + i;
                Some(IpAddr::V4(Ipv4Addr::from(u32::try_from(v).ok()?)))
            }
            TargetSpec::Cidr {
                net,
                prefix,
                with_edges,
            } => {
                let off = i + cidr_shape(*net, *prefix, *with_edges).1;
                Some(match net {
                    IpAddr::V4(a) => {
                        IpAddr::V4(Ipv4Addr::from(u32::from(*a) + u32::try_from(off).ok()?))
                    }
                    IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(*a) + u128::from(off))),
                })
            }
        }
    }

    /// Whether `ip` is one of the spec's addresses (host names match nothing until resolved).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (TargetSpec::Addr(a), _) => *a == ip,
            (TargetSpec::Range4 { start, end }, IpAddr::V4(v)) => *start <= v && v <= *end,
            (TargetSpec::Cidr { net, prefix, .. }, _) if net.is_ipv4() == ip.is_ipv4() => {
                network(ip, *prefix) == *net
            }
            // Names match nothing until resolved; families never match across.
            _ => false,
        }
    }

    /// Parses one item; `with_edges` keeps network and broadcast addresses of IPv4 blocks.
    pub fn parse(s: &str, with_edges: bool) -> Result<TargetSpec, ParseError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseError::Empty { what: "target" });
        }
        if t.len() > 253 {
            return Err(bad(t, "too long for an address or a host name"));
        }
        if let Some((addr, prefix)) = t.split_once('/') {
            let net: IpAddr = addr
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    bad(
                        t,
                        "a CIDR block is an address and a prefix length, as in 198.18.0.0/24",
                    )
                })?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix
                .parse()
                .ok()
                .filter(|p| u32::from(*p) <= max)
                .ok_or_else(|| {
                    bad(
                        t,
                        "the prefix length is out of range (0-32 for IPv4, 0-128 for IPv6)",
                    )
                })?;
            if max - u32::from(prefix) > 32 {
                return Err(bad(t, "the block holds more than 2^32 addresses; an IPv6 block must be /96 or narrower"));
            }
            // Normalise to the network address, so `198.18.0.7/24` means the whole /24.
            let net = network(net, prefix);
            return Ok(TargetSpec::Cidr {
                net,
                prefix,
                with_edges,
            });
        }
        if let Ok(a) = t
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(TargetSpec::Addr(a));
        }
        if let Some((a, b)) = t.split_once('-') {
            if let Ok(start) = a.parse::<Ipv4Addr>() {
                let end = if let Ok(e) = b.parse::<Ipv4Addr>() {
                    e
                } else {
                    let last: u8 = b.parse().map_err(|_| {
                        bad(
                            t,
                            "a range ends in a full address or a last octet, as in 198.18.0.1-20",
                        )
                    })?;
                    let o = start.octets();
                    Ipv4Addr::new(o[0], o[1], o[2], last)
                };
                if end < start {
                    return Err(bad(t, "the range ends before it starts"));
                }
                return Ok(TargetSpec::Range4 { start, end });
            }
        }
        if is_host_name(t) {
            return Ok(TargetSpec::Name(t.to_ascii_lowercase()));
        }
        Err(bad(
            t,
            "not an address, a CIDR block, a range (198.18.0.1-20) or a host name",
        ))
    }
}

/// Host bits of a block, and whether its network and broadcast addresses are skipped (1)
/// or not (0): they are for IPv4 blocks of 4 addresses or more, unless asked for.
fn cidr_shape(net: IpAddr, prefix: u8, with_edges: bool) -> (u32, u64) {
    let bits = if net.is_ipv4() { 32 } else { 128 } - u32::from(prefix);
    (bits, u64::from(net.is_ipv4() && !with_edges && bits >= 2))
}

/// The network address of `ip` under a prefix length (the prefix is already validated).
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    Cidr::new(ip, prefix).map_or(ip, Cidr::addr)
}

/// RFC 1123 host names: dot-separated labels of letters, digits and hyphens, not starting
/// or ending with a hyphen, 1-63 characters each. A name of digits and dots alone is not a
/// host name (it is a malformed address).
pub(crate) fn is_host_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl FromStr for TargetSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TargetSpec::parse(s, false)
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Addr(a) => write!(f, "{a}"),
            TargetSpec::Cidr { net, prefix, .. } => write!(f, "{net}/{prefix}"),
            TargetSpec::Range4 { start, end } => write!(f, "{start}-{end}"),
            TargetSpec::Name(n) => f.write_str(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TargetSpec {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_names() {
        assert_eq!(
            p("198.18.0.1"),
            TargetSpec::Addr("198.18.0.1".parse().unwrap())
        );
        assert_eq!(
            p("[2001:2::1]"),
            TargetSpec::Addr("2001:2::1".parse().unwrap())
        );
        assert_eq!(
            p("Web-3.Example.test"),
            TargetSpec::Name("web-3.example.test".into())
        );
        assert_eq!(p("localhost"), TargetSpec::Name("localhost".into()));
    }

    #[test]
    fn cidr_skips_edges_unless_asked() {
        let c = p("198.18.0.7/24");
        assert_eq!(c.to_string(), "198.18.0.0/24");
        assert_eq!(c.len(), 254);
        assert_eq!(c.nth(0), Some("198.18.0.1".parse().unwrap()));
        assert_eq!(c.nth(253), Some("198.18.0.254".parse().unwrap()));
        assert_eq!(c.nth(254), None);
        let e = TargetSpec::parse("198.18.0.0/24", true).unwrap();
        assert_eq!(
            (e.len(), e.nth(0)),
            (256, Some("198.18.0.0".parse().unwrap()))
        );
        assert_eq!(p("198.18.0.1/32").len(), 1);
        assert_eq!(p("198.18.0.0/31").len(), 2);
        assert_eq!(p("198.18.0.0/16").len(), 65_534);
        assert_eq!(p("2001:2::/120").len(), 256);
        assert_eq!(p("2001:2::/120").nth(5), Some("2001:2::5".parse().unwrap()));
    }

    #[test]
    fn contains() {
        assert!(p("198.18.0.0/24").contains("198.18.0.99".parse().unwrap()));
        assert!(!p("198.18.0.0/24").contains("198.18.1.1".parse().unwrap()));
        assert!(p("198.18.0.1-20").contains("198.18.0.20".parse().unwrap()));
        assert!(p("2001:2::/120").contains("2001:2::ff".parse().unwrap()));
        assert!(!p("2001:2::/120").contains("198.18.0.1".parse().unwrap()));
    }

    #[test]
    fn ranges() {
        let r = p("198.18.0.1-20");
        assert_eq!(r.len(), 20);
        assert_eq!(r.nth(19), Some("198.18.0.20".parse().unwrap()));
        assert_eq!(p("198.18.0.250-198.18.1.5").len(), 12);
    }

    #[test]
    fn hostile_targets_are_rejected() {
        for bad in [
            "",
            "198.18.0.0/33",
            "2001:2::/64",
            "198.18.0.20-1",
            "198.18.0.1-300",
            "1.2.3",
            "999.1.1.1",
            "-host",
            "a..b",
            "a_b",
            "\x1b[2J",
            "198.18.0.1-",
            "/24",
            "x/24",
        ] {
            let e = TargetSpec::parse(bad, false);
            assert!(e.is_err(), "{bad:?} -> {e:?}");
            assert!(!e.unwrap_err().to_string().contains('\x1b'));
        }
        assert!(TargetSpec::parse(&"a".repeat(300), false).is_err());
    }
}
