//! A named network namespace of the test's own: its ports are all free and its addresses
//! are the test's, whatever the machine runs. Needs root and `ip` (check with
//! [`Netns::ready`] through [`crate::skip_unless`]).

use std::ffi::OsStr;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace with loopback up, deleted on drop (every process still inside
/// killed first).
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns (`ip netns exec NAME`).
    pub name: String,
}

impl Netns {
    /// `Ok` when namespaces can be made here (root, and `ip` installed), else why not.
    pub fn ready() -> Result<(), String> {
        crate::all([crate::root(), crate::program("ip")])
    }

    /// A fresh namespace `PREFIX-PID-N-TAG` (PREFIX `pt`) with loopback up.
    ///
    /// # Panics
    /// When `ip` fails (check [`Netns::ready`] first).
    pub fn new(tag: &str) -> Netns {
        Netns::with_prefix("pt", tag)
    }

    /// A fresh namespace named `PREFIX-PID-N-TAG`, with loopback up.
    ///
    /// # Panics
    /// When `ip` fails (check [`Netns::ready`] first).
    pub fn with_prefix(prefix: &str, tag: &str) -> Netns {
        let name = format!(
            "{prefix}-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME program`: add the arguments, then run it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `ip -n NAME args...`
    ///
    /// # Panics
    /// When the command fails (with its stderr).
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// Adds `addr/32` (e.g. one from 198.18.0.0/15) on the namespace's loopback device: a
    /// local address that is not a loopback address, reachable from inside only.
    pub fn add_address(&self, addr: std::net::Ipv4Addr) {
        self.ip(&["addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }

    /// Runs `f` on a thread moved into this namespace: the sockets it opens and the
    /// processes it spawns live there.
    ///
    /// # Panics
    /// When the thread cannot enter the namespace, or `f` panics (with its message).
    pub fn run_in<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|s| {
            let inside = std::thread::Builder::new()
                // The test's name, so a skip line or a panic inside still names the test.
                .name(std::thread::current().name().unwrap_or("netns").to_owned())
                .spawn_scoped(s, || {
                    let fd = std::fs::File::open(&path)
                        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                    rustix::thread::move_into_link_name_space(
                        fd.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
                    f()
                })
                .expect("spawn a thread");
            match inside.join() {
                Ok(t) => t,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Pids of the processes inside (those whose /proc/PID/ns/net is this namespace).
    pub fn pids(&self) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(ours) = std::fs::metadata(Path::new("/run/netns").join(&self.name)) else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
                if m.ino() == ours.ino() && m.dev() == ours.dev() {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, panicking with its stderr when it fails.
fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_has_free_ports_and_goes_away() {
        if !crate::skip_unless(Netns::ready()) {
            return;
        }
        let ns = Netns::new("self");
        let path = Path::new("/run/netns").join(&ns.name);
        ns.add_address(std::net::Ipv4Addr::new(198, 18, 0, 1));
        // Bound outside and inside at once: two namespaces, two port spaces.
        let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = outside.local_addr().unwrap().port();
        ns.run_in(|| {
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("the same port inside");
            std::net::TcpListener::bind(("198.18.0.1", 0)).expect("the test's own address");
        });
        assert!(path.exists());
        drop(ns);
        assert!(!path.exists(), "{} left behind", path.display());
    }
}
