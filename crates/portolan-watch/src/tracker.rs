//! From samples to events. Pure: no clock, no I/O; the daemon gives each sample its time.
//!
//! A listener is known by its place (protocol, address, port). Between two samples:
//! - the same place with a new pid of the same program (service unit, else executable) is
//!   `restarted`; with another program or user, `owner_changed`;
//! - a place that disappears is held for the restart grace: if it comes back within it, the
//!   service restarted (one event, not `closed` + `opened`); if the same program opens the
//!   same port on another address meanwhile, that is `exposure_changed`; otherwise it is
//!   `closed`, dated when it was first missed;
//! - a new place is `opened`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::model::{Event, EventKind, Key, Listener, Owner, Previous};

/// The watcher's memory of what listens.
#[derive(Debug)]
pub struct Tracker {
    host: String,
    grace_ms: i64,
    current: BTreeMap<Key, Listener>,
    /// Places missed but still within the grace: the listener as last seen and when it
    /// was first missed.
    missing: BTreeMap<Key, (Listener, i64)>,
}

impl Tracker {
    /// A tracker with nothing known yet. `grace_ms` is how long a vanished listener may
    /// stay away and still count as restarted rather than closed.
    pub fn new(host: &str, grace_ms: i64) -> Tracker {
        Tracker {
            host: host.to_string(),
            grace_ms: grace_ms.max(0),
            current: BTreeMap::new(),
            missing: BTreeMap::new(),
        }
    }

    /// Knows `listeners` as the current state, as a store last recorded it.
    pub fn resume(&mut self, listeners: &[Listener]) {
        self.current = by_place(listeners);
        self.missing.clear();
    }

    /// Listeners known now (not counting those within the grace).
    pub fn current(&self) -> impl Iterator<Item = &Listener> {
        self.current.values()
    }

    /// The first sample on a host with no history: every listener is `present`.
    pub fn baseline(&mut self, ts_ms: i64, listeners: &[Listener]) -> Vec<Event> {
        self.current = by_place(listeners);
        self.missing.clear();
        self.current
            .values()
            .map(|l| self.event(ts_ms, EventKind::Present, l.clone(), None))
            .collect()
    }

    /// The events between the last sample and this one, taken at `ts_ms`.
    pub fn step(&mut self, ts_ms: i64, listeners: &[Listener]) -> Vec<Event> {
        self.step_with(ts_ms, listeners, self.grace_ms, None)
    }

    /// The first sample after watching resumed: changes since `resume` are dated now,
    /// carry `note`, and nothing waits for a grace (the gap was longer than any).
    pub fn catch_up(&mut self, ts_ms: i64, listeners: &[Listener], note: &str) -> Vec<Event> {
        self.step_with(ts_ms, listeners, 0, Some(note))
    }

    /// Watching stops: listeners still within their grace are closed, dated when they were
    /// first missed.
    pub fn finish(&mut self) -> Vec<Event> {
        let missing = std::mem::take(&mut self.missing);
        missing
            .into_values()
            .map(|(l, since)| self.event(since, EventKind::Closed, l, None))
            .collect()
    }

    fn step_with(
        &mut self,
        ts_ms: i64,
        listeners: &[Listener],
        grace_ms: i64,
        note: Option<&str>,
    ) -> Vec<Event> {
        let now = by_place(listeners);
        let mut events = Vec::new();
        let mut opened = Vec::new();
        for (k, l) in &now {
            let before = self
                .current
                .get(k)
                .cloned()
                .or_else(|| self.missing.remove(k).map(|(l, _)| l));
            match before {
                Some(b) => {
                    if let Some(kind) = owner_change(&b.owner, &l.owner) {
                        events.push(self.event(ts_ms, kind, l.clone(), Some(previous(&b))));
                    }
                }
                None => opened.push(l.clone()),
            }
        }
        let gone: Vec<Key> = self
            .current
            .keys()
            .filter(|k| !now.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(l) = self.current.remove(&k) {
                self.missing.insert(k, (l, ts_ms));
            }
        }
        for l in opened {
            if let Some(k) = self.moved_from(&l) {
                let (b, _) = self.missing.remove(&k).expect("a key just found");
                let kind = EventKind::ExposureChanged;
                events.push(self.event(ts_ms, kind, l, Some(previous(&b))));
            } else {
                events.push(self.event(ts_ms, EventKind::Opened, l, None));
            }
        }
        let expired: Vec<Key> = self
            .missing
            .iter()
            .filter(|(_, (_, since))| ts_ms - since >= grace_ms)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some((l, since)) = self.missing.remove(&k) {
                let at = if note.is_some() { ts_ms } else { since };
                events.push(self.event(at, EventKind::Closed, l, None));
            }
        }
        self.current = now;
        if let Some(n) = note {
            for e in &mut events {
                e.note = Some(n.to_string());
            }
        }
        events
    }

    /// A missed place of the same program, protocol and port as `l` on another address,
    /// the same address family first.
    fn moved_from(&self, l: &Listener) -> Option<Key> {
        let program = l.owner.program()?;
        let candidates = || {
            self.missing.iter().filter(|(k, (m, _))| {
                k.proto == l.proto
                    && k.port == l.port
                    && k.address != l.address
                    && m.owner.program() == Some(program)
            })
        };
        let family = |a: IpAddr| a.is_ipv4();
        candidates()
            .find(|(k, _)| family(k.address) == family(l.address))
            .or_else(|| candidates().next())
            .map(|(k, _)| *k)
    }

    fn event(
        &self,
        ts_ms: i64,
        kind: EventKind,
        listener: Listener,
        previous: Option<Previous>,
    ) -> Event {
        Event {
            ts_ms,
            host: self.host.clone(),
            kind,
            listener,
            previous,
            note: None,
        }
    }
}

/// How the holder of one place changed, if it did: another program or uid is an owner
/// change, the same program under another pid a restart.
pub fn owner_change(before: &Owner, now: &Owner) -> Option<EventKind> {
    if before.program() != now.program() || before.uid != now.uid {
        Some(EventKind::OwnerChanged)
    } else if before.pid != now.pid {
        Some(EventKind::Restarted)
    } else {
        None
    }
}

fn previous(l: &Listener) -> Previous {
    Previous {
        address: l.address,
        exposure: l.exposure,
        owner: l.owner.clone(),
    }
}

/// One listener per place. Several sockets on one place (`SO_REUSEPORT` workers) are one
/// listener, owned by the lowest pid.
pub fn by_place(listeners: &[Listener]) -> BTreeMap<Key, Listener> {
    let mut m: BTreeMap<Key, &Listener> = BTreeMap::new();
    for l in listeners {
        match m.get(&l.key()) {
            Some(have) if lower_pid(&have.owner, &l.owner) => {}
            _ => {
                m.insert(l.key(), l);
            }
        }
    }
    m.into_iter().map(|(k, l)| (k, l.clone())).collect()
}

fn lower_pid(a: &Owner, b: &Owner) -> bool {
    match (a.pid, b.pid) {
        (Some(x), Some(y)) => x <= y,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use portolan_core::{Exposure, Protocol};

    use super::*;

    fn l(addr: &str, port: u16, pid: u32, exe: &str) -> Listener {
        let address: IpAddr = addr.parse().unwrap();
        Listener {
            proto: Protocol::Tcp,
            address,
            port,
            exposure: Exposure::of(address),
            owner: Owner {
                pid: Some(pid),
                process: exe.rsplit('/').next().map(str::to_owned),
                exe: Some(exe.into()),
                uid: 0,
                ..Owner::default()
            },
        }
    }

    fn kinds(ev: &[Event]) -> Vec<(EventKind, u16)> {
        ev.iter().map(|e| (e.kind, e.listener.port)).collect()
    }

    #[test]
    fn first_sample_is_present_then_opened_and_closed() {
        let mut t = Tracker::new("h", 0);
        let ev = t.baseline(0, &[l("0.0.0.0", 22, 1, "/usr/sbin/sshd")]);
        assert_eq!(kinds(&ev), [(EventKind::Present, 22)]);
        let ev = t.step(
            2000,
            &[
                l("0.0.0.0", 22, 1, "/usr/sbin/sshd"),
                l("127.0.0.1", 3000, 7, "/usr/bin/node"),
            ],
        );
        assert_eq!(kinds(&ev), [(EventKind::Opened, 3000)]);
        let ev = t.step(4000, &[l("0.0.0.0", 22, 1, "/usr/sbin/sshd")]);
        assert_eq!(kinds(&ev), [(EventKind::Closed, 3000)]);
        assert_eq!(ev[0].ts_ms, 4000);
        assert!(t
            .step(6000, &[l("0.0.0.0", 22, 1, "/usr/sbin/sshd")])
            .is_empty());
    }

    #[test]
    fn a_restart_is_one_event_with_or_without_a_gap() {
        let mut t = Tracker::new("h", 10_000);
        t.baseline(0, &[l("0.0.0.0", 80, 10, "/usr/sbin/nginx")]);
        // Between two samples: new pid, same program.
        let ev = t.step(2000, &[l("0.0.0.0", 80, 11, "/usr/sbin/nginx")]);
        assert_eq!(kinds(&ev), [(EventKind::Restarted, 80)]);
        assert_eq!(ev[0].previous.as_ref().unwrap().owner.pid, Some(10));
        // Gone for a sample, back within the grace.
        assert!(t.step(4000, &[]).is_empty());
        let ev = t.step(6000, &[l("0.0.0.0", 80, 12, "/usr/sbin/nginx")]);
        assert_eq!(kinds(&ev), [(EventKind::Restarted, 80)]);
        // Gone longer than the grace: closed, dated when first missed.
        assert!(t.step(8000, &[]).is_empty());
        let ev = t.step(18_000, &[]);
        assert_eq!(kinds(&ev), [(EventKind::Closed, 80)]);
        assert_eq!(ev[0].ts_ms, 8000);
    }

    #[test]
    fn another_program_on_the_place_is_an_owner_change() {
        let mut t = Tracker::new("h", 5000);
        t.baseline(0, &[l("0.0.0.0", 8080, 10, "/usr/bin/java")]);
        let ev = t.step(2000, &[l("0.0.0.0", 8080, 20, "/usr/bin/python3")]);
        assert_eq!(kinds(&ev), [(EventKind::OwnerChanged, 8080)]);
        let mut other_user = l("0.0.0.0", 8080, 20, "/usr/bin/python3");
        other_user.owner.uid = 1000;
        let ev = t.step(4000, &[other_user]);
        assert_eq!(kinds(&ev), [(EventKind::OwnerChanged, 8080)]);
    }

    #[test]
    fn loopback_to_all_interfaces_is_an_exposure_change() {
        let mut t = Tracker::new("h", 0);
        t.baseline(0, &[l("127.0.0.1", 5000, 10, "/usr/bin/flask")]);
        let ev = t.step(2000, &[l("0.0.0.0", 5000, 11, "/usr/bin/flask")]);
        assert_eq!(kinds(&ev), [(EventKind::ExposureChanged, 5000)]);
        let p = ev[0].previous.as_ref().unwrap();
        assert_eq!(p.exposure, Exposure::Loopback);
        assert_eq!(ev[0].listener.exposure, Exposure::AllInterfaces);
        // Another program taking a port another left on another address is not a move.
        let ev = t.step(4000, &[l("127.0.0.1", 5000, 12, "/usr/bin/other")]);
        assert_eq!(
            kinds(&ev),
            [(EventKind::Opened, 5000), (EventKind::Closed, 5000)]
        );
    }

    #[test]
    fn dual_stack_moves_pair_by_family() {
        let mut t = Tracker::new("h", 0);
        let exe = "/usr/sbin/named";
        t.baseline(0, &[l("127.0.0.1", 53, 5, exe), l("::1", 53, 5, exe)]);
        let ev = t.step(2000, &[l("0.0.0.0", 53, 6, exe), l("::", 53, 6, exe)]);
        let moves: Vec<(String, String)> = ev
            .iter()
            .map(|e| {
                assert_eq!(e.kind, EventKind::ExposureChanged);
                (
                    e.previous.as_ref().unwrap().address.to_string(),
                    e.listener.address.to_string(),
                )
            })
            .collect();
        assert_eq!(
            moves,
            [
                ("127.0.0.1".to_string(), "0.0.0.0".to_string()),
                ("::1".to_string(), "::".to_string())
            ]
        );
    }

    #[test]
    fn reuseport_workers_are_one_listener() {
        let mut t = Tracker::new("h", 0);
        let ev = t.baseline(
            0,
            &[
                l("0.0.0.0", 443, 30, "/usr/sbin/nginx"),
                l("0.0.0.0", 443, 12, "/usr/sbin/nginx"),
                l("0.0.0.0", 443, 31, "/usr/sbin/nginx"),
            ],
        );
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].listener.owner.pid, Some(12));
    }

    #[test]
    fn catching_up_dates_changes_now_and_says_why() {
        let mut t = Tracker::new("h", 60_000);
        t.resume(&[
            l("0.0.0.0", 22, 1, "/usr/sbin/sshd"),
            l("0.0.0.0", 80, 2, "/usr/sbin/nginx"),
        ]);
        let ev = t.catch_up(
            100_000,
            &[l("0.0.0.0", 22, 3, "/usr/sbin/sshd")],
            "while not watching",
        );
        assert_eq!(
            kinds(&ev),
            [(EventKind::Restarted, 22), (EventKind::Closed, 80)]
        );
        assert!(ev
            .iter()
            .all(|e| e.ts_ms == 100_000 && e.note.as_deref() == Some("while not watching")));
    }

    #[test]
    fn finishing_closes_what_waits_in_the_grace() {
        let mut t = Tracker::new("h", 60_000);
        t.baseline(0, &[l("0.0.0.0", 80, 2, "/usr/sbin/nginx")]);
        assert!(t.step(2000, &[]).is_empty());
        let ev = t.finish();
        assert_eq!(kinds(&ev), [(EventKind::Closed, 80)]);
        assert_eq!(ev[0].ts_ms, 2000);
    }

    #[test]
    fn unknown_owners_never_count_as_the_same_program_on_another_address() {
        let mut t = Tracker::new("h", 0);
        let mut a = l("127.0.0.1", 9000, 1, "/x");
        a.owner = Owner::default();
        let mut b = l("0.0.0.0", 9000, 1, "/x");
        b.owner = Owner::default();
        t.baseline(0, &[a]);
        let ev = t.step(1000, &[b]);
        assert_eq!(
            kinds(&ev),
            [(EventKind::Opened, 9000), (EventKind::Closed, 9000)]
        );
    }
}
