//! `portolan ls`, the overview and `info`, against real python listeners and real
//! connections on loopback.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpStream};

use common::{
    listener, lport, parse_csv, pid_of, portolan, portolan_json, proc_pids, rport, sockets,
    user_name, Listen, Py,
};
use serde_json::Value;

/// The fields a user checks for a listener owned by the python child `py`.
fn assert_owned_by(s: &Value, py: &Py) {
    let uid = common::my_uid();
    assert_eq!(pid_of(s), Some(py.pid), "pid of {s}");
    assert_eq!(s["process"], py.comm().as_str(), "process name of {s}");
    assert_eq!(proc_pids(s), vec![py.pid], "processes of {s}");
    assert_eq!(s["uid"], uid, "uid of {s}");
    assert_eq!(
        s["user"].as_str().map(str::to_string),
        user_name(uid),
        "user of {s}"
    );
    assert_eq!(s["processes"][0]["uid"], uid);
    let cmdline = s["processes"][0]["cmdline"].as_str().expect("cmdline");
    assert!(cmdline.contains("portolan-itest-"), "cmdline {cmdline:?}");
}

#[test]
fn loopback_listener_in_json_jsonl_and_csv() {
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    if common::my_uid() == 0 {
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }

    let doc = portolan_json(&["ls", "--json"]);
    assert_eq!(doc["source"], "netlink");
    assert!(doc["warnings"].is_array());
    let socks = sockets(&doc);
    let s = listener(&socks, "127.0.0.1", py.port, "tcp");
    assert_owned_by(s, &py);
    assert_eq!(s["family"], "ipv4");
    assert_eq!(s["state"], "listen");
    assert_eq!(s["exposure"], "loopback");
    assert!(s["stack"].is_null(), "a specific address has no stack: {s}");
    assert!(s["remote_addr"].is_null());
    assert_eq!(s["send_q"], 128, "the listen backlog python asked for");
    assert!(s["inode"].as_u64().unwrap() > 0);

    let r = portolan(&["ls", "--jsonl"]);
    r.expect_code(0);
    let lines = r.jsonl();
    let s = listener(&lines, "127.0.0.1", py.port, "tcp");
    assert_owned_by(s, &py);
    assert_eq!(s["exposure"], "loopback");
    assert_eq!(s["state"], "listen");

    let r = portolan(&["ls", "--csv"]);
    r.expect_code(0);
    let rows = parse_csv(&r.stdout);
    let header = &rows[0];
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    assert!(
        rows.iter().all(|row| row.len() == header.len()),
        "ragged CSV:\n{}",
        r.stdout
    );
    let port = py.port.to_string();
    let ours: Vec<&Vec<String>> = rows[1..]
        .iter()
        .filter(|row| row[col("local_port")] == port && row[col("local_addr")] == "127.0.0.1")
        .collect();
    assert_eq!(ours.len(), 1, "{}", r.stdout);
    let row = ours[0];
    assert_eq!(row[col("proto")], "tcp");
    assert_eq!(row[col("state")], "listen");
    assert_eq!(row[col("exposure")], "loopback");
    assert_eq!(row[col("pid")], py.pid.to_string());
    assert_eq!(row[col("pids")], py.pid.to_string());
    assert_eq!(row[col("process")], py.comm());
    assert_eq!(row[col("uid")], common::my_uid().to_string());
    assert_eq!(Some(row[col("user")].clone()), user_name(common::my_uid()));
    assert!(row[col("remote_addr")].is_empty());
    assert!(row[col("cmdline")].contains("portolan-itest-"));
}

#[test]
fn wildcard_ipv4_listener_is_exposed_on_all_interfaces() {
    let py = Py::listen(Listen::tcp("0.0.0.0"));
    let socks = sockets(&portolan_json(&[
        "ls",
        "--json",
        "--port",
        &py.port.to_string(),
    ]));
    let s = listener(&socks, "0.0.0.0", py.port, "tcp");
    assert_owned_by(s, &py);
    assert_eq!(s["exposure"], "all_interfaces");
    assert_eq!(s["stack"], "ipv4");
    assert_eq!(s["family"], "ipv4");
}

#[test]
fn wildcard_ipv6_listener_stack_follows_v6only() {
    let dual = Py::listen(Listen {
        v6only: Some(false),
        ..Listen::tcp("::")
    });
    let v6 = Py::listen(Listen {
        v6only: Some(true),
        ..Listen::tcp("::")
    });
    let spec = format!("{},{}", dual.port, v6.port);
    let socks = sockets(&portolan_json(&["ls", "--json", "--port", &spec]));
    let s = listener(&socks, "::", dual.port, "tcp");
    assert_owned_by(s, &dual);
    assert_eq!(s["family"], "ipv6");
    assert_eq!(s["exposure"], "all_interfaces");
    assert_eq!(s["stack"], "dual_stack");
    let s = listener(&socks, "::", v6.port, "tcp");
    assert_owned_by(s, &v6);
    assert_eq!(s["exposure"], "all_interfaces");
    assert_eq!(s["stack"], "ipv6");
}

#[test]
fn udp_loopback_socket_is_unconnected() {
    let py = Py::listen(Listen::udp("127.0.0.1"));
    let socks = sockets(&portolan_json(&["ls", "--json", "-u"]));
    let s = listener(&socks, "127.0.0.1", py.port, "udp");
    assert_owned_by(s, &py);
    assert_eq!(s["proto"], "udp");
    assert_eq!(s["state"], "unconn");
    assert_eq!(s["exposure"], "loopback");
    // The same port over TCP is a different socket: nothing there.
    let r = portolan(&["ls", "--json", "-t", "--port", &py.port.to_string()]);
    r.expect_code(1);
    assert!(sockets(&r.json()).is_empty());
}

/// The `service` column names what the catalog says about the port: the same answer as
/// `info PORT/tcp`.
#[test]
fn service_field_agrees_with_info() {
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    let port = py.port.to_string();
    let socks = sockets(&portolan_json(&["ls", "--json", "--port", &port]));
    let s = listener(&socks, "127.0.0.1", py.port, "tcp");
    let info = portolan_json(&["info", &format!("{port}/tcp"), "--json"]);
    let p = &info["results"][0]["ports"][0];
    assert_eq!(p["port"], py.port);
    let named: Vec<&str> = p["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["proto"] == "tcp")
        .filter_map(|a| a["service"].as_str())
        .filter(|n| !n.is_empty())
        .collect();
    match s["service"].as_str() {
        Some(svc) => assert!(named.contains(&svc), "ls says {svc}, info says {named:?}"),
        None => assert!(named.is_empty(), "ls names no service, info says {named:?}"),
    }
    // info shows the listener too, owned by the child.
    let listeners = p["listeners"].as_array().unwrap();
    assert!(
        listeners
            .iter()
            .any(|l| pid_of(l) == Some(py.pid) && l["local_addr"] == "127.0.0.1"),
        "{listeners:?}"
    );
    let r = portolan(&["info", &port]);
    r.expect_code(0);
    let line = format!(
        "listening now:  {} (pid {}) on 127.0.0.1:{port}/tcp (loopback)",
        py.comm(),
        py.pid
    );
    assert!(r.stdout.contains(&line), "{}", r.stdout);
    // A range around the port lists it among the busy ports, with its listener.
    let range = format!("{}-{}", py.port - 1, py.port.saturating_add(1));
    let d = portolan_json(&["info", &range, "--json"]);
    assert_eq!(d["results"][0]["kind"], "range");
    let busy = d["results"][0]["ports"].as_array().unwrap();
    let ours = busy
        .iter()
        .find(|p| p["port"] == py.port)
        .unwrap_or_else(|| panic!("{range}: {busy:?}"));
    assert!(ours["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| pid_of(l) == Some(py.pid)));
}

fn services(assignments: &Value) -> Vec<(String, Option<u64>, Option<u64>, String)> {
    assignments
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["service"].as_str().unwrap_or("").to_string(),
                a["port_start"].as_u64(),
                a["port_end"].as_u64(),
                a["proto"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn info_explains_ports_ranges_and_names() {
    let d = portolan_json(&["info", "22", "--json"]);
    let r = &d["results"][0];
    assert_eq!(r["kind"], "port");
    assert_eq!(r["ports"][0]["port"], 22);
    assert_eq!(r["ports"][0]["class"], "well_known");
    let a = services(&r["ports"][0]["assignments"]);
    assert!(
        a.contains(&("ssh".into(), Some(22), Some(22), "tcp".into())),
        "{a:?}"
    );

    let d = portolan_json(&["info", "53/udp", "--json"]);
    let a = services(&d["results"][0]["ports"][0]["assignments"]);
    assert_eq!(a, vec![("domain".into(), Some(53), Some(53), "udp".into())]);

    let d = portolan_json(&["info", "ssh", "--json"]);
    let r = &d["results"][0];
    assert_eq!(r["kind"], "name");
    let ports: Vec<u64> = r["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(ports.contains(&22), "{ports:?}");
    assert!(services(&r["assignments"]).iter().all(|(n, ..)| n == "ssh"));

    let d = portolan_json(&["info", "6000-6063", "--json"]);
    let r = &d["results"][0];
    assert_eq!(r["kind"], "range");
    let a = services(&r["assignments"]);
    assert!(
        a.contains(&("x11".into(), Some(6000), Some(6063), "tcp".into())),
        "{a:?}"
    );

    let d = portolan_json(&["info", "postgres", "--json"]);
    let r = &d["results"][0];
    let ports: Vec<u64> = r["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, vec![5432]);
    let a = services(&r["ports"][0]["assignments"]);
    assert!(
        a.iter()
            .any(|(n, s, _, p)| n == "postgresql" && *s == Some(5432) && p == "tcp"),
        "{a:?}"
    );

    // Several queries in one run, in order; an unknown name finds nothing (exit 1).
    let d = portolan_json(&["info", "443", "ssh", "--json"]);
    assert_eq!(d["results"].as_array().unwrap().len(), 2);
    assert_eq!(d["results"][0]["query"], "443");
    assert_eq!(d["results"][1]["query"], "ssh");
    portolan(&["info", "nosuchservicezz"]).expect_code(1);
}

/// A python listener with a connection from the test process: (listener, client stream,
/// client local port).
fn listener_with_client() -> (Py, TcpStream, u16) {
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    let c = TcpStream::connect((Ipv4Addr::LOCALHOST, py.port)).expect("connect");
    let cport = c.local_addr().unwrap().port();
    // Wait until the child has accepted: its side then has an owner.
    let port = py.port.to_string();
    assert!(common::wait_for(std::time::Duration::from_secs(10), || {
        let socks = sockets(&portolan_json(&["ls", "-a", "--json", "--port", &port]));
        socks
            .iter()
            .any(|s| rport(s) == Some(cport) && pid_of(s) == Some(py.pid))
    }));
    (py, c, cport)
}

#[test]
fn port_filter_keeps_local_and_remote_matches_only() {
    let (py, _c, cport) = listener_with_client();
    let me = std::process::id();
    let socks = sockets(&portolan_json(&[
        "ls",
        "-a",
        "--json",
        "--port",
        &py.port.to_string(),
    ]));
    for s in &socks {
        assert!(lport(s) == py.port || rport(s) == Some(py.port), "{s}");
    }
    let l = listener(&socks, "127.0.0.1", py.port, "tcp");
    assert_eq!(pid_of(l), Some(py.pid));
    let server: Vec<&Value> = socks
        .iter()
        .filter(|s| lport(s) == py.port && rport(s) == Some(cport))
        .collect();
    assert_eq!(server.len(), 1, "{socks:#?}");
    assert_eq!(server[0]["state"], "established");
    assert_eq!(pid_of(server[0]), Some(py.pid));
    assert!(
        server[0]["exposure"].is_null(),
        "connections have no exposure"
    );
    let client: Vec<&Value> = socks
        .iter()
        .filter(|s| lport(s) == cport && rport(s) == Some(py.port))
        .collect();
    assert_eq!(client.len(), 1, "{socks:#?}");
    assert_eq!(client[0]["state"], "established");
    assert_eq!(client[0]["remote_addr"], "127.0.0.1");
    assert_eq!(
        pid_of(client[0]),
        Some(me),
        "the test process holds the client end"
    );

    // Without -a, only the listener.
    let socks = sockets(&portolan_json(&[
        "ls",
        "-t",
        "--json",
        "--port",
        &py.port.to_string(),
    ]));
    assert_eq!(socks.len(), 1, "{socks:#?}");
    // A list and a range select both.
    let other = Py::listen(Listen::tcp("127.0.0.1"));
    let (lo, hi) = (py.port.min(other.port), py.port.max(other.port));
    let socks = sockets(&portolan_json(&[
        "ls",
        "--json",
        "--port",
        &format!("{lo}-{hi}"),
    ]));
    assert!(socks.iter().all(|s| (lo..=hi).contains(&lport(s))));
    let spec = format!("{},{}", py.port, other.port);
    let socks = sockets(&portolan_json(&["ls", "--json", "--port", &spec]));
    let got: BTreeSet<u16> = socks.iter().map(lport).collect();
    assert_eq!(got, BTreeSet::from([py.port, other.port]));
}

#[test]
fn pid_process_and_user_filters() {
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    let udp = Py::listen(Listen::udp("127.0.0.1"));

    let socks = sockets(&portolan_json(&[
        "ls",
        "--json",
        "--pid",
        &py.pid.to_string(),
    ]));
    assert_eq!(socks.len(), 1, "only the child's one listener: {socks:#?}");
    assert_owned_by(listener(&socks, "127.0.0.1", py.port, "tcp"), &py);
    let both = sockets(&portolan_json(&[
        "ls",
        "--json",
        "--pid",
        &py.pid.to_string(),
        "--pid",
        &udp.pid.to_string(),
    ]));
    assert_eq!(both.len(), 2, "{both:#?}");

    let name = py.comm();
    let socks = sockets(&portolan_json(&["ls", "--json", "--process", &name]));
    listener(&socks, "127.0.0.1", py.port, "tcp");
    listener(&socks, "127.0.0.1", udp.port, "udp");
    for s in &socks {
        let names: Vec<&str> = s["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        let exe_or_arg0 = s["processes"].as_array().unwrap().iter().any(|p| {
            p["exe"]
                .as_str()
                .is_some_and(|e| e.rsplit('/').next() == Some(name.as_str()))
                || p["cmdline"]
                    .as_str()
                    .and_then(|c| c.split(' ').next())
                    .and_then(|a| a.rsplit('/').next())
                    == Some(name.as_str())
        });
        assert!(names.contains(&name.as_str()) || exe_or_arg0, "{s}");
    }
    portolan(&["ls", "--process", "no-such-process-zz"]).expect_code(1);
    // A name only one process has selects exactly that process's sockets.
    let comm = common::unique_comm();
    let named = Py::listen(Listen {
        comm: Some(&comm),
        ..Listen::tcp("127.0.0.1")
    });
    assert_eq!(named.comm(), comm);
    let socks = sockets(&portolan_json(&["ls", "--json", "--process", &comm]));
    assert_eq!(socks.len(), 1, "{socks:#?}");
    assert_owned_by(listener(&socks, "127.0.0.1", named.port, "tcp"), &named);

    let uid = common::my_uid();
    let uname = user_name(uid).expect("the test user has a name");
    for user in [uname.clone(), uid.to_string()] {
        let socks = sockets(&portolan_json(&["ls", "--json", "--user", &user]));
        assert_owned_by(listener(&socks, "127.0.0.1", py.port, "tcp"), &py);
        assert!(socks
            .iter()
            .all(|s| s["uid"] == uid && s["user"] == uname.as_str()));
    }
    // Another user does not own the child's socket.
    let other = if uid == 0 { "nobody" } else { "root" };
    let r = portolan(&["ls", "--json", "--user", other]);
    assert!(matches!(r.code(), 0 | 1), "{r:?}");
    assert!(sockets(&r.json()).iter().all(|s| pid_of(s) != Some(py.pid)));
}

#[test]
fn protocol_and_family_filters() {
    let tcp4 = Py::listen(Listen::tcp("127.0.0.1"));
    let tcp6 = Py::listen(Listen::tcp("::1"));
    let udp4 = Py::listen(Listen::udp("127.0.0.1"));
    let ports = format!("{},{},{}", tcp4.port, tcp6.port, udp4.port);
    let pids = |args: &[&str]| -> BTreeSet<u32> {
        let mut a = vec!["ls", "--json"];
        a.extend_from_slice(args);
        let socks = sockets(&portolan_json(&a));
        for s in &socks {
            if args.contains(&"-t") && !args.contains(&"-u") {
                assert_eq!(s["proto"], "tcp", "{s}");
            }
            if args.contains(&"-u") && !args.contains(&"-t") {
                assert_eq!(s["proto"], "udp", "{s}");
            }
            if args.contains(&"-4") {
                assert_eq!(s["family"], "ipv4", "{s}");
            }
            if args.contains(&"-6") {
                assert_eq!(s["family"], "ipv6", "{s}");
            }
        }
        socks.iter().filter_map(pid_of).collect()
    };
    let all = BTreeSet::from([tcp4.pid, tcp6.pid, udp4.pid]);
    let mine = |got: BTreeSet<u32>| -> BTreeSet<u32> { got.intersection(&all).copied().collect() };
    assert_eq!(mine(pids(&["--port", &ports])), all);
    assert_eq!(mine(pids(&["-t"])), BTreeSet::from([tcp4.pid, tcp6.pid]));
    assert_eq!(mine(pids(&["-u"])), BTreeSet::from([udp4.pid]));
    assert_eq!(mine(pids(&["-t", "-u"])), all);
    assert_eq!(mine(pids(&["-4"])), BTreeSet::from([tcp4.pid, udp4.pid]));
    assert_eq!(mine(pids(&["-6"])), BTreeSet::from([tcp6.pid]));
    assert_eq!(mine(pids(&["-6", "-t"])), BTreeSet::from([tcp6.pid]));
    let socks = sockets(&portolan_json(&["ls", "--json", "-6", "--port", &ports]));
    let s = listener(&socks, "::1", tcp6.port, "tcp");
    assert_eq!(s["exposure"], "loopback");
    assert_owned_by(s, &tcp6);
}

#[test]
fn state_filter_selects_connections() {
    let (py, _c, cport) = listener_with_client();
    // Restricted to the test's port: a busy machine may hold 100k connections.
    let port = py.port.to_string();
    for state in ["established", "ESTAB", "connected"] {
        let socks = sockets(&portolan_json(&[
            "ls", "--json", "--state", state, "--port", &port,
        ]));
        // The port filter matches either end: a TIME_WAIT socket of another test whose
        // ephemeral port happens to be ours is in the answer, rightly; only this test's
        // connection (its two ports) is counted.
        let socks: Vec<_> = socks
            .into_iter()
            .filter(|s| {
                let (l, r) = (lport(s), rport(s));
                (l == py.port && r == Some(cport))
                    || (l == cport && r == Some(py.port))
                    || (l == py.port && s["state"] == "listen")
            })
            .collect();
        assert_eq!(
            socks.len(),
            2,
            "{state}: both ends, no listener: {socks:#?}"
        );
        for s in &socks {
            let st = s["state"].as_str().unwrap();
            if state == "connected" {
                assert!(!["listen", "close", "unconn"].contains(&st), "{state}: {s}");
            } else {
                assert_eq!(st, "established", "{state}: {s}");
            }
        }
        assert!(
            socks
                .iter()
                .any(|s| lport(s) == cport && rport(s) == Some(py.port)),
            "{state}: client end"
        );
        assert!(
            socks.iter().any(|s| lport(s) == py.port
                && rport(s) == Some(cport)
                && pid_of(s) == Some(py.pid)),
            "{state}: server end"
        );
        assert!(
            !socks
                .iter()
                .any(|s| lport(s) == py.port && s["state"] == "listen"),
            "{state}: no listener"
        );
    }
    let socks = sockets(&portolan_json(&[
        "ls",
        "--json",
        "--state",
        "listen",
        "--port",
        &py.port.to_string(),
    ]));
    assert_eq!(socks.len(), 1);
    assert_eq!(socks[0]["state"], "listen");
}

#[test]
fn exposed_filter_skips_loopback_listeners() {
    let lo = Py::listen(Listen::tcp("127.0.0.1"));
    let any = Py::listen(Listen::tcp("0.0.0.0"));
    let socks = sockets(&portolan_json(&["ls", "--json", "--exposed"]));
    assert!(
        socks.iter().all(|s| s["exposure"] != "loopback"),
        "{socks:#?}"
    );
    assert!(socks.iter().all(|s| pid_of(s) != Some(lo.pid)));
    let s = listener(&socks, "0.0.0.0", any.port, "tcp");
    assert_owned_by(s, &any);
    let r = portolan(&["ls", "--json", "--exposed", "--port", &lo.port.to_string()]);
    r.expect_code(1);
}

#[test]
fn prefork_listener_lists_both_processes() {
    let py = Py::listen(Listen {
        fork: true,
        ..Listen::tcp("127.0.0.1")
    });
    let forked = py.forked.expect("forked pid");
    let mut both = vec![py.pid, forked];
    both.sort_unstable();
    let port = py.port.to_string();
    for args in [
        vec!["ls", "--json", "--port", &port],
        vec!["who", "--json", &port],
    ] {
        let socks = sockets(&portolan_json(&args));
        let s = listener(&socks, "127.0.0.1", py.port, "tcp");
        assert_eq!(proc_pids(s), both, "{args:?}: {s}");
        assert!(both.contains(&pid_of(s).unwrap()));
        let names: Vec<&str> = s["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec![py.comm().as_str(); 2]);
    }
    // The CSV lists both pids.
    let r = portolan(&["ls", "--csv", "--port", &py.port.to_string()]);
    r.expect_code(0);
    let rows = parse_csv(&r.stdout);
    let i = rows[0].iter().position(|h| h == "pids").unwrap();
    assert_eq!(rows[1][i], format!("{} {}", both[0], both[1]));
}

type Tuple = (String, String, u16, Option<(String, u16)>, String);

fn tuples_and_pids(doc: &Value) -> BTreeSet<(Tuple, Option<u32>)> {
    sockets(doc)
        .iter()
        .map(|s| {
            let remote = s["remote_addr"]
                .as_str()
                .map(|a| (a.to_string(), rport(s).unwrap()));
            (
                (
                    s["proto"].as_str().unwrap().to_string(),
                    s["local_addr"].as_str().unwrap().to_string(),
                    lport(s),
                    remote,
                    s["state"].as_str().unwrap().to_string(),
                ),
                pid_of(s),
            )
        })
        .collect()
}

#[test]
fn proc_source_agrees_with_netlink() {
    let (py, _c, cport) = listener_with_client();
    let v6 = Py::listen(Listen {
        v6only: Some(false),
        ..Listen::tcp("::")
    });
    let udp = Py::listen(Listen::udp("127.0.0.1"));
    let spec = format!("{},{},{}", py.port, v6.port, udp.port);
    let nl = portolan_json(&["ls", "-a", "--json", "--port", &spec, "--source", "netlink"]);
    let pr = portolan_json(&["ls", "-a", "--json", "--port", &spec, "--source", "proc"]);
    assert_eq!(nl["source"], "netlink");
    assert_eq!(pr["source"], "proc");
    // Other programs' connections may share these port numbers and come and go between
    // the two runs: compare the sockets this test's processes hold.
    let me = std::process::id();
    let ours = [py.pid, v6.pid, udp.pid, me];
    let owned = |t: &(Tuple, Option<u32>)| t.1.is_some_and(|p| ours.contains(&p));
    let a: BTreeSet<_> = tuples_and_pids(&nl).into_iter().filter(owned).collect();
    let b: BTreeSet<_> = tuples_and_pids(&pr).into_iter().filter(owned).collect();
    assert_eq!(a, b, "netlink and /proc/net disagree");
    assert_eq!(a.len(), 5, "{a:#?}");
    let expect = [
        (
            (
                "tcp".into(),
                "127.0.0.1".into(),
                py.port,
                None,
                "listen".into(),
            ),
            Some(py.pid),
        ),
        (
            (
                "tcp".into(),
                "127.0.0.1".into(),
                py.port,
                Some(("127.0.0.1".into(), cport)),
                "established".into(),
            ),
            Some(py.pid),
        ),
        (
            (
                "tcp".into(),
                "127.0.0.1".into(),
                cport,
                Some(("127.0.0.1".into(), py.port)),
                "established".into(),
            ),
            Some(me),
        ),
        (
            ("tcp".into(), "::".into(), v6.port, None, "listen".into()),
            Some(v6.pid),
        ),
        (
            (
                "udp".into(),
                "127.0.0.1".into(),
                udp.port,
                None,
                "unconn".into(),
            ),
            Some(udp.pid),
        ),
    ];
    for e in expect {
        assert!(b.contains(&e), "missing {e:?} in {b:#?}");
    }
    // Exposure is judged the same way from both sources.
    let pr_socks = sockets(&pr);
    let s = listener(&pr_socks, "::", v6.port, "tcp");
    assert_eq!(s["exposure"], "all_interfaces");
}

#[test]
fn overview_shows_listener_under_its_process() {
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    let r = portolan(&[]);
    r.expect_code(0);
    assert!(!r.stdout.contains('\x1b'), "no colour into a pipe");
    let first = r.stdout.lines().next().unwrap();
    assert!(first.contains("listening socket(s)"), "{first}");
    let head = format!(
        "{}  pid {}  user {}",
        py.comm(),
        py.pid,
        user_name(common::my_uid()).unwrap()
    );
    let lines: Vec<&str> = r.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no group {head:?} in:\n{}", r.stdout));
    let group: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect();
    let addr = format!("127.0.0.1:{}", py.port);
    assert!(
        group
            .iter()
            .any(|l| l.contains(&addr) && l.contains("local") && l.contains("tcp")),
        "group {head:?} lacks {addr}:\n{}",
        r.stdout
    );
    // JSON overview: listening sockets only, ours included.
    let socks = sockets(&portolan_json(&["--json"]));
    assert!(socks
        .iter()
        .all(|s| s["state"] == "listen" || s["state"] == "unconn"));
    assert_owned_by(listener(&socks, "127.0.0.1", py.port, "tcp"), &py);
}

#[test]
fn no_match_exits_1() {
    let port = common::free_port().to_string();
    let r = portolan(&["ls", "--port", &port]);
    r.expect_code(1);
    let r = portolan(&["ls", "--json", "--port", &port]);
    r.expect_code(1);
    assert!(sockets(&r.json()).is_empty());
    let r = portolan(&["ls", "--jsonl", "--port", &port]);
    r.expect_code(1);
    assert!(r.stdout.is_empty());
}

/// A process can name itself anything (15 bytes of `comm`): terminal escapes, commas,
/// quotes, newlines. Tables and CSV must show it escaped; JSON carries the exact bytes.
#[test]
fn hostile_process_name_is_escaped() {
    let evil = "x\x1b[2J,\"\ny";
    let py = Py::listen(Listen {
        comm: Some(evil),
        ..Listen::tcp("127.0.0.1")
    });
    assert_eq!(py.comm(), evil);
    let port = py.port.to_string();
    let shown = "x\\x1b[2J,\"\\ny";

    let socks = sockets(&portolan_json(&["ls", "--json", "--port", &port]));
    assert_eq!(
        listener(&socks, "127.0.0.1", py.port, "tcp")["process"],
        evil
    );

    for args in [
        vec!["ls", "--port", port.as_str()],
        vec!["who", port.as_str()],
        vec!["kill", port.as_str(), "--dry-run"],
        vec!["info", port.as_str()],
        vec!["free", port.as_str()],
        vec![],
    ] {
        let r = portolan(&args);
        assert!(matches!(r.code(), 0 | 1), "{args:?}: {r:?}");
        assert!(
            !r.stdout.contains('\x1b'),
            "{args:?}: raw ESC in {:?}",
            r.stdout
        );
        assert!(
            r.stdout.contains(&format!("{shown}/{}", py.pid))
                || r.stdout.contains(&format!("{shown} (pid {}", py.pid))
                || r.stdout.contains(&format!("{shown}  pid {}", py.pid)),
            "{args:?}: the name, escaped, next to its pid:\n{}",
            r.stdout
        );
    }

    let r = portolan(&["ls", "--csv", "--port", &port]);
    r.expect_code(0);
    assert!(!r.stdout.contains('\x1b'));
    let rows = parse_csv(&r.stdout);
    assert_eq!(
        rows.len(),
        2,
        "one header, one row, no injected rows:\n{}",
        r.stdout
    );
    assert_eq!(rows[0].len(), rows[1].len());
    let i = rows[0].iter().position(|h| h == "process").unwrap();
    assert_eq!(rows[1][i], shown);
}

#[test]
fn numeric_output_shows_uids_and_no_service_names() {
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    let uid = common::my_uid().to_string();
    let r = portolan(&["ls", "-n", "--port", &py.port.to_string()]);
    r.expect_code(0);
    let mut lines = r.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "EXPOSURE",
            "PROTO",
            "STATE",
            "LOCAL",
            "REMOTE",
            "PROCESS/PID",
            "USER"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let addr = format!("127.0.0.1:{}", py.port);
    let proc_pid = format!("{}/{}", py.comm(), py.pid);
    assert_eq!(
        row,
        [
            "local",
            "tcp",
            "LISTEN",
            addr.as_str(),
            "*",
            proc_pid.as_str(),
            uid.as_str()
        ]
    );
    assert!(lines.next().is_none());
    // The overview too: the group names the uid.
    let r = portolan(&["-n"]);
    r.expect_code(0);
    assert!(
        r.stdout
            .contains(&format!("{}  pid {}  user {uid}\n", py.comm(), py.pid)),
        "{}",
        r.stdout
    );
}

/// With a tiny open-file limit the owner walk runs out of descriptors (EMFILE): that is
/// reported as what it is (our limit, named), never as processes in another PID namespace.
#[test]
fn an_fd_limit_is_reported_as_emfile_not_as_a_namespace() {
    let ready = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .map(|_| ())
        .map_err(|e| format!("prlimit (util-linux) is needed: {e}"));
    if !portolan_testsupport::skip_unless(ready) {
        return;
    }
    let py = Py::listen(Listen::tcp("127.0.0.1"));
    // 4: stdin, stdout, stderr and one more; the walk needs two per fd table.
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=4", "--", env!("CARGO_BIN_EXE_portolan")])
        .args(["ls", "-a", "--json"]);
    let r = common::run_cmd(cmd);
    r.expect_code(0);
    let doc = r.json();
    let warnings: Vec<&str> = doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let emfile: Vec<&&str> = warnings.iter().filter(|w| w.contains("EMFILE")).collect();
    assert_eq!(emfile.len(), 1, "{warnings:#?}");
    assert!(emfile[0].contains("open-file limit is 4"), "{warnings:#?}");
    // The python listener is ours to read: had it been reached it would have an owner,
    // so its missing owner may not be blamed on a namespace.
    let mine = sockets(&doc)
        .into_iter()
        .find(|s| lport(s) == py.port)
        .expect("the listener is listed");
    assert_eq!(pid_of(&mine), None, "EMFILE hid every owner: {mine}");
    // No fd table could be opened, so none was found unreadable either.
    assert!(
        !warnings.iter().any(|w| w.contains("PID namespace")),
        "{warnings:#?}"
    );
}
