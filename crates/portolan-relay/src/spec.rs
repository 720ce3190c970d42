//! A forwarding rule as a person writes it.
//!
//! `LISTEN` is `PORT`, `PORT-PORT`, `ADDR:PORT[-PORT]`, `[V6ADDR]:PORT[-PORT]` or
//! `*:PORT[-PORT]`; a bare port or `*` means every interface, both IPv4 and IPv6 (one
//! dual-stack socket). `TARGET` is `ADDR:PORT[-PORT]`, `[V6ADDR]:PORT[-PORT]` or
//! `NAME:PORT[-PORT]` (a name is resolved when the rule is loaded, and again at each reload).
//! A listening range forwards to one target port, or to a range of the same length (port
//! `start + i` to target port `tstart + i`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use portolan_core::escape::for_terminal;
use portolan_core::{Cidr, Port, PortRange};
use serde::Serialize;

use crate::RelayError;

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a rule listens: an address (`None`: every interface, both families) and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Listen {
    pub addr: Option<IpAddr>,
    pub ports: PortRange,
}

impl Listen {
    /// The socket address of one port of the range (`[::]:port` for every interface).
    pub fn socket_addr(&self, port: Port) -> SocketAddr {
        let ip = self
            .addr
            .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        SocketAddr::new(ip, port.get())
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            None => write!(f, "*:{}", self.ports),
            Some(IpAddr::V4(a)) => write!(f, "{a}:{}", self.ports),
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.ports),
        }
    }
}

/// A target's host: an address, or a name resolved when the rule loads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(untagged)]
pub enum TargetHost {
    Ip(IpAddr),
    Name(String),
}

/// Where a rule forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Target {
    pub host: TargetHost,
    pub ports: PortRange,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            TargetHost::Ip(IpAddr::V4(a)) => write!(f, "{a}:{}", self.ports),
            TargetHost::Ip(IpAddr::V6(a)) => write!(f, "[{a}]:{}", self.ports),
            TargetHost::Name(n) => write!(f, "{}:{}", for_terminal(n), self.ports),
        }
    }
}

/// PROXY protocol version sent to the target before the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    V1,
    V2,
}

impl std::str::FromStr for ProxyVersion {
    type Err = RelayError;
    fn from_str(s: &str) -> Result<Self, RelayError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(ProxyVersion::V1),
            "v2" | "2" => Ok(ProxyVersion::V2),
            _ => Err(RelayError::spec(s, "PROXY protocol version: v1 or v2")),
        }
    }
}

/// How a listening range is served: a socket per port, or one socket that an nftables
/// redirect feeds (the original port read back with SO_ORIGINAL_DST; needs root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RangeMode {
    #[default]
    Listeners,
    Redirect,
}

impl std::str::FromStr for RangeMode {
    type Err = RelayError;
    fn from_str(s: &str) -> Result<Self, RelayError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "listeners" => Ok(RangeMode::Listeners),
            "redirect" => Ok(RangeMode::Redirect),
            _ => Err(RelayError::spec(s, "range mode: listeners or redirect")),
        }
    }
}

/// Default TCP connect timeout towards the target.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default UDP session idle timeout.
pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on UDP sessions per rule (least recently used evicted beyond it).
pub const DEFAULT_UDP_MAX_SESSIONS: usize = 10_000;
/// Default TCP keepalive idle time (both sides).
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);

/// A rule's options; every one has a default that works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Options {
    /// Sources allowed (empty: all). Others are reset at once (TCP) or dropped (UDP).
    #[serde(serialize_with = "cidrs_as_text")]
    pub allow: Vec<Cidr>,
    /// Connections (TCP) or sessions (UDP) at once, over all sources; beyond it new ones
    /// are reset at once.
    pub max_conns: Option<u32>,
    /// Connections at once from one source address.
    pub max_conns_per_source: Option<u32>,
    /// Close a TCP connection when neither side sent a byte for this long (None: never).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time on both sockets (None: off).
    pub keepalive: Option<Duration>,
    /// PROXY protocol header towards the target.
    pub proxy_protocol: Option<ProxyVersion>,
    /// How long connecting to the target may take.
    pub connect_timeout: Duration,
    /// UDP: a session ends after this long without a datagram either way.
    pub udp_timeout: Duration,
    /// UDP: sessions at most (least recently used evicted beyond it).
    pub udp_max_sessions: usize,
    /// How a listening range is served.
    pub range_mode: RangeMode,
    /// Relay with read/write instead of splice (for comparison; splice falls back by
    /// itself where the kernel refuses it).
    pub no_splice: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow: Vec::new(),
            max_conns: None,
            max_conns_per_source: None,
            idle_timeout: None,
            keepalive: Some(DEFAULT_KEEPALIVE),
            proxy_protocol: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            udp_timeout: DEFAULT_UDP_TIMEOUT,
            udp_max_sessions: DEFAULT_UDP_MAX_SESSIONS,
            range_mode: RangeMode::Listeners,
            no_splice: false,
        }
    }
}

fn cidrs_as_text<S: serde::Serializer>(v: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

impl Options {
    /// Whether `ip` may use the rule.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }
}

/// One forwarding rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The rule's name (the config's `name`, else `LISTEN -> TARGET`); metrics and log
    /// lines carry it.
    pub name: String,
    pub proto: Proto,
    pub listen: Listen,
    pub target: Target,
    pub options: Options,
}

impl Rule {
    /// A rule from the command line's two words, checked ([`Rule::check`]).
    pub fn parse(proto: Proto, listen: &str, target: &str) -> Result<Rule, RelayError> {
        let listen = parse_listen(listen)?;
        let target = parse_target(target)?;
        let rule = Rule {
            name: default_name(proto, &listen, &target),
            proto,
            listen,
            target,
            options: Options::default(),
        };
        rule.check()?;
        Ok(rule)
    }

    /// Checks what a rule's parts cannot check alone: range lengths, port 0, a PROXY
    /// header on UDP, redirect on UDP or a single port.
    pub fn check(&self) -> Result<(), RelayError> {
        let l = self.listen.ports;
        let t = self.target.ports;
        let here = format!("{} -> {}", self.listen, self.target);
        if l.start().get() == 0 || t.start().get() == 0 {
            return Err(RelayError::spec(&here, "port 0 cannot be forwarded"));
        }
        if t.len() != 1 && t.len() != l.len() {
            return Err(RelayError::spec(
                &here,
                "the target range must be one port or as long as the listening range",
            ));
        }
        if self.proto == Proto::Udp && self.options.proxy_protocol.is_some() {
            return Err(RelayError::spec(
                &here,
                "the PROXY protocol header is for TCP only",
            ));
        }
        if self.options.range_mode == RangeMode::Redirect && l.len() == 1 {
            return Err(RelayError::spec(
                &here,
                "range_mode = redirect needs a listening range",
            ));
        }
        if self.options.udp_max_sessions == 0 {
            return Err(RelayError::spec(
                &here,
                "udp_max_sessions must be at least 1",
            ));
        }
        if self.options.max_conns == Some(0) || self.options.max_conns_per_source == Some(0) {
            return Err(RelayError::spec(
                &here,
                "a connection cap must be at least 1",
            ));
        }
        Ok(())
    }

    /// The target port for listening port `port` (same offset in a range, or the one port).
    pub fn target_port(&self, port: Port) -> Port {
        let t = self.target.ports;
        if t.len() == 1 {
            return t.start();
        }
        let off = port.get().saturating_sub(self.listen.ports.start().get());
        Port::new(t.start().get().saturating_add(off).min(t.end().get()))
    }
}

/// `PROTO LISTEN -> TARGET` (tcp omitted).
pub fn default_name(proto: Proto, listen: &Listen, target: &Target) -> String {
    match proto {
        Proto::Tcp => format!("{listen} -> {target}"),
        Proto::Udp => format!("udp {listen} -> {target}"),
    }
}

/// Splits `HOST:PORTS` (`[v6]:PORTS`, `v4:PORTS`, `name:PORTS`) at the last colon that is
/// outside brackets. `None` host for a bare port spec.
fn split_host_ports(s: &str) -> Result<(Option<&str>, &str), RelayError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(RelayError::spec(s, "empty; expected ADDR:PORT"));
    }
    if let Some(rest) = t.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(RelayError::spec(
                s,
                "an IPv6 address opened with [ is never closed",
            ));
        };
        let Some(ports) = after.strip_prefix(':') else {
            return Err(RelayError::spec(s, "expected :PORT after the ]"));
        };
        return Ok((Some(host), ports));
    }
    match t.rsplit_once(':') {
        None => Ok((None, t)),
        Some((host, ports)) => {
            if host.contains(':') {
                return Err(RelayError::spec(
                    s,
                    "an IPv6 address needs brackets: [2001:db8::1]:8080",
                ));
            }
            Ok((Some(host), ports))
        }
    }
}

fn parse_ports(input: &str, ports: &str) -> Result<PortRange, RelayError> {
    ports
        .parse::<PortRange>()
        .map_err(|e| RelayError::spec(input, &e.to_string()))
}

/// Parses a LISTEN word.
pub fn parse_listen(s: &str) -> Result<Listen, RelayError> {
    let (host, ports) = split_host_ports(s)?;
    let ports = parse_ports(s, ports)?;
    let addr = match host {
        None | Some("*") => None,
        Some("") => return Err(RelayError::spec(s, "empty address before the port")),
        Some(h) => Some(h.parse::<IpAddr>().map_err(|_| {
            RelayError::spec(
                s,
                "not an IP address (listen on an address, * or a bare port for every interface)",
            )
        })?),
    };
    Ok(Listen { addr, ports })
}

/// Parses a TARGET word.
pub fn parse_target(s: &str) -> Result<Target, RelayError> {
    let (host, ports) = split_host_ports(s)?;
    let ports = parse_ports(s, ports)?;
    let Some(host) = host else {
        return Err(RelayError::spec(s, "a target needs an address: ADDR:PORT"));
    };
    if host.is_empty() {
        return Err(RelayError::spec(s, "empty address before the port"));
    }
    let host = if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err(RelayError::spec(
                s,
                "cannot forward to an unspecified address",
            ));
        }
        TargetHost::Ip(ip)
    } else if host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        TargetHost::Name(host.to_owned())
    } else {
        return Err(RelayError::spec(s, "not an IP address or a host name"));
    };
    Ok(Target { host, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let l = parse_listen("8080").unwrap();
        assert_eq!(l.addr, None);
        assert_eq!(l.to_string(), "*:8080");
        let l = parse_listen("0.0.0.0:20000-20100").unwrap();
        assert_eq!(l.ports.len(), 101);
        let l = parse_listen("[::1]:9").unwrap();
        assert_eq!(l.to_string(), "[::1]:9");
        assert_eq!(parse_listen("*:80").unwrap().addr, None);
    }

    #[test]
    fn target_forms() {
        let t = parse_target("127.0.0.1:5000").unwrap();
        assert_eq!(t.to_string(), "127.0.0.1:5000");
        let t = parse_target("[2001:2::1]:80").unwrap();
        assert_eq!(t.to_string(), "[2001:2::1]:80");
        let t = parse_target("localhost:80").unwrap();
        assert_eq!(t.host, TargetHost::Name("localhost".into()));
    }

    #[test]
    fn hostile_input_is_refused_clearly() {
        for bad in [
            "",
            ":",
            "[::1",
            "[::1]8080",
            "::1:80",
            "1.2.3.4:",
            "1.2.3.4:70000",
            "1.2.3.4:90-80",
            "evil\u{1b}[2J:80",
            "a b:80",
        ] {
            let e = parse_target(bad).unwrap_err().to_string();
            assert!(!e.contains('\u{1b}'), "{e}");
        }
        assert!(parse_target("8080").is_err());
        assert!(parse_target("0.0.0.0:80").is_err());
        assert!(parse_listen("host:80").is_err());
    }

    #[test]
    fn ranges_line_up() {
        let r = Rule::parse(Proto::Tcp, "0.0.0.0:20000-20100", "198.18.0.2:30000-30100").unwrap();
        assert_eq!(r.target_port(Port::new(20005)).get(), 30005);
        let r = Rule::parse(Proto::Tcp, "0.0.0.0:20000-20100", "198.18.0.2:80").unwrap();
        assert_eq!(r.target_port(Port::new(20005)).get(), 80);
        assert!(Rule::parse(Proto::Tcp, "0.0.0.0:20000-20100", "198.18.0.2:80-81").is_err());
        assert!(Rule::parse(Proto::Tcp, "0.0.0.0:8080", "198.18.0.2:80-81").is_err());
        assert!(Rule::parse(Proto::Tcp, "0.0.0.0:0", "198.18.0.2:80").is_err());
    }
}
