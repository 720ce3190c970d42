//! Scan detection (`portolan sentry`): who is scanning this machine, from where, which
//! ports, how, and often with which tool; and, when asked, blocking them for a while.
//!
//! Data flow: the kernel logs first contacts (nftables `log group`, [`nft`]) -> NFLOG
//! over netlink (the guard's reader) -> [`packet::parse`] -> [`local::LocalPorts`] (did
//! it find a listener?) -> [`detect::Sentry`] (TRW and the window detectors, with
//! [`traits`] naming the kind and the tool) -> [`run::Event`]s for the caller's sinks, and
//! blocks as timed elements of the table's sets.
//!
//! Must not: print (the caller renders events), or touch any nftables table but
//! `inet portolan_sentry`.

pub mod capture;
pub mod detect;
pub mod local;
pub mod nft;
pub mod packet;
pub mod protect;
pub mod run;
pub mod traits;

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum SentryError {
    /// A setting or the environment makes the sentry impossible (the message says what).
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Nft(String),
    #[error(transparent)]
    Guard(#[from] portolan_guard::GuardError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl SentryError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> SentryError {
        SentryError::Io {
            context: context.into(),
            source,
        }
    }
}
