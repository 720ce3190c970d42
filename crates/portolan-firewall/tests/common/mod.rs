//! Shared helpers of the namespace tests: root check, namespaces that clean up after
//! themselves, running code and commands inside them.

#![allow(dead_code)]

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether the test may run: root and `nft`/`ip` present. Without them it prints why and
/// returns false, unless CI=true, where it fails.
pub fn privileged_or_skip(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    let tools = ["nft", "ip"].iter().all(|t| {
        Command::new(t)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    if root && tools {
        return true;
    }
    let why = format!("{test}: skipped: needs root, nft and ip (root={root}, tools={tools})");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{why}");
    }
    false
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted (with every process inside killed) on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace `pfw-PID-N-TAG` with loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "pfw-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME program args...`
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// Loads an nft script inside.
    pub fn nft_load(&self, script: &str) -> Output {
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        std::fs::write(&path, script).unwrap();
        let out = self.command("nft").arg("-f").arg(&path).output().unwrap();
        let _ = std::fs::remove_file(&path);
        out
    }

    /// `nft ARGS` inside, panicking on failure.
    pub fn nft(&self, args: &[&str]) -> String {
        run(self.command("nft").args(args))
    }

    /// Runs `f` on a thread moved into this namespace (children it spawns live there too).
    pub fn run_in<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).expect("open netns");
                rustix::thread::move_into_link_name_space(
                    fd.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .expect("setns");
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }

    /// Pids of processes inside (by comparing /proc/PID/ns/net with ours).
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
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "pfw-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The workspace's debug `portolan` binary (built by `cargo build -p portolan`).
pub fn portolan_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let bin = target.join("debug/portolan");
    if !bin.exists() {
        run(Command::new(env!("CARGO"))
            .args(["build", "-p", "portolan"])
            .current_dir(&root));
    }
    bin
}
