//! Streams served without hyper.
//!
//! An HTTP/1.1 connection in hyper keeps two 8 KiB buffers for its whole
//! life; for tens of thousands of long-lived, write-only event streams that
//! is most of the memory. So each new connection's first request head is
//! read here: a valid channel `GET` is answered here with a close-delimited
//! `text/event-stream` written from the channel's queue; anything else
//! (POSTs, refusals, h2c, other paths) goes to hyper with the bytes already
//! read put back in front. Both paths share the decisions
//! ([`super::http::start_stream`]) and the stream policy ([`super::stream`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::debug;

use super::ServerShared;
use super::http::{ConnCtx, Decided, StreamAsk, StreamStart, admit, start_stream};
use super::linger;
use super::stream::{DetachProbe, EventStreamBody, GuardedIo, close_delimited_head};
use crate::web::devconsole;

/// Longest request head read here; a longer one goes to hyper, which
/// answers it properly.
const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed at most; more go to hyper.
const MAX_HEADERS: usize = 64;
/// Time the control close event may take to go out.
const FINAL_WRITE: Duration = Duration::from_secs(2);

/// What became of a new connection (`IO`: TCP, or TLS over it).
pub(crate) enum Routed<IO> {
    /// A stream to write here with [`DirectStream`].
    Stream(IO, StreamStart),
    /// For hyper: the socket with the bytes read so far, and the answer to
    /// its first request when it was decided here (a refused stream: its
    /// checks, admission and store are not run a second time).
    Hyper(Rewind<IO>, Option<Decided>),
}

/// Reads the first request head; a stream it opens is for the caller to
/// write ([`DirectStream`]), anything else for hyper.
pub(crate) async fn route<IO: AsyncRead + Unpin>(
    mut io: IO,
    ctx: &ConnCtx,
    shared: &Arc<ServerShared>,
) -> Option<Routed<IO>> {
    let mut head = Vec::with_capacity(1024);
    let read =
        tokio::time::timeout(shared.config.request_timeout, read_head(&mut io, &mut head)).await;
    let complete = match read {
        Err(_) | Ok(Err(_)) => return None,
        Ok(Ok(0)) => return None, // closed before sending anything
        Ok(Ok(len)) => len,
    };
    // Only package:sse's streams are written here (MCP's go through hyper).
    let sse = matches!(shared.config.protocol, super::config::Protocol::Sse);
    let asked = match parse_stream_request(&head[..complete], &shared.config.path) {
        Some((headers, query)) if sse && complete == head.len() => {
            // A browser navigating here gets the console page from hyper.
            let console = shared.config.devconsole && devconsole::wants_console(&headers);
            (!console).then_some((headers, query))
        }
        _ => None,
    };
    let decided = match asked {
        Some((headers, query)) => decide(shared, ctx, &headers, query.as_deref()).await,
        None => Err(None),
    };
    match decided {
        Ok(start) => Some(Routed::Stream(io, start)),
        Err(decided) => Some(Routed::Hyper(Rewind { pre: Bytes::from(head), inner: io }, decided)),
    }
}

/// The one pass of a channel `GET`'s checks: the stream to write, or its
/// refusal for hyper to send.
async fn decide(
    shared: &Arc<ServerShared>,
    ctx: &ConnCtx,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<StreamStart, Option<Decided>> {
    let path = &shared.config.path;
    let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok());
    let cors = admit(shared, ctx, headers, host, path)
        .map_err(|refusal| Some(Decided { refusal, cors: None }))?;
    let ask = StreamAsk { headers, host, path, query, cors: cors.as_ref() };
    match start_stream(shared, ctx, ask).await {
        Ok(start) => Ok(start),
        Err(refusal) => Err(Some(Decided { refusal, cors })),
    }
}

/// Reads until the end of the first head (as httparse sees it: `\r\n\r\n`
/// or bare `\n\n`), EOF, or [`MAX_HEAD`]. Returns the head's length, or the
/// bytes read when there is no complete head (then everything goes to
/// hyper, which answers at once).
async fn read_head<IO: AsyncRead + Unpin>(io: &mut IO, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(MAX_HEAD - buf.len()).max(1));
        }
        let n = io.read_buf(buf).await?;
        if n == 0 {
            return Ok(buf.len());
        }
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Request::new(&mut raw).parse(buf) {
            Ok(httparse::Status::Complete(len)) => return Ok(len),
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {}
            // TLS, garbage (or the h2c preface): hyper answers it at once.
            Err(_) => return Ok(buf.len()),
        }
        if buf.len() >= MAX_HEAD {
            return Ok(buf.len());
        }
    }
}

/// The headers and query of `head` if it is a plain HTTP/1.x `GET` of
/// `path` with no body and nothing after it; `None` sends the connection to
/// hyper.
fn parse_stream_request(head: &[u8], path: &str) -> Option<(HeaderMap, Option<String>)> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(n)) if n == head.len()) {
        return None; // incomplete, or pipelined bytes follow
    }
    if req.method != Some("GET") {
        return None;
    }
    let (req_path, query) = match req.path?.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (req.path?, None),
    };
    if req_path != path {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let has = |name: &str| headers.contains_key(name);
    if has("upgrade") || has("content-length") || has("transfer-encoding") || has("expect") {
        return None;
    }
    Some((headers, query))
}

/// One stream written on its connection until it ends (closed, dropped,
/// taken over) or the client goes away, which reading tells at once.
///
/// A future of its own, spawned as the connection's task once the stream
/// is open: every idle stream keeps it for its whole life, so it holds only
/// the socket, the body and the bytes being written (the routing that led
/// here, and the rare ends, live elsewhere). `H` lives as long as the
/// connection (its count), dropped after the socket.
pub(crate) struct DirectStream<IO, H> {
    state: State<IO>,
    _held: H,
}

enum State<IO> {
    Writing(Writer<IO>),
    /// The control close's last write and the lingering close, boxed:
    /// only a stream's end pays for them.
    Ending(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

struct Writer<IO> {
    io: GuardedIo<IO, DetachProbe>,
    body: EventStreamBody,
    /// What is being written (the response head first), from where the
    /// write is.
    pending: Bytes,
    /// Written since the last flush (TLS holds bytes until flushed).
    unflushed: bool,
}

/// How a stream's writing ended.
enum End {
    /// A write failed: the connection is dropped at once.
    Failed,
    /// The client left (or sent its end of stream).
    Gone,
    /// The body ended with nothing more to send.
    Over,
    /// The control close, to write past the guard (the stream is already
    /// detached).
    Final(Bytes),
}

impl<IO, H> DirectStream<IO, H>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    pub(crate) fn new(io: IO, start: StreamStart, write_timeout: Duration, held: H) -> Self {
        let StreamStart { body, headers } = start;
        // The head is written first; the headers are not kept.
        let pending = Bytes::from(close_delimited_head(&headers));
        let io = GuardedIo::new(io, write_timeout, body.probe());
        let writer = Writer { io, body, pending, unflushed: false };
        Self { state: State::Writing(writer), _held: held }
    }
}

impl<IO, H: Unpin> Future for DirectStream<IO, H>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Writing(w) => {
                    let end = ready!(w.poll_write_stream(cx));
                    let State::Writing(w) = std::mem::replace(&mut self.state, State::Done) else {
                        unreachable!("the state was Writing")
                    };
                    if matches!(end, End::Failed) {
                        return Poll::Ready(());
                    }
                    self.state = State::Ending(Box::pin(finish(w, end)));
                }
                State::Ending(f) => {
                    ready!(f.as_mut().poll(cx));
                    self.state = State::Done;
                    debug!("direct stream ended");
                    return Poll::Ready(());
                }
                State::Done => return Poll::Ready(()),
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Writer<IO> {
    /// Writes what the body yields; `Ready` once the stream ends.
    fn poll_write_stream(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        // Nothing is expected from the client: what it sends is discarded,
        // and its end of stream or an error ends the stream. (Reads and
        // writes share the runtime's budget: a flood yields.)
        let mut scratch = [0u8; 256];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                Poll::Ready(_) => return Poll::Ready(End::Gone),
                Poll::Pending => break,
            }
        }
        loop {
            // A write waiting for room goes on where it was.
            while !self.pending.is_empty() {
                match ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending)) {
                    Ok(0) | Err(_) => return Poll::Ready(End::Failed),
                    Ok(n) if n < self.pending.len() => self.pending.advance(n),
                    // Written: the buffer is let go now, not at the next
                    // event (an idle stream's may not come for hours).
                    Ok(_) => self.pending = Bytes::new(),
                }
                self.unflushed = true;
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if self.body.is_ended() {
                        return Poll::Ready(End::Final(data));
                    }
                    self.pending = data;
                }
                Poll::Ready(None) => return Poll::Ready(End::Over),
                Poll::Pending => {
                    if self.unflushed {
                        match Pin::new(&mut self.io).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.unflushed = false,
                            Poll::Ready(Err(_)) => return Poll::Ready(End::Failed),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The end of a stream that did not fail: the control close's write, then
/// a lingering close, so that what the client still sends does not reset
/// the connection under the end of the stream.
async fn finish<IO: AsyncRead + AsyncWrite + Unpin>(w: Writer<IO>, end: End) {
    let Writer { mut io, body, .. } = w;
    if let End::Final(mut data) = end {
        // Past the guard (it would fail at once), but not forever.
        let final_write = io.get_mut().write_all_buf(&mut data);
        let _ = tokio::time::timeout(FINAL_WRITE, final_write).await;
    }
    if io.shutdown().await.is_ok() {
        linger::discard(&mut io, linger::budget(0), linger::LINGER_TIME).await;
    }
    drop(body);
}

/// A socket with bytes already read put back in front, for hyper.
pub(crate) struct Rewind<IO> {
    pre: Bytes,
    inner: IO,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
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
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
