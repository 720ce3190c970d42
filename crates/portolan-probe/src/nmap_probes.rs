//! Reads a file in nmap's service-probe format (`nmap-service-probes`) into [`Signatures`],
//! at run time and only when the user points at one (`--nmap-probes PATH`): nothing of it
//! is bundled.
//!
//! Directives: `Probe TCP|UDP NAME q|payload|`, `ports`, `sslports`, `rarity`,
//! `totalwaitms`, `tcpwrappedms`, `fallback`, `Exclude`, `match` and `softmatch`. Probe
//! names become `nmap:NAME` (`nmap:udp:NAME` for UDP) so they never clash with portolan's;
//! the matches of nmap's
//! `NULL` probe (nothing sent: what a service says first) become `banner` matches.
//!
//! Patterns are Perl-compatible; the ones the `regex` crate cannot run (backreferences,
//! lookaround, possessive quantifiers, atomic groups, ...) are skipped and counted, and so
//! are templates portolan cannot fill (`$I(..)`, `$SUBST(..)` drop that field only). A
//! malformed file is an error with `file:line:column`, and adds nothing: it is read into a
//! fresh [`Signatures`] and merged only when all of it was read.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

use thiserror::Error;

use crate::sig::{
    compile_bounded, valid_service, Match, Probe, Signatures, Transport, DEFAULT_RARITY,
    MAX_INTENSITY, MAX_PATTERN, MAX_SEND, MAX_SERVICE, MAX_TEMPLATE,
};

/// Largest file read (nmap's own is about 2.5 MB).
pub const MAX_FILE: usize = 16 << 20;
/// Most probes and matches one file may define.
const MAX_PROBES: usize = 1024;
const MAX_MATCHES: usize = 65_536;
/// Skip reasons kept word for word in a [`Summary`].
const KEEP_REASONS: usize = 3;

/// A file that cannot be read as a whole.
#[derive(Debug, Error)]
pub enum NmapError {
    #[error("{file}:{line}:{col}: {message}")]
    Syntax {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a file gave: the CLI shows it as one note.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The file's name as given.
    pub file: String,
    /// Probes read (nmap's `NULL` included: it is portolan's `banner`).
    pub probes: usize,
    /// Matches kept, soft ones included.
    pub matches: usize,
    /// Of those, `softmatch` lines.
    pub soft: usize,
    /// Matches left out, by kind of reason.
    pub skipped: BTreeMap<&'static str, usize>,
    /// The first few reasons, each with `line:column` in the file.
    pub first_reasons: Vec<String>,
    /// Template fields (product, version, info, cpe) left empty because they use a helper
    /// portolan does not have (`$I`, `$SUBST`).
    pub dropped_fields: usize,
}

impl Summary {
    /// Matches left out in all.
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    fn skip(&mut self, kind: &'static str, at: String) {
        *self.skipped.entry(kind).or_default() += 1;
        if self.first_reasons.len() < KEEP_REASONS {
            self.first_reasons.push(at);
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} probes, {} matches ({} soft)",
            self.file, self.probes, self.matches, self.soft
        )?;
        if self.dropped_fields > 0 {
            write!(f, ", {} fields left empty ($I/$SUBST)", self.dropped_fields)?;
        }
        let total = self.skipped_total();
        if total > 0 {
            let kinds: Vec<String> = self
                .skipped
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            write!(
                f,
                "; {total} matches skipped ({}); first: {}",
                kinds.join(", "),
                self.first_reasons.join("; ")
            )?;
        }
        Ok(())
    }
}

impl Signatures {
    /// Reads an nmap-service-probes file and adds what it defines (see the module doc).
    pub fn add_nmap_file(&mut self, path: &Path) -> Result<Summary, NmapError> {
        let shown = path.display().to_string();
        let read_err = |source| NmapError::Read {
            path: shown.clone(),
            source,
        };
        let f = std::fs::File::open(path).map_err(read_err)?;
        let mut bytes = Vec::new();
        // One byte over the limit tells a file that is too big without reading all of it.
        f.take(MAX_FILE as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        self.add_nmap(&shown, &bytes)
    }

    /// Adds the probes and matches of nmap-service-probes text; `file` names it in errors.
    /// On error nothing is added.
    pub fn add_nmap(&mut self, file: &str, bytes: &[u8]) -> Result<Summary, NmapError> {
        let (fresh, summary) = parse(file, bytes)?;
        if let Some(p) = fresh
            .probes
            .iter()
            .find(|p| p.name != "banner" && self.probes.iter().any(|q| q.name == p.name))
        {
            return Err(NmapError::File {
                file: file.to_owned(),
                message: format!("probe `{}` is defined already (file read twice?)", p.name),
            });
        }
        let has_banner = self.probes.iter().any(|p| p.name == "banner");
        self.probes.extend(
            fresh
                .probes
                .into_iter()
                .filter(|p| !(has_banner && p.name == "banner")),
        );
        self.matches.extend(fresh.matches);
        self.settle_order();
        Ok(summary)
    }
}

/// Reads nmap-service-probes text into a fresh set.
pub fn parse(file: &str, bytes: &[u8]) -> Result<(Signatures, Summary), NmapError> {
    if bytes.len() > MAX_FILE {
        return Err(NmapError::File {
            file: file.to_owned(),
            message: format!("over {} MiB: not a service-probe file", MAX_FILE >> 20),
        });
    }
    let mut p = Parser {
        file,
        sigs: Signatures::default(),
        summary: Summary {
            file: file.to_owned(),
            ..Summary::default()
        },
        current: None,
    };
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        p.line(i + 1, line)?;
    }
    p.summary.probes = p.sigs.probes.len();
    p.sigs.settle_order();
    Ok((p.sigs, p.summary))
}

struct Parser<'a> {
    file: &'a str,
    sigs: Signatures,
    summary: Summary,
    /// Index of the probe the following directives belong to.
    current: Option<usize>,
}

/// A position in the file, for errors.
#[derive(Clone, Copy)]
struct At {
    line: usize,
    col: usize,
}

/// A line being read, byte by byte.
struct Cursor<'l> {
    text: &'l [u8],
    pos: usize,
    line: usize,
}

impl<'l> Cursor<'l> {
    fn at(&self) -> At {
        At {
            line: self.line,
            col: self.pos + 1,
        }
    }
    /// Where the next word starts.
    fn here(&mut self) -> At {
        self.skip_space();
        self.at()
    }
    fn skip_space(&mut self) {
        while self
            .text
            .get(self.pos)
            .is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            self.pos += 1;
        }
    }
    fn word(&mut self) -> &'l [u8] {
        self.skip_space();
        let start = self.pos;
        while self
            .text
            .get(self.pos)
            .is_some_and(|b| *b != b' ' && *b != b'\t')
        {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }
    fn rest(&mut self) -> &'l [u8] {
        self.skip_space();
        &self.text[self.pos..]
    }
    fn done(&mut self) -> bool {
        self.skip_space();
        self.pos >= self.text.len()
    }
    /// `<d>...<d>` starting at the delimiter: returns the text between.
    fn delimited(&mut self) -> Result<&'l [u8], (At, String)> {
        let at = self.at();
        let Some(&d) = self.text.get(self.pos) else {
            return Err((at, "expected a delimiter, found the end of the line".into()));
        };
        let start = self.pos + 1;
        let Some(len) = self.text[start..].iter().position(|&b| b == d) else {
            return Err((
                at,
                format!(
                    "unterminated: no closing `{}`",
                    char::from(d).escape_default()
                ),
            ));
        };
        self.pos = start + len + 1;
        Ok(&self.text[start..start + len])
    }
}

impl Parser<'_> {
    fn err(&self, at: At, message: impl Into<String>) -> NmapError {
        NmapError::Syntax {
            file: self.file.to_owned(),
            line: at.line,
            col: at.col,
            message: message.into(),
        }
    }

    fn line(&mut self, n: usize, text: &[u8]) -> Result<(), NmapError> {
        if let Some(i) = text.iter().position(|&b| b == 0) {
            return Err(self.err(
                At {
                    line: n,
                    col: i + 1,
                },
                "a NUL byte: not a text file",
            ));
        }
        let mut c = Cursor {
            text,
            pos: 0,
            line: n,
        };
        c.skip_space();
        if c.done() || text[c.pos] == b'#' {
            return Ok(());
        }
        let at = c.at();
        let directive = c.word();
        match directive {
            b"Probe" => self.probe(&mut c),
            b"match" => self.a_match(&mut c, at, false),
            b"softmatch" => self.a_match(&mut c, at, true),
            b"Exclude" => {
                // Ports nmap never probes (printers): portolan has no such list; checked only.
                let spec = c.rest();
                let spec = spec.strip_prefix(b"T:").unwrap_or(spec);
                ports(spec, true).map_err(|m| self.err(at, format!("Exclude: {m}")))?;
                Ok(())
            }
            b"ports" | b"sslports" => {
                let idx = self.need_probe(at, directive)?;
                let spec_at = c.here();
                let list = ports(c.rest(), false).map_err(|m| self.err(spec_at, m))?;
                if directive == b"ports" {
                    let p = &mut self.sigs.probes[idx];
                    p.ports.extend(list);
                    p.ports.sort_unstable();
                    p.ports.dedup();
                }
                Ok(())
            }
            b"rarity" => {
                let idx = self.need_probe(at, directive)?;
                let v_at = c.here();
                let v = number(c.rest())
                    .filter(|v| (1..=u64::from(MAX_INTENSITY)).contains(v))
                    .ok_or_else(|| self.err(v_at, "rarity is a number 1..=9"))?;
                self.sigs.probes[idx].rarity = u8::try_from(v).unwrap_or(DEFAULT_RARITY);
                Ok(())
            }
            b"totalwaitms" | b"tcpwrappedms" => {
                // portolan's own read limits apply (--timeout): checked only.
                self.need_probe(at, directive)?;
                let v_at = c.here();
                number(c.rest())
                    .filter(|v| *v <= 600_000)
                    .ok_or_else(|| self.err(v_at, "expected milliseconds (0..=600000)"))?;
                Ok(())
            }
            b"fallback" => {
                // portolan tries a probe's own matches, then the banner ones: fallback
                // chains are not followed.
                self.need_probe(at, directive)?;
                Ok(())
            }
            other => Err(self.err(
                at,
                format!(
                    "unknown directive `{}`",
                    portolan_core::escape::bytes_for_terminal(&other[..other.len().min(40)])
                ),
            )),
        }
    }

    fn need_probe(&self, at: At, directive: &[u8]) -> Result<usize, NmapError> {
        self.current.ok_or_else(|| {
            self.err(
                at,
                format!(
                    "`{}` before any Probe line",
                    String::from_utf8_lossy(directive)
                ),
            )
        })
    }

    fn probe(&mut self, c: &mut Cursor<'_>) -> Result<(), NmapError> {
        let at = c.here();
        let proto = match c.word() {
            b"TCP" => Transport::Tcp,
            b"UDP" => Transport::Udp,
            _ => return Err(self.err(at, "expected TCP or UDP")),
        };
        let name_at = c.here();
        let name = c.word();
        if name.is_empty()
            || name.len() > 64
            || !name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        {
            return Err(self.err(name_at, "a probe name is 1-64 letters, digits, - and _"));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        c.skip_space();
        let q_at = c.at();
        if c.text.get(c.pos) != Some(&b'q') {
            return Err(self.err(q_at, "expected the payload: q|...|"));
        }
        c.pos += 1;
        let payload = c.delimited().map_err(|(a, m)| self.err(a, m))?;
        let send = unescape(payload).map_err(|(off, m)| {
            self.err(
                At {
                    line: q_at.line,
                    col: q_at.col + 2 + off,
                },
                m,
            )
        })?;
        if send.len() > MAX_SEND {
            return Err(self.err(q_at, format!("the payload is over {MAX_SEND} bytes")));
        }
        let tail_at = c.here();
        let tail = c.rest();
        if !tail.is_empty() && tail != b"no-payload" {
            return Err(self.err(tail_at, "unexpected text after the payload"));
        }
        // nmap's NULL probe sends nothing: it is portolan's banner read. nmap names TCP and
        // UDP probes apart by transport; portolan's names are unique: `nmap:udp:NAME`.
        let name = match proto {
            Transport::Tcp if name == "NULL" => "banner".to_owned(),
            Transport::Tcp => format!("nmap:{name}"),
            Transport::Udp => format!("nmap:udp:{name}"),
        };
        if self.sigs.probes.iter().any(|p| p.name == name) {
            return Err(self.err(name_at, format!("probe `{name}` is defined twice")));
        }
        if self.sigs.probes.len() >= MAX_PROBES {
            return Err(self.err(at, format!("more than {MAX_PROBES} probes")));
        }
        self.sigs.probes.push(Probe {
            name,
            send,
            ports: Vec::new(),
            proto,
            rarity: DEFAULT_RARITY,
            like: None,
        });
        self.current = Some(self.sigs.probes.len() - 1);
        Ok(())
    }

    fn a_match(&mut self, c: &mut Cursor<'_>, at: At, soft: bool) -> Result<(), NmapError> {
        let idx = self.need_probe(at, if soft { b"softmatch" } else { b"match" })?;
        let service_at = c.here();
        let service = c.word();
        c.skip_space();
        if c.text.get(c.pos) != Some(&b'm') {
            return Err(self.err(c.at(), "expected the pattern: m|...|"));
        }
        c.pos += 1;
        let pat_at = c.at();
        let pattern = c.delimited().map_err(|(a, m)| self.err(a, m))?;
        let mut flags = String::new();
        while let Some(&f) = c.text.get(c.pos).filter(|b| b.is_ascii_alphabetic()) {
            if f != b'i' && f != b's' {
                return Err(self.err(c.at(), format!("unknown pattern flag `{}`", char::from(f))));
            }
            flags.push(char::from(f));
            c.pos += 1;
        }
        let fields = self.fields(c)?;
        if self.sigs.matches.len() >= MAX_MATCHES {
            return Err(self.err(at, format!("more than {MAX_MATCHES} matches")));
        }
        // From here on a problem skips this match only.
        let where_ = |a: At| format!("{}:{}", a.line, a.col);
        if !valid_service(service) {
            let r = format!(
                "{}: service name not 1-{MAX_SERVICE} of [A-Za-z0-9-_./]",
                where_(service_at)
            );
            self.summary.skip("bad service name", r);
            return Ok(());
        }
        let compiled = match compile(pattern, &flags) {
            Ok(r) => r,
            Err((kind, why)) => {
                let r = format!("{}: {why}", where_(pat_at));
                self.summary.skip(kind, r);
                return Ok(());
            }
        };
        let groups = compiled.captures_len() - 1;
        let mut filled: [Option<String>; 4] = Default::default();
        for (slot, (name, raw)) in filled.iter_mut().zip(fields.iter()) {
            let Some((fat, raw)) = raw else { continue };
            match template(raw, groups) {
                Ok(Some(t)) => *slot = Some(t),
                Ok(None) => self.summary.dropped_fields += 1,
                Err(why) => {
                    let r = format!("{}: {name}: {why}", where_(*fat));
                    self.summary.skip("template", r);
                    return Ok(());
                }
            }
        }
        let [product, version, info, cpe] = filled;
        let (product, version) = if soft {
            (None, None)
        } else {
            (product, version)
        };
        self.sigs.matches.push(Match {
            probe: self.sigs.probes[idx].name.clone(),
            service: String::from_utf8_lossy(service).into_owned(),
            pattern: compiled,
            product,
            version,
            info,
            cpe,
            weak: false,
        });
        self.summary.matches += 1;
        self.summary.soft += usize::from(soft);
        Ok(())
    }

    /// The version fields after a pattern: `p/../ v/../ i/../ h/../ o/../ d/../ cpe:/../a`
    /// (any delimiter). Returns product, version, info (i and o joined) and the first cpe.
    #[allow(clippy::type_complexity)]
    fn fields(
        &self,
        c: &mut Cursor<'_>,
    ) -> Result<[(&'static str, Option<(At, Vec<u8>)>); 4], NmapError> {
        let mut out: [(&'static str, Option<(At, Vec<u8>)>); 4] = [
            ("product", None),
            ("version", None),
            ("info", None),
            ("cpe", None),
        ];
        let mut os: Option<(At, Vec<u8>)> = None;
        while !c.done() {
            let at = c.at();
            let key: &[u8] = if c.text[c.pos..].starts_with(b"cpe:") {
                c.pos += 4;
                b"cpe"
            } else {
                let k = &c.text[c.pos..=c.pos];
                c.pos += 1;
                k
            };
            let value = c.delimited().map_err(|(a, m)| self.err(a, m))?.to_vec();
            let slot = match key {
                b"p" => &mut out[0].1,
                b"v" => &mut out[1].1,
                b"i" => &mut out[2].1,
                b"o" => &mut os,
                b"h" | b"d" => {
                    continue;
                }
                b"cpe" => {
                    // The `a` flag (an application) may follow.
                    if c.text.get(c.pos) == Some(&b'a') {
                        c.pos += 1;
                    }
                    if out[3].1.is_some() {
                        continue;
                    }
                    let mut v = b"cpe:/".to_vec();
                    v.extend_from_slice(&value);
                    out[3].1 = Some((at, v));
                    continue;
                }
                _ => {
                    return Err(self.err(
                        at,
                        format!(
                            "unknown version field `{}` (p v i h o d cpe:)",
                            portolan_core::escape::bytes_for_terminal(key)
                        ),
                    ))
                }
            };
            *slot = Some((at, value));
            if c.text.get(c.pos).is_some_and(|b| *b != b' ' && *b != b'\t') {
                return Err(self.err(c.at(), "expected a space after a version field"));
            }
        }
        if let Some((at, o)) = os {
            out[2].1 = Some(match out[2].1.take() {
                Some((iat, mut i)) => {
                    i.extend_from_slice(b"; ");
                    i.extend_from_slice(&o);
                    (iat, i)
                }
                None => (at, o),
            });
        }
        Ok(out)
    }
}

/// A number, or `None`.
fn number(s: &[u8]) -> Option<u64> {
    (!s.is_empty() && s.len() <= 9 && s.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(s).ok()?.parse().ok())
        .flatten()
}

/// `80,443,8000-8010` (with `allow_udp`, also `U:53` and `T:` prefixes, as in Exclude).
fn ports(spec: &[u8], allow_udp: bool) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for item in spec.split(|&b| b == b',') {
        let item = if allow_udp {
            item.strip_prefix(b"T:")
                .or_else(|| item.strip_prefix(b"U:"))
                .unwrap_or(item)
        } else {
            item
        };
        let shown = portolan_core::escape::bytes_for_terminal(&item[..item.len().min(20)]);
        let bad = || format!("`{shown}` is not a port or a range of ports");
        let (lo, hi) = match item.iter().position(|&b| b == b'-') {
            Some(i) => (&item[..i], &item[i + 1..]),
            None => (item, item),
        };
        let lo = number(lo)
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(bad)?;
        let hi = number(hi)
            .and_then(|v| u16::try_from(v).ok())
            .ok_or_else(bad)?;
        if lo > hi {
            return Err(bad());
        }
        out.extend(lo..=hi);
        // Ranges may overlap: keep the list at most 65536 entries.
        if out.len() > 65_536 {
            out.sort_unstable();
            out.dedup();
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// nmap's payload escapes: `\\ \0 \a \b \f \n \r \t \v \xHH`. Errors give the offset.
fn unescape(s: &[u8]) -> Result<Vec<u8>, (usize, String)> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let Some(&e) = s.get(i + 1) else {
            return Err((i, "a payload ends with a lone `\\`".into()));
        };
        let b = match e {
            b'\\' => b'\\',
            b'0' => 0,
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'x' => {
                let hex = s
                    .get(i + 2..i + 4)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                let Some(h) = hex else {
                    return Err((i, "`\\x` needs two hex digits".into()));
                };
                out.push(
                    u8::from_str_radix(std::str::from_utf8(h).unwrap_or("0"), 16).unwrap_or(0),
                );
                i += 4;
                continue;
            }
            other => {
                return Err((
                    i,
                    format!(
                        "unknown escape `\\{}`",
                        portolan_core::escape::bytes_for_terminal(&[other])
                    ),
                ))
            }
        };
        out.push(b);
        i += 2;
    }
    Ok(out)
}

/// Compiles an nmap (PCRE) pattern with the `regex` crate, or says why it cannot:
/// (kind, reason).
fn compile(pattern: &[u8], flags: &str) -> Result<regex::bytes::Regex, (&'static str, String)> {
    if pattern.len() > MAX_PATTERN {
        return Err(("too long", format!("pattern over {MAX_PATTERN} bytes")));
    }
    let body = translate(pattern)?;
    let text = if flags.is_empty() {
        body
    } else {
        format!("(?{flags}){body}")
    };
    compile_bounded(&text).map_err(|e| {
        let msg = e.to_string();
        // The regex crate's message ends with its own summary line: keep that one.
        let last = msg
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let kind = if msg.contains("look-around") {
            "lookaround"
        } else if msg.contains("repetition operator missing expression") || msg.contains("(?>") {
            "possessive/atomic"
        } else {
            "unsupported regex"
        };
        (kind, format!("regex: {}", last.trim()))
    })
}

/// PCRE to `regex` syntax, where the two differ in meaning: `\0` and octal escapes become
/// `\xHH`, bytes over 0x7f become `\xHH`, `$` and `\Z` (end, or before a final newline)
/// become `(?:\n?\z)`, a `{` that starts no repetition and a `[` inside a class are escaped.
/// Backreferences have no equivalent.
fn translate(pat: &[u8]) -> Result<String, (&'static str, String)> {
    let mut out = String::with_capacity(pat.len() + 16);
    let mut class = false;
    let mut pos = 0;
    while pos < pat.len() {
        let byte = pat[pos];
        if byte == b'\\' {
            let Some(&esc) = pat.get(pos + 1) else {
                return Err(("unsupported regex", "pattern ends with `\\`".into()));
            };
            match esc {
                b'1'..=b'9' if !class => {
                    return Err((
                        "backreference",
                        format!("backreference \\{}", char::from(esc)),
                    ))
                }
                b'0' => {
                    // \0 plus up to two octal digits.
                    let mut value: u32 = 0;
                    let mut next = pos + 1;
                    while next < pat.len() && next < pos + 4 && (b'0'..=b'7').contains(&pat[next]) {
                        value = value * 8 + u32::from(pat[next] - b'0');
                        next += 1;
                    }
                    push_hex(&mut out, value);
                    pos = next;
                    continue;
                }
                b'Z' if !class => out.push_str("(?:\\n?\\z)"),
                0x80..=0xff => push_hex(&mut out, u32::from(esc)),
                _ => {
                    out.push('\\');
                    out.push(char::from(esc));
                }
            }
            pos += 2;
            continue;
        }
        match byte {
            0x80..=0xff => push_hex(&mut out, u32::from(byte)),
            b'[' if class => {
                // A POSIX class such as [:alpha:], which both understand.
                let name_len = pat[pos + 1..]
                    .strip_prefix(b":")
                    .and_then(|rest| rest.iter().position(|c| !c.is_ascii_alphabetic()))
                    .filter(|&n| pat[pos + 2 + n..].starts_with(b":]"));
                if let Some(n) = name_len {
                    out.push_str(&String::from_utf8_lossy(&pat[pos..pos + n + 4]));
                    pos += n + 4;
                    continue;
                }
                out.push_str("\\[");
            }
            b'&' | b'~' if class => {
                // `&&` and `~~` are set operations in `regex` classes.
                out.push('\\');
                out.push(char::from(byte));
            }
            b'[' => {
                class = true;
                out.push('[');
                // A `]` (after an optional `^`) first in a class is a literal in both.
                if pat.get(pos + 1) == Some(&b'^') {
                    out.push('^');
                    pos += 1;
                }
                if pat.get(pos + 1) == Some(&b']') {
                    out.push_str("\\]");
                    pos += 1;
                }
            }
            b']' if class => {
                class = false;
                out.push(']');
            }
            b'$' if !class => out.push_str("(?:\\n?\\z)"),
            b'{' if !class && !is_repetition(&pat[pos..]) => out.push_str("\\{"),
            _ => out.push(char::from(byte)),
        }
        pos += 1;
    }
    Ok(out)
}

/// Appends `\xHH`.
fn push_hex(out: &mut String, value: u32) {
    use std::fmt::Write;
    let _ = write!(out, "\\x{value:02x}");
}

/// Whether `s` (starting at `{`) is `{n}`, `{n,}` or `{n,m}`.
fn is_repetition(s: &[u8]) -> bool {
    let Some(end) = s.iter().position(|&b| b == b'}') else {
        return false;
    };
    let inner = &s[1..end];
    let mut parts = inner.splitn(2, |&b| b == b',');
    let lo = parts.next().unwrap_or_default();
    let hi = parts.next();
    !lo.is_empty()
        && lo.iter().all(u8::is_ascii_digit)
        && hi.is_none_or(|h| h.iter().all(u8::is_ascii_digit))
}

/// An nmap version template as a portolan one: `$1`..`$9` stay, `$P(n)` becomes `$n` (the
/// answer is escaped anyway). `Ok(None)`: it uses `$I` or `$SUBST`, left empty.
fn template(raw: &[u8], groups: usize) -> Result<Option<String>, String> {
    if raw.len() > MAX_TEMPLATE {
        return Err(format!("over {MAX_TEMPLATE} bytes"));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'$' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let rest = &raw[i + 1..];
        let group = if rest.first().is_some_and(u8::is_ascii_digit) {
            if rest.get(1).is_some_and(u8::is_ascii_digit) {
                return Err(format!(
                    "${}{}: templates have $1..$9 only",
                    char::from(rest[0]),
                    char::from(rest[1])
                ));
            }
            i += 2;
            usize::from(rest[0] - b'0')
        } else if rest.starts_with(b"P(") && rest.get(3) == Some(&b')') && rest[2].is_ascii_digit()
        {
            i += 5;
            usize::from(rest[2] - b'0')
        } else if rest.starts_with(b"I(") || rest.starts_with(b"SUBST(") {
            return Ok(None);
        } else {
            out.push(b'$');
            i += 1;
            continue;
        };
        if group == 0 || group > groups {
            return Err(format!(
                "uses ${group} but the pattern has {groups} group(s)"
            ));
        }
        out.push(b'$');
        out.push(b'0' + u8::try_from(group).unwrap_or(0));
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    if text.chars().any(portolan_core::escape::is_dangerous) {
        return Err("control or bidi characters".into());
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_keeps_meaning() {
        let t = |p: &[u8]| translate(p).unwrap();
        assert_eq!(t(b"^a\\0b"), "^a\\x00b");
        assert_eq!(t(b"\\012"), "\\x0a");
        assert_eq!(t(b"x$"), "x(?:\\n?\\z)");
        assert_eq!(t(b"a{b}"), "a\\{b}");
        assert_eq!(t(b"a{2,3}"), "a{2,3}");
        assert_eq!(t(b"[^[]x"), "[^\\[]x");
        assert_eq!(t(b"[]a]"), "[\\]a]");
        assert_eq!(t(b"[[:digit:]]"), "[[:digit:]]");
        assert_eq!(t(b"\xe9"), "\\xe9");
        assert_eq!(translate(b"(a)\\1").unwrap_err().0, "backreference");
    }

    #[test]
    fn templates() {
        assert_eq!(template(b"$1 x", 1).unwrap().as_deref(), Some("$1 x"));
        assert_eq!(template(b"$P(2)", 2).unwrap().as_deref(), Some("$2"));
        assert_eq!(template(b"$I(1,\">\")", 1).unwrap(), None);
        assert!(template(b"$10", 1).unwrap_err().contains("$1..$9"));
        assert!(template(b"$3", 2).unwrap_err().contains("2 group"));
        assert_eq!(template(b"US$ 5", 0).unwrap().as_deref(), Some("US$ 5"));
    }
}
