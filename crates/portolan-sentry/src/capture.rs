//! Where the first packets come from: the kernel's log (NFLOG, fed by the table's rules,
//! the normal way), or, where nftables or NFLOG cannot be had, an AF_PACKET socket.
//!
//! The AF_PACKET fallback sees every packet, not only new flows, so it does conntrack's
//! part itself, as far as it can: a kernel BPF filter passes, on any interface but
//! loopback (unless asked), inbound IPv4 TCP segments with SYN and without ACK or RST, or
//! with none of SYN, ACK and RST (FIN, NULL, Xmas probes), IPv4 UDP in both directions,
//! and IPv6 (whose headers a classic filter cannot walk: read in user space). Outbound UDP
//! datagrams are remembered for two minutes, so the answers to this host's own queries are
//! not first contacts. What it cannot see: ACK and Maimon probes (any established flow
//! sends ACKs), and a packet a firewall drops looks the same as one it lets through.
//!
//! Must not: decide anything about scans (that is [`crate::detect`]).

use std::collections::{HashMap, HashSet};
use std::io;
use std::io::Read as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use portolan_guard::nflog::Nflog;
use rustix::event::{PollFd, PollFlags};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use crate::packet::{parse, Packet, Transport};
use crate::SentryError;

/// Which source of packets to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// NFLOG, else AF_PACKET.
    #[default]
    Auto,
    Nflog,
    Packet,
}

/// Packets read at most per call.
const MAX_BATCH: usize = 512;
/// How long an outbound UDP flow's answers are expected.
const UDP_FLOW: Duration = Duration::from_secs(120);
/// Outbound UDP flows remembered at most.
const MAX_FLOWS: usize = 65_536;

/// An open source of first packets.
#[derive(Debug)]
pub enum Capture {
    Nflog(Nflog),
    Packet(PacketCapture),
}

impl Capture {
    /// The packets that arrived, waiting up to `timeout` for the first. Each is already
    /// read; those that cannot be read are counted in `unreadable`.
    pub fn recv(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Packet>,
        unreadable: &mut u64,
    ) -> Result<usize, SentryError> {
        match self {
            Capture::Nflog(n) => {
                let batch = n.recv(Some(timeout))?;
                let k = batch.len();
                for l in batch {
                    match parse(&l.payload) {
                        Some(p) => out.push(p),
                        None => *unreadable += 1,
                    }
                }
                Ok(k)
            }
            Capture::Packet(p) => p.recv(timeout, out, unreadable),
        }
    }

    /// Times the kernel said packets were dropped for want of room.
    pub fn lost(&self) -> u64 {
        match self {
            Capture::Nflog(n) => n.lost(),
            Capture::Packet(p) => p.lost,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Capture::Nflog(_) => "NFLOG",
            Capture::Packet(_) => "AF_PACKET",
        }
    }
}

// Classic BPF (linux/filter.h).
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x30;
const LDX_MSH_B: u16 = 0xb1;
const LD_B_IND: u16 = 0x50;
const ALU_AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const ACCEPT: u32 = 0x0004_0000;
/// Ancillary loads: SKF_AD_OFF + SKF_AD_PROTOCOL / PKTTYPE / IFINDEX.
const AD_PROTOCOL: u32 = 0xffff_f000;
const AD_PKTTYPE: u32 = 0xffff_f004;
const AD_IFINDEX: u32 = 0xffff_f008;
const PACKET_HOST: u32 = 0;
const PACKET_OUTGOING: u32 = 4;
const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const ETH_P_ALL: u16 = 0x0003;

/// The inbound filter: packets for this host, not on loopback (`lo_ifindex`, 0 keeps
/// it): UDP; TCP with SYN alone, or none of SYN, ACK and RST, among its flags; IPv6 with an
/// extension header goes to user space whole (a classic filter cannot walk the chain),
/// ICMPv6 never.
fn inbound_program(lo_ifindex: u32) -> Vec<SockFilter> {
    let f = SockFilter::new;
    // Jump offsets count from the next instruction.
    vec![
        /* 0 */ f(LD_W_ABS, 0, 0, AD_IFINDEX),
        /* 1 */ f(JEQ_K, 22, 0, lo_ifindex), // loopback -> reject (24)
        /* 2 */ f(LD_W_ABS, 0, 0, AD_PKTTYPE),
        /* 3 */ f(JEQ_K, 0, 20, PACKET_HOST), // not for us -> reject (24)
        /* 4 */ f(LD_W_ABS, 0, 0, AD_PROTOCOL),
        /* 5 */ f(JEQ_K, 0, 8, ETH_P_IP), // -> 14 (IPv6?)
        // IPv4
        /* 6 */ f(LD_B_ABS, 0, 0, 9),
        /* 7 */ f(JEQ_K, 15, 0, 17), // UDP -> accept (23)
        /* 8 */ f(JEQ_K, 0, 15, 6), // not TCP -> reject (24)
        /* 9 */ f(LDX_MSH_B, 0, 0, 0),
        /* 10 */ f(LD_B_IND, 0, 0, 13),
        /* 11 */ f(ALU_AND_K, 0, 0, 0x16), // SYN | RST | ACK
        /* 12 */ f(JEQ_K, 10, 0, 0x02), // SYN alone -> accept (23)
        /* 13 */ f(JEQ_K, 9, 10, 0x00), // none -> accept (23), else reject (24)
        // IPv6
        /* 14 */ f(JEQ_K, 0, 9, ETH_P_IPV6), // neither -> reject (24)
        /* 15 */ f(LD_B_ABS, 0, 0, 6),
        /* 16 */ f(JEQ_K, 6, 0, 17), // UDP -> accept (23)
        /* 17 */ f(JEQ_K, 6, 0, 58), // ICMPv6 -> reject (24)
        /* 18 */ f(JEQ_K, 0, 4, 6), // an extension header -> accept (23)
        /* 19 */ f(LD_B_ABS, 0, 0, 53),
        /* 20 */ f(ALU_AND_K, 0, 0, 0x16),
        /* 21 */ f(JEQ_K, 1, 0, 0x02), // SYN alone -> accept (23)
        /* 22 */ f(JEQ_K, 0, 1, 0x00), // none -> accept (23), else reject (24)
        /* 23 */ f(RET_K, 0, 0, ACCEPT),
        /* 24 */ f(RET_K, 0, 0, 0),
    ]
}

/// The outbound filter: UDP this host sends (IPv4, or IPv6 without extension headers).
fn outbound_program() -> Vec<SockFilter> {
    let f = SockFilter::new;
    vec![
        /* 0 */ f(LD_W_ABS, 0, 0, AD_PKTTYPE),
        /* 1 */ f(JEQ_K, 0, 8, PACKET_OUTGOING), // -> reject (10)
        /* 2 */ f(LD_W_ABS, 0, 0, AD_PROTOCOL),
        /* 3 */ f(JEQ_K, 0, 2, ETH_P_IP), // -> 6
        /* 4 */ f(LD_B_ABS, 0, 0, 9),
        /* 5 */ f(JEQ_K, 3, 4, 17), // UDP -> accept (9), else reject (10)
        /* 6 */ f(JEQ_K, 0, 3, ETH_P_IPV6), // -> reject (10)
        /* 7 */ f(LD_B_ABS, 0, 0, 6),
        /* 8 */ f(JEQ_K, 0, 1, 17), // not UDP -> reject (10)
        /* 9 */ f(RET_K, 0, 0, ACCEPT),
        /* 10 */ f(RET_K, 0, 0, 0),
    ]
}

fn packet_socket(prog: &[SockFilter]) -> Result<Socket, SentryError> {
    let sock = Socket::new(
        Domain::PACKET,
        Type::DGRAM,
        Some(Protocol::from(i32::from(ETH_P_ALL.to_be()))),
    )
    .map_err(|e| SentryError::io("open an AF_PACKET socket (needs CAP_NET_RAW)", e))?;
    sock.attach_filter(prog)
        .map_err(|e| SentryError::io("attach the AF_PACKET filter", e))?;
    sock.set_nonblocking(true)
        .map_err(|e| SentryError::io("AF_PACKET: set nonblocking", e))?;
    let _ = sock.set_recv_buffer_size(8 << 20);
    Ok(sock)
}

/// The loopback interface's index (1 on Linux; read to be sure).
fn lo_ifindex() -> u32 {
    std::fs::read_to_string("/sys/class/net/lo/ifindex")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

/// The AF_PACKET reader: one socket for what comes in, one for the UDP that goes out.
#[derive(Debug)]
pub struct PacketCapture {
    inbound: Socket,
    outbound: Socket,
    buf: Vec<u8>,
    /// Outbound UDP flows: (local port, remote address, remote port) -> last seen.
    flows: HashMap<(u16, IpAddr, u16), Instant>,
    swept: Instant,
    /// This host's addresses: a packet for another address is forwarded traffic (a
    /// router, containers), never a contact.
    local: HashSet<IpAddr>,
    local_read: Option<Instant>,
    pub lost: u64,
}

impl PacketCapture {
    pub fn open(loopback: bool) -> Result<PacketCapture, SentryError> {
        let lo = if loopback { 0 } else { lo_ifindex() };
        Ok(PacketCapture {
            inbound: packet_socket(&inbound_program(lo))?,
            outbound: packet_socket(&outbound_program())?,
            buf: vec![0; 65_536],
            flows: HashMap::new(),
            swept: Instant::now(),
            local: HashSet::new(),
            local_read: None,
            lost: 0,
        })
    }

    /// One datagram from `sock`, `None` when none is waiting.
    fn read_one(
        sock: &Socket,
        buf: &mut [u8],
        lost: &mut u64,
    ) -> Result<Option<usize>, SentryError> {
        loop {
            match (&*sock).read(buf) {
                Ok(len) => return Ok(Some(len)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOBUFS.raw_os_error()) => {
                    *lost += 1;
                }
                Err(e) => return Err(SentryError::io("read an AF_PACKET socket", e)),
            }
        }
    }

    /// Remembers (or refreshes) an outbound flow. Flows quiet for two minutes are swept
    /// every 5 s; beyond [`MAX_FLOWS`] distinct flows, the least recently used tenth goes.
    fn remember(&mut self, k: (u16, IpAddr, u16), now: Instant) {
        self.flows.insert(k, now);
        if now.duration_since(self.swept) >= Duration::from_secs(5) {
            self.swept = now;
            self.flows.retain(|_, t| now.duration_since(*t) < UDP_FLOW);
        }
        if self.flows.len() > MAX_FLOWS {
            let mut by_age: Vec<Instant> = self.flows.values().copied().collect();
            let cut = by_age.len() / 10;
            by_age.select_nth_unstable(cut);
            let limit = by_age[cut];
            self.flows.retain(|_, t| *t > limit);
        }
    }

    /// Whether `a` is one of this host's addresses (read again every 5 s).
    fn is_local(&mut self, a: IpAddr) -> bool {
        if self
            .local_read
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            self.local_read = Some(Instant::now());
            self.local = local_addresses();
        }
        self.local.contains(&a)
    }

    /// Reads what went out (UDP) and remembers its flows.
    fn drain_outbound(&mut self) -> Result<usize, SentryError> {
        let now = Instant::now();
        let mut n = 0;
        while n < MAX_BATCH {
            let Some(len) = Self::read_one(&self.outbound, &mut self.buf, &mut self.lost)? else {
                break;
            };
            n += 1;
            if let Some(p) = parse(&self.buf[..len]) {
                self.remember((p.sport, p.dst, p.dport), now);
            }
        }
        Ok(n)
    }

    fn recv(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Packet>,
        unreadable: &mut u64,
    ) -> Result<usize, SentryError> {
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let ts = rustix::time::Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        {
            let mut fds = [
                PollFd::new(&self.inbound, PollFlags::IN),
                PollFd::new(&self.outbound, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => return Ok(0),
                Ok(_) => {}
                Err(e) => return Err(SentryError::io("poll the AF_PACKET sockets", e.into())),
            }
        }
        // What went out first, so an answer read in the same batch finds its flow.
        let mut n = self.drain_outbound()?;
        let mut m = 0;
        while m < MAX_BATCH {
            let Some(len) = Self::read_one(&self.inbound, &mut self.buf, &mut self.lost)? else {
                break;
            };
            m += 1;
            let Some(p) = parse(&self.buf[..len]) else {
                *unreadable += 1;
                continue;
            };
            if p.transport == Transport::Udp {
                let k = (p.dport, p.src, p.sport);
                // The question may have gone out after the outbound socket was last read,
                // and its answer come before this read: read what went out again.
                if !self.flows.contains_key(&k) {
                    n += self.drain_outbound()?;
                }
                if self.flows.contains_key(&k) {
                    // An answer to this host's own datagram.
                    continue;
                }
            }
            if p.transport == Transport::Tcp
                && p.flags
                    & (crate::packet::flags::SYN
                        | crate::packet::flags::ACK
                        | crate::packet::flags::RST)
                    != crate::packet::flags::SYN
                && p.flags
                    & (crate::packet::flags::SYN
                        | crate::packet::flags::ACK
                        | crate::packet::flags::RST)
                    != 0
            {
                // IPv6 with extension headers passed the filter unchecked.
                continue;
            }
            if !self.is_local(p.dst) {
                continue;
            }
            out.push(p);
        }
        Ok(n + m)
    }
}

/// This host's addresses: IPv4 from the local routing table (/proc/net/fib_trie's `/32
/// host LOCAL` entries), IPv6 from /proc/net/if_inet6.
fn local_addresses() -> HashSet<IpAddr> {
    let mut set = local_v4(&std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default());
    set.extend(local_v6(
        &std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default(),
    ));
    set
}

/// The `/32 host LOCAL` addresses of a /proc/net/fib_trie text.
pub fn local_v4(text: &str) -> HashSet<IpAddr> {
    let mut set = HashSet::new();
    let mut last: Option<IpAddr> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-', '`']);
        if let Ok(a) = t.trim().parse::<std::net::Ipv4Addr>() {
            last = Some(IpAddr::V4(a));
        } else if t.trim() == "/32 host LOCAL" {
            if let Some(a) = last {
                set.insert(a);
            }
        }
    }
    set
}

/// The addresses of a /proc/net/if_inet6 text.
pub fn local_v6(text: &str) -> HashSet<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            if hex.len() != 32 {
                return None;
            }
            u128::from_str_radix(hex, 16)
                .ok()
                .map(|n| IpAddr::V6(std::net::Ipv6Addr::from(n)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_hosts_addresses() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 198.18.94.0\n        /24 link UNICAST\n     |-- 198.18.94.1\n        /32 host LOCAL\nLocal:\n  +-- 127.0.0.0/8 2 0 2\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 198.18.94.255\n        /32 link BROADCAST\n";
        let v4 = local_v4(trie);
        assert!(v4.contains(&"198.18.94.1".parse::<IpAddr>().unwrap()));
        assert!(v4.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(!v4.contains(&"198.18.94.255".parse::<IpAddr>().unwrap()));
        assert!(!v4.contains(&"198.18.94.0".parse::<IpAddr>().unwrap()));
        let v6 = local_v6("2001000200000000000000000000005e 02 40 00 80     vg\nzz\n");
        assert!(v6.contains(&"2001:2::5e".parse::<IpAddr>().unwrap()));
        assert_eq!(v6.len(), 1);
    }
}
