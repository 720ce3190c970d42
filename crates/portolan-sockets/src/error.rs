use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use thiserror::Error;

/// Every failure of this crate names the operation and what it acted on.
#[derive(Debug, Error)]
pub enum SocketsError {
    #[error("cannot query the kernel's socket table over netlink (sock_diag): {0}")]
    Netlink(#[source] io::Error),
    #[error("the kernel sent a malformed sock_diag message: {0}")]
    NetlinkDecode(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}:{line}: cannot parse: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot bind {addr}: {source}{hint}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
        hint: &'static str,
    },
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("refusing to signal process {pid}: {reason}")]
    Refused { pid: u32, reason: &'static str },
}
