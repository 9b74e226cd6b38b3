//! What the application sees of a connection: its events, and the handles
//! to send, close and drop. Backed by whichever store holds the channel.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use thiserror::Error;

use super::policy::Admitted;
use crate::protocol::event;

/// What the application learns about a connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A message from the client, in `messageId` order, exactly once.
    Message(String),
    /// The stream was lost; the keep-alive period is running.
    Suspended,
    /// The client came back within the keep-alive period.
    Resumed,
    /// The client resumed from a `Last-Event-ID` older than the replay
    /// buffer reaches: `lost` events never reached it (they also count in
    /// the close's `undelivered`).
    Gap { lost: u64 },
    /// The connection is gone; nothing more will arrive.
    Closed(CloseInfo),
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseInfo {
    pub reason: CloseReason,
    /// Messages sent by the application that never reached the client:
    /// still queued at the close, or lost in a gap before a resume.
    pub undelivered: u64,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it (control close sent).
    Closed,
    /// The client said it is leaving (`DELETE`).
    ClosedByClient,
    /// The stream ended and keep-alive is off.
    StreamEnded,
    /// The keep-alive period ran out without a resume.
    KeepAliveExpired,
    /// The client read too slowly and its outgoing queue filled up.
    SlowConsumer,
    /// The server shut down (with several instances: or the instance
    /// holding the application died).
    Shutdown,
    /// The shared store (Redis) no longer has the channel: it lost its
    /// data, or this instance was cut off longer than its lease.
    StoreLost,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::Closed => "closed by server",
            CloseReason::ClosedByClient => "closed by client",
            CloseReason::StreamEnded => "stream ended",
            CloseReason::KeepAliveExpired => "keep-alive expired",
            CloseReason::SlowConsumer => "slow consumer: outgoing queue full",
            CloseReason::Shutdown => "server shutdown",
            CloseReason::StoreLost => "lost by the store",
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

/// Facts about the request that opened a connection, for the application
/// (a process per client gets them as CGI-style environment variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    pub remote: SocketAddr,
    /// The server's own address on that connection.
    pub local: SocketAddr,
    /// `Host` (or `:authority`), as sent.
    pub host: Option<String>,
    pub path: String,
    pub query: Option<String>,
    pub origin: Option<String>,
    pub user_agent: Option<String>,
    /// What the server's [`super::Admission`] gave this request, until the
    /// application takes it.
    pub(crate) admitted: Handoff,
}

/// An [`Admitted`] on its way to the application: clones share it, and it
/// is dropped (undoing itself) with the last of them if never taken.
#[derive(Clone, Default)]
pub(crate) struct Handoff(Option<Arc<Mutex<Option<Admitted>>>>);

impl Handoff {
    pub(crate) fn new(admitted: Admitted) -> Self {
        Self(Some(Arc::new(Mutex::new(Some(admitted)))))
    }

    fn take(&self) -> Option<Admitted> {
        let slot = self.0.as_ref()?;
        slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Not a fact of the request: every hand-off compares equal.
impl PartialEq for Handoff {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Handoff {}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Handoff(admitted)" } else { "Handoff(none)" })
    }
}

/// The application side of one channel, as a store provides it.
pub(crate) trait ChannelApp: Send + Sync {
    fn id(&self) -> &str;
    fn info(&self) -> &RequestInfo;
    /// The next event; `Ready(None)` once `Closed` has been taken.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>>;
    /// Queues an encoded `data:` tail (see [`event::encode_data`]).
    fn send_encoded(&self, data: Bytes) -> Result<(), SendError>;
    /// Queues one message of the application; its protocol encodes it
    /// (package:sse: a JSON string in one `data:` line).
    fn send_text(&self, message: &str) -> Result<(), SendError> {
        self.send_encoded(event::encode_data(message))
    }
    fn close(&self);
    /// Closes once what is queued has reached a stream (see
    /// [`super::channel::Channel::close_when_delivered`]).
    fn close_when_delivered(&self) {
        self.close()
    }
    fn drop_stream(&self);
    fn is_live(&self) -> bool;
    /// The [`Connection`] was dropped: nobody reads its messages any more.
    fn app_gone(&self);
    /// Resolves once the channel is closed.
    fn closed(&self) -> super::store::StoreFuture<'_, ()>;
}

/// The application's side of one connection, handed out by
/// [`crate::server::Server::accept`]. Dropping it tells the server that
/// nobody reads this client's messages: its POSTs are refused (503) from
/// then on, instead of being acknowledged and lost.
pub struct Connection {
    chan: Arc<dyn ChannelApp>,
}

impl Connection {
    pub(crate) fn new(chan: Arc<dyn ChannelApp>) -> Self {
        Self { chan }
    }

    /// The client id (`sseClientId`).
    pub fn id(&self) -> &str {
        self.chan.id()
    }

    /// The peer address of the stream that opened the connection.
    pub fn remote_addr(&self) -> SocketAddr {
        self.chan.info().remote
    }

    /// The request that opened the connection.
    pub fn request(&self) -> &RequestInfo {
        self.chan.info()
    }

    /// What the server's [`super::Admission`] gave this connection, once
    /// (`None` after the first call, or when there was no admission).
    pub fn take_admitted(&self) -> Option<Admitted> {
        self.chan.info().admitted.take()
    }

    /// A cloneable handle for sending from elsewhere.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle { chan: self.chan.clone() }
    }

    /// The next event; `None` after [`ConnectionEvent::Closed`].
    pub async fn recv(&mut self) -> Option<ConnectionEvent> {
        std::future::poll_fn(|cx| self.chan.poll_recv(cx)).await
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
        self.chan.send_text(message)
    }

    /// See [`ConnectionHandle::close`].
    pub fn close(&self) {
        self.chan.close()
    }

    /// See [`ConnectionHandle::drop_stream`].
    pub fn drop_stream(&self) {
        self.chan.drop_stream()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.chan.app_gone();
    }
}

/// Sends to, closes or drops one connection; cheap to clone.
#[derive(Clone)]
pub struct ConnectionHandle {
    pub(crate) chan: Arc<dyn ChannelApp>,
}

impl ConnectionHandle {
    /// The client id.
    pub fn id(&self) -> &str {
        self.chan.id()
    }

    /// Queues a message for the client, in order. While the connection is
    /// suspended the message waits for the resume.
    pub fn send(&self, message: &str) -> Result<(), SendError> {
        self.chan.send_text(message)
    }

    /// Queues a message already encoded by [`event::encode_data`] (a
    /// broadcast encodes once for every client).
    pub fn send_encoded(&self, data: Bytes) -> Result<(), SendError> {
        self.chan.send_encoded(data)
    }

    /// Sends the control close event and closes the connection for good.
    pub fn close(&self) {
        self.chan.close()
    }

    /// Ends the current stream without the control event (a test of the
    /// client's resume).
    pub fn drop_stream(&self) {
        self.chan.drop_stream()
    }

    /// See [`ChannelApp::close_when_delivered`].
    pub(crate) fn close_when_delivered(&self) {
        self.chan.close_when_delivered()
    }

    /// Whether the connection is still open or suspended.
    pub fn is_live(&self) -> bool {
        self.chan.is_live()
    }

    /// Resolves once the connection is closed (its
    /// [`ConnectionEvent::Closed`] is in the application's queue), e.g. to
    /// stop waiting on a process that does not read while the client is gone.
    pub async fn closed(&self) {
        self.chan.closed().await
    }
}
