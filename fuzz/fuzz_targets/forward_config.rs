//! `portolan forward --config FILE`: any text gives rules or a clear error, never a panic;
//! errors carry no raw control character; every rule loaded passes its own check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_relay::config;
use portolan_relay::spec::Options;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(s, &Options::default()) {
        Ok(rules) => {
            assert!(!rules.is_empty());
            for r in &rules {
                assert!(r.check().is_ok());
            }
            assert!(config::check_overlaps(&rules).is_ok());
        }
        Err(m) => {
            assert!(!m.chars().any(portolan_core::escape::is_dangerous), "{m:?}");
        }
    }
});
