//! The raw driver: the scheduler's probes as raw SYN packets or UDP datagrams, sent in
//! batches with sendmmsg(2) on one raw socket per address family. SYN answers (SYN-ACK,
//! reset) are read from raw TCP sockets behind BPF filters and matched by their cookie;
//! UDP answers arrive on the socket that reserves the source port (bound, never
//! connected: the kernel hands it every datagram to that port, and sends no ICMP error
//! for them); ICMP unreachables of both are read from raw ICMP sockets.
//!
//! A UDP scan meets the targets' ICMP rate limits (Linux: about one port unreachable per
//! second per peer, after a burst of six). A probe that times out while its host sends
//! ICMP errors far slower than it is sent probes proves nothing (the port may be closed
//! with its error suppressed): the host is then paced to the rate its errors come back
//! at, and its silent ports are asked again at that pace, without counting the unpaced
//! attempts. Only paced silence makes a port `open|filtered`; only an ICMP error makes it
//! closed.
//!
//! A host that answers SYN-ACK everywhere (a tarpit, a SYN proxy) is found out at its
//! first open port: a few SYNs to random ports go out at once and its open verdicts wait.
//! When most of those random ports answer SYN-ACK too, none of the host's SYN-ACKs means
//! a service: its ports are reported `filtered` with the reason `syn-ack-all`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{ipproto, MMsgHdr, RecvFlags, SendAncillaryBuffer, SendFlags, SocketAddrAny};

use super::packet::{self, Answer, Cookie, TcpProbe, Unreach};
use super::{RawOptions, Sources};
use crate::connect::{hand_over, wait_for};
use crate::probe::{reason, ProbeOutcome};
use crate::sched::{Job, Next, Scheduler};
use crate::{PortState, ScanError, ScanEvent, ScanPlan, ScanSummary};

const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// Probes per sendmmsg(2) call.
const BATCH: usize = 64;
/// Packets read per socket per turn of the loop, at most (the others wait their turn).
const READS_PER_TURN: usize = 4096;
/// Packets read per socket after each full batch sent, at most (twice the batch: the
/// reading keeps pace with the sending).
const READS_PER_BATCH: usize = 2 * BATCH;
/// The cookie offset of the tarpit check's probes (the scan's own probes carry 0).
const CHECK_ATTEMPT: u8 = 60;
/// Random ports the tarpit check asks, and how many SYN-ACKs among them make a tarpit.
const CHECK_PORTS: usize = 6;
const CHECK_TARPIT_AT: u8 = 4;
/// Adjacent source ports a SYN scan holds: attempts of a port take them in turn, so the
/// same connection is asked again only eight timeouts later (see `Engine::port_for`).
const RETRY_PORTS: u16 = 8;
/// The probes' TTL / hop limit.
const TTL: u8 = 64;

/// What an answer socket carries.
#[derive(Debug, Clone, Copy)]
enum Rx {
    Tcp4,
    Icmp4,
    Tcp6,
    Icmp6,
    /// The bound UDP socket of the source port (either family).
    Udp,
}

/// A host's ICMP error rate, for pacing a UDP scan (see the module's documentation).
#[derive(Debug, Default)]
struct IcmpRate {
    /// Port unreachables received, recent ones (bounded).
    errors: VecDeque<Instant>,
    /// Probes sent, recent ones (bounded).
    sent: VecDeque<Instant>,
    /// Since when the host is paced; probes sent earlier that went unanswered are asked
    /// again.
    paced_since: Option<Instant>,
    /// The limit was seen and its steady rate is being measured (past the burst).
    measuring: bool,
    /// Probes sent to the host so far: with several `-S` addresses, the next one's turn.
    turn: usize,
    /// When the latest probe that drew an ICMP error went (it spent the host's budget).
    last_spent: Option<Instant>,
    /// When the latest probe to the host went.
    last_sent: Option<Instant>,
    /// The errors by our source address (several `-S` addresses: each is its own peer
    /// to the host's limit, with its own burst), recent ones.
    by_source: Vec<(IpAddr, VecDeque<Instant>)>,
}

/// How far back the ICMP rate is measured, and how many events are kept for it.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// How long after a host's first ICMP error its steady rate is read: past the burst a
/// token bucket lets out first (Linux: six, at once), with three errors of the steady
/// rate seen (waited for at most [`RATE_PATIENCE`]).
const RATE_SETTLE: Duration = Duration::from_millis(2500);
const RATE_BURST: Duration = Duration::from_millis(500);
const RATE_PATIENCE: Duration = Duration::from_secs(10);
const RATE_EVENTS: usize = 4096;

impl IcmpRate {
    fn note(q: &mut VecDeque<Instant>, now: Instant) {
        if q.len() >= RATE_EVENTS {
            q.pop_front();
        }
        q.push_back(now);
    }

    /// Events per second in the last window (or since `since`, if later).
    fn rate(q: &VecDeque<Instant>, since: Instant, now: Instant) -> f64 {
        let from = now.checked_sub(RATE_WINDOW).unwrap_or(since).max(since);
        let n = q.iter().rev().take_while(|t| **t >= from).count();
        // Counts stay far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        n / now.duration_since(from).as_secs_f64().max(0.25)
    }
}

/// A moment as nanoseconds since the scan's start: 8 bytes where an `Instant` takes 16. A
/// scan of many silent hosts keeps up to 100,000 probes in flight by default, each with
/// its send time in three places (its flight, its deadline, the young queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Tick(u64);

impl Tick {
    fn of(t: Instant, start: Instant) -> Tick {
        Tick(u64::try_from(t.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX))
    }

    fn at(self, start: Instant) -> Instant {
        start + Duration::from_nanos(self.0)
    }
}

/// A probe in flight (32 bytes: see [`Tick`]).
struct Flight {
    job: Job,
    sent: Tick,
    /// Microseconds (timeouts are at most a minute).
    timeout_us: u32,
    generation: u32,
}

impl Flight {
    fn timeout(&self) -> Duration {
        Duration::from_micros(u64::from(self.timeout_us))
    }
}

/// A probe waiting for the next batch.
struct Pending {
    job: Job,
    addr: SocketAddr,
    timeout: Duration,
    buf: Vec<u8>,
}

/// The tarpit check of one host.
#[derive(Debug)]
enum Check {
    /// Probes out until the deadline; open verdicts held meanwhile.
    Pending {
        deadline: Instant,
        syn_acks: u8,
        held: Vec<ScanEvent>,
    },
    /// An ordinary host.
    Clear,
    /// Answers SYN-ACK everywhere.
    Tarpit,
}

/// A probe's key in flight: (host, port, attempt), and the generation that tells a
/// deadline of an earlier flight of the same key from the current one.
type Timed = (Tick, u32, u16, u8, u32);

struct Engine {
    /// A UDP scan (else SYN).
    udp: bool,
    /// The UDP probes' payloads by port (templates, from the probe engine's UDP probes).
    sigs: Option<portolan_probe::Signatures>,
    payloads: HashMap<u16, Vec<Vec<u8>>>,
    rates: HashMap<u32, IcmpRate>,
    pacing_notice: bool,
    start: Instant,
    ep: OwnedFd,
    send4: Option<OwnedFd>,
    send6: Option<OwnedFd>,
    rx: Vec<(OwnedFd, Rx)>,
    _reserved: Vec<OwnedFd>,
    /// The first source port, and how many adjacent ones the scan holds (UDP: one).
    sport: u16,
    nports: u16,
    cookie: Cookie,
    sources: Sources,
    host_src: Vec<Option<IpAddr>>,
    host_index: HashMap<IpAddr, u32>,
    hosts: Vec<IpAddr>,
    flights: HashMap<(u32, u16, u8), Flight>,
    deadlines: BinaryHeap<Reverse<Timed>>,
    /// Probes sent before their host's first answer, in sending order: they got the
    /// initial timeout (a second by default), and end by the host's measured one instead
    /// once it is known (see `expire_young`).
    young: VecDeque<Timed>,
    generation: u32,
    batch4: Vec<Pending>,
    batch6: Vec<Pending>,
    ack_ports: Vec<u16>,
    ip_id: u16,
    rx_buf: Vec<u8>,
    checks: HashMap<u32, Check>,
    /// The hosts whose tarpit check is pending.
    under_check: Vec<u32>,
    rng: u64,
}

/// splitmix64: the scan's keys and the tarpit check's ports.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fresh key material: the clock, the process and an address on the stack, mixed. A
/// cookie needs to be unguessable to someone who cannot see our packets, not secret
/// from someone who can.
fn fresh_key() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let local = 0u8;
    let addr = std::ptr::addr_of!(local) as usize as u64;
    #[allow(clippy::cast_possible_truncation)]
    let mut x = (t as u64) ^ ((t >> 64) as u64) ^ u64::from(std::process::id()) << 32 ^ addr;
    splitmix(&mut x)
}

fn classify_send(e: Errno) -> ProbeOutcome {
    let filtered = |reason| ProbeOutcome::Answered {
        state: PortState::Filtered,
        reason,
        rtt: Duration::ZERO,
        ttl: None,
    };
    match e {
        Errno::NOBUFS | Errno::AGAIN | Errno::NOMEM => ProbeOutcome::Resource(e.into()),
        // This machine's own firewall refused the packet.
        Errno::PERM | Errno::ACCESS => filtered(reason::ADMIN_PROHIBITED),
        Errno::HOSTUNREACH => filtered(reason::HOST_UNREACH),
        Errno::NETUNREACH => filtered(reason::NET_UNREACH),
        other => ProbeOutcome::Failed(other.into()),
    }
}

/// The indices of the packets of a batch that could not go, with their outcome.
type Failed = Vec<(usize, ProbeOutcome)>;

/// Sends `packets` with sendmmsg(2) (the destination's port is not used by a raw socket).
fn send_slices(sock: &OwnedFd, packets: &[(IpAddr, &[u8])]) -> Failed {
    let addrs: Vec<SocketAddrAny> = packets
        .iter()
        .map(|(ip, _)| SocketAddrAny::from(SocketAddr::new(*ip, 0)))
        .collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = packets.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = packets
        .iter()
        .map(|_| SendAncillaryBuffer::default())
        .collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((a, iov), c)| MMsgHdr::new_with_addr(a, iov, c))
        .collect();
    let mut i = 0;
    let mut failed = Vec::new();
    while i < msgs.len() {
        match rustix::net::sendmmsg(sock, &mut msgs[i..], SendFlags::empty()) {
            Ok(0) => {
                failed.push((
                    i,
                    ProbeOutcome::Resource(std::io::Error::other("sendmmsg sent nothing")),
                ));
                i += 1;
            }
            Ok(n) => i += n,
            Err(Errno::INTR) => {}
            Err(e) => {
                let o = classify_send(e);
                if matches!(o, ProbeOutcome::Resource(_)) {
                    // The queue is full: everything left waits for later.
                    for j in i..msgs.len() {
                        failed.push((j, ProbeOutcome::Resource(std::io::Error::from(e))));
                    }
                    i = msgs.len();
                } else {
                    failed.push((i, o));
                    i += 1;
                }
            }
        }
    }
    failed
}

impl Engine {
    fn open(plan: &ScanPlan, opts: &RawOptions, udp: bool) -> Result<Engine, ScanError> {
        let any4 = plan.hosts.iter().any(IpAddr::is_ipv4);
        let any6 = plan.hosts.iter().any(IpAddr::is_ipv6);
        let sources = Sources::new(opts)?;
        let want = opts.source_port.unwrap_or(0);
        // A SYN scan's attempts take adjacent source ports in turn (see `port_for`).
        let reserved = if udp || want != 0 {
            super::reserve_port(udp, any4, any6, want).map(|(p, fds)| (p, 1, fds))
        } else {
            super::reserve_ports(any4, any6, RETRY_PORTS)
        };
        let (sport, nports, reserved) = match reserved {
            Ok(r) => r,
            // A port the user chose that something else holds: scan from it anyway (a
            // listener there only sees our answers, which it resets).
            Err(_) if want != 0 && !udp => (want, 1, Vec::new()),
            // A UDP scan reads its answers on that socket: the port must be free.
            Err(e) if udp => {
                return Err(ScanError::Runtime(std::io::Error::new(
                    e.kind(),
                    format!("cannot bind the UDP source port {want}: {e}"),
                )))
            }
            Err(e) => return Err(ScanError::Runtime(e)),
        };
        let ep =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| ScanError::Runtime(e.into()))?;
        let mut rx = Vec::new();
        let send = |v6: bool| -> Result<OwnedFd, ScanError> {
            let fd = super::raw_socket(v6, ipproto::RAW)?;
            match &opts.iface {
                Some(name) => super::bind_device(fd, name),
                None => Ok(fd),
            }
        };
        let send4 = if any4 { Some(send(false)?) } else { None };
        let send6 = if any6 { Some(send(true)?) } else { None };
        let mut listen =
            |v6: bool, proto, kind: Rx, prog: Vec<socket2::SockFilter>| -> Result<(), ScanError> {
                let fd = super::raw_socket(v6, proto)?;
                let fd = super::attach(fd, &prog).map_err(ScanError::Runtime)?;
                super::big_buffer(&fd);
                epoll::add(
                    &ep,
                    &fd,
                    epoll::EventData::new_u64(rx.len() as u64),
                    epoll::EventFlags::IN,
                )
                .map_err(|e| ScanError::Runtime(e.into()))?;
                rx.push((fd, kind));
                Ok(())
            };
        if any4 {
            if !udp {
                listen(
                    false,
                    ipproto::TCP,
                    Rx::Tcp4,
                    super::filter_v4_dport(sport, sport + (nports - 1)),
                )?;
            }
            listen(false, ipproto::ICMP, Rx::Icmp4, super::filter_v4_unreach())?;
        }
        if any6 {
            if !udp {
                listen(
                    true,
                    ipproto::TCP,
                    Rx::Tcp6,
                    super::filter_v6_dport(sport, sport + (nports - 1)),
                )?;
            }
            listen(true, ipproto::ICMPV6, Rx::Icmp6, super::filter_v6_unreach())?;
        }
        let mut reserved = reserved;
        if udp {
            // The sockets holding the source port are the answer sockets.
            for fd in reserved.drain(..) {
                rustix::io::ioctl_fionbio(&fd, true).map_err(|e| ScanError::Runtime(e.into()))?;
                super::big_buffer(&fd);
                epoll::add(
                    &ep,
                    &fd,
                    epoll::EventData::new_u64(rx.len() as u64),
                    epoll::EventFlags::IN,
                )
                .map_err(|e| ScanError::Runtime(e.into()))?;
                rx.push((fd, Rx::Udp));
            }
        }
        let mut rng = fresh_key();
        let cookie = Cookie::new(splitmix(&mut rng), splitmix(&mut rng));
        let host_index = plan
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        Ok(Engine {
            udp,
            sigs: udp.then(portolan_probe::Signatures::builtin),
            payloads: HashMap::new(),
            rates: HashMap::new(),
            pacing_notice: false,
            start: Instant::now(),
            ep,
            send4,
            send6,
            rx,
            _reserved: reserved,
            sport,
            nports,
            cookie,
            sources,
            host_src: vec![None; plan.hosts.len()],
            host_index,
            hosts: plan.hosts.clone(),
            flights: HashMap::new(),
            deadlines: BinaryHeap::new(),
            young: VecDeque::new(),
            generation: 0,
            batch4: Vec::with_capacity(BATCH),
            batch6: Vec::with_capacity(BATCH),
            ack_ports: opts.ack_ports.clone(),
            #[allow(clippy::cast_possible_truncation)]
            ip_id: rng as u16,
            rx_buf: vec![0; 65_536],
            checks: HashMap::new(),
            under_check: Vec::new(),
            rng,
        })
    }

    /// The source port of attempt `attempt`: a SYN scan's attempts take its ports in turn.
    /// Each port is its own connection to the target: a retry on the same one meets the
    /// half-open connection an unanswered earlier attempt left (its SYN-ACK lost), which
    /// Linux answers at most once per 500 ms (`tcp_invalid_ratelimit`): retries a timeout
    /// apart went unanswered and an open port read filtered.
    fn port_for(&self, attempt: u8) -> u16 {
        self.sport + u16::from(attempt) % self.nports.max(1)
    }

    fn owns(&self, port: u16) -> bool {
        port >= self.sport && u32::from(port) < u32::from(self.sport) + u32::from(self.nports)
    }

    /// Builds a probe into the batch of its family; an outcome when it cannot go at all.
    fn queue(&mut self, job: Job, addr: SocketAddr, timeout: Duration) -> Option<ProbeOutcome> {
        // A UDP scan sends a host's probes from the -S addresses of its family in turn
        // (each has its own ICMP budget at the target, so each sees an even share of the
        // host's pace, retries included); a SYN scan keeps one source per host.
        let given = if self.udp {
            self.sources.given(addr.ip())
        } else {
            0
        };
        let src = if given > 1 {
            let r = self.rates.entry(job.host).or_default();
            r.turn = r.turn.wrapping_add(1);
            self.sources.nth(addr.ip(), r.turn)
        } else {
            None
        };
        let src = match (src, self.host_src[job.host as usize]) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => match self.sources.for_host(job.host, addr.ip()) {
                Ok(s) => *self.host_src[job.host as usize].insert(s),
                Err(e) => {
                    return Some(match e.raw_os_error().map(Errno::from_raw_os_error) {
                        Some(e) => classify_send(e),
                        None => ProbeOutcome::Failed(e),
                    })
                }
            },
        };
        if self.udp {
            let payload = self.payload(job.port, job.attempt, addr.ip());
            let mut buf = Vec::new();
            if packet::build_udp(&mut buf, src, addr, self.sport, TTL, self.ip_id, &payload)
                .is_none()
            {
                return Some(ProbeOutcome::Failed(std::io::Error::other(
                    "no source address of the target's family",
                )));
            }
            self.ip_id = self.ip_id.wrapping_add(1);
            let r = self.rates.entry(job.host).or_default();
            let now = Instant::now();
            IcmpRate::note(&mut r.sent, now);
            r.last_sent = Some(now);
            let p = Pending {
                job,
                addr,
                timeout,
                buf,
            };
            self.push(p);
            return None;
        }
        // An attempt carries the cookie of its source port (attempts take the scan's ports
        // in turn): the attempts on one port carry the same sequence number, as TCP's own
        // retransmitted SYN does (a target still holding an earlier attempt half-open
        // resets a copy with another number, which would read as closed).
        let sport = self.port_for(job.attempt);
        let cookie = self.cookie.seq(addr, sport, 0);
        let ack_probe = self.ack_ports.contains(&job.port);
        let probe = TcpProbe {
            src,
            dst: addr,
            sport,
            seq: cookie,
            ack: if ack_probe { cookie } else { 0 },
            flags: if ack_probe { packet::ACK } else { packet::SYN },
            ttl: TTL,
            ip_id: self.ip_id,
        };
        self.ip_id = self.ip_id.wrapping_add(1);
        let mut buf = [0; packet::MAX_TCP_PROBE];
        let Some(n) = packet::build_tcp(&mut buf, &probe) else {
            return Some(ProbeOutcome::Failed(std::io::Error::other(
                "no source address of the target's family",
            )));
        };
        let p = Pending {
            job,
            addr,
            timeout,
            buf: buf[..n].to_vec(),
        };
        self.push(p);
        None
    }

    /// A built probe into the batch of its family.
    fn push(&mut self, p: Pending) {
        if p.addr.is_ipv4() {
            self.batch4.push(p);
        } else {
            self.batch6.push(p);
        }
    }

    /// The payload of attempt `attempt` to `port`: the port's UDP probes in turn (a retry
    /// tries the next protocol variant, SNMP v2c then v1), an empty datagram where none
    /// names the port.
    fn payload(&mut self, port: u16, attempt: u8, ip: IpAddr) -> Vec<u8> {
        let sigs = self.sigs.as_ref();
        let templates = self.payloads.entry(port).or_insert_with(|| {
            sigs.map(|s| {
                portolan_probe::udp_payloads(s, port)
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect()
            })
            .unwrap_or_default()
        });
        if templates.is_empty() {
            return Vec::new();
        }
        let t = &templates[usize::from(attempt) % templates.len()];
        portolan_probe::render_payload(t, &ip.to_string())
    }

    /// What an unanswered probe means. A SYN: a timeout. A UDP datagram: a timeout too,
    /// unless its host limits its ICMP errors and the probe went before the host was
    /// paced to that limit (then nothing is known: it is asked again, uncounted).
    fn unanswered(&mut self, f: &Flight, now: Instant, sched: &mut Scheduler<'_>) -> ProbeOutcome {
        if !self.udp {
            return ProbeOutcome::Timeout;
        }
        let start = self.start;
        let sent = f.sent.at(start);
        let Some(r) = self.rates.get_mut(&f.job.host) else {
            return ProbeOutcome::Timeout;
        };
        let Some(&first_error) = r.errors.front() else {
            // No ICMP error from this host at all: it sends none (or none reach us).
            return ProbeOutcome::Timeout;
        };
        if let Some(since) = r.paced_since {
            return if sent >= since {
                // Silent at the pace: the port did not answer while the host had budget
                // for an error, and spent none of it. When no later probe is out, the
                // next may go one pause after the last probe that did spend (not sooner:
                // giving back the slot outright let retries go into an empty budget back
                // to back, and a closed port read open|filtered). Not with several
                // source addresses taking turns (each has its own budget).
                let single = self
                    .hosts
                    .get(f.job.host as usize)
                    .is_none_or(|ip| self.sources.given(*ip) <= 1);
                if single && r.last_sent.is_none_or(|t| t <= sent) {
                    let delay = sched.host_delay(f.job.host);
                    let at = r.last_spent.map_or(now, |t| (t + delay).max(now));
                    sched.pull_next_send(f.job.host, at);
                }
                ProbeOutcome::Timeout
            } else {
                ProbeOutcome::Again
            };
        }
        let errors = IcmpRate::rate(&r.errors, first_error.max(start), now);
        let sent = IcmpRate::rate(&r.sent, start, now);
        if !r.measuring && errors * 2.0 >= sent {
            // The errors keep up with the probes: silence is real.
            return ProbeOutcome::Timeout;
        }
        // Errors come back at a fraction of the probes' rate: a limit. Its steady rate
        // shows once the first burst is out of the window; until then the host is asked
        // at four times the rate seen so far (enough to keep its bucket empty, so what
        // comes back is the refill rate), and what went unanswered is asked again.
        // The steady rate is read from the spacing of the errors past the burst (those
        // half a second or more after the first): counting them in a short window is too
        // coarse (three in two seconds would read 1.5 a second against a limit of one,
        // and pacing at that finds the budget empty now and then).
        // With several source addresses, each has its own burst and budget: the rate is
        // read for each (from its own first error) and the host paced at their sum, as
        // the slowest one allows (its rate times the number of addresses).
        let steady = |q: &VecDeque<Instant>| -> (usize, f64) {
            let Some(&first) = q.front() else {
                return (0, 0.0);
            };
            let settled = first + RATE_BURST;
            let after: Vec<Instant> = q.iter().copied().filter(|t| *t > settled).collect();
            // Counts stay far below 2^52.
            #[allow(clippy::cast_precision_loss)]
            let rate = match (after.first(), after.last()) {
                (Some(a), Some(b)) if after.len() >= 2 && b > a => {
                    (after.len() - 1) as f64 / b.duration_since(*a).as_secs_f64()
                }
                _ => after.len() as f64 / now.duration_since(settled).as_secs_f64().max(1.0),
            };
            (after.len(), rate)
        };
        let per_source: Vec<(usize, f64)> = r.by_source.iter().map(|(_, q)| steady(q)).collect();
        let seen = per_source.iter().map(|p| p.0).min().unwrap_or(0);
        let waited = now.duration_since(first_error);
        if waited < RATE_SETTLE || (seen < 3 && waited < RATE_PATIENCE) {
            if !r.measuring {
                r.measuring = true;
                let ask = (errors * 4.0).max(4.0);
                sched.set_host_delay(f.job.host, Duration::from_secs_f64(1.0 / ask));
            }
            return ProbeOutcome::Again;
        }
        // Counts stay far below 2^52.
        #[allow(clippy::cast_precision_loss)]
        let errors = per_source
            .iter()
            .map(|p| p.1)
            .fold(f64::INFINITY, f64::min)
            .min(1e6)
            * per_source.len().max(1) as f64;
        // Then the host is paced a little under that rate; what went unanswered so far
        // is asked again.
        let pace = errors.max(0.05) * 0.9;
        let delay = Duration::from_secs_f64(1.0 / pace);
        r.paced_since = Some(now);
        sched.set_host_delay(f.job.host, delay);
        if !self.pacing_notice {
            self.pacing_notice = true;
            let ip = self.hosts.get(f.job.host as usize).copied();
            if let Some(ip) = ip {
                sched.out.push(ScanEvent::Notice(format!(
                    "{ip} limits its ICMP errors to about {errors:.1} per second: its ports are asked at that pace, so closed ports are told from silent ones (more source addresses, -S A,B,C, divide the wait)"
                )));
            }
        }
        ProbeOutcome::Again
    }

    fn batch_full(&self) -> bool {
        self.batch4.len() >= BATCH || self.batch6.len() >= BATCH
    }

    /// Sends both batches; probes that could not go get their outcome at once.
    fn flush(&mut self, sched: &mut Scheduler<'_>) {
        for v6 in [false, true] {
            let batch = std::mem::take(if v6 {
                &mut self.batch6
            } else {
                &mut self.batch4
            });
            if batch.is_empty() {
                continue;
            }
            let sent_at = Instant::now();
            let Some(sock) = (if v6 { &self.send6 } else { &self.send4 }).as_ref() else {
                continue;
            };
            let refs: Vec<(IpAddr, &[u8])> = batch
                .iter()
                .map(|p| (p.addr.ip(), p.buf.as_slice()))
                .collect();
            let failed = send_slices(sock, &refs);
            drop(refs);
            let mut failed = failed.into_iter().peekable();
            for (idx, p) in batch.into_iter().enumerate() {
                if failed.peek().is_some_and(|(j, _)| *j == idx) {
                    if let Some((_, o)) = failed.next() {
                        sched.finish(p.job, o, Instant::now());
                    }
                    continue;
                }
                self.register(&p, sent_at, sched);
            }
        }
    }

    /// A probe sent at `sent_at`: its flight, deadline and (before its host's first
    /// answer) its place among the young probes.
    fn register(&mut self, p: &Pending, sent_at: Instant, sched: &Scheduler<'_>) {
        self.generation = self.generation.wrapping_add(1);
        let key = (p.job.host, p.job.port, p.job.attempt);
        let timeout_us = u32::try_from(p.timeout.as_micros()).unwrap_or(u32::MAX);
        let sent = Tick::of(sent_at, self.start);
        let timeout = Duration::from_micros(u64::from(timeout_us));
        self.deadlines.push(Reverse((
            Tick::of(sent_at + timeout, self.start),
            key.0,
            key.1,
            key.2,
            self.generation,
        )));
        if sched.host_timeout(key.0).is_none() {
            self.young
                .push_back((sent, key.0, key.1, key.2, self.generation));
        }
        self.flights.insert(
            key,
            Flight {
                job: p.job,
                sent,
                timeout_us,
                generation: self.generation,
            },
        );
    }

    /// Sends the tarpit check's probes to `host` (random ports, two copies each).
    fn send_check(&mut self, host: u32, timeout: Duration, now: Instant) {
        let ip = self.hosts.get(host as usize).copied();
        let (Some(ip), Some(src)) = (ip, self.host_src[host as usize]) else {
            return;
        };
        let sock = if ip.is_ipv4() {
            self.send4.as_ref()
        } else {
            self.send6.as_ref()
        };
        let Some(sock) = sock else { return };
        for _ in 0..CHECK_PORTS {
            #[allow(clippy::cast_possible_truncation)]
            let port = (splitmix(&mut self.rng) % 65_535) as u16 + 1;
            let dst = SocketAddr::new(ip, port);
            let mut buf = [0u8; packet::MAX_TCP_PROBE];
            for _copy in 0..2 {
                let probe = TcpProbe {
                    src,
                    dst,
                    sport: self.sport,
                    seq: self.cookie.seq(dst, self.sport, CHECK_ATTEMPT),
                    ack: 0,
                    flags: packet::SYN,
                    ttl: TTL,
                    ip_id: self.ip_id,
                };
                self.ip_id = self.ip_id.wrapping_add(1);
                if let Some(n) = packet::build_tcp(&mut buf, &probe) {
                    let _ = rustix::net::sendto(
                        sock,
                        &buf[..n],
                        SendFlags::empty(),
                        &SocketAddr::new(ip, 0),
                    );
                }
            }
        }
        // Answers in twice the probe timeout (at least 50 ms): two copies of each probe
        // went, so loss alone rarely hides more than one or two of the six.
        let deadline = now + (timeout * 2).max(Duration::from_millis(50));
        self.under_check.push(host);
        self.checks.insert(
            host,
            Check::Pending {
                deadline,
                syn_acks: 0,
                held: Vec::new(),
            },
        );
    }

    /// Reads what the answer socket `i` holds; verdicts go to the scheduler.
    /// Reads every answer socket until it is empty (bounded: what arrives meanwhile
    /// waits for the next turn once twice the sockets' share was read).
    fn drain(&mut self, sched: &mut Scheduler<'_>) -> Result<(), ScanError> {
        for i in 0..self.rx.len() {
            for _ in 0..2 {
                if !self.read(i, sched)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads what the answer socket `i` holds, up to [`READS_PER_TURN`] packets (true
    /// when that many were read: more may wait); verdicts go to the scheduler.
    fn read(&mut self, i: usize, sched: &mut Scheduler<'_>) -> Result<bool, ScanError> {
        self.read_upto(i, READS_PER_TURN, sched)
    }

    /// Reads up to `max` packets of answer socket `i` (true when that many were read).
    fn read_upto(
        &mut self,
        i: usize,
        max: usize,
        sched: &mut Scheduler<'_>,
    ) -> Result<bool, ScanError> {
        for _ in 0..max {
            let (fd, kind) = &self.rx[i];
            let kind = *kind;
            let (n, from) =
                match rustix::net::recvfrom(fd, &mut self.rx_buf[..], RecvFlags::DONTWAIT) {
                    Ok((n, _, from)) => (n, from),
                    Err(Errno::AGAIN | Errno::INTR) => return Ok(false),
                    Err(e) => return Err(ScanError::Runtime(e.into())),
                };
            let now = Instant::now();
            let data = &self.rx_buf[..n.min(self.rx_buf.len())];
            let from6 = || {
                from.as_ref()
                    .and_then(|a| SocketAddr::try_from(a.clone()).ok())
                    .and_then(|a| match a.ip() {
                        IpAddr::V6(v) => Some(v),
                        IpAddr::V4(_) => None,
                    })
            };
            let answer = match kind {
                Rx::Udp => from
                    .as_ref()
                    .and_then(|a| SocketAddr::try_from(a.clone()).ok())
                    .map(|from| Answer::Udp {
                        from: match from {
                            // An IPv4 peer on a dual socket: its plain address.
                            SocketAddr::V6(v6) => v6
                                .ip()
                                .to_ipv4_mapped()
                                .map_or(from, |v4| SocketAddr::new(IpAddr::V4(v4), v6.port())),
                            v4 @ SocketAddr::V4(_) => v4,
                        },
                        to_port: self.sport,
                        ttl: None,
                    }),
                Rx::Tcp4 | Rx::Icmp4 => packet::parse_ipv4(data),
                Rx::Tcp6 => {
                    from6().and_then(|f| packet::parse_transport6(packet::PROTO_TCP, data, f))
                }
                Rx::Icmp6 => from6().and_then(|f| packet::parse_icmp6(data, f)),
            };
            if let Some(a) = answer {
                self.answer(a, now, sched);
            }
        }
        Ok(true)
    }

    fn answer(&mut self, a: Answer, now: Instant, sched: &mut Scheduler<'_>) {
        let (remote, state, why, value, ttl, ours) = match a {
            Answer::Tcp {
                from,
                to_port,
                flags,
                seq,
                ack,
                ttl,
            } => {
                if !self.owns(to_port) || self.udp {
                    return;
                }
                if flags & packet::RST != 0 {
                    // A reset acknowledges a SYN (ack = cookie + 1) or, to a bare ACK,
                    // carries the ACK's number as its sequence number.
                    let v = if flags & packet::ACK != 0 {
                        ack.wrapping_sub(1)
                    } else {
                        seq
                    };
                    (from, PortState::Closed, reason::RESET, v, ttl, to_port)
                } else if flags & (packet::SYN | packet::ACK) == packet::SYN | packet::ACK {
                    (
                        from,
                        PortState::Open,
                        reason::SYN_ACK,
                        ack.wrapping_sub(1),
                        ttl,
                        to_port,
                    )
                } else {
                    return;
                }
            }
            Answer::Unreachable {
                kind, quoted, ttl, ..
            } if self.udp => {
                if quoted.proto != packet::PROTO_UDP || quoted.sport != self.sport {
                    return;
                }
                let (state, why) = match kind {
                    Unreach::Port => (PortState::Closed, reason::PORT_UNREACH),
                    Unreach::Net => (PortState::Filtered, reason::NET_UNREACH),
                    Unreach::Prohibited => (PortState::Filtered, reason::ADMIN_PROHIBITED),
                    Unreach::Protocol => (PortState::Filtered, reason::PROTO_UNREACH),
                    Unreach::Host | Unreach::Other => (PortState::Filtered, reason::HOST_UNREACH),
                };
                // Every ICMP error the host sends spends its rate limit's budget.
                if let Some(&h) = self.host_index.get(&quoted.dst.ip()) {
                    let r = self.rates.entry(h).or_default();
                    IcmpRate::note(&mut r.errors, now);
                    if let Some(q) = r.by_source.iter_mut().find(|(a, _)| *a == quoted.src) {
                        IcmpRate::note(&mut q.1, now);
                    } else if r.by_source.len() < 64 {
                        r.by_source.push((quoted.src, VecDeque::from([now])));
                    }
                }
                (quoted.dst, state, why, 0, ttl, self.sport)
            }
            Answer::Udp { from, to_port, ttl } if self.udp => {
                if to_port != self.sport {
                    return;
                }
                (
                    from,
                    PortState::Open,
                    reason::UDP_RESPONSE,
                    0,
                    ttl,
                    self.sport,
                )
            }
            Answer::Udp { .. } => return,
            Answer::Unreachable {
                kind, quoted, ttl, ..
            } => {
                if quoted.proto != packet::PROTO_TCP || !self.owns(quoted.sport) {
                    return;
                }
                let Some(seq) = quoted.seq else { return };
                let why = match kind {
                    Unreach::Net => reason::NET_UNREACH,
                    Unreach::Prohibited => reason::ADMIN_PROHIBITED,
                    Unreach::Port => reason::PORT_UNREACH,
                    Unreach::Protocol => reason::PROTO_UNREACH,
                    Unreach::Host | Unreach::Other => reason::HOST_UNREACH,
                };
                (quoted.dst, PortState::Filtered, why, seq, ttl, quoted.sport)
            }
        };
        let Some(&host) = self.host_index.get(&remote.ip()) else {
            return;
        };
        // A UDP answer has no room for a cookie: its addresses and ports match it.
        let attempt = if self.udp {
            0
        } else {
            let Some(a) = self.cookie.attempt(remote, ours, value) else {
                return;
            };
            a
        };
        if attempt != 0 && attempt != CHECK_ATTEMPT {
            return;
        }
        if attempt == CHECK_ATTEMPT {
            if let Some(Check::Pending { syn_acks, .. }) = self.checks.get_mut(&host) {
                if state == PortState::Open {
                    *syn_acks = syn_acks.saturating_add(1);
                }
            }
            return;
        }
        let port = remote.port();
        // The attempt in flight for the port (there is one at a time, or a few copies in
        // the scan's tail): any answer of ours settles it.
        let key = (0..CHECK_ATTEMPT)
            .map(|a| (host, port, a))
            .find(|k| self.flights.contains_key(k));
        let Some(f) = key.and_then(|k| self.flights.remove(&k)) else {
            return;
        };
        // Which attempt was answered is known only when there was one (Karn's rule: a
        // retried probe gives no RTT sample).
        let outcome = if f.job.attempt == 0 {
            ProbeOutcome::Answered {
                state,
                reason: why,
                rtt: now.saturating_duration_since(f.sent.at(self.start)),
                ttl,
            }
        } else {
            ProbeOutcome::AnsweredLate {
                state,
                reason: why,
                ttl,
            }
        };
        if self.udp && why != reason::UDP_RESPONSE {
            let sent = f.sent.at(self.start);
            let r = self.rates.entry(host).or_default();
            r.last_spent = Some(r.last_spent.map_or(sent, |t| t.max(sent)));
        }
        sched.finish(f.job, outcome, now);
        if state == PortState::Open
            && !self.udp
            && !self.checks.contains_key(&host)
            && self.ack_ports.is_empty()
        {
            // The host has answered: its measured timeout, not the initial one.
            let timeout = sched.host_timeout(host).unwrap_or(f.timeout());
            self.send_check(host, timeout, now);
        }
    }

    /// Holds open verdicts of hosts under check, rewrites those of tarpits, and finishes
    /// checks whose time is up. `force` releases everything (the scan is ending).
    fn filter_events(&mut self, out: &mut Vec<ScanEvent>, now: Instant, force: bool) {
        let mut keep = Vec::with_capacity(out.len());
        for e in out.drain(..) {
            if let ScanEvent::Port(r) = &e {
                if r.state == PortState::Open {
                    if let Some(&h) = self.host_index.get(&r.host) {
                        match self.checks.get_mut(&h) {
                            Some(Check::Pending { held, .. }) => {
                                held.push(e);
                                continue;
                            }
                            Some(Check::Tarpit) => {
                                keep.push(tarpit_verdict(e));
                                continue;
                            }
                            _ => {}
                        }
                    }
                }
            }
            keep.push(e);
        }
        // Only the hosts under check: the others' entries stay (Clear, Tarpit) and are
        // not walked on every turn of the loop.
        for h in self.under_check.clone() {
            let Some(Check::Pending {
                deadline, syn_acks, ..
            }) = self.checks.get(&h)
            else {
                continue;
            };
            let decided = *syn_acks >= CHECK_TARPIT_AT;
            if !(force || decided || *deadline <= now) {
                continue;
            }
            let tarpit = decided;
            self.under_check.retain(|u| *u != h);
            let Some(Check::Pending { held, .. }) = self
                .checks
                .insert(h, if tarpit { Check::Tarpit } else { Check::Clear })
            else {
                continue;
            };
            if tarpit {
                let ip = held.iter().find_map(|e| match e {
                    ScanEvent::Port(r) => Some(r.host),
                    _ => None,
                });
                if let Some(ip) = ip {
                    keep.push(ScanEvent::Notice(format!(
                        "{ip} answers SYN-ACK on random ports too (a tarpit or a SYN proxy in front of it): its SYN-ACKs say nothing about services, so its ports are reported filtered (syn-ack-all); a connect scan with --probe tells what really answers"
                    )));
                }
                keep.extend(held.into_iter().map(tarpit_verdict));
            } else {
                keep.extend(held);
            }
        }
        *out = keep;
    }

    /// Ends the young probes whose host's measured timeout has passed. Sending order is
    /// kept, so the scan stops at the first one still within its time.
    fn expire_young(&mut self, sched: &mut Scheduler<'_>, now: Instant) {
        while let Some(&(sent, host, port, attempt, generation)) = self.young.front() {
            let key = (host, port, attempt);
            if self
                .flights
                .get(&key)
                .is_none_or(|f| f.generation != generation)
            {
                self.young.pop_front();
                continue;
            }
            match sched.host_timeout(host) {
                Some(t) if sent.at(self.start) + t <= now => {
                    self.young.pop_front();
                    if let Some(f) = self.flights.remove(&key) {
                        let o = self.unanswered(&f, now, sched);
                        sched.finish(f.job, o, now);
                    }
                }
                _ => break,
            }
        }
    }

    /// When the oldest young probe ends by its host's measured timeout.
    fn young_deadline(&self, sched: &Scheduler<'_>) -> Option<Instant> {
        let &(sent, host, ..) = self.young.front()?;
        Some(sent.at(self.start) + sched.host_timeout(host)?)
    }

    fn next_check_deadline(&self) -> Option<Instant> {
        self.under_check
            .iter()
            .filter_map(|h| match self.checks.get(h) {
                Some(Check::Pending { deadline, .. }) => Some(*deadline),
                _ => None,
            })
            .min()
    }

    fn checks_pending(&self) -> bool {
        !self.under_check.is_empty()
    }
}

fn tarpit_verdict(e: ScanEvent) -> ScanEvent {
    match e {
        ScanEvent::Port(mut r) => {
            r.state = PortState::Filtered;
            r.reason = reason::SYN_ACK_ALL;
            ScanEvent::Port(r)
        }
        other => other,
    }
}

/// Runs one raw scan (SYN or UDP) on this thread (see the module's documentation).
pub(crate) fn drive(
    plan: &ScanPlan,
    opts: &RawOptions,
    udp: bool,
    on_event: &mut dyn FnMut(ScanEvent) -> ControlFlow<()>,
) -> Result<ScanSummary, ScanError> {
    let mut eng = Engine::open(plan, opts, udp)?;
    let mut sched = Scheduler::new(plan, Instant::now())?;
    let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
    let mut last_progress = Instant::now();
    loop {
        let mut now = Instant::now();
        let mut done = false;
        let wake = loop {
            match sched.next(now) {
                Next::Probe(job, addr, timeout) => {
                    if let Some(o) = eng.queue(job, addr, timeout) {
                        now = Instant::now();
                        sched.finish(job, o, now);
                    }
                    if eng.batch_full() {
                        eng.flush(&mut sched);
                        now = Instant::now();
                        // While --min-rate pushes probes past the windows, nothing bounds
                        // a burst but the rate: answers are read as probes go, or the
                        // sockets overflow and answers are lost. (Under the windows they
                        // are read once the windows are full: reading sooner frees room
                        // sooner, and on a link whose queue grows under load the probes
                        // then outrun it into premature timeouts.)
                        if sched.forcing(now) {
                            for i in 0..eng.rx.len() {
                                eng.read_upto(i, READS_PER_BATCH, &mut sched)?;
                            }
                            now = Instant::now();
                        }
                    }
                }
                Next::Wait(w) => break w,
                Next::Done => {
                    done = true;
                    break None;
                }
            }
        };
        eng.flush(&mut sched);
        now = Instant::now();
        if done && !eng.checks_pending() {
            sched.progress(now);
            eng.filter_events(&mut sched.out, now, true);
            hand_over(&mut sched.out, on_event);
            return Ok(sched.summary(now));
        }
        eng.filter_events(&mut sched.out, now, false);
        if hand_over(&mut sched.out, on_event) {
            return Ok(stop(&mut eng, &mut sched, on_event));
        }
        let mut until = wake;
        if let Some(Reverse((d, ..))) = eng.deadlines.peek() {
            let d = d.at(eng.start);
            until = Some(until.map_or(d, |u| u.min(d)));
        }
        for d in [eng.next_check_deadline(), eng.young_deadline(&sched)]
            .into_iter()
            .flatten()
        {
            until = Some(until.map_or(d, |u| u.min(d)));
        }
        let timeout = until.map(|u| wait_for(u, now));
        events.clear();
        match epoll::wait(
            &eng.ep,
            rustix::buffer::spare_capacity(&mut events),
            timeout.as_ref(),
        ) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(ScanError::Runtime(e.into())),
        }
        let ready: Vec<usize> = events
            .iter()
            .filter_map(|ev| usize::try_from(ev.data.u64()).ok())
            .collect();
        for i in ready {
            if i < eng.rx.len() {
                eng.read(i, &mut sched)?;
            }
        }
        let mut now = Instant::now();
        let due = eng
            .deadlines
            .peek()
            .is_some_and(|Reverse((d, ..))| d.at(eng.start) <= now)
            || eng.young_deadline(&sched).is_some_and(|d| d <= now);
        if due {
            // Before a probe is called unanswered, every answer already queued is read
            // (at a high rate the queue can hold answers older than a short timeout:
            // they are answers, not silences).
            eng.drain(&mut sched)?;
            now = Instant::now();
        }
        eng.expire_young(&mut sched, now);
        while let Some(Reverse((d, host, port, attempt, generation))) =
            eng.deadlines.peek().copied()
        {
            if d.at(eng.start) > now {
                break;
            }
            eng.deadlines.pop();
            let key = (host, port, attempt);
            if eng
                .flights
                .get(&key)
                .is_some_and(|f| f.generation == generation)
            {
                if let Some(f) = eng.flights.remove(&key) {
                    let o = eng.unanswered(&f, now, &mut sched);
                    sched.finish(f.job, o, now);
                }
            }
        }
        if now.duration_since(last_progress) >= PROGRESS_EVERY {
            last_progress = now;
            sched.progress(now);
        }
        eng.filter_events(&mut sched.out, now, false);
        if hand_over(&mut sched.out, on_event) {
            return Ok(stop(&mut eng, &mut sched, on_event));
        }
    }
}

/// The caller asked to stop: verdicts held for a tarpit check still go out (the
/// checkpoint already counts them), as they are.
fn stop(
    eng: &mut Engine,
    sched: &mut Scheduler<'_>,
    on_event: &mut dyn FnMut(ScanEvent) -> ControlFlow<()>,
) -> ScanSummary {
    let now = Instant::now();
    eng.filter_events(&mut sched.out, now, true);
    hand_over(&mut sched.out, on_event);
    sched.summary(now)
}
