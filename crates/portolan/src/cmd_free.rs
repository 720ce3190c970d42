//! `portolan free`: find free ports, or say whether one port is free and who holds it.

use std::io::Write;
use std::net::IpAddr;

use anyhow::{bail, Context};
use portolan_core::{Port, PortRange, PortSpec, Protocol};
use portolan_sockets::free::{self, PortStatus};
use portolan_sockets::{Inventory, OwnerScan, PortSysctls, Query};
use serde_json::json;

use crate::cli::FreeArgs;
use crate::output::{esc, note, Format};
use crate::{Ctx, Outcome};

const CAVEAT: &str =
    "checked by binding just now; another program can take a free port at any moment";

fn addr_list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

pub fn free(ctx: &Ctx, a: &FreeArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let proto = if a.udp { Protocol::Udp } else { Protocol::Tcp };
    let addrs = if a.addr.is_empty() {
        free::default_addrs()
    } else {
        a.addr.clone()
    };
    if let Some(p) = &a.port {
        if a.range.is_some() || a.count != 1 {
            bail!("give either a port to check, or --range/--count to search, not both");
        }
        let port: Port = p.parse()?;
        return check_one(ctx, port, proto, &addrs, out);
    }
    if a.count == 0 || a.count > 10_000 {
        bail!("--count must be between 1 and 10000");
    }
    let sys = PortSysctls::read();
    let (range, default_range) = if let Some(r) = &a.range {
        (r.parse::<PortRange>().context("--range")?, false)
    } else {
        {
            // Registered ports below the ephemeral range: no privilege needed, and no
            // outgoing connection will grab them.
            let lo = sys.unprivileged_port_start.max(1024);
            let hi = sys.ephemeral.start().get().saturating_sub(1).max(lo);
            (
                PortRange::new(Port::new(lo), Port::new(hi))
                    .context("no usable default range on this machine")?,
                true,
            )
        }
    };
    // In the default range, skip ports that well-known software uses (3000, 5432, 8080...),
    // ports the kernel may hand out, and ports reserved by the admin.
    let skip = |p: Port| {
        default_range
            && (portolan_catalog::note(p, proto).is_some()
                || sys.is_ephemeral(p)
                || sys.is_reserved(p))
    };
    let found = free::find(range, proto, &addrs, a.count, &skip);
    match ctx.format {
        Format::Table => {
            for p in &found {
                writeln!(out, "{p}")?;
            }
            note(
                ctx.err_color,
                &format!("free on {} ({proto}): {CAVEAT}", addr_list(&addrs)),
            );
        }
        Format::Json => {
            serde_json::to_writer(
                &mut *out,
                &json!({"proto": proto.as_str(), "addrs": addrs, "ports": found.iter().map(|p| p.get()).collect::<Vec<_>>(), "note": CAVEAT}),
            )?;
            writeln!(out)?;
        }
        Format::Jsonl => {
            for p in &found {
                serde_json::to_writer(
                    &mut *out,
                    &json!({"port": p.get(), "proto": proto.as_str(), "free": true}),
                )?;
                writeln!(out)?;
            }
        }
        Format::Csv => {
            writeln!(out, "port,proto")?;
            for p in &found {
                writeln!(out, "{p},{proto}")?;
            }
        }
    }
    if found.len() < a.count {
        note(
            ctx.err_color,
            &format!(
                "found only {} free port(s) of {} asked in {range}",
                found.len(),
                a.count
            ),
        );
        return Ok(Outcome::of(!found.is_empty()));
    }
    Ok(Outcome::Found)
}

fn check_one(
    ctx: &Ctx,
    port: Port,
    proto: Protocol,
    addrs: &[IpAddr],
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let status = free::check(port, proto, addrs);
    // Who holds it, when it is taken: the same answer `who` gives.
    let holders: Vec<String> = if status.is_free() {
        Vec::new()
    } else {
        let inv = Inventory::collect(&Query {
            tcp: proto == Protocol::Tcp,
            udp: proto == Protocol::Udp,
            listening_only: true,
            ports: Some(PortSpec::from_ranges(vec![PortRange::single(port)])),
            owners: OwnerScan::Targeted,
            source: ctx.source,
            ..Query::default()
        })?;
        inv.sockets
            .iter()
            .filter(|s| s.local.port() == port.get())
            .map(|s| match inv.owner(s) {
                Some(p) => {
                    let pids: Vec<String> = s.pids.iter().map(ToString::to_string).collect();
                    let label = if pids.len() > 1 { "pids" } else { "pid" };
                    format!(
                        "{} ({label} {}) on {}",
                        esc(&p.name),
                        pids.join(", "),
                        s.local
                    )
                }
                None => format!(
                    "a process of uid {} on {} ({})",
                    s.uid,
                    s.local,
                    crate::output::hidden_hint()
                ),
            })
            .collect()
    };
    let (free, why) = match &status {
        PortStatus::Free => (true, format!("{port}/{proto} is free on {} ({CAVEAT})", addr_list(addrs))),
        PortStatus::InUse { addr } => (
            false,
            if holders.is_empty() {
                format!("{port}/{proto} is in use on {addr}")
            } else {
                format!("{port}/{proto} is in use: {}", holders.join(", "))
            },
        ),
        PortStatus::NeedsPrivilege { addr } => (
            false,
            format!("{port}/{proto} is not in use, but binding {addr} needs root or CAP_NET_BIND_SERVICE"),
        ),
        PortStatus::Error { addr, error } => bail!("cannot check {port}/{proto}: binding {addr} failed: {error}"),
    };
    match ctx.format {
        Format::Table => writeln!(out, "{why}")?,
        Format::Json | Format::Jsonl => {
            serde_json::to_writer(
                &mut *out,
                &json!({"port": port.get(), "proto": proto.as_str(), "free": free, "holders": holders, "message": why}),
            )?;
            writeln!(out)?;
        }
        Format::Csv => writeln!(out, "port,proto,free\n{port},{proto},{free}")?,
    }
    Ok(Outcome::of(free))
}
