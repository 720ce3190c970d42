//! `portolan knock`: open a port hidden by `portolan guard` (or by fwknopd, or by a knock
//! daemon) for this machine's address, then check that it answers, and optionally run a
//! command. It prints one line of its own text per step: no format flags are declared.

use std::io::Write;
use std::net::{IpAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::escape::for_terminal;
use portolan_core::when::parse_span;
use portolan_guard::client;
use portolan_guard::keys::ClientKeyFile;
use portolan_guard::run::unix_now;
use portolan_guard::{PortProto, DEFAULT_SPA_PORT, L4};

use crate::render::Output;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct KnockArgs {
    /// The guarded host (an address or a name)
    pub host: String,
    /// A port to open, PORT/tcp or PORT/udp (repeatable)
    #[arg(short = 'p', long = "port", value_name = "PORT/PROTO")]
    pub ports: Vec<String>,
    /// The client key file (`portolan guard init` writes one; with --fwknop, the output
    /// of `fwknop --key-gen`)
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// How long to ask access for (the guard caps it; default: the guard's)
    #[arg(long = "for", value_name = "SPAN")]
    pub for_: Option<String>,
    /// The address to open, or `seen` for the address the guard sees the packet from
    /// (behind NAT). Default: `seen` (with --fwknop: this machine's address towards HOST)
    #[arg(long, value_name = "ADDR|seen")]
    pub open_for: Option<String>,
    /// The guard's SPA port (default: the key file's, else 62201)
    #[arg(long, value_name = "PORT")]
    pub spa_port: Option<u16>,
    /// Send an fwknop SPA packet (Rijndael + HMAC-SHA256), for fwknopd or portolan guard
    #[arg(long)]
    pub fwknop: bool,
    /// The user name an fwknop packet carries (default: $USER)
    #[arg(long, value_name = "NAME", requires = "fwknop")]
    pub fwknop_user: Option<String>,
    /// Knock this fixed sequence instead of sending a packet (comma-separated PORT/PROTO)
    #[arg(long, value_name = "SEQ", conflicts_with_all = ["key", "fwknop", "one_time_key"])]
    pub sequence: Option<String>,
    /// Knock the one-time sequence derived from this key file and the time
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key", "fwknop"])]
    pub one_time_key: Option<PathBuf>,
    /// Ports in a one-time sequence
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub steps: u8,
    /// The port range one-time sequences are drawn from (as the guard's one_time_ports)
    #[arg(long, value_name = "LOW-HIGH", default_value = "40000-40999")]
    pub range: String,
    /// The period of one-time sequences (as the guard's)
    #[arg(long, value_name = "SPAN", default_value = "30s")]
    pub period: String,
    /// Time between the knocks of a sequence
    #[arg(long, value_name = "SPAN", default_value = "50ms")]
    pub gap: String,
    /// How long to wait for the first TCP port to answer
    #[arg(long, value_name = "SPAN", default_value = "5s")]
    pub wait: String,
    /// Do not check that the port answers
    #[arg(long)]
    pub no_check: bool,
    /// Also write the SPA packet to FILE (mode 0600), as fwknop's --save-packet does
    #[arg(long, value_name = "FILE")]
    pub save_packet: Option<PathBuf>,
    /// Make the packet (and --save-packet it) but do not send it
    #[arg(long, requires = "save_packet")]
    pub dry_run: bool,
    /// A command to run once the port is open (after `--`); its exit status is ours
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn span(flag: &str, v: &str) -> anyhow::Result<Duration> {
    parse_span(v).with_context(|| format!("--{flag}"))
}

fn resolve(host: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let shown = for_terminal(host);
    let mut addrs = (host, 0u16)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {shown}"))?;
    addrs
        .next()
        .map(|a| a.ip())
        .with_context(|| format!("{shown} has no address"))
}

fn save(path: &std::path::Path, packet: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = for_terminal(&path.display().to_string()).into_owned();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("--save-packet {shown}"))?;
    f.write_all(packet)
        .with_context(|| format!("--save-packet {shown}"))
}

pub fn run(_ctx: &Output, a: &KnockArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let host = resolve(&a.host)?;
    let ports: Vec<PortProto> = a
        .ports
        .iter()
        .map(|p| p.parse::<PortProto>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()
        .context("-p")?;
    let duration = a.for_.as_deref().map(|v| span("for", v)).transpose()?;
    let wait = span("wait", &a.wait)?;
    let gap = span("gap", &a.gap)?;
    if let Some(seq) = &a.sequence {
        let seq: Vec<PortProto> = seq
            .split(',')
            .map(|p| p.parse::<PortProto>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()
            .context("--sequence")?;
        if seq.len() < 2 {
            bail!("--sequence: a sequence has at least two ports");
        }
        client::knock_sequence(host, &seq, gap)?;
        writeln!(out, "knocked {} ports on {host}", seq.len())?;
    } else if let Some(f) = &a.one_time_key {
        let kf = ClientKeyFile::load(f)?;
        let key = portolan_guard::keys::unb64_32(&kf.secret)
            .map_err(anyhow::Error::msg)
            .context("--one-time-key")?;
        let (lo, hi) = a
            .range
            .split_once('-')
            .and_then(|(l, h)| Some((l.trim().parse::<u16>().ok()?, h.trim().parse::<u16>().ok()?)))
            .filter(|(l, h)| *l > 0 && h > l && h - l >= 15)
            .context("--range: LOW-HIGH, at least 16 ports")?;
        if !(2..=8).contains(&a.steps) {
            bail!("--steps: 2 to 8");
        }
        let period = span("period", &a.period)?;
        let p = portolan_guard::knock::period_of(unix_now(), period);
        let seq = portolan_guard::knock::one_time_sequence(&key, a.steps, (lo, hi), p);
        client::knock_sequence(host, &seq, gap)?;
        writeln!(
            out,
            "knocked the one-time sequence of {} ports on {host}",
            seq.len()
        )?;
    } else {
        if ports.is_empty() {
            bail!("-p: give the port to open, e.g. -p 22/tcp");
        }
        let Some(keyfile) = &a.key else {
            bail!("--key: give the client key file (or --sequence / --one-time-key for knock sequences)");
        };
        let open_for = match a.open_for.as_deref() {
            Some("seen") => None,
            Some(v) => Some(v.parse::<IpAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "--open-for: {} is not an address or `seen`",
                    for_terminal(v)
                )
            })?),
            None if a.fwknop => client::source_for(host),
            None => None,
        };
        let (packet, spa_port) = if a.fwknop {
            let text = std::fs::read_to_string(keyfile).with_context(|| {
                format!("--key {}", for_terminal(&keyfile.display().to_string()))
            })?;
            let (key, hmac_key) = client::fwknop_keys_from_text(&text)
                .map_err(anyhow::Error::msg)
                .context("--key")?;
            let user = a
                .fwknop_user
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "root".to_owned());
            let addr = open_for.unwrap_or(match host {
                IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            });
            let fk = portolan_guard::fwknop::FwknopKey {
                client: user.clone(),
                key,
                hmac_key,
            };
            let timeout = duration.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
            let pkt =
                portolan_guard::fwknop::try_encode(&fk, &user, addr, &ports, timeout, unix_now())?;
            (pkt, a.spa_port.unwrap_or(DEFAULT_SPA_PORT))
        } else {
            let kf = ClientKeyFile::load(keyfile)?;
            let pkt = client::spa_packet(&kf, &ports, duration, open_for, unix_now())?;
            (pkt, a.spa_port.or(kf.spa_port).unwrap_or(DEFAULT_SPA_PORT))
        };
        if let Some(f) = &a.save_packet {
            save(f, &packet)?;
        }
        if a.dry_run {
            writeln!(
                out,
                "made a {}-byte SPA packet for {host} port {spa_port}/udp (not sent)",
                packet.len()
            )?;
            return Ok(Outcome::Found);
        }
        client::send_udp(host, spa_port, &packet)?;
        writeln!(
            out,
            "sent a {}-byte SPA packet to {host} port {spa_port}/udp",
            packet.len()
        )?;
    }
    let tcp = ports.iter().find(|p| p.proto == L4::Tcp);
    if !a.no_check {
        if let Some(p) = tcp {
            let Some(t) = client::wait_open(host, p.port, wait) else {
                writeln!(out, "{host} port {p} did not answer within {}", a.wait)?;
                return Ok(Outcome::NothingMatched);
            };
            writeln!(out, "{host} port {p} answers (after {} ms)", t.as_millis())?;
        }
    }
    if let Some((prog, args)) = a.command.split_first() {
        out.flush()?;
        let status = Command::new(prog)
            .args(args)
            .status()
            .with_context(|| format!("cannot run {}", for_terminal(prog)))?;
        if !status.success() {
            // The command's own status is ours (it has said why on its stderr).
            std::process::exit(status.code().unwrap_or(1));
        }
    }
    Ok(Outcome::Found)
}
