//! Service detection inputs: probe targets (HOST:PORT), signature files, and whatever a
//! service answers. Never panic; what comes out for a terminal has no control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::ServiceTarget;
use portolan_probe::{banner_text, identify, Signatures};

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static SIGS: Signatures = Signatures::builtin();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Err(e) = ServiceTarget::parse(s) {
            assert!(!e.to_string().chars().any(char::is_control));
        }
        let mut user = SIGS.with(Signatures::clone);
        let _ = user.add_toml("fuzz.toml", s);
    }
    SIGS.with(|sigs| {
        for p in &sigs.probes {
            if let Some(id) = identify(sigs, &p.name, data) {
                for f in [Some(&id.service), id.product.as_ref(), id.version.as_ref(), id.info.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    assert!(!f.chars().any(char::is_control), "{f:?}");
                }
            }
        }
    });
    if let Some(b) = banner_text(data) {
        assert!(!b.chars().any(char::is_control));
    }
});
