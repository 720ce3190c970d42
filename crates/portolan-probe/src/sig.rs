//! Signatures as data: probes (what to send) and matches (a pattern over the answer and
//! what it means), read from TOML. The built-in file is compiled in; users add files with
//! `--signatures DIR`. Every error names the file and the entry.

use std::path::Path;

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;
use thiserror::Error;

/// The built-in signature files, in load order (probes are tried in this order after those
/// that name the port): HTTP first, as the most common answer on an unknown port. The
/// proxies' matches (web-servers.toml, no probes of its own) come before web.toml's: a
/// proxy passes its backend's `Server` header on, and its own `Via` must be read first.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "web-servers.toml",
        include_str!("../data/signatures/web-servers.toml"),
    ),
    ("web.toml", include_str!("../data/signatures/web.toml")),
    ("core.toml", include_str!("../data/signatures/core.toml")),
    (
        "services.toml",
        include_str!("../data/signatures/services.toml"),
    ),
    (
        "app-servers.toml",
        include_str!("../data/signatures/app-servers.toml"),
    ),
    ("dns.toml", include_str!("../data/signatures/dns.toml")),
    (
        "mail-ftp.toml",
        include_str!("../data/signatures/mail-ftp.toml"),
    ),
    (
        "messaging.toml",
        include_str!("../data/signatures/messaging.toml"),
    ),
    (
        "stores.toml",
        include_str!("../data/signatures/stores.toml"),
    ),
    (
        "daemons.toml",
        include_str!("../data/signatures/daemons.toml"),
    ),
    (
        "remote.toml",
        include_str!("../data/signatures/remote.toml"),
    ),
    ("udp.toml", include_str!("../data/signatures/udp.toml")),
];

/// The rarest probe asked as a follow-up on a port it does not name (see
/// [`Signatures::follow_ups`]): the probe of a service already named is no shot in the dark,
/// but the rarest (8, 9: could upset a service) still wait for their own port.
pub const FOLLOW_UP_RARITY: u8 = 7;

/// Longest pattern accepted, and the compiled size limit: a user file cannot make matching
/// slow or the process large.
pub(crate) const MAX_PATTERN: usize = 4096;
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest payload a probe may send.
pub(crate) const MAX_SEND: usize = 4096;
/// Longest template (product, version, info, cpe) and service name.
pub(crate) const MAX_TEMPLATE: usize = 256;
pub(crate) const MAX_SERVICE: usize = 64;

/// Whether `name` is a service name: 1-[`MAX_SERVICE`] of `A-Za-z0-9-_./`.
pub(crate) fn valid_service(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// Whether a template is too long or carries control or bidi characters.
pub(crate) fn bad_template(t: &str) -> bool {
    t.len() > MAX_TEMPLATE || t.chars().any(portolan_core::escape::is_dangerous)
}

/// Compiles a pattern over bytes within [`REGEX_SIZE_LIMIT`] (the caller checked its
/// length against [`MAX_PATTERN`]).
pub(crate) fn compile_bounded(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}
/// A probe's rarity when its file gives none: the middle of 1..=9.
pub const DEFAULT_RARITY: u8 = 5;
/// The probes tried on a port that none of them names: those of rarity 1..=5. Every probe
/// sent to a silent service costs a full read timeout, so the default stays at the cheap,
/// common probes (HTTP, Redis, memcached, PostgreSQL: what runs on odd ports) and leaves the
/// binary protocols (rarity 6 and up) to the ports they name: a silent unknown port costs
/// four timeouts, not one per probe in the files.
pub const DEFAULT_INTENSITY: u8 = 5;
/// The highest intensity: every probe.
pub const MAX_INTENSITY: u8 = 9;

#[derive(Debug, Error)]
pub enum SigError {
    #[error("{file}: not valid signature TOML: {message}")]
    Toml { file: String, message: String },
    #[error("{file}: probe `{probe}`: {message}")]
    Probe {
        file: String,
        probe: String,
        message: String,
    },
    #[error("{file}: match #{index} (service `{service}`): {message}")]
    Match {
        file: String,
        index: usize,
        service: String,
        message: String,
    },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    probe: Vec<RawProbe>,
    #[serde(default, rename = "match")]
    matches: Vec<RawMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    name: String,
    #[serde(default)]
    send: Option<String>,
    #[serde(default)]
    send_hex: Option<String>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    proto: Transport,
    #[serde(default = "default_rarity")]
    rarity: u8,
    #[serde(default)]
    like: Option<String>,
}

fn default_rarity() -> u8 {
    DEFAULT_RARITY
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    probe: String,
    service: String,
    pattern: String,
    #[serde(default)]
    product: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    info: Option<String>,
    #[serde(default)]
    cpe: Option<String>,
    #[serde(default)]
    weak: bool,
}

/// The transport a probe is sent over (`proto = "udp"` in a file; TCP by default).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Udp,
}

impl From<Transport> for portolan_core::Protocol {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Tcp => portolan_core::Protocol::Tcp,
            Transport::Udp => portolan_core::Protocol::Udp,
        }
    }
}

/// What to send. `{host}` in the payload becomes the target's name or address.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: String,
    pub send: Vec<u8>,
    /// Ports where this probe is tried before the others.
    pub ports: Vec<u16>,
    pub proto: Transport,
    /// 1 (common, cheap: tried on any port) ..= 9 (rare: tried only where it names the
    /// port, or at a high intensity). See [`Signatures::probes_upto`].
    pub rarity: u8,
    /// Another probe whose patterns also read this one's answers, after its own (an HTTP
    /// request for another path is matched with `http-get`'s patterns).
    pub like: Option<String>,
}

/// A pattern over a probe's answer and what it means. A match that names neither a product
/// nor a version is *soft*: the matches of a probe are tried hard ones first, each kind in
/// load order, so a specific signature from a later file is not hidden by a catch-all.
#[derive(Debug, Clone)]
pub struct Match {
    pub probe: String,
    pub service: String,
    pub pattern: Regex,
    pub product: Option<String>,
    pub version: Option<String>,
    pub info: Option<String>,
    pub cpe: Option<String>,
    /// The answer resembles the protocol without proving it (`weak = true` in a file): the
    /// name is reported as a guess (`service_source` `weak`), tried after every other
    /// match, and a port named so is still asked by the other probes.
    pub weak: bool,
}

impl Match {
    /// A soft match names the service only (no product, no version): tried after the others.
    pub fn is_soft(&self) -> bool {
        self.product.is_none() && self.version.is_none()
    }

    /// A generic match takes its product wholly from the answer (`product = "$1"`: any
    /// `Server: NAME/VERSION` header): it knows no product of its own, so the matches that
    /// name theirs are tried before it, whatever file they come from.
    pub fn is_generic(&self) -> bool {
        self.product.as_deref().is_some_and(|p| {
            p.strip_prefix('$')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    }
}

/// A set of probes and matches (built-in, plus user files).
#[derive(Debug, Clone, Default)]
pub struct Signatures {
    pub probes: Vec<Probe>,
    pub matches: Vec<Match>,
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Signatures {
    /// The built-in set.
    pub fn builtin() -> Signatures {
        let mut s = Signatures::default();
        // The built-in files are tested (`builtin_signatures_parse`); failing here is a bug.
        for (file, text) in BUILTIN {
            if let Err(e) = s.add_toml(&format!("built-in {file}"), text) {
                unreachable!("{e}");
            }
        }
        s
    }

    /// Adds the probes and matches of one TOML document. Matches may name probes defined
    /// earlier (in any file) or in this one. A probe with a known name replaces nothing:
    /// it is an error, so a user file cannot silently change a built-in probe.
    pub fn add_toml(&mut self, file: &str, text: &str) -> Result<(), SigError> {
        let raw: File = toml::from_str(text).map_err(|e| SigError::Toml {
            file: match e.span() {
                // Where: line and column of the error's start.
                Some(span) => {
                    let before = &text.as_bytes()[..span.start.min(text.len())];
                    let line = text[..before.len()].lines().count().max(1)
                        + usize::from(before.last() == Some(&b'\n'));
                    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
                    format!("{file}:{line}:{col}")
                }
                None => file.to_owned(),
            },
            message: e.message().to_owned(),
        })?;
        // Checked into new lists first: a file with an error adds nothing.
        let mut probes: Vec<Probe> = Vec::new();
        let mut matches: Vec<Match> = Vec::new();
        for p in raw.probe {
            let bad = |message: String| SigError::Probe {
                file: file.to_owned(),
                probe: p.name.clone(),
                message,
            };
            if p.name.is_empty()
                || !p
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad("a probe name is letters, digits, - and _".into()));
            }
            if self.probes.iter().chain(&probes).any(|q| q.name == p.name) {
                return Err(bad("a probe of this name exists already".into()));
            }
            let send = match (&p.send, &p.send_hex) {
                (Some(s), None) => s.as_bytes().to_vec(),
                (None, Some(h)) => hex(h).ok_or_else(|| bad("send_hex is not hex bytes".into()))?,
                (None, None) => Vec::new(),
                (Some(_), Some(_)) => return Err(bad("give send or send_hex, not both".into())),
            };
            if send.len() > MAX_SEND {
                return Err(bad(format!("the payload is over {MAX_SEND} bytes")));
            }
            if !(1..=MAX_INTENSITY).contains(&p.rarity) {
                return Err(bad(format!(
                    "rarity {} is not in 1..={MAX_INTENSITY}",
                    p.rarity
                )));
            }
            if send.is_empty() && p.name != "banner" {
                return Err(bad(
                    "an active probe needs a payload (send or send_hex)".into()
                ));
            }
            if let Some(like) = &p.like {
                let known = self.probes.iter().chain(&probes).find(|q| &q.name == like);
                match known {
                    None => return Err(bad(format!("like: no probe named `{like}` before it"))),
                    Some(q) if q.like.is_some() => {
                        return Err(bad(format!("like: `{like}` is itself like another probe")))
                    }
                    Some(q) if q.proto != p.proto => {
                        return Err(bad(format!(
                            "like: `{like}` is sent over another transport"
                        )))
                    }
                    Some(_) => {}
                }
            }
            probes.push(Probe {
                name: p.name,
                send,
                ports: p.ports,
                proto: p.proto,
                rarity: p.rarity,
                like: p.like,
            });
        }
        for (index, m) in raw.matches.into_iter().enumerate() {
            let bad = |message: String| SigError::Match {
                file: file.to_owned(),
                index: index + 1,
                service: m.service.clone(),
                message,
            };
            if !self.probes.iter().chain(&probes).any(|p| p.name == m.probe) {
                return Err(bad(format!("no probe named `{}`", m.probe)));
            }
            if !valid_service(m.service.as_bytes()) {
                return Err(bad(format!(
                    "a service name is 1-{MAX_SERVICE} letters, digits, - _ . /"
                )));
            }
            for (field, v) in [
                ("product", &m.product),
                ("version", &m.version),
                ("info", &m.info),
                ("cpe", &m.cpe),
            ] {
                if v.as_deref().is_some_and(bad_template) {
                    return Err(bad(format!(
                        "{field} has control or bidi characters or is over {MAX_TEMPLATE} bytes"
                    )));
                }
            }
            if m.pattern.len() > MAX_PATTERN {
                return Err(bad(format!("the pattern is over {MAX_PATTERN} bytes")));
            }
            let pattern =
                compile_bounded(&m.pattern).map_err(|e| bad(format!("bad pattern: {e}")))?;
            let groups = pattern.captures_len() - 1;
            for (field, v) in [
                ("product", &m.product),
                ("version", &m.version),
                ("info", &m.info),
                ("cpe", &m.cpe),
            ] {
                let refs = v
                    .as_deref()
                    .unwrap_or("")
                    .as_bytes()
                    .windows(2)
                    .filter(|w| w[0] == b'$' && w[1].is_ascii_digit())
                    .map(|w| usize::from(w[1] - b'0'));
                if let Some(n) = refs.into_iter().find(|&n| n > groups) {
                    return Err(bad(format!(
                        "{field} uses ${n} but the pattern has {groups} group(s)"
                    )));
                }
            }
            matches.push(Match {
                probe: m.probe,
                service: m.service,
                pattern,
                product: m.product,
                version: m.version,
                info: m.info,
                cpe: m.cpe,
                weak: m.weak,
            });
        }
        self.probes.extend(probes);
        self.matches.extend(matches);
        self.settle_order();
        Ok(())
    }

    /// Orders the matches: those that name their product, then the generic ones (product
    /// taken from the answer), then soft ones (no product, no version), weak ones last;
    /// load order within each kind.
    pub(crate) fn settle_order(&mut self) {
        self.matches
            .sort_by_key(|m| (m.weak, m.is_soft(), m.is_generic()));
    }

    /// Adds every `*.toml` file of a directory, in name order.
    pub fn add_dir(&mut self, dir: &Path) -> Result<usize, SigError> {
        let read_err = |e| SigError::Read {
            path: dir.display().to_string(),
            source: e,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|e| SigError::Read {
                path: f.display().to_string(),
                source: e,
            })?;
            self.add_toml(&f.display().to_string(), &text)?;
        }
        Ok(files.len())
    }

    /// TCP probes to try on `port` after the banner, at [`DEFAULT_INTENSITY`]: see
    /// [`Signatures::probes_upto`].
    pub fn active_probes(&self, port: u16) -> Vec<&Probe> {
        self.probes_upto(port, DEFAULT_INTENSITY)
    }

    /// TCP probes to try on `port` at `intensity` (0..=9, higher values count as 9): those
    /// that name the port first (whatever their rarity, in load order), then the others
    /// whose rarity is at most `intensity`, by rarity then load order. Intensity 0 sends
    /// only the probes that name the port; 9 sends every probe.
    pub fn probes_upto(&self, port: u16, intensity: u8) -> Vec<&Probe> {
        let (mut first, mut rest): (Vec<&Probe>, Vec<&Probe>) = self
            .probes
            .iter()
            .filter(|p| !p.send.is_empty() && p.proto == Transport::Tcp)
            .partition(|p| p.ports.contains(&port));
        rest.retain(|p| p.rarity <= intensity.min(MAX_INTENSITY));
        // A stable sort: equal rarities keep load order.
        rest.sort_by_key(|p| p.rarity);
        first.extend(rest);
        first
    }

    /// Every probe of one transport for `port`, whatever its rarity: those that name the
    /// port first, then the rest in load order (UDP probes are chosen this way).
    /// The probes that may tell more about `service` once a match without a version named
    /// it (by probe `matched`): the TCP probes, other than `matched`, with a match that
    /// names `service` with a product or version (their own, or their `like` probe's),
    /// and a rarity up to [`FOLLOW_UP_RARITY`] unless they name `port`.
    pub fn follow_ups(&self, service: &str, matched: &str, port: u16) -> Vec<&Probe> {
        self.probes
            .iter()
            .filter(|p| {
                p.proto == Transport::Tcp
                    && !p.send.is_empty()
                    && p.name != matched
                    && (p.rarity <= FOLLOW_UP_RARITY || p.ports.contains(&port))
                    && self.matches.iter().any(|m| {
                        (m.probe == p.name || Some(&m.probe) == p.like.as_ref())
                            && m.service == service
                            && !m.is_soft()
                            && !m.weak
                    })
            })
            .collect()
    }

    pub fn probes_for(&self, proto: Transport, port: u16) -> Vec<&Probe> {
        let (mut first, rest): (Vec<&Probe>, Vec<&Probe>) = self
            .probes
            .iter()
            .filter(|p| !p.send.is_empty() && p.proto == proto)
            .partition(|p| p.ports.contains(&port));
        first.extend(rest);
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_signatures_parse() {
        let mut s = Signatures::default();
        for (file, text) in BUILTIN {
            s.add_toml(file, text).unwrap();
        }
        assert!(s.probes.iter().any(|p| p.name == "banner"));
        assert!(s.matches.len() > 20);
        // Port hints order the probes.
        assert_eq!(s.active_probes(6379)[0].name, "redis-info");
        assert_eq!(s.active_probes(80)[0].name, "http-get");
    }

    #[test]
    fn rarity_bounds_the_probes_sent() {
        let mut s = Signatures::default();
        let file = "[[probe]]\nname = \"rare\"\nsend = \"r\"\nrarity = 8\n\
                    [[probe]]\nname = \"plain\"\nsend = \"p\"\n\
                    [[probe]]\nname = \"common\"\nsend = \"c\"\nrarity = 1\n\
                    [[probe]]\nname = \"hinted\"\nsend = \"h\"\nrarity = 9\nports = [7]\n\
                    [[probe]]\nname = \"u\"\nsend = \"u\"\nproto = \"udp\"\nrarity = 9\n";
        s.add_toml("t", file).unwrap();
        let names = |v: Vec<&Probe>| v.into_iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(s.probes[1].rarity, DEFAULT_RARITY);
        assert_eq!(names(s.active_probes(1)), ["common", "plain"]);
        assert_eq!(names(s.active_probes(7)), ["hinted", "common", "plain"]);
        assert_eq!(names(s.probes_upto(1, 8)), ["common", "plain", "rare"]);
        assert_eq!(
            names(s.probes_upto(1, 9)),
            ["common", "plain", "rare", "hinted"]
        );
        assert_eq!(names(s.probes_upto(1, 200)).len(), 4);
        assert_eq!(names(s.probes_upto(7, 0)), ["hinted"]);
        // UDP probes: every one, whatever its rarity.
        assert_eq!(names(s.probes_for(Transport::Udp, 1)), ["u"]);
        for bad in ["0", "10"] {
            let f = format!("[[probe]]\nname = \"x\"\nsend = \"x\"\nrarity = {bad}");
            let e = s.add_toml("t", &f).unwrap_err().to_string();
            assert!(e.contains("not in 1..=9"), "{e}");
        }
    }

    #[test]
    fn catch_alls_come_after_specific_matches() {
        let mut s = Signatures::builtin();
        let answer = b"HTTP/1.1 200 OK\r\nX-Zoo: 3.1\r\n\r\n";
        let before = crate::identify(&s, "http-get", answer).unwrap();
        assert_eq!((before.service.as_str(), before.product), ("http", None));
        // A user's match for a built-in probe is tried before web.toml's catch-all.
        s.add_toml(
            "zoo.toml",
            "[[match]]\nprobe = \"http-get\"\nservice = \"zoo\"\npattern = 'X-Zoo: ([0-9.]+)'\nversion = \"$1\"",
        )
        .unwrap();
        let after = crate::identify(&s, "http-get", answer).unwrap();
        assert_eq!(
            (after.service.as_str(), after.version.as_deref()),
            ("zoo", Some("3.1"))
        );
        let first_soft = s.matches.iter().position(Match::is_soft).unwrap();
        assert!(s.matches[first_soft..].iter().all(Match::is_soft));
        // A later file's product match beats web.toml's generic `Server: NAME/VERSION`.
        let engine = b"HTTP/1.1 404 \r\nServer: Zoo-Engine/1.1\r\n\r\n";
        let generic = crate::identify(&s, "http-get", engine).unwrap();
        assert_eq!(generic.product.as_deref(), Some("Zoo-Engine"));
        s.add_toml(
            "engine.toml",
            "[[match]]\nprobe = \"http-get\"\nservice = \"http\"\npattern = 'Server: Zoo-Engine/'\nproduct = \"Zoo Engine Server\"",
        )
        .unwrap();
        let specific = crate::identify(&s, "http-get", engine).unwrap();
        assert_eq!(specific.product.as_deref(), Some("Zoo Engine Server"));
    }

    #[test]
    fn weak_matches_come_last_and_say_so() {
        let mut s = Signatures::builtin();
        // A weak catch-all over every HTTP answer, loaded after web.toml: still tried after
        // web.toml's soft one, so an HTTP answer stays a detection.
        s.add_toml(
            "weak.toml",
            "[[match]]\nprobe = \"http-get\"\nservice = \"vague\"\npattern = '^HTTP'\nweak = true",
        )
        .unwrap();
        assert!(s.matches.last().unwrap().weak);
        let id = crate::identify(&s, "http-get", b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!((id.service.as_str(), id.weak), ("http", false));
        // What only the weak match knows is named, marked weak.
        let id = crate::identify(&s, "http-get", b"HTTP/2.0 200 OK\r\n\r\n").unwrap();
        assert_eq!((id.service.as_str(), id.weak), ("vague", true));
        // `weak` is a boolean.
        let e = s
            .add_toml(
                "bad.toml",
                "[[match]]\nprobe = \"http-get\"\nservice = \"x\"\npattern = 'x'\nweak = \"yes\"",
            )
            .unwrap_err();
        assert!(e.to_string().contains("bad.toml"), "{e}");
    }

    #[test]
    fn hostile_files_give_clear_errors() {
        let cases = [
            ("[[probe]\nname=", "not valid signature TOML"),
            ("[[probe]]\nname = \"a b\"", "letters, digits"),
            ("[[probe]]\nname = \"x\"\nsend = \"a\"\nsend_hex = \"00\"", "not both"),
            ("[[probe]]\nname = \"x\"\nsend_hex = \"0g\"", "not hex"),
            ("[[probe]]\nname = \"banner\"", "exists already"),
            ("[[match]]\nprobe = \"nope\"\nservice = \"x\"\npattern = \"a\"", "no probe named"),
            ("[[match]]\nprobe = \"banner\"\nservice = \"x\"\npattern = \"(\"", "bad pattern"),
            ("[[match]]\nprobe = \"banner\"\nservice = \"x\"\npattern = \"a\"\nextra = 1", "unknown field"),
            ("[[match]]\nprobe = \"banner\"\nservice = \"x\"\npattern = \"a{100000}{100000}\"", "bad pattern"),
            ("[[match]]\nprobe = \"banner\"\nservice = \"x y\"\npattern = \"a\"", "service name"),
            ("[[match]]\nprobe = \"banner\"\nservice = \"x\"\npattern = \"a\"\nproduct = \"\\u001b[2J\"", "control"),
        ];
        for (text, want) in cases {
            let mut s = Signatures::builtin();
            let e = s.add_toml("user.toml", text).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.starts_with("user.toml"),
                "{text:?}: {e}"
            );
        }
        // A file with an error adds nothing, not even its valid first half.
        let mut s = Signatures::builtin();
        let before = s.probes.len();
        assert!(s
            .add_toml("u", "[[probe]]\nname = \"ok\"\nsend = \"x\"\n[[match]]\nprobe = \"ok\"\nservice = \"x\"\npattern = \"(\"")
            .is_err());
        assert_eq!(s.probes.len(), before);
        for (text, want) in [
            ("[[match]]\nprobe = \"banner\"\nservice = \"x\"\npattern = \"(a)\"\nversion = \"$2\"", "uses $2"),
            ("[[probe]]\nname = \"empty\"", "needs a payload"),
            ("[[match]]\nprobe = \"banner\"\nservice = \"x\"\npattern = \"a\"\ninfo = \"\u{202e}\"", "bidi"),
            ("\n\n[[probe]\n", "u:3:"),
        ] {
            let e = Signatures::builtin().add_toml("u", text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let mut s = Signatures::builtin();
        let big = format!("[[probe]]\nname = \"big\"\nsend = \"{}\"", "a".repeat(5000));
        assert!(s
            .add_toml("u", &big)
            .unwrap_err()
            .to_string()
            .contains("over"));
    }
}
