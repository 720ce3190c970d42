//! `HOST:PORT[/tcp|/udp]`: one service to probe. HOST is an IPv4 address, a bracketed IPv6
//! address (`[2001:db8::1]:443`) or a host name.

use std::fmt;
use std::net::IpAddr;

use crate::target::{bad, is_host_name};
use crate::{ParseError, Port, Protocol};

/// Where a service is: host, port and transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    pub host: ServiceHost,
    pub port: Port,
    pub proto: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceHost {
    Addr(IpAddr),
    /// Lower-cased, without a trailing dot.
    Name(String),
}

impl fmt::Display for ServiceHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceHost::Addr(a) => write!(f, "{a}"),
            ServiceHost::Name(n) => f.write_str(n),
        }
    }
}

impl ServiceTarget {
    pub fn parse(input: &str) -> Result<ServiceTarget, ParseError> {
        let t = input.trim();
        let (rest, proto) = match t.rsplit_once('/') {
            Some((r, p)) if p.eq_ignore_ascii_case("tcp") => (r, Protocol::Tcp),
            Some((r, p)) if p.eq_ignore_ascii_case("udp") => (r, Protocol::Udp),
            Some(_) => return Err(bad(t, "the protocol after / is tcp or udp")),
            None => (t, Protocol::Tcp),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| bad(t, "an IPv6 address in brackets needs its closing ]"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad(t, "write [IPv6]:PORT"))?;
            let ip: std::net::Ipv6Addr = addr
                .parse()
                .map_err(|_| bad(t, "not an IPv6 address inside the brackets"))?;
            (ServiceHost::Addr(IpAddr::V6(ip)), port)
        } else {
            let (h, p) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad(t, "write HOST:PORT (and [IPv6]:PORT)"))?;
            if h.contains(':') {
                return Err(if h.parse::<std::net::Ipv6Addr>().is_ok() {
                    bad(t, "put an IPv6 address in brackets: [2001:db8::1]:443")
                } else {
                    bad(t, "write HOST:PORT (and [IPv6]:PORT)")
                });
            }
            let host = if let Ok(ip) = h.parse::<IpAddr>() {
                ServiceHost::Addr(ip)
            } else if is_host_name(h) {
                ServiceHost::Name(h.trim_end_matches('.').to_ascii_lowercase())
            } else {
                return Err(bad(t, "not an address or a host name before the :PORT"));
            };
            (host, p)
        };
        let port: u16 = port
            .parse()
            .map_err(|_| bad(t, "the port is a number from 1 to 65535"))?;
        if port == 0 {
            return Err(bad(t, "port 0 cannot be probed"));
        }
        Ok(ServiceTarget {
            host,
            port: Port::new(port),
            proto,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let t = ServiceTarget::parse("127.0.0.1:22").unwrap();
        assert_eq!((t.port.get(), t.proto), (22, Protocol::Tcp));
        let t = ServiceTarget::parse("[::1]:443/tcp").unwrap();
        assert_eq!(t.host, ServiceHost::Addr("::1".parse().unwrap()));
        let t = ServiceTarget::parse("Web.Example.test.:8080/UDP").unwrap();
        assert_eq!(t.host, ServiceHost::Name("web.example.test".into()));
        assert_eq!(t.proto, Protocol::Udp);
    }

    #[test]
    fn hostile_input_gets_clear_errors() {
        for bad in [
            "",
            ":",
            "host",
            "host:",
            ":80",
            "host:0",
            "host:65536",
            "host:-1",
            "::1:80",
            "[::1]80",
            "[::1:80",
            "[nope]:80",
            "h st:80",
            "a:80/sctp",
            "\u{1b}[2J:80",
            "1.2.3.4:80:90",
            "[]:1",
        ] {
            let e = ServiceTarget::parse(bad).unwrap_err().to_string();
            assert!(!e.chars().any(char::is_control), "{bad:?}: {e:?}");
        }
    }
}
