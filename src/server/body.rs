//! The `text/event-stream` response body of one attached stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use super::connection::{Conn, StreamItem};
use crate::protocol::event::HEARTBEAT;

/// Pulls batches from the connection's queue; writes a heartbeat comment
/// when idle. Dropping it (client gone, write failed) tells the connection.
pub(crate) struct EventStreamBody {
    conn: Arc<Conn>,
    generation: u64,
    prelude: Option<Bytes>,
    heartbeat: Option<Heartbeat>,
    ended: bool,
}

struct Heartbeat {
    every: Duration,
    last_write: Instant,
    timer: Pin<Box<Sleep>>,
}

impl EventStreamBody {
    pub(crate) fn new(
        conn: Arc<Conn>,
        generation: u64,
        prelude: Bytes,
        heartbeat: Option<Duration>,
    ) -> Self {
        let heartbeat = heartbeat.map(|every| Heartbeat {
            every,
            last_write: Instant::now(),
            timer: Box::pin(tokio::time::sleep(every)),
        });
        Self { conn, generation, prelude: Some(prelude), heartbeat, ended: false }
    }

    /// Whether the last frame (the control close) has been handed out.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// See [`Conn::poll_detached`].
    pub(crate) fn poll_detached(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.conn.poll_detached(self.generation, cx)
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
        match this.conn.poll_stream(this.generation, cx) {
            Poll::Ready(StreamItem::Data(b)) => {
                this.wrote();
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            Poll::Ready(StreamItem::Final(b)) => {
                this.ended = true;
                return Poll::Ready(Some(Ok(Frame::data(b))));
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

impl Drop for EventStreamBody {
    fn drop(&mut self) {
        self.conn.stream_ended(self.generation);
    }
}
