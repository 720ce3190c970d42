//! `portolan serve` in a real browser: Debian's headless chromium, driven over WebDriver by
//! its chromedriver (tests/common/webdriver.rs), looks at the dashboard as a user does:
//! the map follows listeners as they open and close without a reload, the table filters
//! and sorts, a port's page says who holds it and what happened to it, kill asks first and
//! then frees the port, hostile process names stay text, and nothing is loaded from
//! anywhere but the server itself. Screenshots of each page go to target/screenshots/.
//!
//! Every test has its own server (`--listen 127.0.0.1:0`), its own chromedriver and
//! chromium (free ports, a fresh profile), its own listeners and temporary files; all are
//! stopped on drop. Without chromium and chromedriver a test says `skipped: ...` (a failure
//! under CI=true; scripts/test.sh installs them).
#![allow(clippy::print_stderr)] // where the screenshots went is said on stderr

mod common;
#[path = "common/web.rs"]
mod web;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use common::servers::Scratch;
use common::{portolan, unique_comm, wait_for, Listen, Py};
use portolan_testsupport::Netns;
use web::Serve;
use webdriver::Browser;

/// How soon the map must show a change (the server samples every second).
const LIVE: Duration = Duration::from_secs(2);
/// How long a page may take to show what it shows from the start.
const PAGE: Duration = Duration::from_secs(10);

/// Chromium, chromedriver and python3 (the listeners' processes) are there.
fn ready() -> bool {
    portolan_testsupport::skip_unless(portolan_testsupport::all([
        webdriver::installed(),
        portolan_testsupport::program("python3"),
    ]))
}

/// A browser logged in to `serve` (the printed URL, as a user pastes it): on the map,
/// with the token gone from the address bar.
fn logged_in(serve: &Serve) -> Browser {
    let b = Browser::start();
    b.goto(&serve.login_url);
    assert_eq!(
        b.url(),
        format!("{}/", serve.origin),
        "the login URL lands on the map without the token"
    );
    b
}

/// The CSS selector of the listener element for `port`/`proto`.
fn listener(port: u16, proto: &str) -> String {
    format!(".listener[data-port=\"{port}\"][data-proto=\"{proto}\"]")
}

/// A python listener on 127.0.0.1 (TCP, a free port) whose process is named `name`.
fn named_listener(name: &str) -> Py {
    Py::listen(Listen {
        comm: Some(name),
        ..Listen::tcp("127.0.0.1")
    })
}

/// The text of the first `.proc` in the element matching `sel` (null if no such element).
const PROC_TEXT: &str = "const el = document.querySelector(arguments[0]);\
     if (!el) return null;\
     const p = el.querySelector('.proc');\
     return p ? p.textContent : '';";

// ---------------------------------------------------------------------------------------
// The harness itself, on a page of its own

/// The WebDriver client and chromium work at all, on a trivial page served by python's
/// http.server on 127.0.0.1: find, type, click, run a script, read the network log, take a
/// screenshot. Separates a broken harness from a broken dashboard.
#[test]
fn the_harness_drives_chromium_on_a_trivial_page() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("harness-page");
    std::fs::write(
        dir.path("index.html"),
        "<!doctype html><title>t</title><input id=q><button id=b>go</button><p id=out></p>\
         <script src=\"app.js\"></script>",
    )
    .unwrap();
    std::fs::write(
        dir.path("app.js"),
        "document.getElementById('b').addEventListener('click', () => {\
           document.getElementById('out').textContent = 'got ' + document.getElementById('q').value; });",
    )
    .unwrap();
    let (_http, port) = http_server(&dir, "python3", dir.dir(), "127.0.0.1");
    let origin = format!("http://127.0.0.1:{port}");

    let b = Browser::start();
    b.goto(&format!("{origin}/index.html"));
    let q = b.wait_find("#q", PAGE);
    b.type_text(&q, "hello");
    b.click(&b.wait_find("#b", PAGE));
    let out = b.wait_find("#out", PAGE);
    assert!(
        wait_for(PAGE, || b.text(&out) == "got hello"),
        "{}",
        b.text(&out)
    );
    assert_eq!(b.execute("return 6 * 7;", &[]), json!(42));
    assert_eq!(
        b.execute("return arguments[0].id;", &[out.arg()]),
        json!("out")
    );
    let urls = b.requested_urls();
    assert!(
        urls.contains(&format!("{origin}/index.html"))
            && urls.contains(&format!("{origin}/app.js")),
        "{urls:?}"
    );
    let png = b.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let (w, h) = png_size(&png);
    assert_eq!((w, h), webdriver::WINDOW, "the viewport is 1280x800");

    // Dropping the browser ends chromium too: no process names its profile afterwards.
    let profile = b.profile().to_path_buf();
    drop(b);
    assert!(
        wait_for(Duration::from_secs(5), || !any_process_names(&profile)),
        "chromium outlived its Browser"
    );
}

/// `python3 -m http.server` on `bind` (a free port) serving `root`, run through a link
/// to the interpreter named `name` in `dir`, so that the process is called `name` (its
/// comm) and its command line stays short; killed on drop. Its port.
fn http_server(
    dir: &Scratch,
    name: &str,
    root: &std::path::Path,
    bind: &str,
) -> (common::KillOnDrop, u16) {
    let link = dir.path(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(common::python(), &link)
        .unwrap_or_else(|e| panic!("link {}: {e}", link.display()));
    let mut cmd = Command::new(&link);
    cmd.args(["-u", "-m", "http.server", "0", "--bind", bind])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = common::KillOnDrop(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("start {} -m http.server: {e}", link.display())),
    );
    let out = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let mut r = BufReader::new(out);
        let _ = r.read_line(&mut first);
        let _ = tx.send(first);
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let first = rx.recv_timeout(PAGE).unwrap_or_default();
    // "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
    let port = first
        .split(" port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("http.server said {first:?}"));
    (child, port)
}

fn any_process_names(dir: &std::path::Path) -> bool {
    let needle = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").is_ok_and(|procs| {
        procs.flatten().any(|p| {
            std::fs::read(p.path().join("cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
    })
}

/// Width and height from a PNG's IHDR.
fn png_size(png: &[u8]) -> (u32, u32) {
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

// ---------------------------------------------------------------------------------------
// The dashboard

/// (1) The map shows a listener within 2 s of its opening, and drops it within 2 s of its
/// closing, on the same page (live, no reload).
#[test]
fn the_map_follows_a_listener_live_without_a_reload() {
    if !ready() {
        return;
    }
    let serve = Serve::start(&[]);
    let b = logged_in(&serve);
    b.wait_find("#map", PAGE);
    // A mark on this very page: a reload or a navigation would lose it.
    b.execute("window.portolanTestMark = 'same page';", &[]);

    let name = unique_comm();
    let py = named_listener(&name);
    let sel = format!("#map {}", listener(py.port, "tcp"));
    let opened = Instant::now();
    b.wait_for(
        &format!("the map shows {name} on port {}", py.port),
        LIVE,
        "const el = document.querySelector(arguments[0]);\
         const p = el && el.querySelector('.proc');\
         return p !== null && p.textContent.includes(arguments[1]);",
        &[json!(sel), json!(name)],
    );
    let shown = opened.elapsed();
    let text = b.execute(PROC_TEXT, &[json!(sel)]);
    assert!(
        text.as_str().is_some_and(|t| t.contains(&name)),
        "the listener's .proc names its process {name:?}: {text}"
    );

    let port = py.port;
    drop(py);
    assert!(
        wait_for(Duration::from_secs(5), || TcpListener::bind((
            Ipv4Addr::LOCALHOST,
            port
        ))
        .is_ok()),
        "the listener closed"
    );
    let closed = Instant::now();
    b.wait_for(
        &format!("the map drops port {port}"),
        LIVE,
        "return document.querySelector(arguments[0]) === null && document.querySelector('#map') !== null;",
        &[json!(sel)],
    );
    let gone = closed.elapsed();
    assert_eq!(
        b.execute("return window.portolanTestMark;", &[]),
        json!("same page"),
        "the map changed without a reload"
    );
    assert_eq!(b.url(), format!("{}/", serve.origin));
    eprintln!("map: shown after {shown:?}, gone after {gone:?}");
}

/// The ports of the table's visible rows, in order, as numbers.
const VISIBLE_ROWS: &str = "return Array.from(document.querySelectorAll('#ports tr.listener'))\
     .filter(r => r.getClientRects().length > 0)\
     .map(r => [Number(r.dataset.port), r.dataset.proto]);";

fn visible_rows(b: &Browser) -> Vec<(u64, String)> {
    b.execute(VISIBLE_ROWS, &[])
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r[0].as_u64().expect("a numeric data-port"),
                r[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn monotonic(ports: &[u64]) -> Option<&'static str> {
    if ports.windows(2).all(|w| w[0] <= w[1]) {
        Some("ascending")
    } else if ports.windows(2).all(|w| w[0] >= w[1]) {
        Some("descending")
    } else {
        None
    }
}

/// (2) The table lists the listener; typing in #filter narrows the rows to it as one
/// types; clicking the port column's header sorts by port, both ways.
#[test]
fn the_table_filters_as_one_types_and_sorts_on_a_click() {
    if !ready() {
        return;
    }
    let serve = Serve::start(&[]);
    let a_name = unique_comm();
    let b_name = unique_comm();
    let a = named_listener(&a_name);
    let other = named_listener(&b_name);
    let b = logged_in(&serve);
    b.goto(&format!("{}/?view=table", serve.origin));
    let row_a = format!("#ports tr{}", listener(a.port, "tcp"));
    let row_b = format!("#ports tr{}", listener(other.port, "tcp"));
    b.wait_for(
        "the table lists both test listeners",
        PAGE,
        "return document.querySelector(arguments[0]) !== null && document.querySelector(arguments[1]) !== null;",
        &[json!(row_a), json!(row_b)],
    );
    let all = visible_rows(&b);
    assert!(all.len() >= 2, "{all:?}");
    // A row reads as one line: its cells side by side.
    let tops = b.execute(
        "return Array.from(document.querySelector(arguments[0]).cells)\
           .map(c => Math.round(c.getBoundingClientRect().top));",
        &[json!(row_a)],
    );
    let tops: Vec<i64> = tops
        .as_array()
        .expect("cell positions")
        .iter()
        .map(|t| t.as_i64().unwrap_or_default())
        .collect();
    assert!(
        tops.len() > 1 && tops.iter().all(|t| *t == tops[0]),
        "the table's row for port {} lays its cells out on one line (tops {tops:?})",
        a.port
    );
    assert!(
        b.execute(
            "return document.querySelector(arguments[0]).textContent.includes(arguments[1]);",
            &[json!(row_a), json!(a_name)]
        ) == json!(true),
        "the row names the process {a_name}"
    );

    // Filter: the process name of one listener leaves its row and hides the other's.
    let filter = b.wait_find("#filter", PAGE);
    b.type_text(&filter, &a_name);
    let shown = b.wait_for(
        &format!(
            "typing {a_name:?} in #filter narrows the rows to port {}",
            a.port
        ),
        LIVE,
        "const rows = Array.from(document.querySelectorAll('#ports tr.listener'))\
           .filter(r => r.getClientRects().length > 0);\
         const a = document.querySelector(arguments[0]), o = document.querySelector(arguments[1]);\
         const vis = e => e !== null && e.getClientRects().length > 0;\
         return vis(a) && !vis(o) ? rows.length : 0;",
        &[json!(row_a), json!(row_b)],
    );
    let narrowed = usize::try_from(shown.as_u64().unwrap()).unwrap();
    assert!(
        narrowed < all.len(),
        "{narrowed} rows after filtering, {} before",
        all.len()
    );
    b.clear(&filter);
    // Clearing may fire no input event in every browser; a key does.
    b.type_text(&filter, " \u{E003}");
    b.wait_for(
        "an empty filter shows every row again",
        LIVE,
        "const vis = e => e !== null && e.getClientRects().length > 0;\
         return vis(document.querySelector(arguments[0])) && vis(document.querySelector(arguments[1]));",
        &[json!(row_a), json!(row_b)],
    );

    // Sort: the header of the port column, clicked twice, orders the rows by port number
    // one way and then the other.
    let heads = b.execute(
        "return Array.from(document.querySelectorAll('#ports th[data-sort]'))\
           .map(t => [t.dataset.sort, t.textContent.trim()]);",
        &[],
    );
    let heads = heads.as_array().expect("header cells").clone();
    assert!(!heads.is_empty(), "no th[data-sort] in #ports");
    let port_col = heads
        .iter()
        .position(|h| {
            h[0].as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("port"))
                || h[1]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("port"))
        })
        .or_else(|| {
            heads.iter().position(|h| {
                h[0].as_str()
                    .is_some_and(|s| s.to_ascii_lowercase().contains("port"))
            })
        })
        .unwrap_or_else(|| panic!("no port column among {heads:?}"));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let before: Vec<u64> = visible_rows(&b).iter().map(|r| r.0).collect();
        let th = b.find_all("#ports th[data-sort]").swap_remove(port_col);
        b.click(&th);
        let start = Instant::now();
        let order = loop {
            let now: Vec<u64> = visible_rows(&b).iter().map(|r| r.0).collect();
            // The order the click gave: a change, or the same rows already in one order.
            if let Some(dir) = monotonic(&now) {
                if now != before || start.elapsed() > Duration::from_millis(500) {
                    break dir;
                }
            }
            assert!(
                start.elapsed() < LIVE,
                "a click on the port header left the rows unsorted: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        seen.push(order);
    }
    assert!(
        seen.contains(&"ascending") && seen.contains(&"descending"),
        "two clicks on the port header sort both ways: {seen:?}"
    );
    drop(other);
}

/// (3) A port's page: its number in the title, what it is (#info), who holds it (#who,
/// with the process's name and pid) and its history (#history).
#[test]
fn a_port_s_page_says_what_it_is_who_holds_it_and_its_history() {
    if !ready() {
        return;
    }
    let serve = Serve::start(&[]);
    let name = unique_comm();
    let py = named_listener(&name);
    let b = logged_in(&serve);
    b.goto(&format!("{}/ports/{}", serve.origin, py.port));
    let h1 = b.wait_find("h1", PAGE);
    assert!(
        b.text(&h1).contains(&py.port.to_string()),
        "h1 {:?}",
        b.text(&h1)
    );
    for section in ["#info", "#who", "#history"] {
        let e = b.wait_find(section, PAGE);
        assert!(b.displayed(&e), "{section} is shown");
    }
    let who = b.wait_find("#who", PAGE);
    let text = b.text(&who);
    assert!(
        text.contains(&name) && text.contains(&py.pid.to_string()),
        "#who names {name} (pid {}): {text:?}",
        py.pid
    );
}

/// (4) The history timeline shows the port's `opened` event, recorded by `portolan watch`
/// in the store that serve reads (`--db`), on /history and on the port's page.
#[test]
fn the_timeline_shows_an_opened_event_from_the_store() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("serve-history");
    let db = dir.arg("history.sqlite");
    // One sample without the listener, one with it: the second records it as opened.
    portolan(&["watch", "--db", &db, "--samples", "1", "-q"]).expect_code(0);
    let name = unique_comm();
    let py = named_listener(&name);
    portolan(&["watch", "--db", &db, "--samples", "1", "-q"]).expect_code(0);

    let serve = Serve::start(&["--db", &db]);
    let b = logged_in(&serve);
    b.goto(&format!("{}/history?port={}", serve.origin, py.port));
    b.wait_find("#timeline", PAGE);
    let ev = b.wait_for(
        &format!("an opened event for port {} in #timeline", py.port),
        PAGE,
        "return Array.from(document.querySelectorAll('#timeline li.event[data-kind=\"opened\"]'))\
           .map(e => e.textContent).find(t => t.includes(arguments[0])) || null;",
        &[json!(py.port.to_string())],
    );
    assert!(
        ev.as_str().is_some_and(|t| t.contains(&name)),
        "the opened event names the process {name}: {ev}"
    );

    b.goto(&format!("{}/ports/{}", serve.origin, py.port));
    b.wait_for(
        "the port page's #history tells it opened",
        PAGE,
        "const h = document.querySelector('#history');\
         return h !== null && (h.querySelector('[data-kind=\"opened\"]') !== null || h.textContent.includes('opened'));",
        &[],
    );
}

/// (5) Kill asks first: with --allow-actions, button.kill opens a dialog naming the
/// process; "no" leaves it running; "yes" ends it, the port is free, #action-result says so.
#[test]
fn kill_asks_first_then_frees_the_port() {
    if !ready() {
        return;
    }
    let serve = Serve::start(&["--allow-actions"]);
    let name = unique_comm();
    let mut py = named_listener(&name);
    let port = py.port;
    let b = logged_in(&serve);
    b.goto(&format!("{}/ports/{port}", serve.origin));
    let kill_sel = format!("button.kill[data-port=\"{port}\"][data-proto=\"tcp\"]");

    // Ask, then say no.
    b.click(&b.wait_find(&kill_sel, PAGE));
    let dialog = b.wait_find("dialog#confirm-kill", PAGE);
    b.wait_for(
        "the kill dialog opens",
        LIVE,
        "return document.querySelector('dialog#confirm-kill').open;",
        &[],
    );
    let said = b.text(&dialog);
    assert!(
        said.contains(&name),
        "the dialog names the process to signal ({name}): {said:?}"
    );
    b.click(&b.wait_find("#confirm-kill-no", PAGE));
    b.wait_for(
        "no closes the dialog",
        LIVE,
        "return !document.querySelector('dialog#confirm-kill').open;",
        &[],
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(py.running(), "no kept {name} alive");
    assert!(
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), LIVE).is_ok(),
        "port {port} still listens after no"
    );

    // Ask again, say yes.
    b.click(&b.wait_find(&kill_sel, PAGE));
    b.wait_for(
        "the kill dialog opens again",
        LIVE,
        "return document.querySelector('dialog#confirm-kill').open;",
        &[],
    );
    b.click(&b.wait_find("#confirm-kill-yes", PAGE));
    assert!(
        py.wait_exit(Duration::from_secs(10)).is_some(),
        "yes ended {name}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || TcpListener::bind((
            Ipv4Addr::LOCALHOST,
            port
        ))
        .is_ok()),
        "port {port} is free after the kill"
    );
    // Its outcome, once the request is answered (not the "signalling…" on the way).
    let result = b.wait_for(
        "#action-result tells the outcome",
        PAGE,
        "const r = document.querySelector('#action-result');\
         const t = r ? r.textContent.trim() : '';\
         return t.length > 0 && !t.endsWith('\\u2026') && !t.endsWith('...') ? t : null;",
        &[],
    );
    eprintln!("#action-result after the kill: {result}");
    let said = result.as_str().unwrap_or_default();
    assert!(
        said.contains(&port.to_string())
            && said.contains(&py.pid.to_string())
            && said.contains("free"),
        "#action-result says port {port} is free and whom it signalled (pid {}): {said:?}",
        py.pid
    );
}

/// (6) A process named with markup and an escape sequence shows as literal text, on the
/// map and on its port page: no element made from its name, no raw control byte.
#[test]
fn a_hostile_process_name_stays_text() {
    if !ready() {
        return;
    }
    let hostile = "<b>x</b>\x1b[31m"; // 13 bytes: fits comm's 15
    let serve = Serve::start(&[]);
    let py = named_listener(hostile);
    assert_eq!(py.comm(), hostile, "the kernel kept the name");
    let b = logged_in(&serve);
    let sel = format!("#map {}", listener(py.port, "tcp"));
    let check = "const el = document.querySelector(arguments[0]);\
         if (!el) return null;\
         return [el.textContent, el.querySelector('b') !== null, document.querySelectorAll('b').length];";
    let v = b.wait_for(
        "the map shows the hostile listener",
        PAGE,
        check,
        &[json!(sel)],
    );
    let text = v[0].as_str().unwrap_or_default();
    assert!(
        text.contains("<b>x</b>"),
        "the name as text on the map: {text:?}"
    );
    assert_eq!(
        v[1],
        json!(false),
        "no <b> element made from the name on the map"
    );
    assert!(!text.contains('\x1b'), "no raw ESC on the map: {text:?}");

    b.goto(&format!("{}/ports/{}", serve.origin, py.port));
    let v = b.wait_for(
        "the port page names the hostile process",
        PAGE,
        "const w = document.querySelector('#who');\
         if (!w || !w.textContent.includes('<b>')) return null;\
         return [w.textContent, w.querySelector('b') !== null, \
                 Array.from(document.querySelectorAll('b')).some(e => e.textContent === 'x')];",
        &[],
    );
    let text = v[0].as_str().unwrap_or_default();
    assert!(text.contains("<b>x</b>"), "#who: {text:?}");
    assert_eq!(
        v[1],
        json!(false),
        "no element made from the name in #who: {v}"
    );
    assert_eq!(
        v[2],
        json!(false),
        "no <b>x</b> element on the port page: {v}"
    );
    assert!(!text.contains('\x1b'), "no raw ESC in #who: {text:?}");
}

/// (7) Every page loads only from the server's own origin: every URL in the browser's
/// network log (and in the page's resource timings) is on it, and the console reports no
/// resource the Content-Security-Policy refused.
#[test]
fn pages_load_nothing_from_elsewhere() {
    if !ready() {
        return;
    }
    let dir = Scratch::new("serve-origin");
    let db = dir.arg("history.sqlite");
    portolan(&["watch", "--db", &db, "--samples", "1", "-q"]).expect_code(0);
    let py = named_listener(&unique_comm());
    let serve = Serve::start(&["--db", &db, "--allow-actions"]);
    let b = logged_in(&serve);
    let own = format!("{}/", serve.origin);
    let mut all: Vec<(String, String)> = b
        .requested_urls()
        .into_iter()
        .map(|u| ("the login".to_owned(), u))
        .collect();
    for page in [
        "/".to_owned(),
        "/?view=table".to_owned(),
        format!("/ports/{}", py.port),
        "/history".to_owned(),
        "/scans".to_owned(),
    ] {
        b.goto(&format!("{}{page}", serve.origin));
        b.wait_find("body", PAGE);
        // Time for what a page fetches after its load (the event stream, refreshes).
        std::thread::sleep(Duration::from_millis(1500));
        let timings = b.execute(
            "return performance.getEntries().map(e => e.name).filter(n => /^[a-z]+:/.test(n));",
            &[],
        );
        for t in timings.as_array().into_iter().flatten() {
            all.push((page.clone(), t.as_str().unwrap_or_default().to_owned()));
        }
        for u in b.requested_urls() {
            all.push((page.clone(), u));
        }
        let refused: Vec<String> = b
            .log("browser")
            .iter()
            .filter_map(|e| e["message"].as_str())
            .filter(|m| m.contains("Content Security Policy") || m.contains("Refused to"))
            .map(str::to_owned)
            .collect();
        assert!(
            refused.is_empty(),
            "{page}: the page tried what its CSP refuses: {refused:#?}"
        );
    }
    assert!(!all.is_empty(), "the network log recorded nothing");
    // The browser's own pages (its new-tab page before the first navigation) are no
    // network load.
    let internal = |u: &str| u.starts_with("chrome:") || u == "about:blank";
    let elsewhere: Vec<&(String, String)> = all
        .iter()
        .filter(|(_, u)| !u.starts_with(&own) && !internal(u))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "loaded from outside {own}: {elsewhere:#?}"
    );
}

/// target/screenshots/ (beside target/tmp).
fn screenshots_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp has a parent")
        .join("screenshots");
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
    d
}

/// (8) Screenshots of the map, the table, a port's page and the history, 1280x800 PNGs
/// in target/screenshots/ (the README's come from here: docs/screenshots/). As root, in a
/// network namespace of the test's own, so that they show the test's demo servers and
/// not whatever else the machine runs; elsewhere on the machine's own sockets.
#[test]
fn screenshots_of_every_page() {
    if !ready() {
        return;
    }
    if Netns::ready().is_ok() {
        let ns = Netns::new("shots");
        ns.run_in(take_screenshots);
    } else {
        take_screenshots();
    }
}

fn take_screenshots() {
    let dir = Scratch::new("serve-shots");
    let db = dir.arg("history.sqlite");
    let www = dir.path("www");
    std::fs::create_dir_all(&www).expect("mkdir www");
    let sample = || {
        portolan(&["watch", "--db", &db, "--samples", "1", "-q"]).expect_code(0);
    };
    // A history: a first look, four servers start, one of them stops again.
    sample();
    let (api, api_port) = http_server(&dir, "demo-api", &www, "127.0.0.1");
    let _cache = http_server(&dir, "demo-cache", &www, "127.0.0.1");
    let _web = http_server(&dir, "demo-web", &www, "0.0.0.0");
    let old = http_server(&dir, "demo-old", &www, "127.0.0.1");
    sample();
    drop(old);
    sample();
    let serve = Serve::start(&["--db", &db, "--allow-actions"]);
    let b = logged_in(&serve);
    let out = screenshots_dir();
    for (file, page, wait) in [
        (
            "map.png",
            "/".to_owned(),
            format!("#map {}", listener(api_port, "tcp")),
        ),
        (
            "table.png",
            "/?view=table".to_owned(),
            format!("#ports tr{}", listener(api_port, "tcp")),
        ),
        ("port.png", format!("/ports/{api_port}"), "#who".to_owned()),
        ("history.png", "/history".to_owned(), "#timeline".to_owned()),
    ] {
        b.goto(&format!("{}{page}", serve.origin));
        b.wait_find(&wait, PAGE);
        std::thread::sleep(Duration::from_millis(300));
        let png = b.screenshot();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{page}: a PNG");
        assert_eq!(png_size(&png), webdriver::WINDOW, "{page}: 1280x800");
        let path = out.join(file);
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!(
            "screenshot of {page}: {} ({} KB)",
            path.display(),
            png.len() / 1024
        );
    }
    drop(api);
}
