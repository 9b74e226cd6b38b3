//! `ssechan connect --mcp`: the real binary against real MCP servers: the
//! reference server's own Streamable HTTP transport, the reference server
//! behind `serve --mcp` (a process per session), and the conformance
//! suite's client scenarios.

#[path = "support/mcp_peers.rs"]
mod mcp_peers;
mod util;

use std::process::Stdio;
use std::time::Duration;

use mcp_peers::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use util::*;

/// `ssechan connect --mcp ARGS URL` with its stdio piped.
struct Connect {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: mpsc::UnboundedReceiver<String>,
    /// Every stderr line read so far.
    said: Vec<String>,
}

impl Connect {
    fn start(url: &str, args: &[&str]) -> Connect {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ssechan"))
            .args(["connect", "--mcp"])
            .args(args)
            .arg(url)
            .env("RUST_LOG", "ssechan=info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ssechan connect --mcp");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let stderr = lines(child.stderr.take().expect("stderr"));
        let stdin = child.stdin.take();
        Connect { child, stdin, stdout, stderr, said: Vec::new() }
    }

    async fn say(&mut self, line: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write stdin");
        stdin.flush().await.expect("flush");
    }

    /// Ends stdin: the run waits for what it is owed, then ends.
    fn end_input(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line, a JSON-RPC message.
    async fn message(&mut self, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.stdout.recv())
            .await
            .expect("a message in time")
            .expect("stdout open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Messages until the response with id `id` (included).
    async fn until_response(&mut self, id: u64, within: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let m = self.message(within).await;
            let done = m["id"] == id && (m.get("result").is_some() || m.get("error").is_some());
            got.push(m);
            if done {
                return got;
            }
        }
    }

    /// Waits for a stderr line containing `needle`.
    async fn stderr_with(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(WAIT, self.stderr.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no stderr line with {needle:?}; said: {:#?}", self.said)
                })
                .unwrap_or_else(|| {
                    panic!("stderr ended before {needle:?}; said: {:#?}", self.said)
                });
            self.said.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The exit code, within `within`; stderr drained into `said`.
    async fn exit(&mut self, within: Duration) -> i32 {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("connect ended in time")
            .expect("wait");
        while let Some(l) = self.stderr.recv().await {
            self.said.push(l);
        }
        status.code().unwrap_or(-1)
    }

    fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }
}

async fn bridge(flags: &[&str]) -> Serve {
    let args = bridge_args(flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Serve::spawn(&args).await
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":arguments}})
}

fn long_call(id: u64, token: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":"trigger-long-running-operation",
        "arguments":{"duration":3,"steps":6},
        "_meta":{"progressToken":token}}})
}

fn text_of(response: &Value) -> &str {
    response["result"]["content"][0]["text"].as_str().unwrap_or_default()
}

fn progress_of(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .filter_map(|m| m["params"]["progress"].as_u64())
        .collect()
}

/// A pipe session: two calls, their answers on stdout (one message a
/// line), whom it reached on stderr, exit 0 at stdin's end.
async fn calls_in_a_pipe(url: &str, era: &str) {
    let mut c = Connect::start(url, &[]);
    let hello = c.stderr_with("connected to ").await;
    assert!(
        hello.contains("mcp-servers/everything") && hello.contains("revision 2025-11-25, session "),
        "{hello}"
    );
    let caps = c.stderr_with("capabilities: ").await;
    assert!(caps.contains("tools") && caps.contains("resources (subscribe"), "{caps}");
    c.say(&call(1, "echo", json!({"message": "hi"}))).await;
    c.say(&call(2, "get-sum", json!({"a": 2, "b": 3}))).await;
    c.end_input();
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let m = c.message(WAIT).await;
        if m.get("id").is_some() {
            answers.push(m);
        }
    }
    answers.sort_by_key(|m| m["id"].as_u64());
    assert_eq!(text_of(&answers[0]), "Echo: hi");
    assert_eq!(text_of(&answers[1]), "The sum of 2 and 3 is 5.");
    assert_eq!(c.exit(WAIT).await, 0, "{:#?}", c.said);
    assert!(c.said.iter().any(|l| l.contains(era)), "the era found: {:#?}", c.said);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipe_calls_tools_through_the_bridge() {
    let serve = bridge(&[]).await;
    // The bridge answers the per-request probe with the revisions it serves.
    calls_in_a_pipe(&serve.url, "server/discover refused with the revisions it serves").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipe_calls_tools_of_the_reference_server() {
    let reference = Reference::start().await;
    calls_in_a_pipe(&reference.url, "a session-era server").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_of_both_eras_is_spoken_to_in_the_per_request_one_unless_asked() {
    // The Python SDK serves 2026-07-28's per-request era and sessions on
    // one endpoint: the probe finds the new era, which a client of both
    // then speaks (no session, no GET stream); asked, it opens a session.
    let server = Reference::start_dual_era().await;
    for (flags, era, revision) in [
        (
            &[][..],
            "a server of the per-request era",
            "revision 2026-07-28, no session (per-request era)",
        ),
        (
            &["--protocol-version", "2025-11-25"][..],
            "asked for 2025-11-25",
            "revision 2025-11-25, session ",
        ),
    ] {
        let mut c = Connect::start(&server.url, flags);
        c.stderr_with(era).await;
        let hello = c.stderr_with("connected to py-dual-era").await;
        assert!(hello.contains(revision), "{hello}");
        c.say(&call(1, "echo", json!({"message": revision}))).await;
        c.end_input();
        let m = c.until_response(1, WAIT).await;
        assert_eq!(text_of(m.last().unwrap()), format!("Echo: {revision}"));
        assert_eq!(c.exit(WAIT).await, 0, "{:#?}", c.said);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_call_resumes_with_last_event_id_and_says_so() {
    let serve = bridge(&[]).await;
    let mut c = Connect::start(&serve.url, &[]);
    c.stderr_with("connected to ").await;
    c.say(&long_call(1, "p1")).await;
    c.end_input();
    let mut seen = Vec::new();
    while progress_of(&seen).len() < 2 {
        seen.push(c.message(WAIT).await);
    }
    c.signal(libc::SIGUSR1);
    c.stderr_with("request 1: cut (dropped on purpose)").await;
    let resumed = c.stderr_with("request 1: resumed after event ").await;
    // The id names the call's stream (docs/mcp.md: event ids).
    let id: u64 = resumed.rsplit(' ').next().unwrap().parse().expect("a numeric event id");
    assert!(ssechan::mcp::event_id::stream_of(id) >= 1, "{resumed}");
    seen.extend(c.until_response(1, WAIT).await);
    assert_eq!(progress_of(&seen), [1, 2, 3, 4, 5, 6], "every progress once, in order");
    let result = seen.last().unwrap();
    assert_eq!(text_of(result), "Long running operation completed. Duration: 3 seconds, Steps: 6.");
    assert_eq!(c.exit(WAIT).await, 0, "{:#?}", c.said);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_counted_by_status_and_said_at_the_end() {
    // One request in flight per session: of three long calls at once,
    // the two after the first are refused 429.
    let serve = bridge(&["--max-session-streams", "1"]).await;
    let mut c = Connect::start(&serve.url, &[]);
    c.stderr_with("connected to ").await;
    for id in 1..=3 {
        c.say(&long_call(id, &format!("p{id}"))).await;
    }
    c.end_input();
    let line = c.stderr_with("refusals: ").await;
    assert!(
        line.contains("refusals: 2 of 3 POSTs answered with an error status: 429 \u{d7}2"),
        "{line}"
    );
    assert_eq!(c.exit(WAIT).await, 1, "{:#?}", c.said);
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_still_owed_after_the_bound_are_named_and_fail_the_run() {
    // The reference server's own transport stores what a call sends after
    // a resume but never delivers it (its event store gives the SDK an
    // event id where a stream id is due): the answer never comes.
    let reference = Reference::start().await;
    let mut c = Connect::start(&reference.url, &["--answer-timeout", "5s"]);
    c.stderr_with("connected to ").await;
    c.say(&long_call(7, "p7")).await;
    c.end_input();
    let mut seen = Vec::new();
    while progress_of(&seen).len() < 2 {
        seen.push(c.message(WAIT).await);
    }
    c.signal(libc::SIGUSR1);
    c.stderr_with("request 7: resumed after event ").await;
    let line = c.stderr_with("answer(s) still owed").await;
    assert!(line.contains("1 answer(s) still owed 5s after stdin ended: request(s) 7"), "{line}");
    assert_eq!(c.exit(WAIT).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_session_revision_is_negotiated_and_others_refused() {
    let serve = bridge(&[]).await;
    for v in ["2025-06-18", "2025-03-26"] {
        let mut c = Connect::start(&serve.url, &["--protocol-version", v]);
        let hello = c.stderr_with("connected to ").await;
        assert!(hello.contains(&format!("revision {v}")), "{hello}");
        c.say(&call(1, "echo", json!({"message": v}))).await;
        c.end_input();
        let m = c.until_response(1, WAIT).await;
        assert_eq!(text_of(m.last().unwrap()), format!("Echo: {v}"));
        assert_eq!(c.exit(WAIT).await, 0);
    }
    // The bridge speaks no per-request revision: said, exit 1.
    let mut c = Connect::start(&serve.url, &["--protocol-version", "2026-07-28"]);
    c.end_input();
    c.stderr_with("does not speak 2026-07-28").await;
    assert_eq!(c.exit(WAIT).await, 1);
    // Not a revision at all: a usage error.
    let mut c = Connect::start(&serve.url, &["--protocol-version", "1999-01-01"]);
    c.stderr_with("--protocol-version 1999-01-01: ssechan speaks 2025-11-25").await;
    assert_eq!(c.exit(WAIT).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_line_is_said_and_skipped() {
    let serve = bridge(&[]).await;
    let mut c = Connect::start(&serve.url, &[]);
    c.stderr_with("connected to ").await;
    let stdin = c.stdin.as_mut().unwrap();
    stdin.write_all(b"not json\n").await.unwrap();
    c.say(&call(3, "echo", json!({"message": "after"}))).await;
    c.end_input();
    c.stderr_with("stdin line 1 is not a JSON-RPC message").await;
    let m = c.until_response(3, WAIT).await;
    assert_eq!(text_of(m.last().unwrap()), "Echo: after", "a bad line stops nothing");
    assert_eq!(c.exit(WAIT).await, 0, "{:#?}", c.said);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_the_server_ended_is_said_and_fails_the_run() {
    let serve = bridge(&[]).await;
    let mut c = Connect::start(&serve.url, &[]);
    let hello = c.stderr_with("connected to ").await;
    let session = hello.split("session ").nth(1).unwrap().trim_end_matches(')').to_owned();
    let deleted = http()
        .delete(&serve.url)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    c.say(&call(1, "echo", json!({"message": "too late"}))).await;
    c.stderr_with("the server ended the session (404)").await;
    assert_eq!(c.exit(WAIT).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn record_keeps_what_was_sent_and_received() {
    let serve = bridge(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mcp.jsonl");
    let mut c = Connect::start(&serve.url, &["--record", path.to_str().unwrap()]);
    c.say(&call(1, "echo", json!({"message": "kept"}))).await;
    c.end_input();
    c.until_response(1, WAIT).await;
    assert_eq!(c.exit(WAIT).await, 0);
    let (header, steps) = ssechan::connect::record::read_file(&path).expect("a record");
    assert_eq!(header.mode, ssechan::connect::record::RecordMode::Mcp);
    let sent: Vec<&ssechan::connect::record::Step> =
        steps.iter().filter(|s| s.what.event() == "send").collect();
    assert_eq!(sent.len(), 1);
    let got = steps.iter().any(|s| match &s.what {
        ssechan::connect::record::Recorded::Message { data, .. } => data.contains("Echo: kept"),
        _ => false,
    });
    assert!(got, "{steps:#?}");
}

/// The conformance suite's client scenario `scenario` against `command`
/// (the scenario's URL is appended): its checks, by id.
async fn client_scenario(scenario: &str, command: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(node())
        .arg(conformance_js())
        .args(["client", "--scenario", scenario, "--command", command, "-o"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("the scenario finished in time")
        .expect("run the conformance suite");
    let report = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|d| d.path().join("checks.json"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no checks.json:\n{}", String::from_utf8_lossy(&out.stderr)));
    let text = std::fs::read_to_string(report).unwrap();
    let checks: Vec<Value> = serde_json::from_str(&text).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("CLIENT EXITED WITH ERROR"), "{stdout}");
    checks
}

fn status_of<'a>(checks: &'a [Value], id: &str) -> &'a Value {
    checks.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id}: {checks:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_conformance_client_scenarios_pass() {
    let bin = env!("CARGO_BIN_EXE_ssechan");
    // The suite runs the command through a shell with the URL appended.
    let checks = client_scenario("initialize", &format!("{bin} connect --mcp < /dev/null")).await;
    let init = status_of(&checks, "mcp-client-initialization");
    assert_eq!(init["status"], "SUCCESS", "{init:#}");
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"test_reconnection","arguments":{}}}"#;
    let command = format!("{bin} connect --mcp --send '{call}' < /dev/null");
    let checks = client_scenario("sse-retry", &command).await;
    for id in ["client-sse-graceful-reconnect", "client-sse-last-event-id"] {
        assert_eq!(status_of(&checks, id)["status"], "SUCCESS", "{checks:#?}");
    }
    // The server's retry is 500 ms: not sooner (the suite allows 50 ms
    // early), and not on a schedule of our own. Later only by what a
    // busy machine adds (the suite warns past 700 ms).
    let timing = status_of(&checks, "client-sse-retry-timing");
    let delay = timing["details"]["actualDelayMs"].as_u64().expect("a measured delay");
    assert!((450..2000).contains(&delay), "{timing:#}");
    assert_ne!(timing["details"]["tooEarly"], true, "{timing:#}");
}
