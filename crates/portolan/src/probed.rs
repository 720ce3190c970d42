//! Service detection as the commands show it: the signature loader, the JSON `answers`
//! object and its one-line text, and `--probe` for local listeners (`ls`, `who`): each
//! TCP listener (a wildcard one through loopback) is asked what it is.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use portolan_core::{Protocol, SocketState};
use portolan_probe::{
    probe_many, HttpInfo, Identity, Options, Report, Signatures, TlsInfo, Transport,
};
use portolan_sockets::SocketEntry;
use serde::Serialize;

use crate::cli::SignatureArgs;

/// What answered, by protocol and local address (ordered, for stable output).
pub type Probed = BTreeMap<(Transport, SocketAddr), Report>;

/// The report for a socket, if it is a probed listener: a TCP one in LISTEN, or an
/// unconnected UDP one (a UDP socket on the same address and port as a TCP listener is not
/// what answered there, and the other way round).
pub fn answer_for<'a>(probed: &'a Probed, s: &SocketEntry) -> Option<&'a Report> {
    let key = match (s.proto, s.state) {
        (Protocol::Tcp, SocketState::Listen) => Transport::Tcp,
        (Protocol::Udp, SocketState::Unconn) => Transport::Udp,
        _ => return None,
    };
    probed.get(&(key, s.local))
}

/// The JSON `answers` object of a probed port.
#[derive(Debug, Serialize)]
pub struct Answers<'a> {
    pub service: Option<&'a str>,
    pub product: Option<&'a str>,
    pub version: Option<&'a str>,
    pub info: Option<&'a str>,
    pub cpe: Option<&'a str>,
    pub banner: Option<&'a str>,
    /// The TLS handshake (version, cipher, ALPN, certificate), when the port speaks TLS.
    pub tls: Option<&'a TlsInfo>,
    /// HTTP details (status, title, frameworks), when an HTTP answer came.
    pub http: Option<&'a HttpInfo>,
}

impl<'a> Answers<'a> {
    pub fn of(r: &'a Report) -> Answers<'a> {
        let id = r.identity.as_ref();
        Answers {
            service: id.map(|i| i.service.as_str()),
            tls: r.tls.as_ref(),
            http: r.http.as_ref(),
            product: id.and_then(|i| i.product.as_deref()),
            version: id.and_then(|i| i.version.as_deref()),
            info: id.and_then(|i| i.info.as_deref()),
            cpe: id.and_then(|i| i.cpe.as_deref()),
            banner: r.banner.as_deref(),
        }
    }

    /// "http Werkzeug httpd 2.2.2 (Python 3.11.2; ...)", or what it said.
    pub fn text(r: &Report) -> String {
        match &r.identity {
            Some(id) => {
                let v = version_text(id);
                let name = service_name(id, r.tls.as_ref());
                if v.is_empty() {
                    name
                } else {
                    format!("{name} {v}")
                }
            }
            None => match (&r.error, &r.banner) {
                (Some(e), _) => format!("no answer: {}", portolan_core::escape::for_terminal(e)),
                // The banner is escaped already; cut on a character boundary.
                (None, Some(b)) => format!("unknown: {}", b.chars().take(40).collect::<String>()),
                (None, None) => "unknown (silent)".into(),
            },
        }
    }
}

/// The service as a person names it: a protocol wrapped in TLS from the first byte gets
/// its TLS name ("https", "imaps"; "ssl/NAME" where the protocol has none). STARTTLS does
/// not change the name (the port speaks the protocol, and upgrades).
pub fn service_name(id: &Identity, tls: Option<&TlsInfo>) -> String {
    if tls.is_none_or(|t| t.starttls.is_some()) {
        return id.service.clone();
    }
    match id.service.as_str() {
        s @ ("http" | "imap" | "pop3" | "smtp" | "ldap" | "ftp" | "nntp" | "irc") => {
            format!("{s}s")
        }
        "ssl" | "tls" => id.service.clone(),
        s => format!("ssl/{s}"),
    }
}

/// One line about a TLS handshake: "TLSv1.3 TLS13_AES_256_GCM_SHA384, ALPN h2; certificate
/// CN=zoo.test (self-signed), valid until 2027-11-22T00:00:00Z, names zoo.test".
pub fn tls_text(t: &TlsInfo) -> String {
    let mut s = format!("{} {}", t.version, t.cipher);
    if let Some(p) = &t.starttls {
        let _ = write!(s, " (STARTTLS over {p})");
    }
    if let Some(a) = &t.alpn {
        let _ = write!(s, ", ALPN {a}");
    }
    if let Some(c) = &t.cert {
        let _ = write!(s, "; certificate {}", c.subject);
        let mut flags = Vec::new();
        if c.self_signed {
            flags.push("self-signed".to_owned());
        } else {
            flags.push(format!("issued by {}", c.issuer));
        }
        if c.expired {
            flags.push("EXPIRED".to_owned());
        }
        if c.not_yet_valid {
            flags.push("not valid yet".to_owned());
        }
        let _ = write!(s, " ({})", flags.join(", "));
        let _ = write!(s, ", valid until {}", c.not_after);
        if !c.sans.is_empty() {
            let _ = write!(s, ", names {}", c.sans.join(" "));
        }
    }
    s
}

/// One line about an HTTP answer: "200, title \"Welcome to nginx!\", PHP, HTTP/2".
pub fn http_text(h: &HttpInfo) -> String {
    // Status 0: no HTTP/1 status line came (an h2c preface).
    let mut parts: Vec<String> = (h.status != 0)
        .then(|| h.status.to_string())
        .into_iter()
        .collect();
    if let Some(t) = &h.title {
        parts.push(format!("title \"{t}\""));
    }
    parts.extend(h.frameworks.iter().cloned());
    if h.http2 {
        parts.push("HTTP/2".to_owned());
    }
    parts.join(", ")
}

/// "OpenSSH 9.2p1 (protocol 2.0)": product, version and info of a service.
pub fn version_text(id: &Identity) -> String {
    let mut s = [id.product.as_deref(), id.version.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(info) = &id.info {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push('(');
        s.push_str(info);
        s.push(')');
    }
    s
}

/// The built-in signatures, plus every `*.toml` file of `--signatures DIR`, plus the
/// probes of an nmap-service-probes file (`--nmap-probes PATH`, read only when given; what it
/// gave, and what it skipped, is one note on stderr).
pub fn signatures(
    ctx: &crate::render::Output,
    extra: &SignatureArgs,
) -> anyhow::Result<Signatures> {
    let mut sigs = Signatures::builtin();
    if let Some(dir) = &extra.signatures {
        if sigs.add_dir(dir)? == 0 {
            crate::render::note(
                ctx.err_color,
                &format!("no *.toml signature file in {}", dir.display()),
            );
        }
    }
    if let Some(path) = &extra.nmap_probes {
        let summary = sigs.add_nmap_file(path)?;
        crate::render::note(ctx.err_color, &summary.to_string());
    }
    Ok(sigs)
}

/// `--probe` of `ls` and `who`: the listeners among `socks` asked what they are, or
/// nothing when not asked. CSV has no place for the answers: an error.
pub fn when_asked(
    ctx: &crate::render::Output,
    probe: bool,
    sigs: &SignatureArgs,
    socks: &[&SocketEntry],
) -> anyhow::Result<Probed> {
    if !probe {
        return Ok(Probed::new());
    }
    if ctx.format == crate::render::Format::Csv {
        anyhow::bail!("--probe shows its answers in the table, --json and --jsonl, not in CSV");
    }
    Ok(probe_listeners(socks, &signatures(ctx, sigs)?))
}

/// Where to connect to reach a listener from this machine.
fn reach(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// Probes every TCP listener among `socks`, and every unconnected UDP socket on a port
/// that a UDP probe names (DNS, NTP, SNMP: a UDP service answers only what it understands,
/// so other ports are not sent guesses). Local: short limits.
pub fn probe_listeners(socks: &[&SocketEntry], sigs: &Signatures) -> Probed {
    let mut tcp: Vec<SocketAddr> = socks
        .iter()
        .filter(|s| s.proto == Protocol::Tcp && s.state == SocketState::Listen)
        .map(|s| s.local)
        .collect();
    tcp.sort();
    tcp.dedup();
    let mut udp: Vec<SocketAddr> = socks
        .iter()
        .filter(|s| {
            s.proto == Protocol::Udp
                && s.state == SocketState::Unconn
                && sigs
                    .probes_for(Transport::Udp, s.local.port())
                    .first()
                    .is_some_and(|p| p.ports.contains(&s.local.port()))
        })
        .map(|s| s.local)
        .collect();
    udp.sort();
    udp.dedup();
    let opts = Options {
        connect_timeout: Duration::from_secs(1),
        banner_wait: Duration::from_millis(1500),
        read_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let targets: Vec<(SocketAddr, Option<String>)> =
        tcp.iter().map(|l| (reach(*l), None)).collect();
    let utargets: Vec<(SocketAddr, Option<String>)> =
        udp.iter().map(|l| (reach(*l), None)).collect();
    let (reports, ureports) = std::thread::scope(|scope| {
        let u = scope.spawn(|| portolan_probe::udp::probe_many_udp(&utargets, sigs, &opts, 8));
        let t = probe_many(&targets, sigs, &opts, 32);
        (t, u.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    });
    let tcp = tcp.into_iter().map(|l| (Transport::Tcp, l)).zip(reports);
    let udp = udp.into_iter().map(|l| (Transport::Udp, l)).zip(ureports);
    tcp.chain(udp).collect()
}
