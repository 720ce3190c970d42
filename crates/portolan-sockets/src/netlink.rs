//! sock_diag over netlink: the kernel's own socket table, as `ss` reads it.
//!
//! Message types come from `netlink-packet-sock-diag`; attributes that crate does not
//! model (the cgroup id) are read from its raw `Other` attributes here.

use std::io;
use std::net::SocketAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{
    nlas::Nla as InetNla, ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};
use portolan_core::{Protocol, SocketState};

use crate::inventory::{Family, SocketEntry, SocketSource};
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
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        // A dump interrupted by concurrent changes (NLM_F_DUMP_INTR) may have skipped or
        // repeated sockets; ask again, a bounded number of times.
        let mut last = None;
        for _ in 0..3 {
            match dump_once(proto, family, states)? {
                (sockets, false) => return Ok(sockets),
                (sockets, true) => last = Some(sockets),
            }
        }
        Ok(last.unwrap_or_default())
    }
}

fn dump_once(
    proto: Protocol,
    family: Family,
    states: u32,
) -> Result<(Vec<SocketEntry>, bool), SocketsError> {
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
    let mut sock = Socket::new(NETLINK_SOCK_DIAG).map_err(SocketsError::Netlink)?;
    sock.bind_auto().map_err(SocketsError::Netlink)?;
    sock.connect(&NlAddr::new(0, 0))
        .map_err(SocketsError::Netlink)?;
    // A large receive buffer keeps the kernel from blocking mid-dump on busy machines.
    let _ = sock.set_rx_buf_sz(4 << 20);

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut msg = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: af,
            protocol: ipproto,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(states),
            socket_id,
        })
        .into(),
    );
    msg.finalize();
    let mut req = vec![0; msg.buffer_len()];
    msg.serialize(&mut req);
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
            let bytes = &buf[off..n];
            let parsed = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
                .map_err(|e| SocketsError::NetlinkDecode(e.to_string()))?;
            let len = parsed.header.length as usize;
            if parsed.header.flags & NLM_F_DUMP_INTR != 0 {
                interrupted = true;
            }
            match parsed.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) => {
                    if let Some(entry) = convert(proto, family, &resp) {
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

fn convert(proto: Protocol, family: Family, resp: &InetResponse) -> Option<SocketEntry> {
    let h = &resp.header;
    let id = &h.socket_id;
    let state = SocketState::from_kernel(proto, h.state)?;
    let local = SocketAddr::new(id.source_address, id.source_port);
    let remote = (!id.destination_address.is_unspecified() || id.destination_port != 0)
        .then(|| SocketAddr::new(id.destination_address, id.destination_port));
    let mut v6only = None;
    let mut cgroup_id = None;
    for nla in &resp.nlas {
        if let InetNla::SkV6Only(b) = nla {
            v6only = Some(*b);
        } else if let InetNla::Other(raw) = nla {
            let mut val = vec![0u8; raw.value_len()];
            raw.emit_value(&mut val);
            if raw.kind() == INET_DIAG_CGROUP_ID {
                cgroup_id = val
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_ne_bytes);
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
    })
}
