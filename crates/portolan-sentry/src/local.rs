//! What listens here: the answer to "did this first contact find anything?".
//!
//! A connection attempt (a SYN, a UDP datagram) succeeds when a socket listens on its
//! local address and port (a wildcard address counts). Any other TCP first packet (FIN,
//! NULL, Xmas, ACK) is only normal when a TCP socket of any state uses that local port (the
//! late packet of a closed connection, an ACK conntrack picked up mid-stream); for those,
//! every TCP socket's local port is read in one dump, when such a packet comes and at most
//! once a second.
//!
//! The listening table comes from sock_diag (as `ss -l`), read again every second, and at
//! once (at most ten times a second) when a contact finds nothing: a listener that opened
//! a moment ago is not counted a failure.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use portolan_core::Protocol;
use portolan_sockets::{Netlink, SocketSource};

use crate::packet::{flags, Packet, Transport};

const REFRESH: Duration = Duration::from_secs(1);
const REFRESH_ON_MISS: Duration = Duration::from_millis(100);
/// TCP LISTEN (10) and UDP's unconnected state (7), as sock_diag's state bits.
const LISTEN_STATES: u32 = (1 << 10) | (1 << 7);
/// Every TCP state.
const ALL_STATES: u32 = u32::MAX;
/// How long the dump of every TCP socket is used before it is taken again.
const ANY_TTL: Duration = Duration::from_secs(1);

/// The local listening sockets, kept fresh.
#[derive(Debug)]
pub struct LocalPorts {
    listening: HashMap<(Transport, u16), Vec<IpAddr>>,
    refreshed: Option<Instant>,
    /// Whether the TCP and the UDP table have been read at least once.
    known: (bool, bool),
    /// Local ports of every TCP socket, from the last dump.
    any_tcp: std::collections::HashSet<u16>,
    any_tcp_read: Option<Instant>,
    any_tcp_known: bool,
    /// Whether the last refresh failed (the table is then the one before).
    pub last_error: Option<String>,
}

impl Default for LocalPorts {
    fn default() -> Self {
        LocalPorts::new()
    }
}

impl LocalPorts {
    pub fn new() -> LocalPorts {
        LocalPorts {
            listening: HashMap::new(),
            refreshed: None,
            known: (false, false),
            any_tcp: std::collections::HashSet::new(),
            any_tcp_read: None,
            any_tcp_known: false,
            last_error: None,
        }
    }

    /// Reads the listening table again. A protocol whose dump fails keeps its table from
    /// before (and `last_error` says why); until one dump has worked, its answers are
    /// unknown.
    pub fn refresh(&mut self) {
        self.refreshed = Some(Instant::now());
        self.last_error = None;
        for (proto, t) in [
            (Protocol::Tcp, Transport::Tcp),
            (Protocol::Udp, Transport::Udp),
        ] {
            match Netlink.dump_both_families(proto, LISTEN_STATES, None) {
                Ok(entries) => {
                    self.listening.retain(|(tr, _), _| *tr != t);
                    for e in entries {
                        // UDP sockets connected to a peer are not listening for anyone.
                        if e.remote.is_some_and(|r| r.port() != 0) {
                            continue;
                        }
                        self.listening
                            .entry((t, e.local.port()))
                            .or_default()
                            .push(e.local.ip());
                    }
                    match t {
                        Transport::Tcp => self.known.0 = true,
                        Transport::Udp => self.known.1 = true,
                    }
                }
                Err(e) => self.last_error = Some(format!("{}: {e}", t.as_str())),
            }
        }
    }

    /// Brings the table up to date if it is older than a second.
    pub fn maybe_refresh(&mut self) {
        if self.refreshed.is_none_or(|r| r.elapsed() >= REFRESH) {
            self.refresh();
        }
    }

    fn listens(&self, t: Transport, dst: IpAddr, port: u16) -> bool {
        self.listening.get(&(t, port)).is_some_and(|addrs| {
            addrs.iter().any(|a| match (a, dst) {
                // 0.0.0.0 takes IPv4 only; [::] takes both (unless IPV6_V6ONLY, which the
                // table does not say: counted as both).
                (IpAddr::V4(a4), IpAddr::V4(_)) if a4.is_unspecified() => true,
                (IpAddr::V6(a6), _) if a6.is_unspecified() => true,
                (IpAddr::V6(a6), IpAddr::V4(d4)) => a6.to_ipv4_mapped() == Some(d4),
                (a, d) => *a == d,
            })
        })
    }

    /// Whether this first packet found something: `None` when that cannot be known (the
    /// table could not be read, or too many on-demand lookups this second); such a
    /// packet is left out rather than guessed a failure.
    pub fn success(&mut self, p: &Packet) -> Option<bool> {
        let attempt = p.transport == Transport::Udp
            || p.flags & (flags::SYN | flags::ACK | flags::RST) == flags::SYN;
        if self.listens(p.transport, p.dst, p.dport) {
            return Some(true);
        }
        if self
            .refreshed
            .is_none_or(|r| r.elapsed() >= REFRESH_ON_MISS)
        {
            self.refresh();
            if self.listens(p.transport, p.dst, p.dport) {
                return Some(true);
            }
        }
        let known = match p.transport {
            Transport::Tcp => self.known.0,
            Transport::Udp => self.known.1,
        };
        if !known {
            return None;
        }
        if attempt {
            return Some(false);
        }
        self.any_tcp_socket(p.dport)
    }

    /// Whether any TCP socket (of any state) uses local port `port`. The answer comes from
    /// one dump of every TCP socket, taken when a stray packet needs it and at most once a
    /// second (a flood of FIN or NULL probes costs a set lookup each, not a dump each).
    fn any_tcp_socket(&mut self, port: u16) -> Option<bool> {
        let now = Instant::now();
        if self
            .any_tcp_read
            .is_none_or(|t| now.duration_since(t) >= ANY_TTL)
        {
            self.any_tcp_read = Some(now);
            match Netlink.dump_both_families(Protocol::Tcp, ALL_STATES, None) {
                Ok(v) => {
                    self.any_tcp = v.iter().map(|e| e.local.port()).collect();
                    self.any_tcp_known = true;
                }
                Err(_) => self.any_tcp_known = false,
            }
        }
        self.any_tcp_known.then(|| self.any_tcp.contains(&port))
    }
}
