//! `portolan policy init`: the current listeners as a starting policy (TOML, POLICY.md).

use std::io::Write;

use clap::Subcommand;
use portolan_audit::{Listener, Policy};
use portolan_sockets::{Inventory, Query};

use crate::render::Output;
use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the current listeners as a starting policy
    Init,
}

pub fn run(ctx: &Output, a: &PolicyCommand, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let PolicyCommand::Init = a;
    let inv = Inventory::collect(&Query {
        listening_only: true,
        source: ctx.source,
        ..Query::default()
    })?;
    crate::render::sockets::warn_all(&inv.warnings, ctx.err_color);
    let ls = Listener::from_inventory(&inv);
    out.write_all(Policy::from_inventory(&ls).to_toml().as_bytes())?;
    Ok(Outcome::Found)
}
