//! One stream policy for both stream paths (the direct writer and hyper):
//! the response headers, the body (prelude, batches, heartbeat, control
//! close), and the guard that ends a stream whose socket is stuck.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::store::{StreamItem, StreamSource};
use crate::protocol::event::{CONTROL_CLOSE, HEARTBEAT};

/// The headers of every event stream; `cors` is the allowed origin.
pub(crate) fn stream_headers(cors: Option<&HeaderValue>) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(6);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_cors(&mut h, cors);
    h
}

/// Adds the CORS pair for an allowed origin.
pub(crate) fn with_cors(headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

/// `headers` as a close-delimited HTTP/1.1 response head: the stream is
/// the last thing on its connection.
pub(crate) fn close_delimited_head(headers: &HeaderMap) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in headers {
        h.extend_from_slice(name.as_str().as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(value.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"connection: close\r\n\r\n");
    h
}

/// The `text/event-stream` body of one attached stream: the `retry:`
/// prelude, batches from the store, a heartbeat comment when idle, and
/// the control close as the last frame. Dropping it ends the stream.
pub(crate) struct EventStreamBody {
    source: Box<dyn StreamSource>,
    prelude: Option<Bytes>,
    heartbeat: Option<Heartbeat>,
    /// What a closing channel writes last (package:sse's control close);
    /// empty: the stream just ends.
    close_frame: &'static [u8],
    ended: bool,
}

struct Heartbeat {
    every: Duration,
    last_write: Instant,
    timer: Pin<Box<Sleep>>,
}

impl EventStreamBody {
    pub(crate) fn new(
        source: Box<dyn StreamSource>,
        prelude: Bytes,
        heartbeat: Option<Duration>,
    ) -> Self {
        let heartbeat = heartbeat.map(|every| Heartbeat {
            every,
            last_write: Instant::now(),
            timer: Box::pin(tokio::time::sleep(every)),
        });
        Self { source, prelude: Some(prelude), heartbeat, close_frame: CONTROL_CLOSE, ended: false }
    }

    /// A protocol whose streams end with `frame` instead of the control
    /// close (none: MCP's streams just end).
    pub(crate) fn closing_with(mut self, frame: &'static [u8]) -> Self {
        self.close_frame = frame;
        self
    }

    /// Whether the last frame (the control close) has been handed out.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// See [`StreamSource::probe`].
    pub(crate) fn probe(&self) -> DetachProbe {
        self.source.probe()
    }

    fn wrote(&mut self) {
        if let Some(hb) = &mut self.heartbeat {
            hb.last_write = Instant::now();
        }
    }
}

impl Body for EventStreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(p) = this.prelude.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        match this.source.poll_next(cx) {
            Poll::Ready(StreamItem::Data(b)) => {
                this.wrote();
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            Poll::Ready(StreamItem::Final) => {
                this.ended = true;
                if this.close_frame.is_empty() {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(this.close_frame)))));
            }
            Poll::Ready(StreamItem::End) => {
                this.ended = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        let Some(hb) = &mut this.heartbeat else { return Poll::Pending };
        // Re-arming only when the timer fires keeps writes free of timer work.
        while hb.timer.as_mut().poll(cx).is_ready() {
            let due = hb.last_write + hb.every;
            let now = Instant::now();
            if now >= due {
                hb.last_write = now;
                hb.timer.as_mut().reset(now + hb.every);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(HEARTBEAT)))));
            }
            hb.timer.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// Tells whether the stream on a connection has been detached; when not,
/// registers the task to be woken when it is.
pub(crate) type DetachProbe = Arc<dyn Fn(&mut Context<'_>) -> bool + Send + Sync>;

/// The stream (if any) whose detach should end a connection's stuck write.
#[derive(Default, Clone)]
pub(crate) struct GuardSlot(Arc<Mutex<Option<DetachProbe>>>);

impl GuardSlot {
    pub(crate) fn set(&self, probe: DetachProbe) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(probe);
    }

    /// A new request on an HTTP/1 connection: an earlier request's stream
    /// has ended and guards nothing (else the next answer's first full
    /// socket fails as "stream detached"). Not cleared when that stream's
    /// body ends: hyper may still be flushing it, and a detached stream's
    /// stuck flush must fail.
    pub(crate) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Tells a [`GuardedIo`] whether the stream it carries is detached (and
/// when not, registers the task to be woken when it is).
pub(crate) trait Detached {
    fn detached(&self, cx: &mut Context<'_>) -> bool;
}

/// A connection whose requests come and go (hyper's).
impl Detached for GuardSlot {
    fn detached(&self, cx: &mut Context<'_>) -> bool {
        let probe = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        probe.is_some_and(|p| p(cx))
    }
}

/// A connection that carries one stream for its life (a direct stream's:
/// no slot to allocate).
impl Detached for DetachProbe {
    fn detached(&self, cx: &mut Context<'_>) -> bool {
        self(cx)
    }
}

/// A socket whose writes cannot hang: a write that makes no progress for
/// `write_timeout` fails, and so does a blocked write once the stream it
/// carries has been detached (taken over, dropped, closed), so a peer that
/// stopped reading holds no descriptor for long. Used on every connection.
pub(crate) struct GuardedIo<T, G = GuardSlot> {
    inner: T,
    write_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    guard: G,
}

impl<T, G: Detached> GuardedIo<T, G> {
    pub(crate) fn new(inner: T, write_timeout: Duration, guard: G) -> Self {
        Self { inner, write_timeout, stalled: None, guard }
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// After a write returned `Pending`: an error if the write must stop.
    fn check_stalled(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.guard.detached(cx) {
            return Some(io::Error::new(io::ErrorKind::BrokenPipe, "stream detached"));
        }
        let timeout = self.write_timeout;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_ready() {
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no write progress for {timeout:?}"),
            ));
        }
        None
    }

    fn progress<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => match self.check_stalled(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<T: AsyncRead + Unpin, G: Unpin> AsyncRead for GuardedIo<T, G> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin, G: Detached + Unpin> AsyncWrite for GuardedIo<T, G> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(r, cx)
    }
}
