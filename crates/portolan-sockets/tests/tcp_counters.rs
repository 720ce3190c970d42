//! The kernel's per-socket TCP counters (`tcp_info` through sock_diag) on real loopback
//! connections: after N bytes one way and M the other, the sender's socket shows N
//! acknowledged and the receiver's N received, through every request path the inventory
//! uses: one family (`SOCK_DIAG_BY_FAMILY`), both families in one pass (`TCPDIAG_GETSOCK`),
//! each with and without the kernel's single-port filter.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use portolan_core::{Port, PortRange, PortSpec, Protocol};
use portolan_sockets::{Inventory, OwnerScan, Query, SocketEntry, Source, TcpCounters};

/// Client to server, and server to client: more than a socket buffer each, so the
/// transfer takes many segments and both sides' counters move a lot.
const N: usize = 3 * 1024 * 1024;
const M: usize = 1024 * 1024 + 17;

/// An established loopback connection after the transfer: (client, accepted server side).
struct Conn {
    client: TcpStream,
    server: TcpStream,
}

impl Conn {
    /// Connects on `ip` and moves N bytes client -> server and M bytes server -> client,
    /// each side reading all it was sent. `None` when `ip` cannot be bound (no IPv6).
    fn transfer(ip: &str) -> Option<Conn> {
        let listener = TcpListener::bind((ip, 0)).ok()?;
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // Each direction written on its own thread while the other end reads, so neither
        // writer blocks on a full buffer that nobody drains.
        let pump = |mut from: TcpStream, mut to: TcpStream, len: usize| {
            std::thread::spawn(move || {
                let w = std::thread::spawn(move || {
                    let chunk = vec![0x5a_u8; 64 * 1024];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        from.write_all(&chunk[..n]).unwrap();
                        left -= n;
                    }
                });
                let mut got = 0;
                let mut buf = vec![0u8; 64 * 1024];
                while got < len {
                    let n = to.read(&mut buf).unwrap();
                    assert!(n > 0, "connection closed after {got} of {len} bytes");
                    got += n;
                }
                w.join().unwrap();
                assert_eq!(got, len);
            })
        };
        let up = pump(client.try_clone().unwrap(), server.try_clone().unwrap(), N);
        let down = pump(server.try_clone().unwrap(), client.try_clone().unwrap(), M);
        up.join().unwrap();
        down.join().unwrap();
        Some(Conn { client, server })
    }

    fn client_addr(&self) -> SocketAddr {
        self.client.local_addr().unwrap()
    }

    fn server_addr(&self) -> SocketAddr {
        self.server.local_addr().unwrap()
    }

    /// The counters of the client's and the server's sockets in `sockets`.
    fn counters(&self, sockets: &[SocketEntry]) -> (Option<TcpCounters>, Option<TcpCounters>) {
        let find = |local: SocketAddr, remote: SocketAddr| {
            let found: Vec<&SocketEntry> = sockets
                .iter()
                .filter(|s| s.local == local && s.remote == Some(remote))
                .collect();
            assert_eq!(found.len(), 1, "socket {local} -> {remote}: {found:?}");
            found[0].tcp
        };
        (
            find(self.client_addr(), self.server_addr()),
            find(self.server_addr(), self.client_addr()),
        )
    }
}

/// The queries to check, each through another request path: one family, both families,
/// each with and without the one-port filter (the listener's port, which both ends of
/// the connection carry, as local or remote port).
fn queries(conn: &Conn) -> Vec<(&'static str, Query)> {
    let v4 = conn.client_addr().is_ipv4();
    let port = PortSpec::from_ranges(vec![PortRange::single(Port::new(
        conn.server_addr().port(),
    ))]);
    let one_family = Query {
        udp: false,
        ipv4: v4,
        ipv6: !v4,
        owners: OwnerScan::None,
        source: Source::Netlink,
        ..Query::default()
    };
    let both_families = Query {
        ipv4: true,
        ipv6: true,
        ..one_family.clone()
    };
    vec![
        ("one family", one_family.clone()),
        (
            "one family, one port",
            Query {
                ports: Some(port.clone()),
                ..one_family
            },
        ),
        ("both families", both_families.clone()),
        (
            "both families, one port",
            Query {
                ports: Some(port),
                ..both_families.clone()
            },
        ),
        // What a live view asks: every TCP and UDP socket (the default query).
        (
            "default, with UDP",
            Query {
                owners: OwnerScan::None,
                source: Source::Netlink,
                ..Query::default()
            },
        ),
    ]
}

/// `Some` when the counters show the whole transfer settled: everything sent was
/// acknowledged. The side that connected counts its SYN as one acknowledged byte, so its
/// `bytes_acked` is one more than the data it sent.
fn settled(client: Option<TcpCounters>, server: Option<TcpCounters>) -> bool {
    let (Some(c), Some(s)) = (client, server) else {
        return false;
    };
    c.bytes_acked >= N as u64 && s.bytes_acked >= M as u64
}

fn check(ip: &str) {
    let Some(conn) = Conn::transfer(ip) else {
        portolan_testsupport::skip_or_fail(&format!("cannot bind a TCP socket on {ip}"));
        return;
    };
    // The last acknowledgements may still be on their way: wait, bounded.
    let first = &queries(&conn)[0].1;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let socks = Inventory::sockets_with_counters(first).unwrap();
        let (c, s) = conn.counters(&socks);
        if settled(c, s) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters never settled: client {c:?}, server {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (path, q) in queries(&conn) {
        let socks = Inventory::sockets_with_counters(&q).unwrap();
        let (c, s) = conn.counters(&socks);
        let (c, s) = (c.expect(path), s.expect(path));
        let (n, m) = (N as u64, M as u64);
        // Sent one way, received the other, to the byte (the connector's SYN aside).
        assert!((n..=n + 1).contains(&c.bytes_acked), "{path}: client {c:?}");
        assert_eq!(s.bytes_received, n, "{path}: server {s:?}");
        assert_eq!(s.bytes_acked, m, "{path}: server {s:?}");
        assert_eq!(c.bytes_received, m, "{path}: client {c:?}");
        // Bytes sent count retransmissions too (even loopback drops segments when the
        // machine is busy): what was written plus what was resent, to the byte. (Every
        // kernel this runs on has `tcpi_bytes_sent`, Linux 4.19+.)
        for (side, x, len) in [("client", c, n), ("server", s, m)] {
            let resent = x.bytes_retrans.expect(path);
            assert_eq!(x.bytes_sent, Some(len + resent), "{path}: {side} {x:?}");
            assert_eq!(resent > 0, x.retrans_total > 0, "{path}: {side} {x:?}");
        }
        // A measured round trip, well under a second on loopback.
        assert!(c.rtt_us > 0 && c.rtt_us < 1_000_000, "{path}: client {c:?}");
        assert!(
            c.min_rtt_us.is_some_and(|r| r > 0 && r < 1_000_000),
            "{path}: client {c:?}"
        );
        assert!(
            c.delivery_rate.is_some_and(|r| r > 0),
            "{path}: client {c:?}"
        );
        // The plain dumps do not ask for counters, so they carry none.
        let plain = Inventory::sockets_only(&q).unwrap();
        assert_eq!(conn.counters(&plain), (None, None), "{path}");
    }
}

#[test]
fn counters_of_an_ipv4_transfer() {
    check("127.0.0.1");
}

#[test]
fn counters_of_an_ipv6_transfer() {
    check("::1");
}

#[test]
fn no_counters_for_udp_or_from_proc_net() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(peer.local_addr().unwrap()).unwrap();
    udp.send(&[1; 1000]).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let port = |p: u16| Some(PortSpec::from_ranges(vec![PortRange::single(Port::new(p))]));
    let socks = Inventory::sockets_with_counters(&Query {
        tcp: false,
        ports: port(udp.local_addr().unwrap().port()),
        owners: OwnerScan::None,
        source: Source::Netlink,
        ..Query::default()
    })
    .unwrap();
    let mine: Vec<_> = socks
        .iter()
        .filter(|s| s.local == udp.local_addr().unwrap())
        .collect();
    assert_eq!(mine.len(), 1, "{socks:?}");
    assert_eq!(mine[0].proto, Protocol::Udp);
    assert_eq!(mine[0].tcp, None);
    // /proc/net has no counters: asked for them, it answers without.
    let from_proc = Inventory::sockets_with_counters(&Query {
        udp: false,
        ports: port(l.local_addr().unwrap().port()),
        owners: OwnerScan::None,
        source: Source::ProcNet,
        ..Query::default()
    })
    .unwrap();
    assert!(
        from_proc.iter().any(|s| s.local == c.local_addr().unwrap()),
        "{from_proc:?}"
    );
    assert!(from_proc.iter().all(|s| s.tcp.is_none()), "{from_proc:?}");
}
