//! What a person asks about on the command line: a local target for `who` (a port, a pid
//! or a name) and a catalog query for `info` (a port, a range or a service name).

use std::str::FromStr;

use crate::error::{echo, ParseError};
use crate::{Port, PortRange, Protocol};

/// What `who` is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalTarget {
    /// `8080`, `:8080`, `8080/udp`.
    Port(Port, Option<Protocol>),
    /// `pid:1234`, or a bare number when the caller says it is a pid.
    Pid(u32),
    /// A process name, a systemd unit or a container.
    Name(String),
}

fn bad_target(input: &str, reason: &'static str) -> ParseError {
    ParseError::InvalidTarget {
        input: echo(input),
        reason,
    }
}

impl LocalTarget {
    /// Parses a target. A bare number is a port (0-65535) unless `number_is_pid`.
    pub fn parse(s: &str, number_is_pid: bool) -> Result<LocalTarget, ParseError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseError::Empty { what: "target" });
        }
        if let Some(p) = t.strip_prefix("pid:") {
            return match p.parse::<u32>() {
                Ok(n) if n > 0 => Ok(LocalTarget::Pid(n)),
                _ => Err(bad_target(t, "a pid is a positive number")),
            };
        }
        let (num, proto) = match t.split_once('/') {
            Some((n, pr)) => (n.trim_start_matches(':'), Some(pr.parse::<Protocol>()?)),
            None => (t.trim_start_matches(':'), None),
        };
        if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
            if number_is_pid {
                return match num.parse::<u32>() {
                    Ok(n) if n > 0 && proto.is_none() => Ok(LocalTarget::Pid(n)),
                    _ => Err(bad_target(t, "a pid is a positive number")),
                };
            }
            return match num.parse::<Port>() {
                Ok(p) => Ok(LocalTarget::Port(p, proto)),
                Err(_) => Err(bad_target(
                    t,
                    "ports go from 0 to 65535 (for a process id, write pid:N or use --pid)",
                )),
            };
        }
        if t.starts_with('-') || t.chars().any(char::is_control) || t.len() > 256 {
            return Err(bad_target(
                t,
                "give a port, pid:N, a process name or a unit",
            ));
        }
        if proto.is_some() {
            return Err(bad_target(
                t,
                "a protocol goes with a port number, as in 53/udp",
            ));
        }
        Ok(LocalTarget::Name(t.to_string()))
    }
}

/// What `info` is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortQuery {
    Port(Port, Option<Protocol>),
    Range(PortRange, Option<Protocol>),
    /// A service name, lower-cased.
    Name(String),
}

impl FromStr for PortQuery {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseError::Empty { what: "query" });
        }
        let (body, proto) = match t.rsplit_once('/') {
            Some((b, p)) => (b, Some(p.parse::<Protocol>()?)),
            None => (t, None),
        };
        if body.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
            if body.contains('-') && !body.starts_with('-') {
                return Ok(PortQuery::Range(body.parse()?, proto));
            }
            return Ok(PortQuery::Port(body.parse()?, proto));
        }
        let valid = !body.is_empty()
            && body.len() <= 64
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
        if !valid {
            return Err(ParseError::InvalidQuery {
                input: echo(t),
                reason: "give a port (443), a port and protocol (53/udp), a range (6000-6063) or a service name (ssh)",
            });
        }
        if proto.is_some() {
            return Err(ParseError::InvalidQuery {
                input: echo(t),
                reason: "a protocol goes with a port number, as in 53/udp",
            });
        }
        Ok(PortQuery::Name(body.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let p = |s, pid| LocalTarget::parse(s, pid);
        assert_eq!(
            p("8080", false).unwrap(),
            LocalTarget::Port(Port::new(8080), None)
        );
        assert_eq!(
            p(":53/udp", false).unwrap(),
            LocalTarget::Port(Port::new(53), Some(Protocol::Udp))
        );
        assert_eq!(p("pid:1234", false).unwrap(), LocalTarget::Pid(1234));
        assert_eq!(p("1234", true).unwrap(), LocalTarget::Pid(1234));
        assert_eq!(
            p("nginx", false).unwrap(),
            LocalTarget::Name("nginx".into())
        );
        assert_eq!(
            p("sshd.service", false).unwrap(),
            LocalTarget::Name("sshd.service".into())
        );
        for bad in [
            "70000",
            "-5",
            "",
            "pid:x",
            "pid:0",
            "80/xyz",
            "abc/tcp",
            "a\x1bb",
            "99999999999999999999",
        ] {
            let e = p(bad, false);
            assert!(e.is_err(), "{bad:?}");
            assert!(!e.unwrap_err().to_string().contains('\x1b'));
        }
        assert!(p("70000", false).unwrap_err().to_string().contains("pid:N"));
    }

    #[test]
    fn queries() {
        assert_eq!(
            "443".parse::<PortQuery>().unwrap(),
            PortQuery::Port(Port::new(443), None)
        );
        assert_eq!(
            "53/udp".parse::<PortQuery>().unwrap(),
            PortQuery::Port(Port::new(53), Some(Protocol::Udp))
        );
        assert!(matches!(
            "6000-6063".parse::<PortQuery>().unwrap(),
            PortQuery::Range(..)
        ));
        assert_eq!(
            "SSH".parse::<PortQuery>().unwrap(),
            PortQuery::Name("ssh".into())
        );
        for bad in [
            "-5", "70000", "1-", "80/foo", "ssh/tcp", "", "a b", "\x1b[2J", "9-1",
        ] {
            let e = bad.parse::<PortQuery>();
            assert!(e.is_err(), "{bad:?}");
            assert!(!e.unwrap_err().to_string().contains('\x1b'));
        }
    }
}
