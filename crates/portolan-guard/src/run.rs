//! The guard's run loop: load the table, read NFLOG, decide, open, report.
//!
//! One thread. It blocks in the NFLOG receive with a short timeout so that the stop flag
//! (set by the binary's signal handler) and the housekeeping tick are looked at promptly.
//! A grant becomes set elements before the next packet is read; the event is reported
//! after (reporting must not delay the port opening).

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::GuardConfig;
use crate::engine::{Decision, Engine, Packet};
use crate::nflog::Nflog;
use crate::replay::ReplayCache;
use crate::{nft, wire, GuardError};

/// How long one receive waits before the loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Housekeeping (expired knocks and replay entries) at most this often.
const TICK: Duration = Duration::from_secs(5);
/// Refusals reported one by one per second at most; the rest are counted (metrics see
/// every one) and summed up in one notice: a flood of junk must not become a flood of log
/// lines.
const REFUSALS_PER_SECOND: u32 = 20;

/// What the caller decides about the run.
#[derive(Debug)]
pub struct RunOptions {
    /// Set (by a signal handler) to stop.
    pub stop: Arc<AtomicBool>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// The SSH port (and client) that must never be locked out.
    pub ssh: portolan_firewall::Guard,
    /// Delete the table when stopping (else it stays: the ports stay hidden).
    pub remove_on_exit: bool,
}

/// What the guard reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// The table is loaded and the guard listens.
    Started {
        spa_port: u16,
        guarded: Vec<String>,
        clients: usize,
        knocks: usize,
        ssh_kept: Option<u16>,
    },
    /// A decision about a packet or a sequence.
    Decision(Decision),
    /// A refusal over the per-second limit: counted (metrics), not listed.
    Counted(Decision),
    /// Something the operator should know (not a decision).
    Notice(String),
}

impl Event {
    /// One line for people (the caller escapes it for the terminal).
    pub fn line(&self) -> String {
        match self {
            Event::Started {
                spa_port,
                guarded,
                clients,
                knocks,
                ssh_kept,
            } => format!(
                "guarding {} (SPA on {spa_port}/udp; {clients} clients, {knocks} knock sequences){}",
                guarded.join(", "),
                ssh_kept.map_or(String::new(), |p| format!("; SSH port {p} kept open for this session"))
            ),
            Event::Decision(d) => {
                let who = d.client.as_deref().map_or(String::new(), |c| format!(" ({c})"));
                match &d.grant {
                    Some(g) => format!(
                        "accepted {} from {}{who}: opened {} for {} for {} s",
                        d.via.as_str(),
                        d.source,
                        g.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                        g.addr,
                        g.duration.as_secs()
                    ),
                    None => format!(
                        "refused {} from {}{who}: {}{}",
                        d.via.as_str(),
                        d.source,
                        d.result,
                        d.detail.as_deref().map_or(String::new(), |x| format!(" ({x})"))
                    ),
                }
            }
            Event::Notice(n) => n.clone(),
            Event::Counted(d) => format!("refused (not listed) from {}: {}", d.source, d.result),
        }
    }

    /// The JSON form (`--events`): one object per event.
    pub fn json(&self) -> serde_json::Value {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        match self {
            Event::Decision(d) | Event::Counted(d) => {
                json!({"ts_ms": ts, "event": "decision", "decision": d})
            }
            Event::Started { .. } => json!({"ts_ms": ts, "event": "started", "text": self.line()}),
            Event::Notice(n) => json!({"ts_ms": ts, "event": "notice", "text": n}),
        }
    }
}

/// Counts for the closing line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub packets: u64,
    pub accepted: u64,
    pub refused: u64,
    pub unreadable: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} packets, {} accepted, {} refused, {} not readable",
            self.packets, self.accepted, self.refused, self.unreadable
        )
    }
}

/// Seconds since the Unix epoch by the system clock (0 before 1970): the clock SPA
/// timestamps and one-time knock periods are read on.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Runs the guard until `opts.stop` is set or `opts.duration` has passed.
pub fn serve(
    cfg: GuardConfig,
    opts: &RunOptions,
    report: &mut dyn FnMut(&Event),
) -> Result<Summary, GuardError> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
        GuardError::io(
            format!(
                "cannot create the state directory {}",
                portolan_core::escape::for_terminal(&cfg.state_dir.display().to_string())
            ),
            e,
        )
    })?;
    let replay = ReplayCache::open(&cfg.state_dir.join("replay"), unix_now())?;
    // Bind NFLOG before the rules that log to it exist: no packet is logged to nobody.
    let mut log = Nflog::bind(cfg.nflog_group)?;
    let spec = table_spec(&cfg, &opts.ssh);
    let blocked = blocked_elsewhere(&cfg);
    let kept = nft::apply(&spec)?;
    let mut engine = Engine::new(cfg, replay)?;
    // One netlink socket for every grant: opening and closing one per grant costs 8-20 ms
    // (the kernel frees the transaction on close); a kept one, tens of microseconds.
    let mut opener = nft::Opener::new()?;
    let c = engine.config();
    report(&Event::Started {
        spa_port: c.spa_port,
        guarded: c.guarded.iter().map(ToString::to_string).collect(),
        clients: c.clients.len(),
        knocks: c.knocks.len(),
        ssh_kept: spec.keep_open.map(|k| k.port),
    });
    if kept {
        let n = nft::list().map_or(0, |l| l.len());
        if n > 0 {
            report(&Event::Notice(format!(
                "the table was loaded already: the access given before ({n} entries) is kept"
            )));
        }
    }
    for (p, by) in blocked {
        report(&Event::Notice(format!(
            "{p} is dropped for everyone by {by}: access the guard gives will not get through until that firewall allows the port"
        )));
    }
    let start = Instant::now();
    let mut last_tick = start;
    let mut summary = Summary::default();
    let mut lost_reported = 0;
    let mut limiter = Limiter::default();
    let (mut rate_since, mut rate_count, mut flooded) = (start, 0u64, false);
    let result = loop {
        if opts.stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break Ok(());
        }
        let batch = match log.recv(Some(POLL)) {
            Ok(b) => b,
            Err(e) => break Err(e),
        };
        let now = Instant::now();
        let unix = unix_now();
        let mut decided = Vec::new();
        for logged in &batch {
            summary.packets += 1;
            let Some(seen) = wire::parse(&logged.payload) else {
                summary.unreadable += 1;
                continue;
            };
            let pkt = Packet {
                source: seen.src,
                proto: seen.proto,
                dport: seen.dport,
                tcp_flags: seen.tcp_flags,
                payload: &seen.payload,
            };
            match engine.on_packet(&pkt, now, unix) {
                Ok(Some(d)) => {
                    if let Some(g) = &d.grant {
                        if let Err(e) = open_all(&mut opener, g.addr, &g.ports, g.duration) {
                            decided.push(Event::Notice(format!(
                                "could not open access for {}: {e}",
                                g.addr
                            )));
                            summary.refused += 1;
                            continue;
                        }
                        summary.accepted += 1;
                    } else {
                        summary.refused += 1;
                    }
                    decided.push(Event::Decision(d));
                }
                Ok(None) => {}
                Err(e) => decided.push(Event::Notice(e.to_string())),
            }
        }
        for ev in &decided {
            match ev {
                Event::Decision(d) if !d.accepted() => {
                    if limiter.allow(now) {
                        report(ev);
                    } else {
                        report(&Event::Counted(d.clone()));
                    }
                }
                _ => report(ev),
            }
        }
        if let Some(n) = limiter.flush(now) {
            report(&Event::Notice(format!(
                "{n} more refusals in the last {} s were not listed one by one (counted in the metrics)",
                SUMMARY_EVERY.as_secs()
            )));
        }
        let lost = log.lost();
        if lost > lost_reported {
            report(&Event::Notice(format!(
                "{} logged packets were lost (the NFLOG queue overflowed under a flood)",
                lost - lost_reported
            )));
            lost_reported = lost;
        }
        // Under a flood, read in rounds of FLOOD_ROUND: the kernel queues what comes
        // meanwhile (the socket's buffer holds seconds of it) and one wake-up reads
        // hundreds of packets instead of one. Costs at most one round of latency, and
        // only while the flood lasts.
        if now.duration_since(rate_since) >= Duration::from_secs(1) {
            flooded = rate_count > FLOOD_RATE;
            rate_count = 0;
            rate_since = now;
        }
        rate_count += batch.len() as u64;
        if flooded || rate_count > FLOOD_RATE {
            std::thread::sleep(FLOOD_ROUND);
        }
        if now.duration_since(last_tick) >= TICK {
            engine.tick(now, unix);
            last_tick = now;
        }
    };
    if opts.remove_on_exit {
        nft::remove()?;
    }
    result.map(|()| summary)
}

/// Guarded ports that another table drops for everyone (the guard's grants cannot
/// override a drop elsewhere: every base chain on the hook must accept).
fn blocked_elsewhere(cfg: &GuardConfig) -> Vec<(crate::PortProto, String)> {
    let Ok(rs) = portolan_firewall::Ruleset::load() else {
        return Vec::new();
    };
    let any = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
    cfg.guarded
        .iter()
        .filter_map(|p| match rs.inbound_verdict(p.proto, any, p.port) {
            portolan_firewall::Verdict::Blocked { by } if !by.contains(nft::TABLE) => {
                Some((*p, by))
            }
            _ => None,
        })
        .collect()
}

/// Logged packets a second above which the loop reads in rounds ([`FLOOD_ROUND`]).
const FLOOD_RATE: u64 = 2000;
/// The pause between reads under a flood.
const FLOOD_ROUND: Duration = Duration::from_millis(1);

/// How often suppressed refusals are summed up.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Limiter {
    second: Option<Instant>,
    in_second: u32,
    suppressed: u64,
    since: Option<Instant>,
}

impl Limiter {
    fn allow(&mut self, now: Instant) -> bool {
        if self
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            self.second = Some(now);
            self.in_second = 0;
        }
        self.in_second += 1;
        if self.in_second <= REFUSALS_PER_SECOND {
            return true;
        }
        self.suppressed += 1;
        self.since.get_or_insert(now);
        false
    }

    fn flush(&mut self, now: Instant) -> Option<u64> {
        let since = self.since?;
        if now.duration_since(since) < SUMMARY_EVERY {
            return None;
        }
        self.since = None;
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn open_all(
    opener: &mut nft::Opener,
    addr: IpAddr,
    ports: &[crate::PortProto],
    d: Duration,
) -> Result<(), GuardError> {
    for p in ports {
        opener.open(addr, *p, d)?;
    }
    Ok(())
}

/// The table's description from the configuration and the SSH session to keep.
pub fn table_spec(cfg: &GuardConfig, ssh: &portolan_firewall::Guard) -> nft::TableSpec {
    let (mut knock, ranges) = cfg.knock_ports();
    for (lo, hi) in ranges {
        knock.extend((lo..=hi).map(|port| crate::PortProto {
            proto: crate::L4::Tcp,
            port,
        }));
    }
    knock.sort_unstable();
    knock.dedup();
    nft::TableSpec {
        guarded: cfg.guarded.clone(),
        spa_port: Some(cfg.spa_port),
        spa_len: if cfg
            .clients
            .iter()
            .any(|c| matches!(c.key, crate::config::ClientKey::Fwknop { .. }))
        {
            None
        } else {
            u16::try_from(crate::spa::PACKET_LEN).ok()
        },
        knock,
        nflog_group: cfg.nflog_group,
        keep_open: nft::KeepOpen::from_guard(ssh),
        set_size: nft::DEFAULT_SET_SIZE,
    }
}
