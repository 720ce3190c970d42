//! `portolan` with no command: the listening sockets grouped by owner, most exposed first.

use std::io::Write;

use portolan_sockets::{Inventory, Query, SocketEntry};

use crate::render::sockets as view;
use crate::render::Output;
use crate::Outcome;

pub fn run(ctx: &Output, numeric: bool, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let query = Query {
        listening_only: true,
        source: ctx.source,
        ..Query::default()
    };
    let inv = Inventory::collect(&query)?;
    let socks: Vec<&SocketEntry> = inv.sockets.iter().collect();
    crate::cmd::ls::emit(
        ctx,
        out,
        &inv,
        &socks,
        &crate::probed::Probed::new(),
        |out| view::write_overview(out, ctx.style, &inv, &socks, numeric),
    )
}
