//! Measures the wire: throughput (packets/s) and its CPU cost, a full 65535-port connect
//! sweep, RTT accuracy with and without jitter, and loss accuracy.
//!
//!     sudo cargo run --release -p portolan-testbed --example wire_bench
#![expect(clippy::print_stdout, reason = "a benchmark prints its results")]
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "statistics on counters"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use portolan_testbed::{connect, HostSpec, JitterDistribution, Testbed};

const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// CPU seconds used so far by this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let after = &stat[stat.rfind(')').unwrap_or(0) + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are 12 and 13 after the name.
        ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    ticks as f64 / 100.0
}

/// Sends UDP datagrams from the scanner to the host for `secs`, at `rate` per second
/// (0: as fast as possible); returns (sent, delivered by the wire, wire CPU share).
fn flood(tb: &Testbed, rate: u64, secs: f64) -> (u64, u64, f64) {
    // A receiver that never reads: no ICMP port-unreachable comes back.
    let _sink = tb
        .run_in_target(|| UdpSocket::bind((HOST, 9)).unwrap())
        .unwrap();
    let tx = tb
        .run_in_scanner(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap())
        .unwrap();
    tx.connect((HOST, 9)).unwrap();
    let before = tb.wire_stats().to_targets.delivered;
    let cpu0 = thread_cpu("pt-wire");
    let t0 = Instant::now();
    let payload = [0u8; 64];
    let mut sent = 0u64;
    let end = Duration::from_secs_f64(secs);
    loop {
        let el = t0.elapsed();
        if el >= end {
            break;
        }
        if rate > 0 {
            let due = (el.as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
        }
        if tx.send(&payload).is_ok() {
            sent += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let wall = t0.elapsed().as_secs_f64();
    let delivered = tb.wire_stats().to_targets.delivered - before;
    (sent, delivered, (thread_cpu("pt-wire") - cpu0) / wall)
}

/// Connect sweep over ports 1..=65535 with `window` connects in flight; returns
/// (elapsed, open, closed, unanswered).
fn sweep(window: usize, timeout: Duration) -> (Duration, usize, usize, usize) {
    let t0 = Instant::now();
    let mut next: u32 = 1;
    let mut inflight: Vec<(OwnedFd, Instant)> = Vec::new();
    let (mut open, mut closed, mut silent) = (0, 0, 0);
    while next <= 65535 || !inflight.is_empty() {
        while inflight.len() < window && next <= 65535 {
            let port = u16::try_from(next).unwrap();
            next += 1;
            if let Some(fd) = connect::start(SocketAddr::new(IpAddr::V4(HOST), port)) {
                inflight.push((fd, Instant::now()));
            }
        }
        let ready = connect::wait_done(inflight.iter().map(|(f, _)| f), Duration::from_millis(5))
            .unwrap_or_else(|_| vec![false; inflight.len()]);
        let now = Instant::now();
        let mut i = 0;
        inflight.retain(|(fd, started)| {
            let r = ready[i];
            i += 1;
            if r {
                if connect::succeeded(fd) {
                    open += 1;
                } else {
                    closed += 1;
                }
                false
            } else if now - *started > timeout {
                silent += 1;
                false
            } else {
                true
            }
        });
    }
    (t0.elapsed(), open, closed, silent)
}

fn connect_times(tb: &Testbed, n: usize) -> Vec<f64> {
    let mut v = tb
        .run_in_scanner(|| {
            (0..n)
                .filter_map(|_| {
                    let t = Instant::now();
                    TcpStream::connect_timeout(
                        &SocketAddr::new(IpAddr::V4(HOST), 22),
                        Duration::from_secs(2),
                    )
                    .ok()
                    .map(|_| t.elapsed().as_secs_f64() * 1e3)
                })
                .collect::<Vec<_>>()
        })
        .unwrap();
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    let host = || {
        HostSpec::new(HOST)
            .with_open([22, 80, 443])
            .with_open(8000..8100)
            .with_drop(9000, 9099)
    };

    println!("== throughput (UDP 64-byte payload, scanner -> host, 2 s)");
    for rtt in [0u64, 20] {
        let tb = Testbed::builder()
            .rtt(Duration::from_millis(rtt))
            .host(host())
            .build()
            .unwrap();
        for rate in [50_000u64, 100_000, 0] {
            let (sent, got, cpu) = flood(&tb, rate, 2.0);
            println!(
                "rtt {rtt:>3} ms  offered {:>7}  sent {:>7}/s  delivered {:>7}/s  wire CPU {:>5.1}% of one core",
                if rate == 0 { "max".to_owned() } else { rate.to_string() },
                sent / 2,
                got / 2,
                cpu * 100.0
            );
        }
    }

    println!("== full connect sweep of 65535 ports (open 103, drop 100 with 1.5 s timeout)");
    for (rtt, window) in [(0u64, 1000usize), (20, 1000), (20, 4000)] {
        let tb = Testbed::builder()
            .rtt(Duration::from_millis(rtt))
            .host(host())
            .build()
            .unwrap();
        let (el, open, closed, silent) = tb
            .run_in_scanner(|| sweep(window, Duration::from_millis(1500)))
            .unwrap();
        let s = tb.wire_stats();
        let pkts = s.to_targets.delivered + s.to_scanner.delivered;
        println!(
            "rtt {rtt:>3} ms window {window:>5}: {:.2} s, open {open} closed {closed} silent {silent}, {pkts} packets ({:.0} pps through the wire), overflowed {}",
            el.as_secs_f64(),
            pkts as f64 / el.as_secs_f64(),
            s.to_targets.overflowed + s.to_scanner.overflowed
        );
    }

    println!("== RTT accuracy (connect time to an open port, 40 samples)");
    for (rtt, jitter, dist) in [
        (20u64, 0u64, JitterDistribution::Uniform),
        (100, 0, JitterDistribution::Uniform),
        (100, 10, JitterDistribution::Uniform),
        (100, 10, JitterDistribution::Normal),
    ] {
        let tb = Testbed::builder()
            .rtt(Duration::from_millis(rtt))
            .jitter(Duration::from_millis(jitter))
            .jitter_distribution(dist)
            .host(host())
            .build()
            .unwrap();
        let v = connect_times(&tb, 40);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        println!(
            "rtt {rtt:>3} jitter {jitter:>2} {dist:?}: min {:.2} median {:.2} max {:.2} mean {mean:.2} sd {sd:.2} ms",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        );
    }

    println!("== loss accuracy (UDP flood at 20k pps, 2 s)");
    for loss in [0.01, 0.05, 0.2, 0.5] {
        let tb = Testbed::builder()
            .loss(loss)
            .seed(1)
            .host(host())
            .build()
            .unwrap();
        let _ = flood(&tb, 20_000, 2.0);
        let s = tb.wire_stats().to_targets;
        println!(
            "loss {loss:.2}: measured {:.4} over {} packets",
            s.lost as f64 / s.received as f64,
            s.received
        );
    }

    println!("== connect success with loss 0.2 each way (500 concurrent connects, 0.9 s timeout)");
    for seed in 1..=5u64 {
        let tb = Testbed::builder()
            .loss(0.2)
            .seed(seed)
            .host(host())
            .build()
            .unwrap();
        let ok = tb
            .run_in_scanner(|| {
                connect::concurrent(
                    SocketAddr::new(IpAddr::V4(HOST), 80),
                    500,
                    Duration::from_millis(900),
                )
            })
            .unwrap();
        println!("seed {seed}: {:.3} (expected 0.64)", ok as f64 / 500.0);
    }

    println!("== setup and teardown time");
    for (n, ports) in [(1u32, 3u16), (254, 20)] {
        let t = Instant::now();
        let tb = Testbed::builder()
            .hosts((1..=n).map(|i| {
                HostSpec::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + i))
                    .with_v6(std::net::Ipv6Addr::from(
                        0x2001_0002_0000_0000_0000_0000_0001_0000_u128 + u128::from(i),
                    ))
                    .with_open(1..=ports)
                    .with_drop(1000, 2000)
                    .with_icmp(3000, 3000)
            }))
            .build()
            .unwrap();
        let up = t.elapsed();
        let listeners = tb.listener_count();
        let t = Instant::now();
        tb.shutdown().unwrap();
        println!(
            "{n} hosts, {listeners} listeners: build {:.0} ms, teardown {:.0} ms",
            up.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
