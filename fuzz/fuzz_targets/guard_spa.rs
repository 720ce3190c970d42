//! The guard's SPA packet opener: never panics on any datagram, and nothing but a packet
//! sealed with a client's key is ever accepted (random bytes cannot pass the tag).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_guard::spa::{Opener, SealKey};

fuzz_target!(|data: &[u8]| {
    let mut o = Opener::default();
    o.add("psk", SealKey::psk(&[7u8; 32])).unwrap();
    let server = [9u8; 32];
    let client_public = portolan_guard::keys::public_of(&[5u8; 32]);
    let server_public = portolan_guard::keys::public_of(&server);
    if let Some(k) = SealKey::x25519(&server, &client_public, &client_public, &server_public) {
        o.add("x", k).unwrap();
    }
    assert!(o.open(data).is_err(), "unsealed bytes accepted");
});
