//! `portolan history`: the recorded events (the watch store), and with a port, what holds
//! it according to the last sample (`portolan_watch::history::port_now`).

use std::io::{self, Write};

use anyhow::Context;
use clap::Args;
use portolan_core::when::parse_instant;
use portolan_core::{Exposure, Protocol};
use portolan_watch::history::{self, PortNow};
use portolan_watch::model::{now_ms, rfc3339_ms, Event, EventKind};
use portolan_watch::store::EventFilter;
use serde::Serialize;

use crate::cli::{StoreArgs, TableJsonCsv};
use crate::render::csv::CsvOut;
use crate::render::history::{owner_text, place, when};
use crate::render::{self, esc, Cell, Output, Report, Style};
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

/// The events asked for; with a port, what holds it now per the store.
#[derive(Debug, Serialize)]
struct HistoryReport {
    events: Vec<Event>,
    /// With a port: its holders at the host's last sample (absent when the host never
    /// recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    now: Option<PortNow>,
}

impl Report for HistoryReport {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        let events = &self.events;
        if !events.is_empty() {
            let many_hosts = events.iter().any(|e| e.host != events[0].host);
            let mut headers = vec!["TIME (UTC)"];
            if many_hosts {
                headers.push("HOST");
            }
            headers.extend([
                "EVENT", "PROTO", "ADDRESS", "EXPOSURE", "OWNER", "USER", "CHANGE",
            ]);
            let rows: Vec<Vec<Cell>> = events
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
                        Cell::plain(
                            l.owner
                                .user
                                .as_deref()
                                .map_or_else(|| l.owner.uid.to_string(), |u| esc(u).into_owned()),
                        ),
                        Cell::plain(what_changed(e)),
                    ]);
                    r
                })
                .collect();
            render::write_table(w, style, &headers, &rows, "")?;
        }
        if let Some(now) = &self.now {
            write_port_now(w, style, now)?;
        }
        Ok(())
    }

    /// One event per line.
    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        render::write_jsonl(w, &self.events)
    }

    fn csv(&self, w: &mut CsvOut<'_>) -> io::Result<()> {
        w.row([
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
        ])?;
        for e in &self.events {
            let l = &e.listener;
            let p = e.previous.as_ref();
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            w.row([
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
            ])?;
        }
        Ok(())
    }

    fn found(&self) -> bool {
        !self.events.is_empty()
    }
}

/// The last line of a port's life: what holds it now, per the store.
fn write_port_now(w: &mut dyn Write, style: Style, now: &PortNow) -> io::Result<()> {
    writeln!(w)?;
    if now.holders.is_empty() {
        return writeln!(
            w,
            "now: nothing listens on port {} on {} (last sample {})",
            now.port,
            esc(&now.host),
            when(now.last_sample_ms)
        );
    }
    for l in &now.holders {
        writeln!(
            w,
            "now: {} {} ({}) held by {} on {} (last sample {})",
            l.proto,
            place(l.address, l.port),
            style.paint(render::BOLD, l.exposure.label()),
            owner_text(&l.owner),
            esc(&now.host),
            when(now.last_sample_ms)
        )?;
    }
    Ok(())
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
    let mut store = history::open_history(a.store.db.as_deref(), a.store.store.as_deref())?;
    let events = store.events(&filter)?;
    let port_now = a
        .port
        .map(|port| history::port_now(store.as_mut(), a.host.as_deref(), port))
        .transpose()?
        .flatten();
    if ctx.is_table() {
        if events.is_empty() {
            ctx.note(&format!("no events in {} match", store.describe()));
        } else if events.len() == a.limit {
            ctx.note(&format!(
                "showing the newest {} events; --limit N shows more",
                a.limit
            ));
        }
    }
    render::emit(
        out,
        ctx,
        &HistoryReport {
            events,
            now: port_now,
        },
    )
}
