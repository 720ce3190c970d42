//! Shared helpers for the tests with real listeners: free ports, the inventory of chosen
//! ports, and Debian's servers started on a port of our own.

#![allow(dead_code, clippy::missing_panics_doc)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portolan_audit::Listener;
use portolan_core::{Port, PortRange, PortSpec, Protocol};
use portolan_sockets::{Inventory, OwnerScan, Query};

/// A port in IANA's dynamic range (no registration), free on every address right now.
pub fn unnamed_free_port() -> u16 {
    // Tests run in parallel threads: each call starts elsewhere, so two tests never pick
    // the same port for servers that bind it later.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = u16::try_from(std::process::id() % 8000).unwrap() + call.wrapping_mul(211) % 8000;
    for i in 0..2000u16 {
        let p = 49_152 + (start + i * 7) % 16_000;
        if portolan_catalog::service_name(Port::new(p), Protocol::Tcp).is_some()
            || portolan_catalog::note(Port::new(p), Protocol::Tcp).is_some()
        {
            continue;
        }
        if TcpListener::bind(("0.0.0.0", p)).is_ok() {
            return p;
        }
    }
    panic!("no free unnamed port found in 2000 tries");
}

/// The listeners on these ports, owners resolved.
pub fn listeners_on(ports: &[u16]) -> Vec<Listener> {
    let ranges = ports
        .iter()
        .map(|&p| PortRange::single(Port::new(p)))
        .collect();
    let q = Query {
        listening_only: true,
        ports: Some(PortSpec::from_ranges(ranges)),
        owners: OwnerScan::All,
        ..Query::default()
    };
    let inv = Inventory::collect(&q).expect("inventory");
    inv.listeners()
}

/// Every listener on this machine.
pub fn all_listeners() -> Vec<Listener> {
    let q = Query {
        listening_only: true,
        ..Query::default()
    };
    Inventory::collect(&q).expect("inventory").listeners()
}

/// True when a required program exists; otherwise the test skips with the reason, or fails
/// under CI=true (CI must have the packages): [`portolan_testsupport::skip_unless`].
pub fn have(program: &str) -> bool {
    portolan_testsupport::skip_unless(portolan_testsupport::program(program))
}

/// True when /usr/bin/python3 can import flask (the tests' HTTP servers are Flask apps);
/// otherwise the test skips with the reason, or fails under CI=true.
pub fn have_flask() -> bool {
    let ready = portolan_testsupport::program("/usr/bin/python3").and_then(|()| {
        Command::new("/usr/bin/python3")
            .args(["-c", "import flask"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then_some(())
            .ok_or_else(|| {
                "/usr/bin/python3 cannot import flask (scripts/test.sh installs python3-flask)"
                    .to_owned()
            })
    });
    portolan_testsupport::skip_unless(ready)
}

/// A child process killed and reaped on drop.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a program and waits (at most 10 s) until something listens on `port`.
pub fn start(program: &str, args: &[&str], port: u16) -> Server {
    let spawn = || {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    };
    // A program copied just now may be "text file busy" for a moment: another test
    // thread's fork can hold the copy's write descriptor until its exec. Bounded retries.
    let mut child = spawn();
    for _ in 0..40 {
        match &child {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(25));
                child = spawn();
            }
            _ => break,
        }
    }
    let child = child.unwrap_or_else(|e| panic!("start {program}: {e}"));
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("{program} exited at once: {status}");
        }
        if !listeners_on(&[port]).is_empty() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{program} did not listen on {port} within 10 s");
}

/// Connects once to check a server answers (bounded).
pub fn answers(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

/// What portolan's prober says of a TCP port on 127.0.0.1.
pub fn probe(port: u16) -> portolan_probe::Report {
    portolan_probe::probe_tcp(
        SocketAddr::from(([127, 0, 0, 1], port)),
        None,
        &portolan_probe::Signatures::builtin(),
        &portolan_probe::Options::default(),
    )
}

/// socat copied to a directory of its own as `name`, started listening on every address
/// of `port`, then deleted with its directory: a listener whose executable is gone.
pub fn deleted_socat_copy(tag: &str, name: &str, port: u16) -> Server {
    let dir = std::env::temp_dir().join(format!("portolan-audit-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    std::fs::copy("/usr/bin/socat", &exe).unwrap();
    let listen = format!("TCP-LISTEN:{port},bind=0.0.0.0,reuseaddr");
    let srv = start(exe.to_str().unwrap(), &[&listen, "STDOUT"], port);
    std::fs::remove_file(&exe).unwrap();
    let _ = std::fs::remove_dir(&dir);
    srv
}
