//! A scan queued on PostgreSQL for `portolan worker`s (`scan ... --queue URL`), and the
//! questions asked of it afterwards (`--status ID`, `--results ID`, `--resume ID`).
//!
//! The scan is cut into chunks of its permutation: chunk I of N is the scan's shard I/N
//! (`--seed S --shard I/N`, the same visiting order as one machine's), so the chunks cover
//! every position exactly once. What a worker runs is stored as an argument list of
//! `portolan scan` in canonical form (names resolved to addresses here, so every worker
//! expands the same hosts in the same order); a worker adds the seed, its shard and its
//! rate. Queued scans do not ping (every address is scanned, as masscan and zmap do):
//! discovery per chunk would ping every host once per chunk.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use portolan_core::escape::for_terminal;
use portolan_core::TargetSpec;
use portolan_queue::{Queue, ScanState};
use serde_json::json;

use super::ScanArgs;
use crate::render::scan::{ScanStream, ScanTable};
use crate::render::{self, greppable, nmap_xml, Format, Output};
use crate::Outcome;

/// The URL of the queue: `--queue URL`, else (`--queue` alone, or `--status`/`--results`
/// without it) `$PORTOLAN_QUEUE`, which keeps a password out of `ps`.
pub fn url(a: &ScanArgs) -> Option<String> {
    a.queue.clone().filter(|u| !u.is_empty()).or_else(|| {
        std::env::var("PORTOLAN_QUEUE")
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
}

fn connect(url: &str) -> anyhow::Result<Queue> {
    Queue::connect(url).with_context(|| format!("queue {}", Queue::url_for_humans(url)))
}

/// The argument list a worker runs (without seed, shard, rate and outputs), and the
/// number of hosts and ports it covers.
fn canonical(ctx: &Output, a: &ScanArgs) -> anyhow::Result<(Vec<String>, usize, usize)> {
    let refuse = [
        (
            a.resume.is_some(),
            "--resume FILE (a queued scan keeps its progress in the queue)",
        ),
        (
            a.shard.is_some(),
            "--shard (the queue cuts the scan itself)",
        ),
        (
            a.xml_output.is_some(),
            "-oX (ask `scan --results ID -oX FILE`)",
        ),
        (
            a.grep_output.is_some(),
            "-oG (ask `scan --results ID -oG FILE`)",
        ),
        (
            a.formats.json || a.formats.jsonl || a.formats.csv,
            "--json/--jsonl/--csv (ask `scan --results ID`)",
        ),
        (
            a.sigs.signatures.is_some() || a.sigs.nmap_probes.is_some(),
            "--signatures/--nmap-probes (files on this machine; workers have their own)",
        ),
    ];
    for (given, what) in refuse {
        if given {
            bail!("--queue cannot take {what}");
        }
    }
    let (tcp, udp) = super::methods(a)?;
    if tcp.is_some() && udp.is_some() {
        bail!("a queued scan is one protocol's: queue TCP and UDP as two scans");
    }
    let (tcp_ports, udp_ports) = super::ports(a, tcp.is_some(), udp.is_some())?;
    let ports = tcp_ports.len() + udp_ports.len();
    // Targets: addresses, blocks and ranges as typed; names resolved here, once.
    let mut texts: Vec<String> = a.targets.clone();
    if let Some(list) = &a.input_list {
        let text = portolan_audit::read_text(list)?;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            texts.extend(line.split_whitespace().map(str::to_owned));
        }
    }
    let mut targets = Vec::new();
    let mut specs = Vec::new();
    for t in &texts {
        let spec = match TargetSpec::parse(t, a.with_edges) {
            Ok(s) => s,
            Err(e) => {
                ctx.note(&format!("skipping target: {e}"));
                continue;
            }
        };
        match spec {
            TargetSpec::Name(_) => {
                let ex = portolan_scan::targets::expand(std::slice::from_ref(&spec), &[]);
                for r in &ex.rejected {
                    ctx.note(&format!("skipping target: {r}"));
                }
                targets.extend(ex.hosts.iter().map(ToString::to_string));
            }
            _ => targets.push(t.clone()),
        }
        specs.push(spec);
    }
    let excludes: Vec<TargetSpec> = a
        .exclude
        .iter()
        .map(|e| TargetSpec::parse(e, true))
        .collect::<Result<_, _>>()
        .context("--exclude")?;
    let ex = portolan_scan::targets::expand(&specs, &excludes);
    if ex.hosts.is_empty() {
        bail!("no target address is left to queue");
    }
    let mut args = vec!["scan".to_owned()];
    args.extend(targets);
    for e in &a.exclude {
        args.push(format!("--exclude={e}"));
    }
    let list = |ps: &[portolan_core::Port]| -> String {
        ps.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    args.push(format!(
        "--ports={}",
        if tcp.is_some() {
            list(&tcp_ports)
        } else {
            list(&udp_ports)
        }
    ));
    args.push("--no-ping".into());
    if a.with_edges {
        args.push("--with-edges".into());
    }
    if a.numeric {
        args.push("--numeric".into());
    }
    args.push(
        if a.udp {
            "--udp"
        } else if a.syn {
            "--syn"
        } else {
            "--connect"
        }
        .into(),
    );
    if !a.source_ip.is_empty() {
        args.push(format!("--source-ip={}", a.source_ip.join(",")));
    }
    if let Some(i) = &a.interface {
        args.push(format!("--interface={i}"));
    }
    if let Some(g) = a.source_port {
        args.push(format!("--source-port={g}"));
    }
    if a.probe {
        args.push("--probe".into());
    }
    args.push(format!("--timing={}", a.timing));
    if let Some(r) = a.max_retries {
        args.push(format!("--max-retries={r}"));
    }
    if let Some(t) = a.timeout {
        args.push(format!("--timeout={t}"));
    }
    if let Some(m) = a.max_parallel {
        args.push(format!("--max-parallel={m}"));
    }
    if let Some(r) = a.min_rate {
        args.push(format!("--min-rate={r}"));
    }
    Ok((args, ex.hosts.len(), ports))
}

fn random_seed() -> anyhow::Result<u64> {
    let mut b = [0u8; 8];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(std::io::Error::from)?;
    Ok(u64::from_le_bytes(b))
}

/// `scan ... --queue URL`: stores the scan and its chunks; prints the scan's id.
pub fn enqueue(
    ctx: &Output,
    a: &ScanArgs,
    url: &str,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    if a.chunk_size == 0 {
        bail!("--chunk-size: at least 1 position");
    }
    let (args, hosts, ports) = canonical(ctx, a)?;
    let positions = (hosts as u64).saturating_mul(ports as u64);
    let chunks = positions.div_ceil(a.chunk_size).clamp(1, 1_000_000);
    let chunks = u32::try_from(chunks).unwrap_or(1_000_000);
    let seed = match a.seed {
        Some(s) => s,
        None => random_seed()?,
    };
    let max_rate = a.rate.or(a.max_rate);
    let spec = json!({
        "args": args,
        "hosts": hosts,
        "ports": ports,
    });
    let mut q = connect(url)?;
    let id = q.create_scan(&spec, seed, chunks, positions, max_rate)?;
    writeln!(out, "{id}")?;
    ctx.note(&format!(
        "queued scan {id}: {hosts} host(s) x {ports} port(s) = {positions} positions in {chunks} chunk(s), seed {seed}; \
         start workers with `portolan worker URL` (any number, anywhere), follow with `portolan scan --status {id} --queue URL`"
    ));
    Ok(Outcome::Found)
}

/// `--resume ID`: expired leases back to pending, a cancelled scan back to the queue.
pub fn resume(ctx: &Output, url: &str, id: i64, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let mut q = connect(url)?;
    let n = q.resume(id)?;
    writeln!(out, "{id}")?;
    ctx.note(&format!(
        "scan {id}: {n} chunk(s) whose workers went away are queued again"
    ));
    Ok(Outcome::Found)
}

fn ago(ms: i64, now: i64) -> String {
    let s = (now - ms).max(0);
    #[expect(clippy::cast_precision_loss, reason = "seconds for people")]
    let secs = s as f64 / 1000.0;
    if secs < 120.0 {
        format!("{secs:.1} s ago")
    } else {
        format!("{:.0} min ago", secs / 60.0)
    }
}

/// `--status ID`: progress, workers, rate, ETA; exit 0 once complete, 1 before.
pub fn status(ctx: &Output, url: &str, id: i64, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let mut q = connect(url)?;
    let s = q.status(id)?;
    let complete = s.state == ScanState::Complete;
    if ctx.format == Format::Json || ctx.format == Format::Jsonl {
        render::write_json(out, &s, ctx.pretty)?;
        return Ok(Outcome::of(complete));
    }
    // "Last seen" against the database's clock, which stamped the heartbeats.
    let now = s.now_ms;
    writeln!(
        out,
        "scan {}: {} · {} of {} chunks done, {} leased, {} pending · {} of {} positions · {} results, {} open",
        s.id,
        s.state,
        s.done,
        s.chunks,
        s.leased,
        s.pending,
        s.positions_done,
        s.positions,
        s.results,
        s.open
    )?;
    match (s.rate_pps, s.eta_s) {
        (Some(r), Some(eta)) if !complete => {
            writeln!(out, "rate {r:.0} positions/s · about {eta:.0} s to go")?;
        }
        (Some(r), _) => writeln!(out, "rate {r:.0} positions/s")?,
        _ => {}
    }
    if !s.workers.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<render::Cell>> = s
            .workers
            .iter()
            .map(|w| {
                vec![
                    render::Cell::plain(for_terminal(&w.name).into_owned()),
                    render::Cell::plain(ago(w.last_seen_ms, now)),
                    render::Cell::plain(w.chunks_done.to_string()),
                    render::Cell::plain(w.positions_done.to_string()),
                    render::Cell::plain(
                        w.leased_chunk
                            .map_or_else(|| "-".to_owned(), |c| format!("chunk {c}")),
                    ),
                ]
            })
            .collect();
        render::write_table(
            out,
            ctx.style,
            &["WORKER", "LAST SEEN", "CHUNKS", "POSITIONS", "NOW"],
            &rows,
            "",
        )?;
    }
    Ok(Outcome::of(complete))
}

/// `--results ID`: the records the workers wrote, in the outputs of a local scan.
pub fn results(
    ctx: &Output,
    a: &ScanArgs,
    url: &str,
    id: i64,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let mut q = connect(url)?;
    let s = q.status(id)?;
    let stored = q.results(id)?;
    if s.state != ScanState::Complete {
        ctx.note(&format!(
            "scan {id} is not complete ({} of {} chunks done): these are the results so far",
            s.done, s.chunks
        ));
    }
    let records: Vec<portolan_scan::PortRecord> = stored
        .into_iter()
        .map(|r| {
            let mut p = portolan_scan::PortRecord::new(r.host, r.port, r.proto, r.state);
            p.reason = r.reason;
            p.rtt_ms = r.rtt_ms;
            p.ttl = r.ttl;
            p.service = r.service;
            p.service_source = r.service_source;
            p.hostname = r.hostname;
            p.product = r.product;
            p.version = r.version;
            p.info = r.info;
            p.cpe = r.cpe;
            p.banner = r.banner;
            p
        })
        .collect();
    let hosts_n = records
        .iter()
        .map(|r| r.host)
        .collect::<std::collections::HashSet<_>>()
        .len();
    let mut ports: Vec<portolan_core::Port> = records
        .iter()
        .map(|r| portolan_core::Port::new(r.port))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let started =
        UNIX_EPOCH + Duration::from_millis(u64::try_from(s.created_ms).unwrap_or_default());
    let mut stream = ScanStream::new(ctx, false, out);
    let _ = stream.event(
        portolan_scan::SessionEvent::Started(portolan_scan::ScanStart {
            seed: 0,
            shard: portolan_scan::Shard::WHOLE,
            hosts: hosts_n,
            ports: ports.len(),
            resumed_from: 0,
            started,
        }),
        ctx,
    );
    let open = records
        .iter()
        .filter(|r| r.state == portolan_scan::PortState::Open)
        .count() as u64;
    let results_n = records.len() as u64;
    for r in &records {
        let _ = stream.event(portolan_scan::SessionEvent::Port(Box::new(r.clone())), ctx);
    }
    let hosts = portolan_scan::summarize(records);
    let hosts_up = hosts.iter().filter(|h| h.up).count();
    let elapsed = SystemTime::now()
        .duration_since(started)
        .unwrap_or_default();
    let summary = portolan_scan::SessionSummary {
        hosts: hosts_n,
        ports: ports.len(),
        hosts_up,
        open,
        probes: 0,
        results: results_n,
        started,
        elapsed,
        stopped: false,
        interrupted: s.state != ScanState::Complete,
        checkpoint: s.positions_done,
        positions: s.positions,
    };
    stream.hosts = hosts;
    stream.finish(&summary);
    let hosts = std::mem::take(&mut stream.hosts);
    let out = stream.into_out()?;
    if ctx.is_table() {
        let table = ScanTable {
            hosts: &hosts,
            summary: &summary,
            detection: a.probe,
        };
        render::emit(out, ctx, &table)?;
    }
    let header = format!("portolan scan --results {id} (queued scan {id})");
    let incomplete =
        (s.state != ScanState::Complete).then(|| format!("{} of {} chunks done", s.done, s.chunks));
    if let Some(path) = &a.xml_output {
        let doc = nmap_xml::document(
            &hosts,
            &ports,
            &header,
            started,
            elapsed,
            incomplete.as_deref(),
        );
        super::write_file(path, &doc)?;
    }
    if let Some(path) = &a.grep_output {
        super::write_file(
            path,
            &greppable::document(&hosts, &header, started, incomplete.as_deref()),
        )?;
    }
    Ok(Outcome::of(open > 0))
}
