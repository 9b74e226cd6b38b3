//! MCP's Streamable HTTP mapped onto the channel core (docs/mcp.md, "How
//! ssechan maps MCP onto its channels").
//!
//! - Each SSE stream of a session is one channel of the store, keyed
//!   `SESSION/N`: a POST's response stream (N ≥ 1) or the session's `GET`
//!   stream (N = 0). Its event ids (numbered from N·2³² + 1, so an id
//!   names its stream: [`crate::mcp::event_id`]), replay in bytes,
//!   keep-alive, heartbeats, slow-consumer limit, takeover and resume by
//!   `Last-Event-ID` are the core's.
//! - A session's application side is a [`Connection`], as a package:sse
//!   client's is: the client's messages in arrival order, one JSON-RPC
//!   line each, and every line the application sends routed by
//!   [`Router`] to the stream of the request it belongs to. `serve`'s
//!   process per client, stdin/stdout and its counters serve sessions
//!   unchanged.
//!
//! Messages of the server tied to no request wait (bounded, like replay)
//! for the `GET` stream.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::ServerShared;
use super::app::{
    ChannelApp, CloseInfo, CloseReason, Connection, ConnectionEvent, ConnectionHandle, Handoff,
    RequestInfo, SendError,
};
use super::channel::Inbox;
use super::config::{Admission, Limits, McpConfig, ServerConfig};
use super::http::{
    ConnCtx, ResponseBody, bad_request, check_declared_length, preflight, read_body, request_host,
    request_info, text,
};
use super::metrics::{Counters, hold_within};
use super::store::{LayerOpen, NewChannel, Refusal, StreamRequest};
use super::stream::{EventStreamBody, stream_headers};
use crate::mcp::answered::Answered;
use crate::mcp::message::{Kind, Message, Renamed, RequestId};
use crate::mcp::route::{Route, Router};
use crate::mcp::{self, AnswerFormat, codes, event_id, version};
use crate::protocol::event::retry_event;
use crate::text::escape_controls;

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// Longest session id taken from a client (ours are 32 hex digits).
const MAX_SESSION_ID: usize = 128;
/// The `GET` stream's number.
const STANDALONE: u32 = 0;

/// Every session of the server. The only code that touches the map.
pub(crate) struct Sessions {
    config: McpConfig,
    settings: SessionSettings,
    map: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    accept: Mutex<Option<mpsc::Sender<Connection>>>,
    stats: Arc<Counters>,
    shutting_down: AtomicBool,
    opened: AtomicU64,
    /// The application's say on each new session (see [`Admission`]).
    admission: Option<Arc<dyn Admission>>,
    /// Whether COMMAND speaks the per-request era, found by probing it.
    era: tokio::sync::Mutex<CommandEra>,
}

/// What the probe found COMMAND to be.
enum CommandEra {
    Unknown,
    /// It speaks the per-request era: this process serves every such
    /// request (a new one is probed when it ends).
    PerRequest(Arc<Session>),
    /// It does not: per-request requests are told the session revisions.
    Sessions,
}

/// What serves a request of the per-request era.
enum PerRequest {
    Shared(Arc<Session>),
    NotSpoken,
}

/// The id of the probe a new shared process is sent.
const PROBE_ID: &str = "ssechan-discover";

/// What each session needs of the server's configuration.
#[derive(Debug, Clone, Copy)]
struct SessionSettings {
    limits: Limits,
    max_streams: usize,
}

impl Sessions {
    pub(crate) fn new(
        config: McpConfig,
        server: &ServerConfig,
        accept: mpsc::Sender<Connection>,
        stats: Arc<Counters>,
    ) -> Arc<Self> {
        let settings = SessionSettings { limits: server.limits, max_streams: config.max_streams };
        Arc::new(Self {
            config,
            settings,
            map: Mutex::new(HashMap::new()),
            accept: Mutex::new(Some(accept)),
            stats,
            shutting_down: AtomicBool::new(false),
            opened: AtomicU64::new(0),
            era: tokio::sync::Mutex::new(CommandEra::Unknown),
            admission: server.admission.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    pub(crate) fn lookup(&self, id: &str) -> Option<ConnectionHandle> {
        let s: Arc<dyn ChannelApp> = self.get(id)?;
        Some(ConnectionHandle { chan: s })
    }

    /// Sends `message` to every session, as a message tied to no request.
    pub(crate) fn broadcast(&self, message: &str) -> usize {
        let all: Vec<Arc<Session>> = self.lock().values().cloned().collect();
        all.iter().filter(|s| s.send_text(message).is_ok()).count()
    }

    pub(crate) fn metrics(&self) -> String {
        format!(
            "# HELP ssechan_mcp_sessions MCP sessions open.\n# TYPE ssechan_mcp_sessions gauge\nssechan_mcp_sessions {}\n\
             # HELP ssechan_mcp_sessions_opened_total MCP sessions opened (initialize).\n# TYPE ssechan_mcp_sessions_opened_total counter\nssechan_mcp_sessions_opened_total {}\n",
            self.count(),
            self.opened.load(Ordering::Relaxed)
        )
    }

    /// Ends every session; no new one opens.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        let all: Vec<Arc<Session>> = self.lock().values().cloned().collect();
        for s in all {
            s.end(CloseReason::Shutdown);
        }
    }

    /// A new session for an `initialize`, handed to the application.
    /// `shared`: the one process of the per-request era, which many
    /// clients' requests reach.
    async fn create(
        self: &Arc<Self>,
        mut info: RequestInfo,
        shared: bool,
    ) -> Result<Arc<Session>, Refusal> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Refusal::unavailable("server is shutting down"));
        }
        // 128 random bits: the session id is the only credential a client has.
        let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        // The application's say first (serve -- COMMAND starts the process
        // here, within its cap and rate): a session it cannot serve gets a
        // 503 with the reason. Dropped unused, what it gave undoes itself.
        if let Some(admission) = &self.admission {
            let admitted = admission.admit(&id, &info).await.map_err(Refusal::unavailable)?;
            info.admitted = Handoff::new(admitted);
        }
        let mut map = self.lock();
        let max = self.settings.limits.max_clients;
        if map.len() >= max {
            return Err(Refusal::unavailable(format!("too many sessions (limit {max})")));
        }
        let permit = self
            .accept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|tx| tx.clone().try_reserve_owned());
        let permit = match permit {
            Some(Ok(p)) => p,
            Some(Err(_)) => {
                return Err(Refusal::unavailable(
                    "the application is not accepting new sessions (accept queue full)",
                ));
            }
            None => return Err(Refusal::unavailable("server is shutting down")),
        };
        let session = Arc::new_cyclic(|me| Session {
            me: me.clone(),
            id: id.clone(),
            info,
            sessions: Arc::downgrade(self),
            settings: self.settings,
            stats: self.stats.clone(),
            shared,
            state: Mutex::new(State::new(shared, self.settings.limits.replay_bytes)),
            room: Notify::new(),
            closed: Notify::new(),
            writing: Arc::default(),
        });
        map.insert(id, session.clone());
        drop(map);
        self.opened.fetch_add(1, Ordering::Relaxed);
        match shared {
            false => info!(session = %session.id, remote = %session.info.remote, "session opened"),
            true => info!(session = %session.id, "process for per-request requests started"),
        }
        permit.send(Connection::new(session.clone()));
        tokio::spawn(expire_idle(Arc::downgrade(&session), self.config.session_idle));
        Ok(session)
    }

    /// The process that serves per-request requests, started and probed
    /// with `server/discover` (the stdio binding's Backward Compatibility
    /// rule: a DiscoverResult or a recognized modern error means it speaks
    /// the era; any other answer, or none in time, means it does not).
    async fn per_request(
        self: &Arc<Self>,
        info: RequestInfo,
        requested: &str,
        wait: Duration,
    ) -> Result<PerRequest, Refusal> {
        let mut era = self.era.lock().await;
        match &*era {
            CommandEra::Sessions => return Ok(PerRequest::NotSpoken),
            CommandEra::PerRequest(s) if s.is_live() => return Ok(PerRequest::Shared(s.clone())),
            _ => {}
        }
        let session = self.create(info, true).await?;
        let probe = serde_json::json!({"jsonrpc":"2.0","id":PROBE_ID,"method":"server/discover",
            "params":{"_meta":{"io.modelcontextprotocol/protocolVersion":requested}}});
        let probe = Message::from_value(probe).map_err(bad_request)?;
        let stream = Session::next_stream(&mut session.lock(), usize::MAX)?;
        let (tx, rx) = oneshot::channel();
        session.start(stream, &probe, Target::Json(tx), None)?;
        session.push(probe.to_line(), wait).await?;
        let answer = tokio::time::timeout(wait, rx).await;
        let speaks = match &answer {
            Ok(Ok(json)) => Message::parse(json.as_bytes()).is_ok_and(|m| {
                m.value["result"]["supportedVersions"].is_array()
                    || m.value["error"]["code"].as_i64() == Some(codes::UNSUPPORTED_VERSION)
            }),
            _ => false,
        };
        if speaks {
            info!(session = %session.id, "COMMAND speaks the per-request era: it serves those requests");
            *era = CommandEra::PerRequest(session.clone());
            return Ok(PerRequest::Shared(session));
        }
        let said = match answer {
            Ok(Ok(json)) => escape_controls(&json).to_string(),
            _ => "no answer".to_string(),
        };
        info!(
            "COMMAND does not speak the per-request era (server/discover: {said}); such requests are told the session revisions"
        );
        session.end(CloseReason::Closed);
        *era = CommandEra::Sessions;
        Ok(PerRequest::NotSpoken)
    }

    fn remove(&self, session: &Session) {
        let mut map = self.lock();
        if map.get(&session.id).is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), session)) {
            map.remove(&session.id);
        }
    }
}

/// Ends `session` once it has had no request in flight and no stream for
/// `idle`: a client that left without `DELETE` does not keep its process.
async fn expire_idle(session: Weak<Session>, idle: Duration) {
    loop {
        let due = match session.upgrade() {
            Some(s) => s.idle_due(idle),
            None => return,
        };
        let Some(due) = due else { return };
        tokio::time::sleep_until(due).await;
        let Some(s) = session.upgrade() else { return };
        if s.idle_due(idle).is_some_and(|d| d <= Instant::now()) {
            info!(session = %s.id, "no request and no stream for {}: session ended", humantime::format_duration(idle));
            s.end(CloseReason::KeepAliveExpired);
            return;
        }
    }
}

/// Where a request's answer goes.
enum Target {
    /// Its stream's channel.
    Stream(ConnectionHandle),
    /// A POST waiting for one JSON answer.
    Json(oneshot::Sender<String>),
}

/// One session's state, behind its mutex.
struct State {
    inbox: Inbox,
    app_waker: Option<Waker>,
    router: Router,
    /// The client's own names of the requests a shared process knows by
    /// another, by stream.
    renamed: HashMap<u32, Renamed>,
    targets: HashMap<u32, Target>,
    next_stream: u32,
    /// The `GET` stream's channel, with a serial telling reopened ones
    /// apart.
    standalone: Option<(u64, ConnectionHandle)>,
    serials: u64,
    /// Messages tied to no request while no `GET` stream is open.
    backlog: VecDeque<Bytes>,
    backlog_bytes: usize,
    /// The backlog's overflow was logged: once until a `GET` stream opens
    /// (a server that keeps sending progress of a cancelled request would
    /// otherwise log a line per message).
    overflow_said: bool,
    /// Messages of the application that never reached the client.
    lost: u64,
    /// The revision the session negotiated (from the InitializeResult).
    version: String,
    init_id: Option<RequestId>,
    closed: Option<CloseInfo>,
    app_gone: bool,
    last_active: Instant,
    /// Each request stream's events, kept after its answer for a client
    /// whose cut came just before it (bounded like a channel's replay).
    answered: Answered,
}

impl State {
    fn new(shared: bool, replay_bytes: usize) -> Self {
        Self {
            inbox: Inbox::default(),
            app_waker: None,
            router: if shared { Router::shared() } else { Router::default() },
            renamed: HashMap::new(),
            targets: HashMap::new(),
            next_stream: 1,
            standalone: None,
            serials: 0,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            overflow_said: false,
            lost: 0,
            version: version::DEFAULT.to_owned(),
            init_id: None,
            closed: None,
            app_gone: false,
            last_active: Instant::now(),
            answered: Answered::new(replay_bytes),
        }
    }
}

/// One MCP session: the application side the server hands out, and the
/// routing of its messages to streams.
pub(crate) struct Session {
    me: Weak<Session>,
    id: Arc<str>,
    info: RequestInfo,
    sessions: Weak<Sessions>,
    /// The per-request era's shared process, not a client's session.
    shared: bool,
    settings: SessionSettings,
    stats: Arc<Counters>,
    state: Mutex<State>,
    /// Room was made in the inbox.
    room: Notify,
    closed: Notify,
    /// Its streams still being written.
    writing: Arc<Writing>,
}

/// How long `DELETE` waits for the session's streams to end before it
/// answers anyway (a stream whose client does not read ends by the write
/// timeout).
const DELETE_WAIT: Duration = Duration::from_secs(1);

/// A session's event streams still being written: each counts itself
/// until hyper drops its body, which it does once the stream's end is
/// written. `DELETE` answers after its streams ended, as the SDK's own
/// server does: a client that closes its transport once answered (the
/// TypeScript SDK) would otherwise abort streams whose end is still on the
/// way, and report an `AbortError` for each.
#[derive(Default)]
struct Writing {
    open: AtomicUsize,
    ended: Notify,
}

impl Writing {
    /// Until no stream of the session is being written.
    async fn ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// A stream's source, counted in its session's [`Writing`] while it lives.
struct Counted {
    source: Box<dyn super::store::StreamSource>,
    writing: Arc<Writing>,
}

impl Counted {
    fn new(source: Box<dyn super::store::StreamSource>, writing: &Arc<Writing>) -> Self {
        writing.open.fetch_add(1, Ordering::AcqRel);
        Counted { source, writing: writing.clone() }
    }
}

impl super::store::StreamSource for Counted {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<super::store::StreamItem> {
        self.source.poll_next(cx)
    }

    fn probe(&self) -> super::stream::DetachProbe {
        self.source.probe()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.writing.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.writing.ended.notify_waiters();
        }
    }
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, stream: u32) -> String {
        format!("{}/{stream}", self.id)
    }

    fn idle_due(&self, idle: Duration) -> Option<Instant> {
        let st = self.lock();
        if st.closed.is_some() {
            return None;
        }
        let busy = st.router.in_flight() > 0 || !st.targets.is_empty() || st.standalone.is_some();
        Some(if busy { Instant::now() + idle } else { st.last_active + idle })
    }

    /// Hands a client's message to the application, in arrival order;
    /// waits (up to `wait`) while the application is behind.
    async fn push(&self, line: String, wait: Duration) -> Result<(), Refusal> {
        let deadline = Instant::now() + wait;
        let limits = self.settings.limits;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut st = self.lock();
                if st.closed.is_some() {
                    return Err(session_gone());
                }
                if st.app_gone {
                    return Err(Refusal::unavailable(
                        "the application is not reading this session's messages",
                    ));
                }
                let idle = st.inbox.messages() == 0;
                let fits = st.inbox.messages() < limits.incoming_messages
                    && st.inbox.bytes() + line.len() <= limits.incoming_bytes;
                if idle || fits {
                    // Counted in the same step as decided: concurrent POSTs
                    // of other sessions never see the total below its value.
                    let total = limits.incoming_total;
                    if !hold_within(&self.stats.held, line.len(), total) {
                        return Err(Refusal::unavailable(format!(
                            "server busy: incoming messages held reached the limit of {total} bytes"
                        )));
                    }
                    st.last_active = Instant::now();
                    st.inbox.push(ConnectionEvent::Message(line));
                    let waker = st.app_waker.take();
                    drop(st);
                    Counters::add(&self.stats.messages_in, 1);
                    if let Some(w) = waker {
                        w.wake();
                    }
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(Refusal::app_behind(wait));
            }
        }
    }

    /// A number for a new stream, within the session's bound.
    fn next_stream(st: &mut State, max: usize) -> Result<u32, Refusal> {
        if st.targets.len() >= max {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests in flight in this session (limit {max})"),
            ));
        }
        let n = st.next_stream;
        st.next_stream = n.checked_add(1).ok_or_else(|| {
            Refusal::unavailable("this session has used up its stream numbers; start a new one")
        })?;
        Ok(n)
    }

    /// Registers request `msg`, answered on `stream` (whose channel is
    /// `target`; `renamed`: the client's names of a request renamed for a
    /// shared process), and primes the stream.
    fn start(
        &self,
        stream: u32,
        msg: &Message,
        target: Target,
        renamed: Option<Renamed>,
    ) -> Result<(), Refusal> {
        let mut st = self.lock();
        if st.closed.is_some() {
            return Err(session_gone());
        }
        st.router.start(stream, msg).map_err(bad_request)?;
        if let Some(r) = renamed {
            st.renamed.insert(stream, r);
        }
        if msg.is_initialize()
            && let Kind::Request { id, .. } = &msg.kind
        {
            st.init_id = Some(id.clone());
        }
        if let Target::Stream(h) = &target {
            st.answered.opened(stream, event_id::first_id(stream));
            if version::primes(&st.version) {
                // The client has an id to resume from before any answer.
                let priming = Bytes::from_static(mcp::PRIMING);
                if h.send_encoded(priming.clone()).is_ok() {
                    st.answered.sent(stream, &priming);
                }
            }
        }
        st.targets.insert(stream, target);
        st.last_active = Instant::now();
        Ok(())
    }

    /// Request `msg` will not be answered here after all (not handed to
    /// the application, or its JSON wait is over).
    fn abandon(&self, stream: u32, msg: &Message) {
        let mut st = self.lock();
        st.renamed.remove(&stream);
        st.answered.forget(stream);
        if let Kind::Request { id, .. } = &msg.kind {
            st.router.finish(id);
        }
        if let Some(Target::Stream(h)) = st.targets.remove(&stream) {
            h.close();
        }
    }

    /// The client cancelled request `id`: it gets no answer, and its
    /// stream ends when nothing else is pending on it.
    fn cancel(&self, id: &RequestId) {
        let mut st = self.lock();
        if let Some((stream, true)) = st.router.finish(id) {
            // A JSON answer's POST learns it from its dropped sender.
            if let Some(Target::Stream(h)) = st.targets.remove(&stream) {
                h.close_when_delivered();
            }
            st.answered.forget(stream);
        }
    }

    /// A new channel for the `GET` stream: what waited for it goes first.
    fn standalone_opened(&self, conn: Connection) {
        let mut st = self.lock();
        let handle = conn.handle();
        if st.closed.is_some() {
            handle.close();
            return;
        }
        st.serials += 1;
        let serial = st.serials;
        while let Some(data) = st.backlog.pop_front() {
            st.backlog_bytes -= data.len();
            if handle.send_encoded(data).is_err() {
                st.lost += 1;
            }
        }
        st.standalone = Some((serial, handle));
        st.overflow_said = false;
        st.last_active = Instant::now();
        drop(st);
        self.watch(STANDALONE, serial, conn);
    }

    /// Follows a stream's channel until it closes, then forgets it. A
    /// stream of the per-request era is not resumable: its cut is the
    /// cancellation of its request.
    fn watch(&self, stream: u32, serial: u64, mut conn: Connection) {
        let me = self.me.clone();
        let cut_cancels = self.shared;
        tokio::spawn(async move {
            while let Some(ev) = conn.recv().await {
                match ev {
                    ConnectionEvent::Closed(_) => break,
                    ConnectionEvent::Suspended if cut_cancels => conn.close(),
                    _ => {}
                }
            }
            if let Some(s) = me.upgrade() {
                s.stream_closed(stream, serial);
            }
        });
    }

    /// Stream `stream`'s channel closed. Requests still waiting on it can
    /// no longer be answered (the client did not resume within the
    /// keep-alive, or left): the application is told to stop them.
    fn stream_closed(&self, stream: u32, serial: u64) {
        let mut st = self.lock();
        st.last_active = Instant::now();
        if stream == STANDALONE {
            if st.standalone.as_ref().is_some_and(|(s, _)| *s == serial) {
                st.standalone = None;
            }
            return;
        }
        if matches!(st.targets.get(&stream), Some(Target::Stream(_))) {
            st.targets.remove(&stream);
        }
        st.renamed.remove(&stream);
        st.answered.forget(stream);
        let orphans = st.router.stream_gone(stream);
        if orphans.is_empty() || st.closed.is_some() {
            return;
        }
        for id in orphans {
            let request = escape_controls(id.as_json());
            match self.shared {
                // The per-request era's way to cancel.
                true => debug!(%request, "the client closed the request's stream: cancelled"),
                false => {
                    warn!(session = %self.id, %request, "the request's stream ended before its answer (not resumed in time): cancelled")
                }
            }
            let line = Message::cancel(&id, "the client's stream was lost");
            self.stats.held.fetch_add(line.len(), Ordering::Relaxed);
            st.inbox.push(ConnectionEvent::Message(line));
        }
        let waker = st.app_waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Queues a message tied to no request for the `GET` stream, or keeps
    /// it (bounded like replay, oldest dropped and counted) until one opens.
    fn to_standalone(&self, st: &mut State, data: Bytes) {
        if let Some((_, h)) = &st.standalone
            && h.send_encoded(data.clone()).is_ok()
        {
            return;
        }
        st.standalone = None;
        st.backlog_bytes += data.len();
        st.backlog.push_back(data);
        let limits = self.settings.limits;
        let mut dropped = 0;
        while st.backlog.len() > limits.replay_events || st.backlog_bytes > limits.replay_bytes {
            let Some(old) = st.backlog.pop_front() else { break };
            st.backlog_bytes -= old.len();
            dropped += 1;
        }
        if dropped > 0 {
            st.lost += dropped;
            if st.overflow_said {
                debug!(session = %self.id, dropped, lost = st.lost, "no GET stream open: dropped");
            } else {
                st.overflow_said = true;
                warn!(session = %self.id, lost = st.lost, "no GET stream open: messages tied to no request dropped (oldest first) past the replay bounds; said once until a GET stream opens, counted in the session's undelivered messages");
            }
        }
    }

    /// Ends the session: its streams, its application side (told `Closed`),
    /// its place in the map.
    fn end(&self, reason: CloseReason) {
        let mut st = self.lock();
        if st.closed.is_some() {
            return;
        }
        let info = CloseInfo { reason, undelivered: st.lost + st.backlog.len() as u64 };
        st.closed = Some(info);
        let targets: Vec<Target> = st.targets.drain().map(|(_, t)| t).collect();
        let standalone = st.standalone.take();
        st.backlog.clear();
        st.backlog_bytes = 0;
        st.inbox.push(ConnectionEvent::Closed(info));
        let waker = st.app_waker.take();
        drop(st);
        for t in targets {
            if let Target::Stream(h) = t {
                h.close();
            }
        }
        if let Some((_, h)) = standalone {
            h.close();
        }
        if let Some(s) = self.sessions.upgrade() {
            s.remove(self);
        }
        self.room.notify_waiters();
        self.closed.notify_waiters();
        if let Some(w) = waker {
            w.wake();
        }
        if info.undelivered > 0 {
            warn!(session = %self.id, undelivered = info.undelivered, "session closed ({reason}) with undelivered messages");
        } else {
            info!(session = %self.id, "session closed ({reason})");
        }
    }
}

fn session_gone() -> Refusal {
    Refusal::new(StatusCode::NOT_FOUND, "session not found (ended, or never opened)")
}

impl ChannelApp for Session {
    fn id(&self) -> &str {
        &self.id
    }

    fn info(&self) -> &RequestInfo {
        &self.info
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        let mut st = self.lock();
        let (ev, room) = st.inbox.recv();
        match ev {
            Some(ev) => {
                // Under the lock that took it, as every change to the total.
                if let ConnectionEvent::Message(m) = &ev {
                    self.stats.held.fetch_sub(m.len(), Ordering::Relaxed);
                }
                drop(st);
                if room {
                    self.room.notify_waiters();
                }
                Poll::Ready(Some(ev))
            }
            None if st.inbox.is_done() => Poll::Ready(None),
            None => {
                super::wait::register(&mut st.app_waker, cx);
                Poll::Pending
            }
        }
    }

    /// A package:sse-encoded message (a broadcast's): decoded, then sent.
    fn send_encoded(&self, data: Bytes) -> Result<(), SendError> {
        let body = data.strip_prefix(b"data: ").unwrap_or(&data);
        let body = body.strip_suffix(b"\n\n").unwrap_or(body);
        match crate::protocol::event::decode_message_body(body) {
            Ok(text) => self.send_text(&text),
            Err(_) => Err(SendError::Closed),
        }
    }

    /// One line of the application: a JSON-RPC message, routed to its
    /// stream.
    fn send_text(&self, line: &str) -> Result<(), SendError> {
        let mut msg = match Message::parse(line.as_bytes()) {
            Ok(m) => m,
            Err(e) => {
                warn!(session = %self.id, "the application wrote a line that is not an MCP message ({e}); not sent");
                return Ok(());
            }
        };
        let mut st = self.lock();
        if st.closed.is_some() {
            return Err(SendError::Closed);
        }
        let route = st.router.route(&msg);
        if let (Kind::Response { id }, Some(init)) = (&msg.kind, &st.init_id)
            && id == init
        {
            if let Some(v) = msg.result_protocol_version() {
                st.version = v.to_owned();
            }
            st.init_id = None;
        }
        if let Route::Stream { stream, last } = route
            && let Some(renamed) = st.renamed.get(&stream)
        {
            msg.restore(renamed);
            if last {
                st.renamed.remove(&stream);
            }
        }
        // Counted as sent by the stream's channel.
        let json = msg.to_line();
        match route {
            Route::Stream { stream, last } => match st.targets.get(&stream) {
                Some(Target::Stream(h)) => {
                    let data = mcp::encode_event(&json);
                    let sent = h.send_encoded(data.clone());
                    if last {
                        h.close_when_delivered();
                        st.targets.remove(&stream);
                    }
                    if sent.is_ok() {
                        st.answered.sent(stream, &data);
                    }
                    if last {
                        st.answered.answered(stream);
                    }
                    if sent.is_err() {
                        st.lost += 1;
                    }
                }
                Some(Target::Json(_)) if last => {
                    if let Some(Target::Json(tx)) = st.targets.remove(&stream)
                        && tx.send(json).is_err()
                    {
                        st.lost += 1;
                    }
                }
                // A JSON answer holds the response alone: what comes before
                // it goes where messages tied to no request go.
                Some(Target::Json(_)) => self.to_standalone(&mut st, mcp::encode_event(&json)),
                None => {
                    st.lost += 1;
                    debug!(session = %self.id, stream, "a message for a stream already gone; not sent");
                }
            },
            Route::Standalone => self.to_standalone(&mut st, mcp::encode_event(&json)),
            Route::Nowhere => {
                st.lost += 1;
                warn!(session = %self.id, "a response to no request in flight (cancelled, or its stream is gone); not sent");
            }
        }
        Ok(())
    }

    fn close(&self) {
        self.end(CloseReason::Closed);
    }

    /// Ends every stream of the session without its answers (a test of the
    /// client's resume: `{"client":ID,"drop":true}` on `serve`'s stdin).
    fn drop_stream(&self) {
        let st = self.lock();
        for t in st.targets.values() {
            if let Target::Stream(h) = t {
                h.drop_stream();
            }
        }
        if let Some((_, h)) = &st.standalone {
            h.drop_stream();
        }
    }

    fn is_live(&self) -> bool {
        self.lock().closed.is_none()
    }

    /// Nobody reads the session's messages any more: it ends.
    fn app_gone(&self) {
        {
            let mut st = self.lock();
            st.app_gone = true;
            let mut freed = 0;
            while let (Some(ev), _) = st.inbox.recv() {
                if let ConnectionEvent::Message(m) = ev {
                    freed += m.len();
                }
            }
            self.stats.held.fetch_sub(freed, Ordering::Relaxed);
        }
        self.end(CloseReason::Closed);
    }

    fn closed(&self) -> super::store::StoreFuture<'_, ()> {
        Box::pin(async move {
            super::wait::until(&self.closed, None, || self.lock().closed.is_some()).await;
        })
    }
}

// --- HTTP ---------------------------------------------------------------------

/// An MCP refusal: its status, and a JSON-RPC error without id as body.
pub(crate) fn refusal(r: &Refusal, cors: Option<&HeaderValue>) -> Response<ResponseBody> {
    let code = match r.status {
        StatusCode::NOT_FOUND => codes::SESSION_NOT_FOUND,
        _ => codes::SERVER_ERROR,
    };
    json_response(r.status, mcp::error_body(code, &r.reason, None), cors)
}

fn json_response(
    status: StatusCode,
    body: String,
    cors: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let mut r = text(status, body, cors);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Routes a request of the MCP endpoint.
pub(crate) async fn route(
    shared: &Arc<ServerShared>,
    ctx: &ConnCtx,
    req: Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let Some(sessions) = shared.mcp.clone() else {
        return Err(Refusal::unavailable("MCP is not configured"));
    };
    let mut resp = match *req.method() {
        Method::POST => post(shared, &sessions, ctx, req, cors).await?,
        Method::GET => get(shared, &sessions, ctx, &req, cors).await?,
        Method::DELETE => delete(&sessions, &req, cors).await?,
        Method::OPTIONS => preflight(&req, cors),
        _ => {
            return Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
        }
    };
    if cors.is_some() {
        // A page may read the session id it is given.
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("mcp-session-id"),
        );
    }
    Ok(resp)
}

/// The session a request names; 400 without one, 404 for an unknown or
/// ended one, 400 for a revision no session speaks.
fn session_of(sessions: &Sessions, headers: &HeaderMap) -> Result<Arc<Session>, Refusal> {
    let Some(id) = header_text(headers, &SESSION_ID) else {
        return Err(bad_request(
            "Mcp-Session-Id header is required (POST initialize without it to open a session)",
        ));
    };
    check_version(headers)?;
    if !mcp::valid_session_id(id, MAX_SESSION_ID) {
        return Err(bad_request("Mcp-Session-Id must be visible ASCII, at most 128 bytes"));
    }
    sessions.get(id).ok_or_else(session_gone)
}

fn check_version(headers: &HeaderMap) -> Result<(), Refusal> {
    match headers.get(&PROTOCOL_VERSION) {
        None => Ok(()),
        Some(v) => match v.to_str() {
            Ok(v) if version::session_accepts(v) => Ok(()),
            _ => Err(bad_request(format!(
                "unsupported MCP-Protocol-Version {:?} (supported: {})",
                escape_controls(&String::from_utf8_lossy(v.as_bytes())),
                version::SESSION_ERA.join(", ")
            ))),
        },
    }
}

async fn post(
    shared: &Arc<ServerShared>,
    sessions: &Arc<Sessions>,
    ctx: &ConnCtx,
    req: Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let (limits, timeout) = (shared.config.limits, shared.config.request_timeout);
    let headers = req.headers();
    if !mcp::is_json_content_type(header_text(headers, &header::CONTENT_TYPE)) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        )
        .body_unread());
    }
    let Some(format) = mcp::answer_format(header_text(headers, &header::ACCEPT)) else {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            "Accept must include text/event-stream or application/json",
        )
        .body_unread());
    };
    check_declared_length(headers, limits.max_message_bytes)?;
    let (parts, body) = req.into_parts();
    let host = request_host(&parts.headers, &parts.uri);
    let body = read_body(body, limits.max_message_bytes, timeout).await?;
    let msg = Message::parse(&body).map_err(|e| bad_request(format!("{e}")))?;
    let headers = &parts.headers;
    let opened = !headers.contains_key(&SESSION_ID);
    let session = if !opened {
        if msg.is_initialize() {
            return Err(bad_request(
                "initialize opens a new session: send it without Mcp-Session-Id",
            ));
        }
        session_of(sessions, headers)?
    } else {
        match version::opening(header_text(headers, &PROTOCOL_VERSION), &msg) {
            version::Opening::Initialize => {
                let path = parts.uri.path();
                let info = request_info(ctx, headers, host, path, parts.uri.query());
                sessions.create(info, false).await?
            }
            version::Opening::PerRequest(v) => {
                let id = match &msg.kind {
                    Kind::Request { id, .. } => Some(id.to_value()),
                    _ => None,
                };
                let path = parts.uri.path();
                let info = request_info(ctx, headers, host, path, parts.uri.query());
                match sessions.per_request(info, &v, timeout).await? {
                    PerRequest::Shared(session) => {
                        let mirrored = version::Mirrored {
                            protocol_version: header_text(headers, &PROTOCOL_VERSION),
                            method: header_text(headers, &MCP_METHOD),
                            name: header_text(headers, &MCP_NAME),
                        };
                        if let Err(why) = version::check_mirrored(mirrored, &msg) {
                            shared.stats.refused(StatusCode::BAD_REQUEST);
                            let body = version::header_mismatch(id, &why);
                            return Ok(json_response(StatusCode::BAD_REQUEST, body, cors));
                        }
                        return per_request(shared, &session, msg, format, cors).await;
                    }
                    PerRequest::NotSpoken => {
                        shared.stats.refused(StatusCode::BAD_REQUEST);
                        info!(remote = %ctx.remote, "a request of revision {} (no sessions): told the revisions served", escape_controls(&v));
                        return Ok(json_response(
                            StatusCode::BAD_REQUEST,
                            version::unsupported(id, &v),
                            cors,
                        ));
                    }
                }
            }
            version::Opening::NoSession => {
                return Err(bad_request(
                    "Mcp-Session-Id header is required (POST initialize without it to open a session)",
                ));
            }
        }
    };
    let answer = match &msg.kind {
        Kind::Request { .. } => answer(shared, &session, msg, format, cors).await,
        Kind::Notification { .. } | Kind::Response { .. } => {
            if let Some(id) = msg.cancelled_request() {
                session.cancel(&id);
            }
            session.push(msg.to_line(), timeout).await?;
            let mut r = text(StatusCode::ACCEPTED, String::new(), cors);
            r.headers_mut().remove(header::CONTENT_TYPE);
            Ok(r)
        }
    };
    let mut resp = match answer {
        Ok(r) => r,
        Err(r) => {
            if opened {
                // Its initialize never reached the application.
                session.end(CloseReason::Closed);
            }
            return Err(r);
        }
    };
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        resp.headers_mut().insert(SESSION_ID, v);
    }
    Ok(resp)
}

/// A request (or notification) of the per-request era, through the
/// shared process: no session header, nothing resumable.
async fn per_request(
    shared: &Arc<ServerShared>,
    session: &Arc<Session>,
    msg: Message,
    format: AnswerFormat,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    if msg.is_request() {
        return answer(shared, session, msg, format, cors).await;
    }
    session.push(msg.to_line(), shared.config.request_timeout).await?;
    let mut r = text(StatusCode::ACCEPTED, String::new(), cors);
    r.headers_mut().remove(header::CONTENT_TYPE);
    Ok(r)
}

/// Hands request `msg` to the application and answers the POST: a stream
/// that carries what relates to it and ends after its response, or (when
/// the client accepts only JSON) the response alone.
async fn answer(
    shared: &Arc<ServerShared>,
    session: &Arc<Session>,
    mut msg: Message,
    format: AnswerFormat,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let timeout = shared.config.request_timeout;
    let stream = Session::next_stream(&mut session.lock(), session.settings.max_streams)?;
    // A shared process knows each client's request by a name of its own,
    // so that two clients' ids (and progress tokens) never meet.
    let renamed = session.shared.then(|| msg.rename(&format!("ssechan-{stream}")));
    match format {
        AnswerFormat::Stream => {
            let (tx, rx) = oneshot::channel();
            let create = NewChannel { first_event_id: event_id::first_id(stream), app: tx };
            let source = shared
                .store
                .open_stream(StreamRequest {
                    client_id: session.key(stream),
                    last_event_id: None,
                    info: session.info.clone(),
                    layer: Some(LayerOpen { create: Some(create) }),
                })
                .await?;
            let conn = rx.await.map_err(|_| Refusal::unavailable("stream not opened"))?;
            let handle = conn.handle();
            if let Err(r) = session.start(stream, &msg, Target::Stream(handle.clone()), renamed) {
                handle.close();
                return Err(r);
            }
            session.watch(stream, 0, conn);
            if let Err(r) = session.push(msg.to_line(), timeout).await {
                session.abandon(stream, &msg);
                return Err(r);
            }
            Ok(stream_response(shared, session, source, cors))
        }
        AnswerFormat::Json => {
            let (tx, rx) = oneshot::channel();
            session.start(stream, &msg, Target::Json(tx), renamed)?;
            if let Err(r) = session.push(msg.to_line(), timeout).await {
                session.abandon(stream, &msg);
                return Err(r);
            }
            let wait = match &shared.config.protocol {
                super::config::Protocol::Mcp(m) => m.json_wait,
                super::config::Protocol::Sse => timeout,
            };
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(json)) => Ok(json_response(StatusCode::OK, json, cors)),
                Ok(Err(_)) if session.is_live() => Err(Refusal::new(
                    StatusCode::CONFLICT,
                    "the request was cancelled (notifications/cancelled) before its response",
                )),
                Ok(Err(_)) => Err(session_gone()),
                Err(_) => {
                    session.abandon(stream, &msg);
                    Err(Refusal::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "no response within {} (ask for text/event-stream to wait longer and resume)",
                            humantime::format_duration(wait)
                        ),
                    ))
                }
            }
        }
    }
}

fn stream_response(
    shared: &ServerShared,
    session: &Session,
    source: Box<dyn super::store::StreamSource>,
    cors: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let body = EventStreamBody::new(
        Box::new(Counted::new(source, &session.writing)),
        retry_event(shared.config.retry.as_millis() as u64),
        shared.config.heartbeat,
    )
    .closing_with(b"");
    // Not tied to the connection's detach guard: an MCP stream ends after
    // its answer and its connection carries the client's next request,
    // whose writes the stale guard would fail. The write timeout bounds a
    // stuck write.
    let mut r = Response::new(Either::Right(Either::Left(body)));
    *r.headers_mut() = stream_headers(cors);
    r
}

/// `GET`: the session's standalone stream (opened, resumed or taken
/// over), or, with a `Last-Event-ID` of a request's stream, that stream
/// resumed: replayed after the id, then live, from that stream only.
async fn get(
    shared: &Arc<ServerShared>,
    sessions: &Sessions,
    ctx: &ConnCtx,
    req: &Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let headers = req.headers();
    if !mcp::accepts_stream(header_text(headers, &header::ACCEPT)) {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            "Accept must include text/event-stream",
        ));
    }
    let session = session_of(sessions, headers)?;
    let last = match header_text(headers, &LAST_EVENT_ID) {
        None => None,
        Some(text) => Some(event_id::parse(text).ok_or_else(|| {
            bad_request(format!(
                "Last-Event-ID {:?} is not an event id of this server",
                escape_controls(text)
            ))
        })?),
    };
    let host = request_host(req.headers(), req.uri());
    let info = request_info(ctx, headers, host, req.uri().path(), req.uri().query());
    let (stream, last_event_id) = match last {
        Some((id, stream)) => (stream, Some(id)),
        None => (STANDALONE, None),
    };
    let (tx, rx) = oneshot::channel();
    // A request's stream is only resumed; the GET stream may open.
    let create = (stream == STANDALONE)
        .then(|| NewChannel { first_event_id: event_id::first_id(STANDALONE), app: tx });
    let opened = shared
        .store
        .open_stream(StreamRequest {
            client_id: session.key(stream),
            last_event_id,
            info,
            layer: Some(LayerOpen { create }),
        })
        .await;
    let source = match opened {
        Ok(source) => source,
        Err(r) if r.status == StatusCode::NOT_FOUND => {
            // Answered and closed: what followed the id, if still kept.
            let kept = last_event_id.and_then(|id| session.lock().answered.after(stream, id));
            let Some(tail) = kept else {
                return Err(bad_request(format!(
                    "stream {stream} of this session has ended (answered, or not resumed within the keep-alive): nothing to resume"
                )));
            };
            debug!(session = %session.id, stream, "an answered stream resumed from what was kept");
            let mut resp = Response::new(Either::Left(http_body_util::Full::new(tail)));
            *resp.headers_mut() = stream_headers(cors);
            if let Ok(v) = HeaderValue::from_str(&session.id) {
                resp.headers_mut().insert(SESSION_ID, v);
            }
            return Ok(resp);
        }
        Err(r) => return Err(r),
    };
    if let Ok(conn) = rx.await {
        session.standalone_opened(conn);
    }
    session.lock().last_active = Instant::now();
    let mut resp = stream_response(shared, &session, source, cors);
    if let Ok(v) = HeaderValue::from_str(&session.id) {
        resp.headers_mut().insert(SESSION_ID, v);
    }
    Ok(resp)
}

/// `DELETE`: the client ends its session (and so its process), answered
/// once the session's streams have ended ([`Writing`]).
async fn delete(
    sessions: &Sessions,
    req: &Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let session = session_of(sessions, req.headers())?;
    session.end(CloseReason::ClosedByClient);
    if tokio::time::timeout(DELETE_WAIT, session.writing.ended()).await.is_err() {
        debug!(session = %session.id, "DELETE answered with a stream still being written");
    }
    let mut r = text(StatusCode::NO_CONTENT, String::new(), cors);
    r.headers_mut().remove(header::CONTENT_TYPE);
    Ok(r)
}
