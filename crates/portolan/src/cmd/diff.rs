//! `portolan diff`: the listeners now versus then, from the watch history. The watch
//! engine computes the difference (`portolan_watch::history::diff`); this renders it.

use std::io::{self, Write};

use anyhow::Context;
use clap::Args;
use portolan_core::when::parse_instant;
use portolan_watch::history::{self, Change, DiffReport, Now};
use portolan_watch::model::now_ms;

use crate::cli::{StoreArgs, TableJsonCsv};
use crate::render::csv::CsvOut;
use crate::render::history::{owner_text, place, when};
use crate::render::{self, esc, Cell, Output, Report, Style};
use crate::Outcome;

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
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

impl Report for DiffReport {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        let now = match self.now {
            Now::Live => "now (live)".to_owned(),
            Now::LastSample { ts_ms } => format!("its last sample, {} UTC", when(ts_ms)),
        };
        writeln!(
            w,
            "{}: {} UTC versus {now}",
            esc(&self.host),
            when(self.then_ms)
        )?;
        if self.changes.is_empty() {
            return writeln!(w, "no listener was added, removed or changed hands");
        }
        let rows: Vec<Vec<Cell>> = self
            .changes
            .iter()
            .map(|e| {
                let (mark, color) = match e.change {
                    Change::Added => ("+", render::GREEN),
                    Change::Removed => ("-", render::RED),
                    Change::OwnerChanged => ("~", render::YELLOW),
                };
                vec![
                    Cell::colored(mark, color),
                    Cell::plain(e.proto.as_str()),
                    Cell::plain(place(e.address, e.port)),
                    Cell::plain(e.exposure.label()),
                    Cell::plain(owner_text(&e.owner)),
                    Cell::plain(
                        e.previous_owner
                            .as_ref()
                            .map(|o| format!("was {}", owner_text(o)))
                            .unwrap_or_default(),
                    ),
                ]
            })
            .collect();
        render::write_table(
            w,
            style,
            &["", "PROTO", "ADDRESS", "EXPOSURE", "OWNER", "CHANGE"],
            &rows,
            "",
        )
    }

    /// One change per line.
    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        render::write_jsonl(w, &self.changes)
    }

    fn csv(&self, w: &mut CsvOut<'_>) -> io::Result<()> {
        w.row([
            "change",
            "proto",
            "address",
            "port",
            "exposure",
            "pid",
            "process",
            "previous_process",
        ])?;
        for e in &self.changes {
            w.row([
                e.change.as_str().to_owned(),
                e.proto.to_string(),
                e.address.to_string(),
                e.port.to_string(),
                e.exposure.to_string(),
                e.owner.pid.map(|p| p.to_string()).unwrap_or_default(),
                e.owner.process.clone().unwrap_or_default(),
                e.previous_owner
                    .as_ref()
                    .and_then(|o| o.process.clone())
                    .unwrap_or_default(),
            ])?;
        }
        Ok(())
    }

    fn found(&self) -> bool {
        !self.changes.is_empty()
    }
}

pub fn run(ctx: &Output, a: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let then_ms = parse_instant(&a.since, now_ms()).context("--since")?;
    let mut store = history::open_history(a.store.db.as_deref(), a.store.store.as_deref())?;
    let report = history::diff(store.as_mut(), a.host.as_deref(), then_ms)?;
    if let Some(asked) = report.asked_before_history_ms {
        ctx.note(&format!(
            "the history of {} starts at {} UTC, after {} UTC: comparing with its first recorded state",
            esc(&report.host),
            when(report.then_ms),
            when(asked)
        ));
    }
    render::emit(out, ctx, &report)
}
