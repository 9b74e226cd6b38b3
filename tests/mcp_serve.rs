//! `ssechan serve --mcp`: MCP's Streamable HTTP over the channel core,
//! against real peers: the conformance suite beside the reference server's
//! own HTTP transport, the TypeScript SDK as a client, and the reference
//! server (server-everything) as the stdio COMMAND of each session.

#[path = "support/mcp_peers.rs"]
mod mcp_peers;
mod util;

use std::collections::BTreeSet;
use std::time::Duration;

use mcp_peers::*;
use serde_json::{Value, json};
use ssechan::mcp::event_id;
use util::*;

const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

/// The next event that carries a message (priming events carry none).
async fn next_message(s: &mut Stream) -> Option<ssechan::protocol::Event> {
    loop {
        let e = s.next_event(WAIT).await?;
        if !e.data.is_empty() {
            return Some(e);
        }
    }
}

/// The message events up to the end of the stream.
async fn messages_until_end(s: &mut Stream) -> Vec<ssechan::protocol::Event> {
    s.until_end().await.into_iter().filter(|e| !e.data.is_empty()).collect()
}

/// A client speaking the transport by hand.
struct Raw {
    http: reqwest::Client,
    url: String,
}

impl Raw {
    fn new(url: &str) -> Raw {
        Raw { http: http(), url: url.to_owned() }
    }

    fn request(&self, method: reqwest::Method, session: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, &self.url);
        if let Some(s) = session {
            r = r.header("mcp-session-id", s).header("mcp-protocol-version", "2025-11-25");
        }
        r
    }

    async fn post(&self, session: Option<&str>, body: &str) -> reqwest::Response {
        self.request(reqwest::Method::POST, session)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST")
    }

    /// A request answered as a stream.
    async fn call(&self, session: &str, body: Value) -> Stream {
        let r = self.post(Some(session), &body.to_string()).await;
        assert_eq!(r.status(), 200, "{body}");
        assert_eq!(header(&r, "content-type"), "text/event-stream");
        Stream::new(r)
    }

    async fn get(&self, session: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut r =
            self.request(reqwest::Method::GET, Some(session)).header("accept", "text/event-stream");
        if let Some(l) = last_event_id {
            r = r.header("last-event-id", l);
        }
        r.send().await.expect("GET")
    }

    async fn delete(&self, session: &str) -> u16 {
        let r = self.request(reqwest::Method::DELETE, Some(session)).send().await.expect("DELETE");
        r.status().as_u16()
    }

    /// initialize + notifications/initialized: the session id.
    async fn open(&self) -> String {
        let r = self.post(None, INIT).await;
        assert_eq!(r.status(), 200);
        let session = header(&r, "mcp-session-id");
        let mut s = Stream::new(r);
        let answer = json_of(&next_message(&mut s).await.expect("the InitializeResult"));
        assert_eq!(answer["id"], 0);
        assert!(answer["result"]["protocolVersion"].is_string(), "{answer}");
        assert!(s.next_event(WAIT).await.is_none() && s.ended, "the stream ends after its answer");
        let done = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let r = self.post(Some(&session), done).await;
        assert_eq!(r.status(), 202);
        session
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

async fn json_body(r: reqwest::Response) -> Value {
    let text = r.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON body: {text:?}"))
}

fn json_of(e: &ssechan::protocol::Event) -> Value {
    serde_json::from_str(&e.data).unwrap_or_else(|_| panic!("JSON data: {e:?}"))
}

/// A refusal's status and its JSON-RPC error code.
async fn refusal(r: reqwest::Response) -> (u16, i64) {
    let status = r.status().as_u16();
    assert_eq!(header(&r, "content-type"), "application/json");
    let body = json_body(r).await;
    assert!(body["id"].is_null(), "{body}");
    (status, body["error"]["code"].as_i64().expect("a code"))
}

async fn bridge(flags: &[&str]) -> Serve {
    let args = bridge_args(flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Serve::spawn(&args).await
}

fn long_call(id: u64, token: &str, duration: u64, steps: u64) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{
        "name":"trigger-long-running-operation",
        "arguments":{"duration":duration,"steps":steps},
        "_meta":{"progressToken":token}}})
}

// --- real peers -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn conformance_scenarios_the_reference_passes_pass_through_the_bridge() {
    let bridge = bridge(&[]).await;
    let reference = Reference::start().await;
    let (through, direct) = tokio::join!(conformance(&bridge.url), conformance(&reference.url));
    let (through_ok, direct_ok) = (passed(&through), passed(&direct));
    // The reference passes what it implements: this is no empty baseline.
    for known in ["server-initialize", "ping", "tools-list", "tools-call-simple-text"] {
        assert!(direct_ok.contains(known), "reference fails {known}: {direct:?}");
    }
    let missing: BTreeSet<_> = direct_ok.difference(&through_ok).collect();
    assert!(
        missing.is_empty(),
        "pass against the reference, fail through the bridge: {missing:?}\nbridge: {through:?}"
    );
    assert_eq!(
        through.get("dns-rebinding-protection"),
        Some(&(2, 0)),
        "both DNS rebinding checks pass through the bridge: {through:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sdk_sessions_each_have_their_own_process_gone_after_delete() {
    let serve = bridge(&[]).await;
    let mut sdk = Sdk::start(&["sessions", &serve.url, "20"]);
    let out = sdk.next(Duration::from_secs(120)).await;
    let sessions = out["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 20);
    let mut ids = BTreeSet::new();
    for s in sessions {
        let i = s["i"].as_u64().expect("i");
        assert_eq!(s["echo"], format!("Echo: hello {i}"));
        assert_eq!(s["sum"], format!("The sum of {i} and 1000 is {}.", i + 1000));
        ids.insert(s["session"].as_str().expect("session id").to_owned());
    }
    assert_eq!(ids.len(), 20, "distinct session ids");
    // One process per session (the guard and COMMAND both carry its id).
    let pid = serve.child.id().expect("serve's pid");
    let procs = session_processes(pid);
    let seen: BTreeSet<String> = procs.keys().cloned().collect();
    assert_eq!(seen, ids, "each session has its own process, and only those run");
    let all: Vec<i32> = procs.values().flatten().copied().collect();
    let distinct: BTreeSet<i32> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len());
    sdk.say("delete").await;
    let deleted = sdk.next(Duration::from_secs(30)).await;
    assert_eq!(deleted["deleted"], 20);
    // A DELETE is answered once the session's streams have ended: the SDK,
    // which closes its transport when answered, finds none still open
    // (it would abort each and report an AbortError).
    let gets = &deleted["get_streams"];
    assert_eq!(gets["aborted"], 0, "GET streams still open when answered: {deleted}");
    assert!(gets["ended"].as_u64().expect("ended") > 0, "GET streams were followed: {deleted}");
    assert_eq!(deleted["errors"], json!([]), "what the SDK's transports reported");
    sdk.succeeds().await;
    // None left 2 s after the DELETEs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let left: Vec<i32> = all.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still running 2 s after DELETE: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let raw = Raw::new(&serve.url);
    for id in &ids {
        assert_eq!(raw.delete(id).await, 404, "a deleted session is gone");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_call_cut_after_two_progress_events_is_resumed_by_the_sdk_exactly() {
    let serve = bridge(&[]).await;
    let mut sdk = Sdk::start(&["long", &serve.url]);
    let out = sdk.next(Duration::from_secs(60)).await;
    sdk.succeeds().await;
    assert_eq!(out["cut"], true, "the stream was cut: {out}");
    assert_eq!(out["progress"], json!([1, 2, 3, 4, 5, 6]), "every progress once, in order");
    assert_eq!(out["result"], "Long running operation completed. Duration: 3 seconds, Steps: 6.");
    let resumes = out["resumes"].as_array().expect("resumes");
    assert_eq!(resumes.len(), 1, "one resume: {out}");
    assert_eq!(resumes[0]["status"], 200);
    let last: u64 = resumes[0]["lastEventId"].as_str().expect("id").parse().expect("numeric");
    assert!(event_id::stream_of(last) >= 1, "the id names the call's stream, not the GET stream");
}

// --- the transport by hand --------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_replays_from_its_own_stream_only() {
    let serve = bridge(&[]).await;
    let raw = Raw::new(&serve.url);
    let session = raw.open().await;
    let mut a = raw.call(&session, long_call(1, "a", 2, 4)).await;
    let mut b = raw.call(&session, long_call(2, "b", 2, 4)).await;
    // Two progress events of A, then A's connection is cut. (The server
    // may say other things, tied to no request; they go where the rule
    // says, never carrying B's progress.)
    let mut last = String::new();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = next_message(&mut a).await.expect("progress of A");
        let m = json_of(&e);
        assert_ne!(m["params"]["progressToken"], "b", "{m}");
        if let Some(p) = m["params"]["progress"].as_u64() {
            assert_eq!(m["params"]["progressToken"], "a");
            seen.push(p);
        }
        last = e.last_event_id;
    }
    assert_eq!(seen, [1, 2]);
    let stream_a = event_id::stream_of(last.parse().expect("numeric id"));
    drop(a);
    // B goes on undisturbed on its own stream.
    let b_events = messages_until_end(&mut b).await;
    let b_json: Vec<Value> = b_events.iter().map(json_of).collect();
    let b_progress: Vec<u64> =
        b_json.iter().filter_map(|m| m["params"]["progress"].as_u64()).collect();
    assert_eq!(b_progress, [1, 2, 3, 4], "{b_json:?}");
    assert!(b_json.iter().all(|m| m["params"]["progressToken"] != "a"), "{b_json:?}");
    assert_eq!(b_json.last().expect("B's answer")["id"], 2);
    let stream_b = event_id::stream_of(b_events[0].last_event_id.parse().expect("id"));
    assert_ne!(stream_a, stream_b);
    // A resumed: the rest of A, from A's stream only, then its answer.
    let r = raw.get(&session, Some(&last)).await;
    assert_eq!(r.status(), 200);
    let mut resumed = Stream::new(r);
    let events = messages_until_end(&mut resumed).await;
    let msgs: Vec<Value> = events.iter().map(json_of).collect();
    let progress: Vec<u64> = msgs.iter().filter_map(|m| m["params"]["progress"].as_u64()).collect();
    assert_eq!(progress, [3, 4], "{msgs:?}");
    assert!(msgs.iter().all(|m| m["params"]["progressToken"] != "b"), "nothing of B: {msgs:?}");
    assert_eq!(msgs.last().expect("the answer")["id"], 1);
    for e in &events {
        let id: u64 = e.last_event_id.parse().expect("id");
        assert_eq!(event_id::stream_of(id), stream_a);
        assert!(id > last.parse().expect("id"));
    }
    // A stream that has ended is not resumed (its answer was taken).
    let r = raw.get(&session, Some(&events.last().expect("event").last_event_id)).await;
    assert_eq!(refusal(r).await, (400, -32000));
}

/// A stream's channel closes once its answer is written; a client whose
/// connection was cut before that write reached it (the server learns of
/// a cut only when a later write fails) resumes from the last id it has
/// and still gets the answer, kept after the stream closed.
#[tokio::test(flavor = "multi_thread")]
async fn an_answered_stream_is_resumed_from_before_its_answer() {
    let serve = bridge(&[]).await;
    let raw = Raw::new(&serve.url);
    let session = raw.open().await;
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"kept"}}}"#;
    let mut s = Stream::new(raw.post(Some(&session), call).await);
    let events = s.until_end().await;
    let (priming, answer) = (&events[0], events.last().expect("the answer"));
    assert!(priming.data.is_empty(), "a priming event first: {events:?}");
    assert_eq!(json_of(answer)["id"], 7);
    // As if only the priming event had arrived.
    let r = raw.get(&session, Some(&priming.last_event_id)).await;
    assert_eq!(r.status(), 200);
    let resumed = messages_until_end(&mut Stream::new(r)).await;
    assert_eq!(resumed, events[1..], "what followed the priming event, the answer last");
    // After the answer itself there is nothing: refused, as before.
    let r = raw.get(&session, Some(&answer.last_event_id)).await;
    assert_eq!(refusal(r).await, (400, -32000));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_ends_the_session_then_404() {
    let serve = bridge(&[]).await;
    let raw = Raw::new(&serve.url);
    let session = raw.open().await;
    let pid = serve.child.id().expect("pid");
    let procs = session_processes(pid).remove(&session).expect("the session's process");
    assert_eq!(raw.delete(&session).await, 204);
    eventually("the session's process to end", || procs.iter().all(|p| !alive(*p)).then_some(()))
        .await;
    let ping = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    assert_eq!(refusal(raw.post(Some(&session), ping).await).await, (404, -32001));
    assert_eq!(refusal(raw.get(&session, None).await).await, (404, -32001));
    assert_eq!(raw.delete(&session).await, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_session_is_404_and_a_missing_one_400() {
    let serve = bridge(&[]).await;
    let raw = Raw::new(&serve.url);
    let ping = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(refusal(raw.post(Some(unknown), ping).await).await, (404, -32001));
    assert_eq!(refusal(raw.get(unknown, None).await).await, (404, -32001));
    assert_eq!(raw.delete(unknown).await, 404);
    assert_eq!(refusal(raw.post(None, ping).await).await, (400, -32000));
    assert_eq!(refusal(raw.post(Some("a b"), ping).await).await, (400, -32000));
    assert_eq!(serve_sessions(&serve), 0, "nothing was opened");
}

fn serve_sessions(serve: &Serve) -> usize {
    session_processes(serve.child.id().expect("pid")).len()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsupported_protocol_version_is_400() {
    let serve = bridge(&[]).await;
    let raw = Raw::new(&serve.url);
    let session = raw.open().await;
    let ping = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    let send = |version: &'static str| {
        raw.http
            .post(&raw.url)
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", version)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(ping)
            .send()
    };
    for bad in ["1999-01-01", "2026-07-28", "latest"] {
        let r = send(bad).await.expect("POST");
        assert_eq!(refusal(r).await, (400, -32000), "{bad}");
    }
    // Every revision of the session era is taken.
    for good in ["2025-11-25", "2025-06-18", "2025-03-26"] {
        let r = send(good).await.expect("POST");
        assert_eq!(r.status(), 200, "{good}");
    }
    // A request of the per-request era (no session) is told what is served,
    // as its Backward Compatibility section asks: a recognized error.
    let modern = json!({"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"_meta":{
        "io.modelcontextprotocol/protocolVersion":"2026-07-28"}}});
    let r = post_modern(&raw, &modern, "application/json, text/event-stream").await;
    assert_eq!(r.status(), 400);
    let body = json_body(r).await;
    assert_eq!(body["id"], 9);
    assert_eq!(body["error"]["code"], -32022);
    assert_eq!(body["error"]["data"]["supported"][0], "2025-11-25");
    // The COMMAND was probed (server/discover) and does not speak it: the
    // probe's process is gone, the session's stays.
    let pid = serve.child.id().expect("pid");
    eventually("the probe's process to end", || {
        let procs = session_processes(pid);
        (procs.len() == 1 && procs.contains_key(&session)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_origin_is_refused_403_and_starts_nothing() {
    let serve = bridge(&[]).await;
    let raw = Raw::new(&serve.url);
    let host = serve.url.trim_start_matches("http://").split('/').next().expect("host").to_owned();
    let send = |origin: String| {
        raw.http
            .post(&raw.url)
            .header("origin", origin)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(INIT)
            .send()
    };
    let r = send("http://evil.example".into()).await.expect("POST");
    assert_eq!(refusal(r).await, (403, -32000));
    assert_eq!(serve_sessions(&serve), 0, "no process for a refused origin");
    // The server's own pages may.
    let r = send(format!("http://{host}")).await.expect("POST");
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), format!("http://{host}"));
    assert_eq!(header(&r, "access-control-expose-headers"), "mcp-session-id");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_each_post_gets() {
    let serve = bridge(&[]).await;
    let raw = Raw::new(&serve.url);
    let session = raw.open().await;
    let post = |content_type: &'static str, accept: &'static str, body: &'static str| {
        raw.http
            .post(&raw.url)
            .header("mcp-session-id", &session)
            .header("content-type", content_type)
            .header("accept", accept)
            .body(body)
            .send()
    };
    let ping = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    let both = "application/json, text/event-stream";
    // A client that takes only JSON gets its answer as JSON.
    let r = post("application/json", "application/json", ping).await.expect("POST");
    assert_eq!((r.status().as_u16(), header(&r, "content-type")), (200, "application/json".into()));
    assert_eq!(header(&r, "mcp-session-id"), session);
    let answer = json_body(r).await;
    assert_eq!((answer["id"].as_u64(), answer["result"].is_object()), (Some(5), true));
    // A stream starts with the priming event (2025-11-25): an id, no data.
    let r = post("application/json", both, r#"{"jsonrpc":"2.0","id":6,"method":"ping"}"#)
        .await
        .expect("POST");
    let mut s = Stream::new(r);
    let answer = next_message(&mut s).await.expect("the answer");
    let raw_text = String::from_utf8_lossy(&s.raw).into_owned();
    assert!(raw_text.starts_with("retry: 1000\n\nid: "), "{raw_text:?}");
    assert!(raw_text.contains("\ndata: \n\n"), "priming: {raw_text:?}");
    assert_eq!(json_of(&answer)["id"], 6);
    // Notifications and responses from the client: 202.
    let r = post(
        "application/json",
        both,
        r#"{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}"#,
    )
    .await
    .expect("POST");
    assert_eq!(r.status(), 202);
    let r = post("application/json", both, r#"{"jsonrpc":"2.0","id":"s1","result":{}}"#)
        .await
        .expect("POST");
    assert_eq!(r.status(), 202);
    // What is refused, each with its reason.
    let cases: [(&'static str, &'static str, &'static str, u16); 6] = [
        ("text/plain", both, ping, 415),
        ("application/json", "text/html", ping, 406),
        ("application/json", both, "[]", 400),
        ("application/json", both, "{", 400),
        ("application/json", both, r#"{"id":1,"method":"ping"}"#, 400),
        ("application/json", both, INIT, 400),
    ];
    for (ct, accept, body, status) in cases {
        let r = post(ct, accept, body).await.expect("POST");
        assert_eq!(refusal(r).await.0, status, "{ct} {accept} {body}");
    }
    // The same id twice while in flight: the second could not be answered.
    let _first = raw.call(&session, long_call(7, "t", 2, 2)).await;
    let r = raw.post(Some(&session), &long_call(7, "u", 2, 2).to_string()).await;
    assert_eq!(refusal(r).await.0, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_end_with_their_process() {
    let serve = bridge(&["--session-idle", "1s"]).await;
    let raw = Raw::new(&serve.url);
    let session = raw.open().await;
    let procs =
        session_processes(serve.child.id().expect("pid")).remove(&session).expect("process");
    eventually("the idle session's process to end", || {
        procs.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    let ping = r#"{"jsonrpc":"2.0","id":5,"method":"ping"}"#;
    assert_eq!(refusal(raw.post(Some(&session), ping).await).await, (404, -32001));
}

// --- sessions on stdin/stdout -------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn without_command_sessions_are_json_lines_and_unrelated_messages_wait_for_get() {
    let mut serve =
        Serve::spawn(&["--mcp", "--metrics", "127.0.0.1:0", "--heartbeat", "200ms"]).await;
    let metrics_line = serve.err_line_with("metrics on").await;
    let metrics_url = metrics_line.split("metrics on ").nth(1).expect("url").trim().to_owned();
    assert_eq!(serve.out_json().await["event"], "listening");
    let raw = Raw::new(&serve.url);
    let r = raw.post(None, INIT).await;
    assert_eq!(r.status(), 200);
    let session = header(&r, "mcp-session-id");
    let mut init = Stream::new(r);
    let connect = serve.out_json().await;
    assert_eq!(
        (connect["event"].as_str(), connect["client"].as_str()),
        (Some("connect"), Some(&*session))
    );
    let asked = serve.out_json().await;
    assert_eq!(asked["event"], "message");
    let request: Value = serde_json::from_str(asked["data"].as_str().expect("data")).expect("JSON");
    assert_eq!(request["method"], "initialize");
    // The application answers on stdin; the answer ends the POST's stream.
    let result = json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25",
        "capabilities":{},"serverInfo":{"name":"stdin","version":"1"}}});
    serve.send_line(&json!({"client": session, "data": result.to_string()}).to_string()).await;
    let events = messages_until_end(&mut init).await;
    assert_eq!(events.iter().map(json_of).collect::<Vec<_>>(), [result]);
    // With no request in flight, a message of the server waits for GET.
    let note = json!({"jsonrpc":"2.0","method":"notifications/tools/list_changed"});
    serve.send_line(&json!({"client": session, "data": note.to_string()}).to_string()).await;
    let r = raw.get(&session, None).await;
    assert_eq!(r.status(), 200);
    let mut standalone = Stream::new(r);
    let e = next_message(&mut standalone).await.expect("the waiting notification");
    assert_eq!(json_of(&e), note);
    assert_eq!(event_id::stream_of(e.last_event_id.parse().expect("id")), 0);
    // Heartbeats keep an idle stream open through proxies, as for channels.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !standalone.comments.iter().any(|c| c.contains("ping")) {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat on the GET stream");
        assert!(standalone.next_event(Duration::from_millis(100)).await.is_none(), "nothing else");
    }
    // A request the client cancels: its stream ends, its late answer goes nowhere.
    let mut call = raw.call(&session, json!({"jsonrpc":"2.0","id":3,"method":"tools/list"})).await;
    assert_eq!(
        serde_json::from_str::<Value>(serve.out_json().await["data"].as_str().expect("data"))
            .expect("JSON")["id"],
        3
    );
    let cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}});
    assert_eq!(raw.post(Some(&session), &cancel.to_string()).await.status(), 202);
    assert!(
        messages_until_end(&mut call).await.is_empty(),
        "the cancelled request's stream ends without an answer"
    );
    // A request answered as JSON, cancelled: its POST is told so.
    let (http, url, sid) = (raw.http.clone(), raw.url.clone(), session.clone());
    let waiting = tokio::spawn(async move {
        let r = http
            .post(&url)
            .header("mcp-session-id", &sid)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#)
            .send()
            .await
            .expect("POST");
        refusal(r).await
    });
    // (The cancel of request 3 reached the application first.)
    let forwarded = serve.out_json().await;
    assert!(forwarded["data"].as_str().expect("data").contains("notifications/cancelled"));
    let asked = serve.out_json().await;
    assert!(asked["data"].as_str().expect("data").contains("\"id\":4"), "{asked}");
    let cancel =
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}});
    assert_eq!(raw.post(Some(&session), &cancel.to_string()).await.status(), 202);
    assert_eq!(waiting.await.expect("the POST"), (409, -32000));
    let metrics = reqwest::get(&metrics_url).await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("\nssechan_mcp_sessions 1\n"), "{metrics}");
    // DELETE: the application is told the session closed.
    assert_eq!(raw.delete(&session).await, 204);
    loop {
        let line = serve.out_json().await;
        if line["event"] == "close" {
            assert_eq!(
                (line["client"].as_str(), line["reason"].as_str()),
                (Some(&*session), Some("closed by client"))
            );
            break;
        }
    }
}

/// An `initialize` to `serve --mcp` without COMMAND: the session's id and
/// the POST's answer, once stdout said `connect` and passed the request on.
async fn stdin_session(serve: &mut Serve, raw: &Raw) -> (String, reqwest::Response) {
    let r = raw.post(None, INIT).await;
    assert_eq!(r.status(), 200);
    let session = header(&r, "mcp-session-id");
    assert_eq!(serve.out_json().await["event"], "connect");
    assert_eq!(serve.out_json().await["event"], "message");
    (session, r)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_not_resumed_within_the_keep_alive_cancels_its_request() {
    let mut serve = Serve::spawn(&["--mcp", "--keep-alive", "300ms"]).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let raw = Raw::new(&serve.url);
    // (The initialize's stream stays open: only the call below is cut.)
    let (session, _init) = stdin_session(&mut serve, &raw).await;
    // A request whose stream is cut and never resumed.
    let call = raw.call(&session, json!({"jsonrpc":"2.0","id":"c1","method":"tools/list"})).await;
    let asked = serve.out_json().await;
    assert!(asked["data"].as_str().expect("data").contains("\"c1\""), "{asked}");
    drop(call);
    // The application is told to stop what nobody can receive.
    let told = serve.out_json().await;
    let cancel: Value = serde_json::from_str(told["data"].as_str().expect("data")).expect("JSON");
    assert_eq!(cancel["method"], "notifications/cancelled");
    assert_eq!(cancel["params"]["requestId"], "c1");
    assert_eq!(told["client"].as_str(), Some(&*session));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bounds_of_a_session_are_enforced() {
    let mut serve =
        Serve::spawn(&["--mcp", "--max-session-streams", "1", "--max-message-size", "1K"]).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let raw = Raw::new(&serve.url);
    let r = raw.post(None, INIT).await;
    let session = header(&r, "mcp-session-id");
    let _init_stream = r; // the initialize is in flight: the one stream allowed
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    assert_eq!(refusal(raw.post(Some(&session), ping).await).await, (429, -32000));
    let big = json!({"jsonrpc":"2.0","method":"notifications/message","params":{"data":"x".repeat(2048)}});
    assert_eq!(refusal(raw.post(Some(&session), &big.to_string()).await).await.0, 413);
    assert_eq!(serve.out_json().await["event"], "connect");
}

// --- the per-request era (2026-07-28) ----------------------------------------------

/// A request of the per-request era: its revision in `_meta`.
fn modern(id: Value, method: &str, mut params: Value) -> Value {
    params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2026-07-28");
    json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
}

/// POSTs `body` with the headers 2026-07-28 mirrors from it.
async fn post_modern(raw: &Raw, body: &Value, accept: &str) -> reqwest::Response {
    post_modern_named(raw, body, accept, body["params"]["name"].as_str()).await
}

/// [`post_modern`] with this `Mcp-Name`.
async fn post_modern_named(
    raw: &Raw,
    body: &Value,
    accept: &str,
    name: Option<&str>,
) -> reqwest::Response {
    let mut r = raw
        .http
        .post(&raw.url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", body["method"].as_str().expect("method"))
        .header("content-type", "application/json")
        .header("accept", accept);
    if let Some(name) = name {
        r = r.header("mcp-name", name);
    }
    r.body(body.to_string()).send().await.expect("POST")
}

#[tokio::test(flavor = "multi_thread")]
async fn per_request_traffic_passes_through_to_a_command_of_that_era() {
    let args = [
        "--mcp".to_string(),
        "--".into(),
        node(),
        npm_dir().join("modern_server.mjs").to_string_lossy().into_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut serve = Serve::spawn(&args).await;
    let raw = Raw::new(&serve.url);
    // Two clients, the same request id: each gets its own answer, as JSON.
    let echo = |text: &str| {
        modern(json!(1), "tools/call", json!({"name":"echo","arguments":{"message":text}}))
    };
    let (echo_a, echo_b) = (echo("a"), echo("b"));
    let (a, b) = tokio::join!(
        post_modern(&raw, &echo_a, "application/json"),
        post_modern(&raw, &echo_b, "application/json")
    );
    assert!(a.headers().get("mcp-session-id").is_none(), "no sessions in this era");
    let (a, b) = (json_body(a).await, json_body(b).await);
    assert_eq!((&a["id"], &a["result"]["content"][0]["text"]), (&json!(1), &json!("Echo: a")));
    assert_eq!((&b["id"], &b["result"]["content"][0]["text"]), (&json!(1), &json!("Echo: b")));
    // Progress under the client's own token, then the answer, then the end.
    let slow = modern(
        json!("s"),
        "tools/call",
        json!({"name":"slow","arguments":{"steps":3,"every":20},"_meta":{"progressToken":"tok"}}),
    );
    let r = post_modern(&raw, &slow, "application/json, text/event-stream").await;
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    let msgs: Vec<Value> =
        messages_until_end(&mut Stream::new(r)).await.iter().map(json_of).collect();
    let progress: Vec<(&Value, &Value)> = msgs[..3]
        .iter()
        .map(|m| (&m["params"]["progressToken"], &m["params"]["progress"]))
        .collect();
    assert_eq!(
        progress,
        [(&json!("tok"), &json!(1)), (&json!("tok"), &json!(2)), (&json!("tok"), &json!(3))]
    );
    assert_eq!((msgs.len(), &msgs[3]["id"]), (4, &json!("s")));
    // A subscription's stream carries its notifications under its own id;
    // closing the stream cancels it in the process.
    let listen = modern(
        json!("sub-1"),
        "subscriptions/listen",
        json!({"notifications":{"toolsListChanged":true}}),
    );
    let r = post_modern(&raw, &listen, "application/json, text/event-stream").await;
    let mut s = Stream::new(r);
    for want in ["notifications/subscriptions/acknowledged", "notifications/tools/list_changed"] {
        let m = json_of(&next_message(&mut s).await.expect(want));
        assert_eq!(m["method"], want);
        assert_eq!(m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], "sub-1");
    }
    drop(s);
    let said = serve.err_line_with("] cancelled").await;
    assert!(
        said.contains("cancelled \"ssechan-"),
        "the process is told, under its own name: {said}"
    );
    // Mirrored headers must match the body.
    let r = post_modern_named(&raw, &echo("x"), "application/json", Some("not-echo")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json_body(r).await["error"]["code"], -32020);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_count_against_the_process_cap() {
    let mut serve = bridge(&["-vv", "--max-processes", "1"]).await;
    let raw = Raw::new(&serve.url);
    let first = raw.open().await;
    // A second session would need a second process: refused with the reason.
    let r = raw.post(None, INIT).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("mcp-session-id").is_none());
    assert_eq!(serve_sessions(&serve), 1);
    // Once the first is gone, its place is free again.
    assert_eq!(raw.delete(&first).await, 204);
    // The server logs this once the process is reaped and its place given
    // back (a process gone from /proc is not yet a place given back).
    serve.err_line_with("process and its group are gone").await;
    assert_eq!(serve_sessions(&serve), 0);
    raw.open().await;
}

/// Messages tied to no request while no `GET` stream is open are kept like
/// a replay (here 2) and the oldest dropped past it: said once on stderr
/// until a `GET` stream opens, not a line per message (as a server that
/// keeps sending a cancelled request's progress would cause).
#[tokio::test(flavor = "multi_thread")]
async fn an_overflowing_backlog_is_said_once_until_a_get_stream_opens() {
    let mut serve = Serve::spawn(&["--mcp", "--replay", "2"]).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let raw = Raw::new(&serve.url);
    let (session, r) = stdin_session(&mut serve, &raw).await;
    let mut init = Stream::new(r);
    let say = |v: Value| json!({"client": session, "data": v.to_string()}).to_string();
    let result = json!({"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25",
        "capabilities":{},"serverInfo":{"name":"stdin","version":"1"}}});
    serve.send_line(&say(result)).await;
    assert_eq!(messages_until_end(&mut init).await.len(), 1);
    let note = |i: u32| json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":i}});
    for i in 0..10 {
        serve.send_line(&say(note(i))).await;
    }
    // Stdin is read in order: once this answer to nothing is refused, the
    // ten are in the backlog.
    serve.send_line(&say(json!({"jsonrpc":"2.0","id":999,"result":{}}))).await;
    let mut said = 0;
    loop {
        let line = tokio::time::timeout(WAIT, serve.stderr.recv()).await.expect("in time");
        let line = line.expect("stderr open");
        said += usize::from(line.contains("dropped (oldest first) past the replay bounds"));
        if line.contains("a response to no request in flight") {
            break;
        }
    }
    assert_eq!(said, 1, "said once for 8 messages dropped");
    // What was kept: the last two, in order.
    let mut get = Stream::new(raw.get(&session, None).await);
    for i in 8..10 {
        let e = next_message(&mut get).await.expect("a kept message");
        assert_eq!(json_of(&e), note(i));
    }
}

/// `DELETE` is answered once the session's streams have ended: when its
/// answer has come, the end of the session's `GET` stream is already there
/// to read (a client that closes its transport when answered, as the
/// TypeScript SDK does, otherwise aborts streams whose end is on the way).
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_is_answered_after_the_sessions_streams_ended() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let serve = bridge(&[]).await;
    let raw = Raw::new(&serve.url);
    let url = reqwest::Url::parse(&serve.url).expect("URL");
    let authority = format!("127.0.0.1:{}", url.port().expect("port"));
    for _ in 0..3 {
        let session = raw.open().await;
        // The GET stream on a socket of its own, read by hand.
        let mut get = tokio::net::TcpStream::connect(&authority).await.expect("connect");
        let head = format!(
            "GET {} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\
             mcp-session-id: {session}\r\nmcp-protocol-version: 2025-11-25\r\n\r\n",
            url.path()
        );
        get.write_all(head.as_bytes()).await.expect("GET");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n =
                tokio::time::timeout(WAIT, get.read(&mut buf)).await.expect("head").expect("read");
            assert!(n > 0, "closed before the head");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
        assert_eq!(raw.delete(&session).await, 204);
        // Whatever the stream wrote before the answer is in the socket now.
        loop {
            match get.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.ends_with("\r\n0\r\n\r\n"),
            "the GET stream's end came after the DELETE's answer: {text:?}"
        );
    }
}
