//! `portolan who`: who holds a port, or which ports a process, unit or pid holds.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::bail;
use clap::Args;
use portolan_core::{LocalTarget, PortRange, PortSpec, Protocol};
use portolan_sockets::{CgroupOwner, Inventory, OwnerScan, ProcessInfo, Query, SocketEntry};

use crate::cli::{SignatureArgs, TableJsonCsv};
use crate::render::sockets as view;
use crate::render::Output;
use crate::render::{esc, write_table, Cell, BOLD, DIM};
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
    /// Find out what answers on each TCP listener (service, product, version)
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub sigs: SignatureArgs,
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

/// A process matches a name when its command name or executable file name equals it.
pub fn process_matches(p: &ProcessInfo, name: &str) -> bool {
    p.name == name
        || p.exe.as_deref().and_then(|e| e.rsplit('/').next()) == Some(name)
        || p.cmdline
            .split(' ')
            .next()
            .and_then(|a0| a0.rsplit('/').next())
            .is_some_and(|a0| a0 == name || a0.strip_suffix(':') == Some(name))
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
            .filter(|s| inv.owners(s).any(|p| process_matches(p, n)) || unit_matches(&inv, s, n))
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
    let probed = crate::probed::when_asked(ctx, a.probe, &a.sigs, &socks)?;
    if let Some(m) = ctx.format.machine() {
        view::write_machine(out, m, &inv, &socks, &probed)?;
        return Ok(Outcome::of(!socks.is_empty()));
    }
    if socks.is_empty() {
        let what = match &target {
            LocalTarget::Port(p, pr) => format!(
                "nothing uses port {p}{}",
                pr.map(|x| format!("/{x}")).unwrap_or_default()
            ),
            LocalTarget::Pid(p) => format!(
                "process {p} holds no TCP or UDP sockets (or does not exist, or is not readable)"
            ),
            LocalTarget::Name(n) => format!(
                "no process or unit named `{}` holds a TCP or UDP socket",
                esc(n)
            ),
        };
        crate::render::note(ctx.err_color, &what);
        return Ok(Outcome::NothingMatched);
    }
    let st = ctx.style;
    if let LocalTarget::Port(p, _) = &target {
        let services: BTreeSet<String> = socks
            .iter()
            .map(|s| s.proto)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|pr| {
                format!(
                    "{p}/{pr}{}",
                    portolan_catalog::service_name(*p, pr)
                        .filter(|_| !a.numeric)
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        writeln!(
            out,
            "{}",
            st.paint(
                BOLD,
                &format!(
                    "port {}",
                    services.into_iter().collect::<Vec<_>>().join(", ")
                )
            )
        )?;
    }
    // The holders, with what a person needs to recognise them.
    let mut seen = BTreeSet::new();
    let mut hidden = BTreeSet::new();
    for s in &socks {
        if !(s.state.is_listening() || matches!(target, LocalTarget::Pid(_) | LocalTarget::Name(_)))
        {
            continue;
        }
        for p in inv.owners(s) {
            if !seen.insert(p.pid) {
                continue;
            }
            let user = inv
                .users
                .name(p.uid)
                .filter(|_| !a.numeric)
                .map_or_else(|| p.uid.to_string(), |n| esc(n).into_owned());
            let unit = p
                .cgroup
                .as_ref()
                .and_then(CgroupOwner::label)
                .map(|u| format!("  unit {}", esc(u)))
                .unwrap_or_default();
            writeln!(
                out,
                "{} (pid {})  user {user}{unit}",
                st.paint(BOLD, &esc(&p.name)),
                p.pid
            )?;
            if let Some(exe) = &p.exe {
                let del = if p.exe_deleted {
                    "  (deleted or replaced since start)"
                } else {
                    ""
                };
                writeln!(out, "  exe  {}{del}", esc(exe))?;
            }
            if !p.cmdline.is_empty() {
                let cmd: String = p.cmdline.chars().take(200).collect();
                writeln!(out, "  cmd  {}", esc(&cmd))?;
            }
        }
        // One line per hidden listener owner (uid and cgroup), not just the first.
        if s.pids.is_empty() && s.state.is_listening() && hidden.insert((s.uid, s.cgroup_id)) {
            let (uid, name) = inv.user_of(s);
            let unit = inv
                .cgroup_owner(s)
                .and_then(|c| c.unit.as_deref())
                .map(|u| format!("  unit {}", esc(u)))
                .unwrap_or_default();
            writeln!(
                out,
                "{}  user {}{unit}  {}",
                st.paint(BOLD, "(process not visible)"),
                name.filter(|_| !a.numeric)
                    .map_or_else(|| uid.to_string(), |n| esc(n).into_owned()),
                st.paint(DIM, crate::render::hidden_hint())
            )?;
        }
    }
    // What answers there (--probe).
    for ((proto, local), r) in &probed {
        let udp = if *proto == portolan_probe::Transport::Udp {
            "/udp"
        } else {
            ""
        };
        writeln!(
            out,
            "  answers on {}{udp}: {}",
            view::endpoint(*local),
            crate::probed::Answers::text(r)
        )?;
    }
    writeln!(out)?;
    // A connection is the server side when its local port is one of the listeners shown.
    let listening: BTreeSet<(Protocol, u16)> = socks
        .iter()
        .filter(|s| s.state.is_listening())
        .map(|s| (s.proto, s.local.port()))
        .collect();
    let rows: Vec<Vec<Cell>> = socks
        .iter()
        .map(|s| {
            let role = if s.state.is_listening() {
                "listener"
            } else if listening.contains(&(s.proto, s.local.port()))
                || matches!(target, LocalTarget::Port(p, _) if s.local.port() == p.get())
            {
                "server"
            } else {
                "client"
            };
            vec![
                view::exposure_cell(s),
                Cell::plain(s.proto.as_str()),
                Cell::plain(s.state.ss_name()),
                Cell::plain(role),
                Cell::plain(view::endpoint(s.local)),
                Cell::plain(s.remote.map_or_else(|| "*".into(), view::endpoint)),
                view::process_cell(&inv, s),
            ]
        })
        .collect();
    write_table(
        out,
        st,
        &[
            "EXPOSURE",
            "PROTO",
            "STATE",
            "ROLE",
            "LOCAL",
            "REMOTE",
            "PROCESS/PID",
        ],
        &rows,
        "",
    )?;
    Ok(Outcome::Found)
}
