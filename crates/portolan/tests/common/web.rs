//! `portolan serve` for the dashboard's tests: the server started on a free loopback port
//! (its login URL read from its first stdout line), and raw HTTP/1.1 over
//! `std::net::TcpStream`, so that a test says exactly which headers go out and sees exactly
//! which come back. The WebDriver client (`webdriver.rs`) speaks through the same
//! [`exchange`].
//!
//! Included by the test binaries that need it as `#[path = "common/web.rs"] mod web;`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portolan");
/// How long the server may take to print its login URL.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one HTTP exchange with the server may take.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// The Content-Security-Policy every response carries (the contract's, verbatim).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1

/// One HTTP response as it came off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of this name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header of this name (any case).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as one JSON document; fails the test otherwise.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {}, body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Sends `request` (a whole HTTP/1.1 request, head and body) to `addr` and reads one
/// response: by Content-Length, chunked, or to EOF. Every step is bounded by `timeout`.
pub fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    stream.flush()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the connection closed inside the head".into()));
        }
        let field = line.trim_end_matches(['\r', '\n']);
        if field.is_empty() {
            break;
        }
        let (name, value) = field
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {field:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        if Instant::now() > deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
            if Instant::now() > deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad Content-Length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if !(100..200).contains(&status) && status != 204 && status != 304 {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A request's head and body as bytes: `METHOD target HTTP/1.1`, then `headers` in order
/// (nothing added but Content-Length when there is a body and `Connection: close`).
pub fn request_bytes(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (n, v) in headers {
        let _ = write!(head, "{n}: {v}\r\n");
    }
    if let Some(b) = body {
        let _ = write!(head, "Content-Length: {}\r\n", b.len());
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    out
}

// ---------------------------------------------------------------------------------------
// The server

/// A `portolan serve` of the test's own on 127.0.0.1 (a free port), stopped on drop.
#[derive(Debug)]
pub struct Serve {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, the pages' origin.
    pub origin: String,
    /// The one-time login token it printed (also its bearer token).
    pub token: String,
    /// The login URL exactly as printed.
    pub login_url: String,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `portolan serve --listen 127.0.0.1:0 --for 120s EXTRA...` and waits for its
    /// login URL (the first stdout line).
    pub fn start(extra: &[&str]) -> Serve {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--for", "120s"])
            .args(extra)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().expect("piped stderr");
        thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let _ = tx.send(first);
            // Whatever else it prints is read and dropped, so it never blocks on a pipe.
            let _ = io::copy(&mut r, &mut io::sink());
        });
        let first = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        let mut serve = Serve {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            origin: String::new(),
            token: String::new(),
            login_url: first.trim_end().to_owned(),
            stderr,
        };
        let Some((origin, token)) = parse_login_url(&serve.login_url) else {
            let status = serve.child.try_wait();
            thread::sleep(Duration::from_millis(100));
            panic!(
                "{what}: no login URL on its first stdout line within {START_TIMEOUT:?} \
                 (got {:?}; status {status:?}); stderr:\n{}",
                serve.login_url,
                serve.stderr()
            );
        };
        serve.addr = origin
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("login URL {:?}: not http://IP:PORT", serve.login_url));
        serve.origin = origin;
        serve.token = token;
        serve
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`, the Host header a browser sends.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One request with exactly these headers (plus Host: 127.0.0.1:PORT unless `headers`
    /// names a Host); fails the test if the exchange itself fails.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let host = self.host();
        let mut all: Vec<(&str, &str)> = Vec::new();
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            all.push(("Host", &host));
        }
        all.extend_from_slice(headers);
        exchange(
            self.addr,
            &request_bytes(method, target, &all, body),
            HTTP_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            panic!(
                "{method} {target} to {}: {e}; server stderr:\n{}",
                self.addr,
                self.stderr()
            )
        })
    }

    /// `Authorization: Bearer TOKEN`, as a header.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// GET with the bearer token.
    pub fn get_bearer(&self, target: &str) -> Response {
        let auth = self.bearer();
        self.request("GET", target, &[("Authorization", &auth)], None)
    }

    /// Logs in as a browser does (spending the URL token): the session cookie
    /// (`portolan_session=S`) and the page's CSRF token (from `/`'s meta tag).
    pub fn login(&self) -> (String, String) {
        let r = self.request("GET", &format!("/?token={}", self.token), &[], None);
        assert_eq!(r.status, 303, "login: {r:?}");
        let cookie = session_cookie(&r).unwrap_or_else(|| panic!("login set no session: {r:?}"));
        let page = self.request("GET", "/", &[("Cookie", &cookie)], None);
        assert_eq!(page.status, 200, "/ with the session cookie: {page:?}");
        let csrf = meta_csrf(&page.text())
            .unwrap_or_else(|| panic!("no <meta name=\"csrf-token\"> on /:\n{}", page.text()));
        (cookie, csrf)
    }

    /// Asks it to stop (SIGTERM) and waits up to `timeout`; its exit status, if it ended.
    pub fn stop(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) && self.stop(Duration::from_secs(5)).is_none()
        {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `(origin, token)` of a login URL `http://IP:PORT/?token=HEX64`.
pub fn parse_login_url(url: &str) -> Option<(String, String)> {
    let (origin, token) = url.split_once("/?token=")?;
    (origin.starts_with("http://")
        && token.len() == 64
        && token.bytes().all(|b| b.is_ascii_hexdigit()))
    .then(|| (origin.to_owned(), token.to_owned()))
}

/// `portolan_session=S` (the name as sent) from a response's Set-Cookie headers, to send
/// back as a `Cookie` header.
pub fn session_cookie(r: &Response) -> Option<String> {
    r.headers_named("set-cookie").into_iter().find_map(|c| {
        let pair = c.split(';').next()?.trim();
        pair.starts_with("portolan_session")
            .then(|| pair.to_owned())
    })
}

/// The `content` of `<meta name="csrf-token" content="...">` in a page.
pub fn meta_csrf(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf-token\"")?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let v = tag.split("content=\"").nth(1)?;
    Some(v[..v.find('"')?].to_owned())
}

/// Every `src="..."` and `href="..."` value in a page, in order.
pub fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    out
}
