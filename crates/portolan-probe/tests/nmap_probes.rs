//! `--nmap-probes`: nmap's service-probe format read into portolan's signatures. Hostile
//! and malformed files give `file:line:column` errors and add nothing; nmap's own file
//! (installed by the nmap package, not bundled) loads and names a real local service.
#![allow(clippy::print_stderr)] // skips and the real file's summary are told on stderr

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port, skip_or_fail, Server};
use portolan_probe::nmap_probes::{parse, NmapError, MAX_FILE};
use portolan_probe::{identify, probe_tcp, Options, Signatures};

const REAL: &str = "/usr/share/nmap/nmap-service-probes";

fn err(text: &[u8]) -> String {
    match parse("t.probes", text) {
        Ok(_) => panic!("{:?} was accepted", String::from_utf8_lossy(text)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_small_file_reads_and_identifies() {
    let text = br"# comment
Exclude T:9100-9107

Probe TCP NULL q||
totalwaitms 6000
match zoo m|^ZOO ([\d.]+) on (\w+)\r\n| p/Zoo server/ v/$1/ i/host $P(2)/ o/Linux/ cpe:/a:example:zoo:$1/a
softmatch zoo m|^ZOO |

Probe TCP Hello q|HELLO\r\n\x00\\| no-payload
rarity 3
ports 7000-7002,7777
sslports 7443
fallback GetRequest
match hello m=^HI (\d+)= v/$1/ h/$1/ d/router/
match hello m|^hi|i p|Hi server|
";
    let (sigs, sum) = parse("t.probes", text).unwrap();
    assert_eq!((sum.probes, sum.matches, sum.soft), (2, 4, 1), "{sum}");
    assert_eq!(sum.skipped_total(), 0);
    let hello = sigs.probes.iter().find(|p| p.name == "nmap:Hello").unwrap();
    assert_eq!(hello.send, b"HELLO\r\n\x00\\");
    assert_eq!(hello.rarity, 3);
    assert_eq!(hello.ports, [7000, 7001, 7002, 7777]);
    // NULL is portolan's banner read.
    let id = identify(&sigs, "banner", b"ZOO 1.2 on kea\r\n").unwrap();
    assert_eq!(id.service, "zoo");
    assert_eq!(id.product.as_deref(), Some("Zoo server"));
    assert_eq!(id.version.as_deref(), Some("1.2"));
    assert_eq!(id.info.as_deref(), Some("host kea; Linux"));
    assert_eq!(id.cpe.as_deref(), Some("cpe:/a:example:zoo:1.2"));
    // The softmatch is tried after the match, and names no version.
    let soft = identify(&sigs, "banner", b"ZOO x\r\n").unwrap();
    assert_eq!((soft.service.as_str(), soft.version), ("zoo", None));
    let id = identify(&sigs, "nmap:Hello", b"HI 42").unwrap();
    assert_eq!(id.version.as_deref(), Some("42"));
    assert_eq!(id.probe, "nmap:Hello");
    // The `i` flag: case-insensitive.
    let id = identify(&sigs, "nmap:Hello", b"hI there").unwrap();
    assert_eq!(id.product.as_deref(), Some("Hi server"));
    // The port hint and rarity order the probes.
    assert_eq!(sigs.active_probes(7001)[0].name, "nmap:Hello");
    assert!(sigs.probes_upto(1, 2).is_empty());
    assert_eq!(sigs.probes_upto(1, 3).len(), 1);
}

#[test]
fn malformed_files_say_where() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"Probe TCP X q|abc\n",
            "t.probes:1:14: unterminated: no closing `|`",
        ),
        (
            b"Probe TCP X q|\\xZZ|\n",
            "t.probes:1:15: `\\x` needs two hex digits",
        ),
        (b"Probe TCP X q|\\x4|\n", "two hex digits"),
        (b"Probe TCP X q|\\q|\n", "unknown escape `\\q`"),
        (b"Probe TCP X q|a\\|\n", "1:16: a payload ends with a lone"),
        (
            b"Probe TCP X q|a|\nmatch x m|a|\n\nFrobnicate 1\n",
            "t.probes:4:1: unknown directive `Frobnicate`",
        ),
        (b"Probe SCTP X q|a|\n", "t.probes:1:7: expected TCP or UDP"),
        (b"Probe TCP X|Y q|a|\n", "t.probes:1:11: a probe name"),
        (b"Probe TCP X\n", "expected the payload"),
        (b"Probe TCP X q|a| trailing\n", "1:18: unexpected text"),
        (
            b"match x m|a|\n",
            "t.probes:1:1: `match` before any Probe line",
        ),
        (b"ports 80\n", "before any Probe"),
        (
            b"Probe TCP X q|a|\nports 80,99999\n",
            "t.probes:2:7: `99999` is not a port",
        ),
        (b"Probe TCP X q|a|\nports 90-80\n", "not a port or a range"),
        (
            b"Probe TCP X q|a|\nrarity 10\n",
            "t.probes:2:8: rarity is a number 1..=9",
        ),
        (b"Probe TCP X q|a|\ntotalwaitms soon\n", "milliseconds"),
        (
            b"Probe TCP X q|a|\nmatch x m|a|q\n",
            "2:13: unknown pattern flag `q`",
        ),
        (
            b"Probe TCP X q|a|\nmatch x m|a| z/b/\n",
            "2:14: unknown version field `z`",
        ),
        (
            b"Probe TCP X q|a|\nmatch x m|a| p/b\n",
            "2:15: unterminated",
        ),
        (
            b"Probe TCP X q|a|\nmatch x m|a| p/b/v/c/\n",
            "expected a space",
        ),
        (b"Probe TCP X q|a|\nmatch x |a|\n", "expected the pattern"),
        (
            b"Probe TCP X q|a|\nProbe TCP X q|b|\n",
            "2:11: probe `nmap:X` is defined twice",
        ),
        (b"Probe TCP X q|a\x00|\n", "t.probes:1:16: a NUL byte"),
        (b"Exclude T:80,U:x\n", "Exclude: `x` is not a port"),
    ];
    for (text, want) in cases {
        let e = err(text);
        assert!(e.contains(want), "{:?}: {e}", String::from_utf8_lossy(text));
        assert!(e.starts_with("t.probes"), "{e}");
    }
    // Escapes in errors stay escaped.
    let e = err(b"\x1b[2J 1\n");
    assert!(!e.chars().any(char::is_control), "{e:?}");
    // A payload over the limit.
    let big = format!("Probe TCP X q|{}|\n", "\\x41".repeat(5000));
    assert!(err(big.as_bytes()).contains("over 4096 bytes"));
}

#[test]
fn matches_portolan_cannot_run_are_skipped_and_counted() {
    let text = r#"Probe TCP X q|a|
match a m|^(a)\1|
match b m|^a(?=b)|
match c m|^a(?<!b)|
match d m|^(| p/x/
match e m|^(a)| v/$10/
match f m|^(a)| v/$2/
match g m|^a| p/x<ESC>y/
match h m|^(a)| p/$I(1,">")/ v/$1/
match k m|^b$| p/B/
"#
    .replace("<ESC>", "\x1b");
    let (sigs, sum) = parse("t.probes", text.as_bytes()).unwrap();
    assert_eq!(sum.matches, 2, "{sum}");
    assert_eq!(sum.skipped_total(), 7, "{sum}");
    assert_eq!(sum.skipped["backreference"], 1);
    assert_eq!(sum.skipped["lookaround"], 2);
    assert_eq!(sum.skipped["unsupported regex"], 1);
    assert_eq!(sum.skipped["template"], 3, "{sum}");
    assert_eq!(sum.dropped_fields, 1);
    assert_eq!(sum.first_reasons.len(), 3);
    assert!(
        sum.first_reasons[0].starts_with("2:10: backreference \\1"),
        "{sum}"
    );
    let shown = sum.to_string();
    assert!(
        shown.contains("7 matches skipped") && shown.contains("2 lookaround"),
        "{shown}"
    );
    assert!(!shown.contains('\n'), "one line: {shown}");
    // $I left the product empty, the version is kept.
    let id = identify(&sigs, "nmap:X", b"a").unwrap();
    assert_eq!((id.product, id.version.as_deref()), (None, Some("a")));
    // `$` is PCRE's: the end, or before a final newline.
    assert!(identify(&sigs, "nmap:X", b"b\n").is_some());
    assert!(identify(&sigs, "nmap:X", b"b\nc").is_none());
}

#[test]
fn hostile_sizes_and_bytes() {
    // Over the size limit: refused before reading it all.
    let dir = std::env::temp_dir().join(format!("portolan-nmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_FILE as u64 + 10).unwrap();
    let mut s = Signatures::builtin();
    let e = s.add_nmap_file(&big).unwrap_err();
    assert!(
        matches!(e, NmapError::File { .. }) && e.to_string().contains("over 16 MiB"),
        "{e}"
    );
    let e = s
        .add_nmap_file(&dir.join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read") && e.contains("absent"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    // Bytes over 0x7f in a pattern are bytes; a raw one is taken as is.
    let (sigs, sum) = parse("t", b"Probe TCP X q|a|\nmatch x m|^\xe9\\xff|\n").unwrap();
    assert_eq!(sum.matches, 1);
    assert!(identify(&sigs, "nmap:X", b"\xe9\xff").is_some());
    // A huge pattern is skipped, not compiled.
    let long = format!("Probe TCP X q|a|\nmatch x m|{}|\n", "a".repeat(5000));
    let (_, sum) = parse("t", long.as_bytes()).unwrap();
    assert_eq!(sum.skipped["too long"], 1);
    // A pattern whose compiled form is too big is skipped too.
    let (_, sum) = parse("t", b"Probe TCP X q|a|\nmatch x m|\\w{1000}{1000}|\n").unwrap();
    assert_eq!(sum.skipped_total(), 1, "{sum}");
}

#[test]
fn an_error_adds_nothing() {
    let mut s = Signatures::builtin();
    let (probes, matches) = (s.probes.len(), s.matches.len());
    let bad = b"Probe TCP A q|a|\nmatch a m|a| p/A/\nProbe TCP B q|b\n";
    assert!(s.add_nmap("t", bad).is_err());
    assert_eq!((s.probes.len(), s.matches.len()), (probes, matches));
    // A good file merges; nmap's NULL joins portolan's banner; a second read is refused.
    let good = b"Probe TCP NULL q||\nmatch zoo m|^ZOO| p/Zoo/\nProbe TCP A q|a|\n";
    let sum = s.add_nmap("t", good).unwrap();
    assert_eq!(sum.probes, 2);
    assert_eq!(s.probes.len(), probes + 1);
    assert_eq!(s.probes.iter().filter(|p| p.name == "banner").count(), 1);
    assert_eq!(identify(&s, "banner", b"ZOO").unwrap().service, "zoo");
    // portolan's own banner signatures are tried first.
    assert_eq!(
        identify(&s, "banner", b"SSH-2.0-OpenSSH_9.2\r\n")
            .unwrap()
            .service,
        "ssh"
    );
    assert!(s
        .add_nmap("t", good)
        .unwrap_err()
        .to_string()
        .contains("defined already"));
}

#[test]
fn nmap_own_file_loads_and_names_a_real_server() {
    if !Path::new(REAL).exists() {
        return skip_or_fail("no /usr/share/nmap/nmap-service-probes: apt-get install nmap");
    }
    let t = Instant::now();
    let mut sigs = Signatures::default();
    let sum = sigs.add_nmap_file(Path::new(REAL)).unwrap();
    eprintln!("{sum} ({:?})", t.elapsed());
    assert!(sum.probes > 100, "{sum}");
    assert!(sum.matches > 5000, "{sum}");
    assert!(
        sum.skipped_total() > 0 && sum.skipped_total() < sum.matches / 5,
        "{sum}"
    );
    assert!(sigs
        .probes
        .iter()
        .all(|p| p.name == "banner" || p.name.starts_with("nmap:")));

    // A real server: Python's http.server on a free loopback port.
    let port = free_port();
    let mut child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let out = child.stdout.take().unwrap();
    let server = Server::new(child);
    // It says "Serving HTTP on ..." when it listens.
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert!(line.contains("Serving HTTP"), "{line}");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let o = Options {
        banner_wait: Duration::from_millis(500),
        read_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let r = probe_tcp(addr, None, &sigs, &o);
    drop(server);
    let Some(id) = r.identity.clone() else {
        panic!("not named: {r:?}");
    };
    eprintln!("{id:?}");
    assert_eq!(id.service, "http");
    assert!(id.probe.starts_with("nmap:"), "{id:?}");
    assert!(id.product.unwrap_or_default().contains("SimpleHTTPServer"));
    assert!(id.version.is_some_and(|v| v.starts_with("0.")));
}
