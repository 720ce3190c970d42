//! Shared helpers of the namespace tests: root check, namespaces that clean up after
//! themselves (portolan-testsupport's, with nftables), scratch directories, the binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether the test may run: root and `nft`/`ip` present. Without them the test skips
/// with the reason, or fails under CI=true: [`portolan_testsupport::skip_unless`], whose
/// skip line names the test by its thread.
pub fn privileged_or_skip() -> bool {
    portolan_testsupport::skip_unless(portolan_testsupport::all([
        portolan_testsupport::root(),
        portolan_testsupport::program("nft"),
        portolan_testsupport::program("ip"),
    ]))
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

/// A named network namespace `pfw-PID-N-TAG` with loopback up, deleted on drop (every
/// process inside killed): [`portolan_testsupport::Netns`], plus nftables.
#[derive(Debug)]
pub struct Netns(portolan_testsupport::Netns);

impl std::ops::Deref for Netns {
    type Target = portolan_testsupport::Netns;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Netns {
    /// A fresh namespace `pfw-PID-N-TAG` with loopback up.
    pub fn new(tag: &str) -> Netns {
        Netns(portolan_testsupport::Netns::with_prefix("pfw", tag))
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
