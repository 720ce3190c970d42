//! `portolan watch`: the daemon. Builds the store, the alert sinks, the metrics endpoint
//! and the alert filter from the command line, then hands them to `portolan_watch::daemon`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use portolan_audit::{AuditInput, Policy};
use portolan_core::when::parse_span;
use portolan_core::Exposure;
use portolan_watch::alert::{AlertConfig, Alerts, EventsOut, WebhookConfig};
use portolan_watch::daemon::{self, WatchConfig};
use portolan_watch::metrics::{self, Metrics};
use portolan_watch::model::{Event, EventKind, Listener};
use portolan_watch::store::{self, Store};

use crate::cli::StoreArgs;
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
    /// Also write each event as a JSON line to FILE (appended), or to stdout with -
    #[arg(long, value_name = "FILE")]
    pub events: Option<String>,
    /// POST each batch of events as JSON to this http(s) URL (retried with backoff; never
    /// delays sampling)
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Attempts after the first before a webhook batch is dropped
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub webhook_retries: u32,
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

/// Opens the store the arguments name: --db, --store, $PORTOLAN_STORE, else the default
/// SQLite file.
pub fn open_store(a: &StoreArgs) -> anyhow::Result<Box<dyn Store>> {
    let spec = match (&a.db, &a.store) {
        (Some(p), _) => p.to_string_lossy().into_owned(),
        (None, Some(s)) => s.clone(),
        (None, None) => match std::env::var("PORTOLAN_STORE") {
            Ok(s) if !s.trim().is_empty() => s,
            _ => store::default_sqlite_path()?.to_string_lossy().into_owned(),
        },
    };
    Ok(store::open(&spec)?)
}

/// This machine's name, as the kernel has it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
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
    let policy = a
        .policy
        .as_deref()
        .map(|p| -> anyhow::Result<Policy> {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the policy {}", p.display()))?;
            Ok(Policy::parse(&p.display().to_string(), &text)?)
        })
        .transpose()?;
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

    let mut store = open_store(&a.store)?;
    store.claim_host(&host)?;
    let metrics = Metrics::new(&host);
    let server = metrics_addr
        .map(|addr| metrics::serve(addr, metrics.clone(), false))
        .transpose()?;
    let mut alerts = Alerts::new(
        AlertConfig {
            stderr: !a.quiet,
            events: a.events.as_deref().map(|e| {
                if e == "-" {
                    EventsOut::Stdout
                } else {
                    EventsOut::File(e.into())
                }
            }),
            webhook: a.webhook.as_ref().map(|url| WebhookConfig {
                retries: a.webhook_retries,
                ..WebhookConfig::new(url)
            }),
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
        policy.as_ref().is_none_or(|p| outside_policy(p, e))
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

/// The audit's view of a watched listener (strings escaped, as the audit expects).
fn audit_listener(l: &Listener) -> portolan_audit::Listener {
    let esc = |s: &Option<String>| s.as_deref().map(|v| crate::render::esc(v).into_owned());
    portolan_audit::Listener {
        proto: l.proto,
        addr: SocketAddr::new(l.address, l.port),
        v6only: None,
        owner: portolan_audit::Owner {
            pid: l.owner.pid,
            process: esc(&l.owner.process),
            exe: esc(&l.owner.exe),
            exe_deleted: false,
            uid: l.owner.uid,
            user: esc(&l.owner.user),
            unit: esc(&l.owner.unit),
            container: esc(&l.owner.container),
        },
    }
}

/// A listener the policy does not allow (PP findings not accepted by an exception), or a
/// required one that closed.
fn outside_policy(p: &Policy, e: &Event) -> bool {
    let l = audit_listener(&e.listener);
    if e.kind == EventKind::Closed {
        return p
            .allow
            .iter()
            .any(|r| r.required && r.covers_port(&l) && r.allows_addr(&l));
    }
    let listeners = [l];
    let findings = portolan_audit::audit(&AuditInput {
        policy: Some(p),
        ..AuditInput::new(&listeners)
    });
    findings
        .iter()
        .any(|f| f.id.starts_with("PP") && f.socket.is_some() && f.accepted.is_none())
}
