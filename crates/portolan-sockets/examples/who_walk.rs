//! What `portolan who PORT` costs, phase by phase: the kernel dump (with the port filter)
//! and the targeted owner walk, with the walk's counters. Used by `bench/inventory.sh`.
//!
//!     cargo run --release -p portolan-sockets --example who_walk -- PORT [RUNS]

use std::io::Write;
use std::time::Instant;

use portolan_core::{Port, PortRange, PortSpec};
use portolan_sockets::{Inventory, OwnerScan, Query};

fn fail(msg: &str, code: i32) -> ! {
    let _ = writeln!(std::io::stderr(), "who_walk: {msg}");
    std::process::exit(code);
}

fn main() {
    let mut out = std::io::stdout().lock();
    let mut args = std::env::args().skip(1);
    let Some(port) = args.next().and_then(|p| p.parse::<u16>().ok()) else {
        fail("usage: who_walk PORT [RUNS]", 2);
    };
    let runs: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(3);
    let query = Query {
        ports: Some(PortSpec::from_ranges(vec![PortRange::single(Port::new(
            port,
        ))])),
        owners: OwnerScan::Targeted,
        ..Query::default()
    };
    for _ in 0..runs {
        let t0 = Instant::now();
        let dumped = match Inventory::sockets_only(&query) {
            Ok(s) => s.len(),
            Err(e) => fail(&e.to_string(), 1),
        };
        let t1 = Instant::now();
        let inv = match Inventory::collect(&query) {
            Ok(i) => i,
            Err(e) => fail(&e.to_string(), 1),
        };
        let t2 = Instant::now();
        let owners: std::collections::BTreeSet<u32> = inv
            .sockets
            .iter()
            .flat_map(|s| s.pids.iter().copied())
            .collect();
        let _ = writeln!(
            out,
            "port {port}: dump {:.1} ms ({dumped} sockets); collect {:.1} ms: {} sockets sought, {} fd tables, {} readlinks, owners {owners:?}",
            (t1 - t0).as_secs_f64() * 1e3,
            (t2 - t1).as_secs_f64() * 1e3,
            inv.walk.sockets_sought,
            inv.walk.fd_tables,
            inv.walk.fd_links,
        );
    }
}
