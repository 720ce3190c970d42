//! The user-space wire: two threads, one per direction, each reading IP packets from one TUN
//! device and writing them to the other after a seeded loss / delay / jitter / reorder
//! decision. Pending packets sit in a binary heap keyed by release time; each thread sleeps
//! in `poll` until the next release or the next packet, so an idle wire costs nothing and a
//! busy one costs two syscalls per packet.
//!
//! Semantics, per direction:
//! - `loss`: each packet is dropped with this probability.
//! - delay: `delay + jitter sample`, clamped at zero. Jitter alone never reorders a flow
//!   (same addresses, protocol and ports): a packet is not released before the previous
//!   packet of its flow, so heavy jitter delays the packets right behind it in that flow.
//!   Packets of different flows may overtake each other, as on a multi-path network; a
//!   scanner's probes are each a flow of their own, so their mean delay stays `delay`.
//! - `reorder`: with this probability a packet is held back an extra uniform
//!   `(0, reorder_delay]` and left out of the FIFO order, so later packets overtake it.
//! - a queue of more than `queue_limit` pending packets drops new arrivals (`overflowed`).
//! - a packet whose source or destination is outside 198.18.0.0/15 and 2001:2::/48 is
//!   dropped (`foreign`): the wire carries nothing else, whatever a namespace sends.
//!
//! This module must not know about namespaces or hosts: it moves bytes between two fds.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Largest packet the wire carries; the TUN devices' MTU is set to [`MTU`].
const BUF_LEN: usize = 2048;
/// MTU of both TUN devices.
pub const MTU: u32 = 1500;
/// Packets read per wake-up at most, so releases are never starved by a flood.
const BATCH: usize = 256;
/// Longest sleep without a reason to wake (the stop eventfd wakes a thread at once anyway).
const IDLE: Duration = Duration::from_millis(200);

/// Shape of the jitter added to each packet's one-way delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JitterDistribution {
    /// Uniform in `[-jitter, +jitter]`.
    #[default]
    Uniform,
    /// Normal with standard deviation `jitter`.
    Normal,
}

/// One direction's impairments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkParams {
    pub delay: Duration,
    pub jitter: Duration,
    pub distribution: JitterDistribution,
    pub loss: f64,
    pub reorder: f64,
    pub reorder_delay: Duration,
    pub queue_limit: usize,
}

/// Which way a packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the scanner namespace to the target namespace.
    ToTargets,
    /// From the target namespace back to the scanner.
    ToScanner,
}

/// Counters of one direction since the wire started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionStats {
    /// Packets read from the sending side.
    pub received: u64,
    /// Packets written to the receiving side.
    pub delivered: u64,
    /// Packets dropped by the loss probability.
    pub lost: u64,
    /// Packets held back out of order.
    pub reordered: u64,
    /// Packets dropped because the queue was full.
    pub overflowed: u64,
    /// Failed reads or writes.
    pub errors: u64,
    /// Packets dropped because an address was outside 198.18.0.0/15 and 2001:2::/48.
    pub foreign: u64,
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireStats {
    pub to_targets: DirectionStats,
    pub to_scanner: DirectionStats,
}

#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    reordered: AtomicU64,
    overflowed: AtomicU64,
    errors: AtomicU64,
    foreign: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            received: self.received.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            lost: self.lost.load(Relaxed),
            reordered: self.reordered.load(Relaxed),
            overflowed: self.overflowed.load(Relaxed),
            errors: self.errors.load(Relaxed),
            foreign: self.foreign.load(Relaxed),
        }
    }
}

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Lost,
    Deliver { at: Instant, reordered: bool },
}

/// Flow slots for the per-flow FIFO order: flows that share a slot (a hash collision) are
/// merely kept in order together.
const FLOW_SLOTS: usize = 4096;

/// The seeded decision maker of one direction; pure apart from the clock it is given.
#[derive(Debug)]
pub(crate) struct Shaper {
    params: LinkParams,
    rng: Rng,
    /// Release time of the last in-order packet per flow slot.
    last_in_order: Vec<Option<Instant>>,
}

impl Shaper {
    pub(crate) fn new(params: LinkParams, seed: u64) -> Self {
        Self {
            params,
            rng: Rng::new(seed),
            last_in_order: vec![None; FLOW_SLOTS],
        }
    }

    /// Decides the fate of a packet of flow `flow` (see [`flow_hash`]) read at `now`.
    pub(crate) fn decide(&mut self, now: Instant, flow: u64) -> Verdict {
        let p = &self.params;
        // Draw every variate for every packet so one packet's fate does not shift the
        // stream of the next: the same seed gives the same decisions per packet index.
        let lost = self.rng.chance(p.loss);
        let jitter = match p.distribution {
            JitterDistribution::Uniform => {
                (self.rng.next_f64() * 2.0 - 1.0) * p.jitter.as_secs_f64()
            }
            JitterDistribution::Normal => self.rng.normal() * p.jitter.as_secs_f64(),
        };
        let reorder = self.rng.chance(p.reorder);
        let extra = 1.0 - self.rng.next_f64(); // (0, 1]
        if lost {
            return Verdict::Lost;
        }
        let delay = (p.delay.as_secs_f64() + jitter).max(0.0);
        let mut at = now + Duration::from_secs_f64(delay);
        if reorder {
            at += p.reorder_delay.mul_f64(extra);
            return Verdict::Deliver {
                at,
                reordered: true,
            };
        }
        // FLOW_SLOTS is a power of two; the mask keeps the index in range.
        #[expect(clippy::cast_possible_truncation, reason = "masked to FLOW_SLOTS")]
        let slot = &mut self.last_in_order[(flow as usize) & (FLOW_SLOTS - 1)];
        if let Some(last) = *slot {
            at = at.max(last);
        }
        *slot = Some(at);
        Verdict::Deliver {
            at,
            reordered: false,
        }
    }
}

#[derive(Debug)]
struct Pending {
    at: Instant,
    seq: u64,
    len: usize,
    buf: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A running wire. Dropping it stops both threads and closes both TUN devices.
#[derive(Debug)]
pub(crate) struct Wire {
    stop: Arc<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
    counters: [Arc<Counters>; 2],
}

impl Wire {
    /// Starts pumping between `scanner_tun` and `target_tun` (both non-blocking).
    pub(crate) fn start(
        scanner_tun: OwnedFd,
        target_tun: OwnedFd,
        to_targets: LinkParams,
        to_scanner: LinkParams,
        seed: u64,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let scanner_tun = Arc::new(scanner_tun);
        let target_tun = Arc::new(target_tun);
        let counters = [Arc::new(Counters::default()), Arc::new(Counters::default())];
        let mut wire = Self {
            stop: Arc::clone(&stop),
            threads: Vec::new(),
            counters: counters.clone(),
        };
        let plan = [
            (
                "pt-wire-out",
                Arc::clone(&scanner_tun),
                Arc::clone(&target_tun),
                // Different, fixed streams per direction from one seed.
                Shaper::new(to_targets, seed ^ 0x5eed_0000_0000_0001),
                Arc::clone(&counters[0]),
                to_targets.queue_limit,
            ),
            (
                "pt-wire-in",
                target_tun,
                scanner_tun,
                Shaper::new(to_scanner, seed ^ 0x5eed_0000_0000_0002),
                Arc::clone(&counters[1]),
                to_scanner.queue_limit,
            ),
        ];
        for (name, input, output, shaper, counters, limit) in plan {
            let stop = Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || pump(&input, &output, &stop, shaper, &counters, limit));
            match handle {
                Ok(h) => wire.threads.push(h),
                Err(e) => {
                    wire.stop();
                    return Err(e);
                }
            }
        }
        Ok(wire)
    }

    pub(crate) fn stats(&self) -> WireStats {
        WireStats {
            to_targets: self.counters[0].snapshot(),
            to_scanner: self.counters[1].snapshot(),
        }
    }

    /// Stops both threads and waits for them; idempotent.
    pub(crate) fn stop(&mut self) {
        let _ = rustix::io::write(&*self.stop, &1u64.to_ne_bytes());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop();
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// Whether an IP packet's source and destination are both in the benchmarking ranges
/// (198.18.0.0/15, 2001:2::/48). The wire carries nothing else, whatever a namespace sends.
fn benchmark_addresses(p: &[u8]) -> bool {
    match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => {
            let ok = |o: &[u8]| o[0] == 198 && (o[1] & 0xfe) == 18;
            ok(&p[12..16]) && ok(&p[16..20])
        }
        Some(6) if p.len() >= 40 => {
            let ok = |a: &[u8]| a[..6] == [0x20, 0x01, 0x00, 0x02, 0x00, 0x00];
            ok(&p[8..24]) && ok(&p[24..40])
        }
        _ => false,
    }
}

/// A hash of a packet's flow: addresses, protocol and, for TCP and UDP, ports.
fn flow_hash(p: &[u8]) -> u64 {
    let (addrs, proto, l4) = match p.first().map(|b| b >> 4) {
        Some(4) if p.len() >= 20 => (&p[12..20], p[9], usize::from(p[0] & 0x0f) * 4),
        Some(6) if p.len() >= 40 => (&p[8..40], p[6], 40),
        _ => return 0,
    };
    // FNV-1a: short keys, no allocation.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    addrs.iter().copied().for_each(&mut eat);
    eat(proto);
    if matches!(proto, 6 | 17) {
        if let Some(ports) = p.get(l4..l4 + 4) {
            ports.iter().copied().for_each(&mut eat);
        }
    }
    h
}

fn pump(
    input: &OwnedFd,
    output: &OwnedFd,
    stop: &OwnedFd,
    mut shaper: Shaper,
    counters: &Counters,
    queue_limit: usize,
) {
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut seq: u64 = 0;
    loop {
        // Release everything that is due.
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = heap.pop() else { break };
            match rustix::io::write(output, &p.buf[..p.len]) {
                Ok(_) => counters.delivered.fetch_add(1, Relaxed),
                Err(_) => counters.errors.fetch_add(1, Relaxed),
            };
            if pool.len() < queue_limit {
                pool.push(p.buf);
            }
        }
        let wait = heap
            .peek()
            .map_or(IDLE, |Reverse(p)| p.at.saturating_duration_since(now))
            .min(IDLE);
        let ts = timespec(wait);
        let mut fds = [
            PollFd::new(input, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                counters.errors.fetch_add(1, Relaxed);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        if fds[0].revents().is_empty() {
            continue;
        }
        for _ in 0..BATCH {
            let mut buf = pool.pop().unwrap_or_else(|| vec![0u8; BUF_LEN]);
            match rustix::io::read(input, &mut buf) {
                Ok(0) | Err(rustix::io::Errno::AGAIN) => {
                    pool.push(buf);
                    break;
                }
                Ok(len) => {
                    counters.received.fetch_add(1, Relaxed);
                    if !benchmark_addresses(&buf[..len]) {
                        counters.foreign.fetch_add(1, Relaxed);
                        pool.push(buf);
                        continue;
                    }
                    match shaper.decide(Instant::now(), flow_hash(&buf[..len])) {
                        Verdict::Lost => {
                            counters.lost.fetch_add(1, Relaxed);
                            pool.push(buf);
                        }
                        Verdict::Deliver { .. } if heap.len() >= queue_limit => {
                            counters.overflowed.fetch_add(1, Relaxed);
                            pool.push(buf);
                        }
                        Verdict::Deliver { at, reordered } => {
                            if reordered {
                                counters.reordered.fetch_add(1, Relaxed);
                            }
                            seq += 1;
                            heap.push(Reverse(Pending { at, seq, len, buf }));
                        }
                    }
                }
                Err(_) => {
                    counters.errors.fetch_add(1, Relaxed);
                    pool.push(buf);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_guard() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[198, 19, 255, 1]);
        v4[16..20].copy_from_slice(&[198, 18, 0, 10]);
        assert!(benchmark_addresses(&v4));
        v4[16..20].copy_from_slice(&[10, 0, 0, 1]);
        assert!(!benchmark_addresses(&v4));
        v4[16..20].copy_from_slice(&[198, 20, 0, 1]);
        assert!(!benchmark_addresses(&v4));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[8..14].copy_from_slice(&[0x20, 0x01, 0, 2, 0, 0]);
        v6[24..30].copy_from_slice(&[0x20, 0x01, 0, 2, 0, 0]);
        assert!(benchmark_addresses(&v6));
        v6[24..30].copy_from_slice(&[0xfe, 0x80, 0, 0, 0, 0]);
        assert!(!benchmark_addresses(&v6));
        assert!(!benchmark_addresses(&[0x45]));
    }

    fn params() -> LinkParams {
        LinkParams {
            delay: Duration::from_millis(50),
            jitter: Duration::ZERO,
            distribution: JitterDistribution::Uniform,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            queue_limit: 1000,
        }
    }

    fn run(p: LinkParams, seed: u64, n: usize) -> Vec<Verdict> {
        let t0 = Instant::now();
        let mut s = Shaper::new(p, seed);
        (0..n)
            .map(|i| s.decide(t0 + Duration::from_micros(100 * i as u64), 1))
            .collect()
    }

    #[test]
    fn deterministic_per_seed() {
        let p = LinkParams {
            loss: 0.3,
            jitter: Duration::from_millis(5),
            reorder: 0.1,
            ..params()
        };
        let t0 = Instant::now();
        let decide = |seed| {
            let mut s = Shaper::new(p, seed);
            (0..500)
                .map(|i| s.decide(t0 + Duration::from_millis(i), i % 3))
                .collect::<Vec<_>>()
        };
        assert_eq!(decide(9), decide(9));
        assert_ne!(decide(9), decide(10));
    }

    #[test]
    fn loss_rate() {
        let p = LinkParams {
            loss: 0.2,
            ..params()
        };
        let lost = run(p, 1, 20_000)
            .iter()
            .filter(|v| **v == Verdict::Lost)
            .count();
        let rate = f64::from(u32::try_from(lost).unwrap()) / 20_000.0;
        assert!((rate - 0.2).abs() < 0.015, "{rate}");
    }

    #[test]
    fn jitter_keeps_fifo_and_mean() {
        for distribution in [JitterDistribution::Uniform, JitterDistribution::Normal] {
            let p = LinkParams {
                jitter: Duration::from_millis(10),
                distribution,
                ..params()
            };
            let t0 = Instant::now();
            let mut s = Shaper::new(p, 3);
            let mut last = t0;
            let mut total = Duration::ZERO;
            let n = 5000u32;
            for i in 0..n {
                // Packets 10 ms apart: the FIFO clamp rarely bites, so the mean stays ~50 ms.
                let now = t0 + Duration::from_millis(10 * u64::from(i));
                let Verdict::Deliver { at, reordered } = s.decide(now, 42) else {
                    panic!("no loss configured")
                };
                assert!(!reordered);
                assert!(at >= last, "jitter reordered packets");
                last = at;
                total += at - now;
            }
            let mean = total / n;
            assert!(
                mean > Duration::from_millis(48) && mean < Duration::from_millis(54),
                "{distribution:?}: {mean:?}"
            );
        }
    }

    #[test]
    fn fifo_is_per_flow() {
        let p = LinkParams {
            jitter: Duration::from_millis(10),
            ..params()
        };
        let t0 = Instant::now();
        // A burst (1 us apart): one flow stays in order and so is pushed later on average;
        // distinct flows keep the configured mean.
        let burst = |flows: bool| {
            let mut s = Shaper::new(p, 11);
            let mut last = t0;
            let mut in_order = true;
            let mut total = Duration::ZERO;
            for i in 0..2000u64 {
                let now = t0 + Duration::from_micros(i);
                let Verdict::Deliver { at, .. } = s.decide(now, if flows { i } else { 7 }) else {
                    panic!()
                };
                in_order &= at >= last;
                last = at;
                total += at - now;
            }
            (in_order, total / 2000)
        };
        let (ordered, mean_one) = burst(false);
        assert!(ordered);
        assert!(mean_one > Duration::from_millis(58), "{mean_one:?}");
        let (ordered, mean_many) = burst(true);
        assert!(!ordered);
        assert!(
            mean_many > Duration::from_millis(49) && mean_many < Duration::from_millis(51),
            "{mean_many:?}"
        );
    }

    #[test]
    fn flow_hash_uses_ports() {
        let mut a = [0u8; 40];
        a[0] = 0x45;
        a[9] = 6;
        a[20..24].copy_from_slice(&[0x80, 0x00, 0x00, 0x16]);
        let mut b = a;
        b[21] = 0x01;
        assert_eq!(flow_hash(&a), flow_hash(&a.clone()));
        assert_ne!(flow_hash(&a), flow_hash(&b));
        b[9] = 1; // ICMP: ports are not part of the flow
        let mut c = b;
        c[21] = 0x02;
        assert_eq!(flow_hash(&b), flow_hash(&c));
    }

    #[test]
    fn reorder_holds_back() {
        let p = LinkParams {
            reorder: 0.25,
            ..params()
        };
        let v = run(p, 5, 4000);
        let held = v
            .iter()
            .filter(|v| {
                matches!(
                    v,
                    Verdict::Deliver {
                        reordered: true,
                        ..
                    }
                )
            })
            .count();
        assert!((800..1200).contains(&held), "{held}");
        // A held-back packet is released after a later in-order one.
        let overtaken = v.windows(2).any(|w| match (w[0], w[1]) {
            (
                Verdict::Deliver {
                    at: a,
                    reordered: true,
                },
                Verdict::Deliver {
                    at: b,
                    reordered: false,
                },
            ) => a > b,
            _ => false,
        });
        assert!(overtaken);
    }
}
