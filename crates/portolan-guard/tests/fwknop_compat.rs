//! fwknop compatibility against the real programs (Debian's fwknop-client and
//! fwknop-server 2.6.10):
//!
//! - packets the real `fwknop` client makes decode with [`fwknop::decode`] (no root: the
//!   client writes them with `--save-packet` under `--test`, or sends them to a loopback
//!   UDP socket of the test's);
//! - packets [`fwknop::encode`] makes open a port on the real `fwknopd` (root: two network
//!   namespaces joined by a veth, 198.18.0.1 the server, 198.18.0.2 the client).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portolan_guard::fwknop::{self, FwknopKey};
use portolan_guard::{PortProto, Rejection};
use portolan_testsupport::{all, program, skip_unless, Netns};

/// A directory of the test's own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "portolan-fwknop-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempDir(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop, also when the test fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The base64 keys `fwknop --key-gen` printed.
struct GenKeys {
    key: String,
    hmac: String,
}

impl GenKeys {
    fn for_client(&self, client: &str) -> FwknopKey {
        FwknopKey::from_base64(client, &self.key, &self.hmac).expect("fwknop --key-gen's keys")
    }
}

/// `fwknop --key-gen` with `home` as HOME (it writes its rc file there).
fn key_gen(home: &Path) -> GenKeys {
    let out = Command::new("fwknop")
        .arg("--key-gen")
        .env("HOME", home)
        .output()
        .expect("run fwknop --key-gen");
    assert!(out.status.success(), "fwknop --key-gen: {out:?}");
    let text = String::from_utf8(out.stdout).expect("UTF-8 keys");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or_else(|| panic!("no {name} in {text:?}"), |v| v.trim().to_owned())
    };
    GenKeys {
        key: field("KEY_BASE64:"),
        hmac: field("HMAC_KEY_BASE64:"),
    }
}

/// Runs the real client with the keys and `args`, HOME in `home`; its exit checked.
fn run_fwknop(home: &Path, keys: &GenKeys, args: &[&str]) -> std::process::Output {
    let out = Command::new("fwknop")
        .args(["--use-hmac", "-U", "tester"])
        .arg(format!("--key-base64-rijndael={}", keys.key))
        .arg(format!("--key-base64-hmac={}", keys.hmac))
        .args(args)
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run fwknop");
    assert!(
        out.status.success(),
        "fwknop {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The packet the real client makes for `args`, written with `--save-packet` in test
/// mode (made, not sent).
fn client_packet(dir: &TempDir, keys: &GenKeys, args: &[&str]) -> Vec<u8> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let file = dir.join(&format!("packet-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let file_arg = format!("--save-packet={}", file.display());
    let mut all_args = vec!["-D", "127.0.0.1", "--test", &file_arg];
    all_args.extend_from_slice(args);
    run_fwknop(&dir.0, keys, &all_args);
    let mut packet = std::fs::read(&file).expect("the saved packet");
    // The file holds the packet and a newline.
    while packet.last().is_some_and(u8::is_ascii_whitespace) {
        packet.pop();
    }
    packet
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("a clock before 2^63")
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

#[test]
fn the_real_clients_packets_decode() {
    if !skip_unless(program("fwknop")) {
        return;
    }
    let dir = TempDir::new("client");
    let keys = key_gen(&dir.0);
    let ours = [
        FwknopKey::from_base64("bob", &key_gen(&dir.0).key, &key_gen(&dir.0).hmac).unwrap(),
        keys.for_client("alice"),
    ];

    let p = client_packet(&dir, &keys, &["-A", "tcp/22", "-a", "198.18.0.2"]);
    let r = fwknop::decode(&p, &ours).expect("-A tcp/22 -a 198.18.0.2");
    assert_eq!(r.client, "alice");
    assert_eq!(r.open_for, Some(addr("198.18.0.2")));
    assert_eq!(r.ports, vec![PortProto::tcp(22)]);
    assert_eq!(r.duration, None);
    assert!(
        (r.timestamp - now()).abs() < 60,
        "timestamp {}",
        r.timestamp
    );

    let p = client_packet(
        &dir,
        &keys,
        &["-A", "tcp/22,udp/53,tcp/8443", "-a", "198.18.0.3"],
    );
    let r = fwknop::decode(&p, &ours).expect("several ports");
    assert_eq!(r.open_for, Some(addr("198.18.0.3")));
    assert_eq!(
        r.ports,
        vec![PortProto::tcp(22), PortProto::udp(53), PortProto::tcp(8443)]
    );

    // -s: fwknop writes 0.0.0.0, "the packet's source".
    let p = client_packet(&dir, &keys, &["-A", "tcp/22", "-s"]);
    let r = fwknop::decode(&p, &ours).expect("-s");
    assert_eq!(r.open_for, None);

    // --fw-timeout: message type 3, the timeout after the message.
    let p = client_packet(
        &dir,
        &keys,
        &["-A", "udp/1194", "-a", "198.18.0.4", "--fw-timeout", "45"],
    );
    let r = fwknop::decode(&p, &ours).expect("--fw-timeout 45");
    assert_eq!(r.duration, Some(Duration::from_secs(45)));
    assert_eq!(r.ports, vec![PortProto::udp(1194)]);
    assert_eq!(r.open_for, Some(addr("198.18.0.4")));

    // The other digests fwknop's -m offers; SHA3 is not spoken.
    for digest in ["md5", "sha1", "sha256", "sha384", "sha512"] {
        let p = client_packet(&dir, &keys, &["-A", "tcp/22", "-s", "-m", digest]);
        let r = fwknop::decode(&p, &ours).unwrap_or_else(|e| panic!("-m {digest}: {e:?}"));
        assert_eq!(r.ports, vec![PortProto::tcp(22)], "-m {digest}");
    }
    for digest in ["sha3_256", "sha3_512"] {
        let p = client_packet(&dir, &keys, &["-A", "tcp/22", "-s", "-m", digest]);
        assert_eq!(
            fwknop::decode(&p, &ours),
            Err(Rejection::BadMac),
            "-m {digest}"
        );
    }

    // Each packet is unique (random digits and salt): different replay keys.
    let a = client_packet(&dir, &keys, &["-A", "tcp/22", "-s"]);
    let b = client_packet(&dir, &keys, &["-A", "tcp/22", "-s"]);
    assert_ne!(
        fwknop::decode(&a, &ours).unwrap().replay_key,
        fwknop::decode(&b, &ours).unwrap().replay_key
    );

    // Another client's keys, or none, refuse it.
    assert_eq!(fwknop::decode(&a, &ours[..1]), Err(Rejection::BadMac));
    assert_eq!(fwknop::decode(&a, &[]), Err(Rejection::BadMac));
}

#[test]
fn the_real_clients_datagram_decodes() {
    if !skip_unless(program("fwknop")) {
        return;
    }
    let dir = TempDir::new("udp");
    let keys = key_gen(&dir.0);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let port = sock.local_addr().expect("its address").port().to_string();
    let saved = dir.join("sent");
    let saved_arg = format!("--save-packet={}", saved.display());
    run_fwknop(
        &dir.0,
        &keys,
        &[
            "-D",
            "127.0.0.1",
            "--server-port",
            &port,
            "-A",
            "tcp/22,tcp/443",
            "-a",
            "198.18.0.5",
            &saved_arg,
        ],
    );
    let mut buf = [0_u8; 2048];
    let (n, from) = sock.recv_from(&mut buf).expect("fwknop's datagram");
    assert!(from.ip().is_loopback());
    let datagram = &buf[..n];
    let r = fwknop::decode(datagram, &[keys.for_client("carol")]).expect("the datagram");
    assert_eq!(r.client, "carol");
    assert_eq!(r.open_for, Some(addr("198.18.0.5")));
    assert_eq!(r.ports, vec![PortProto::tcp(22), PortProto::tcp(443)]);
    // The wire carries exactly what --save-packet writes, without its newline.
    let file = std::fs::read(&saved).expect("the saved packet");
    assert_eq!(file.trim_ascii_end(), datagram);
}

/// `-R`: the client asks a web service for its address. Here the service is the test's
/// own, on loopback.
#[test]
fn the_real_clients_resolved_address_decodes() {
    if !skip_unless(program("fwknop")) {
        return;
    }
    let dir = TempDir::new("resolve");
    let keys = key_gen(&dir.0);
    // fwknop 2.6.10 mis-parses five-digit ports in --resolve-url (it keeps four digits and
    // leaves a colon on the host name): take a free four-digit port.
    let start = 8000 + u16::try_from(std::process::id() % 1000).expect("< 1000");
    let listener = (start..=9999)
        .chain(8000..start)
        .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok())
        .expect("a free loopback port between 8000 and 9999");
    let port = listener.local_addr().expect("its address").port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("fwknop's request");
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut req = [0_u8; 1024];
        let n = conn.read(&mut req).unwrap_or(0);
        let body = "198.18.7.7\n";
        let _ = write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        String::from_utf8_lossy(&req[..n]).into_owned()
    });
    let url = format!("--resolve-url=http://127.0.0.1:{port}/");
    let p = client_packet(
        &dir,
        &keys,
        &["-A", "tcp/22", "-R", &url, "--resolve-http-only"],
    );
    let request = server.join().expect("the resolver thread");
    assert!(request.starts_with("GET / "), "{request:?}");
    let r = fwknop::decode(&p, &[keys.for_client("dave")]).expect("-R");
    assert_eq!(r.open_for, Some(addr("198.18.7.7")));
}

/// The server side of the root test: fwknopd in its own namespace behind a veth.
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GUARDED: u16 = 2222;
const GUARDED_AS_SEEN: u16 = 2223;
const SPA_PORT: u16 = 62201;

/// Whether a TCP connection from the client namespace to `port` on the server completes
/// within `wait` (tried again until then).
fn connects(client: &Netns, port: u16, wait: Duration) -> bool {
    let to = SocketAddr::V4(SocketAddrV4::new(SERVER, port));
    let deadline = Instant::now() + wait;
    client.run_in(|| loop {
        if TcpStream::connect_timeout(&to, Duration::from_millis(400)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    })
}

fn send_from_client(client: &Netns, datagram: &[u8]) {
    client.run_in(|| {
        let s = UdpSocket::bind(SocketAddrV4::new(CLIENT, 0)).expect("bind in the client");
        s.send_to(datagram, SocketAddrV4::new(SERVER, SPA_PORT))
            .expect("send the SPA datagram");
    });
}

fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Waits up to `wait` for `needle` in fwknopd's log; false if fwknopd exited or it never
/// came.
fn log_shows(log: &Path, fwknopd: &mut KillOnDrop, needle: &str, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if read_log(log).contains(needle) {
            return true;
        }
        if Instant::now() >= deadline || matches!(fwknopd.0.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_ok(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fwknopd_opens_a_port_for_our_packet() {
    // Netns::ready() asks for root (and `ip`).
    if !skip_unless(all([
        Netns::ready(),
        program("fwknop"),
        program("fwknopd"),
        program("iptables"),
    ])) {
        return;
    }
    // Dropped in reverse: fwknopd killed first, then the namespaces (with the veth and
    // every iptables rule in them), then the directory.
    let dir = TempDir::new("fwknopd");
    let server = Netns::new("fwks");
    let client = Netns::new("fwkc");
    std::fs::create_dir_all(dir.join("run")).expect("the run directory");
    let keys = key_gen(&dir.0);

    server.ip(&[
        "link",
        "add",
        "vs",
        "type",
        "veth",
        "peer",
        "name",
        "vc",
        "netns",
        &client.name,
    ]);
    server.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "vs"]);
    client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "vc"]);
    server.ip(&["link", "set", "vs", "up"]);
    client.ip(&["link", "set", "vc", "up"]);
    for port in [GUARDED, GUARDED_AS_SEEN] {
        run_ok(
            "iptables: drop the guarded port",
            server.command("iptables").args([
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                &port.to_string(),
                "-j",
                "DROP",
            ]),
        );
    }
    // Listeners on the guarded ports: the kernel completes handshakes from the backlog.
    let _listeners: Vec<TcpListener> = server.run_in(|| {
        [GUARDED, GUARDED_AS_SEEN]
            .iter()
            .map(|&p| TcpListener::bind(SocketAddrV4::new(SERVER, p)).expect("bind"))
            .collect()
    });

    let conf = dir.join("fwknopd.conf");
    let access = dir.join("access.conf");
    let run = dir.join("run");
    std::fs::write(
        &conf,
        format!(
            "ENABLE_UDP_SERVER Y;\nUDPSERV_PORT {SPA_PORT};\nPCAP_INTF vs;\nFWKNOP_RUN_DIR {};\n",
            run.display()
        ),
    )
    .expect("write fwknopd.conf");
    std::fs::write(
        &access,
        format!(
            "SOURCE ANY\nOPEN_PORTS tcp/{GUARDED}, tcp/{GUARDED_AS_SEEN}\nKEY_BASE64 {}\nHMAC_KEY_BASE64 {}\nFW_ACCESS_TIMEOUT 30\n",
            keys.key, keys.hmac
        ),
    )
    .expect("write access.conf");
    for f in [&conf, &access] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }

    let log = dir.join("fwknopd.log");
    let log_file = std::fs::File::create(&log).expect("the log file");
    let mut fwknopd = KillOnDrop(
        server
            .command("fwknopd")
            .arg("-f")
            .arg("-v")
            .arg("-c")
            .arg(&conf)
            .arg("-a")
            .arg(&access)
            .arg("-d")
            .arg(run.join("digest.cache"))
            .arg("-p")
            .arg(run.join("fwknopd.pid"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the log file"))
            .stderr(log_file)
            .spawn()
            .expect("start fwknopd"),
    );
    assert!(
        log_shows(
            &log,
            &mut fwknopd,
            "Kicking off UDP server",
            Duration::from_secs(10)
        ),
        "fwknopd did not start its UDP server:\n{}",
        read_log(&log)
    );

    // Before: dropped.
    assert!(
        !connects(&client, GUARDED, Duration::from_millis(500)),
        "port {GUARDED} answers before any packet"
    );

    // Our packet, naming the client's address: fwknopd opens the port for it.
    let key = keys.for_client("alice");
    let packet = fwknop::encode(
        &key,
        "tester",
        IpAddr::V4(CLIENT),
        &[PortProto::tcp(GUARDED)],
        Some(30),
        now(),
    );
    send_from_client(&client, &packet);
    assert!(
        connects(&client, GUARDED, Duration::from_secs(5)),
        "fwknopd did not open {GUARDED} for our packet:\n{}",
        read_log(&log)
    );
    assert!(
        read_log(&log).contains(&format!(
            "Added access rule to FWKNOP_INPUT for {CLIENT} -> 0.0.0.0/0 tcp/{GUARDED}"
        )),
        "{}",
        read_log(&log)
    );

    // The same datagram again: fwknopd's replay cache refuses it.
    send_from_client(&client, &packet);
    assert!(
        log_shows(
            &log,
            &mut fwknopd,
            "Replay detected",
            Duration::from_secs(5)
        ),
        "fwknopd did not call the repeated datagram a replay:\n{}",
        read_log(&log)
    );

    // 0.0.0.0 (fwknop's -s): fwknopd opens for the packet's source.
    assert!(!connects(
        &client,
        GUARDED_AS_SEEN,
        Duration::from_millis(500)
    ));
    let packet = fwknop::encode(
        &key,
        "tester",
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        &[PortProto::tcp(GUARDED_AS_SEEN)],
        None,
        now(),
    );
    send_from_client(&client, &packet);
    assert!(
        connects(&client, GUARDED_AS_SEEN, Duration::from_secs(5)),
        "fwknopd did not open {GUARDED_AS_SEEN} for our source-address packet:\n{}",
        read_log(&log)
    );

    // Still running (a crash would have ended the log early).
    assert!(
        matches!(fwknopd.0.try_wait(), Ok(None)),
        "fwknopd exited:\n{}",
        read_log(&log)
    );
}
