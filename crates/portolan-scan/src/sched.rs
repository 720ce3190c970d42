//! The scanner's decisions, without any I/O: which probe goes next, when the next one may
//! go, and what an outcome means (a verdict, a retry, a smaller cap). A driver owns the
//! sockets and the clock and asks this; the connect driver (connect.rs) runs it on epoll,
//! the tests run it on a simulated network with a virtual clock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portolan_core::{Port, Protocol};

use crate::perm::Permutation;
use crate::probe::{reason, ProbeOutcome};
use crate::timing::{self, RttEstimator, Timing, Window};
use crate::{PortResult, PortState, Progress, ScanError, ScanEvent, ScanPlan, ScanSummary};

/// One probe of one position.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    /// Position in this shard's sequence.
    pub k: u64,
    pub host: u32,
    pub port: u16,
    /// 0 for the first probe, then 1, 2, ... for retries.
    pub attempt: u8,
}

/// What the driver should do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Send this probe, giving up on it after the timeout.
    Probe(Job, SocketAddr, Duration),
    /// Nothing may go now: wait for an answer, a timeout, or until this instant.
    Wait(Option<Instant>),
    /// Every position has its verdict.
    Done,
}

#[derive(Debug)]
struct Host {
    rtt: RttEstimator,
    /// Answers, and answers that needed a retry: the host's observed loss.
    answers: u32,
    answers_after_retry: u32,
    window: Window,
    in_flight: u32,
    parked: VecDeque<Job>,
    next_send: Instant,
    /// Pause between this host's probes, set by the driver (a UDP scan paces a host to the
    /// rate its ICMP errors come back at); zero unless set.
    delay: Duration,
}

impl Host {
    /// Retries for this host: the timing's, raised when its answers show loss.
    fn retries(&self, t: &Timing) -> u8 {
        if !t.adaptive_retries || self.answers < 20 {
            return t.max_retries;
        }
        let loss = f64::from(self.answers_after_retry) / f64::from(self.answers);
        timing::retries_for_loss(loss, t.max_retries)
    }

    /// Room in the window, or `push` (the scan is below `--min-rate`).
    fn has_room(&self, push: bool) -> bool {
        push || self.in_flight < self.window.allowed()
    }
}

/// Retries sent at once per position once every position has had its first probe.
const TAIL_COPIES: u8 = 3;

/// A position whose retries went out as several simultaneous copies.
#[derive(Debug, Clone, Copy)]
struct Copies {
    /// Copies not yet finished (in flight or parked).
    outstanding: u8,
    /// The highest attempt number among them.
    max_attempt: u8,
    /// A copy was answered: the verdict is out, the rest are ignored.
    decided: bool,
}

/// Tracks the lowest unfinished position, for checkpoints.
#[derive(Debug, Default)]
struct Frontier {
    below: u64,
    done_above: BTreeSet<u64>,
}

impl Frontier {
    fn finish(&mut self, k: u64) {
        if k == self.below {
            self.below += 1;
            while self.done_above.remove(&self.below) {
                self.below += 1;
            }
        } else {
            self.done_above.insert(k);
        }
    }
}

pub(crate) struct Scheduler<'p> {
    plan: &'p ScanPlan,
    /// The transport of every probe (UDP for a UDP scan).
    proto: Protocol,
    perm: Permutation,
    total_k: u64,
    nports: u64,
    start: Instant,
    hosts: Vec<Host>,
    /// Probes in flight at most (shrinks on resource errors).
    cap: usize,
    in_flight: usize,
    next_k: u64,
    frontier: Frontier,
    parked_total: usize,
    /// Hosts that have parked jobs, in round-robin order.
    ready_hosts: VecDeque<u32>,
    /// Positions with simultaneous retry copies (the tail of a scan).
    copies: HashMap<u64, Copies>,
    /// Every answer of every host: the starting point for hosts not heard from yet.
    global: RttEstimator,
    probes: u64,
    results: u64,
    open: u64,
    tokens: f64,
    last_refill: Instant,
    resource_notice: bool,
    failure_notice: bool,
    /// After a resource error, nothing new goes before this: the driver gets to collect
    /// answers (and free what they held) instead of retrying in a tight loop.
    resource_wait: Option<Instant>,
    /// Events not yet handed to the caller.
    pub out: Vec<ScanEvent>,
}

impl<'p> Scheduler<'p> {
    pub fn new(plan: &'p ScanPlan, now: Instant) -> Result<Scheduler<'p>, ScanError> {
        if plan.hosts.is_empty() {
            return Err(ScanError::Empty("no hosts"));
        }
        if plan.ports.is_empty() {
            return Err(ScanError::Empty("no ports"));
        }
        let n = plan.size();
        if n > 1 << 48 {
            return Err(ScanError::TooLarge {
                hosts: plan.hosts.len() as u64,
                ports: plan.ports.len() as u64,
            });
        }
        let total_k = plan.shard.positions(n);
        let next_k = plan.start_at.min(total_k);
        let t = &plan.timing;
        Ok(Scheduler {
            plan,
            proto: plan.method.proto(),
            perm: Permutation::new(n, plan.seed),
            total_k,
            nports: plan.ports.len() as u64,
            start: now,
            hosts: plan
                .hosts
                .iter()
                .map(|_| Host {
                    rtt: RttEstimator::default(),
                    answers: 0,
                    answers_after_retry: 0,
                    window: Window::new(t),
                    in_flight: 0,
                    parked: VecDeque::new(),
                    next_send: now,
                    delay: Duration::ZERO,
                })
                .collect(),
            cap: usize::try_from(plan.max_parallel.max(1)).unwrap_or(usize::MAX),
            in_flight: 0,
            next_k,
            frontier: Frontier {
                below: next_k,
                ..Frontier::default()
            },
            parked_total: 0,
            ready_hosts: VecDeque::new(),
            copies: HashMap::new(),
            global: RttEstimator::default(),
            probes: 0,
            results: 0,
            open: 0,
            tokens: 1.0,
            last_refill: now,
            resource_notice: false,
            failure_notice: false,
            resource_wait: None,
            out: Vec::new(),
        })
    }

    fn park_front(&mut self, j: Job) {
        let host = &mut self.hosts[j.host as usize];
        if host.parked.is_empty() {
            self.ready_hosts.push_back(j.host);
        }
        host.parked.push_front(j);
        self.parked_total += 1;
    }

    /// The next probe to send, or how long to wait.
    pub fn next(&mut self, now: Instant) -> Next {
        if self.in_flight == 0 && self.parked_total == 0 && self.next_k >= self.total_k {
            return Next::Done;
        }
        if self.in_flight >= self.cap {
            return Next::Wait(None);
        }
        if let Some(until) = self.resource_wait {
            if now < until {
                return Next::Wait(Some(until));
            }
            self.resource_wait = None;
        }
        let t = self.plan.timing;
        if let Some(rate) = t.max_rate {
            self.tokens = (self.tokens + now.duration_since(self.last_refill).as_secs_f64() * rate)
                .min(rate.max(1.0) / 10.0 + 1.0);
            self.last_refill = now;
            if self.tokens < 1.0 {
                return Next::Wait(Some(
                    now + Duration::from_secs_f64((1.0 - self.tokens) / rate),
                ));
            }
        }
        let mut wake: Option<Instant> = None;
        // --min-rate: while the scan is below it, windows do not hold probes back.
        let push = self.forcing(now);
        {
            // 1. Parked jobs (retries first, they sit at the front) of hosts with room.
            let mut job = None;
            for _ in 0..self.ready_hosts.len() {
                let Some(h) = self.ready_hosts.pop_front() else {
                    break;
                };
                let host = &mut self.hosts[h as usize];
                if host.parked.is_empty() {
                    continue;
                }
                if host.has_room(push) && host.next_send <= now {
                    job = host.parked.pop_front();
                    self.parked_total -= 1;
                    if !host.parked.is_empty() {
                        self.ready_hosts.push_back(h);
                    }
                    // A copy whose position another copy already decided: not sent.
                    if let Some(k) = job.map(|j| j.k) {
                        if let Some(c) = self.copies.get_mut(&k).filter(|c| c.decided) {
                            c.outstanding = c.outstanding.saturating_sub(1);
                            if c.outstanding == 0 {
                                self.copies.remove(&k);
                            }
                            job = None;
                            continue;
                        }
                    }
                    break;
                }
                if host.next_send > now {
                    wake = Some(wake.map_or(host.next_send, |w| w.min(host.next_send)));
                }
                self.ready_hosts.push_back(h);
            }
            // 2. A new position, unless too much is parked already. A position whose host
            // has no room is parked; up to 64 are tried per call (parking cannot give
            // another host room, so step 1 is not repeated).
            for _ in 0..64 {
                if job.is_some()
                    || self.next_k >= self.total_k
                    || self.parked_total >= self.cap.saturating_mul(4).max(1024)
                {
                    break;
                }
                let idx = self.perm.at(self.plan.shard.position(self.next_k));
                let j = Job {
                    k: self.next_k,
                    host: u32::try_from(idx / self.nports).unwrap_or(u32::MAX),
                    port: self.plan.ports[usize::try_from(idx % self.nports).unwrap_or(0)].get(),
                    attempt: 0,
                };
                self.next_k += 1;
                let host = &mut self.hosts[j.host as usize];
                if host.has_room(push) && host.next_send <= now && host.parked.is_empty() {
                    job = Some(j);
                } else {
                    if host.parked.is_empty() {
                        self.ready_hosts.push_back(j.host);
                    }
                    host.parked.push_back(j);
                    self.parked_total += 1;
                }
            }
            if let Some(j) = job {
                let host = &mut self.hosts[j.host as usize];
                host.in_flight += 1;
                let delay = t.scan_delay.max(host.delay);
                if !delay.is_zero() {
                    host.next_send = now + delay;
                }
                self.in_flight += 1;
                self.probes += 1;
                if t.max_rate.is_some() {
                    self.tokens -= 1.0;
                }
                let timeout = if host.rtt.srtt().is_some() {
                    host.rtt.timeout(&t)
                } else {
                    unknown_host_timeout(&self.global, &t, j.attempt)
                };
                let addr = SocketAddr::new(self.plan.hosts[j.host as usize], j.port);
                return Next::Probe(j, addr, timeout);
            }
        }
        if self.in_flight == 0 && wake.is_none() {
            // Everything left is parked behind windows: look again shortly.
            wake = Some(now + Duration::from_millis(1));
        }
        Next::Wait(wake)
    }

    /// A probe's outcome: a verdict (an event in `out`), a retry or a later second try.
    ///
    /// Retries normally go one at a time. In the tail of a scan (every position has had
    /// its first probe), a position's next retries go out as up to `TAIL_COPIES`
    /// simultaneous copies: the same number of attempts, so the same certainty, but the
    /// last filtered ports take a third of the round trips to settle. The first answer
    /// of a copy decides; the position is filtered when every attempt went unanswered.
    pub fn finish(&mut self, mut j: Job, outcome: ProbeOutcome, now: Instant) {
        let t = self.plan.timing;
        self.in_flight = self.in_flight.saturating_sub(1);
        let host = &mut self.hosts[j.host as usize];
        host.in_flight = host.in_flight.saturating_sub(1);
        if !matches!(outcome, ProbeOutcome::Resource(_) | ProbeOutcome::Again) {
            if let Some(c) = self.copies.get_mut(&j.k) {
                c.outstanding = c.outstanding.saturating_sub(1);
                let (outstanding, decided, max_attempt) = (c.outstanding, c.decided, c.max_attempt);
                let answered = !matches!(outcome, ProbeOutcome::Timeout);
                if answered && !decided {
                    c.decided = true;
                }
                if outstanding == 0 {
                    self.copies.remove(&j.k);
                }
                if decided || (!answered && outstanding > 0) {
                    // Decided by an earlier copy, or other copies still out.
                    return;
                }
                if !answered {
                    j.attempt = max_attempt;
                }
            }
        }
        let host = &mut self.hosts[j.host as usize];
        let addr = self.plan.hosts[j.host as usize];
        let (state, reason, rtt, ttl) = match outcome {
            ProbeOutcome::Answered {
                state,
                reason,
                rtt,
                ttl,
            } => {
                host.rtt.sample(rtt);
                self.global.sample(rtt);
                host.answers += 1;
                host.answers_after_retry += u32::from(j.attempt > 0);
                let srtt = host.rtt.srtt().unwrap_or(rtt);
                host.window.on_answer(j.attempt > 0, now, srtt);
                (state, reason, Some(rtt), ttl)
            }
            ProbeOutcome::AnsweredLate { state, reason, ttl } => {
                host.answers += 1;
                host.answers_after_retry += 1;
                let srtt = host.rtt.srtt().unwrap_or(t.initial_timeout);
                host.window.on_answer(true, now, srtt);
                (state, reason, None, ttl)
            }
            ProbeOutcome::Timeout if j.attempt < host.retries(&t) => {
                let left = host.retries(&t) - j.attempt;
                let n = if self.next_k >= self.total_k {
                    left.min(TAIL_COPIES)
                } else {
                    1
                };
                if n > 1 {
                    self.copies.insert(
                        j.k,
                        Copies {
                            outstanding: n,
                            max_attempt: j.attempt + n,
                            decided: false,
                        },
                    );
                }
                for i in (1..=n).rev() {
                    self.park_front(Job {
                        attempt: j.attempt + i,
                        ..j
                    });
                }
                return;
            }
            ProbeOutcome::Timeout => {
                host.window.on_silence();
                // A UDP port that never answered may be open and ignoring the payload.
                let state = if self.proto == Protocol::Udp {
                    PortState::OpenFiltered
                } else {
                    PortState::Filtered
                };
                (state, reason::NO_RESPONSE, None, None)
            }
            ProbeOutcome::Again => {
                self.park_front(j);
                return;
            }
            ProbeOutcome::Resource(e) => {
                // Out of descriptors, ports or buffers: fewer in flight, same probe later.
                self.cap = (self.cap * 3 / 4).max(8);
                self.resource_wait = Some(now + Duration::from_millis(5));
                if !self.resource_notice {
                    self.resource_notice = true;
                    self.out.push(ScanEvent::Notice(format!(
                        "this machine ran short of resources ({e}); probes in flight reduced to {}",
                        self.cap
                    )));
                }
                self.park_front(j);
                return;
            }
            ProbeOutcome::Failed(e) => {
                if !self.failure_notice {
                    self.failure_notice = true;
                    self.out.push(ScanEvent::Notice(format!(
                        "a probe to {addr} port {} failed locally: {e}",
                        j.port
                    )));
                }
                (PortState::Filtered, reason::LOCAL_ERROR, None, None)
            }
        };
        self.results += 1;
        if state == PortState::Open {
            self.open += 1;
        }
        self.frontier.finish(j.k);
        self.out.push(ScanEvent::Port(PortResult {
            host: addr,
            port: Port::new(j.port),
            proto: self.proto,
            state,
            reason,
            rtt,
            ttl,
            attempts: j.attempt + 1,
            position: j.k,
        }));
    }

    /// Progress now (also pushed to `out`).
    pub fn progress(&mut self, now: Instant) {
        let p = Progress {
            // A resumed scan counts what the earlier runs did.
            done: self.plan.start_at.min(self.total_k) + self.results,
            total: self.total_k,
            open: self.open,
            in_flight: self.in_flight,
            rate: probes_per_sec(self.probes, now.duration_since(self.start)),
            checkpoint: self.frontier.below,
        };
        self.out.push(ScanEvent::Progress(p));
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether `--min-rate` is pushing probes past the windows now (the scan is below it).
    pub fn forcing(&self, now: Instant) -> bool {
        self.plan
            .timing
            .min_rate
            .is_some_and(|r| probes_per_sec(self.probes, now.duration_since(self.start)) < r)
    }

    /// The pause set for host `h` (zero when it is not paced).
    pub fn host_delay(&self, h: u32) -> Duration {
        self.hosts
            .get(h as usize)
            .map_or(Duration::ZERO, |host| host.delay)
    }

    /// Lets host `h`'s next probe go at `at` if that is sooner than its pacing said.
    pub fn pull_next_send(&mut self, h: u32, at: Instant) {
        if let Some(host) = self.hosts.get_mut(h as usize) {
            host.next_send = host.next_send.min(at);
        }
    }

    /// Paces host `h`: at least `delay` between two of its probes (never less than the
    /// timing's own scan delay).
    pub fn set_host_delay(&mut self, h: u32, delay: Duration) {
        if let Some(host) = self.hosts.get_mut(h as usize) {
            host.delay = delay;
        }
    }

    /// The probe timeout of host `h` now, once it has answered at least once. A probe sent
    /// before that waited the initial timeout; a driver may end it earlier by this one.
    pub fn host_timeout(&self, h: u32) -> Option<Duration> {
        let host = self.hosts.get(h as usize)?;
        host.rtt.srtt()?;
        Some(host.rtt.timeout(&self.plan.timing))
    }

    pub fn summary(&self, now: Instant) -> ScanSummary {
        ScanSummary {
            probes: self.probes,
            results: self.results,
            elapsed: now.duration_since(self.start),
            parallel_cap: self.cap,
            checkpoint: self.frontier.below,
        }
    }
}

/// The timeout for a host that has not answered yet. Before any answer at all: the
/// timing's initial timeout. After answers from other hosts: what they measured, doubled
/// with each retry (a host farther away than the rest still gets its chance), between the
/// minimum and the initial timeout. Without this, every silent address of a sparse block
/// costs the full initial timeout per attempt, which made host discovery on a /16 take
/// twice as long.
fn unknown_host_timeout(global: &RttEstimator, t: &Timing, attempt: u8) -> Duration {
    if global.srtt().is_none() {
        return t.initial_timeout;
    }
    let base = global.timeout(t) * (1u32 << attempt.min(4));
    base.clamp(t.min_timeout, t.initial_timeout.max(t.min_timeout))
}

fn probes_per_sec(probes: u64, d: Duration) -> f64 {
    // Probe counts stay far below 2^52, where f64 stops being exact.
    #[allow(clippy::cast_precision_loss)]
    let p = probes as f64;
    p / d.as_secs_f64().max(1e-3)
}
