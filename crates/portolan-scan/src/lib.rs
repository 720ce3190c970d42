//! The scanner: which (host, port) pairs to probe, in what order, how fast, and what each
//! answer means. Returns typed results through a callback; never prints.
//!
//! Order: one random permutation over hosts x ports (constant memory, seedable, shardable).
//! Pace: per-host RTT estimation and congestion windows (timing.rs), a global cap on
//! probes in flight bounded by the descriptor limit, an optional rate cap. Decisions
//! (sched.rs) are separate from I/O: the connect driver (connect.rs) runs them on epoll;
//! a later probe method (raw SYN, UDP payloads) is another driver of the same scheduler.

mod connect;
pub mod icmp;
mod limits;
pub mod perm;
pub mod probe;
pub mod raw;
pub mod rdns;
mod route;
mod sched;
pub mod session;
pub mod targets;
pub mod timing;

use std::net::IpAddr;
use std::time::Duration;

use portolan_core::{Port, Protocol};
use thiserror::Error;

pub use limits::{raise_fd_limit, FdLimit};
pub use perm::{Permutation, Shard};
/// The state of a scanned port (defined in core, beside the scan record).
pub use portolan_core::PortState;
pub use probe::ProbeOutcome;
pub use session::{
    run_session, summarize, Detection, HostName, HostSummary, NameSource, NotShown, PortRecord,
    ScanRequest, ScanStart, SessionError, SessionEvent, SessionSummary,
};
pub use timing::{retries_for_loss, RttEstimator, Timing, TimingPreset, Window};

/// The verdict on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortResult {
    pub host: IpAddr,
    pub port: Port,
    pub proto: Protocol,
    pub state: PortState,
    /// Why: one of [`probe::reason::ALL`] (`syn-ack`, `conn-refused`, `no-response`, ...).
    pub reason: &'static str,
    /// Time to the answer, for answered probes.
    pub rtt: Option<Duration>,
    /// The answer's IP TTL, where the probe method sees it (raw scans of IPv4).
    pub ttl: Option<u8>,
    /// Probes sent for this port (1 + retries).
    pub attempts: u8,
    /// Its position in the shard's visiting order (what checkpoints count: a verdict at a
    /// position below a checkpoint is never scanned again by a resumed run).
    pub position: u64,
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
    #[error("cannot open a socket even with no probe in flight; raise the descriptor limit (ulimit -n) or close what holds the descriptors")]
    Starved(#[source] std::io::Error),
    #[error("a SYN or UDP scan sends raw packets, which needs root or the CAP_NET_RAW capability; without it, the connect scan (the default, -sT) needs no privilege")]
    NeedsPrivilege,
    #[error("no network interface named `{0}` (-e); `ip link` lists them")]
    NoInterface(String),
    #[error("{0} is not an address of this machine (-S); `ip addr` lists them")]
    SourceNotLocal(IpAddr),
}

impl ScanError {
    /// Whether the error is the user's to fix (a missing privilege, a bad option) rather
    /// than a failure of the machine.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ScanError::NeedsPrivilege | ScanError::NoInterface(_) | ScanError::SourceNotLocal(_)
        )
    }
}

/// How ports are probed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Method {
    /// A full handshake by the kernel (`connect()`): no privilege needed (`-sT`).
    #[default]
    Connect,
    /// A raw SYN, answered by SYN-ACK or reset; the handshake is never completed (`-sS`).
    Syn(raw::RawOptions),
    /// A UDP datagram with the port's protocol payload (`-sU`): an answer is open, an ICMP
    /// port unreachable closed, silence open|filtered.
    Udp(raw::RawOptions),
}

impl Method {
    /// The transport the method probes.
    pub fn proto(&self) -> Protocol {
        match self {
            Method::Udp(_) => Protocol::Udp,
            Method::Connect | Method::Syn(_) => Protocol::Tcp,
        }
    }
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
    pub method: Method,
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

/// Runs a scan with the connect prober on the calling thread. Blocks until done; events
/// reach the callback as the loop turns. The callback returns `ControlFlow::Break(())` to
/// stop the scan (say, its output is gone): probes in flight are dropped and no more are
/// sent (the callback knows why it stopped). The verdicts already decided in that turn
/// of the loop still reach the callback, so every position below the summary's
/// checkpoint has been reported.
///
/// One thread: the work of a connect scan is the kernel's, per socket, and a second engine
/// thread made it slower (contention in the kernel's connection tables), measured in
/// ARCHITECTURE.md.
pub fn run_blocking(
    plan: &ScanPlan,
    on_event: &mut dyn FnMut(ScanEvent) -> std::ops::ControlFlow<()>,
) -> Result<ScanSummary, ScanError> {
    match &plan.method {
        Method::Connect => connect::drive(plan, on_event),
        Method::Syn(opts) => raw::driver::drive(plan, opts, false, on_event),
        Method::Udp(opts) => raw::driver::drive(plan, opts, true, on_event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener};
    use std::time::Instant;

    fn plan(hosts: Vec<IpAddr>, ports: Vec<u16>, timing: Timing) -> ScanPlan {
        ScanPlan {
            hosts,
            ports: ports.into_iter().map(Port::new).collect(),
            timing,
            seed: 7,
            shard: Shard::WHOLE,
            start_at: 0,
            max_parallel: 512,
            method: Method::Connect,
        }
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
        // Closed: ports held by sockets that are bound but never listen (a SYN gets a
        // reset), so no other test can take them meanwhile.
        let holders: Vec<std::os::fd::OwnedFd> = (0..20)
            .map(|_| {
                let fd = rustix::net::socket_with(
                    rustix::net::AddressFamily::INET,
                    rustix::net::SocketType::STREAM,
                    rustix::net::SocketFlags::CLOEXEC,
                    None,
                )
                .unwrap();
                rustix::net::bind(&fd, &SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
                fd
            })
            .collect();
        let closed: Vec<u16> = holders
            .iter()
            .map(|fd| {
                SocketAddr::try_from(rustix::net::getsockname(fd).unwrap())
                    .unwrap()
                    .port()
            })
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
                    "port reported twice: {r:?}"
                );
            }
            std::ops::ControlFlow::Continue(())
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

    /// A simulated network for the scheduler: per-port truth, loss decided by a hash of
    /// (port, attempt), and a virtual clock (a discrete-event simulation).
    struct Sim {
        open: BTreeSet<u16>,
        filtered: BTreeSet<u16>,
        rtt: Duration,
        loss_per_mille: u64,
    }

    /// Runs a plan on the simulated network: every verdict, and the simulated time taken.
    fn simulate(plan: &ScanPlan, net: &Sim) -> (Vec<PortResult>, Duration) {
        use crate::sched::{Next, Scheduler};
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let base = Instant::now();
        let mut now = base;
        let mut sched = Scheduler::new(plan, now).unwrap();
        let mut attempts: HashMap<(IpAddr, u16), u8> = HashMap::new();
        // (when, sequence, job, answered?)
        let mut pending = BinaryHeap::new();
        let mut seq = 0u64;
        let mut results = Vec::new();
        loop {
            let wake = loop {
                match sched.next(now) {
                    Next::Probe(job, addr, timeout) => {
                        let a = attempts.entry((addr.ip(), addr.port())).or_insert(0);
                        *a += 1;
                        let lost = perm::mix(u64::from(addr.port()) << 8 | u64::from(*a)) % 1000
                            < net.loss_per_mille;
                        let silent = lost || net.filtered.contains(&addr.port());
                        let answered = !silent && net.rtt < timeout;
                        let at = now + if answered { net.rtt } else { timeout };
                        seq += 1;
                        pending.push(Reverse((at, seq, JobKey(job), answered)));
                    }
                    Next::Wait(w) => break w,
                    Next::Done => {
                        sched.progress(now);
                        results.extend(sched.out.drain(..).filter_map(|e| match e {
                            ScanEvent::Port(r) => Some(r),
                            _ => None,
                        }));
                        return (results, now - base);
                    }
                }
            };
            let next_event = pending.peek().map(|Reverse((at, ..))| *at);
            now = match (wake, next_event) {
                (Some(w), Some(e)) => w.min(e),
                (Some(w), None) => w,
                (None, Some(e)) => e,
                (None, None) => panic!("the scheduler waits for nothing"),
            }
            .max(now);
            while let Some(Reverse((at, ..))) = pending.peek() {
                if *at > now {
                    break;
                }
                let Some(Reverse((_, _, JobKey(job), answered))) = pending.pop() else {
                    break;
                };
                let outcome = if answered {
                    let open = net.open.contains(&job.port);
                    ProbeOutcome::Answered {
                        state: if open {
                            PortState::Open
                        } else {
                            PortState::Closed
                        },
                        reason: if open { "syn-ack" } else { "conn-refused" },
                        rtt: net.rtt,
                        ttl: None,
                    }
                } else {
                    ProbeOutcome::Timeout
                };
                sched.finish(job, outcome, now);
            }
            results.extend(sched.out.drain(..).filter_map(|e| match e {
                ScanEvent::Port(r) => Some(r),
                _ => None,
            }));
        }
    }

    /// A job in the event heap (ordered by time and sequence only).
    struct JobKey(crate::sched::Job);
    impl PartialEq for JobKey {
        fn eq(&self, _: &Self) -> bool {
            true
        }
    }
    impl Eq for JobKey {}
    impl PartialOrd for JobKey {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for JobKey {
        fn cmp(&self, _: &Self) -> std::cmp::Ordering {
            std::cmp::Ordering::Equal
        }
    }

    #[test]
    fn lossy_slow_link_every_state_exact_and_no_crawl() {
        let open: BTreeSet<u16> = [22, 80, 443, 8080, 31337].into();
        let filtered: BTreeSet<u16> = (20_000..22_000).collect();
        let sim = Sim {
            open: open.clone(),
            filtered: filtered.clone(),
            rtt: Duration::from_millis(150),
            loss_per_mille: 50, // 5% of probes vanish
        };
        let p = plan(
            vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))],
            (1..=30_000).collect(),
            TimingPreset::Normal.params(),
        );
        let (results, simulated) = simulate(&p, &sim);
        let mut got: HashMap<u16, PortState> = HashMap::new();
        for r in &results {
            assert!(
                got.insert(r.port.get(), r.state).is_none(),
                "reported twice"
            );
        }
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
        assert!(simulated < Duration::from_secs(18), "took {simulated:?}");
    }

    #[test]
    fn shards_and_resume_cover_the_scan_exactly_once() {
        let sim = Sim {
            open: [5u16].into(),
            filtered: BTreeSet::new(),
            rtt: Duration::from_millis(10),
            loss_per_mille: 0,
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
            for r in simulate(&p, &sim).0 {
                *seen.entry((r.host, r.port.get())).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), 300);
        assert!(seen.values().all(|&c| c == 1));
        // Resume: a run from checkpoint k reports exactly the positions from k on.
        let mut p = plan(hosts, (1..=100).collect(), TimingPreset::Normal.params());
        p.start_at = 120;
        assert_eq!(simulate(&p, &sim).0.len(), 180);
    }
}
