//! A command run inside this process, as the dashboard and the live view use them: the
//! argument list is parsed by the same clap definitions as the command line and run by the
//! same room through `crate::run`, with `--json`, into a buffer. What comes back is the
//! command's documented JSON, so an edge that shows it computes nothing a room computes.
//! Callers pass only values they have checked (numbers, `--flag=VALUE` forms), so no value
//! can pass for a flag.

use clap::Parser;

use crate::cli::Cli;
use crate::render::{Format, Output, Style};
use crate::Outcome;

/// What a command gave: its JSON, and whether it found anything (exit 0 or 1).
#[derive(Debug)]
pub struct CliJson {
    pub json: Vec<u8>,
    pub found: bool,
}

/// Runs `portolan ARGS --json` in this process and returns its document; an error is the
/// message the CLI would print after `portolan: error:`.
pub fn cli_json(source: portolan_sockets::Source, args: &[String]) -> Result<CliJson, String> {
    let argv = std::iter::once("portolan".to_owned())
        .chain(args.iter().cloned())
        .chain(std::iter::once("--json".to_owned()));
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        text.lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_owned()
    })?;
    let base = Output {
        format: Format::Json,
        pretty: false,
        style: Style::plain(),
        err_color: false,
        source,
    };
    let mut buf = Vec::new();
    match crate::run(&cli, &base, &mut buf) {
        Ok(o) => Ok(CliJson {
            json: buf,
            found: o == Outcome::Found,
        }),
        Err(e) => Err(format!("{e:#}")),
    }
}
