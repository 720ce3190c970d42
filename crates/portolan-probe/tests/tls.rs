//! TLS detection against real servers: `openssl s_server` with certificates made here by
//! the `openssl` CLI, a real PostgreSQL (SSLRequest), a real Dovecot (IMAP and POP3
//! STARTTLS), and hostile TLS "servers" as in-test listeners.
//!
//! Tests that need a missing program (or root, for PostgreSQL and Dovecot) skip with a
//! message, unless CI=true, where they fail.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{free_port, is_root, skip_or_fail, wait_listening, Server};
use portolan_probe::{probe_tcp, tls_info, Options, Report, Signatures};

/// Whether a test can run; without what it needs it is skipped with a message, except on
/// CI (CI=true), where everything must be there.
fn skip_unless(ok: bool, what: &str) -> bool {
    if !ok {
        skip_or_fail(&format!("the test cannot run: {what}"));
    }
    ok
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
        || Path::new(program).exists()
}

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "portolan-tls-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &TempDir, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(&dir.0)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Certificates for the tests: `self.pem` (self-signed RSA 2048 with SANs) and `old.pem`
/// (EC P-256, issued by a throwaway CA, valid only in 2020).
fn make_certs(dir: &TempDir) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "self.key",
            "-out",
            "self.pem",
            "-days",
            "30",
            "-subj",
            "/O=Portolan Tests/CN=portolan.test",
            "-addext",
            "subjectAltName=DNS:portolan.test,DNS:alt.portolan.test,IP:127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Portolan Test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "old.key",
            "-out",
            "old.csr",
            "-subj",
            "/CN=old.portolan.test",
            "-addext",
            "subjectAltName=DNS:old.portolan.test",
        ],
    );
    let d = dir.0.to_str().unwrap();
    std::fs::write(dir.path("index.txt"), "").unwrap();
    std::fs::write(dir.path("serial"), "1001\n").unwrap();
    std::fs::write(
        dir.path("ca.cnf"),
        format!(
            "[ca]\ndefault_ca = tca\n[tca]\ndir = {d}\ndatabase = {d}/index.txt\n\
             new_certs_dir = {d}\nserial = {d}/serial\ndefault_md = sha256\npolicy = pol\n\
             copy_extensions = copy\nunique_subject = no\n[pol]\ncommonName = supplied\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20210101000000Z",
            "-in",
            "old.csr",
            "-out",
            "old.pem",
        ],
    );
}

/// The SHA-256 fingerprint of a PEM certificate, as lowercase hex, by openssl.
fn fingerprint(dir: &TempDir, pem: &str) -> String {
    let out = openssl(
        dir,
        &["x509", "-in", pem, "-noout", "-fingerprint", "-sha256"],
    );
    out.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase()
}

/// Waits until something accepts connections on loopback `port`.
fn wait_for(port: u16, child: &mut Child) {
    assert!(
        wait_listening(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), child),
        "nothing listens on port {port} (the server exited, or 20 s passed)"
    );
}

/// `openssl s_server -www` on a free loopback port with `extra` arguments.
fn s_server(dir: &TempDir, extra: &[&str]) -> (Server, SocketAddr) {
    let port = free_port();
    let accept = format!("127.0.0.1:{port}");
    let mut child = Command::new("openssl")
        .args(["s_server", "-accept", &accept, "-www", "-quiet"])
        .args(["-cert", "self.pem", "-key", "self.key"])
        .args(extra)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    wait_for(port, &mut child);
    (
        Server::new(child),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    )
}

fn quick() -> Options {
    Options {
        connect_timeout: Duration::from_secs(1),
        banner_wait: Duration::from_millis(500),
        read_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

fn describe(r: &Report) -> String {
    format!("{r:#?}")
}

#[test]
fn https_on_any_port_self_signed_h2_and_sni() {
    if !skip_unless(have("openssl"), "the openssl program is not installed") {
        return;
    }
    let dir = TempDir::new("https");
    make_certs(&dir);
    let (_server, addr) = s_server(
        &dir,
        &[
            "-alpn",
            "h2,http/1.1",
            "-servername",
            "old.portolan.test",
            "-cert2",
            "old.pem",
            "-key2",
            "old.key",
        ],
    );
    let sigs = Signatures::builtin();
    // By address: no SNI, so the default (self-signed) certificate.
    let r = probe_tcp(addr, None, &sigs, &quick());
    let d = describe(&r);
    let tls = r.tls.as_ref().unwrap_or_else(|| panic!("no TLS seen: {d}"));
    assert_eq!(tls.version, "TLSv1.3", "{d}");
    assert!(
        [
            "TLS_AES_256_GCM_SHA384",
            "TLS_AES_128_GCM_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256"
        ]
        .contains(&tls.cipher.as_str()),
        "{d}"
    );
    assert_eq!(tls.alpn.as_deref(), Some("h2"), "{d}");
    assert_eq!(tls.starttls, None, "{d}");
    let cert = tls.cert.as_ref().unwrap();
    assert_eq!(cert.subject, "CN=portolan.test,O=Portolan Tests", "{d}");
    assert_eq!(cert.issuer, cert.subject, "{d}");
    assert_eq!(
        cert.sans,
        ["portolan.test", "alt.portolan.test", "127.0.0.1"],
        "{d}"
    );
    assert!(
        cert.self_signed && !cert.expired && !cert.not_yet_valid,
        "{d}"
    );
    assert_eq!(cert.key.as_deref(), Some("RSA 2048"), "{d}");
    assert_eq!(
        cert.signature.as_deref(),
        Some("sha256WithRSAEncryption"),
        "{d}"
    );
    assert_eq!(cert.sha256, fingerprint(&dir, "self.pem"), "{d}");
    let serial = openssl(&dir, &["x509", "-in", "self.pem", "-noout", "-serial"]);
    assert_eq!(
        cert.serial,
        serial
            .trim()
            .trim_start_matches("serial=")
            .to_ascii_lowercase(),
        "{d}"
    );
    // Inside the tunnel, http-get (on an HTTP/1.1 session) names the service.
    let id = r.identity.as_ref().unwrap_or_else(|| panic!("{d}"));
    assert_eq!(
        (id.service.as_str(), id.probe.as_str()),
        ("http", "http-get"),
        "{d}"
    );
    let http = r.http.as_ref().unwrap_or_else(|| panic!("{d}"));
    assert_eq!(
        (http.protocol.as_str(), http.status),
        ("HTTP/1.0", 200),
        "{d}"
    );
    assert!(http.http2, "{d}");

    // By host name: SNI picks the second, expired, CA-issued certificate.
    let info = tls_info(addr, Some("old.portolan.test"), &quick()).unwrap();
    let old = info.cert.unwrap();
    assert_eq!(old.subject, "CN=old.portolan.test");
    assert_eq!(old.issuer, "CN=Portolan Test CA");
    assert_eq!(old.sans, ["old.portolan.test"]);
    assert!(
        old.expired && !old.self_signed && !old.not_yet_valid,
        "{old:?}"
    );
    assert_eq!(old.not_before, "2020-01-01T00:00:00Z");
    assert_eq!(old.not_after, "2021-01-01T00:00:00Z");
    assert_eq!(old.key.as_deref(), Some("EC P-256"));
    assert_eq!(old.serial, "1001");
    assert_eq!(old.sha256, fingerprint(&dir, "old.pem"));
    // An IP literal given as the name sends no SNI either.
    let by_ip = tls_info(addr, Some("127.0.0.1"), &quick()).unwrap();
    assert_eq!(
        by_ip.cert.unwrap().subject,
        "CN=portolan.test,O=Portolan Tests"
    );
}

#[test]
fn tls12_without_alpn() {
    if !skip_unless(have("openssl"), "the openssl program is not installed") {
        return;
    }
    let dir = TempDir::new("tls12");
    make_certs(&dir);
    let (_server, addr) = s_server(&dir, &["-tls1_2"]);
    let r = probe_tcp(addr, None, &Signatures::builtin(), &quick());
    let d = describe(&r);
    let tls = r.tls.as_ref().unwrap_or_else(|| panic!("{d}"));
    assert_eq!(tls.version, "TLSv1.2", "{d}");
    assert!(tls.cipher.starts_with("TLS_ECDHE_RSA_WITH_"), "{d}");
    assert_eq!(tls.alpn, None, "{d}");
    assert_eq!(
        r.identity.as_ref().map(|i| i.service.as_str()),
        Some("http"),
        "{d}"
    );
    let http = r.http.as_ref().unwrap_or_else(|| panic!("{d}"));
    assert!(!http.http2, "{d}");
}

/// How a hostile listener treats one connection.
type Serve = fn(TcpStream);

/// A listener that treats each connection with `serve`, until dropped.
struct Hostile {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    fn start(serve: fn(TcpStream)) -> Hostile {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        thread::spawn(move || {
            // Bounded: at most 120 s, whatever the test does.
            let t = Instant::now();
            while !flag.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(120) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        thread::spawn(move || serve(s));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Hostile { addr, stop }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads what the client sent first (up to a second), so the answer follows a ClientHello.
fn read_hello(s: &mut TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 2048];
    let _ = s.read(&mut buf);
}

fn silent(mut s: TcpStream) {
    read_hello(&mut s);
    thread::sleep(Duration::from_secs(30));
}

fn partial_hello(mut s: TcpStream) {
    read_hello(&mut s);
    // A handshake record announcing 64 bytes, a ServerHello header, then nothing.
    let _ = s.write_all(&[
        0x16, 0x03, 0x03, 0x00, 0x40, 0x02, 0x00, 0x00, 0x3c, 0x03, 0x03,
    ]);
    thread::sleep(Duration::from_secs(30));
}

fn garbage(mut s: TcpStream) {
    read_hello(&mut s);
    let _ = s.write_all(b"\x1b[2J\x00\xffNOT TLS AT ALL\r\n");
    thread::sleep(Duration::from_secs(30));
}

fn endless(mut s: TcpStream) {
    read_hello(&mut s);
    // Change-cipher-spec records without end (allowed one at a time in TLS 1.3's middlebox
    // mode), for at most 30 s.
    let record = [0x14, 0x03, 0x03, 0x00, 0x01, 0x01].repeat(1000);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if s.write_all(&record).is_err() {
            return;
        }
    }
}

fn endless_bytes(mut s: TcpStream) {
    read_hello(&mut s);
    let chunk = vec![0x16u8; 16 * 1024];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if s.write_all(&chunk).is_err() {
            return;
        }
    }
}

#[test]
fn hostile_tls_servers_end_within_the_deadlines() {
    let o = Options {
        connect_timeout: Duration::from_secs(1),
        banner_wait: Duration::from_millis(300),
        read_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let sigs = Signatures::builtin();
    let probes = u32::try_from(sigs.active_probes(1).len()).unwrap();
    let cases: [(&str, Serve); 5] = [
        ("silent", silent),
        ("partial ServerHello", partial_hello),
        ("garbage", garbage),
        ("endless CCS records", endless),
        ("endless bytes", endless_bytes),
    ];
    for (what, serve) in cases {
        let h = Hostile::start(serve);
        let t = Instant::now();
        let err = tls_info(h.addr, None, &o).expect_err(what);
        let took = t.elapsed();
        // The handshake waits at most read_timeout, plus the connect.
        assert!(
            took < Duration::from_millis(2500),
            "{what}: {took:?} ({err})"
        );
        assert!(!err.chars().any(char::is_control), "{what}: {err:?}");
        // The whole probe: banner wait, one TLS guess, each active probe's read timeout.
        let t = Instant::now();
        let r = probe_tcp(h.addr, None, &sigs, &o);
        let took = t.elapsed();
        let bound = o.banner_wait + o.read_timeout * (probes + 2) + Duration::from_secs(2);
        assert!(took < bound, "{what}: probe took {took:?} > {bound:?}");
        assert!(r.tls.is_none(), "{what}: {r:?}");
        if let Some(b) = &r.banner {
            assert!(!b.chars().any(char::is_control), "{what}: {b:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// STARTTLS against real servers

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

#[test]
fn postgresql_sslrequest_upgrades() {
    let ok = skip_unless(have("openssl"), "the openssl program is not installed")
        && skip_unless(
            Path::new(PG_BIN).join("postgres").exists(),
            "PostgreSQL 15 is not installed",
        )
        && skip_unless(
            is_root(),
            "PostgreSQL is started as user postgres: needs root",
        );
    if !ok {
        return;
    }
    let dir = TempDir::new("pg");
    make_certs(&dir);
    let data = dir.path("data");
    run(Command::new("chown").args(["-R", "postgres", dir.0.to_str().unwrap()]));
    run(Command::new("chmod").args(["0600", &dir.path("self.key")]));
    run(Command::new("runuser").args([
        "-u",
        "postgres",
        "--",
        &format!("{PG_BIN}/initdb"),
        "-A",
        "trust",
        "-D",
        &data,
    ]));
    let port = free_port();
    let child = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            &format!("{PG_BIN}/postgres"),
            "-D",
            &data,
        ])
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            &format!("port={port}"),
        ])
        .args([
            "-c",
            &format!("unix_socket_directories={}", dir.0.display()),
        ])
        .args([
            "-c",
            "ssl=on",
            "-c",
            &format!("ssl_cert_file={}", dir.path("self.pem")),
        ])
        .args(["-c", &format!("ssl_key_file={}", dir.path("self.key"))])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start postgres");
    let mut server = Server::new(child);
    wait_for(port, &mut server.child);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let r = probe_tcp(addr, None, &Signatures::builtin(), &quick());
    let d = describe(&r);
    let id = r.identity.as_ref().unwrap_or_else(|| panic!("{d}"));
    assert_eq!(id.service, "postgresql", "{d}");
    let tls = r.tls.as_ref().unwrap_or_else(|| panic!("no STARTTLS: {d}"));
    assert_eq!(tls.starttls.as_deref(), Some("postgresql"), "{d}");
    assert_eq!(tls.version, "TLSv1.3", "{d}");
    let cert = tls.cert.as_ref().unwrap();
    assert_eq!(cert.subject, "CN=portolan.test,O=Portolan Tests", "{d}");
}

#[test]
fn dovecot_imap_and_pop3_starttls() {
    let ok = skip_unless(have("openssl"), "the openssl program is not installed")
        && skip_unless(
            Path::new("/usr/sbin/dovecot").exists(),
            "dovecot is not installed",
        )
        && skip_unless(is_root(), "dovecot is started as root");
    if !ok {
        return;
    }
    let dir = TempDir::new("dovecot");
    make_certs(&dir);
    let (imap, pop3) = (free_port(), free_port());
    let d = dir.0.display();
    let conf = format!(
        "protocols = imap pop3\nlisten = 127.0.0.1\nbase_dir = {d}/run\n\
         log_path = {d}/dovecot.log\nssl = yes\nssl_cert = <{d}/self.pem\n\
         ssl_key = <{d}/self.key\nmail_location = maildir:{d}/mail\n\
         passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
         userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/home\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    port = {imap}\n  }}\n\
           inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
         service pop3-login {{\n  inet_listener pop3 {{\n    port = {pop3}\n  }}\n\
           inet_listener pop3s {{\n    port = 0\n  }}\n}}\n\
         service stats {{\n  unix_listener stats-reader {{\n    mode = 0600\n  }}\n\
           unix_listener stats-writer {{\n    mode = 0600\n  }}\n}}\n"
    );
    std::fs::write(dir.path("dovecot.conf"), conf).unwrap();
    let child = Command::new("/usr/sbin/dovecot")
        .args(["-F", "-c", &dir.path("dovecot.conf")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dovecot");
    let mut server = Server::new(child);
    wait_for(imap, &mut server.child);
    wait_for(pop3, &mut server.child);
    let sigs = Signatures::builtin();
    for (port, service) in [(imap, "imap"), (pop3, "pop3")] {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let r = probe_tcp(addr, None, &sigs, &quick());
        let d = describe(&r);
        let id = r.identity.as_ref().unwrap_or_else(|| panic!("{d}"));
        assert_eq!(id.service, service, "{d}");
        assert_eq!(id.probe, "banner", "{d}");
        let tls = r.tls.as_ref().unwrap_or_else(|| panic!("no STARTTLS: {d}"));
        assert_eq!(tls.starttls.as_deref(), Some(service), "{d}");
        assert_eq!(
            tls.cert.as_ref().map(|c| c.subject.as_str()),
            Some("CN=portolan.test,O=Portolan Tests"),
            "{d}"
        );
    }
}
