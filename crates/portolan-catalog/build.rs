//! Compiles the IANA registry (data/iana/) and the curated notes (data/notes.toml) into Rust
//! statics, so the binary reads no file at run time and a lookup is a binary search.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let iana = Path::new(&dir).join("data/iana/service-names-port-numbers.csv");
    let notes = Path::new(&dir).join("data/notes.toml");
    let top = Path::new(&dir).join("data/top-ports.tsv");
    println!("cargo::rerun-if-changed={}", iana.display());
    println!("cargo::rerun-if-changed={}", notes.display());
    println!("cargo::rerun-if-changed={}", top.display());

    let mut out = String::with_capacity(4 << 20);
    gen_iana(&iana, &mut out);
    gen_notes(&notes, &mut out);
    gen_top(&top, &mut out);
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("catalog.rs");
    std::fs::write(dest, out).expect("write generated catalog");
}

fn proto_expr(p: &str) -> &'static str {
    match p {
        "tcp" => "Some(Protocol::Tcp)",
        "udp" => "Some(Protocol::Udp)",
        "sctp" => "Some(Protocol::Sctp)",
        "dccp" => "Some(Protocol::Dccp)",
        "" => "None",
        other => panic!("IANA registry: unknown transport protocol {other:?}"),
    }
}

fn clean(s: &str) -> String {
    // Registry text sometimes carries line breaks inside quoted fields; fold them.
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn gen_iana(path: &Path, out: &mut String) {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut entries = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap_or_else(|e| panic!("IANA registry record {i}: {e}"));
        let name = rec.get(0).unwrap_or("").trim().to_string();
        let port = rec.get(1).unwrap_or("").trim();
        let proto = rec.get(2).unwrap_or("").trim().to_ascii_lowercase();
        let (start, end): (Option<u16>, Option<u16>) = if port.is_empty() {
            (None, None)
        } else if let Some((a, b)) = port.split_once('-') {
            (a.trim().parse().ok(), b.trim().parse().ok())
        } else {
            let p = port.parse().ok();
            (p, p)
        };
        assert!(
            port.is_empty() || (start.is_some() && end.is_some()),
            "IANA registry record {i}: bad port {port:?}"
        );
        entries.push((
            name,
            start,
            end,
            proto,
            clean(rec.get(3).unwrap_or("")),
            clean(rec.get(8).unwrap_or("")),
            clean(rec.get(10).unwrap_or("")),
            clean(rec.get(11).unwrap_or("")),
        ));
    }
    // Stable order: by start port, registry order within a port; name-only entries last.
    entries.sort_by_key(|e| e.1.map_or(u32::MAX, u32::from));

    out.push_str("pub(crate) static ASSIGNMENTS: &[Assignment] = &[\n");
    for (name, start, end, proto, desc, reference, unauth, notes) in &entries {
        let ports = match (start, end) {
            (Some(s), Some(e)) => format!("Some(({s}, {e}))"),
            _ => "None".to_string(),
        };
        writeln!(
            out,
            "Assignment{{name:{name:?},ports:{ports},proto:{},description:{desc:?},reference:{reference:?},unauthorized_use:{unauth:?},notes:{notes:?}}},",
            proto_expr(proto)
        )
        .unwrap();
    }
    out.push_str("];\n");

    // Service name per single port and protocol: the first named entry in registry order,
    // which is the primary name (`http` for 80, not its alias `www`).
    for (proto, ident) in [
        ("tcp", "TCP_NAMES"),
        ("udp", "UDP_NAMES"),
        ("sctp", "SCTP_NAMES"),
        ("dccp", "DCCP_NAMES"),
    ] {
        let mut by_port: BTreeMap<u16, usize> = BTreeMap::new();
        let mut ranges: Vec<(u16, u16, usize)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.3 != proto || e.0.is_empty() {
                continue;
            }
            match (e.1, e.2) {
                (Some(s), Some(t)) if s == t => {
                    by_port.entry(s).or_insert(i);
                }
                (Some(s), Some(t)) => ranges.push((s, t, i)),
                _ => {}
            }
        }
        writeln!(out, "pub(crate) static {ident}: &[(u16, u32)] = &[").unwrap();
        for (p, i) in &by_port {
            write!(out, "({p},{i}),").unwrap();
        }
        out.push_str("];\n");
        writeln!(
            out,
            "pub(crate) static {ident}_RANGES: &[(u16, u16, u32)] = &["
        )
        .unwrap();
        for (s, t, i) in &ranges {
            write!(out, "({s},{t},{i}),").unwrap();
        }
        out.push_str("];\n");
    }

    // Name index, lower-cased and sorted, for exact lookups by service name.
    let mut names: Vec<(String, usize)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.0.is_empty())
        .map(|(i, e)| (e.0.to_ascii_lowercase(), i))
        .collect();
    names.sort();
    out.push_str("pub(crate) static NAME_INDEX: &[(&str, u32)] = &[\n");
    for (n, i) in &names {
        write!(out, "({n:?},{i}),").unwrap();
    }
    out.push_str("];\n");
}

fn gen_notes(path: &Path, out: &mut String) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let notes = doc
        .get("note")
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{}: no [[note]] entries", path.display()));
    let mut rows = Vec::new();
    for (i, n) in notes.iter().enumerate() {
        let t = n
            .as_table()
            .unwrap_or_else(|| panic!("note {i} is not a table"));
        let s = |k: &str| -> String {
            t.get(k)
                .and_then(toml::Value::as_str)
                .unwrap_or_else(|| panic!("note {i}: missing string `{k}`"))
                .to_string()
        };
        let port = t
            .get("port")
            .and_then(toml::Value::as_integer)
            .filter(|p| (1..=65535).contains(p))
            .unwrap_or_else(|| panic!("note {i}: `port` must be 1..=65535"));
        let proto = match s("proto").as_str() {
            "tcp" => "NoteProto::Tcp",
            "udp" => "NoteProto::Udp",
            "tcp+udp" => "NoteProto::Both",
            p => panic!("note {i}: bad proto {p:?}"),
        };
        let exposure = match s("exposure").as_str() {
            "internet-ok" => "Advice::InternetOk",
            "restricted" => "Advice::Restricted",
            "never" => "Advice::Never",
            e => panic!("note {i}: bad exposure {e:?}"),
        };
        let cleartext = t
            .get("cleartext")
            .and_then(toml::Value::as_bool)
            .unwrap_or_else(|| panic!("note {i}: missing bool `cleartext`"));
        let aliases: Vec<String> = t
            .get("aliases")
            .and_then(toml::Value::as_array)
            .unwrap_or_else(|| panic!("note {i}: missing `aliases`"))
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap_or_else(|| panic!("note {i}: alias not a string"))
                    .to_ascii_lowercase()
            })
            .collect();
        rows.push((port, format!(
            "Note{{port:{port},proto:{proto},service:{:?},title:{:?},aliases:&{aliases:?},usual:{:?},cleartext:{cleartext},exposure:{exposure},risk:{:?}}},",
            s("service").to_ascii_lowercase(),
            s("title"),
            s("usual"),
            s("risk"),
        )));
    }
    rows.sort_by_key(|r| r.0);
    out.push_str("pub(crate) static NOTES: &[Note] = &[\n");
    for (_, r) in rows {
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str("];\n");
}

/// `top-ports.tsv`: rank, port, proto, tier, service; ranks contiguous per protocol.
fn gen_top(path: &Path, out: &mut String) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("rank\tport\tproto\ttier\tservice"),
        "{}: header",
        path.display()
    );
    let (mut tcp, mut udp): (Vec<u16>, Vec<u16>) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "{}:{}: five fields", path.display(), i + 2);
        let rank: usize = f[0]
            .parse()
            .unwrap_or_else(|_| panic!("{}:{}: rank", path.display(), i + 2));
        let port: u16 = f[1]
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| panic!("{}:{}: port", path.display(), i + 2));
        let list = match f[2] {
            "tcp" => &mut tcp,
            "udp" => &mut udp,
            p => panic!("{}:{}: proto {p:?}", path.display(), i + 2),
        };
        assert_eq!(
            rank,
            list.len() + 1,
            "{}:{}: ranks must be contiguous",
            path.display(),
            i + 2
        );
        list.push(port);
    }
    for (name, list) in [("TOP_TCP", tcp), ("TOP_UDP", udp)] {
        writeln!(out, "pub(crate) static {name}: &[u16] = &{list:?};").unwrap();
    }
}
