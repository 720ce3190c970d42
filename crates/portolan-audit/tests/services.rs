//! Findings that need a service to say what it is: Debian's vsftpd (FTP logins in clear
//! text), Flask's Werkzeug debugger, an HTTP server that asks for credentials without TLS,
//! and an HTTP server squatting on a database's port. Each is started on a port of its own
//! and probed on loopback with portolan's prober.

#![allow(clippy::print_stderr)]

mod common;

use std::net::SocketAddr;

use common::{have, have_flask, listeners_on, probe, start, unnamed_free_port};
use portolan_audit::{audit, AuditInput, Finding, Severity};

fn audit_probed(port: u16) -> Vec<Finding> {
    let ls = listeners_on(&[port]);
    assert!(!ls.is_empty(), "nothing listens on {port}");
    let probes = [probe(port)];
    audit(&AuditInput {
        probes: &probes,
        ..AuditInput::new(&ls)
    })
}

fn find<'a>(found: &'a [Finding], id: &str) -> &'a Finding {
    found
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no {id}: {found:#?}"))
}

/// One GET on loopback, read to the end (bounded: 5 s, 1 MiB).
fn warm_up(port: u16) {
    use std::io::{Read, Write};
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.take(1 << 20).read_to_end(&mut buf);
}

const PY: &str = "/usr/bin/python3";

#[test]
fn vsftpd_on_all_interfaces_sends_logins_in_clear() {
    if !have("/usr/sbin/vsftpd") {
        return;
    }
    let p = unnamed_free_port();
    let dir = std::env::temp_dir().join(format!("portolan-audit-ftp-{}-{p}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("vsftpd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_address=0.0.0.0\nlisten_port={p}\nbackground=NO\n\
             anonymous_enable=NO\nlocal_enable=YES\nsecure_chroot_dir=/var/run/vsftpd/empty\n\
             xferlog_enable=NO\nvsftpd_log_file=/dev/null\n"
        ),
    )
    .unwrap();
    let _ftp = start("/usr/sbin/vsftpd", &[conf.to_str().unwrap()], p);
    let found = audit_probed(p);
    let f = find(&found, "PA003-cleartext-login");
    assert_eq!(f.severity, Severity::Medium);
    assert!(f.title.starts_with("ftp"), "{}", f.title);
    assert!(f.fix.contains("ssl_enable=YES"), "{}", f.fix);
    assert_eq!(f.owner.as_ref().unwrap().process.as_deref(), Some("vsftpd"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn werkzeug_debugger_on_all_interfaces_is_critical() {
    if !have_flask() {
        return;
    }
    let p = unnamed_free_port();
    let app = format!(
        // Every request fails (whatever path or method a probe sends), so every answer is the
        // debugger's page.
        "from flask import Flask\napp = Flask('t')\n@app.before_request\ndef boom():\n    return 1 // 0\n\
         app.run(host='0.0.0.0', port={p}, debug=True, use_reloader=False)\n"
    );
    let _srv = start(PY, &["-c", &app], p);
    // Werkzeug writes the headers and the page in separate sends: the prober reads an HTTP
    // answer to its end, so the page (the debugger's) is there the first time.
    warm_up(p);
    let ls = listeners_on(&[p]);
    let probes = [probe(p)];
    assert!(
        probes[0].http.as_ref().is_some_and(|h| h.title.is_some()),
        "{:?}",
        probes[0]
    );
    let found = audit(&AuditInput {
        probes: &probes,
        ..AuditInput::new(&ls)
    });
    let f = find(&found, "PA005-debugger-exposed");
    assert_eq!(f.severity, Severity::Critical);
    assert!(f.fix.contains("debug"), "{}", f.fix);
}

/// A Flask app that answers `/` with `status` and these headers (Werkzeug's server
/// answers every probe in HTTP, as a real deployment would).
fn http_server(port: u16, status: u16, headers: &str) -> String {
    format!(
        "from flask import Flask\napp = Flask('t')\n@app.route('/')\ndef index():\n    \
         return ('', {status}, {{{headers}}})\n\
         app.run(host='0.0.0.0', port={port})\n"
    )
}

#[test]
fn http_asking_for_credentials_in_clear_is_found() {
    if !have_flask() {
        return;
    }
    let p = unnamed_free_port();
    let code = http_server(p, 401, "'WWW-Authenticate': 'Basic realm=\"x\"'");
    let _srv = start(PY, &["-c", &code], p);
    let found = audit_probed(p);
    let f = find(&found, "PA004-http-login-without-tls");
    assert_eq!(f.severity, Severity::Medium);
    assert!(f.fix.contains("HTTPS"), "{}", f.fix);
    // It is HTTP, so no longer an unknown service.
    assert!(
        !found.iter().any(|f| f.id == "PA006-unknown-service"),
        "{found:#?}"
    );
}

#[test]
fn http_on_a_database_port_is_an_unexpected_service_not_a_database() {
    if !have_flask() {
        return;
    }
    let Some(p) = [6379u16, 11211, 27017, 5432, 3306]
        .into_iter()
        .find(|&p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok())
    else {
        portolan_testsupport::skip_or_fail("every database port is taken");
        return;
    };
    let code = http_server(p, 200, "");
    let _srv = start(PY, &["-c", &code], p);
    let found = audit_probed(p);
    let f = find(&found, "PA008-unexpected-service");
    assert_eq!(f.severity, Severity::Medium);
    assert!(f.title.starts_with("http answers where"), "{}", f.title);
    assert!(
        !found.iter().any(|f| f.id.starts_with("PA001")),
        "the probe said HTTP: not a database: {found:#?}"
    );
}
