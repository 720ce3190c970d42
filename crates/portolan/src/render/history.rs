//! Pieces of the watch history as people read them (`history`, `diff`): times, owners,
//! places. Owner strings came from /proc and are escaped here.

use portolan_watch::model::{rfc3339_ms, Owner};

use super::esc;

/// `2026-11-22 08:25:00` (UTC) for tables.
pub fn when(ts_ms: i64) -> String {
    // Split at the `T` rather than at fixed offsets: a year past 9999 has five digits.
    let s = rfc3339_ms(ts_ms);
    let (date, time) = s.split_once('T').unwrap_or((&s, ""));
    let time = time.split(['.', 'Z']).next().unwrap_or("");
    format!("{date} {time}")
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

#[cfg(test)]
mod tests {
    use super::when;

    #[test]
    fn table_times_keep_every_digit() {
        assert_eq!(when(1_795_335_900_123), "2026-11-22 08:25:00");
        // 10000-01-01T00:00:00Z, and a moment before 1970.
        assert_eq!(when(253_402_300_800_000), "+10000-01-01 00:00:00");
        assert_eq!(when(-1), "1969-12-31 23:59:59");
    }
}
