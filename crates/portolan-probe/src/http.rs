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
