//! `portolan generate`: the man page and shell completions, from the same clap definitions
//! as `--help`.

use std::io::Write;

use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to print: `man` (roff, for `man -l -`) or a shell's completion script
    #[arg(value_enum)]
    pub what: Generated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

pub fn run(a: &GenerateArgs, w: &mut dyn Write) -> anyhow::Result<Outcome> {
    let mut cmd = Cli::command();
    let shell = match a.what {
        Generated::Man => {
            clap_mangen::Man::new(cmd).render(w)?;
            return Ok(Outcome::Found);
        }
        Generated::Bash => Shell::Bash,
        Generated::Zsh => Shell::Zsh,
        Generated::Fish => Shell::Fish,
        Generated::Elvish => Shell::Elvish,
        Generated::Powershell => Shell::PowerShell,
    };
    clap_complete::generate(shell, &mut cmd, "portolan", w);
    Ok(Outcome::Found)
}
