//! `portolan history`: the recorded events (the watch store) and the port scans that
//! `portolan sentry` recorded beside them, in one list by time; with a port, what holds it
//! according to the last sample (`portolan_watch::history::port_now`).

use std::io::{self, Write};

use anyhow::Context;
use clap::Args;
use portolan_core::when::parse_instant;
use portolan_core::{Exposure, Protocol};
use portolan_watch::history::{self, PortNow};
use portolan_watch::model::{now_ms, rfc3339_ms, Event, EventKind, ScanRecord};
use portolan_watch::store::{EventFilter, ScanFilter};
use serde::Serialize;

use crate::cli::{StoreArgs, TableJsonCsv};
use crate::render::csv::CsvOut;
use crate::render::history::{owner_text, place, scan_protos, scan_sources, scan_summary, when};
use crate::render::{self, esc, Cell, Output, Report, Style};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only this port (its whole life: every event, the scans that tried it, and what holds
    /// it now)
    #[arg(value_name = "PORT")]
    pub port: Option<u16>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Events (and scans going on) from this moment on: a span ago (2h, 1d) or a UTC
    /// date/time (2026-11-22T08:00)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Events (and scans started) up to this moment (same forms as --since)
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only this host's events and scans (default: every host in the store)
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Only listeners of this process (name or executable); no scans
    #[arg(long, value_name = "NAME")]
    pub process: Option<String>,
    /// Only listeners of this systemd unit; no scans
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// Only these kinds: opened, closed, restarted, owner_changed, exposure_changed, present;
    /// no scans
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only tcp or udp listeners; no scans
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<String>,
    /// Only the port scans that `portolan sentry` recorded, no listener events
    #[arg(long, conflicts_with_all = ["no_scans", "process", "unit", "kind", "proto"])]
    pub scans: bool,
    /// Only listener events, no scans
    #[arg(long)]
    pub no_scans: bool,
    /// At most this many events and scans (the newest)
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

/// A scan as the report lists it: the stored record with `"kind": "scan"`, so that a JSON
/// Lines reader tells it from an event (whose kinds are the listener changes).
#[derive(Debug, Serialize)]
struct ScanItem {
    kind: &'static str,
    #[serde(flatten)]
    scan: ScanRecord,
}

impl ScanItem {
    fn new(scan: ScanRecord) -> ScanItem {
        ScanItem { kind: "scan", scan }
    }
}

/// One line of the history, event or scan, in time order.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Event(&'a Event),
    Scan(&'a ScanItem),
}

impl<'a> Line<'a> {
    fn host(self) -> &'a str {
        match self {
            Line::Event(e) => &e.host,
            Line::Scan(s) => &s.scan.host,
        }
    }
}

/// The events and scans asked for; with a port, what holds it now per the store.
#[derive(Debug, Serialize)]
struct HistoryReport {
    events: Vec<Event>,
    /// Port scans, oldest first (by start); empty with `--no-scans` or a listener-only
    /// filter.
    scans: Vec<ScanItem>,
    /// With a port: its holders at the host's last sample (absent when the host never
    /// recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    now: Option<PortNow>,
}

impl HistoryReport {
    /// Events and scans in one list by time; at the same moment, events first.
    fn lines(&self) -> Vec<Line<'_>> {
        let mut out = Vec::with_capacity(self.events.len() + self.scans.len());
        let (mut e, mut s) = (self.events.iter().peekable(), self.scans.iter().peekable());
        loop {
            let line = match (e.peek(), s.peek()) {
                (Some(ev), Some(sc)) if sc.scan.started_ms < ev.ts_ms => s.next().map(Line::Scan),
                (Some(_), _) => e.next().map(Line::Event),
                (None, Some(_)) => s.next().map(Line::Scan),
                (None, None) => None,
            };
            match line {
                Some(l) => out.push(l),
                None => return out,
            }
        }
    }
}

fn event_row(e: &Event, many_hosts: bool) -> Vec<Cell> {
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
}

/// A scan's row: its time, host, `scan` (red while it goes on), protocols and sources;
/// among events the listener columns stay empty and the rest is in CHANGE.
fn scan_row(s: &ScanRecord, many_hosts: bool, among_events: bool) -> Vec<Cell> {
    let mut r = vec![Cell::plain(when(s.started_ms))];
    if many_hosts {
        r.push(Cell::plain(esc(&s.host).into_owned()));
    }
    let color = if s.ended_ms.is_none() {
        render::RED
    } else {
        render::YELLOW
    };
    r.extend([
        Cell::colored("scan", color),
        Cell::plain(scan_protos(s)),
        Cell::plain(scan_sources(s)),
    ]);
    if among_events {
        r.extend([Cell::plain(""), Cell::plain(""), Cell::plain("")]);
    }
    r.push(Cell::plain(scan_summary(s)));
    r
}

impl Report for HistoryReport {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        let lines = self.lines();
        if let Some(first) = lines.first() {
            let many_hosts = lines.iter().any(|l| l.host() != first.host());
            let among_events = !self.events.is_empty();
            let mut headers = vec!["TIME (UTC)"];
            if many_hosts {
                headers.push("HOST");
            }
            if among_events {
                headers.extend([
                    "EVENT", "PROTO", "ADDRESS", "EXPOSURE", "OWNER", "USER", "CHANGE",
                ]);
            } else {
                headers.extend(["EVENT", "PROTO", "SOURCE", "SCAN"]);
            }
            let rows: Vec<Vec<Cell>> = lines
                .iter()
                .map(|l| match l {
                    Line::Event(e) => event_row(e, many_hosts),
                    Line::Scan(s) => scan_row(&s.scan, many_hosts, among_events),
                })
                .collect();
            render::write_table(w, style, &headers, &rows, "")?;
        }
        if let Some(now) = &self.now {
            write_port_now(w, style, now)?;
        }
        Ok(())
    }

    /// One event or scan per line, by time.
    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        render::write_jsonl(w, &self.lines())
    }

    /// One row per event or scan, by time. A scan's row has its start as the time, `scan`
    /// as the event, its protocols, its first source as the address, and the rest as the
    /// note (the whole record is in `--json`).
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
        for line in self.lines() {
            match line {
                Line::Event(e) => w.row(event_csv(e))?,
                Line::Scan(s) => {
                    let s = &s.scan;
                    let mut row = vec![String::new(); 16];
                    row[0] = rfc3339_ms(s.started_ms);
                    row[1].clone_from(&s.host);
                    row[2] = "scan".into();
                    row[3] = scan_protos(s);
                    row[4] = s
                        .sources
                        .first()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    row[15] = format!("{}; {}", scan_sources(s), scan_summary(s));
                    w.row(row)?;
                }
            }
        }
        Ok(())
    }

    fn found(&self) -> bool {
        !self.events.is_empty() || !self.scans.is_empty()
    }
}

fn event_csv(e: &Event) -> [String; 16] {
    let l = &e.listener;
    let p = e.previous.as_ref();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    [
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
    ]
}

/// Keeps the `limit` newest of events and scans together (each list oldest first): the
/// oldest lines go first, an event before a scan of the same moment, as `lines` orders them.
fn newest(events: &mut Vec<Event>, scans: &mut Vec<ScanItem>, limit: usize) {
    let mut extra = (events.len() + scans.len()).saturating_sub(limit);
    let (mut e, mut s) = (0, 0);
    while extra > 0 {
        let event_first = match (events.get(e), scans.get(s)) {
            (Some(ev), Some(sc)) => ev.ts_ms <= sc.scan.started_ms,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if event_first {
            e += 1;
        } else {
            s += 1;
        }
        extra -= 1;
    }
    events.drain(..e);
    scans.drain(..s);
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
    // A filter that only listeners have (process, unit, kind, protocol) leaves scans out.
    let listener_only =
        a.process.is_some() || a.unit.is_some() || !a.kind.is_empty() || a.proto.is_some();
    let want_events = !a.scans;
    let want_scans = !a.no_scans && !listener_only;
    let scan_filter = ScanFilter {
        host: a.host.clone(),
        since_ms: filter.since_ms,
        until_ms: filter.until_ms,
        source: None,
        port: a.port,
        limit: Some(a.limit),
    };
    let mut store = history::open_history(a.store.db.as_deref(), a.store.store.as_deref())?;
    let mut events = if want_events {
        store.events(&filter)?
    } else {
        Vec::new()
    };
    let mut scans: Vec<ScanItem> = if want_scans {
        store
            .scans(&scan_filter)?
            .into_iter()
            .map(ScanItem::new)
            .collect()
    } else {
        Vec::new()
    };
    newest(&mut events, &mut scans, a.limit);
    let port_now = a
        .port
        .map(|port| history::port_now(store.as_mut(), a.host.as_deref(), port))
        .transpose()?
        .flatten();
    if ctx.is_table() {
        let what = match (want_events, want_scans) {
            (true, true) => "events or scans",
            (true, false) => "events",
            (false, _) => "scans",
        };
        let shown = events.len() + scans.len();
        if shown == 0 {
            ctx.note(&format!("no {what} in {} match", store.describe()));
        } else if shown == a.limit {
            let what = what.replace(" or ", " and ");
            ctx.note(&format!(
                "showing the newest {} {what}; --limit N shows more",
                a.limit
            ));
        }
    }
    render::emit(
        out,
        ctx,
        &HistoryReport {
            events,
            scans,
            now: port_now,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use portolan_core::listener::{Listener, Owner};

    fn event(ts_ms: i64) -> Event {
        Event {
            ts_ms,
            host: "h".into(),
            kind: EventKind::Opened,
            listener: Listener {
                proto: Protocol::Tcp,
                address: "127.0.0.1".parse().unwrap(),
                port: 80,
                exposure: Exposure::Loopback,
                owner: Owner::default(),
            },
            previous: None,
            note: None,
        }
    }

    fn scan(started_ms: i64) -> ScanItem {
        ScanItem::new(ScanRecord {
            host: "h".into(),
            key: started_ms.to_string(),
            started_ms,
            detected_ms: started_ms,
            last_ms: started_ms,
            ended_ms: None,
            sources: vec![],
            sources_total: 0,
            detector: "trw".into(),
            kinds: vec![],
            tool: None,
            tool_because: None,
            ports: vec![],
            ports_total: 0,
            probes: 0,
            failed: 0,
            probes_to_detect: 0,
            blocked_until_ms: None,
        })
    }

    fn times(r: &HistoryReport) -> Vec<String> {
        r.lines()
            .iter()
            .map(|l| match l {
                Line::Event(e) => format!("e{}", e.ts_ms),
                Line::Scan(s) => format!("s{}", s.scan.started_ms),
            })
            .collect()
    }

    #[test]
    fn events_and_scans_interleave_by_time_and_the_limit_keeps_the_newest() {
        let report = |limit| {
            let mut events = vec![event(10), event(20), event(20), event(40)];
            let mut scans = vec![scan(5), scan(20), scan(30), scan(50)];
            newest(&mut events, &mut scans, limit);
            HistoryReport {
                events,
                scans,
                now: None,
            }
        };
        assert_eq!(
            times(&report(100)),
            ["s5", "e10", "e20", "e20", "s20", "s30", "e40", "s50"]
        );
        assert_eq!(times(&report(5)), ["e20", "s20", "s30", "e40", "s50"]);
        assert_eq!(times(&report(1)), ["s50"]);
        assert!(times(&report(0)).is_empty());
        assert!(!report(0).found());
        let v = serde_json::to_value(report(1)).unwrap();
        assert_eq!(v["events"], serde_json::json!([]));
        assert_eq!(v["scans"][0]["kind"], "scan");
        assert_eq!(v["scans"][0]["detector"], "trw");
    }
}
