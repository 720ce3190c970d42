//! Running `nft` and the privilege check.

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Stdio};

use portolan_core::escape::for_terminal;

use crate::plan::{TABLE_FAMILY, TABLE_NAME};
use crate::FirewallError;

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// Fails with a plain message unless this process may change the firewall: effective uid
/// 0 and CAP_NET_ADMIN in its effective capability set.
pub fn require_privileges() -> Result<(), FirewallError> {
    let euid = rustix::process::geteuid();
    if !euid.is_root() {
        return Err(FirewallError::NotPermitted(format!(
            "running as uid {}",
            euid.as_raw()
        )));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok());
    match cap_eff {
        Some(caps) if caps & (1 << CAP_NET_ADMIN) == 0 => Err(FirewallError::NotPermitted(
            "root, but without CAP_NET_ADMIN (in a restricted container?)".to_owned(),
        )),
        _ => Ok(()),
    }
}

/// Runs `nft ARGS` and returns its stdout; a failure carries nft's stderr.
pub(crate) fn nft(args: &[&str]) -> Result<String, FirewallError> {
    nft_with_input(args, None)
}

/// Runs `nft ARGS` with `input` on its stdin (none: /dev/null).
fn nft_with_input(args: &[&str], input: Option<&str>) -> Result<String, FirewallError> {
    let spawn_error = |e: std::io::Error| {
        if e.kind() == ErrorKind::NotFound {
            FirewallError::NftMissing
        } else {
            FirewallError::Nft {
                command: format!("nft {}", args.join(" ")),
                stderr: e.to_string(),
            }
        }
    };
    let mut cmd = Command::new("nft");
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(spawn_error)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write as _;
        // nft reads the whole script before it answers; a failed write shows up as nft's
        // own error below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(FirewallError::Nft {
            command: format!("nft {}", args.join(" ")),
            stderr: for_terminal(stderr.trim()).into_owned(),
        })
    }
}

/// `nft -c -f FILE`: whether the script would load, without loading it.
pub(crate) fn check_file(path: &Path) -> Result<(), FirewallError> {
    nft(&["-c", "-f", &path.to_string_lossy()]).map(drop)
}

/// `nft -f FILE`: loads the script as one transaction.
pub(crate) fn load_file(path: &Path) -> Result<(), FirewallError> {
    nft(&["-f", &path.to_string_lossy()]).map(drop)
}

/// `nft -f -` with `script` on stdin: loads it as one transaction (for scripts that are not
/// worth a file, such as a redirect's chains).
pub fn load_text(script: &str) -> Result<(), FirewallError> {
    nft_with_input(&["-f", "-"], Some(script)).map(drop)
}

/// Whether table `family name` is loaded (`nft list tables`).
pub fn has_table(family: &str, name: &str) -> Result<bool, FirewallError> {
    let ours = format!("table {family} {name}");
    Ok(nft(&["list", "tables"])?.lines().any(|l| l.trim() == ours))
}

/// Whether portolan's table is loaded (`nft list tables`).
pub(crate) fn has_our_table() -> Result<bool, FirewallError> {
    has_table(TABLE_FAMILY, TABLE_NAME)
}

/// Table `family name` as nft lists it (the form a restore script loads), when `loaded`;
/// no `nft` runs otherwise.
pub fn list_table(family: &str, name: &str, loaded: bool) -> Result<Option<String>, FirewallError> {
    if !loaded {
        return Ok(None);
    }
    nft(&["list", "table", family, name]).map(Some)
}

/// Our table as nft lists it (the form a restore script loads), when `loaded`; no `nft`
/// runs otherwise.
pub(crate) fn list_our_table(loaded: bool) -> Result<Option<String>, FirewallError> {
    list_table(TABLE_FAMILY, TABLE_NAME, loaded)
}

/// The text of portolan's table as nft lists it, or `None` when it is not loaded.
pub fn our_table() -> Result<Option<String>, FirewallError> {
    list_our_table(has_our_table()?)
}

/// `nft -j list ruleset`: the whole live ruleset as JSON text.
pub fn ruleset_json() -> Result<String, FirewallError> {
    nft(&["-j", "list", "ruleset"])
}
