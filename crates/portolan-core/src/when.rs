//! Spans and moments as people type them: `2s`, `500ms`, `1h30m`, `2d` for a span;
//! a span (meaning that long ago), `2026-11-22`, `2026-11-22T08:30[:15][Z]` (UTC) or
//! `@1795335900` (Unix seconds) for a moment. No time-zone database: absolute times are
//! UTC, and say so in errors.

use std::time::Duration;

use crate::civil::{days_from_civil, days_in_month};
use crate::error::echo;

/// The longest span accepted: a century (anything longer is a typo).
const MAX_SPAN_MS: u128 = 100 * 366 * 86_400_000;

/// Why a span or a moment did not parse. The input is echoed escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WhenError {
    pub message: String,
}

fn err(input: &str, why: &str) -> WhenError {
    WhenError {
        message: format!("{}: {why}", echo(input)),
    }
}

/// Parses a span: one or more `NUMBER UNIT` parts, units `ms`, `s`, `m`, `h`, `d`, `w`
/// (`1h30m`). A bare number is seconds. Zero is allowed; a century is the most.
pub fn parse_span(input: &str) -> Result<Duration, WhenError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(err(
            input,
            "empty; expected a span like 2s, 500ms, 15m, 2h, 1d",
        ));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return parse_span(&format!("{s}s")).map_err(|_| err(input, "too long; at most 100 years"));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err(
                input,
                "expected a number before each unit (2s, 500ms, 1h30m)",
            ));
        }
        if digits > 12 {
            return Err(err(input, "too long; at most 100 years"));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| err(input, "bad number"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "sec" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "" => return Err(err(input, "a number needs a unit: ms, s, m, h, d or w")),
            _ => return Err(err(input, "unknown unit; use ms, s, m, h, d or w")),
        };
        rest = &rest[unit_len..];
        total += n * unit_ms;
        if total > MAX_SPAN_MS {
            return Err(err(input, "too long; at most 100 years"));
        }
    }
    Ok(Duration::from_millis(
        u64::try_from(total).map_err(|_| err(input, "too long"))?,
    ))
}

/// Parses a moment into milliseconds since the Unix epoch: a span means that long before
/// `now_ms`; otherwise a UTC date or date-time, or `@SECONDS`.
pub fn parse_instant(input: &str, now_ms: i64) -> Result<i64, WhenError> {
    let s = input.trim();
    if let Some(secs) = s.strip_prefix('@') {
        if secs.is_empty() || secs.len() > 12 || !secs.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(input, "expected @ and Unix seconds, e.g. @1795335900"));
        }
        let v: i64 = secs.parse().map_err(|_| err(input, "bad number"))?;
        return Ok(v * 1000);
    }
    if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') {
        return parse_datetime(input, s);
    }
    let span = parse_span(s).map_err(|e| WhenError {
        message: format!(
            "{}; a moment is a span ago (2h, 1d), a UTC date (2026-11-22), a UTC date-time (2026-11-22T08:30) or @UNIX-SECONDS",
            e.message
        ),
    })?;
    Ok(now_ms.saturating_sub(i64::try_from(span.as_millis()).unwrap_or(i64::MAX)))
}

#[allow(clippy::many_single_char_names)] // y, m, d, h: the calendar's own letters
fn parse_datetime(input: &str, s: &str) -> Result<i64, WhenError> {
    let bad = || {
        err(
            input,
            "expected a UTC date or date-time: 2026-11-22, 2026-11-22T08:30 or 2026-11-22T08:30:15Z",
        )
    };
    let s = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix('z'))
        .unwrap_or(s);
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let num = |p: &str, len: usize| -> Option<i64> {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse().ok())
            .flatten()
    };
    let mut dp = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (dp.next(), dp.next(), dp.next(), dp.next()) else {
        return Err(bad());
    };
    let (y, m, d) = (
        num(y, 4).ok_or_else(bad)?,
        num(m, 2).ok_or_else(bad)?,
        num(d, 2).ok_or_else(bad)?,
    );
    if !(1..=12).contains(&m) {
        return Err(err(input, "no such month"));
    }
    let days_in = days_in_month(y, m);
    if !(1..=days_in).contains(&d) {
        return Err(err(input, "no such day in that month"));
    }
    let mut secs = 0;
    if let Some(t) = time {
        let mut tp = t.split(':');
        let h = tp.next().and_then(|p| num(p, 2)).ok_or_else(bad)?;
        let mi = tp.next().and_then(|p| num(p, 2)).ok_or_else(bad)?;
        let se = match tp.next() {
            Some(p) => num(p, 2).ok_or_else(bad)?,
            None => 0,
        };
        if tp.next().is_some() {
            return Err(bad());
        }
        if h > 23 || mi > 59 || se > 59 {
            return Err(err(input, "no such time of day"));
        }
        secs = h * 3600 + mi * 60 + se;
    }
    Ok((days_from_civil(y, m, d) * 86_400 + secs) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(parse_span("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_span("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_span("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_span("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_span(" 2w ").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_span("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_span("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn hostile_spans_are_clear_errors() {
        for bad in [
            "",
            "s",
            "-2s",
            "2x",
            "2 s",
            "1.5s",
            "99999999999999999999s",
            "1000000d",
            "\x1b[2J",
            "2s\u{0}",
            "ms2",
            "h1",
        ] {
            let e = parse_span(bad).unwrap_err();
            assert!(
                !e.message.contains('\x1b') && !e.message.contains('\0'),
                "{e}"
            );
        }
    }

    #[test]
    fn moments() {
        let now = 1_795_335_900_123;
        assert_eq!(parse_instant("2h", now).unwrap(), now - 7_200_000);
        assert_eq!(parse_instant("2026-11-22", now).unwrap(), 1_795_305_600_000);
        assert_eq!(
            parse_instant("2026-11-22T08:25", now).unwrap(),
            1_795_335_900_000
        );
        assert_eq!(
            parse_instant("2026-11-22 08:25:00Z", now).unwrap(),
            1_795_335_900_000
        );
        assert_eq!(
            parse_instant("@1795335900", now).unwrap(),
            1_795_335_900_000
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-11-22T24:00",
            "2026-11-22T08",
            "2026-1-22",
            "@",
            "@-5",
            "@12345678901234",
            "yesterday",
            "2026-11-22T08:25:00:00",
        ] {
            assert!(parse_instant(bad, now).is_err(), "{bad}");
        }
    }
}
