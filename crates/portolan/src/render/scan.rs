//! `portolan scan`'s output: the machine formats streamed while the scan runs
//! ([`ScanStream`]: JSON, JSON Lines, CSV, and the progress line on stderr), one table per
//! host at the end of the scan, and the service name as a person should read it (shared
//! with the nmap XML and greppable writers).

use std::io::{self, Write};
use std::ops::ControlFlow;

use portolan_core::{PortState, ServiceSource, SCAN_CSV_HEADER};
use portolan_scan::{HostSummary, PortRecord, Progress, ScanStart, SessionEvent, SessionSummary};
use serde::Serialize;

use super::csv::CsvOut;
use super::{esc, write_table, Cell, Format, Output, Report, Style, BOLD, DIM, GREEN, YELLOW};

/// Where the stream writes: the command's output through a buffer (JSON, JSON Lines; the
/// table writes nothing while the scan runs), or one CSV writer for the whole scan.
enum Sink<'w> {
    Buffered {
        out: &'w mut dyn Write,
        buf: Vec<u8>,
    },
    Csv(Box<CsvOut<'w>>),
}

/// Bytes buffered before they go out between progress ticks.
const FLUSH_AT: usize = 1 << 16;

/// The scan's session events made output: port records written as they come in the
/// machine formats (buffered, and flushed with each progress tick, a few times a second,
/// or when the buffer is large), the progress line and notes on stderr, and the hosts at
/// the end kept for the reports made from them.
pub struct ScanStream<'w> {
    format: Format,
    /// `--pretty`: the JSON document indented, still written as it grows.
    pretty: bool,
    /// The progress line on stderr.
    progress: bool,
    sink: Sink<'w>,
    first: bool,
    err: Option<io::Error>,
    /// The hosts at the end of the scan.
    pub hosts: Vec<HostSummary>,
}

impl std::fmt::Debug for ScanStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanStream")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl<'w> ScanStream<'w> {
    /// A stream in `ctx`'s format onto `out`, with a progress line when `progress`.
    pub fn new(ctx: &Output, progress: bool, out: &'w mut dyn Write) -> ScanStream<'w> {
        let sink = if ctx.format == Format::Csv {
            Sink::Csv(Box::new(CsvOut::new(out)))
        } else {
            Sink::Buffered {
                out,
                buf: Vec::with_capacity(FLUSH_AT),
            }
        };
        ScanStream {
            format: ctx.format,
            pretty: ctx.pretty,
            progress,
            sink,
            first: true,
            err: None,
            hosts: Vec::new(),
        }
    }

    /// One event of the session; `Break` once the output is gone (nobody reads the rest,
    /// so the scan stops).
    pub fn event(&mut self, e: SessionEvent, ctx: &Output) -> ControlFlow<()> {
        match e {
            SessionEvent::Started(s) => self.start(&s),
            SessionEvent::Port(r) => self.record(&r),
            SessionEvent::Progress(p) => {
                // Results stream: what is buffered goes out a few times a second.
                self.flush();
                if self.progress {
                    let _ = write!(io::stderr().lock(), "{}", progress_line(&p));
                }
            }
            SessionEvent::Probing { ports } => {
                if self.progress {
                    let _ = write!(io::stderr(), "\r\x1b[2Kprobing {ports} open port(s)...");
                }
            }
            SessionEvent::Notice(n) => {
                self.clear_progress();
                ctx.note(&n);
            }
            SessionEvent::Hosts(h) => merge_hosts(&mut self.hosts, h),
        }
        if self.err.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Whether writing the output failed (the reader went away).
    pub fn has_error(&self) -> bool {
        self.err.is_some()
    }

    /// Erases the progress line (before a note, and at the end).
    pub fn clear_progress(&self) {
        if self.progress {
            let _ = write!(io::stderr(), "\r\x1b[2K");
        }
    }

    /// The first write error, if one happened (the stream stopped writing then).
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.err.take()
    }

    /// Runs `f` on the buffer (not after an error).
    fn try_do(&mut self, f: impl FnOnce(&mut Vec<u8>, &mut bool) -> io::Result<()>) {
        if self.err.is_some() {
            return;
        }
        let r = match &mut self.sink {
            Sink::Buffered { buf, .. } => f(buf, &mut self.first),
            Sink::Csv(_) => Ok(()),
        };
        self.err = r.err();
    }

    /// One CSV row (not after an error).
    fn csv_row<I: IntoIterator<Item = S>, S: AsRef<str>>(&mut self, fields: I) {
        if let (None, Sink::Csv(c)) = (&self.err, &mut self.sink) {
            self.err = c.row(fields).err();
        }
    }

    fn start(&mut self, s: &ScanStart) {
        match self.format {
            Format::Json => {
                let head = serde_json::json!({
                    "scanner": "portolan", "version": env!("CARGO_PKG_VERSION"), "type": "connect",
                    "seed": s.seed, "shard": format!("{}/{}", s.shard.index, s.shard.count),
                    "hosts": s.hosts, "ports": s.ports,
                });
                let pretty = self.pretty;
                self.try_do(|buf, _| {
                    if pretty {
                        buf.extend_from_slice(b"{\n  \"scan\": ");
                        indented(buf, &head, "  ")?;
                        buf.extend_from_slice(b",\n  \"ports\": [");
                    } else {
                        buf.extend_from_slice(br#"{"scan":"#);
                        serde_json::to_writer(&mut *buf, &head)?;
                        buf.extend_from_slice(br#","ports":["#);
                    }
                    Ok(())
                });
            }
            Format::Csv => self.csv_row(SCAN_CSV_HEADER),
            Format::Jsonl | Format::Table => {}
        }
    }

    fn record(&mut self, rec: &PortRecord) {
        let (format, pretty) = (self.format, self.pretty);
        match format {
            Format::Csv => self.csv_row(rec.csv_fields()),
            Format::Table => {}
            Format::Json | Format::Jsonl => {
                self.try_do(|buf, first| match format {
                    Format::Json if pretty => {
                        buf.extend_from_slice(if *first { b"\n    " } else { b",\n    " });
                        *first = false;
                        indented(buf, rec, "    ")
                    }
                    Format::Json => {
                        if !*first {
                            buf.push(b',');
                        }
                        *first = false;
                        serde_json::to_writer(&mut *buf, rec).map_err(io::Error::from)
                    }
                    _ => {
                        serde_json::to_writer(&mut *buf, rec)?;
                        buf.push(b'\n');
                        Ok(())
                    }
                });
                if matches!(&self.sink, Sink::Buffered { buf, .. } if buf.len() >= FLUSH_AT) {
                    self.flush();
                }
            }
        }
    }

    /// Writes out what is buffered.
    fn flush(&mut self) {
        if self.err.is_some() {
            return;
        }
        self.err = match &mut self.sink {
            Sink::Buffered { out, buf } => {
                if buf.is_empty() {
                    return;
                }
                let r = out.write_all(buf).and_then(|()| out.flush());
                buf.clear();
                r.err()
            }
            Sink::Csv(c) => c.flush().err(),
        };
    }

    /// The end of the JSON document (with the scan's totals), and everything flushed.
    pub fn finish(&mut self, s: &SessionSummary) {
        if self.format == Format::Json {
            let tail = serde_json::json!({
                "elapsed_s": s.elapsed.as_secs_f64(), "probes": s.probes, "results": s.results,
                "hosts_up": s.hosts_up, "open": s.open, "complete": !s.interrupted,
            });
            let pretty = self.pretty;
            self.try_do(|buf, first| {
                if pretty {
                    buf.extend_from_slice(if *first { b"],\n" } else { b"\n  ],\n" });
                    buf.extend_from_slice(b"  \"summary\": ");
                    indented(buf, &tail, "  ")?;
                    buf.extend_from_slice(b"\n}\n");
                } else {
                    buf.extend_from_slice(b"],\"summary\":");
                    serde_json::to_writer(&mut *buf, &tail)?;
                    buf.extend_from_slice(b"}\n");
                }
                Ok(())
            });
        }
        self.flush();
    }

    /// The command's output back (for the table at the end), everything written so far
    /// flushed; the first write error instead, if there was one.
    pub fn into_out(mut self) -> io::Result<&'w mut dyn Write> {
        self.flush();
        if let Some(e) = self.err {
            return Err(e);
        }
        match self.sink {
            Sink::Buffered { out, .. } => Ok(out),
            Sink::Csv(c) => c.into_inner(),
        }
    }
}

/// `value` as indented JSON, each line after the first shifted right by `indent` (JSON
/// strings hold no raw newline, so every newline is the formatter's).
fn indented<T: serde::Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    value: &T,
    indent: &str,
) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    buf.extend_from_slice(text.replace('\n', &format!("\n{indent}")).as_bytes());
    Ok(())
}

/// The service of a port as a person reads it: a service detection found inside TLS is
/// named as such (`https`, `ssl/redis`), and with `detection` a name that only came from
/// the port table or a weak match gets a `?` (nmap's `http?`): it was guessed, not proven.
pub fn shown_service(rec: &PortRecord, detection: bool) -> Option<String> {
    match &rec.tls {
        Some(t)
            if t.starttls.is_none() && !rec.service_source.is_some_and(ServiceSource::is_guess) =>
        {
            rec.service.as_deref().map(tls_wrapped)
        }
        _ => rec.service_guess_marked(detection),
    }
}

/// The name of a service spoken inside TLS (the probe engine's naming).
pub fn tls_wrapped(name: &str) -> String {
    portolan_probe::tls_name(name)
}

/// Whether the port's service was found inside TLS (nmap's `tunnel="ssl"`).
pub fn in_tls(rec: &PortRecord) -> bool {
    matches!(
        rec.service_source,
        Some(ServiceSource::Probe | ServiceSource::Weak)
    ) && rec.tls.as_ref().is_some_and(|t| t.starttls.is_none())
}

/// Product, version and extra information as one text: `OpenSSH 9.2p1 (protocol 2.0)`.
pub fn version_text(rec: &PortRecord) -> String {
    portolan_probe::version_text(
        rec.product.as_deref(),
        rec.version.as_deref(),
        rec.info.as_deref(),
    )
}

/// The progress line on stderr (redrawn in place).
// Counts far below 2^52: f64 is exact for a progress line.
#[allow(clippy::cast_precision_loss)]
pub fn progress_line(p: &Progress) -> String {
    let pct = if p.total == 0 {
        100.0
    } else {
        p.done as f64 * 100.0 / p.total as f64
    };
    let eta = if p.rate > 0.0 {
        (p.total - p.done) as f64 / p.rate
    } else {
        0.0
    };
    format!(
        "\r\x1b[2K{:>5.1}%  {}/{} ports  {} open  {:.0} probes/s  {} in flight  ETA {:.0}s",
        pct, p.done, p.total, p.open, p.rate, p.in_flight, eta
    )
}

fn state_color(s: PortState) -> &'static str {
    match s {
        PortState::Open => GREEN,
        PortState::Filtered | PortState::OpenFiltered => YELLOW,
        PortState::Closed => DIM,
    }
}

/// The groups of a host not listed port by port: `100 closed (conn-refused: 100)`.
pub fn not_shown(h: &HostSummary) -> Vec<String> {
    h.not_shown
        .iter()
        .map(|g| {
            let reasons: Vec<String> = g.reasons.iter().map(|(r, c)| format!("{r}: {c}")).collect();
            // TCP groups as they always read; UDP ones say so (a run of both has both).
            let udp = if g.proto == portolan_core::Protocol::Udp {
                " udp"
            } else {
                ""
            };
            format!("{} {}{udp} ({})", g.count, g.state, reasons.join(", "))
        })
        .collect()
}

/// The hosts the reports list one by one, and how many others did not answer at all. A
/// scan of several hosts lists those that answered and counts the silent ones (so `-Pn`
/// on a /16 is not 65,534 blocks; nmap leaves down hosts out of its reports too); a scan
/// of one host lists it whatever it did. JSON and JSON Lines are not summarised: they
/// carry every port record asked for.
pub fn shown_hosts(hosts: &[HostSummary]) -> (Vec<&HostSummary>, usize) {
    if hosts.len() == 1 {
        return (hosts.iter().collect(), 0);
    }
    let shown: Vec<&HostSummary> = hosts.iter().filter(|h| h.up).collect();
    let silent = hosts.len() - shown.len();
    (shown, silent)
}

/// A count with thousands separators: `65,534`.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The end of a scan, for the table: every host, then one line of totals.
#[derive(Debug, Serialize)]
pub struct ScanTable<'a> {
    pub hosts: &'a [HostSummary],
    pub summary: &'a SessionSummary,
    /// Service detection ran (adds the VERSION column and marks guessed names).
    pub detection: bool,
}

impl Report for ScanTable<'_> {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        let (shown, silent) = shown_hosts(self.hosts);
        for h in shown {
            let status = if h.up { "up" } else { "no answer" };
            let rtt = h
                .avg_rtt
                .map(|d| format!(", rtt {:.1} ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_default();
            let name = h
                .name
                .as_ref()
                .map(|n| format!(" ({})", esc(&n.name)))
                .unwrap_or_default();
            writeln!(
                w,
                "{}{name}  {status}{rtt}",
                style.paint(BOLD, &h.host.to_string())
            )?;
            let mut listed: Vec<&PortRecord> = h.ports.iter().collect();
            listed.sort_by_key(|r| (r.state, r.port));
            if !listed.is_empty() {
                let rows: Vec<Vec<Cell>> = listed
                    .iter()
                    .map(|r| {
                        let mut row = vec![
                            Cell::plain(format!("{}/{}", r.port, r.proto)),
                            Cell::colored(r.state.as_str(), state_color(r.state)),
                            Cell::plain(
                                shown_service(r, self.detection)
                                    .map(|s| esc(&s).into_owned())
                                    .unwrap_or_default(),
                            ),
                            Cell::plain(r.reason.as_ref()),
                            Cell::plain(
                                r.rtt_ms.map(|ms| format!("{ms:.1} ms")).unwrap_or_default(),
                            ),
                        ];
                        if self.detection {
                            row.push(Cell::plain(esc(&version_text(r)).into_owned()));
                        }
                        row
                    })
                    .collect();
                let mut headers = vec!["PORT", "STATE", "SERVICE", "REASON", "RTT"];
                if self.detection {
                    headers.push("VERSION");
                }
                write_table(w, style, &headers, &rows, "  ")?;
            }
            let hidden = not_shown(h);
            if !hidden.is_empty() {
                writeln!(w, "  not shown: {}", hidden.join("; "))?;
            }
            writeln!(w)?;
        }
        if silent > 0 {
            let what = if silent == 1 { "host" } else { "hosts" };
            writeln!(
                w,
                "{} {what} did not answer (every port filtered)\n",
                grouped(silent)
            )?;
        }
        let s = self.summary;
        writeln!(
            w,
            "{}",
            style.paint(
                DIM,
                &format!(
                    "{}scanned {} host(s) x {} port(s) in {:.2}s: {} up, {} open port(s), {} probes",
                    if s.interrupted { "interrupted: " } else { "" },
                    s.hosts,
                    s.ports,
                    s.elapsed.as_secs_f64(),
                    s.hosts_up,
                    s.open,
                    s.probes
                )
            )
        )
    }

    fn found(&self) -> bool {
        self.summary.open > 0
    }
}

/// The hosts of a second session of the same run (UDP after TCP) joined to the first's:
/// one host, its ports of both protocols (TCP first), its groups of unlisted ports.
fn merge_hosts(into: &mut Vec<HostSummary>, more: Vec<HostSummary>) {
    if into.is_empty() {
        *into = more;
        return;
    }
    for h in more {
        match into.iter_mut().find(|e| e.host == h.host) {
            Some(e) => {
                e.up |= h.up;
                e.avg_rtt = e.avg_rtt.or(h.avg_rtt);
                e.name = e.name.take().or(h.name);
                e.ports.extend(h.ports);
                e.not_shown.extend(h.not_shown);
                e.open += h.open;
            }
            None => into.push(h),
        }
    }
}
