//! The built-in service signatures (data/signatures/services.toml), each checked against an
//! answer built here from the protocol's own format (the spec section is named at each
//! builder), and against real servers from Debian's packages on loopback where there is
//! one: OpenLDAP's slapd and prometheus-node-exporter.
#![allow(clippy::print_stderr)] // skips and the real file's summary are told on stderr

use std::fmt::Write as _;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{free_port, scratch, skip_or_fail, wait_listening, Server};
use portolan_probe::sig::DEFAULT_INTENSITY;
use portolan_probe::{identify, probe_tcp, Identity, Options, Signatures};

fn id(probe: &str, data: &[u8]) -> Identity {
    identify(&Signatures::builtin(), probe, data)
        .unwrap_or_else(|| panic!("{probe}: no match for {:?}", String::from_utf8_lossy(data)))
}

fn payload(probe: &str) -> Vec<u8> {
    let sigs = Signatures::builtin();
    sigs.probes
        .iter()
        .find(|p| p.name == probe)
        .unwrap()
        .send
        .clone()
}

// --- MongoDB: Wire Protocol (MsgHeader, OP_MSG kind-0 section) and BSON 1.1 -----------------

fn bson(elements: &[(u8, &str, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, name, value) in elements {
        body.push(*kind);
        body.extend(name.as_bytes());
        body.push(0);
        body.extend(value);
    }
    let mut doc = u32::try_from(body.len() + 5)
        .unwrap()
        .to_le_bytes()
        .to_vec();
    doc.extend(body);
    doc.push(0);
    doc
}

fn bson_str(s: &str) -> Vec<u8> {
    let mut v = u32::try_from(s.len() + 1).unwrap().to_le_bytes().to_vec();
    v.extend(s.as_bytes());
    v.push(0);
    v
}

fn op_msg(response_to: u32, doc: &[u8]) -> Vec<u8> {
    let len = u32::try_from(16 + 4 + 1 + doc.len()).unwrap();
    let mut m = Vec::new();
    for v in [len, 7, response_to, 2013] {
        m.extend(v.to_le_bytes());
    }
    m.extend(0u32.to_le_bytes());
    m.push(0);
    m.extend(doc);
    m
}

#[test]
fn mongodb_buildinfo() {
    // Our probe is itself a well-formed OP_MSG {buildInfo: 1, $db: "admin"}.
    let sent = payload("mongodb-buildinfo");
    let doc = bson(&[
        (0x10, "buildInfo", 1i32.to_le_bytes().to_vec()),
        (0x02, "$db", bson_str("admin")),
    ]);
    assert_eq!(
        sent,
        op_msg(0, &doc)
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 4 { 1 } else { *b })
            .collect::<Vec<_>>()
    );
    let answer = op_msg(
        1,
        &bson(&[
            (0x02, "version", bson_str("7.0.2")),
            (
                0x02,
                "gitVersion",
                bson_str("02b3c655e1302209ef046da6ba3ef6749dd0b62a"),
            ),
            (0x01, "ok", 1f64.to_le_bytes().to_vec()),
        ]),
    );
    let m = id("mongodb-buildinfo", &answer);
    assert_eq!(m.service, "mongodb");
    assert_eq!(
        (m.product.as_deref(), m.version.as_deref()),
        (Some("MongoDB"), Some("7.0.2"))
    );
    // An error document (no version) still names the service.
    let refused = op_msg(
        1,
        &bson(&[
            (0x01, "ok", 0f64.to_le_bytes().to_vec()),
            (0x02, "errmsg", bson_str("no")),
        ]),
    );
    let m = id("mongodb-buildinfo", &refused);
    assert_eq!((m.service.as_str(), m.version), ("mongodb", None));
}

// --- AMQP 0-9-1: 2.3.5 frame format, 4.2.3 field tables, Connection.Start (class 10, 10) -----

fn amqp_start(props: &[(&str, &str)]) -> Vec<u8> {
    let mut table = Vec::new();
    // A nested table first, as RabbitMQ sends `capabilities`.
    table.push(12);
    table.extend(b"capabilities");
    table.push(b'F');
    table.extend(0u32.to_be_bytes());
    for (k, v) in props {
        table.push(u8::try_from(k.len()).unwrap());
        table.extend(k.as_bytes());
        table.push(b'S');
        table.extend(u32::try_from(v.len()).unwrap().to_be_bytes());
        table.extend(v.as_bytes());
    }
    let mut method = vec![0, 10, 0, 10, 0, 9];
    method.extend(u32::try_from(table.len()).unwrap().to_be_bytes());
    method.extend(table);
    method.extend(bson_str_be("PLAIN AMQPLAIN"));
    method.extend(bson_str_be("en_US"));
    let mut frame = vec![1, 0, 0];
    frame.extend(u32::try_from(method.len()).unwrap().to_be_bytes());
    frame.extend(method);
    frame.push(0xce);
    frame
}

fn bson_str_be(s: &str) -> Vec<u8> {
    let mut v = u32::try_from(s.len()).unwrap().to_be_bytes().to_vec();
    v.extend(s.as_bytes());
    v
}

#[test]
fn amqp_connection_start() {
    assert_eq!(payload("amqp-header"), b"AMQP\x00\x00\x09\x01");
    let start = amqp_start(&[
        ("cluster_name", "rabbit@kea"),
        ("copyright", "Copyright (c) 2007-2023 VMware, Inc."),
        ("platform", "Erlang/OTP 25.3"),
        ("product", "RabbitMQ"),
        ("version", "3.12.1"),
    ]);
    let m = id("amqp-header", &start);
    assert_eq!(m.service, "amqp");
    assert_eq!(
        (m.product.as_deref(), m.version.as_deref()),
        (Some("RabbitMQ"), Some("3.12.1"))
    );
    // Without a version property.
    let m = id("amqp-header", &amqp_start(&[("product", "qpid")]));
    assert_eq!((m.product.as_deref(), m.version), (Some("qpid"), None));
    // 4.2.2: a server of another version answers its own header and closes.
    assert_eq!(
        id("amqp-header", b"AMQP\x00\x01\x00\x00").info.as_deref(),
        Some("AMQP 1.0")
    );
}

// --- LDAP: RFC 4511 4.5.2 SearchResultEntry / SearchResultDone, BER (X.690) --------------------

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = value.len();
    if n < 128 {
        v.push(u8::try_from(n).unwrap());
    } else {
        // Long form, as servers use for big entries.
        v.push(0x82);
        v.extend(u16::try_from(n).unwrap().to_be_bytes());
    }
    v.extend(value);
    v
}

fn root_dse(attrs: &[(&str, &[&str])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (name, values) in attrs {
        let set: Vec<u8> = values
            .iter()
            .flat_map(|v| tlv(0x04, v.as_bytes()))
            .collect();
        list.extend(tlv(
            0x30,
            &[tlv(0x04, name.as_bytes()), tlv(0x31, &set)].concat(),
        ));
    }
    let entry = tlv(0x64, &[tlv(0x04, b""), tlv(0x30, &list)].concat());
    let mut out = tlv(0x30, &[tlv(0x02, &[1]), entry].concat());
    let done = tlv(
        0x65,
        &[tlv(0x0a, &[0]), tlv(0x04, b""), tlv(0x04, b"")].concat(),
    );
    out.extend(tlv(0x30, &[tlv(0x02, &[1]), done].concat()));
    out
}

#[test]
fn ldap_root_dse() {
    let ds389 = root_dse(&[
        ("vendorName", &["389 Project"]),
        ("vendorVersion", &["389-Directory/2.3.1 B2023.123.0000"]),
        ("supportedLDAPVersion", &["2", "3"]),
    ]);
    let m = id("ldap-rootdse", &ds389);
    assert_eq!(m.service, "ldap");
    assert_eq!(m.product.as_deref(), Some("389 Project"));
    assert_eq!(
        m.version.as_deref(),
        Some("389-Directory/2.3.1 B2023.123.0000")
    );
    // vendorVersion last: its value ends at the SearchResultDone message.
    let apacheds = root_dse(&[
        ("namingContexts", &["ou=system"]),
        ("vendorName", &["Apache Software Foundation"]),
        ("vendorVersion", &["2.0.0.AM26"]),
    ]);
    let m = id("ldap-rootdse", &apacheds);
    assert_eq!(m.product.as_deref(), Some("Apache Software Foundation"));
    assert_eq!(m.version.as_deref(), Some("2.0.0.AM26"));
    // What slapd 2.5 really sends (see the real test below): no vendor attributes, the
    // object class OpenLDAProotDSE.
    let openldap = root_dse(&[
        ("objectClass", &["top", "OpenLDAProotDSE"]),
        ("namingContexts", &["dc=portolan,dc=test"]),
        ("supportedLDAPVersion", &["3"]),
    ]);
    let m = id("ldap-rootdse", &openldap);
    assert_eq!((m.product.as_deref(), m.version), (Some("OpenLDAP"), None));
    // A big entry (long-form lengths), any other directory.
    let long = "x".repeat(300);
    let m = id(
        "ldap-rootdse",
        &root_dse(&[("namingContexts", &[long.as_str()])]),
    );
    assert_eq!((m.service.as_str(), m.product), ("ldap", None));
}

// --- SMB2: MS-SMB2 2.1 transport, 2.2.1 header, 2.2.4 NEGOTIATE Response ------------------------

fn smb2_negotiate_response(dialect: u16) -> Vec<u8> {
    let mut h = b"\xfeSMB".to_vec();
    h.extend(64u16.to_le_bytes()); // StructureSize
    h.extend([0; 2]); // CreditCharge
    h.extend(0u32.to_le_bytes()); // Status: success
    h.extend(0u16.to_le_bytes()); // Command: NEGOTIATE
    h.extend(1u16.to_le_bytes()); // CreditResponse
    h.extend(1u32.to_le_bytes()); // Flags: SERVER_TO_REDIR
    h.extend([0; 4 + 8 + 4 + 4 + 8 + 16]);
    assert_eq!(h.len(), 64);
    let mut body = 65u16.to_le_bytes().to_vec();
    body.extend(1u16.to_le_bytes()); // SecurityMode
    body.extend(dialect.to_le_bytes());
    body.extend([0; 2 + 16 + 4 + 4 + 4 + 4 + 8 + 8 + 2 + 2 + 4]);
    let mut msg = h;
    msg.extend(body);
    let mut out = (u32::try_from(msg.len()).unwrap()).to_be_bytes().to_vec();
    out.extend(msg);
    out
}

#[test]
fn smb2_negotiate() {
    let sent = payload("smb2-negotiate");
    assert_eq!(sent.len(), 112);
    assert_eq!(&sent[4..8], b"\xfeSMB");
    for (dialect, info) in [
        (0x0202, "2.0.2"),
        (0x0210, "2.1"),
        (0x0300, "3.0"),
        (0x0302, "3.0.2"),
    ] {
        let m = id("smb2-negotiate", &smb2_negotiate_response(dialect));
        assert_eq!(m.service, "smb");
        assert_eq!(
            m.info.as_deref(),
            Some(format!("SMB dialect {info}").as_str())
        );
    }
}

// --- RDP: MS-RDPBCGR 2.2.1.2 Server X.224 Connection Confirm PDU -------------------------------

#[test]
fn rdp_connection_confirm() {
    assert_eq!(payload("rdp-negotiate").len(), 19);
    // Flags 0x0b: no reserved 0x04 bit, which Windows 8 / Server 2012 and later set (see
    // below): any RDP server.
    let confirm_with = |kind: u8, flags: u8, value: u32| {
        let mut v = vec![
            3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, kind, flags, 8, 0,
        ];
        v.extend(value.to_le_bytes());
        v
    };
    let confirm = |kind: u8, value: u32| confirm_with(kind, 0x0b, value);
    // Windows' flags (0x1f) name it.
    let windows = id("rdp-negotiate", &confirm_with(2, 0x1f, 2));
    assert_eq!(
        windows.product.as_deref(),
        Some("Microsoft Terminal Services")
    );
    assert_eq!(
        id("rdp-negotiate", &confirm(2, 2)).info.as_deref(),
        Some("CredSSP (NLA) security")
    );
    assert_eq!(
        id("rdp-negotiate", &confirm(2, 1)).info.as_deref(),
        Some("TLS security")
    );
    assert_eq!(
        id("rdp-negotiate", &confirm(3, 5)).info.as_deref(),
        Some("negotiation refused")
    );
    // An old server: a bare Connection Confirm.
    assert_eq!(
        id(
            "rdp-negotiate",
            &[3, 0, 0, 11, 6, 0xd0, 0, 0, 0x12, 0x34, 0]
        )
        .service,
        "rdp"
    );
}

// --- HTTP APIs: Docker Engine API GET /version, Kubernetes /version, Elasticsearch GET / -----

fn http(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn docker_and_kubernetes_version() {
    let docker = http(
        "200 OK",
        "Api-Version: 1.43\r\nContent-Type: application/json\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/24.0.7 (linux)\r\n",
        r#"{"Platform":{"Name":"Docker Engine - Community"},"Components":[{"Name":"Engine","Version":"24.0.7","Details":{"ApiVersion":"1.43"}}],"Version":"24.0.7","ApiVersion":"1.43","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"}"#,
    );
    let m = id("http-version", &docker);
    assert_eq!(
        (m.service.as_str(), m.product.as_deref()),
        ("docker", Some("Docker"))
    );
    assert_eq!(
        (m.version.as_deref(), m.info.as_deref()),
        (Some("24.0.7"), Some("API 1.43"))
    );
    let k8s = http(
        "200 OK",
        "Content-Type: application/json\r\n",
        "{\n  \"major\": \"1\",\n  \"minor\": \"28\",\n  \"gitVersion\": \"v1.28.2\",\n  \"platform\": \"linux/amd64\"\n}",
    );
    let m = id("http-version", &k8s);
    assert_eq!(
        (m.service.as_str(), m.version.as_deref()),
        ("kubernetes", Some("1.28.2"))
    );
    let refused = http(
        "403 Forbidden",
        "Content-Type: application/json\r\n",
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"reason\":\"Forbidden\",\"code\":403}",
    );
    for probe in ["http-version", "http-get"] {
        let m = id(probe, &refused);
        assert_eq!(
            (m.service.as_str(), m.info.as_deref()),
            ("kubernetes", Some("authentication required"))
        );
    }
}

#[test]
fn elasticsearch_and_opensearch() {
    let es = http(
        "200 OK",
        "X-elastic-product: Elasticsearch\r\ncontent-type: application/json\r\n",
        "{\n  \"name\" : \"kea\",\n  \"cluster_name\" : \"zoo\",\n  \"cluster_uuid\" : \"x\",\n  \"version\" : {\n    \"number\" : \"8.11.1\",\n    \"build_flavor\" : \"default\"\n  },\n  \"tagline\" : \"You Know, for Search\"\n}\n",
    );
    // A match in services.toml for web.toml's probe: it beats web.toml's catch-all.
    let m = id("http-get", &es);
    assert_eq!(
        (m.service.as_str(), m.product.as_deref()),
        ("elasticsearch", Some("Elasticsearch"))
    );
    assert_eq!(
        (m.version.as_deref(), m.info.as_deref()),
        (Some("8.11.1"), Some("cluster zoo"))
    );
    let os = http(
        "200 OK",
        "content-type: application/json; charset=UTF-8\r\n",
        "{\n  \"name\" : \"n1\",\n  \"cluster_name\" : \"opensearch\",\n  \"version\" : {\n    \"distribution\" : \"opensearch\",\n    \"number\" : \"2.11.0\"\n  },\n  \"tagline\" : \"The OpenSearch Project: https://opensearch.org/\"\n}\n",
    );
    let m = id("http-get", &os);
    assert_eq!(
        (m.product.as_deref(), m.version.as_deref()),
        (Some("OpenSearch"), Some("2.11.0"))
    );
    // Security on: 401, and the product header.
    let locked = http(
        "401 Unauthorized",
        "WWW-Authenticate: Basic realm=\"security\" charset=\"UTF-8\"\r\nX-elastic-product: Elasticsearch\r\n",
        "{}",
    );
    let m = id("http-get", &locked);
    assert_eq!(
        (m.service.as_str(), m.info.as_deref()),
        ("elasticsearch", Some("HTTP status 401"))
    );
    // A plain page stays plain HTTP.
    assert_eq!(id("http-get", &http("200 OK", "", "hello")).service, "http");
}

// --- Prometheus: the text exposition format ------------------------------------------------

#[test]
fn prometheus_build_info() {
    let metrics = http(
        "200 OK",
        "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n",
        "# HELP go_build_info Build information about the main Go module.\n# TYPE go_build_info gauge\ngo_build_info{checksum=\"\",path=\"x\",version=\"(devel)\"} 1\n# HELP node_exporter_build_info A metric with a constant '1' value.\n# TYPE node_exporter_build_info gauge\nnode_exporter_build_info{branch=\"\",goarch=\"amd64\",goos=\"linux\",goversion=\"go1.19.8\",revision=\"\",tags=\"\",version=\"1.5.0\"} 1\n",
    );
    let m = id("http-metrics", &metrics);
    assert_eq!(
        (m.product.as_deref(), m.version.as_deref()),
        (Some("Prometheus Node Exporter"), Some("1.5.0"))
    );
    let bare = http(
        "200 OK",
        "",
        "# HELP up whether up\n# TYPE up gauge\nup 1\n",
    );
    let m = id("http-metrics", &bare);
    assert_eq!(
        (m.info.as_deref(), m.product),
        (Some("Prometheus metrics"), None)
    );
}

// --- probe cost ------------------------------------------------------------------------------

#[test]
fn rare_probes_only_where_they_fit() {
    let sigs = Signatures::builtin();
    let names =
        |v: Vec<&portolan_probe::Probe>| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let unknown = names(sigs.active_probes(31337));
    assert_eq!(unknown[0], "http-get");
    // Few enough that a silent port costs at most two read timeouts: the first probe
    // alone, then the others in one round of the pool of 24 in flight (PARALLEL_PROBES).
    assert!(unknown.len() <= 1 + 24, "{unknown:?}");
    for rare in [
        "smb2-negotiate",
        "ldap-rootdse",
        "mongodb-buildinfo",
        "rdp-negotiate",
    ] {
        assert!(
            !unknown.contains(&rare.to_owned()),
            "{rare} on any port: {unknown:?}"
        );
    }
    assert!(sigs
        .active_probes(31337)
        .iter()
        .all(|p| p.rarity <= DEFAULT_INTENSITY));
    // Rarity order, then load order.
    let all = sigs.probes_upto(31337, 9);
    assert!(all.windows(2).all(|w| w[0].rarity <= w[1].rarity));
    assert!(all.len() > unknown.len());
    assert!(sigs.probes_upto(31337, 0).is_empty());
    for (port, first) in [
        (27017, "mongodb-buildinfo"),
        (389, "ldap-rootdse"),
        (445, "smb2-negotiate"),
        (3389, "rdp-negotiate"),
        (5672, "amqp-header"),
        (9100, "http-metrics"),
    ] {
        assert_eq!(sigs.active_probes(port)[0].name, first);
    }
    // Port hints beat rarity.
    assert_eq!(sigs.probes_upto(445, 0)[0].name, "smb2-negotiate");
}

// --- real servers on loopback -------------------------------------------------------------------

fn opts() -> Options {
    Options {
        banner_wait: Duration::from_millis(500),
        read_timeout: Duration::from_secs(2),
        ..Options::default()
    }
}

#[test]
fn real_slapd_is_openldap() {
    let slapd = Path::new("/usr/sbin/slapd");
    if !slapd.exists() {
        return skip_or_fail("no /usr/sbin/slapd: apt-get install slapd");
    }
    let dir = scratch("slapd");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let conf = format!(
        "include /etc/ldap/schema/core.schema\npidfile {d}/slapd.pid\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\nsuffix \"dc=portolan,dc=test\"\ndirectory {d}/db\n",
        d = dir.display()
    );
    std::fs::write(dir.join("slapd.conf"), conf).unwrap();
    // Port 389 would be hinted: a free port shows that LDAP is asked on any port too
    // (ldap-search-rootdse, rarity 5; ldap-rootdse itself waits for its own port).
    let port = free_port();
    let mut child = Command::new(slapd)
        .args(["-h", &format!("ldap://127.0.0.1:{port}/"), "-f"])
        .arg(dir.join("slapd.conf"))
        .args(["-d", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    if !wait_listening(addr, &mut child) {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("slapd did not listen: {err}");
    }
    let server = Server::with_dir(child, dir);
    let mut sigs = Signatures::builtin();
    let anywhere = probe_tcp(addr, None, &sigs, &opts()).identity;
    assert!(
        anywhere
            .as_ref()
            .is_some_and(|i| i.service == "ldap" && i.probe != "ldap-rootdse"),
        "{anywhere:?}"
    );
    // With the port named by the probe (as 389 is), slapd is named.
    sigs.probes
        .iter_mut()
        .find(|p| p.name == "ldap-rootdse")
        .unwrap()
        .ports
        .push(port);
    let r = probe_tcp(addr, None, &sigs, &opts());
    drop(server);
    let id = r
        .identity
        .unwrap_or_else(|| panic!("slapd not named: {:?}", r.banner));
    assert_eq!(id.service, "ldap");
    assert_eq!(id.product.as_deref(), Some("OpenLDAP"));
    // OpenLDAP does not announce its version (no vendorVersion in its root DSE).
    assert_eq!(id.version, None);
    assert_eq!(id.probe, "ldap-rootdse");
}

#[test]
fn real_node_exporter() {
    let bin = Path::new("/usr/bin/prometheus-node-exporter");
    if !bin.exists() {
        return skip_or_fail(
            "no prometheus-node-exporter: apt-get install prometheus-node-exporter",
        );
    }
    let dir = scratch("nodeexp");
    let port = free_port();
    let mut child = Command::new(bin)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--collector.disable-defaults", "--collector.loadavg"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        wait_listening(addr, &mut child),
        "node exporter did not listen"
    );
    let server = Server::with_dir(child, dir);
    let mut sigs = Signatures::builtin();
    sigs.probes
        .iter_mut()
        .find(|p| p.name == "http-metrics")
        .unwrap()
        .ports
        .push(port);
    let r = probe_tcp(addr, None, &sigs, &opts());
    drop(server);
    let id = r
        .identity
        .unwrap_or_else(|| panic!("not named: {:?}", r.banner));
    assert_eq!(id.probe, "http-metrics");
    assert_eq!(id.product.as_deref(), Some("Prometheus Node Exporter"));
    assert!(id.version.is_some_and(|v| v.starts_with("1.")));
}

/// Whether `bin` is installed (scripts/test.sh installs samba and xrdp); without it the
/// test skips, except in CI where that is a failure.
fn installed_or_skip(bin: &str) -> bool {
    let there = Path::new(bin).exists();
    if !there {
        skip_or_fail(&format!("no {bin} (scripts/test.sh installs it)"));
    }
    there
}

/// Starts `cmd`, waits until `port` listens on loopback, then probes it with `probe`
/// named for the port (as 445 and 3389 are).
/// Starts `cmd` (a real server on `port`), probes it with `probe` naming the port, and
/// returns what named it: `named_by` must be the probe that did (the hint, or a follow-up).
fn probe_real(
    mut cmd: Command,
    dir: std::path::PathBuf,
    port: u16,
    probe: &str,
    named_by: &str,
) -> Identity {
    // Their own process group: a server that signals its group on exit (smbd does) must
    // not reach the test runner.
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_listening(addr, &mut child), "{cmd:?} did not listen");
    let server = Server::with_dir(child, dir);
    let mut sigs = Signatures::builtin();
    sigs.probes
        .iter_mut()
        .find(|p| p.name == probe)
        .unwrap()
        .ports
        .push(port);
    let r = probe_tcp(addr, None, &sigs, &opts());
    drop(server);
    let id = r
        .identity
        .unwrap_or_else(|| panic!("not named: {:?}", r.banner));
    assert_eq!(id.probe, named_by);
    id
}

#[test]
fn real_samba_speaks_smb2() {
    if !installed_or_skip("/usr/sbin/smbd") {
        return;
    }
    let dir = scratch("smbd");
    let port = free_port();
    let mut conf = format!(
        "[global]\nsmb ports = {port}\ninterfaces = 127.0.0.1\nbind interfaces only = yes\n\
         server role = standalone server\ndisable netbios = yes\nlog file = {d}/log\n",
        d = dir.display()
    );
    for (key, sub) in [
        ("private dir", "priv"),
        ("lock directory", "lock"),
        ("state directory", "state"),
        ("cache directory", "cache"),
        ("pid directory", "pid"),
        ("ncalrpc dir", "ncalrpc"),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        let _ = writeln!(conf, "{key} = {}/{sub}", dir.display());
    }
    std::fs::write(dir.join("smb.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/smbd");
    cmd.args(["--foreground", "--no-process-group", "-s"])
        .arg(dir.join("smb.conf"));
    let id = probe_real(cmd, dir, port, "smb2-negotiate", "smb2-negotiate");
    assert_eq!(id.service, "smb");
    // Samba 4.17 picks the highest dialect offered: 3.0.2.
    assert!(id.info.is_some_and(|i| i.starts_with("SMB dialect 3.")));
}

#[test]
fn real_xrdp_confirms_the_connection() {
    if !installed_or_skip("/usr/sbin/xrdp") {
        return;
    }
    let dir = scratch("xrdp");
    let port = free_port();
    let ini = std::fs::read_to_string("/etc/xrdp/xrdp.ini").unwrap();
    let ini = ini.replacen("\nport=3389", &format!("\nport=tcp://127.0.0.1:{port}"), 1);
    assert!(
        ini.contains(&format!("127.0.0.1:{port}")),
        "xrdp.ini has no port=3389"
    );
    std::fs::write(dir.join("xrdp.ini"), ini).unwrap();
    // xrdp's socket directory (its package makes it at boot).
    let _ = std::fs::create_dir_all("/run/xrdp/sockdir");
    let mut cmd = Command::new("/usr/sbin/xrdp");
    cmd.arg("-n").arg("-c").arg(dir.join("xrdp.ini"));
    // The negotiation names RDP (xrdp's Connection Confirm is any RDP server's); the
    // follow-up's empty X.224 data packet gets xrdp's own MCS disconnect: the product.
    let id = probe_real(cmd, dir, port, "rdp-negotiate", "rdp-rdpsec-x224");
    assert_eq!(id.service, "rdp");
    assert_eq!(id.product.as_deref(), Some("xrdp"));
    // We ask for TLS or CredSSP; xrdp (no NLA) picks TLS: the first answer's info stays.
    assert_eq!(id.info.as_deref(), Some("TLS security"));
}
