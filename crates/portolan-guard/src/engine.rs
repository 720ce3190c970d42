//! The guard's decisions, without I/O: a packet seen at the SPA port or a knock port goes
//! in, a decision comes out (open these ports for this address for this long, or why
//! not). The run loop ([`crate::run`]) feeds it from NFLOG and applies grants to the
//! nftables set; tests feed it directly.
//!
//! Order of checks for an SPA packet: the format's MAC or tag (cheap, constant time, no
//! public-key work per packet) -> the client's key id -> the time window -> the replay
//! cache -> the policy (ports, address) -> recorded in the replay cache (on disk) -> grant.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{ClientKey, GuardConfig};
use crate::fwknop::{self, FwknopKey};
use crate::knock::{Outcome, Tracker};
use crate::replay::{ReplayCache, Seen};
use crate::spa::{Opener, SealKey};
use crate::{GuardError, PortProto, Rejection, Request, L4};

/// TCP flag bits.
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// A packet the guard's rules logged, as far as the guard cares.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    pub source: IpAddr,
    pub proto: L4,
    pub dport: u16,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// The transport payload.
    pub payload: &'a [u8],
}

/// How a request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// portolan's own SPA packet.
    Spa,
    /// An fwknop SPA packet.
    Fwknop,
    /// A knock sequence.
    Knock,
}

impl Via {
    /// The name in events and metrics labels: `spa`, `fwknop`, `knock`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Via::Spa => "spa",
            Via::Fwknop => "fwknop",
            Via::Knock => "knock",
        }
    }
}

/// Access to give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub client: String,
    /// The address opened for.
    pub addr: IpAddr,
    pub ports: Vec<PortProto>,
    #[serde(serialize_with = "secs")]
    pub duration: Duration,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// One decision: an event for the sinks and a counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The packet's source address.
    pub source: IpAddr,
    pub via: Via,
    /// `accepted`, or the rejection's name.
    pub result: &'static str,
    /// The client, when the packet named one we know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
    /// Why, for people (no secret, no packet content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Decision {
    fn rejected(
        source: IpAddr,
        via: Via,
        why: Rejection,
        client: Option<String>,
        detail: Option<String>,
    ) -> Decision {
        Decision {
            source,
            via,
            result: why.as_str(),
            client,
            grant: None,
            detail,
        }
    }

    pub fn accepted(&self) -> bool {
        self.grant.is_some()
    }
}

/// The guard's state: keys, knock progress, replay cache.
#[derive(Debug)]
pub struct Engine {
    cfg: GuardConfig,
    opener: Opener,
    fwknop: Vec<FwknopKey>,
    tracker: Tracker,
    replay: ReplayCache,
}

impl Engine {
    /// Derives every client's key and takes the replay cache.
    pub fn new(cfg: GuardConfig, replay: ReplayCache) -> Result<Engine, GuardError> {
        let mut opener = Opener::default();
        let mut fw = Vec::new();
        for c in &cfg.clients {
            match &c.key {
                ClientKey::X25519(public) => {
                    let secret = cfg.server_secret.ok_or_else(|| {
                        GuardError::Config("x25519 clients need server_key".into())
                    })?;
                    let server_public = crate::keys::public_of(&secret);
                    let key = SealKey::x25519(&secret, public, public, &server_public).ok_or_else(
                        || {
                            GuardError::Config(format!(
                                "client {:?}: its x25519 key is not usable (a low-order point)",
                                c.name
                            ))
                        },
                    )?;
                    opener.add(&c.name, key).map_err(GuardError::Config)?;
                }
                ClientKey::Psk(psk) => opener
                    .add(&c.name, SealKey::psk(psk))
                    .map_err(GuardError::Config)?,
                ClientKey::Fwknop { key, hmac_key } => fw.push(FwknopKey {
                    client: c.name.clone(),
                    key: key.clone(),
                    hmac_key: hmac_key.clone(),
                }),
            }
        }
        let tracker = Tracker::new(cfg.knocks.clone());
        Ok(Engine {
            cfg,
            opener,
            fwknop: fw,
            tracker,
            replay,
        })
    }

    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// A packet the guard's rules logged: `proto`/`dport` where it went, `tcp_flags` for
    /// TCP, `payload` its transport payload. `None` when it means nothing (a knock port's
    /// packet in the middle of a sequence, a TCP segment that is not a SYN).
    pub fn on_packet(
        &mut self,
        pkt: &Packet<'_>,
        now: Instant,
        unix: i64,
    ) -> Result<Option<Decision>, GuardError> {
        let Packet {
            source,
            proto,
            dport,
            tcp_flags,
            payload,
        } = *pkt;
        if proto == L4::Udp && dport == self.cfg.spa_port {
            return self.on_spa(source, payload, unix).map(Some);
        }
        if proto == L4::Tcp && (tcp_flags & SYN == 0 || tcp_flags & ACK != 0) {
            return Ok(None);
        }
        let port = PortProto { proto, port: dport };
        match self.tracker.on_packet(source, port, now, unix) {
            Outcome::Nothing => Ok(None),
            Outcome::Rejected { knock, why } => Ok(Some(Decision::rejected(
                source,
                Via::Knock,
                why,
                Some(self.tracker.defs()[knock].name.clone()),
                None,
            ))),
            Outcome::Complete { knock } => {
                let k = &self.tracker.defs()[knock];
                Ok(Some(Decision {
                    source,
                    via: Via::Knock,
                    result: "accepted",
                    client: Some(k.name.clone()),
                    grant: Some(Grant {
                        client: k.name.clone(),
                        addr: source,
                        ports: k.open.clone(),
                        duration: k.open_for,
                    }),
                    detail: None,
                }))
            }
        }
    }

    fn on_spa(
        &mut self,
        source: IpAddr,
        payload: &[u8],
        unix: i64,
    ) -> Result<Decision, GuardError> {
        let (req, via) = match self.opener.open(payload) {
            Ok(r) => (r, Via::Spa),
            Err(ours) => {
                if self.fwknop.is_empty() {
                    return Ok(Decision::rejected(source, Via::Spa, ours, None, None));
                }
                match fwknop::decode(payload, &self.fwknop) {
                    Ok(r) => (r, Via::Fwknop),
                    // Not fwknop's either: report what our own format said when the
                    // packet had our shape, else fwknop's reason.
                    Err(theirs) => {
                        let (why, via) = if payload.len() == crate::spa::PACKET_LEN
                            && payload.first() == Some(&crate::spa::VERSION)
                        {
                            (ours, Via::Spa)
                        } else {
                            (theirs, Via::Fwknop)
                        };
                        return Ok(Decision::rejected(source, via, why, None, None));
                    }
                }
            }
        };
        self.decide(source, via, req, unix)
    }

    fn decide(
        &mut self,
        source: IpAddr,
        via: Via,
        req: Request,
        unix: i64,
    ) -> Result<Decision, GuardError> {
        let who = Some(req.client.clone());
        let window = i64::try_from(self.cfg.window.as_secs()).unwrap_or(i64::MAX);
        let skew = unix.saturating_sub(req.timestamp);
        if skew.abs() > window {
            return Ok(Decision::rejected(
                source,
                via,
                Rejection::OutsideWindow,
                who,
                Some(format!(
                    "the packet's clock is {skew} s off (window {window} s)"
                )),
            ));
        }
        let Some(client) = self.cfg.clients.iter().find(|c| c.name == req.client) else {
            return Ok(Decision::rejected(
                source,
                via,
                Rejection::UnknownClient,
                who,
                None,
            ));
        };
        if let Some(p) = req.ports.iter().find(|p| !client.allow.contains(p)) {
            return Ok(Decision::rejected(
                source,
                via,
                Rejection::NotAllowed,
                who,
                Some(format!("{p} is not in the client's allow list")),
            ));
        }
        let addr = req.open_for.unwrap_or(source);
        if addr != source && !client.open_other {
            return Ok(Decision::rejected(
                source,
                via,
                Rejection::AddressNotAllowed,
                who,
                Some(format!(
                    "asked to open {addr}; the client may open only its own address"
                )),
            ));
        }
        // Recorded (and synced) before anything opens; a packet is live until its own
        // time plus the window, whichever clock is ahead.
        let expiry = req
            .timestamp
            .max(unix)
            .saturating_add(window)
            .saturating_add(1);
        match self.replay.check(req.replay_key, expiry, unix)? {
            Seen::Fresh => {}
            Seen::Replay => {
                return Ok(Decision::rejected(
                    source,
                    via,
                    Rejection::Replay,
                    who,
                    None,
                ))
            }
            Seen::Full => {
                return Ok(Decision::rejected(
                    source,
                    via,
                    Rejection::Replay,
                    who,
                    Some("the replay cache is full: refused until entries expire".into()),
                ))
            }
        }
        let duration = req
            .duration
            .unwrap_or(self.cfg.open_for)
            .min(client.max_open_for);
        Ok(Decision {
            source,
            via,
            result: "accepted",
            client: who,
            grant: Some(Grant {
                client: client.name.clone(),
                addr,
                ports: req.ports,
                duration,
            }),
            detail: None,
        })
    }

    /// Periodic housekeeping: expired knock progress and replay entries.
    pub fn tick(&mut self, now: Instant, unix: i64) {
        self.tracker.expire(now);
        self.replay.prune(unix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::init;
    use crate::keys::{unb64_32, ClientKeyFile};
    use crate::spa::{seal, Body};

    struct Setup {
        engine: Engine,
        client: SealKey,
        dir: std::path::PathBuf,
    }

    fn setup(tag: &str) -> Setup {
        let dir = std::env::temp_dir().join(format!("pg-engine-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = init(
            &dir,
            &["22/tcp".parse().unwrap()],
            "alice",
            crate::DEFAULT_SPA_PORT,
            None,
        )
        .unwrap();
        let cfg = GuardConfig::load(&out.config).unwrap();
        let kf = ClientKeyFile::load(&out.client_key).unwrap();
        let cs = unb64_32(&kf.secret).unwrap();
        let sp = unb64_32(kf.server_public.as_deref().unwrap()).unwrap();
        let cp = crate::keys::public_of(&cs);
        let client = SealKey::x25519(&cs, &sp, &cp, &sp).unwrap();
        let replay = ReplayCache::open(&dir.join("replay"), 0).unwrap();
        Setup {
            engine: Engine::new(cfg, replay).unwrap(),
            client,
            dir,
        }
    }

    const NOW: i64 = 1_790_000_000;

    fn packet(s: &SealKey, ports: &[&str], ts: i64, open_for: Option<IpAddr>) -> Vec<u8> {
        seal(
            s,
            &Body {
                timestamp: ts,
                duration: Some(Duration::from_secs(20)),
                open_for,
                ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
            },
        )
        .unwrap()
    }

    fn spa(s: &mut Engine, src: &str, pkt: &[u8]) -> Decision {
        s.on_packet(
            &Packet {
                source: src.parse().unwrap(),
                proto: L4::Udp,
                dport: crate::DEFAULT_SPA_PORT,
                tcp_flags: 0,
                payload: pkt,
            },
            Instant::now(),
            NOW,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn accept_then_refuse_replay_window_policy() {
        let Setup {
            mut engine,
            client,
            dir,
        } = setup("decide");
        let s = &client;
        let e = &mut engine;
        let pkt = packet(s, &["22/tcp"], NOW - 3, None);
        let d = spa(e, "198.18.0.2", &pkt);
        assert_eq!(d.result, "accepted", "{d:?}");
        let g = d.grant.unwrap();
        assert_eq!(g.addr, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(g.duration, Duration::from_secs(20));
        assert_eq!(g.client, "alice");
        assert_eq!(spa(e, "198.18.0.2", &pkt).result, "replay");
        assert_eq!(
            spa(e, "198.18.0.9", &pkt).result,
            "replay",
            "from another address too"
        );
        assert_eq!(
            spa(e, "198.18.0.2", &packet(s, &["22/tcp"], NOW - 31, None)).result,
            "outside_window"
        );
        assert_eq!(
            spa(e, "198.18.0.2", &packet(s, &["22/tcp"], NOW + 31, None)).result,
            "outside_window"
        );
        assert_eq!(
            spa(e, "198.18.0.2", &packet(s, &["23/tcp"], NOW, None)).result,
            "not_allowed"
        );
        let other = Some("198.18.0.77".parse().unwrap());
        assert_eq!(
            spa(e, "198.18.0.2", &packet(s, &["22/tcp"], NOW, other)).result,
            "address_not_allowed"
        );
        let mut bad = packet(s, &["22/tcp"], NOW, None);
        bad[50] ^= 1;
        assert_eq!(spa(e, "198.18.0.2", &bad).result, "bad_mac");
        assert_eq!(spa(e, "198.18.0.2", b"hello").result, "bad_mac");
        // After a restart (a new engine on the same cache file) the packet is still a replay.
        let cfg = e.config().clone();
        let replay = ReplayCache::open(&dir.join("replay"), NOW).unwrap();
        *e = Engine::new(cfg, replay).unwrap();
        assert_eq!(spa(e, "198.18.0.2", &pkt).result, "replay");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn decisions_serialize_without_secrets() {
        let Setup {
            mut engine,
            client,
            dir,
        } = setup("json");
        let s = &client;
        let e = &mut engine;
        let pkt = packet(s, &["22/tcp"], NOW, None);
        let d = spa(e, "198.18.0.2", &pkt);
        let j = serde_json::to_string(&d).unwrap();
        assert!(j.contains("\"result\":\"accepted\""), "{j}");
        assert!(j.contains("\"duration\":20"), "{j}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
