//! Real servers for the tests that need one, and what they stand on: a scratch directory,
//! a free port on a given loopback address, long-running processes whose stderr is
//! collected (nginx, dnsmasq, portolan's own daemons), and a threaded echo server.
//!
//! Every process is started in a process group of its own and the group is killed and
//! reaped on drop, so nothing outlives a failing test; every wait is bounded.

use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, kill_process_group, Pid, Signal};

use super::wait_for;

/// A scratch directory of the test's own, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// `$TMPDIR/portolan-TAG-PID`, empty.
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("portolan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        Scratch(d)
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `path(name)` as a string, for a command line.
    pub fn arg(&self, name: &str) -> String {
        self.path(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A TCP port free on `ip` right now (bound, then released). Tests that each use a loopback
/// address of their own (127.x.y.z) do not race one another for it.
pub fn free_tcp_port(ip: Ipv4Addr) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    l.local_addr().expect("local_addr").port()
}

/// A UDP port free on `ip` right now (bound, then released).
pub fn free_udp_port(ip: Ipv4Addr) -> u16 {
    let s = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind udp {ip}:0: {e}"));
    s.local_addr().expect("local_addr").port()
}

/// Raises this process's soft limit on open files to at least `want` (at most the hard
/// limit); returns the soft limit now.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let cur = l.current.unwrap_or(u64::MAX);
    if cur >= want {
        return cur;
    }
    let new = l.maximum.map_or(want, |max| want.min(max));
    l.current = Some(new);
    match setrlimit(Resource::Nofile, l) {
        Ok(()) => new,
        Err(_) => cur,
    }
}

/// A TCP connection to `dst` from the local address `src` (port chosen by the kernel), as
/// a client with several addresses picks one.
pub fn connect_from(src: IpAddr, dst: SocketAddr) -> io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType};
    let fam = if src.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket(fam, SocketType::STREAM, None)?;
    rustix::net::bind(&fd, &SocketAddr::new(src, 0))?;
    rustix::net::connect(&fd, &dst)?;
    Ok(TcpStream::from(fd))
}

/// A TCP listener on `ip:port` (0: any free port) with a backlog of 4096, so a burst of
/// connections is not dropped at the door (std's is 128).
pub fn listen_tcp(ip: Ipv4Addr, port: u16) -> TcpListener {
    use rustix::net::{sockopt, AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    sockopt::set_socket_reuseaddr(&fd, true).expect("SO_REUSEADDR");
    rustix::net::bind(&fd, &SocketAddr::from((ip, port)))
        .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
    rustix::net::listen(&fd, 4096).expect("listen");
    TcpListener::from(fd)
}

/// Waits up to `timeout` for one connection on `l`.
pub fn accept_within(l: &TcpListener, timeout: Duration) -> TcpStream {
    l.set_nonblocking(true).expect("nonblocking listener");
    let start = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking stream");
                return s;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < timeout,
                    "no connection on {:?} within {timeout:?}",
                    l.local_addr()
                );
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Long-running processes

/// A long-running process in a process group of its own, its stderr collected line by line;
/// the group is killed and the process reaped on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    what: String,
}

impl Daemon {
    /// Starts `cmd` (stdin and stdout from and to /dev/null, stderr collected).
    pub fn spawn(mut cmd: Command) -> Daemon {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let err = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut line = Vec::new();
            while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        Daemon {
            child,
            stderr,
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` until `cond` holds for its stderr; false if it does not, or
    /// the process exits first (after a last look).
    pub fn wait_stderr(&mut self, timeout: Duration, cond: impl Fn(&str) -> bool) -> bool {
        let mut exited = false;
        wait_for(timeout, || {
            if cond(&self.stderr()) {
                return true;
            }
            if exited {
                return false;
            }
            exited = !self.running();
            false
        }) || {
            // The last lines of a process that exited may still be on their way.
            thread::sleep(Duration::from_millis(50));
            cond(&self.stderr())
        }
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pid fits i32")).expect("pid");
        kill_process(pid, sig).unwrap_or_else(|e| panic!("kill {sig:?} {}: {e}", self.what));
    }

    /// Asks it to stop: SIGTERM, a second one if it still runs after `grace`, then waits
    /// `grace` again (the kill on drop follows if need be). Never panics (for drops).
    pub fn terminate(&mut self, grace: Duration) {
        let Some(pid) = i32::try_from(self.pid()).ok().and_then(Pid::from_raw) else {
            return;
        };
        for _ in 0..2 {
            if !self.running() || kill_process(pid, Signal::TERM).is_err() {
                return;
            }
            if self.wait_exit(grace).is_some() {
                return;
            }
        }
    }

    /// True while it runs (reaps it once it has exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit; how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The command line it was started with (for messages).
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pgid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// nginx and dnsmasq from Debian

/// Debian's nginx (nginx-light, which scripts/zoo.sh installs).
pub const NGINX: &str = "/usr/sbin/nginx";
/// Debian's dnsmasq (dnsmasq-base, which scripts/zoo.sh installs).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// An nginx of the test's own: its configuration, pid file, logs and temporary files in a
/// scratch directory, one process (`master_process off`), in the foreground.
#[derive(Debug)]
pub struct Nginx {
    pub daemon: Daemon,
    pub dir: Scratch,
}

impl Nginx {
    /// Starts nginx with these `server { ... }` blocks (`{dir}` in them stands for its
    /// directory) and waits until each of `listens` accepts a connection.
    pub fn start(tag: &str, servers: &str, listens: &[SocketAddr]) -> Nginx {
        let dir = Scratch::new(tag);
        let d = dir.dir().to_str().expect("UTF-8 temp path").to_owned();
        std::fs::create_dir_all(dir.path("www")).expect("mkdir www");
        let conf = format!(
            "pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             daemon off;\n\
             master_process off;\n\
             events {{}}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               {}\n\
             }}\n",
            servers.replace("{dir}", &d)
        );
        std::fs::write(dir.path("nginx.conf"), conf).expect("write nginx.conf");
        let mut cmd = Command::new(NGINX);
        cmd.args([
            "-e",
            &format!("{d}/error.log"),
            "-c",
            &format!("{d}/nginx.conf"),
        ]);
        let mut daemon = Daemon::spawn(cmd);
        for a in listens {
            let up = wait_for(Duration::from_secs(10), || {
                TcpStream::connect_timeout(a, Duration::from_secs(1)).is_ok() || !daemon.running()
            });
            assert!(
                up && daemon.running(),
                "nginx did not listen on {a}: {}\n{}",
                daemon.stderr(),
                std::fs::read_to_string(dir.path("error.log")).unwrap_or_default()
            );
        }
        Nginx { daemon, dir }
    }
}

/// A dnsmasq of the test's own on `addr:port` (UDP and TCP), answering only from its
/// arguments (`--address=/NAME/IP`, ...): no resolv.conf, no hosts file, no upstream.
#[derive(Debug)]
pub struct Dnsmasq {
    pub daemon: Daemon,
    pub dir: Scratch,
}

impl Dnsmasq {
    /// Starts it and waits until it says it started.
    pub fn start(tag: &str, addr: Ipv4Addr, port: u16, answers: &[String]) -> Dnsmasq {
        let dir = Scratch::new(tag);
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--log-facility=-",
            "--user=root",
            &format!("--pid-file={}", dir.arg("dnsmasq.pid")),
            &format!("--listen-address={addr}"),
            &format!("--port={port}"),
        ])
        .args(answers);
        let mut daemon = Daemon::spawn(cmd);
        assert!(
            daemon.wait_stderr(Duration::from_secs(10), |e| e.contains("started")),
            "dnsmasq did not start: {}",
            daemon.stderr()
        );
        Dnsmasq { daemon, dir }
    }
}

// ---------------------------------------------------------------------------------------
// An echo server

/// A TCP echo server on a thread per connection: each connection first gets `banner` (if
/// any), then every byte back, until EOF. Counts connections open at once.
#[derive(Debug)]
pub struct Echo {
    pub addr: SocketAddr,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
    /// The most connections open at once so far.
    pub peak: Arc<AtomicUsize>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    /// Listens on `ip` (a free port) and serves until dropped.
    pub fn start(ip: Ipv4Addr, banner: Option<&'static [u8]>) -> Echo {
        let l = listen_tcp(ip, 0);
        let addr = l.local_addr().expect("local_addr");
        let open = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (now_open, most, count, stopping) = (
            Arc::clone(&open),
            Arc::clone(&peak),
            Arc::clone(&accepted),
            Arc::clone(&stop),
        );
        thread::spawn(move || {
            for conn in l.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(c) = conn else { continue };
                count.fetch_add(1, Ordering::Relaxed);
                let now = now_open.fetch_add(1, Ordering::Relaxed) + 1;
                most.fetch_max(now, Ordering::Relaxed);
                let now_open = Arc::clone(&now_open);
                let spawned = thread::Builder::new().stack_size(64 * 1024).spawn(move || {
                    echo(c, banner);
                    now_open.fetch_sub(1, Ordering::Relaxed);
                });
                assert!(spawned.is_ok(), "echo server: cannot start a thread");
            }
        });
        Echo {
            addr,
            open,
            peak,
            accepted,
            stop,
        }
    }
}

fn echo(mut c: TcpStream, banner: Option<&[u8]>) {
    // A connection idle this long is abandoned (a test that failed elsewhere).
    let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
    if let Some(b) = banner {
        if c.write_all(b).is_err() {
            return;
        }
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}
