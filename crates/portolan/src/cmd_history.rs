//! `portolan history` and `portolan diff`: questions to the watch history.

use std::io::Write;

use anyhow::Context;
use portolan_core::when::parse_instant;
use portolan_core::{Exposure, Protocol};
use portolan_watch::model::{now_ms, rfc3339_ms, Event, EventKind, Listener, Owner};
use portolan_watch::sampler::Sampler;
use portolan_watch::store::EventFilter;
use portolan_watch::tracker::{by_place, owner_change};
use serde::Serialize;

use crate::cli::{DiffArgs, HistoryArgs};
use crate::cmd_watch::{hostname, open_store};
use crate::output::{self, esc, Cell, Machine};
use crate::{Ctx, Outcome};

fn moment(flag: &str, v: &str, now: i64) -> anyhow::Result<i64> {
    parse_instant(v, now).with_context(|| format!("--{flag}"))
}

/// `2026-11-22 08:25:00` (UTC) for tables.
fn when(ts_ms: i64) -> String {
    let s = rfc3339_ms(ts_ms);
    format!("{} {}", &s[..10], &s[11..19])
}

fn owner_text(o: &Owner) -> String {
    let mut s = match (&o.process, o.pid) {
        (Some(p), Some(pid)) => format!("{}[{pid}]", esc(p)),
        (Some(p), None) => esc(p).into_owned(),
        (None, Some(pid)) => format!("[{pid}]"),
        (None, None) => "?".to_string(),
    };
    if let Some(u) = o.unit.as_deref().or(o.container.as_deref()) {
        s = format!("{s} ({})", esc(u));
    }
    s
}

fn place(addr: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

fn kind_color(k: EventKind, exposure: Exposure) -> Option<&'static str> {
    match k {
        EventKind::Opened | EventKind::ExposureChanged if exposure == Exposure::AllInterfaces => {
            Some(output::RED)
        }
        EventKind::Opened | EventKind::OwnerChanged | EventKind::ExposureChanged => {
            Some(output::YELLOW)
        }
        EventKind::Closed => Some(output::DIM),
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

pub fn history(ctx: &Ctx, a: &HistoryArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
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
            output::write_jsonl(out, &events)?;
        }
        Some(Machine::Csv) => {
            output::write_csv_row(
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
                output::write_csv_row(
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
                output::note(
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
                output::write_table(out, ctx.style, &headers, &rows, "")?;
                if events.len() == a.limit {
                    output::note(
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
    ctx: &Ctx,
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
                ctx.style.paint(output::BOLD, l.exposure.label()),
                owner_text(&l.owner),
                esc(&host),
                when(state.last_sample_ms)
            )?;
        }
    }
    Ok(())
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

pub fn diff(ctx: &Ctx, a: &DiffArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let now = now_ms();
    let then_ms = moment("since", &a.since, now)?;
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
        output::note(
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
            output::write_jsonl(out, &entries)?;
        }
        Some(Machine::Csv) => {
            output::write_csv_row(
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
                output::write_csv_row(
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
                            "added" => ("+", output::GREEN),
                            "removed" => ("-", output::RED),
                            _ => ("~", output::YELLOW),
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
                output::write_table(
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
