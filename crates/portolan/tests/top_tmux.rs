//! `portolan top` driven for real in tmux: keys go in with `send-keys`, the screen comes
//! back with `capture-pane`, as a person would see it. A listener the test opens appears
//! and goes; the filter narrows; sorting reorders; kill asks, then frees the port; `q`
//! gives the terminal back as it was; an iperf3 flow of known rate reads the same in the
//! view as in iperf3's own report, on the iperf3 process.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{skip_unless, unique_comm, Listen, Py};

const BIN: &str = env!("CARGO_BIN_EXE_portolan");

fn tmux_ready() -> Result<(), String> {
    portolan_testsupport::program("tmux")
}

/// A tmux server of the test's own (its own socket), one pane running `sh`.
struct Tmux {
    sock: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        let sock = format!("portolan-top-{name}-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "-L",
                &sock,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
                "sh",
            ])
            .env("PS1", "$ ")
            .env_remove("NO_COLOR")
            .status()
            .expect("start tmux");
        assert!(ok.success(), "tmux new-session failed");
        Tmux { sock }
    }

    fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["-L", &self.sock, "send-keys", "-t", "0"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }

    /// Types a line into the shell.
    fn line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.sock, "capture-pane", "-p", "-t", "0"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen once `pred` holds, or the last one seen after `timeout` (in the panic).
    fn wait(&self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "{what}: not within {timeout:?}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts `portolan top ARGS` in the pane, and waits for its first screen.
    fn top(&self, args: &str) {
        self.line(&format!("{BIN} top --for 120s {args}; echo TOP-EXITED:$?"));
        self.wait(Duration::from_secs(20), "top's first screen", |s| {
            s.contains("portolan top") && s.contains("q quit")
        });
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.sock, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// The number of the refresh on screen (the header's `refresh #N`).
fn refresh_no(screen: &str) -> u64 {
    screen
        .split("refresh #")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refresh number on screen: {screen}"))
}

/// The screen's table lines that mention `needle`.
fn rows_with<'a>(screen: &'a str, needle: &str) -> Vec<&'a str> {
    screen.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn a_listener_appears_and_goes_and_the_filter_narrows() {
    if !skip_unless(
        "a_listener_appears_and_goes_and_the_filter_narrows",
        tmux_ready(),
    ) {
        return;
    }
    let t = Tmux::new("live");
    // Two listeners of named processes; the view starts filtered to this test's names
    // (a busy machine has more listeners than a screen has lines).
    let comm = unique_comm();
    let prefix = comm
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .to_owned();
    t.top(&format!("--interval 0.5 --filter proc:{prefix}"));
    let opened_at = refresh_no(&t.screen());
    let a = Py::listen(Listen {
        comm: Some(&comm),
        ..Listen::tcp("127.0.0.1")
    });
    let b_comm = unique_comm();
    let b = Py::listen(Listen {
        comm: Some(&b_comm),
        ..Listen::tcp("127.0.0.1")
    });
    let b_port = b.port;
    // Within two refreshes of the one on screen when it opened (the next one may have
    // begun before), marked as new.
    let s = t.wait(Duration::from_secs(20), "the new listener", |s| {
        s.contains(&comm)
    });
    assert!(
        refresh_no(&s) <= opened_at + 2,
        "seen at refresh {}, opened at {opened_at}",
        refresh_no(&s)
    );
    assert!(
        rows_with(&s, &comm)[0].trim_start().starts_with('+'),
        "not marked new: {s}"
    );
    assert!(rows_with(&s, &comm)[0].contains(&a.port.to_string()), "{s}");
    t.wait(Duration::from_secs(20), "the second listener", |s| {
        s.contains(&b_comm)
    });
    // Typing narrows: a port added to the filter leaves one row.
    t.keys(&["/"]);
    t.keys(&["-l", &format!(" port:{}", a.port)]);
    t.keys(&["Enter"]);
    let s = t.wait(Duration::from_secs(10), "the filter", |s| {
        s.contains(&format!("port:{}", a.port)) && !s.contains(&b_comm)
    });
    assert!(s.contains(&comm), "the filtered row stays: {s}");
    assert!(s.contains(" 1 rows"), "{s}");
    // Backspace over the port: both are back.
    t.keys(&["/"]);
    for _ in 0..=format!(" port:{}", a.port).len() {
        t.keys(&["BSpace"]);
    }
    t.keys(&["Enter"]);
    t.wait(Duration::from_secs(10), "the filter widened", |s| {
        s.contains(&comm) && s.contains(&b_comm)
    });
    let _ = b_port;
    // Closed: marked (×) within two refreshes, then gone after a few more.
    let closed_at = refresh_no(&t.screen());
    drop(a);
    let s = t.wait(Duration::from_secs(20), "the closed listener's mark", |s| {
        rows_with(s, &comm)
            .first()
            .is_some_and(|r| r.trim_start().starts_with('×'))
    });
    assert!(refresh_no(&s) <= closed_at + 2, "marked closed late: {s}");
    let s = t.wait(Duration::from_secs(30), "the closed listener to go", |s| {
        !s.contains(&comm)
    });
    assert!(refresh_no(&s) <= closed_at + 2 + 3, "gone late: {s}");
    drop(b);
    t.keys(&["q"]);
    t.wait(Duration::from_secs(5), "top to exit", |s| {
        s.contains("TOP-EXITED:0")
    });
}

#[test]
fn sorting_reorders_and_q_restores_the_terminal() {
    if !skip_unless("sorting_reorders_and_q_restores_the_terminal", tmux_ready()) {
        return;
    }
    let t = Tmux::new("sort");
    // Two listeners of the test's own, the higher port opened first.
    let hi = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let lo = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let (mut p1, mut p2) = (
        hi.local_addr().unwrap().port(),
        lo.local_addr().unwrap().port(),
    );
    if p1 > p2 {
        std::mem::swap(&mut p1, &mut p2);
    }
    // The test binary's own listeners only (its comm starts with the test's name).
    t.top("--interval 0.5 --filter 'proc:top_tmux state:listen'");
    // Sort on Port: `s` from the default column (Exposure) goes back to... press until
    // the header marks Port.
    let mut s = t.screen();
    for _ in 0..12 {
        if s.contains("sorted by Port") {
            break;
        }
        t.keys(&["S"]);
        std::thread::sleep(Duration::from_millis(150));
        s = t.screen();
    }
    assert!(s.contains("sorted by Port ▲"), "{s}");
    let pos = |s: &str, p: u16| s.find(&format!(" {p} ")).unwrap_or(usize::MAX);
    let s = t.wait(Duration::from_secs(10), "ascending order", |s| {
        pos(s, p1) < pos(s, p2) && pos(s, p2) != usize::MAX
    });
    assert!(pos(&s, p1) < pos(&s, p2));
    t.keys(&["r"]);
    t.wait(Duration::from_secs(10), "descending order", |s| {
        s.contains("sorted by Port ▼") && pos(s, p2) < pos(s, p1)
    });
    t.keys(&["q"]);
    t.wait(Duration::from_secs(5), "top to exit", |s| {
        s.contains("TOP-EXITED:0")
    });
    // The terminal is as it was: canonical mode and echo back on, no alternate screen.
    t.line("echo \"STTY=$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo -e -icanon -e -echo | sort | tr '\\n' ' ')\"");
    let s = t.wait(Duration::from_secs(5), "stty", |s| {
        s.lines().any(|l| l.starts_with("STTY="))
    });
    let line = s
        .lines()
        .find(|l| l.starts_with("STTY="))
        .unwrap_or_else(|| panic!("no stty line: {s}"));
    assert!(
        line.contains("echo icanon"),
        "the terminal is left raw: {line}"
    );
    drop((hi, lo));
}

#[test]
fn kill_asks_then_frees_the_port() {
    if !skip_unless("kill_asks_then_frees_the_port", tmux_ready()) {
        return;
    }
    let t = Tmux::new("kill");
    let comm = unique_comm();
    let victim = Py::listen(Listen {
        comm: Some(&comm),
        ..Listen::tcp("127.0.0.1")
    });
    let port = victim.port;
    t.top(&format!("--interval 0.5 --filter port:{port}"));
    t.wait(Duration::from_secs(20), "the victim's row", |s| {
        s.contains(&comm)
    });
    // `k`, then anything but y: nothing happens.
    t.keys(&["k"]);
    let s = t.wait(Duration::from_secs(10), "the confirmation", |s| {
        s.contains("Kill?")
    });
    assert!(
        s.contains(&comm) && s.contains(&format!("pid {}", victim.pid)),
        "{s}"
    );
    t.keys(&["n"]);
    t.wait(Duration::from_secs(5), "the cancel", |s| {
        s.contains("nothing was signalled")
    });
    assert!(common::pid_alive(victim.pid), "cancel signalled anyway");
    // `k`, `y`: freed, and the view says so.
    t.keys(&["k"]);
    t.wait(Duration::from_secs(10), "the confirmation", |s| {
        s.contains("Kill?")
    });
    t.keys(&["y"]);
    let s = t.wait(Duration::from_secs(10), "the outcome", |s| {
        s.contains("is free")
    });
    assert!(s.contains(&format!("port {port}/tcp is free")), "{s}");
    assert!(
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
        "the port is not free"
    );
    t.keys(&["q"]);
    t.wait(Duration::from_secs(5), "top to exit", |s| {
        s.contains("TOP-EXITED:0")
    });
    drop(victim);
}

/// Reads "5.0 MB" / "812 kB" / "40 B" at the start of `cell`, in bytes.
fn bytes_of(cell: &str) -> Option<f64> {
    let mut it = cell.split_whitespace();
    let n: f64 = it.next()?.parse().ok()?;
    let mult = match it.next()? {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    Some(n * mult)
}

#[test]
fn an_iperf3_flow_reads_as_iperf3_measures_it() {
    if !skip_unless(
        "an_iperf3_flow_reads_as_iperf3_measures_it",
        tmux_ready().and(portolan_testsupport::program("iperf3")),
    ) {
        return;
    }
    let port = common::free_port();
    let mut server = common::KillOnDrop(
        Command::new("iperf3")
            .args(["-s", "-1", "-p", &port.to_string(), "-B", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 -s"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let t = Tmux::new("iperf");
    t.top(&format!(
        "--interval 1 --view connections --filter 'port:{port} state:estab'"
    ));
    // 40 Mbit/s, paced, for 16 s: 5 MB/s on the data connection.
    let client = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-b",
            "40M",
            "-t",
            "16",
            "-J",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 -c");
    // Steady state: wait for a rate, skip a refresh, then read the top row (sorted by
    // Rx/s, the server's data connection) on several refreshes.
    t.wait(Duration::from_secs(10), "a rate on the iperf3 rows", |s| {
        s.lines().any(|l| l.contains("iperf3") && l.contains(" MB"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let mut seen = Vec::new();
    for _ in 0..5 {
        let s = t.screen();
        let row = s
            .lines()
            .find(|l| l.contains("iperf3") && l.contains("MB"))
            .unwrap_or_else(|| panic!("no iperf3 row with a rate: {s}"))
            .to_owned();
        // Columns are separated by at least one space; the rate cells are "N.N MB".
        let mb = row
            .split("  ")
            .map(str::trim)
            .find_map(|c| (c.ends_with(" MB")).then(|| bytes_of(c)).flatten())
            .unwrap_or_else(|| panic!("no rate in {row:?}"));
        seen.push(mb);
        std::thread::sleep(Duration::from_secs(1));
    }
    let out = client.wait_with_output().expect("iperf3 -c ends");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 -J");
    let iperf = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("iperf3's received rate")
        / 8.0;
    let ours = seen.iter().sum::<f64>() / f64::from(u32::try_from(seen.len()).unwrap());
    let off = (ours - iperf).abs() / iperf;
    assert!(
        off <= 0.05,
        "top read {ours:.0} B/s (samples {seen:?}), iperf3 {iperf:.0} B/s: {:.1}% apart",
        off * 100.0
    );
    t.keys(&["q"]);
    let _ = server.0.kill();
}

#[test]
fn info_copy_and_probe_on_the_selected_row() {
    if !skip_unless("info_copy_and_probe_on_the_selected_row", tmux_ready()) {
        return;
    }
    let t = Tmux::new("actions");
    let comm = unique_comm();
    let l = Py::listen(Listen {
        comm: Some(&comm),
        ..Listen::tcp("127.0.0.1")
    });
    t.top(&format!("--interval 0.5 --filter port:{}", l.port));
    t.wait(Duration::from_secs(20), "the row", |s| s.contains(&comm));
    // i: what the number means, from `info`.
    t.keys(&["i"]);
    let s = t.wait(Duration::from_secs(10), "the info popup", |s| {
        s.contains("What the port is")
    });
    assert!(s.contains(&format!("port {}:", l.port)), "{s}");
    t.keys(&["Escape"]);
    t.wait(Duration::from_secs(5), "the popup to close", |s| {
        !s.contains("What the port is")
    });
    // c: the row as a command line.
    t.keys(&["c"]);
    let s = t.wait(Duration::from_secs(5), "the command line", |s| {
        s.contains("Command line")
    });
    assert!(s.contains(&format!("portolan who {}/tcp", l.port)), "{s}");
    t.keys(&["Escape"]);
    // p: what answers there (the test's listener accepts and says nothing).
    t.keys(&["p"]);
    let s = t.wait(Duration::from_secs(20), "the probe's answer", |s| {
        s.contains("What answers")
    });
    assert!(
        s.contains(&format!("127.0.0.1:{}", l.port)) || s.contains("nothing answered"),
        "{s}"
    );
    t.keys(&["Escape"]);
    t.keys(&["q"]);
    t.wait(Duration::from_secs(5), "top to exit", |s| {
        s.contains("TOP-EXITED:0")
    });
    drop(l);
}
