//! Key material and the files that hold it.
//!
//! Keys are 32 random bytes written as standard base64. A client is either an X25519 key
//! pair (the guard knows its public key; the client knows the guard's public key) or a
//! pre-shared key. Files holding a secret must not be readable by group or others: the
//! guard and the client refuse to read them otherwise, as ssh does.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::GuardError;

/// The longest key file or configuration read (anything longer is not ours).
pub const MAX_FILE: u64 = 1 << 20;

/// 32 bytes from the system's random source.
///
/// # Panics
/// When the system's random source fails (it does not, once Linux has booted).
pub fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    // The system's generator does not fail on Linux once the machine has booted.
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system random source failed");
    b
}

/// A TOML error in one line: where, and what, escaped (a message may quote the input).
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    portolan_core::located(text, e.span(), e.message())
}

/// Standard base64 of `b`.
pub fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

/// Exactly 32 bytes from base64 text, or why not.
pub fn unb64_32(s: &str) -> Result<[u8; 32], String> {
    let bytes = STANDARD
        .decode(s.trim())
        .map_err(|e| format!("not base64 ({e})"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{} bytes where a key has 32", bytes.len()))
}

/// An X25519 public key from a secret.
pub fn public_of(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// How a client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// An X25519 key pair (the default): the guard holds only the client's public key.
    X25519,
    /// A pre-shared key held by both sides.
    Psk,
}

/// The client's key file (`alice.key`): who it is and what it seals packets with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyFile {
    /// The client's name in the guard's configuration.
    pub client: String,
    pub kind: KeyKind,
    /// The client's X25519 secret, or the pre-shared key (base64).
    pub secret: String,
    /// The guard's X25519 public key (base64; X25519 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_public: Option<String>,
    /// The guard's SPA port, when not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spa_port: Option<u16>,
}

/// The guard's own key file (`server.key`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerKeyFile {
    /// The guard's X25519 secret (base64).
    pub secret: String,
}

/// Reads a file that holds a secret: refused when group or others may read or write it,
/// when it is not a regular file, or when it is larger than [`MAX_FILE`].
pub fn read_private(path: &Path) -> Result<String, GuardError> {
    let key_err = |reason: String| GuardError::Key {
        path: portolan_core::escape::for_terminal(&path.display().to_string()).into_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| key_err(e.to_string()))?;
    if !meta.is_file() {
        return Err(key_err("not a regular file".to_owned()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(key_err(format!(
            "readable or writable by others (mode {:04o}); run: chmod 600 {}",
            meta.mode() & 0o7777,
            portolan_core::escape::for_terminal(&path.display().to_string())
        )));
    }
    if meta.len() > MAX_FILE {
        return Err(key_err(format!("{} bytes: too large", meta.len())));
    }
    let bytes = std::fs::read(path).map_err(|e| key_err(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| key_err("not UTF-8 text".to_owned()))
}

/// Writes a new file with mode 0600 (never replaces an existing one).
pub fn write_private(path: &Path, text: &str) -> Result<(), GuardError> {
    let shown = portolan_core::escape::for_terminal(&path.display().to_string()).into_owned();
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| GuardError::io(format!("cannot create {shown}"), e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| GuardError::io(format!("cannot write {shown}"), e))
}

impl ClientKeyFile {
    /// Reads and checks a client key file.
    pub fn load(path: &Path) -> Result<ClientKeyFile, GuardError> {
        let text = read_private(path)?;
        let key_err = |reason: String| GuardError::Key {
            path: portolan_core::escape::for_terminal(&path.display().to_string()).into_owned(),
            reason,
        };
        let f: ClientKeyFile = toml::from_str(&text).map_err(|e| key_err(toml_error(&text, &e)))?;
        unb64_32(&f.secret).map_err(|e| key_err(format!("secret: {e}")))?;
        match (f.kind, &f.server_public) {
            (KeyKind::X25519, None) => {
                return Err(key_err("an x25519 key needs server_public".to_owned()))
            }
            (KeyKind::X25519, Some(p)) => {
                unb64_32(p).map_err(|e| key_err(format!("server_public: {e}")))?;
            }
            (KeyKind::Psk, _) => {}
        }
        Ok(f)
    }

    /// The file's text, with a comment saying what it is.
    pub fn to_text(&self) -> String {
        // Names are checked by the configuration (letters, digits, `.`, `_`, `-`) and keys
        // are base64: nothing here needs TOML escaping beyond the quotes.
        let mut s = format!(
            "# portolan knock key of client {:?}: keep it private (mode 0600).\n\
             client = {:?}\nkind = \"{}\"\nsecret = {:?}\n",
            self.client,
            self.client,
            match self.kind {
                KeyKind::X25519 => "x25519",
                KeyKind::Psk => "psk",
            },
            self.secret
        );
        if let Some(p) = &self.server_public {
            let _ = writeln!(s, "server_public = {p:?}");
        }
        if let Some(p) = self.spa_port {
            let _ = writeln!(s, "spa_port = {p}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn base64_keys() {
        let k = random32();
        assert_eq!(unb64_32(&b64(&k)).unwrap(), k);
        assert!(unb64_32("").is_err());
        assert!(unb64_32("AAAA").unwrap_err().contains("3 bytes"));
        assert!(unb64_32("not base64 at all!").is_err());
        assert_ne!(public_of(&k), k);
    }

    #[test]
    fn private_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("pg-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.key");
        let f = ClientKeyFile {
            client: "alice".into(),
            kind: KeyKind::Psk,
            secret: b64(&random32()),
            server_public: None,
            spa_port: None,
        };
        write_private(&p, &f.to_text()).unwrap();
        assert!(write_private(&p, "x").is_err(), "never replaces a file");
        let back = ClientKeyFile::load(&p).unwrap();
        assert_eq!(back.secret, f.secret);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ClientKeyFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, "client = \"a\"\nkind = \"x25519\"\nsecret = \"AAAA\"\n").unwrap();
        assert!(ClientKeyFile::load(&p).is_err());
        std::fs::write(&p, [0xff, 0xfe, b'\n']).unwrap();
        assert!(ClientKeyFile::load(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
