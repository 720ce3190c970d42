//! What one probe can observe, and what each errno means. The connect probe needs no
//! privilege: the kernel does the handshake (connect.rs drives it).

use std::io;
use std::time::Duration;

use rustix::io::Errno;

use crate::PortState;

/// Why a port got its state: every reason the scanner gives (what
/// [`PortResult::reason`](crate::PortResult::reason) holds), defined once here.
pub mod reason {
    /// A handshake completed: open.
    pub const SYN_ACK: &str = "syn-ack";
    /// A reset: closed.
    pub const CONN_REFUSED: &str = "conn-refused";
    /// Nothing came back: filtered.
    pub const NO_RESPONSE: &str = "no-response";
    pub const HOST_UNREACH: &str = "host-unreach";
    pub const NET_UNREACH: &str = "net-unreach";
    /// An ICMP admin-prohibited or a local firewall: filtered, but the host is up.
    pub const ADMIN_PROHIBITED: &str = "admin-prohibited";
    /// The probe failed on this machine: the port is left unknown (filtered).
    pub const LOCAL_ERROR: &str = "local-error";
    /// A reset to a raw SYN: closed.
    pub const RESET: &str = "reset";
    /// An ICMP port unreachable: closed for UDP, filtered for TCP.
    pub const PORT_UNREACH: &str = "port-unreach";
    /// An ICMP protocol unreachable: filtered.
    pub const PROTO_UNREACH: &str = "proto-unreach";
    /// A UDP answer: open.
    pub const UDP_RESPONSE: &str = "udp-response";
    /// The host answers SYN-ACK on every port (a tarpit or a SYN proxy): filtered, the
    /// port's real state hidden.
    pub const SYN_ACK_ALL: &str = "syn-ack-all";

    /// Every reason.
    pub const ALL: [&str; 12] = [
        SYN_ACK,
        CONN_REFUSED,
        NO_RESPONSE,
        HOST_UNREACH,
        NET_UNREACH,
        ADMIN_PROHIBITED,
        LOCAL_ERROR,
        RESET,
        PORT_UNREACH,
        PROTO_UNREACH,
        SYN_ACK_ALL,
        UDP_RESPONSE,
    ];

    /// `r` as the scanner's own static string, if it is one of [`ALL`].
    pub fn known(r: &str) -> Option<&'static str> {
        ALL.into_iter().find(|k| *k == r)
    }
}

/// What one probe observed.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// Something answered: a handshake (open, `syn-ack`), a reset (closed, `conn-refused`)
    /// or an ICMP unreachable (filtered, with the errno's reason).
    Answered {
        state: PortState,
        reason: &'static str,
        rtt: Duration,
        /// The answer's IP TTL (raw scans of IPv4 read it; a connect never sees it).
        ttl: Option<u8>,
    },
    /// An answer to an earlier attempt of this probe, which had timed out: the verdict
    /// holds, but when that attempt went is not known here, so it gives no RTT sample
    /// (Karn's rule: timing it against the later attempt would shrink the timeouts).
    AnsweredLate {
        state: PortState,
        reason: &'static str,
        ttl: Option<u8>,
    },
    /// Nothing came back before the timeout.
    Timeout,
    /// This machine ran short of a resource (descriptors, ports, buffers): try again later.
    Resource(io::Error),
    /// The probe proved nothing (it connected to itself): send it again, as it was.
    Again,
    /// Anything else: reported, the port left unknown.
    Failed(io::Error),
}

/// The outcome of an errno from socket(), connect() or the socket's pending error.
pub(crate) fn classify(e: Errno, elapsed: Duration) -> ProbeOutcome {
    let answer = |state, reason| ProbeOutcome::Answered {
        state,
        reason,
        rtt: elapsed,
        ttl: None,
    };
    match e {
        Errno::CONNREFUSED => answer(PortState::Closed, reason::CONN_REFUSED),
        Errno::HOSTUNREACH => answer(PortState::Filtered, reason::HOST_UNREACH),
        Errno::NETUNREACH => answer(PortState::Filtered, reason::NET_UNREACH),
        // An ICMP admin-prohibited (IPv6) or a local firewall refused the connection.
        Errno::ACCESS | Errno::PERM => answer(PortState::Filtered, reason::ADMIN_PROHIBITED),
        Errno::TIMEDOUT => ProbeOutcome::Timeout,
        // Out of descriptors, ephemeral ports, buffers or memory: try again later.
        Errno::MFILE
        | Errno::NFILE
        | Errno::ADDRNOTAVAIL
        | Errno::NOBUFS
        | Errno::NOMEM
        | Errno::AGAIN => ProbeOutcome::Resource(e.into()),
        other => ProbeOutcome::Failed(other.into()),
    }
}
