//! Aligned columns for people. Widths are display widths (unicode-width): a wide CJK
//! character takes two columns and a combining mark none, so tables stay aligned whatever
//! a process calls itself. Colour codes are added after measuring.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use unicode_width::UnicodeWidthStr;

use super::{Style, BOLD};

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

/// Columns a string takes on a terminal.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// Writes aligned columns; widths come from the visible text, so colour codes and wide or
/// combining characters do not break alignment. The last column is not padded.
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
        .map(|i| headers.get(i).map_or(0, |h| width(h)))
        .collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            widths[i] = widths[i].max(width(&c.text));
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
            let pad = widths[i].saturating_sub(width(&c.text));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn render(rows: &[Vec<Cell>]) -> String {
        let mut v = Vec::new();
        write_table(&mut v, Style::plain(), &["A", "B"], rows, "").unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn wide_and_combining_characters_align() {
        // "名前" is two wide characters (4 columns); "e\u{301}" is one column.
        let text = render(&[
            vec![Cell::plain("名前"), Cell::plain("x")],
            vec![Cell::plain("e\u{301}"), Cell::plain("y")],
            vec![Cell::plain("abcd"), Cell::plain("z")],
        ]);
        let cols: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|l| {
                let at = l.rfind(|c: char| "xyz".contains(c)).unwrap();
                width(&l[..at])
            })
            .collect();
        assert_eq!(cols, [6, 6, 6], "{text}");
    }
}
