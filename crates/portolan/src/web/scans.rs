//! Scan files for the /scans page: what `portolan scan --json` wrote (one document with
//! `scan`, `ports`, `summary`), or `--jsonl` (one port record per line). Read with the
//! audit's bounded reader, each record as core's `ScanRecord`, so a file that is not a
//! scan is an error naming the file and the line, at start.

use std::path::{Path, PathBuf};

use anyhow::Context;
use portolan_core::ScanRecord;

/// A port record with its TLS and HTTP details kept as they were written.
pub type Record = ScanRecord<serde_json::Value, serde_json::Value>;

/// One scan file, read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScanFile {
    pub path: PathBuf,
    /// The `scan` object of a JSON document (scanner, type, seed, ...); null for JSONL.
    pub scan: serde_json::Value,
    pub summary: serde_json::Value,
    pub ports: Vec<Record>,
}

#[derive(serde::Deserialize)]
struct Doc {
    #[serde(default)]
    scan: serde_json::Value,
    #[serde(default)]
    summary: serde_json::Value,
    ports: Vec<Record>,
}

pub fn load(path: &Path) -> anyhow::Result<ScanFile> {
    let shown = portolan_audit::shown(path);
    let text = portolan_audit::read_text(path)?;
    parse(&text)
        .with_context(|| format!("--scans {shown}"))
        .map(|(scan, summary, ports)| ScanFile {
            path: path.to_owned(),
            scan,
            summary,
            ports,
        })
}

/// A scan document or JSON Lines of records.
pub fn parse(text: &str) -> anyhow::Result<(serde_json::Value, serde_json::Value, Vec<Record>)> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        anyhow::bail!("the file is empty: expected what `portolan scan --json` writes");
    }
    if let Ok(doc) = serde_json::from_str::<Doc>(text) {
        return Ok((doc.scan, doc.summary, doc.ports));
    }
    let mut ports = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(line).with_context(|| {
            format!(
                "line {}: not a scan document (`portolan scan --json`) nor a port record (`--jsonl`)",
                i + 1
            )
        })?;
        ports.push(r);
    }
    Ok((serde_json::Value::Null, serde_json::Value::Null, ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_lines() {
        let doc = r#"{"scan":{"type":"connect"},"ports":[{"host":"198.18.0.2","port":22,"proto":"tcp","state":"open","reason":"syn-ack"}],"summary":{"open":1}}"#;
        let (scan, _, ports) = parse(doc).unwrap();
        assert_eq!(scan["type"], "connect");
        assert_eq!(ports.len(), 1);
        let lines = "{\"host\":\"198.18.0.2\",\"port\":22,\"proto\":\"tcp\",\"state\":\"open\",\"reason\":\"syn-ack\"}\n\n";
        assert_eq!(parse(lines).unwrap().2.len(), 1);
    }

    #[test]
    fn hostile_files_are_errors() {
        for bad in [
            "",
            "   ",
            "{",
            "[1,2]",
            "{\"ports\":3}",
            "<html>",
            "\u{1b}[31m",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
