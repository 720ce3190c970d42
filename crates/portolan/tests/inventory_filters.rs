//! `ls --state`, `--process` and `--user` against real sockets: the filters the inventory
//! applies before its owner walk must still select exactly what they say, with owners.

mod common;

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    listener, lport, pid_of, portolan, portolan_json, rport, sockets, user_name, KillOnDrop,
    Listen, Py,
};
use serde_json::Value;

/// A python listener with a unique `comm`, and a connection to it from this process that
/// the child has accepted: (listener, client stream, client port).
fn named_listener_with_client() -> (Py, String, TcpStream, u16) {
    let comm = common::unique_comm();
    let py = Py::listen(Listen {
        comm: Some(&comm),
        ..Listen::tcp("127.0.0.1")
    });
    let c = TcpStream::connect((Ipv4Addr::LOCALHOST, py.port)).expect("connect");
    let cport = c.local_addr().unwrap().port();
    let port = py.port.to_string();
    assert!(common::wait_for(Duration::from_secs(10), || {
        sockets(&portolan_json(&["ls", "-a", "--json", "--port", &port]))
            .iter()
            .any(|s| rport(s) == Some(cport) && pid_of(s) == Some(py.pid))
    }));
    (py, comm, c, cport)
}

fn is_server_end(s: &Value, py: &Py, cport: u16) -> bool {
    lport(s) == py.port && rport(s) == Some(cport)
}

#[test]
fn state_established_lists_only_established_sockets_with_owners() {
    let (py, comm, _c, cport) = named_listener_with_client();
    let me = std::process::id();
    // No port filter: the whole machine's established sockets, as `ss state established`.
    let socks = sockets(&portolan_json(&["ls", "--state", "established", "--json"]));
    assert!(
        socks.iter().all(|s| s["state"] == "established"),
        "{socks:#?}"
    );
    assert!(
        !socks
            .iter()
            .any(|s| lport(s) == py.port && rport(s).is_none()),
        "the listener is not established"
    );
    let server: Vec<&Value> = socks
        .iter()
        .filter(|s| is_server_end(s, &py, cport))
        .collect();
    assert_eq!(server.len(), 1, "{socks:#?}");
    assert_eq!(pid_of(server[0]), Some(py.pid));
    assert_eq!(server[0]["process"], comm.as_str());
    let client: Vec<&Value> = socks
        .iter()
        .filter(|s| lport(s) == cport && rport(s) == Some(py.port))
        .collect();
    assert_eq!(client.len(), 1, "{socks:#?}");
    assert_eq!(pid_of(client[0]), Some(me), "the test holds the client end");
    // Same with the other spellings of the kernel state.
    let tcp = sockets(&portolan_json(&[
        "ls",
        "-t",
        "--state",
        "ESTAB",
        "--json",
        "--port",
        &py.port.to_string(),
    ]));
    assert_eq!(tcp.len(), 2, "{tcp:#?}");
    // UDP has no established listener-side state here: none of ours is listed.
    let udp = portolan(&[
        "ls",
        "-u",
        "--state",
        "listen",
        "--json",
        "--port",
        &py.port.to_string(),
    ]);
    udp.expect_code(1);
}

#[test]
fn process_filter_selects_the_named_process_only() {
    let (py, comm, _c, cport) = named_listener_with_client();
    let other = Py::listen(Listen::tcp("127.0.0.1"));
    let socks = sockets(&portolan_json(&["ls", "-a", "--json", "--process", &comm]));
    assert_eq!(
        socks.len(),
        2,
        "the listener and the accepted end: {socks:#?}"
    );
    assert!(
        socks.iter().all(|s| pid_of(s) == Some(py.pid)),
        "{socks:#?}"
    );
    listener(&socks, "127.0.0.1", py.port, "tcp");
    assert!(socks.iter().any(|s| is_server_end(s, &py, cport)));
    assert!(!socks.iter().any(|s| lport(s) == other.port));
    // Combined with a state: only the accepted end.
    let socks = sockets(&portolan_json(&[
        "ls",
        "--state",
        "established",
        "--json",
        "--process",
        &comm,
    ]));
    assert_eq!(socks.len(), 1, "{socks:#?}");
    assert!(is_server_end(&socks[0], &py, cport));
    // Combined with a pid that is not that process: nothing.
    portolan(&[
        "ls",
        "-a",
        "--process",
        &comm,
        "--pid",
        &other.pid.to_string(),
    ])
    .expect_code(1);
}

/// A python TCP listener on 127.0.0.1 running as `nobody` (via setpriv): its port.
fn listener_as_nobody() -> (KillOnDrop, u16) {
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::python(),
            "-c",
            "import socket,sys\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(8)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run setpriv python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line
        .trim()
        .parse()
        .expect("a port from the nobody listener");
    (KillOnDrop(child), port)
}

#[test]
fn user_filter_selects_the_kernel_socket_owner() {
    if !common::root_or_skip("user_filter_selects_the_kernel_socket_owner") {
        return;
    }
    let mine = Py::listen(Listen::tcp("127.0.0.1"));
    let (_nobody, nport) = listener_as_nobody();
    let nobody = user_name(65534).expect("uid 65534 has a name");
    let spec = format!("{},{}", mine.port, nport);
    for user in [nobody.as_str(), "65534"] {
        let socks = sockets(&portolan_json(&[
            "ls", "--json", "--port", &spec, "--user", user,
        ]));
        assert_eq!(socks.len(), 1, "{user}: {socks:#?}");
        assert_eq!(lport(&socks[0]), nport);
        assert_eq!(socks[0]["uid"], 65534);
        assert_eq!(socks[0]["user"], nobody.as_str());
        assert!(pid_of(&socks[0]).is_some(), "owner found: {}", socks[0]);
    }
    let socks = sockets(&portolan_json(&[
        "ls", "--json", "--port", &spec, "--user", "root",
    ]));
    assert_eq!(socks.len(), 1, "{socks:#?}");
    assert_eq!(lport(&socks[0]), mine.port);
    assert_eq!(pid_of(&socks[0]), Some(mine.pid));
    let r = portolan(&["ls", "--user", "no-such-user-zz"]);
    r.expect_code(2);
}
