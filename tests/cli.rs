//! The real binary as a newcomer meets it: the README's first session,
//! help texts, shell completions and man pages.

mod util;

use std::path::Path;
use std::process::{Output, Stdio};

use clap::CommandFactory;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use util::{Serve, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_ssechan");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary to completion with `env` set; panics if it cannot start.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ssechan")
}

fn help(args: &[&str]) -> String {
    let out = run(args, &[("COLUMNS", "80")]);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The commands a user sees, by name, with their `after_help` texts.
fn commands() -> Vec<(String, String)> {
    let top = ssechan::cli::Cli::command();
    let mut v =
        vec![(String::new(), top.get_after_help().map(|s| s.to_string()).unwrap_or_default())];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let after = sub.get_after_help().map(|s| s.to_string()).unwrap_or_default();
        v.push((sub.get_name().to_owned(), after));
    }
    v
}

/// The command lines of an `after_help`'s `Examples:` block.
fn example_commands(after_help: &str) -> Vec<String> {
    let Some((_, examples)) = after_help.split_once("Examples:\n") else { return Vec::new() };
    examples
        .lines()
        .take_while(|l| !l.is_empty())
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// README "A first session": `ssechan serve` in one terminal, `ssechan
/// connect URL` in another; a line typed on either side reaches the other.
#[tokio::test]
async fn first_session_serve_and_connect_talk_both_ways() {
    let mut serve = Serve::spawn(&[]).await;
    let mut connect = tokio::process::Command::new(BIN)
        .args(["connect", &serve.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn connect");
    let mut to_connect = connect.stdin.take().expect("stdin");
    let mut from_connect = BufReader::new(connect.stdout.take().expect("stdout")).lines();
    to_connect.write_all(b"hello from connect\n").await.unwrap();
    assert_eq!(serve.out_line().await, "hello from connect");
    // The message arrived, so the client is registered: a broadcast reaches it.
    serve.send_line("hello from serve").await;
    let line = tokio::time::timeout(WAIT, from_connect.next_line()).await.expect("in time");
    assert_eq!(line.unwrap().as_deref(), Some("hello from serve"));
    drop(to_connect);
    let status = tokio::time::timeout(WAIT, connect.wait()).await.expect("connect exits").unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn top_level_help_shows_examples_and_environment() {
    let text = help(&["--help"]);
    assert!(text.contains("Examples:\n"), "{text}");
    assert!(text.contains("  ssechan connect http://127.0.0.1:8080/sse\n"), "{text}");
    assert!(text.contains("RUST_LOG") && text.contains("NO_COLOR"), "{text}");
    assert!(!text.contains("generate"), "the hidden command shows: {text}");
}

/// `-v`/`-q` are listed after a command's own options, under their own
/// heading, not among them.
#[test]
fn global_options_come_after_each_commands_own() {
    for (name, _) in commands() {
        let args: Vec<&str> =
            [name.as_str(), "--help"].into_iter().filter(|a| !a.is_empty()).collect();
        let text = help(&args);
        let (own, global) = text
            .split_once("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{name}: no Global options heading:\n{text}"));
        assert!(!own.contains("--verbose") && !own.contains("--quiet"), "{name}:\n{text}");
        assert!(global.contains("-v, --verbose") && global.contains("-q, --quiet"), "{name}");
        let options: Vec<&str> =
            global.lines().filter(|l| l.trim_start().starts_with('-')).collect();
        assert_eq!(options.len(), 2, "{name}: only -v and -q are global: {options:?}");
    }
}

#[test]
fn serve_help_states_the_exit_status() {
    let text = help(&["serve", "--help"]);
    let (_, status) = text.split_once("Exit status:\n").expect("an Exit status block");
    let codes: Vec<&str> = status
        .lines()
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(codes, ["0", "1", "2"], "{text}");
    assert!(status.contains("SIGINT or SIGTERM") && status.contains("usage error"), "{text}");
}

/// Every example command is one whole line of `--help` on an 80-column
/// terminal: none is wrapped mid-line.
#[test]
fn help_examples_fit_80_columns() {
    for (name, after) in commands() {
        let examples = example_commands(&after);
        assert!(!examples.is_empty(), "{name:?} has no examples");
        let args: Vec<&str> =
            [name.as_str(), "--help"].into_iter().filter(|a| !a.is_empty()).collect();
        let text = help(&args);
        for cmd in examples {
            assert!(
                text.lines().any(|l| l.trim() == cmd),
                "{name:?}: example {cmd:?} is not one line of --help:\n{text}"
            );
        }
    }
}

/// The hidden `generate` is offered by no shell's completion; bash,
/// run for real, completes the visible commands.
#[test]
fn completions_leave_out_the_hidden_generate_command() {
    for file in ["ssechan.bash", "_ssechan", "ssechan.fish", "_ssechan.ps1"] {
        let text = std::fs::read_to_string(root().join("completions").join(file)).unwrap();
        assert!(text.contains("serve") && !text.contains("generate"), "{file}");
    }
    let script = root().join("completions/ssechan.bash");
    let complete = |words: &str| {
        let out = std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-c"])
            .arg(format!(
                r#"source "$0"; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1));
                _ssechan ssechan "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}";
                printf '%s\n' "${{COMPREPLY[@]}}""#
            ))
            .arg(&script)
            .output()
            .expect("bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let top = complete(r#"ssechan """#);
    for want in ["serve", "connect", "bench", "help", "--verbose"] {
        assert!(top.iter().any(|w| w == want), "{want} not offered: {top:?}");
    }
    assert!(!top.iter().any(|w| w == "generate"), "{top:?}");
    assert!(complete("ssechan gen").is_empty());
    assert_eq!(complete("ssechan serve --lis"), ["--listen"]);
}

/// `generate` says what it writes and where, and writes exactly that.
#[test]
fn generate_says_what_it_writes_where() {
    let text = help(&["generate", "--help"]);
    assert!(text.contains("./completions") && text.contains("./man"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let (comp, man) = (dir.path().join("c"), dir.path().join("m"));
    let out = run(
        &["generate", "--completions", comp.to_str().unwrap(), "--man", man.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success());
    let said: Vec<String> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("ssechan: wrote ").unwrap_or_else(|| panic!("{l:?}")).to_owned())
        .collect();
    let mut written: Vec<String> = [&comp, &man]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut said_sorted = said.clone();
    said_sorted.sort();
    written.sort();
    assert_eq!(said_sorted, written);
    assert_eq!(written.len(), 9, "4 completions, 5 man pages: {written:?}");
}

/// The man pages have no page for `help` and, read with man(1) on an
/// 80-column terminal, every example command is one whole line and each
/// command page states its exit status.
#[test]
fn man_pages_read_well() {
    let top = std::fs::read_to_string(root().join("man/ssechan.1")).unwrap();
    assert!(!top.contains("ssechan\\-help"), "lists ssechan-help(1)");
    for want in ["ssechan\\-serve(1)", "ssechan\\-connect(1)", "ssechan\\-bench(1)"] {
        assert!(top.contains(want), "{want}");
    }
    for (name, after) in commands() {
        let page = if name.is_empty() { "ssechan.1".into() } else { format!("ssechan-{name}.1") };
        let path = root().join("man").join(&page);
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .expect("man(1) runs (Debian: man-db)");
        assert!(out.status.success(), "{page}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("EXAMPLES"), "{page}:\n{text}");
        for cmd in example_commands(&after) {
            assert!(
                text.lines().any(|l| l.trim() == cmd),
                "{page}: example {cmd:?} is not one line:\n{text}"
            );
        }
        if !name.is_empty() {
            assert!(text.contains("EXIT STATUS"), "{page}:\n{text}");
            assert!(text.contains("--verbose"), "{page}: global options missing");
        }
    }
}
