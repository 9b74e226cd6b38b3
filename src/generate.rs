//! Shell completions and the man page, generated from the clap definitions.
//! The committed copies under `completions/` and `man/` are checked for
//! staleness by a test.

use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs};

/// Writes completions for bash, zsh, fish and PowerShell, and `ssechan.1`.
pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    write_all(&args.completions, &args.man)
}

/// Writes every generated file into the two folders.
pub fn write_all(completions: &Path, man: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    std::fs::create_dir_all(man).with_context(|| format!("creating {}", man.display()))?;
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell] {
        clap_complete::generate_to(shell, &mut cmd, "ssechan", completions)
            .with_context(|| format!("writing {shell} completions"))?;
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page).context("rendering the man page")?;
    for sub in Cli::command().get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("ssechan-{}", sub.get_name());
        let sub = sub.clone().name(name.clone());
        let mut sub_page = Vec::new();
        clap_mangen::Man::new(sub).render(&mut sub_page).context("rendering a man page")?;
        std::fs::write(man.join(format!("{name}.1")), sub_page)?;
    }
    std::fs::write(man.join("ssechan.1"), page).context("writing the man page")?;
    Ok(())
}
