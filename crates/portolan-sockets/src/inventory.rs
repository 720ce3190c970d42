//! The inventory: a snapshot of sockets joined with their owners.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use portolan_core::{PortSpec, Protocol, StateFilter};

use crate::cgroup::{self, CgroupOwner};
use crate::entry::{Family, SocketEntry, SocketSource};
use crate::netlink::SockDiag;
use crate::owners::{self, ScanMode};
use crate::process::{self, ProcessInfo};
use crate::users::UserNames;
use crate::{procnet, SocketsError};

/// Where socket records come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// sock_diag netlink, falling back to /proc/net when netlink is unavailable.
    #[default]
    Auto,
    Netlink,
    ProcNet,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Auto => "auto",
            Source::Netlink => "netlink",
            Source::ProcNet => "proc",
        }
    }
}

/// How far to go finding the processes that own sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerScan {
    /// Do not look for processes (fastest; uid and cgroup still come from the kernel).
    None,
    /// Every process that holds any of the selected sockets (a full walk of /proc/*/fd).
    #[default]
    All,
    /// Enough to name the holders of a few sockets: processes are visited smallest fd
    /// table first and the walk stops once every socket has an owner, after also visiting
    /// the owners' parents and children (pre-fork workers, socket activation).
    Targeted,
}

/// What to collect. Every filter here runs before the owner walk, so it makes the walk
/// cheaper: the walk looks only for the sockets that are left, and with `pids` or
/// `process` opens only those processes' fd tables.
#[derive(Debug, Clone)]
pub struct Query {
    pub tcp: bool,
    pub udp: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Only listening sockets (TCP LISTEN, UDP unconnected): asked of the kernel directly.
    pub listening_only: bool,
    /// Only sockets in these states: sent to the kernel as sock_diag's state bitmask (the
    /// /proc/net fallback skips other lines while parsing), then matched exactly.
    pub state: Option<StateFilter>,
    /// Only listeners reachable from other machines (all interfaces or a non-loopback
    /// address): [`SocketEntry::is_exposed`].
    pub exposed: bool,
    /// Only sockets whose owner uid, as the kernel records it for the socket (its
    /// creator's, what `ss -e` prints as `uid:`), is this one.
    pub uid: Option<u32>,
    /// Keep sockets whose local or remote port is in this set.
    pub ports: Option<PortSpec>,
    /// Keep only sockets held by these pids; the owner walk visits only them.
    pub pids: Option<Vec<u32>>,
    /// Keep only sockets held by a process with this name (its `comm`, its executable's
    /// file name or its argv\[0\]'s: [`ProcessInfo::matches_name`]). The matching pids are
    /// found first with a few small reads per process, and only their fd tables are walked.
    pub process: Option<String>,
    pub owners: OwnerScan,
    pub source: Source,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            tcp: true,
            udp: true,
            ipv4: true,
            ipv6: true,
            listening_only: false,
            state: None,
            exposed: false,
            uid: None,
            ports: None,
            pids: None,
            process: None,
            owners: OwnerScan::All,
            source: Source::Auto,
        }
    }
}

/// Something the user should know about how complete the answer is. Each kind is
/// reported once, not per socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// Netlink failed and /proc/net was used instead (no cgroup ids, no v6only flags).
    FellBackToProc { reason: String },
    /// Sockets whose owning process could not be read (other users' processes need root).
    OwnersHidden { sockets: usize, processes: usize },
    /// Processes whose fd tables were not opened because portolan itself ran out of file
    /// descriptors (EMFILE): its open-file limit (`limit`, RLIMIT_NOFILE) is too low.
    FdLimit {
        sockets: usize,
        processes: usize,
        limit: Option<u64>,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::FellBackToProc { reason } => write!(
                f,
                "netlink sock_diag is unavailable ({reason}); read /proc/net instead, which has no cgroup or IPV6_V6ONLY information"
            ),
            Warning::OwnersHidden { sockets, processes } if rustix::process::geteuid().is_root() => write!(
                f,
                "{sockets} socket(s) belong to processes whose file descriptors cannot be read even as root ({processes} process(es): another PID namespace, a sandbox or a security module); user and unit still come from the kernel"
            ),
            Warning::FdLimit { sockets, processes, limit } => write!(
                f,
                "{processes} process(es) were not inspected: portolan ran out of file descriptors (EMFILE; its open-file limit is {}), so {sockets} socket(s) may show no owner; raise the limit (`ulimit -n`) and run again",
                limit.map_or_else(|| "unlimited".to_string(), |l| l.to_string())
            ),
            Warning::OwnersHidden { sockets, processes } => write!(
                f,
                "{sockets} socket(s) belong to processes this user may not inspect ({processes} process(es) unreadable); run as root to see their pids. User and unit still come from the kernel."
            ),
        }
    }
}

/// A snapshot of sockets and everything known about who owns them.
#[derive(Debug, Default)]
pub struct Inventory {
    pub sockets: Vec<SocketEntry>,
    /// Details of every owning process, by pid.
    pub processes: BTreeMap<u32, ProcessInfo>,
    /// Owners by cgroup v2 id, for sockets whose process could not be read.
    pub cgroups: HashMap<u64, CgroupOwner>,
    pub users: UserNames,
    /// The source actually used.
    pub source: Option<Source>,
    pub warnings: Vec<Warning>,
    /// How far the owner walk went.
    pub walk: WalkStats,
}

/// What the owner walk did, so a caller (and a test) can see that the query's filters
/// bounded it rather than trimmed its result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Sockets whose owners were looked for (TIME-WAIT and SYN-RECV mini-sockets, which
    /// no process holds, are not).
    pub sockets_sought: usize,
    /// Processes whose fd tables were opened.
    pub fd_tables: usize,
    /// File-descriptor links read.
    pub fd_links: usize,
    /// Processes whose details were read (the owners of the sockets kept).
    pub processes_read: usize,
}

/// Kernel state mask for every TCP state (bits 1..=12).
const ALL_STATES: u32 = 0x1ffe;
const LISTEN_STATES: u32 = (1 << 10) | (1 << 7);

impl Inventory {
    /// Collects sockets as `query` asks, from the live kernel.
    pub fn collect(query: &Query) -> Result<Inventory, SocketsError> {
        let mut inv = Inventory::default();
        let (sockets, source) = dump_all(query, SockDiag::PLAIN, &mut inv.warnings)?;
        inv.sockets = sockets;
        inv.source = Some(source);
        inv.resolve(query);
        Ok(inv)
    }

    /// Collects from a given source (the seam tests use). The source is recorded as
    /// `query.source`, since the caller chose it.
    pub fn collect_from(src: &dyn SocketSource, query: &Query) -> Result<Inventory, SocketsError> {
        let mut inv = Inventory {
            sockets: dump_with(src, query)?,
            source: Some(query.source),
            ..Inventory::default()
        };
        inv.resolve(query);
        Ok(inv)
    }

    /// Only the sockets `query` selects (protocol, family, listening, state, exposure,
    /// uid, ports), from the live kernel through `query.source`: no owner walk, no user
    /// names, no cgroup resolution, so it is cheap enough to poll. `query.owners`,
    /// `query.pids` and `query.process` are ignored.
    pub fn sockets_only(query: &Query) -> Result<Vec<SocketEntry>, SocketsError> {
        let mut warnings = Vec::new();
        let (sockets, _) = dump_all(query, SockDiag::PLAIN, &mut warnings)?;
        Ok(filter_entries(sockets, query))
    }

    /// [`Inventory::sockets_only`], with each TCP socket's traffic counters
    /// ([`SocketEntry::tcp`]: bytes acknowledged and received, retransmissions, RTT) from
    /// the kernel's `tcp_info`, for a live view that polls and subtracts. The same dumps
    /// and request paths, each TCP request also asking sock_diag for `INET_DIAG_INFO`,
    /// which needs no privilege (the kernel gives it for every user's sockets).
    /// `Query::default()` asks for every TCP socket in every state and every UDP socket,
    /// in both families; for owners, hand the sockets to [`Inventory::resolve_sockets`].
    ///
    /// Cost: about 250 more bytes per TCP socket across netlink, and the kernel's time to
    /// fill them; beside 100,000 TCP sockets a poll took about 108 ms instead of 93 ms
    /// (`examples/counters_cost.rs`). UDP sockets, TIME-WAIT and SYN-RECV mini-sockets,
    /// and everything read from /proc/net (the fallback of [`Source::Auto`], or
    /// [`Source::ProcNet`]) have `tcp: None`.
    pub fn sockets_with_counters(query: &Query) -> Result<Vec<SocketEntry>, SocketsError> {
        let mut warnings = Vec::new();
        let (sockets, _) = dump_all(query, SockDiag::WITH_COUNTERS, &mut warnings)?;
        Ok(filter_entries(sockets, query))
    }

    /// [`Inventory::sockets_only`] from a given source (the seam tests use).
    pub fn sockets_only_from(
        src: &dyn SocketSource,
        query: &Query,
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        Ok(filter_entries(dump_with(src, query)?, query))
    }

    /// Owners for sockets the caller already holds (a watcher's new listeners since its
    /// last poll): the same owner walk, process, cgroup and user resolution as
    /// [`Inventory::collect`], without asking the kernel for sockets again.
    pub fn resolve_sockets(sockets: Vec<SocketEntry>, owners: OwnerScan) -> Inventory {
        let mut inv = Inventory {
            sockets,
            ..Inventory::default()
        };
        inv.resolve(&Query {
            owners,
            ..Query::default()
        });
        inv
    }

    fn resolve(&mut self, query: &Query) {
        self.sockets = filter_entries(std::mem::take(&mut self.sockets), query);
        // The processes to walk: --pid, narrowed by --process (found by name first, with
        // a few small reads per process, so only their fd tables are opened).
        let only: Option<Vec<u32>> = match (&query.pids, query.process.as_deref()) {
            (pids, None) => pids.clone(),
            (None, Some(name)) => Some(process::pids_named(name)),
            (Some(pids), Some(name)) => Some(
                pids.iter()
                    .copied()
                    .filter(|&p| process::answers_to(p, name))
                    .collect(),
            ),
        };
        if query.owners != OwnerScan::None || only.is_some() {
            let wanted: HashSet<u64> = self
                .sockets
                .iter()
                .map(|s| s.inode)
                .filter(|&i| i != 0)
                .collect();
            let mode = match query.owners {
                OwnerScan::Targeted => ScanMode::Targeted,
                _ => ScanMode::All,
            };
            let map = owners::scan(&wanted, mode, only.as_deref());
            self.walk = WalkStats {
                sockets_sought: wanted.len(),
                fd_tables: map.tables,
                fd_links: map.links,
                processes_read: 0,
            };
            let mut hidden = 0;
            for s in &mut self.sockets {
                if let Some(pids) = map.by_inode.get(&s.inode) {
                    s.pids.clone_from(pids);
                } else if s.inode != 0 {
                    hidden += 1;
                }
            }
            if only.is_some() {
                self.sockets.retain(|s| !s.pids.is_empty());
            } else if hidden > 0 {
                // Each cause named as what it is: our own descriptor limit is not another
                // PID namespace.
                if !map.fd_limited.is_empty() {
                    self.warnings.push(Warning::FdLimit {
                        sockets: hidden,
                        processes: map.fd_limited.len(),
                        limit: rustix::process::getrlimit(rustix::process::Resource::Nofile)
                            .current,
                    });
                }
                if !map.unreadable.is_empty() {
                    self.warnings.push(Warning::OwnersHidden {
                        sockets: hidden,
                        processes: map.unreadable.len(),
                    });
                }
            }
            let pids: HashSet<u32> = self
                .sockets
                .iter()
                .flat_map(|s| s.pids.iter().copied())
                .collect();
            self.walk.processes_read = pids.len();
            for pid in pids {
                if let Some(info) = process::read(pid) {
                    self.processes.insert(pid, info);
                }
            }
        }
        // User names for every uid shown: the sockets' and their processes', each looked
        // up once through NSS.
        self.users.resolve(
            self.sockets
                .iter()
                .map(|s| s.uid)
                .chain(self.processes.values().map(|p| p.uid)),
        );
        // Sockets with no readable owner: name their unit from the kernel's cgroup id.
        let ids: HashSet<u64> = self
            .sockets
            .iter()
            .filter(|s| s.pids.is_empty())
            .filter_map(|s| s.cgroup_id)
            .collect();
        if !ids.is_empty() {
            for (id, path) in cgroup::resolve_ids(&ids) {
                self.cgroups.insert(id, cgroup::classify_cgroup(&path));
            }
        }
    }

    /// The first (lowest pid) owning process of a socket, if known.
    pub fn owner(&self, s: &SocketEntry) -> Option<&ProcessInfo> {
        s.pids.iter().find_map(|p| self.processes.get(p))
    }

    /// Every known owning process of a socket.
    pub fn owners<'a>(&'a self, s: &'a SocketEntry) -> impl Iterator<Item = &'a ProcessInfo> + 'a {
        s.pids.iter().filter_map(|p| self.processes.get(p))
    }

    /// The unit/container owning a socket: from its process when known, else from the
    /// cgroup the kernel recorded for the socket.
    pub fn cgroup_owner(&self, s: &SocketEntry) -> Option<&CgroupOwner> {
        self.owner(s)
            .and_then(|p| p.cgroup.as_ref())
            .or_else(|| s.cgroup_id.and_then(|id| self.cgroups.get(&id)))
    }

    /// The user owning a socket: the owner process's user, else the socket's uid.
    pub fn user_of(&self, s: &SocketEntry) -> (u32, Option<&str>) {
        let uid = self.owner(s).map_or(s.uid, |p| p.uid);
        (uid, self.users.name(uid))
    }
}

/// The query's per-socket filters, applied to what a source returned (a source may
/// return more than asked: the port and state hints are only hints).
fn filter_entries(mut sockets: Vec<SocketEntry>, query: &Query) -> Vec<SocketEntry> {
    sockets.retain(|s| {
        query.ports.as_ref().is_none_or(|p| s.matches_ports(p))
            && query.state.is_none_or(|f| f.matches(s.state))
            && (!query.exposed || s.is_exposed())
            && query.uid.is_none_or(|u| s.uid == u)
    });
    sockets
}

/// The kernel state bits (`1 << code`, sock_diag's `idiag_states`) of every state of
/// `proto` that `filter` keeps. SYN-RECV has two codes: 3, and 12 for request sockets;
/// a UDP socket is only ever connected (1) or not (7).
fn state_mask(proto: Protocol, filter: StateFilter) -> u32 {
    (1..=12u8)
        .filter(|&code| proto != Protocol::Udp || code == 1 || code == 7)
        .filter(|&code| {
            portolan_core::SocketState::from_kernel(proto, code).is_some_and(|s| filter.matches(s))
        })
        .fold(0, |m, code| m | (1 << code))
}

/// The dumps a query needs: protocol, family (`None`: both, which a source may serve in
/// one pass) and kernel state mask.
fn wanted_dumps(query: &Query) -> Vec<(Protocol, Option<Family>, u32)> {
    let mut v = Vec::new();
    let base = if query.listening_only {
        LISTEN_STATES
    } else {
        ALL_STATES
    };
    for (on, proto) in [(query.tcp, Protocol::Tcp), (query.udp, Protocol::Udp)] {
        let states = base & query.state.map_or(ALL_STATES, |f| state_mask(proto, f));
        // No state of this protocol can match (`--state listen` for UDP): no dump at all.
        if !on || states == 0 {
            continue;
        }
        match (query.ipv4, query.ipv6) {
            (true, true) => v.push((proto, None, states)),
            (true, false) => v.push((proto, Some(Family::Ipv4), states)),
            (false, true) => v.push((proto, Some(Family::Ipv6), states)),
            (false, false) => {}
        }
    }
    v
}

fn dump_with(src: &dyn SocketSource, query: &Query) -> Result<Vec<SocketEntry>, SocketsError> {
    let mut out = Vec::new();
    for (proto, fam, states) in wanted_dumps(query) {
        // A single port is filtered in the kernel: only matching sockets cross netlink.
        let port = query.ports.as_ref().and_then(|s| match s.ranges() {
            [r] if r.len() == 1 => Some(r.start()),
            _ => None,
        });
        let mut part = match fam {
            Some(fam) => src.dump(proto, fam, states, port)?,
            None => src.dump_both_families(proto, states, port)?,
        };
        if query.listening_only {
            part.retain(|s| s.state.is_listening());
        }
        // The first part becomes the result as it is: appending it to an empty vector
        // would hold two copies of the largest dump (100,000 TCP sockets) at once.
        if out.is_empty() {
            out = part;
        } else {
            out.append(&mut part);
        }
    }
    Ok(out)
}

/// The dumps of `query` from its source, sock_diag asked through `diag`.
fn dump_all(
    query: &Query,
    diag: SockDiag,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<SocketEntry>, Source), SocketsError> {
    match query.source {
        Source::Netlink => Ok((dump_with(&diag, query)?, Source::Netlink)),
        Source::ProcNet => Ok((
            dump_with(&procnet::ProcNet::system(), query)?,
            Source::ProcNet,
        )),
        Source::Auto => match dump_with(&diag, query) {
            Ok(v) => Ok((v, Source::Netlink)),
            Err(e) => {
                warnings.push(Warning::FellBackToProc {
                    reason: e.to_string(),
                });
                Ok((
                    dump_with(&procnet::ProcNet::system(), query)?,
                    Source::ProcNet,
                ))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portolan_core::{Port, PortRange, SocketState};
    use std::net::SocketAddr;

    /// A source returning fixed sockets, ignoring the kernel-side hints.
    struct Fixed(Vec<SocketEntry>);

    impl SocketSource for Fixed {
        fn dump(
            &self,
            proto: Protocol,
            family: Family,
            _states: u32,
            _port: Option<Port>,
        ) -> Result<Vec<SocketEntry>, SocketsError> {
            Ok(self
                .0
                .iter()
                .filter(|s| s.proto == proto && s.family == family)
                .cloned()
                .collect())
        }
    }

    fn entry(port: u16, state: SocketState, inode: u64) -> SocketEntry {
        SocketEntry {
            proto: Protocol::Tcp,
            family: Family::Ipv4,
            local: SocketAddr::from(([127, 0, 0, 1], port)),
            remote: None,
            state,
            recv_q: 0,
            send_q: 0,
            uid: 0,
            inode,
            cgroup_id: None,
            v6only: None,
            interface: 0,
            pids: Vec::new(),
            tcp: None,
        }
    }

    fn listeners_on(port: u16) -> Query {
        Query {
            udp: false,
            listening_only: true,
            ports: Some(PortSpec::from_ranges(vec![PortRange::single(Port::new(
                port,
            ))])),
            owners: OwnerScan::None,
            source: Source::ProcNet,
            ..Query::default()
        }
    }

    #[test]
    fn sockets_only_applies_the_query_filters() {
        let src = Fixed(vec![
            entry(8080, SocketState::Listen, 1),
            entry(8081, SocketState::Listen, 2),
            entry(8080, SocketState::Established, 3),
        ]);
        let got = Inventory::sockets_only_from(&src, &listeners_on(8080)).unwrap();
        assert_eq!(got.iter().map(|s| s.inode).collect::<Vec<_>>(), [1]);
        assert!(Inventory::sockets_only_from(&src, &listeners_on(9))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn filters_run_before_the_owner_walk() {
        let mut exposed = entry(8082, SocketState::Listen, 4);
        exposed.local = SocketAddr::from(([0, 0, 0, 0], 8082));
        exposed.uid = 1000;
        let src = Fixed(vec![
            entry(8080, SocketState::Listen, 1),
            entry(8080, SocketState::Established, 2),
            entry(8081, SocketState::Established, 3),
            exposed,
        ]);
        let all = Inventory::collect_from(&src, &Query::default()).unwrap();
        assert_eq!(all.walk.sockets_sought, 4);
        // The source ignores the state mask (as /proc/net would return every line): the
        // filter must still run before the walk, which then looks for 2 sockets, not 4.
        let q = Query {
            state: Some(StateFilter::One(SocketState::Established)),
            ..Query::default()
        };
        let inv = Inventory::collect_from(&src, &q).unwrap();
        assert_eq!(inv.walk.sockets_sought, 2);
        assert!(inv
            .sockets
            .iter()
            .all(|s| s.state == SocketState::Established));
        for q in [
            Query {
                exposed: true,
                ..Query::default()
            },
            Query {
                uid: Some(1000),
                ..Query::default()
            },
        ] {
            let inv = Inventory::collect_from(&src, &q).unwrap();
            assert_eq!(inv.walk.sockets_sought, 1, "{q:?}");
            assert_eq!(inv.sockets.len(), 1);
            assert_eq!(inv.sockets[0].inode, 4);
        }
    }

    #[test]
    fn process_filter_walks_only_the_named_processes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = process::read(std::process::id()).unwrap();
        let named = process::pids_named(&me.name_text());
        let q = Query {
            udp: false,
            ports: Some(PortSpec::from_ranges(vec![PortRange::single(Port::new(
                port,
            ))])),
            process: Some(me.name_text()),
            source: Source::Netlink,
            ..Query::default()
        };
        let inv = Inventory::collect(&q).unwrap();
        // Only the processes with our name (give or take one that started or exited in
        // between: another run of this test binary), never the whole of /proc.
        assert!(
            inv.walk.fd_tables >= 1 && inv.walk.fd_tables <= named.len() + 1,
            "{:?} for {} named process(es)",
            inv.walk,
            named.len()
        );
        assert!(inv.walk.fd_tables < owners::all_pids().len());
        assert_eq!(inv.sockets.len(), 1);
        assert_eq!(inv.sockets[0].pids, vec![me.pid]);
        // Details are read for the owners kept, here only this process.
        assert_eq!(inv.walk.processes_read, 1);
        // A name nobody has: no fd table is opened, nothing is listed.
        let none = Inventory::collect(&Query {
            process: Some("no-such-process-name-here".into()),
            ..q
        })
        .unwrap();
        assert_eq!(none.walk.fd_tables, 0);
        assert_eq!(none.walk.processes_read, 0);
        assert!(none.sockets.is_empty());
    }

    #[test]
    fn state_masks() {
        let est = StateFilter::One(SocketState::Established);
        assert_eq!(state_mask(Protocol::Tcp, est), 1 << 1);
        assert_eq!(
            state_mask(Protocol::Tcp, StateFilter::One(SocketState::SynRecv)),
            (1 << 3) | (1 << 12)
        );
        assert_eq!(
            state_mask(Protocol::Udp, StateFilter::One(SocketState::Listen)),
            0
        );
        assert_eq!(
            state_mask(Protocol::Udp, StateFilter::One(SocketState::Unconn)),
            1 << 7
        );
        assert_eq!(
            state_mask(Protocol::Udp, StateFilter::One(SocketState::Close)),
            0
        );
        assert_eq!(state_mask(Protocol::Tcp, StateFilter::All), ALL_STATES);
        // `--state listen` asks no UDP dump at all.
        let q = Query {
            state: Some(StateFilter::One(SocketState::Listen)),
            ..Query::default()
        };
        assert_eq!(wanted_dumps(&q), [(Protocol::Tcp, None, 1 << 10)]);
    }

    #[test]
    fn collect_from_records_the_source() {
        let src = Fixed(vec![entry(8080, SocketState::Listen, 1)]);
        let inv = Inventory::collect_from(&src, &listeners_on(8080)).unwrap();
        assert_eq!(inv.source, Some(Source::ProcNet));
        assert_eq!(inv.sockets.len(), 1);
    }
}
