//! `portolan who`: who holds a port, or which ports a process, unit or pid holds.

use std::collections::BTreeSet;
use std::io::Write;

use anyhow::bail;
use portolan_core::escape::for_terminal;
use portolan_core::{Port, PortRange, PortSpec, Protocol};
use portolan_sockets::{Inventory, OwnerScan, ProcessInfo, Query, SocketEntry};

use crate::cli::WhoArgs;
use crate::output::{esc, write_table, Cell, Format, BOLD, DIM};
use crate::view;
use crate::{Ctx, Outcome};

/// What the user asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Port(Port, Option<Protocol>),
    Pid(u32),
    Name(String),
}

/// Parses a `who` target. A bare number is a port (0-65535); `pid:N` or `--pid` makes it
/// a pid; anything else is a process, unit or container name.
pub fn parse_target(s: &str, as_pid: bool) -> anyhow::Result<Target> {
    let t = s.trim();
    if t.is_empty() {
        bail!("empty target: give a port (8080), a pid (pid:1234), a process name or a unit");
    }
    if let Some(p) = t.strip_prefix("pid:") {
        return match p.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Target::Pid(n)),
            _ => bail!("invalid pid `{}`", for_terminal(p)),
        };
    }
    let (num, proto) = match t.split_once('/') {
        Some((n, pr)) => (n.trim_start_matches(':'), Some(pr.parse::<Protocol>()?)),
        None => (t.trim_start_matches(':'), None),
    };
    if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
        if as_pid {
            return match num.parse::<u32>() {
                Ok(n) if n > 0 && proto.is_none() => Ok(Target::Pid(n)),
                _ => bail!("invalid pid `{}`", for_terminal(t)),
            };
        }
        let port: Port = num.parse().map_err(|e| {
            anyhow::anyhow!(
                "{e} (for a process id, write pid:{} or use --pid)",
                for_terminal(num)
            )
        })?;
        return Ok(Target::Port(port, proto));
    }
    if t.starts_with('-') || t.bytes().any(|b| b.is_ascii_control()) {
        bail!("invalid target `{}`", for_terminal(t));
    }
    if proto.is_some() {
        bail!(
            "invalid port `{}`: a port is a number from 0 to 65535",
            for_terminal(t)
        );
    }
    Ok(Target::Name(t.to_string()))
}

/// A process matches a name when its command name or executable file name equals it.
pub fn process_matches(p: &ProcessInfo, name: &str) -> bool {
    p.name == name
        || p.exe.as_deref().and_then(|e| e.rsplit('/').next()) == Some(name)
        || p.cmdline
            .split(' ')
            .next()
            .and_then(|a0| a0.rsplit('/').next())
            .is_some_and(|a0| a0 == name || a0.strip_suffix(':') == Some(name))
}

fn unit_matches(inv: &Inventory, s: &SocketEntry, name: &str) -> bool {
    inv.cgroup_owner(s).is_some_and(|c| {
        c.unit
            .as_deref()
            .is_some_and(|u| u == name || u.strip_suffix(".service") == Some(name))
            || c.container.as_deref().is_some_and(|k| {
                k == name
                    || k.split_once(':')
                        .is_some_and(|(_, id)| name.len() >= 4 && id.starts_with(name))
            })
    })
}

pub fn who(ctx: &Ctx, a: &WhoArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let target = parse_target(&a.target, a.pid)?;
    let (mut tcp, mut udp) = if a.tcp || a.udp {
        (a.tcp, a.udp)
    } else {
        (true, true)
    };
    if let Target::Port(_, Some(p)) = &target {
        tcp = *p == Protocol::Tcp;
        udp = *p == Protocol::Udp;
        if !tcp && !udp {
            bail!("only tcp and udp sockets are listed");
        }
    }
    let mut query = Query {
        tcp,
        udp,
        source: ctx.source,
        ..Query::default()
    };
    match &target {
        Target::Port(p, _) => {
            query.ports = Some(PortSpec::from_ranges(vec![PortRange::single(*p)]));
            query.owners = OwnerScan::Targeted;
        }
        Target::Pid(pid) => query.pids = Some(vec![*pid]),
        Target::Name(_) => query.owners = OwnerScan::All,
    }
    let inv = Inventory::collect(&query)?;
    let mut socks: Vec<&SocketEntry> = match &target {
        Target::Port(..) | Target::Pid(_) => inv.sockets.iter().collect(),
        Target::Name(n) => inv
            .sockets
            .iter()
            .filter(|s| inv.owners(s).any(|p| process_matches(p, n)) || unit_matches(&inv, s, n))
            .collect(),
    };
    // Listeners first, then the port's own connections, then everything else.
    socks.sort_by_key(|s| {
        (
            !s.state.is_listening(),
            s.local.port(),
            s.remote.map(|r| r.port()),
        )
    });
    view::warn_all(&inv.warnings, ctx.err_color);
    if ctx.format != Format::Table {
        view::write_machine(out, ctx.format, &inv, &socks)?;
        return Ok(if socks.is_empty() {
            Outcome::NothingMatched
        } else {
            Outcome::Found
        });
    }
    if socks.is_empty() {
        let what = match &target {
            Target::Port(p, pr) => format!(
                "nothing uses port {p}{}",
                pr.map(|x| format!("/{x}")).unwrap_or_default()
            ),
            Target::Pid(p) => format!(
                "process {p} holds no TCP or UDP sockets (or does not exist, or is not readable)"
            ),
            Target::Name(n) => format!(
                "no process or unit named `{}` holds a TCP or UDP socket",
                esc(n)
            ),
        };
        crate::output::note(ctx.err_color, &what);
        return Ok(Outcome::NothingMatched);
    }
    let st = ctx.style;
    if let Target::Port(p, _) = &target {
        let services: BTreeSet<String> = socks
            .iter()
            .map(|s| s.proto)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|pr| {
                format!(
                    "{p}/{pr}{}",
                    portolan_catalog::service_name(*p, pr)
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        writeln!(
            out,
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
    for s in &socks {
        if !(s.state.is_listening() || matches!(target, Target::Pid(_) | Target::Name(_))) {
            continue;
        }
        for p in inv.owners(s) {
            if !seen.insert(p.pid) {
                continue;
            }
            let user = inv
                .users
                .name(p.uid)
                .map_or_else(|| p.uid.to_string(), |n| esc(n).into_owned());
            let unit = p
                .cgroup
                .as_ref()
                .and_then(|c| c.container.as_deref().or(c.unit.as_deref()))
                .map(|u| format!("  unit {}", esc(u)))
                .unwrap_or_default();
            writeln!(
                out,
                "{} (pid {})  user {user}{unit}",
                st.paint(BOLD, &esc(&p.name)),
                p.pid
            )?;
            if let Some(exe) = &p.exe {
                let del = if p.exe_deleted {
                    "  (deleted or replaced since start)"
                } else {
                    ""
                };
                writeln!(out, "  exe  {}{del}", esc(exe))?;
            }
            if !p.cmdline.is_empty() {
                let cmd: String = p.cmdline.chars().take(200).collect();
                writeln!(out, "  cmd  {}", esc(&cmd))?;
            }
        }
        if s.pids.is_empty() && s.state.is_listening() && seen.insert(u32::MAX) {
            let (uid, name) = inv.user_of(s);
            let unit = inv
                .cgroup_owner(s)
                .and_then(|c| c.unit.as_deref())
                .map(|u| format!("  unit {}", esc(u)))
                .unwrap_or_default();
            writeln!(
                out,
                "{}  user {}{unit}  {}",
                st.paint(BOLD, "(process not visible)"),
                name.map_or_else(|| uid.to_string(), |n| esc(n).into_owned()),
                st.paint(DIM, crate::output::hidden_hint())
            )?;
        }
    }
    writeln!(out)?;
    let rows: Vec<Vec<Cell>> = socks
        .iter()
        .map(|s| {
            let role = if s.state.is_listening() {
                "listener"
            } else if matches!(target, Target::Port(p, _) if s.local.port() == p.get()) {
                "server"
            } else {
                "client"
            };
            vec![
                view::exposure_cell(s),
                Cell::plain(s.proto.as_str()),
                Cell::plain(s.state.ss_name()),
                Cell::plain(role),
                Cell::plain(view::endpoint(s.local)),
                Cell::plain(s.remote.map_or_else(|| "*".into(), view::endpoint)),
                view::process_cell(&inv, s),
            ]
        })
        .collect();
    write_table(
        out,
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
    Ok(Outcome::Found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("8080", false).unwrap(),
            Target::Port(Port::new(8080), None)
        );
        assert_eq!(
            parse_target(":53/udp", false).unwrap(),
            Target::Port(Port::new(53), Some(Protocol::Udp))
        );
        assert_eq!(parse_target("pid:1234", false).unwrap(), Target::Pid(1234));
        assert_eq!(parse_target("1234", true).unwrap(), Target::Pid(1234));
        assert_eq!(
            parse_target("nginx", false).unwrap(),
            Target::Name("nginx".into())
        );
        assert_eq!(
            parse_target("sshd.service", false).unwrap(),
            Target::Name("sshd.service".into())
        );
        for bad in [
            "70000",
            "-5",
            "",
            "pid:x",
            "pid:0",
            "80/xyz",
            "abc/tcp",
            "a\x1bb",
            "99999999999999999999",
        ] {
            let e = parse_target(bad, false);
            assert!(e.is_err(), "{bad:?}");
            assert!(!e.unwrap_err().to_string().contains('\x1b'));
        }
        assert!(parse_target("70000", false)
            .unwrap_err()
            .to_string()
            .contains("pid:70000"));
    }
}
