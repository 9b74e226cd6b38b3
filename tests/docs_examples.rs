//! The documentation runs: every shell example in README.md and docs/*.md
//! is run against the binary under test, so an example that drifts from it
//! fails; every local link resolves; the README stays a front page.
//!
//! How an example runs (docs/testing.md says the same for writers):
//!
//! * Blocks fenced as `sh` or `console` are shell examples. `sh` is a
//!   script, run by `bash -e`. `console` is a transcript: `$ ` starts a
//!   command (a line ending in `\` continues it) and the lines after it are
//!   what it prints, stdout and stderr together as on a terminal; the
//!   commands of a block run in one `bash`, one after another, so that what
//!   one sets (a variable) holds for the next. Other
//!   blocks (`text`, `yaml`, `rust`, …) are not run; a line in one that
//!   starts with `$ ` or `ssechan SUBCOMMAND` fails the test (a shell
//!   example in disguise), unless it is a usage line (`[OPTIONS]`), and `rust` blocks live in docs/library.md, which
//!   is compiled and run as doc tests (src/lib.rs).
//! * The blocks under one heading are one recipe, run in order in a fresh
//!   directory as a reader would type them, in one terminal or several:
//!   `ssechan` is the binary under test, first on PATH; HOME is inside the
//!   directory (with `$HOME/.cargo/bin` on PATH, as rustup sets it up),
//!   which also holds copies of the clone's `completions/` and `man/`, and
//!   the npm packages of tests/mcp (`npm ci` there), so that `npx` runs the
//!   pinned ones and never downloads; NO_COLOR is set. Recipes run side by side, on ports of
//!   their own.
//! * A block runs to its end within a minute and exits 0, and a console
//!   block prints what its transcript shows; what it started in the
//!   background ends with it. An HTML comment right before the fence,
//!   `<!-- run: … -->`, says otherwise, with comma-separated options:
//!   - `background`: the block stays running until its recipe ends (a
//!     server in its own terminal), then its process group is ended. The
//!     next block starts once it is ready: once a console block's
//!     transcript has shown, or when it shows `wait-for "TEXT"`, or once
//!     something listens on `wait-for-port PORT`.
//!   - `setup`: the block also runs first in every later recipe of its
//!     page (a server that all of a page's examples talk to).
//!   - `terminal`: the console block runs on a pseudo-terminal (the
//!     `connect` REPL); a `> TEXT` line of its transcript is typed once
//!     what comes before it has shown; Ctrl-D ends it.
//!   - `exit N` or `exit N|M`: the exit statuses it may end with, e.g. a
//!     gate that a debug build on a busy machine may fail (1), never a
//!     usage error (2).
//!   - `skip: REASON`: not run. Keep these rare: each is listed in
//!     [`SKIPPED`] with its reason, so that a new one shows in review.
//! * Expected output: `…` matches any text within a line and a line of `…`
//!   alone any lines; UUIDs (and ids of 32 hexadecimal digits), RFC 3339
//!   times and decimal numbers match any of their kind (ids, times and measurements differ on every run);
//!   `   ← note` at the end of a line is for the reader.
//! * What the runner changes, so that recipes written for a person run
//!   side by side in seconds (tests/support/examples.rs, `Rewrite`):
//!   - the ports the docs use (8080–8099, 8443, 6379–6399, 9090–9099) become free
//!     ports, in commands and expected output alike; a `serve` without
//!     `--listen` (8080) gets it made explicit;
//!   - bench's `--duration` (or `-d`) is at most 2 s, `--clients` 20,
//!     `--rate` 2000, `--messages` 1000, `--start-at +3s`, and a bench
//!     with no length runs 2 s instead of 10; check's `--idle-probe` is at
//!     most 10 s, and 1 s when not given.

#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/examples.rs"]
mod examples;
#[path = "support/markdown.rs"]
mod markdown;
mod util;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use examples::{Env, Opts};
use markdown::Block;

/// The blocks that are not run: (file, first line, reason). Each must say
/// the same in its `<!-- run: skip: … -->` note.
const SKIPPED: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "cargo run --release -- bench     # the main job: load-test an embedded echo server (10 s) and verify every message",
        "cargo builds and tests the project itself; the same `ssechan bench` runs in \"A first session\"",
    ),
    (
        "README.md",
        "cargo install --path . --locked     # a release build: several minutes the first time",
        "a release build of several minutes into ~/.cargo/bin; the examples run the binary the tests built",
    ),
    (
        "docs/connect.md",
        "ssechan connect --raw -d @request.json -H 'Content-Type: application/json' \\",
        "an API on the internet, with a key",
    ),
    (
        "docs/operations.md",
        "redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes",
        "a hostile load on a Redis of its own, by hand (the figures above are its output)",
    ),
];

/// Recipes run at once: most of their time is spent waiting.
const WORKERS: usize = 3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and docs/*.md, as (path from the root, text).
fn docs() -> Vec<(String, String)> {
    let mut files = vec!["README.md".to_owned()];
    let mut more: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    more.sort();
    files.extend(more);
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(root().join(&f)).unwrap();
            (f, text)
        })
        .collect()
}

fn is_shell(b: &Block) -> bool {
    matches!(b.lang.as_str(), "sh" | "console")
}

/// Shell hiding in a block that is not run, or a block nobody runs.
fn disguised(b: &Block) -> Option<String> {
    if matches!(b.lang.as_str(), "bash" | "shell" | "zsh") {
        return Some(format!("fence it as `sh` (or `console`), not {:?}", b.lang));
    }
    if b.lang == "rust" && b.file != "docs/library.md" {
        return Some("Rust examples live in docs/library.md, compiled as doc tests".into());
    }
    let subcommand = |l: &str| {
        ["serve", "connect", "bench", "check"]
            .iter()
            .any(|s| l.strip_prefix("ssechan ").is_some_and(|r| r.starts_with(s)))
    };
    // A usage line (`ssechan bench [URL] [OPTIONS]`) is no example.
    let usage = |l: &str| l.contains("[OPTIONS]");
    b.body.lines().find(|l| l.starts_with("$ ") || (subcommand(l) && !usage(l))).map(|l| {
        format!("{l:?} in a {:?} block is a shell example: fence it as `sh` or `console`", b.lang)
    })
}

#[test]
fn every_shell_example_runs() {
    let started = Instant::now();
    let mut problems = Vec::new();
    let mut recipes: Vec<Vec<(Block, Opts)>> = Vec::new();
    let mut skipped = Vec::new();
    // Blocks run at the start of each later recipe of their file.
    let mut setups: Vec<(Block, Opts)> = Vec::new();
    for (file, text) in docs() {
        for b in markdown::blocks(&file, &text) {
            if !is_shell(&b) {
                if let Some(why) = disguised(&b) {
                    problems.push(format!("{}:{}: {why}", b.file, b.line));
                }
                if b.note.is_some() {
                    problems.push(format!(
                        "{}:{}: a run note on a block that does not run",
                        b.file, b.line
                    ));
                }
                continue;
            }
            let opts = match Opts::parse(b.note.as_deref()) {
                Ok(o) => o,
                Err(e) => {
                    problems.push(format!("{}:{}: {e}", b.file, b.line));
                    continue;
                }
            };
            if let Some(reason) = &opts.skip {
                let first = b.body.lines().next().unwrap_or("").to_owned();
                skipped.push((b.file.clone(), first, reason.clone()));
                continue;
            }
            if setups.first().is_some_and(|(s, _): &(Block, Opts)| s.file != b.file) {
                setups.clear();
            }
            let setup = opts.setup;
            let entry = (b.clone(), opts.clone());
            match recipes.last_mut() {
                Some(r)
                    if r.last()
                        .is_some_and(|(l, _)| l.file == b.file && l.section == b.section) =>
                {
                    r.push((b, opts))
                }
                _ => {
                    let mut r = setups.clone();
                    r.push((b, opts));
                    recipes.push(r);
                }
            }
            if setup {
                setups.push(entry);
            }
        }
    }
    let listed: Vec<(String, String, String)> =
        SKIPPED.iter().map(|(f, l, r)| (f.to_string(), l.to_string(), r.to_string())).collect();
    if skipped != listed {
        problems.push(format!(
            "the skipped blocks are not those SKIPPED lists; in the docs:\n{}",
            skipped.iter().map(|s| format!("    {s:?},\n")).collect::<String>()
        ));
    }

    let blocks: usize = recipes.iter().map(Vec::len).sum();
    let total = recipes.len();
    let queue = Mutex::new(recipes.into_iter().collect::<VecDeque<_>>());
    let failures = Mutex::new(Vec::new());
    let scratch = tempfile::tempdir().unwrap();
    let bin = examples::bin_dir(scratch.path());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let Some(recipe) = queue.lock().unwrap().pop_front() else { break };
                    let dir = tempfile::tempdir().unwrap();
                    let env = Env::new(dir.path(), &bin);
                    let t = Instant::now();
                    let result = examples::run_recipe(&recipe, &env);
                    let last = &recipe[recipe.len() - 1].0;
                    let (b, _) = recipe.iter().find(|(b, _)| b.section == last.section).unwrap();
                    eprintln!(
                        "{} {}:{} {:?} in {:.1}s",
                        if result.is_ok() { "ok  " } else { "FAIL" },
                        b.file,
                        b.line,
                        b.heading,
                        t.elapsed().as_secs_f64()
                    );
                    if let Err(e) = result {
                        failures.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    problems.extend(failures.into_inner().unwrap());
    eprintln!(
        "{blocks} blocks in {total} recipes in {:.1}s; skipped: {}",
        started.elapsed().as_secs_f64(),
        SKIPPED.len()
    );
    for (f, l, r) in SKIPPED {
        eprintln!("  skipped {f}: {l:?}: {r}");
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n\n"));
}

/// The README is a front page: the reference is in docs/.
#[test]
fn the_readme_is_a_front_page() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 400, "README.md has {lines} lines; move reference to docs/");
}

/// Every local link of README.md and docs/*.md names a file that exists
/// and, with `#anchor`, a heading of it.
#[test]
fn every_local_link_resolves() {
    let mut broken = Vec::new();
    for (file, text) in docs() {
        let base = Path::new(&file).parent().unwrap_or(Path::new(""));
        for (line, target) in markdown::links(&text) {
            let target = target.trim_start_matches('<').trim_end_matches('>');
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) =
                target.split_once('#').map_or((target, None), |(p, a)| (p, Some(a)));
            let resolved = if path.is_empty() { PathBuf::from(&file) } else { base.join(path) };
            let full = root().join(&resolved);
            let inside =
                full.canonicalize().is_ok_and(|p| p.starts_with(root().canonicalize().unwrap()));
            if !inside {
                broken.push(format!(
                    "{file}:{line}: {target}: no {} in the repository",
                    resolved.display()
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&full).unwrap_or_default();
                if !markdown::anchors(&text).iter().any(|a| a == anchor) {
                    broken.push(format!("{file}:{line}: {target}: no heading #{anchor}"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The README's browser page, as written there, in Chromium against
/// `ssechan serve --static`: what the server sends shows on the page, and
/// what is typed on the page reaches the server.
#[tokio::test]
async fn the_readmes_browser_page_talks_both_ways_in_chromium() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = markdown::blocks("README.md", &readme)
        .into_iter()
        .find(|b| b.heading == "A browser page" && b.lang == "sh")
        .expect("README: a sh block under \"A browser page\"");
    let page = block
        .body
        .split_once("cat > site/index.html <<'EOF'\n")
        .and_then(|(_, rest)| rest.split_once("\nEOF\n"))
        .expect("the page, written by a heredoc")
        .0;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), page).unwrap();
    let site = dir.path().to_str().unwrap();
    // As in the README, with JSON on stdout to see the page connect.
    let mut serve =
        util::Serve::spawn(&["--static", site, "--keep-alive", "30s", "--format", "json"]).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let mut browser = chromium::Browser::launch().await;
    let tab = browser.open(&serve.url.replace("/sse", "/")).await;
    assert_eq!(serve.out_json().await["event"], "connect");
    serve.send_line(r#"{"data":"hello page"}"#).await;
    browser.wait_for(&tab, "log.textContent === 'hello page\\n'", "the message on the page").await;
    browser.eval(&tab, "say.value = 'hello server'; say.dispatchEvent(new Event('change'))").await;
    let ev = serve.out_json().await;
    assert_eq!(
        (ev["event"].as_str(), ev["data"].as_str()),
        (Some("message"), Some("hello server"))
    );
    browser.close().await;
}
