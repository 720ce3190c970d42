//! Rendering of sockets: the JSON/JSONL/CSV record (one schema, documented in the README)
//! and the human tables for `ls`, the overview and `who`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::net::SocketAddr;

use portolan_core::escape::bytes_for_terminal;
use portolan_core::{Exposure, LocalTarget, Protocol};
use portolan_probe::local::Probed;
use portolan_sockets::{CgroupOwner, Inventory, ProcessInfo, SocketEntry, Warning};
use serde::Serialize;

use crate::render::csv::CsvOut;
use crate::render::{esc, write_table, Cell, Report, Style, BOLD, DIM, GREEN, RED, YELLOW};

/// One owning process, as JSON shows it.
#[derive(Debug, Serialize)]
pub struct ProcRecord<'a> {
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Names are bytes in the inventory; here, their lossless text (`\xNN` for bytes
    /// that are not UTF-8).
    pub name: String,
    pub exe: Option<String>,
    pub exe_deleted: bool,
    pub cmdline: String,
    pub uid: u32,
    pub user: Option<&'a str>,
}

/// One socket, as JSON, JSONL and CSV show it. Field names are the documented schema.
#[derive(Debug, Serialize)]
pub struct SocketRecord<'a> {
    pub proto: &'static str,
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: Option<String>,
    pub remote_port: Option<u16>,
    pub state: &'static str,
    pub exposure: Option<&'static str>,
    pub stack: Option<&'static str>,
    pub recv_q: u32,
    pub send_q: u32,
    pub uid: u32,
    pub user: Option<&'a str>,
    pub inode: u64,
    pub pid: Option<u32>,
    pub process: Option<String>,
    pub processes: Vec<ProcRecord<'a>>,
    pub unit: Option<&'a str>,
    pub user_unit: bool,
    pub container: Option<&'a str>,
    pub cgroup: Option<&'a str>,
    pub service: Option<&'static str>,
    /// With `--probe`, for TCP listeners: what answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<super::probe::Answers<'a>>,
    /// A listener of `portolan forward`: where it forwards to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward: Option<&'a str>,
}

/// The listeners of running `portolan forward` processes, by protocol and local address:
/// where each forwards to.
pub type Forwards = BTreeMap<(Protocol, SocketAddr), String>;

fn service_of(s: &SocketEntry) -> Option<&'static str> {
    // For a connection, the service is the well-known end: the listener's port when we
    // are the server, the remote port when we are the client.
    let local = portolan_catalog::service_name(s.local.port().into(), s.proto);
    if s.state.is_listening() || s.remote.is_none() {
        return local;
    }
    let remote = s
        .remote
        .and_then(|r| portolan_catalog::service_name(r.port().into(), s.proto));
    match (local, remote) {
        (Some(l), Some(r)) => Some(if s.local.port() <= s.remote.map_or(0, |r| r.port()) {
            l
        } else {
            r
        }),
        (l, r) => l.or(r),
    }
}

pub fn record<'a>(inv: &'a Inventory, s: &'a SocketEntry) -> SocketRecord<'a> {
    let owner = inv.owner(s);
    let cg = inv.cgroup_owner(s);
    let (uid, user) = inv.user_of(s);
    SocketRecord {
        proto: s.proto.as_str(),
        family: s.family.as_str(),
        local_addr: s.local.ip().to_string(),
        local_port: s.local.port(),
        remote_addr: s.remote.map(|r| r.ip().to_string()),
        remote_port: s.remote.map(|r| r.port()),
        state: s.state.json_name(),
        exposure: s.exposure().map(Exposure::as_str),
        stack: s.stack().map(portolan_core::StackScope::as_str),
        recv_q: s.recv_q,
        send_q: s.send_q,
        uid,
        user,
        inode: s.inode,
        pid: owner.map(|p| p.pid),
        process: owner.map(ProcessInfo::name_text),
        processes: inv
            .owners(s)
            .map(|p| ProcRecord {
                pid: p.pid,
                ppid: p.ppid,
                name: p.name_text(),
                exe: p.exe_text(),
                exe_deleted: p.exe_deleted,
                cmdline: p.cmdline_text(),
                uid: p.uid,
                user: inv.users.name(p.uid),
            })
            .collect(),
        unit: cg.and_then(|c| c.unit.as_deref()),
        user_unit: cg.is_some_and(|c| c.user_unit),
        container: cg.and_then(|c| c.container.as_deref()),
        cgroup: cg.map(|c| c.path.as_str()),
        service: service_of(s),
        answers: None,
        forward: None,
    }
}

const CSV_HEADER: &[&str] = &[
    "proto",
    "family",
    "local_addr",
    "local_port",
    "remote_addr",
    "remote_port",
    "state",
    "exposure",
    "stack",
    "recv_q",
    "send_q",
    "uid",
    "user",
    "inode",
    "pid",
    "process",
    "pids",
    "exe",
    "cmdline",
    "unit",
    "container",
    "service",
];

fn csv_row(r: &SocketRecord) -> Vec<String> {
    let o = |v: Option<String>| v.unwrap_or_default();
    vec![
        r.proto.into(),
        r.family.into(),
        r.local_addr.clone(),
        r.local_port.to_string(),
        o(r.remote_addr.clone()),
        o(r.remote_port.map(|p| p.to_string())),
        r.state.into(),
        o(r.exposure.map(str::to_string)),
        o(r.stack.map(str::to_string)),
        r.recv_q.to_string(),
        r.send_q.to_string(),
        r.uid.to_string(),
        o(r.user.map(str::to_string)),
        r.inode.to_string(),
        o(r.pid.map(|p| p.to_string())),
        o(r.process.clone()),
        r.processes
            .iter()
            .map(|p| p.pid.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        o(r.processes.first().and_then(|p| p.exe.clone())),
        o(r.processes.first().map(|p| p.cmdline.clone())),
        o(r.unit.map(str::to_string)),
        o(r.container.map(str::to_string)),
        o(r.service.map(str::to_string)),
    ]
}

/// A socket's record, with what answered when it is a probed listener.
fn record_probed<'a>(report: &'a SocketsReport<'a>, s: &'a SocketEntry) -> SocketRecord<'a> {
    let mut r = record(report.inv, s);
    r.answers = report
        .probed
        .of_socket(s.proto, s.state, s.local)
        .map(super::probe::Answers::of);
    r.forward = forward_of(&report.forwards, s);
    r
}

/// Where `s` forwards to, when it is a listener of `portolan forward`.
fn forward_of<'f>(forwards: &'f Forwards, s: &SocketEntry) -> Option<&'f str> {
    if !s.state.is_listening() {
        return None;
    }
    forwards.get(&(s.proto, s.local)).map(String::as_str)
}

/// How the sockets read as a table: `ls`'s rows, or the overview's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Ls {
        numeric: bool,
    },
    Overview {
        numeric: bool,
    },
    /// `who`: the asked port, pid or name heads the table.
    Who {
        target: LocalTarget,
        numeric: bool,
    },
}

/// The report of `ls` and the overview: sockets of one inventory, with what answered on
/// probed listeners. Its JSON is `{"source", "warnings", "sockets": [...]}`, written record
/// by record as serialization goes, so memory stays that of the inventory however many
/// sockets there are.
#[derive(Debug)]
pub struct SocketsReport<'a> {
    pub inv: &'a Inventory,
    pub sockets: Vec<&'a SocketEntry>,
    pub probed: &'a Probed,
    pub layout: Layout,
    /// Listeners of `portolan forward` among them (named as forwards).
    pub forwards: Forwards,
}

/// The `sockets` list, serialized one record at a time.
struct Records<'r, 'a>(&'r SocketsReport<'a>);

impl Serialize for Records<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let r = self.0;
        let mut seq = ser.serialize_seq(Some(r.sockets.len()))?;
        for s in &r.sockets {
            seq.serialize_element(&record_probed(r, s))?;
        }
        seq.end()
    }
}

impl Serialize for SocketsReport<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = ser.serialize_struct("Sockets", 3)?;
        st.serialize_field(
            "source",
            self.inv
                .source
                .map_or("none", portolan_sockets::Source::as_str),
        )?;
        let warnings: Vec<String> = self.inv.warnings.iter().map(ToString::to_string).collect();
        st.serialize_field("warnings", &warnings)?;
        st.serialize_field("sockets", &Records(self))?;
        st.end()
    }
}

impl Report for SocketsReport<'_> {
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        match &self.layout {
            Layout::Ls { numeric } => {
                write_ls(w, style, self.inv, &self.sockets, *numeric, self.probed)
            }
            Layout::Overview { numeric } => write_overview(w, style, self, *numeric),
            Layout::Who { target, numeric } => write_who(w, style, self, target, *numeric),
        }
    }

    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        for s in &self.sockets {
            serde_json::to_writer(&mut *w, &record_probed(self, s))?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    fn csv(&self, w: &mut CsvOut<'_>) -> io::Result<()> {
        w.row(CSV_HEADER)?;
        for s in &self.sockets {
            w.row(csv_row(&record(self.inv, s)))?;
        }
        Ok(())
    }

    fn found(&self) -> bool {
        !self.sockets.is_empty()
    }
}

/// Exposure cell: ALL (red), a specific address (yellow), loopback (green).
fn exposure_cell(s: &SocketEntry) -> Cell {
    match s.exposure() {
        Some(Exposure::AllInterfaces) => {
            let stack = s.stack().map_or("", |st| st.label());
            Cell::colored(format!("ALL {stack}").trim_end().to_string(), RED)
        }
        Some(Exposure::Specific) => Cell::colored("addr", YELLOW),
        Some(Exposure::Loopback) => Cell::colored("local", GREEN),
        None => Cell::plain(""),
    }
}

fn process_cell(inv: &Inventory, s: &SocketEntry) -> Cell {
    match inv.owner(s) {
        Some(p) => {
            let more = s.pids.len().saturating_sub(1);
            let extra = if more > 0 {
                format!(" +{more}")
            } else {
                String::new()
            };
            let deleted = if p.exe_deleted { " (deleted exe)" } else { "" };
            Cell::plain(format!(
                "{}/{}{extra}{deleted}",
                bytes_for_terminal(&p.name),
                p.pid
            ))
        }
        None if s.inode == 0 => Cell::colored("-", DIM),
        None => Cell::colored("?", DIM),
    }
}

fn user_cell(inv: &Inventory, s: &SocketEntry, numeric: bool) -> Cell {
    let (uid, name) = inv.user_of(s);
    match name {
        Some(n) if !numeric => Cell::plain(esc(n).into_owned()),
        _ => Cell::plain(uid.to_string()),
    }
}

fn unit_cell(inv: &Inventory, s: &SocketEntry) -> Cell {
    match inv
        .cgroup_owner(s)
        .and_then(portolan_sockets::CgroupOwner::label)
    {
        Some(label) => Cell::plain(esc(label).into_owned()),
        None => Cell::colored("-", DIM),
    }
}

/// The `ls` table.
fn write_ls(
    out: &mut dyn Write,
    style: Style,
    inv: &Inventory,
    sockets: &[&SocketEntry],
    numeric: bool,
    probed: &Probed,
) -> io::Result<()> {
    let show_unit = sockets.iter().any(|s| {
        inv.cgroup_owner(s)
            .is_some_and(|c| c.unit.is_some() || c.container.is_some())
    });
    let mut headers = vec![
        "EXPOSURE",
        "PROTO",
        "STATE",
        "LOCAL",
        "REMOTE",
        "PROCESS/PID",
        "USER",
    ];
    if show_unit {
        headers.push("UNIT");
    }
    if !numeric {
        headers.push("SERVICE");
    }
    let probing = !probed.is_empty();
    if probing {
        headers.push("ANSWERS");
    }
    let rows: Vec<Vec<Cell>> = sockets
        .iter()
        .map(|s| {
            let mut r = vec![
                exposure_cell(s),
                Cell::plain(s.proto.as_str()),
                Cell::plain(s.state.ss_name()),
                Cell::plain(s.local.to_string()),
                Cell::plain(s.remote.map_or_else(|| "*".to_string(), |r| r.to_string())),
                process_cell(inv, s),
                user_cell(inv, s, numeric),
            ];
            if show_unit {
                r.push(unit_cell(inv, s));
            }
            if !numeric {
                r.push(Cell::plain(service_of(s).unwrap_or("")));
            }
            if probing {
                r.push(Cell::plain(
                    probed
                        .of_socket(s.proto, s.state, s.local)
                        .map(super::probe::Answers::text)
                        .unwrap_or_default(),
                ));
            }
            r
        })
        .collect();
    write_table(out, style, &headers, &rows, "")
}

fn exposure_rank(s: &SocketEntry) -> u8 {
    match s.exposure() {
        Some(Exposure::AllInterfaces) => 0,
        Some(Exposure::Specific) => 1,
        Some(Exposure::Loopback) => 2,
        None => 3,
    }
}

/// Group key for the overview: the owning processes, or for unreadable owners, the
/// kernel-reported uid and cgroup.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    Pids(Vec<u32>),
    Unknown(u32, String),
}

/// The overview: listening sockets grouped by process/unit, most exposed first.
fn write_overview(
    out: &mut dyn Write,
    style: Style,
    report: &SocketsReport<'_>,
    numeric: bool,
) -> io::Result<()> {
    let (inv, sockets) = (report.inv, report.sockets.as_slice());
    let all = sockets
        .iter()
        .filter(|s| s.exposure() == Some(Exposure::AllInterfaces))
        .count();
    let spec = sockets
        .iter()
        .filter(|s| s.exposure() == Some(Exposure::Specific))
        .count();
    let lo = sockets
        .iter()
        .filter(|s| s.exposure() == Some(Exposure::Loopback))
        .count();
    writeln!(
        out,
        "{} listening socket(s): {} on all interfaces, {} on a specific address, {} loopback-only",
        sockets.len(),
        style.paint(if all > 0 { RED } else { GREEN }, &all.to_string()),
        spec,
        lo
    )?;
    let mut groups: BTreeMap<GroupKey, Vec<&SocketEntry>> = BTreeMap::new();
    for s in sockets {
        let key = if s.pids.is_empty() {
            let cg = inv
                .cgroup_owner(s)
                .map(|c| c.path.clone())
                .unwrap_or_default();
            GroupKey::Unknown(s.uid, cg)
        } else {
            GroupKey::Pids(s.pids.clone())
        };
        groups.entry(key).or_default().push(s);
    }
    let mut ordered: Vec<(GroupKey, Vec<&SocketEntry>)> = groups.into_iter().collect();
    for (_, v) in &mut ordered {
        v.sort_by_key(|s| (exposure_rank(s), s.proto, s.local.ip(), s.local.port()));
    }
    ordered.sort_by_key(|(_, v)| {
        (
            v.iter().map(|s| exposure_rank(s)).min(),
            v.iter().map(|s| s.local.port()).min(),
        )
    });
    for (key, socks) in &ordered {
        let first = socks[0];
        let (uid, uname) = inv.user_of(first);
        let user = match uname {
            Some(n) if !numeric => esc(n).into_owned(),
            _ => uid.to_string(),
        };
        let unit = inv
            .cgroup_owner(first)
            .and_then(portolan_sockets::CgroupOwner::label)
            .map(|u| format!("  unit {}", esc(u)))
            .unwrap_or_default();
        let head = match key {
            GroupKey::Pids(pids) => {
                let mut name = inv
                    .owner(first)
                    .map_or_else(|| "?".to_string(), |p| bytes_for_terminal(&p.name));
                if socks
                    .iter()
                    .any(|s| forward_of(&report.forwards, s).is_some())
                {
                    name.push_str(" forward");
                }
                let pids_s: Vec<String> = pids.iter().take(6).map(ToString::to_string).collect();
                let more = if pids.len() > 6 {
                    format!(" +{}", pids.len() - 6)
                } else {
                    String::new()
                };
                let label = if pids.len() == 1 { "pid" } else { "pids" };
                format!(
                    "{}  {label} {}{more}  user {user}{unit}",
                    style.paint(BOLD, &name),
                    pids_s.join(",")
                )
            }
            GroupKey::Unknown(..) => format!(
                "{}  user {user}{unit}  {}",
                style.paint(BOLD, "(process not visible)"),
                style.paint(DIM, crate::render::hidden_hint())
            ),
        };
        writeln!(out, "\n{head}")?;
        // Runs of consecutive ports on the same address, protocol and exposure collapse
        // into one line (`127.0.0.1:21000-21004`), so a busy machine still fits a screen.
        let mut rows: Vec<Vec<Cell>> = Vec::new();
        let mut i = 0;
        while i < socks.len() {
            let s = socks[i];
            let mut j = i + 1;
            while j < socks.len()
                && socks[j].proto == s.proto
                && socks[j].local.ip() == s.local.ip()
                && socks[j].exposure() == s.exposure()
                && socks[j].stack() == s.stack()
                && u32::from(socks[j].local.port()) == u32::from(socks[j - 1].local.port()) + 1
            {
                j += 1;
            }
            let last = socks[j - 1];
            let addr = if j - i > 1 {
                let ip = s.local.ip();
                let host = if ip.is_ipv6() {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                format!("{host}:{}-{}", s.local.port(), last.local.port())
            } else {
                s.local.to_string()
            };
            let mut r = vec![
                exposure_cell(s),
                Cell::plain(s.proto.as_str()),
                Cell::plain(addr),
            ];
            if let Some(t) = forward_of(&report.forwards, s) {
                r.push(Cell::plain(format!("-> {}", esc(t))));
            } else if !numeric {
                r.push(Cell::plain(if j - i > 1 {
                    format!("{} ports", j - i)
                } else {
                    service_of(s).unwrap_or("").to_string()
                }));
            }
            rows.push(r);
            i = j;
        }
        write_table(out, style, &[], &rows, "  ")?;
    }
    Ok(())
}

/// The `who` text: the port and its service names, the holders with their executables and
/// command lines, what answers there (`--probe`), then every socket with its role.
fn write_who(
    w: &mut dyn Write,
    st: Style,
    r: &SocketsReport<'_>,
    target: &LocalTarget,
    numeric: bool,
) -> io::Result<()> {
    let (inv, socks, probed) = (r.inv, r.sockets.as_slice(), r.probed);
    if let LocalTarget::Port(p, _) = &target {
        let services: BTreeSet<String> = socks
            .iter()
            .map(|s| s.proto)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|pr| {
                format!(
                    "{p}/{pr}{}",
                    portolan_catalog::service_name(*p, pr)
                        .filter(|_| !numeric)
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        writeln!(
            w,
            "{}",
            st.paint(
                BOLD,
                &format!(
                    "port {}",
                    services.into_iter().collect::<Vec<_>>().join(", ")
                )
            )
        )?;
    }
    // The holders, with what a person needs to recognise them.
    let mut seen = BTreeSet::new();
    let mut hidden = BTreeSet::new();
    for s in socks {
        if !(s.state.is_listening() || matches!(target, LocalTarget::Pid(_) | LocalTarget::Name(_)))
        {
            continue;
        }
        for p in inv.owners(s) {
            if !seen.insert(p.pid) {
                continue;
            }
            let user = inv
                .users
                .name(p.uid)
                .filter(|_| !numeric)
                .map_or_else(|| p.uid.to_string(), |n| esc(n).into_owned());
            let unit = p
                .cgroup
                .as_ref()
                .and_then(CgroupOwner::label)
                .map(|u| format!("  unit {}", esc(u)))
                .unwrap_or_default();
            // A `portolan forward` process is named with where it forwards this port.
            let forward = forward_of(&r.forwards, s)
                .map(|t| format!(" forward -> {}", esc(t)))
                .unwrap_or_default();
            writeln!(
                w,
                "{}{forward} (pid {})  user {user}{unit}",
                st.paint(BOLD, &bytes_for_terminal(&p.name)),
                p.pid
            )?;
            if let Some(exe) = p.exe.as_deref().map(bytes_for_terminal) {
                let del = if p.exe_deleted {
                    "  (deleted or replaced since start)"
                } else {
                    ""
                };
                writeln!(w, "  exe  {exe}{del}")?;
            }
            if !p.cmdline.is_empty() {
                let cmd: String = bytes_for_terminal(&p.cmdline).chars().take(200).collect();
                writeln!(w, "  cmd  {cmd}")?;
            }
        }
        // One line per hidden listener owner (uid and cgroup), not just the first.
        if s.pids.is_empty() && s.state.is_listening() && hidden.insert((s.uid, s.cgroup_id)) {
            let (uid, name) = inv.user_of(s);
            let unit = inv
                .cgroup_owner(s)
                .and_then(|c| c.unit.as_deref())
                .map(|u| format!("  unit {}", esc(u)))
                .unwrap_or_default();
            writeln!(
                w,
                "{}  user {}{unit}  {}",
                st.paint(BOLD, "(process not visible)"),
                name.filter(|_| !numeric)
                    .map_or_else(|| uid.to_string(), |n| esc(n).into_owned()),
                st.paint(DIM, crate::render::hidden_hint())
            )?;
        }
    }
    // What answers there (--probe).
    for (l, r) in probed.iter() {
        let udp = if l.proto == Protocol::Udp { "/udp" } else { "" };
        writeln!(
            w,
            "  answers on {}{udp}: {}",
            SocketAddr::new(l.address, l.port),
            super::probe::Answers::text(r)
        )?;
    }
    writeln!(w)?;
    // A connection is the server side when its local port is one of the listeners shown.
    let listening: BTreeSet<(Protocol, u16)> = socks
        .iter()
        .filter(|s| s.state.is_listening())
        .map(|s| (s.proto, s.local.port()))
        .collect();
    let rows: Vec<Vec<Cell>> = socks
        .iter()
        .map(|s| {
            let role = if s.state.is_listening() {
                "listener"
            } else if listening.contains(&(s.proto, s.local.port()))
                || matches!(target, LocalTarget::Port(p, _) if s.local.port() == p.get())
            {
                "server"
            } else {
                "client"
            };
            vec![
                exposure_cell(s),
                Cell::plain(s.proto.as_str()),
                Cell::plain(s.state.ss_name()),
                Cell::plain(role),
                Cell::plain(s.local.to_string()),
                Cell::plain(s.remote.map_or_else(|| "*".into(), |r| r.to_string())),
                process_cell(inv, s),
            ]
        })
        .collect();
    write_table(
        w,
        st,
        &[
            "EXPOSURE",
            "PROTO",
            "STATE",
            "ROLE",
            "LOCAL",
            "REMOTE",
            "PROCESS/PID",
        ],
        &rows,
        "",
    )?;
    Ok(())
}

/// Warnings go to stderr, once each.
pub fn warn_all(warnings: &[Warning], color: bool) {
    for w in warnings {
        crate::render::note(color, &w.to_string());
    }
}
