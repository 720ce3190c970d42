//! Escaping of untrusted text (process names, command lines, banners) before it reaches a
//! terminal or a page. Control bytes and ANSI escape sequences are attacks: they can move
//! the cursor, rewrite earlier lines, change the window title or hide text. Bidirectional
//! overrides can make a name read differently from what it is.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

/// True for characters that must never reach a terminal raw.
pub fn is_dangerous(c: char) -> bool {
    c.is_control() // C0, DEL and C1 (U+0080..=U+009F), including ESC and CSI
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Escapes `s` for a terminal: printable text passes through unchanged (no allocation), every
/// control or bidi character becomes a visible escape such as `\x1b`, `\n` or `\u{202e}`.
/// A backslash is doubled only when the string needed escaping at all, so the escaped form
/// cannot be confused with an original that contained a literal `\x1b`.
pub fn for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_dangerous) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    push_escaped(&mut out, s);
    Cow::Owned(out)
}

/// Appends `s` to `out` with every backslash doubled and every control or bidi character
/// made a visible escape: the one loop behind [`for_terminal`] and [`bytes_for_terminal`],
/// which decide for the whole string whether escaping is needed at all.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_dangerous(c) => {
                let v = u32::from(c);
                if v < 0x100 {
                    let _ = write!(out, "\\x{v:02x}");
                } else {
                    let _ = write!(out, "\\u{{{v:x}}}");
                }
            }
            c => out.push(c),
        }
    }
}

/// Turns raw bytes (e.g. a /proc cmdline, which need not be UTF-8) into a string in which
/// invalid UTF-8 is shown as `\xNN` escapes rather than silently replaced or lost.
pub fn bytes_lossless(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Raw bytes (a banner, an answer from the network) for a terminal: valid text escaped as
/// by [`for_terminal`], bytes that are not UTF-8 as `\xNN`, with one decision for the whole
/// string about doubling backslashes (so `\x1b` in the result is never ambiguous).
pub fn bytes_for_terminal(bytes: &[u8]) -> String {
    let clean = std::str::from_utf8(bytes).is_ok_and(|s| !s.chars().any(is_dangerous));
    if clean {
        // Valid UTF-8 with nothing to escape: unchanged.
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// A path for a terminal, losslessly: any bytes (a Unix path need not be UTF-8), escaped
/// as by [`bytes_for_terminal`] (`Path::display` would replace bytes that are not UTF-8).
pub fn path_for_terminal(path: &Path) -> String {
    bytes_for_terminal(path.as_os_str().as_encoded_bytes())
}

/// What kind of file `t` is, for a message about a file that is not the kind expected:
/// `a directory`, `a FIFO`, `a character device`, ... (naming a type reads nothing).
pub fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_escape_in_one_pass() {
        assert_eq!(bytes_for_terminal(b"SSH-2.0-x"), "SSH-2.0-x");
        assert_eq!(bytes_for_terminal(b"a\\b\x1b\xff"), "a\\\\b\\x1b\\xff");
        assert!(!bytes_for_terminal(b"\x1b]0;t\x07\r\n\xc2\x9b")
            .chars()
            .any(is_dangerous));
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(for_terminal("nginx: worker"), Cow::Borrowed(_)));
    }

    #[test]
    fn ansi_and_controls_are_escaped() {
        let hostile = "evil\x1b[2J\x1b]0;pwned\x07\r\n\u{202e}gpj.exe";
        let out = for_terminal(hostile);
        assert!(!out.chars().any(is_dangerous), "{out}");
        assert_eq!(out, "evil\\x1b[2J\\x1b]0;pwned\\x07\\r\\n\\u{202e}gpj.exe");
    }

    #[test]
    fn c1_controls_are_escaped() {
        assert_eq!(for_terminal("a\u{9b}31m"), "a\\x9b31m");
    }

    #[test]
    fn backslash_doubled_only_when_escaping() {
        assert_eq!(for_terminal(r"C:\x1b"), r"C:\x1b");
        assert_eq!(for_terminal("\\x1b\x1b"), "\\\\x1b\\x1b");
    }

    #[test]
    fn paths_are_escaped_losslessly() {
        use std::os::unix::ffi::OsStrExt as _;
        let p = Path::new(std::ffi::OsStr::from_bytes(
            b"/tmp/a\xff\x1b[2J\xe2\x80\xaeb",
        ));
        assert_eq!(path_for_terminal(p), "/tmp/a\\xff\\x1b[2J\\u{202e}b");
        assert_eq!(path_for_terminal(Path::new("/etc/hosts")), "/etc/hosts");
        let t = std::fs::metadata("/").unwrap().file_type();
        assert_eq!(file_kind(t), "a directory");
    }

    #[test]
    fn invalid_utf8_is_kept_visible() {
        assert_eq!(bytes_lossless(b"py\xffthon"), "py\\xffthon");
    }
}
