//! A small CIDR block type for rule sources: `198.18.0.0/15`, `2001:db8::/32`, or a bare
//! address (a /32 or /128).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use portolan_core::escape::for_terminal;

use crate::FirewallError;

/// An IPv4 or IPv6 network: the address with host bits cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A block from an address and prefix length; host bits are cleared. `None` when the
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

    /// The network address (host bits clear).
    pub fn addr(self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv4 block.
    pub fn is_ipv4(self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether the block holds every address of its family (`0.0.0.0/0`, `::/0`).
    pub fn is_any(self) -> bool {
        self.prefix == 0
    }

    /// Whether `ip` lies inside the block (never across families).
    pub fn contains(self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.prefix).is_some_and(|c| c.addr == self.addr)
    }
}

impl fmt::Display for Cidr {
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
    type Err = FirewallError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| FirewallError::BadCidr {
            input: for_terminal(s).into_owned(),
            reason,
        };
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
                .map_err(|_| bad("prefix length is not a number"))?,
            Some(_) => return Err(bad("prefix length is not a number")),
        };
        Cidr::new(addr, prefix).ok_or_else(|| bad("prefix length is longer than the address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let c: Cidr = "198.18.7.9/15".parse().unwrap();
        assert_eq!(c.to_string(), "198.18.0.0/15");
        assert!(c.contains("198.19.255.255".parse().unwrap()));
        assert!(!c.contains("198.20.0.0".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let h: Cidr = "2001:db8::1".parse().unwrap();
        assert_eq!(h.to_string(), "2001:db8::1");
        assert_eq!(h.prefix(), 128);
        let z: Cidr = "::/0".parse().unwrap();
        assert!(z.is_any());
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().unwrap().to_string(),
            "0.0.0.0/0"
        );
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
        ] {
            assert!(s.parse::<Cidr>().is_err(), "{s}");
        }
    }
}
