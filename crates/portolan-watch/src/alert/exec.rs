//! `--exec CMD`: one `/bin/sh -c CMD` per event, the event in the environment only.

use std::ffi::OsString;
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::Queue;
use super::Reporter;
use crate::metrics::Metrics;
use crate::model::{rfc3339_ms, Event};

/// How long one run may take before it is killed (with everything it started).
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// Events waiting for the command at most; beyond, the oldest are dropped.
pub(crate) const EXEC_QUEUE: usize = 1000;

/// How one run of the command ended.
#[derive(Debug)]
pub enum ExecOutcome {
    /// Exit status 0.
    Success,
    /// A non-zero exit status, or killed by a signal.
    Failed(ExitStatus),
    /// Still running at the time limit: killed.
    TimedOut,
    /// Shutdown's deadline came first: killed.
    Stopped,
    /// `/bin/sh` could not be started.
    NotStarted(std::io::Error),
}

impl ExecOutcome {
    pub fn is_success(&self) -> bool {
        matches!(self, ExecOutcome::Success)
    }

    fn describe(&self, timeout: Duration) -> String {
        match self {
            ExecOutcome::Success => "succeeded".into(),
            ExecOutcome::Failed(st) => format!("failed ({st})"),
            ExecOutcome::TimedOut => format!("was killed after {} s", timeout.as_secs()),
            ExecOutcome::Stopped => "was killed at shutdown".into(),
            ExecOutcome::NotStarted(e) => format!("could not start /bin/sh: {e}"),
        }
    }
}

/// The variables a run gets, in order. Unknown values (no pid, no unit, no previous owner,
/// ...) are absent, and the run does not inherit them either. Values are the event's
/// strings as they are; a NUL, which an environment cannot carry, ends a value early (the
/// whole event is in `PORTOLAN_EVENT_JSON`, where NUL is escaped).
fn env(ev: &Event) -> Vec<(&'static str, OsString)> {
    let lis = &ev.listener;
    let owner = &lis.owner;
    let mut vars: Vec<(&'static str, Option<String>)> = vec![
        ("PORTOLAN_EVENT", Some(ev.kind.as_str().to_owned())),
        ("PORTOLAN_HOST", Some(ev.host.clone())),
        ("PORTOLAN_TIME", Some(rfc3339_ms(ev.ts_ms))),
        ("PORTOLAN_PROTO", Some(lis.proto.as_str().to_owned())),
        ("PORTOLAN_ADDRESS", Some(lis.address.to_string())),
        ("PORTOLAN_PORT", Some(lis.port.to_string())),
        ("PORTOLAN_EXPOSURE", Some(lis.exposure.as_str().to_owned())),
        ("PORTOLAN_PID", owner.pid.map(|p| p.to_string())),
        ("PORTOLAN_PROCESS", owner.process.clone()),
        ("PORTOLAN_EXE", owner.exe.clone()),
        ("PORTOLAN_USER", owner.user.clone()),
        ("PORTOLAN_UID", Some(owner.uid.to_string())),
        ("PORTOLAN_UNIT", owner.unit.clone()),
        ("PORTOLAN_CONTAINER", owner.container.clone()),
        ("PORTOLAN_NOTE", ev.note.clone()),
    ];
    let prev = ev.previous.as_ref();
    vars.extend([
        (
            "PORTOLAN_PREVIOUS_ADDRESS",
            prev.map(|p| p.address.to_string()),
        ),
        (
            "PORTOLAN_PREVIOUS_EXPOSURE",
            prev.map(|p| p.exposure.as_str().to_owned()),
        ),
        (
            "PORTOLAN_PREVIOUS_PID",
            prev.and_then(|p| p.owner.pid).map(|p| p.to_string()),
        ),
        (
            "PORTOLAN_PREVIOUS_PROCESS",
            prev.and_then(|p| p.owner.process.clone()),
        ),
        ("PORTOLAN_EVENT_JSON", serde_json::to_string(ev).ok()),
    ]);
    vars.into_iter()
        .filter_map(|(k, val)| {
            val.map(|mut s| {
                if let Some(nul) = s.find('\0') {
                    s.truncate(nul);
                }
                (k, OsString::from(s))
            })
        })
        .collect()
}

/// Runs `/bin/sh -c cmd` once for `event` and waits for it, at most `timeout`: the event is
/// in `PORTOLAN_*` environment variables, never in the command text. stdin is /dev/null, stdout
/// goes to this process's stderr (stdout may be the JSONL event stream), stderr is
/// inherited. The run gets its own process group, and the whole group is killed at the time
/// limit, so a pipeline or a background job cannot outlive it.
pub fn run(cmd: &str, event: &Event, timeout: Duration) -> ExecOutcome {
    run_until(cmd, event, timeout, || None)
}

/// [`run`] for an event of another kind (`portolan sentry`'s scans): the caller gives the
/// `PORTOLAN_*` variables; everything else (no inherited `PORTOLAN_*`, stdin /dev/null,
/// stdout to stderr, a process group killed at the limit) is the same.
pub fn run_with_env(
    cmd: &str,
    vars: Vec<(&'static str, OsString)>,
    timeout: Duration,
) -> ExecOutcome {
    run_vars(cmd, vars, timeout, || None)
}

fn run_until(
    cmd: &str,
    event: &Event,
    timeout: Duration,
    stop: impl Fn() -> Option<Instant>,
) -> ExecOutcome {
    run_vars(cmd, env(event), timeout, stop)
}

fn run_vars(
    cmd: &str,
    vars: Vec<(&'static str, OsString)>,
    timeout: Duration,
    stop: impl Fn() -> Option<Instant>,
) -> ExecOutcome {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null()).process_group(0);
    let out = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::null(), Stdio::from);
    c.stdout(out);
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("PORTOLAN_")) {
            c.env_remove(k);
        }
    }
    c.envs(vars);
    let mut child = match c.spawn() {
        Ok(child) => child,
        Err(e) => return ExecOutcome::NotStarted(e),
    };
    let limit = Instant::now() + timeout;
    let mut nap = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return ExecOutcome::Success,
            Ok(Some(st)) => return ExecOutcome::Failed(st),
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return ExecOutcome::NotStarted(e);
            }
        }
        let now = Instant::now();
        let stop_at = stop().filter(|s| *s < limit);
        let until = stop_at.unwrap_or(limit);
        if now >= until {
            kill_group(&mut child);
            return if stop_at.is_some() {
                ExecOutcome::Stopped
            } else {
                ExecOutcome::TimedOut
            };
        }
        std::thread::sleep(nap.min(until - now));
        nap = (nap * 2).min(Duration::from_millis(50));
    }
}

fn kill_group(child: &mut Child) {
    let pid = rustix::process::Pid::from_child(child);
    if rustix::process::kill_process_group(pid, rustix::process::Signal::KILL).is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

pub(crate) fn spawn(
    cmd: String,
    queue: Arc<Queue<Event>>,
    metrics: Metrics,
    journal: bool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("portolan-exec".into())
        .spawn(move || {
            let mut reporter = Reporter::new(journal);
            while let Some(batch) = queue.take(1, |n| metrics.exec_failed(n)) {
                for e in &batch {
                    let outcome = run_until(&cmd, e, EXEC_TIMEOUT, || queue.deadline());
                    queue.finish(1, || metrics.exec_run(outcome.is_success()));
                    if outcome.is_success() {
                        reporter.success(|| "--exec command succeeded again".into());
                    } else if !matches!(outcome, ExecOutcome::Stopped) {
                        reporter.failure(&format!(
                            "--exec command {} for: {}",
                            outcome.describe(EXEC_TIMEOUT),
                            super::line(e)
                        ));
                    }
                }
            }
            queue.mark_done();
        })
}
