//! `portolan` with no command: the listening sockets grouped by owner, most exposed first.

use std::io::Write;

use portolan_sockets::{Inventory, Query};

use crate::render::sockets as view;
use crate::render::{self, Output};
use crate::Outcome;

pub fn run(ctx: &Output, numeric: bool, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let query = Query {
        listening_only: true,
        source: ctx.source,
        ..Query::default()
    };
    let inv = Inventory::collect(&query)?;
    view::warn_all(&inv.warnings, ctx.err_color);
    let report = view::SocketsReport {
        inv: &inv,
        sockets: inv.sockets.iter().collect(),
        probed: &crate::probed::Probed::new(),
        layout: view::Layout::Overview { numeric },
    };
    render::emit(out, ctx, &report)
}
