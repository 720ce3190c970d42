//! A throwaway PostgreSQL server for tests: a cluster in a temporary directory, started on
//! 127.0.0.1 on a free port, stopped and removed on drop (whether the test passed or not).
//! When root, initdb and postgres run as the `postgres` user (postgres refuses root).
//! A missing prerequisite skips with a reason, except with CI=true, where it fails.

#![allow(clippy::missing_panics_doc)] // test support: a failed setup step panics, by design

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "portolan-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// Where initdb and postgres are; PORTOLAN_PG_BIN overrides (another version, a test of
/// the skip path).
fn pg_bin() -> PathBuf {
    std::env::var_os("PORTOLAN_PG_BIN").map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        PathBuf::from,
    )
}

/// A prerequisite is missing: skip with a reason, unless CI=true, where it fails
/// ([`portolan_testsupport::skip_or_fail`]).
fn unavailable(reason: &str) -> Option<PgServer> {
    portolan_testsupport::skip_or_fail(&format!("no PostgreSQL server: {reason}"));
    None
}

/// uid and gid of a user in /etc/passwd.
fn passwd_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// A PostgreSQL cluster in a temporary directory, running on 127.0.0.1; stopped (fast
/// shutdown) and removed when dropped, whether the test passed or not.
#[derive(Debug)]
pub struct PgServer {
    child: Option<Child>,
    pub port: u16,
    /// Removed after the server stops (fields drop after `Drop::drop`).
    dir: TempDir,
}

impl PgServer {
    /// Starts a server, or says why it cannot (None after printing the reason; a panic when
    /// CI=true).
    pub fn start() -> Option<PgServer> {
        let bin = pg_bin();
        for tool in ["initdb", "postgres"] {
            if !bin.join(tool).is_file() {
                return unavailable(&format!("{} is missing", bin.join(tool).display()));
            }
        }
        let root = euid() == 0;
        let dir = TempDir::new("pg");
        if root {
            if !Path::new("/usr/bin/setpriv").is_file() {
                return unavailable("running as root and setpriv is missing");
            }
            let Some((uid, gid)) = passwd_ids("postgres") else {
                return unavailable("running as root and there is no postgres user");
            };
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("chown the cluster directory");
        }
        let dir_path = dir.path().to_owned();
        let command = |tool: &str| {
            let mut c = if root {
                let mut c = Command::new("/usr/bin/setpriv");
                c.args([
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                ])
                .arg(bin.join(tool));
                c
            } else {
                Command::new(bin.join(tool))
            };
            c.current_dir(&dir_path).stdin(Stdio::null());
            c
        };
        let data = dir_path.join("data");
        let out = command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                let why = format!(
                    "initdb failed: {}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                return unavailable(&why);
            }
            Err(e) => return unavailable(&format!("cannot run initdb: {e}")),
        }

        // A free port can be taken between our look and the server's bind: try a few.
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let log_path = dir_path.join("server.log");
            let log = File::create(&log_path).expect("create the server log");
            let child = command("postgres")
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir_path.display()))
                .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                .args(["-c", "synchronous_commit=off", "-c", "max_connections=40"])
                .args(["-c", "shared_buffers=16MB"])
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn();
            let child = match child {
                Ok(c) => c,
                Err(e) => return unavailable(&format!("cannot start postgres: {e}")),
            };
            let mut child = Some(child);
            match wait_ready(&mut child, port) {
                Ok(()) => return Some(PgServer { child, port, dir }),
                Err(why) => {
                    stop(&mut child);
                    last_log = format!(
                        "{why}; log: {}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        }
        unavailable(&format!("postgres did not start: {last_log}"))
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The same database over the server's Unix socket: what a process in another network
    /// namespace reaches (the socket is a file; 127.0.0.1 there is that namespace's own).
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{db}?host={}",
            self.port,
            self.dir.0.display()
        )
    }

    /// A client on the maintenance database.
    pub fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls).expect("admin client")
    }

    /// A fresh, empty database; its URL.
    pub fn fresh_db(&self, name: &str) -> String {
        self.admin()
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        self.url(name)
    }
}

/// Waits (at most 30 s) until the server accepts connections.
fn wait_ready(child: &mut Option<Child>, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(child) = child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("postgres exited: {status}"));
            }
        }
        let mut cfg = postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(1));
        if cfg.connect(postgres::NoTls).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("not ready within 30 s".into())
}

fn stop(child: &mut Option<Child>) {
    let Some(mut child) = child.take() else {
        return;
    };
    // SIGINT is PostgreSQL's fast shutdown: disconnect clients, stop.
    let _ = Command::new("/bin/kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for PgServer {
    fn drop(&mut self) {
        stop(&mut self.child);
        // The directory goes with `dir`.
    }
}
