//! Signalling the processes that hold a socket, safely: through a pidfd, after checking
//! that the process behind the pidfd still holds the socket, so a pid reused by an
//! unrelated process is never hit.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use portolan_core::{PortSpec, Protocol};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::inventory::{Inventory, OwnerScan, Query, Source};
use crate::owners::{scan, ScanMode};
use crate::SocketsError;

/// A signal to send, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillSignal {
    sig: Signal,
    name: &'static str,
}

const SIGNALS: &[(&str, Signal)] = &[
    ("TERM", Signal::TERM),
    ("KILL", Signal::KILL),
    ("INT", Signal::INT),
    ("HUP", Signal::HUP),
    ("QUIT", Signal::QUIT),
    ("USR1", Signal::USR1),
    ("USR2", Signal::USR2),
    ("STOP", Signal::STOP),
    ("CONT", Signal::CONT),
];

impl KillSignal {
    pub const TERM: KillSignal = KillSignal {
        sig: Signal::TERM,
        name: "TERM",
    };

    pub fn name(self) -> &'static str {
        self.name
    }
}

impl fmt::Display for KillSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name)
    }
}

impl FromStr for KillSignal {
    type Err = String;

    /// `TERM`, `SIGTERM`, `term`, or a number such as `9`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_uppercase();
        let t = t.strip_prefix("SIG").unwrap_or(&t);
        let found = if let Ok(n) = t.parse::<i32>() {
            SIGNALS.iter().find(|(_, sig)| sig.as_raw() == n)
        } else {
            SIGNALS.iter().find(|(name, _)| *name == t)
        };
        found
            .map(|&(name, sig)| KillSignal { sig, name })
            .ok_or_else(|| {
                let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown signal `{}`: expected one of {} or its number",
                    portolan_core::escape::for_terminal(s.trim()),
                    names.join(", ")
                )
            })
    }
}

/// Why portolan never signals `pid`, or `None` when it may: init (pid 1, and the
/// invalid pid 0) and portolan itself. The one place this rule and its wording live.
pub fn refusal(pid: u32) -> Option<&'static str> {
    if pid <= 1 {
        Some("it is init (pid 1); stopping it would stop the whole system")
    } else if pid == std::process::id() {
        Some("it is portolan itself")
    } else {
        None
    }
}

/// Sends `sig` to `pid`, only if that process still holds socket `inode`.
pub fn signal_holder(pid: u32, inode: u64, sig: KillSignal) -> Result<(), SocketsError> {
    if let Some(reason) = refusal(pid) {
        return Err(SocketsError::Refused { pid, reason });
    }
    let raw = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or(SocketsError::Refused {
            pid,
            reason: "not a valid pid",
        })?;
    let pidfd = pidfd_open(raw, PidfdFlags::empty()).map_err(|e| match e {
        // Exited since the walk (another kill of the same port, or it stopped by itself).
        rustix::io::Errno::SRCH => SocketsError::Refused {
            pid,
            reason: "it exited before it could be signalled",
        },
        e => SocketsError::Signal {
            pid,
            source: e.into(),
        },
    })?;
    // The pidfd now pins this exact process. Check that it is (still) the holder: if the
    // pid was reused between our scan and pidfd_open, the new process fails this check.
    let wanted: HashSet<u64> = [inode].into();
    let map = scan(&wanted, ScanMode::All, Some(&[pid]));
    if !map.by_inode.contains_key(&inode) {
        return Err(SocketsError::Refused {
            pid,
            reason: "it no longer holds the socket (it exited or closed it, or the pid was reused)",
        });
    }
    pidfd_send_signal(&pidfd, sig.sig).map_err(|e| SocketsError::Signal {
        pid,
        source: e.into(),
    })
}

/// Waits until nothing listens on `ports`/`proto` any more, up to `timeout`, reading
/// sockets from `source`. Returns true when the port was freed. Each poll asks the kernel
/// for the matching listeners only (no owner walk, no user or cgroup lookups).
pub fn wait_until_closed(
    ports: &PortSpec,
    proto: Protocol,
    source: Source,
    timeout: Duration,
) -> Result<bool, SocketsError> {
    let start = Instant::now();
    let query = Query {
        tcp: proto == Protocol::Tcp,
        udp: proto == Protocol::Udp,
        listening_only: true,
        ports: Some(ports.clone()),
        owners: OwnerScan::None,
        source,
        ..Query::default()
    };
    loop {
        // The query keeps only listeners on `ports`: any socket left means still held.
        if Inventory::sockets_only(&query)?.is_empty() {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!("sigterm".parse::<KillSignal>().unwrap().name(), "TERM");
        assert_eq!("9".parse::<KillSignal>().unwrap().name(), "KILL");
        assert_eq!("HUP".parse::<KillSignal>().unwrap().to_string(), "SIGHUP");
        assert!("SIGBOGUS".parse::<KillSignal>().is_err());
        assert!("\x1b[2J"
            .parse::<KillSignal>()
            .unwrap_err()
            .contains("\\x1b"));
    }

    #[test]
    fn refusal_covers_init_and_self_only() {
        assert!(refusal(0).is_some());
        assert!(refusal(1).unwrap().contains("init"));
        assert!(refusal(std::process::id())
            .unwrap()
            .contains("portolan itself"));
        assert_eq!(refusal(std::process::id() + 1), None);
    }

    #[test]
    fn refuses_init_and_self() {
        assert!(matches!(
            signal_holder(1, 1, KillSignal::TERM),
            Err(SocketsError::Refused { .. })
        ));
        assert!(matches!(
            signal_holder(std::process::id(), 1, KillSignal::TERM),
            Err(SocketsError::Refused { .. })
        ));
    }
}
