//! `portolan firewall`: plan, apply (commit-confirmed), confirm, status and remove
//! portolan's own nftables table (portolan-firewall), from a policy (portolan-audit).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use portolan_audit::{AddrMatch, Policy};
use portolan_core::{Port, PortRange, Protocol};
use portolan_firewall::{ApplyOptions, CommitState, Guard, InboundRule, WatchdogLauncher, L4};
use portolan_sockets::{Inventory, Query};

use crate::render::Output;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct FirewallArgs {
    #[command(subcommand)]
    pub command: FirewallCommand,
}

#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Print the nftables ruleset that allows inbound exactly what the policy allows
    Plan(FirewallPlanArgs),
    /// Load the plan in one transaction; it rolls back unless confirmed in time (needs root)
    Apply(FirewallApplyArgs),
    /// Keep what the last apply loaded (needs root)
    Confirm,
    /// Whether portolan's table is loaded, pending confirmation or confirmed (needs root)
    Status,
    /// Delete portolan's table (needs root)
    Remove,
    /// Internal: the commit-confirm rollback process that `firewall apply` starts
    #[command(name = "__watchdog", hide = true)]
    Watchdog(WatchdogArgs),
}

#[derive(Debug, Args)]
pub struct FirewallPlanArgs {
    /// The policy file (TOML, see POLICY.md)
    #[arg(long, value_name = "FILE")]
    pub policy: std::path::PathBuf,
    /// Do not keep the SSH port open whatever the policy says (you may lock yourself out)
    #[arg(long)]
    pub no_ssh_guard: bool,
}

#[derive(Debug, Args)]
pub struct FirewallApplyArgs {
    #[command(flatten)]
    pub plan: FirewallPlanArgs,
    /// Roll back by itself unless `portolan firewall confirm` follows within this many
    /// seconds (0: no rollback)
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub confirm_within: u64,
}

#[derive(Debug, Args)]
pub struct WatchdogArgs {
    /// The firewall state directory
    pub state_dir: std::path::PathBuf,
    /// The apply generation to watch
    pub generation: u128,
}

/// The policy's inbound allows: every TCP/UDP rule that is not for loopback only (loopback
/// is always allowed by the plan).
pub fn inbound_rules(policy: &Policy) -> Vec<InboundRule> {
    policy
        .allow
        .iter()
        .filter(|r| {
            r.addresses.is_empty()
                || r.addresses
                    .iter()
                    .any(|a| !matches!(a, AddrMatch::Loopback))
        })
        .filter_map(|r| {
            let proto = match r.proto {
                Protocol::Tcp => L4::Tcp,
                Protocol::Udp => L4::Udp,
                _ => return None,
            };
            let ports = PortRange::new(Port::new(r.ports.0), Port::new(r.ports.1))?;
            let from = r.from.clone();
            let comment = match &r.comment {
                Some(c) => format!("line {}: {c}", r.line),
                None => format!("line {}", r.line),
            };
            Some(InboundRule {
                proto,
                ports,
                from,
                comment,
            })
        })
        .collect()
}

/// sshd's listening TCP port on this machine, if one is found (for the SSH guard): only
/// the TCP listeners are collected, and no socket is judged or escaped.
fn sshd_port(ctx: &Output) -> Option<u16> {
    let inv = Inventory::collect(&Query {
        udp: false,
        listening_only: true,
        source: ctx.source,
        ..Query::default()
    })
    .ok()?;
    inv.sockets
        .iter()
        .find(|s| inv.owners(s).any(|p| p.name == "sshd"))
        .map(|s| s.local.port())
}

/// The nft script for `--policy`, and the guard it keeps.
fn plan(ctx: &Output, a: &FirewallPlanArgs) -> anyhow::Result<(String, Guard)> {
    let path = &a.policy;
    let text = crate::cmd::audit::read_text(path)?;
    let name = portolan_core::escape::bytes_for_terminal(path.as_os_str().as_encoded_bytes());
    let policy = Policy::parse(&name, &text)?;
    let guard = if a.no_ssh_guard {
        Guard::none()
    } else {
        Guard::detect(sshd_port(ctx))
    };
    let script = portolan_firewall::render(&inbound_rules(&policy), &guard)?;
    Ok((script, guard))
}

fn state_dir() -> std::path::PathBuf {
    portolan_firewall::default_state_dir()
}

fn warn_all(ctx: &Output, warnings: &[String]) {
    for w in warnings {
        crate::render::note(ctx.err_color, &format!("warning: {w}"));
    }
}

/// Runs a firewall subcommand.
pub fn run(ctx: &Output, args: &FirewallArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match &args.command {
        FirewallCommand::Watchdog(w) => {
            let rolled_back = portolan_firewall::run_watchdog(&w.state_dir, w.generation)?;
            Ok(Outcome::of(rolled_back))
        }
        FirewallCommand::Plan(a) => {
            let (script, guard) = plan(ctx, a)?;
            if guard.ssh_port.is_none() {
                crate::render::note(
                    ctx.err_color,
                    "no SSH guard: this plan may lock you out of a remote session",
                );
            }
            out.write_all(script.as_bytes())?;
            Ok(Outcome::Found)
        }
        FirewallCommand::Apply(a) => {
            portolan_firewall::require_privileges()?;
            let (script, _) = plan(ctx, &a.plan)?;
            let report = portolan_firewall::apply(
                &script,
                &ApplyOptions {
                    state_dir: state_dir(),
                    confirm_within: Duration::from_secs(a.confirm_within),
                    watchdog: WatchdogLauncher::current_exe()?,
                },
            )
            .context("firewall apply")?;
            warn_all(ctx, &report.warnings);
            if a.confirm_within == 0 {
                writeln!(out, "applied: portolan's table is loaded (no rollback)")?;
            } else {
                writeln!(
                    out,
                    "applied: run `portolan firewall confirm` within {} s to keep it; \
                     otherwise the previous state comes back by itself",
                    a.confirm_within
                )?;
            }
            Ok(Outcome::Found)
        }
        FirewallCommand::Confirm => {
            portolan_firewall::require_privileges()?;
            portolan_firewall::confirm(&state_dir())?;
            writeln!(out, "confirmed: portolan's table stays")?;
            Ok(Outcome::Found)
        }
        FirewallCommand::Status => {
            portolan_firewall::require_privileges()?;
            let st = portolan_firewall::status(&state_dir())?;
            let state = match &st.commit {
                CommitState::None => "no apply recorded".to_owned(),
                CommitState::Pending { seconds_left } => {
                    format!("pending: rolls back in {seconds_left} s unless confirmed")
                }
                CommitState::Confirmed { at } => format!("confirmed (unix time {at})"),
                CommitState::Reverted { at } => {
                    format!("not confirmed in time: rolled back (unix time {at})")
                }
                CommitState::RollbackFailed { error } => {
                    format!("not confirmed in time, and the rollback failed: {error}")
                }
            };
            writeln!(
                out,
                "table inet portolan: {}",
                if st.table.is_some() {
                    "loaded"
                } else {
                    "not loaded"
                }
            )?;
            writeln!(out, "state: {state}")?;
            if let Some(t) = &st.table {
                out.write_all(t.as_bytes())?;
                if !t.ends_with('\n') {
                    writeln!(out)?;
                }
            }
            warn_all(ctx, &st.warnings);
            Ok(Outcome::of(st.table.is_some()))
        }
        FirewallCommand::Remove => {
            portolan_firewall::require_privileges()?;
            let dir = state_dir();
            let removed = portolan_firewall::remove_table(&dir)?;
            // Nothing left to roll back or confirm: the state goes too (and its parents
            // under /run, when empty).
            let _ = std::fs::remove_dir_all(&dir);
            for parent in dir.ancestors().skip(1).take(2) {
                if std::fs::remove_dir(parent).is_err() {
                    break;
                }
            }
            writeln!(
                out,
                "{}",
                if removed {
                    "removed portolan's table"
                } else {
                    "portolan's table was not loaded"
                }
            )?;
            Ok(Outcome::of(removed))
        }
    }
}
