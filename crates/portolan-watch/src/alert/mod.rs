//! The alert sinks of `portolan watch`: a line per event on stderr (the journal, under
//! systemd), the JSONL event stream (stdout or a file), a webhook and a command.
//!
//! [`Alerts::send`] never waits for the network or for a child process: the stderr line
//! and the JSONL are small writes done inline; the webhook and the command each have a
//! worker thread fed through a bounded queue that drops its oldest events when full.
//! `present` events (the state found when watching began) get their line and their JSONL
//! record but are never alerted: neither the webhook nor the command sees them.
//!
//! The webhook sink is also usable alone, for events of any other kind: [`Webhook`]
//! (`portolan guard` sends its decisions through it).

mod exec;
mod line;
mod queue;
mod webhook;

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use exec::EXEC_QUEUE;
pub use exec::{run as exec_run, run_with_env as exec_run_with_env, ExecOutcome};
pub use line::{journal_line, line, priority};
pub use webhook::Webhook;

use crate::metrics::Metrics;
use crate::model::{Event, EventKind};
use queue::Queue;

/// Where alerts go.
#[derive(Debug, Clone, Default)]
pub struct AlertConfig {
    /// One line per event on stderr.
    pub stderr: bool,
    /// The JSONL event stream.
    pub events: Option<EventsOut>,
    pub webhook: Option<WebhookConfig>,
    /// A shell command run once per alerted event.
    pub exec: Option<String>,
}

/// Where the JSONL event stream goes: one `model::Event` as JSON per line, flushed after
/// each batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsOut {
    Stdout,
    /// Opened for appending; created with mode 0600 (events name processes and users).
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://` or `https://`. Userinfo becomes a Basic `Authorization` header; neither it
    /// nor the query string is ever written to a log.
    pub url: String,
    /// Per attempt (connect, send and answer).
    pub timeout: Duration,
    /// Attempts after the first one, for errors worth retrying.
    pub retries: u32,
    /// Events waiting at most; beyond, the oldest are dropped.
    pub queue: usize,
}

impl WebhookConfig {
    /// The defaults: 5 s per attempt, 5 retries, 1000 queued events.
    pub fn new(url: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            timeout: Duration::from_secs(5),
            retries: 5,
            queue: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("the webhook URL is not usable: {0}")]
    WebhookUrl(String),
    #[error("the webhook timeout must be more than zero")]
    WebhookTimeout,
    #[error("the --exec command is empty")]
    EmptyExec,
    #[error("cannot open the events file {path}: {source}")]
    EventsFile {
        /// Escaped for a terminal.
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The running sinks. Dropping without [`Alerts::shutdown`] stops the workers after what
/// they are doing, without waiting for them.
#[derive(Debug)]
pub struct Alerts {
    stderr: bool,
    journal: bool,
    events: Option<EventsSink>,
    webhook: Option<Webhook<Event>>,
    exec: Option<Worker<Event>>,
    metrics: Metrics,
}

/// A worker thread and the queue that feeds it. Dropped without [`Worker::stop`], it
/// closes the queue at once: the thread stops after what it is doing.
#[derive(Debug)]
struct Worker<T> {
    queue: Arc<Queue<T>>,
    /// `None` once joined.
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct EventsSink {
    out: EventsWriter,
    /// What to call it in a warning.
    name: String,
    /// Writing has been failing since the last warning.
    failing: bool,
    buf: Vec<u8>,
}

#[derive(Debug)]
enum EventsWriter {
    Stdout,
    File(File),
}

impl Alerts {
    /// Validates the configuration, opens the events file and starts the workers.
    pub fn new(cfg: AlertConfig, metrics: Metrics) -> Result<Alerts, AlertError> {
        let journal = stderr_is_journal();
        let target = cfg.webhook.as_ref().map(webhook::check).transpose()?;
        if cfg.exec.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(AlertError::EmptyExec);
        }
        let events = match &cfg.events {
            None => None,
            Some(EventsOut::Stdout) => Some(EventsSink::new(EventsWriter::Stdout, "stdout")),
            Some(EventsOut::File(path)) => {
                use std::os::unix::fs::OpenOptionsExt as _;
                let name =
                    portolan_core::escape::for_terminal(&path.display().to_string()).into_owned();
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|source| AlertError::EventsFile {
                        path: name.clone(),
                        source,
                    })?;
                Some(EventsSink::new(EventsWriter::File(f), &name))
            }
        };
        let mut alerts = Alerts {
            stderr: cfg.stderr,
            journal,
            events,
            webhook: None,
            exec: None,
            metrics: metrics.clone(),
        };
        if let (Some(w), Some(target)) = (cfg.webhook, target) {
            alerts.webhook = Some(Webhook::spawn(w, target, metrics.clone(), journal)?);
        }
        if let Some(cmd) = cfg.exec {
            let queue = Arc::new(Queue::new(EXEC_QUEUE));
            let thread =
                exec::spawn(cmd, Arc::clone(&queue), metrics, journal).map_err(|source| {
                    AlertError::Thread {
                        what: "--exec",
                        source,
                    }
                })?;
            alerts.exec = Some(Worker {
                queue,
                thread: Some(thread),
            });
        }
        Ok(alerts)
    }

    /// Hands a batch of events to every sink. Returns at once: the stderr lines and the
    /// JSONL are written here, the webhook and the command get the events through their
    /// queues (oldest dropped and counted when a queue is full).
    pub fn send(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        if self.stderr {
            let mut text = String::new();
            for e in events {
                // The journal stamps each line itself; a terminal or a log file needs the
                // time written (UTC, to the second).
                if self.journal {
                    text.push_str(&journal_line(e));
                } else {
                    text.push_str(&portolan_core::civil::rfc3339(e.ts_ms.div_euclid(1000)));
                    text.push(' ');
                    text.push_str(&line(e));
                }
                text.push('\n');
            }
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
        if let Some(sink) = &mut self.events {
            sink.write(events, self.journal);
        }
        let alerted = || events.iter().filter(|e| e.kind != EventKind::Present);
        if let Some(w) = &self.webhook {
            w.push(alerted());
        }
        if let Some(w) = &self.exec {
            let p = w.queue.push(alerted());
            if p.dropped > 0 {
                self.metrics.exec_failed(p.dropped);
            }
            if p.burst_began {
                warn(
                    self.journal,
                    "--exec is behind: dropping the oldest events (counted in \
                     portolan_exec_runs_total{result=\"failed\"})",
                );
            }
        }
    }

    /// Stops the sinks: the workers go on delivering what is queued until `deadline` has
    /// passed, then give up; whatever was not delivered is counted as dropped (webhook) or
    /// failed (command). Returns by the deadline (plus scheduling noise) even if a request
    /// or a command hangs: such a worker is left behind and exits on its own.
    pub fn shutdown(mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let (webhook, exec) = (self.webhook.take(), self.exec.take());
        // Both close before either is waited for: they share the deadline.
        if let Some(w) = &webhook {
            w.close(until);
        }
        if let Some(w) = &exec {
            w.queue.close(until);
        }
        if let Some(w) = webhook {
            w.stop(until);
        }
        if let Some(w) = exec {
            let metrics = &self.metrics;
            w.stop(until, |n| metrics.exec_failed(n));
        }
        if let Some(sink) = &mut self.events {
            sink.flush();
        }
    }
}

impl<T> Worker<T> {
    /// Waits for the worker to finish (see [`Queue::wait_done`]) and joins its thread; one
    /// still busy at `until` is left behind.
    fn stop(mut self, until: Instant, on_dropped: impl FnOnce(usize)) {
        if self.queue.wait_done(until, on_dropped) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl<T> Drop for Worker<T> {
    fn drop(&mut self) {
        // After `stop` this is a no-op: an earlier deadline is kept.
        self.queue.close(Instant::now());
    }
}

impl EventsSink {
    fn new(out: EventsWriter, name: &str) -> EventsSink {
        EventsSink {
            out,
            name: name.to_owned(),
            failing: false,
            buf: Vec::new(),
        }
    }

    fn write(&mut self, events: &[Event], journal: bool) {
        self.buf.clear();
        for e in events {
            if serde_json::to_writer(&mut self.buf, e).is_ok() {
                self.buf.push(b'\n');
            }
        }
        let result = match &mut self.out {
            EventsWriter::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&self.buf).and_then(|()| out.flush())
            }
            EventsWriter::File(f) => f.write_all(&self.buf).and_then(|()| f.flush()),
        };
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                warn(journal, &format!("writing events to {} again", self.name));
            }
            Err(e) if !self.failing => {
                self.failing = true;
                warn(
                    journal,
                    &format!("cannot write events to {}: {e}", self.name),
                );
            }
            Ok(()) | Err(_) => {}
        }
    }

    fn flush(&mut self) {
        let _ = match &mut self.out {
            EventsWriter::Stdout => std::io::stdout().flush(),
            EventsWriter::File(f) => f.flush(),
        };
    }
}

/// True when stderr is the systemd journal: `JOURNAL_STREAM` names the device and inode
/// of our stderr (not merely inherited from a parent whose stderr it was).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // st_dev and st_ino are u64 here, but not on every target.
    #[allow(clippy::useless_conversion)]
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|st| {
        u64::try_from(st.st_dev).ok() == Some(dev) && u64::try_from(st.st_ino).ok() == Some(ino)
    })
}

/// A warning of our own on stderr (`<4>` first under the journal). Callers escape what
/// came from outside.
pub(crate) fn warn(journal: bool, msg: &str) {
    let prefix = if journal { "<4>" } else { "" };
    let _ = writeln!(std::io::stderr(), "{prefix}portolan: {msg}");
}

/// Failure reports without a flood: the first failure is written at once, later ones at
/// most once a minute (with how many were not written), and the first success after a
/// failure says so.
#[derive(Debug)]
struct Reporter {
    journal: bool,
    last: Option<Instant>,
    unreported: u64,
    failing: bool,
}

const REPORT_EVERY: Duration = Duration::from_secs(60);

impl Reporter {
    fn new(journal: bool) -> Reporter {
        Reporter {
            journal,
            last: None,
            unreported: 0,
            failing: false,
        }
    }

    fn failure(&mut self, msg: &str) {
        self.failing = true;
        if self.last.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            self.unreported += 1;
            return;
        }
        if self.unreported > 0 {
            warn(
                self.journal,
                &format!(
                    "{msg} (and {} more failure(s) since the last report)",
                    self.unreported
                ),
            );
        } else {
            warn(self.journal, msg);
        }
        self.last = Some(Instant::now());
        self.unreported = 0;
    }

    fn success(&mut self, msg: impl FnOnce() -> String) {
        if !self.failing {
            return;
        }
        let mut m = msg();
        if self.unreported > 0 {
            use std::fmt::Write as _;
            let _ = write!(m, " ({} failure(s) not reported before)", self.unreported);
        }
        warn(self.journal, &m);
        self.failing = false;
        self.last = None;
        self.unreported = 0;
    }
}
