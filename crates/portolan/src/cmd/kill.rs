//! `portolan kill`: signal the processes listening on a port (never its clients), through
//! pidfds, and report whether the port was actually freed.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use portolan_core::{Port, PortRange, PortSpec, Protocol};
use portolan_sockets::kill::{self, KillSignal};
use portolan_sockets::{Inventory, OwnerScan, Query, SocketsError};
use serde_json::json;

use crate::cli::TableJson;
use crate::render::Output;
use crate::render::{esc, Format};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The port whose listeners to signal (8080 or 8080/udp)
    #[arg(allow_negative_numbers = true)]
    pub port: String,
    /// UDP instead of TCP
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Signal to send (TERM, KILL, INT, HUP, ... or a number)
    #[arg(short = 's', long, default_value = "TERM")]
    pub signal: String,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Show what would be signalled, and signal nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the port to be freed
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub wait: f64,
    #[command(flatten)]
    pub formats: TableJson,
}

pub fn run(ctx: &Output, a: &KillArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if ctx.format == Format::Csv {
        bail!("kill prints a table or --json/--jsonl, not --csv");
    }
    let (num, proto) = match a.port.split_once('/') {
        Some((n, p)) => (n, p.parse::<Protocol>()?),
        None => (
            a.port.as_str(),
            if a.udp { Protocol::Udp } else { Protocol::Tcp },
        ),
    };
    let port: Port = num.trim_start_matches(':').parse()?;
    if !matches!(proto, Protocol::Tcp | Protocol::Udp) {
        bail!("only tcp and udp listeners can be signalled");
    }
    let sig: KillSignal = a.signal.parse().map_err(|e: String| anyhow!(e))?;
    if !(0.0..=3600.0).contains(&a.wait) {
        bail!("--wait must be between 0 and 3600 seconds");
    }
    let spec = PortSpec::from_ranges(vec![PortRange::single(port)]);
    // A full owner walk: every process sharing the listener must be found, or the port
    // would stay held by the one we missed.
    let inv = Inventory::collect(&Query {
        tcp: proto == Protocol::Tcp,
        udp: proto == Protocol::Udp,
        listening_only: true,
        ports: Some(spec.clone()),
        owners: OwnerScan::All,
        source: ctx.source,
        ..Query::default()
    })?;
    let listeners: Vec<_> = inv
        .sockets
        .iter()
        .filter(|s| s.local.port() == port.get())
        .collect();
    if listeners.is_empty() {
        crate::render::note(ctx.err_color, &format!("nothing listens on {port}/{proto}"));
        return Ok(Outcome::NothingMatched);
    }
    // (pid, inode, description) for every holder of every listener.
    let mut plan: Vec<(u32, u64, String)> = Vec::new();
    for s in &listeners {
        if s.pids.is_empty() {
            if rustix::process::geteuid().is_root() {
                bail!(
                    "{port}/{proto} (socket uid {}) has no holder that can be found: its process's file descriptors are unreadable even to root, or no process holds it (e.g. a socket in flight over a unix socket)",
                    s.uid
                );
            }
            bail!(
                "{port}/{proto} is held by a process of uid {} that this user cannot see or signal; run as root",
                s.uid
            );
        }
        for p in inv.owners(s) {
            if !plan.iter().any(|(pid, ..)| *pid == p.pid) {
                let user = inv
                    .users
                    .name(p.uid)
                    .map_or_else(|| p.uid.to_string(), |n| esc(n).into_owned());
                plan.push((
                    p.pid,
                    s.inode,
                    format!(
                        "{} (pid {}, user {user}) listening on {}",
                        esc(&p.name),
                        p.pid,
                        s.local
                    ),
                ));
            }
        }
    }
    if let Some((pid, reason)) = plan
        .iter()
        .find_map(|&(pid, ..)| kill::refusal(pid).map(|r| (pid, r)))
    {
        bail!("refusing to signal pid {pid}: {reason}");
    }
    let human = ctx.format == Format::Table;
    if human {
        writeln!(
            out,
            "{} {sig} to:",
            if a.dry_run { "would send" } else { "sending" }
        )?;
        for (.., d) in &plan {
            writeln!(out, "  {d}")?;
        }
        out.flush()?;
    }
    if a.dry_run {
        if !human {
            write_json(out, port, proto, sig, &plan, &[], None, true)?;
        }
        return Ok(Outcome::Found);
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to signal without confirmation: standard input is not a terminal; pass --yes");
        }
        let mut err = std::io::stderr().lock();
        write!(err, "Send {sig} to {} process(es)? [y/N] ", plan.len())?;
        err.flush()?;
        drop(err);
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes" | "YES") {
            bail!("cancelled; nothing was signalled");
        }
    }
    let mut failures: Vec<String> = Vec::new();
    for (pid, inode, _) in &plan {
        match kill::signal_holder(*pid, *inode, sig) {
            Ok(()) => {}
            Err(SocketsError::Refused { pid, reason }) => {
                failures.push(format!("pid {pid}: {reason}"));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let freed = kill::wait_until_closed(&spec, proto, ctx.source, Duration::from_secs_f64(a.wait))?;
    if human {
        for f in &failures {
            writeln!(out, "  not signalled: {f}")?;
        }
        if freed {
            writeln!(out, "{port}/{proto} is free now")?;
        } else {
            writeln!(
                out,
                "{port}/{proto} is still held after {:.1}s; the process may be shutting down slowly, or ignore {sig} (try --signal KILL)",
                a.wait
            )?;
        }
    } else {
        write_json(out, port, proto, sig, &plan, &failures, Some(freed), false)?;
    }
    Ok(Outcome::of(freed))
}

#[allow(clippy::too_many_arguments)]
fn write_json(
    out: &mut dyn Write,
    port: Port,
    proto: Protocol,
    sig: KillSignal,
    plan: &[(u32, u64, String)],
    failures: &[String],
    freed: Option<bool>,
    dry_run: bool,
) -> std::io::Result<()> {
    serde_json::to_writer(
        &mut *out,
        &json!({
            "port": port.get(), "proto": proto.as_str(), "signal": sig.name(), "dry_run": dry_run,
            "pids": plan.iter().map(|(p, ..)| *p).collect::<Vec<_>>(),
            "failures": failures, "freed": freed,
        }),
    )?;
    writeln!(out)
}
