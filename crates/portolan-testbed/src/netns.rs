//! Named network namespaces: create and delete them through `ip netns`, run code on a
//! thread moved into one (setns affects only the calling thread), kill what runs inside,
//! and find leftovers. Every name this crate creates starts with [`PREFIX`].

use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use rustix::process::{Pid, Signal};
use rustix::thread::LinkNameSpaceType;

use crate::TestbedError;

/// Every namespace (and so every TUN device and nftables table inside) is named `pt-...`.
pub const PREFIX: &str = "pt-";
/// Where `ip netns` keeps its bind mounts.
const NETNS_DIR: &str = "/run/netns";
/// Per-namespace files that `ip netns exec` bind-mounts over their namesakes in /etc.
const ETC_NETNS: &str = "/etc/netns";

/// Gives programs run with `ip netns exec ns` their own /etc/hosts (`hosts`, plus
/// localhost) and a resolv.conf that points at the namespace's own loopback, where nothing
/// answers: name lookups in the testbed never leave it.
pub(crate) fn write_resolver_files(ns: &str, hosts: &str) -> Result<(), TestbedError> {
    let dir = Path::new(ETC_NETNS).join(ns);
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| TestbedError::io(format!("write {}/{name}", dir.display()), e))
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| TestbedError::io(format!("create {}", dir.display()), e))?;
    write(
        "hosts",
        format!("127.0.0.1 localhost\n::1 localhost\n{hosts}"),
    )?;
    write(
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n".to_owned(),
    )
}

/// Removes the /etc/netns files of `ns`, if any.
fn remove_resolver_files(ns: &str) {
    let _ = std::fs::remove_dir_all(Path::new(ETC_NETNS).join(ns));
}

/// `ip netns add`/`del` race on the first mount of /run/netns; serialise them in-process.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion (with `stdin` fed in if given); an error names the command
/// line and carries its stderr.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String, TestbedError> {
    let line = render(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| TestbedError::io(format!("run `{line}`"), e))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the command's own error below.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| TestbedError::io(format!("wait for `{line}`"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(TestbedError::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Whether `program` is on PATH.
pub(crate) fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

pub(crate) fn add(name: &str) -> Result<(), TestbedError> {
    let _g = NETNS_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run(Command::new("ip").args(["netns", "add", name]), None).map(drop)
}

/// Runs `script` (one `ip` command per line, without the leading `ip`) inside `ns`.
pub(crate) fn ip_batch(ns: &str, script: &str) -> Result<(), TestbedError> {
    run(
        Command::new("ip").args(["-n", ns, "-batch", "-"]),
        Some(script),
    )
    .map(drop)
}

/// Loads an nftables ruleset inside `ns`.
pub(crate) fn nft(ns: &str, ruleset: &str) -> Result<(), TestbedError> {
    run(
        Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]),
        Some(ruleset),
    )
    .map(drop)
}

/// Moves the calling thread into network namespace `ns`.
pub(crate) fn enter(ns: &str) -> Result<(), TestbedError> {
    let path = Path::new(NETNS_DIR).join(ns);
    let fd = rustix::fs::open(
        &path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| TestbedError::io(format!("open {}", path.display()), e))?;
    rustix::thread::move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| TestbedError::io(format!("enter network namespace {ns}"), e))
}

/// Runs `f` on a short-lived thread inside `ns` and returns its result. Sockets and TUN
/// devices created by `f` belong to `ns` for good, whichever thread uses them later.
pub(crate) fn in_netns<T: Send, F: FnOnce() -> T + Send>(
    ns: &str,
    f: F,
) -> Result<T, TestbedError> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("pt-netns".into())
            .spawn_scoped(s, || {
                enter(ns)?;
                Ok(f())
            })
            .map_err(|e| TestbedError::io("spawn a thread", e))?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Writes one sysctl (path under /proc/sys) for the calling thread's namespace.
pub(crate) fn sysctl(key: &str, value: &str) -> Result<(), TestbedError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value)
        .map_err(|e| TestbedError::io(format!("write {value:?} to {path}"), e))
}

fn ns_inode(ns: &str) -> Option<u64> {
    rustix::fs::stat(Path::new(NETNS_DIR).join(ns))
        .ok()
        .map(|s| s.st_ino)
}

/// Processes (other than this one) whose network namespace is `ns`, like `ip netns pids`.
pub(crate) fn pids_in(ns: &str) -> Vec<Pid> {
    let Some(ino) = ns_inode(ns) else {
        return Vec::new();
    };
    let want = format!("net:[{ino}]");
    let me = rustix::process::getpid();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(Pid::from_raw)
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{}/ns/net", pid.as_raw_nonzero()))
                .is_ok_and(|l| l.as_os_str() == want.as_str())
        })
        .collect()
}

/// Kills every process inside `ns` (SIGKILL, by pid) and deletes the namespace; for a
/// target namespace, also the directory of the UDP services that ran there.
pub(crate) fn remove(ns: &str) -> Result<(), TestbedError> {
    remove_resolver_files(ns);
    if let Some(id) = ns.strip_suffix("-tgt") {
        crate::services::remove_dir_of(id);
    }
    for _ in 0..3 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _g = NETNS_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !Path::new(NETNS_DIR).join(ns).exists() {
        return Ok(());
    }
    run(Command::new("ip").args(["netns", "del", ns]), None).map(drop)
}

/// Every namespace whose name starts with [`PREFIX`], sorted.
pub fn list() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The pid encoded in a name `pt-<pid>-<n>-<role>`.
fn owner_pid(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes the namespaces of testbeds whose process no longer exists (a test that was
/// killed before its Drop ran). Returns the names removed.
pub(crate) fn remove_stale() -> Vec<String> {
    let mut removed = Vec::new();
    // /etc/netns files whose namespace is gone.
    if let Ok(d) = std::fs::read_dir(ETC_NETNS) {
        let live = list();
        for e in d.filter_map(Result::ok) {
            if let Ok(n) = e.file_name().into_string() {
                if n.starts_with(PREFIX) && !live.contains(&n) {
                    remove_resolver_files(&n);
                }
            }
        }
    }
    for name in list() {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if remove(&name).is_ok() {
            removed.push(name);
        }
    }
    removed
}

/// Removes every `pt-` namespace (with the processes, TUN devices and nftables tables in
/// it), whoever created it. Returns the names removed.
pub fn remove_all() -> Result<Vec<String>, TestbedError> {
    let mut removed = Vec::new();
    let mut first_err = None;
    for name in list() {
        match remove(&name) {
            Ok(()) => removed.push(name),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Removes every namespace of the testbed `id` (`pt-<pid>-<n>`).
pub fn remove_id(id: &str) -> Result<Vec<String>, TestbedError> {
    let prefix = format!("{id}-");
    let mut removed = Vec::new();
    for name in list().into_iter().filter(|n| n.starts_with(&prefix)) {
        remove(&name)?;
        removed.push(name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn owner_pid() {
        assert_eq!(super::owner_pid("pt-1234-0-scan"), Some(1234));
        assert_eq!(super::owner_pid("pt-x-0-scan"), None);
        assert_eq!(super::owner_pid("other"), None);
    }
}
