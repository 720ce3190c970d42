//! What the guard reads off the network: netlink datagrams from the NFLOG group (whose
//! packets come from anyone) and the IP packets inside them. Never panic, never read past
//! the input; whatever parses keeps the invariants the guard relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_guard::{nflog, wire};

fuzz_target!(|data: &[u8]| {
    if let Some(seen) = wire::parse(data) {
        assert!(seen.payload.len() <= data.len());
        assert_eq!(seen.src.is_ipv4(), seen.dst.is_ipv4());
        assert_eq!(seen.src.is_ipv4(), data[0] >> 4 == 4);
    }
    for m in nflog::parse_messages(data) {
        if let nflog::Message::Packet(p) = m {
            assert!(p.payload.len() <= data.len());
            let _ = wire::parse(&p.payload);
        }
    }
});
