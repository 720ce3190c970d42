//! The local port inventory: which sockets exist on this machine and which processes,
//! users, systemd units and containers own them; plus the two actions on ports that need
//! the same knowledge, finding a free port and signalling a port's listeners.
//!
//! Sources: the kernel's sock_diag netlink interface (what `ss` uses), with `/proc/net/*`
//! as a fallback. Owners come from one walk over `/proc/*/fd`, done only when asked and
//! only as far as the question needs. This crate returns typed values and never prints.

mod cgroup;
mod entry;
mod error;
pub mod free;
pub mod kill;
mod listeners;
mod netlink;
mod owners;
mod process;
pub mod procnet;
mod sysctl;
mod users;

mod inventory;

pub use cgroup::{classify_cgroup, CgroupOwner};
pub use entry::{Family, SocketEntry, SocketSource, TcpCounters};
pub use error::SocketsError;
pub use inventory::{Inventory, OwnerScan, Query, Source, WalkStats, Warning};
pub use netlink::Netlink;
pub use process::ProcessInfo;
pub use sysctl::PortSysctls;
pub use users::UserNames;
