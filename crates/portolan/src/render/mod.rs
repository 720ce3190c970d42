//! The one renderer layer. A command hands a typed report (`Report`: `Serialize`, plus a
//! table for people) to [`emit`], which writes the format the user chose: the table, one
//! JSON document, JSON Lines or CSV. Formats beyond these (nmap XML, greppable, SARIF,
//! JUnit) are writers in this module too, over the same reports. Every string that came
//! from /proc or the network is escaped before a terminal (`esc`), in CSV (`csv`) and in
//! XML (`xml`); JSON escapes control characters itself.
//!
//! JSON convention, for every command: one top-level object, snake_case keys, compact
//! unless `--pretty`; JSON Lines carry one object per item (a socket, a port, an event),
//! the same objects the JSON document holds in its list.

pub mod csv;
pub mod forward;
pub mod greppable;
pub mod history;
pub mod junit;
pub mod nmap_xml;
pub mod probe;
pub mod sarif;
pub mod scan;
pub mod sockets;
pub mod table;
pub mod xml;

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};

use portolan_core::escape::for_terminal;
use serde::Serialize;

pub use self::table::{write_table, Cell};
use crate::cli::ColorChoice;
use crate::Outcome;

/// The output format a user chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Jsonl,
    Csv,
}

/// A command's format flags, read: the format and whether JSON is indented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Choice {
    pub format: Format,
    pub pretty: bool,
}

/// How this run writes: the chosen format, colour on stdout and stderr, and where sockets
/// are read from (a global flag that several commands share).
#[derive(Debug, Clone)]
pub struct Output {
    pub format: Format,
    pub pretty: bool,
    pub style: Style,
    pub err_color: bool,
    pub source: portolan_sockets::Source,
}

impl Output {
    /// The same settings with the format a command's flags chose.
    pub fn with(&self, choice: Choice) -> Output {
        Output {
            format: choice.format,
            pretty: choice.pretty,
            ..self.clone()
        }
    }

    /// True for the human table.
    pub fn is_table(&self) -> bool {
        self.format == Format::Table
    }

    /// A note on stderr (see [`note`]), coloured when stderr is a colour terminal.
    pub fn note(&self, msg: &str) {
        note(self.err_color, msg);
    }
}

/// What a command hands to the renderers: the data (`Serialize`: its `--json` document)
/// and the ways it reads as a table, as JSON Lines and as CSV.
pub trait Report: Serialize {
    /// The table (or text) a person reads.
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()>;

    /// JSON Lines: one object per item. By default the whole report is one line.
    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer(&mut *w, self)?;
        w.write_all(b"\n")
    }

    /// CSV rows with a header. Only reached for commands that declare `--csv`.
    fn csv(&self, w: &mut csv::CsvOut<'_>) -> io::Result<()> {
        let _ = w;
        Err(io::Error::other("this command does not write CSV"))
    }

    /// Whether anything was found (exit 0) or nothing matched (exit 1).
    fn found(&self) -> bool {
        true
    }
}

/// Writes `report` in the chosen format and says what the exit code should be.
pub fn emit<R: Report + ?Sized>(
    w: &mut dyn Write,
    out: &Output,
    report: &R,
) -> anyhow::Result<Outcome> {
    match out.format {
        Format::Table => report.table(w, out.style)?,
        Format::Json => write_json(w, report, out.pretty)?,
        Format::Jsonl => report.jsonl(w)?,
        Format::Csv => {
            let mut c = csv::CsvOut::new(w);
            report.csv(&mut c)?;
            c.finish()?;
        }
    }
    Ok(Outcome::of(report.found()))
}

/// One JSON document and a newline, compact or indented.
pub fn write_json<T: Serialize + ?Sized>(
    w: &mut dyn Write,
    value: &T,
    pretty: bool,
) -> io::Result<()> {
    if pretty {
        serde_json::to_writer_pretty(&mut *w, value)?;
    } else {
        serde_json::to_writer(&mut *w, value)?;
    }
    w.write_all(b"\n")
}

/// ANSI styling, on only when asked or on a terminal without NO_COLOR.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    on: bool,
}

impl Style {
    /// No colour (tests, files, the dashboard's in-process commands).
    pub fn plain() -> Style {
        Style { on: false }
    }

    pub fn new(choice: ColorChoice) -> Style {
        Style {
            on: use_color(choice, io::stdout().is_terminal()),
        }
    }

    /// Whether colour is on (the live view styles its own cells).
    pub fn is_on(self) -> bool {
        self.on
    }

    pub fn paint<'a>(self, code: &str, s: &'a str) -> Cow<'a, str> {
        if self.on && !s.is_empty() {
            Cow::Owned(format!("\x1b[{code}m{s}\x1b[0m"))
        } else {
            Cow::Borrowed(s)
        }
    }
}

pub const BOLD: &str = "1";
pub const RED: &str = "1;31";
pub const YELLOW: &str = "33";
pub const GREEN: &str = "32";
pub const DIM: &str = "2";

/// Escapes untrusted text for a terminal.
pub fn esc(s: &str) -> Cow<'_, str> {
    for_terminal(s)
}

/// JSON Lines: each item as one compact JSON object on its own line.
pub fn write_jsonl<'a, T: serde::Serialize + 'a>(
    out: &mut dyn Write,
    items: impl IntoIterator<Item = &'a T>,
) -> io::Result<()> {
    for item in items {
        serde_json::to_writer(&mut *out, item)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Writes a message line to stderr (warnings, notes, progress): never mixed into stdout.
/// Messages carry file names, kernel error text and user input, so they are escaped here,
/// once, for every caller.
pub fn note(style_err: bool, msg: &str) {
    let msg = for_terminal(msg);
    let mut e = io::stderr().lock();
    let _ = if style_err {
        writeln!(e, "\x1b[33mnote:\x1b[0m {msg}")
    } else {
        writeln!(e, "note: {msg}")
    };
}

/// Why a socket's process is not shown, in a few words.
pub fn hidden_hint() -> &'static str {
    if rustix::process::geteuid().is_root() {
        "no readable process holds it, even for root"
    } else {
        "run as root to see the process"
    }
}

/// Whether stderr is a colour-capable terminal (for notes).
pub fn stderr_color(choice: ColorChoice) -> bool {
    use_color(choice, io::stderr().is_terminal())
}

/// The one colour decision, for stdout and stderr alike: `always` and `never` win;
/// `auto` paints only a terminal, and not when `NO_COLOR` is set (non-empty) or
/// `TERM=dumb`.
fn use_color(choice: ColorChoice, is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
            is_terminal && !no_color && !dumb
        }
    }
}
