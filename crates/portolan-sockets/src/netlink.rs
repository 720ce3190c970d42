//! sock_diag over netlink: the kernel's own socket table, as `ss` reads it.
//!
//! Message types come from `netlink-packet-sock-diag`; attributes that crate does not
//! model (the cgroup id) are read from its raw `Other` attributes here, and `tcp_info`
//! (which the crate hands over as raw bytes) by [`TcpCounters::from_tcp_info`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{
    nlas::Nla as InetNla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};
use portolan_core::{Port, Protocol, SocketState};

use crate::entry::{dump_each_family, Family, SocketEntry, SocketSource, TcpCounters};
use crate::SocketsError;

/// `INET_DIAG_CGROUP_ID` from `linux/inet_diag.h` (Linux 5.9+), not modelled by the crate.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// Reads sockets from the live kernel over `NETLINK_SOCK_DIAG`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Netlink;

impl SocketSource for Netlink {
    fn dump(
        &self,
        proto: Protocol,
        family: Family,
        states: u32,
        port: Option<Port>,
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        SockDiag::PLAIN.dump(proto, family, states, port)
    }

    /// TCP in both families in one request: the kernel walks its TCP hash tables once,
    /// not once per family (half the kernel time beside 100,000 sockets). This is the
    /// older `TCPDIAG_GETSOCK` request, which asks for `AF_UNSPEC`. For UDP (which it does
    /// not cover), and once the kernel has refused it (remembered for the rest of the
    /// process), each family is asked for in turn; any other error is the caller's.
    fn dump_both_families(
        &self,
        proto: Protocol,
        states: u32,
        port: Option<Port>,
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        SockDiag::PLAIN.dump_both_families(proto, states, port)
    }
}

/// The sock_diag reader with its request options: [`Netlink`] is the plain one; the
/// inventory asks through `SockDiag::WITH_COUNTERS` when the caller wants TCP counters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SockDiag {
    /// Ask for `INET_DIAG_INFO` (the kernel's `struct tcp_info`) with each TCP socket:
    /// about 250 more bytes per socket across netlink, and [`SocketEntry::tcp`] filled.
    tcp_info: bool,
}

impl SockDiag {
    pub(crate) const PLAIN: SockDiag = SockDiag { tcp_info: false };
    pub(crate) const WITH_COUNTERS: SockDiag = SockDiag { tcp_info: true };
}

impl SocketSource for SockDiag {
    fn dump(
        &self,
        proto: Protocol,
        family: Family,
        states: u32,
        port: Option<Port>,
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        retry(|| dump_once(Dump::One(proto, family), states, port, self.tcp_info))
    }

    /// As [`Netlink`]'s: one `TCPDIAG_GETSOCK` request for TCP, else one per family.
    fn dump_both_families(
        &self,
        proto: Protocol,
        states: u32,
        port: Option<Port>,
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        if proto == Protocol::Tcp && !COMBINED_REFUSED.load(Ordering::Relaxed) {
            match retry(|| dump_once(Dump::TcpBothFamilies, states, port, self.tcp_info)) {
                Err(e) if refused(&e) => COMBINED_REFUSED.store(true, Ordering::Relaxed),
                done => return done,
            }
        }
        dump_each_family(self, proto, states, port)
    }
}

/// Set once the kernel has refused a `TCPDIAG_GETSOCK` dump (a kernel or sandbox without
/// the compatibility request), so later dumps go per family at once.
static COMBINED_REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether an error is the kernel declining the request itself (unknown message type,
/// no handler), rather than a failure the per-family requests would share.
fn refused(e: &SocketsError) -> bool {
    use rustix::io::Errno;
    let SocketsError::Netlink(io) = e else {
        return false;
    };
    Errno::from_io_error(io).is_some_and(|n| {
        [
            Errno::INVAL,
            Errno::OPNOTSUPP,
            Errno::NOENT,
            Errno::PROTONOSUPPORT,
        ]
        .contains(&n)
    })
}

/// What one dump request covers.
#[derive(Debug, Clone, Copy)]
enum Dump {
    /// One protocol in one family (`SOCK_DIAG_BY_FAMILY`).
    One(Protocol, Family),
    /// TCP in both families (`TCPDIAG_GETSOCK`).
    TcpBothFamilies,
}

/// A dump interrupted by concurrent changes (NLM_F_DUMP_INTR) may have skipped or
/// repeated sockets; ask again, a bounded number of times.
fn retry(
    mut once: impl FnMut() -> Result<(Vec<SocketEntry>, bool), SocketsError>,
) -> Result<Vec<SocketEntry>, SocketsError> {
    let mut last = None;
    for _ in 0..3 {
        match once()? {
            (sockets, false) => return Ok(sockets),
            (sockets, true) => last = Some(sockets),
        }
    }
    Ok(last.unwrap_or_default())
}

/// `TCPDIAG_GETSOCK` (`linux/inet_diag.h`): the request that predates `SOCK_DIAG_BY_FAMILY`.
/// The kernel answers it for both address families at once, with replies of this type.
const TCPDIAG_GETSOCK: u16 = 18;
/// `SOCK_DIAG_BY_FAMILY`, the type the message crate parses.
const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// A `TCPDIAG_GETSOCK` dump request: `nlmsghdr` and the old `struct inet_diag_req`
/// (family, src_len, dst_len, ext, a zero `inet_diag_sockid`, states, dbs). `ext` is the
/// same bitmask of wanted attributes as `InetRequest::extensions` (`ExtensionFlags`).
fn compat_request(states: u32, ext: u8) -> Vec<u8> {
    const SOCKID_LEN: usize = 48;
    let mut body = vec![0u8; 4 + SOCKID_LEN];
    body[3] = ext;
    body.extend_from_slice(&states.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    let mut req = Vec::with_capacity(16 + body.len() + 24);
    let len = u32::try_from(16 + body.len()).unwrap_or(u32::MAX);
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    req.extend_from_slice(&body);
    req
}

/// One dump: the sockets and whether the kernel flagged it interrupted. With `tcp_info`,
/// TCP requests also ask for `INET_DIAG_INFO` (UDP has none to give).
fn dump_once(
    what: Dump,
    states: u32,
    port: Option<Port>,
    tcp_info: bool,
) -> Result<(Vec<SocketEntry>, bool), SocketsError> {
    let ext = |proto: Protocol| {
        if tcp_info && proto == Protocol::Tcp {
            ExtensionFlags::INFO
        } else {
            ExtensionFlags::empty()
        }
    };
    let (proto, mut req) = match what {
        Dump::One(proto, family) => {
            let ipproto = match proto {
                Protocol::Tcp => IPPROTO_TCP,
                Protocol::Udp => IPPROTO_UDP,
                other => {
                    return Err(SocketsError::Netlink(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("{other} sockets are not listed yet"),
                    )))
                }
            };
            let (af, socket_id) = match family {
                Family::Ipv4 => (AF_INET, SocketId::new_v4()),
                Family::Ipv6 => (AF_INET6, SocketId::new_v6()),
            };
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut msg = NetlinkMessage::new(
                header,
                SockDiagMessage::InetRequest(InetRequest {
                    family: af,
                    protocol: ipproto,
                    extensions: ext(proto),
                    states: StateFlags::from_bits_retain(states),
                    socket_id,
                })
                .into(),
            );
            msg.finalize();
            let mut req = vec![0; msg.buffer_len()];
            msg.serialize(&mut req);
            (proto, req)
        }
        Dump::TcpBothFamilies => (
            Protocol::Tcp,
            compat_request(states, ext(Protocol::Tcp).bits()),
        ),
    };
    if let Some(p) = port {
        append_port_filter(&mut req, p.get());
    }
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).map_err(SocketsError::Netlink)?;
    sock.bind_auto().map_err(SocketsError::Netlink)?;
    sock.connect(&NlAddr::new(0, 0))
        .map_err(SocketsError::Netlink)?;
    // A large receive buffer keeps the kernel from blocking mid-dump on busy machines.
    let _ = sock.set_rx_buf_sz(4 << 20);

    sock.send(&req, 0).map_err(SocketsError::Netlink)?;

    let mut out = Vec::new();
    let mut interrupted = false;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = sock
            .recv(&mut &mut buf[..], 0)
            .map_err(SocketsError::Netlink)?;
        if n == 0 {
            return Err(SocketsError::NetlinkDecode(
                "the kernel closed the dump early".into(),
            ));
        }
        let mut off = 0;
        while off < n {
            // Replies to TCPDIAG_GETSOCK carry its type, with the same payload as
            // SOCK_DIAG_BY_FAMILY's: relabel them for the parser.
            if matches!(what, Dump::TcpBothFamilies)
                && n - off >= 6
                && u16::from_ne_bytes([buf[off + 4], buf[off + 5]]) == TCPDIAG_GETSOCK
            {
                buf[off + 4..off + 6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
            }
            let bytes = &buf[off..n];
            let parsed = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
                .map_err(|e| SocketsError::NetlinkDecode(e.to_string()))?;
            let len = parsed.header.length as usize;
            if parsed.header.flags & NLM_F_DUMP_INTR != 0 {
                interrupted = true;
            }
            match parsed.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) => {
                    if let Some(entry) = convert(proto, &resp) {
                        out.push(entry);
                    }
                }
                NetlinkPayload::Done(_) => return Ok((out, interrupted)),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(SocketsError::Netlink(e.to_io()));
                }
                _ => {}
            }
            if len == 0 {
                return Err(SocketsError::NetlinkDecode("zero-length message".into()));
            }
            // Netlink messages are 4-byte aligned.
            off += (len + 3) & !3;
        }
    }
}

/// `INET_DIAG_REQ_BYTECODE`, the jump and the two port comparisons of `linux/inet_diag.h`.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_EQ: u8 = 11;
const INET_DIAG_BC_D_EQ: u8 = 12;

/// The filter program "source port == p or destination port == p", for the kernel's
/// inet_diag bytecode machine. Ops are 4 bytes (`{code, yes, no}`); a comparison carries
/// the port in a second op's `no`. On a true condition the machine jumps `yes` bytes, else
/// `no`; ending exactly at the end accepts, at end + 4 rejects. The kernel's audit only
/// admits `no` targets reachable through the chain of `yes` jumps, so every `yes` steps to
/// the next op and the branches live in `no` (a JMP always takes `no`).
fn port_bytecode(p: u16) -> [u8; 20] {
    let op = |code: u8, yes: u8, no: u16| {
        let n = no.to_ne_bytes();
        [code, yes, n[0], n[1]]
    };
    let mut bc = [0u8; 20];
    bc[0..4].copy_from_slice(&op(INET_DIAG_BC_S_EQ, 8, 12)); // 0: sport == p ? 8 : 12
    bc[4..8].copy_from_slice(&op(0, 0, p));
    bc[8..12].copy_from_slice(&op(INET_DIAG_BC_JMP, 4, 12)); // 8: accept (jump to 20)
    bc[12..16].copy_from_slice(&op(INET_DIAG_BC_D_EQ, 8, 12)); // 12: dport == p ? accept : reject
    bc[16..20].copy_from_slice(&op(0, 0, p));
    bc
}

/// Appends the bytecode attribute to a serialized request and fixes the message length.
fn append_port_filter(req: &mut Vec<u8>, port: u16) {
    let bc = port_bytecode(port);
    let rta_len = u16::try_from(4 + bc.len()).unwrap_or(u16::MAX);
    req.extend_from_slice(&rta_len.to_ne_bytes());
    req.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    req.extend_from_slice(&bc);
    let total = u32::try_from(req.len()).unwrap_or(u32::MAX);
    req[0..4].copy_from_slice(&total.to_ne_bytes());
}

fn convert(proto: Protocol, resp: &InetResponse) -> Option<SocketEntry> {
    let h = &resp.header;
    let family = match h.family {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        _ => return None,
    };
    let id = &h.socket_id;
    let state = SocketState::from_kernel(proto, h.state)?;
    let local = SocketAddr::new(id.source_address, id.source_port);
    let remote = (!id.destination_address.is_unspecified() || id.destination_port != 0)
        .then(|| SocketAddr::new(id.destination_address, id.destination_port));
    let mut v6only = None;
    let mut cgroup_id = None;
    let mut tcp = None;
    for nla in &resp.nlas {
        if let InetNla::SkV6Only(b) = nla {
            v6only = Some(*b);
        } else if let InetNla::TcpInfo(info) = nla {
            // Raw bytes (the crate's `rich_nlas` feature, which would parse them itself,
            // stays off: it refuses a struct shorter than its own, and with it the whole
            // message). Only sent when asked for; never for UDP.
            if proto == Protocol::Tcp {
                tcp = TcpCounters::from_tcp_info(info);
            }
        } else if let InetNla::Other(raw) = nla {
            // Only the cgroup id is read, into a fixed buffer: no allocation per attribute.
            if raw.kind() == INET_DIAG_CGROUP_ID && raw.value_len() == 8 {
                let mut val = [0u8; 8];
                raw.emit_value(&mut val);
                cgroup_id = Some(u64::from_ne_bytes(val));
            }
        }
    }
    Some(SocketEntry {
        proto,
        family,
        local,
        remote,
        state,
        recv_q: h.recv_queue,
        send_q: h.send_queue,
        uid: h.uid,
        inode: u64::from(h.inode),
        cgroup_id,
        v6only,
        interface: id.interface_id,
        pids: Vec::new(),
        tcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_port_filter_keeps_exactly_that_port() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pa = a.local_addr().unwrap().port();
        let pb = b.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(a.local_addr().unwrap()).unwrap();
        let got = Netlink
            .dump(Protocol::Tcp, Family::Ipv4, 0x1ffe, Some(Port::new(pa)))
            .unwrap();
        assert!(got
            .iter()
            .all(|s| s.local.port() == pa || s.remote.map(|r| r.port()) == Some(pa)));
        assert!(got
            .iter()
            .any(|s| s.state == SocketState::Listen && s.local.port() == pa));
        // The client side of the connection matches on its remote port.
        assert!(got.iter().any(|s| s.remote.map(|r| r.port()) == Some(pa)));
        assert!(!got.iter().any(|s| s.local.port() == pb));
        let all = Netlink
            .dump(Protocol::Tcp, Family::Ipv4, 0x1ffe, None)
            .unwrap();
        assert!(all.iter().any(|s| s.local.port() == pb));
    }

    #[test]
    fn one_tcp_dump_lists_both_families() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        // The same port on ::1, when the machine has IPv6 loopback.
        let v6 = std::net::TcpListener::bind(("::1", port)).ok();
        let _client = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        // The one-pass request itself (dump_both_families falls back to two on an error).
        let (both, _) =
            dump_once(Dump::TcpBothFamilies, 0x1ffe, Some(Port::new(port)), false).unwrap();
        let mut separate = Netlink
            .dump(Protocol::Tcp, Family::Ipv4, 0x1ffe, Some(Port::new(port)))
            .unwrap();
        separate.extend(
            Netlink
                .dump(Protocol::Tcp, Family::Ipv6, 0x1ffe, Some(Port::new(port)))
                .unwrap(),
        );
        let key = |s: &SocketEntry| (s.inode, s.family == Family::Ipv4, s.local, s.remote);
        let mut a: Vec<_> = both.iter().map(key).collect();
        let mut b: Vec<_> = separate.iter().map(key).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
        assert!(both.iter().any(|s| s.family == Family::Ipv4
            && s.state == SocketState::Listen
            && s.local == v4.local_addr().unwrap()));
        assert!(both.iter().all(|s| s.family
            == if s.local.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            }));
        if let Some(v6) = v6 {
            assert!(both.iter().any(|s| s.family == Family::Ipv6
                && s.state == SocketState::Listen
                && s.local == v6.local_addr().unwrap()
                && s.v6only.is_some()));
        }
        // The listener and both ends of the connection, in one pass.
        assert!(both.len() >= 3, "{both:?}");
    }

    /// Each request path itself, not through `dump_both_families` (which could fall
    /// back): asked for counters, every one carries them for both ends of a connection
    /// that moved data; not asked, none does.
    #[test]
    fn every_request_path_carries_tcp_info_when_asked() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        c.write_all(&[7; 1000]).unwrap();
        s.read_exact(&mut [0; 1000]).unwrap();
        let ends = [
            (c.local_addr().unwrap(), s.local_addr().unwrap()),
            (s.local_addr().unwrap(), c.local_addr().unwrap()),
        ];
        let one = Dump::One(Protocol::Tcp, Family::Ipv4);
        for (what, filter) in [
            (one, None),
            (one, Some(Port::new(port))),
            (Dump::TcpBothFamilies, None),
            (Dump::TcpBothFamilies, Some(Port::new(port))),
        ] {
            for asked in [true, false] {
                let (got, _) = dump_once(what, 0x1ffe, filter, asked).unwrap();
                for (local, remote) in ends {
                    let e = got
                        .iter()
                        .find(|e| e.local == local && e.remote == Some(remote))
                        .unwrap_or_else(|| panic!("{what:?} {filter:?}: no {local}"));
                    assert_eq!(e.tcp.is_some(), asked, "{what:?} {filter:?}: {e:?}");
                }
                let listener = got.iter().find(|e| e.state == SocketState::Listen);
                assert!(listener.is_some(), "{what:?} {filter:?}");
                if asked {
                    let received = got
                        .iter()
                        .filter_map(|e| e.tcp)
                        .any(|t| t.bytes_received == 1000);
                    assert!(received, "{what:?} {filter:?}");
                }
            }
        }
        // UDP never has any, asked or not.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (got, _) = dump_once(
            Dump::One(Protocol::Udp, Family::Ipv4),
            1 << 7,
            Some(Port::new(u.local_addr().unwrap().port())),
            true,
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].tcp, None);
    }

    #[test]
    fn compat_request_asks_for_the_extensions() {
        let plain = compat_request(0x1ffe, 0);
        let info = compat_request(0x1ffe, ExtensionFlags::INFO.bits());
        // nlmsghdr (16 bytes), then family, src_len, dst_len, ext.
        assert_eq!(plain[16 + 3], 0);
        assert_eq!(info[16 + 3], 1 << 1);
        assert_eq!(plain.len(), info.len());
    }

    #[test]
    fn only_a_refusal_of_the_request_falls_back() {
        let os = |n: rustix::io::Errno| SocketsError::Netlink(n.into());
        assert!(refused(&os(rustix::io::Errno::INVAL)));
        assert!(refused(&os(rustix::io::Errno::OPNOTSUPP)));
        assert!(!refused(&os(rustix::io::Errno::ACCESS)));
        assert!(!refused(&os(rustix::io::Errno::NOBUFS)));
        assert!(!refused(&SocketsError::NetlinkDecode("x".into())));
    }

    #[test]
    fn bytecode_layout() {
        let bc = port_bytecode(8080);
        assert_eq!(bc.len(), 20);
        assert_eq!(&bc[0..2], &[INET_DIAG_BC_S_EQ, 8]);
        assert_eq!(u16::from_ne_bytes([bc[6], bc[7]]), 8080);
        assert_eq!(u16::from_ne_bytes([bc[18], bc[19]]), 8080);
    }
}
