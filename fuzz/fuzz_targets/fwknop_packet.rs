//! fwknop SPA datagrams: `decode` must refuse or accept any bytes without panicking, both
//! as they come off the wire (almost all stop at the HMAC) and as the plaintext of an
//! authenticated packet (sealed here with the same fixed key, so the field parser behind
//! the HMAC sees them too). What it accepts must be a sane request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_guard::fwknop::{self, FwknopKey};

fuzz_target!(|data: &[u8]| {
    let key = FwknopKey {
        client: "fuzz".into(),
        key: vec![0x11; 32],
        hmac_key: vec![0x22; 64],
    };
    let keys = std::slice::from_ref(&key);
    let _ = fwknop::decode(data, keys);
    if let Ok(datagram) = fwknop::seal_plaintext(&key, data, [0x33; 8]) {
        if let Ok(r) = fwknop::decode(&datagram, keys) {
            assert_eq!(r.client, "fuzz");
            assert!(!r.ports.is_empty());
            assert!(r.ports.iter().all(|p| p.port != 0));
            assert!(r.duration.is_none_or(|d| d.as_secs() <= 65_536));
        }
    }
});
