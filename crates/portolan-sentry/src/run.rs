//! The sentry's loop: NFLOG in, decisions out. Binds the NFLOG group, loads the table, and
//! from then on reads logged packets in batches, asks [`LocalPorts`] whether each found
//! anything, feeds the detector, and reports what it decides; blocks (when asked) go to a
//! thread of their own, so a slow `nft` never delays reading.
//!
//! On stop the watch chain is taken away and the blocks stay until they expire (a blocked
//! scanner stays blocked when the sentry restarts); `portolan sentry remove` deletes all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portolan_core::cidr::Cidr;
use portolan_guard::nflog::Nflog;

use crate::capture::{Capture, Mode, PacketCapture};
use crate::detect::{Contact, Phase, ScanEvent, Sentry, Thresholds};
use crate::local::LocalPorts;
use crate::nft::{self, TableSpec};
use crate::protect::{Protected, Why};
use crate::SentryError;

/// How the sentry runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub group: u16,
    /// Where packets come from.
    pub capture: Mode,
    pub thresholds: Thresholds,
    /// Watch loopback too.
    pub loopback: bool,
    /// Block each scanning source for this long.
    pub block: Option<Duration>,
    /// Never blocked.
    pub allow: Vec<Cidr>,
    /// The client of the SSH session in use, never blocked.
    pub ssh_client: Option<IpAddr>,
    /// The ports sshd listens on: the peers of established connections to them are never
    /// blocked (empty: 22).
    pub ssh_ports: Vec<u16>,
    /// The block sets' size cap.
    pub block_cap: u32,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub stop: Arc<AtomicBool>,
}

/// Counters, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets read from the log.
    pub packets: AtomicU64,
    /// Packets that could not be read as IPv4/IPv6 TCP or UDP.
    pub unreadable: AtomicU64,
    /// Times the kernel said logged packets were dropped (our socket's buffer was full).
    pub lost: AtomicU64,
    /// Scans started, by detector (trw, vertical, horizontal, slow, distributed).
    pub scans: [AtomicU64; 5],
    /// Scans going on now.
    pub active: AtomicU64,
    /// Sources remembered now.
    pub sources: AtomicU64,
    /// Sources blocked, and blocks that failed or were refused (allow-list, cap).
    pub blocked: AtomicU64,
    pub block_errors: AtomicU64,
    pub not_blocked: AtomicU64,
}

impl Stats {
    /// The Prometheus text of these counters.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let c = |s: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        c(
            &mut s,
            "portolan_sentry_packets_total",
            "First packets read from the kernel's log.",
            "counter",
            self.packets.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "portolan_sentry_unreadable_total",
            "Logged packets that were not IPv4 or IPv6 TCP or UDP.",
            "counter",
            self.unreadable.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "portolan_sentry_log_overruns_total",
            "Times the kernel dropped logged packets because the reader fell behind.",
            "counter",
            self.lost.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            s,
            "# HELP portolan_sentry_scans_total Scans detected, by the detector that fired.\n# TYPE portolan_sentry_scans_total counter"
        );
        for (i, d) in ["trw", "vertical", "horizontal", "slow", "distributed"]
            .iter()
            .enumerate()
        {
            let _ = writeln!(
                s,
                "portolan_sentry_scans_total{{detector=\"{d}\"}} {}",
                self.scans[i].load(Ordering::Relaxed)
            );
        }
        c(
            &mut s,
            "portolan_sentry_active_scans",
            "Scans going on now.",
            "gauge",
            self.active.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "portolan_sentry_sources",
            "Source addresses remembered now.",
            "gauge",
            self.sources.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "portolan_sentry_blocked_total",
            "Sources blocked.",
            "counter",
            self.blocked.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "portolan_sentry_block_errors_total",
            "Blocks that failed.",
            "counter",
            self.block_errors.load(Ordering::Relaxed),
        );
        c(
            &mut s,
            "portolan_sentry_not_blocked_total",
            "Scanning sources not blocked (allow-listed, the SSH session, the cap).",
            "counter",
            self.not_blocked.load(Ordering::Relaxed),
        );
        s
    }
}

/// Why a scanning source was not blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotBlocked {
    /// In the allow-list.
    Allowed,
    /// The client of the SSH session the sentry runs in.
    SshSession,
    /// One of this host's loopback or unspecified addresses.
    Local,
    /// The block list holds as many addresses as its cap.
    Full,
    /// A gateway, a name server or the peer of an SSH connection of this host.
    Infrastructure,
    /// Too many blocks waiting to be written (a wave of scanners): this one was dropped.
    Busy,
}

/// What the sentry reports. (A scan is the common case, and events are not stored in bulk:
/// the size difference between variants costs nothing.)
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Started {
        /// "NFLOG" or "AF_PACKET".
        capture: &'static str,
        group: u16,
        loopback: bool,
        block: Option<Duration>,
        /// Addresses blocked before this start (kept from a previous run).
        kept_blocks: usize,
    },
    /// A scan started, went on or ended; `blocked` the sources blocked because of this
    /// event (until `blocked_until_ms`), `not_blocked` those spared and why.
    Scan {
        scan: ScanEvent,
        blocked: Vec<IpAddr>,
        blocked_until_ms: Option<i64>,
        not_blocked: Vec<(IpAddr, NotBlocked)>,
    },
    /// A block that failed (the scan event still went out).
    BlockFailed {
        address: IpAddr,
        error: String,
    },
    /// The kernel dropped logged packets: the reader fell behind.
    Overrun {
        times: u64,
    },
    Notice(String),
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub packets: u64,
    pub scans: u64,
    pub blocked: u64,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn detector_index(d: crate::detect::Detector) -> usize {
    use crate::detect::Detector as D;
    match d {
        D::Trw => 0,
        D::Vertical => 1,
        D::Horizontal => 2,
        D::Slow => 3,
        D::Distributed => 4,
    }
}

/// Runs the sentry until `opts.stop` is set or `opts.duration` has passed.
pub fn serve(
    opts: &RunOptions,
    stats: &Arc<Stats>,
    report: &mut dyn FnMut(&Event),
) -> Result<Summary, SentryError> {
    opts.thresholds.validate().map_err(SentryError::Setup)?;
    // One sentry per network namespace: a second one would fight over the table's chains.
    let _lock = lock_namespace()?;
    let mut spec = TableSpec {
        group: opts.group,
        loopback: opts.loopback,
        block_cap: opts.block_cap,
        watch: true,
    };
    // Bind the group before the rules that log to it exist. Each packet is sent at once
    // (a queue threshold of one): batching 64 packets or 20 ms let a fast scan send 200
    // more probes before its alarm, and a netlink message per packet costs little (the
    // reader still takes whatever is queued in one go; see bench/sentry.sh's flood).
    let nflog = |spec: &TableSpec| -> Result<Capture, SentryError> {
        let log = Nflog::bind_batched(opts.group, 1, 0)?;
        nft::apply(spec)?;
        Ok(Capture::Nflog(log))
    };
    let mut fallback_note = None;
    let mut cap = match opts.capture {
        Mode::Nflog => nflog(&spec)?,
        Mode::Packet => Capture::Packet(PacketCapture::open(opts.loopback)?),
        Mode::Auto => match nflog(&spec) {
            Ok(c) => c,
            // A group another process holds is that process's: not a reason to fall back.
            Err(e) if e.to_string().contains("already bound") => return Err(e),
            Err(e) => {
                fallback_note = Some(format!(
                    "NFLOG and nftables cannot be used ({e}): reading with AF_PACKET instead (no ACK or Maimon probes seen)"
                ));
                Capture::Packet(PacketCapture::open(opts.loopback)?)
            }
        },
    };
    if let Capture::Packet(_) = cap {
        spec.watch = false;
        if opts.block.is_some() {
            nft::apply(&spec)?;
        }
    }
    // Counted after the table is loaded: what the keep-script kept, not what was there.
    let kept_blocks = match nft::is_loaded() {
        Ok(true) => nft::blocked().map_or(0, |b| b.len()),
        _ => 0,
    };
    if let Some(n) = fallback_note {
        report(&Event::Notice(n));
    }
    let mut local = LocalPorts::new();
    local.refresh();
    if let Some(e) = &local.last_error {
        report(&Event::Notice(format!(
            "cannot read the listening sockets ({e}): first contacts are left out until they can be read"
        )));
    }
    report(&Event::Started {
        capture: cap.name(),
        group: opts.group,
        loopback: opts.loopback,
        block: opts.block,
        kept_blocks,
    });

    // The blocker: one thread, fed through a bounded channel (a wave of blocks beyond it
    // is refused and reported, never queued without end); its failures come back. On stop
    // it gives up what is still queued.
    let (block_tx, block_rx) = mpsc::sync_channel::<(IpAddr, Duration)>(1024);
    let (fail_tx, fail_rx) = mpsc::channel::<(IpAddr, String)>();
    let stopping = Arc::new(AtomicBool::new(false));
    let blocker_stopping = Arc::clone(&stopping);
    let blocker = std::thread::Builder::new()
        .name("sentry-block".into())
        .spawn(move || {
            for (addr, d) in block_rx {
                if blocker_stopping.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = nft::block(addr, d) {
                    let _ = fail_tx.send((addr, e.to_string()));
                }
            }
        })
        .map_err(|e| SentryError::io("start the blocking thread", e))?;

    let mut det = Sentry::new(opts.thresholds.clone());
    let mut protected = Protected::new(opts.ssh_ports.clone());
    let mut packets = Vec::new();
    let mut summary = Summary::default();
    let mut events = Vec::new();
    let start = Instant::now();
    // Decisions run on the monotonic clock (a step of the wall clock, e.g. NTP at boot,
    // must not end every scan or hold a window open for an hour); times reported are the
    // wall clock at start plus the monotonic time since.
    let wall0 = now_ms();
    let clock =
        || wall0.saturating_add(i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX));
    let mut last_tick = start;
    let mut lost_reported = 0;
    let mut overrun_said: Option<Instant> = None;
    // Blocks given, with their end, to keep under the cap (per family, as the kernel's sets).
    let mut blocks: HashMap<IpAddr, i64> = HashMap::new();
    let mut guard_ports = nft::guard_ports();
    let mut guard_read = Instant::now();
    let result = loop {
        if opts.stop.load(Ordering::Relaxed) || opts.duration.is_some_and(|d| start.elapsed() >= d)
        {
            break Ok(());
        }
        packets.clear();
        let mut unreadable = 0;
        let read = match cap.recv(Duration::from_millis(100), &mut packets, &mut unreadable) {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let t = clock();
        stats.packets.fetch_add(read as u64, Ordering::Relaxed);
        stats.unreadable.fetch_add(unreadable, Ordering::Relaxed);
        summary.packets += read as u64;
        // Events go out right after the packet that caused them, not after the batch.
        let mut next = 0;
        loop {
            'packets: while next < packets.len() && events.is_empty() {
                let p = &packets[next];
                next += 1;
                // Traceroute's UDP probes end at the destination's closed ports 33434-33534:
                // a path measurement, not a scan.
                if p.transport == crate::packet::Transport::Udp
                    && (33434..=33534).contains(&p.dport)
                {
                    continue 'packets;
                }
                // A knock or SPA packet for `portolan guard` touches closed ports by design.
                if guard_ports.contains(&(p.transport, p.dport)) {
                    continue 'packets;
                }
                let Some(success) = local.success(p) else {
                    continue 'packets;
                };
                det.observe(
                    &Contact {
                        packet: *p,
                        success,
                    },
                    t,
                    &mut events,
                );
            }
            let batch_done = next >= packets.len();
            if batch_done && last_tick.elapsed() >= Duration::from_millis(200) {
                last_tick = Instant::now();
                local.maybe_refresh();
                det.tick(t, &mut events);
                stats.active.store(det.active() as u64, Ordering::Relaxed);
                stats.sources.store(det.sources() as u64, Ordering::Relaxed);
                let lost = cap.lost();
                if lost > lost_reported {
                    stats.lost.store(lost, Ordering::Relaxed);
                    // At most one line every 10 s; the counter has every one.
                    if overrun_said.is_none_or(|s| s.elapsed() >= Duration::from_secs(10)) {
                        overrun_said = Some(Instant::now());
                        report(&Event::Overrun {
                            times: lost - lost_reported,
                        });
                        lost_reported = lost;
                    }
                }
                blocks.retain(|_, end| *end > t);
                if guard_read.elapsed() >= Duration::from_secs(60) {
                    guard_read = Instant::now();
                    guard_ports = nft::guard_ports();
                }
            }
            while let Ok((address, error)) = fail_rx.try_recv() {
                stats.block_errors.fetch_add(1, Ordering::Relaxed);
                blocks.remove(&address);
                report(&Event::BlockFailed { address, error });
            }
            for scan in events.drain(..) {
                if scan.phase == Phase::Start {
                    summary.scans += 1;
                    stats.scans[detector_index(scan.detector)].fetch_add(1, Ordering::Relaxed);
                }
                let mut blocked = Vec::new();
                let mut not_blocked = Vec::new();
                let mut until = None;
                if let (Some(d), Phase::Start | Phase::Progress) = (opts.block, scan.phase) {
                    let end = t.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                    for &src in &scan.sources {
                        if blocks.contains_key(&src) {
                            continue;
                        }
                        let family = |a: &IpAddr| a.is_ipv4() == src.is_ipv4();
                        let why = if opts.allow.iter().any(|c| c.contains(src)) {
                            Some(NotBlocked::Allowed)
                        } else if opts.ssh_client == Some(src) {
                            Some(NotBlocked::SshSession)
                        } else if let Some(w) = protected.check(src) {
                            Some(match w {
                                Why::Special => NotBlocked::Local,
                                Why::Infrastructure => NotBlocked::Infrastructure,
                            })
                        } else if blocks.keys().filter(|a| family(a)).count()
                            >= opts.block_cap as usize
                        {
                            Some(NotBlocked::Full)
                        } else {
                            None
                        };
                        if let Some(w) = why {
                            stats.not_blocked.fetch_add(1, Ordering::Relaxed);
                            not_blocked.push((src, w));
                            continue;
                        }
                        if block_tx.try_send((src, d)).is_err() {
                            stats.block_errors.fetch_add(1, Ordering::Relaxed);
                            not_blocked.push((src, NotBlocked::Busy));
                            continue;
                        }
                        blocks.insert(src, end);
                        blocked.push(src);
                        summary.blocked += 1;
                        stats.blocked.fetch_add(1, Ordering::Relaxed);
                        until = Some(end);
                    }
                }
                report(&Event::Scan {
                    scan,
                    blocked,
                    blocked_until_ms: until,
                    not_blocked,
                });
            }
            if batch_done {
                break;
            }
        }
    };
    // Stop watching first (a slow ending must not leave the chain behind), then give up
    // the blocks still queued, then end the scans going on.
    let stopped = if let Capture::Nflog(_) = cap {
        let logged = nft::logged_counts().ok();
        let r = nft::stop_watching();
        if let Some(n) = logged {
            if n > summary.packets {
                report(&Event::Notice(format!(
                    "the kernel logged {n} packets, {} were read: {} lost",
                    summary.packets,
                    n - summary.packets
                )));
            }
        }
        r
    } else {
        Ok(())
    };
    stopping.store(true, Ordering::Relaxed);
    drop(block_tx);
    let _ = blocker.join();
    let t = clock();
    for mut scan in det.ongoing(t) {
        scan.phase = Phase::End;
        report(&Event::Scan {
            scan,
            blocked: Vec::new(),
            blocked_until_ms: None,
            not_blocked: Vec::new(),
        });
    }
    result?;
    stopped?;
    Ok(summary)
}

/// The namespace's lock, held for the process's life; its file is removed when it is let
/// go (so namespaces that come and go leave nothing behind under /run).
#[derive(Debug)]
struct NsLock {
    _file: std::fs::File,
    path: std::path::PathBuf,
}

impl Drop for NsLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Takes /run/portolan/sentry-NETNS.lock (NETNS: the network namespace's inode) for the
/// process's life: a second sentry in the same namespace is refused.
fn lock_namespace() -> Result<NsLock, SentryError> {
    use std::os::unix::fs::MetadataExt as _;
    let ns = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
    let dir = std::path::Path::new("/run/portolan");
    std::fs::create_dir_all(dir)
        .map_err(|e| SentryError::io(format!("create {}", dir.display()), e))?;
    let path = dir.join(format!("sentry-{ns}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| SentryError::io(format!("open {}", path.display()), e))?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(NsLock { _file: f, path }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(SentryError::Setup(
            "another portolan sentry runs in this network namespace".to_owned(),
        )),
        Err(e) => Err(SentryError::io(
            format!("lock {}", path.display()),
            e.into(),
        )),
    }
}
