//! `portolan sentry`'s receive path: any bytes the kernel's log hands over (a packet from
//! anyone) are read or refused, never a panic; whatever is read goes through the scan
//! detector, which must not panic either and keeps its memory bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_sentry::detect::{Contact, Sentry, Thresholds};
use portolan_sentry::packet::parse;
use portolan_sentry::traits::{kind, Traits};

fuzz_target!(|data: &[u8]| {
    let mut sentry = Sentry::new(Thresholds {
        max_sources: 16,
        ..Thresholds::default()
    });
    let mut traits = Traits::default();
    let mut out = Vec::new();
    // The input as one packet, then as many packets of 64 bytes.
    let pieces = std::iter::once(data).chain(data.chunks(64));
    for (i, piece) in pieces.enumerate() {
        let Some(p) = parse(piece) else { continue };
        let _ = kind(&p);
        traits.observe(&p);
        let t = i64::try_from(i).unwrap_or(0) * 1000;
        sentry.observe(
            &Contact {
                packet: p,
                success: piece.len() % 2 == 0,
            },
            t,
            &mut out,
        );
        sentry.tick(t, &mut out);
        assert!(sentry.sources() <= 16);
    }
    let _ = traits.kinds();
    let _ = traits.tool();
});
