//! The live view's filter, as people type it: words that must all match a row. `port:443`
//! (the local or the remote port), `proc:nginx`, `state:estab` (a prefix of the state),
//! `user:www`, `unit:ssh` (unit or container), `proto:udp`, `pid:812`; any other word
//! is looked for in the row's whole text. Case does not matter. A word such as `port:x`
//! that cannot match anything is an error the view shows, not a silent empty list.

use std::fmt;

/// One term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Port(u16),
    Pid(u32),
    Proc(String),
    State(String),
    User(String),
    Unit(String),
    Proto(String),
    Text(String),
}

/// Every term must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub terms: Vec<Term>,
}

/// Why a filter cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a row offers to be matched.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub ports: &'a [u16],
    pub pid: Option<u32>,
    pub process: &'a str,
    pub state: &'a str,
    pub user: &'a str,
    pub unit: &'a str,
    pub proto: &'a str,
    /// Everything the row shows, lower case.
    pub text: &'a str,
}

/// At most this many terms, and this many bytes in all (a filter is typed by a person).
const MAX_TERMS: usize = 16;
const MAX_LEN: usize = 512;

impl Filter {
    pub fn parse(input: &str) -> Result<Filter, FilterError> {
        if input.len() > MAX_LEN {
            return Err(FilterError(format!("a filter is at most {MAX_LEN} bytes")));
        }
        let mut terms = Vec::new();
        for word in input.split_whitespace() {
            if terms.len() == MAX_TERMS {
                return Err(FilterError(format!("at most {MAX_TERMS} words")));
            }
            let lower = word.to_lowercase();
            let term = match lower.split_once(':') {
                Some((key, value)) if !key.is_empty() => {
                    let need = |what: &str| {
                        if value.is_empty() {
                            Err(FilterError(format!(
                                "`{key}:` needs {what} after the colon"
                            )))
                        } else {
                            Ok(value.to_owned())
                        }
                    };
                    match key {
                        "port" => Term::Port(value.parse().map_err(|_| {
                            FilterError("port: a number from 0 to 65535".into())
                        })?),
                        "pid" => Term::Pid(
                            value
                                .parse()
                                .map_err(|_| FilterError("pid: a number".into()))?,
                        ),
                        "proc" | "process" => Term::Proc(need("a process name")?),
                        "state" => Term::State(need("a state (estab, listen, time-wait, ...)")?),
                        "user" => Term::User(need("a user name or uid")?),
                        "unit" => Term::Unit(need("a unit or container")?),
                        "proto" => match value {
                            "tcp" | "udp" => Term::Proto(value.to_owned()),
                            _ => return Err(FilterError("proto: tcp or udp".into())),
                        },
                        // An address with a port (`127.0.0.1:80`, `[::1]:80`) is text.
                        _ if key.starts_with('[') || key.parse::<std::net::Ipv4Addr>().is_ok() => {
                            Term::Text(lower.clone())
                        }
                        _ => {
                            return Err(FilterError(format!(
                                "unknown key `{}`: port, pid, proc, state, user, unit, proto (or plain words)",
                                portolan_core::escape::for_terminal(key)
                            )))
                        }
                    }
                }
                _ => Term::Text(lower),
            };
            terms.push(term);
        }
        Ok(Filter { terms })
    }

    /// Whether a row with these fields passes every term.
    pub fn matches(&self, f: &Fields<'_>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Port(p) => f.ports.contains(p),
            Term::Pid(p) => f.pid == Some(*p),
            Term::Proc(s) => f.process.to_lowercase().contains(s),
            Term::State(s) => state_matches(f.state, s),
            Term::User(s) => f.user.to_lowercase().contains(s),
            Term::Unit(s) => f.unit.to_lowercase().contains(s),
            Term::Proto(s) => f.proto == s,
            Term::Text(s) => f.text.contains(s.as_str()),
        })
    }
}

/// `estab` matches `established`, `time-wait` and `timewait` match `time_wait`.
fn state_matches(state: &str, want: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    norm(state).starts_with(&norm(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(ports: &'a [u16], text: &'a str) -> Fields<'a> {
        Fields {
            ports,
            pid: Some(812),
            process: "nginx",
            state: "established",
            user: "www-data",
            unit: "nginx.service",
            proto: "tcp",
            text,
        }
    }

    #[test]
    fn keys_and_words() {
        let r = row(&[443, 51000], "tcp 10.0.0.1:443 nginx");
        for ok in [
            "",
            "port:443",
            "PORT:51000",
            "proc:ngi",
            "state:estab",
            "user:www",
            "unit:nginx",
            "proto:tcp",
            "pid:812",
            "nginx port:443",
            "10.0.0.1:443",
        ] {
            assert!(Filter::parse(ok).unwrap().matches(&r), "{ok}");
        }
        for no in [
            "port:80",
            "proc:apache",
            "state:listen",
            "proto:udp",
            "pid:1",
            "nothing",
        ] {
            assert!(!Filter::parse(no).unwrap().matches(&r), "{no}");
        }
    }

    #[test]
    fn hostile_filters_are_errors() {
        for bad in [
            "port:x",
            "port:70000",
            "pid:-1",
            "proto:sctp",
            "proc:",
            "colour:red",
            "\u{1b}[2J:x",
            &"a ".repeat(20),
            &"x".repeat(600),
        ] {
            let e = Filter::parse(bad).unwrap_err();
            assert!(!e.0.contains('\u{1b}'), "{e}");
        }
    }
}
