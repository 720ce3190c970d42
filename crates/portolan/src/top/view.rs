//! The three views over one refresh, as tables: which rows pass the filter, in which
//! order, and each visible cell's text. Only the rows on screen are formatted; sorting and
//! filtering work on typed values, so 100,000 sockets cost a sort, not 100,000 strings.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use portolan_core::{Exposure, Protocol};

use super::filter::{Fields, Filter};
use super::sample::{Mark, Row, Sample};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Listeners,
    Connections,
    Processes,
}

impl View {
    pub const ALL: [View; 3] = [View::Listeners, View::Connections, View::Processes];

    pub fn title(self) -> &'static str {
        match self {
            View::Listeners => "Listeners",
            View::Connections => "Connections",
            View::Processes => "Processes",
        }
    }

    pub fn columns(self) -> &'static [&'static str] {
        match self {
            View::Listeners => &[
                "Proto", "Address", "Port", "Exposure", "Service", "Process", "PID", "User",
                "Unit", "Conns", "Rx/s", "Tx/s",
            ],
            View::Connections => &[
                "Proto", "Local", "Remote", "State", "Process", "PID", "User", "Rx/s", "Tx/s",
                "RTT", "Retr",
            ],
            View::Processes => &[
                "Process",
                "PID",
                "User",
                "Unit",
                "Listening",
                "Conns",
                "Rx/s",
                "Tx/s",
            ],
        }
    }

    /// The column sorted on at first (descending for traffic, ascending otherwise).
    pub fn default_sort(self) -> (usize, bool) {
        match self {
            View::Listeners => (3, false),
            View::Connections => (7, true),
            View::Processes => (6, true),
        }
    }
}

/// A row of the processes view: one process (or the sockets whose owner is unknown, by uid).
#[derive(Debug, Clone, Default)]
pub struct Proc {
    pub pid: Option<u32>,
    pub process: String,
    pub user: String,
    pub unit: String,
    pub listening: Vec<(Protocol, u16)>,
    pub conns: usize,
    pub rx: f64,
    pub tx: f64,
}

/// Traffic of a listener: the connections on its port (as the server end).
#[derive(Debug, Clone, Copy, Default)]
pub struct PortLoad {
    pub conns: usize,
    pub rx: f64,
    pub tx: f64,
}

/// One refresh, arranged for the three views.
#[derive(Debug, Default)]
pub struct Model {
    pub sample: Sample,
    pub procs: Vec<Proc>,
    pub load: HashMap<(Protocol, u16), PortLoad>,
    /// Ports something listens on.
    pub listening: HashSet<(Protocol, u16)>,
}

/// What a row is, to keep it selected across refreshes (cheap to compute and compare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ident {
    Sock(Protocol, SocketAddr, Option<SocketAddr>, u64),
    Proc(Option<u32>, String),
}

pub fn ident(m: &Model, view: View, i: usize) -> Ident {
    if view == View::Processes {
        let p = &m.procs[i];
        Ident::Proc(p.pid, p.process.clone())
    } else {
        let r = &m.sample.rows[i];
        Ident::Sock(r.proto, r.local, r.remote, r.inode)
    }
}

impl Model {
    pub fn new(sample: Sample) -> Model {
        let listening: HashSet<(Protocol, u16)> = sample
            .rows
            .iter()
            .filter(|r| r.is_listening() && !matches!(r.mark, Mark::Gone(_)))
            .map(|r| (r.proto, r.local.port()))
            .collect();
        let mut load: HashMap<(Protocol, u16), PortLoad> = HashMap::new();
        let mut procs: HashMap<(Option<u32>, u32), Proc> = HashMap::new();
        for r in sample.rows.iter() {
            if r.mark == Mark::Gone(0) {
                continue;
            }
            let key = (r.holder.pid, if r.holder.pid.is_some() { 0 } else { r.uid });
            let p = procs.entry(key).or_insert_with(|| Proc {
                pid: r.holder.pid,
                process: if r.holder.pid.is_some() {
                    r.holder.process.clone()
                } else {
                    format!("(uid {}: owner not readable)", r.uid)
                },
                user: r.holder.user.clone(),
                unit: r.holder.unit.clone(),
                ..Proc::default()
            });
            if r.is_listening() {
                p.listening.push((r.proto, r.local.port()));
            } else if r.remote.is_some() {
                p.conns += 1;
                p.rx += r.rx_rate.unwrap_or(0.0);
                p.tx += r.tx_rate.unwrap_or(0.0);
                if listening.contains(&(r.proto, r.local.port())) {
                    let l = load.entry((r.proto, r.local.port())).or_default();
                    l.conns += 1;
                    l.rx += r.rx_rate.unwrap_or(0.0);
                    l.tx += r.tx_rate.unwrap_or(0.0);
                }
            }
        }
        let mut procs: Vec<Proc> = procs
            .into_values()
            .filter(|p| p.pid.is_some() || p.conns > 0 || !p.listening.is_empty())
            .collect();
        for p in &mut procs {
            p.listening
                .sort_unstable_by_key(|(pr, port)| (pr.as_str(), *port));
            p.listening.dedup();
        }
        Model {
            sample,
            procs,
            load,
            listening,
        }
    }
}

/// A sort key.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Num(f64),
    Text(String),
}

fn cmp_key(a: &Key, b: &Key) -> Ordering {
    match (a, b) {
        (Key::Num(x), Key::Num(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Key::Text(x), Key::Text(y)) => x.cmp(y),
        (Key::Num(_), Key::Text(_)) => Ordering::Less,
        (Key::Text(_), Key::Num(_)) => Ordering::Greater,
    }
}

fn exposure_rank(e: Option<Exposure>) -> f64 {
    match e {
        Some(Exposure::AllInterfaces) => 2.0,
        Some(Exposure::Specific) => 1.0,
        _ => 0.0,
    }
}

fn exposure_word(e: Option<Exposure>) -> &'static str {
    match e {
        Some(Exposure::AllInterfaces) => "all interfaces",
        Some(Exposure::Specific) => "one address",
        Some(Exposure::Loopback) => "loopback",
        None => "",
    }
}

#[expect(clippy::cast_precision_loss, reason = "sort keys")]
fn num<T: Into<u64>>(v: Option<T>) -> Key {
    Key::Num(v.map_or(-1.0, |x| x.into() as f64))
}

/// A byte rate for people: `1.2 MB/s`; empty when unknown.
pub fn rate(v: Option<f64>) -> String {
    let Some(v) = v else {
        return String::new();
    };
    if v < 1.0 {
        return "0".into();
    }
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut x = v;
    let mut i = 0;
    while x >= 1000.0 && i < units.len() - 1 {
        x /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{x:.0} B")
    } else {
        format!("{x:.1} {}", units[i])
    }
}

fn addr(a: std::net::SocketAddr) -> String {
    a.to_string()
}

/// What a row of any view refers to, for the actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A listening port this row can act on (kill, probe).
    pub listener: Option<(u16, Protocol)>,
    /// The port `info` explains.
    pub port: Option<u16>,
    /// The command line `c` copies.
    pub command: String,
    /// Who the row names (for the confirmation).
    pub who: String,
}

/// The rows of `view` that pass `filter`, in the chosen order, as indexes into the
/// model's rows (or procs).
pub fn order(m: &Model, view: View, filter: &Filter, sort: (usize, bool)) -> Vec<usize> {
    let needs_text = filter
        .terms
        .iter()
        .any(|t| matches!(t, super::filter::Term::Text(_)));
    let mut idx: Vec<usize> = match view {
        View::Listeners | View::Connections => (0..m.sample.rows.len())
            .filter(|&i| {
                let r = &m.sample.rows[i];
                // The connections view is every socket, listeners included.
                let keep = view == View::Connections || r.is_listening();
                keep && {
                    let text = if needs_text {
                        row_text(m, view, i).to_lowercase()
                    } else {
                        String::new()
                    };
                    // No allocation per row: a listener's second port repeats its first.
                    let ports = [
                        r.local.port(),
                        r.remote.map_or(r.local.port(), |x| x.port()),
                    ];
                    filter.matches(&Fields {
                        ports: &ports,
                        pid: r.holder.pid,
                        process: &r.holder.process,
                        state: r.state.json_name(),
                        user: &r.holder.user,
                        unit: &r.holder.unit,
                        proto: r.proto.as_str(),
                        text: &text,
                    })
                }
            })
            .collect(),
        View::Processes => (0..m.procs.len())
            .filter(|&i| {
                let p = &m.procs[i];
                let text = if needs_text {
                    row_text(m, view, i).to_lowercase()
                } else {
                    String::new()
                };
                let ports: Vec<u16> = p.listening.iter().map(|(_, port)| *port).collect();
                filter.matches(&Fields {
                    ports: &ports,
                    pid: p.pid,
                    process: &p.process,
                    state: if p.listening.is_empty() { "" } else { "listen" },
                    user: &p.user,
                    unit: &p.unit,
                    proto: "",
                    text: &text,
                })
            })
            .collect(),
    };
    let (col, desc) = sort;
    let mut keyed: Vec<(Key, usize)> = idx
        .drain(..)
        .map(|i| (sort_key(m, view, i, col), i))
        .collect();
    keyed.sort_by(|(a, ia), (b, ib)| {
        let o = cmp_key(a, b);
        let o = if desc { o.reverse() } else { o };
        o.then(ia.cmp(ib))
    });
    keyed.into_iter().map(|(_, i)| i).collect()
}

fn sort_key(m: &Model, view: View, i: usize, col: usize) -> Key {
    match view {
        View::Listeners => {
            let r = &m.sample.rows[i];
            let l = m
                .load
                .get(&(r.proto, r.local.port()))
                .copied()
                .unwrap_or_default();
            match col {
                0 => Key::Text(r.proto.as_str().into()),
                1 => Key::Text(r.local.ip().to_string()),
                2 => num(Some(r.local.port())),
                // As the overview groups them: most exposed first, then by owner, then port.
                3 => Key::Text(format!(
                    "{}\u{0}{}\u{0}{:05}",
                    2.0 - exposure_rank(r.exposure()),
                    r.holder.process.to_lowercase(),
                    r.local.port()
                )),
                4 => Key::Text(service(r).to_owned()),
                5 => Key::Text(r.holder.process.to_lowercase()),
                6 => num(r.holder.pid),
                7 => Key::Text(r.holder.user.clone()),
                8 => Key::Text(r.holder.unit.clone()),
                9 => num(Some(l.conns as u64)),
                10 => Key::Num(l.rx),
                _ => Key::Num(l.tx),
            }
        }
        View::Connections => {
            let r = &m.sample.rows[i];
            match col {
                0 => Key::Text(r.proto.as_str().into()),
                1 => Key::Text(format!("{:?}", r.local)),
                2 => Key::Text(r.remote.map(|a| format!("{a:?}")).unwrap_or_default()),
                3 => Key::Text(r.state.json_name().into()),
                4 => Key::Text(r.holder.process.to_lowercase()),
                5 => num(r.holder.pid),
                6 => Key::Text(r.holder.user.clone()),
                7 => Key::Num(r.rx_rate.unwrap_or(-1.0) + r.tx_rate.unwrap_or(0.0) * 1e-9),
                8 => Key::Num(r.tx_rate.unwrap_or(-1.0)),
                9 => num(r.rtt_us),
                _ => num(r.retrans),
            }
        }
        View::Processes => {
            let p = &m.procs[i];
            match col {
                0 => Key::Text(p.process.to_lowercase()),
                1 => num(p.pid),
                2 => Key::Text(p.user.clone()),
                3 => Key::Text(p.unit.clone()),
                4 => num(Some(p.listening.len() as u64)),
                5 => num(Some(p.conns as u64)),
                6 => Key::Num(p.rx + p.tx * 1e-9),
                _ => Key::Num(p.tx),
            }
        }
    }
}

fn service(r: &Row) -> &'static str {
    portolan_catalog::service_name(r.local.port().into(), r.proto).unwrap_or("")
}

/// The cells of one row.
pub fn cells(m: &Model, view: View, i: usize) -> Vec<String> {
    match view {
        View::Listeners => {
            let r = &m.sample.rows[i];
            let l = m
                .load
                .get(&(r.proto, r.local.port()))
                .copied()
                .unwrap_or_default();
            vec![
                r.proto.as_str().into(),
                r.local.ip().to_string(),
                r.local.port().to_string(),
                exposure_word(r.exposure()).into(),
                service(r).into(),
                r.holder.process.clone(),
                r.holder.pid.map(|p| p.to_string()).unwrap_or_default(),
                r.holder.user.clone(),
                r.holder.unit.clone(),
                l.conns.to_string(),
                if r.proto == Protocol::Udp {
                    "n/a".into()
                } else {
                    rate(Some(l.rx))
                },
                if r.proto == Protocol::Udp {
                    "n/a".into()
                } else {
                    rate(Some(l.tx))
                },
            ]
        }
        View::Connections => {
            let r = &m.sample.rows[i];
            let udp = r.proto == Protocol::Udp;
            vec![
                r.proto.as_str().into(),
                addr(r.local),
                r.remote.map_or_else(|| "*".into(), addr),
                r.state.json_name().into(),
                r.holder.process.clone(),
                r.holder.pid.map(|p| p.to_string()).unwrap_or_default(),
                r.holder.user.clone(),
                if udp { "n/a".into() } else { rate(r.rx_rate) },
                if udp { "n/a".into() } else { rate(r.tx_rate) },
                r.rtt_us
                    .filter(|&u| u > 0)
                    .map(|u| format!("{:.1} ms", f64::from(u) / 1000.0))
                    .unwrap_or_default(),
                r.retrans.map(|x| x.to_string()).unwrap_or_default(),
            ]
        }
        View::Processes => {
            let p = &m.procs[i];
            let ports: Vec<String> = p
                .listening
                .iter()
                .take(6)
                .map(|(pr, port)| format!("{port}/{}", pr.as_str()))
                .collect();
            let more = p.listening.len().saturating_sub(6);
            vec![
                p.process.clone(),
                p.pid.map(|x| x.to_string()).unwrap_or_default(),
                p.user.clone(),
                p.unit.clone(),
                if more > 0 {
                    format!("{} +{more}", ports.join(" "))
                } else {
                    ports.join(" ")
                },
                p.conns.to_string(),
                rate(Some(p.rx)),
                rate(Some(p.tx)),
            ]
        }
    }
}

fn row_text(m: &Model, view: View, i: usize) -> String {
    cells(m, view, i).join(" ")
}

/// The mark of a row (processes have none).
pub fn mark(m: &Model, view: View, i: usize) -> Mark {
    match view {
        View::Processes => Mark::Steady,
        _ => m.sample.rows[i].mark,
    }
}

/// What the actions act on for a row.
pub fn target(m: &Model, view: View, i: usize) -> Target {
    match view {
        View::Listeners | View::Connections => {
            let r = &m.sample.rows[i];
            let listens_here = r.is_listening() || m.listening.contains(&(r.proto, r.local.port()));
            let who = if r.holder.pid.is_some() {
                format!(
                    "{} (pid {})",
                    r.holder.process,
                    r.holder.pid.unwrap_or_default()
                )
            } else {
                format!("a process of uid {}", r.uid)
            };
            let command = match r.remote {
                Some(rem) if !r.is_listening() => format!(
                    "ss -{}np '( sport = :{} and dport = :{} )'",
                    if r.proto == Protocol::Udp { "u" } else { "t" },
                    r.local.port(),
                    rem.port()
                ),
                _ => format!("portolan who {}/{}", r.local.port(), r.proto.as_str()),
            };
            Target {
                listener: listens_here.then_some((r.local.port(), r.proto)),
                port: Some(if r.is_listening() || listens_here {
                    r.local.port()
                } else {
                    r.remote.map_or(r.local.port(), |x| x.port())
                }),
                command,
                who,
            }
        }
        View::Processes => {
            let p = &m.procs[i];
            Target {
                listener: p.listening.first().map(|(pr, port)| (*port, *pr)),
                port: p.listening.first().map(|(_, port)| *port),
                command: p
                    .pid
                    .map_or_else(String::new, |pid| format!("portolan ls -a --pid {pid}")),
                who: format!("{} (pid {})", p.process, p.pid.unwrap_or_default()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(rate(None), "");
        assert_eq!(rate(Some(0.2)), "0");
        assert_eq!(rate(Some(999.0)), "999 B");
        assert_eq!(rate(Some(1_250_000.0)), "1.2 MB");
        assert_eq!(rate(Some(3.0e12)), "3.0 TB");
    }
}
