//! Shared by the alert and metrics tests: events to send, and a tiny HTTP/1.1 receiver on
//! 127.0.0.1 that records what it is sent. Every loop here is bounded in count and time.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use portolan_core::{Exposure, Protocol};
use portolan_watch::model::{Event, EventKind, Listener, Owner, Previous};

/// A hostile process name: newlines, an ANSI sequence, a bell, shell syntax, quotes, a
/// backslash and a bidi override.
pub const HOSTILE: &str = "evil\n\x1b[31mred\x07 $(touch pwned) `id` 'q\" \\x1b \u{202e}gnp.exe";

pub fn owner(pid: u32, process: &str) -> Owner {
    Owner {
        pid: Some(pid),
        process: Some(process.to_owned()),
        exe: Some(format!("/usr/bin/{process}")),
        exe_deleted: false,
        user: Some("alice".into()),
        uid: 1000,
        unit: Some("app.service".into()),
        container: None,
    }
}

pub fn listener(address: &str, port: u16, owner: Owner) -> Listener {
    let address = address.parse().unwrap();
    Listener {
        proto: Protocol::Tcp,
        address,
        port,
        exposure: Exposure::of(address),
        owner,
    }
}

pub fn event(kind: EventKind, port: u16) -> Event {
    Event {
        ts_ms: 1_795_335_900_123,
        host: "web-3".into(),
        kind,
        listener: listener("0.0.0.0", port, owner(4242, "python3")),
        previous: None,
        note: None,
    }
}

pub fn with_previous(mut e: Event, address: &str, owner: Owner) -> Event {
    let address = address.parse().unwrap();
    e.previous = Some(Previous {
        address,
        exposure: Exposure::of(address),
        owner,
    });
    e
}

/// Polls `f` every 10 ms until it is true or `limit` passes; returns whether it became true.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A directory of its own under the system's temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("portolan-watch-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The events of a webhook body `{"events":[...]}`.
    pub fn events(&self) -> Vec<Event> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        let obj = v.as_object().expect("the body is one JSON object");
        assert_eq!(obj.len(), 1, "only `events` in the body: {v}");
        serde_json::from_value(obj["events"].clone()).unwrap()
    }
}

/// What the receiver does with a request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A status and extra header lines.
    Status(u16, &'static str),
    /// Read the request, then say nothing (the connection stays open until the receiver
    /// stops).
    Silence,
}

pub struct Receiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Answers the n-th request with `script[n]`, later ones with `then`.
    pub fn start(script: Vec<Answer>, then: Answer) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(60);
            let mut silent: Vec<TcpStream> = Vec::new();
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) && Instant::now() < end && n < 10_000 {
                let conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let Some(req) = read_request(&conn) else {
                    continue;
                };
                r.lock().unwrap().push(req);
                let answer = script.get(n).cloned().unwrap_or_else(|| then.clone());
                n += 1;
                match answer {
                    Answer::Status(code, extra) => {
                        let mut c = conn;
                        let _ = write!(
                            c,
                            "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n{extra}\r\nok"
                        );
                        let _ = c.flush();
                    }
                    Answer::Silence => silent.push(conn),
                }
            }
        });
        Receiver {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let at = Instant::now();
    let mut r = BufReader::new(conn);
    let mut first = String::new();
    r.read_line(&mut first).ok()?;
    let mut parts = first.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    for _ in 0..100 {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(16 << 20)];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        at,
        method,
        target,
        headers,
        body,
    })
}

/// A plain HTTP/1.1 GET with std: (status, headers, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status.parse().unwrap(), headers, body.to_owned())
}
