//! `portolan forward --list` (and what `--kernel` changed): the forwards on this machine.

use std::io::{self, Write};

use serde::Serialize;

use crate::render::{esc, write_table, Cell, Report, Style};

/// One forward: a listening socket of a `portolan forward` process, or a kernel rule.
#[derive(Debug, Serialize)]
pub struct ForwardRow {
    /// `process` or `kernel`.
    pub kind: &'static str,
    pub proto: String,
    pub listen: String,
    pub target: String,
    pub rule: String,
    /// The forwarding process (none for a kernel rule).
    pub pid: Option<u32>,
}

/// The forwards on this machine.
#[derive(Debug, Serialize)]
pub struct ForwardList {
    pub forwards: Vec<ForwardRow>,
}

impl Report for ForwardList {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        if self.forwards.is_empty() {
            return writeln!(w, "no forwards");
        }
        let rows: Vec<Vec<Cell>> = self
            .forwards
            .iter()
            .map(|f| {
                vec![
                    Cell::plain(f.kind),
                    Cell::plain(esc(&f.proto)),
                    Cell::plain(esc(&f.listen)),
                    Cell::plain(format!("-> {}", esc(&f.target))),
                    Cell::plain(f.pid.map_or_else(|| "-".to_owned(), |p| p.to_string())),
                    Cell::plain(esc(&f.rule)),
                ]
            })
            .collect();
        write_table(
            w,
            style,
            &["KIND", "PROTO", "LISTEN", "TARGET", "PID", "RULE"],
            &rows,
            "",
        )
    }

    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        for f in &self.forwards {
            serde_json::to_writer(&mut *w, f)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    fn found(&self) -> bool {
        !self.forwards.is_empty()
    }
}
