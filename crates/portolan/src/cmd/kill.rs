//! `portolan kill`: signal the processes listening on a port (never its clients), through
//! pidfds, and report whether the port was actually freed.

use std::io::{self, BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use portolan_core::escape::bytes_for_terminal;
use portolan_core::{LocalTarget, ParseError, Port, PortRange, PortSpec, Protocol};
use portolan_sockets::kill::{self, KillSignal};
use portolan_sockets::{Inventory, OwnerScan, Query, SocketsError};
use serde::Serialize;

use crate::cli::TableJson;
use crate::render::{self, esc, Output, Report, Style};
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

/// The port and protocol `kill` is asked about, parsed as `who` parses its targets (core's
/// `LocalTarget`): `8080`, `:8080`, `8080/udp`. A pid or a name is refused: `kill` frees
/// ports.
fn target(s: &str, udp: bool) -> anyhow::Result<(Port, Protocol)> {
    let not_a_port = |input: &str| {
        anyhow!("invalid port `{input}`: kill takes a port from 0 to 65535, as in 8080 or 53/udp")
    };
    let (port, proto) = match LocalTarget::parse(s, false) {
        Ok(LocalTarget::Port(p, proto)) => (p, proto),
        Ok(LocalTarget::Pid(_) | LocalTarget::Name(_)) => return Err(not_a_port(&esc(s))),
        Err(ParseError::InvalidTarget { input, .. }) => return Err(not_a_port(&input)),
        Err(e) => return Err(e.into()),
    };
    let proto = proto.unwrap_or(if udp { Protocol::Udp } else { Protocol::Tcp });
    if !matches!(proto, Protocol::Tcp | Protocol::Udp) {
        bail!("only tcp and udp listeners can be signalled");
    }
    Ok((port, proto))
}

/// One process to signal: its pid, the socket it holds, and how people read it (escaped).
#[derive(Debug)]
struct Holder {
    pid: u32,
    inode: u64,
    label: String,
}

/// What `kill` did, or would do with `--dry-run`. JSON: `port`, `proto`, `signal`, `dry_run`,
/// `pids` (of the holders), `failures`, `freed`.
#[derive(Debug, Serialize)]
struct KillReport {
    port: u16,
    proto: &'static str,
    #[serde(serialize_with = "signal_name")]
    signal: KillSignal,
    dry_run: bool,
    #[serde(rename = "pids", serialize_with = "holder_pids")]
    holders: Vec<Holder>,
    failures: Vec<String>,
    /// Whether the port was free at the end; `null` for a dry run.
    freed: Option<bool>,
    #[serde(skip)]
    wait: f64,
    /// The port was freed by someone else before anything was signalled.
    #[serde(skip)]
    already_free: bool,
}

fn signal_name<S: serde::Serializer>(sig: &KillSignal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(sig.name())
}

fn holder_pids<S: serde::Serializer>(holders: &[Holder], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(holders.iter().map(|h| h.pid))
}

impl KillReport {
    /// Nothing signalled yet; `holders` are the ones to signal.
    fn new(
        port: Port,
        proto: Protocol,
        a: &KillArgs,
        signal: KillSignal,
        holders: Vec<Holder>,
    ) -> KillReport {
        KillReport {
            port: port.get(),
            proto: proto.as_str(),
            signal,
            dry_run: a.dry_run,
            holders,
            failures: Vec::new(),
            freed: None,
            wait: a.wait,
            already_free: false,
        }
    }

    fn write_plan(&self, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "{} {} to:",
            if self.dry_run {
                "would send"
            } else {
                "sending"
            },
            self.signal
        )?;
        for h in &self.holders {
            writeln!(w, "  {}", h.label)?;
        }
        Ok(())
    }
}

impl Report for KillReport {
    /// The outcome; the plan was printed before the signals went out (and before asking).
    fn table(&self, w: &mut dyn Write, _style: Style) -> io::Result<()> {
        if self.already_free {
            return writeln!(
                w,
                "{}/{} is already free: nothing left to signal",
                self.port, self.proto
            );
        }
        if self.dry_run {
            return self.write_plan(w);
        }
        for f in &self.failures {
            writeln!(w, "  not signalled: {f}")?;
        }
        let (port, proto) = (self.port, self.proto);
        if self.freed == Some(true) {
            writeln!(w, "{port}/{proto} is free now")
        } else {
            writeln!(
                w,
                "{port}/{proto} is still held after {:.1}s; the process may be shutting down slowly, or ignore {} (try --signal KILL)",
                self.wait, self.signal
            )
        }
    }

    fn found(&self) -> bool {
        self.freed != Some(false)
    }
}

pub fn run(ctx: &Output, a: &KillArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let (port, proto) = target(&a.port, a.udp)?;
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
        ctx.note(&format!("nothing listens on {port}/{proto}"));
        return Ok(Outcome::NothingMatched);
    }
    // A listener with no holder found may have been closed between the dump and the walk
    // (another `kill` of the same port, or a server that stopped on its own): look again
    // before blaming an unreadable holder. Freed meanwhile is what was asked for: exit 0.
    if listeners.iter().any(|s| s.pids.is_empty())
        && kill::wait_until_closed(&spec, proto, ctx.source, Duration::from_millis(500))?
    {
        ctx.note(&format!(
            "{port}/{proto} was freed meanwhile: its holder exited or closed it (another kill, or the service stopping) before it could be signalled"
        ));
        let report = KillReport {
            freed: Some(true),
            already_free: true,
            ..KillReport::new(port, proto, a, sig, Vec::new())
        };
        return render::emit(out, ctx, &report);
    }
    let mut plan: Vec<Holder> = Vec::new();
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
            if !plan.iter().any(|h| h.pid == p.pid) {
                let user = inv
                    .users
                    .name(p.uid)
                    .map_or_else(|| p.uid.to_string(), |n| esc(n).into_owned());
                plan.push(Holder {
                    pid: p.pid,
                    inode: s.inode,
                    label: format!(
                        "{} (pid {}, user {user}) listening on {}",
                        bytes_for_terminal(&p.name),
                        p.pid,
                        s.local
                    ),
                });
            }
        }
    }
    if let Some((pid, reason)) = plan
        .iter()
        .find_map(|h| kill::refusal(h.pid).map(|r| (h.pid, r)))
    {
        bail!("refusing to signal pid {pid}: {reason}");
    }
    let n = plan.len();
    let mut report = KillReport::new(port, proto, a, sig, plan);
    if a.dry_run {
        return render::emit(out, ctx, &report);
    }
    if ctx.is_table() {
        report.write_plan(out)?;
        out.flush()?;
    }
    if !a.yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to signal without confirmation: standard input is not a terminal; pass --yes");
        }
        let mut err = std::io::stderr().lock();
        write!(err, "Send {sig} to {n} process(es)? [y/N] ")?;
        err.flush()?;
        drop(err);
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes" | "YES") {
            bail!("cancelled; nothing was signalled");
        }
    }
    let mut failures = Vec::new();
    for h in &report.holders {
        match kill::signal_holder(h.pid, h.inode, sig) {
            Ok(()) => {}
            Err(SocketsError::Refused { pid, reason }) => {
                failures.push(format!("pid {pid}: {reason}"));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    report.failures = failures;
    report.freed = Some(kill::wait_until_closed(
        &spec,
        proto,
        ctx.source,
        Duration::from_secs_f64(a.wait),
    )?);
    render::emit(out, ctx, &report)
}
