//! `--probe` for local listeners (`ls`, `who`): connect to each TCP listener (a wildcard
//! one through loopback) and find out what answers there.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use portolan_core::Protocol;
use portolan_probe::{probe_many, Options, Report, Signatures};
use portolan_sockets::SocketEntry;
use serde::Serialize;

/// What answered, by the listener's local address.
pub type Probed = HashMap<SocketAddr, Report>;

/// The JSON `answers` object of a probed listener.
#[derive(Debug, Serialize)]
pub struct Answers<'a> {
    pub service: Option<&'a str>,
    pub product: Option<&'a str>,
    pub version: Option<&'a str>,
    pub info: Option<&'a str>,
    pub cpe: Option<&'a str>,
    pub banner: Option<&'a str>,
}

impl<'a> Answers<'a> {
    pub fn of(r: &'a Report) -> Answers<'a> {
        let id = r.identity.as_ref();
        Answers {
            service: id.map(|i| i.service.as_str()),
            product: id.and_then(|i| i.product.as_deref()),
            version: id.and_then(|i| i.version.as_deref()),
            info: id.and_then(|i| i.info.as_deref()),
            cpe: id.and_then(|i| i.cpe.as_deref()),
            banner: r.banner.as_deref(),
        }
    }

    /// "http: Werkzeug httpd 2.2.2 (Python 3.11.2; ...)", or what it said.
    pub fn text(r: &Report) -> String {
        match &r.identity {
            Some(id) => {
                let mut s = id.service.clone();
                for part in [&id.product, &id.version].into_iter().flatten() {
                    s.push(' ');
                    s.push_str(part);
                }
                if let Some(info) = &id.info {
                    s.push_str(" (");
                    s.push_str(info);
                    s.push(')');
                }
                s
            }
            None => match (&r.error, &r.banner) {
                (Some(e), _) => format!("no answer: {}", portolan_core::escape::for_terminal(e)),
                (None, Some(b)) => format!("unknown: {}", b.chars().take(40).collect::<String>()),
                (None, None) => "unknown (silent)".into(),
            },
        }
    }
}

/// The built-in signatures, plus every `*.toml` file of `dir` (`--signatures DIR`).
pub fn signatures(ctx: &crate::Ctx, dir: Option<&std::path::Path>) -> anyhow::Result<Signatures> {
    use portolan_core::escape::for_terminal;
    let mut sigs = Signatures::builtin();
    if let Some(dir) = dir {
        let n = sigs
            .add_dir(dir)
            .map_err(|e| anyhow::anyhow!(for_terminal(&e.to_string()).into_owned()))?;
        if n == 0 {
            crate::output::note(
                ctx.err_color,
                &format!(
                    "no *.toml signature file in {}",
                    for_terminal(&dir.display().to_string())
                ),
            );
        }
    }
    Ok(sigs)
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

/// Probes every TCP listener among `socks` (local: short limits).
pub fn probe_listeners(socks: &[&SocketEntry], sigs: &Signatures) -> Probed {
    let locals: Vec<SocketAddr> = {
        let mut v: Vec<SocketAddr> = socks
            .iter()
            .filter(|s| s.proto == Protocol::Tcp && s.state.is_listening())
            .map(|s| s.local)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let targets: Vec<(SocketAddr, String)> = locals
        .iter()
        .map(|l| (reach(*l), reach(*l).ip().to_string()))
        .collect();
    let opts = Options {
        connect_timeout: Duration::from_secs(1),
        banner_wait: Duration::from_millis(1500),
        read_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let reports = probe_many(&targets, sigs, &opts, 32);
    locals.into_iter().zip(reports).collect()
}
