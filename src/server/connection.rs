//! One client id's channel: the outgoing queue and replay log, the incoming
//! re-order buffer, and the keep-alive state. It outlives any one HTTP
//! stream; the handlers, the stream body and the application share it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::sync::{Notify, Semaphore, TryAcquireError, mpsc};
use tracing::{debug, info, warn};

use super::{Counters, Limits, ServerShared, StreamRequest};
use crate::protocol::event::{self, CONTROL_CLOSE, ID_LINE_MAX};
use crate::protocol::reorder::{Offer, ReorderBuffer, ReorderLimits};

/// Largest frame the stream body hands to hyper at once: big enough to
/// batch a burst into few writes, small enough not to stall other streams.
const MAX_FRAME: usize = 256 * 1024;

/// What the application learns about a connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A message from the client, in `messageId` order, exactly once.
    Message(String),
    /// The stream was lost; the keep-alive period is running.
    Suspended,
    /// The client came back within the keep-alive period.
    Resumed,
    /// The connection is gone; nothing more will arrive.
    Closed(CloseInfo),
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseInfo {
    pub reason: CloseReason,
    /// Messages sent by the application that never reached the stream.
    pub undelivered: usize,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it (control close sent).
    Closed,
    /// The stream ended and keep-alive is off.
    StreamEnded,
    /// The keep-alive period ran out without a resume.
    KeepAliveExpired,
    /// The client read too slowly and its outgoing queue filled up.
    SlowConsumer,
    /// The server shut down.
    Shutdown,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::Closed => "closed by server",
            CloseReason::StreamEnded => "stream ended",
            CloseReason::KeepAliveExpired => "keep-alive expired",
            CloseReason::SlowConsumer => "slow consumer: outgoing queue full",
            CloseReason::Shutdown => "server shutdown",
        })
    }
}

/// Why a message could not be queued.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    #[error("connection is closed")]
    Closed,
    #[error("outgoing queue full: slow consumer disconnected")]
    SlowConsumer,
}

/// Why a POSTed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliverError {
    TooFarAhead { next: u64, window: u64 },
    BufferFull { bytes: usize },
    Closed,
}

/// What attaching a new stream did, besides attaching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// The connection was suspended and is back.
    Resumed,
    /// The old stream was still open and has been ended.
    TookOver,
}

/// What the stream body should write next.
pub(crate) enum StreamItem {
    Data(Bytes),
    /// The control close event: the last frame of this stream.
    Final(Bytes),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Stream lost, keep-alive running; `epoch` tells stale timers apart.
    Suspended {
        epoch: u64,
    },
    /// Closing with a control event still to write.
    Closing,
    Closed,
}

struct Outbound {
    phase: Phase,
    /// The id the next queued event gets; ids start at 1.
    next_event_id: u64,
    queue: VecDeque<(u64, Bytes)>,
    queue_bytes: usize,
    replay: VecDeque<(u64, Bytes)>,
    replay_bytes: usize,
    /// Generation of the attached stream, if one is attached.
    attached: Option<u64>,
    generations: u64,
    suspensions: u64,
    waker: Option<Waker>,
}

impl Outbound {
    /// Makes the next send, close or detach wake the stream's task.
    fn register(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

/// The shared state of one connection.
pub(crate) struct Conn {
    pub(crate) id: Arc<str>,
    pub(crate) remote: SocketAddr,
    server: Weak<ServerShared>,
    limits: Limits,
    keep_alive: Option<Duration>,
    stats: Arc<Counters>,
    out: Mutex<Outbound>,
    /// `None` once retired: the state moved to the server's memory of
    /// closed ids, and POSTs get 404 (a client then retries elsewhere).
    inbound: Mutex<Option<ReorderBuffer<String>>>,
    /// Free places in the application's incoming queue.
    incoming_room: Semaphore,
    /// Messages handed to the application beyond the permits taken for them
    /// (one POST can release many buffered successors); paid back first.
    incoming_debt: AtomicUsize,
    /// A new client id, not one remembered from a closed connection, whose
    /// first-message wait has not been started yet.
    first_wait_pending: AtomicBool,
    first_message_wait: Duration,
    events: mpsc::UnboundedSender<ConnectionEvent>,
    /// Woken once the `Closed` event has been sent.
    closed: Notify,
}

impl Conn {
    pub(crate) fn new(
        id: Arc<str>,
        request: StreamRequest,
        server: &Arc<ServerShared>,
        inbound: Option<ReorderBuffer<String>>,
    ) -> (Arc<Conn>, Connection) {
        let limits = server.config.limits;
        let (tx, rx) = mpsc::unbounded_channel();
        let fresh = inbound.is_none();
        let conn = Arc::new(Conn {
            id,
            remote: request.remote,
            server: Arc::downgrade(server),
            limits,
            keep_alive: server.config.keep_alive,
            stats: server.stats.clone(),
            out: Mutex::new(Outbound {
                phase: Phase::Open,
                next_event_id: 1,
                queue: VecDeque::new(),
                queue_bytes: 0,
                replay: VecDeque::new(),
                replay_bytes: 0,
                attached: None,
                generations: 0,
                suspensions: 0,
                waker: None,
            }),
            inbound: Mutex::new(Some(inbound.unwrap_or_else(|| {
                ReorderBuffer::new(
                    0,
                    ReorderLimits {
                        window: limits.reorder_window,
                        max_bytes: limits.reorder_bytes,
                    },
                )
            }))),
            incoming_room: Semaphore::new(limits.incoming_messages.max(1)),
            incoming_debt: AtomicUsize::new(0),
            first_wait_pending: AtomicBool::new(fresh),
            first_message_wait: server.config.first_message_wait,
            events: tx,
            closed: Notify::new(),
        });
        let app =
            Connection { conn: conn.clone(), events: rx, done: false, request: Box::new(request) };
        (conn, app)
    }

    fn lock(&self) -> MutexGuard<'_, Outbound> {
        // A panic while holding this lock leaves plain data behind: go on.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_inbound(&self) -> MutexGuard<'_, Option<ReorderBuffer<String>>> {
        self.inbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_live(&self) -> bool {
        matches!(self.lock().phase, Phase::Open | Phase::Suspended { .. })
    }

    /// Attaches a new stream and returns its generation; `None` if the
    /// connection is already closing.
    /// With `last_event_id`, events after it still in the replay log go out
    /// again first.
    pub(crate) fn attach(&self, last_event_id: Option<u64>) -> Option<u64> {
        let mut out = self.lock();
        let kind = match out.phase {
            Phase::Closing | Phase::Closed => return None,
            Phase::Suspended { .. } => Some(Attach::Resumed),
            Phase::Open if out.attached.is_some() => Some(Attach::TookOver),
            Phase::Open => None,
        };
        if let Some(w) = out.waker.take() {
            w.wake();
        }
        out.generations += 1;
        let generation = out.generations;
        out.attached = Some(generation);
        out.phase = Phase::Open;
        if let (Some(last), Some(_)) = (last_event_id, kind) {
            self.requeue_after(&mut out, last);
        }
        drop(out);
        match kind {
            Some(Attach::Resumed) => {
                info!(client = %self.id, remote = %self.remote, "resumed");
                let _ = self.events.send(ConnectionEvent::Resumed);
            }
            Some(Attach::TookOver) => {
                info!(client = %self.id, remote = %self.remote, "stream taken over by a new request")
            }
            None => {}
        }
        Some(generation)
    }

    /// Moves replayable events with id > `last` back to the front of the queue.
    fn requeue_after(&self, out: &mut Outbound, last: u64) {
        let sent_up_to = out.queue.front().map_or(out.next_event_id, |(id, _)| *id) - 1;
        if last >= sent_up_to {
            if last > sent_up_to {
                warn!(client = %self.id, last, sent_up_to, "Last-Event-ID is ahead of what was sent; ignored");
            }
            return;
        }
        let oldest = out.replay.front().map_or(sent_up_to + 1, |(id, _)| *id);
        if last + 1 < oldest {
            warn!(
                client = %self.id,
                lost = oldest - last - 1,
                "resume from Last-Event-ID {last} is older than the replay buffer: events {}..{} are lost",
                last + 1,
                oldest - 1
            );
        }
        while let Some((id, _)) = out.replay.back() {
            if *id <= last {
                break;
            }
            if let Some((id, data)) = out.replay.pop_back() {
                out.replay_bytes -= data.len();
                out.queue_bytes += data.len();
                out.queue.push_front((id, data));
            }
        }
    }

    /// Called by the stream body: the next bytes to write, batched.
    pub(crate) fn poll_stream(&self, generation: u64, cx: &mut Context<'_>) -> Poll<StreamItem> {
        let mut out = self.lock();
        if out.attached != Some(generation) {
            return Poll::Ready(StreamItem::End);
        }
        if !out.queue.is_empty() {
            return Poll::Ready(StreamItem::Data(self.drain_batch(&mut out)));
        }
        if out.phase == Phase::Closing {
            out.attached = None;
            let info = self.finish(&mut out, CloseReason::Closed);
            drop(out);
            self.report_closed(info);
            return Poll::Ready(StreamItem::Final(Bytes::from_static(CONTROL_CLOSE)));
        }
        out.register(cx);
        Poll::Pending
    }

    /// Ready once this stream is no longer the attached one (taken over,
    /// dropped, closed): a writer blocked on a slow socket stops then.
    pub(crate) fn poll_detached(&self, generation: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut out = self.lock();
        if out.attached != Some(generation) {
            return Poll::Ready(());
        }
        out.register(cx);
        Poll::Pending
    }

    fn drain_batch(&self, out: &mut Outbound) -> Bytes {
        let limits = self.limits;
        let want = out.queue_bytes + out.queue.len() * ID_LINE_MAX;
        let mut buf = BytesMut::with_capacity(want.min(MAX_FRAME));
        let mut batched = 0u64;
        while let Some((_, data)) = out.queue.front() {
            if !buf.is_empty() && buf.len() + data.len() + ID_LINE_MAX > MAX_FRAME {
                break;
            }
            let Some((id, data)) = out.queue.pop_front() else { break };
            event::put_id_line(&mut buf, id);
            buf.extend_from_slice(&data);
            out.queue_bytes -= data.len();
            out.replay_bytes += data.len();
            out.replay.push_back((id, data));
            batched += 1;
        }
        self.stats.frames.fetch_add(1, Ordering::Relaxed);
        self.stats.events.fetch_add(batched, Ordering::Relaxed);
        while out.replay.len() > limits.replay_events || out.replay_bytes > limits.replay_bytes {
            match out.replay.pop_front() {
                Some((_, d)) => out.replay_bytes -= d.len(),
                None => break,
            }
        }
        buf.freeze()
    }

    /// Called when a stream body goes away (client gone, write failed,
    /// taken over, or ended by us).
    pub(crate) fn stream_ended(self: &Arc<Self>, generation: u64) {
        let mut out = self.lock();
        if out.attached != Some(generation) {
            return;
        }
        out.attached = None;
        out.waker = None;
        self.lose_stream(out);
    }

    /// The attached stream is gone: suspend under keep-alive, else close.
    fn lose_stream(self: &Arc<Self>, mut out: MutexGuard<'_, Outbound>) {
        let keep_alive = self.keep_alive;
        match (out.phase, keep_alive) {
            (Phase::Open, Some(period)) => {
                out.suspensions += 1;
                let epoch = out.suspensions;
                out.phase = Phase::Suspended { epoch };
                drop(out);
                info!(client = %self.id, "stream lost; keep-alive {}", humantime::format_duration(period));
                let _ = self.events.send(ConnectionEvent::Suspended);
                let conn = self.clone();
                let timer = async move {
                    tokio::time::sleep(period).await;
                    conn.expire(epoch);
                };
                match self.server.upgrade() {
                    Some(server) => drop(server.runtime.spawn(timer)),
                    None => self.close_now(CloseReason::Shutdown),
                }
            }
            (Phase::Open, None) => {
                let info = self.finish(&mut out, CloseReason::StreamEnded);
                drop(out);
                self.report_closed(info);
            }
            (Phase::Closing, _) => {
                let info = self.finish(&mut out, CloseReason::Closed);
                drop(out);
                self.report_closed(info);
            }
            _ => {}
        }
    }

    fn expire(&self, epoch: u64) {
        let mut out = self.lock();
        if out.phase != (Phase::Suspended { epoch }) {
            return;
        }
        let info = self.finish(&mut out, CloseReason::KeepAliveExpired);
        drop(out);
        self.report_closed(info);
    }

    /// Queues an encoded `data:` tail (see [`event::encode_data`]).
    pub(crate) fn send_encoded(&self, data: Bytes) -> Result<(), SendError> {
        let limits = self.limits;
        let mut out = self.lock();
        match out.phase {
            Phase::Closing | Phase::Closed => return Err(SendError::Closed),
            Phase::Open | Phase::Suspended { .. } => {}
        }
        if out.queue.len() >= limits.outgoing_messages
            || out.queue_bytes + data.len() > limits.outgoing_bytes
        {
            warn!(
                client = %self.id,
                queued = out.queue.len(),
                queued_bytes = out.queue_bytes,
                "slow consumer: outgoing queue full, disconnecting"
            );
            out.attached = None;
            let waker = out.waker.take();
            let mut info = self.finish(&mut out, CloseReason::SlowConsumer);
            info.undelivered += 1;
            drop(out);
            if let Some(w) = waker {
                w.wake();
            }
            self.report_closed(info);
            return Err(SendError::SlowConsumer);
        }
        let id = out.next_event_id;
        out.next_event_id += 1;
        out.queue_bytes += data.len();
        out.queue.push_back((id, data));
        let waker = out.waker.take();
        drop(out);
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Control close: flush the queue, send the close event, end the stream.
    pub(crate) fn close(self: &Arc<Self>, reason: CloseReason) {
        let mut out = self.lock();
        match out.phase {
            Phase::Open if out.attached.is_some() => {
                out.phase = Phase::Closing;
                let waker = out.waker.take();
                drop(out);
                // Gone from the registry at once: a new GET starts afresh.
                self.retire();
                if let Some(w) = waker {
                    w.wake();
                }
                if reason != CloseReason::Closed {
                    info!(client = %self.id, "closing: {reason}");
                }
            }
            Phase::Open | Phase::Suspended { .. } => {
                let info = self.finish(&mut out, reason);
                drop(out);
                self.report_closed(info);
            }
            Phase::Closing | Phase::Closed => {}
        }
    }

    /// Closes without the control event, whatever the state.
    fn close_now(&self, reason: CloseReason) {
        let mut out = self.lock();
        if out.phase == Phase::Closed {
            return;
        }
        out.attached = None;
        let waker = out.waker.take();
        let info = self.finish(&mut out, reason);
        drop(out);
        if let Some(w) = waker {
            w.wake();
        }
        self.report_closed(info);
    }

    /// Ends the stream without the control event: the client reconnects
    /// and, with keep-alive, resumes.
    pub(crate) fn drop_stream(self: &Arc<Self>) {
        let mut out = self.lock();
        if out.phase != Phase::Open || out.attached.is_none() {
            return;
        }
        out.attached = None;
        if let Some(w) = out.waker.take() {
            w.wake();
        }
        info!(client = %self.id, "stream dropped by server");
        self.lose_stream(out);
    }

    /// Marks the connection closed; returns what to report. Call
    /// [`Self::report_closed`] after releasing the lock.
    fn finish(&self, out: &mut Outbound, reason: CloseReason) -> CloseInfo {
        out.phase = Phase::Closed;
        let undelivered = out.queue.len();
        out.queue.clear();
        out.queue_bytes = 0;
        out.replay.clear();
        out.replay_bytes = 0;
        CloseInfo { reason, undelivered }
    }

    fn report_closed(&self, info: CloseInfo) {
        self.retire();
        if info.undelivered > 0 {
            warn!(client = %self.id, undelivered = info.undelivered, "closed ({}) with undelivered messages", info.reason);
        } else {
            info!(client = %self.id, "closed ({})", info.reason);
        }
        let _ = self.events.send(ConnectionEvent::Closed(info));
        self.closed.notify_waiters();
    }

    /// Stops taking POSTs and hands the re-order state (next id and any
    /// acknowledged out-of-order messages) to the server's memory of closed
    /// ids, so a client that comes back loses nothing. Idempotent.
    fn retire(&self) {
        let Some(state) = self.lock_inbound().take() else { return };
        self.incoming_room.close();
        if let Some(server) = self.server.upgrade() {
            server.retire(self, state);
        }
    }

    /// Hands a POSTed message to the re-order buffer and, in order, to the
    /// application. Waits while the application's queue is full.
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        message_id: u64,
        message: String,
    ) -> Result<Offer, DeliverError> {
        // Backpressure: wait for room in the application's queue first.
        let permit = match self.incoming_room.try_acquire() {
            Ok(p) => p,
            Err(TryAcquireError::Closed) => return Err(DeliverError::Closed),
            Err(TryAcquireError::NoPermits) => {
                debug!(client = %self.id, message_id, "application queue full; POST waits");
                self.incoming_room.acquire().await.map_err(|_| DeliverError::Closed)?
            }
        };
        let mut guard = self.lock_inbound();
        let inbound = guard.as_mut().ok_or(DeliverError::Closed)?;
        let offer = inbound.offer(message_id, message);
        match offer {
            Offer::Ready => {
                // Sent under the lock: retiring takes it too, so no message
                // can follow the Closed event.
                let mut released = 0usize;
                while let Some(m) = inbound.pop_ready() {
                    let _ = self.events.send(ConnectionEvent::Message(m));
                    released += 1;
                }
                permit.forget();
                if released > 1 {
                    self.incoming_debt.fetch_add(released - 1, Ordering::Relaxed);
                }
                self.first_wait_pending.store(false, Ordering::Relaxed);
                Ok(offer)
            }
            Offer::Buffered if self.first_wait_pending.swap(false, Ordering::Relaxed) => {
                let conn = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(conn.first_message_wait).await;
                    conn.skip_first_gap();
                });
                Ok(offer)
            }
            Offer::Buffered | Offer::Duplicate => Ok(offer),
            Offer::TooFarAhead => Err(DeliverError::TooFarAhead {
                next: inbound.next_id(),
                window: self.limits.reorder_window,
            }),
            Offer::BufferFull => Err(DeliverError::BufferFull { bytes: inbound.buffered_bytes() }),
        }
    }
}

impl Conn {
    /// The first-message wait ran out: if nothing was delivered yet, start
    /// from the first message there is (see `ServerConfig::first_message_wait`).
    fn skip_first_gap(&self) {
        let mut guard = self.lock_inbound();
        let Some(inbound) = guard.as_mut() else { return };
        if inbound.next_id() != 0 {
            return; // messageId 0 came after all
        }
        let Some(start) = inbound.skip_gap() else { return };
        warn!(
            client = %self.id,
            "messages 0..{start} never arrived in {:?} (a client that outlived a server restart?); starting from messageId {start}",
            self.first_message_wait
        );
        let mut released = 0;
        while let Some(m) = inbound.pop_ready() {
            let _ = self.events.send(ConnectionEvent::Message(m));
            released += 1;
        }
        self.incoming_debt.fetch_add(released, Ordering::Relaxed);
    }
}

/// The application's side of one connection, handed out by
/// [`crate::server::Server::accept`].
pub struct Connection {
    conn: Arc<Conn>,
    events: mpsc::UnboundedReceiver<ConnectionEvent>,
    done: bool,
    request: Box<StreamRequest>,
}

impl Connection {
    /// The client id (`sseClientId`).
    pub fn id(&self) -> &str {
        &self.conn.id
    }

    /// The peer address of the stream that opened the connection.
    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote
    }

    /// The request that opened the connection.
    pub fn request(&self) -> &StreamRequest {
        &self.request
    }

    /// A cloneable handle for sending from elsewhere.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle { conn: self.conn.clone() }
    }

    /// The next event; `None` after [`ConnectionEvent::Closed`].
    pub async fn recv(&mut self) -> Option<ConnectionEvent> {
        if self.done {
            return None;
        }
        let ev = self.events.recv().await?;
        match &ev {
            ConnectionEvent::Message(_) => {
                let debt = &self.conn.incoming_debt;
                if debt
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
                    .is_err()
                {
                    self.conn.incoming_room.add_permits(1);
                }
            }
            ConnectionEvent::Closed(_) => self.done = true,
            _ => {}
        }
        Some(ev)
    }

    /// The next message, skipping lifecycle events; `None` once closed.
    pub async fn recv_message(&mut self) -> Option<String> {
        loop {
            if let ConnectionEvent::Message(m) = self.recv().await? {
                return Some(m);
            }
        }
    }

    /// See [`ConnectionHandle::send`].
    pub fn send(&self, message: &str) -> Result<(), SendError> {
        self.conn.send_encoded(event::encode_data(message))
    }

    /// See [`ConnectionHandle::close`].
    pub fn close(&self) {
        self.conn.close(CloseReason::Closed)
    }

    /// See [`ConnectionHandle::drop_stream`].
    pub fn drop_stream(&self) {
        self.conn.drop_stream()
    }
}

/// Sends to, closes or drops one connection; cheap to clone.
#[derive(Clone)]
pub struct ConnectionHandle {
    pub(crate) conn: Arc<Conn>,
}

impl ConnectionHandle {
    /// The client id.
    pub fn id(&self) -> &str {
        &self.conn.id
    }

    /// Queues a message for the client, in order. While the connection is
    /// suspended the message waits for the resume.
    pub fn send(&self, message: &str) -> Result<(), SendError> {
        self.conn.send_encoded(event::encode_data(message))
    }

    /// Sends the control close event and closes the connection for good.
    pub fn close(&self) {
        self.conn.close(CloseReason::Closed)
    }

    /// Ends the current stream without the control event (a test of the
    /// client's resume).
    pub fn drop_stream(&self) {
        self.conn.drop_stream()
    }

    /// Whether the connection is still open or suspended.
    pub fn is_live(&self) -> bool {
        self.conn.is_live()
    }

    /// Resolves once the connection is closed (its
    /// [`ConnectionEvent::Closed`] follows at once), e.g. to stop waiting
    /// on a process that does not read while the client is gone.
    pub async fn closed(&self) {
        loop {
            let notified = self.conn.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.conn.lock().phase == Phase::Closed {
                return;
            }
            notified.await;
        }
    }
}
