//! This machine's own listeners asked what they are (`ls --probe`, `who --probe`,
//! `audit --probe`): which listeners get probes, how a wildcard listener is reached, the
//! short limits of a local run, and TCP and UDP probed at once.
//!
//! The caller hands the listeners over as plain values (transport and local address, from
//! whatever inventory it keeps); the reports come back keyed by the same pair.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use portolan_core::{Protocol, SocketState};

use crate::udp::probe_many_udp;
use crate::{probe_many, Options, Report, Signatures, Transport};

/// TCP listeners probed at once.
const TCP_THREADS: usize = 32;
/// UDP listeners probed at once.
const UDP_THREADS: usize = 8;

/// A local socket that can be asked what it is: a TCP one in LISTEN, or an unconnected UDP
/// one, with the address it is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    pub transport: Transport,
    pub local: SocketAddr,
}

impl Listener {
    /// The listener a socket is, if it is one: TCP in LISTEN, or unconnected UDP. A UDP
    /// socket on the same address and port as a TCP listener is not what answers there,
    /// nor the other way round, so the transport is part of the key.
    pub fn of(proto: Protocol, state: SocketState, local: SocketAddr) -> Option<Listener> {
        let transport = match (proto, state) {
            (Protocol::Tcp, SocketState::Listen) => Transport::Tcp,
            (Protocol::Udp, SocketState::Unconn) => Transport::Udp,
            _ => return None,
        };
        Some(Listener { transport, local })
    }
}

/// What answered, by listener (ordered by transport, then address, for stable output).
#[derive(Debug, Clone, Default)]
pub struct Probed(BTreeMap<Listener, Report>);

impl Probed {
    /// Nothing probed (probing not asked for).
    pub fn new() -> Probed {
        Probed::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The report of one listener, if it was probed.
    pub fn get(&self, l: &Listener) -> Option<&Report> {
        self.0.get(l)
    }

    /// The report of a socket, if it is a probed listener.
    pub fn of_socket(
        &self,
        proto: Protocol,
        state: SocketState,
        local: SocketAddr,
    ) -> Option<&Report> {
        Listener::of(proto, state, local).and_then(|l| self.0.get(&l))
    }

    /// Every probed listener and its report, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Listener, &Report)> {
        self.0.iter()
    }

    /// The reports, in listener order.
    pub fn into_reports(self) -> Vec<Report> {
        self.0.into_values().collect()
    }
}

/// Where to connect to reach a listener from this machine: a wildcard listener through
/// loopback of its family, any other at its own address.
pub fn reach(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// The limits of a local run: this machine answers in microseconds, so waits are short.
pub fn options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(1),
        banner_wait: Duration::from_millis(1500),
        read_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

/// Whether `l` gets probes: every TCP listener; a UDP one only on a port that a UDP probe
/// names (DNS, NTP, SNMP, ...), since a UDP service answers only what it understands and
/// other ports are not sent guesses.
pub fn wanted(l: &Listener, sigs: &Signatures) -> bool {
    match l.transport {
        Transport::Tcp => true,
        Transport::Udp => sigs
            .probes_for(Transport::Udp, l.local.port())
            .first()
            .is_some_and(|p| p.ports.contains(&l.local.port())),
    }
}

/// Probes the wanted listeners among `listeners` (see [`wanted`]; duplicates once), TCP and
/// UDP at the same time, with [`options`]' limits, each reached through [`reach`].
pub fn probe_listeners(listeners: impl IntoIterator<Item = Listener>, sigs: &Signatures) -> Probed {
    let mut chosen: Vec<Listener> = listeners.into_iter().filter(|l| wanted(l, sigs)).collect();
    chosen.sort();
    chosen.dedup();
    let (tcp, udp): (Vec<Listener>, Vec<Listener>) = chosen
        .into_iter()
        .partition(|l| l.transport == Transport::Tcp);
    let targets = |ls: &[Listener]| -> Vec<(SocketAddr, Option<String>)> {
        ls.iter().map(|l| (reach(l.local), None)).collect()
    };
    let (ttargets, utargets) = (targets(&tcp), targets(&udp));
    let opts = options();
    let (treports, ureports) = std::thread::scope(|scope| {
        let u = scope.spawn(|| probe_many_udp(&utargets, sigs, &opts, UDP_THREADS));
        let t = probe_many(&ttargets, sigs, &opts, TCP_THREADS);
        // A panic in the UDP worker is a bug: pass it on.
        (t, u.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    });
    Probed(
        tcp.into_iter()
            .zip(treports)
            .chain(udp.into_iter().zip(ureports))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_through_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(reach(a("0.0.0.0:80")), a("127.0.0.1:80"));
        assert_eq!(reach(a("[::]:80")), a("[::1]:80"));
        assert_eq!(reach(a("192.0.2.7:80")), a("192.0.2.7:80"));
    }

    #[test]
    fn listeners_and_which_get_probes() {
        let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let tcp = Listener::of(Protocol::Tcp, SocketState::Listen, local).unwrap();
        let udp = Listener::of(Protocol::Udp, SocketState::Unconn, local).unwrap();
        assert_ne!(tcp, udp);
        assert!(Listener::of(Protocol::Tcp, SocketState::Established, local).is_none());
        assert!(Listener::of(Protocol::Udp, SocketState::Established, local).is_none());
        let sigs = Signatures::builtin();
        assert!(wanted(&tcp, &sigs) && wanted(&udp, &sigs));
        // No UDP probe names port 40000: not sent guesses.
        let odd = Listener {
            transport: Transport::Udp,
            local: "127.0.0.1:40000".parse().unwrap(),
        };
        assert!(!wanted(&odd, &sigs));
        assert!(wanted(
            &Listener {
                transport: Transport::Tcp,
                ..odd
            },
            &sigs
        ));
    }
}
