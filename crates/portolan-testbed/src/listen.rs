//! The listeners behind "open" ports: one thread inside the target namespace holding every
//! listening socket of every up host (thousands are fine), woken by epoll, accepting and
//! then closing (or holding, bounded in number and time) each connection.
//! It must not read or answer data: open means "the handshake completes".
//!
//! The same thread is the UDP echo responder: every UDP socket it holds sends each datagram
//! back to its sender, unchanged.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::{epoll, Timespec};
use rustix::net::SocketFlags;
use serde::{Deserialize, Serialize};

use crate::{netns, TestbedError};

/// What a listener does with an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptMode {
    /// Accept and close at once (the client sees the connect succeed, then EOF).
    #[default]
    Close,
    /// Accept and keep the connection open, at most [`HOLD_MAX`] at a time (the oldest is
    /// closed first) and each for at most [`HOLD_FOR`].
    Hold,
}

/// Connections held at most in [`AcceptMode::Hold`].
pub const HOLD_MAX: usize = 4096;
/// How long a held connection stays open at most.
pub const HOLD_FOR: Duration = Duration::from_secs(30);
/// Listen backlog: a fast scanner may have many handshakes in flight to one port.
const BACKLOG: i32 = 4096;
const STOP: u64 = u64::MAX;
/// Set in the epoll tag of a UDP echo socket (the rest is its index).
const UDP_TAG: u64 = 1 << 40;
/// Datagrams echoed per socket per wake-up at most; level-triggered epoll reports the rest.
const ECHO_BATCH: usize = 64;

/// The running listener thread. Dropping it closes every listener and held connection.
#[derive(Debug)]
pub(crate) struct Listeners {
    stop: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
    count: usize,
    udp_count: usize,
}

/// What the listener thread binds.
#[derive(Debug, Default)]
pub(crate) struct Binds {
    /// TCP listeners of open ports.
    pub tcp: Vec<SocketAddr>,
    /// Transparent TCP listeners of SYN-ACK-all hosts (nftables `tproxy` hands them every
    /// port of their address).
    pub tarpit: Vec<SocketAddr>,
    /// UDP echo sockets.
    pub echo: Vec<SocketAddr>,
}

fn listen_on(addr: SocketAddr, transparent: bool) -> Result<OwnedFd, TestbedError> {
    let op = |what: &str| format!("{what} {addr}");
    let fd = crate::connect::stream_socket(addr)
        .map_err(|e| TestbedError::io(op("create a socket for"), e))?;
    rustix::net::sockopt::set_socket_reuseaddr(&fd, true)
        .map_err(|e| TestbedError::io(op("set SO_REUSEADDR on"), e))?;
    if transparent {
        crate::sys::set_transparent(&fd, addr.is_ipv6())
            .map_err(|e| TestbedError::io(op("set IP_TRANSPARENT on"), e))?;
    }
    rustix::net::bind(&fd, &addr).map_err(|e| TestbedError::io(op("bind"), e))?;
    rustix::net::listen(&fd, BACKLOG).map_err(|e| TestbedError::io(op("listen on"), e))?;
    Ok(fd)
}

fn udp_bind(addr: SocketAddr) -> Result<OwnedFd, TestbedError> {
    use rustix::net::{AddressFamily, SocketType};
    let op = |what: &str| format!("{what} UDP {addr}");
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| TestbedError::io(op("create a socket for"), e))?;
    rustix::net::bind(&fd, &addr).map_err(|e| TestbedError::io(op("bind"), e))?;
    Ok(fd)
}

impl Listeners {
    /// Binds everything in `binds` inside `ns` and starts serving; returns once all are
    /// bound (or the first bind failed).
    pub(crate) fn start(ns: &str, binds: Binds, mode: AcceptMode) -> Result<Self, TestbedError> {
        let Binds { tcp, tarpit, echo } = binds;
        let stop = Arc::new(
            rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )
            .map_err(|e| TestbedError::io("create an eventfd", e))?,
        );
        let count = tcp.len() + tarpit.len();
        let udp_count = echo.len();
        let (tx, rx) = mpsc::sync_channel(1);
        let ns = ns.to_owned();
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("pt-serve".into())
            .spawn(move || {
                let setup = (|| {
                    netns::enter(&ns)?;
                    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)
                        .map_err(|e| TestbedError::io("create an epoll instance", e))?;
                    epoll::add(
                        &ep,
                        &*stop2,
                        epoll::EventData::new_u64(STOP),
                        epoll::EventFlags::IN,
                    )
                    .map_err(|e| TestbedError::io("watch the stop eventfd", e))?;
                    let mut socks = Vec::with_capacity(tcp.len() + tarpit.len());
                    let all = tcp
                        .into_iter()
                        .map(|a| (a, false))
                        .chain(tarpit.into_iter().map(|a| (a, true)));
                    for (i, (addr, transparent)) in all.enumerate() {
                        let fd = listen_on(addr, transparent)?;
                        epoll::add(
                            &ep,
                            &fd,
                            epoll::EventData::new_u64(i as u64),
                            epoll::EventFlags::IN,
                        )
                        .map_err(|e| TestbedError::io(format!("watch listener {addr}"), e))?;
                        socks.push(fd);
                    }
                    let mut udp = Vec::with_capacity(echo.len());
                    for addr in echo {
                        let fd = udp_bind(addr)?;
                        let tag = UDP_TAG | udp.len() as u64;
                        epoll::add(
                            &ep,
                            &fd,
                            epoll::EventData::new_u64(tag),
                            epoll::EventFlags::IN,
                        )
                        .map_err(|e| TestbedError::io(format!("watch UDP {addr}"), e))?;
                        udp.push(fd);
                    }
                    Ok((ep, socks, udp))
                })();
                match setup {
                    Ok((ep, socks, udp)) => {
                        let _ = tx.send(Ok(()));
                        serve(&ep, &socks, &udp, mode);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| TestbedError::io("spawn the listener thread", e))?;
        let mut me = Self {
            stop,
            thread: Some(thread),
            count,
            udp_count,
        };
        match rx.recv() {
            Ok(Ok(())) => Ok(me),
            Ok(Err(e)) => {
                me.stop();
                Err(e)
            }
            Err(_) => {
                me.stop();
                Err(TestbedError::io(
                    "start the listener thread",
                    std::io::Error::other("it exited during setup"),
                ))
            }
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    pub(crate) fn udp_count(&self) -> usize {
        self.udp_count
    }

    /// Stops the thread, closing every socket; idempotent.
    pub(crate) fn stop(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends back up to [`ECHO_BATCH`] waiting datagrams of `sock`, each to its sender.
fn echo(sock: &OwnedFd, buf: &mut [u8]) {
    for _ in 0..ECHO_BATCH {
        match rustix::net::recvfrom(sock, &mut *buf, rustix::net::RecvFlags::empty()) {
            Ok((n, _, Some(from))) => {
                // A full socket buffer or an unreachable sender loses this reply, like a
                // real server's would.
                let _ =
                    rustix::net::sendto(sock, &buf[..n], rustix::net::SendFlags::empty(), &from);
            }
            Err(rustix::io::Errno::WOULDBLOCK) => break,
            // No sender address (not on a bound UDP socket), or an ICMP error for an earlier
            // reply (ECONNREFUSED and the like), which this call consumed.
            Ok((_, _, None)) | Err(_) => {}
        }
    }
}

fn serve(ep: &OwnedFd, socks: &[OwnedFd], udp: &[OwnedFd], mode: AcceptMode) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut buf = vec![0u8; 65_536];
    let mut held: VecDeque<(Instant, OwnedFd)> = VecDeque::new();
    loop {
        let now = Instant::now();
        while held.front().is_some_and(|(until, _)| *until <= now) {
            held.pop_front();
        }
        let wait = held
            .front()
            .map_or(Duration::from_secs(1), |(until, _)| {
                until.saturating_duration_since(now)
            })
            .clamp(Duration::from_millis(1), Duration::from_secs(1));
        let ts = Timespec {
            tv_sec: i64::try_from(wait.as_secs()).unwrap_or(1),
            tv_nsec: i64::from(wait.subsec_nanos()),
        };
        events.clear();
        match epoll::wait(ep, spare_capacity(&mut events), Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        for ev in &events {
            let idx = ev.data.u64();
            if idx == STOP {
                return;
            }
            if idx & UDP_TAG != 0 {
                let sock = usize::try_from(idx & !UDP_TAG)
                    .ok()
                    .and_then(|i| udp.get(i));
                if let Some(sock) = sock {
                    echo(sock, &mut buf);
                }
                continue;
            }
            let Some(listener) = usize::try_from(idx).ok().and_then(|i| socks.get(i)) else {
                continue;
            };
            // Bounded per wake-up; level-triggered epoll reports the rest next time.
            for _ in 0..64 {
                match rustix::net::accept_with(
                    listener,
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                ) {
                    Ok(conn) => {
                        if mode == AcceptMode::Hold {
                            if held.len() >= HOLD_MAX {
                                held.pop_front();
                            }
                            held.push_back((Instant::now() + HOLD_FOR, conn));
                        }
                        // AcceptMode::Close: `conn` drops here.
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
