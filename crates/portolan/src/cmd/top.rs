//! `portolan top`: the live view. This room reads the flags and checks that there is a
//! terminal to draw on; the view itself is the `top` edge.

use std::io::IsTerminal;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use portolan_core::when::parse_span;

use crate::render::Output;
use crate::top::view::View;
use crate::Outcome;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StartView {
    Listeners,
    Connections,
    Processes,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Seconds between refreshes
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub interval: f64,
    /// The view to start in (Tab switches)
    #[arg(long, value_enum, default_value = "listeners")]
    pub view: StartView,
    /// Start with this filter (as typed after `/`: port:443 proc:nginx state:estab ...)
    #[arg(long, value_name = "FILTER", default_value = "")]
    pub filter: String,
    /// Stop by itself after this span (30s, 10m)
    #[arg(long = "for", value_name = "SPAN")]
    pub for_: Option<String>,
}

pub fn run(ctx: &Output, a: &TopArgs) -> anyhow::Result<Outcome> {
    if !(a.interval.is_finite() && (0.1..=3600.0).contains(&a.interval)) {
        bail!("--interval: between 0.1 and 3600 seconds");
    }
    let duration = a
        .for_
        .as_deref()
        .map(|v| parse_span(v).context("--for"))
        .transpose()?;
    crate::top::filter::Filter::parse(&a.filter).map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "portolan top draws on a terminal and reads keys from it; for scripts, `portolan ls -a --json` lists the same sockets"
        );
    }
    crate::top::run(crate::top::Settings {
        interval: std::time::Duration::from_secs_f64(a.interval),
        color: ctx.style.is_on(),
        view: match a.view {
            StartView::Listeners => View::Listeners,
            StartView::Connections => View::Connections,
            StartView::Processes => View::Processes,
        },
        filter: a.filter.clone(),
        source: ctx.source,
        duration,
    })?;
    Ok(Outcome::Found)
}
