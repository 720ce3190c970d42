//! `portolan serve`: the dashboard. This room reads the flags, binds the address (so a
//! taken port is an error here, with exit 2), prints the login URL and hands over to the
//! web edge (`crate::web`), which reads the same engines and command rooms as the CLI.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::escape::for_terminal;
use portolan_core::when::parse_span;

use crate::cli::StoreArgs;
use crate::render::Output;
use crate::web;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on. Anything but loopback is reachable from other
    /// machines (a warning says so); 0 as the port picks a free one
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// Allow the page's actions: probe a port, kill its listeners (with confirmation)
    #[arg(long)]
    pub allow_actions: bool,
    /// Also accept this Host name (a name people use to reach the dashboard; repeatable).
    /// Every other Host header is refused, against DNS rebinding
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// A file written by `portolan scan --json` to show on /scans (repeatable)
    #[arg(long = "scans", value_name = "FILE")]
    pub scans: Vec<std::path::PathBuf>,
    /// Also show the scans queued on this PostgreSQL (`scan --queue`) on /scans; without
    /// URL, $PORTOLAN_QUEUE
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub queue: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Seconds between two samples of this machine's listeners (what the page updates from)
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub interval: f64,
    /// Do not read the live nftables ruleset (no reachability on the map)
    #[arg(long)]
    pub no_firewall: bool,
    /// Stop by itself after this span (30s, 10m, 2h)
    #[arg(long = "for", value_name = "SPAN")]
    pub for_: Option<String>,
}

pub fn run(ctx: &Output, a: &ServeArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let listen: SocketAddr = a.listen.parse().map_err(|_| {
        anyhow::anyhow!(
            "--listen {}: expected ADDR:PORT, e.g. 127.0.0.1:7878 or [::1]:7878",
            for_terminal(&a.listen)
        )
    })?;
    if !(a.interval.is_finite() && (0.1..=3600.0).contains(&a.interval)) {
        bail!("--interval: between 0.1 and 3600 seconds");
    }
    let mut hosts = Vec::new();
    for h in &a.allow_host {
        hosts.push(
            web::HostName::parse(h)
                .map_err(|e| anyhow::anyhow!("--allow-host {}: {e}", for_terminal(h)))?,
        );
    }
    let duration = a
        .for_
        .as_deref()
        .map(|v| parse_span(v).context("--for"))
        .transpose()?;
    for f in &a.scans {
        // Read now, so a missing or malformed file is an error at start, not a broken page.
        web::scans::load(f)?;
    }
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let token = web::auth::Token::random()?;
    let url_host = match bound.ip() {
        ip if ip.is_unspecified() => match ip {
            IpAddr::V4(_) => "127.0.0.1".to_owned(),
            IpAddr::V6(_) => "[::1]".to_owned(),
        },
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if !bound.ip().is_loopback() {
        ctx.note(&format!(
            "warning: the dashboard listens on {bound}, which other machines can reach; whoever \
             holds the token sees this machine's processes{} and the traffic is not encrypted \
             (prefer 127.0.0.1 and an SSH tunnel: ssh -L 7878:127.0.0.1:7878 HOST)",
            if a.allow_actions {
                " and can kill them"
            } else {
                ""
            }
        ));
    }
    let config = web::Config {
        bound,
        extra_hosts: hosts,
        allow_actions: a.allow_actions,
        scans: a.scans.clone(),
        queue: a.queue.as_ref().and_then(|u| {
            if u.is_empty() {
                std::env::var("PORTOLAN_QUEUE")
                    .ok()
                    .filter(|s| !s.trim().is_empty())
            } else {
                Some(u.clone())
            }
        }),
        db: a.store.db.clone(),
        store: a.store.store.clone(),
        interval: std::time::Duration::from_secs_f64(a.interval),
        firewall: !a.no_firewall,
        duration,
        source: ctx.source,
    };
    // The one line on stdout: scripts read it. The token in the URL works once (it becomes a
    // cookie); scripts send it as `Authorization: Bearer TOKEN`.
    writeln!(
        out,
        "http://{url_host}:{}/?token={}",
        bound.port(),
        token.hex()
    )?;
    out.flush()?;
    ctx.note(&format!(
        "dashboard at http://{url_host}:{}/ (open the URL above once: its token becomes a cookie; \
         scripts send `Authorization: Bearer TOKEN`){}",
        bound.port(),
        if a.allow_actions {
            "; actions allowed: probe, kill"
        } else {
            ""
        }
    ));
    web::serve(listener, config, token)?;
    Ok(Outcome::Found)
}
