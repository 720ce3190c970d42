//! How one port is asked: the seam where later probe methods (raw SYN, UDP payloads) plug
//! in. The connect prober needs no privilege: the kernel does the handshake.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
    /// Anything else: reported, the port left unknown.
    Failed(io::Error),
}

/// A probe method.
pub trait Prober {
    fn probe(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> impl Future<Output = ProbeOutcome> + Send;
}

/// TCP connect(): open on a completed handshake, closed on RST, filtered on silence or an
/// ICMP unreachable.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectProber;

fn classify(e: &io::Error, elapsed: Duration) -> ProbeOutcome {
    use rustix::io::Errno;
    let raw = e.raw_os_error();
    let is = |errno: Errno| raw == Some(errno.raw_os_error());
    let answer = |state, reason| ProbeOutcome::Answered {
        state,
        reason,
        rtt: elapsed,
    };
    if is(Errno::CONNREFUSED) {
        answer(PortState::Closed, "conn-refused")
    } else if is(Errno::HOSTUNREACH) {
        answer(PortState::Filtered, "host-unreach")
    } else if is(Errno::NETUNREACH) {
        answer(PortState::Filtered, "net-unreach")
    } else if is(Errno::ACCESS) || is(Errno::PERM) {
        // An ICMP admin-prohibited (IPv6) or a local firewall refused the connection.
        answer(PortState::Filtered, "admin-prohibited")
    } else if is(Errno::TIMEDOUT) {
        ProbeOutcome::Timeout
    } else if is(Errno::MFILE)
        || is(Errno::NFILE)
        || is(Errno::ADDRNOTAVAIL)
        || is(Errno::NOBUFS)
        || is(Errno::NOMEM)
    {
        ProbeOutcome::Resource(io::Error::from_raw_os_error(raw.unwrap_or(0)))
    } else {
        ProbeOutcome::Failed(io::Error::new(e.kind(), e.to_string()))
    }
}

impl Prober for ConnectProber {
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
        let sock = match if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        } {
            Ok(s) => s,
            Err(e) => return classify(&e, Duration::ZERO),
        };
        let start = Instant::now();
        match tokio::time::timeout(timeout, sock.connect(addr)).await {
            Ok(Ok(stream)) => {
                let rtt = start.elapsed();
                // Close with RST rather than FIN: no TIME-WAIT left on this side, no goodbye
                // exchange with the target. Set only here: refused and unanswered probes
                // never established anything, and one system call fewer per probe counts.
                let _ = stream.set_zero_linger();
                drop(stream);
                ProbeOutcome::Answered {
                    state: PortState::Open,
                    reason: "syn-ack",
                    rtt,
                }
            }
            Ok(Err(e)) => classify(&e, start.elapsed()),
            Err(_) => ProbeOutcome::Timeout,
        }
    }
}
