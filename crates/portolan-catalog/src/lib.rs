//! What port numbers mean: the IANA Service Name and Transport Protocol Port Number Registry,
//! compiled in at build time, plus curated notes for the ports people meet every day.
//!
//! Pure lookups over static data: this crate must not read files, touch the network or
//! print. Facts about *this* machine (privileged port start, ephemeral range, who listens)
//! belong to `portolan-sockets`; the binary joins the two.

use portolan_core::{Port, Protocol};

/// One row of the IANA registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Service name; empty for reserved or unassigned rows.
    pub name: &'static str,
    /// Inclusive port range; `None` for service names registered without a port (DNS-SD).
    pub ports: Option<(u16, u16)>,
    /// `None` when the row applies to no particular protocol (reserved ranges, name-only).
    pub proto: Option<Protocol>,
    pub description: &'static str,
    /// RFC or other reference, as IANA writes it (`[RFC4251]`).
    pub reference: &'static str,
    /// IANA's "Unauthorized Use Reported" column: software known to squat on this port.
    pub unauthorized_use: &'static str,
    /// IANA's "Assignment Notes" column.
    pub notes: &'static str,
}

impl Assignment {
    pub fn covers(&self, port: Port) -> bool {
        self.ports
            .is_some_and(|(s, e)| s <= port.get() && port.get() <= e)
    }

    /// A row that merely records the absence of an assignment.
    pub fn is_unassigned(&self) -> bool {
        self.name.is_empty() && self.description.starts_with("Unassigned")
    }

    /// A reserved row (e.g. port 0, or blocks IANA holds back).
    pub fn is_reserved(&self) -> bool {
        self.name.is_empty() && self.description.starts_with("Reserved")
    }
}

/// Which protocols a curated note covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteProto {
    Tcp,
    Udp,
    Both,
}

impl NoteProto {
    pub fn includes(self, p: Protocol) -> bool {
        matches!(
            (self, p),
            (NoteProto::Both, Protocol::Tcp | Protocol::Udp)
                | (NoteProto::Tcp, Protocol::Tcp)
                | (NoteProto::Udp, Protocol::Udp)
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            NoteProto::Tcp => "tcp",
            NoteProto::Udp => "udp",
            NoteProto::Both => "tcp+udp",
        }
    }
}

/// How far a service on this port may safely be exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Advice {
    /// Routinely faces the internet (HTTPS, SMTP, ...).
    InternetOk,
    /// Fine on a trusted network or VPN; think before exposing it wider.
    Restricted,
    /// Should never face an untrusted network (databases, caches, admin and debug APIs).
    Never,
}

impl Advice {
    pub fn as_str(self) -> &'static str {
        match self {
            Advice::InternetOk => "internet_ok",
            Advice::Restricted => "restricted",
            Advice::Never => "never",
        }
    }
}

/// A curated note about a commonly met port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub port: u16,
    pub proto: NoteProto,
    pub service: &'static str,
    pub title: &'static str,
    pub aliases: &'static [&'static str],
    /// What usually listens there in practice.
    pub usual: &'static str,
    /// True when the usual protocol here carries data or credentials unencrypted.
    pub cleartext: bool,
    pub exposure: Advice,
    /// What goes wrong when it is exposed, and the usual mitigation.
    pub risk: &'static str,
}

mod generated {
    #![allow(clippy::unreadable_literal, clippy::too_many_lines)]
    use super::{Advice, Assignment, Note, NoteProto, Protocol};
    include!(concat!(env!("OUT_DIR"), "/catalog.rs"));
}

/// Answers to "may I use a registered port for something else?", shown by `portolan info`.
pub const REGISTRATION_IS_NOT_RESERVATION: &str = "An IANA registration is a convention, \
not a lock: any program may bind any free port (below the unprivileged-port start it needs \
privilege). Using a registered port for something else works, but clients, scanners, \
firewalls and people will assume the registered service, and it collides if that service \
is ever installed here.";

/// Every registry row, in port order (name-only rows last).
pub fn assignments() -> &'static [Assignment] {
    generated::ASSIGNMENTS
}

/// Every curated note, in port order.
pub fn notes() -> &'static [Note] {
    generated::NOTES
}

/// Registry rows that cover `port`, optionally for one protocol only. Ranged rows
/// (`x11 6000-6063`) are included. Order: registry order.
pub fn by_port(port: Port, proto: Option<Protocol>) -> impl Iterator<Item = &'static Assignment> {
    // Rows are sorted by start port; ranges are few, so a bounded scan back from the first
    // row starting after `port` finds every covering row without walking the whole table.
    let rows = generated::ASSIGNMENTS;
    let upper = rows.partition_point(|a| a.ports.is_some_and(|(s, _)| s <= port.get()));
    rows[..upper]
        .iter()
        .rev()
        .take_while(move |a| {
            a.ports
                .is_some_and(|(s, _)| port.get() - s <= MAX_RANGE_SPAN)
        })
        .filter(move |a| {
            a.covers(port) && (proto.is_none() || a.proto.is_none() || a.proto == proto)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
}

/// The widest range the registry holds is far below this; it only bounds the scan above.
const MAX_RANGE_SPAN: u16 = 1 << 14;

/// The primary IANA service name for a port and protocol (`http` for 80/tcp), or the name
/// of a range that covers it (`x11` for 6001/tcp). A binary search: cheap enough to call for
/// every socket on a busy machine.
pub fn service_name(port: Port, proto: Protocol) -> Option<&'static str> {
    let (singles, ranges) = match proto {
        Protocol::Tcp => (generated::TCP_NAMES, generated::TCP_NAMES_RANGES),
        Protocol::Udp => (generated::UDP_NAMES, generated::UDP_NAMES_RANGES),
        Protocol::Sctp => (generated::SCTP_NAMES, generated::SCTP_NAMES_RANGES),
        Protocol::Dccp => (generated::DCCP_NAMES, generated::DCCP_NAMES_RANGES),
    };
    let p = port.get();
    let idx = singles
        .binary_search_by_key(&p, |&(q, _)| q)
        .ok()
        .map(|i| singles[i].1)
        .or_else(|| {
            ranges
                .iter()
                .find(|&&(s, e, _)| s <= p && p <= e)
                .map(|&(_, _, i)| i)
        })?;
    Some(generated::ASSIGNMENTS[idx as usize].name)
}

/// Registry rows whose service name is exactly `name` (case-insensitive).
pub fn by_name(name: &str) -> Vec<&'static Assignment> {
    let key = name.trim().to_ascii_lowercase();
    let idx = generated::NAME_INDEX;
    let lo = idx.partition_point(|&(n, _)| n < key.as_str());
    idx[lo..]
        .iter()
        .take_while(|&&(n, _)| n == key)
        .map(|&(_, i)| &generated::ASSIGNMENTS[i as usize])
        .collect()
}

/// Registry rows whose name or description mentions `word` (case-insensitive), for
/// "did you mean" answers. At most `limit` rows.
pub fn search(word: &str, limit: usize) -> Vec<&'static Assignment> {
    let w = word.trim().to_ascii_lowercase();
    if w.is_empty() {
        return Vec::new();
    }
    generated::ASSIGNMENTS
        .iter()
        .filter(|a| a.ports.is_some())
        .filter(|a| {
            a.name.to_ascii_lowercase().contains(&w)
                || a.description.to_ascii_lowercase().contains(&w)
        })
        .take(limit)
        .collect()
}

/// portolan's own ranking of common ports (see `data/TOP-PORTS.md`: a documented method,
/// never nmap's data), best first, at most `n` of them.
pub fn top_ports(proto: Protocol, n: usize) -> &'static [u16] {
    let list = match proto {
        Protocol::Udp => generated::TOP_UDP,
        _ => generated::TOP_TCP,
    };
    &list[..n.min(list.len())]
}

/// The curated note for a port and protocol.
pub fn note(port: Port, proto: Protocol) -> Option<&'static Note> {
    let notes = generated::NOTES;
    let lo = notes.partition_point(|n| n.port < port.get());
    notes[lo..]
        .iter()
        .take_while(|n| n.port == port.get())
        .find(|n| n.proto.includes(proto))
}

/// Curated notes whose service name or one of its aliases is `name` (case-insensitive):
/// answers "which port does postgres use?" where IANA's name differs (`postgresql`).
pub fn notes_by_name(name: &str) -> Vec<&'static Note> {
    let key = name.trim().to_ascii_lowercase();
    generated::NOTES
        .iter()
        .filter(|n| n.service == key || n.aliases.iter().any(|a| *a == key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u16) -> Port {
        Port::new(n)
    }

    #[test]
    fn registry_is_complete() {
        assert!(assignments().len() > 14_000, "{}", assignments().len());
        for proto in Protocol::ALL {
            assert!(
                assignments().iter().any(|a| a.proto == Some(proto)),
                "{proto}"
            );
        }
    }

    #[test]
    fn well_known_names() {
        assert_eq!(service_name(p(22), Protocol::Tcp), Some("ssh"));
        assert_eq!(service_name(p(80), Protocol::Tcp), Some("http"));
        assert_eq!(service_name(p(443), Protocol::Tcp), Some("https"));
        assert_eq!(service_name(p(53), Protocol::Udp), Some("domain"));
        assert_eq!(service_name(p(5432), Protocol::Tcp), Some("postgresql"));
        assert_eq!(service_name(p(6010), Protocol::Tcp), Some("x11"));
        assert_eq!(service_name(p(4), Protocol::Tcp), None);
    }

    #[test]
    fn by_port_includes_every_protocol_and_ranges() {
        let rows: Vec<_> = by_port(p(9), None).collect();
        let protos: Vec<_> = rows.iter().filter_map(|a| a.proto).collect();
        for want in Protocol::ALL {
            assert!(protos.contains(&want), "discard on 9/{want}: {rows:?}");
        }
        assert!(by_port(p(6000), Some(Protocol::Tcp)).any(|a| a.name == "x11"));
        assert!(by_port(p(6063), Some(Protocol::Udp)).any(|a| a.name == "x11"));
        assert!(by_port(p(53), Some(Protocol::Udp)).all(|a| a.proto != Some(Protocol::Tcp)));
        assert!(by_port(p(0), None).any(Assignment::is_reserved));
    }

    #[test]
    fn ranges_fit_the_scan_bound() {
        for a in assignments() {
            if let Some((s, e)) = a.ports {
                assert!(e - s <= MAX_RANGE_SPAN, "{a:?}");
            }
        }
    }

    #[test]
    fn names_lookup() {
        assert!(by_name("SSH").iter().any(|a| a.ports == Some((22, 22))));
        assert!(by_name("no-such-service-zz").is_empty());
        assert!(!search("kerberos", 5).is_empty());
    }

    #[test]
    fn notes_cover_common_ports() {
        assert!(notes().len() >= 100, "{}", notes().len());
        for port in [22, 80, 443, 3306, 5432, 6379, 11211, 27017] {
            assert!(note(p(port), Protocol::Tcp).is_some(), "no note for {port}");
        }
        assert!(notes_by_name("postgres").iter().any(|n| n.port == 5432));
        assert!(note(p(6379), Protocol::Tcp).unwrap().exposure == Advice::Never);
        assert!(note(p(23), Protocol::Tcp).unwrap().cleartext);
    }

    #[test]
    fn top_ports_ranking() {
        let top = top_ports(Protocol::Tcp, 1000);
        assert_eq!(top.len(), 1000);
        for p in [22, 80, 443, 3306, 3389, 5432, 6379, 8080] {
            assert!(top.contains(&p), "{p} not in the top 1000");
        }
        let mut d = top.to_vec();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 1000, "no duplicates");
        assert!(top_ports(Protocol::Tcp, usize::MAX).len() >= 1500);
        assert!(top_ports(Protocol::Udp, 100).contains(&53));
        // Every curated note's port is ranked.
        for n in notes() {
            if n.proto.includes(Protocol::Tcp) {
                assert!(
                    top_ports(Protocol::Tcp, usize::MAX).contains(&n.port),
                    "{}",
                    n.port
                );
            }
        }
    }

    #[test]
    fn notes_never_overlap() {
        for w in notes().windows(2) {
            if w[0].port == w[1].port {
                let overlap = [Protocol::Tcp, Protocol::Udp]
                    .iter()
                    .any(|&pr| w[0].proto.includes(pr) && w[1].proto.includes(pr));
                assert!(!overlap, "two notes for port {}", w[0].port);
            }
        }
    }
}
