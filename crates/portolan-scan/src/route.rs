//! Whether the kernel has a route to a host, asked without sending anything: `connect()`
//! on a UDP socket looks the route up and fails with `ENETUNREACH` (or `EHOSTUNREACH`
//! for an `unreachable` route) when there is none. A scan whose every target has no route
//! says so at once instead of sending hundreds of thousands of probes that each fail.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// Hosts looked at, at most: beyond this many, the scan itself finds out (a route lookup
/// costs about a microsecond, so this bounds the check to a fraction of a second).
pub(crate) const MAX_CHECKED: usize = 1 << 18;

/// Route lookups on one UDP socket per address family, reconnected for each host.
#[derive(Default)]
struct Lookup {
    v4: Option<OwnedFd>,
    v6: Option<OwnedFd>,
}

impl Lookup {
    /// `Ok(false)` when the kernel has no route to `ip`; `Ok(true)` when it has one, or
    /// refuses for another reason (a broadcast address, a prohibit route: the scan reports
    /// those per port).
    fn routed(&mut self, ip: IpAddr) -> io::Result<bool> {
        let (slot, family) = match ip {
            IpAddr::V4(_) => (&mut self.v4, AddressFamily::INET),
            IpAddr::V6(_) => (&mut self.v6, AddressFamily::INET6),
        };
        let fd = match slot {
            Some(fd) => fd,
            None => slot.insert(rustix::net::socket_with(
                family,
                SocketType::DGRAM,
                SocketFlags::CLOEXEC,
                None,
            )?),
        };
        match rustix::net::connect(&*fd, &SocketAddr::new(ip, 9)) {
            Err(Errno::NETUNREACH | Errno::HOSTUNREACH) => Ok(false),
            Ok(()) | Err(_) => Ok(true),
        }
    }
}

/// Whether any of `hosts` has a route; `None` when that cannot be told (more hosts than
/// [`MAX_CHECKED`] and none of those looked at has one, or no socket could be opened).
pub(crate) fn any_routed(hosts: &[IpAddr]) -> Option<bool> {
    let mut lookup = Lookup::default();
    for ip in hosts.iter().take(MAX_CHECKED) {
        match lookup.routed(*ip) {
            Ok(true) => return Some(true),
            Ok(false) => {}
            Err(_) => return None,
        }
    }
    (hosts.len() <= MAX_CHECKED).then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_routed() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(any_routed(&[lo]), Some(true));
    }
}
