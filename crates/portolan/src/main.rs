//! portolan: the binary. Parses the command line, dispatches to the engines, renders their
//! values and maps the outcome to an exit code. The only crate that prints.

mod audit_reports;
mod cli;
mod cmd_audit;
mod cmd_firewall;
mod cmd_free;
mod cmd_history;
mod cmd_info;
mod cmd_kill;
mod cmd_ls;
mod cmd_probe;
mod cmd_scan;
mod cmd_watch;
mod cmd_who;
mod output;
mod probed;
mod view;

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, SourceChoice};

/// What a command found: drives the exit code (0 found, 1 nothing matched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Found,
    NothingMatched,
}

impl Outcome {
    /// `Found` when anything was found.
    pub fn of(found: bool) -> Outcome {
        if found {
            Outcome::Found
        } else {
            Outcome::NothingMatched
        }
    }
}

/// Shared context for commands.
#[derive(Debug)]
pub struct Ctx {
    pub format: output::Format,
    pub style: output::Style,
    pub err_color: bool,
    pub source: portolan_sockets::Source,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(nmap_spellings(std::env::args_os())) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors; usage errors exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let ctx = Ctx {
        format: output::Format::from_global(&cli.global),
        style: output::Style::new(cli.global.color),
        err_color: output::stderr_color(cli.global.color),
        source: match cli.global.source {
            SourceChoice::Auto => portolan_sockets::Source::Auto,
            SourceChoice::Netlink => portolan_sockets::Source::Netlink,
            SourceChoice::Proc => portolan_sockets::Source::ProcNet,
        },
    };
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = run(&cli, &ctx, &mut out).and_then(|o| {
        out.flush()?;
        Ok(o)
    });
    match result {
        Ok(Outcome::Found) => ExitCode::SUCCESS,
        Ok(Outcome::NothingMatched) => ExitCode::from(1),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = out.flush();
            let msg = format!("{e:#}");
            let mut err = io::stderr().lock();
            let _ = writeln!(
                err,
                "portolan: error: {}",
                portolan_core::escape::for_terminal(&msg)
            );
            ExitCode::from(2)
        }
    }
}

/// Accepts nmap's multi-letter single-dash options (`-iL`, `-oX`, `-oG`, `-Pn`) by
/// rewriting them to their long forms before clap sees them.
fn nmap_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| match a.to_str() {
        Some("-iL") => "--input-list".into(),
        Some("-oX") => "--xml-output".into(),
        Some("-oG") => "--grep-output".into(),
        Some("-Pn") => "--no-ping".into(),
        Some("-sV") => "--probe".into(),
        _ => a,
    })
    .collect()
}

/// `portolan ls | head` closes the pipe early: that is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Man page and completions come from the same clap definitions as `--help`.
fn generate(what: cli::Generated, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let mut cmd = Cli::command();
    let shell = match what {
        cli::Generated::Man => {
            clap_mangen::Man::new(cmd).render(out)?;
            return Ok(Outcome::Found);
        }
        cli::Generated::Bash => Shell::Bash,
        cli::Generated::Zsh => Shell::Zsh,
        cli::Generated::Fish => Shell::Fish,
        cli::Generated::Elvish => Shell::Elvish,
        cli::Generated::Powershell => Shell::PowerShell,
    };
    clap_complete::generate(shell, &mut cmd, "portolan", out);
    Ok(Outcome::Found)
}

fn run(cli: &Cli, ctx: &Ctx, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    match &cli.command {
        None => cmd_ls::overview(ctx, cli.numeric, out),
        Some(Command::Ls(a)) => cmd_ls::ls(ctx, a, out),
        Some(Command::Who(a)) => cmd_who::who(ctx, a, out),
        Some(Command::Info(a)) => cmd_info::info(ctx, a, out),
        Some(Command::Free(a)) => cmd_free::free(ctx, a, out),
        Some(Command::Kill(a)) => cmd_kill::kill(ctx, a, out),
        Some(Command::Scan(a)) => cmd_scan::scan(ctx, a, out),
        Some(Command::Probe(a)) => cmd_probe::probe(ctx, a, out),
        Some(Command::Audit(a)) => cmd_audit::audit(ctx, a, out),
        Some(Command::Policy(cli::PolicyCommand::Init)) => cmd_audit::policy_init(ctx, out),
        Some(Command::Generate(a)) => generate(a.what, out),
        Some(Command::Firewall(a)) => cmd_firewall::firewall(ctx, a, out),
        Some(Command::Watch(a)) => cmd_watch::watch(ctx, a, out),
        Some(Command::History(a)) => cmd_history::history(ctx, a, out),
        Some(Command::Diff(a)) => cmd_history::diff(ctx, a, out),
    }
}
