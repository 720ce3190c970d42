//! The /proc/net/{tcp,udp}[6] line parser: never panics on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::Protocol;
use portolan_sockets::procnet::parse_line;
use portolan_sockets::Family;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for proto in [Protocol::Tcp, Protocol::Udp] {
        for fam in [Family::Ipv4, Family::Ipv6] {
            let _ = parse_line(proto, fam, s);
        }
    }
});
