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
    /// The kernel's own traffic counters of a TCP socket, when asked for
    /// ([`crate::Inventory::sockets_with_counters`]) and the kernel gave them: sock_diag
    /// only, for full TCP sockets, listeners included (not TIME-WAIT or SYN-RECV
    /// mini-sockets, which carry none). Always `None` for UDP: sock_diag keeps no byte
    /// counters for UDP sockets (what would count them is eBPF on the socket calls, or
    /// nftables/conntrack accounting). Always `None` from the /proc/net fallback, which
    /// has no such columns.
    pub tcp: Option<TcpCounters>,
}

/// A TCP socket's traffic counters, as the kernel keeps them in its `struct tcp_info`
/// (sock_diag's `INET_DIAG_INFO`, what `ss -ti` prints). They count from the socket's
/// creation; a rate is the difference between two readings of the same socket (same
/// inode and addresses) over the time between them.
///
/// The struct grew over kernel versions and the kernel sends its own length: the fields
/// every kernel since 4.1 sends are plain, later ones are `None` when the kernel's
/// struct ends before them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpCounters {
    /// Bytes this socket sent that the peer acknowledged (`tcpi_bytes_acked`): data
    /// delivered outwards. It lags what the application wrote by what is unsent or in
    /// flight, and counts the SYN (on the side that connected) and the FIN, once
    /// acknowledged, as one byte each: so data + 1 on a client's socket.
    pub bytes_acked: u64,
    /// Payload bytes received in order from the peer (`tcpi_bytes_received`).
    pub bytes_received: u64,
    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub retrans_total: u32,
    /// Smoothed round-trip time in microseconds (`tcpi_rtt`); 0 before any measurement.
    pub rtt_us: u32,
    /// Payload bytes sent, retransmissions included (`tcpi_bytes_sent`, Linux 4.19+).
    pub bytes_sent: Option<u64>,
    /// Payload bytes retransmitted (`tcpi_bytes_retrans`, Linux 4.19+).
    pub bytes_retrans: Option<u64>,
    /// The lowest round-trip time seen, microseconds (`tcpi_min_rtt`, Linux 4.6+).
    pub min_rtt_us: Option<u32>,
    /// The kernel's latest estimate of the delivery rate, bytes per second
    /// (`tcpi_delivery_rate`, Linux 4.9+).
    pub delivery_rate: Option<u64>,
}

/// Offsets in `struct tcp_info` (`linux/tcp.h`), a kernel ABI: fields are only ever
/// appended, each naturally aligned.
mod tcpi {
    pub const RTT: usize = 68;
    pub const TOTAL_RETRANS: usize = 100;
    pub const BYTES_ACKED: usize = 120;
    pub const BYTES_RECEIVED: usize = 128;
    pub const MIN_RTT: usize = 148;
    pub const DELIVERY_RATE: usize = 160;
    pub const BYTES_SENT: usize = 200;
    pub const BYTES_RETRANS: usize = 208;
}

impl TcpCounters {
    /// Reads the counters from the value of an `INET_DIAG_INFO` attribute, a kernel
    /// `struct tcp_info` of whatever length the running kernel has. `None` when it is too
    /// short to hold the byte counters (kernels before 4.1, or a damaged attribute);
    /// later fields past its end are `None`. Never panics, whatever the bytes.
    pub fn from_tcp_info(info: &[u8]) -> Option<TcpCounters> {
        let u32_at = |off: usize| {
            info.get(off..off + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
        };
        let u64_at = |off: usize| {
            info.get(off..off + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
        };
        Some(TcpCounters {
            bytes_acked: u64_at(tcpi::BYTES_ACKED)?,
            bytes_received: u64_at(tcpi::BYTES_RECEIVED)?,
            retrans_total: u32_at(tcpi::TOTAL_RETRANS)?,
            rtt_us: u32_at(tcpi::RTT)?,
            bytes_sent: u64_at(tcpi::BYTES_SENT),
            bytes_retrans: u64_at(tcpi::BYTES_RETRANS),
            min_rtt_us: u32_at(tcpi::MIN_RTT),
            delivery_rate: u64_at(tcpi::DELIVERY_RATE),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A `struct tcp_info` of `len` bytes (the kernel's length varies by version) with
    /// recognisable values in the fields read.
    fn tcp_info(len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len.max(248)];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(tcpi::RTT, &1234u32.to_ne_bytes());
        put(tcpi::TOTAL_RETRANS, &7u32.to_ne_bytes());
        put(tcpi::BYTES_ACKED, &3_000_001u64.to_ne_bytes());
        put(tcpi::BYTES_RECEIVED, &(5u64 << 33).to_ne_bytes());
        put(tcpi::MIN_RTT, &99u32.to_ne_bytes());
        put(tcpi::DELIVERY_RATE, &123_456_789u64.to_ne_bytes());
        put(tcpi::BYTES_SENT, &3_000_100u64.to_ne_bytes());
        put(tcpi::BYTES_RETRANS, &100u64.to_ne_bytes());
        b.truncate(len);
        b
    }

    #[test]
    fn full_tcp_info() {
        // 232 bytes (the size in older headers), 248 (recent kernels), and a longer
        // struct from a kernel newer than this code.
        for len in [232, 248, 300] {
            let c = TcpCounters::from_tcp_info(&tcp_info(len)).unwrap();
            assert_eq!(
                c,
                TcpCounters {
                    bytes_acked: 3_000_001,
                    bytes_received: 5 << 33,
                    retrans_total: 7,
                    rtt_us: 1234,
                    bytes_sent: Some(3_000_100),
                    bytes_retrans: Some(100),
                    min_rtt_us: Some(99),
                    delivery_rate: Some(123_456_789),
                }
            );
        }
    }

    #[test]
    fn short_tcp_info_lacks_the_later_fields() {
        // Linux 4.10 to 4.17 (delivery_rate, no bytes_sent): 192 bytes.
        let c = TcpCounters::from_tcp_info(&tcp_info(192)).unwrap();
        assert_eq!((c.bytes_acked, c.rtt_us), (3_000_001, 1234));
        assert_eq!(c.delivery_rate, Some(123_456_789));
        assert_eq!((c.bytes_sent, c.bytes_retrans), (None, None));
        // Linux 4.2 to 4.5: 144 bytes, nothing past the segment counts.
        let c = TcpCounters::from_tcp_info(&tcp_info(144)).unwrap();
        assert_eq!((c.bytes_acked, c.bytes_received), (3_000_001, 5 << 33));
        assert_eq!(
            (c.min_rtt_us, c.delivery_rate, c.bytes_sent),
            (None, None, None)
        );
        // A field cut in the middle is missing, not read past the end.
        let c = TcpCounters::from_tcp_info(&tcp_info(tcpi::BYTES_SENT + 7)).unwrap();
        assert_eq!(c.bytes_sent, None);
        assert_eq!(c.delivery_rate, Some(123_456_789));
        let c = TcpCounters::from_tcp_info(&tcp_info(tcpi::BYTES_RETRANS + 8)).unwrap();
        assert_eq!(
            (c.bytes_sent, c.bytes_retrans),
            (Some(3_000_100), Some(100))
        );
    }

    #[test]
    fn too_short_or_odd_tcp_info_is_none_never_a_panic() {
        // Before Linux 4.1 there are no byte counters: no counters at all.
        assert_eq!(TcpCounters::from_tcp_info(&tcp_info(104)), None);
        assert_eq!(TcpCounters::from_tcp_info(&tcp_info(135)), None);
        assert!(TcpCounters::from_tcp_info(&tcp_info(136)).is_some());
        // Every length from empty to past the end, and odd ones.
        let full = tcp_info(260);
        for len in 0..=full.len() {
            let c = TcpCounters::from_tcp_info(&full[..len]);
            assert_eq!(c.is_some(), len >= 136, "{len}");
        }
        let ones = vec![0xff; 251];
        let c = TcpCounters::from_tcp_info(&ones).unwrap();
        assert_eq!(c.bytes_acked, u64::MAX);
        assert_eq!(c.rtt_us, u32::MAX);
    }
}
