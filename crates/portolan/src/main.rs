//! portolan: the binary. Parses the command line, hands each command's validated arguments
//! to its room in `cmd/`, and maps the outcome to an exit code. The only crate that prints,
//! and only through `render/`.
//!
//! One shape for every command: arguments -> one engine session -> a typed report ->
//! `render::emit` (table, JSON, JSON Lines, CSV; nmap XML, greppable, SARIF, JUnit where the
//! command declares them).

mod cli;
mod cmd;
mod inproc;
mod render;
mod top;
mod web;

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, SourceChoice};
use crate::render::{Choice, Output, Style};

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

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(nmap_spellings(std::env::args_os())) {
        Ok(c) => c,
        Err(e) => return clap_error(&e),
    };
    if let Err(e) = cli::check_leading_formats(&cli) {
        return clap_error(&e);
    }
    let out = Output {
        format: render::Format::Table,
        pretty: false,
        style: Style::new(cli.global.color),
        err_color: render::stderr_color(cli.global.color),
        source: match cli.global.source {
            SourceChoice::Auto => portolan_sockets::Source::Auto,
            SourceChoice::Netlink => portolan_sockets::Source::Netlink,
            SourceChoice::Proc => portolan_sockets::Source::ProcNet,
        },
    };
    let stdout = io::stdout();
    let mut w = BufWriter::with_capacity(1 << 16, stdout.lock());
    let result = run(&cli, &out, &mut w).and_then(|o| {
        w.flush()?;
        Ok(o)
    });
    match result {
        Ok(Outcome::Found) => ExitCode::SUCCESS,
        Ok(Outcome::NothingMatched) => ExitCode::from(1),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = w.flush();
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

/// clap's own message (usage errors exit 2; --help and --version exit 0). clap quotes the
/// arguments it refuses as they were typed, so an argument holding an escape sequence
/// (`--source $'\e]0;X\a'`) would reach the terminal raw: every line is escaped first, and
/// the message is written as plain text (clap's colours cannot be told apart from an
/// argument's once it is rendered).
fn clap_error(e: &clap::Error) -> ExitCode {
    let text = e.render().to_string();
    let safe: Vec<std::borrow::Cow<'_, str>> = text
        .split('\n')
        .map(portolan_core::escape::for_terminal)
        .collect();
    let safe = safe.join("\n");
    let _ = if e.use_stderr() {
        io::stderr().lock().write_all(safe.as_bytes())
    } else {
        io::stdout().lock().write_all(safe.as_bytes())
    };
    ExitCode::from(if e.use_stderr() { 2 } else { 0 })
}

/// Accepts nmap's multi-letter single-dash options (`-iL`, `-oX`, `-oG`, `-Pn`, `-sS`...) by
/// rewriting them to their long forms before clap sees them.
fn nmap_spellings(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.map(|a| match a.to_str() {
        Some("-iL") => "--input-list".into(),
        Some("-oX") => "--xml-output".into(),
        Some("-oG") => "--grep-output".into(),
        Some("-Pn") => "--no-ping".into(),
        Some("-sV") => "--probe".into(),
        Some("-sS") => "--syn".into(),
        Some("-sT") => "--connect".into(),
        Some("-sU") => "--udp".into(),
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

/// The output settings of this run: the command's own format flags, else the ones given
/// before the command (`portolan --json ls`; `cli::check_leading_formats` has refused those
/// the command does not render).
fn output_for(cli: &Cli, base: &Output) -> Output {
    let leading = cli.formats.choice();
    match cli.command.as_ref().map(Command::choice) {
        None => base.with(leading),
        Some(None) => base.clone(),
        Some(Some(own)) if own == Choice::default() => base.with(leading),
        Some(Some(own)) => base.with(own),
    }
}

fn run(cli: &Cli, base: &Output, w: &mut dyn Write) -> anyhow::Result<Outcome> {
    let out = &output_for(cli, base);
    match &cli.command {
        None => cmd::overview::run(out, cli.numeric, w),
        Some(Command::Ls(a)) => cmd::ls::run(out, a, w),
        Some(Command::Who(a)) => cmd::who::run(out, a, w),
        Some(Command::Info(a)) => cmd::info::run(out, a, w),
        Some(Command::Free(a)) => cmd::free::run(out, a, w),
        Some(Command::Kill(a)) => cmd::kill::run(out, a, w),
        Some(Command::Scan(a)) => cmd::scan::run(out, a, w),
        Some(Command::Probe(a)) => cmd::probe::run(out, a, w),
        Some(Command::Audit(a)) => cmd::audit::run(out, a, w),
        Some(Command::Policy(a)) => cmd::policy::run(out, a, w),
        Some(Command::Generate(a)) => cmd::generate::run(a, w),
        Some(Command::Firewall(a)) => cmd::firewall::run(out, a, w),
        Some(Command::Watch(a)) => cmd::watch::run(out, a, w),
        Some(Command::Guard(a)) => cmd::guard::run(out, a, w),
        Some(Command::Sentry(a)) => cmd::sentry::run(out, a, w),
        Some(Command::Serve(a)) => cmd::serve::run(out, a, w),
        Some(Command::Top(a)) => cmd::top::run(out, a),
        Some(Command::Worker(a)) => cmd::worker::run(out, a, w),
        Some(Command::Knock(a)) => cmd::knock::run(out, a, w),
        Some(Command::Forward(a)) => cmd::forward::run(out, a, w),
        Some(Command::History(a)) => cmd::history::run(out, a, w),
        Some(Command::Diff(a)) => cmd::diff::run(out, a, w),
    }
}
