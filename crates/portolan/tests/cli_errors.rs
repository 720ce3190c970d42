//! Bad input, help, broken pipes and colour: how the binary behaves at its edges.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::{portolan, portolan_cmd, run_cmd, KillOnDrop, Listen, Py};

/// Our own parse errors: exit 2, exactly one stderr line starting with the prefix, nothing
/// on stdout, no panic.
fn assert_one_line_error(args: &[&str], mention: &str) {
    let r = portolan(args);
    r.expect_code(2);
    let lines = r.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: one stderr line, got:\n{}",
        r.stderr
    );
    assert!(
        lines[0].starts_with("portolan: error: "),
        "{args:?}: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(mention),
        "{args:?}: error should mention {mention:?}: {}",
        lines[0]
    );
    assert!(r.stdout.is_empty(), "{args:?}: stdout {:?}", r.stdout);
    assert!(
        !r.stderr.contains('\x1b'),
        "{args:?}: raw ESC in {:?}",
        r.stderr
    );
}

#[test]
fn bad_values_get_one_error_line_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["who", "70000"], "70000"),
        (&["ls", "--port", "1-"], "1-"),
        (&["ls", "--port", "0x50"], "0x50"),
        (&["ls", "--port", "9-1"], "9-1"),
        (&["ls", "--port", "80,,81"], "80,,81"),
        (&["info", "-5"], "-5"),
        (&["info", "80/xyz"], "xyz"),
        (&["kill", "99999", "--yes"], "99999"),
        (&["free", "70000"], "70000"),
        (&["free", "0"], "port 0"),
        // An address this machine does not have: the bind error, not "0 free ports". (Bound
        // only, never sent to: 198.19.255.254 is in the benchmarking range, unused here.)
        (
            &["free", "-n", "2", "--addr", "198.19.255.254"],
            "198.19.255.254",
        ),
        (
            &["free", "8080", "--addr", "198.19.255.254"],
            "not one of this machine's",
        ),
        (&["ls", "--state", "bogus"], "bogus"),
        (&["ls", "--user", "no_such_user_zz"], "no_such_user_zz"),
        (&["kill", "8080", "--signal", "BOGUS", "--dry-run"], "BOGUS"),
        (&["kill", "8080", "--wait=-1", "--dry-run"], "--wait"),
        (&["kill", "8080", "--wait=NaN", "--dry-run"], "--wait"),
        (&["who", "pid:0"], "pid"),
        (&["who", "pid:abc"], "abc"),
        (&["who", ""], "empty"),
        (&["free", "--count", "0"], "--count"),
        (&["free", "--range", "5-1"], "5-1"),
        (&["ls", "--pid", "1", "--no-processes"], "--no-processes"),
    ];
    for (args, mention) in cases {
        assert_one_line_error(args, mention);
    }
}

#[test]
fn usage_errors_exit_2_without_panic() {
    for args in [
        &["ls", "--bogus-flag"][..],
        &["--bogus-flag"],
        &["nosuchcommand"],
        &["who"],
        &["info"],
        &["ls", "--json", "--csv"],
        &["ls", "--pid", "notanumber"],
        &["--color", "sometimes"],
        &["--source", "carrier-pigeon"],
        &["ls", "-l", "-a"],
        &["ls", "-4", "-6"],
        // Formats a command does not render are refused by clap, wherever they are given.
        &["kill", "8080", "--csv", "--dry-run"],
        &["--csv", "kill", "8080", "--yes"],
        &["probe", "127.0.0.1:1", "--csv"],
        &["firewall", "status", "--json"],
        &["policy", "init", "--csv"],
        &["watch", "--json"],
        &["ls", "--pretty"],
    ] {
        let r = portolan(args);
        r.expect_code(2);
        assert!(r.stderr.contains("error:"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
}

#[test]
fn hostile_bytes_are_escaped_in_errors() {
    for args in [
        &["who", "\x1b[2J"][..],
        &["who", "evil\x1b]0;owned\x07"],
        &["info", "\x1b[2J"],
        &["info", "80/\x1b[31m"],
        &["ls", "--state", "\x1b[2J"],
        &["ls", "--user", "\x1b[2J"],
        &["ls", "--port", "\x1b[2J"],
        &["kill", "80", "--signal", "\x1b[2J", "--dry-run"],
        &["who", "a\nportolan: error: forged"],
    ] {
        let r = portolan(args);
        r.expect_code(2);
        assert!(
            !r.stderr.contains('\x1b'),
            "{args:?}: raw ESC in {:?}",
            r.stderr
        );
        assert!(
            !r.stderr.contains('\x07'),
            "{args:?}: raw BEL in {:?}",
            r.stderr
        );
        assert_eq!(r.stderr_lines().len(), 1, "{args:?}: {:?}", r.stderr);
        assert!(
            r.stderr.starts_with("portolan: error: "),
            "{args:?}: {:?}",
            r.stderr
        );
    }
    // clap's own errors quote the refused argument: escaped too.
    for args in [
        &["--source", "\x1b]0;X\x07"][..],
        &["ls", "--bogus\x1b[2J"],
        &["scan", "--timing", "x", "--max-retries", "\x1b[31m"],
        &["nosuch\x1b]0;t\x07cmd"],
    ] {
        let r = portolan(args);
        r.expect_code(2);
        assert!(
            !r.stderr.contains(['\x1b', '\x07']),
            "{args:?}: raw control bytes in clap's error {:?}",
            r.stderr
        );
        assert!(r.stderr.contains("\\x1b"), "{args:?}: {:?}", r.stderr);
    }
    let r = portolan(&["who", "\x1b[2J"]);
    assert!(
        r.stderr.contains("\\x1b[2J"),
        "escaped, still readable: {}",
        r.stderr
    );
}

#[test]
fn help_and_version_exit_0() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["ls", "--help"],
        &["who", "--help"],
        &["kill", "--help"],
        &["free", "--help"],
        &["info", "--help"],
    ] {
        let r = portolan(args);
        r.expect_code(0);
        assert!(
            r.stdout.contains("Usage: portolan"),
            "{args:?}: {}",
            r.stdout
        );
        assert!(r.stderr.is_empty(), "{args:?}: {}", r.stderr);
    }
    let r = portolan(&["--help"]);
    for cmd in ["ls", "who", "info", "free", "kill"] {
        assert!(r.stdout.contains(&format!("  {cmd} ")), "{cmd} in help");
    }
    assert!(r.stdout.contains("Exit status: 0"));
    let r = portolan(&["--version"]);
    r.expect_code(0);
    assert!(r.stdout.starts_with("portolan "), "{}", r.stdout);
}

/// Runs portolan with stdout into a pipe, reads the first bytes, closes the pipe, and
/// requires a clean exit (0, nothing about an error on stderr).
fn read_a_little_then_close(args: &[&str], starts: &str) {
    let mut cmd = portolan_cmd(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().expect("spawn portolan"));
    let mut err = child.0.stderr.take().unwrap();
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = child.0.stdout.take().unwrap();
    let mut head = [0u8; 64];
    out.read_exact(&mut head).expect("read the first bytes");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with(starts), "{args:?}: {head:?}");
    drop(out);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{args:?}: portolan hung on a closed pipe"
        );
        thread::sleep(Duration::from_millis(10));
    };
    let stderr = err_reader.join().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{args:?}: {status:?}, stderr: {stderr}"
    );
    assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

#[test]
fn closed_stdout_pipe_is_not_an_error() {
    // ~2000 sockets of our own, so `ls -a` prints far more than a pipe buffer holds.
    let lst = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = lst.local_addr().unwrap();
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let client = TcpStream::connect(addr).expect("connect");
        let (server, _) = lst.accept().expect("accept");
        conns.push((client, server));
    }
    read_a_little_then_close(&["ls", "-a"], "EXPOSURE");
    read_a_little_then_close(&["ls", "-a", "--json"], "{\"source\":");
    read_a_little_then_close(&["ls", "-a", "--jsonl"], "{\"proto\":");
    read_a_little_then_close(&["ls", "-a", "--csv"], "proto,family,");
    read_a_little_then_close(&["who", &addr.port().to_string()], "port ");
    drop(conns);
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let _py = Py::listen(Listen::tcp("127.0.0.1"));
    let r = portolan(&["--color", "always", "ls"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("\x1b["),
        "--color always paints: {:?}",
        r.stdout
    );
    let mut cmd = portolan_cmd(&["--color", "always", "ls"]);
    cmd.env("NO_COLOR", "1");
    let r = run_cmd(cmd);
    assert!(r.stdout.contains("\x1b["), "always wins over NO_COLOR");
    for args in [
        &["ls"][..],
        &["--color", "auto", "ls"],
        &["--color", "never", "ls"],
        &[],
    ] {
        let r = portolan(args);
        r.expect_code(0);
        assert!(
            !r.stdout.contains('\x1b'),
            "{args:?} into a pipe: {:?}",
            r.stdout
        );
        assert!(!r.stderr.contains('\x1b'), "{args:?} stderr into a pipe");
    }
    // On a terminal (a pseudo-terminal from util-linux `script`), `auto` paints; NO_COLOR
    // and TERM=dumb are then what turn it off. Under `script`, stdout and stderr of
    // portolan both reach the pty, so both are checked through `script`'s stdout.
    let r = on_a_pty(&["--color", "auto", "ls"], &[]);
    assert!(
        r.stdout.contains("\x1b["),
        "auto on a terminal paints: {:?}",
        r.stdout
    );
    let r = on_a_pty(&["--color", "auto", "ls"], &[("NO_COLOR", "1")]);
    assert!(
        !r.stdout.contains('\x1b'),
        "NO_COLOR on a terminal: {:?}",
        r.stdout
    );
    let r = on_a_pty(&["ls"], &[("TERM", "dumb")]);
    assert!(
        !r.stdout.contains('\x1b'),
        "TERM=dumb on a terminal: {:?}",
        r.stdout
    );
    // Machine formats are never painted.
    let r = portolan(&["--color", "always", "ls", "--json"]);
    r.expect_code(0);
    assert!(!r.stdout.contains('\x1b'), "JSON stays clean");
    r.json();
}

/// Runs portolan with `args` on a pseudo-terminal (`script -qec CMD /dev/null`), with
/// TERM=xterm unless `env` overrides it; requires exit 0. `script`'s stdout carries
/// everything portolan wrote to the terminal.
fn on_a_pty(args: &[&str], env: &[(&str, &str)]) -> common::Run {
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let line = std::iter::once(env!("CARGO_BIN_EXE_portolan"))
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r = run_cmd(cmd);
    r.expect_code(0);
    r
}

/// `portolan sentry`'s own settings are checked before anything needs privilege: each
/// mistake is one error line and exit 2, for root and for everyone else alike.
#[test]
fn sentry_settings_are_checked_first() {
    let dir = std::env::temp_dir().join(format!("portolan-sentry-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad_conf = dir.join("bad.toml");
    std::fs::write(&bad_conf, "[thresholds]\ntheta0 = 3\n").unwrap();
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[thresholds]\nvertcal = 10\n").unwrap();
    let hostile = dir.join("hostile.toml");
    std::fs::write(&hostile, "[thresholds\u{1b}[2J]\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["sentry", "--block", "0s"], "--block"),
        (vec!["sentry", "--block", "forever"], "--block"),
        (vec!["sentry", "--block", "400d"], "--block"),
        (vec!["sentry", "--allow", "not-a-network"], "--allow"),
        (vec!["sentry", "--block-cap", "0"], "--block-cap"),
        (vec!["sentry", "--metrics", "nowhere"], "--metrics"),
        (vec!["sentry", "--for", "soon"], "--for"),
        (
            vec!["sentry", "--config", bad_conf.to_str().unwrap()],
            "theta0",
        ),
        (
            vec!["sentry", "--config", unknown.to_str().unwrap()],
            "vertcal",
        ),
        (
            vec!["sentry", "--config", hostile.to_str().unwrap()],
            "--config",
        ),
        (
            vec!["sentry", "--config", "/nonexistent/x.toml"],
            "--config",
        ),
        (
            vec!["sentry", "unblock", "not-an-address"],
            "not-an-address",
        ),
    ];
    for (args, mention) in cases {
        let r = portolan(&args);
        r.expect_code(2);
        assert!(r.stderr.contains(mention), "{args:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains('\x1b'),
            "{args:?}: raw ESC in {:?}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refusal as every command gives one: exit 2, nothing on stdout, the cause named on
/// stderr, no raw escape and no panic there.
fn assert_refused(r: &common::Run, args: &[&str], mention: &str) {
    r.expect_code(2);
    assert!(r.stdout.is_empty(), "{args:?}: stdout {:?}", r.stdout);
    assert!(r.stderr.contains(mention), "{args:?}: {}", r.stderr);
    assert!(
        !r.stderr.contains('\x1b'),
        "{args:?}: raw ESC in {:?}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
}

/// `portolan serve`'s settings are checked before it binds or samples anything: one error
/// line, exit 2, nothing on stdout (no login URL for a server that will not run); a taken
/// address is the same kind of error.
#[test]
fn serve_settings_are_checked_first() {
    let dir = std::env::temp_dir().join(format!("portolan-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_scan = dir.join("not-a-scan.json");
    std::fs::write(&not_scan, "{\"hello\": \"\u{1b}[2Jworld\"}\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["serve", "--listen", "localhost"], "--listen"),
        (vec!["serve", "--listen", "127.0.0.1:99999"], "--listen"),
        (vec!["serve", "--listen", "\u{1b}[31m:1"], "--listen"),
        (vec!["serve", "--interval", "0"], "--interval"),
        (vec!["serve", "--interval", "NaN"], "--interval"),
        (vec!["serve", "--allow-host", "evil/host"], "--allow-host"),
        (vec!["serve", "--allow-host", "<b>x</b>"], "--allow-host"),
        (vec!["serve", "--for", "soon"], "--for"),
        (
            vec!["serve", "--scans", "/nonexistent/scan.json"],
            "scan.json",
        ),
        (
            vec!["serve", "--scans", not_scan.to_str().unwrap()],
            "--scans",
        ),
        (vec!["serve", "--listen", &taken_addr], "cannot listen"),
    ];
    for (args, mention) in cases {
        assert_refused(&portolan(&args), &args, mention);
    }
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `portolan top` without a terminal, or with bad settings: one error line and exit 2, and
/// the terminal (there is none here) is never touched.
#[test]
fn top_needs_a_terminal_and_good_settings() {
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["top"], "terminal"),
        (vec!["top", "--interval", "0"], "--interval"),
        (vec!["top", "--interval", "inf"], "--interval"),
        (vec!["top", "--filter", "port:x"], "--filter"),
        (vec!["top", "--filter", "\u{1b}[2J:x"], "--filter"),
        (vec!["top", "--for", "soon"], "--for"),
    ];
    for (args, mention) in cases {
        assert_refused(&portolan(&args), &args, mention);
    }
}

/// Queued scans and workers: bad settings and an unreachable queue are one error line and
/// exit 2, and a password in the queue's URL never reaches the terminal.
#[test]
fn queue_and_worker_errors_are_clear_and_keep_the_password() {
    let dead = "postgres://scanner:s3cr3t-pw@127.0.0.1:1/portolan";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["worker"], "URL"),
        (vec!["worker", "not-a-url"], "postgres"),
        (vec!["worker", dead], "127.0.0.1"),
        (vec!["worker", dead, "--lease", "0s"], "--lease"),
        (vec!["worker", dead, "--max-rate", "0"], "--max-rate"),
        (vec!["worker", dead, "--name", "a\u{1b}[2Jb"], "--name"),
        (vec!["scan", "--status", "1"], "--queue"),
        (
            vec!["scan", "198.18.0.1", "--queue", dead, "--json"],
            "--json",
        ),
        (
            vec![
                "scan",
                "198.18.0.1",
                "--queue",
                dead,
                "--shard",
                "0/2",
                "--seed",
                "1",
            ],
            "--shard",
        ),
        (
            vec!["scan", "198.18.0.1", "--queue", dead, "--chunk-size", "0"],
            "--chunk-size",
        ),
        (vec!["scan", "198.18.0.1", "--queue", dead], "127.0.0.1"),
        (vec!["scan", "--results", "7", "--queue", dead], "127.0.0.1"),
    ];
    for (args, mention) in cases {
        let r = common::run_cmd({
            let mut c = common::portolan_cmd(&args);
            c.env_remove("PORTOLAN_QUEUE");
            c
        });
        r.expect_code(2);
        assert!(r.stdout.is_empty(), "{args:?}: stdout {:?}", r.stdout);
        assert!(r.stderr.contains(mention), "{args:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains("s3cr3t"),
            "{args:?}: the password shown: {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains('\x1b'),
            "{args:?}: raw ESC in {:?}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    }
}
