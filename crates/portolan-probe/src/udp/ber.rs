//! A small BER reader (X.690) for SNMP answers, and their rendering as text.
//!
//! Why code and not a pattern: an SNMP answer is nested type-length-value data whose
//! lengths decide where each value ends, and whose object identifiers are base-128
//! numbers; a regular expression cannot follow the lengths or print the numbers. This
//! reader turns a `GetResponse` into lines of text (`OID = value`) that signature patterns
//! then read.
//!
//! Hostile input: every length is checked against the bytes that are left (no index past
//! the end, no arithmetic overflow), only the definite length forms up to 4 bytes are
//! accepted, the nesting is the fixed shape of an SNMP message (message, PDU, variable
//! list, variable: no recursion, so the depth is bounded by construction), and the numbers
//! of variables, of OID arcs and of value bytes shown are capped. It never panics.

use std::fmt::Write as _;

/// Variables rendered at most.
const MAX_VARBINDS: usize = 32;
/// Arcs of an object identifier decoded at most.
const MAX_ARCS: usize = 64;
/// Bytes of a string value kept.
const MAX_VALUE: usize = 512;

/// BER tags used by SNMP (RFC 3416, RFC 2578).
mod tag {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const IP_ADDRESS: u8 = 0x40;
    pub const COUNTER32: u8 = 0x41;
    pub const GAUGE32: u8 = 0x42;
    pub const TIME_TICKS: u8 = 0x43;
    pub const OPAQUE: u8 = 0x44;
    pub const COUNTER64: u8 = 0x46;
    pub const NO_SUCH_OBJECT: u8 = 0x80;
    pub const NO_SUCH_INSTANCE: u8 = 0x81;
    pub const END_OF_MIB_VIEW: u8 = 0x82;
    pub const GET_RESPONSE: u8 = 0xa2;
    pub const REPORT: u8 = 0xa8;
}

/// A cursor over BER data.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next type-length-value: its tag and its content. `None` when the data ends
    /// early, a length is in the indefinite or an over-long form, or the tag is in the
    /// multi-byte form (SNMP uses none).
    pub fn next_tlv(&mut self) -> Option<(u8, &'a [u8])> {
        let (&t, rest) = self.data.split_first()?;
        if t & 0x1f == 0x1f {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (num, rest) = rest.split_at(n);
            let len = num.iter().try_fold(0usize, |acc, &b| {
                acc.checked_mul(256)?.checked_add(usize::from(b))
            })?;
            (len, rest)
        };
        if len > rest.len() {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        self.data = rest;
        Some((t, content))
    }

    /// The next TLV, which must have tag `want`.
    pub fn expect(&mut self, want: u8) -> Option<&'a [u8]> {
        match self.next_tlv()? {
            (t, c) if t == want => Some(c),
            _ => None,
        }
    }
}

/// A two's-complement INTEGER of at most 8 bytes.
pub fn integer(c: &[u8]) -> Option<i64> {
    if c.is_empty() || c.len() > 8 {
        return None;
    }
    let neg = c[0] & 0x80 != 0;
    let start: i64 = if neg { -1 } else { 0 };
    Some(c.iter().fold(start, |acc, &b| (acc << 8) | i64::from(b)))
}

/// An unsigned number (Counter32, Gauge32, TimeTicks, Counter64): at most 9 bytes, the
/// first of 9 a zero sign byte.
pub fn unsigned(c: &[u8]) -> Option<u64> {
    let c = match c {
        [0, rest @ ..] if c.len() == 9 => rest,
        _ if c.is_empty() || c.len() > 8 => return None,
        _ => c,
    };
    Some(c.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// An OBJECT IDENTIFIER in dotted form (`1.3.6.1.2.1.1.1.0`). Arcs are at most 32 bits.
pub fn oid(c: &[u8]) -> Option<String> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    let mut pending = false;
    for &b in c {
        v = (v << 7) | u64::from(b & 0x7f);
        if v > u64::from(u32::MAX) {
            return None;
        }
        pending = b & 0x80 != 0;
        if !pending {
            if arcs.is_empty() {
                // The first subidentifier holds two arcs: 40 * x + y (x is 2 beyond 80).
                let x = (v / 40).min(2);
                arcs.push(x);
                arcs.push(v - 40 * x);
            } else {
                arcs.push(v);
            }
            if arcs.len() > MAX_ARCS {
                return None;
            }
            v = 0;
        }
    }
    if pending || arcs.is_empty() {
        return None;
    }
    let mut s = String::new();
    for (i, a) in arcs.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        let _ = write!(s, "{a}");
    }
    Some(s)
}

/// A value as text, on one line: strings as their bytes (line breaks become spaces, at
/// most `MAX_VALUE` bytes), numbers in decimal, the SNMPv2 exceptions by name.
fn value(t: u8, c: &[u8]) -> Vec<u8> {
    let text = match t {
        tag::OCTET_STRING | tag::OPAQUE => {
            let mut v: Vec<u8> = c[..c.len().min(MAX_VALUE)]
                .iter()
                .map(|&b| if matches!(b, b'\n' | b'\r') { b' ' } else { b })
                .collect();
            while v.last() == Some(&b' ') {
                v.pop();
            }
            return v;
        }
        tag::INTEGER => integer(c).map(|i| i.to_string()),
        tag::NULL => Some("null".to_owned()),
        tag::OID => oid(c),
        tag::IP_ADDRESS if c.len() == 4 => Some(format!("{}.{}.{}.{}", c[0], c[1], c[2], c[3])),
        tag::COUNTER32 | tag::GAUGE32 | tag::TIME_TICKS | tag::COUNTER64 => {
            unsigned(c).map(|u| u.to_string())
        }
        tag::NO_SUCH_OBJECT => Some("noSuchObject".to_owned()),
        tag::NO_SUCH_INSTANCE => Some("noSuchInstance".to_owned()),
        tag::END_OF_MIB_VIEW => Some("endOfMibView".to_owned()),
        _ => None,
    };
    text.unwrap_or_else(|| format!("tag 0x{t:02x}, {} bytes", c.len()))
        .into_bytes()
}

/// An SNMP version number as text.
fn version_name(v: i64) -> String {
    match v {
        0 => "v1".to_owned(),
        1 => "v2c".to_owned(),
        3 => "v3".to_owned(),
        n => format!("version-{n}"),
    }
}

/// Renders an SNMPv1/v2c answer (a `GetResponse` or `Report` PDU) as text:
///
/// ```text
/// snmp v2c status 0 index 0
/// 1.3.6.1.2.1.1.1.0 = Linux host 6.1.0 x86_64
/// 1.3.6.1.2.1.1.2.0 = 1.3.6.1.4.1.8072.3.2.10
/// ```
///
/// `None` when the data is not such a message. The text is raw: strings from the answer
/// are in it as they came (but for line breaks), so whatever is taken from it must be
/// escaped, as the signature templates are.
pub fn snmp_text(data: &[u8]) -> Option<Vec<u8>> {
    let mut top = Reader::new(data);
    let mut msg = Reader::new(top.expect(tag::SEQUENCE)?);
    let version = integer(msg.expect(tag::INTEGER)?)?;
    let _community = msg.expect(tag::OCTET_STRING)?;
    let (pdu_tag, pdu) = msg.next_tlv()?;
    if pdu_tag != tag::GET_RESPONSE && pdu_tag != tag::REPORT {
        return None;
    }
    let mut pdu = Reader::new(pdu);
    let _request_id = integer(pdu.expect(tag::INTEGER)?)?;
    let status = integer(pdu.expect(tag::INTEGER)?)?;
    let index = integer(pdu.expect(tag::INTEGER)?)?;
    let mut list = Reader::new(pdu.expect(tag::SEQUENCE)?);
    let mut out = format!(
        "snmp {} status {status} index {index}\n",
        version_name(version)
    )
    .into_bytes();
    for _ in 0..MAX_VARBINDS {
        if list.is_empty() {
            break;
        }
        let mut vb = Reader::new(list.expect(tag::SEQUENCE)?);
        let name = oid(vb.expect(tag::OID)?)?;
        let (t, c) = vb.next_tlv()?;
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b" = ");
        out.extend(value(t, c));
        out.push(b'\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_integers_and_lengths() {
        assert_eq!(
            oid(&[0x2b, 6, 1, 4, 1, 0x8f, 0x65, 0x64, 2, 0]).as_deref(),
            Some("1.3.6.1.4.1.2021.100.2.0")
        );
        assert_eq!(
            oid(&[0x2b, 6, 1, 4, 1, 0xbf, 0x08]).as_deref(),
            Some("1.3.6.1.4.1.8072")
        );
        assert_eq!(oid(&[0x2b, 0x86]), None, "a cut arc");
        assert_eq!(
            oid(&[0x2b, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            None,
            "an arc over 32 bits"
        );
        assert_eq!(integer(&[0xff]), Some(-1));
        assert_eq!(integer(&[0x01, 0x00]), Some(256));
        assert_eq!(
            unsigned(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Some(u64::MAX)
        );
        // Long-form lengths: checked against what is left, no indefinite form.
        let mut r = Reader::new(&[0x04, 0x81, 0x02, b'h', b'i', 0x05]);
        assert_eq!(r.next_tlv(), Some((0x04, &b"hi"[..])));
        assert_eq!(r.next_tlv(), None);
        assert_eq!(
            Reader::new(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]).next_tlv(),
            None
        );
        assert_eq!(Reader::new(&[0x30, 0x80, 0, 0]).next_tlv(), None);
        assert_eq!(Reader::new(&[0x1f, 0x01, 0x00]).next_tlv(), None);
    }

    #[test]
    fn a_get_response_is_rendered_and_garbage_is_not() {
        // A GetResponse with sysDescr "Linux\nx" and an exception for a missing object.
        let msg: &[u8] = &[
            0x30, 0x38, 0x02, 0x01, 0x01, 0x04, 0x06, b'p', b'u', b'b', b'l', b'i', b'c', 0xa2,
            0x2b, 0x02, 0x02, 0x50, 0x74, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x1f, 0x30,
            0x0f, 0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 1, 0, 0x04, 0x03, b'L', b'\n', b'x', 0x30, 0x0c,
            0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 2, 0, 0x80, 0x00,
        ];
        let text = String::from_utf8(snmp_text(msg).unwrap()).unwrap();
        assert_eq!(
            text,
            "snmp v2c status 0 index 0\n1.3.6.1.2.1.1.1.0 = L x\n1.3.6.1.2.1.1.2.0 = noSuchObject\n"
        );
        for cut in 0..msg.len() {
            assert!(snmp_text(&msg[..cut]).is_none(), "cut at {cut}");
        }
        assert!(snmp_text(b"\x30\x03\x02\x01").is_none());
        assert!(snmp_text(b"").is_none());
    }
}
