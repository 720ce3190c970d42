//! One socket as the kernel reports it, and the seam every socket source implements.
//! The inventory, the netlink reader and the /proc/net parser all depend on this module,
//! and on nothing of each other's but what the inventory calls.

use std::net::SocketAddr;

use portolan_core::{Exposure, Port, PortSpec, Protocol, SocketState, StackScope};

use crate::SocketsError;

/// IP address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// One socket, as the kernel reports it, with the pids of the processes holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    pub proto: Protocol,
    pub family: Family,
    pub local: SocketAddr,
    /// `None` when the peer is unspecified (listening or unconnected sockets).
    pub remote: Option<SocketAddr>,
    pub state: SocketState,
    /// Bytes waiting to be read; for a listener, connections waiting to be accepted.
    pub recv_q: u32,
    /// Bytes not yet acknowledged; for a listener, the accept backlog.
    pub send_q: u32,
    /// The socket's owner uid, from the kernel (known even when the process is not).
    pub uid: u32,
    /// Socket inode; 0 for TIME-WAIT and SYN-RECV mini-sockets, which no process holds.
    pub inode: u64,
    /// The cgroup v2 id the socket was created in (sock_diag only).
    pub cgroup_id: Option<u64>,
    /// `IPV6_V6ONLY`, for IPv6 sockets (sock_diag only).
    pub v6only: Option<bool>,
    /// Interface the socket is bound to (`SO_BINDTODEVICE`), 0 for none.
    pub interface: u32,
    /// Pids of the processes holding this socket, ascending. Empty when unknown.
    pub pids: Vec<u32>,
}

impl SocketEntry {
    /// Exposure of a listening socket (TCP LISTEN, bound unconnected UDP); `None` otherwise.
    pub fn exposure(&self) -> Option<Exposure> {
        self.state
            .is_listening()
            .then(|| Exposure::of(self.local.ip()))
    }

    /// For wildcard listeners, which families they accept.
    pub fn stack(&self) -> Option<StackScope> {
        self.state
            .is_listening()
            .then(|| Exposure::stack(self.local.ip(), self.v6only))
            .flatten()
    }

    /// A listener reachable from other machines: bound to every interface or to a
    /// non-loopback address (`ls --exposed`).
    pub fn is_exposed(&self) -> bool {
        matches!(
            self.exposure(),
            Some(Exposure::AllInterfaces | Exposure::Specific)
        )
    }

    pub(crate) fn matches_ports(&self, ports: &PortSpec) -> bool {
        ports.contains(self.local.port().into())
            || self.remote.is_some_and(|r| ports.contains(r.port().into()))
    }
}

/// The seam between the inventory logic and the kernel: something that lists sockets.
pub trait SocketSource {
    /// All sockets of one protocol and family whose kernel state bit is set in `states`.
    /// `port` is a hint: a source that can filter in the kernel returns only sockets whose
    /// local or remote port is `port`; others may return more (the caller filters again).
    fn dump(
        &self,
        proto: Protocol,
        family: Family,
        states: u32,
        port: Option<Port>,
    ) -> Result<Vec<SocketEntry>, SocketsError>;

    /// The sockets of one protocol in both families, IPv4 and IPv6, as [`SocketSource::dump`]
    /// would return them for each (in any order). The default asks for each family in
    /// turn; a source that can list both in one pass (sock_diag's TCP dump) overrides it.
    fn dump_both_families(
        &self,
        proto: Protocol,
        states: u32,
        port: Option<Port>,
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        dump_each_family(self, proto, states, port)
    }
}

/// Both families through `src`'s [`SocketSource::dump`], IPv4 then IPv6: the default of
/// [`SocketSource::dump_both_families`], and the fallback of a source whose one-pass
/// dump the kernel refused.
pub(crate) fn dump_each_family<S: SocketSource + ?Sized>(
    src: &S,
    proto: Protocol,
    states: u32,
    port: Option<Port>,
) -> Result<Vec<SocketEntry>, SocketsError> {
    let mut v = src.dump(proto, Family::Ipv4, states, port)?;
    v.append(&mut src.dump(proto, Family::Ipv6, states, port)?);
    Ok(v)
}
