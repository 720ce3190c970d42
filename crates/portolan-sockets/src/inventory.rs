//! The inventory: a snapshot of sockets joined with their owners.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;

use portolan_core::{Exposure, Port, PortSpec, Protocol, SocketState, StackScope};

use crate::cgroup::{self, CgroupOwner};
use crate::owners::{self, ScanMode};
use crate::process::{self, ProcessInfo};
use crate::users::UserNames;
use crate::{netlink, procnet, SocketsError};

/// IP address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// One socket, as the kernel reports it, with the pids of the processes holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEntry {
    pub proto: Protocol,
    pub family: Family,
    pub local: SocketAddr,
    /// `None` when the peer is unspecified (listening or unconnected sockets).
    pub remote: Option<SocketAddr>,
    pub state: SocketState,
    /// Bytes waiting to be read; for a listener, connections waiting to be accepted.
    pub recv_q: u32,
    /// Bytes not yet acknowledged; for a listener, the accept backlog.
    pub send_q: u32,
    /// The socket's owner uid, from the kernel (known even when the process is not).
    pub uid: u32,
    /// Socket inode; 0 for TIME-WAIT and SYN-RECV mini-sockets, which no process holds.
    pub inode: u64,
    /// The cgroup v2 id the socket was created in (sock_diag only).
    pub cgroup_id: Option<u64>,
    /// `IPV6_V6ONLY`, for IPv6 sockets (sock_diag only).
    pub v6only: Option<bool>,
    /// Interface the socket is bound to (`SO_BINDTODEVICE`), 0 for none.
    pub interface: u32,
    /// Pids of the processes holding this socket, ascending. Empty when unknown.
    pub pids: Vec<u32>,
}

impl SocketEntry {
    /// Exposure of a listening socket (TCP LISTEN, bound unconnected UDP); `None` otherwise.
    pub fn exposure(&self) -> Option<Exposure> {
        self.state
            .is_listening()
            .then(|| Exposure::of(self.local.ip()))
    }

    /// For wildcard listeners, which families they accept.
    pub fn stack(&self) -> Option<StackScope> {
        self.state
            .is_listening()
            .then(|| Exposure::stack(self.local.ip(), self.v6only))
            .flatten()
    }

    fn matches_ports(&self, ports: &PortSpec) -> bool {
        ports.contains(self.local.port().into())
            || self.remote.is_some_and(|r| ports.contains(r.port().into()))
    }
}

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

/// What to collect. Filters here run before the owner walk, so they make it cheaper.
#[derive(Debug, Clone)]
pub struct Query {
    pub tcp: bool,
    pub udp: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Only listening sockets (TCP LISTEN, UDP unconnected): asked of the kernel directly.
    pub listening_only: bool,
    /// Keep sockets whose local or remote port is in this set.
    pub ports: Option<PortSpec>,
    /// Keep only sockets held by these pids; the owner walk visits only them.
    pub pids: Option<Vec<u32>>,
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
            ports: None,
            pids: None,
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
            Warning::OwnersHidden { sockets, processes } => write!(
                f,
                "{sockets} socket(s) belong to processes this user may not inspect ({processes} process(es) unreadable); run as root to see their pids. User and unit still come from the kernel."
            ),
        }
    }
}

/// The seam between the inventory logic and the kernel: something that lists sockets.
pub trait SocketSource {
    /// All sockets of one protocol and family whose kernel state bit is set in `states`.
    /// `port` is a hint: a source that can filter in the kernel returns only sockets whose
    /// local or remote port is `port`; others may return more (the caller filters again).
    fn dump(
        &self,
        proto: Protocol,
        family: Family,
        states: u32,
        port: Option<Port>,
    ) -> Result<Vec<SocketEntry>, SocketsError>;
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
}

/// Kernel state mask for every TCP state (bits 1..=12).
const ALL_STATES: u32 = 0x1ffe;
const LISTEN_STATES: u32 = (1 << 10) | (1 << 7);

impl Inventory {
    /// Collects sockets as `query` asks, from the live kernel.
    pub fn collect(query: &Query) -> Result<Inventory, SocketsError> {
        let mut inv = Inventory::default();
        let (sockets, source) = dump_all(query, &mut inv.warnings)?;
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

    /// Only the sockets `query` selects (protocol, family, listening, ports), from the live
    /// kernel through `query.source`: no owner walk, no user names, no cgroup resolution,
    /// so it is cheap enough to poll. `query.owners` and `query.pids` are ignored.
    pub fn sockets_only(query: &Query) -> Result<Vec<SocketEntry>, SocketsError> {
        let mut warnings = Vec::new();
        let (sockets, _) = dump_all(query, &mut warnings)?;
        Ok(filter_ports(sockets, query))
    }

    /// [`Inventory::sockets_only`] from a given source (the seam tests use).
    pub fn sockets_only_from(
        src: &dyn SocketSource,
        query: &Query,
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        Ok(filter_ports(dump_with(src, query)?, query))
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
        self.sockets = filter_ports(std::mem::take(&mut self.sockets), query);
        self.users = UserNames::load();
        if query.owners != OwnerScan::None || query.pids.is_some() {
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
            let map = owners::scan(&wanted, mode, query.pids.as_deref());
            let mut hidden = 0;
            for s in &mut self.sockets {
                if let Some(pids) = map.by_inode.get(&s.inode) {
                    s.pids.clone_from(pids);
                } else if s.inode != 0 {
                    hidden += 1;
                }
            }
            if query.pids.is_some() {
                self.sockets.retain(|s| !s.pids.is_empty());
            } else if hidden > 0 && !map.unreadable.is_empty() {
                self.warnings.push(Warning::OwnersHidden {
                    sockets: hidden,
                    processes: map.unreadable.len(),
                });
            }
            let pids: HashSet<u32> = self
                .sockets
                .iter()
                .flat_map(|s| s.pids.iter().copied())
                .collect();
            for pid in pids {
                if let Some(info) = process::read(pid) {
                    self.processes.insert(pid, info);
                }
            }
        }
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

fn filter_ports(mut sockets: Vec<SocketEntry>, query: &Query) -> Vec<SocketEntry> {
    if let Some(ports) = &query.ports {
        sockets.retain(|s| s.matches_ports(ports));
    }
    sockets
}

fn wanted_dumps(query: &Query) -> Vec<(Protocol, Family, u32)> {
    let mut v = Vec::new();
    let states = if query.listening_only {
        LISTEN_STATES
    } else {
        ALL_STATES
    };
    for (on, proto) in [(query.tcp, Protocol::Tcp), (query.udp, Protocol::Udp)] {
        if !on {
            continue;
        }
        for (on_f, fam) in [(query.ipv4, Family::Ipv4), (query.ipv6, Family::Ipv6)] {
            if on_f {
                v.push((proto, fam, states));
            }
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
        let mut part = src.dump(proto, fam, states, port)?;
        if query.listening_only {
            part.retain(|s| s.state.is_listening());
        }
        out.append(&mut part);
    }
    Ok(out)
}

fn dump_all(
    query: &Query,
    warnings: &mut Vec<Warning>,
) -> Result<(Vec<SocketEntry>, Source), SocketsError> {
    match query.source {
        Source::Netlink => Ok((dump_with(&netlink::Netlink, query)?, Source::Netlink)),
        Source::ProcNet => Ok((
            dump_with(&procnet::ProcNet::system(), query)?,
            Source::ProcNet,
        )),
        Source::Auto => match dump_with(&netlink::Netlink, query) {
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
    use portolan_core::PortRange;

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
    fn collect_from_records_the_source() {
        let src = Fixed(vec![entry(8080, SocketState::Listen, 1)]);
        let inv = Inventory::collect_from(&src, &listeners_on(8080)).unwrap();
        assert_eq!(inv.source, Some(Source::ProcNet));
        assert_eq!(inv.sockets.len(), 1);
    }
}
