//! Keeps `--help` honest: the help of every command is compared with a reviewed snapshot.
//! After an intended change: `UPDATE_SNAPSHOTS=1 cargo test -p portolan --test help_snapshot`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portolan"))
        .args(args)
        .arg("--help")
        .env_remove("COLUMNS")
        .output()
        .expect("run portolan");
    assert!(out.status.success(), "--help must exit 0: {args:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

#[test]
fn help_matches_snapshot() {
    let mut all = String::new();
    for cmd in [
        &[][..],
        &["ls"],
        &["who"],
        &["info"],
        &["free"],
        &["kill"],
        &["generate"],
    ] {
        writeln!(all, "$ portolan {} --help", cmd.join(" ")).expect("write to string");
        all.push_str(&help(cmd));
        all.push('\n');
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &all).expect("write snapshot");
        return;
    }
    let want =
        std::fs::read_to_string(&path).expect("snapshot exists; create it with UPDATE_SNAPSHOTS=1");
    assert_eq!(all, want, "--help changed; review and update the snapshot");
}

#[test]
fn man_page_and_completions_come_from_the_same_definitions() {
    let run = |what: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_portolan"))
            .args(["generate", what])
            .output()
            .expect("run portolan");
        assert!(out.status.success(), "generate {what}");
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let man = run("man");
    assert!(man.contains(".TH portolan 1"), "{man}");
    // Each subcommand is referenced as a man page of its own, `portolan\-SUB(1)`, in the
    // SUBCOMMANDS section (a bare word such as "who" or "free" occurs in any prose).
    let subcommands = man.split_once(".SH SUBCOMMANDS\n").map_or_else(
        || panic!("man page has no SUBCOMMANDS section:\n{man}"),
        |(_, rest)| rest.split("\n.SH ").next().unwrap_or(rest),
    );
    for sub in ["ls", "who", "info", "free", "kill"] {
        let reference = format!(".TP\nportolan\\-{sub}(1)\n");
        assert!(
            subcommands.contains(&reference),
            "man page lacks {reference:?} in SUBCOMMANDS:\n{subcommands}"
        );
    }
    let bash = run("bash");
    assert!(bash.contains("complete") && bash.contains("--exposed") && bash.contains("--dry-run"));
    let zsh = run("zsh");
    assert!(
        zsh.starts_with("#compdef portolan"),
        "{}",
        &zsh[..40.min(zsh.len())]
    );
}
