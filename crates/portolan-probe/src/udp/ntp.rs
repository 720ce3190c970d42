//! NTP answers (RFC 5905) rendered as text.
//!
//! Why code and not a pattern: the fields that tell about a server are bit fields and
//! binary numbers (leap indicator, version and mode share the first byte; the stratum is a
//! byte; the reference id is four ASCII letters or an IPv4 address depending on the
//! stratum). A regular expression can test bytes but cannot print them as numbers; this
//! turns the 48-byte header into one line that signature patterns read.

/// Length of an NTP header (without extension fields or a MAC).
const HEADER: usize = 48;

/// The reference id as text: for stratum 0 (a "kiss code") and 1 (a reference clock), up
/// to four ASCII letters; otherwise the IPv4 address of the upstream server (for an IPv6
/// upstream, the first four bytes of a hash, shown the same way).
fn refid(stratum: u8, id: [u8; 4]) -> String {
    let text: Vec<u8> = id.iter().copied().take_while(|&b| b != 0).collect();
    let ascii = !text.is_empty() && text.iter().all(u8::is_ascii_alphanumeric);
    if ascii && (stratum <= 1 || stratum >= 16) {
        String::from_utf8_lossy(&text).into_owned()
    } else {
        format!("{}.{}.{}.{}", id[0], id[1], id[2], id[3])
    }
}

/// `ntp v4 mode 4 stratum 3 refid 192.0.2.1 leap 0` for an NTP header; `None` for data
/// shorter than a header. Every field is a number or ASCII letters, so the text holds no
/// byte that needs escaping.
pub fn ntp_text(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER {
        return None;
    }
    let leap = data[0] >> 6;
    let version = (data[0] >> 3) & 0x07;
    let mode = data[0] & 0x07;
    let stratum = data[1];
    let id = [data[12], data[13], data[14], data[15]];
    Some(
        format!(
            "ntp v{version} mode {mode} stratum {stratum} refid {} leap {leap}\n",
            refid(stratum, id)
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_render_their_fields() {
        let mut h = [0u8; 48];
        h[0] = 0xe4; // leap 3 (unsynchronised), version 4, mode 4
        h[1] = 16;
        h[12..16].copy_from_slice(b"INIT");
        assert_eq!(
            ntp_text(&h).unwrap(),
            b"ntp v4 mode 4 stratum 16 refid INIT leap 3\n"
        );
        h[0] = 0x1c; // version 3, mode 4
        h[1] = 2;
        h[12..16].copy_from_slice(&[192, 0, 2, 1]);
        assert_eq!(
            ntp_text(&h).unwrap(),
            b"ntp v3 mode 4 stratum 2 refid 192.0.2.1 leap 0\n"
        );
        h[1] = 1;
        h[12..16].copy_from_slice(b"\x1b[2J");
        assert!(!ntp_text(&h).unwrap().contains(&0x1b));
        assert!(ntp_text(&h[..47]).is_none());
    }
}
