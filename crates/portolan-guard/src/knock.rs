//! Knock sequences: ports knocked on in order, within a time.
//!
//! A fixed sequence is the same every time: anyone who sees it can replay it, and a
//! spoofed packet from the knocker's address in the middle of it breaks it (knockd's
//! documented weaknesses, kept for clients that can do nothing else). A one-time sequence
//! is derived from a shared key and the period's number (HMAC-SHA256), so it changes every
//! period, and each one opens once: a captured sequence replayed is refused.
//!
//! A repeated knock on the port just knocked (a SYN the client's kernel sent again) does
//! not break a sequence. State is per source address and definition, bounded in count.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ring::hmac;

use crate::config::{Knock, KnockKind};
use crate::{PortProto, Rejection, L4};

/// Sources tracked at most (a flood of knocks from spoofed addresses evicts the oldest).
pub const MAX_TRACKED: usize = 65_536;

/// The one-time sequence of period number `period`: `steps` distinct TCP ports in
/// `range` (inclusive).
pub fn one_time_sequence(
    key: &[u8; 32],
    steps: u8,
    range: (u16, u16),
    period: u64,
) -> Vec<PortProto> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let span = u32::from(range.1 - range.0) + 1;
    let mut out: Vec<PortProto> = Vec::with_capacity(usize::from(steps));
    let mut counter = 0u32;
    while out.len() < usize::from(steps) && counter < 64 {
        let mut msg = Vec::with_capacity(26);
        msg.extend_from_slice(b"portolan knock");
        msg.extend_from_slice(&period.to_be_bytes());
        msg.extend_from_slice(&counter.to_be_bytes());
        counter += 1;
        let tag = hmac::sign(&k, &msg);
        let v = u32::from_be_bytes([
            tag.as_ref()[0],
            tag.as_ref()[1],
            tag.as_ref()[2],
            tag.as_ref()[3],
        ]);
        // span <= 65535 and v % span < span: the sum stays within u16.
        #[allow(clippy::cast_possible_truncation)]
        let port = range.0 + (v % span) as u16;
        let p = PortProto {
            proto: L4::Tcp,
            port,
        };
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The period number of a Unix time.
pub fn period_of(unix: i64, period: Duration) -> u64 {
    u64::try_from(unix).unwrap_or(0) / period.as_secs().max(1)
}

#[derive(Debug, Clone)]
struct Progress {
    /// Steps matched so far.
    next: usize,
    started: Instant,
    /// For one-time sequences: the period whose sequence this is.
    period: u64,
}

/// What one knock packet did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Part of a sequence (or not a knock port of any definition).
    Nothing,
    /// The sequence of definition `knock` is complete: open its ports for the source.
    Complete { knock: usize },
    /// A sequence went wrong (out of order, too slow, or a one-time sequence used twice).
    Rejected { knock: usize, why: Rejection },
}

#[derive(Debug)]
pub struct Tracker {
    defs: Vec<Knock>,
    state: HashMap<(IpAddr, usize), Progress>,
    /// Sequences started, oldest first, for eviction in constant time (an entry whose
    /// start no longer matches the state is stale and skipped).
    order: VecDeque<((IpAddr, usize), Instant)>,
    used: HashSet<(usize, u64)>,
    /// One-time sequences by (definition, period): computed once, not per packet.
    sequences: HashMap<(usize, u64), Vec<PortProto>>,
}

impl Tracker {
    pub fn new(defs: Vec<Knock>) -> Tracker {
        Tracker {
            defs,
            state: HashMap::new(),
            order: VecDeque::new(),
            used: HashSet::new(),
            sequences: HashMap::new(),
        }
    }

    pub fn defs(&self) -> &[Knock] {
        &self.defs
    }

    /// Sources with a sequence under way.
    pub fn tracked(&self) -> usize {
        self.state.len()
    }

    /// A knock packet from `src` to `port`. Returns the first thing it did.
    pub fn on_packet(&mut self, src: IpAddr, port: PortProto, now: Instant, unix: i64) -> Outcome {
        let mut result = Outcome::Nothing;
        for d in 0..self.defs.len() {
            let o = self.step(d, src, port, now, unix);
            if result == Outcome::Nothing {
                result = o;
            }
        }
        result
    }

    fn candidates(&mut self, d: usize, unix: i64) -> Vec<(u64, Vec<PortProto>)> {
        match &self.defs[d].kind {
            KnockKind::Fixed(seq) => vec![(0, seq.clone())],
            KnockKind::OneTime {
                key,
                steps,
                range,
                period,
            } => {
                let p = period_of(unix, *period);
                let (key, steps, range) = (*key, *steps, *range);
                if self.sequences.len() > 64 {
                    self.sequences.retain(|(_, q), _| q + 2 >= p);
                }
                [p.saturating_sub(1), p, p + 1]
                    .into_iter()
                    .map(|q| {
                        let seq = self
                            .sequences
                            .entry((d, q))
                            .or_insert_with(|| one_time_sequence(&key, steps, range, q));
                        (q, seq.clone())
                    })
                    .collect()
            }
        }
    }

    fn step(&mut self, d: usize, src: IpAddr, port: PortProto, now: Instant, unix: i64) -> Outcome {
        let within = self.defs[d].within;
        let cands = self.candidates(d, unix);
        if !cands.iter().any(|(_, s)| s.contains(&port)) {
            return Outcome::Nothing;
        }
        if let Some(st) = self.state.get(&(src, d)) {
            if now.duration_since(st.started) > within {
                self.state.remove(&(src, d));
            }
        }
        if let Some(st) = self.state.get(&(src, d)).cloned() {
            let seq = cands
                .iter()
                .find(|(q, _)| *q == st.period)
                .map(|(_, s)| s.clone());
            if let Some(seq) = seq {
                if seq.get(st.next) == Some(&port) {
                    if st.next + 1 == seq.len() {
                        self.state.remove(&(src, d));
                        if matches!(self.defs[d].kind, KnockKind::OneTime { .. }) {
                            if !self.used.insert((d, st.period)) {
                                return Outcome::Rejected {
                                    knock: d,
                                    why: Rejection::Replay,
                                };
                            }
                            self.used.retain(|(_, q)| *q + 2 >= st.period);
                        }
                        return Outcome::Complete { knock: d };
                    }
                    if let Some(s) = self.state.get_mut(&(src, d)) {
                        s.next += 1;
                    }
                    return Outcome::Nothing;
                }
                if st.next > 0 && seq.get(st.next - 1) == Some(&port) {
                    // The same knock again (a retransmitted SYN): not a new step.
                    return Outcome::Nothing;
                }
            }
        }
        // A first step starts (or restarts) a sequence; anything else breaks one.
        let had = self.state.remove(&(src, d)).is_some();
        if let Some((q, _)) = cands.iter().find(|(_, s)| s.first() == Some(&port)) {
            if self.state.len() >= MAX_TRACKED {
                self.evict();
            }
            self.order.push_back(((src, d), now));
            if self.order.len() > 4 * MAX_TRACKED {
                let state = &self.state;
                self.order
                    .retain(|(k, started)| state.get(k).is_some_and(|p| p.started == *started));
            }
            self.state.insert(
                (src, d),
                Progress {
                    next: 1,
                    started: now,
                    period: *q,
                },
            );
            return Outcome::Nothing;
        }
        if had {
            Outcome::Rejected {
                knock: d,
                why: Rejection::BadSequence,
            }
        } else {
            Outcome::Nothing
        }
    }

    /// Drops the oldest sequence under way.
    fn evict(&mut self) {
        while let Some((key, started)) = self.order.pop_front() {
            if self.state.get(&key).is_some_and(|p| p.started == started) {
                self.state.remove(&key);
                return;
            }
        }
    }

    /// Forgets sequences older than their definition allows.
    pub fn expire(&mut self, now: Instant) {
        let defs = &self.defs;
        self.state
            .retain(|(_, d), p| now.duration_since(p.started) <= defs[*d].within);
        let state = &self.state;
        self.order
            .retain(|(k, started)| state.get(k).is_some_and(|p| p.started == *started));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortProto {
        s.parse().unwrap()
    }

    fn fixed() -> Knock {
        Knock {
            name: "legacy".into(),
            kind: KnockKind::Fixed(vec![p("7000/tcp"), p("8000/udp"), p("9000/tcp")]),
            within: Duration::from_secs(5),
            open: vec![p("22/tcp")],
            open_for: Duration::from_secs(30),
        }
    }

    #[test]
    fn fixed_sequence() {
        let mut t = Tracker::new(vec![fixed()]);
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "198.18.0.3".parse().unwrap();
        let now = Instant::now();
        assert_eq!(t.on_packet(a, p("7000/tcp"), now, 0), Outcome::Nothing);
        assert_eq!(
            t.on_packet(a, p("7000/tcp"), now, 0),
            Outcome::Nothing,
            "retransmit"
        );
        assert_eq!(
            t.on_packet(b, p("8000/udp"), now, 0),
            Outcome::Nothing,
            "another source"
        );
        assert_eq!(t.on_packet(a, p("8000/udp"), now, 0), Outcome::Nothing);
        assert_eq!(
            t.on_packet(a, p("9000/tcp"), now, 0),
            Outcome::Complete { knock: 0 }
        );
        // Out of order breaks it.
        t.on_packet(a, p("7000/tcp"), now, 0);
        assert_eq!(
            t.on_packet(a, p("9000/tcp"), now, 0),
            Outcome::Rejected {
                knock: 0,
                why: Rejection::BadSequence
            }
        );
        // Too slow.
        t.on_packet(a, p("7000/tcp"), now, 0);
        t.on_packet(a, p("8000/udp"), now, 0);
        let late = now + Duration::from_secs(6);
        assert_eq!(t.on_packet(a, p("9000/tcp"), late, 0), Outcome::Nothing);
        // UDP 7000 is not TCP 7000.
        assert_eq!(t.on_packet(a, p("7000/udp"), now, 0), Outcome::Nothing);
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn one_time_sequences_change_and_open_once() {
        let key = [7u8; 32];
        let def = Knock {
            name: "otp".into(),
            kind: KnockKind::OneTime {
                key,
                steps: 3,
                range: (40000, 40999),
                period: Duration::from_secs(30),
            },
            within: Duration::from_secs(5),
            open: vec![p("22/tcp")],
            open_for: Duration::from_secs(30),
        };
        let s1 = one_time_sequence(&key, 3, (40000, 40999), 100);
        let s2 = one_time_sequence(&key, 3, (40000, 40999), 101);
        assert_eq!(s1.len(), 3);
        assert_ne!(s1, s2);
        assert!(s1.iter().all(|x| (40000..=40999).contains(&x.port)));
        let mut t = Tracker::new(vec![def]);
        let a: IpAddr = "2001:2::2".parse().unwrap();
        let now = Instant::now();
        let unix = 100 * 30 + 3;
        let mut last = Outcome::Nothing;
        for x in &s1 {
            last = t.on_packet(a, *x, now, unix);
        }
        assert_eq!(last, Outcome::Complete { knock: 0 });
        for x in &s1 {
            last = t.on_packet(a, *x, now, unix);
        }
        assert_eq!(
            last,
            Outcome::Rejected {
                knock: 0,
                why: Rejection::Replay
            }
        );
        // A sequence of a period long gone is not one.
        let old = one_time_sequence(&key, 3, (40000, 40999), 90);
        for x in &old {
            last = t.on_packet(a, *x, now, unix);
        }
        assert_ne!(last, Outcome::Complete { knock: 0 });
    }

    #[test]
    #[allow(clippy::cast_possible_truncation)]
    fn tracking_is_bounded() {
        let mut t = Tracker::new(vec![fixed()]);
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(
                0xc612_0000 | (i & 0xffff) | ((i >> 16) << 8),
            ));
            t.on_packet(a, p("7000/tcp"), now, 0);
        }
        assert!(t.tracked() <= MAX_TRACKED);
    }
}
