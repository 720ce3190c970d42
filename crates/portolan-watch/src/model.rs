//! What the watcher records: listeners, who owns them, and the events between samples;
//! and the port scans that `portolan sentry` detects (`ScanRecord`), kept in the same store.
//! These types are the one shape shared by the tracker, the stores, the alert sinks and
//! the metrics; their JSON form is the event stream's and the webhook's body. Strings are
//! as the kernel gave them: sinks that reach a terminal escape them; JSON escapes itself.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use portolan_core::Exposure;
use serde::{Deserialize, Serialize};

/// The listener model is core's, shared with the audit and the renderers; `Key` is a
/// listener's place (protocol, address, port), the store's primary key with the host.
pub use portolan_core::listener::{Listener, ListenerKey as Key, Owner};

/// What happened to a listener between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Already listening when watching began (the first sample on a host with no history).
    /// Recorded so that the history knows the starting state; never alerted.
    Present,
    /// A new listener.
    Opened,
    /// A listener went away (and did not come back within the restart grace).
    Closed,
    /// The same program (unit, else executable) holds the same address and port again
    /// under a new pid: one event for a service restart.
    Restarted,
    /// A different program or user now holds the same address and port.
    OwnerChanged,
    /// The same program moved the same port to another address (e.g. from loopback to
    /// all interfaces).
    ExposureChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Present,
        EventKind::Opened,
        EventKind::Closed,
        EventKind::Restarted,
        EventKind::OwnerChanged,
        EventKind::ExposureChanged,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Present => "present",
            EventKind::Opened => "opened",
            EventKind::Closed => "closed",
            EventKind::Restarted => "restarted",
            EventKind::OwnerChanged => "owner_changed",
            EventKind::ExposureChanged => "exposure_changed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase().replace('-', "_");
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == t)
            .ok_or_else(|| {
                format!(
                    "unknown event kind {:?}; expected one of: {}",
                    portolan_core::escape::for_terminal(s),
                    EventKind::ALL.map(EventKind::as_str).join(", ")
                )
            })
    }
}

/// What a listener was before an owner, restart or exposure change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    pub address: IpAddr,
    pub exposure: Exposure,
    pub owner: Owner,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When the sample that saw it was taken, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// The host that recorded it (the machine's hostname unless `--host` says otherwise).
    pub host: String,
    pub kind: EventKind,
    /// The listener as it is now; for `closed`, as it was last seen.
    pub listener: Listener,
    /// For `restarted`, `owner_changed` and `exposure_changed`: what it was before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// A remark for people, e.g. that the change happened while nothing was watching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A port scan of this host that `portolan sentry` detected, as the store keeps it: one row
/// per scan, updated as the scan goes on (upserted on host + scan key).
///
/// Strings are as the sentry gave them (a tool's trait may quote what a scanner sent):
/// anything that writes them for a terminal escapes them; JSON escapes itself. The lists
/// are capped ([`ScanRecord::MAX_SOURCES`], [`ScanRecord::MAX_PORTS`]); the totals count
/// what the caps left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    pub host: String,
    /// Unique per host for the store's life: e.g. `<sentry pid>-<sentry start ms>-<id>`.
    pub key: String,
    pub started_ms: i64,
    pub detected_ms: i64,
    pub last_ms: i64,
    /// Set when the scan ended (None while it goes on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Scanning addresses (one, or several for a distributed scan; at most 64 listed).
    pub sources: Vec<IpAddr>,
    pub sources_total: u64,
    /// Which detector fired: "trw", "vertical", "horizontal", "slow", "distributed".
    pub detector: String,
    /// Probe kinds, most frequent first: "syn", "connect", "fin", "null", "xmas", "ack",
    /// "maimon", "other_tcp", "udp".
    pub kinds: Vec<String>,
    /// Likely tool ("nmap", "masscan", "zmap", "rustscan", "portolan") and the trait that
    /// decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_because: Option<String>,
    /// Ports tried so far, "PORT/PROTO" strings like "22/tcp" (at most 256 listed), and the
    /// total.
    pub ports: Vec<String>,
    pub ports_total: u64,
    pub probes: u64,
    pub failed: u64,
    /// First contacts seen until the alarm.
    pub probes_to_detect: u64,
    /// When a block of the sources ends (None: not blocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_until_ms: Option<i64>,
}

impl ScanRecord {
    /// How many sources a record lists at most (the store refuses more).
    pub const MAX_SOURCES: usize = 64;
    /// How many ports a record lists at most (the store refuses more).
    pub const MAX_PORTS: usize = 256;

    /// The scan's last moment as far as anyone knows: its end, or its last probe while it
    /// goes on (the later of the two when both are set).
    pub fn last_seen_ms(&self) -> i64 {
        self.ended_ms.map_or(self.last_ms, |e| e.max(self.last_ms))
    }

    /// Whether one of the listed ports is `port` (of any protocol). Entries not of the form
    /// `PORT/PROTO` never match.
    pub fn touches_port(&self, port: u16) -> bool {
        self.ports.iter().any(|p| port_of(p) == Some(port))
    }
}

/// The port number of a `PORT/PROTO` entry ("22/tcp" -> 22).
pub fn port_of(entry: &str) -> Option<u16> {
    let (n, proto) = entry.split_once('/')?;
    if proto.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2026-11-22T07:45:00.123Z` for a millisecond timestamp (UTC).
pub use portolan_core::civil::rfc3339_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use portolan_core::Protocol;

    #[test]
    fn kinds_round_trip_and_reject_others() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
        }
        assert_eq!(
            "owner-changed".parse::<EventKind>().unwrap(),
            EventKind::OwnerChanged
        );
        let e = "\x1b[2Jboom".parse::<EventKind>().unwrap_err();
        assert!(!e.contains('\x1b'), "{e}");
    }

    #[test]
    fn a_scan_has_one_json_shape_without_nones() {
        let s = ScanRecord {
            host: "web-3".into(),
            key: "41-1700000000000-1".into(),
            started_ms: 1000,
            detected_ms: 1200,
            last_ms: 1500,
            ended_ms: None,
            sources: vec![
                "203.0.113.9".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
            sources_total: 2,
            detector: "vertical".into(),
            kinds: vec!["syn".into(), "fin".into()],
            tool: Some("nmap".into()),
            tool_because: None,
            ports: vec!["22/tcp".into(), "53/udp".into()],
            ports_total: 2,
            probes: 40,
            failed: 38,
            probes_to_detect: 12,
            blocked_until_ms: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["sources"][1], "2001:db8::7");
        assert_eq!(v["ports"][0], "22/tcp");
        for absent in ["ended_ms", "tool_because", "blocked_until_ms"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        let back: ScanRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        assert!(s.touches_port(53) && s.touches_port(22) && !s.touches_port(2));
        assert_eq!(s.last_seen_ms(), 1500);
        assert_eq!(
            ScanRecord {
                ended_ms: Some(1700),
                ..s
            }
            .last_seen_ms(),
            1700
        );
    }

    #[test]
    fn port_entries_are_port_slash_proto() {
        assert_eq!(port_of("22/tcp"), Some(22));
        assert_eq!(port_of("65535/udp"), Some(65535));
        for bad in ["22", "/tcp", "22/", "+22/tcp", "65536/tcp", "x/tcp", ""] {
            assert_eq!(port_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_event_has_one_json_shape() {
        let e = Event {
            ts_ms: 1000,
            host: "web-3".into(),
            kind: EventKind::ExposureChanged,
            listener: Listener {
                proto: Protocol::Tcp,
                address: "0.0.0.0".parse().unwrap(),
                port: 8080,
                exposure: Exposure::AllInterfaces,
                owner: Owner {
                    pid: Some(42),
                    process: Some("python3".into()),
                    exe: Some("/usr/bin/python3.11".into()),
                    exe_deleted: false,
                    user: Some("alice".into()),
                    uid: 1000,
                    unit: Some("app.service".into()),
                    container: None,
                },
            },
            previous: Some(Previous {
                address: "127.0.0.1".parse().unwrap(),
                exposure: Exposure::Loopback,
                owner: Owner::default(),
            }),
            note: None,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "exposure_changed");
        assert_eq!(v["listener"]["proto"], "tcp");
        assert_eq!(v["listener"]["exposure"], "all_interfaces");
        assert_eq!(v["previous"]["address"], "127.0.0.1");
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
