//! The queue's URL as people may see it, and error text made safe to show.
//!
//! A worker's command line, its log and its error messages are read by people who must
//! not learn the database password, so every message built here shows the URL with the
//! password replaced by `***`, and any text that came from the client or the server is
//! scrubbed of the password (as written and as decoded) and escaped for a terminal.

use std::error::Error as _;

use portolan_core::escape::for_terminal;

/// `url` with the password hidden (in the user info and in any `password=` parameter) and
/// control characters escaped. Errs on the side of hiding: everything from the first `:`
/// of the user info to the last `@` goes, since an unencoded `@` or `/` may be part of
/// the password.
pub fn for_humans(url: &str) -> String {
    for_terminal(&hide_password(url)).into_owned()
}

fn hide_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return hide_keywords(&hide_params(url));
    };
    let (scheme, rest) = url.split_at(start);
    let rest = match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}:***{}", &rest[..colon], &rest[at..]),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    format!("{scheme}{}", hide_params(&rest))
}

/// Every `password=VALUE` query parameter becomes `password=***`.
fn hide_params(s: &str) -> String {
    let Some(q) = s.find('?') else {
        return s.to_owned();
    };
    let (head, query) = s.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{head}{}", params.join("&"))
}

/// Not a URL (someone gave libpq's `key=value` form, which the queue refuses): every
/// `password = VALUE` hidden all the same, VALUE up to the next space or, quoted, to its
/// closing quote.
fn hide_keywords(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find("password") {
        let key_end = at + found + "password".len();
        let rest = &s[key_end..];
        let after_spaces = rest.len() - rest.trim_start().len();
        if !rest[after_spaces..].starts_with('=') {
            out.push_str(&s[at..key_end]);
            at = key_end;
            continue;
        }
        let eq = key_end + after_spaces + 1;
        let value = &s[eq..];
        let value_start = eq + (value.len() - value.trim_start().len());
        let value = &s[value_start..];
        let len = if let Some(quoted) = value.strip_prefix('\'') {
            quoted.find('\'').map_or(value.len(), |q| q + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        out.push_str(&s[at..value_start]);
        out.push_str("***");
        at = value_start + len;
    }
    out.push_str(&s[at..]);
    out
}

/// The password as the URL spells it (before any percent-decoding) and the values of
/// `password=` parameters: what to scrub from a message when the URL did not even parse.
pub fn written_secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let rest = &url[start..];
        if let Some(at) = rest.rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out.push(rest[colon + 1..at].to_owned());
            }
        }
    }
    if let Some(q) = url.find('?') {
        for p in url[q + 1..].split('&') {
            if let Some((k, v)) = p.split_once('=') {
                if k.eq_ignore_ascii_case("password") {
                    out.push(v.to_owned());
                }
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `msg` with every secret replaced by `***`, escaped for a terminal.
pub fn scrub(msg: &str, secrets: &[String]) -> String {
    let mut msg = msg.to_owned();
    // Longest first, so that a secret containing another is hidden whole.
    let mut by_length: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in by_length {
        msg = msg.replace(s.as_str(), "***");
    }
    for_terminal(&msg).into_owned()
}

/// A short reason for a client error: the server's message with its SQLSTATE, else the
/// I/O error underneath ("connection refused"), else the innermost cause.
pub fn reason(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut cause = e.source();
    let mut last = None;
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        last = Some(c);
        cause = c.source();
    }
    if e.is_closed() {
        return "the connection was closed".to_owned();
    }
    match last {
        Some(c) => format!("{e}: {c}"),
        None => e.to_string(),
    }
}

/// The common network failures in the words people search for; others as the OS says.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "connection timed out".to_owned(),
        ErrorKind::ConnectionReset => "connection reset by the server".to_owned(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionAborted => {
            "the server closed the connection".to_owned()
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            for_humans("postgres://scan:s3cret@db.example:5432/queue"),
            "postgres://scan:***@db.example:5432/queue"
        );
        assert_eq!(
            for_humans("postgresql://u:p@ss/w@rd@[::1]/q?password=two&sslmode=disable"),
            "postgresql://u:***@[::1]/q?password=***&sslmode=disable"
        );
        assert_eq!(
            for_humans("postgres://nobody@host/db"),
            "postgres://nobody@host/db"
        );
        assert_eq!(for_humans("x\x1b[2J"), "x\\x1b[2J");
        assert_eq!(
            for_humans("host=db PASSWORD = 'a b' user=x password=c passwords"),
            "host=db PASSWORD = *** user=x password=*** passwords"
        );
        assert_eq!(for_humans("password='unclosed"), "password=***");
    }

    #[test]
    fn secrets_as_written() {
        assert_eq!(
            written_secrets("postgres://u:p%40ss@h/db?PASSWORD=again"),
            ["p%40ss", "again"]
        );
        assert!(written_secrets("postgres://u@h/db").is_empty());
        assert_eq!(
            scrub("bad p%40ss and p@ss\x07", &["p@ss".into(), "p%40ss".into()]),
            "bad *** and ***\\x07"
        );
    }
}
