//! What a worker pointed at the wrong place hears: a clear error, at once, never a panic,
//! and never the password. No server needed.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use portolan_queue::{Queue, QueueError};

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

fn assert_hidden(e: &QueueError, secret: &str) {
    assert!(!e.to_string().contains(secret), "{e}");
    assert!(!format!("{e:?}").contains(secret), "{e:?}");
}

#[test]
fn urls_that_are_not_postgres() {
    for url in [
        "mysql://root:hunter2@db.example/queue",
        "http://scan:hunter2@queue.example/",
        "sqlite:///var/lib/portolan/queue.db",
        "/var/lib/portolan/queue.db",
        "host=db user=scan password=hunter2",
        "",
        "POSTGRES://u:hunter2@h/db",
        "\u{1b}[2Jpostgres://u:hunter2@h/db",
    ] {
        let e = Queue::connect(url).expect_err(url);
        assert!(
            matches!(e, QueueError::NotPostgres { .. }),
            "{url:?}: {e:?}"
        );
        let msg = e.to_string();
        assert!(msg.starts_with("not a PostgreSQL URL: "), "{msg}");
        assert!(!msg.contains('\u{1b}'), "{msg:?}");
        assert_hidden(&e, "hunter2");
    }
}

#[test]
fn postgres_urls_the_client_cannot_read() {
    for (url, shown) in [
        (
            "postgres://u:pw-one@127.0.0.1:notaport/db",
            "invalid PostgreSQL URL postgres://u:***@127.0.0.1:notaport/db: ",
        ),
        (
            "postgresql://u:pw-two@[::1/db",
            "invalid PostgreSQL URL postgresql://u:***@[::1/db: ",
        ),
        (
            "postgres://127.0.0.1/db?password=pw-three&frobnicate=1",
            "invalid PostgreSQL URL postgres://127.0.0.1/db?password=***&frobnicate=1: ",
        ),
        (
            "postgres://u:pw-four@h/db?sslmode=sometimes\u{1b}[2J",
            "invalid PostgreSQL URL postgres://u:***@h/db?sslmode=sometimes\\x1b[2J: ",
        ),
    ] {
        let e = Queue::connect(url).expect_err(url);
        assert!(matches!(e, QueueError::BadUrl { .. }), "{url}: {e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with(shown), "{msg}");
        assert!(!msg.contains('\u{1b}'), "{msg:?}");
        assert_hidden(&e, "pw-");
    }
}

#[test]
fn a_refused_connection_is_clear_and_fast() {
    let port = free_port();
    let url = format!("postgres://scan:hunter2@127.0.0.1:{port}/queue");
    let start = Instant::now();
    let e = Queue::connect(&url).expect_err("nobody listens there");
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(e, QueueError::Connect { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("PostgreSQL at postgres://scan:***@127.0.0.1:{port}/queue: connection refused")
    );
    assert_hidden(&e, "hunter2");
    // A percent-encoded password is hidden as written too.
    let url = format!("postgres://scan:p%40ss@127.0.0.1:{port}/queue");
    let e = Queue::connect(&url).expect_err("nobody listens there");
    assert_hidden(&e, "p%40ss");
    assert_hidden(&e, "p@ss");
}

#[test]
fn url_for_humans_hides_the_password() {
    assert_eq!(
        Queue::url_for_humans("postgres://scan:s3cret@db:5432/queue?password=again"),
        "postgres://scan:***@db:5432/queue?password=***"
    );
    assert_eq!(
        Queue::url_for_humans("postgres://scan@db/queue"),
        "postgres://scan@db/queue"
    );
}

#[test]
fn a_worker_has_a_name() {
    let name = portolan_queue::worker_name();
    assert!(
        name.ends_with(&format!(":{}", std::process::id())),
        "{name}"
    );
    assert!(name.len() > 2, "{name}");
}
