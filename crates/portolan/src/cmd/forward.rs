//! `portolan forward`: forward a TCP or UDP port (portolan-relay). Running, its output is
//! an event stream on stderr (one line per refused or failed connection, escaped;
//! `--events` as JSON lines); `--list` and `--kernel` write a report (table or JSON).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use portolan_core::escape::for_terminal;
use portolan_core::when::parse_span;
use portolan_core::{Cidr, Port, Protocol};
use portolan_firewall::ApplyOptions;
use portolan_relay::server::{Event, EventSink, Forwarder};
use portolan_relay::spec::{default_name, Options, Proto, Rule};
use portolan_relay::{config, kernel, registry, RelayError};
use portolan_watch::alert::Webhook;
use portolan_watch::metrics::{self, Metrics};

use crate::cli::{EventSinkArgs, TableJson};
use crate::render::forward::{ForwardList, ForwardRow};
use crate::render::{self, Output};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct ForwardArgs {
    /// Where to listen: PORT, PORT-PORT, ADDR:PORT, [V6ADDR]:PORT or *:PORT (a bare port
    /// or * is every interface, IPv4 and IPv6)
    #[arg(value_name = "LISTEN")]
    pub listen: Option<String>,
    /// Where to send: ADDR:PORT, [V6ADDR]:PORT or NAME:PORT; a range as long as LISTEN's,
    /// or one port for all of it
    #[arg(value_name = "TARGET")]
    pub target: Option<String>,
    /// Internal: `forward __watchdog STATE_DIR GENERATION` is the commit-confirm rollback
    /// process that `--kernel --confirm-within` starts
    #[arg(value_name = "GENERATION", hide = true)]
    pub watchdog_generation: Option<String>,
    /// Forward UDP (default TCP)
    #[arg(short, long)]
    pub udp: bool,
    /// Rules from a TOML file (see `portolan forward --help`'s section in the README);
    /// read again on SIGHUP without dropping established connections
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["listen", "udp"])]
    pub config: Option<PathBuf>,
    /// Only these sources (CIDR or address; repeatable, or comma-separated); others are
    /// reset at once (TCP) or dropped (UDP)
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub allow: Vec<String>,
    /// At most N connections (TCP) or sessions (UDP) at once; beyond, new ones are reset
    #[arg(long, value_name = "N")]
    pub max_conns: Option<u32>,
    /// At most N connections at once from one source address
    #[arg(long, value_name = "N")]
    pub max_conns_per_source: Option<u32>,
    /// Close a TCP connection idle both ways for this long (default: never)
    #[arg(long, value_name = "SPAN")]
    pub idle_timeout: Option<String>,
    /// TCP keepalive on both sides after this long idle, or `off`
    #[arg(long, value_name = "SPAN", default_value = "60s")]
    pub keepalive: String,
    /// How long connecting to the target may take
    #[arg(long, value_name = "SPAN", default_value = "5s")]
    pub connect_timeout: String,
    /// Send a PROXY protocol header (v1 or v2) to the target, so it sees the client's address
    #[arg(long, value_name = "VERSION")]
    pub proxy_protocol: Option<String>,
    /// UDP: end a client's session after this long without a datagram either way
    #[arg(long, value_name = "SPAN", default_value = "60s")]
    pub udp_timeout: String,
    /// UDP: sessions at most; the least recently used is ended for a new one
    #[arg(long, value_name = "N", default_value_t = portolan_relay::spec::DEFAULT_UDP_MAX_SESSIONS)]
    pub udp_max_sessions: usize,
    /// A listening range as one socket per port (`listeners`) or one socket fed by an
    /// nftables redirect (`redirect`, root)
    #[arg(long, value_name = "MODE", default_value = "listeners")]
    pub range_mode: String,
    /// Relay with read/write instead of splice(2) (for comparison)
    #[arg(long)]
    pub no_splice: bool,
    /// Worker threads (default: one per core)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics (a loopback address)
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub sinks: EventSinkArgs,
    /// No line per refused or failed connection on stderr (metrics still count them)
    #[arg(short, long)]
    pub quiet: bool,
    /// At SIGTERM or SIGINT, wait this long for open connections to end (a second signal
    /// stops at once)
    #[arg(long, value_name = "SPAN", default_value = "30s")]
    pub drain_timeout: String,
    /// Stop after this long (default: until SIGINT or SIGTERM)
    #[arg(long = "for", value_name = "SPAN")]
    pub for_: Option<String>,
    /// List the forwards running on this machine: portolan processes and kernel rules
    #[arg(long, conflicts_with_all = ["listen", "config", "kernel"])]
    pub list: bool,
    /// Install the rule as nftables DNAT in portolan's own table (root): the kernel
    /// forwards, no process stays in the path
    #[arg(long)]
    pub kernel: bool,
    /// With --kernel: remove the kernel forward listening on LISTEN
    #[arg(long, requires = "kernel", value_name = "LISTEN")]
    pub remove: Option<String>,
    /// With --kernel: keep the change only if `portolan forward --kernel --confirm` follows
    /// within this span (0: no confirmation)
    #[arg(long, value_name = "SPAN", default_value = "0")]
    pub confirm_within: String,
    /// With --kernel: confirm the pending change
    #[arg(long, requires = "kernel")]
    pub confirm: bool,
    /// With --kernel or a redirect range: allow taking the current SSH session's port or sshd's
    #[arg(long)]
    pub no_ssh_guard: bool,
    /// With --kernel: set the sysctls the rule needs (ip_forward, route_localnet)
    #[arg(long)]
    pub set_sysctl: bool,
    #[command(flatten)]
    pub formats: TableJson,
}

fn span(flag: &str, v: &str) -> anyhow::Result<Duration> {
    parse_span(v).with_context(|| flag.to_owned())
}

/// The options the flags give (for one rule, or as the defaults of a config file).
fn options(a: &ForwardArgs) -> anyhow::Result<Options> {
    let mut o = Options {
        allow: a
            .allow
            .iter()
            .map(|c| {
                c.parse::<Cidr>()
                    .map_err(|e| anyhow::anyhow!("--allow: {e}"))
            })
            .collect::<anyhow::Result<_>>()?,
        max_conns: a.max_conns,
        max_conns_per_source: a.max_conns_per_source,
        connect_timeout: span("--connect-timeout", &a.connect_timeout)?,
        udp_timeout: span("--udp-timeout", &a.udp_timeout)?,
        udp_max_sessions: a.udp_max_sessions,
        range_mode: a.range_mode.parse()?,
        no_splice: a.no_splice,
        ..Options::default()
    };
    o.idle_timeout = a
        .idle_timeout
        .as_deref()
        .map(|v| span("--idle-timeout", v))
        .transpose()?;
    o.keepalive = match a.keepalive.trim() {
        "off" | "none" => None,
        v => Some(span("--keepalive", v)?),
    };
    o.proxy_protocol = a.proxy_protocol.as_deref().map(str::parse).transpose()?;
    Ok(o)
}

fn rules(a: &ForwardArgs) -> anyhow::Result<Vec<Rule>> {
    let base = options(a)?;
    if let Some(path) = &a.config {
        return Ok(config::load(path, &base)?);
    }
    let (Some(listen), Some(target)) = (&a.listen, &a.target) else {
        bail!("give LISTEN and TARGET (`portolan forward 0.0.0.0:8080 127.0.0.1:5000`), or --config FILE");
    };
    let proto = if a.udp { Proto::Udp } else { Proto::Tcp };
    let mut rule = Rule::parse(proto, listen, target)?;
    rule.name = default_name(proto, &rule.listen, &rule.target);
    rule.options = base;
    rule.check()?;
    Ok(vec![rule])
}

pub fn run(ctx: &Output, a: &ForwardArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    if a.listen.as_deref() == Some("__watchdog") {
        let (Some(dir), Some(generation)) = (&a.target, &a.watchdog_generation) else {
            bail!("usage: portolan forward __watchdog STATE_DIR GENERATION");
        };
        let generation: u128 = generation.parse().context("GENERATION")?;
        kernel::run_watchdog(std::path::Path::new(dir), generation)?;
        return Ok(Outcome::Found);
    }
    if a.watchdog_generation.is_some() {
        bail!("give LISTEN and TARGET only");
    }
    if a.list {
        return list(ctx, out);
    }
    if a.kernel {
        return kernel(ctx, a, out);
    }
    if a.remove.is_some() || a.confirm {
        bail!("--remove and --confirm are for kernel forwards: add --kernel");
    }
    serve(ctx, a)
}

fn list(ctx: &Output, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let mut rows = Vec::new();
    for r in registry::all() {
        for e in r.forwards {
            rows.push(ForwardRow {
                kind: "process",
                proto: e.proto,
                listen: e.addr.to_string(),
                target: e.target,
                rule: e.rule,
                pid: Some(r.pid),
            });
        }
    }
    let mut notes = Vec::new();
    match kernel_rows() {
        Ok(k) => rows.extend(k),
        Err(e) => notes.push(e),
    }
    for n in &notes {
        ctx.note(n);
    }
    render::emit(out, ctx, &ForwardList { forwards: rows })
}

fn kernel_rows() -> Result<Vec<ForwardRow>, String> {
    if !rustix::process::geteuid().is_root() {
        return Err("kernel forwards are not listed: reading nftables needs root".to_owned());
    }
    let listed = portolan_relay::kernel::list().map_err(|e| e.to_string())?;
    Ok(listed
        .into_iter()
        .map(|k| ForwardRow {
            kind: "kernel",
            proto: k.proto.as_str().to_owned(),
            listen: k.listen.to_string(),
            target: k.target.to_string(),
            rule: k.name,
            pid: None,
        })
        .collect())
}

fn kernel_list_report(forwards: &[kernel::KernelForward]) -> ForwardList {
    ForwardList {
        forwards: forwards
            .iter()
            .map(|k| ForwardRow {
                kind: "kernel",
                proto: k.proto.as_str().to_owned(),
                listen: k.listen.to_string(),
                target: k.target.to_string(),
                rule: k.name.clone(),
                pid: None,
            })
            .collect(),
    }
}

fn kernel(ctx: &Output, a: &ForwardArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    portolan_firewall::require_privileges()?;
    let state_dir = kernel::default_state_dir();
    if a.confirm {
        kernel::confirm(&state_dir)?;
        ctx.note("kernel forwards confirmed");
        let st = kernel::status(&state_dir)?;
        // Done: 0, also when no forward is left (1 is for a list that found none).
        render::emit(out, ctx, &kernel_list_report(&st.forwards))?;
        return Ok(Outcome::Found);
    }
    let opts = ApplyOptions {
        state_dir,
        confirm_within: span("--confirm-within", &a.confirm_within)?,
        watchdog: kernel::watchdog_launcher()?,
    };
    let proto = if a.udp { Proto::Udp } else { Proto::Tcp };
    let change = if let Some(l) = &a.remove {
        let listen = portolan_relay::spec::parse_listen(l)?;
        kernel::remove(&listen, a.udp.then_some(Proto::Udp), &opts)?
    } else {
        let (Some(listen), Some(target)) = (&a.listen, &a.target) else {
            bail!("--kernel: give LISTEN and TARGET (or --remove LISTEN, --confirm)");
        };
        // The options a kernel rule cannot honour are refused, not ignored.
        let mut rule = Rule::parse(proto, listen, target)?;
        rule.options = options(a)?;
        rule.options.keepalive = Options::default().keepalive;
        rule.options.connect_timeout = Options::default().connect_timeout;
        rule.options.udp_timeout = Options::default().udp_timeout;
        let fwd = kernel::KernelForward::from_rule(&rule)?;
        let needs = kernel::sysctl_needs(std::slice::from_ref(&fwd));
        if a.set_sysctl {
            for n in needs.iter().filter(|n| !n.met()) {
                ctx.note(&format!(
                    "setting {} = 1 ({})",
                    n.name,
                    for_terminal(&n.why)
                ));
            }
            kernel::set_sysctls(&needs)?;
        } else {
            kernel::check_sysctls(&needs)?;
        }
        let guard = if a.no_ssh_guard {
            kernel::SshGuard::off()
        } else {
            kernel::SshGuard::detect(&super::sshd_ports(ctx))
        };
        kernel::add(&fwd, &guard, &opts)?
    };
    let verb = if a.remove.is_some() {
        "removed"
    } else {
        "added"
    };
    for c in &change.changed {
        ctx.note(&format!(
            "kernel forward {verb}: {} {} -> {}",
            c.proto, c.listen, c.target
        ));
    }
    for w in &change.report.warnings {
        ctx.note(&for_terminal(w));
    }
    if let Some(deadline) = change.report.deadline {
        let left = deadline.saturating_sub(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        ctx.note(&format!(
            "confirm within {left} s with `portolan forward --kernel --confirm`, or the change is rolled back{}",
            if change.report.kernel_deadline {
                " (by the kernel itself)"
            } else {
                ""
            }
        ));
    }
    // Done: 0, also when the change left no forward (1 is for a list that found none).
    render::emit(out, ctx, &kernel_list_report(&change.forwards))?;
    Ok(Outcome::Found)
}

/// Raises the soft open-files limit to the hard one: each connection holds two sockets
/// and, while bytes move, two pipes (four descriptors).
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (l.current, l.maximum) {
        if cur < max {
            l.current = Some(max);
            if setrlimit(Resource::Nofile, l).is_ok() {
                return max;
            }
        }
        return cur;
    }
    l.current.unwrap_or(u64::MAX)
}

/// Lines for people: refusals and failures at most 20 a second, the rest counted and
/// summed up every 10 s (metrics see all).
struct Throttle {
    window: Instant,
    in_window: u32,
    held: u64,
    last_summary: Instant,
}

impl Throttle {
    fn allow(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.in_window = 0;
        }
        self.in_window += 1;
        if self.in_window <= 20 {
            true
        } else {
            self.held += 1;
            false
        }
    }

    fn summary(&mut self) -> Option<u64> {
        if self.held > 0 && self.last_summary.elapsed() >= Duration::from_secs(10) {
            self.last_summary = Instant::now();
            return Some(std::mem::take(&mut self.held));
        }
        None
    }
}

fn event_line(e: &Event) -> String {
    match e {
        Event::Refused {
            rule,
            proto,
            peer,
            why,
        } => format!(
            "refused {proto} {peer} on {}: {}",
            for_terminal(rule),
            why.replace('_', " ")
        ),
        Event::TargetFailed {
            rule,
            proto,
            peer,
            target,
            error,
        } => format!(
            "{proto} {peer} on {}: target {target} failed: {} (client reset)",
            for_terminal(rule),
            for_terminal(error)
        ),
        Event::AcceptError { rule, error } => {
            format!("{}: accept: {}", for_terminal(rule), for_terminal(error))
        }
    }
}

fn bind_error(ctx: &Output, e: RelayError) -> anyhow::Error {
    if let RelayError::AddrInUse { proto, addr } = &e {
        let p = if *proto == "udp" {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let holders = super::port_holders(ctx, Port::new(addr.port()), p).unwrap_or_default();
        if !holders.is_empty() {
            return anyhow::anyhow!("{e}: held by {}", holders.join(", "));
        }
    }
    e.into()
}

fn serve(ctx: &Output, a: &ForwardArgs) -> anyhow::Result<Outcome> {
    let rules = rules(a)?;
    // A redirect range takes over ports in the kernel: the SSH guard of kernel forwards
    // applies (sshd's ports and the current session's are refused unless --no-ssh-guard).
    if rules
        .iter()
        .any(|r| r.options.range_mode == portolan_relay::RangeMode::Redirect)
        && !a.no_ssh_guard
    {
        let guard = kernel::SshGuard::detect(&super::sshd_ports(ctx));
        for r in &rules {
            if r.options.range_mode == portolan_relay::RangeMode::Redirect {
                guard.check(r.proto, &r.listen, &r.name)?;
            }
        }
    }
    let drain_timeout = span("--drain-timeout", &a.drain_timeout)?;
    let duration = a.for_.as_deref().map(|v| span("--for", v)).transpose()?;
    let nofile = raise_nofile();
    let mut events_file: Option<Box<dyn Write + Send>> = match a.sinks.events.as_deref() {
        None => None,
        Some("-") => Some(Box::new(std::io::stdout())),
        Some(f) => Some(Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .with_context(|| format!("--events {}", for_terminal(f)))?,
        )),
    };
    let host = portolan_watch::history::hostname();
    let metrics = Metrics::new(&host);
    let webhook: Option<Webhook> = a
        .sinks
        .webhook_config()
        .map(|cfg| Webhook::start(cfg, metrics.clone()))
        .transpose()
        .context("--webhook")?;
    let quiet = a.quiet;
    let throttle = Mutex::new(Throttle {
        window: Instant::now(),
        in_window: 0,
        held: 0,
        last_summary: Instant::now(),
    });
    // The runtime's threads hand events to a writer thread through a bounded queue and
    // never wait on it: a stalled stderr, journal or --events reader must not freeze the
    // forwarding. What does not fit is dropped and counted (metrics count every event).
    let (tx, rx) = std::sync::mpsc::sync_channel::<Event>(4096);
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink_dropped = Arc::clone(&dropped);
    let sink: EventSink = Arc::new(move |e: Event| {
        if tx.try_send(e).is_err() {
            sink_dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut file = events_file.take();
    let writer = std::thread::Builder::new()
        .name("forward-events".into())
        .spawn(move || {
            for e in rx {
                let json = (file.is_some() || webhook.is_some()).then(|| {
                    let mut json = serde_json::to_value(&e).unwrap_or_default();
                    if let Some(o) = json.as_object_mut() {
                        o.insert(
                            "ts_ms".into(),
                            serde_json::json!(std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis())),
                        );
                    }
                    json
                });
                if let (Some(w), Some(json)) = (file.as_mut(), &json) {
                    if serde_json::to_writer(&mut *w, json).is_ok() {
                        let _ = writeln!(w);
                        let _ = w.flush();
                    }
                }
                if let (Some(h), Some(json)) = (&webhook, &json) {
                    h.send(std::slice::from_ref(json));
                }
                if quiet {
                    continue;
                }
                let Ok(mut t) = throttle.lock() else { continue };
                let mut err = std::io::stderr().lock();
                if t.allow() {
                    let _ = writeln!(err, "portolan forward: {}", event_line(&e));
                }
                if let Some(n) = t.summary() {
                    let _ = writeln!(
                        err,
                        "portolan forward: {n} more refused or failed connections not listed (see --metrics)"
                    );
                }
            }
        })
        .context("cannot start the event writer")?;
    // The handlers are in place before the listening lines: whoever starts us may signal
    // as soon as it reads them (a signal during startup stops once the loop is reached).
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .context("cannot install the signal handler")?;
    let fwd = Forwarder::start(rules, sink, a.threads).map_err(|e| bind_error(ctx, e))?;
    let registration = registry::Registration::write(&fwd.bound())
        .map_err(|e| ctx.note(&format!("not registered for `portolan who`: {e}")))
        .ok();
    let mut err = std::io::stderr();
    for b in fwd.bound() {
        let addrs: Vec<String> = match b.addrs.as_slice() {
            [one] => vec![one.to_string()],
            [first, .., last] => vec![format!("{first} .. {last} ({} sockets)", b.addrs.len())],
            [] => Vec::new(),
        };
        let _ = writeln!(
            err,
            "portolan forward: {} {} -> {}{}",
            b.proto,
            addrs.join(", "),
            for_terminal(&b.target),
            if b.range_mode == portolan_relay::RangeMode::Redirect {
                format!(" (range {} redirected by nftables)", b.listen)
            } else {
                String::new()
            }
        );
    }
    if nofile < 4096 {
        ctx.note(&format!(
            "the open-files limit is {nofile}: each connection needs 2 to 6 descriptors (raise `ulimit -n`)"
        ));
    }
    let server = match &a.metrics {
        None => None,
        Some(m) => {
            let addr: SocketAddr = m.parse().map_err(|_| {
                anyhow::anyhow!("--metrics: expected ADDR:PORT, e.g. 127.0.0.1:9478")
            })?;
            metrics.set_extra(fwd.metrics_source());
            let s = metrics::serve(addr, metrics.clone(), false)?;
            let _ = writeln!(
                err,
                "portolan forward: metrics at http://{}/metrics",
                s.local_addr()
            );
            Some(s)
        }
    };
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        // Taken (swapped back to false) here, so that a second signal, even one that comes
        // before the drain starts, is seen by the drain.
        if stop.swap(false, Ordering::Relaxed) {
            break;
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if hup.swap(false, Ordering::Relaxed) {
            let Some(path) = &a.config else {
                let _ = writeln!(
                    err,
                    "portolan forward: SIGHUP: nothing to reload (no --config)"
                );
                continue;
            };
            let base = options(a)?;
            match config::load(path, &base) {
                Err(e) => {
                    let _ = writeln!(
                        err,
                        "portolan forward: reload refused, the rules that run go on: {e}"
                    );
                }
                Ok(new) => {
                    let r = fwd.reload(new);
                    let _ = writeln!(
                        err,
                        "portolan forward: reloaded: {} added, {} removed, {} changed, {} unchanged{}",
                        r.added.len(),
                        r.removed.len(),
                        r.changed.len(),
                        r.unchanged,
                        if r.failed.is_empty() { "" } else { "; some failed:" }
                    );
                    for name in &r.restored {
                        let _ = writeln!(
                            err,
                            "portolan forward:   {}: kept running (the rule meant to replace it failed)",
                            for_terminal(name)
                        );
                    }
                    for (name, why) in &r.failed {
                        let _ = writeln!(
                            err,
                            "portolan forward:   {}: {}",
                            for_terminal(name),
                            for_terminal(why)
                        );
                    }
                    if let Some(reg) = &registration {
                        if let Err(e) = reg.update(&fwd.bound()) {
                            let _ = writeln!(
                                err,
                                "portolan forward: the registration for `portolan who` is stale: {e}"
                            );
                        }
                    }
                }
            }
        }
    }
    drop(registration);
    let open = fwd.active();
    if open > 0 {
        let _ = writeln!(
            err,
            "portolan forward: stopped accepting; draining {open} open connection(s) for up to {} s",
            drain_timeout.as_secs_f64()
        );
    }
    // A second signal (since the first was taken above) stops the drain at once.
    let left = fwd.drain(drain_timeout, |_| !stop.load(Ordering::Relaxed));
    // The forwarder is gone (its senders with it): the writer finishes what is queued,
    // for up to 2 s (a stalled stderr must not hold the exit).
    let deadline = Instant::now() + Duration::from_secs(2);
    while !writer.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let lost = dropped.load(Ordering::Relaxed);
    if lost > 0 {
        let _ = writeln!(
            err,
            "portolan forward: {lost} event(s) were dropped while the event writer was behind (metrics count them all)"
        );
    }
    if let Some(s) = server {
        s.shutdown();
    }
    if left > 0 {
        let _ = writeln!(
            err,
            "portolan forward: stopped with {left} connection(s) still open (reset)"
        );
    } else {
        let _ = writeln!(err, "portolan forward: stopped");
    }
    Ok(Outcome::Found)
}
