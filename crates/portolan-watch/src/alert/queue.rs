//! The bounded queue between a sender ([`super::Alerts::send`], [`super::Webhook::send`])
//! and a worker thread. It holds any kind of event (`T`): listener events for `--exec`,
//! whatever the webhook's user sends. Pushing never waits: when the queue is full the
//! oldest events give way. Shutdown gives the worker a
//! deadline; whatever is still queued or in flight when it passes is counted as dropped,
//! exactly once, under the queue's lock.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    cap: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Events the worker has taken and not yet accounted for.
    in_flight: usize,
    /// Set by shutdown: deliver until then, then stop.
    deadline: Option<Instant>,
    /// Shutdown gave up waiting and counted what was left as dropped: the worker must not
    /// count its in-flight batch again.
    abandoned: bool,
    /// The worker has left its loop.
    done: bool,
    /// A drop burst is under way (one warning per burst).
    overflowing: bool,
}

/// What a push did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pushed {
    /// Old events pushed out to make room.
    pub dropped: usize,
    /// This push began a burst of drops (the previous push had room).
    pub burst_began: bool,
    /// Events queued after the push.
    pub queued: usize,
}

impl<T> Queue<T> {
    pub(crate) fn new(cap: usize) -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                in_flight: 0,
                deadline: None,
                abandoned: false,
                done: false,
                overflowing: false,
            }),
            cv: Condvar::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `events`, dropping the oldest queued ones beyond the capacity. After
    /// shutdown has begun nothing more is accepted (every event offered is dropped).
    pub(crate) fn push<'a>(&self, events: impl IntoIterator<Item = &'a T>) -> Pushed
    where
        T: Clone + 'a,
    {
        let mut s = self.lock();
        let mut dropped = 0;
        let mut offered = false;
        for e in events {
            offered = true;
            if s.deadline.is_some() {
                dropped += 1;
                continue;
            }
            if s.items.len() >= self.cap {
                s.items.pop_front();
                dropped += 1;
            }
            s.items.push_back(e.clone());
        }
        let burst_began = dropped > 0 && !s.overflowing;
        if offered {
            s.overflowing = dropped > 0;
        }
        let queued = s.items.len();
        drop(s);
        if offered {
            self.cv.notify_all();
        }
        Pushed {
            dropped,
            burst_began,
            queued,
        }
    }

    /// Waits for events and takes up to `max` of them, oldest first. `None` when the worker
    /// should stop: shutdown began and the queue is empty, or its deadline has passed (the
    /// events left are then counted through `on_dropped`).
    pub(crate) fn take(&self, max: usize, on_dropped: impl FnOnce(usize)) -> Option<Vec<T>> {
        let mut s = self.lock();
        loop {
            if let Some(deadline) = s.deadline {
                if s.items.is_empty() || Instant::now() >= deadline || s.abandoned {
                    let left = s.items.len();
                    s.items.clear();
                    drop(s);
                    if left > 0 {
                        on_dropped(left);
                    }
                    return None;
                }
            }
            if !s.items.is_empty() {
                let n = s.items.len().min(max);
                let batch: Vec<T> = s.items.drain(..n).collect();
                s.in_flight += n;
                return Some(batch);
            }
            s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Events queued now.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// The worker is done with `n` taken events: `account` counts them unless shutdown
    /// already counted them as dropped.
    pub(crate) fn finish(&self, n: usize, account: impl FnOnce()) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(n);
        if !s.abandoned {
            account();
        }
    }

    /// The shutdown deadline, once shutdown has begun.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }

    /// Sleeps until `until`, waking early when shutdown begins. Returns false when the
    /// sleep would go past the shutdown deadline (the caller should give up).
    pub(crate) fn sleep_until(&self, until: Instant) -> bool {
        let mut s = self.lock();
        loop {
            if let Some(d) = s.deadline {
                if until > d || s.abandoned {
                    return false;
                }
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            s = self
                .cv
                .wait_timeout(s, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Begins shutdown: the worker delivers until `deadline`, then stops. An earlier
    /// deadline already set is kept.
    pub(crate) fn close(&self, deadline: Instant) {
        let mut s = self.lock();
        if s.deadline.is_none_or(|d| deadline < d) {
            s.deadline = Some(deadline);
        }
        drop(s);
        self.cv.notify_all();
    }

    /// Called by the worker as it exits.
    pub(crate) fn mark_done(&self) {
        self.lock().done = true;
        self.cv.notify_all();
    }

    /// Waits until the worker has exited or `until` passes. If it has not exited, counts
    /// everything queued or in flight as dropped (`on_dropped`) and marks the queue
    /// abandoned so that the worker counts nothing more. True when the worker finished.
    pub(crate) fn wait_done(&self, until: Instant, on_dropped: impl FnOnce(usize)) -> bool {
        let mut s = self.lock();
        loop {
            if s.done {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                let left = s.items.len() + s.in_flight;
                s.items.clear();
                s.in_flight = 0;
                s.abandoned = true;
                drop(s);
                self.cv.notify_all();
                if left > 0 {
                    on_dropped(left);
                }
                return false;
            }
            s = self
                .cv
                .wait_timeout(s, (until - now).min(Duration::from_millis(100)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
