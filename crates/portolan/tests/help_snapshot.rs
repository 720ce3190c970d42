//! Keeps `--help` honest: the help of every command, nested ones included, is compared
//! with a reviewed snapshot. The commands are read from the binary's own help (each
//! `Commands:` list, recursively), so a new command cannot be forgotten here.
//! After an intended change: `UPDATE_SNAPSHOTS=1 cargo test -p portolan --test help_snapshot`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

fn help(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portolan"))
        .args(args)
        .arg("--help")
        .env_remove("COLUMNS")
        .output()
        .expect("run portolan");
    assert!(out.status.success(), "--help must exit 0: {args:?}");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// The subcommands a help text lists under `Commands:` (clap's own `help` left out): each
/// is a line indented by two spaces; a wrapped description continues further right.
fn listed_commands(help: &str) -> Vec<String> {
    let Some((_, list)) = help.split_once("\nCommands:\n") else {
        return Vec::new();
    };
    list.lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("  "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command path (`[]`, `["ls"]`, `["firewall", "apply"]`, ...) with its help, depth
/// first in the order the help lists them.
fn every_command() -> Vec<(Vec<String>, String)> {
    fn walk(path: &[String], out: &mut Vec<(Vec<String>, String)>) {
        let text = help(path);
        let subs = listed_commands(&text);
        out.push((path.to_vec(), text));
        for sub in subs {
            let mut deeper = path.to_vec();
            deeper.push(sub);
            walk(&deeper, out);
        }
    }
    let mut out = Vec::new();
    walk(&[], &mut out);
    out
}

#[test]
fn the_command_list_is_read_from_the_binary() {
    let listed = listed_commands(
        "Usage: x\n\nCommands:\n  ls    List\n  a-long-one  A description that\n              wraps\n  help  Print this\n\nOptions:\n  -h\n",
    );
    assert_eq!(listed, ["ls", "a-long-one"]);
    let all = every_command();
    let paths: Vec<String> = all.iter().map(|(p, _)| p.join(" ")).collect();
    // The walk really found the tree: top-level commands and nested ones.
    for want in [
        "",
        "ls",
        "who",
        "scan",
        "probe",
        "audit",
        "generate",
        "firewall apply",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "`portolan {want}` not found in {paths:?}"
        );
    }
    assert!(paths.iter().any(|p| p.starts_with("policy ")), "{paths:?}");
}

#[test]
fn help_matches_snapshot() {
    let mut all = String::new();
    for (path, text) in every_command() {
        let words: String = path.iter().fold(String::new(), |mut s, w| {
            s.push_str(w);
            s.push(' ');
            s
        });
        writeln!(all, "$ portolan {words}--help").expect("write to string");
        all.push_str(&text);
        all.push('\n');
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/help.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        assert!(
            !portolan_testsupport::in_ci(),
            "UPDATE_SNAPSHOTS with CI=true: CI compares with the reviewed snapshot, it never writes it"
        );
        std::fs::write(&path, &all).expect("write snapshot");
        return;
    }
    let want =
        std::fs::read_to_string(&path).expect("snapshot exists; create it with UPDATE_SNAPSHOTS=1");
    assert!(
        all == want,
        "--help changed; review and update the snapshot:\n{}",
        first_difference(&want, &all)
    );
}

/// Where two snapshots part: the command whose help differs, and the first differing
/// line of each (the whole texts would bury it).
fn first_difference(want: &str, got: &str) -> String {
    let (mut old_lines, mut new_lines) = (want.lines(), got.lines());
    let mut command = "";
    for n in 1.. {
        let (old, new) = (old_lines.next(), new_lines.next());
        if old == new {
            match old {
                None => break,
                Some(l) if l.starts_with("$ portolan") => command = l,
                Some(_) => {}
            }
            continue;
        }
        return format!(
            "under `{command}`, line {n}:\n  snapshot: {:?}\n  now:      {:?}",
            old.unwrap_or("(end)"),
            new.unwrap_or("(end)")
        );
    }
    "(the same lines; the ends of lines differ)".to_owned()
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
    let top = listed_commands(&help(&[]));
    assert!(top.len() >= 5, "{top:?}");
    for sub in top {
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
