//! `portolan` with no command: the listening sockets grouped by owner, most exposed first.

use std::io::Write;

use crate::render::sockets as view;
use crate::render::{self, Output};
use crate::Outcome;

pub fn run(ctx: &Output, numeric: bool, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let inv = super::listening_inventory(ctx)?;
    let report = view::SocketsReport {
        inv: &inv,
        sockets: inv.sockets.iter().collect(),
        probed: &portolan_probe::local::Probed::new(),
        layout: view::Layout::Overview { numeric },
        forwards: super::forwards_of(&inv),
    };
    render::emit(out, ctx, &report)
}
