//! UDP answers: whatever a DNS, NTP or SNMP port (or a hostile one) sends back. Every UDP
//! probe's signatures read the input (decoded first where the probe's answers are binary:
//! the hand-written BER reader for SNMP, the NTP header reader). Never panic; the decoders
//! stay bounded; nothing that comes out for a terminal carries a control or bidi character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::escape::is_dangerous;
use portolan_probe::udp::{identify_udp, ntp_text, snmp_text};
use portolan_probe::{banner_text, Signatures, Transport};

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static SIGS: Signatures = Signatures::builtin();
    }
    // The decoded text is bounded: at most 32 variables, each an OID of at most 64 arcs
    // and a value of at most 512 bytes; NTP's is one line of numbers and letters.
    if let Some(t) = snmp_text(data) {
        assert!(t.len() <= 128 + 32 * (64 * 11 + 3 + 512 + 1), "{}", t.len());
    }
    if let Some(t) = ntp_text(data) {
        let (last, line) = t.split_last().unwrap();
        assert!(*last == b'\n' && line.len() < 128, "{t:?}");
        assert!(!line.iter().any(u8::is_ascii_control), "{t:?}");
    }
    SIGS.with(|sigs| {
        for p in sigs.probes_for(Transport::Udp, 0) {
            if let Some(id) = identify_udp(sigs, &p.name, data) {
                let fields = [Some(&id.service), id.product.as_ref(), id.version.as_ref()];
                let more = [id.info.as_ref(), id.cpe.as_ref()];
                for f in fields.into_iter().chain(more).flatten() {
                    assert!(!f.chars().any(is_dangerous), "{f:?}");
                    // 120 characters, each escaped to at most 8, and the template's own text.
                    assert!(f.chars().count() <= 8 * 120 + 256, "{f:?}");
                }
            }
        }
    });
    if let Some(b) = banner_text(data) {
        assert!(!b.chars().any(is_dangerous));
    }
});
