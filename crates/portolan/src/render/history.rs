//! Pieces of the watch history as people read them (`history`, `diff`): times, owners,
//! places. Owner strings came from /proc and are escaped here.

use portolan_watch::model::{rfc3339_ms, Owner};

use super::esc;

/// `2026-11-22 08:25:00` (UTC) for tables.
pub fn when(ts_ms: i64) -> String {
    let s = rfc3339_ms(ts_ms);
    format!("{} {}", &s[..10], &s[11..19])
}

pub fn owner_text(o: &Owner) -> String {
    let mut s = match (&o.process, o.pid) {
        (Some(p), Some(pid)) => format!("{}[{pid}]", esc(p)),
        (Some(p), None) => esc(p).into_owned(),
        (None, Some(pid)) => format!("[{pid}]"),
        (None, None) => "?".to_string(),
    };
    if let Some(u) = o.unit.as_deref().or(o.container.as_deref()) {
        s = format!("{s} ({})", esc(u));
    }
    s
}

/// `addr:port`, with brackets for IPv6.
pub fn place(addr: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}
