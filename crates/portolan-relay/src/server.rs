//! The forwarder: every rule's listeners on one tokio runtime of its own, the limits, the
//! reload and the drain.
//!
//! Listeners are bound synchronously by [`Forwarder::start`] and [`Forwarder::reload`], so a
//! port in use is an error at once (the binary names who holds it). Each listening socket
//! has an accept task; each accepted connection a task of its own that checks `allow`
//! and the caps, connects to the target (within `connect_timeout`, each resolved address
//! in turn), writes the PROXY header if asked, and relays ([`crate::tcp`]). A rule's state
//! ([`RuleState`]) is shared by its tasks; a reload swaps its rule in place, so
//! established connections keep going and new ones take the new target and options.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use portolan_core::cidr::canonical;
use portolan_core::Port;
use serde::Serialize;
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::spec::{Listen, Proto, RangeMode, Rule, TargetHost};
use crate::stats::{Refusal, RuleStats};
use crate::tcp::{self, Counters, RelayOptions};
use crate::RelayError;

/// What the forwarder tells its caller (who prints it, escaped).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A connection or datagram refused by `allow` or a cap (TCP: reset at once).
    Refused {
        rule: String,
        proto: Proto,
        peer: SocketAddr,
        why: &'static str,
    },
    /// The target refused, was unreachable or too slow; the client was reset.
    TargetFailed {
        rule: String,
        proto: Proto,
        peer: SocketAddr,
        target: SocketAddr,
        error: String,
    },
    /// accept(2) failed; with EMFILE/ENFILE the rule waits a moment and accepts again.
    AcceptError { rule: String, error: String },
}

/// Where events go. Called from the runtime's threads: must not block.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A rule with its target's addresses resolved.
#[derive(Debug)]
pub struct Live {
    pub rule: Rule,
    pub targets: Vec<IpAddr>,
}

/// A rule's state, shared by its listeners' and connections' tasks.
pub struct RuleState {
    live: RwLock<Arc<Live>>,
    pub stats: Arc<RuleStats>,
    sources: Mutex<HashMap<IpAddr, u32>>,
    pub events: EventSink,
    /// How many UDP events (refusals, target failures) went out this second.
    pub(crate) udp_events: crate::udp::EventLimiter,
}

impl std::fmt::Debug for RuleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleState")
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl RuleState {
    /// The rule as it is now (a reload may swap it at any time).
    pub fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn set_live(&self, live: Live) {
        let live = Arc::new(live);
        match self.live.write() {
            Ok(mut g) => *g = live,
            Err(p) => *p.into_inner() = live,
        }
    }

    /// Sends an event.
    pub fn emit(&self, e: Event) {
        (self.events)(e);
    }

    /// Admits a connection or session from `peer` under the rule's `allow` and caps, or
    /// says why not (and counts the refusal). The admission holds its place in the caps
    /// until dropped.
    pub fn admit(self: &Arc<Self>, live: &Live, peer: IpAddr) -> Result<Admission, Refusal> {
        let peer = canonical(peer);
        let o = &live.rule.options;
        let refuse = |why| {
            self.stats.refused(why);
            Err(why)
        };
        if !o.allows(peer) {
            return refuse(Refusal::NotAllowed);
        }
        // The place in max_conns is taken atomically (connections accepted on several
        // workers at once cannot overshoot the cap); given back if the per-source cap
        // refuses.
        let cap = o.max_conns.map_or(u64::MAX, u64::from);
        if self
            .stats
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_err()
        {
            return refuse(Refusal::MaxConns);
        }
        let mut source = None;
        if let Some(max) = o.max_conns_per_source {
            let mut m = self
                .sources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = m.entry(peer).or_insert(0);
            if *n >= max {
                self.stats.active.fetch_sub(1, Ordering::Relaxed);
                return refuse(Refusal::MaxPerSource);
            }
            *n += 1;
            source = Some(peer);
        }
        Ok(Admission {
            state: Arc::clone(self),
            source,
        })
    }
}

/// A place in a rule's caps, given back when dropped.
#[derive(Debug)]
pub struct Admission {
    state: Arc<RuleState>,
    source: Option<IpAddr>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state.stats.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.source {
            let mut m = self
                .state
                .sources
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = m.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

/// Resolves a rule's target host (an address as it is; a name through the system's
/// resolver, IPv4 and IPv6 in the order it gives).
pub fn resolve(rule: &Rule) -> Result<Vec<IpAddr>, RelayError> {
    match &rule.target.host {
        TargetHost::Ip(ip) => Ok(vec![*ip]),
        TargetHost::Name(n) => {
            let addrs: Vec<IpAddr> = (n.as_str(), 0)
                .to_socket_addrs()
                .map_err(|e| RelayError::Resolve {
                    host: portolan_core::escape::for_terminal(n).into_owned(),
                    why: e.to_string(),
                })?
                .map(|a| a.ip())
                .collect();
            if addrs.is_empty() {
                return Err(RelayError::Resolve {
                    host: portolan_core::escape::for_terminal(n).into_owned(),
                    why: "no address".to_owned(),
                });
            }
            Ok(addrs)
        }
    }
}

/// A rule as bound: for the startup lines, `--list` and the registry.
#[derive(Debug, Clone, Serialize)]
pub struct BoundRule {
    pub name: String,
    pub proto: Proto,
    pub listen: Listen,
    /// The sockets actually bound (one per port, or one fed by a redirect).
    pub addrs: Vec<SocketAddr>,
    pub target: String,
    pub range_mode: RangeMode,
}

/// What a reload did.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
    /// Rules that could not be (re)started, and why; rules that ran before keep running.
    pub failed: Vec<(String, String)>,
    /// Removed rules started again because the new rule meant to take their place
    /// failed (they are not in `removed`).
    pub restored: Vec<String>,
}

/// Whether two rules' listening sockets would collide (same protocol, overlapping ports
/// and addresses).
fn listen_overlap(a: &Rule, b: &Rule) -> bool {
    let (la, lb) = (a.listen.ports, b.listen.ports);
    let addrs = match (a.listen.addr, b.listen.addr) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
    };
    a.proto == b.proto && la.start() <= lb.end() && lb.start() <= la.end() && addrs
}

type Key = (Proto, Listen, RangeMode);

struct Running {
    key: Key,
    state: Arc<RuleState>,
    tasks: Vec<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
    redirect: Option<crate::kernel::Redirect>,
}

/// The forwarder.
pub struct Forwarder {
    rt: Runtime,
    running: Mutex<Vec<Running>>,
    /// States of rules removed by a reload whose connections may still be open.
    retired: Mutex<Vec<Arc<RuleState>>>,
    events: EventSink,
    started: Instant,
    /// The running rules' names and counters, for the metrics page (which outlives
    /// neither this nor the drain, but must not hold the forwarder).
    catalog: Arc<Mutex<Catalog>>,
}

type Catalog = Vec<(String, &'static str, Arc<RuleStats>)>;

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

const LISTEN_BACKLOG: i32 = 4096;

fn bind_socket(proto: Proto, addr: SocketAddr, dual: bool) -> Result<Socket, RelayError> {
    let ty = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let what = |e: io::Error| {
        if e.kind() == io::ErrorKind::AddrInUse {
            RelayError::AddrInUse {
                proto: proto.as_str(),
                addr,
            }
        } else {
            RelayError::io(format!("{proto} {addr}: bind"), e)
        }
    };
    let s = Socket::new(Domain::for_address(addr), ty, None).map_err(what)?;
    if proto == Proto::Tcp {
        s.set_reuse_address(true).map_err(what)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(!dual).map_err(what)?;
    }
    s.set_nonblocking(true).map_err(what)?;
    s.bind(&addr.into()).map_err(what)?;
    if proto == Proto::Tcp {
        s.listen(LISTEN_BACKLOG).map_err(what)?;
    }
    Ok(s)
}

/// Binds `addr`; for "every interface" a dual-stack `[::]` socket, or `0.0.0.0` where
/// IPv6 is off.
fn bind_for(proto: Proto, listen: &Listen, port: u16) -> Result<Socket, RelayError> {
    let addr = listen.socket_addr(Port::new(port));
    if listen.addr.is_none() {
        match bind_socket(proto, addr, true) {
            Err(RelayError::Io { source, .. })
                if source.raw_os_error() == Some(rustix::io::Errno::AFNOSUPPORT.raw_os_error()) =>
            {
                let v4 = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port);
                bind_socket(proto, v4, false)
            }
            r => r,
        }
    } else {
        bind_socket(proto, addr, false)
    }
}

impl Forwarder {
    /// Binds every rule's listeners and starts forwarding. `threads`: the runtime's
    /// worker threads (default: one per core).
    pub fn start(
        rules: Vec<Rule>,
        events: EventSink,
        threads: Option<usize>,
    ) -> Result<Forwarder, RelayError> {
        let threads = threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
            .clamp(1, 64);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("portolan-forward")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| RelayError::io("start the forwarder's runtime", e))?;
        let fwd = Forwarder {
            rt,
            running: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            events,
            started: Instant::now(),
            catalog: Arc::new(Mutex::new(Vec::new())),
        };
        let mut started = Vec::with_capacity(rules.len());
        for rule in rules {
            let targets = resolve(&rule)?;
            let state = Arc::new(RuleState {
                live: RwLock::new(Arc::new(Live { rule, targets })),
                stats: Arc::new(RuleStats::default()),
                sources: Mutex::new(HashMap::new()),
                events: Arc::clone(&fwd.events),
                udp_events: crate::udp::EventLimiter::default(),
            });
            // On an error, what was started already is dropped (its tasks aborted with
            // the runtime, its redirects removed).
            started.push(fwd.launch(state)?);
        }
        *fwd.lock_running() = started;
        fwd.update_catalog();
        Ok(fwd)
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Binds one rule's sockets and spawns their tasks.
    fn launch(&self, state: Arc<RuleState>) -> Result<Running, RelayError> {
        let live = state.live();
        let rule = &live.rule;
        let key = (rule.proto, rule.listen, rule.options.range_mode);
        let _enter = self.rt.enter();
        let mut tasks = Vec::new();
        let mut addrs = Vec::new();
        let mut redirect = None;
        if rule.options.range_mode == RangeMode::Redirect {
            // A local target inside the range would have the forwarder's own connections
            // (and every local client of those ports) redirected back to it.
            let (t, l) = (rule.target.ports, rule.listen.ports);
            if t.start() <= l.end()
                && l.start() <= t.end()
                && live.targets.iter().any(|ip| crate::kernel::is_local(*ip))
            {
                return Err(RelayError::spec(
                    &rule.name,
                    "a redirect range cannot forward to this machine's own ports inside the range (its own connections would be redirected back to it)",
                ));
            }
            let sock = bind_for(rule.proto, &rule.listen, 0)?;
            let local = local_addr(&sock)?;
            let listener =
                TcpListener::from_std(sock.into()).map_err(|e| RelayError::io("listen", e))?;
            redirect = Some(crate::kernel::redirect(
                rule.proto,
                &rule.listen,
                local.port(),
            )?);
            addrs.push(local);
            tasks.push(
                self.rt
                    .spawn(accept_loop(listener, Arc::clone(&state), true)),
            );
        } else {
            // Every socket is bound (and registered with the runtime) before any task
            // starts: a port that fails leaves nothing running behind; the sockets bound so
            // far are closed on return.
            enum Ready {
                Tcp(TcpListener),
                Udp(UdpSocket, Port),
            }
            let mut ready = Vec::with_capacity(rule.listen.ports.len() as usize);
            for port in rule.listen.ports.iter() {
                let sock = bind_for(rule.proto, &rule.listen, port.get())?;
                addrs.push(local_addr(&sock)?);
                ready.push(match rule.proto {
                    Proto::Tcp => Ready::Tcp(
                        TcpListener::from_std(sock.into())
                            .map_err(|e| RelayError::io("listen", e))?,
                    ),
                    Proto::Udp => Ready::Udp(
                        UdpSocket::from_std(sock.into())
                            .map_err(|e| RelayError::io("listen", e))?,
                        port,
                    ),
                });
            }
            // Bound, so nothing else holds these ports here: a local target on them is this
            // rule's own listener, and it would connect to itself until the descriptors
            // run out.
            let covers = |ip: IpAddr| match rule.listen.addr {
                None => true,
                Some(a) if a.is_unspecified() => a.is_ipv4() == canonical(ip).is_ipv4(),
                Some(a) => canonical(a) == canonical(ip),
            };
            let (t, l) = (rule.target.ports, rule.listen.ports);
            if t.start() <= l.end()
                && l.start() <= t.end()
                && live
                    .targets
                    .iter()
                    .any(|ip| covers(*ip) && crate::kernel::is_local(*ip))
            {
                return Err(RelayError::spec(
                    &rule.name,
                    "the target is this rule's own listening address: it would forward to itself",
                ));
            }
            for r in ready {
                tasks.push(match r {
                    Ready::Tcp(l) => self.rt.spawn(accept_loop(l, Arc::clone(&state), false)),
                    Ready::Udp(u, port) => {
                        self.rt
                            .spawn(crate::udp::serve(u, port, Arc::clone(&state)))
                    }
                });
            }
        }
        Ok(Running {
            key,
            state,
            tasks,
            addrs,
            redirect,
        })
    }

    /// The rules as bound now.
    pub fn bound(&self) -> Vec<BoundRule> {
        self.lock_running()
            .iter()
            .map(|r| {
                let live = r.state.live();
                BoundRule {
                    name: live.rule.name.clone(),
                    proto: live.rule.proto,
                    listen: live.rule.listen,
                    addrs: r.addrs.clone(),
                    target: live.rule.target.to_string(),
                    range_mode: live.rule.options.range_mode,
                }
            })
            .collect()
    }

    /// Connections (TCP) and sessions (UDP) open now, over every rule (also rules a reload
    /// removed whose connections go on).
    pub fn active(&self) -> u64 {
        let running: u64 = self
            .lock_running()
            .iter()
            .map(|r| r.state.stats.active.load(Ordering::Relaxed))
            .sum();
        let mut retired = self
            .retired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        retired.retain(|s| s.stats.active.load(Ordering::Relaxed) > 0);
        running
            + retired
                .iter()
                .map(|s| s.stats.active.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    fn update_catalog(&self) {
        let c: Catalog = self
            .lock_running()
            .iter()
            .map(|r| {
                let live = r.state.live();
                (
                    live.rule.name.clone(),
                    live.rule.proto.as_str(),
                    Arc::clone(&r.state.stats),
                )
            })
            .collect();
        *self
            .catalog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
    }

    /// Every running rule's counters in Prometheus text.
    pub fn metrics_text(&self) -> String {
        render_catalog(&self.catalog)
    }

    /// A renderer of the counters that does not hold the forwarder (for a metrics
    /// server that may outlive it).
    pub fn metrics_source(&self) -> Arc<dyn Fn() -> String + Send + Sync> {
        let c = Arc::clone(&self.catalog);
        Arc::new(move || render_catalog(&c))
    }

    /// How long the forwarder has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the given rules' listeners and waits until their sockets are closed.
    fn stop(&self, stopped: Vec<Running>) {
        let mut handles = Vec::new();
        for mut r in stopped {
            for t in r.tasks.drain(..) {
                t.abort();
                handles.push(t);
            }
            // Dropping the redirect removes its nftables rule.
            r.redirect = None;
            if r.state.stats.active.load(Ordering::Relaxed) > 0 {
                self.retired
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(Arc::clone(&r.state));
            }
        }
        self.rt.block_on(async {
            for h in handles {
                let _ = h.await;
            }
        });
    }

    /// Applies a new set of rules: rules with the same protocol, listening address and
    /// ports keep their sockets and take the new target and options (established
    /// connections are not touched); others are stopped or started. A rule that cannot
    /// start is reported and the others still apply.
    pub fn reload(&self, rules: Vec<Rule>) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut running = std::mem::take(&mut *self.lock_running());
        let mut keep: Vec<Running> = Vec::new();
        let mut fresh: Vec<(Rule, Vec<IpAddr>)> = Vec::new();
        for rule in rules {
            let targets = match resolve(&rule) {
                Ok(t) => t,
                Err(e) => {
                    report.failed.push((rule.name.clone(), e.to_string()));
                    // The running version of the rule (if any) goes on unchanged.
                    let key = (rule.proto, rule.listen, rule.options.range_mode);
                    if let Some(i) = running.iter().position(|r| r.key == key) {
                        keep.push(running.swap_remove(i));
                    }
                    continue;
                }
            };
            let key = (rule.proto, rule.listen, rule.options.range_mode);
            if let Some(i) = running.iter().position(|r| r.key == key) {
                let r = running.swap_remove(i);
                let old = r.state.live();
                if old.rule == rule && old.targets == targets {
                    report.unchanged += 1;
                } else {
                    report.changed.push(rule.name.clone());
                    r.state.set_live(Live { rule, targets });
                }
                keep.push(r);
            } else {
                fresh.push((rule, targets));
            }
        }
        // What is left in `running` is gone from the config: stop it before binding the
        // new rules (one may take over its address).
        let removed: Vec<Arc<RuleState>> = running.iter().map(|r| Arc::clone(&r.state)).collect();
        self.stop(running);
        let mut failed_rules: Vec<Rule> = Vec::new();
        for (rule, targets) in fresh {
            let name = rule.name.clone();
            let wanted = rule.clone();
            let state = Arc::new(RuleState {
                live: RwLock::new(Arc::new(Live { rule, targets })),
                stats: Arc::new(RuleStats::default()),
                sources: Mutex::new(HashMap::new()),
                events: Arc::clone(&self.events),
                udp_events: crate::udp::EventLimiter::default(),
            });
            match self.launch(state) {
                Ok(r) => {
                    report.added.push(name);
                    keep.push(r);
                }
                Err(e) => {
                    report.failed.push((name, e.to_string()));
                    failed_rules.push(wanted);
                }
            }
        }
        // A removed rule whose place a failed new rule was to take runs again: the
        // reload must not leave that address without the forward it had.
        for state in removed {
            let old = state.live();
            let replaced_by_failure = failed_rules.iter().any(|f| listen_overlap(f, &old.rule));
            if replaced_by_failure && self.relaunch(&state, &mut keep) {
                report.restored.push(old.rule.name.clone());
            } else {
                report.removed.push(old.rule.name.clone());
            }
        }
        *self.lock_running() = keep;
        self.update_catalog();
        report
    }

    /// Starts a stopped rule again with its own state (counters kept); it leaves the
    /// retired list, so its connections are not counted twice.
    fn relaunch(&self, state: &Arc<RuleState>, keep: &mut Vec<Running>) -> bool {
        match self.launch(Arc::clone(state)) {
            Ok(r) => {
                self.retired
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .retain(|s| !Arc::ptr_eq(s, state));
                keep.push(r);
                true
            }
            Err(_) => false,
        }
    }

    /// Stops accepting (every listener closed, redirects removed), then waits up to
    /// `timeout` for open connections to end, calling `tick` with the count left every
    /// 50 ms; `tick` returning false stops the wait (a second signal). Returns how
    /// many were still open (they are reset as the runtime shuts down).
    pub fn drain(self, timeout: Duration, mut tick: impl FnMut(u64) -> bool) -> u64 {
        let running = std::mem::take(&mut *self.lock_running());
        // Every rule whose connections may be open: those of rules a reload removed, and the
        // running ones (which `stop` retires too: `retired` is taken before, not counted
        // after, or their connections would count twice).
        let mut states: Vec<Arc<RuleState>> = std::mem::take(
            &mut *self
                .retired
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        states.extend(running.iter().map(|r| Arc::clone(&r.state)));
        self.stop(running);
        let count = || -> u64 {
            states
                .iter()
                .map(|s| s.stats.active.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = count();
            if left == 0 || Instant::now() >= deadline || !tick(left) {
                self.rt.shutdown_timeout(Duration::from_secs(1));
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a future on the forwarder's runtime (for the metrics server).
    pub fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(f)
    }
}

fn render_catalog(c: &Mutex<Catalog>) -> String {
    let c = c
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let view: Vec<(String, &str, &RuleStats)> =
        c.iter().map(|(n, p, s)| (n.clone(), *p, &**s)).collect();
    crate::stats::render(&view)
}

fn local_addr(s: &Socket) -> Result<SocketAddr, RelayError> {
    s.local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or_else(|| {
            RelayError::io(
                "read the bound address",
                io::Error::other("not an inet socket"),
            )
        })
}

fn is_resource_shortage(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let n = e.raw_os_error();
    [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM]
        .iter()
        .any(|x| Some(x.raw_os_error()) == n)
}

/// Accepts forever (until aborted). Under EMFILE/ENFILE the pending connections stay in
/// the backlog while the rule waits 50 ms and tries again; the error is reported at most
/// every 5 s.
async fn accept_loop(listener: TcpListener, state: Arc<RuleState>, redirect: bool) {
    let mut last_report: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                tokio::spawn(handle_tcp(sock, peer, Arc::clone(&state), redirect));
            }
            Err(e) => {
                let shortage = is_resource_shortage(&e);
                let transient = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                );
                if transient {
                    continue;
                }
                state.stats.errors.fetch_add(1, Ordering::Relaxed);
                if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    last_report = Some(Instant::now());
                    let name = state.live().rule.name.clone();
                    let what = if shortage {
                        format!("{e} (accepting again in 50 ms; raise the open-files limit)")
                    } else {
                        e.to_string()
                    };
                    state.emit(Event::AcceptError {
                        rule: name,
                        error: what,
                    });
                }
                tokio::time::sleep(Duration::from_millis(if shortage { 50 } else { 10 })).await;
            }
        }
    }
}

fn set_options(s: &TcpStream, keepalive: Option<Duration>) {
    let _ = s.set_nodelay(true);
    if let Some(t) = keepalive {
        let ka = TcpKeepalive::new()
            .with_time(t)
            .with_interval(Duration::from_secs(10))
            .with_retries(6);
        let _ = SockRef::from(s).set_tcp_keepalive(&ka);
    }
}

async fn connect(
    targets: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, (SocketAddr, io::Error)> {
    let mut last = None;
    for ip in targets {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = Some((addr, e)),
            Err(_) => {
                last = Some((
                    addr,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {timeout:?}"),
                    ),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        (
            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port),
            io::Error::other("no target address"),
        )
    }))
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Resets the socket when dropped, unless disarmed (`.0 = None`).
struct ResetOnDrop<'a>(Option<&'a TcpStream>);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.0 {
            tcp::reset(s);
        }
    }
}

async fn handle_tcp(client: TcpStream, peer: SocketAddr, state: Arc<RuleState>, redirect: bool) {
    let live = state.live();
    let rule = &live.rule;
    let admission = match state.admit(&live, peer.ip()) {
        Ok(a) => a,
        Err(why) => {
            tcp::reset(&client);
            state.emit(Event::Refused {
                rule: rule.name.clone(),
                proto: Proto::Tcp,
                peer,
                why: why.as_str(),
            });
            return;
        }
    };
    let Ok(local) = client.local_addr() else {
        tcp::reset(&client);
        return;
    };
    // What the client dialled: the socket's own address, or (redirected) the address the
    // kernel rewrote, read back; the target port and the PROXY header's destination.
    let dialled = if redirect {
        match crate::kernel::original_dst(&SockRef::from(&client)) {
            Ok(a) => a,
            Err(e) => {
                tcp::reset(&client);
                state.stats.errors.fetch_add(1, Ordering::Relaxed);
                state.emit(Event::AcceptError {
                    rule: rule.name.clone(),
                    error: format!("original destination of {peer}: {e}"),
                });
                return;
            }
        }
    } else {
        local
    };
    let tport = rule.target_port(Port::new(dialled.port())).get();
    // A client cut while the target is being connected (the drain giving up) is reset,
    // not closed as if the forward had finished.
    let mut guard = ResetOnDrop(Some(&client));
    let o = &rule.options;
    let since = Instant::now();
    let upstream = loop {
        match connect(&live.targets, tport, o.connect_timeout).await {
            Ok(s) => break s,
            // No descriptor for the target's socket (EMFILE, ENFILE): the pooled pipes give
            // theirs back, and the client waits for one, up to the connect timeout, as the
            // connections still in the backlog do, instead of being reset at once.
            Err((_, e)) if is_resource_shortage(&e) && since.elapsed() < o.connect_timeout => {
                if tcp::drop_pooled_pipes() == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Err((target, e)) => {
                tcp::reset(&client);
                state.stats.target_failed.fetch_add(1, Ordering::Relaxed);
                state.emit(Event::TargetFailed {
                    rule: rule.name.clone(),
                    proto: Proto::Tcp,
                    peer,
                    target,
                    error: e.to_string(),
                });
                return;
            }
        }
    };
    set_options(&client, o.keepalive);
    set_options(&upstream, o.keepalive);
    if let Some(v) = o.proxy_protocol {
        let h = crate::proxy::header(v, peer, dialled);
        if write_all(&upstream, &h).await.is_err() {
            tcp::reset(&client);
            tcp::reset(&upstream);
            state.stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    state.stats.accepted.fetch_add(1, Ordering::Relaxed);
    // From here the relay's own guard resets on a cut.
    guard.0 = None;
    drop(guard);
    let opts = RelayOptions {
        idle_timeout: o.idle_timeout,
        splice: !o.no_splice,
    };
    let counters = Counters {
        up: &state.stats.bytes_up,
        down: &state.stats.bytes_down,
    };
    let out = tcp::relay(client, upstream, opts, counters).await;
    if out.idle {
        state.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
    } else if out.error.is_some() {
        state.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    drop(admission);
}
