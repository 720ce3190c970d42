//! Reading the files the audit judges with: a policy (`--policy`) and a scan from elsewhere
//! (`--from-scan`). The one place this crate touches the file system, so every command that
//! takes a policy (audit, firewall, watch) reads it the same way.

use std::io::Read as _;
use std::path::Path;

use portolan_core::escape::bytes_for_terminal;

use crate::policy::{Policy, PolicyError};

/// Largest file read as a policy or a scan, in bytes.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

/// A file that could not be read, or a policy that did not parse.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {file}: {source}")]
    Open {
        file: String,
        source: std::io::Error,
    },
    #[error("cannot read {file} as UTF-8 text: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// The path as a person reads it (escaped for a terminal).
pub fn shown(path: &Path) -> String {
    bytes_for_terminal(path.as_os_str().as_encoded_bytes())
}

/// The text of `path`, at most [`MAX_INPUT_BYTES`].
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    let f = std::fs::File::open(path).map_err(|source| LoadError::Open {
        file: shown(path),
        source,
    })?;
    let mut text = String::new();
    f.take(MAX_INPUT_BYTES)
        .read_to_string(&mut text)
        .map_err(|source| LoadError::Read {
            file: shown(path),
            source,
        })?;
    Ok(text)
}

impl Policy {
    /// Reads and parses the policy file at `path` (named in errors as the user gave it).
    pub fn load(path: &Path) -> Result<Policy, LoadError> {
        let text = read_text(path)?;
        Ok(Policy::parse(&shown(path), &text)?)
    }
}
