//! `portolan scan`: a TCP connect scan, with results streamed as they are found. The
//! arguments become one `portolan_scan::ScanRequest`; the session runs the whole scan and
//! streams its events to `render::scan::ScanStream`: port records go out as JSON, JSON
//! Lines or CSV while the scan runs, and the per-host summary at the end becomes the table,
//! nmap XML and greppable files (`render::scan`, `render::nmap_xml`, `render::greppable`).

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use portolan_core::escape::{for_terminal, path_for_terminal};
use portolan_core::{Port, Protocol, ScanPorts, TargetSpec};
use portolan_scan::raw::RawOptions;
use portolan_scan::{
    raise_fd_limit, run_session, Detection, Method, ScanRequest, Shard, TimingPreset,
};

/// Raw probes in flight at most by default. A single host's window stops far below it,
/// but many silent hosts do not: each probe waits its full timeout, so the probes in
/// flight are the rate times the timeout (100,000 a second for a second's initial
/// timeout). Each costs about 60 bytes of bookkeeping (a flight, a deadline, a place in
/// the young queue); the flights' hash table, whose removals leave tombstones, doubles
/// once it is more than half full when they run out, so the cap stays under half of a
/// 2^18-bucket table's capacity (114,688): a /16 x 100 ports stays under 100 MB.
const RAW_MAX_PARALLEL: u32 = 100_000;

use crate::cli::{SignatureArgs, TableJsonCsv};
use crate::render::scan::{ScanStream, ScanTable};
use crate::render::{self, greppable, nmap_xml, Format, Output};
use crate::Outcome;

mod queue;

#[derive(Debug, Args)]
#[command(
    after_help = "nmap-style spellings are accepted too: -iL FILE, -oX FILE, -oG FILE, -Pn, -p-."
)]
pub struct ScanArgs {
    /// Addresses, CIDR blocks (198.18.0.0/24), ranges (198.18.0.1-20) or host names
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Read more targets from a file, one per line (`#` starts a comment) [nmap: -iL]
    #[arg(long, value_name = "FILE")]
    pub input_list: Option<std::path::PathBuf>,
    /// Leave these targets out (comma-separated, same forms as targets)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Ports: 22,80,8000-8100, `-` for 1-65535, open ranges (-1024, 60000-), T:/U: prefixes
    #[arg(
        short = 'p',
        long = "ports",
        value_name = "PORTS",
        allow_hyphen_values = true
    )]
    pub ports: Option<String>,
    /// Scan the N most common TCP ports by portolan's own ranking (default: 1000)
    /// [nmap: --top-ports]
    #[arg(long, value_name = "N", conflicts_with = "ports", alias = "top-ports")]
    pub top: Option<usize>,
    /// Treat every host as up: skip host discovery for blocks and ranges [nmap: -Pn]
    #[arg(long)]
    pub no_ping: bool,
    /// Include network and broadcast addresses of IPv4 blocks
    #[arg(long)]
    pub with_edges: bool,
    /// Numeric output: no reverse DNS lookups, no service names [nmap: -n]
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// Raw SYN scan: no handshake, no socket per probe, several times faster; needs root or
    /// CAP_NET_RAW [nmap: -sS]
    #[arg(long, conflicts_with = "connect")]
    pub syn: bool,
    /// Connect scan, the default: the kernel's full handshake, no privilege needed [nmap: -sT]
    #[arg(long)]
    pub connect: bool,
    /// UDP scan: each port's protocol payload, paced to the targets' ICMP rate limits;
    /// needs root or CAP_NET_RAW. With --syn or --connect, both in one run [nmap: -sU]
    #[arg(long)]
    pub udp: bool,
    /// Send the raw scan's packets with this source address (several, comma-separated:
    /// targets are spread over them) [nmap: -S]
    #[arg(
        short = 'S',
        long = "source-ip",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub source_ip: Vec<String>,
    /// Send the raw scan's packets through this interface [nmap: -e]
    #[arg(short = 'e', long = "interface", value_name = "IFACE")]
    pub interface: Option<String>,
    /// The raw scan's source port (by default a free one, reserved while the scan runs) [nmap: -g]
    #[arg(short = 'g', long, value_name = "PORT")]
    pub source_port: Option<u16>,
    /// Find out what answers on each open port: service, product, version [nmap: -sV]
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub sigs: SignatureArgs,
    /// Timing preset: paranoid, sneaky, polite, normal, aggressive, insane (or 0-5)
    #[arg(long, short = 'T', default_value = "normal", value_name = "PRESET")]
    pub timing: String,
    /// Send at this rate, probes per second (sets both --max-rate and --min-rate, as masscan's --rate)
    #[arg(long, value_name = "PPS", conflicts_with_all = ["max_rate", "min_rate"])]
    pub rate: Option<f64>,
    /// At most this many probes per second
    #[arg(long, value_name = "PPS")]
    pub max_rate: Option<f64>,
    /// At least this many probes per second (per-host windows may not hold it lower)
    #[arg(long, value_name = "PPS")]
    pub min_rate: Option<f64>,
    /// Retries of an unanswered probe (fixed; by default retries adapt to measured loss)
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u8>,
    /// Fixed probe timeout in milliseconds (by default it adapts to each host's RTT)
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
    /// At most this many probes in flight (always also bounded by the descriptor limit)
    #[arg(long, value_name = "N")]
    pub max_parallel: Option<u32>,
    /// Seed of the random visiting order (the same seed gives the same order)
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Scan only shard I of N (0-based, needs --seed); the N shards cover the scan once
    #[arg(long, value_name = "I/N", requires = "seed")]
    pub shard: Option<String>,
    /// Save progress to FILE, and continue from it if it exists
    #[arg(long, value_name = "FILE")]
    pub resume: Option<std::path::PathBuf>,
    /// Also write nmap-compatible XML to FILE [nmap: -oX]
    #[arg(long, value_name = "FILE")]
    pub xml_output: Option<std::path::PathBuf>,
    /// Also write nmap's greppable format to FILE [nmap: -oG]
    #[arg(long, value_name = "FILE")]
    pub grep_output: Option<std::path::PathBuf>,
    /// No progress line on stderr
    #[arg(long)]
    pub no_progress: bool,
    /// Queue the scan on PostgreSQL for `portolan worker`s instead of running it here, and
    /// print its id. Without URL: $PORTOLAN_QUEUE (which keeps a password out of `ps`).
    /// With --status, --results or --resume: the queue of that scan
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub queue: Option<String>,
    /// Positions (host x port) per chunk of a queued scan
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub chunk_size: u64,
    /// Progress of a queued scan: chunks, workers, rate, ETA (exit 0 once complete, 1 before)
    #[arg(long, value_name = "ID", conflicts_with_all = ["results", "targets"])]
    pub status: Option<i64>,
    /// What a queued scan found, in the outputs of a local scan (--json, -oX, ...)
    #[arg(long, value_name = "ID", conflicts_with = "targets")]
    pub results: Option<i64>,
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

/// The ports asked for: a list (`-p`) or the most common `--top N` (1000 by default).
/// The TCP and UDP ports asked for: a list (`-p`; without `T:`/`U:` prefixes it applies
/// to every scan type asked for, as nmap's does) or the most common `--top N` of each
/// protocol scanned (1000 by default). `tcp`/`udp`: which scans run.
fn ports(a: &ScanArgs, tcp: bool, udp: bool) -> anyhow::Result<(Vec<Port>, Vec<Port>)> {
    if let Some(p) = &a.ports {
        let sp = ScanPorts::parse(p).context("-p")?;
        let prefixed = p
            .split(',')
            .any(|i| i.trim().len() > 1 && i.trim().as_bytes()[1] == b':');
        let (t, u): (Vec<Port>, Vec<Port>) = if prefixed {
            (sp.tcp.iter().collect(), sp.udp.iter().collect())
        } else {
            let all: Vec<Port> = sp.tcp.iter().collect();
            (all.clone(), all)
        };
        if !udp && !u.is_empty() && prefixed {
            bail!("-p has U: ports but no UDP scan was asked for: add --udp (-sU)");
        }
        if !tcp && !t.is_empty() && prefixed {
            bail!("-p has T: ports but only a UDP scan was asked for: add --syn (-sS) or --connect (-sT)");
        }
        return Ok((
            if tcp { t } else { Vec::new() },
            if udp { u } else { Vec::new() },
        ));
    }
    let n = a.top.unwrap_or(1000);
    if n == 0 {
        bail!("--top must be at least 1");
    }
    let top = |proto| -> Vec<Port> {
        portolan_catalog::top_ports(proto, n)
            .iter()
            .map(|&p| Port::new(p))
            .collect()
    };
    Ok((
        if tcp { top(Protocol::Tcp) } else { Vec::new() },
        if udp { top(Protocol::Udp) } else { Vec::new() },
    ))
}

/// The timing preset with the user's overrides.
fn timing(a: &ScanArgs) -> anyhow::Result<portolan_scan::Timing> {
    let mut timing = TimingPreset::parse(&a.timing)
        .with_context(|| {
            format!(
                "unknown timing preset `{}`: paranoid, sneaky, polite, normal, aggressive, insane",
                for_terminal(&a.timing)
            )
        })?
        .params();
    if let Some(r) = a.max_retries {
        timing.max_retries = r.min(20);
        timing.adaptive_retries = false;
    }
    if let Some(ms) = a.timeout {
        if !(1..=600_000).contains(&ms) {
            bail!("--timeout must be between 1 and 600000 ms");
        }
        let d = Duration::from_millis(ms);
        (
            timing.initial_timeout,
            timing.min_timeout,
            timing.max_timeout,
        ) = (d, d, d);
    }
    for (name, v) in [
        ("--rate", a.rate),
        ("--max-rate", a.max_rate),
        ("--min-rate", a.min_rate),
    ] {
        if let Some(r) = v {
            if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) {
                bail!("{name} must be a positive number of probes per second, at most 10000000");
            }
        }
    }
    timing.max_rate = a.rate.or(a.max_rate);
    timing.min_rate = a.rate.or(a.min_rate);
    Ok(timing)
}

/// The scans asked for: the TCP one (connect by default, raw SYN with `--syn`; none with
/// `--udp` alone) and the UDP one; the raw options checked now (privilege, interface,
/// source addresses), before any discovery or lookup.
fn methods(a: &ScanArgs) -> anyhow::Result<(Option<Method>, Option<RawOptions>)> {
    let raw_only = [
        (!a.source_ip.is_empty(), "-S/--source-ip"),
        (a.interface.is_some(), "-e/--interface"),
        (a.source_port.is_some(), "-g/--source-port"),
    ];
    if !a.syn && !a.udp {
        if let Some((_, name)) = raw_only.iter().find(|(given, _)| *given) {
            bail!("{name} applies to the raw SYN scan (--syn, -sS); the connect scan lets the kernel choose");
        }
        return Ok((Some(Method::Connect), None));
    }
    let mut sources = Vec::new();
    for s in &a.source_ip {
        let ip: std::net::IpAddr = s
            .trim()
            .parse()
            .with_context(|| format!("-S `{}`: not an IP address", for_terminal(s)))?;
        sources.push(ip);
    }
    if a.source_port == Some(0) {
        bail!("--source-port must be between 1 and 65535");
    }
    let opts = RawOptions {
        sources,
        iface: a.interface.clone(),
        source_port: a.source_port,
        ack_ports: Vec::new(),
    };
    portolan_scan::raw::check(&opts)?;
    let tcp = if a.syn {
        Some(Method::Syn(opts.clone()))
    } else if a.connect {
        Some(Method::Connect)
    } else {
        None
    };
    Ok((tcp, a.udp.then_some(opts)))
}

/// The requests from validated arguments: one per protocol scanned (TCP, then UDP).
fn requests(ctx: &Output, a: &ScanArgs) -> anyhow::Result<Vec<ScanRequest>> {
    let (tcp, udp) = methods(a)?;
    let (tcp_ports, udp_ports) = ports(a, tcp.is_some(), udp.is_some())?;
    if tcp.is_some() && udp.is_some() && (a.resume.is_some() || a.shard.is_some()) {
        bail!("--resume and --shard follow one protocol's scan: scan TCP and UDP in two runs");
    }
    let mut out = Vec::new();
    if let Some(m) = tcp {
        out.push(request(ctx, a, m, tcp_ports)?);
    }
    if let Some(opts) = udp {
        let mut r = request(ctx, a, Method::Udp(opts), udp_ports)?;
        // Hosts found up by the TCP scan's discovery are scanned for UDP as they are.
        if !out.is_empty() {
            r.discovery = false;
        }
        out.push(r);
    }
    Ok(out)
}

/// One protocol's request.
fn request(
    ctx: &Output,
    a: &ScanArgs,
    method: Method,
    ports: Vec<Port>,
) -> anyhow::Result<ScanRequest> {
    let timing = timing(a)?;
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)
            .with_context(|| format!("--shard `{}`: write I/N with 0 <= I < N", for_terminal(s)))?,
        None => Shard::WHOLE,
    };
    let mut targets = Vec::new();
    for item in &a.targets {
        match TargetSpec::parse(item, a.with_edges) {
            Ok(s) => targets.push(s),
            Err(e) => ctx.note(&format!("skipping target (argument): {e}")),
        }
    }
    let excludes: Vec<TargetSpec> = a
        .exclude
        .iter()
        .map(|e| TargetSpec::parse(e, true))
        .collect::<Result<_, _>>()
        .context("--exclude")?;
    // Probes in flight: at most one per descriptor, and no more than the ephemeral range has
    // source ports (a connection to one host needs one each; EADDRNOTAVAIL still shrinks
    // the cap at run time if other programs use many).
    let fd = raise_fd_limit();
    let ephemeral = portolan_sockets::PortSysctls::read().ephemeral.len();
    // A raw scan holds no descriptor or port per probe: only the windows and the cap bound it.
    let max_parallel = match method {
        Method::Connect => a
            .max_parallel
            .unwrap_or(u32::MAX)
            .min(fd.for_probes)
            .min(ephemeral)
            .max(1),
        Method::Syn(_) | Method::Udp(_) => a.max_parallel.unwrap_or(RAW_MAX_PARALLEL).max(1),
    };
    let detection = if a.probe {
        Some(Detection {
            signatures: super::load_signatures(ctx, &a.sigs)?,
            parallel: 32,
        })
    } else {
        None
    };
    Ok(ScanRequest {
        targets,
        target_list: a.input_list.clone(),
        with_edges: a.with_edges,
        excludes,
        ports,
        timing,
        seed: a.seed,
        shard,
        resume: a.resume.clone(),
        discovery: !a.no_ping,
        numeric: a.numeric,
        // Only the machine formats write port records as they come; the table, XML and
        // greppable outputs are made from the hosts at the end.
        stream_ports: matches!(ctx.format, Format::Json | Format::Jsonl | Format::Csv),
        max_parallel,
        method,
        detection,
        interrupt: None,
    })
}

/// SIGINT and SIGTERM set the flag the session watches: the scan stops, saves its resume
/// file and writes its outputs as far as it got. A second signal ends the process at once
/// (exit 130), for a stop in a phase that does not watch the flag (service detection).
fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
    }
    Ok(flag)
}

pub fn run(ctx: &Output, a: &ScanArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let queued = a.status.is_some() || a.results.is_some() || a.queue.is_some();
    if queued {
        let Some(url) = queue::url(a) else {
            bail!(
                "--status and --results read a queued scan: give --queue URL (or $PORTOLAN_QUEUE)"
            );
        };
        if let Some(id) = a.status {
            return queue::status(ctx, &url, id, out);
        }
        if let Some(id) = a.results {
            return queue::results(ctx, a, &url, id, out);
        }
        if let Some(r) = &a.resume {
            if a.targets.is_empty() {
                let id: i64 = r.to_string_lossy().parse().map_err(|_| {
                    anyhow!("--resume with --queue and no target takes a queued scan's id")
                })?;
                return queue::resume(ctx, &url, id, out);
            }
        }
        return queue::enqueue(ctx, a, &url, out);
    }
    let reqs = requests(ctx, a)?;
    let flag = interrupt_flag()?;
    let ports: Vec<Port> = reqs.iter().flat_map(|r| r.ports.iter().copied()).collect();
    let detection = reqs.iter().any(|r| r.detection.is_some());
    let progress_on = !a.no_progress && io::stderr().is_terminal();
    let mut stream = ScanStream::new(ctx, progress_on, out);
    // One session per protocol, into one stream and one report.
    let mut summary: Option<portolan_scan::SessionSummary> = None;
    for mut req in reqs {
        req.interrupt = Some(Arc::clone(&flag));
        let s = run_session(req, &mut |e| stream.event(e, ctx));
        stream.clear_progress();
        let s = s?;
        let stop = s.stopped || s.interrupted || stream.has_error();
        summary = Some(match summary {
            None => s,
            Some(t) => portolan_scan::SessionSummary {
                hosts: t.hosts.max(s.hosts),
                ports: t.ports + s.ports,
                hosts_up: t.hosts_up.max(s.hosts_up),
                open: t.open + s.open,
                probes: t.probes + s.probes,
                results: t.results + s.results,
                started: t.started,
                elapsed: t.elapsed + s.elapsed,
                stopped: t.stopped || s.stopped,
                interrupted: t.interrupted || s.interrupted,
                checkpoint: t.checkpoint + s.checkpoint,
                positions: t.positions + s.positions,
            },
        });
        if stop {
            break;
        }
    }
    let Some(summary) = summary else {
        bail!("nothing to scan");
    };
    if let Some(e) = stream.take_error() {
        return Err(e.into());
    }
    let hosts = std::mem::take(&mut stream.hosts);
    let interrupted = summary.interrupted.then(|| {
        let resume = a.resume.as_ref().map_or_else(
            || "; --resume FILE saves progress to continue from".to_string(),
            |p| {
                format!(
                    "; progress saved in {}: run the same command to continue",
                    path_for_terminal(p)
                )
            },
        );
        format!(
            "interrupted after {} of {} positions{resume}",
            summary.checkpoint, summary.positions
        )
    });
    if summary.hosts == 0 {
        if let Some(msg) = interrupted {
            return Err(anyhow!(msg));
        }
        let out = stream.into_out()?;
        if ctx.is_table() {
            writeln!(out, "no host is up")?;
        }
        return Ok(Outcome::NothingMatched);
    }
    stream.finish(&summary);
    let out = stream.into_out()?;
    let outcome = if ctx.is_table() {
        let table = ScanTable {
            hosts: &hosts,
            summary: &summary,
            detection,
        };
        render::emit(out, ctx, &table)?
    } else {
        Outcome::of(summary.open > 0)
    };
    // The command line as text for the files' headers: any bytes, escaped (clap accepts
    // paths that are not UTF-8).
    let args: Vec<String> = std::env::args_os()
        .map(|a| portolan_core::escape::bytes_for_terminal(a.as_encoded_bytes()))
        .collect();
    if let Some(path) = &a.xml_output {
        let doc = nmap_xml::document(
            &hosts,
            &ports,
            &args.join(" "),
            summary.started,
            summary.elapsed,
            interrupted.as_deref(),
        );
        write_file(path, &doc)?;
    }
    if let Some(path) = &a.grep_output {
        write_file(
            path,
            &greppable::document(
                &hosts,
                &args.join(" "),
                summary.started,
                interrupted.as_deref(),
            ),
        )?;
    }
    if let Some(msg) = interrupted {
        return Err(anyhow!(msg));
    }
    Ok(outcome)
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path_for_terminal(path)))
}
