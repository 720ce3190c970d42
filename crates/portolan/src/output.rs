//! Output plumbing shared by every command: format choice, colour, tables, CSV quoting.
//! Every string that came from /proc or the network goes through `esc` before a terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write};

use portolan_core::escape::for_terminal;

use crate::cli::{ColorChoice, Global};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Jsonl,
    Csv,
}

/// The formats a program reads; the table is rendered by each command itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    Json,
    Jsonl,
    Csv,
}

impl Format {
    /// The machine format, or `None` for the human table.
    pub fn machine(self) -> Option<Machine> {
        match self {
            Format::Table => None,
            Format::Json => Some(Machine::Json),
            Format::Jsonl => Some(Machine::Jsonl),
            Format::Csv => Some(Machine::Csv),
        }
    }

    pub fn from_global(g: &Global) -> Format {
        if g.json {
            Format::Json
        } else if g.jsonl {
            Format::Jsonl
        } else if g.csv {
            Format::Csv
        } else {
            Format::Table
        }
    }
}

/// ANSI styling, on only when asked or on a terminal without NO_COLOR.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    on: bool,
}

impl Style {
    pub fn new(choice: ColorChoice) -> Style {
        Style {
            on: use_color(choice, io::stdout().is_terminal()),
        }
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

/// A cell: visible text plus an optional colour.
#[derive(Debug, Clone)]
pub struct Cell {
    pub text: String,
    pub color: Option<&'static str>,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            color: None,
        }
    }

    pub fn colored(text: impl Into<String>, color: &'static str) -> Cell {
        Cell {
            text: text.into(),
            color: Some(color),
        }
    }
}

/// Writes aligned columns; widths come from the visible text, so colour codes and
/// multi-byte characters do not break alignment. The last column is not padded.
pub fn write_table(
    out: &mut dyn Write,
    style: Style,
    headers: &[&str],
    rows: &[Vec<Cell>],
    indent: &str,
) -> io::Result<()> {
    let n = if headers.is_empty() {
        rows.iter().map(Vec::len).max().unwrap_or(0)
    } else {
        headers.len()
    };
    let mut widths: Vec<usize> = (0..n)
        .map(|i| headers.get(i).map_or(0, |h| h.chars().count()))
        .collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            widths[i] = widths[i].max(c.text.chars().count());
        }
    }
    if !headers.is_empty() {
        let mut line = String::from(indent);
        for (i, h) in headers.iter().enumerate() {
            if i + 1 < n {
                let _ = write!(line, "{h:<w$}  ", w = widths[i]);
            } else {
                line.push_str(h);
            }
        }
        writeln!(out, "{}", style.paint(BOLD, line.trim_end()))?;
    }
    for r in rows {
        let mut line = String::from(indent);
        for (i, c) in r.iter().enumerate().take(n) {
            let pad = widths[i].saturating_sub(c.text.chars().count());
            let painted = match c.color {
                Some(code) => style.paint(code, &c.text),
                None => Cow::Borrowed(c.text.as_str()),
            };
            line.push_str(&painted);
            if i + 1 < n {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Quotes a CSV field (RFC 4180) after escaping control characters, so a hostile process
/// name cannot inject rows or terminal escapes into a CSV that someone `cat`s.
pub fn csv_field(s: &str) -> String {
    let s = for_terminal(s);
    if s.contains([',', '"', '\n', '\r']) || s.starts_with([' ']) || s.ends_with(' ') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
    }
}

pub fn write_csv_row(out: &mut dyn Write, fields: &[String]) -> io::Result<()> {
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    writeln!(out, "{}", line.join(","))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_escapes() {
        assert_eq!(csv_field("nginx"), "nginx");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("x\ny"), "x\\ny");
        assert_eq!(csv_field("\x1b[2J"), "\\x1b[2J");
    }
}
