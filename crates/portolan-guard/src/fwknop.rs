//! fwknop's single packet authorization format (libfko, "FKO protocol 3.0.0"), both ways:
//! [`decode`] reads the packets the real `fwknop` client sends, [`encode`] makes packets the
//! real `fwknopd` accepts. Only fwknop's default symmetric mode is spoken: Rijndael
//! (AES-256-CBC with OpenSSL's salted key derivation) authenticated by HMAC-SHA256, with the
//! keys `fwknop --key-gen` prints. GnuPG packets, the legacy zero-padded IV mode and the
//! other HMAC types are refused as [`Rejection::BadMac`].
//!
//! The format, as this module reads and writes it:
//!
//! - **Wire**: one UDP payload of base64 text (standard alphabet, every trailing `=`
//!   stripped), at most 1500 bytes: `CIPHERTEXT_B64` immediately followed by `HMAC_B64`
//!   (43 characters: HMAC-SHA256, base64, no `=`), with no separator.
//! - **Prefix**: `CIPHERTEXT_B64` is the base64 of `"Salted__" || salt(8) || AES blocks`
//!   with its first ten characters, always `U2FsdGVkX1`, cut off before sending. A packet
//!   that still starts with them is refused (fwknopd does the same: a prefix tacked onto a
//!   captured packet must not make a "new" packet for the replay cache).
//! - **HMAC** covers the ciphertext's base64 text *with* the `U2FsdGVkX1` prefix put back,
//!   keyed with the raw bytes of HMAC_KEY_BASE64. It is checked first, in constant time,
//!   before anything is decrypted.
//! - **Key derivation** (OpenSSL `EVP_BytesToKey` with MD5, one round): `D1 = MD5(key ||
//!   salt)`, `Di = MD5(Di-1 || key || salt)`; `D1 || D2` is the AES-256 key and `D3` the IV.
//!   `key` is the raw bytes of KEY_BASE64 (at most 32).
//! - **Padding**: PKCS#7, checked strictly.
//! - **Plaintext**: printable ASCII, `:`-separated:
//!   `RAND16:b64(user):TIMESTAMP:VERSION:TYPE:b64(message)[:b64(nat)][:b64(server_auth)][:TIMEOUT]:DIGEST`
//!   where RAND16 is 16 random decimal digits, TIMESTAMP Unix seconds, VERSION `3.0.0`, TYPE
//!   a message type (1 access, 3 access with a client timeout; 0 command, 2/4/5/6 NAT), the
//!   access message `IP,proto/port[,proto/port...]` (`0.0.0.0`: "use the packet's source",
//!   fwknop's `-s`), and DIGEST the base64 (no `=`) of a hash of everything before its `:`
//!   (SHA-256 by default; its length tells the type: 22 MD5, 27 SHA-1, 43 SHA-256, 64
//!   SHA-384, 86 SHA-512). Every inner base64 field is standard base64 without `=`.
//!
//! Decoding is strict: anything the fwknop client would not have produced is refused, and
//! no input makes it panic, index out of bounds or work more than a few HMACs.
//! This module must not print, and keeps keys out of `Debug` output.

use std::fmt;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use md5::Digest as _;
use ring::digest;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::{GuardError, PortProto, Rejection, Request, L4};

/// The largest datagram [`decode`] looks at (fwknopd's limit too); longer ones are refused
/// before any work.
pub const MAX_DATAGRAM: usize = 1500;

/// The protocol version fwknop 2.6 writes into its packets.
pub const FKO_VERSION: &str = "3.0.0";

/// The longest client timeout fwknopd parses (its limit is `2 << 15` seconds).
pub const MAX_CLIENT_TIMEOUT: u32 = 65_536;

/// The longest encryption key fwknop takes (Rijndael's largest key size, in bytes).
pub const MAX_KEY_LEN: usize = 32;

/// The longest HMAC key fwknop takes, in bytes.
pub const MAX_HMAC_KEY_LEN: usize = 128;

/// `base64("Salted__")`'s first ten characters, which fwknop cuts off every packet.
const SALTED_B64: &[u8] = b"U2FsdGVkX1";
/// OpenSSL's salted-ciphertext magic.
const SALTED: &[u8] = b"Salted__";
const SALT_LEN: usize = 8;
const BLOCK: usize = 16;
/// HMAC-SHA256 in base64 without `=`.
const HMAC_B64_LEN: usize = 43;
/// The shortest possible packet: the smallest ciphertext (salt and one block, 32 bytes
/// after the prefix's, 33 base64 characters after the cut prefix) and the HMAC.
const MIN_DATAGRAM: usize = 33 + HMAC_B64_LEN;
/// Bounds of the plaintext, fwknop's MIN/MAX_SPA_ENCODED_MSG_SIZE.
const MIN_PLAINTEXT: usize = 36;
const MAX_PLAINTEXT: usize = 1500;
const RAND_LEN: usize = 16;
/// Longest base64 fields fwknop parses.
const MAX_USER_B64: usize = 64;
const MAX_MESSAGE_B64: usize = 256;
const MAX_TIMESTAMP_LEN: usize = 12;
const MAX_VERSION_LEN: usize = 8;

// fwknop's message types.
const COMMAND_MSG: u8 = 0;
const ACCESS_MSG: u8 = 1;
const NAT_ACCESS_MSG: u8 = 2;
const CLIENT_TIMEOUT_ACCESS_MSG: u8 = 3;
const CLIENT_TIMEOUT_NAT_ACCESS_MSG: u8 = 4;
const LOCAL_NAT_ACCESS_MSG: u8 = 5;
const CLIENT_TIMEOUT_LOCAL_NAT_ACCESS_MSG: u8 = 6;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// One fwknop client's keys, as `fwknop --key-gen` prints them and fwknopd's access.conf
/// holds them (KEY_BASE64, HMAC_KEY_BASE64).
#[derive(Clone, PartialEq, Eq)]
pub struct FwknopKey {
    /// The client's name in portolan's configuration (fwknop has none: it is ours).
    pub client: String,
    /// The Rijndael key: KEY_BASE64 decoded, 1 to 32 bytes (`--key-gen` makes 32).
    pub key: Vec<u8>,
    /// The HMAC-SHA256 key: HMAC_KEY_BASE64 decoded, 1 to 128 bytes (`--key-gen` makes 64).
    pub hmac_key: Vec<u8>,
}

impl fmt::Debug for FwknopKey {
    /// Names the client and the key sizes, never the keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FwknopKey")
            .field("client", &self.client)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("hmac_key", &format_args!("<{} bytes>", self.hmac_key.len()))
            .finish()
    }
}

impl FwknopKey {
    /// The keys of `client` from the two base64 strings `fwknop --key-gen` prints
    /// (`KEY_BASE64: ...`, `HMAC_KEY_BASE64: ...`; pass the values). Surrounding whitespace
    /// is ignored and the trailing `=` may be left off.
    pub fn from_base64(
        client: impl Into<String>,
        key_base64: &str,
        hmac_key_base64: &str,
    ) -> Result<FwknopKey, GuardError> {
        let client = client.into();
        let key = key_from_base64(&client, "KEY_BASE64", key_base64, MAX_KEY_LEN)?;
        let hmac_key = key_from_base64(
            &client,
            "HMAC_KEY_BASE64",
            hmac_key_base64,
            MAX_HMAC_KEY_LEN,
        )?;
        Ok(FwknopKey {
            client,
            key,
            hmac_key,
        })
    }

    /// Whether the keys have lengths fwknop can have made (the fields are public).
    fn usable(&self) -> bool {
        (1..=MAX_KEY_LEN).contains(&self.key.len())
            && (1..=MAX_HMAC_KEY_LEN).contains(&self.hmac_key.len())
    }
}

fn key_from_base64(
    client: &str,
    what: &str,
    text: &str,
    max: usize,
) -> Result<Vec<u8>, GuardError> {
    // Config files hold keys with or without their `=`: both are fine here.
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let client = portolan_core::escape::for_terminal(client);
    let text = text.trim();
    if text.is_empty() {
        return Err(GuardError::Config(format!(
            "fwknop keys of client {client}: {what} is empty (fwknop --key-gen prints one)"
        )));
    }
    let key = LENIENT.decode(text).map_err(|e| {
        GuardError::Config(format!(
            "fwknop keys of client {client}: {what} is not base64 ({e})"
        ))
    })?;
    if key.is_empty() || key.len() > max {
        return Err(GuardError::Config(format!(
            "fwknop keys of client {client}: {what} decodes to {} bytes; fwknop takes 1 to {max}",
            key.len()
        )));
    }
    Ok(key)
}

/// Reads one fwknop SPA datagram (the UDP payload) and returns what it asks for.
///
/// The HMAC is checked first, in constant time, against every key's `hmac_key`; only a
/// packet it authenticates is decrypted (with that key's `key`), and only then parsed.
/// `client` is the matching key's client; `open_for` the access message's address, `None`
/// for `0.0.0.0` (fwknop's `-s`: the packet's source); `duration` the client timeout
/// (`--fw-timeout`) of message types that carry one; `replay_key` the SHA-256 of the
/// decrypted plaintext (which holds 16 random digits and the timestamp).
///
/// Refusals: [`Rejection::BadMac`] for anything not authenticated by a key, not decrypting,
/// or malformed in any way (including ports outside 1-65535 and digests that do not match);
/// [`Rejection::NotAllowed`] for authenticated, well-formed packets asking for what portolan
/// does not grant: command messages, NAT access, `icmp`/`none` protocols. The timestamp is
/// returned, not judged: the window is the caller's.
pub fn decode(datagram: &[u8], keys: &[FwknopKey]) -> Result<Request, Rejection> {
    if !(MIN_DATAGRAM..=MAX_DATAGRAM).contains(&datagram.len()) {
        return Err(Rejection::BadMac);
    }
    if !datagram.iter().copied().all(is_base64_char) || datagram.starts_with(SALTED_B64) {
        return Err(Rejection::BadMac);
    }
    let (body, tag_b64) = datagram.split_at(datagram.len() - HMAC_B64_LEN);
    let mut tag = [0_u8; 33];
    if STANDARD_NO_PAD.decode_slice(tag_b64, &mut tag) != Ok(32) {
        return Err(Rejection::BadMac);
    }
    let tag = tag.get(..32).ok_or(Rejection::BadMac)?;
    let mut signed = Vec::with_capacity(SALTED_B64.len() + body.len());
    signed.extend_from_slice(SALTED_B64);
    signed.extend_from_slice(body);

    // Every key is tried (no early exit), so the time taken does not tell which one matched.
    let matching: Vec<&FwknopKey> = keys
        .iter()
        .filter(|k| k.usable())
        .filter(|k| {
            let mac = hmac::Key::new(hmac::HMAC_SHA256, &k.hmac_key);
            hmac::verify(&mac, &signed, tag).is_ok()
        })
        .collect();
    if matching.is_empty() {
        return Err(Rejection::BadMac);
    }
    let raw = STANDARD_NO_PAD
        .decode(&signed)
        .map_err(|_| Rejection::BadMac)?;

    // Two clients could share an HMAC key: the first whose key also decrypts wins.
    let mut why = Rejection::BadMac;
    for key in matching {
        let Some(plain) = decrypt(&key.key, &raw) else {
            continue;
        };
        match parse(&plain, &key.client) {
            Ok(request) => return Ok(request),
            Err(e) => {
                if e != Rejection::BadMac {
                    why = e;
                }
            }
        }
    }
    Err(why)
}

/// A packet for fwknopd: `username` (what fwknopd's REQUIRE_USERNAME checks) asks to open
/// `ports` for `open_for` (`0.0.0.0`: "the packet's source", fwknop's `-s`), for
/// `client_timeout` seconds (`None` or `Some(0)`: fwknopd's configured default), stamped
/// `now_unix`. The salt and the 16 random digits come from the system's random source.
///
/// # Panics
/// When [`try_encode`] refuses the arguments: an empty `ports`, a port 0, an IPv6
/// `open_for`, a username fwknop would refuse, a timeout over [`MAX_CLIENT_TIMEOUT`], a
/// time outside 0..=u32::MAX, keys of impossible lengths, or no randomness. Callers with
/// arguments from a user call [`try_encode`].
pub fn encode(
    key: &FwknopKey,
    username: &str,
    open_for: IpAddr,
    ports: &[PortProto],
    client_timeout: Option<u32>,
    now_unix: i64,
) -> Vec<u8> {
    try_encode(key, username, open_for, ports, client_timeout, now_unix)
        .unwrap_or_else(|e| panic!("fwknop::encode: {e}"))
}

/// [`encode`], refusing what fwknopd would refuse (or could not be written) instead of
/// panicking.
pub fn try_encode(
    key: &FwknopKey,
    username: &str,
    open_for: IpAddr,
    ports: &[PortProto],
    client_timeout: Option<u32>,
    now_unix: i64,
) -> Result<Vec<u8>, GuardError> {
    let bad = |why: String| Err(GuardError::Config(format!("fwknop packet: {why}")));
    if !key.usable() {
        return bad(format!(
            "client {}'s keys have impossible lengths ({} and {} bytes)",
            portolan_core::escape::for_terminal(&key.client),
            key.key.len(),
            key.hmac_key.len()
        ));
    }
    let IpAddr::V4(addr) = open_for else {
        return bad(format!(
            "fwknop's access message carries an IPv4 address only, not {open_for}"
        ));
    };
    if ports.is_empty() {
        return bad("no ports to open".to_owned());
    }
    if ports.iter().any(|p| p.port == 0) {
        return bad("port 0 cannot be opened".to_owned());
    }
    if !valid_username(username.as_bytes())
        || base64::encoded_len(username.len(), false) > Some(MAX_USER_B64)
    {
        return bad(format!(
            "user name {:?} is not one fwknop accepts (1 to 48 printable ASCII characters, none of \" / \\ [ ] : ; | = , + * ? < >)",
            portolan_core::escape::for_terminal(username)
        ));
    }
    let timeout = client_timeout.filter(|&t| t > 0);
    if timeout.is_some_and(|t| t > MAX_CLIENT_TIMEOUT) {
        return bad(format!(
            "a client timeout of at most {MAX_CLIENT_TIMEOUT} s, not {}",
            timeout.unwrap_or_default()
        ));
    }
    let Ok(stamp) = u32::try_from(now_unix) else {
        return bad(format!(
            "the time {now_unix} does not fit fwknop's unsigned 32-bit timestamp"
        ));
    };

    let mut message = addr.to_string();
    for p in ports {
        let _ = write!(message, ",{}/{}", p.proto.as_str(), p.port);
    }
    let message_b64 = STANDARD_NO_PAD.encode(&message);
    if message_b64.len() > MAX_MESSAGE_B64 {
        return bad(format!(
            "too many ports for one packet ({} asked for)",
            ports.len()
        ));
    }

    let rng = SystemRandom::new();
    let rand = random_digits(&rng)?;
    let msg_type = if timeout.is_some() {
        CLIENT_TIMEOUT_ACCESS_MSG
    } else {
        ACCESS_MSG
    };
    let mut encoded = format!(
        "{rand}:{}:{stamp}:{FKO_VERSION}:{msg_type}:{message_b64}",
        STANDARD_NO_PAD.encode(username)
    );
    if let Some(t) = timeout {
        let _ = write!(encoded, ":{t}");
    }
    let digest = STANDARD_NO_PAD.encode(digest::digest(&digest::SHA256, encoded.as_bytes()));
    let plain = format!("{encoded}:{digest}");
    let mut salt = [0_u8; SALT_LEN];
    rng.fill(&mut salt)
        .map_err(|_| GuardError::Config("fwknop packet: no randomness for the salt".into()))?;
    let packet = seal(key, plain.as_bytes(), salt)?;
    if packet.len() > MAX_DATAGRAM {
        return bad(format!(
            "{} bytes, over fwknop's {MAX_DATAGRAM}",
            packet.len()
        ));
    }
    Ok(packet)
}

/// fwknop's encryption and HMAC around any `plaintext` with a given salt: the datagram
/// [`decode`] reads. For tests and the fuzz target, which reach the authenticated parser
/// with it; packets for fwknopd come from [`encode`].
#[doc(hidden)]
pub fn seal_plaintext(
    key: &FwknopKey,
    plaintext: &[u8],
    salt: [u8; 8],
) -> Result<Vec<u8>, GuardError> {
    seal(key, plaintext, salt)
}

/// Encrypts and authenticates `plain` as fwknop does; the datagram (prefix cut, HMAC
/// appended). Takes any plaintext: the tests make hostile ones with it.
fn seal(key: &FwknopKey, plain: &[u8], salt: [u8; SALT_LEN]) -> Result<Vec<u8>, GuardError> {
    let (aes_key, iv) = derive(&key.key, &salt);
    let mut buf = vec![0_u8; plain.len() + BLOCK];
    buf.get_mut(..plain.len())
        .ok_or_else(|| GuardError::Config("fwknop packet: buffer".into()))?
        .copy_from_slice(plain);
    let ct = Aes256CbcEnc::new(&aes_key.into(), &iv.into())
        .encrypt_padded_mut::<Pkcs7>(&mut buf, plain.len())
        .map_err(|_| GuardError::Config("fwknop packet: padding".into()))?;
    let mut raw = Vec::with_capacity(SALTED.len() + SALT_LEN + ct.len());
    raw.extend_from_slice(SALTED);
    raw.extend_from_slice(&salt);
    raw.extend_from_slice(ct);
    let text = STANDARD_NO_PAD.encode(&raw);
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key.hmac_key),
        text.as_bytes(),
    );
    let mut out = text
        .as_bytes()
        .strip_prefix(SALTED_B64)
        .ok_or_else(|| GuardError::Config("fwknop packet: prefix".into()))?
        .to_vec();
    out.extend_from_slice(STANDARD_NO_PAD.encode(mac.as_ref()).as_bytes());
    Ok(out)
}

/// 16 decimal digits, each uniform (bytes of 250 and over are drawn again).
fn random_digits(rng: &SystemRandom) -> Result<String, GuardError> {
    let mut digits = String::with_capacity(RAND_LEN);
    let mut bytes = [0_u8; 32];
    while digits.len() < RAND_LEN {
        rng.fill(&mut bytes)
            .map_err(|_| GuardError::Config("fwknop packet: no randomness".into()))?;
        for b in bytes {
            if b < 250 && digits.len() < RAND_LEN {
                digits.push(char::from(b'0' + b % 10));
            }
        }
    }
    Ok(digits)
}

/// OpenSSL's `EVP_BytesToKey(MD5, count 1)`: the AES-256 key and the IV from the
/// passphrase (the raw key bytes) and the salt.
fn derive(pass: &[u8], salt: &[u8]) -> ([u8; 32], [u8; 16]) {
    let mut blocks = [[0_u8; 16]; 3];
    let mut prev: Option<[u8; 16]> = None;
    for block in &mut blocks {
        let mut h = md5::Md5::new();
        if let Some(p) = prev {
            h.update(p);
        }
        h.update(pass);
        h.update(salt);
        *block = h.finalize().into();
        prev = Some(*block);
    }
    let [a, b, iv] = blocks;
    let mut key = [0_u8; 32];
    let (k1, k2) = key.split_at_mut(16);
    k1.copy_from_slice(&a);
    k2.copy_from_slice(&b);
    (key, iv)
}

/// `"Salted__" || salt || blocks` decrypted with `pass`, padding checked; `None` when any
/// of it is wrong.
fn decrypt(pass: &[u8], raw: &[u8]) -> Option<Vec<u8>> {
    let rest = raw.strip_prefix(SALTED)?;
    if rest.len() < SALT_LEN + BLOCK || !(rest.len() - SALT_LEN).is_multiple_of(BLOCK) {
        return None;
    }
    let (salt, ct) = rest.split_at(SALT_LEN);
    let (aes_key, iv) = derive(pass, salt);
    let mut buf = ct.to_vec();
    let plain = Aes256CbcDec::new(&aes_key.into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut buf)
        .ok()?;
    Some(plain.to_vec())
}

/// The decrypted plaintext, checked field by field, as a request of `client`.
fn parse(plain: &[u8], client: &str) -> Result<Request, Rejection> {
    const BAD: Rejection = Rejection::BadMac;
    if !(MIN_PLAINTEXT..=MAX_PLAINTEXT).contains(&plain.len())
        || !plain.iter().all(|b| (0x20..=0x7e).contains(b))
    {
        return Err(BAD);
    }
    let text = std::str::from_utf8(plain).map_err(|_| BAD)?;
    let (encoded, digest_b64) = text.rsplit_once(':').ok_or(BAD)?;
    if !digest_matches(encoded, digest_b64) {
        return Err(BAD);
    }

    let fields: Vec<&str> = encoded.split(':').collect();
    let [rand, user, stamp, version, msg_type, message, rest @ ..] = fields.as_slice() else {
        return Err(BAD);
    };
    if rand.len() != RAND_LEN || !all_digits(rand) {
        return Err(BAD);
    }
    if user.len() > MAX_USER_B64 || !valid_username(&b64_field(user)?) {
        return Err(BAD);
    }
    if stamp.len() > MAX_TIMESTAMP_LEN || !all_digits(stamp) {
        return Err(BAD);
    }
    let timestamp: i64 = stamp.parse().map_err(|_| BAD)?;
    if version.is_empty()
        || version.len() > MAX_VERSION_LEN
        || !version.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(BAD);
    }
    if msg_type.len() > 2 || !all_digits(msg_type) {
        return Err(BAD);
    }
    let msg_type: u8 = msg_type.parse().map_err(|_| BAD)?;
    if message.len() > MAX_MESSAGE_B64 {
        return Err(BAD);
    }
    let message = b64_field(message)?;

    // What follows the message, by type: [nat] [server_auth] [timeout].
    let (nat, timed) = match msg_type {
        COMMAND_MSG | ACCESS_MSG => (false, false),
        NAT_ACCESS_MSG | LOCAL_NAT_ACCESS_MSG => (true, false),
        CLIENT_TIMEOUT_ACCESS_MSG => (false, true),
        CLIENT_TIMEOUT_NAT_ACCESS_MSG | CLIENT_TIMEOUT_LOCAL_NAT_ACCESS_MSG => (true, true),
        _ => return Err(BAD),
    };
    let mut rest = rest.iter();
    let nat_field = if nat {
        Some(rest.next().ok_or(BAD)?)
    } else {
        None
    };
    let timeout_field = if timed {
        Some(rest.next_back().ok_or(BAD)?)
    } else {
        None
    };
    // fwknop's optional server_auth: parsed (it must be base64) but, like fwknopd, unused.
    if let Some(auth) = rest.next() {
        if auth.len() > MAX_MESSAGE_B64 {
            return Err(BAD);
        }
        b64_field(auth)?;
    }
    if rest.next().is_some() {
        return Err(BAD);
    }
    if let Some(n) = nat_field {
        if n.len() > MAX_MESSAGE_B64 {
            return Err(BAD);
        }
        b64_field(n)?;
    }
    let duration = match timeout_field {
        None => None,
        Some(t) => {
            if t.len() > 5 || !all_digits(t) {
                return Err(BAD);
            }
            let secs: u32 = t.parse().map_err(|_| BAD)?;
            if secs > MAX_CLIENT_TIMEOUT {
                return Err(BAD);
            }
            (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
        }
    };

    if msg_type == COMMAND_MSG {
        // "IP,command": portolan runs no commands.
        return Err(Rejection::NotAllowed);
    }
    let (ip, ports) = access_message(&message)?;
    if nat {
        // Forwarding to another host or port: not something portolan grants.
        return Err(Rejection::NotAllowed);
    }
    Ok(Request {
        client: client.to_owned(),
        open_for: (!ip.is_unspecified()).then_some(IpAddr::V4(ip)),
        ports,
        duration,
        timestamp,
        replay_key: digest::digest(&digest::SHA256, plain)
            .as_ref()
            .try_into()
            .map_err(|_| BAD)?,
    })
}

/// `IP,proto/port[,proto/port...]`; `icmp` and `none` (which fwknop also writes) are
/// well-formed but not grantable: [`Rejection::NotAllowed`].
fn access_message(message: &[u8]) -> Result<(Ipv4Addr, Vec<PortProto>), Rejection> {
    const BAD: Rejection = Rejection::BadMac;
    let message = std::str::from_utf8(message).map_err(|_| BAD)?;
    let mut parts = message.split(',');
    let ip = parts.next().ok_or(BAD)?;
    if !(7..=15).contains(&ip.len()) || !ip.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(BAD);
    }
    let ip: Ipv4Addr = ip.parse().map_err(|_| BAD)?;
    let mut ports = Vec::new();
    let mut unsupported = false;
    for spec in parts {
        let (proto, port) = spec.split_once('/').ok_or(BAD)?;
        if port.is_empty() || port.len() > 5 || !all_digits(port) {
            return Err(BAD);
        }
        let port: u16 = port.parse().map_err(|_| BAD)?;
        if port == 0 {
            return Err(BAD);
        }
        let proto = match proto {
            "tcp" => L4::Tcp,
            "udp" => L4::Udp,
            "icmp" | "none" => {
                unsupported = true;
                continue;
            }
            _ => return Err(BAD),
        };
        let p = PortProto { proto, port };
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    if unsupported {
        return Err(Rejection::NotAllowed);
    }
    if ports.is_empty() {
        return Err(BAD);
    }
    Ok((ip, ports))
}

/// Whether `digest_b64` is the digest of `encoded` of the type its length names.
fn digest_matches(encoded: &str, digest_b64: &str) -> bool {
    let data = encoded.as_bytes();
    let computed = match digest_b64.len() {
        22 => STANDARD_NO_PAD.encode(md5::Md5::digest(data)),
        27 => STANDARD_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)),
        43 => STANDARD_NO_PAD.encode(digest::digest(&digest::SHA256, data)),
        64 => STANDARD_NO_PAD.encode(digest::digest(&digest::SHA384, data)),
        86 => STANDARD_NO_PAD.encode(digest::digest(&digest::SHA512, data)),
        // SHA3 (fwknop's -m sha3_256/sha3_512) is not spoken.
        _ => return false,
    };
    // Already authenticated by the HMAC: no secret to leak by timing here.
    computed == digest_b64
}

/// An inner base64 field (no `=`, canonical), non-empty.
fn b64_field(field: &str) -> Result<Vec<u8>, Rejection> {
    if field.is_empty() {
        return Err(Rejection::BadMac);
    }
    let bytes = STANDARD_NO_PAD
        .decode(field)
        .map_err(|_| Rejection::BadMac)?;
    if bytes.is_empty() {
        return Err(Rejection::BadMac);
    }
    Ok(bytes)
}

/// fwknop's user-name rule: 1 or more characters, each alphanumeric or printable ASCII
/// other than `" / \ [ ] : ; | = , + * ? < >`.
fn valid_username(user: &[u8]) -> bool {
    !user.is_empty()
        && user.iter().all(|&c| {
            c.is_ascii_alphanumeric()
                || ((0x20..=0x7e).contains(&c) && !b"\"/\\[]:;|=,+*?<>".contains(&c))
        })
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys printed by the real `fwknop --key-gen` (2.6.10).
    const KEY: &str = "4uTP47WN7i1akeI52SgUyCr2WCGb9Zn6qk6lPahALZs=";
    const HMAC_KEY: &str =
        "tAeqIukZOHMMCZi8msjQjmbJIyB6+o4kVWK515qXnnuuHXgNfyDicguCH4NOIBnh9trd2Q0vfdGYuLXTcSYtlA==";
    /// What the real `fwknop -A tcp/22 -a 198.18.0.2 --use-hmac --save-packet` (2.6.10,
    /// user root) wrote with those keys.
    const REAL_PACKET: &str = "+UfGcjm3rcBhGhmVfNLvfpBLnlLFhrfRqTXF3xNEhRaT8ioudARuf9BEkytfova11Xf40ZAMc+HW9wCBgWwhJRieMR7rYNy9Wmf3SepSZ+xPMD0R4hjmloFtl9a1G1X71EpPmcbI9QeE8/X4mByZ6OtxsJGWvSA0AGzICQmq+mIPBfqnybWi73YQ7lGehzDJIeRoxM+uMUcc";
    const NOW: i64 = 1_796_410_221;

    fn key() -> FwknopKey {
        FwknopKey::from_base64("alice", KEY, HMAC_KEY).unwrap()
    }

    fn other_key() -> FwknopKey {
        FwknopKey {
            client: "mallory".into(),
            key: vec![7; 32],
            hmac_key: vec![9; 64],
        }
    }

    fn b64(s: &str) -> String {
        STANDARD_NO_PAD.encode(s)
    }

    /// `encoded` with its SHA-256 digest appended, sealed with `key()`.
    fn sealed(encoded: &str) -> Vec<u8> {
        let digest = STANDARD_NO_PAD.encode(digest::digest(&digest::SHA256, encoded.as_bytes()));
        seal(&key(), format!("{encoded}:{digest}").as_bytes(), [1; 8]).unwrap()
    }

    fn access(message: &str) -> String {
        format!(
            "1234567890123456:{}:{NOW}:3.0.0:1:{}",
            b64("root"),
            b64(message)
        )
    }

    #[test]
    fn the_real_clients_packet_decodes() {
        let r = decode(REAL_PACKET.as_bytes(), &[other_key(), key()]).unwrap();
        assert_eq!(r.client, "alice");
        assert_eq!(r.open_for, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(r.ports, vec![PortProto::tcp(22)]);
        assert_eq!(r.duration, None);
        assert_eq!(r.timestamp, NOW);
    }

    #[test]
    fn key_derivation_is_openssls() {
        // `openssl enc -aes-256-cbc -md md5 -S 0102030405060708 -pass pass:secret -P`
        let (k, iv) = derive(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8]);
        let hex = |b: &[u8]| {
            b.iter().fold(String::new(), |mut s, x| {
                let _ = write!(s, "{x:02X}");
                s
            })
        };
        assert_eq!(
            hex(&k),
            "C9E5A1BD216DBE1317E230CEF48F38EE7F0E17AD64022144BCCEC4A1AA2879AB"
        );
        assert_eq!(hex(&iv), "E24B32BBBC4EF02ECBCB6576523AD893");
    }

    #[test]
    fn round_trip() {
        let k = key();
        let ports = [PortProto::tcp(22), PortProto::udp(53), PortProto::tcp(8443)];
        let p = encode(&k, "root", "198.18.0.9".parse().unwrap(), &ports, None, NOW);
        assert!(!p.starts_with(SALTED_B64));
        let r = decode(&p, std::slice::from_ref(&k)).unwrap();
        assert_eq!(r.client, "alice");
        assert_eq!(r.open_for, Some("198.18.0.9".parse().unwrap()));
        assert_eq!(r.ports, ports);
        assert_eq!(r.duration, None);
        assert_eq!(r.timestamp, NOW);

        let p2 = encode(
            &k,
            "root",
            Ipv4Addr::UNSPECIFIED.into(),
            &ports[..1],
            Some(45),
            NOW,
        );
        let r2 = decode(&p2, std::slice::from_ref(&k)).unwrap();
        assert_eq!(r2.open_for, None);
        assert_eq!(r2.duration, Some(Duration::from_secs(45)));
        assert_ne!(r.replay_key, r2.replay_key);
        // The same request twice: two different packets (salt, random digits).
        let p3 = encode(&k, "root", "198.18.0.9".parse().unwrap(), &ports, None, NOW);
        assert_ne!(p, p3);
        assert_ne!(decode(&p3, &[k]).unwrap().replay_key, r.replay_key);
    }

    #[test]
    fn encode_refuses_what_fwknopd_would() {
        let k = key();
        let ip: IpAddr = "198.18.0.9".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(try_encode(&k, "root", v6, &[PortProto::tcp(22)], None, NOW).is_err());
        assert!(try_encode(&k, "root", ip, &[], None, NOW).is_err());
        assert!(try_encode(&k, "root", ip, &[PortProto::tcp(0)], None, NOW).is_err());
        for user in ["", "a:b", "a,b", "é", &"u".repeat(49)] {
            assert!(
                try_encode(&k, user, ip, &[PortProto::tcp(22)], None, NOW).is_err(),
                "{user}"
            );
        }
        assert!(try_encode(&k, &"u".repeat(48), ip, &[PortProto::tcp(22)], None, NOW).is_ok());
        assert!(try_encode(&k, "root", ip, &[PortProto::tcp(22)], Some(65_537), NOW).is_err());
        assert!(try_encode(&k, "root", ip, &[PortProto::tcp(22)], None, -1).is_err());
        assert!(try_encode(&k, "root", ip, &[PortProto::tcp(22)], None, 1 << 33).is_err());
        let many: Vec<PortProto> = (1..=40).map(PortProto::tcp).collect();
        assert!(try_encode(&k, "root", ip, &many, None, NOW).is_err());
        let bad_key = FwknopKey {
            key: vec![1; 33],
            ..key()
        };
        assert!(try_encode(&bad_key, "root", ip, &[PortProto::tcp(22)], None, NOW).is_err());
        // Some(0) is "no timeout", as in fwknop.
        let p = encode(&k, "root", ip, &[PortProto::tcp(22)], Some(0), NOW);
        assert_eq!(decode(&p, &[k]).unwrap().duration, None);
    }

    #[test]
    fn keys_from_base64() {
        let k = key();
        assert_eq!(k.key.len(), 32);
        assert_eq!(k.hmac_key.len(), 64);
        // Without the `=` and with whitespace around: the same keys.
        let k2 = FwknopKey::from_base64(
            "alice",
            &format!(" {}\n", KEY.trim_end_matches('=')),
            HMAC_KEY.trim_end_matches('='),
        )
        .unwrap();
        assert_eq!(k, k2);
        let err = |k: &str, h: &str| FwknopKey::from_base64("bob", k, h).unwrap_err().to_string();
        assert!(err("", HMAC_KEY).contains("KEY_BASE64 is empty"));
        assert!(err(KEY, "  ").contains("HMAC_KEY_BASE64 is empty"));
        assert!(err("not*base64", HMAC_KEY).contains("KEY_BASE64 is not base64"));
        let long = STANDARD_NO_PAD.encode([1_u8; 33]);
        assert!(err(&long, HMAC_KEY).contains("decodes to 33 bytes; fwknop takes 1 to 32"));
        let long = STANDARD_NO_PAD.encode([1_u8; 129]);
        assert!(err(KEY, &long).contains("HMAC_KEY_BASE64 decodes to 129 bytes"));
        // Debug never shows the keys.
        let dbg = format!("{k:?}");
        assert!(dbg.contains("alice") && dbg.contains("<32 bytes>"), "{dbg}");
        assert!(!dbg.contains("226"), "{dbg}");
    }

    #[test]
    fn hostile_datagrams_are_refused() {
        let keys = [key()];
        let good = REAL_PACKET.as_bytes();
        let refused = |d: &[u8]| decode(d, &keys) == Err(Rejection::BadMac);
        assert!(refused(b""));
        assert!(refused(&[b'A'; 2000]));
        assert!(refused(&[b'A'; MAX_DATAGRAM]));
        assert!(refused(&vec![0xff; 300]));
        // Bad base64: a foreign character, padding, a newline, a NUL.
        for (at, c) in [(5, b'!'), (40, b'='), (good.len() - 1, b'\n'), (0, 0)] {
            let mut d = good.to_vec();
            d[at] = c;
            assert!(refused(&d), "{at} {c}");
        }
        let mut d = good.to_vec();
        d.push(b'\n');
        assert!(refused(&d), "a trailing newline");
        // Truncated anywhere, or grown.
        for n in [1, 10, 43, 44, 100, good.len() - 1] {
            assert!(refused(&good[..n]), "first {n}");
            assert!(refused(&good[n..]), "from {n}");
        }
        let mut d = good.to_vec();
        d.extend_from_slice(b"AAAA");
        assert!(refused(&d));
        // Every single character changed: the HMAC, the ciphertext, the salt.
        for at in 0..good.len() {
            let mut d = good.to_vec();
            d[at] = if d[at] == b'A' { b'B' } else { b'A' };
            assert!(refused(&d), "flipped {at}");
        }
        // The stripped prefix put back (fwknopd refuses it too).
        let mut d = SALTED_B64.to_vec();
        d.extend_from_slice(good);
        assert!(refused(&d));
        // The wrong keys, no keys, unusable keys.
        assert_eq!(decode(good, &[other_key()]), Err(Rejection::BadMac));
        assert_eq!(decode(good, &[]), Err(Rejection::BadMac));
        let right_hmac_wrong_key = FwknopKey {
            key: vec![7; 32],
            ..key()
        };
        assert_eq!(
            decode(good, &[right_hmac_wrong_key]),
            Err(Rejection::BadMac)
        );
        let empty_hmac = FwknopKey {
            hmac_key: Vec::new(),
            ..key()
        };
        assert_eq!(decode(good, &[empty_hmac]), Err(Rejection::BadMac));
    }

    #[test]
    fn authenticated_nonsense_is_refused() {
        let keys = [key()];
        let user = b64("root");
        let digest_of =
            |e: &str| STANDARD_NO_PAD.encode(digest::digest(&digest::SHA256, e.as_bytes()));
        let seal_raw = |plain: &[u8]| seal(&key(), plain, [2; 8]).unwrap();
        // Sanity: the helper makes a good packet.
        assert!(decode(&sealed(&access("198.18.0.2,tcp/22")), &keys).is_ok());

        // Not UTF-8, not printable, too short.
        let mut plain = access("198.18.0.2,tcp/22").into_bytes();
        plain[3] = 0xc3;
        assert_eq!(decode(&seal_raw(&plain), &keys), Err(Rejection::BadMac));
        plain[3] = b'\n';
        assert_eq!(decode(&seal_raw(&plain), &keys), Err(Rejection::BadMac));
        assert_eq!(decode(&seal_raw(b"x"), &keys), Err(Rejection::BadMac));
        assert_eq!(decode(&seal_raw(b""), &keys), Err(Rejection::BadMac));
        // No digest, a wrong digest, a digest of another type's length.
        let e = access("198.18.0.2,tcp/22");
        assert_eq!(
            decode(&seal_raw(e.as_bytes()), &keys),
            Err(Rejection::BadMac)
        );
        let wrong = format!("{e}:{}", digest_of("something else"));
        assert_eq!(
            decode(&seal_raw(wrong.as_bytes()), &keys),
            Err(Rejection::BadMac)
        );
        let short = format!("{e}:{}", &digest_of(&e)[..30]);
        assert_eq!(
            decode(&seal_raw(short.as_bytes()), &keys),
            Err(Rejection::BadMac)
        );

        let bad = [
            // missing fields
            format!("1234567890123456:{user}:{NOW}:3.0.0:1"),
            format!("1234567890123456:{user}:{NOW}:3.0.0"),
            format!(
                "1234567890123456:{user}:{NOW}:3.0.0:3:{}",
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "1234567890123456:{user}:{NOW}:3.0.0:2:{}",
                b64("1.2.3.4,tcp/22")
            ),
            // empty and extra fields
            format!("1234567890123456::{NOW}:3.0.0:1:{}", b64("1.2.3.4,tcp/22")),
            format!("{}:{}:{}", access("1.2.3.4,tcp/22"), b64("a"), b64("b")),
            format!("{}::", access("1.2.3.4,tcp/22")),
            // random digits, user, timestamp, version, type
            format!(
                "123456789012345:{user}:{NOW}:3.0.0:1:{}",
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "123456789012345x:{user}:{NOW}:3.0.0:1:{}",
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "1234567890123456:{}:{NOW}:3.0.0:1:{}",
                b64("a:b"),
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "1234567890123456:r!!t:{NOW}:3.0.0:1:{}",
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "1234567890123456:{user}:-5:3.0.0:1:{}",
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "1234567890123456:{user}:9999999999999:3.0.0:1:{}",
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "1234567890123456:{user}:{NOW}:3.0.0x:1:{}",
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "1234567890123456:{user}:{NOW}:3.0.0:7:{}",
                b64("1.2.3.4,tcp/22")
            ),
            format!(
                "1234567890123456:{user}:{NOW}:3.0.0:01x:{}",
                b64("1.2.3.4,tcp/22")
            ),
            // the message's base64
            format!(
                "1234567890123456:{user}:{NOW}:3.0.0:1:{}=",
                b64("1.2.3.4,tcp/22")
            ),
            format!("1234567890123456:{user}:{NOW}:3.0.0:1:{}", "A".repeat(300)),
            // timeouts
            format!("{}:{}", access("1.2.3.4,tcp/22").replace(":1:", ":3:"), "x"),
            format!(
                "{}:{}",
                access("1.2.3.4,tcp/22").replace(":1:", ":3:"),
                "65537"
            ),
            format!(
                "{}:{}",
                access("1.2.3.4,tcp/22").replace(":1:", ":3:"),
                "-1"
            ),
        ];
        for e in &bad {
            assert_eq!(decode(&sealed(e), &keys), Err(Rejection::BadMac), "{e}");
        }

        // Access messages: addresses and ports.
        for m in [
            "",
            "1.2.3.4",
            "1.2.3.4,",
            "1.2.3.4,tcp",
            "1.2.3.4,tcp/",
            "1.2.3.4,tcp/0",
            "1.2.3.4,tcp/65536",
            "1.2.3.4,tcp/99999999",
            "1.2.3.4,tcp/-1",
            "1.2.3.4,tcp/+22",
            "1.2.3.4,tcp/22,",
            "1.2.3.4,TCP/22",
            "1.2.3.4,sctp/22",
            "1.2.3.4,22/tcp",
            "1.2.3.4.5,tcp/22",
            "1.2.3.256,tcp/22",
            "01.2.3.4,tcp/22",
            "::1,tcp/22",
            "host.example,tcp/22",
            ",tcp/22",
        ] {
            assert_eq!(
                decode(&sealed(&access(m)), &keys),
                Err(Rejection::BadMac),
                "{m}"
            );
        }
        // Well-formed but not grantable.
        for m in ["1.2.3.4,icmp/0", "1.2.3.4,tcp/22,none/0"] {
            let m = m.replace("/0", "/1");
            assert_eq!(
                decode(&sealed(&access(&m)), &keys),
                Err(Rejection::NotAllowed),
                "{m}"
            );
        }
        let command = format!(
            "1234567890123456:{user}:{NOW}:3.0.0:0:{}",
            b64("1.2.3.4,reboot")
        );
        assert_eq!(decode(&sealed(&command), &keys), Err(Rejection::NotAllowed));
        let nat = format!(
            "1234567890123456:{user}:{NOW}:3.0.0:2:{}:{}",
            b64("1.2.3.4,tcp/22"),
            b64("10.0.0.2,22")
        );
        assert_eq!(decode(&sealed(&nat), &keys), Err(Rejection::NotAllowed));
    }

    #[test]
    fn optional_fields_and_digest_types() {
        let keys = [key()];
        // server_auth (ignored), then a timeout.
        let e = format!("{}:{}", access("0.0.0.0,udp/53"), b64("crypt,secret"));
        let r = decode(&sealed(&e), &keys).unwrap();
        assert_eq!(
            (r.open_for, r.ports, r.duration),
            (None, vec![PortProto::udp(53)], None)
        );
        let e = format!(
            "{}:{}:120",
            access("198.18.1.1,tcp/22").replace(":1:", ":3:"),
            b64("crypt,secret")
        );
        let r = decode(&sealed(&e), &keys).unwrap();
        assert_eq!(r.duration, Some(Duration::from_secs(120)));
        // Duplicate ports are asked once.
        let r = decode(&sealed(&access("1.2.3.4,tcp/22,tcp/22,udp/22")), &keys).unwrap();
        assert_eq!(r.ports, vec![PortProto::tcp(22), PortProto::udp(22)]);
        // fwknop's -m md5 / sha1 / sha384 / sha512 digests.
        let e = access("198.18.0.2,tcp/22");
        let digests = [
            STANDARD_NO_PAD.encode(md5::Md5::digest(e.as_bytes())),
            STANDARD_NO_PAD.encode(digest::digest(
                &digest::SHA1_FOR_LEGACY_USE_ONLY,
                e.as_bytes(),
            )),
            STANDARD_NO_PAD.encode(digest::digest(&digest::SHA384, e.as_bytes())),
            STANDARD_NO_PAD.encode(digest::digest(&digest::SHA512, e.as_bytes())),
        ];
        for d in digests {
            let p = seal(&key(), format!("{e}:{d}").as_bytes(), [3; 8]).unwrap();
            assert!(decode(&p, &keys).is_ok(), "{}", d.len());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap stand-in for the fuzz target: many lengths and mutations of a real packet.
        let keys = [key()];
        let good = REAL_PACKET.as_bytes();
        let mut x: u32 = 0x1234_5678;
        for round in 0_u32..3000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let mut d = good.to_vec();
            let at = (x as usize) % d.len();
            d[at] = x.to_le_bytes()[1];
            d.truncate(((x >> 16) as usize) % (good.len() + 1));
            if round % 3 == 0 {
                d = d
                    .iter()
                    .map(|b| b.wrapping_add(round.to_le_bytes()[0]))
                    .collect();
            }
            let _ = decode(&d, &keys);
        }
    }
}
