//! HTTP as the checks need it: requests shaped like a browser's or a
//! package:sse client's, and event streams read with the arrival time and
//! size of every read, so a check sees what the path did and not only what
//! the server meant.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, ORIGIN, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use reqwest::Url;
use tokio::time::Instant;

use super::Options;
use super::verdict::Verdict;
use crate::client::early;
use crate::protocol::parser::{EventStreamParser, Parsed};
use crate::protocol::{CONTROL_EVENT, Event, decode_message_body, query};

/// The checker's `User-Agent`.
const USER_AGENT_VALUE: &str = concat!("ssechan-check/", env!("CARGO_PKG_VERSION"));

/// Reads kept per stream for the timing checks; later ones only count.
const MAX_READS: usize = 4096;
/// Longest event line a check accepts; larger ones break the stream.
const MAX_EVENT: usize = 4 << 20;
/// Control events remembered per run (a server could send them forever).
const MAX_CONTROLS: usize = 64;

/// Which HTTP versions a client may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// What a browser gets: HTTP/1.1 on http, ALPN's choice on https.
    Browser,
    /// HTTP/1.1 only, one connection per stream.
    Http1,
    /// HTTP/2 with prior knowledge (h2c on http, h2-only ALPN on https).
    H2,
    /// As `Browser`, with a new connection per request: for requests after
    /// which a server may close the connection without saying so.
    Unpooled,
}

/// A client for the checks: `-H`, `--cacert`, `-k` and `--timeout` (to
/// connect) applied. No overall request timeout: streams stay open; each
/// wait is bounded by the check instead.
pub fn client(opts: &Options, flavour: Flavour) -> reqwest::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .default_headers(opts.headers.clone())
        // `-H` headers (tokens) must not follow a redirect to another
        // origin, which reqwest would allow for any but a few it knows.
        .redirect(reqwest::redirect::Policy::custom(|a| {
            let same = a.previous().first().is_some_and(|p| p.origin() == a.url().origin());
            if same && a.previous().len() < 10 { a.follow() } else { a.stop() }
        }))
        .referer(false)
        .connect_timeout(opts.timeout)
        .user_agent(USER_AGENT_VALUE)
        .danger_accept_invalid_certs(opts.insecure);
    for cert in &opts.ca_certs {
        b = b.add_root_certificate(cert.clone());
    }
    b = match flavour {
        Flavour::Browser => b,
        Flavour::Http1 => b.http1_only(),
        Flavour::H2 => b.http2_prior_knowledge(),
        Flavour::Unpooled => b.pool_max_idle_per_host(0),
    };
    b.build()
}

/// A transport error in a few words, with its innermost cause ("cannot
/// connect: Connection refused (os error 111)"): the client's wording.
pub fn describe(e: &reqwest::Error) -> String {
    crate::client::describe(e)
}

/// One read from a stream: when it arrived and what it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub at: Instant,
    pub bytes: usize,
    /// Events (message or other types) this read completed.
    pub events: u32,
}

/// What a stream produced next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    Comment(String),
    /// A valid `retry:` field (milliseconds).
    Retry(u64),
    /// The stream is over (the reason); repeated on every later call.
    End(String),
}

/// A message event of a channel, its data decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The `id:` in force ("" when the server sends none).
    pub id: String,
    pub data: String,
    pub at: Instant,
}

/// Why no message came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    Timeout,
    Ended(String),
}

/// One response, read as an event stream.
pub struct Stream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub version: Version,
    /// When the request was sent.
    pub requested: Instant,
    /// When the response headers arrived.
    pub opened: Instant,
    resp: reqwest::Response,
    parser: EventStreamParser,
    /// The last `retry:` seen.
    pub retry: Option<u64>,
    pub reads: Vec<Read>,
    pub bytes: u64,
    ended: Option<String>,
    /// Parsed, not yet taken.
    pending: VecDeque<(Item, Instant)>,
    /// Every `control` event's data, shared by all streams of a run.
    controls: Arc<Mutex<Vec<String>>>,
}

impl Stream {
    pub fn new(
        resp: reqwest::Response,
        requested: Instant,
        controls: Arc<Mutex<Vec<String>>>,
    ) -> Self {
        Stream {
            requested,
            status: resp.status(),
            headers: resp.headers().clone(),
            version: resp.version(),
            opened: Instant::now(),
            resp,
            parser: EventStreamParser::with_limit(MAX_EVENT),
            retry: None,
            reads: Vec::new(),
            bytes: 0,
            ended: None,
            pending: VecDeque::new(),
            controls,
        }
    }

    /// A 200 `text/event-stream`; else a FAIL naming what came instead.
    pub async fn expect_event_stream(self) -> Result<Stream, Verdict> {
        if self.status != StatusCode::OK {
            let status = self.status;
            let reason = self.reason().await;
            let sep = if reason.is_empty() { "" } else { ": " };
            return Err(Verdict::broken(format!("GET answered {status}{sep}{reason}")));
        }
        if !self.is_event_stream() {
            return Err(Verdict::fail(
                format!("Content-Type is {}", self.header(CONTENT_TYPE.as_str())),
                "EventSource refuses any other type and does not reconnect",
                "answer `Content-Type: text/event-stream`",
            ));
        }
        Ok(self)
    }

    pub fn is_event_stream(&self) -> bool {
        crate::reader::is_event_stream(self.headers.get(CONTENT_TYPE).map(|v| v.as_bytes()))
    }

    /// A header's value for display, `none` when absent.
    pub fn header(&self, name: &str) -> String {
        match self.headers.get(name).map(|v| v.to_str()) {
            None => "none".into(),
            Some(Ok(v)) => format!("{v:?}"),
            Some(Err(_)) => "(not text)".into(),
        }
    }

    /// The whole body, at most `max` bytes, within `within`.
    pub async fn body(mut self, max: usize, within: Duration) -> Result<Vec<u8>, String> {
        let read = async {
            let mut out = Vec::new();
            while let Some(chunk) = self.resp.chunk().await.map_err(|e| describe(&e))? {
                if out.len() + chunk.len() > max {
                    return Err(format!("the body is over {max} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(out)
        };
        tokio::time::timeout(within, read)
            .await
            .map_err(|_| format!("the body took over {}", humantime::format_duration(within)))?
    }

    /// The first line of the body (bounded), for an error answer.
    pub async fn reason(self) -> String {
        let line = crate::client::first_line(self.resp);
        tokio::time::timeout(Duration::from_secs(2), line).await.unwrap_or_default()
    }

    /// The next item and when the read that completed it arrived; `None`
    /// once `deadline` passes first.
    pub async fn next(&mut self, deadline: Instant) -> Option<(Item, Instant)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if let Some(why) = &self.ended {
                let at = self.reads.last().map_or(self.opened, |r| r.at);
                return Some((Item::End(why.clone()), at));
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await.ok()?;
            let at = Instant::now();
            match chunk {
                Ok(Some(bytes)) => {
                    self.bytes += bytes.len() as u64;
                    self.parser.feed(&bytes);
                    let events = self.parse(at);
                    if self.reads.len() < MAX_READS {
                        self.reads.push(Read { at, bytes: bytes.len(), events });
                    }
                }
                Ok(None) => self.ended = Some("the stream ended".into()),
                Err(e) => self.ended = Some(describe(&e)),
            }
        }
    }

    /// Moves everything the parser can give into `pending`; returns the
    /// number of events.
    fn parse(&mut self, at: Instant) -> u32 {
        let mut events = 0;
        loop {
            match self.parser.next_item() {
                Ok(Some(Parsed::Retry(ms))) => {
                    self.retry = Some(ms);
                    self.pending.push_back((Item::Retry(ms), at));
                }
                Ok(Some(Parsed::Comment(c))) => self.pending.push_back((Item::Comment(c), at)),
                Ok(Some(Parsed::Event(ev))) => {
                    events += 1;
                    if ev.event == CONTROL_EVENT
                        && let Ok(mut c) = self.controls.lock()
                        && c.len() < MAX_CONTROLS
                    {
                        c.push(ev.data.clone());
                    }
                    self.pending.push_back((Item::Event(ev), at));
                }
                Ok(None) => return events,
                Err(e) => {
                    self.ended = Some(format!("broken event stream: {e}"));
                    return events;
                }
            }
        }
    }

    /// The next message event (other events and comments pass by).
    pub async fn next_message(&mut self, deadline: Instant) -> Result<Msg, Miss> {
        loop {
            match self.next(deadline).await {
                None => return Err(Miss::Timeout),
                Some((Item::End(why), _)) => return Err(Miss::Ended(why)),
                Some((Item::Event(ev), at)) if ev.event == "message" => {
                    let data = decode_message_body(ev.data.as_bytes()).unwrap_or(ev.data);
                    return Ok(Msg { id: ev.last_event_id, data, at });
                }
                Some(_) => {}
            }
        }
    }

    /// Messages until one whose data is `last` (included), at most `max`.
    pub async fn messages_until(
        &mut self,
        last: &str,
        max: usize,
        deadline: Instant,
    ) -> Result<Vec<Msg>, (Vec<Msg>, Miss)> {
        let mut got = Vec::new();
        while got.len() < max {
            match self.next_message(deadline).await {
                Ok(m) => {
                    let done = m.data == last;
                    got.push(m);
                    if done {
                        return Ok(got);
                    }
                }
                Err(miss) => return Err((got, miss)),
            }
        }
        Err((got, Miss::Timeout))
    }

    /// Waits for the end of the stream; the time it ended, or `None` when
    /// `deadline` came first.
    pub async fn until_end(&mut self, deadline: Instant) -> Option<(String, Instant)> {
        loop {
            match self.next(deadline).await {
                None => return None,
                Some((Item::End(why), _)) => return Some((why, Instant::now())),
                Some(_) => {}
            }
        }
    }
}

/// A test channel of one check: its own client id, so checks never share
/// state on the server.
#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    base: Url,
}

impl Channel {
    pub fn new(base: &Url, check: &str) -> Self {
        let short = uuid::Uuid::new_v4().simple().to_string();
        Channel { id: format!("ssechan-check-{check}-{}", &short[..12]), base: base.clone() }
    }

    fn url(&self, message_id: Option<u64>) -> Url {
        crate::client::with_query(&self.base, &query::channel_query(&self.id, message_id))
    }

    pub fn stream_url(&self) -> Url {
        self.url(None)
    }

    pub fn post_url(&self, message_id: u64) -> Url {
        self.url(Some(message_id))
    }
}

/// The answer to a POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub reason: String,
}

/// A GET as EventSource sends it, with `Last-Event-ID` and `Origin` when
/// given.
pub fn stream_request(
    client: &reqwest::Client,
    url: Url,
    last_event_id: Option<&str>,
    origin: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut req =
        client.get(url).header(ACCEPT, "text/event-stream").header(CACHE_CONTROL, "no-cache");
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    if let Some(o) = origin {
        req = req.header(ORIGIN, o);
    }
    req
}

/// Sends a stream request, waiting `within` for the response headers. Any
/// HTTP answer is a `Stream`; only transport errors and silence fail.
pub async fn open(
    req: reqwest::RequestBuilder,
    within: Duration,
    controls: &Arc<Mutex<Vec<String>>>,
) -> Result<Stream, String> {
    let requested = Instant::now();
    match tokio::time::timeout(within, req.send()).await {
        Err(_) => Err(format!("no answer within {}", humantime::format_duration(within))),
        Ok(Err(e)) => Err(describe(&e)),
        Ok(Ok(resp)) => Ok(Stream::new(resp, requested, controls.clone())),
    }
}

/// POSTs `body` as message `message_id`, as the package:sse browser client
/// does (`text/plain`).
pub async fn post(
    client: &reqwest::Client,
    opts: &Options,
    ch: &Channel,
    message_id: u64,
    body: Vec<u8>,
    origin: Option<&str>,
) -> Result<Posted, String> {
    let url = ch.post_url(message_id);
    let mut headers = opts.headers.clone();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain;charset=UTF-8"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        headers.insert(ORIGIN, o);
    }
    let body = bytes::Bytes::from(body);
    let req = client.post(url.clone()).headers(headers.clone()).body(body.clone());
    let answer = async {
        let resp = match req.send().await {
            Ok(resp) => resp,
            // The server answered and closed while the body was still
            // being written (a 413 from the declared length): read that
            // answer, as a browser or curl would.
            Err(e) if early::closed_while_sending(&e) && url.scheme() == "http" => {
                let a = early::post_once(&url, &headers, body, opts.timeout).await;
                let a = a.map_err(|why| format!("{} (asked again: {why})", describe(&e)))?;
                return Ok(Posted { status: a.status, headers: a.headers, reason: a.reason });
            }
            Err(e) => return Err(describe(&e)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let reason = crate::client::first_line(resp).await;
        Ok(Posted { status, headers, reason })
    };
    match tokio::time::timeout(opts.timeout, answer).await {
        Err(_) => {
            Err(format!("POST unanswered within {}", humantime::format_duration(opts.timeout)))
        }
        Ok(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_urls_keep_the_query() {
        let base = Url::parse("http://h/sse?token=x").unwrap();
        let ch = Channel { id: "c 1".into(), base };
        assert_eq!(ch.stream_url().as_str(), "http://h/sse?token=x&sseClientId=c+1");
        assert_eq!(ch.post_url(7).as_str(), "http://h/sse?token=x&sseClientId=c+1&messageId=7");
        let fresh = Channel::new(&Url::parse("http://h/sse").unwrap(), "post.bad-json");
        assert!(fresh.id.starts_with("ssechan-check-post.bad-json-"), "{}", fresh.id);
    }
}
