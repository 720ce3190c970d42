//! The JSON under `/api/` is the CLI's own `--json`: each request becomes the argument list
//! of one command (`/api/who/8080` is `portolan who 8080 --json`), run in this process by
//! `crate::inproc`. Nothing is computed twice, and the API's JSON is the documented schema
//! of each command. Only values this edge has checked reach an argument list (a port as a
//! number, a host name as `--host=VALUE`, so no value can pass for a flag).

pub use crate::inproc::{cli_json, CliJson};

/// The arguments of `history` from the page's query: a port, a host, a span.
pub fn history_args(port: Option<u16>, host: Option<&str>, since: Option<&str>) -> Vec<String> {
    let mut a = vec!["history".to_owned()];
    if let Some(p) = port {
        a.push(p.to_string());
    }
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        a.push(format!("--host={h}"));
    }
    if let Some(s) = since.filter(|s| !s.is_empty()) {
        a.push(format!("--since={s}"));
    }
    a.push("--limit=500".to_owned());
    a
}

/// The store flags `serve` was given, passed on to `history`.
pub fn store_args(db: Option<&std::path::Path>, store: Option<&str>) -> Vec<String> {
    match (db, store) {
        (Some(p), _) => vec![format!("--db={}", p.display())],
        (None, Some(s)) => vec![format!("--store={s}")],
        (None, None) => Vec::new(),
    }
}
