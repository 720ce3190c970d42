//! `portolan audit` findings as CI systems read them: SARIF 2.1.0 (code-scanning UIs) and
//! JUnit XML (test-report UIs). Both are built from the findings alone; every string in a
//! finding is already escaped for a terminal, and XML text is escaped here once more.

use portolan_audit::{Finding, Severity};
use std::fmt::Write as _;

use serde_json::{json, Value};

/// SARIF level for a severity: error for high and critical, warning for medium, note below.
fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// Where a finding is: the socket, as a logical location (there is no source file).
fn location(f: &Finding) -> Option<String> {
    f.socket.as_ref().map(|s| match s.addr {
        std::net::IpAddr::V6(v6) => format!("{}/[{v6}]:{}", s.proto.as_str(), s.port),
        ip @ std::net::IpAddr::V4(_) => format!("{}/{ip}:{}", s.proto.as_str(), s.port),
    })
}

/// A SARIF 2.1.0 log with one run: one rule per finding id, one result per finding.
/// Findings a policy exception accepted carry a suppression with its reason.
pub fn sarif(found: &[Finding], policy_uri: Option<&str>) -> Value {
    let mut rules: Vec<Value> = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    for f in found {
        if !ids.contains(&f.id) {
            ids.push(f.id);
            rules.push(json!({
                "id": f.id,
                "name": f.id,
                "shortDescription": { "text": f.title },
                "help": { "text": f.fix },
            }));
        }
    }
    let results: Vec<Value> = found
        .iter()
        .map(|f| {
            let mut r = json!({
                "ruleId": f.id,
                "ruleIndex": ids.iter().position(|i| *i == f.id),
                "level": level(f.severity),
                "message": { "text": format!("{}: {} Fix: {}", f.title, f.detail, f.fix) },
                "properties": { "severity": f.severity.as_str() },
            });
            if let Some(loc) = location(f) {
                let mut l = json!({ "logicalLocations": [{ "name": loc, "kind": "resource" }] });
                if let Some(uri) = policy_uri {
                    l["physicalLocation"] = json!({ "artifactLocation": { "uri": uri } });
                }
                r["locations"] = json!([l]);
            }
            if let Some(why) = &f.accepted {
                r["suppressions"] = json!([{ "kind": "external", "justification": why }]);
            }
            r
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "portolan",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://example.invalid/portolan",
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

/// Text for XML content and attributes: the one escaper, `render::xml`.
fn xml(s: &str) -> String {
    crate::render::xml::escape(s)
}

/// JUnit XML: one test case per finding, failed when it is at or above `fail_on` and not
/// accepted by an exception (what makes `audit` exit 1), skipped when accepted, passed
/// (kept for the record) otherwise.
pub fn junit(found: &[Finding], fail_on: Severity) -> String {
    let failing = found
        .iter()
        .filter(|f| f.accepted.is_none() && f.severity >= fail_on)
        .count();
    let skipped = found.iter().filter(|f| f.accepted.is_some()).count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"portolan audit\" tests=\"{}\" failures=\"{failing}\" skipped=\"{skipped}\">",
        found.len()
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"portolan audit\" tests=\"{}\" failures=\"{failing}\" skipped=\"{skipped}\">",
        found.len()
    );
    for f in found {
        let name = match location(f) {
            Some(l) => format!("{} {l}", f.id),
            None => f.id.to_owned(),
        };
        let _ = write!(
            s,
            "    <testcase classname=\"portolan.audit.{}\" name=\"{}\">",
            xml(f.severity.as_str()),
            xml(&name)
        );
        let body = format!("{}\nfix: {}", f.detail, f.fix);
        if let Some(why) = &f.accepted {
            let _ = write!(s, "<skipped message=\"accepted: {}\"/>", xml(why));
        } else if f.severity >= fail_on {
            let _ = write!(
                s,
                "<failure message=\"{}\" type=\"{}\">{}</failure>",
                xml(&f.title),
                xml(f.severity.as_str()),
                xml(&body)
            );
        } else {
            let _ = write!(s, "<system-out>{}</system-out>", xml(&body));
        }
        s.push_str("</testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}
