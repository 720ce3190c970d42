//! `portolan audit` and `portolan policy init`: the listeners joined with the catalog, the
//! probes, a policy and the live firewall (portolan-audit), printed as a table, JSON,
//! SARIF or JUnit.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use portolan_audit::{
    audit as run_audit, AuditInput, Date, Finding, Listener, Policy, Reachability, Severity,
    Verdict,
};
use portolan_core::{Exposure, Protocol};
use portolan_sockets::{Inventory, Query, SocketEntry};

use crate::cli::{SignatureArgs, TableJson};
use crate::render::Output;
use crate::render::{Format, BOLD, DIM, RED, YELLOW};
use crate::Outcome;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when no finding reaches --fail-on, 1 when one does, 2 on error."
)]
pub struct AuditArgs {
    /// Judge the listeners against this policy file (TOML, see POLICY.md)
    #[arg(long, value_name = "FILE")]
    pub policy: Option<std::path::PathBuf>,
    /// Compare with a scan of this host made from another machine (`portolan scan --json` or --jsonl output)
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
    #[arg(long, conflicts_with = "junit")]
    pub sarif: bool,
    /// Print the findings as JUnit XML (one test case per finding; failed at --fail-on)
    #[arg(long)]
    pub junit: bool,
    /// Do not read the live firewall (it needs root; without it the verdicts are skipped)
    #[arg(long)]
    pub no_firewall: bool,
    #[command(flatten)]
    pub formats: TableJson,
}

/// Largest file read for --policy or --from-scan.
const MAX_FILE: u64 = 256 << 20;

/// The listening sockets of this machine; the inventory's warnings (owners it could not
/// read, the /proc fallback) go to stderr, as `ls` shows them.
fn inventory(ctx: &Output) -> anyhow::Result<Inventory> {
    let inv = Inventory::collect(&Query {
        listening_only: true,
        source: ctx.source,
        ..Query::default()
    })?;
    crate::render::sockets::warn_all(&inv.warnings, ctx.err_color);
    Ok(inv)
}

pub(crate) fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    let shown = portolan_core::escape::bytes_for_terminal(path.as_os_str().as_encoded_bytes());
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let mut text = String::new();
    f.take(MAX_FILE)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {shown} as UTF-8 text"))?;
    Ok(text)
}

/// Probes the listeners other hosts could reach, as `ls --probe` does (a wildcard one
/// through loopback; UDP where a probe names the port).
fn probe_exposed(
    inv: &Inventory,
    sigs: &portolan_probe::Signatures,
) -> Vec<portolan_probe::Report> {
    let socks: Vec<&SocketEntry> = inv
        .sockets
        .iter()
        .filter(|s| s.exposure() != Some(Exposure::Loopback))
        .collect();
    crate::probed::probe_listeners(&socks, sigs)
        .into_values()
        .collect()
}

/// The live nftables ruleset as the audit's reachability oracle.
struct LiveFirewall(portolan_firewall::Ruleset);

impl Reachability for LiveFirewall {
    fn inbound(&self, proto: Protocol, local: std::net::SocketAddr) -> Verdict {
        let l4 = match proto {
            Protocol::Tcp => portolan_firewall::L4::Tcp,
            Protocol::Udp => portolan_firewall::L4::Udp,
            other => return Verdict::Unknown(format!("{other} is not judged")),
        };
        match self.0.inbound_verdict(l4, local.ip(), local.port()) {
            portolan_firewall::Verdict::Open { .. } => Verdict::Open,
            // Accepted only from some sources: closed to an arbitrary outside host.
            portolan_firewall::Verdict::Restricted { .. }
            | portolan_firewall::Verdict::Blocked { .. } => Verdict::Blocked,
            portolan_firewall::Verdict::Unknown { why } => Verdict::Unknown(why),
        }
    }
}

/// The live firewall, when it can be read (root, nft installed); else a note saying why.
fn live_firewall(ctx: &Output) -> Option<LiveFirewall> {
    if let Err(e) = portolan_firewall::require_privileges() {
        crate::render::note(ctx.err_color, &format!("firewall verdicts skipped: {e}"));
        return None;
    }
    match portolan_firewall::Ruleset::load() {
        Ok(rs) => Some(LiveFirewall(rs)),
        Err(e) => {
            crate::render::note(
                ctx.err_color,
                &format!("firewall verdicts skipped: cannot read the ruleset: {e}"),
            );
            None
        }
    }
}

pub fn run(ctx: &Output, a: &AuditArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
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
    let inv = inventory(ctx)?;
    let ls = Listener::from_inventory(&inv);
    let probes = if a.probe {
        probe_exposed(&inv, &crate::probed::signatures(ctx, &a.sigs)?)
    } else {
        Vec::new()
    };
    let firewall = if a.no_firewall {
        None
    } else {
        live_firewall(ctx)
    };
    let reach = firewall.as_ref().map(|f| f as &dyn Reachability);
    let mut found = run_audit(&AuditInput {
        listeners: &ls,
        probes: &probes,
        policy: policy.as_ref(),
        reachability: reach,
        today: Date::today(),
    });
    if let Some(path) = &a.from_scan {
        let scan = portolan_audit::parse_scan(&read_text(path)?).context("--from-scan")?;
        found.extend(portolan_audit::compare(&ls, &scan, reach));
        found.sort_by_key(|f| std::cmp::Reverse(f.severity));
    }
    let policy_uri = a
        .policy
        .as_ref()
        .map(|p| portolan_core::escape::bytes_for_terminal(p.as_os_str().as_encoded_bytes()));
    if a.sarif {
        serde_json::to_writer_pretty(
            &mut *out,
            &crate::audit_reports::sarif(&found, policy_uri.as_deref()),
        )?;
        writeln!(out)?;
    } else if a.junit {
        out.write_all(crate::audit_reports::junit(&found, fail_on).as_bytes())?;
    } else {
        match ctx.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "findings": found }))?;
                writeln!(out)?;
            }
            Format::Jsonl | Format::Csv => {
                crate::render::write_jsonl(out, &found)?;
            }
            Format::Table => write_table(ctx, &found, out)?,
        }
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

fn write_table(ctx: &Output, found: &[Finding], out: &mut dyn Write) -> anyhow::Result<()> {
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
