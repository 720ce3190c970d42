//! Service detection as people and programs read it: the `answers` object (of `probe`'s
//! results and of probed listeners in `ls`/`who`), its one-line text, the one-line TLS and
//! HTTP texts, and the report of `portolan probe`.
//!
//! A service name is either heard from the service (`service_source: "probe"`), heard from
//! an answer that only resembles the protocol (`"weak"`, a signature marked so), or only the
//! port table's name for the port number (`"port-table"`). The last two are guesses, which
//! tables print with a `?` after them, as nmap does.

use std::fmt::Write as _;
use std::io::{self, Write};

use portolan_probe::{HttpInfo, Report as Probe, ServiceSource, Silence, TlsInfo};
use portolan_probe::{Identity, Transport};
use serde::Serialize;

use super::{esc, write_table, Cell, Report, Style, GREEN, YELLOW};

/// The port table's name for a probed port (the guess when nothing was identified).
fn port_table(r: &Probe) -> Option<&'static str> {
    portolan_catalog::service_name(r.addr.port().into(), r.proto.into())
}

/// The JSON `answers` of a probed port (also the body of each `probe` result).
#[derive(Debug, Serialize)]
pub struct Answers<'a> {
    /// What answered, or else the port table's name for the port (see `service_source`).
    pub service: Option<&'a str>,
    /// `probe` (heard from the service), `weak` (an answer that resembles the protocol
    /// without proving it) or `port-table` (only guessed from the port number); absent
    /// when there is no name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_source: Option<ServiceSource>,
    pub product: Option<&'a str>,
    pub version: Option<&'a str>,
    pub info: Option<&'a str>,
    pub cpe: Option<&'a str>,
    pub banner: Option<&'a str>,
    /// A reachable TCP port that said nothing: `reset`, `closed` or `quiet` (accepted and
    /// said nothing until the deadline).
    pub silence: Option<Silence>,
    /// The TLS handshake (version, cipher, ALPN, certificate), when the port speaks TLS.
    pub tls: Option<&'a TlsInfo>,
    /// HTTP details (status, title, frameworks), when an HTTP answer came.
    pub http: Option<&'a HttpInfo>,
}

impl<'a> Answers<'a> {
    pub fn of(r: &'a Probe) -> Answers<'a> {
        let id = r.identity.as_ref();
        let (service, service_source) = match id {
            Some(i) => (
                Some(i.service.as_str()),
                Some(if i.weak {
                    ServiceSource::Weak
                } else {
                    ServiceSource::Probe
                }),
            ),
            None => match port_table(r) {
                Some(n) => (Some(n), Some(ServiceSource::PortTable)),
                None => (None, None),
            },
        };
        Answers {
            service,
            service_source,
            product: id.and_then(|i| i.product.as_deref()),
            version: id.and_then(|i| i.version.as_deref()),
            info: id.and_then(|i| i.info.as_deref()),
            cpe: id.and_then(|i| i.cpe.as_deref()),
            banner: r.banner.as_deref(),
            silence: r.silence,
            tls: r.tls.as_ref(),
            http: r.http.as_ref(),
        }
    }

    /// One line: "http Werkzeug httpd 2.2.2 (Python 3.11.2; ...)" for an identified
    /// service; else the port table's guess with a `?` (or "unknown") and what the port
    /// did: "mdns?: <what it said>", "unknown (reset the connection without a word)".
    pub fn text(r: &Probe) -> String {
        if let Some(id) = &r.identity {
            return identified_text(id, r.tls.as_ref());
        }
        if let Some(e) = error_text(r) {
            return e;
        }
        let name = guess_text(r);
        match (&r.banner, r.silence) {
            (Some(b), _) => format!("{name}: {}", cut_escaped(b, 40)),
            (None, Some(s)) => format!("{name} ({})", s.text()),
            (None, None) => format!("{name} (silent)"),
        }
    }
}

/// "https nginx 1.22.1": the TLS-wrapped name and product, version and info.
fn identified_text(id: &Identity, tls: Option<&TlsInfo>) -> String {
    let name = shown_name(id, tls);
    let v = id.version_text();
    if v.is_empty() {
        name
    } else {
        format!("{name} {v}")
    }
}

/// A probe's error as the tables show it: a UDP error is a finding ("closed (port
/// unreachable)", "no answer (open|filtered)"), a TCP one a failed connect.
fn error_text(r: &Probe) -> Option<String> {
    let e = esc(r.error.as_deref()?).into_owned();
    Some(match r.proto {
        Transport::Udp => e,
        Transport::Tcp => format!("unreachable: {e}"),
    })
}

/// The first `max` characters of text that is escaped already (a banner), never ending
/// inside one of its escapes (`\x1b`, `\u{202e}`), which would leave a broken one.
fn cut_escaped(s: &str, max: usize) -> &str {
    let end = s.char_indices().nth(max).map_or(s.len(), |(i, _)| i);
    let head = &s[..end];
    let Some(at) = head.rfind('\\') else {
        return head;
    };
    let rest = &s[at..];
    let token = if rest.starts_with("\\x") {
        4
    } else if rest.starts_with("\\u{") {
        rest.find('}').map_or(rest.len(), |i| i + 1)
    } else {
        2
    };
    if at + token > end {
        &s[..at]
    } else {
        head
    }
}

/// The service as heard ("https"), with a `?` when a weak match named it (a guess).
fn shown_name(id: &Identity, tls: Option<&TlsInfo>) -> String {
    let name = id.service_over(tls);
    if id.weak {
        format!("{name}?")
    } else {
        name
    }
}

/// The port table's name marked as a guess ("mdns?"), or "unknown".
fn guess_text(r: &Probe) -> String {
    port_table(r).map_or_else(|| "unknown".to_owned(), |n| format!("{n}?"))
}

/// One line about a TLS handshake: "TLSv1.3 TLS13_AES_256_GCM_SHA384, ALPN h2; certificate
/// CN=zoo.test (self-signed), valid until 2027-11-22T00:00:00Z, names zoo.test".
pub fn tls_text(t: &TlsInfo) -> String {
    let mut s = format!("{} {}", t.version, t.cipher);
    if let Some(p) = &t.starttls {
        let _ = write!(s, " (STARTTLS over {p})");
    }
    if let Some(a) = &t.alpn {
        let _ = write!(s, ", ALPN {a}");
    }
    if let Some(c) = &t.cert {
        let _ = write!(s, "; certificate {}", c.subject);
        let mut flags = Vec::new();
        if c.self_signed {
            flags.push("self-signed".to_owned());
        } else {
            flags.push(format!("issued by {}", c.issuer));
        }
        if c.expired {
            flags.push("EXPIRED".to_owned());
        }
        if c.not_yet_valid {
            flags.push("not valid yet".to_owned());
        }
        let _ = write!(s, " ({})", flags.join(", "));
        let _ = write!(s, ", valid until {}", c.not_after);
        if !c.sans.is_empty() {
            let _ = write!(s, ", names {}", c.sans.join(" "));
        }
    }
    s
}

/// One line about an HTTP answer: "200, title \"Welcome to nginx!\", PHP, HTTP/2".
pub fn http_text(h: &HttpInfo) -> String {
    // Status 0: no HTTP/1 status line came (an h2c preface).
    let mut parts: Vec<String> = (h.status != 0)
        .then(|| h.status.to_string())
        .into_iter()
        .collect();
    if let Some(t) = &h.title {
        parts.push(format!("title \"{t}\""));
    }
    parts.extend(h.frameworks.iter().cloned());
    if h.http2 {
        parts.push("HTTP/2".to_owned());
    }
    parts.join(", ")
}

/// One port of `portolan probe`: the engine's report and the host name the user gave.
#[derive(Debug)]
pub struct ProbeResult {
    pub report: Probe,
    pub hostname: Option<String>,
}

/// A result as JSON: where, whether it was reachable, and the answers.
#[derive(Serialize)]
struct ResultView<'a> {
    host: String,
    hostname: Option<&'a str>,
    port: u16,
    proto: Transport,
    reachable: bool,
    error: Option<&'a str>,
    connect_ms: Option<f64>,
    probe: Option<&'a str>,
    #[serde(flatten)]
    answers: Answers<'a>,
}

impl Serialize for ProbeResult {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let r = &self.report;
        ResultView {
            host: r.addr.ip().to_string(),
            hostname: self.hostname.as_deref(),
            port: r.addr.port(),
            proto: r.proto,
            reachable: r.error.is_none(),
            error: r.error.as_deref(),
            connect_ms: r.connect_ms,
            probe: r.identity.as_ref().map(|i| i.probe.as_str()),
            answers: Answers::of(r),
        }
        .serialize(ser)
    }
}

/// The report of `portolan probe`: one result per target, in the order given. JSON:
/// `{"results": [...]}`; JSON Lines: one result a line.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub results: Vec<ProbeResult>,
}

/// `127.0.0.1:80`, `127.0.0.1:53/udp`: a report's address as the user would write it.
fn address(r: &Probe) -> String {
    match r.proto {
        Transport::Tcp => r.addr.to_string(),
        Transport::Udp => format!("{}/udp", r.addr),
    }
}

impl Report for ProbeReport {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        let reports = || self.results.iter().map(|x| &x.report);
        let rows: Vec<Vec<Cell>> = reports()
            .map(|r| {
                let id = r.identity.as_ref();
                let what = match id {
                    Some(i) if i.weak => Cell::colored(shown_name(i, r.tls.as_ref()), YELLOW),
                    Some(i) => Cell::colored(shown_name(i, r.tls.as_ref()), GREEN),
                    None => Cell::plain(error_text(r).unwrap_or_else(|| guess_text(r))),
                };
                // Nothing identified: what the port did goes where the details would be.
                let info = match id {
                    Some(i) => i.info.clone().unwrap_or_default(),
                    None => r.silence.map(|s| s.text().to_owned()).unwrap_or_default(),
                };
                vec![
                    Cell::plain(address(r)),
                    what,
                    Cell::plain(id.and_then(|i| i.product.clone()).unwrap_or_default()),
                    Cell::plain(id.and_then(|i| i.version.clone()).unwrap_or_default()),
                    Cell::plain(info),
                ]
            })
            .collect();
        write_table(
            w,
            style,
            &["ADDRESS", "SERVICE", "PRODUCT", "VERSION", "INFO"],
            &rows,
            "",
        )?;
        for r in reports() {
            if r.identity.is_none() {
                if let Some(b) = &r.banner {
                    writeln!(w, "{} said: {b}", address(r))?;
                }
            }
            if let Some(cpe) = r.identity.as_ref().and_then(|i| i.cpe.as_ref()) {
                writeln!(w, "{} {cpe}", address(r))?;
            }
            if let Some(t) = &r.tls {
                writeln!(w, "{} TLS: {}", address(r), tls_text(t))?;
            }
            if let Some(h) = &r.http {
                writeln!(w, "{} HTTP: {}", address(r), http_text(h))?;
            }
        }
        Ok(())
    }

    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        super::write_jsonl(w, &self.results)
    }

    fn found(&self) -> bool {
        self.results.iter().any(|x| x.report.identity.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::cut_escaped;

    #[test]
    fn a_cut_never_splits_an_escape() {
        assert_eq!(cut_escaped("abcdef", 4), "abcd");
        assert_eq!(cut_escaped("ab\\x1bcd", 4), "ab");
        assert_eq!(cut_escaped("ab\\x1bcd", 6), "ab\\x1b");
        assert_eq!(cut_escaped("a\\u{202e}z", 5), "a");
        assert_eq!(cut_escaped("a\\u{202e}z", 9), "a\\u{202e}");
        assert_eq!(cut_escaped("a\\nb", 2), "a");
        assert_eq!(cut_escaped("short", 40), "short");
    }
}
