//! UDP sessions, one upstream socket per client.
//!
//! A listening socket's task ([`serve`]) reads every client's datagrams. The first datagram
//! from a client address (exactly as it arrived, so `::ffff:a.b.c.d` on a dual-stack socket
//! stays that; `allow` sees the canonical IPv4 form) opens a session: the rule's `allow` and
//! caps are checked ([`RuleState::admit`]; the admission lives as long as the session), and a
//! UDP socket of the target's family is connected to the target. The kernel then delivers the
//! target's replies to that socket alone, so a session's reader task sends each reply to its
//! own client from the listening socket: a reply cannot reach another client.
//!
//! A session ends when no datagram crossed either way for `udp_timeout` (a sweep every
//! `udp_timeout / 4`, between 10 ms and 1 s, looks at the least recently used end of the
//! list only), when `udp_max_sessions` is reached and a new client needs room (the least
//! recently used session is evicted), or when the target answers with an ICMP error (a
//! connected socket reads it as ECONNREFUSED and the like: `target_failed`). Sessions sit in a
//! hash map from client address to a slot of a doubly linked list kept in most recently used
//! order, so finding, touching, evicting and expiring are O(1) each. The cap counts the
//! sessions of one listening socket (each port of a range has its own table); `max_conns`
//! caps the rule as a whole.
//!
//! Memory: datagrams are read into one 64 KiB buffer per runtime thread (a datagram is read
//! and sent on without an `await` in between), so a session holds no buffer: it is its slot,
//! its reader task and its socket. Measured with 10,000 sessions: about 1.2 KB of the
//! process's memory and 2.7 KB of the kernel's (socket, file, inode, epoll entry) each. A
//! datagram that cannot be sent at once (send buffer full) is copied out and sent by an
//! `await`.
//!
//! Refusals, target failures and local errors (EMFILE) are counted every time; their events
//! go out at most [`EVENTS_PER_SECOND`] per second of each kind per rule (UDP has no reset,
//! and a flood of refused datagrams must not become a flood of log lines).
//!
//! Batching (recvmmsg/sendmmsg) is not used, because it would not pay here. Each session's
//! traffic goes through a socket of its own, so only the listening socket carries many
//! datagrams at once. Receiving there in batches needs recvmmsg, which rustix lacks (and
//! `unsafe` is not allowed). Sending there in batches needs replies from many sessions
//! gathered first, which would delay request/answer traffic (DNS, the common case). And what
//! a batch saves is small next to the rest of a datagram's path. Measured on loopback (a
//! loaded 2-core VM): one sendmmsg of 32 datagrams cost about 0.8 of 32 sendto calls, and
//! in a profile of a forwarded flood, syscall entry and exit were under 4% of the
//! forwarder's time; the network stack and thread wake-ups were the rest.
//!
//! When [`serve`] is aborted (reload, drain), every session ends with it: their admissions
//! are given back and their reader tasks aborted at once, and the listening socket is closed
//! before the task's drop returns (readers touch it only between two `await`s, under a lock
//! the drop takes), so the address can be bound again immediately.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use portolan_core::Port;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::server::{Admission, Event, Live, RuleState};
use crate::spec::Proto;
use crate::stats::{Refusal, RuleStats};

/// The largest UDP payload (and then some): no datagram is ever cut.
const BUF_LEN: usize = 64 * 1024;
/// Datagrams moved in one go before a task lets others run.
const BURST: usize = 64;
/// Replies waiting for the listening socket's send buffer (beyond: dropped).
const BACKLOG: usize = 256;
/// How long a datagram may wait for a full send buffer (then it is dropped).
const SEND_WAIT: Duration = Duration::from_millis(100);
/// Receive and send buffer asked for the listening socket (the kernel caps it at
/// net.core.rmem_max/wmem_max): a burst of many clients at once (DNS) overflows the default
/// 208 KiB.
const LISTEN_BUFFER: usize = 4 << 20;
/// Events of one kind a rule sends per second at most.
pub const EVENTS_PER_SECOND: u32 = 5;
/// Bounds of the idle sweep's period (a quarter of the idle timeout).
const SWEEP_MIN: Duration = Duration::from_millis(10);
const SWEEP_MAX: Duration = Duration::from_secs(1);

thread_local! {
    /// The datagram buffer of this runtime thread, allocated at its first datagram.
    static BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's 64 KiB buffer. `f` is a plain closure (no `await`), so on a
/// runtime thread no two users overlap; were one nested in another, it would get a buffer
/// of its own.
fn with_buf<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let mut b = BUF.try_with(Cell::take).unwrap_or_default();
    if b.len() < BUF_LEN {
        b.resize(BUF_LEN, 0);
    }
    let r = f(&mut b);
    let _ = BUF.try_with(|c| c.set(b));
    r
}

/// Which kind of event a limit is for.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Refused = 0,
    TargetFailed = 1,
    Error = 2,
}

/// Per-rule limits on how many UDP events go out each second (each kind on its own).
#[derive(Debug, Default)]
pub(crate) struct EventLimiter {
    windows: Mutex<[(Option<std::time::Instant>, u32); 3]>,
}

impl EventLimiter {
    /// Whether one more event of `kind` may go out now.
    fn allow(&self, kind: Kind) -> bool {
        let mut w = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((start, sent)) = w.get_mut(kind as usize) else {
            return false;
        };
        let now = std::time::Instant::now();
        match start {
            Some(s) if now.duration_since(*s) < Duration::from_secs(1) => {
                if *sent >= EVENTS_PER_SECOND {
                    return false;
                }
                *sent += 1;
            }
            _ => {
                *start = Some(now);
                *sent = 1;
            }
        }
        true
    }
}

/// One client's session.
struct Session {
    /// Connected to the target.
    upstream: Arc<UdpSocket>,
    target: SocketAddr,
    /// The task reading the target's replies (aborted when the session ends).
    reader: Option<JoinHandle<()>>,
    /// The session's place in the rule's caps.
    _admission: Admission,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(h) = self.reader.take() {
            h.abort();
        }
    }
}

const NIL: usize = usize::MAX;

struct Slot<S> {
    peer: SocketAddr,
    /// Tells this slot's session from an earlier or later one in the same slot.
    id: u64,
    /// Towards the most recently used end.
    prev: usize,
    /// Towards the least recently used end.
    next: usize,
    /// When a datagram last crossed either way.
    last: Instant,
    /// `None`: the slot is free.
    value: Option<S>,
}

/// The sessions of one listening socket: a hash map from client address to a slot, the
/// slots linked in most recently used order (head: most recent), freed slots reused. Every
/// operation is O(1).
struct Table<S> {
    map: HashMap<SocketAddr, usize>,
    slots: Vec<Slot<S>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    next_id: u64,
}

impl<S> Table<S> {
    fn new() -> Table<S> {
        Table {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            next_id: 0,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn unlink(&mut self, i: usize) {
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        let (prev, next) = (s.prev, s.next);
        s.prev = NIL;
        s.next = NIL;
        match self.slots.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        let old = self.head;
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        s.prev = NIL;
        s.next = old;
        match self.slots.get_mut(old) {
            Some(h) => h.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }

    /// Whether slot `i` holds session `id`.
    fn holds(&self, i: usize, id: u64) -> bool {
        self.slots
            .get(i)
            .is_some_and(|s| s.id == id && s.value.is_some())
    }

    /// The session of `peer`, marked used now: its slot, id and value.
    fn use_peer(&mut self, peer: &SocketAddr, now: Instant) -> Option<(usize, u64, &S)> {
        let i = *self.map.get(peer)?;
        let id = self.slots.get(i)?.id;
        self.touch(i, id, now);
        let v = self.slots.get(i)?.value.as_ref()?;
        Some((i, id, v))
    }

    /// Marks slot `i` used now if it still holds session `id`.
    fn touch(&mut self, i: usize, id: u64, now: Instant) {
        if !self.holds(i, id) {
            return;
        }
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        if let Some(s) = self.slots.get_mut(i) {
            s.last = now;
        }
    }

    /// Session `id` in slot `i`, if it is still there.
    fn get_mut(&mut self, i: usize, id: u64) -> Option<&mut S> {
        self.slots
            .get_mut(i)
            .filter(|s| s.id == id)
            .and_then(|s| s.value.as_mut())
    }

    /// Adds `value` for `peer` (which has none) as the most recently used: its slot and id.
    fn insert(&mut self, peer: SocketAddr, value: S, now: Instant) -> (usize, u64) {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let slot = Slot {
            peer,
            id,
            prev: NIL,
            next: NIL,
            last: now,
            value: Some(value),
        };
        let i = match self.free.pop() {
            Some(i) if i < self.slots.len() => {
                if let Some(s) = self.slots.get_mut(i) {
                    *s = slot;
                }
                i
            }
            _ => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.push_front(i);
        self.map.insert(peer, i);
        (i, id)
    }

    /// Removes the session in slot `i`.
    fn remove(&mut self, i: usize) -> Option<S> {
        let value = self.slots.get_mut(i)?.value.take()?;
        self.unlink(i);
        if let Some(s) = self.slots.get(i) {
            self.map.remove(&s.peer);
        }
        self.free.push(i);
        if self.map.is_empty() {
            // Give back what a flood grew.
            *self = Table {
                next_id: self.next_id,
                ..Table::new()
            };
        }
        Some(value)
    }

    /// Removes slot `i`'s session if it is still session `id`.
    fn remove_id(&mut self, i: usize, id: u64) -> Option<S> {
        if self.holds(i, id) {
            self.remove(i)
        } else {
            None
        }
    }

    /// Removes the least recently used session.
    fn pop_lru(&mut self) -> Option<S> {
        self.remove(self.tail)
    }

    /// Removes the least recently used session if it was last used at `cutoff` or before.
    fn pop_idle(&mut self, cutoff: Instant) -> Option<S> {
        if self.slots.get(self.tail)?.last <= cutoff {
            self.pop_lru()
        } else {
            None
        }
    }

    /// Every session, the table left empty.
    fn take_all(&mut self) -> Vec<S> {
        let all = std::mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|s| s.value)
            .collect();
        *self = Table {
            next_id: self.next_id,
            ..Table::new()
        };
        all
    }
}

/// What a listening socket's task shares with its sessions' reader tasks.
struct Shared {
    state: Arc<RuleState>,
    port: Port,
    /// The listening socket, for the readers' replies; taken by [`Closer`] so that it is
    /// closed when [`serve`] ends. Readers hold the lock only around a non-blocking send.
    listen: RwLock<Option<Arc<UdpSocket>>>,
    table: Mutex<Table<Session>>,
    /// Replies that found the listening socket's send buffer full, for `serve` to send.
    backlog: mpsc::Sender<(Vec<u8>, SocketAddr)>,
}

/// Ends every session and closes the listening socket when `serve` ends (it is aborted).
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        let sessions = self.0.lock_table().take_all();
        drop(sessions);
        let listen = self
            .0
            .listen
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(listen);
    }
}

/// A datagram whose send must wait for buffer space.
struct Pending {
    upstream: Arc<UdpSocket>,
    peer: SocketAddr,
    slot: usize,
    id: u64,
    data: Vec<u8>,
}

/// How reading the listening socket ended.
enum Batch {
    /// Nothing more to read.
    Empty,
    /// A burst was read; there may be more.
    Full,
    /// A datagram waits for its upstream socket's send buffer.
    Wait(Pending),
}

/// What moving one datagram from a target to its client did.
enum Down {
    /// Nothing to read.
    Empty,
    /// Sent (or queued) to the client: its size.
    Relayed(usize),
    /// Read, but could not be sent (counted).
    Dropped,
    /// The target failed (an ICMP error read back).
    Failed(io::Error),
    /// The listening socket is closed: the rule stopped.
    Closed,
}

fn count(c: &AtomicU64, n: u64) {
    RuleStats::add(c, n);
}

fn errno_is(e: &io::Error, errnos: &[Errno]) -> bool {
    e.raw_os_error()
        .is_some_and(|n| errnos.iter().any(|x| x.raw_os_error() == n))
}

/// Whether an error on a connected socket says the target is not there (an ICMP
/// unreachable read back), as opposed to a local or passing problem.
fn target_gone(e: &io::Error) -> bool {
    errno_is(
        e,
        &[
            Errno::CONNREFUSED,
            Errno::HOSTUNREACH,
            Errno::NETUNREACH,
            Errno::HOSTDOWN,
            Errno::NONET,
            Errno::NOPROTOOPT,
            Errno::PROTO,
        ],
    )
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Why no upstream socket could be had.
enum OpenError {
    /// No target address could be connected to: the last one tried and why.
    Target(SocketAddr, io::Error),
    /// A socket could not be made here (EMFILE, ENOBUFS).
    Local(io::Error),
}

/// A UDP socket connected to the first of `targets` that takes it (the family of each in
/// turn, any local port).
fn connect_upstream(
    targets: &[std::net::IpAddr],
    port: u16,
) -> Result<(UdpSocket, SocketAddr), OpenError> {
    let mut last = None;
    for ip in targets {
        let addr = SocketAddr::new(*ip, port);
        let sock = match Socket::new(
            Domain::for_address(addr),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        ) {
            Ok(s) => s,
            Err(e) if errno_is(&e, &[Errno::AFNOSUPPORT]) => {
                last = Some((addr, e));
                continue;
            }
            Err(e) => return Err(OpenError::Local(e)),
        };
        if let Err(e) = sock.connect(&addr.into()) {
            last = Some((addr, e));
            continue;
        }
        return match UdpSocket::from_std(sock.into()) {
            Ok(u) => Ok((u, addr)),
            Err(e) => Err(OpenError::Local(e)),
        };
    }
    let (addr, e) = last.unwrap_or_else(|| {
        (
            SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port),
            io::Error::other("no target address"),
        )
    });
    Err(OpenError::Target(addr, e))
}

/// recv(2) on a connected socket, into `buf`.
fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<usize> {
    rustix::net::recv(sock, buf, RecvFlags::empty())
        .map(|(n, _)| n)
        .map_err(io::Error::from)
}

fn sweep_period(timeout: Duration) -> Duration {
    (timeout / 4).clamp(SWEEP_MIN, SWEEP_MAX)
}

impl Shared {
    fn lock_table(&self) -> MutexGuard<'_, Table<Session>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> &RuleStats {
        &self.state.stats
    }

    fn refused(&self, live: &Live, peer: SocketAddr, why: Refusal) {
        if self.state.udp_events.allow(Kind::Refused) {
            self.state.emit(Event::Refused {
                rule: live.rule.name.clone(),
                proto: Proto::Udp,
                peer,
                why: why.as_str(),
            });
        }
    }

    fn target_failed(&self, peer: SocketAddr, target: SocketAddr, e: &io::Error) {
        count(&self.stats().target_failed, 1);
        if self.state.udp_events.allow(Kind::TargetFailed) {
            self.state.emit(Event::TargetFailed {
                rule: self.state.live().rule.name.clone(),
                proto: Proto::Udp,
                peer,
                target,
                error: e.to_string(),
            });
        }
    }

    fn local_error(&self, peer: SocketAddr, e: &io::Error) {
        count(&self.stats().errors, 1);
        if self.state.udp_events.allow(Kind::Error) {
            let hint = if errno_is(e, &[Errno::MFILE, Errno::NFILE]) {
                " (raise the open-files limit, or lower udp_max_sessions)"
            } else {
                ""
            };
            self.state.emit(Event::AcceptError {
                rule: self.state.live().rule.name.clone(),
                error: format!("UDP session for {peer}: {e}{hint}"),
            });
        }
    }

    /// Ends session `id` in slot `i` because its target failed (if it is still there:
    /// whoever removes it counts it).
    fn end_failed(&self, i: usize, id: u64, peer: SocketAddr, e: &io::Error) {
        let gone = self.lock_table().remove_id(i, id);
        if let Some(s) = gone {
            self.target_failed(peer, s.target, e);
        }
    }

    /// Opens a session for `peer`: admission, upstream socket, reader task; evicts the least
    /// recently used session when the table is full. `None` when refused or failed (the
    /// datagram is dropped).
    fn open(
        self: &Arc<Self>,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<(usize, u64, Arc<UdpSocket>)> {
        let live = self.state.live();
        let admission = match self.state.admit(&live, peer.ip()) {
            Ok(a) => a,
            Err(why) => {
                self.refused(&live, peer, why);
                return None;
            }
        };
        let tport = live.rule.target_port(self.port).get();
        let (sock, target) = match connect_upstream(&live.targets, tport) {
            Ok(x) => x,
            Err(OpenError::Target(target, e)) => {
                self.target_failed(peer, target, &e);
                return None;
            }
            Err(OpenError::Local(e)) => {
                self.local_error(peer, &e);
                return None;
            }
        };
        let upstream = Arc::new(sock);
        let cap = live.rule.options.udp_max_sessions.max(1);
        let mut evicted = Vec::new();
        let (i, id) = {
            let mut t = self.lock_table();
            while t.len() >= cap {
                match t.pop_lru() {
                    Some(s) => evicted.push(s),
                    None => break,
                }
            }
            let session = Session {
                upstream: Arc::clone(&upstream),
                target,
                reader: None,
                _admission: admission,
            };
            let (i, id) = t.insert(peer, session, now);
            let reader = tokio::spawn(read_upstream(
                Arc::clone(self),
                Arc::clone(&upstream),
                peer,
                i,
                id,
            ));
            match t.get_mut(i, id) {
                Some(s) => s.reader = Some(reader),
                None => reader.abort(),
            }
            (i, id)
        };
        count(&self.stats().udp_evicted, evicted.len() as u64);
        drop(evicted);
        count(&self.stats().accepted, 1);
        Some((i, id, upstream))
    }

    /// One datagram from `peer`: to its session's upstream socket (opening the session if
    /// needed). Returns the datagram when the socket's send buffer is full.
    fn from_client(self: &Arc<Self>, data: &[u8], peer: SocketAddr) -> Option<Pending> {
        let now = Instant::now();
        let found = self
            .lock_table()
            .use_peer(&peer, now)
            .map(|(i, id, s)| (i, id, Arc::clone(&s.upstream)));
        let (i, id, upstream) = match found {
            Some(x) => x,
            None => self.open(peer, now)?,
        };
        // Straight to the socket: tokio's readiness for a socket registered a moment ago
        // is not known yet, and a first datagram must not wait a reactor turn for it.
        match rustix::net::send(&*upstream, data, SendFlags::empty()) {
            Ok(n) => count(&self.stats().bytes_up, n as u64),
            Err(e) if e == Errno::AGAIN || e == Errno::INTR => {
                return Some(Pending {
                    upstream,
                    peer,
                    slot: i,
                    id,
                    data: data.to_vec(),
                });
            }
            Err(e) => self.send_up_failed(i, id, peer, &e.into()),
        }
        None
    }

    fn send_up_failed(&self, i: usize, id: u64, peer: SocketAddr, e: &io::Error) {
        if target_gone(e) {
            self.end_failed(i, id, peer, e);
        } else {
            // EMSGSIZE (a datagram too large for the target's family), ENOBUFS, EPERM (a
            // firewall): this datagram is lost, the session goes on.
            count(&self.stats().errors, 1);
        }
    }

    /// Reads the listening socket until it is empty or a burst is done.
    fn from_clients(self: &Arc<Self>, listen: &UdpSocket) -> Result<Batch, io::Error> {
        for _ in 0..BURST {
            let r = with_buf(|buf| match listen.try_recv_from(buf) {
                Ok((n, peer)) => Ok(buf.get(..n).and_then(|d| self.from_client(d, peer))),
                Err(e) => Err(e),
            });
            match r {
                Ok(Some(p)) => return Ok(Batch::Wait(p)),
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Batch::Empty),
                // An unconnected socket hears no ICMP errors on Linux, but some kernels
                // and settings pass them on: not this socket's failure.
                Err(e) if would_block(&e) || target_gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Batch::Full)
    }

    /// One datagram from session `(i, id)`'s target to its client, if one is there.
    fn to_client(&self, upstream: &UdpSocket, peer: SocketAddr) -> Down {
        with_buf(|buf| {
            // Readable first; then, if an ICMP error is pending (EPOLLERR comes without
            // EPOLLIN), recv(2) once more to read it. Each `try_io` clears only its own
            // readiness, and only when the call says EAGAIN. (One `try_io` with both
            // interests would never call: tokio masks a combined interest to nothing.)
            let r = match upstream.try_io(Interest::READABLE, || recv(upstream, buf)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    upstream.try_io(Interest::ERROR, || recv(upstream, buf))
                }
                r => r,
            };
            let n = match r {
                Ok(n) => n,
                Err(e) if would_block(&e) => return Down::Empty,
                Err(e) if target_gone(&e) => return Down::Failed(e),
                Err(_) => {
                    // EMSGSIZE from a "fragmentation needed" and the like: nothing to relay.
                    count(&self.stats().errors, 1);
                    return Down::Dropped;
                }
            };
            let Some(data) = buf.get(..n) else {
                return Down::Dropped;
            };
            let listen = self.listen.read().unwrap_or_else(PoisonError::into_inner);
            let Some(listen) = listen.as_ref() else {
                return Down::Closed;
            };
            match listen.try_send_to(data, peer) {
                Ok(n) => Down::Relayed(n),
                Err(e) if would_block(&e) => {
                    if self.backlog.try_send((data.to_vec(), peer)).is_ok() {
                        Down::Relayed(n)
                    } else {
                        count(&self.stats().errors, 1);
                        Down::Dropped
                    }
                }
                Err(_) => {
                    count(&self.stats().errors, 1);
                    Down::Dropped
                }
            }
        })
    }

    /// Ends sessions idle for the rule's `udp_timeout` and, after a reload lowered
    /// `udp_max_sessions`, the least recently used beyond it. Returns when to sweep next.
    fn sweep(&self) -> Duration {
        let live = self.state.live();
        let o = &live.rule.options;
        let now = Instant::now();
        let mut idle = Vec::new();
        let mut evicted = Vec::new();
        {
            let mut t = self.lock_table();
            if let Some(cutoff) = now.checked_sub(o.udp_timeout) {
                while let Some(s) = t.pop_idle(cutoff) {
                    idle.push(s);
                }
            }
            while t.len() > o.udp_max_sessions.max(1) {
                match t.pop_lru() {
                    Some(s) => evicted.push(s),
                    None => break,
                }
            }
        }
        count(&self.stats().idle_closed, idle.len() as u64);
        count(&self.stats().udp_evicted, evicted.len() as u64);
        drop(idle);
        drop(evicted);
        sweep_period(o.udp_timeout)
    }
}

/// A session's reader: the target's datagrams to the client, until the target fails or
/// the session ends (the task is aborted).
async fn read_upstream(
    shared: Arc<Shared>,
    upstream: Arc<UdpSocket>,
    peer: SocketAddr,
    i: usize,
    id: u64,
) {
    loop {
        // ERROR too: an ICMP error sets EPOLLERR alone, which readable() does not see.
        if upstream
            .ready(Interest::READABLE | Interest::ERROR)
            .await
            .is_err()
        {
            // Only when the runtime shuts down.
            return;
        }
        let mut moved = 0usize;
        let mut bytes = 0u64;
        let mut failed = None;
        for _ in 0..BURST {
            match shared.to_client(&upstream, peer) {
                Down::Empty => break,
                Down::Relayed(n) => {
                    moved += 1;
                    bytes += n as u64;
                }
                Down::Dropped => moved += 1,
                Down::Failed(e) => {
                    failed = Some(e);
                    break;
                }
                Down::Closed => return,
            }
        }
        if moved > 0 {
            count(&shared.stats().bytes_down, bytes);
            shared.lock_table().touch(i, id, Instant::now());
        }
        if let Some(e) = failed {
            shared.end_failed(i, id, peer, &e);
            return;
        }
        if moved == BURST {
            tokio::task::yield_now().await;
        }
    }
}

/// Asks for bigger buffers on the listening socket (best effort).
fn tune(socket: &UdpSocket) {
    let s = SockRef::from(socket);
    let _ = s.set_recv_buffer_size(LISTEN_BUFFER);
    let _ = s.set_send_buffer_size(LISTEN_BUFFER);
}

/// Serves one listening UDP socket of a rule until aborted: sessions per client address,
/// each with its own socket connected to the target (`port`'s target port).
pub async fn serve(socket: UdpSocket, port: Port, state: Arc<RuleState>) {
    tune(&socket);
    let listen = Arc::new(socket);
    let (backlog, mut replies) = mpsc::channel(BACKLOG);
    let shared = Arc::new(Shared {
        state,
        port,
        listen: RwLock::new(Some(Arc::clone(&listen))),
        table: Mutex::new(Table::new()),
        backlog,
    });
    let _closer = Closer(Arc::clone(&shared));
    let first = sweep_period(shared.state.live().rule.options.udp_timeout);
    let sweep = tokio::time::sleep(first);
    tokio::pin!(sweep);
    let mut last_error: Option<Instant> = None;
    loop {
        tokio::select! {
            r = listen.readable() => {
                if r.is_err() {
                    // Only when the runtime shuts down.
                    return;
                }
                match shared.from_clients(&listen) {
                    Ok(Batch::Empty) => {}
                    Ok(Batch::Full) => tokio::task::yield_now().await,
                    Ok(Batch::Wait(p)) => {
                        // Rare (a full send buffer); bounded, so that one stuck socket
                        // cannot hold up every other client.
                        let sent = tokio::time::timeout(SEND_WAIT, p.upstream.send(&p.data));
                        match sent.await {
                            Ok(Ok(n)) => count(&shared.stats().bytes_up, n as u64),
                            Ok(Err(e)) => shared.send_up_failed(p.slot, p.id, p.peer, &e),
                            Err(_) => count(&shared.stats().errors, 1),
                        }
                    }
                    Err(e) => {
                        // A persistent error on the listening socket (ENOMEM): counted,
                        // reported now and then, and not spun on.
                        count(&shared.stats().errors, 1);
                        if last_error.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                            last_error = Some(Instant::now());
                            shared.state.emit(Event::AcceptError {
                                rule: shared.state.live().rule.name.clone(),
                                error: format!("UDP receive: {e}"),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            Some((data, peer)) = replies.recv() => {
                let sent = tokio::time::timeout(SEND_WAIT, listen.send_to(&data, peer));
                if !matches!(sent.await, Ok(Ok(_))) {
                    count(&shared.stats().errors, 1);
                }
            }
            () = &mut sweep => {
                let next = shared.sweep();
                sweep.as_mut().reset(Instant::now() + next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table against a plain model (a Vec in most recently used order), through a
    /// long pseudo-random sequence of uses, inserts, removals, evictions and expiries.
    #[test]
    fn table_keeps_lru_order() {
        let mut t: Table<u16> = Table::new();
        let mut model: Vec<SocketAddr> = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let epoch = Instant::now();
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = u16::try_from(1 + x % 40).unwrap();
            let peer: SocketAddr = ([127, 0, 0, 1], port).into();
            let now = epoch + Duration::from_millis(step);
            match (x >> 20) % 5 {
                0 | 1 => {
                    if let Some((_, _, v)) = t.use_peer(&peer, now) {
                        assert_eq!(*v, port);
                        model.retain(|p| *p != peer);
                    } else {
                        t.insert(peer, port, now);
                    }
                    model.insert(0, peer);
                }
                2 => {
                    let got = t.pop_lru();
                    assert_eq!(got, model.pop().map(|p| p.port()), "step {step}");
                }
                3 => {
                    // Expire what is older than 30 steps.
                    let cutoff = now - Duration::from_millis(30);
                    while let Some(p) = t.pop_idle(cutoff) {
                        assert_eq!(Some(p), model.pop().map(|p| p.port()), "step {step}");
                    }
                    if let Some(&i) = t.map.get(model.last().unwrap_or(&peer)) {
                        assert!(t.slots[i].last > cutoff);
                    }
                }
                _ => {
                    if let Some(&i) = t.map.get(&peer) {
                        let id = t.slots[i].id;
                        assert!(t.remove_id(i, id.wrapping_add(1)).is_none());
                        assert_eq!(t.remove_id(i, id), Some(port));
                        assert!(t.remove_id(i, id).is_none());
                        model.retain(|p| *p != peer);
                    }
                }
            }
            assert_eq!(t.len(), model.len());
            // Walk the list both ways.
            let mut fwd = Vec::new();
            let mut i = t.head;
            while let Some(s) = t.slots.get(i) {
                fwd.push(s.peer);
                i = s.next;
            }
            assert_eq!(fwd, model, "step {step}");
            let mut back = Vec::new();
            let mut i = t.tail;
            while let Some(s) = t.slots.get(i) {
                back.push(s.peer);
                i = s.prev;
            }
            back.reverse();
            assert_eq!(back, model, "step {step}");
            assert!(t.slots.len() <= 40, "slots are reused");
        }
        assert_eq!(t.take_all().len(), model.len());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn events_are_limited_per_kind() {
        let l = EventLimiter::default();
        let sent = (0..100).filter(|_| l.allow(Kind::Refused)).count();
        assert_eq!(sent, EVENTS_PER_SECOND as usize);
        assert!(l.allow(Kind::TargetFailed));
    }

    #[test]
    fn sweep_period_follows_the_timeout() {
        assert_eq!(sweep_period(Duration::from_secs(60)), SWEEP_MAX);
        assert_eq!(
            sweep_period(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(sweep_period(Duration::ZERO), SWEEP_MIN);
    }
}
