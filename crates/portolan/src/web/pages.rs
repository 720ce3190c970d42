//! The pages, server-rendered. The map and the table read the live snapshot; a port's
//! page, the history and the kill dialog read the CLI's own JSON (`api::cli_json`), so a
//! page never says something `portolan who`/`info`/`history` would not. Every string that
//! came from /proc, the network, a file or the request is written through `Esc`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use portolan_audit::{Finding, Severity};
use portolan_core::listener::Listener;
use portolan_core::Exposure;
use serde_json::Value;

use super::html::{url_param, Esc, Frame};
use super::model::{Answer, Reach, Snapshot};
use super::scans::ScanFile;

/// Time of day (UTC) of a millisecond timestamp, and the date when it is not today.
pub fn when(ts_ms: i64) -> String {
    crate::render::history::when(ts_ms)
}

fn exposure_badge(e: Exposure) -> (&'static str, &'static str) {
    match e {
        Exposure::AllInterfaces => ("all interfaces", "exp-all"),
        Exposure::Specific => ("one address", "exp-one"),
        Exposure::Loopback => ("loopback", "exp-lo"),
    }
}

fn sev_class(s: Severity) -> &'static str {
    match s {
        Severity::Info => "sev-info",
        Severity::Low => "sev-low",
        Severity::Medium => "sev-medium",
        Severity::High => "sev-high",
        Severity::Critical => "sev-critical",
    }
}

/// The findings about one listener (same protocol and port; same address unless either is
/// the wildcard).
fn findings_of<'a>(snap: &'a Snapshot, l: &Listener) -> Vec<&'a Finding> {
    snap.findings
        .iter()
        .filter(|f| {
            f.socket.as_ref().is_some_and(|s| {
                s.proto == l.proto
                    && s.port == l.port
                    && (s.addr == l.address
                        || s.addr.is_unspecified()
                        || l.address.is_unspecified())
            })
        })
        .collect()
}

/// What groups listeners into one service on the map: the systemd unit, else the
/// container, else the program; a listener whose owner could not be read is grouped by uid.
fn service_key(l: &Listener) -> (String, &'static str) {
    let o = &l.owner;
    if let Some(u) = o.unit.as_deref().filter(|u| u.ends_with(".service")) {
        return (u.to_owned(), "unit");
    }
    if let Some(c) = o.container.as_deref() {
        return (c.to_owned(), "container");
    }
    if let Some(p) = o.process.as_deref() {
        return (p.to_owned(), "program");
    }
    if let Some(u) = o.unit.as_deref() {
        return (u.to_owned(), "unit");
    }
    (format!("uid {} (owner not readable)", o.uid), "unknown")
}

fn summary(out: &mut String, snap: &Snapshot) {
    let total = snap.listeners.len();
    let outside = snap.listeners.iter().filter(|l| !l.is_loopback()).count();
    let reachable = snap
        .reach
        .iter()
        .filter(|r| matches!(r, Reach::Verdict(portolan_firewall::Verdict::Open { .. })))
        .count();
    let _ = write!(
        out,
        "<p class=\"summary\"><b>{total}</b> listeners · <b>{outside}</b> on addresses other \
         machines can reach · <b>{reachable}</b> open through the firewall"
    );
    let mut by_sev: BTreeMap<Severity, usize> = BTreeMap::new();
    for f in &snap.findings {
        *by_sev.entry(f.severity).or_default() += 1;
    }
    for (sev, n) in by_sev.iter().rev() {
        let _ = write!(
            out,
            " · <span class=\"finding {}\">{n} {}</span>",
            sev_class(*sev),
            sev.as_str()
        );
    }
    let _ = write!(
        out,
        " <span class=\"dim\">sampled {}</span></p>",
        Esc(&when(snap.sampled_ms))
    );
    if let Some(e) = &snap.error {
        let _ = write!(out, "<p class=\"error\">{}</p>", Esc(e));
    }
}

fn answer_text(a: &Answer) -> String {
    [
        a.service.as_deref(),
        a.product.as_deref(),
        a.version.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ")
}

/// The map's content (what the live update swaps in).
pub fn map_fragment(
    snap: &Snapshot,
    answers: &std::collections::HashMap<(portolan_core::Protocol, std::net::SocketAddr), Answer>,
) -> String {
    let mut out = String::with_capacity(256 * snap.listeners.len() + 1024);
    summary(&mut out, snap);
    // Services, most open first: by the most open of their listeners, then by name.
    let mut groups: BTreeMap<(String, &'static str), Vec<usize>> = BTreeMap::new();
    for (i, l) in snap.listeners.iter().enumerate() {
        groups.entry(service_key(l)).or_default().push(i);
    }
    let mut order: Vec<_> = groups.into_iter().collect();
    order.sort_by_key(|((name, _), idx)| {
        let rank = idx
            .iter()
            .map(|&i| {
                (
                    snap.reach[i].rank(),
                    match snap.listeners[i].exposure {
                        Exposure::AllInterfaces => 2u8,
                        Exposure::Specific => 1,
                        Exposure::Loopback => 0,
                    },
                )
            })
            .max()
            .unwrap_or_default();
        (std::cmp::Reverse(rank), name.clone())
    });
    if order.is_empty() {
        out.push_str(
            "<p class=\"empty\">Nothing listens on this machine (in this network namespace).</p>",
        );
    }
    for ((name, kind), idx) in &order {
        let _ = write!(
            out,
            "<section class=\"svc\"><h2><span class=\"kind kind-{kind}\">{kind}</span> {}</h2>\
             <div class=\"flow\">",
            Esc(name)
        );
        for &i in idx {
            let l = &snap.listeners[i];
            let reach = &snap.reach[i];
            let (exp_word, exp_class) = exposure_badge(l.exposure);
            let (reach_word, reach_class) = reach.badge();
            let proto = l.proto.as_str();
            let o = &l.owner;
            let _ = write!(
                out,
                "<div class=\"listener {exp_class} {reach_class}\" data-port=\"{port}\" data-proto=\"{proto}\">\
                 <span class=\"who\"><span class=\"proc\">{proc_}</span>\
                 <span class=\"pid\">{pid}{user}</span></span>\
                 <span class=\"arrow\" aria-hidden=\"true\">→</span>\
                 <a class=\"port\" href=\"/ports/{port}\">{proto} {port}</a>\
                 <span class=\"addr\">{addr}</span>\
                 <span class=\"arrow\" aria-hidden=\"true\">→</span>\
                 <span class=\"exp\">{exp_word}</span>\
                 <span class=\"arrow\" aria-hidden=\"true\">→</span>\
                 <span class=\"reach\" title=\"{reach_detail}\">{reach_word}</span><span class=\"tail\">",
                port = l.port,
                proc_ = Esc(o.process.as_deref().unwrap_or("?")),
                pid = o.pid.map_or_else(|| "pid ?".into(), |p| format!("pid {p}")),
                user = o.user.as_deref().map_or_else(
                    || format!(" · uid {}", o.uid),
                    |u| format!(" · {}", Esc(u))
                ),
                addr = Esc(&l.address.to_string()),
                reach_detail = Esc(&reach.detail()),
            );
            if let Some(s) = portolan_catalog::service_name(l.port.into(), l.proto) {
                let _ = write!(out, "<span class=\"svcname\">{}</span>", Esc(s));
            }
            if let Some(a) = answers.get(&(l.proto, l.socket_addr())) {
                let _ = write!(
                    out,
                    "<span class=\"answer\" title=\"what answered when probed\">{}</span>",
                    Esc(&answer_text(a))
                );
            }
            for f in findings_of(snap, l) {
                let _ = write!(
                    out,
                    "<a class=\"finding {}\" href=\"/ports/{}#findings\" title=\"{}\">{}</a>",
                    sev_class(f.severity),
                    l.port,
                    Esc(&f.title),
                    f.severity.as_str()
                );
            }
            out.push_str("</span></div>");
        }
        out.push_str("</div></section>");
    }
    if !snap.findings.is_empty() {
        out.push_str("<section class=\"findings\"><h2>What the audit says</h2><ul>");
        for f in &snap.findings {
            finding_item(&mut out, f);
        }
        out.push_str("</ul></section>");
    }
    if !snap.recent.is_empty() {
        out.push_str("<section class=\"recent\"><h2>Changed since the dashboard started</h2><ol>");
        for e in snap.recent.iter().rev() {
            let _ = write!(
                out,
                "<li class=\"event\" data-kind=\"{}\"><time>{}</time> <b>{}</b> {} {}:{} <span class=\"proc\">{}</span></li>",
                e.kind.as_str(),
                Esc(&when(e.ts_ms)),
                e.kind.as_str(),
                e.listener.proto.as_str(),
                Esc(&e.listener.address.to_string()),
                e.listener.port,
                Esc(e.listener.owner.process.as_deref().unwrap_or("?")),
            );
        }
        out.push_str("</ol></section>");
    }
    out
}

fn finding_item(out: &mut String, f: &Finding) {
    let _ = write!(
        out,
        "<li class=\"finding-item\"><span class=\"finding {}\">{}</span> <b>{}</b>",
        sev_class(f.severity),
        f.severity.as_str(),
        Esc(&f.title)
    );
    if let Some(s) = &f.socket {
        let _ = write!(out, " <a href=\"/ports/{}\">port {}</a>", s.port, s.port);
    }
    let _ = write!(
        out,
        "<p>{}</p><p class=\"fix\">Fix: <code>{}</code></p>",
        Esc(&f.detail),
        Esc(&f.fix)
    );
    if let Some(a) = &f.accepted {
        let _ = write!(out, "<p class=\"dim\">accepted: {}</p>", Esc(a));
    }
    out.push_str("</li>");
}

/// The table's content: the same columns as `portolan ls`, plus reach and findings.
pub fn table_fragment(
    snap: &Snapshot,
    answers: &std::collections::HashMap<(portolan_core::Protocol, std::net::SocketAddr), Answer>,
) -> String {
    let mut out = String::with_capacity(300 * snap.listeners.len() + 1024);
    summary(&mut out, snap);
    out.push_str(
        "<table id=\"ports\"><thead><tr>\
         <th data-sort=\"text\">Proto</th><th data-sort=\"text\">Address</th>\
         <th data-sort=\"num\">Port</th><th data-sort=\"text\">Service</th>\
         <th data-sort=\"text\">Process</th><th data-sort=\"num\">PID</th>\
         <th data-sort=\"text\">User</th><th data-sort=\"text\">Unit / container</th>\
         <th data-sort=\"text\">Exposure</th><th data-sort=\"text\">Firewall</th>\
         <th data-sort=\"text\">Answers</th><th data-sort=\"text\">Findings</th>\
         </tr></thead><tbody>",
    );
    for (i, l) in snap.listeners.iter().enumerate() {
        let o = &l.owner;
        let reach = &snap.reach[i];
        let (exp_word, exp_class) = exposure_badge(l.exposure);
        let (reach_word, reach_class) = reach.badge();
        let unit = o.unit.as_deref().or(o.container.as_deref()).unwrap_or("");
        let user = o.user.clone().unwrap_or_else(|| o.uid.to_string());
        let proc_ = o.process.as_deref().unwrap_or("");
        let _ = write!(
            out,
            "<tr class=\"listener\" data-port=\"{port}\" data-proto=\"{proto}\" data-proc=\"{p}\" \
             data-user=\"{u}\" data-unit=\"{unit}\" data-state=\"listen\">\
             <td>{proto}</td><td>{addr}</td><td><a href=\"/ports/{port}\">{port}</a></td><td>{svc}</td>\
             <td class=\"proc\">{p}</td><td>{pid}</td><td>{u}</td><td>{unit}</td>\
             <td><span class=\"exp {exp_class}\">{exp_word}</span></td>\
             <td><span class=\"reach {reach_class}\" title=\"{rd}\">{reach_word}</span></td><td>{ans}</td><td>",
            port = l.port,
            proto = l.proto.as_str(),
            p = Esc(proc_),
            u = Esc(&user),
            unit = Esc(unit),
            addr = Esc(&l.address.to_string()),
            svc = Esc(portolan_catalog::service_name(l.port.into(), l.proto).unwrap_or("")),
            pid = o.pid.map(|p| p.to_string()).unwrap_or_default(),
            rd = Esc(&reach.detail()),
            ans = Esc(&answers
                .get(&(l.proto, l.socket_addr()))
                .map(answer_text)
                .unwrap_or_default()),
        );
        for f in findings_of(snap, l) {
            let _ = write!(
                out,
                "<span class=\"finding {}\" title=\"{}\">{}</span> ",
                sev_class(f.severity),
                Esc(&f.title),
                f.severity.as_str()
            );
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A whole page around a live fragment (`data-live` is where the script fetches it again
/// when the model changes).
pub fn live_page(frame: &Frame<'_>, live_url: &str, fragment: &str, table: bool) -> String {
    let mut out = String::with_capacity(fragment.len() + 2048);
    frame.open(&mut out);
    if table {
        out.push_str(
            "<div class=\"tools\"><input id=\"filter\" type=\"search\" autocomplete=\"off\" \
             placeholder=\"filter: port:443 proc:nginx user:root unit:ssh or any text\" \
             aria-label=\"filter rows\"></div>",
        );
    }
    let id = if table { "table" } else { "map" };
    let _ = write!(
        out,
        "<div id=\"{id}\" data-live=\"{}\">{fragment}</div>",
        Esc(live_url)
    );
    Frame::close(&mut out);
    out
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A port's page: what `info`, `who` and `history` say about it, the audit's findings, and
/// (with actions) probe and kill.
#[expect(clippy::too_many_arguments, reason = "one page, its parts")]
pub fn port_page(
    frame: &Frame<'_>,
    port: u16,
    info: &Result<Value, String>,
    who: &Result<Value, String>,
    history: &Result<Value, String>,
    snap: &Snapshot,
    kill_plans: &[(String, Vec<(u32, String)>)],
    answers: &[(&Listener, &Answer)],
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    frame.open(&mut out);
    let _ = write!(out, "<h1>Port {port}</h1>");

    // info
    out.push_str("<section id=\"info\"><h2>What the number means</h2>");
    match info {
        Err(e) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", Esc(e));
        }
        Ok(v) => {
            let p = &v["results"][0]["ports"][0];
            let _ = write!(
                out,
                "<p><span class=\"tag\">{}</span>{}{}{}</p>",
                Esc(&s(p, "class").replace('_', " ")),
                if p["needs_privilege"] == true {
                    " <span class=\"tag\">needs root or CAP_NET_BIND_SERVICE to bind</span>"
                } else {
                    ""
                },
                if p["ephemeral"] == true {
                    " <span class=\"tag warn\">in this machine's ephemeral range: clients may take it</span>"
                } else {
                    ""
                },
                if p["reserved_locally"] == true {
                    " <span class=\"tag\">reserved here (ip_local_reserved_ports)</span>"
                } else {
                    ""
                },
            );
            if let Some(notes) = p["notes"].as_array() {
                for n in notes {
                    let _ = write!(
                        out,
                        "<div class=\"note\"><h3>{} <span class=\"dim\">{}</span></h3><p>{}</p>",
                        Esc(s(n, "title")),
                        Esc(s(n, "proto")),
                        Esc(s(n, "usual"))
                    );
                    if n["cleartext"] == true {
                        out.push_str("<p class=\"warn\">Sends data in clear text.</p>");
                    }
                    if !s(n, "risk").is_empty() {
                        let _ = write!(out, "<p><b>Risk:</b> {}</p>", Esc(s(n, "risk")));
                    }
                    out.push_str("</div>");
                }
            }
            if let Some(asg) = p["assignments"].as_array().filter(|a| !a.is_empty()) {
                out.push_str("<table class=\"plain\"><thead><tr><th>IANA service</th><th>Proto</th><th>Description</th><th>Reference</th></tr></thead><tbody>");
                for a in asg {
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        Esc(s(a, "service")),
                        Esc(s(a, "proto")),
                        Esc(s(a, "description")),
                        Esc(s(a, "reference"))
                    );
                }
                out.push_str("</tbody></table>");
            } else {
                out.push_str("<p class=\"dim\">IANA has no assignment for this port.</p>");
            }
        }
    }
    out.push_str("</section>");

    // who
    out.push_str("<section id=\"who\"><h2>Who uses it here</h2>");
    match who {
        Err(e) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", Esc(e));
        }
        Ok(v) => {
            let socks = v["sockets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            if socks.is_empty() {
                out.push_str("<p class=\"empty\">Nothing uses this port now.</p>");
            } else {
                out.push_str("<table class=\"plain\"><thead><tr><th>Proto</th><th>State</th><th>Local</th><th>Remote</th><th>Process</th><th>PID</th><th>User</th><th>Unit / container</th><th>Command line</th></tr></thead><tbody>");
                for k in socks {
                    let remote = match (k["remote_addr"].as_str(), k["remote_port"].as_u64()) {
                        (Some(a), Some(p)) => format!("{a}:{p}"),
                        _ => String::new(),
                    };
                    let cmd = k["processes"][0]["cmdline"].as_str().unwrap_or("");
                    let _ = write!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}:{}</td><td>{}</td><td class=\"proc\">{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                        Esc(s(k, "proto")),
                        Esc(s(k, "state")),
                        Esc(s(k, "local_addr")),
                        k["local_port"].as_u64().unwrap_or(0),
                        Esc(&remote),
                        Esc(k["process"].as_str().unwrap_or("?")),
                        k["pid"].as_u64().map(|p| p.to_string()).unwrap_or_default(),
                        Esc(k["user"].as_str().unwrap_or("")),
                        Esc(k["unit"].as_str().or(k["container"].as_str()).unwrap_or("")),
                        Esc(cmd),
                    );
                }
                out.push_str("</tbody></table>");
            }
            if let Some(w) = v["warnings"].as_array() {
                for x in w {
                    let _ = write!(
                        out,
                        "<p class=\"dim\">{}</p>",
                        Esc(x.as_str().unwrap_or(""))
                    );
                }
            }
        }
    }
    for (l, a) in answers {
        let _ = write!(
            out,
            "<p>On {} {}: <span class=\"answer\">{}</span> <span class=\"dim\">(probed {})</span></p>",
            l.proto.as_str(),
            Esc(&l.socket_addr().to_string()),
            Esc(&answer_text(a)),
            Esc(&when(a.at_ms))
        );
    }
    if frame.actions {
        out.push_str("<div class=\"actions\">");
        for (proto, holders) in kill_plans {
            let _ = write!(
                out,
                "<button class=\"probe\" data-port=\"{port}\" data-proto=\"{p}\">Probe {p}/{port}</button>",
                p = Esc(proto)
            );
            if holders.is_empty() {
                continue;
            }
            let names: Vec<String> = holders
                .iter()
                .map(|(pid, name)| format!("{name} (pid {pid})"))
                .collect();
            let _ = write!(
                out,
                "<button class=\"kill danger\" data-port=\"{port}\" data-proto=\"{p}\" data-holders=\"{h}\">Kill what listens on {p}/{port}</button>",
                p = Esc(proto),
                h = Esc(&names.join(", "))
            );
        }
        out.push_str(
            "</div><output id=\"action-result\" aria-live=\"polite\"></output>\
             <dialog id=\"confirm-kill\"><form method=\"dialog\"><h2>Kill?</h2>\
             <p>Send SIGTERM to <b id=\"confirm-kill-what\"></b>? They hold the listening socket; \
             portolan checks again, through a pidfd, that each still holds it before signalling.</p>\
             <menu><button id=\"confirm-kill-no\" value=\"no\">Cancel</button> \
             <button id=\"confirm-kill-yes\" class=\"danger\" value=\"yes\">Kill</button></menu>\
             </form></dialog>",
        );
    } else {
        out.push_str("<p class=\"dim\">Probe and kill are off; start with <code>portolan serve --allow-actions</code> to use them here.</p>");
    }
    out.push_str("</section>");

    // findings
    let mine: Vec<&Finding> = snap
        .findings
        .iter()
        .filter(|f| f.socket.as_ref().is_some_and(|s| s.port == port))
        .collect();
    out.push_str("<section id=\"findings\"><h2>Findings</h2>");
    if mine.is_empty() {
        out.push_str("<p class=\"dim\">The audit has nothing to say about this port.</p>");
    } else {
        out.push_str("<ul>");
        for f in mine {
            finding_item(&mut out, f);
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");

    // history
    out.push_str("<section id=\"history\"><h2>History</h2>");
    timeline(&mut out, history, false);
    out.push_str("</section>");
    Frame::close(&mut out);
    out
}

/// The timeline of `history --json`: listener events and detected scans, newest first.
pub fn timeline(out: &mut String, history: &Result<Value, String>, show_host: bool) {
    match history {
        // No store yet is not a failure of the page: say how to make one.
        Err(e) if e.contains("start `portolan watch` first") => {
            let _ = write!(out, "<p class=\"empty\">{}</p>", Esc(e));
        }
        Err(e) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", Esc(e));
        }
        Ok(v) => {
            let mut items: Vec<(i64, String)> = Vec::new();
            for e in v["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let l = &e["listener"];
                let o = &l["owner"];
                let mut li = String::new();
                let kind = s(e, "kind");
                let _ = write!(
                    li,
                    "<li class=\"event\" data-kind=\"{k}\"><time>{t}</time> <span class=\"kind-{k}\">{kw}</span> \
                     {proto} {addr}:<a href=\"/ports/{port}\">{port}</a> <span class=\"proc\">{p}</span>{pid}",
                    k = Esc(kind),
                    kw = Esc(&kind.replace('_', " ")),
                    t = Esc(&when(e["ts_ms"].as_i64().unwrap_or(0))),
                    proto = Esc(s(l, "proto")),
                    addr = Esc(s(l, "address")),
                    port = l["port"].as_u64().unwrap_or(0),
                    p = Esc(o["process"].as_str().or(o["unit"].as_str()).unwrap_or("?")),
                    pid = o["pid"].as_u64().map(|p| format!(" (pid {p})")).unwrap_or_default(),
                );
                if show_host {
                    let _ = write!(li, " <span class=\"tag\">{}</span>", Esc(s(e, "host")));
                }
                if let Some(n) = e["note"].as_str() {
                    let _ = write!(li, " <span class=\"dim\">{}</span>", Esc(n));
                }
                li.push_str("</li>");
                items.push((e["ts_ms"].as_i64().unwrap_or(0), li));
            }
            for sc in v["scans"].as_array().map(Vec::as_slice).unwrap_or_default() {
                let sources: Vec<&str> = sc["sources"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let kinds: Vec<&str> = sc["kinds"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut li = String::new();
                let _ = write!(
                    li,
                    "<li class=\"scan\"><time>{}</time> <span class=\"kind-scan\">port scan</span> from {} \
                     ({} scan, {} ports, likely {})",
                    Esc(&when(sc["started_ms"].as_i64().unwrap_or(0))),
                    Esc(&sources.join(", ")),
                    Esc(&kinds.join("/")),
                    sc["ports_total"].as_u64().unwrap_or(0),
                    Esc(sc["tool"].as_str().unwrap_or("an unknown tool")),
                );
                if show_host {
                    let _ = write!(li, " <span class=\"tag\">{}</span>", Esc(s(sc, "host")));
                }
                li.push_str("</li>");
                items.push((sc["started_ms"].as_i64().unwrap_or(0), li));
            }
            if items.is_empty() {
                out.push_str("<p class=\"empty\">The history store has nothing here yet (`portolan watch` records it).</p>");
                return;
            }
            items.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
            out.push_str("<ol id=\"timeline\">");
            for (_, li) in items {
                out.push_str(&li);
            }
            out.push_str("</ol>");
        }
    }
}

/// The history page: a host picker (for a store many hosts share), the timeline.
pub fn history_page(
    frame: &Frame<'_>,
    history: &Result<Value, String>,
    hosts: &[String],
    host: Option<&str>,
    port: Option<u16>,
) -> String {
    let mut out = String::with_capacity(32 * 1024);
    frame.open(&mut out);
    out.push_str("<h1>History</h1><form class=\"tools\" method=\"get\" action=\"/history\">");
    out.push_str("<label>Host <select name=\"host\"><option value=\"\">every host</option>");
    for h in hosts {
        let sel = if Some(h.as_str()) == host {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option value=\"{0}\"{sel}>{0}</option>", Esc(h));
    }
    let _ = write!(
        out,
        "</select></label> <label>Port <input name=\"port\" inputmode=\"numeric\" size=\"6\" value=\"{}\"></label> \
         <button>Show</button></form>",
        port.map(|p| p.to_string()).unwrap_or_default()
    );
    timeline(&mut out, history, hosts.len() > 1);
    Frame::close(&mut out);
    out
}

/// The scans page: each file, its summary and its open ports first.
pub fn scans_page(
    frame: &Frame<'_>,
    files: &[Result<ScanFile, String>],
    queued: Option<&Result<Vec<portolan_queue::ScanSummary>, String>>,
) -> String {
    let mut out = String::with_capacity(32 * 1024);
    frame.open(&mut out);
    out.push_str("<h1>Scans</h1>");
    match queued {
        None => {}
        Some(Err(e)) => {
            let _ = write!(out, "<p class=\"error\">{}</p>", Esc(e));
        }
        Some(Ok(list)) => {
            out.push_str("<section class=\"scanfile\" id=\"queued\"><h2>Queued scans</h2>");
            if list.is_empty() {
                out.push_str("<p class=\"empty\">None yet: <code>portolan scan TARGETS --queue URL</code>.</p>");
            } else {
                out.push_str("<table class=\"plain\"><thead><tr><th>Scan</th><th>Queued</th><th>State</th><th>Chunks done</th><th>Open ports</th></tr></thead><tbody>");
                for q in list.iter().rev() {
                    let _ = write!(
                        out,
                        "<tr><td><a href=\"/scans/queued/{id}\">{id}</a></td><td>{}</td><td>{}</td><td>{} of {}</td><td>{}</td></tr>",
                        Esc(&when(q.created_ms)),
                        q.state.as_str(),
                        q.done,
                        q.chunks,
                        q.open,
                        id = q.id,
                    );
                }
                out.push_str("</tbody></table>");
            }
            out.push_str("</section>");
        }
    }
    if files.is_empty() && queued.is_none() {
        out.push_str("<p class=\"empty\">No scan files given. Write one with <code>portolan scan HOSTS --json &gt; scan.json</code> and start <code>portolan serve --scans scan.json</code>.</p>");
    }
    for f in files {
        match f {
            Err(e) => {
                let _ = write!(out, "<p class=\"error\">{}</p>", Esc(e));
            }
            Ok(f) => {
                let _ = write!(
                    out,
                    "<section class=\"scanfile\"><h2>{}</h2>",
                    Esc(&f.path.display().to_string())
                );
                if let Some(o) = f.scan.as_object() {
                    out.push_str("<p>");
                    for (k, v) in o {
                        let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        let _ = write!(
                            out,
                            "<span class=\"tag\">{}: {}</span> ",
                            Esc(k),
                            Esc(&text)
                        );
                    }
                    out.push_str("</p>");
                }
                let mut ports: Vec<_> = f.ports.iter().collect();
                ports.sort_by_key(|r| (r.state.as_str() != "open", r.host, r.port));
                let open = ports.iter().filter(|r| r.state.as_str() == "open").count();
                let _ = write!(
                    out,
                    "<p>{} ports, {open} open</p><table class=\"plain scan\"><thead><tr><th>Host</th><th>Port</th><th>State</th><th>Reason</th><th>Service</th><th>Product</th><th>Version</th></tr></thead><tbody>",
                    ports.len()
                );
                for r in ports.iter().take(5000) {
                    let _ = write!(
                        out,
                        "<tr class=\"state-{st}\"><td>{h}{hn}</td><td>{p}/{pr}</td><td>{st}</td><td>{re}</td><td>{sv}</td><td>{pd}</td><td>{vv}</td></tr>",
                        h = Esc(&r.host.to_string()),
                        hn = r.hostname.as_deref().map(|n| format!(" <span class=\"dim\">{}</span>", Esc(n))).unwrap_or_default(),
                        p = r.port,
                        pr = r.proto.as_str(),
                        st = Esc(r.state.as_str()),
                        re = Esc(&r.reason),
                        sv = Esc(r.service.as_deref().unwrap_or("")),
                        pd = Esc(r.product.as_deref().unwrap_or("")),
                        vv = Esc(r.version.as_deref().unwrap_or("")),
                    );
                }
                out.push_str("</tbody></table>");
                if ports.len() > 5000 {
                    let _ = write!(
                        out,
                        "<p class=\"dim\">the first 5,000 of {} rows; /api/scans has them all</p>",
                        ports.len()
                    );
                }
                out.push_str("</section>");
            }
        }
    }
    Frame::close(&mut out);
    out
}

/// A page that only says something (401, 403, 404, an error), in the same frame-less style.
pub fn message_page(status: u16, title: &str, text: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {t}</title>\
         <link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><main class=\"message\">\
         <h1>{t}</h1><p>{x}</p></main></body></html>\n",
        t = Esc(title),
        x = Esc(text)
    )
}

/// A port page link with a query value, for redirects of the jump box.
pub fn port_link(port: &str) -> String {
    format!("/ports/{}", url_param(port))
}
