//! What the scanner reads off the network: ICMP datagrams from a raw socket and host names
//! from reverse lookups. Never panic; a name that passes the check is plain host-name text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_scan::{icmp, rdns};

fuzz_target!(|data: &[u8]| {
    let id = data.first().map_or(0, |&b| u16::from(b) << 8 | 0x5a);
    let _ = icmp::is_echo_reply(false, data, id);
    let _ = icmp::is_echo_reply(true, data, id);
    let _ = icmp::checksum(data);
    if let Ok(s) = std::str::from_utf8(data) {
        if rdns::plausible_name(s) {
            assert!(s.len() <= 253);
            assert!(!s.chars().any(|c| c.is_control() || c.is_whitespace()));
            assert!(!s.contains(['<', '>', '&', '"', '\'']));
        }
    }
});
