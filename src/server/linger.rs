//! The lingering close: how the server ends a connection whose peer may
//! still be sending.
//!
//! A server that answers before reading a request's body (a 413 from the
//! declared `Content-Length`, a refusal before the body was needed) and then
//! closes its socket with that body unread makes the kernel send a reset.
//! The client, still writing the body, fails with a broken pipe, and many
//! clients never read the answer waiting for them; some systems even drop
//! the received answer when the reset arrives. So the server shuts down its
//! write side after the answer (the client sees the end of the response),
//! then reads and discards what still comes, for a bounded time and byte
//! budget, and only then closes. A peer that never stops sending holds the
//! descriptor no longer than [`LINGER_TIME`] or its budget.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a closing connection reads and discards at most.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);
/// What a closing connection reads at most besides the largest message: a
/// refused body just over the limit, and its request's head, still gets
/// its answer read.
const LINGER_SLACK: usize = 64 << 10;

/// The byte budget of a lingering close when messages may be `max_message`
/// bytes.
pub(crate) fn budget(max_message: usize) -> usize {
    max_message.saturating_add(LINGER_SLACK)
}

/// Reads and discards from `r` until end of stream, an error, or `budget`
/// bytes; `Pending` while the peer is still sending within the budget.
fn poll_discard<R: AsyncRead + ?Sized>(
    mut r: Pin<&mut R>,
    cx: &mut Context<'_>,
    budget: &mut usize,
) -> Poll<()> {
    let mut scratch = [0u8; 8192];
    while *budget > 0 {
        let mut buf = ReadBuf::new(&mut scratch[..(*budget).min(8192)]);
        match ready!(r.as_mut().poll_read(cx, &mut buf)) {
            Ok(()) if !buf.filled().is_empty() => *budget -= buf.filled().len(),
            // End of stream, or the peer is gone.
            _ => return Poll::Ready(()),
        }
    }
    Poll::Ready(())
}

/// Reads and discards what `r`'s peer still sends, within `budget` bytes
/// and `within`; for a socket whose write side is already shut down.
pub(crate) async fn discard<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    mut budget: usize,
    within: Duration,
) {
    let read = std::future::poll_fn(|cx| poll_discard(Pin::new(&mut *r), cx, &mut budget));
    let _ = tokio::time::timeout(within, read).await;
}

/// A connection whose shutdown is a lingering close: `poll_shutdown` shuts
/// down the write side, then discards input until the peer's end of
/// stream, [`LINGER_TIME`] or the byte budget. For hyper, which shuts a
/// connection down when it is done with it (after an answer with
/// `Connection: close`, a refused request, a parse error).
pub(crate) struct Lingering<T> {
    inner: T,
    budget: usize,
    state: State,
}

enum State {
    Open,
    Discarding(Pin<Box<Sleep>>),
    Closed,
}

impl<T> Lingering<T> {
    pub(crate) fn new(inner: T, budget: usize) -> Self {
        Self { inner, budget, state: State::Open }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    let shut = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
                    if shut.is_err() {
                        // Nothing more reaches the peer: nothing to wait for.
                        this.state = State::Closed;
                        return Poll::Ready(shut);
                    }
                    this.state = State::Discarding(Box::pin(tokio::time::sleep(LINGER_TIME)));
                }
                State::Discarding(timer) => {
                    let time_up = timer.as_mut().poll(cx).is_ready();
                    let done = poll_discard(Pin::new(&mut this.inner), cx, &mut this.budget);
                    if !time_up && done.is_pending() {
                        return Poll::Pending;
                    }
                    this.state = State::Closed;
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_discards_until_the_peer_ends() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut l = Lingering::new(ours, 1 << 20);
        let peer = tokio::spawn(async move {
            // A body the server did not want, then the rest after its answer.
            theirs.write_all(&[7; 3000]).await.unwrap();
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap(); // our end of stream
            theirs.write_all(&[8; 5000]).await.unwrap();
            drop(theirs);
        });
        l.shutdown().await.unwrap();
        peer.await.unwrap();
        assert_eq!(l.budget, (1 << 20) - 8000);
    }

    #[tokio::test]
    async fn shutdown_stops_at_the_byte_budget() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut l = Lingering::new(ours, 10_000);
        let peer = tokio::spawn(async move {
            // Sends for ever: only the budget ends the close.
            while theirs.write_all(&[1; 512]).await.is_ok() {}
        });
        l.shutdown().await.unwrap();
        assert_eq!(l.budget, 0);
        drop(l);
        peer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_at_the_time_limit() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut l = Lingering::new(ours, 1 << 20);
        // The peer neither sends nor ends: only the time limit ends it.
        let started = tokio::time::Instant::now();
        l.shutdown().await.unwrap();
        assert_eq!(started.elapsed(), LINGER_TIME);
    }
}
