//! The `tcp_info` reader (sock_diag's INET_DIAG_INFO attribute, whose length depends on the
//! kernel): never panics, whatever the bytes and their length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_sockets::TcpCounters;

fuzz_target!(|data: &[u8]| {
    let _ = TcpCounters::from_tcp_info(data);
});
