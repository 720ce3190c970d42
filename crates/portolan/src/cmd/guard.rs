//! `portolan guard`: hide ports behind single-packet authorization and knock sequences
//! (portolan-guard). `init` writes a working configuration and keys; with `--config` it
//! runs the guard; `status` lists who has access now; `remove` deletes the guard's
//! nftables table. Its output is an event stream (stderr lines, `--events` JSON lines,
//! `--webhook` POSTs), not a report: no format flags are declared.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use portolan_core::escape::for_terminal;
use portolan_core::when::parse_span;
use portolan_guard::config::{self, GuardConfig};
use portolan_guard::run::{self, Event, RunOptions};
use portolan_guard::PortProto;
use portolan_watch::alert::Webhook;
use portolan_watch::metrics::{self, Metrics};

use crate::cli::EventSinkArgs;
use crate::render::Output;
use crate::Outcome;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GuardArgs {
    #[command(subcommand)]
    pub command: Option<GuardCommand>,
    #[command(flatten)]
    pub run: GuardRunArgs,
}

#[derive(Debug, Subcommand)]
pub enum GuardCommand {
    /// Write a working DIR/guard.toml, the guard's key and a client's key (mode 0600)
    Init(GuardInitArgs),
    /// Who may reach the guarded ports now, and until when (needs root)
    Status,
    /// Delete the guard's nftables table: the guarded ports are no longer hidden (needs root)
    Remove,
}

#[derive(Debug, Args)]
pub struct GuardInitArgs {
    /// A port to guard, PORT/tcp or PORT/udp (repeatable)
    #[arg(short = 'p', long = "port", value_name = "PORT/PROTO", required = true)]
    pub ports: Vec<String>,
    /// The first client's name (its key goes to DIR/NAME.key)
    #[arg(long, value_name = "NAME")]
    pub client: String,
    /// Where to write the files (created if needed; existing files are never replaced)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The UDP port SPA packets go to
    #[arg(long, value_name = "PORT", default_value_t = portolan_guard::DEFAULT_SPA_PORT)]
    pub spa_port: u16,
    /// Also write a one-time knock sequence and its shared key (DIR/knock.key), for
    /// clients that can knock but not send a packet
    #[arg(long)]
    pub one_time_knock: bool,
}

#[derive(Debug, Args)]
pub struct GuardRunArgs {
    /// The configuration (`portolan guard init` writes one)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub sinks: EventSinkArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address)
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// No decision lines on stderr (--events and --webhook still get them)
    #[arg(short, long)]
    pub quiet: bool,
    /// Stop after this long (default: until SIGINT or SIGTERM)
    #[arg(long = "for", value_name = "SPAN")]
    pub for_: Option<String>,
    /// Delete the guard's table when stopping (default: it stays, so the ports stay hidden)
    #[arg(long)]
    pub remove_on_exit: bool,
    /// Do not keep the current SSH session's port open for its client
    #[arg(long)]
    pub no_ssh_guard: bool,
}

pub fn run(_ctx: &Output, a: &GuardArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match &a.command {
        Some(GuardCommand::Init(i)) => init(i, out),
        Some(GuardCommand::Status) => status(out),
        Some(GuardCommand::Remove) => {
            portolan_firewall::require_privileges()?;
            let loaded = portolan_guard::nft::is_loaded()?;
            portolan_guard::nft::remove()?;
            writeln!(
                out,
                "{}",
                if loaded {
                    "removed table inet portolan_guard: the guarded ports are reachable as the rest of the firewall allows"
                } else {
                    "no guard table was loaded"
                }
            )?;
            Ok(Outcome::Found)
        }
        None => serve(&a.run, out),
    }
}

fn init(a: &GuardInitArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let ports: Vec<PortProto> = a
        .ports
        .iter()
        .map(|p| p.parse::<PortProto>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()
        .context("--port")?;
    let done = config::init_with(
        &a.dir,
        &ports,
        &a.client,
        a.spa_port,
        None,
        a.one_time_knock,
    )?;
    let show = |p: &std::path::Path| for_terminal(&p.display().to_string()).into_owned();
    writeln!(out, "wrote {}", show(&done.config))?;
    writeln!(
        out,
        "wrote {} (the guard's key; stays here)",
        show(&done.server_key)
    )?;
    writeln!(
        out,
        "wrote {} (give it to {} over a safe channel)",
        show(&done.client_key),
        a.client
    )?;
    if a.one_time_knock {
        writeln!(
            out,
            "wrote {} (the one-time knock sequence's shared key)",
            show(&a.dir.join("knock.key"))
        )?;
    }
    writeln!(out, "run:   portolan guard --config {}", show(&done.config))?;
    writeln!(
        out,
        "knock: portolan knock HOST -p {} --key {}",
        ports[0],
        show(&done.client_key)
    )?;
    Ok(Outcome::Found)
}

fn status(out: &mut dyn Write) -> anyhow::Result<Outcome> {
    portolan_firewall::require_privileges()?;
    if !portolan_guard::nft::is_loaded()? {
        writeln!(out, "no guard table is loaded")?;
        return Ok(Outcome::NothingMatched);
    }
    let elements = portolan_guard::nft::list()?;
    if elements.is_empty() {
        writeln!(out, "guard table loaded; nobody has access now")?;
        return Ok(Outcome::NothingMatched);
    }
    for e in &elements {
        writeln!(
            out,
            "{} may reach {} for {} s more (opened for {} s)",
            e.addr,
            e.port,
            e.expires.as_secs(),
            e.timeout.as_secs()
        )?;
    }
    Ok(Outcome::Found)
}

fn serve(a: &GuardRunArgs, _out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let Some(path) = &a.config else {
        bail!("--config: give the guard's configuration (`portolan guard init` writes one)");
    };
    let cfg = GuardConfig::load(path)?;
    portolan_firewall::require_privileges()?;
    let duration = a
        .for_
        .as_deref()
        .map(|v| parse_span(v).context("--for"))
        .transpose()?;
    let mut events: Option<Box<dyn Write>> = match a.sinks.events.as_deref() {
        None => None,
        Some("-") => Some(Box::new(std::io::stdout())),
        Some(f) => Some(Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .with_context(|| format!("--events {}", for_terminal(f)))?,
        )),
    };
    let host = portolan_watch::history::hostname();
    let metrics = Metrics::new(&host);
    metrics.enable_guard();
    let webhook: Option<Webhook> = a
        .sinks
        .webhook_config()
        .map(|cfg| Webhook::start(cfg, metrics.clone()))
        .transpose()
        .context("--webhook")?;
    let server = match &a.metrics {
        None => None,
        Some(m) => {
            let addr: SocketAddr = m.parse().map_err(|_| {
                anyhow::anyhow!("--metrics: expected ADDR:PORT, e.g. 127.0.0.1:9478")
            })?;
            Some(metrics::serve(addr, metrics.clone(), false)?)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    let ssh = if a.no_ssh_guard {
        portolan_firewall::Guard::none()
    } else {
        portolan_firewall::Guard::detect(None)
    };
    let opts = RunOptions {
        stop: Arc::clone(&stop),
        duration,
        ssh,
        remove_on_exit: a.remove_on_exit,
    };
    let quiet = a.quiet;
    let mut err = std::io::stderr();
    let summary = run::serve(cfg, &opts, &mut |ev: &Event| {
        match ev {
            Event::Counted(d) => {
                metrics.guard_decision(d.via.as_str(), d.result);
                return;
            }
            Event::Decision(d) => metrics.guard_decision(d.via.as_str(), d.result),
            _ => {}
        }
        // One object for every sink: the same `ts_ms` in the file and in the POST.
        let json = ev.json();
        if let Some(w) = events.as_mut() {
            if serde_json::to_writer(&mut *w, &json).is_ok() {
                let _ = writeln!(w);
                let _ = w.flush();
            }
        }
        // Only decisions are alerted; the start line and notices are for the operator.
        if let (Some(hook), Event::Decision(_)) = (&webhook, ev) {
            hook.send(std::slice::from_ref(&json));
        }
        if !quiet || !matches!(ev, Event::Decision(_)) {
            let _ = writeln!(err, "portolan guard: {}", for_terminal(&ev.line()));
        }
    })?;
    if let Some(hook) = webhook {
        // As `watch` does: what is queued gets a few seconds to reach the receiver.
        hook.shutdown(Duration::from_secs(5));
    }
    if let Some(s) = server {
        s.shutdown();
    }
    let _ = writeln!(err, "portolan guard: stopped: {summary}");
    Ok(Outcome::Found)
}
