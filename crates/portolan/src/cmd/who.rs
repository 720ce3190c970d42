//! `portolan who`: who holds a port, or which ports a process, unit or pid holds.

use std::io::Write;

use anyhow::bail;
use clap::Args;
use portolan_core::{LocalTarget, PortRange, PortSpec, Protocol};
use portolan_sockets::{Inventory, OwnerScan, Query, SocketEntry};

use crate::cli::{Detection, TableJsonCsv};
use crate::render::sockets as view;
use crate::render::{self, Output};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct WhoArgs {
    /// A port (8080, :8080, 8080/udp), a pid (pid:1234), a process name, or a unit (nginx.service)
    #[arg(allow_negative_numbers = true)]
    pub target: String,
    /// Treat a bare number as a pid, not a port
    #[arg(long)]
    pub pid: bool,
    /// Only TCP
    #[arg(short = 't', long)]
    pub tcp: bool,
    /// Only UDP
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Numeric output: no service names, no user names
    #[arg(short = 'n', long)]
    pub numeric: bool,
    #[command(flatten)]
    pub detect: Detection,
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

fn unit_matches(inv: &Inventory, s: &SocketEntry, name: &str) -> bool {
    inv.cgroup_owner(s).is_some_and(|c| {
        c.unit
            .as_deref()
            .is_some_and(|u| u == name || u.strip_suffix(".service") == Some(name))
            || c.container.as_deref().is_some_and(|k| {
                k == name
                    || k.split_once(':')
                        .is_some_and(|(_, id)| name.len() >= 4 && id.starts_with(name))
            })
    })
}

pub fn run(ctx: &Output, a: &WhoArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let target = LocalTarget::parse(&a.target, a.pid)?;
    let (mut tcp, mut udp) = if a.tcp || a.udp {
        (a.tcp, a.udp)
    } else {
        (true, true)
    };
    if let LocalTarget::Port(_, Some(p)) = &target {
        tcp = *p == Protocol::Tcp;
        udp = *p == Protocol::Udp;
        if !tcp && !udp {
            bail!("only tcp and udp sockets are listed");
        }
    }
    let mut query = Query {
        tcp,
        udp,
        source: ctx.source,
        ..Query::default()
    };
    match &target {
        LocalTarget::Port(p, _) => {
            query.ports = Some(PortSpec::from_ranges(vec![PortRange::single(*p)]));
            query.owners = OwnerScan::Targeted;
        }
        LocalTarget::Pid(pid) => query.pids = Some(vec![*pid]),
        LocalTarget::Name(_) => query.owners = OwnerScan::All,
    }
    let inv = Inventory::collect(&query)?;
    let mut socks: Vec<&SocketEntry> = match &target {
        LocalTarget::Port(..) | LocalTarget::Pid(_) => inv.sockets.iter().collect(),
        LocalTarget::Name(n) => inv
            .sockets
            .iter()
            .filter(|s| inv.owners(s).any(|p| p.matches_name(n)) || unit_matches(&inv, s, n))
            .collect(),
    };
    // Listeners first, then the port's own connections, then everything else.
    socks.sort_by_key(|s| {
        (
            !s.state.is_listening(),
            s.local.port(),
            s.remote.map(|r| r.port()),
        )
    });
    view::warn_all(&inv.warnings, ctx.err_color);
    let probed = super::probe_local(ctx, &a.detect, &socks)?;
    if socks.is_empty() && ctx.is_table() {
        let what = match &target {
            LocalTarget::Port(p, pr) => format!(
                "nothing uses port {p}{}",
                pr.map(|x| format!("/{x}")).unwrap_or_default()
            ),
            LocalTarget::Pid(p) => format!(
                "process {p} holds no TCP or UDP sockets (or does not exist, or is not readable)"
            ),
            LocalTarget::Name(n) => {
                format!("no process or unit named `{n}` holds a TCP or UDP socket")
            }
        };
        // note() escapes what it prints, the name typed included.
        ctx.note(&what);
        if let LocalTarget::Port(p, pr) = &target {
            for n in super::forwarded_port(p.get(), *pr) {
                ctx.note(&n);
            }
        }
        return Ok(Outcome::NothingMatched);
    }
    let report = view::SocketsReport {
        inv: &inv,
        sockets: socks,
        probed: &probed,
        layout: view::Layout::Who {
            target,
            numeric: a.numeric,
        },
        forwards: super::forwards_of(&inv),
    };
    render::emit(out, ctx, &report)
}
