//! A network testbed for portolan's scanner: a scanner network namespace, a target network
//! namespace holding any number of hosts (addresses, listeners, nftables port sets), and
//! between the two a user-space wire that delays, jitters, loses and reorders packets with a
//! seed. Everything is torn down on Drop.
//!
//! ```text
//!  pt-<pid>-<n>-scan                      this process                  pt-<pid>-<n>-tgt
//!  198.19.255.1, 2001:2:0:ffff::1        (two wire threads)           hosts on lo: 198.18.x.y,
//!  routes 198.18/15, 2001:2::/48 ->  [pt-wire TUN] <==> [pt-wire TUN]  2001:2::x; nftables
//!                                         loss, delay, jitter,         table inet pt-testbed;
//!                                         reorder per direction        listener thread
//! ```
//!
//! The scanner runs in the scanner namespace (`ip netns exec`, see
//! [`Testbed::command_in_scanner`], or on a thread there, see [`Testbed::run_in_scanner`]);
//! nothing touches the root namespace. Needs root, `ip` (iproute2) and `nft` (nftables).
//!
//! UDP: hosts may have echo-answered ports, dropped and ICMP-rejected UDP ranges, and real
//! services (dnsmasq, snmpd, ntpd, see [`UdpService`]) that the testbed starts in the target
//! namespace and kills on Drop; [`Testbed::truth_udp`] and [`Testbed::expected_udp`] give
//! the ground truth (nmap's open / closed / filtered / open|filtered). A host may also be a
//! SYN-ACK-everything middlebox ([`HostSpec::with_synack_all`], [`PortTruth::SynAckAll`]).
//!
//! This crate must not send traffic anywhere but inside its own namespaces, addressed from
//! 198.18.0.0/15 and 2001:2::/48.
//!
//! ```no_run
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::Duration;
//! use portolan_testbed::{HostSpec, PortState, Testbed};
//!
//! let host = Ipv4Addr::new(198, 18, 0, 10);
//! let tb = Testbed::builder()
//!     .rtt(Duration::from_millis(20))
//!     .loss(0.01)
//!     .seed(1)
//!     .host(HostSpec::new(host).with_open([22, 80]).with_drop(1000, 1999))
//!     .build()?;
//! let out = tb
//!     .command_in_scanner("portolan")
//!     .args(["scan", "198.18.0.10", "-p", "1-2000"])
//!     .output()?;
//! assert_eq!(tb.expected(IpAddr::V4(host), 22), PortState::Open);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod listen;
pub mod netns;
mod nft;
pub mod pg;
mod rng;
mod services;
mod spec;
mod sys;
mod wire;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;

pub use error::TestbedError;
pub use listen::{AcceptMode, HOLD_FOR, HOLD_MAX};
pub use nft::SYNACK_ALL_PORT;
pub use services::SNMP_SYS_DESCR;
pub use spec::{
    in_v4_range, in_v6_range, merge_ranges, parse_compact, HostSpec, IcmpReject, PortState,
    PortTruth, UdpService, DNS_ANSWER, DNS_ZONE, SCANNER_V4, SCANNER_V6,
};
pub use sys::{block_termination_signals, wait_termination_signal};
pub use wire::{Direction, DirectionStats, JitterDistribution, WireStats};

use listen::Listeners;
use services::Services;
use wire::{LinkParams, Wire};

/// Nonblocking TCP connects for tests and benchmarks running in the scanner namespace (see
/// [`Testbed::run_in_scanner`]): many SYNs in flight at once, without a thread each.
pub mod connect {
    use std::net::SocketAddr;
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};

    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    /// A nonblocking, close-on-exec TCP socket of `addr`'s family (shared with the
    /// listeners).
    pub(crate) fn stream_socket(addr: SocketAddr) -> rustix::io::Result<OwnedFd> {
        let family = if addr.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        rustix::net::socket_with(
            family,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
    }

    /// Starts a nonblocking connect to `to` (IPv4 or IPv6); `None` if it failed at once.
    pub fn start(to: SocketAddr) -> Option<OwnedFd> {
        let fd = stream_socket(to).ok()?;
        match rustix::net::connect(&fd, &to) {
            Ok(()) | Err(rustix::io::Errno::INPROGRESS) => Some(fd),
            Err(_) => None,
        }
    }

    /// Waits at most `timeout` until some of `fds` have finished connecting (or failed);
    /// returns, per descriptor in order, whether it has.
    pub fn wait_done<'a>(
        fds: impl IntoIterator<Item = &'a OwnedFd>,
        timeout: Duration,
    ) -> std::io::Result<Vec<bool>> {
        let mut pfds: Vec<PollFd<'_>> = fds
            .into_iter()
            .map(|f| PollFd::new(f, PollFlags::OUT))
            .collect();
        // A timeout beyond Timespec's range is as good as none.
        let ts = Timespec::try_from(timeout).ok();
        poll(&mut pfds, ts.as_ref())?;
        Ok(pfds.iter().map(|f| !f.revents().is_empty()).collect())
    }

    /// Whether a connect that [`wait_done`] reported as finished succeeded.
    pub fn succeeded(fd: &OwnedFd) -> bool {
        matches!(rustix::net::sockopt::socket_error(fd), Ok(Ok(())))
    }

    /// Starts `n` connects to `to` at once and counts those that succeed within `timeout`
    /// (keep it under the kernel's 1 s initial SYN retransmission for one SYN per attempt).
    pub fn concurrent(to: SocketAddr, n: usize, timeout: Duration) -> usize {
        let mut pending: Vec<OwnedFd> = (0..n).filter_map(|_| start(to)).collect();
        let deadline = Instant::now() + timeout;
        let mut ok = 0;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let Ok(done) = wait_done(&pending, left) else {
                break;
            };
            let mut done = done.into_iter();
            pending.retain(|fd| {
                let finished = done.next().unwrap_or(false);
                if finished && succeeded(fd) {
                    ok += 1;
                }
                !finished
            });
        }
        ok
    }
}

/// Counter for unique names within this process.
static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Packets queued per direction at most before the wire drops (like a router's queue).
pub const DEFAULT_QUEUE_LIMIT: usize = 65_536;

/// Parameters of a testbed; see [`Testbed::builder`].
#[derive(Debug, Clone)]
pub struct TestbedBuilder {
    rtt: Duration,
    jitter: Duration,
    distribution: JitterDistribution,
    loss: f64,
    reorder: f64,
    reorder_delay: Duration,
    seed: u64,
    queue_limit: usize,
    hosts: Vec<HostSpec>,
    icmp: IcmpReject,
    accept: AcceptMode,
    icmp_rate_limit: bool,
}

impl Default for TestbedBuilder {
    fn default() -> Self {
        Self {
            rtt: Duration::ZERO,
            jitter: Duration::ZERO,
            distribution: JitterDistribution::Uniform,
            loss: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            seed: 0,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            hosts: Vec::new(),
            icmp: IcmpReject::AdminProhibited,
            accept: AcceptMode::Close,
            icmp_rate_limit: false,
        }
    }
}

impl TestbedBuilder {
    /// Round-trip time added by the wire: each direction delays packets by `rtt / 2`.
    #[must_use]
    pub fn rtt(mut self, rtt: Duration) -> Self {
        self.rtt = rtt;
        self
    }

    /// Jitter added to each one-way delay (see [`TestbedBuilder::jitter_distribution`]).
    /// Jitter keeps packets in order; use [`TestbedBuilder::reorder`] to reorder.
    #[must_use]
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Uniform in `[-jitter, +jitter]` (default) or normal with standard deviation `jitter`.
    #[must_use]
    pub fn jitter_distribution(mut self, d: JitterDistribution) -> Self {
        self.distribution = d;
        self
    }

    /// Probability in `[0, 1]` that a packet is lost, independently in each direction.
    #[must_use]
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Probability in `[0, 1]` that a packet is held back an extra `(0, reorder_delay]`
    /// and so overtaken by later packets.
    #[must_use]
    pub fn reorder(mut self, p: f64) -> Self {
        self.reorder = p;
        self
    }

    /// Longest extra hold of a reordered packet (default 10 ms).
    #[must_use]
    pub fn reorder_delay(mut self, d: Duration) -> Self {
        self.reorder_delay = d;
        self
    }

    /// Seed of the wire's decisions: the same seed and packet sequence give the same losses.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Packets queued per direction at most (default [`DEFAULT_QUEUE_LIMIT`]).
    #[must_use]
    pub fn queue_limit(mut self, n: usize) -> Self {
        self.queue_limit = n;
        self
    }

    /// Adds a host.
    #[must_use]
    pub fn host(mut self, host: HostSpec) -> Self {
        self.hosts.push(host);
        self
    }

    /// Adds hosts.
    #[must_use]
    pub fn hosts(mut self, hosts: impl IntoIterator<Item = HostSpec>) -> Self {
        self.hosts.extend(hosts);
        self
    }

    /// The ICMP error `filtered_icmp` ports answer with (default admin-prohibited).
    #[must_use]
    pub fn icmp_reject(mut self, kind: IcmpReject) -> Self {
        self.icmp = kind;
        self
    }

    /// What listeners do with accepted connections (default: close at once).
    #[must_use]
    pub fn accept(mut self, mode: AcceptMode) -> Self {
        self.accept = mode;
        self
    }

    /// Keep the kernel's ICMP rate limits in the target namespace (default off: every
    /// ICMP-rejected SYN or UDP datagram and every closed UDP port's port unreachable is
    /// answered, so results are deterministic). Real hosts limit.
    ///
    /// Off sets, in the target namespace only: `net.ipv4.icmp_ratemask=0` (no ICMP type is
    /// limited per peer: destination unreachable, the type of both nftables' rejects and the
    /// kernel's UDP port unreachable, included), `net.ipv4.icmp_msgs_per_sec` and
    /// `icmp_msgs_burst` to 1,000,000 (the global bucket, shared by ICMPv6) and
    /// `net.ipv6.icmp.ratelimit=0`. On keeps a new namespace's defaults: a per-peer bucket
    /// of 1 ICMP per 1000 ms for IPv4 (`icmp_ratelimit`, burst 6) and 100 ms for IPv6,
    /// under a global 1000/s with a burst of 50.
    #[must_use]
    pub fn icmp_rate_limit(mut self, on: bool) -> Self {
        self.icmp_rate_limit = on;
        self
    }

    fn link(&self) -> LinkParams {
        LinkParams {
            delay: self.rtt / 2,
            jitter: self.jitter,
            distribution: self.distribution,
            loss: self.loss,
            reorder: self.reorder,
            reorder_delay: self.reorder_delay,
            queue_limit: self.queue_limit,
        }
    }

    fn validate(&self) -> Result<(), TestbedError> {
        for (name, p) in [("loss", self.loss), ("reorder", self.reorder)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(TestbedError::Spec(format!(
                    "{name} {p} is not a probability in [0, 1]"
                )));
            }
        }
        if self.queue_limit == 0 {
            return Err(TestbedError::Spec("queue limit must be at least 1".into()));
        }
        if self.rtt > Duration::from_secs(60) || self.jitter > Duration::from_secs(60) {
            return Err(TestbedError::Spec(
                "rtt and jitter must be at most 60 s".into(),
            ));
        }
        spec::validate(&self.hosts)
    }

    /// Creates the namespaces, TUN devices, addresses, routes, nftables rules, listeners
    /// and the wire. On error everything created so far is removed again.
    pub fn build(self) -> Result<Testbed, TestbedError> {
        self.validate()?;
        check_prerequisites()?;
        // Leftovers of testbeds whose process died without its Drop.
        netns::remove_stale();
        services::remove_stale_dirs();
        raise_nofile_limit(
            self.hosts
                .iter()
                .filter(|h| h.up)
                .map(|h| (h.open.len() + h.udp_open.len() + 1) * 2)
                .sum(),
        );

        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{}{}-{n}",
            netns::PREFIX,
            rustix::process::getpid().as_raw_nonzero()
        );
        let mut tb = Testbed {
            scanner_ns: format!("{id}-scan"),
            target_ns: format!("{id}-tgt"),
            id,
            hosts: self.hosts.clone(),
            icmp: self.icmp,
            summary: Settings {
                rtt_ms: self.rtt.as_secs_f64() * 1e3,
                jitter_ms: self.jitter.as_secs_f64() * 1e3,
                jitter_distribution: self.distribution,
                loss: self.loss,
                reorder: self.reorder,
                reorder_delay_ms: self.reorder_delay.as_secs_f64() * 1e3,
                seed: self.seed,
                accept: self.accept,
                icmp_reject: self.icmp,
            },
            namespaces: Vec::new(),
            wire: None,
            listeners: None,
            services: None,
        };
        // From here on, an early return drops `tb`, which removes what exists.
        tb.setup(&self)?;
        Ok(tb)
    }
}

/// Checks what [`TestbedBuilder::build`] needs from the machine before it creates anything:
/// root, `ip` (iproute2) and `nft` (nftables) on PATH. Tests call it to skip (or fail, in CI)
/// with the same reason `build` would give.
pub fn check_prerequisites() -> Result<(), TestbedError> {
    if !rustix::process::geteuid().is_root() {
        return Err(TestbedError::NotRoot);
    }
    for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if !netns::have(program) {
            return Err(TestbedError::MissingTool { program, package });
        }
    }
    Ok(())
}

/// Checks [`check_prerequisites`] and that the programs of `services` are installed (the
/// error names the Debian package), as [`TestbedBuilder::build`] would for hosts with them.
pub fn check_services(services: impl IntoIterator<Item = UdpService>) -> Result<(), TestbedError> {
    check_prerequisites()?;
    for s in services {
        if let Some((program, package)) = s.program() {
            if services::locate(program).is_none() {
                return Err(TestbedError::MissingTool { program, package });
            }
        }
    }
    Ok(())
}

/// Raises RLIMIT_NOFILE's soft limit towards what the listeners need (plus room for the
/// caller's own sockets). Best effort: a bind that still runs out reports EMFILE.
fn raise_nofile_limit(listeners: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let want = u64::try_from(listeners)
        .unwrap_or(u64::MAX)
        .saturating_add(8192);
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft >= want {
        return;
    }
    let hard = cur.maximum.unwrap_or(u64::MAX);
    let target = want.max(soft);
    let new = if target <= hard {
        Rlimit {
            current: Some(target),
            maximum: cur.maximum,
        }
    } else {
        // Root may raise the hard limit too (up to fs.nr_open).
        Rlimit {
            current: Some(target),
            maximum: Some(target),
        }
    };
    if setrlimit(Resource::Nofile, new).is_err() {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: cur.maximum,
                maximum: cur.maximum,
            },
        );
    }
}

/// The wire's and the hosts' settings, as reported in [`Summary`].
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    pub jitter_distribution: JitterDistribution,
    pub loss: f64,
    pub reorder: f64,
    pub reorder_delay_ms: f64,
    pub seed: u64,
    pub accept: AcceptMode,
    pub icmp_reject: IcmpReject,
}

/// Everything a script needs to use a testbed (the CLI prints it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Summary<'a> {
    pub id: &'a str,
    pub scanner_ns: &'a str,
    pub target_ns: &'a str,
    pub scanner_v4: Ipv4Addr,
    pub scanner_v6: Ipv6Addr,
    pub settings: &'a Settings,
    pub hosts: &'a [HostSpec],
}

/// A running testbed; dropping it removes everything it created.
#[derive(Debug)]
pub struct Testbed {
    id: String,
    scanner_ns: String,
    target_ns: String,
    hosts: Vec<HostSpec>,
    icmp: IcmpReject,
    summary: Settings,
    /// Namespaces created so far, removed on teardown.
    namespaces: Vec<String>,
    wire: Option<Wire>,
    listeners: Option<Listeners>,
    services: Option<Services>,
}

impl Testbed {
    /// Starts describing a testbed: no delay, no loss, no hosts.
    pub fn builder() -> TestbedBuilder {
        TestbedBuilder::default()
    }

    fn setup(&mut self, b: &TestbedBuilder) -> Result<(), TestbedError> {
        use nft::WIRE_IF;
        let mtu = wire::MTU;
        for ns in [self.scanner_ns.clone(), self.target_ns.clone()] {
            netns::add(&ns)?;
            self.namespaces.push(ns);
        }
        let mut names = Vec::new();
        for h in &self.hosts {
            if let Some(n) = &h.name {
                names.push(format!("{} {n}\n", h.v4));
                if let Some(v6) = h.v6 {
                    names.push(format!("{v6} {n}\n"));
                }
            }
        }
        let names = names.concat();
        netns::write_resolver_files(&self.scanner_ns, &names)?;
        let open_tun = || {
            sys::open_tun(WIRE_IF)
                .map_err(|e| TestbedError::io(format!("create TUN device {WIRE_IF}"), e))
        };
        let scanner_tun = netns::in_netns(&self.scanner_ns, open_tun)??;
        let target_tun = netns::in_netns(&self.target_ns, open_tun)??;

        // addrgenmode none: no link-local address, so no router solicitations or MLD reports
        // on the wire; only the traffic a test sends crosses it.
        let link = format!(
            "link set dev lo up\nlink set dev {WIRE_IF} addrgenmode none\n\
             link set dev {WIRE_IF} mtu {mtu} txqueuelen 10000 up\n"
        );
        netns::ip_batch(
            &self.scanner_ns,
            &format!(
                "{link}addr add {SCANNER_V4}/32 dev {WIRE_IF}\n\
                 addr add {SCANNER_V6}/128 dev {WIRE_IF} nodad\n\
                 route add 198.18.0.0/15 dev {WIRE_IF} src {SCANNER_V4}\n\
                 route add 2001:2::/48 dev {WIRE_IF} src {SCANNER_V6}\n"
            ),
        )?;
        let mut script = link;
        for h in self.hosts.iter().filter(|h| h.up) {
            let _ = writeln!(script, "addr add {}/32 dev lo", h.v4);
            if let Some(v6) = h.v6 {
                let _ = writeln!(script, "addr add {v6}/128 dev lo nodad");
            }
        }
        // Replies go back through the wire; packets for addresses nobody owns are dropped
        // by nftables before routing (and forwarding is off in a new namespace anyway).
        let _ = writeln!(script, "route add 198.18.0.0/15 dev {WIRE_IF}");
        let _ = writeln!(script, "route add 2001:2::/48 dev {WIRE_IF}");
        netns::ip_batch(&self.target_ns, &script)?;

        let rate_limit = b.icmp_rate_limit;
        netns::in_netns(&self.target_ns, || -> Result<(), TestbedError> {
            if !rate_limit {
                // Answer every rejected SYN: no per-peer or global ICMP token buckets.
                netns::sysctl("net.ipv4.icmp_ratemask", "0")?;
                netns::sysctl("net.ipv4.icmp_msgs_per_sec", "1000000")?;
                netns::sysctl("net.ipv4.icmp_msgs_burst", "1000000")?;
                netns::sysctl("net.ipv6.icmp.ratelimit", "0")?;
            }
            Ok(())
        })??;
        netns::nft(&self.target_ns, &nft::ruleset(&self.hosts, self.icmp))?;

        let both = |h: &HostSpec, ports: Vec<u16>| {
            let (v4, v6) = (h.v4, h.v6);
            ports.into_iter().flat_map(move |p| {
                std::iter::once(SocketAddr::new(IpAddr::V4(v4), p))
                    .chain(v6.map(|a| SocketAddr::new(IpAddr::V6(a), p)))
            })
        };
        let up = || self.hosts.iter().filter(|h| h.up);
        let binds = listen::Binds {
            tcp: up()
                .filter(|h| !h.synack_all)
                .flat_map(|h| {
                    // dnsmasq holds TCP 53 itself.
                    let mut ports: Vec<u16> = h
                        .open
                        .iter()
                        .copied()
                        .filter(|&p| !h.tcp_service_port(p))
                        .collect();
                    ports.sort_unstable();
                    ports.dedup();
                    both(h, ports)
                })
                .collect(),
            tarpit: up()
                .filter(|h| h.synack_all)
                .flat_map(|h| both(h, vec![nft::SYNACK_ALL_PORT]))
                .collect(),
            echo: up().flat_map(|h| both(h, h.echo_ports())).collect(),
        };
        self.services = Some(Services::start(&self.target_ns, &self.id, &self.hosts)?);
        self.listeners = Some(Listeners::start(&self.target_ns, binds, b.accept)?);

        let link = b.link();
        self.wire = Some(
            Wire::start(scanner_tun, target_tun, link, link, b.seed)
                .map_err(|e| TestbedError::io("start the wire threads", e))?,
        );
        Ok(())
    }

    /// `pt-<pid>-<n>`: the prefix of every name this testbed created.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace the scanner must run in.
    pub fn scanner_ns(&self) -> &str {
        &self.scanner_ns
    }

    /// The namespace that holds the hosts (addresses on `lo`, listeners, nftables).
    pub fn target_ns(&self) -> &str {
        &self.target_ns
    }

    /// The scanner's source addresses.
    pub fn scanner_addrs(&self) -> (Ipv4Addr, Ipv6Addr) {
        (SCANNER_V4, SCANNER_V6)
    }

    pub fn hosts(&self) -> &[HostSpec] {
        &self.hosts
    }

    /// Number of listening sockets (open ports over all up hosts and families).
    pub fn listener_count(&self) -> usize {
        self.listeners.as_ref().map_or(0, Listeners::count)
    }

    /// Number of UDP echo sockets (echo ports over all up hosts and families).
    pub fn udp_echo_count(&self) -> usize {
        self.listeners.as_ref().map_or(0, Listeners::udp_count)
    }

    /// Process ids of the running UDP services (`ip netns exec` execs the daemon, so each
    /// is the daemon's own pid, in the target namespace).
    pub fn service_pids(&self) -> Vec<(UdpService, u32)> {
        self.services
            .as_ref()
            .map(Services::pids)
            .unwrap_or_default()
    }

    /// The host that owns `addr`, if any.
    pub fn host(&self, addr: IpAddr) -> Option<&HostSpec> {
        self.hosts.iter().find(|h| h.has_addr(addr))
    }

    /// What happens to a SYN sent to `addr:port`, and why.
    pub fn truth(&self, addr: IpAddr, port: u16) -> PortTruth {
        self.host(addr)
            .map_or(PortTruth::UnknownHost, |h| h.truth(port, self.icmp))
    }

    /// The state a TCP connect scanner should report for `addr:port` (ground truth).
    pub fn expected(&self, addr: IpAddr, port: u16) -> PortState {
        self.truth(addr, port).state()
    }

    /// What happens to a UDP datagram sent to `addr:port`, and why.
    pub fn truth_udp(&self, addr: IpAddr, port: u16) -> PortTruth {
        self.host(addr)
            .map_or(PortTruth::UnknownHost, |h| h.truth_udp(port, self.icmp))
    }

    /// The state a UDP scanner (nmap `-sU`) should report for `addr:port`: open, closed,
    /// filtered or open|filtered.
    pub fn expected_udp(&self, addr: IpAddr, port: u16) -> PortState {
        self.truth_udp(addr, port).state_udp()
    }

    /// Packet counters of the wire.
    pub fn wire_stats(&self) -> WireStats {
        self.wire.as_ref().map(Wire::stats).unwrap_or_default()
    }

    /// The settings the testbed was built with.
    pub fn settings(&self) -> &Settings {
        &self.summary
    }

    /// Everything a script needs, serialisable as JSON.
    pub fn summary(&self) -> Summary<'_> {
        Summary {
            id: &self.id,
            scanner_ns: &self.scanner_ns,
            target_ns: &self.target_ns,
            scanner_v4: SCANNER_V4,
            scanner_v6: SCANNER_V6,
            settings: &self.summary,
            hosts: &self.hosts,
        }
    }

    /// `ip netns exec <scanner ns> <program>`: add arguments, stdio and env as usual.
    pub fn command_in_scanner(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec"]).arg(&self.scanner_ns).arg(program);
        c
    }

    /// Turns `cmd` into the same command run inside the scanner namespace (program, args,
    /// environment changes and working directory are carried over; stdio settings cannot be
    /// read back from a `Command`, so set them on the result).
    pub fn exec_in_scanner(&self, cmd: &Command) -> Command {
        let mut c = self.command_in_scanner(cmd.get_program());
        c.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            c.current_dir(dir);
        }
        c
    }

    /// Runs `f` on a thread inside the scanner namespace (sockets it creates live there).
    pub fn run_in_scanner<T: Send, F: FnOnce() -> T + Send>(
        &self,
        f: F,
    ) -> Result<T, TestbedError> {
        netns::in_netns(&self.scanner_ns, f)
    }

    /// Runs `f` on a thread inside the target namespace.
    pub fn run_in_target<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, TestbedError> {
        netns::in_netns(&self.target_ns, f)
    }

    /// Tears everything down now and reports the first failure (Drop does the same
    /// silently).
    pub fn shutdown(mut self) -> Result<(), TestbedError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), TestbedError> {
        if let Some(mut s) = self.services.take() {
            s.stop();
        }
        if let Some(mut l) = self.listeners.take() {
            l.stop();
        }
        if let Some(mut w) = self.wire.take() {
            w.stop();
        }
        let mut first = Ok(());
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = netns::remove(&ns) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}
