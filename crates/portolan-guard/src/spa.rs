//! portolan's own SPA packet: one UDP datagram, sealed with ChaCha20-Poly1305.
//!
//! ```text
//! offset  size  field
//! 0       1     format version (1)
//! 1       1     key kind (1: X25519, 2: pre-shared key)
//! 2       8     key id: the first 8 bytes of SHA-256 over a label and the client's
//!               public key (or the pre-shared key); names the client without a search
//! 10      12    AEAD nonce, random per packet
//! 22      80    sealed body (below), additional data: bytes 0..22
//! 102     16    Poly1305 tag
//! ```
//! Every packet is exactly [`PACKET_LEN`] bytes, so anything else is dropped before any
//! work. The key is derived once per client when the configuration loads (X25519 between
//! the client's and the guard's static keys, then HKDF-SHA256), so checking a packet costs
//! one hash-map lookup and one ChaCha20-Poly1305 open: the tag is the cheap MAC, checked
//! before a byte of the body is read, in constant time (ring).
//!
//! Body (80 bytes, zero-padded):
//! ```text
//! 1  body version (1)
//! 8  timestamp, Unix seconds, big-endian (signed)
//! 4  seconds of access asked for (0: the guard's default)
//! 1  address kind: 0 as seen (the packet's source), 4 IPv4, 6 IPv6; then 0, 4 or 16 bytes
//! 1  number of ports (1..=16); then per port: protocol (6 TCP, 17 UDP), port (big-endian)
//! ```
//! The nonce is the packet's identity for the replay cache: a captured packet sent again
//! carries the same nonce, and no one without the key can make another.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::digest::{digest, Context, SHA256};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom as _, SystemRandom};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::{PortProto, Rejection, Request, L4};

/// The format version in byte 0.
pub const VERSION: u8 = 1;
const KIND_X25519: u8 = 1;
const KIND_PSK: u8 = 2;
const HEADER_LEN: usize = 22;
const BODY_LEN: usize = 80;
const TAG_LEN: usize = 16;
/// The length of every packet.
pub const PACKET_LEN: usize = HEADER_LEN + BODY_LEN + TAG_LEN;
/// Ports one packet may ask for.
pub const MAX_PORTS: usize = 16;

const SALT: &[u8] = b"portolan spa v1";

/// What a packet asks for, before it is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub timestamp: i64,
    /// `None`: the guard's default.
    pub duration: Option<Duration>,
    /// `None`: the packet's source address as the guard sees it.
    pub open_for: Option<IpAddr>,
    pub ports: Vec<PortProto>,
}

/// A client's sealing key (both sides derive the same one).
pub struct SealKey {
    kind: u8,
    key_id: [u8; 8],
    aead: LessSafeKey,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealKey")
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn key_id(label: &[u8], material: &[u8]) -> [u8; 8] {
    let mut c = Context::new(&SHA256);
    c.update(label);
    c.update(material);
    let d = c.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&d.as_ref()[..8]);
    id
}

fn derive(ikm: &[u8], info: &[&[u8]]) -> LessSafeKey {
    let prk = Salt::new(HKDF_SHA256, SALT).extract(ikm);
    // Expanding 32 bytes from HKDF-SHA256 cannot fail (the limit is 255 * 32).
    let okm = prk
        .expand(info, &CHACHA20_POLY1305)
        .expect("HKDF expand of one key");
    LessSafeKey::new(UnboundKey::from(okm))
}

impl SealKey {
    /// The key of an X25519 client: `own_secret` is this side's secret (the client's, or
    /// the guard's), `peer_public` the other side's public key. `client_public` names the
    /// client (the key id). `None` when the peer's key is a low-order point (no shared
    /// secret: refuse such a key).
    pub fn x25519(
        own_secret: &[u8; 32],
        peer_public: &[u8; 32],
        client_public: &[u8; 32],
        server_public: &[u8; 32],
    ) -> Option<SealKey> {
        let shared = StaticSecret::from(*own_secret).diffie_hellman(&PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return None;
        }
        Some(SealKey {
            kind: KIND_X25519,
            key_id: key_id(b"portolan spa key id x25519", client_public),
            aead: derive(
                shared.as_bytes(),
                &[b"x25519", client_public, server_public],
            ),
        })
    }

    /// The key of a pre-shared-key client.
    pub fn psk(psk: &[u8; 32]) -> SealKey {
        SealKey {
            kind: KIND_PSK,
            key_id: key_id(b"portolan spa key id psk", psk),
            aead: derive(psk, &[b"psk"]),
        }
    }

    pub fn key_id(&self) -> [u8; 8] {
        self.key_id
    }
}

fn encode_body(b: &Body) -> Result<[u8; BODY_LEN], String> {
    if b.ports.is_empty() || b.ports.len() > MAX_PORTS {
        return Err(format!(
            "a packet asks for 1 to {MAX_PORTS} ports, not {}",
            b.ports.len()
        ));
    }
    let mut out = [0u8; BODY_LEN];
    let mut v = Vec::with_capacity(BODY_LEN);
    v.push(1u8);
    v.extend_from_slice(&b.timestamp.to_be_bytes());
    let secs = b
        .duration
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1));
    v.extend_from_slice(&secs.to_be_bytes());
    match b.open_for {
        None => v.push(0),
        Some(IpAddr::V4(a)) => {
            v.push(4);
            v.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            v.push(6);
            v.extend_from_slice(&a.octets());
        }
    }
    // At most 16 ports: fits a byte.
    #[allow(clippy::cast_possible_truncation)]
    v.push(b.ports.len() as u8);
    for p in &b.ports {
        v.push(match p.proto {
            L4::Tcp => 6,
            L4::Udp => 17,
        });
        v.extend_from_slice(&p.port.to_be_bytes());
    }
    // 1 + 8 + 4 + 17 + 1 + 16 * 3 = 79 bytes at most.
    out[..v.len()].copy_from_slice(&v);
    Ok(out)
}

fn decode_body(b: &[u8]) -> Option<Body> {
    let mut r = Reader(b);
    if r.u8()? != 1 {
        return None;
    }
    let timestamp = i64::from_be_bytes(r.take(8)?.try_into().ok()?);
    let secs = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
    let open_for = match r.u8()? {
        0 => None,
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(r.take(4)?).ok()?,
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(r.take(16)?).ok()?,
        ))),
        _ => return None,
    };
    let n = usize::from(r.u8()?);
    if n == 0 || n > MAX_PORTS {
        return None;
    }
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let proto = match r.u8()? {
            6 => L4::Tcp,
            17 => L4::Udp,
            _ => return None,
        };
        let port = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
        if port == 0 {
            return None;
        }
        ports.push(PortProto { proto, port });
    }
    // The rest is padding: zeros only (one encoding per request).
    if r.0.iter().any(|&x| x != 0) {
        return None;
    }
    Some(Body {
        timestamp,
        duration: (secs != 0).then(|| Duration::from_secs(u64::from(secs))),
        open_for,
        ports,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
}

/// Seals a request into one datagram of [`PACKET_LEN`] bytes.
pub fn seal(key: &SealKey, body: &Body) -> Result<Vec<u8>, String> {
    let plain = encode_body(body)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "the system random source failed".to_owned())?;
    let mut pkt = Vec::with_capacity(PACKET_LEN);
    pkt.push(VERSION);
    pkt.push(key.kind);
    pkt.extend_from_slice(&key.key_id);
    pkt.extend_from_slice(&nonce);
    let mut sealed = plain.to_vec();
    key.aead
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&pkt[..HEADER_LEN]),
            &mut sealed,
        )
        .map_err(|_| "sealing failed".to_owned())?;
    pkt.extend_from_slice(&sealed);
    Ok(pkt)
}

/// The guard's side: every client's key by key id.
#[derive(Debug, Default)]
pub struct Opener {
    keys: HashMap<[u8; 8], (String, SealKey)>,
}

impl Opener {
    /// Adds a client; an error names the client whose key id collides with another's.
    pub fn add(&mut self, client: &str, key: SealKey) -> Result<(), String> {
        if let Some((other, _)) = self.keys.get(&key.key_id) {
            return Err(format!(
                "clients {other:?} and {client:?} have the same key"
            ));
        }
        self.keys.insert(key.key_id, (client.to_owned(), key));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Opens a datagram: `Err(BadMac)` for anything that is not one of our packets or
    /// whose tag does not check out, `Err(UnknownClient)` for a key id no client has.
    /// The time window, the replay cache and the policy are the caller's.
    pub fn open(&self, datagram: &[u8]) -> Result<Request, Rejection> {
        if datagram.len() != PACKET_LEN || datagram[0] != VERSION {
            return Err(Rejection::BadMac);
        }
        let kind = datagram[1];
        let id: [u8; 8] = datagram[2..10].try_into().map_err(|_| Rejection::BadMac)?;
        let Some((client, key)) = self.keys.get(&id) else {
            return Err(Rejection::UnknownClient);
        };
        if key.kind != kind {
            return Err(Rejection::BadMac);
        }
        let nonce: [u8; NONCE_LEN] = datagram[10..HEADER_LEN]
            .try_into()
            .map_err(|_| Rejection::BadMac)?;
        let mut buf = [0u8; BODY_LEN + TAG_LEN];
        buf.copy_from_slice(&datagram[HEADER_LEN..]);
        let plain = key
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&datagram[..HEADER_LEN]),
                &mut buf,
            )
            .map_err(|_| Rejection::BadMac)?;
        // A sealed body we cannot read was made with our key: a client bug, not an attack;
        // still nothing is opened.
        let body = decode_body(plain).ok_or(Rejection::BadMac)?;
        let mut replay = Context::new(&SHA256);
        replay.update(b"portolan spa replay");
        replay.update(&datagram[..HEADER_LEN]);
        let mut replay_key = [0u8; 32];
        replay_key.copy_from_slice(replay.finish().as_ref());
        Ok(Request {
            client: client.clone(),
            open_for: body.open_for,
            ports: body.ports,
            duration: body.duration,
            timestamp: body.timestamp,
            replay_key,
        })
    }
}

/// SHA-256 of some bytes (for the other formats' replay keys).
pub fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, b).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{public_of, random32};

    fn body() -> Body {
        Body {
            timestamp: 1_790_000_000,
            duration: Some(Duration::from_secs(45)),
            open_for: None,
            ports: vec!["22/tcp".parse().unwrap(), "53/udp".parse().unwrap()],
        }
    }

    fn pair() -> (SealKey, SealKey) {
        let (c, s) = (random32(), random32());
        let (cp, sp) = (public_of(&c), public_of(&s));
        (
            SealKey::x25519(&c, &sp, &cp, &sp).unwrap(),
            SealKey::x25519(&s, &cp, &cp, &sp).unwrap(),
        )
    }

    #[test]
    fn x25519_round_trip() {
        let (client, server) = pair();
        let mut o = Opener::default();
        o.add("alice", server).unwrap();
        let pkt = seal(&client, &body()).unwrap();
        assert_eq!(pkt.len(), PACKET_LEN);
        let r = o.open(&pkt).unwrap();
        assert_eq!(r.client, "alice");
        assert_eq!(r.ports, body().ports);
        assert_eq!(r.duration, Some(Duration::from_secs(45)));
        assert_eq!(r.timestamp, 1_790_000_000);
        assert_eq!(r.open_for, None);
        // Two packets of the same request differ (nonce), so do their replay keys.
        let r2 = o.open(&seal(&client, &body()).unwrap()).unwrap();
        assert_ne!(r.replay_key, r2.replay_key);
        // The same packet has the same replay key.
        assert_eq!(o.open(&pkt).unwrap().replay_key, r.replay_key);
    }

    #[test]
    fn psk_and_addresses() {
        let psk = random32();
        let mut o = Opener::default();
        o.add("bob", SealKey::psk(&psk)).unwrap();
        for addr in ["198.18.0.7", "2001:2::7"] {
            let mut b = body();
            b.open_for = Some(addr.parse().unwrap());
            b.duration = None;
            let r = o.open(&seal(&SealKey::psk(&psk), &b).unwrap()).unwrap();
            assert_eq!(r.open_for, b.open_for);
            assert_eq!(r.duration, None);
        }
        assert!(
            o.add("carol", SealKey::psk(&psk)).is_err(),
            "same key twice"
        );
    }

    #[test]
    fn tampering_and_strangers_are_rejected() {
        let (client, server) = pair();
        let mut o = Opener::default();
        o.add("alice", server).unwrap();
        let pkt = seal(&client, &body()).unwrap();
        for i in 0..pkt.len() {
            let mut bad = pkt.clone();
            bad[i] ^= 0x01;
            let e = o.open(&bad).unwrap_err();
            assert!(
                matches!(e, Rejection::BadMac | Rejection::UnknownClient),
                "byte {i}: {e:?}"
            );
        }
        let (stranger, _) = pair();
        assert_eq!(
            o.open(&seal(&stranger, &body()).unwrap()),
            Err(Rejection::UnknownClient)
        );
        for junk in [
            &[][..],
            &[1u8; 5],
            &pkt[..PACKET_LEN - 1],
            &[0u8; PACKET_LEN],
        ] {
            assert!(o.open(junk).is_err());
        }
        let mut long = pkt.clone();
        long.push(0);
        assert!(o.open(&long).is_err());
    }

    #[test]
    fn bodies_out_of_range_do_not_seal() {
        let (client, _) = pair();
        let mut b = body();
        b.ports.clear();
        assert!(seal(&client, &b).is_err());
        b.ports = vec!["22/tcp".parse().unwrap(); MAX_PORTS + 1];
        assert!(seal(&client, &b).is_err());
        b.ports = vec!["22/tcp".parse().unwrap(); MAX_PORTS];
        b.open_for = Some("2001:2::1".parse().unwrap());
        assert!(seal(&client, &b).is_ok(), "the largest body fits");
    }

    #[test]
    fn body_decoder_is_strict() {
        let good = encode_body(&body()).unwrap();
        assert!(decode_body(&good).is_some());
        let mut pad = good;
        pad[BODY_LEN - 1] = 1;
        assert!(decode_body(&pad).is_none(), "non-zero padding");
        assert!(decode_body(&good[..10]).is_none());
        assert!(decode_body(&[]).is_none());
        let mut v = good;
        v[0] = 2;
        assert!(decode_body(&v).is_none());
    }

    #[test]
    fn low_order_peer_key_is_refused() {
        let s = random32();
        assert!(SealKey::x25519(&s, &[0u8; 32], &[0u8; 32], &public_of(&s)).is_none());
    }
}
