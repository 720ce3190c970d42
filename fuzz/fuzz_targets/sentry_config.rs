//! `portolan sentry --config FILE`: any text gives thresholds that pass their own check or
//! a clear error with no raw control character, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_sentry::detect::Thresholds;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Thresholds::from_toml(s) {
        Ok(t) => assert!(t.validate().is_ok()),
        Err(m) => assert!(!m.chars().any(portolan_core::escape::is_dangerous), "{m:?}"),
    }
});
