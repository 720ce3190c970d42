//! Where the audit meets portolan's firewall engine. The firewall must not know the policy
//! file format, and the audit must not read the firewall itself; so the audit, which owns
//! the policy, turns it into the firewall's [`InboundRule`]s, finds the SSH port the plan's
//! guard keeps open, and judges listeners against a [`Ruleset`] its caller loaded.

use std::net::SocketAddr;

use portolan_core::{Port, PortRange, Protocol};
use portolan_firewall::{InboundRule, Ruleset, L4};

use crate::findings::{Reachability, Verdict};
use crate::listener::Listener;
use crate::policy::{AddrMatch, Policy};

impl Policy {
    /// The policy's inbound allows for a firewall plan: every TCP/UDP rule that is not for
    /// loopback only (the plan always admits loopback). Each keeps its policy line in the
    /// comment, so `nft list` points back at the file.
    pub fn inbound_rules(&self) -> Vec<InboundRule> {
        self.allow
            .iter()
            .filter(|r| {
                r.addresses
                    .iter()
                    .any(|a| !matches!(a, AddrMatch::Loopback))
            })
            .filter_map(|r| {
                let proto = match r.proto {
                    Protocol::Tcp => L4::Tcp,
                    Protocol::Udp => L4::Udp,
                    _ => return None,
                };
                let ports = PortRange::new(Port::new(r.ports.0), Port::new(r.ports.1))?;
                let comment = match &r.comment {
                    Some(c) => format!("line {}: {c}", r.line),
                    None => format!("line {}", r.line),
                };
                Some(InboundRule {
                    proto,
                    ports,
                    from: r.from.clone(),
                    comment,
                })
            })
            .collect()
    }
}

/// sshd's listening TCP port among `listeners`, if one is found: the port the firewall
/// plan's SSH guard keeps open.
pub fn sshd_port(listeners: &[Listener]) -> Option<u16> {
    listeners
        .iter()
        .find(|l| l.proto == Protocol::Tcp && l.owner.process.as_deref() == Some("sshd"))
        .map(|l| l.port)
}

impl Reachability for Ruleset {
    fn inbound(&self, proto: Protocol, local: SocketAddr) -> Verdict {
        let l4 = match proto {
            Protocol::Tcp => L4::Tcp,
            Protocol::Udp => L4::Udp,
            other => return Verdict::Unknown(format!("{other} is not judged")),
        };
        match self.inbound_verdict(l4, local.ip(), local.port()) {
            portolan_firewall::Verdict::Open { .. } => Verdict::Open,
            // Accepted only from some sources: closed to an arbitrary outside host.
            portolan_firewall::Verdict::Restricted { .. }
            | portolan_firewall::Verdict::Blocked { .. } => Verdict::Blocked,
            portolan_firewall::Verdict::Unknown { why } => Verdict::Unknown(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::Owner;

    #[test]
    fn loopback_only_and_other_protocols_make_no_inbound_rule() {
        let p = Policy::parse(
            "t.toml",
            r#"
[[allow]]
proto = "tcp"
port = 22
from = ["198.18.0.0/15"]
comment = "ssh"

[[allow]]
proto = "tcp"
port = 5432
address = ["loopback"]

[[allow]]
proto = "udp"
port = "60000-61000"
"#,
        )
        .unwrap();
        let rules = p.inbound_rules();
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0].proto, L4::Tcp);
        assert_eq!(rules[0].from.len(), 1);
        assert!(rules[0].comment.ends_with(": ssh"), "{}", rules[0].comment);
        assert_eq!(rules[1].proto, L4::Udp);
        assert_eq!(rules[1].ports.to_string(), "60000-61000");
    }

    #[test]
    fn sshd_is_found_by_process_name_on_tcp() {
        let owner = |name: &str| Owner {
            process: Some(name.into()),
            ..Owner::default()
        };
        let ls = [
            Listener::new(Protocol::Udp, "0.0.0.0:22".parse().unwrap(), owner("sshd")),
            Listener::new(Protocol::Tcp, "0.0.0.0:80".parse().unwrap(), owner("nginx")),
            Listener::new(Protocol::Tcp, "[::]:2222".parse().unwrap(), owner("sshd")),
        ];
        assert_eq!(sshd_port(&ls), Some(2222));
        assert_eq!(sshd_port(&ls[..2]), None);
    }
}
