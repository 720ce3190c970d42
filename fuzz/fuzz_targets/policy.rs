//! Policy parsing: never panics; errors are located and escaped; what parses writes back
//! (`to_toml`) to TOML that parses to the same rules; the scan reader never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_audit::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse("fuzz.toml", s) {
        Ok(p) => {
            let text = p.to_toml();
            let again = Policy::parse("again.toml", &text).expect("written policy parses");
            assert_eq!(again.settings, p.settings);
            assert_eq!(again.allow.len(), p.allow.len());
            for (a, b) in p.allow.iter().zip(&again.allow) {
                assert_eq!(
                    (
                        a.proto,
                        a.ports,
                        &a.addresses,
                        &a.owner,
                        a.required,
                        &a.from,
                        &a.comment
                    ),
                    (
                        b.proto,
                        b.ports,
                        &b.addresses,
                        &b.owner,
                        b.required,
                        &b.from,
                        &b.comment
                    )
                );
            }
            assert_eq!(again.exceptions.len(), p.exceptions.len());
        }
        Err(e) => {
            assert!(!e.errors.is_empty());
            for l in &e.errors {
                assert!(
                    !l.message.chars().any(portolan_core::escape::is_dangerous),
                    "raw control in error: {:?}",
                    l.message
                );
            }
            assert!(e.errors.iter().all(|l| l.line >= 1 && l.column >= 1));
        }
    }
    let _ = portolan_audit::parse_scan(s);
});
