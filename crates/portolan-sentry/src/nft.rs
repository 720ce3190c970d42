//! The sentry's nftables table, `table inet portolan_sentry`:
//!
//! - chain `watch` (hook input, priority -150: before the filter chains, so packets a
//!   firewall drops are seen too) logs to an NFLOG group what can be a first contact and
//!   nothing else: TCP segments with SYN and without ACK, TCP segments with neither SYN
//!   nor RST that conntrack calls new or invalid (FIN, NULL, Xmas, ACK probes; not the
//!   SYN-ACKs and RSTs of backscatter), and UDP datagrams conntrack calls
//!   new; only to this host's own addresses (`fib daddr type local`: no broadcast or
//!   multicast chatter), and not on loopback unless asked. Packets of established flows
//!   never reach the log: an answer to this host's own DNS query or outbound connection is
//!   conntrack's "established", so it cannot look like a probe.
//! - chain `block` (hook prerouting, priority -300: before conntrack, so a blocked flood
//!   makes no conntrack entries) drops sources in the sets `block4`/`block6`, whose
//!   elements time out in the kernel, each set capped in size.
//!
//! Every `log` has a counter: what was logged, to compare with what was read.
//! The chains' policy is accept and they give no verdict but the block's drop: every other
//! table sees every packet as before. Must not: touch any table but this one.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use crate::SentryError;

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "portolan_sentry";
pub const SET4: &str = "block4";
pub const SET6: &str = "block6";
/// The NFLOG group the sentry reads by default (the guard uses 5).
pub const DEFAULT_GROUP: u16 = 7;
/// Bytes of each packet copied to the log: headers (IPv6 with an extension header, TCP
/// with 40 bytes of options) and nothing of the payload.
pub const SNAPLEN: u32 = 128;
/// The default cap on each block set.
pub const DEFAULT_BLOCK_CAP: u32 = 65_536;
/// The longest block.
pub const MAX_BLOCK: Duration = Duration::from_secs(30 * 24 * 3600);

/// What the table looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub group: u16,
    /// Watch loopback too.
    pub loopback: bool,
    /// The block sets' size cap.
    pub block_cap: u32,
    /// Log first contacts (false: the table only blocks; AF_PACKET reads instead).
    pub watch: bool,
}

/// The table's text (deterministic).
pub fn render(spec: &TableSpec) -> String {
    let g = spec.group;
    let log = format!("log group {g} snaplen {SNAPLEN}");
    let mut s = String::new();
    let _ = writeln!(s, "table {FAMILY} {TABLE} {{");
    for (set, ty) in [(SET4, "ipv4_addr"), (SET6, "ipv6_addr")] {
        let _ = writeln!(
            s,
            "\tset {set} {{\n\t\ttype {ty}\n\t\tflags timeout\n\t\tsize {}\n\t}}",
            spec.block_cap
        );
    }
    let _ = writeln!(
        s,
        "\tchain block {{\n\t\ttype filter hook prerouting priority -300; policy accept;\n\
         \t\tiif \"lo\" accept comment \"this host to itself\"\n\
         \t\tfib saddr type local accept comment \"never this host's own addresses\"\n\
         \t\tip saddr @{SET4} counter drop comment \"blocked scanners\"\n\
         \t\tip6 saddr @{SET6} counter drop comment \"blocked scanners\"\n\t}}"
    );
    if !spec.watch {
        s.push_str("}\n");
        return s;
    }
    let _ = writeln!(
        s,
        "\tchain watch {{\n\t\ttype filter hook input priority -150; policy accept;"
    );
    if !spec.loopback {
        let _ = writeln!(s, "\t\tiif \"lo\" accept");
    }
    let _ = writeln!(s, "\t\tfib daddr type != local accept");
    let _ = writeln!(
        s,
        "\t\ttcp flags & (syn | ack) == syn counter {log} accept comment \"connection attempts\""
    );
    let _ = writeln!(
        s,
        "\t\ttcp flags & (syn | rst) == 0 ct state new,invalid counter {log} accept comment \"other first TCP packets\""
    );
    let _ = writeln!(
        s,
        "\t\tmeta l4proto udp ct state new counter {log} accept comment \"new UDP flows\""
    );
    s.push_str("\t}\n}\n");
    s
}

/// Runs `nft` through the guard's runner (one implementation of spawning nft, feeding it a
/// script and escaping its errors).
fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, SentryError> {
    portolan_guard::nft::nft(args, stdin).map_err(SentryError::from)
}

/// Loads the table. A table already loaded keeps its block sets (and the blocks in them):
/// only the chains are replaced; otherwise the table is made whole. One transaction.
pub fn apply(spec: &TableSpec) -> Result<(), SentryError> {
    let keep = format!(
        "add table {FAMILY} {TABLE}\n\
         add chain {FAMILY} {TABLE} block\ndelete chain {FAMILY} {TABLE} block\n\
         add chain {FAMILY} {TABLE} watch\ndelete chain {FAMILY} {TABLE} watch\n{}",
        render(spec)
    );
    if is_loaded()? && nft(&["-f", "-"], Some(&keep)).is_ok() {
        return Ok(());
    }
    nft(
        &["-f", "-"],
        Some(&format!(
            "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{}",
            render(spec)
        )),
    )
    .map(drop)
}

/// Takes the watch chain away and keeps the blocks (they expire by themselves): what the
/// sentry leaves when it stops.
pub fn stop_watching() -> Result<(), SentryError> {
    nft(
        &["-f", "-"],
        Some(&format!(
            "add table {FAMILY} {TABLE}\nadd chain {FAMILY} {TABLE} watch\ndelete chain {FAMILY} {TABLE} watch\n"
        )),
    )
    .map(drop)
}

/// Deletes the whole table, blocks included.
pub fn remove() -> Result<(), SentryError> {
    nft(
        &["-f", "-"],
        Some(&format!(
            "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
        )),
    )
    .map(drop)
}

pub fn is_loaded() -> Result<bool, SentryError> {
    let ours = format!("table {FAMILY} {TABLE}");
    Ok(nft(&["list", "tables"], None)?
        .lines()
        .any(|l| l.trim() == ours))
}

fn set_of(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        SET4
    } else {
        SET6
    }
}

/// Blocks `addr` for `for_` (from now: an address already blocked gets the new timeout).
pub fn block(addr: IpAddr, for_: Duration) -> Result<(), SentryError> {
    let ms = u64::try_from(for_.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 || for_ > MAX_BLOCK {
        return Err(SentryError::Setup(format!(
            "cannot block for {for_:?}: between 1 ms and {} days",
            MAX_BLOCK.as_secs() / 86_400
        )));
    }
    let set = set_of(addr);
    nft(
        &["-f", "-"],
        Some(&format!(
            "add element {FAMILY} {TABLE} {set} {{ {addr} timeout {ms}ms }}\n\
             delete element {FAMILY} {TABLE} {set} {{ {addr} }}\n\
             add element {FAMILY} {TABLE} {set} {{ {addr} timeout {ms}ms }}\n"
        )),
    )
    .map(drop)
}

/// Lifts a block (nothing happens when `addr` is not blocked).
pub fn unblock(addr: IpAddr) -> Result<(), SentryError> {
    let set = set_of(addr);
    nft(
        &["-f", "-"],
        Some(&format!(
            "add element {FAMILY} {TABLE} {set} {{ {addr} timeout 1s }}\n\
             delete element {FAMILY} {TABLE} {set} {{ {addr} }}\n"
        )),
    )
    .map(drop)
}

/// A blocked address and the time its block has left.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blocked {
    pub address: IpAddr,
    /// Milliseconds left, when the kernel said.
    pub expires_ms: Option<u64>,
}

/// The addresses blocked now.
pub fn blocked() -> Result<Vec<Blocked>, SentryError> {
    let mut out = Vec::new();
    for set in [SET4, SET6] {
        let json = nft(&["-j", "list", "set", FAMILY, TABLE, set], None)?;
        out.extend(parse_blocked(&json)?);
    }
    Ok(out)
}

/// Reads `nft -j list set` output.
pub fn parse_blocked(json: &str) -> Result<Vec<Blocked>, SentryError> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| SentryError::Nft(format!("nft -j list set: not JSON: {e}")))?;
    let mut out = Vec::new();
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten();
    for item in items {
        let Some(elems) = item
            .get("set")
            .and_then(|s| s.get("elem"))
            .and_then(|e| e.as_array())
        else {
            continue;
        };
        for e in elems {
            let (val, expires) = match e.get("elem") {
                Some(inner) => (inner.get("val"), inner.get("expires")),
                None => (Some(e), None),
            };
            let Some(addr) = val
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                continue;
            };
            out.push(Blocked {
                address: addr,
                expires_ms: expires
                    .and_then(serde_json::Value::as_u64)
                    .map(|s| s.saturating_mul(1000)),
            });
        }
    }
    Ok(out)
}

/// The packets each log rule counted (connection attempts, other TCP, UDP), as nft
/// lists them: what was handed to NFLOG.
pub fn logged_counts() -> Result<u64, SentryError> {
    let json = nft(&["-j", "list", "chain", FAMILY, TABLE, "watch"], None)?;
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| SentryError::Nft(format!("nft -j list chain: not JSON: {e}")))?;
    let mut total = 0;
    for item in v
        .get("nftables")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten()
    {
        let Some(exprs) = item
            .get("rule")
            .and_then(|r| r.get("expr"))
            .and_then(|e| e.as_array())
        else {
            continue;
        };
        let logs = exprs.iter().any(|e| e.get("log").is_some());
        for e in exprs {
            if let (true, Some(n)) = (
                logs,
                e.get("counter")
                    .and_then(|c| c.get("packets"))
                    .and_then(serde_json::Value::as_u64),
            ) {
                total += n;
            }
        }
    }
    Ok(total)
}

/// The ports `portolan guard` listens for knocks and SPA packets on, read from its table
/// (`table inet portolan_guard`, the rules logged with prefix `portolan-knock` or
/// `portolan-spa`): a knocking client touches closed ports by design, and must not be taken
/// for a scanner. Empty when the guard's table is not loaded.
pub fn guard_ports() -> Vec<(crate::packet::Transport, u16)> {
    nft(&["list", "chain", "inet", "portolan_guard", "input"], None)
        .map(|t| parse_guard_ports(&t))
        .unwrap_or_default()
}

/// Reads the knock and SPA ports from the text of the guard's chain.
pub fn parse_guard_ports(text: &str) -> Vec<(crate::packet::Transport, u16)> {
    use crate::packet::Transport;
    let mut out = Vec::new();
    for line in text.lines() {
        if !(line.contains("portolan-knock") || line.contains("portolan-spa")) {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(i) = words.iter().position(|w| *w == "dport") else {
            continue;
        };
        let proto = match words.get(i.wrapping_sub(1)) {
            Some(&"tcp") => Transport::Tcp,
            Some(&"udp") => Transport::Udp,
            _ => continue,
        };
        let rest = &words[i + 1..];
        let list: Vec<&str> = if rest.first() == Some(&"{") {
            rest[1..]
                .iter()
                .take_while(|w| **w != "}")
                .copied()
                .collect()
        } else {
            rest.iter().take(1).copied().collect()
        };
        for w in list {
            if let Ok(p) = w.trim_end_matches(',').parse::<u16>() {
                out.push((proto, p));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_logs_first_contacts_only() {
        let t = render(&TableSpec {
            group: 7,
            loopback: false,
            block_cap: 1000,
            watch: true,
        });
        assert!(t.contains("tcp flags & (syn | ack) == syn counter log group 7 snaplen 128"));
        assert!(t.contains("iif \"lo\" accept"));
        assert!(t.contains("size 1000"));
        assert!(t.contains("priority -300"));
        let lo = render(&TableSpec {
            group: 7,
            loopback: true,
            block_cap: 1000,
            watch: true,
        });
        let watch = lo.split("chain watch").nth(1).unwrap();
        assert!(!watch.contains("iif \"lo\""));
        assert!(t.contains("fib saddr type local accept"));
        let block_only = render(&TableSpec {
            group: 7,
            loopback: false,
            block_cap: 10,
            watch: false,
        });
        assert!(!block_only.contains("log group"));
        assert!(block_only.contains("@block4"));
    }

    #[test]
    fn reads_the_guards_knock_and_spa_ports() {
        use crate::packet::Transport;
        let chain = "table inet portolan_guard {\n\tchain input {\n\t\tudp dport 62201 udp length 100 log prefix \"portolan-spa\" group 5 drop comment \"SPA\"\n\t\ttcp dport { 7000, 8000 } log prefix \"portolan-knock\" group 5 drop comment \"knock ports\"\n\t\tudp dport 9000 log prefix \"portolan-knock\" group 5 drop\n\t\ttcp dport 22 drop\n\t}\n}\n";
        assert_eq!(
            parse_guard_ports(chain),
            vec![
                (Transport::Tcp, 7000),
                (Transport::Tcp, 8000),
                (Transport::Udp, 9000),
                (Transport::Udp, 62201)
            ]
        );
        assert!(parse_guard_ports("dport\nportolan-knock dport {\n\u{1b}").is_empty());
    }

    #[test]
    fn reads_blocked_sets() {
        let json = r#"{"nftables":[{"metainfo":{}},{"set":{"family":"inet","name":"block4","table":"portolan_sentry","type":"ipv4_addr","flags":["timeout"],"elem":[{"elem":{"val":"198.18.0.9","timeout":3600,"expires":3590}},"198.18.0.10"]}}]}"#;
        let b = parse_blocked(json).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].address, "198.18.0.9".parse::<IpAddr>().unwrap());
        assert_eq!(b[0].expires_ms, Some(3_590_000));
        assert_eq!(b[1].expires_ms, None);
        assert!(parse_blocked("not json").is_err());
        assert!(parse_blocked("{}").unwrap().is_empty());
    }
}
