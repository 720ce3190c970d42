//! `portolan sentry`: who is scanning this machine, how, with what; and, with `--block`,
//! stop them for a while (portolan-sentry). Its output is an event stream (stderr lines,
//! `--events` JSON lines, `--webhook` POSTs, `--exec` runs, the history store), not a
//! report. `status` lists the blocked addresses, `unblock` lifts a block, `remove`
//! deletes the sentry's nftables table.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use portolan_core::cidr::Cidr;
use portolan_core::escape::for_terminal;
use portolan_core::when::parse_span;
use portolan_sentry::capture::Mode;
use portolan_sentry::detect::{Phase, ScanEvent, Thresholds};
use portolan_sentry::nft;
use portolan_sentry::run::{self, Event, NotBlocked, RunOptions, Stats};
use portolan_watch::alert::{exec_run_with_env, stderr_is_journal, Webhook};
use portolan_watch::metrics::{self, Metrics};

use crate::cli::{EventSinkArgs, StoreArgs};
use crate::render::Output;
use crate::Outcome;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SentryArgs {
    #[command(subcommand)]
    pub command: Option<SentryCommand>,
    #[command(flatten)]
    pub run: SentryRunArgs,
}

#[derive(Debug, Subcommand)]
pub enum SentryCommand {
    /// The addresses blocked now, and for how long (needs root)
    Status,
    /// Lift the block on an address (needs root)
    Unblock {
        /// The blocked address
        address: IpAddr,
    },
    /// Delete the sentry's nftables table, blocks included (needs root)
    Remove,
}

#[derive(Debug, Args)]
pub struct SentryRunArgs {
    /// Block each scanning source for SPAN (e.g. 10m, 1h) in the sentry's nftables table
    #[arg(long, value_name = "SPAN")]
    pub block: Option<String>,
    /// Never block these sources (repeatable; CIDR or address)
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,
    /// Block at most N addresses of each family at once
    #[arg(long, value_name = "N", default_value_t = nft::DEFAULT_BLOCK_CAP)]
    pub block_cap: u32,
    /// Watch the loopback interface too (by default this host scanning itself is ignored)
    #[arg(long)]
    pub loopback: bool,
    /// Thresholds from a TOML file (the fields of `[thresholds]`; see the README)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The NFLOG group the sentry's table logs to
    #[arg(long, value_name = "N", default_value_t = nft::DEFAULT_GROUP)]
    pub group: u16,
    /// Where packets come from: nflog (an nftables rule logs first contacts), packet
    /// (AF_PACKET, where nftables cannot be had; no ACK probes), or auto (nflog, else packet)
    #[arg(long, value_name = "HOW", default_value = "auto", value_parser = ["auto", "nflog", "packet"])]
    pub capture: String,
    #[command(flatten)]
    pub sinks: EventSinkArgs,
    /// Run `/bin/sh -c CMD` for each scan that starts (the scan in PORTOLAN_* variables)
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address)
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    /// No scan lines on stderr (the other sinks still get them)
    #[arg(short, long)]
    pub quiet: bool,
    /// Stop after this long (default: until SIGINT or SIGTERM)
    #[arg(long = "for", value_name = "SPAN")]
    pub for_: Option<String>,
    /// Do not spare the client of the current SSH session from blocks
    #[arg(long)]
    pub no_ssh_guard: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Do not record scans in the history store
    #[arg(long, conflicts_with_all = ["store", "db"])]
    pub no_store: bool,
}

pub fn run(ctx: &Output, a: &SentryArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match &a.command {
        Some(SentryCommand::Status) => status(out),
        Some(SentryCommand::Unblock { address }) => {
            portolan_firewall::require_privileges()?;
            if !nft::is_loaded()? {
                bail!("no sentry table is loaded: nothing is blocked");
            }
            let was = nft::blocked()?.iter().any(|b| b.address == *address);
            nft::unblock(*address)?;
            writeln!(
                out,
                "{}",
                if was {
                    format!("{address} is no longer blocked")
                } else {
                    format!("{address} was not blocked")
                }
            )?;
            Ok(if was {
                Outcome::Found
            } else {
                Outcome::NothingMatched
            })
        }
        Some(SentryCommand::Remove) => {
            portolan_firewall::require_privileges()?;
            let loaded = nft::is_loaded()?;
            nft::remove()?;
            writeln!(
                out,
                "{}",
                if loaded {
                    "removed table inet portolan_sentry: nothing is watched or blocked"
                } else {
                    "no sentry table was loaded"
                }
            )?;
            Ok(Outcome::Found)
        }
        None => serve(ctx, &a.run),
    }
}

fn status(out: &mut dyn Write) -> anyhow::Result<Outcome> {
    portolan_firewall::require_privileges()?;
    if !nft::is_loaded()? {
        writeln!(out, "no sentry table is loaded")?;
        return Ok(Outcome::NothingMatched);
    }
    let blocked = nft::blocked()?;
    if blocked.is_empty() {
        writeln!(out, "sentry table loaded; nothing is blocked")?;
        return Ok(Outcome::NothingMatched);
    }
    for b in &blocked {
        match b.expires_ms {
            Some(ms) => writeln!(out, "{} blocked for {} s more", b.address, ms / 1000)?,
            None => writeln!(out, "{} blocked", b.address)?,
        }
    }
    Ok(Outcome::Found)
}

/// Reads a thresholds file (`[thresholds]` with any of [`Thresholds`]' fields).
pub fn load_thresholds(text: &str) -> Result<Thresholds, String> {
    Thresholds::from_toml(text)
}

fn ports_text(s: &ScanEvent, n: usize) -> String {
    let mut t = String::new();
    for p in s.ports.iter().take(n) {
        if !t.is_empty() {
            t.push(' ');
        }
        let _ = write!(t, "{}/{}", p.port, p.proto.as_str());
    }
    if s.ports_total > n.min(s.ports.len()) {
        let _ = write!(t, " ...");
    }
    t
}

fn sources_text(s: &ScanEvent) -> String {
    let mut t = s
        .sources
        .iter()
        .take(4)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if s.sources_total > 4 {
        let _ = write!(t, " and {} more", s.sources_total - 4);
    }
    t
}

fn kinds_text(s: &ScanEvent) -> String {
    s.kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join("+")
}

/// The line for people (and the journal) of one event. Nothing in it comes from outside
/// but addresses and numbers; the tool's trait is our own text.
pub fn line(ev: &Event) -> String {
    match ev {
        Event::Started {
            capture,
            group,
            loopback,
            block,
            kept_blocks,
        } => {
            let mut s = if *capture == "NFLOG" {
                format!("watching (NFLOG group {group}")
            } else {
                format!("watching ({capture}")
            };
            if *loopback {
                s.push_str(", loopback included");
            }
            match block {
                Some(d) => {
                    let _ = write!(s, "; scanners blocked for {} s", d.as_secs());
                }
                None => s.push_str("; nothing is blocked"),
            }
            s.push(')');
            if *kept_blocks > 0 {
                let _ = write!(s, "; {kept_blocks} block(s) from before kept");
            }
            s
        }
        Event::Scan {
            scan,
            blocked,
            blocked_until_ms,
            not_blocked,
        } => {
            let what = match scan.phase {
                Phase::Start => "scan started",
                Phase::Progress => "scan going on",
                Phase::End => "scan ended",
            };
            let mut s = format!(
                "{what}: {} -> {} ({} scan",
                sources_text(scan),
                scan.addresses
                    .iter()
                    .take(2)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if scan.addresses_total > 2 { ", ..." } else { "" },
                kinds_text(scan)
            );
            if let Some(t) = &scan.tool {
                let _ = write!(s, ", likely {}: {}", t.tool.as_str(), t.because);
            }
            let _ = write!(
                s,
                "): {} port(s) [{}], {} probe(s), {} found nothing",
                scan.ports_total,
                ports_text(scan, 12),
                scan.probes,
                scan.failed
            );
            if scan.phase == Phase::Start {
                let _ = write!(
                    s,
                    "; detected by {} after {} probe(s), {} ms after the first",
                    scan.detector.as_str(),
                    scan.probes_to_detect,
                    scan.detected_ms - scan.started_ms
                );
            }
            if scan.phase == Phase::End {
                let _ = write!(
                    s,
                    "; lasted {:.1} s",
                    // Milliseconds to seconds for display.
                    f64::from(i32::try_from(scan.last_ms - scan.started_ms).unwrap_or(i32::MAX)) / 1000.0
                );
            }
            if !blocked.is_empty() {
                let _ = write!(
                    s,
                    "; blocked {}{}",
                    blocked
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    blocked_until_ms
                        .map(|u| format!(" until {}", portolan_watch::model::rfc3339_ms(u)))
                        .unwrap_or_default()
                );
            }
            for (a, why) in not_blocked {
                let _ = write!(
                    s,
                    "; {a} not blocked ({})",
                    match why {
                        NotBlocked::Allowed => "allow-listed",
                        NotBlocked::SshSession => "the SSH session in use",
                        NotBlocked::Local => "a local address",
                        NotBlocked::Full => "the block list is full",
                        NotBlocked::Infrastructure =>
                            "a gateway, name server or SSH peer of this host",
                        NotBlocked::Busy => "too many blocks waiting",
                    }
                );
            }
            s
        }
        Event::BlockFailed { address, error } => format!("could not block {address}: {error}"),
        Event::Overrun { times } => format!(
            "the kernel dropped logged packets {times} time(s): the sentry fell behind (counts may be low)"
        ),
        Event::Notice(n) => n.clone(),
    }
}

/// The JSON object of one event (the `--events` line, a webhook body's element).
pub fn json(ev: &Event, host: &str) -> serde_json::Value {
    use serde_json::json;
    let ts = run::now_ms();
    match ev {
        Event::Scan {
            scan,
            blocked,
            blocked_until_ms,
            not_blocked,
        } => {
            let mut v = serde_json::to_value(scan).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("event".into(), json!("scan"));
                o.insert("host".into(), json!(host));
                o.insert(
                    "ts".into(),
                    json!(portolan_watch::model::rfc3339_ms(scan.ts_ms)),
                );
                o.insert("blocked".into(), json!(blocked));
                o.insert("blocked_until_ms".into(), json!(blocked_until_ms));
                o.insert(
                    "not_blocked".into(),
                    json!(not_blocked
                        .iter()
                        .map(|(a, w)| json!({"address": a, "reason": w}))
                        .collect::<Vec<_>>()),
                );
            }
            v
        }
        Event::Started {
            capture,
            group,
            loopback,
            block,
            kept_blocks,
        } => {
            json!({"event": "started", "host": host, "ts_ms": ts, "capture": capture, "group": group,
            "loopback": loopback, "block_secs": block.map(|d| d.as_secs()), "kept_blocks": kept_blocks})
        }
        Event::BlockFailed { address, error } => {
            json!({"event": "block_failed", "host": host, "ts_ms": ts, "address": address, "error": error})
        }
        Event::Overrun { times } => {
            json!({"event": "overrun", "host": host, "ts_ms": ts, "times": times})
        }
        Event::Notice(n) => json!({"event": "notice", "host": host, "ts_ms": ts, "message": n}),
    }
}

/// The history store's row for a scan event: `key` is unique for this sentry's life
/// (`PID-START_MS-ID`), so every event of a scan updates one row.
fn scan_record(
    scan: &ScanEvent,
    host: &str,
    run_key: &str,
    blocked_until_ms: Option<i64>,
) -> portolan_watch::model::ScanRecord {
    portolan_watch::model::ScanRecord {
        host: host.to_owned(),
        key: format!("{run_key}-{}", scan.id),
        started_ms: scan.started_ms,
        detected_ms: scan.detected_ms,
        last_ms: scan.last_ms,
        ended_ms: (scan.phase == Phase::End).then_some(scan.ts_ms),
        sources: scan.sources.clone(),
        sources_total: scan.sources_total as u64,
        detector: scan.detector.as_str().to_owned(),
        kinds: scan.kinds.iter().map(|k| k.as_str().to_owned()).collect(),
        tool: scan.tool.as_ref().map(|t| t.tool.as_str().to_owned()),
        tool_because: scan.tool.as_ref().map(|t| t.because.clone()),
        ports: scan
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.proto.as_str()))
            .collect(),
        ports_total: scan.ports_total as u64,
        probes: scan.probes,
        failed: scan.failed,
        probes_to_detect: scan.probes_to_detect,
        blocked_until_ms,
    }
}

/// Writes scan records on a thread of its own: the newest record of each scan waits there
/// until the store takes it (a locked SQLite file, a PostgreSQL that is down: retried every
/// 2 s, a line on stderr at most once a minute), so a slow store never delays the sentry.
fn store_writer(
    mut store: Box<dyn portolan_watch::store::Store>,
) -> (
    mpsc::Sender<portolan_watch::model::ScanRecord>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel::<portolan_watch::model::ScanRecord>();
    let worker = std::thread::spawn(move || {
        let mut pending: std::collections::BTreeMap<String, portolan_watch::model::ScanRecord> =
            std::collections::BTreeMap::new();
        let mut last_warning: Option<std::time::Instant> = None;
        let mut open = true;
        while open || !pending.is_empty() {
            match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(r) => {
                    // Upserts: only the newest state of a scan matters; keep it when an
                    // older one is still pending (a record is never replaced by an older one).
                    let keep = pending
                        .get(&r.key)
                        .is_none_or(|old| old.last_ms <= r.last_ms || r.ended_ms.is_some());
                    if keep {
                        pending.insert(r.key.clone(), r);
                    }
                    while let Ok(r) = rx.try_recv() {
                        pending.insert(r.key.clone(), r);
                    }
                    // A store down for long: the oldest scans' records go first.
                    while pending.len() > 10_000 {
                        pending.pop_first();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
            }
            // Every pending record gets its try (one that the store refuses does not hold
            // up the others); stopping, this pass is the last.
            let keys: Vec<String> = pending.keys().cloned().collect();
            for k in keys {
                let Some(r) = pending.get(&k) else { continue };
                match store.record_scan(r) {
                    Ok(()) => {
                        pending.remove(&k);
                    }
                    Err(e) => {
                        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            last_warning = Some(std::time::Instant::now());
                            let _ = writeln!(
                                std::io::stderr(),
                                "portolan sentry: cannot record a scan in {}: {}; keeping it and trying again",
                                for_terminal(&store.describe()),
                                for_terminal(&e.to_string())
                            );
                        }
                    }
                }
            }
            if !open {
                return;
            }
        }
    });
    (tx, worker)
}

/// The variables an `--exec` run gets for a scan.
fn exec_env(scan: &ScanEvent, js: &serde_json::Value) -> Vec<(&'static str, OsString)> {
    let mut v: Vec<(&'static str, String)> = vec![
        ("PORTOLAN_EVENT", format!("scan_{}", scan.phase.as_str())),
        ("PORTOLAN_SCAN_ID", scan.id.to_string()),
        (
            "PORTOLAN_SOURCES",
            scan.sources
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ("PORTOLAN_SCAN_KINDS", kinds_text(scan)),
        ("PORTOLAN_PORTS", ports_text(scan, usize::MAX)),
        ("PORTOLAN_DETECTOR", scan.detector.as_str().to_owned()),
        ("PORTOLAN_EVENT_JSON", js.to_string()),
    ];
    if let Some(t) = &scan.tool {
        v.push(("PORTOLAN_TOOL", t.tool.as_str().to_owned()));
    }
    v.into_iter().map(|(k, s)| (k, OsString::from(s))).collect()
}

fn serve(ctx: &Output, a: &SentryRunArgs) -> anyhow::Result<Outcome> {
    let thresholds = match &a.config {
        None => Thresholds::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--config {}", for_terminal(&p.display().to_string())))?;
            load_thresholds(&text).map_err(|e| {
                anyhow::anyhow!(
                    "--config {}: {}",
                    for_terminal(&p.display().to_string()),
                    for_terminal(&e)
                )
            })?
        }
    };
    let block = a
        .block
        .as_deref()
        .map(|v| parse_span(v).context("--block"))
        .transpose()?;
    if let Some(d) = block {
        if d.is_zero() || d > nft::MAX_BLOCK {
            bail!(
                "--block: between 1 s and {} days",
                nft::MAX_BLOCK.as_secs() / 86_400
            );
        }
    }
    if a.block_cap == 0 {
        bail!("--block-cap: at least 1");
    }
    let allow: Vec<Cidr> = a
        .allow
        .iter()
        .map(|s| {
            s.parse::<Cidr>()
                .map_err(|e| anyhow::anyhow!("--allow {}: {e}", for_terminal(s)))
        })
        .collect::<anyhow::Result<_>>()?;
    let duration = a
        .for_
        .as_deref()
        .map(|v| parse_span(v).context("--for"))
        .transpose()?;
    let metrics_addr: Option<SocketAddr> = a
        .metrics
        .as_deref()
        .map(|m| {
            m.parse()
                .map_err(|_| anyhow::anyhow!("--metrics: expected ADDR:PORT, e.g. 127.0.0.1:9479"))
        })
        .transpose()?;
    portolan_firewall::require_privileges()
        .context("portolan sentry reads the kernel's packet log and loads an nftables table: run it as root (or with CAP_NET_ADMIN)")?;

    let store = if a.no_store {
        None
    } else {
        Some(
            portolan_watch::history::open_store(a.store.db.as_deref(), a.store.store.as_deref())
                .context("the history store (--no-store to run without it)")?,
        )
    };
    let run_key = format!("{}-{}", std::process::id(), run::now_ms());
    let recorder = store.map(store_writer);
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
    let stats = Arc::new(Stats::default());
    let webhook: Option<Webhook> = a
        .sinks
        .webhook_config()
        .map(|cfg| Webhook::start(cfg, metrics.clone()))
        .transpose()
        .context("--webhook")?;
    let server = match metrics_addr {
        None => None,
        Some(addr) => {
            let s = Arc::clone(&stats);
            metrics.set_extra(Arc::new(move || s.prometheus()));
            Some(metrics::serve(addr, metrics.clone(), false)?)
        }
    };
    // --exec: one thread runs the commands in order, fed through a bounded channel (a
    // slow command never delays the sentry; beyond 100 waiting, scans are not run).
    let exec_stopping = Arc::new(AtomicBool::new(false));
    let exec = a.exec.clone().map(|cmd| {
        let (tx, rx) = mpsc::sync_channel::<Vec<(&'static str, OsString)>>(100);
        let stopping = Arc::clone(&exec_stopping);
        let worker = std::thread::spawn(move || {
            for vars in rx {
                // Stopping: what is still queued is not run (each run may take 30 s).
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let outcome = exec_run_with_env(&cmd, vars, Duration::from_secs(30));
                if !outcome.is_success() {
                    let _ = writeln!(
                        std::io::stderr(),
                        "portolan sentry: --exec did not succeed: {outcome:?}"
                    );
                }
            }
        });
        (tx, worker)
    });
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    let ssh_client = if a.no_ssh_guard {
        None
    } else {
        portolan_firewall::Guard::detect(None).client
    };
    let opts = RunOptions {
        ssh_ports: if a.no_ssh_guard {
            Vec::new()
        } else {
            super::sshd_ports(ctx)
        },
        group: a.group,
        capture: match a.capture.as_str() {
            "nflog" => Mode::Nflog,
            "packet" => Mode::Packet,
            _ => Mode::Auto,
        },
        thresholds,
        loopback: a.loopback,
        block,
        allow,
        ssh_client,
        block_cap: a.block_cap,
        duration,
        stop: Arc::clone(&stop),
    };
    let quiet = a.quiet;
    let journal = stderr_is_journal();
    let mut err = std::io::stderr();
    // A scan's block is decided at its start; its later records keep saying so.
    let mut blocked_until: std::collections::HashMap<u64, i64> = std::collections::HashMap::new();
    let summary = run::serve(&opts, &stats, &mut |ev: &Event| {
        let js = json(ev, &host);
        if let Some(w) = events.as_mut() {
            if serde_json::to_writer(&mut *w, &js).is_ok() {
                let _ = writeln!(w);
                let _ = w.flush();
            }
        }
        if let Event::Scan {
            scan,
            blocked_until_ms,
            ..
        } = ev
        {
            if let Some(u) = blocked_until_ms {
                let e = blocked_until.entry(scan.id).or_insert(*u);
                *e = (*e).max(*u);
            }
            if let Some((tx, _)) = &recorder {
                let until = blocked_until.get(&scan.id).copied();
                let _ = tx.send(scan_record(scan, &host, &run_key, until));
            }
            if scan.phase == Phase::End {
                blocked_until.remove(&scan.id);
            }
            if let Some(hook) = &webhook {
                hook.send(std::slice::from_ref(&js));
            }
            if let (Some((tx, _)), Phase::Start) = (&exec, scan.phase) {
                let _ = tx.try_send(exec_env(scan, &js));
            }
        }
        let is_scan = matches!(ev, Event::Scan { .. });
        if !quiet || !is_scan {
            // Scan starts and block failures are warnings for the journal.
            let warn = matches!(
                ev,
                Event::Scan { scan, .. } if scan.phase == Phase::Start
            ) || matches!(ev, Event::BlockFailed { .. } | Event::Overrun { .. });
            let prefix = if journal && warn { "<4>" } else { "" };
            let _ = writeln!(err, "{prefix}portolan sentry: {}", for_terminal(&line(ev)));
        }
    });
    // The sinks are shut down whatever happened: the scans' end records come last.
    if let Some(hook) = webhook {
        hook.shutdown(Duration::from_secs(5));
    }
    exec_stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some((tx, worker)) = exec {
        drop(tx);
        let _ = worker.join();
    }
    if let Some((tx, worker)) = recorder {
        drop(tx);
        let _ = worker.join();
    }
    if let Some(s) = server {
        s.shutdown();
    }
    let summary = summary?;
    let _ = writeln!(
        err,
        "portolan sentry: stopped: {} packet(s) read, {} scan(s) detected, {} source(s) blocked",
        summary.packets, summary.scans, summary.blocked
    );
    Ok(Outcome::Found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_files_are_checked() {
        assert_eq!(load_thresholds("").unwrap(), Thresholds::default());
        let t = load_thresholds("[thresholds]\nmin_failed = 8\nvertical = 100\n").unwrap();
        assert_eq!((t.min_failed, t.vertical), (8, 100));
        for bad in [
            "[thresholds]\nnope = 1\n",
            "[thresholds]\ntheta0 = 2.0\n",
            "[thresholds]\nvertical = -1\n",
            "[other]\n",
            "\u{0}\u{1b}[2J",
            "[thresholds]\nwindow_secs = nan\n",
        ] {
            assert!(load_thresholds(bad).is_err(), "{bad:?}");
        }
    }
}
