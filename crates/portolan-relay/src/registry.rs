//! Which running `portolan forward` forwards what, so `who 8080` and the overview can say
//! "portolan forward -> 127.0.0.1:5000" instead of only "portolan".
//!
//! A running forwarder writes `PID.json` in `/run/portolan/forward/` (root) or
//! `$XDG_RUNTIME_DIR/portolan/forward/` (`/run/user/UID/...`; others), written whole
//! (a temporary file renamed), rewritten after a reload and removed at exit. A reader
//! trusts a file only while its pid's process still has the start time the file records
//! (a reused pid is not misnamed), and reads at most 1 MiB of it.

use std::fs;
use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::server::BoundRule;

/// The largest registry file read.
const MAX_BYTES: u64 = 1 << 20;

/// One listening socket of a forwarder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub proto: String,
    pub addr: SocketAddr,
    pub target: String,
    pub rule: String,
    /// For the one socket of a redirect range: the ports nftables redirects to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirected: Option<(u16, u16)>,
}

/// A forwarder's file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub pid: u32,
    /// The process's start time (clock ticks after boot, /proc/PID/stat field 22).
    pub starttime: u64,
    /// The network namespace it listens in (the inode of /proc/PID/ns/net).
    #[serde(default)]
    pub netns: u64,
    pub forwards: Vec<Entry>,
}

/// This process's network namespace (the inode of its nsfs file), 0 if unreadable.
pub fn current_netns() -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

impl Record {
    /// The forward listening on `addr` (exact address, or the wildcard socket it is).
    pub fn find(&self, proto: &str, addr: SocketAddr) -> Option<&Entry> {
        self.forwards
            .iter()
            .find(|e| e.proto == proto && e.addr == addr)
    }
}

/// The directory of the files of processes run by `uid`.
pub fn dir_for(uid: u32) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/run/portolan/forward");
    }
    PathBuf::from(format!("/run/user/{uid}/portolan/forward"))
}

fn own_dir() -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    if uid == 0 {
        return dir_for(0);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Path::new(&d).join("portolan/forward"),
        _ => dir_for(uid),
    }
}

/// The start time of `pid` (field 22 of /proc/PID/stat), if it runs.
pub fn starttime(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// This process's registration; the file is removed when it is dropped.
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Registration {
    /// Writes this process's file.
    pub fn write(bound: &[BoundRule]) -> io::Result<Registration> {
        Ok(Registration {
            path: write_file(bound)?,
        })
    }

    /// Rewrites the file after a reload (a temporary file renamed over it: a failure
    /// leaves the last good record).
    pub fn update(&self, bound: &[BoundRule]) -> io::Result<()> {
        write_file(bound).map(|_| ())
    }
}

fn write_file(bound: &[BoundRule]) -> io::Result<PathBuf> {
    {
        let pid = std::process::id();
        let dir = own_dir();
        fs::create_dir_all(&dir)?;
        let record = Record {
            pid,
            starttime: starttime(pid).unwrap_or(0),
            netns: current_netns(),
            forwards: bound
                .iter()
                .flat_map(|b| {
                    b.addrs.iter().map(move |a| Entry {
                        proto: b.proto.as_str().to_owned(),
                        addr: *a,
                        target: if b.addrs.len() > 1 || b.range_mode == crate::RangeMode::Redirect {
                            format!("{} (range {})", b.target, b.listen)
                        } else {
                            b.target.clone()
                        },
                        rule: b.name.clone(),
                        redirected: (b.range_mode == crate::RangeMode::Redirect)
                            .then(|| (b.listen.ports.start().get(), b.listen.ports.end().get())),
                    })
                })
                .collect(),
        };
        remove_stale(&dir);
        let path = dir.join(format!("{pid}.json"));
        let tmp = dir.join(format!(".{pid}.json.tmp"));
        let text = serde_json::to_vec(&record).map_err(io::Error::other)?;
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &path)?;
        Ok(path)
    }
}

/// Removes the files of forwarders that no longer run (killed with SIGKILL, or the machine
/// lost power with /run on disk), so the directory does not grow.
fn remove_stale(dir: &Path) {
    let Ok(files) = fs::read_dir(dir) else { return };
    for f in files.flatten().take(100_000) {
        let name = f.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = fs::read(f.path())
            .ok()
            .and_then(|t| serde_json::from_slice::<Record>(&t).ok())
            .is_some_and(|r| Some(r.starttime) == starttime(pid));
        if !alive {
            let _ = fs::remove_file(f.path());
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The record of forwarder `pid` run by `uid`, if it has a current one.
pub fn lookup(pid: u32, uid: u32) -> Option<Record> {
    let mut dirs = vec![dir_for(uid)];
    if uid != 0 {
        // A forwarder started with XDG_RUNTIME_DIR elsewhere cannot be found from here;
        // root's directory is tried too (a forwarder that dropped privileges after start).
        dirs.push(dir_for(0));
    }
    for d in dirs {
        let path = d.join(format!("{pid}.json"));
        let Ok(f) = fs::File::open(&path) else {
            continue;
        };
        let mut text = Vec::new();
        if f.take(MAX_BYTES).read_to_end(&mut text).is_err() {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Record>(&text) else {
            continue;
        };
        if record.pid == pid && Some(record.starttime) == starttime(pid) {
            return Some(record);
        }
    }
    None
}

/// Every forwarder in this network namespace that this user can see: root's directory and
/// each user's runtime directory (readable ones only), files whose process still runs.
pub fn all() -> Vec<Record> {
    let mut dirs = vec![dir_for(0)];
    if let Ok(users) = fs::read_dir("/run/user") {
        for u in users.flatten() {
            dirs.push(u.path().join("portolan/forward"));
        }
    }
    let mut out = Vec::new();
    for d in dirs {
        let Ok(files) = fs::read_dir(&d) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(meta) = f.metadata() else { continue };
            if let Some(r) = lookup(pid, meta.uid()) {
                out.push(r);
            }
        }
    }
    let here = current_netns();
    out.retain(|r| r.netns == here);
    out.sort_by_key(|r| r.pid);
    out.dedup_by_key(|r| r.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_reads() {
        let t = starttime(std::process::id()).unwrap();
        assert!(t > 0);
        assert_eq!(starttime(u32::MAX), None);
    }
}
