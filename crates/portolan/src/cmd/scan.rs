//! `portolan scan`: a TCP connect scan, with results streamed as they are found.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::escape::for_terminal;
use portolan_core::{Port, Protocol, ScanPorts, TargetSpec};
use portolan_scan::{
    icmp, raise_fd_limit, rdns::ReverseNames, run_blocking, targets, PortResult, PortState,
    ScanEvent, ScanPlan, Shard, TimingPreset,
};
use serde::{Deserialize, Serialize};

use crate::cli::{SignatureArgs, TableJsonCsv};
use crate::render::Output;
use crate::render::{note, write_csv_row, write_table, Cell, Format, BOLD, DIM, GREEN, YELLOW};
use crate::Outcome;

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
    #[arg(long, value_name = "N", conflicts_with = "ports")]
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
    /// Find out what answers on each open port: service, product, version [nmap: -sV]
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub sigs: SignatureArgs,
    /// Timing preset: paranoid, sneaky, polite, normal, aggressive, insane (or 0-5)
    #[arg(long, short = 'T', default_value = "normal", value_name = "PRESET")]
    pub timing: String,
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
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

/// Ports used to tell whether a host in a block is up (connect pings).
const PING_PORTS: [u16; 5] = [80, 443, 22, 3389, 445];
/// A closed or filtered group larger than this is summarised instead of listed.
const LIST_LIMIT: usize = 25;

/// One port in JSON, JSONL and CSV.
#[derive(Debug, Serialize)]
struct PortRecord {
    host: String,
    port: u16,
    proto: &'static str,
    state: &'static str,
    reason: &'static str,
    rtt_ms: Option<f64>,
    /// With `--probe`, the service that answered; else the IANA name of the port.
    service: Option<String>,
    /// The name the user gave for the host, else its reverse name (when known by the
    /// time the record is written; `-n` skips reverse lookups).
    hostname: Option<String>,
    /// With `--probe`: what answered (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpe: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    banner: Option<String>,
    /// With `--probe`: the TLS handshake, when the port speaks TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<portolan_probe::TlsInfo>,
    /// With `--probe`: HTTP details (status, title, frameworks).
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<portolan_probe::HttpInfo>,
}

/// Writes one record in a streamed machine format.
fn write_record(
    format: Format,
    buf: &mut Vec<u8>,
    first: &mut bool,
    rec: &PortRecord,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            if !*first {
                buf.push(b',');
            }
            *first = false;
            serde_json::to_writer(&mut *buf, rec).map_err(std::io::Error::from)
        }
        Format::Jsonl => serde_json::to_writer(&mut *buf, rec)
            .map_err(std::io::Error::from)
            .and_then(|()| buf.write_all(b"\n")),
        Format::Csv => write_csv_row(
            buf,
            &[
                rec.host.clone(),
                rec.port.to_string(),
                rec.proto.into(),
                rec.state.into(),
                rec.reason.into(),
                rec.rtt_ms.map(|v| v.to_string()).unwrap_or_default(),
                rec.service.clone().unwrap_or_default(),
                rec.hostname.clone().unwrap_or_default(),
                rec.product.clone().unwrap_or_default(),
                rec.version.clone().unwrap_or_default(),
            ],
        ),
        Format::Table => Ok(()),
    }
}

fn record(r: &PortResult, numeric: bool, hostname: Option<String>) -> PortRecord {
    PortRecord {
        product: None,
        version: None,
        info: None,
        cpe: None,
        banner: None,
        tls: None,
        http: None,
        hostname,
        host: r.host.to_string(),
        port: r.port.get(),
        proto: r.proto.as_str(),
        state: r.state.as_str(),
        reason: r.reason,
        rtt_ms: r.rtt.map(|d| (d.as_secs_f64() * 1e5).round() / 100.0),
        service: if numeric {
            None
        } else {
            portolan_catalog::service_name(r.port, r.proto).map(str::to_owned)
        },
    }
}

/// Writes out and empties `buf`.
fn flush(out: &mut dyn Write, buf: &mut Vec<u8>) -> std::io::Result<()> {
    out.write_all(buf).and_then(|()| out.flush())?;
    buf.clear();
    Ok(())
}

/// The progress line on stderr (redrawn in place).
// Counts far below 2^52: f64 is exact for a progress line.
#[allow(clippy::cast_precision_loss)]
fn show_progress(p: &portolan_scan::Progress) {
    let pct = if p.total == 0 {
        100.0
    } else {
        p.done as f64 * 100.0 / p.total as f64
    };
    let eta = if p.rate > 0.0 {
        (p.total - p.done) as f64 / p.rate
    } else {
        0.0
    };
    let _ = write!(
        std::io::stderr().lock(),
        "\r\x1b[2K{:>5.1}%  {}/{} ports  {} open  {:.0} probes/s  {} in flight  ETA {:.0}s",
        pct,
        p.done,
        p.total,
        p.open,
        p.rate,
        p.in_flight,
        eta
    );
}

/// Probe timing from the host's measured RTT: the network's share scales with it, the
/// service's own think time (a greeting, a page) is a fixed allowance on top.
fn probe_options(rtt: Option<Duration>) -> portolan_probe::Options {
    let rtt = rtt.unwrap_or(Duration::from_millis(100));
    portolan_probe::Options {
        connect_timeout: (rtt * 4 + Duration::from_millis(500)).min(Duration::from_secs(5)),
        banner_wait: (rtt * 2 + Duration::from_millis(1500)).min(Duration::from_secs(5)),
        read_timeout: (rtt * 2 + Duration::from_millis(2500)).min(Duration::from_secs(8)),
        ..portolan_probe::Options::default()
    }
}

/// A record completed with what `--probe` learned.
fn probed_record(mut rec: PortRecord, rep: &portolan_probe::Report) -> PortRecord {
    if let Some(id) = &rep.identity {
        // Machine formats keep the protocol's name; `tls` says it is wrapped.
        rec.service = Some(id.service.clone());
        rec.product.clone_from(&id.product);
        rec.version.clone_from(&id.version);
        rec.info.clone_from(&id.info);
        rec.cpe.clone_from(&id.cpe);
    }
    rec.banner.clone_from(&rep.banner);
    rec.tls.clone_from(&rep.tls);
    rec.http.clone_from(&rep.http);
    rec
}

/// What the table, XML and greppable outputs need per host, in bounded memory: every open
/// port, and closed/filtered ports only while their group is small enough to list.
#[derive(Debug, Default)]
struct HostReport {
    /// The host's name and where it came from (`user` or `PTR`), set when the scan ends.
    name: Option<(String, &'static str)>,
    /// With `--probe`: what answered on each open port.
    probed: BTreeMap<u16, portolan_probe::Identity>,
    listed: Vec<PortResult>,
    counts: BTreeMap<(PortState, &'static str), u64>,
    state_counts: BTreeMap<PortState, u64>,
    rtt_sum: Duration,
    rtt_n: u32,
}

impl HostReport {
    fn add(&mut self, r: &PortResult) {
        *self.counts.entry((r.state, r.reason)).or_default() += 1;
        let n = self.state_counts.entry(r.state).or_default();
        *n += 1;
        if r.state == PortState::Open || *n <= LIST_LIMIT as u64 {
            self.listed.push(r.clone());
        }
        if let Some(rtt) = r.rtt {
            self.rtt_sum += rtt;
            self.rtt_n += 1;
        }
    }

    /// States shown port by port (open always; others while small).
    fn shown(&self, s: PortState) -> bool {
        s == PortState::Open || self.state_counts.get(&s).copied().unwrap_or(0) <= LIST_LIMIT as u64
    }

    fn up(&self) -> bool {
        self.counts
            .keys()
            .any(|(s, reason)| *s != PortState::Filtered || *reason == "admin-prohibited")
    }

    fn avg_rtt(&self) -> Option<Duration> {
        (self.rtt_n > 0).then(|| self.rtt_sum / self.rtt_n)
    }
}

/// The `--resume` file.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ResumeState {
    seed: u64,
    shard: String,
    total: u64,
    fingerprint: u64,
    checkpoint: u64,
}

fn fingerprint(hosts: &[IpAddr], ports: &[Port]) -> u64 {
    // FNV-1a over the addresses and ports: detects resuming with a different scan.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for ip in hosts {
        eat(ip.to_string().as_bytes());
    }
    for p in ports {
        eat(&p.get().to_be_bytes());
    }
    h
}

fn read_targets(a: &ScanArgs, err_color: bool) -> anyhow::Result<Vec<TargetSpec>> {
    let mut raw: Vec<(String, String)> = a
        .targets
        .iter()
        .map(|t| (t.clone(), "argument".into()))
        .collect();
    if let Some(path) = &a.input_list {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read target list {}", path.display()))?;
        let shown = for_terminal(&path.display().to_string()).into_owned();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            for item in line.split_whitespace() {
                raw.push((item.to_string(), format!("{shown}:{}", i + 1)));
            }
        }
    }
    let mut specs = Vec::new();
    for (item, origin) in raw {
        match TargetSpec::parse(&item, a.with_edges) {
            Ok(s) => specs.push(s),
            Err(e) => note(err_color, &format!("skipping target ({origin}): {e}")),
        }
    }
    if specs.is_empty() {
        bail!("no valid target: give addresses, blocks (198.18.0.0/24), ranges (198.18.0.1-20) or names");
    }
    Ok(specs)
}

pub fn run(ctx: &Output, a: &ScanArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    // Ports.
    let ports: Vec<Port> = if let Some(p) = &a.ports {
        let sp = ScanPorts::parse(p).context("-p")?;
        if !sp.udp.is_empty() {
            bail!("UDP scanning is not available yet; scan TCP ports (drop the U: items)");
        }
        sp.tcp.iter().collect()
    } else {
        let n = a.top.unwrap_or(1000);
        if n == 0 {
            bail!("--top must be at least 1");
        }
        portolan_catalog::top_ports(Protocol::Tcp, n)
            .iter()
            .map(|&p| Port::new(p))
            .collect()
    };
    // Timing.
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
    for (name, v) in [("--max-rate", a.max_rate), ("--min-rate", a.min_rate)] {
        if let Some(r) = v {
            if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) {
                bail!("{name} must be a positive number of probes per second");
            }
        }
    }
    timing.max_rate = a.max_rate;
    timing.min_rate = a.min_rate;
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)
            .with_context(|| format!("--shard `{}`: write I/N with 0 <= I < N", for_terminal(s)))?,
        None => Shard::WHOLE,
    };
    // Targets.
    let specs = read_targets(a, ctx.err_color)?;
    let excludes: Vec<TargetSpec> = a
        .exclude
        .iter()
        .map(|e| TargetSpec::parse(e, true))
        .collect::<Result<_, _>>()
        .context("--exclude")?;
    let expanded = targets::expand(&specs, &excludes);
    for r in &expanded.rejected {
        note(
            ctx.err_color,
            &format!("skipping target: {}", for_terminal(r)),
        );
    }
    if expanded.hosts.is_empty() {
        bail!("no address left to scan");
    }
    let fd = raise_fd_limit();
    // Probes in flight: at most one per descriptor, and no more than the ephemeral range has
    // source ports (a connection to one host needs one each; EADDRNOTAVAIL still shrinks
    // the cap at run time if other programs use many).
    let ephemeral = portolan_sockets::PortSysctls::read().ephemeral.len();
    let max_parallel = a
        .max_parallel
        .unwrap_or(u32::MAX)
        .min(fd.for_probes)
        .min(ephemeral)
        .max(1);
    let progress_on = !a.no_progress && std::io::stderr().is_terminal();

    // Host discovery for blocks and ranges.
    let mut hosts = expanded.hosts.clone();
    let discover = expanded.has_networks && !a.no_ping && hosts.len() > 1;
    if discover && shard.count > 1 {
        // Each machine would find its own set of hosts up, and the shards would then
        // cover different scans.
        bail!("--shard needs --no-ping (-Pn) for blocks and ranges, so every shard scans the same hosts");
    }
    if discover {
        let mut ping_timing = timing;
        ping_timing.max_retries = ping_timing.max_retries.min(1);
        let plan = ScanPlan {
            hosts: hosts.clone(),
            ports: PING_PORTS.iter().map(|&p| Port::new(p)).collect(),
            timing: ping_timing,
            seed: 1,
            shard: Shard::WHOLE,
            start_at: 0,
            max_parallel,
        };
        // ICMP echo alongside, where raw sockets are allowed (root or CAP_NET_RAW).
        let echo_hosts = hosts.clone();
        let echo_plan = icmp::EchoPlan {
            rate: timing.max_rate.unwrap_or(20_000.0),
            wait: timing.initial_timeout,
            rounds: 2,
        };
        let echo = std::thread::spawn(move || icmp::echo_sweep(&echo_hosts, echo_plan));
        let mut up: HashSet<IpAddr> = HashSet::new();
        let tcp = run_blocking(&plan, &mut |e| {
            if let ScanEvent::Port(r) = e {
                if matches!(r.state, PortState::Open | PortState::Closed) {
                    up.insert(r.host);
                }
            }
            ControlFlow::Continue(())
        });
        let echo = echo
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("thread failed")));
        tcp?;
        let ping_ports = PING_PORTS.map(|p| p.to_string()).join(", ");
        let how = match echo {
            Ok(answered) => {
                up.extend(answered);
                format!("a connect ping (ports {ping_ports}) or an ICMP echo")
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                format!("a connect ping (ports {ping_ports}; ICMP echo needs root or CAP_NET_RAW)")
            }
            Err(e) => {
                format!("a connect ping (ports {ping_ports}; ICMP echo failed: {e})")
            }
        };
        let before = hosts.len();
        hosts.retain(|h| up.contains(h));
        note(
            ctx.err_color,
            &format!(
                "host discovery: {} of {before} hosts answered {how}; --no-ping scans them all",
                hosts.len()
            ),
        );
        if hosts.is_empty() {
            if ctx.format == Format::Table {
                writeln!(out, "no host is up")?;
            }
            return Ok(Outcome::NothingMatched);
        }
    }

    // Names: the one the user gave, else a reverse lookup (skipped with -n), which gets a
    // short while before the scan starts; later answers still reach the report.
    let rdns = if a.numeric {
        ReverseNames::default()
    } else {
        let unnamed: Vec<IpAddr> = hosts
            .iter()
            .filter(|h| !expanded.names.contains_key(h))
            .copied()
            .collect();
        let r = ReverseNames::start(&unnamed);
        r.wait(Duration::from_millis(1500));
        r
    };
    let host_name = |ip: IpAddr| -> Option<(String, &'static str)> {
        match expanded.names.get(&ip) {
            Some(n) => Some((n.clone(), "user")),
            None => rdns.get(ip).map(|n| (n, "PTR")),
        }
    };

    // Seed and resume.
    let fp = fingerprint(&hosts, &ports);
    let total = hosts.len() as u64 * ports.len() as u64;
    let shard_label = format!("{}/{}", shard.index, shard.count);
    let mut seed = a.seed.unwrap_or_else(|| {
        // Any value will do; the low 64 bits of the clock's nanoseconds vary enough.
        #[allow(clippy::cast_possible_truncation)]
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
    });
    let mut start_at = 0;
    if let Some(path) = &a.resume {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let st: ResumeState = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a portolan resume file", path.display()))?;
            if st.total != total
                || st.fingerprint != fp
                || st.shard != shard_label
                || a.seed.is_some_and(|s| s != st.seed)
            {
                bail!(
                    "{} belongs to a different scan (targets, ports, shard or seed differ)",
                    path.display()
                );
            }
            seed = st.seed;
            start_at = st.checkpoint;
            note(
                ctx.err_color,
                &format!(
                    "resuming from {} of {} positions",
                    st.checkpoint,
                    shard.positions(total)
                ),
            );
        }
    }
    let plan = ScanPlan {
        hosts: hosts.clone(),
        ports: ports.clone(),
        timing,
        seed,
        shard,
        start_at,
        max_parallel,
    };
    let save_resume = |checkpoint: u64| -> anyhow::Result<()> {
        if let Some(path) = &a.resume {
            let st = ResumeState {
                seed,
                shard: shard_label.clone(),
                total,
                fingerprint: fp,
                checkpoint,
            };
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&st)?)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    };

    // Run, streaming machine formats and collecting per-host reports.
    let started = SystemTime::now();
    let mut reports: BTreeMap<IpAddr, HostReport> =
        hosts.iter().map(|h| (*h, HostReport::default())).collect();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut first = true;
    // Open ports waiting for --probe.
    let mut held: Vec<PortResult> = Vec::new();
    let mut io_err: Option<std::io::Error> = None;
    let mut last_saved = std::time::Instant::now();
    let mut resume_err: Option<anyhow::Error> = None;
    match ctx.format {
        Format::Json => {
            let head = serde_json::json!({
                "scanner": "portolan", "version": env!("CARGO_PKG_VERSION"), "type": "connect",
                "seed": seed, "shard": shard_label, "hosts": hosts.len(), "ports": ports.len(),
            });
            buf.extend_from_slice(br#"{"scan":"#);
            serde_json::to_writer(&mut buf, &head)?;
            buf.extend_from_slice(br#","ports":["#);
        }
        Format::Csv => {
            write_csv_row(
                &mut buf,
                &[
                    "host", "port", "proto", "state", "reason", "rtt_ms", "service", "hostname",
                    "product", "version",
                ]
                .map(String::from),
            )?;
        }
        _ => {}
    }
    // A Break stops the scan once its output is gone (a closed pipe): nobody reads the
    // rest.
    let summary = run_blocking(&plan, &mut |e| {
        match e {
            ScanEvent::Port(r) => {
                if let Some(rep) = reports.get_mut(&r.host) {
                    rep.add(&r);
                }
                if a.probe && r.state == PortState::Open {
                    // Written once probed, with what answered.
                    held.push(r);
                } else if ctx.format != Format::Table && io_err.is_none() {
                    // Streamed (the table is written at the end).
                    let rec = record(&r, a.numeric, host_name(r.host).map(|n| n.0));
                    let res = write_record(ctx.format, &mut buf, &mut first, &rec).and_then(|()| {
                        if buf.len() >= 1 << 16 {
                            flush(out, &mut buf)
                        } else {
                            Ok(())
                        }
                    });
                    io_err = res.err();
                }
            }
            ScanEvent::Progress(p) => {
                // Results stream: what is buffered goes out a few times a second.
                if !buf.is_empty() && io_err.is_none() && ctx.format != Format::Table {
                    io_err = flush(out, &mut buf).err();
                }
                if progress_on {
                    show_progress(&p);
                }
                if last_saved.elapsed() >= Duration::from_secs(1) {
                    last_saved = std::time::Instant::now();
                    if let Err(e) = save_resume(p.checkpoint) {
                        resume_err.get_or_insert(e);
                    }
                }
            }
            ScanEvent::Notice(n) => note(ctx.err_color, &n),
        }
        if io_err.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if progress_on {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
    if let Some(e) = io_err {
        return Err(e.into());
    }
    if let Some(e) = resume_err {
        return Err(e);
    }
    save_resume(summary.checkpoint)?;
    for (ip, rep) in &mut reports {
        rep.name = host_name(*ip);
    }
    if a.probe && !held.is_empty() {
        let sigs = crate::probed::signatures(ctx, &a.sigs)?;
        let targets: Vec<(SocketAddr, Option<String>, portolan_probe::Options)> = held
            .iter()
            .map(|r| {
                let rtt = reports.get(&r.host).and_then(HostReport::avg_rtt);
                // The name the user typed goes into payloads (HTTP Host); else the address.
                let name = expanded.names.get(&r.host).cloned();
                (
                    SocketAddr::new(r.host, r.port.get()),
                    name,
                    probe_options(rtt),
                )
            })
            .collect();
        if progress_on {
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2Kprobing {} open port(s)...",
                targets.len()
            );
        }
        let probed = portolan_probe::probe_many_with(&targets, &sigs, 32);
        if progress_on {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
        for (r, p) in held.iter().zip(&probed) {
            if let (Some(rep), Some(id)) = (reports.get_mut(&r.host), &p.identity) {
                // Tables, XML and greppable output name a TLS-wrapped service as such.
                let mut id = id.clone();
                id.service = crate::probed::service_name(&id, p.tls.as_ref());
                rep.probed.insert(r.port.get(), id);
            }
            let rec = probed_record(record(r, a.numeric, host_name(r.host).map(|n| n.0)), p);
            write_record(ctx.format, &mut buf, &mut first, &rec)?;
        }
    }
    let elapsed = started.elapsed().unwrap_or_default();
    let open_total: u64 = reports
        .values()
        .map(|r| r.state_counts.get(&PortState::Open).copied().unwrap_or(0))
        .sum();
    let up = reports.values().filter(|r| r.up()).count();
    match ctx.format {
        Format::Json => {
            buf.extend_from_slice(b"],\"summary\":");
            serde_json::to_writer(
                &mut buf,
                &serde_json::json!({
                    "elapsed_s": elapsed.as_secs_f64(), "probes": summary.probes, "results": summary.results,
                    "hosts_up": up, "open": open_total,
                }),
            )?;
            buf.extend_from_slice(b"}\n");
        }
        Format::Table => write_table_report(ctx, &reports, a.numeric, a.probe, &mut buf)?,
        _ => {}
    }
    out.write_all(&buf)?;
    if ctx.format == Format::Table {
        writeln!(
            out,
            "{}",
            ctx.style.paint(
                DIM,
                &format!(
                    "scanned {} host(s) x {} port(s) in {:.2}s: {} up, {} open port(s), {} probes",
                    hosts.len(),
                    ports.len(),
                    elapsed.as_secs_f64(),
                    up,
                    open_total,
                    summary.probes
                )
            )
        )?;
    }
    // The command line as text for the files' headers: any bytes, escaped (clap accepts
    // paths that are not UTF-8).
    let args: Vec<String> = std::env::args_os()
        .map(|a| portolan_core::escape::bytes_for_terminal(a.as_encoded_bytes()))
        .collect();
    if let Some(path) = &a.xml_output {
        write_file(
            path,
            &nmap_xml(&reports, &ports, &args.join(" "), started, elapsed),
        )?;
    }
    if let Some(path) = &a.grep_output {
        write_file(path, &greppable(&reports, &args.join(" "), started))?;
    }
    Ok(Outcome::of(open_total > 0))
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn state_color(s: PortState) -> &'static str {
    match s {
        PortState::Open => GREEN,
        PortState::Filtered => YELLOW,
        PortState::Closed => DIM,
    }
}

fn not_shown(rep: &HostReport) -> Vec<String> {
    let mut parts = Vec::new();
    for (state, n) in &rep.state_counts {
        if !rep.shown(*state) {
            let reasons: Vec<String> = rep
                .counts
                .iter()
                .filter(|((s, _), _)| s == state)
                .map(|((_, r), c)| format!("{r}: {c}"))
                .collect();
            parts.push(format!("{n} {} ({})", state.as_str(), reasons.join(", ")));
        }
    }
    parts
}

fn write_table_report(
    ctx: &Output,
    reports: &BTreeMap<IpAddr, HostReport>,
    numeric: bool,
    probing: bool,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    for (host, rep) in reports {
        let status = if rep.up() { "up" } else { "no answer" };
        let rtt = rep
            .avg_rtt()
            .map(|d| format!(", rtt {:.1} ms", d.as_secs_f64() * 1000.0))
            .unwrap_or_default();
        let name = rep
            .name
            .as_ref()
            .map(|(n, _)| format!(" ({})", for_terminal(n)))
            .unwrap_or_default();
        writeln!(
            out,
            "{}{name}  {status}{rtt}",
            ctx.style.paint(BOLD, &host.to_string())
        )?;
        let mut listed: Vec<&PortResult> =
            rep.listed.iter().filter(|r| rep.shown(r.state)).collect();
        listed.sort_by_key(|r| (r.state, r.port));
        if !listed.is_empty() {
            let rows: Vec<Vec<Cell>> = listed
                .iter()
                .map(|r| {
                    let mut row = vec![
                        Cell::plain(format!("{}/{}", r.port, r.proto)),
                        Cell::colored(r.state.as_str(), state_color(r.state)),
                        match rep.probed.get(&r.port.get()) {
                            Some(id) => Cell::plain(id.service.clone()),
                            None if numeric => Cell::plain(""),
                            None => Cell::plain(
                                portolan_catalog::service_name(r.port, r.proto).unwrap_or(""),
                            ),
                        },
                        Cell::plain(r.reason),
                        Cell::plain(
                            r.rtt
                                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
                                .unwrap_or_default(),
                        ),
                    ];
                    if probing {
                        row.push(Cell::plain(
                            rep.probed
                                .get(&r.port.get())
                                .map(crate::probed::version_text)
                                .unwrap_or_default(),
                        ));
                    }
                    row
                })
                .collect();
            let mut headers = vec!["PORT", "STATE", "SERVICE", "REASON", "RTT"];
            if probing {
                headers.push("VERSION");
            }
            write_table(out, ctx.style, &headers, &rows, "  ")?;
        }
        let hidden = not_shown(rep);
        if !hidden.is_empty() {
            writeln!(out, "  not shown: {}", hidden.join("; "))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// XML attribute escaping: the one escaper, `render::xml`.
fn xa(s: &str) -> String {
    crate::render::xml::escape(s)
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// nmap's XML output format (xmloutputversion 1.05), so ndiff, Metasploit's db_import and
/// other nmap consumers read portolan's results.
fn nmap_xml(
    reports: &BTreeMap<IpAddr, HostReport>,
    ports: &[Port],
    args: &str,
    start: SystemTime,
    elapsed: Duration,
) -> String {
    let mut x = String::new();
    let spec = portolan_core::PortSpec::from_ranges(
        ports
            .iter()
            .map(|p| portolan_core::PortRange::single(*p))
            .collect(),
    );
    let _ = writeln!(
        x,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE nmaprun>"
    );
    let _ = writeln!(
        x,
        "<nmaprun scanner=\"portolan\" args=\"{}\" start=\"{}\" version=\"{}\" xmloutputversion=\"1.05\">",
        xa(args),
        epoch(start),
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        x,
        "<scaninfo type=\"connect\" protocol=\"tcp\" numservices=\"{}\" services=\"{spec}\"/>",
        ports.len()
    );
    let end = epoch(start + elapsed);
    let mut up = 0;
    for (host, rep) in reports {
        let is_up = rep.up();
        up += usize::from(is_up);
        let state = if is_up { "up" } else { "down" };
        let reason = if is_up { "conn-refused" } else { "no-response" };
        let _ = writeln!(x, "<host starttime=\"{}\" endtime=\"{end}\"><status state=\"{state}\" reason=\"{reason}\" reason_ttl=\"0\"/>", epoch(start));
        let kind = if host.is_ipv4() { "ipv4" } else { "ipv6" };
        let _ = writeln!(
            x,
            "<address addr=\"{host}\" addrtype=\"{kind}\"/>\n<hostnames>"
        );
        if let Some((n, kind)) = &rep.name {
            let _ = writeln!(x, "<hostname name=\"{}\" type=\"{kind}\"/>", xa(n));
        }
        x.push_str("</hostnames>\n<ports>\n");
        for (st, n) in &rep.state_counts {
            if !rep.shown(*st) {
                let _ = writeln!(x, "<extraports state=\"{}\" count=\"{n}\">", st.as_str());
                for ((s, r), c) in &rep.counts {
                    if s == st {
                        let _ = writeln!(x, "<extrareasons reason=\"{r}\" count=\"{c}\"/>");
                    }
                }
                x.push_str("</extraports>\n");
            }
        }
        let mut listed: Vec<&PortResult> =
            rep.listed.iter().filter(|r| rep.shown(r.state)).collect();
        listed.sort_by_key(|r| r.port);
        for r in listed {
            let _ = write!(
                x,
                "<port protocol=\"tcp\" portid=\"{}\"><state state=\"{}\" reason=\"{}\" reason_ttl=\"0\"/>",
                r.port,
                r.state.as_str(),
                r.reason
            );
            if let Some(id) = rep.probed.get(&r.port.get()) {
                let _ = write!(x, "<service name=\"{}\"", xa(&id.service));
                for (k, v) in [
                    ("product", &id.product),
                    ("version", &id.version),
                    ("extrainfo", &id.info),
                ] {
                    if let Some(v) = v {
                        let _ = write!(x, " {k}=\"{}\"", xa(v));
                    }
                }
                x.push_str(" method=\"probed\" conf=\"10\">");
                if let Some(cpe) = &id.cpe {
                    let _ = write!(x, "<cpe>{}</cpe>", xa(cpe));
                }
                x.push_str("</service>");
            } else if let Some(name) = portolan_catalog::service_name(r.port, r.proto) {
                let _ = write!(
                    x,
                    "<service name=\"{}\" method=\"table\" conf=\"3\"/>",
                    xa(name)
                );
            }
            x.push_str("</port>\n");
        }
        x.push_str("</ports>\n");
        if let Some(rtt) = rep.avg_rtt() {
            let us = rtt.as_micros();
            let _ = writeln!(
                x,
                "<times srtt=\"{us}\" rttvar=\"{}\" to=\"{}\"/>",
                us / 2,
                us * 3
            );
        }
        x.push_str("</host>\n");
    }
    let _ = writeln!(
        x,
        "<runstats><finished time=\"{end}\" elapsed=\"{:.2}\" summary=\"portolan done: {} IP address(es) ({up} host(s) up) scanned in {:.2} seconds\" exit=\"success\"/><hosts up=\"{up}\" down=\"{}\" total=\"{}\"/>\n</runstats>\n</nmaprun>",
        elapsed.as_secs_f64(),
        reports.len(),
        elapsed.as_secs_f64(),
        reports.len() - up,
        reports.len()
    );
    x
}

/// A host's name for the greppable format (names are plain host-name characters: checked
/// at the source, see `rdns::plausible_name` and the target parser).
fn gname(rep: &HostReport) -> &str {
    rep.name.as_ref().map_or("", |(n, _)| n.as_str())
}

/// nmap's greppable format: one `Host:` line per host with its ports.
fn greppable(reports: &BTreeMap<IpAddr, HostReport>, args: &str, start: SystemTime) -> String {
    let mut g = format!(
        "# portolan {} scan initiated {} as: {}\n",
        env!("CARGO_PKG_VERSION"),
        epoch(start),
        args.replace('\n', " ")
    );
    for (host, rep) in reports {
        let _ = writeln!(
            g,
            "Host: {host} ({})\tStatus: {}",
            gname(rep),
            if rep.up() { "Up" } else { "Down" }
        );
        let mut listed: Vec<&PortResult> =
            rep.listed.iter().filter(|r| rep.shown(r.state)).collect();
        listed.sort_by_key(|r| r.port);
        let ports: Vec<String> = listed
            .iter()
            .map(|r| {
                // With --probe, what answered: service and version, as nmap writes them.
                let (service, version) = match rep.probed.get(&r.port.get()) {
                    Some(id) => (id.service.clone(), crate::probed::version_text(id)),
                    None => (
                        portolan_catalog::service_name(r.port, r.proto)
                            .unwrap_or("")
                            .to_owned(),
                        String::new(),
                    ),
                };
                format!(
                    "{}/{}/tcp//{service}//{}/",
                    r.port,
                    r.state.as_str(),
                    version.replace('/', "|")
                )
            })
            .collect();
        let ignored: Vec<String> = rep
            .state_counts
            .iter()
            .filter(|(s, _)| !rep.shown(**s))
            .map(|(s, n)| format!("{} ({n})", s.as_str()))
            .collect();
        let _ = write!(
            g,
            "Host: {host} ({})\tPorts: {}",
            gname(rep),
            ports.join(", ")
        );
        if !ignored.is_empty() {
            let _ = write!(g, "\tIgnored State: {}", ignored.join(", "));
        }
        g.push('\n');
    }
    let _ = writeln!(
        g,
        "# portolan done: {} IP address(es) scanned",
        reports.len()
    );
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_attributes() {
        assert_eq!(xa("a\"<b>&'\x1b"), "a&quot;&lt;b&gt;&amp;&apos;\\x1b");
    }

    #[test]
    fn report_lists_small_groups_and_summarises_big_ones() {
        let host: IpAddr = "198.18.0.1".parse().unwrap();
        let mut rep = HostReport::default();
        let mk = |port: u16, state, reason| PortResult {
            host,
            port: Port::new(port),
            proto: Protocol::Tcp,
            state,
            reason,
            rtt: Some(Duration::from_millis(2)),
            attempts: 1,
        };
        for p in 1..=100 {
            rep.add(&mk(p, PortState::Closed, "conn-refused"));
        }
        rep.add(&mk(22, PortState::Open, "syn-ack"));
        rep.add(&mk(1000, PortState::Filtered, "no-response"));
        assert!(
            rep.shown(PortState::Open)
                && rep.shown(PortState::Filtered)
                && !rep.shown(PortState::Closed)
        );
        assert_eq!(not_shown(&rep), ["100 closed (conn-refused: 100)"]);
        assert!(rep.listed.len() <= LIST_LIMIT + 2);
        let reports: BTreeMap<IpAddr, HostReport> = [(host, rep)].into();
        let xml = nmap_xml(
            &reports,
            &[Port::new(22)],
            "portolan scan",
            UNIX_EPOCH,
            Duration::from_secs(1),
        );
        assert!(xml.contains("<extraports state=\"closed\" count=\"100\">"));
        assert!(xml.contains(
            "<port protocol=\"tcp\" portid=\"22\"><state state=\"open\" reason=\"syn-ack\""
        ));
        let g = greppable(&reports, "portolan scan", UNIX_EPOCH);
        assert!(
            g.contains("22/open/tcp//ssh///") && g.contains("Ignored State: closed (100)"),
            "{g}"
        );
    }
}
