//! The seam between the HTTP transport and channel state. Both stream paths
//! and every request handler talk to a [`ChannelStore`] and to nothing
//! else: open or attach a stream, reserve and deliver a POST, close for a
//! client, broadcast, look up, count, shut down. Operations may wait and may
//! fail, as a networked store's do: a failure is a [`Refusal`] (a status
//! and a one-line reason), never a panic and never a 200.
//!
//! [`super::memory::MemoryStore`] is the in-process implementation,
//! [`super::redis::RedisStore`] the one shared by several instances.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;

use super::app::{ConnectionHandle, RequestInfo};

pub(crate) type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A step of a POST ([`ChannelStore::reserve`], [`PostSlot::deliver`]): the
/// memory store decides both at once in the common case, and a boxed
/// future for each would be two of the allocations every POST makes; a
/// store that waits (for room, or on the network) boxes its future.
pub(crate) enum PostStep<'a, T> {
    Ready(Option<T>),
    Waits(StoreFuture<'a, T>),
}

impl<'a, T> PostStep<'a, T> {
    pub(crate) fn ready(value: T) -> Self {
        Self::Ready(Some(value))
    }

    pub(crate) fn waits(f: impl Future<Output = T> + Send + 'a) -> Self {
        Self::Waits(Box::pin(f))
    }
}

// Neither variant is pinned in place: the value is moved out, the boxed
// future is pinned in its box.
impl<T> Unpin for PostStep<'_, T> {}

impl<T> Future for PostStep<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Self::Ready(value) => {
                Poll::Ready(value.take().expect("PostStep polled after completion"))
            }
            Self::Waits(f) => f.as_mut().poll(cx),
        }
    }
}

/// Why a request was refused: its status and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub reason: String,
    /// The request's body was left unread: its HTTP/1 connection cannot
    /// carry another request, and the answer must say so.
    pub body_unread: bool,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self { status, reason: reason.into(), body_unread: false }
    }

    pub(crate) fn body_unread(mut self) -> Self {
        self.body_unread = true;
        self
    }

    /// 503: the store or the application cannot take it now.
    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, reason)
    }

    /// 503: the application has not made room for this client's messages.
    pub(crate) fn app_behind(waited: std::time::Duration) -> Self {
        Self::unavailable(format!(
            "the application has not taken this client's messages for {waited:?}"
        ))
    }

    pub(crate) fn unknown_client(client_id: &str) -> Self {
        let id = crate::text::escape_controls(client_id);
        Self::new(StatusCode::NOT_FOUND, format!("unknown client id {id:?}"))
    }
}

/// A channel `GET` that passed routing and policy.
pub(crate) struct StreamRequest {
    pub client_id: String,
    pub last_event_id: Option<u64>,
    pub info: RequestInfo,
    /// `None`: package:sse's rule (attach, or open a channel that the
    /// application accepts). A protocol layer ([`super::mcp`]) opens its
    /// channels itself: see [`LayerOpen`].
    pub layer: Option<LayerOpen>,
}

/// How a protocol layer opens a channel: attach to the live channel of the
/// id, or, when `create` is given and there is none, open one whose
/// application side goes to the layer instead of the accept queue.
pub(crate) struct LayerOpen {
    pub create: Option<NewChannel>,
}

/// A channel a protocol layer opens.
pub(crate) struct NewChannel {
    /// The id of its first event (a layer may encode in ids which stream
    /// they belong to).
    pub first_event_id: u64,
    /// Gets the channel's [`super::Connection`].
    pub app: tokio::sync::oneshot::Sender<super::Connection>,
}

/// What a stream writes next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StreamItem {
    Data(Bytes),
    /// The control close event: the last frame of this stream.
    Final,
    /// The stream is over (taken over, dropped, closed).
    End,
}

/// The events of one attached stream. Dropping it tells the store the
/// stream is gone (client left, write failed, or ended by us).
pub(crate) trait StreamSource: Send + 'static {
    /// The next batch of event bytes.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<StreamItem>;
    /// Whether this stream is no longer the attached one (taken over,
    /// dropped, closed), for a writer blocked on a stuck socket: it stops
    /// then, woken by the detach.
    fn probe(&self) -> super::stream::DetachProbe;
}

/// A POST that has room reserved for its message: the body may be read.
/// Dropping it without delivering gives the room back.
pub(crate) trait PostSlot: Send {
    /// Hands message `message_id` to the channel: re-ordered, deduplicated,
    /// delivered in order. `Ok` means stored: the POST may be answered 200.
    fn deliver(
        self: Box<Self>,
        message_id: u64,
        message: String,
    ) -> PostStep<'static, Result<(), Refusal>>;
}

/// How many channels there are, and what they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Channels open or suspended.
    pub channels: usize,
    /// Of those, suspended (keep-alive running).
    pub suspended: usize,
    /// Event streams attached to a channel.
    pub streams: usize,
    /// Bytes held for incoming messages (bounded by `incoming_total`).
    pub incoming_bytes: usize,
    /// Closed client ids remembered, and what they weigh (bounded by
    /// `closed_id_bytes`).
    pub remembered_ids: usize,
    pub remembered_bytes: usize,
}

/// See the module docs.
pub(crate) trait ChannelStore: Send + Sync + 'static {
    /// A `GET`: attach to the client's channel (resume, takeover) or open a
    /// new one, which the application then accepts.
    fn open_stream(
        &self,
        req: StreamRequest,
    ) -> StoreFuture<'_, Result<Box<dyn StreamSource>, Refusal>>;

    /// A POST's first step, before its body is read: is there such a
    /// client, and room for `bytes` more of its messages? Waits (bounded)
    /// while the application is behind.
    fn reserve<'a>(
        &'a self,
        client_id: &'a str,
        bytes: usize,
    ) -> PostStep<'a, Result<Box<dyn PostSlot>, Refusal>>;

    /// The client says it is leaving for good (`DELETE`).
    fn client_closed<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, Result<(), Refusal>>;

    /// Queues encoded messages, in order, for every channel; returns how
    /// many channels took them. A batch costs each channel one lock and one
    /// wake-up, not one per message.
    fn broadcast(&self, batch: Vec<Bytes>) -> StoreFuture<'_, usize>;

    /// The channel of `client_id`, if it is open or suspended here.
    fn lookup(&self, client_id: &str) -> Option<ConnectionHandle>;

    /// Whether a channel of `client_id` is open or suspended on any
    /// instance sharing the store: a `GET` for it resumes or takes over,
    /// so the server starts nothing for it (`serve -- COMMAND`'s process).
    /// A store that cannot tell says no: the channel's application then
    /// ends what was started for nothing.
    fn is_open<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, bool>;

    fn counts(&self) -> Counts;

    /// Lines the store adds to the Prometheus exposition (its own figures).
    fn metrics(&self) -> String {
        String::new()
    }

    /// Control-closes every channel, ignoring keep-alive; new streams are
    /// refused from now on.
    fn begin_shutdown(&self);

    /// Waits until every channel has closed (their streams flushed the
    /// close event) or `grace` has passed, then closes the rest at once,
    /// their queues counted undelivered.
    fn finish_shutdown(&self, grace: std::time::Duration) -> StoreFuture<'_, ()>;
}
