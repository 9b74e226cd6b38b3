//! Checks of an MCP Streamable HTTP endpoint (`--mcp`): the transport's
//! rules that a client depends on, each check in a session of its own.
//! The era is found first (2026-07-28's Backward Compatibility: a
//! per-request `server/discover`, refused by a server of sessions); the
//! session checks need the session era and are skipped in the other.

use std::collections::HashSet;
use std::time::Duration;

use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::Ctx;
use super::probe::{self, Item, Stream};
use super::verdict::Verdict;
use crate::mcp::client::{self as pure, ClientInfo, Probe, SESSION_REVISIONS};
use crate::mcp::message::Message;

type Checked = Result<Verdict, Verdict>;

/// Bytes of a JSON answer read at most.
const MAX_JSON: usize = 4 << 20;
/// What a POST takes, as the specification says a client lists it.
const BOTH: &str = "application/json, text/event-stream";
/// The reference server's long tool, by its names old and new.
const LONG_TOOLS: [&str; 2] = ["trigger-long-running-operation", "longRunningOperation"];
/// The long call: steps over seconds (a progress event every 0.5 s).
const STEPS: u64 = 10;
const SECONDS: u64 = 5;

/// The server's era, found once (by `reach`, or the first check).
#[derive(Debug, Clone)]
pub struct Era {
    /// `initialize` opens sessions (a server of the per-request era may
    /// serve the session era on the same URL too).
    pub sessions: bool,
    /// What the probe saw, for people.
    pub seen: String,
}

/// What the MCP checks of a run share.
#[derive(Default)]
pub struct Known {
    era: OnceCell<Result<Era, String>>,
}

fn client_info() -> ClientInfo {
    ClientInfo { name: "ssechan-check".into(), version: env!("CARGO_PKG_VERSION").into() }
}

/// A session opened by `initialize`.
struct Session {
    id: Option<String>,
    version: String,
}

/// One POST of `body`; any HTTP answer is a [`Stream`] (read it as JSON
/// with [`json_answer`]).
async fn post(
    cx: &Ctx,
    session: Option<&Session>,
    body: &Value,
    accept: &str,
    extra: &[(http::HeaderName, &str)],
) -> Result<Stream, Verdict> {
    let mut req = cx
        .http
        .post(cx.opts.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, accept)
        .body(body.to_string());
    req = with_session(req, session);
    for (name, value) in extra {
        req = req.header(name.clone(), *value);
    }
    probe::open(req, cx.opts.timeout, &cx.controls)
        .await
        .map_err(|e| Verdict::broken(format!("POST {} failed: {e}", method_of(body))))
}

fn with_session(
    mut req: reqwest::RequestBuilder,
    session: Option<&Session>,
) -> reqwest::RequestBuilder {
    if let Some(s) = session {
        if let Some(id) = &s.id {
            req = req.header("mcp-session-id", id.as_str());
        }
        req = req.header("mcp-protocol-version", s.version.as_str());
    }
    req
}

/// `GET` on the session, resuming after `last_event_id` if given.
async fn get(cx: &Ctx, session: &Session, last_event_id: Option<&str>) -> Result<Stream, Verdict> {
    let mut req = cx.http.get(cx.opts.url.clone()).header(ACCEPT, "text/event-stream");
    req = with_session(req, Some(session));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    probe::open(req, cx.opts.timeout, &cx.controls)
        .await
        .map_err(|e| Verdict::broken(format!("GET failed: {e}")))
}

fn method_of(body: &Value) -> &str {
    body.get("method").and_then(Value::as_str).unwrap_or("a response")
}

fn request(id: &str, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

fn is_response_to(msg: &Value, id: &str) -> bool {
    msg.get("id") == Some(&json!(id)) && (msg.get("result").is_some() || msg.get("error").is_some())
}

/// A status and the first line of its body, for `seen`.
async fn said(s: Stream) -> String {
    let status = s.status;
    let reason = s.reason().await;
    if reason.is_empty() { status.to_string() } else { format!("{status}: {reason}") }
}

fn is_json(s: &Stream) -> bool {
    s.headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// A JSON answer's messages (an object or a batch).
async fn json_answer(s: Stream, cx: &Ctx) -> Result<Vec<Value>, Verdict> {
    let body = s.body(MAX_JSON, cx.opts.timeout).await.map_err(Verdict::broken)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Verdict::broken(format!("the JSON answer does not parse: {e}")))?;
    Ok(match value {
        Value::Array(v) => v,
        v => vec![v],
    })
}

/// A message event of an answer stream: the stream's last event id when
/// it came (an event without `id:` repeats the one before; a priming
/// event, with no data, dispatches nothing but sets it) and its message
/// (`None`: not JSON).
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    message: Option<Value>,
}

/// Events of `s` until the response to `id` (included), one `--timeout`
/// at most between two; `Err` says what came instead.
async fn until_response(
    cx: &Ctx,
    s: &mut Stream,
    id: &str,
    got: &mut Vec<Seen>,
) -> Result<(), String> {
    loop {
        // `--timeout`, not `--wait`: a session's process may be starting.
        match s.next(Instant::now() + cx.opts.timeout).await {
            None => {
                return Err(format!(
                    "nothing for {} after {} events",
                    humantime::format_duration(cx.opts.timeout),
                    got.len()
                ));
            }
            Some((Item::End(why), _)) => return Err(format!("{why} after {} events", got.len())),
            Some((Item::Event(ev), _)) => {
                let message = serde_json::from_str::<Value>(&ev.data).ok();
                let done = message.as_ref().is_some_and(|m| is_response_to(m, id));
                got.push(Seen { id: ev.last_event_id.clone(), message });
                if done {
                    return Ok(());
                }
            }
            Some(_) => {}
        }
    }
}

/// The era, found once: a per-request `server/discover`.
pub async fn era_of(cx: &Ctx) -> Result<Era, String> {
    cx.mcp.era.get_or_init(|| discover(cx)).await.clone()
}

async fn discover(cx: &Ctx) -> Result<Era, String> {
    let msg = pure::discover_request("ssechan-check-discover", &client_info());
    let mut req = cx
        .http
        .post(cx.opts.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, BOTH)
        .header("mcp-protocol-version", pure::PER_REQUEST_REVISION)
        .body(msg.to_line());
    for (name, value) in pure::mirrored_headers(&msg) {
        req = req.header(name, value);
    }
    let s = probe::open(req, cx.opts.timeout, &cx.controls).await?;
    let status = s.status.as_u16();
    let content_type = s.header("content-type");
    let answer = if is_json(&s) {
        json_answer(s, cx).await.ok().and_then(|v| v.into_iter().next())
    } else if s.is_event_stream() {
        let mut s = s;
        let mut got = Vec::new();
        let _ = until_response(cx, &mut s, "ssechan-check-discover", &mut got).await;
        got.into_iter().rev().find_map(|e| e.message)
    } else {
        None
    };
    let answer = answer.and_then(|v| Message::from_value(v).ok());
    // A 404 with a JSON-RPC answer is the server's word on the method.
    if status == 404 && answer.is_none() {
        return Err(format!("POST answered 404 (Content-Type {content_type}): wrong path?"));
    }
    Ok(match pure::judge_probe(status, "ssechan-check-discover", answer.as_ref()) {
        Probe::PerRequest { .. } => {
            let sessions = serves_sessions(cx).await;
            let also = if sessions { ", and initialize opens sessions too" } else { "" };
            Era {
                sessions,
                seen: format!(
                    "server/discover answered: the per-request era ({}){also}",
                    pure::PER_REQUEST_REVISION
                ),
            }
        }
        Probe::Initialize { supported } => Era {
            sessions: true,
            seen: format!(
                "server/discover refused with the revisions it serves ({}): the session era",
                supported.join(", ")
            ),
        },
        Probe::Legacy { seen } => Era {
            sessions: true,
            seen: format!("server/discover answered {seen}: the session era"),
        },
    })
}

/// Whether `initialize` opens a session (then ended again).
async fn serves_sessions(cx: &Ctx) -> bool {
    let init = pure::initialize_request("ssechan-check-init", SESSION_REVISIONS[0], &client_info());
    let Ok(s) = post(cx, None, &init.value, BOTH, &[]).await else { return false };
    match initialized(cx, s).await {
        Ok((session, _)) => {
            end(cx, &session).await;
            true
        }
        Err(_) => false,
    }
}

/// A new session: `initialize` (the newest revision), then
/// `notifications/initialized` (its status returned). Skipped in the
/// per-request era, which has no sessions.
async fn open_session(cx: &Ctx) -> Result<(Session, StatusCode), Verdict> {
    let era = era_of(cx).await.map_err(Verdict::broken)?;
    if !era.sessions {
        return Err(Verdict::skip(era.seen, "a check of sessions; the per-request era has none"));
    }
    let init = pure::initialize_request("ssechan-check-init", SESSION_REVISIONS[0], &client_info());
    let s = post(cx, None, &init.value, BOTH, &[]).await?;
    let (session, _) = initialized(cx, s).await?;
    let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    let s = post(cx, Some(&session), &note, BOTH, &[]).await?;
    let status = s.status;
    let _ = s.reason().await;
    Ok((session, status))
}

/// The session an `initialize` answer opened, and the revision chosen.
async fn initialized(cx: &Ctx, s: Stream) -> Result<(Session, Value), Verdict> {
    if s.status != StatusCode::OK {
        return Err(Verdict::broken(format!("initialize answered {}", said(s).await)));
    }
    let id =
        s.headers.get("mcp-session-id").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let messages = answer_messages(cx, s, "ssechan-check-init").await?;
    let Some(response) = messages.into_iter().find(|m| is_response_to(m, "ssechan-check-init"))
    else {
        return Err(Verdict::broken("initialize was answered without its response"));
    };
    let version = response
        .pointer("/result/protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Verdict::broken(format!("initialize answered {response} (no protocolVersion)"))
        })?
        .to_owned();
    Ok((Session { id, version }, response))
}

/// The messages of an answer, JSON or stream, up to the response to `id`.
async fn answer_messages(cx: &Ctx, s: Stream, id: &str) -> Result<Vec<Value>, Verdict> {
    if is_json(&s) {
        return json_answer(s, cx).await;
    }
    if !s.is_event_stream() {
        return Err(Verdict::broken(format!(
            "the answer's Content-Type is {}",
            s.header("content-type")
        )));
    }
    let mut s = s;
    let mut got = Vec::new();
    until_response(cx, &mut s, id, &mut got)
        .await
        .map_err(|e| Verdict::broken(format!("the answer stream: {e}")))?;
    Ok(got.into_iter().filter_map(|e| e.message).collect())
}

/// Ends a check's session, whatever the check found.
async fn end(cx: &Ctx, session: &Session) {
    let req = with_session(cx.http.delete(cx.opts.url.clone()), Some(session));
    let _ = tokio::time::timeout(cx.opts.timeout, req.send()).await;
}

// ----- the checks

pub async fn era(cx: &Ctx) -> Checked {
    let era = era_of(cx).await.map_err(Verdict::broken)?;
    Ok(Verdict::pass(era.seen))
}

pub async fn initialize(cx: &Ctx) -> Checked {
    let era = era_of(cx).await.map_err(Verdict::broken)?;
    if !era.sessions {
        return Ok(Verdict::skip(era.seen, "the per-request era has no initialize"));
    }
    let init = pure::initialize_request("ssechan-check-init", SESSION_REVISIONS[0], &client_info());
    let s = post(cx, None, &init.value, BOTH, &[]).await?;
    let (session, response) = initialized(cx, s).await?;
    end(cx, &session).await;
    let name = response.pointer("/result/serverInfo/name").and_then(Value::as_str).unwrap_or("?");
    let seen = format!("revision {}, server {name:?}", session.version);
    if !crate::mcp::version::session_accepts(&session.version) {
        return Ok(Verdict::fail(
            seen,
            "the server chose a revision it may not: clients speak those of the session era",
            "answer initialize with the revision offered or another the server supports",
        ));
    }
    Ok(match &session.id {
        None => Verdict::warn(
            format!("{seen}, no Mcp-Session-Id"),
            "without a session id nothing ties requests together: no resume, no DELETE",
            "answer initialize with `Mcp-Session-Id`",
        ),
        Some(id) if id.is_empty() || !id.bytes().all(|b| (0x21..=0x7e).contains(&b)) => {
            Verdict::fail(
                format!("{seen}, Mcp-Session-Id {id:?}"),
                "the session id MUST be visible ASCII (0x21 to 0x7E)",
                "make session ids of visible ASCII, e.g. a UUID or hex",
            )
        }
        Some(id) => Verdict::pass(format!("{seen}, Mcp-Session-Id of {} characters", id.len())),
    })
}

pub async fn accept(cx: &Ctx) -> Checked {
    let (session, _) = open_session(cx).await?;
    let list = request("ssechan-check-accept", "tools/list", json!({}));
    let s = post(cx, Some(&session), &list, "text/plain", &[]).await?;
    let status = s.status;
    let seen = format!("Accept: text/plain answered {}", said(s).await);
    end(cx, &session).await;
    Ok(if status == StatusCode::NOT_ACCEPTABLE {
        Verdict::pass(seen)
    } else if status.is_success() {
        Verdict::warn(
            seen,
            "the client said it reads neither JSON nor an event stream, and was answered anyway",
            "answer 406 Not Acceptable when Accept lists neither",
        )
    } else {
        Verdict::warn(
            seen,
            "406 says what is wrong; another status leaves the client guessing",
            "answer 406 Not Acceptable",
        )
    })
}

pub async fn notification(cx: &Ctx) -> Checked {
    let (session, status) = open_session(cx).await?;
    end(cx, &session).await;
    let seen = format!("notifications/initialized answered {status}");
    Ok(if status == StatusCode::ACCEPTED {
        Verdict::pass(seen)
    } else {
        Verdict::fail(
            seen,
            "the specification says 202 Accepted: clients wait for no answer to a notification",
            "answer a POST of notifications or responses only with 202 and no body",
        )
    })
}

pub async fn answers(cx: &Ctx) -> Checked {
    let (session, _) = open_session(cx).await?;
    let result = answers_in(cx, &session).await;
    end(cx, &session).await;
    result
}

async fn answers_in(cx: &Ctx, session: &Session) -> Checked {
    let list = request("ssechan-check-both", "tools/list", json!({}));
    let s = post(cx, Some(session), &list, BOTH, &[]).await?;
    if s.status != StatusCode::OK {
        return Ok(Verdict::fail(
            format!("tools/list answered {}", said(s).await),
            "a request of an open session must be answered",
            "answer 200 with the response",
        ));
    }
    let kind = if is_json(&s) { "JSON" } else { "an event stream" };
    let messages = answer_messages(cx, s, "ssechan-check-both").await?;
    if !messages.iter().any(|m| is_response_to(m, "ssechan-check-both")) {
        return Ok(Verdict::fail(
            format!("tools/list answered as {kind} without its response"),
            "the client waits for ever",
            "put the response in the answer",
        ));
    }
    let list = request("ssechan-check-json", "tools/list", json!({}));
    let s = post(cx, Some(session), &list, "application/json", &[]).await?;
    let only_json = match s.status {
        StatusCode::NOT_ACCEPTABLE => {
            let _ = s.reason().await;
            "406 (the client must list both)".to_string()
        }
        StatusCode::OK if is_json(&s) => {
            let messages = json_answer(s, cx).await?;
            if !messages.iter().any(|m| is_response_to(m, "ssechan-check-json")) {
                return Ok(Verdict::fail(
                    "a JSON-only request answered as JSON without its response",
                    "the client waits for ever",
                    "put the response in the JSON answer",
                ));
            }
            "JSON".to_string()
        }
        StatusCode::OK => {
            return Ok(Verdict::fail(
                format!(
                    "a JSON-only request answered with Content-Type {}",
                    s.header("content-type")
                ),
                "the client said it reads JSON only",
                "answer a client whose Accept lists only application/json as JSON (or 406)",
            ));
        }
        _ => {
            return Ok(Verdict::fail(
                format!("a JSON-only request answered {}", said(s).await),
                "neither an answer nor 406",
                "answer as JSON, or 406",
            ));
        }
    };
    Ok(Verdict::pass(format!("answered as {kind}; taking only JSON: {only_json}")))
}

pub async fn event_ids(cx: &Ctx) -> Checked {
    let (session, _) = open_session(cx).await?;
    let mut streams = Vec::new();
    for n in 0..2 {
        let id = format!("ssechan-check-ids-{n}");
        let s = post(cx, Some(&session), &request(&id, "tools/list", json!({})), BOTH, &[]).await?;
        if is_json(&s) || !s.is_event_stream() {
            let seen =
                format!("tools/list answered with Content-Type {}", s.header("content-type"));
            let _ = s.reason().await;
            end(cx, &session).await;
            return Ok(Verdict::skip(seen, "answers as JSON have no events to resume"));
        }
        let mut s = s;
        let mut got = Vec::new();
        let read = until_response(cx, &mut s, &id, &mut got).await;
        read.map_err(|e| Verdict::broken(format!("the answer stream: {e}")))?;
        streams.push(got);
    }
    end(cx, &session).await;
    // An event without `id:` keeps the one before.
    let missing: usize = streams
        .iter()
        .map(|s| {
            let mut before = "";
            s.iter()
                .filter(|e| {
                    let same = e.id.is_empty() || e.id == before;
                    before = &e.id;
                    same
                })
                .count()
        })
        .sum();
    let events: usize = streams.iter().map(Vec::len).sum();
    if missing > 0 {
        return Ok(Verdict::fail(
            format!("{missing} of {events} events without an id of their own"),
            "a cut stream cannot be resumed after an event without an id: its messages are lost",
            "give every event an `id:` (and start each stream with a priming event, SEP-1699)",
        ));
    }
    let mut all = HashSet::new();
    let repeated = streams.iter().flatten().filter(|e| !all.insert(e.id.as_str())).count();
    if repeated > 0 {
        return Ok(Verdict::fail(
            format!("{repeated} ids seen twice in two streams of one session"),
            "a Last-Event-ID must name one event of one stream, or a resume replays the wrong one",
            "make event ids unique across the session's streams (e.g. the stream's number in the id)",
        ));
    }
    Ok(Verdict::pass(format!("{events} events in 2 streams, each with an id of its own")))
}

/// The long tool the server lists, if any.
async fn long_tool(cx: &Ctx, session: &Session) -> Result<Option<String>, Verdict> {
    let s = post(
        cx,
        Some(session),
        &request("ssechan-check-tools", "tools/list", json!({})),
        BOTH,
        &[],
    )
    .await?;
    let messages = answer_messages(cx, s, "ssechan-check-tools").await?;
    let names: Vec<String> = messages
        .iter()
        .filter_map(|m| m.pointer("/result/tools").and_then(Value::as_array))
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    Ok(LONG_TOOLS.iter().find(|t| names.iter().any(|n| n == *t)).map(|t| t.to_string()))
}

fn long_call(id: &str, tool: &str, token: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": tool,
        "arguments": { "duration": SECONDS, "steps": STEPS },
        "_meta": { "progressToken": token },
    }})
}

/// Progress values of `token` among `events`.
fn progress(events: &[Seen], token: &str) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.message.as_ref())
        .filter(|m| m.get("method").and_then(Value::as_str) == Some("notifications/progress"))
        .filter(|m| m.pointer("/params/progressToken") == Some(&json!(token)))
        .filter_map(|m| m.pointer("/params/progress").and_then(Value::as_f64))
        .map(|p| p as u64)
        .collect()
}

/// A long call's stream, read until `progress_events` progress events of
/// `token` came, then cut; what it delivered, once the server's `retry`
/// has passed.
async fn cut_after(
    cx: &Ctx,
    mut s: Stream,
    token: &str,
    progress_events: usize,
) -> Result<Vec<Seen>, Verdict> {
    let mut got = Vec::new();
    while progress(&got, token).len() < progress_events {
        match s.next(cx.deadline()).await {
            Some((Item::Event(ev), _)) => {
                let message = serde_json::from_str::<Value>(&ev.data).ok();
                got.push(Seen { id: ev.last_event_id.clone(), message });
            }
            Some((Item::End(why), _)) => {
                return Err(Verdict::broken(format!(
                    "the call's stream: {why} before {progress_events} progress events"
                )));
            }
            Some(_) => {}
            None => {
                return Err(Verdict::broken(format!(
                    "{} progress events of the call within {} each",
                    progress(&got, token).len(),
                    humantime::format_duration(cx.opts.wait)
                )));
            }
        }
    }
    // As a client does: the server's `retry` before resuming (within
    // `--wait`), which also gives it time to notice the cut.
    let retry = s.retry.map_or(Duration::ZERO, Duration::from_millis).min(cx.opts.wait);
    drop(s);
    tokio::time::sleep(retry).await;
    Ok(got)
}

/// Starts a long call of `tool` as request `id`; `Err(skip)` when it is
/// answered as JSON (nothing to cut).
async fn start_long(
    cx: &Ctx,
    session: &Session,
    id: &str,
    tool: &str,
    token: &str,
) -> Result<Stream, Verdict> {
    let s = post(cx, Some(session), &long_call(id, tool, token), BOTH, &[]).await?;
    if s.status != StatusCode::OK {
        return Err(Verdict::broken(format!("tools/call {tool} answered {}", said(s).await)));
    }
    if !s.is_event_stream() {
        let seen =
            format!("tools/call {tool} answered with Content-Type {}", s.header("content-type"));
        let _ = s.reason().await;
        return Err(Verdict::skip(seen, "an answer as JSON has no stream to cut"));
    }
    Ok(s)
}

/// The session and its long tool, or a SKIP.
async fn with_long_tool(cx: &Ctx) -> Result<(Session, String), Verdict> {
    let (session, _) = open_session(cx).await?;
    match long_tool(cx, &session).await? {
        Some(t) => Ok((session, t)),
        None => {
            end(cx, &session).await;
            Err(Verdict::skip(
                format!("no tool named {}", LONG_TOOLS.join(" or ")),
                "needs a tool that reports progress for a few seconds (the reference server's)",
            ))
        }
    }
}

pub async fn resume(cx: &Ctx) -> Checked {
    let (session, tool) = with_long_tool(cx).await?;
    let result = resume_in(cx, &session, &tool).await;
    end(cx, &session).await;
    result
}

async fn resume_in(cx: &Ctx, session: &Session, tool: &str) -> Checked {
    let s = start_long(cx, session, "ssechan-check-long", tool, "ssechan-check-a").await?;
    let mut got = cut_after(cx, s, "ssechan-check-a", 2).await?;
    let before = got.len();
    let Some(last) = got.iter().rev().find(|e| !e.id.is_empty()).map(|e| e.id.clone()) else {
        return Ok(Verdict::fail(
            "the call's events carry no id",
            "nothing to resume from: a cut loses the rest of the call",
            "give every event an `id:`",
        ));
    };
    let s = get(cx, session, Some(&last)).await?;
    if s.status != StatusCode::OK || !s.is_event_stream() {
        // Resuming is a MAY: a server that says no is not wrong, only
        // costly for its clients.
        return Ok(Verdict::warn(
            format!("GET with Last-Event-ID: {last} answered {}", said(s).await),
            "a cut call's progress and result are lost: the client must call again",
            "keep each stream's events and replay those after Last-Event-ID on GET",
        ));
    }
    let mut s = s;
    let read = until_response(cx, &mut s, "ssechan-check-long", &mut got).await;
    let seen = progress(&got, "ssechan-check-a");
    let after = got.len() - before;
    if let Err(e) = read {
        return Ok(Verdict::fail(
            format!("progress {seen:?} and no result: the resumed stream gave {e}"),
            "the call's result never reaches the client",
            "replay the cut stream's events after Last-Event-ID and go on with it",
        ));
    }
    let results = got
        .iter()
        .filter_map(|e| e.message.as_ref())
        .filter(|m| is_response_to(m, "ssechan-check-long"))
        .count();
    let want: Vec<u64> = (1..=STEPS).collect();
    let summary = format!(
        "cut after progress {:?}; resumed with Last-Event-ID: {last}: {after} events, progress {seen:?}, {results} result",
        &seen[..2.min(seen.len())]
    );
    Ok(if seen == want && results == 1 {
        Verdict::pass(summary)
    } else {
        Verdict::fail(
            summary,
            "a resume must bring every message once, in order: here some were lost or repeated",
            format!(
                "replay exactly the events after Last-Event-ID (want progress {want:?}, then the result)"
            ),
        )
    })
}

pub async fn resume_scoped(cx: &Ctx) -> Checked {
    let (session, tool) = with_long_tool(cx).await?;
    let result = scoped_in(cx, &session, &tool).await;
    end(cx, &session).await;
    result
}

async fn scoped_in(cx: &Ctx, session: &Session, tool: &str) -> Checked {
    let a = start_long(cx, session, "ssechan-check-a", tool, "ssechan-check-a").await?;
    let b = start_long(cx, session, "ssechan-check-b", tool, "ssechan-check-b").await?;
    let got = cut_after(cx, a, "ssechan-check-a", 1).await?;
    let Some(last) = got.iter().rev().find(|e| !e.id.is_empty()).map(|e| e.id.clone()) else {
        return Ok(Verdict::skip(
            "the call's events carry no id",
            "nothing to resume from (see mcp.event-ids)",
        ));
    };
    // B goes on while A is away; read to its end so it is not cut too.
    let b_read = async {
        let mut b = b;
        let mut got = Vec::new();
        let _ = until_response(cx, &mut b, "ssechan-check-b", &mut got).await;
    };
    let a_read = async {
        let s = get(cx, session, Some(&last)).await?;
        if s.status != StatusCode::OK || !s.is_event_stream() {
            return Err(Verdict::skip(
                format!("GET with Last-Event-ID answered {}", said(s).await),
                "no resume (see mcp.resume)",
            ));
        }
        let mut s = s;
        let mut resumed = Vec::new();
        let read = until_response(cx, &mut s, "ssechan-check-a", &mut resumed).await;
        Ok((resumed, read))
    };
    let ((), a) = tokio::join!(b_read, a_read);
    let (resumed, read) = a?;
    let foreign = resumed
        .iter()
        .filter_map(|e| e.message.as_ref())
        .filter(|m| {
            m.pointer("/params/progressToken") == Some(&json!("ssechan-check-b"))
                || m.get("id") == Some(&json!("ssechan-check-b"))
        })
        .count();
    let seen = format!(
        "after Last-Event-ID: {last} (call A's): {} events, {foreign} of call B's",
        resumed.len()
    );
    if foreign > 0 {
        return Ok(Verdict::fail(
            seen,
            "a resume replays another request's messages: the client sees answers it did not wait for here, or twice",
            "replay only the stream the Last-Event-ID names",
        ));
    }
    if let Err(e) = read {
        return Ok(Verdict::fail(
            format!("{seen}; then {e}"),
            "call A's result never came on its resumed stream",
            "replay the cut stream's events after Last-Event-ID and go on with it",
        ));
    }
    Ok(Verdict::pass(format!("{seen}, then A's result")))
}

pub async fn get_stream(cx: &Ctx) -> Checked {
    let (session, _) = open_session(cx).await?;
    let s = get(cx, &session, None).await?;
    let status = s.status;
    let stream = s.is_event_stream();
    let seen = if status == StatusCode::OK {
        format!("GET answered 200 with Content-Type {}", s.header("content-type"))
    } else {
        format!("GET answered {}", said(s).await)
    };
    end(cx, &session).await;
    Ok(match status {
        StatusCode::OK if stream => Verdict::pass(seen),
        StatusCode::METHOD_NOT_ALLOWED => {
            Verdict::pass(format!("{seen} (no stream for messages tied to no request)"))
        }
        _ => Verdict::fail(
            seen,
            "a client learns from 405 that there is no standalone stream; anything else it retries or fails on",
            "open a `text/event-stream` for the session, or answer 405",
        ),
    })
}

/// The path's read timeout, on the session's `GET` stream: the one an MCP
/// client holds open longest with nothing on it.
pub async fn idle_timeout(cx: &Ctx) -> Checked {
    let probe = cx.opts.idle_probe;
    if probe.is_zero() {
        return Ok(Verdict::skip("--idle-probe 0", "the idle probe is off"));
    }
    let (session, _) = open_session(cx).await?;
    let mut s = get(cx, &session, None).await?;
    let verdict = if s.status == StatusCode::METHOD_NOT_ALLOWED {
        Verdict::skip("GET answered 405", "the server has no stream to hold open")
    } else if s.status != StatusCode::OK || !s.is_event_stream() {
        Verdict::skip(
            format!("GET answered {}", s.status),
            "no event stream to hold open (see mcp.get-stream)",
        )
    } else {
        super::path::judge_idle(&mut s, probe).await
    };
    end(cx, &session).await;
    Ok(verdict)
}

// ----- the path's checks on MCP streams: a session's GET stream and a
// POST answered as an event stream cross the same proxies as a channel's.

/// `path.buffering` on an MCP stream: a long call's progress events,
/// written every half second, must come as they are written.
pub async fn buffering(cx: &Ctx) -> Checked {
    let (session, tool) = with_long_tool(cx).await?;
    let result = buffering_in(cx, &session, &tool).await;
    end(cx, &session).await;
    result
}

async fn buffering_in(cx: &Ctx, session: &Session, tool: &str) -> Checked {
    let (id, token) = ("ssechan-check-pace", "ssechan-check-pace");
    let mut s = start_long(cx, session, id, tool, token).await?;
    let posted = s.requested;
    let mut got = Vec::new();
    let mut arrivals = Vec::new();
    // A buffered call's events all come at its end: wait that long too.
    let each = cx.opts.timeout + Duration::from_secs(SECONDS);
    loop {
        match s.next(Instant::now() + each).await {
            Some((Item::Event(ev), at)) => {
                let message = serde_json::from_str::<Value>(&ev.data).ok();
                let done = message.as_ref().is_some_and(|m| is_response_to(m, id));
                got.push(Seen { id: ev.last_event_id.clone(), message });
                if progress(&got, token).len() > arrivals.len() {
                    arrivals.push(at.saturating_duration_since(posted));
                }
                if done {
                    break;
                }
            }
            Some((Item::End(why), _)) => {
                return Err(Verdict::broken(format!("the call's stream: {why} before its result")));
            }
            Some(_) => {}
            None => {
                return Err(Verdict::broken(format!(
                    "the call's stream: nothing for {} after {} events",
                    humantime::format_duration(each),
                    got.len()
                )));
            }
        }
    }
    Ok(judge_pace(&arrivals))
}

/// Judges a long call's progress events (one every `SECONDS / STEPS`) by
/// when they came after the POST: all within a moment of each other, they
/// were held on the way and let go together.
pub fn judge_pace(arrivals: &[Duration]) -> Verdict {
    let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
        return Verdict::skip("no progress events", "the call reported no progress to time");
    };
    if arrivals.len() < 3 {
        return Verdict::skip(format!("{} progress events", arrivals.len()), "too few to tell");
    }
    let spread = last.saturating_sub(*first);
    let seen = format!(
        "{} progress events of a {SECONDS} s call came over {:.1} s, the first {:.1} s after the POST",
        arrivals.len(),
        spread.as_secs_f64(),
        first.as_secs_f64()
    );
    if spread < Duration::from_secs(SECONDS) / 2 {
        return Verdict::fail(
            seen,
            "events written over seconds arrived together: a proxy buffers the stream",
            super::path::BUFFERING_FIX,
        );
    }
    Verdict::pass(seen)
}

/// `path.headers` on the MCP streams there are: a POST answered as an
/// event stream, and the session's GET stream.
pub async fn headers(cx: &Ctx) -> Checked {
    let (session, _) = open_session(cx).await?;
    let result = headers_in(cx, &session).await;
    end(cx, &session).await;
    result
}

async fn headers_in(cx: &Ctx, session: &Session) -> Checked {
    const COMPRESSED: &str = "gzip, deflate, br";
    let list = request("ssechan-check-headers", "tools/list", json!({}));
    let extra = [(ACCEPT_ENCODING, COMPRESSED)];
    let answer = post(cx, Some(session), &list, BOTH, &extra).await?;
    let get = with_session(cx.http.get(cx.opts.url.clone()), Some(session))
        .header(ACCEPT, "text/event-stream")
        .header(ACCEPT_ENCODING, COMPRESSED);
    let get = probe::open(get, cx.opts.timeout, &cx.controls)
        .await
        .map_err(|e| Verdict::broken(format!("GET failed: {e}")))?;
    let mut looked = Vec::new();
    let mut passed = None;
    for (what, s) in [("a POST's answer stream", &answer), ("the GET stream", &get)] {
        if s.status != StatusCode::OK || !s.is_event_stream() {
            continue;
        }
        let v = super::path::judge_mangling(s);
        if v.status != super::verdict::Status::Pass {
            return Ok(Verdict { seen: format!("{what}: {}", v.seen), ..v });
        }
        looked.push(what);
        passed.get_or_insert(v.seen);
    }
    let Some(seen) = passed else {
        return Ok(Verdict::skip(
            format!(
                "tools/list answered with Content-Type {}, GET with {}",
                answer.header("content-type"),
                get.status
            ),
            "no event stream to look at (answers as JSON, no GET stream)",
        ));
    };
    Ok(Verdict::pass(format!("{}: {seen}", looked.join(" and "))))
}

/// `path.h2` for an MCP endpoint: its era's probe (no session) over h2,
/// ALPN's choice on https, prior knowledge on http.
pub async fn h2(cx: &Ctx) -> Checked {
    let tls = super::path::tls(cx);
    let client = if tls { &cx.http } else { &cx.h2 };
    let msg = pure::discover_request("ssechan-check-h2", &client_info());
    let req = client
        .post(cx.opts.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, BOTH)
        .body(msg.to_line());
    // A server that does not speak h2c may just wait for more bytes.
    let found = match tokio::time::timeout(cx.opts.wait, req.send()).await {
        Err(_) => Err(format!("no answer within {}", humantime::format_duration(cx.opts.wait))),
        Ok(Err(e)) => Err(crate::text::escape_controls(&e.to_string()).into_owned()),
        Ok(Ok(r)) if r.version() != http::Version::HTTP_2 => {
            Err(format!("ALPN chose {:?}", r.version()))
        }
        Ok(Ok(r)) if r.status().is_server_error() => Err(format!("h2 answered {}", r.status())),
        Ok(Ok(_)) => Ok(()),
    };
    Ok(super::path::h2_verdict(found, tls))
}

pub async fn delete(cx: &Ctx) -> Checked {
    let (session, _) = open_session(cx).await?;
    let req = with_session(cx.http.request(Method::DELETE, cx.opts.url.clone()), Some(&session));
    let s = probe::open(req, cx.opts.timeout, &cx.controls)
        .await
        .map_err(|e| Verdict::broken(format!("DELETE failed: {e}")))?;
    let deleted = s.status;
    let _ = s.reason().await;
    if deleted == StatusCode::METHOD_NOT_ALLOWED {
        return Ok(Verdict::skip(
            "DELETE answered 405",
            "the server does not let clients end sessions",
        ));
    }
    if !deleted.is_success() {
        return Ok(Verdict::fail(
            format!("DELETE answered {deleted}"),
            "the session is not ended: its process or memory stays until it times out",
            "end the session on DELETE (or answer 405)",
        ));
    }
    let list = request("ssechan-check-deleted", "tools/list", json!({}));
    let s = post(cx, Some(&session), &list, BOTH, &[]).await?;
    let status = s.status;
    let seen = format!("DELETE answered {deleted}; a request then answered {}", said(s).await);
    Ok(if status == StatusCode::NOT_FOUND {
        Verdict::pass(seen)
    } else {
        Verdict::fail(
            seen,
            "the specification says 404 for an ended session: it is a client's cue to initialize again; other statuses leave it stuck",
            "answer 404 Not Found to a request with an unknown or ended Mcp-Session-Id",
        )
    })
}

pub async fn version_header(cx: &Ctx) -> Checked {
    let (session, _) = open_session(cx).await?;
    let list = request("ssechan-check-version", "tools/list", json!({}));
    let bad = Session { id: session.id.clone(), version: "1999-01-01".into() };
    let s = post(cx, Some(&bad), &list, BOTH, &[]).await?;
    let status = s.status;
    let seen = format!("MCP-Protocol-Version: 1999-01-01 answered {}", said(s).await);
    end(cx, &session).await;
    Ok(if status == StatusCode::BAD_REQUEST {
        Verdict::pass(seen)
    } else {
        Verdict::fail(
            seen,
            "the specification says 400: a request in a revision the server does not speak may be misread",
            "check MCP-Protocol-Version on every request and answer 400 to one not supported",
        )
    })
}

pub async fn origin(cx: &Ctx) -> Checked {
    let era = era_of(cx).await.map_err(Verdict::broken)?;
    let init = if !era.sessions {
        pure::per_request(
            &pure::discover_request("ssechan-check-origin", &client_info()),
            &client_info(),
        )
        .value
    } else {
        pure::initialize_request("ssechan-check-origin", SESSION_REVISIONS[0], &client_info()).value
    };
    let version: &str =
        if !era.sessions { pure::PER_REQUEST_REVISION } else { SESSION_REVISIONS[0] };
    let foreign = cx.opts.origin.as_str();
    let port = cx.opts.url.port_or_known_default().unwrap_or(80);
    let evil_host = format!("rebind.ssechan.invalid:{port}");
    let evil_origin = format!("http://{evil_host}");
    let mut statuses = Vec::new();
    for (what, headers) in [
        (format!("Origin: {foreign}"), vec![(ORIGIN, foreign)]),
        (
            format!("Host and Origin {evil_origin} (DNS rebinding)"),
            vec![(HOST, evil_host.as_str()), (ORIGIN, evil_origin.as_str())],
        ),
    ] {
        let mut h = headers;
        h.push((http::HeaderName::from_static("mcp-protocol-version"), version));
        let s = post(cx, None, &init, BOTH, &h).await?;
        let status = s.status;
        let session = s
            .headers
            .get("mcp-session-id")
            .and_then(|v| HeaderValue::to_str(v).ok())
            .map(str::to_owned);
        let _ = s.reason().await;
        if let Some(id) = session {
            end(cx, &Session { id: Some(id), version: version.into() }).await;
        }
        statuses.push((what, status));
    }
    let seen = statuses.iter().map(|(w, s)| format!("{w}: {s}")).collect::<Vec<_>>().join("; ");
    let served = statuses.iter().filter(|(_, s)| s.is_success()).count();
    Ok(if served == 0 {
        Verdict::pass(seen)
    } else {
        Verdict::fail(
            seen,
            "any web page the user visits can drive this server (the specification: servers MUST validate Origin, 403 when invalid)",
            "answer 403 to a request whose Origin (or Host) is not the server's own",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::verdict::Status;

    #[test]
    fn progress_held_until_the_end_fails_and_spread_progress_passes() {
        let at = |ms: &[u64]| ms.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
        let paced: Vec<u64> = (1..=10).map(|n| n * 500).collect();
        assert_eq!(judge_pace(&at(&paced)).status, Status::Pass);
        let burst: Vec<u64> = (0..10).map(|n| 5000 + n).collect();
        let v = judge_pace(&at(&burst));
        assert_eq!(v.status, Status::Fail, "{v:?}");
        assert!(v.seen.contains("came over 0.0 s, the first 5.0 s"), "{}", v.seen);
        assert_eq!(judge_pace(&at(&[500, 1000])).status, Status::Skip);
        assert_eq!(judge_pace(&[]).status, Status::Skip);
    }
}
