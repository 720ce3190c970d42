//! Scan targets and `-p` port lists: never panic; what parses is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::{ScanPorts, TargetSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for edges in [false, true] {
        match TargetSpec::parse(s, edges) {
            Ok(t) => {
                let n = t.len();
                assert!(n >= 1);
                if let Some(first) = t.nth(0) {
                    assert!(t.contains(first));
                    let last = t.nth(n - 1).expect("last address exists");
                    assert!(t.contains(last));
                }
                assert!(t.nth(n).is_none());
            }
            Err(e) => assert!(!e.to_string().chars().any(char::is_control)),
        }
    }
    match ScanPorts::parse(s) {
        Ok(p) => {
            assert!(!p.is_empty());
            assert!(p.tcp.iter().chain(p.udp.iter()).all(|port| port.get() != 0));
        }
        Err(e) => assert!(!e.to_string().chars().any(char::is_control)),
    }
});

