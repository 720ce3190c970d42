//! Reading the files the audit judges with: a policy (`--policy`) and a scan from elsewhere
//! (`--from-scan`). The one place this crate touches the file system, so every command that
//! takes a policy (audit, firewall, watch) reads it the same way.

use std::io::Read as _;
use std::path::Path;

use portolan_core::escape::{file_kind, path_for_terminal};

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
    #[error("cannot read {file}: not a regular file ({kind}); give the path of a file")]
    NotAFile { file: String, kind: &'static str },
    #[error("cannot read {file}: it is {size}, more than the limit of {limit} ({} MiB)", limit >> 20)]
    TooLarge {
        file: String,
        /// `N bytes`, or what was read when it grew while being read.
        size: String,
        limit: u64,
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
    path_for_terminal(path)
}

/// The text of `path`, at most [`MAX_INPUT_BYTES`]. Only a regular file is read: the path
/// is opened without blocking (a FIFO with no writer would wait forever) and its type
/// checked on the open descriptor before any byte is read; a file over the limit is
/// refused by its size, and one that grows past it while being read stops at limit + 1
/// bytes.
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    use rustix::fs::{Mode, OFlags};
    let open_err = |source: std::io::Error| LoadError::Open {
        file: shown(path),
        source,
    };
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| open_err(e.into()))?;
    let f = std::fs::File::from(fd);
    let meta = f.metadata().map_err(open_err)?;
    if !meta.is_file() {
        return Err(LoadError::NotAFile {
            file: shown(path),
            kind: file_kind(meta.file_type()),
        });
    }
    let too_large = |size| LoadError::TooLarge {
        file: shown(path),
        size,
        limit: MAX_INPUT_BYTES,
    };
    if meta.len() > MAX_INPUT_BYTES {
        return Err(too_large(format!("{} bytes", meta.len())));
    }
    let mut bytes = Vec::new();
    f.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| LoadError::Read {
            file: shown(path),
            source,
        })?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(too_large(format!(
            "at least {} bytes (it grew while being read)",
            MAX_INPUT_BYTES + 1
        )));
    }
    String::from_utf8(bytes).map_err(|e| LoadError::Read {
        file: shown(path),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

impl Policy {
    /// Reads and parses the policy file at `path` (named in errors as the user gave it).
    pub fn load(path: &Path) -> Result<Policy, LoadError> {
        let text = read_text(path)?;
        Ok(Policy::parse(&shown(path), &text)?)
    }
}
