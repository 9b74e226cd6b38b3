//! Checks of a package:sse channel endpoint (see `PROTOCOL.md`): the stream,
//! the POSTs, ordering, resume, close and CORS. Each opens its own channels;
//! the messages it sends start with `ssechan check:`.

use std::time::Duration;

use http::header::{CACHE_CONTROL, ORIGIN};
use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;

use super::Ctx;
use super::Echo;
use super::probe::{Channel, Item, Miss, Msg, Posted, Stream};
use super::verdict::Verdict;

type Checked = Result<Verdict, Verdict>;

/// Messages of 4 KiB pushed after an echo that does not come, to see
/// whether a buffer was holding it: 64 KiB passes any proxy's default.
const PAD_MESSAGES: u64 = 16;
const PAD_BYTES: usize = 4096;

/// Bytes [`push`] sends.
pub const PUSHED: usize = PAD_MESSAGES as usize * PAD_BYTES;

/// Something that came only once more bytes followed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// "an echo", "the stream's headers".
    pub what: &'static str,
    /// The read that finally brought it.
    pub bytes: usize,
    /// From its POST to its arrival.
    pub after: Duration,
    /// Bytes of padding POSTed after it.
    pub pushed: usize,
}

impl Burst {
    /// The FAIL of `path.buffering`.
    pub fn verdict(&self) -> Verdict {
        Verdict::fail(
            format!(
                "events arrive in bursts of {}: {} came {:.1}s late{}",
                kib(self.bytes),
                self.what,
                self.after.as_secs_f64(),
                if self.pushed > 0 {
                    format!(", only after {} more were sent", kib(self.pushed))
                } else {
                    String::new()
                }
            ),
            "a proxy buffers the stream",
            super::path::BUFFERING_FIX,
        )
    }
}

fn kib(bytes: usize) -> String {
    if bytes < 1024 { format!("{bytes} B") } else { format!("{:.1} KiB", bytes as f64 / 1024.0) }
}

/// The text of message `n` sent by `check`.
fn text(check: &str, n: u64) -> String {
    format!("ssechan check: {check} {n}")
}

/// What an echo wait gave.
pub enum Echoed {
    /// The echo, and the burst when padding had to push it through.
    Came(Msg, Option<Burst>),
    Not(String),
}

/// Waits for the echo of `message` (POSTed at `sent`) on `s`; when it does
/// not come within `--wait` on a stream that has delivered no byte yet,
/// POSTs padding as messages `next..` to push a buffer, and waits once more.
pub async fn echo_of(
    cx: &Ctx,
    ch: &Channel,
    s: &mut Stream,
    message: &str,
    sent: Instant,
    next: u64,
) -> Echoed {
    let miss = match wait_for(s, message, cx.deadline()).await {
        Ok(m) => return Echoed::Came(m, None),
        Err(Miss::Ended(why)) => return Echoed::Not(format!("the stream ended first: {why}")),
        Err(Miss::Timeout) => {
            format!("no echo within {}", humantime::format_duration(cx.opts.wait))
        }
    };
    // Bytes got through already: nothing holds this stream back, and the
    // padding would only reach the application of a server that does not echo.
    if s.bytes > 0 || !push(cx, ch, next).await {
        return Echoed::Not(miss);
    }
    match wait_for(s, message, cx.deadline()).await {
        Ok(m) => {
            let bytes = s.reads.iter().find(|r| r.at == m.at).map_or(0, |r| r.bytes);
            let after = m.at.saturating_duration_since(sent);
            Echoed::Came(m, Some(Burst { what: "an echo", bytes, after, pushed: PUSHED }))
        }
        Err(_) => Echoed::Not(format!("{miss}, nor after {} more", kib(PUSHED))),
    }
}

/// POSTs [`PUSHED`] bytes of padding as messages `next..`: an echo server
/// sends as much down the stream, which pushes out whatever a buffer on the
/// path holds. False when a POST is refused.
pub async fn push(cx: &Ctx, ch: &Channel, next: u64) -> bool {
    let pad = "x".repeat(PAD_BYTES - 40);
    for n in next..next + PAD_MESSAGES {
        if cx.send_ok(ch, n, &format!("{} {pad}", text("padding", n))).await.is_err() {
            return false;
        }
    }
    true
}

/// The first message whose data is `message`.
async fn wait_for(s: &mut Stream, message: &str, deadline: Instant) -> Result<Msg, Miss> {
    loop {
        let m = s.next_message(deadline).await?;
        if m.data == message {
            return Ok(m);
        }
    }
}

/// Finds out once whether the server echoes each message to its sender.
pub async fn detect_echo(cx: &Ctx) -> Echo {
    let not = |seen: String| Echo { echoes: false, seen, buffered: None };
    let ch = cx.channel("echo");
    let mut s = match cx.open(&ch, None).await {
        Ok(s) => s,
        Err(v) => return not(format!("no stream to see an echo on: {}", v.seen)),
    };
    let probe = text("echo", 0);
    let sent = Instant::now();
    if let Err(v) = cx.send_ok(&ch, 0, &probe).await {
        return not(v.seen);
    }
    match echo_of(cx, &ch, &mut s, &probe, sent, 1).await {
        Echoed::Came(m, buffered) => {
            let after = ms(m.at.saturating_duration_since(sent));
            let seen = match buffered {
                Some(_) => {
                    format!("an echo came only after more bytes pushed it, {after:.0} ms late")
                }
                None => format!("echoed in {after:.1} ms"),
            };
            Echo { echoes: true, seen, buffered }
        }
        Echoed::Not(why) => not(format!("the server does not echo ({why})")),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The verdict on a stream's headers (also `raw.headers`).
pub fn judge_headers(s: &Stream) -> Verdict {
    let cc = s.headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let seen = format!(
        "{} {:?}, Content-Type: {}, Cache-Control: {}",
        s.status.as_u16(),
        s.version,
        s.header("content-type"),
        s.header("cache-control")
    );
    let lower = cc.to_ascii_lowercase();
    if lower.contains("no-cache") || lower.contains("no-store") {
        return Verdict::pass(seen);
    }
    Verdict::warn(
        seen,
        "a cache or proxy may store the stream or hand out a stale copy",
        "send `Cache-Control: no-cache`",
    )
}

pub async fn headers(cx: &Ctx) -> Checked {
    let s = cx.open(&cx.channel("stream.headers"), None).await?;
    Ok(judge_headers(&s))
}

/// The first `retry:` within `--wait`.
pub async fn first_retry(cx: &Ctx, s: &mut Stream) -> Option<u64> {
    let deadline = cx.deadline();
    loop {
        match s.next(deadline).await {
            Some((Item::Retry(ms), _)) => return Some(ms),
            None | Some((Item::End(_), _)) => return None,
            Some(_) => {}
        }
    }
}

pub async fn retry(cx: &Ctx) -> Checked {
    let mut s = cx.open(&cx.channel("stream.retry"), None).await?;
    let fix = "send `retry: 1000` when the stream starts";
    Ok(match first_retry(cx, &mut s).await {
        None => Verdict::warn(
            format!("no `retry:` within {}", humantime::format_duration(cx.opts.wait)),
            "browsers then wait their own default (3 s in Chrome, 5 s in Firefox), \
             which races package:sse's give-up 5 s after an error",
            fix,
        ),
        Some(ms) if ms >= 5000 => Verdict::fail(
            format!("retry: {ms} ms"),
            "package:sse clients give up for good 5 s after an error, before EventSource \
             reconnects: every dropped stream becomes a lost client",
            fix,
        ),
        Some(ms) if ms > 2500 => Verdict::warn(
            format!("retry: {ms} ms"),
            "close to package:sse's give-up 5 s after an error: one slow reconnect loses the client",
            fix,
        ),
        Some(ms) => Verdict::pass(format!("retry: {ms} ms")),
    })
}

/// Sends messages `0..n` of `check` one by one, each answered 200.
async fn send_all(cx: &Ctx, ch: &Channel, check: &str, ids: &[u64]) -> Result<(), Verdict> {
    for &n in ids {
        cx.send_ok(ch, n, &text(check, n)).await?;
    }
    Ok(())
}

/// Echoes up to and including `last` of `check`; a FAIL naming what came
/// when they do not all come within `--wait`.
async fn echoes_until(
    cx: &Ctx,
    s: &mut Stream,
    check: &str,
    last: u64,
    max: usize,
) -> Result<Vec<Msg>, Verdict> {
    s.messages_until(&text(check, last), max, cx.deadline()).await.map_err(|(got, miss)| {
        let how = match miss {
            Miss::Timeout => {
                format!("then nothing within {}", humantime::format_duration(cx.opts.wait))
            }
            Miss::Ended(why) => format!("then {why}"),
        };
        Verdict::broken(format!("echoes: {} {how}", numbers(&got)))
    })
}

/// "0, 1, 1, 0": the message numbers of echoes, for a verdict.
fn numbers(msgs: &[Msg]) -> String {
    if msgs.is_empty() {
        return "none".into();
    }
    let n: Vec<_> = msgs.iter().map(|m| m.data.rsplit(' ').next().unwrap_or("?")).collect();
    n.join(", ")
}

pub async fn event_ids(cx: &Ctx) -> Checked {
    let check = "stream.event-ids";
    let ch = cx.channel(check);
    let mut s = cx.open(&ch, None).await?;
    send_all(cx, &ch, check, &[0, 1, 2]).await?;
    let msgs = echoes_until(cx, &mut s, check, 2, 16).await?;
    Ok(judge_ids(&msgs.iter().map(|m| m.id.as_str()).collect::<Vec<_>>()))
}

/// Ids present and increasing (numbers), or at least changing (opaque).
pub fn judge_ids(ids: &[&str]) -> Verdict {
    let shown = ids.join(", ");
    if ids.iter().all(|i| i.is_empty()) {
        return Verdict::warn(
            format!("{} events, none with an `id:`", ids.len()),
            "a reconnecting client cannot send Last-Event-ID, so events written into a dropped \
             stream are lost",
            "put `id: N` on every event (N = 1, 2, 3… per connection)",
        );
    }
    let fix = "give each event a new `id:`, increasing (1, 2, 3… per connection)";
    let numbers: Option<Vec<u64>> = ids.iter().map(|i| i.parse().ok()).collect();
    if let Some(n) = numbers {
        if n.windows(2).all(|w| w[0] < w[1]) {
            return Verdict::pass(format!("ids {shown}"));
        }
        if n.windows(2).all(|w| w[0] <= w[1]) {
            return Verdict::warn(
                format!("ids {shown}"),
                "an id repeats: some events carry none, so a resume after them repeats events",
                fix,
            );
        }
        return Verdict::fail(
            format!("ids {shown}"),
            "ids go backwards: Last-Event-ID then names the wrong place and a resume skips or \
             repeats events",
            fix,
        );
    }
    if ids.windows(2).all(|w| w[0] != w[1]) {
        return Verdict::pass(format!("opaque ids {shown}"));
    }
    Verdict::warn(format!("ids {shown}"), "an id repeats: some events carry none", fix)
}

pub async fn heartbeat(cx: &Ctx) -> Checked {
    let mut s = cx.open(&cx.channel("stream.heartbeat"), None).await?;
    let limit = humantime::format_duration(cx.opts.heartbeat_within);
    let deadline = Instant::now() + cx.opts.heartbeat_within;
    let reason = "with no traffic a proxy's read timeout (nginx: 60 s) cuts the stream, and \
                  neither side notices a dead peer";
    let fix = "send a comment line (`: ping`) after 15 s of silence";
    loop {
        match s.next(deadline).await {
            Some((Item::Comment(c), at)) => {
                let idle = at.saturating_duration_since(s.opened).as_secs_f64();
                return Ok(Verdict::pass(format!("`:{c}` after {idle:.1}s idle")));
            }
            Some((Item::End(why), at)) => {
                let after = at.saturating_duration_since(s.opened).as_secs_f64();
                return Ok(Verdict::warn(
                    format!("no heartbeat before the stream ended after {after:.1}s ({why})"),
                    reason,
                    fix,
                ));
            }
            None => {
                return Ok(Verdict::warn(
                    format!("no comment within {limit} on an idle stream"),
                    reason,
                    fix,
                ));
            }
            Some(_) => {}
        }
    }
}

/// How a refusal check judges the answer: the expected status passes; 200
/// (package:sse's answer to everything) and other statuses warn; a server
/// error fails.
fn judge_refusal(what: &str, p: &Posted, expected: StatusCode, fix: &str) -> Verdict {
    let reason = if p.reason.is_empty() { String::new() } else { format!(" ({})", p.reason) };
    let seen = format!("{what}: {}{reason}", p.status);
    if p.status == expected {
        return Verdict::pass(seen);
    }
    if p.status.is_success() {
        return Verdict::warn(
            seen,
            "the message is dropped without a word, as package:sse does: a client cannot tell \
             a refused message from a delivered one",
            fix,
        );
    }
    if p.status.is_client_error() {
        return Verdict::warn(
            format!("{seen}, not {expected}"),
            "a refusal, but not the protocol's status: clients cannot tell why",
            fix,
        );
    }
    Verdict::fail(seen, "bad input makes the server fail", fix)
}

pub async fn post_bad_json(cx: &Ctx) -> Checked {
    let ch = cx.channel("post.bad-json");
    let _s = cx.open(&ch, None).await?;
    let p = cx.post(&ch, 0, b"ssechan check: not JSON".to_vec(), None).await?;
    let fix = "answer 400 with a one-line reason to a body that is not a JSON string";
    Ok(judge_refusal("a body that is not JSON", &p, StatusCode::BAD_REQUEST, fix))
}

pub async fn post_unknown_client(cx: &Ctx) -> Checked {
    let ch = cx.channel("post.unknown-client");
    let p = cx.send(&ch, 0, &text("post.unknown-client", 0)).await?;
    let fix = "answer 404 to a POST for a client id that has no channel";
    Ok(judge_refusal("a POST for a client id with no stream", &p, StatusCode::NOT_FOUND, fix))
}

pub async fn post_oversize(cx: &Ctx) -> Checked {
    let ch = cx.channel("post.oversize");
    let _s = cx.open(&ch, None).await?;
    let limit = cx.opts.message_limit;
    // A JSON string of n characters is n + 2 bytes: one byte over the limit.
    let body = crate::protocol::encode_message_body(&"x".repeat(limit.saturating_sub(1)));
    // A server refusing a body it did not read closes the connection, maybe
    // without `Connection: close`: keep that connection out of the pool.
    let p = cx.post_with(&cx.unpooled, &ch, 0, body, None).await?;
    let fix = "cap the body (e.g. 1 MiB) and answer 413 as soon as Content-Length passes it";
    let what = format!("a body of {} bytes (--message-limit + 1)", limit + 1);
    Ok(judge_refusal(&what, &p, StatusCode::PAYLOAD_TOO_LARGE, fix))
}

pub async fn post_far_ahead(cx: &Ctx) -> Checked {
    let check = "post.far-ahead";
    let ch = cx.channel(check);
    let _s = cx.open(&ch, None).await?;
    cx.send_ok(&ch, 0, &text(check, 0)).await?;
    let far = 1_000_001;
    let p = cx.send(&ch, far, &text(check, far)).await?;
    let fix = "bound the re-order buffer (e.g. 4096 ids ahead) and answer 429 beyond it";
    let v = judge_refusal("messageId 1000001 after 0", &p, StatusCode::TOO_MANY_REQUESTS, fix);
    if v.status == super::verdict::Status::Warn && p.status.is_success() {
        return Ok(Verdict::warn(
            v.seen,
            "the server holds it waiting for the gap: POSTs far ahead grow its memory without bound",
            fix,
        ));
    }
    Ok(v)
}

/// Sends `order` one by one, then a sentinel, and wants the echoes back
/// once each in `messageId` order. The sentinel's echo marks the end, so a
/// late duplicate is seen without waiting for nothing.
async fn in_order(cx: &Ctx, check: &str, order: &[u64]) -> Result<(Vec<Msg>, Vec<u16>), Verdict> {
    let ch = cx.channel(check);
    let mut s = cx.open(&ch, None).await?;
    let mut statuses = Vec::with_capacity(order.len());
    for &n in order {
        let p = cx.send(&ch, n, &text(check, n)).await?;
        statuses.push(p.status.as_u16());
    }
    let sentinel = order.iter().max().map_or(0, |m| m + 1);
    cx.send_ok(&ch, sentinel, &text(check, sentinel)).await?;
    let msgs = echoes_until(cx, &mut s, check, sentinel, order.len() * 2 + 2).await;
    msgs.map(|m| (m, statuses))
}

fn in_sequence(msgs: &[Msg], check: &str) -> bool {
    msgs.iter().enumerate().all(|(i, m)| m.data == text(check, i as u64))
}

pub async fn order_shuffled(cx: &Ctx) -> Checked {
    let check = "order.shuffled-posts";
    let mut order: Vec<u64> = (0..16).collect();
    fastrand::Rng::with_seed(11).shuffle(&mut order);
    let reason = "messages reach the application in arrival order, not messageId order: \
                  package:sse clients keep up to 1000 POSTs in flight, which arrive shuffled";
    let fix = "deliver by messageId: hold later ids until the gap before them fills";
    let (msgs, statuses) = match in_order(cx, check, &order).await {
        Ok(r) => r,
        Err(v) => return Ok(Verdict::fail(v.seen, reason, fix)),
    };
    if let Some(bad) = statuses.iter().find(|&&s| s != 200) {
        return Ok(Verdict::broken(format!("a POST out of order answered {bad}")));
    }
    if in_sequence(&msgs, check) {
        return Ok(Verdict::pass(format!(
            "16 messages POSTed as {} came back in order, once each",
            order.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        )));
    }
    Ok(Verdict::fail(format!("echoes: {}", numbers(&msgs)), reason, fix))
}

pub async fn order_duplicates(cx: &Ctx) -> Checked {
    let check = "order.duplicate-posts";
    let order = [0, 1, 1, 0, 2, 2];
    let reason = "a repeated POST is delivered again (package:sse does so and moves its counter \
                  back), so a client retrying a POST whose answer was lost duplicates a message";
    let fix = "drop a messageId already delivered or held, and answer it 200";
    let (msgs, statuses) = match in_order(cx, check, &order).await {
        Ok(r) => r,
        Err(v) => {
            return Ok(Verdict::fail(format!("POSTed 0,1,1,0,2,2,3: {}", v.seen), reason, fix));
        }
    };
    if !in_sequence(&msgs, check) {
        return Ok(Verdict::fail(
            format!("POSTed 0,1,1,0,2,2,3; echoes: {}", numbers(&msgs)),
            reason,
            fix,
        ));
    }
    if statuses.iter().any(|&s| s != 200) {
        return Ok(Verdict::warn(
            format!("duplicates answered {statuses:?}"),
            "a client retrying a POST whose answer was lost is told it failed",
            "answer a duplicate 200: it was delivered",
        ));
    }
    Ok(Verdict::pass("POSTed 0,1,1,0,2,2,3: echoed 0, 1, 2, 3 once each, duplicates answered 200"))
}

pub async fn resume_keep_alive(cx: &Ctx) -> Checked {
    let check = "resume.keep-alive";
    let ch = cx.channel(check);
    let mut s = cx.open(&ch, None).await?;
    cx.send_ok(&ch, 0, &text(check, 0)).await?;
    let first = echoes_until(cx, &mut s, check, 0, 4).await?;
    let last_id = first.last().map(|m| m.id.clone()).unwrap_or_default();
    drop(s);
    let reason = "without keep-alive every network blip ends the channel, and what was sent \
                  meanwhile is lost";
    let fix = "keep a connection a while after its stream ends (package:sse: \
               `SseHandler(keepAlive: …)`; ssechan serve --keep-alive 30s)";
    let p = cx.send(&ch, 1, &text(check, 1)).await?;
    if p.status == StatusCode::NOT_FOUND {
        return Ok(Verdict::fail(
            "a POST right after the stream dropped answered 404: the channel ended with its stream",
            reason,
            fix,
        ));
    }
    if p.status != StatusCode::OK {
        return Ok(Verdict::broken(format!(
            "a POST while the stream was down answered {}",
            p.status
        )));
    }
    // Last-Event-ID as a browser sends it; with replay it also recovers an
    // echo written into the dropped stream before the server noticed.
    let lei = (!last_id.is_empty()).then_some(last_id.as_str());
    let mut s = cx.open(&ch, lei).await?;
    match wait_for(&mut s, &text(check, 1), cx.deadline()).await {
        Ok(_) => Ok(Verdict::pass(
            "a message POSTed while the stream was down arrived after the reconnect",
        )),
        Err(miss) => Ok(Verdict::fail(
            format!(
                "a message POSTed while the stream was down never arrived after the reconnect ({})",
                miss_text(cx, &miss)
            ),
            reason,
            fix,
        )),
    }
}

fn miss_text(cx: &Ctx, m: &Miss) -> String {
    match m {
        Miss::Timeout => format!("nothing within {}", humantime::format_duration(cx.opts.wait)),
        Miss::Ended(why) => why.clone(),
    }
}

pub async fn resume_replay(cx: &Ctx) -> Checked {
    let check = "resume.replay";
    let ch = cx.channel(check);
    let mut s = cx.open(&ch, None).await?;
    send_all(cx, &ch, check, &[0, 1, 2]).await?;
    let msgs = echoes_until(cx, &mut s, check, 2, 16).await?;
    drop(s);
    let fix = "keep each connection's recent events and resend those after Last-Event-ID \
               (ssechan serve --replay)";
    let reason = "events written into a stream that dropped (a dead TCP connection swallows them) \
                  are lost";
    let Some(first) = msgs.first().filter(|m| !m.id.is_empty()) else {
        return Ok(Verdict::fail(
            "events carry no `id:`, so a resume cannot say where it stopped",
            reason,
            fix,
        ));
    };
    let lei = first.id.clone();
    let mut s = cx.open(&ch, Some(&lei)).await?;
    let want = [text(check, 1), text(check, 2)];
    let mut got = Vec::new();
    let deadline = cx.deadline();
    while got.len() < want.len() {
        match s.next_message(deadline).await {
            Ok(m) => got.push(m),
            Err(miss) => {
                return Ok(Verdict::fail(
                    format!(
                        "after Last-Event-ID: {lei} came {} then {}, not the 2 events after it",
                        numbers(&got),
                        miss_text(cx, &miss)
                    ),
                    reason,
                    fix,
                ));
            }
        }
    }
    if got.iter().map(|m| &m.data).eq(want.iter()) {
        return Ok(Verdict::pass(format!(
            "Last-Event-ID: {lei} brought back the 2 events after it (ids {}, {})",
            got[0].id, got[1].id
        )));
    }
    Ok(Verdict::fail(format!("after Last-Event-ID: {lei} came {}", numbers(&got)), reason, fix))
}

pub async fn resume_takeover(cx: &Ctx) -> Checked {
    let check = "resume.takeover";
    let echoes = cx.echoes_promptly().await;
    let ch = cx.channel(check);
    let mut a = cx.open(&ch, None).await?;
    if echoes {
        cx.send_ok(&ch, 0, &text(check, 0)).await?;
        echoes_until(cx, &mut a, check, 0, 4).await?;
    }
    let t = Instant::now();
    let mut b = cx.open(&ch, None).await?;
    let ended = a.until_end(cx.deadline()).await;
    let on_b = if echoes {
        cx.send_ok(&ch, 1, &text(check, 1)).await?;
        Some(wait_for(&mut b, &text(check, 1), cx.deadline()).await.is_ok())
    } else {
        None
    };
    let fix = "when a GET arrives for a client id whose stream is open, end the older stream \
               and carry on with the new one";
    let wait = humantime::format_duration(cx.opts.wait);
    Ok(match (ended, on_b) {
        (_, Some(false)) => Verdict::fail(
            "after a second GET for the client id, a message sent next never reached the new stream",
            "it went to the old stream, whose client is gone, or the server began a new connection \
             whose message counter restarted at 0 (package:sse does) and holds it forever",
            fix,
        ),
        (Some((_, at)), _) => Verdict::pass(format!(
            "a second GET ended the older stream within {:.1} ms{}",
            ms(at.saturating_duration_since(t)),
            if on_b == Some(true) { "; the new one carries the channel" } else { "" }
        )),
        (None, _) => Verdict::warn(
            format!("the older stream stayed open {wait} after a second GET for its client id"),
            "a client whose connection died without a FIN (sleep, network change) leaves a \
             stream behind that the server keeps until a write fails",
            fix,
        ),
    })
}

pub async fn close_control(cx: &Ctx) -> Checked {
    let check = "close.control";
    let ch = cx.channel(check);
    let mut s = cx.open(&ch, None).await?;
    if cx.echoes_promptly().await {
        cx.send_ok(&ch, 0, &text(check, 0)).await?;
    }
    let deadline = cx.deadline();
    let mut active = None;
    while let Some((item, _)) = s.next(deadline).await {
        match item {
            Item::Event(ev) if ev.event == crate::protocol::CONTROL_EVENT => {
                let ended = s.until_end(cx.deadline()).await.is_some();
                active = Some((ev.data, ended));
                break;
            }
            Item::End(_) => break,
            _ => {}
        }
    }
    let seen: Vec<String> = cx.controls.lock().map(|c| c.clone()).unwrap_or_default();
    if let Some(bad) = seen.iter().find(|d| *d != crate::protocol::CONTROL_CLOSE_DATA) {
        return Ok(Verdict::fail(
            format!("a control event said {bad:?}"),
            "package:sse clients throw on any control data but `close`",
            "send only `event: control` + `data: close`, then end the stream",
        ));
    }
    Ok(match active {
        Some((_, true)) => Verdict::pass("`event: control` + `data: close`, then the stream ended"),
        Some((_, false)) => Verdict::fail(
            format!(
                "the stream went on {} after `data: close`",
                humantime::format_duration(cx.opts.wait)
            ),
            "package:sse clients stop listening at the close: whatever follows is lost",
            "end the stream right after the control close",
        ),
        None if !seen.is_empty() => {
            Verdict::pass(format!("{} control close(s) seen during the run", seen.len()))
        }
        None => Verdict::skip(
            "no control event during the run",
            "only the application closes a channel (e.g. the process of `ssechan serve -- COMMAND` exiting)",
        ),
    })
}

/// The CORS pair on an answer to a request from `origin`; `Err` is the
/// verdict when it is wrong.
fn judge_cors(what: &str, h: &HeaderMap, origin: &str) -> Result<(), Verdict> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let fix = "echo the request's Origin in Access-Control-Allow-Origin, with \
               Access-Control-Allow-Credentials: true";
    match get("access-control-allow-origin") {
        None => {
            return Err(Verdict::warn(
                format!("{what}: no Access-Control-Allow-Origin for {origin}"),
                "only pages of the same origin can use the channel (package:sse allows every \
                 origin; the Dart web dev server serves its app from another port)",
                fix,
            ));
        }
        Some("*") => {
            return Err(Verdict::fail(
                format!("{what}: Access-Control-Allow-Origin: *"),
                "browsers refuse `*` on requests with credentials (EventSource withCredentials, \
                 fetch with credentials: include)",
                fix,
            ));
        }
        Some(o) if o != origin => {
            return Err(Verdict::fail(
                format!("{what}: Access-Control-Allow-Origin: {o} for Origin: {origin}"),
                "the browser refuses an answer for another origin",
                fix,
            ));
        }
        Some(_) => {}
    }
    if get("access-control-allow-credentials") != Some("true") {
        return Err(Verdict::fail(
            format!("{what}: no Access-Control-Allow-Credentials: true"),
            "requests with credentials (cookies) are refused by the browser",
            fix,
        ));
    }
    Ok(())
}

/// A 403 to a foreign origin: an allow-list, not a fault.
fn refused_origin(what: &str, status: StatusCode, origin: &str) -> Option<Verdict> {
    (status == StatusCode::FORBIDDEN).then(|| {
        Verdict::skip(
            format!("{what} from Origin: {origin} answered 403"),
            "the server keeps an origin allow-list; pass --origin with an allowed origin",
        )
    })
}

pub async fn cors_credentials(cx: &Ctx) -> Checked {
    let check = "cors.credentials";
    let origin = cx.opts.origin.as_str();
    let ch = cx.channel(check);
    let s = cx.get(&cx.http, ch.stream_url(), None, Some(origin)).await?;
    if let Some(v) = refused_origin("GET", s.status, origin) {
        return Ok(v);
    }
    let s = s.expect_event_stream().await?;
    judge_cors("GET", &s.headers, origin)?;
    let body = crate::protocol::encode_message_body(&text(check, 0));
    let p = cx.post(&ch, 0, body, Some(origin)).await?;
    if let Some(v) = refused_origin("POST", p.status, origin) {
        return Ok(v);
    }
    judge_cors("POST", &p.headers, origin)?;
    Ok(Verdict::pass(format!(
        "GET and POST from Origin: {origin} got Access-Control-Allow-Origin: {origin} with credentials"
    )))
}

pub async fn cors_preflight(cx: &Ctx) -> Checked {
    let origin = cx.opts.origin.as_str();
    let ch = cx.channel("cors.preflight");
    let req = cx
        .http
        .request(Method::OPTIONS, ch.post_url(0))
        .header(ORIGIN, origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type");
    let resp = match tokio::time::timeout(cx.opts.timeout, req.send()).await {
        Err(_) => return Ok(Verdict::broken("OPTIONS unanswered within --timeout")),
        Ok(Err(e)) => {
            return Ok(Verdict::broken(format!("OPTIONS failed: {}", super::probe::describe(&e))));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status();
    if let Some(v) = refused_origin("OPTIONS", status, origin) {
        return Ok(v);
    }
    let fix = "answer OPTIONS with 204, Access-Control-Allow-Methods: GET, POST, the requested \
               Access-Control-Allow-Headers and the CORS pair";
    if !status.is_success() {
        return Ok(Verdict::warn(
            format!("OPTIONS answered {status}"),
            "browsers preflight a POST with another Content-Type or extra headers and then refuse \
             it (package:sse's own client sends text/plain, which needs none)",
            fix,
        ));
    }
    let h = resp.headers();
    judge_cors("OPTIONS", h, origin)?;
    let list = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let methods = list("access-control-allow-methods");
    let allowed = list("access-control-allow-headers");
    if !methods.split(',').any(|m| m.trim() == "post") {
        return Ok(Verdict::fail(
            format!("OPTIONS {status}: Access-Control-Allow-Methods: {methods:?}"),
            "the browser then refuses the POST",
            fix,
        ));
    }
    if !allowed.split(',').any(|m| m.trim() == "content-type") {
        return Ok(Verdict::fail(
            format!(
                "OPTIONS {status}: Access-Control-Allow-Headers: {allowed:?} lacks content-type"
            ),
            "the browser then refuses a POST with that header",
            fix,
        ));
    }
    Ok(Verdict::pass(format!(
        "OPTIONS {}: allows {methods} and content-type for {origin}",
        status.as_u16()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::verdict::Status;

    #[test]
    fn ids() {
        assert_eq!(judge_ids(&["1", "2", "3"]).status, Status::Pass);
        assert_eq!(judge_ids(&["", "", ""]).status, Status::Warn);
        assert_eq!(judge_ids(&["1", "1", "2"]).status, Status::Warn);
        assert_eq!(judge_ids(&["3", "2"]).status, Status::Fail);
        assert_eq!(judge_ids(&["a", "b"]).status, Status::Pass);
        assert_eq!(judge_ids(&["a", "a"]).status, Status::Warn);
    }

    #[test]
    fn refusals() {
        let p = |s: u16| Posted {
            status: StatusCode::from_u16(s).unwrap(),
            headers: HeaderMap::new(),
            reason: String::new(),
        };
        let judge = |s| judge_refusal("x", &p(s), StatusCode::BAD_REQUEST, "fix").status;
        assert_eq!(judge(400), Status::Pass);
        assert_eq!(judge(200), Status::Warn);
        assert_eq!(judge(422), Status::Warn);
        assert_eq!(judge(500), Status::Fail);
    }

    #[test]
    fn cors() {
        let mut h = HeaderMap::new();
        let o = "https://a.example";
        assert_eq!(judge_cors("GET", &h, o).unwrap_err().status, Status::Warn);
        h.insert("access-control-allow-origin", "*".parse().unwrap());
        assert_eq!(judge_cors("GET", &h, o).unwrap_err().status, Status::Fail);
        h.insert("access-control-allow-origin", o.parse().unwrap());
        assert_eq!(judge_cors("GET", &h, o).unwrap_err().status, Status::Fail);
        h.insert("access-control-allow-credentials", "true".parse().unwrap());
        assert!(judge_cors("GET", &h, o).is_ok());
    }

    #[test]
    fn burst_text() {
        let b = Burst {
            what: "an echo",
            bytes: 4096,
            after: Duration::from_millis(2100),
            pushed: 65536,
        };
        let v = b.verdict();
        assert_eq!(v.status, Status::Fail);
        assert!(v.seen.starts_with("events arrive in bursts of 4.0 KiB"), "{}", v.seen);
        assert!(v.fix.unwrap().contains("proxy_buffering off"));
    }
}
