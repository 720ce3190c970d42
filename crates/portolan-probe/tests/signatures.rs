//! The built-in signatures against answers the zoo's real servers sent (scripts/zoo.sh):
//! what each one names, and that nothing is claimed from an answer that does not say it.

use portolan_probe::{identify, Identity, Signatures};

fn id(probe: &str, data: &[u8]) -> Option<Identity> {
    identify(&Signatures::builtin(), probe, data)
}

/// Service, product and version of a match, as plain strings.
fn spv(i: &Identity) -> (&str, Option<&str>, Option<&str>) {
    (
        i.service.as_str(),
        i.product.as_deref(),
        i.version.as_deref(),
    )
}

#[test]
fn postgresql_on_a_trusting_cluster_tells_its_version() {
    // AuthenticationOk, ParameterStatus messages (cut), ReadyForQuery: PostgreSQL 15.
    let answer = b"R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x16application_name\x00\x00\
S\x00\x00\x00\x19client_encoding\x00UTF8\x00S\x00\x00\x002server_version\x0015.18 (Debian 15.18-0+deb12u1)\x00\
S\x00\x00\x00\x15TimeZone\x00Etc/UTC\x00Z\x00\x00\x00\x05I";
    let pg = id("postgres-startup", answer).unwrap();
    assert_eq!(
        spv(&pg),
        ("postgresql", Some("PostgreSQL DB"), Some("15.18"))
    );
    assert_eq!(pg.info.as_deref(), Some("Debian 15.18-0+deb12u1"));
    assert_eq!(
        pg.cpe.as_deref(),
        Some("cpe:/a:postgresql:postgresql:15.18")
    );
    // A server that wants an MD5 password: PostgreSQL, no version.
    let md5 = id(
        "postgres-startup",
        b"R\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04",
    )
    .unwrap();
    assert_eq!(spv(&md5), ("postgresql", Some("PostgreSQL DB"), None));
    // SCRAM (SASL, code 10) names its mechanisms.
    let sasl = id(
        "postgres-startup",
        b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00",
    )
    .unwrap();
    assert_eq!(sasl.info.as_deref(), Some("password required"));
    // AuthenticationOk alone (the rest not come yet) does not say which version.
    assert!(id("postgres-startup", b"R\x00\x00\x00\x08\x00\x00\x00\x00").is_none());
    // The SSLRequest's one-byte answer still names the service.
    assert_eq!(id("postgres-ssl", b"N").unwrap().service, "postgresql");
}

#[test]
fn mariadb_behind_the_5_5_5_prefix_is_named_with_its_real_version() {
    let hello = b"\x5b\x00\x00\x00\x0a5.5.5-10.11.19-MariaDB-0+deb12u1\x00\x08\x00\x00\x00rest";
    let m = id("banner", hello).unwrap();
    assert_eq!(spv(&m), ("mysql", Some("MariaDB"), Some("10.11.19")));
    // A MySQL handshake is not called MariaDB.
    let my = id("banner", b"\x4a\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00").unwrap();
    assert_eq!(spv(&my), ("mysql", Some("MySQL"), Some("8.0.36")));
}

#[test]
fn mosquitto_tells_its_version_in_sys() {
    let answer =
        b" \x02\x00\x00\x90\x03\x00\x01\x001-\x00\x13$SYS/broker/versionmosquitto version 2.0.11";
    let m = id("mqtt-connect", answer).unwrap();
    assert_eq!(spv(&m), ("mqtt", Some("Mosquitto"), Some("2.0.11")));
    // A broker that refuses anonymous clients: CONNACK "not authorized", and nothing more.
    let refused = id("mqtt-connect", b" \x02\x00\x05").unwrap();
    assert_eq!(spv(&refused), ("mqtt", None, None));
    // Another service's answer is not MQTT.
    assert!(id("mqtt-connect", b"HTTP/1.1 400 Bad Request\r\n\r\n").is_none());
}

#[test]
fn dnsmasq_answers_version_bind() {
    let answer =
        b"\x007pt\x85\x80\x00\x01\x00\x01\x00\x00\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03\
\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00\x00\r\x0cdnsmasq-2.90";
    let d = id("dns-version-bind-tcp", answer).unwrap();
    assert_eq!(spv(&d), ("domain", Some("dnsmasq"), Some("2.90")));
    // A server that refuses the query (REFUSED, no answer) is DNS all the same.
    let refused = b"\x00\x1ept\x81\x05\x00\x01\x00\x00\x00\x00\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03";
    assert_eq!(
        spv(&id("dns-version-bind-tcp", refused).unwrap()),
        ("domain", None, None)
    );
    // Another query id is not our answer.
    assert!(id("dns-version-bind-tcp", b"\x00\x1e\x99\x99\x85\x80").is_none());
}

#[test]
fn node_exporter_by_page_and_by_metrics() {
    let page =
        b"HTTP/1.0 200 OK\r\nContent-Length: 150\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<html>\n\t\t\t<head><title>Node Exporter</title></head>\n";
    let p = id("http-get", page).unwrap();
    assert_eq!(spv(&p), ("http", Some("Prometheus Node Exporter"), None));
    let metrics = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\r\n\
# TYPE node_exporter_build_info gauge\n\
node_exporter_build_info{branch=\"debian/sid\",goarch=\"amd64\",goos=\"linux\",goversion=\"go1.19.8\",revision=\"1.5.0-1+b6\",tags=\"netgo osusergo static_build\",version=\"1.5.0\"} 1\n";
    let m = id("http-metrics", metrics).unwrap();
    assert_eq!(
        spv(&m),
        ("http", Some("Prometheus Node Exporter"), Some("1.5.0"))
    );
    // goversion="..." is not the version.
    let no_version = b"HTTP/1.0 200 OK\r\n\r\nnode_exporter_build_info{goversion=\"go1.19.8\"} 1\n";
    assert!(id("http-metrics", no_version).is_none_or(|i| i.version.is_none()));
}

#[test]
fn web_mail_and_ftp_servers_of_the_zoo() {
    let https = b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\nDate: x\r\nContent-Type: text/html\r\n\r\n\
<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n";
    let n = id("http-get", https).unwrap();
    assert_eq!(spv(&n), ("http", Some("nginx"), Some("1.22.1")));
    assert!(n.info.unwrap().contains("TLS"));
    let apache = id(
        "http-get",
        b"HTTP/1.1 200 OK\r\nDate: x\r\nServer: Apache/2.4.71 (Debian)\r\n\r\n",
    )
    .unwrap();
    assert_eq!(spv(&apache), ("http", Some("Apache httpd"), Some("2.4.71")));
    assert_eq!(apache.info.as_deref(), Some("Debian"));
    let exim = id(
        "banner",
        b"220 zoo.test ESMTP Exim 4.96 Sun, 22 Nov 2026 05:11:51 +0000\r\n",
    )
    .unwrap();
    assert_eq!(spv(&exim), ("smtp", Some("Exim smtpd"), Some("4.96")));
    let imap = id(
        "banner",
        b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n",
    )
    .unwrap();
    assert_eq!(spv(&imap), ("imap", Some("Dovecot imapd"), None));
    let pop = id("banner", b"+OK Dovecot ready.\r\n").unwrap();
    assert_eq!(spv(&pop), ("pop3", Some("Dovecot pop3d"), None));
    let ftp = id("banner", b"220 (vsFTPd 3.0.3)\r\n").unwrap();
    assert_eq!(spv(&ftp), ("ftp", Some("vsftpd"), Some("3.0.3")));
}

#[test]
fn dovecot_waiting_for_its_auth_process_is_still_dovecot() {
    // A busy or just started Dovecot says this first; its real greeting comes later (a CI
    // run read only this line from the zoo's Dovecot and named the port `imap` alone).
    let imap = id(
        "banner",
        b"* OK Waiting for authentication process to respond..\r\n",
    )
    .expect("named");
    assert_eq!(spv(&imap), ("imap", Some("Dovecot imapd"), None));
    let both = id(
        "banner",
        b"* OK Waiting for authentication process to respond..\r\n* OK [CAPABILITY IMAP4rev1 STARTTLS] Dovecot ready.\r\n",
    )
    .expect("named");
    assert_eq!(spv(&both), ("imap", Some("Dovecot imapd"), None));
    let pop = id(
        "banner",
        b"+OK Waiting for authentication process to respond..\r\n",
    )
    .expect("named");
    assert_eq!(spv(&pop), ("pop3", Some("Dovecot pop3d"), None));
}
