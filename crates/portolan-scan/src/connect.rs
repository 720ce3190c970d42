//! The connect driver: non-blocking connect() on epoll, one thread, no runtime.
//!
//! A connect scan is bound by the kernel's work per socket long before the network, so
//! the loop does as few system calls as it can. A refused probe, the common case, costs
//! two connect() calls and nothing else: the second connect() on the failed socket reports
//! the refusal and frees the socket, which then carries the next probe (see `launch`).
//! Open and unanswered probes close their socket. Deadlines sit in a binary heap with lazy
//! deletion. ARCHITECTURE.md has the measurements behind this.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{epoll, Timespec};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::probe::{classify, reason, ProbeOutcome};
use crate::sched::{Job, Next, Scheduler};
use crate::{PortState, ScanError, ScanEvent, ScanPlan, ScanSummary};

const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Resource failures in a row, with nothing in flight, before the scan gives up (the
/// scheduler waits a few milliseconds after each: about two seconds).
const STARVED_LIMIT: u32 = 400;
/// Refused sockets kept for reuse, per address family.
const POOL_MAX: usize = 4096;

/// A probe in flight, stored at the index of its descriptor's number.
struct Flight {
    fd: OwnedFd,
    job: Job,
    addr: SocketAddr,
    sent: Instant,
}

/// The driver's state: probes in flight by descriptor number, their deadlines (a heap
/// with lazy deletion: an entry whose generation is stale is skipped), and refused
/// sockets ready for another connect().
struct Engine {
    ep: OwnedFd,
    flights: Vec<Option<Flight>>,
    generation: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    pool_v4: Vec<OwnedFd>,
    pool_v6: Vec<OwnedFd>,
}

fn open_outcome(fd: &OwnedFd, dest: SocketAddr, rtt: Duration) -> ProbeOutcome {
    // Close with RST rather than FIN: no TIME-WAIT left on this side, no goodbye exchange
    // with the target. Set only here: refused and unanswered probes never established
    // anything, and one system call fewer per probe counts.
    let _ = rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO));
    // A probe of a local address whose ephemeral source port happened to be the port
    // probed connects to itself (TCP's simultaneous open). The kernel never hands out a
    // port something is bound to, so nothing listens there; ask again with another port.
    let local = rustix::net::getsockname(fd)
        .ok()
        .and_then(|a| SocketAddr::try_from(a).ok());
    if local == Some(dest) {
        return ProbeOutcome::Again;
    }
    ProbeOutcome::Answered {
        state: PortState::Open,
        reason: reason::SYN_ACK,
        rtt,
        ttl: None,
    }
}

/// Whether a socket that ended with this error is back to a clean, unconnected state that
/// connect() may use again (the kernel dissolves the association when it reports a failed
/// connection attempt).
fn reusable(e: Errno) -> bool {
    matches!(
        e,
        Errno::CONNREFUSED
            | Errno::HOSTUNREACH
            | Errno::NETUNREACH
            | Errno::ACCESS
            | Errno::PERM
            | Errno::ADDRNOTAVAIL
    )
}

impl Engine {
    fn new() -> Result<Engine, ScanError> {
        Ok(Engine {
            ep: epoll::create(epoll::CreateFlags::CLOEXEC)
                .map_err(|e| ScanError::Runtime(e.into()))?,
            flights: Vec::new(),
            generation: Vec::new(),
            deadlines: BinaryHeap::new(),
            pool_v4: Vec::new(),
            pool_v6: Vec::new(),
        })
    }

    fn recycle(&mut self, fd: OwnedFd, v4: bool) {
        let pool = if v4 {
            &mut self.pool_v4
        } else {
            &mut self.pool_v6
        };
        if pool.len() < POOL_MAX {
            pool.push(fd);
        }
    }

    /// Starts one probe. Returns the outcome when it is known at once (a local error, or
    /// loopback answering inside connect()).
    ///
    /// A socket whose connection was refused is connected again rather than closed and
    /// replaced: socket(), close() and the epoll registration were half of a probe's
    /// kernel time. Sockets are registered edge-triggered, so an idle pooled socket (which
    /// polls as hung up) raises no events; a stale event for a reused socket is evaluated
    /// against its current state, so it can only describe the current probe.
    fn launch(&mut self, job: Job, addr: SocketAddr, timeout: Duration) -> Option<ProbeOutcome> {
        let v4 = addr.is_ipv4();
        let pooled = if v4 {
            self.pool_v4.pop()
        } else {
            self.pool_v6.pop()
        };
        let fresh = pooled.is_none();
        let fd = match pooled {
            Some(fd) => fd,
            None => match rustix::net::socket_with(
                if v4 {
                    AddressFamily::INET
                } else {
                    AddressFamily::INET6
                },
                SocketType::STREAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            ) {
                Ok(fd) => fd,
                Err(e) => return Some(classify(e, Duration::ZERO)),
            },
        };
        let sent = Instant::now();
        match rustix::net::connect(&fd, &addr) {
            Ok(()) => return Some(open_outcome(&fd, addr, sent.elapsed())),
            Err(Errno::INPROGRESS) => {}
            Err(e) => {
                let outcome = classify(e, sent.elapsed());
                // A fresh socket is registered first, so it can be pooled.
                if reusable(e) && (!fresh || self.register(&fd).is_ok()) {
                    self.recycle(fd, v4);
                }
                return Some(outcome);
            }
        }
        if fresh {
            if let Err(e) = self.register(&fd) {
                return Some(classify(e, Duration::ZERO));
            }
        }
        let i = usize::try_from(fd.as_raw_fd()).unwrap_or(usize::MAX);
        if i >= self.flights.len() {
            self.flights.resize_with(i + 1, || None);
            self.generation.resize(i + 1, 0);
        }
        self.generation[i] = self.generation[i].wrapping_add(1);
        self.deadlines
            .push(Reverse((sent + timeout, i, self.generation[i])));
        self.flights[i] = Some(Flight {
            fd,
            job,
            addr,
            sent,
        });
        None
    }

    fn register(&self, fd: &OwnedFd) -> rustix::io::Result<()> {
        let key = u64::try_from(fd.as_raw_fd()).unwrap_or(u64::MAX);
        epoll::add(
            &self.ep,
            fd,
            epoll::EventData::new_u64(key),
            epoll::EventFlags::OUT
                | epoll::EventFlags::ERR
                | epoll::EventFlags::HUP
                | epoll::EventFlags::ET,
        )
    }

    /// A socket that epoll reported: its probe's outcome (the socket closed or pooled),
    /// or the flight back when the attempt is in fact still under way.
    fn settle(
        &mut self,
        f: Flight,
        flags: epoll::EventFlags,
        now: Instant,
    ) -> Result<ProbeOutcome, Flight> {
        let rtt = now.duration_since(f.sent);
        if !flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
            // Writable without error: the kernel signals that only once connected.
            return Ok(open_outcome(&f.fd, f.addr, rtt));
        }
        // connect() on a socket whose attempt failed reports that attempt's error and
        // dissolves the association: the errno getsockopt(SO_ERROR) would give, and the
        // socket ready for its next probe.
        Ok(match rustix::net::connect(&f.fd, &f.addr) {
            Err(e) if reusable(e) => {
                self.recycle(f.fd, f.addr.is_ipv4());
                classify(e, rtt)
            }
            // The handshake completed and the peer reset the connection at once, or the
            // new attempt to the same port completed inside connect(): open.
            Ok(()) | Err(Errno::CONNRESET | Errno::PIPE) => open_outcome(&f.fd, f.addr, rtt),
            // Still connecting: a stray error indication on a reused socket (measured on
            // the testbed: rare, with SO_ERROR then empty). Not an answer; keep waiting.
            Err(Errno::ALREADY) => match rustix::net::sockopt::socket_error(&f.fd) {
                Ok(Ok(())) => return Err(f),
                Ok(Err(e)) | Err(e) => classify(e, rtt),
            },
            // A new attempt started (INPROGRESS) or the error was already taken
            // (CONNABORTED): the answer is unknown, so the probe is retried. The socket
            // is closed, which aborts any new attempt silently.
            Err(Errno::INPROGRESS | Errno::CONNABORTED) => ProbeOutcome::Timeout,
            Err(e) => classify(e, rtt),
        })
    }
}

/// Hands the scheduler's events to the callback; true when it asked to stop. Every event
/// of the turn is handed over even after a stop: the checkpoint already counts their
/// positions as done, so a caller that saves the checkpoint (resume) must see them.
pub(crate) fn hand_over(
    out: &mut Vec<ScanEvent>,
    on_event: &mut dyn FnMut(ScanEvent) -> ControlFlow<()>,
) -> bool {
    let mut stop = false;
    for e in out.drain(..) {
        stop |= on_event(e).is_break();
    }
    stop
}

/// epoll's timeout until `until`, rounded up to the next millisecond: waking early only
/// spins. Shared with the raw driver.
pub(crate) fn wait_for(until: Instant, now: Instant) -> Timespec {
    let d = until.saturating_duration_since(now);
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos().div_ceil(1_000_000) * 1_000_000).min(999_999_999),
    }
}

/// Runs one scan on this thread; events go to `on_event` after each turn of the loop, and
/// a `Break` from it ends the scan.
pub(crate) fn drive(
    plan: &ScanPlan,
    on_event: &mut dyn FnMut(ScanEvent) -> ControlFlow<()>,
) -> Result<ScanSummary, ScanError> {
    let mut eng = Engine::new()?;
    let mut sched = Scheduler::new(plan, Instant::now())?;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
    let mut last_progress = Instant::now();
    let mut starved = 0u32;
    loop {
        // Send what may go now.
        let mut now = Instant::now();
        let wake = loop {
            match sched.next(now) {
                Next::Probe(job, addr, timeout) => match eng.launch(job, addr, timeout) {
                    // Short of descriptors with nothing else in flight to free any:
                    // waiting will not help (they are held elsewhere).
                    Some(ProbeOutcome::Resource(e)) if sched.in_flight() == 1 => {
                        starved += 1;
                        if starved >= STARVED_LIMIT {
                            return Err(ScanError::Starved(e));
                        }
                        now = Instant::now();
                        sched.finish(job, ProbeOutcome::Resource(e), now);
                    }
                    Some(outcome) => {
                        starved = 0;
                        now = Instant::now();
                        sched.finish(job, outcome, now);
                    }
                    None => starved = 0,
                },
                Next::Wait(w) => break w,
                Next::Done => {
                    let now = Instant::now();
                    sched.progress(now);
                    // The last events: a stop asked for now changes nothing.
                    hand_over(&mut sched.out, on_event);
                    return Ok(sched.summary(now));
                }
            }
        };

        // Hand over what the sends decided (answers known at once), then sleep until an
        // answer, the earliest deadline or the scheduler's wake-up.
        if hand_over(&mut sched.out, on_event) {
            // The engine, dropped on return, closes the sockets still in flight.
            return Ok(sched.summary(Instant::now()));
        }
        let mut until = wake;
        if let Some(Reverse((d, ..))) = eng.deadlines.peek() {
            until = Some(until.map_or(*d, |u| u.min(*d)));
        }
        let timeout = until.map(|u| wait_for(u, now));
        events.clear();
        match epoll::wait(
            &eng.ep,
            rustix::buffer::spare_capacity(&mut events),
            timeout.as_ref(),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(ScanError::Runtime(e.into())),
        }
        let now = Instant::now();
        for ev in &events {
            let i = usize::try_from(ev.data.u64()).unwrap_or(usize::MAX);
            let flags = ev.flags;
            // No flight: an idle pooled socket (its stale edge), nothing to do.
            let Some(f) = eng.flights.get_mut(i).and_then(Option::take) else {
                continue;
            };
            let job = f.job;
            match eng.settle(f, flags, now) {
                Ok(outcome) => sched.finish(job, outcome, now),
                Err(f) => eng.flights[i] = Some(f),
            }
        }
        while let Some(Reverse((d, i, generation))) = eng.deadlines.peek().copied() {
            if d > now {
                break;
            }
            eng.deadlines.pop();
            if eng.generation[i] != generation {
                continue;
            }
            if let Some(f) = eng.flights[i].take() {
                // Closing a socket still in SYN-SENT sends nothing.
                drop(f.fd);
                sched.finish(f.job, ProbeOutcome::Timeout, now);
            }
        }
        if now.duration_since(last_progress) >= PROGRESS_EVERY {
            last_progress = now;
            sched.progress(now);
        }
        if hand_over(&mut sched.out, on_event) {
            // The engine, dropped on return, closes the sockets still in flight.
            return Ok(sched.summary(Instant::now()));
        }
    }
}
