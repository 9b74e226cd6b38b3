//! The ceilings `scripts/perf.sh compare` measures ssechan against, and the
//! fan-out counter it reads streams with (`cargo build --release --example
//! ceiling`). A ceiling is what bare hyper does with the same requests on
//! the same machine in the same run, so a figure is a ratio that holds on a
//! noisy machine.
//!
//! ```text
//! ceiling post ADDR           HTTP/1.1 (and h2c) server: reads each request's
//!                             body, answers 200 with an empty body
//! ceiling fanout ADDR N       every GET is an endless text/event-stream of the
//!                             fan-out events, encoded per stream (its own ids,
//!                             the shared data line), as fast as hyper writes;
//!                             the first N requests are answered together once
//!                             all N have come (streams that started first
//!                             would otherwise starve the connects of the rest)
//! ceiling echo ADDR           the channel protocol's echo with nothing else:
//!                             a GET with `sseClientId=X` is X's stream, a
//!                             POST for X is answered 200 and its body written
//!                             to X's stream as an event at once (no re-order,
//!                             no replay, no keep-alive); what `ssechan bench`
//!                             measures against a server that does no more
//!                             than hyper, the kernel and the bench itself
//! ceiling count URL N SECS    N raw-socket streams of URL (`sseClientId=fI`
//!                             added), events counted for SECS once all are
//!                             open (said on stderr: `open N`); prints one
//!                             JSON line
//! ```
//!
//! Both servers print `listening on http://ADDR` on stderr once bound and
//! run on a multi-threaded runtime, as `ssechan serve` does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The data line of every fan-out event: what `yes` feeds `ssechan serve`
/// in the fan-out row (a 50-byte line), as the server encodes it.
const LINE: &str = "fan-out message .................................";
/// Events a fan-out stream body hands hyper at once.
const BATCH: usize = 256;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = || tokio::runtime::Builder::new_multi_thread().enable_all().build();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["post", addr] => runtime()?.block_on(serve(addr.parse()?, post)),
        ["fanout", addr, n] => {
            let gate: &'static Gate = Box::leak(Box::new(Gate {
                waiting: AtomicUsize::new(n.parse()?),
                open: tokio::sync::Notify::new(),
            }));
            runtime()?.block_on(serve(addr.parse()?, move |req| fanout(req, gate)))
        }
        ["echo", addr] => {
            let streams: &'static Streams = Box::leak(Box::default());
            runtime()?.block_on(serve(addr.parse()?, move |req| echo(req, streams)))
        }
        ["count", url, n, secs] => {
            // One thread: the counter's own cost stays at most one core.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(count(url, n.parse()?, Duration::from_secs_f64(secs.parse()?)))
        }
        _ => {
            anyhow::bail!("usage: ceiling post ADDR | fanout ADDR N | echo ADDR | count URL N SECS")
        }
    }
}

async fn serve<F, R>(addr: SocketAddr, handler: F) -> anyhow::Result<()>
where
    F: Fn(Request<Incoming>) -> R + Copy + Send + Sync + 'static,
    R: std::future::Future<Output = Result<Response<BoxBody>, Infallible>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(handler);
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

type BoxBody = http_body_util::Either<Full<Bytes>, http_body_util::Either<Events, Echoes>>;

fn full(status: u16) -> Response<BoxBody> {
    let mut r = Response::new(http_body_util::Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    r
}

fn event_stream(body: http_body_util::Either<Events, Echoes>) -> Response<BoxBody> {
    let mut r = Response::new(http_body_util::Either::Right(body));
    let h = r.headers_mut();
    h.insert("content-type", "text/event-stream".parse().expect("a header value"));
    h.insert("cache-control", "no-cache".parse().expect("a header value"));
    r
}

async fn post(req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let _ = req.into_body().collect().await;
    Ok(full(200))
}

/// Each client id's stream: where its echoes go.
type Streams = std::sync::Mutex<std::collections::HashMap<String, Echo>>;

/// One stream's sender and the id its next event gets.
struct Echo {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    next_id: u64,
}

/// Events a stream may have waiting: a reader this far behind gets 503s.
const ECHO_QUEUE: usize = 4096;
/// Client ids at once, and the largest POST body (as `serve`'s default).
const ECHO_STREAMS: usize = 65_536;
const ECHO_BODY: usize = 64 * 1024;

fn client_id(req: &Request<Incoming>) -> Option<String> {
    let q = req.uri().query()?;
    q.split('&').find_map(|kv| kv.strip_prefix("sseClientId=")).map(str::to_owned)
}

async fn echo(req: Request<Incoming>, streams: &Streams) -> Result<Response<BoxBody>, Infallible> {
    let Some(id) = client_id(&req) else { return Ok(full(400)) };
    let lock = || streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if req.method() == hyper::Method::GET {
        let mut streams = lock();
        if streams.len() >= ECHO_STREAMS {
            // Ids whose stream ended leave first; past that, refused.
            streams.retain(|_, e| !e.tx.is_closed());
            if streams.len() >= ECHO_STREAMS {
                return Ok(full(503));
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(ECHO_QUEUE);
        streams.insert(id, Echo { tx, next_id: 1 });
        return Ok(event_stream(http_body_util::Either::Right(Echoes(rx))));
    }
    let limited = http_body_util::Limited::new(req.into_body(), ECHO_BODY);
    let Ok(body) = limited.collect().await else { return Ok(full(413)) };
    let body = body.to_bytes();
    let mut streams = lock();
    let Some(stream) = streams.get_mut(&id) else { return Ok(full(404)) };
    let mut event = BytesMut::with_capacity(body.len() + 32);
    ssechan::protocol::event::put_id_line(&mut event, stream.next_id);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    Ok(match stream.tx.try_send(event.freeze()) {
        Ok(()) => {
            stream.next_id += 1;
            full(200)
        }
        Err(_) => full(503),
    })
}

/// A client's echoes, every event waiting taken into one frame.
struct Echoes(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Echoes {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let first = match self.0.poll_recv(cx) {
            Poll::Ready(Some(b)) => b,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let Ok(more) = self.0.try_recv() else { return Poll::Ready(Some(Ok(Frame::data(first)))) };
        let mut buf = BytesMut::from(&first[..]);
        buf.extend_from_slice(&more);
        while let Ok(b) = self.0.try_recv() {
            buf.extend_from_slice(&b);
        }
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }
}

/// The first N requests wait for each other.
struct Gate {
    waiting: AtomicUsize,
    open: tokio::sync::Notify,
}

async fn fanout(_req: Request<Incoming>, gate: &Gate) -> Result<Response<BoxBody>, Infallible> {
    let opened = gate.open.notified();
    tokio::pin!(opened);
    opened.as_mut().enable();
    match gate.waiting.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
        Ok(1) => gate.open.notify_waiters(),
        Ok(_) => opened.await,
        Err(_) => {}
    }
    let data = Bytes::from(format!("data: \"{LINE}\"\n\n"));
    Ok(event_stream(http_body_util::Either::Left(Events { next_id: 1, data })))
}

/// An endless event stream: [`BATCH`] events per frame, each its own
/// `id:` line and the shared data.
struct Events {
    next_id: u64,
    data: Bytes,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut buf = BytesMut::with_capacity(BATCH * (self.data.len() + 26));
        for _ in 0..BATCH {
            ssechan::protocol::event::put_id_line(&mut buf, self.next_id);
            buf.extend_from_slice(&self.data);
            self.next_id += 1;
        }
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
    }
}

/// Opens `n` streams of `url`, waits until every one has sent its head,
/// then counts events (`\n\n`) for `secs`.
async fn count(url: &str, n: usize, secs: Duration) -> anyhow::Result<()> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("http:// only"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
    let path = format!("/{}", path.trim_start_matches('/'));
    let sep = if path.contains('?') { '&' } else { '?' };
    let events = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..n {
        let req = format!(
            "GET {path}{sep}sseClientId=f{i} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\r\n"
        );
        let (authority, events, open, ended) =
            (authority.to_owned(), events.clone(), open.clone(), ended.clone());
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let r = read_stream(&authority, &req, &events, &open, permit).await;
            ended.fetch_add(1, Ordering::Relaxed);
            r
        }));
    }
    while open.load(Ordering::Relaxed) + ended.load(Ordering::Relaxed) < n {
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("only {} of {n} streams open after 60 s", open.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_s = started.elapsed().as_secs_f64();
    // For a script that must wait for the streams (scripts/perf_compare.sh).
    eprintln!("open {}", open.load(Ordering::Relaxed));
    let (e0, t0) = (events.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(secs).await;
    let (e1, took) = (events.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    let gone = ended.load(Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    println!(
        "{{\"streams\": {n}, \"ended_early\": {gone}, \"connect_s\": {connect_s:.2}, \"seconds\": {took:.3}, \"events\": {}, \"events_per_s\": {:.0}}}",
        e1 - e0,
        (e1 - e0) as f64 / took
    );
    Ok(())
}

async fn read_stream(
    authority: &str,
    req: &str,
    events: &AtomicU64,
    open: &AtomicUsize,
    permit: Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>,
) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(authority).await?;
    tcp.write_all(req.as_bytes()).await?;
    drop(permit);
    let mut buf = vec![0u8; 64 * 1024];
    let mut filled = 0;
    // The head, then the events.
    let body_start = loop {
        let n = tcp.read(&mut buf[filled..]).await?;
        anyhow::ensure!(n > 0, "closed before the head");
        filled += n;
        if let Some(i) = memchr::memmem::find(&buf[..filled], b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(filled < buf.len(), "head too long");
    };
    anyhow::ensure!(buf.starts_with(b"HTTP/1.1 200"), "not 200");
    open.fetch_add(1, Ordering::Relaxed);
    let finder = memchr::memmem::Finder::new(b"\n\n");
    let mut last = 0u8;
    let mut chunk = &buf[body_start..filled];
    loop {
        // An event's blank line may straddle two reads.
        let mut found = finder.find_iter(chunk).count() as u64;
        if last == b'\n' && chunk.first() == Some(&b'\n') {
            found += 1;
        }
        events.fetch_add(found, Ordering::Relaxed);
        if let Some(&b) = chunk.last() {
            last = b;
        }
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        chunk = &buf[..n];
    }
}
