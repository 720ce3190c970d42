//! The live model the pages read: one thread samples this machine's listeners every
//! interval (the watch engine's `Sampler`, which remembers owners by socket inode, so a
//! sample costs a sock_diag dump and a walk only for new sockets), judges them against the
//! live nftables ruleset (the firewall engine, re-read every few seconds) and the audit
//! engine, and publishes a new snapshot when anything changed. Pages render the latest
//! snapshot without waiting; the event stream tells open pages that a new one exists.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use portolan_audit::{AuditInput, Date, Finding, Reachability};
use portolan_core::listener::Listener;
use portolan_core::Protocol;
use portolan_firewall::{Ruleset, Verdict, L4};
use portolan_watch::model::Event;
use portolan_watch::sampler::Sampler;
use portolan_watch::tracker::Tracker;

/// What the firewall lets reach one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Only this machine can connect (bound to loopback).
    ThisMachine,
    /// The ruleset was not read (not root, or `--no-firewall`): why.
    NotRead(String),
    /// The firewall engine's verdict.
    Verdict(Verdict),
}

impl Reach {
    /// A short word for a badge, and a CSS class.
    pub fn badge(&self) -> (&'static str, &'static str) {
        match self {
            Reach::ThisMachine => ("this machine only", "reach-local"),
            Reach::NotRead(_) => ("firewall not read", "reach-unknown"),
            Reach::Verdict(Verdict::Open { .. }) => ("reachable", "reach-open"),
            Reach::Verdict(Verdict::Restricted { .. }) => ("restricted", "reach-restricted"),
            Reach::Verdict(Verdict::Blocked { .. }) => ("blocked", "reach-blocked"),
            Reach::Verdict(Verdict::Unknown { .. }) => ("undecided", "reach-unknown"),
        }
    }

    /// The whole sentence, for a tooltip and JSON.
    pub fn detail(&self) -> String {
        match self {
            Reach::ThisMachine => "bound to loopback: only this machine can connect".into(),
            Reach::NotRead(why) => why.clone(),
            Reach::Verdict(v) => v.to_string(),
        }
    }

    /// How much this listener is open to others (for the order of the map: most first).
    pub fn rank(&self) -> u8 {
        match self {
            Reach::Verdict(Verdict::Open { .. }) => 4,
            Reach::NotRead(_) | Reach::Verdict(Verdict::Unknown { .. }) => 3,
            Reach::Verdict(Verdict::Restricted { .. }) => 2,
            Reach::Verdict(Verdict::Blocked { .. }) => 1,
            Reach::ThisMachine => 0,
        }
    }
}

/// One moment of this machine, as every page shows it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Grows by one with every change; the event stream carries it.
    pub version: u64,
    pub sampled_ms: i64,
    /// Sorted by protocol, port, address.
    pub listeners: Vec<Listener>,
    /// One per listener, same order.
    pub reach: Vec<Reach>,
    pub findings: Vec<Finding>,
    /// The changes seen since the dashboard started, newest last (at most [`RECENT`]).
    pub recent: VecDeque<Event>,
    /// Why the last sample failed, when it did (the page says so; the old data stays).
    pub error: Option<String>,
}

/// How many changes the map's "what changed" list keeps.
pub const RECENT: usize = 50;

/// What a probe found on a listener (the answer the map shows beside it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    pub service: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub at_ms: i64,
}

/// The shared state: the newest snapshot, a version channel for the event streams, and the
/// answers of probes asked from the page.
#[derive(Debug)]
pub struct Live {
    snap: RwLock<Arc<Snapshot>>,
    pub changes: tokio::sync::watch::Sender<u64>,
    pub answers: Mutex<HashMap<(Protocol, SocketAddr), Answer>>,
    stop: AtomicBool,
}

impl Live {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(
            &self
                .snap
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Settings of the sampling thread.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub interval: Duration,
    pub firewall: bool,
    pub host: String,
}

/// How often the ruleset is read again while listeners stay the same.
const RULESET_EVERY: Duration = Duration::from_secs(5);

/// Takes the first sample (so the first page has data), then starts the thread that keeps
/// the model current until [`Live::stop`].
#[expect(
    clippy::needless_pass_by_value,
    reason = "the thread keeps what it needs"
)]
pub fn start(cfg: Sampling) -> anyhow::Result<Arc<Live>> {
    let mut sampler = Sampler::new(Duration::from_secs(30));
    let mut listeners = sampler.sample()?;
    sort(&mut listeners);
    let now = portolan_watch::model::now_ms();
    let grace = i64::try_from(cfg.interval.as_millis().saturating_mul(2)).unwrap_or(i64::MAX);
    let mut tracker = Tracker::new(&cfg.host, grace);
    let _ = tracker.baseline(now, &listeners);
    let mut fw = Firewall::new(cfg.firewall);
    let first = judge(1, now, listeners, &fw.current(), VecDeque::new(), None);
    let (tx, _) = tokio::sync::watch::channel(1);
    let live = Arc::new(Live {
        snap: RwLock::new(Arc::new(first)),
        changes: tx,
        answers: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
    });
    let shared = Arc::clone(&live);
    std::thread::Builder::new()
        .name("serve-sampler".into())
        .spawn(move || {
            let mut next = Instant::now() + cfg.interval;
            while !shared.stop.load(Ordering::Relaxed) {
                let wait = next.saturating_duration_since(Instant::now());
                std::thread::sleep(wait.min(Duration::from_millis(200)));
                if Instant::now() < next {
                    continue;
                }
                next = Instant::now() + cfg.interval;
                let old = shared.snapshot();
                let now = portolan_watch::model::now_ms();
                let (mut ls, error) = match sampler.sample() {
                    Ok(ls) => (ls, None),
                    Err(e) => (old.listeners.clone(), Some(format!("sampling failed: {e}"))),
                };
                sort(&mut ls);
                let rules_changed = fw.refresh(ls != old.listeners);
                if ls == old.listeners && !rules_changed && error == old.error {
                    continue;
                }
                let mut recent = old.recent.clone();
                if error.is_none() {
                    for e in tracker.step(now, &ls) {
                        recent.push_back(e);
                    }
                }
                while recent.len() > RECENT {
                    recent.pop_front();
                }
                let snap = judge(old.version + 1, now, ls, &fw.current(), recent, error);
                let v = snap.version;
                *shared
                    .snap
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(snap);
                shared.changes.send_replace(v);
            }
        })?;
    Ok(live)
}

fn sort(ls: &mut [Listener]) {
    ls.sort_by(|a, b| {
        (a.proto.as_str(), a.port, a.address).cmp(&(b.proto.as_str(), b.port, b.address))
    });
}

/// The firewall's ruleset, as last read, or why not.
struct Firewall {
    enabled: bool,
    rules: Result<Arc<Ruleset>, String>,
    read_at: Option<Instant>,
}

impl Firewall {
    fn new(enabled: bool) -> Firewall {
        let mut f = Firewall {
            enabled,
            rules: Err(String::new()),
            read_at: None,
        };
        f.read();
        f
    }

    fn read(&mut self) {
        self.read_at = Some(Instant::now());
        self.rules = if !self.enabled {
            Err("not read (--no-firewall)".into())
        } else if let Err(e) = portolan_firewall::require_privileges() {
            Err(format!("the nftables ruleset needs root to read: {e}"))
        } else {
            Ruleset::load()
                .map(Arc::new)
                .map_err(|e| format!("cannot read the ruleset: {e}"))
        };
    }

    /// Reads the ruleset again when it is due (or `now` is asked for); true when what it
    /// says may have changed.
    fn refresh(&mut self, now: bool) -> bool {
        if !self.enabled {
            return false;
        }
        if !now && self.read_at.is_some_and(|t| t.elapsed() < RULESET_EVERY) {
            return false;
        }
        let before = self.rules.clone();
        self.read();
        match (&before, &self.rules) {
            (Ok(a), Ok(b)) => !same_rules(a, b),
            (Err(a), Err(b)) => a != b,
            _ => true,
        }
    }

    fn current(&self) -> Result<Arc<Ruleset>, String> {
        self.rules.clone()
    }
}

/// Whether two readings of the ruleset judge alike (compared by what they say about every
/// input chain: cheap, and exact enough to decide whether to judge again).
fn same_rules(a: &Ruleset, b: &Ruleset) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// A snapshot: each listener judged by the firewall engine and the audit engine.
fn judge(
    version: u64,
    now: i64,
    listeners: Vec<Listener>,
    rules: &Result<Arc<Ruleset>, String>,
    recent: VecDeque<Event>,
    error: Option<String>,
) -> Snapshot {
    let reach = listeners
        .iter()
        .map(|l| {
            if l.is_loopback() {
                return Reach::ThisMachine;
            }
            match rules {
                Err(why) => Reach::NotRead(why.clone()),
                Ok(rs) => {
                    let l4 = match l.proto {
                        Protocol::Tcp => L4::Tcp,
                        Protocol::Udp => L4::Udp,
                        _ => return Reach::NotRead("only TCP and UDP are judged".into()),
                    };
                    Reach::Verdict(rs.inbound_verdict(l4, l.address, l.port))
                }
            }
        })
        .collect();
    let reach_oracle = rules.as_ref().ok().map(|r| &**r as &dyn Reachability);
    let findings = portolan_audit::audit(&AuditInput {
        listeners: &listeners,
        probes: &[],
        policy: None,
        reachability: reach_oracle,
        today: Date::today(),
    });
    Snapshot {
        version,
        sampled_ms: now,
        listeners,
        reach,
        findings,
        recent,
        error,
    }
}
