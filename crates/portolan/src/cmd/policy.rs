//! `portolan policy init`: the current listeners as a starting policy (TOML, POLICY.md).
//! The TOML is the command's one output: no JSON or CSV flags are declared.

use std::io::{self, Write};

use clap::Subcommand;
use portolan_audit::Policy;
use serde::Serialize;

use crate::render::{self, Output, Report, Style};
use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the current listeners as a starting policy
    Init,
}

/// A policy as its TOML text (what `audit --policy` and `firewall plan --policy` read).
#[derive(Debug, Serialize)]
struct PolicyText {
    toml: String,
}

impl Report for PolicyText {
    fn table(&self, w: &mut dyn Write, _style: Style) -> io::Result<()> {
        w.write_all(self.toml.as_bytes())
    }
}

pub fn run(ctx: &Output, a: &PolicyCommand, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let PolicyCommand::Init = a;
    let inv = super::listening_inventory(ctx)?;
    let report = PolicyText {
        toml: Policy::from_inventory(&inv.listeners()).to_toml(),
    };
    render::emit(out, ctx, &report)
}
