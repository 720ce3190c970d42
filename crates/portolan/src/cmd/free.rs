//! `portolan free`: find free ports, or say whether one port is free and who holds it.

use std::io::{self, Write};
use std::net::IpAddr;

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::{Port, PortRange, Protocol};
use portolan_sockets::free::{self, PortStatus};
use portolan_sockets::PortSysctls;
use serde::Serialize;
use serde_json::json;

use crate::cli::TableJsonCsv;
use crate::render::csv::CsvOut;
use crate::render::Output;
use crate::render::{self, Report, Style};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct FreeArgs {
    /// Check this port instead of searching for a free one
    #[arg(allow_negative_numbers = true)]
    pub port: Option<String>,
    /// How many free ports to find
    #[arg(short = 'n', long = "count", default_value_t = 1, value_name = "N")]
    pub count: usize,
    /// Search in this range (default: registered ports below this machine's ephemeral range)
    #[arg(long, value_name = "A-B")]
    pub range: Option<String>,
    /// UDP instead of TCP
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// Address to bind when checking (repeatable; default: 0.0.0.0 and ::)
    #[arg(long, value_name = "ADDR")]
    pub addr: Vec<std::net::IpAddr>,
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

const CAVEAT: &str =
    "checked by binding just now; another program can take a free port at any moment";

/// `free` searching: the free ports found.
#[derive(Debug, Serialize)]
struct FreePorts {
    proto: Protocol,
    addrs: Vec<IpAddr>,
    ports: Vec<u16>,
    note: &'static str,
}

impl Report for FreePorts {
    fn table(&self, w: &mut dyn Write, _style: Style) -> io::Result<()> {
        for p in &self.ports {
            writeln!(w, "{p}")?;
        }
        Ok(())
    }

    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        for p in &self.ports {
            serde_json::to_writer(
                &mut *w,
                &json!({"port": p, "proto": self.proto.as_str(), "free": true}),
            )?;
            writeln!(w)?;
        }
        Ok(())
    }

    fn csv(&self, w: &mut CsvOut<'_>) -> io::Result<()> {
        w.row(["port", "proto"])?;
        for p in &self.ports {
            w.row([p.to_string(), self.proto.to_string()])?;
        }
        Ok(())
    }

    fn found(&self) -> bool {
        !self.ports.is_empty()
    }
}

/// `free PORT`: whether one port is free, and who holds it when it is not.
#[derive(Debug, Serialize)]
struct PortCheck {
    port: u16,
    proto: Protocol,
    free: bool,
    holders: Vec<String>,
    message: String,
}

impl Report for PortCheck {
    fn table(&self, w: &mut dyn Write, _style: Style) -> io::Result<()> {
        writeln!(w, "{}", self.message)
    }

    fn csv(&self, w: &mut CsvOut<'_>) -> io::Result<()> {
        w.row(["port", "proto", "free"])?;
        w.row([
            self.port.to_string(),
            self.proto.to_string(),
            self.free.to_string(),
        ])
    }

    fn found(&self) -> bool {
        self.free
    }
}

/// What a bind error usually means here.
fn bind_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(rustix::io::Errno::ADDRNOTAVAIL.raw_os_error()) {
        " (that address is not one of this machine's: see `ip -brief address`)"
    } else {
        ""
    }
}

fn addr_list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

pub fn run(ctx: &Output, a: &FreeArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
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
        if port.get() == 0 {
            bail!("port 0 is not a port one can hold: binding it asks the kernel for any free port (run `portolan free` to get one)");
        }
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
    let found = free::find(range, proto, &addrs, a.count, &skip).map_err(|(addr, e)| {
        anyhow::anyhow!(
            "cannot search for free ports: binding {addr} failed: {e}{}",
            bind_hint(&e)
        )
    })?;
    let report = FreePorts {
        proto,
        addrs: addrs.clone(),
        ports: found.iter().map(|p| p.get()).collect(),
        note: CAVEAT,
    };
    render::emit(out, ctx, &report)?;
    if ctx.is_table() {
        ctx.note(&format!(
            "free on {} ({proto}): {CAVEAT}",
            addr_list(&addrs)
        ));
    }
    if found.len() < a.count {
        ctx.note(&format!(
            "found only {} free port(s) of {} asked in {range}",
            found.len(),
            a.count
        ));
        return Ok(Outcome::of(!found.is_empty()));
    }
    Ok(Outcome::Found)
}

fn check_one(
    ctx: &Output,
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
        super::port_holders(ctx, port, proto)?
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
        PortStatus::Error { addr, error } => bail!(
            "cannot check {port}/{proto}: binding {addr} failed: {error}{}",
            bind_hint(error)
        ),
    };
    let report = PortCheck {
        port: port.get(),
        proto,
        free,
        holders,
        message: why,
    };
    render::emit(out, ctx, &report)
}
