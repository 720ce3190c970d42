//! `portolan audit`: the listeners joined with the catalog, the probes, a policy and the
//! live firewall (portolan-audit), as a table, JSON, JSON Lines, SARIF or JUnit.

use std::io::{self, Write};

use anyhow::Context;
use clap::Args;
use portolan_audit::{
    audit as run_audit, AuditInput, Date, Finding, Policy, Reachability, Severity,
};
use portolan_core::Exposure;
use portolan_firewall::Ruleset;
use serde::Serialize;

use crate::cli::{SignatureArgs, TableJson};
use crate::render::{self, Output, Report, Style, BOLD, DIM, RED, YELLOW};
use crate::Outcome;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when no finding reaches --fail-on, 1 when one does, 2 on error."
)]
pub struct AuditArgs {
    /// Judge the listeners against this policy file (TOML, see POLICY.md)
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,
    /// Compare with a scan of this host made from another machine (`portolan scan --json` or
    /// --jsonl output, or queued:ID for a scan queued on $PORTOLAN_QUEUE)
    #[arg(long, value_name = "FILE")]
    pub from_scan: Option<std::path::PathBuf>,
    /// Ask each listener other hosts could reach what answers there (as `ls --probe`)
    #[arg(long)]
    pub probe: bool,
    #[command(flatten)]
    pub sigs: SignatureArgs,
    /// Exit 1 when a finding at or above this severity exists (info, low, medium, high, critical)
    #[arg(long, value_name = "SEVERITY", default_value = "high")]
    pub fail_on: String,
    /// Print the findings as SARIF 2.1.0 (for code-scanning UIs)
    #[arg(long, conflicts_with_all = ["junit", "json", "jsonl"])]
    pub sarif: bool,
    /// Print the findings as JUnit XML (one test case per finding; failed at --fail-on)
    #[arg(long, conflicts_with_all = ["json", "jsonl"])]
    pub junit: bool,
    /// Do not read the live firewall (it needs root; without it the verdicts are skipped)
    #[arg(long)]
    pub no_firewall: bool,
    #[command(flatten)]
    pub formats: TableJson,
}

/// The live nftables ruleset (the audit judges reachability against it), when it can be
/// read (root, nft installed); else a note saying why.
fn live_firewall(ctx: &Output) -> Option<Ruleset> {
    if let Err(e) = portolan_firewall::require_privileges() {
        ctx.note(&format!("firewall verdicts skipped: {e}"));
        return None;
    }
    match Ruleset::load() {
        Ok(rs) => Some(rs),
        Err(e) => {
            ctx.note(&format!(
                "firewall verdicts skipped: cannot read the ruleset: {e}"
            ));
            None
        }
    }
}

/// The findings, and the bar that makes the run fail.
#[derive(Debug, Serialize)]
struct AuditReport {
    findings: Vec<Finding>,
    #[serde(skip)]
    fail_on: Severity,
}

impl AuditReport {
    /// A finding at or above `--fail-on` that no exception accepts.
    fn failing(&self) -> bool {
        self.findings.iter().any(|f| f.fails(self.fail_on))
    }
}

impl Report for AuditReport {
    /// Findings' text was escaped by the audit when it was made.
    fn table(&self, w: &mut dyn Write, style: Style) -> io::Result<()> {
        if self.findings.is_empty() {
            return writeln!(w, "no findings");
        }
        for f in &self.findings {
            let colour = match f.severity {
                Severity::Critical | Severity::High => RED,
                Severity::Medium => YELLOW,
                _ => DIM,
            };
            let sev = format!("{:<8}", f.severity.as_str().to_uppercase());
            writeln!(
                w,
                "{} {} {}",
                style.paint(colour, &sev),
                style.paint(BOLD, &f.title),
                style.paint(DIM, f.id)
            )?;
            writeln!(w, "         {}", f.detail)?;
            writeln!(w, "         fix: {}", f.fix)?;
            if let Some(why) = &f.accepted {
                writeln!(w, "         accepted: {why}")?;
            }
        }
        Ok(())
    }

    /// One finding per line.
    fn jsonl(&self, w: &mut dyn Write) -> io::Result<()> {
        render::write_jsonl(w, &self.findings)
    }

    /// Exit 1 when the run fails (`--fail-on`), else 0.
    fn found(&self) -> bool {
        !self.failing()
    }
}

pub fn run(ctx: &Output, a: &AuditArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let fail_on: Severity = a
        .fail_on
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--fail-on")?;
    let policy = a.policy.as_deref().map(Policy::load).transpose()?;
    let scan = a
        .from_scan
        .as_deref()
        .map(|p| -> anyhow::Result<_> {
            // `queued:ID`: a scan queued on PostgreSQL ($PORTOLAN_QUEUE), read as `scan
            // --results ID --json` gives it.
            let text = match p.to_str().and_then(|s| s.strip_prefix("queued:")) {
                Some(id) => {
                    let id: i64 = id.parse().map_err(|_| {
                        anyhow::anyhow!("--from-scan queued:ID takes a queued scan's number")
                    })?;
                    let out = crate::inproc::cli_json(
                        ctx.source,
                        &[
                            "scan".into(),
                            "--results".into(),
                            id.to_string(),
                            "--queue".into(),
                        ],
                    )
                    .map_err(anyhow::Error::msg)
                    .context("--from-scan")?;
                    String::from_utf8_lossy(&out.json).into_owned()
                }
                None => portolan_audit::read_text(p)?,
            };
            portolan_audit::parse_scan(&text).context("--from-scan")
        })
        .transpose()?;
    let inv = super::listening_inventory(ctx)?;
    let ls = inv.listeners();
    let probes = if a.probe {
        {
            // The listeners other hosts could reach, as `ls --probe` asks them.
            let sigs = super::load_signatures(ctx, &a.sigs)?;
            let exposed = inv
                .sockets
                .iter()
                .filter(|s| s.exposure() != Some(Exposure::Loopback));
            super::probe_sockets(&sigs, exposed).into_reports()
        }
    } else {
        Vec::new()
    };
    let firewall = if a.no_firewall {
        None
    } else {
        live_firewall(ctx)
    };
    let reach = firewall.as_ref().map(|f| f as &dyn Reachability);
    let mut findings = run_audit(&AuditInput {
        listeners: &ls,
        probes: &probes,
        policy: policy.as_ref(),
        reachability: reach,
        today: Date::today(),
    });
    if let Some(scan) = &scan {
        findings.extend(portolan_audit::compare(&ls, scan, reach));
        // The engine's one order (severity, socket, rule), across both lists.
        portolan_audit::sort_findings(&mut findings);
    }
    let report = AuditReport { findings, fail_on };
    if a.sarif {
        let uri = a.policy.as_deref().map(portolan_audit::shown);
        render::sarif::write(out, &report.findings, uri.as_deref())?;
    } else if a.junit {
        render::junit::write(out, &report.findings, fail_on)?;
    } else {
        render::emit(out, ctx, &report)?;
    }
    Ok(Outcome::of(!report.failing()))
}
