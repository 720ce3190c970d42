//! Reverse names of scanned hosts, from the system resolver (getnameinfo, so /etc/hosts,
//! DNS or whatever nsswitch.conf says), on a few threads. The caller waits a bounded time;
//! lookups still running then finish in the background and fill in late.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lookups in parallel at most.
const THREADS: usize = 16;
/// Hosts looked up at most (the first ones, in scan order).
pub const MAX_LOOKUPS: usize = 65_536;

#[derive(Debug, Default)]
struct State {
    queue: Vec<IpAddr>,
    names: HashMap<IpAddr, String>,
    /// Lookups not yet answered (queued or running).
    pending: usize,
}

/// Names found so far; cheap to clone and to query while lookups run.
#[derive(Debug, Clone, Default)]
pub struct ReverseNames {
    inner: Arc<(Mutex<State>, Condvar)>,
}

/// Whether `name` is a plausible host name: letters, digits, `-`, `_` and dots, at most
/// 253 bytes. Anything else from a PTR record is dropped, so no output format ever has to
/// carry control bytes or markup from the network.
pub fn plausible_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name.parse::<IpAddr>().is_err()
}

impl ReverseNames {
    /// Starts looking up `hosts` (at most [`MAX_LOOKUPS`]) in the background.
    pub fn start(hosts: &[IpAddr]) -> ReverseNames {
        let queue: Vec<IpAddr> = hosts.iter().take(MAX_LOOKUPS).rev().copied().collect();
        let n = queue.len();
        let me = ReverseNames {
            inner: Arc::new((
                Mutex::new(State {
                    queue,
                    names: HashMap::new(),
                    pending: n,
                }),
                Condvar::new(),
            )),
        };
        for _ in 0..THREADS.min(n) {
            let inner = Arc::clone(&me.inner);
            let spawned = std::thread::Builder::new()
                .name("portolan-rdns".into())
                .spawn(move || worker(&inner));
            if spawned.is_err() {
                break; // the threads that did start drain the queue
            }
        }
        me
    }

    /// Waits until every lookup is answered or `limit` has passed.
    pub fn wait(&self, limit: Duration) {
        let (lock, cv) = &*self.inner;
        let deadline = Instant::now() + limit;
        let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while st.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = cv
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The name of `ip`, if one was found by now.
    pub fn get(&self, ip: IpAddr) -> Option<String> {
        let st = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        st.names.get(&ip).cloned()
    }
}

fn worker(inner: &(Mutex<State>, Condvar)) {
    let (lock, cv) = inner;
    loop {
        let Some(ip) = lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queue
            .pop()
        else {
            return;
        };
        let name = dns_lookup::lookup_addr(&ip)
            .ok()
            .map(|n| n.trim_end_matches('.').to_owned())
            .filter(|n| plausible_name(n));
        let mut st = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = name {
            st.names.insert(ip, n);
        }
        st.pending -= 1;
        if st.pending == 0 {
            cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_network_are_checked() {
        assert!(plausible_name("web-1.example.test"));
        assert!(plausible_name("_gateway"));
        assert!(!plausible_name(""));
        assert!(!plausible_name("198.18.0.1"));
        assert!(!plausible_name("::1"));
        assert!(!plausible_name("evil\u{1b}]0;title\u{7}.test"));
        assert!(!plausible_name("a b"));
        assert!(!plausible_name("<script>"));
        assert!(!plausible_name(&"a".repeat(254)));
    }

    #[test]
    fn localhost_resolves_from_the_hosts_file_and_wait_is_bounded() {
        // 127.0.0.1 is named in /etc/hosts on every system this runs on; no DNS involved.
        let r = ReverseNames::start(&[IpAddr::from([127, 0, 0, 1])]);
        let t = Instant::now();
        r.wait(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(r.get(IpAddr::from([127, 0, 0, 1])).is_some());
        // Nothing queued: wait returns at once.
        let empty = ReverseNames::start(&[]);
        let t = Instant::now();
        empty.wait(Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
