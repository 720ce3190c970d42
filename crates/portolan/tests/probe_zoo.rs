//! `portolan probe` against real servers from Debian's packages (openssh-server, nginx,
//! redis-server, a Flask app) started on loopback on unusual ports, and against hostile
//! services. Service, product and version are checked against what the installed package
//! says. The zoo needs root to start (sshd's privilege separation) and the packages
//! installed (scripts/test.sh does both in CI); the Flask-on-port-5000 test needs only flask
//! and a free port 5000. Without their prerequisites these tests say so and skip, except in
//! CI where that is a failure.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, portolan};
use serde_json::Value;

/// Whether the test may run: root (sshd's privilege separation) and `programs` installed;
/// see [`common::skip_unless`].
fn ready_or_skip(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| !Path::new(p).exists())
        .collect();
    let ready = common::root_required().and_then(|()| {
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("needs {missing:?} (scripts/test.sh installs them)"))
        }
    });
    common::skip_unless(test, ready)
}

/// The upstream version of an installed Debian package: `1:9.2p1-2+deb12u3` -> `9.2p1`.
fn package_version(pkg: &str) -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .output()
        .unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    let v = v.split_once(':').map_or(v.as_str(), |(_, r)| r);
    let v = v.rsplit_once('-').map_or(v, |(u, _)| u);
    v.split(['+', '~']).next().unwrap().to_owned()
}

/// A server process, killed when dropped, with its scratch directory.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master stops its workers then (a SIGKILLed master leaves
        // them running). SIGKILL only if it has not gone within 5 s.
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        common::wait_for(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("portolan-zoo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts `cmd` and waits until its port accepts connections.
fn start(mut cmd: Command, port: u16, dir: PathBuf) -> Server {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child, port, dir };
    assert!(
        common::wait_for(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "{cmd:?} did not listen on {port}"
    );
    s
}

fn sshd() -> Server {
    let dir = scratch("sshd");
    let key = dir.join("host_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = free_port();
    let mut cmd = Command::new("/usr/sbin/sshd");
    cmd.args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string(), "-o"])
        .arg("ListenAddress=127.0.0.1")
        .args(["-o", "PidFile=none", "-h"])
        .arg(&key);
    start(cmd, port, dir)
}

fn nginx() -> Server {
    let dir = scratch("nginx");
    let port = free_port();
    let conf = format!(
        "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n access_log off;\n \
         client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n \
         server {{ listen 127.0.0.1:{port}; root {d}; }}\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/nginx");
    cmd.arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"]);
    start(cmd, port, dir)
}

fn redis() -> Server {
    let dir = scratch("redis");
    let port = free_port();
    let mut cmd = Command::new("/usr/bin/redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ])
    .args(["--appendonly", "no", "--daemonize", "no", "--dir"])
    .arg(&dir);
    start(cmd, port, dir)
}

/// A python3 that can import flask: Debian's first (scripts/test.sh installs
/// python3-flask), else whichever python3 is on PATH.
fn flask_python() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import flask"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `flask_python()`, or a skip (a failure in CI) when no python3 has flask.
fn flask_or_skip(test: &str) -> Option<&'static str> {
    let py = flask_python();
    let ready = py
        .map(drop)
        .ok_or_else(|| "python3 cannot import flask (scripts/test.sh installs it)".to_owned());
    if common::skip_unless(test, ready) {
        py
    } else {
        None
    }
}

fn flask(py: &str) -> Server {
    flask_at(py, "127.0.0.1", free_port())
}

fn flask_at(py: &str, host: &str, port: u16) -> Server {
    let dir = scratch(&format!("flask-{port}"));
    let app = format!(
        "from flask import Flask\napp = Flask('zoo')\n@app.route('/')\ndef hi():\n    return 'hi'\n\
         app.run(host='{host}', port={port})\n"
    );
    std::fs::write(dir.join("app.py"), app).unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(dir.join("app.py"));
    start(cmd, port, dir)
}

fn memcached() -> Server {
    let dir = scratch("memcached");
    let port = free_port();
    let mut cmd = Command::new("/usr/bin/memcached");
    cmd.args([
        "-l",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "0",
        "-u",
        "nobody",
    ]);
    start(cmd, port, dir)
}

fn probe(port: u16) -> Value {
    let r = portolan(&["probe", &format!("127.0.0.1:{port}"), "--jsonl"]);
    let mut v = r.jsonl();
    assert_eq!(v.len(), 1, "{r:?}");
    v.remove(0)
}

#[test]
fn real_servers_are_named_with_their_versions() {
    if !ready_or_skip(
        "probe_zoo",
        &[
            "/usr/sbin/sshd",
            "/usr/sbin/nginx",
            "/usr/bin/redis-server",
            "/usr/bin/memcached",
        ],
    ) {
        return;
    }
    let Some(py) = flask_or_skip("probe_zoo") else {
        return;
    };
    let (ssh, web, cache, dev) = (sshd(), nginx(), redis(), flask(py));
    let mem = memcached();

    let v = probe(ssh.port);
    assert_eq!(v["service"], "ssh", "{v}");
    assert_eq!(v["product"], "OpenSSH");
    assert_eq!(v["version"], package_version("openssh-server"), "{v}");
    assert_eq!(v["probe"], "banner");

    let v = probe(web.port);
    assert_eq!(v["service"], "http", "{v}");
    assert_eq!(v["product"], "nginx");
    assert_eq!(v["version"], package_version("nginx-common"), "{v}");

    let v = probe(cache.port);
    assert_eq!(v["service"], "redis", "{v}");
    assert_eq!(v["version"], package_version("redis-server"), "{v}");

    let v = probe(mem.port);
    assert_eq!(v["service"], "memcached", "{v}");
    assert_eq!(v["version"], package_version("memcached"), "{v}");

    // A Flask development server on an unusual port: named as such, not by the number.
    let v = probe(dev.port);
    assert_eq!(v["service"], "http", "{v}");
    assert_eq!(v["product"], "Werkzeug httpd", "{v}");
    // The Werkzeug that this python3 imports (Debian's python3-werkzeug, or pip's).
    let out = Command::new(py)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('werkzeug'))",
        ])
        .output()
        .unwrap();
    let werkzeug = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(v["version"], werkzeug.as_str(), "{v}");
    assert!(v["info"].as_str().unwrap().contains("Flask"), "{v}");

    // `scan -sV` (nmap's spelling of --probe) says the same for every open port.
    let ports = [ssh.port, web.port, cache.port, dev.port]
        .map(|p| p.to_string())
        .join(",");
    let r = portolan(&[
        "scan",
        "127.0.0.1",
        "-p",
        &ports,
        "-sV",
        "--jsonl",
        "--no-progress",
        "-n",
    ]);
    let by_port: std::collections::BTreeMap<u64, Value> = r
        .jsonl()
        .into_iter()
        .map(|v| (v["port"].as_u64().unwrap(), v))
        .collect();
    assert_eq!(by_port.len(), 4, "{r:?}");
    let at = |p: u16| &by_port[&u64::from(p)];
    assert_eq!(at(ssh.port)["product"], "OpenSSH");
    assert_eq!(at(ssh.port)["version"], package_version("openssh-server"));
    assert_eq!(at(web.port)["product"], "nginx");
    assert_eq!(at(cache.port)["service"], "redis");
    assert_eq!(at(dev.port)["product"], "Werkzeug httpd");
    assert!(at(ssh.port)["cpe"]
        .as_str()
        .unwrap()
        .starts_with("cpe:/a:openbsd:openssh:"));

    // The table names them too.
    let r = portolan(&[
        "probe",
        &format!("127.0.0.1:{}", ssh.port),
        &format!("127.0.0.1:{}", web.port),
    ]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("OpenSSH") && r.stdout.contains("nginx"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_flask_dev_server_on_all_interfaces_port_5000_is_named_by_who_and_ls() {
    let Some(py) = flask_or_skip("flask_5000") else {
        return;
    };
    // Only probes whether the port is free: the listener is closed again at once.
    let port_free = TcpListener::bind("0.0.0.0:5000")
        .map(drop)
        .map_err(|e| format!("port 5000 is taken ({e})"));
    if !common::skip_unless("flask_5000", port_free) {
        return;
    }
    let _dev = flask_at(py, "0.0.0.0", 5000);
    let r = portolan(&["who", "5000", "--probe"]);
    r.expect_code(0);
    assert!(
        r.stdout
            .contains("answers on 0.0.0.0:5000: http Werkzeug httpd"),
        "{}",
        r.stdout
    );
    let r = portolan(&["ls", "--port", "5000", "--probe", "--jsonl"]);
    let v = r.jsonl();
    let listener = v
        .iter()
        .find(|s| s["state"] == "listen" && s["local_port"] == 5000)
        .unwrap();
    assert_eq!(
        listener["answers"]["product"], "Werkzeug httpd",
        "{listener}"
    );
    assert_eq!(listener["exposure"], "all_interfaces");
}

/// A hostile service on a loopback port, run by a thread for one connection at a time.
fn hostile(behaviour: fn(TcpStream)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || behaviour(c));
        }
    });
    port
}

#[test]
fn hostile_services_cannot_hang_it_or_reach_the_terminal() {
    let escapes = hostile(|mut c| {
        let _ = c.write_all(b"\x1b]0;owned\x07\x1b[2J\x1b[31mSSH-2.0-evil\r\n");
        std::thread::sleep(Duration::from_secs(1));
    });
    let endless = hostile(|mut c| {
        let chunk = [b'A'; 8192];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) && c.write_all(&chunk).is_ok() {}
    });
    let silent = hostile(|c| {
        let mut c = c;
        let mut b = [0u8; 64];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if matches!(c.read(&mut b), Ok(0) | Err(_)) {
                return;
            }
        }
    });
    let closes = hostile(drop);
    let ports = [escapes, endless, silent, closes];
    let t = Instant::now();
    let targets = ports.map(|p| format!("127.0.0.1:{p}"));
    let mut args = vec!["probe"];
    args.extend(targets.iter().map(String::as_str));
    args.extend(["--timeout", "1000", "--banner-wait", "500"]);
    let r = portolan(&args);
    let took = t.elapsed();
    // Four probes in parallel, each bounded: a few seconds, whatever the services do.
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        !r.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reached the terminal: {:?}",
        r.stdout
    );
    // What the escaping one said is shown, escaped.
    assert!(r.stdout.contains("\\x1b"), "{}", r.stdout);
    // JSON carries the same, and every port has a report.
    args.push("--jsonl");
    let r = portolan(&args);
    let v = r.jsonl();
    assert_eq!(v.len(), 4);
    assert!(
        v[1]["banner"].as_str().unwrap().len() < 400,
        "bounded banner"
    );
    assert!(v[2]["service"].is_null() && v[3]["service"].is_null());
}

#[test]
fn bad_targets_and_signature_files_are_clear_errors() {
    for (args, want) in [
        (&["probe", "nohost"][..], "HOST:PORT"),
        (&["probe", "127.0.0.1:0"], "port 0"),
        (&["probe", "[::1:80"], "closing ]"),
    ] {
        let r = portolan(args);
        r.expect_code(2);
        assert!(r.stderr.contains(want), "{args:?}: {}", r.stderr);
    }
    let dir = scratch("sigs");
    std::fs::write(
        dir.join("bad.toml"),
        "[[match]]\nprobe = \"banner\"\nservice = \"x\"\npattern = \"(\"\n",
    )
    .unwrap();
    let r = portolan(&[
        "probe",
        "127.0.0.1:1",
        "--signatures",
        dir.to_str().unwrap(),
    ]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("bad.toml") && r.stderr.contains("bad pattern"),
        "{}",
        r.stderr
    );
    // A user signature file adds a service.
    std::fs::write(
        dir.join("bad.toml"),
        "[[match]]\nprobe = \"banner\"\nservice = \"zoo-greeter\"\npattern = '^HELLO ZOO ([0-9.]+)'\nproduct = \"Zoo greeter\"\nversion = \"$1\"\n",
    )
    .unwrap();
    let port = hostile(|mut c| {
        let _ = c.write_all(b"HELLO ZOO 4.2\r\n");
        std::thread::sleep(Duration::from_millis(500));
    });
    let r = portolan(&[
        "probe",
        &format!("127.0.0.1:{port}"),
        "--signatures",
        dir.to_str().unwrap(),
        "--jsonl",
    ]);
    let v = &r.jsonl()[0];
    assert_eq!(
        (v["service"].as_str(), v["version"].as_str()),
        (Some("zoo-greeter"), Some("4.2")),
        "{v}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
