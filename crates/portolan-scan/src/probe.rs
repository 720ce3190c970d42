//! What one probe can observe, and what each errno means. The connect probe needs no
//! privilege: the kernel does the handshake (connect.rs drives it).

use std::io;
use std::time::Duration;

use rustix::io::Errno;

use crate::PortState;

/// What one probe observed.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// Something answered: a handshake (open, `syn-ack`), a reset (closed, `conn-refused`)
    /// or an ICMP unreachable (filtered, with the errno's reason).
    Answered {
        state: PortState,
        reason: &'static str,
        rtt: Duration,
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
    };
    match e {
        Errno::CONNREFUSED => answer(PortState::Closed, "conn-refused"),
        Errno::HOSTUNREACH => answer(PortState::Filtered, "host-unreach"),
        Errno::NETUNREACH => answer(PortState::Filtered, "net-unreach"),
        // An ICMP admin-prohibited (IPv6) or a local firewall refused the connection.
        Errno::ACCESS | Errno::PERM => answer(PortState::Filtered, "admin-prohibited"),
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
