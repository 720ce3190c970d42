use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Who can reach a listening socket, judged from the address it is bound to. This is what
/// decides whether a listener is attack surface, so the inventory shows it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exposure {
    /// Bound to the wildcard address: every interface, present and future.
    AllInterfaces,
    /// Bound to a specific non-loopback address: reachable by whoever reaches that address.
    Specific,
    /// Bound to 127.0.0.0/8 or ::1: only this machine (this network namespace) can connect.
    Loopback,
}

/// Which address families a wildcard listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StackScope {
    Ipv4,
    Ipv6,
    /// `::` with `IPV6_V6ONLY` off: accepts IPv4 too, through mapped addresses.
    DualStack,
}

impl Exposure {
    /// Classifies a bound local address. IPv4-mapped IPv6 addresses are judged by their
    /// IPv4 part (`::ffff:127.0.0.1` is loopback).
    pub fn of(addr: IpAddr) -> Exposure {
        let addr = crate::cidr::canonical(addr);
        if addr.is_unspecified() {
            Exposure::AllInterfaces
        } else if addr.is_loopback() {
            Exposure::Loopback
        } else {
            Exposure::Specific
        }
    }

    /// For a wildcard listener, which families it accepts. `v6only` is the socket's
    /// `IPV6_V6ONLY` flag when known; unknown is taken as the Linux default (dual-stack).
    pub fn stack(addr: IpAddr, v6only: Option<bool>) -> Option<StackScope> {
        match addr {
            IpAddr::V4(a) if a.is_unspecified() => Some(StackScope::Ipv4),
            IpAddr::V6(a) if a == Ipv6Addr::UNSPECIFIED => Some(if v6only == Some(true) {
                StackScope::Ipv6
            } else {
                StackScope::DualStack
            }),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Exposure::AllInterfaces => "all_interfaces",
            Exposure::Specific => "specific",
            Exposure::Loopback => "loopback",
        }
    }

    /// Short label for tables.
    pub const fn label(self) -> &'static str {
        match self {
            Exposure::AllInterfaces => "ALL",
            Exposure::Specific => "addr",
            Exposure::Loopback => "local",
        }
    }
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StackScope {
    /// The JSON and CSV name (what serde writes): `ipv4`, `ipv6`, `dual_stack`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StackScope::Ipv4 => "ipv4",
            StackScope::Ipv6 => "ipv6",
            StackScope::DualStack => "dual_stack",
        }
    }

    /// The table's short form: `v4`, `v6`, `v4+v6`.
    pub const fn label(self) -> &'static str {
        match self {
            StackScope::Ipv4 => "v4",
            StackScope::Ipv6 => "v6",
            StackScope::DualStack => "v4+v6",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let e = |s: &str| Exposure::of(s.parse().unwrap());
        assert_eq!(e("0.0.0.0"), Exposure::AllInterfaces);
        assert_eq!(e("::"), Exposure::AllInterfaces);
        assert_eq!(e("127.0.0.53"), Exposure::Loopback);
        assert_eq!(e("::1"), Exposure::Loopback);
        assert_eq!(e("::ffff:127.0.0.1"), Exposure::Loopback);
        assert_eq!(e("::ffff:0.0.0.0"), Exposure::AllInterfaces);
        assert_eq!(e("198.18.0.1"), Exposure::Specific);
        assert_eq!(e("fe80::1"), Exposure::Specific);
    }

    #[test]
    fn stacks() {
        let s = |a: &str, v| Exposure::stack(a.parse().unwrap(), v);
        assert_eq!(s("0.0.0.0", None), Some(StackScope::Ipv4));
        assert_eq!(s("::", Some(false)), Some(StackScope::DualStack));
        assert_eq!(s("::", Some(true)), Some(StackScope::Ipv6));
        assert_eq!(s("127.0.0.1", None), None);
    }
}
