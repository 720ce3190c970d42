//! Raw scans (root or CAP_NET_RAW): probes built in user space and sent in batches on raw
//! sockets, answers read on their own raw sockets behind kernel BPF filters, no socket per
//! probe. The same scheduler as the connect scan decides what goes when (sched.rs); the
//! driver here only sends, reads and matches. See packet.rs for the cookie that matches
//! answers to probes without a table.
//!
//! No socket exists for a raw probe's flow, so this machine's kernel answers a SYN-ACK
//! with a reset by itself: the target never keeps a half-open connection for us. The
//! source port is reserved for the scan's length by a bound socket that never listens,
//! so no other program is handed it meanwhile.

pub(crate) mod driver;
pub mod packet;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::{ipproto, AddressFamily, SocketFlags, SocketType};
use socket2::SockFilter;

use crate::ScanError;

/// Receive buffer asked for each answer socket: a burst of answers at a high rate waits
/// there while the loop is busy sending.
const RECV_BUFFER: usize = 32 << 20;

/// The raw scans' options (`-S`, `-e`, `--source-port`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOptions {
    /// Source addresses (`-S`): empty, the route's choice for each target. Several of one
    /// family: the targets are spread over them (each target always gets the same one).
    pub sources: Vec<IpAddr>,
    /// Send through this interface only (`-e`).
    pub iface: Option<String>,
    /// The probes' source port; by default a free port, reserved for the scan.
    pub source_port: Option<u16>,
    /// Ports probed with a bare ACK instead of a SYN: any reset proves a live host (host
    /// discovery only; such a port gets no open/closed verdict that means anything).
    pub ack_ports: Vec<u16>,
}

/// Opens a raw socket; EPERM/EACCES become the error that says what is needed.
pub(crate) fn raw_socket(v6: bool, proto: rustix::net::Protocol) -> Result<OwnedFd, ScanError> {
    rustix::net::socket_with(
        if v6 {
            AddressFamily::INET6
        } else {
            AddressFamily::INET
        },
        SocketType::RAW,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(proto),
    )
    .map_err(|e| match e {
        Errno::PERM | Errno::ACCESS => ScanError::NeedsPrivilege,
        e => ScanError::Runtime(e.into()),
    })
}

/// Checks a raw scan's options before it starts: the privilege, the interface (`-e`) and
/// the source addresses (`-S`), each a clear error.
pub fn check(opts: &RawOptions) -> Result<(), ScanError> {
    let fd = raw_socket(false, ipproto::RAW)?;
    if let Some(name) = &opts.iface {
        bind_device(fd, name)?;
    }
    for s in &opts.sources {
        if !is_local(*s) {
            return Err(ScanError::SourceNotLocal(*s));
        }
    }
    Ok(())
}

/// Whether this process may open raw sockets (root or CAP_NET_RAW).
pub fn can_send_raw() -> bool {
    raw_socket(false, ipproto::RAW).is_ok()
}

/// Binds `fd` to an interface (`-e`); a missing interface is the user's error.
pub(crate) fn bind_device(fd: OwnedFd, iface: &str) -> Result<OwnedFd, ScanError> {
    let s = socket2::Socket::from(fd);
    match s.bind_device(Some(iface.as_bytes())) {
        Ok(()) => Ok(s.into()),
        Err(e) if e.raw_os_error() == Some(Errno::NODEV.raw_os_error()) => Err(
            ScanError::NoInterface(portolan_core::escape::for_terminal(iface).into_owned()),
        ),
        Err(e) => Err(ScanError::Runtime(e)),
    }
}

/// A classic BPF program for an answer socket.
pub(crate) fn attach(fd: OwnedFd, prog: &[SockFilter]) -> io::Result<OwnedFd> {
    let s = socket2::Socket::from(fd);
    s.attach_filter(prog)?;
    Ok(s.into())
}

// Classic BPF opcodes (linux/filter.h).
const LDX_MSH_B: u16 = 0xb1; // X = 4 * (pkt[k] & 0xf)
const LD_H_IND: u16 = 0x48; // A = be16 pkt[X + k]
const LD_B_IND: u16 = 0x50; // A = pkt[X + k]
const LD_H_ABS: u16 = 0x28; // A = be16 pkt[k]
const LD_B_ABS: u16 = 0x30; // A = pkt[k]
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
const ACCEPT: u32 = 0x0004_0000;

/// IPv4 raw sockets see the IP header first: keep transport segments to `port`.
pub(crate) fn filter_v4_dport(lo: u16, hi: u16) -> Vec<SockFilter> {
    vec![
        SockFilter::new(LDX_MSH_B, 0, 0, 0),
        SockFilter::new(LD_H_IND, 0, 0, 2),
        SockFilter::new(JGE_K, 0, 2, u32::from(lo)),
        SockFilter::new(JGT_K, 1, 0, u32::from(hi)),
        SockFilter::new(RET_K, 0, 0, ACCEPT),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// IPv4 ICMP: keep destination-unreachable messages (type 3).
pub(crate) fn filter_v4_unreach() -> Vec<SockFilter> {
    vec![
        SockFilter::new(LDX_MSH_B, 0, 0, 0),
        SockFilter::new(LD_B_IND, 0, 0, 0),
        SockFilter::new(JEQ_K, 0, 1, 3),
        SockFilter::new(RET_K, 0, 0, ACCEPT),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// IPv6 raw sockets start at the transport header: keep segments to ports `lo..=hi`.
pub(crate) fn filter_v6_dport(lo: u16, hi: u16) -> Vec<SockFilter> {
    vec![
        SockFilter::new(LD_H_ABS, 0, 0, 2),
        SockFilter::new(JGE_K, 0, 2, u32::from(lo)),
        SockFilter::new(JGT_K, 1, 0, u32::from(hi)),
        SockFilter::new(RET_K, 0, 0, ACCEPT),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// ICMPv6: keep destination-unreachable messages (type 1).
pub(crate) fn filter_v6_unreach() -> Vec<SockFilter> {
    vec![
        SockFilter::new(LD_B_ABS, 0, 0, 0),
        SockFilter::new(JEQ_K, 0, 1, 1),
        SockFilter::new(RET_K, 0, 0, ACCEPT),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// A large receive buffer (forced past the system's maximum where allowed).
pub(crate) fn big_buffer(fd: &OwnedFd) {
    if rustix::net::sockopt::set_socket_recv_buffer_size_force(fd, RECV_BUFFER).is_err() {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, RECV_BUFFER);
    }
}

/// Reserves the source port for the scan: a bound TCP (or UDP) socket that never
/// listens, on every address of the families scanned. `want` 0 lets the kernel choose.
/// Returns the port and the sockets that hold it.
pub(crate) fn reserve_port(
    udp: bool,
    v4: bool,
    v6: bool,
    want: u16,
) -> io::Result<(u16, Vec<OwnedFd>)> {
    let ty = if udp {
        SocketType::DGRAM
    } else {
        SocketType::STREAM
    };
    let mut last = io::Error::other("no address family to reserve a port in");
    // The kernel's choice for one family may be taken in the other: a few tries.
    for _ in 0..16 {
        let mut held = Vec::new();
        let mut port = want;
        let mut ok = true;
        for (is6, wanted) in [(false, v4), (true, v6)] {
            if !wanted {
                continue;
            }
            let fd = rustix::net::socket_with(
                if is6 {
                    AddressFamily::INET6
                } else {
                    AddressFamily::INET
                },
                ty,
                SocketFlags::CLOEXEC,
                None,
            )?;
            if is6 {
                rustix::net::sockopt::set_ipv6_v6only(&fd, true)?;
            }
            let addr = if is6 {
                SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port)
            } else {
                SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port)
            };
            match rustix::net::bind(&fd, &addr) {
                Ok(()) => {
                    if port == 0 {
                        port = rustix::net::getsockname(&fd)
                            .ok()
                            .and_then(|a| SocketAddr::try_from(a).ok())
                            .map_or(0, |a| a.port());
                    }
                    held.push(fd);
                }
                Err(e) => {
                    last = e.into();
                    ok = false;
                    break;
                }
            }
        }
        if ok && port != 0 {
            return Ok((port, held));
        }
        if want != 0 {
            break;
        }
    }
    Err(last)
}

/// Reserves `n` adjacent TCP source ports (see [`reserve_port`]) for a SYN scan, whose
/// attempts take them in turn; one port when no such run is free. Returns the first port,
/// how many there are, and the sockets that hold them.
pub(crate) fn reserve_ports(v4: bool, v6: bool, n: u16) -> io::Result<(u16, u16, Vec<OwnedFd>)> {
    for _ in 0..16 {
        let (base, mut held) = reserve_port(false, v4, v6, 0)?;
        if u32::from(base) + u32::from(n) > 65_536 {
            continue;
        }
        let mut ok = true;
        for i in 1..n {
            if let Ok((_, fds)) = reserve_port(false, v4, v6, base + i) {
                held.extend(fds);
            } else {
                ok = false;
                break;
            }
        }
        if ok {
            return Ok((base, n, held));
        }
    }
    let (base, held) = reserve_port(false, v4, v6, 0)?;
    Ok((base, 1, held))
}

/// Whether `ip` is an address of this machine: binding a socket to it works.
pub(crate) fn is_local(ip: IpAddr) -> bool {
    let Ok(fd) = rustix::net::socket_with(
        if ip.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        },
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    ) else {
        return false;
    };
    rustix::net::bind(&fd, &SocketAddr::new(ip, 0)).is_ok()
}

/// The source address for each target: `-S` when it gives one of the target's family,
/// else the address the kernel's route to the target would use (asked with a UDP socket's
/// connect(), which sends nothing).
#[derive(Debug)]
pub(crate) struct Sources {
    given4: Vec<IpAddr>,
    given6: Vec<IpAddr>,
    iface: Option<String>,
    lookup4: Option<OwnedFd>,
    lookup6: Option<OwnedFd>,
}

impl Sources {
    pub fn new(opts: &RawOptions) -> Result<Sources, ScanError> {
        for s in &opts.sources {
            if !is_local(*s) {
                return Err(ScanError::SourceNotLocal(*s));
            }
        }
        Ok(Sources {
            given4: opts
                .sources
                .iter()
                .copied()
                .filter(IpAddr::is_ipv4)
                .collect(),
            given6: opts
                .sources
                .iter()
                .copied()
                .filter(IpAddr::is_ipv6)
                .collect(),
            iface: opts.iface.clone(),
            lookup4: None,
            lookup6: None,
        })
    }

    /// How many `-S` addresses of `ip`'s family were given.
    pub fn given(&self, ip: IpAddr) -> usize {
        if ip.is_ipv4() {
            self.given4.len()
        } else {
            self.given6.len()
        }
    }

    /// The `i`-th (modulo their number) `-S` address of `ip`'s family, if any was given.
    pub fn nth(&self, ip: IpAddr, i: usize) -> Option<IpAddr> {
        let given = if ip.is_ipv4() {
            &self.given4
        } else {
            &self.given6
        };
        (!given.is_empty()).then(|| given[i % given.len()])
    }

    /// The source for target number `i` at `ip`; an error when there is no route.
    pub fn for_host(&mut self, i: u32, ip: IpAddr) -> io::Result<IpAddr> {
        let given = if ip.is_ipv4() {
            &self.given4
        } else {
            &self.given6
        };
        if !given.is_empty() {
            return Ok(given[i as usize % given.len()]);
        }
        let slot = if ip.is_ipv4() {
            &mut self.lookup4
        } else {
            &mut self.lookup6
        };
        let fd = if let Some(fd) = slot {
            fd
        } else {
            {
                let fd = rustix::net::socket_with(
                    if ip.is_ipv4() {
                        AddressFamily::INET
                    } else {
                        AddressFamily::INET6
                    },
                    SocketType::DGRAM,
                    SocketFlags::CLOEXEC,
                    None,
                )?;
                let fd = match &self.iface {
                    Some(name) => {
                        bind_device(fd, name).map_err(|e| io::Error::other(e.to_string()))?
                    }
                    None => fd,
                };
                slot.insert(fd)
            }
        };
        rustix::net::connect(&*fd, &SocketAddr::new(ip, 9))?;
        let local = rustix::net::getsockname(&*fd)?;
        SocketAddr::try_from(local)
            .map(|a| a.ip())
            .map_err(|_| io::Error::other("not an internet address"))
    }
}
