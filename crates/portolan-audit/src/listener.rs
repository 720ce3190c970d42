//! The audit's view of one listening socket and its owner, built from the inventory with
//! every string escaped once, here, so nothing downstream can forget it.

use std::net::SocketAddr;

use portolan_core::escape::for_terminal;
use portolan_core::{Exposure, Protocol};
use portolan_sockets::{Inventory, SocketEntry};
use serde::Serialize;

/// Who owns a listening socket. Strings are escaped for a terminal (they came from /proc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: Option<u32>,
    /// The kernel's short command name.
    pub process: Option<String>,
    /// Executable path.
    pub exe: Option<String>,
    /// True when the executable was deleted or replaced since the process started.
    pub exe_deleted: bool,
    pub uid: u32,
    pub user: Option<String>,
    /// The systemd unit, from the cgroup.
    pub unit: Option<String>,
    /// A container, as `runtime:short-id`.
    pub container: Option<String>,
}

/// One listening socket (TCP in LISTEN, or an unconnected UDP socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub proto: Protocol,
    /// The bound local address and port.
    pub addr: SocketAddr,
    /// `IPV6_V6ONLY`, when known.
    pub v6only: Option<bool>,
    pub owner: Owner,
}

/// `s` escaped for a terminal, owned (what a finding or an owner holds).
pub(crate) fn esc(s: &str) -> String {
    for_terminal(s).into_owned()
}

impl Listener {
    /// The listening sockets of an inventory with their owners. Non-listening sockets are
    /// skipped; sockets seen twice (one per owner process) become one listener each.
    pub fn from_inventory(inv: &Inventory) -> Vec<Listener> {
        let mut out: Vec<Listener> = inv
            .sockets
            .iter()
            .filter(|s| s.state.is_listening())
            .map(|s| Listener::from_entry(inv, s))
            .collect();
        out.sort_by_key(|l| (l.proto, l.addr.port(), l.addr));
        out.dedup();
        out
    }

    fn from_entry(inv: &Inventory, s: &SocketEntry) -> Listener {
        let proc = inv.owner(s);
        let cg = inv.cgroup_owner(s);
        let (uid, user) = inv.user_of(s);
        Listener {
            proto: s.proto,
            addr: s.local,
            v6only: s.v6only,
            owner: Owner {
                pid: proc.map(|p| p.pid),
                process: proc.map(|p| esc(&p.name)),
                exe: proc.and_then(|p| p.exe.as_deref()).map(esc),
                exe_deleted: proc.is_some_and(|p| p.exe_deleted),
                uid,
                user: user.map(esc),
                unit: cg.and_then(|c| c.unit.as_deref()).map(esc),
                container: cg.and_then(|c| c.container.as_deref()).map(esc),
            },
        }
    }

    /// Where the bound address lets connections come from.
    pub fn exposure(&self) -> Exposure {
        Exposure::of(self.addr.ip())
    }

    /// True when only this machine can connect.
    pub fn is_loopback(&self) -> bool {
        self.exposure() == Exposure::Loopback
    }

    /// `tcp 0.0.0.0:6379`, for titles.
    pub fn label(&self) -> String {
        format!("{} {}", self.proto, self.addr)
    }

    /// `redis-server (pid 42, user redis)`, for details.
    pub fn owner_label(&self) -> String {
        let o = &self.owner;
        let mut parts = Vec::new();
        if let Some(pid) = o.pid {
            parts.push(format!("pid {pid}"));
        }
        match &o.user {
            Some(u) => parts.push(format!("user {u}")),
            None => parts.push(format!("uid {}", o.uid)),
        }
        if let Some(u) = o.container.as_ref().or(o.unit.as_ref()) {
            parts.push(u.clone());
        }
        format!(
            "{} ({})",
            o.process.as_deref().unwrap_or("unknown process"),
            parts.join(", ")
        )
    }
}
