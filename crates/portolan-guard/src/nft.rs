//! The guard's nftables table, `table inet portolan_guard`: guarded ports dropped unless
//! the packet's `source . protocol . port` is in the set `allow4`/`allow6`, whose elements
//! time out in the kernel; the SPA and knock ports logged to an NFLOG group and dropped.
//!
//! - [`render`] turns a [`TableSpec`] into the table's text (deterministic); [`apply`]
//!   replaces the table with it in one `nft -f -` transaction, [`remove`] deletes it.
//! - [`open`] (or an [`Opener`] kept between calls) adds one element with a timeout,
//!   written straight over netlink (an nfnetlink batch of NFT_MSG_NEWSETELEM): spawning
//!   `nft` costs 15-30 ms, the netlink batch on a kept socket 15-80 µs (p50-p99). [`open_with_nft`]
//!   does the same through `nft`, for comparison and as a fallback.
//! - [`list`] reads the elements and their expiry back.
//!
//! Every function here works on the network namespace of the calling thread, and touches
//! no table but ours: the firewall engine's `inet portolan` and everyone else's are left
//! as they are. Our chain's policy is accept and its `accept` verdicts only end our chain:
//! whatever is not a guarded port, the SPA port or a knock port goes on to the other
//! tables' chains untouched.

use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::Socket;
use portolan_core::escape::for_terminal;
use portolan_firewall::Guard;

use crate::nflog::{parse_messages, Message};
use crate::{GuardError, PortProto, L4};

/// The table's family.
pub const FAMILY: &str = "inet";
/// The table's name.
pub const TABLE: &str = "portolan_guard";
/// The sets of opened `address . protocol . port` elements.
pub const SET4: &str = "allow4";
pub const SET6: &str = "allow6";
/// The chain's priority: before the firewall engine's (`filter`, 0), so an opened port
/// is decided here first... and only here: a later table that drops it still drops it.
pub const PRIORITY: &str = "filter - 10";
/// The default cap on each set's elements (a full set refuses new elements: an attacker
/// who could open ports could not exhaust memory anyway, but a bug could).
pub const DEFAULT_SET_SIZE: u32 = 65_536;
/// The longest access one element may grant.
pub const MAX_OPEN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The SSH session that must never be locked out: its client may always make new
/// connections to its port, whatever is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepOpen {
    pub client: IpAddr,
    pub port: u16,
}

impl KeepOpen {
    /// The SSH session this process runs in (`$SSH_CONNECTION`, as the firewall engine's
    /// [`Guard::detect`] reads it), if any.
    pub fn detect() -> Option<KeepOpen> {
        KeepOpen::from_guard(&Guard::detect(None))
    }

    /// The client and port of a firewall [`Guard`], when it knows a client.
    pub fn from_guard(g: &Guard) -> Option<KeepOpen> {
        Some(KeepOpen {
            client: g.client?,
            port: g.ssh_port?,
        })
    }
}

/// What the table is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// The ports dropped unless opened.
    pub guarded: Vec<PortProto>,
    /// The UDP port SPA packets go to (logged and dropped); `None`: no SPA.
    pub spa_port: Option<u16>,
    /// When every SPA packet has one length (portolan's own format only, no fwknop
    /// client), its UDP payload length: datagrams of any other length are dropped by the
    /// kernel without being logged, so a flood of junk never reaches the guard.
    pub spa_len: Option<u16>,
    /// The knock ports (logged and dropped).
    pub knock: Vec<PortProto>,
    /// The NFLOG group the SPA and knock packets are logged to.
    pub nflog_group: u16,
    /// The current SSH session, allowed new connections to its port.
    pub keep_open: Option<KeepOpen>,
    /// Each set's element cap.
    pub set_size: u32,
}

/// One opened element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub addr: IpAddr,
    pub port: PortProto,
    /// The timeout it was added with.
    pub timeout: Duration,
    /// The time left until the kernel removes it (nft reports whole seconds).
    pub expires: Duration,
}

fn ports_text(ports: &[u16]) -> String {
    if let [p] = ports {
        p.to_string()
    } else {
        let v: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!("{{ {} }}", v.join(", "))
    }
}

fn of_proto(ports: &[PortProto], proto: L4) -> Vec<u16> {
    let mut v: Vec<u16> = ports
        .iter()
        .filter(|p| p.proto == proto)
        .map(|p| p.port)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn validate(spec: &TableSpec) -> Result<(), GuardError> {
    let bad = |s: String| Err(GuardError::Config(s));
    if spec.set_size == 0 {
        return bad("the set size must be at least 1".to_owned());
    }
    let all = spec
        .guarded
        .iter()
        .chain(&spec.knock)
        .copied()
        .chain(spec.spa_port.map(|port| PortProto {
            proto: L4::Udp,
            port,
        }));
    for p in all {
        if p.port == 0 {
            return bad(format!("port 0 ({p}) cannot be guarded or knocked on"));
        }
    }
    if let Some(port) = spec.spa_port {
        let spa = PortProto {
            proto: L4::Udp,
            port,
        };
        if spec.guarded.contains(&spa) || spec.knock.contains(&spa) {
            return bad(format!(
                "the SPA port {spa} cannot also be a guarded or knock port"
            ));
        }
    }
    if let Some(p) = spec.knock.iter().find(|p| spec.guarded.contains(p)) {
        return bad(format!(
            "{p} cannot be both a knock port and a guarded port"
        ));
    }
    Ok(())
}

/// The table's text (`table inet portolan_guard { ... }`), deterministic: ports sorted.
pub fn render(spec: &TableSpec) -> Result<String, GuardError> {
    validate(spec)?;
    let group = spec.nflog_group;
    let size = spec.set_size;
    let mut s = format!("table {FAMILY} {TABLE} {{\n");
    for (name, addr) in [(SET4, "ipv4_addr"), (SET6, "ipv6_addr")] {
        let _ = write!(
            s,
            "\tset {name} {{\n\
             \t\ttype {addr} . inet_proto . inet_service\n\
             \t\tflags timeout\n\
             \t\tsize {size}\n\
             \t}}\n"
        );
    }
    let mut rules: Vec<String> = vec![
        "iif \"lo\" accept".to_owned(),
        // First, so that connections opened while their element lived outlive it, and
        // replies to our own connections are never taken for a knock. SPA and knock
        // packets are never part of an established flow: nothing ever answers them.
        "ct state established,related accept".to_owned(),
    ];
    if let Some(port) = spec.spa_port {
        match spec.spa_len {
            Some(len) => {
                rules.push(format!(
                    "udp dport {port} udp length {} log prefix \"portolan-spa\" group {group} drop comment \"SPA: read through NFLOG, never answered\"",
                    u32::from(len) + 8
                ));
                rules.push(format!(
                    "udp dport {port} drop comment \"not an SPA packet's length: dropped unread\""
                ));
            }
            None => rules.push(format!(
                "udp dport {port} log prefix \"portolan-spa\" group {group} drop comment \"SPA: read through NFLOG, never answered\""
            )),
        }
        // TCP to the same number is dropped too: a TCP scan finds it filtered like the
        // guarded ports, not closed beside them.
        let tcp = PortProto {
            proto: L4::Tcp,
            port,
        };
        if !spec.guarded.contains(&tcp) && !spec.knock.contains(&tcp) {
            rules.push(format!(
                "tcp dport {port} drop comment \"the SPA port's TCP twin: filtered like it\""
            ));
        }
    }
    for proto in [L4::Tcp, L4::Udp] {
        let ports = of_proto(&spec.knock, proto);
        if !ports.is_empty() {
            rules.push(format!(
                "{} dport {} log prefix \"portolan-knock\" group {group} drop comment \"knock ports\"",
                proto.as_str(),
                ports_text(&ports)
            ));
        }
    }
    if let Some(k) = spec.keep_open {
        let ssh = PortProto {
            proto: L4::Tcp,
            port: k.port,
        };
        if spec.guarded.contains(&ssh) {
            let fam = if k.client.is_ipv4() { "ip" } else { "ip6" };
            rules.push(format!(
                "{fam} saddr {} tcp dport {} accept comment \"the current SSH session's client\"",
                k.client, k.port
            ));
        }
    }
    rules.push(format!(
        "ip saddr . meta l4proto . th dport @{SET4} accept comment \"opened\""
    ));
    rules.push(format!(
        "ip6 saddr . meta l4proto . th dport @{SET6} accept comment \"opened\""
    ));
    for proto in [L4::Tcp, L4::Udp] {
        let ports = of_proto(&spec.guarded, proto);
        if !ports.is_empty() {
            rules.push(format!(
                "{} dport {} drop comment \"guarded\"",
                proto.as_str(),
                ports_text(&ports)
            ));
        }
    }
    let _ = write!(
        s,
        "\tchain input {{\n\t\ttype filter hook input priority {PRIORITY}; policy accept;\n"
    );
    for r in rules {
        let _ = writeln!(s, "\t\t{r}");
    }
    s.push_str("\t}\n}\n");
    Ok(s)
}

/// Runs `nft` with `args`, feeding `stdin` when given; stdout on success (nft's stderr,
/// escaped, in the error). Also `portolan sentry`'s runner for its own table.
pub fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, GuardError> {
    let what = format!("nft {}", args.join(" "));
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                GuardError::Config("nft is not installed (the nftables package)".to_owned())
            } else {
                GuardError::io(format!("run {what}"), e)
            }
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| GuardError::io(format!("write to {what}"), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| GuardError::io(format!("wait for {what}"), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(GuardError::Netlink(format!(
            "{what} failed: {}",
            for_terminal(String::from_utf8_lossy(&out.stderr).trim())
        )))
    }
}

/// The script [`apply`] loads: make sure the table exists (so `delete` cannot fail),
/// delete it, and make it anew, in one transaction. Opened elements do not survive a
/// re-apply.
pub fn apply_script(spec: &TableSpec) -> Result<String, GuardError> {
    Ok(format!(
        "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{}",
        render(spec)?
    ))
}

/// The script that loads `spec` while keeping the sets (and the access they hold) of a
/// table already loaded: the chain is replaced, the sets are declared as they are. It
/// fails (changing nothing) when the loaded sets differ from `spec`'s.
pub fn keep_script(spec: &TableSpec) -> Result<String, GuardError> {
    Ok(format!(
        "add table {FAMILY} {TABLE}
add chain {FAMILY} {TABLE} input
delete chain {FAMILY} {TABLE} input
{}",
        render(spec)?
    ))
}

/// Loads the table `spec` describes, atomically. Access already given survives when a
/// table with the same sets is loaded (a restart of the guard); otherwise the table is
/// replaced whole. Returns whether the access given before was kept.
pub fn apply(spec: &TableSpec) -> Result<bool, GuardError> {
    if is_loaded()? && nft(&["-f", "-"], Some(&keep_script(spec)?)).is_ok() {
        return Ok(true);
    }
    nft(&["-f", "-"], Some(&apply_script(spec)?)).map(|_| false)
}

/// Deletes the guard table (nothing happens when there is none).
pub fn remove() -> Result<(), GuardError> {
    nft(
        &["-f", "-"],
        Some(&format!(
            "add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
        )),
    )
    .map(drop)
}

/// Whether the guard table is loaded.
pub fn is_loaded() -> Result<bool, GuardError> {
    let ours = format!("table {FAMILY} {TABLE}");
    Ok(nft(&["list", "tables"], None)?
        .lines()
        .any(|l| l.trim() == ours))
}

fn check_duration(for_: Duration) -> Result<u64, GuardError> {
    let ms = u64::try_from(for_.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 || for_ > MAX_OPEN {
        return Err(GuardError::Config(format!(
            "cannot open for {for_:?}: between 1 ms and {} days",
            MAX_OPEN.as_secs() / 86_400
        )));
    }
    Ok(ms)
}

fn set_of(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        SET4
    } else {
        SET6
    }
}

/// The set key of `addr . proto . port`: each field of a concatenation takes a whole
/// number of 4-byte registers, the value first and zeros after (inet_proto: 1 byte,
/// inet_service: 2 bytes, network order).
pub fn element_key(addr: IpAddr, port: PortProto) -> Vec<u8> {
    let mut k = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let proto: u8 = match port.proto {
        L4::Tcp => 6,
        L4::Udp => 17,
    };
    k.extend_from_slice(&[proto, 0, 0, 0]);
    let p = port.port.to_be_bytes();
    k.extend_from_slice(&[p[0], p[1], 0, 0]);
    k
}

/// The nft text of the element update: add (a no-op when it exists), delete, add with the
/// new timeout, in one transaction. A plain `add element` on an existing element keeps
/// its old timeout on kernels before 6.10 (6.10 onwards refresh it); this form replaces
/// the timeout on every kernel, atomically, so access never lapses in between.
fn element_script(addr: IpAddr, port: PortProto, ms: u64) -> String {
    let set = set_of(addr);
    let e = format!("{addr} . {} . {}", port.proto.as_str(), port.port);
    format!(
        "add element {FAMILY} {TABLE} {set} {{ {e} timeout {ms}ms }}\n\
         delete element {FAMILY} {TABLE} {set} {{ {e} }}\n\
         add element {FAMILY} {TABLE} {set} {{ {e} timeout {ms}ms }}\n"
    )
}

/// [`open`] through a spawned `nft` (slower: a process per call).
pub fn open_with_nft(addr: IpAddr, port: PortProto, for_: Duration) -> Result<(), GuardError> {
    let ms = check_duration(for_)?;
    nft(&["-f", "-"], Some(&element_script(addr, port, ms))).map(drop)
}

/// Opens `port` for `addr` for `for_`: adds the element, or gives an existing one the new
/// timeout (from now), so access never lasts past what was last granted.
///
/// This makes a netlink socket for the one call. Closing a netfilter netlink socket
/// right after a transaction waits for the kernel to free the transaction (an RCU grace
/// period: 8-20 ms measured, against about 15 µs for the batch itself), so a server
/// keeps an [`Opener`] instead.
pub fn open(addr: IpAddr, port: PortProto, for_: Duration) -> Result<(), GuardError> {
    Opener::new()?.open(addr, port, for_)
}

/// NLM_F_* flags (linux/netlink.h).
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
/// nfnetlink's subsystem id of nf_tables, named in batch messages.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// How long to wait for the kernel's answer to a batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// A netlink socket that writes set elements: keep one to open many elements without a
/// socket per call (see [`open`] for why that matters). The socket belongs to the network
/// namespace of the thread that made it.
#[derive(Debug)]
pub struct Opener {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Opener {
    pub fn new() -> Result<Opener, GuardError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| GuardError::io("netlink (netfilter) socket", e))?;
        sock.bind_auto()
            .map_err(|e| GuardError::io("bind netlink (netfilter) socket", e))?;
        sock.set_non_blocking(true)
            .map_err(|e| GuardError::io("netlink socket: set nonblocking", e))?;
        Ok(Opener {
            sock,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// [`open`] on this socket.
    pub fn open(
        &mut self,
        addr: IpAddr,
        port: PortProto,
        for_: Duration,
    ) -> Result<(), GuardError> {
        let ms = check_duration(for_)?;
        let key = element_key(addr, port);
        let elem = |timeout: Option<u64>, wrap: fn(SetElementMessage) -> NfTablesMessage| {
            let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key.clone()))];
            attrs.extend(timeout.map(SetElementAttribute::Timeout));
            NetfilterMessage::new(
                NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0),
                wrap(SetElementMessage {
                    attributes: vec![
                        SetElementList::Table(TABLE.to_owned()),
                        SetElementList::Set(set_of(addr).to_owned()),
                        SetElementList::Elements(vec![ListAttribute::Element(attrs)]),
                    ],
                }),
            )
        };
        let new_elem = |m: NetfilterMessage| (m, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK);
        let control = |c: ControlMessage| {
            (
                NetfilterMessage::new(
                    NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                    c,
                ),
                NLM_F_REQUEST,
            )
        };
        // Same shape as element_script: add, delete, add, in one transaction.
        let add = NfTablesMessage::NewSetElement;
        let del = NfTablesMessage::DeleteSetElement;
        let msgs = [
            control(ControlMessage::BatchBegin),
            new_elem(elem(Some(ms), add)),
            (elem(None, del), NLM_F_REQUEST | NLM_F_ACK),
            new_elem(elem(Some(ms), add)),
            control(ControlMessage::BatchEnd),
        ];
        let mut bytes = Vec::with_capacity(512);
        let mut expect = Vec::new();
        for (m, flags) in msgs {
            self.seq = self.seq.wrapping_add(1);
            let mut hdr = NetlinkHeader::default();
            hdr.flags = flags;
            hdr.sequence_number = self.seq;
            let mut nl = NetlinkMessage::new(hdr, NetlinkPayload::from(m));
            nl.finalize();
            let at = bytes.len();
            bytes.resize(at + nl.buffer_len(), 0);
            nl.serialize(&mut bytes[at..]);
            if flags & NLM_F_ACK != 0 {
                expect.push(self.seq);
            }
        }
        self.sock
            .send(&bytes, 0)
            .map_err(|e| GuardError::io(format!("open {port} for {addr}: netlink send"), e))?;
        self.answers(&mut expect).map_err(|e| match e {
            GuardError::Io { source, .. } => GuardError::io(
                format!("open {port} for {addr} in {FAMILY} {TABLE}"),
                source,
            ),
            e => e,
        })
    }

    /// Reads acknowledgements until every sequence number in `expect` has one; the first
    /// error the kernel reports fails the call.
    fn answers(&mut self, expect: &mut Vec<u32>) -> Result<(), GuardError> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        while !expect.is_empty() {
            let n = match rustix::net::recv(
                &self.sock,
                &mut self.buf[..],
                rustix::net::RecvFlags::DONTWAIT,
            ) {
                Ok((n, _)) => n.min(self.buf.len()),
                Err(rustix::io::Errno::AGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(GuardError::Netlink(
                            "nf_tables did not answer a set element batch".to_owned(),
                        ));
                    }
                    let ts = rustix::time::Timespec {
                        tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                        tv_nsec: i64::from(left.subsec_nanos()),
                    };
                    let mut fds = [rustix::event::PollFd::new(
                        &self.sock,
                        rustix::event::PollFlags::IN,
                    )];
                    let _ = rustix::event::poll(&mut fds, Some(&ts));
                    continue;
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(GuardError::io("netlink receive", e.into())),
            };
            for m in parse_messages(&self.buf[..n]) {
                if let Message::Ack { seq, error } = m {
                    if let Some(i) = expect.iter().position(|&s| s == seq) {
                        if error != 0 {
                            return Err(GuardError::io(
                                "nf_tables",
                                std::io::Error::from_raw_os_error(-error),
                            ));
                        }
                        expect.swap_remove(i);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The elements now in the guard table's sets, with their time left.
pub fn list() -> Result<Vec<Opened>, GuardError> {
    let mut out = Vec::new();
    for set in [SET4, SET6] {
        let json = nft(&["-j", "list", "set", FAMILY, TABLE, set], None)?;
        out.extend(parse_list_json(&json)?);
    }
    Ok(out)
}

/// Reads `nft -j list set ...` output into elements (those of another shape are skipped).
pub fn parse_list_json(json: &str) -> Result<Vec<Opened>, GuardError> {
    use serde_json::Value;
    let v: Value = serde_json::from_str(json)
        .map_err(|e| GuardError::Netlink(format!("nft -j output: {e}")))?;
    let mut out = Vec::new();
    let sets = v["nftables"].as_array().into_iter().flatten();
    for item in sets {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            let (val, timeout, expires) = match e.get("elem") {
                Some(inner) => (&inner["val"], &inner["timeout"], &inner["expires"]),
                None => (e, &Value::Null, &Value::Null),
            };
            let Some([a, p, port]) = val["concat"].as_array().map(Vec::as_slice) else {
                continue;
            };
            let Some(addr) = a.as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
                continue;
            };
            let proto = match p.as_str() {
                Some("tcp") => L4::Tcp,
                Some("udp") => L4::Udp,
                _ => continue,
            };
            let Some(port) = port.as_u64().and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let secs = |v: &Value| Duration::from_secs(v.as_u64().unwrap_or(0));
            out.push(Opened {
                addr,
                port: PortProto { proto, port },
                timeout: secs(timeout),
                expires: secs(expires),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pp(s: &str) -> PortProto {
        s.parse().unwrap()
    }

    pub(crate) fn spec() -> TableSpec {
        TableSpec {
            guarded: vec![pp("22/tcp"), pp("443/tcp"), pp("53/udp")],
            spa_port: Some(62201),
            spa_len: None,
            knock: vec![pp("7000/tcp"), pp("8000/tcp"), pp("9000/udp")],
            nflog_group: 5,
            keep_open: Some(KeepOpen {
                client: "198.18.0.9".parse().unwrap(),
                port: 22,
            }),
            set_size: DEFAULT_SET_SIZE,
        }
    }

    #[test]
    fn the_table_text() {
        let text = render(&spec()).unwrap();
        let want = r#"table inet portolan_guard {
	set allow4 {
		type ipv4_addr . inet_proto . inet_service
		flags timeout
		size 65536
	}
	set allow6 {
		type ipv6_addr . inet_proto . inet_service
		flags timeout
		size 65536
	}
	chain input {
		type filter hook input priority filter - 10; policy accept;
		iif "lo" accept
		ct state established,related accept
		udp dport 62201 log prefix "portolan-spa" group 5 drop comment "SPA: read through NFLOG, never answered"
		tcp dport 62201 drop comment "the SPA port's TCP twin: filtered like it"
		tcp dport { 7000, 8000 } log prefix "portolan-knock" group 5 drop comment "knock ports"
		udp dport 9000 log prefix "portolan-knock" group 5 drop comment "knock ports"
		ip saddr 198.18.0.9 tcp dport 22 accept comment "the current SSH session's client"
		ip saddr . meta l4proto . th dport @allow4 accept comment "opened"
		ip6 saddr . meta l4proto . th dport @allow6 accept comment "opened"
		tcp dport { 22, 443 } drop comment "guarded"
		udp dport 53 drop comment "guarded"
	}
}
"#;
        assert_eq!(text, want);
    }

    #[test]
    fn the_ssh_exception_only_when_its_port_is_guarded() {
        let mut s = spec();
        s.guarded = vec![pp("443/tcp")];
        assert!(!render(&s).unwrap().contains("SSH"));
        s.guarded = vec![pp("22/tcp")];
        s.keep_open = Some(KeepOpen {
            client: "2001:2::9".parse().unwrap(),
            port: 22,
        });
        assert!(render(&s)
            .unwrap()
            .contains("ip6 saddr 2001:2::9 tcp dport 22 accept"));
        let g = Guard::from_sources(Some("198.18.0.9 50000 198.18.0.1 2222"), None);
        assert_eq!(
            KeepOpen::from_guard(&g),
            Some(KeepOpen {
                client: "198.18.0.9".parse().unwrap(),
                port: 2222
            })
        );
        assert_eq!(KeepOpen::from_guard(&Guard::from_sources(None, None)), None);
    }

    #[test]
    fn overlaps_and_zeros_are_refused() {
        let mut s = spec();
        s.knock.push(pp("62201/udp"));
        assert!(render(&s).is_err());
        let mut s = spec();
        s.knock.push(pp("22/tcp"));
        assert!(render(&s).is_err());
        let mut s = spec();
        s.guarded.push(PortProto {
            proto: L4::Tcp,
            port: 0,
        });
        assert!(render(&s).is_err());
        let mut s = spec();
        s.set_size = 0;
        assert!(render(&s).is_err());
        // The same port under the other protocol is fine.
        let mut s = spec();
        s.knock.push(pp("62201/tcp"));
        assert!(render(&s).is_ok());
    }

    #[test]
    fn keys_pad_each_field_to_four_bytes() {
        assert_eq!(
            element_key("198.18.0.2".parse().unwrap(), pp("22/tcp")),
            [198, 18, 0, 2, 6, 0, 0, 0, 0, 22, 0, 0]
        );
        let k = element_key("2001:2::2".parse().unwrap(), pp("53/udp"));
        assert_eq!(k.len(), 24);
        assert_eq!(&k[16..], &[17, 0, 0, 0, 0, 53, 0, 0]);
    }

    #[test]
    fn durations_are_checked() {
        assert!(check_duration(Duration::ZERO).is_err());
        assert!(check_duration(Duration::from_micros(999)).is_err());
        assert_eq!(check_duration(Duration::from_secs(2)).unwrap(), 2000);
        assert!(check_duration(MAX_OPEN + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn element_script_replaces_the_timeout() {
        let s = element_script("2001:2::2".parse().unwrap(), pp("22/tcp"), 1500);
        assert_eq!(
            s,
            "add element inet portolan_guard allow6 { 2001:2::2 . tcp . 22 timeout 1500ms }\n\
             delete element inet portolan_guard allow6 { 2001:2::2 . tcp . 22 }\n\
             add element inet portolan_guard allow6 { 2001:2::2 . tcp . 22 timeout 1500ms }\n"
        );
    }

    #[test]
    fn list_json() {
        let j = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "allow4", "table": "portolan_guard", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 1, "size": 65536, "flags": ["timeout"], "elem": [{"elem": {"val": {"concat": ["198.18.0.2", "tcp", 22]}, "timeout": 100, "expires": 99}}, {"elem": {"val": {"concat": ["198.18.0.3", "udp", 53]}, "timeout": 50, "expires": 49}}, {"elem": {"val": {"concat": ["x", "tcp", 22]}}}]}}]}"#;
        let got = parse_list_json(j).unwrap();
        assert_eq!(
            got,
            vec![
                Opened {
                    addr: "198.18.0.2".parse().unwrap(),
                    port: pp("22/tcp"),
                    timeout: Duration::from_secs(100),
                    expires: Duration::from_secs(99),
                },
                Opened {
                    addr: "198.18.0.3".parse().unwrap(),
                    port: pp("53/udp"),
                    timeout: Duration::from_secs(50),
                    expires: Duration::from_secs(49),
                },
            ]
        );
        assert!(parse_list_json("not json").is_err());
        assert!(parse_list_json(r#"{"nftables": [{"set": {}}]}"#)
            .unwrap()
            .is_empty());
    }
}
