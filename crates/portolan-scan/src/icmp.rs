//! ICMP echo for host discovery, when this process may open raw sockets (root or
//! CAP_NET_RAW). Echo requests go to every candidate at a bounded rate, in at most a few
//! rounds; a reply counts when it comes from a candidate and carries our identifier (a raw
//! socket sees every ICMP message the machine receives, other programs' pings included).

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{ipproto, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const PAYLOAD: &[u8; 8] = b"portolan";

/// How a sweep runs.
#[derive(Debug, Clone, Copy)]
pub struct EchoPlan {
    /// Requests per second at most.
    pub rate: f64,
    /// How long to listen for replies after each round.
    pub wait: Duration,
    /// Rounds (a host that answered is not asked again).
    pub rounds: u8,
}

/// The ones' complement sum of RFC 1071, over `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // Folded to 16 bits above.
    #[allow(clippy::cast_possible_truncation)]
    let folded = sum as u16;
    !folded
}

/// An echo request (ICMP header and payload). For IPv6 the kernel fills in the checksum,
/// which covers a pseudo-header only it knows.
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(PAYLOAD);
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Whether a received datagram is an echo reply with identifier `id`. IPv4 raw sockets
/// deliver the IP header first; IPv6 ones start at the ICMPv6 header. Never panics on
/// short or malformed input.
pub fn is_echo_reply(v6: bool, packet: &[u8], id: u16) -> bool {
    let icmp = if v6 {
        packet
    } else {
        let Some(first) = packet.first() else {
            return false;
        };
        if first >> 4 != 4 {
            return false;
        }
        match packet.get(usize::from(first & 0x0f) * 4..) {
            Some(rest) => rest,
            None => return false,
        }
    };
    let want = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    icmp.len() >= 8 && icmp[0] == want && icmp[1] == 0 && icmp[4..6] == id.to_be_bytes()
}

fn open(v6: bool) -> io::Result<OwnedFd> {
    let (family, proto) = if v6 {
        (AddressFamily::INET6, ipproto::ICMPV6)
    } else {
        (AddressFamily::INET, ipproto::ICMP)
    };
    rustix::net::socket_with(
        family,
        SocketType::RAW,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(proto),
    )
    .map_err(io::Error::from)
}

/// Reads every waiting reply, adding the candidates that answered to `up`.
fn drain(fd: &OwnedFd, v6: bool, id: u16, wanted: &HashSet<IpAddr>, up: &mut HashSet<IpAddr>) {
    let mut buf = [0u8; 1500];
    loop {
        match rustix::net::recvfrom(fd, &mut buf[..], RecvFlags::empty()) {
            Ok((n, _, Some(from))) => {
                let Ok(from) = SocketAddr::try_from(from) else {
                    continue;
                };
                let ip = from.ip();
                if wanted.contains(&ip) && is_echo_reply(v6, &buf[..n], id) {
                    up.insert(ip);
                }
            }
            Ok((_, _, None)) | Err(Errno::INTR) => {}
            Err(_) => return, // EAGAIN: nothing more for now
        }
    }
}

/// Sends echo requests to `hosts` and returns those that replied. Fails with
/// `PermissionDenied` when raw sockets are not allowed (no root, no CAP_NET_RAW).
pub fn echo_sweep(hosts: &[IpAddr], plan: EchoPlan) -> io::Result<HashSet<IpAddr>> {
    let mut up = HashSet::new();
    let wanted: HashSet<IpAddr> = hosts.iter().copied().collect();
    let need = |v6: bool| hosts.iter().any(|h| h.is_ipv6() == v6);
    let v4 = if need(false) {
        Some(open(false)?)
    } else {
        None
    };
    let v6 = if need(true) { Some(open(true)?) } else { None };
    // Identifier: our pid's low bits, as ping does; replies are also matched by address.
    let id = rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .to_be_bytes();
    let id = u16::from_be_bytes([id[2], id[3]]);
    let gap = Duration::from_secs_f64(1.0 / plan.rate.max(1.0));
    for round in 0..plan.rounds {
        // One request per family and round: they differ only in the sequence number.
        let (request4, request6) = (
            echo_request(false, id, u16::from(round)),
            echo_request(true, id, u16::from(round)),
        );
        let start = Instant::now();
        let mut sent: u32 = 0;
        for &h in hosts {
            if up.contains(&h) {
                continue;
            }
            let (fd, is6) = match (h.is_ipv6(), &v4, &v6) {
                (false, Some(fd), _) => (fd, false),
                (true, _, Some(fd)) => (fd, true),
                _ => continue,
            };
            let packet = if is6 { &request6 } else { &request4 };
            // A full send buffer or an unreachable route loses this request only.
            let _ = rustix::net::sendto(fd, packet, SendFlags::empty(), &SocketAddr::new(h, 0));
            sent += 1;
            if sent.is_multiple_of(64) {
                for (fd, is6) in [(&v4, false), (&v6, true)] {
                    if let Some(fd) = fd {
                        drain(fd, is6, id, &wanted, &mut up);
                    }
                }
                let due = start + gap * sent;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        }
        // Listen for the round's replies.
        let deadline = Instant::now() + plan.wait;
        loop {
            for (fd, is6) in [(&v4, false), (&v6, true)] {
                if let Some(fd) = fd {
                    drain(fd, is6, id, &wanted, &mut up);
                }
            }
            let now = Instant::now();
            if up.len() == wanted.len() || now >= deadline {
                break;
            }
            let left = deadline - now;
            let ts = Timespec::try_from(left).unwrap_or(Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
            let mut fds: Vec<PollFd> = [&v4, &v6]
                .into_iter()
                .flatten()
                .map(|fd| PollFd::new(fd, PollFlags::IN))
                .collect();
            match poll(&mut fds, Some(&ts)) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if up.len() == wanted.len() {
            break;
        }
    }
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_examples() {
        // RFC 1071's example bytes: the sum is 0xddf2, so the checksum is its complement.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // A packet with its checksum filled in sums to zero.
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0);
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn replies_are_recognised_and_garbage_is_not() {
        let mut reply = vec![0x45u8];
        reply.extend([0u8; 19]);
        let mut icmp = echo_request(false, 0xbeef, 1);
        icmp[0] = ECHO_REPLY_V4;
        reply.extend(&icmp);
        assert!(is_echo_reply(false, &reply, 0xbeef));
        assert!(!is_echo_reply(false, &reply, 0xbeee));
        // Our own request seen on the raw socket is not a reply.
        let mut req = vec![0x45u8];
        req.extend([0u8; 19]);
        req.extend(echo_request(false, 0xbeef, 1));
        assert!(!is_echo_reply(false, &req, 0xbeef));
        let mut r6 = echo_request(true, 9, 0);
        r6[0] = ECHO_REPLY_V6;
        assert!(is_echo_reply(true, &r6, 9));
        for junk in [&[][..], &[0x45], &[0x4f, 0, 0], &[0x60; 30], &[0xff; 64]] {
            assert!(!is_echo_reply(false, junk, 0));
            assert!(!is_echo_reply(true, junk, 0));
        }
    }

    #[test]
    fn loopback_answers_when_raw_sockets_are_allowed() {
        let hosts = [IpAddr::from([127, 0, 0, 1])];
        let plan = EchoPlan {
            rate: 100.0,
            wait: Duration::from_secs(2),
            rounds: 2,
        };
        match echo_sweep(&hosts, plan) {
            Ok(up) => assert!(up.contains(&hosts[0])),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                assert!(
                    !rustix::process::geteuid().is_root(),
                    "root may open raw sockets"
                );
            }
        }
    }
}
