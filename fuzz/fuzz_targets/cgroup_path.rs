//! cgroup path classification (unit, user unit, container from a /proc cgroup line): never
//! panics, and keeps the path it was given. (User names come from NSS since the inventory
//! stopped parsing /etc/passwd itself; there is no passwd parser left to fuzz.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_sockets::classify_cgroup;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let o = classify_cgroup(s);
    assert_eq!(o.path, s);
});
