//! The SQLite history store: the shared behaviour, files and modes, migrations, hostile
//! files, and readers and writers waiting for each other.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bad_rows, behaviour, record_story, story, TempDir, WEB};
use portolan_watch::store::{self, EventFilter, StoreError, SCHEMA_VERSION};

fn raw(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("raw connection");
    c.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    c
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn shared_behaviour() {
    let dir = TempDir::new("sqlite");
    let path = dir.join("history.sqlite");
    let mut s = store::open(path.to_str().unwrap()).expect("open");
    assert_eq!(s.describe(), path.display().to_string());
    behaviour(s.as_mut());
}

#[test]
fn bad_rows_name_the_row() {
    let dir = TempDir::new("sqlite");
    let path = dir.join("history.sqlite");
    let mut s = store::open(path.to_str().unwrap()).expect("open");
    let conn = raw(&path);
    bad_rows(s.as_mut(), &mut |sql| conn.execute_batch(sql).expect(sql));

    // SQLite keeps whatever type it is given: text, floats and blobs where numbers or text
    // belong.
    let cases = [
        (
            "ts_ms = 'soon'",
            "ts_ms holds the text \"soon\", not a number",
        ),
        ("pid = 1.5", "pid holds the floating-point number 1.5"),
        ("host = x'00ff'", "host holds a blob of 2 bytes"),
        (
            "note = CAST(x'ff' AS TEXT)",
            "note holds text that is not UTF-8",
        ),
    ];
    let (ts, pid, host) = (1000, 500, common::WEB);
    for (set, expected) in cases {
        conn.execute_batch(&format!("UPDATE events SET {set} WHERE id = 2"))
            .unwrap();
        let e = s.events(&EventFilter::default()).unwrap_err().to_string();
        assert!(e.contains("events row 2: "), "{set}: {e}");
        assert!(e.contains(expected), "{set}: {e}");
        conn.execute_batch(&format!(
            "UPDATE events SET ts_ms = {ts}, pid = {pid}, host = '{host}', note = NULL WHERE id = 2"
        ))
        .unwrap();
    }
    assert_eq!(s.events(&EventFilter::default()).unwrap().len(), 13);
}

#[test]
fn creates_private_files_and_directories_and_reopens() {
    let dir = TempDir::new("sqlite");
    let path = dir.join("a/b/history.sqlite");
    let story = story();
    {
        let mut s = store::open(path.to_str().unwrap()).expect("open");
        record_story(s.as_mut(), &story);
    }
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.join("a")), 0o700);
    assert_eq!(mode(&dir.join("a/b")), 0o700);
    for side in ["history.sqlite-wal", "history.sqlite-shm"] {
        let p = dir.join("a/b").join(side);
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{side} is private");
        }
    }
    let mut s = store::open(path.to_str().unwrap()).expect("reopen");
    assert_eq!(s.events(&EventFilter::default()).unwrap().len(), 13);
    assert_eq!(s.hosts().unwrap().len(), 2);
    let journal: String = raw(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn migrates_an_empty_file_once() {
    let dir = TempDir::new("sqlite");
    let path = dir.join("empty.sqlite");
    std::fs::File::create(&path).unwrap();
    drop(store::open(path.to_str().unwrap()).expect("open an empty file"));
    drop(store::open(path.to_str().unwrap()).expect("open again"));
    let conn = raw(&path);
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    assert_eq!(
        tables,
        ["events", "hosts", "listeners", "scans", "schema_version"]
    );
    let indexes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN \
             ('events_host_ts', 'events_port', 'events_ts', 'scans_host_started')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 4);
}

#[test]
fn refuses_a_newer_schema() {
    let dir = TempDir::new("sqlite");
    let path = dir.join("history.sqlite");
    drop(store::open(path.to_str().unwrap()).expect("open"));
    raw(&path)
        .execute_batch("INSERT INTO schema_version (version, applied_ms) VALUES (7, 0)")
        .unwrap();
    let e = store::open(path.to_str().unwrap()).err().expect("refused");
    assert!(
        matches!(e, StoreError::NewerSchema { found: 7, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "history database {} was written by a newer portolan (schema 7, this one knows {SCHEMA_VERSION})",
            path.display()
        )),
        "{msg}"
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = TempDir::new("sqlite");
    let path = dir.join("garbage.sqlite");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761) >> 24).unwrap())
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let e = store::open(path.to_str().unwrap()).err().expect("refused");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot open history database {}: file is not a database",
            path.display()
        )
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "left untouched");

    // A truncated SQLite header is garbage too.
    std::fs::write(&path, b"SQLite format 3\0\x10\x00").unwrap();
    let e = store::open(path.to_str().unwrap()).err().expect("refused");
    assert!(
        e.to_string().starts_with("cannot open history database"),
        "{e}"
    );
}

#[test]
fn a_directory_is_refused() {
    let dir = TempDir::new("sqlite");
    let e = store::open(dir.path().to_str().unwrap())
        .err()
        .expect("refused");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot open history database {}: it is a directory",
            dir.path().display()
        )
    );
    // A parent that is a file.
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = store::open(file.join("sub/history.sqlite").to_str().unwrap())
        .err()
        .expect("refused");
    assert_eq!(
        e.to_string(),
        format!(
            "cannot open history database {}: not a directory",
            file.join("sub/history.sqlite").display()
        )
    );
    // An empty path, and a name with control characters (escaped in the message).
    let e = store::open("").err().expect("refused");
    assert!(e.to_string().contains("the path is empty"), "{e}");
    let evil = dir.join("ev\x1b[2Jil");
    std::fs::create_dir(&evil).unwrap();
    let e = store::open(evil.to_str().unwrap()).err().expect("refused");
    assert!(!e.to_string().contains('\x1b'), "{e}");
}

/// Runs this test binary's `child_mode` with `env`, as the unprivileged `nobody` when we
/// are root, and returns what it reported.
fn in_child(env: &[(&str, &str)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if common::euid() == 0 {
        let mut c = Command::new("/usr/bin/setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args([
        "--ignored",
        "--exact",
        "child_mode",
        "--nocapture",
        "--test-threads=1",
    ])
    .env_remove("HOME")
    .env_remove("XDG_DATA_HOME")
    .current_dir("/");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "no result from the child: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

/// Not a test of its own: what `in_child` runs (`--ignored --exact`) in a process of its
/// own, so it is ignored and never counts as a passing test.
#[test]
#[ignore = "not a test: the child process that in_child runs"]
fn child_mode() {
    let Ok(what) = std::env::var("PORTOLAN_STORE_CHILD") else {
        return;
    };
    let result = match what.as_str() {
        "open" => {
            let path = std::env::var("PORTOLAN_STORE_PATH").unwrap();
            match store::open(&path) {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("err {e}"),
            }
        }
        "default-path" => match store::default_sqlite_path() {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("err {e}"),
        },
        other => format!("unknown mode {other}"),
    };
    println!("RESULT: {result}");
}

#[test]
fn an_unreadable_file_is_refused() {
    let dir = TempDir::new("sqlite");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("history.sqlite");
    drop(store::open(path.to_str().unwrap()).expect("open"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let got = in_child(&[
        ("PORTOLAN_STORE_CHILD", "open"),
        ("PORTOLAN_STORE_PATH", path.to_str().unwrap()),
    ]);
    assert_eq!(
        got,
        format!(
            "err cannot open history database {}: permission denied",
            path.display()
        )
    );
}

#[test]
fn default_paths() {
    if common::euid() == 0 {
        assert_eq!(
            store::default_sqlite_path().unwrap(),
            Path::new("/var/lib/portolan/history.sqlite")
        );
    }
    // The rest as someone else (nobody, when we are root), with a controlled environment.
    let mode = ("PORTOLAN_STORE_CHILD", "default-path");
    assert_eq!(
        in_child(&[mode, ("XDG_DATA_HOME", "/x/data"), ("HOME", "/h")]),
        "/x/data/portolan/history.sqlite"
    );
    assert_eq!(
        in_child(&[mode, ("HOME", "/h")]),
        "/h/.local/share/portolan/history.sqlite"
    );
    assert_eq!(
        in_child(&[mode, ("XDG_DATA_HOME", "relative"), ("HOME", "/h")]),
        "/h/.local/share/portolan/history.sqlite",
        "a relative XDG_DATA_HOME is ignored"
    );
    let none = in_child(&[mode]);
    assert!(
        none.starts_with("err cannot choose where to keep the history"),
        "{none}"
    );
    assert!(
        none.contains("neither XDG_DATA_HOME nor HOME is set"),
        "{none}"
    );
}

#[test]
fn readers_and_writers_wait_for_a_writer() {
    let dir = TempDir::new("sqlite");
    let path = dir.join("history.sqlite");
    let mut s = store::open(path.to_str().unwrap()).expect("open");
    let story = story();
    record_story(s.as_mut(), &story);

    // Another connection takes the write lock and holds it for a while.
    let (held_tx, held_rx) = mpsc::channel();
    let hold = Duration::from_millis(700);
    let other = path.clone();
    let holder = std::thread::spawn(move || {
        let c = raw(&other);
        c.execute_batch("BEGIN IMMEDIATE; INSERT INTO hosts VALUES ('other-host', 1, 1);")
            .unwrap();
        held_tx.send(()).unwrap();
        std::thread::sleep(hold);
        c.execute_batch("COMMIT").unwrap();
    });
    held_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let start = Instant::now();

    // A reader is not blocked (WAL), and sees the state before the open transaction.
    assert_eq!(s.events(&EventFilter::default()).unwrap().len(), 13);
    assert_eq!(s.hosts().unwrap().len(), 2);
    assert!(
        start.elapsed() < hold,
        "reads did not wait: {:?}",
        start.elapsed()
    );

    // A writer waits (busy_timeout) and then succeeds.
    s.record(WEB, 8000, &[]).expect("record after waiting");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(650),
        "the writer waited: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    holder.join().unwrap();
    assert_eq!(s.hosts().unwrap().len(), 3);
    assert_eq!(s.last_state(WEB).unwrap().unwrap().last_sample_ms, 8000);

    // Held longer than the busy timeout, a writer gets a clear error, not a hang.
    let (held_tx, held_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let other = path.clone();
    let holder = std::thread::spawn(move || {
        let c = raw(&other);
        c.execute_batch("BEGIN IMMEDIATE; INSERT INTO hosts VALUES ('third', 1, 1);")
            .unwrap();
        held_tx.send(()).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(15));
        c.execute_batch("ROLLBACK").unwrap();
    });
    held_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let start = Instant::now();
    let e = s.record(WEB, 9000, &[]).unwrap_err();
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    let msg = e.to_string();
    assert_eq!(
        msg,
        format!(
            "history database {}: recording a sample failed: database is locked",
            path.display()
        )
    );
    assert_eq!(s.last_state(WEB).unwrap().unwrap().last_sample_ms, 8000);
}

#[test]
fn one_recorder_per_file() {
    let dir = TempDir::new("claim");
    let path = dir.join("history.sqlite");
    let p = path.to_str().unwrap();
    let mut first = store::open(p).expect("open");
    first.claim_host("web-3").expect("first claim");
    let mut second = store::open(p).expect("open");
    // Readers are welcome; a second recorder is not, whatever host it names.
    assert!(second.events(&EventFilter::default()).is_ok());
    let e = second.claim_host("web-4").unwrap_err();
    assert!(matches!(e, StoreError::Busy { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    drop(first);
    second
        .claim_host("web-4")
        .expect("free once the first handle is gone");
    let lock = std::path::PathBuf::from(format!("{p}-watch.lock"));
    assert_eq!(mode(&lock) & 0o777, 0o600);
}

#[test]
fn a_hostile_schema_is_refused_with_an_escaped_message() {
    // SQLite's error quotes the table name that the file itself holds.
    let dir = TempDir::new("sqlite");
    let path = dir.join("hostile.sqlite");
    raw(&path)
        .execute_batch(
            "CREATE TABLE t (x); PRAGMA writable_schema = ON; \
             UPDATE sqlite_master SET name = 'evil\x1b[2J', sql = 'CREATE TABLE \x1b[2J (' \
             WHERE name = 't'; PRAGMA writable_schema = OFF;",
        )
        .unwrap();
    let e = store::open(path.to_str().unwrap()).err().expect("refused");
    let msg = e.to_string();
    assert!(msg.contains("malformed database schema"), "{msg:?}");
    assert!(msg.contains("evil\\x1b[2J"), "{msg:?}");
    assert!(!msg.contains('\x1b'), "{msg:?}");
}

#[test]
fn a_reader_refuses_a_table_without_a_column_it_reads() {
    let dir = TempDir::new("sqlite");
    let path = dir.join("narrow.sqlite");
    drop(store::open(path.to_str().unwrap()).expect("create"));
    raw(&path)
        .execute_batch("ALTER TABLE events DROP COLUMN note")
        .unwrap();
    let e = store::open_read_only(path.to_str().unwrap())
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(matches!(e, StoreError::NotHistory { .. }), "{msg}");
    assert!(
        msg.contains("its table events lacks what portolan reads") && msg.contains("note"),
        "{msg}"
    );
}
