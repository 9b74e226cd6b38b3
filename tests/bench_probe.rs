//! bench's first contact (src/bench/mod.rs `first_contact`): the probe a
//! run sends before its clients is a client as any other, so the server
//! counts no refusal for it.

mod util;

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use util::*;

/// `ssechan_refusals_total` by status, from the metrics listener.
async fn refusals(metrics: &str) -> Vec<(String, u64)> {
    let text = reqwest::get(metrics).await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter_map(|l| l.strip_prefix("ssechan_refusals_total{status=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(status, n)| (status.to_owned(), n.trim().parse().expect("a count")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bench_run_leaves_no_refusal_in_the_servers_metrics() {
    let mut serve = Serve::spawn(&["--echo", "--metrics", "127.0.0.1:0"]).await;
    let line = serve.err_line_with("metrics on ").await;
    let metrics = line.split("metrics on ").nth(1).expect("a URL").trim().to_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["bench", &serve.url, "--clients", "2", "--messages", "10", "--json", "-"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("bench finished in time")
        .expect("run bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let counted = refusals(&metrics).await;
    assert!(!counted.is_empty(), "no refusal counts in the metrics");
    let refused: Vec<_> = counted.iter().filter(|(_, n)| *n > 0).collect();
    assert!(refused.is_empty(), "the server counted refusals: {refused:?}\n{stderr}");
    // The probe was a client: its message came in with the clients' 20.
    let text = reqwest::get(&metrics).await.expect("metrics").text().await.expect("text");
    assert!(text.lines().any(|l| l == "ssechan_messages_in_total 21"), "{text}");
}
