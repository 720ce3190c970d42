//! One refresh of the live view: every TCP and UDP socket from sock_diag, TCP with the
//! kernel's own counters (bytes acknowledged and received, retransmits, RTT: the
//! inventory's `tcp_info` option), differenced against the previous refresh into rates.
//! No packet is captured and no privilege is needed for the user's own sockets.
//!
//! Naming owners is what costs (a walk of /proc/*/fd). A socket keeps its inode for its
//! life, so an owner found once is remembered by inode, as the watch engine's sampler
//! does for listeners: a refresh walks only for sockets that are new since the last one
//! (the inventory's targeted walk), drops owners that exited, and every `FULL_EVERY`
//! walks for everything again (fd passing, a parent that exits after forking).
//!
//! UDP has no byte counters in sock_diag (the kernel keeps none per socket); the view says
//! so rather than showing zeros. What would give them: eBPF on udp_sendmsg/udp_recvmsg, or
//! nftables counters / conntrack accounting per flow.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portolan_core::escape::{bytes_for_terminal, for_terminal};
use portolan_core::{Exposure, Protocol, SocketState};
use portolan_sockets::{Inventory, OwnerScan, Query, SocketEntry};

/// How a row came and goes: new sockets and closed ones stay marked for a few refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Steady,
    /// Seen for the first time; refreshes left with the mark.
    New(u8),
    /// Gone; refreshes left before the row goes too.
    Gone(u8),
}

/// How many refreshes a new or closed socket stays marked.
pub const MARKED_FOR: u8 = 3;

/// Who holds a socket, as the view shows it (escaped for the terminal once, here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    pub process: String,
    pub cmdline: String,
    pub user: String,
    /// The systemd unit or the container.
    pub unit: String,
}

/// One socket on the screen.
#[derive(Debug, Clone)]
pub struct Row {
    pub proto: Protocol,
    pub local: SocketAddr,
    pub remote: Option<SocketAddr>,
    pub state: SocketState,
    pub inode: u64,
    pub uid: u32,
    /// Shared by every socket of the same owner (one allocation per process, not per row).
    pub holder: Arc<Holder>,
    /// Bytes per second received and sent (acknowledged by the peer); `None` for UDP and
    /// on a socket's first refresh.
    pub rx_rate: Option<f64>,
    pub tx_rate: Option<f64>,
    pub retrans: Option<u32>,
    pub rtt_us: Option<u32>,
    pub mark: Mark,
}

impl Row {
    pub fn is_listening(&self) -> bool {
        self.state.is_listening()
    }

    pub fn exposure(&self) -> Option<Exposure> {
        self.is_listening().then(|| Exposure::of(self.local.ip()))
    }
}

/// What a refresh gives the view.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rows: Vec<Row>,
    /// How long the refresh took (kernel dump, walk, differencing).
    pub took: Duration,
    /// What the inventory had to say (owners hidden, /proc fallback), once each.
    pub warnings: Vec<String>,
    pub rx_rate: f64,
    pub tx_rate: f64,
}

type Key = (Protocol, SocketAddr, Option<SocketAddr>, u64);

fn key(s: &SocketEntry) -> Key {
    (s.proto, s.local, s.remote, s.inode)
}

/// Takes refreshes; remembers owners, counters and marks between them.
#[derive(Debug)]
pub struct Sampler {
    source: portolan_sockets::Source,
    owners: HashMap<u64, Arc<Holder>>,
    last_full: Option<Instant>,
    counters: HashMap<Key, (u64, u64, Instant)>,
    previous: HashMap<Key, Row>,
    marks: HashMap<Key, Mark>,
    first: bool,
}

/// Every owner is looked up again this often.
const FULL_EVERY: Duration = Duration::from_secs(30);

impl Sampler {
    pub fn new(source: portolan_sockets::Source) -> Sampler {
        Sampler {
            source,
            owners: HashMap::new(),
            last_full: None,
            counters: HashMap::new(),
            previous: HashMap::new(),
            marks: HashMap::new(),
            first: true,
        }
    }

    pub fn sample(&mut self) -> Result<Sample, portolan_sockets::SocketsError> {
        let started = Instant::now();
        let full = self.last_full.is_none_or(|t| t.elapsed() >= FULL_EVERY);
        if full {
            self.owners.clear();
            self.last_full = Some(started);
        } else {
            let mut alive: HashMap<u32, bool> = HashMap::new();
            self.owners.retain(|_, h| {
                h.pid.is_none_or(|pid| {
                    *alive
                        .entry(pid)
                        .or_insert_with(|| std::path::Path::new(&format!("/proc/{pid}")).exists())
                })
            });
        }
        let sockets = Inventory::sockets_with_counters(&Query {
            owners: OwnerScan::None,
            source: self.source,
            ..Query::default()
        })?;
        let unknown: Vec<SocketEntry> = sockets
            .iter()
            .filter(|s| s.inode != 0 && !self.owners.contains_key(&s.inode))
            .cloned()
            .collect();
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            let mode = if full {
                OwnerScan::All
            } else {
                OwnerScan::Targeted
            };
            let inv = Inventory::resolve_sockets(unknown, mode);
            // One holder per process (and one per uid for sockets nobody could name).
            let mut by_pid: HashMap<(Option<u32>, u32), Arc<Holder>> = HashMap::new();
            for s in &inv.sockets {
                let pid = inv.owner(s).map(|p| p.pid);
                let h = by_pid
                    .entry((pid, if pid.is_some() { 0 } else { s.uid }))
                    .or_insert_with(|| Arc::new(holder_of(&inv, s)));
                self.owners.insert(s.inode, Arc::clone(h));
            }
            warnings.extend(inv.warnings.iter().map(ToString::to_string));
        }
        let now = Instant::now();
        let mut rows = Vec::with_capacity(sockets.len());
        let mut seen: HashSet<Key> = HashSet::with_capacity(sockets.len());
        let (mut rx_sum, mut tx_sum) = (0.0, 0.0);
        let mut counters = HashMap::with_capacity(sockets.len());
        for s in &sockets {
            let k = key(s);
            seen.insert(k);
            let holder = self.owners.get(&s.inode).cloned().unwrap_or_else(|| {
                Arc::new(Holder {
                    user: s.uid.to_string(),
                    ..Holder::default()
                })
            });
            let (mut rx_rate, mut tx_rate) = (None, None);
            let (retrans, rtt_us) = match &s.tcp {
                Some(c) => {
                    if let Some(&(rx0, tx0, t0)) = self.counters.get(&k) {
                        let dt = now.duration_since(t0).as_secs_f64();
                        if dt > 0.0 {
                            #[expect(clippy::cast_precision_loss, reason = "rates for people")]
                            {
                                rx_rate = Some(c.bytes_received.saturating_sub(rx0) as f64 / dt);
                                tx_rate = Some(c.bytes_acked.saturating_sub(tx0) as f64 / dt);
                            }
                        }
                    }
                    counters.insert(k, (c.bytes_received, c.bytes_acked, now));
                    (Some(c.retrans_total), Some(c.rtt_us))
                }
                None => (None, None),
            };
            rx_sum += rx_rate.unwrap_or(0.0);
            tx_sum += tx_rate.unwrap_or(0.0);
            let mark = if self.first {
                Mark::Steady
            } else if self.previous.contains_key(&k) {
                match self.marks.get(&k) {
                    Some(Mark::New(n)) if *n > 1 => Mark::New(n - 1),
                    _ => Mark::Steady,
                }
            } else {
                Mark::New(MARKED_FOR)
            };
            rows.push(Row {
                proto: s.proto,
                local: s.local,
                remote: s.remote,
                state: s.state,
                inode: s.inode,
                uid: s.uid,
                holder,
                rx_rate,
                tx_rate,
                retrans,
                rtt_us,
                mark,
            });
        }
        // Closed since the last refresh (or still fading): kept, marked, for a few more.
        let mut marks: HashMap<Key, Mark> = rows
            .iter()
            .filter(|r| r.mark != Mark::Steady)
            .map(|r| ((r.proto, r.local, r.remote, r.inode), r.mark))
            .collect();
        for (k, old) in &self.previous {
            if seen.contains(k) {
                continue;
            }
            let left = match old.mark {
                Mark::Gone(n) => n.saturating_sub(1),
                _ => MARKED_FOR,
            };
            if left == 0 {
                continue;
            }
            let mut ghost = old.clone();
            ghost.mark = Mark::Gone(left);
            ghost.rx_rate = None;
            ghost.tx_rate = None;
            marks.insert(*k, ghost.mark);
            rows.push(ghost);
        }
        self.previous = rows
            .iter()
            .map(|r| ((r.proto, r.local, r.remote, r.inode), r.clone()))
            .collect();
        self.marks = marks;
        self.counters = counters;
        self.first = false;
        Ok(Sample {
            rows,
            took: started.elapsed(),
            warnings,
            rx_rate: rx_sum,
            tx_rate: tx_sum,
        })
    }
}

fn holder_of(inv: &Inventory, s: &SocketEntry) -> Holder {
    let (_, user) = inv.user_of(s);
    let cg = inv.cgroup_owner(s);
    let unit = cg
        .and_then(|c| c.unit.as_deref().or(c.container.as_deref()))
        .map(|u| for_terminal(u).into_owned())
        .unwrap_or_default();
    match inv.owner(s) {
        Some(p) => Holder {
            pid: Some(p.pid),
            process: bytes_for_terminal(&p.name),
            cmdline: bytes_for_terminal(&p.cmdline),
            user: user.map_or_else(|| s.uid.to_string(), |u| for_terminal(u).into_owned()),
            unit,
        },
        None => Holder {
            pid: None,
            process: String::new(),
            cmdline: String::new(),
            user: user.map_or_else(|| s.uid.to_string(), |u| for_terminal(u).into_owned()),
            unit,
        },
    }
}
