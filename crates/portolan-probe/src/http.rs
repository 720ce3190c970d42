//! HTTP answers, read closer: status, Server header, page title, frameworks, HTTP/2.

use serde::Serialize;

/// What an HTTP answer told beyond the signature match. Every string is escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HttpInfo {
    /// "HTTP/1.1", "HTTP/1.0", "HTTP/2".
    pub protocol: String,
    pub status: u16,
    pub server: Option<String>,
    /// The `<title>` of the page, whitespace collapsed, cut to a readable length.
    pub title: Option<String>,
    /// Frameworks and platforms the answer shows (X-Powered-By, cookies, debug pages...).
    pub frameworks: Vec<String>,
    /// Whether the server speaks HTTP/2 (ALPN "h2", or an h2c answer to the preface).
    pub http2: bool,
}

/// The details of an HTTP/1.x answer: its protocol and status (from the status line).
/// `None` unless `answer` starts with a well-formed status line.
pub fn details(answer: &[u8]) -> Option<HttpInfo> {
    let end = answer.iter().position(|b| *b == b'\n')?;
    let line = answer[..end].strip_suffix(b"\r").unwrap_or(&answer[..end]);
    let mut parts = line.splitn(3, |b| *b == b' ');
    let protocol = parts.next()?;
    let status = parts.next()?;
    if !protocol.starts_with(b"HTTP/") || status.len() != 3 {
        return None;
    }
    let status: u16 = std::str::from_utf8(status).ok()?.parse().ok()?;
    Some(HttpInfo {
        protocol: portolan_core::escape::bytes_for_terminal(protocol),
        status,
        ..HttpInfo::default()
    })
}
