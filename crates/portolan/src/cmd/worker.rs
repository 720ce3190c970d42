//! `portolan worker URL`: leases chunks of queued scans from PostgreSQL, scans them, and
//! writes what it found. Any number of workers, on any machines, come and go: a chunk is
//! leased with `FOR UPDATE SKIP LOCKED`, the lease is renewed by a heartbeat thread, a
//! dead worker's chunk is leased again once its lease runs out, and results are upserted
//! on (scan, host, port, proto), so a chunk scanned twice cannot duplicate anything. A
//! worker that lost its lease writes nothing (the queue checks the lease's fencing token in
//! the same transaction).
//!
//! A chunk is scanned by the scan room itself, in this process (`crate::inproc`), with the
//! queued argument list plus `--seed S --shard I/N --jsonl`: the same engine, the same
//! records as a local scan.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::escape::for_terminal;
use portolan_core::when::parse_span;
use portolan_queue::{Lease, Queue};

use crate::render::Output;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The queue: postgres://USER:PASS@HOST:PORT/DB (also $PORTOLAN_QUEUE, which keeps a
    /// password out of `ps`)
    #[arg(value_name = "URL")]
    pub url: Option<String>,
    /// This worker's name in `scan --status` (default: host name and pid)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// At most this many probes per second from this worker (a scan's own --max-rate is
    /// shared among its workers; the lower of the two applies)
    #[arg(long, value_name = "PPS")]
    pub max_rate: Option<f64>,
    /// How long a lease lasts without a heartbeat (renewed every third of it)
    #[arg(long, value_name = "SPAN", default_value = "60s")]
    pub lease: String,
    /// Only chunks of this scan
    #[arg(long, value_name = "ID")]
    pub scan: Option<i64>,
    /// Stop when no chunk is left to lease (a batch job), instead of waiting for more
    #[arg(long)]
    pub exit_when_done: bool,
    /// Stop by itself after this span (between chunks)
    #[arg(long = "for", value_name = "SPAN")]
    pub for_: Option<String>,
    /// No line per chunk on stderr
    #[arg(short, long)]
    pub quiet: bool,
}

/// What a chunk's scan printed (`scan --json`): its records.
#[derive(serde::Deserialize)]
struct ChunkDoc {
    ports: Vec<portolan_queue::Record>,
}

fn queue_url(a: &WorkerArgs) -> Option<String> {
    a.url.clone().or_else(|| {
        std::env::var("PORTOLAN_QUEUE")
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
}

/// The argument list for one chunk: the queued scan's, plus its seed, the chunk as a
/// shard, the rate, and JSON Lines out.
fn chunk_args(lease: &Lease, rate: Option<f64>) -> anyhow::Result<Vec<String>> {
    let queued = lease.spec["args"]
        .as_array()
        .context("the queued scan has no argument list (written by another version?)")?;
    let mut args: Vec<String> = Vec::with_capacity(queued.len() + 6);
    for v in queued {
        let s = v
            .as_str()
            .context("the queued scan's arguments are not text")?;
        args.push(s.to_owned());
    }
    if args.first().map(String::as_str) != Some("scan") {
        bail!("the queued job is not a scan");
    }
    args.push(format!("--seed={}", lease.seed));
    args.push(format!("--shard={}/{}", lease.chunk, lease.chunks));
    if let Some(r) = rate {
        args.push(format!("--max-rate={r}"));
    }
    args.push("--no-progress".into());
    // `inproc` adds --json: the chunk's records come back as the document's `ports`.
    Ok(args)
}

pub fn run(ctx: &Output, a: &WorkerArgs, _out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let Some(url) = queue_url(a) else {
        bail!("portolan worker needs the queue's URL (or $PORTOLAN_QUEUE)");
    };
    let lease_for = parse_span(&a.lease).context("--lease")?;
    if lease_for < Duration::from_secs(1) {
        bail!("--lease: at least 1s");
    }
    if let Some(r) = a.max_rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--max-rate: a positive number of probes per second");
        }
    }
    let duration = a
        .for_
        .as_deref()
        .map(|v| parse_span(v).context("--for"))
        .transpose()?;
    let name = a.name.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            portolan_watch::history::hostname(),
            std::process::id()
        )
    });
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        bail!("--name: 1 to 128 printable characters");
    }
    let shown = Queue::url_for_humans(&url);
    let mut q = Queue::connect(&url).with_context(|| format!("queue {shown}"))?;
    // SIGTERM/SIGINT: finish the chunk in hand, then stop (a second one stops at once,
    // giving the chunk back).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let started = Instant::now();
    let mut idle_said = false;
    let mut chunks_done = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) || duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        q.heartbeat(&name, None, a.max_rate)?;
        let Some(lease) = q.lease(&name, lease_for, a.scan)? else {
            if a.exit_when_done {
                break;
            }
            if !idle_said && !a.quiet {
                ctx.note(&format!(
                    "worker {}: no chunk to scan; waiting",
                    for_terminal(&name)
                ));
                idle_said = true;
            }
            std::thread::sleep(Duration::from_secs(2));
            continue;
        };
        idle_said = false;
        let rate = match (lease.rate, a.max_rate) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        let args = match chunk_args(&lease, rate) {
            Ok(args) => args,
            Err(e) => {
                q.release(&lease)?;
                return Err(e.context(format!("scan {}", lease.scan_id)));
            }
        };
        // The heartbeat: its own connection, renewing every third of the lease.
        let lost = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let hb = {
            let (url, lease, lost, done) = (
                url.clone(),
                lease.clone(),
                Arc::clone(&lost),
                Arc::clone(&done),
            );
            std::thread::Builder::new()
                .name("worker-heartbeat".into())
                .spawn(move || heartbeat(&url, &lease, lease_for, &lost, &done))?
        };
        let t0 = Instant::now();
        let result = crate::inproc::cli_json(ctx.source, &args);
        done.store(true, Ordering::Relaxed);
        let _ = hb.join();
        let out = match result {
            Ok(o) => o,
            Err(e) => {
                q.release(&lease)?;
                bail!("scan {} chunk {}: {e}", lease.scan_id, lease.chunk);
            }
        };
        let records = serde_json::from_slice::<ChunkDoc>(&out.json)
            .with_context(|| format!("the records of chunk {}", lease.chunk))?
            .ports;
        // The positions this chunk covers: its shard of hosts x ports.
        let total =
            lease.spec["hosts"].as_u64().unwrap_or(0) * lease.spec["ports"].as_u64().unwrap_or(0);
        let positions = portolan_scan::Shard {
            index: u64::from(lease.chunk),
            count: u64::from(lease.chunks),
        }
        .positions(total);
        let open = records
            .iter()
            .filter(|r: &&portolan_queue::Record| r.state == portolan_core::PortState::Open)
            .count();
        let kept = !lost.load(Ordering::Relaxed) && q.complete(&lease, &records, positions)?;
        if !a.quiet {
            ctx.note(&if kept {
                format!(
                    "worker {}: scan {} chunk {}/{}: {} record(s), {open} open, {:.1} s",
                    for_terminal(&name),
                    lease.scan_id,
                    lease.chunk,
                    lease.chunks,
                    records.len(),
                    t0.elapsed().as_secs_f64()
                )
            } else {
                format!(
                    "worker {}: scan {} chunk {}: the lease was lost (another worker has it); nothing written",
                    for_terminal(&name),
                    lease.scan_id,
                    lease.chunk
                )
            });
        }
        chunks_done += u64::from(kept);
    }
    if !a.quiet {
        ctx.note(&format!(
            "worker {}: stopped after {chunks_done} chunk(s)",
            for_terminal(&name)
        ));
    }
    Ok(Outcome::Found)
}

/// Renews `lease` every third of `lease_for` until `done`; sets `lost` when the queue says
/// another worker has it now.
fn heartbeat(url: &str, lease: &Lease, lease_for: Duration, lost: &AtomicBool, done: &AtomicBool) {
    let Ok(mut q) = Queue::connect(url) else {
        return;
    };
    let every = lease_for / 3;
    let mut last = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        // An error (the database away for a moment) is tried again next time; only the
        // queue saying another worker has the chunk ends the heartbeat.
        if let Ok(false) = q.renew(lease, lease_for) {
            lost.store(true, Ordering::Relaxed);
            return;
        }
    }
}
