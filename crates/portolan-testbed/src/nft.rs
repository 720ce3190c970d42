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
//!   UDP has the same shape with `udp dport` sets (`udrop`, `uicmp`); closed UDP ports need
//!   no rule (the kernel answers ICMP port unreachable).
//! - `synack` (prerouting, priority mangle), only when a host is `synack_all`: `tproxy`
//!   hands every TCP packet for such a host to its one transparent listener on
//!   [`SYNACK_ALL_PORT`], so every port completes the handshake. The packet is not
//!   rewritten and no conntrack is involved: each connection keeps its own address and port
//!   (accepted sockets are local to the port asked for), as behind a real middlebox.

use std::fmt::Write as _;

use crate::spec::{merge_ranges, HostSpec, IcmpReject};

/// Name of the TUN device on both sides of the wire.
pub const WIRE_IF: &str = "pt-wire";
/// Name of the nftables table in the target namespace.
pub const TABLE: &str = "pt-testbed";
/// The port of the one (transparent) listener a `synack_all` host has; nftables' `tproxy`
/// hands it every TCP port of the host.
pub const SYNACK_ALL_PORT: u16 = 1;

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
        ("udrop", |h: &HostSpec| h.udp_drop.as_slice()),
        ("uicmp", |h: &HostSpec| h.udp_icmp.as_slice()),
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
         ip6 daddr . tcp dport @reset6 reject with tcp reset\n    \
         ip daddr . udp dport @udrop4 drop\n    \
         ip6 daddr . udp dport @udrop6 drop\n    \
         ip daddr . udp dport @uicmp4 reject with icmp type {}\n    \
         ip6 daddr . udp dport @uicmp6 reject with icmpv6 type {}\n  }}",
        icmp.nft_v4(),
        icmp.nft_v6(),
        icmp.nft_v4(),
        icmp.nft_v6()
    );
    let tarpit4: Vec<String> = hosts
        .iter()
        .filter(|h| h.up && h.synack_all)
        .map(|h| h.v4.to_string())
        .collect();
    let tarpit6: Vec<String> = hosts
        .iter()
        .filter(|h| h.up && h.synack_all)
        .filter_map(|h| h.v6.map(|a| a.to_string()))
        .collect();
    if !tarpit4.is_empty() {
        let p = SYNACK_ALL_PORT;
        set(&mut s, "synack4", "ipv4_addr", false, &tarpit4);
        set(&mut s, "synack6", "ipv6_addr", false, &tarpit6);
        let _ = writeln!(
            s,
            "  chain synack {{ type filter hook prerouting priority mangle; policy accept;\n    \
             iifname \"{WIRE_IF}\" ip daddr @synack4 meta l4proto tcp tproxy ip to :{p}\n    \
             iifname \"{WIRE_IF}\" ip6 daddr @synack6 meta l4proto tcp tproxy ip6 to :{p}\n  }}"
        );
    }
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
        assert!(!r.contains("tproxy"), "{r}");
    }

    #[test]
    fn udp_sets_and_tarpit() {
        let hosts = vec![
            HostSpec::new(Ipv4Addr::new(198, 18, 200, 1))
                .with_v6("2001:2:0:c8::1".parse().unwrap())
                .with_udp_drop(100, 200)
                .with_udp_icmp(300, 300)
                .with_synack_all(),
            HostSpec::new(Ipv4Addr::new(198, 18, 200, 2)),
        ];
        let r = ruleset(&hosts, IcmpReject::AdminProhibited);
        assert!(
            r.contains("set udrop4 { type ipv4_addr . inet_service; flags interval; elements = { 198.18.200.1 . 100-200 }; }"),
            "{r}"
        );
        assert!(r.contains("elements = { 2001:2:0:c8::1 . 300 }"), "{r}");
        assert!(r.contains("ip daddr . udp dport @uicmp4 reject with icmp type admin-prohibited"));
        assert!(
            r.contains("set synack4 { type ipv4_addr; elements = { 198.18.200.1 }; }"),
            "{r}"
        );
        assert!(r.contains("elements = { 2001:2:0:c8::1 }"), "{r}");
        assert!(
            r.contains("ip daddr @synack4 meta l4proto tcp tproxy ip to :1"),
            "{r}"
        );
        assert!(
            r.contains("ip6 daddr @synack6 meta l4proto tcp tproxy ip6 to :1"),
            "{r}"
        );
    }
}
