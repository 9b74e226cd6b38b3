//! The MCP client: Streamable HTTP, both eras, every stream resumed by
//! the one [`Driver`].
//!
//! [`McpClient::connect`] finds the server's era as 2026-07-28's Backward
//! Compatibility says (a per-request `server/discover` first; a session
//! by `initialize` when the answer is not of that era), then every
//! message is a POST of its own. A request's answer is JSON or a stream;
//! a stream cut before its response is resumed with a `GET` carrying
//! `Last-Event-ID` after the server's `retry` (session era; the
//! per-request era has no resume), and what happens to it is said as an
//! [`McpEvent`]. Messages of the server that answer nobody's request
//! (notifications, its own requests, the `GET` stream's) are events too.
//! The pure parts are in [`crate::mcp::client`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::debug;

use super::driver::{Driver, DriverConfig, OpenError, Resume, Step};
use super::stream::{ReqwestBody, judge, sent_within};
use super::{
    ClientConfig, ClientError, describe, escape_controls, first_line, http_client, request,
};
use crate::mcp::client::{
    self as pure, ClientInfo, PER_REQUEST_REVISION, Probe, SESSION_REVISIONS, ServerInfo,
};
use crate::mcp::message::{Kind, Message, RequestId};
use crate::protocol::parser::Parsed;
use crate::reader::{Refusal, is_event_stream};

/// Events the caller may fall behind on before streams stop being read.
const EVENT_BUFFER: usize = 1024;
/// The id of the era probe and of `initialize`: strings, so that they
/// never meet a caller's numbers.
const PROBE_ID: &str = "ssechan-discover";
const INITIALIZE_ID: &str = "ssechan-initialize";
/// Longest `Mcp-Session-Id` taken.
const MAX_SESSION_ID: usize = 1024;

/// How the client presents itself and which era it speaks.
#[derive(Debug, Clone)]
pub struct McpOptions {
    pub client: ClientInfo,
    /// The revision to speak: a session one (`initialize` offering it),
    /// the per-request one, or `None`: probe, then the newest both speak.
    pub version: Option<String>,
    /// Open the session's standalone `GET` stream (messages tied to no
    /// request).
    pub listen: bool,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            client: ClientInfo {
                name: "ssechan".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            version: None,
            listen: true,
        }
    }
}

/// What happens to a client, besides the answers it is given.
#[derive(Debug, Clone, PartialEq)]
pub enum McpEvent {
    /// A message of the server: a response (to a request sent with
    /// [`McpClient::send`]), a notification, or a request of its own.
    Message(Message),
    /// A stream was cut (`stream` names it: `request 7`, `GET stream`).
    Cut {
        stream: String,
        reason: String,
    },
    /// It is re-opened after `delay`.
    Reconnecting {
        stream: String,
        attempt: u32,
        delay: Duration,
    },
    AttemptFailed {
        stream: String,
        attempt: u32,
        reason: String,
    },
    /// It is open again, asked for after `last_event_id`.
    Resumed {
        stream: String,
        last_event_id: Option<String>,
    },
    /// Request `id` will get no answer, and why.
    Unanswered {
        id: RequestId,
        reason: String,
    },
    /// A notification or a response of the client was refused.
    Refused {
        what: String,
        reason: String,
    },
    /// The server ended the session (404): nothing more will come.
    SessionEnded,
    /// The server offers no standalone stream, or it ended for good.
    NoGetStream {
        reason: String,
    },
}

/// Why the client could not start or a message not be sent.
#[derive(Debug, Error)]
pub enum McpError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Handshake(String),
    #[error("request id {0} is already waiting for its answer")]
    DuplicateId(RequestId),
    #[error("{0}")]
    Unanswered(String),
    #[error("the client has stopped")]
    Stopped,
}

/// What the handshake settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The revision every request speaks.
    pub version: String,
    /// Session era: the session's id (a server may give none).
    pub session: Option<String>,
    pub per_request: bool,
    /// How the era was found, for people.
    pub how: String,
}

/// Counts of what the streams went through.
#[derive(Debug, Default)]
pub struct McpStats {
    /// Streams cut (by the network, the server or `drop_streams`).
    pub cuts: AtomicU64,
    /// Streams re-opened with `Last-Event-ID`.
    pub resumes: AtomicU64,
    /// Attempts to re-open that failed.
    pub failed_resumes: AtomicU64,
    /// POSTs answered (with any status).
    pub posts: AtomicU64,
    /// POSTs answered with an error status, by status.
    pub refusals: Mutex<HashMap<u16, u64>>,
}

impl McpStats {
    fn refused(&self, status: StatusCode) {
        if let Ok(mut r) = self.refusals.lock() {
            *r.entry(status.as_u16()).or_default() += 1;
        }
    }

    /// The refusals so far, by status.
    pub fn refusals_by_status(&self) -> std::collections::BTreeMap<u16, u64> {
        self.refusals.lock().map(|r| r.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default()
    }
}

/// A running client; clones share it.
#[derive(Clone)]
pub struct McpClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    options: McpOptions,
    handshake: OnceLock<Handshake>,
    events: mpsc::Sender<McpEvent>,
    /// Requests sent whose answer has not come, and where it goes.
    owed: Mutex<HashMap<RequestId, oneshot::Sender<Message>>>,
    owed_count: watch::Sender<usize>,
    /// POSTs of `send` not finished yet.
    posting: watch::Sender<usize>,
    /// Bumped by `drop_streams`: every open stream is cut.
    drops: watch::Sender<u64>,
    stopped: watch::Sender<bool>,
    /// POSTs in flight at once.
    in_flight: Arc<Semaphore>,
    stats: McpStats,
}

/// Where a POST stands in the handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Probe,
    Initialize,
    Ready,
}

impl McpClient {
    /// Connects: the era, the handshake, the `GET` stream. Events arrive
    /// on the receiver (dropping it is fine: they are then not kept).
    pub async fn connect(
        config: ClientConfig,
        options: McpOptions,
    ) -> Result<(McpClient, ServerInfo, mpsc::Receiver<McpEvent>), McpError> {
        let http = http_client(&config)?;
        let (events, rx) = mpsc::channel(EVENT_BUFFER);
        let in_flight = Arc::new(Semaphore::new(config.in_flight.max(1)));
        let client = McpClient {
            inner: Arc::new(Inner {
                http,
                config,
                options,
                handshake: OnceLock::new(),
                events,
                owed: Mutex::default(),
                owed_count: watch::Sender::new(0),
                posting: watch::Sender::new(0),
                drops: watch::Sender::new(0),
                stopped: watch::Sender::new(false),
                in_flight,
                stats: McpStats::default(),
            }),
        };
        let info = client.handshake().await?;
        let listen = client.inner.options.listen;
        if listen && client.handshake_state().is_some_and(|h| !h.per_request) {
            // Open (or refused) before anything else is sent, so that what
            // the server sends to it is not raced by the first requests.
            let (ready, opened) = oneshot::channel();
            tokio::spawn(client.clone().listen(ready));
            let _ = tokio::time::timeout(client.inner.config.timeout, opened).await;
        }
        Ok((client, info, rx))
    }

    /// What the handshake settled.
    pub fn handshake_state(&self) -> Option<&Handshake> {
        self.inner.handshake.get()
    }

    pub fn stats(&self) -> &McpStats {
        &self.inner.stats
    }

    /// Sends `msg`; its answer (if it is a request) and whatever comes
    /// with it arrive as events. Waits while `in_flight` POSTs are out.
    pub async fn send(&self, msg: Message) -> Result<(), McpError> {
        let answer = self.owe(&msg)?;
        let permit = tokio::select! {
            p = self.inner.in_flight.clone().acquire_owned() => p.map_err(|_| McpError::Stopped)?,
            _ = self.until_stopped() => return Err(McpError::Stopped),
        };
        let client = self.clone();
        self.inner.posting.send_modify(|n| *n += 1);
        tokio::spawn(async move {
            let _permit = permit;
            match client.exchange(&msg, answer).await {
                Ok(Some(response)) => client.emit(McpEvent::Message(response)).await,
                Ok(None) => {}
                Err(reason) => client.fail(&msg, reason).await,
            }
            client.inner.posting.send_modify(|n| *n -= 1);
        });
        Ok(())
    }

    /// Sends request `msg` and waits for its response (other messages
    /// still arrive as events).
    pub async fn request(&self, msg: Message) -> Result<Message, McpError> {
        let answer = self.owe(&msg)?;
        let _permit = tokio::select! {
            p = self.inner.in_flight.acquire() => p.map_err(|_| McpError::Stopped)?,
            _ = self.until_stopped() => return Err(McpError::Stopped),
        };
        match self.exchange(&msg, answer).await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(McpError::Unanswered("no answer to a notification".into())),
            Err(reason) => {
                self.settle(&msg);
                Err(McpError::Unanswered(reason))
            }
        }
    }

    /// Requests sent whose answer has not come.
    pub fn owed(&self) -> usize {
        *self.inner.owed_count.borrow()
    }

    /// Their ids.
    pub fn owed_ids(&self) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> =
            self.inner.owed.lock().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        ids.sort();
        ids
    }

    /// Waits until no answer is owed and every message sent is handed
    /// over (a notification's POST answered).
    pub async fn wait_settled(&self) {
        let mut owed = self.inner.owed_count.subscribe();
        let _ = owed.wait_for(|n| *n == 0).await;
        let mut posting = self.inner.posting.subscribe();
        let _ = posting.wait_for(|n| *n == 0).await;
        // An answer may have been owed again meanwhile.
        let _ = owed.wait_for(|n| *n == 0).await;
    }

    /// Cuts every open stream (as a network failure would), each once it
    /// has given an id to resume from; each resumes.
    pub fn drop_streams(&self) {
        self.inner.drops.send_modify(|n| *n += 1);
    }

    /// Stops without a word to the server.
    pub fn stop(&self) {
        self.inner.stopped.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.inner.stopped.borrow()
    }

    /// Ends the session (`DELETE`, session era), then stops. The status
    /// the server answered, if any.
    pub async fn close(&self) -> Option<u16> {
        let status = match self.handshake_state().and_then(|h| h.session.clone()) {
            Some(_) => {
                let headers = self.headers(None, Phase::Ready);
                let url = self.inner.config.url.clone();
                let timeout = Some(self.inner.config.timeout);
                let sent = request(
                    &self.inner.http,
                    &self.inner.config,
                    Method::DELETE,
                    url,
                    headers,
                    None,
                    timeout,
                );
                match sent.await {
                    Ok(r) => Some(r.status().as_u16()),
                    Err(e) => {
                        debug!("DELETE failed: {}", e.describe());
                        None
                    }
                }
            }
            None => None,
        };
        self.stop();
        status
    }

    // ----- the handshake

    async fn handshake(&self) -> Result<ServerInfo, McpError> {
        let wanted = self.inner.options.version.clone();
        let fail = |m: String| McpError::Handshake(m);
        let (supported, how) = match wanted.as_deref() {
            Some(v) if SESSION_REVISIONS.contains(&v) => (Vec::new(), format!("asked for {v}")),
            Some(v) if v != PER_REQUEST_REVISION => {
                return Err(fail(format!(
                    "revision {v} is not one ssechan speaks ({}, {PER_REQUEST_REVISION})",
                    SESSION_REVISIONS.join(", ")
                )));
            }
            _ => match self.probe().await? {
                Probe::PerRequest { result } => {
                    let info = ServerInfo::of_discover(&result);
                    let how = "server/discover answered: a server of the per-request era".into();
                    self.settled(Handshake {
                        version: PER_REQUEST_REVISION.into(),
                        session: None,
                        per_request: true,
                        how,
                    });
                    return Ok(info);
                }
                _ if wanted.is_some() => {
                    return Err(fail(format!(
                        "the server does not speak {PER_REQUEST_REVISION} (its answer to server/discover is not of that era)"
                    )));
                }
                Probe::Initialize { supported } => {
                    let how = format!(
                        "server/discover refused with the revisions it serves ({}): initialize",
                        supported.join(", ")
                    );
                    (supported, how)
                }
                Probe::Legacy { seen } => {
                    (Vec::new(), format!("server/discover answered {seen}: a session-era server"))
                }
            },
        };
        let offer = pure::offer(wanted.as_deref(), &supported).ok_or_else(|| {
            fail(format!(
                "no revision in common: the server serves {}, ssechan speaks {}",
                supported.join(", "),
                SESSION_REVISIONS.join(", ")
            ))
        })?;
        let init = pure::initialize_request(INITIALIZE_ID, offer, &self.inner.options.client);
        let (status, answer, session) = self.post_once(&init, Phase::Initialize).await?;
        let answer = answer
            .ok_or_else(|| fail(format!("initialize answered {status} without an answer")))?;
        if let Some(error) = answer.value.get("error") {
            return Err(fail(format!(
                "initialize refused: {}",
                escape_controls(&error.to_string())
            )));
        }
        let result = answer.value.get("result").cloned().unwrap_or_default();
        let info = ServerInfo::of_initialize(&result)
            .ok_or_else(|| fail("initialize answered without a protocolVersion".into()))?;
        if !SESSION_REVISIONS.contains(&info.protocol_version.as_str()) {
            return Err(fail(format!(
                "the server chose revision {}, which ssechan does not speak ({})",
                escape_controls(&info.protocol_version),
                SESSION_REVISIONS.join(", ")
            )));
        }
        self.settled(Handshake {
            version: info.protocol_version.clone(),
            session,
            per_request: false,
            how,
        });
        let (status, _, _) = self.post_once(&pure::initialized(), Phase::Ready).await?;
        if !status.is_success() {
            return Err(fail(format!("notifications/initialized answered {status}")));
        }
        Ok(info)
    }

    fn settled(&self, h: Handshake) {
        debug!(?h, "handshake");
        let _ = self.inner.handshake.set(h);
    }

    /// The era probe: a per-request `server/discover`. Only a network
    /// failure fails it: any answer says something of the era.
    async fn probe(&self) -> Result<Probe, McpError> {
        let discover = pure::discover_request(PROBE_ID, &self.inner.options.client);
        let resp = self
            .post(&discover, Phase::Probe)
            .await
            .map_err(|e| McpError::Handshake(e.to_string()))?;
        let status = resp.status();
        let answer = if is_stream(&resp) {
            let id = RequestId::of_str(PROBE_ID);
            self.read_stream(Some(&id), ReqwestBody::new(resp), false, None).await.ok().flatten()
        } else {
            self.read_json(resp).await.ok().flatten()
        };
        Ok(pure::judge_probe(status.as_u16(), PROBE_ID, answer.as_ref()))
    }

    /// One POST of the handshake: its status, its answer (JSON, or the
    /// first of a stream) and the session id it gave.
    async fn post_once(
        &self,
        msg: &Message,
        phase: Phase,
    ) -> Result<(StatusCode, Option<Message>, Option<String>), McpError> {
        let resp = self.post(msg, phase).await.map_err(|e| McpError::Handshake(open_text(e)))?;
        let status = resp.status();
        let session = match resp.headers().get("mcp-session-id") {
            Some(v) => {
                let id = v.to_str().unwrap_or_default();
                if !crate::mcp::valid_session_id(id, MAX_SESSION_ID) {
                    return Err(McpError::Handshake(format!(
                        "the server gave a session id that is not visible ASCII of at most {MAX_SESSION_ID} bytes"
                    )));
                }
                Some(id.to_owned())
            }
            None => None,
        };
        let answer = match &msg.kind {
            // 202 and no body, as it should; a body there is no answer.
            Kind::Notification { .. } | Kind::Response { .. } => None,
            Kind::Request { id, .. } if is_stream(&resp) => {
                let body = ReqwestBody::new(resp);
                self.read_stream(Some(id), body, phase == Phase::Ready, None)
                    .await
                    .map_err(McpError::Handshake)?
            }
            Kind::Request { .. } => self.read_json(resp).await.map_err(McpError::Handshake)?,
        };
        Ok((status, answer, session))
    }

    // ----- messages

    /// Registers `msg`'s answer as owed (a request); the receiver gets it
    /// if it arrives on another stream.
    fn owe(&self, msg: &Message) -> Result<Option<oneshot::Receiver<Message>>, McpError> {
        let Kind::Request { id, .. } = &msg.kind else { return Ok(None) };
        let mut owed = self.inner.owed.lock().map_err(|_| McpError::Stopped)?;
        if owed.contains_key(id) {
            return Err(McpError::DuplicateId(id.clone()));
        }
        let (tx, rx) = oneshot::channel();
        owed.insert(id.clone(), tx);
        self.inner.owed_count.send_replace(owed.len());
        Ok(Some(rx))
    }

    /// The answer of `msg` came or will not: it is owed no longer.
    fn settle(&self, msg: &Message) -> Option<oneshot::Sender<Message>> {
        let Kind::Request { id, .. } = &msg.kind else { return None };
        self.settle_id(id)
    }

    fn settle_id(&self, id: &RequestId) -> Option<oneshot::Sender<Message>> {
        let mut owed = self.inner.owed.lock().ok()?;
        let tx = owed.remove(id);
        self.inner.owed_count.send_replace(owed.len());
        tx
    }

    /// A message of the server that is not the answer its stream waits
    /// for: a response goes to whoever owes it, anything else is an event.
    async fn deliver(&self, msg: Message) {
        if let Kind::Response { id } = &msg.kind
            && let Some(tx) = self.settle_id(id)
        {
            if let Err(msg) = tx.send(msg) {
                self.emit(McpEvent::Message(msg)).await;
            }
            return;
        }
        self.emit(McpEvent::Message(msg)).await;
    }

    async fn fail(&self, msg: &Message, reason: String) {
        self.settle(msg);
        let event = match &msg.kind {
            Kind::Request { id, .. } => McpEvent::Unanswered { id: id.clone(), reason },
            _ => McpEvent::Refused { what: describe_msg(msg), reason },
        };
        self.emit(event).await;
    }

    async fn emit(&self, event: McpEvent) {
        if event == McpEvent::SessionEnded {
            self.stop();
        }
        let _ = self.inner.events.send(event).await;
    }

    async fn until_stopped(&self) {
        let mut rx = self.inner.stopped.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// POSTs `msg` and waits for its answer: `Ok(None)` for what has none
    /// (a notification or a response, accepted), `Err` why not.
    async fn exchange(
        &self,
        msg: &Message,
        answer: Option<oneshot::Receiver<Message>>,
    ) -> Result<Option<Message>, String> {
        let resp = self.post(msg, Phase::Ready).await.map_err(open_text)?;
        self.inner.stats.posts.fetch_add(1, Ordering::Relaxed);
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes);
        if status.is_success() && is_event_stream(content_type) {
            let id = match &msg.kind {
                Kind::Request { id, .. } => Some(id.clone()),
                _ => None,
            };
            let resumable = self.handshake_state().is_some_and(|h| !h.per_request);
            let got =
                self.read_stream(id.as_ref(), ReqwestBody::new(resp), resumable, answer).await?;
            self.settle(msg);
            return match got {
                Some(m) => Ok(Some(m)),
                None if msg.is_request() => Err("its stream ended without its answer".into()),
                None => Ok(None),
            };
        }
        if status.is_success() {
            if !msg.is_request() {
                // 202 and no body, as it should; a body there is no answer.
                return Ok(None);
            }
            let got = self.read_json(resp).await;
            self.settle(msg);
            let got = got?;
            return match got {
                Some(m) if m.kind == response_kind(msg) => Ok(Some(m)),
                Some(m) => {
                    self.deliver(m).await;
                    Err(format!("answered {status} with another message than its response"))
                }
                None => Err(format!("answered {status} without a response")),
            };
        }
        self.inner.stats.refused(status);
        let session = self.handshake_state().is_some_and(|h| h.session.is_some());
        let reason = first_line(resp).await;
        let why =
            if reason.is_empty() { format!("{status}") } else { format!("{status}: {reason}") };
        if status == StatusCode::NOT_FOUND && session {
            self.emit(McpEvent::SessionEnded).await;
            return Err(format!("the session is over ({why})"));
        }
        Err(format!("refused: {why}"))
    }

    /// Reads the stream answering request `id` until its response (or
    /// the end of a notification's stream); a cut stream is resumed with
    /// `GET` + `Last-Event-ID` when `resumable` and an id came.
    async fn read_stream(
        &self,
        id: Option<&RequestId>,
        body: ReqwestBody,
        resumable: bool,
        elsewhere: Option<oneshot::Receiver<Message>>,
    ) -> Result<Option<Message>, String> {
        let name = match id {
            Some(id) => format!("request {}", escape_controls(id.as_json())),
            None => "a notification's stream".into(),
        };
        let want = match id {
            Some(id) => Want::Answer { id, resumable },
            None => Want::End,
        };
        self.follow(&name, Some(body), want, elsewhere, None).await.map_err(|(_, why)| why)
    }

    /// The session's standalone stream, resumed as long as it lasts;
    /// `ready` is told once it opened or was refused.
    async fn listen(self, ready: oneshot::Sender<()>) {
        let name = "GET stream";
        match self.follow(name, None, Want::Forever, None, Some(ready)).await {
            Err((Some(StatusCode::METHOD_NOT_ALLOWED), _)) => {
                debug!("the server offers no GET stream (405)");
            }
            Err((Some(StatusCode::NOT_FOUND), _)) | Ok(_) => {}
            Err((_, reason)) => {
                debug!("no GET stream: {reason}");
                self.emit(McpEvent::NoGetStream { reason }).await;
            }
        }
    }

    /// Follows one stream (opened already when `body` is given) through
    /// its cuts and resumes, delivering its messages, until what `want`
    /// waits for; every cut, wait and resume is said. `Err`: the status
    /// that refused a resume (404: the session is over, said) and why.
    async fn follow(
        &self,
        name: &str,
        body: Option<ReqwestBody>,
        want: Want<'_>,
        mut elsewhere: Option<oneshot::Receiver<Message>>,
        mut ready: Option<oneshot::Sender<()>>,
    ) -> Result<Option<Message>, (Option<StatusCode>, String)> {
        let open = |last: &str| self.get(last.to_owned());
        let mut driver = match body {
            Some(body) => Driver::with_open_stream(self.driver_config(), open, body),
            None => Driver::new(self.driver_config(), open),
        };
        let mut drops = self.inner.drops.subscribe();
        drops.borrow_and_update();
        // A cut asked for before the stream gave an id to resume from
        // waits for one: a cut then would test nothing of the server.
        let mut drop_asked = false;
        let fail = |why: String| Err((None, why));
        loop {
            let now = if drop_asked && !driver.reader().last_event_id().is_empty() {
                // What has arrived already is read first: a cut cannot take
                // back what the network delivered.
                tokio::time::timeout(Duration::ZERO, driver.next()).await.ok()
            } else {
                None
            };
            if drop_asked && now.is_none() && !driver.reader().last_event_id().is_empty() {
                drop_asked = false;
                if driver.drop_stream() {
                    self.cut(name, "dropped on purpose".into()).await;
                }
                continue;
            }
            let step = if let Some(step) = now {
                step
            } else {
                tokio::select! {
                    step = driver.next() => step,
                    _ = drops.changed() => {
                        drop_asked = driver.is_open();
                        continue;
                    }
                    m = answered(&mut elsewhere) => {
                        match m {
                            Ok(m) => return Ok(Some(m)),
                            Err(_) => elsewhere = None,
                        }
                        continue;
                    }
                    _ = self.until_stopped() => return fail("the client stopped".into()),
                }
            };
            if !matches!(step, Some(Step::Connecting { .. }))
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(());
            }
            let Some(step) = step else { return Ok(None) };
            match step {
                Step::Item(Parsed::Event(ev)) => {
                    // A priming event (an id, empty data) carries no message.
                    if ev.data.is_empty() {
                        continue;
                    }
                    match Message::parse(ev.data.as_bytes()) {
                        Ok(m) if want.is_answer(&m) => return Ok(Some(m)),
                        Ok(m) => self.deliver(m).await,
                        Err(e) => debug!("{name}: an event that is no JSON-RPC message ({e})"),
                    }
                }
                Step::Item(_) | Step::Connecting { .. } | Step::Open { resumed: false, .. } => {}
                Step::Open { resumed: true, last_event_id } => {
                    self.inner.stats.resumes.fetch_add(1, Ordering::Relaxed);
                    let stream = name.to_owned();
                    self.emit(McpEvent::Resumed { stream, last_event_id }).await;
                }
                Step::Lost { reason } | Step::Broken { reason } => match want {
                    Want::End => return Ok(None),
                    Want::Answer { resumable: false, .. } => {
                        return fail(format!(
                            "its stream was cut ({reason}); streams of the per-request era are not resumable"
                        ));
                    }
                    Want::Answer { .. } if driver.reader().last_event_id().is_empty() => {
                        return fail(format!(
                            "its stream was cut ({reason}) before any event id to resume from"
                        ));
                    }
                    Want::Answer { .. } | Want::Forever => self.cut(name, reason).await,
                },
                Step::Waiting { attempt, delay } => {
                    let stream = name.to_owned();
                    self.emit(McpEvent::Reconnecting { stream, attempt, delay }).await;
                }
                Step::OpenFailed { attempt, reason } => {
                    self.inner.stats.failed_resumes.fetch_add(1, Ordering::Relaxed);
                    let stream = name.to_owned();
                    self.emit(McpEvent::AttemptFailed { stream, attempt, reason }).await;
                }
                Step::NoContent => return fail("the server answered 204 to its resume".into()),
                Step::Refused { refusal: Refusal::Status(status), body } => {
                    if status == StatusCode::NOT_FOUND {
                        self.emit(McpEvent::SessionEnded).await;
                    }
                    let why = OpenError::Refused { refusal: Refusal::Status(status), body };
                    return Err((Some(status), format!("its resume was refused: {why}")));
                }
                Step::Refused { refusal, body } => {
                    let why = OpenError::Refused { refusal, body };
                    return fail(format!("its resume was refused: {why}"));
                }
                Step::Failed { reason } => return fail(format!("resuming it failed: {reason}")),
                Step::GaveUp { attempts, reason } => {
                    return fail(format!(
                        "gave up resuming it after {attempts} attempts: {reason}"
                    ));
                }
            }
        }
    }

    async fn cut(&self, stream: &str, reason: String) {
        self.inner.stats.cuts.fetch_add(1, Ordering::Relaxed);
        self.emit(McpEvent::Cut { stream: stream.to_owned(), reason }).await;
    }

    fn driver_config(&self) -> DriverConfig {
        let c = &self.inner.config;
        DriverConfig {
            retry: c.retry,
            max_event_bytes: c.max_event_bytes,
            idle_timeout: c.idle_timeout,
            resume: Resume::Plain,
        }
    }

    // ----- HTTP

    /// The headers of a request in `phase` (`msg`: a POST's message).
    fn headers(&self, msg: Option<&Message>, phase: Phase) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        let handshake = self.handshake_state().filter(|_| phase == Phase::Ready);
        let per_request = phase == Phase::Probe || handshake.is_some_and(|h| h.per_request);
        if let Some(hs) = handshake {
            put("mcp-protocol-version", &hs.version);
            if let Some(s) = &hs.session {
                put("mcp-session-id", s);
            }
        }
        if per_request {
            put("mcp-protocol-version", PER_REQUEST_REVISION);
            for (name, value) in msg.map(pure::mirrored_headers).unwrap_or_default() {
                put(name, &value);
            }
        }
        h
    }

    /// POSTs one message; the answer's headers within `--timeout`.
    async fn post(&self, msg: &Message, phase: Phase) -> Result<reqwest::Response, OpenError> {
        let per_request = phase == Phase::Probe
            || (phase == Phase::Ready && self.handshake_state().is_some_and(|h| h.per_request));
        let msg = if per_request && phase == Phase::Ready {
            pure::per_request(msg, &self.inner.options.client)
        } else {
            msg.clone()
        };
        let mut headers = self.headers(Some(&msg), phase);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json, text/event-stream"));
        let c = &self.inner.config;
        let body = bytes::Bytes::from(msg.to_line());
        let sent =
            request(&self.inner.http, c, Method::POST, c.url.clone(), headers, Some(body), None);
        sent_within(c, sent).await
    }

    /// Re-opens a cut stream: `GET` with `Last-Event-ID`.
    async fn get(&self, last_event_id: String) -> Result<ReqwestBody, OpenError> {
        let mut headers = self.headers(None, Phase::Ready);
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if !last_event_id.is_empty()
            && let Ok(v) = HeaderValue::from_str(&last_event_id)
        {
            headers.insert("last-event-id", v);
        }
        let c = &self.inner.config;
        let sent = request(&self.inner.http, c, Method::GET, c.url.clone(), headers, None, None);
        judge(sent_within(c, sent).await?).await
    }

    /// A JSON answer, bounded; `None` for an empty body.
    async fn read_json(&self, mut resp: reqwest::Response) -> Result<Option<Message>, String> {
        let max = self.inner.config.max_event_bytes;
        let read = async {
            let mut buf = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
                if buf.len() + chunk.len() > max {
                    return Err(format!("an answer of more than {max} bytes"));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf)
        };
        let timeout = self.inner.config.timeout;
        let buf = tokio::time::timeout(timeout, read).await.map_err(|_| {
            format!("the answer's body took more than {}", humantime::format_duration(timeout))
        })??;
        if buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        Message::parse(&buf).map(Some).map_err(|e| {
            format!("the answer is no JSON-RPC message: {}", escape_controls(&e.to_string()))
        })
    }
}

/// What a followed stream is read for.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// The response to this request.
    Answer { id: &'a RequestId, resumable: bool },
    /// Its end (a stream answering a notification).
    End,
    /// Everything, as long as it lasts (the `GET` stream).
    Forever,
}

impl Want<'_> {
    fn is_answer(&self, m: &Message) -> bool {
        matches!((self, &m.kind), (Want::Answer { id, .. }, Kind::Response { id: got }) if got == *id)
    }
}

/// Whether an answer is an event stream.
fn is_stream(resp: &reqwest::Response) -> bool {
    is_event_stream(resp.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes))
}

/// What answers `msg` (a request): a response with its id.
fn response_kind(msg: &Message) -> Kind {
    match &msg.kind {
        Kind::Request { id, .. } => Kind::Response { id: id.clone() },
        other => other.clone(),
    }
}

/// A message in a few words: `notifications/cancelled`, `the response to 3`.
fn describe_msg(msg: &Message) -> String {
    match &msg.kind {
        Kind::Request { method, .. } | Kind::Notification { method } => {
            escape_controls(method).into_owned()
        }
        Kind::Response { id } => format!("the response to {}", escape_controls(id.as_json())),
    }
}

fn open_text(e: OpenError) -> String {
    e.to_string()
}

/// The answer `rx` will bring; never, without one.
async fn answered(
    rx: &mut Option<oneshot::Receiver<Message>>,
) -> Result<Message, oneshot::error::RecvError> {
    match rx {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}
