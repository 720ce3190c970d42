//! The NFLOG reader: packets that an nftables `log group N` rule hands to userspace over
//! netlink (NETLINK_NETFILTER, the nfnetlink_log subsystem), read without listening on any
//! port.
//!
//! [`Nflog::bind`] takes a group, asks for whole packets (copy mode packet, up to 64 KiB)
//! and for each packet to be sent at once (queue threshold 1, no flush timer): latency
//! is what matters, a log rule sees few packets. [`Nflog::recv`] waits (with a timeout, so
//! the caller's loop can also handle signals) for the first message and then drains
//! whatever else is queued, so a flood is read in batches. The socket is an fd the caller
//! may also poll itself ([`AsFd`]).
//!
//! The messages' bytes come from the kernel, but they carry packets from anyone: the
//! netlink framing is walked with every length checked ([`parse_messages`], a fuzz target)
//! and the attributes are decoded by `netlink-packet-netfilter`, whose decoders check
//! each attribute's length against its buffer.
//!
//! Must not: print, or interpret the packets (that is [`crate::wire`]).

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink_packet_netfilter::nflog::{ConfigCmd, ConfigMode, ConfigNla, Timeout, ULogMessage};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::Socket;
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::RecvFlags;

use crate::GuardError;

/// NETLINK message types of the netlink core (linux/netlink.h).
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// nfnetlink_log's subsystem id and its message types (linux/netfilter/nfnetlink*.h).
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
/// How many bytes of each packet to copy: a whole packet of any size IP allows.
const COPY_RANGE: u32 = 0xffff;
/// The largest single netlink datagram we expect: one packet of [`COPY_RANGE`] bytes and
/// its attributes, with room to spare (a larger one is cut and its tail message dropped).
const RECV_BUFFER: usize = 128 * 1024;
/// The socket's receive buffer: room for a few thousand small packets queued during a
/// flood before the kernel starts dropping (counted in [`Nflog::lost`]).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// At most this many datagrams per [`Nflog::recv`], so a flood cannot keep one call
/// from returning.
const MAX_BATCH: usize = 256;
/// How long to wait for the kernel to answer a configuration request.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(2);

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The NFLOG group it was logged to.
    pub group: u16,
    /// The network-layer packet (IPv4 or IPv6 header onwards): [`crate::wire::parse`].
    pub payload: Vec<u8>,
    /// The interface it came in on (ifindex), when the kernel said.
    pub in_ifindex: Option<u32>,
    /// The log rule's prefix (`log prefix "..." group N`), when it has one.
    pub prefix: Option<String>,
}

/// What one netlink message in a datagram was, as far as this reader cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A logged packet.
    Packet(Logged),
    /// The kernel's answer to a request of ours: `error` 0 is an acknowledgement, else a
    /// negative errno.
    Ack { seq: u32, error: i32 },
}

/// Walks the netlink messages of one datagram and decodes those this reader knows
/// (NFLOG packets, acknowledgements and errors); anything else, and any message that
/// does not decode, is skipped. A length that runs past the buffer ends the walk.
pub fn parse_messages(buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(hdr) = buf.get(at..).and_then(|b| b.get(..NLMSG_HDRLEN)) {
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let kind = u16::from_ne_bytes([hdr[4], hdr[5]]);
        let seq = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        if len < NLMSG_HDRLEN {
            break;
        }
        let Some(body) = at
            .checked_add(len)
            .and_then(|end| buf.get(at + NLMSG_HDRLEN..end))
        else {
            break;
        };
        match kind {
            NLMSG_NOOP | NLMSG_DONE => {}
            NLMSG_ERROR => {
                if let Some(e) = body.get(..4) {
                    let error = i32::from_ne_bytes([e[0], e[1], e[2], e[3]]);
                    out.push(Message::Ack { seq, error });
                }
            }
            k if k == NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET => {
                if let Some(p) = packet(body, k) {
                    out.push(Message::Packet(p));
                }
            }
            _ => {}
        }
        // Messages are 4-byte aligned; the last one's padding may be missing.
        match len
            .checked_add(3)
            .map(|l| l & !3)
            .and_then(|l| at.checked_add(l))
        {
            Some(next) => at = next,
            None => break,
        }
    }
    out
}

/// NFULA_IFINDEX_INDEV, NFULA_PAYLOAD and NFULA_PREFIX (linux/netfilter/nfnetlink_log.h).
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// The flag bits of an attribute's type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One NFLOG packet message's body (after the netlink header): the 4-byte nfgenmsg, then
/// attributes. Walked by hand, with every length checked: the generic parser allocates
/// for every attribute, and a flood of junk makes this the guard's hottest path.
fn packet(body: &[u8], _kind: u16) -> Option<Logged> {
    let gen = body.get(..4)?;
    let group = u16::from_be_bytes([gen[2], gen[3]]);
    let mut logged = Logged {
        group,
        payload: Vec::new(),
        in_ifindex: None,
        prefix: None,
    };
    let mut has_payload = false;
    let mut at = 4usize;
    while let Some(h) = body.get(at..at.checked_add(4)?) {
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let kind = u16::from_ne_bytes([h[2], h[3]]) & NLA_TYPE_MASK;
        if len < 4 {
            return None;
        }
        let data = body.get(at + 4..at.checked_add(len)?)?;
        match kind {
            NFULA_PAYLOAD => {
                logged.payload = data.to_vec();
                has_payload = true;
            }
            NFULA_IFINDEX_INDEV => {
                if let Some(b) = data.get(..4) {
                    logged.in_ifindex = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            NFULA_PREFIX => {
                let text = data.split(|&b| b == 0).next().unwrap_or_default();
                logged.prefix = Some(String::from_utf8_lossy(text).into_owned());
            }
            _ => {}
        }
        at = at.checked_add(len.checked_add(3)? & !3)?;
    }
    has_payload.then_some(logged)
}

/// A netlink socket bound to one NFLOG group. Dropping it closes the socket, which
/// releases the group.
#[derive(Debug)]
pub struct Nflog {
    sock: Socket,
    group: u16,
    buf: Vec<u8>,
    seq: u32,
    lost: u64,
}

impl AsFd for Nflog {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Nflog {
    /// Opens a socket and binds it to `group`: whole packets, each sent at once. Fails
    /// when the group is bound by another socket, or without CAP_NET_ADMIN.
    pub fn bind(group: u16) -> Result<Nflog, GuardError> {
        Nflog::bind_batched(group, 1, 0)
    }

    /// [`Nflog::bind`], with the kernel holding packets until `qthresh` are queued or
    /// `flush_cs` hundredths of a second have passed since the first (0: no timer; only
    /// with a threshold of 1). Batching saves a netlink message per packet under a flood
    /// (`portolan sentry` reads this way); a threshold of 1 gives each packet at once.
    pub fn bind_batched(group: u16, qthresh: u32, flush_cs: u32) -> Result<Nflog, GuardError> {
        let ctx = |what: &str, e: std::io::Error| {
            GuardError::io(format!("NFLOG group {group}: {what}"), e)
        };
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| ctx("netlink socket", e))?;
        sock.bind_auto()
            .map_err(|e| ctx("bind netlink socket", e))?;
        sock.set_non_blocking(true)
            .map_err(|e| ctx("set nonblocking", e))?;
        // A big receive buffer absorbs bursts; root may go past rmem_max.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, SOCKET_BUFFER).is_err() {
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sock, SOCKET_BUFFER);
        }
        let mut nflog = Nflog {
            sock,
            group,
            buf: vec![0; RECV_BUFFER],
            seq: 0,
            lost: 0,
        };
        // Kernels before 3.17 need a logger bound per protocol family; later ones accept
        // and ignore the command. Never unbind: on those old kernels that would take the
        // family from another logger (ulogd). An error here is not fatal.
        for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
            let _ = nflog.config(family, 0, vec![ConfigNla::Cmd(ConfigCmd::PfBind)]);
        }
        nflog
            .config(
                NetfilterProtoFamily::Unspec,
                group,
                vec![
                    ConfigNla::Cmd(ConfigCmd::Bind),
                    ConfigNla::Mode(ConfigMode::new_packet(COPY_RANGE)),
                    // By default each packet as soon as it is logged: a threshold of one
                    // packet, and no flush timer.
                    ConfigNla::QThresh(qthresh.max(1)),
                    ConfigNla::Timeout(Timeout::new(if qthresh > 1 {
                        flush_cs.max(1)
                    } else {
                        flush_cs
                    })),
                ],
            )
            .map_err(|e| match e {
                // The kernel answers EPERM both to a second reader of a group and to a
                // process without CAP_NET_ADMIN.
                GuardError::Io { source, .. } if source.raw_os_error() == Some(1) => {
                    GuardError::Netlink(format!(
                        "cannot bind NFLOG group {group}: it is already bound by another \
                         process, or this one lacks CAP_NET_ADMIN"
                    ))
                }
                e => e,
            })?;
        Ok(nflog)
    }

    /// The group this socket is bound to.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// How many times the kernel reported that messages were dropped because the socket's
    /// buffer was full (ENOBUFS): packets logged but never read.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Sends one nfnetlink_log configuration request and waits for its acknowledgement.
    fn config(
        &mut self,
        family: NetfilterProtoFamily,
        res_id: u16,
        nlas: Vec<ConfigNla>,
    ) -> Result<(), GuardError> {
        use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | NLM_F_ACK;
        hdr.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(
            hdr,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, res_id),
                ULogMessage::Config(nlas),
            )),
        );
        msg.finalize();
        debug_assert_eq!(
            msg.header.message_type,
            NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_CONFIG
        );
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        self.sock
            .send(&bytes, 0)
            .map_err(|e| GuardError::io(format!("NFLOG group {}: send config", self.group), e))?;
        let deadline = Instant::now() + CONFIG_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(GuardError::Netlink(format!(
                    "NFLOG group {}: no answer to a configuration request",
                    self.group
                )));
            }
            let Some(n) = self.recv_datagram(Some(left))? else {
                continue;
            };
            for m in parse_messages(&self.buf[..n]) {
                if let Message::Ack { seq, error } = m {
                    if seq == self.seq {
                        return if error == 0 {
                            Ok(())
                        } else {
                            Err(GuardError::io(
                                format!("NFLOG group {}: configure", self.group),
                                std::io::Error::from_raw_os_error(-error),
                            ))
                        };
                    }
                }
            }
        }
    }

    /// Waits up to `timeout` (`None`: for ever) for one datagram; `Ok(None)` when none
    /// came. ENOBUFS (messages lost) is counted and not an error.
    fn recv_datagram(&mut self, timeout: Option<Duration>) -> Result<Option<usize>, GuardError> {
        if let Some(n) = self.try_datagram()? {
            return Ok(Some(n));
        }
        if timeout.is_some_and(|t| t.is_zero()) {
            return Ok(None);
        }
        let ts = timeout.map(|t| rustix::time::Timespec {
            tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => {
                return Err(GuardError::io(
                    format!("NFLOG group {}: poll", self.group),
                    e.into(),
                ))
            }
        }
        self.try_datagram()
    }

    fn try_datagram(&mut self) -> Result<Option<usize>, GuardError> {
        loop {
            match rustix::net::recv(&self.sock, &mut self.buf[..], RecvFlags::DONTWAIT) {
                Ok((n, _)) => return Ok(Some(n)),
                Err(Errno::AGAIN) => return Ok(None),
                Err(Errno::INTR) => {}
                Err(Errno::NOBUFS) => self.lost += 1,
                Err(e) => {
                    return Err(GuardError::io(
                        format!("NFLOG group {}: receive", self.group),
                        e.into(),
                    ))
                }
            }
        }
    }

    /// Waits up to `timeout` (`None`: for ever; zero: do not wait) for logged packets and
    /// returns those that came, at least one unless the time ran out (or a signal came):
    /// the first datagram, then every other already queued, up to a batch limit.
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Vec<Logged>, GuardError> {
        let mut out = Vec::new();
        let Some(n) = self.recv_datagram(timeout)? else {
            return Ok(out);
        };
        self.collect(n, &mut out);
        for _ in 1..MAX_BATCH {
            let Some(n) = self.try_datagram()? else {
                break;
            };
            self.collect(n, &mut out);
        }
        Ok(out)
    }

    fn collect(&self, n: usize, out: &mut Vec<Logged>) {
        let n = n.min(self.buf.len());
        out.extend(
            parse_messages(&self.buf[..n])
                .into_iter()
                .filter_map(|m| match m {
                    Message::Packet(p) if p.group == self.group => Some(p),
                    _ => None,
                }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nlmsg(kind: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(NLMSG_HDRLEN + body.len()).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&len.to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// An NFLOG packet message as the kernel sends it: nfgenmsg (family, version,
    /// group big-endian), then NFULA_PACKET_HDR, NFULA_PREFIX, NFULA_IFINDEX_INDEV,
    /// NFULA_PAYLOAD.
    pub(crate) fn nflog_packet(group: u16, prefix: Option<&str>, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![2, 0];
        body.extend_from_slice(&group.to_be_bytes());
        body.extend(nla(1, &[0x08, 0x00, 3, 0])); // hw_protocol, hook
        if let Some(p) = prefix {
            let mut s = p.as_bytes().to_vec();
            s.push(0);
            body.extend(nla(10, &s));
        }
        body.extend(nla(4, &7u32.to_be_bytes()));
        body.extend(nla(9, payload));
        nlmsg(NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET, 0, &body)
    }

    #[test]
    fn packets_and_acks_are_read_from_one_datagram() {
        let mut buf = nflog_packet(5, Some("spa"), b"\x45abc");
        buf.extend(nflog_packet(5, None, b"\x60xyz0"));
        let mut err = (-16i32).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        buf.extend(nlmsg(NLMSG_ERROR, 9, &err));
        buf.extend(nlmsg(NLMSG_DONE, 0, &[]));
        let got = parse_messages(&buf);
        assert_eq!(
            got,
            vec![
                Message::Packet(Logged {
                    group: 5,
                    payload: b"\x45abc".to_vec(),
                    in_ifindex: Some(7),
                    prefix: Some("spa".to_owned()),
                }),
                Message::Packet(Logged {
                    group: 5,
                    payload: b"\x60xyz0".to_vec(),
                    in_ifindex: Some(7),
                    prefix: None,
                }),
                Message::Ack { seq: 9, error: -16 },
            ]
        );
    }

    #[test]
    fn broken_framing_ends_the_walk_without_panicking() {
        let good = nflog_packet(1, Some("p"), b"payload");
        // Every truncation: nothing, or nothing past the cut.
        for n in 0..good.len() {
            assert!(parse_messages(&good[..n]).is_empty(), "cut at {n}");
        }
        // A length below the header, a length past the buffer, u32::MAX.
        for len in [0u32, 15, 10_000, u32::MAX] {
            let mut b = good.clone();
            b[..4].copy_from_slice(&len.to_ne_bytes());
            assert!(parse_messages(&b).is_empty(), "len {len}");
        }
        // An attribute whose length runs past its message: that message is skipped, the
        // next one is still read.
        let mut bad = nflog_packet(1, None, b"x");
        let at = NLMSG_HDRLEN + 4;
        bad[at..at + 2].copy_from_slice(&500u16.to_ne_bytes());
        bad.extend(nflog_packet(1, None, b"y"));
        let got = parse_messages(&bad);
        assert_eq!(got.len(), 1);
        assert!(matches!(&got[0], Message::Packet(p) if p.payload == b"y"));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let seed = {
            let mut b = nflog_packet(3, Some("knock"), b"\x45\x00\x00\x1c");
            b.extend(nflog_packet(3, None, b"x"));
            b
        };
        for i in 0..seed.len() {
            for v in [0u8, 1, 3, 4, 0x7f, 0x80, 0xff] {
                let mut b = seed.clone();
                b[i] = v;
                let _ = parse_messages(&b);
            }
        }
    }
}
