//! The nftables ruleset of the target namespace, as text for `nft -f -`. No I/O here.
//!
//! One table, `inet pt-testbed`, that disappears with the namespace:
//! - `prerouting` (priority raw, before conntrack): anything arriving from the wire for an
//!   address that no up host owns is dropped, so down and unknown hosts are silent (no RST,
//!   no ICMP), whatever the kernel's routing would do.
//! - `input`: per-host port sets as concatenated interval sets (`addr . port`), looked up
//!   in one rule per action and family, so the cost per packet does not grow with the number
//!   of hosts. The rule order gives the precedence documented on [`crate::HostSpec`].
//!
//! UDP can follow the same shape with `udp dport` sets.

use std::fmt::Write as _;

use crate::spec::{merge_ranges, HostSpec, IcmpReject};

/// Name of the TUN device on both sides of the wire.
pub const WIRE_IF: &str = "pt-wire";
/// Name of the nftables table in the target namespace.
pub const TABLE: &str = "pt-testbed";

fn elements<F: Fn(&HostSpec) -> Option<String>>(
    hosts: &[HostSpec],
    addr: F,
    ranges: fn(&HostSpec) -> &[(u16, u16)],
) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts.iter().filter(|h| h.up) {
        let Some(a) = addr(h) else { continue };
        for (lo, hi) in merge_ranges(ranges(h)) {
            if lo == hi {
                out.push(format!("{a} . {lo}"));
            } else {
                out.push(format!("{a} . {lo}-{hi}"));
            }
        }
    }
    out
}

fn set(out: &mut String, name: &str, ty: &str, interval: bool, elems: &[String]) {
    let _ = write!(out, "  set {name} {{ type {ty};");
    if interval {
        out.push_str(" flags interval;");
    }
    if !elems.is_empty() {
        out.push_str(" elements = { ");
        out.push_str(&elems.join(", "));
        out.push_str(" };");
    }
    out.push_str(" }\n");
}

/// The whole ruleset for `hosts`.
pub fn ruleset(hosts: &[HostSpec], icmp: IcmpReject) -> String {
    let v4 = |h: &HostSpec| Some(h.v4.to_string());
    let v6 = |h: &HostSpec| h.v6.map(|a| a.to_string());
    let up4: Vec<String> = hosts
        .iter()
        .filter(|h| h.up)
        .map(|h| h.v4.to_string())
        .collect();
    let up6: Vec<String> = hosts
        .iter()
        .filter(|h| h.up)
        .filter_map(|h| h.v6.map(|a| a.to_string()))
        .collect();

    let mut s = String::new();
    // Delete-then-create keeps a reload idempotent; `add table` first so the delete never fails.
    let _ = writeln!(s, "add table inet {TABLE}\ndelete table inet {TABLE}");
    let _ = writeln!(s, "table inet {TABLE} {{");
    set(&mut s, "hosts4", "ipv4_addr", false, &up4);
    set(&mut s, "hosts6", "ipv6_addr", false, &up6);
    for (name, pick) in [
        (
            "drop",
            (|h: &HostSpec| h.filtered_drop.as_slice()) as fn(&HostSpec) -> &[(u16, u16)],
        ),
        ("icmp", |h: &HostSpec| h.filtered_icmp.as_slice()),
        ("reset", |h: &HostSpec| h.closed_reset.as_slice()),
    ] {
        set(
            &mut s,
            &format!("{name}4"),
            "ipv4_addr . inet_service",
            true,
            &elements(hosts, v4, pick),
        );
        set(
            &mut s,
            &format!("{name}6"),
            "ipv6_addr . inet_service",
            true,
            &elements(hosts, v6, pick),
        );
    }
    let _ = writeln!(
        s,
        "  chain prerouting {{ type filter hook prerouting priority raw; policy accept;\n    \
         iifname \"{WIRE_IF}\" ip daddr != @hosts4 drop\n    \
         iifname \"{WIRE_IF}\" ip6 daddr != @hosts6 drop\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain input {{ type filter hook input priority filter; policy accept;\n    \
         ip daddr . tcp dport @drop4 drop\n    \
         ip6 daddr . tcp dport @drop6 drop\n    \
         ip daddr . tcp dport @icmp4 reject with icmp type {}\n    \
         ip6 daddr . tcp dport @icmp6 reject with icmpv6 type {}\n    \
         ip daddr . tcp dport @reset4 reject with tcp reset\n    \
         ip6 daddr . tcp dport @reset6 reject with tcp reset\n  }}",
        icmp.nft_v4(),
        icmp.nft_v6()
    );
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ruleset_shape() {
        let hosts = vec![
            HostSpec::new(Ipv4Addr::new(198, 18, 0, 10))
                .with_v6("2001:2::10".parse().unwrap())
                .with_drop(1000, 2000)
                .with_drop(1500, 2500)
                .with_icmp(3000, 3000)
                .with_reset(4000, 4001),
            HostSpec::new(Ipv4Addr::new(198, 18, 0, 11))
                .with_drop(7, 7)
                .down(),
        ];
        let r = ruleset(&hosts, IcmpReject::PortUnreachable);
        assert!(r.contains("elements = { 198.18.0.10 . 1000-2500 }"), "{r}");
        assert!(r.contains("elements = { 2001:2::10 . 3000 }"), "{r}");
        assert!(
            r.contains("set hosts4 { type ipv4_addr; elements = { 198.18.0.10 }; }"),
            "{r}"
        );
        // The down host is in no set at all.
        assert!(!r.contains("198.18.0.11"), "{r}");
        assert!(r.contains("reject with icmp type port-unreachable"));
        assert!(r.contains("reject with icmpv6 type port-unreachable"));
    }
}
