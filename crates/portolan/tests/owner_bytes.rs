//! Owners whose names are not UTF-8: a real program started from a path with a `\xff`
//! byte in its name (so its `comm` and `exe` are not UTF-8) must keep its owner in every
//! command: who/ls (table and JSON, both socket sources), kill, free and the audit.

mod common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use common::{pid_alive, pid_of, portolan, portolan_json, python, sockets, wait_for};
use portolan_testsupport::skip_unless;

/// Binds 127.0.0.1:0, listens, prints the port, then waits for stdin to close.
const LISTEN_PY: &str = r"
import socket, sys
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
sys.stdin.read()
";

/// The name given to the copied interpreter: `py` and the byte 0xff.
const NAME: &[u8] = b"py\xff";
/// How portolan writes that name (lossless text, and for a terminal).
const SHOWN: &str = "py\\xff";

/// A python interpreter copied to a path whose file name is `py\xff`, listening.
struct Hostile {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    port: u16,
    dir: PathBuf,
}

impl Hostile {
    fn start(tag: &str) -> Hostile {
        let dir =
            std::env::temp_dir().join(format!("portolan-owner-bytes-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join(OsStr::from_bytes(NAME));
        std::fs::copy(python(), &exe).expect("copy the python interpreter");
        // A thread of this test binary that forks while the copy is open for writing
        // keeps it open until its exec: "text file busy" for a moment.
        let mut tries = 0;
        let mut child = loop {
            match Command::new(&exe)
                .arg("-c")
                .arg(LISTEN_PY)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
            {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(26) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("start the copied interpreter: {e}"),
            }
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
        let pid = child.id();
        let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm, b"py\xff\n", "the kernel took the file name as comm");
        Hostile {
            stdin: child.stdin.take(),
            child,
            pid,
            port,
            dir,
        }
    }

    fn exe(&self) -> String {
        let mut s = self.dir.to_str().unwrap().to_string();
        s.push('/');
        s.push_str(SHOWN);
        s
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn have_python() -> Result<(), String> {
    if Path::new(python()).exists() {
        Ok(())
    } else {
        Err(format!("python3 not found ({})", python()))
    }
}

#[test]
fn who_and_ls_name_a_non_utf8_owner_from_both_sources() {
    if !skip_unless(have_python()) {
        return;
    }
    let h = Hostile::start("who");
    let port = h.port.to_string();
    for source in ["netlink", "proc"] {
        let doc = portolan_json(&["--source", source, "who", "--json", &port]);
        // Its listener only: another test's connection may use the same number as its
        // ephemeral port (a TIME-WAIT socket of 127.84.x.y:PORT was seen in CI).
        let socks: Vec<_> = sockets(&doc)
            .into_iter()
            .filter(|s| s["state"] == "listen")
            .collect();
        assert_eq!(socks.len(), 1, "{source}: {doc}");
        let s = &socks[0];
        assert_eq!(pid_of(s), Some(h.pid), "{source}: {s}");
        assert_eq!(s["process"].as_str(), Some(SHOWN), "{source}: {s}");
        let p = &s["processes"][0];
        assert_eq!(p["exe"].as_str(), Some(h.exe().as_str()), "{source}: {s}");

        let r = portolan(&["--source", source, "who", &port]);
        r.expect_code(0);
        assert!(
            r.stdout.contains(&format!("{SHOWN}/{}", h.pid)),
            "{source}:\n{}",
            r.stdout
        );
        let r = portolan(&["--source", source, "ls", "-l", "--port", &port]);
        r.expect_code(0);
        assert!(
            r.stdout.contains(&format!("{SHOWN}/{}", h.pid)),
            "{source}:\n{}",
            r.stdout
        );
    }
    // Matching by name works on the lossless text.
    let doc = portolan_json(&["ls", "-l", "--json", "--process", SHOWN]);
    let pids: Vec<Option<u32>> = sockets(&doc).iter().map(pid_of).collect();
    assert_eq!(pids, vec![Some(h.pid)], "{doc}");
    let doc = portolan_json(&["who", "--json", SHOWN]);
    assert!(
        sockets(&doc).iter().any(|s| pid_of(s) == Some(h.pid)),
        "{doc}"
    );
}

#[test]
fn free_names_and_kill_signals_a_non_utf8_owner() {
    if !skip_unless(have_python()) {
        return;
    }
    let mut h = Hostile::start("kill");
    let port = h.port.to_string();
    let r = portolan(&["free", &port]);
    assert!(
        r.stdout.contains(&format!("{SHOWN} (pid {})", h.pid)),
        "{}\n{}",
        r.stdout,
        r.stderr
    );

    let r = portolan(&["kill", "--yes", &port]);
    r.expect_code(0);
    assert!(r.stdout.contains("is free now"), "{}", r.stdout);
    assert!(
        wait_for(Duration::from_secs(5), || matches!(
            h.child.try_wait(),
            Ok(Some(_))
        )),
        "the holder was not signalled"
    );
    assert!(!pid_alive(h.pid) || h.child.try_wait().is_ok());
}

#[test]
fn audit_judges_a_non_utf8_owner_against_the_policy() {
    if !skip_unless(have_python()) {
        return;
    }
    let h = Hostile::start("audit");
    let policy = h.dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[settings]\nallow_loopback = false\n[[allow]]\nport = {}\naddress = [\"127.0.0.1\"]\nprocess = \"sshd\"\n",
            h.port
        ),
    )
    .unwrap();
    let r = portolan(&[
        "audit",
        "--json",
        "--no-firewall",
        "--fail-on",
        "high",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    let mine: Vec<&serde_json::Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["socket"]["port"].as_u64() == Some(u64::from(h.port)))
        .collect();
    let mismatch = mine
        .iter()
        .find(|f| f["id"] == "PP003-owner-mismatch")
        .unwrap_or_else(|| panic!("no owner finding: {mine:#?}"));
    assert_eq!(mismatch["severity"], "high", "{mismatch:#}");
    assert!(
        mismatch["detail"].as_str().unwrap().contains(SHOWN),
        "{mismatch:#}"
    );
    assert_eq!(mismatch["owner"]["pid"].as_u64(), Some(u64::from(h.pid)));
    assert_eq!(r.code(), 1, "--fail-on high fails: {}", r.stderr);
}

/// A unit whose cgroup path is not UTF-8 is still named (lossless text).
#[test]
fn a_non_utf8_cgroup_path_still_names_the_unit() {
    let unified = Path::new("/sys/fs/cgroup/unified");
    let root = if unified.join("cgroup.procs").exists() {
        unified
    } else {
        Path::new("/sys/fs/cgroup")
    };
    let ready = if !root.join("cgroup.procs").exists() {
        Err("no cgroup v2 hierarchy mounted".to_string())
    } else if !rustix::process::geteuid().is_root() {
        Err("creating a cgroup needs root".to_string())
    } else {
        have_python()
    };
    if !skip_unless(ready) {
        return;
    }
    let h = Hostile::start("cgroup");
    let mut dirname = format!("pt{}", std::process::id()).into_bytes();
    dirname.extend_from_slice(b"\xff.scope");
    let cg = root.join(OsStr::from_bytes(&dirname));
    std::fs::create_dir(&cg).expect("create a cgroup");
    std::fs::write(cg.join("cgroup.procs"), h.pid.to_string()).expect("move the listener");
    let unit = format!("pt{}\\xff.scope", std::process::id());
    let doc = portolan_json(&["who", "--json", &h.port.to_string()]);
    let got = sockets(&doc)[0]["unit"].clone();
    drop(h);
    // The cgroup is empty once the listener has exited.
    let _ = wait_for(Duration::from_secs(5), || std::fs::remove_dir(&cg).is_ok());
    assert_eq!(got.as_str(), Some(unit.as_str()), "{doc}");
}
