//! The JSON under `/api/` is the CLI's own `--json`: each request becomes the argument list
//! of one command (`/api/who/8080` is `portolan who 8080 --json`), parsed by the same clap
//! definitions and run by the same room through `crate::run`, into a buffer. Nothing is
//! computed twice, and the API's JSON is the documented schema of each command. Only
//! values this edge has checked reach an argument list (a port as a number, a host name
//! as `--host=VALUE`, so no value can pass for a flag).

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
    let cli = Cli::try_parse_from(argv).map_err(|e| e.kind().to_string())?;
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

/// The arguments of `history` from the page's query: a port, a host, a span.
pub fn history_args(port: Option<u16>, host: Option<&str>, since: Option<&str>) -> Vec<String> {
    let mut a = vec!["history".to_owned()];
    if let Some(p) = port {
        a.push(p.to_string());
    }
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        a.push(format!("--host={h}"));
    }
    if let Some(s) = since.filter(|s| !s.is_empty()) {
        a.push(format!("--since={s}"));
    }
    a.push("--limit=500".to_owned());
    a
}

/// The store flags `serve` was given, passed on to `history`.
pub fn store_args(db: Option<&std::path::Path>, store: Option<&str>) -> Vec<String> {
    match (db, store) {
        (Some(p), _) => vec![format!("--db={}", p.display())],
        (None, Some(s)) => vec![format!("--store={s}")],
        (None, None) => Vec::new(),
    }
}
