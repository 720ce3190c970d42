//! `portolan forward`: TCP and UDP port forwarding.
//!
//! - [`spec`]: a rule as a person writes it (`0.0.0.0:8080 127.0.0.1:5000`, ranges, IPv6).
//! - [`config`]: many rules from a TOML file, reloaded on SIGHUP.
//! - [`server`]: the forwarder: listeners, limits, reload, drain (a tokio runtime of its own).
//! - [`tcp`]: one TCP connection relayed with splice(2) through a pipe per direction (zero
//!   copy), with a plain copy fallback; half-close passed on.
//! - [`proxy`]: PROXY protocol v1 and v2 headers towards the target.
//! - [`udp`]: UDP sessions, one upstream socket per client.
//! - [`stats`]: per-rule counters, rendered as Prometheus text.
//! - [`kernel`]: the same rules as nftables DNAT/masquerade in portolan's own table.
//! - [`registry`]: which running process forwards what, for `who` and the overview.

pub mod config;
pub mod error;
pub mod kernel;
pub mod spec;
pub mod stats;

pub use error::RelayError;
pub use spec::{Listen, Options, Proto, ProxyVersion, RangeMode, Rule, Target};
pub mod proxy;
pub mod registry;
pub mod server;
pub mod tcp;
pub mod udp;
