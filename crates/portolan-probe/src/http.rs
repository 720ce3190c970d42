//! HTTP answers, read closer: status, Server header, page title, frameworks, HTTP/2.
//!
//! The signature files name the server product and version; this reads what a person
//! looks at next: the status, the page's title, and the frameworks and platforms that the
//! headers, cookies or body give away (X-Powered-By, session cookie names, a Werkzeug
//! debugger page). Everything taken from the answer is escaped and cut.

use serde::Serialize;

use crate::cut_escaped as clean;

/// What an HTTP answer told beyond the signature match. Every string is escaped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HttpInfo {
    /// "HTTP/1.1", "HTTP/1.0", "HTTP/2".
    pub protocol: String,
    /// The status code; 0 when no HTTP/1 status line came (an h2c server's preface).
    pub status: u16,
    pub server: Option<String>,
    /// The `<title>` of the page, whitespace collapsed, cut to a readable length.
    pub title: Option<String>,
    /// Frameworks and platforms the answer shows (X-Powered-By, cookies, debug pages...).
    pub frameworks: Vec<String>,
    /// Whether the server speaks HTTP/2 (ALPN "h2", or an h2c answer to the preface).
    pub http2: bool,
}

/// Longest title kept, in characters.
const TITLE_MAX: usize = 100;
/// Longest header value kept, in characters.
const VALUE_MAX: usize = 120;
/// Most frameworks listed.
const FRAMEWORKS_MAX: usize = 8;

/// Session cookie names that give a platform away (facts about those platforms' defaults).
const COOKIES: &[(&str, &str)] = &[
    ("PHPSESSID", "PHP"),
    ("JSESSIONID", "Java servlet"),
    ("ASP.NET_SessionId", "ASP.NET"),
    (".AspNetCore.", "ASP.NET Core"),
    ("connect.sid", "Express"),
    ("csrftoken", "Django"),
    ("laravel_session", "Laravel"),
    ("_rails_session", "Ruby on Rails"),
    ("rack.session", "Rack"),
    ("ci_session", "CodeIgniter"),
    ("_xsrf", "Tornado"),
    ("grafana_session", "Grafana"),
];

/// Response headers whose presence names a platform.
const MARKER_HEADERS: &[(&str, &str)] = &[
    ("x-aspnet-version", "ASP.NET"),
    ("x-aspnetmvc-version", "ASP.NET MVC"),
    ("x-drupal-cache", "Drupal"),
    ("x-jenkins", "Jenkins"),
    ("x-influxdb-version", "InfluxDB"),
    ("x-grafana-version", "Grafana"),
    ("docker-distribution-api-version", "Docker registry"),
    ("api-version", "Docker Engine API"),
];

impl HttpInfo {
    /// HTTP/2 and nothing more: the server chose it (by ALPN, or an h2c preface) and no
    /// HTTP/1 answer said more.
    pub(crate) fn h2_only() -> HttpInfo {
        HttpInfo {
            protocol: "HTTP/2".to_owned(),
            http2: true,
            ..HttpInfo::default()
        }
    }
}

/// Reads an HTTP/1.x answer (status line, headers, and as much body as came). `None` when
/// `answer` does not start like one.
pub fn details(answer: &[u8]) -> Option<HttpInfo> {
    let head_end = find(answer, b"\r\n\r\n").map_or(answer.len(), |i| i + 4);
    let head = &answer[..head_end];
    let body = &answer[head_end..];
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let status_line = lines.next()?;
    let (protocol, status) = status_of(status_line)?;
    let mut info = HttpInfo {
        protocol: protocol.to_owned(),
        status,
        ..HttpInfo::default()
    };
    let mut found: Vec<String> = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..]);
        let value = value.trim();
        match name.as_str() {
            "server" => info.server = clean(value, VALUE_MAX),
            "x-powered-by" | "x-generator" => {
                if let Some(v) = clean(value, VALUE_MAX) {
                    found.push(v);
                }
            }
            "set-cookie" => {
                let cookie = value.split('=').next().unwrap_or("");
                if let Some((_, what)) = COOKIES.iter().find(|(c, _)| cookie.starts_with(c)) {
                    found.push((*what).to_owned());
                }
            }
            _ => {
                if let Some((_, what)) = MARKER_HEADERS.iter().find(|(h, _)| *h == name) {
                    found.push((*what).to_owned());
                }
            }
        }
    }
    info.title = title(body);
    // A page that says what it is: an interactive debugger is worth knowing about.
    if contains_ci(body, b"Werkzeug Debugger") || contains_ci(body, b"__debugger__") {
        found.push("Werkzeug debugger".to_owned());
    }
    if let Some(server) = &info.server {
        if server.contains("Werkzeug") {
            found.push("Flask/Werkzeug".to_owned());
        } else if server.starts_with("TornadoServer") {
            found.push("Tornado".to_owned());
        }
    }
    for f in found {
        if info.frameworks.len() < FRAMEWORKS_MAX && !info.frameworks.contains(&f) {
            info.frameworks.push(f);
        }
    }
    Some(info)
}

/// Whether `answer` starts with an HTTP/2 SETTINGS frame on stream 0: the preface of an
/// h2c server (RFC 9113 sections 3.4 and 6.5).
pub fn is_h2_settings(answer: &[u8]) -> bool {
    answer.len() >= 9 && answer[3] == 0x04 && answer[5..9] == [0, 0, 0, 0] && {
        let len =
            usize::from(answer[0]) << 16 | usize::from(answer[1]) << 8 | usize::from(answer[2]);
        // SETTINGS carry 6-byte entries; the ACK flag (1) is not a preface.
        len % 6 == 0 && answer[4] == 0
    }
}

/// `HTTP/1.1 200 OK` -> ("HTTP/1.1", 200).
fn status_of(line: &[u8]) -> Option<(&'static str, u16)> {
    let protocol = if line.starts_with(b"HTTP/1.1 ") {
        "HTTP/1.1"
    } else if line.starts_with(b"HTTP/1.0 ") {
        "HTTP/1.0"
    } else if line.starts_with(b"HTTP/2 ") || line.starts_with(b"HTTP/2.0 ") {
        "HTTP/2"
    } else {
        return None;
    };
    let rest = &line[line.iter().position(|&b| b == b' ')? + 1..];
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ') {
        return None;
    }
    let status = std::str::from_utf8(code).ok()?.parse().ok()?;
    Some((protocol, status))
}

/// The text of the first `<title>` element: entities decoded (the common ones),
/// whitespace collapsed, cut and escaped.
fn title(body: &[u8]) -> Option<String> {
    let lower: Vec<u8> = body.iter().map(u8::to_ascii_lowercase).collect();
    let open = find(&lower, b"<title")?;
    let start = open + lower[open..].iter().position(|&b| b == b'>')? + 1;
    let len = find(&lower[start..], b"</title").unwrap_or(lower.len() - start);
    let raw = String::from_utf8_lossy(&body[start..start + len]);
    let text = decode_entities(&raw);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    clean(&collapsed, TITLE_MAX)
}

/// `&amp;` `&lt;` `&gt;` `&quot;` `&#39;` and numeric references; others are left as they
/// are.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let name = &rest[1..e];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some(' '),
                _ => name.strip_prefix('#').and_then(|n| {
                    let code = match n.strip_prefix(['x', 'X']) {
                        Some(h) => u32::from_str_radix(h, 16).ok(),
                        None => n.parse().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            c.map(|c| (c, e))
        });
        if let Some((c, e)) = decoded {
            out.push(c);
            rest = &rest[e + 1..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_server_title_and_frameworks() {
        let a = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nX-Powered-By: PHP/8.2.7\r\n\
Set-Cookie: PHPSESSID=abc; path=/\r\nContent-Type: text/html\r\n\r\n\
<html><head><TITLE>\n  Welcome to  &amp; nginx!\n</title></head>";
        let h = details(a).unwrap();
        assert_eq!(h.protocol, "HTTP/1.1");
        assert_eq!(h.status, 200);
        assert_eq!(h.server.as_deref(), Some("nginx/1.22.1"));
        assert_eq!(h.title.as_deref(), Some("Welcome to & nginx!"));
        assert_eq!(h.frameworks, vec!["PHP/8.2.7", "PHP"]);
        assert!(!h.http2);
    }

    #[test]
    fn h2c_settings_preface() {
        // A SETTINGS frame with two entries (12 bytes), then a GOAWAY.
        let mut a = vec![0, 0, 12, 4, 0, 0, 0, 0, 0];
        a.extend([0, 3, 0, 0, 0, 128, 0, 4, 0, 0, 0xff, 0xff]);
        a.extend([0, 0, 8, 7, 0, 0, 0, 0, 0]);
        assert!(is_h2_settings(&a));
        assert!(!is_h2_settings(&a[..8]));
        // A SETTINGS ACK, or a frame on a stream, is not a preface.
        assert!(!is_h2_settings(&[0, 0, 0, 4, 1, 0, 0, 0, 0]));
        assert!(!is_h2_settings(&[0, 0, 0, 4, 0, 0, 0, 0, 1]));
        assert!(!is_h2_settings(b"HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn werkzeug_debugger_is_named() {
        let a =
            b"HTTP/1.1 500 INTERNAL SERVER ERROR\r\nServer: Werkzeug/2.2.2 Python/3.11.2\r\n\r\n\
<title>ZeroDivisionError // Werkzeug Debugger</title>";
        let h = details(a).unwrap();
        assert_eq!(h.status, 500);
        assert!(h.frameworks.contains(&"Werkzeug debugger".to_owned()));
        assert!(h.frameworks.contains(&"Flask/Werkzeug".to_owned()));
    }

    #[test]
    fn not_http_and_hostile_answers() {
        assert!(details(b"SSH-2.0-OpenSSH_9.2\r\n").is_none());
        assert!(details(b"HTTP/1.1 2x0 OK\r\n\r\n").is_none());
        assert!(details(b"HTTP/1.1 20").is_none());
        assert!(details(b"").is_none());
        // Escapes in a title or header cannot reach a terminal; long ones are cut.
        let mut a = b"HTTP/1.0 200 OK\r\nServer: \x1b]0;owned\x07x\r\n\r\n<title>\x1b[2J".to_vec();
        a.extend(std::iter::repeat_n(b'A', 5000));
        let h = details(&a).unwrap();
        for s in [h.server.unwrap(), h.title.clone().unwrap()] {
            assert!(!s.chars().any(char::is_control), "{s:?}");
        }
        assert!(h.title.unwrap().chars().count() <= TITLE_MAX + 16);
        // An unterminated or odd entity is kept as text; a huge numeric one is not a char.
        assert_eq!(
            decode_entities("a &b &#1114112; &#x41;"),
            "a &b &#1114112; A"
        );
        // No title element: none.
        assert!(details(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .title
            .is_none());
    }
}
