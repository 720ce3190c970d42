//! What we know about one process: read from /proc/PID, each field on its own so that one
//! unreadable file (another user's `exe`) does not lose the rest.

use std::os::unix::ffi::OsStrExt;

use portolan_core::escape::bytes_lossless;

use crate::cgroup::{classify_cgroup, CgroupOwner};

/// An owning process. Names are bytes, as the kernel gave them (a program may be started
/// from a file name that is not UTF-8, and its `comm`, `exe` and `cmdline` then are not
/// either): the `*_text` methods give the lossless text (`\xNN` for bytes that are not
/// UTF-8) that matching and JSON use; a terminal gets the bytes through
/// `portolan_core::escape::bytes_for_terminal`, in the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// The kernel's short command name (`comm`, at most 15 bytes).
    pub name: Vec<u8>,
    /// Executable path; `None` when it cannot be read (another user's process without root).
    pub exe: Option<Vec<u8>>,
    /// True when the executable was deleted or replaced since the process started.
    pub exe_deleted: bool,
    /// Arguments joined by spaces.
    pub cmdline: Vec<u8>,
    /// Effective uid.
    pub uid: u32,
    /// The unit or container the process runs in, from its cgroup.
    pub cgroup: Option<CgroupOwner>,
}

impl ProcessInfo {
    /// A process answers to `name` when its command name (`comm`), its executable's file
    /// name or its argv\[0\]'s file name (also without a trailing `:`, as `nginx: master
    /// process` names itself) equals it, compared as lossless text (`py\xff` names a
    /// program whose name has the byte 0xff).
    pub fn matches_name(&self, name: &str) -> bool {
        names_match(&self.name, name)
            || self
                .exe
                .as_deref()
                .is_some_and(|e| names_match(basename(e), name))
            || argv0_matches(first_word(&self.cmdline), name)
    }

    /// The command name as lossless text.
    pub fn name_text(&self) -> String {
        bytes_lossless(&self.name)
    }

    /// The executable path as lossless text.
    pub fn exe_text(&self) -> Option<String> {
        self.exe.as_deref().map(bytes_lossless)
    }

    /// The command line as lossless text.
    pub fn cmdline_text(&self) -> String {
        bytes_lossless(&self.cmdline)
    }
}

/// The one comparison of a name the kernel gave (bytes) with a name asked for (lossless
/// text): bytes against bytes, so nothing is allocated unless `field` is not UTF-8 (only
/// then can its lossless text, with its `\xNN` escapes, differ from its bytes).
fn names_match(field: &[u8], name: &str) -> bool {
    if std::str::from_utf8(field).is_ok() {
        field == name.as_bytes()
    } else {
        bytes_lossless(field) == name
    }
}

fn basename(path: &[u8]) -> &[u8] {
    path.rsplit(|&c| c == b'/').next().unwrap_or(path)
}

/// The first space-separated word of a command line (argv\[0\] as `cmdline` joins it).
fn first_word(cmdline: &[u8]) -> &[u8] {
    cmdline.split(|&c| c == b' ').next().unwrap_or(&[])
}

fn argv0_matches(argv0: &[u8], name: &str) -> bool {
    let a0 = basename(argv0);
    !a0.is_empty()
        && (names_match(a0, name) || a0.strip_suffix(b":").is_some_and(|a| names_match(a, name)))
}

/// Strips the ` (deleted)` the kernel appends to the `exe` link of a replaced file.
fn strip_deleted(exe: &[u8]) -> (&[u8], bool) {
    match exe.strip_suffix(b" (deleted)") {
        Some(e) => (e, true),
        None => (exe, false),
    }
}

/// Reads `/proc/PID/comm` without its newline.
fn read_comm(base: &str) -> Option<Vec<u8>> {
    let mut comm = std::fs::read(format!("{base}/comm")).ok()?;
    if comm.last() == Some(&b'\n') {
        comm.pop();
    }
    Some(comm)
}

/// Whether process `pid` answers to `name` ([`ProcessInfo::matches_name`]), found with
/// the fewest reads: `comm` first, then the `exe` link, then `cmdline`, stopping at the
/// first that matches. False for a process that has exited.
pub(crate) fn answers_to(pid: u32, name: &str) -> bool {
    let base = format!("/proc/{pid}");
    if read_comm(&base).is_some_and(|c| names_match(&c, name)) {
        return true;
    }
    if let Ok(exe) = std::fs::read_link(format!("{base}/exe")) {
        let (exe, _) = strip_deleted(exe.as_os_str().as_bytes());
        if names_match(basename(exe), name) {
            return true;
        }
    }
    std::fs::read(format!("{base}/cmdline")).is_ok_and(|b| {
        // As `read` joins it: the first non-empty argument's first word.
        let a0 = b
            .split(|&c| c == 0)
            .find(|p| !p.is_empty())
            .unwrap_or_default();
        argv0_matches(first_word(a0), name)
    })
}

/// The pids of the processes that answer to `name` ([`answers_to`]). Processes that exit
/// meanwhile are left out.
pub(crate) fn pids_named(name: &str) -> Vec<u32> {
    crate::owners::all_pids()
        .into_iter()
        .filter(|&pid| answers_to(pid, name))
        .collect()
}

/// Reads a process; `None` if it has exited. Every file is read as bytes: `comm`, `status`
/// (its `Name:` line) and `cgroup` carry the command name and the cgroup path, which need
/// not be UTF-8. The name comes from `comm` alone (`status` is read for the uid and ppid).
pub fn read(pid: u32) -> Option<ProcessInfo> {
    let base = format!("/proc/{pid}");
    let status = std::fs::read(format!("{base}/status")).ok()?;
    let mut uid = None;
    let mut ppid = None;
    let num = |v: &[u8], nth: usize| -> Option<u32> {
        std::str::from_utf8(v)
            .ok()?
            .split_ascii_whitespace()
            .nth(nth)?
            .parse()
            .ok()
    };
    for line in status.split(|&c| c == b'\n') {
        if let Some(v) = line.strip_prefix(b"Uid:") {
            // Real, effective, saved, filesystem: ownership is the effective uid.
            uid = num(v, 1);
        } else if let Some(v) = line.strip_prefix(b"PPid:") {
            ppid = num(v, 0);
        }
    }
    let name = read_comm(&base).unwrap_or_default();
    let (exe, exe_deleted) = match std::fs::read_link(format!("{base}/exe")) {
        Ok(p) => {
            let (e, deleted) = strip_deleted(p.as_os_str().as_bytes());
            (Some(e.to_vec()), deleted)
        }
        Err(_) => (None, false),
    };
    let cmdline = std::fs::read(format!("{base}/cmdline")).map_or_else(
        |_| Vec::new(),
        |b| {
            let parts: Vec<&[u8]> = b.split(|&c| c == 0).filter(|p| !p.is_empty()).collect();
            parts.join(&b' ')
        },
    );
    let cgroup = std::fs::read(format!("{base}/cgroup"))
        .ok()
        .and_then(|t| cgroup_path(&t))
        .map(|p| classify_cgroup(&bytes_lossless(&p)));
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

/// The unified (v2) path from /proc/PID/cgroup, else the v1 `name=systemd` one, as bytes
/// (a cgroup directory may be named with any bytes).
fn cgroup_path(text: &[u8]) -> Option<Vec<u8>> {
    let mut v1 = None;
    for line in text.split(|&c| c == b'\n') {
        if let Some(p) = line.strip_prefix(b"0::") {
            return Some(p.to_vec());
        }
        let mut parts = line.splitn(3, |&c| c == b':');
        let (_, ctrl, path) = (parts.next(), parts.next(), parts.next());
        if ctrl == Some(b"name=systemd".as_slice()) {
            v1 = path.map(<[u8]>::to_vec);
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
        assert!(answers_to(me.pid, &me.name_text()));
        assert!(pids_named(&me.name_text()).contains(&me.pid));
        assert!(!pids_named("no-such-process-name-here").contains(&me.pid));
        let mut other = me.clone();
        other.name = b"x".to_vec();
        other.exe = Some(b"/usr/sbin/nginx".to_vec());
        other.cmdline = b"nginx: master process".to_vec();
        assert!(other.matches_name("nginx"));
        other.exe = None;
        assert!(other.matches_name("nginx"));
        assert!(!other.matches_name("ngin"));
        // Names that are not UTF-8 match as lossless text.
        other.name = b"py\xff".to_vec();
        other.exe = Some(b"/tmp/\xfe/srv\xff".to_vec());
        other.cmdline = b"/tmp/\xfe/srv\xff -m x".to_vec();
        assert!(other.matches_name("py\\xff"));
        assert!(other.matches_name("srv\\xff"));
        assert_eq!(
            portolan_core::escape::bytes_for_terminal(&other.name),
            "py\\xff"
        );
        assert_eq!(other.exe_text().as_deref(), Some("/tmp/\\xfe/srv\\xff"));
    }

    #[test]
    fn cgroup_lines() {
        assert_eq!(
            cgroup_path(b"0::/system.slice/nginx.service\n").as_deref(),
            Some(b"/system.slice/nginx.service".as_slice())
        );
        assert_eq!(
            cgroup_path(b"4:memory:/x\n1:name=systemd:/user.slice\n").as_deref(),
            Some(b"/user.slice".as_slice())
        );
        assert_eq!(cgroup_path(b"garbage"), None);
        assert_eq!(
            cgroup_path(b"0::/a\xff.scope\n").as_deref(),
            Some(b"/a\xff.scope".as_slice())
        );
    }
}
