//! The audit judges core's [`Listener`] model (built by `Inventory::listeners`). Its strings
//! are as the kernel gave them; a finding escapes them here, when it makes text.

pub use portolan_core::{Listener, Owner};

use portolan_core::escape::for_terminal;
use portolan_core::Protocol;

/// `s` escaped for a terminal, owned (what a finding's text holds).
pub(crate) fn esc(s: &str) -> String {
    for_terminal(s).into_owned()
}

/// How findings name a listener and its owner (escaped).
pub(crate) trait Describe {
    /// `tcp 0.0.0.0:6379`, for titles.
    fn label(&self) -> String;
    /// `redis-server (pid 42, user redis)`, for details.
    fn owner_label(&self) -> String;
    /// The port as portolan's commands take it: `8080`, or `53/udp` (a bare number means
    /// TCP to `kill`, `who` and `probe`), for the commands a fix suggests.
    fn port_arg(&self) -> String;
}

impl Describe for Listener {
    fn label(&self) -> String {
        format!("{} {}", self.proto, self.socket_addr())
    }

    fn port_arg(&self) -> String {
        match self.proto {
            Protocol::Tcp => self.port.to_string(),
            other => format!("{}/{other}", self.port),
        }
    }

    fn owner_label(&self) -> String {
        let o = &self.owner;
        let mut parts = Vec::new();
        if let Some(pid) = o.pid {
            parts.push(format!("pid {pid}"));
        }
        match &o.user {
            Some(u) => parts.push(format!("user {}", esc(u))),
            None => parts.push(format!("uid {}", o.uid)),
        }
        if let Some(u) = o.container.as_ref().or(o.unit.as_ref()) {
            parts.push(esc(u));
        }
        format!(
            "{} ({})",
            o.process
                .as_deref()
                .map_or_else(|| "unknown process".to_string(), esc),
            parts.join(", ")
        )
    }
}
