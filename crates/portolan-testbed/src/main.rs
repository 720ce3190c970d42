//! `portolan-testbed`: bring a testbed up for benchmark scripts (JSON on stdout, runs until
//! SIGTERM/SIGINT/SIGHUP, stdin closing or `--max-duration`), and remove leftovers.

use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use portolan_testbed::{
    netns, parse_compact, AcceptMode, HostSpec, IcmpReject, JitterDistribution, Testbed,
};

#[derive(Debug, Parser)]
#[command(
    name = "portolan-testbed",
    version,
    about = "Network testbed for portolan's scanner"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a testbed, print it as one line of JSON, keep it until told to stop.
    Up(UpArgs),
    /// Remove testbeds (their namespaces, with the processes, TUN devices and nftables
    /// tables inside).
    Down {
        /// Every `pt-` namespace, whoever created it.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// One testbed, by the `id` that `up` printed (`pt-<pid>-<n>`).
        #[arg(long, required_unless_present = "all")]
        id: Option<String>,
    },
    /// List the `pt-` namespaces that exist.
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Dist {
    Uniform,
    Normal,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Icmp {
    AdminProhibited,
    PortUnreachable,
    HostUnreachable,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Round-trip time added by the wire, in milliseconds (half each way).
    #[arg(long, default_value_t = 0.0)]
    rtt_ms: f64,
    /// Jitter of each one-way delay, in milliseconds.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Jitter distribution: uniform in [-j, +j] or normal with standard deviation j.
    #[arg(long, value_enum, default_value = "uniform")]
    jitter_dist: Dist,
    /// Loss probability per packet, each direction.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Probability that a packet is held back and overtaken.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Longest extra hold of a reordered packet, in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    reorder_ms: f64,
    /// Seed of the wire's random decisions.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ICMP error for the hosts' `icmp=` ports.
    #[arg(long, value_enum, default_value = "admin-prohibited")]
    icmp: Icmp,
    /// Keep the kernel's ICMP rate limits in the target namespace (also those of the
    /// closed UDP ports' port unreachables).
    #[arg(long)]
    icmp_rate_limit: bool,
    /// Hold accepted connections open (bounded) instead of closing them at once.
    #[arg(long)]
    hold: bool,
    /// Hosts in the compact form, one argument each, e.g.
    /// "v4=198.18.0.10 v6=2001:2::10 open=22,80 drop=1000-2000 icmp=3000 reset=4000 count=4".
    /// UDP: "udp=9,5000-5010" (answered by the echo responder), "udp-drop=6000-6999"
    /// (silence: open|filtered), "udp-icmp=7000" (the --icmp error: filtered),
    /// "svc=dns,snmp,ntp,echo" (dnsmasq on 53, snmpd on 161, ntpd on 123, echo on 7); every
    /// other UDP port is closed (ICMP port unreachable). "tarpit": every TCP port of the
    /// host completes the handshake.
    #[arg(long, num_args = 1.., value_name = "SPEC")]
    hosts: Vec<String>,
    /// A JSON file with an array of hosts ({"v4": ..., "v6": ..., "open": [...],
    /// "filtered_drop": [[a, b]], "filtered_icmp": ..., "closed_reset": ..., "up": true,
    /// "udp_open": [...], "udp_drop": [[a, b]], "udp_icmp": ...,
    /// "udp_services": [dns|snmp|ntp|echo, ...], "synack_all": false}).
    #[arg(long, value_name = "FILE")]
    hosts_file: Vec<PathBuf>,
    /// Stop after this many seconds at the latest.
    #[arg(long, default_value_t = 3600)]
    max_duration: u64,
    /// Do not stop when stdin closes (by default it is watched when it is a pipe, socket or
    /// terminal).
    #[arg(long)]
    ignore_stdin: bool,
}

fn ms(v: f64, what: &str) -> anyhow::Result<Duration> {
    if !(0.0..=60_000.0).contains(&v) {
        bail!("--{what} {v} must be between 0 and 60000 ms");
    }
    Ok(Duration::from_secs_f64(v / 1e3))
}

enum Stop {
    Signal(i32),
    StdinClosed,
}

fn stdin_is_watchable() -> bool {
    use rustix::fs::FileType;
    let stdin = io::stdin();
    stdin.is_terminal()
        || rustix::fs::fstat(&stdin).is_ok_and(|st| {
            matches!(
                FileType::from_raw_mode(st.st_mode),
                FileType::Fifo | FileType::Socket
            )
        })
}

fn up(a: &UpArgs) -> anyhow::Result<()> {
    let mut hosts: Vec<HostSpec> = Vec::new();
    for spec in &a.hosts {
        hosts.extend(parse_compact(spec).map_err(|e| anyhow::anyhow!("--hosts {spec:?}: {e}"))?);
    }
    for file in &a.hosts_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let more: Vec<HostSpec> = serde_json::from_str(&text)
            .with_context(|| format!("cannot parse {}", file.display()))?;
        hosts.extend(more);
    }

    // Signals were blocked in main before any thread existed; this thread receives them.
    let (tx, rx) = mpsc::channel::<Stop>();
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = portolan_testbed::wait_termination_signal() {
                let _ = sig_tx.send(Stop::Signal(sig));
            }
        })
        .context("cannot spawn the signal thread")?;

    let tb = Testbed::builder()
        .rtt(ms(a.rtt_ms, "rtt-ms")?)
        .jitter(ms(a.jitter_ms, "jitter-ms")?)
        .jitter_distribution(match a.jitter_dist {
            Dist::Uniform => JitterDistribution::Uniform,
            Dist::Normal => JitterDistribution::Normal,
        })
        .loss(a.loss)
        .reorder(a.reorder)
        .reorder_delay(ms(a.reorder_ms, "reorder-ms")?)
        .seed(a.seed)
        .icmp_reject(match a.icmp {
            Icmp::AdminProhibited => IcmpReject::AdminProhibited,
            Icmp::PortUnreachable => IcmpReject::PortUnreachable,
            Icmp::HostUnreachable => IcmpReject::HostUnreachable,
        })
        .icmp_rate_limit(a.icmp_rate_limit)
        .accept(if a.hold {
            AcceptMode::Hold
        } else {
            AcceptMode::Close
        })
        .hosts(hosts)
        .build()
        .context("cannot bring the testbed up")?;

    {
        let mut out = io::stdout().lock();
        serde_json::to_writer(&mut out, &tb.summary()).context("cannot write the summary")?;
        writeln!(out)
            .and_then(|()| out.flush())
            .context("cannot write the summary")?;
    }

    if !a.ignore_stdin && stdin_is_watchable() {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                let mut stdin = io::stdin().lock();
                // Ends at EOF or on an error; either means "the controller is gone".
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send(Stop::StdinClosed);
            })
            .context("cannot spawn the stdin thread")?;
    }
    drop(tx);

    let reason = match rx.recv_timeout(Duration::from_secs(a.max_duration)) {
        Ok(Stop::Signal(sig)) => format!("signal {sig}"),
        Ok(Stop::StdinClosed) => "stdin closed".to_owned(),
        Err(_) => format!("--max-duration {} s reached", a.max_duration),
    };
    let stats = tb.wire_stats();
    tb.shutdown().context("cannot remove the testbed cleanly")?;
    let mut err = io::stderr().lock();
    let _ = writeln!(
        err,
        "portolan-testbed: stopped ({reason}); wire: {}",
        serde_json::to_string(&stats).unwrap_or_default()
    );
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.cmd {
        Cmd::Up(a) => up(a),
        Cmd::Down { all, id } => {
            let removed = if *all {
                netns::remove_all()?
            } else if let Some(id) = id {
                if !id.starts_with(netns::PREFIX) {
                    bail!("testbed ids start with `{}`", netns::PREFIX);
                }
                netns::remove_id(id)?
            } else {
                Vec::new()
            };
            let mut out = io::stdout().lock();
            for name in removed {
                writeln!(out, "removed {name}")?;
            }
            Ok(())
        }
        Cmd::List => {
            let mut out = io::stdout().lock();
            for name in netns::list() {
                writeln!(out, "{name}")?;
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `up` blocks the termination signals before any thread exists, so every thread inherits
    // the mask and only its signal thread receives them: Ctrl-C and SIGTERM become a clean
    // teardown.
    if matches!(cli.cmd, Cmd::Up(_)) {
        if let Err(e) = portolan_testbed::block_termination_signals() {
            let _ = writeln!(io::stderr(), "portolan-testbed: cannot block signals: {e}");
            return ExitCode::from(2);
        }
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(io::stderr(), "portolan-testbed: {e:#}");
            ExitCode::from(2)
        }
    }
}
