//! cgroup path classification and /etc/passwd parsing: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_sockets::{classify_cgroup, UserNames};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let o = classify_cgroup(s);
    assert_eq!(o.path, s);
    let u = UserNames::parse(s);
    let _ = u.name(0);
});
