//! The webhook sink: a handle ([`Webhook`]) whose `send` queues events without waiting,
//! and a worker thread that POSTs them in batches as `{"events":[...]}`, retried with
//! exponential backoff, never logging the URL's credentials or query. The events are of
//! any serializable kind: `portolan watch` sends its listener events, `portolan guard`
//! its decisions (JSON objects).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::queue::Queue;
use super::{warn, AlertError, Reporter, WebhookConfig, Worker};
use crate::metrics::Metrics;

/// Events per POST at most.
const MAX_BATCH: usize = 100;
/// The first backoff; each retry doubles it.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Backoff never grows beyond this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A `Retry-After` longer than this is cut to it.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// A validated webhook address.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// What is requested: the URL without its userinfo.
    url: String,
    /// What may be logged: `scheme://host:port/path`.
    pub(crate) shown: String,
    /// `Basic ...` from the URL's userinfo, which ureq does not turn into a header.
    auth: Option<String>,
    /// The parts of the URL that must never reach a log (userinfo, query), to scrub from
    /// error texts.
    secrets: Vec<String>,
}

/// Checks a webhook URL: http or https, with a host. The error never repeats the URL
/// itself (it may carry a token).
pub(crate) fn parse_url(url: &str) -> Result<Target, AlertError> {
    let bad = |why: String| AlertError::WebhookUrl(why);
    if !url.contains("://") {
        return Err(bad(
            "it has no scheme; write http://HOST/PATH or https://HOST/PATH".into(),
        ));
    }
    let uri: ureq::http::Uri = url
        .trim()
        .parse()
        .map_err(|e| bad(format!("not a valid URL ({e})")))?;
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        "" => {
            return Err(bad(
                "it has no scheme; write http://HOST/PATH or https://HOST/PATH".into(),
            ))
        }
        other => {
            return Err(bad(format!(
                "scheme {:?} is not supported; use http or https",
                portolan_core::escape::for_terminal(other)
            )))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| bad("it has no host".into()))?;
    let host = authority.host();
    if host.is_empty() {
        return Err(bad("it has no host".into()));
    }
    let port = authority.port_u16().unwrap_or(default_port);
    let path = uri.path();
    let (userinfo, host_port) = match authority.as_str().rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority.as_str()),
    };
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut secrets = Vec::new();
    let auth = userinfo.map(|u| {
        secrets.push(u.to_owned());
        let (user, pass) = u.split_once(':').unwrap_or((u, ""));
        let plain = format!("{}:{}", percent_decode(user), percent_decode(pass));
        format!("Basic {}", base64(plain.as_bytes()))
    });
    if let Some(q) = uri.query() {
        if !q.is_empty() {
            secrets.push(q.to_owned());
        }
    }
    Ok(Target {
        url: format!("{scheme}://{host_port}{path_and_query}"),
        shown: portolan_core::escape::for_terminal(&format!("{scheme}://{host}:{port}{path}"))
            .into_owned(),
        auth,
        secrets,
    })
}

impl Target {
    /// `text` with every secret part of the URL replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        portolan_core::escape::for_terminal(&out).into_owned()
    }
}

/// Checks a configuration before anything starts: the timeout and the URL.
pub(crate) fn check(cfg: &WebhookConfig) -> Result<Target, AlertError> {
    if cfg.timeout.is_zero() {
        return Err(AlertError::WebhookTimeout);
    }
    parse_url(&cfg.url)
}

/// A running webhook sink for events of type `T` (by default JSON values the caller
/// made). [`Webhook::send`] never waits for the network: events go to a bounded queue (the
/// oldest dropped when it is full) that a worker thread delivers in batches. Outcomes are
/// counted in the [`Metrics`] given to [`Webhook::start`]
/// (`portolan_webhook_deliveries_total`, `portolan_webhook_queue_events`); failures are
/// reported on stderr, at most once a minute.
///
/// Dropping it without [`Webhook::shutdown`] stops the worker after what it is doing,
/// without waiting for it.
#[derive(Debug)]
pub struct Webhook<T = serde_json::Value> {
    worker: Worker<T>,
    metrics: Metrics,
    journal: bool,
}

impl<T: Serialize + Clone + Send + 'static> Webhook<T> {
    /// Validates the configuration (an http or https URL, a timeout above zero) and starts
    /// the worker.
    pub fn start(cfg: WebhookConfig, metrics: Metrics) -> Result<Webhook<T>, AlertError> {
        let target = check(&cfg)?;
        Webhook::spawn(cfg, target, metrics, super::stderr_is_journal())
    }

    pub(crate) fn spawn(
        cfg: WebhookConfig,
        target: Target,
        metrics: Metrics,
        journal: bool,
    ) -> Result<Webhook<T>, AlertError> {
        let queue = Arc::new(Queue::new(cfg.queue));
        let thread = {
            let (queue, metrics) = (Arc::clone(&queue), metrics.clone());
            std::thread::Builder::new()
                .name("portolan-webhook".into())
                .spawn(move || worker(&cfg, &target, &queue, &metrics, journal))
                .map_err(|source| AlertError::Thread {
                    what: "webhook",
                    source,
                })?
        };
        Ok(Webhook {
            worker: Worker {
                queue,
                thread: Some(thread),
            },
            metrics,
            journal,
        })
    }

    /// Queues `events` for delivery and returns at once. When the queue is full the oldest
    /// events are dropped (counted, with one warning per burst of drops); once shutdown
    /// has begun every event offered is dropped.
    pub fn send(&self, events: &[T]) {
        self.push(events);
    }

    pub(crate) fn push<'a>(&self, events: impl IntoIterator<Item = &'a T>) {
        let p = self.worker.queue.push(events);
        self.metrics.set_webhook_queue(p.queued);
        if p.dropped > 0 {
            self.metrics.webhook_dropped(p.dropped);
        }
        if p.burst_began {
            warn(
                self.journal,
                "webhook queue full: dropping the oldest events (counted in \
                 portolan_webhook_deliveries_total{result=\"dropped\"})",
            );
        }
    }
}

impl<T> Webhook<T> {
    /// Stops the sink: the worker goes on delivering what is queued until `deadline` has
    /// passed, then gives up; whatever was not delivered is counted as dropped. Returns by
    /// the deadline (plus scheduling noise) even if a request hangs: the worker is then
    /// left behind and exits on its own.
    pub fn shutdown(self, deadline: Duration) {
        let until = Instant::now() + deadline;
        self.close(until);
        self.stop(until);
    }

    /// Begins shutdown (see [`Webhook::shutdown`]) without waiting.
    pub(crate) fn close(&self, until: Instant) {
        self.worker.queue.close(until);
    }

    /// Waits for the worker until `until` (see [`Webhook::shutdown`]).
    pub(crate) fn stop(self, until: Instant) {
        let metrics = self.metrics;
        self.worker.stop(until, |n| metrics.webhook_dropped(n));
        metrics.set_webhook_queue(0);
    }
}

#[derive(Serialize)]
struct Body<'a, T> {
    events: &'a [T],
}

/// How one batch ended.
enum Outcome {
    Delivered,
    Failed {
        attempts: u32,
        reason: String,
    },
    /// Shutdown's deadline came first.
    Dropped,
}

fn worker<T: Serialize>(
    cfg: &WebhookConfig,
    target: &Target,
    queue: &Queue<T>,
    metrics: &Metrics,
    journal: bool,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(format!("portolan/{}", env!("CARGO_PKG_VERSION")))
        .timeout_global(Some(cfg.timeout))
        .build()
        .into();
    let mut jitter = Jitter::new();
    let mut reporter = Reporter::new(journal);
    while let Some(batch) = queue.take(MAX_BATCH, |n| metrics.webhook_dropped(n)) {
        metrics.set_webhook_queue(queue.len());
        let outcome = deliver(&agent, cfg, target, queue, &batch, &mut jitter);
        let n = batch.len();
        queue.finish(n, || match &outcome {
            Outcome::Delivered => metrics.webhook_delivered(n),
            Outcome::Failed { .. } => metrics.webhook_failed(n),
            Outcome::Dropped => metrics.webhook_dropped(n),
        });
        match outcome {
            Outcome::Delivered => {
                reporter.success(|| format!("webhook {}: delivering again", target.shown));
            }
            Outcome::Failed { attempts, reason } => reporter.failure(&format!(
                "webhook {}: gave up on {n} event(s) after {attempts} attempt(s): {reason}",
                target.shown
            )),
            Outcome::Dropped => {}
        }
    }
    metrics.set_webhook_queue(queue.len());
    queue.mark_done();
}

fn deliver<T: Serialize>(
    agent: &ureq::Agent,
    cfg: &WebhookConfig,
    target: &Target,
    queue: &Queue<T>,
    batch: &[T],
    jitter: &mut Jitter,
) -> Outcome {
    let body = match serde_json::to_vec(&Body { events: batch }) {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Failed {
                attempts: 0,
                reason: format!("cannot encode the events: {e}"),
            }
        }
    };
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let timeout = match queue.deadline() {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Outcome::Dropped;
                }
                cfg.timeout.min(left)
            }
            None => cfg.timeout,
        };
        let (reason, wait) = match post(agent, target, &body, timeout) {
            Ok((status, _)) if (200..300).contains(&status) => return Outcome::Delivered,
            Ok((status, retry_after)) if status == 408 || status == 429 || status >= 500 => {
                let wait = match retry_after {
                    Some(s) if status == 429 || status == 503 => {
                        Duration::from_secs(s).min(RETRY_AFTER_CAP)
                    }
                    _ => backoff(attempts, jitter),
                };
                (format!("HTTP {status}"), wait)
            }
            Ok((status, _)) => {
                // A redirect or a client error: the address or the request is wrong, and
                // asking again will not change the answer.
                return Outcome::Failed {
                    attempts,
                    reason: format!("HTTP {status} (not retried)"),
                };
            }
            Err(e) => (target.scrub(&describe(&e)), backoff(attempts, jitter)),
        };
        if attempts > cfg.retries {
            return Outcome::Failed { attempts, reason };
        }
        if !queue.sleep_until(Instant::now() + wait) {
            return Outcome::Dropped;
        }
    }
}

/// One POST: the status and a `Retry-After` in seconds, if any.
fn post(
    agent: &ureq::Agent,
    target: &Target,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Option<u64>), ureq::Error> {
    let mut req = agent
        .post(&target.url)
        .header("Content-Type", "application/json");
    if let Some(a) = &target.auth {
        req = req.header("Authorization", a);
    }
    let resp = req
        .config()
        .timeout_global(Some(timeout))
        .build()
        .send(body)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    // Read a little of the answer so the connection can be reused; its content is unused.
    let _ = resp
        .into_body()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec();
    Ok((status, retry_after))
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Io(io) => format!("I/O error: {io}"),
        other => other.to_string(),
    }
}

/// The wait before retry `attempt` (1-based): 0.5 s doubling up to 30 s, within ±10 %.
fn backoff(attempt: u32, jitter: &mut Jitter) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    base.mul_f64(jitter.factor())
}

/// A small xorshift generator for backoff jitter: spreading retries needs no better.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Jitter((u64::from(t) << 20) ^ u64::from(std::process::id()) | 1)
    }

    /// A factor in [0.9, 1.1).
    fn factor(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        #[allow(clippy::cast_precision_loss)] // 53 bits are plenty for a jitter fraction
        let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
        0.9 + 0.2 * unit
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| char::from(c).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"user:p@ss"), "dXNlcjpwQHNz");
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        let t = parse_url("https://bot:s3cret@hooks.example.com/x/y?token=abc").unwrap();
        assert_eq!(t.shown, "https://hooks.example.com:443/x/y");
        assert_eq!(t.url, "https://hooks.example.com/x/y?token=abc");
        assert_eq!(t.auth.as_deref(), Some("Basic Ym90OnMzY3JldA=="));
        let scrubbed = t.scrub("failed for https://bot:s3cret@hooks.example.com/x/y?token=abc");
        assert!(
            !scrubbed.contains("s3cret") && !scrubbed.contains("token=abc"),
            "{scrubbed}"
        );
        let t = parse_url("http://[::1]:8080").unwrap();
        assert_eq!(t.shown, "http://[::1]:8080/");
        assert_eq!(percent_decode("a%40b%3"), "a@b%3");
    }

    #[test]
    fn urls_other_than_http_are_refused_without_echoing_them() {
        for bad in [
            "ftp://x/y?token=zzz",
            "hooks.example.com/x",
            "http://",
            "mailto:a@b",
        ] {
            let e = parse_url(bad).unwrap_err().to_string();
            assert!(!e.contains("zzz"), "{e}");
            assert!(e.contains("webhook"), "{e}");
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let mut j = Jitter::new();
        let b1 = backoff(1, &mut j);
        assert!(b1 >= Duration::from_millis(450) && b1 < Duration::from_millis(550));
        let b3 = backoff(3, &mut j);
        assert!(b3 >= Duration::from_millis(1800) && b3 < Duration::from_millis(2200));
        let b20 = backoff(20, &mut j);
        assert!(b20 >= Duration::from_secs(27) && b20 < Duration::from_secs(33));
        assert!(backoff(u32::MAX, &mut j) <= Duration::from_secs(33));
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let f = j.factor();
            assert!((0.9..1.1).contains(&f));
        }
    }
}
