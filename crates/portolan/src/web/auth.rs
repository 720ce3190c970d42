//! Who may talk to the dashboard, and how (the model Jupyter uses for a local server):
//!
//! - **Host allow-list** first: a page on another site that rebinds its DNS name to
//!   127.0.0.1 sends its own name as `Host`; only the names of this server pass.
//! - **A token**: printed once at start. In a URL (`/?token=`) it works once and becomes a
//!   session cookie (HttpOnly, SameSite=Strict, its name carries the port, since cookies
//!   ignore ports); the URL in a browser's history is then worthless. Scripts send it as
//!   `Authorization: Bearer TOKEN`, which a browser never adds by itself.
//! - **State changes** (POST) on a cookie session need an `Origin` that is this server's,
//!   and the session's CSRF token in `X-CSRF-Token` (the page carries it in a meta tag).
//!
//! Everything here is pure (headers in, a decision out), so the fuzz target and the unit
//! tests reach all of it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// 32 random bytes, shown as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// From the kernel's random source.
    pub fn random() -> std::io::Result<Token> {
        let mut b = [0u8; 32];
        let mut filled = 0;
        while filled < b.len() {
            filled +=
                rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())
                    .map_err(std::io::Error::from)?;
        }
        Ok(Token(b))
    }

    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Compares with text a client sent, in time that does not depend on where they differ.
    pub fn matches(&self, text: &str) -> bool {
        let mine = self.hex();
        let (a, b) = (mine.as_bytes(), text.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A Host header value people may use: a name or address, with or without the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName(String);

impl HostName {
    /// A name as `--allow-host` takes it: letters, digits, dots, dashes (and an IPv6
    /// address in brackets), at most 253 characters.
    pub fn parse(s: &str) -> Result<HostName, String> {
        let t = s.trim().to_ascii_lowercase();
        let ok = !t.is_empty()
            && t.len() <= 253
            && (t
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
                || (t.starts_with('[')
                    && t.ends_with(']')
                    && t[1..t.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()));
        if ok {
            Ok(HostName(t))
        } else {
            Err("expected a host name (letters, digits, dots, dashes) or [IPv6]".to_owned())
        }
    }
}

/// The names this server answers to, with and without its port, lower case.
#[derive(Debug, Clone)]
pub struct Hosts {
    allowed: Vec<String>,
    port: u16,
}

impl Hosts {
    pub fn new(bound: SocketAddr, extra: &[HostName], hostname: &str) -> Hosts {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()];
        let ip = bound.ip();
        if ip.is_unspecified() {
            // Reached by whatever name points here: this machine's own name at least.
            if let Ok(h) = HostName::parse(hostname) {
                names.push(h.0);
            }
        } else {
            names.push(match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            });
        }
        names.extend(extra.iter().map(|h| h.0.clone()));
        Hosts {
            allowed: names,
            port: bound.port(),
        }
    }

    /// Whether a `Host` header names this server. The port, when given, must be ours
    /// (a browser always sends it for a port other than 80).
    pub fn allows(&self, host: &str) -> bool {
        let h = host.trim().to_ascii_lowercase();
        let (name, port) = split_port(&h);
        if let Some(p) = port {
            if p != self.port {
                return false;
            }
        } else if self.port != 80 {
            return false;
        }
        self.allowed.iter().any(|a| a == name)
    }

    /// Whether an `Origin` header is this server's own (`http://HOST[:PORT]`).
    pub fn is_own_origin(&self, origin: &str) -> bool {
        origin
            .strip_prefix("http://")
            .is_some_and(|rest| !rest.contains('/') && self.allows(rest))
    }
}

/// `name:port` or `[v6]:port` or a bare name; a port that is not a number is no port at
/// all (and then the whole text is compared as a name, which fails).
fn split_port(h: &str) -> (&str, Option<u16>) {
    if h.starts_with('[') {
        return match h.find(']') {
            Some(end) => {
                let name = &h[..=end];
                match h[end + 1..].strip_prefix(':') {
                    Some(p) => (name, p.parse().ok().or(Some(0))),
                    None if end + 1 == h.len() => (name, None),
                    None => (h, Some(0)),
                }
            }
            None => (h, Some(0)),
        };
    }
    match h.rsplit_once(':') {
        Some((n, p)) => (n, p.parse().ok().or(Some(0))),
        None => (h, None),
    }
}

/// One value of a cookie from a `Cookie` header (`a=1; b=2`).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The `token` parameter of a query string, and the query without it (for the redirect
/// that takes the token out of the address bar).
pub fn take_token(query: &str) -> (Option<&str>, String) {
    let mut token = None;
    let mut rest = Vec::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("token", v)) => token = Some(v),
            _ => rest.push(kv),
        }
    }
    (token, rest.join("&"))
}

/// A browser session made from the login token.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A script with the bearer token: no CSRF question (a browser never sends the header
    /// by itself).
    Bearer,
    /// A browser session; its CSRF token.
    Cookie { csrf: String },
}

/// The login token (spent once used in a URL), the bearer token, and the sessions.
#[derive(Debug)]
pub struct Gate {
    token: Token,
    login_spent: bool,
    sessions: HashMap<String, Session>,
    pub cookie_name: String,
    pub hosts: Hosts,
}

/// At most this many sessions live at once (each costs a few bytes; a login makes one, and
/// the login token works once, so this is a bound, not a limit anyone meets).
const MAX_SESSIONS: usize = 64;

impl Gate {
    pub fn new(token: Token, hosts: Hosts) -> Gate {
        Gate {
            token,
            login_spent: false,
            cookie_name: format!("portolan_session_{}", hosts.port),
            sessions: HashMap::new(),
            hosts,
        }
    }

    /// Exchanges the login token of a URL for a new session: the cookie's value. `None`
    /// when the token is wrong or already spent.
    pub fn login(&mut self, token: &str) -> Option<(String, Session)> {
        if self.login_spent || !self.token.matches(token) {
            return None;
        }
        self.login_spent = true;
        let id = Token::random().ok()?.hex();
        let session = Session {
            csrf: Token::random().ok()?.hex(),
        };
        if self.sessions.len() >= MAX_SESSIONS {
            self.sessions.clear();
        }
        self.sessions.insert(id.clone(), session.clone());
        Some((id, session))
    }

    /// Who a request is, from its `Authorization` and `Cookie` headers.
    pub fn identify(&self, authorization: Option<&str>, cookies: &[&str]) -> Option<Who> {
        if let Some(a) = authorization {
            let t = a.strip_prefix("Bearer ").unwrap_or("");
            return self.token.matches(t.trim()).then_some(Who::Bearer);
        }
        cookies.iter().find_map(|h| {
            let id = cookie(h, &self.cookie_name)?;
            self.sessions.get(id).map(|s| Who::Cookie {
                csrf: s.csrf.clone(),
            })
        })
    }
}

/// Whether a state-changing request may go on: bearer always; a cookie session only from
/// this server's own origin and with its CSRF token.
pub fn may_change(who: &Who, hosts: &Hosts, origin: Option<&str>, csrf: Option<&str>) -> bool {
    match who {
        Who::Bearer => true,
        Who::Cookie { csrf: mine } => {
            origin.is_some_and(|o| hosts.is_own_origin(o))
                && csrf.is_some_and(|c| {
                    c.len() == mine.len()
                        && c.bytes()
                            .zip(mine.bytes())
                            .fold(0u8, |a, (x, y)| a | (x ^ y))
                            == 0
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Hosts {
        Hosts::new(
            "127.0.0.1:8123".parse().unwrap(),
            &[HostName::parse("box.lan").unwrap()],
            "h",
        )
    }

    #[test]
    fn host_allow_list() {
        let h = hosts();
        assert!(h.allows("127.0.0.1:8123"));
        assert!(h.allows("LOCALHOST:8123"));
        assert!(h.allows("[::1]:8123"));
        assert!(h.allows("box.lan:8123"));
        assert!(!h.allows("evil.example:8123"));
        assert!(!h.allows("evil.example"));
        assert!(!h.allows("127.0.0.1"));
        assert!(!h.allows("127.0.0.1:8124"));
        assert!(!h.allows("127.0.0.1:x"));
        assert!(!h.allows("localhost.evil.example:8123"));
        assert!(!h.allows("[::1"));
        assert!(!h.allows("[::1]x:8123"));
        assert!(!h.allows(""));
    }

    #[test]
    fn own_origin_only() {
        let h = hosts();
        assert!(h.is_own_origin("http://127.0.0.1:8123"));
        assert!(!h.is_own_origin("https://127.0.0.1:8123"));
        assert!(!h.is_own_origin("http://evil.example:8123"));
        assert!(!h.is_own_origin("http://127.0.0.1:8123/x"));
        assert!(!h.is_own_origin("null"));
    }

    #[test]
    fn login_token_works_once_and_bearer_always() {
        let t = Token::random().unwrap();
        let hex = t.hex();
        let mut g = Gate::new(t, hosts());
        assert!(g.login("00").is_none());
        let (id, s) = g.login(&hex).expect("first use");
        assert!(g.login(&hex).is_none(), "a login token works once");
        let cookie = format!("a=b; {}={id}", g.cookie_name);
        assert_eq!(
            g.identify(None, &[&cookie]),
            Some(Who::Cookie {
                csrf: s.csrf.clone()
            })
        );
        assert_eq!(
            g.identify(Some(&format!("Bearer {hex}")), &[]),
            Some(Who::Bearer)
        );
        assert_eq!(g.identify(Some("Bearer nope"), &[&cookie]), None);
        assert_eq!(g.identify(None, &["portolan_session_1=zz"]), None);
        let who = Who::Cookie {
            csrf: s.csrf.clone(),
        };
        let h = hosts();
        assert!(may_change(
            &who,
            &h,
            Some("http://127.0.0.1:8123"),
            Some(&s.csrf)
        ));
        assert!(!may_change(
            &who,
            &h,
            Some("http://evil.example"),
            Some(&s.csrf)
        ));
        assert!(!may_change(&who, &h, None, Some(&s.csrf)));
        assert!(!may_change(
            &who,
            &h,
            Some("http://127.0.0.1:8123"),
            Some("x")
        ));
        assert!(!may_change(&who, &h, Some("http://127.0.0.1:8123"), None));
        assert!(may_change(&Who::Bearer, &h, None, None));
    }

    #[test]
    fn token_out_of_query() {
        assert_eq!(
            take_token("token=ab&view=table"),
            (Some("ab"), "view=table".into())
        );
        assert_eq!(take_token("view=table"), (None, "view=table".into()));
        assert_eq!(take_token(""), (None, String::new()));
    }

    #[test]
    fn hostile_host_names_refused() {
        for bad in [
            "",
            "a b",
            "a/b",
            "<x>",
            "[zz]",
            "x".repeat(300).as_str(),
            "a:1",
        ] {
            assert!(HostName::parse(bad).is_err(), "{bad}");
        }
        assert!(HostName::parse("[::1]").is_ok());
    }
}
