//! Spans and moments (`--interval`, `--grace`, `--since`, `--until`): never panic, errors
//! carry no terminal escapes, and what parses is in range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::when::{parse_instant, parse_span};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match parse_span(s) {
        Ok(d) => assert!(d.as_secs() <= 100 * 366 * 86_400),
        Err(e) => assert!(!e.message.contains('\x1b'), "{e:?}"),
    }
    for now in [0, 1_795_335_900_123, i64::MAX] {
        if let Err(e) = parse_instant(s, now) {
            assert!(!e.message.contains('\x1b'), "{e:?}");
        }
    }
});
