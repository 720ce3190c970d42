//! Who is never blocked, besides the user's allow-list: the addresses a host cannot lose
//! without losing itself. Its default gateways (IPv4 and IPv6), the name servers of
//! /etc/resolv.conf, the peers of established connections to sshd's ports (whoever is
//! administering the machine right now, `sudo` or not), link-local and multicast
//! addresses (blocking `fe80::1` would drop the router's advertisements), loopback and
//! unspecified addresses. This host's own addresses are spared by the kernel itself: the
//! block chain accepts `fib saddr type local` before it drops.
//!
//! Read again every minute; a file or dump that cannot be read adds nothing (and the
//! user's allow-list still holds).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use portolan_core::{Port, Protocol};
use portolan_sockets::{Netlink, SocketSource};

const REREAD: Duration = Duration::from_secs(60);
/// sock_diag's state bit for ESTABLISHED.
const ESTABLISHED: u32 = 1 << 1;

/// The protected addresses, kept fresh.
#[derive(Debug)]
pub struct Protected {
    ssh_ports: Vec<u16>,
    addrs: Vec<IpAddr>,
    read: Option<Instant>,
}

/// Why an address is never blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Loopback, unspecified, link-local or multicast.
    Special,
    /// A gateway, a name server or an SSH peer of this host.
    Infrastructure,
}

impl Protected {
    /// `ssh_ports`: the ports sshd listens on (22 when none is known).
    pub fn new(ssh_ports: Vec<u16>) -> Protected {
        Protected {
            ssh_ports: if ssh_ports.is_empty() {
                vec![22]
            } else {
                ssh_ports
            },
            addrs: Vec::new(),
            read: None,
        }
    }

    /// Whether `a` must never be blocked, and why.
    pub fn check(&mut self, a: IpAddr) -> Option<Why> {
        if special(a) {
            return Some(Why::Special);
        }
        if self.read.is_none_or(|r| r.elapsed() >= REREAD) {
            self.reread();
        }
        self.addrs.contains(&a).then_some(Why::Infrastructure)
    }

    fn reread(&mut self) {
        self.read = Some(Instant::now());
        let mut v = gateways();
        v.extend(name_servers(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ));
        for &port in &self.ssh_ports {
            if let Ok(entries) =
                Netlink.dump_both_families(Protocol::Tcp, ESTABLISHED, Some(Port::new(port)))
            {
                v.extend(
                    entries
                        .iter()
                        .filter(|e| e.local.port() == port)
                        .filter_map(|e| e.remote.map(|r| portolan_core::cidr::canonical(r.ip()))),
                );
            }
        }
        v.sort_unstable();
        v.dedup();
        self.addrs = v;
    }

    /// The addresses read last (for messages and tests).
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addrs
    }
}

/// Addresses no block may name.
pub fn special(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            v.is_loopback()
                || v.is_unspecified()
                || v.is_link_local()
                || v.is_multicast()
                || v.is_broadcast()
        }
        IpAddr::V6(v) => {
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (v.segments()[0] & 0xffc0) == 0xfe80
                || v.to_ipv4_mapped().is_some_and(|m| special(IpAddr::V4(m)))
        }
    }
}

/// The `nameserver` lines of a resolv.conf.
pub fn name_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            // A scope id (`fe80::1%eth0`) is dropped: the address is what a packet carries.
            let word = rest.split_whitespace().next()?;
            word.split('%').next()?.parse::<IpAddr>().ok()
        })
        .collect()
}

/// The gateways of this network namespace's routes (/proc/net/route and ipv6_route).
fn gateways() -> Vec<IpAddr> {
    let mut v = gateways_v4(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
    v.extend(gateways_v6(
        &std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default(),
    ));
    v
}

/// /proc/net/route: `Iface Destination Gateway Flags ...`, addresses in host-order hex.
pub fn gateways_v4(text: &str) -> Vec<IpAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let g = l.split_whitespace().nth(2)?;
            let n = u32::from_str_radix(g, 16).ok()?;
            // The kernel writes the address as it lies in memory: little-endian here.
            let a = Ipv4Addr::from(n.swap_bytes());
            (!a.is_unspecified()).then_some(IpAddr::V4(a))
        })
        .collect()
}

/// /proc/net/ipv6_route: the next hop is the fifth field, 32 hex digits.
pub fn gateways_v6(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().nth(4)?;
            if hex.len() != 32 {
                return None;
            }
            let n = u128::from_str_radix(hex, 16).ok()?;
            let a = Ipv6Addr::from(n);
            (!a.is_unspecified()).then_some(IpAddr::V6(a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gateways_and_name_servers() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t011212C6\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t001212C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            gateways_v4(route),
            vec!["198.18.18.1".parse::<IpAddr>().unwrap()]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
                  20010002000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n";
        assert_eq!(gateways_v6(v6), vec!["fe80::1".parse::<IpAddr>().unwrap()]);
        let rc = "# comment\nnameserver 198.18.0.53\nnameserver fe80::1%eth0\nnameserver bogus\nsearch example\n";
        assert_eq!(
            name_servers(rc),
            vec![
                "198.18.0.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(gateways_v4("garbage\n\u{1b}[2J zz zz\n").is_empty());
    }

    #[test]
    fn special_addresses_are_never_blocked() {
        for a in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(special(a.parse().unwrap()), "{a}");
        }
        for a in ["198.18.0.9", "2001:2::9"] {
            assert!(!special(a.parse().unwrap()), "{a}");
        }
    }
}
