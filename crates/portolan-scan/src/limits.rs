//! Descriptor limits: each probe in flight holds one socket, so the soft RLIMIT_NOFILE
//! bounds concurrency. Raising the soft limit to the hard one needs no privilege.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The descriptor limit after raising, and how many probes it leaves room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub soft: u64,
    pub hard: u64,
    /// Descriptors usable for probes: the soft limit less a reserve for everything else.
    pub for_probes: u32,
}

/// Descriptors kept back for the process itself (stdio, files, netlink, the runtime).
const RESERVE: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit (best effort) and reports the result.
pub fn raise_fd_limit() -> FdLimit {
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum;
    if cur.current < hard {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        );
    }
    let now = getrlimit(Resource::Nofile);
    let soft = now.current.unwrap_or(1 << 20);
    FdLimit {
        soft,
        hard: now.maximum.unwrap_or(soft),
        for_probes: u32::try_from(soft.saturating_sub(RESERVE).max(8)).unwrap_or(u32::MAX),
    }
}
