//! The live view (`portolan top`): an edge like the dashboard. A thread takes a refresh
//! every interval (`sample`), the view arranges it (`view`: listeners, connections,
//! processes; filter and sort on typed values) and draws it with ratatui; the actions on
//! the selected row are the command rooms' own (`kill`, `who --probe`, `info`), run in
//! this process by `crate::inproc` on a worker thread while the view keeps drawing.
//! ratatui's init puts the terminal in raw mode on the alternate screen and restores it on
//! the way out, also from a panic.

pub mod filter;
pub mod sample;
pub mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TRow, Table, Wrap};
use ratatui::Frame;

use self::filter::Filter;
use self::sample::{Mark, Sample, Sampler};
use self::view::{Model, View};

/// How `top` was asked to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub color: bool,
    pub view: View,
    pub filter: String,
    pub source: portolan_sockets::Source,
    /// Stop by itself after this long (tests, recordings).
    pub duration: Option<Duration>,
}

enum Popup {
    Help,
    Text {
        title: String,
        lines: Vec<String>,
    },
    ConfirmKill {
        port: u16,
        proto: String,
        who: String,
    },
    Working(String),
}

struct Ui {
    s: Settings,
    host: String,
    model: Model,
    view: View,
    sorts: [(usize, bool); 3],
    filter_text: String,
    filter: Filter,
    filter_error: Option<String>,
    editing: bool,
    selected: usize,
    offset: usize,
    visible: Vec<usize>,
    popup: Option<Popup>,
    status: String,
    /// What the inventory last had to say (kept until it says something else).
    warnings: Vec<String>,
    /// Refreshes shown so far (the header numbers them).
    refreshes: u64,
}

fn view_index(v: View) -> usize {
    match v {
        View::Listeners => 0,
        View::Connections => 1,
        View::Processes => 2,
    }
}

impl Ui {
    /// What the selected row is (computed against the model the list was made from).
    fn selected_ident(&self) -> Option<view::Ident> {
        self.visible
            .get(self.selected)
            .map(|&i| view::ident(&self.model, self.view, i))
    }

    /// A new refresh: the selected row stays selected, by what it is.
    fn replace(&mut self, model: Model) {
        let keep = self.selected_ident();
        self.model = model;
        self.rebuild_keeping(keep);
    }

    fn rebuild(&mut self) {
        let keep = self.selected_ident();
        self.rebuild_keeping(keep);
    }

    fn rebuild_keeping(&mut self, keep: Option<view::Ident>) {
        let sort = self.sorts[view_index(self.view)];
        self.visible = view::order(&self.model, self.view, &self.filter, sort);
        if let Some(k) = keep {
            if let Some(pos) = self
                .visible
                .iter()
                .position(|&i| view::ident(&self.model, self.view, i) == k)
            {
                self.selected = pos;
            }
        }
        self.selected = self.selected.min(self.visible.len().saturating_sub(1));
    }

    fn set_filter(&mut self) {
        match Filter::parse(&self.filter_text) {
            Ok(f) => {
                self.filter = f;
                self.filter_error = None;
            }
            Err(e) => self.filter_error = Some(e.to_string()),
        }
        self.selected = 0;
        self.rebuild();
    }

    fn selected_target(&self) -> Option<view::Target> {
        self.visible
            .get(self.selected)
            .map(|&i| view::target(&self.model, self.view, i))
    }
}

/// What a worker thread brings back from an action.
enum Done {
    Killed(Result<serde_json::Value, String>),
    Probed(Result<serde_json::Value, String>),
    Info(Result<serde_json::Value, String>),
    Holders {
        port: u16,
        proto: String,
        names: Result<serde_json::Value, String>,
    },
}

fn run_json(
    source: portolan_sockets::Source,
    args: &[String],
) -> Result<serde_json::Value, String> {
    let out = crate::inproc::cli_json(source, args)?;
    serde_json::from_slice(&out.json).map_err(|e| format!("unexpected output: {e}"))
}

/// Runs the view until `q`, Esc, Ctrl-C or the end of `duration`.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    let filter = Filter::parse(&settings.filter).map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    // The first refresh before the screen changes: an error (no netlink, no /proc) is a
    // plain error message, not a broken screen.
    let mut sampler = Sampler::new(settings.source);
    let first = sampler.sample()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Result<Sample, String>>(2);
    let interval = settings.interval;
    let stop_s = Arc::clone(&stop);
    let sampler_thread = std::thread::Builder::new()
        .name("top-sampler".into())
        .spawn(move || {
            let mut next = Instant::now() + interval;
            while !stop_s.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(100)));
                    continue;
                }
                next += interval;
                if next < Instant::now() {
                    next = Instant::now() + interval;
                }
                let s = sampler.sample().map_err(|e| e.to_string());
                if tx.send(s).is_err() {
                    break;
                }
            }
        })?;
    let first_warnings = first.warnings.clone();
    let mut ui = Ui {
        host: portolan_watch::history::hostname(),
        model: Model::new(first),
        view: settings.view,
        sorts: [
            View::Listeners.default_sort(),
            View::Connections.default_sort(),
            View::Processes.default_sort(),
        ],
        filter_text: settings.filter.clone(),
        filter,
        filter_error: None,
        editing: false,
        selected: 0,
        offset: 0,
        visible: Vec::new(),
        popup: None,
        status: String::new(),
        warnings: first_warnings,
        refreshes: 1,
        s: settings,
    };
    ui.rebuild();
    let started = Instant::now();
    let mut terminal = ratatui::try_init()?;
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let result = (|| -> anyhow::Result<()> {
        let mut dirty = true;
        loop {
            if dirty {
                terminal.draw(|f| draw(f, &mut ui))?;
                dirty = false;
            }
            if ui.s.duration.is_some_and(|d| started.elapsed() >= d) {
                return Ok(());
            }
            while let Ok(s) = rx.try_recv() {
                match s {
                    Ok(s) => {
                        if !s.warnings.is_empty() {
                            ui.warnings.clone_from(&s.warnings);
                        }
                        ui.replace(Model::new(s));
                        ui.refreshes += 1;
                    }
                    Err(e) => ui.status = format!("refresh failed: {e}"),
                }
                dirty = true;
            }
            while let Ok(d) = done_rx.try_recv() {
                finish(&mut ui, d, &done_tx);
                dirty = true;
            }
            if !event::poll(Duration::from_millis(50))? {
                continue;
            }
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    dirty = true;
                    if !key(&mut ui, k, &done_tx) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    })();
    stop.store(true, Ordering::Relaxed);
    ratatui::restore();
    drop(rx);
    let _ = sampler_thread.join();
    result
}

/// Handles a key; false to quit.
fn key(ui: &mut Ui, k: KeyEvent, done: &mpsc::Sender<Done>) -> bool {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(k.code, KeyCode::Char('c' | 'd')) {
        return false;
    }
    if ui.editing {
        match k.code {
            KeyCode::Enter => ui.editing = false,
            KeyCode::Esc => {
                ui.editing = false;
                ui.filter_text.clear();
                ui.set_filter();
            }
            KeyCode::Backspace => {
                ui.filter_text.pop();
                ui.set_filter();
            }
            KeyCode::Char(c) if !ctrl && ui.filter_text.len() < 256 => {
                ui.filter_text.push(c);
                ui.set_filter();
            }
            _ => {}
        }
        return true;
    }
    if let Some(p) = &ui.popup {
        match (p, k.code) {
            (Popup::ConfirmKill { port, proto, .. }, KeyCode::Char('y' | 'Y')) => {
                let args = vec![
                    "kill".to_owned(),
                    format!("{port}/{proto}"),
                    "--yes".to_owned(),
                    "--wait=3".to_owned(),
                ];
                let what = format!("signalling what listens on {proto}/{port}…");
                spawn(ui, done, what, move |src| {
                    Done::Killed(run_json(src, &args))
                });
            }
            (Popup::ConfirmKill { .. }, _) => {
                ui.popup = None;
                ui.status = "nothing was signalled".into();
            }
            (Popup::Working(_), _) => {}
            (_, KeyCode::Char('q')) => return false,
            _ => ui.popup = None,
        }
        return true;
    }
    let page = 10;
    match k.code {
        KeyCode::Char('q') | KeyCode::Esc => return false,
        KeyCode::Tab | KeyCode::Right => switch(ui, 1),
        KeyCode::BackTab | KeyCode::Left => switch(ui, 2),
        KeyCode::Char('1') => to_view(ui, View::Listeners),
        KeyCode::Char('2') => to_view(ui, View::Connections),
        KeyCode::Char('3') => to_view(ui, View::Processes),
        KeyCode::Down | KeyCode::Char('j') => {
            ui.selected = (ui.selected + 1).min(ui.visible.len().saturating_sub(1));
        }
        KeyCode::Up => ui.selected = ui.selected.saturating_sub(1),
        KeyCode::PageDown => {
            ui.selected = (ui.selected + page).min(ui.visible.len().saturating_sub(1));
        }
        KeyCode::PageUp => ui.selected = ui.selected.saturating_sub(page),
        KeyCode::Home | KeyCode::Char('g') => ui.selected = 0,
        KeyCode::End | KeyCode::Char('G') => ui.selected = ui.visible.len().saturating_sub(1),
        KeyCode::Char('/') => ui.editing = true,
        KeyCode::Char('s' | '>') => sort_by(ui, 1),
        KeyCode::Char('S' | '<') => sort_by(ui, -1),
        KeyCode::Char('r') => {
            let i = view_index(ui.view);
            ui.sorts[i].1 = !ui.sorts[i].1;
            ui.rebuild();
        }
        KeyCode::Char('?' | 'h') => ui.popup = Some(Popup::Help),
        KeyCode::Char('k') => match ui.selected_target() {
            Some(view::Target {
                listener: Some((port, proto)),
                ..
            }) => {
                let proto = proto.as_str().to_owned();
                let args = vec![
                    "kill".to_owned(),
                    format!("{port}/{proto}"),
                    "--dry-run".to_owned(),
                ];
                let what = format!("looking up what listens on {proto}/{port}…");
                let p2 = proto.clone();
                spawn(ui, done, what, move |src| Done::Holders {
                    port,
                    proto: p2,
                    names: run_json(src, &args),
                });
            }
            Some(_) => {
                ui.status =
                    "kill frees listening ports (as `portolan kill`): select a listener, or a connection to one".into();
            }
            None => {}
        },
        KeyCode::Char('p') => match ui.selected_target() {
            Some(view::Target {
                listener: Some((port, proto)),
                ..
            }) => {
                let args = vec![
                    "who".to_owned(),
                    format!("{port}/{}", proto.as_str()),
                    "--probe".to_owned(),
                ];
                let what = format!("probing {}/{port}…", proto.as_str());
                spawn(ui, done, what, move |src| {
                    Done::Probed(run_json(src, &args))
                });
            }
            Some(_) => {
                ui.status = "probe asks a listener here what it is: select a listener".into();
            }
            None => {}
        },
        KeyCode::Char('i') => {
            if let Some(port) = ui.selected_target().and_then(|t| t.port) {
                let args = vec!["info".to_owned(), port.to_string()];
                spawn(ui, done, format!("port {port}…"), move |src| {
                    Done::Info(run_json(src, &args))
                });
            }
        }
        KeyCode::Char('c') => {
            if let Some(t) = ui.selected_target() {
                if !t.command.is_empty() {
                    copy_to_clipboard(&t.command);
                    ui.popup = Some(Popup::Text {
                        title: "Command line (copied to the clipboard where the terminal allows)"
                            .into(),
                        lines: vec![t.command],
                    });
                }
            }
        }
        _ => {}
    }
    true
}

fn switch(ui: &mut Ui, by: usize) {
    let i = (view_index(ui.view) + by) % 3;
    to_view(ui, View::ALL[i]);
}

fn to_view(ui: &mut Ui, v: View) {
    ui.view = v;
    ui.selected = 0;
    ui.offset = 0;
    ui.rebuild();
}

fn sort_by(ui: &mut Ui, step: isize) {
    let i = view_index(ui.view);
    let n = ui.view.columns().len().cast_signed();
    let (col, _) = ui.sorts[i];
    let next = (col.cast_signed() + step).rem_euclid(n).cast_unsigned();
    let desc = [
        "Rx/s",
        "Tx/s",
        "Conns",
        "Exposure",
        "Listening",
        "Retr",
        "RTT",
    ]
    .contains(&ui.view.columns()[next]);
    ui.sorts[i] = (next, desc);
    ui.rebuild();
}

fn spawn(
    ui: &mut Ui,
    done: &mpsc::Sender<Done>,
    what: String,
    f: impl FnOnce(portolan_sockets::Source) -> Done + Send + 'static,
) {
    ui.popup = Some(Popup::Working(what));
    let done = done.clone();
    let src = ui.s.source;
    let _ = std::thread::Builder::new()
        .name("top-action".into())
        .spawn(move || {
            let _ = done.send(f(src));
        });
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v.get(k).and_then(serde_json::Value::as_str).unwrap_or("")
}

fn esc(s: &str) -> String {
    portolan_core::escape::for_terminal(s).into_owned()
}

fn finish(ui: &mut Ui, d: Done, _done: &mpsc::Sender<Done>) {
    ui.popup = None;
    match d {
        Done::Holders { port, proto, names } => match names {
            Err(e) => ui.status = esc(&e),
            Ok(v) => {
                let pids: Vec<u64> = v["pids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
                    .unwrap_or_default();
                if pids.is_empty() {
                    ui.status = format!("nothing listens on {proto}/{port} now");
                    return;
                }
                let who: Vec<String> = pids
                    .iter()
                    .map(|pid| {
                        let name = ui
                            .model
                            .sample
                            .rows
                            .iter()
                            .find(|r| r.holder.pid.map(u64::from) == Some(*pid))
                            .map_or("?", |r| r.holder.process.as_str());
                        format!("{name} (pid {pid})")
                    })
                    .collect();
                ui.popup = Some(Popup::ConfirmKill {
                    port,
                    proto,
                    who: who.join(", "),
                });
            }
        },
        Done::Killed(r) => match r {
            Err(e) => ui.status = format!("kill failed: {}", esc(&e)),
            Ok(v) => {
                let pids: Vec<String> = v["pids"]
                    .as_array()
                    .map(|a| a.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                ui.status = if v["freed"] == true {
                    format!(
                        "port {}/{} is free: SIG{} sent to pid {}",
                        v["port"],
                        s(&v, "proto"),
                        s(&v, "signal"),
                        pids.join(", ")
                    )
                } else {
                    let fails: Vec<String> = v["failures"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str().map(esc)).collect())
                        .unwrap_or_default();
                    format!(
                        "port {}/{} is still held after SIG{} to pid {} {}",
                        v["port"],
                        s(&v, "proto"),
                        s(&v, "signal"),
                        pids.join(", "),
                        fails.join("; ")
                    )
                };
            }
        },
        Done::Probed(r) => match r {
            Err(e) => ui.status = format!("probe failed: {}", esc(&e)),
            Ok(v) => {
                let mut lines = Vec::new();
                for sock in v["sockets"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let a = &sock["answers"];
                    if a.is_null() {
                        continue;
                    }
                    let what: Vec<&str> = ["service", "product", "version", "info"]
                        .iter()
                        .map(|k| s(a, k))
                        .filter(|x| !x.is_empty())
                        .collect();
                    lines.push(format!(
                        "{}:{}  {}{}",
                        s(sock, "local_addr"),
                        sock["local_port"],
                        esc(&what.join(" ")),
                        a["silence"]
                            .as_str()
                            .map(|x| format!(" ({x})"))
                            .unwrap_or_default()
                    ));
                    if let Some(b) = a["banner"].as_str() {
                        lines.push(format!("  banner: {}", esc(b)));
                    }
                }
                if lines.is_empty() {
                    lines.push("nothing answered".into());
                }
                ui.popup = Some(Popup::Text {
                    title: "What answers".into(),
                    lines,
                });
            }
        },
        Done::Info(r) => match r {
            Err(e) => ui.status = esc(&e),
            Ok(v) => {
                let p = &v["results"][0]["ports"][0];
                let mut lines = vec![format!(
                    "port {}: {}",
                    p["port"],
                    s(p, "class").replace('_', " ")
                )];
                for a in p["assignments"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    lines.push(format!(
                        "IANA {}/{}: {}",
                        esc(s(a, "service")),
                        s(a, "proto"),
                        esc(s(a, "description"))
                    ));
                }
                for n in p["notes"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    lines.push(format!("{}: {}", esc(s(n, "title")), esc(s(n, "usual"))));
                    if !s(n, "risk").is_empty() {
                        lines.push(format!("risk: {}", esc(s(n, "risk"))));
                    }
                }
                ui.popup = Some(Popup::Text {
                    title: "What the port is".into(),
                    lines,
                });
            }
        },
    }
}

/// OSC 52: the terminal (or tmux with set-clipboard on) puts the text on the clipboard.
fn copy_to_clipboard(text: &str) {
    use std::io::Write;
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut enc = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                enc.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                enc.push('=');
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "\x1b]52;c;{enc}\x07");
    let _ = out.flush();
}

fn style(ui: &Ui, color: Color) -> Style {
    if ui.s.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

fn draw(f: &mut Frame<'_>, ui: &mut Ui) {
    let [top, tabs, body, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let smp = &ui.model.sample;
    let listening = smp
        .rows
        .iter()
        .filter(|r| r.is_listening() && !matches!(r.mark, Mark::Gone(_)))
        .count();
    let live = smp
        .rows
        .iter()
        .filter(|r| !matches!(r.mark, Mark::Gone(_)))
        .count();
    let title = format!(
        " portolan top · {} · {live} sockets, {listening} listening · ↓ {}/s ↑ {}/s · refresh #{} took {} ms, every {:.1} s ",
        esc(&ui.host),
        view::rate(Some(smp.rx_rate)),
        view::rate(Some(smp.tx_rate)),
        ui.refreshes,
        smp.took.as_millis(),
        ui.s.interval.as_secs_f64()
    );
    f.render_widget(
        Paragraph::new(title).style(Style::default().add_modifier(Modifier::BOLD)),
        top,
    );
    let mut spans = Vec::new();
    for (i, v) in View::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, v.title());
        if *v == ui.view {
            spans.push(Span::styled(
                label,
                Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
            ));
        } else {
            spans.push(Span::raw(label));
        }
    }
    let (col, desc) = ui.sorts[view_index(ui.view)];
    spans.push(Span::raw(format!(
        "  sorted by {} {}  ",
        ui.view.columns()[col],
        if desc { "▼" } else { "▲" }
    )));
    if ui.editing || !ui.filter_text.is_empty() {
        spans.push(Span::styled(
            format!(
                "filter: {}{}",
                esc(&ui.filter_text),
                if ui.editing { "▏" } else { "" }
            ),
            style(ui, Color::Yellow),
        ));
        spans.push(Span::raw(format!("  {} rows", ui.visible.len())));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), tabs);

    // The table: only the rows on screen are formatted.
    let height = usize::from(body.height.saturating_sub(1));
    if ui.selected < ui.offset {
        ui.offset = ui.selected;
    } else if height > 0 && ui.selected >= ui.offset + height {
        ui.offset = ui.selected + 1 - height;
    }
    ui.offset = ui
        .offset
        .min(ui.visible.len().saturating_sub(height.max(1)));
    let cols = ui.view.columns();
    // A first, narrow column marks new (+) and closed (×) sockets, in words as well as
    // colour (NO_COLOR, and screen readers, see no colour).
    let header = TRow::new(
        std::iter::once(Cell::from(" ")).chain(cols.iter().enumerate().map(|(i, c)| {
            let mut t = (*c).to_owned();
            if i == col {
                t.push(if desc { '▼' } else { '▲' });
            }
            Cell::from(t)
        })),
    )
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows: Vec<TRow> = ui
        .visible
        .iter()
        .enumerate()
        .skip(ui.offset)
        .take(height)
        .map(|(pos, &i)| {
            let cells = view::cells(&ui.model, ui.view, i);
            let m = view::mark(&ui.model, ui.view, i);
            let sign = match m {
                Mark::New(_) => "+",
                Mark::Gone(_) => "×",
                Mark::Steady => " ",
            };
            let mut st = match m {
                Mark::New(_) => style(ui, Color::Green).add_modifier(Modifier::BOLD),
                Mark::Gone(_) => style(ui, Color::Red).add_modifier(Modifier::DIM),
                Mark::Steady => Style::default(),
            };
            if pos == ui.selected {
                st = st.add_modifier(Modifier::REVERSED);
            }
            TRow::new(std::iter::once(Cell::from(sign)).chain(cells.into_iter().map(Cell::from)))
                .style(st)
        })
        .collect();
    let mut widths: Vec<Constraint> = vec![Constraint::Length(1)];
    widths.extend(match ui.view {
        View::Listeners => vec![
            Constraint::Length(5),
            Constraint::Min(15),
            Constraint::Length(6),
            Constraint::Length(14),
            Constraint::Length(12),
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Min(10),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
        View::Connections => vec![
            Constraint::Length(5),
            Constraint::Min(22),
            Constraint::Min(22),
            Constraint::Length(11),
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(5),
        ],
        View::Processes => vec![
            Constraint::Min(16),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Min(12),
            Constraint::Min(20),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(10),
        ],
    });
    f.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        body,
    );

    let status_text = if let Some(e) = &ui.filter_error {
        format!("filter: {}", esc(e))
    } else if !ui.status.is_empty() {
        ui.status.clone()
    } else if let Some(w) = ui.warnings.first() {
        esc(w)
    } else {
        "TCP traffic from the kernel's counters; UDP has none per socket (n/a)".into()
    };
    f.render_widget(
        Paragraph::new(status_text).style(style(ui, Color::Cyan)),
        status,
    );
    let keys = if ui.editing {
        "type a filter: port:443 proc:nginx state:estab user: unit: proto: or words · Enter keep · Esc clear"
    } else {
        "q quit · Tab/1-3 view · ↑↓ select · / filter · s/S sort · r reverse · k kill · p probe · i info · c copy · ? help"
    };
    f.render_widget(
        Paragraph::new(keys).style(Style::default().add_modifier(Modifier::REVERSED)),
        help,
    );

    if let Some(p) = &ui.popup {
        let (title, lines): (String, Vec<String>) = match p {
            Popup::Help => (
                "Keys".into(),
                vec![
                    "Tab, →, ←, 1 2 3   switch view: listeners, connections, processes".into(),
                    "↑ ↓ PgUp PgDn g G  select a row".into(),
                    "/                  filter as you type: port:443 proc:nginx state:estab".into(),
                    "                   user:NAME unit:NAME proto:tcp pid:N, or any words".into(),
                    "s S (> <)          sort by the next (previous) column; r reverses".into(),
                    "k                  kill what listens on the row's port (asks first;".into(),
                    "                   the same checks as `portolan kill`)".into(),
                    "p                  probe the listener: what answers there".into(),
                    "i                  what the port number means".into(),
                    "c                  the row as a command line (and to the clipboard)".into(),
                    "q, Esc, Ctrl-C     quit".into(),
                    String::new(),
                    "Traffic: the kernel's TCP counters (bytes acked and received), sampled".into(),
                    "each refresh; no capture, no root for your own sockets. UDP sockets".into(),
                    "have no counters in the kernel: shown as n/a.".into(),
                    "Green rows are new, red ones closed, for three refreshes.".into(),
                ],
            ),
            Popup::Text { title, lines } => (title.clone(), lines.clone()),
            Popup::ConfirmKill { port, proto, who } => (
                "Kill?".into(),
                vec![
                    format!("Send SIGTERM to {who},"),
                    format!("which listen on {proto}/{port}?"),
                    String::new(),
                    "y: kill   any other key: cancel".into(),
                ],
            ),
            Popup::Working(w) => ("Working".into(), vec![w.clone()]),
        };
        let area = centered(f.area(), &lines);
        f.render_widget(Clear, area);
        f.render_widget(
            Paragraph::new(lines.join("\n"))
                .wrap(Wrap { trim: false })
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(format!(" {title} ")),
                ),
            area,
        );
    }
}

fn centered(outer: Rect, lines: &[String]) -> Rect {
    let w = lines
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(10)
        .clamp(30, 100);
    let w = u16::try_from(w + 4).unwrap_or(104).min(outer.width);
    let h = u16::try_from(lines.len() + 2)
        .unwrap_or(20)
        .min(outer.height);
    Rect {
        x: outer.x + (outer.width - w) / 2,
        y: outer.y + (outer.height - h) / 2,
        width: w,
        height: h,
    }
}
