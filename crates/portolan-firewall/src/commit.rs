//! Apply, confirm, status and remove, with a commit-confirm watchdog.
//!
//! The state directory (one per network namespace, see [`default_state_dir`]) holds:
//!
//! | file            | meaning                                                          |
//! |-----------------|------------------------------------------------------------------|
//! | `lock`          | flock'd while a command or the watchdog changes anything         |
//! | `previous.nft`  | the nft script that restores the table as it was before `apply` |
//! | `pending`       | `GENERATION DEADLINE FORM` of an unconfirmed apply: the deadline in unix seconds, FORM `gated` (the kernel holds it) or `plain` |
//! | `confirmed`     | unix time of the last confirm                                    |
//! | `reverted`      | unix time the watchdog restored `previous.nft`                   |
//! | `rollback-failed` | nft's error when the watchdog's restore failed                 |
//! | `watchdog.pid`  | the watchdog's pid                                               |
//! | `applied.nft`   | the script last applied                                          |
//! | `reverted-by`   | who performed the rollback (the watchdog, or a later command)    |
//! | `candidate.nft`, `gated.nft`, `confirm.nft`, `restore.nft` | the scripts last given to nft by apply, confirm and the rollback |
//!
//! `apply` validates (`nft -c -f`), saves our current table (unless an earlier apply is
//! still pending: then the state before that one is kept), and loads the new table in one
//! transaction. **The kernel holds the deadline**: while unconfirmed, the loaded table is
//! *gated* — the new rules live in chain `candidate`, the previous ones in chain
//! `previous`, and the base chain jumps to `candidate` only while set `window` has its
//! elements, which carry a timeout of the confirm window. When they expire, the kernel
//! itself evaluates the previous rules: no process has to survive for the rollback to
//! take effect. `confirm` deletes the window's elements and loads the plain table in one
//! transaction (which fails, and is refused as too late, once the elements have expired).
//!
//! The watchdog (`PROGRAM ARGS... STATE_DIR GENERATION`, in a session of its own) then only
//! tidies up at the deadline: it replaces the gated table with the previous one and
//! records the rollback. If it was killed, every later `apply`, `confirm` and `status`
//! does that itself ([`settle`]) and says so (`remove` deletes the table either way). A previous table not in the shape
//! portolan writes (edited by hand) cannot be gated: then the watchdog alone holds the
//! deadline, as `ApplyReport::kernel_deadline` says.
//!
//! The engine is not the firewall's alone: a [`ManagedTable`] names a table and says how
//! it is saved, replaced and gated, the `*_managed` functions run the same cycle for it
//! (with a state directory of its own, [`state_dir_for`]) (`portolan forward --kernel` uses them for
//! `table inet portolan_forward`). [`apply`], [`confirm`], [`status`], [`remove_table`] and
//! [`run_watchdog`] are those functions with [`FirewallTable`].

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{flock, FlockOperation};

use crate::nft::{check_file, has_table, list_table, load_file, require_privileges};
use crate::plan::{replace_prefix, TABLE_FAMILY, TABLE_NAME};
use crate::{override_warnings, FirewallError, Ruleset};

/// A table the commit engine manages: what the engine needs to know about it beyond its
/// name. The defaults fit a table that is wholly the engine's (saved by listing it,
/// replaced whole, never gated).
pub trait ManagedTable {
    /// The nftables family (`inet`).
    fn family(&self) -> &'static str;
    /// The table's name.
    fn name(&self) -> &'static str;
    /// The command that manages it (`portolan firewall`): recorded as who rolled back,
    /// and in the watchdog's log.
    fn command(&self) -> &'static str;

    /// The lines that clear what the engine manages, so that the text after them replaces
    /// it in one transaction: by default the whole table (`add table`, `delete table`).
    /// A table that holds other things too (chains of running processes) deletes only its
    /// managed chains and sets here; the lines must succeed whether or not they exist.
    fn replace_prefix(&self) -> String {
        let (f, n) = (self.family(), self.name());
        format!("add table {f} {n}\ndelete table {f} {n}\n")
    }

    /// The script that restores the managed part as `live` has it (saved by `apply` for
    /// the rollback). By default [`ManagedTable::replace_prefix`] and the table as nft
    /// lists it.
    fn restore_script(&self, live: &Ruleset) -> Result<String, FirewallError> {
        let saved = list_table(
            self.family(),
            self.name(),
            live.has_table(self.family(), self.name()),
        )?;
        Ok(format!(
            "{}{}",
            self.replace_prefix(),
            saved.as_deref().unwrap_or("")
        ))
    }

    /// Whether a script from [`ManagedTable::restore_script`] restores something (a table
    /// was loaded before), rather than only clearing.
    fn restores_something(&self, restore: &str) -> bool {
        restore.contains('{')
    }

    /// The gated form of `script` (the kernel holds the deadline, see the module docs):
    /// the new rules while the elements of set [`WINDOW_SET`] (type `nf_proto`, elements
    /// `ipv4` and `ipv6` that time out after `within`) live, `previous` (a restore script)
    /// after. `None`: this table cannot be gated, only the watchdog holds the deadline.
    fn gated(&self, script: &str, previous: &str, within: Duration) -> Option<String> {
        let _ = (script, previous, within);
        None
    }

    /// Sentences about other tables' rules that override or bypass this one.
    fn warnings(&self, live: &Ruleset) -> Vec<String> {
        let _ = live;
        Vec::new()
    }
}

/// portolan's firewall, `table inet portolan`: the table the engine was made for.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirewallTable;

impl ManagedTable for FirewallTable {
    fn family(&self) -> &'static str {
        TABLE_FAMILY
    }
    fn name(&self) -> &'static str {
        TABLE_NAME
    }
    fn command(&self) -> &'static str {
        "portolan firewall"
    }
    fn replace_prefix(&self) -> String {
        replace_prefix()
    }
    fn gated(&self, script: &str, previous: &str, within: Duration) -> Option<String> {
        gated_script(script, previous, within)
    }
    fn warnings(&self, live: &Ruleset) -> Vec<String> {
        override_warnings(live)
    }
}

/// The default confirm window.
pub const DEFAULT_CONFIRM_WITHIN: Duration = Duration::from_secs(60);
/// The longest confirm window accepted (a day): the watchdog's sleep stays bounded.
pub const MAX_CONFIRM_WITHIN: Duration = Duration::from_secs(86_400);
/// How often the watchdog looks for a confirmation.
const POLL: Duration = Duration::from_millis(100);

const LOCK: &str = "lock";
const PREVIOUS: &str = "previous.nft";
const PENDING: &str = "pending";
const CONFIRMED: &str = "confirmed";
const REVERTED: &str = "reverted";
const WATCHDOG_PID: &str = "watchdog.pid";
const APPLIED: &str = "applied.nft";
const CANDIDATE: &str = "candidate.nft";
/// The gated table apply loads (see the module docs).
const GATED: &str = "gated.nft";
/// Confirm's transaction: the window's elements deleted, the plain table loaded.
const CONFIRM_SCRIPT: &str = "confirm.nft";
const RESTORE: &str = "restore.nft";
const LOG: &str = "watchdog.log";
const ROLLBACK_FAILED: &str = "rollback-failed";
const REVERTED_BY: &str = "reverted-by";
/// The set whose elements' timeout is the confirm deadline, in a gated table.
pub const WINDOW_SET: &str = "window";

/// Where portolan keeps run-time state; what `remove_table` may tidy up to.
const RUN_ROOT: &str = "/run/portolan";

/// The state directory for the current network namespace:
/// `/run/portolan/firewall/netns-INODE` (each namespace has its own firewall, and /run is
/// shared between namespaces).
pub fn default_state_dir() -> PathBuf {
    state_dir_for("firewall")
}

/// The state directory of `kind` (`firewall`, `forward`) for the current network
/// namespace: `/run/portolan/KIND/netns-INODE`.
pub fn state_dir_for(kind: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    let ino = fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino());
    PathBuf::from(format!("{RUN_ROOT}/{kind}/netns-{ino}"))
}

/// How `apply` starts the watchdog: `program args... STATE_DIR GENERATION`.
#[derive(Debug, Clone)]
pub struct WatchdogLauncher {
    /// The executable (normally the `portolan` binary itself).
    pub program: PathBuf,
    /// Arguments before the state directory (normally `firewall __watchdog`).
    pub args: Vec<OsString>,
}

impl WatchdogLauncher {
    /// This executable with `firewall __watchdog`.
    pub fn current_exe() -> Result<Self, FirewallError> {
        WatchdogLauncher::current_exe_with(&["firewall", "__watchdog"])
    }

    /// This executable with `args` (`forward __watchdog`).
    pub fn current_exe_with(args: &[&str]) -> Result<Self, FirewallError> {
        let program = std::env::current_exe()
            .map_err(|e| FirewallError::io("find the running executable", "/proc/self/exe", e))?;
        Ok(WatchdogLauncher {
            program,
            args: args.iter().map(Into::into).collect(),
        })
    }
}

/// Options of [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Where the saved state lives.
    pub state_dir: PathBuf,
    /// The confirm window; zero applies without a watchdog (confirmed at once).
    pub confirm_within: Duration,
    /// How to start the watchdog.
    pub watchdog: WatchdogLauncher,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Whether portolan's table existed before (and was saved for the rollback).
    pub had_previous: bool,
    /// The watchdog's pid, when a confirm window is open.
    pub watchdog_pid: Option<u32>,
    /// The confirm deadline, in unix seconds.
    pub deadline: Option<u64>,
    /// Other rules that override or bypass ours (see [`crate::override_warnings`]).
    pub warnings: Vec<String>,
    /// Whether the kernel holds the deadline (the table is gated, see the module docs);
    /// `false` when a confirm window is open but only the watchdog holds it.
    pub kernel_deadline: bool,
}

/// The watchdog of a pending apply, as `status` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogState {
    /// Its pid.
    pub pid: u32,
    /// Whether that pid still runs our watchdog.
    pub alive: bool,
}

/// Where the commit-confirm cycle stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitState {
    /// No apply recorded in this state directory.
    None,
    /// Applied, waiting for `confirm`; rolled back when `seconds_left` reaches zero.
    Pending {
        /// Seconds until the rollback.
        seconds_left: u64,
        /// Whether the kernel holds the deadline (the rules expire by themselves).
        kernel_deadline: bool,
        /// The watchdog, when its pid was recorded.
        watchdog: Option<WatchdogState>,
    },
    /// Confirmed at this unix time.
    Confirmed {
        /// When.
        at: u64,
    },
    /// Not confirmed in time, and restoring the previous state failed: the new ruleset
    /// is still loaded. `remove` deletes it.
    RollbackFailed {
        /// What nft said.
        error: String,
    },
    /// Not confirmed in time: the previous state was restored at this unix time.
    Reverted {
        /// When.
        at: u64,
        /// Who tidied up: `watchdog`, or the command that found the rollback overdue.
        by: Option<String>,
        /// Whether this very call performed it (the rollback was overdue).
        now: bool,
    },
}

/// What [`status`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Our table as nft lists it, when loaded.
    pub table: Option<String>,
    /// The commit-confirm state.
    pub commit: CommitState,
    /// Other rules that override or bypass ours (see [`crate::override_warnings`]).
    pub warnings: Vec<String>,
}

/// The table's text, when `rs` has it. The live ruleset is read once (`nft -j list ruleset`)
/// for both this and the warnings about other rules ([`override_warnings`] passes over our
/// table, so loading it does not change them).
fn table_in(t: &dyn ManagedTable, rs: &Ruleset) -> Result<Option<String>, FirewallError> {
    list_table(t.family(), t.name(), rs.has_table(t.family(), t.name()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_opt(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn write(path: &Path, text: &str) -> Result<(), FirewallError> {
    fs::write(path, text).map_err(|e| FirewallError::io("write", path, e))
}

fn remove(path: &Path) -> Result<(), FirewallError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(FirewallError::io("remove", path, e))
        }
        _ => Ok(()),
    }
}

/// An exclusive flock on the state directory's lock file, released on drop.
struct Locked(#[allow(dead_code)] File);

fn lock(dir: &Path) -> Result<Locked, FirewallError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| FirewallError::io("create state directory", dir, e))?;
    let path = dir.join(LOCK);
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| FirewallError::io("open", &path, e))?;
    flock(&f, FlockOperation::LockExclusive)
        .map_err(|e| FirewallError::io("lock", &path, e.into()))?;
    Ok(Locked(f))
}

/// `pending`'s FORM of an apply that loaded the gated table.
const FORM_GATED: &str = "gated";
/// `pending`'s FORM of an apply only the watchdog holds the deadline of.
const FORM_PLAIN: &str = "plain";

/// The unconfirmed apply recorded in `pending`.
#[derive(Debug, Clone, Copy)]
struct Pending {
    generation: u128,
    /// Unix seconds.
    deadline: u64,
    /// Whether apply loaded the gated table: what confirm must undo, decided when it was
    /// loaded rather than guessed later from what nft lists.
    gated: bool,
}

/// The pending apply, from `GENERATION DEADLINE FORM`.
fn pending(dir: &Path) -> Option<Pending> {
    let text = read_opt(&dir.join(PENDING))?;
    let mut it = text.split_ascii_whitespace();
    Some(Pending {
        generation: it.next()?.parse().ok()?,
        deadline: it.next()?.parse().ok()?,
        // A file without FORM (written before it existed) counts as gated: confirm then
        // fails loudly when there is no window, rather than confirming a table the kernel
        // will roll back.
        gated: it.next() != Some(FORM_PLAIN),
    })
}

fn unix_file(dir: &Path, name: &str) -> Option<u64> {
    read_opt(&dir.join(name))?.trim().parse().ok()
}

/// Loads `script` (written to `dir/name` first) as one transaction.
fn load_script(dir: &Path, name: &str, script: &str) -> Result<(), FirewallError> {
    let path = dir.join(name);
    write(&path, script)?;
    load_file(&path)
}

/// Validates `script` (from [`crate::render`]), saves the current table, loads the script
/// in one transaction and, with a confirm window, starts the rollback watchdog.
pub fn apply(script: &str, opts: &ApplyOptions) -> Result<ApplyReport, FirewallError> {
    apply_managed(&FirewallTable, opts, |_| {
        Ok::<_, FirewallError>(script.to_owned())
    })
}

/// [`apply`] for table `t`, with the script made under the state directory's lock from
/// the live ruleset (read after any overdue rollback): a change computed from what is
/// loaded (add one rule to those there) cannot race another one.
pub fn apply_managed<E: From<FirewallError>>(
    t: &dyn ManagedTable,
    opts: &ApplyOptions,
    make_script: impl FnOnce(&Ruleset) -> Result<String, E>,
) -> Result<ApplyReport, E> {
    require_privileges()?;
    if opts.confirm_within > MAX_CONFIRM_WITHIN {
        return Err(FirewallError::BadRule(format!(
            "--confirm-within is at most {} s",
            MAX_CONFIRM_WITHIN.as_secs()
        ))
        .into());
    }
    let dir = &opts.state_dir;
    let _lock = lock(dir)?;
    settle_locked(t, dir, &format!("{} apply", t.command()))?;
    let live = Ruleset::load()?;
    let script = make_script(&live)?;
    let candidate = dir.join(CANDIDATE);
    write(&candidate, &script)?;
    check_file(&candidate)?;
    // An apply still waiting for confirmation keeps the state from before it.
    let still_pending = pending(dir).is_some();
    let warnings = t.warnings(&live);
    if !still_pending {
        write(&dir.join(PREVIOUS), &t.restore_script(&live)?)?;
    }
    let had_previous = read_opt(&dir.join(PREVIOUS)).is_some_and(|s| t.restores_something(&s));
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let deadline = now_secs() + opts.confirm_within.as_secs().max(1);
    let watched = !opts.confirm_within.is_zero();
    // With a window, load the gated form: the kernel expires it by itself.
    let previous_text = read_opt(&dir.join(PREVIOUS)).unwrap_or_default();
    let gated = if watched {
        t.gated(&script, &previous_text, opts.confirm_within)
    } else {
        None
    };
    if watched {
        let form = if gated.is_some() {
            FORM_GATED
        } else {
            FORM_PLAIN
        };
        write(
            &dir.join(PENDING),
            &format!("{generation} {deadline} {form}\n"),
        )?;
    } else {
        remove(&dir.join(PENDING))?;
    }
    remove(&dir.join(REVERTED))?;
    remove(&dir.join(CONFIRMED))?;
    remove(&dir.join(ROLLBACK_FAILED))?;
    remove(&dir.join(REVERTED_BY))?;
    let loaded = match &gated {
        Some(g) => load_script(dir, GATED, g),
        None => load_file(&candidate),
    };
    if let Err(e) = loaded {
        if !still_pending {
            remove(&dir.join(PENDING))?;
        }
        return Err(e.into());
    }
    let _ = fs::rename(&candidate, dir.join(APPLIED));
    if !watched {
        write(&dir.join(CONFIRMED), &format!("{}\n", now_secs()))?;
        return Ok(ApplyReport {
            had_previous,
            watchdog_pid: None,
            deadline: None,
            warnings,
            kernel_deadline: false,
        });
    }
    let pid = spawn_watchdog(&opts.watchdog, dir, generation)?;
    write(&dir.join(WATCHDOG_PID), &format!("{pid}\n"))?;
    Ok(ApplyReport {
        had_previous,
        watchdog_pid: Some(pid),
        deadline: Some(deadline),
        warnings,
        kernel_deadline: gated.is_some(),
    })
}

/// The rule lines of `chain input` and whether its policy is drop, when `text` is a table
/// in the shape portolan writes (one base chain `input` on the input hook, nothing else:
/// [`crate::render`]'s output, or nft's listing of it). `None` for any other shape.
fn input_chain(text: &str) -> Option<(Vec<String>, bool)> {
    let mut lines = Vec::new();
    let mut drop = None;
    let mut chains = 0;
    let mut in_chain = false;
    for raw in text.lines() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if in_chain {
            if l == "}" {
                in_chain = false;
            } else if l.starts_with("type ") {
                if !l.starts_with("type filter hook input priority filter;") {
                    return None;
                }
                drop = Some(l.contains("policy drop;"));
            } else {
                lines.push(l.to_owned());
            }
            continue;
        }
        if l == "chain input {" {
            chains += 1;
            in_chain = true;
        } else if !(l == "}"
            || l == format!("table {TABLE_FAMILY} {TABLE_NAME} {{")
            || l == format!("add table {TABLE_FAMILY} {TABLE_NAME}")
            || l == format!("delete table {TABLE_FAMILY} {TABLE_NAME}"))
        {
            return None;
        }
    }
    (chains == 1 && !in_chain).then_some(())?;
    Some((lines, drop?))
}

fn chain_text(name: &str, lines: &[String], drop: bool) -> String {
    let mut s = format!("\tchain {name} {{\n");
    for l in lines {
        let _ = writeln!(s, "\t\t{l}");
    }
    if drop {
        s.push_str("\t\tdrop comment \"the chain's policy\"\n");
    }
    s.push_str("\t}\n");
    s
}

/// The gated form of `script` (see the module docs): the new rules apply while the
/// elements of set `window` live (`within`), the previous table's rules (none: accept
/// everything, as with no table) after that. `None` when either table is not in the
/// shape portolan writes.
fn gated_script(script: &str, previous: &str, within: Duration) -> Option<String> {
    let (new, new_drop) = input_chain(script)?;
    let previous = if previous.contains('{') {
        Some(input_chain(previous)?)
    } else {
        None
    };
    let mut s = replace_prefix();
    let _ = writeln!(s, "table {TABLE_FAMILY} {TABLE_NAME} {{");
    let _ = write!(
        s,
        "\tset {WINDOW_SET} {{\n\t\ttype nf_proto\n\t\ttimeout {}s\n\t\telements = {{ ipv4, ipv6 }}\n\t}}\n",
        within.as_secs().max(1)
    );
    s.push_str(&chain_text("candidate", &new, new_drop));
    if let Some((lines, drop)) = &previous {
        s.push_str(&chain_text("previous", lines, *drop));
    }
    s.push_str("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
    let _ = writeln!(
        s,
        "\t\tmeta nfproto @{WINDOW_SET} jump candidate comment \"unconfirmed: until the window expires\""
    );
    if previous.is_some() {
        s.push_str("\t\tjump previous comment \"after the window: the state before apply\"\n");
    }
    s.push_str("\t}\n}\n");
    Some(s)
}

/// Whether table `t` in `rs` is gated with its window still open: `None` when it has no
/// window set (not gated, or no table), else whether the set's elements still live.
fn window_in(t: &dyn ManagedTable, rs: &Ruleset) -> Option<bool> {
    rs.set_len(t.family(), t.name(), WINDOW_SET).map(|n| n > 0)
}

/// [`window_in`] the live ruleset. Failing to read it is an error, never "no window".
fn window_open(t: &dyn ManagedTable) -> Result<Option<bool>, FirewallError> {
    Ok(window_in(t, &Ruleset::load()?))
}

/// Performs an overdue rollback (the deadline passed, or the kernel's window expired, and
/// nobody tidied up: the watchdog died), recording `by` as who did it. Call with the lock
/// held. Returns whether it rolled back.
fn settle_locked(t: &dyn ManagedTable, dir: &Path, by: &str) -> Result<bool, FirewallError> {
    let Some(p) = pending(dir) else {
        return Ok(false);
    };
    let expired = now_secs() >= p.deadline || (p.gated && window_open(t)? == Some(false));
    if !expired {
        return Ok(false);
    }
    roll_back(t, dir, by)?;
    Ok(true)
}

/// Restores `previous.nft` in one transaction and records it (lock held).
fn roll_back(t: &dyn ManagedTable, dir: &Path, by: &str) -> Result<(), FirewallError> {
    let previous = read_opt(&dir.join(PREVIOUS)).unwrap_or_else(|| t.replace_prefix());
    if let Err(e) = load_script(dir, RESTORE, &previous) {
        let _ = write(&dir.join(ROLLBACK_FAILED), &format!("{e}\n"));
        return Err(e);
    }
    write(&dir.join(REVERTED), &format!("{}\n", now_secs()))?;
    write(&dir.join(REVERTED_BY), &format!("{by}\n"))?;
    remove(&dir.join(PENDING))?;
    remove(&dir.join(PREVIOUS))?;
    remove(&dir.join(WATCHDOG_PID))?;
    Ok(())
}

/// Performs an overdue rollback, if there is one (see the module docs): what `apply`,
/// `confirm` and `status` each do first. Returns whether it rolled back now.
pub(crate) fn settle(t: &dyn ManagedTable, dir: &Path, by: &str) -> Result<bool, FirewallError> {
    require_privileges()?;
    if pending(dir).is_none() {
        return Ok(false);
    }
    let _lock = lock(dir)?;
    settle_locked(t, dir, by)
}

fn spawn_watchdog(
    launcher: &WatchdogLauncher,
    dir: &Path,
    generation: u128,
) -> Result<u32, FirewallError> {
    let log = dir.join(LOG);
    let log_file = File::options()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| FirewallError::io("open", &log, e))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| FirewallError::io("open", &log, e))?;
    let child = Command::new(&launcher.program)
        .args(&launcher.args)
        .arg(dir)
        .arg(generation.to_string())
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .current_dir("/")
        .spawn()
        .map_err(|e| FirewallError::io("start the watchdog", &launcher.program, e))?;
    // The watchdog detaches itself (setsid) and outlives us; it is not waited for.
    Ok(child.id())
}

/// The watchdog's body (`portolan firewall __watchdog STATE_DIR GENERATION`): leaves the
/// caller's session, sleeps until the deadline of apply `generation`, and unless it was
/// confirmed (or superseded) by then restores the saved table in one transaction.
/// Returns whether it rolled back.
pub fn run_watchdog(dir: &Path, generation: u128) -> Result<bool, FirewallError> {
    run_watchdog_managed(&FirewallTable, dir, generation)
}

/// [`run_watchdog`] for table `t` (`portolan forward __watchdog STATE_DIR GENERATION`).
pub fn run_watchdog_managed(
    t: &dyn ManagedTable,
    dir: &Path,
    generation: u128,
) -> Result<bool, FirewallError> {
    // A new session: no controlling terminal, so a dropped SSH session's SIGHUP never
    // reaches us. Fails only if we already lead a process group, which spawn() never makes.
    let _ = rustix::process::setsid();
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Some(Pending { deadline, .. }) = pending(dir).filter(|p| p.generation == generation) else {
        return Ok(false);
    };
    // Bounded: the deadline is at most MAX_CONFIRM_WITHIN away.
    loop {
        if pending(dir).is_none_or(|p| p.generation != generation) {
            return Ok(false);
        }
        let now = now_secs();
        if now >= deadline {
            break;
        }
        std::thread::sleep(POLL.min(Duration::from_secs(deadline - now)));
    }
    let _lock = lock(dir)?;
    if pending(dir).is_none_or(|p| p.generation != generation) {
        return Ok(false);
    }
    roll_back(t, dir, "the watchdog")?;
    Ok(true)
}

/// Whether `pid` still runs our watchdog for `dir` (guards against pid reuse).
fn watchdog_alive(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let dir = dir.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == dir)
}

/// Waits (at most 3 s) for the watchdog recorded in `dir` to exit.
fn wait_watchdog_gone(dir: &Path) {
    let Some(pid) = unix_file(dir, WATCHDOG_PID) else {
        return;
    };
    let Ok(pid) = u32::try_from(pid) else {
        return;
    };
    for _ in 0..30 {
        if !watchdog_alive(pid, dir) {
            break;
        }
        std::thread::sleep(POLL);
    }
    let _ = remove(&dir.join(WATCHDOG_PID));
}

/// Keeps the applied ruleset: ends the confirm window and stops the watchdog.
pub fn confirm(dir: &Path) -> Result<(), FirewallError> {
    confirm_managed(&FirewallTable, dir)
}

/// [`confirm`] for table `t`.
pub fn confirm_managed(t: &dyn ManagedTable, dir: &Path) -> Result<(), FirewallError> {
    require_privileges()?;
    let too_late = format!("{} confirm (too late)", t.command());
    {
        let _lock = lock(dir)?;
        settle_locked(t, dir, &too_late)?;
        let Some(p) = pending(dir) else {
            if let Some(at) = unix_file(dir, REVERTED) {
                return Err(FirewallError::AlreadyReverted(format!("unix time {at}")));
            }
            return Err(FirewallError::NothingPending);
        };
        if p.gated {
            // One transaction: the window's elements go (which fails once the kernel has
            // expired them: then it is too late, or when the window is missing: then
            // nothing is confirmed) and the plain table replaces the gated one.
            let applied = read_opt(&dir.join(APPLIED)).unwrap_or_default();
            let script = format!(
                "delete element {} {} {WINDOW_SET} {{ ipv4, ipv6 }}\n{applied}",
                t.family(),
                t.name()
            );
            if let Err(e) = load_script(dir, CONFIRM_SCRIPT, &script) {
                if matches!(window_open(t), Ok(Some(false))) {
                    roll_back(t, dir, &too_late)?;
                    let at = unix_file(dir, REVERTED).unwrap_or_else(now_secs);
                    return Err(FirewallError::AlreadyReverted(format!("unix time {at}")));
                }
                return Err(e);
            }
        }
        write(&dir.join(CONFIRMED), &format!("{}\n", now_secs()))?;
        remove(&dir.join(PENDING))?;
        remove(&dir.join(PREVIOUS))?;
    }
    wait_watchdog_gone(dir);
    Ok(())
}

/// Our table (if loaded) and the commit-confirm state.
pub fn status(dir: &Path) -> Result<Status, FirewallError> {
    status_managed(&FirewallTable, dir)
}

/// [`status`] of table `t`.
pub fn status_managed(t: &dyn ManagedTable, dir: &Path) -> Result<Status, FirewallError> {
    require_privileges()?;
    let settled_now = settle(t, dir, &format!("{} status (overdue)", t.command()))?;
    let live = Ruleset::load()?;
    let table = table_in(t, &live)?;
    let commit = if let Some(error) = read_opt(&dir.join(ROLLBACK_FAILED)) {
        CommitState::RollbackFailed {
            error: error.trim().to_owned(),
        }
    } else if let Some(p) = pending(dir) {
        CommitState::Pending {
            seconds_left: p.deadline.saturating_sub(now_secs()),
            kernel_deadline: window_in(t, &live) == Some(true),
            watchdog: unix_file(dir, WATCHDOG_PID)
                .and_then(|p| u32::try_from(p).ok())
                .map(|pid| WatchdogState {
                    pid,
                    alive: watchdog_alive(pid, dir),
                }),
        }
    } else if let Some(at) = unix_file(dir, REVERTED) {
        CommitState::Reverted {
            at,
            by: read_opt(&dir.join(REVERTED_BY)).map(|s| s.trim().to_owned()),
            now: settled_now,
        }
    } else if let Some(at) = unix_file(dir, CONFIRMED) {
        CommitState::Confirmed { at }
    } else {
        CommitState::None
    };
    Ok(Status {
        table,
        commit,
        warnings: t.warnings(&live),
    })
}

/// Deletes our table in one transaction (a no-op when it is not loaded), cancels any
/// pending rollback, and removes the state directory (nothing is left to roll back or
/// confirm), with its parents under `/run/portolan` when they are left empty.
pub fn remove_table(dir: &Path) -> Result<bool, FirewallError> {
    remove_managed(&FirewallTable, dir)
}

/// [`remove_table`] for table `t`: loads its [`ManagedTable::replace_prefix`] alone (which
/// deletes the whole table by default, only the managed part otherwise). Returns whether
/// the table was loaded.
pub fn remove_managed(t: &dyn ManagedTable, dir: &Path) -> Result<bool, FirewallError> {
    require_privileges()?;
    let had = has_table(t.family(), t.name())?;
    {
        let _lock = lock(dir)?;
        load_script(dir, RESTORE, &t.replace_prefix())?;
        // Under the lock: a watchdog waiting for it then finds nothing pending and leaves.
        remove(&dir.join(PENDING))?;
    }
    wait_watchdog_gone(dir);
    remove_state_dir(dir)?;
    Ok(had)
}

/// Removes `dir` (the lock file and anything a crash left), then its parents up to
/// `/run/portolan` while they are empty: the default location leaves no trace.
fn remove_state_dir(dir: &Path) -> Result<(), FirewallError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FirewallError::io("remove", dir, e)),
    }
    for parent in dir.ancestors().skip(1) {
        if !parent.starts_with(RUN_ROOT) || fs::remove_dir(parent).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{render, Guard};

    #[test]
    fn only_tables_in_portolans_shape_are_gated() {
        let script = render(&[], &Guard::from_sources(None, None)).unwrap();
        let (lines, drop) = input_chain(&script).expect("our own plan");
        assert!(drop);
        assert!(lines.iter().any(|l| l.starts_with("tcp dport 22 accept")));
        let gated = gated_script(&script, "", Duration::from_secs(5)).unwrap();
        assert!(gated.contains("timeout 5s"), "{gated}");
        assert!(gated.contains("meta nfproto @window jump candidate"));
        assert!(
            !gated.contains("jump previous"),
            "no previous table: {gated}"
        );
        let with_prev = gated_script(&script, &script, Duration::from_secs(5)).unwrap();
        assert!(with_prev.contains("chain previous {"), "{with_prev}");
        // Edited by hand (a set, another chain): not gated, the watchdog holds the deadline.
        let edited = "table inet portolan {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t}\n}\n";
        assert!(input_chain(edited).is_none());
        assert!(gated_script(&script, edited, Duration::from_secs(5)).is_none());
    }
}
