//! The current state as a starting policy (`portolan policy init`), and a TOML writer that
//! [`Policy::parse`] reads back to the same policy.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use portolan_core::escape::{for_terminal, is_dangerous};
use portolan_core::Protocol;

use crate::listener::Listener;
use crate::policy::{port_label, AddrMatch, Exception, OwnerMatch, Policy, Rule, Settings};

/// A TOML basic string: quotes, backslashes, and every character a terminal must not get
/// raw (controls, bidi overrides: a policy is read with `cat` too) as `\uXXXX`, which TOML
/// reads back as the same character.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if is_dangerous(c) => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list<T: ToString>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", parts.join(", "))
}

fn ports_value(p: (u16, u16)) -> String {
    if p.0 == p.1 {
        p.0.to_string()
    } else {
        quote(&format!("{}-{}", p.0, p.1))
    }
}

fn write_owner(out: &mut String, o: &OwnerMatch) {
    for (key, v) in [
        ("process", &o.process),
        ("exe", &o.exe),
        ("user", &o.user),
        ("unit", &o.unit),
    ] {
        if let Some(v) = v {
            let _ = writeln!(out, "{key} = {}", quote(v));
        }
    }
}

fn write_rule(out: &mut String, r: &Rule) {
    out.push_str("\n[[allow]]\n");
    if let Some(c) = &r.comment {
        let _ = writeln!(out, "comment = {}", quote(c));
    }
    let _ = writeln!(out, "port = {}", ports_value(r.ports));
    let _ = writeln!(out, "proto = {}", quote(r.proto.as_str()));
    let _ = writeln!(out, "address = {}", list(&r.addresses));
    write_owner(out, &r.owner);
    if r.required {
        out.push_str("required = true\n");
    }
    if !r.from.is_empty() {
        let _ = writeln!(out, "from = {}", list(&r.from));
    }
}

fn write_exception(out: &mut String, e: &Exception) {
    out.push_str("\n[[exception]]\n");
    let _ = writeln!(out, "port = {}", ports_value(e.ports));
    let _ = writeln!(out, "proto = {}", quote(e.proto.as_str()));
    if !e.addresses.is_empty() {
        let _ = writeln!(out, "address = {}", list(&e.addresses));
    }
    write_owner(out, &e.owner);
    let _ = writeln!(out, "reason = {}", quote(&e.reason));
    if let Some(d) = e.expires {
        let _ = writeln!(out, "expires = {d}");
    }
    if !e.rules.is_empty() {
        let _ = writeln!(out, "rules = {}", list(&e.rules));
    }
}

impl Policy {
    /// The current state as a starting policy: one `[[allow]]` entry per port, protocol and
    /// owner, with the addresses seen. Loopback-only listeners are left to
    /// `settings.allow_loopback` (true). Owners are pinned by process name and user, and by
    /// unit when the socket belongs to one. A name a policy cannot hold (one with control
    /// or bidi characters, which [`Policy::parse`] refuses) is not pinned: a user by its
    /// uid instead, a process or unit not at all, said in the entry's comment.
    pub fn from_inventory(listeners: &[Listener]) -> Policy {
        let mut groups: BTreeMap<(Protocol, u16, OwnerKey), Vec<AddrMatch>> = BTreeMap::new();
        let mut unpinned: BTreeMap<(Protocol, u16, OwnerKey), Vec<String>> = BTreeMap::new();
        for l in listeners.iter().filter(|l| !l.is_loopback()) {
            let ip = crate::policy::canonical(l.address);
            let addr = if ip.is_unspecified() {
                AddrMatch::Any
            } else {
                AddrMatch::Exact(ip)
            };
            let (owner, left_out) = OwnerKey::of(l);
            let key = (l.proto, l.port, owner);
            if !left_out.is_empty() {
                let notes = unpinned.entry(key.clone()).or_default();
                for n in left_out {
                    if !notes.contains(&n) {
                        notes.push(n);
                    }
                }
            }
            let addrs = groups.entry(key).or_default();
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        let allow = groups
            .into_iter()
            .map(|(key, mut addresses)| {
                if addresses.contains(&AddrMatch::Any) {
                    addresses = vec![AddrMatch::Any];
                }
                let comment = unpinned.remove(&key).map(|notes| {
                    format!(
                        "not pinned (a policy cannot hold control or bidi characters): {}",
                        notes.join(", ")
                    )
                });
                let (proto, port, owner) = key;
                Rule {
                    line: 0,
                    proto,
                    ports: (port, port),
                    addresses,
                    owner: owner.0,
                    required: false,
                    from: Vec::new(),
                    comment,
                }
            })
            .collect();
        Policy {
            settings: Settings::default(),
            allow,
            exceptions: Vec::new(),
        }
    }

    /// The policy as TOML that [`Policy::parse`] accepts and reads back to an equal policy
    /// (line numbers aside).
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# portolan policy: which listeners may exist on this machine. See POLICY.md.\nversion = 1\n\n[settings]\n",
        );
        let _ = writeln!(out, "allow_loopback = {}", self.settings.allow_loopback);
        let ports: Vec<String> = self
            .settings
            .avoid_default_ports
            .iter()
            .map(u16::to_string)
            .collect();
        let _ = writeln!(out, "avoid_default_ports = [{}]", ports.join(", "));
        for r in &self.allow {
            let _ = write!(out, "\n# {}", port_label(r.proto, r.ports));
            write_rule(&mut out, r);
        }
        for e in &self.exceptions {
            write_exception(&mut out, e);
        }
        out
    }
}

/// Owner constraints as a sortable key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct OwnerKey(OwnerMatchOrd);

type OwnerMatchOrd = OwnerMatch;

impl PartialOrd for OwnerMatch {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OwnerMatch {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.process, &self.exe, &self.user, &self.unit).cmp(&(
            &other.process,
            &other.exe,
            &other.user,
            &other.unit,
        ))
    }
}

impl OwnerKey {
    /// The owner's constraints, and what was left out of them (escaped, for the comment):
    /// the names [`Policy::parse`] would refuse.
    fn of(l: &Listener) -> (OwnerKey, Vec<String>) {
        let o = &l.owner;
        let mut left_out = Vec::new();
        let mut holdable = |what: &str, v: &Option<String>| match v {
            Some(s) if s.chars().any(is_dangerous) => {
                left_out.push(format!("{what} {}", for_terminal(s)));
                None
            }
            other => other.clone(),
        };
        let process = holdable("process", &o.process);
        let unit = holdable("unit", &o.unit);
        let user = holdable("user", &o.user).or_else(|| Some(o.uid.to_string()));
        let key = OwnerKey(OwnerMatch {
            process,
            exe: None,
            user,
            unit,
        });
        (key, left_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portolan_core::{Listener, Owner};

    #[test]
    fn owner_strings_are_written_escaped_and_read_back_the_same() {
        // TOML escapes: a bidi override or an escape sequence never reaches the file raw.
        assert_eq!(quote("a\u{202e}b\u{1b}c\"d"), "\"a\\u202Eb\\u001Bc\\\"d\"");
        let process = "gpj.\u{202e}exe";
        let l = Listener::new(
            Protocol::Tcp,
            "0.0.0.0:8080".parse().unwrap(),
            Owner {
                pid: Some(7),
                process: Some(process.into()),
                user: Some("svc\u{2066}".into()),
                uid: 1000,
                unit: Some("a\u{200f}.service".into()),
                ..Owner::default()
            },
        );
        let policy = Policy::from_inventory(&[l]);
        let text = policy.to_toml();
        assert!(
            !text.chars().any(|c| c != '\n' && is_dangerous(c)),
            "{text}"
        );
        // The policy cannot hold these names (its parser refuses them): the process and
        // unit are left unpinned and said so, the user pinned by uid.
        let owner = &policy.allow[0].owner;
        assert_eq!(
            (owner.process.as_deref(), owner.unit.as_deref()),
            (None, None)
        );
        assert_eq!(owner.user.as_deref(), Some("1000"));
        let comment = policy.allow[0].comment.as_deref().unwrap();
        assert!(comment.contains("process gpj.\\u{202e}exe"), "{comment}");
        let back = Policy::parse("init.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.allow.len(), 1);
        assert_eq!(back.allow[0].owner, policy.allow[0].owner);
        assert_eq!(back.allow[0].comment, policy.allow[0].comment);
    }
}
