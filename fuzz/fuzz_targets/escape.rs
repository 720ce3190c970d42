//! Terminal escaping: the output never contains a control or bidi character, and text that
//! needs no escaping passes through unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::escape::{bytes_lossless, for_terminal};

fn dangerous(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

fuzz_target!(|data: &[u8]| {
    let s = bytes_lossless(data);
    let out = for_terminal(&s);
    assert!(!out.chars().any(dangerous), "{out:?}");
    if !s.chars().any(dangerous) {
        assert_eq!(out, s);
    }
});
