//! Service and version detection: what really answers on a TCP port.
//!
//! Passive first: connect and read what the service says unprompted (SSH, FTP, SMTP, POP3,
//! IMAP, MySQL/MariaDB, VNC, telnet). Then active probes from the signature file, those
//! that name the port first, each on a fresh connection, each with a bounded read and a
//! deadline. The first match names the service; with none, the first bytes are kept
//! (escaped) so a person can see what it said.
//!
//! Everything read from the network is bounded (bytes and time) and every string taken from
//! it is escaped before it leaves this crate. This crate must not print.

pub mod http;
pub mod local;
pub mod nmap_probes;
pub mod sig;
pub mod tls;
pub mod udp;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portolan_core::escape::{for_terminal, is_dangerous};
use serde::Serialize;

pub use http::HttpInfo;
pub use sig::{Match, Probe, SigError, Signatures, Transport};
pub use tls::{CertInfo, TlsInfo};

/// Signatures as a command loads them, and what to tell the user about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub signatures: Signatures,
    /// One line per thing worth a note: an empty signature directory, what an nmap file
    /// gave and what it skipped.
    pub notes: Vec<String>,
}

/// Why signatures could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Signatures(#[from] SigError),
    #[error(transparent)]
    Nmap(#[from] nmap_probes::NmapError),
}

/// The built-in signatures, plus every `*.toml` file of `dir` (`--signatures DIR`), plus the
/// probes of an nmap-service-probes file (`--nmap-probes PATH`, read only when given).
pub fn load_signatures(dir: Option<&Path>, nmap: Option<&Path>) -> Result<Loaded, LoadError> {
    let mut signatures = Signatures::builtin();
    let mut notes = Vec::new();
    if let Some(dir) = dir {
        if signatures.add_dir(dir)? == 0 {
            notes.push(format!("no *.toml signature file in {}", dir.display()));
        }
    }
    if let Some(path) = nmap {
        notes.push(signatures.add_nmap_file(path)?.to_string());
    }
    Ok(Loaded { signatures, notes })
}

/// What a service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub service: String,
    pub product: Option<String>,
    pub version: Option<String>,
    pub info: Option<String>,
    pub cpe: Option<String>,
    /// The probe whose answer matched (`banner` when the service spoke first unprompted).
    pub probe: String,
    /// From a weak match: the answer resembles the protocol without proving it.
    pub weak: bool,
}

impl Identity {
    /// The service as a person names it, given the port's TLS: a protocol wrapped in TLS
    /// from the first byte gets its TLS name ("https", "imaps"; "ssl/NAME" where the
    /// protocol has none). STARTTLS does not change the name (the port speaks the protocol,
    /// and upgrades).
    pub fn service_over(&self, tls: Option<&TlsInfo>) -> String {
        if tls.is_none_or(|t| t.starttls.is_some()) {
            return self.service.clone();
        }
        tls_name(&self.service)
    }

    /// "OpenSSH 9.2p1 (protocol 2.0)": product, version and info, as one text (empty when
    /// the match named the service only).
    pub fn version_text(&self) -> String {
        version_text(
            self.product.as_deref(),
            self.version.as_deref(),
            self.info.as_deref(),
        )
    }
}

/// The name of a protocol spoken inside TLS from the first byte: "https", "imaps", or
/// "ssl/NAME" where the protocol has no TLS name of its own.
pub fn tls_name(service: &str) -> String {
    match service {
        s @ ("http" | "imap" | "pop3" | "smtp" | "ldap" | "ftp" | "nntp" | "irc") => {
            format!("{s}s")
        }
        "ssl" | "tls" => service.to_owned(),
        s => format!("ssl/{s}"),
    }
}

/// "OpenSSH 9.2p1 (protocol 2.0)": product, version and info as one text (empty when a
/// match named the service only).
pub fn version_text(product: Option<&str>, version: Option<&str>, info: Option<&str>) -> String {
    let mut s = [product, version]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(info) = info {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push('(');
        s.push_str(info);
        s.push(')');
    }
    s
}

/// Where a service name came from, when detection ran (core's type, shared with the scan
/// record): heard from the service, or only the port number's registered name.
pub use portolan_core::ServiceSource;

/// What a reachable TCP service that said nothing at all did instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Silence {
    /// It reset the connection (RST) without a word.
    Reset,
    /// It closed the connection (FIN) without a word.
    Closed,
    /// It accepted and said nothing until the deadline.
    Quiet,
}

impl Silence {
    /// What it did, in a few words.
    pub const fn text(self) -> &'static str {
        match self {
            Silence::Reset => "reset the connection without a word",
            Silence::Closed => "closed the connection without a word",
            Silence::Quiet => "accepted and said nothing until the deadline",
        }
    }

    /// From how each read of a run ended (the banner's first, then the probes' in order,
    /// with a reset during a connect counted as a read's): the first reset or close, else
    /// quiet when a read waited to its deadline (a read stopped for another reason tells
    /// nothing either way).
    fn of(ends: &[End]) -> Option<Silence> {
        ends.iter()
            .find_map(|e| match e {
                End::Reset => Some(Silence::Reset),
                End::Closed => Some(Silence::Closed),
                _ => None,
            })
            .or_else(|| ends.contains(&End::Deadline).then_some(Silence::Quiet))
    }
}

/// How a read that got nothing ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed (read returned 0).
    Closed,
    /// The peer reset the connection.
    Reset,
    /// The deadline passed.
    Deadline,
    /// Data came, or the read was stopped or failed otherwise.
    Other,
}

impl End {
    /// How a connect that failed ended, when the service itself ended it: a reset after
    /// the handshake completed (a closed port refuses the SYN: ConnectionRefused, an error)
    /// is the same silence as a reset on a read.
    fn of_connect(e: &std::io::Error) -> Option<End> {
        (e.kind() == ErrorKind::ConnectionReset).then_some(End::Reset)
    }
}

/// Everything learned about one port.
#[derive(Debug, Clone)]
pub struct Report {
    pub addr: SocketAddr,
    pub proto: Transport,
    /// Why no connection could be made (`None`: it was reachable).
    pub error: Option<String>,
    pub identity: Option<Identity>,
    /// The first bytes the service sent (escaped), for unknown services or as evidence.
    pub banner: Option<String>,
    /// Round trip of the first connect.
    pub connect_ms: Option<f64>,
    /// The TLS handshake, when the port speaks TLS (at once or after STARTTLS).
    pub tls: Option<TlsInfo>,
    /// HTTP details, when an HTTP answer came (in clear or inside TLS).
    pub http: Option<HttpInfo>,
    /// For a reachable TCP port that said nothing to any probe (no identity, no banner, no
    /// TLS handshake): what it did instead.
    pub silence: Option<Silence>,
}

impl Report {
    /// A report of `addr` that learned nothing yet.
    pub(crate) fn new(addr: SocketAddr, proto: Transport) -> Report {
        Report {
            addr,
            proto,
            error: None,
            identity: None,
            banner: None,
            connect_ms: None,
            tls: None,
            http: None,
            silence: None,
        }
    }
}

/// Limits of one probe run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub connect_timeout: Duration,
    /// How long to wait for a service that speaks first.
    pub banner_wait: Duration,
    /// How long an active probe's answer may take (from the send).
    pub read_timeout: Duration,
    /// Bytes read per probe at most.
    pub read_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(3),
            banner_wait: Duration::from_secs(2),
            read_timeout: Duration::from_secs(3),
            read_limit: 16 * 1024,
        }
    }
}

/// After the first bytes of an answer, a silence this long ends it.
const QUIET: Duration = Duration::from_millis(250);
/// How often a read that another connection may make moot looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// The banner wait on ports where an active probe is known to fit.
const HINTED_BANNER_WAIT: Duration = Duration::from_millis(300);
/// Bytes of a banner kept for display.
const BANNER_KEEP: usize = 160;
/// Longest product, version or info string taken from an answer.
const FIELD_MAX: usize = 120;

/// Fills `$1`..`$9` from the captures (each cleaned by [`clean_group`]), then
/// [`cut_escaped`] to `FIELD_MAX` characters. Empty results (and leftover separators) give
/// `None`.
fn fill(template: Option<&String>, caps: &regex::bytes::Captures<'_>) -> Option<String> {
    let t = template?;
    let mut text = String::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            if let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                chars.next();
                if let Some(m) = caps.get(d as usize) {
                    text.push_str(&clean_group(m.as_bytes()));
                }
                continue;
            }
        }
        text.push(c);
    }
    // A template like "protocol $1; $3" with $3 absent leaves "protocol 2.0;".
    cut_escaped(text.trim().trim_matches(';'), FIELD_MAX)
}

/// A captured group as text for a product, version or info field. Terminal control
/// sequences are removed whole (CSI `ESC [ ... m` and its C1 form; OSC, DCS, SOS, PM and
/// APC strings up to BEL or ST; two-character `ESC x`), and the text ends at the first
/// other control or bidi character: a field is text, and a control character is where it
/// stops. Escaping instead would keep the sequence as visible text inside the value (a
/// version read as `2.0.0\x1b[31m`).
fn clean_group(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        let csi = match c {
            '\u{1b}' => match it.next() {
                Some('[') => true,
                Some(']' | 'P' | 'X' | '^' | '_') => false,
                // A two-character sequence (or a lone ESC at the end).
                Some(_) | None => continue,
            },
            '\u{9b}' => true,
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => false,
            c if is_dangerous(c) => break,
            c => {
                out.push(c);
                continue;
            }
        };
        if csi {
            // Parameters and intermediates, then one final character.
            while it.next_if(|c| ('\u{20}'..='\u{3f}').contains(c)).is_some() {}
            it.next_if(|c| ('\u{40}'..='\u{7e}').contains(c));
        } else {
            // A control string: up to BEL, ST (`ESC \\` or U+009C) or the end.
            while let Some(c) = it.next() {
                if c == '\u{7}' || c == '\u{9c}' {
                    break;
                }
                if c == '\u{1b}' {
                    it.next_if_eq(&'\\');
                    break;
                }
            }
        }
    }
    out
}

/// `s` trimmed and cut to `max` characters, then escaped once (so a cut never splits an
/// escape); empty gives `None`.
pub(crate) fn cut_escaped(s: &str, max: usize) -> Option<String> {
    let cut: String = s.trim().chars().take(max).collect();
    let e = for_terminal(cut.trim()).into_owned();
    (!e.is_empty()).then_some(e)
}

/// The first match of `probe`'s signatures against `data`; then of the banner signatures,
/// since a service that speaks first says the same whatever it was sent. `Identity.probe`
/// is the probe that was sent.
pub fn identify(sigs: &Signatures, probe: &str, data: &[u8]) -> Option<Identity> {
    identify_at(sigs, probe, data, false)
}

/// With `partial`, the answer may still be arriving: a match counts only when it
/// names a product or version and does not end at the last byte received (or the data
/// ends a line), so a version cut by a read boundary or a status line whose `Server:`
/// header is still on its way is not taken.
fn identify_at(sigs: &Signatures, probe: &str, data: &[u8], partial: bool) -> Option<Identity> {
    // A probe `like` another is matched with that one's patterns too (kinds stay in order:
    // the two probes' hard matches come before either's soft ones).
    let like = sigs
        .probes
        .iter()
        .find(|p| p.name == probe)
        .and_then(|p| p.like.as_deref());
    let own = sigs
        .matches
        .iter()
        .filter(|m| m.probe == probe || Some(m.probe.as_str()) == like);
    let banner = sigs
        .matches
        .iter()
        .filter(|m| probe != "banner" && m.probe == "banner");
    own.chain(banner).find_map(|m| {
        let caps = m.pattern.captures(data)?;
        if partial {
            let named = m.product.is_some() || m.version.is_some();
            let settled =
                caps.get(0).is_some_and(|c| c.end() < data.len()) || data.last() == Some(&b'\n');
            if !(named && settled) || m.weak {
                return None;
            }
        }
        Some(Identity {
            service: m.service.clone(),
            product: fill(m.product.as_ref(), &caps),
            version: fill(m.version.as_ref(), &caps),
            info: fill(m.info.as_ref(), &caps),
            cpe: fill(m.cpe.as_ref(), &caps),
            probe: probe.to_owned(),
            weak: m.weak,
        })
    })
}

/// A connection an answer can be read from: plain TCP, or TLS over TCP. Read waits are
/// set through the TCP socket.
trait Wire: Read + Write {
    /// The next read waits at most `wait`, and none starts after `deadline`.
    fn limit(&mut self, wait: Duration, deadline: Instant) -> std::io::Result<()>;
}

impl Wire for TcpStream {
    fn limit(&mut self, wait: Duration, _deadline: Instant) -> std::io::Result<()> {
        self.set_read_timeout(Some(wait))
    }
}

impl Wire for tls::TlsStream {
    fn limit(&mut self, wait: Duration, deadline: Instant) -> std::io::Result<()> {
        // rustls may read several records for one plaintext read: the deadline bounds them
        // all, not only the first.
        self.sock.limit(wait, deadline);
        Ok(())
    }
}

/// Reads until a signature of `probe` matches a settled answer, the peer closes, `limit`
/// bytes came, a pause follows the first bytes, the deadline passes, or soon after `stop`
/// is set (another connection to the same port already told what it is). Returns the bytes,
/// the match, and how a read that got nothing ended.
fn read_answer<S: Wire>(
    s: &mut S,
    sigs: &Signatures,
    probe: &str,
    deadline: Instant,
    limit: usize,
    stop: Option<&AtomicBool>,
) -> (Vec<u8>, Option<Identity>, End) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let mut last_data = Instant::now();
    let end = loop {
        // Once something came, a pause means the answer is complete: a service that said
        // "ERROR" and waits for the next command is not waited for until the deadline.
        let end = if data.is_empty() {
            deadline
        } else {
            deadline.min(last_data + QUIET)
        };
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break End::Deadline;
        }
        if data.len() >= limit || stop.is_some_and(|f| f.load(Ordering::Relaxed)) {
            break End::Other;
        }
        let wait = if stop.is_some() {
            left.min(STOP_POLL)
        } else {
            left
        };
        if s.limit(wait, deadline).is_err() {
            break End::Other;
        }
        match s.read(&mut buf) {
            Ok(0) => break End::Closed,
            Ok(n) => {
                let take = n.min(limit - data.len());
                data.extend_from_slice(&buf[..take]);
                last_data = Instant::now();
                // An HTTP answer is read to its end (close, pause or limit): the page after
                // the headers has the title and shows frameworks and debuggers.
                if data.starts_with(b"HTTP/") {
                    continue;
                }
                if let Some(id) = identify_at(sigs, probe, &data, true) {
                    return (data, Some(id), End::Other);
                }
            }
            // A wait that ran out: the loop decides whether the answer is over.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break End::Reset,
            Err(_) => break End::Other,
        }
    };
    let id = identify(sigs, probe, &data);
    let end = if data.is_empty() { end } else { End::Other };
    (data, id, end)
}

/// The UDP payloads for `port`, in the order a scan sends them: the UDP probes that name
/// the port, lowest rarity first (load order among equals). Empty when no probe names the
/// port: a scan sends an empty datagram there. `{host}` and `{nonce}` are filled in by
/// [`render_payload`].
pub fn udp_payloads(sigs: &Signatures, port: u16) -> Vec<&[u8]> {
    let mut named: Vec<&sig::Probe> = sigs
        .probes_for(Transport::Udp, port)
        .into_iter()
        .filter(|p| p.ports.contains(&port))
        .collect();
    named.sort_by_key(|p| p.rarity);
    named.into_iter().map(|p| p.send.as_slice()).collect()
}

/// A probe's payload as sent to `host`: `{host}` and `{nonce}` replaced.
pub fn render_payload(send: &[u8], host: &str) -> Vec<u8> {
    with_host(send, host)
}

/// The payload with every `{host}` replaced (byte-wise: payloads may be binary).
fn with_host(send: &[u8], host: &str) -> Vec<u8> {
    const KEY: &[u8] = b"{host}";
    const NONCE: &[u8] = b"{nonce}";
    let mut out = Vec::with_capacity(send.len() + host.len());
    let mut i = 0;
    while i < send.len() {
        if send[i..].starts_with(KEY) {
            out.extend_from_slice(host.as_bytes());
            i += KEY.len();
        } else if send[i..].starts_with(NONCE) {
            out.extend_from_slice(nonce().as_bytes());
            i += NONCE.len();
        } else {
            out.push(send[i]);
            i += 1;
        }
    }
    out
}

/// Eight lower-case hex digits that differ from one payload to the next (in this process
/// and, by the process id and the clock, from other runs): `{nonce}` in a probe, for a
/// name a server wants unique per connection (an IRC nickname, 9 characters at most with
/// a one-letter prefix).
fn nonce() -> String {
    use std::sync::atomic::AtomicU32;
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = n
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(clock)
        .wrapping_add(std::process::id().rotate_left(16));
    format!("{mixed:08x}")
}

/// An escaped, shortened view of raw bytes.
pub fn banner_text(data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    let mut s = portolan_core::escape::bytes_for_terminal(&data[..data.len().min(BANNER_KEEP)]);
    if data.len() > BANNER_KEEP {
        s.push_str("...");
    }
    Some(s)
}

/// The HTTP Host value for an address: IPv6 literals in brackets.
fn host_header(addr: SocketAddr, name: Option<&str>) -> String {
    match (name, addr.ip()) {
        (Some(n), _) => n.to_owned(),
        (None, std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        (None, ip) => ip.to_string(),
    }
}

/// How long a ServerHello may take where TLS is only a guess (a silent port): TLS servers
/// answer a ClientHello at once, so a guess costs little on a port that is not TLS.
const GUESS_TLS_WAIT: Duration = Duration::from_secs(1);

/// Connects with the run's limits.
fn connect(addr: SocketAddr, o: &Options) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, o.connect_timeout)?;
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(o.read_timeout));
    Ok(s)
}

/// Probes one TCP port. `name` is the host name used in payloads (the HTTP Host header)
/// and sent as the TLS server name (SNI), if the user gave one; the address otherwise.
///
/// When TLS is tried (at most one handshake of this kind per port):
/// - on a port where TLS is the usual thing ([`tls::USUAL_PORTS`]), first, on the first
///   connection; if it fails the port is probed in clear on a fresh connection;
/// - on any other port, only when the port wants it: it stayed silent for the banner wait
///   (the ClientHello then goes on that same, still clean connection; where a probe is
///   known to fit the port, that probe goes first and TLS follows only if it got no answer
///   either), or a cleartext answer is a TLS alert or an HTTP 400 about a plain request to
///   an HTTPS port ([`tls::wants_tls`]). A port that is not TLS thus sees at most one
///   connection more than without TLS detection.
///
/// Inside TLS the banner is read again and the active probes are sent, each on a fresh TLS
/// session. After a cleartext identity of a protocol with an upgrade command (SMTP, IMAP,
/// POP3, FTP, PostgreSQL), STARTTLS is asked on the connection that identified it.
pub fn probe_tcp(addr: SocketAddr, name: Option<&str>, sigs: &Signatures, o: &Options) -> Report {
    let mut run = Run {
        addr,
        host: host_header(addr, name),
        server: tls::server_name(addr, name),
        sigs,
        o,
        tls_tried: false,
        ends: Vec::new(),
        weak: None,
        report: Report::new(addr, Transport::Tcp),
    };
    let t0 = Instant::now();
    let first = run.connect();
    let connect_ms = (t0.elapsed().as_secs_f64() * 1e5).round() / 100.0;
    match first {
        Ok(s) => {
            run.report.connect_ms = Some(connect_ms);
            run.start(s);
        }
        // Reset during the handshake: reachable, and recorded as the service's answer.
        Err(None) => run.report.connect_ms = Some(connect_ms),
        Err(Some(e)) => run.report.error = Some(e.to_string()),
    }
    let r = &mut run.report;
    if r.identity.is_none() {
        r.identity = run.weak.take();
    }
    if r.identity.is_none() && r.banner.is_none() && r.tls.is_none() && r.error.is_none() {
        r.silence = Silence::of(&run.ends);
    }
    run.report
}

/// Active probes in flight at the same time to one port (each on its own connection).
/// Every probe that waits on a silent service costs a read timeout, so this bounds what
/// a silent port costs: one timeout per this many probes. The probes sent on any port at
/// the default intensity (the cheap questions of the protocols that wait to be asked) fit
/// in one round; 24 connections at once is still below a default accept backlog.
pub(crate) const PARALLEL_PROBES: usize = 24;

/// One active probe's answer, with the connection it came on (STARTTLS continues there;
/// `None` when the service reset the connection during the handshake).
struct Asked {
    stream: Option<TcpStream>,
    answer: Vec<u8>,
    id: Option<Identity>,
    /// How the read ended when nothing came.
    end: End,
}

/// Sends `p` on the connection `conn` and reads the answer (cut short when `stop` is set).
/// A connection the service reset during the handshake is an answer with nothing in it
/// ([`End::of_connect`]); `None` when the connect failed otherwise or the send failed.
fn ask(
    conn: std::io::Result<TcpStream>,
    p: &Probe,
    run: (&Signatures, &Options, &str),
    stop: Option<&AtomicBool>,
) -> Option<Asked> {
    let (sigs, o, host) = run;
    let mut s = match conn {
        Ok(s) => s,
        Err(e) => {
            return End::of_connect(&e).map(|end| Asked {
                stream: None,
                answer: Vec::new(),
                id: None,
                end,
            })
        }
    };
    s.write_all(&with_host(&p.send, host)).ok()?;
    let deadline = Instant::now() + o.read_timeout;
    let (answer, id, end) = read_answer(&mut s, sigs, &p.name, deadline, o.read_limit, stop);
    Some(Asked {
        stream: Some(s),
        answer,
        id,
        end,
    })
}

/// Whether two product names are the same software ("Prometheus Alertmanager" and
/// "Alertmanager"): equal, or one contains the other, ignoring case.
fn same_product(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    a.contains(&b) || b.contains(&a)
}

/// How much a match tells: a version beats a product beats a bare service; a weak match
/// tells least.
fn telling(id: Option<&Identity>) -> u8 {
    id.map_or(0, |id| {
        if id.weak {
            1
        } else {
            2 + u8::from(id.product.is_some()) + 2 * u8::from(id.version.is_some())
        }
    })
}

/// One port's probe in progress.
struct Run<'a> {
    addr: SocketAddr,
    /// The HTTP Host value.
    host: String,
    /// The TLS server name.
    server: rustls::pki_types::ServerName<'static>,
    sigs: &'a Signatures,
    o: &'a Options,
    /// Whether the port was already asked for TLS at once (STARTTLS and the sessions
    /// inside a working TLS port do not count).
    tls_tried: bool,
    /// How each read that got nothing ended, in order (the banner's first).
    ends: Vec<End>,
    /// The first weak match: the port's identity only if no other match comes.
    weak: Option<Identity>,
    report: Report,
}

impl<'a> Run<'a> {
    /// A fresh connection to the port. A reset during the handshake is the service's
    /// answer, recorded as a read's reset is ([`End::of_connect`]): `Err(None)`. Any other
    /// failure is `Err(Some(error))`.
    fn connect(&mut self) -> Result<TcpStream, Option<std::io::Error>> {
        connect(self.addr, self.o).map_err(|e| match End::of_connect(&e) {
            Some(end) => {
                self.ends.push(end);
                None
            }
            None => Some(e),
        })
    }

    /// An answer read on `s` ([`read_answer`]), recording how a read that got nothing
    /// ended.
    fn read<S: Wire>(
        &mut self,
        s: &mut S,
        probe: &str,
        deadline: Instant,
        stop: Option<&AtomicBool>,
    ) -> (Vec<u8>, Option<Identity>) {
        let (data, id, end) = read_answer(s, self.sigs, probe, deadline, self.o.read_limit, stop);
        self.ends.push(end);
        (data, id)
    }

    /// Handshake limits where TLS is expected.
    fn full(&self) -> tls::Limits {
        tls::Limits {
            first: self.o.read_timeout,
            total: self.o.read_timeout,
        }
    }

    /// Handshake limits where TLS is a guess.
    fn guess(&self) -> tls::Limits {
        tls::Limits {
            first: self
                .o
                .read_timeout
                .min(self.o.connect_timeout)
                .min(GUESS_TLS_WAIT),
            total: self.o.read_timeout,
        }
    }

    /// The active probes for the port, and whether the first is known to fit it.
    fn probes(&self) -> (Vec<&'a Probe>, bool) {
        let probes = self.sigs.active_probes(self.addr.port());
        let hinted = probes
            .first()
            .is_some_and(|p| p.ports.contains(&self.addr.port()));
        (probes, hinted)
    }

    /// How long to wait for a banner. Where a probe is known to fit the port, a silent
    /// service is not waited for long: a service that speaks first still shows itself in
    /// that probe's answer.
    fn banner_wait(&self, hinted: bool) -> Duration {
        if hinted {
            self.o.banner_wait.min(HINTED_BANNER_WAIT)
        } else {
            self.o.banner_wait
        }
    }

    fn start(&mut self, s: TcpStream) {
        if tls::usual_port(self.addr.port()) {
            if self.tls(s, self.full()) {
                return;
            }
            match self.connect() {
                Ok(s) => self.cleartext(s),
                Err(None) => {}
                Err(Some(e)) => self.report.error = Some(e.to_string()),
            }
        } else {
            self.cleartext(s);
        }
    }

    /// A TLS handshake on `s`; when it works, the report gets the session's details and
    /// the service is probed again inside. False when the port did not speak TLS there.
    fn tls(&mut self, s: TcpStream, limits: tls::Limits) -> bool {
        self.tls_tried = true;
        match tls::handshake(s, self.server.clone(), tls::Alpn::Web, limits) {
            Ok((t, info)) => {
                self.inside(t, info);
                true
            }
            Err(_) => false,
        }
    }

    /// TLS on a fresh connection.
    fn fresh_tls(&mut self, limits: tls::Limits) -> bool {
        self.tls_tried = true;
        match self.connect() {
            Ok(s) => self.tls(s, limits),
            Err(_) => false,
        }
    }

    /// When `answer` shows the port wants TLS (and it was not tried yet), TLS on a fresh
    /// connection. True when that worked; a cleartext identity is kept if the tunnel named
    /// nothing.
    fn tls_wanted(&mut self, answer: &[u8], id: Option<&Identity>) -> bool {
        if self.tls_tried || !tls::wants_tls(answer) || !self.fresh_tls(self.full()) {
            return false;
        }
        if self.report.identity.is_none() {
            self.report.identity = id.cloned();
        }
        true
    }

    /// The banner, then the active probes, in clear.
    fn cleartext(&mut self, mut s: TcpStream) {
        let (probes, hinted) = self.probes();
        let mut probes = probes.into_iter();
        let deadline = Instant::now() + self.banner_wait(hinted);
        // Where no probe is known to fit the port, the first probe goes out on a second
        // connection while the first waits for a banner: an HTTP server on an unusual port
        // is named in one round trip, not after the banner wait. `first` is `Some` when the
        // first probe was asked so.
        let beside = (!hinted).then(|| probes.next()).flatten();
        let mut closed = false;
        let (data, id, first) = if let Some(p) = beside {
            let (data, id, asked, shut) = self.banner_beside(&mut s, p, deadline);
            closed = shut;
            (data, id, Some(asked))
        } else {
            let (data, id) = self.read(&mut s, "banner", deadline, None);
            (data, id, None)
        };
        self.report.banner = banner_text(&data);
        if self.tls_wanted(&data, id.as_ref()) {
            return;
        }
        let id = id.and_then(|id| self.unless_weak(id));
        if let Some(id) = id {
            self.identified(s, id, &data);
            return;
        }
        // The first probe goes on the banner's connection when the service said nothing
        // there (the connection is still clean); the others each on a fresh one. A silent
        // port is asked for TLS on that clean connection.
        let mut clean = (data.is_empty() && !closed).then_some(s);
        let first = match first {
            // Asked already, beside the banner wait.
            Some(a) => a,
            None => probes.next().and_then(|p| {
                let s = clean.take().map_or_else(|| connect(self.addr, self.o), Ok);
                ask(s, p, (self.sigs, self.o, &self.host), None)
            }),
        };
        let rest: Vec<&Probe> = probes.collect();
        let mut guess_tls = false;
        if let Some(a) = first {
            let silent = a.id.is_none() && a.answer.is_empty();
            if self.settle(a) {
                return;
            }
            guess_tls = silent && data.is_empty() && !self.tls_tried;
        }
        // The others at once, each on its own connection: a silent service costs one read
        // timeout, not one per probe.
        let answers = if guess_tls {
            // Silent to the banner wait and to the first probe: maybe TLS. The ClientHello
            // goes out (on the clean connection) while the other probes do, so a silent
            // port costs one wait, not the TLS guess's and then the probes'.
            self.tls_tried = true;
            let conn = clean
                .take()
                .map_or_else(|| connect(self.addr, self.o).ok(), Some);
            let (server, limits) = (self.server.clone(), self.guess());
            let this = &*self;
            // A handshake that works stops the probes' waits: a server that serves one
            // connection at a time (openssl s_server) must be free again soon.
            let shook = AtomicBool::new(false);
            let (hs, answers) = std::thread::scope(|scope| {
                let shook = &shook;
                let h = scope.spawn(move || {
                    let hs =
                        conn.and_then(|c| tls::handshake(c, server, tls::Alpn::Web, limits).ok());
                    if hs.is_some() {
                        shook.store(true, Ordering::Relaxed);
                    }
                    hs
                });
                let answers = this.ask_all_until(&rest, shook);
                // A prober thread that panicked is a bug: its panic goes on up.
                let hs = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                (hs, answers)
            });
            if let Some((t, info)) = hs {
                // Their connections close first: a one-connection server is held by them.
                drop(answers);
                self.inside(t, info);
                return;
            }
            answers
        } else {
            self.ask_all(&rest)
        };
        let mut answers: Vec<Asked> = answers.into_iter().flatten().collect();
        // The most telling match first (a version, then a product), else probe order (the
        // sort is stable): two probes that both know the service, one better than the other,
        // both went out at once.
        answers.sort_by_key(|a| std::cmp::Reverse(telling(a.id.as_ref())));
        for a in answers {
            if self.settle(a) {
                return;
            }
        }
    }

    /// Reads the banner on `s` while `p` is asked on a second connection; whichever tells
    /// first stops the other's wait. When the banner wait ends in silence with the probe
    /// still unanswered, `s` is shut down (the last element is then true): a server that
    /// serves one connection at a time (gunicorn's default single worker) is held by the
    /// silent first connection and answers the second only once it is gone.
    fn banner_beside(
        &mut self,
        s: &mut TcpStream,
        p: &Probe,
        deadline: Instant,
    ) -> (Vec<u8>, Option<Identity>, Option<Asked>, bool) {
        let host = self.host.clone();
        let (addr, o, run) = (self.addr, self.o, (self.sigs, self.o, host.as_str()));
        let early = AtomicBool::new(false);
        let early = &early;
        std::thread::scope(|scope| {
            let other = scope.spawn(move || {
                let a = ask(connect(addr, o), p, run, Some(early));
                if a.as_ref().is_some_and(|a| a.id.is_some()) {
                    early.store(true, Ordering::Relaxed);
                }
                a
            });
            let (data, id) = self.read(s, "banner", deadline, Some(early));
            if id.is_some() {
                early.store(true, Ordering::Relaxed);
            }
            let shut = data.is_empty() && !other.is_finished() && {
                let _ = s.shutdown(std::net::Shutdown::Both);
                true
            };
            // A prober thread that panicked is a bug: its panic goes on up.
            let asked = other
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            (data, id, asked, shut)
        })
    }

    /// Each probe of `probes` on a fresh connection, up to [`PARALLEL_PROBES`] at a time
    /// (a sliding pool: a probe goes out as soon as one before it is done, so a silent
    /// service costs one read timeout per [`PARALLEL_PROBES`] probes at most, and often
    /// less); answers in the order of `probes` (`None` where no connection or send worked,
    /// or where a match with a version made the probe unneeded before it went out).
    fn ask_all(&self, probes: &[&Probe]) -> Vec<Option<Asked>> {
        self.ask_all_until(probes, &AtomicBool::new(false))
    }

    /// [`Run::ask_all`], cut short when `best` is set (by a match with a version, or by
    /// the caller: a TLS handshake that worked meanwhile).
    fn ask_all_until(&self, probes: &[&Probe], best: &AtomicBool) -> Vec<Option<Asked>> {
        let (addr, o) = (self.addr, self.o);
        let run = (self.sigs, self.o, self.host.as_str());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<Asked>>> =
            probes.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL_PROBES.min(probes.len()) {
                let (next, slots) = (&next, &slots);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = probes.get(i) else { break };
                    if best.load(Ordering::Relaxed) {
                        break;
                    }
                    let a = ask(connect(addr, o), p, run, Some(best));
                    if a.as_ref().is_some_and(|a| telling(a.id.as_ref()) >= 4) {
                        best.store(true, Ordering::Relaxed);
                    }
                    *slots[i]
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = a;
                });
            }
        });
        // A prober thread that panicked is a bug: the scope passes its panic on.
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            })
            .collect()
    }

    /// `id`, unless it is a weak match: that is kept aside (the first one) as the port's
    /// identity in case no other match comes, and the probing goes on.
    fn unless_weak(&mut self, id: Identity) -> Option<Identity> {
        if !id.weak {
            return Some(id);
        }
        self.weak.get_or_insert(id);
        None
    }

    /// Weighs one probe's answer: kept as the banner when none was seen yet, TLS when it
    /// asks for it, the identity when it matched. True when the port is settled.
    fn settle(&mut self, a: Asked) -> bool {
        self.ends.push(a.end);
        if self.report.banner.is_none() {
            self.report.banner = banner_text(&a.answer);
        }
        if self.tls_wanted(&a.answer, a.id.as_ref()) {
            return true;
        }
        match (a.id.and_then(|id| self.unless_weak(id)), a.stream) {
            (Some(id), Some(s)) => {
                self.identified(s, id, &a.answer);
                true
            }
            _ => false,
        }
    }

    /// A cleartext identity: its HTTP details, STARTTLS on the connection `s` that
    /// identified it when the protocol has it, and then, when the match named no version,
    /// the follow-up probes that may ([`Run::complete`]).
    fn identified(&mut self, s: TcpStream, id: Identity, answer: &[u8]) {
        if answer.starts_with(b"HTTP/") {
            self.report.http = http::details(answer);
        } else if id.service == "http" && http::is_h2_settings(answer) {
            self.report.http = Some(HttpInfo::h2_only());
        }
        let service = id.service.clone();
        // PostgreSQL's upgrade is the SSLRequest probe itself: 'S' means "go ahead". A
        // server named by another probe (the StartupMessage, which tells the version) is
        // sent an SSLRequest on a fresh connection.
        let pg_ready = id.probe == "postgres-ssl" && answer == b"S";
        let pg_other = service == "postgresql" && id.probe != "postgres-ssl";
        self.report.identity = Some(id.clone());
        if pg_other {
            drop(s);
            let deadline = Instant::now() + self.o.read_timeout;
            if let Ok(mut f) = connect(self.addr, self.o) {
                if tls::postgres_ssl_request(&mut f, deadline) {
                    self.starttls(f, &service);
                }
            }
        } else if (service != "postgresql" || pg_ready)
            && tls::STARTTLS_SERVICES.contains(&service.as_str())
        {
            if id.probe == "banner" || service == "postgresql" {
                self.starttls(s, &service);
            } else {
                // Named by another probe's answer (the greeting came on the probe's
                // connection, and the probe's lines after it): that connection has had
                // errors said on it (Dovecot counts them and hangs up). A fresh one: its
                // greeting read, then the upgrade.
                drop(s);
                if let Ok(mut f) = connect(self.addr, self.o) {
                    let deadline = Instant::now() + self.o.read_timeout;
                    let (greeting, _, _) = read_answer(
                        &mut f,
                        self.sigs,
                        "banner",
                        deadline,
                        self.o.read_limit,
                        None,
                    );
                    if !greeting.is_empty() {
                        self.starttls(f, &service);
                    }
                }
            }
        } else {
            drop(s);
        }
        // `s` is gone (upgraded, or dropped here): a server that serves one connection at a
        // time is free for the follow-ups.
        self.report.identity = Some(self.complete(id));
    }

    /// `id` completed by the follow-up probes when it names no version: the probes that
    /// know the same service with a product or version ([`Signatures::follow_ups`]: HTTP's
    /// path probes for an HTTP server whose front page names nothing) go out in the pool,
    /// and the most telling answer that agrees with `id` (same service, the same product
    /// where both name one) fills in what `id` lacks. Protocols first, then products: a
    /// port named by its protocol is asked that protocol's questions.
    fn complete(&mut self, id: Identity) -> Identity {
        if id.version.is_some() || id.weak {
            return id;
        }
        let follow = self
            .sigs
            .follow_ups(&id.service, &id.probe, self.addr.port());
        if follow.is_empty() {
            return id;
        }
        let mut best: Option<Identity> = None;
        for a in self.ask_all(&follow).into_iter().flatten() {
            self.ends.push(a.end);
            let Some(c) = a.id else { continue };
            let agrees = c.service == id.service
                && !c.weak
                && match (&id.product, &c.product) {
                    (Some(a), Some(b)) => same_product(a, b),
                    _ => true,
                };
            if agrees
                && telling(Some(&c)) > telling(Some(&id))
                && best
                    .as_ref()
                    .is_none_or(|b| telling(Some(&c)) > telling(Some(b)))
            {
                best = Some(c);
            }
        }
        match best {
            None => id,
            Some(c) => Identity {
                service: id.service,
                product: c.product.or(id.product),
                version: c.version,
                info: c.info.or(id.info),
                cpe: c.cpe.or(id.cpe),
                probe: c.probe,
                weak: false,
            },
        }
    }

    /// The upgrade command of `service`, then a handshake; the identity stays the
    /// cleartext one.
    fn starttls(&mut self, mut s: TcpStream, service: &str) {
        if !tls::upgrade(&mut s, service, Instant::now() + self.o.read_timeout) {
            return;
        }
        let limits = self.full();
        if let Ok((_, mut info)) = tls::handshake(s, self.server.clone(), tls::Alpn::Off, limits) {
            info.starttls = Some(service.to_owned());
            self.report.tls = Some(info);
        }
    }

    /// A fresh TLS session offering only HTTP/1.1 by ALPN, for one active probe.
    fn session(&self) -> Option<tls::TlsStream> {
        let s = connect(self.addr, self.o).ok()?;
        tls::handshake(s, self.server.clone(), tls::Alpn::Http1, self.full())
            .ok()
            .map(|(t, _)| t)
    }

    /// Probing again inside TLS: the banner on the first session, then the active probes,
    /// each on a fresh session. The identity keeps the inner protocol's name.
    fn inside(&mut self, mut t: tls::TlsStream, info: TlsInfo) {
        let h2 = info.alpn.as_deref() == Some("h2");
        self.report.tls = Some(info);
        let (probes, hinted) = self.probes();
        let mut said = false;
        // An h2 server's first bytes are its SETTINGS frame, not a banner, and HTTP/1.1
        // cannot follow on that session: it is closed (a server that takes one connection at
        // a time must be free for the next).
        let mut clean = None;
        if h2 {
            drop(t);
        } else {
            let deadline = Instant::now() + self.banner_wait(hinted);
            let (data, id) = self.read(&mut t, "banner", deadline, None);
            if !data.is_empty() {
                self.report.banner = banner_text(&data);
                said = true;
            }
            if id.is_some() {
                self.report.identity = id;
                return;
            }
            clean = data.is_empty().then_some(t);
        }
        for p in probes {
            let Some(mut t) = clean.take().or_else(|| self.session()) else {
                continue;
            };
            let payload = with_host(&p.send, &self.host);
            if t.write_all(&payload).and_then(|()| t.flush()).is_err() {
                continue;
            }
            let deadline = Instant::now() + self.o.read_timeout;
            let (answer, id) = self.read(&mut t, &p.name, deadline, None);
            if !said && !answer.is_empty() {
                self.report.banner = banner_text(&answer);
                said = true;
            }
            if let Some(id) = id {
                if answer.starts_with(b"HTTP/") {
                    self.report.http = http::details(&answer).map(|h| HttpInfo { http2: h2, ..h });
                }
                self.report.identity = Some(id);
                return;
            }
        }
        if h2 && self.report.identity.is_none() {
            // The server chose HTTP/2 by ALPN (its own statement), and no HTTP/1.1 answer
            // said more.
            self.report.http = Some(HttpInfo::h2_only());
            self.report.identity = Some(Identity {
                service: "http".to_owned(),
                product: None,
                version: None,
                info: None,
                cpe: None,
                probe: "tls-alpn".to_owned(),
                weak: false,
            });
        }
    }
}

/// A TLS handshake alone on `addr` (ALPN "h2", "http/1.1"; SNI for a host `name`), within
/// `o`'s connect and read timeouts: what it negotiated and the certificate, or why it failed.
pub fn tls_info(addr: SocketAddr, name: Option<&str>, o: &Options) -> Result<TlsInfo, String> {
    let s = connect(addr, o).map_err(|e| e.to_string())?;
    let limits = tls::Limits {
        first: o.read_timeout,
        total: o.read_timeout,
    };
    tls::handshake(s, tls::server_name(addr, name), tls::Alpn::Web, limits).map(|(_, info)| info)
}

/// Probes many ports with the same limits, `threads` at a time; reports come back in the
/// order given. The second element is the host name, if the user gave one.
pub fn probe_many(
    targets: &[(SocketAddr, Option<String>)],
    sigs: &Signatures,
    o: &Options,
    threads: usize,
) -> Vec<Report> {
    let with: Vec<(SocketAddr, Option<String>, Options)> =
        targets.iter().map(|(a, h)| (*a, h.clone(), *o)).collect();
    probe_many_with(&with, sigs, threads)
}

/// Probes many ports, each with its own limits (e.g. from its host's measured RTT),
/// `threads` at a time; reports come back in the order given, one per target.
pub fn probe_many_with(
    targets: &[(SocketAddr, Option<String>, Options)],
    sigs: &Signatures,
    threads: usize,
) -> Vec<Report> {
    on_pool(targets, threads, |(addr, name, o)| {
        probe_tcp(*addr, name.as_deref(), sigs, o)
    })
}

/// One port to probe: its address, the host name the user gave (the HTTP Host and the TLS
/// server name), and the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub name: Option<String>,
    pub transport: Transport,
}

/// Probes TCP and UDP targets with the same limits, both transports at the same time,
/// `threads` at a time each; one report per target, in the order given.
pub fn probe_targets(
    targets: &[Target],
    sigs: &Signatures,
    o: &Options,
    threads: usize,
) -> Vec<Report> {
    probe_pools(targets, sigs, o, threads, threads)
}

/// [`probe_targets`] with a pool size per transport: `tcp_threads` TCP and `udp_threads`
/// UDP targets at a time.
pub(crate) fn probe_pools(
    targets: &[Target],
    sigs: &Signatures,
    o: &Options,
    tcp_threads: usize,
    udp_threads: usize,
) -> Vec<Report> {
    let of = |want: Transport| -> Vec<(SocketAddr, Option<String>)> {
        targets
            .iter()
            .filter(|t| t.transport == want)
            .map(|t| (t.addr, t.name.clone()))
            .collect()
    };
    let (tcp, udp) = (of(Transport::Tcp), of(Transport::Udp));
    let (tcp, udp) = std::thread::scope(|s| {
        let u = s.spawn(|| udp::probe_many_udp(&udp, sigs, o, udp_threads));
        let t = probe_many(&tcp, sigs, o, tcp_threads);
        // A panic in the UDP worker is a bug: pass it on.
        let u = u.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (t, u)
    });
    let (mut tcp, mut udp) = (tcp.into_iter(), udp.into_iter());
    targets
        .iter()
        .filter_map(|t| match t.transport {
            Transport::Tcp => tcp.next(),
            Transport::Udp => udp.next(),
        })
        .collect()
}

/// `work` on each item, `threads` at a time (at most 64); results in the order of `items`.
pub(crate) fn on_pool<T: Sync, R: Send + Sync>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::OnceLock<R>> =
        items.iter().map(|_| std::sync::OnceLock::new()).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, 64).min(items.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else {
                    return;
                };
                let _ = results[i].set(work(item));
            });
        }
    });
    // A worker that panicked has already propagated its panic out of the scope, so every
    // cell is set here.
    results
        .into_iter()
        .filter_map(std::sync::OnceLock::into_inner)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(probe: &str, data: &[u8]) -> Option<Identity> {
        identify(&Signatures::builtin(), probe, data)
    }

    #[test]
    fn banners_name_products_and_versions() {
        let ssh = id("banner", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n").unwrap();
        assert_eq!(ssh.service, "ssh");
        assert_eq!(ssh.product.as_deref(), Some("OpenSSH"));
        assert_eq!(ssh.version.as_deref(), Some("9.2p1"));
        assert_eq!(ssh.info.as_deref(), Some("protocol 2.0; Debian-2+deb12u3"));
        assert_eq!(ssh.cpe.as_deref(), Some("cpe:/a:openbsd:openssh:9.2p1"));
        let bare = id("banner", b"SSH-2.0-OpenSSH_8.4\r\n").unwrap();
        assert_eq!(bare.info.as_deref(), Some("protocol 2.0"));
        let ftp = id("banner", b"220 (vsFTPd 3.0.3)\r\n").unwrap();
        assert_eq!(
            (ftp.service.as_str(), ftp.version.as_deref()),
            ("ftp", Some("3.0.3"))
        );
        let maria = id(
            "banner",
            b"\x5b\x00\x00\x00\x0a10.11.6-MariaDB-0+deb12u1\x00rest",
        )
        .unwrap();
        assert_eq!(maria.product.as_deref(), Some("MariaDB"));
        assert_eq!(maria.version.as_deref(), Some("10.11.6"));
        let web = id(
            "http-get",
            b"HTTP/1.1 200 OK\r\nServer: Werkzeug/2.2.2 Python/3.11.2\r\nDate: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(web.product.as_deref(), Some("Werkzeug httpd"));
        assert!(web.info.unwrap().contains("Flask"));
        let nginx = id(
            "http-get",
            b"HTTP/1.1 404 Not Found\r\nServer: nginx/1.22.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(nginx.version.as_deref(), Some("1.22.1"));
        assert!(id("banner", b"hello there\r\n").is_none());
    }

    #[test]
    fn control_sequences_are_cut_from_captured_fields() {
        for (raw, want) in [
            (&b"2.0.0\x1b[31m"[..], "2.0.0"),
            (b"\x1b[1;31m2.0\x1b[0m.1", "2.0.1"),
            // OSC (window title) up to BEL, and up to ST.
            (b"1.2\x1b]0;owned\x07.3", "1.2.3"),
            (b"1.2\x1b]0;owned\x1b\\.3", "1.2.3"),
            // C1 CSI (U+009B in UTF-8).
            (b"4.5\xc2\x9b31m", "4.5"),
            // Any other control or bidi character ends the field.
            (b"9.9\x00evil", "9.9"),
            (b"7.1\tx", "7.1"),
            ("3.0\u{202e}lave".as_bytes(), "3.0"),
            (b"plain 1.0", "plain 1.0"),
            (b"\x1b", ""),
        ] {
            assert_eq!(clean_group(raw), want, "{raw:?}");
        }
        let v = id(
            "http-get",
            b"HTTP/1.1 200 OK\r\nServer: Werkzeug/2.0.0\x1b[31m Python/3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(v.version.as_deref(), Some("2.0.0"));
    }

    #[test]
    fn a_nonce_differs_per_payload() {
        let a = with_host(b"NICK p{nonce} {host}", "zoo.test");
        let b = with_host(b"NICK p{nonce} {host}", "zoo.test");
        assert_ne!(a, b);
        for p in [&a, &b] {
            let t = std::str::from_utf8(p).unwrap();
            let nick = t
                .strip_prefix("NICK p")
                .unwrap()
                .strip_suffix(" zoo.test")
                .unwrap();
            assert_eq!(nick.len(), 8, "{t}");
            assert!(nick.bytes().all(|c| c.is_ascii_hexdigit()), "{t}");
        }
    }

    #[test]
    fn names_and_version_texts() {
        let mut ssh = id("banner", b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n").unwrap();
        assert_eq!(
            ssh.version_text(),
            "OpenSSH 9.2p1 (protocol 2.0; Debian-2+deb12u3)"
        );
        ssh.product = None;
        ssh.version = None;
        assert_eq!(ssh.version_text(), "(protocol 2.0; Debian-2+deb12u3)");
        ssh.info = None;
        assert_eq!(ssh.version_text(), "");
        let tls = TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "x".into(),
            alpn: None,
            starttls: None,
            cert: None,
            chain_len: 0,
        };
        let web = id("http-get", b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(web.service_over(None), "http");
        assert_eq!(web.service_over(Some(&tls)), "https");
        assert_eq!(ssh.service_over(Some(&tls)), "ssl/ssh");
        let upgraded = TlsInfo {
            starttls: Some("smtp".into()),
            ..tls
        };
        assert_eq!(web.service_over(Some(&upgraded)), "http");
    }

    #[test]
    fn silence_is_the_first_reset_or_close_else_quiet() {
        use End::{Closed, Deadline, Other, Reset};
        assert_eq!(
            Silence::of(&[Deadline, Closed, Reset]),
            Some(Silence::Closed)
        );
        assert_eq!(Silence::of(&[Reset, Closed]), Some(Silence::Reset));
        assert_eq!(Silence::of(&[Deadline, Other]), Some(Silence::Quiet));
        assert_eq!(Silence::of(&[Other]), None);
        assert_eq!(Silence::of(&[]), None);
    }

    #[test]
    fn hostile_answers_are_escaped_and_bounded() {
        // An SSH banner with escape sequences in the comment cannot carry them out.
        let evil = id("banner", b"SSH-2.0-OpenSSH_9.2 \x1b]0;owned\x07\x1b[2J\r\n").unwrap();
        let info = evil.info.unwrap();
        assert!(!info.chars().any(char::is_control), "{info:?}");
        // A huge version field is cut.
        let mut long = b"HTTP/1.0 200 OK\r\nServer: x/1".to_vec();
        long.extend(std::iter::repeat_n(b'9', 10_000));
        long.extend(b"\r\n\r\n");
        let r = id("http-get", &long).unwrap();
        assert!(r.version.unwrap().len() <= FIELD_MAX);
        let b = banner_text(&[0x1b, b'[', b'2', b'J', 0, 0xff]).unwrap();
        assert!(!b.chars().any(char::is_control), "{b:?}");
        assert_eq!(
            banner_text(&vec![b'a'; 1000]).unwrap().len(),
            BANNER_KEEP + 3
        );
        assert_eq!(banner_text(b"ok\xff").unwrap(), "ok\\xff");
    }
}
