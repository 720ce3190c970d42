//! `portolan history` and `portolan diff`: questions to the watch history.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use portolan_core::when::parse_instant;
use portolan_core::{Exposure, Protocol};
use portolan_watch::model::{now_ms, rfc3339_ms, Event, EventKind, Listener};
use portolan_watch::store::EventFilter;

use crate::cli::{StoreArgs, TableJsonCsv};
use crate::cmd::watch::{hostname, open_store};
use crate::render::history::{owner_text, place, when};
use crate::render::Output;
use crate::render::{self, esc, Cell, Machine};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this port (its whole life: every event, and what holds it now)
    #[arg(value_name = "PORT")]
    pub port: Option<u16>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Events from this moment on: a span ago (2h, 1d) or a UTC date/time (2026-11-22T08:00)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Events up to this moment (same forms as --since)
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only this host's events (default: every host in the store)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Only listeners of this process (name or executable)
    #[arg(long, value_name = "NAME")]
    pub process: Option<String>,
    /// Only listeners of this systemd unit
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// Only these kinds: opened, closed, restarted, owner_changed, exposure_changed, present
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only tcp or udp
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<String>,
    /// At most this many events (the newest)
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: usize,
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

fn moment(flag: &str, v: &str, now: i64) -> anyhow::Result<i64> {
    parse_instant(v, now).with_context(|| format!("--{flag}"))
}

fn kind_color(k: EventKind, exposure: Exposure) -> Option<&'static str> {
    match k {
        EventKind::Opened | EventKind::ExposureChanged if exposure == Exposure::AllInterfaces => {
            Some(render::RED)
        }
        EventKind::Opened | EventKind::OwnerChanged | EventKind::ExposureChanged => {
            Some(render::YELLOW)
        }
        EventKind::Closed => Some(render::DIM),
        EventKind::Present | EventKind::Restarted => None,
    }
}

fn what_changed(e: &Event) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &e.previous {
        match e.kind {
            EventKind::ExposureChanged => parts.push(format!(
                "was {} ({})",
                place(p.address, e.listener.port),
                p.exposure.label()
            )),
            _ => parts.push(format!("was {}", owner_text(&p.owner))),
        }
    }
    if let Some(n) = &e.note {
        parts.push(esc(n).into_owned());
    }
    parts.join("; ")
}

pub fn run(ctx: &Output, a: &HistoryArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let now = now_ms();
    let kinds = a
        .kind
        .iter()
        .map(|k| k.parse::<EventKind>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()
        .context("--kind")?;
    let proto = a
        .proto
        .as_deref()
        .map(|p| match p.parse::<Protocol>() {
            Ok(p @ (Protocol::Tcp | Protocol::Udp)) => Ok(p),
            _ => anyhow::bail!("--proto {}: tcp or udp", esc(p)),
        })
        .transpose()?;
    let filter = EventFilter {
        host: a.host.clone(),
        since_ms: a
            .since
            .as_deref()
            .map(|v| moment("since", v, now))
            .transpose()?,
        until_ms: a
            .until
            .as_deref()
            .map(|v| moment("until", v, now))
            .transpose()?,
        port: a.port,
        proto,
        process: a.process.clone(),
        unit: a.unit.clone(),
        kinds,
        limit: Some(a.limit),
    };
    let mut store = open_store(&a.store)?;
    let events = store.events(&filter)?;
    match ctx.format.machine() {
        Some(Machine::Json) => {
            serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "events": events }))?;
            writeln!(out)?;
        }
        Some(Machine::Jsonl) => {
            render::write_jsonl(out, &events)?;
        }
        Some(Machine::Csv) => {
            render::write_csv_row(
                out,
                &[
                    "time",
                    "host",
                    "event",
                    "proto",
                    "address",
                    "port",
                    "exposure",
                    "pid",
                    "process",
                    "exe",
                    "user",
                    "unit",
                    "previous_address",
                    "previous_pid",
                    "previous_process",
                    "note",
                ]
                .map(String::from),
            )?;
            for e in &events {
                let l = &e.listener;
                let p = e.previous.as_ref();
                let opt = |v: &Option<String>| v.clone().unwrap_or_default();
                render::write_csv_row(
                    out,
                    &[
                        rfc3339_ms(e.ts_ms),
                        e.host.clone(),
                        e.kind.to_string(),
                        l.proto.to_string(),
                        l.address.to_string(),
                        l.port.to_string(),
                        l.exposure.to_string(),
                        l.owner.pid.map(|p| p.to_string()).unwrap_or_default(),
                        opt(&l.owner.process),
                        opt(&l.owner.exe),
                        opt(&l.owner.user),
                        opt(&l.owner.unit),
                        p.map(|p| p.address.to_string()).unwrap_or_default(),
                        p.and_then(|p| p.owner.pid)
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        p.map(|p| opt(&p.owner.process)).unwrap_or_default(),
                        opt(&e.note),
                    ],
                )?;
            }
        }
        None => {
            if events.is_empty() {
                render::note(
                    ctx.err_color,
                    &format!("no events in {} match", store.describe()),
                );
            } else {
                let many_hosts = events.iter().any(|e| e.host != events[0].host);
                let mut headers = vec!["TIME (UTC)"];
                if many_hosts {
                    headers.push("HOST");
                }
                headers.extend([
                    "EVENT", "PROTO", "ADDRESS", "EXPOSURE", "OWNER", "USER", "CHANGE",
                ]);
                let rows: Vec<Vec<Cell>> =
                    events
                        .iter()
                        .map(|e| {
                            let l = &e.listener;
                            let mut r = vec![Cell::plain(when(e.ts_ms))];
                            if many_hosts {
                                r.push(Cell::plain(esc(&e.host).into_owned()));
                            }
                            let kind = match kind_color(e.kind, l.exposure) {
                                Some(c) => Cell::colored(e.kind.as_str(), c),
                                None => Cell::plain(e.kind.as_str()),
                            };
                            r.extend([
                                kind,
                                Cell::plain(l.proto.as_str()),
                                Cell::plain(place(l.address, l.port)),
                                Cell::plain(l.exposure.label()),
                                Cell::plain(owner_text(&l.owner)),
                                Cell::plain(l.owner.user.as_deref().map_or_else(
                                    || l.owner.uid.to_string(),
                                    |u| esc(u).into_owned(),
                                )),
                                Cell::plain(what_changed(e)),
                            ]);
                            r
                        })
                        .collect();
                render::write_table(out, ctx.style, &headers, &rows, "")?;
                if events.len() == a.limit {
                    render::note(
                        ctx.err_color,
                        &format!(
                            "showing the newest {} events; --limit N shows more",
                            a.limit
                        ),
                    );
                }
            }
            if let Some(port) = a.port {
                port_now(ctx, &mut *store, a.host.as_deref(), port, out)?;
            }
        }
    }
    Ok(Outcome::of(!events.is_empty()))
}

/// The last line of a port's life: what holds it now, per the store.
fn port_now(
    ctx: &Output,
    store: &mut dyn portolan_watch::store::Store,
    host: Option<&str>,
    port: u16,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let host = host.map_or_else(hostname, str::to_owned);
    let Some(state) = store.last_state(&host)? else {
        return Ok(());
    };
    let holders: Vec<&Listener> = state.listeners.iter().filter(|l| l.port == port).collect();
    writeln!(out)?;
    if holders.is_empty() {
        writeln!(
            out,
            "now: nothing listens on port {port} on {} (last sample {})",
            esc(&host),
            when(state.last_sample_ms)
        )?;
    } else {
        for l in holders {
            writeln!(
                out,
                "now: {} {} ({}) held by {} on {} (last sample {})",
                l.proto,
                place(l.address, l.port),
                ctx.style.paint(render::BOLD, l.exposure.label()),
                owner_text(&l.owner),
                esc(&host),
                when(state.last_sample_ms)
            )?;
        }
    }
    Ok(())
}
