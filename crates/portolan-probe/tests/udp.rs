//! UDP service detection against real servers from Debian's packages, started on loopback
//! by the tests and stopped at the end: dnsmasq (DNS over UDP and TCP), snmpd (Net-SNMP)
//! and ntpsec's ntpd (NTP, on port 123: it cannot be moved). Product and version are
//! checked against what dpkg says of the installed package. Also: a closed port, a silent
//! one, and services that answer garbage.
//!
//! The servers need root (dnsmasq and ntpd want it, ntpd binds port 123) and their
//! packages (scripts/test.sh installs them): without them these tests say so and skip,
//! except under `CI=true`, where a missing prerequisite is a failure. ntpd runs in a
//! network namespace of its test's own, where port 123 is free.

use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{is_root, scratch, skip_or_fail, Server};
use portolan_probe::udp::{probe_many_udp, probe_udp, CLOSED, NO_ANSWER};
use portolan_probe::{probe_tcp, Options, Report, Signatures, Transport};

/// Whether the test may run: root and `programs` installed. Under `CI=true` a missing
/// prerequisite fails the test instead.
fn ready_or_skip(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    let root = is_root();
    let why = if !root {
        "needs root".to_owned()
    } else if !missing.is_empty() {
        format!("needs {missing:?} (scripts/test.sh installs them)")
    } else {
        return true;
    };
    skip_or_fail(&format!("{test}: {why}"));
    false
}

/// The upstream version of an installed Debian package: `2.90-4~deb12u2` -> `2.90`.
fn package_version(pkg: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .output()
        .unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    let v = v.split_once(':').map_or(v.as_str(), |(_, r)| r);
    let v = v.rsplit_once('-').map_or(v, |(u, _)| u);
    v.split(['+', '~']).next().unwrap().to_owned()
}

fn start(mut cmd: Command, dir: PathBuf) -> Server {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    Server::with_dir(child, dir)
}

/// A UDP port on 127.0.0.1 that is free right now for UDP and TCP (bound, then released).
fn free_port() -> u16 {
    // Below the ephemeral range (no outgoing connection of a concurrent test takes it before
    // the server binds it) and outside the zoo's fixed ports (20000-29999).
    // Each call starts elsewhere: two tests of this binary do not race for one port.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(97, std::sync::atomic::Ordering::Relaxed);
    let base = 30_000 + u16::try_from(std::process::id() % 2000).unwrap_or(0);
    (0..500u16)
        .map(|i| base + (call + i * 11) % 2700)
        .find(|&p| {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
                && std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
        })
        .expect("no port free for both UDP and TCP in 30000-32767")
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn quick() -> Options {
    Options {
        read_timeout: Duration::from_millis(600),
        ..Options::default()
    }
}

/// Probes until the server names itself (it may still be starting), for up to 20 s.
fn probe_until_named(addr: SocketAddr, sigs: &Signatures) -> Report {
    let t = Instant::now();
    loop {
        let r = probe_udp(addr, None, sigs, &quick());
        let named = r.identity.as_ref().is_some_and(|i| i.version.is_some());
        if named || t.elapsed() > Duration::from_secs(20) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn fields(r: &Report) -> (String, Option<String>, Option<String>) {
    let id = r
        .identity
        .as_ref()
        .unwrap_or_else(|| panic!("no identity: {r:?}"));
    (id.service.clone(), id.product.clone(), id.version.clone())
}

#[test]
fn dnsmasq_is_named_over_udp_and_tcp() {
    if !ready_or_skip("dnsmasq", &["/usr/sbin/dnsmasq"]) {
        return;
    }
    let want = package_version("dnsmasq-base");
    let port = free_port();
    let dir = scratch("dnsmasq");
    let mut cmd = Command::new("/usr/sbin/dnsmasq");
    cmd.args([
        "-k",
        "--conf-file=/dev/null",
        &format!("--port={port}"),
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
    ]);
    let _server = start(cmd, dir);
    let sigs = Signatures::builtin();
    let r = probe_until_named(local(port), &sigs);
    assert_eq!(
        fields(&r),
        ("domain".into(), Some("dnsmasq".into()), Some(want.clone())),
        "{r:?}"
    );
    assert_eq!(r.proto, Transport::Udp);
    assert!(r.error.is_none() && r.tls.is_none() && r.http.is_none());
    assert_eq!(r.identity.unwrap().probe, "dns-version-bind");
    // DNS over TCP, as a TCP probe (with its length prefix). On port 53 it would be tried
    // first; here every TCP probe before it gets its chance, so the limits are short.
    assert!(TcpStream::connect(local(port)).is_ok());
    let o = Options {
        banner_wait: Duration::from_millis(200),
        read_timeout: Duration::from_millis(400),
        ..Options::default()
    };
    let r = probe_tcp(local(port), None, &sigs, &o);
    assert_eq!(
        fields(&r),
        ("domain".into(), Some("dnsmasq".into()), Some(want)),
        "{r:?}"
    );
    assert_eq!(r.identity.unwrap().probe, "dns-version-bind-tcp");
}

#[test]
fn net_snmp_is_named_with_its_version_and_system() {
    if !ready_or_skip("snmpd", &["/usr/sbin/snmpd"]) {
        return;
    }
    let want = package_version("snmpd");
    let port = free_port();
    let dir = scratch("snmpd");
    let conf = dir.join("snmpd.conf");
    // Read-only access for "public" from loopback, to the whole tree (versionTag too).
    std::fs::write(
        &conf,
        "rocommunity public 127.0.0.1\nsysLocation portolan test zoo\n",
    )
    .unwrap();
    let mut cmd = Command::new("/usr/sbin/snmpd");
    cmd.args(["-f", "-Lo", "-C", "-c"])
        .arg(&conf)
        .arg(format!("udp:127.0.0.1:{port}"))
        .env("SNMP_PERSISTENT_DIR", &dir)
        .env("MIBS", "");
    let _server = start(cmd, dir);
    let sigs = Signatures::builtin();
    let r = probe_until_named(local(port), &sigs);
    assert_eq!(
        fields(&r),
        ("snmp".into(), Some("Net-SNMP".into()), Some(want)),
        "{r:?}"
    );
    let id = r.identity.unwrap();
    assert_eq!(id.probe, "snmp-get-public");
    // sysDescr is the kernel's uname: system name and release.
    let uname = Command::new("uname").arg("-r").output().unwrap();
    let release = String::from_utf8(uname.stdout).unwrap();
    let info = id.info.unwrap();
    assert!(info.starts_with("SNMPv2c; Linux"), "{info}");
    assert!(info.contains(release.trim()), "{info} vs {release}");
    // The wrong port of the same host is closed, and told so at once.
    let t = Instant::now();
    let closed = probe_udp(local(free_port()), None, &sigs, &Options::default());
    assert_eq!(closed.error.as_deref(), Some(CLOSED));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn ntpsec_is_named_with_its_version_stratum_and_reference() {
    if !ready_or_skip("ntpsec", &["/usr/sbin/ntpd"])
        || !portolan_testsupport::skip_unless(portolan_testsupport::Netns::ready())
    {
        return;
    }
    // ntpd can only be tested on port 123: in a network namespace of the test's own, that
    // port is free whatever the machine runs.
    portolan_testsupport::Netns::new("ntpd").run_in(ntpsec_in_its_namespace);
}

/// The test above, on a thread inside its namespace (ntpd is started from there too).
fn ntpsec_in_its_namespace() {
    let want = package_version("ntpsec");
    let dir = scratch("ntpd");
    let conf = dir.join("ntp.conf");
    // Loopback only, no servers, queries allowed from loopback.
    std::fs::write(
        &conf,
        format!(
            "interface ignore all\ninterface listen 127.0.0.1\n\
             driftfile {}\nrestrict default\nrestrict 127.0.0.1\n",
            dir.join("drift").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("/usr/sbin/ntpd");
    cmd.args(["-n", "-c"])
        .arg(&conf)
        .arg("-p")
        .arg(dir.join("ntpd.pid"))
        .arg("-l")
        .arg(dir.join("ntpd.log"))
        .arg("-s")
        .arg(&dir);
    let _server = start(cmd, dir);
    let sigs = Signatures::builtin();
    let r = probe_until_named(local(123), &sigs);
    assert_eq!(
        fields(&r),
        ("ntp".into(), Some("NTPsec".into()), Some(want)),
        "{r:?}"
    );
    let id = r.identity.unwrap();
    assert_eq!(id.probe, "ntp-readvar");
    // The mode-4 answer's fields: a server with no upstream is not synchronised.
    let info = id.info.unwrap();
    assert!(info.starts_with("NTP v4; stratum "), "{info}");
    assert!(
        info.contains("refid INIT") && info.ends_with("leap 3"),
        "{info}"
    );
}

#[test]
fn closed_silent_and_garbage_ports_in_bounded_time() {
    let sigs = Signatures::builtin();
    // Silent: a bound socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Garbage: answers every datagram with escape sequences and binary junk.
    let garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
    let gport = garbage.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            let _ = garbage.set_read_timeout(Some(Duration::from_secs(1)));
            if let Ok((_, from)) = garbage.recv_from(&mut buf) {
                let mut junk = b"\x1b]0;owned\x07\x1b[2J\x30\x84\xff\xff\xff\xff".to_vec();
                junk.extend(std::iter::repeat_n(0xffu8, 3000));
                let _ = garbage.send_to(&junk, from);
            }
        }
    });
    let closed = free_port();
    let targets = [
        (local(silent.local_addr().unwrap().port()), None),
        (local(gport), None),
        (local(closed), None),
    ];
    let o = Options {
        read_timeout: Duration::from_millis(500),
        read_limit: 1000,
        ..Options::default()
    };
    let t = Instant::now();
    let rs = probe_many_udp(&targets, &sigs, &o, 4);
    let took = t.elapsed();
    let probes = u32::try_from(sigs.probes_for(Transport::Udp, 9).len()).unwrap();
    assert!(
        took < o.read_timeout * probes + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(rs.len(), 3);
    assert_eq!(rs[0].error.as_deref(), Some(NO_ANSWER), "{:?}", rs[0]);
    assert!(rs[0].identity.is_none());
    assert!(
        rs[1].identity.is_none() && rs[1].error.is_none(),
        "{:?}",
        rs[1]
    );
    let banner = rs[1].banner.as_deref().unwrap();
    assert!(banner.starts_with("\\x1b]0;owned\\x07"), "{banner}");
    assert!(!banner.chars().any(char::is_control), "{banner}");
    assert!(banner.len() < 800, "bounded: {}", banner.len());
    assert_eq!(rs[2].error.as_deref(), Some(CLOSED));
    assert!(rs.iter().all(|r| r.proto == Transport::Udp));
}
