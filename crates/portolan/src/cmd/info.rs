//! `portolan info`: what a port number or service name means, here and in general.

use std::collections::BTreeSet;
use std::io::{self, Write};

use clap::Args;
use portolan_catalog::{Assignment, Note};
use portolan_core::escape::for_terminal;
use portolan_core::{Port, PortQuery, PortRange, PortSpec, Protocol, RangeClass};
use portolan_sockets::{Inventory, OwnerScan, PortSysctls, Query, SocketEntry};
use serde::Serialize;

use crate::cli::TableJsonCsv;
use crate::render::csv::CsvOut;
use crate::render::sockets::{self as view, SocketRecord};
use crate::render::{self, Output, Report};
use crate::render::{write_table, Cell, Style, BOLD, DIM, RED, YELLOW};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Ports (443, 53/udp), ranges (6000-6063) or service names (ssh, postgres)
    #[arg(required = true, value_name = "QUERY", allow_negative_numbers = true)]
    pub queries: Vec<String>,
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

#[derive(Serialize)]
struct AssignmentOut {
    service: &'static str,
    port_start: Option<u16>,
    port_end: Option<u16>,
    proto: Option<&'static str>,
    description: &'static str,
    reference: &'static str,
    unauthorized_use: &'static str,
}

impl From<&Assignment> for AssignmentOut {
    fn from(a: &Assignment) -> Self {
        AssignmentOut {
            service: a.name,
            port_start: a.ports.map(|p| p.0),
            port_end: a.ports.map(|p| p.1),
            proto: a.proto.map(Protocol::as_str),
            description: a.description,
            reference: a.reference,
            unauthorized_use: a.unauthorized_use,
        }
    }
}

#[derive(Serialize)]
struct NoteOut {
    service: &'static str,
    title: &'static str,
    proto: &'static str,
    usual: &'static str,
    cleartext: bool,
    exposure: &'static str,
    risk: &'static str,
}

impl From<&Note> for NoteOut {
    fn from(n: &Note) -> Self {
        NoteOut {
            service: n.service,
            title: n.title,
            proto: n.proto.label(),
            usual: n.usual,
            cleartext: n.cleartext,
            exposure: n.exposure.as_str(),
            risk: n.risk,
        }
    }
}

#[derive(Serialize)]
struct PortOut<'a> {
    port: u16,
    class: RangeClass,
    needs_privilege: bool,
    ephemeral: bool,
    reserved_locally: bool,
    assignments: Vec<AssignmentOut>,
    notes: Vec<NoteOut>,
    listeners: Vec<SocketRecord<'a>>,
}

#[derive(Serialize)]
struct QueryOut<'a> {
    query: String,
    kind: &'static str,
    /// For range queries: what this machine says about the range as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    range: Option<RangeOut>,
    ports: Vec<PortOut<'a>>,
    assignments: Vec<AssignmentOut>,
}

#[derive(Serialize)]
struct RangeOut {
    start: u16,
    end: u16,
    ports: u32,
    /// How many ports of the range need privilege to bind here.
    privileged_ports: u32,
    /// How many ports of the range are in this machine's ephemeral range.
    ephemeral_ports: u32,
}

fn range_out(r: PortRange, sys: &PortSysctls) -> RangeOut {
    let overlap = |lo: u16, hi: u16| -> u32 {
        let (a, b) = (r.start().get().max(lo), r.end().get().min(hi));
        if a > b {
            0
        } else {
            u32::from(b) - u32::from(a) + 1
        }
    };
    RangeOut {
        start: r.start().get(),
        end: r.end().get(),
        ports: r.len(),
        privileged_ports: if sys.unprivileged_port_start == 0 {
            0
        } else {
            overlap(1, sys.unprivileged_port_start - 1)
        },
        ephemeral_ports: overlap(sys.ephemeral.start().get(), sys.ephemeral.end().get()),
    }
}

fn notes_for(p: Port, proto: Option<Protocol>) -> Vec<&'static Note> {
    let mut v: Vec<&'static Note> = Vec::new();
    for pr in [Protocol::Tcp, Protocol::Udp] {
        if proto.is_none_or(|x| x == pr) {
            if let Some(n) = portolan_catalog::note(p, pr) {
                if !v.iter().any(|m| std::ptr::eq(*m, n)) {
                    v.push(n);
                }
            }
        }
    }
    v
}

pub fn run(ctx: &Output, a: &InfoArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let queries: Vec<PortQuery> = a
        .queries
        .iter()
        .map(|q| q.parse::<PortQuery>())
        .collect::<Result<_, _>>()?;
    // Ports to ask the inventory about, in one collection.
    let mut ports: BTreeSet<u16> = BTreeSet::new();
    let mut ranges = Vec::new();
    let mut name_ports: Vec<(String, Vec<Port>, Vec<&'static Assignment>)> = Vec::new();
    for q in &queries {
        match q {
            PortQuery::Port(p, _) => {
                ports.insert(p.get());
            }
            PortQuery::Range(r, _) => ranges.push(*r),
            PortQuery::Name(n) => {
                let rows = portolan_catalog::by_name(n);
                let mut ps: BTreeSet<u16> = rows
                    .iter()
                    .filter_map(|a| a.ports.filter(|(s, e)| s == e).map(|(s, _)| s))
                    .collect();
                for note in portolan_catalog::notes_by_name(n) {
                    ps.insert(note.port);
                }
                let ps: Vec<Port> = ps.into_iter().map(Port::new).collect();
                ports.extend(ps.iter().map(|p| p.get()));
                name_ports.push((n.clone(), ps, rows));
            }
        }
    }
    let mut spec_ranges: Vec<PortRange> = ports
        .iter()
        .map(|&p| PortRange::single(Port::new(p)))
        .collect();
    spec_ranges.extend(ranges.iter().copied());
    let inv = if spec_ranges.is_empty() {
        Inventory::default()
    } else {
        Inventory::collect(&Query {
            listening_only: true,
            ports: Some(PortSpec::from_ranges(spec_ranges)),
            owners: OwnerScan::Targeted,
            source: ctx.source,
            ..Query::default()
        })?
    };
    view::warn_all(&inv.warnings, ctx.err_color);
    let sys = PortSysctls::read();
    let listeners_on = |p: Port, proto: Option<Protocol>| -> Vec<&SocketEntry> {
        inv.sockets
            .iter()
            .filter(|s| s.local.port() == p.get() && proto.is_none_or(|x| x == s.proto))
            .collect()
    };
    let port_out = |p: Port, proto: Option<Protocol>| PortOut {
        port: p.get(),
        class: p.class(),
        needs_privilege: sys.needs_privilege(p),
        ephemeral: sys.is_ephemeral(p),
        reserved_locally: sys.is_reserved(p),
        assignments: portolan_catalog::by_port(p, proto)
            .map(AssignmentOut::from)
            .collect(),
        notes: notes_for(p, proto).into_iter().map(NoteOut::from).collect(),
        listeners: listeners_on(p, proto)
            .into_iter()
            .map(|s| view::record(&inv, s))
            .collect(),
    };

    let mut results = Vec::new();
    let mut name_iter = name_ports.iter();
    for (q, raw) in queries.iter().zip(&a.queries) {
        let r = match q {
            PortQuery::Port(p, proto) => QueryOut {
                query: raw.clone(),
                kind: "port",
                range: None,
                ports: vec![port_out(*p, *proto)],
                assignments: Vec::new(),
            },
            PortQuery::Range(r, proto) => {
                let rows: Vec<AssignmentOut> = portolan_catalog::assignments()
                    .iter()
                    .filter(|a| {
                        a.ports
                            .is_some_and(|(s, e)| s <= r.end().get() && e >= r.start().get())
                    })
                    .filter(|a| {
                        !a.is_unassigned()
                            && (proto.is_none() || a.proto.is_none() || a.proto == *proto)
                    })
                    .map(AssignmentOut::from)
                    .collect();
                // Busy in the requested protocol only: `info A-B/udp` must not list ports
                // that only TCP uses.
                let busy: BTreeSet<u16> = inv
                    .sockets
                    .iter()
                    .filter(|s| proto.is_none_or(|x| x == s.proto))
                    .map(|s| s.local.port())
                    .filter(|p| r.contains(Port::new(*p)))
                    .collect();
                QueryOut {
                    query: raw.clone(),
                    kind: "range",
                    range: Some(range_out(*r, &sys)),
                    ports: busy
                        .into_iter()
                        .map(|p| port_out(Port::new(p), *proto))
                        .collect(),
                    assignments: rows,
                }
            }
            PortQuery::Name(_) => {
                let (_, ps, rows) = name_iter.next().expect("one entry per name query");
                QueryOut {
                    query: raw.clone(),
                    kind: "name",
                    range: None,
                    ports: ps.iter().map(|p| port_out(*p, None)).collect(),
                    assignments: rows.iter().map(|a| AssignmentOut::from(*a)).collect(),
                }
            }
        };
        results.push(r);
    }

    let report = InfoReport { results, sys };
    render::emit(out, ctx, &report)
}

/// `info`: one result per query, in the order asked. Its JSON is `{"results": [...]}`; JSON
/// Lines carry one result per line; CSV one row per IANA assignment.
#[derive(Serialize)]
struct InfoReport<'a> {
    results: Vec<QueryOut<'a>>,
    #[serde(skip)]
    sys: PortSysctls,
}

impl Report for InfoReport<'_> {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        for (i, r) in self.results.iter().enumerate() {
            if i > 0 {
                writeln!(w)?;
            }
            write_query(w, style, r, &self.sys)?;
        }
        Ok(())
    }

    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        crate::render::write_jsonl(w, &self.results)
    }

    fn csv(&self, w: &mut CsvOut<'_>) -> io::Result<()> {
        w.row([
            "query",
            "port_start",
            "port_end",
            "proto",
            "service",
            "description",
            "reference",
        ])?;
        for r in &self.results {
            let mut rows: Vec<&AssignmentOut> = r.assignments.iter().collect();
            rows.extend(r.ports.iter().flat_map(|p| p.assignments.iter()));
            for a in rows {
                w.row([
                    r.query.clone(),
                    a.port_start.map(|p| p.to_string()).unwrap_or_default(),
                    a.port_end.map(|p| p.to_string()).unwrap_or_default(),
                    a.proto.unwrap_or("").to_string(),
                    a.service.to_string(),
                    a.description.to_string(),
                    a.reference.to_string(),
                ])?;
            }
        }
        Ok(())
    }

    fn found(&self) -> bool {
        self.results
            .iter()
            .any(|r| !r.ports.is_empty() || !r.assignments.is_empty())
    }
}

fn write_assignments(
    out: &mut dyn Write,
    style: Style,
    rows: &[AssignmentOut],
    indent: &str,
) -> std::io::Result<()> {
    let cells: Vec<Vec<Cell>> = rows
        .iter()
        .map(|a| {
            let ports = match (a.port_start, a.port_end) {
                (Some(s), Some(e)) if s == e => s.to_string(),
                (Some(s), Some(e)) => format!("{s}-{e}"),
                _ => "-".into(),
            };
            let name = if a.service.is_empty() { "-" } else { a.service };
            let mut desc = a.description.to_string();
            if !a.reference.is_empty() {
                desc.push_str("  ");
                desc.push_str(a.reference);
            }
            if !a.unauthorized_use.is_empty() {
                desc.push_str("  (unauthorized use reported: ");
                desc.push_str(a.unauthorized_use);
                desc.push(')');
            }
            vec![
                Cell::plain(ports),
                Cell::plain(a.proto.unwrap_or("-")),
                Cell::colored(name, BOLD),
                Cell::plain(desc),
            ]
        })
        .collect();
    write_table(out, style, &[], &cells, indent)
}

fn write_port(
    out: &mut dyn Write,
    style: Style,
    p: &PortOut,
    sys: &PortSysctls,
) -> std::io::Result<()> {
    let port = Port::new(p.port);
    let class = port.class();
    let (lo, hi) = class.bounds();
    writeln!(
        out,
        "{}  {} port ({lo}-{hi})",
        style.paint(BOLD, &format!("port {}", p.port)),
        class.label()
    )?;
    if p.assignments.iter().all(|a| a.service.is_empty()) {
        let what = p
            .assignments
            .first()
            .map_or("not in the IANA registry", |a| a.description);
        writeln!(out, "  IANA: {what}")?;
    } else {
        write_assignments(out, style, &p.assignments, "  ")?;
    }
    let kv = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "  {:<15} {v}", format!("{k}:"));
    for n in &p.notes {
        kv(
            out,
            "usually",
            &format!("{} ({}, {})", n.usual, n.title, n.proto),
        )?;
        kv(
            out,
            "cleartext",
            if n.cleartext {
                "yes: data and credentials travel unencrypted unless wrapped in TLS"
            } else {
                "no"
            },
        )?;
        let adv = match n.exposure {
            "never" => style
                .paint(RED, "should never face an untrusted network")
                .into_owned(),
            "restricted" => style
                .paint(YELLOW, "keep to trusted networks or a VPN")
                .into_owned(),
            _ => "routinely exposed to the internet".to_string(),
        };
        kv(out, "exposure", &adv)?;
        kv(out, "risk", n.risk)?;
    }
    let bind = if p.needs_privilege {
        format!(
            "needs root or CAP_NET_BIND_SERVICE here (unprivileged ports start at {})",
            sys.unprivileged_port_start
        )
    } else if p.port == 0 {
        "port 0 asks the kernel for any free port".to_string()
    } else {
        format!(
            "any user may bind it here (unprivileged ports start at {})",
            sys.unprivileged_port_start
        )
    };
    kv(out, "binding", &bind)?;
    let eph = if p.ephemeral {
        format!("yes: inside this machine's ephemeral range {}, so outgoing connections may take it at any moment", sys.ephemeral)
    } else {
        format!("no (ephemeral range here: {})", sys.ephemeral)
    };
    kv(out, "ephemeral", &eph)?;
    if p.reserved_locally {
        kv(
            out,
            "reserved",
            "listed in net.ipv4.ip_local_reserved_ports: never handed out as an ephemeral port",
        )?;
    }
    if p.listeners.is_empty() {
        kv(
            out,
            "listening now",
            &style.paint(DIM, "nothing on this machine"),
        )?;
    } else {
        for (i, l) in p.listeners.iter().enumerate() {
            let who = match (l.process.as_deref(), l.pid) {
                (Some(n), Some(pid)) => format!("{} (pid {pid})", for_terminal(n)),
                _ => format!(
                    "uid {}{}",
                    l.uid,
                    l.unit
                        .map(|u| format!(", unit {}", for_terminal(u)))
                        .unwrap_or_default()
                ),
            };
            let addr = if l.family == "ipv6" {
                format!("[{}]", l.local_addr)
            } else {
                l.local_addr.clone()
            };
            let label = if i == 0 { "listening now" } else { "" };
            let expo = l.exposure.unwrap_or("");
            kv(
                out,
                label,
                &format!("{who} on {addr}:{}/{} ({expo})", l.local_port, l.proto),
            )?;
        }
    }
    if class != RangeClass::Dynamic && p.assignments.iter().any(|a| !a.service.is_empty()) {
        kv(
            out,
            "other uses",
            portolan_catalog::REGISTRATION_IS_NOT_RESERVATION,
        )?;
    }
    Ok(())
}

fn write_query(
    out: &mut dyn Write,
    style: Style,
    r: &QueryOut,
    sys: &PortSysctls,
) -> std::io::Result<()> {
    match r.kind {
        "range" => {
            writeln!(
                out,
                "{}",
                style.paint(BOLD, &format!("ports {}", for_terminal(&r.query)))
            )?;
            if let Some(ro) = &r.range {
                writeln!(
                    out,
                    "  {} ports; {} need root or CAP_NET_BIND_SERVICE here (unprivileged ports start at {}); {} in the ephemeral range {}",
                    ro.ports, ro.privileged_ports, sys.unprivileged_port_start, ro.ephemeral_ports, sys.ephemeral
                )?;
            }
            if r.assignments.is_empty() {
                writeln!(out, "  no IANA assignments in this range")?;
            } else {
                write_assignments(out, style, &r.assignments, "  ")?;
            }
            if r.ports.is_empty() {
                writeln!(
                    out,
                    "  {}",
                    style.paint(DIM, "nothing listens in this range here")
                )?;
            }
            for p in &r.ports {
                writeln!(out)?;
                write_port(out, style, p, sys)?;
            }
        }
        "name" => {
            if r.ports.is_empty() && r.assignments.is_empty() {
                writeln!(
                    out,
                    "no service named `{}` in the IANA registry or portolan's notes",
                    for_terminal(&r.query)
                )?;
                let similar = portolan_catalog::search(&r.query, 8);
                if !similar.is_empty() {
                    writeln!(out, "similar:")?;
                    let rows: Vec<AssignmentOut> =
                        similar.iter().map(|a| AssignmentOut::from(*a)).collect();
                    write_assignments(out, style, &rows, "  ")?;
                }
                return Ok(());
            }
            writeln!(
                out,
                "{}",
                style.paint(BOLD, &format!("service {}", for_terminal(&r.query)))
            )?;
            if !r.assignments.is_empty() {
                write_assignments(out, style, &r.assignments, "  ")?;
            }
            for p in &r.ports {
                writeln!(out)?;
                write_port(out, style, p, sys)?;
            }
        }
        _ => {
            for p in &r.ports {
                write_port(out, style, p, sys)?;
            }
        }
    }
    Ok(())
}
