//! What a live view's once-a-second poll costs: every TCP socket in every state and every
//! UDP socket, both families, no owner walk, with and without the kernel's TCP counters
//! (`Inventory::sockets_with_counters` against `Inventory::sockets_only`). Prints, per
//! mode, the median, min and max wall time of RUNS polls, the CPU time they took (user and
//! system: the kernel's side of the dump is system time), and what was read.
//!
//!     cargo run --release -p portolan-sockets --example counters_cost -- [RUNS [MODE]]
//!
//! MODE is `both` (the default), or `plain` or `counters` alone (for a peak RSS of one).
//!
//! Beside `bench/holder.py --sockets 100000` it measures the cost at 100,000 sockets.

use std::io::Write;
use std::time::{Duration, Instant};

use portolan_sockets::{Inventory, OwnerScan, Query, SocketEntry, Source};

fn fail(msg: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "counters_cost: {msg}");
    std::process::exit(1);
}

/// This process's user and system CPU time so far (`/proc/self/stat`, in clock ticks of
/// 10 ms on every common configuration).
fn cpu() -> (Duration, Duration) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_ascii_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let tick = |i: usize| Duration::from_millis(f.get(i).copied().unwrap_or(0) * 10);
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    (tick(11), tick(12))
}

type Poll = fn(&Query) -> Result<Vec<SocketEntry>, portolan_sockets::SocketsError>;

fn main() {
    let mut out = std::io::stdout().lock();
    let runs: u32 = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    let query = Query {
        owners: OwnerScan::None,
        source: Source::Netlink,
        ..Query::default()
    };
    let all: [(&str, Poll); 2] = [
        ("sockets_only", Inventory::sockets_only),
        ("sockets_with_counters", Inventory::sockets_with_counters),
    ];
    let modes = match std::env::args().nth(2).as_deref() {
        None | Some("both") => &all[..],
        Some("plain") => &all[..1],
        Some("counters") => &all[1..],
        Some(other) => fail(&format!("unknown mode {other:?}: both, plain or counters")),
    };
    // One warm-up each, then the modes alternate run by run, so a change in the machine's
    // load falls on both alike.
    for (_, poll) in modes {
        poll(&query).unwrap_or_else(|e| fail(&e.to_string()));
    }
    let mut times = [Vec::new(), Vec::new()];
    let mut cpus = [(Duration::ZERO, Duration::ZERO); 2];
    let mut seen = [(0, 0); 2];
    for _ in 0..runs {
        for (i, (_, poll)) in modes.iter().enumerate() {
            let (u0, s0) = cpu();
            let t0 = Instant::now();
            let socks = poll(&query).unwrap_or_else(|e| fail(&e.to_string()));
            times[i].push(t0.elapsed());
            let (u1, s1) = cpu();
            cpus[i].0 += u1.saturating_sub(u0);
            cpus[i].1 += s1.saturating_sub(s0);
            seen[i] = (
                socks.len(),
                socks.iter().filter(|s| s.tcp.is_some()).count(),
            );
        }
    }
    for (i, (name, _)) in modes.iter().enumerate() {
        let t = &mut times[i];
        t.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let per = |d: Duration| ms(d) / f64::from(runs);
        let _ = writeln!(
            out,
            "{name:>22}: median {:.1} ms, min {:.1}, max {:.1} ({runs} runs); cpu per poll: user {:.1} ms, system {:.1} ms; {} sockets, {} with counters",
            ms(t[t.len() / 2]),
            ms(t[0]),
            ms(t[t.len() - 1]),
            per(cpus[i].0),
            per(cpus[i].1),
            seen[i].0,
            seen[i].1,
        );
    }
}
