//! `portolan watch`: the daemon. Builds the store, the alert sinks, the metrics endpoint
//! and the alert filter from the command line, then hands them to `portolan_watch::daemon`.
//! Its output is the event stream (the store, `--events`, the webhook, `--exec`, stderr
//! lines), not a report: no format flags are declared, and the summary at the end is a note
//! on stderr, so that `--events -` owns stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use portolan_audit::Policy;
use portolan_core::when::parse_span;
use portolan_core::Exposure;
use portolan_watch::alert::{AlertConfig, Alerts, EventsOut};
use portolan_watch::daemon::{self, WatchConfig};
use portolan_watch::history::{hostname, open_store};
use portolan_watch::metrics::{self, Metrics};
use portolan_watch::model::{Event, EventKind};

use crate::cli::{EventSinkArgs, StoreArgs};
use crate::render::Output;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Time between samples (500ms, 2s, 1m)
    #[arg(long, value_name = "SPAN", default_value = "2s")]
    pub interval: String,
    /// How long a listener may vanish and still count as restarted, not closed
    #[arg(long, value_name = "SPAN", default_value = "10s")]
    pub grace: String,
    /// Name to record events under (default: this machine's hostname)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    #[command(flatten)]
    pub sinks: EventSinkArgs,
    /// Run this shell command for each event, with the event in PORTOLAN_* variables
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address, e.g. 127.0.0.1:9477)
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// Alert only on listeners other machines can reach (not loopback); all are recorded
    #[arg(long)]
    pub only_exposed: bool,
    /// Alert only on listeners this policy does not allow, and required ones that close
    /// (TOML, see POLICY.md); all are recorded
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,
    /// No event lines on stderr (the store, --events, --webhook and --exec still get them)
    #[arg(short, long)]
    pub quiet: bool,
    /// Stop after this many samples
    #[arg(long, value_name = "N")]
    pub samples: Option<u64>,
    /// Stop after this long (default: until SIGINT or SIGTERM)
    #[arg(long = "for", value_name = "SPAN")]
    pub for_: Option<String>,
}

fn span(flag: &str, v: &str) -> anyhow::Result<Duration> {
    parse_span(v).with_context(|| format!("--{flag}"))
}

pub fn run(ctx: &Output, a: &WatchArgs, _out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let interval = span("interval", &a.interval)?;
    if interval < Duration::from_millis(100) {
        bail!("--interval {}: at least 100ms", a.interval);
    }
    let grace = span("grace", &a.grace)?;
    let duration = a.for_.as_deref().map(|v| span("for", v)).transpose()?;
    let host = a.host.clone().unwrap_or_else(hostname);
    if host.is_empty() || host.len() > 253 || host.chars().any(char::is_control) {
        bail!("--host: a name of 1 to 253 printable characters");
    }
    let policy: Option<Policy> = a.policy.as_deref().map(Policy::load).transpose()?;
    let metrics_addr: Option<SocketAddr> = a
        .metrics
        .as_deref()
        .map(|m| {
            m.parse().with_context(|| {
                format!(
                    "--metrics {}: expected ADDR:PORT, e.g. 127.0.0.1:9477",
                    crate::render::esc(m)
                )
            })
        })
        .transpose()?;

    let mut store = open_store(a.store.db.as_deref(), a.store.store.as_deref())?;
    store.claim_host(&host)?;
    let metrics = Metrics::new(&host);
    let server = metrics_addr
        .map(|addr| metrics::serve(addr, metrics.clone(), false))
        .transpose()?;
    let mut alerts = Alerts::new(
        AlertConfig {
            stderr: !a.quiet,
            events: a.sinks.events.as_deref().map(|e| {
                if e == "-" {
                    EventsOut::Stdout
                } else {
                    EventsOut::File(e.into())
                }
            }),
            webhook: a.sinks.webhook_config(),
            exec: a.exec.clone(),
        },
        metrics.clone(),
    )?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    crate::render::note(
        ctx.err_color,
        &format!(
            "watching every {} as {host}; history in {}{}",
            a.interval,
            store.describe(),
            server
                .as_ref()
                .map(|s| format!("; metrics at http://{}/metrics", s.local_addr()))
                .unwrap_or_default()
        ),
    );
    let only_exposed = a.only_exposed;
    let filter = move |e: &Event| -> bool {
        if only_exposed && !exposed(e) {
            return false;
        }
        policy.as_ref().is_none_or(|p| {
            portolan_audit::outside_policy(p, &e.listener, e.kind == EventKind::Closed)
        })
    };
    let summary = daemon::run(
        &WatchConfig {
            host,
            interval,
            grace,
            refresh: Duration::from_secs(300),
            samples: a.samples,
            duration,
        },
        store.as_mut(),
        &mut alerts,
        &metrics,
        &filter,
        &stop,
    );
    alerts.shutdown(Duration::from_secs(5));
    if let Some(s) = server {
        s.shutdown();
    }
    if summary.unrecorded > 0 {
        bail!(
            "{} event(s) could not be recorded: the store {} kept failing",
            summary.unrecorded,
            store.describe()
        );
    }
    crate::render::note(
        ctx.err_color,
        &format!(
            "stopped after {} sample(s), {} event(s) recorded",
            summary.samples, summary.events
        ),
    );
    Ok(Outcome::Found)
}

/// Another machine could connect to it now, or could before the change.
fn exposed(e: &Event) -> bool {
    e.listener.exposure != Exposure::Loopback
        || e.previous
            .as_ref()
            .is_some_and(|p| p.exposure != Exposure::Loopback)
}
