//! What portolan's tests share.
//!
//! - The one prerequisite check: a test that needs root, a program or a free fixed port
//!   asks [`skip_unless`]. When the prerequisite is there the test runs. When it is not,
//!   on a user's machine the test prints `skipped: TEST: WHY` on stderr and returns early;
//!   under `CI=true` it panics with the reason instead, because CI must have everything and
//!   a test that cannot run there is a failure, never a silent pass.
//! - The checks that feed it: [`root`], [`program`], [`all`].
//! - [`Netns`]: a network namespace of the test's own, so a test that needs a fixed port or
//!   a non-loopback address makes them instead of depending on the machine's.
//!
//! Light on purpose (std and rustix) so that every crate's tests can use it.

use std::fmt::Display;

mod netns;

pub use netns::Netns;

/// Whether this is a CI run (`CI=true`), where a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether the calling test may run: true when `ready` is `Ok`. Otherwise (`ready` says what
/// is missing) panics when `CI=true`, and elsewhere prints `skipped: TEST: WHY` on stderr
/// and returns false; the test then returns at once.
///
/// ```no_run
/// # fn start_the_server() {}
/// if !portolan_testsupport::skip_unless(portolan_testsupport::root()) {
///     return;
/// }
/// start_the_server();
/// ```
///
/// # Panics
/// When the prerequisite is missing and `CI=true`.
#[track_caller]
pub fn skip_unless<E: Display>(ready: Result<(), E>) -> bool {
    match ready {
        Ok(()) => true,
        Err(why) => {
            skip_or_fail(&why.to_string());
            false
        }
    }
}

/// The calling test cannot run, for the reason `why`: panics under `CI=true`, elsewhere
/// prints `skipped: TEST: WHY` on stderr, shown even though the test passes (the caller
/// returns).
///
/// # Panics
/// When `CI=true`.
#[track_caller]
pub fn skip_or_fail(why: &str) {
    // Straight to file descriptor 2, not through `eprintln!`, which the test harness
    // captures and shows only for failures: a skip is for the person running the tests to
    // see, and a skipped test passes.
    skip_or_fail_to(in_ci(), why, &mut std::io::stderr().lock());
}

/// [`skip_or_fail`], with whether this is CI and where the skip line goes given.
#[track_caller]
fn skip_or_fail_to(ci: bool, why: &str, out: &mut dyn std::io::Write) {
    let what = named(why);
    assert!(
        !ci,
        "cannot run: {what}; CI=true, where a missing prerequisite is a failure, not a skip"
    );
    let _ = writeln!(out, "skipped: {what}");
}

/// `TEST: WHY`, TEST being the running test's name (libtest names each test's thread
/// after it).
fn named(why: &str) -> String {
    match std::thread::current().name() {
        Some(test) if test != "main" => format!("{test}: {why}"),
        _ => why.to_owned(),
    }
}

/// `Ok` when the tests run as root (effective uid 0), else the reason to give.
pub fn root() -> Result<(), String> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err("needs root".to_owned())
    }
}

/// `Ok` when `program` is installed: an absolute path that exists, or a bare name found on
/// `PATH`; else the reason to give (naming `scripts/test.sh`, which installs them).
pub fn program(program: &str) -> Result<(), String> {
    let found = if program.contains('/') {
        std::path::Path::new(program).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "{program} is not installed (scripts/test.sh installs it)"
        ))
    }
}

/// Every check's outcome together: `Ok` when all are, else their reasons joined by `; `.
pub fn all(checks: impl IntoIterator<Item = Result<(), String>>) -> Result<(), String> {
    let why: Vec<String> = checks.into_iter().filter_map(Result::err).collect();
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skip_line_names_the_test_and_the_reason() {
        assert_eq!(
            named("needs root"),
            "tests::the_skip_line_names_the_test_and_the_reason: needs root"
        );
    }

    #[test]
    fn a_ready_prerequisite_runs_the_test() {
        assert!(skip_unless(Ok::<(), String>(())));
    }

    #[test]
    fn a_missing_prerequisite_skips_here_and_fails_under_ci() {
        let mut line = Vec::new();
        skip_or_fail_to(false, "no such thing", &mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "skipped: tests::a_missing_prerequisite_skips_here_and_fails_under_ci: no such thing\n"
        );
        let e =
            std::panic::catch_unwind(|| skip_or_fail_to(true, "no such thing", &mut Vec::new()))
                .expect_err("CI=true: a missing prerequisite panics");
        let msg = e.downcast_ref::<String>().expect("a formatted message");
        assert!(
            msg.starts_with("cannot run: tests::") && msg.contains(": no such thing; CI=true"),
            "{msg}"
        );
    }

    #[test]
    fn programs_are_looked_up_by_path_and_on_path() {
        assert_eq!(program("/bin/sh"), Ok(()));
        assert_eq!(program("sh"), Ok(()));
        let e = program("/nonexistent/portolan-nothing").unwrap_err();
        assert!(
            e.contains("/nonexistent/portolan-nothing is not installed"),
            "{e}"
        );
        assert!(program("portolan-no-such-program").is_err());
    }

    #[test]
    fn all_joins_every_reason() {
        assert_eq!(all([Ok(()), Ok(())]), Ok(()));
        assert_eq!(
            all([Err("a".to_owned()), Ok(()), Err("b".to_owned())]),
            Err("a; b".to_owned())
        );
    }
}
