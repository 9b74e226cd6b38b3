//! Runs the shell examples of the docs as a reader would: the rules are at
//! the top of tests/docs_examples.rs; this is how.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::markdown::Block;

/// How long a foreground command may run.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// How long a background block may take to show what it is waited for,
/// and the transcript of a background block to show at the end.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// How long stopped processes get to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The line the runner prints after each command of a console block.
const STEP_END: &str = "@@ssechan-docs: the command ended with";

/// What a `<!-- run: … -->` note asks for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Opts {
    pub skip: Option<String>,
    pub background: bool,
    pub setup: bool,
    pub wait_for: Vec<String>,
    pub wait_for_port: Vec<u16>,
    pub terminal: bool,
    /// Accepted exit statuses (empty: 0).
    pub exit: Vec<i32>,
}

impl Opts {
    pub fn parse(note: Option<&str>) -> Result<Opts, String> {
        let mut o = Opts::default();
        let Some(note) = note else { return Ok(o) };
        if let Some(reason) = note.strip_prefix("skip:") {
            let reason = reason.trim();
            if reason.is_empty() {
                return Err("`skip:` needs a reason".into());
            }
            o.skip = Some(reason.to_owned());
            return Ok(o);
        }
        for part in split_outside_quotes(note) {
            let part = part.trim();
            let (word, arg) = part.split_once(' ').map_or((part, ""), |(w, a)| (w, a.trim()));
            match word {
                "background" => o.background = true,
                "setup" => o.setup = true,
                "terminal" => o.terminal = true,
                "wait-for" => {
                    let quoted = arg.strip_prefix('"').and_then(|a| a.strip_suffix('"'));
                    o.wait_for.push(quoted.ok_or("wait-for takes a \"quoted text\"")?.to_owned());
                }
                "wait-for-port" => {
                    o.wait_for_port.push(arg.parse().map_err(|_| "wait-for-port takes a port")?);
                }
                "exit" => {
                    o.exit = arg
                        .split('|')
                        .map(|c| c.trim().parse().map_err(|_| format!("bad exit status {c:?}")))
                        .collect::<Result<_, _>>()?;
                }
                _ => return Err(format!("unknown run option {part:?}")),
            }
        }
        if (!o.wait_for.is_empty() || !o.wait_for_port.is_empty()) && !o.background {
            return Err("wait-for is for background blocks".into());
        }
        Ok(o)
    }

    fn accepts(&self, status: Option<i32>) -> bool {
        match status {
            Some(code) if self.exit.is_empty() => code == 0,
            Some(code) => self.exit.contains(&code),
            None => false,
        }
    }
}

fn split_outside_quotes(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// The ports the docs use: each gets a free port of its own in each recipe.
pub const DOC_PORTS: &[std::ops::RangeInclusive<u16>] =
    &[8080..=8099, 8443..=8443, 6379..=6399, 9090..=9099];

/// How a recipe's text becomes what runs: its ports, the defaults made
/// explicit and the lengths capped.
pub struct Rewrite {
    ports: HashMap<u16, u16>,
}

/// `ssechan SUBCOMMAND`, where a command starts.
static SSECHAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[\s;|&(])ssechan\s+(serve|connect|bench|check)\b").unwrap());

/// Flag values lowered so that an example finishes in seconds: a value
/// above the cap becomes the cap.
const CAPS: &[(&str, &[&str], Cap)] = &[
    ("bench", &["--duration", "-d"], Cap::Time(2)),
    ("bench", &["--clients"], Cap::Count(20)),
    ("bench", &["--rate"], Cap::Count(2000)),
    ("bench", &["--messages"], Cap::Count(1000)),
    ("bench", &["--start-at"], Cap::Later(3)),
    ("check", &["--idle-probe"], Cap::Time(10)),
];

#[derive(Clone, Copy)]
enum Cap {
    /// Seconds.
    Time(u64),
    Count(u64),
    /// `+DURATION` from now, in seconds; absolute times are left alone.
    Later(u64),
}

impl Cap {
    fn apply(self, value: &str) -> Option<String> {
        let secs = |v: &str| humantime::parse_duration(v).ok().map(|d| d.as_secs_f64());
        match self {
            Cap::Time(c) => (secs(value)? > c as f64).then(|| format!("{c}s")),
            Cap::Count(c) => (value.parse::<u64>().ok()? > c).then(|| c.to_string()),
            Cap::Later(c) => (secs(value.strip_prefix('+')?)? > c as f64).then(|| format!("+{c}s")),
        }
    }
}

impl Rewrite {
    pub fn new(recipe_text: &str) -> Rewrite {
        let mut ports = HashMap::new();
        for p in DOC_PORTS.iter().flat_map(|r| r.clone()) {
            if contains_port(recipe_text, p) || (p == 8080 && recipe_text.contains("ssechan serve"))
            {
                let free = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .expect("a free port")
                    .port();
                ports.insert(p, free);
            }
        }
        Rewrite { ports }
    }

    /// The port standing for `doc_port` in this recipe.
    pub fn port(&self, doc_port: u16) -> u16 {
        self.ports.get(&doc_port).copied().unwrap_or(doc_port)
    }

    /// Expected output: the ports.
    pub fn text(&self, s: &str) -> String {
        replace_ports(s, &self.ports)
    }

    /// A command or script: defaults made explicit, lengths capped, ports.
    pub fn command(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(m) = SSECHAN.captures(rest) {
            let whole = m.get(0).unwrap();
            let sub = m[1].to_owned();
            let end = whole.end() + command_end(&rest[whole.end()..]);
            out.push_str(&rest[..whole.end()]);
            out.push_str(&self.args(&sub, &rest[whole.end()..end]));
            rest = &rest[end..];
        }
        out.push_str(rest);
        replace_ports(&out, &self.ports)
    }

    /// The arguments of `ssechan SUB`, rewritten.
    fn args(&self, sub: &str, args: &str) -> String {
        let mut words: Vec<String> = args.split(' ').map(str::to_owned).collect();
        for i in 0..words.len() {
            for (_, flags, cap) in CAPS.iter().filter(|(s, _, _)| *s == sub) {
                let w = words[i].clone();
                if let Some((flag, value)) = w.split_once('=')
                    && flags.contains(&flag)
                    && let Some(v) = cap.apply(value)
                {
                    words[i] = format!("{flag}={v}");
                } else if flags.contains(&w.as_str())
                    && let Some(v) = words.get(i + 1).and_then(|v| cap.apply(v))
                {
                    words[i + 1] = v;
                }
            }
        }
        let mut args = words.join(" ");
        let has = |flag: &str| {
            args.split_whitespace().any(|w| w == flag || w.starts_with(&format!("{flag}=")))
        };
        let merge = args.split_whitespace().next() == Some("merge");
        let lengths = ["--duration", "-d", "--messages", "--scenario"];
        let added = match sub {
            "serve" if !has("--listen") => " --listen 127.0.0.1:8080",
            "bench" if !merge && !lengths.iter().any(|f| has(f)) => " --duration 2s",
            "check" if args.contains("://") && !has("--idle-probe") => " --idle-probe 1s",
            _ => "",
        };
        // Right after the subcommand, before any `-- COMMAND`.
        args.insert_str(0, added);
        args
    }
}

/// Where the command starting at the beginning of `s` ends: a newline
/// that no `\` continues, or `|`, `;`, `&`, `)` or a `#` comment.
fn command_end(s: &str) -> usize {
    let b = s.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            b'\n' if i == 0 || b[i - 1] != b'\\' => return i,
            b'|' | b';' | b'&' | b')' => return i,
            b'#' if i > 0 && b[i - 1] == b' ' => return i,
            _ => {}
        }
    }
    b.len()
}

fn is_port_at(s: &str, start: usize, end: usize) -> bool {
    let before = s[..start].chars().next_back();
    let mut after = s[end..].chars();
    let decimal = after.next() == Some('.') && after.next().is_some_and(|c| c.is_ascii_digit());
    let after = s[end..].chars().next();
    !before.is_some_and(|c| c.is_alphanumeric() || c == '.' || c == '-' || c == '_')
        && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
        && !decimal
}

fn contains_port(s: &str, port: u16) -> bool {
    let p = port.to_string();
    s.match_indices(&p).any(|(i, _)| is_port_at(s, i, i + p.len()))
}

fn replace_ports(s: &str, ports: &HashMap<u16, u16>) -> String {
    static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d+").unwrap());
    NUMBER
        .replace_all(s, |c: &regex::Captures| {
            let m = c.get(0).unwrap();
            match m.as_str().parse::<u16>().ok().and_then(|p| ports.get(&p)) {
                Some(to) if is_port_at(s, m.start(), m.end()) => to.to_string(),
                _ => m.as_str().to_owned(),
            }
        })
        .into_owned()
}

/// One line of expected output as a pattern: `…` is any text; UUIDs,
/// RFC 3339 times and decimal numbers match any of their kind; a `  ← note`
/// at the end is for the reader.
fn line_pattern(expected: &str) -> String {
    static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"…|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{32}\b",
            r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z|\d+\.\d+"
        ))
        .unwrap()
    });
    let line = strip_note(expected);
    let mut pat = String::new();
    let mut last = 0;
    for m in TOKEN.find_iter(line) {
        pat.push_str(&regex::escape(&line[last..m.start()]));
        pat.push_str(match m.as_str() {
            "…" => ".*?",
            t if t.len() == 36 && t.contains('-') && !t.contains(':') => {
                "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
            }
            t if t.len() == 32 => "[0-9a-f]{32}",
            t if t.contains('T') => r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z",
            _ => r"\d+(?:\.\d+)?",
        });
        last = m.end();
    }
    pat.push_str(&regex::escape(&line[last..]));
    pat
}

fn strip_note(line: &str) -> &str {
    match line.find(" ← ").or_else(|| line.strip_suffix(" ←").map(str::len)) {
        Some(i) => line[..i].trim_end(),
        None => line.trim_end(),
    }
}

/// Whether `actual` shows `expected` (a line of `…` alone: any lines); with
/// `prefix`, more lines may follow.
pub fn matches(expected: &[String], actual: &str, prefix: bool) -> bool {
    let pats: Vec<Option<Regex>> = expected
        .iter()
        .map(|l| {
            (strip_note(l) != "…").then(|| Regex::new(&format!("^{}$", line_pattern(l))).unwrap())
        })
        .collect();
    let actual = clean(actual);
    let lines: Vec<&str> = actual.lines().map(str::trim_end).collect();
    let lines = trim_blank_end(&lines);
    let pats = trim_blank_pats(&pats, expected);
    fn go(p: &[Option<Regex>], l: &[&str], prefix: bool) -> bool {
        match p.split_first() {
            None => prefix || l.is_empty(),
            Some((None, rest)) => (0..=l.len()).any(|k| go(rest, &l[k..], prefix)),
            Some((Some(re), rest)) => {
                !l.is_empty() && re.is_match(l[0]) && go(rest, &l[1..], prefix)
            }
        }
    }
    go(pats, lines, prefix)
}

fn trim_blank_end<'a>(lines: &'a [&'a str]) -> &'a [&'a str] {
    let n = lines.iter().rposition(|l| !l.is_empty()).map_or(0, |i| i + 1);
    &lines[..n]
}

fn trim_blank_pats<'a>(pats: &'a [Option<Regex>], expected: &[String]) -> &'a [Option<Regex>] {
    let n = expected.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1);
    &pats[..n]
}

/// Terminal output as text: escape sequences and carriage returns removed.
pub fn clean(s: &str) -> String {
    static ESCAPES: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[^\[\]()]|\r")
            .unwrap()
    });
    ESCAPES.replace_all(s, "").into_owned()
}

/// A console block: each `$ ` command with the output shown after it.
#[derive(Debug, PartialEq)]
pub struct Step {
    pub command: String,
    pub output: Vec<String>,
}

pub fn transcript(body: &str) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in body.lines() {
        if continued {
            let s = steps.last_mut().unwrap();
            s.command.push('\n');
            s.command.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push(Step { command: cmd.to_owned(), output: Vec::new() });
            continued = cmd.ends_with('\\');
        } else if let Some(s) = steps.last_mut() {
            s.output.push(line.to_owned());
        } else {
            return Err(format!("a console block starts with `$ `, not {line:?}"));
        }
    }
    if steps.is_empty() {
        return Err("a console block without a `$ ` command".into());
    }
    Ok(steps)
}

/// What a process printed (stdout and stderr together), and whether it is
/// all there (every writer gone).
#[derive(Default)]
struct Output {
    state: Mutex<(Vec<u8>, bool)>,
    changed: Condvar,
}

impl Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.state.lock().unwrap().0).into_owned()
    }

    /// Waits until `done` holds for the text so far, or everything is in
    /// and it does not, or `limit` passes; whether it holds.
    fn wait_until(&self, limit: Duration, done: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = self.state.lock().unwrap();
        loop {
            if done(&String::from_utf8_lossy(&st.0)) {
                return true;
            }
            let now = Instant::now();
            if st.1 || now >= deadline {
                return false;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = self.state.lock().unwrap();
        while !st.1 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }
}

/// A shell running a block or a command in its own process group.
struct Proc {
    pgid: i32,
    out: Arc<Output>,
    exited: mpsc::Receiver<ExitStatus>,
    status: Option<ExitStatus>,
}

/// Where a recipe runs and what it runs with.
pub struct Env {
    /// A fresh directory, with copies of the clone's `completions/` and
    /// `man/` (the install steps copy them from "the clone"), and the MCP
    /// packages of tests/mcp.
    pub dir: PathBuf,
    /// Holds `ssechan`, the binary under test.
    pub bin: PathBuf,
    /// The PATH the test runs with.
    pub path: String,
}

impl Env {
    pub fn new(dir: &Path, bin: &Path) -> Env {
        use std::os::unix::fs::PermissionsExt;
        // Workers of a server started as root (nginx's `nobody`) may need
        // to reach files in it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for sub in ["completions", "man"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            for f in std::fs::read_dir(root.join(sub)).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), dir.join(sub).join(f.file_name())).unwrap();
            }
        }
        // npx finds the MCP packages the tests pinned (tests/mcp, `npm ci`)
        // here, and never downloads (NPM_CONFIG_OFFLINE below).
        let npm = root.join("tests/mcp");
        std::os::unix::fs::symlink(npm.join("node_modules"), dir.join("node_modules")).unwrap();
        std::fs::copy(npm.join("package.json"), dir.join("package.json")).unwrap();
        Env {
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            path: std::env::var("PATH").unwrap_or_default(),
        }
    }

    fn command(&self, program: &str) -> Command {
        let home = self.dir.join(".home");
        // Where `cargo install` puts binaries, as rustup's installer sets it up.
        let path = format!("{}:{}/.cargo/bin:{}", self.bin.display(), home.display(), self.path);
        let mut c = Command::new(program);
        c.current_dir(&self.dir)
            .env("PATH", path)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("NO_COLOR", "1")
            .env("NPM_CONFIG_OFFLINE", "true")
            .env("TERM", "dumb")
            .env_remove("RUST_LOG")
            .env_remove("SSECHAN_REDIS");
        c
    }

    /// `script` under `bash` (with `-e` for a block), stdout and stderr
    /// into one pipe, stdin empty.
    fn spawn(&self, script: &str, errexit: bool) -> Proc {
        let mut c = self.command("bash");
        if errexit {
            c.arg("-e");
        }
        c.arg("-c").arg(format!("exec 2>&1\n{script}"));
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).process_group(0);
        let mut child = c.spawn().expect("spawn bash");
        let out = Arc::new(Output::default());
        let mut pipe = child.stdout.take().unwrap();
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                let n = pipe.read(&mut buf).unwrap_or(0);
                let mut st = o.state.lock().unwrap();
                if n == 0 {
                    st.1 = true;
                } else {
                    st.0.extend_from_slice(&buf[..n]);
                }
                o.changed.notify_all();
                if n == 0 {
                    break;
                }
            }
        });
        let pgid = child.id() as i32;
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(s) = child.wait() {
                let _ = tx.send(s);
            }
        });
        Proc { pgid, out, exited, status: None }
    }
}

impl Proc {
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.exited.recv_timeout(limit).ok();
        }
        self.status
    }

    /// Ends the process group (SIGTERM, SIGKILL after a grace) and waits
    /// for its output to be complete.
    fn stop(&mut self) {
        // SAFETY: kill only sends a signal to the group we started.
        unsafe { libc::kill(-self.pgid, libc::SIGTERM) };
        if !self.out.wait_closed(STOP_GRACE) {
            // SAFETY: as above.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
            self.out.wait_closed(STOP_GRACE);
        }
        self.wait(STOP_GRACE);
    }
}

/// A block, where it is and what it says, for messages.
fn at(b: &Block) -> String {
    format!("{}:{} (under {:?})", b.file, b.line, b.heading)
}

fn show(text: &str) -> String {
    let t = clean(text);
    let t = t.trim_end();
    if t.is_empty() {
        "  (nothing)".into()
    } else {
        t.lines().map(|l| format!("  | {l}\n")).collect()
    }
}

/// A block left running until its recipe ends, and what it is to show.
struct Background<'a> {
    proc: Proc,
    block: &'a Block,
    expected: Vec<String>,
}

/// One recipe being run: where, with what ports, and what runs meanwhile.
struct Recipe<'a> {
    env: &'a Env,
    rw: Rewrite,
    background: Vec<Background<'a>>,
}

/// Runs the blocks of one recipe in `env`; the first failure.
pub fn run_recipe(blocks: &[(Block, Opts)], env: &Env) -> Result<(), String> {
    let all: String = blocks.iter().map(|(b, _)| b.body.as_str()).collect();
    let mut r = Recipe { env, rw: Rewrite::new(&all), background: Vec::new() };
    let result = r.run(blocks);
    for bg in &mut r.background {
        bg.proc.stop();
    }
    result
}

impl<'a> Recipe<'a> {
    fn run(&mut self, blocks: &'a [(Block, Opts)]) -> Result<(), String> {
        for (b, o) in blocks {
            match b.lang.as_str() {
                "sh" => self.script(b, o)?,
                "console" if o.terminal => run_terminal(b, o, &self.rw, self.env)?,
                "console" => self.console(b, o)?,
                other => return Err(format!("{}: cannot run a {other:?} block", at(b))),
            }
        }
        // What background blocks showed.
        for bg in &self.background {
            let expected = &bg.expected;
            if !expected.is_empty()
                && !bg.proc.out.wait_until(WAIT_LIMIT, |t| matches(expected, t, true))
            {
                return Err(format!(
                    "{}: expected at first:\n{}but it printed:\n{}",
                    at(bg.block),
                    show(&expected.join("\n")),
                    show(&bg.proc.out.text())
                ));
            }
        }
        Ok(())
    }

    fn script(&mut self, b: &'a Block, o: &Opts) -> Result<(), String> {
        let script = self.rw.command(&b.body);
        match o.background {
            true => self.start(b, o, &script, Vec::new(), true),
            false => finish(&mut self.env.spawn(&script, true), b, o, &script),
        }
    }

    fn console(&mut self, b: &'a Block, o: &Opts) -> Result<(), String> {
        let steps = transcript(&b.body).map_err(|e| format!("{}: {e}", at(b)))?;
        let expected = |step: &Step| step.output.iter().map(|l| self.rw.text(l)).collect();
        if o.background {
            let [step] = &steps[..] else {
                return Err(format!("{}: a background console block has one command", at(b)));
            };
            let command = self.rw.command(&step.command);
            return self.start(b, o, &command, expected(step), false);
        }
        // One shell for the block, as one terminal: what a command sets (a
        // variable, a directory) holds for the next. A line after each
        // command tells its output and status from the next one's.
        let commands: Vec<String> = steps.iter().map(|s| self.rw.command(&s.command)).collect();
        let script: String =
            commands.iter().map(|c| format!("{c}\nprintf '\\n{STEP_END} %d\\n' $?\n")).collect();
        let mut p = self.env.spawn(&script, false);
        let ended = p.wait(COMMAND_LIMIT).is_some();
        p.stop();
        let out = p.out.text();
        let mut rest = out.as_str();
        for (step, command) in steps.iter().zip(&commands) {
            let mark = format!("\n{STEP_END} ");
            let Some(i) = rest.find(&mark) else {
                let why = if ended {
                    "did not end (the shell exited)"
                } else {
                    "still ran after a minute"
                };
                return Err(format!("{}: `{command}` {why}; it printed:\n{}", at(b), show(rest)));
            };
            let (status, tail) = rest[i + mark.len()..].split_once('\n').unwrap_or(("", ""));
            verdict(b, o, command, status.parse().ok(), &rest[..i], Some(&expected(step)))?;
            rest = tail;
        }
        Ok(())
    }

    /// Starts a background block and waits until it is ready: what its
    /// `wait-for` options say, or else its transcript (`expected`).
    fn start(
        &mut self,
        b: &'a Block,
        o: &Opts,
        command: &str,
        expected: Vec<String>,
        errexit: bool,
    ) -> Result<(), String> {
        let mut p = self.env.spawn(command, errexit);
        let ready = match o.wait_for.is_empty() && o.wait_for_port.is_empty() {
            true if !p.out.wait_until(WAIT_LIMIT, |t| matches(&expected, t, true)) => {
                Err("its transcript never showed".to_owned())
            }
            true => Ok(()),
            false => wait_ready(&p, o, &self.rw),
        };
        if let Err(why) = ready {
            let out = p.out.text();
            p.stop();
            return Err(format!(
                "{}: `{command}`: {why}; expected:\n{}it printed:\n{}",
                at(b),
                show(&expected.join("\n")),
                show(&out)
            ));
        }
        self.background.push(Background { proc: p, block: b, expected });
        Ok(())
    }
}

/// Waits for a background block to be ready: what `wait-for` says.
fn wait_ready(p: &Proc, o: &Opts, rw: &Rewrite) -> Result<(), String> {
    for text in &o.wait_for {
        let text = rw.text(text);
        if !p.out.wait_until(WAIT_LIMIT, |t| t.contains(&text)) {
            return Err(format!("{text:?} never showed"));
        }
    }
    for &port in &o.wait_for_port {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], rw.port(port)));
        let deadline = Instant::now() + WAIT_LIMIT;
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if Instant::now() > deadline || p.out.wait_closed(Duration::from_millis(50)) {
                return Err(format!("nothing listens on {addr}"));
            }
        }
    }
    Ok(())
}

/// Waits for a foreground process, then checks its status and output.
fn finish(p: &mut Proc, b: &Block, o: &Opts, what: &str) -> Result<(), String> {
    let status = p.wait(COMMAND_LIMIT);
    // What it started in the background ends with it.
    p.stop();
    let out = p.out.text();
    let Some(status) = status else {
        return Err(format!(
            "{}: `{what}` still ran after {COMMAND_LIMIT:?}; it printed:\n{}",
            at(b),
            show(&out)
        ));
    };
    verdict(b, o, what, status.code(), &out, None)
}

/// Whether a command that ended with `code` and printed `out` did as its
/// block says.
fn verdict(
    b: &Block,
    o: &Opts,
    what: &str,
    code: Option<i32>,
    out: &str,
    expected: Option<&[String]>,
) -> Result<(), String> {
    if !o.accepts(code) {
        let code = code.map_or("a signal".to_owned(), |c| format!("exit {c}"));
        return Err(format!("{}: `{what}` ended with {code}; it printed:\n{}", at(b), show(out)));
    }
    if let Some(expected) = expected
        && !matches(expected, out, false)
    {
        return Err(format!(
            "{}: `{what}` was to print:\n{}but printed:\n{}",
            at(b),
            show(&expected.join("\n")),
            show(out)
        ));
    }
    Ok(())
}

/// rustyline turns bracketed paste on each time it starts reading a line:
/// the sign that a typed line now reaches the editor.
const READING: &str = "\x1b[?2004h";

/// A console block on a pseudo-terminal: its one command, a `> TEXT` line
/// typed once the lines before it have shown, Ctrl-D at the end.
fn run_terminal(b: &Block, o: &Opts, rw: &Rewrite, env: &Env) -> Result<(), String> {
    use expectrl::Expect;
    use expectrl::process::unix::WaitStatus;
    let steps = transcript(&b.body).map_err(|e| format!("{}: {e}", at(b)))?;
    let [step] = &steps[..] else {
        return Err(format!("{}: a terminal block has one command", at(b)));
    };
    let command = rw.command(&step.command);
    let mut c = env.command("bash");
    c.arg("-c").arg(&command).env("TERM", "xterm");
    let mut session = expectrl::Session::spawn(c).map_err(|e| format!("{}: pty: {e}", at(b)))?;
    session.set_expect_timeout(Some(Duration::from_millis(100)));
    let mut seen: Vec<u8> = Vec::new();
    let fill = |session: &mut expectrl::session::OsSession, seen: &mut Vec<u8>| -> bool {
        match session.expect(expectrl::Regex("(?s-u).+")) {
            Ok(m) => {
                seen.extend_from_slice(m.as_bytes());
                true
            }
            Err(expectrl::Error::ExpectTimeout) => true,
            Err(_) => false,
        }
    };
    let fail = |what: String, seen: &[u8]| {
        Err(format!(
            "{}: `{command}`: {what}; the screen showed:\n{}",
            at(b),
            show(&String::from_utf8_lossy(seen))
        ))
    };
    // Where the next expected line is looked for (in the cleaned text), and
    // the next READING mark (in the raw bytes).
    let (mut pos, mut reading) = (0usize, 0usize);
    for line in &step.output {
        let deadline = Instant::now() + WAIT_LIMIT;
        if let Some(typed) = line.strip_prefix("> ") {
            loop {
                let raw = &seen[reading.min(seen.len())..];
                if let Some(i) = raw.windows(READING.len()).position(|w| w == READING.as_bytes()) {
                    reading += i + READING.len();
                    break;
                }
                if Instant::now() > deadline || !fill(&mut session, &mut seen) {
                    return fail(format!("never ready for {typed:?}"), &seen);
                }
            }
            session.send(format!("{typed}\r")).map_err(|e| e.to_string())?;
            // The typed line's echo is not the output looked for next.
            let echoed = format!("> {typed}");
            loop {
                let text = clean(&String::from_utf8_lossy(&seen));
                if let Some(i) = text.get(pos..).and_then(|t| t.find(&echoed)) {
                    pos += i + echoed.len();
                    break;
                }
                if Instant::now() > deadline || !fill(&mut session, &mut seen) {
                    return fail(format!("{echoed:?} never showed"), &seen);
                }
            }
            continue;
        }
        if strip_note(line).is_empty() {
            continue;
        }
        let re = Regex::new(&line_pattern(&rw.text(line))).unwrap();
        loop {
            let text = clean(&String::from_utf8_lossy(&seen));
            if let Some(m) = text.get(pos..).and_then(|t| re.find(t)) {
                pos += m.end();
                break;
            }
            if Instant::now() > deadline || !fill(&mut session, &mut seen) {
                return fail(format!("{:?} never showed", strip_note(line)), &seen);
            }
        }
    }
    // After a `/quit` the REPL may be gone already.
    let _ = session.send("\x04");
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        fill(&mut session, &mut seen);
        match session.get_process().status() {
            Ok(WaitStatus::Exited(_, code)) if o.accepts(Some(code)) => return Ok(()),
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {}
            other => return fail(format!("ended with {other:?}"), &seen),
        }
    }
}

/// The directory that holds `ssechan`: the binary under test.
pub fn bin_dir(root: &Path) -> PathBuf {
    let dir = root.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ssechan"), dir.join("ssechan")).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes() {
        assert_eq!(Opts::parse(None).unwrap(), Opts::default());
        let o = Opts::parse(Some(r#"background, wait-for "listening on, here""#)).unwrap();
        assert!(o.background && o.wait_for == ["listening on, here"]);
        let o = Opts::parse(Some("background, wait-for-port 8081, wait-for-port 8082")).unwrap();
        assert_eq!(o.wait_for_port, [8081, 8082]);
        assert_eq!(
            Opts::parse(Some("skip: it takes minutes")).unwrap().skip.as_deref(),
            Some("it takes minutes")
        );
        assert_eq!(Opts::parse(Some("exit 0|1")).unwrap().exit, [0, 1]);
        assert!(Opts::parse(Some("skip:")).is_err());
        assert!(Opts::parse(Some("backgroud")).is_err());
        assert!(Opts::parse(Some(r#"wait-for "x""#)).is_err(), "only in the background");
    }

    fn rewrite(ports: &[(u16, u16)]) -> Rewrite {
        Rewrite { ports: ports.iter().copied().collect() }
    }

    #[test]
    fn commands_get_their_ports_defaults_and_caps() {
        let rw = rewrite(&[(8080, 40001), (6379, 40002)]);
        assert_eq!(
            rw.command("ssechan serve --echo --redis redis://127.0.0.1:6379/0 &\n"),
            "ssechan serve --listen 127.0.0.1:40001 --echo --redis redis://127.0.0.1:40002/0 &\n"
        );
        assert_eq!(
            rw.command("ssechan serve --listen :8080 -- ./greet.sh"),
            "ssechan serve --listen :40001 -- ./greet.sh"
        );
        assert_eq!(
            rw.command("ssechan bench http://127.0.0.1:8080/sse --clients 100 \\\n  --rate 500 -d 60s | tail -3"),
            "ssechan bench http://127.0.0.1:40001/sse --clients 20 \\\n  --rate 500 -d 2s | tail -3"
        );
        assert_eq!(rw.command("ssechan bench"), "ssechan bench --duration 2s");
        assert_eq!(rw.command("ssechan bench merge a.json"), "ssechan bench merge a.json");
        assert_eq!(
            rw.command("ssechan bench --start-at +60s --messages 5"),
            "ssechan bench --start-at +3s --messages 5"
        );
        assert_eq!(
            rw.command("ssechan check http://localhost:8080/sse --idle-probe=60s"),
            "ssechan check http://localhost:40001/sse --idle-probe=10s"
        );
        assert_eq!(rw.command("ssechan check --list"), "ssechan check --list");
        assert_eq!(
            rw.command("ssechan check http://h/sse"),
            "ssechan check --idle-probe 1s http://h/sse"
        );
        assert_eq!(rw.command("echo 18080 8080.5 v8080"), "echo 18080 8080.5 v8080");
    }

    #[test]
    fn transcripts_and_matching() {
        let steps = transcript("$ a \\\n  b\nout 1\n\n$ c\n").unwrap();
        assert_eq!(
            steps[0],
            Step { command: "a \\\n  b".into(), output: vec!["out 1".into(), "".into()] }
        );
        assert_eq!(steps[1], Step { command: "c".into(), output: vec![] });
        assert!(transcript("out\n$ a\n").is_err());

        let e = |s: &str| s.lines().map(str::to_owned).collect::<Vec<_>>();
        assert!(matches(
            &e("connected as 63746ef9-04f5-4704-816c-7cded5ccf0b5"),
            "connected as 0b9a7c2e-1d2f-4a5b-8c9d-0e1f2a3b4c5d\n",
            false
        ));
        assert!(matches(&e("took 0.010 s   ← a note"), "took 2.5 s\n\n", false));
        let secret = "/3f9c0e5a8d2b47e1a06c9b4f7d31e2a8/sse";
        assert!(matches(&e(secret), "/5078463e3ba74009b0535428a32c8346/sse", false));
        assert!(matches(&e("a\n…\nd"), "a\nb\nc\nd\n", false));
        assert!(matches(&e("a…z"), "abcz", false));
        assert!(!matches(&e("a\nd"), "a\nb\nd\n", false));
        assert!(!matches(&e("3 sent"), "4 sent", false));
        assert!(matches(&e("a"), "a\nmore\n", true));
        assert!(!matches(&e("a"), "a\nmore\n", false));
        assert_eq!(clean("\x1b[2mdim\x1b[0m\r\n\x1b[?2004h> x"), "dim\n> x");
    }
}
