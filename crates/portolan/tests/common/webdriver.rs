//! A real browser for the dashboard's tests: Debian's chromium driven by its chromedriver,
//! through a minimal WebDriver client written here over `std::net::TcpStream` and
//! serde_json (the few commands the tests use; no async runtime, no extra crates).
//!
//! Each [`Browser`] starts a chromedriver of its own on a free loopback port and one
//! headless chromium session with a fresh profile directory; on drop the session is ended,
//! chromedriver's process group is killed, any process still using the profile is killed,
//! and the profile is removed. Chromium is told to reach nothing but loopback: no
//! background networking, no component updates, every name but localhost resolving to
//! nothing, and a proxy (a closed loopback port) for whatever is not loopback.
//!
//! Included by the test binaries that need it as `#[path = "common/webdriver.rs"] mod
//! webdriver;`, beside `web.rs` (as `mod web`).
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, kill_process_group, Pid, Signal};
use serde_json::{json, Value};

use crate::web::{exchange, request_bytes};

/// Debian's chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package chromium-driver).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one WebDriver command may take (a page load included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long chromedriver may take to say it is ready.
const DRIVER_READY: Duration = Duration::from_secs(20);
/// The window every test (and every screenshot) uses.
pub const WINDOW: (u32, u32) = (1280, 800);

/// `Ok` when chromium and chromedriver are installed, else the reason to give.
pub fn installed() -> Result<(), String> {
    portolan_testsupport::all([
        portolan_testsupport::program(CHROMIUM),
        portolan_testsupport::program(CHROMEDRIVER),
    ])
}

/// An element the browser found, by its WebDriver reference.
#[derive(Debug, Clone)]
pub struct Element {
    /// The reference object exactly as the driver gave it (`{"element-6066-...": ID}`),
    /// passed back as is to `execute` scripts.
    reference: Value,
    id: String,
}

impl Element {
    fn from_value(v: &Value) -> Option<Element> {
        let obj = v.as_object()?;
        let (key, id) = obj.iter().next()?;
        let id = id.as_str()?.to_owned();
        (key.starts_with("element-") || key == "ELEMENT").then(|| Element {
            reference: v.clone(),
            id,
        })
    }

    /// The reference, to pass as an argument to [`Browser::execute`].
    pub fn arg(&self) -> Value {
        self.reference.clone()
    }
}

/// A WebDriver error: the driver's `error` code and message.
#[derive(Debug, Clone)]
pub struct WdError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

/// A headless chromium of the test's own, driven over WebDriver.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "portolan-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Browser {
    /// Starts chromedriver and a chromium session (window 1280x800).
    pub fn start() -> Browser {
        let profile = unique_dir("chromium");
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile)
            .unwrap_or_else(|e| panic!("create {}: {e}", profile.display()));
        // A free port is picked, released, then given to chromedriver: another process may
        // take it in between, so a driver that does not come up is retried on another.
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let mut driver = Command::new(CHROMEDRIVER);
            driver
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-path={}",
                    profile.join("chromedriver.log").display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let child = driver
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
            let mut b = Browser {
                driver: child,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                session: String::new(),
                profile: profile.clone(),
            };
            if b.wait_driver_ready() {
                b.new_session();
                b.set_viewport(WINDOW.0, WINDOW.1);
                // Away from chromium's new-tab page, and what it loaded out of the
                // network log: the log then holds only what the test's pages load.
                b.goto("about:blank");
                let _ = b.log("performance");
                return b;
            }
            last = std::fs::read_to_string(profile.join("chromedriver.log")).unwrap_or_default();
            drop(b);
            std::fs::create_dir_all(&profile).expect("recreate the profile directory");
        }
        panic!("chromedriver did not come up on a free port (3 tries); its log:\n{last}");
    }

    fn wait_driver_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < DRIVER_READY {
            if matches!(self.driver.try_wait(), Ok(Some(_))) {
                return false;
            }
            if let Ok(v) = self.call("GET", "/status", None) {
                if v["ready"] == true {
                    return true;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn new_session(&mut self) {
        let data_dir = self.profile.join("profile");
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            format!("--user-data-dir={}", data_dir.display()),
            // Nothing but loopback, whatever a page or chromium itself asks for: names
            // other than localhost resolve to nothing, and what is not loopback goes to a
            // proxy on a loopback port where nothing listens (loopback bypasses proxies).
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]".to_owned(),
            "--proxy-server=127.0.0.1:9".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-client-side-phishing-detection".to_owned(),
            "--disable-domain-reliability".to_owned(),
            "--disable-breakpad".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--metrics-recording-only".to_owned(),
            "--password-store=basic".to_owned(),
            "--use-mock-keychain".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            "--hide-scrollbars".to_owned(),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {"pageLoad": 30_000, "script": 20_000, "implicit": 0},
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": args,
                    },
                    "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
                }
            }
        });
        let v = self
            .call("POST", "/session", Some(&caps))
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start chromium: {e:?}\nchromedriver log:\n{}",
                    self.driver_log()
                )
            });
        v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .clone_into(&mut self.session);
    }

    /// chromedriver's log so far (for failure messages).
    pub fn driver_log(&self) -> String {
        let log =
            std::fs::read_to_string(self.profile.join("chromedriver.log")).unwrap_or_default();
        // The tail is what matters.
        let cut = log.len().saturating_sub(8000);
        let cut = (cut..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        log[cut..].to_owned()
    }

    /// One WebDriver command: the response's `value`, or the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, WdError> {
        let host = self.addr.to_string();
        let payload = body.map(Value::to_string);
        let mut headers = vec![("Host", host.as_str())];
        if payload.is_some() {
            headers.push(("Content-Type", "application/json; charset=utf-8"));
        }
        let req = request_bytes(
            method,
            path,
            &headers,
            payload.as_deref().map(str::as_bytes),
        );
        let r = exchange(self.addr, &req, COMMAND_TIMEOUT).map_err(|e| WdError {
            status: 0,
            error: "transport".to_owned(),
            message: format!("{method} {path}: {e}"),
        })?;
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| WdError {
            status: r.status,
            error: "bad json".to_owned(),
            message: format!("{method} {path}: {e}: {}", r.text()),
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if r.status == 200 {
            Ok(value)
        } else {
            Err(WdError {
                status: r.status,
                error: value["error"].as_str().unwrap_or("?").to_owned(),
                message: format!(
                    "{method} {path}: {}",
                    value["message"].as_str().unwrap_or("")
                ),
            })
        }
    }

    /// A session command (`/session/ID/PATH`) that must succeed.
    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
            .unwrap_or_else(|e| panic!("WebDriver: {e:?}"))
    }

    /// Loads `url` and waits for the page's load event.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        let body = json!({"using": "css selector", "value": css});
        match self.call(
            "POST",
            &format!("/session/{}/element", self.session),
            Some(&body),
        ) {
            Ok(v) => Element::from_value(&v),
            Err(e) if e.error == "no such element" => None,
            Err(e) => panic!("WebDriver: find {css:?}: {e:?}"),
        }
    }

    /// Every element matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let body = json!({"using": "css selector", "value": css});
        self.cmd("POST", "/elements", Some(&body))
            .as_array()
            .map(|a| a.iter().filter_map(Element::from_value).collect())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for an element matching `css`.
    pub fn wait_find(&self, css: &str, timeout: Duration) -> Element {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                start.elapsed() < timeout,
                "no element {css:?} within {timeout:?} on {}; the page:\n{}",
                self.url(),
                self.page_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clicks an element as a user does (scrolled into view, a real mouse event).
    pub fn click(&self, e: &Element) {
        self.cmd(
            "POST",
            &format!("/element/{}/click", e.id),
            Some(&json!({})),
        );
    }

    /// Types `text` into an element, key by key.
    pub fn type_text(&self, e: &Element, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.id),
            Some(&json!({ "text": text })),
        );
    }

    /// Empties an input element.
    pub fn clear(&self, e: &Element) {
        self.cmd(
            "POST",
            &format!("/element/{}/clear", e.id),
            Some(&json!({})),
        );
    }

    /// An element's rendered text.
    pub fn text(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.id), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether an element is displayed (WebDriver's own notion of it).
    pub fn displayed(&self, e: &Element) -> bool {
        self.cmd("GET", &format!("/element/{}/displayed", e.id), None) == true
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns its value.
    pub fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` every 50 ms until it returns something truthy (not null, false, 0,
    /// "" or []) and returns that, or fails after `timeout` naming `what`.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str, args: &[Value]) -> Value {
        let start = Instant::now();
        loop {
            let v = self.execute(script, args);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(_) => true,
            };
            if truthy {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: not within {timeout:?} on {}; the page:\n{}",
                self.url(),
                self.page_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The page's visible text, for failure messages (cut to 4000 characters).
    pub fn page_text(&self) -> String {
        let v = self.call(
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(&json!({
                "script": "return document.body ? document.body.innerText : document.documentElement.outerHTML;",
                "args": []
            })),
        );
        match v {
            Ok(Value::String(s)) => s.chars().take(4000).collect(),
            other => format!("{other:?}"),
        }
    }

    /// Sets the window's outer size.
    pub fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        );
    }

    /// Sizes the window so that the page's viewport (what a screenshot shows) is
    /// `width` x `height`: headless chromium still counts a frame around it.
    pub fn set_viewport(&self, width: u32, height: u32) {
        self.set_window(width, height);
        let inner = self.execute("return [window.innerWidth, window.innerHeight];", &[]);
        let got = |i: usize| {
            u32::try_from(inner[i].as_u64().expect("inner size")).expect("a window size")
        };
        let (w, h) = (got(0), got(1));
        if (w, h) != (width, height) {
            self.set_window(
                width + width.saturating_sub(w),
                height + height.saturating_sub(h),
            );
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", None);
        base64_decode(b64.as_str().expect("screenshot: base64 text"))
            .expect("screenshot: valid base64")
    }

    /// The entries of one of the driver's logs (`performance`, `browser`) since the last
    /// call; each has `level`, `message` and `timestamp`.
    pub fn log(&self, kind: &str) -> Vec<Value> {
        self.cmd("POST", "/se/log", Some(&json!({ "type": kind })))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every URL the browser asked for since the last call to [`Browser::log`] for
    /// `performance` (requests, redirects, WebSockets), from the DevTools events in the
    /// performance log.
    pub fn requested_urls(&self) -> Vec<String> {
        let mut urls = Vec::new();
        for entry in self.log("performance") {
            let Some(msg) = entry["message"]
                .as_str()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
            else {
                continue;
            };
            let m = &msg["message"];
            let params = &m["params"];
            match m["method"].as_str().unwrap_or_default() {
                "Network.requestWillBeSent" => {
                    if let Some(u) = params["request"]["url"].as_str() {
                        urls.push(u.to_owned());
                    }
                    if let Some(u) = params["redirectResponse"]["url"].as_str() {
                        urls.push(u.to_owned());
                    }
                }
                "Network.webSocketCreated" | "Network.webTransportCreated" => {
                    if let Some(u) = params["url"].as_str() {
                        urls.push(u.to_owned());
                    }
                }
                "Network.responseReceived" => {
                    if let Some(u) = params["response"]["url"].as_str() {
                        urls.push(u.to_owned());
                    }
                }
                _ => {}
            }
        }
        urls
    }

    /// The profile directory (every chromium process of this browser names it).
    pub fn profile(&self) -> &Path {
        &self.profile
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(pgid) = i32::try_from(self.driver.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        kill_processes_naming(&self.profile);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Kills (SIGKILL) every process whose command line names `dir`: this browser's chromium
/// processes, should any have outlived the session and the driver.
fn kill_processes_naming(dir: &Path) {
    let needle = dir.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .filter(|&n| u32::try_from(n).ok() != Some(std::process::id()))
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

/// Standard base64 (with padding; whitespace ignored), as WebDriver sends screenshots.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).expect("a byte"));
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
