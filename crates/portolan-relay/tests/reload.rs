//! A reload whose new rule cannot bind leaves the old rule running (on loopback only).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use portolan_relay::server::{EventSink, Forwarder};
use portolan_relay::spec::{Proto, Rule};

fn quiet() -> EventSink {
    Arc::new(|_| {})
}

/// Two adjacent free ports on 127.0.0.1, the second one held by us.
fn port_and_held_neighbour() -> (u16, TcpListener) {
    for _ in 0..200 {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if p == u16::MAX {
            continue;
        }
        if let Ok(h) = TcpListener::bind(("127.0.0.1", p + 1)) {
            return (p, h);
        }
    }
    panic!("no two adjacent free ports on 127.0.0.1");
}

fn forwards_through(port: u16, target: &TcpListener) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if c.write_all(b"ping").is_err() {
        return false;
    }
    target.set_nonblocking(false).unwrap();
    let (mut t, _) = target.accept().unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 4];
    t.read_exact(&mut b).is_ok() && &b == b"ping"
}

#[test]
fn a_failed_replacement_keeps_the_old_rule_and_leaves_nothing_behind() {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = target.local_addr().unwrap().to_string();
    let (p, held) = port_and_held_neighbour();
    let one = Rule::parse(Proto::Tcp, &format!("127.0.0.1:{p}"), &taddr).unwrap();
    let fwd = Forwarder::start(vec![one.clone()], quiet(), Some(1)).unwrap();
    assert!(forwards_through(p, &target));

    // Widened onto a port someone else holds: the new rule fails as a whole.
    let wide = Rule::parse(Proto::Tcp, &format!("127.0.0.1:{p}-{}", p + 1), &taddr).unwrap();
    let report = fwd.reload(vec![wide]);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.added.is_empty(), "{report:?}");
    assert_eq!(report.restored, vec![one.name.clone()], "{report:?}");
    assert!(report.removed.is_empty(), "{report:?}");
    let bound = fwd.bound();
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert_eq!(bound[0].addrs[0].port(), p);
    assert!(
        forwards_through(p, &target),
        "the old rule stopped forwarding"
    );

    // Back to the one port: nothing half-started holds it.
    let report = fwd.reload(vec![one]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(forwards_through(p, &target));

    // Once the neighbour is free, the widened rule starts whole.
    drop(held);
    let wide = Rule::parse(Proto::Tcp, &format!("127.0.0.1:{p}-{}", p + 1), &taddr).unwrap();
    let report = fwd.reload(vec![wide]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(forwards_through(p + 1, &target));
    assert_eq!(fwd.drain(Duration::from_secs(2), |_| true), 0);
}

#[test]
fn a_rule_that_forwards_to_itself_is_refused() {
    let p = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own = Rule::parse(
        Proto::Tcp,
        &format!("127.0.0.1:{p}"),
        &format!("127.0.0.1:{p}"),
    )
    .unwrap();
    let e = Forwarder::start(vec![own], quiet(), Some(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("itself"), "{e}");
    // The port is free again: nothing was left bound.
    assert!(TcpListener::bind(("127.0.0.1", p)).is_ok());
    // Another family's address on the same port is a different socket: allowed.
    let target = TcpListener::bind(("::1", 0));
    if let Ok(t) = target {
        let tp = t.local_addr().unwrap().port();
        let cross = Rule::parse(
            Proto::Tcp,
            &format!("127.0.0.1:{tp}"),
            &format!("[::1]:{tp}"),
        )
        .unwrap();
        if let Ok(f) = Forwarder::start(vec![cross], quiet(), Some(1)) {
            assert_eq!(f.drain(Duration::from_secs(1), |_| true), 0);
        }
    }
}
