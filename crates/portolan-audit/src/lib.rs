//! Exposure audit: what this machine exposes that it should not, and how to fix each item.
//!
//! The engine joins four sources: the listening sockets with their owners
//! ([`Listener::from_inventory`]), the catalog's knowledge of ports, optional probe results
//! (`portolan_probe::Report`), an optional [`Policy`] (policy as code, see `POLICY.md`) and an
//! optional [`Reachability`] oracle (the live firewall). [`audit`] turns them into
//! [`Finding`]s, each with a stable rule id, a severity and a concrete fix. [`from_scan`]
//! compares the local view with what a scan from another machine reached.
//!
//! This crate reads no files and touches no network itself (the caller collects the
//! inventory, the probes and the policy text); it must not print. Every string that came from
//! /proc or from the network is escaped before it is put into a finding.

mod date;
pub mod findings;
pub mod from_scan;
mod listener;
pub mod policy;
mod rules;
mod write;

pub use date::Date;
pub use findings::{audit, AuditInput, Finding, Reachability, Severity, SocketRef, Verdict};
pub use from_scan::{compare, parse_scan, ScanError, ScanPort};
pub use listener::{Listener, Owner};
pub use policy::{AddrMatch, Cidr, Exception, OwnerMatch, Policy, PolicyError, Rule, Settings};
