//! `ssechan bench` end to end: the real binary against the embedded server,
//! a real `ssechan serve --echo` child, and faulty servers written here.

#[path = "support/bench_servers.rs"]
mod bench_servers;
#[path = "support/chromium.rs"]
mod chromium;
#[path = "support/nchan.rs"]
mod nchan;
#[path = "support/tls_cert.rs"]
mod tls_cert;

use std::process::Stdio;
use std::time::Duration;

use bench_servers::Fault;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// A generous limit for one bench run on a slow, busy machine.
const RUN_LIMIT: Duration = Duration::from_secs(30);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}):\n{}\n{}", self.stdout, self.stderr)
        })
    }
}

async fn bench(args: &[&str]) -> Run {
    bench_with_files(args, None).await
}

/// Runs `ssechan ARGS` (not only bench) with `env` set and `stdin` fed.
async fn ssechan(args: &[&str], env: &[(&str, &str)], stdin: Option<String>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssechan"));
    cmd.args(args).envs(env.iter().copied()).kill_on_drop(true);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run ssechan");
    if let Some(text) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut w = child.stdin.take().unwrap();
        w.write_all(text.as_bytes()).await.unwrap();
    }
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("ssechan finished in time")
        .expect("wait for ssechan");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs bench with its open-file limit (soft and hard) set to `files`.
async fn bench_with_files(args: &[&str], files: Option<u64>) -> Run {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let limits: Vec<_> = files.map(|n| (libc::RLIMIT_NOFILE, n)).into_iter().collect();
    ssechan_limited(&all, &limits).await
}

/// Runs `ssechan ARGS` with these resource limits (soft and hard) set.
async fn ssechan_limited(args: &[&str], limits: &[(libc::__rlimit_resource_t, u64)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssechan"));
    let limits = limits.to_vec();
    // SAFETY: only setrlimit, which is async-signal-safe, runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            for &(resource, n) in &limits {
                let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                if libc::setrlimit(resource, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.args(args).stdin(Stdio::null()).kill_on_drop(true).output();
    let out = tokio::time::timeout(RUN_LIMIT, child)
        .await
        .expect("ssechan finished in time")
        .expect("run ssechan");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} is not a count: {v}"))
}

fn failure_names(v: &Value) -> Vec<String> {
    v["failures"]
        .as_array()
        .expect("failures is a list")
        .iter()
        .map(|f| f.as_str().unwrap_or("").split(':').next().unwrap_or("").to_string())
        .collect()
}

const FIELDS: &[&str] = &[
    "mode",
    "url",
    "embedded",
    "clients",
    "connected",
    "sent",
    "received",
    "lost",
    "duplicated",
    "out_of_order",
    "corrupted",
    "drops",
    "resumes",
    "failed_resumes",
    "stream_ends",
    "post_errors",
    "posts",
    "refusals",
    "timeouts",
    "errors",
    "error_samples",
    "duration_s",
    "throughput_msgs_per_s",
    "latency_ms",
    "recovery_ms",
    "connect_ms",
    "resume_ms",
    "post_connections",
    "bench_cpu_s",
    "bench_cpu_us_per_msg",
    "events",
    "events_per_s",
    "stream_events_per_s",
    "first_event_ms",
    "id_gaps",
    "id_restarts",
    "idle",
    "events_short",
    "passed",
    "failures",
    "shards",
    "started_at",
    "checks",
    "warnings",
    "histograms",
    "id_format",
    "ids_unordered",
    "ids_absent",
];

fn assert_schema(v: &Value) {
    for k in FIELDS {
        assert!(v.get(k).is_some(), "JSON report lacks {k}: {v}");
    }
    for h in ["latency_ms", "recovery_ms", "resume_ms", "connect_ms", "first_event_ms"] {
        for p in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v[h][p].is_number(), "{h}.{p} missing: {v}");
        }
    }
    for h in ["latency", "recovery", "resume", "connect", "first_event"] {
        let s = v["histograms"][h].as_str().unwrap_or_else(|| panic!("histograms.{h}: {v}"));
        assert!(s.starts_with("HISTF"), "histograms.{h} is V2 base64: {s}");
    }
    for c in v["checks"].as_array().expect("checks is a list") {
        for k in ["name", "measured", "bound", "limit", "unit", "passed"] {
            assert!(c.get(k).is_some(), "check lacks {k}: {c}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_default_passes() {
    let r = bench(&["--clients", "4", "--messages", "50", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_schema(&v);
    assert_eq!(v["mode"], "echo");
    assert_eq!(v["embedded"], true);
    assert_eq!(u(&v, "clients"), 4);
    assert_eq!(u(&v, "connected"), 4);
    assert_eq!(u(&v, "sent"), 200);
    assert_eq!(u(&v, "received"), 200);
    for k in ["lost", "duplicated", "out_of_order", "corrupted", "errors", "drops", "timeouts"] {
        assert_eq!(u(&v, k), 0, "{k}: {v}");
    }
    assert_eq!(v["passed"], true);
    assert_eq!(v["failures"].as_array().map(Vec::len), Some(0));
    assert!(v["throughput_msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["duration_s"].as_f64().unwrap() > 0.0);
    assert!(v["bench_cpu_s"].as_f64().unwrap() > 0.0);
    let lat = &v["latency_ms"];
    assert!(lat["p50"].as_f64().unwrap() > 0.0);
    assert!(lat["p50"].as_f64() <= lat["p99"].as_f64());
    assert!(lat["p99"].as_f64() <= lat["max"].as_f64());
    assert!(v["connect_ms"]["max"].as_f64().unwrap() > 0.0);
    assert_eq!(u(&v, "post_connections"), 4);
    assert_eq!(v["refusals"], serde_json::json!({}), "{v}");
    assert_eq!(u(&v, "posts"), 200, "{v}");
    // With --json - the human report goes to stderr, and no progress
    // display when stderr is not a terminal.
    assert!(r.stderr.contains("verdict     PASSED"), "{}", r.stderr);
    assert!(!r.stderr.contains('\r'), "no progress bar off a terminal: {:?}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn human_report_on_stdout_and_json_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.json");
    let r = bench(&[
        "--clients",
        "2",
        "--messages",
        "20",
        "--window",
        "4",
        "--json",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("verdict     PASSED"), "{}", r.stdout);
    assert!(r.stdout.contains("latency"), "{}", r.stdout);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_schema(&v);
    assert_eq!((u(&v, "sent"), u(&v, "received")), (40, 40));
}

type StderrLines = tokio::io::Lines<BufReader<tokio::process::ChildStderr>>;

/// Starts `ssechan ARGS` (stdin piped, stdout to `stdout`) and reads its
/// stderr until `find` picks something from a line: returns the child,
/// that, what stderr said up to there, and the rest of it.
async fn spawn_watching<T>(
    args: &[&str],
    stdout: Stdio,
    find: impl Fn(&str) -> Option<T>,
) -> (tokio::process::Child, T, String, StderrLines) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ssechan");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let found = tokio::time::timeout(RUN_LIMIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push_str(&line);
            said.push('\n');
            if let Some(x) = find(&line) {
                return x;
            }
        }
        panic!("ssechan {args:?} ended before the line looked for: {said}");
    })
    .await
    .expect("the line looked for");
    (child, found, said, lines)
}

/// `ssechan serve ARGS` as a child process (stdin piped, stderr drained);
/// returns it and its URL.
async fn spawn_serve(args: &[&str]) -> (tokio::process::Child, String) {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let (child, url, _, mut lines) = spawn_watching(&all, Stdio::null(), |line| {
        let i = line.find("https://").or_else(|| line.find("http://"))?;
        Some(line[i..].trim().to_string())
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// `ssechan serve --echo ARGS`.
async fn serve_echo(extra: &[&str]) -> (tokio::process::Child, String) {
    let mut args = vec!["--echo"];
    args.extend_from_slice(extra);
    spawn_serve(&args).await
}

#[tokio::test(flavor = "multi_thread")]
async fn against_a_real_serve_child() {
    let (_serve, url) = serve_echo(&["--keep-alive", "10s"]).await;
    let r =
        bench(&[&url, "--clients", "3", "--messages", "40", "--size", "200", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["embedded"], false);
    assert_eq!(v["url"], url.as_str());
    assert_eq!((u(&v, "sent"), u(&v, "received"), u(&v, "lost")), (120, 120, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn open_loop_against_a_real_serve_child() {
    let (_serve, url) = serve_echo(&[]).await;
    let r = bench(&[&url, "-c", "4", "--rate", "400", "--duration", "1s", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    // 400/s for 1 s: 400 messages, each client's share scheduled exactly.
    assert_eq!(u(&v, "sent"), 400, "{v}");
    assert_eq!(u(&v, "received"), 400, "{v}");
    // Not before the schedule's end (a busy machine may take longer).
    let d = v["duration_s"].as_f64().unwrap();
    assert!(d >= 0.9, "open loop keeps its schedule: {d}");
}

#[tokio::test(flavor = "multi_thread")]
async fn correct_test_server_passes() {
    // Guards the faulty-server tests: the harness itself is sound.
    let url = bench_servers::faulty_echo(Fault::None).await;
    let r = bench(&[&url, "-c", "3", "-m", "30", "--window", "4", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(u(&r.json(), "received"), 90);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_that_drops_messages_fails_lost() {
    // --drain decides that an echo will not come: long enough for every
    // echo that does come, on a busy machine too.
    let url = bench_servers::faulty_echo(Fault::DropEvery(10)).await;
    let r = bench(&[&url, "-c", "3", "-m", "30", "--drain", "1s", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    // messageIds 9, 19 and 29 of each client are never echoed.
    assert_eq!(u(&v, "sent"), 90);
    assert_eq!(u(&v, "lost"), 9, "{v}");
    assert_eq!(u(&v, "received"), 81);
    assert_eq!(v["passed"], false);
    assert_eq!(failure_names(&v), ["lost"], "{v}");
    // The same run passes once that loss is allowed.
    let r =
        bench(&[&url, "-c", "3", "-m", "30", "--drain", "1s", "--max-lost", "9", "--json", "-"])
            .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_refusing_one_post_in_100_fails_the_verdict() {
    // 503 to the first POST of messageIds 99 and 199 of each client; the
    // retry is taken. Every message still arrives exactly once, and the
    // refusals are shown in every report and fail the run.
    let url = bench_servers::faulty_echo(Fault::RefuseOnce(100, 503)).await;
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("bench.xml");
    let args = [&url, "-c", "2", "-m", "200", "--window", "4", "--json", "-"];
    let mut first = args.to_vec();
    first.extend(["--junit", xml.to_str().unwrap()]);
    let r = bench(&first).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["refusals"], serde_json::json!({"503": 4}), "{v}");
    assert_eq!(u(&v, "posts"), 404, "each refused POST answered twice: {v}");
    assert_eq!((u(&v, "sent"), u(&v, "received")), (400, 400), "{v}");
    for k in ["lost", "duplicated", "out_of_order", "corrupted", "errors"] {
        assert_eq!(u(&v, k), 0, "{k}: {v}");
    }
    assert_eq!(failure_names(&v), ["refusals"], "{v}");
    assert!(
        r.stderr.contains("refusals    4 of 404 POSTs answered with an error status: 503 \u{d7}4"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("FAIL  refusals        4 POSTs (max 0 POSTs)"), "{}", r.stderr);
    let x = std::fs::read_to_string(&xml).unwrap();
    validate_junit(&x);
    let failed: Vec<String> = junit_cases(&x).into_iter().filter(|c| c.1).map(|c| c.0).collect();
    assert_eq!(failed, ["refusals"], "{x}");
    assert!(x.contains("4 of 404 POSTs answered with an error status (503 \u{d7}4)"), "{x}");
    // Allowed by count or by share (4 of 404 is 0.99%).
    for (limit, code) in [("4", 0), ("3", 1), ("1%", 0), ("0.5%", 1)] {
        let mut a = args.to_vec();
        a.extend(["--max-refusals", limit]);
        let r = bench(&a).await;
        assert_eq!(r.code, code, "--max-refusals {limit}: {}", r.stderr);
        assert_eq!(r.json()["refusals"]["503"], 4, "{limit}");
    }
    let r = bench(&[&url, "--max-refusals", "5 %x"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_that_reorders_fails_out_of_order() {
    let url = bench_servers::faulty_echo(Fault::SwapPairs).await;
    let r = bench(&[&url, "-c", "2", "-m", "20", "--window", "2", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "out_of_order"), 20, "{v}");
    assert_eq!((u(&v, "lost"), u(&v, "duplicated")), (0, 0));
    assert_eq!(failure_names(&v), ["out_of_order"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_that_duplicates_fails_duplicated() {
    // Ids 4, 9 and 14 come twice; not the last one, whose copy could
    // arrive after the run ends.
    let url = bench_servers::faulty_echo(Fault::DuplicateEvery(5)).await;
    let r = bench(&[&url, "-c", "2", "-m", "18", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "duplicated"), 6, "{v}");
    assert_eq!((u(&v, "lost"), u(&v, "received")), (0, 36));
    assert_eq!(failure_names(&v), ["duplicated"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_that_corrupts_fails_corrupted() {
    let url = bench_servers::faulty_echo(Fault::Corrupt).await;
    let r = bench(&[&url, "-c", "1", "-m", "5", "--drain", "1s", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "corrupted"), 5, "{v}");
    assert_eq!(u(&v, "lost"), 5, "{v}");
    assert_eq!(failure_names(&v), ["lost", "corrupted"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_gate_fails() {
    let r = bench(&["-c", "2", "-m", "20", "--max-p99", "1us", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(failure_names(&v), ["p99"], "{v}");
    assert_eq!(u(&v, "lost"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn throughput_gate_fails_and_passes() {
    let r = bench(&["-c", "2", "-m", "20", "--min-throughput", "1e12", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(failure_names(&r.json()), ["throughput"]);
    let r =
        bench(&["-c", "2", "-m", "20", "--min-throughput", "1", "--max-p99", "10s", "--json", "-"])
            .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_against_keep_alive_loses_nothing() {
    let r = bench(&["-c", "4", "--duration", "2s", "--drop-every", "100ms", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert!(u(&v, "drops") > 4, "{v}");
    assert!(u(&v, "resumes") >= u(&v, "drops"), "{v}");
    assert!(u(&v, "received") > 0);
    assert_eq!(u(&v, "sent"), u(&v, "received"), "{v}");
    for k in ["lost", "duplicated", "out_of_order", "corrupted", "errors"] {
        assert_eq!(u(&v, k), 0, "{k}: {v}");
    }
    assert_eq!(v["refusals"], serde_json::json!({}), "{v}");
    assert!(v["recovery_ms"]["max"].as_f64().unwrap() > 0.0, "{v}");
    let resume = &v["resume_ms"];
    assert!(resume["p50"].as_f64().unwrap() > 0.0, "{v}");
    assert!(resume["max"].as_f64() <= v["recovery_ms"]["max"].as_f64(), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_without_keep_alive_reports_the_loss() {
    // No keep-alive: an echo written while the stream is cut has nowhere to
    // go. Open loop keeps messages in flight at every drop.
    let (_serve, url) = serve_echo(&[]).await;
    let r = bench(&[
        &url,
        "-c",
        "4",
        "--rate",
        "400",
        "--duration",
        "2s",
        "--drop-every",
        "50ms",
        "--drain",
        "500ms",
        "--json",
        "-",
    ])
    .await;
    let v = r.json();
    assert!(u(&v, "drops") > 0, "{v}");
    assert!(u(&v, "lost") > 0, "{v}");
    assert_eq!(u(&v, "lost") + u(&v, "received"), u(&v, "sent"), "{v}");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(failure_names(&v).contains(&"lost".to_string()), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_counts_a_known_stream_exactly() {
    let url = bench_servers::known_stream((1..=25).collect()).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "6", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_schema(&v);
    assert_eq!(v["mode"], "listen");
    assert_eq!(u(&v, "events"), 150, "{v}");
    assert_eq!(u(&v, "id_gaps"), 0, "{v}");
    assert_eq!(u(&v, "lost"), 0, "{v}");
    assert_eq!(u(&v, "connected"), 6);
    assert!(v["first_event_ms"]["max"].as_f64().unwrap() > 0.0, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_reports_id_gaps() {
    let ids = vec![1, 2, 3, 5, 6, 10, 11];
    let url = bench_servers::known_stream(ids).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "3", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "events"), 21);
    assert_eq!(u(&v, "id_gaps"), 6, "{v}");
    assert_eq!(u(&v, "lost"), 12, "{v}");
    assert_eq!(failure_names(&v), ["lost"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_counts_a_fresh_connection_as_an_id_restart() {
    // Each stream ends after id 4 (as a slow consumer is dropped); the
    // reconnect is a fresh connection whose ids begin again at 1.
    let url = bench_servers::reopening_stream((1..=4).collect(), (1..=6).collect()).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "3", "-m", "10", "--json", "-"]).await;
    let v = r.json();
    assert_eq!(u(&v, "events"), 30, "{v}");
    assert_eq!(u(&v, "id_restarts"), 3, "{v}");
    for k in ["out_of_order", "lost", "id_gaps", "errors"] {
        assert_eq!(u(&v, k), 0, "{k}: {v}");
    }
    // The end is counted and shown, and so is the time to come back.
    assert_eq!((u(&v, "stream_ends"), u(&v, "resumes")), (3, 3), "{v}");
    assert!(v["resume_ms"]["max"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["recovery_ms"]["max"].as_f64().unwrap() > 0.0, "{v}");
    assert!(r.stderr.contains("3 streams ended by the server"), "{}", r.stderr);
    assert!(r.stderr.contains("events sent in between are unknown"), "{}", r.stderr);
    // Events may have been missed, and bench cannot say how many.
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(failure_names(&v), ["id_restarts"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_counts_a_resume_as_a_continuation() {
    let url = bench_servers::reopening_stream((1..=4).collect(), (5..=9).collect()).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "2", "-m", "9", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "events"), u(&v, "stream_ends"), u(&v, "resumes")), (18, 2, 2), "{v}");
    for k in ["id_restarts", "out_of_order", "lost", "id_gaps"] {
        assert_eq!(u(&v, k), 0, "{k}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_still_counts_disorder_within_a_stream() {
    let url = bench_servers::known_stream(vec![1, 2, 3, 4, 2, 3, 4, 5]).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "2", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "out_of_order"), u(&v, "id_restarts")), (2, 0), "{v}");
    assert_eq!(failure_names(&v), ["out_of_order"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_duration_is_one_deadline_for_all_streams() {
    // Every stream floods; half the connections are answered only after
    // 30 s. The run still ends about 1 s after it started (well before
    // the slow half, whatever the machine's load), and the clients that
    // could not connect in that time are said to have failed.
    let url = bench_servers::flood(Duration::from_secs(30)).await;
    let t0 = std::time::Instant::now();
    let r =
        bench(&["--mode", "listen", "--raw", &url, "-c", "4", "--duration", "1s", "--json", "-"])
            .await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}: {}", r.stderr);
    let v = r.json();
    // The slow half cannot connect; the others should have (on a busy
    // machine one of them may not have managed within the second).
    let connected = u(&v, "connected");
    assert!((1..=2).contains(&connected), "{v}");
    assert_eq!(u(&v, "errors"), 4 - connected, "{v}");
    assert!(u(&v, "events") > 0, "{v}");
    assert!(v["duration_s"].as_f64().unwrap() < 5.0, "{v}");
    assert!(r.stderr.contains("not connected before the end of --duration"), "{}", r.stderr);
    assert_eq!(r.code, 1, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn unanswered_posts_end_the_run() {
    // A server that never answers a POST must not hang bench: each POST
    // times out, is retried, and the client gives up.
    let url = bench_servers::faulty_echo(Fault::HangPosts).await;
    let r = bench(&[
        &url,
        "-c",
        "2",
        "-m",
        "3",
        "--connect-timeout",
        "300ms",
        "--drain",
        "300ms",
        "--json",
        "-",
    ])
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "sent"), u(&v, "lost"), u(&v, "errors")), (2, 2, 2), "{v}");
    assert!(u(&v, "post_errors") >= 2, "{v}");
    assert!(r.stderr.contains("no answer within"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_before_the_end_of_the_duration_fails() {
    // The server closes after message 5 though the run is to last 2 s:
    // that is a failure even though every message sent was echoed (and
    // even though --messages, which --duration overrides, was reached).
    let url = bench_servers::faulty_echo(Fault::CloseAfter(5)).await;
    let r = bench(&[&url, "-c", "1", "-m", "3", "--duration", "2s", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "sent"), u(&v, "lost"), u(&v, "errors")), (6, 0, 1), "{v}");
    assert!(r.stderr.contains("closed by the server before the end"), "{}", r.stderr);
    // A close right after the last echo of a --messages run is the end.
    let r = bench(&[&url, "-c", "1", "-m", "6", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!((u(&r.json(), "received"), u(&r.json(), "errors")), (6, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_stops_after_messages_per_stream() {
    let url = bench_servers::known_stream((1..=50).collect()).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "2", "-m", "10", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(u(&r.json(), "events"), 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_target_exits_2() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/sse");
    let r = bench(&[&url, "-c", "2", "-m", "5"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
    assert!(r.stderr.contains("cannot reach"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_without_scheme_gets_connects_hint() {
    let r = bench(&["localhost:8080/sse", "-c", "1", "-m", "1"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.trim().ends_with("(did you mean http://localhost:8080/sse?)"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
}

/// Runs bench and says how long it took.
async fn timed_bench(args: &[&str]) -> (Run, Duration) {
    let t0 = std::time::Instant::now();
    let r = bench(args).await;
    (r, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_errors_end_the_run_at_once_whatever_the_duration() {
    // Servers that accept one connection every 300 ms: connecting 50
    // clients takes 15 s, and bench used to connect them all before its
    // first POST (so 501 took 10 s to say). The verdict is known at the
    // first contact. (Measured by hand: each exits in under 0.1 s.)
    let every = Duration::from_millis(300);
    let without_post =
        bench_servers::slow_to_accept(bench_servers::Site::SseWithoutPost, every).await;
    let (r, took) = timed_bench(&[&without_post, "--duration", "30s"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "ssechan: {without_post}: not a package:sse channel endpoint (POST answered 501); \
             to read a plain SSE stream use --mode listen --raw"
        )
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // A POST refused for another reason: its status and the reason's text.
    let forbidden = bench_servers::slow_to_accept(bench_servers::Site::ForbiddenPosts, every).await;
    let (r, took) = timed_bench(&[&forbidden, "--duration", "30s"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!("ssechan: {forbidden}: POST answered 403 Forbidden: missing credentials")
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    // Not an event stream: the first stream's answer stops the clients
    // still waiting to connect.
    let html = bench_servers::slow_to_accept(bench_servers::Site::Html, every).await;
    let (r, took) = timed_bench(&["--mode", "listen", "--raw", &html, "--duration", "30s"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!(
            "ssechan: cannot reach {html}: connect: not an event stream: Content-Type is \
             \"text/html\", not text/event-stream"
        )
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn error_pages_are_reduced_to_their_text() {
    // A POST refused for good after others were taken: the client's error
    // quotes the page's words, not `<!DOCTYPE HTML>`.
    let url = bench_servers::faulty_echo(Fault::HtmlErrorAfter(3)).await;
    let r = bench(&[&url, "-c", "1", "-m", "10", "--drain", "1s", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        first_sample(&r.json()),
        "POST of message 3 refused: 500 Internal Server Error: Oops Something broke & we \
         know it."
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_against_serve_tls() {
    let cert = tls_cert::Cert::new();
    let mut args = cert.args();
    args.push("--keep-alive".into());
    args.push("10s".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_serve, url) = serve_echo(&args).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let cacert = cert.cert.to_str().unwrap();
    // Trusted with --cacert; chaos too (every resume a new handshake).
    let r = bench(&[
        &url,
        "--cacert",
        cacert,
        "-c",
        "3",
        "--duration",
        "1s",
        "--drop-every",
        "200ms",
        "--json",
        "-",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert!(u(&v, "received") > 0, "{v}");
    assert_eq!(u(&v, "sent"), u(&v, "received"), "{v}");
    assert!(u(&v, "resumes") > 0, "{v}");
    assert_eq!((u(&v, "lost"), u(&v, "errors")), (0, 0), "{v}");
    // -k: not checked, and said so.
    let r = bench(&[&url, "-k", "-c", "2", "-m", "20", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(u(&r.json(), "received"), 40);
    assert!(
        r.stderr.contains("--insecure: the server's certificate is not checked"),
        "{}",
        r.stderr
    );
    // Listen mode over TLS.
    let r = bench(&[
        "--mode",
        "listen",
        &url,
        "--cacert",
        cacert,
        "-c",
        "2",
        "--duration",
        "300ms",
        "--min-events",
        "0",
        "--json",
        "-",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(u(&r.json(), "connected"), 2);
    // Neither: one line, with the way out.
    let r = bench(&[&url, "-c", "2", "-m", "5"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = r.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with(&format!("ssechan: cannot reach {url}: TLS: ")), "{line}");
    assert!(line.contains("certificate"), "{line}");
    assert!(line.ends_with("(--cacert FILE trusts it, -k skips the check)"), "{line}");
    // A bad --cacert is a usage error.
    let r = bench(&[&url, "--cacert", cert.key.to_str().unwrap(), "-c", "1", "-m", "1"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no PEM certificate"), "{}", r.stderr);
}

/// Starts bench (verbose, so it says when the load started), waits for
/// that, sends it SIGINT and returns what it did.
async fn interrupted_bench(args: &[&str], started: &str) -> (Run, Duration) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("-v");
    let (child, (), mut stderr, mut lines) =
        spawn_watching(&all, Stdio::piped(), |line| line.contains(started).then_some(())).await;
    let t0 = std::time::Instant::now();
    let pid = child.id().expect("pid") as libc::pid_t;
    // SAFETY: signals a child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let rest = tokio::spawn(async move {
        let mut s = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("bench ended after SIGINT")
        .unwrap();
    let took = t0.elapsed();
    stderr.push_str(&rest.await.unwrap());
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    };
    (run, took)
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_prints_the_run_so_far_and_exits_130() {
    let (r, took) =
        interrupted_bench(&["-c", "4", "--duration", "60s", "--json", "-"], "load started").await;
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(took < Duration::from_secs(20), "long before --duration: {took:?}");
    let v = r.json();
    assert_eq!(v["interrupted"], true, "{v}");
    assert!(v["duration_s"].as_f64().unwrap() < 60.0, "{v}");
    // What was in flight came back within the grace: nothing lost.
    assert_eq!(u(&v, "sent"), u(&v, "received"), "{v}");
    assert_eq!(u(&v, "lost"), 0, "{v}");
    assert!(r.stderr.contains("verdict     INTERRUPTED"), "{}", r.stderr);
    assert!(r.stderr.contains(", INTERRUPTED\n"), "{}", r.stderr);
    // Listen mode too.
    let (_serve, url) = serve_echo(&[]).await;
    let (r, _) = interrupted_bench(
        &[
            "--mode",
            "listen",
            &url,
            "-c",
            "2",
            "--duration",
            "60s",
            "--min-events",
            "0",
            "--json",
            "-",
        ],
        "connecting",
    )
    .await;
    assert_eq!(r.code, 130, "{}", r.stderr);
    let v = r.json();
    assert_eq!((v["interrupted"].as_bool(), u(&v, "errors")), (Some(true), 0), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_path_is_unreachable() {
    let (_serve, url) = serve_echo(&[]).await;
    let url = url.replace("/sse", "/nope");
    let r = bench(&[&url, "-c", "2", "-m", "5"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("404"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2() {
    for args in [
        &["--raw", "-m", "1"][..],
        &["--size", "10"],
        &["ftp://127.0.0.1/sse"],
        &["not a url"],
        &["--mode", "listen"],
        &["--window", "0"],
        &["--clients", "0"],
        &["--rate", "0"],
        &["-H", "no colon here"],
        &["--messages", "x"],
    ] {
        let r = bench(args).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.is_empty(), "{args:?} explains itself");
    }
}

/// Whether this process may raise its hard open-file limit (then bench may
/// too, and needs no shared POST connections).
fn can_raise_hard_file_limit() -> bool {
    // SAFETY: reads and writes only the struct passed.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        let raised = libc::rlimit { rlim_cur: lim.rlim_cur, rlim_max: lim.rlim_max + 1 };
        let ok = libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0;
        if ok {
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        ok
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn low_file_limit_shares_post_connections() {
    // 60 clients against the embedded server want 4 files each (240 + 256
    // spare); 400 leave room for the streams and a dozen shared POST lanes.
    let r = bench_with_files(&["-c", "60", "-m", "10", "--json", "-"], Some(400)).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "sent"), u(&v, "received"), u(&v, "errors")), (600, 600, 0), "{v}");
    if !can_raise_hard_file_limit() {
        let lanes = u(&v, "post_connections");
        assert!((1..60).contains(&lanes), "{v}");
        assert!(r.stderr.contains("shared POST connections"), "{}", r.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_to_a_broadcasting_serve_child() {
    // `ssechan serve` (text mode) sends each stdin line to every client:
    // the fan-out that listen mode measures, over the channel protocol.
    let (mut serve, url) = spawn_serve(&[]).await;
    let mut stdin = serve.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for i in 0.. {
            if stdin.write_all(format!("line {i}\n").as_bytes()).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let r = bench(&["--mode", "listen", &url, "-c", "3", "-m", "5", "--json", "-"]).await;
    feeder.abort();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "events"), 15, "{v}");
    assert_eq!((u(&v, "id_gaps"), u(&v, "errors")), (0, 0), "{v}");
    assert!(v["events_per_s"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn progress_shows_on_a_terminal() {
    use expectrl::{Expect, Session};
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ssechan"));
    cmd.args(["bench", "-c", "2", "--duration", "1500ms"]);
    let mut s = Session::spawn(cmd).expect("spawn bench on a pty");
    s.set_expect_timeout(Some(RUN_LIMIT));
    // Only the live line names reconnects and a rate; the report does not.
    s.expect("reconnects 0").expect("a progress line on the terminal");
    s.expect("verdict     PASSED").expect("the report after it");
}

/// Runs bench and checks it ended within `limit` (well below RUN_LIMIT, so
/// that a hang shows as a failure of this bound, not as a timeout).
async fn bench_within(limit: Duration, args: &[&str]) -> Run {
    let t0 = std::time::Instant::now();
    let r = bench(args).await;
    let took = t0.elapsed();
    assert!(took < limit, "{args:?} took {took:?}, over {limit:?}: {}", r.stderr);
    r
}

fn first_sample(v: &Value) -> String {
    v["error_samples"][0].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_ends_a_stream_that_goes_silent() {
    // 3 events, then the streams stay open and send nothing at all: with
    // -m 10 and no --duration, each stream ends after --drain without an
    // event; the 7 events each lacks fail the run.
    let url = bench_servers::quiet_stream(vec![1, 2, 3], None).await;
    let r = bench_within(
        Duration::from_secs(8),
        &[
            "--mode", "listen", "--raw", &url, "-c", "3", "-m", "10", "--drain", "300ms", "--json",
            "-",
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_schema(&v);
    assert_eq!((u(&v, "events"), u(&v, "idle"), u(&v, "events_short")), (9, 3, 21), "{v}");
    // Quiet is not a client failure, nor loss in the id sequence.
    assert_eq!((u(&v, "errors"), u(&v, "lost"), u(&v, "connected")), (0, 0, 3), "{v}");
    assert_eq!(failure_names(&v), ["idle"], "{v}");
    let sample = first_sample(&v);
    assert!(sample.contains("no event for 300ms (nothing at all) after 3 of 10 events"), "{v}");
    assert!(r.stderr.contains("3 streams had no event for --drain"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_heartbeats_do_not_keep_a_quiet_stream_going() {
    // Comments every 50 ms but no event after the 2nd: heartbeats alone
    // must not hold the run (they would forever).
    let url = bench_servers::quiet_stream(vec![1, 2], Some(Duration::from_millis(50))).await;
    let r = bench_within(
        Duration::from_secs(8),
        &[
            "--mode", "listen", "--raw", &url, "-c", "2", "-m", "5", "--drain", "400ms", "--json",
            "-",
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "events"), u(&v, "idle"), u(&v, "events_short")), (4, 2, 6), "{v}");
    assert!(first_sample(&v).contains("bytes but no event) after 2 of 5 events"), "{v}");
    assert_eq!(failure_names(&v), ["idle"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_quiet_is_no_failure_in_a_duration_run() {
    // With --duration, -m does not apply and the deadline ends the run: a
    // quiet stream is not ended early and lacks nothing.
    let url = bench_servers::quiet_stream(vec![1, 2, 3], None).await;
    let r = bench_within(
        Duration::from_secs(8),
        &[
            "--mode",
            "listen",
            "--raw",
            &url,
            "-c",
            "2",
            "--duration",
            "2s",
            "--drain",
            "100ms",
            "--json",
            "-",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "events"), u(&v, "idle"), u(&v, "events_short")), (6, 0, 0), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_ends_when_every_reconnect_ends_at_once() {
    // Each stream ends at once without an event and every reconnect
    // succeeds: the quiet is measured across reconnects, so this ends too.
    let url = bench_servers::empty_streams().await;
    let r = bench_within(
        Duration::from_secs(8),
        &[
            "--mode", "listen", "--raw", &url, "-c", "2", "-m", "3", "--drain", "300ms", "--json",
            "-",
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "events"), u(&v, "idle"), u(&v, "events_short")), (0, 2, 6), "{v}");
    assert!(u(&v, "stream_ends") >= 2, "{v}");
    assert!(first_sample(&v).contains("no event for 300ms (nothing at all) after 0 of 3"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_and_connect_timeout_have_a_floor() {
    for args in [
        &["--drain", "0"][..],
        &["--drain", "9ms"],
        &["--connect-timeout", "0s"],
        &["--mode", "listen", "http://127.0.0.1:1/sse", "--drain", "1ms"],
    ] {
        let r = bench(args).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
        assert!(r.stderr.contains("must be at least 10ms"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}");
    }
    // The floor itself is allowed. (Whether 10 ms is enough for every echo
    // depends on the machine's load, and a client with no echo within it
    // stops, so only the verdict's form is checked.)
    let r = bench(&["-c", "2", "-m", "50", "--drain", "10ms", "--json", "-"]).await;
    assert_ne!(r.code, 2, "{}", r.stderr);
    assert!(!r.stderr.contains("must be at least"), "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "received") + u(&v, "lost"), u(&v, "sent"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_echoing_ends_the_run() {
    // Echoes 3 messages, then POSTs are answered but nothing comes back.
    // Closed loop used to give each of the 1,000 messages up after --drain
    // in turn (200 s here); a client now stops when the message after one
    // given up is not echoed either.
    // (--drain long enough for the echoes that do come, on a busy machine.)
    let url = bench_servers::faulty_echo(Fault::StopAfter(3)).await;
    let r = bench_within(
        Duration::from_secs(10),
        &[&url, "-c", "2", "-m", "1000", "--drain", "1s", "--json", "-"],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    // Each client: 0-2 echoed, 3 given up, 4 not echoed either: stop.
    assert_eq!((u(&v, "sent"), u(&v, "lost"), u(&v, "timeouts")), (10, 4, 2), "{v}");
    assert_eq!(u(&v, "errors"), 2, "{v}");
    assert!(first_sample(&v).contains("no echo for 2s: the server stopped echoing"), "{v}");
    assert_eq!(failure_names(&v), ["lost", "errors"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_echoes_ends_the_run_at_the_first_drain() {
    // POSTs answered, nothing ever echoed: not a server that stopped, one
    // that does not echo at all, said after one --drain.
    let url = bench_servers::faulty_echo(Fault::DropEvery(1)).await;
    let r = bench_within(
        Duration::from_secs(8),
        &[&url, "-c", "2", "-m", "1000", "--drain", "200ms", "--json", "-"],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "sent"), u(&v, "lost"), u(&v, "timeouts")), (2, 2, 0), "{v}");
    assert_eq!(first_sample(&v), "the server does not echo: start it with `ssechan serve --echo`");
    assert_eq!(failure_names(&v), ["lost", "errors"], "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooded_stream_does_not_hold_the_run() {
    // The event stream is always ready (comments as fast as bench reads):
    // the POST answers and the timers behind it must still get their turn.
    let url = bench_servers::faulty_echo(Fault::FloodStream).await;
    let r = bench_within(
        Duration::from_secs(10),
        &[&url, "-c", "1", "--duration", "1s", "--drain", "300ms", "--json", "-"],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "received"), 0, "{v}");
    assert!(u(&v, "sent") >= 1 && u(&v, "sent") == u(&v, "lost"), "{v}");
    // Closed loop without --duration ends too, by the echo that never comes.
    let r = bench_within(
        Duration::from_secs(10),
        &[&url, "-c", "1", "-m", "100", "--drain", "300ms", "--json", "-"],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "sent"), u(&v, "timeouts"), u(&v, "errors")), (1, 0, 1), "{v}");
    assert!(first_sample(&v).starts_with("the server does not echo"), "{v}");
}

/// `xmllint --schema` against the published JUnit schema (tests/data).
fn validate_junit(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("junit.xml");
    std::fs::write(&file, xml).unwrap();
    let xsd = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/junit-10.xsd");
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", xsd])
        .arg(&file)
        .output()
        .expect("xmllint (Debian's libxml2-utils, installed by .ci/run)");
    assert!(
        out.status.success(),
        "JUnit XML does not validate: {}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(name, failed, skipped)` of each `<testcase>`, in order.
fn junit_cases(xml: &str) -> Vec<(String, bool, bool)> {
    let mut cases = Vec::new();
    for part in xml.split("<testcase ").skip(1) {
        let name = part.split("name=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
        let body = part.split("</testcase>").next().unwrap();
        cases.push((name.to_string(), body.contains("<failure"), body.contains("<skipped")));
    }
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn junit_has_a_case_per_check_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("bench.xml");
    let r = bench(&[
        "-c",
        "2",
        "-m",
        "20",
        "--max-p99",
        "1us",
        "--min-throughput",
        "1",
        "--junit",
        xml.to_str().unwrap(),
        "--json",
        "-",
    ])
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let x = std::fs::read_to_string(&xml).unwrap();
    validate_junit(&x);
    let cases = junit_cases(&x);
    let names: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "lost",
            "duplicated",
            "out_of_order",
            "corrupted",
            "refusals",
            "errors",
            "p99",
            "throughput"
        ],
        "{x}"
    );
    let failed: Vec<&str> = cases.iter().filter(|c| c.1).map(|c| c.0.as_str()).collect();
    assert_eq!(failed, ["p99"], "{x}");
    assert!(x.contains(r#"tests="8" failures="1""#), "{x}");
    // The limit and the measured value are in the case.
    assert!(x.contains("p99: ") && x.contains("(max 0.001 ms)"), "{x}");
    assert!(x.contains("<system-out>lost: 0 messages (max 0 messages)</system-out>"), "{x}");
    // The human report lists every check with its limit, passing ones too.
    for line in ["ok    lost", "ok    throughput", "FAIL  p99"] {
        assert!(r.stderr.contains(line), "{line:?} in {}", r.stderr);
    }
    assert!(r.stderr.contains("(min 1 /s)"), "{}", r.stderr);
    // The JSON holds the same checks.
    let v = r.json();
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 8, "{v}");
    assert_eq!(checks[6]["name"], "p99");
    assert_eq!(checks[6]["bound"], "max");
    assert_eq!(checks[6]["passed"], false);
    assert_eq!(checks[6]["limit"].as_f64(), Some(0.001));
    // To stdout, and validating when it passes too.
    let r = bench(&["-c", "2", "-m", "20", "--junit", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    validate_junit(&r.stdout);
    assert!(r.stderr.contains("verdict     PASSED"), "{}", r.stderr);
    assert!(junit_cases(&r.stdout).iter().all(|c| !c.1 && !c.2), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn junit_of_a_listen_run_names_its_checks() {
    let url = bench_servers::known_stream(vec![1, 2, 5]).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "2", "--junit", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    validate_junit(&r.stdout);
    let cases = junit_cases(&r.stdout);
    let names: Vec<&str> = cases.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(names, ["lost", "out_of_order", "id_restarts", "idle", "events", "errors"]);
    assert!(cases[0].1, "lost fails: {}", r.stdout);
    assert!(cases.iter().skip(1).all(|c| !c.1), "{}", r.stdout);
}

/// The percentiles `bench` reports for a histogram, computed here from
/// the serialized shard histograms added up.
fn percentiles_of(hists: &[&str]) -> (u64, Value) {
    use base64::Engine as _;
    let mut all: hdrhistogram::Histogram<u64> =
        hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for h in hists {
        let bytes = base64::engine::general_purpose::STANDARD.decode(h).unwrap();
        let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        all.add(&h).unwrap();
    }
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    let p = serde_json::json!({
        "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p999": ms(0.999),
        "max": all.max() as f64 / 1000.0,
    });
    (all.len(), p)
}

#[tokio::test(flavor = "multi_thread")]
async fn four_shards_merged_equal_one_run() {
    let (_serve, url) = serve_echo(&["--keep-alive", "10s"]).await;
    let dir = tempfile::tempdir().unwrap();
    let common = ["-c", "10", "-m", "30", "--window", "2"];
    // One unsharded run…
    let mut args = vec![url.as_str()];
    args.extend(common);
    args.extend(["--json", "-"]);
    let whole = bench(&args).await;
    assert_eq!(whole.code, 0, "{}", whole.stderr);
    let whole = whole.json();
    // …and the same workload as 4 shard processes started together.
    let files: Vec<String> =
        (1..=4).map(|i| dir.path().join(format!("s{i}.json")).display().to_string()).collect();
    let shards: Vec<String> = (1..=4).map(|i| format!("{i}/4")).collect();
    let runs = futures_util::future::join_all((0..4).map(|i| {
        let mut args = vec![url.as_str()];
        args.extend(common);
        args.extend(["--shard", &shards[i], "--start-at", "+1s", "--json", &files[i]]);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bench(&args).await
        }
    }))
    .await;
    let mut reports = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.code, 0, "shard {}: {}", i + 1, r.stderr);
        assert!(r.stdout.contains(&format!("shard {}/4", i + 1)), "{}", r.stdout);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&files[i]).unwrap()).unwrap();
        assert_eq!(v["shards"], serde_json::json!([shards[i]]));
        // 10 clients in 4 shards: 2, 3, 2, 3.
        assert_eq!(u(&v, "clients"), [2, 3, 2, 3][i], "{v}");
        reports.push(v);
    }
    let mut args = vec!["bench", "merge"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--json", "-", "--max-p99", "10s"]);
    let merged = ssechan(&args, &[], None).await;
    assert_eq!(merged.code, 0, "{}", merged.stderr);
    let m = merged.json();
    assert_schema(&m);
    for k in [
        "clients",
        "connected",
        "sent",
        "received",
        "lost",
        "duplicated",
        "out_of_order",
        "corrupted",
        "errors",
        "timeouts",
        "drops",
        "post_connections",
    ] {
        assert_eq!(u(&m, k), u(&whole, k), "{k}: merged {m}\nwhole {whole}");
    }
    assert_eq!((u(&m, "sent"), u(&m, "received")), (300, 300));
    assert_eq!(m["shards"], serde_json::json!(shards));
    // The merged percentiles are exactly those of all the samples.
    for (h, p) in [("latency", "latency_ms"), ("connect", "connect_ms")] {
        let hists: Vec<&str> =
            reports.iter().map(|r| r["histograms"][h].as_str().unwrap()).collect();
        let (count, expected) = percentiles_of(&hists);
        assert_eq!(m[p], expected, "{p}");
        let (merged_count, _) = percentiles_of(&[m["histograms"][h].as_str().unwrap()]);
        assert_eq!(merged_count, count, "{h}");
    }
    assert_eq!(percentiles_of(&[m["histograms"]["latency"].as_str().unwrap()]).0, 300);
    // The gate given to merge is the one checked.
    assert!(merged.stderr.contains("ok    p99"), "{}", merged.stderr);
    // The same from stdin, and a gate that fails.
    let all: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    let r =
        ssechan(&["bench", "merge", "-", "--max-lost", "0", "--max-p99", "1us"], &[], Some(all))
            .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.contains("4 shards merged"), "{}", r.stdout);
    assert!(r.stdout.contains("FAIL  p99"), "{}", r.stdout);
    // A missing shard is refused.
    let r = ssechan(&["bench", "merge", &files[0], &files[1], &files[3]], &[], None).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("shard 3/4 is missing"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_refuses_what_is_not_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.json");
    std::fs::write(&f, "{\"mode\": 3}").unwrap();
    let r = ssechan(&["bench", "merge", f.to_str().unwrap()], &[], None).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("x.json: not a bench JSON report"), "{}", r.stderr);
    let r = ssechan(&["bench", "merge", "/nonexistent.json"], &[], None).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("cannot read /nonexistent.json"), "{}", r.stderr);
}

/// A real report of a short run, as JSON.
async fn a_real_report() -> Value {
    let r = bench(&["-c", "2", "-m", "10", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()
}

/// HdrHistogram V2 (uncompressed) over 1 µs to 1 h, 3 digits, whose header
/// claims a payload of `claimed` bytes and which holds one count.
fn v2_histogram(claimed: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for word in [0x1c84_9313u32, claimed, 0, 3] {
        b.extend(word.to_be_bytes());
    }
    b.extend(1u64.to_be_bytes());
    b.extend(3_600_000_000u64.to_be_bytes());
    b.extend(1f64.to_be_bytes());
    b.extend([2, 0]);
    b
}

/// The same, deflated as HdrHistogram's compressed V2 form.
fn deflated_histogram(inner: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(inner).unwrap();
    let z = z.finish().unwrap();
    let mut b = 0x1c84_9314u32.to_be_bytes().to_vec();
    b.extend((z.len() as u32).to_be_bytes());
    b.extend(z);
    b
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_refuses_crafted_reports_in_one_line() {
    use base64::Engine as _;
    let good = a_real_report().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: &Value| {
        let f = dir.path().join(name);
        std::fs::write(&f, v.to_string()).unwrap();
        f.display().to_string()
    };
    let b64 = |b: &[u8]| Value::from(base64::engine::general_purpose::STANDARD.encode(b));
    let with = |field: &str, x: Value| {
        let mut v = good.clone();
        match field.split_once('.') {
            Some((a, b)) => v[a][b] = x,
            None => v[field] = x,
        }
        v
    };
    // Under 1 GiB of address space: a blob that makes merge allocate the
    // 4 GiB it claims aborts instead of answering.
    let merge = |files: Vec<String>| async move {
        let mut args = vec!["bench".to_string(), "merge".to_string()];
        args.extend(files);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ssechan_limited(&args, &[(libc::RLIMIT_AS, 1 << 30)]).await
    };
    let ok = write("good.json", &good);
    let r = merge(vec![ok.clone()]).await;
    assert_eq!(r.code, 0, "the limit leaves room for a real merge: {}", r.stderr);
    let claims = "claims a payload of 4294967295 bytes and holds 2 (they must be equal)";
    let max = u64::MAX.to_string();
    for (name, v, want) in [
        ("v2.json", with("histograms.latency", b64(&v2_histogram(u32::MAX))), claims),
        (
            "deflated.json",
            with("histograms.recovery", b64(&deflated_histogram(&v2_histogram(u32::MAX)))),
            claims,
        ),
        (
            "huge.json",
            with("duration_s", 1e300.into()),
            "duration_s: 1e300 is out of range (0 to 100000000)",
        ),
        (
            "negative.json",
            with("duration_s", (-1.0).into()),
            "duration_s: -1 is out of range (0 to 100000000)",
        ),
        (
            "rate.json",
            with("stream_events_per_s.mean", 1e300.into()),
            "stream_events_per_s.mean: 1e300 is out of range",
        ),
    ] {
        let f = write(name, &v);
        let r = merge(vec![ok.clone(), f.clone()]).await;
        assert_eq!(r.code, 2, "{name}: {}", r.stderr);
        let line = r.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{name}: one line: {line}");
        assert!(line.starts_with(&format!("ssechan: {f}: ")), "{name}: {line}");
        assert!(line.contains(want), "{name}: {want:?} in {line}");
        if name.ends_with("v2.json") {
            assert!(line.contains("histograms.latency: "), "{line}");
        }
        if name == "deflated.json" {
            assert!(line.contains("histograms.recovery: "), "{line}");
        }
    }
    // Sums that would wrap: refused, naming the count and the report.
    let big = write("big.json", &with("sent", Value::from(u64::MAX)));
    let r = merge(vec![big, ok.clone()]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr.trim(),
        format!("ssechan: {ok}: sent: the sum of the reports is over {max} (the largest count)")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_refuses_times_out_of_range_in_one_line() {
    let (_serve, url) = serve_echo(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let good = record_session(dir.path(), &url, Duration::from_millis(1));
    let text = std::fs::read_to_string(&good).unwrap();
    // Once a panic in every replaying client (1e308), once a replay that
    // never ended (1e20).
    for t in ["1e308", "1e20", "-5"] {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let i = lines.iter().position(|l| l.contains("\"event\":\"send\"")).unwrap();
        let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
        v["t_ms"] = serde_json::from_str(t).unwrap();
        lines[i] = v.to_string();
        let f = dir.path().join(format!("t{t}.jsonl"));
        std::fs::write(&f, lines.join("\n")).unwrap();
        let r = bench_within(Duration::from_secs(10), &["--scenario", f.to_str().unwrap()]).await;
        assert_eq!(r.code, 2, "{t}: {}", r.stderr);
        let line = r.stderr.trim();
        assert_eq!(line.lines().count(), 1, "{t}: {line}");
        assert!(line.starts_with(&format!("ssechan: --scenario {}: step ", f.display())), "{line}");
        assert!(
            line.contains(&format!("(\"send\"): t_ms {} is out of range (0 to 604800000 ms", t)),
            "{t}: {line}"
        );
    }
    // A speed that stretches the replay past a week.
    let r = bench_within(
        Duration::from_secs(10),
        &["--scenario", good.to_str().unwrap(), "--speed", "1e-12"],
    )
    .await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--speed 0.000000000001 stretches the replay past a week"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_says_which_url_the_file_chose_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: the notice comes first, then the failure.
    let file = record_session(dir.path(), "http://127.0.0.1:1/from-the-file", Duration::ZERO);
    let file = file.to_str().unwrap();
    let r = bench_within(Duration::from_secs(20), &["--scenario", file, "-c", "1"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(
            format!(
                "ssechan: --scenario {file}: replaying against http://127.0.0.1:1/from-the-file, \
                 the recording's URL (give a URL to use another)"
            )
            .as_str()
        ),
        "{}",
        r.stderr
    );
    assert!(lines[1..].iter().any(|l| l.contains("cannot reach")), "{}", r.stderr);
    // A URL given on the command line is used without a word.
    let (_serve, url) = serve_echo(&[]).await;
    let r = bench(&["--scenario", file, &url, "-c", "1", "--expect", "none"]).await;
    assert!(!r.stderr.contains("replaying against"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn shard_from_the_job_index_and_start_at() {
    let t0 = std::time::SystemTime::now();
    let r = ssechan(
        &["bench", "-c", "5", "-m", "5", "--shard", "2", "--start-at", "+1500ms", "--json", "-"],
        &[("JOB_COMPLETION_INDEX", "1")],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["shards"], serde_json::json!(["2/2"]));
    assert_eq!((u(&v, "clients"), u(&v, "sent")), (3, 15), "{v}");
    let started = humantime::parse_rfc3339(v["started_at"].as_str().unwrap()).unwrap();
    let waited = started.duration_since(t0).unwrap();
    assert!(waited >= Duration::from_millis(1500), "started {waited:?} after launch");
    for (args, env, why) in [
        (&["--shard", "4"][..], &[][..], "JOB_COMPLETION_INDEX"),
        (&["--shard", "4"], &[("JOB_COMPLETION_INDEX", "4")], "1 <= I <= N"),
        (&["--shard", "0/2"], &[], "1 <= I <= N"),
        (&["-c", "2", "--shard", "1/3"], &[], "has none"),
        (&["--start-at", "yesterday"], &[], "RFC 3339"),
        (&["--start-at", "+48h"], &[], "at most"),
        (&["--json", "-", "--junit", "-"], &[], "can write to stdout"),
        (&["--html", "-", "--junit", "-"], &[], "can write to stdout"),
    ] {
        let mut all = vec!["bench"];
        all.extend_from_slice(args);
        let r = ssechan(&all, env, None).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{args:?}: {}", r.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_with_no_event_fails_unless_allowed() {
    // A server that sends nothing at all used to PASS with `events 0`.
    let url = bench_servers::quiet_stream(vec![], None).await;
    let args = ["--mode", "listen", "--raw", &url, "-c", "2", "--duration", "500ms", "--json", "-"];
    let r = bench_within(Duration::from_secs(8), &args).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "events"), 0, "{v}");
    assert_eq!(failure_names(&v), ["events"], "{v}");
    assert!(r.stderr.contains("FAIL  events"), "{}", r.stderr);
    let mut allowed = args.to_vec();
    allowed.extend(["--min-events", "0"]);
    let r = bench_within(Duration::from_secs(8), &allowed).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // More than were delivered fails too.
    let url = bench_servers::known_stream(vec![1, 2, 3]).await;
    let r =
        bench(&["--mode", "listen", "--raw", &url, "-c", "2", "--min-events", "7", "--json", "-"])
            .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(failure_names(&r.json()), ["events"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_run_says_so() {
    let r = bench(&["-c", "2", "-m", "10", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let w = v["warnings"][0].as_str().unwrap_or_default();
    assert!(w.starts_with("short run ("), "{v}");
    assert!(r.stderr.contains("warning     short run"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_post_is_no_channel_endpoint() {
    // It used to run the whole 15 s, print the 501 page 5 times and fail
    // with `corrupted`. Closed and open loop (where clients send their
    // first message up to a second apart) both stop at the first answer.
    let url = bench_servers::plain_sse_without_post().await;
    for extra in [&[][..], &["--rate", "4"]] {
        let mut args = vec![url.as_str(), "-c", "4", "--duration", "20s"];
        args.extend_from_slice(extra);
        let r = bench_within(Duration::from_secs(8), &args).await;
        assert_eq!(r.code, 2, "{extra:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("not a package:sse channel endpoint (POST answered 501)"),
            "{extra:?}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
        assert!(!r.stderr.contains('<'), "no HTML: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_does_not_echo_is_named_within_drain() {
    // `ssechan serve` without `--echo`: POSTs accepted, nothing sent back.
    let (_serve, url) = spawn_serve(&[]).await;
    // Closed loop, and open loop (which has no full window to notice it).
    for extra in [&[][..], &["--rate", "30"]] {
        let mut args = vec![url.as_str(), "-c", "3", "--duration", "20s", "--drain", "500ms"];
        args.extend_from_slice(extra);
        args.extend(["--json", "-"]);
        let r = bench_within(Duration::from_secs(10), &args).await;
        assert_eq!(r.code, 1, "{extra:?}: {}", r.stderr);
        let v = r.json();
        assert_eq!(
            v["error_samples"],
            serde_json::json!(["the server does not echo: start it with `ssechan serve --echo`"]),
            "{extra:?}: {v}"
        );
        assert_eq!(u(&v, "errors"), 3, "{v}");
        assert_eq!(u(&v, "timeouts"), 0, "nothing given up one by one: {v}");
        assert!(r.stderr.contains("ssechan serve --echo"), "{}", r.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_honours_the_servers_retry() {
    // Each stream: `retry: 1000`, the next event, then the end. Re-opened
    // about once a second (once it was at once: ~106,000 times in 3 s).
    let url = bench_servers::retrying_stream(1000, true).await;
    let r = bench_within(
        Duration::from_secs(10),
        &["--mode", "listen", "--raw", &url, "-c", "2", "--duration", "2500ms", "--json", "-"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let ends = u(&v, "stream_ends");
    assert!((2..=8).contains(&ends), "2 streams, 1 s apart: {v}");
    // One event per stream opened.
    assert_eq!(u(&v, "events"), u(&v, "resumes") + 2, "{v}");
    assert_eq!((u(&v, "lost"), u(&v, "id_restarts"), u(&v, "errors")), (0, 0, 0), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_fails_when_every_stream_ends_at_once() {
    // `retry: 0` and an instant end, no event ever: the re-opens back off
    // from the reader's floor, and the run fails instead of passing with 0
    // events.
    let url = bench_servers::retrying_stream(0, false).await;
    let r = bench_within(
        Duration::from_secs(10),
        &["--mode", "listen", "--raw", &url, "-c", "2", "--duration", "2s", "--json", "-"],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "events"), u(&v, "errors")), (0, 2), "{v}");
    // 100, 200, 400, 800 ms... : a handful of re-opens, not thousands.
    let ends = u(&v, "stream_ends");
    assert!((4..=20).contains(&ends), "{v}");
    assert!(first_sample(&v).contains("ended the stream"), "{v}");
    assert!(failure_names(&v).contains(&"errors".to_string()), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_content_type_that_only_starts_like_event_stream_is_refused() {
    let url = bench_servers::with_content_type("text/event-streamx").await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "1", "-m", "1"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("text/event-streamx"), "{}", r.stderr);
    let url = bench_servers::with_content_type("text/event-stream; charset=utf-8").await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "1", "-m", "1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_orders_nchan_time_seq_ids() {
    // nchan's ids are `seconds:tag`: bench used to ignore them and print
    // `0 gaps, 0 missing, 0 out of order` while checking nothing.
    let nchan = nchan::Nchan::start().await;
    for i in 0..40 {
        nchan.publish(&format!("message {i}")).await;
    }
    let url = format!("{}/sub", nchan.base);
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "3", "-m", "40", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(u(&v, "events"), 120, "{v}");
    assert_eq!(v["id_format"], "time:seq", "{v}");
    assert_eq!((u(&v, "ids_unordered"), u(&v, "ids_absent")), (0, 0), "{v}");
    assert_eq!((u(&v, "id_gaps"), u(&v, "lost"), u(&v, "out_of_order")), (0, 0, 0), "{v}");
    assert!(r.stderr.contains("ids         time:seq: 0 gaps"), "{}", r.stderr);
    assert!(r.stderr.contains("ok    lost"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn listen_says_when_ids_cannot_be_ordered() {
    let url = bench_servers::stream_with_ids(vec!["7f3a", "c0de", "b00b5e"]).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "2", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "events"), u(&v, "ids_unordered")), (6, 6), "{v}");
    assert_eq!(v["id_format"], "", "{v}");
    assert!(
        r.stderr.contains("ids         not ordered (6 non-numeric), gaps not checked"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("0 gaps"), "{}", r.stderr);
    for name in ["lost", "out_of_order"] {
        let c = v["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(c["skipped"], "ids: not ordered (6 non-numeric), gaps not checked", "{c}");
    }
    // In JUnit they are skipped cases.
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "2", "--junit", "-"]).await;
    validate_junit(&r.stdout);
    let skipped: Vec<String> =
        junit_cases(&r.stdout).into_iter().filter(|c| c.2).map(|c| c.0).collect();
    assert_eq!(skipped, ["lost", "out_of_order"], "{}", r.stdout);
    // A number after a fixed prefix is a sequence.
    let url = bench_servers::stream_with_ids(vec!["msg-1", "msg-2", "msg-4"]).await;
    let r = bench(&["--mode", "listen", "--raw", &url, "-c", "2", "--json", "-"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["id_format"], "prefix+number", "{v}");
    assert_eq!((u(&v, "id_gaps"), u(&v, "lost")), (2, 2), "{v}");
    assert_eq!(failure_names(&v), ["lost"], "{v}");
}

/// Bytes of `post_stream`'s events 1..=n.
fn token_bytes(n: u64) -> u64 {
    (1..=n).map(|i| format!("id: {i}\ndata: token {i}\n\n").len() as u64).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn post_streams_are_completed_requests() {
    let url = bench_servers::post_stream().await;
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, r#"{"n": 5, "delay_ms": 30}"#).unwrap();
    let data = format!("@{}", body.display());
    let r = bench(&[
        "--mode",
        "listen",
        "--raw",
        "-X",
        "POST",
        "--data",
        &data,
        &url,
        "-c",
        "3",
        "--streams",
        "2",
        "--json",
        "-",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_schema(&v);
    assert_eq!((u(&v, "requests"), u(&v, "completed"), u(&v, "failed_requests")), (6, 6, 0));
    assert_eq!(u(&v, "events"), 30, "{v}");
    assert_eq!(u(&v, "bytes"), 6 * token_bytes(5), "{v}");
    assert_eq!((v["id_format"].as_str(), u(&v, "lost")), (Some("integer"), 0), "{v}");
    // The first event comes after one delay, the stream ends after five.
    assert!(v["first_event_ms"]["p50"].as_f64().unwrap() >= 30.0, "{v}");
    assert!(v["stream_ms"]["p50"].as_f64().unwrap() >= 150.0, "{v}");
    // Each stream's own pace (one event per 30 ms: 33/s), not the three
    // clients' together (100/s). Timed where bench reads, so a late first
    // event on a busy machine makes a stream look a little faster: the
    // bound is between the two.
    let rates = &v["stream_events_per_s"];
    assert!(rates["max"].as_f64().unwrap() < 2.0 * 1000.0 / 30.0, "{v}");
    assert!(rates["min"].as_f64().unwrap() > 0.0, "{v}");
    assert!(r.stderr.contains("requests    6: 6 completed, 0 failed"), "{}", r.stderr);
    assert!(r.stderr.contains("ok    failed_requests"), "{}", r.stderr);
    // The body inline, POST implied by --data.
    let r = bench(&[
        "--mode",
        "listen",
        "--raw",
        "--data",
        r#"{"n": 2}"#,
        &url,
        "-c",
        "2",
        "--json",
        "-",
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!((u(&r.json(), "completed"), u(&r.json(), "events")), (2, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn post_streams_at_a_rate() {
    // 20 new streams per second over 4 clients: each client's streams are
    // due 200 ms apart, the clients 50 ms apart.
    let url = bench_servers::post_stream().await;
    let run = |extra: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut args =
                vec!["--mode", "listen", "--raw", "--data", r#"{"n": 2, "delay_ms": 5}"#];
            args.extend([url.as_str(), "-c", "4", "--rate", "20", "--json", "-"]);
            args.extend(extra);
            bench(&args).await
        }
    };
    // 5 each: all 20 made; the last is due 950 ms after the start, so the
    // run lasts at least that (longer on a busy machine, where streams
    // start late: they are timed from when they were due).
    let r = run(&["--streams", "5"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(
        (u(&v, "requests"), u(&v, "completed"), u(&v, "failed_requests")),
        (20, 20, 0),
        "{v}"
    );
    assert_eq!(u(&v, "events"), 40, "{v}");
    let d = v["duration_s"].as_f64().unwrap();
    assert!(d >= 0.95, "the schedule held the streams back: {d} s, {v}");
    // For --duration 1s: no more than were due in it (back to back, the
    // clients would make dozens each). A stream the end cut is not counted
    // (how many depends on the machine's speed), but its events are.
    let r = run(&["--duration", "1s"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let (requests, completed) = (u(&v, "requests"), u(&v, "completed"));
    assert!((1..=20).contains(&requests), "{v}");
    assert_eq!((completed, u(&v, "failed_requests")), (requests, 0), "{v}");
    assert!(u(&v, "events") >= 2 * completed, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_refused_and_silent_post_streams_fail() {
    let url = bench_servers::post_stream().await;
    let run = |data: &'static str, extra: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut args =
                vec!["--mode", "listen", "--raw", "--data", data, &url, "-c", "2", "--json", "-"];
            args.extend_from_slice(extra);
            bench_within(Duration::from_secs(10), &args).await
        }
    };
    // Cut after 2 of 5 events: a broken stream.
    let r = run(r#"{"n": 5, "delay_ms": 0, "break_after": 2}"#, &[]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "failed_requests"), u(&v, "completed"), u(&v, "events")), (2, 0, 4));
    assert!(first_sample(&v).starts_with("stream broken after 2 events"), "{v}");
    assert_eq!(failure_names(&v), ["failed_requests"], "{v}");
    // An error status: the first one ends the run (the other client's
    // request may be cut then).
    let r = run("not json", &[]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert!((1..=2).contains(&u(&v, "failed_requests")), "{v}");
    assert_eq!(u(&v, "events"), 0, "{v}");
    assert!(first_sample(&v).contains("400"), "{v}");
    assert_eq!(failure_names(&v), ["failed_requests", "events"], "{v}");
    // Silent for --drain after the first event.
    let r = run(r#"{"n": 2, "delay_ms": 3000}"#, &["--drain", "300ms"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        first_sample(&r.json()).starts_with("no event for 300ms after 0 events"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn post_streams_against_ssechan_serve() {
    // A channel endpoint answers a POST without a client id with 400: each
    // request fails at once, named, and the run ends.
    let (_serve, url) = serve_echo(&[]).await;
    let r = bench_within(
        Duration::from_secs(10),
        &[
            "--mode",
            "listen",
            "--raw",
            "--data",
            "\"hi\"",
            &url,
            "-c",
            "2",
            "--streams",
            "3",
            "--json",
            "-",
        ],
    )
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    // The first refusal ends the run (nothing had succeeded): not all 6
    // requests are made; those in flight then are not counted.
    let failed = u(&v, "failed_requests");
    assert!((1..=2).contains(&failed), "{v}");
    assert_eq!((u(&v, "requests"), u(&v, "completed")), (failed, 0), "{v}");
    assert!(first_sample(&v).contains("400"), "{v}");
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("the run ended at the first request refused"),
        "{v}"
    );
    // -X GET of a channel stream: an event stream that stays open; cut by
    // --duration, it is neither completed nor failed.
    let r = bench_within(
        Duration::from_secs(10),
        &[
            "--mode",
            "listen",
            "--raw",
            "-X",
            "GET",
            &format!("{url}?sseClientId=x"),
            "-c",
            "1",
            "--duration",
            "500ms",
            "--min-events",
            "0",
            "--json",
            "-",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!((u(&v, "requests"), u(&v, "failed_requests")), (0, 0), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_flags_need_listen_raw() {
    for args in [
        &["--data", "{}"][..],
        &["--mode", "listen", "-X", "POST", "http://127.0.0.1:1/x"],
        &["--mode", "listen", "--raw", "--data", "@/nonexistent", "http://127.0.0.1:1/x"],
        &["--mode", "listen", "--raw", "-X", "BAD METHOD", "http://127.0.0.1:1/x"],
        &["--mode", "listen", "--raw", "--rate", "5", "http://127.0.0.1:1/x"],
    ] {
        let r = bench(args).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{args:?}: {}", r.stderr);
    }
}

/// A recorded channel session against `url`: three messages sent, each
/// echoed, written by the library's recorder (what `connect --record`
/// uses), with `gap` between the sends.
fn record_session(dir: &std::path::Path, url: &str, gap: Duration) -> std::path::PathBuf {
    use ssechan::connect::record::{Header, RecordMode, Recorder};
    let path = dir.join("session.jsonl");
    let header = Header::new(url, Some("me"), RecordMode::Channel, std::time::SystemTime::now());
    let rec = Recorder::create(&path, &header).unwrap();
    rec.event(r#"{"event":"connecting","attempt":1}"#).unwrap();
    rec.event(r#"{"event":"open","client":"me"}"#).unwrap();
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        rec.send(i as u64, format!("\"{text}\"").as_bytes()).unwrap();
        rec.event(&format!(r#"{{"event":"message","data":"{text}"}}"#)).unwrap();
    }
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_replays_a_recorded_session() {
    let (_serve, url) = serve_echo(&["--keep-alive", "10s"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = record_session(dir.path(), &url, Duration::from_millis(20));
    let file = file.to_str().unwrap();
    // The URL comes from the recording.
    let r = bench(&["--scenario", file, "-c", "4", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["mode"], "scenario");
    assert_eq!((u(&v, "sent"), u(&v, "received"), u(&v, "connected")), (12, 12, 4), "{v}");
    let sc = &v["scenario"];
    assert_eq!((sc["sends"].as_u64(), sc["steps"].as_u64()), (Some(3), Some(3)), "{v}");
    assert_eq!((sc["matched"].as_u64(), sc["diverged"].as_u64()), (Some(4), Some(0)), "{v}");
    assert!(r.stderr.contains("4 clients matched, 0 diverged"), "{}", r.stderr);
    assert!(r.stderr.contains("ok    diverged"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_says_where_clients_diverged() {
    // The recording was made against a correct echo server; this one never
    // echoes messageId 1 ("two"): every client diverges at step 2.
    let good = bench_servers::faulty_echo(Fault::None).await;
    let bad = bench_servers::faulty_echo(Fault::DropEvery(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = record_session(dir.path(), &good, Duration::from_millis(10));
    let file = file.to_str().unwrap();
    let args = ["--scenario", file, &bad, "-c", "3", "--drain", "2s", "--json", "-"];
    let r = bench_within(Duration::from_secs(10), &args).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(failure_names(&v), ["diverged"], "{v}");
    let d = &v["scenario"]["divergences"][0];
    assert_eq!((d["step"].as_u64(), d["clients"].as_u64()), (Some(2), Some(3)), "{v}");
    assert_eq!((d["expected"].as_str(), d["got"].as_str()), (Some("two"), Some("three")), "{v}");
    assert!(
        r.stderr.contains(r#"step 2      3 clients diverged"#)
            && r.stderr.contains(r#"expected "two", got "three""#),
        "{}",
        r.stderr
    );
    // By count: 2 of 3 is short too; with --expect none it is only load.
    let mut count = args.to_vec();
    count.extend(["--expect", "count"]);
    let r = bench_within(Duration::from_secs(10), &count).await;
    assert_eq!((r.code, failure_names(&r.json())), (1, vec!["diverged".to_string()]));
    let mut none = args.to_vec();
    none.extend(["--expect", "none"]);
    let r = bench_within(Duration::from_secs(10), &none).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("skip  diverged"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_counts_refusals_as_plain_bench_does() {
    // A server that answers the first POST of messageId 2 with 503 and
    // takes it when sent again: every client matches the recording, and
    // the refusals the retries hid still fail the run, unless allowed.
    let good = bench_servers::faulty_echo(Fault::None).await;
    let refusing = bench_servers::faulty_echo(Fault::RefuseOnce(3, 503)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = record_session(dir.path(), &good, Duration::from_millis(10));
    let file = file.to_str().unwrap();
    let args = ["--scenario", file, &refusing, "-c", "4", "--json", "-"];
    let r = bench(&args).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["refusals"], serde_json::json!({"503": 4}), "{v}");
    assert_eq!(u(&v, "posts"), 16, "each refused POST answered twice: {v}");
    assert_eq!((u(&v, "received"), v["scenario"]["matched"].as_u64()), (12, Some(4)), "{v}");
    assert_eq!(failure_names(&v), ["refusals"], "{v}");
    assert!(
        r.stderr.contains("refusals    4 of 16 POSTs answered with an error status: 503 \u{d7}4"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("FAIL  refusals        4 POSTs (max 0 POSTs)"), "{}", r.stderr);
    for (limit, code) in [("4", 0), ("3", 1), ("25%", 0), ("20%", 1)] {
        let mut a = args.to_vec();
        a.extend(["--max-refusals", limit]);
        let r = bench(&a).await;
        assert_eq!(r.code, code, "--max-refusals {limit}: {}", r.stderr);
        assert_eq!(r.json()["refusals"]["503"], 4, "{limit}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_speed_shortens_the_gaps() {
    let (_serve, url) = serve_echo(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = record_session(dir.path(), &url, Duration::from_secs(1));
    // The recording's span, from the stream's opening to the last send (at
    // least the 2 s slept, more on a busy machine).
    let (_, steps) = ssechan::connect::record::read_file(&file).unwrap();
    let t = |e: &str| steps.iter().rev().find(|s| s.what.event() == e).unwrap().t_ms / 1000.0;
    let span = t("send") - t("open");
    let file = file.to_str().unwrap();
    // At speed 1 the replay lasts at least that long; at speed 4 at least
    // a quarter of it, and less than all of it (1.5 s or more to spare for
    // connecting and the echoes).
    let r = bench(&["--scenario", file, "-c", "2", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let slow = r.json()["duration_s"].as_f64().unwrap();
    assert!(slow >= span, "{slow} s, recorded {span} s");
    let r = bench(&["--scenario", file, "-c", "2", "--speed", "4", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fast = r.json()["duration_s"].as_f64().unwrap();
    assert!(fast >= span / 4.0 && fast < span, "{fast} s, recorded {span} s");
    // Usage errors.
    for args in [
        &["--scenario", file, "--speed", "0"][..],
        &["--scenario", file, "--duration", "1s"],
        &["--scenario", "/nonexistent.jsonl"],
    ] {
        let r = bench(args).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_run_is_long_enough_and_says_how_long() {
    // It used to last under a second, so its figures jumped between runs.
    let r = bench(&["--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let d = v["duration_s"].as_f64().unwrap();
    assert!(d >= 10.0, "{d}");
    assert_eq!(u(&v, "clients"), 50);
    let first = r.stderr.lines().next().unwrap_or_default();
    assert!(first.ends_with(&format!("{d:.2} s")), "{first}");
    // Long enough not to be called short (unless the machine managed fewer
    // than 10,000 round trips in 10 s).
    if u(&v, "received") >= 10_000 {
        assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scenario_replays_what_connect_recorded() {
    // The real thing end to end: `connect --record` a session against an
    // echo server, then replay it with 5 clients.
    let (_serve, url) = serve_echo(&["--keep-alive", "10s"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session.jsonl");
    let file = file.to_str().unwrap();
    let rec = ssechan(
        &["connect", "--record", file, "--count", "3", "--wait", "100ms", &url],
        &[],
        Some("alpha\nbeta\ngamma\n".into()),
    )
    .await;
    assert_eq!(rec.code, 0, "{}", rec.stderr);
    let r = bench(&["--scenario", file, "-c", "5", "--speed", "2", "--json", "-"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let sc = &v["scenario"];
    assert_eq!((sc["sends"].as_u64(), sc["steps"].as_u64()), (Some(3), Some(3)), "{v}");
    assert_eq!((sc["matched"].as_u64(), u(&v, "received")), (Some(5), 15), "{v}");
}

#[tokio::test]
async fn a_data_file_past_16_mib_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; (16 << 20) + 1]).unwrap();
    let data = format!("@{}", big.display());
    let r = bench(&["--mode", "listen", "--raw", "--data", &data, "http://127.0.0.1:9/sse"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is over 16777216 bytes"), "{}", r.stderr);
}

/// The JSON a report page embeds (its `<script id="report">`).
fn embedded_json(html: &str) -> Value {
    let start =
        html.find("<script type=\"application/json\" id=\"report\">").expect("the data element")
            + "<script type=\"application/json\" id=\"report\">".len();
    let end = start + html[start..].find("</script>").expect("its end");
    serde_json::from_str(&html[start..end]).expect("JSON")
}

/// Where screenshots go: SSECHAN_SCREENSHOTS, or the test's temp dir.
fn screenshot_path(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    match std::env::var_os("SSECHAN_SCREENSHOTS") {
        Some(d) => std::path::PathBuf::from(d).join(name),
        None => dir.join(name),
    }
}

/// A PNG that is a picture: the signature, and more than a blank page's
/// bytes.
fn assert_picture(path: &std::path::Path) {
    let png = std::fs::read(path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert!(png.len() > 40_000, "{}: {} bytes, a blank page?", path.display(), png.len());
}

/// Figures (charts) of the page that drew something, by their id.
const DRAWN: &str = "[...document.querySelectorAll('figure[data-chart]')]\
    .filter((f) => f.querySelector('path.line, rect.bar'))\
    .map((f) => f.dataset.chart)";

#[tokio::test(flavor = "multi_thread")]
async fn html_report_of_a_chaos_run_draws_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let (html, json) = (dir.path().join("report.html"), dir.path().join("report.json"));
    let r = bench(&[
        "-c",
        "4",
        "--duration",
        "4s",
        "--drop-every",
        "300ms",
        "--html",
        html.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(&html).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let embedded = embedded_json(&text);
    for k in ["sent", "received", "drops", "resumes", "lost"] {
        assert_eq!(embedded[k], v[k], "{k}");
    }
    assert!(u(&v, "drops") > 0, "{v}");
    // Self-contained: nothing to fetch, and a policy that allows nothing else.
    for remote in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!text.contains(remote), "{remote}");
    }
    assert!(text.contains("default-src 'none'"));
    // Second by second: one sample a second of the run (4 s, and what
    // the echoes still in flight took after it), adding up to the run.
    let samples = v["timeline"]["samples"].as_array().unwrap();
    let end = samples.last().and_then(|s| s["t"].as_f64()).unwrap_or(0.0);
    assert!(samples.len() >= 3 && samples.len() as f64 <= end.ceil() + 1.0, "{v}");
    let received: u64 = samples.iter().map(|s| s["received"].as_u64().unwrap()).sum();
    assert_eq!(received, u(&v, "received"), "every echo in one second or another");
    let drops: u64 = samples.iter().map(|s| s["drops"].as_u64().unwrap()).sum();
    assert_eq!(drops, u(&v, "drops"));
    assert_eq!(v["command"][0], "ssechan");
    assert!(v["machine"]["cpus"].as_u64().unwrap() > 0);

    let mut browser = chromium::Browser::launch().await;
    let page = browser.open(&format!("file://{}", html.display())).await;
    browser.wait_for(&page, "window.ssechanReport", "the report to render").await;
    let drawn = browser.eval(&page, DRAWN).await;
    let drawn: Vec<&str> = drawn.as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    for chart in ["throughput", "latency", "distribution", "streams", "recovery"] {
        assert!(drawn.contains(&chart), "{chart} drawn: {drawn:?}");
    }
    // The figures shown are the report's.
    let card = |k: &str| {
        format!(
            "[...document.querySelectorAll('#figures .card')].find((c) => \
             c.querySelector('.k').textContent === '{k}').querySelector('.v').textContent"
        )
    };
    let shown = browser.eval(&page, &card("Throughput")).await;
    let shown: f64 = shown.as_str().unwrap().trim_end_matches("/s").parse().unwrap();
    let throughput = v["throughput_msgs_per_s"].as_f64().unwrap();
    assert!((shown - throughput).abs() <= 1.0, "{shown} vs {throughput}");
    let p99 = browser.eval(&page, &card("Latency p99")).await;
    let p99 = p99.as_str().unwrap();
    let want = v["latency_ms"]["p99"].as_f64().unwrap();
    let (n, unit) = p99.split_once(' ').unwrap();
    let n: f64 = n.parse().unwrap();
    let got = match unit {
        "µs" => n / 1000.0,
        "s" => n * 1000.0,
        _ => n,
    };
    assert!((got - want).abs() <= want * 0.01 + 0.001, "{p99} vs {want} ms");
    assert_eq!(
        browser.eval(&page, "document.getElementById('verdict').textContent").await,
        "PASSED"
    );
    let checks = browser.eval(&page, "document.querySelectorAll('#checks tr').length").await;
    assert_eq!(checks.as_u64(), Some(v["checks"].as_array().unwrap().len() as u64 + 1));
    let shot = screenshot_path(dir.path(), "bench-report.png");
    browser.screenshot_full(&page, 1280, &shot).await;
    assert_picture(&shot);
    // Dark, and printed.
    browser.emulate(&page, false, true).await;
    let bg = browser.eval(&page, "getComputedStyle(document.body).backgroundColor").await;
    assert_ne!(bg, "rgb(255, 255, 255)", "dark mode has a dark background");
    let dark = screenshot_path(dir.path(), "bench-report-dark.png");
    browser.screenshot_full(&page, 1280, &dark).await;
    assert_picture(&dark);
    browser.emulate(&page, true, false).await;
    let printed = screenshot_path(dir.path(), "bench-report-print.png");
    browser.screenshot_full(&page, 794, &printed).await;
    assert_picture(&printed);
    let pdf = browser.print_pdf(&page).await;
    assert!(pdf.starts_with(b"%PDF") && pdf.len() > 20_000, "{} bytes", pdf.len());
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn merged_html_shows_each_shard() {
    let (_serve, url) = serve_echo(&["--keep-alive", "10s"]).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<String> =
        (1..=2).map(|i| dir.path().join(format!("s{i}.json")).display().to_string()).collect();
    let runs = futures_util::future::join_all((0..2).map(|i| {
        let args: Vec<String> = [
            url.as_str(),
            "-c",
            "4",
            "--duration",
            "2s",
            "--shard",
            ["1/2", "2/2"][i],
            "--start-at",
            "+1s",
            "--json",
            &files[i],
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bench(&args).await
        }
    }))
    .await;
    for r in &runs {
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let html = dir.path().join("merged.html");
    let r = ssechan(
        &["bench", "merge", &files[0], &files[1], "--html", html.to_str().unwrap(), "--json", "-"],
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let runs = v["shard_runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    assert_eq!((runs[0]["shard"].as_str(), runs[1]["shard"].as_str()), (Some("1/2"), Some("2/2")));
    let sent: u64 = runs.iter().map(|s| s["sent"].as_u64().unwrap()).sum();
    assert_eq!(sent, u(&v, "sent"));
    // Started together: the skew is well under the second they waited.
    for s in runs {
        assert!(s["skew_ms"].as_f64().unwrap() < 1000.0, "{s}");
        assert!(!s["rates"].as_array().unwrap().is_empty(), "{s}");
    }
    // One timeline of both, on one clock.
    let samples = v["timeline"]["samples"].as_array().unwrap();
    let received: u64 = samples.iter().map(|s| s["received"].as_u64().unwrap()).sum();
    assert_eq!(received, u(&v, "received"));
    let mut browser = chromium::Browser::launch().await;
    let page = browser.open(&format!("file://{}", html.display())).await;
    browser.wait_for(&page, "window.ssechanReport", "the report to render").await;
    let rows = browser
        .eval(&page, "[...document.querySelectorAll('#shards tr')].slice(1).map((r) => r.cells[0].textContent)")
        .await;
    assert_eq!(rows, serde_json::json!(["1/2", "2/2"]));
    let lines = browser
        .eval(
            &page,
            "document.querySelectorAll('figure[data-chart=\"shard-throughput\"] path.line').length",
        )
        .await;
    assert_eq!(lines.as_u64(), Some(2));
    let drawn = browser.eval(&page, DRAWN).await;
    assert!(drawn.as_array().unwrap().len() >= 3, "{drawn}");
    let shot = screenshot_path(dir.path(), "bench-merged.png");
    browser.screenshot_full(&page, 1280, &shot).await;
    assert_picture(&shot);
    browser.close().await;
}

/// The events of an event stream, parsed as they come, by the project's
/// own parser.
async fn next_events(
    resp: &mut reqwest::Response,
    parser: &mut ssechan::protocol::parser::EventStreamParser,
) -> Vec<String> {
    use ssechan::protocol::parser::Parsed;
    let mut out = Vec::new();
    while out.is_empty() {
        let Some(chunk) = resp.chunk().await.expect("stream") else { break };
        parser.feed(&chunk);
        while let Ok(Some(item)) = parser.next_item() {
            if let Parsed::Event(ev) = item {
                out.push(ev.data);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_feeds_a_sample_a_second() {
    let args =
        ["bench", "-c", "4", "--duration", "6s", "--dashboard", "127.0.0.1:0", "--json", "-"];
    let (child, base, _, mut lines) = spawn_watching(&args, Stdio::piped(), |line| {
        line.strip_prefix("ssechan: dashboard at ").map(str::to_owned)
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let client = reqwest::Client::new();
    // The page: the report's page, fed by /events.
    let page = client.get(&base).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let page = page.text().await.unwrap();
    assert!(page.contains("data-live=\"events\""), "{page:.300}");
    assert_eq!(embedded_json(&page)["live"], true);
    // A page of another site (DNS rebinding) is refused.
    let evil = client.get(&base).header("host", "evil.example").send().await.unwrap();
    assert_eq!(evil.status(), 403);
    let mut resp = client.get(format!("{base}events")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // Viewers are bounded: the 17th is turned away, the run goes on.
    let mut viewers = Vec::new();
    for _ in 1..16 {
        let r = client.get(format!("{base}events")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        viewers.push(r);
    }
    let full = client.get(format!("{base}events")).send().await.unwrap();
    assert_eq!(full.status(), 503);
    drop(viewers);
    // The stream: a state a second, each with one more sample, then the
    // judged report.
    let mut parser = ssechan::protocol::parser::EventStreamParser::new();
    let mut states: Vec<Value> = Vec::new();
    let t0 = std::time::Instant::now();
    loop {
        let got =
            tokio::time::timeout(Duration::from_secs(10), next_events(&mut resp, &mut parser))
                .await
                .expect("a state within 10 s");
        if got.is_empty() {
            break;
        }
        for g in got {
            states.push(serde_json::from_str(&g).unwrap());
        }
        if states.last().is_some_and(|s| s.get("live").is_none()) {
            break;
        }
    }
    let took = t0.elapsed();
    let last = states.pop().expect("the final report");
    assert_eq!(last["passed"], true, "{last}");
    let samples: Vec<usize> =
        states.iter().map(|s| s["timeline"]["samples"].as_array().map_or(0, Vec::len)).collect();
    // One a second during a 6 s run, the latest only: a viewer that reads
    // late (a busy machine, the checks above) skips some, never all.
    assert!(samples.iter().filter(|&&n| n > 0).count() >= 2, "{samples:?} in {took:?}");
    assert!(samples.windows(2).all(|w| w[0] <= w[1]), "{samples:?}");
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output()).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["sent"], v["sent"]);
    assert_eq!(last["received"], v["received"]);
}
