//! The real `ssechan serve` binary: stdin/stdout piping in both formats,
//! echo, a process per client, signals, usage errors, and a third-party
//! EventSource client reading its stream.

mod util;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use util::*;

/// The next `--format json` line: `event` is its first key, as in
/// `connect --format json`.
async fn out_event(serve: &mut Serve) -> serde_json::Value {
    let line = serve.out_line().await;
    assert!(line.starts_with(r#"{"event":""#), "event is not the first key: {line}");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
}

#[tokio::test]
async fn text_mode_pipes_both_ways_in_order() {
    let mut serve = Serve::spawn(&[]).await;
    assert!(serve.url.starts_with("http://127.0.0.1:") && serve.url.ends_with("/sse"));
    assert!(!serve.url.contains(":0/"), "real port: {}", serve.url);
    let mut s = open(&serve.url, "t1", None).await;
    // The 200 came after the server registered the client: stdin reaches it.
    let client = http();
    for i in 0..1000 {
        assert_eq!(post(&client, &serve.url, "t1", i, &format!("up {i}")).await, 200);
    }
    for i in 0..1000 {
        assert_eq!(serve.out_line().await, format!("up {i}"));
    }
    for i in 0..1000 {
        serve.send_line(&format!("down {i}\r")).await;
    }
    for i in 0..1000u64 {
        assert_eq!(s.next_msg().await, Msg { id: i + 1, data: format!("down {i}") });
    }
}

/// A burst of stdin lines, written at once, is broadcast in batches: every
/// line arrives in order with consecutive ids, a too-long line in the
/// middle is reported by its number and skipped, and the next burst goes on.
#[tokio::test]
async fn a_stdin_burst_arrives_whole_and_in_order() {
    let mut serve = Serve::spawn(&["--max-message-size", "100"]).await;
    let mut s = open(&serve.url, "b1", None).await;
    let mut burst = String::new();
    for i in 0..5000 {
        burst.push_str(&format!("burst {i}\r\n"));
        if i == 2500 {
            burst.push_str(&"x".repeat(200));
            burst.push('\n');
        }
    }
    let stdin = serve.stdin.as_mut().expect("stdin open");
    tokio::io::AsyncWriteExt::write_all(stdin, burst.as_bytes()).await.expect("write stdin");
    for i in 0..5000u64 {
        assert_eq!(s.next_msg().await, Msg { id: i + 1, data: format!("burst {i}") });
    }
    let err = serve.err_line_with("stdin line 2502").await;
    assert!(err.contains("201 bytes is over the message limit of 100"), "{err}");
    serve.send_line("after").await;
    assert_eq!(s.next_msg().await, Msg { id: 5001, data: "after".into() });
}

#[tokio::test]
async fn json_mode_events_and_commands() {
    let mut serve = Serve::spawn(&["--format", "json", "--keep-alive", "10s"]).await;
    let first = out_event(&mut serve).await;
    assert_eq!(first, json!({"event": "listening", "url": serve.url}));
    let mut a = open(&serve.url, "a", None).await;
    let ev = out_event(&mut serve).await;
    assert_eq!((ev["event"].as_str(), ev["client"].as_str()), (Some("connect"), Some("a")));
    assert!(ev["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    let mut b = open(&serve.url, "b", None).await;
    assert_eq!(out_event(&mut serve).await["event"], "connect");

    assert_eq!(post(&http(), &serve.url, "a", 0, "hello\nworld").await, 200);
    assert_eq!(
        out_event(&mut serve).await,
        json!({"event": "message", "client": "a", "data": "hello\nworld"})
    );

    serve.send_line(r#"{"data":"to all"}"#).await;
    serve.send_line(r#"{"client":"b","data":"to b"}"#).await;
    assert_eq!(a.next_msg().await.data, "to all");
    assert_eq!(b.next_msg().await.data, "to all");
    assert_eq!(b.next_msg().await.data, "to b");

    // Bad lines: one-line errors, and the server keeps going.
    // Bad lines: one-line errors naming the shapes there are, and the
    // server keeps going.
    let shapes = [
        r#"{"data":"text"}"#,
        r#"{"client":"ID","data":"text"}"#,
        r#"{"client":"ID","close":true}"#,
        r#"{"client":"ID","drop":true}"#,
    ];
    serve.send_line("not json").await;
    let err = serve.err_line_with("stdin line 3").await;
    assert!(err.contains("bad JSON command"), "{err}");
    assert!(shapes.iter().all(|s| err.contains(s)), "{err}");
    serve.send_line(r#"{"client":"nobody","data":"x"}"#).await;
    assert!(serve.err_line_with("stdin line 4").await.contains("no client \"nobody\""));
    serve.send_line(r#"{"client":"a","data":"x","close":true}"#).await;
    let err = serve.err_line_with("stdin line 5").await;
    assert!(err.contains("exactly one of") && shapes.iter().all(|s| err.contains(s)), "{err}");
    serve.send_line(r#"{"message":"typo"}"#).await;
    let err = serve.err_line_with("stdin line 6").await;
    assert!(err.contains("unknown field `message`") && err.contains(shapes[0]), "{err}");

    // Drop: the stream ends without control; with keep-alive, suspend/resume.
    serve.send_line(r#"{"client":"a","drop":true}"#).await;
    assert!(a.until_end().await.is_empty());
    assert_eq!(out_event(&mut serve).await, json!({"event": "suspend", "client": "a"}));
    serve.send_line(r#"{"client":"a","data":"while away"}"#).await;
    let mut a = open(&serve.url, "a", Some(1)).await;
    assert_eq!(out_event(&mut serve).await, json!({"event": "resume", "client": "a"}));
    assert_eq!(a.next_msg().await, Msg { id: 2, data: "while away".into() });

    // Close: control event, then a close event with nothing undelivered.
    serve.send_line(r#"{"client":"b","close":true}"#).await;
    let events = b.until_end().await;
    assert_eq!(
        events.last().map(|e| (e.event.as_str(), e.data.as_str())),
        Some(("control", "close"))
    );
    let close = out_event(&mut serve).await;
    assert_eq!((close["event"].as_str(), close["client"].as_str()), (Some("close"), Some("b")));
    assert_eq!(close["undelivered"], 0);
}

#[tokio::test]
async fn json_mode_reports_undelivered_on_expiry() {
    let mut serve = Serve::spawn(&["--format", "json", "--keep-alive", "300ms"]).await;
    out_event(&mut serve).await; // listening
    let s = open(&serve.url, "x", None).await;
    out_event(&mut serve).await; // connect
    drop(s);
    assert_eq!(out_event(&mut serve).await["event"], "suspend");
    serve.send_line(r#"{"client":"x","data":"1"}"#).await;
    serve.send_line(r#"{"client":"x","data":"2"}"#).await;
    let close = out_event(&mut serve).await;
    assert_eq!(close["event"], "close");
    assert_eq!(close["undelivered"], 2);
    assert_eq!(close["reason"], "keep-alive expired");
}

#[tokio::test]
async fn echo_mode() {
    let mut serve = Serve::spawn(&["--echo"]).await;
    let mut s = open(&serve.url, "e", None).await;
    let client = http();
    for i in 0..100 {
        assert_eq!(post(&client, &serve.url, "e", i, &format!("echo {i}")).await, 200);
    }
    for i in 0..100 {
        assert_eq!(s.next_msg().await.data, format!("echo {i}"));
    }
    // stdout carries no data in echo mode: nothing on it, to its end.
    serve.signal(libc::SIGTERM);
    let line = tokio::time::timeout(WAIT, serve.stdout.recv()).await.expect("stdout ends in time");
    assert_eq!(line, None, "nothing on stdout");
}

#[tokio::test]
async fn stdin_eof_does_not_stop_the_server_and_sigterm_closes_clients() {
    let mut serve = Serve::spawn(&["-v", "--keep-alive", "30s"]).await;
    drop(serve.stdin.take()); // EOF
    serve.err_line_with("stdin closed; still serving").await;
    let mut s = open(&serve.url, "still", None).await;
    assert_eq!(post(&http(), &serve.url, "still", 0, "alive").await, 200);
    assert_eq!(serve.out_line().await, "alive");
    let started = std::time::Instant::now();
    serve.signal(libc::SIGTERM);
    let events = s.until_end().await;
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("control"));
    let status = tokio::time::timeout(WAIT, serve.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    // Well before the keep-alive (30 s), which the clients do not wait out.
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
}

#[tokio::test]
async fn sigint_exits_zero() {
    let mut serve = Serve::spawn(&[]).await;
    serve.signal(libc::SIGINT);
    let status = tokio::time::timeout(WAIT, serve.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_process_per_client() {
    let script = r#"echo "hello $SSECHAN_CLIENT_ID"; while read -r l; do echo "got $l"; done"#;
    let mut serve = Serve::spawn(&["--", "sh", "-c", script]).await;
    let mut a = open(&serve.url, "pa", None).await;
    let mut b = open(&serve.url, "pb", None).await;
    assert_eq!(a.next_msg().await.data, "hello pa");
    assert_eq!(b.next_msg().await.data, "hello pb");
    assert_eq!(post(&http(), &serve.url, "pa", 0, "x").await, 200);
    assert_eq!(post(&http(), &serve.url, "pb", 0, "y").await, 200);
    assert_eq!(a.next_msg().await.data, "got x");
    assert_eq!(b.next_msg().await.data, "got y");
    let _ = serve.stdout.try_recv();
}

#[tokio::test]
async fn process_exit_closes_the_client() {
    let mut serve = Serve::spawn(&["--", "sh", "-c", "read -r l; echo \"bye $l\""]).await;
    let mut s = open(&serve.url, "p", None).await;
    assert_eq!(post(&http(), &serve.url, "p", 0, "now").await, 200);
    let events = s.until_end().await;
    let got: Vec<(&str, &str)> =
        events.iter().map(|e| (e.event.as_str(), e.data.as_str())).collect();
    assert_eq!(got, [("message", "\"bye now\""), ("control", "close")]);
    let _ = serve.stdout.try_recv();
}

#[tokio::test]
async fn a_third_party_eventsource_reads_the_stream() {
    use eventsource_client::{Client, ClientBuilder, SSE};
    let mut serve = Serve::spawn(&[]).await;
    let url = format!("{}?sseClientId=es", serve.url);
    let transport = launchdarkly_sdk_transport::HyperTransport::new().unwrap();
    let client = ClientBuilder::for_url(&url).unwrap().build_with_transport(transport);
    let mut stream = client.stream();
    // The first item is the connection itself.
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut sent = false;
    while events.len() < 3 {
        let item = tokio::time::timeout_at(deadline, stream.next()).await.expect("in time");
        match item {
            Some(Ok(SSE::Connected(_))) => {
                // Headers arrive after the client is registered.
                if !sent {
                    for l in ["one", "two\\n", "three"] {
                        serve.send_line(l).await;
                    }
                    sent = true;
                }
            }
            Some(Ok(SSE::Event(e))) => events.push((e.event_type, e.data, e.id)),
            Some(Ok(SSE::Comment(_))) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        events,
        [
            ("message".to_string(), "\"one\"".to_string(), Some("1".to_string())),
            ("message".into(), "\"two\\\\n\"".into(), Some("2".into())),
            ("message".into(), "\"three\"".into(), Some("3".into())),
        ]
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        vec!["serve", "--listen", "nonsense"],
        vec!["serve", "--keep-alive", "forever"],
        vec!["serve", "--format", "xml"],
        vec!["serve", "--path", "sse"],
        vec!["serve", "--echo", "--", "cat"],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
            .args(&args)
            .output()
            .await
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
}

/// Secrets in argv are visible to every local user (`ps`): the help of the
/// flags that take one says so and names the variable to use instead.
#[tokio::test]
async fn help_points_secrets_to_the_environment() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "--help"])
        .env("COLUMNS", "200")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let para = |flag: &str| -> String {
        let start = text.find(flag).unwrap_or_else(|| panic!("{flag} in:\n{text}"));
        let rest = &text[start..];
        let words = rest[..rest.find("\n\n").unwrap_or(rest.len())].split_whitespace();
        words.collect::<Vec<_>>().join(" ")
    };
    let redis = para("--redis <URL>");
    assert!(redis.contains("password") && redis.contains("visible to local users"), "{redis}");
    assert!(redis.contains("SSECHAN_REDIS"), "{redis}");
    let secret = para("--secret[=<SECRET>]");
    assert!(
        secret.contains("visible to local users") && secret.contains("SSECHAN_SECRET"),
        "{secret}"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "--listen", &addr])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.contains("(use --listen 127.0.0.1:0 for a free port)"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Starts `serve ARGS` (without a default `--listen`), returns the URL it
/// printed and checks that a stream opens there.
async fn listening_on(args: &[&str]) -> String {
    listening_urls(args).await.swap_remove(0)
}

/// Starts `serve ARGS` (without a default `--listen`), returns every URL it
/// printed (its `listening on` lines) and checks that a stream opens at each
/// one that names an address.
async fn listening_urls(args: &[&str]) -> Vec<String> {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .arg("serve")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut urls = Vec::new();
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("in time");
        let line = line.unwrap().unwrap_or_else(|| panic!("{args:?}: exited before listening"));
        match line.strip_prefix("ssechan: listening on ") {
            Some(url) => urls.push(url.to_owned()),
            // The lines that follow are warnings, or nothing at all.
            None if !urls.is_empty() => break,
            None => {}
        }
        if urls.len() == 1 && !args.iter().any(|a| a.starts_with(':')) {
            break;
        }
    }
    for url in &urls {
        let host = url.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("");
        if host.parse::<std::net::SocketAddr>().is_ok() {
            let _stream = open(url, "probe", None).await;
        }
    }
    urls
}

#[tokio::test]
async fn listen_takes_a_bare_port_a_colon_port_and_localhost() {
    let url = listening_on(&["--listen", "0"]).await;
    assert!(url.starts_with("http://127.0.0.1:") && !url.contains(":0/"), "{url}");
    let url = listening_on(&["--listen", ":0"]).await;
    assert!(url.starts_with("http://127.0.0.1:"), "every interface, loopback first: {url}");
    let url = listening_on(&["--listen", "localhost:0"]).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    for bad in ["nonsense", "8080x", "example.com:80", "127.0.0.1"] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
            .args(["serve", "--listen", bad])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--listen takes HOST:PORT, e.g. 127.0.0.1:8080"), "{bad}: {err}");
    }
}

/// `--listen :PORT` is every interface: 0.0.0.0 is no address to give a
/// client, so each address that works is printed instead, loopback first,
/// then the machine's own and its host name.
#[tokio::test]
async fn a_wildcard_listener_prints_urls_a_client_can_use() {
    let urls = listening_urls(&["--listen", ":0"]).await;
    assert!(urls[0].starts_with("http://127.0.0.1:"), "{urls:?}");
    let port = urls[0].split(':').nth(2).and_then(|r| r.split('/').next()).unwrap();
    assert!(urls.iter().all(|u| !u.contains("0.0.0.0") && u.ends_with(&format!(":{port}/sse"))));
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let name = name.trim();
    if name != "localhost" {
        assert!(urls.contains(&format!("http://{name}:{port}/sse")), "{name}: {urls:?}");
    }
    // A specific address is printed as it is, once.
    let urls = listening_urls(&["--listen", "127.0.0.1:0"]).await;
    assert_eq!(urls.len(), 1, "{urls:?}");
}

/// Typed lines are no use to `serve --echo`: it says so once, and echoes on.
#[tokio::test]
async fn echo_mode_says_once_that_stdin_is_not_used() {
    let mut serve = Serve::spawn(&["--echo", "-v"]).await;
    let notice = "stdin is not used with --echo";
    serve.send_line("hello?").await;
    let first = serve.err_line_with(notice).await;
    assert!(first.starts_with("ssechan: "), "{first}");
    serve.send_line("anyone?").await;
    drop(serve.stdin.take());
    // Everything up to the end of stdin has been read: the notice came once.
    let mut lines = Vec::new();
    while !lines.last().is_some_and(|l: &String| l.contains("stdin closed")) {
        let line = tokio::time::timeout(WAIT, serve.stderr.recv()).await.expect("in time");
        lines.push(line.expect("stderr open"));
    }
    assert!(!lines.iter().any(|l| l.contains(notice)), "said again: {lines:?}");
    let mut s = open(&serve.url, "e", None).await;
    assert_eq!(post(&http(), &serve.url, "e", 0, "still echoing").await, 200);
    assert_eq!(s.next_msg().await.data, "still echoing");
}

/// `ssechan serve --echo &` from an interactive shell: reading its terminal
/// from the background must not stop the server (SIGTTIN).
#[cfg(unix)]
#[tokio::test]
async fn echo_mode_in_a_background_job_keeps_serving() {
    use expectrl::{Expect, Regex, Session};
    // A job-control shell on a pty, like a terminal's, with serve as a
    // background job; the shell stays in the foreground.
    let script = format!(
        "set -m; {} serve --echo --listen 127.0.0.1:0 -vv & echo PID=$!; wait",
        env!("CARGO_BIN_EXE_ssechan")
    );
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", &script]).env("NO_COLOR", "1").env_remove("RUST_LOG");
    let mut shell = Session::spawn(cmd).expect("bash on a pty");
    shell.set_expect_timeout(Some(WAIT));
    let pid = shell.expect(Regex(r"PID=(\d+)")).expect("the job's pid");
    let pid: i32 = String::from_utf8_lossy(pid.get(1).unwrap()).parse().unwrap();
    // The job is in its own process group: end it whatever happens.
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the pid of the job this test started.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _kill = Kill(pid);
    let url = shell.expect(Regex(r"listening on (http://\S+)")).expect("listening line");
    let url = String::from_utf8_lossy(url.get(1).unwrap()).into_owned();
    // Its read of the terminal failed instead of stopping it.
    shell.expect("stdin not read further").expect("the terminal read was refused");
    let mut s = open(&url, "bg", None).await;
    assert_eq!(post(&http(), &url, "bg", 0, "from the background").await, 200);
    assert_eq!(s.next_msg().await.data, "from the background");
}

#[tokio::test]
async fn verbose_logs_connects_and_refusals_quiet_hides_them() {
    let mut serve = Serve::spawn(&["-v"]).await;
    let _s = open(&serve.url, "logged", None).await;
    assert!(serve.err_line_with("connected").await.contains("client=logged"));
    let (status, _) = post_raw(&serve.url, "sseClientId=ghost", "\"x\"").await;
    assert_eq!(status, 404);
    assert!(serve.err_line_with("rejected").await.contains("404 unknown client id"));

    let mut quiet = Serve::spawn(&["-q"]).await;
    let (status, _) = post_raw(&quiet.url, "sseClientId=ghost", "\"x\"").await;
    assert_eq!(status, 404);
    quiet.signal(libc::SIGTERM);
    let _ = quiet.child.wait().await;
    let mut rest = Vec::new();
    while let Some(l) = quiet.stderr.recv().await {
        rest.push(l);
    }
    assert!(rest.is_empty(), "quiet printed {rest:?}");
}
