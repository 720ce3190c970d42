//! `portolan who` and `portolan kill`, against real python listeners and clients.

mod common;

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{
    listener, lport, pid_alive, pid_of, portolan, portolan_json, proc_pids, rport, sockets,
    wait_for, Listen, Py,
};
use serde_json::Value;

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

/// A listener with a separate client process connected to it, once the listener has
/// accepted (so both ends of the connection have an owner).
fn listener_and_client() -> (Py, Py) {
    listener_and_client_named(None)
}

fn listener_and_client_named(comm: Option<&str>) -> (Py, Py) {
    let server = Py::listen(Listen {
        comm,
        ..Listen::tcp("127.0.0.1")
    });
    let client = Py::connect("127.0.0.1", server.port);
    let port = server.port.to_string();
    assert!(
        wait_for(Duration::from_secs(10), || {
            sockets(&portolan_json(&["who", "--json", &port]))
                .iter()
                .any(|s| rport(s) == Some(client.port) && pid_of(s) == Some(server.pid))
        }),
        "the server never accepted the client"
    );
    (server, client)
}

/// The rows of a `who` table as [STATE, ROLE, LOCAL, REMOTE, PROCESS/PID].
fn table_rows(out: &str) -> Vec<[String; 5]> {
    out.lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let i = t.iter().position(|w| *w == "tcp" || *w == "udp")?;
            let f = t.get(i + 1..i + 6)?;
            Some([f[0], f[1], f[2], f[3], f[4]].map(str::to_string))
        })
        .collect()
}

fn connection(socks: &[Value], local: u16, remote: u16) -> &Value {
    let found: Vec<&Value> = socks
        .iter()
        .filter(|s| lport(s) == local && rport(s) == Some(remote))
        .collect();
    assert_eq!(found.len(), 1, "connection {local}->{remote} in {socks:#?}");
    found[0]
}

#[test]
fn who_port_names_listener_and_its_clients() {
    let (server, client) = listener_and_client();
    let port = server.port.to_string();
    let name = server.comm();

    let r = portolan(&["who", &port]);
    r.expect_code(0);
    assert!(
        r.stdout.starts_with(&format!("port {port}/tcp")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("{name} (pid {})", server.pid)),
        "{}",
        r.stdout
    );
    let cmd = format!("  cmd  {} -c", common::python());
    assert!(
        r.stdout.contains(&cmd),
        "the command line is shown:\n{}",
        r.stdout
    );
    // The table: the listener, the server end and the client end, with their roles.
    let rows = table_rows(&r.stdout);
    let find = |local: String, remote: &str| -> &[String; 5] {
        rows.iter()
            .find(|row| row[2] == local && row[3] == remote)
            .unwrap_or_else(|| panic!("no row {local} {remote} in:\n{}", r.stdout))
    };
    let at = |p: u16| format!("127.0.0.1:{p}");
    let row = find(at(server.port), "*");
    assert_eq!([row[0].as_str(), row[1].as_str()], ["LISTEN", "listener"]);
    assert_eq!(row[4], format!("{name}/{}", server.pid));
    let row = find(at(server.port), &at(client.port));
    assert_eq!([row[0].as_str(), row[1].as_str()], ["ESTAB", "server"]);
    assert_eq!(row[4], format!("{name}/{}", server.pid));
    let row = find(at(client.port), &at(server.port));
    assert_eq!([row[0].as_str(), row[1].as_str()], ["ESTAB", "client"]);
    assert_eq!(row[4], format!("{}/{}", client.comm(), client.pid));

    let socks = sockets(&portolan_json(&["who", "--json", &port]));
    let lst = listener(&socks, "127.0.0.1", server.port, "tcp");
    assert_eq!(pid_of(lst), Some(server.pid));
    assert_eq!(lst["state"], "listen");
    let srv = connection(&socks, server.port, client.port);
    assert_eq!(pid_of(srv), Some(server.pid));
    assert_eq!(srv["state"], "established");
    let cli = connection(&socks, client.port, server.port);
    assert_eq!(pid_of(cli), Some(client.pid), "the client process is named");
    assert_eq!(cli["state"], "established");
    assert_eq!(cli["process"], client.comm().as_str());
    // Listener first.
    assert_eq!(socks[0]["state"], "listen");
    // `:PORT` and `PORT/tcp` are the same question.
    for q in [format!(":{port}"), format!("{port}/tcp")] {
        let again = sockets(&portolan_json(&["who", "--json", &q]));
        assert_eq!(again.len(), socks.len(), "{q}");
    }
    let r = portolan(&["who", "--json", &format!("{port}/udp")]);
    r.expect_code(1);
}

#[test]
fn who_by_pid_and_by_name() {
    let comm = common::unique_comm();
    let (server, client) = listener_and_client_named(Some(&comm));
    assert_eq!(server.comm(), comm);
    let pid = server.pid.to_string();
    for args in [
        vec!["who", "--json", "--pid", pid.as_str()],
        vec!["who", "--json", &format!("pid:{pid}")],
        // A name only this process has: exactly its sockets.
        vec!["who", "--json", &comm],
    ] {
        let socks = sockets(&portolan_json(&args));
        assert_eq!(
            socks.len(),
            2,
            "{args:?}: listener and accepted connection: {socks:#?}"
        );
        assert!(
            socks.iter().all(|s| proc_pids(s) == vec![server.pid]),
            "{args:?}: {socks:#?}"
        );
        let lst = listener(&socks, "127.0.0.1", server.port, "tcp");
        assert_eq!(lst["process"], comm.as_str());
        connection(&socks, server.port, client.port);
    }
    for target in [format!("pid:{pid}"), comm.clone()] {
        let r = portolan(&["who", &target]);
        r.expect_code(0);
        assert!(
            r.stdout.contains(&format!("{comm} (pid {pid})  user ")),
            "{target}: {}",
            r.stdout
        );
        assert!(
            !r.stdout.contains(&format!("(pid {})", client.pid)),
            "{}",
            r.stdout
        );
    }

    // By the interpreter's name: other python processes may match too (the renamed server
    // as well, through its command line); the client must be among them.
    let name = client.comm();
    let socks = sockets(&portolan_json(&["who", "--json", &name]));
    let cli = connection(&socks, client.port, server.port);
    assert_eq!(pid_of(cli), Some(client.pid));
}

#[test]
fn who_on_unused_port_name_or_pid_exits_1() {
    let port = common::free_port().to_string();
    let r = portolan(&["who", &port]);
    r.expect_code(1);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!("nothing uses port {port}")),
        "{}",
        r.stderr
    );
    let r = portolan(&["who", "--json", &port]);
    r.expect_code(1);
    assert!(sockets(&r.json()).is_empty());
    let r = portolan(&["who", "no-such-process-zz"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("no process or unit named"),
        "{}",
        r.stderr
    );
    // No process can have pid_max as its pid.
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").expect("pid_max");
    let r = portolan(&["who", &format!("pid:{}", pid_max.trim())]);
    r.expect_code(1);
    assert!(
        r.stderr.contains("holds no TCP or UDP sockets"),
        "{}",
        r.stderr
    );
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[test]
fn kill_yes_stops_the_listener_and_spares_its_client() {
    let (mut server, mut client) = listener_and_client();
    let port = server.port.to_string();
    assert!(!port_is_free(server.port));
    // `free` agrees, and names the holder.
    let r = portolan(&["free", &port]);
    r.expect_code(1);
    assert!(
        r.stdout.contains(&format!(
            "{port}/tcp is in use: {} (pid {}) on 127.0.0.1:{port}",
            server.comm(),
            server.pid
        )),
        "{}",
        r.stdout
    );
    let r = portolan(&["kill", &port, "--yes"]);
    r.expect_code(0);
    assert!(r.stdout.contains("sending SIGTERM to:"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("(pid {}, user ", server.pid)),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains(&format!("(pid {}, user ", client.pid)),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("{port}/tcp is free now")),
        "{}",
        r.stdout
    );
    let st = server
        .wait_exit(Duration::from_secs(10))
        .expect("listener exited");
    assert_eq!(st.signal(), Some(SIGTERM), "{st:?}");
    // The client is untouched.
    std::thread::sleep(Duration::from_millis(100));
    assert!(client.running(), "the client must not be signalled");
    assert!(pid_alive(client.pid));
    assert!(port_is_free(server.port), "the port can be bound again");
    let r = portolan(&["free", &port, "--json"]);
    r.expect_code(0);
    assert_eq!(r.json()["free"], true, "{}", r.stdout);
}

#[test]
fn kill_dry_run_signals_nothing() {
    let mut server = Py::listen(Listen::tcp("127.0.0.1"));
    let port = server.port.to_string();
    let r = portolan(&["kill", &port, "--dry-run"]);
    r.expect_code(0);
    assert!(r.stdout.contains("would send SIGTERM to:"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("(pid {}, user ", server.pid)),
        "{}",
        r.stdout
    );
    let r = portolan(&["kill", &port, "--dry-run", "--json", "--signal", "KILL"]);
    r.expect_code(0);
    let d = r.json();
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["signal"], "KILL");
    assert_eq!(d["pids"], serde_json::json!([server.pid]));
    std::thread::sleep(Duration::from_millis(200));
    assert!(server.running(), "dry run must not signal");
    assert!(!port_is_free(server.port));
}

#[test]
fn kill_without_yes_and_no_terminal_refuses() {
    let mut server = Py::listen(Listen::tcp("127.0.0.1"));
    let r = portolan(&["kill", &server.port.to_string()]);
    r.expect_code(2);
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].starts_with("portolan: error:") && lines[0].contains("--yes"),
        "{}",
        r.stderr
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        server.running(),
        "nothing is signalled without confirmation"
    );
}

#[test]
fn kill_term_ignored_then_kill_signal() {
    let mut server = Py::listen(Listen {
        ignore_term: true,
        ..Listen::tcp("127.0.0.1")
    });
    let port = server.port.to_string();
    let r = portolan(&["kill", &port, "--yes", "--wait", "1"]);
    r.expect_code(1);
    assert!(
        r.stdout
            .contains(&format!("{port}/tcp is still held after 1.0s")),
        "{}",
        r.stdout
    );
    assert!(server.running(), "SIGTERM is ignored");

    let r = portolan(&["kill", &port, "--yes", "--signal", "KILL"]);
    r.expect_code(0);
    assert!(r.stdout.contains("sending SIGKILL to:"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("{port}/tcp is free now")),
        "{}",
        r.stdout
    );
    let st = server.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(st.signal(), Some(SIGKILL));
    assert!(port_is_free(server.port));
}

#[test]
fn kill_on_unused_port_exits_1() {
    let port = common::free_port().to_string();
    let r = portolan(&["kill", &port, "--yes"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains(&format!("nothing listens on {port}/tcp")),
        "{}",
        r.stderr
    );
    // A TCP listener is not a UDP one.
    let mut server = Py::listen(Listen::tcp("127.0.0.1"));
    let r = portolan(&["kill", &format!("{}/udp", server.port), "--yes"]);
    r.expect_code(1);
    assert!(server.running());
}

#[test]
fn kill_udp_socket() {
    let mut server = Py::listen(Listen::udp("127.0.0.1"));
    let port = server.port.to_string();
    let r = portolan(&["kill", &port, "--udp", "--yes", "--json"]);
    r.expect_code(0);
    let d = r.json();
    assert_eq!(d["proto"], "udp");
    assert_eq!(d["freed"], true);
    assert_eq!(d["pids"], serde_json::json!([server.pid]));
    let st = server.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(st.signal(), Some(SIGTERM));
    assert!(UdpSocket::bind((Ipv4Addr::LOCALHOST, server.port)).is_ok());
}

#[test]
fn kill_prefork_signals_every_holder() {
    let mut server = Py::listen(Listen {
        fork: true,
        ..Listen::tcp("127.0.0.1")
    });
    let forked = server.forked.expect("forked pid");
    let port = server.port.to_string();
    let r = portolan(&["kill", &port, "--yes", "--json"]);
    r.expect_code(0);
    let d = r.json();
    let mut pids: Vec<u64> = d["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    let mut want = vec![u64::from(server.pid), u64::from(forked)];
    want.sort_unstable();
    assert_eq!(pids, want, "{d}");
    assert_eq!(d["freed"], true);
    assert_eq!(d["failures"], serde_json::json!([]));
    let st = server
        .wait_exit(Duration::from_secs(10))
        .expect("parent exited");
    assert_eq!(st.signal(), Some(SIGTERM));
    assert!(
        wait_for(Duration::from_secs(10), || !pid_alive(forked)),
        "the forked holder was signalled too"
    );
    assert!(port_is_free(server.port));
}

/// A listener handed to an unrelated process (hot restart, fd passing): `kill` finds and
/// signals both holders.
#[test]
fn kill_signals_an_unrelated_process_sharing_the_listener() {
    let mut server = Py::shared();
    let other = server.forked.expect("other holder");
    let port = server.port.to_string();
    let socks = sockets(&portolan_json(&["ls", "--json", "--port", &port]));
    let mut both = vec![server.pid, other];
    both.sort_unstable();
    assert_eq!(
        proc_pids(listener(&socks, "127.0.0.1", server.port, "tcp")),
        both
    );

    let r = portolan(&["kill", &port, "--yes", "--json"]);
    r.expect_code(0);
    let d = r.json();
    assert_eq!(d["freed"], true, "{d}");
    let mut pids: Vec<u64> = d["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    pids.sort_unstable();
    assert_eq!(pids, both.iter().map(|&p| u64::from(p)).collect::<Vec<_>>());
    let st = server.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(st.signal(), Some(SIGTERM));
    assert!(wait_for(Duration::from_secs(10), || !pid_alive(other)));
    assert!(port_is_free(server.port));
}

/// `who PORT` answers "who holds this port": every holder, as `ls` and `kill` find them.
#[test]
fn who_lists_every_holder_of_a_shared_listener() {
    let server = Py::shared();
    let other = server.forked.expect("other holder");
    let port = server.port.to_string();
    let mut both = vec![server.pid, other];
    both.sort_unstable();
    let socks = sockets(&portolan_json(&["who", "--json", &port]));
    assert_eq!(
        proc_pids(listener(&socks, "127.0.0.1", server.port, "tcp")),
        both,
        "who"
    );
    let info = portolan_json(&["info", &port, "--json"]);
    let listeners: Vec<Value> = info["results"][0]["ports"][0]["listeners"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(proc_pids(&listeners[0]), both, "info");
    let r = portolan(&["who", &port]);
    r.expect_code(0);
    assert!(r.stdout.contains(&format!("(pid {other})")), "{}", r.stdout);
}

/// Two `kill PORT` at once: the one that finds the port already freed (its holder gone
/// between the socket dump and the owner walk, or before its signal) says so and succeeds
/// (or, started after the port was free, says nothing listens, exit 1); it never blames
/// an unreadable holder (exit 2). Raced many times, since the window is narrow.
#[test]
fn concurrent_kills_both_see_the_port_freed() {
    for round in 0..25 {
        let server = Py::listen(Listen::tcp("127.0.0.1"));
        let port = server.port.to_string();
        let runs: Vec<common::Run> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| s.spawn(|| portolan(&["kill", "--yes", &port])))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &runs {
            // Exit 0: it signalled the holder, or found the port freed meanwhile. Exit 1:
            // it started after the port was free ("nothing listens", as for any free port).
            let ok = match r.code() {
                0 => r.stdout.contains("is free now") || r.stdout.contains("already free"),
                1 => r.stderr.contains("nothing listens"),
                _ => false,
            };
            assert!(ok, "round {round}: {}\n{}", r.stdout, r.stderr);
            assert!(
                !r.stderr.contains("unreadable"),
                "round {round}: {}",
                r.stderr
            );
        }
        assert!(
            runs.iter().any(|r| r.stdout.contains("is free now")),
            "round {round}: neither kill signalled"
        );
        assert!(port_is_free(server.port));
    }
}
