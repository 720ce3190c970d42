//! The relay's one error type. Every message that quotes input escapes it.

use std::net::SocketAddr;

use portolan_core::escape::for_terminal;

/// What went wrong, for a person.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A LISTEN or TARGET word, or a rule, that cannot be used.
    #[error("{input}: {why}")]
    Spec { input: String, why: String },
    /// The config file cannot be read or is wrong.
    #[error("{path}: {message}")]
    Config { path: String, message: String },
    /// A listening address is held by another socket (the binary names who holds it).
    #[error("{proto} {addr} is already in use")]
    AddrInUse {
        proto: &'static str,
        addr: SocketAddr,
    },
    /// A target name that does not resolve.
    #[error("{host}: cannot resolve: {why}")]
    Resolve { host: String, why: String },
    /// Something the system refused.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// nftables refused or failed (kernel forwarding, redirect ranges).
    #[error("{0}")]
    Nft(String),
    /// Needs root or CAP_NET_ADMIN.
    #[error("{0}")]
    Privileges(String),
    /// A kernel forward (or redirect range) would capture the SSH port; the message names
    /// the rule, the port and the flag that overrides the guard.
    #[error("{0}")]
    SshGuard(String),
    /// A kernel forward needs a sysctl that is off; the message names it and the flag that
    /// sets it.
    #[error("{0}")]
    Sysctl(String),
}

impl RelayError {
    /// A spec error quoting `input` (escaped, cut at 60 characters).
    pub fn spec(input: &str, why: &str) -> RelayError {
        let cut: String = input.chars().take(60).collect();
        let mut shown = for_terminal(&cut).into_owned();
        if input.chars().count() > 60 {
            shown.push_str("...");
        }
        RelayError::Spec {
            input: shown,
            why: why.to_owned(),
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> RelayError {
        RelayError::Io {
            what: what.into(),
            source,
        }
    }
}
