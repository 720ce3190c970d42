//! `portolan audit` and `portolan policy init`: a minimal front end for portolan-audit
//! (table and JSON output; the firewall oracle, SARIF and JUnit come later).

use std::io::Write;

use anyhow::Context;
use portolan_audit::{audit as run_audit, AuditInput, Date, Finding, Listener, Policy, Severity};
use portolan_sockets::{Inventory, Query};

use crate::cli::AuditArgs;
use crate::output::{Format, BOLD, DIM, RED, YELLOW};
use crate::{Ctx, Outcome};

/// Largest file read for --policy or --from-scan.
const MAX_FILE: u64 = 256 << 20;

fn listeners(ctx: &Ctx) -> anyhow::Result<Vec<Listener>> {
    let query = Query {
        listening_only: true,
        source: ctx.source,
        ..Query::default()
    };
    Ok(Listener::from_inventory(&Inventory::collect(&query)?))
}

fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let shown = portolan_core::escape::bytes_for_terminal(path.as_os_str().as_encoded_bytes());
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let mut text = String::new();
    f.take(MAX_FILE)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {shown} as UTF-8 text"))?;
    Ok(text)
}

/// Probes the non-loopback TCP listeners on loopback, once per port.
fn probe_all(ls: &[Listener]) -> Vec<portolan_probe::Report> {
    let mut ports: Vec<u16> = ls
        .iter()
        .filter(|l| l.proto == portolan_core::Protocol::Tcp && !l.is_loopback())
        .filter(|l| l.addr.ip().is_unspecified())
        .map(|l| l.addr.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let targets: Vec<_> = ports
        .iter()
        .map(|&p| {
            (
                std::net::SocketAddr::from(([127, 0, 0, 1], p)),
                None,
                portolan_probe::Options::default(),
            )
        })
        .collect();
    portolan_probe::probe_many_with(&targets, &portolan_probe::Signatures::builtin(), 16)
}

pub fn audit(ctx: &Ctx, a: &AuditArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let fail_on: Severity = a
        .fail_on
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--fail-on")?;
    let policy = match &a.policy {
        Some(path) => {
            let text = read_text(path)?;
            let name =
                portolan_core::escape::bytes_for_terminal(path.as_os_str().as_encoded_bytes());
            Some(Policy::parse(&name, &text)?)
        }
        None => None,
    };
    let ls = listeners(ctx)?;
    let probes = if a.probe { probe_all(&ls) } else { Vec::new() };
    let mut found = run_audit(&AuditInput {
        listeners: &ls,
        probes: &probes,
        policy: policy.as_ref(),
        reachability: None,
        today: Date::today(),
    });
    if let Some(path) = &a.from_scan {
        let scan = portolan_audit::parse_scan(&read_text(path)?).context("--from-scan")?;
        found.extend(portolan_audit::compare(&ls, &scan, None));
        found.sort_by_key(|f| std::cmp::Reverse(f.severity));
    }
    match ctx.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "findings": found }))?;
            writeln!(out)?;
        }
        Format::Jsonl | Format::Csv => {
            for f in &found {
                serde_json::to_writer(&mut *out, f)?;
                writeln!(out)?;
            }
        }
        Format::Table => write_table(ctx, &found, out)?,
    }
    let failing = found
        .iter()
        .any(|f| f.accepted.is_none() && f.severity >= fail_on);
    Ok(if failing {
        Outcome::NothingMatched
    } else {
        Outcome::Found
    })
}

fn write_table(ctx: &Ctx, found: &[Finding], out: &mut dyn Write) -> anyhow::Result<()> {
    if found.is_empty() {
        writeln!(out, "no findings")?;
        return Ok(());
    }
    for f in found {
        let colour = match f.severity {
            Severity::Critical | Severity::High => RED,
            Severity::Medium => YELLOW,
            _ => DIM,
        };
        let sev = format!("{:<8}", f.severity.as_str().to_uppercase());
        writeln!(
            out,
            "{} {} {}",
            ctx.style.paint(colour, &sev),
            ctx.style.paint(BOLD, &f.title),
            ctx.style.paint(DIM, f.id)
        )?;
        writeln!(out, "         {}", f.detail)?;
        writeln!(out, "         fix: {}", f.fix)?;
        if let Some(why) = &f.accepted {
            writeln!(out, "         accepted: {why}")?;
        }
    }
    Ok(())
}

pub fn policy_init(ctx: &Ctx, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let ls = listeners(ctx)?;
    out.write_all(Policy::from_inventory(&ls).to_toml().as_bytes())?;
    Ok(Outcome::Found)
}
