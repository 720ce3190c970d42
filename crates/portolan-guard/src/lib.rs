//! portolan guard: ports hidden behind single-packet authorization (SPA) and knock
//! sequences. Guarded ports are dropped in portolan's own nftables table
//! (`table inet portolan_guard`, beside the firewall engine's `inet portolan`); an
//! authorised packet adds `{ source . proto . port }` to a set with a timeout, so the
//! kernel closes access again by itself. Nothing listens: authorization packets reach us
//! through an NFLOG group and are dropped by the same rule.
//!
//! Data flow: NFLOG ([`nflog`]) -> packet headers ([`wire`]) -> a format ([`spa`] ours,
//! [`fwknop`] fwknop's, [`knock`] sequences) gives a verified [`Request`] -> the replay
//! cache ([`replay`]) -> the policy ([`config`]: may this client open these ports?) ->
//! the set element ([`nft`]) -> an event for the caller.
//!
//! This crate must not print: decisions are returned as values, the binary renders them.

pub mod client;
pub mod config;
pub mod engine;
pub mod fwknop;
pub mod keys;
pub mod knock;
pub mod nflog;
pub mod nft;
pub mod replay;
pub mod run;
pub mod spa;
pub mod wire;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

pub use portolan_firewall::L4;

/// The UDP port SPA packets go to unless configured otherwise (fwknop's default).
pub const DEFAULT_SPA_PORT: u16 = 62201;

/// A protocol and a port: what a client asks to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortProto {
    pub proto: L4,
    pub port: u16,
}

impl PortProto {
    pub const fn tcp(port: u16) -> PortProto {
        PortProto {
            proto: L4::Tcp,
            port,
        }
    }

    pub const fn udp(port: u16) -> PortProto {
        PortProto {
            proto: L4::Udp,
            port,
        }
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.proto.as_str())
    }
}

impl serde::Serialize for PortProto {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for PortProto {
    type Err = String;

    /// `22/tcp`, `53/udp`, `tcp/22` (fwknop's order) or `22` (TCP).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "bad port {:?}: expected PORT/tcp or PORT/udp, e.g. 22/tcp",
                portolan_core::escape::for_terminal(s)
            )
        };
        let t = s.trim();
        let (a, b) = t.split_once('/').unwrap_or((t, "tcp"));
        let (port, proto) = if a.chars().all(|c| c.is_ascii_digit()) {
            (a, b)
        } else {
            (b, a)
        };
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => L4::Tcp,
            "udp" => L4::Udp,
            _ => return Err(bad()),
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(PortProto { proto, port })
    }
}

/// A verified authorization: what a packet (or a knock sequence) asks for, once its MAC
/// or tag checked out. Nothing here has been checked against the policy yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's name in the configuration.
    pub client: String,
    /// The address the request asks to open; `None`: the packet's source ("as seen", for
    /// clients behind NAT).
    pub open_for: Option<IpAddr>,
    /// The ports asked for.
    pub ports: Vec<PortProto>,
    /// How long the client asks access for; `None`: the configured default.
    pub duration: Option<Duration>,
    /// The client's clock when it made the packet (Unix seconds).
    pub timestamp: i64,
    /// A digest of the authenticated content, unique per packet: the replay cache's key.
    pub replay_key: [u8; 32],
}

/// Why a packet was not accepted. Each is an event and a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// Not a packet of any format we know, or its MAC/tag did not check out with any key.
    BadMac,
    /// A key id no client has.
    UnknownClient,
    /// Seen before (the replay cache).
    Replay,
    /// Its timestamp is outside the accepted window.
    OutsideWindow,
    /// The client may not open (one of) the ports asked for.
    NotAllowed,
    /// The client asked to open an address it may not name.
    AddressNotAllowed,
    /// A knock sequence went wrong (a port out of order) or timed out.
    BadSequence,
}

impl Rejection {
    pub const ALL: [Rejection; 7] = [
        Rejection::BadMac,
        Rejection::UnknownClient,
        Rejection::Replay,
        Rejection::OutsideWindow,
        Rejection::NotAllowed,
        Rejection::AddressNotAllowed,
        Rejection::BadSequence,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Rejection::BadMac => "bad_mac",
            Rejection::UnknownClient => "unknown_client",
            Rejection::Replay => "replay",
            Rejection::OutsideWindow => "outside_window",
            Rejection::NotAllowed => "not_allowed",
            Rejection::AddressNotAllowed => "address_not_allowed",
            Rejection::BadSequence => "bad_sequence",
        }
    }
}

/// Errors of the guard's setup and I/O (a rejected packet is not an error: [`Rejection`]).
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("{0}")]
    Config(String),
    #[error("key file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("{0}")]
    Firewall(#[from] portolan_firewall::FirewallError),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl GuardError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> GuardError {
        GuardError::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_proto_forms() {
        let p: PortProto = "22/tcp".parse().unwrap();
        assert_eq!(
            p,
            PortProto {
                proto: L4::Tcp,
                port: 22
            }
        );
        assert_eq!("tcp/22".parse::<PortProto>().unwrap(), p);
        assert_eq!("22".parse::<PortProto>().unwrap(), p);
        assert_eq!(
            "53/UDP".parse::<PortProto>().unwrap(),
            PortProto {
                proto: L4::Udp,
                port: 53
            }
        );
        for bad in ["", "0/tcp", "70000/tcp", "22/sctp", "x/y", "/", "22/"] {
            assert!(bad.parse::<PortProto>().is_err(), "{bad}");
        }
        assert_eq!(p.to_string(), "22/tcp");
    }
}
