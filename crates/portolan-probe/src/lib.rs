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
pub mod nmap_probes;
pub mod sig;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use portolan_core::escape::for_terminal;

pub use http::HttpInfo;
pub use sig::{Match, Probe, SigError, Signatures, Transport};
pub use tls::{CertInfo, TlsInfo};

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
/// The banner wait on ports where an active probe is known to fit.
const HINTED_BANNER_WAIT: Duration = Duration::from_millis(300);
/// Bytes of a banner kept for display.
const BANNER_KEEP: usize = 160;
/// Longest product, version or info string taken from an answer.
const FIELD_MAX: usize = 120;

/// Fills `$1`..`$9` from the captures, cuts the result to `FIELD_MAX` characters, then
/// escapes it once (so a cut never splits an escape). Empty results (and leftover
/// separators) give `None`.
fn fill(template: Option<&String>, caps: &regex::bytes::Captures<'_>) -> Option<String> {
    let t = template?;
    let mut raw: Vec<u8> = Vec::new();
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            if let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                chars.next();
                if let Some(m) = caps.get(d as usize) {
                    raw.extend_from_slice(m.as_bytes());
                }
                continue;
            }
        }
        let mut b = [0u8; 4];
        raw.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
    let text = String::from_utf8_lossy(&raw);
    // A template like "protocol $1; $3" with $3 absent leaves "protocol 2.0;".
    let cut: String = text
        .trim()
        .trim_matches(';')
        .trim()
        .chars()
        .take(FIELD_MAX)
        .collect();
    let cut = for_terminal(cut.trim()).into_owned();
    (!cut.is_empty()).then_some(cut)
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
    let own = sigs.matches.iter().filter(|m| m.probe == probe);
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
            if !(named && settled) {
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
        })
    })
}

/// Reads until a signature of `probe` matches a settled answer, the peer closes, `limit`
/// bytes came, a pause follows the first bytes, or the deadline passes. Returns the bytes
/// and the match.
fn read_answer(
    s: &mut TcpStream,
    sigs: &Signatures,
    probe: &str,
    deadline: Instant,
    limit: usize,
) -> (Vec<u8>, Option<Identity>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || data.len() >= limit {
            break;
        }
        // Once something came, a pause means the answer is complete: a service that said
        // "ERROR" and waits for the next command is not waited for until the deadline.
        let wait = if data.is_empty() {
            left
        } else {
            left.min(QUIET)
        };
        if s.set_read_timeout(Some(wait)).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let take = n.min(limit - data.len());
                data.extend_from_slice(&buf[..take]);
                if let Some(id) = identify_at(sigs, probe, &data, true) {
                    return (data, Some(id));
                }
            }
        }
    }
    let id = identify(sigs, probe, &data);
    (data, id)
}

/// The payload with every `{host}` replaced (byte-wise: payloads may be binary).
fn with_host(send: &[u8], host: &str) -> Vec<u8> {
    const KEY: &[u8] = b"{host}";
    let mut out = Vec::with_capacity(send.len() + host.len());
    let mut i = 0;
    while i < send.len() {
        if send[i..].starts_with(KEY) {
            out.extend_from_slice(host.as_bytes());
            i += KEY.len();
        } else {
            out.push(send[i]);
            i += 1;
        }
    }
    out
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

/// Probes one TCP port. `name` is the host name used in payloads (the HTTP Host header),
/// if the user gave one; the address otherwise.
pub fn probe_tcp(addr: SocketAddr, name: Option<&str>, sigs: &Signatures, o: &Options) -> Report {
    let mut report = Report {
        addr,
        proto: Transport::Tcp,
        tls: None,
        http: None,
        error: None,
        identity: None,
        banner: None,
        connect_ms: None,
    };
    let t0 = Instant::now();
    let mut s = match TcpStream::connect_timeout(&addr, o.connect_timeout) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.connect_ms = Some((t0.elapsed().as_secs_f64() * 1e5).round() / 100.0);
    let _ = s.set_nodelay(true);
    let probes = sigs.active_probes(addr.port());
    // 1. The banner. Where a probe is known to fit the port, a silent service is not waited
    // for long: a service that speaks first still shows itself in that probe's answer.
    let hinted = probes
        .first()
        .is_some_and(|p| p.ports.contains(&addr.port()));
    let wait = if hinted {
        o.banner_wait.min(HINTED_BANNER_WAIT)
    } else {
        o.banner_wait
    };
    let (data, id) = read_answer(&mut s, sigs, "banner", Instant::now() + wait, o.read_limit);
    report.banner = banner_text(&data);
    if id.is_some() {
        report.identity = id;
        return report;
    }
    // 2. Active probes. The first goes on the banner's connection when the service said
    // nothing there (the connection is still clean); the others each on a fresh one.
    let host = host_header(addr, name);
    let mut first = data.is_empty().then_some(s);
    for p in probes {
        let mut s = match first.take() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, o.connect_timeout) {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(o.read_timeout));
        if s.write_all(&with_host(&p.send, &host)).is_err() {
            continue;
        }
        let (answer, id) = read_answer(
            &mut s,
            sigs,
            &p.name,
            Instant::now() + o.read_timeout,
            o.read_limit,
        );
        if report.banner.is_none() {
            report.banner = banner_text(&answer);
        }
        if id.is_some() {
            report.identity = id;
            return report;
        }
    }
    report
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
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::OnceLock<Report>> =
        targets.iter().map(|_| std::sync::OnceLock::new()).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, 64).min(targets.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((addr, name, o)) = targets.get(i) else {
                    return;
                };
                let _ = results[i].set(probe_tcp(*addr, name.as_deref(), sigs, o));
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
