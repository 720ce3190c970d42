//! This machine's own listeners asked what they are (`ls --probe`, `who --probe`,
//! `audit --probe`): which listeners get probes, how a wildcard listener is reached, the
//! short limits of a local run, and TCP and UDP probed at once.
//!
//! The caller hands the listeners over as core's [`ListenerKey`] (protocol, address, port,
//! from whatever inventory it keeps; [`listener_key`] makes one from a socket); the reports
//! come back keyed by the same.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use portolan_core::{ListenerKey, Protocol, SocketState};

use crate::{probe_pools, Options, Report, Signatures, Target, Transport};

/// TCP listeners probed at once.
const TCP_THREADS: usize = 32;
/// UDP listeners probed at once.
const UDP_THREADS: usize = 8;

/// The listener a socket is, if it can be asked what it is: TCP in LISTEN, or unconnected
/// UDP. A UDP socket on the same address and port as a TCP listener is not what answers
/// there, nor the other way round, so the protocol is part of the key.
pub fn listener_key(proto: Protocol, state: SocketState, local: SocketAddr) -> Option<ListenerKey> {
    matches!(
        (proto, state),
        (Protocol::Tcp, SocketState::Listen) | (Protocol::Udp, SocketState::Unconn)
    )
    .then_some(ListenerKey {
        proto,
        address: local.ip(),
        port: local.port(),
    })
}

/// What answered, by listener (ordered by protocol, then address, for stable output).
#[derive(Debug, Clone, Default)]
pub struct Probed(BTreeMap<ListenerKey, Report>);

impl Probed {
    /// Nothing probed (probing not asked for).
    pub fn new() -> Probed {
        Probed::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The report of a socket, if it is a probed listener.
    pub fn of_socket(
        &self,
        proto: Protocol,
        state: SocketState,
        local: SocketAddr,
    ) -> Option<&Report> {
        listener_key(proto, state, local).and_then(|l| self.0.get(&l))
    }

    /// Every probed listener and its report, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&ListenerKey, &Report)> {
        self.0.iter()
    }

    /// The reports, in listener order.
    pub fn into_reports(self) -> Vec<Report> {
        self.0.into_values().collect()
    }
}

/// Where to connect to reach a listener from this machine: a wildcard listener through
/// loopback of its family, any other at its own address.
pub(crate) fn reach(address: IpAddr, port: u16) -> SocketAddr {
    let ip = match address {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, port)
}

/// The limits of a local run: this machine answers in microseconds, so waits are short.
pub(crate) fn options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(1),
        banner_wait: Duration::from_millis(1500),
        read_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

/// How `l` is probed, if it gets probes: every TCP listener; a UDP one only on a port
/// that a UDP probe names (DNS, NTP, SNMP, ...), since a UDP service answers only what it
/// understands and other ports are not sent guesses.
pub(crate) fn wanted(l: &ListenerKey, sigs: &Signatures) -> Option<Transport> {
    match l.proto {
        Protocol::Tcp => Some(Transport::Tcp),
        Protocol::Udp => sigs
            .probes_for(Transport::Udp, l.port)
            .first()
            .is_some_and(|p| p.ports.contains(&l.port))
            .then_some(Transport::Udp),
        Protocol::Sctp | Protocol::Dccp => None,
    }
}

/// Probes the listeners among `listeners` that get probes (every TCP one; UDP on a port a
/// UDP probe names; duplicates once), TCP and UDP at the same time, with a local run's
/// short limits, a wildcard listener reached through loopback.
pub fn probe_listeners(
    listeners: impl IntoIterator<Item = ListenerKey>,
    sigs: &Signatures,
) -> Probed {
    let mut chosen: Vec<(ListenerKey, Transport)> = listeners
        .into_iter()
        .filter_map(|l| Some((l, wanted(&l, sigs)?)))
        .collect();
    chosen.sort();
    chosen.dedup();
    let targets: Vec<Target> = chosen
        .iter()
        .map(|&(l, transport)| Target {
            addr: reach(l.address, l.port),
            name: None,
            transport,
        })
        .collect();
    let reports = probe_pools(&targets, sigs, &options(), TCP_THREADS, UDP_THREADS);
    Probed(chosen.into_iter().map(|(l, _)| l).zip(reports).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_reached_through_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let r = |s: &str| reach(a(s).ip(), a(s).port());
        assert_eq!(r("0.0.0.0:80"), a("127.0.0.1:80"));
        assert_eq!(r("[::]:80"), a("[::1]:80"));
        assert_eq!(r("192.0.2.7:80"), a("192.0.2.7:80"));
    }

    #[test]
    fn listeners_and_which_get_probes() {
        let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let tcp = listener_key(Protocol::Tcp, SocketState::Listen, local).unwrap();
        let udp = listener_key(Protocol::Udp, SocketState::Unconn, local).unwrap();
        assert_ne!(tcp, udp);
        assert!(listener_key(Protocol::Tcp, SocketState::Established, local).is_none());
        assert!(listener_key(Protocol::Udp, SocketState::Established, local).is_none());
        let sigs = Signatures::builtin();
        assert_eq!(wanted(&tcp, &sigs), Some(Transport::Tcp));
        assert_eq!(wanted(&udp, &sigs), Some(Transport::Udp));
        // No UDP probe names port 40000: not sent guesses.
        let odd = ListenerKey {
            proto: Protocol::Udp,
            address: local.ip(),
            port: 40000,
        };
        assert_eq!(wanted(&odd, &sigs), None);
        assert_eq!(
            wanted(
                &ListenerKey {
                    proto: Protocol::Tcp,
                    ..odd
                },
                &sigs
            ),
            Some(Transport::Tcp)
        );
    }
}
