//! portolan's firewall: an inbound allow-list as an nftables table of its own
//! (`table inet portolan`), applied atomically and commit-confirmed, and a reader of the
//! live ruleset that tells whether an outside connection would reach a port.
//!
//! - [`render`] turns [`InboundRule`]s and a [`Guard`] into the nft script (deterministic).
//! - [`apply`], [`confirm`], [`status`], [`remove_table`] change and report the live table;
//!   [`run_watchdog`] is the body of the rollback process `apply` starts. The same
//!   commit-confirm cycle serves other tables of portolan's through [`ManagedTable`] and
//!   the `*_managed` functions (`portolan forward --kernel`).
//! - [`Ruleset`] and [`inbound_verdict`] read `nft -j list ruleset`;
//!   [`override_warnings`] names other rules (Docker, ufw, firewalld, iptables) that
//!   override or bypass ours.
//!
//! Every function that changes or reads the live firewall needs root (CAP_NET_ADMIN) and
//! `nft`; they fail with [`FirewallError::NotPermitted`] or [`FirewallError::NftMissing`].

mod commit;
mod error;
mod nft;
mod plan;
mod ruleset;
mod warn;

pub use commit::{
    apply, apply_managed, confirm, confirm_managed, default_state_dir, remove_managed,
    remove_table, run_watchdog, run_watchdog_managed, state_dir_for, status, status_managed,
    ApplyOptions, ApplyReport, CommitState, FirewallTable, ManagedTable, Status, WatchdogLauncher,
    WatchdogState, DEFAULT_CONFIRM_WITHIN, MAX_CONFIRM_WITHIN, WINDOW_SET,
};
pub use error::FirewallError;
pub use nft::{has_table, list_table, load_text, our_table, require_privileges, ruleset_json};
pub use plan::{
    comment_text, render, replace_prefix, table_text, Guard, GuardScope, InboundRule, L4,
    TABLE_FAMILY, TABLE_NAME,
};
pub use portolan_core::Cidr;
pub use ruleset::{inbound_verdict, Ruleset, Verdict};
pub use warn::{legacy_iptables_notes, override_warnings};
