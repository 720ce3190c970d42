//! Prometheus metrics for `portolan watch`: what listens now, how many events of each kind,
//! how sampling and the alert sinks are doing, and the daemon's own memory and CPU.
//!
//! [`Metrics`] is a cheap handle (an `Arc`) shared by the sampling loop, the alert workers
//! and the HTTP server; [`Metrics::render`] writes the text exposition format 0.0.4.
//! [`serve`] answers `GET /metrics` on a background thread (a tokio current-thread runtime
//! with axum), binding before it returns so that a taken address is an error at start-up.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use portolan_core::escape::{for_terminal, is_dangerous};
use portolan_core::{Exposure, Protocol};

use crate::model::{Event, EventKind, Listener};

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the sample-duration histogram, in seconds (1 ms .. 5 s; `+Inf` follows).
const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The metrics of one watcher. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    host: String,
    events: [AtomicU64; EventKind::ALL.len()],
    samples: AtomicU64,
    store_errors: AtomicU64,
    webhook_delivered: AtomicU64,
    webhook_failed: AtomicU64,
    webhook_dropped: AtomicU64,
    webhook_queue: AtomicU64,
    exec_ok: AtomicU64,
    exec_failed: AtomicU64,
    sample: Mutex<SampleState>,
    /// Families that another engine renders itself (`portolan forward`'s per-rule
    /// counters), appended to every page.
    extra: Mutex<Option<Extra>>,
}

/// A renderer of more metric families in the text exposition format.
pub type Extra = Arc<dyn Fn() -> String + Send + Sync>;

struct ExtraDebug<'a>(&'a Mutex<Option<Extra>>);

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("host", &self.host)
            .field("samples", &self.samples)
            .field("extra", &ExtraDebug(&self.extra))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ExtraDebug<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.0.lock().is_ok_and(|g| g.is_some());
        f.write_str(if set { "Some(..)" } else { "None" })
    }
}

/// The labels of one `portolan_listeners` series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ListenerLabels {
    proto: &'static str,
    port: u16,
    /// Kept as an address and written at render time: scrapes are rarer than samples.
    address: IpAddr,
    exposure: &'static str,
    process: String,
    unit: String,
}

#[derive(Debug, Default)]
struct SampleState {
    /// Rebuilt from each sample: only what listens now, so memory follows the machine's
    /// listeners rather than its history.
    listeners: BTreeMap<ListenerLabels, u64>,
    totals: BTreeMap<(&'static str, &'static str), u64>,
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [u64; DURATION_BUCKETS.len() + 1],
    sum_seconds: f64,
    last_ts_ms: Option<i64>,
    /// `portolan guard`'s decisions per (via, result); `None` until a guard uses these
    /// metrics, so a watcher's page has no guard family.
    guard: Option<BTreeMap<(&'static str, &'static str), u64>>,
}

impl Metrics {
    /// Metrics for the watcher of `host` (shown in `portolan_info`).
    pub fn new(host: &str) -> Metrics {
        Metrics(Arc::new(Inner {
            host: host.to_owned(),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            samples: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            webhook_delivered: AtomicU64::new(0),
            webhook_failed: AtomicU64::new(0),
            webhook_dropped: AtomicU64::new(0),
            webhook_queue: AtomicU64::new(0),
            exec_ok: AtomicU64::new(0),
            exec_failed: AtomicU64::new(0),
            sample: Mutex::new(SampleState::default()),
            extra: Mutex::new(None),
        }))
    }

    /// Appends the families `f` renders to every page (`portolan forward`'s counters).
    pub fn set_extra(&self, f: Extra) {
        *self
            .0
            .extra
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(f);
    }

    fn sample_state(&self) -> MutexGuard<'_, SampleState> {
        // A panic elsewhere while holding the lock leaves plain numbers behind: keep going.
        self.0
            .sample
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one sample: the listeners seen (replacing the previous sample's), how long
    /// sampling took and when it was taken (milliseconds since the epoch).
    pub fn observe_sample(&self, listeners: &[Listener], duration: Duration, ts_ms: i64) {
        let mut by_labels: BTreeMap<ListenerLabels, u64> = BTreeMap::new();
        let mut totals: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
        for l in listeners {
            let labels = ListenerLabels {
                proto: l.proto.as_str(),
                port: l.port,
                address: l.address,
                exposure: l.exposure.as_str(),
                process: l.owner.process.clone().unwrap_or_default(),
                unit: l.owner.unit.clone().unwrap_or_default(),
            };
            *by_labels.entry(labels).or_insert(0) += 1;
            *totals
                .entry((l.proto.as_str(), l.exposure.as_str()))
                .or_insert(0) += 1;
        }
        let secs = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DURATION_BUCKETS.len());
        let mut s = self.sample_state();
        s.listeners = by_labels;
        s.totals = totals;
        s.buckets[bucket] += 1;
        s.sum_seconds += secs;
        s.last_ts_ms = Some(ts_ms);
        drop(s);
        self.0.samples.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts events by kind (every event, whether or not it is alerted).
    pub fn count_events(&self, events: &[Event]) {
        for e in events {
            let i = EventKind::ALL
                .iter()
                .position(|k| *k == e.kind)
                .unwrap_or(0);
            self.0.events[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one failed write to the history store.
    pub fn store_error(&self) {
        self.0.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Webhook events delivered (a 2xx answer to the batch that carried them).
    pub fn webhook_delivered(&self, events: usize) {
        self.0
            .webhook_delivered
            .fetch_add(as_u64(events), Ordering::Relaxed);
    }

    /// Webhook events given up on after the retries (or a status that is not retried).
    pub fn webhook_failed(&self, events: usize) {
        self.0
            .webhook_failed
            .fetch_add(as_u64(events), Ordering::Relaxed);
    }

    /// Webhook events dropped without a final attempt: pushed out of a full queue, or
    /// still queued when shutdown's deadline ran out.
    pub fn webhook_dropped(&self, events: usize) {
        self.0
            .webhook_dropped
            .fetch_add(as_u64(events), Ordering::Relaxed);
    }

    /// How many events wait in the webhook queue now.
    pub fn set_webhook_queue(&self, events: usize) {
        self.0
            .webhook_queue
            .store(as_u64(events), Ordering::Relaxed);
    }

    /// Counts one `--exec` run: `ok` for exit status 0, else failed (non-zero, killed,
    /// timed out, could not start; also events dropped from its full queue).
    pub fn exec_run(&self, ok: bool) {
        let c = if ok {
            &self.0.exec_ok
        } else {
            &self.0.exec_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `runs` `--exec` runs as failed at once: events dropped from its full queue,
    /// or still waiting when shutdown gave up.
    pub(crate) fn exec_failed(&self, runs: usize) {
        self.0
            .exec_failed
            .fetch_add(as_u64(runs), Ordering::Relaxed);
    }

    /// Makes `portolan_guard_decisions_total` part of the page (with no series until the
    /// first decision).
    pub fn enable_guard(&self) {
        self.sample_state().guard.get_or_insert_with(BTreeMap::new);
    }

    /// Counts one decision of `portolan guard`: how the request came (`spa`, `fwknop`,
    /// `knock`) and the result (`accepted` or the rejection's name).
    pub fn guard_decision(&self, via: &'static str, result: &'static str) {
        *self
            .sample_state()
            .guard
            .get_or_insert_with(BTreeMap::new)
            .entry((via, result))
            .or_insert(0) += 1;
    }

    /// The current value of `portolan_webhook_deliveries_total` for each result:
    /// (delivered, failed, dropped). For the daemon's summary and for tests.
    pub fn webhook_counts(&self) -> (u64, u64, u64) {
        (
            self.0.webhook_delivered.load(Ordering::Relaxed),
            self.0.webhook_failed.load(Ordering::Relaxed),
            self.0.webhook_dropped.load(Ordering::Relaxed),
        )
    }

    /// The current value of `portolan_exec_runs_total` for each result: (ok, failed).
    pub fn exec_counts(&self) -> (u64, u64) {
        (
            self.0.exec_ok.load(Ordering::Relaxed),
            self.0.exec_failed.load(Ordering::Relaxed),
        )
    }

    /// Everything in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let i = &*self.0;
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);

        header(
            &mut out,
            "portolan_info",
            "gauge",
            "The watcher: host and version (always 1).",
        );
        let _ = writeln!(
            out,
            "portolan_info{{host=\"{}\",version=\"{}\"}} 1",
            label_value(&i.host),
            env!("CARGO_PKG_VERSION")
        );

        {
            let s = self.sample_state();
            header(
                &mut out,
                "portolan_listeners",
                "gauge",
                "Listening sockets in the last sample, per protocol, port, address, exposure, process and unit.",
            );
            for (l, n) in &s.listeners {
                let _ = writeln!(
                    out,
                    "portolan_listeners{{proto=\"{}\",port=\"{}\",address=\"{}\",exposure=\"{}\",process=\"{}\",unit=\"{}\"}} {n}",
                    l.proto,
                    l.port,
                    l.address,
                    l.exposure,
                    label_value(&l.process),
                    label_value(&l.unit),
                );
            }
            header(
                &mut out,
                "portolan_listeners_total",
                "gauge",
                "Listening sockets in the last sample, per protocol and exposure.",
            );
            for p in Protocol::ALL {
                for e in [
                    Exposure::AllInterfaces,
                    Exposure::Specific,
                    Exposure::Loopback,
                ] {
                    let n = s
                        .totals
                        .get(&(p.as_str(), e.as_str()))
                        .copied()
                        .unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "portolan_listeners_total{{proto=\"{p}\",exposure=\"{e}\"}} {n}"
                    );
                }
            }

            header(
                &mut out,
                "portolan_sample_duration_seconds",
                "histogram",
                "How long taking one sample of the listeners took.",
            );
            let mut cumulative = 0u64;
            for (b, n) in DURATION_BUCKETS.iter().zip(s.buckets.iter()) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "portolan_sample_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
                );
            }
            cumulative += s.buckets[DURATION_BUCKETS.len()];
            let _ = writeln!(
                out,
                "portolan_sample_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(
                out,
                "portolan_sample_duration_seconds_sum {}",
                float(s.sum_seconds)
            );
            let _ = writeln!(out, "portolan_sample_duration_seconds_count {cumulative}");

            header(
                &mut out,
                "portolan_last_sample_timestamp_seconds",
                "gauge",
                "When the last sample was taken, seconds since the Unix epoch (0 before the first).",
            );
            #[allow(clippy::cast_precision_loss)] // milliseconds since 1970 fit f64's 53 bits
            let last = s.last_ts_ms.map_or(0.0, |ms| ms as f64 / 1000.0);
            let _ = writeln!(
                out,
                "portolan_last_sample_timestamp_seconds {}",
                float(last)
            );
        }

        header(
            &mut out,
            "portolan_samples_total",
            "counter",
            "Samples of the listeners taken.",
        );
        let _ = writeln!(out, "portolan_samples_total {}", load(&i.samples));

        header(
            &mut out,
            "portolan_events_total",
            "counter",
            "Events recorded, per kind.",
        );
        for (k, c) in EventKind::ALL.iter().zip(i.events.iter()) {
            let _ = writeln!(out, "portolan_events_total{{kind=\"{k}\"}} {}", load(c));
        }

        header(
            &mut out,
            "portolan_store_errors_total",
            "counter",
            "Failed writes to the history store.",
        );
        let _ = writeln!(out, "portolan_store_errors_total {}", load(&i.store_errors));

        header(
            &mut out,
            "portolan_webhook_deliveries_total",
            "counter",
            "Events handed to the webhook, per outcome: delivered (2xx), failed (after the retries, or a status not retried), dropped (queue full or shutdown).",
        );
        for (r, c) in [
            ("delivered", &i.webhook_delivered),
            ("failed", &i.webhook_failed),
            ("dropped", &i.webhook_dropped),
        ] {
            let _ = writeln!(
                out,
                "portolan_webhook_deliveries_total{{result=\"{r}\"}} {}",
                load(c)
            );
        }
        header(
            &mut out,
            "portolan_webhook_queue_events",
            "gauge",
            "Events waiting for the webhook.",
        );
        let _ = writeln!(
            out,
            "portolan_webhook_queue_events {}",
            load(&i.webhook_queue)
        );

        header(
            &mut out,
            "portolan_exec_runs_total",
            "counter",
            "Runs of the --exec command, per outcome (failed: non-zero exit, killed, timed out, not started or dropped).",
        );
        for (r, c) in [("ok", &i.exec_ok), ("failed", &i.exec_failed)] {
            let _ = writeln!(
                out,
                "portolan_exec_runs_total{{result=\"{r}\"}} {}",
                load(c)
            );
        }

        render_process(&mut out);
        if let Some(g) = &self.sample_state().guard {
            header(
                &mut out,
                "portolan_guard_decisions_total",
                "counter",
                "Decisions of portolan guard, per way in (spa, fwknop, knock) and result (accepted or why not).",
            );
            for ((via, result), n) in g {
                let _ = writeln!(
                    out,
                    "portolan_guard_decisions_total{{via=\"{via}\",result=\"{result}\"}} {n}"
                );
            }
        }
        let extra = self
            .0
            .extra
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(f) = extra {
            out.push_str(&f());
        }
        out
    }
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value for the exposition format. Backslash, double quote and line feed are the
/// three characters the format escapes (`\\`, `\"`, `\n`), and a value with no other
/// control or bidi character is read back exactly. Any other (ESC, a tab, from a process
/// name) would reach whoever reads the scrape raw, so such a value is first made visible
/// text as on a terminal (core's [`for_terminal`]: `\x1b`, `\t`, a line feed as `\n`, its
/// own backslashes doubled), and that text is then escaped like any other.
fn label_value(s: &str) -> Cow<'_, str> {
    let shown = if s.chars().any(|c| c != '\n' && is_dangerous(c)) {
        for_terminal(s)
    } else {
        Cow::Borrowed(s)
    };
    if !shown.contains(['\\', '"', '\n']) {
        return shown;
    }
    let mut out = String::with_capacity(shown.len() + 8);
    for c in shown.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A sample value: Go-style `+Inf`/`-Inf`/`NaN` for the special values, else Rust's
/// shortest round-trip decimal.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The standard `process_*` metrics of this process, from /proc/self. A field that cannot
/// be read is left out rather than reported as 0.
fn render_process(out: &mut String) {
    let Some(stat) = ProcSelf::read() else {
        return;
    };
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    #[allow(clippy::cast_precision_loss)] // tick counts far below 2^53
    let cpu = (stat.utime + stat.stime) as f64 / ticks as f64;
    let start = start_time(stat.starttime, ticks);
    let rss = stat
        .rss_pages
        .saturating_mul(as_u64(rustix::param::page_size()));
    let vsize = stat.vsize;
    header(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    );
    let _ = writeln!(out, "process_cpu_seconds_total {}", float(cpu));
    header(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    header(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
    );
    let _ = writeln!(out, "process_virtual_memory_bytes {vsize}");
    if let Some(start) = start {
        header(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        let _ = writeln!(out, "process_start_time_seconds {}", float(start));
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle read_dir holds is one of the entries: not counted.
        let n = dir.count().saturating_sub(1);
        header(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        let _ = writeln!(out, "process_open_fds {n}");
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(max) = limit.current {
        header(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
}

/// When this process started, seconds since the epoch: the boot time (/proc/stat) plus
/// the start tick (`starttime` of /proc/self/stat). It never changes, so /proc/stat (long
/// on a machine with many CPUs) is read at the first scrape only.
fn start_time(starttime: u64, ticks: u64) -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        #[allow(clippy::cast_precision_loss)] // seconds and ticks far below 2^53
        Some(btime as f64 + starttime as f64 / ticks as f64)
    })
}

/// The fields of /proc/self/stat that the process metrics use.
struct ProcSelf {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

impl ProcSelf {
    fn read() -> Option<ProcSelf> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // `pid (comm) state ...`: comm may hold spaces and parentheses, so split after the
        // last `)`. Field 3 (state) is then index 0.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
        Some(ProcSelf {
            utime: num(14)?,
            stime: num(15)?,
            starttime: num(22)?,
            vsize: num(23)?,
            rss_pages: num(24)?,
        })
    }
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "refusing to serve metrics on {addr}: it is not a loopback address, and the metrics \
         name this machine's processes and ports (allow it explicitly to listen beyond this host)"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("cannot serve metrics on {addr}: the address is already in use (is another watcher running?)")]
    AddrInUse { addr: SocketAddr },
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the metrics server: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The running metrics endpoint. [`MetricsServer::shutdown`] stops it; dropping it without
/// that stops it too, without waiting.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Told when the server thread ends, so `shutdown` can wait with a deadline.
    done: std::sync::mpsc::Receiver<()>,
}

/// How long `shutdown` waits for requests in progress (a client that never finishes its
/// request must not hold the daemon's exit).
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl MetricsServer {
    /// The address actually bound (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and lets requests in progress finish, for at most two seconds;
    /// a connection still open then is left to the process's exit.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.done.recv_timeout(SHUTDOWN_WAIT).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `GET /metrics` (and `/` with a pointer to it) on `addr` from a background thread.
///
/// The socket is bound before this returns, so a taken address or a missing permission is
/// an error now rather than a line in a log later. Metrics name the machine's processes,
/// ports and users: an address that is not loopback is refused unless `allow_any` says the
/// caller chose it on purpose (the CLI's explicit flag), the same way a database does not
/// listen on every interface by default.
pub fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    allow_any: bool,
) -> Result<MetricsServer, MetricsError> {
    if !allow_any && !portolan_core::cidr::canonical(addr.ip()).is_loopback() {
        return Err(MetricsError::NotLoopback { addr });
    }
    let std_listener = std::net::TcpListener::bind(addr).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            MetricsError::AddrInUse { addr }
        } else {
            MetricsError::Bind { addr, source }
        }
    })?;
    let local = std_listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(MetricsError::Runtime)?;
    let listener = {
        let _in_runtime = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(MetricsError::Runtime)?
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (finished, done) = std::sync::mpsc::channel::<()>();
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_page))
        .route("/", axum::routing::get(root_page))
        .with_state(metrics);
    let thread = std::thread::Builder::new()
        .name("portolan-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
            let _ = finished.send(());
        })
        .map_err(MetricsError::Runtime)?;
    Ok(MetricsServer {
        addr: local,
        stop: Some(stop),
        thread: Some(thread),
        done,
    })
}

async fn metrics_page(
    axum::extract::State(metrics): axum::extract::State<Metrics>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics.render(),
    )
}

async fn root_page() -> &'static str {
    "portolan watch: metrics are at /metrics\n"
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    #[test]
    fn guard_decisions_appear_only_for_a_guard() {
        let m = Metrics::new("h");
        assert!(!m.render().contains("portolan_guard_decisions_total"));
        m.enable_guard();
        let page = m.render();
        assert!(
            page.contains("# TYPE portolan_guard_decisions_total counter"),
            "{page}"
        );
        m.guard_decision("spa", "accepted");
        m.guard_decision("spa", "accepted");
        m.guard_decision("fwknop", "bad_mac");
        let page = m.render();
        assert!(
            page.contains("portolan_guard_decisions_total{via=\"spa\",result=\"accepted\"} 2"),
            "{page}"
        );
        assert!(
            page.contains("portolan_guard_decisions_total{via=\"fwknop\",result=\"bad_mac\"} 1"),
            "{page}"
        );
    }
}
