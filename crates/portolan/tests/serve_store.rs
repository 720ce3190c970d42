//! `portolan serve` over a real history store: what `portolan watch` recorded in SQLite
//! shows on the history timeline and on a port's page, and a PostgreSQL store that two
//! hosts share gets a host picker that narrows the timeline to one of them. Over plain
//! HTTP with the bearer token (the browser tests drive the same pages in chromium).

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{portolan, portolan_cmd, KillOnDrop};
use serde_json::Value;

struct Serve {
    _child: KillOnDrop,
    port: u16,
    token: String,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut argv = vec!["serve", "--listen", "127.0.0.1:0", "--for", "120s"];
        argv.extend_from_slice(args);
        let mut child = portolan_cmd(&argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start portolan serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the login URL");
        let url = line.trim().to_owned();
        let token = url.rsplit_once("token=").expect("a token").1.to_owned();
        let port = url
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a port in {url:?}"));
        Serve {
            _child: KillOnDrop(child),
            port,
            token,
        }
    }

    /// GET with the bearer token: status and body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.port, self.token
        )
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).expect("read the answer");
        let (head, body) = buf.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status");
        (status, body.to_owned())
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("portolan-serve-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `<li class="event" ...>` items of a timeline that mention `port`, as their kinds.
fn kinds_on(html: &str, port: u16) -> Vec<String> {
    html.split("<li class=\"event\" data-kind=\"")
        .skip(1)
        .filter(|li| {
            let li = li.split("</li>").next().unwrap_or("");
            li.contains(&format!(">{port}</a>"))
        })
        .map(|li| li.split('"').next().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn the_timeline_and_a_port_page_show_what_watch_recorded() {
    let dir = Scratch::new("sqlite");
    let db = dir.0.join("history.sqlite");
    let db_s = db.to_str().unwrap();
    let before = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let before_port = before.local_addr().unwrap().port();
    portolan(&["watch", "--db", db_s, "--samples", "1", "--quiet"]).expect_code(0);
    let opened = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let opened_port = opened.local_addr().unwrap().port();
    drop(before);
    portolan(&["watch", "--db", db_s, "--samples", "1", "--quiet"]).expect_code(0);

    let serve = Serve::start(&["--db", db_s]);
    let (code, page) = serve.get("/history");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<ol id=\"timeline\">"), "{page}");
    assert_eq!(kinds_on(&page, opened_port), ["opened"], "{page}");
    assert_eq!(kinds_on(&page, before_port), ["closed", "present"]);

    let (code, page) = serve.get(&format!("/ports/{opened_port}"));
    assert_eq!(code, 200);
    let history = page
        .split("<section id=\"history\">")
        .nth(1)
        .expect("#history");
    assert_eq!(kinds_on(history, opened_port), ["opened"], "{history}");
    // The port's page also says who holds it now (this test).
    let who = page.split("<section id=\"who\">").nth(1).expect("#who");
    assert!(who.contains(&format!("127.0.0.1:{opened_port}")), "{who}");

    // The same, as the command line's JSON.
    let (code, json) = serve.get(&format!("/api/history?port={opened_port}"));
    assert_eq!(code, 200, "{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["opened"]);
    // Hostile query values are refused, not passed on as flags.
    for bad in [
        "/api/history?port=-1",
        "/api/history?port=--db",
        "/history?since=%1b%5b2J",
    ] {
        let (code, body) = serve.get(bad);
        assert_eq!(code, 400, "{bad}: {body}");
        assert!(!body.contains('\u{1b}'), "{bad}: {body}");
    }
    drop(opened);
}

#[test]
fn a_shared_postgresql_store_gets_a_host_picker() {
    let Some(pg) = portolan_testbed::pg::PgServer::start() else {
        return;
    };
    let url = pg.fresh_db("servefleet");
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    for host in ["web-a", "web-b"] {
        portolan(&[
            "watch",
            "--store",
            &url,
            "--host",
            host,
            "--samples",
            "1",
            "--quiet",
        ])
        .expect_code(0);
    }
    let serve = Serve::start(&["--store", &url]);
    let (code, page) = serve.get("/history");
    assert_eq!(code, 200, "{page}");
    for host in ["web-a", "web-b"] {
        assert!(
            page.contains(&format!("<option value=\"{host}\">{host}</option>")),
            "no {host} in the picker: {page}"
        );
    }
    let (_, page) = serve.get(&format!("/history?host=web-b&port={port}"));
    assert!(page.contains("<option value=\"web-b\" selected>"), "{page}");
    assert_eq!(kinds_on(&page, port), ["present"], "{page}");
    assert!(!page.contains("<span class=\"tag\">web-a</span>"), "{page}");
    let (_, json) = serve.get("/api/history?host=web-a");
    let v: Value = serde_json::from_str(&json).unwrap();
    let events = v["events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["host"] == "web-a"), "{json}");
    drop(l);
}

/// The login link's redirect goes back to this server's own page, never elsewhere: a path
/// that a browser would read as another site (`//evil.example`) lands on `/`.
#[test]
fn the_login_redirect_stays_on_this_server() {
    let serve = Serve::start(&["--no-firewall"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", serve.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET //evil.example/x?token={}&view=table HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        serve.token, serve.port
    )
    .unwrap();
    let mut head = String::new();
    s.read_to_string(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("a Location header");
    assert_eq!(location, "/?view=table", "{head}");
    assert!(head.contains("HttpOnly; SameSite=Strict"), "{head}");
}
