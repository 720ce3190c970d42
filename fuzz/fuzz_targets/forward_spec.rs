//! `portolan forward LISTEN TARGET`: any two words give a rule or a clear error, never a
//! panic; errors carry no raw control character; a rule's display parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_relay::spec::{parse_listen, parse_target, Proto, Rule};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (l, t) = s.split_once('\n').unwrap_or((s, s));
    for proto in [Proto::Tcp, Proto::Udp] {
        match Rule::parse(proto, l, t) {
            Ok(r) => {
                assert_eq!(parse_listen(&r.listen.to_string()).unwrap(), r.listen);
                assert_eq!(parse_target(&r.target.to_string()).unwrap(), r.target);
                for p in r.listen.ports.iter().take(4) {
                    let tp = r.target_port(p);
                    assert!(r.target.ports.contains(tp));
                }
            }
            Err(e) => {
                let m = e.to_string();
                assert!(!m.chars().any(portolan_core::escape::is_dangerous), "{m:?}");
            }
        }
    }
});
