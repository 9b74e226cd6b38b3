//! The request-head deadline of a connection served by hyper, kept here
//! rather than by hyper. hyper's own (`header_read_timeout`) boxes a new
//! timer for every request, registers it with the runtime's timer wheel
//! while the connection waits for the next head and takes it out when the
//! head comes: an allocation, a clock read and two timer-wheel locks per
//! request, and an extra pass of its read loop. Here a connection keeps
//! one timer: requests in flight are counted, the end of the last one is
//! stamped, and the timer, when it fires (at most about once per timeout),
//! either cuts a connection that has waited a whole timeout for a head or
//! sleeps until the rest of it has passed.
//!
//! The rule is hyper's: from the end of one exchange (or the connection's
//! start) a complete head must arrive within the timeout. A connection
//! that turns out to be HTTP/2 is cut only if it makes no request at all
//! (its idle streams are kept by HTTP/2 pings, as before).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Shared by a connection's service (which counts requests) and its
/// deadline ([`HeadClock::cut`]).
pub(crate) struct HeadClock {
    start: Instant,
    /// Requests whose response is not yet fully handed to hyper.
    busy: AtomicUsize,
    /// When the last one ended, in µs since `start`.
    idle_since: AtomicU64,
    multiplexed: AtomicBool,
}

impl HeadClock {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
        })
    }

    /// A request's head has come; its exchange lasts as long as the
    /// returned guard (held by the response body).
    pub(crate) fn begin(self: &Arc<Self>, multiplexed: bool) -> InFlight {
        if multiplexed {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.busy.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves when the connection has waited `timeout` for a request
    /// head: the caller closes it then.
    pub(crate) async fn cut(&self, timeout: Duration) {
        let mut due = self.start + timeout;
        let sleep = tokio::time::sleep_until(due);
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().await;
            if self.multiplexed.load(Ordering::Relaxed) {
                return std::future::pending().await;
            }
            // `busy` first: an exchange stamps its end before it stops
            // counting, so a zero here comes with the latest stamp.
            let now = Instant::now();
            due = if self.busy.load(Ordering::Acquire) > 0 {
                now + timeout
            } else {
                let since = self.idle_since.load(Ordering::Acquire);
                self.start + Duration::from_micros(since) + timeout
            };
            if due <= now {
                return;
            }
            sleep.as_mut().reset(due);
        }
    }
}

/// One request in flight; see [`HeadClock::begin`].
pub(crate) struct InFlight(Arc<HeadClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let clock = &self.0;
        let since = clock.start.elapsed().as_micros() as u64;
        clock.idle_since.fetch_max(since, Ordering::AcqRel);
        clock.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that ends its exchange when hyper drops it (written,
/// or the connection gone).
pub(crate) struct Tracked<B> {
    body: B,
    _flight: InFlight,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, flight: InFlight) -> Self {
        Self { body, _flight: flight }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_cut_a_timeout_after_its_last_exchange_and_never_during_one() {
        let t = Duration::from_secs(10);
        let clock = HeadClock::new();
        let started = Instant::now();
        // No request at all: cut at start + timeout.
        clock.cut(t).await;
        assert_eq!(started.elapsed(), t);

        let clock = HeadClock::new();
        let cut = {
            let clock = clock.clone();
            tokio::spawn(async move {
                clock.cut(t).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(4)).await;
        let a = clock.begin(false);
        // In flight across the first deadline (10 s) and well past it.
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert!(!cut.is_finished());
        drop(a);
        let ended = Instant::now();
        let at = cut.await.unwrap();
        assert_eq!(at - ended, t, "cut a whole timeout after the exchange ended");
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_that_made_a_request_is_not_cut_for_idling() {
        let clock = HeadClock::new();
        drop(clock.begin(true));
        let cut =
            tokio::time::timeout(Duration::from_secs(3600), clock.cut(Duration::from_secs(1)));
        assert!(cut.await.is_err());
    }
}
