//! `portolan firewall`: so far only the hidden commit-confirm watchdog.

use crate::cli::{FirewallArgs, FirewallCommand};
use crate::Outcome;

/// Runs a firewall subcommand.
pub fn firewall(args: &FirewallArgs) -> anyhow::Result<Outcome> {
    match &args.command {
        FirewallCommand::Watchdog(w) => {
            let rolled_back = portolan_firewall::run_watchdog(&w.state_dir, w.generation)?;
            Ok(Outcome::of(rolled_back))
        }
    }
}
