//! The live view's filter (`portolan top`, `/` or `--filter`): whatever is typed, a filter
//! or an error, never a panic; an error carries no terminal escape; a filter that parses
//! can be matched against any row.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The module itself (pure; core's escaping only), not a copy.
#[path = "../../crates/portolan/src/top/filter.rs"]
#[allow(dead_code)]
mod filter;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match filter::Filter::parse(s) {
        Ok(f) => {
            let text = s.to_lowercase();
            let _ = f.matches(&filter::Fields {
                ports: &[0, 443, 65535],
                pid: Some(1),
                process: s,
                state: s,
                user: s,
                unit: s,
                proto: "tcp",
                text: &text,
            });
        }
        Err(e) => assert!(!e.0.contains('\u{1b}'), "{e:?}"),
    }
});
