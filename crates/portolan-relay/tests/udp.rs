//! UDP forwarding through a real `Forwarder` on loopback: sessions per client (each gets its
//! own answers), the idle timeout, the LRU cap, `allow` and the caps, ICMP errors from a
//! closed target port, IPv6 and mixed families, a datagram near the largest size, reload and
//! drain, and real DNS (dnsmasq) with 200 concurrent clients.
//!
//! The target in most tests is a small server on a thread of its own that answers each
//! request with something derived from it, and says which address the request came from
//! (the forwarder's upstream socket for that client):
//! - `Q<token>` -> `A<token> <upstream address>`
//! - `R<bytes>` -> the bytes reversed
//! - `S<n>` -> `S<k>` for k in 1..=n, one every 400 ms (traffic towards the client only)

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portolan_core::{Cidr, Port, PortRange};
use portolan_relay::server::{Event, EventSink, Forwarder};
use portolan_relay::{Proto, Rule};
use tokio::net::UdpSocket;

/// Every upstream address the echo server heard from, and the tokens each one carried.
type Seen = Arc<Mutex<HashMap<SocketAddr, HashSet<String>>>>;

/// The answering server: a thread that stops when dropped.
struct Echo {
    addr: SocketAddr,
    seen: Seen,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(ip: IpAddr) -> Echo {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind the echo server");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                let sock = Arc::new(sock);
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let req = &buf[..n];
                    match req.first() {
                        Some(b'Q') => {
                            let token = String::from_utf8_lossy(&req[1..]).into_owned();
                            let answer = format!("A{token} {from}");
                            seen.lock().unwrap().entry(from).or_default().insert(token);
                            let _ = sock.send_to(answer.as_bytes(), from);
                        }
                        Some(b'R') => {
                            let mut back = req[1..].to_vec();
                            back.reverse();
                            let _ = sock.send_to(&back, from);
                        }
                        Some(b'S') => {
                            let count: u32 =
                                String::from_utf8_lossy(&req[1..]).parse().unwrap_or(1);
                            let sock = Arc::clone(&sock);
                            std::thread::spawn(move || {
                                for k in 1..=count {
                                    std::thread::sleep(Duration::from_millis(400));
                                    let _ = sock.send_to(format!("S{k}").as_bytes(), from);
                                }
                            });
                        }
                        _ => {}
                    }
                }
            })
        };
        Echo {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn localhost4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn localhost6() -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
}

/// Whether ::1 can be used here (IPv6 may be off in a container).
fn ipv6_ready() -> Result<(), String> {
    std::net::UdpSocket::bind("[::1]:0")
        .map(|_| ())
        .map_err(|e| format!("IPv6 loopback [::1] is not usable here: {e}"))
}

fn bracket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// A UDP rule listening on `listen` (a port the kernel picks) towards `target`.
fn udp_rule(listen: IpAddr, target: SocketAddr) -> Rule {
    let mut rule = Rule::parse(
        Proto::Udp,
        &format!("{}:1", bracket(listen)),
        &format!("{}:{}", bracket(target.ip()), target.port()),
    )
    .expect("a valid rule");
    // Port 0 is refused by the rule's check (a person never means it); the forwarder binds
    // what it is given, so the test lets the kernel pick and asks `bound()`.
    rule.listen.ports = PortRange::single(Port::new(0));
    rule
}

/// Collects the forwarder's events.
fn sink() -> (EventSink, Arc<Mutex<Vec<Event>>>) {
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let e = Arc::clone(&events);
    let sink: EventSink = Arc::new(move |ev| e.lock().unwrap().push(ev));
    (sink, events)
}

struct Fixture {
    fwd: Forwarder,
    addr: SocketAddr,
    events: Arc<Mutex<Vec<Event>>>,
}

fn start(rule: Rule) -> Fixture {
    let (sink, events) = sink();
    let fwd = Forwarder::start(vec![rule], sink, Some(2)).expect("start the forwarder");
    let addr = fwd.bound()[0].addrs[0];
    Fixture { fwd, addr, events }
}

impl Fixture {
    /// A counter of the (one) rule from the metrics text: `name{...labels...} value`.
    fn metric(&self, name: &str, label: &str) -> u64 {
        let text = self.fwd.metrics_text();
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} {label} in:\n{text}"))
    }

    fn accepted(&self) -> u64 {
        self.metric("portolan_forward_connections_total", "result=\"accepted\"")
    }

    fn refused(&self, why: &str) -> u64 {
        self.metric(
            "portolan_forward_connections_total",
            &format!("result=\"{why}\""),
        )
    }

    fn target_failed(&self) -> u64 {
        self.metric(
            "portolan_forward_connections_total",
            "result=\"target_failed\"",
        )
    }

    fn evicted(&self) -> u64 {
        self.metric("portolan_forward_closed_total", "why=\"evicted\"")
    }

    fn idle_closed(&self) -> u64 {
        self.metric("portolan_forward_closed_total", "why=\"idle\"")
    }

    fn bytes(&self, dir: &str) -> u64 {
        self.metric(
            "portolan_forward_bytes_total",
            &format!("direction=\"{dir}\""),
        )
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Waits until `f` holds, up to `limit`; whether it did.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `req` to `to` and waits for one datagram back, resending up to 5 times (a loaded
/// loopback may drop a datagram: UDP promises nothing).
async fn ask(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    for _ in 0..5 {
        sock.send_to(req, to).await.ok()?;
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await
        {
            return Some((buf[..n].to_vec(), from));
        }
    }
    None
}

/// One datagram back within `wait`, if any (no resending).
async fn recv_within(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Asks `Q<token>` through the forwarder; the answer's upstream address.
async fn query(sock: &UdpSocket, to: SocketAddr, token: &str) -> SocketAddr {
    let (answer, from) = ask(sock, to, format!("Q{token}").as_bytes())
        .await
        .unwrap_or_else(|| panic!("no answer for {token}"));
    assert_eq!(from, to, "the answer comes from the forwarder's address");
    let text = String::from_utf8(answer).unwrap();
    let (tok, up) = text
        .strip_prefix('A')
        .and_then(|t| t.split_once(' '))
        .unwrap_or_else(|| panic!("a malformed answer: {text:?}"));
    assert_eq!(tok, token, "the answer to this client's own question");
    up.parse().unwrap()
}

/// CPU ticks of each of this process's forwarder threads (by thread id).
fn forwarder_thread_ticks() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("portolan-forwar") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the name: state is the first, utime the 12th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() > 12 {
            out.insert(t.file_name().to_string_lossy().into_owned(), f[11] + f[12]);
        }
    }
    out
}

/// The largest share of one core that any forwarder thread of this process used over
/// `span` (other tests' forwarders included: a spinning thread shows as about 1.0).
fn forwarder_threads_busiest(span: Duration) -> f64 {
    let before = forwarder_thread_ticks();
    std::thread::sleep(span);
    let after = forwarder_thread_ticks();
    let ticks_per_s = 100.0; // USER_HZ on Linux
    after
        .iter()
        .map(|(t, a)| a.saturating_sub(before.get(t).copied().unwrap_or(*a)))
        .map(|d| f64::from(u32::try_from(d).unwrap_or(u32::MAX)) / ticks_per_s / span.as_secs_f64())
        .fold(0.0, f64::max)
}

/// Raises this process's open-files limit towards `want` (tests run side by side, and a
/// few hold a socket per client and per session); `Err` when the hard limit is lower.
fn open_files(want: u64) -> Result<(), String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_none_or(|c| c >= want) {
        return Ok(());
    }
    let new = lim.maximum.map_or(want, |h| h.min(want));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(new),
            maximum: lim.maximum,
        },
    )
    .map_err(|e| format!("cannot raise the open-files limit: {e}"))?;
    if new < want {
        return Err(format!("the open-files limit is {new}, below {want}"));
    }
    Ok(())
}

async fn client(ip: IpAddr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(ip, 0)).await.unwrap()
}

#[test]
fn two_hundred_clients_each_get_their_own_answer() {
    let _ = open_files(8192);
    let echo = Echo::start(localhost4());
    let fx = start(udp_rule(localhost4(), echo.addr));
    let to = fx.addr;
    let rt = runtime();
    let ups: Vec<(String, SocketAddr)> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for k in 0..200 {
            set.spawn(async move {
                let sock = client(localhost4()).await;
                let token = format!("client-{k}-{}", sock.local_addr().unwrap().port());
                // Three questions per client, all on its one session.
                let mut up = None;
                for round in 0..3 {
                    let u = query(&sock, to, &format!("{token}-{round}")).await;
                    assert!(up.is_none_or(|p| p == u), "one upstream socket per client");
                    up = Some(u);
                }
                (token, up.unwrap())
            });
        }
        let mut all = Vec::new();
        while let Some(r) = set.join_next().await {
            all.push(r.expect("a client task"));
        }
        all
    });
    assert_eq!(ups.len(), 200);
    let distinct: HashSet<SocketAddr> = ups.iter().map(|(_, u)| *u).collect();
    assert_eq!(
        distinct.len(),
        200,
        "each client has its own upstream socket"
    );
    // What the target saw: each upstream socket carried one client's questions only.
    let seen = echo.seen.lock().unwrap().clone();
    for (token, up) in &ups {
        let tokens = &seen[up];
        assert!(
            tokens.iter().all(|t| t.starts_with(&format!("{token}-"))),
            "{up} carried {tokens:?}, not only {token}'s"
        );
    }
    assert_eq!(fx.accepted(), 200);
    assert_eq!(fx.fwd.active(), 200);
    // 200 quiet sessions cost no CPU (no task spins on a readiness it cannot clear).
    let busiest = forwarder_threads_busiest(Duration::from_secs(1));
    assert!(
        busiest < 0.5,
        "a forwarder thread was {:.0}% busy while idle",
        busiest * 100.0
    );
    assert!(fx.bytes("up") > 0 && fx.bytes("down") > fx.bytes("up"));
    // Drain: the sessions end with their listener, at once.
    let t = Instant::now();
    let left = fx.fwd.drain(Duration::from_secs(5), |_| true);
    assert_eq!(left, 0);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "drain took {:?}",
        t.elapsed()
    );
}

#[test]
fn idle_timeout_ends_a_session_and_traffic_either_way_keeps_it() {
    let echo = Echo::start(localhost4());
    let mut rule = udp_rule(localhost4(), echo.addr);
    rule.options.udp_timeout = Duration::from_millis(1500);
    let fx = start(rule);
    let rt = runtime();
    let sock = rt.block_on(client(localhost4()));
    // Questions every 300 ms for 2 s: one session all along.
    let first = rt.block_on(query(&sock, fx.addr, "keep-0"));
    for k in 1..7 {
        std::thread::sleep(Duration::from_millis(300));
        let up = rt.block_on(query(&sock, fx.addr, &format!("keep-{k}")));
        assert_eq!(up, first, "the same session while the client talks");
    }
    assert_eq!(fx.accepted(), 1);
    // Traffic towards the client only (one datagram every 400 ms for 2 s) keeps it too.
    rt.block_on(async {
        sock.send_to(b"S5", fx.addr).await.unwrap();
        for k in 1..=5 {
            let got = recv_within(&sock, Duration::from_secs(2)).await;
            assert_eq!(got.as_deref(), Some(format!("S{k}").as_bytes()));
        }
    });
    assert_eq!(fx.accepted(), 1);
    assert_eq!(fx.fwd.active(), 1);
    // Then silence: the session ends after the timeout (give or take the sweep's quarter),
    // neither before nor long after. (The forwarder saw the last datagram a moment before
    // the client did, hence the lower bound's margin.)
    let quiet = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || fx.fwd.active() == 0),
        "the idle session never ended"
    );
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_secs(1),
        "ended after only {after:?}"
    );
    assert!(after < Duration::from_secs(3), "ended only after {after:?}");
    assert_eq!(fx.idle_closed(), 1);
    // The client comes back: a new session.
    rt.block_on(query(&sock, fx.addr, "again"));
    assert_eq!(fx.accepted(), 2);
}

#[test]
fn the_cap_evicts_the_least_recently_used_session() {
    let echo = Echo::start(localhost4());
    let mut rule = udp_rule(localhost4(), echo.addr);
    rule.options.udp_max_sessions = 3;
    let fx = start(rule);
    let rt = runtime();
    rt.block_on(async {
        let to = fx.addr;
        let (a, b, c, d) = (
            client(localhost4()).await,
            client(localhost4()).await,
            client(localhost4()).await,
            client(localhost4()).await,
        );
        let ua = query(&a, to, "a1").await;
        let ub = query(&b, to, "b1").await;
        query(&c, to, "c1").await;
        // a is used again: b is now the least recently used.
        assert_eq!(query(&a, to, "a2").await, ua);
        query(&d, to, "d1").await;
        assert_eq!((fx.accepted(), fx.evicted()), (4, 1));
        assert_eq!(fx.fwd.active(), 3);
        // b was evicted: a new session (evicting c, now the oldest).
        let ub2 = query(&b, to, "b2").await;
        assert_ne!(ub2, ub, "b has a new upstream socket");
        assert_eq!((fx.accepted(), fx.evicted()), (5, 2));
        // a survived both evictions.
        assert_eq!(query(&a, to, "a3").await, ua);
        assert_eq!((fx.accepted(), fx.evicted()), (5, 2));
        assert_eq!(fx.fwd.active(), 3);
    });
}

/// Many more clients than the cap, quickly: every new client evicts the least recently used
/// session, the accounts add up, and the most recent clients are the ones kept.
#[test]
fn a_flood_of_clients_beyond_the_cap() {
    const CLIENTS: usize = 1500;
    const CAP: usize = 500;
    if !portolan_testsupport::skip_unless(open_files(8192)) {
        return;
    }
    let echo = Echo::start(localhost4());
    let mut rule = udp_rule(localhost4(), echo.addr);
    rule.options.udp_max_sessions = CAP;
    let fx = start(rule);
    let rt = runtime();
    let t = Instant::now();
    let socks = rt.block_on(async {
        let mut socks = Vec::with_capacity(CLIENTS);
        for k in 0..CLIENTS {
            let s = client(localhost4()).await;
            s.send_to(format!("Qflood-{k}").as_bytes(), fx.addr)
                .await
                .unwrap();
            socks.push(s);
            // In steps small enough for any receive buffer (UDP would drop the rest).
            if k % 50 == 49 {
                let want = u64::try_from(k + 1).unwrap();
                let deadline = Instant::now() + Duration::from_secs(5);
                while fx.accepted() < want && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        socks
    });
    let spent = t.elapsed();
    let n = u64::try_from(CLIENTS).unwrap();
    let cap = u64::try_from(CAP).unwrap();
    assert!(eventually(Duration::from_secs(5), || fx.accepted() == n));
    assert_eq!(fx.evicted(), n - cap);
    assert_eq!(fx.fwd.active(), cap);
    assert!(
        spent < Duration::from_secs(20),
        "{CLIENTS} clients took {spent:?}"
    );
    rt.block_on(async {
        // The latest clients still have their sessions (no new one is opened)...
        // Each has its first answer waiting.
        for (k, s) in socks.iter().enumerate().skip(CLIENTS - 20) {
            let first = recv_within(s, Duration::from_secs(2))
                .await
                .unwrap_or_default();
            assert!(first.starts_with(format!("Aflood-{k} ").as_bytes()));
            query(s, fx.addr, &format!("again-{k}")).await;
        }
        assert_eq!(fx.accepted(), n);
        // ...and the first one's was evicted long ago.
        let first = recv_within(&socks[0], Duration::from_secs(2))
            .await
            .unwrap_or_default();
        assert!(first.starts_with(b"Aflood-0 "));
        query(&socks[0], fx.addr, "first-again").await;
    });
    assert_eq!(fx.accepted(), n + 1);
    assert_eq!(fx.fwd.active(), cap);
}

#[test]
fn allow_and_the_caps_refuse_with_few_events() {
    let echo = Echo::start(localhost4());
    let mut rule = udp_rule(localhost4(), echo.addr);
    rule.options.allow = vec!["198.18.0.0/15".parse::<Cidr>().unwrap()];
    let fx = start(rule);
    let rt = runtime();
    let peers: HashSet<SocketAddr> = rt.block_on(async {
        let mut socks = Vec::new();
        for _ in 0..50 {
            let s = client(localhost4()).await;
            s.send_to(b"Qrefused", fx.addr).await.unwrap();
            socks.push(s);
        }
        for s in &socks {
            assert!(recv_within(s, Duration::from_millis(20)).await.is_none());
        }
        socks.iter().map(|s| s.local_addr().unwrap()).collect()
    });
    assert!(eventually(Duration::from_secs(2), || fx
        .refused("not_allowed")
        == 50));
    assert_eq!(fx.accepted(), 0);
    assert_eq!(fx.fwd.active(), 0);
    let refused: Vec<SocketAddr> = fx
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Refused {
                peer,
                why: "not_allowed",
                proto: Proto::Udp,
                ..
            } => Some(*peer),
            _ => None,
        })
        .collect();
    assert!(
        (1..=10).contains(&refused.len()),
        "{} refusal events for 50 refusals",
        refused.len()
    );
    assert!(
        refused.iter().all(|p| peers.contains(p)),
        "events name the client"
    );
    drop(fx);

    // max_conns (sessions at once) and max_conns_per_source (all clients are 127.0.0.1).
    for (max, per_source, why) in [
        (Some(2), None, "max_conns"),
        (None, Some(2), "max_conns_per_source"),
    ] {
        let mut rule = udp_rule(localhost4(), echo.addr);
        rule.options.max_conns = max;
        rule.options.max_conns_per_source = per_source;
        let fx = start(rule);
        rt.block_on(async {
            let (a, b, c) = (
                client(localhost4()).await,
                client(localhost4()).await,
                client(localhost4()).await,
            );
            query(&a, fx.addr, "a").await;
            query(&b, fx.addr, "b").await;
            c.send_to(b"Qc", fx.addr).await.unwrap();
            assert!(recv_within(&c, Duration::from_millis(300)).await.is_none());
            // The sessions that are in go on.
            query(&a, fx.addr, "a2").await;
        });
        assert_eq!(fx.refused(why), 1, "{why}");
        assert_eq!(fx.accepted(), 2);
    }
}

#[test]
fn a_closed_target_port_is_a_target_failure() {
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let fx = start(udp_rule(localhost4(), closed));
    let rt = runtime();
    let sock = rt.block_on(client(localhost4()));
    rt.block_on(async {
        sock.send_to(b"Qanyone", fx.addr).await.unwrap();
        assert!(recv_within(&sock, Duration::from_millis(300))
            .await
            .is_none());
    });
    assert!(
        eventually(Duration::from_secs(2), || fx.target_failed() == 1),
        "target_failed is {}",
        fx.target_failed()
    );
    assert!(eventually(Duration::from_secs(1), || fx.fwd.active() == 0));
    let client_addr = sock.local_addr().unwrap();
    assert!(fx.events().iter().any(|e| matches!(
        e,
        Event::TargetFailed { peer, target, proto: Proto::Udp, .. }
            if *peer == client_addr && *target == closed
    )));
    // The next datagram tries again (a new session, failing the same way).
    rt.block_on(async { sock.send_to(b"Qagain", fx.addr).await.unwrap() });
    assert!(eventually(Duration::from_secs(2), || fx.target_failed() == 2));
    assert_eq!(fx.accepted(), 2);
    assert!(eventually(Duration::from_secs(1), || fx.fwd.active() == 0));
}

#[test]
fn ipv6_on_both_ends() {
    if !portolan_testsupport::skip_unless(ipv6_ready()) {
        return;
    }
    let echo = Echo::start(localhost6());
    let fx = start(udp_rule(localhost6(), echo.addr));
    assert!(fx.addr.is_ipv6());
    let rt = runtime();
    rt.block_on(async {
        let a = client(localhost6()).await;
        let b = client(localhost6()).await;
        let ua = query(&a, fx.addr, "six-a").await;
        let ub = query(&b, fx.addr, "six-b").await;
        assert!(ua.is_ipv6() && ub.is_ipv6());
        assert_ne!(ua, ub);
    });
    assert_eq!(fx.accepted(), 2);
}

#[test]
fn ipv4_clients_to_an_ipv6_target_and_back() {
    if !portolan_testsupport::skip_unless(ipv6_ready()) {
        return;
    }
    let rt = runtime();
    for (listen, target) in [(localhost4(), localhost6()), (localhost6(), localhost4())] {
        let echo = Echo::start(target);
        let fx = start(udp_rule(listen, echo.addr));
        rt.block_on(async {
            let sock = client(listen).await;
            let up = query(&sock, fx.addr, "across").await;
            assert_eq!(
                up.ip(),
                target,
                "the target heard the upstream socket of its family"
            );
            // A large datagram crosses families intact too.
            let data: Vec<u8> = (0..30_000u32)
                .map(|i| u8::try_from(i % 251).unwrap())
                .collect();
            let mut req = vec![b'R'];
            req.extend_from_slice(&data);
            let (back, _) = ask(&sock, fx.addr, &req).await.expect("an answer");
            let mut want = data.clone();
            want.reverse();
            assert!(back == want, "the reversed bytes");
        });
        assert_eq!(fx.accepted(), 1);
    }
}

#[test]
fn large_datagrams_cross_intact() {
    let echo = Echo::start(localhost4());
    let fx = start(udp_rule(localhost4(), echo.addr));
    let rt = runtime();
    rt.block_on(async {
        let sock = client(localhost4()).await;
        // 60 KB, and the largest IPv4 UDP payload (65,507 bytes).
        for len in [60_000usize, 65_506] {
            let data: Vec<u8> = (0..len)
                .map(|i| (i.wrapping_mul(7919) >> 3).to_le_bytes()[0])
                .collect();
            let mut req = vec![b'R'];
            req.extend_from_slice(&data);
            let (back, _) = ask(&sock, fx.addr, &req).await.expect("an answer");
            assert_eq!(back.len(), len);
            let mut want = data;
            want.reverse();
            assert!(back == want, "{len} bytes came back changed");
        }
        // An empty datagram is a datagram too.
        sock.send_to(b"", fx.addr).await.unwrap();
        assert_eq!(
            query(&sock, fx.addr, "after-empty").await.ip(),
            localhost4()
        );
    });
    assert_eq!(fx.accepted(), 1);
    assert!(fx.bytes("up") >= 60_001 + 65_507);
    assert!(fx.bytes("down") >= 60_000 + 65_506);
}

#[test]
fn reload_keeps_sessions_and_removing_the_rule_frees_its_port() {
    let old = Echo::start(localhost4());
    let new = Echo::start(localhost4());
    let fx = start(udp_rule(localhost4(), old.addr));
    let rt = runtime();
    let (a, b) = rt.block_on(async { (client(localhost4()).await, client(localhost4()).await) });
    let ua = rt.block_on(query(&a, fx.addr, "a1"));
    assert!(old.seen.lock().unwrap().contains_key(&ua));
    // Same listening address, new target: a's session keeps its upstream, b's goes to the
    // new target.
    let report = fx.fwd.reload(vec![udp_rule(localhost4(), new.addr)]);
    assert_eq!(report.changed.len(), 1, "{report:?}");
    assert_eq!(rt.block_on(query(&a, fx.addr, "a2")), ua);
    let ub = rt.block_on(query(&b, fx.addr, "b1"));
    assert!(new.seen.lock().unwrap().contains_key(&ub));
    assert_eq!(fx.fwd.active(), 2);
    // The rule goes: its sessions end and its port is free at once.
    let report = fx.fwd.reload(Vec::new());
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert_eq!(fx.fwd.active(), 0);
    std::net::UdpSocket::bind(fx.addr).expect("the port is free again right after the reload");
}

/// A forwarder on `*` (dual-stack `[::]`) in a namespace of the test's own: an IPv4 client
/// arrives as ::ffff:127.0.0.1, `allow` sees 127.0.0.1, and the answer goes back to the
/// client's exact address.
#[test]
fn dual_stack_listener_serves_ipv4_clients() {
    use portolan_testsupport::Netns;
    if !portolan_testsupport::skip_unless(Netns::ready()) {
        return;
    }
    let ns = Netns::new("udpdual");
    ns.run_in(|| {
        let echo = Echo::start(localhost4());
        for (allow, answered) in [("127.0.0.0/8", true), ("198.18.0.0/15", false)] {
            let mut rule = Rule::parse(Proto::Udp, "*:1", &echo.addr.to_string()).unwrap();
            rule.listen.ports = PortRange::single(Port::new(0));
            rule.options.allow = vec![allow.parse::<Cidr>().unwrap()];
            let fx = start(rule);
            assert!(fx.addr.is_ipv6(), "bound {}", fx.addr);
            let to = SocketAddr::new(localhost4(), fx.addr.port());
            let rt = runtime();
            let sock = rt.block_on(client(localhost4()));
            let me = sock.local_addr().unwrap();
            if answered {
                let up = rt.block_on(query(&sock, to, "mapped"));
                assert_eq!(up.ip(), localhost4());
                assert_eq!(fx.accepted(), 1);
            } else {
                rt.block_on(async {
                    sock.send_to(b"Qno", to).await.unwrap();
                    assert!(recv_within(&sock, Duration::from_millis(300))
                        .await
                        .is_none());
                });
                assert_eq!(fx.refused("not_allowed"), 1);
                let mapped: SocketAddr =
                    format!("[::ffff:127.0.0.1]:{}", me.port()).parse().unwrap();
                assert!(
                    fx.events()
                        .iter()
                        .any(|e| matches!(e, Event::Refused { peer, .. } if *peer == mapped)),
                    "{:?}",
                    fx.events()
                );
            }
        }
    });
}

// --- Real DNS through the forwarder -------------------------------------------------------

/// dnsmasq, killed when dropped.
struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const DNSMASQ: &str = "/usr/sbin/dnsmasq";
const NAMES: u16 = 200;

fn dns_name(k: u16) -> String {
    format!("n{k}.portolan.test")
}

fn dns_answer(k: u16) -> Ipv4Addr {
    let [hi, lo] = k.to_be_bytes();
    Ipv4Addr::new(198, 18, hi, lo)
}

/// A query for `name`'s A record, with `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap());
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root; type A; class IN
    q
}

/// The A records of a response to query `id`, or why it is not one.
fn dns_parse(id: u16, r: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    let get = |i: usize, n: usize| r.get(i..i + n).ok_or_else(|| format!("short at {i}"));
    let u16_at = |i: usize| get(i, 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    if u16_at(0)? != id {
        return Err(format!("id {} for query {id}", u16_at(0)?));
    }
    let flags = u16_at(2)?;
    if flags & 0x8000 == 0 || flags & 0x000f != 0 {
        return Err(format!("flags {flags:#06x}"));
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let skip_name = |mut i: usize| -> Result<usize, String> {
        loop {
            let len = *get(i, 1)?.first().unwrap_or(&0);
            match len {
                0 => return Ok(i + 1),
                l if l & 0xc0 == 0xc0 => return Ok(i + 2),
                l => i += 1 + usize::from(l),
            }
        }
    };
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(i)?;
        let (ty, len) = (u16_at(i)?, usize::from(u16_at(i + 8)?));
        let data = get(i + 10, len)?;
        if ty == 1 && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        i += 10 + len;
    }
    Ok(out)
}

fn start_dnsmasq(dir: &std::path::Path) -> (Dnsmasq, SocketAddr) {
    let conf = dir.join("dnsmasq.conf");
    let mut lines = String::new();
    for k in 0..NAMES {
        let _ = writeln!(lines, "address=/{}/{}", dns_name(k), dns_answer(k));
    }
    std::fs::write(&conf, lines).unwrap();
    // A port that was free a moment ago (dnsmasq binds it for UDP and TCP); tried again
    // with another when taken in between.
    for _ in 0..5 {
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let child = Command::new(DNSMASQ)
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--pid-file",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--cache-size=0",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run dnsmasq");
        let mut d = Dnsmasq(child);
        let addr = SocketAddr::new(localhost4(), port);
        // Ready when it answers directly.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if d.0.try_wait().ok().flatten().is_some() {
                break;
            }
            let _ = probe.send_to(&dns_query(7, &dns_name(0)), addr);
            if let Ok(n) = probe.recv(&mut buf) {
                if dns_parse(7, &buf[..n]).is_ok_and(|a| a == [dns_answer(0)]) {
                    return (d, addr);
                }
            }
        }
        let _ = d.0.kill();
    }
    panic!("dnsmasq did not start");
}

#[test]
fn real_dns_through_the_forward_with_200_concurrent_clients() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::program(DNSMASQ)) {
        return;
    }
    let _ = open_files(8192);
    let dir = std::env::temp_dir().join(format!("portolan-udp-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_dnsmasq, dns) = start_dnsmasq(&dir);
    let fx = start(udp_rule(localhost4(), dns));
    let to = fx.addr;
    let rt = runtime();
    let answered = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for k in 0..NAMES {
            set.spawn(async move {
                let sock = client(localhost4()).await;
                let id = k.wrapping_mul(331).wrapping_add(17);
                let q = dns_query(id, &dns_name(k));
                let (r, _) = ask(&sock, to, &q)
                    .await
                    .unwrap_or_else(|| panic!("no answer for {}", dns_name(k)));
                let got = dns_parse(id, &r).unwrap_or_else(|e| panic!("{}: {e}", dns_name(k)));
                assert_eq!(got, [dns_answer(k)], "{}'s own answer", dns_name(k));
                k
            });
        }
        let mut n = 0;
        while let Some(r) = set.join_next().await {
            r.expect("a client task");
            n += 1;
        }
        n
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(answered, NAMES);
    assert_eq!(fx.accepted(), u64::from(NAMES));
}
