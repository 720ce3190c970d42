//! The dashboard (`portolan serve`): an edge like the CLI. It renders what the engines and
//! the command rooms give, and computes nothing they compute:
//!
//! - `model`: the live snapshot (the watch engine's sampler and tracker, the firewall's
//!   verdicts, the audit's findings), refreshed on a thread, pushed as server-sent events;
//! - `api`: JSON under `/api/` is the CLI's `--json`, run in-process through `crate::run`;
//! - `pages`: server-rendered HTML, every untrusted string through `html::Esc`;
//! - `auth`: the Host allow-list, the one-time login token and its cookie, the bearer token
//!   for scripts, Origin and CSRF checks on every state change;
//! - `assets/`: the style sheet and the one script, embedded in the binary.

pub mod api;
pub mod auth;
pub mod html;
pub mod model;
pub mod pages;
pub mod scans;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub use self::auth::HostName;
use self::auth::{Gate, Hosts, Token, Who};
use self::html::{Frame, Nav};
use self::model::Live;

/// What `serve` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    pub bound: SocketAddr,
    pub extra_hosts: Vec<HostName>,
    pub allow_actions: bool,
    pub scans: Vec<PathBuf>,
    /// The PostgreSQL of queued scans (`scan --queue`), listed on /scans.
    pub queue: Option<String>,
    pub db: Option<PathBuf>,
    pub store: Option<String>,
    pub interval: Duration,
    pub firewall: bool,
    pub duration: Option<Duration>,
    pub source: portolan_sockets::Source,
}

struct App {
    cfg: Config,
    host: String,
    gate: Mutex<Gate>,
    live: Arc<Live>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

type Shared = Arc<App>;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// Serves until SIGINT/SIGTERM or the end of `--for`; the listener is already bound.
pub fn serve(listener: std::net::TcpListener, cfg: Config, token: Token) -> anyhow::Result<()> {
    let host = portolan_watch::history::hostname();
    let live = model::start(model::Sampling {
        interval: cfg.interval,
        firewall: cfg.firewall,
        host: host.clone(),
    })?;
    let hosts = Hosts::new(cfg.bound, &cfg.extra_hosts, &host);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        gate: Mutex::new(Gate::new(token, hosts)),
        cfg,
        host,
        live: Arc::clone(&live),
        shutdown: stop_rx,
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("serve")
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let duration = app.cfg.duration;
        let router = router(Arc::clone(&app));
        let stop = async move {
            wait_for_stop(duration).await;
            let _ = stop_tx.send(true);
        };
        axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await?;
        anyhow::Ok(())
    });
    live.stop();
    // Open event streams ended with the stop signal; nothing else may hold the runtime.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn wait_for_stop(duration: Option<Duration>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = deadline => {}
        _ = async { match term.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
        _ = async { match int.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {}
    }
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ports", get(jump))
        .route("/ports/{port}", get(port_page))
        .route("/history", get(history_page))
        .route("/scans", get(scans_page))
        .route("/scans/queued/{id}", get(queued_scan_page))
        .route("/events", get(events))
        .route("/assets/{name}", get(asset))
        .route("/api/ls", get(api_ls))
        .route("/api/who/{port}", get(api_who))
        .route("/api/info/{port}", get(api_info))
        .route("/api/history", get(api_history))
        .route("/api/audit", get(api_audit))
        .route("/api/scans", get(api_scans))
        .route("/api/map", get(api_map))
        .route("/api/probe", post(api_probe))
        .route("/api/kill", post(api_kill))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), guard))
        .with_state(app)
}

fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/events"
}

/// A refusal: JSON under /api/, a short page elsewhere.
fn refuse(status: StatusCode, path: &str, text: &str) -> Response {
    if is_api(path) {
        (status, Json(serde_json::json!({ "error": text }))).into_response()
    } else {
        let title = status.canonical_reason().unwrap_or("refused");
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            pages::message_page(status.as_u16(), title, text),
        )
            .into_response()
    }
}

/// Every request passes here: the Host allow-list, then who it is (login token, cookie,
/// bearer), then for a state change the Origin and CSRF checks; every answer gets the
/// security headers and the server's own time.
async fn guard(State(app): State<Shared>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut resp = match admit(&app, &req) {
        Err(refusal) => refusal,
        Ok(who) => {
            if let Some(who) = who {
                req.extensions_mut().insert(who);
            }
            next.run(req).await
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        h.insert("server-timing", v);
    }
    resp
}

/// The decision of [`guard`], without waiting on anything: `Ok(None)` for an asset (no
/// login needed), `Ok(Some(who))` to go on, `Err` with the answer to give instead.
#[expect(
    clippy::result_large_err,
    reason = "the refusal is the answer; made once per refused request"
)]
fn admit(app: &App, req: &Request) -> Result<Option<Who>, Response> {
    let path = req.uri().path();
    let header_str =
        |name: header::HeaderName| req.headers().get(name).and_then(|h| h.to_str().ok());
    let mut gate = app
        .gate
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !gate.hosts.allows(header_str(header::HOST).unwrap_or("")) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            path,
            "this dashboard answers only to its own address (the Host header names another: DNS rebinding?); add --allow-host NAME for a name you use",
        ));
    }
    if path.starts_with("/assets/") {
        return Ok(None);
    }
    let (token, rest) = auth::take_token(req.uri().query().unwrap_or(""));
    if let Some(t) = token {
        let Some((id, _)) = gate.login(t) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                path,
                "this login link was used already or is wrong: a link works once; start portolan serve again for a new one",
            ));
        };
        // Back to the page asked for, without the token; never to another site (a path
        // that starts with `//` or holds a backslash would read as one).
        let path = if path.starts_with("//") || path.contains('\\') {
            "/"
        } else {
            path
        };
        let location = if rest.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{rest}")
        };
        let cookie = format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/",
            gate.cookie_name
        );
        return Err(Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, location)
            .header(header::SET_COOKIE, cookie)
            .body(Body::empty())
            .unwrap_or_default());
    }
    let cookies: Vec<&str> = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .collect();
    let Some(who) = gate.identify(header_str(header::AUTHORIZATION), &cookies) else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            path,
            "open the URL that `portolan serve` printed (its token becomes a cookie), or send Authorization: Bearer TOKEN",
        ));
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        && !auth::may_change(
            &who,
            &gate.hosts,
            header_str(header::ORIGIN),
            header_str(header::HeaderName::from_static("x-csrf-token")),
        )
    {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            path,
            "a change must come from this dashboard's own page (Origin and CSRF token checked)",
        ));
    }
    Ok(Some(who))
}

fn html(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn csrf_of(who: Option<&Who>) -> Option<String> {
    match who {
        Some(Who::Cookie { csrf }) => Some(csrf.clone()),
        _ => None,
    }
}

impl App {
    fn frame<'a>(&'a self, title: &'a str, nav: Nav, csrf: Option<&'a str>) -> Frame<'a> {
        Frame {
            title,
            host: &self.host,
            nav,
            csrf,
            actions: self.cfg.allow_actions,
        }
    }

    /// `portolan ARGS --json`, on a blocking thread.
    async fn cli(self: &Arc<Self>, args: Vec<String>) -> Result<api::CliJson, String> {
        let source = self.cfg.source;
        tokio::task::spawn_blocking(move || api::cli_json(source, &args))
            .await
            .map_err(|e| format!("the command did not finish: {e}"))?
    }

    async fn cli_value(self: &Arc<Self>, args: Vec<String>) -> Result<serde_json::Value, String> {
        let out = self.cli(args).await?;
        serde_json::from_slice(&out.json).map_err(|e| format!("unexpected output: {e}"))
    }

    fn history_args(&self, port: Option<u16>, host: Option<&str>) -> Vec<String> {
        let mut a = api::history_args(port, host, None);
        a.extend(api::store_args(
            self.cfg.db.as_deref(),
            self.cfg.store.as_deref(),
        ));
        a
    }
}

#[derive(Debug, Deserialize)]
struct IndexQuery {
    view: Option<String>,
    fragment: Option<String>,
}

async fn index(State(app): State<Shared>, Query(q): Query<IndexQuery>, req: Request) -> Response {
    let who = req.extensions().get::<Who>().cloned();
    let table = q.view.as_deref() == Some("table");
    let snap = app.live.snapshot();
    let answers = app
        .live
        .answers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let fragment = if table {
        pages::table_fragment(&snap, &answers)
    } else {
        pages::map_fragment(&snap, &answers)
    };
    if q.fragment.is_some() {
        return html(fragment);
    }
    let csrf = csrf_of(who.as_ref());
    let (title, nav, live_url) = if table {
        ("Table", Nav::Table, "/?view=table&fragment=1")
    } else {
        ("Map", Nav::Map, "/?fragment=1")
    };
    html(pages::live_page(
        &app.frame(title, nav, csrf.as_deref()),
        live_url,
        &fragment,
        table,
    ))
}

#[derive(Debug, Deserialize)]
struct JumpQuery {
    port: Option<String>,
}

async fn jump(Query(q): Query<JumpQuery>) -> Response {
    let p = q.port.unwrap_or_default();
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, pages::port_link(p.trim()))],
    )
        .into_response()
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().trim_start_matches(':').parse().ok()
}

async fn port_page(State(app): State<Shared>, Path(port): Path<String>, req: Request) -> Response {
    let Some(port) = parse_port(&port) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            req.uri().path(),
            "a port is a number from 0 to 65535",
        );
    };
    let who_id = req.extensions().get::<Who>().cloned();
    let p = port.to_string();
    let (info, who, history) = tokio::join!(
        app.cli_value(vec!["info".into(), p.clone()]),
        app.cli_value(vec!["who".into(), p.clone()]),
        app.cli_value(app.history_args(Some(port), None)),
    );
    let snap = app.live.snapshot();
    // What `kill` would signal, per protocol with a listener here (its own dry run), named
    // as `who` names the processes.
    let mut plans = Vec::new();
    if app.cfg.allow_actions {
        for proto in ["tcp", "udp"] {
            if !snap
                .listeners
                .iter()
                .any(|l| l.port == port && l.proto.as_str() == proto)
            {
                continue;
            }
            let dry = app
                .cli_value(vec![
                    "kill".into(),
                    format!("{port}/{proto}"),
                    "--dry-run".into(),
                ])
                .await;
            let pids: Vec<u32> = dry
                .ok()
                .and_then(|v| {
                    v["pids"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
                            .collect()
                    })
                })
                .unwrap_or_default();
            let name_of = |pid: u32| -> String {
                who.as_ref()
                    .ok()
                    .and_then(|v| v["sockets"].as_array())
                    .and_then(|socks| {
                        socks.iter().find_map(|s| {
                            (s["pid"].as_u64() == Some(u64::from(pid)))
                                .then(|| s["process"].as_str().unwrap_or("?").to_owned())
                        })
                    })
                    .unwrap_or_else(|| "?".into())
            };
            plans.push((
                proto.to_owned(),
                pids.into_iter().map(|pid| (pid, name_of(pid))).collect(),
            ));
        }
    }
    let answers_map = app
        .live
        .answers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let answers: Vec<_> = snap
        .listeners
        .iter()
        .filter(|l| l.port == port)
        .filter_map(|l| answers_map.get(&(l.proto, l.socket_addr())).map(|a| (l, a)))
        .collect();
    let csrf = csrf_of(who_id.as_ref());
    let title = format!("Port {port}");
    html(pages::port_page(
        &app.frame(&title, Nav::Port, csrf.as_deref()),
        port,
        &info,
        &who,
        &history,
        &snap,
        &plans,
        &answers,
    ))
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    host: Option<String>,
    port: Option<String>,
    since: Option<String>,
}

impl HistoryQuery {
    /// The port, host and since of the query, each checked.
    #[expect(
        clippy::type_complexity,
        reason = "three optional values, named at the call"
    )]
    fn checked(&self) -> Result<(Option<u16>, Option<String>, Option<String>), String> {
        let port = match self
            .port
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            None => None,
            Some(p) => Some(parse_port(p).ok_or("port: a number from 0 to 65535")?),
        };
        let host = self
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.len() <= 253 && !h.chars().any(char::is_control) {
                    Ok(h.to_owned())
                } else {
                    Err("host: a host name".to_owned())
                }
            })
            .transpose()?;
        let since = self
            .since
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                portolan_core::when::parse_instant(s, portolan_watch::model::now_ms())
                    .map(|_| s.to_owned())
                    .map_err(|e| format!("since: {e}"))
            })
            .transpose()?;
        Ok((port, host, since))
    }
}

async fn history_page(
    State(app): State<Shared>,
    Query(q): Query<HistoryQuery>,
    req: Request,
) -> Response {
    let (port, host, _) = match q.checked() {
        Ok(x) => x,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "/history", &e),
    };
    let who = req.extensions().get::<Who>().cloned();
    // Every host the store knows (for the picker), then the one asked for.
    let all = app.cli_value(app.history_args(port, None)).await;
    let mut hosts: Vec<String> = all
        .as_ref()
        .ok()
        .map(|v| {
            ["events", "scans"]
                .iter()
                .flat_map(|k| v[k].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e["host"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    hosts.sort();
    hosts.dedup();
    let history = if host.is_some() {
        app.cli_value(app.history_args(port, host.as_deref())).await
    } else {
        all
    };
    let csrf = csrf_of(who.as_ref());
    html(pages::history_page(
        &app.frame("History", Nav::History, csrf.as_deref()),
        &history,
        &hosts,
        host.as_deref(),
        port,
    ))
}

fn read_scans(app: &App) -> Vec<Result<scans::ScanFile, String>> {
    app.cfg
        .scans
        .iter()
        .map(|p| scans::load(p).map_err(|e| format!("{e:#}")))
        .collect()
}

/// The queued scans (`scan --queue`), when `serve --queue` names their database.
fn read_queue(app: &App) -> Option<Result<Vec<portolan_queue::ScanSummary>, String>> {
    let url = app.cfg.queue.as_deref()?;
    Some(
        portolan_queue::Queue::connect(url)
            .and_then(|mut q| q.scans())
            .map_err(|e| format!("queue {}: {e}", portolan_queue::Queue::url_for_humans(url))),
    )
}

async fn scans_page(State(app): State<Shared>, req: Request) -> Response {
    let who = req.extensions().get::<Who>().cloned();
    let a = Arc::clone(&app);
    let (files, queued) = tokio::task::spawn_blocking(move || (read_scans(&a), read_queue(&a)))
        .await
        .unwrap_or_default();
    let csrf = csrf_of(who.as_ref());
    html(pages::scans_page(
        &app.frame("Scans", Nav::Scans, csrf.as_deref()),
        &files,
        queued.as_ref(),
    ))
}

/// One queued scan's results: `scan --results ID --json`, in the page of a scan file.
async fn queued_scan_page(
    State(app): State<Shared>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            req.uri().path(),
            "a queued scan's id is a number",
        );
    };
    let Some(url) = app.cfg.queue.clone() else {
        return refuse(
            StatusCode::NOT_FOUND,
            req.uri().path(),
            "no queue: start portolan serve --queue URL",
        );
    };
    let who = req.extensions().get::<Who>().cloned();
    let out = app
        .cli(vec![
            "scan".into(),
            "--results".into(),
            id.to_string(),
            format!("--queue={url}"),
        ])
        .await;
    let file = out.and_then(|o| {
        let text = String::from_utf8_lossy(&o.json);
        scans::parse(&text)
            .map(|(scan, summary, ports)| scans::ScanFile {
                path: PathBuf::from(format!("queued scan {id}")),
                scan,
                summary,
                ports,
            })
            .map_err(|e| format!("{e:#}"))
    });
    let csrf = csrf_of(who.as_ref());
    html(pages::scans_page(
        &app.frame("Scans", Nav::Scans, csrf.as_deref()),
        &[file],
        None,
    ))
}

/// Server-sent events: `change` with the model's version whenever it changes, until the
/// server stops.
async fn events(
    State(app): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = app.live.changes.subscribe();
    let stop = app.shutdown.clone();
    let stream =
        futures_util::stream::unfold((rx, stop, true), |(mut rx, mut stop, first)| async move {
            if !first {
                tokio::select! {
                    r = rx.changed() => r.ok()?,
                    _ = stop.changed() => return None,
                }
            }
            if *stop.borrow() {
                return None;
            }
            let v = *rx.borrow_and_update();
            let ev = SseEvent::default()
                .event(if first { "hello" } else { "change" })
                .data(v.to_string());
            Some((Ok(ev), (rx, stop, false)))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, ty) = match name.as_str() {
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "icon.svg" => (ICON_SVG, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    // no-store like every other answer (the guard adds it): they are small, and a page
    // must never run a script cached from an older binary.
    ([(header::CONTENT_TYPE, ty)], body).into_response()
}

async fn not_found(req: Request) -> Response {
    refuse(StatusCode::NOT_FOUND, req.uri().path(), "no such page")
}

fn cli_response(r: Result<api::CliJson, String>) -> Response {
    match r {
        Ok(j) => {
            let mut r = json_bytes(StatusCode::OK, j.json);
            // The exit code the same command gives on the command line: 0 found, 1 nothing.
            r.headers_mut().insert(
                "x-portolan-exit",
                HeaderValue::from_static(if j.found { "0" } else { "1" }),
            );
            r
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}

async fn api_ls(State(app): State<Shared>) -> Response {
    cli_response(app.cli(vec!["ls".into()]).await)
}

async fn api_who(State(app): State<Shared>, Path(port): Path<String>) -> Response {
    let Some(port) = parse_port(&port) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "/api/",
            "a port is a number from 0 to 65535",
        );
    };
    cli_response(app.cli(vec!["who".into(), port.to_string()]).await)
}

async fn api_info(State(app): State<Shared>, Path(port): Path<String>) -> Response {
    let Some(port) = parse_port(&port) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "/api/",
            "a port is a number from 0 to 65535",
        );
    };
    cli_response(app.cli(vec!["info".into(), port.to_string()]).await)
}

async fn api_history(State(app): State<Shared>, Query(q): Query<HistoryQuery>) -> Response {
    let (port, host, since) = match q.checked() {
        Ok(x) => x,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "/api/", &e),
    };
    let mut args = api::history_args(port, host.as_deref(), since.as_deref());
    args.extend(api::store_args(
        app.cfg.db.as_deref(),
        app.cfg.store.as_deref(),
    ));
    cli_response(app.cli(args).await)
}

async fn api_audit(State(app): State<Shared>) -> Response {
    let mut args = vec!["audit".to_owned()];
    if !app.cfg.firewall {
        args.push("--no-firewall".into());
    }
    cli_response(app.cli(args).await)
}

async fn api_scans(State(app): State<Shared>) -> Response {
    let a = Arc::clone(&app);
    let files = tokio::task::spawn_blocking(move || read_scans(&a))
        .await
        .unwrap_or_default();
    let list: Vec<serde_json::Value> = files
        .into_iter()
        .map(|f| match f {
            Ok(f) => serde_json::to_value(&f).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": e }),
        })
        .collect();
    Json(serde_json::json!({ "files": list })).into_response()
}

async fn api_map(State(app): State<Shared>) -> Response {
    let snap = app.live.snapshot();
    let listeners: Vec<serde_json::Value> = snap
        .listeners
        .iter()
        .zip(&snap.reach)
        .map(|(l, r)| {
            serde_json::json!({
                "listener": l,
                "service": portolan_catalog::service_name(l.port.into(), l.proto),
                "reach": r.badge().0,
                "reach_detail": r.detail(),
            })
        })
        .collect();
    Json(serde_json::json!({
        "version": snap.version,
        "sampled_ms": snap.sampled_ms,
        "listeners": listeners,
        "findings": snap.findings,
        "recent": snap.recent,
        "error": snap.error,
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct ActionBody {
    port: u16,
    #[serde(default = "tcp")]
    proto: String,
    #[serde(default = "term")]
    signal: String,
}

fn tcp() -> String {
    "tcp".into()
}

fn term() -> String {
    "TERM".into()
}

impl ActionBody {
    fn target(&self) -> Result<String, String> {
        match self.proto.as_str() {
            "tcp" | "udp" => Ok(format!("{}/{}", self.port, self.proto)),
            _ => Err("proto: tcp or udp".into()),
        }
    }
}

fn actions_off() -> Response {
    refuse(
        StatusCode::FORBIDDEN,
        "/api/",
        "actions are off: start portolan serve with --allow-actions to probe or kill from the dashboard",
    )
}

async fn api_probe(State(app): State<Shared>, Json(body): Json<ActionBody>) -> Response {
    if !app.cfg.allow_actions {
        return actions_off();
    }
    let target = match body.target() {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "/api/", &e),
    };
    let r = app.cli(vec!["who".into(), target, "--probe".into()]).await;
    if let Ok(j) = &r {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&j.json) {
            remember_answers(&app, &v);
        }
    }
    cli_response(r)
}

/// Keeps what a probe found, so the map and the port page show it beside the listener.
fn remember_answers(app: &App, who: &serde_json::Value) {
    let now = portolan_watch::model::now_ms();
    let mut answers = app
        .live
        .answers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for s in who["sockets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let a = &s["answers"];
        if a.is_null() {
            continue;
        }
        let (Some(ip), Some(port), Some(proto)) = (
            s["local_addr"].as_str().and_then(|x| x.parse().ok()),
            s["local_port"].as_u64().and_then(|p| u16::try_from(p).ok()),
            s["proto"]
                .as_str()
                .and_then(|p| p.parse::<portolan_core::Protocol>().ok()),
        ) else {
            continue;
        };
        let text = |k: &str| a[k].as_str().map(str::to_owned);
        if answers.len() >= 4096 {
            answers.clear();
        }
        answers.insert(
            (proto, SocketAddr::new(ip, port)),
            model::Answer {
                service: text("service"),
                product: text("product"),
                version: text("version"),
                at_ms: now,
            },
        );
    }
}

async fn api_kill(State(app): State<Shared>, Json(body): Json<ActionBody>) -> Response {
    if !app.cfg.allow_actions {
        return actions_off();
    }
    let target = match body.target() {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "/api/", &e),
    };
    if body.proto == "tcp" && body.port == app.cfg.bound.port() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "/api/",
            "that is this dashboard's own port; stop it with Ctrl-C where it runs",
        );
    }
    if body.signal.is_empty()
        || body.signal.len() > 12
        || !body.signal.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "/api/",
            "signal: a name (TERM, KILL, ...) or a number",
        );
    }
    cli_response(
        app.cli(vec![
            "kill".into(),
            target,
            "--yes".into(),
            format!("--signal={}", body.signal),
            "--wait=3".into(),
        ])
        .await,
    )
}
