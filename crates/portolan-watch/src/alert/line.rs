//! One line per event for people and for the journal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use portolan_core::escape::for_terminal;
use portolan_core::Exposure;

use crate::model::{Event, EventKind, Owner};

/// The event as one line of text without a trailing newline, e.g.
/// `opened tcp 0.0.0.0:8080 (all interfaces) python3[4242] user alice unit app.service`.
/// Every string that came from /proc (process, exe, user, unit, container) and the note are
/// escaped for a terminal, so the line holds no control character and no bidi override.
pub fn line(ev: &Event) -> String {
    let lis = &ev.listener;
    let owner = &lis.owner;
    let mut out = String::with_capacity(96);
    let _ = write!(out, "{} {} ", ev.kind, lis.proto);
    match (ev.kind, &ev.previous) {
        (EventKind::ExposureChanged, Some(p)) => {
            push_place(&mut out, p.address, lis.port, p.exposure);
            out.push_str(" -> ");
            push_place(&mut out, lis.address, lis.port, lis.exposure);
            out.push(' ');
            out.push_str(&who(owner));
        }
        (EventKind::Restarted, Some(p)) => {
            push_place(&mut out, lis.address, lis.port, lis.exposure);
            out.push(' ');
            out.push_str(&name(owner));
            let _ = write!(out, "[{} -> {}]", pid(&p.owner), pid(owner));
        }
        (EventKind::OwnerChanged, Some(p)) => {
            push_place(&mut out, lis.address, lis.port, lis.exposure);
            out.push(' ');
            out.push_str(&who(&p.owner));
            if p.owner.process == owner.process && p.owner.exe != owner.exe {
                push_exe(&mut out, &p.owner);
            }
            out.push_str(" -> ");
            out.push_str(&who(owner));
            if p.owner.process == owner.process && p.owner.exe != owner.exe {
                push_exe(&mut out, owner);
            }
        }
        _ => {
            push_place(&mut out, lis.address, lis.port, lis.exposure);
            out.push(' ');
            out.push_str(&who(owner));
        }
    }
    match &owner.user {
        Some(u) => {
            let _ = write!(out, " user {}", for_terminal(u));
        }
        None => {
            let _ = write!(out, " uid {}", owner.uid);
        }
    }
    if let Some(p) = &ev.previous {
        if p.owner.uid != owner.uid && ev.kind == EventKind::OwnerChanged {
            let was = p
                .owner
                .user
                .as_deref()
                .map_or_else(|| Cow::Owned(format!("uid {}", p.owner.uid)), for_terminal);
            let _ = write!(out, " (was {was})");
        }
    }
    if let Some(u) = &owner.unit {
        let _ = write!(out, " unit {}", for_terminal(u));
    }
    if let Some(c) = &owner.container {
        let _ = write!(out, " container {}", for_terminal(c));
    }
    if let Some(n) = &ev.note {
        let _ = write!(out, "; {}", for_terminal(n));
    }
    out
}

/// The sd-daemon priority of the event's line: 6 (info) for `present`, 4 (warning) for a
/// change that leaves the listener on all interfaces, 5 (notice) for everything else
/// (including `closed`, which only ever reduces exposure).
pub fn priority(e: &Event) -> u8 {
    match e.kind {
        EventKind::Present => 6,
        EventKind::Closed => 5,
        _ if e.listener.exposure == Exposure::AllInterfaces => 4,
        _ => 5,
    }
}

/// [`line`] with its sd-daemon priority prefix (`<4>opened ...`), for a stderr that is
/// the systemd journal.
pub fn journal_line(e: &Event) -> String {
    format!("<{}>{}", priority(e), line(e))
}

fn push_place(s: &mut String, address: IpAddr, port: u16, exposure: Exposure) {
    let _ = match address {
        IpAddr::V4(a) => write!(s, "{a}:{port}"),
        IpAddr::V6(a) => write!(s, "[{a}]:{port}"),
    };
    let words = match exposure {
        Exposure::AllInterfaces => "all interfaces",
        Exposure::Specific => "specific address",
        Exposure::Loopback => "loopback",
    };
    let _ = write!(s, " ({words})");
}

/// `python3[42]`, `python3`, `pid 42` or `unknown process`.
fn who(o: &Owner) -> String {
    match (&o.process, o.pid) {
        (Some(p), Some(pid)) => format!("{}[{pid}]", for_terminal(p)),
        (Some(p), None) => for_terminal(p).into_owned(),
        (None, Some(pid)) => format!("pid {pid}"),
        (None, None) => "unknown process".to_owned(),
    }
}

fn name(o: &Owner) -> String {
    o.process
        .as_deref()
        .map_or_else(|| "process".to_owned(), |p| for_terminal(p).into_owned())
}

fn pid(o: &Owner) -> String {
    o.pid.map_or_else(|| "?".to_owned(), |p| p.to_string())
}

fn push_exe(s: &mut String, o: &Owner) {
    if let Some(exe) = &o.exe {
        let _ = write!(s, " ({})", for_terminal(exe));
    }
}
