//! Tests that need root: naming the unit from a real cgroup, and what an unprivileged user
//! sees of root's sockets. Without root they are skipped, except under CI=true, where a
//! missing prerequisite fails.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{listener, pid_of, run_cmd, sockets, wait_for, Listen, Py, BIN};

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .expect("a cgroup2 mount")
}

/// A cgroup directory created for one test, removed on drop (once its processes are gone).
#[derive(Debug)]
struct TestCgroup {
    dir: PathBuf,
    unit: String,
}

impl TestCgroup {
    fn create(tag: &str) -> TestCgroup {
        let unit = format!("portolan-test-{}-{tag}.service", std::process::id());
        let dir = cgroup2_root().join(&unit);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup { dir, unit }
    }

    fn adopt(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.dir.display()));
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cg.contains(&format!("0::/{}", self.unit)), "{cg}");
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // rmdir fails while a process is still inside; the child guard has killed and
        // reaped ours by now, but the kernel may take a moment to empty the group.
        let dir = self.dir.clone();
        wait_for(Duration::from_secs(5), || {
            std::fs::remove_dir(&dir).is_ok() || !dir.exists()
        });
    }
}

#[test]
fn unit_comes_from_the_cgroup() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::root()) {
        return;
    }
    // Declared first, dropped last: after the child is gone.
    let cg = TestCgroup::create("who");
    let mut py = Py::start(Listen {
        wait_go: true,
        ..Listen::tcp("127.0.0.1")
    });
    cg.adopt(py.pid);
    py.go();
    let port = py.port.to_string();
    let socks = sockets(&common::portolan_json(&["who", "--json", &port]));
    let s = listener(&socks, "127.0.0.1", py.port, "tcp");
    assert_eq!(pid_of(s), Some(py.pid));
    assert_eq!(s["unit"], cg.unit.as_str(), "{s}");
    assert_eq!(s["cgroup"], format!("/{}", cg.unit));
    assert_eq!(s["user_unit"], false);
    assert!(s["container"].is_null());
    // The table says it too, and `who UNIT` finds the process.
    let r = common::portolan(&["who", &port]);
    r.expect_code(0);
    assert!(
        r.stdout
            .contains(&format!("(pid {})  user root  unit {}", py.pid, cg.unit)),
        "{}",
        r.stdout
    );
    for name in [
        cg.unit.clone(),
        cg.unit.trim_end_matches(".service").to_string(),
    ] {
        let socks = sockets(&common::portolan_json(&["who", "--json", &name]));
        assert_eq!(socks.len(), 1, "{name}: {socks:#?}");
        assert_eq!(pid_of(&socks[0]), Some(py.pid), "{name}");
    }
}

/// The binary, where uid 65534 can run it: in place if every directory on the way lets
/// others through, else a copy in a world-readable temporary directory.
struct NobodyBinary {
    path: PathBuf,
    tmp: Option<PathBuf>,
}

impl NobodyBinary {
    fn get() -> NobodyBinary {
        let bin = Path::new(BIN);
        let reachable = bin
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
            && std::fs::metadata(bin).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
        if reachable {
            return NobodyBinary {
                path: bin.to_path_buf(),
                tmp: None,
            };
        }
        let tmp = std::env::temp_dir().join(format!("portolan-nobody-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("temp dir");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = tmp.join("portolan");
        std::fs::copy(bin, &path).expect("copy the binary");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        NobodyBinary {
            path,
            tmp: Some(tmp),
        }
    }

    fn run(&self, args: &[&str]) -> common::Run {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&self.path)
            .args(args)
            .current_dir("/")
            .env_remove("NO_COLOR");
        run_cmd(cmd)
    }
}

impl Drop for NobodyBinary {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

#[test]
fn unprivileged_user_sees_root_listener_without_its_process() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::root()) {
        return;
    }
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    let nobody = NobodyBinary::get();
    let r = nobody.run(&["--version"]);
    r.expect_code(0);

    let r = nobody.run(&["ls", "--json"]);
    r.expect_code(0);
    let socks = sockets(&r.json());
    let s = listener(&socks, "127.0.0.1", py.port, "tcp");
    assert_eq!(s["uid"], 0);
    assert_eq!(s["user"], "root");
    assert!(s["pid"].is_null(), "{s}");
    assert!(s["process"].is_null(), "{s}");
    assert_eq!(s["processes"], serde_json::json!([]));
    assert_eq!(s["exposure"], "loopback");
    let notes: Vec<&str> = r.stderr_lines();
    assert_eq!(notes.len(), 1, "exactly one note: {:?}", r.stderr);
    assert!(notes[0].starts_with("note: "), "{}", notes[0]);
    assert!(
        notes[0].contains("may not inspect") && notes[0].contains("run as root"),
        "{}",
        notes[0]
    );
    // The JSON carries the same warning.
    let warnings = r.json()["warnings"].clone();
    assert_eq!(warnings.as_array().map(Vec::len), Some(1), "{warnings}");

    // `who` says the process is not visible, and still names the user.
    let r = nobody.run(&["who", &py.port.to_string()]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("(process not visible)  user root"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("run as root to see the process"),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains(&format!("pid {}", py.pid)),
        "{}",
        r.stdout
    );
    // `kill` cannot signal what it cannot see, and says so.
    let r = nobody.run(&["kill", &py.port.to_string(), "--yes"]);
    r.expect_code(2);
    assert!(r.stderr.contains("run as root"), "{}", r.stderr);
}

#[test]
fn unprivileged_user_still_sees_the_unit_from_the_socket_cgroup() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::root()) {
        return;
    }
    let cg = TestCgroup::create("nobody");
    let mut py = Py::start(Listen {
        wait_go: true,
        ..Listen::tcp("127.0.0.1")
    });
    // Moved before it creates its socket: the kernel records this cgroup on the socket.
    cg.adopt(py.pid);
    py.go();
    let nobody = NobodyBinary::get();
    let r = nobody.run(&["ls", "--json", "--port", &py.port.to_string()]);
    r.expect_code(0);
    let socks = sockets(&r.json());
    let s = listener(&socks, "127.0.0.1", py.port, "tcp");
    assert!(s["pid"].is_null(), "{s}");
    assert_eq!(s["unit"], cg.unit.as_str(), "{s}");
    assert_eq!(s["cgroup"], format!("/{}", cg.unit));
}

/// A listener that no process holds (in flight in a unix socket): shown with its user
/// from the kernel, and `kill` refuses without signalling anything.
#[test]
fn listener_held_by_no_process() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::root()) {
        return;
    }
    let mut py = Py::orphan("tcp");
    let port = py.port.to_string();
    let socks = sockets(&common::portolan_json(&["who", "--json", &port]));
    let s = listener(&socks, "127.0.0.1", py.port, "tcp");
    assert!(s["pid"].is_null(), "{s}");
    assert_eq!(s["processes"], serde_json::json!([]));
    assert_eq!(s["uid"], 0);
    assert_eq!(s["user"], "root");
    assert_eq!(s["exposure"], "loopback");

    let r = common::portolan(&["who", &port]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("(process not visible)  user root"),
        "{}",
        r.stdout
    );

    let r = common::portolan(&["kill", &port, "--yes"]);
    r.expect_code(2);
    let errors: Vec<&str> = r
        .stderr_lines()
        .into_iter()
        .filter(|l| l.starts_with("portolan: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(errors[0].contains(&format!("{port}/tcp")), "{}", errors[0]);
    assert!(py.running());
    let socks = sockets(&common::portolan_json(&["who", "--json", &port]));
    listener(&socks, "127.0.0.1", py.port, "tcp");

    let r = common::portolan(&["free", &port]);
    r.expect_code(1);
    assert!(
        r.stdout.contains(&format!("{port}/tcp is in use")),
        "{}",
        r.stdout
    );
}

/// Root is told to "run as root" when a socket's holder cannot be found: `who` and the
/// warnings say the holder is unreadable even to root; `kill` and `free` must too.
#[test]
fn hidden_holder_advice_fits_root() {
    if !portolan_testsupport::skip_unless(portolan_testsupport::root()) {
        return;
    }
    let py = Py::orphan("tcp");
    let port = py.port.to_string();
    let r = common::portolan(&["kill", &port, "--yes"]);
    r.expect_code(2);
    assert!(
        !r.stderr.contains("run as root"),
        "kill tells root: {}",
        r.stderr
    );
    let r = common::portolan(&["free", &port]);
    r.expect_code(1);
    assert!(
        !r.stdout.contains("run as root"),
        "free tells root: {}",
        r.stdout
    );
}
