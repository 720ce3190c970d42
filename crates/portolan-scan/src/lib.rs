//! The scanner: which (host, port) pairs to probe, in what order, how fast, and what each
//! answer means. Returns typed results through a callback; never prints.
//!
//! Order: one random permutation over hosts x ports (constant memory, seedable, shardable).
//! Pace: per-host RTT estimation and congestion windows (timing.rs), a global cap on
//! probes in flight bounded by the descriptor limit, an optional rate cap. Probes: the
//! `Prober` seam (probe.rs); connect() today.

mod limits;
pub mod perm;
pub mod probe;
pub mod targets;
pub mod timing;

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use portolan_core::{Port, Protocol};
use thiserror::Error;
use tokio::task::JoinSet;

pub use limits::{raise_fd_limit, FdLimit};
pub use perm::{Permutation, Shard};
pub use probe::{ConnectProber, ProbeOutcome, Prober};
pub use timing::{retries_for_loss, RttEstimator, Timing, TimingPreset, Window};

/// The state of a scanned port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortState {
    Open,
    Closed,
    Filtered,
}

impl PortState {
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
        }
    }
}

/// The verdict on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortResult {
    pub host: IpAddr,
    pub port: Port,
    pub proto: Protocol,
    pub state: PortState,
    /// Why: `syn-ack`, `conn-refused`, `no-response`, `host-unreach`, `net-unreach`,
    /// `admin-prohibited`, `local-error`.
    pub reason: &'static str,
    /// Time to the answer, for answered probes.
    pub rtt: Option<Duration>,
    /// Probes sent for this port (1 + retries).
    pub attempts: u8,
}

/// Progress, reported a few times a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub open: u64,
    pub in_flight: usize,
    /// Probes per second since the start.
    pub rate: f64,
    /// Every position below this one is finished: what `--resume` restarts from.
    pub checkpoint: u64,
}

/// What the scanner reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanEvent {
    Port(PortResult),
    Progress(Progress),
    /// Something the user should know, said once (e.g. the descriptor limit was hit).
    Notice(String),
}

#[derive(Debug, Error)]
pub enum ScanError {
    #[error("nothing to scan: {0}")]
    Empty(&'static str),
    #[error("the scan is too large: {hosts} hosts x {ports} ports exceeds 2^48 probes")]
    TooLarge { hosts: u64, ports: u64 },
    #[error("cannot start the scanner's event loop: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("a scanner thread stopped unexpectedly; its results are incomplete")]
    Thread,
}

/// Everything a scan needs.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    pub hosts: Vec<IpAddr>,
    /// TCP ports, in order; the permutation decides the visiting order.
    pub ports: Vec<Port>,
    pub timing: Timing,
    pub seed: u64,
    pub shard: Shard,
    /// Shard positions below this are skipped (resume).
    pub start_at: u64,
    /// Upper bound on probes in flight (further capped by the descriptor limit).
    pub max_parallel: u32,
}

impl ScanPlan {
    /// Total positions (hosts x ports) before sharding.
    pub fn size(&self) -> u64 {
        self.hosts.len() as u64 * self.ports.len() as u64
    }
}

/// What the run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanSummary {
    pub probes: u64,
    pub results: u64,
    pub elapsed: Duration,
    /// The cap on probes in flight at the end (it shrinks on resource errors).
    pub parallel_cap: usize,
    pub checkpoint: u64,
}

#[derive(Debug, Clone, Copy)]
struct Job {
    k: u64,
    host: u32,
    port: u16,
    attempt: u8,
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

/// Runs a scan with the connect prober. Blocks until done.
///
/// The CPU cost of a connect scan is the kernel's work for each socket, so the scan is split
/// into one sub-shard per core, each on its own single-threaded event loop in its own
/// thread: no cross-thread wake-up per probe, and both cores busy. Events come back to the
/// calling thread, which runs the callback; progress and checkpoints are combined.
pub fn run_blocking(
    plan: &ScanPlan,
    on_event: &mut dyn FnMut(ScanEvent),
) -> Result<ScanSummary, ScanError> {
    let cores = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(8) as u64;
    let parts = cores.min(plan.shard.positions(plan.size()).max(1));
    let (tx, rx) = std::sync::mpsc::channel::<(u64, ScanEvent)>();
    let results: Vec<Result<ScanSummary, ScanError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..parts)
            .map(|j| {
                let tx = tx.clone();
                let sub = sub_plan(plan, j, parts);
                scope.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(ScanError::Runtime)?;
                    rt.block_on(run(&sub, ConnectProber, &mut |e| {
                        let _ = tx.send((j, e));
                    }))
                })
            })
            .collect();
        drop(tx);
        let mut progress: Vec<Option<Progress>> = vec![None; usize::try_from(parts).unwrap_or(1)];
        for (j, e) in rx {
            match e {
                ScanEvent::Progress(p) => {
                    progress[usize::try_from(j).unwrap_or(0)] = Some(p);
                    if let Some(all) = combine_progress(&progress, parts) {
                        on_event(ScanEvent::Progress(all));
                    }
                }
                other => on_event(other),
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(ScanError::Thread)))
            .collect()
    });
    let mut total = ScanSummary {
        probes: 0,
        results: 0,
        elapsed: Duration::ZERO,
        parallel_cap: 0,
        checkpoint: u64::MAX,
    };
    for (j, r) in (0u64..).zip(results) {
        let s = r?;
        total.probes += s.probes;
        total.results += s.results;
        total.elapsed = total.elapsed.max(s.elapsed);
        total.parallel_cap += s.parallel_cap;
        total.checkpoint = total
            .checkpoint
            .min(parent_checkpoint(s.checkpoint, j, parts));
    }
    total.checkpoint = total.checkpoint.min(plan.shard.positions(plan.size()));
    Ok(total)
}

/// Sub-shard `j` of `parts` of a plan: its positions are the plan's positions j, j + parts,
/// ... (so its shard is the plan's shard refined), with its share of the parallelism and
/// the resume point translated.
fn sub_plan(plan: &ScanPlan, j: u64, parts: u64) -> ScanPlan {
    let s = plan.shard;
    let start_at = if plan.start_at > j {
        (plan.start_at - j).div_ceil(parts)
    } else {
        0
    };
    ScanPlan {
        shard: Shard {
            index: s.index + s.count * j,
            count: s.count * parts,
        },
        start_at,
        max_parallel: (plan.max_parallel / u32::try_from(parts).unwrap_or(1)).max(1),
        ..plan.clone()
    }
}

/// A sub-shard's checkpoint (its positions below `c` done) in the parent's numbering:
/// parent positions below `j + parts * c` that belong to sub-shard `j` are done.
fn parent_checkpoint(c: u64, j: u64, parts: u64) -> u64 {
    c.saturating_mul(parts).saturating_add(j)
}

fn combine_progress(parts_p: &[Option<Progress>], parts: u64) -> Option<Progress> {
    let all: Vec<&Progress> = parts_p.iter().flatten().collect();
    if all.len() != parts_p.len() {
        return None;
    }
    let mut checkpoint = u64::MAX;
    for (j, p) in (0u64..).zip(&all) {
        // A finished sub-shard does not hold the others back.
        let c = if p.done >= p.total {
            u64::MAX
        } else {
            parent_checkpoint(p.checkpoint, j, parts)
        };
        checkpoint = checkpoint.min(c);
    }
    let total: u64 = all.iter().map(|p| p.total).sum();
    Some(Progress {
        done: all.iter().map(|p| p.done).sum(),
        total,
        open: all.iter().map(|p| p.open).sum(),
        in_flight: all.iter().map(|p| p.in_flight).sum(),
        rate: all.iter().map(|p| p.rate).sum(),
        checkpoint: checkpoint.min(total),
    })
}

/// Runs a scan with any prober.
pub async fn run<P>(
    plan: &ScanPlan,
    prober: P,
    on_event: &mut dyn FnMut(ScanEvent),
) -> Result<ScanSummary, ScanError>
where
    P: Prober + Clone + Send + Sync + 'static,
{
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
    let perm = Permutation::new(n, plan.seed);
    let total_k = plan.shard.positions(n);
    let nports = plan.ports.len() as u64;
    let t = plan.timing;
    let start = Instant::now();
    let mut hosts: Vec<Host> = plan
        .hosts
        .iter()
        .map(|_| Host {
            rtt: RttEstimator::default(),
            answers: 0,
            answers_after_retry: 0,
            window: Window::new(&t),
            in_flight: 0,
            parked: VecDeque::new(),
            next_send: start,
        })
        .collect();
    let mut cap = usize::try_from(plan.max_parallel.max(1)).unwrap_or(usize::MAX);
    let mut next_k = plan.start_at.min(total_k);
    let mut frontier = Frontier {
        below: next_k,
        ..Frontier::default()
    };
    let mut parked_total = 0usize;
    // Hosts that have parked jobs, in round-robin order.
    let mut ready_hosts: VecDeque<u32> = VecDeque::new();
    let mut tasks: JoinSet<(Job, ProbeOutcome)> = JoinSet::new();
    let (mut probes, mut results, mut done, mut open) = (0u64, 0u64, 0u64, 0u64);
    let mut tokens = 1.0f64;
    let mut last_refill = start;
    let mut last_progress = start;
    let mut resource_notice = false;
    let mut failure_notice = false;

    loop {
        let now = Instant::now();
        if let Some(rate) = t.max_rate {
            tokens = (tokens + now.duration_since(last_refill).as_secs_f64() * rate)
                .min(rate.max(1.0) / 10.0 + 1.0);
            last_refill = now;
        }
        let mut wake: Option<Instant> = None;
        // Dispatch while there is room.
        let mut idle_rounds = 0;
        while tasks.len() < cap {
            if t.max_rate.is_some() && tokens < 1.0 {
                let rate = t.max_rate.unwrap_or(1.0);
                wake = Some(now + Duration::from_secs_f64((1.0 - tokens) / rate));
                break;
            }
            // 1. Parked jobs (retries first, they sit at the front) of hosts with room.
            let mut job = None;
            let mut tries = ready_hosts.len();
            while tries > 0 {
                tries -= 1;
                let Some(h) = ready_hosts.pop_front() else {
                    break;
                };
                let host = &mut hosts[h as usize];
                if host.parked.is_empty() {
                    continue;
                }
                let room = t.min_rate.is_some() || host.in_flight < host.window.allowed();
                if room && host.next_send <= now {
                    job = host.parked.pop_front();
                    parked_total -= 1;
                    if !host.parked.is_empty() {
                        ready_hosts.push_back(h);
                    }
                    break;
                }
                if host.next_send > now {
                    wake = Some(wake.map_or(host.next_send, |w| w.min(host.next_send)));
                }
                ready_hosts.push_back(h);
            }
            // 2. A new position, unless too much is parked already.
            if job.is_none() && next_k < total_k && parked_total < cap.saturating_mul(4).max(1024) {
                let idx = perm.at(plan.shard.position(next_k));
                let j = Job {
                    k: next_k,
                    host: u32::try_from(idx / nports).unwrap_or(u32::MAX),
                    port: plan.ports[usize::try_from(idx % nports).unwrap_or(0)].get(),
                    attempt: 0,
                };
                next_k += 1;
                let host = &mut hosts[j.host as usize];
                let room = t.min_rate.is_some() || host.in_flight < host.window.allowed();
                if room && host.next_send <= now && host.parked.is_empty() {
                    job = Some(j);
                } else {
                    if host.parked.is_empty() {
                        ready_hosts.push_back(j.host);
                    }
                    host.parked.push_back(j);
                    parked_total += 1;
                    idle_rounds += 1;
                    if idle_rounds < 64 {
                        continue;
                    }
                }
            }
            let Some(j) = job else { break };
            let host = &mut hosts[j.host as usize];
            host.in_flight += 1;
            if !t.scan_delay.is_zero() {
                host.next_send = now + t.scan_delay;
            }
            let timeout = host.rtt.timeout(&t);
            let addr = SocketAddr::new(plan.hosts[j.host as usize], j.port);
            let p = prober.clone();
            tasks.spawn(async move { (j, p.probe(addr, timeout).await) });
            probes += 1;
            if t.max_rate.is_some() {
                tokens -= 1.0;
            }
        }

        if tasks.is_empty() && parked_total == 0 && next_k >= total_k {
            break;
        }
        if tasks.is_empty() && wake.is_none() {
            // Everything left is parked behind windows or delays: yield briefly.
            wake = Some(now + Duration::from_millis(1));
        }

        let finished = if let Some(w) = wake {
            tokio::select! {
                r = tasks.join_next(), if !tasks.is_empty() => r,
                () = tokio::time::sleep_until(w.into()) => None,
            }
        } else {
            tasks.join_next().await
        };
        let mut handle = |res: (Job, ProbeOutcome)| {
            let (j, outcome) = res;
            let now = Instant::now();
            let host = &mut hosts[j.host as usize];
            host.in_flight = host.in_flight.saturating_sub(1);
            let addr = plan.hosts[j.host as usize];
            let verdict = match outcome {
                ProbeOutcome::Answered { state, reason, rtt } => {
                    host.rtt.sample(rtt);
                    host.answers += 1;
                    host.answers_after_retry += u32::from(j.attempt > 0);
                    let srtt = host.rtt.srtt().unwrap_or(rtt);
                    host.window.on_answer(j.attempt > 0, now, srtt);
                    Some((state, reason, Some(rtt)))
                }
                ProbeOutcome::Timeout if j.attempt < host.retries(&t) => {
                    let retry = Job {
                        attempt: j.attempt + 1,
                        ..j
                    };
                    if host.parked.is_empty() {
                        ready_hosts.push_back(j.host);
                    }
                    host.parked.push_front(retry);
                    parked_total += 1;
                    None
                }
                ProbeOutcome::Timeout => {
                    host.window.on_silence();
                    Some((PortState::Filtered, "no-response", None))
                }
                ProbeOutcome::Resource(e) => {
                    // Out of descriptors, ports or buffers: fewer in flight, same probe later.
                    cap = (cap * 3 / 4).max(8);
                    if !resource_notice {
                        resource_notice = true;
                        on_event(ScanEvent::Notice(format!(
                            "this machine ran short of resources ({e}); probes in flight reduced to {cap}"
                        )));
                    }
                    if host.parked.is_empty() {
                        ready_hosts.push_back(j.host);
                    }
                    host.parked.push_front(j);
                    parked_total += 1;
                    None
                }
                ProbeOutcome::Failed(e) => {
                    if !failure_notice {
                        failure_notice = true;
                        on_event(ScanEvent::Notice(format!(
                            "a probe to {addr} port {} failed locally: {e}",
                            j.port
                        )));
                    }
                    Some((PortState::Filtered, "local-error", None))
                }
            };
            if let Some((state, reason, rtt)) = verdict {
                results += 1;
                done += 1;
                if state == PortState::Open {
                    open += 1;
                }
                frontier.finish(j.k);
                on_event(ScanEvent::Port(PortResult {
                    host: addr,
                    port: Port::new(j.port),
                    proto: Protocol::Tcp,
                    state,
                    reason,
                    rtt,
                    attempts: j.attempt + 1,
                }));
            }
        };
        if let Some(Ok(res)) = finished {
            handle(res);
            // Drain whatever else is already finished without waiting.
            while let Some(Ok(res)) = tasks.try_join_next() {
                handle(res);
            }
        }
        let now = Instant::now();
        if now.duration_since(last_progress) >= Duration::from_millis(200) {
            last_progress = now;
            on_event(ScanEvent::Progress(Progress {
                done,
                total: total_k,
                open,
                in_flight: tasks.len(),
                rate: probes_per_sec(probes, start.elapsed()),
                checkpoint: frontier.below,
            }));
        }
    }
    let elapsed = start.elapsed();
    on_event(ScanEvent::Progress(Progress {
        done,
        total: total_k,
        open,
        in_flight: 0,
        rate: probes_per_sec(probes, elapsed),
        checkpoint: frontier.below,
    }));
    Ok(ScanSummary {
        probes,
        results,
        elapsed,
        parallel_cap: cap,
        checkpoint: frontier.below,
    })
}

fn probes_per_sec(probes: u64, d: Duration) -> f64 {
    // Probe counts stay far below 2^52, where f64 stops being exact.
    #[allow(clippy::cast_precision_loss)]
    let p = probes as f64;
    p / d.as_secs_f64().max(1e-3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, TcpListener};

    fn plan(hosts: Vec<IpAddr>, ports: Vec<u16>, timing: Timing) -> ScanPlan {
        ScanPlan {
            hosts,
            ports: ports.into_iter().map(Port::new).collect(),
            timing,
            seed: 7,
            shard: Shard::WHOLE,
            start_at: 0,
            max_parallel: 512,
        }
    }

    #[test]
    fn sub_shards_partition_the_plan_and_translate_resume_points() {
        let base = plan(
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            (1..=100).collect(),
            TimingPreset::Normal.params(),
        );
        for (outer, start) in [
            (Shard::WHOLE, 0u64),
            (Shard::WHOLE, 37),
            (Shard { index: 1, count: 3 }, 5),
        ] {
            let p = ScanPlan {
                shard: outer,
                start_at: start,
                ..base.clone()
            };
            let n = p.size();
            // Positions of the plan from `start` on, as absolute permutation positions.
            let want: BTreeSet<u64> = (start..outer.positions(n))
                .map(|k| outer.position(k))
                .collect();
            let mut got = BTreeSet::new();
            for j in 0..3 {
                let sub = sub_plan(&p, j, 3);
                for k in sub.start_at..sub.shard.positions(n) {
                    assert!(got.insert(sub.shard.position(k)), "position twice");
                }
            }
            assert_eq!(got, want, "{outer:?} from {start}");
        }
        // Checkpoints: sub-shard j done below c covers parent positions below j + 3c.
        assert_eq!(parent_checkpoint(4, 2, 3), 14);
        let prog = |done, total, checkpoint| {
            Some(Progress {
                done,
                total,
                open: 0,
                in_flight: 0,
                rate: 0.0,
                checkpoint,
            })
        };
        let c = combine_progress(&[prog(5, 10, 5), prog(10, 10, 10), prog(3, 10, 3)], 3).unwrap();
        assert_eq!((c.done, c.total, c.checkpoint), (18, 30, 11)); // min(0 + 15, -, 2 + 9)
        assert!(combine_progress(&[prog(1, 2, 1), None], 2).is_none());
    }

    #[test]
    fn real_loopback_open_and_closed_are_exact() {
        let listeners: Vec<TcpListener> = (0..5)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let open: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        // Closed: ports we bound and released (nothing listens there now).
        let closed: Vec<u16> = (0..20)
            .map(|_| {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            })
            .filter(|p| !open.contains(p))
            .collect();
        let mut ports = open.clone();
        ports.extend(&closed);
        let p = plan(
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ports.clone(),
            TimingPreset::Aggressive.params(),
        );
        let mut got = HashMap::new();
        let summary = run_blocking(&p, &mut |e| {
            if let ScanEvent::Port(r) = e {
                assert!(
                    got.insert(r.port.get(), r.state).is_none(),
                    "port reported twice"
                );
            }
        })
        .unwrap();
        assert_eq!(got.len(), ports.len(), "every port has a verdict");
        for p in &open {
            assert_eq!(got[p], PortState::Open, "{p}");
        }
        for p in &closed {
            assert_eq!(got[p], PortState::Closed, "{p}");
        }
        assert_eq!(summary.checkpoint, ports.len() as u64);
    }

    /// A simulated network for the engine's logic: per-port truth, loss decided by a hash
    /// of (port, attempt), time from tokio's paused clock.
    #[derive(Clone)]
    struct Sim {
        open: std::sync::Arc<BTreeSet<u16>>,
        filtered: std::sync::Arc<BTreeSet<u16>>,
        rtt: Duration,
        loss_per_mille: u64,
        attempts: std::sync::Arc<std::sync::Mutex<HashMap<u16, u8>>>,
    }

    impl Prober for Sim {
        fn probe(
            &self,
            addr: SocketAddr,
            timeout: Duration,
        ) -> impl std::future::Future<Output = ProbeOutcome> + Send {
            let port = addr.port();
            let attempt = {
                let mut a = self.attempts.lock().unwrap();
                let e = a.entry(port).or_insert(0);
                *e += 1;
                *e
            };
            let lost =
                perm::mix(u64::from(port) << 8 | u64::from(attempt)) % 1000 < self.loss_per_mille;
            let silent = lost || self.filtered.contains(&port);
            let open = self.open.contains(&port);
            let rtt = self.rtt;
            async move {
                if silent || rtt >= timeout {
                    tokio::time::sleep(timeout).await;
                    return ProbeOutcome::Timeout;
                }
                tokio::time::sleep(rtt).await;
                let (state, reason) = if open {
                    (PortState::Open, "syn-ack")
                } else {
                    (PortState::Closed, "conn-refused")
                };
                ProbeOutcome::Answered { state, reason, rtt }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lossy_slow_link_every_state_exact_and_no_crawl() {
        let open: BTreeSet<u16> = [22, 80, 443, 8080, 31337].into();
        let filtered: BTreeSet<u16> = (20_000..22_000).collect();
        let sim = Sim {
            open: open.clone().into(),
            filtered: filtered.clone().into(),
            rtt: Duration::from_millis(150),
            loss_per_mille: 50, // 5% of probes vanish
            attempts: std::sync::Arc::default(),
        };
        let timing = TimingPreset::Normal.params();
        let p = plan(
            vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))],
            (1..=30_000).collect(),
            timing,
        );
        let mut got: HashMap<u16, PortState> = HashMap::new();
        let started = tokio::time::Instant::now();
        let summary = run(&p, sim, &mut |e| {
            if let ScanEvent::Port(r) = e {
                assert!(got.insert(r.port.get(), r.state).is_none());
            }
        })
        .await
        .unwrap();
        let simulated = started.elapsed();
        assert_eq!(got.len(), 30_000);
        for (port, state) in &got {
            let want = if open.contains(port) {
                PortState::Open
            } else if filtered.contains(port) {
                PortState::Filtered
            } else {
                PortState::Closed
            };
            assert_eq!(*state, want, "port {port}");
        }
        // 30,000 ports at 150 ms RTT with 5% loss and at most 512 in flight: the floor is
        // 30,000 / (512 / 0.15 s) = 8.8 s. A window that holds near the cap finishes within
        // twice that; one that collapsed on loss (nmap's way) would take minutes.
        assert!(
            simulated < Duration::from_secs(18),
            "took {simulated:?}, {summary:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shards_and_resume_cover_the_scan_exactly_once() {
        let sim = Sim {
            open: std::sync::Arc::new([5u16].into()),
            filtered: std::sync::Arc::default(),
            rtt: Duration::from_millis(10),
            loss_per_mille: 0,
            attempts: std::sync::Arc::default(),
        };
        let hosts: Vec<IpAddr> = (1..=3)
            .map(|i| IpAddr::V4(Ipv4Addr::new(198, 18, 0, i)))
            .collect();
        let mut seen: HashMap<(IpAddr, u16), u32> = HashMap::new();
        for index in 0..4 {
            let mut p = plan(
                hosts.clone(),
                (1..=100).collect(),
                TimingPreset::Normal.params(),
            );
            p.shard = Shard { index, count: 4 };
            run(&p, sim.clone(), &mut |e| {
                if let ScanEvent::Port(r) = e {
                    *seen.entry((r.host, r.port.get())).or_default() += 1;
                }
            })
            .await
            .unwrap();
        }
        assert_eq!(seen.len(), 300);
        assert!(seen.values().all(|&c| c == 1));
        // Resume: a run from checkpoint k reports exactly the positions from k on.
        let mut p = plan(hosts, (1..=100).collect(), TimingPreset::Normal.params());
        p.start_at = 120;
        let mut n = 0;
        run(&p, sim, &mut |e| {
            if matches!(e, ScanEvent::Port(_)) {
                n += 1;
            }
        })
        .await
        .unwrap();
        assert_eq!(n, 180);
    }
}
