//! `portolan serve`'s defences, over raw HTTP/1.1 (std's TcpStream; every header sent is
//! the test's own): the Host allow-list (DNS rebinding), the login token (one use), the
//! session cookie and the bearer token, cross-site and CSRF-less POSTs, actions only with
//! --allow-actions, the security headers on every response, the JSON API in the CLI's
//! shape, and the weight of the page's assets.
//!
//! Every test has its own server on a free loopback port, stopped on drop.

mod common;
#[path = "common/web.rs"]
mod web;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use common::{pid_alive, portolan_json, unique_comm, Listen, Py};
use web::{meta_csrf, references, session_cookie, Response, Serve, CSP};

fn python_ready() -> bool {
    portolan_testsupport::skip_unless(portolan_testsupport::program("python3"))
}

/// The security headers the contract puts on every response.
#[track_caller]
fn assert_security_headers(what: &str, r: &Response) {
    assert_eq!(
        r.header("content-security-policy"),
        Some(CSP),
        "{what}: Content-Security-Policy ({} {:?})",
        r.status,
        r.headers
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: X-Content-Type-Options"
    );
    assert_eq!(
        r.header("referrer-policy"),
        Some("no-referrer"),
        "{what}: Referrer-Policy"
    );
    assert_eq!(
        r.header("cache-control"),
        Some("no-store"),
        "{what}: Cache-Control"
    );
    let timing = r.header("server-timing").unwrap_or_default();
    let dur = timing
        .strip_prefix("app;dur=")
        .and_then(|d| d.parse::<f64>().ok());
    assert!(
        dur.is_some_and(|d| d >= 0.0 && d.is_finite()),
        "{what}: Server-Timing app;dur=MS, got {timing:?}"
    );
}

#[test]
fn a_foreign_host_header_is_refused_before_auth() {
    let serve = Serve::start(&["--allow-host", "dash.example"]);
    let auth = serve.bearer();
    let port = serve.port();
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "localhost".to_owned(),
        String::new(),
    ] {
        let host = host.as_str();
        // Without credentials too: the Host check comes first (403, not 401).
        let r = serve.request("GET", "/", &[("Host", host)], None);
        assert_eq!(r.status, 403, "Host: {host}, no credentials: {r:?}");
        let r = serve.request(
            "GET",
            "/api/ls",
            &[("Host", host), ("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 403, "Host: {host}, bearer: {r:?}");
        assert_security_headers(&format!("403 for Host {host}"), &r);
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("dash.example:{port}"),
        format!("DASH.example:{port}"),
    ] {
        let r = serve.request(
            "GET",
            "/api/ls",
            &[("Host", &host), ("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200, "Host: {host} is allowed: {:?}", r.text());
    }
}

#[test]
fn no_credentials_get_401() {
    let serve = Serve::start(&[]);
    for path in [
        "/",
        "/?view=table",
        "/ports/22",
        "/history",
        "/scans",
        "/api/ls",
        "/api/map",
        "/events",
    ] {
        let r = serve.request("GET", path, &[], None);
        assert_eq!(r.status, 401, "GET {path} without credentials: {r:?}");
        assert_security_headers(&format!("401 for {path}"), &r);
    }
    let r = serve.request(
        "GET",
        "/api/ls",
        &[("Authorization", &format!("Bearer {}", "0".repeat(64)))],
        None,
    );
    assert_eq!(r.status, 401, "a wrong bearer token: {r:?}");
    let r = serve.request(
        "GET",
        "/api/ls",
        &[("Cookie", "portolan_session=forged")],
        None,
    );
    assert_eq!(r.status, 401, "a forged session cookie: {r:?}");
    let r = serve.request("GET", &format!("/?token={}", "f".repeat(64)), &[], None);
    assert_eq!(r.status, 401, "a wrong login token: {r:?}");
}

#[test]
fn the_login_token_works_once_and_sets_a_strict_session_cookie() {
    let serve = Serve::start(&[]);
    let r = serve.request(
        "GET",
        &format!("/history?port=22&token={}", serve.token),
        &[],
        None,
    );
    assert_eq!(r.status, 303, "{r:?}");
    assert_security_headers("the login redirect", &r);
    assert_eq!(
        r.header("location"),
        Some("/history?port=22"),
        "the same path, without the token"
    );
    let set = r
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("portolan_session"))
        .unwrap_or_else(|| panic!("no session cookie: {r:?}"))
        .to_owned();
    let attrs: BTreeSet<String> = set
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    for want in ["httponly", "samesite=strict", "path=/"] {
        assert!(attrs.contains(want), "Set-Cookie {set:?} lacks {want}");
    }
    // Named after the port: cookies ignore ports, so two dashboards on one machine
    // would otherwise overwrite each other's session.
    assert!(
        set.starts_with(&format!("portolan_session_{}=", serve.port())),
        "the cookie carries the port in its name: {set:?}"
    );
    let cookie = session_cookie(&r).unwrap();
    assert!(
        !cookie.contains(&serve.token),
        "the session is not the token itself"
    );

    // Spent: a second use is refused, from the same client or another.
    let again = serve.request("GET", &format!("/?token={}", serve.token), &[], None);
    assert_eq!(again.status, 401, "the token's second use: {again:?}");

    // The cookie opens the pages; the page carries its CSRF token.
    let page = serve.request("GET", "/", &[("Cookie", &cookie)], None);
    assert_eq!(page.status, 200, "{page:?}");
    assert_security_headers("/ with the cookie", &page);
    let csrf = meta_csrf(&page.text()).expect("<meta name=\"csrf-token\">");
    assert!(csrf.len() >= 16, "a CSRF token worth the name: {csrf:?}");
    assert_ne!(csrf, serve.token);

    // The bearer token still works for scripts after the URL use.
    assert_eq!(serve.get_bearer("/api/ls").status, 200);
}

#[test]
fn the_login_redirect_stays_on_this_server() {
    for path in [
        "//evil.example/",
        "/\\evil.example/",
        "//evil.example/%2e%2e/",
    ] {
        // A fresh server for each: the token is spent by the first use.
        let serve = Serve::start(&[]);
        let r = serve.request("GET", &format!("{path}?token={}", serve.token), &[], None);
        assert_eq!(r.status, 303, "{path}: {r:?}");
        let to = r.header("location").unwrap_or_default();
        assert!(
            to.starts_with('/')
                && !to.starts_with("//")
                && !to.starts_with("/\\")
                && !to.contains("evil"),
            "{path}?token=...: the redirect must stay on this server, got Location {to:?}"
        );
        assert!(session_cookie(&r).is_some(), "{path}: {r:?}");
    }
}

/// A POST to /api/probe of a port that listens, as JSON, with these extra headers.
fn probe(serve: &Serve, port: u16, headers: &[(&str, &str)]) -> Response {
    let body = format!("{{\"port\":{port},\"proto\":\"tcp\"}}");
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    serve.request("POST", "/api/probe", &all, Some(body.as_bytes()))
}

#[test]
fn cookie_posts_need_the_page_s_origin_and_csrf_token_bearer_posts_neither() {
    if !python_ready() {
        return;
    }
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    let serve = Serve::start(&["--allow-actions"]);
    let (cookie, csrf) = serve.login();
    let origin = serve.origin.clone();

    let cases: [(&str, Vec<(&str, &str)>); 6] = [
        (
            "a cross-site POST (Origin: http://evil.example)",
            vec![
                ("Cookie", &cookie),
                ("Origin", "http://evil.example"),
                ("X-CSRF-Token", &csrf),
            ],
        ),
        (
            "a POST with no Origin",
            vec![("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        ),
        (
            "a POST from the origin of another port",
            vec![
                ("Cookie", &cookie),
                ("Origin", "http://127.0.0.1:1"),
                ("X-CSRF-Token", &csrf),
            ],
        ),
        (
            "a POST without X-CSRF-Token",
            vec![("Cookie", &cookie), ("Origin", &origin)],
        ),
        (
            "a POST with a wrong X-CSRF-Token",
            vec![
                ("Cookie", &cookie),
                ("Origin", &origin),
                ("X-CSRF-Token", "0123456789abcdef0123456789abcdef"),
            ],
        ),
        (
            "a POST with the session token as X-CSRF-Token",
            vec![
                ("Cookie", &cookie),
                ("Origin", &origin),
                ("X-CSRF-Token", cookie.split_once('=').map_or("", |c| c.1)),
            ],
        ),
    ];
    for (what, headers) in &cases {
        let r = probe(&serve, py.port, headers);
        assert_eq!(r.status, 403, "{what}: {:?} {}", r.headers, r.text());
        assert_security_headers(what, &r);
    }

    // The same POST with both is accepted: the 403s above were the checks' doing.
    let r = probe(
        &serve,
        py.port,
        &[
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("X-CSRF-Token", &csrf),
        ],
    );
    assert_eq!(r.status, 200, "cookie + Origin + CSRF token: {}", r.text());
    let _ = r.json();

    // Bearer: neither Origin nor CSRF token needed.
    let auth = serve.bearer();
    let r = probe(&serve, py.port, &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "bearer POST: {}", r.text());
    assert_security_headers("a bearer POST", &r);
}

#[test]
fn kill_without_allow_actions_is_refused_naming_the_flag() {
    if !python_ready() {
        return;
    }
    let mut py = Py::listen(Listen {
        comm: Some(&unique_comm()),
        ..Listen::tcp("127.0.0.1")
    });
    let serve = Serve::start(&[]);
    let auth = serve.bearer();
    let body = format!(
        "{{\"port\":{},\"proto\":\"tcp\",\"signal\":\"TERM\"}}",
        py.port
    );
    let r = serve.request(
        "POST",
        "/api/kill",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 403, "{:?} {}", r.headers, r.text());
    assert!(
        r.text().contains("--allow-actions"),
        "the refusal names --allow-actions: {}",
        r.text()
    );
    assert_security_headers("the refused kill", &r);

    // And with a browser's session too.
    let (cookie, csrf) = serve.login();
    let r = serve.request(
        "POST",
        "/api/kill",
        &[
            ("Cookie", &cookie),
            ("Origin", &serve.origin),
            ("X-CSRF-Token", &csrf),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 403, "{}", r.text());

    std::thread::sleep(Duration::from_millis(300));
    assert!(
        py.running() && pid_alive(py.pid),
        "the process was not signalled"
    );
    assert!(
        TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, py.port).into(),
            Duration::from_secs(2)
        )
        .is_ok(),
        "it still listens"
    );
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The union of the keys of every object in `v[field]` (an array).
fn record_keys(v: &Value, field: &str) -> BTreeSet<String> {
    v[field]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(keys)
        .collect()
}

#[test]
fn bearer_gets_the_api_in_the_cli_s_json_shape() {
    if !python_ready() {
        return;
    }
    let py = Py::listen(Listen {
        comm: Some(&unique_comm()),
        ..Listen::tcp("127.0.0.1")
    });
    let serve = Serve::start(&[]);
    let port = py.port.to_string();
    for (api, cli) in [
        ("/api/ls".to_owned(), vec!["ls", "--json"]),
        (format!("/api/who/{port}"), vec!["who", &port, "--json"]),
        (format!("/api/info/{port}"), vec!["info", &port, "--json"]),
    ] {
        let r = serve.get_bearer(&api);
        assert_eq!(r.status, 200, "{api}: {}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{api}: Content-Type {:?}",
            r.header("content-type")
        );
        assert_security_headers(&api, &r);
        let web = r.json();
        let cli_doc = portolan_json(&cli);
        assert_eq!(
            keys(&web),
            keys(&cli_doc),
            "{api} vs `portolan {}`: top-level keys",
            cli.join(" ")
        );
        if web.get("sockets").is_some() {
            assert_eq!(
                record_keys(&web, "sockets"),
                record_keys(&cli_doc, "sockets"),
                "{api} vs `portolan {}`: a socket record's keys",
                cli.join(" ")
            );
            let ours = web["sockets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["local_port"] == py.port && s["pid"] == py.pid);
            assert!(
                ours,
                "{api} lists the test's listener (port {port}, pid {})",
                py.pid
            );
        }
    }
}

#[test]
fn every_response_carries_the_security_headers() {
    let serve = Serve::start(&[]);
    let auth = serve.bearer();
    let page = serve.get_bearer("/");
    assert_eq!(page.status, 200);
    let mut targets: Vec<String> = vec![
        "/".into(),
        "/?view=table".into(),
        "/ports/22".into(),
        "/history".into(),
        "/scans".into(),
        "/api/ls".into(),
        "/api/map".into(),
        "/api/history".into(),
        "/api/audit".into(),
        "/api/scans".into(),
        "/no-such-page".into(),
        "/assets/no-such-asset.js".into(),
    ];
    targets.extend(
        references(&page.text())
            .into_iter()
            .filter(|u| u.starts_with("/assets/")),
    );
    for t in &targets {
        let r = serve.request("GET", t, &[("Authorization", &auth)], None);
        assert!(r.status < 500, "GET {t}: {} {}", r.status, r.text());
        assert_security_headers(&format!("GET {t} ({})", r.status), &r);
    }
    // Refusals carry them too.
    assert_security_headers("401", &serve.request("GET", "/", &[], None));
    assert_security_headers(
        "403",
        &serve.request("GET", "/", &[("Host", "evil.example")], None),
    );
    let r = serve.request(
        "POST",
        "/api/kill",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(b"{\"port\":1,\"proto\":\"tcp\",\"signal\":\"TERM\"}"),
    );
    assert_security_headers(&format!("POST /api/kill ({})", r.status), &r);
}

#[test]
fn the_page_s_assets_are_its_own_and_light() {
    let serve = Serve::start(&[]);
    let mut total = 0usize;
    let mut seen = BTreeSet::new();
    for page in ["/", "/?view=table", "/ports/22", "/history", "/scans"] {
        let r = serve.get_bearer(page);
        assert_eq!(r.status, 200, "{page}");
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{page}: {:?}",
            r.header("content-type")
        );
        let html = r.text();
        assert!(
            !html.contains("<script>")
                && !html.contains(" style=\"")
                && !html.contains(" onclick="),
            "{page}: inline script or style (the CSP refuses them)"
        );
        for u in references(&html) {
            assert!(
                u.starts_with('/') && !u.starts_with("//")
                    || u.starts_with('#')
                    || u.starts_with('?'),
                "{page} refers outside the server: {u:?}"
            );
            if page == "/" && u.starts_with("/assets/") && seen.insert(u.clone()) {
                let a = serve.get_bearer(&u);
                assert_eq!(a.status, 200, "{u}");
                let ct = a.header("content-type").unwrap_or_default().to_owned();
                if std::path::Path::new(&u)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("js"))
                {
                    assert!(ct.contains("javascript"), "{u}: Content-Type {ct:?}");
                } else if std::path::Path::new(&u)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("css"))
                {
                    assert!(ct.starts_with("text/css"), "{u}: Content-Type {ct:?}");
                }
                total += a.body.len();
            }
        }
    }
    assert!(!seen.is_empty(), "/ refers to no asset under /assets/");
    assert!(
        total < 200 * 1024,
        "what / loads from /assets/ weighs {total} bytes ({seen:?}); the budget is 200 KB"
    );
}
