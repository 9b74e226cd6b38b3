//! Shell completions and man pages, generated from the clap definitions.
//! The committed copies under `completions/` and `man/` are checked for
//! staleness by a test.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs};

/// Writes the completions and man pages, and says on stderr which files.
pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    for path in write_all(&args.completions, &args.man)? {
        eprintln!("ssechan: wrote {}", path.display());
    }
    Ok(())
}

/// Writes completions for bash, zsh, fish and PowerShell into `completions`
/// and `ssechan.1` plus one page per command into `man`; returns the paths.
pub fn write_all(completions: &Path, man: &Path) -> anyhow::Result<Vec<PathBuf>> {
    for dir in [completions, man] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut written = Vec::new();
    let mut cmd = public_command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell] {
        let path = clap_complete::generate_to(shell, &mut cmd, "ssechan", completions)
            .with_context(|| format!("writing {shell} completions"))?;
        written.push(path);
    }
    for (name, page) in man_pages()? {
        let path = man.join(name);
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The command line as users see it: without hidden commands, which
/// clap_complete would offer. clap cannot remove a subcommand, so the top
/// level is rebuilt around the visible ones (a test checks that its help
/// and usage are the real command's).
pub fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut public = clap::Command::new(full.get_name().to_owned())
        .propagate_version(full.is_propagate_version_set())
        .subcommand_required(full.is_subcommand_required_set())
        .arg_required_else_help(full.is_arg_required_else_help_set())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(version) = full.get_version() {
        public = public.version(version.to_owned());
    }
    if let Some(about) = full.get_about() {
        public = public.about(about.clone());
    }
    if let Some(after) = full.get_after_help() {
        public = public.after_help(after.clone());
    }
    public
}

/// `ssechan.1` and `ssechan-COMMAND.1` for each command, as (file, page).
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let top = public_command();
    let globals: Vec<clap::Arg> =
        top.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    let version = top.get_version().unwrap_or_default().to_owned();
    let mut pages = Vec::new();
    for sub in top.get_subcommands() {
        let name = format!("{}-{}", top.get_name(), sub.get_name());
        let sub = sub.clone().name(name.clone()).version(version.clone()).args(globals.clone());
        pages.push((format!("{name}.1"), man_page(sub)?));
    }
    // `help` is a subcommand, but there is no ssechan-help(1).
    pages.insert(0, ("ssechan.1".into(), man_page(top.disable_help_subcommand(true))?));
    Ok(pages)
}

/// clap_mangen's sections, then the sections of the command's `after_help`
/// (EXIT STATUS, EXAMPLES, ENVIRONMENT…) in man page form, then the version.
fn man_page(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let extra = cmd.get_after_help().map(|s| s.to_string()).unwrap_or_default();
    let has_subcommands = cmd.has_subcommands();
    let man = clap_mangen::Man::new(cmd);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    // Each render starts with the same preamble (the apostrophe string);
    // only the page's first one is kept.
    let preamble_len = page.windows(4).position(|w| w == b".TH ").unwrap_or(0);
    let preamble = page[..preamble_len].to_vec();
    type Render = fn(&clap_mangen::Man, &mut dyn std::io::Write) -> std::io::Result<()>;
    let mut sections: Vec<Render> = vec![
        clap_mangen::Man::render_name_section,
        clap_mangen::Man::render_synopsis_section,
        clap_mangen::Man::render_description_section,
        clap_mangen::Man::render_options_section,
    ];
    if has_subcommands {
        sections.push(clap_mangen::Man::render_subcommands_section);
    }
    let append = |page: &mut Vec<u8>, render: Render| -> std::io::Result<()> {
        let mut buf = Vec::new();
        render(&man, &mut buf)?;
        page.extend_from_slice(buf.strip_prefix(preamble.as_slice()).unwrap_or(&buf));
        Ok(())
    };
    for render in sections {
        append(&mut page, render)?;
    }
    page.extend_from_slice(after_help_roff(&extra).as_bytes());
    append(&mut page, clap_mangen::Man::render_version_section)?;
    Ok(page)
}

/// Turns an `after_help` text into man sections. Blocks are separated by
/// blank lines; one that starts with a `Heading:` line is a section, any
/// other a paragraph of the section before. Under `Examples:` a
/// `# text` line describes the command lines after it, which are set
/// verbatim (never filled or wrapped); elsewhere `  NAME  text` lines
/// become tagged paragraphs and other lines plain text.
fn after_help_roff(text: &str) -> String {
    let mut out = String::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines().peekable();
        let heading = lines.peek().and_then(|h| h.strip_suffix(':')).map(str::to_owned);
        let Some(heading) = heading else {
            // A paragraph of the section before.
            out.push_str(".PP\n");
            lines.for_each(|l| out.push_str(&escape_line(l.trim())));
            continue;
        };
        lines.next();
        out.push_str(&format!(".SH \"{}\"\n", heading.to_uppercase()));
        let examples = heading.eq_ignore_ascii_case("examples");
        let mut in_code = false;
        for line in lines {
            let line = line.trim();
            let comment = line.strip_prefix('#').map(str::trim);
            if examples && comment.is_none() {
                if !in_code {
                    out.push_str(".PP\n.RS 4\n.nf\n");
                    in_code = true;
                }
                out.push_str(&escape_line(line));
                continue;
            }
            if in_code {
                out.push_str(".fi\n.RE\n");
                in_code = false;
            }
            if let Some(comment) = comment {
                out.push_str(&format!(".PP\n{}", escape_line(comment)));
            } else if let Some((tag, rest)) = line.split_once("  ") {
                out.push_str(&format!(
                    ".TP\n\\fB{}\\fR\n{}",
                    escape(tag),
                    escape_line(rest.trim())
                ));
            } else {
                out.push_str(&escape_line(line));
            }
        }
        if in_code {
            out.push_str(".fi\n.RE\n");
        }
    }
    out
}

/// One line of roff text: escaped, and never read as a request.
fn escape_line(s: &str) -> String {
    let s = escape(s);
    if s.starts_with(['.', '\'']) { format!("\\&{s}\n") } else { format!("{s}\n") }
}

/// Escapes text for roff: backslashes, hyphens (which would otherwise be
/// typeset as non-ASCII dashes) and apostrophes (the preamble's `Aq`).
fn escape(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-").replace('\'', "\\*(Aq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_command_is_the_real_one_without_hidden_commands() {
        let (mut full, mut public) = (Cli::command(), public_command());
        assert_eq!(public.render_long_help().to_string(), full.render_long_help().to_string());
        assert_eq!(public.render_usage().to_string(), full.render_usage().to_string());
        assert_eq!(public.render_long_version(), full.render_long_version());
        let names = |c: &clap::Command| -> Vec<String> {
            c.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name().into()).collect()
        };
        assert_eq!(names(&public), names(&full));
        assert!(full.find_subcommand("generate").is_some());
        assert!(public.find_subcommand("generate").is_none());
    }

    #[test]
    fn after_help_sections() {
        let roff = after_help_roff(
            "Exit status:\n  0  fine\n  2  usage error\n\nExamples:\n  # a test\n  echo 'a-b' | x \\\n  .dot\n\nNote: not a section\n",
        );
        assert_eq!(
            roff,
            ".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nfine\n.TP\n\\fB2\\fR\nusage error\n\
             .SH \"EXAMPLES\"\n.PP\na test\n.PP\n.RS 4\n.nf\necho \\*(Aqa\\-b\\*(Aq | x \\e\n\\&.dot\n.fi\n.RE\n\
             .PP\nNote: not a section\n"
        );
    }
}
