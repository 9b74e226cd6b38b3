//! `ssechan connect` end to end: the real binary against the real `ssechan
//! serve` (or a tiny plain SSE server for `--raw`), over real HTTP.

#[path = "support/bench_servers.rs"]
mod bench_servers;
#[path = "support/closed_port.rs"]
mod closed_port;
#[path = "support/client_procs.rs"]
mod procs;
#[path = "support/client_silent.rs"]
mod silent;
#[path = "support/client_tls.rs"]
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bench_servers::Fault;
use closed_port::ClosedPort;
use procs::{PlainSse, Serve, SseServer, connect};
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
    // A final refusal is counted too.
    assert!(
        err.contains("\nrefusals: 1 of 1 POSTs answered with an error status: 413 \u{d7}1\n"),
        "{err}"
    );
}

/// bench's faulty echo server, on a runtime of its own that serves as long
/// as it lives.
fn faulty_echo(fault: Fault) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(bench_servers::faulty_echo(fault));
    (rt, url)
}

#[test]
fn retried_refusals_are_counted_and_said_at_exit() {
    // 503 to the first POST of messageIds 9, 19 and 29, taken when sent
    // again: every line arrives, in order, and the exit line still says
    // what the retries hid (33 POSTs answered, 3 of them refused).
    let (_rt, url) = faulty_echo(Fault::RefuseOnce(10, 503));
    let lines: String = (0..30).map(|i| format!("line {i}\n")).collect();
    let want: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    for quiet in [false, true] {
        let args = with(FAST, &["--wait", "100ms", &url]);
        let args = if quiet { with(&["-q"], &args) } else { args };
        let mut c = connect(&args);
        c.write(&lines);
        c.close_stdin();
        assert_eq!(c.rest(), want);
        assert!(c.wait().success(), "stderr:\n{}", c.stderr());
        let err = c.stderr();
        let said: Vec<&str> = err.lines().filter(|l| l.starts_with("refusals")).collect();
        let line = "refusals: 3 of 33 POSTs answered with an error status: 503 \u{d7}3";
        // -q keeps stderr for errors.
        let expected: &[&str] = if quiet { &[] } else { &[line] };
        assert_eq!(said, expected, "{err}");
    }
}

#[test]
fn refusals_show_in_json_and_in_the_record() {
    // 429 to the first POST of messageId 2.
    let (_rt, url) = faulty_echo(Fault::RefuseOnce(3, 429));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let file = path.to_str().unwrap();
    let args = with(FAST, &["--format", "json", "--record", file, "--wait", "100ms", &url]);
    let mut c = connect(&args);
    c.write("a\nb\nc\n");
    c.close_stdin();
    let lines: Vec<Value> = c.rest().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    let of = |event: &str| -> Vec<Value> {
        lines.iter().filter(|v| v["event"] == event).cloned().collect()
    };
    let refused = json!({
        "event": "refused",
        "message_id": 2,
        "status": 429,
        "reason": "server busy, try again",
        "retried": true
    });
    assert_eq!(of("refused"), std::slice::from_ref(&refused), "{lines:?}");
    let data: Vec<Value> = of("message").into_iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, [json!("a"), json!("b"), json!("c")], "{lines:?}");
    let err = c.stderr();
    assert!(
        err.contains("refusals: 1 of 4 POSTs answered with an error status: 429 \u{d7}1"),
        "{err}"
    );
    let (_, steps) = ssechan::connect::record::read_file(&path).unwrap();
    let recorded: Vec<Value> = steps
        .iter()
        .filter_map(|s| match &s.what {
            ssechan::connect::record::Recorded::Other { event, line } if event == "refused" => {
                let mut line = line.clone();
                line.as_object_mut()?.remove("t_ms");
                Some(line)
            }
            _ => None,
        })
        .collect();
    assert_eq!(recorded, [refused], "{steps:?}");
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

/// A URL whose connections are refused while the port is held.
fn refused_url() -> (ClosedPort, String) {
    let port = ClosedPort::new();
    let url = port.url("/sse");
    (port, url)
}

#[test]
fn unreachable_server_fails_at_once() {
    // As curl does: the first connection is not retried.
    let (_port, url) = refused_url();
    let t0 = Instant::now();
    let mut c = connect(&["--format", "json", &url]);
    assert_eq!(c.wait().code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let err = c.stderr();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("ssechan: connection failed: cannot connect: "), "{err}");
    assert!(err.contains("refused"), "{err}");
    let out = c.rest();
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
    let (_port, url) = refused_url();
    let mut c = connect(&with(FAST, &["--retry-first", "--max-retries", "2", &url]));
    assert_eq!(c.wait().code(), Some(1));
    // The first attempt and 2 retries.
    assert!(c.stderr().contains("gave up after 3 failed attempts"), "{}", c.stderr());
}

#[test]
fn retry_max_caps_the_first_delay_too() {
    let (_port, url) = refused_url();
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
    // A port no other test can be given while this server is down.
    let port = ClosedPort::new().release();
    let mut a = Serve::start_on(&format!("127.0.0.1:{port}"), &[]);
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
    // 1.2 s of silence in the middle of the stream: waited out, not cut.
    let server = SilentServer::start_speaking_after(Duration::from_millis(1200));
    let c = connect(&with(FAST, &["--idle-timeout", "0", "--format", "json", &server.url]));
    c.json_event("open");
    assert_eq!(c.json_event("message")["data"], "event 1");
    let next: Value =
        serde_json::from_str(&c.line().expect("the event after the silence")).unwrap();
    assert_eq!(next, json!({"event": "message", "data": "again 1"}), "the same stream went on");
    assert_eq!(server.gets().len(), 1);
}

#[test]
fn heartbeats_count_as_data() {
    let mut serve = Serve::start(&["--heartbeat", "100ms"]);
    // Ten heartbeats per idle timeout: a busy machine would have to hold
    // one back for a whole second to break this.
    let args = with(FAST, &["--idle-timeout", "1s", "--format", "json", &serve.url]);
    let mut c = connect(&args);
    let id = serve.client();
    c.json_event("open");
    // Nothing but heartbeats for 25 of them, 2.5 s by the server's clock,
    // well over two idle timeouts: each shown as a comment, nothing else.
    let mut quiet = Vec::new();
    while quiet.len() < 25 {
        let line = c.line().unwrap_or_else(|| panic!("stdout ended after {quiet:?}"));
        assert_eq!(line, r#"{"event":"comment","text":" ping"}"#, "after {quiet:?}");
        quiet.push(line);
    }
    serve.command(json!({"client": id, "data": "still here"}));
    assert_eq!(c.json_event("message")["data"], "still here");
    // One stream all along: what the server says next is this message, no
    // close nor second connect before it.
    c.write("and you?\n");
    let next = serve.proc.line().expect("serve's next line");
    let next: Value = serde_json::from_str(&next).unwrap_or_else(|e| panic!("{next}: {e}"));
    assert_eq!((&next["event"], &next["data"]), (&json!("message"), &json!("and you?")), "{next}");
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

fn redirect_to(location: &str) -> String {
    format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";

#[test]
fn redirect_to_another_host_keeps_headers_and_client_id_home() {
    // Two real servers: `a` on 127.0.0.1 redirects to `b` on "localhost".
    for trusted in [false, true] {
        let b = SseServer::start(vec![NO_CONTENT.into()]);
        let b_url = b.url.replacen("127.0.0.1", "localhost", 1);
        let a = SseServer::start(vec![redirect_to(&b_url)]);
        let mut args = vec!["-H", "X-Api-Key: s3cret", "-H", "Authorization: Bearer t", &a.url];
        if trusted {
            args.insert(0, "--location-trusted");
        }
        let mut c = connect(&args);
        assert!(c.wait().success(), "stderr:\n{}", c.stderr());
        let (at_a, at_b) = (a.requests(), b.requests());
        assert_eq!(at_a[0].header("x-api-key"), Some("s3cret"), "the URL's own host gets them");
        assert_eq!(at_b.len(), 1, "{at_b:?}");
        let want = trusted.then_some("s3cret");
        assert_eq!(at_b[0].header("x-api-key"), want, "trusted {trusted}: {at_b:?}");
        assert_eq!(at_b[0].header("authorization"), trusted.then_some("Bearer t"));
        assert_eq!(at_b[0].header("referer"), None, "the client id does not leak: {at_b:?}");
        assert_eq!(at_b[0].header("accept"), Some("text/event-stream"));
    }
}

#[test]
fn a_post_follows_a_redirect_to_another_origin_only_with_location() {
    // A 307 keeps the method and the body: without -L a server could send
    // them to any host, internal ones included.
    for follow in [false, true] {
        let b = SseServer::start(vec![NO_CONTENT.into()]);
        let b_url = b.url.replacen("127.0.0.1", "localhost", 1);
        let a = SseServer::start(vec![redirect_to(&b_url)]);
        let mut args = vec!["--raw", "-d", "the-body", "--max-retries", "0", &a.url];
        if follow {
            args.insert(0, "-L");
        }
        let mut c = connect(&args);
        let status = c.wait();
        assert_eq!(a.requests().len(), 1);
        if follow {
            assert!(status.success(), "stderr:\n{}", c.stderr());
            let at_b = b.requests();
            assert!(at_b[0].request_line.starts_with("POST "), "{at_b:?}");
            assert_eq!(at_b[0].body, "the-body");
        } else {
            assert_eq!(status.code(), Some(1), "stderr:\n{}", c.stderr());
            let err = c.stderr();
            assert!(err.contains("to another origin") && err.contains("-L follows it"), "{err}");
            assert!(b.requests().is_empty(), "the body went to the other origin");
        }
    }
    // Within the origin a POST follows, as before.
    let a = SseServer::start(vec![redirect_to("/moved"), NO_CONTENT.into()]);
    let mut c = connect(&["--raw", "-d", "the-body", &a.url]);
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    let seen = a.requests();
    assert!(seen[1].request_line.starts_with("POST /moved "), "{seen:?}");
    assert_eq!(seen[1].body, "the-body");
}

#[test]
fn redirect_within_the_host_keeps_headers() {
    let a = SseServer::start(vec![redirect_to("/moved"), NO_CONTENT.into()]);
    let mut c = connect(&["--raw", "-H", "X-Api-Key: s3cret", &a.url]);
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    let seen = a.requests();
    assert!(seen[1].request_line.starts_with("GET /moved "), "{seen:?}");
    assert_eq!(seen[1].header("x-api-key"), Some("s3cret"), "{seen:?}");
}

#[test]
fn a_plain_sse_endpoint_refusing_posts_ends_the_run() {
    // Once: the POST got 501 and was retried forever (10 minutes, killed).
    let server = PlainSse::start();
    let t0 = Instant::now();
    let mut c = connect(&[&server.url]);
    c.write("hi\n");
    assert_eq!(c.wait().code(), Some(1), "stderr:\n{}", c.stderr());
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(*server.posts.lock().unwrap(), 1, "a 501 is not retried");
    let err = c.stderr();
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("ssechan: message 0 not delivered: server answered 501"),
        "one line says why: {err}"
    );
}

#[test]
fn named_events_without_channel_messages_suggest_raw() {
    let server = PlainSse::start();
    // -vv: each event ignored is logged, so the test can wait for more.
    let c = connect(&["-vv", "--wait", "0s", &server.url]);
    let hint = c.stderr_where("the hint", |l| l.contains("plain SSE endpoint"));
    assert_eq!(
        hint,
        "this looks like a plain SSE endpoint (events of type \"tick\", no channel message): try --raw"
    );
    // Said once, however many ticks come after it.
    for n in 0..5 {
        c.stderr_where(&format!("tick {n} after the hint"), |l| {
            l.contains("ignoring event of type \"tick\"")
        });
    }
    assert_eq!(c.stderr().matches("plain SSE endpoint").count(), 1, "{}", c.stderr());
}

#[test]
fn pipe_mode_says_what_happens_on_stderr() {
    let mut serve = Serve::start(&["--keep-alive", "30s"]);
    let mut c = connect(&with(FAST, &[&serve.url]));
    let id = serve.client();
    let connected = c.stderr_where("connected", |l| l.starts_with("connected"));
    assert_eq!(connected, format!("connected as {id}"));
    serve.command(json!({"client": id, "data": "one"}));
    assert_eq!(c.line().as_deref(), Some("one"));
    serve.command(json!({"client": id, "drop": true}));
    c.stderr_where("the disconnect", |l| l == "disconnected: the server ended the stream");
    c.stderr_where("the resume", |l| l == "resumed after event 1");
    c.close_stdin();
    assert!(c.wait().success());
    assert!(!c.stderr().contains("WARN"), "plain lines, not logs: {}", c.stderr());
    // -q: nothing on stderr.
    let mut c = connect(&with(FAST, &["-q", &serve.url]));
    let id = serve.client();
    serve.command(json!({"client": id, "data": "two"}));
    assert_eq!(c.line().as_deref(), Some("two"));
    c.close_stdin();
    assert!(c.wait().success());
    assert_eq!(c.stderr(), "");
}

#[test]
fn a_url_without_scheme_gets_a_suggestion() {
    let mut c = connect(&["localhost:8080/sse"]);
    assert_eq!(c.wait().code(), Some(2));
    assert!(c.stderr().contains("did you mean http://localhost:8080/sse?"), "{}", c.stderr());
}

#[test]
fn ending_by_itself_closes_the_channel_with_delete() {
    // After stdin's end and --wait, and after --count: a DELETE tells the
    // server the client is gone for good.
    for args in [&["--wait", "0s"][..], &["--count", "1"]] {
        let server = SilentServer::start();
        let mut c = connect(&with(args, &["--client-id", "bye", &server.url]));
        if args[0] == "--wait" {
            c.close_stdin();
        }
        assert!(c.wait().success(), "{args:?}: {}", c.stderr());
        let seen = server.wait_for_gets(2, procs::WAIT);
        let delete = seen.iter().find(|g| g.request_line.starts_with("DELETE "));
        let delete = delete.unwrap_or_else(|| panic!("{args:?}: no DELETE in {seen:?}"));
        assert!(delete.request_line.contains("?sseClientId=bye "), "{delete:?}");
    }
}

#[test]
fn a_server_without_the_close_extension_is_no_error() {
    // `ssechan serve` of today answers the DELETE 405: connect just stops.
    let serve = Serve::start(&[]);
    let mut c = connect(&["--wait", "0s", "--format", "json", &serve.url]);
    serve.client();
    c.close_stdin();
    assert!(c.wait().success(), "{}", c.stderr());
    assert_eq!(c.stderr(), "");
    serve.proc.json_event("close");
}

/// A body for a raw POST-streaming request, sent again on reconnect.
fn raw_post(data: &str, stdin: Option<&str>) -> Vec<procs::Seen> {
    let server = SseServer::start(vec![
        SseServer::stream("id: 7\ndata: first answer\n\n"),
        NO_CONTENT.into(),
    ]);
    let args = ["--raw", "-d", data, "-H", "Content-Type: application/json", "--retry-max", "10ms"];
    let mut c = connect(&with(&args, &[&server.url]));
    if let Some(text) = stdin {
        c.write(text);
    }
    c.close_stdin();
    assert_eq!(c.line().as_deref(), Some("first answer"));
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    server.requests()
}

#[test]
fn raw_posts_a_body_and_sends_it_again_on_reconnect() {
    let body = r#"{"prompt":"hi"}"#;
    let seen = raw_post(body, None);
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert!(s.request_line.starts_with("POST /events "), "{s:?}");
        assert_eq!(s.body, body, "{s:?}");
        assert_eq!(s.header("content-type"), Some("application/json"));
    }
    assert_eq!(seen[1].header("last-event-id"), Some("7"));
    // @FILE and @- read the body.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, body).unwrap();
    let at_file = format!("@{}", file.display());
    assert_eq!(raw_post(&at_file, None)[1].body, body);
    assert_eq!(raw_post("@-", Some(body))[0].body, body);
}

#[test]
fn method_and_last_event_id() {
    let server = SseServer::start(vec![NO_CONTENT.into()]);
    let mut c = connect(&["--raw", "-X", "put", "--last-event-id", "41", &server.url]);
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    let seen = server.requests();
    assert!(seen[0].request_line.starts_with("PUT /events "), "{seen:?}");
    assert_eq!(seen[0].header("last-event-id"), Some("41"));
    // -X and -d need --raw: a channel's stream is a GET.
    let mut c = connect(&["-d", "x", &server.url]);
    assert_eq!(c.wait().code(), Some(2));
}

#[test]
fn comments_timestamps_and_event_filter() {
    let stream = ": hello\n\nevent: tick\ndata: 1\n\nevent: tock\ndata: 2\n\ndata: 3\n\n";
    let run = |args: &[&str]| {
        let server = SseServer::start(vec![SseServer::stream(stream), NO_CONTENT.into()]);
        let mut c = connect(&with(&["--raw", "--retry-max", "10ms"], &with(args, &[&server.url])));
        assert!(c.wait().success(), "stderr:\n{}", c.stderr());
        std::iter::from_fn(|| c.line()).collect::<Vec<_>>()
    };
    assert_eq!(run(&[]), ["1", "2", "3"], "comments hidden in text mode");
    assert_eq!(run(&["--show-comments"]), [": hello", "1", "2", "3"]);
    assert_eq!(run(&["--event", "tick", "--event", "message"]), ["1", "3"]);
    // --count counts what the filter lets through.
    assert_eq!(run(&["--event", "tock", "--count", "1"]), ["2"]);
    let json = run(&["--format", "json", "--event", "tock"]);
    assert!(json.contains(&r#"{"event":"comment","text":" hello"}"#.to_string()), "{json:?}");
    let messages: Vec<_> = json.iter().filter(|l| l.contains(r#""message""#)).collect();
    assert_eq!(messages, [r#"{"event":"message","type":"tock","id":"","data":"2"}"#]);
    // Receive times, RFC 3339 in UTC.
    let timed = run(&["--timestamps"]);
    let (time, data) = timed[0].split_once(' ').expect("time and data");
    assert_eq!(data, "1");
    assert!(time.starts_with("20") && time.ends_with('Z') && time.contains('T'), "{time}");
    let timed = run(&["--timestamps", "--format", "json"]);
    let v: Value = serde_json::from_str(&timed[0]).unwrap();
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    assert_eq!(v["event"], "connecting", "{v}");
}

#[cfg(unix)]
#[test]
fn sigusr1_drops_the_stream_and_it_resumes() {
    let mut serve = Serve::start(&["--keep-alive", "30s"]);
    let c = connect(&with(FAST, &["--format", "json", &serve.url]));
    let id = serve.client();
    serve.command(json!({"client": id, "data": "before"}));
    c.json_event("message");
    c.signal(libc::SIGUSR1);
    assert_eq!(c.json_event("disconnected")["reason"], "stream dropped on purpose");
    assert_eq!(c.json_event("resumed")["last_event_id"], "1");
    serve.command(json!({"client": id, "data": "after"}));
    assert_eq!(c.json_event("message")["data"], "after");
}

#[test]
fn record_writes_every_event_and_send() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let file = path.to_str().unwrap();
    let mut serve = Serve::start(&[]);
    let mut c = connect(&["--record", file, "--client-id", "rec", "--wait", "100ms", &serve.url]);
    serve.client();
    c.write("up one\nup two\n");
    assert_eq!(serve.messages(2), ["up one", "up two"]);
    serve.command(json!({"client": "rec", "data": "down"}));
    assert_eq!(c.line().as_deref(), Some("down"));
    c.close_stdin();
    assert!(c.wait().success(), "stderr:\n{}", c.stderr());
    let (header, steps) = ssechan::connect::record::read_file(&path).unwrap();
    assert_eq!(header.url, serve.url);
    assert_eq!(header.client.as_deref(), Some("rec"));
    assert_eq!(header.mode, ssechan::connect::record::RecordMode::Channel);
    use ssechan::connect::record::Recorded;
    let sends: Vec<_> = steps
        .iter()
        .filter_map(|s| match &s.what {
            Recorded::Send { message_id, data } => Some((*message_id, data.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(sends, [(0, "up one"), (1, "up two")]);
    let names: Vec<&str> = steps.iter().map(|s| s.what.event()).collect();
    let at = |name: &str| names.iter().position(|n| *n == name).unwrap_or(usize::MAX);
    assert!(at("connecting") < at("open") && at("open") < at("message"), "{names:?}");
    assert!(names.contains(&"closed"), "{names:?}");
    assert!(steps.windows(2).all(|w| w[0].t_ms <= w[1].t_ms), "{steps:?}");
    // Each line is the JSON line of connect --format json, plus t_ms.
    let text = std::fs::read_to_string(&path).unwrap();
    let open = text.lines().find(|l| l.contains(r#""event":"open""#)).unwrap();
    assert!(open.starts_with(r#"{"event":"open","client":"rec","t_ms":"#), "{open}");
}
