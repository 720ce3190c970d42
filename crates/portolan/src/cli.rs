//! The command line: one definition that drives parsing, `--help`, and the help snapshot.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cmd;
use crate::render::{Choice, Format};

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

    /// The overview's formats. Given before a command (`portolan --json ls`), they apply to
    /// that command when it renders them.
    #[command(flatten)]
    pub formats: TableJsonCsv,

    /// Numeric output for the overview: no service names, no user names
    #[arg(short = 'n', long)]
    pub numeric: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings every command shares: colour and where sockets are read from. Output formats
/// are not here: each command declares the formats it renders (see [`TableJsonCsv`] and
/// its siblings), so clap refuses the others.
#[derive(Debug, Args)]
pub struct Global {
    /// When to use colour (auto: on a terminal, unless NO_COLOR is set)
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Where to read sockets from (auto: netlink, falling back to /proc/net)
    #[arg(long, global = true, value_enum, default_value_t = SourceChoice::Auto)]
    pub source: SourceChoice,
}

/// Output formats of a command that renders a table, JSON, JSON Lines and CSV.
#[derive(Debug, Args, Default, Clone, Copy)]
pub struct TableJsonCsv {
    /// Output one JSON document (compact; --pretty indents it)
    #[arg(long, conflicts_with_all = ["jsonl", "csv"])]
    pub json: bool,
    /// Output JSON Lines: one object per line
    #[arg(long, conflicts_with = "csv")]
    pub jsonl: bool,
    /// Output CSV with a header row
    #[arg(long)]
    pub csv: bool,
    /// Indent JSON for people (with --json)
    #[arg(long, requires = "json")]
    pub pretty: bool,
}

/// Output formats of a command that renders a table, JSON and JSON Lines (no CSV).
#[derive(Debug, Args, Default, Clone, Copy)]
pub struct TableJson {
    /// Output one JSON document (compact; --pretty indents it)
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,
    /// Output JSON Lines: one object per line
    #[arg(long)]
    pub jsonl: bool,
    /// Indent JSON for people (with --json)
    #[arg(long, requires = "json")]
    pub pretty: bool,
}

impl TableJsonCsv {
    /// The format these flags chose (clap already made them exclusive), else the table.
    pub fn choice(self) -> Choice {
        let format = if self.json {
            Format::Json
        } else if self.jsonl {
            Format::Jsonl
        } else if self.csv {
            Format::Csv
        } else {
            Format::Table
        };
        Choice {
            format,
            pretty: self.pretty,
        }
    }
}

impl TableJson {
    /// The format these flags chose, else the table.
    pub fn choice(self) -> Choice {
        TableJsonCsv {
            json: self.json,
            jsonl: self.jsonl,
            csv: false,
            pretty: self.pretty,
        }
        .choice()
    }
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
    Ls(cmd::ls::LsArgs),
    /// Who holds a port, or which ports a process, unit or pid holds
    Who(cmd::who::WhoArgs),
    /// What a port number or service name means, and who uses it here
    Info(cmd::info::InfoArgs),
    /// Find free ports, or tell whether a port is free (checked by really binding)
    Free(cmd::free::FreeArgs),
    /// Signal the processes listening on a port, and report whether it was freed
    Kill(cmd::kill::KillArgs),
    /// What is open on other hosts: a TCP connect scan (no root needed)
    Scan(cmd::scan::ScanArgs),
    /// What really answers on a port: service, product and version, by talking to it
    Probe(cmd::probe::ProbeArgs),
    /// What this machine exposes that it should not, and how to fix each item
    Audit(cmd::audit::AuditArgs),
    /// Policy as code: which listeners may exist (see POLICY.md)
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// portolan's own nftables table: allow inbound exactly what a policy allows
    Firewall(cmd::firewall::FirewallArgs),
    /// Record every listener that opens, closes or changes hands; alert and export metrics
    Watch(cmd::watch::WatchArgs),
    /// Hide ports from everyone until a client opens them with one packet (SPA, knocks)
    Guard(cmd::guard::GuardArgs),
    /// Detect port scans of this machine (who, how, with what tool) and block them
    Sentry(cmd::sentry::SentryArgs),
    /// Forward a TCP or UDP port to another address (splice, limits, PROXY protocol,
    /// reload, drain), or have the kernel do it (--kernel)
    Forward(cmd::forward::ForwardArgs),
    /// Open a port hidden by `portolan guard` (or fwknopd, or a knock daemon) for this machine
    Knock(cmd::knock::KnockArgs),
    /// What happened to listeners, and the port scans seen, from the watch history
    /// (`history 8080`: one port's life)
    History(cmd::history::HistoryArgs),
    /// Listeners now versus then, from the watch history
    Diff(cmd::diff::DiffArgs),
    /// The dashboard in a browser: services, processes, ports, who can reach them, history
    Serve(cmd::serve::ServeArgs),
    /// Every socket live in the terminal, with its traffic and process; kill, probe, info
    Top(cmd::top::TopArgs),
    /// Scan chunks of scans queued on PostgreSQL (`scan ... --queue URL`), any number at once
    Worker(cmd::worker::WorkerArgs),
    /// Print the man page or a shell completion script, generated from this CLI
    Generate(cmd::generate::GenerateArgs),
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

/// Where a daemon's events go besides stderr (`watch`, `guard`).
#[derive(Debug, Args, Default)]
pub struct EventSinkArgs {
    /// Also write each event as a JSON line to FILE (appended), or to stdout with -
    #[arg(long, value_name = "FILE")]
    pub events: Option<String>,
    /// POST each batch of events as JSON to this http(s) URL (retried with backoff; never
    /// delays the daemon's work)
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Attempts after the first before a webhook batch is dropped
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub webhook_retries: u32,
}

impl EventSinkArgs {
    /// The webhook's configuration, when `--webhook` was given.
    pub fn webhook_config(&self) -> Option<portolan_watch::alert::WebhookConfig> {
        self.webhook
            .as_ref()
            .map(|url| portolan_watch::alert::WebhookConfig {
                retries: self.webhook_retries,
                ..portolan_watch::alert::WebhookConfig::new(url)
            })
    }
}

/// Service detection on the listeners a command found (`ls`, `who`).
#[derive(Debug, Args, Default)]
pub struct Detection {
    /// Find out what answers on each listener: service, product, version (TCP; UDP where a
    /// probe names the port)
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub sigs: SignatureArgs,
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

/// Format flags given before a command (`portolan --json ls`) apply to that command, but
/// only when it renders that format: `portolan --csv kill 8080` is refused like
/// `portolan kill 8080 --csv`, by clap, with exit 2.
pub fn check_leading_formats(cli: &Cli) -> Result<(), clap::Error> {
    use clap::CommandFactory;
    let Some(sub) = cli.command.as_ref() else {
        return Ok(());
    };
    let f = cli.formats;
    let given: Vec<&str> = [
        ("json", f.json),
        ("jsonl", f.jsonl),
        ("csv", f.csv),
        ("pretty", f.pretty),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    let mut app = Cli::command();
    let name = sub.name();
    let Some(subcmd) = app.find_subcommand_mut(name) else {
        return Ok(());
    };
    for flag in given {
        if !subcmd.get_arguments().any(|a| a.get_id() == flag) {
            let supported: Vec<String> = subcmd
                .get_arguments()
                .filter(|a| ["json", "jsonl", "csv"].contains(&a.get_id().as_str()))
                .map(|a| format!("--{}", a.get_id()))
                .collect();
            let also = if supported.is_empty() {
                "it prints only its own text".to_owned()
            } else {
                format!("it writes a table or {}", supported.join(", "))
            };
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("`portolan {name}` has no --{flag}: {also}"),
            ));
        }
    }
    Ok(())
}

impl Command {
    /// The formats the command's own flags chose; `None` for commands without format flags
    /// (they print their own text: a policy, nftables rules, an event stream, a man page).
    pub fn choice(&self) -> Option<Choice> {
        Some(match self {
            Command::Ls(a) => a.formats.choice(),
            Command::Who(a) => a.formats.choice(),
            Command::Info(a) => a.formats.choice(),
            Command::Free(a) => a.formats.choice(),
            Command::Scan(a) => a.formats.choice(),
            Command::History(a) => a.formats.choice(),
            Command::Diff(a) => a.formats.choice(),
            Command::Kill(a) => a.formats.choice(),
            Command::Probe(a) => a.formats.choice(),
            Command::Audit(a) => a.formats.choice(),
            Command::Forward(a) => a.formats.choice(),
            Command::Policy(_)
            | Command::Firewall(_)
            | Command::Watch(_)
            | Command::Guard(_)
            | Command::Sentry(_)
            | Command::Serve(_)
            | Command::Top(_)
            | Command::Worker(_)
            | Command::Knock(_)
            | Command::Generate(_) => return None,
        })
    }

    /// The subcommand's name as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ls(_) => "ls",
            Command::Who(_) => "who",
            Command::Info(_) => "info",
            Command::Free(_) => "free",
            Command::Kill(_) => "kill",
            Command::Scan(_) => "scan",
            Command::Probe(_) => "probe",
            Command::Audit(_) => "audit",
            Command::Policy(_) => "policy",
            Command::Firewall(_) => "firewall",
            Command::Watch(_) => "watch",
            Command::Guard(_) => "guard",
            Command::Sentry(_) => "sentry",
            Command::Serve(_) => "serve",
            Command::Top(_) => "top",
            Command::Worker(_) => "worker",
            Command::Forward(_) => "forward",
            Command::Knock(_) => "knock",
            Command::History(_) => "history",
            Command::Diff(_) => "diff",
            Command::Generate(_) => "generate",
        }
    }
}
