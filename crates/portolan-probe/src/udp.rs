//! Service detection over UDP: DNS, NTP, SNMP and whatever the signature files add.
//!
//! UDP has no connection and no banner: a service answers a request it understands and
//! ignores the rest. So each UDP probe of the signature files (`proto = "udp"`, those
//! that name the port first) is sent on its own connected socket, at most twice within the
//! read timeout (a datagram may be lost), and its first answer is matched. A connected
//! socket takes datagrams from the probed address only, and reports the ICMP "port
//! unreachable" of a closed port as `ECONNREFUSED`.
//!
//! Most answers are matched raw, like TCP ones. The answers of a few probes carry what
//! matters in binary fields that a pattern cannot read (NTP's stratum, SNMP's BER-encoded
//! values): those are decoded in code first ([`decoded`]) and the patterns read the text.
//!
//! An identity without product or version (NTP's mode-4 answer gives only its stratum and
//! reference) lets the probes that can name the same service go on: their findings are
//! merged in (NTP's READVAR gives the product and version).
//!
//! Answers are one datagram each, read into a 64 KiB buffer and matched on at most
//! `Options::read_limit` bytes; everything taken from them is escaped.

mod ber;
mod ntp;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use ber::snmp_text;
pub use ntp::ntp_text;

use crate::{banner_text, host_header, identify, with_host, Identity, Options, Report};
use crate::{Probe, Signatures, Transport};

/// The error of a closed port: an ICMP port unreachable came back.
pub const CLOSED: &str = "closed (port unreachable)";
/// The error of a port that answered no probe: open and silent, or filtered.
pub const NO_ANSWER: &str = "no answer (open|filtered)";

/// The largest datagram.
const DATAGRAM_MAX: usize = 65_536;
/// Sends of one probe at most.
const SENDS: u32 = 2;

/// A decoder: an answer's text form, or `None` when the answer is not of its protocol.
type Decoder = fn(&[u8]) -> Option<Vec<u8>>;

/// Probes whose answers are decoded in code before patterns read them, and the decoder.
/// See the module comment for why these are code.
const DECODERS: &[(&str, Decoder)] = &[
    ("ntp-client", ntp::ntp_text),
    ("snmp-get-public", ber::snmp_text),
];

/// The form of `probe`'s answer that its patterns read: the decoded text for the probes
/// of [`DECODERS`] when the answer decodes, `None` otherwise (the raw bytes are matched).
pub fn decoded(probe: &str, data: &[u8]) -> Option<Vec<u8>> {
    DECODERS
        .iter()
        .find(|(name, _)| *name == probe)
        .and_then(|(_, decode)| decode(data))
}

/// The first match of `probe`'s signatures against a UDP answer (decoded first where the
/// probe's answers are binary, see [`decoded`]). Fields are escaped.
pub fn identify_udp(sigs: &Signatures, probe: &str, data: &[u8]) -> Option<Identity> {
    match decoded(probe, data) {
        Some(text) => identify(sigs, probe, &text),
        None => identify(sigs, probe, data),
    }
}

/// What one probe got.
#[derive(Debug)]
enum Exchange {
    /// A datagram, its length in the buffer.
    Answer(usize),
    /// ICMP port unreachable.
    Closed,
    /// Nothing within the read timeout.
    Silent,
    /// The socket could not be made or the datagram not sent.
    Failed(String),
}

/// A UDP socket of `addr`'s family, connected to it.
fn connected(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0))?;
    s.connect(addr)?;
    Ok(s)
}

/// Sends `payload` and waits for one datagram: the first send waits half the read timeout,
/// the second (if nothing came) the rest.
fn exchange(addr: SocketAddr, payload: &[u8], timeout: Duration, buf: &mut [u8]) -> Exchange {
    let s = match connected(addr) {
        Ok(s) => s,
        Err(e) => return Exchange::Failed(e.to_string()),
    };
    let start = Instant::now();
    for attempt in 1..=SENDS {
        match s.send(payload) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Exchange::Closed,
            Err(e) => return Exchange::Failed(e.to_string()),
        }
        let until = start + timeout * attempt / SENDS;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match s.recv(buf) {
                Ok(n) => return Exchange::Answer(n),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Exchange::Closed,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                // Interrupted, or an ICMP error other than port unreachable: keep
                // waiting until the deadline (checked above).
                Err(_) => {}
            }
        }
    }
    Exchange::Silent
}

/// Whether `p` has a signature that names `service` (so it may add to a partial identity).
fn can_name(sigs: &Signatures, p: &Probe, service: &str) -> bool {
    sigs.matches
        .iter()
        .any(|m| m.probe == p.name && m.service == service)
}

/// Whether an identity says what the software is.
fn named(id: &Identity) -> bool {
    id.product.is_some() || id.version.is_some()
}

/// `first` completed with what `more` found about the same service: product, version and
/// CPE from `more`, the info of both. The probe is the one that named the product.
fn merge(first: Identity, more: Identity) -> Identity {
    if more.service != first.service {
        return first;
    }
    let info = match (first.info, more.info) {
        (Some(a), Some(b)) if a != b => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    Identity {
        service: first.service,
        product: first.product.or(more.product),
        version: first.version.or(more.version),
        info,
        cpe: first.cpe.or(more.cpe),
        probe: more.probe,
        weak: first.weak && more.weak,
    }
}

/// Probes one UDP port with the UDP probes of `sigs`: those that name the port first, one
/// after the other (a service that rate-limits a client, as ntpd's `limited` does, sees
/// them spaced, and each can complete what the one before found); then all the others at
/// once, each on its own socket, so a silent port costs one read timeout for them, not one
/// per probe. `name` is the host name used in payloads (`{host}`), if the user gave one.
///
/// `error` is [`CLOSED`] when the port answered with ICMP port unreachable, [`NO_ANSWER`]
/// when no probe got an answer; an answer that matched nothing is kept (escaped) in
/// `banner`.
pub fn probe_udp(addr: SocketAddr, name: Option<&str>, sigs: &Signatures, o: &Options) -> Report {
    let host = host_header(addr, name);
    let (hinted, others): (Vec<&Probe>, Vec<&Probe>) = sigs
        .probes_for(Transport::Udp, addr.port())
        .into_iter()
        .partition(|p| p.ports.contains(&addr.port()));
    let mut run = UdpRun {
        sigs,
        read_limit: o.read_limit,
        report: Report::new(addr, Transport::Udp),
        answered: false,
        found: None,
        done: false,
    };
    let mut buf = vec![0u8; DATAGRAM_MAX];
    for p in hinted {
        if run.done {
            break;
        }
        if run.wanted(p) {
            let ex = exchange(addr, &with_host(&p.send, &host), o.read_timeout, &mut buf);
            run.take(p, ex, &buf);
        }
    }
    let rest: Vec<&Probe> = others.into_iter().filter(|p| run.wanted(p)).collect();
    if !run.done && !rest.is_empty() {
        // A sliding pool, as for TCP's active probes: at most PARALLEL_PROBES sockets of
        // this port in flight.
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<Exchanged>>> = rest.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..crate::PARALLEL_PROBES.min(rest.len()) {
                let (next, slots, rest, host) = (&next, &slots, &rest, host.as_str());
                scope.spawn(move || {
                    let mut buf = vec![0u8; DATAGRAM_MAX];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = rest.get(i) else { break };
                        let ex =
                            exchange(addr, &with_host(&p.send, host), o.read_timeout, &mut buf);
                        let kept = match ex {
                            Exchange::Answer(n) => buf[..n].to_vec(),
                            _ => Vec::new(),
                        };
                        *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some((ex, kept));
                    }
                });
            }
        });
        // A prober thread that panicked is a bug: the scope passes its panic on.
        let answers = slots.into_iter().map(|m| {
            m.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or((Exchange::Silent, Vec::new()))
        });
        for (p, (ex, answer)) in rest.into_iter().zip(answers) {
            if run.done {
                break;
            }
            if run.wanted(p) {
                run.take(p, ex, &answer);
            }
        }
    }
    let mut report = run.report;
    if report.error.is_none() {
        report.identity = run.found;
        if !run.answered {
            report.error = Some(NO_ANSWER.to_owned());
        }
    }
    report
}

/// A probe's exchange and the answer's bytes (empty when none came).
type Exchanged = (Exchange, Vec<u8>);

/// One UDP port's probing in progress.
struct UdpRun<'a> {
    sigs: &'a Signatures,
    read_limit: usize,
    report: Report,
    /// Whether any probe got an answer.
    answered: bool,
    /// What the answers named so far (merged).
    found: Option<Identity>,
    /// The port is settled (closed, failed, or closed after answering).
    done: bool,
}

impl UdpRun<'_> {
    /// Whether `p` is still worth its answer: nothing named the software yet, and `p` can
    /// add to the service found (when one was).
    fn wanted(&self, p: &Probe) -> bool {
        match &self.found {
            Some(f) => !named(f) && can_name(self.sigs, p, &f.service),
            None => true,
        }
    }

    /// Weighs probe `p`'s exchange (`buf` holds an answer's bytes).
    fn take(&mut self, p: &Probe, ex: Exchange, buf: &[u8]) {
        let n = match ex {
            Exchange::Answer(n) => n,
            Exchange::Silent => return,
            // A port that answered and then refuses or fails has just closed: keep what
            // it said.
            Exchange::Closed | Exchange::Failed(_) if self.answered => {
                self.done = true;
                return;
            }
            Exchange::Closed => {
                self.report.error = Some(CLOSED.to_owned());
                self.done = true;
                return;
            }
            Exchange::Failed(e) => {
                self.report.error = Some(e);
                self.done = true;
                return;
            }
        };
        self.answered = true;
        let data = &buf[..n.min(self.read_limit)];
        if self.report.banner.is_none() {
            self.report.banner = banner_text(data);
        }
        if let Some(id) = identify_udp(self.sigs, &p.name, data) {
            self.found = Some(match self.found.take() {
                Some(first) => merge(first, id),
                None => id,
            });
        }
    }
}

/// Probes many UDP ports with the same limits, `threads` at a time; reports come back in
/// the order given. The second element is the host name, if the user gave one.
pub fn probe_many_udp(
    targets: &[(SocketAddr, Option<String>)],
    sigs: &Signatures,
    o: &Options,
    threads: usize,
) -> Vec<Report> {
    crate::on_pool(targets, threads, |(addr, name)| {
        probe_udp(*addr, name.as_deref(), sigs, o)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigs() -> Signatures {
        Signatures::builtin()
    }

    #[test]
    fn udp_probes_are_ordered_by_port() {
        let s = sigs();
        let names = |port| -> Vec<String> {
            s.probes_for(Transport::Udp, port)
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(names(53)[0], "dns-version-bind");
        assert_eq!(names(123)[..2], ["ntp-client", "ntp-readvar"]);
        assert_eq!(names(161)[0], "snmp-get-public");
        // The DNS-over-TCP probe is a TCP probe, first on port 53.
        assert_eq!(s.active_probes(53)[0].name, "dns-version-bind-tcp");
        assert!(!names(53).contains(&"dns-version-bind-tcp".to_owned()));
    }

    #[test]
    fn answers_are_decoded_and_named() {
        let s = sigs();
        // A DNS answer for version.bind, as dnsmasq gives it.
        let mut dns =
            b"pt\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03"
                .to_vec();
        dns.extend(b"\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00\x00\x0d\x0cdnsmasq-2.90");
        let id = identify_udp(&s, "dns-version-bind", &dns).unwrap();
        assert_eq!(
            (
                id.service.as_str(),
                id.product.as_deref(),
                id.version.as_deref()
            ),
            ("domain", Some("dnsmasq"), Some("2.90"))
        );
        let mut tcp = vec![0, u8::try_from(dns.len()).unwrap()];
        tcp.extend(&dns);
        let id = identify(&s, "dns-version-bind-tcp", &tcp).unwrap();
        assert_eq!(id.version.as_deref(), Some("2.90"));
        // NTP: the mode-4 header gives the info only.
        let mut h = [0u8; 48];
        h[0] = 0x24;
        h[1] = 3;
        h[12..16].copy_from_slice(&[127, 0, 0, 1]);
        let id = identify_udp(&s, "ntp-client", &h).unwrap();
        assert_eq!(id.service, "ntp");
        assert_eq!(
            id.info.as_deref(),
            Some("NTP v4; stratum 3; refid 127.0.0.1; leap 0")
        );
        assert!(!named(&id));
        let mut rv = b"\x16\x82\x00\x01\x00\x00\x00\x00\x00\x00\x00\x40".to_vec();
        rv.extend(b"version=\"ntpd ntpsec-1.2.2 2023-05-16T15:18:06Z\", processor=\"x86_64\"");
        let more = identify_udp(&s, "ntp-readvar", &rv).unwrap();
        let both = merge(id, more);
        assert_eq!(
            (both.product.as_deref(), both.version.as_deref()),
            (Some("NTPsec"), Some("1.2.2"))
        );
        assert!(both.info.unwrap().contains("stratum 3"));
        // Garbage is no identity, and no decoder panics on it.
        for junk in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", &[0xff; 100]] {
            for p in [
                "ntp-client",
                "snmp-get-public",
                "ntp-readvar",
                "dns-version-bind",
            ] {
                let _ = identify_udp(&s, p, junk);
            }
        }
    }

    #[test]
    fn a_closed_port_and_a_silent_one_are_told_apart() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let o = Options {
            read_timeout: Duration::from_millis(500),
            ..Options::default()
        };
        let s = sigs();
        let t = Instant::now();
        let r = probe_udp(SocketAddr::from(([127, 0, 0, 1], port)), None, &s, &o);
        assert_eq!(r.error.as_deref(), Some(NO_ANSWER));
        assert!(r.identity.is_none() && r.banner.is_none());
        // No probe names this port: they all go out at once, and the silence costs about
        // one read timeout (one after the other, it would cost one per probe).
        let probes = u32::try_from(s.probes_for(Transport::Udp, port).len()).unwrap();
        assert!(probes >= 4, "{probes}");
        let took = t.elapsed();
        assert!(took < o.read_timeout * 3, "{took:?} for {probes} probes");
        drop(silent);
        let r = probe_udp(SocketAddr::from(([127, 0, 0, 1], port)), None, &s, &o);
        assert_eq!(r.error.as_deref(), Some(CLOSED));
        assert_eq!(r.proto, Transport::Udp);
    }
}
