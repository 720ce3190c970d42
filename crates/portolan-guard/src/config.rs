//! `guard.toml`: what is guarded, who may open what, and for how long.
//!
//! ```toml
//! spa_port = 62201            # UDP; fwknop's default
//! window = "30s"              # packets whose clock differs more are refused
//! open_for = "30s"            # access when the client does not say
//! max_open_for = "1h"         # the most any client may ask for
//! server_key = "server.key"   # relative to this file's directory
//! state_dir = "state"         # the replay cache
//! guarded = ["22/tcp"]
//!
//! [[client]]
//! name = "alice"
//! x25519 = "BASE64 public key"   # or: psk_file = "bob.key", or fwknop_key + fwknop_hmac_key
//! allow = ["22/tcp"]
//! open_other = false             # may ask to open an address other than its source
//!
//! [[knock]]                       # a classic sequence (replayable: see the docs)
//! name = "legacy"
//! sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
//! within = "10s"
//! open = ["22/tcp"]
//! ```
//! Paths are relative to the configuration's directory. Every problem is reported with
//! what to change; nothing here touches the network or the firewall.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::keys::{
    self, b64, public_of, random32, unb64_32, ClientKeyFile, KeyKind, ServerKeyFile,
};
use crate::{GuardError, PortProto, DEFAULT_SPA_PORT};

/// The NFLOG group the guard's rules log to unless configured otherwise.
pub const DEFAULT_NFLOG_GROUP: u16 = 6221;
/// Clients and knock definitions at most (a bound on what a configuration may ask for).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    spa_port: Option<u16>,
    window: Option<String>,
    open_for: Option<String>,
    max_open_for: Option<String>,
    nflog_group: Option<u16>,
    server_key: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    guarded: Vec<String>,
    #[serde(default)]
    client: Vec<RawClient>,
    #[serde(default)]
    knock: Vec<RawKnock>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    x25519: Option<String>,
    psk_file: Option<PathBuf>,
    fwknop_key: Option<String>,
    fwknop_hmac_key: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    open_other: bool,
    max_open_for: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKnock {
    name: String,
    #[serde(default)]
    sequence: Vec<String>,
    one_time_key_file: Option<PathBuf>,
    one_time_ports: Option<String>,
    steps: Option<u8>,
    period: Option<String>,
    within: Option<String>,
    #[serde(default)]
    open: Vec<String>,
    open_for: Option<String>,
}

/// How a client proves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientKey {
    /// Its X25519 public key.
    X25519([u8; 32]),
    /// A pre-shared key (read from its file).
    Psk([u8; 32]),
    /// fwknop's Rijndael and HMAC keys (raw bytes).
    Fwknop { key: Vec<u8>, hmac_key: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub name: String,
    pub key: ClientKey,
    /// Ports this client may open.
    pub allow: BTreeSet<PortProto>,
    /// May ask for an address other than the packet's source.
    pub open_other: bool,
    pub max_open_for: Duration,
}

/// A knock definition: a fixed sequence, or one derived from a key and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Knock {
    pub name: String,
    pub kind: KnockKind,
    /// The whole sequence must arrive within this.
    pub within: Duration,
    pub open: Vec<PortProto>,
    pub open_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnockKind {
    /// The same ports every time (replayable by anyone who sees them).
    Fixed(Vec<PortProto>),
    /// `steps` TCP ports from `range`, derived from the key and the period's number; each
    /// sequence opens once.
    OneTime {
        key: [u8; 32],
        steps: u8,
        range: (u16, u16),
        period: Duration,
    },
}

/// A loaded, checked configuration.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// The file it came from.
    pub path: PathBuf,
    pub spa_port: u16,
    pub window: Duration,
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub nflog_group: u16,
    /// The guard's X25519 secret, when any client uses X25519.
    pub server_secret: Option<[u8; 32]>,
    pub state_dir: PathBuf,
    pub guarded: Vec<PortProto>,
    pub clients: Vec<Client>,
    pub knocks: Vec<Knock>,
}

fn cfg_err(path: &Path, what: impl std::fmt::Display) -> GuardError {
    GuardError::Config(format!(
        "{}: {}",
        portolan_core::escape::for_terminal(&path.display().to_string()),
        portolan_core::escape::for_terminal(&what.to_string())
    ))
}

fn span(
    path: &Path,
    field: &str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, GuardError> {
    match v {
        None => Ok(default),
        Some(s) => {
            portolan_core::when::parse_span(s).map_err(|e| cfg_err(path, format!("{field}: {e}")))
        }
    }
}

fn ports(path: &Path, field: &str, v: &[String]) -> Result<Vec<PortProto>, GuardError> {
    v.iter()
        .map(|s| {
            s.parse::<PortProto>()
                .map_err(|e| cfg_err(path, format!("{field}: {e}")))
        })
        .collect()
}

/// A client or knock name: letters, digits, `.`, `_`, `-`, at most 64 (it is shown in
/// logs and written into key files).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "bad name {:?}: use 1 to 64 letters, digits, '.', '_' or '-'",
            portolan_core::escape::for_terminal(name)
        ));
    }
    Ok(())
}

impl GuardConfig {
    /// Reads and checks `path` and the key files it names.
    pub fn load(path: &Path) -> Result<GuardConfig, GuardError> {
        let meta = std::fs::metadata(path).map_err(|e| cfg_err(path, e))?;
        if meta.mode() & 0o022 != 0 {
            return Err(cfg_err(
                path,
                format!(
                    "writable by others (mode {:04o}): anyone could open ports; run chmod go-w",
                    meta.mode() & 0o7777
                ),
            ));
        }
        if meta.len() > keys::MAX_FILE {
            return Err(cfg_err(path, "too large"));
        }
        let text = std::fs::read_to_string(path).map_err(|e| cfg_err(path, e))?;
        GuardConfig::parse(path, &text, meta.mode())
    }

    /// Checks a configuration's text; `path` places relative paths and names the file in
    /// errors, `mode` is the file's (a file holding fwknop keys must be private). Key files
    /// it names are read.
    pub fn parse(path: &Path, text: &str, mode: u32) -> Result<GuardConfig, GuardError> {
        let raw: Raw =
            toml::from_str(text).map_err(|e| cfg_err(path, keys::toml_error(text, &e)))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                dir.join(p)
            }
        };
        if raw.client.len() + raw.knock.len() > MAX_ENTRIES {
            return Err(cfg_err(path, "too many clients and knocks"));
        }
        let window = span(
            path,
            "window",
            raw.window.as_deref(),
            Duration::from_secs(30),
        )?;
        if window.is_zero() || window > Duration::from_secs(3600) {
            return Err(cfg_err(path, "window: between 1s and 1h"));
        }
        let open_for = span(
            path,
            "open_for",
            raw.open_for.as_deref(),
            Duration::from_secs(30),
        )?;
        let max_open_for = span(
            path,
            "max_open_for",
            raw.max_open_for.as_deref(),
            Duration::from_secs(3600),
        )?;
        if open_for.is_zero() || max_open_for < open_for {
            return Err(cfg_err(
                path,
                "open_for must be more than zero and at most max_open_for",
            ));
        }
        let guarded = ports(path, "guarded", &raw.guarded)?;
        let spa_port = raw.spa_port.unwrap_or(DEFAULT_SPA_PORT);
        if spa_port == 0 {
            return Err(cfg_err(path, "spa_port: 0 is not a port"));
        }
        if guarded
            .iter()
            .any(|p| p.port == spa_port && p.proto == crate::L4::Udp)
        {
            return Err(cfg_err(path, "the SPA port cannot also be a guarded port"));
        }
        let mut clients = Vec::new();
        let mut names = BTreeSet::new();
        let mut holds_secret = false;
        for c in &raw.client {
            check_name(&c.name).map_err(|e| cfg_err(path, format!("client: {e}")))?;
            if !names.insert(c.name.clone()) {
                return Err(cfg_err(
                    path,
                    format!("client {:?} is listed twice", c.name),
                ));
            }
            let at = |what: String| cfg_err(path, format!("client {:?}: {what}", c.name));
            let key = match (&c.x25519, &c.psk_file, &c.fwknop_key, &c.fwknop_hmac_key) {
                (Some(k), None, None, None) => {
                    ClientKey::X25519(unb64_32(k).map_err(|e| at(format!("x25519: {e}")))?)
                }
                (None, Some(f), None, None) => {
                    let text = keys::read_private(&rel(f))?;
                    let kf: ClientKeyFile = toml::from_str(&text)
                        .map_err(|e| at(format!("psk_file: {}", keys::toml_error(&text, &e))))?;
                    if kf.kind != KeyKind::Psk {
                        return Err(at(
                            "psk_file holds an x25519 key, not a pre-shared key".into()
                        ));
                    }
                    ClientKey::Psk(unb64_32(&kf.secret).map_err(|e| at(format!("psk_file: {e}")))?)
                }
                (None, None, Some(k), Some(h)) => {
                    holds_secret = true;
                    let dec = |s: &str, what: &str| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD
                            .decode(s.trim())
                            .ok()
                            .filter(|b| !b.is_empty() && b.len() <= 128)
                            .ok_or_else(|| {
                                at(format!("{what}: not a base64 key (from fwknop --key-gen)"))
                            })
                    };
                    ClientKey::Fwknop {
                        key: dec(k, "fwknop_key")?,
                        hmac_key: dec(h, "fwknop_hmac_key")?,
                    }
                }
                _ => return Err(at(
                    "give exactly one key: x25519, psk_file, or fwknop_key with fwknop_hmac_key"
                        .into(),
                )),
            };
            let allow: BTreeSet<PortProto> = ports(path, "allow", &c.allow)?.into_iter().collect();
            if allow.is_empty() {
                return Err(at("allow lists no port".into()));
            }
            let max = span(
                path,
                "max_open_for",
                c.max_open_for.as_deref(),
                max_open_for,
            )?;
            clients.push(Client {
                name: c.name.clone(),
                key,
                allow,
                open_other: c.open_other,
                max_open_for: max.min(max_open_for),
            });
        }
        if holds_secret && mode & 0o077 != 0 {
            return Err(cfg_err(
                path,
                format!(
                    "holds fwknop keys but is readable by others (mode {:04o}); run chmod 600",
                    mode & 0o7777
                ),
            ));
        }
        let mut knocks = Vec::new();
        for k in &raw.knock {
            check_name(&k.name).map_err(|e| cfg_err(path, format!("knock: {e}")))?;
            if !names.insert(k.name.clone()) {
                return Err(cfg_err(path, format!("name {:?} is used twice", k.name)));
            }
            let at = |what: String| cfg_err(path, format!("knock {:?}: {what}", k.name));
            let kind = match (&k.one_time_key_file, k.sequence.is_empty()) {
                (None, false) => {
                    let seq = ports(path, "sequence", &k.sequence)?;
                    if seq.len() < 2 || seq.len() > 16 {
                        return Err(at("a sequence has 2 to 16 ports".into()));
                    }
                    KnockKind::Fixed(seq)
                }
                (Some(f), true) => {
                    let text = keys::read_private(&rel(f))?;
                    let kf: ClientKeyFile = toml::from_str(&text).map_err(|e| {
                        at(format!(
                            "one_time_key_file: {}",
                            keys::toml_error(&text, &e)
                        ))
                    })?;
                    let key =
                        unb64_32(&kf.secret).map_err(|e| at(format!("one_time_key_file: {e}")))?;
                    let range = k.one_time_ports.as_deref().unwrap_or("40000-40999");
                    let (a, b) = range
                        .split_once('-')
                        .and_then(|(a, b)| {
                            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                        })
                        .filter(|(a, b)| *a > 0 && b > a && b - a >= 15)
                        .ok_or_else(|| {
                            at("one_time_ports: a range LOW-HIGH of at least 16 ports".into())
                        })?;
                    let steps = k.steps.unwrap_or(3);
                    if !(2..=8).contains(&steps) {
                        return Err(at("steps: 2 to 8".into()));
                    }
                    let period =
                        span(path, "period", k.period.as_deref(), Duration::from_secs(30))?;
                    if period < Duration::from_secs(5) {
                        return Err(at("period: at least 5s".into()));
                    }
                    KnockKind::OneTime {
                        key,
                        steps,
                        range: (a, b),
                        period,
                    }
                }
                _ => return Err(at("give either sequence or one_time_key_file".into())),
            };
            let open = ports(path, "open", &k.open)?;
            if open.is_empty() {
                return Err(at("open lists no port".into()));
            }
            knocks.push(Knock {
                name: k.name.clone(),
                kind,
                within: span(path, "within", k.within.as_deref(), Duration::from_secs(10))?,
                open,
                open_for: span(path, "open_for", k.open_for.as_deref(), open_for)?
                    .min(max_open_for),
            });
        }
        let server_secret = if clients
            .iter()
            .any(|c| matches!(c.key, ClientKey::X25519(_)))
        {
            let f = raw.server_key.as_deref().ok_or_else(|| {
                cfg_err(
                    path,
                    "x25519 clients need server_key (the guard's key file)",
                )
            })?;
            let p = rel(f);
            let text = keys::read_private(&p)?;
            let sk: ServerKeyFile = toml::from_str(&text).map_err(|e| GuardError::Key {
                path: portolan_core::escape::for_terminal(&p.display().to_string()).into_owned(),
                reason: keys::toml_error(&text, &e),
            })?;
            Some(unb64_32(&sk.secret).map_err(|e| GuardError::Key {
                path: portolan_core::escape::for_terminal(&p.display().to_string()).into_owned(),
                reason: e,
            })?)
        } else {
            None
        };
        if clients.is_empty() && knocks.is_empty() {
            return Err(cfg_err(
                path,
                "no client and no knock: nothing could ever open a port",
            ));
        }
        Ok(GuardConfig {
            path: path.to_owned(),
            spa_port,
            window,
            open_for,
            max_open_for,
            nflog_group: raw.nflog_group.unwrap_or(DEFAULT_NFLOG_GROUP),
            server_secret,
            state_dir: rel(raw.state_dir.as_deref().unwrap_or(Path::new("state"))),
            guarded,
            clients,
            knocks,
        })
    }

    /// Every port the guard's rules must log and drop for knocks (fixed sequences' ports,
    /// and one-time ranges as `(low, high)`).
    pub fn knock_ports(&self) -> (Vec<PortProto>, Vec<(u16, u16)>) {
        let mut fixed = BTreeSet::new();
        let mut ranges = Vec::new();
        for k in &self.knocks {
            match &k.kind {
                KnockKind::Fixed(seq) => fixed.extend(seq.iter().copied()),
                KnockKind::OneTime { range, .. } => ranges.push(*range),
            }
        }
        (fixed.into_iter().collect(), ranges)
    }
}

/// What `portolan guard init` wrote.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub config: PathBuf,
    pub server_key: PathBuf,
    pub client_key: PathBuf,
    pub server_public: String,
}

/// Writes a working `DIR/guard.toml`, the guard's key `DIR/server.key` and the client's
/// key `DIR/CLIENT.key` (both mode 0600). Refuses to replace any existing file.
pub fn init(
    dir: &Path,
    guarded: &[PortProto],
    client: &str,
    spa_port: u16,
    host: Option<IpAddr>,
) -> Result<Initialized, GuardError> {
    init_with(dir, guarded, client, spa_port, host, false)
}

/// [`init`], and with `one_time` also a one-time knock sequence (`[[knock]]` named
/// `one-time`) whose shared key goes to `DIR/knock.key`, for clients that cannot send a
/// packet but can knock (`portolan knock HOST --one-time-key knock.key`).
pub fn init_with(
    dir: &Path,
    guarded: &[PortProto],
    client: &str,
    spa_port: u16,
    host: Option<IpAddr>,
    one_time: bool,
) -> Result<Initialized, GuardError> {
    check_name(client).map_err(GuardError::Config)?;
    if guarded.is_empty() {
        return Err(GuardError::Config(
            "give at least one port to guard (--port 22/tcp)".into(),
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| GuardError::io(format!("cannot create {}", dir.display()), e))?;
    let config = dir.join("guard.toml");
    let server_key = dir.join("server.key");
    let client_key = dir.join(format!("{client}.key"));
    let knock_key = dir.join("knock.key");
    for p in [&config, &server_key, &client_key, &knock_key] {
        if p.exists() {
            return Err(GuardError::Config(format!(
                "{} exists already: init never replaces a file",
                portolan_core::escape::for_terminal(&p.display().to_string())
            )));
        }
    }
    let (ss, cs) = (random32(), random32());
    let (sp, cp) = (public_of(&ss), public_of(&cs));
    keys::write_private(
        &server_key,
        &format!(
            "# portolan guard's own key: keep it private (mode 0600).\nsecret = {:?}\n",
            b64(&ss)
        ),
    )?;
    let kf = ClientKeyFile {
        client: client.to_owned(),
        kind: KeyKind::X25519,
        secret: b64(&cs),
        server_public: Some(b64(&sp)),
        spa_port: (spa_port != DEFAULT_SPA_PORT).then_some(spa_port),
    };
    let mut ktext = kf.to_text();
    if let Some(h) = host {
        ktext = ktext.replacen('\n', &format!("\n# for the guard at {h}\n"), 1);
    }
    keys::write_private(&client_key, &ktext)?;
    let list = guarded
        .iter()
        .map(|p| format!("{:?}", p.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "# portolan guard: these ports are dropped for everyone until a client opens them\n\
         # for its own address with one packet (`portolan knock HOST -p PORT --key {client}.key`).\n\
         spa_port = {spa_port}\n\
         window = \"30s\"\n\
         open_for = \"30s\"\n\
         max_open_for = \"1h\"\n\
         server_key = \"server.key\"\n\
         state_dir = \"state\"\n\
         guarded = [{list}]\n\
         \n\
         [[client]]\n\
         name = {client:?}\n\
         x25519 = {:?}\n\
         allow = [{list}]\n",
        b64(&cp)
    );
    let mut text = text;
    if one_time {
        let kk = ClientKeyFile {
            client: "knock".to_owned(),
            kind: KeyKind::Psk,
            secret: b64(&random32()),
            server_public: None,
            spa_port: None,
        };
        keys::write_private(&knock_key, &kk.to_text())?;
        let _ = write!(
            text,
            "\n# A one-time knock sequence: 3 TCP ports of 40000-40999, new every 30 s, each\n\
             # opening once (`portolan knock HOST --one-time-key knock.key -p PORT`).\n\
             [[knock]]\n\
             name = \"one-time\"\n\
             one_time_key_file = \"knock.key\"\n\
             one_time_ports = \"40000-40999\"\n\
             steps = 3\n\
             period = \"30s\"\n\
             within = \"10s\"\n\
             open = [{list}]\n"
        );
    }
    keys::write_private(&config, &text)?;
    Ok(Initialized {
        config,
        server_key,
        client_key,
        server_public: b64(&sp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pg-cfg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn init_writes_a_configuration_that_loads() {
        let d = tmp("init");
        let p: PortProto = "22/tcp".parse().unwrap();
        let out = init(&d, &[p], "alice", DEFAULT_SPA_PORT, None).unwrap();
        let c = GuardConfig::load(&out.config).unwrap();
        assert_eq!(c.guarded, vec![p]);
        assert_eq!(c.clients.len(), 1);
        assert_eq!(c.clients[0].name, "alice");
        assert!(c.clients[0].allow.contains(&p));
        assert!(c.server_secret.is_some());
        assert_eq!(c.window, Duration::from_secs(30));
        let k = ClientKeyFile::load(&out.client_key).unwrap();
        assert_eq!(k.server_public.as_deref(), Some(out.server_public.as_str()));
        assert!(
            init(&d, &[p], "alice", DEFAULT_SPA_PORT, None).is_err(),
            "never replaces"
        );
        assert!(init(&tmp("bad"), &[p], "../x", DEFAULT_SPA_PORT, None).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn hostile_configurations_are_clear_errors() {
        let d = tmp("hostile");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("guard.toml");
        let cases: &[(&str, &str)] = &[
            ("", "nothing could ever open"),
            (
                "spa_port = 0\n[[client]]\nname=\"a\"\npsk_file=\"x\"\nallow=[\"22/tcp\"]",
                "spa_port",
            ),
            ("window = \"forever\"", "window"),
            ("guarded = [\"22/sctp\"]", "guarded"),
            (
                "[[client]]\nname = \"<script>\"\nx25519 = \"AAAA\"\nallow=[\"22\"]",
                "bad name",
            ),
            (
                "[[client]]\nname = \"a\"\nallow=[\"22\"]",
                "exactly one key",
            ),
            (
                "[[client]]\nname = \"a\"\nx25519 = \"AAAA\"\nallow=[\"22\"]",
                "x25519",
            ),
            (
                "[[knock]]\nname = \"k\"\nsequence = [\"1/tcp\"]\nopen=[\"22\"]",
                "2 to 16",
            ),
            ("bogus = 1", "unknown field"),
            ("[[client]\n", "guard.toml"),
            ("open_for = \"2h\"", "at most max_open_for"),
        ];
        for (text, want) in cases {
            std::fs::write(&p, text).unwrap();
            let e = GuardConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\u{1b}'));
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn knocks_load() {
        let d = tmp("knock");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("guard.toml");
        std::fs::write(
            &p,
            "guarded=[\"22/tcp\"]\n[[knock]]\nname=\"legacy\"\nsequence=[\"7000/tcp\",\"8000/udp\",\"9000\"]\nopen=[\"22/tcp\"]\nwithin=\"5s\"\n",
        )
        .unwrap();
        let c = GuardConfig::load(&p).unwrap();
        assert_eq!(c.knocks[0].within, Duration::from_secs(5));
        assert_eq!(c.knock_ports().0.len(), 3);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
