//! Service detection inputs: probe targets (HOST:PORT), signature files, and whatever a
//! service answers (matched, read as HTTP, read as a DER certificate). The input is split at its first NUL into a signature file and an
//! answer: the answer is matched by the built-in signatures and, when the file is valid,
//! by the file's own. Never panic; nothing that comes out for a terminal carries a control
//! or bidi character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::escape::is_dangerous;
use portolan_core::ServiceTarget;
use portolan_probe::{banner_text, http, identify, tls, Signatures};

fn check(sigs: &Signatures, answer: &[u8]) {
    for p in &sigs.probes {
        if let Some(id) = identify(sigs, &p.name, answer) {
            let fields = [Some(&id.service), id.product.as_ref(), id.version.as_ref()];
            let more = [id.info.as_ref(), id.cpe.as_ref()];
            for f in fields.into_iter().chain(more).flatten() {
                assert!(!f.chars().any(is_dangerous), "{f:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static SIGS: Signatures = Signatures::builtin();
    }
    let (file, answer) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    if let Ok(s) = std::str::from_utf8(file) {
        if let Err(e) = ServiceTarget::parse(s) {
            assert!(!e.to_string().chars().any(is_dangerous));
        }
        let mut user = SIGS.with(Signatures::clone);
        if user.add_toml("fuzz.toml", s).is_ok() {
            check(&user, answer);
        }
    }
    SIGS.with(|sigs| check(sigs, answer));
    if let Some(b) = banner_text(answer) {
        assert!(!b.chars().any(is_dangerous));
    }
    let _ = tls::wants_tls(answer);
    if let Some(h) = http::details(answer) {
        let texts = [h.server.as_ref(), h.title.as_ref()];
        for t in texts.into_iter().flatten().chain(&h.frameworks) {
            assert!(!t.chars().any(is_dangerous), "{t:?}");
        }
    }
    if let Some(c) = tls::describe_cert(answer) {
        let texts = [&c.subject, &c.issuer, &c.not_before, &c.not_after, &c.serial];
        for t in texts.into_iter().chain(&c.sans) {
            assert!(!t.chars().any(is_dangerous), "{t:?}");
        }
    }
});
