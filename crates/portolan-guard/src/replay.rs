//! The replay cache: every accepted packet's identity, kept for as long as the packet
//! could still be accepted (its timestamp plus the window), in memory and in a file that
//! survives restarts.
//!
//! The file is append-only text, one `EXPIRY_UNIX_SECONDS HEX_KEY` line per packet,
//! written and synced before the port is opened (so a crash between the two cannot let
//! the packet in twice); it is compacted (expired lines dropped, written to a temporary
//! file and renamed) when loaded and when it has grown to twice its live entries. A line
//! that does not parse is skipped (a torn last line after a crash).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::GuardError;

/// Entries at most: only authenticated packets get here, so this bounds a flood by a
/// client that holds a key.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug)]
pub struct ReplayCache {
    path: Option<PathBuf>,
    file: Option<File>,
    seen: HashMap<[u8; 32], i64>,
    lines: usize,
    /// Live entries when the file was last compacted.
    live_at_compaction: usize,
}

/// What the cache says about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: recorded.
    Fresh,
    /// Seen before.
    Replay,
    /// The cache is full of live entries: refused without recording.
    Full,
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl ReplayCache {
    /// A cache that lives only as long as the process (tests, `--no-state`).
    pub fn in_memory() -> ReplayCache {
        ReplayCache {
            path: None,
            file: None,
            seen: HashMap::new(),
            lines: 0,
            live_at_compaction: 0,
        }
    }

    /// Loads (and compacts) the cache file at `path`, creating it (mode 0600) if needed.
    pub fn open(path: &Path, now: i64) -> Result<ReplayCache, GuardError> {
        let shown = portolan_core::escape::for_terminal(&path.display().to_string()).into_owned();
        let mut seen = HashMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for line in text.lines() {
                    let mut it = line.split_whitespace();
                    let (Some(exp), Some(key), None) = (it.next(), it.next(), it.next()) else {
                        continue;
                    };
                    let (Ok(exp), Some(key)) = (exp.parse::<i64>(), unhex32(key)) else {
                        continue;
                    };
                    if exp > now && seen.len() < MAX_ENTRIES {
                        seen.insert(key, exp);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(GuardError::io(format!("cannot read {shown}"), e)),
        }
        let mut c = ReplayCache {
            path: Some(path.to_owned()),
            file: None,
            seen,
            lines: 0,
            live_at_compaction: 0,
        };
        c.compact()?;
        Ok(c)
    }

    fn compact(&mut self) -> Result<(), GuardError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let shown = portolan_core::escape::for_terminal(&path.display().to_string()).into_owned();
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        let tmp = path.with_file_name(name);
        let _ = std::fs::remove_file(&tmp);
        let mut text = String::new();
        for (k, exp) in &self.seen {
            let _ = writeln!(text, "{exp} {}", hex(k));
        }
        let io = |e| GuardError::io(format!("cannot write {shown}"), e);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.file = Some(OpenOptions::new().append(true).open(&path).map_err(io)?);
        self.lines = self.seen.len();
        self.live_at_compaction = self.seen.len();
        Ok(())
    }

    /// Drops expired entries (memory only; the file is compacted when it grows).
    pub fn prune(&mut self, now: i64) {
        self.seen.retain(|_, exp| *exp > now);
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records `key` until `expiry` unless it was seen before; the record is on disk
    /// before this returns `Fresh`.
    pub fn check(&mut self, key: [u8; 32], expiry: i64, now: i64) -> Result<Seen, GuardError> {
        if self.seen.get(&key).is_some_and(|&e| e > now) {
            return Ok(Seen::Replay);
        }
        if self.seen.len() >= MAX_ENTRIES {
            self.prune(now);
            if self.seen.len() >= MAX_ENTRIES {
                return Ok(Seen::Full);
            }
        }
        if let Some(f) = self.file.as_mut() {
            let line = format!("{expiry} {}\n", hex(&key));
            let r = f.write_all(line.as_bytes()).and_then(|()| f.sync_data());
            if let Err(e) = r {
                return Err(GuardError::io(
                    "cannot record a packet in the replay cache",
                    e,
                ));
            }
            self.lines += 1;
        }
        self.seen.insert(key, expiry);
        if self.lines >= 2 * self.live_at_compaction + 64 {
            self.prune(now);
            self.compact()?;
        }
        Ok(Seen::Fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart_and_forgets_expired() {
        let dir = std::env::temp_dir().join(format!("pg-replay-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("replay");
        let mut c = ReplayCache::open(&p, 1000).unwrap();
        assert_eq!(c.check([1; 32], 1060, 1000).unwrap(), Seen::Fresh);
        assert_eq!(c.check([2; 32], 1010, 1000).unwrap(), Seen::Fresh);
        assert_eq!(c.check([1; 32], 1060, 1001).unwrap(), Seen::Replay);
        drop(c);
        // A torn line and junk are skipped.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"12 zz\nnot a line at all\n99999 0102")
            .unwrap();
        drop(f);
        let mut c = ReplayCache::open(&p, 1020).unwrap();
        assert_eq!(c.len(), 1, "the expired entry is gone");
        assert_eq!(c.check([1; 32], 1060, 1020).unwrap(), Seen::Replay);
        assert_eq!(c.check([2; 32], 1080, 1020).unwrap(), Seen::Fresh);
        // After expiry the key is fresh again (the window rejects such a packet anyway).
        assert_eq!(c.check([1; 32], 1200, 1061).unwrap(), Seen::Fresh);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_is_compacted() {
        let dir = std::env::temp_dir().join(format!("pg-replay-c-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("replay");
        let mut c = ReplayCache::open(&p, 0).unwrap();
        for i in 0..500u32 {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            let now = i64::from(i);
            assert_eq!(c.check(k, now + 5, now).unwrap(), Seen::Fresh);
        }
        let lines = std::fs::read_to_string(&p).unwrap().lines().count();
        assert!(lines < 100, "{lines} lines for a handful of live entries");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
