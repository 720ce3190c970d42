//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while planning, applying or reading the firewall.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The caller lacks root or CAP_NET_ADMIN.
    #[error("changing the firewall needs root (CAP_NET_ADMIN): {0}; run it with sudo")]
    NotPermitted(String),
    /// `nft` is not installed or not on PATH.
    #[error("`nft` (nftables) was not found on PATH: install the nftables package")]
    NftMissing,
    /// An `nft` invocation failed; `stderr` is what nft said.
    #[error("`{command}` failed: {stderr}")]
    Nft {
        /// The command line, for the message.
        command: String,
        /// nft's own explanation.
        stderr: String,
    },
    /// A file in the state directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Which file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `nft -j` printed something that is not the JSON we know.
    #[error("cannot read nft's JSON output: {0}")]
    Json(String),
    /// A rule asks for something nftables cannot express as we render it.
    #[error("invalid rule: {0}")]
    BadRule(String),
    /// `confirm` came after the watchdog had already restored the previous ruleset.
    #[error("too late: the confirm window closed and the previous ruleset was restored at {0}")]
    AlreadyReverted(String),
    /// `confirm` with nothing pending.
    #[error("nothing to confirm: no portolan firewall change is waiting for confirmation")]
    NothingPending,
}

impl FirewallError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FirewallError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
