//! Warnings about other firewall rules that override or bypass portolan's table.

use std::process::{Command, Stdio};

use portolan_core::escape::for_terminal;

use crate::plan::{TABLE_FAMILY, TABLE_NAME};
use crate::Ruleset;

/// What in `rs` (other than our own table) would override or bypass an allow-list in
/// `table inet portolan`, one sentence each.
pub fn override_warnings(rs: &Ruleset) -> Vec<String> {
    let mut out = Vec::new();
    let docker = ["ip", "ip6"].iter().any(|fam| {
        ["filter", "nat"].iter().any(|t| {
            rs.chain_names(fam, t)
                .iter()
                .any(|c| *c == "DOCKER" || *c == "DOCKER-USER")
        })
    });
    if docker {
        out.push(
            "Docker's chains are present: ports published by containers are DNATed in table ip \
             nat and pass through FORWARD, never the input hook, so portolan's table does not \
             filter them; restrict them in the DOCKER-USER chain or publish on 127.0.0.1"
                .to_owned(),
        );
    }
    let ufw = rs
        .tables()
        .iter()
        .any(|(f, t)| rs.chain_names(f, t).iter().any(|c| c.starts_with("ufw")));
    if ufw {
        out.push(
            "ufw is active (ufw-* chains): its rules filter inbound traffic too; a port must be \
             allowed by ufw and by portolan to be reachable"
                .to_owned(),
        );
    }
    if rs.has_table("inet", "firewalld") {
        out.push(
            "firewalld is active (table inet firewalld): its zones filter inbound traffic too, \
             and firewalld may flush rules it does not own on reload"
                .to_owned(),
        );
    }
    let xtables = rs.tables().iter().any(|(f, t)| {
        (f == "ip" || f == "ip6")
            && ["filter", "nat", "mangle", "raw", "security"].contains(&t.as_str())
            && rs
                .chain_names(f, t)
                .iter()
                .any(|c| ["INPUT", "FORWARD", "PREROUTING"].contains(c))
    });
    if xtables {
        out.push(
            "iptables rules (iptables-nft) are loaded: their INPUT chains filter inbound traffic \
             too; a port must be accepted there as well"
                .to_owned(),
        );
    }
    for (f, t, c) in rs.input_chains() {
        if (f == TABLE_FAMILY && t == TABLE_NAME) || t == "firewalld" || c.starts_with("ufw") {
            continue;
        }
        if xtables && (f == "ip" || f == "ip6") && c == "INPUT" {
            continue;
        }
        // Names in the live ruleset are anyone's (quoted nft names may hold any byte).
        let (f, t, c) = (for_terminal(&f), for_terminal(&t), for_terminal(&c));
        out.push(format!(
            "table {f} {t} also has an input-hook chain ({c}): a drop there drops traffic \
             portolan allows (every base chain must accept a packet)"
        ));
    }
    out.extend(legacy_iptables_notes());
    out
}

/// Notes about legacy (x_tables) iptables rules, which nft cannot show: one per family
/// whose `*-legacy-save` lists rules. Empty when the tools are absent.
pub fn legacy_iptables_notes() -> Vec<String> {
    let mut out = Vec::new();
    for tool in ["iptables-legacy-save", "ip6tables-legacy-save"] {
        let Ok(o) = Command::new(tool)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let rules = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count();
        if rules > 0 {
            out.push(format!(
                "{tool} lists {rules} legacy iptables rule(s): they filter in addition to \
                 nftables and portolan does not evaluate them"
            ));
        }
    }
    out
}
