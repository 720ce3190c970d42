//! One sample of this machine's listeners, cheap enough to take every two seconds.
//!
//! The kernel lists listening sockets over sock_diag in a few milliseconds; what costs is
//! naming their owners (a walk of /proc/*/fd). A socket keeps its inode for its whole life,
//! so an owner found once is remembered by inode: each sample walks only for sockets that
//! are new since the last one, checks that remembered owners are still alive, and every
//! `refresh` walks for all sockets again (a socket can change hands: fd passing, a parent
//! that exits after forking).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use portolan_core::Exposure;
use portolan_sockets::{Inventory, OwnerScan, Query, SocketEntry, SocketsError};

use crate::model::{Listener, Owner};

/// Takes samples; remembers owners between them.
#[derive(Debug)]
pub struct Sampler {
    query: Query,
    /// Owner by socket inode.
    owners: HashMap<u64, Owner>,
    refresh: Duration,
    last_full: Option<Instant>,
}

impl Sampler {
    /// A sampler of TCP and UDP listeners on IPv4 and IPv6 that re-reads every owner at
    /// least every `refresh`.
    pub fn new(refresh: Duration) -> Sampler {
        Sampler {
            query: Query {
                listening_only: true,
                owners: OwnerScan::None,
                ..Query::default()
            },
            owners: HashMap::new(),
            refresh,
            last_full: None,
        }
    }

    /// This moment's listeners, one per socket, with their owners.
    pub fn sample(&mut self) -> Result<Vec<Listener>, SocketsError> {
        let full = self.last_full.is_none_or(|t| t.elapsed() >= self.refresh);
        if full {
            self.owners.clear();
            self.last_full = Some(Instant::now());
        } else {
            // An owner that exited (its socket now held by a child, say) is looked up
            // again. Checked before the kernel lists the sockets: checked after, a process
            // that exits in between would leave its socket in the list with no owner to
            // find, and a listener closing would read as an owner change.
            let mut alive: HashMap<u32, bool> = HashMap::new();
            self.owners.retain(|_, o| {
                o.pid.is_none_or(|pid| {
                    *alive
                        .entry(pid)
                        .or_insert_with(|| std::path::Path::new(&format!("/proc/{pid}")).exists())
                })
            });
        }
        let mut sockets = Inventory::sockets_only(&self.query)?;
        if !full {
            let live: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
            self.owners.retain(|inode, _| live.contains(inode));
        }
        let unknown: Vec<SocketEntry> = sockets
            .iter()
            .filter(|s| !self.owners.contains_key(&s.inode))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let mode = if full {
                OwnerScan::All
            } else {
                OwnerScan::Targeted
            };
            let inv = Inventory::resolve_sockets(unknown, mode);
            let mut unowned: HashMap<u64, Owner> = HashMap::new();
            for s in &inv.sockets {
                let owner = inv.listener_owner(s);
                if owner.pid.is_some() {
                    self.owners.insert(s.inode, owner);
                } else {
                    unowned.insert(s.inode, owner);
                }
            }
            if !unowned.is_empty() {
                // A socket the kernel listed whose holder the walk did not find either
                // closed between the listing and the walk, or its holder is out of sight
                // (another user's process without the privilege to look, another PID
                // namespace). A second look tells which: a socket closed for good is
                // still absent (inodes are never reused while a socket lives), and is left
                // out of this sample, as the kernel would list it now; one still listed
                // existed all through the walk, so its owner really is unknown.
                let now: HashSet<u64> = Inventory::sockets_only(&self.query)?
                    .iter()
                    .map(|s| s.inode)
                    .collect();
                sockets.retain(|s| !unowned.contains_key(&s.inode) || now.contains(&s.inode));
                for (inode, owner) in unowned {
                    if now.contains(&inode) {
                        self.owners.insert(inode, owner);
                    }
                }
            }
        }
        Ok(sockets
            .iter()
            .map(|s| Listener {
                proto: s.proto,
                address: s.local.ip(),
                port: s.local.port(),
                exposure: s.exposure().unwrap_or(Exposure::Specific),
                owner: self.owners.get(&s.inode).cloned().unwrap_or(Owner {
                    uid: s.uid,
                    ..Owner::default()
                }),
            })
            .collect())
    }
}
