//! `portolan` (the overview) and `portolan ls`.

use std::io::Write;

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::{PortSpec, StateFilter};
use portolan_sockets::{Inventory, OwnerScan, Query, SocketEntry, UserNames};

use crate::cli::{Detection, TableJsonCsv};
use crate::render::sockets as view;
use crate::render::{self, Output};
use crate::Outcome;

#[derive(Debug, Args, Default)]
pub struct LsArgs {
    /// TCP sockets
    #[arg(short = 't', long)]
    pub tcp: bool,
    /// UDP sockets
    #[arg(short = 'u', long)]
    pub udp: bool,
    /// IPv4 only
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// IPv6 only
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,
    /// Listening sockets only (the default)
    #[arg(short = 'l', long, conflicts_with = "all")]
    pub listening: bool,
    /// All sockets: listening and connected, every state
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only sockets in this state (established, listen, time-wait, ..., or "connected")
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// Only sockets whose local or remote port is in this list (e.g. 22,80,8000-8100)
    #[arg(long, short = 'p', value_name = "PORTS")]
    pub port: Option<String>,
    /// Only sockets held by this pid (repeatable)
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only sockets held by a process with this name (comm or executable name)
    #[arg(long, value_name = "NAME")]
    pub process: Option<String>,
    /// Only sockets the kernel records for this user (name or uid; the uid `ss -e` shows)
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Only listeners reachable from other machines (not loopback-only)
    #[arg(long)]
    pub exposed: bool,
    /// Do not look for owning processes (faster; user and unit still shown)
    #[arg(long)]
    pub no_processes: bool,
    /// Numeric output: no service names, no user names
    #[arg(short = 'n', long)]
    pub numeric: bool,
    #[command(flatten)]
    pub detect: Detection,
    #[command(flatten)]
    pub formats: TableJsonCsv,
}

pub fn run(ctx: &Output, a: &LsArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
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
    // --user is resolved through NSS before anything is collected; every filter goes
    // into the query, which applies it before the owner walk.
    let uid = match a.user.as_deref() {
        None => None,
        Some(u) => Some(UserNames::uid_of(u).with_context(|| {
            format!(
                "--user: no user named `{}` (asked NSS: passwd files, LDAP, SSSD, ...)",
                portolan_core::escape::for_terminal(u)
            )
        })?),
    };
    let query = Query {
        tcp,
        udp,
        ipv4,
        ipv6,
        listening_only,
        state,
        exposed: a.exposed,
        uid,
        ports,
        pids: (!a.pid.is_empty()).then(|| a.pid.clone()),
        process: a.process.clone(),
        owners: if a.no_processes {
            OwnerScan::None
        } else {
            OwnerScan::All
        },
        source: ctx.source,
    };
    let inv = Inventory::collect(&query)?;
    let socks: Vec<&SocketEntry> = inv.sockets.iter().collect();
    let probed = super::probe_local(ctx, &a.detect, &socks)?;
    view::warn_all(&inv.warnings, ctx.err_color);
    let report = view::SocketsReport {
        inv: &inv,
        sockets: socks,
        probed: &probed,
        layout: view::Layout::Ls { numeric: a.numeric },
        forwards: super::forwards_of(&inv),
    };
    render::emit(out, ctx, &report)
}
