//! `portolan probe HOST:PORT...`: what really answers there (service, product, version).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::{Protocol, ServiceHost, ServiceTarget};
use portolan_probe::{probe_targets, Options, Target, Transport};

use crate::cli::{SignatureArgs, TableJson};
use crate::render::probe::{ProbeReport, ProbeResult};
use crate::render::{self, Output};
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

/// Ports probed at once (TCP and UDP each).
const THREADS: usize = 32;

pub fn run(ctx: &Output, a: &ProbeArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    for (name, ms) in [("--timeout", a.timeout), ("--banner-wait", a.banner_wait)] {
        if !(1..=600_000).contains(&ms) {
            bail!("{name} must be between 1 and 600000 ms");
        }
    }
    let sigs = super::load_signatures(ctx, &a.sigs)?;
    let mut targets: Vec<Target> = Vec::new();
    for t in &a.targets {
        let st = ServiceTarget::parse(t)?;
        let transport = if st.proto == Protocol::Udp {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let port = st.port.get();
        match &st.host {
            ServiceHost::Addr(ip) => targets.push(Target {
                addr: SocketAddr::new(*ip, port),
                name: None,
                transport,
            }),
            ServiceHost::Name(n) => {
                let addrs: Vec<SocketAddr> = (n.as_str(), port)
                    .to_socket_addrs()
                    .with_context(|| format!("cannot resolve {n}"))?
                    .collect();
                for addr in addrs {
                    if !targets
                        .iter()
                        .any(|x| x.addr == addr && x.transport == transport)
                    {
                        targets.push(Target {
                            addr,
                            name: Some(n.clone()),
                            transport,
                        });
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
    let reports = probe_targets(&targets, &sigs, &opts, THREADS);
    let report = ProbeReport {
        results: reports
            .into_iter()
            .zip(targets)
            .map(|(report, t)| ProbeResult {
                report,
                hostname: t.name,
            })
            .collect(),
    };
    render::emit(out, ctx, &report)
}
