//! How one port is asked: the seam where later probe methods (raw SYN, UDP payloads) plug
//! in. The connect prober needs no privilege: the kernel does the handshake.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What one probe observed.
#[derive(Debug)]
pub enum ProbeOutcome {
    /// The handshake completed.
    Open(Duration),
    /// The host answered with a reset.
    Closed(Duration),
    /// An ICMP error said the destination cannot be reached (with the errno's reason).
    Unreachable(&'static str, Duration),
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
    if is(Errno::CONNREFUSED) {
        ProbeOutcome::Closed(elapsed)
    } else if is(Errno::HOSTUNREACH) {
        ProbeOutcome::Unreachable("host-unreach", elapsed)
    } else if is(Errno::NETUNREACH) {
        ProbeOutcome::Unreachable("net-unreach", elapsed)
    } else if is(Errno::ACCESS) || is(Errno::PERM) {
        // A local firewall (nftables reject/drop in OUTPUT) refused to send.
        ProbeOutcome::Unreachable("admin-prohibited", elapsed)
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
                ProbeOutcome::Open(rtt)
            }
            Ok(Err(e)) => classify(&e, start.elapsed()),
            Err(_) => ProbeOutcome::Timeout,
        }
    }
}
