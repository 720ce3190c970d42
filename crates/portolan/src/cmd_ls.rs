//! `portolan` (the overview) and `portolan ls`.

use std::io::Write;

use anyhow::{bail, Context};
use portolan_core::{Exposure, PortSpec, StateFilter};
use portolan_sockets::{Inventory, OwnerScan, Query, SocketEntry};

use crate::cli::LsArgs;
use crate::view;
use crate::{Ctx, Outcome};

pub fn overview(ctx: &Ctx, numeric: bool, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let query = Query {
        listening_only: true,
        source: ctx.source,
        ..Query::default()
    };
    let inv = Inventory::collect(&query)?;
    let socks: Vec<&SocketEntry> = inv.sockets.iter().collect();
    emit(
        ctx,
        out,
        &inv,
        &socks,
        &crate::probed::Probed::new(),
        |out| view::write_overview(out, ctx.style, &inv, &socks, numeric),
    )
}

pub fn ls(ctx: &Ctx, a: &LsArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let ports: Option<PortSpec> = a
        .port
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--port")?;
    let state: Option<StateFilter> = a
        .state
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--state")?;
    let (tcp, udp) = if a.tcp || a.udp {
        (a.tcp, a.udp)
    } else {
        (true, true)
    };
    let (ipv4, ipv6) = if a.ipv4 || a.ipv6 {
        (a.ipv4, a.ipv6)
    } else {
        (true, true)
    };
    // Listening sockets by default, as `ss -l` people expect from a port tool; -a or a
    // --state filter widens it.
    let listening_only = !a.all && state.is_none();
    if a.no_processes && (a.process.is_some() || !a.pid.is_empty()) {
        bail!("--no-processes cannot be combined with --process or --pid, which need the owning processes");
    }
    let query = Query {
        tcp,
        udp,
        ipv4,
        ipv6,
        listening_only,
        ports,
        pids: (!a.pid.is_empty()).then(|| a.pid.clone()),
        owners: if a.no_processes {
            OwnerScan::None
        } else {
            OwnerScan::All
        },
        source: ctx.source,
    };
    let inv = Inventory::collect(&query)?;
    // The inventory has read /etc/passwd already: resolve --user against it.
    let want_uid: Option<u32> = match a.user.as_deref() {
        None => None,
        Some(u) => Some(match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => inv.users.uid(u).with_context(|| {
                format!(
                    "--user: no user named `{}` in /etc/passwd",
                    portolan_core::escape::for_terminal(u)
                )
            })?,
        }),
    };
    let socks: Vec<&SocketEntry> = inv
        .sockets
        .iter()
        .filter(|s| state.is_none_or(|f| f.matches(s.state)))
        .filter(|s| {
            !a.exposed
                || matches!(
                    s.exposure(),
                    Some(Exposure::AllInterfaces | Exposure::Specific)
                )
        })
        .filter(|s| want_uid.is_none_or(|u| inv.user_of(s).0 == u))
        .filter(|s| {
            a.process.as_deref().is_none_or(|name| {
                inv.owners(s)
                    .any(|p| crate::cmd_who::process_matches(p, name))
            })
        })
        .collect();
    let probed = crate::probed::when_asked(ctx, a.probe, &a.sigs, &socks)?;
    emit(ctx, out, &inv, &socks, &probed, |out| {
        view::write_ls(out, ctx.style, &inv, &socks, a.numeric, &probed)
    })
}

/// Warnings to stderr, then the sockets as a table (by `table`) or in a machine format.
fn emit(
    ctx: &Ctx,
    out: &mut dyn Write,
    inv: &Inventory,
    socks: &[&SocketEntry],
    probed: &crate::probed::Probed,
    table: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<Outcome> {
    view::warn_all(&inv.warnings, ctx.err_color);
    match ctx.format.machine() {
        Some(m) => view::write_machine(out, m, inv, socks, probed)?,
        None => table(out)?,
    }
    Ok(Outcome::of(!socks.is_empty()))
}
