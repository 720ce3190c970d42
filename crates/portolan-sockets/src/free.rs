//! Is a port free? Answered the only reliable way: by binding it, on the address asked.
//! A port found free can be taken by another program a moment later; callers say so.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use portolan_core::{Port, PortRange, Protocol};

/// The outcome of trying to bind one port.
#[derive(Debug)]
pub enum PortStatus {
    /// Every address asked could be bound (and, for TCP, listened on).
    Free,
    /// Some address is taken.
    InUse { addr: SocketAddr },
    /// Binding needs privilege this process lacks (ports below the unprivileged start).
    NeedsPrivilege { addr: SocketAddr },
    /// Another error (address not on this machine, ...).
    Error { addr: SocketAddr, error: io::Error },
}

impl PortStatus {
    pub fn is_free(&self) -> bool {
        matches!(self, PortStatus::Free)
    }
}

/// The addresses checked when none is given: the IPv4 and IPv6 wildcards. A wildcard bind
/// conflicts with any specific-address listener on the port, so this is the strictest test.
pub fn default_addrs() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ]
}

fn try_bind(addr: SocketAddr, proto: Protocol) -> io::Result<()> {
    // std's TcpListener::bind sets SO_REUSEADDR, as servers do, so TIME-WAIT leftovers do
    // not make a port look busy; listen() then fails if a real listener holds it.
    match proto {
        Protocol::Udp => UdpSocket::bind(addr).map(drop),
        _ => TcpListener::bind(addr).map(drop),
    }
}

/// The errors binding `::` gives on a machine without IPv6.
fn no_ipv6_here(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::AFNOSUPPORT, Errno::ADDRNOTAVAIL]
        .iter()
        .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

/// Checks one port on every address in `addrs`. An IPv6 address on a machine without IPv6
/// is skipped rather than reported as busy.
pub fn check(port: Port, proto: Protocol, addrs: &[IpAddr]) -> PortStatus {
    for &ip in addrs {
        let addr = SocketAddr::new(ip, port.get());
        match try_bind(addr, proto) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return PortStatus::InUse { addr },
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return PortStatus::NeedsPrivilege { addr }
            }
            Err(e) if ip.is_ipv6() && addrs.len() > 1 && no_ipv6_here(&e) => {}
            Err(error) => return PortStatus::Error { addr, error },
        }
    }
    PortStatus::Free
}

/// Finds up to `count` free ports in `range`, visiting the range from a random offset so
/// that concurrent callers do not all race for the same port. `skip` excludes ports the
/// caller does not want to hand out (well-known services, the ephemeral range).
///
/// A bind that fails for a reason other than "in use" or "needs privilege" says nothing
/// about the port (an address this machine does not have, no IPv6): the search stops there
/// and returns that failure, rather than reporting every port as taken.
pub fn find(
    range: PortRange,
    proto: Protocol,
    addrs: &[IpAddr],
    count: usize,
    skip: &dyn Fn(Port) -> bool,
) -> Result<Vec<Port>, (SocketAddr, io::Error)> {
    let len = range.len();
    let start = seed() % len;
    let mut out = Vec::new();
    for i in 0..len {
        if out.len() >= count {
            break;
        }
        let off = (start + i) % len;
        let p = Port::new(u16::try_from(u32::from(range.start().get()) + off).unwrap_or(u16::MAX));
        if p.get() == 0 || skip(p) {
            continue;
        }
        match check(p, proto, addrs) {
            PortStatus::Free => out.push(p),
            PortStatus::Error { addr, error } => return Err((addr, error)),
            PortStatus::InUse { .. } | PortStatus::NeedsPrivilege { .. } => {}
        }
    }
    Ok(out)
}

fn seed() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // Mix time and pid so two calls in the same nanosecond still differ.
    let mut x = t ^ std::process::id().rotate_left(16);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_port_is_busy_and_freed_port_is_free() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = Port::new(l.local_addr().unwrap().port());
        // A loopback listener blocks the wildcard too.
        assert!(matches!(
            check(port, Protocol::Tcp, &default_addrs()),
            PortStatus::InUse { .. }
        ));
        drop(l);
        assert!(check(port, Protocol::Tcp, &default_addrs()).is_free());
    }

    #[test]
    fn finds_distinct_free_ports() {
        let r = PortRange::new(Port::new(20000), Port::new(20999)).unwrap();
        let got = find(r, Protocol::Udp, &default_addrs(), 5, &|_| false).expect("search");
        assert_eq!(got.len(), 5);
        let mut d = got.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 5);
        assert!(got.iter().all(|p| r.contains(*p)));
    }
}
