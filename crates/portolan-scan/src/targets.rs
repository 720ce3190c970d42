//! Turning target specs into addresses: CIDR blocks and ranges are expanded, host names
//! resolved (every address they have), exclusions removed, duplicates dropped. Bad entries
//! are reported and the rest kept: one typo in a target list must not stop a scan.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, ToSocketAddrs};

use portolan_core::TargetSpec;

/// The addresses to scan, with what went wrong along the way.
#[derive(Debug, Default)]
pub struct Expanded {
    pub hosts: Vec<IpAddr>,
    /// `input: reason` for every entry that produced no address.
    pub rejected: Vec<String>,
    /// True when any spec was a block or range (host discovery applies to those).
    pub has_networks: bool,
    /// The name a user gave for an address (the first name, when several resolve to it).
    pub names: HashMap<IpAddr, String>,
}

/// The most addresses a scan may name (an IPv4 /8 is 16.7 million).
pub const MAX_HOSTS: u64 = 1 << 24;

/// Expands specs in order. Names resolve through the system resolver (`/etc/hosts`, DNS).
pub fn expand(specs: &[TargetSpec], excludes: &[TargetSpec]) -> Expanded {
    let mut out = Expanded::default();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut push = |ip: IpAddr, out: &mut Expanded| {
        if !excludes.iter().any(|e| e.contains(ip)) && seen.insert(ip) {
            out.hosts.push(ip);
        }
    };
    let mut total: u64 = 0;
    for spec in specs {
        // An oversized spec is rejected alone; it does not count against the ones after it.
        if total.saturating_add(spec.len()) > MAX_HOSTS {
            out.rejected.push(format!(
                "{spec}: the scan would name more than {MAX_HOSTS} addresses"
            ));
            continue;
        }
        total += spec.len();
        if let TargetSpec::Name(name) = spec {
            match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => {
                    let before = out.hosts.len();
                    for a in addrs {
                        out.names.entry(a.ip()).or_insert_with(|| name.clone());
                        push(a.ip(), &mut out);
                    }
                    if out.hosts.len() == before && !excludes.is_empty() {
                        out.rejected
                            .push(format!("{name}: every address it resolves to is excluded"));
                    }
                }
                Err(e) => out.rejected.push(format!("{name}: cannot resolve: {e}")),
            }
            continue;
        }
        if matches!(spec, TargetSpec::Cidr { .. } | TargetSpec::Range4 { .. }) {
            out.has_networks = true;
        }
        for i in 0..spec.len() {
            if let Some(ip) = spec.nth(i) {
                push(ip, &mut out);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_spec_does_not_reject_the_ones_after_it() {
        let specs: Vec<TargetSpec> = ["10.0.0.0/7", "198.18.0.1"]
            .iter()
            .map(|s| TargetSpec::parse(s, false).unwrap())
            .collect();
        let e = expand(&specs, &[]);
        assert_eq!(e.rejected.len(), 1, "{:?}", e.rejected);
        assert_eq!(e.hosts, vec![IpAddr::from([198, 18, 0, 1])]);
    }

    #[test]
    fn expands_dedups_and_excludes() {
        let specs: Vec<TargetSpec> = [
            "198.18.0.0/30",
            "198.18.0.1-3",
            "localhost",
            "no-such-host.invalid",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let ex: Vec<TargetSpec> = vec!["198.18.0.2".parse().unwrap()];
        let e = expand(&specs, &ex);
        let v4: Vec<String> = e
            .hosts
            .iter()
            .filter(|h| !h.is_loopback())
            .map(ToString::to_string)
            .collect();
        assert_eq!(v4, ["198.18.0.1", "198.18.0.3"]);
        assert!(
            e.hosts.iter().any(IpAddr::is_loopback),
            "localhost resolves"
        );
        assert_eq!(e.rejected.len(), 1, "{:?}", e.rejected);
        assert!(e.rejected[0].starts_with("no-such-host.invalid"));
        assert!(e.has_networks);
    }
}
