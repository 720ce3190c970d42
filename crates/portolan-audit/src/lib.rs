//! Exposure audit: what this machine exposes that it should not, and how to fix each item.
//!
//! The engine joins four sources: the listening sockets with their owners
//! (core's [`Listener`] model, built by `portolan_sockets::Inventory::listeners`), the catalog's knowledge of ports, optional probe results
//! (`portolan_probe::Report`), an optional [`Policy`] (policy as code, see `POLICY.md`) and an
//! optional [`Reachability`] oracle (the live firewall). [`audit`] turns them into
//! [`Finding`]s, each with a stable rule id, a severity and a concrete fix. [`from_scan`]
//! compares the local view with what a scan from another machine reached.
//!
//! This crate touches no network and reads only the files it is pointed at (`load`: a
//! policy, a scan); the caller collects the inventory and the probes. It turns a policy into
//! the firewall engine's inbound rules and judges listeners against a firewall ruleset the
//! caller loaded (`firewall`); it must not print. Listeners' strings are as
//! the kernel gave them; every string that came from /proc or from the network is escaped
//! when a finding's text is made from it (a finding's `owner` stays raw, like any model
//! value: renderers escape it).

mod date;
pub mod findings;
mod firewall;
pub mod from_scan;
mod listener;
mod load;
pub mod policy;
mod rules;
mod write;

pub use date::Date;
pub use findings::{
    audit, outside_policy, sort as sort_findings, AuditInput, Finding, Reachability, Severity,
    SocketRef, Verdict,
};
pub use firewall::sshd_port;
pub use from_scan::{compare, parse_scan, ScanError, ScanPort};
pub use listener::{Listener, Owner};
pub use load::{read_text, shown, LoadError, MAX_INPUT_BYTES};
pub use policy::{AddrMatch, Cidr, Exception, OwnerMatch, Policy, PolicyError, Rule, Settings};
