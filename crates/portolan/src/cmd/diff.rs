//! `portolan diff`: the listeners now versus then, from the watch history.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use portolan_core::when::parse_instant;
use portolan_core::{Exposure, Protocol};
use portolan_watch::model::{now_ms, rfc3339_ms, EventKind, Owner};
use portolan_watch::sampler::Sampler;
use portolan_watch::tracker::{by_place, owner_change};
use serde::Serialize;

use crate::cli::{StoreArgs, TableJsonCsv};
use crate::cmd::watch::{hostname, open_store};
use crate::render::history::{owner_text, place, when};
use crate::render::{self, esc, Cell, Machine, Output};
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

#[derive(Debug, Serialize)]
struct DiffEntry<'a> {
    change: &'static str,
    proto: Protocol,
    address: std::net::IpAddr,
    port: u16,
    exposure: Exposure,
    owner: &'a Owner,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_owner: Option<&'a Owner>,
}

pub fn run(ctx: &Output, a: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let now = now_ms();
    let then_ms = parse_instant(&a.since, now).context("--since")?;
    let me = hostname();
    let host = a.host.clone().unwrap_or_else(|| me.clone());
    let mut store = open_store(&a.store)?;
    let asked = store.state_at(&host, then_ms)?;
    let Some(starts) = asked.history_starts_ms else {
        anyhow::bail!(
            "{} has no history for host {}; `portolan watch` records it",
            store.describe(),
            esc(&host)
        );
    };
    // Before the history begins nothing is known: compare with its first state instead.
    let (then_ms, then) = if then_ms < starts {
        render::note(
            ctx.err_color,
            &format!(
                "the history of {} starts at {} UTC, after {} UTC: comparing with its first recorded state",
                esc(&host),
                when(starts),
                when(then_ms)
            ),
        );
        (starts, store.state_at(&host, starts)?)
    } else {
        (then_ms, asked)
    };
    let (now_listeners, now_label) = if host == me {
        (
            Sampler::new(std::time::Duration::MAX).sample()?,
            "now (live)".to_string(),
        )
    } else {
        let st = store
            .last_state(&host)?
            .context("the host has events but no recorded state")?;
        (
            st.listeners,
            format!("its last sample, {} UTC", when(st.last_sample_ms)),
        )
    };
    let before = by_place(&then.listeners);
    let after = by_place(&now_listeners);
    let mut entries = Vec::new();
    for (k, l) in &after {
        match before.get(k) {
            None => entries.push(DiffEntry {
                change: "added",
                proto: k.proto,
                address: k.address,
                port: k.port,
                exposure: l.exposure,
                owner: &l.owner,
                previous_owner: None,
            }),
            Some(b) if owner_change(&b.owner, &l.owner) == Some(EventKind::OwnerChanged) => {
                entries.push(DiffEntry {
                    change: "owner_changed",
                    proto: k.proto,
                    address: k.address,
                    port: k.port,
                    exposure: l.exposure,
                    owner: &l.owner,
                    previous_owner: Some(&b.owner),
                });
            }
            Some(_) => {}
        }
    }
    for (k, b) in &before {
        if !after.contains_key(k) {
            entries.push(DiffEntry {
                change: "removed",
                proto: k.proto,
                address: k.address,
                port: k.port,
                exposure: b.exposure,
                owner: &b.owner,
                previous_owner: None,
            });
        }
    }
    entries.sort_by_key(|e| (e.port, e.proto, e.address, e.change));
    match ctx.format.machine() {
        Some(Machine::Json) => {
            serde_json::to_writer_pretty(
                &mut *out,
                &serde_json::json!({
                    "host": host,
                    "then_ms": then_ms,
                    "then": rfc3339_ms(then_ms),
                    "history_starts": rfc3339_ms(starts),
                    "changes": entries,
                }),
            )?;
            writeln!(out)?;
        }
        Some(Machine::Jsonl) => {
            render::write_jsonl(out, &entries)?;
        }
        Some(Machine::Csv) => {
            render::write_csv_row(
                out,
                &[
                    "change",
                    "proto",
                    "address",
                    "port",
                    "exposure",
                    "pid",
                    "process",
                    "previous_process",
                ]
                .map(String::from),
            )?;
            for e in &entries {
                render::write_csv_row(
                    out,
                    &[
                        e.change.to_string(),
                        e.proto.to_string(),
                        e.address.to_string(),
                        e.port.to_string(),
                        e.exposure.to_string(),
                        e.owner.pid.map(|p| p.to_string()).unwrap_or_default(),
                        e.owner.process.clone().unwrap_or_default(),
                        e.previous_owner
                            .and_then(|o| o.process.clone())
                            .unwrap_or_default(),
                    ],
                )?;
            }
        }
        None => {
            writeln!(
                out,
                "{}: {} UTC versus {now_label}",
                esc(&host),
                when(then_ms)
            )?;
            if entries.is_empty() {
                writeln!(out, "no listener was added, removed or changed hands")?;
            } else {
                let rows: Vec<Vec<Cell>> = entries
                    .iter()
                    .map(|e| {
                        let (mark, color) = match e.change {
                            "added" => ("+", render::GREEN),
                            "removed" => ("-", render::RED),
                            _ => ("~", render::YELLOW),
                        };
                        vec![
                            Cell::colored(mark, color),
                            Cell::plain(e.proto.as_str()),
                            Cell::plain(place(e.address, e.port)),
                            Cell::plain(e.exposure.label()),
                            Cell::plain(owner_text(e.owner)),
                            Cell::plain(
                                e.previous_owner
                                    .map(|o| format!("was {}", owner_text(o)))
                                    .unwrap_or_default(),
                            ),
                        ]
                    })
                    .collect();
                render::write_table(
                    out,
                    ctx.style,
                    &["", "PROTO", "ADDRESS", "EXPOSURE", "OWNER", "CHANGE"],
                    &rows,
                    "",
                )?;
            }
        }
    }
    Ok(Outcome::of(!entries.is_empty()))
}
