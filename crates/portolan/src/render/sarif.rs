//! `portolan audit` findings as code-scanning UIs read them: SARIF 2.1.0. Built from the
//! findings alone (their text is escaped by the audit when it is made); JSON escapes the
//! rest.

use std::io::{self, Write};

use portolan_audit::{Finding, Severity};
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
pub fn location(f: &Finding) -> Option<String> {
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

/// Writes the SARIF log, indented (it is a file people and tools open as such).
pub fn write(w: &mut dyn Write, found: &[Finding], policy_uri: Option<&str>) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, &sarif(found, policy_uri))?;
    w.write_all(b"\n")
}
