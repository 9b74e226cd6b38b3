//! The channel client: event-stream reader, POST sender, reconnect policy.
//!
//! [`ChannelClient::start`] spawns two tasks: the stream task (`stream.rs`)
//! keeps one GET open, reconnecting with `Last-Event-ID` per the WHATWG
//! model, and reports every state change as a [`ClientEvent`]; the sender
//! task (`sender.rs`) numbers messages from 0 and POSTs them, pipelined and
//! retried. The caller holds a cheap, cloneable [`ChannelClient`] handle and
//! the receiving end of the (bounded) event channel.

pub mod config;
pub mod driver;
pub(crate) mod early;
pub mod mcp;
mod refusals;
mod sender;
mod stream;
pub(crate) use stream::with_query;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

pub use crate::reader::RetryPolicy;
use crate::text::escape_controls;
pub use config::{
    ClientConfig, Mode, SUGGESTED_IDLE_TIMEOUT, SendHook, client_id, load_ca_certs, parse_header,
    parse_headers, parse_url, read_ca_file,
};
pub use refusals::{refusals_by_status, refusals_sentence, refused};

/// The client's `User-Agent`.
const USER_AGENT: &str = concat!("ssechan/", env!("CARGO_PKG_VERSION"));

/// Events the caller may fall behind on before the stream stops reading.
const EVENT_BUFFER: usize = 1024;

/// Why a client could not be built or a message not be queued.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("bad URL {0}")]
    BadUrl(String),
    #[error("bad header {0}")]
    BadHeader(String),
    #[error("bad client id: {0}")]
    BadClientId(String),
    #[error("bad --cacert {0}")]
    BadCaCert(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("a plain SSE reader (--raw) sends no messages")]
    RawMode,
    #[error("message of {len} bytes is over the client's limit of {max}")]
    MessageTooLarge { len: usize, max: usize },
    #[error("the client has stopped")]
    Stopped,
}

/// Where the stream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Opening the first stream.
    Connecting,
    /// A stream is open: events arrive and POSTs go out.
    Open,
    /// Between streams, waiting or retrying.
    Reconnecting,
    /// For good: closed by either side, failed, or gave up.
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Open => "open",
            State::Reconnecting => "reconnecting",
            State::Closed => "closed",
        }
    }
}

/// Everything that happens to a client, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Opening a stream; `attempt` counts from 1 since the last open stream.
    Connecting { attempt: u32 },
    /// The first stream is open.
    Open,
    /// A later stream is open, sent with this `Last-Event-ID` (if any).
    Resumed { last_event_id: Option<String> },
    /// A message (channel mode: the decoded JSON string).
    Message(String),
    /// An event of a plain SSE stream (raw mode).
    Event(crate::protocol::Event),
    /// An open stream ended; a reconnect follows.
    Disconnected { reason: String },
    /// Opening a stream failed; a retry or [`ClientEvent::GaveUp`] follows.
    AttemptFailed { attempt: u32, reason: String },
    /// The next attempt starts after `delay`.
    Reconnecting { attempt: u32, delay: Duration },
    /// A POST of the message was answered with a status other than 2xx:
    /// `retried` (503, 429…, a 404 around a reconnect) or final (a
    /// [`ClientEvent::SendFailed`] follows). Retries succeed quietly, so
    /// this is how a server that refuses healthy traffic shows; the counts
    /// are in [`Status::refusals`].
    Refused { message_id: u64, status: u16, reason: String, retried: bool },
    /// The server refused a message for good (e.g. 413), or retries ran out.
    SendFailed { message_id: u64, reason: String },
    // Terminal events: nothing follows.
    /// `event: control` + `data: close`.
    ClosedByServer,
    /// HTTP 204: the server says "stop reconnecting" (WHATWG).
    NoContent,
    /// Not an event stream (status or content type), or a broken one: no retry.
    Failed { reason: String },
    /// Too many failed attempts in a row.
    GaveUp { attempts: u32, reason: String },
    /// [`ChannelClient::close`] was called.
    Closed,
    /// A comment line of the stream (a heartbeat, say), without its `:`.
    Comment(String),
    /// Advice for the person at the terminal, given once (e.g. a channel
    /// client reading a plain SSE stream: try `--raw`).
    Hint(String),
}

impl ClientEvent {
    /// Whether this is the last event.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ClientEvent::ClosedByServer
                | ClientEvent::NoContent
                | ClientEvent::Failed { .. }
                | ClientEvent::GaveUp { .. }
                | ClientEvent::Closed
        )
    }
}

/// The answer to a raw POST ([`ChannelClient::post_raw`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostOutcome {
    pub message_id: u64,
    pub status: u16,
    /// The first line of the response body (bounded), e.g. the 400 reason.
    pub reason: String,
}

/// How telling the server about a close went ([`ChannelClient::close`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseOutcome {
    /// The server closed the connection.
    Closed,
    /// The server does not know the close extension (this status).
    Unsupported(u16),
    /// The DELETE failed (a status or a network error).
    Failed(String),
    /// Raw mode: there is nothing to close but the stream.
    NotSent,
}

/// A snapshot for `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub url: String,
    pub client_id: Option<String>,
    pub state: State,
    /// Messages accepted by `send`.
    pub sent: u64,
    /// Messages the server answered 200.
    pub acked: u64,
    /// Messages refused for good.
    pub failed: u64,
    /// Messages (or raw events) received.
    pub received: u64,
    pub last_event_id: String,
    /// Streams re-opened after the first.
    pub reconnects: u64,
    /// POSTs answered, whatever the status: retries and `post_raw` too.
    pub posts: u64,
    /// Those answered with a status other than 2xx, by status, whether
    /// retried or final: a retry that then succeeds hides nothing.
    pub refusals: BTreeMap<u16, u64>,
}

/// One item for the sender task.
enum Outgoing {
    Message { body: Vec<u8>, _permit: tokio::sync::OwnedSemaphorePermit },
    Raw { body: Vec<u8>, reply: oneshot::Sender<Result<PostOutcome, String>> },
}

/// The answers to POSTs, counted.
#[derive(Default, Clone)]
struct Answers {
    posts: u64,
    refusals: BTreeMap<u16, u64>,
}

/// State shared by the handle and both tasks.
struct Shared {
    config: ClientConfig,
    http: reqwest::Client,
    state: watch::Sender<State>,
    /// Set once the client is done for good: both tasks stop.
    stopped: watch::Sender<bool>,
    /// Bumped by `drop_stream`; the stream task ends its current stream.
    drop_requests: watch::Sender<u64>,
    /// acked + failed, watched by `wait_settled`.
    settled: watch::Sender<u64>,
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    received: AtomicU64,
    reconnects: AtomicU64,
    /// POSTs answered, and those refused by status ([`Status`]): one lock,
    /// so a snapshot never shows a refusal without its answer.
    answers: Mutex<Answers>,
    last_event_id: Mutex<String>,
    /// Bytes of messages queued or in flight.
    queued_bytes: Arc<Semaphore>,
    /// The plain-SSE hint was given.
    hinted: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn stop(&self) {
        self.stopped.send_replace(true);
        self.state.send_replace(State::Closed);
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Resolves once the client has stopped.
    async fn until_stopped(&self) {
        let mut rx = self.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Counts a POST's answer; a status other than 2xx is a refusal.
    fn answered(&self, status: u16) {
        let mut a = self.answers();
        a.posts = a.posts.saturating_add(1);
        if !(200..300).contains(&status) {
            let n = a.refusals.entry(status).or_default();
            *n = n.saturating_add(1);
        }
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, acked: bool) {
        let counter = if acked { &self.acked } else { &self.failed };
        counter.fetch_add(1, Ordering::SeqCst);
        self.settled.send_modify(|n| *n += 1);
    }
}

/// A handle on a running client; clones share it.
#[derive(Clone)]
pub struct ChannelClient {
    shared: Arc<Shared>,
    outgoing: Option<mpsc::Sender<Outgoing>>,
}

impl ChannelClient {
    /// Starts connecting at once (inside a tokio runtime). Events, starting
    /// with [`ClientEvent::Connecting`], arrive on the returned receiver,
    /// which ends after a terminal event.
    pub fn start(config: ClientConfig) -> Result<(Self, mpsc::Receiver<ClientEvent>), ClientError> {
        let http = http_client(&config)?;
        let max_bytes = max_permits(&config);
        let shared = Arc::new(Shared {
            http,
            state: watch::Sender::new(State::Connecting),
            stopped: watch::Sender::new(false),
            drop_requests: watch::Sender::new(0),
            settled: watch::Sender::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            answers: Mutex::default(),
            last_event_id: Mutex::new(String::new()),
            queued_bytes: Arc::new(Semaphore::new(max_bytes)),
            hinted: std::sync::atomic::AtomicBool::new(false),
            config,
        });
        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        let outgoing = match shared.config.mode {
            Mode::Channel { .. } => {
                let (tx, rx) = mpsc::channel(shared.config.max_queued.max(1));
                tokio::spawn(sender::run(shared.clone(), rx, events_tx.clone()));
                Some(tx)
            }
            Mode::Raw => None,
        };
        tokio::spawn(stream::run(shared.clone(), events_tx));
        Ok((Self { shared, outgoing }, events_rx))
    }

    /// The client id (`None` in raw mode).
    pub fn client_id(&self) -> Option<&str> {
        self.shared.config.client_id()
    }

    /// Queues a message; waits while the queue is full (back-pressure).
    pub async fn send(&self, message: &str) -> Result<(), ClientError> {
        let outgoing = self.outgoing.as_ref().ok_or(ClientError::RawMode)?;
        let body = crate::protocol::encode_message_body(message);
        let max = max_permits(&self.shared.config);
        if body.len() > max {
            return Err(ClientError::MessageTooLarge { len: body.len(), max });
        }
        // `max` fits in u32 (see `max_permits`), so the cast is exact.
        let weight = body.len().max(1) as u32;
        let permit = tokio::select! {
            p = self.shared.queued_bytes.clone().acquire_many_owned(weight) => {
                p.map_err(|_| ClientError::Stopped)?
            }
            _ = self.shared.until_stopped() => return Err(ClientError::Stopped),
        };
        self.shared.sent.fetch_add(1, Ordering::SeqCst);
        if outgoing.send(Outgoing::Message { body, _permit: permit }).await.is_err() {
            self.shared.sent.fetch_sub(1, Ordering::SeqCst);
            return Err(ClientError::Stopped);
        }
        Ok(())
    }

    /// POSTs `body` verbatim as the next message, once the messages queued
    /// before it are settled, and returns the server's answer. Not retried:
    /// it probes a server's error handling. Only a 2xx uses up the id, so a
    /// refused body leaves no gap in the server's message order.
    pub async fn post_raw(&self, body: Vec<u8>) -> Result<PostOutcome, ClientError> {
        let outgoing = self.outgoing.as_ref().ok_or(ClientError::RawMode)?;
        let (reply, rx) = oneshot::channel();
        outgoing.send(Outgoing::Raw { body, reply }).await.map_err(|_| ClientError::Stopped)?;
        match rx.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(reason)) => Ok(PostOutcome { message_id: 0, status: 0, reason }),
            Err(_) => Err(ClientError::Stopped),
        }
    }

    /// Ends the current stream on purpose (to exercise resume); the client
    /// reconnects at once with `Last-Event-ID`. No effect while not open.
    pub fn drop_stream(&self) {
        self.shared.drop_requests.send_modify(|n| *n += 1);
    }

    /// Stops for good without a word to the server: the stream ends (a
    /// server with keep-alive waits for a resume until it expires) and
    /// unsent messages are abandoned. A [`ClientEvent::Closed`] follows.
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Closes the channel for good, telling the server: `DELETE
    /// P?sseClientId=ID` (ssechan's extension: the server closes the
    /// connection at once, reason "closed by client"), then [`stop`](Self::stop).
    /// A server that does not know the extension (package:sse answers 404,
    /// 405 or 501) only sees the stream end. Raw mode just stops.
    pub async fn close(&self) -> CloseOutcome {
        let outcome = match &self.shared.config.mode {
            Mode::Raw => CloseOutcome::NotSent,
            Mode::Channel { client_id } => {
                let url = stream::with_query(
                    &self.shared.config.url,
                    &crate::protocol::query::channel_query(client_id, None),
                );
                let timeout = self.shared.config.timeout;
                let sent = request(
                    &self.shared.http,
                    &self.shared.config,
                    http::Method::DELETE,
                    url,
                    http::HeaderMap::new(),
                    None,
                    Some(timeout),
                );
                match sent.await {
                    Ok(r) if r.status().is_success() => CloseOutcome::Closed,
                    Ok(r) if matches!(r.status().as_u16(), 404 | 405 | 501) => {
                        CloseOutcome::Unsupported(r.status().as_u16())
                    }
                    Ok(r) => CloseOutcome::Failed(format!("server answered {}", r.status())),
                    Err(e) => CloseOutcome::Failed(e.describe()),
                }
            }
        };
        tracing::debug!(?outcome, "close");
        self.shared.stop();
        outcome
    }

    /// Waits until every message sent so far is acknowledged or refused, or
    /// the client has stopped.
    pub async fn wait_settled(&self) {
        let mut settled = self.shared.settled.subscribe();
        let mut stopped = self.shared.stopped.subscribe();
        loop {
            let sent = self.shared.sent.load(Ordering::SeqCst);
            if *settled.borrow_and_update() >= sent || *stopped.borrow_and_update() {
                return;
            }
            tokio::select! {
                r = settled.changed() => if r.is_err() { return },
                r = stopped.changed() => if r.is_err() { return },
            }
        }
    }

    /// Whether the client is done for good.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }

    /// Counts and state for `/status`.
    pub fn status(&self) -> Status {
        let s = &self.shared;
        let answers = s.answers().clone();
        Status {
            url: s.config.url.to_string(),
            client_id: s.config.client_id().map(str::to_owned),
            state: *s.state.borrow(),
            sent: s.sent.load(Ordering::SeqCst),
            acked: s.acked.load(Ordering::SeqCst),
            failed: s.failed.load(Ordering::SeqCst),
            received: s.received.load(Ordering::SeqCst),
            last_event_id: s.last_event_id.lock().map(|g| g.clone()).unwrap_or_default(),
            reconnects: s.reconnects.load(Ordering::SeqCst),
            posts: answers.posts,
            refusals: answers.refusals,
        }
    }

    /// POSTs answered with a status other than 2xx so far, by status,
    /// retried or final (also in [`status`](Self::status)).
    pub fn refusals(&self) -> BTreeMap<u16, u64> {
        self.shared.answers().refusals.clone()
    }
}

/// The byte bound of queued messages as semaphore permits, which count in
/// u32 when acquired in bulk; at least 1 so an empty message can queue.
fn max_permits(config: &ClientConfig) -> usize {
    config.max_queued_bytes.clamp(1, u32::MAX as usize).min(Semaphore::MAX_PERMITS)
}

/// Redirects followed per request, as browsers and curl allow.
const MAX_REDIRECTS: usize = 10;

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    Http(reqwest::Error),
    Redirect(String),
}

impl SendError {
    fn describe(&self) -> String {
        match self {
            SendError::Http(e) => describe(e),
            SendError::Redirect(why) => why.clone(),
        }
    }

    fn is_tls_failure(&self) -> bool {
        matches!(self, SendError::Http(e) if is_tls_failure(e))
    }
}

/// The HTTP client of a [`ClientConfig`]: its TLS trust, timeouts and TCP
/// keepalive, and no redirects of its own ([`request`] follows them).
pub(crate) fn http_client(config: &ClientConfig) -> Result<reqwest::Client, ClientError> {
    let mut http = reqwest::Client::builder()
        // Redirects are followed by `request`, which decides
        // where the user's headers may go; reqwest would send them to
        // any host, with a Referer carrying the client id.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.timeout)
        // A second line of defence after `idle_timeout`: the OS probes an
        // idle connection and drops it when the peer is gone, so a POST
        // or a stream without an idle timeout does not hang forever.
        .tcp_keepalive(config::TCP_KEEPALIVE)
        .tcp_keepalive_interval(config::TCP_KEEPALIVE_INTERVAL)
        .tcp_keepalive_retries(config::TCP_KEEPALIVE_RETRIES)
        .user_agent(USER_AGENT)
        .danger_accept_invalid_certs(config.insecure);
    for cert in &config.ca_certs {
        http = http.add_root_certificate(cert.clone());
    }
    Ok(http.build()?)
}

/// Sends a request and follows redirects itself. The user's `-H`
/// headers go to the URL's own origin only, unless `location_trusted`
/// (stricter than curl, which keeps all but `Authorization` and
/// `Cookie`): an API key must not leak to wherever a server points.
/// No `Referer` is sent, so the client id in the URL stays put too.
/// 301/302/303 turn a POST into a GET without body; 307/308 keep both.
/// A POST is redirected to another origin only with `location` (`-L`,
/// as curl): a server must not be able to send it, body and all, to
/// any host, internal ones included.
pub(crate) async fn request(
    client: &reqwest::Client,
    config: &ClientConfig,
    method: http::Method,
    url: reqwest::Url,
    headers: http::HeaderMap,
    body: Option<bytes::Bytes>,
    timeout: Option<std::time::Duration>,
) -> Result<reqwest::Response, SendError> {
    let home = config.url.origin();
    let (mut method, mut url, mut body) = (method, url, body);
    for _ in 0..=MAX_REDIRECTS {
        let mut req = client.request(method.clone(), url.clone()).headers(headers.clone());
        if config.location_trusted || url.origin() == home {
            req = req.headers(config.headers.clone());
        }
        if let Some(b) = &body {
            req = req.body(b.clone());
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(SendError::Http)?;
        let status = resp.status().as_u16();
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Ok(resp);
        }
        let Some(location) = resp.headers().get(http::header::LOCATION) else {
            return Ok(resp);
        };
        let next = location
            .to_str()
            .ok()
            .and_then(|l| url.join(l).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                SendError::Redirect(format!(
                    "redirect {status} to a bad location {:?}",
                    escape_controls(&String::from_utf8_lossy(location.as_bytes()))
                ))
            })?;
        let posting = method != http::Method::GET && method != http::Method::HEAD;
        if posting && next.origin() != home && !config.location {
            return Err(SendError::Redirect(format!(
                "redirect {status} of a {method} to another origin ({}) not followed (-L follows it)",
                escape_controls(next.as_str())
            )));
        }
        tracing::debug!(%status, to = %next, "following redirect");
        if matches!(status, 301..=303)
            && method != http::Method::GET
            && method != http::Method::HEAD
        {
            method = http::Method::GET;
            body = None;
        }
        url = next;
    }
    Err(SendError::Redirect(format!("more than {MAX_REDIRECTS} redirects")))
}

/// A reqwest error with its innermost cause, e.g. "cannot connect:
/// Connection refused (os error 111)", instead of only the outer "error
/// sending request for url (...)".
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let root = config::root_cause(e);
    if e.is_timeout() {
        "timed out".into()
    } else if is_tls_failure(e) {
        format!("TLS handshake failed: {root}")
    } else if e.is_connect() {
        format!("cannot connect: {root}")
    } else if e.is_body() || e.is_decode() {
        format!("reading the response failed: {root}")
    } else {
        format!("request failed: {root}")
    }
}

/// What to do about a failed TLS handshake, from rustls's reason (reqwest
/// hides its error type) and whether `--cacert` was given: the fix for a
/// certificate nobody trusts yet is not the fix for one that can never be
/// a server's. None when the handshake failed for another reason than the
/// certificate (a server that does not speak TLS).
pub(crate) fn tls_hint(reason: &str, cacert: bool) -> Option<&'static str> {
    Some(if reason.contains("CaUsedAsEndEntity") {
        // OpenSSL 3's `req -x509` marks the certificate it makes CA:TRUE.
        "the server's certificate is a CA's (basicConstraints CA:TRUE), which a server's may not be: \
         make it with `-addext basicConstraints=critical,CA:FALSE`"
    } else if cacert && ["UnknownIssuer", "BadSignature"].iter().any(|r| reason.contains(r)) {
        // BadSignature: an issuer of the same name, e.g. an older cert.pem.
        "the --cacert file holds neither this certificate nor its issuer; -k skips the check"
    } else if reason.contains("UnknownIssuer") {
        "--cacert FILE trusts it, -k skips the check"
    } else if reason.contains("certificate") {
        "-k skips the check"
    } else {
        return None;
    })
}

/// Whether connecting failed in the TLS handshake: an untrusted or wrong
/// certificate, or a peer that does not speak TLS. Retrying cannot fix
/// that, so the stream fails at once instead of backing off for a minute.
/// reqwest hides rustls's error type; tokio-rustls reports every handshake
/// error as an `io::Error` of kind `InvalidData` (which a plain TCP connect
/// never produces), and hyper-rustls wraps that in `io::Error::other`,
/// whose `source()` skips it: so look inside io errors with `get_ref`.
fn is_tls_failure(e: &reqwest::Error) -> bool {
    if !e.is_connect() {
        return false;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::InvalidData => return true,
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => err.source(),
        };
    }
    false
}

/// Bytes of an error response body kept for a reason.
pub(crate) const REASON_MAX: usize = 1024;

/// The first line of a response body, for a reason: at most [`REASON_MAX`]
/// bytes are read, so a huge or endless error body cannot grow memory, and
/// control characters are escaped, since the text ends up on a terminal.
pub(crate) async fn first_line(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < REASON_MAX {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c[..c.len().min(REASON_MAX - buf.len())]),
            _ => break,
        }
    }
    reason_line(&buf)
}

/// The first line of the start of an error body, made safe for a terminal.
pub(crate) fn reason_line(start: &[u8]) -> String {
    let text = String::from_utf8_lossy(start);
    escape_controls(text.lines().next().unwrap_or("").trim()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_hints_fit_the_failure() {
        let ca =
            "TLS handshake failed: invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))";
        for cacert in [false, true] {
            let hint = tls_hint(ca, cacert).unwrap();
            assert!(hint.contains("basicConstraints=critical,CA:FALSE"), "{hint}");
            assert!(!hint.contains("--cacert"), "{hint}");
        }
        let unknown = "TLS handshake failed: invalid peer certificate: UnknownIssuer";
        assert_eq!(tls_hint(unknown, false), Some("--cacert FILE trusts it, -k skips the check"));
        assert!(tls_hint(unknown, true).unwrap().starts_with("the --cacert file holds neither"));
        let other = "TLS handshake failed: invalid peer certificate: BadSignature";
        assert!(tls_hint(other, true).unwrap().starts_with("the --cacert file holds neither"));
        let name = "TLS handshake failed: invalid peer certificate: certificate not valid for name";
        assert_eq!(tls_hint(name, true), Some("-k skips the check"));
        assert_eq!(tls_hint("TLS handshake failed: received corrupt message", false), None);
    }
}
