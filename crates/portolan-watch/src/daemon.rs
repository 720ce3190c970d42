//! The watch loop: sample on a fixed beat, turn samples into events, record them, alert,
//! and keep the metrics current. Sampling never waits on a sink: the webhook and `--exec`
//! run on their own threads (`alert`), and a store that fails keeps its events in memory
//! (bounded) until it takes them again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::alert::Alerts;
use crate::metrics::Metrics;
use crate::model::{now_ms, rfc3339_ms, Event, EventKind, Listener};
use crate::sampler::Sampler;
use crate::store::Store;
use crate::tracker::Tracker;

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The name events are recorded under.
    pub host: String,
    /// Time between samples.
    pub interval: Duration,
    /// How long a vanished listener may stay away and still be a restart.
    pub grace: Duration,
    /// How often every owner is looked up again, not only new sockets'.
    pub refresh: Duration,
    /// Stop after this many samples (for tests and one-off runs); `None` runs until told.
    pub samples: Option<u64>,
    /// Stop after this long; `None` runs until told.
    pub duration: Option<Duration>,
}

/// What a run did, for the caller's last words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub samples: u64,
    pub events: u64,
    /// Events still waiting for a store that kept failing when the run ended.
    pub unrecorded: usize,
}

/// Events kept for a failing store, at most: about 100 MB of the worst case.
const MAX_UNRECORDED: usize = 200_000;

/// How often a waiting daemon looks at its stop flag: the latency of SIGTERM, against
/// wake-ups while idle (5 a second).
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Which events reach the alert sinks (all of them reach the store and the metrics).
pub type AlertFilter<'a> = &'a dyn Fn(&Event) -> bool;

/// Watches until `stop` is set, the sample count or the duration runs out.
pub fn run(
    cfg: &WatchConfig,
    store: &mut dyn Store,
    alerts: &mut Alerts,
    metrics: &Metrics,
    filter: AlertFilter<'_>,
    stop: &AtomicBool,
) -> Summary {
    let mut sampler = Sampler::new(cfg.refresh);
    let grace_ms = i64::try_from(cfg.grace.as_millis()).unwrap_or(i64::MAX);
    let mut tracker = Tracker::new(&cfg.host, grace_ms);
    let mut summary = Summary::default();
    let mut pending: VecDeque<(i64, Vec<Event>)> = VecDeque::new();
    let mut store_down = false;
    let started = Instant::now();

    let previous = match store.last_state(&cfg.host) {
        Ok(p) => p,
        Err(e) => {
            warn(&format!(
                "cannot read the last state from the store: {e}; starting afresh"
            ));
            metrics.store_error();
            None
        }
    };
    let mut first = true;
    loop {
        let t0 = Instant::now();
        let ts = now_ms();
        match sampler.sample() {
            Ok(listeners) => {
                let events = if first {
                    first = false;
                    first_events(&mut tracker, ts, &listeners, previous.as_ref())
                } else {
                    tracker.step(ts, &listeners)
                };
                summary.samples += 1;
                summary.events += events.len() as u64;
                metrics.count_events(&events);
                let alerted: Vec<Event> = events
                    .iter()
                    .filter(|e| e.kind != EventKind::Present && filter(e))
                    .cloned()
                    .collect();
                // The store first: it is the record. A daemon killed between the two
                // loses an alert, never a recorded change.
                pending.push_back((ts, events));
                flush(store, &cfg.host, &mut pending, &mut store_down, metrics);
                if !alerted.is_empty() {
                    alerts.send(&alerted);
                }
                metrics.observe_sample(&listeners, t0.elapsed(), ts);
            }
            Err(e) => {
                warn(&format!(
                    "sampling failed: {e}; trying again at the next beat"
                ));
            }
        }
        if cfg.samples.is_some_and(|n| summary.samples >= n)
            || cfg.duration.is_some_and(|d| started.elapsed() >= d)
            || stop.load(Ordering::Relaxed)
        {
            break;
        }
        // A fixed beat: the next sample is due at the next multiple of the interval since
        // the start; beats missed while a sample ran long are skipped, not crammed in.
        let beats = started.elapsed().as_nanos() / cfg.interval.as_nanos().max(1) + 1;
        let due = cfg
            .interval
            .saturating_mul(u32::try_from(beats).unwrap_or(u32::MAX));
        // The signal handler only sets `stop`: look at it every STOP_CHECK while waiting.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < due {
            let left = due.saturating_sub(started.elapsed());
            std::thread::sleep(left.min(STOP_CHECK));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    let last = tracker.finish();
    if !last.is_empty() {
        summary.events += last.len() as u64;
        metrics.count_events(&last);
        let alerted: Vec<Event> = last.iter().filter(|e| filter(e)).cloned().collect();
        if !alerted.is_empty() {
            alerts.send(&alerted);
        }
        pending.push_back((now_ms(), last));
    }
    flush(store, &cfg.host, &mut pending, &mut store_down, metrics);
    summary.unrecorded = pending.iter().map(|(_, e)| e.len()).sum();
    summary
}

fn first_events(
    tracker: &mut Tracker,
    ts: i64,
    listeners: &[Listener],
    previous: Option<&crate::store::HostState>,
) -> Vec<Event> {
    match previous {
        None => tracker.baseline(ts, listeners),
        Some(p) => {
            tracker.resume(&p.listeners);
            let note = format!(
                "changed while nothing was watching (between {} and {})",
                rfc3339_ms(p.last_sample_ms),
                rfc3339_ms(ts)
            );
            tracker.catch_up(ts, listeners, &note)
        }
    }
}

/// Records waiting samples in order; on failure keeps them (dropping the oldest beyond
/// the bound) and says so once per outage.
fn flush(
    store: &mut dyn Store,
    host: &str,
    pending: &mut VecDeque<(i64, Vec<Event>)>,
    down: &mut bool,
    metrics: &Metrics,
) {
    while let Some((ts, events)) = pending.front() {
        match store.record(host, *ts, events) {
            Ok(()) => {
                pending.pop_front();
                if *down {
                    *down = false;
                    warn(&format!(
                        "the store {} takes events again",
                        store.describe()
                    ));
                }
            }
            Err(e) => {
                metrics.store_error();
                if !*down {
                    *down = true;
                    warn(&format!(
                        "cannot record events: {e}; keeping them in memory and trying again at each sample"
                    ));
                }
                let mut held: usize = pending.iter().map(|(_, e)| e.len()).sum();
                while held > MAX_UNRECORDED && pending.len() > 1 {
                    if let Some((_, dropped)) = pending.pop_front() {
                        held -= dropped.len();
                        warn(&format!(
                            "dropped {} unrecorded event(s): more than {MAX_UNRECORDED} waited for the store",
                            dropped.len()
                        ));
                    }
                }
                return;
            }
        }
    }
}

/// The daemon's own warnings: the alert sinks' warning line (journal priority under
/// systemd), escaped, since errors quote the kernel, files and servers.
fn warn(msg: &str) {
    crate::alert::warn(
        crate::alert::stderr_is_journal(),
        &portolan_core::escape::for_terminal(msg),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventFilter, HostInfo, HostState, StateAt, StoreError};

    /// A store that refuses the first `fail` writes (as PostgreSQL does while a session is
    /// lost), then records.
    struct Flaky {
        fail: usize,
        recorded: Vec<(i64, usize)>,
    }

    impl Store for Flaky {
        fn record(&mut self, _: &str, ts_ms: i64, events: &[Event]) -> Result<(), StoreError> {
            if self.fail > 0 {
                self.fail -= 1;
                return Err(StoreError::Failed {
                    store: "flaky".into(),
                    action: "recording a sample",
                    reason: "terminating connection due to administrator command (SQLSTATE 57P01)"
                        .into(),
                });
            }
            self.recorded.push((ts_ms, events.len()));
            Ok(())
        }
        fn last_state(&mut self, _: &str) -> Result<Option<HostState>, StoreError> {
            Ok(None)
        }
        fn events(&mut self, _: &EventFilter) -> Result<Vec<Event>, StoreError> {
            Ok(Vec::new())
        }
        fn state_at(&mut self, _: &str, _: i64) -> Result<StateAt, StoreError> {
            Ok(StateAt {
                listeners: Vec::new(),
                history_starts_ms: None,
            })
        }
        fn hosts(&mut self) -> Result<Vec<HostInfo>, StoreError> {
            Ok(Vec::new())
        }
        fn record_scan(&mut self, _: &crate::model::ScanRecord) -> Result<(), StoreError> {
            Ok(())
        }
        fn scans(
            &mut self,
            _: &crate::store::ScanFilter,
        ) -> Result<Vec<crate::model::ScanRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn claim_host(&mut self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    #[test]
    fn a_sample_the_store_refused_is_recorded_at_the_next_attempt_in_order() {
        let metrics = Metrics::new("t");
        let mut store = Flaky {
            fail: 2,
            recorded: Vec::new(),
        };
        let mut pending = VecDeque::new();
        let mut down = false;
        let l = Listener::new(
            portolan_core::Protocol::Tcp,
            "127.0.0.1:80".parse().unwrap(),
            crate::model::Owner::default(),
        );
        let ev = |ts| Event {
            ts_ms: ts,
            host: "h".into(),
            kind: EventKind::Opened,
            listener: l.clone(),
            previous: None,
            note: None,
        };
        for ts in 1..=3 {
            pending.push_back((ts, vec![ev(ts)]));
            flush(&mut store, "h", &mut pending, &mut down, &metrics);
        }
        assert_eq!(store.recorded, [(1, 1), (2, 1), (3, 1)]);
        assert!(pending.is_empty() && !down);
    }
}
