//! The command line: one definition that drives parsing, `--help`, and the help snapshot.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "portolan",
    version,
    about = "What listens here, who owns it, and what the port number means.",
    long_about = "What listens here, who owns it, and what the port number means.\n\n\
        With no command, shows the listening TCP and UDP sockets grouped by process and unit, \
        most exposed first.",
    after_help = "Exit status: 0 when something was found, 1 when nothing matched, 2 on error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    /// Numeric output for the overview: no service names, no user names
    #[arg(short = 'n', long)]
    pub numeric: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Output one JSON document
    #[arg(long, global = true, conflicts_with_all = ["jsonl", "csv"])]
    pub json: bool,
    /// Output JSON Lines: one object per line
    #[arg(long, global = true, conflicts_with = "csv")]
    pub jsonl: bool,
    /// Output CSV with a header row
    #[arg(long, global = true)]
    pub csv: bool,
    /// When to use colour (auto: on a terminal, unless NO_COLOR is set)
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Where to read sockets from (auto: netlink, falling back to /proc/net)
    #[arg(long, global = true, value_enum, default_value_t = SourceChoice::Auto)]
    pub source: SourceChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceChoice {
    Auto,
    Netlink,
    Proc,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List sockets, with their owners (like `ss -tulpn`, with filters shaped like ss's)
    Ls(LsArgs),
    /// Who holds a port, or which ports a process, unit or pid holds
    Who(WhoArgs),
    /// What a port number or service name means, and who uses it here
    Info(InfoArgs),
    /// Find free ports, or tell whether a port is free (checked by really binding)
    Free(FreeArgs),
    /// Signal the processes listening on a port, and report whether it was freed
    Kill(KillArgs),
    /// What is open on other hosts: a TCP connect scan (no root needed)
    Scan(ScanArgs),
    /// What really answers on a port: service, product and version, by talking to it
    Probe(ProbeArgs),
    /// What this machine exposes that it should not, and how to fix each item
    Audit(AuditArgs),
    /// Policy as code: which listeners may exist (see POLICY.md)
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// portolan's own nftables table: allow inbound exactly what a policy allows
    Firewall(FirewallArgs),
    /// Record every listener that opens, closes or changes hands; alert and export metrics
    Watch(WatchArgs),
    /// What happened to listeners, from the watch history (`history 8080`: one port's life)
    History(HistoryArgs),
    /// Listeners now versus then, from the watch history
    Diff(DiffArgs),
    /// Print the man page or a shell completion script, generated from this CLI
    Generate(GenerateArgs),
}

/// Where the watch history is kept (`watch`, `history`, `diff`).
#[derive(Debug, Args, Default)]
pub struct StoreArgs {
    /// The history store: a SQLite file, or postgres://USER:PASS@HOST:PORT/DB shared by many
    /// hosts. Also read from $PORTOLAN_STORE (which keeps a password out of `ps`). Default:
    /// /var/lib/portolan/history.sqlite for root, else ~/.local/share/portolan/history.sqlite
    #[arg(long, value_name = "PATH|URL")]
    pub store: Option<String>,
    /// The history in this SQLite file (the same as --store PATH)
    #[arg(long, value_name = "PATH", conflicts_with = "store")]
    pub db: Option<std::path::PathBuf>,
}

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

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this port (its whole life: every event, and what holds it now)
    #[arg(value_name = "PORT")]
    pub port: Option<u16>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Events from this moment on: a span ago (2h, 1d) or a UTC date/time (2026-11-22T08:00)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Events up to this moment (same forms as --since)
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only this host's events (default: every host in the store)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Only listeners of this process (name or executable)
    #[arg(long, value_name = "NAME")]
    pub process: Option<String>,
    /// Only listeners of this systemd unit
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// Only these kinds: opened, closed, restarted, owner_changed, exposure_changed, present
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only tcp or udp
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<String>,
    /// At most this many events (the newest)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Compare with the listeners at this moment: a span ago (1d) or a UTC date/time
    #[arg(long, value_name = "WHEN", default_value = "1d")]
    pub since: String,
    /// The host to compare (default: this machine, now, from a live sample; another host's
    /// "now" is its last recorded state)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

#[derive(Debug, Args)]
pub struct FirewallArgs {
    #[command(subcommand)]
    pub command: FirewallCommand,
}

#[derive(Debug, Subcommand)]
pub enum FirewallCommand {
    /// Print the nftables ruleset that allows inbound exactly what the policy allows
    Plan(FirewallPlanArgs),
    /// Load the plan in one transaction; it rolls back unless confirmed in time (needs root)
    Apply(FirewallApplyArgs),
    /// Keep what the last apply loaded (needs root)
    Confirm,
    /// Whether portolan's table is loaded, pending confirmation or confirmed (needs root)
    Status,
    /// Delete portolan's table (needs root)
    Remove,
    /// Internal: the commit-confirm rollback process that `firewall apply` starts
    #[command(name = "__watchdog", hide = true)]
    Watchdog(WatchdogArgs),
}

#[derive(Debug, Args)]
pub struct FirewallPlanArgs {
    /// The policy file (TOML, see POLICY.md)
    #[arg(long, value_name = "FILE")]
    pub policy: std::path::PathBuf,
    /// Do not keep the SSH port open whatever the policy says (you may lock yourself out)
    #[arg(long)]
    pub no_ssh_guard: bool,
}

#[derive(Debug, Args)]
pub struct FirewallApplyArgs {
    #[command(flatten)]
    pub plan: FirewallPlanArgs,
    /// Roll back by itself unless `portolan firewall confirm` follows within this many
    /// seconds (0: no rollback)
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub confirm_within: u64,
}

#[derive(Debug, Args)]
pub struct WatchdogArgs {
    /// The firewall state directory
    pub state_dir: std::path::PathBuf,
    /// The apply generation to watch
    pub generation: u128,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when no finding reaches --fail-on, 1 when one does, 2 on error."
)]
pub struct AuditArgs {
    /// Judge the listeners against this policy file (TOML, see POLICY.md)
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,
    /// Compare with a scan of this host made from another machine (`portolan scan --json` or --jsonl output)
    #[arg(long, value_name = "FILE")]
    pub from_scan: Option<std::path::PathBuf>,
    /// Ask each listener other hosts could reach what answers there (as `ls --probe`)
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub sigs: SignatureArgs,
    /// Exit 1 when a finding at or above this severity exists (info, low, medium, high, critical)
    #[arg(long, value_name = "SEVERITY", default_value = "high")]
    pub fail_on: String,
    /// Print the findings as SARIF 2.1.0 (for code-scanning UIs)
    #[arg(long, conflicts_with = "junit")]
    pub sarif: bool,
    /// Print the findings as JUnit XML (one test case per finding; failed at --fail-on)
    #[arg(long)]
    pub junit: bool,
    /// Do not read the live firewall (it needs root; without it the verdicts are skipped)
    #[arg(long)]
    pub no_firewall: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the current listeners as a starting policy
    Init,
}

/// Where service detection finds signatures beyond the built-in ones (`probe`, and
/// `--probe` of `scan`, `ls` and `who`).
#[derive(Debug, Args, Default)]
pub struct SignatureArgs {
    /// Also read signature files (*.toml) from this directory
    #[arg(long, value_name = "DIR")]
    pub signatures: Option<std::path::PathBuf>,
    /// Also read service probes in nmap's format from this file
    #[arg(long, value_name = "PATH")]
    pub nmap_probes: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// HOST:PORT, [IPv6]:PORT, with /udp for a UDP service (/tcp is the default); a name is
    /// probed on every address it has
    #[arg(value_name = "HOST:PORT", required = true)]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub sigs: SignatureArgs,
    /// How long a service may take to answer a probe, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub timeout: u64,
    /// How long to wait for a service that speaks first, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub banner_wait: u64,
}

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
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to print: `man` (roff, for `man -l -`) or a shell's completion script
    #[arg(value_enum)]
    pub what: Generated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Debug, Args, Default)]
pub struct LsArgs {
    /// TCP sockets
    #[arg(short = 't', long)]
    pub tcp: bool,
    /// UDP sockets
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// IPv4 only
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// IPv6 only
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Listening sockets only (the default)
    #[arg(short = 'l', long, conflicts_with = "all")]
    pub listening: bool,
    /// All sockets: listening and connected, every state
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only sockets in this state (established, listen, time-wait, ..., or "connected")
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// Only sockets whose local or remote port is in this list (e.g. 22,80,8000-8100)
    #[arg(long, short = 'p', value_name = "PORTS")]
    pub port: Option<String>,
    /// Only sockets held by this pid (repeatable)
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only sockets held by a process with this name (comm or executable name)
    #[arg(long, value_name = "NAME")]
    pub process: Option<String>,
    /// Only sockets owned by this user (name or uid)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only listeners reachable from other machines (not loopback-only)
    #[arg(long)]
    pub exposed: bool,
    /// Do not look for owning processes (faster; user and unit still shown)
    #[arg(long)]
    pub no_processes: bool,
    /// Numeric output: no service names, no user names
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// Find out what answers on each TCP listener (service, product, version)
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub sigs: SignatureArgs,
}

#[derive(Debug, Args)]
pub struct WhoArgs {
    /// A port (8080, :8080, 8080/udp), a pid (pid:1234), a process name, or a unit (nginx.service)
    #[arg(allow_negative_numbers = true)]
    pub target: String,
    /// Treat a bare number as a pid, not a port
    #[arg(long)]
    pub pid: bool,
    /// Only TCP
    #[arg(short = 't', long)]
    pub tcp: bool,
    /// Only UDP
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Numeric output: no service names, no user names
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// Find out what answers on each TCP listener (service, product, version)
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub sigs: SignatureArgs,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Ports (443, 53/udp), ranges (6000-6063) or service names (ssh, postgres)
    #[arg(required = true, value_name = "QUERY", allow_negative_numbers = true)]
    pub queries: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FreeArgs {
    /// Check this port instead of searching for a free one
    #[arg(allow_negative_numbers = true)]
    pub port: Option<String>,
    /// How many free ports to find
    #[arg(short = 'n', long = "count", default_value_t = 1, value_name = "N")]
    pub count: usize,
    /// Search in this range (default: registered ports below this machine's ephemeral range)
    #[arg(long, value_name = "A-B")]
    pub range: Option<String>,
    /// UDP instead of TCP
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Address to bind when checking (repeatable; default: 0.0.0.0 and ::)
    #[arg(long, value_name = "ADDR")]
    pub addr: Vec<std::net::IpAddr>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The port whose listeners to signal (8080 or 8080/udp)
    #[arg(allow_negative_numbers = true)]
    pub port: String,
    /// UDP instead of TCP
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Signal to send (TERM, KILL, INT, HUP, ... or a number)
    #[arg(short = 's', long, default_value = "TERM")]
    pub signal: String,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Show what would be signalled, and signal nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for the port to be freed
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub wait: f64,
}
