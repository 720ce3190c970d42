//! Helpers shared by the test binaries that start real servers: skipping, free ports,
//! scratch directories and server processes stopped on drop.
// Each test binary uses some of these.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A test that cannot run says why and is skipped, except under `CI=true`, where that is
/// a failure: the workspace's one prerequisite check.
pub use portolan_testsupport::skip_or_fail;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    portolan_testsupport::root().is_ok()
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh, empty scratch directory for `name`.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portolan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whether something accepts connections on `addr` within 20 s (false at once when
/// `child` exits first).
pub fn wait_listening(addr: SocketAddr, child: &mut Child) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A server process, stopped on drop (SIGTERM, so a server such as slapd can flush its
/// database; SIGKILL after 5 s), with its scratch directory, removed after it.
pub struct Server {
    pub child: Child,
    pub dir: Option<PathBuf>,
}

impl Server {
    /// A server without a scratch directory.
    pub fn new(child: Child) -> Server {
        Server { child, dir: None }
    }

    /// A server whose scratch directory `dir` goes with it.
    pub fn with_dir(child: Child, dir: PathBuf) -> Server {
        Server {
            child,
            dir: Some(dir),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
