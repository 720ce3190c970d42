//! The decision: which sources are scanning, from a stream of first contacts (a source's
//! first packet to one local address, port and protocol), each marked a success (something
//! listens there) or a failure (nothing does).
//!
//! Four detectors run side by side; the first to fire starts the scan's alarm:
//! - **TRW**, Threshold Random Walk (Jung, Paxson, Berger and Balakrishnan, "Fast Portscan
//!   Detection Using Sequential Hypothesis Testing", IEEE S&P 2004). A benign source's
//!   first contacts succeed with probability θ0, a scanner's with θ1 < θ0. Each success
//!   multiplies the likelihood ratio by θ1/θ0, each failure by (1-θ1)/(1-θ0); above
//!   η1 = PD/PF the source is a scanner, below η0 = (1-PD)/(1-PF) it is benign and the walk
//!   starts again. With the paper's θ0 = 0.8, θ1 = 0.2, PD = 0.99 and PF = 0.01, four
//!   failures more than successes decide; portolan also asks for `min_failed` distinct
//!   failed contacts (5), so a client that tries a few closed ports is not a scanner.
//! - **vertical**: one source, many first contacts in a short time, whatever their outcome
//!   (a host whose every port answers does not hide a scan from it): a count that decays
//!   with time constant `window`, alarm at `vertical`.
//! - **horizontal**: one source, the same port on many local addresses.
//! - **slow**: a score per source of failed first contacts that halves every `slow_half_life`
//!   (an hour), alarm at `slow`: a scan spread over hours, with successes between.
//! - **distributed**: failed first contacts from sources that are not alarmed themselves,
//!   grouped by the shape of their packets (kind, window, options, TTL class): many sources
//!   and many ports of one shape within `window` are one scan from many places.
//!
//! A scan ends when its sources have been quiet for `idle_end` (or, for a slow scan, four
//! times its mean gap between probes, at most an hour); the source then starts afresh.
//!
//! Time is the caller's (milliseconds), so the decisions are testable and replayable.
//! Memory is bounded: at most `max_sources` sources (the least recently active are
//! forgotten first), at most [`MAX_CONTACTS`] remembered contacts per source and
//! [`MAX_CONTACTS_TOTAL`] in all, and at most 64 packet shapes of 4,096 entries each for
//! the distributed detector, whose scans list at most 4,096 sources (the rest counted).
//!
//! A source's evidence is an *episode*: it starts at its first new contact, and starts
//! again when TRW calls the source benign, when it has made no new contact for ten
//! windows (10 minutes), or when its scan ends. A scan's `started_ms` is its episode's
//! first contact. Within an episode, the walk's evidence against a source fades with a
//! time constant of ten windows, so rare failures hours apart never add up.
//!
//! Must not: touch the network, nftables or the terminal.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::packet::{Packet, Transport};
use crate::traits::{kind, ScanKind, ToolGuess, Traits};

/// Contacts remembered per source: beyond, a source's new contacts are counted but no
/// longer told apart from repeats (it has long been alarmed by then).
pub const MAX_CONTACTS: usize = 131_072;
/// Contacts remembered across all sources (about 32 MB): beyond, only sources not yet
/// alarmed remember new ones (they need it to count failures once); an alarmed source's
/// repeats may then count twice, which changes nothing that matters.
pub const MAX_CONTACTS_TOTAL: usize = 1_000_000;
/// Packet shapes the distributed detector keeps at most; beyond, new shapes share one.
const MAX_SHAPES: usize = 64;
/// Ports listed in an event at most (the total is always given).
pub const MAX_LISTED_PORTS: usize = 256;
/// Local addresses listed in an event at most.
const MAX_LISTED_ADDRS: usize = 32;
/// Sources listed in a distributed scan's event at most.
const MAX_LISTED_SOURCES: usize = 64;
/// Sources a distributed scan remembers at most.
const MAX_DIST_SOURCES: usize = 4096;
/// Entries a distributed shape's window keeps at most.
const MAX_SHAPE_WINDOW: usize = 4096;

/// The thresholds. Every field has a measured default (see the README's sentry section)
/// and can be set in the configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// TRW: probability that a benign source's first contact succeeds.
    pub theta0: f64,
    /// TRW: probability that a scanner's first contact succeeds.
    pub theta1: f64,
    /// TRW: the detection probability asked for.
    pub detection: f64,
    /// TRW: the false positive probability allowed.
    pub false_positive: f64,
    /// TRW: distinct failed first contacts needed besides the walk.
    pub min_failed: u32,
    /// Vertical: first contacts within about `window_secs`.
    pub vertical: u32,
    /// Horizontal: local addresses one source tried.
    pub horizontal: u32,
    /// The time constant of the vertical count and the distributed window, seconds.
    pub window_secs: f64,
    /// Slow: the decaying score of failed first contacts that alarms.
    pub slow: f64,
    /// Slow: the score's half-life, seconds.
    pub slow_half_life_secs: f64,
    /// Distributed: sources of one shape within the window.
    pub distributed_sources: u32,
    /// Distributed: distinct failed ports of one shape within the window.
    pub distributed_ports: u32,
    /// A scan ends after this long without a probe, seconds.
    pub idle_end_secs: f64,
    /// An ongoing scan's event at most this often, seconds.
    pub progress_secs: f64,
    /// Sources remembered at most.
    pub max_sources: usize,
    /// A source quiet for this long is forgotten, seconds.
    pub forget_secs: f64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            theta0: 0.8,
            theta1: 0.2,
            detection: 0.99,
            false_positive: 0.01,
            min_failed: 5,
            vertical: 40,
            horizontal: 16,
            window_secs: 60.0,
            slow: 12.0,
            slow_half_life_secs: 3600.0,
            distributed_sources: 4,
            distributed_ports: 20,
            idle_end_secs: 30.0,
            progress_secs: 5.0,
            max_sources: 100_000,
            forget_secs: 6.0 * 3600.0,
        }
    }
}

/// The thresholds file: a `[thresholds]` table with any of [`Thresholds`]' fields.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdsFile {
    #[serde(default)]
    thresholds: Thresholds,
}

impl Thresholds {
    /// Reads a thresholds file (TOML: `[thresholds]` with any of the fields; the rest keep
    /// their defaults) and checks it; the message names what is wrong.
    pub fn from_toml(text: &str) -> Result<Thresholds, String> {
        let f: ThresholdsFile = toml::from_str(text)
            .map_err(|e| portolan_core::escape::for_terminal(&e.to_string()).into_owned())?;
        f.thresholds.validate()?;
        Ok(f.thresholds)
    }

    /// Checks the values make sense; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let prob = |name: &str, v: f64| {
            if v > 0.0 && v < 1.0 {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be between 0 and 1 (exclusive), not {v}"
                ))
            }
        };
        prob("theta0", self.theta0)?;
        prob("theta1", self.theta1)?;
        prob("detection", self.detection)?;
        prob("false_positive", self.false_positive)?;
        if self.theta1 >= self.theta0 {
            return Err(format!(
                "theta1 ({}) must be below theta0 ({}): scanners succeed less often than benign sources",
                self.theta1, self.theta0
            ));
        }
        if self.false_positive >= self.detection {
            return Err("false_positive must be below detection".to_owned());
        }
        let pos = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1e9 {
                Ok(())
            } else {
                Err(format!("{name} must be a positive number, not {v}"))
            }
        };
        let within = |name: &str, v: f64, lo: f64, hi: f64| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(format!("{name} must be between {lo} and {hi}, not {v}"))
            }
        };
        within("window_secs", self.window_secs, 1.0, 86_400.0)?;
        within("idle_end_secs", self.idle_end_secs, 1.0, 86_400.0)?;
        within("progress_secs", self.progress_secs, 0.1, 86_400.0)?;
        within(
            "slow_half_life_secs",
            self.slow_half_life_secs,
            1.0,
            30.0 * 86_400.0,
        )?;
        within("forget_secs", self.forget_secs, 1.0, 30.0 * 86_400.0)?;
        pos("window_secs", self.window_secs)?;
        pos("slow", self.slow)?;
        pos("slow_half_life_secs", self.slow_half_life_secs)?;
        pos("idle_end_secs", self.idle_end_secs)?;
        pos("progress_secs", self.progress_secs)?;
        pos("forget_secs", self.forget_secs)?;
        for (name, v) in [
            ("vertical", self.vertical),
            ("horizontal", self.horizontal),
            ("distributed_sources", self.distributed_sources),
            ("distributed_ports", self.distributed_ports),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_sources == 0 {
            return Err("max_sources must be at least 1".to_owned());
        }
        Ok(())
    }

    fn upper(&self) -> f64 {
        (self.detection / self.false_positive).ln()
    }

    fn lower(&self) -> f64 {
        ((1.0 - self.detection) / (1.0 - self.false_positive)).ln()
    }

    fn step_fail(&self) -> f64 {
        ((1.0 - self.theta1) / (1.0 - self.theta0)).ln()
    }

    fn step_success(&self) -> f64 {
        (self.theta1 / self.theta0).ln()
    }
}

/// Which detector started a scan's alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    Trw,
    Vertical,
    Horizontal,
    Slow,
    Distributed,
}

impl Detector {
    pub const fn as_str(self) -> &'static str {
        match self {
            Detector::Trw => "trw",
            Detector::Vertical => "vertical",
            Detector::Horizontal => "horizontal",
            Detector::Slow => "slow",
            Detector::Distributed => "distributed",
        }
    }
}

/// Where a scan is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    Progress,
    End,
}

impl Phase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Progress => "progress",
            Phase::End => "end",
        }
    }
}

/// A port a scan touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PortRef {
    pub port: u16,
    #[serde(serialize_with = "ser_transport")]
    pub proto: Transport,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's serialize_with passes a reference
fn ser_transport<S: serde::Serializer>(t: &Transport, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

/// What the detector reports: a scan started, went on, or ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanEvent {
    /// The scan's number, unique in this process's life (start, progress and end share it).
    pub id: u64,
    pub phase: Phase,
    /// When this event was decided (milliseconds since the epoch).
    pub ts_ms: i64,
    /// The scanning addresses: one, or several for a distributed scan (at most 64 listed).
    pub sources: Vec<IpAddr>,
    /// How many sources in all.
    pub sources_total: usize,
    pub detector: Detector,
    /// The kinds of probe, most frequent first.
    pub kinds: Vec<ScanKind>,
    /// The likely tool, with the trait that decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolGuess>,
    /// Ports tried so far, sorted (at most 256 listed).
    pub ports: Vec<PortRef>,
    /// Distinct ports tried so far.
    pub ports_total: usize,
    /// Local addresses tried (at most 32 listed).
    pub addresses: Vec<IpAddr>,
    pub addresses_total: usize,
    /// First contacts so far (distinct local address, port and protocol).
    pub probes: u64,
    /// Of those, how many found nothing listening.
    pub failed: u64,
    /// First contacts seen from the source(s) until the alarm (including the one that
    /// decided it).
    pub probes_to_detect: u64,
    pub started_ms: i64,
    pub detected_ms: i64,
    pub last_ms: i64,
}

/// One first packet and whether it found something listening.
#[derive(Debug, Clone, Copy)]
pub struct Contact {
    pub packet: Packet,
    /// Something listens (or, for a packet that is not a connection attempt, a socket
    /// uses) the local address and port.
    pub success: bool,
}

#[derive(Debug)]
struct Alarm {
    id: u64,
    detector: Detector,
    detected_ms: i64,
    probes_to_detect: u64,
    last_report_ms: i64,
    ports_reported: usize,
}

#[derive(Debug)]
struct Source {
    /// The episode's first new contact.
    first_ms: i64,
    /// The last packet (repeats included: they keep a scan going).
    last_ms: i64,
    /// The last new contact.
    last_new_ms: i64,
    llr: f64,
    contacts: HashSet<u64>,
    probes: u64,
    failed: u64,
    /// The decaying vertical count and when it was last brought up to date.
    recent: f64,
    recent_ms: i64,
    slow: f64,
    slow_ms: i64,
    ports: BTreeSet<PortRef>,
    addrs: BTreeSet<IpAddr>,
    /// Local address and port pairs the episode's probes (not connections) found open: a
    /// connection to one of them later is version detection.
    open_found: HashSet<(IpAddr, PortRef)>,
    traits: Traits,
    alarm: Option<Alarm>,
}

impl Source {
    fn new(t: i64) -> Source {
        Source {
            first_ms: t,
            last_ms: t,
            last_new_ms: t,
            llr: 0.0,
            contacts: HashSet::new(),
            probes: 0,
            failed: 0,
            recent: 0.0,
            recent_ms: t,
            slow: 0.0,
            slow_ms: t,
            ports: BTreeSet::new(),
            addrs: BTreeSet::new(),
            open_found: HashSet::new(),
            traits: Traits::default(),
            alarm: None,
        }
    }

    /// Forgets the scan that ended, slow score included: what the source does next is
    /// judged afresh (a scan that goes on after a quiet spell is a new scan).
    fn restart(&mut self, t: i64) {
        *self = Source::new(t);
    }

    /// A new episode that keeps the contacts already seen (so a repeat is still a repeat)
    /// and the slow score, and forgets the rest of the evidence.
    fn new_episode(&mut self, t: i64) {
        self.first_ms = t;
        self.llr = 0.0;
        self.probes = 0;
        self.failed = 0;
        self.ports.clear();
        self.addrs.clear();
        self.open_found.clear();
        self.traits = Traits::default();
    }
}

/// The shape of a probe, for grouping many sources into one distributed scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Shape {
    kind: ScanKind,
    window: u16,
    options: u8,
    mss_only: bool,
    ttl255: bool,
    zmap_id: bool,
}

impl Shape {
    fn of(p: &Packet) -> Shape {
        let k = kind(p);
        Shape {
            kind: k,
            // The kernel's SYN window varies with the route; for connect scans it does not
            // tell one scanner from another.
            window: if k == ScanKind::Connect { 0 } else { p.window },
            options: p.options.count,
            mss_only: p.options.mss_only(),
            ttl255: p.ttl == 255,
            zmap_id: p.ip_id == Some(54321),
        }
    }
}

#[derive(Debug, Default)]
struct ShapeWindow {
    entries: VecDeque<(i64, IpAddr, PortRef)>,
    sources: HashMap<IpAddr, u32>,
    ports: HashMap<PortRef, u32>,
    /// The traits of every probe of this shape since the window was last emptied.
    traits: Traits,
    alarm: Option<DistAlarm>,
}

#[derive(Debug)]
struct DistAlarm {
    id: u64,
    started_ms: i64,
    detected_ms: i64,
    last_ms: i64,
    last_report_ms: i64,
    probes_to_detect: u64,
    probes: u64,
    sources: BTreeSet<IpAddr>,
    /// Sources beyond [`MAX_DIST_SOURCES`] (counted, maybe more than once each).
    sources_more: u64,
    ports: BTreeSet<PortRef>,
    addrs: BTreeSet<IpAddr>,
    traits: Traits,
    reported: (usize, usize),
}

/// The detector: feed it contacts ([`Detector::observe`]) and the passing of time
/// ([`Detector::tick`]); it returns the events they cause.
#[derive(Debug)]
pub struct Sentry {
    cfg: Thresholds,
    sources: HashMap<IpAddr, Source>,
    shapes: HashMap<Shape, ShapeWindow>,
    next_id: u64,
    last_sweep_ms: i64,
    /// Contacts remembered across sources.
    contacts_total: usize,
}

/// A first contact: the local address, port and protocol, and the kind of probe (a FIN
/// probe of a port a SYN already tried is news: another technique).
fn contact_key(p: &Packet) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.dst.hash(&mut h);
    p.dport.hash(&mut h);
    p.transport.hash(&mut h);
    kind(p).hash(&mut h);
    h.finish()
}

fn secs_ms(s: f64) -> i64 {
    // Thresholds are validated (positive, at most 1e9 s), so this fits.
    #[allow(clippy::cast_possible_truncation)]
    let ms = (s * 1000.0).round() as i64;
    ms
}

#[allow(clippy::cast_precision_loss)]
fn ms_f(ms: i64) -> f64 {
    ms as f64
}

impl Sentry {
    pub fn new(cfg: Thresholds) -> Sentry {
        Sentry {
            cfg,
            sources: HashMap::new(),
            shapes: HashMap::new(),
            next_id: 1,
            last_sweep_ms: i64::MIN,
            contacts_total: 0,
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.cfg
    }

    /// Sources remembered now.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Scans going on now.
    pub fn active(&self) -> usize {
        self.sources.values().filter(|s| s.alarm.is_some()).count()
            + self.shapes.values().filter(|s| s.alarm.is_some()).count()
    }

    /// Takes one packet that may be a first contact. Repeats (the same source, local
    /// address, port and protocol again) only keep the source's scan alive.
    pub fn observe(&mut self, c: &Contact, t: i64, out: &mut Vec<ScanEvent>) {
        let p = &c.packet;
        if !self.sources.contains_key(&p.src) && self.sources.len() >= self.cfg.max_sources {
            self.evict(t, out);
        }
        let cfg = self.cfg.clone();
        let src = self.sources.entry(p.src).or_insert_with(|| Source::new(t));
        src.last_ms = t;
        let key = contact_key(p);
        let room = src.contacts.len() < MAX_CONTACTS
            && (self.contacts_total < MAX_CONTACTS_TOTAL || src.alarm.is_none());
        let new = if room {
            let inserted = src.contacts.insert(key);
            self.contacts_total += usize::from(inserted);
            inserted
        } else {
            !src.contacts.contains(&key)
        };
        if !new {
            return;
        }
        let quiet_ms = t - src.last_new_ms;
        if src.alarm.is_none() && (src.probes == 0 || quiet_ms >= secs_ms(cfg.window_secs * 10.0)) {
            src.new_episode(t);
        } else if src.alarm.is_none() && src.llr > 0.0 {
            // Evidence against a source fades with time (ten windows' time constant): a
            // busy client's rare failures, hours apart, never add up to a scan. Scanners
            // are fast; slow ones are the slow score's.
            let dt = ms_f(quiet_ms).max(0.0) / 1000.0;
            src.llr *= (-dt / (cfg.window_secs * 10.0)).exp();
        }
        src.last_new_ms = t;
        src.probes += 1;
        let port = PortRef {
            port: p.dport,
            proto: p.transport,
        };
        let k = kind(p);
        if c.success && k != ScanKind::Connect && src.open_found.len() < 4096 {
            src.open_found.insert((p.dst, port));
        }
        if c.success && k == ScanKind::Connect && src.open_found.contains(&(p.dst, port)) {
            src.traits.observe_as(p, ScanKind::Version);
        } else {
            src.traits.observe_as(p, k);
        }
        src.ports.insert(port);
        if src.addrs.len() < 4096 {
            src.addrs.insert(p.dst);
        }
        // The vertical count: decays with time constant window; a contact that found a
        // listener weighs half (a monitor checking many open ports is not a scan).
        let dt = ms_f(t - src.recent_ms).max(0.0) / 1000.0;
        let weight = if c.success { 0.5 } else { 1.0 };
        src.recent = src.recent * (-dt / cfg.window_secs).exp() + weight;
        src.recent_ms = t;
        if c.success {
            src.llr += cfg.step_success();
        } else {
            src.failed += 1;
            src.llr += cfg.step_fail();
            let dt = ms_f(t - src.slow_ms).max(0.0) / 1000.0;
            src.slow = src.slow * 0.5f64.powf(dt / cfg.slow_half_life_secs) + 1.0;
            src.slow_ms = t;
        }
        if src.alarm.is_none() && src.llr <= cfg.lower() {
            // Benign: the walk starts again; so does the episode's evidence, unless the
            // source is in a burst of new contacts (a vertical scan of open ports).
            if src.recent < f64::from(cfg.vertical) / 4.0 {
                src.new_episode(t);
                src.probes = 0;
            } else {
                src.llr = 0.0;
                src.failed = 0;
            }
        }
        let fired = if src.alarm.is_some() {
            None
        } else if src.llr >= cfg.upper() && src.failed >= u64::from(cfg.min_failed) {
            Some(Detector::Trw)
        } else if src.recent >= f64::from(cfg.vertical) {
            Some(Detector::Vertical)
        } else if src.addrs.len() >= cfg.horizontal as usize
            && src.recent >= f64::from(cfg.horizontal)
        {
            Some(Detector::Horizontal)
        } else if src.slow >= cfg.slow {
            Some(Detector::Slow)
        } else {
            None
        };
        if let Some(detector) = fired {
            let id = self.next_id;
            self.next_id += 1;
            src.alarm = Some(Alarm {
                id,
                detector,
                detected_ms: t,
                probes_to_detect: src.probes,
                last_report_ms: t,
                ports_reported: src.ports.len(),
            });
            out.push(source_event(p.src, src, Phase::Start, t));
        } else if let Some(a) = &mut src.alarm {
            if src.ports.len() > a.ports_reported
                && t - a.last_report_ms >= secs_ms(cfg.progress_secs)
            {
                a.last_report_ms = t;
                a.ports_reported = src.ports.len();
                out.push(source_event(p.src, src, Phase::Progress, t));
            }
        }
        let alarmed = src.alarm.is_some();
        if !c.success && !alarmed {
            self.distributed(p, port, t, out);
        }
    }

    fn distributed(&mut self, p: &Packet, port: PortRef, t: i64, out: &mut Vec<ScanEvent>) {
        let window = secs_ms(self.cfg.window_secs);
        let (need_sources, need_ports) = (
            self.cfg.distributed_sources as usize,
            self.cfg.distributed_ports as usize,
        );
        let progress = secs_ms(self.cfg.progress_secs);
        let mut shape = Shape::of(p);
        if self.shapes.len() >= MAX_SHAPES && !self.shapes.contains_key(&shape) {
            // Crafted packets of ever new shapes share one window.
            shape = Shape {
                kind: ScanKind::OtherTcp,
                window: 0,
                options: u8::MAX,
                mss_only: false,
                ttl255: false,
                zmap_id: false,
            };
        }
        let w = self.shapes.entry(shape).or_default();
        w.entries.push_back((t, p.src, port));
        *w.sources.entry(p.src).or_default() += 1;
        *w.ports.entry(port).or_default() += 1;
        w.traits.observe(p);
        while w
            .entries
            .front()
            .is_some_and(|e| t - e.0 > window || w.entries.len() > MAX_SHAPE_WINDOW)
        {
            let (_, s, pr) = w.entries.pop_front().expect("front exists");
            dec(&mut w.sources, &s);
            dec(&mut w.ports, &pr);
        }
        if let Some(a) = &mut w.alarm {
            a.last_ms = t;
            a.probes += 1;
            if a.sources.len() < MAX_DIST_SOURCES {
                a.sources.insert(p.src);
            } else if !a.sources.contains(&p.src) {
                a.sources_more = a.sources_more.saturating_add(1);
            }
            a.ports.insert(port);
            if a.addrs.len() < 4096 {
                a.addrs.insert(p.dst);
            }
            a.traits.observe(p);
            if (a.ports.len(), a.sources.len()) != a.reported && t - a.last_report_ms >= progress {
                a.last_report_ms = t;
                a.reported = (a.ports.len(), a.sources.len());
                out.push(dist_event(a, Phase::Progress, t));
            }
            return;
        }
        if w.sources.len() >= need_sources && w.ports.len() >= need_ports {
            let id = self.next_id;
            self.next_id += 1;
            let traits = w.traits.clone();
            let mut addrs = BTreeSet::new();
            addrs.insert(p.dst);
            let a = DistAlarm {
                id,
                started_ms: w.entries.front().map_or(t, |e| e.0),
                detected_ms: t,
                last_ms: t,
                last_report_ms: t,
                probes_to_detect: w.entries.len() as u64,
                probes: w.entries.len() as u64,
                sources: w.sources.keys().copied().take(MAX_DIST_SOURCES).collect(),
                sources_more: 0,
                ports: w.ports.keys().copied().collect(),
                addrs,
                traits,
                reported: (w.ports.len(), w.sources.len()),
            };
            out.push(dist_event(&a, Phase::Start, t));
            w.alarm = Some(a);
        }
    }

    /// Lets time pass: ends the scans whose sources went quiet, forgets quiet sources.
    pub fn tick(&mut self, t: i64, out: &mut Vec<ScanEvent>) {
        let idle = secs_ms(self.cfg.idle_end_secs);
        for (ip, s) in &mut self.sources {
            let Some(a) = &s.alarm else { continue };
            let quiet = if a.detector == Detector::Slow {
                // Four mean gaps, at least idle_end, at most an hour.
                let gaps = i64::try_from(s.probes.max(2) - 1).unwrap_or(i64::MAX);
                ((s.last_ms - s.first_ms) / gaps * 4).clamp(idle, idle.max(3_600_000))
            } else {
                idle
            };
            if t - s.last_ms >= quiet {
                out.push(source_event(*ip, s, Phase::End, t));
                self.contacts_total = self.contacts_total.saturating_sub(s.contacts.len());
                s.restart(t);
            }
        }
        for w in self.shapes.values_mut() {
            if let Some(a) = &w.alarm {
                if t - a.last_ms >= idle {
                    out.push(dist_event(a, Phase::End, t));
                    w.alarm = None;
                    w.entries.clear();
                    w.sources.clear();
                    w.ports.clear();
                    w.traits = Traits::default();
                }
            }
        }
        if t.saturating_sub(self.last_sweep_ms) >= 10_000 {
            self.last_sweep_ms = t;
            let forget = secs_ms(self.cfg.forget_secs);
            let mut freed = 0;
            self.sources.retain(|_, s| {
                let keep = s.alarm.is_some() || t - s.last_ms < forget;
                if !keep {
                    freed += s.contacts.len();
                }
                keep
            });
            self.contacts_total = self.contacts_total.saturating_sub(freed);
            let window = secs_ms(self.cfg.window_secs);
            self.shapes.retain(|_, w| {
                w.alarm.is_some() || w.entries.back().is_some_and(|e| t - e.0 <= window)
            });
        }
    }

    /// Makes room for a new source: forgets the least recently active tenth of those not
    /// alarmed (or, when every one is, the least recently active tenth, each with its end
    /// event).
    fn evict(&mut self, t: i64, out: &mut Vec<ScanEvent>) {
        let n = (self.cfg.max_sources / 10).max(1);
        let mut quiet: Vec<(i64, IpAddr)> = self
            .sources
            .iter()
            .filter(|(_, s)| s.alarm.is_none())
            .map(|(ip, s)| (s.last_ms, *ip))
            .collect();
        if quiet.len() < n {
            quiet = self
                .sources
                .iter()
                .map(|(ip, s)| (s.last_ms, *ip))
                .collect();
        }
        let n = n.min(quiet.len());
        if n == 0 {
            return;
        }
        quiet.select_nth_unstable(n - 1);
        for (_, ip) in &quiet[..n] {
            if let Some(s) = self.sources.remove(ip) {
                self.contacts_total = self.contacts_total.saturating_sub(s.contacts.len());
                // A scan forgotten for room still ends, for whoever recorded its start.
                if s.alarm.is_some() {
                    out.push(source_event(*ip, &s, Phase::End, t));
                }
            }
        }
    }

    /// The scans going on now, as progress events (for a status view).
    pub fn ongoing(&self, t: i64) -> Vec<ScanEvent> {
        let mut v: Vec<ScanEvent> = self
            .sources
            .iter()
            .filter(|(_, s)| s.alarm.is_some())
            .map(|(ip, s)| source_event(*ip, s, Phase::Progress, t))
            .collect();
        v.extend(
            self.shapes
                .values()
                .filter_map(|w| w.alarm.as_ref())
                .map(|a| dist_event(a, Phase::Progress, t)),
        );
        v.sort_by_key(|e| e.id);
        v
    }
}

fn dec<K: Hash + Eq>(m: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = m.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            m.remove(k);
        }
    }
}

fn source_event(ip: IpAddr, s: &Source, phase: Phase, t: i64) -> ScanEvent {
    let a = s.alarm.as_ref().expect("an alarmed source");
    ScanEvent {
        id: a.id,
        phase,
        ts_ms: t,
        sources: vec![ip],
        sources_total: 1,
        detector: a.detector,
        kinds: s.traits.kinds(),
        tool: s.traits.tool(),
        ports: s.ports.iter().take(MAX_LISTED_PORTS).copied().collect(),
        ports_total: s.ports.len(),
        addresses: s.addrs.iter().take(MAX_LISTED_ADDRS).copied().collect(),
        addresses_total: s.addrs.len(),
        probes: s.probes,
        failed: s.failed,
        probes_to_detect: a.probes_to_detect,
        started_ms: s.first_ms,
        detected_ms: a.detected_ms,
        last_ms: s.last_ms,
    }
}

fn dist_event(a: &DistAlarm, phase: Phase, t: i64) -> ScanEvent {
    ScanEvent {
        id: a.id,
        phase,
        ts_ms: t,
        sources: a.sources.iter().take(MAX_LISTED_SOURCES).copied().collect(),
        sources_total: a.sources.len() + usize::try_from(a.sources_more).unwrap_or(usize::MAX),
        detector: Detector::Distributed,
        kinds: a.traits.kinds(),
        tool: a.traits.tool(),
        ports: a.ports.iter().take(MAX_LISTED_PORTS).copied().collect(),
        ports_total: a.ports.len(),
        addresses: a.addrs.iter().take(MAX_LISTED_ADDRS).copied().collect(),
        addresses_total: a.addrs.len(),
        probes: a.probes,
        failed: a.probes,
        probes_to_detect: a.probes_to_detect,
        started_ms: a.started_ms,
        detected_ms: a.detected_ms,
        last_ms: a.last_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::flags;
    use crate::packet::parse;
    use crate::packet::tests::{tcp4, LINUX_SYN_OPTIONS};

    const MSS: [u8; 4] = [2, 4, 0x05, 0xb4];

    fn nmap_syn(src: u8, port: u16, ttl: u8) -> Packet {
        parse(&tcp4(
            [198, 18, 9, src],
            [198, 18, 0, 2],
            55990,
            port,
            flags::SYN,
            ttl,
            1,
            1024,
            &MSS,
        ))
        .unwrap()
    }

    fn client_syn(src: u8, sport: u16, port: u16) -> Packet {
        parse(&tcp4(
            [198, 18, 9, src],
            [198, 18, 0, 2],
            sport,
            port,
            flags::SYN,
            64,
            1,
            64240,
            &LINUX_SYN_OPTIONS,
        ))
        .unwrap()
    }

    fn feed(s: &mut Sentry, p: Packet, success: bool, t: i64) -> Vec<ScanEvent> {
        let mut out = Vec::new();
        s.observe(&Contact { packet: p, success }, t, &mut out);
        out
    }

    #[test]
    fn a_syn_scan_of_closed_ports_is_found_in_five_probes() {
        let mut s = Sentry::new(Thresholds::default());
        let mut events = Vec::new();
        for (i, port) in [22u16, 80, 443, 3306, 5432, 8080, 25, 110]
            .into_iter()
            .enumerate()
        {
            let ttl = 37 + u8::try_from(i * 5).unwrap();
            // 22 and 80 listen; the rest do not.
            events.extend(feed(
                &mut s,
                nmap_syn(5, port, ttl),
                port < 100 && port != 25,
                1000,
            ));
        }
        let start: Vec<_> = events.iter().filter(|e| e.phase == Phase::Start).collect();
        assert_eq!(start.len(), 1, "{events:#?}");
        let e = start[0];
        assert_eq!(e.detector, Detector::Trw);
        // Two successes then six failures: (6 - 2) steps of ln 4 > ln 99 only at the sixth.
        assert_eq!(e.probes_to_detect, 8);
        assert_eq!(e.kinds, vec![ScanKind::Syn]);
        assert_eq!(e.tool.as_ref().unwrap().tool, crate::traits::Tool::Nmap);
        assert_eq!(e.sources, vec!["198.18.9.5".parse::<IpAddr>().unwrap()]);
        // The scan ends after idle_end of quiet, and a new one gets a new id.
        let mut out = Vec::new();
        s.tick(1000 + 29_000, &mut out);
        assert!(out.is_empty());
        s.tick(1000 + 30_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].phase, Phase::End);
        assert_eq!(out[0].ports_total, 8);
        let mut again = Vec::new();
        for port in 1000..1010 {
            again.extend(feed(&mut s, nmap_syn(5, port, 40), false, 40_000));
        }
        let second: Vec<_> = again.iter().filter(|e| e.phase == Phase::Start).collect();
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].id, e.id);
    }

    #[test]
    fn ordinary_clients_do_not_alarm() {
        let mut s = Sentry::new(Thresholds::default());
        let mut events = Vec::new();
        let mut t = 0;
        // Many clients hitting two open ports hard, one of them also trying a closed
        // port now and then (the same port: one first contact).
        for round in 0..2000u32 {
            for src in 1..=50u8 {
                let sport = 30000 + u16::try_from(round % 30000).unwrap();
                events.extend(feed(&mut s, client_syn(src, sport, 443), true, t));
                events.extend(feed(&mut s, client_syn(src, sport, 80), true, t));
                if round % 100 == 0 {
                    events.extend(feed(&mut s, client_syn(src, sport, 8443), false, t));
                }
            }
            t += 50;
            let mut out = Vec::new();
            s.tick(t, &mut out);
            events.extend(out);
        }
        // A client that tries four closed ports once (a probe of its own config).
        for port in [5432, 6379, 11211, 27017] {
            events.extend(feed(&mut s, client_syn(77, 40000, port), false, t));
        }
        assert!(events.is_empty(), "{events:#?}");
    }

    #[test]
    fn connections_to_the_ports_a_syn_scan_found_open_are_version_detection() {
        let mut s = Sentry::new(Thresholds::default());
        let mut events = Vec::new();
        for port in 1..=200u16 {
            events.extend(feed(
                &mut s,
                nmap_syn(7, port, 40 + u8::try_from(port % 20).unwrap()),
                port == 22 || port == 80,
                1000,
            ));
        }
        for port in [22u16, 80] {
            events.extend(feed(&mut s, client_syn(7, 41000 + port, port), true, 2000));
        }
        let mut out = Vec::new();
        s.tick(40_000, &mut out);
        let end = out.iter().find(|e| e.phase == Phase::End).expect("an end");
        assert_eq!(
            end.kinds,
            vec![ScanKind::Syn, ScanKind::Version],
            "{end:#?}"
        );
    }

    #[test]
    fn a_busy_clients_rare_failures_never_add_up() {
        let mut s = Sentry::new(Thresholds::default());
        let mut events = Vec::new();
        let mut t = 0i64;
        // Ten hours: a busy client of two open ports (repeats, all day long) that tries a
        // new closed port every eight minutes (a typo, a mail client's autoconfig).
        for i in 0..75u16 {
            for k in 0..50u16 {
                events.extend(feed(&mut s, client_syn(21, 30000 + k, 443), true, t));
                events.extend(feed(&mut s, client_syn(21, 30000 + k, 80), true, t + 1));
            }
            events.extend(feed(&mut s, client_syn(21, 40000, 2000 + i), false, t + 2));
            t += 8 * 60_000;
            let mut out = Vec::new();
            s.tick(t, &mut out);
            events.extend(out);
        }
        assert!(events.is_empty(), "{events:#?}");
    }

    #[test]
    fn many_ports_that_all_answer_are_a_vertical_scan() {
        let mut s = Sentry::new(Thresholds::default());
        let mut events = Vec::new();
        // Open ports weigh half: 80 of them within a minute.
        for port in 1..=100u16 {
            events.extend(feed(
                &mut s,
                client_syn(9, 40000, port),
                true,
                i64::from(port) * 10,
            ));
        }
        let start: Vec<_> = events.iter().filter(|e| e.phase == Phase::Start).collect();
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].detector, Detector::Vertical);
        assert_eq!(start[0].kinds, vec![ScanKind::Connect]);
        // Ascending connects: RustScan's trait.
        assert_eq!(
            start[0].tool.as_ref().map(|g| g.tool),
            Some(crate::traits::Tool::Rustscan)
        );
    }

    #[test]
    fn a_slow_scan_with_successes_between_is_found_by_its_score() {
        let mut s = Sentry::new(Thresholds::default());
        let mut events = Vec::new();
        let mut t = 0i64;
        let mut port = 1000u16;
        // Every 3 minutes: one open port, then one closed port: TRW never moves far.
        for _ in 0..40 {
            events.extend(feed(&mut s, nmap_syn(11, 22 + port, 50), true, t));
            port += 1;
            events.extend(feed(&mut s, nmap_syn(11, port, 50), false, t + 1000));
            port += 1;
            t += 180_000;
            let mut out = Vec::new();
            s.tick(t, &mut out);
            events.extend(out);
        }
        let start: Vec<_> = events.iter().filter(|e| e.phase == Phase::Start).collect();
        assert_eq!(start.len(), 1, "{events:#?}");
        assert_eq!(start[0].detector, Detector::Slow);
        // Its gaps are 3 minutes: the scan does not end between probes.
        assert!(!events.iter().any(|e| e.phase == Phase::End));
    }

    #[test]
    fn many_sources_of_one_shape_are_one_distributed_scan() {
        let mut s = Sentry::new(Thresholds::default());
        let mut events = Vec::new();
        // Ten sources, three closed ports each: none is a scanner alone.
        for src in 1..=10u8 {
            for k in 0..3u16 {
                let port = u16::from(src) * 10 + k;
                events.extend(feed(
                    &mut s,
                    nmap_syn(src, port, 40 + u8::try_from(k).unwrap()),
                    false,
                    100 * i64::from(src),
                ));
            }
        }
        let start: Vec<_> = events.iter().filter(|e| e.phase == Phase::Start).collect();
        assert_eq!(start.len(), 1, "{events:#?}");
        assert_eq!(start[0].detector, Detector::Distributed);
        assert!(start[0].sources_total >= 4);
        assert!(start[0].ports_total >= 20);
        let mut out = Vec::new();
        s.tick(100_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].phase, Phase::End);
        assert_eq!(out[0].sources_total, 10);
    }

    #[test]
    fn memory_is_bounded_by_max_sources() {
        let cfg = Thresholds {
            max_sources: 1000,
            ..Thresholds::default()
        };
        let mut s = Sentry::new(cfg);
        for i in 0..20_000u32 {
            let mut p = client_syn(1, 40000, 80);
            p.src = IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + i));
            feed(&mut s, p, true, i64::from(i));
        }
        assert!(s.sources() <= 1000);
    }

    #[test]
    fn contacts_and_shapes_stay_bounded_under_crafted_floods() {
        let mut s = Sentry::new(Thresholds::default());
        let mut out = Vec::new();
        // 20 sources scanning every port (1.3 million contacts), packets of ever new shapes.
        for src in 0..20u8 {
            for port in 0..=u16::MAX {
                let mut p = nmap_syn(src, port, 50);
                p.window = port;
                s.observe(
                    &Contact {
                        packet: p,
                        success: false,
                    },
                    1000,
                    &mut out,
                );
            }
        }
        assert!(
            s.contacts_total <= MAX_CONTACTS_TOTAL + 20 * 16,
            "{}",
            s.contacts_total
        );
        let remembered: usize = s.sources.values().map(|x| x.contacts.len()).sum();
        assert_eq!(remembered, s.contacts_total);
        // When the scans end, the budget is given back.
        s.tick(1000 + 31_000, &mut out);
        assert_eq!(s.contacts_total, 0);

        // Spoofed sources, two probes each (none alarmed alone), of ever new shapes: the
        // distributed detector's shapes, windows and source lists stay bounded.
        let mut d = Sentry::new(Thresholds::default());
        for i in 0..20_000u32 {
            for k in 0..2u16 {
                let mut p = nmap_syn(1, 1000 + k, 50);
                p.src = IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + i));
                p.window = u16::try_from(i % 65_536).unwrap();
                p.dport = u16::try_from(i % 60_000).unwrap() + k;
                d.observe(
                    &Contact {
                        packet: p,
                        success: false,
                    },
                    50_000,
                    &mut out,
                );
            }
        }
        assert!(d.shapes.len() <= MAX_SHAPES + 1, "{}", d.shapes.len());
        for w in d.shapes.values() {
            assert!(w.entries.len() <= MAX_SHAPE_WINDOW);
            assert!(w.sources.len() <= MAX_SHAPE_WINDOW);
            if let Some(a) = &w.alarm {
                assert!(a.sources.len() <= MAX_DIST_SOURCES);
            }
        }
        assert!(
            d.shapes.values().any(|w| w.alarm.is_some()),
            "a spoofed wave of one shape is a distributed scan"
        );
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(Thresholds::default().validate().is_ok());
        let bad = [
            Thresholds {
                theta0: 1.5,
                ..Thresholds::default()
            },
            Thresholds {
                theta1: 0.9,
                ..Thresholds::default()
            },
            Thresholds {
                window_secs: f64::NAN,
                ..Thresholds::default()
            },
            Thresholds {
                vertical: 0,
                ..Thresholds::default()
            },
            Thresholds {
                max_sources: 0,
                ..Thresholds::default()
            },
            Thresholds {
                idle_end_secs: -1.0,
                ..Thresholds::default()
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
    }
}
