//! A whole scan as one session: the binary builds a [`ScanRequest`] from validated
//! arguments, calls [`run_session`] once, and renders the [`SessionEvent`]s it streams up.
//!
//! The session does, in order: read the target list (`-iL`, bounded), expand targets
//! (blocks, ranges, names; exclusions), host discovery for blocks and ranges (connect pings
//! on [`PING_PORTS`] and an ICMP echo sweep alongside where raw sockets are allowed),
//! reverse names, the seed, the resume file (read, checked against the scan's
//! fingerprint, saved every second and at the end), the scan itself, and service
//! detection on the open ports with each host's measured RTT setting the probe's
//! deadlines. It never prints.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portolan_core::escape::{file_kind, for_terminal, path_for_terminal};
use portolan_core::{Port, PortState, ScanRecord, ServiceSource, TargetSpec};
use portolan_probe::{HttpInfo, Signatures, TlsInfo};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::probe::reason;
use crate::raw::RawOptions;
use crate::{icmp, rdns::ReverseNames, route, run_blocking, targets, Method};
use crate::{PortResult, Progress, ScanError, ScanEvent, ScanPlan, Shard, Timing};

/// One port as the scanner reports it: core's record with the probe engine's details.
pub type PortRecord = ScanRecord<TlsInfo, HttpInfo>;

/// Ports used to tell whether a host in a block is up (connect pings).
pub const PING_PORTS: [u16; 5] = [80, 443, 22, 3389, 445];
/// A closed or filtered group larger than this is counted instead of listed port by port.
pub const LIST_LIMIT: usize = 25;
/// Longest line of a target list, in bytes; longer lines are skipped (and reported).
pub const MAX_LIST_LINE: usize = 4096;
/// Bad entries of a target list reported one by one; the rest are counted in one line.
pub const MAX_REPORTED_BAD: usize = 20;
/// Most entries a target list may hold (each is a block, range, address or name).
pub const MAX_LIST_ENTRIES: usize = 1 << 20;
/// Most bytes read from a target list (a pipe may never end); then it is refused.
pub const MAX_LIST_BYTES: u64 = 64 << 20;

/// Service detection after the scan.
#[derive(Debug)]
pub struct Detection {
    pub signatures: Signatures,
    /// Ports probed at once.
    pub parallel: usize,
}

/// Everything a scan session needs, already validated.
#[derive(Debug)]
pub struct ScanRequest {
    /// Targets given on the command line.
    pub targets: Vec<TargetSpec>,
    /// A target list (`-iL`), read by the session: one or more targets a line, `#` comments.
    pub target_list: Option<PathBuf>,
    /// Whether blocks in the list keep their network and broadcast addresses.
    pub with_edges: bool,
    pub excludes: Vec<TargetSpec>,
    pub ports: Vec<Port>,
    pub timing: Timing,
    /// A fixed seed (shards need one); else one is drawn.
    pub seed: Option<u64>,
    pub shard: Shard,
    /// The resume file: read when it exists, written every second and at the end.
    pub resume: Option<PathBuf>,
    /// Host discovery for blocks and ranges (off: `--no-ping`).
    pub discovery: bool,
    /// No reverse names and no service names from the port table (`-n`).
    pub numeric: bool,
    /// Send each port's record as [`SessionEvent::Port`] (for outputs written while the
    /// scan runs). Off, no per-port record is built: the hosts at the end carry them.
    pub stream_ports: bool,
    /// Cap on probes in flight.
    pub max_parallel: u32,
    /// How ports are probed (and hosts discovered): connect or raw SYN.
    pub method: Method,
    pub detection: Option<Detection>,
    /// Set (by a signal handler) to stop the scan early: the session stops sending probes,
    /// saves the resume file, and still reports the hosts as far as it got.
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// The scan as it starts, once hosts and order are settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStart {
    pub seed: u64,
    pub shard: Shard,
    pub hosts: usize,
    pub ports: usize,
    /// Shard positions already done by an earlier run (resume), else 0.
    pub resumed_from: u64,
    pub started: SystemTime,
}

/// Where a host's name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NameSource {
    /// The name the user typed.
    User,
    /// A reverse lookup.
    Ptr,
}

impl NameSource {
    /// nmap's word for it (`user`, `PTR`).
    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::User => "user",
            NameSource::Ptr => "PTR",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostName {
    pub name: String,
    pub source: NameSource,
}

/// A state whose ports were too many to list: how many, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotShown {
    /// The ports' transport (a run of TCP and UDP scans has groups of each).
    pub proto: portolan_core::Protocol,
    pub state: PortState,
    pub count: u64,
    /// (reason, count), by reason.
    pub reasons: Vec<(Cow<'static, str>, u64)>,
}

/// One host at the end of the scan, in bounded memory: every open port, and closed or
/// filtered ports only while their group is small enough to list ([`LIST_LIMIT`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostSummary {
    pub host: IpAddr,
    pub name: Option<HostName>,
    /// Answered at all (an open or closed port, or an administrative prohibition).
    pub up: bool,
    /// Mean RTT of the answers.
    pub avg_rtt: Option<Duration>,
    /// The listed ports, by port number (with service details after detection).
    pub ports: Vec<PortRecord>,
    pub not_shown: Vec<NotShown>,
    pub open: u64,
}

/// What a session reports while it runs.
#[derive(Debug)]
pub enum SessionEvent {
    /// Hosts, ports and seed are settled; the scan begins.
    Started(ScanStart),
    /// A port's verdict (only with [`ScanRequest::stream_ports`]). With detection, open
    /// ports come after the scan, probed.
    Port(Box<PortRecord>),
    /// A few times a second while the scan runs.
    Progress(Progress),
    /// Service detection begins on this many open ports.
    Probing { ports: usize },
    /// Something the user should know, said once.
    Notice(String),
    /// Every scanned host, at the end.
    Hosts(Vec<HostSummary>),
}

/// What the session did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionSummary {
    /// Hosts scanned (after discovery); 0 when no host was up.
    pub hosts: usize,
    pub ports: usize,
    pub hosts_up: usize,
    pub open: u64,
    pub probes: u64,
    pub results: u64,
    pub started: SystemTime,
    /// From the scan's start to its end (service detection included).
    pub elapsed: Duration,
    /// The callback asked to stop: the scan ended early and nothing more was reported
    /// (except the hosts as far as the scan got).
    pub stopped: bool,
    /// The interrupt flag was set: the scan ended early; its results so far were reported
    /// (and saved in the resume file, if any).
    pub interrupted: bool,
    /// Positions of this shard finished (every position below is done), and how many there
    /// are: equal for a finished scan.
    pub checkpoint: u64,
    pub positions: u64,
}

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("cannot read target list {path}: {source}")]
    TargetList {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("target list {path} has more than {MAX_LIST_ENTRIES} entries; split it")]
    TargetListTooLong { path: String },
    #[error("target list {path} is longer than {} MiB; split it", MAX_LIST_BYTES >> 20)]
    TargetListTooBig { path: String },
    #[error("target list {path} is not a regular file ({kind}); give a file or a pipe")]
    TargetListKind { path: String, kind: &'static str },
    #[error(
        "no valid target: give addresses, blocks (198.18.0.0/24), ranges (198.18.0.1-20) or names"
    )]
    NoTarget,
    #[error("no address left to scan")]
    NoAddress,
    /// Every target failed the kernel's route lookup (`ENETUNREACH`/`EHOSTUNREACH`).
    #[error("network unreachable: no route to {targets}")]
    NoRoute { targets: String },
    #[error(
        "--shard needs --no-ping (-Pn) for blocks and ranges, so every shard scans the same hosts"
    )]
    ShardNeedsNoPing,
    #[error("cannot read resume file {path}: {source}")]
    ResumeRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a portolan resume file: {reason}")]
    ResumeFormat { path: String, reason: String },
    #[error("{path} belongs to a different scan (targets, ports, shard or seed differ)")]
    ResumeMismatch { path: String },
    #[error("cannot write resume file {path}: {source}")]
    ResumeWrite {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Scan(#[from] ScanError),
}

/// Event sink with the session's stop flags.
struct Sink<'a> {
    f: &'a mut dyn FnMut(SessionEvent) -> ControlFlow<()>,
    stopped: bool,
    interrupt: Option<Arc<AtomicBool>>,
}

impl Sink<'_> {
    fn send(&mut self, e: SessionEvent) {
        if !self.stopped && (self.f)(e).is_break() {
            self.stopped = true;
        }
    }

    /// The interrupt flag is set.
    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Stop now: the callback said so, or an interrupt came.
    fn halt(&self) -> bool {
        self.stopped || self.interrupted()
    }

    fn notice(&mut self, s: String) {
        self.send(SessionEvent::Notice(s));
    }
}

/// What kind of file a target list is, when it is one that cannot be read as a list:
/// devices (`/dev/zero` never ends) and directories. Regular files, pipes (`-iL -` through
/// `/dev/stdin`, a FIFO), sockets and terminals are read (with the byte cap for the
/// endless ones).
fn unreadable_kind(file: &std::fs::File) -> Option<&'static str> {
    use std::io::IsTerminal as _;
    use std::os::unix::fs::FileTypeExt as _;
    let t = file.metadata().ok()?.file_type();
    let refused = t.is_dir() || t.is_block_device() || (t.is_char_device() && !file.is_terminal());
    refused.then(|| file_kind(t))
}

/// Reads a target list in bounded memory and time: lines up to [`MAX_LIST_LINE`] bytes
/// (longer ones are skipped), at most [`MAX_LIST_ENTRIES`] entries and [`MAX_LIST_BYTES`]
/// bytes; devices are refused; bad entries are reported (the first [`MAX_REPORTED_BAD`]
/// one by one, then one count) and the rest kept.
fn read_target_list(
    path: &Path,
    with_edges: bool,
    sink: &mut Sink<'_>,
) -> Result<Vec<TargetSpec>, SessionError> {
    let shown = path_for_terminal(path);
    let io = |source| SessionError::TargetList {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if let Some(kind) = unreadable_kind(&file) {
        return Err(SessionError::TargetListKind { path: shown, kind });
    }
    let mut r = BufReader::new(file.take(MAX_LIST_BYTES + 1));
    let mut specs = Vec::new();
    let mut bad = 0usize;
    let mut line = Vec::with_capacity(256);
    let mut no = 0usize;
    // The message is made only for the entries reported one by one.
    let mut report = |msg: &dyn Fn() -> String, sink: &mut Sink<'_>| {
        bad += 1;
        if bad <= MAX_REPORTED_BAD {
            sink.notice(msg());
        }
    };
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_LIST_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if n == 0 {
            break;
        }
        no += 1;
        if line.len() > MAX_LIST_LINE && line.last() != Some(&b'\n') {
            // Skip to the end of this line.
            loop {
                let buf = r.fill_buf().map_err(io)?;
                if buf.is_empty() {
                    break;
                }
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    r.consume(i + 1);
                    break;
                }
                let len = buf.len();
                r.consume(len);
            }
            report(
                &|| {
                    format!(
                        "skipping target ({shown}:{no}): the line is longer than {MAX_LIST_LINE} bytes"
                    )
                },
                sink,
            );
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.split('#').next().unwrap_or("");
        for item in text.split_whitespace() {
            match TargetSpec::parse(item, with_edges) {
                Ok(s) => {
                    if specs.len() >= MAX_LIST_ENTRIES {
                        return Err(SessionError::TargetListTooLong { path: shown });
                    }
                    specs.push(s);
                }
                Err(e) => report(&|| format!("skipping target ({shown}:{no}): {e}"), sink),
            }
        }
    }
    if r.get_ref().limit() == 0 {
        return Err(SessionError::TargetListTooBig { path: shown });
    }
    if bad > MAX_REPORTED_BAD {
        sink.notice(format!(
            "{} more bad entries in {shown} skipped",
            bad - MAX_REPORTED_BAD
        ));
    }
    Ok(specs)
}

/// The `--resume` file: where the scan is, and what it found below its checkpoint.
///
/// The results are kept in the state itself, bounded as the report is (every open port;
/// closed and filtered ports listed while their group is small, else counted by reason),
/// rather than in an append-only file of every verdict: a full-range scan of a /16 has
/// 4 billion verdicts, and the report (table, XML, greppable, the open ports in JSON) needs
/// only this. The file is rewritten whole (write, sync, then rename), so it is never
/// half-written. It is read into this type and written from [`SavedView`], which borrows
/// the accumulators (the same JSON).
#[derive(Debug, Deserialize, PartialEq)]
struct ResumeState {
    seed: u64,
    shard: String,
    total: u64,
    fingerprint: u64,
    checkpoint: u64,
    /// What the positions below `checkpoint` found, by host (hosts with a verdict only).
    #[serde(default)]
    hosts: Vec<SavedHost>,
}

/// A host's verdicts as the resume file keeps them.
#[derive(Debug, Deserialize, PartialEq)]
struct SavedHost {
    host: IpAddr,
    /// (state, reason, count) of every verdict.
    counts: Vec<(PortState, String, u64)>,
    /// The listed ports (every open one; the others while their group is small).
    ports: Vec<SavedPort>,
    rtt_sum_us: u64,
    rtt_n: u32,
}

#[derive(Debug, Deserialize, PartialEq)]
struct SavedPort {
    port: u16,
    state: PortState,
    reason: String,
    rtt_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<u8>,
    attempts: u8,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The resume file as it is written: [`ResumeState`]'s JSON, serialized straight from the
/// accumulators (no copy of the hosts, no string per reason).
#[derive(Serialize)]
struct SavedView<'a> {
    seed: u64,
    shard: &'a str,
    total: u64,
    fingerprint: u64,
    checkpoint: u64,
    hosts: HostsView<'a>,
}

/// [`SavedHost`]s, one per accumulator.
struct HostsView<'a>(&'a BTreeMap<IpAddr, HostAcc>);

impl Serialize for HostsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(ip, acc)| HostView { host: *ip, acc }))
    }
}

/// One [`SavedHost`], borrowed.
struct HostView<'a> {
    host: IpAddr,
    acc: &'a HostAcc,
}

impl Serialize for HostView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        /// `(state, reason, count)` triples.
        struct Counts<'a>(&'a [((PortState, &'static str), u64)]);
        impl Serialize for Counts<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().map(|((st, r), n)| (st, r, n)))
            }
        }
        /// [`SavedPort`]s.
        struct Ports<'a>(&'a [Listed]);
        impl Serialize for Ports<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                #[derive(Serialize)]
                struct One {
                    port: u16,
                    state: PortState,
                    reason: &'static str,
                    rtt_us: Option<u64>,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    ttl: Option<u8>,
                    attempts: u8,
                }
                s.collect_seq(self.0.iter().map(|r| One {
                    port: r.port,
                    state: r.state,
                    reason: r.reason(),
                    rtt_us: r.rtt().map(micros),
                    ttl: r.ttl,
                    attempts: r.attempts,
                }))
            }
        }
        let acc = self.acc;
        let mut st = s.serialize_struct("SavedHost", 5)?;
        st.serialize_field("host", &self.host)?;
        st.serialize_field("counts", &Counts(&acc.counts))?;
        st.serialize_field("ports", &Ports(&acc.listed))?;
        st.serialize_field("rtt_sum_us", &micros(acc.rtt_sum))?;
        st.serialize_field("rtt_n", &acc.rtt_n)?;
        st.end()
    }
}

impl SavedHost {
    /// The accumulator again; `None` when the file holds a reason the scanner never gives.
    fn restore(&self) -> Option<HostAcc> {
        let mut acc = HostAcc::default();
        for (state, why, n) in &self.counts {
            acc.count((*state, reason::known(why)?), *n);
        }
        for p in &self.ports {
            acc.listed.push(Listed::new(&PortResult {
                host: self.host,
                port: Port::new(p.port),
                proto: portolan_core::Protocol::Tcp,
                state: p.state,
                reason: reason::known(&p.reason)?,
                rtt: p.rtt_us.map(Duration::from_micros),
                ttl: p.ttl,
                attempts: p.attempts,
                position: 0,
            }));
        }
        acc.rtt_sum = Duration::from_micros(self.rtt_sum_us);
        acc.rtt_n = self.rtt_n;
        Some(acc)
    }
}

/// FNV-1a over the addresses and ports: detects resuming with a different scan.
fn fingerprint(hosts: &[IpAddr], ports: &[Port]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for ip in hosts {
        eat(ip.to_string().as_bytes());
    }
    for p in ports {
        eat(&p.get().to_be_bytes());
    }
    h
}

/// Saves are at least this far apart.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// ... and at least this many times the last save's duration apart, so a large state or a
/// slow disk does not take the scan thread's time.
const SAVE_COST_FACTOR: u32 = 50;

struct Resume<'a> {
    path: &'a Path,
    /// Where the file is written before it is renamed over `path`: the whole name with
    /// `.tmp` appended, so no other file (nor `path` itself) is ever overwritten.
    tmp: PathBuf,
    seed: u64,
    shard: String,
    total: u64,
    fingerprint: u64,
    /// The checkpoint the file on disk holds (`None`: nothing written yet).
    saved: Option<u64>,
    /// No periodic save before this.
    next_due: Instant,
    /// Verdicts below the last saved checkpoint (restored ones included), by host.
    committed: BTreeMap<IpAddr, HostAcc>,
    /// Verdicts at or above it: a run resumed from that checkpoint scans them again, so
    /// they are saved only once the checkpoint passes them.
    pending: Vec<PortResult>,
    /// The serialized file, reused from save to save.
    buf: Vec<u8>,
}

impl<'a> Resume<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        path: &'a Path,
        seed: u64,
        shard: String,
        total: u64,
        fingerprint: u64,
        saved: Option<u64>,
        committed: BTreeMap<IpAddr, HostAcc>,
    ) -> Resume<'a> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        Resume {
            path,
            tmp: PathBuf::from(tmp),
            seed,
            shard,
            total,
            fingerprint,
            saved,
            next_due: Instant::now() + SAVE_EVERY,
            committed,
            pending: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// A periodic save: when it is due, and only if the checkpoint moved since the last
    /// one. The next is due after [`SAVE_EVERY`] or [`SAVE_COST_FACTOR`] times what this
    /// one took, whichever is longer.
    fn tick(&mut self, checkpoint: u64) -> Result<(), SessionError> {
        let now = Instant::now();
        if now < self.next_due || self.saved == Some(checkpoint) {
            return Ok(());
        }
        self.save(checkpoint)?;
        let took = now.elapsed();
        self.next_due = Instant::now() + SAVE_EVERY.max(took * SAVE_COST_FACTOR);
        Ok(())
    }

    /// Commits the verdicts below `checkpoint` and writes the file, unless it already
    /// holds this checkpoint (no verdict below a checkpoint comes after it is reached, so
    /// the file would be the same).
    fn save(&mut self, checkpoint: u64) -> Result<(), SessionError> {
        if self.saved == Some(checkpoint) {
            return Ok(());
        }
        let committed = &mut self.committed;
        self.pending.retain(|r| {
            if r.position < checkpoint {
                committed.entry(r.host).or_default().add(r);
                false
            } else {
                true
            }
        });
        let view = SavedView {
            seed: self.seed,
            shard: &self.shard,
            total: self.total,
            fingerprint: self.fingerprint,
            checkpoint,
            hosts: HostsView(&self.committed),
        };
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, &view).map_err(|e| SessionError::ResumeWrite {
            path: path_for_terminal(self.path),
            source: e.into(),
        })?;
        let werr = |p: &Path| {
            let path = path_for_terminal(p);
            move |source| SessionError::ResumeWrite { path, source }
        };
        let write = |tmp: &Path, bytes: &[u8]| -> std::io::Result<()> {
            let mut f = std::fs::File::create(tmp)?;
            std::io::Write::write_all(&mut f, bytes)?;
            f.sync_all()
        };
        write(&self.tmp, &self.buf).map_err(werr(&self.tmp))?;
        std::fs::rename(&self.tmp, self.path).map_err(werr(self.path))?;
        self.saved = Some(checkpoint);
        Ok(())
    }
}

/// Probe timing from the host's measured RTT: the network's share scales with it, the
/// service's own think time (a greeting, a page) is a fixed allowance on top.
fn probe_options(rtt: Option<Duration>) -> portolan_probe::Options {
    let rtt = rtt.unwrap_or(Duration::from_millis(100));
    portolan_probe::Options {
        // At least one SYN retransmission (1 s on Linux) and a little: a server whose
        // listen backlog is full while the probes' connections arrive together (git daemon,
        // ejabberd, xrdp accept slowly) drops a SYN, and a connect that gives up before the
        // retransmission never reaches it (their probes were skipped, the port unnamed).
        connect_timeout: (rtt * 4 + Duration::from_millis(1500)).min(Duration::from_secs(5)),
        banner_wait: (rtt * 2 + Duration::from_millis(1500)).min(Duration::from_secs(5)),
        read_timeout: (rtt * 2 + Duration::from_millis(2500)).min(Duration::from_secs(8)),
        ..portolan_probe::Options::default()
    }
}

/// One listed verdict of a host, in 12 bytes (a /16 x 100 ports holds up to 25 of them
/// per state per host until the state's group outgrows the list).
#[derive(Debug, Clone, Copy)]
struct Listed {
    port: u16,
    state: PortState,
    /// Index in [`reason::ALL`].
    reason: u8,
    attempts: u8,
    ttl: Option<u8>,
    /// Microseconds to the answer, `u32::MAX` for none.
    rtt_us: u32,
}

impl Listed {
    fn new(r: &PortResult) -> Listed {
        Listed {
            port: r.port.get(),
            state: r.state,
            reason: reason::ALL
                .iter()
                .position(|k| *k == r.reason)
                .and_then(|i| u8::try_from(i).ok())
                .unwrap_or(u8::MAX),
            attempts: r.attempts,
            ttl: r.ttl,
            rtt_us: r.rtt.map_or(u32::MAX, |d| {
                u32::try_from(d.as_micros()).unwrap_or(u32::MAX - 1)
            }),
        }
    }

    fn reason(self) -> &'static str {
        reason::ALL
            .get(usize::from(self.reason))
            .copied()
            .unwrap_or(reason::NO_RESPONSE)
    }

    fn rtt(self) -> Option<Duration> {
        (self.rtt_us != u32::MAX).then(|| Duration::from_micros(u64::from(self.rtt_us)))
    }

    fn result(self, host: IpAddr, proto: portolan_core::Protocol) -> PortResult {
        PortResult {
            host,
            port: Port::new(self.port),
            proto,
            state: self.state,
            reason: self.reason(),
            rtt: self.rtt(),
            ttl: self.ttl,
            attempts: self.attempts,
            position: 0,
        }
    }
}

/// A host's verdicts as they come, bounded (see [`HostSummary`]).
#[derive(Debug, Default, Clone)]
struct HostAcc {
    listed: Vec<Listed>,
    /// Verdicts by state and reason (a few entries: a small vector, not a map, since a
    /// scan of many hosts holds one per host).
    counts: Vec<((PortState, &'static str), u64)>,
    rtt_sum: Duration,
    rtt_n: u32,
    /// Records completed by service detection, by port.
    probed: BTreeMap<u16, PortRecord>,
    /// The host's name in its streamed records, looked up at its first one.
    record_name: std::cell::OnceCell<Option<String>>,
    /// The transport of its ports (one per session).
    proto: Option<portolan_core::Protocol>,
}

impl HostAcc {
    fn count(&mut self, key: (PortState, &'static str), n: u64) {
        if let Some((_, c)) = self.counts.iter_mut().find(|(k, _)| *k == key) {
            *c += n;
        } else {
            // One at a time: most hosts have one or two (a vector's first growth is to
            // four, 128 bytes a host).
            self.counts.reserve_exact(1);
            self.counts.push((key, n));
            self.counts.sort_unstable_by_key(|(k, _)| *k);
        }
    }

    /// Verdicts of state `s`.
    fn of_state(&self, s: PortState) -> u64 {
        self.counts
            .iter()
            .filter(|((st, _), _)| *st == s)
            .map(|(_, n)| n)
            .sum()
    }

    fn add(&mut self, r: &PortResult) {
        self.proto.get_or_insert(r.proto);
        self.count((r.state, r.reason), 1);
        let n = self.of_state(r.state);
        if r.state == PortState::Open || n <= LIST_LIMIT as u64 {
            if self.listed.len() == self.listed.capacity() && self.listed.len() < LIST_LIMIT {
                // Growing by doubling would reach 32 for a group of 25.
                let want = (self.listed.len() * 2).clamp(4, LIST_LIMIT);
                self.listed.reserve_exact(want - self.listed.len());
            }
            self.listed.push(Listed::new(r));
        } else if n == LIST_LIMIT as u64 + 1 {
            // The group is counted from now on: its listed ports go.
            self.listed.retain(|l| l.state != r.state);
            self.listed.shrink_to_fit();
        }
        if let Some(rtt) = r.rtt {
            self.rtt_sum += rtt;
            self.rtt_n += 1;
        }
    }

    /// The host's name for its streamed records: looked up once (a lock and a copy per
    /// verdict otherwise), so every record of a host carries the same name.
    fn record_name(&self, lookup: impl FnOnce() -> Option<String>) -> Option<String> {
        self.record_name.get_or_init(lookup).clone()
    }

    fn shown(&self, s: PortState) -> bool {
        s == PortState::Open || self.of_state(s) <= LIST_LIMIT as u64
    }

    fn up(&self) -> bool {
        self.counts
            .iter()
            .any(|((s, why), _)| *s != PortState::Filtered || *why == reason::ADMIN_PROHIBITED)
    }

    fn avg_rtt(&self) -> Option<Duration> {
        (self.rtt_n > 0).then(|| self.rtt_sum / self.rtt_n)
    }

    fn open(&self) -> u64 {
        self.of_state(PortState::Open)
    }

    fn summary(mut self, host: IpAddr, name: Option<HostName>, numeric: bool) -> HostSummary {
        let up = self.up();
        let avg_rtt = self.avg_rtt();
        let open = self.open();
        // counts is sorted by state, then reason.
        let mut states: Vec<PortState> = self.counts.iter().map(|((s, _), _)| *s).collect();
        states.dedup();
        let not_shown = states
            .into_iter()
            .filter(|s| !self.shown(*s))
            .map(|state| NotShown {
                proto: self.proto.unwrap_or(portolan_core::Protocol::Tcp),
                state,
                count: self.of_state(state),
                reasons: self
                    .counts
                    .iter()
                    .filter(|((s, _), _)| *s == state)
                    .map(|((_, r), c)| (Cow::Borrowed(*r), *c))
                    .collect(),
            })
            .collect();
        let hostname = name.as_ref().map(|n| n.name.clone());
        let proto = self.proto.unwrap_or(portolan_core::Protocol::Tcp);
        let mut listed: Vec<PortResult> = std::mem::take(&mut self.listed)
            .into_iter()
            .filter(|r| self.shown(r.state))
            .map(|l| l.result(host, proto))
            .collect();
        listed.sort_by_key(|r| r.port);
        let ports = listed
            .iter()
            .map(|r| {
                self.probed
                    .remove(&r.port.get())
                    .unwrap_or_else(|| record(r, numeric, hostname.clone()))
            })
            .collect();
        HostSummary {
            host,
            name,
            up,
            avg_rtt,
            ports,
            not_shown,
            open,
        }
    }
}

/// How many verdicts of one state had each reason.
type Reasons = Vec<(Cow<'static, str>, u64)>;

/// The hosts of a scan whose records were gathered elsewhere (a queued scan's chunks,
/// scanned by many workers): each host as the session itself would end it, every open
/// port listed and closed or filtered groups listed while small ([`LIST_LIMIT`]), else
/// counted by reason. Hosts in address order, ports by number.
pub fn summarize(records: Vec<PortRecord>) -> Vec<HostSummary> {
    let mut by_host: BTreeMap<IpAddr, Vec<PortRecord>> = BTreeMap::new();
    for r in records {
        by_host.entry(r.host).or_default().push(r);
    }
    by_host
        .into_iter()
        .map(|(host, mut recs)| {
            recs.sort_by_key(|r| (r.proto.as_str(), r.port));
            let mut counts: BTreeMap<(portolan_core::Protocol, PortState), Reasons> =
                BTreeMap::new();
            let (mut rtt_sum, mut rtt_n) = (0.0f64, 0u32);
            for r in &recs {
                let reasons = counts.entry((r.proto, r.state)).or_default();
                match reasons.iter_mut().find(|(why, _)| *why == r.reason) {
                    Some((_, n)) => *n += 1,
                    None => reasons.push((r.reason.clone(), 1)),
                }
                if let Some(ms) = r.rtt_ms {
                    rtt_sum += ms;
                    rtt_n += 1;
                }
            }
            let total = |k: &(portolan_core::Protocol, PortState)| -> u64 {
                counts.get(k).map_or(0, |v| v.iter().map(|(_, n)| n).sum())
            };
            let shown = |k: &(portolan_core::Protocol, PortState)| {
                k.1 == PortState::Open || total(k) <= LIST_LIMIT as u64
            };
            let up = recs
                .iter()
                .any(|r| r.state != PortState::Filtered || r.reason == reason::ADMIN_PROHIBITED);
            let open = recs.iter().filter(|r| r.state == PortState::Open).count() as u64;
            let not_shown = counts
                .iter()
                .filter(|(k, _)| !shown(k))
                .map(|(k, reasons)| NotShown {
                    proto: k.0,
                    state: k.1,
                    count: total(k),
                    reasons: reasons.clone(),
                })
                .collect();
            let name = recs
                .iter()
                .find_map(|r| r.hostname.clone())
                .map(|name| HostName {
                    name,
                    source: NameSource::Ptr,
                });
            let ports = recs
                .into_iter()
                .filter(|r| shown(&(r.proto, r.state)))
                .collect();
            HostSummary {
                host,
                name,
                up,
                avg_rtt: (rtt_n > 0)
                    .then(|| Duration::from_secs_f64(rtt_sum / f64::from(rtt_n) / 1000.0)),
                ports,
                not_shown,
                open,
            }
        })
        .collect()
}

/// A verdict as a record: the port table's name unless `-n`.
fn record(r: &PortResult, numeric: bool, hostname: Option<String>) -> PortRecord {
    let mut rec = PortRecord::new(r.host, r.port.get(), r.proto, r.state);
    rec.reason = Cow::Borrowed(r.reason);
    rec.rtt_ms = r.rtt.map(|d| (d.as_secs_f64() * 1e5).round() / 100.0);
    rec.ttl = r.ttl;
    if !numeric {
        rec.service = portolan_catalog::service_name(r.port, r.proto).map(Cow::Borrowed);
        rec.service_source = rec.service.as_ref().map(|_| ServiceSource::PortTable);
    }
    rec.hostname = hostname;
    rec
}

/// A record completed with what service detection learned.
fn probed_record(mut rec: PortRecord, rep: &portolan_probe::Report) -> PortRecord {
    if let Some(id) = &rep.identity {
        // The protocol's name; `tls` says when it is wrapped.
        rec.service = Some(Cow::Owned(id.service.clone()));
        rec.service_source = Some(if id.weak {
            ServiceSource::Weak
        } else {
            ServiceSource::Probe
        });
        rec.product.clone_from(&id.product);
        rec.version.clone_from(&id.version);
        rec.info.clone_from(&id.info);
        rec.cpe.clone_from(&id.cpe);
    }
    rec.banner.clone_from(&rep.banner);
    rec.tls.clone_from(&rep.tls);
    rec.http.clone_from(&rep.http);
    rec
}

/// Host discovery: the hosts that answered a connect ping or an ICMP echo, and the note
/// that says how many.
fn discover(
    hosts: &[IpAddr],
    timing: Timing,
    max_parallel: u32,
    method: &Method,
    sink: &mut Sink<'_>,
) -> Result<HashSet<IpAddr>, SessionError> {
    let mut ping_timing = timing;
    ping_timing.max_retries = ping_timing.max_retries.min(1);
    // With raw sockets, nmap's default set: a SYN to 443 and a bare ACK to 80 (which any
    // live host resets, firewalls that pass established traffic included), beside the
    // echo. Without, a connect to the common ports.
    let (ports, method) = match method {
        Method::Syn(opts) | Method::Udp(opts) => (
            vec![443, 80],
            Method::Syn(RawOptions {
                ack_ports: vec![80],
                ..opts.clone()
            }),
        ),
        Method::Connect => (PING_PORTS.to_vec(), Method::Connect),
    };
    let ping_ports = ports
        .iter()
        .map(|p| {
            if method != Method::Connect && *p == 80 {
                "ACK 80".to_owned()
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let what = if method == Method::Connect {
        "a connect ping"
    } else {
        "a SYN/ACK ping"
    };
    let plan = ScanPlan {
        hosts: hosts.to_vec(),
        ports: ports.iter().map(|&p| Port::new(p)).collect(),
        timing: ping_timing,
        seed: 1,
        shard: Shard::WHOLE,
        start_at: 0,
        max_parallel,
        method,
    };
    // ICMP echo alongside, where raw sockets are allowed (root or CAP_NET_RAW).
    let echo_hosts = hosts.to_vec();
    let echo_plan = icmp::EchoPlan {
        rate: timing.max_rate.unwrap_or(20_000.0),
        wait: timing.initial_timeout,
        rounds: 2,
    };
    let echo = std::thread::spawn(move || icmp::echo_sweep(&echo_hosts, echo_plan));
    let mut up: HashSet<IpAddr> = HashSet::new();
    let tcp = run_blocking(&plan, &mut |e| {
        match e {
            ScanEvent::Port(r) if matches!(r.state, PortState::Open | PortState::Closed) => {
                up.insert(r.host);
            }
            ScanEvent::Notice(n) => sink.notice(n),
            _ => {}
        }
        if sink.halt() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let echo = echo
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("thread failed")));
    tcp?;
    let how = match echo {
        Ok(answered) => {
            up.extend(answered);
            format!("{what} (ports {ping_ports}) or an ICMP echo")
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("{what} (ports {ping_ports}; ICMP echo needs root or CAP_NET_RAW)")
        }
        Err(e) => format!("{what} (ports {ping_ports}; ICMP echo failed: {e})"),
    };
    let n = hosts.iter().filter(|h| up.contains(h)).count();
    sink.notice(format!(
        "host discovery: {n} of {} hosts answered {how}; --no-ping scans them all",
        hosts.len()
    ));
    Ok(up)
}

/// Runs a whole scan (see the module's documentation) on the calling thread, streaming
/// events to `on_event`. `ControlFlow::Break` from the callback stops the session: no
/// further probe is sent, nothing more is reported, and the summary says `stopped`.
///
/// # Errors
///
/// A target list that cannot be read, no target or address left, a resume file that
/// cannot be read or written or belongs to another scan, a scanner that cannot start.
#[allow(clippy::too_many_lines)]
pub fn run_session(
    req: ScanRequest,
    on_event: &mut dyn FnMut(SessionEvent) -> ControlFlow<()>,
) -> Result<SessionSummary, SessionError> {
    let mut sink = Sink {
        f: on_event,
        stopped: false,
        interrupt: req.interrupt.clone(),
    };
    let mut specs = req.targets;
    if let Some(path) = &req.target_list {
        specs.extend(read_target_list(path, req.with_edges, &mut sink)?);
    }
    if specs.is_empty() {
        return Err(SessionError::NoTarget);
    }
    let expanded = targets::expand(&specs, &req.excludes);
    let shown_specs = {
        let mut v: Vec<String> = specs
            .iter()
            .take(3)
            .map(|s| for_terminal(&s.to_string()).into_owned())
            .collect();
        if specs.len() > 3 {
            v.push(format!("{} more", specs.len() - 3));
        }
        v.join(", ")
    };
    drop(specs);
    for r in expanded.rejected.iter().take(MAX_REPORTED_BAD) {
        sink.notice(format!("skipping target: {}", for_terminal(r)));
    }
    if expanded.rejected.len() > MAX_REPORTED_BAD {
        sink.notice(format!(
            "{} more targets skipped",
            expanded.rejected.len() - MAX_REPORTED_BAD
        ));
    }
    if expanded.hosts.is_empty() {
        return Err(SessionError::NoAddress);
    }
    // No route to any target: every probe would fail at connect(); say so now.
    if route::any_routed(&expanded.hosts) == Some(false) {
        return Err(SessionError::NoRoute {
            targets: shown_specs,
        });
    }
    let mut hosts = expanded.hosts.clone();
    let discovering = expanded.has_networks && req.discovery && hosts.len() > 1;
    if discovering && req.shard.count > 1 {
        // Each machine would find its own set of hosts up, and the shards would then cover
        // different scans.
        return Err(SessionError::ShardNeedsNoPing);
    }
    let started = SystemTime::now();
    let mut summary = SessionSummary {
        hosts: 0,
        ports: req.ports.len(),
        hosts_up: 0,
        open: 0,
        probes: 0,
        results: 0,
        started,
        elapsed: Duration::ZERO,
        stopped: false,
        interrupted: false,
        checkpoint: 0,
        positions: 0,
    };
    if discovering {
        let up = discover(&hosts, req.timing, req.max_parallel, &req.method, &mut sink)?;
        hosts.retain(|h| up.contains(h));
    }
    if sink.halt() || hosts.is_empty() {
        summary.stopped = sink.stopped;
        summary.interrupted = sink.interrupted();
        summary.elapsed = started.elapsed().unwrap_or_default();
        return Ok(summary);
    }

    // Names: the one the user gave, else a reverse lookup (skipped with -n), which gets a
    // short while before the scan starts; later answers still reach the report.
    let rdns = if req.numeric {
        ReverseNames::default()
    } else {
        let unnamed: Vec<IpAddr> = hosts
            .iter()
            .filter(|h| !expanded.names.contains_key(h))
            .copied()
            .collect();
        let r = ReverseNames::start(&unnamed);
        r.wait(Duration::from_millis(1500));
        r
    };
    let host_name = |ip: IpAddr| -> Option<HostName> {
        match expanded.names.get(&ip) {
            Some(n) => Some(HostName {
                name: n.clone(),
                source: NameSource::User,
            }),
            None => rdns.get(ip).map(|name| HostName {
                name,
                source: NameSource::Ptr,
            }),
        }
    };

    // Seed and resume.
    let total = hosts.len() as u64 * req.ports.len() as u64;
    let shard = req.shard;
    let shard_label = format!("{}/{}", shard.index, shard.count);
    let mut seed = req.seed.unwrap_or_else(|| {
        // Any value will do; the low 64 bits of the clock's nanoseconds vary enough.
        #[allow(clippy::cast_possible_truncation)]
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 ^ u64::from(std::process::id()))
    });
    let mut start_at = 0;
    let fp = fingerprint(&hosts, &req.ports);
    let mut resume = None;
    // The checkpoint the resume file holds already, if it exists.
    let mut saved = None;
    let mut restored: BTreeMap<IpAddr, HostAcc> = BTreeMap::new();
    if let Some(path) = &req.resume {
        if path.exists() {
            let text =
                std::fs::read_to_string(path).map_err(|source| SessionError::ResumeRead {
                    path: path_for_terminal(path),
                    source,
                })?;
            let st: ResumeState =
                serde_json::from_str(&text).map_err(|e| SessionError::ResumeFormat {
                    path: path_for_terminal(path),
                    reason: for_terminal(&e.to_string()).into_owned(),
                })?;
            if st.total != total
                || st.fingerprint != fp
                || st.shard != shard_label
                || req.seed.is_some_and(|s| s != st.seed)
            {
                return Err(SessionError::ResumeMismatch {
                    path: path_for_terminal(path),
                });
            }
            seed = st.seed;
            start_at = st.checkpoint;
            saved = Some(st.checkpoint);
            let scanned: HashSet<IpAddr> = hosts.iter().copied().collect();
            for h in &st.hosts {
                let acc = h.restore().ok_or_else(|| SessionError::ResumeFormat {
                    path: path_for_terminal(path),
                    reason: "a verdict with an unknown reason".into(),
                })?;
                // A host the scan does not have was caught by the fingerprint; skip it.
                if scanned.contains(&h.host) {
                    restored.insert(h.host, acc);
                }
            }
            sink.notice(format!(
                "resuming from {} of {} positions",
                st.checkpoint,
                shard.positions(total)
            ));
        }
        resume = Some(Resume::new(
            path,
            seed,
            shard_label.clone(),
            total,
            fp,
            saved,
            restored.clone(),
        ));
    }
    let plan = ScanPlan {
        hosts: hosts.clone(),
        ports: req.ports.clone(),
        timing: req.timing,
        seed,
        shard,
        start_at,
        max_parallel: req.max_parallel,
        method: req.method.clone(),
    };
    summary.hosts = hosts.len();
    sink.send(SessionEvent::Started(ScanStart {
        seed,
        shard,
        hosts: hosts.len(),
        ports: req.ports.len(),
        resumed_from: start_at,
        started,
    }));

    // The scan: verdicts stream up (open ports wait for detection when asked). What an
    // earlier run found (resume) comes first, as it was recorded.
    let detecting = req.detection.is_some();
    let numeric = req.numeric;
    let streaming = req.stream_ports;
    let mut held: Vec<PortResult> = Vec::new();
    for (ip, acc) in &restored {
        let proto = acc.proto.unwrap_or(portolan_core::Protocol::Tcp);
        let mut listed: Vec<PortResult> = acc
            .listed
            .iter()
            .filter(|r| acc.shown(r.state))
            .map(|l| l.result(*ip, proto))
            .collect();
        listed.sort_by_key(|r| r.port);
        for r in listed {
            if detecting && r.state == PortState::Open {
                held.push(r);
            } else if streaming {
                let name = acc.record_name(|| host_name(*ip).map(|n| n.name));
                sink.send(SessionEvent::Port(Box::new(record(&r, numeric, name))));
            }
        }
    }
    let mut accs: BTreeMap<IpAddr, HostAcc> = hosts
        .iter()
        .map(|h| (*h, restored.remove(h).unwrap_or_default()))
        .collect();
    drop(restored);
    let mut resume_err: Option<SessionError> = None;
    let run = run_blocking(&plan, &mut |e| {
        match e {
            ScanEvent::Port(r) => {
                if let Some(res) = resume.as_mut() {
                    res.pending.push(r.clone());
                }
                // Every scanned host has an accumulator.
                if let Some(acc) = accs.get_mut(&r.host) {
                    acc.add(&r);
                    if detecting && r.state == PortState::Open {
                        held.push(r);
                    } else if streaming {
                        let name = acc.record_name(|| host_name(r.host).map(|n| n.name));
                        sink.send(SessionEvent::Port(Box::new(record(&r, numeric, name))));
                    }
                }
            }
            ScanEvent::Progress(p) => {
                if let Some(res) = resume.as_mut() {
                    if let Err(e) = res.tick(p.checkpoint) {
                        resume_err.get_or_insert(e);
                    }
                }
                sink.send(SessionEvent::Progress(p));
            }
            ScanEvent::Notice(n) => sink.notice(n),
        }
        if sink.halt() || resume_err.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    if let Some(e) = resume_err {
        return Err(e);
    }
    if let Some(res) = resume.as_mut() {
        res.save(run.checkpoint)?;
    }
    drop(resume);
    summary.probes = run.probes;
    summary.results = run.results;
    summary.checkpoint = run.checkpoint;
    summary.positions = shard.positions(total);
    if sink.halt() {
        // Stopped early: the hosts as far as the scan got (open ports unprobed), so an
        // interrupted scan still leaves complete outputs; the callback may ignore them.
        summary.stopped = sink.stopped;
        summary.interrupted = sink.interrupted();
        summary.elapsed = started.elapsed().unwrap_or_default();
        finish_hosts(&mut summary, accs, &host_name, numeric, &mut sink);
        return Ok(summary);
    }

    // Service detection on the open ports, each host's deadlines from its measured RTT.
    if let (Some(det), false) = (&req.detection, held.is_empty()) {
        let targets: Vec<(SocketAddr, Option<String>, portolan_probe::Options)> = held
            .iter()
            .map(|r| {
                let rtt = accs.get(&r.host).and_then(HostAcc::avg_rtt);
                // The name the user typed goes into payloads (HTTP Host); else the address.
                let name = expanded.names.get(&r.host).cloned();
                (
                    SocketAddr::new(r.host, r.port.get()),
                    name,
                    probe_options(rtt),
                )
            })
            .collect();
        sink.send(SessionEvent::Probing {
            ports: targets.len(),
        });
        let probed = if req.method.proto() == portolan_core::Protocol::Udp {
            // The probe engine's UDP side: every UDP probe that names the port, then the
            // others, on connected sockets (limits from the slowest host's RTT).
            let o = targets
                .iter()
                .map(|t| t.2)
                .max_by_key(|o| o.read_timeout)
                .unwrap_or_default();
            let udp: Vec<(SocketAddr, Option<String>)> =
                targets.iter().map(|(a, n, _)| (*a, n.clone())).collect();
            portolan_probe::udp::probe_many_udp(&udp, &det.signatures, &o, det.parallel)
        } else {
            portolan_probe::probe_many_with(&targets, &det.signatures, det.parallel)
        };
        for (r, p) in held.iter().zip(&probed) {
            let Some(acc) = accs.get_mut(&r.host) else {
                continue;
            };
            let name = acc.record_name(|| host_name(r.host).map(|n| n.name));
            let rec = probed_record(record(r, numeric, name), p);
            if streaming {
                sink.send(SessionEvent::Port(Box::new(rec.clone())));
            }
            acc.probed.insert(r.port.get(), rec);
        }
    }
    summary.elapsed = started.elapsed().unwrap_or_default();
    finish_hosts(&mut summary, accs, &host_name, numeric, &mut sink);
    summary.stopped = sink.stopped;
    summary.interrupted = sink.interrupted();
    Ok(summary)
}

/// The hosts at the end (also after a stop: they go to the callback whatever it said
/// before), and the totals from them.
fn finish_hosts(
    summary: &mut SessionSummary,
    accs: BTreeMap<IpAddr, HostAcc>,
    host_name: &dyn Fn(IpAddr) -> Option<HostName>,
    numeric: bool,
    sink: &mut Sink<'_>,
) {
    let summaries: Vec<HostSummary> = accs
        .into_iter()
        .map(|(ip, acc)| acc.summary(ip, host_name(ip), numeric))
        .collect();
    summary.hosts_up = summaries.iter().filter(|h| h.up).count();
    summary.open = summaries.iter().map(|h| h.open).sum();
    let _ = (sink.f)(SessionEvent::Hosts(summaries));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TimingPreset;
    use std::net::{Ipv4Addr, TcpListener};

    fn request(ports: Vec<u16>) -> ScanRequest {
        ScanRequest {
            targets: vec![TargetSpec::parse("127.0.0.1", false).unwrap()],
            target_list: None,
            with_edges: false,
            excludes: vec![],
            ports: ports.into_iter().map(Port::new).collect(),
            timing: TimingPreset::Aggressive.params(),
            seed: Some(5),
            shard: Shard::WHOLE,
            resume: None,
            discovery: true,
            numeric: true,
            stream_ports: true,
            max_parallel: 256,
            method: Method::Connect,
            detection: None,
            interrupt: None,
        }
    }

    #[test]
    fn a_session_reports_every_port_once_and_summarises_hosts() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = l.local_addr().unwrap().port();
        let mut req = request(vec![open]);
        let dir = std::env::temp_dir().join(format!("portolan-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let resume = dir.join("resume.json");
        req.resume = Some(resume.clone());
        let mut ports = Vec::new();
        let mut hosts = Vec::new();
        let mut started = None;
        let s = run_session(req, &mut |e| {
            match e {
                SessionEvent::Port(r) => ports.push(*r),
                SessionEvent::Hosts(h) => hosts = h,
                SessionEvent::Started(st) => started = Some(st),
                _ => {}
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(started.unwrap().seed, 5);
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(ports[0].state, PortState::Open);
        assert_eq!(ports[0].service, None, "-n: no port-table name");
        assert_eq!((s.hosts, s.open, s.hosts_up), (1, 1, 1));
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].ports, ports);
        let st: ResumeState =
            serde_json::from_str(&std::fs::read_to_string(&resume).unwrap()).unwrap();
        assert_eq!(st.checkpoint, 1);
        // Another port list against the same file: refused.
        let mut other = request(vec![open, 1]);
        other.resume = Some(resume);
        let e = run_session(other, &mut |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(e, SessionError::ResumeMismatch { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_resume_file_keeps_verdicts_below_its_checkpoint_only() {
        let dir = std::env::temp_dir().join(format!("portolan-commit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resume.json");
        let host: IpAddr = "198.18.0.1".parse().unwrap();
        let mk = |position: u64, state| PortResult {
            host,
            port: Port::new(u16::try_from(position).unwrap() + 1),
            proto: portolan_core::Protocol::Tcp,
            state,
            reason: if state == PortState::Open {
                "syn-ack"
            } else {
                "conn-refused"
            },
            rtt: Some(Duration::from_millis(1)),
            ttl: None,
            attempts: 1,
            position,
        };
        let mut res = Resume::new(&path, 1, "0/1".into(), 100, 0, None, BTreeMap::new());
        // Out of order, as answers come: 0..40 closed and 7 open below the checkpoint,
        // one open port above it (a resumed run scans it again).
        for k in (0..40).rev() {
            res.pending.push(mk(k, PortState::Closed));
        }
        res.pending.push(mk(50, PortState::Open));
        res.pending.push(mk(40, PortState::Open));
        res.save(45).unwrap();
        assert_eq!(res.pending.len(), 1);
        let st: ResumeState =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(st.checkpoint, 45);
        let acc = st.hosts[0].restore().unwrap();
        assert_eq!(acc.open(), 1);
        assert_eq!(acc.of_state(PortState::Closed), 40);
        let h = acc.summary(host, None, true);
        assert_eq!(h.ports.len(), 1, "open listed, 40 closed counted");
        assert_eq!(h.ports[0].port, 41);
        assert_eq!(h.not_shown[0].count, 40);
        // Written through `resume.json.tmp` (the whole name), which is gone after.
        assert_eq!(res.tmp, dir.join("resume.json.tmp"));
        assert!(!res.tmp.exists());
        // The same checkpoint again: nothing to write, the file is left alone.
        std::fs::write(&path, "untouched").unwrap();
        res.save(45).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "untouched");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_host_lists_small_groups_and_counts_big_ones() {
        let host: IpAddr = "198.18.0.1".parse().unwrap();
        let mut acc = HostAcc::default();
        let mk = |port: u16, state, reason| PortResult {
            host,
            port: Port::new(port),
            proto: portolan_core::Protocol::Tcp,
            state,
            reason,
            rtt: Some(Duration::from_millis(2)),
            ttl: None,
            attempts: 1,
            position: 0,
        };
        for p in 1..=100 {
            acc.add(&mk(p, PortState::Closed, "conn-refused"));
        }
        acc.add(&mk(22, PortState::Open, "syn-ack"));
        acc.add(&mk(1000, PortState::Filtered, "no-response"));
        assert!(acc.listed.len() <= LIST_LIMIT + 2);
        let h = acc.summary(host, None, false);
        assert!(h.up);
        assert_eq!(h.open, 1);
        let listed: Vec<(u16, PortState)> = h.ports.iter().map(|r| (r.port, r.state)).collect();
        assert_eq!(listed, [(22, PortState::Open), (1000, PortState::Filtered)]);
        assert_eq!(h.ports[0].service.as_deref(), Some("ssh"));
        assert_eq!(h.ports[0].service_source, Some(ServiceSource::PortTable));
        assert_eq!(
            h.not_shown,
            [NotShown {
                proto: portolan_core::Protocol::Tcp,
                state: PortState::Closed,
                count: 100,
                reasons: vec![(Cow::Borrowed("conn-refused"), 100)],
            }]
        );
    }

    #[test]
    fn a_target_list_is_read_in_bounded_lines_with_bad_entries_counted() {
        let dir = std::env::temp_dir().join(format!("portolan-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("targets.txt");
        let mut text = String::from("127.0.0.1 # here\n");
        text.push_str(&"x".repeat(MAX_LIST_LINE * 3));
        text.push('\n');
        for i in 0..30 {
            text += "bad_";
            text += &i.to_string();
            text += "!\n";
        }
        text.push_str("127.0.0.2\n");
        std::fs::write(&path, text).unwrap();
        let mut notes = Vec::new();
        let mut f = |e: SessionEvent| {
            if let SessionEvent::Notice(n) = e {
                notes.push(n);
            }
            ControlFlow::Continue(())
        };
        let mut sink = Sink {
            f: &mut f,
            stopped: false,
            interrupt: None,
        };
        let specs = read_target_list(&path, false, &mut sink).unwrap();
        assert_eq!(specs.len(), 2, "{notes:?}");
        assert_eq!(notes.len(), MAX_REPORTED_BAD + 1, "{notes:?}");
        assert!(notes[0].contains(":2): the line is longer"), "{notes:?}");
        assert!(
            notes.last().unwrap().starts_with("11 more bad entries"),
            "{notes:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod summarize_tests {
    use super::*;

    fn rec(host: &str, port: u16, state: PortState, why: &'static str) -> PortRecord {
        let mut r = PortRecord::new(
            host.parse().unwrap(),
            port,
            portolan_core::Protocol::Tcp,
            state,
        );
        r.reason = Cow::Borrowed(why);
        r.rtt_ms = Some(2.0);
        r
    }

    #[test]
    fn records_become_hosts_as_the_session_ends_them() {
        let mut recs = Vec::new();
        for p in 1..=30 {
            recs.push(rec(
                "198.18.0.2",
                1000 + p,
                PortState::Filtered,
                "no-response",
            ));
        }
        recs.push(rec("198.18.0.2", 22, PortState::Open, "syn-ack"));
        recs.push(rec("198.18.0.2", 80, PortState::Open, "syn-ack"));
        for p in [23, 25, 110] {
            recs.push(rec("198.18.0.2", p, PortState::Closed, "conn-refused"));
        }
        recs.push(rec("198.18.0.1", 443, PortState::Filtered, "no-response"));
        let hosts = summarize(recs);
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].host.to_string(), "198.18.0.1");
        assert!(!hosts[0].up, "a host with only silence is not up");
        assert_eq!(hosts[0].ports.len(), 1);
        let h = &hosts[1];
        assert!(h.up);
        assert_eq!(h.open, 2);
        let listed: Vec<u16> = h.ports.iter().map(|r| r.port).collect();
        assert_eq!(listed, [22, 23, 25, 80, 110]);
        assert_eq!(h.not_shown.len(), 1);
        assert_eq!(h.not_shown[0].count, 30);
        assert_eq!(h.not_shown[0].state, PortState::Filtered);
        assert_eq!(h.avg_rtt, Some(Duration::from_millis(2)));
    }
}
