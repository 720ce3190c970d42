//! `portolan probe HOST:PORT/udp` as a user runs it: UDP targets beside TCP ones (output
//! in the order given, JSON `proto` per target, `/udp` in the table's addresses), closed
//! and silent ports told apart, a hostile UDP service kept off the terminal, and a real
//! dnsmasq (Debian's package, started here on loopback) named with its version.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::portolan;

/// A UDP service on 127.0.0.1 run by a thread: `answer` makes the reply to each datagram.
fn udp_service(answer: fn(&[u8]) -> Vec<u8>) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&answer(&buf[..n]), from);
            }
        }
    });
    port
}

/// A port free for both UDP and TCP on 127.0.0.1, below the ephemeral range (so no
/// outgoing connection of a concurrent test takes it before the server binds it), and
/// outside the zoo's fixed ports (20000-29999). Not `common::free_port`: that one is an
/// ephemeral TCP port only.
fn free_dual_port() -> u16 {
    // Each call starts elsewhere: two tests of this binary do not race for one port.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(97, std::sync::atomic::Ordering::Relaxed);
    let base = 30_000 + u16::try_from(std::process::id() % 2000).unwrap_or(0);
    (0..500u16)
        .map(|i| base + (call + i * 7) % 2700)
        .find(|&p| {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
                && TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok()
        })
        .expect("no port free for both UDP and TCP in 30000-32767")
}

/// A UDP port on 127.0.0.1 with nothing bound (bound, then released).
fn closed_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_hostile_udp_service_cannot_reach_the_terminal() {
    let port = udp_service(|_| {
        let mut v = b"\x1b]0;owned\x07\x1b[2J\x1b[31mSSH-2.0-evil\r\n\x9b6n".to_vec();
        v.extend(std::iter::repeat_n(b'A', 5000));
        v
    });
    let target = format!("127.0.0.1:{port}/udp");
    let t = Instant::now();
    let r = portolan(&["probe", &target, "--timeout", "500"]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(
        !r.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reached the terminal: {:?}",
        r.stdout
    );
    // What it said is shown, escaped and cut, under its UDP address.
    let said = format!("127.0.0.1:{port}/udp said: \\x1b]0;owned\\x07");
    assert!(r.stdout.contains(&said), "{}", r.stdout);
    assert!(r.stdout.len() < 1000, "bounded output: {}", r.stdout.len());
    let r = portolan(&["probe", &target, "--timeout", "500", "--jsonl"]);
    let v = &r.jsonl()[0];
    assert_eq!(v["proto"], "udp");
    // Nothing identified (a random port may still have a registered name: a guess).
    assert!(
        v["service_source"] != "probe" && v["product"].is_null() && v["error"].is_null(),
        "{v}"
    );
    assert!(v["banner"].as_str().unwrap().len() < 400, "{v}");
}

#[test]
fn udp_and_tcp_targets_keep_their_order_and_protocols() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let closed = closed_udp_port();
    let ssh = TcpListener::bind("127.0.0.1:0").unwrap();
    let ssh_port = ssh.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in ssh.incoming().flatten().take(10) {
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
        }
    });
    let targets = [
        format!("127.0.0.1:{silent_port}/udp"),
        format!("127.0.0.1:{ssh_port}"),
        format!("127.0.0.1:{closed}/udp"),
    ];
    let mut args = vec!["probe"];
    args.extend(targets.iter().map(String::as_str));
    args.extend(["--timeout", "300"]);
    let t = Instant::now();
    let table = portolan(&args);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ADDRESS"), "{}", table.stdout);
    let silent_row = format!("127.0.0.1:{silent_port}/udp");
    assert!(
        lines[1].starts_with(&silent_row) && lines[1].contains("no answer (open|filtered)"),
        "{}",
        table.stdout
    );
    assert!(
        lines[2].starts_with(&format!("127.0.0.1:{ssh_port} ")) && lines[2].contains("OpenSSH"),
        "{}",
        table.stdout
    );
    assert!(
        lines[3].starts_with(&format!("127.0.0.1:{closed}/udp"))
            && lines[3].contains("closed (port unreachable)"),
        "{}",
        table.stdout
    );
    args.push("--json");
    let v = portolan(&args).json();
    let rows = v["results"].as_array().unwrap();
    let got: Vec<(u64, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["port"].as_u64().unwrap(),
                r["proto"].as_str().unwrap(),
                r["error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (u64::from(silent_port), "udp", "no answer (open|filtered)"),
            (u64::from(ssh_port), "tcp", ""),
            (u64::from(closed), "udp", "closed (port unreachable)"),
        ]
    );
    assert_eq!(rows[1]["product"], "OpenSSH");
    drop(silent);
}

/// dnsmasq, killed (SIGTERM, then SIGKILL) and its directory removed on drop.
struct Dnsmasq(Child, std::path::PathBuf);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(pid) = i32::try_from(self.0.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        common::wait_for(Duration::from_secs(5), || {
            matches!(self.0.try_wait(), Ok(Some(_)))
        });
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[test]
fn dnsmasq_is_named_by_the_cli() {
    let program = "/usr/sbin/dnsmasq";
    let ready = portolan_testsupport::root().and_then(|()| {
        if Path::new(program).exists() {
            Ok(())
        } else {
            Err(format!("needs {program} (scripts/test.sh installs it)"))
        }
    });
    if !portolan_testsupport::skip_unless(ready) {
        return;
    }
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "dnsmasq-base"])
        .output()
        .unwrap();
    let full = String::from_utf8(out.stdout).unwrap();
    let want = full.split(['-', '~', '+']).next().unwrap().to_owned();
    let port = free_dual_port();
    let dir = std::env::temp_dir().join(format!("portolan-cli-dnsmasq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new(program)
        .args([
            "-k",
            "--conf-file=/dev/null",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            &format!("--pid-file={}", dir.join("pid").display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _d = Dnsmasq(child, dir);
    assert!(
        common::wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
        }),
        "dnsmasq did not start on {port}"
    );
    let target = format!("127.0.0.1:{port}/udp");
    let r = portolan(&["probe", &target, "--jsonl"]);
    r.expect_code(0);
    let v = &r.jsonl()[0];
    assert_eq!(
        (
            v["proto"].as_str(),
            v["service"].as_str(),
            v["product"].as_str(),
            v["version"].as_str()
        ),
        (
            Some("udp"),
            Some("domain"),
            Some("dnsmasq"),
            Some(want.as_str())
        ),
        "{v}"
    );
    let r = portolan(&["probe", &target]);
    let row = r.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with(&target) && row.contains("dnsmasq") && row.contains(&want),
        "{}",
        r.stdout
    );
}
