//! `portolan probe HOST:PORT...`: what really answers there (service, product, version).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::escape::for_terminal;
use portolan_core::{Protocol, ServiceHost, ServiceTarget};
use portolan_probe::udp::probe_many_udp;
use portolan_probe::{probe_many, Options, Report, Signatures, Transport};
use serde_json::json;

use crate::cli::{SignatureArgs, TableJson};
use crate::render::Output;
use crate::render::{write_table, Cell, Format, GREEN};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// HOST:PORT, [IPv6]:PORT, with /udp for a UDP service (/tcp is the default); a name is
    /// probed on every address it has
    #[arg(value_name = "HOST:PORT", required = true)]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub sigs: SignatureArgs,
    /// How long a service may take to answer a probe, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub timeout: u64,
    /// How long to wait for a service that speaks first, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub banner_wait: u64,
    #[command(flatten)]
    pub formats: TableJson,
}

fn report_json(r: &Report, name: Option<&str>) -> serde_json::Value {
    let mut v = json!({
        "host": r.addr.ip().to_string(),
        "hostname": name,
        "port": r.addr.port(),
        "proto": r.proto,
        "reachable": r.error.is_none(),
        "error": r.error,
        "connect_ms": r.connect_ms,
        "probe": r.identity.as_ref().map(|i| i.probe.as_str()),
    });
    if let (Some(obj), Ok(serde_json::Value::Object(a))) = (
        v.as_object_mut(),
        serde_json::to_value(crate::probed::Answers::of(r)),
    ) {
        obj.extend(a);
    }
    v
}

/// `127.0.0.1:80`, `127.0.0.1:53/udp`: a report's address as the user would write it.
fn address(r: &Report) -> String {
    match r.proto {
        Transport::Tcp => r.addr.to_string(),
        Transport::Udp => format!("{}/udp", r.addr),
    }
}

/// Probes TCP and UDP targets (both at once), reports in the order given.
fn probe_all(
    targets: &[(SocketAddr, Option<String>, Transport)],
    sigs: &Signatures,
    opts: &Options,
) -> Vec<Report> {
    let of = |want: Transport| -> Vec<(SocketAddr, Option<String>)> {
        targets
            .iter()
            .filter(|(_, _, p)| *p == want)
            .map(|(a, h, _)| (*a, h.clone()))
            .collect()
    };
    let (tcp, udp) = (of(Transport::Tcp), of(Transport::Udp));
    let (tcp, udp) = std::thread::scope(|s| {
        let u = s.spawn(|| probe_many_udp(&udp, sigs, opts, 32));
        let t = probe_many(&tcp, sigs, opts, 32);
        // A panic in the UDP worker is a bug: pass it on.
        let u = u.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (t, u)
    });
    let (mut tcp, mut udp) = (tcp.into_iter(), udp.into_iter());
    targets
        .iter()
        .filter_map(|(_, _, p)| match p {
            Transport::Tcp => tcp.next(),
            Transport::Udp => udp.next(),
        })
        .collect()
}

pub fn run(ctx: &Output, a: &ProbeArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    for (name, ms) in [("--timeout", a.timeout), ("--banner-wait", a.banner_wait)] {
        if !(1..=600_000).contains(&ms) {
            bail!("{name} must be between 1 and 600000 ms");
        }
    }
    let sigs = crate::probed::signatures(ctx, &a.sigs)?;
    let mut targets: Vec<(SocketAddr, Option<String>, Transport)> = Vec::new();
    for t in &a.targets {
        let st = ServiceTarget::parse(t)?;
        let proto = if st.proto == Protocol::Udp {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let port = st.port.get();
        match &st.host {
            ServiceHost::Addr(ip) => targets.push((SocketAddr::new(*ip, port), None, proto)),
            ServiceHost::Name(n) => {
                let addrs: Vec<SocketAddr> = (n.as_str(), port)
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve {n}"))?
                    .collect();
                for sa in addrs {
                    if !targets.iter().any(|(x, _, p)| *x == sa && *p == proto) {
                        targets.push((sa, Some(n.clone()), proto));
                    }
                }
            }
        }
    }
    let opts = Options {
        read_timeout: Duration::from_millis(a.timeout),
        banner_wait: Duration::from_millis(a.banner_wait),
        ..Options::default()
    };
    let reports = probe_all(&targets, &sigs, &opts);
    let found = reports.iter().any(|r| r.identity.is_some());
    match ctx.format {
        Format::Json => {
            let list: Vec<_> = reports
                .iter()
                .zip(&targets)
                .map(|(r, (_, h, _))| report_json(r, h.as_deref()))
                .collect();
            serde_json::to_writer(&mut *out, &json!({ "results": list }))?;
            writeln!(out)?;
        }
        Format::Jsonl => {
            for (r, (_, h, _)) in reports.iter().zip(&targets) {
                serde_json::to_writer(&mut *out, &report_json(r, h.as_deref()))?;
                writeln!(out)?;
            }
        }
        Format::Csv => bail!("probe prints a table, --json or --jsonl"),
        Format::Table => {
            let rows: Vec<Vec<Cell>> = reports
                .iter()
                .map(|r| {
                    let id = r.identity.as_ref();
                    let what = match (id, &r.error) {
                        (Some(i), _) => {
                            Cell::colored(crate::probed::service_name(i, r.tls.as_ref()), GREEN)
                        }
                        // A UDP error is a finding ("closed", "no answer"), not a failed connect.
                        (None, Some(e)) if r.proto == Transport::Udp => {
                            Cell::plain(for_terminal(e).into_owned())
                        }
                        (None, Some(e)) => Cell::plain(format!("unreachable: {}", for_terminal(e))),
                        (None, None) => Cell::plain("unknown"),
                    };
                    vec![
                        Cell::plain(address(r)),
                        what,
                        Cell::plain(id.and_then(|i| i.product.clone()).unwrap_or_default()),
                        Cell::plain(id.and_then(|i| i.version.clone()).unwrap_or_default()),
                        Cell::plain(id.and_then(|i| i.info.clone()).unwrap_or_default()),
                    ]
                })
                .collect();
            write_table(
                out,
                ctx.style,
                &["ADDRESS", "SERVICE", "PRODUCT", "VERSION", "INFO"],
                &rows,
                "",
            )?;
            for r in &reports {
                if r.identity.is_none() {
                    if let Some(b) = &r.banner {
                        writeln!(out, "{} said: {b}", address(r))?;
                    }
                }
                if let Some(cpe) = r.identity.as_ref().and_then(|i| i.cpe.as_ref()) {
                    writeln!(out, "{} {cpe}", address(r))?;
                }
                if let Some(t) = &r.tls {
                    writeln!(out, "{} TLS: {}", address(r), crate::probed::tls_text(t))?;
                }
                if let Some(h) = &r.http {
                    writeln!(out, "{} HTTP: {}", address(r), crate::probed::http_text(h))?;
                }
            }
        }
    }
    Ok(Outcome::of(found))
}
