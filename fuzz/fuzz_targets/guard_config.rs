//! guard.toml: any text gives a configuration or a clear error, never a panic, and errors
//! carry no raw control character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_guard::config::GuardConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match GuardConfig::parse(std::path::Path::new("/nonexistent/guard.toml"), s, 0o600) {
        Ok(c) => assert!(!c.clients.is_empty() || !c.knocks.is_empty()),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.chars().any(portolan_core::escape::is_dangerous), "{m:?}");
        }
    }
});
