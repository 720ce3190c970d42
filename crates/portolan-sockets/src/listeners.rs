//! The inventory as core's [`Listener`] model: what the audit judges and the watch engine
//! records. Strings are the lossless text of what the kernel and /proc gave (escaping is the output's
//! job).

use portolan_core::{Listener, Owner};

use crate::entry::SocketEntry;
use crate::inventory::Inventory;
use crate::process::ProcessInfo;

impl Inventory {
    /// The listening sockets (TCP LISTEN, bound unconnected UDP) with their owners, sorted
    /// by protocol, port and address. Other sockets are skipped; identical listeners (one
    /// socket listed once per owner process) are kept once.
    pub fn listeners(&self) -> Vec<Listener> {
        let mut out: Vec<Listener> = self
            .sockets
            .iter()
            .filter(|s| s.state.is_listening())
            .map(|s| Listener::new(s.proto, s.local, self.listener_owner(s)))
            .collect();
        out.sort_by_key(|l| (l.proto, l.port, l.address));
        out.dedup();
        out
    }

    /// Who owns one socket: its lowest-pid process when readable, its unit or container
    /// from the cgroup, its user (the process's, else the socket's uid).
    pub fn listener_owner(&self, s: &SocketEntry) -> Owner {
        let p = self.owner(s);
        let cg = self.cgroup_owner(s);
        let (uid, user) = self.user_of(s);
        Owner {
            pid: p.map(|p| p.pid),
            // Core's model holds text: the lossless form (`\xNN` for bytes that are not
            // UTF-8), so a policy or a store compares what the user reads and types.
            process: p.map(ProcessInfo::name_text),
            exe: p.and_then(ProcessInfo::exe_text),
            exe_deleted: p.is_some_and(|p| p.exe_deleted),
            user: user.map(str::to_owned),
            uid,
            unit: cg.and_then(|c| c.unit.clone()),
            container: cg.and_then(|c| c.container.clone()),
        }
    }
}
