//! `ssechan connect` end to end: the real binary against the real `ssechan
//! serve` (or a tiny plain SSE server for `--raw`), over real HTTP.

#[path = "support/client_procs.rs"]
mod procs;
#[path = "support/client_silent.rs"]
mod silent;
#[path = "support/client_tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use procs::{Serve, SseServer, connect};
use serde_json::{Value, json};
use silent::SilentServer;
use tls::{SelfSigned, TlsProxy};

/// Fast reconnects for tests; the server's `retry: 1000` is capped by these.
const FAST: &[&str] = &["--retry-initial", "20ms", "--retry-max", "100ms"];

fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}

#[test]
fn round_trip_text() {
    let mut serve = Serve::start(&[]);
    let mut c = connect(&["--wait", "100ms", &serve.url]);
    let id = serve.client();
    c.write("hello from the client\n");
    assert_eq!(serve.messages(1), ["hello from the client"]);
    serve.command(json!({"client": id, "data": "hello from the server"}));
    assert_eq!(c.line().as_deref(), Some("hello from the server"));
    c.close_stdin();
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    assert_eq!(c.line(), None, "nothing else on stdout");
}

#[test]
fn round_trip_json() {
    let mut serve = Serve::start(&[]);
    let mut c = connect(&["--format", "json", "--wait", "100ms", &serve.url]);
    let id = serve.client();
    let open = c.json_event("open");
    assert_eq!(open["client"], id.as_str());
    c.write("json mode, \"quoted\"\n");
    assert_eq!(serve.messages(1), ["json mode, \"quoted\""]);
    serve.command(json!({"client": id, "data": "two\nlines"}));
    let msg = c.json_event("message");
    assert_eq!(msg, json!({"event": "message", "data": "two\nlines"}));
    c.close_stdin();
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
}

#[test]
fn send_flag_and_client_id() {
    let serve = Serve::start(&[]);
    let mut c = connect(&[
        "--client-id",
        "fixed-id",
        "--send",
        "first",
        "--send",
        "second",
        "--wait",
        "0s",
        &serve.url,
    ]);
    assert_eq!(serve.client(), "fixed-id");
    c.write("third\n");
    c.close_stdin();
    assert_eq!(serve.messages(3), ["first", "second", "third"]);
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
}

#[test]
fn debug_key_prefixes_the_client_id() {
    let serve = Serve::start(&[]);
    let mut c = connect(&["--debug-key", "dbg", "--wait", "0s", &serve.url]);
    let id = serve.client();
    let uuid = id.strip_prefix("dbg-").unwrap_or_else(|| panic!("{id}"));
    assert_eq!(uuid.len(), 36, "{id}");
    c.close_stdin();
    assert!(c.wait().success());
}

#[test]
fn thousand_messages_client_to_server_in_order() {
    let serve = Serve::start(&[]);
    let mut c = connect(&["--wait", "0s", "--in-flight", "32", &serve.url]);
    let input: String = (0..1000).map(|i| format!("m{i}\n")).collect();
    c.write(&input);
    c.close_stdin();
    let want: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(serve.messages(1000), want);
    // Exit only after every message was acknowledged.
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
}

#[test]
fn thousand_messages_server_to_client_in_order() {
    let mut serve = Serve::start(&[]);
    let mut c = connect(&["--count", "1000", &serve.url]);
    let id = serve.client();
    let cmds: String = (0..1000)
        .map(|i| format!("{}\n", json!({"client": id, "data": format!("s{i}")})))
        .collect();
    serve.proc.write(&cmds);
    let got: Vec<String> = (0..1000).map(|_| c.line().expect("a line")).collect();
    let want: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
    assert_eq!(got, want);
    assert!(c.wait().success(), "--count exits 0; stderr:\n{}", c.stderr());
    assert_eq!(c.line(), None);
}

#[test]
fn resumes_after_a_drop_without_loss_or_duplicate() {
    let mut serve = Serve::start(&["--keep-alive", "30s"]);
    let args = with(FAST, &["--format", "json", "--wait", "200ms", &serve.url]);
    let mut c = connect(&args);
    let id = serve.client();
    c.json_event("open");
    // Both directions in flight around the drop.
    let out: String = (0..200).map(|i| format!("up{i}\n")).collect();
    c.write(&out[..out.len() / 2]);
    for i in 0..100 {
        serve.command(json!({"client": id, "data": format!("down{i}")}));
    }
    serve.command(json!({"client": id, "drop": true}));
    c.write(&out[out.len() / 2..]);
    for i in 100..200 {
        serve.command(json!({"client": id, "data": format!("down{i}")}));
    }
    let mut down = Vec::new();
    let mut resumed = false;
    while down.len() < 200 {
        let line = c.line().expect("connect output");
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str() {
            Some("message") => down.push(v["data"].as_str().unwrap().to_owned()),
            Some("resumed") => resumed = true,
            _ => {}
        }
    }
    let want: Vec<String> = (0..200).map(|i| format!("down{i}")).collect();
    assert_eq!(down, want, "server→client: in order, none lost, none twice");
    let up: Vec<String> = (0..200).map(|i| format!("up{i}")).collect();
    let (mut got_up, mut server_saw) = (Vec::new(), Vec::new());
    while got_up.len() < 200 {
        let line = serve.proc.line().expect("serve output");
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str() {
            Some("message") => got_up.push(v["data"].as_str().unwrap().to_owned()),
            Some(other) => server_saw.push(other.to_owned()),
            None => {}
        }
    }
    assert_eq!(got_up, up, "client→server: in order, none lost, none twice");
    if !resumed {
        c.json_event("resumed");
    }
    c.close_stdin();
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    // One connection throughout: suspended and resumed, never closed.
    if !server_saw.iter().any(|e| e == "resume") {
        serve.proc.json_event("resume");
    }
    assert!(!server_saw.iter().any(|e| e == "close"), "{server_saw:?}");
}

#[test]
fn drop_without_keep_alive_loses_no_client_message() {
    // The server forgets the connection at once: POSTs racing the drop get
    // 404 and are retried, with the same ids, on the next stream.
    let mut serve = Serve::start(&[]);
    let args = with(FAST, &["--format", "json", "--wait", "0s", &serve.url]);
    let mut c = connect(&args);
    let id = serve.client();
    c.json_event("open");
    let out: String = (0..300).map(|i| format!("up{i}\n")).collect();
    c.write(&out[..out.len() / 3]);
    serve.command(json!({"client": id, "drop": true}));
    c.write(&out[out.len() / 3..]);
    c.close_stdin();
    let want: Vec<String> = (0..300).map(|i| format!("up{i}")).collect();
    assert_eq!(serve.messages(300), want);
    c.json_event("resumed");
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
}

#[test]
fn refused_message_exits_1() {
    let serve = Serve::start(&["--max-message-size", "16"]);
    let mut c = connect(&[&serve.url]);
    serve.client();
    c.write("this message is longer than sixteen bytes\n");
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(err.contains("message 0 not delivered: server answered 413"), "{err}");
}

#[test]
fn control_close_exits_zero() {
    let mut serve = Serve::start(&[]);
    let mut c = connect(&["--format", "json", &serve.url]);
    let id = serve.client();
    c.json_event("open");
    serve.command(json!({"client": id, "close": true}));
    assert_eq!(c.json_event("closed"), json!({"event": "closed", "by": "server"}));
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
}

#[test]
fn server_gone_retries_then_exits_1() {
    let mut serve = Serve::start(&[]);
    let args = with(FAST, &["--max-retries", "3", "--format", "json", &serve.url]);
    let mut c = connect(&args);
    let id = serve.client();
    c.json_event("open");
    serve.command(json!({"client": id, "data": "a real stream"}));
    c.json_event("message");
    serve.proc.kill();
    c.json_event("disconnected");
    for attempt in 1..=3 {
        let failed = c.json_event("attempt_failed");
        assert_eq!(failed["attempt"], attempt, "{failed}");
    }
    let gave_up = c.json_event("gave_up");
    assert_eq!(gave_up["attempts"], 3);
    let status = c.wait();
    assert_eq!(status.code(), Some(1), "stderr:\n{}", c.stderr());
    let err = c.stderr();
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("ssechan: gave up after 3 failed attempts in a row: cannot connect"),
        "one clear line on stderr, got:\n{err}"
    );
}

/// A port that was free a moment ago: nothing listens there.
fn refused_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/sse")
}

#[test]
fn unreachable_server_fails_at_once() {
    // As curl does: the first connection is not retried.
    let url = refused_url();
    let t0 = Instant::now();
    let mut c = connect(&["--format", "json", &url]);
    assert_eq!(c.wait().code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let err = c.stderr();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("ssechan: connection failed: cannot connect: "), "{err}");
    assert!(err.contains("refused"), "{err}");
    let out = c.lines_for(Duration::ZERO);
    assert!(!out.iter().any(|l| l.contains("attempt_failed")), "no retry: {out:?}");
}

#[test]
fn unknown_host_fails_at_once() {
    let mut c = connect(&["http://ssechan-test.invalid/sse"]);
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("ssechan: connection failed: "), "{err}");
}

#[test]
fn retry_first_retries_the_first_connection() {
    let url = refused_url();
    let mut c = connect(&with(FAST, &["--retry-first", "--max-retries", "2", &url]));
    assert_eq!(c.wait().code(), Some(1));
    // The first attempt and 2 retries.
    assert!(c.stderr().contains("gave up after 3 failed attempts"), "{}", c.stderr());
}

#[test]
fn retry_max_caps_the_first_delay_too() {
    let url = refused_url();
    // --retry-initial stays at its default, 250ms.
    let mut c = connect(&[
        "--retry-first",
        "--retry-max",
        "10ms",
        "--max-retries",
        "3",
        "--format",
        "json",
        &url,
    ]);
    for _ in 0..2 {
        let r = c.json_event("reconnecting");
        assert_eq!(r["delay_ms"], 10, "{r}");
    }
    assert_eq!(c.wait().code(), Some(1));
}

#[test]
fn retry_zero_and_instant_closes_back_off_and_give_up() {
    // A stream that says `retry: 0` and ends at once, every time: once a
    // reconnect loop with no delay, forever. Now the delay has a floor,
    // and such re-opens count toward --max-retries.
    let server = SseServer::start(vec![SseServer::stream("retry: 0\n\n")]);
    let t0 = Instant::now();
    let mut c = connect(&["--raw", "--max-retries", "3", "--format", "json", &server.url]);
    assert_eq!(c.wait().code(), Some(1), "stderr:\n{}", c.stderr());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let err = c.stderr();
    assert!(
        err.contains(
            "gave up after 4 failed attempts in a row: the server ended the stream before any event"
        ),
        "{err}"
    );
    // The first stream and 3 retries, each at least the floor (100 ms,
    // doubling) after the one before.
    let seen = server.requests();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (pair, least) in seen.windows(2).zip([100, 200, 400]) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(least), "{gap:?} < {least} ms: {seen:?}");
    }
}

#[test]
fn max_retries_zero_does_not_reconnect() {
    let mut serve = Serve::start(&[]);
    let mut c = connect(&with(FAST, &["--max-retries", "0", "--format", "json", &serve.url]));
    let id = serve.client();
    serve.command(json!({"client": id, "data": "one"}));
    c.json_event("message");
    serve.command(json!({"client": id, "drop": true}));
    c.json_event("disconnected");
    c.json_event("gave_up");
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(err.contains("not reconnecting (--max-retries 0)"), "{err}");
    // And 1 is one retry, not the same as 0.
    let mut c = connect(&with(FAST, &["--max-retries", "1", "--format", "json", &serve.url]));
    let id = serve.client();
    serve.command(json!({"client": id, "data": "one"}));
    c.json_event("message");
    serve.command(json!({"client": id, "drop": true}));
    c.json_event("resumed");
    c.close_stdin();
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
}

#[test]
fn reconnects_after_the_server_restarts() {
    let mut a = Serve::start(&[]);
    let port = a.port;
    let args =
        with(FAST, &["--client-id", "again", "--max-retries", "1000", "--format", "json", &a.url]);
    let mut c = connect(&args);
    assert_eq!(a.client(), "again");
    a.command(json!({"data": "before"}));
    assert_eq!(c.json_event("message")["data"], "before");
    a.proc.kill();
    c.json_event("disconnected");
    // Typed while no server runs: held, then POSTed once a stream is open.
    c.write("while down\n");
    let mut b = Serve::start_on(&format!("127.0.0.1:{port}"), &[]);
    assert_eq!(b.client(), "again");
    c.json_event("resumed");
    assert_eq!(b.messages(1), ["while down"]);
    b.command(json!({"client": "again", "data": "after"}));
    assert_eq!(c.json_event("message")["data"], "after");
    c.close_stdin();
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
}

/// A server that went silent without closing: `--idle-timeout` notices,
/// says why, and resumes with `Last-Event-ID` (channel and raw mode alike).
fn idle_timeout_resumes(raw: bool) {
    let server = SilentServer::start();
    let started = Instant::now();
    let mut args = vec!["--idle-timeout", "300ms", "--format", "json", &server.url];
    if raw {
        args.insert(0, "--raw");
    }
    let c = connect(&with(FAST, &args));
    c.json_event("open");
    let first = c.json_event("message");
    assert_eq!(first["data"], if raw { "\"event 1\"" } else { "event 1" }, "{first}");
    let got_first = Instant::now();
    let lost = c.json_event("disconnected");
    let noticed = Instant::now();
    assert_eq!(lost["reason"], "no data for 300ms", "{lost}");
    // Not before 300 ms of silence, and not much after.
    assert!(noticed - started >= Duration::from_millis(300), "{:?}", noticed - started);
    assert!(noticed - got_first < Duration::from_secs(5), "{:?}", noticed - got_first);
    let resumed = c.json_event("resumed");
    assert_eq!(resumed["last_event_id"], "1", "{resumed}");
    let gets = server.wait_for_gets(2, procs::WAIT);
    assert!(gets.len() >= 2, "a second GET: {gets:?}");
    assert_eq!(gets[0].header("last-event-id"), None, "{gets:?}");
    assert_eq!(gets[1].header("last-event-id"), Some("1"), "{gets:?}");
    assert!(gets[1].at - gets[0].at >= Duration::from_millis(300), "{gets:?}");
    assert_eq!(gets[1].request_line.contains("sseClientId="), !raw, "{gets:?}");
    // The second stream also goes silent: noticed again, resumed after event 2.
    c.json_event("message");
    assert_eq!(c.json_event("disconnected")["reason"], "no data for 300ms");
    assert_eq!(c.json_event("resumed")["last_event_id"], "2");
}

#[test]
fn idle_timeout_notices_a_silent_server() {
    idle_timeout_resumes(false);
}

#[test]
fn idle_timeout_notices_a_silent_server_raw() {
    idle_timeout_resumes(true);
}

#[test]
fn idle_timeout_zero_is_off() {
    let server = SilentServer::start();
    let c = connect(&with(FAST, &["--idle-timeout", "0", "--format", "json", &server.url]));
    c.json_event("open");
    c.json_event("message");
    let later = c.lines_for(Duration::from_millis(1200));
    assert!(later.is_empty(), "still open and quiet: {later:?}");
    assert_eq!(server.gets().len(), 1);
}

#[test]
fn heartbeats_count_as_data() {
    let mut serve = Serve::start(&["--heartbeat", "100ms"]);
    let args = with(FAST, &["--idle-timeout", "400ms", "--format", "json", &serve.url]);
    let c = connect(&args);
    let id = serve.client();
    c.json_event("open");
    // Nothing but heartbeats for well over three idle timeouts.
    let quiet = c.lines_for(Duration::from_millis(1500));
    assert!(quiet.is_empty(), "no disconnect while heartbeats flow: {quiet:?}");
    serve.command(json!({"client": id, "data": "still here"}));
    assert_eq!(c.json_event("message")["data"], "still here");
    // One stream all along: the server saw no close and no second connect.
    let server_side = serve.proc.lines_for(Duration::from_millis(100));
    assert!(server_side.is_empty(), "{server_side:?}");
}

#[test]
fn raw_reads_plain_sse_and_resumes_with_last_event_id() {
    let server = SseServer::start(vec![
        SseServer::stream(
            "retry: 10\n\nevent: tick\nid: 1\ndata: one\n\n: a comment\nevent: tock\nid: 2\ndata: two\ndata: lines\n\n",
        ),
        SseServer::stream("id: 3\ndata: three\n\nid: 4\ndata: unfinished"),
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into(),
    ]);
    let mut c = connect(&["--raw", "--format", "json", "--retry-max", "50ms", &server.url]);
    let mut messages = Vec::new();
    loop {
        let line = c.line().expect("connect output");
        let v: Value = serde_json::from_str(&line).unwrap();
        match v["event"].as_str() {
            Some("message") => messages.push(v),
            Some("closed") => break,
            _ => {}
        }
    }
    assert_eq!(
        messages,
        [
            json!({"event": "message", "type": "tick", "id": "1", "data": "one"}),
            json!({"event": "message", "type": "tock", "id": "2", "data": "two\nlines"}),
            json!({"event": "message", "type": "message", "id": "3", "data": "three"}),
        ]
    );
    assert!(c.wait().success(), "204 ends the run with 0; stderr:\n{}", c.stderr());
    let seen = server.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].request_line.starts_with("GET /events "), "no client id: {seen:?}");
    assert_eq!(seen[0].header("accept"), Some("text/event-stream"));
    assert_eq!(seen[0].header("last-event-id"), None);
    assert_eq!(seen[1].header("last-event-id"), Some("2"));
    // The unfinished event's id never counted.
    assert_eq!(seen[2].header("last-event-id"), Some("3"));
}

#[test]
fn raw_text_prints_data() {
    let server = SseServer::start(vec![
        SseServer::stream("data: a\n\nevent: named\ndata: b\n\n"),
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into(),
    ]);
    let mut c = connect(&["--raw", "--retry-max", "10ms", &server.url]);
    assert_eq!(c.line().as_deref(), Some("a"));
    assert_eq!(c.line().as_deref(), Some("b"));
    assert!(c.wait().success());
    assert_eq!(c.line(), None);
}

#[test]
fn no_content_stops_reconnecting() {
    let server =
        SseServer::start(vec!["HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into()]);
    let mut c = connect(&with(FAST, &[&server.url]));
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn wrong_content_type_fails_without_retry() {
    let server = SseServer::start(vec![SseServer::status("200 OK", "text/html", "<p>hi</p>")]);
    let mut c = connect(&with(FAST, &[&server.url]));
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(err.contains("text/html"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(server.requests().len(), 1, "no retry");
}

#[test]
fn error_status_fails_without_retry() {
    let server = SseServer::start(vec![SseServer::status(
        "503 Service Unavailable",
        "text/plain",
        "busy\n",
    )]);
    let mut c = connect(&with(FAST, &["--raw", &server.url]));
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(err.contains("503") && err.contains("busy"), "{err}");
    assert_eq!(server.requests().len(), 1, "no retry");
}

#[test]
fn server_text_cannot_drive_the_terminal() {
    // A hostile error body: clear the screen, retitle the window, ring.
    let server = SseServer::start(vec![SseServer::status(
        "403 Forbidden",
        "text/plain",
        "no\x1b[2J\x1b]0;pwned\x07 entry\n",
    )]);
    let mut c = connect(&with(FAST, &["--raw", &server.url]));
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "raw control bytes: {err:?}");
    assert!(err.contains("403 Forbidden: no^[[2J^[]0;pwned^G entry"), "{err:?}");
}

#[test]
fn headers_are_sent() {
    let server =
        SseServer::start(vec!["HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".into()]);
    let mut c = connect(&["-H", "Authorization: Bearer t0k", "-H", "X-A:b", &server.url]);
    assert!(c.wait().success());
    let seen = server.requests();
    assert_eq!(seen[0].header("authorization"), Some("Bearer t0k"));
    assert_eq!(seen[0].header("x-a"), Some("b"));
    assert!(seen[0].request_line.contains("sseClientId="), "{seen:?}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["-H", "NoColon", "http://127.0.0.1:1/sse"][..],
        &["-H", "Bad Name: x", "http://127.0.0.1:1/sse"],
        &["localhost:8080/sse"],
        &["not a url"],
        &["--client-id", "", "http://127.0.0.1:1/sse"],
        &["--raw", "--send", "x", "http://127.0.0.1:1/sse"],
        &["--timeout", "0s", "http://127.0.0.1:1/sse"],
        &["--in-flight", "0", "http://127.0.0.1:1/sse"],
    ] {
        let mut c = connect(args);
        assert_eq!(c.wait().code(), Some(2), "{args:?}: {}", c.stderr());
        let err = c.stderr();
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("ssechan: "), "{err}");
    }
}

/// `serve` behind a TLS proxy with a fresh self-signed certificate.
fn https_serve() -> (Serve, SelfSigned, TlsProxy) {
    let serve = Serve::start(&[]);
    let cert = SelfSigned::new();
    let proxy = TlsProxy::start(&cert, SocketAddr::from(([127, 0, 0, 1], serve.port)));
    (serve, cert, proxy)
}

/// A message each way over HTTPS; returns connect's stderr.
fn https_round_trip(serve: &mut Serve, url: &str, flags: &[&str]) -> String {
    let mut c = connect(&with(flags, &["--wait", "100ms", url]));
    serve.client();
    c.write("up over tls\n");
    assert_eq!(serve.messages(1), ["up over tls"]);
    serve.command(json!({"data": "down over tls"}));
    assert_eq!(c.line().as_deref(), Some("down over tls"), "stderr:\n{}", c.stderr());
    c.close_stdin();
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    c.stderr()
}

#[test]
fn https_untrusted_certificate_fails_at_once() {
    let (_serve, _cert, proxy) = https_serve();
    let mut c = connect(&with(FAST, &[&proxy.url()]));
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(
            "ssechan: connection failed: TLS handshake failed: invalid peer certificate"
        ),
        "{err}"
    );
    assert!(err.contains("--cacert"), "says how to trust it: {err}");
    assert_eq!(proxy.accepted.load(Ordering::SeqCst), 1, "no retry");
}

#[test]
fn https_to_a_plain_http_server_fails_at_once() {
    // What a plain HTTP server says to a TLS ClientHello: 400 at once.
    let server =
        SseServer::start_eager(vec![SseServer::status("400 Bad Request", "text/plain", "")]);
    let url = server.url.replacen("http://", "https://", 1);
    let mut c = connect(&with(FAST, &["--raw", &url]));
    assert_eq!(c.wait().code(), Some(1));
    let err = c.stderr();
    assert_eq!(err.lines().count(), 1, "one line, no retries: {err}");
    assert!(err.starts_with("ssechan: connection failed: TLS handshake failed: "), "{err}");
    assert!(!err.contains("--cacert"), "not a certificate problem: {err}");
    assert_eq!(server.requests().len(), 1, "no retry");
}

#[test]
fn https_with_cacert() {
    let (mut serve, cert, proxy) = https_serve();
    let pem = cert.pem_path.to_str().expect("UTF-8 temp path");
    let err = https_round_trip(&mut serve, &proxy.url(), &["--cacert", pem]);
    assert!(!err.contains("insecure"), "{err}");
}

#[test]
fn https_with_cacert_by_host_name() {
    let (mut serve, cert, proxy) = https_serve();
    let pem = cert.pem_path.to_str().expect("UTF-8 temp path");
    let url = format!("https://localhost:{}/sse", proxy.addr.port());
    https_round_trip(&mut serve, &url, &["--cacert", pem]);
}

#[test]
fn https_insecure_warns_once() {
    let (mut serve, _cert, proxy) = https_serve();
    let err = https_round_trip(&mut serve, &proxy.url(), &["-k"]);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("--insecure")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("not checked"), "{err}");
}

#[test]
fn bad_cacert_is_a_usage_error() {
    let cert = SelfSigned::new();
    let not_pem = cert
        .write_file("key.txt", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let broken = cert.write_file(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    let missing = cert.pem_path.with_file_name("missing.pem");
    for (path, why) in
        [(missing, "No such file"), (not_pem, "no PEM certificate"), (broken, "certificate 1")]
    {
        let p = path.to_str().expect("UTF-8 temp path");
        let mut c = connect(&["--cacert", p, "https://127.0.0.1:1/sse"]);
        assert_eq!(c.wait().code(), Some(2), "{p}: {}", c.stderr());
        let err = c.stderr();
        assert_eq!(err.lines().count(), 1, "{p}: one line: {err}");
        assert!(err.starts_with("ssechan: bad --cacert ") && err.contains(why), "{err}");
    }
}
