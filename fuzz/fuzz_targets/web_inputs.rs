//! What a request brings to the dashboard (`portolan serve`): Host and Origin headers,
//! cookies, the query's token, `--allow-host` names, and scan files for /scans; and the
//! HTML escaper every untrusted string goes through. Never a panic; a hostile Host is
//! never allowed; escaped text never carries markup or a control byte.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The modules themselves (pure; std, rustix's random source, core's escaping), not copies.
#[path = "../../crates/portolan/src/web/auth.rs"]
#[allow(dead_code)]
mod auth;
#[path = "../../crates/portolan/src/web/html.rs"]
#[allow(dead_code)]
mod html;
#[path = "../../crates/portolan/src/web/scans.rs"]
#[allow(dead_code)]
mod scans;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let hosts = auth::Hosts::new("127.0.0.1:7878".parse().unwrap(), &[], "box");
    if hosts.allows(s) {
        // Only our names, with our port (or none only for port 80, which this is not).
        let l = s.trim().to_ascii_lowercase();
        assert!(
            ["localhost:7878", "127.0.0.1:7878", "[::1]:7878"].contains(&l.as_str()),
            "{s:?} allowed"
        );
    }
    if hosts.is_own_origin(s) {
        assert!(s.starts_with("http://"), "{s:?}");
    }
    let _ = auth::cookie(s, "portolan_session_7878");
    let (token, rest) = auth::take_token(s);
    // The redirect's query never carries a token on.
    assert!(!rest.split('&').any(|kv| kv.starts_with("token=")), "{rest:?}");
    let _ = token;
    assert!(rest.len() <= s.len());
    if let Ok(h) = auth::HostName::parse(s) {
        let _ = auth::Hosts::new("127.0.0.1:7878".parse().unwrap(), &[h], "box");
    }
    let e = html::Esc(s).to_string();
    assert!(!e.contains(['<', '>', '"', '\'', '\u{1b}', '\0']), "{e:?}");
    let _ = html::url_param(s);
    let _ = scans::parse(s);
});
