//! `portolan probe` and `scan -sV` against the zoo of real servers from Debian's packages
//! (scripts/zoo.sh and scripts/zoo.d/*.sh: web servers and proxies, application servers,
//! DNS, mail and FTP, messaging, data stores and monitoring, small daemons, remote access;
//! over 40 servers), each on its own loopback address, on its default port and on an
//! unusual one; and against hostile services. Service, product and version are checked
//! against what the installed package says (the zoo's manifest). The zoo needs root and the
//! packages (scripts/test.sh installs them in CI); the Flask-on-port-5000 test needs only
//! flask and a free port 5000. Without their prerequisites these tests say so and skip,
//! except in CI where that is a failure.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::portolan;
use serde_json::Value;

/// The zoo uses fixed ports (and the zoo's Flask has port 5000 on 127.0.0.5): one test at a
/// time among those that take them.
static FIXED_PORTS: Mutex<()> = Mutex::new(());

fn fixed_ports() -> std::sync::MutexGuard<'static, ()> {
    FIXED_PORTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn zoo_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/zoo.sh")
}

/// Whether the zoo may run: root, and every package `scripts/zoo.sh missing` lists
/// installed (flask and the unpacked ones included); see
/// [`portolan_testsupport::skip_unless`].
fn zoo_ready_or_skip() -> bool {
    let ready = portolan_testsupport::root().and_then(|()| {
        let out = Command::new(zoo_script())
            .arg("missing")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/zoo.sh: {e}"))?;
        let missing = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<&str> = missing.split_whitespace().collect();
        if !out.status.success() || !missing.is_empty() {
            return Err(format!(
                "needs {missing:?} (scripts/test.sh installs them): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    });
    portolan_testsupport::skip_unless(ready)
}

/// One line of the zoo's manifest: a port of a server, and the truth about it.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    addr: String,
    port: u16,
    proto: String,
    service: String,
    product: String,
    /// `None` where the product never tells an unauthenticated client its version.
    version: Option<String>,
    /// How the port offers TLS: `tls` (handshake first), `starttls`, or `-` (clear only).
    tls: String,
}

/// The running zoo; `zoo.sh down` when dropped, even when an assertion failed.
struct Zoo {
    dir: PathBuf,
    entries: Vec<Entry>,
}

impl Zoo {
    fn up() -> Zoo {
        let dir = std::env::temp_dir().join(format!("portolan-zoo-{}", std::process::id()));
        let out = Command::new(zoo_script())
            .arg("up")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/zoo.sh");
        let mut zoo = Zoo {
            dir,
            entries: Vec::new(),
        };
        assert!(
            out.status.success(),
            "scripts/zoo.sh up failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = std::fs::read_to_string(zoo.dir.join("manifest.tsv")).unwrap();
        zoo.entries = manifest.lines().map(parse_entry).collect();
        zoo
    }

    /// The entries of one protocol, `tcp` or `udp`.
    fn on(&self, proto: &str) -> Vec<&Entry> {
        self.entries.iter().filter(|e| e.proto == proto).collect()
    }
}

impl Drop for Zoo {
    fn drop(&mut self) {
        let _ = Command::new(zoo_script())
            .arg("down")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status();
    }
}

fn parse_entry(line: &str) -> Entry {
    let f: Vec<&str> = line.split('\t').collect();
    assert_eq!(f.len(), 8, "bad manifest line {line:?}");
    Entry {
        name: f[0].to_owned(),
        addr: f[1].to_owned(),
        port: f[2].parse().unwrap(),
        proto: f[3].to_owned(),
        service: f[4].to_owned(),
        product: f[5].to_owned(),
        version: (f[6] != "-").then(|| f[6].to_owned()),
        tls: f[7].to_owned(),
    }
}

/// What is wrong with what portolan said about `e` (nothing: `None`). The product must name
/// the truth's product; the version must be the truth, or absent where the truth is `-`:
/// a version that is not the installed one is a false claim.
fn wrong(e: &Entry, got: &Value) -> Option<String> {
    let s = |k: &str| got[k].as_str().unwrap_or("");
    let mut why = Vec::new();
    if s("service") != e.service {
        why.push(format!("service {:?}, want {:?}", s("service"), e.service));
    }
    // Product `-`: nothing on the wire names the software (plain Node, rpcbind), so no
    // product may be claimed.
    let product_ok = if e.product == "-" {
        s("product").is_empty()
    } else {
        s("product")
            .to_lowercase()
            .contains(&e.product.to_lowercase())
    };
    if !product_ok {
        why.push(format!("product {:?}, want {:?}", s("product"), e.product));
    }
    match (&e.version, got["version"].as_str()) {
        (Some(want), Some(v)) if v == want => {}
        (None, None) => {}
        // Known gap: node_exporter tells its version at /metrics only, asked first on its
        // own port (9100); elsewhere the plain GET / already names it, without a version.
        (Some(_), None) if e.name == "node-exporter" && e.port != 9100 => {}
        (want, v) => why.push(format!("version {v:?}, want {want:?}")),
    }
    // The manifest says how each port offers TLS: a handshake first (nginx's HTTPS,
    // Dovecot's IMAPS/POP3S) with the certificate zoo.sh generated; STARTTLS (exim, Dovecot's
    // cleartext ports); or not at all (no TLS claimed).
    let tls = &got["tls"];
    if e.tls == "tls" {
        let cert = &tls["cert"];
        if !tls["version"].as_str().unwrap_or("").starts_with("TLSv1.")
            || cert["subject"] != "CN=zoo.test"
            || cert["self_signed"] != true
            || cert["expired"] != false
            || cert["sans"] != serde_json::json!(["zoo.test"])
        {
            why.push(format!("TLS {tls}, want zoo.sh's self-signed CN=zoo.test"));
        }
    } else if e.tls == "starttls" {
        // Exim offers STARTTLS out of the box, with a certificate it makes itself; Dovecot
        // with zoo.sh's.
        if tls["starttls"] != e.service.as_str()
            || !tls["version"].as_str().unwrap_or("").starts_with("TLSv1.")
        {
            why.push(format!("TLS {tls}, want STARTTLS over {}", e.service));
        }
    } else if !tls.is_null() {
        why.push(format!("TLS {tls} claimed on a cleartext port"));
    }
    (!why.is_empty()).then(|| {
        format!(
            "{} {}:{}: {} (got {got})",
            e.name,
            e.addr,
            e.port,
            why.join("; ")
        )
    })
}

/// `portolan probe --json` on every port of `entries` at once (`/udp` on UDP ones): one
/// result per entry, in their order.
fn probe_all(entries: &[&Entry]) -> Vec<Value> {
    let targets: Vec<String> = entries
        .iter()
        .map(|e| match e.proto.as_str() {
            "udp" => format!("{}:{}/udp", e.addr, e.port),
            _ => format!("{}:{}", e.addr, e.port),
        })
        .collect();
    let mut args = vec!["probe"];
    args.extend(targets.iter().map(String::as_str));
    args.push("--json");
    let r = portolan(&args);
    r.expect_code(0);
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), entries.len(), "{r:?}");
    results
}

#[test]
fn the_zoo_of_real_servers_is_named_with_product_and_version() {
    if !zoo_ready_or_skip() {
        return;
    }
    let _ports = fixed_ports();
    let zoo = Zoo::up();
    let tcp = zoo.on("tcp");
    // Issue 13: at least 40 real servers, each on its default and an unusual port.
    let mut servers: Vec<&str> = zoo.entries.iter().map(|e| e.name.as_str()).collect();
    servers.sort_unstable();
    servers.dedup();
    assert!(
        servers.len() >= 40,
        "{} servers: {servers:?}",
        servers.len()
    );
    assert!(tcp.len() >= 100, "{:?}", zoo.entries);

    // `probe` on every TCP port of the zoo at once.
    let results = probe_all(&tcp);
    let mut failures: Vec<String> = tcp
        .iter()
        .zip(&results)
        .filter_map(|(e, got)| wrong(e, got).map(|w| format!("probe: {w}")))
        .collect();
    // Each was heard from the service, not looked up in the port table.
    failures.extend(
        tcp.iter()
            .zip(&results)
            .filter(|(_, got)| got["service_source"] != "probe")
            .map(|(e, got)| {
                format!(
                    "probe: {} {}:{} not detected: {got}",
                    e.name, e.addr, e.port
                )
            }),
    );

    // One `scan -sV` over every address and port of the zoo says the same for each.
    let mut addrs: Vec<&str> = tcp.iter().map(|e| e.addr.as_str()).collect();
    addrs.sort_unstable();
    addrs.dedup();
    let mut ports: Vec<u16> = tcp.iter().map(|e| e.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut args = vec!["scan"];
    args.extend(addrs.iter().copied());
    args.extend(["-p", &ports, "-sV", "-n", "--json"]);
    let r = portolan(&args);
    r.expect_code(0);
    let v = r.json();
    let got: BTreeMap<(String, u64), &Value> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "open")
        .map(|p| {
            (
                (
                    p["host"].as_str().unwrap().to_owned(),
                    p["port"].as_u64().unwrap(),
                ),
                p,
            )
        })
        .collect();
    for e in &tcp {
        match got.get(&(e.addr.clone(), u64::from(e.port))) {
            None => failures.push(format!(
                "scan: {} {}:{} not reported open",
                e.name, e.addr, e.port
            )),
            Some(g) => failures.extend(wrong(e, g).map(|w| format!("scan: {w}"))),
        }
    }
    // `probe HOST:PORT/udp` on every UDP port of the zoo (DNS servers, snmpd, ntpd,
    // rpcbind, ...).
    let udp = zoo.on("udp");
    assert!(udp.len() >= 20, "{:?}", zoo.entries);
    let uresults = probe_all(&udp);
    for (e, got) in udp.iter().zip(&uresults) {
        if got["proto"] != "udp" {
            failures.push(format!(
                "probe: {} {}:{}/udp reported as {}",
                e.name, e.addr, e.port, got["proto"]
            ));
        }
        failures.extend(wrong(e, got).map(|w| format!("probe udp: {w}")));
    }
    assert!(
        failures.is_empty(),
        "{} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // `ls --probe` asks local listeners, UDP ones on a port a UDP probe fits included:
    // dnsmasq on port 53 answers over TCP and over UDP.
    let r = portolan(&["ls", "--port", "53", "--probe", "--jsonl"]);
    let dns: Vec<Value> = r
        .jsonl()
        .into_iter()
        .filter(|v| v["local_addr"] == "127.0.0.13")
        .collect();
    for proto in ["tcp", "udp"] {
        let s = dns.iter().find(|v| v["proto"] == proto);
        assert!(
            s.is_some_and(|s| s["answers"]["service"] == "domain"
                && s["answers"]["service_source"] == "probe"
                && s["answers"]["product"] == "dnsmasq"),
            "{proto}: {dns:?}"
        );
    }

    // nginx's h2c port (HTTP/2 without TLS; zoo.sh keeps it out of the manifest): HTTP/2.
    let r = portolan(&["probe", "127.0.0.3:20082", "--json"]);
    let h2c = &r.json()["results"][0];
    assert!(
        h2c["service"] == "http" && h2c["http"]["http2"] == true && h2c["tls"].is_null(),
        "{h2c}"
    );

    // The table names them too, and the CPE carries the version.
    let ssh = tcp.iter().find(|e| e.name == "ssh").unwrap();
    let r = portolan(&["probe", &format!("{}:{}", ssh.addr, ssh.port)]);
    r.expect_code(0);
    assert!(r.stdout.contains("OpenSSH"), "{}", r.stdout);
    assert_eq!(
        results[0]["cpe"].as_str(),
        Some(format!("cpe:/a:openbsd:openssh:{}", ssh.version.as_deref().unwrap()).as_str())
    );
}

/// A server process, stopped (SIGTERM, then SIGKILL after 5 s) when dropped, with its
/// scratch directory.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
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
fn flask_or_skip() -> Option<&'static str> {
    let py = flask_python();
    let ready = py
        .map(drop)
        .ok_or_else(|| "python3 cannot import flask (scripts/test.sh installs it)".to_owned());
    if portolan_testsupport::skip_unless(ready) {
        py
    } else {
        None
    }
}

/// A Flask app on `host:port`, once it accepts connections.
fn flask_at(py: &str, host: &str, port: u16) -> Server {
    let dir = scratch(&format!("flask-{port}"));
    let app = format!(
        "from flask import Flask\napp = Flask('zoo')\n@app.route('/')\ndef hi():\n    return 'hi'\n\
         app.run(host='{host}', port={port})\n"
    );
    std::fs::write(dir.join("app.py"), app).unwrap();
    let child = Command::new(py)
        .arg(dir.join("app.py"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Server { child, dir };
    assert!(
        common::wait_for(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "flask did not listen on {port}"
    );
    s
}

#[test]
fn a_flask_dev_server_on_all_interfaces_port_5000_is_named_by_who_and_ls() {
    let Some(py) = flask_or_skip() else {
        return;
    };
    let _ports = fixed_ports();
    // Only probes whether the port is free: the listener is closed again at once.
    let port_free = TcpListener::bind("0.0.0.0:5000")
        .map(drop)
        .map_err(|e| format!("port 5000 is taken ({e})"));
    if !portolan_testsupport::skip_unless(port_free) {
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
    // Slowloris: one byte every 100 ms, for a minute.
    let drips = hostile(|mut c| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) && c.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // A TLS server that never finishes: the start of a ServerHello record, then nothing.
    let stalls = hostile(|mut c| {
        let mut b = [0u8; 2048];
        if matches!(c.read(&mut b), Ok(n) if n > 0) {
            let _ = c.write_all(&[0x16, 0x03, 0x03, 0x00, 0x7a, 0x02, 0x00, 0x00, 0x76, 0x03]);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let ports = [escapes, endless, silent, closes, drips, stalls];
    let t = Instant::now();
    let targets = ports.map(|p| format!("127.0.0.1:{p}"));
    let mut args = vec!["probe"];
    args.extend(targets.iter().map(String::as_str));
    args.extend(["--timeout", "1000", "--banner-wait", "500"]);
    let r = portolan(&args);
    let took = t.elapsed();
    // Six probes in parallel, each bounded: a few seconds, whatever the services do.
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
    assert_eq!(v.len(), 6);
    assert!(
        v[1]["banner"].as_str().unwrap().len() < 400,
        "bounded banner"
    );
    // Nothing was heard from the silent one and the one that closes: no detected service,
    // and what each did instead.
    for i in [2, 3] {
        assert!(
            v[i]["service_source"] != "probe" && v[i]["product"].is_null(),
            "{}",
            v[i]
        );
    }
    assert_eq!(v[2]["silence"], "quiet", "{}", v[2]);
    assert_eq!(v[3]["silence"], "closed", "{}", v[3]);
    // What the slow one dripped is kept (bounded); the stalled handshake is no TLS.
    assert!(
        v[4]["banner"].as_str().unwrap().starts_with("xx"),
        "{}",
        v[4]
    );
    // (Its random port may have a registered name: that is a guess, not a detection.)
    assert!(
        v[5]["tls"].is_null() && v[5]["service_source"] != "probe",
        "{}",
        v[5]
    );
}

/// A loopback port (bound, listening) that the port table names for TCP, among a few
/// registered ones, and that name as the binary itself tells it (`portolan info PORT`).
fn registered_port() -> (TcpListener, String) {
    for port in [5353, 6379, 11211, 1883, 5432, 3389] {
        let Ok(l) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        let v = portolan(&["info", &port.to_string(), "--json"]).json();
        let name = v["results"][0]["ports"][0]["assignments"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["proto"] == "tcp")
            .and_then(|a| a["service"].as_str())
            .map(str::to_owned);
        if let Some(name) = name {
            return (l, name);
        }
    }
    panic!("no registered port free on 127.0.0.1");
}

#[test]
fn a_name_from_the_port_table_is_a_guess_and_silence_is_told() {
    let (l, name) = registered_port();
    let port = l.local_addr().unwrap().port();
    // It accepts and closes at once: nothing is heard, the name is only the port's.
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            drop(c);
        }
    });
    let target = format!("127.0.0.1:{port}");
    let args = [
        "probe",
        target.as_str(),
        "--timeout",
        "500",
        "--banner-wait",
        "300",
    ];
    let r = portolan(&[&args[..], &["--jsonl"]].concat());
    r.expect_code(1);
    let v = &r.jsonl()[0];
    assert_eq!(v["service"], name.as_str(), "{v}");
    assert_eq!(v["service_source"], "port-table", "{v}");
    assert_eq!(v["silence"], "closed", "{v}");
    // The table marks the guess as nmap does, and says what the port did.
    let r = portolan(&args);
    let row = r.stdout.lines().nth(1).unwrap_or_default().to_owned();
    assert!(
        row.contains(&format!("{name}?")) && row.contains("closed the connection without a word"),
        "{}",
        r.stdout
    );
    // `ls --probe`: the same in the answers object and the ANSWERS column.
    let r = portolan(&["ls", "--port", &port.to_string(), "--probe", "--jsonl"]);
    let s = r
        .jsonl()
        .into_iter()
        .find(|s| s["state"] == "listen" && s["local_port"] == port)
        .unwrap();
    assert_eq!(s["answers"]["service_source"], "port-table", "{s}");
    assert_eq!(s["answers"]["silence"], "closed", "{s}");
    let r = portolan(&["ls", "--port", &port.to_string(), "--probe"]);
    assert!(
        r.stdout
            .contains(&format!("{name}? (closed the connection without a word)")),
        "{}",
        r.stdout
    );
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

/// A weak match (a signature marked `weak = true`) is a guess: `service_source` says
/// `weak` and the table prints `NAME?`; a service that a real match names is not held back
/// by a weak one that also fits.
#[test]
fn a_weak_match_is_a_guess_and_a_real_match_beats_it() {
    let dir = scratch("weak");
    std::fs::write(
        dir.join("weak.toml"),
        r#"
[[probe]]
name = "weak-test-hello"
send = "HELLO\r\n"
rarity = 1

[[match]]
probe = "weak-test-hello"
service = "gizmo"
pattern = '^OK'
weak = true

[[match]]
probe = "weak-test-hello"
service = "gizmo"
pattern = '^OK gizmo ([0-9.]+)\r\n'
product = "Gizmo"
version = "$1"
"#,
    )
    .unwrap();
    let sigs = dir.to_str().unwrap().to_owned();
    // Answers "OK" to anything: resembles the protocol, proves nothing.
    let vague = hostile(|mut c| {
        let mut b = [0u8; 64];
        if c.read(&mut b).is_ok_and(|n| n > 0) {
            let _ = c.write_all(b"OK\r\n");
        }
    });
    // Says what it is, in the words the real match wants.
    let real = hostile(|mut c| {
        let mut b = [0u8; 64];
        if c.read(&mut b).is_ok_and(|n| n > 0) {
            let _ = c.write_all(b"OK gizmo 2.1\r\n");
        }
    });
    let r = portolan(&[
        "probe",
        &format!("127.0.0.1:{vague}"),
        &format!("127.0.0.1:{real}"),
        "--signatures",
        &sigs,
        "--timeout",
        "1",
        "--json",
    ]);
    r.expect_code(0);
    let v = r.json();
    let res = v["results"].as_array().unwrap();
    assert_eq!(res[0]["service"], "gizmo", "{v}");
    assert_eq!(res[0]["service_source"], "weak", "{v}");
    assert!(res[0]["product"].is_null(), "{v}");
    assert_eq!(res[1]["service"], "gizmo", "{v}");
    assert_eq!(res[1]["service_source"], "probe", "{v}");
    assert_eq!(res[1]["product"], "Gizmo", "{v}");
    assert_eq!(res[1]["version"], "2.1", "{v}");
    // The table marks the guess and not the detection.
    let t = portolan(&[
        "probe",
        &format!("127.0.0.1:{vague}"),
        &format!("127.0.0.1:{real}"),
        "--signatures",
        &sigs,
        "--timeout",
        "1",
    ]);
    t.expect_code(0);
    let line = |port: u16| {
        t.stdout
            .lines()
            .find(|l| l.contains(&format!("127.0.0.1:{port}")))
            .unwrap_or_else(|| panic!("no line for {port}:\n{}", t.stdout))
            .to_owned()
    };
    assert!(line(vague).contains("gizmo?"), "{}", t.stdout);
    assert!(!line(real).contains("gizmo?"), "{}", t.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}
