//! `portolan firewall`: plan, apply (commit-confirmed), confirm, status and remove
//! portolan's own nftables table (portolan-firewall), from a policy. The policy is the
//! audit's (portolan-audit reads it and turns it into the firewall's inbound rules, and
//! finds the SSH port the guard keeps); the firewall engine never sees the file format.
//! Every subcommand prints text only: no format flags are declared.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use portolan_audit::Policy;
use portolan_firewall::{ApplyOptions, CommitState, Guard, GuardScope, WatchdogLauncher};
use portolan_sockets::{Inventory, Query};
use serde::Serialize;

use crate::render::{self, Output, Report, Style};
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

/// sshd's listening TCP port on this machine, if one is found (for the SSH guard).
fn sshd_port(ctx: &Output) -> Option<u16> {
    let inv = Inventory::collect(&Query {
        udp: false,
        listening_only: true,
        source: ctx.source,
        ..Query::default()
    })
    .ok()?;
    portolan_audit::sshd_port(&inv.listeners())
}

/// What a firewall subcommand did, as the text it prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "command")]
enum FirewallReport {
    /// The nft script a policy makes.
    Plan {
        script: String,
    },
    /// The plan is loaded; `confirm_within` seconds to confirm (0: no rollback).
    Applied {
        confirm_within: u64,
    },
    Confirmed,
    Status {
        loaded: bool,
        state: String,
        table: Option<String>,
    },
    Removed {
        removed: bool,
    },
}

impl Report for FirewallReport {
    fn table(&self, w: &mut dyn Write, _style: Style) -> io::Result<()> {
        match self {
            FirewallReport::Plan { script } => w.write_all(script.as_bytes()),
            FirewallReport::Applied { confirm_within: 0 } => {
                writeln!(w, "applied: portolan's table is loaded (no rollback)")
            }
            FirewallReport::Applied { confirm_within } => writeln!(
                w,
                "applied: run `portolan firewall confirm` within {confirm_within} s to keep it; \
                 otherwise the previous state comes back by itself"
            ),
            FirewallReport::Confirmed => writeln!(w, "confirmed: portolan's table stays"),
            FirewallReport::Status {
                loaded,
                state,
                table,
            } => {
                writeln!(
                    w,
                    "table inet portolan: {}",
                    if *loaded { "loaded" } else { "not loaded" }
                )?;
                writeln!(w, "state: {state}")?;
                if let Some(t) = table {
                    w.write_all(t.as_bytes())?;
                    if !t.ends_with('\n') {
                        writeln!(w)?;
                    }
                }
                Ok(())
            }
            FirewallReport::Removed { removed } => writeln!(
                w,
                "{}",
                if *removed {
                    "removed portolan's table"
                } else {
                    "portolan's table was not loaded"
                }
            ),
        }
    }

    fn found(&self) -> bool {
        match self {
            FirewallReport::Status { loaded, .. } => *loaded,
            FirewallReport::Removed { removed } => *removed,
            _ => true,
        }
    }
}

/// The nft script for `--policy`, and the guard it keeps (restricted to the policy's
/// sources for its port, see `Guard::follow_policy`); says on stderr whom the guard admits
/// beyond what the policy lists.
fn plan(ctx: &Output, a: &FirewallPlanArgs) -> anyhow::Result<(String, Guard)> {
    let policy = Policy::load(&a.policy)?;
    let rules = policy.inbound_rules();
    let guard = if a.no_ssh_guard {
        Guard::none()
    } else {
        Guard::detect(sshd_port(ctx))
    };
    let (guard, scope) = guard.follow_policy(&rules);
    let port = guard.ssh_port.unwrap_or(22);
    match scope {
        GuardScope::EveryoneNoEntry => ctx.note(&format!(
            "the SSH guard keeps tcp/{port} open to every source (the policy has no \
             entry for it); add an [[allow]] for port {port} with `from = [...]` to restrict \
             it, or pass --no-ssh-guard"
        )),
        GuardScope::PolicySourcesAndClient(client) => ctx.note(&format!(
            "warning: the SSH guard also admits tcp/{port} from {client} (the client of this \
             SSH session), which the policy's `from` for that port does not list, so that \
             applying cannot cut this session; add {client} to `from` to make it explicit, or \
             pass --no-ssh-guard to follow the policy exactly"
        )),
        GuardScope::Off | GuardScope::EveryoneAsPolicy | GuardScope::PolicySources => {}
    }
    let script = portolan_firewall::render(&rules, &guard)?;
    Ok((script, guard))
}

fn warn_all(ctx: &Output, warnings: &[String]) {
    for w in warnings {
        ctx.note(&format!("warning: {w}"));
    }
}

fn commit_state(c: &CommitState) -> String {
    match c {
        CommitState::None => "no apply recorded".to_owned(),
        CommitState::Pending {
            seconds_left,
            kernel_deadline,
            watchdog,
        } => {
            let dog = watchdog.map_or_else(
                || "no watchdog recorded".to_owned(),
                |w| {
                    format!(
                        "watchdog pid {} {}",
                        w.pid,
                        if w.alive { "alive" } else { "dead" }
                    )
                },
            );
            let holder = if *kernel_deadline {
                "the kernel holds the deadline (the unconfirmed rules expire by themselves)"
            } else {
                "only the watchdog holds the deadline (the previous table was not in portolan's shape)"
            };
            format!("pending: rolls back in {seconds_left} s unless confirmed; {holder}; {dog}")
        }
        CommitState::Confirmed { at } => format!("confirmed (unix time {at})"),
        CommitState::Reverted { at, by, now } => {
            let by = by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default();
            if *now {
                format!(
                    "rollback overdue: performed now (the watchdog did not); \
                     not confirmed in time: rolled back (unix time {at}){by}"
                )
            } else {
                format!("not confirmed in time: rolled back (unix time {at}){by}")
            }
        }
        CommitState::RollbackFailed { error } => {
            format!("not confirmed in time, and the rollback failed: {error}")
        }
    }
}

/// Runs a firewall subcommand.
pub fn run(ctx: &Output, args: &FirewallArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let state_dir = portolan_firewall::default_state_dir;
    let report = match &args.command {
        FirewallCommand::Watchdog(w) => {
            let rolled_back = portolan_firewall::run_watchdog(&w.state_dir, w.generation)?;
            return Ok(Outcome::of(rolled_back));
        }
        FirewallCommand::Plan(a) => {
            let (script, guard) = plan(ctx, a)?;
            if guard.ssh_port.is_none() {
                ctx.note("no SSH guard: this plan may lock you out of a remote session");
            }
            FirewallReport::Plan { script }
        }
        FirewallCommand::Apply(a) => {
            portolan_firewall::require_privileges()?;
            let (script, _) = plan(ctx, &a.plan)?;
            let applied = portolan_firewall::apply(
                &script,
                &ApplyOptions {
                    state_dir: state_dir(),
                    confirm_within: Duration::from_secs(a.confirm_within),
                    watchdog: WatchdogLauncher::current_exe()?,
                },
            )
            .context("firewall apply")?;
            warn_all(ctx, &applied.warnings);
            FirewallReport::Applied {
                confirm_within: a.confirm_within,
            }
        }
        FirewallCommand::Confirm => {
            portolan_firewall::require_privileges()?;
            portolan_firewall::confirm(&state_dir())?;
            FirewallReport::Confirmed
        }
        FirewallCommand::Status => {
            portolan_firewall::require_privileges()?;
            let st = portolan_firewall::status(&state_dir())?;
            let r = FirewallReport::Status {
                loaded: st.table.is_some(),
                state: commit_state(&st.commit),
                table: st.table,
            };
            // After the status itself, as before: warnings about other rules.
            let outcome = render::emit(out, ctx, &r)?;
            warn_all(ctx, &st.warnings);
            return Ok(outcome);
        }
        FirewallCommand::Remove => {
            portolan_firewall::require_privileges()?;
            FirewallReport::Removed {
                removed: portolan_firewall::remove_table(&state_dir())?,
            }
        }
    };
    render::emit(out, ctx, &report)
}
