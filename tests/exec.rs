//! `ssechan serve -- COMMAND`: one real process per client, its
//! environment, its stderr, and its end: nothing it starts outlives its
//! client or the server, nothing is left a zombie, and a process that
//! misbehaves costs bounded memory and is killed on schedule.

mod util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use util::*;

/// A process, told apart from a later one that reuses its pid.
#[derive(Debug, Clone, Copy)]
struct Pid {
    pid: i32,
    start: u64,
}

impl Pid {
    fn of(pid: i32) -> Pid {
        Pid {
            pid,
            start: start_time(pid).unwrap_or_else(|| panic!("process {pid} is not running")),
        }
    }

    /// Whether it still exists, zombie included: gone means reaped.
    fn exists(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    async fn gone(&self, what: &str) {
        eventually(what, || (!self.exists()).then_some(())).await
    }
}

/// Field 22 of /proc/PID/stat (after the parenthesised name).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// A line of /proc/PID/status or /proc/PID/io as a number (kB for memory).
fn proc_field(pid: i32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.trim().split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// A script that says its pid and its background child's, then echoes.
const SPAWNS_A_GRANDCHILD: &str =
    r#"echo "$$"; sleep 1000 & echo "$!"; while read -r l; do echo "got $l"; done"#;

/// `ssechan serve FLAGS -- sh -c SCRIPT`.
async fn serve_sh(flags: &[&str], script: &str) -> Serve {
    let mut args = flags.to_vec();
    args.extend_from_slice(&["--", "sh", "-c", script]);
    Serve::spawn(&args).await
}

async fn pids_of(s: &mut Stream) -> (Pid, Pid) {
    let main = s.next_msg().await.data.parse().expect("pid");
    let bg = s.next_msg().await.data.parse().expect("pid");
    (Pid::of(main), Pid::of(bg))
}

#[tokio::test]
async fn the_environment_is_cgi_like_and_nothing_else_leaks() {
    let serve = Serve::spawn_env(
        &["--passenv", "PASSED", "--allow-origin", "http://app.test", "--", "env"],
        &[("PASSED", "yes"), ("SECRET_TOKEN", "leaked")],
    )
    .await;
    let url = format!("{}?sseClientId=env-1&extra=a%20b", serve.url);
    let r = http()
        .get(&url)
        .header("accept", "text/event-stream")
        .header("origin", "http://app.test")
        .header("user-agent", "exec-test/1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut s = Stream::new(r);
    let mut env = BTreeMap::new();
    for e in s.until_end().await {
        if e.event == "message" {
            let line: String = serde_json::from_str(&e.data).unwrap();
            let (k, v) = line.split_once('=').unwrap();
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    let port = serve.url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "HTTP_ORIGIN",
            "HTTP_USER_AGENT",
            "PASSED",
            "PATH",
            "QUERY_STRING",
            "REMOTE_ADDR",
            "REMOTE_PORT",
            "REQUEST_PATH",
            "SERVER_NAME",
            "SERVER_PORT",
            "SSECHAN_CLIENT_ID",
            "SSECHAN_REMOTE_ADDR",
        ]
    );
    assert_eq!(env["SSECHAN_CLIENT_ID"], "env-1");
    assert_eq!(env["QUERY_STRING"], "sseClientId=env-1&extra=a%20b");
    assert_eq!(env["REQUEST_PATH"], "/sse");
    assert_eq!(env["SERVER_NAME"], "127.0.0.1");
    assert_eq!(env["SERVER_PORT"], port);
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert!(env["REMOTE_PORT"].parse::<u16>().is_ok());
    assert_eq!(env["HTTP_ORIGIN"], "http://app.test");
    assert_eq!(env["HTTP_USER_AGENT"], "exec-test/1");
    assert_eq!(env["PASSED"], "yes");
    assert_eq!(env["PATH"], std::env::var("PATH").unwrap());
}

#[tokio::test]
async fn stderr_goes_to_the_servers_prefixed_with_the_client_id_and_escaped() {
    let script =
        r#"echo "warned $SSECHAN_CLIENT_ID" >&2; while read -r l; do echo "said $l" >&2; done"#;
    let mut serve = serve_sh(&[], script).await;
    let _s = open(&serve.url, "err-me", None).await;
    assert_eq!(serve.err_line_with("warned").await, "[err-me] warned err-me");
    // What a client sends, repeated on stderr, must not drive the
    // operator's terminal (window title, screen clear, bidi override).
    let hostile = "\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{202e}x";
    assert_eq!(post(&http(), &serve.url, "err-me", 0, hostile).await, 200);
    let line = serve.err_line_with("said").await;
    assert_eq!(line, "[err-me] said ^[]0;PWNED^G^[[2J\\u{202e}x");
}

/// Descriptors the server holds now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn each_client_holds_the_descriptors_its_limits_are_derived_from() {
    let serve = serve_sh(&[], "echo started; exec cat").await;
    let pid = serve.child.id().unwrap();
    // One first: what the first process alone sets up (tokio's reaper).
    let mut first = open(&serve.url, "fd-0", None).await;
    assert_eq!(first.next_msg().await.data, "started");
    let before = open_fds(pid);
    let mut streams = Vec::new();
    for i in 1..=4 {
        let mut s = open(&serve.url, &format!("fd-{i}"), None).await;
        assert_eq!(s.next_msg().await.data, "started");
        streams.push(s);
    }
    // Its socket, and what `--max-clients`/`--max-processes` count for it.
    let added = open_fds(pid) - before;
    assert_eq!(added, 4 * (1 + ssechan::serve::FDS_PER_PROCESS), "{before} before");
}

#[tokio::test]
async fn nothing_outlives_a_client_that_leaves_and_nothing_is_left_a_zombie() {
    let mut serve = serve_sh(&["--kill-grace", "300ms"], SPAWNS_A_GRANDCHILD).await;
    let server_pid = serve.child.id().unwrap();
    let mut s = open(&serve.url, "leaves", None).await;
    let (main, bg) = pids_of(&mut s).await;
    assert_eq!(post(&http(), &serve.url, "leaves", 0, "x").await, 200);
    assert_eq!(s.next_msg().await.data, "got x");
    assert_eq!(children(server_pid).len(), 1, "one guard per client");
    drop(s); // no keep-alive: the client is gone
    main.gone("the process").await;
    bg.gone("its background child").await;
    eventually("the guard reaped", || children(server_pid).is_empty().then_some(())).await;
    serve.signal(libc::SIGTERM);
    assert!(tokio::time::timeout(WAIT, serve.child.wait()).await.unwrap().unwrap().success());
}

#[tokio::test]
async fn a_process_that_exits_closes_its_client_and_takes_its_children_along() {
    let script = r#"echo "$$"; sleep 1000 & echo "$!"; read -r l; echo "bye $l""#;
    let serve = serve_sh(&["--kill-grace", "300ms"], script).await;
    let server_pid = serve.child.id().unwrap();
    let mut s = open(&serve.url, "exits", None).await;
    let (main, bg) = pids_of(&mut s).await;
    assert_eq!(post(&http(), &serve.url, "exits", 0, "now").await, 200);
    // The background child still holds stdout: the last line comes
    // through, then the control close, within the grace.
    let events = s.until_end().await;
    let got: Vec<(&str, &str)> =
        events.iter().map(|e| (e.event.as_str(), e.data.as_str())).collect();
    assert_eq!(got, [("message", "\"bye now\""), ("control", "close")]);
    main.gone("the process").await;
    bg.gone("its background child").await;
    eventually("the guard reaped", || children(server_pid).is_empty().then_some(())).await;
}

#[tokio::test]
async fn nothing_outlives_a_server_stopped_by_sigterm() {
    let mut serve = serve_sh(&[], SPAWNS_A_GRANDCHILD).await;
    let mut a = open(&serve.url, "t-a", None).await;
    let mut b = open(&serve.url, "t-b", None).await;
    let (a1, a2) = pids_of(&mut a).await;
    let (b1, b2) = pids_of(&mut b).await;
    serve.signal(libc::SIGTERM);
    let status = tokio::time::timeout(WAIT, serve.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    // The server waited for them: gone by the time it exited.
    for (p, what) in [(a1, "a"), (a2, "a's child"), (b1, "b"), (b2, "b's child")] {
        assert!(!p.exists(), "{what} outlived the server");
    }
}

#[tokio::test]
async fn nothing_outlives_a_server_killed_with_sigkill() {
    let mut serve = serve_sh(&[], SPAWNS_A_GRANDCHILD).await;
    let mut s = open(&serve.url, "k", None).await;
    let (main, bg) = pids_of(&mut s).await;
    let guard = Pid::of(children(serve.child.id().unwrap())[0]);
    serve.signal(libc::SIGKILL);
    let _ = serve.child.wait().await;
    // The guard hears of its parent's death and ends the group.
    main.gone("the process").await;
    bg.gone("its background child").await;
    guard.gone("the guard").await;
}

#[tokio::test]
async fn a_process_that_never_reads_and_ignores_sigterm_holds_posts_back_and_is_killed() {
    let grace = Duration::from_millis(400);
    let script = r#"trap "" TERM; echo "$$"; exec sleep 1000"#;
    let flags =
        ["-vv", "--kill-grace", "400ms", "--max-incoming", "2", "--max-message-size", "64K"];
    let mut serve = serve_sh(&flags, script).await;
    let mut s = open(&serve.url, "deaf", None).await;
    let pid = Pid::of(s.next_msg().await.data.parse().unwrap());
    // POSTs in order, one at a time, until one has to wait (-vv says so).
    let (tx, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let url = serve.url.clone();
    tokio::spawn(async move {
        let client = http();
        let big = "m".repeat(32 * 1024);
        for i in 0..1000 {
            let status = post(&client, &url, "deaf", i, &big).await;
            let _ = tx.send(status);
            if status != 200 {
                break;
            }
        }
    });
    serve.err_line_with("POST waits").await;
    let mut answered = 0;
    while let Ok(status) = answers.try_recv() {
        assert_eq!(status, 200);
        answered += 1;
    }
    assert!(answered < 1000);
    let left = Instant::now();
    drop(s); // the client leaves while the sixth POST waits
    let held = tokio::time::timeout(WAIT, answers.recv()).await.unwrap().unwrap();
    assert_eq!(held, 404, "the held POST is refused once its client is gone");
    assert!(answers.recv().await.is_none(), "no POST after the refused one");
    pid.gone("the process that ignores SIGTERM").await;
    let took = left.elapsed();
    assert!(took >= grace * 2, "SIGKILL comes after two graces, not before: {took:?}");
    assert!(serve.err_line_with("never reached the process").await.contains("deaf"));
}

#[tokio::test]
async fn a_process_flooding_stdout_without_newlines_costs_bounded_memory() {
    let script = r#"echo "$$"; exec cat /dev/zero"#;
    let serve = serve_sh(&["--kill-grace", "300ms", "--max-message-size", "64K"], script).await;
    let server_pid = serve.child.id().unwrap() as i32;
    let mut s = open(&serve.url, "flood", None).await;
    let cat = Pid::of(s.next_msg().await.data.parse().unwrap());
    // 256 MiB of one endless line, read and thrown away as it comes.
    eventually("256 MiB flooded", || {
        (proc_field(cat.pid, "io", "wchar:") >= 256 << 20).then_some(())
    })
    .await;
    let peak_kib = proc_field(server_pid, "status", "VmHWM:");
    assert!(peak_kib < 64 * 1024, "server peak RSS {peak_kib} KiB");
    drop(s);
    cat.gone("the flooding process").await;
}

#[tokio::test]
async fn a_command_that_cannot_run_is_a_usage_error_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-a-program");
    std::fs::write(&plain, "").unwrap();
    for (cmd, why) in [
        ("/nonexistent/prog", "No such file"),
        ("no-such-program-ssechan-test", "not found in PATH"),
        (plain.to_str().unwrap(), "not executable"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
            .args(["serve", "--listen", "127.0.0.1:0", "--", cmd])
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("cannot run") && err.contains(why), "{cmd}: {err}");
        assert!(!err.contains("listening"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[tokio::test]
async fn exec_flags_need_a_command() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "--passenv", "HOME"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
