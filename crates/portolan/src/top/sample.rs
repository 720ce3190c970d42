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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
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
    /// Shared with the sampler, which finds closed sockets' last rows in it.
    pub rows: Arc<Vec<Row>>,
    /// How long the refresh took (kernel dump, walk, differencing).
    pub took: Duration,
    /// What the inventory had to say (owners hidden, /proc fallback), once each.
    pub warnings: Vec<String>,
    pub rx_rate: f64,
    pub tx_rate: f64,
}

/// A socket's identity across refreshes: its inode (unique while it lives) or, for the
/// mini-sockets no process holds (TIME-WAIT, SYN-RECV: inode 0), a hash of its addresses
/// with the top bit set.
type Key = u128;

fn key(s: &SocketEntry) -> Key {
    if s.inode != 0 {
        return u128::from(s.inode) | (u128::from(s.proto == Protocol::Udp) << 64);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (s.proto.as_str(), s.local, s.remote).hash(&mut h);
    (1u128 << 127) | u128::from(h.finish())
}

/// A multiply-and-fold hasher for [`Key`]s (kernel inodes, not chosen by anyone who could
/// aim collisions at a map): the maps here take 100,000 lookups a refresh, and SipHash
/// was a tenth of the view's CPU.
#[derive(Debug, Default, Clone, Copy)]
struct Fold(u64);

impl Hasher for Fold {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u128(&mut self, v: u128) {
        #[expect(clippy::cast_possible_truncation, reason = "the two halves")]
        {
            self.write_u64(v as u64);
            self.write_u64((v >> 64) as u64);
        }
    }
}

type FoldMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fold>>;

/// What the sampler remembers of a socket between refreshes.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Bytes received and acknowledged at the last reading, and when.
    rx: u64,
    tx: u64,
    at: Instant,
    mark: Mark,
    /// The refresh that last saw it, and its row there.
    generation: u64,
    row: usize,
}

/// Takes refreshes; remembers owners, counters and marks between them.
#[derive(Debug)]
pub struct Sampler {
    source: portolan_sockets::Source,
    owners: FoldMap<u64, Arc<Holder>>,
    last_full: Option<Instant>,
    seen: FoldMap<Key, Seen>,
    /// The last refresh's rows (shared with the view, never copied), for closed sockets.
    previous: Arc<Vec<Row>>,
    generation: u64,
}

/// Every owner is looked up again this often.
const FULL_EVERY: Duration = Duration::from_secs(30);

impl Sampler {
    pub fn new(source: portolan_sockets::Source) -> Sampler {
        Sampler {
            source,
            owners: FoldMap::default(),
            last_full: None,
            seen: FoldMap::default(),
            previous: Arc::new(Vec::new()),
            generation: 0,
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
        let first = self.generation == 0;
        self.generation += 1;
        let generation = self.generation;
        let now = Instant::now();
        let mut nobody: FoldMap<u32, Arc<Holder>> = FoldMap::default();
        let mut rows = Vec::with_capacity(sockets.len() + 64);
        let (mut rx_sum, mut tx_sum) = (0.0, 0.0);
        for s in &sockets {
            let k = key(s);
            let holder = match self.owners.get(&s.inode) {
                Some(h) => Arc::clone(h),
                None => Arc::clone(nobody.entry(s.uid).or_insert_with(|| {
                    Arc::new(Holder {
                        user: s.uid.to_string(),
                        ..Holder::default()
                    })
                })),
            };
            let before = self.seen.get(&k).copied();
            let (mut rx_rate, mut tx_rate) = (None, None);
            let (rx, tx, retrans, rtt_us) = match &s.tcp {
                Some(c) => {
                    if let Some(b) = before.filter(|b| b.generation + 1 == generation) {
                        let dt = now.duration_since(b.at).as_secs_f64();
                        if dt > 0.0 {
                            #[expect(clippy::cast_precision_loss, reason = "rates for people")]
                            {
                                rx_rate = Some(c.bytes_received.saturating_sub(b.rx) as f64 / dt);
                                tx_rate = Some(c.bytes_acked.saturating_sub(b.tx) as f64 / dt);
                            }
                        }
                    }
                    (
                        c.bytes_received,
                        c.bytes_acked,
                        Some(c.retrans_total),
                        Some(c.rtt_us),
                    )
                }
                None => (0, 0, None, None),
            };
            rx_sum += rx_rate.unwrap_or(0.0);
            tx_sum += tx_rate.unwrap_or(0.0);
            let mark = match before {
                _ if first => Mark::Steady,
                None => Mark::New(MARKED_FOR),
                Some(b) => match b.mark {
                    Mark::New(n) if n > 1 => Mark::New(n - 1),
                    _ => Mark::Steady,
                },
            };
            self.seen.insert(
                k,
                Seen {
                    rx,
                    tx,
                    at: now,
                    mark,
                    generation,
                    row: rows.len(),
                },
            );
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
        let previous = Arc::clone(&self.previous);
        let mut ghosts = Vec::new();
        self.seen.retain(|_, seen| {
            if seen.generation == generation {
                return true;
            }
            if seen.generation + 1 != generation {
                return false;
            }
            let left = match seen.mark {
                Mark::Gone(n) => n.saturating_sub(1),
                _ => MARKED_FOR,
            };
            let Some(old) = previous.get(seen.row) else {
                return false;
            };
            if left == 0 {
                return false;
            }
            let mut ghost = old.clone();
            ghost.mark = Mark::Gone(left);
            ghost.rx_rate = None;
            ghost.tx_rate = None;
            seen.mark = ghost.mark;
            seen.generation = generation;
            seen.row = rows.len() + ghosts.len();
            ghosts.push(ghost);
            true
        });
        rows.extend(ghosts);
        let rows = Arc::new(rows);
        self.previous = Arc::clone(&rows);
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
