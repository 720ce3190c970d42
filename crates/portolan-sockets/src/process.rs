//! What we know about one process: read from /proc/PID, each field on its own so that one
//! unreadable file (another user's `exe`) does not lose the rest.

use portolan_core::escape::bytes_lossless;

use crate::cgroup::{classify_cgroup, CgroupOwner};

/// An owning process. Strings are as the kernel gave them (invalid UTF-8 shown as `\xNN`);
/// renderers escape them before they reach a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// The kernel's short command name (`comm`, at most 15 bytes).
    pub name: String,
    /// Executable path; `None` when it cannot be read (another user's process without root).
    pub exe: Option<String>,
    /// True when the executable was deleted or replaced since the process started.
    pub exe_deleted: bool,
    /// Arguments joined by spaces.
    pub cmdline: String,
    /// Effective uid.
    pub uid: u32,
    /// The unit or container the process runs in, from its cgroup.
    pub cgroup: Option<CgroupOwner>,
}

impl ProcessInfo {
    /// A process answers to `name` when its command name (`comm`), its executable's file
    /// name or its argv\[0\]'s file name (also without a trailing `:`, as `nginx: master
    /// process` names itself) equals it.
    pub fn matches_name(&self, name: &str) -> bool {
        self.name == name
            || self.exe.as_deref().is_some_and(|e| basename(e) == name)
            || argv0_matches(self.cmdline.split(' ').next().unwrap_or(""), name)
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn argv0_matches(argv0: &str, name: &str) -> bool {
    let a0 = basename(argv0);
    !a0.is_empty() && (a0 == name || a0.strip_suffix(':') == Some(name))
}

/// The pids of the processes that answer to `name` ([`ProcessInfo::matches_name`]), found
/// with the fewest reads: `comm` first, then the `exe` link, then `cmdline`, stopping at
/// the first that matches. Processes that exit meanwhile are left out.
pub(crate) fn pids_named(name: &str) -> Vec<u32> {
    crate::owners::all_pids()
        .into_iter()
        .filter(|&pid| {
            let base = format!("/proc/{pid}");
            if let Ok(mut comm) = std::fs::read(format!("{base}/comm")) {
                if comm.last() == Some(&b'\n') {
                    comm.pop();
                }
                if bytes_lossless(&comm) == name {
                    return true;
                }
            }
            if let Ok(exe) = std::fs::read_link(format!("{base}/exe")) {
                let exe = bytes_lossless(exe.as_os_str().as_encoded_bytes());
                let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
                if basename(exe) == name {
                    return true;
                }
            }
            std::fs::read(format!("{base}/cmdline")).is_ok_and(|b| {
                // As `read` sees it: the first non-empty argument's first word.
                let a0 = b
                    .split(|&c| c == 0)
                    .find(|p| !p.is_empty())
                    .unwrap_or_default();
                let a0 = bytes_lossless(a0);
                argv0_matches(a0.split(' ').next().unwrap_or(""), name)
            })
        })
        .collect()
}

/// Reads a process; `None` if it has exited.
pub fn read(pid: u32) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
    let mut uid = None;
    let mut ppid = None;
    let mut status_name = None;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("Uid:") {
            // Real, effective, saved, filesystem: ownership is the effective uid.
            uid = v
                .split_ascii_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok());
        } else if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Name:") {
            status_name = Some(v.trim().to_string());
        }
    }
    let name = std::fs::read(format!("{base}/comm")).map_or_else(
        |_| status_name.unwrap_or_default(),
        |mut b| {
            if b.last() == Some(&b'\n') {
                b.pop();
            }
            bytes_lossless(&b)
        },
    );
    let (exe, exe_deleted) = match std::fs::read_link(format!("{base}/exe")) {
        Ok(p) => {
            let s = bytes_lossless(p.as_os_str().as_encoded_bytes());
            match s.strip_suffix(" (deleted)") {
                Some(stripped) => (Some(stripped.to_string()), true),
                None => (Some(s), false),
            }
        }
        Err(_) => (None, false),
    };
    let cmdline = std::fs::read(format!("{base}/cmdline")).map_or_else(
        |_| String::new(),
        |b| {
            let parts: Vec<String> = b
                .split(|&c| c == 0)
                .filter(|p| !p.is_empty())
                .map(bytes_lossless)
                .collect();
            parts.join(" ")
        },
    );
    let cgroup = std::fs::read_to_string(format!("{base}/cgroup"))
        .ok()
        .and_then(|t| cgroup_path(&t))
        .map(|p| classify_cgroup(&p));
    Some(ProcessInfo {
        pid,
        ppid,
        name,
        exe,
        exe_deleted,
        cmdline,
        uid: uid.unwrap_or(u32::MAX),
        cgroup,
    })
}

/// The unified (v2) path from /proc/PID/cgroup, else the v1 `name=systemd` one.
fn cgroup_path(text: &str) -> Option<String> {
    let mut v1 = None;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("0::") {
            return Some(p.to_string());
        }
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = (parts.next(), parts.next(), parts.next());
        if ctrl == Some("name=systemd") {
            v1 = path.map(str::to_string);
        }
    }
    v1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        let me = read(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(!me.name.is_empty());
        assert!(me.exe.is_some());
        assert_eq!(me.uid, rustix::process::geteuid().as_raw());
    }

    #[test]
    fn finds_self_by_name() {
        let me = read(std::process::id()).unwrap();
        assert!(me.matches_name(&me.name));
        assert!(pids_named(&me.name).contains(&me.pid));
        assert!(!pids_named("no-such-process-name-here").contains(&me.pid));
        let mut other = me.clone();
        other.name = "x".into();
        other.exe = Some("/usr/sbin/nginx".into());
        other.cmdline = "nginx: master process".into();
        assert!(other.matches_name("nginx"));
        other.exe = None;
        assert!(other.matches_name("nginx"));
        assert!(!other.matches_name("ngin"));
    }

    #[test]
    fn cgroup_lines() {
        assert_eq!(
            cgroup_path("0::/system.slice/nginx.service\n").as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(
            cgroup_path("4:memory:/x\n1:name=systemd:/user.slice\n").as_deref(),
            Some("/user.slice")
        );
        assert_eq!(cgroup_path("garbage"), None);
    }
}
