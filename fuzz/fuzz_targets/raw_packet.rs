//! The raw scans' receive path: every packet parser on bytes from the network (IPv4 with
//! its header, IPv6 transport segments, ICMPv6 errors) must return or refuse, never panic
//! or read past the input. The cookie check runs on whatever they return.
#![no_main]

use std::net::{Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use portolan_scan::raw::packet::{self, Answer, Cookie};

fuzz_target!(|data: &[u8]| {
    let cookie = Cookie::new(1, 2);
    let from = Ipv6Addr::LOCALHOST;
    let answers = [
        packet::parse_ipv4(data),
        packet::parse_transport6(packet::PROTO_TCP, data, from),
        packet::parse_transport6(packet::PROTO_UDP, data, from),
        packet::parse_icmp6(data, from),
    ];
    for a in answers.into_iter().flatten() {
        let (remote, value): (SocketAddr, u32) = match a {
            Answer::Tcp { from, ack, .. } => (from, ack.wrapping_sub(1)),
            Answer::Udp { from, .. } => (from, 0),
            Answer::Unreachable { quoted, .. } => (quoted.dst, quoted.seq.unwrap_or(0)),
        };
        let _ = cookie.attempt(remote, 40_000, value);
    }
});
