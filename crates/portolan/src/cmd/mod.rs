//! One room per command, each the same shape: its clap arguments, validated, go to one
//! engine session; the typed report that comes back goes to `render::emit`. No command
//! imports another: what two commands need lives in an engine, in core, or in `render/`.

pub mod audit;
pub mod diff;
pub mod firewall;
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
pub mod watch;
pub mod who;

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
