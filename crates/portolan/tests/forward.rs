//! `portolan forward` end to end: the real binary between real clients and real servers
//! (curl, nginx and dnsmasq from Debian, and small std servers of the test's own), all on
//! loopback. Each test has its own addresses, 127.84.T.0/24 (T: the test's number), so the
//! tests run in parallel without racing for ports: .1 is where the forward listens, .2 the
//! server, .3 and up the clients. Checked as a user would see it: bytes that arrive, a
//! reset that comes at once, what stderr, `who`, `--list` and `/metrics` say.
//!
//! Prerequisites (scripts/test.sh installs them): curl, nginx (nginx-light) and dnsmasq
//! (dnsmasq-base); a test without its program says so and returns, under CI=true it fails.

mod common;

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use common::servers::{
    accept_within, connect_from, free_tcp_port, free_udp_port, listen_tcp, raise_nofile, Daemon,
    Dnsmasq, Echo, Nginx, Scratch, DNSMASQ, NGINX,
};
use common::{portolan, wait_for, Listen, Py, BIN};
use portolan_testsupport::{all, program, skip_unless};
use rustix::process::Signal;

/// 127.84.T.H: host H of test T's addresses.
fn ip(t: u8, h: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 84, t, h)
}

/// A socket address on test T's host H, on a free port.
fn free_addr(t: u8, h: u8) -> SocketAddr {
    SocketAddr::from((ip(t, h), free_tcp_port(ip(t, h))))
}

/// `N` socket addresses on test T's host H, on distinct free ports.
fn free_addrs<const N: usize>(t: u8, h: u8) -> [SocketAddr; N] {
    // All held at once, so that the kernel cannot hand out one port twice.
    let held: Vec<_> = (0..N).map(|_| listen_tcp(ip(t, h), 0)).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("local_addr"))
}

/// How long a reset may take to arrive to count as "at once" (milliseconds when the
/// machine is idle; generous for a loaded one, and still far from a hang).
const PROMPT: Duration = Duration::from_secs(2);
/// How long a client waits for bytes that should come.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The forwarder

/// A running `portolan forward`; on drop, stopped with SIGTERM (so that it removes its
/// `who` registration), and killed with its process group if that is not enough.
struct Forward {
    d: Daemon,
}

impl Forward {
    /// Starts `portolan forward ARGS` and waits until it has printed its `listeners`
    /// listening lines (and, with `--metrics`, the metrics line).
    fn start(args: &[&str], listeners: usize) -> Forward {
        let mut cmd = Command::new(BIN);
        cmd.arg("forward").args(args).env_remove("NO_COLOR");
        let mut d = Daemon::spawn(cmd);
        let metrics = args.contains(&"--metrics");
        let up = d.wait_stderr(Duration::from_secs(20), |e| {
            bound_lines(e) >= listeners && (!metrics || e.contains("metrics at http://"))
        });
        assert!(
            up && d.running(),
            "`{}` did not start: {}",
            d.what(),
            d.stderr()
        );
        Forward { d }
    }

    fn stderr(&self) -> String {
        self.d.stderr()
    }

    /// Waits (bounded) until stderr has a line containing `want`.
    fn expect_line(&mut self, want: &str) {
        assert!(
            self.d
                .wait_stderr(Duration::from_secs(5), |e| e.contains(want)),
            "no line with {want:?} on stderr:\n{}",
            self.stderr()
        );
    }

    fn signal(&self, sig: Signal) {
        self.d.signal(sig);
    }

    /// Waits up to `timeout` for it to exit, failing otherwise; its exit code.
    fn exit_code(&mut self, timeout: Duration) -> i32 {
        let st = self.d.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "portolan forward still runs after {timeout:?}:\n{}",
                self.stderr()
            )
        });
        st.code()
            .unwrap_or_else(|| panic!("ended by a signal ({st}):\n{}", self.stderr()))
    }

    /// The metrics server's address, from its line on stderr.
    fn metrics_addr(&self) -> SocketAddr {
        let e = self.stderr();
        e.split("metrics at http://")
            .nth(1)
            .and_then(|r| r.split("/metrics").next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no metrics line in:\n{e}"))
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        // A signal rather than the kill, so that it removes its `who` registration.
        self.d.terminate(Duration::from_secs(1));
    }
}

/// The listening lines (`portolan forward: tcp ADDR -> TARGET`) in stderr; not the event
/// lines (`portolan forward: tcp PEER on RULE: ...`), whose rule name has an arrow too.
fn bound_lines(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| {
            (l.starts_with("portolan forward: tcp ") || l.starts_with("portolan forward: udp "))
                && l.contains(" -> ")
                && !l.contains(" on ")
        })
        .count()
}

// ---------------------------------------------------------------------------------------
// Clients

fn timeouts(s: &TcpStream) {
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
}

/// A connection from `src` to `dst`, its bytes echoed: `Some` when `msg` came back whole,
/// `None` when the connection was reset or closed instead.
fn echoed(src: Ipv4Addr, dst: SocketAddr, msg: &[u8]) -> Option<TcpStream> {
    let mut s = connect_from(IpAddr::V4(src), dst).ok()?;
    timeouts(&s);
    s.write_all(msg).ok()?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).ok()?;
    assert_eq!(back, msg, "echo through {dst} from {src}");
    Some(s)
}

/// Sends `msg` on `s` and expects it back whole.
fn roundtrip(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, msg);
}

/// Expects the peer of `s` to reset it at once: a read fails with ECONNRESET within
/// [`PROMPT`] (neither a hang nor a clean close).
fn expect_reset(mut s: TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut b = [0u8; 1];
    let r = s.read(&mut b);
    let took = start.elapsed();
    match r {
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected a reset, got {other:?} after {took:?}"),
    }
    assert!(took < PROMPT, "{what}: the reset took {took:?}");
}

/// `n` deterministic pseudo-random bytes (splitmix64 from `seed`).
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Fails unless `got` is `want` byte for byte, naming the first difference (not the bytes).
fn same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes, want {}; first difference at offset {at}",
        got.len(),
        want.len()
    );
}

fn curl(args: &[&str]) -> common::Run {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "30"]).args(args);
    common::run_cmd(cmd)
}

// ---------------------------------------------------------------------------------------
// HTTP and bulk bytes

#[test]
fn http_through_the_forward_curl_to_nginx() {
    const T: u8 = 1;
    if !skip_unless(all([program(NGINX), program("curl")])) {
        return;
    }
    let web = free_addr(T, 2);
    let nginx = Nginx::start(
        "forward-http",
        &format!("server {{ listen {web}; root {{dir}}/www; }}"),
        &[web],
    );
    let page = "hello through portolan forward\n";
    std::fs::write(nginx.dir.path("www/index.html"), page).unwrap();
    let listen = free_addr(T, 1);
    let _fwd = Forward::start(&[&listen.to_string(), &web.to_string()], 1);

    let r = curl(&["-i", &format!("http://{listen}/")]);
    r.expect_code(0);
    assert!(r.stdout.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.stdout);
    assert!(r.stdout.contains("\r\nServer: nginx"), "{}", r.stdout);
    assert!(
        r.stdout.ends_with(&format!("\r\n\r\n{page}")),
        "{}",
        r.stdout
    );
    // nginx's own 404 comes through as well.
    let r = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{listen}/nothing"),
    ]);
    assert_eq!(r.status.code(), Some(22), "curl --fail on a 404: {r:?}");
    assert_eq!(r.stdout, "404");
}

#[test]
fn a_64_mib_upload_and_download_arrive_byte_for_byte_with_and_without_splice() {
    const T: u8 = 2;
    if !skip_unless(all([program(NGINX), program("curl")])) {
        return;
    }
    let web = free_addr(T, 2);
    let nginx = Nginx::start(
        "forward-bulk",
        &format!(
            "server {{ listen {web}; root {{dir}}/www; dav_methods PUT; \
             create_full_put_path on; client_max_body_size 0; }}"
        ),
        &[web],
    );
    let work = Scratch::new("forward-bulk-client");
    let data = random_bytes(64 << 20, 0x5eed_f0d0);
    std::fs::write(work.path("up.bin"), &data).unwrap();
    let [splice, copy] = free_addrs(T, 1);
    let _a = Forward::start(&[&splice.to_string(), &web.to_string()], 1);
    let _b = Forward::start(&["--no-splice", &copy.to_string(), &web.to_string()], 1);
    for (listen, mode) in [(splice, "splice"), (copy, "copy")] {
        let url = format!("http://{listen}/data/{mode}.bin");
        let r = curl(&[
            "-T",
            &work.arg("up.bin"),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ]);
        r.expect_code(0);
        assert_eq!(r.stdout, "201", "PUT {url}");
        let stored = std::fs::read(nginx.dir.path(&format!("www/data/{mode}.bin"))).unwrap();
        same_bytes(
            &stored,
            &data,
            &format!("{mode}: what nginx stored of the upload"),
        );
        drop(stored);
        let down = work.arg(&format!("down-{mode}.bin"));
        curl(&["-o", &down, &url]).expect_code(0);
        let got = std::fs::read(&down).unwrap();
        same_bytes(&got, &data, &format!("{mode}: what curl downloaded"));
    }
}

// ---------------------------------------------------------------------------------------
// Half-close

#[test]
fn half_close_passes_through_both_ways() {
    const T: u8 = 3;
    let request = random_bytes(1 << 20, 1);
    let answer = random_bytes(3 << 20, 2);

    // The client closes its side first: the server reads to EOF, then answers in full.
    let server = listen_tcp(ip(T, 2), 0);
    let target = server.local_addr().unwrap();
    let listen = free_addr(T, 1);
    let _fwd = Forward::start(&[&listen.to_string(), &target.to_string()], 1);
    let ans = answer.clone();
    let srv = thread::spawn(move || {
        let mut c = accept_within(&server, IO_TIMEOUT);
        timeouts(&c);
        let mut got = Vec::new();
        c.read_to_end(&mut got).expect("server: read to EOF");
        c.write_all(&ans).expect("server: answer after EOF");
        (got, server)
    });
    let mut c = connect_from(IpAddr::V4(ip(T, 3)), listen).unwrap();
    timeouts(&c);
    c.write_all(&request).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got)
        .expect("client: the answer after its own half-close");
    same_bytes(
        &got,
        &answer,
        "the answer the client got after shutting down its side",
    );
    let (seen, server) = srv.join().expect("server thread");
    same_bytes(&seen, &request, "what the server read before EOF");

    // The server closes its side first: the client reads to EOF, then still sends.
    let req = request.clone();
    let srv = thread::spawn(move || {
        let mut c = accept_within(&server, IO_TIMEOUT);
        timeouts(&c);
        c.write_all(&req).expect("server: write");
        c.shutdown(Shutdown::Write)
            .expect("server: shut down its side");
        let mut got = Vec::new();
        c.read_to_end(&mut got)
            .expect("server: read after its half-close");
        got
    });
    let mut c = connect_from(IpAddr::V4(ip(T, 4)), listen).unwrap();
    timeouts(&c);
    let mut first = Vec::new();
    c.read_to_end(&mut first).expect("client: read to EOF");
    same_bytes(
        &first,
        &request,
        "what the client read before the server's EOF",
    );
    c.write_all(&answer)
        .expect("client: send after the server's EOF");
    drop(c);
    let seen = srv.join().expect("server thread");
    same_bytes(
        &seen,
        &answer,
        "what the server read after its own half-close",
    );
}

// ---------------------------------------------------------------------------------------
// Many connections

#[test]
fn a_thousand_concurrent_connections_each_echo_their_own_bytes() {
    const T: u8 = 4;
    const N: usize = 1000;
    let limit = raise_nofile(8192);
    assert!(
        limit >= 2 * N as u64 + 200,
        "the open-files limit is {limit}: 1000 connections need over 2000"
    );
    let echo = Echo::start(ip(T, 2), None);
    let listen = free_addr(T, 1);
    let _fwd = Forward::start(&[&listen.to_string(), &echo.addr.to_string()], 1);
    let payload = |i: usize| -> Vec<u8> {
        let mut p = format!("connection {i:04} of {N}:").into_bytes();
        p.extend(random_bytes(200 + i % 97, i as u64));
        p
    };
    let start = Instant::now();
    let mut conns = Vec::with_capacity(N);
    for i in 0..N {
        let src = ip(T, 3 + u8::try_from(i % 4).unwrap());
        let s =
            connect_from(IpAddr::V4(src), listen).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        timeouts(&s);
        conns.push(s);
    }
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&payload(i))
            .unwrap_or_else(|e| panic!("connection {i}: write: {e}"));
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let want = payload(i);
        let mut got = vec![0; want.len()];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("connection {i}: read: {e}"));
        assert_eq!(got, want, "connection {i} got another's bytes");
    }
    assert_eq!(
        echo.peak.load(Ordering::Relaxed),
        N,
        "the server should have had all {N} connections open at once"
    );
    drop(conns);
    assert!(
        wait_for(Duration::from_secs(10), || echo
            .open
            .load(Ordering::Relaxed)
            == 0),
        "the forwarder did not close the server's side of every connection"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// UDP: DNS

/// A DNS query (RD set) for `name`'s A record.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("label length"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// A name at `at` in `msg` (labels and compression pointers): the name and where the
/// bytes after it start.
fn dns_name(msg: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let mut labels = Vec::new();
    let mut after = None;
    for _ in 0..128 {
        let len = *msg.get(at).ok_or("truncated name")?;
        if len & 0xc0 == 0xc0 {
            let low = *msg.get(at + 1).ok_or("truncated pointer")?;
            after.get_or_insert(at + 2);
            at = (usize::from(len & 0x3f) << 8) | usize::from(low);
            continue;
        }
        if len == 0 {
            return Ok((labels.join("."), after.unwrap_or(at + 1)));
        }
        let l = msg
            .get(at + 1..at + 1 + usize::from(len))
            .ok_or("truncated label")?;
        labels.push(String::from_utf8_lossy(l).into_owned());
        at += 1 + usize::from(len);
    }
    Err("a name of too many labels or pointers".to_owned())
}

fn be16(msg: &[u8], at: usize) -> Result<u16, String> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| "truncated".to_owned())
}

/// A DNS answer: (id, the question's name, the A records' addresses).
fn dns_answer(msg: &[u8]) -> Result<(u16, String, Vec<Ipv4Addr>), String> {
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err("not a response".to_owned());
    }
    if flags & 0x000f != 0 {
        return Err(format!("rcode {}", flags & 0x000f));
    }
    let (qd, an) = (be16(msg, 4)?, be16(msg, 6)?);
    if qd != 1 {
        return Err(format!("{qd} questions"));
    }
    let (qname, mut at) = dns_name(msg, 12)?;
    at += 4;
    let mut addrs = Vec::new();
    for _ in 0..an {
        let (_, next) = dns_name(msg, at)?;
        let (ty, len) = (be16(msg, next)?, usize::from(be16(msg, next + 8)?));
        let data = msg
            .get(next + 10..next + 10 + len)
            .ok_or("truncated rdata")?;
        if ty == 1 && len == 4 {
            addrs.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at = next + 10 + len;
    }
    Ok((id, qname, addrs))
}

/// Queries `name` at `server` from a fresh socket on `src`, up to three tries.
fn dns_ask(src: Ipv4Addr, server: SocketAddr, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let s = UdpSocket::bind((src, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.connect(server).unwrap();
    let mut buf = [0u8; 1500];
    let mut last = String::new();
    for _ in 0..3 {
        s.send(&dns_query(0x4242, name))
            .map_err(|e| e.to_string())?;
        match s.recv(&mut buf) {
            Ok(n) => {
                let (id, qname, addrs) = dns_answer(&buf[..n])?;
                if id == 0x4242 && qname == name {
                    return Ok(addrs);
                }
                last = format!("an answer for {qname} (id {id})");
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[test]
fn udp_dns_through_the_forward_answers_200_concurrent_clients() {
    const T: u8 = 5;
    const N: usize = 200;
    if !skip_unless(program(DNSMASQ)) {
        return;
    }
    let dns = SocketAddr::from((ip(T, 2), free_udp_port(ip(T, 2))));
    let answers: Vec<String> = (1..=N)
        .map(|n| format!("--address=/name{n}.test/198.18.85.{n}"))
        .collect();
    let _dnsmasq = Dnsmasq::start("forward-dns", ip(T, 2), dns.port(), &answers);
    assert_eq!(
        dns_ask(ip(T, 3), dns, "name7.test"),
        Ok(vec![Ipv4Addr::new(198, 18, 85, 7)]),
        "dnsmasq answers directly"
    );
    let listen = SocketAddr::from((ip(T, 1), free_udp_port(ip(T, 1))));
    let _fwd = Forward::start(&["--udp", &listen.to_string(), &dns.to_string()], 1);

    // 200 clients, each its own socket (its own session), all asking at once; a client
    // without an answer asks again after a while, three times at most.
    let clients: Vec<UdpSocket> = (0..N)
        .map(|i| {
            let s = UdpSocket::bind((ip(T, 3 + u8::try_from(i % 2).unwrap()), 0)).unwrap();
            s.connect(listen).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let id = |i: usize| 0x1000 + u16::try_from(i).unwrap();
    let name = |i: usize| format!("name{}.test", i + 1);
    let mut got: Vec<Option<Vec<Ipv4Addr>>> = vec![None; N];
    let mut errors: Vec<String> = Vec::new();
    let mut buf = [0u8; 1500];
    for _round in 0..3 {
        for (i, s) in clients.iter().enumerate() {
            if got[i].is_none() {
                let _ = s.send(&dns_query(id(i), &name(i)));
            }
        }
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until && got.iter().any(Option::is_none) {
            for (i, s) in clients.iter().enumerate() {
                if got[i].is_some() {
                    continue;
                }
                match s.recv(&mut buf) {
                    Ok(n) => match dns_answer(&buf[..n]) {
                        Ok((rid, q, addrs)) if rid == id(i) && q == name(i) => got[i] = Some(addrs),
                        Ok((rid, q, _)) => {
                            errors.push(format!("client {i} got the answer for {q} (id {rid})"));
                        }
                        Err(e) => errors.push(format!("client {i}: bad answer: {e}")),
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => errors.push(format!("client {i}: {e}")),
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(errors.is_empty(), "{errors:?}");
    let answered = got.iter().filter(|g| g.is_some()).count();
    assert_eq!(
        answered, N,
        "{answered} of {N} clients got an answer through the forward"
    );
    for (i, g) in got.iter().enumerate() {
        let want = Ipv4Addr::new(198, 18, 85, u8::try_from(i + 1).unwrap());
        assert_eq!(g.as_deref(), Some(&[want][..]), "client {i} ({})", name(i));
    }
}

// ---------------------------------------------------------------------------------------
// Who may connect, and how many

#[test]
fn allow_lets_the_listed_source_through_and_resets_others_at_once() {
    const T: u8 = 6;
    let echo = Echo::start(ip(T, 2), None);
    let listen = free_addr(T, 1);
    let mut fwd = Forward::start(
        &[
            "--allow",
            &format!("{}/32", ip(T, 3)),
            "--allow",
            "198.18.84.0/22",
            &listen.to_string(),
            &echo.addr.to_string(),
        ],
        1,
    );
    let ok = echoed(ip(T, 3), listen, b"from an allowed address");
    assert!(ok.is_some(), "{} is allowed: {}", ip(T, 3), fwd.stderr());
    let refused = connect_from(IpAddr::V4(ip(T, 4)), listen).unwrap();
    let port = refused.local_addr().unwrap().port();
    expect_reset(refused, "a source outside --allow");
    fwd.expect_line(&format!("refused tcp {}:{port} on ", ip(T, 4)));
    let line = fwd
        .stderr()
        .lines()
        .find(|l| l.contains(&format!("{}:{port}", ip(T, 4))))
        .unwrap()
        .to_owned();
    assert!(line.ends_with(": not allowed"), "{line}");
    assert_eq!(
        echo.accepted.load(Ordering::Relaxed),
        1,
        "the refused one never reached the server"
    );
}

#[test]
fn max_conns_resets_the_one_too_many_until_one_closes() {
    const T: u8 = 7;
    let echo = Echo::start(ip(T, 2), None);
    let listen = free_addr(T, 1);
    let mut fwd = Forward::start(
        &[
            "--max-conns",
            "2",
            &listen.to_string(),
            &echo.addr.to_string(),
        ],
        1,
    );
    let a = echoed(ip(T, 3), listen, b"first").expect("first connection");
    let b = echoed(ip(T, 4), listen, b"second").expect("second connection");
    let third = connect_from(IpAddr::V4(ip(T, 5)), listen).unwrap();
    expect_reset(third, "the third connection with --max-conns 2");
    fwd.expect_line(&format!("refused tcp {}:", ip(T, 5)));
    assert!(fwd.stderr().contains("max conns"), "{}", fwd.stderr());
    drop(a);
    // The place comes back once the forwarder has seen the close (both directions end).
    assert!(
        wait_for(Duration::from_secs(3), || echoed(
            ip(T, 5),
            listen,
            b"again"
        )
        .is_some()),
        "after one closed, a new connection should get through:\n{}",
        fwd.stderr()
    );
    drop(b);
}

#[test]
fn max_conns_per_source_counts_each_source_apart() {
    const T: u8 = 8;
    let echo = Echo::start(ip(T, 2), None);
    let listen = free_addr(T, 1);
    let mut fwd = Forward::start(
        &[
            "--max-conns-per-source",
            "2",
            &listen.to_string(),
            &echo.addr.to_string(),
        ],
        1,
    );
    let a1 = echoed(ip(T, 3), listen, b"a1").expect("first from a");
    let a2 = echoed(ip(T, 3), listen, b"a2").expect("second from a");
    let a3 = connect_from(IpAddr::V4(ip(T, 3)), listen).unwrap();
    expect_reset(
        a3,
        "a third connection from one source with --max-conns-per-source 2",
    );
    fwd.expect_line("max conns per source");
    let b1 = echoed(ip(T, 4), listen, b"b1").expect("another source has its own count");
    drop(a1);
    assert!(
        wait_for(Duration::from_secs(3), || echoed(
            ip(T, 3),
            listen,
            b"a again"
        )
        .is_some()),
        "after one closed, the source should get a new connection:\n{}",
        fwd.stderr()
    );
    drop((a2, b1));
}

// ---------------------------------------------------------------------------------------
// PROXY protocol

#[test]
fn nginx_reads_the_client_address_from_proxy_v1_and_v2() {
    const T: u8 = 9;
    if !skip_unless(program(NGINX)) {
        return;
    }
    let web = free_addr(T, 2);
    let _nginx = Nginx::start(
        "forward-proxy",
        &format!(
            "server {{ listen {web} proxy_protocol; \
             return 200 \"$proxy_protocol_addr:$proxy_protocol_port \
             $proxy_protocol_server_addr:$proxy_protocol_server_port\\n\"; }}"
        ),
        &[web],
    );
    let [v1, v2] = free_addrs(T, 1);
    let work = Scratch::new("forward-proxy-config");
    std::fs::write(
        work.path("forward.toml"),
        format!(
            "[[forward]]\nname = \"v1\"\nlisten = \"{v1}\"\ntarget = \"{web}\"\nproxy_protocol = \"v1\"\n\
             [[forward]]\nname = \"v2\"\nlisten = \"{v2}\"\ntarget = \"{web}\"\nproxy_protocol = \"v2\"\n"
        ),
    )
    .unwrap();
    let _fwd = Forward::start(&["--config", &work.arg("forward.toml")], 2);
    for (listen, client) in [(v1, ip(T, 7)), (v2, ip(T, 8))] {
        let mut s = connect_from(IpAddr::V4(client), listen).unwrap();
        let port = s.local_addr().unwrap().port();
        timeouts(&s);
        write!(s, "GET / HTTP/1.0\r\nHost: forward.test\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(
            text.ends_with(&format!("\r\n\r\n{client}:{port} {listen}\n")),
            "through {listen}, nginx should see the client {client}:{port} arriving at {listen}:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Failures

#[test]
fn a_target_that_refuses_resets_the_client_promptly_and_says_so() {
    const T: u8 = 10;
    let closed = free_addr(T, 2);
    let listen = free_addr(T, 1);
    let mut fwd = Forward::start(
        &[
            "--connect-timeout",
            "10s",
            &listen.to_string(),
            &closed.to_string(),
        ],
        1,
    );
    let s = connect_from(IpAddr::V4(ip(T, 3)), listen).unwrap();
    let port = s.local_addr().unwrap().port();
    expect_reset(s, "a forward to a closed port");
    fwd.expect_line(&format!(
        "tcp {}:{port} on {listen} -> {closed}: target {closed} failed: ",
        ip(T, 3)
    ));
    let e = fwd.stderr();
    let line = e.lines().find(|l| l.contains("failed: ")).unwrap();
    assert!(
        line.contains("refused") && line.ends_with("(client reset)"),
        "{line}"
    );
}

#[test]
fn a_port_in_use_is_an_error_naming_its_holder() {
    const T: u8 = 11;
    if !skip_unless(program("python3")) {
        return;
    }
    let comm = common::unique_comm();
    let addr = ip(T, 1).to_string();
    let holder = Py::listen(Listen {
        comm: Some(&comm),
        ..Listen::tcp(&addr)
    });
    let r = portolan(&[
        "forward",
        &format!("{addr}:{}", holder.port),
        &format!("{}:80", ip(T, 2)),
    ]);
    assert_ne!(r.code(), 0, "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let want = format!(
        "tcp {addr}:{} is already in use: held by {comm} (pid {}) on {addr}:{}",
        holder.port, holder.pid, holder.port
    );
    assert!(r.stderr.contains(&want), "want {want:?} in:\n{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// Reload and drain

fn write_config(path: &std::path::Path, text: &str) {
    // Whole or not at all, as an editor that renames would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn rule(name: &str, listen: SocketAddr, target: SocketAddr) -> String {
    format!("[[forward]]\nname = \"{name}\"\nlisten = \"{listen}\"\ntarget = \"{target}\"\n")
}

/// Connects from `src` to `dst` and reads the server's banner line.
fn banner(src: Ipv4Addr, dst: SocketAddr) -> Result<(String, TcpStream), io::Error> {
    let mut s = connect_from(IpAddr::V4(src), dst)?;
    timeouts(&s);
    let mut b = [0u8; 2];
    s.read_exact(&mut b)?;
    Ok((String::from_utf8_lossy(&b).into_owned(), s))
}

#[test]
fn reload_on_sighup_moves_new_connections_and_keeps_established_ones() {
    const T: u8 = 12;
    let old = Echo::start(ip(T, 2), Some(b"X\n"));
    let new = Echo::start(ip(T, 2), Some(b"Y\n"));
    let [rule_a, rule_b, rule_c] = free_addrs(T, 1);
    let work = Scratch::new("forward-reload");
    let conf = work.path("forward.toml");
    write_config(
        &conf,
        &(rule("a", rule_a, old.addr) + &rule("b", rule_b, old.addr)),
    );
    let mut fwd = Forward::start(&["--config", conf.to_str().unwrap()], 2);

    let (seen, mut held) = banner(ip(T, 3), rule_a).expect("rule a");
    assert_eq!(seen, "X\n");
    roundtrip(&mut held, b"before the reload");
    assert_eq!(banner(ip(T, 3), rule_b).expect("rule b").0, "X\n");

    write_config(
        &conf,
        &(rule("a", rule_a, new.addr) + &rule("c", rule_c, old.addr)),
    );
    fwd.signal(Signal::HUP);
    fwd.expect_line("reloaded: 1 added, 1 removed, 1 changed, 0 unchanged");

    roundtrip(&mut held, b"the established connection goes on");
    assert_eq!(
        banner(ip(T, 3), rule_a).expect("rule a after").0,
        "Y\n",
        "a's new target"
    );
    match connect_from(IpAddr::V4(ip(T, 3)), rule_b) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("rule b was removed: its port should be closed, got {other:?}"),
    }
    assert_eq!(
        banner(ip(T, 3), rule_c).expect("rule c").0,
        "X\n",
        "the added rule"
    );
    roundtrip(&mut held, b"still");
    assert_eq!(new.accepted.load(Ordering::Relaxed), 1);
}

/// Polls until a connection to `dst` is refused (the listener closed), at most `timeout`.
fn refused_within(src: Ipv4Addr, dst: SocketAddr, timeout: Duration) -> bool {
    wait_for(timeout, || {
        matches!(connect_from(IpAddr::V4(src), dst),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    })
}

#[test]
fn sigterm_drains_open_connections_then_exits_zero() {
    const T: u8 = 13;
    let echo = Echo::start(ip(T, 2), None);
    let listen = free_addr(T, 1);
    let mut fwd = Forward::start(
        &[
            "--drain-timeout",
            "20s",
            &listen.to_string(),
            &echo.addr.to_string(),
        ],
        1,
    );
    let mut open = echoed(ip(T, 3), listen, b"open").expect("a connection");
    let sent = Instant::now();
    fwd.signal(Signal::TERM);
    fwd.expect_line("stopped accepting; draining 1 open connection(s)");
    assert!(
        refused_within(ip(T, 4), listen, Duration::from_secs(3)),
        "the listener should close at once"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "{:?}",
        sent.elapsed()
    );
    for i in 0..3 {
        roundtrip(&mut open, format!("draining {i}").as_bytes());
        thread::sleep(Duration::from_millis(100));
    }
    assert!(fwd.d.running(), "it waits for the open connection");
    drop(open);
    assert_eq!(
        fwd.exit_code(Duration::from_secs(10)),
        0,
        "{}",
        fwd.stderr()
    );
    assert!(
        fwd.stderr().lines().last() == Some("portolan forward: stopped"),
        "{}",
        fwd.stderr()
    );
}

#[test]
fn a_second_sigterm_or_the_drain_timeout_stops_at_once() {
    const T: u8 = 14;
    let echo = Echo::start(ip(T, 2), None);

    // A second signal: no waiting for the 30 s drain.
    let listen = free_addr(T, 1);
    let mut fwd = Forward::start(&[&listen.to_string(), &echo.addr.to_string()], 1);
    let open = echoed(ip(T, 3), listen, b"open").expect("a connection");
    fwd.signal(Signal::TERM);
    fwd.expect_line("draining 1 open connection(s) for up to 30 s");
    let second = Instant::now();
    fwd.signal(Signal::TERM);
    let code = fwd.exit_code(Duration::from_secs(10));
    assert!(
        second.elapsed() < Duration::from_secs(5),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(code, 0, "{}", fwd.stderr());
    assert!(
        fwd.stderr()
            .contains("stopped with 1 connection(s) still open"),
        "{}",
        fwd.stderr()
    );
    // The open connection is cut, with a reset as the line says: a clean close (FIN)
    // would pass for the end of the exchange, to the client and to the server.
    expect_reset(open, "a connection cut by the second SIGTERM");

    // --drain-timeout: exits when it passes.
    let listen = free_addr(T, 1);
    let mut fwd = Forward::start(
        &[
            "--drain-timeout",
            "1s",
            &listen.to_string(),
            &echo.addr.to_string(),
        ],
        1,
    );
    let open = echoed(ip(T, 3), listen, b"open").expect("a connection");
    let sent = Instant::now();
    fwd.signal(Signal::TERM);
    assert_eq!(
        fwd.exit_code(Duration::from_secs(10)),
        0,
        "{}",
        fwd.stderr()
    );
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "--drain-timeout 1s took {took:?}"
    );
    expect_reset(open, "a connection cut by --drain-timeout");
}

#[test]
fn sigterm_right_after_the_listening_line_is_a_clean_stop() {
    const T: u8 = 19;
    // Whoever starts it may signal as soon as it has read the line: the handlers must be in
    // place by then (the default action would kill it). Ten times, as it is a race.
    for i in 0..10 {
        let listen = free_addr(T, 1);
        let mut fwd = Forward::start(&[&listen.to_string(), &free_addr(T, 2).to_string()], 1);
        fwd.signal(Signal::TERM);
        assert_eq!(
            fwd.exit_code(Duration::from_secs(10)),
            0,
            "run {i}: {}",
            fwd.stderr()
        );
    }
}

// ---------------------------------------------------------------------------------------
// What it tells

#[test]
fn who_and_list_name_the_forward() {
    const T: u8 = 15;
    let listen = free_addr(T, 1);
    let target = free_addr(T, 2);
    let fwd = Forward::start(&[&listen.to_string(), &target.to_string()], 1);
    let pid = fwd.d.pid();

    let r = portolan(&["who", &listen.port().to_string()]);
    r.expect_code(0);
    let want = format!("portolan forward -> {target} (pid {pid})");
    assert!(r.stdout.contains(&want), "want {want:?} in:\n{}", r.stdout);

    let doc = common::portolan_json(&["forward", "--list", "--json"]);
    let rows = doc["forwards"].as_array().expect("forwards array");
    let ours: Vec<_> = rows
        .iter()
        .filter(|f| f["listen"] == listen.to_string().as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{doc}");
    let f = ours[0];
    assert_eq!(f["kind"], "process");
    assert_eq!(f["proto"], "tcp");
    assert_eq!(f["target"], target.to_string().as_str());
    assert_eq!(f["pid"], u64::from(pid));
    assert_eq!(
        f["rule"],
        format!("{listen} -> {target}").as_str(),
        "the default rule name"
    );
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to metrics");
    timeouts(&s);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn metrics_count_connections_and_exact_bytes() {
    const T: u8 = 16;
    const UP: usize = 100_000;
    const DOWN: usize = 234_567;
    let server = listen_tcp(ip(T, 2), 0);
    let target = server.local_addr().unwrap();
    let [listen, metrics] = free_addrs(T, 1);
    let fwd = Forward::start(
        &[
            "--metrics",
            &metrics.to_string(),
            &listen.to_string(),
            &target.to_string(),
        ],
        1,
    );
    assert_eq!(fwd.metrics_addr(), metrics);
    let srv = thread::spawn(move || {
        let mut c = accept_within(&server, IO_TIMEOUT);
        timeouts(&c);
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        c.write_all(&random_bytes(DOWN, 4)).unwrap();
        got.len()
    });
    let mut c = connect_from(IpAddr::V4(ip(T, 3)), listen).unwrap();
    timeouts(&c);
    c.write_all(&random_bytes(UP, 3)).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), DOWN);
    assert_eq!(srv.join().unwrap(), UP);
    drop(c);

    let rule = format!("rule=\"{listen} -> {target}\",proto=\"tcp\"");
    let want = [
        format!("portolan_forward_connections_total{{{rule},result=\"accepted\"}} 1"),
        format!("portolan_forward_connections_total{{{rule},result=\"not_allowed\"}} 0"),
        format!("portolan_forward_bytes_total{{{rule},direction=\"up\"}} {UP}"),
        format!("portolan_forward_bytes_total{{{rule},direction=\"down\"}} {DOWN}"),
        format!("portolan_forward_active{{{rule}}} 0"),
    ];
    let mut page = String::new();
    let all_there = wait_for(Duration::from_secs(3), || {
        page = http_get(metrics, "/metrics");
        want.iter().all(|w| page.lines().any(|l| l == w))
    });
    assert!(all_there, "want {want:#?} in:\n{page}");
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    const T: u8 = 17;
    let echo = Echo::start(ip(T, 2), None);
    let listen = free_addr(T, 1);
    let _fwd = Forward::start(
        &[
            "--idle-timeout",
            "1s",
            &listen.to_string(),
            &echo.addr.to_string(),
        ],
        1,
    );
    // A connection that talks every 300 ms outlives the timeout; an idle one is closed
    // about a second after its last byte.
    let mut busy = echoed(ip(T, 3), listen, b"busy").expect("a connection");
    let mut idle = echoed(ip(T, 4), listen, b"idle").expect("a connection");
    let last_byte = Instant::now();
    let waiter = thread::spawn(move || {
        idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        let r = idle.read(&mut b).map_err(|e| e.kind());
        (r, last_byte.elapsed())
    });
    for i in 0..7 {
        thread::sleep(Duration::from_millis(300));
        roundtrip(&mut busy, format!("tick {i}").as_bytes());
    }
    let (r, took) = waiter.join().expect("the idle connection's reader");
    assert!(
        matches!(r, Ok(0) | Err(io::ErrorKind::ConnectionReset)),
        "the idle connection should be closed, got {r:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed {took:?} after its last byte with --idle-timeout 1s"
    );
}

#[test]
fn control_characters_in_rules_are_refused_and_never_printed_raw() {
    const T: u8 = 18;
    let work = Scratch::new("forward-escape");
    let listen = free_addr(T, 1);
    let clean = |r: &common::Run| {
        assert!(
            !r.stdout.contains('\u{1b}') && !r.stderr.contains('\u{1b}'),
            "a raw ESC in the output: {r:?}"
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    };

    // A rule name with ESC (written as a TOML escape): refused, and named escaped.
    let conf = work.path("escaped.toml");
    std::fs::write(
        &conf,
        format!(
            "[[forward]]\nname = \"web\\u001b[31mred\"\nlisten = \"{listen}\"\ntarget = \"{}:80\"\n",
            ip(T, 2)
        ),
    )
    .unwrap();
    let r = portolan(&["forward", "--config", conf.to_str().unwrap()]);
    r.expect_code(2);
    clean(&r);
    assert!(
        r.stderr
            .contains("rule web\\x1b[31mred ([[forward]] number 1): name: 1 to 100 characters, no control characters"),
        "{}",
        r.stderr
    );

    // A raw ESC byte in the file: TOML refuses it, with the line.
    let raw = work.path("raw.toml");
    std::fs::write(
        &raw,
        format!(
            "[[forward]]\nname = \"web\u{1b}[2J\"\nlisten = \"{listen}\"\ntarget = \"{}:80\"\n",
            ip(T, 2)
        ),
    )
    .unwrap();
    let r = portolan(&["forward", "--config", raw.to_str().unwrap()]);
    r.expect_code(2);
    clean(&r);
    assert!(r.stderr.contains("line 2"), "{}", r.stderr);

    // On the command line: a target with ESC and BEL.
    let r = portolan(&["forward", &listen.to_string(), "\u{1b}[31mevil\u{7}:80"]);
    r.expect_code(2);
    clean(&r);
    assert!(!r.stderr.contains('\u{7}'), "{}", r.stderr);
    assert!(r.stderr.contains("\\x1b[31mevil\\x07:80"), "{}", r.stderr);

    // A reload to such a file is refused, and the rules that run go on.
    let echo = Echo::start(ip(T, 2), None);
    let good = work.path("good.toml");
    write_config(&good, &rule("web", listen, echo.addr));
    let mut fwd = Forward::start(&["--config", good.to_str().unwrap()], 1);
    std::fs::copy(&conf, &good).unwrap();
    fwd.signal(Signal::HUP);
    fwd.expect_line("reload refused, the rules that run go on");
    assert!(!fwd.stderr().contains('\u{1b}'), "{}", fwd.stderr());
    assert!(echoed(ip(T, 3), listen, b"still forwarding").is_some());
}
