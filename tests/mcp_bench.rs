//! `ssechan bench --mcp`: the real binary's MCP sessions against the
//! reference server behind `serve --mcp` (a process per session) and
//! against its own Streamable HTTP transport.

#[path = "support/mcp_peers.rs"]
mod mcp_peers;
mod util;

use std::process::Stdio;
use std::time::Duration;

use mcp_peers::*;
use serde_json::Value;
use tokio::process::Command;
use util::*;

/// One bench run's exit code, JSON report and stderr.
async fn bench(url: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["bench", "--mcp", url, "--json", "-"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("bench finished in time")
        .expect("run ssechan bench");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stderr}"));
    (out.status.code().unwrap_or(-1), v, stderr)
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} is not a count: {v}"))
}

async fn bridge(flags: &[&str]) -> Serve {
    let args = bridge_args(flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Serve::spawn(&args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_cut_every_500ms_through_serve_mcp_lose_nothing() {
    let serve = bridge(&[]).await;
    let (code, v, stderr) =
        bench(&serve.url, &["-c", "4", "-d", "3s", "--drop-every", "500ms"]).await;
    assert_eq!(code, 0, "{stderr}\n{v}");
    assert_eq!(v["mode"], "mcp");
    assert!(u(&v, "drops") > 0, "{v}");
    assert!(u(&v, "resumes") >= u(&v, "drops"), "every cut resumed: {v}");
    assert!(u(&v, "received") > 0, "{v}");
    assert_eq!(u(&v, "sent"), u(&v, "received"), "{v}");
    for k in ["lost", "duplicated", "corrupted", "errors"] {
        assert_eq!(u(&v, k), 0, "{k}: {v}");
    }
    assert!(v["resume_ms"]["max"].as_f64().unwrap() > 0.0, "resumes are timed: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_servers_own_transport_answers_every_echo() {
    let reference = Reference::start().await;
    let (code, v, stderr) = bench(&reference.url, &["-c", "2", "-m", "50", "--window", "4"]).await;
    assert_eq!(code, 0, "{stderr}\n{v}");
    assert_eq!((u(&v, "sent"), u(&v, "received"), u(&v, "lost")), (100, 100, 0), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_counted_by_status_and_fail_the_run() {
    // One request in flight per session: a window of 8 is refused 429.
    let serve = bridge(&["--max-session-streams", "1"]).await;
    let (code, v, stderr) = bench(&serve.url, &["-c", "2", "-m", "40", "--window", "8"]).await;
    assert_eq!(code, 1, "{stderr}\n{v}");
    let refused = v["refusals"]["429"].as_u64().unwrap_or(0);
    assert!(refused > 0, "{v}");
    assert!(v["failures"].to_string().contains("refusals"), "{v}");
    assert_eq!(u(&v, "received") + refused, u(&v, "sent"), "each call answered or refused: {v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_is_an_error_fails_the_run() {
    let serve = bridge(&[]).await;
    let (code, v, stderr) =
        bench(&serve.url, &["-c", "1", "-m", "3", "--tool", "no-such-tool"]).await;
    assert_eq!(code, 1, "{stderr}\n{v}");
    let samples = v["error_samples"].to_string();
    assert!(samples.contains("answered with an error"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tool_arguments_are_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["bench", "--mcp", "http://127.0.0.1:9/mcp", "--args", "[1]"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--args must be a JSON object"));
}

/// A server whose echo is wrong for every 5th call and answered twice for
/// every 7th (again on the next call's stream: tests/support/faulty_mcp.py),
/// through the real binary: each is counted where it belongs, and the
/// verdict fails naming both.
#[tokio::test(flavor = "multi_thread")]
async fn a_faulty_server_s_corrupted_and_duplicated_answers_are_counted() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/faulty_mcp.py");
    let mut server = Command::new("python3")
        .args([script, "5", "7"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs tests/support/faulty_mcp.py");
    let mut out = lines(server.stdout.take().expect("stdout"));
    let line = tokio::time::timeout(WAIT, out.recv())
        .await
        .expect("the faulty server listens in time")
        .expect("its listening line");
    let port = line.strip_prefix("listening on ").expect("listening on PORT");
    let url = format!("http://127.0.0.1:{port}/mcp");
    let (code, v, stderr) = bench(&url, &["-c", "1", "-m", "68", "--window", "1"]).await;
    assert_eq!(code, 1, "{stderr}\n{v}");
    // Calls 1..=68: 5, 10, … 65 corrupted (13); 7, 14, … 63 answered
    // twice (9; 63's second time on call 64's stream).
    assert_eq!((u(&v, "sent"), u(&v, "received"), u(&v, "lost")), (68, 68, 0), "{v}");
    assert_eq!(u(&v, "corrupted"), 13, "{v}");
    assert_eq!(u(&v, "duplicated"), 9, "{v}");
    let failures = v["failures"].to_string();
    assert!(failures.contains("corrupted") && failures.contains("duplicated"), "{v}");
}
