//! Shared helpers for portolan's integration tests: running the real binary with a
//! timeout, real python listener/client processes behind guards that kill them on drop,
//! and small readers for JSON, CSV and /proc; in [`servers`], real servers (nginx, dnsmasq,
//! an echo server) and long-running processes for the tests that need them.
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod servers;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portolan");
/// How long a child may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one portolan run may take before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Running portolan

/// The outcome of one run of a command.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub args: String,
}

impl Run {
    /// The exit code; fails the test if the process was killed by a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| {
            panic!(
                "{} ended by a signal: {:?}\n{self:?}",
                self.args, self.status
            )
        })
    }

    /// Fails unless the exit code is `want`, showing everything the command printed.
    pub fn expect_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(want),
            "exit status of `{}`\nstdout:\n{}\nstderr:\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "`{}` panicked:\n{}",
            self.args,
            self.stderr
        );
        self
    }

    /// Parses stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` printed invalid JSON ({e}):\n{}\nstderr:\n{}",
                self.args, self.stdout, self.stderr
            )
        })
    }

    /// Parses stdout as JSON Lines.
    pub fn jsonl(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("`{}`: bad JSON line ({e}): {l}", self.args))
            })
            .collect()
    }

    /// The non-empty lines of stderr.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Kills and reaps a child on drop, so no process outlives a failing test.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Runs a prepared command (stdin, stdout and stderr are set here) with a time limit.
pub fn run_cmd(mut cmd: Command) -> Run {
    let args = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {args}: {e}")),
    );
    let out = drain(child.0.stdout.take());
    let err = drain(child.0.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            start.elapsed() < RUN_TIMEOUT,
            "`{args}` did not finish within {RUN_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8(out.join().expect("stdout reader"))
        .unwrap_or_else(|e| panic!("`{args}`: stdout is not UTF-8: {e}"));
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned();
    Run {
        status,
        stdout,
        stderr,
        args,
    }
}

/// A `Command` for the binary under test, with colour decisions left to the test.
pub fn portolan_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("NO_COLOR");
    cmd
}

/// Runs portolan with these arguments, stdin from /dev/null.
pub fn portolan(args: &[&str]) -> Run {
    run_cmd(portolan_cmd(args))
}

/// Runs portolan, requires exit 0, and parses its JSON output.
pub fn portolan_json(args: &[&str]) -> Value {
    let r = portolan(args);
    r.expect_code(0);
    r.json()
}

/// The `sockets` array of an `ls --json` / `who --json` document.
pub fn sockets(doc: &Value) -> Vec<Value> {
    doc["sockets"]
        .as_array()
        .unwrap_or_else(|| panic!("no sockets array in {doc}"))
        .clone()
}

/// Pids listed in a socket record's `processes`, sorted.
pub fn proc_pids(s: &Value) -> Vec<u32> {
    let mut v: Vec<u32> = s["processes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| u32::try_from(p["pid"].as_u64().expect("pid")).expect("pid fits u32"))
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// A socket record's `pid`, if any.
pub fn pid_of(s: &Value) -> Option<u32> {
    s["pid"]
        .as_u64()
        .map(|p| u32::try_from(p).expect("pid fits u32"))
}

/// A socket record's local port.
pub fn lport(s: &Value) -> u16 {
    u16::try_from(s["local_port"].as_u64().expect("local_port")).expect("port")
}

/// A socket record's remote port, if any.
pub fn rport(s: &Value) -> Option<u16> {
    s["remote_port"]
        .as_u64()
        .map(|p| u16::try_from(p).expect("port"))
}

/// The one listening record on `port` with this local address, failing otherwise.
pub fn listener<'a>(socks: &'a [Value], addr: &str, port: u16, proto: &str) -> &'a Value {
    let found: Vec<&Value> = socks
        .iter()
        .filter(|s| {
            lport(s) == port
                && s["local_addr"] == addr
                && s["proto"] == proto
                && s["remote_port"].is_null()
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {proto} socket on {addr}:{port}, got {found:#?}"
    );
    found[0]
}

// ---------------------------------------------------------------------------------------
// Identity and /proc

fn id_u() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric uid from `id -u`")
}

/// The test process's effective uid.
pub fn my_uid() -> u32 {
    static UID: OnceLock<u32> = OnceLock::new();
    *UID.get_or_init(id_u)
}

/// A user name as NSS gives it (`getent passwd UID`: files, LDAP, SSSD, ...), as portolan
/// looks it up.
pub fn user_name(uid: u32) -> Option<String> {
    let out = Command::new("getent")
        .args(["passwd", &uid.to_string()])
        .output()
        .expect("run getent");
    let line = String::from_utf8(out.stdout).ok()?;
    let name = line.split(':').next()?.trim();
    (out.status.success() && !name.is_empty()).then(|| name.to_string())
}

/// Whether the calling test may run: [`portolan_testsupport::skip_unless`] (a skip line
/// on a user's machine, a failure under CI=true). New tests call that directly; this and
/// the two below are kept so that existing calls compile (the skip line names the test by
/// its thread, so `_test` is not needed).
pub fn skip_unless(_test: &str, ready: Result<(), String>) -> bool {
    portolan_testsupport::skip_unless(ready)
}

/// Whether the tests run as root; see [`skip_unless`] for what happens when not.
pub fn root_or_skip(_test: &str) -> bool {
    portolan_testsupport::skip_unless(portolan_testsupport::root())
}

/// `Ok` when the tests run as root, else the reason to give for a skip.
pub fn root_required() -> Result<(), String> {
    portolan_testsupport::root()
}

/// A process's `comm`, as the kernel reports it.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/comm: {e}"))
        .trim_end_matches('\n')
        .to_string()
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns its last value.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The soft limit on open files for this process.
pub fn fd_limit() -> u64 {
    let text = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

// ---------------------------------------------------------------------------------------
// Python children

/// The python interpreter, resolved once through `python3` (skips pyenv's shim per spawn).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty() && Path::new(p).exists())
            .unwrap_or_else(|| "python3".to_string())
    })
}

/// A listener (TCP or UDP) that accepts and keeps connections, then waits for stdin to
/// close. `PT_COMM` in the environment renames the process (its `comm`). Arguments: proto, family (4/6), address, v6only (-, 0, 1), fork (0/1), ignore
/// SIGTERM (0/1), wait for a "go" line before binding (0/1), marker.
/// Prints `PID` first when waiting for "go", then `PORT FORKED_PID` once listening.
pub const SERVER_PY: &str = r#"
import ctypes, os
if os.environ.get("PT_COMM"):
    ctypes.CDLL(None).prctl(15, os.environ["PT_COMM"].encode(), 0, 0, 0)
import signal, socket, sys, threading
proto, fam, addr, v6only, fork, ignterm, wait_go = sys.argv[1:8]
if ignterm == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if wait_go == "1":
    print(os.getpid(), flush=True)
    sys.stdin.readline()
af = socket.AF_INET6 if fam == "6" else socket.AF_INET
st = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(af, st)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if v6only != "-":
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
s.bind((addr, 0))
if proto == "tcp":
    s.listen(128)
forked = os.fork() if fork == "1" else 0
conns = []
def accept_loop():
    while True:
        c, _ = s.accept()
        conns.append(c)
if proto == "tcp":
    threading.Thread(target=accept_loop, daemon=True).start()
if fork != "1" or forked != 0:
    print(s.getsockname()[1], forked, flush=True)
sys.stdin.read()
os._exit(0)
"#;

/// A TCP client: connects to (address, port), prints its local port, waits for stdin.
pub const CLIENT_PY: &str = r"
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
c = socket.create_connection((addr, port))
print(c.getsockname()[1], flush=True)
sys.stdin.read()
";

/// A listener no process holds: created, passed into a unix socket as an in-flight
/// SCM_RIGHTS message that is never received, then closed. The kernel keeps it listening
/// until the python process (which holds the unix socket pair) exits. Argument: proto.
/// Prints `PORT 0`.
pub const ORPHAN_PY: &str = r#"
import socket, sys
proto = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
if proto == "tcp":
    s.listen(16)
port = s.getsockname()[1]
a, b = socket.socketpair()
socket.send_fds(a, [b"x"], [s.fileno()])
s.close()
print(port, 0, flush=True)
sys.stdin.read()
"#;

/// A TCP listener on 127.0.0.1 shared by two processes that are not parent and child:
/// the listener is created after a double fork and handed to the other process over a
/// unix socket (as in a hot restart). Prints `PORT OTHER_PID`.
pub const SHARED_PY: &str = r#"
import os, socket, sys
a, b = socket.socketpair()
mid = os.fork()
if mid == 0:
    if os.fork() == 0:
        a.close()
        _, fds, _, _ = socket.recv_fds(b, 16, 1)
        b.send(str(os.getpid()).encode())
        sys.stdin.read()
        os._exit(0)
    os._exit(0)
os.waitpid(mid, 0)
b.close()
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
socket.send_fds(a, [b"x"], [s.fileno()])
other = int(a.recv(16))
print(s.getsockname()[1], other, flush=True)
sys.stdin.read()
os._exit(0)
"#;

/// What kind of python listener to start.
#[derive(Debug, Clone, Copy)]
pub struct Listen<'a> {
    pub proto: &'a str,
    pub addr: &'a str,
    /// `None`: leave `IPV6_V6ONLY` at the system default.
    pub v6only: Option<bool>,
    pub fork: bool,
    pub ignore_term: bool,
    pub wait_go: bool,
    /// A `comm` to give the process instead of the interpreter's name.
    pub comm: Option<&'a str>,
}

impl<'a> Listen<'a> {
    pub fn tcp(addr: &'a str) -> Self {
        Listen {
            proto: "tcp",
            addr,
            v6only: None,
            fork: false,
            ignore_term: false,
            wait_go: false,
            comm: None,
        }
    }

    pub fn udp(addr: &'a str) -> Self {
        Listen {
            proto: "udp",
            ..Listen::tcp(addr)
        }
    }
}

/// A python child process: killed and reaped on drop, along with any process it forked.
#[derive(Debug)]
pub struct Py {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub pid: u32,
    /// The port it listens on, or its local port for a client.
    pub port: u16,
    /// A process it forked, which holds the same listener.
    pub forked: Option<u32>,
    marker: String,
}

/// A process name no other process on the machine has (at most 15 bytes, as `comm`).
pub fn unique_comm() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "ptst{}x{}",
        std::process::id() % 1_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn marker() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "portolan-itest-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Py {
    fn spawn(script: &str, args: &[&str], comm: Option<&str>) -> Py {
        let marker = marker();
        let mut cmd = Command::new(python());
        match comm {
            Some(c) => cmd.env("PT_COMM", c),
            None => cmd.env_remove("PT_COMM"),
        };
        let mut child = cmd
            .arg("-c")
            .arg(script)
            .args(args)
            .arg(&marker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id();
        Py {
            child,
            stdin,
            lines: rx,
            pid,
            port: 0,
            forked: None,
            marker,
        }
    }

    /// The next line the child printed, waiting at most [`READY_TIMEOUT`].
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(READY_TIMEOUT) {
            Ok(l) => l,
            Err(e) => {
                let status = self.child.try_wait();
                panic!(
                    "python child {} printed no line ({e}); status {status:?}",
                    self.pid
                )
            }
        }
    }

    /// Starts a listener and waits until it listens.
    pub fn listen(spec: Listen) -> Py {
        let mut py = Py::start(spec);
        if !spec.wait_go {
            py.ready();
        }
        py
    }

    /// Starts a listener; with `wait_go`, returns before it binds (see [`Py::go`]).
    pub fn start(spec: Listen) -> Py {
        let fam = if spec.addr.contains(':') { "6" } else { "4" };
        let v6only = match spec.v6only {
            None => "-",
            Some(false) => "0",
            Some(true) => "1",
        };
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut py = Py::spawn(
            SERVER_PY,
            &[
                spec.proto,
                fam,
                spec.addr,
                v6only,
                flag(spec.fork),
                flag(spec.ignore_term),
                flag(spec.wait_go),
            ],
            spec.comm,
        );
        if spec.wait_go {
            let pid: u32 = py.line().trim().parse().expect("pid line");
            assert_eq!(pid, py.pid, "the child is the python process itself");
        }
        py
    }

    /// Lets a `wait_go` listener bind, and waits until it listens.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").expect("write go");
        stdin.flush().expect("flush go");
        self.ready();
    }

    fn ready(&mut self) {
        let line = self.line();
        let mut it = line.split_whitespace();
        self.port = it
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad ready line {line:?}"));
        let forked: u32 = it
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("bad ready line {line:?}"));
        self.forked = (forked != 0).then_some(forked);
    }

    /// Starts a python process that leaves a listener on 127.0.0.1 that no process holds
    /// (see [`ORPHAN_PY`]); `port` is that listener's.
    pub fn orphan(proto: &str) -> Py {
        let mut py = Py::spawn(ORPHAN_PY, &[proto], None);
        py.ready();
        py
    }

    /// Starts a listener shared with an unrelated process (see [`SHARED_PY`]); `forked` is
    /// the other holder.
    pub fn shared() -> Py {
        let mut py = Py::spawn(SHARED_PY, &[], None);
        py.ready();
        py
    }

    /// Starts a TCP client connected to `addr:port`, and waits until it is connected.
    pub fn connect(addr: &str, port: u16) -> Py {
        let mut py = Py::spawn(CLIENT_PY, &[addr, &port.to_string()], None);
        let line = py.line();
        py.port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad client line {line:?}"));
        py
    }

    /// True while the (direct) child runs; reaps it once it has exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the child to exit, and returns how it ended.
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

    /// The child's `comm` (python3, python3.11, ...).
    pub fn comm(&self) -> String {
        comm(self.pid)
    }

    fn is_ours(&self, pid: u32) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            c.split(|&b| b == 0)
                .any(|arg| arg == self.marker.as_bytes())
        })
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        // Closing stdin ends every process of this child that is still reading it (the
        // forked one too); SIGKILL and a wait make sure of the direct child.
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(f) = self.forked {
            if !wait_for(Duration::from_secs(2), || !pid_alive(f)) && self.is_ours(f) {
                let _ = Command::new("kill")
                    .args(["-KILL", &f.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// CSV

/// Parses RFC 4180 CSV (quoted fields, doubled quotes) into rows of fields.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// A webhook receiver on `l` (bound by the caller, in whichever namespace): records each
/// JSON POST body, answers 200; its URL and what it got.
pub fn webhook_receiver_on(
    l: TcpListener,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&got);
    thread::spawn(move || {
        for conn in l.incoming().take(500) {
            let Ok(mut c) = conn else { continue };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            let mut is_json = false;
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if l.starts_with("content-type:") && l.contains("application/json") {
                    is_json = true;
                }
                line.clear();
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() && is_json {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    sink.lock().unwrap().push(v);
                }
            }
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}
