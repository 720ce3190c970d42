//! One room per command, each the same shape: its clap arguments, validated, go to one
//! engine session; the typed report that comes back goes to `render::emit`. No command
//! imports another: what two commands need lives in an engine, in core, or in `render/`.

pub mod audit;
pub mod diff;
pub mod firewall;
pub mod forward;
pub mod free;
pub mod generate;
pub mod guard;
pub mod history;
pub mod info;
pub mod kill;
pub mod knock;
pub mod ls;
pub mod overview;
pub mod policy;
pub mod probe;
pub mod scan;
pub mod sentry;
pub mod serve;
pub mod top;
pub mod watch;
pub mod who;
pub mod worker;

// Steps that several commands share. They are not commands (no command imports another);
// each is a call into an engine with what the binary adds around it (notes, refusals).

use portolan_probe::local::{self, Probed};
use portolan_probe::Signatures;
use portolan_sockets::{Inventory, Query, SocketEntry};

use crate::cli::{Detection, SignatureArgs};
use crate::render::{self, Output};

/// `--probe` of `ls` and `who`: each listener among `socks` asked what it is (the probe
/// engine chooses which, and how to reach it); nothing when not asked. CSV has no place for
/// the answers.
pub(crate) fn probe_local(
    out: &Output,
    d: &Detection,
    socks: &[&SocketEntry],
) -> anyhow::Result<Probed> {
    if !d.probe {
        return Ok(Probed::new());
    }
    if out.format == render::Format::Csv {
        anyhow::bail!("--probe shows its answers in the table, --json and --jsonl, not in CSV");
    }
    let sigs = load_signatures(out, &d.sigs)?;
    Ok(probe_sockets(&sigs, socks.iter().copied()))
}

/// The listeners among `socks` asked what they are (`ls`/`who --probe`, `audit --probe`):
/// the probe engine chooses which, and how to reach them.
pub(crate) fn probe_sockets<'a>(
    sigs: &Signatures,
    socks: impl IntoIterator<Item = &'a SocketEntry>,
) -> Probed {
    let listeners = socks
        .into_iter()
        .filter_map(|s| local::listener_key(s.proto, s.state, s.local));
    local::probe_listeners(listeners, sigs)
}

/// The built-in signatures, plus `--signatures DIR` and `--nmap-probes PATH`, through the
/// engine's loader; what it has to say (an empty directory, what an nmap file gave) is a
/// note on stderr.
pub(crate) fn load_signatures(out: &Output, args: &SignatureArgs) -> anyhow::Result<Signatures> {
    let loaded =
        portolan_probe::load_signatures(args.signatures.as_deref(), args.nmap_probes.as_deref())?;
    for n in &loaded.notes {
        out.note(n);
    }
    Ok(loaded.signatures)
}

/// This machine's listening sockets with their owners (`audit`, `policy init`); the
/// inventory's warnings (owners it could not read, the /proc fallback) go to stderr, as
/// `ls` shows them.
pub(crate) fn listening_inventory(out: &Output) -> anyhow::Result<Inventory> {
    let inv = Inventory::collect(&Query {
        listening_only: true,
        source: out.source,
        ..Query::default()
    })?;
    render::sockets::warn_all(&inv.warnings, out.err_color);
    Ok(inv)
}

/// Who holds `port`/`proto` on any address, one line each ("nginx (pid 812) on
/// 0.0.0.0:8080"): what `free` and `forward` say when a port is taken, the same answer
/// `who` gives.
pub(crate) fn port_holders(
    ctx: &Output,
    port: portolan_core::Port,
    proto: portolan_core::Protocol,
) -> anyhow::Result<Vec<String>> {
    use portolan_core::escape::bytes_for_terminal;
    use portolan_core::{PortRange, PortSpec, Protocol};
    use portolan_sockets::OwnerScan;
    let inv = Inventory::collect(&Query {
        tcp: proto == Protocol::Tcp,
        udp: proto == Protocol::Udp,
        listening_only: true,
        ports: Some(PortSpec::from_ranges(vec![PortRange::single(port)])),
        owners: OwnerScan::Targeted,
        source: ctx.source,
        ..Query::default()
    })?;
    Ok(inv
        .sockets
        .iter()
        .filter(|s| s.local.port() == port.get())
        .map(|s| match inv.owner(s) {
            Some(p) => {
                let pids: Vec<String> = s.pids.iter().map(ToString::to_string).collect();
                let label = if pids.len() > 1 { "pids" } else { "pid" };
                format!(
                    "{} ({label} {}) on {}",
                    bytes_for_terminal(&p.name),
                    pids.join(", "),
                    s.local
                )
            }
            None => format!(
                "a process of uid {} on {} ({})",
                s.uid,
                s.local,
                crate::render::hidden_hint()
            ),
        })
        .collect())
}

/// The listeners of running `portolan forward` processes in `inv`, with their targets
/// (from each forwarder's registration: `portolan_relay::registry`), so `who`, `ls --json`
/// and the overview name a forward as such.
pub(crate) fn forwards_of(inv: &Inventory) -> crate::render::sockets::Forwards {
    let mut out = crate::render::sockets::Forwards::new();
    let mut records = std::collections::BTreeMap::new();
    for s in &inv.sockets {
        if !s.state.is_listening() {
            continue;
        }
        let Some(p) = inv.owner(s) else { continue };
        if p.name != b"portolan" {
            continue;
        }
        let record = records
            .entry(p.pid)
            .or_insert_with(|| portolan_relay::registry::lookup(p.pid, p.uid));
        let Some(record) = record else { continue };
        let proto = s.proto.as_str();
        if let Some(e) = record.find(proto, s.local) {
            out.insert((s.proto, s.local), e.target.clone());
        }
    }
    out
}

/// What forwards `port` without a socket of its own on it: a redirect range of a running
/// `portolan forward`, or a kernel forward (read when root). For `who` when nothing
/// listens on the port itself.
pub(crate) fn forwarded_port(port: u16, proto: Option<portolan_core::Protocol>) -> Vec<String> {
    use portolan_core::escape::for_terminal;
    let wanted = |p: &str| proto.is_none_or(|x| x.as_str() == p);
    let mut out = Vec::new();
    for r in portolan_relay::registry::all() {
        for e in &r.forwards {
            if let Some((lo, hi)) = e.redirected {
                if (lo..=hi).contains(&port) && wanted(&e.proto) {
                    out.push(format!(
                        "{port}/{} is redirected by nftables to portolan forward (pid {}) on {} -> {}",
                        e.proto,
                        r.pid,
                        e.addr,
                        for_terminal(&e.target)
                    ));
                }
            }
        }
    }
    if rustix::process::geteuid().is_root() {
        if let Ok(list) = portolan_relay::kernel::list() {
            for k in list {
                if k.listen.ports.contains(portolan_core::Port::new(port))
                    && wanted(k.proto.as_str())
                {
                    out.push(format!(
                        "{port}/{} is forwarded by the kernel (nftables table inet portolan_forward): {} -> {}",
                        k.proto, k.listen, k.target
                    ));
                }
            }
        }
    }
    out
}

/// The ports sshd listens on here (`forward`'s SSH guard protects them besides the current
/// session's; `sentry` never blocks their established peers).
pub(crate) fn sshd_ports(ctx: &Output) -> Vec<u16> {
    let Ok(inv) = listening_inventory(ctx) else {
        return Vec::new();
    };
    let mut ports: Vec<u16> = inv
        .sockets
        .iter()
        .filter(|s| s.proto == portolan_core::Protocol::Tcp)
        .filter(|s| inv.owner(s).is_some_and(|p| p.name == b"sshd"))
        .map(|s| s.local.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}
