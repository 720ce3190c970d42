//! `who` targets and `info` queries: never panic, errors never carry raw control bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::{LocalTarget, PortQuery};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for as_pid in [false, true] {
        if let Err(e) = LocalTarget::parse(s, as_pid) {
            assert!(!e.to_string().chars().any(|c| c.is_control()));
        }
    }
    if let Err(e) = s.parse::<PortQuery>() {
        assert!(!e.to_string().chars().any(|c| c.is_control()));
    }
});
