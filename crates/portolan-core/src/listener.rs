//! One listening socket and who owns it: the model the audit, the watch engine (tracker,
//! stores, alert sinks, metrics) and the renderers share.
//!
//! Every string is as the kernel or /proc gave it. Nothing here is escaped: whatever writes
//! one of these strings to a terminal, a page or a text finding escapes it there
//! ([`crate::escape::for_terminal`]); JSON escapes itself. Construction from the local
//! inventory lives in `portolan-sockets` (`Inventory::listeners`), so this module stays pure.
//!
//! The JSON form is the watch event stream's and the webhook's body (`listener` and
//! `previous.owner`), and the `owner` of an audit finding: field names and order are a
//! contract.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{Exposure, Protocol};

/// Who holds a listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Owner {
    /// The lowest pid holding the socket; `None` when no process could be read.
    pub pid: Option<u32>,
    /// The kernel's short command name (`comm`).
    pub process: Option<String>,
    /// Executable path.
    pub exe: Option<String>,
    /// True when the executable was deleted or replaced since the process started. Written
    /// only when true, so a watch event's shape is what it always was.
    #[serde(default, skip_serializing_if = "is_false")]
    pub exe_deleted: bool,
    /// The owning user's name, when the user database knows it.
    pub user: Option<String>,
    /// The owning uid (the process's, else the socket's).
    pub uid: u32,
    /// The systemd unit, e.g. `nginx.service`.
    pub unit: Option<String>,
    /// A container, as `runtime:short-id`.
    pub container: Option<String>,
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's signature")]
fn is_false(b: &bool) -> bool {
    !*b
}

impl Owner {
    /// What stays the same when the same service restarts: its service unit (or
    /// container), else its executable, else its command name. Two owners with the same
    /// program but different pids are one service restarted; different programs are an
    /// owner change. A scope unit (a login session, `session-3.scope`) holds many
    /// programs, so it does not name one.
    pub fn program(&self) -> Option<&str> {
        self.unit
            .as_deref()
            .filter(|u| u.ends_with(".service"))
            .or(self.container.as_deref())
            .or(self.exe.as_deref())
            .or(self.process.as_deref())
    }
}

/// One listening socket (TCP LISTEN or bound unconnected UDP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub proto: Protocol,
    /// The bound local address.
    pub address: IpAddr,
    pub port: u16,
    /// Where the bound address lets connections come from.
    pub exposure: Exposure,
    pub owner: Owner,
}

impl Listener {
    /// A listener on `addr`, its exposure judged from the address.
    pub fn new(proto: Protocol, addr: SocketAddr, owner: Owner) -> Listener {
        Listener {
            proto,
            address: addr.ip(),
            port: addr.port(),
            exposure: Exposure::of(addr.ip()),
            owner,
        }
    }

    /// The bound address and port.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// True when only this machine can connect.
    pub fn is_loopback(&self) -> bool {
        self.exposure == Exposure::Loopback
    }

    /// The socket's place: what a restart keeps and a move changes.
    pub fn key(&self) -> ListenerKey {
        ListenerKey {
            proto: self.proto,
            address: self.address,
            port: self.port,
        }
    }
}

/// Where a listener is bound: protocol, address, port. Displayed as `0.0.0.0:22/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ListenerKey {
    pub proto: Protocol,
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for ListenerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.proto),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.proto),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_deleted_is_written_only_when_true() {
        let mut o = Owner {
            pid: Some(7),
            process: Some("sshd".into()),
            uid: 0,
            ..Owner::default()
        };
        let keys = |o: &Owner| -> Vec<String> {
            let v = serde_json::to_value(o).unwrap();
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(
            keys(&o),
            ["container", "exe", "pid", "process", "uid", "unit", "user"]
        );
        o.exe_deleted = true;
        assert!(keys(&o).contains(&"exe_deleted".to_string()));
        let back: Owner = serde_json::from_value(serde_json::to_value(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn a_listener_knows_its_place_and_exposure() {
        let l = Listener::new(
            Protocol::Tcp,
            "[::1]:8080".parse().unwrap(),
            Owner::default(),
        );
        assert!(l.is_loopback());
        assert_eq!(l.key().to_string(), "[::1]:8080/tcp");
        assert_eq!(l.socket_addr().port(), 8080);
        let w = Listener::new(
            Protocol::Udp,
            "0.0.0.0:53".parse().unwrap(),
            Owner::default(),
        );
        assert_eq!(w.exposure, Exposure::AllInterfaces);
        assert_eq!(w.key().to_string(), "0.0.0.0:53/udp");
    }
}
