//! nmap-service-probes files (`--nmap-probes`): the input is split at its first NUL into a
//! file and an answer. Reading the file never panics; its error or its summary (one note on
//! stderr) carries no control or bidi character; a file that reads matches the answer
//! against each of its probes without panicking, and what comes out is escaped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portolan_core::escape::is_dangerous;
use portolan_probe::identify;
use portolan_probe::nmap_probes::parse;

fuzz_target!(|data: &[u8]| {
    let (file, answer) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    match parse("fuzz", file) {
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.chars().any(is_dangerous), "{shown:?}");
        }
        Ok((sigs, summary)) => {
            let shown = summary.to_string();
            assert!(!shown.chars().any(is_dangerous), "{shown:?}");
            assert!(summary.matches == sigs.matches.len());
            for p in sigs.probes.iter().take(8) {
                if let Some(id) = identify(&sigs, &p.name, answer) {
                    let fields = [id.product, id.version, id.info, id.cpe];
                    for f in fields.iter().flatten() {
                        assert!(!f.chars().any(is_dangerous), "{f:?}");
                    }
                }
            }
        }
    }
});
