//! Local listeners probed as `ls --probe` does (`local::probe_listeners`), against real
//! servers on loopback: a wildcard listener reached through loopback, a version kept free
//! of terminal escapes, and what a silent service did (reset, closed, or said nothing).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use portolan_core::{Protocol, SocketState};
use portolan_probe::local::{listener_key, probe_listeners};
use portolan_probe::{probe_tcp, Options, Signatures, Silence};

/// A TCP server on `addr` (port 0: any), each connection handled by `behaviour` on a thread
/// of its own. Returns the bound address.
fn serve(addr: &str, behaviour: fn(TcpStream)) -> SocketAddr {
    let l = TcpListener::bind(addr).unwrap();
    let bound = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || behaviour(c));
        }
    });
    bound
}

/// An HTTP server whose Server header carries a colour escape inside the version, as a
/// hostile or broken server might send it.
fn escaping_http(mut c: TcpStream) {
    let mut buf = [0u8; 2048];
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    if matches!(c.read(&mut buf), Ok(n) if n > 0) {
        let _ = c.write_all(
            b"HTTP/1.0 200 OK\r\nServer: Werkzeug/2.0.0\x1b[31m Python/3.11.2\r\n\
              Content-Type: text/html\r\n\r\n<title>\x1b]0;owned\x07x</title>\n",
        );
    }
}

fn quick() -> Options {
    Options {
        connect_timeout: Duration::from_secs(1),
        banner_wait: Duration::from_millis(300),
        read_timeout: Duration::from_millis(600),
        ..Options::default()
    }
}

#[test]
fn a_version_keeps_no_escape_sequence() {
    let addr = serve("127.0.0.1:0", escaping_http);
    let r = probe_tcp(addr, None, &Signatures::builtin(), &quick());
    let id = r.identity.expect("the HTTP answer names the service");
    assert_eq!(id.service, "http");
    assert_eq!(id.product.as_deref(), Some("Werkzeug"));
    // Cut at the source: no ESC, and no visible `\x1b[31m` text either.
    assert_eq!(id.version.as_deref(), Some("2.0.0"), "{:?}", id.version);
    assert_eq!(id.version_text(), "Werkzeug 2.0.0");
    // The banner is evidence: kept, but escaped.
    let banner = r.banner.unwrap();
    assert!(banner.contains("\\x1b[31m"), "{banner}");
    assert!(!banner.chars().any(char::is_control), "{banner}");
    // The page title went through the same escaping.
    let title = r.http.unwrap().title.expect("title");
    assert!(!title.chars().any(char::is_control), "{title:?}");
}

#[test]
fn silent_services_say_what_they_did() {
    // Reset at once: SO_LINGER 0, then close.
    let reset = serve("127.0.0.1:0", |c| {
        rustix::net::sockopt::set_socket_linger(&c, Some(Duration::ZERO)).unwrap();
        drop(c);
    });
    // Closed at once, cleanly.
    let closed = serve("127.0.0.1:0", drop);
    // Accepts and reads, never answers, until the client goes.
    let quiet = serve("127.0.0.1:0", |mut c| {
        let mut b = [0u8; 256];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if matches!(c.read(&mut b), Ok(0) | Err(_)) {
                return;
            }
        }
    });
    let sigs = Signatures::builtin();
    for (addr, want) in [
        (reset, Silence::Reset),
        (closed, Silence::Closed),
        (quiet, Silence::Quiet),
    ] {
        let t = Instant::now();
        let r = probe_tcp(addr, None, &sigs, &quick());
        assert!(
            r.identity.is_none() && r.banner.is_none() && r.error.is_none(),
            "{r:?}"
        );
        assert_eq!(r.silence, Some(want), "{addr}: {r:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }
    // A service that spoke has no silence.
    let talks = serve("127.0.0.1:0", escaping_http);
    assert_eq!(probe_tcp(talks, None, &sigs, &quick()).silence, None);
}

#[test]
fn local_listeners_are_chosen_and_reached() {
    // A wildcard listener: reached through loopback, reported under its own address.
    let wild = serve("0.0.0.0:0", escaping_http);
    let specific = serve("127.0.0.1:0", drop);
    // A UDP socket on a port no UDP probe names: not sent guesses.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let listeners = [
        listener_key(Protocol::Tcp, SocketState::Listen, wild).unwrap(),
        listener_key(Protocol::Tcp, SocketState::Listen, specific).unwrap(),
        // Twice: probed once.
        listener_key(Protocol::Tcp, SocketState::Listen, specific).unwrap(),
        listener_key(Protocol::Udp, SocketState::Unconn, udp_addr).unwrap(),
    ];
    let t = Instant::now();
    let probed = probe_listeners(listeners, &Signatures::builtin());
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(probed.iter().count(), 2);
    let w = probed
        .of_socket(Protocol::Tcp, SocketState::Listen, wild)
        .unwrap();
    assert_eq!(w.addr, SocketAddr::from(([127, 0, 0, 1], wild.port())));
    let id = w.identity.as_ref().unwrap();
    assert_eq!(id.service_over(w.tls.as_ref()), "http");
    let s = probed
        .of_socket(Protocol::Tcp, SocketState::Listen, specific)
        .unwrap();
    assert_eq!(s.silence, Some(Silence::Closed));
    assert!(probed
        .of_socket(Protocol::Udp, SocketState::Unconn, udp_addr)
        .is_none());
}
