//! IP networks (`198.18.0.0/15`, `2001:db8::/32`, or one address): the sources of a
//! firewall rule and the networks of a policy. One type for both, so a policy's `from`
//! becomes a firewall rule's source unchanged.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::escape::for_terminal;

/// An IPv4 or IPv6 network: the address with host bits cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network could not be read; the message quotes the input, escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(pub String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

impl Cidr {
    /// A network from an address and prefix length; host bits are cleared. `None` when the
    /// prefix is longer than the address (32 or 128 bits).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let addr = match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return None;
                }
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return None;
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Some(Cidr { addr, prefix })
    }

    /// One address, as a /32 or /128.
    pub fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, prefix }
    }

    /// `ADDRESS/PREFIX` written as a network: host bits past the prefix are an error
    /// (`10.0.0.1/8` is most likely a typo for `10.0.0.0/8` or `10.0.0.1/32`), and so is a
    /// bare address.
    pub fn parse_network(s: &str) -> Result<Cidr, CidrError> {
        if !s.contains('/') {
            return Err(CidrError(format!(
                "`{}` is not a network: write it as ADDRESS/PREFIX",
                for_terminal(s)
            )));
        }
        let c: Cidr = s.parse()?;
        let (a, _) = s.split_once('/').unwrap_or((s, ""));
        if a.parse::<IpAddr>().ok() != Some(c.addr) {
            return Err(CidrError(format!(
                "`{}` has host bits set past /{}; the network is {}/{}",
                for_terminal(s),
                c.prefix,
                c.addr,
                c.prefix
            )));
        }
        Ok(c)
    }

    /// The network address (host bits clear).
    pub fn addr(self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv4 network.
    pub fn is_ipv4(self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether the network holds every address of its family (`0.0.0.0/0`, `::/0`).
    pub fn is_any(self) -> bool {
        self.prefix == 0
    }

    /// Whether `ip` lies inside the network (an IPv4-mapped IPv6 address counts as IPv4;
    /// never across families otherwise).
    pub fn contains(self, ip: IpAddr) -> bool {
        let ip = if self.addr.is_ipv4() {
            canonical(ip)
        } else {
            ip
        };
        Cidr::new(ip, self.prefix).is_some_and(|c| c.addr == self.addr)
    }
}

impl fmt::Display for Cidr {
    /// `198.18.0.0/15`; one address without its full-length prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDRESS/PREFIX` (host bits cleared) or one `ADDRESS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| CidrError(format!("`{}`: {reason}", for_terminal(s)));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => full,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p
                .parse::<u8>()
                .map_err(|_| bad("the prefix length is not a number"))?,
            Some(_) => return Err(bad("the prefix length is not a number")),
        };
        Cidr::new(addr, prefix).ok_or_else(|| {
            bad(&format!(
                "the prefix length must be 0 to {full} for this address"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises() {
        let c: Cidr = "198.18.7.9/15".parse().unwrap();
        assert_eq!(c.to_string(), "198.18.0.0/15");
        assert!(c.contains(ip("198.19.255.255")));
        assert!(c.contains(ip("::ffff:198.18.0.1")));
        assert!(!c.contains(ip("198.20.0.0")));
        assert!(!c.contains(ip("::1")));
        let h: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(h.to_string(), "2001:db8::1");
        assert_eq!(h.prefix(), 128);
        assert!("::/0".parse::<Cidr>().unwrap().is_any());
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(Cidr::host(ip("10.1.2.3")).to_string(), "10.1.2.3");
    }

    #[test]
    fn networks_are_written_as_networks() {
        assert!(Cidr::parse_network("198.18.0.0/15").is_ok());
        assert!(Cidr::parse_network("::1/128").unwrap().contains(ip("::1")));
        let e = Cidr::parse_network("10.0.0.1/8").unwrap_err().to_string();
        assert!(e.contains("10.0.0.0/8"), "{e}");
        assert!(Cidr::parse_network("10.0.0.0").is_err());
    }

    #[test]
    fn refuses_garbage() {
        for s in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x/8",
            "10.0.0.0/8/8",
            "1.2.3.4/0008",
            "\u{1b}[2J/8",
        ] {
            let e = s.parse::<Cidr>().unwrap_err().to_string();
            assert!(!e.contains('\u{1b}'), "{e:?}");
        }
    }
}
