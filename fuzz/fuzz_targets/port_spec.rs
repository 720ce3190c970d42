//! Port, range and list parsing: never panics, and what parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::{Port, PortRange, PortSpec, Protocol, StateFilter};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = s.parse::<Port>();
    let _ = s.parse::<Protocol>();
    let _ = s.parse::<StateFilter>();
    if let Ok(r) = s.parse::<PortRange>() {
        assert!(r.start() <= r.end());
        assert_eq!(r.to_string().parse::<PortRange>().unwrap(), r);
    }
    if let Ok(spec) = s.parse::<PortSpec>() {
        let again: PortSpec = spec.to_string().parse().unwrap();
        assert_eq!(again, spec);
        assert_eq!(spec.iter().count() as u32, spec.len());
    }
    if let Err(e) = s.parse::<PortSpec>() {
        let msg = e.to_string();
        assert!(!msg.contains('\x1b'), "escape in error: {msg:?}");
    }
});
