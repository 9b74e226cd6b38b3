//! Test servers for `tests/bench.rs` (the faulty echo server serves
//! `connect`'s tests too): a deliberately faulty channel echo server and a
//! plain SSE server that sends a known stream, both real hyper servers on
//! 127.0.0.1:0.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A response body fed from a channel: an event stream that ends when the
/// sender is dropped.
pub struct ChannelBody {
    rx: Option<mpsc::UnboundedReceiver<Bytes>>,
    full: Option<Bytes>,
    /// Always ready: this chunk on every poll, forever.
    flood: Option<Bytes>,
}

impl ChannelBody {
    fn stream(rx: mpsc::UnboundedReceiver<Bytes>) -> Self {
        Self { rx: Some(rx), full: None, flood: None }
    }
    fn full(b: impl Into<Bytes>) -> Self {
        Self { rx: None, full: Some(b.into()), flood: None }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if let Some(b) = &self.flood {
            return Poll::Ready(Some(Ok(Frame::data(b.clone()))));
        }
        match &mut self.rx {
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            None => Poll::Ready(None),
        }
    }
}

/// How the faulty echo server misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Echo everything: a correct server.
    None,
    /// Never echo messages whose messageId % n == n - 1.
    DropEvery(u64),
    /// Echo messageIds below n, then nothing.
    StopAfter(u64),
    /// Hold each even messageId until the next one came, then echo both
    /// swapped.
    SwapPairs,
    /// Echo messages whose messageId % n == n - 1 twice.
    DuplicateEvery(u64),
    /// Echo every message with one byte changed.
    Corrupt,
    /// Never answer a POST (nor echo it).
    HangPosts,
    /// After echoing messageId n, send the control close and end the stream.
    CloseAfter(u64),
    /// Flood every event stream with `: ping` comments, as fast as the
    /// client reads; answer POSTs but echo nothing.
    FloodStream,
    /// Refuse the first POST of each messageId with n % k == k - 1 with
    /// `status` (as an overloaded server does), and take it when it is sent
    /// again.
    RefuseOnce(u64, u16),
    /// Answer messageIds from n on with 500 and an HTML error page.
    HtmlErrorAfter(u64),
}

#[derive(Default)]
struct Client {
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    next_event_id: u64,
    held: Option<Bytes>,
    refused: std::collections::HashSet<u64>,
    /// The next messageId to take, and the ones that came before it.
    next_message_id: u64,
    early: std::collections::BTreeMap<u64, Bytes>,
}

type Clients = Arc<Mutex<HashMap<String, Client>>>;

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    form_urlencoded_parse(req.uri().query().unwrap_or("")).remove(name)
}

fn form_urlencoded_parse(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace('+', " ")))
        .collect()
}

fn respond(status: StatusCode, body: ChannelBody) -> Response<ChannelBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r
}

fn event_stream(rx: mpsc::UnboundedReceiver<Bytes>) -> Response<ChannelBody> {
    let mut r = Response::new(ChannelBody::stream(rx));
    r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    r
}

/// Serves `handler` on a free loopback port; returns the channel URL.
async fn serve<F, Fut>(handler: F) -> String
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<ChannelBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let h = h.clone();
                    async move { Ok::<_, Infallible>(h(req).await) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    format!("http://{addr}/sse")
}

/// A channel echo server (no keep-alive, no replay) with a fault. Like every
/// channel server (PROTOCOL.md §3) it takes each client's messages in
/// messageId order, once, whatever order their POSTs arrive in (a client
/// has several in flight), and the fault applies to that sequence: a test
/// about a fault never depends on which POST won a race.
pub async fn faulty_echo(fault: Fault) -> String {
    let clients: Clients = Arc::default();
    serve(move |req| {
        let clients = clients.clone();
        async move {
            let Some(id) = query_param(&req, "sseClientId") else {
                return respond(StatusCode::BAD_REQUEST, ChannelBody::full("no id"));
            };
            if req.method() == http::Method::GET {
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(Bytes::from_static(b"retry: 1000\n\n"));
                clients.lock().unwrap().entry(id).or_default().tx = Some(tx);
                let mut r = event_stream(rx);
                if let Fault::FloodStream = fault {
                    r.body_mut().flood = Some(Bytes::from(": ping\n\n".repeat(512)));
                }
                return r;
            }
            if let Fault::HangPosts = fault {
                std::future::pending::<()>().await;
            }
            let n: u64 = query_param(&req, "messageId").and_then(|m| m.parse().ok()).unwrap_or(0);
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let mut all = clients.lock().unwrap();
            let Some(c) = all.get_mut(&id) else {
                return respond(StatusCode::NOT_FOUND, ChannelBody::full("unknown"));
            };
            if let Fault::HtmlErrorAfter(k) = fault
                && n >= k
            {
                let page = "<!DOCTYPE html>\n<html>\n<head><title>Oops</title></head>\n<body>\n\
                            <h1>Oops</h1>\n<p>Something broke &amp; we know it.</p>\n</body></html>\n";
                let mut r = respond(StatusCode::INTERNAL_SERVER_ERROR, ChannelBody::full(page));
                r.headers_mut().insert("content-type", "text/html".parse().unwrap());
                return r;
            }
            if let Fault::RefuseOnce(k, status) = fault
                && n % k == k - 1
                && c.refused.insert(n)
            {
                let status = StatusCode::from_u16(status).expect("a status");
                return respond(status, ChannelBody::full("server busy, try again"));
            }
            // Taken in messageId order: a duplicate is acknowledged and
            // dropped, a message from the future waits for its predecessors.
            if n >= c.next_message_id {
                c.early.entry(n).or_insert(body);
            }
            let mut ev = Vec::new();
            let mut close = false;
            while let Some(body) = c.early.remove(&c.next_message_id) {
                let n = c.next_message_id;
                c.next_message_id += 1;
                for data in apply(fault, c, n, body) {
                    c.next_event_id += 1;
                    ev.extend_from_slice(format!("id: {}\ndata: ", c.next_event_id).as_bytes());
                    ev.extend_from_slice(&data);
                    ev.extend_from_slice(b"\n\n");
                }
                if matches!(fault, Fault::CloseAfter(k) if k == n) {
                    // In the same write as the last echo: the client sees
                    // both at once, before it can send another message.
                    ev.extend_from_slice(b"event: control\ndata: close\n\n");
                    close = true;
                    break;
                }
            }
            if let Some(tx) = &c.tx
                && !ev.is_empty()
            {
                let _ = tx.send(Bytes::from(ev));
            }
            if close {
                c.tx = None;
            }
            respond(StatusCode::OK, ChannelBody::full(Bytes::new()))
        }
    })
    .await
}

/// What the faulty echo server echoes for message `n`, taken in order.
fn apply(fault: Fault, c: &mut Client, n: u64, body: Bytes) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = Vec::new();
    match fault {
        Fault::None => out.push(body),
        Fault::DropEvery(k) => {
            if n % k != k - 1 {
                out.push(body);
            }
        }
        Fault::StopAfter(k) => {
            if n < k {
                out.push(body);
            }
        }
        Fault::SwapPairs => {
            if n.is_multiple_of(2) {
                c.held = Some(body);
            } else {
                out.push(body);
                out.extend(c.held.take());
            }
        }
        Fault::DuplicateEvery(k) => {
            out.push(body.clone());
            if n % k == k - 1 {
                out.push(body);
            }
        }
        Fault::Corrupt => {
            let mut v = body.to_vec();
            if v.len() > 10 {
                v[10] = if v[10] == b'z' { b'y' } else { b'z' };
            }
            out.push(Bytes::from(v));
        }
        Fault::HangPosts | Fault::FloodStream => {}
        Fault::CloseAfter(_) | Fault::RefuseOnce(..) | Fault::HtmlErrorAfter(_) => out.push(body),
    }
    out
}

/// A plain SSE server: each stream gets `ids` as `id:` + `data:` events,
/// then ends; a reconnect (it carries `Last-Event-ID`) gets 204, which
/// tells the client to stop.
pub async fn known_stream(ids: Vec<u64>) -> String {
    let ids = Arc::new(ids);
    serve(move |req| {
        let ids = ids.clone();
        async move {
            if req.headers().contains_key("last-event-id") {
                return respond(StatusCode::NO_CONTENT, ChannelBody::full(Bytes::new()));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let mut all = String::from(": hello\n\n");
            for id in ids.iter() {
                all.push_str(&format!("id: {id}\ndata: event {id}\n\n"));
            }
            let _ = tx.send(Bytes::from(all));
            drop(tx);
            event_stream(rx)
        }
    })
    .await
}

/// A plain SSE server: each stream gets one event per id, with these ids
/// as they are, then ends; a reconnect gets 204.
pub async fn stream_with_ids(ids: Vec<&'static str>) -> String {
    let all: String = ids.iter().map(|id| format!("id: {id}\ndata: event {id}\n\n")).collect();
    let all = Arc::new(all);
    serve(move |req| {
        let all = all.clone();
        async move {
            if req.headers().contains_key("last-event-id") {
                return respond(StatusCode::NO_CONTENT, ChannelBody::full(Bytes::new()));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(Bytes::from(all.as_bytes().to_vec()));
            event_stream(rx)
        }
    })
    .await
}

/// A plain SSE server whose streams send `ids` and then stay open: silent,
/// or with a `: ping` comment every `heartbeat`.
pub async fn quiet_stream(ids: Vec<u64>, heartbeat: Option<std::time::Duration>) -> String {
    let first = Arc::new(events(&ids));
    serve(move |_req| {
        let first = first.clone();
        async move {
            let (tx, rx) = mpsc::unbounded_channel();
            let _ = tx.send(Bytes::from(first.as_bytes().to_vec()));
            // Holds the stream open until the client goes.
            tokio::spawn(async move {
                loop {
                    match heartbeat {
                        Some(every) => tokio::time::sleep(every).await,
                        None => tx.closed().await,
                    }
                    if tx.send(Bytes::from_static(b": ping\n\n")).is_err() {
                        break;
                    }
                }
            });
            event_stream(rx)
        }
    })
    .await
}

/// A plain SSE server whose every stream ends at once, without an event:
/// each reconnect succeeds and ends again.
pub async fn empty_streams() -> String {
    serve(|_req| async move { event_stream(mpsc::unbounded_channel().1) }).await
}

/// Event stream text for `ids`, one `id:` + `data:` event each.
fn events(ids: &[u64]) -> String {
    ids.iter().map(|id| format!("id: {id}\ndata: event {id}\n\n")).collect()
}

/// A plain SSE server whose streams end once: a first request (without
/// `Last-Event-ID`) gets `first` and then the stream ends, as when a server
/// drops a slow consumer; a reconnect gets `again` and stays open. With
/// `again` starting at 1 the reconnect is a fresh connection; continuing
/// `first`, it is a resume.
pub async fn reopening_stream(first: Vec<u64>, again: Vec<u64>) -> String {
    let (first, again) = (Arc::new(events(&first)), Arc::new(events(&again)));
    let open: Arc<Mutex<Vec<mpsc::UnboundedSender<Bytes>>>> = Arc::default();
    serve(move |req| {
        let (first, again, open) = (first.clone(), again.clone(), open.clone());
        async move {
            let (tx, rx) = mpsc::unbounded_channel();
            if req.headers().contains_key("last-event-id") {
                let _ = tx.send(Bytes::from(again.as_bytes().to_vec()));
                open.lock().unwrap().push(tx);
            } else {
                let _ = tx.send(Bytes::from(first.as_bytes().to_vec()));
            }
            event_stream(rx)
        }
    })
    .await
}

/// An endless event stream, always ready: each poll yields the same batch
/// of events (cheap: a shared buffer), as fast as the client reads.
struct FloodBody {
    chunk: Bytes,
}

impl Body for FloodBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
    }
}

/// A plain SSE server that floods every stream; every second connection
/// waits `slow` before it answers (a server slow to accept).
pub async fn flood(slow: std::time::Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let chunk = Bytes::from("data: flood\n\n".repeat(1024));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<Incoming>| {
                    let chunk = chunk.clone();
                    async move {
                        if n % 2 == 1 {
                            tokio::time::sleep(slow).await;
                        }
                        let mut r = Response::new(FloodBody { chunk });
                        r.headers_mut()
                            .insert("content-type", "text/event-stream".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    format!("http://{addr}/sse")
}

/// A plain SSE server with no POST (as a newcomer points bench at): each
/// stream gets a named `tick` event every 50 ms; a POST gets 501 and a
/// multi-line HTML page, as Python's `http.server` answers it.
pub async fn plain_sse_without_post() -> String {
    serve(|req| async move {
        if req.method() != http::Method::GET {
            let page = "<!DOCTYPE HTML>\n<html>\n<head><title>Error response</title></head>\n\
                        <body><h1>Error response</h1><p>Error code: 501</p></body>\n</html>\n";
            let mut r = respond(StatusCode::NOT_IMPLEMENTED, ChannelBody::full(page));
            r.headers_mut().insert("content-type", "text/html".parse().unwrap());
            return r;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for i in 0.. {
                let ev = format!("event: tick\nid: {i}\ndata: {{\"n\":{i}}}\n\n");
                if tx.send(Bytes::from(ev)).is_err() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        });
        event_stream(rx)
    })
    .await
}

/// A plain SSE server whose every stream sends `retry: retry_ms`, then
/// (with `event`) the event after the request's `Last-Event-ID` (so the
/// ids go on across re-opens), then ends at once.
pub async fn retrying_stream(retry_ms: u64, event: bool) -> String {
    serve(move |req| async move {
        let last: u64 = req
            .headers()
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = format!("retry: {retry_ms}\n\n");
        if event {
            body.push_str(&format!("id: {}\ndata: event\n\n", last + 1));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Bytes::from(body));
        event_stream(rx)
    })
    .await
}

/// A server answering every GET with 200, `content_type` and one event.
pub async fn with_content_type(content_type: &'static str) -> String {
    serve(move |_req| async move {
        let mut r = Response::new(ChannelBody::full("data: x\n\n"));
        r.headers_mut().insert("content-type", content_type.parse().unwrap());
        r
    })
    .await
}

/// A stream body fed from a channel that may end in an error (the
/// connection is then cut mid-stream).
struct Fallible {
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
    /// The error, held back for one poll.
    error: Option<std::io::Error>,
}

impl Body for Fallible {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(e) = self.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.rx.poll_recv(cx) {
            // hyper drops what it has not flushed when a body fails, and it
            // flushes when the body is pending: once, so that the events
            // before the cut go out whenever the cut comes.
            Poll::Ready(Some(Err(e))) => {
                self.error = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            p => p.map(|o| o.map(|r| r.map(Frame::data))),
        }
    }
}

/// An LLM-style endpoint: a POST whose JSON body is
/// `{"n": N, "delay_ms": D, "break_after": K}` gets a `text/event-stream`
/// of N events (`id: i`, `data: token i`, i from 1), each after D ms, and
/// then the stream ends; with K the connection is cut after K events.
/// Anything else (another method, no JSON content type, a bad body) gets
/// 400.
pub async fn post_stream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let json = req
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                    let post = req.method() == http::Method::POST;
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let spec: Option<serde_json::Value> =
                        body.ok().and_then(|b| serde_json::from_slice(&b).ok());
                    let (tx, rx) = mpsc::unbounded_channel();
                    let mut r = Response::new(Fallible { rx, error: None });
                    let Some(spec) = spec.filter(|_| json && post) else {
                        let _ = tx.send(Ok(Bytes::from_static(b"expected a JSON POST\n")));
                        *r.status_mut() = StatusCode::BAD_REQUEST;
                        return Ok::<_, Infallible>(r);
                    };
                    let n = spec["n"].as_u64().unwrap_or(0);
                    let delay =
                        std::time::Duration::from_millis(spec["delay_ms"].as_u64().unwrap_or(0));
                    let cut = spec["break_after"].as_u64();
                    tokio::spawn(async move {
                        for i in 1..=n {
                            if cut.is_some_and(|k| i > k) {
                                let _ = tx.send(Err(std::io::Error::other("cut")));
                                return;
                            }
                            tokio::time::sleep(delay).await;
                            let ev = format!("id: {i}\ndata: token {i}\n\n");
                            if tx.send(Ok(Bytes::from(ev))).is_err() {
                                return;
                            }
                        }
                    });
                    r.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
                    Ok::<_, Infallible>(r)
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    format!("http://{addr}/v1/chat")
}

/// What [`slow_to_accept`] serves.
#[derive(Debug, Clone, Copy)]
pub enum Site {
    /// GET: an event stream of ticks; POST: 501 and an HTML page, as
    /// Python's `http.server` answers a method it lacks.
    SseWithoutPost,
    /// Every request: 200 with an HTML page (a static site).
    Html,
    /// GET: an event stream; POST: 403 with a plain reason (a channel
    /// behind an authenticating proxy, without credentials).
    ForbiddenPosts,
}

/// A server that takes its time to accept: one connection every `every`,
/// from a listen backlog of 1 (as single-threaded servers such as Python's
/// `http.server` with its backlog of 5 do under a burst of connections).
pub async fn slow_to_accept(site: Site, every: std::time::Duration) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = socket.local_addr().expect("addr");
    let listener = socket.listen(1).expect("listen");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    let get = req.method() == http::Method::GET;
                    let page = |status| {
                        let mut r = respond(
                            status,
                            ChannelBody::full(
                                "<!DOCTYPE HTML>\n<html><head><title>Site</title></head>\n\
                                 <body><h1>Not for you</h1><p>Error code: 501</p></body></html>\n",
                            ),
                        );
                        r.headers_mut().insert("content-type", "text/html".parse().unwrap());
                        r
                    };
                    let r = match (site, get) {
                        (Site::Html, _) => page(StatusCode::OK),
                        (Site::SseWithoutPost, false) => page(StatusCode::NOT_IMPLEMENTED),
                        (Site::ForbiddenPosts, false) => respond(
                            StatusCode::FORBIDDEN,
                            ChannelBody::full("missing credentials\n"),
                        ),
                        (_, true) => {
                            let (tx, rx) = mpsc::unbounded_channel();
                            let _ = tx.send(Bytes::from_static(b"data: tick\n\n"));
                            // Held open until the client goes.
                            tokio::spawn(async move { tx.closed().await });
                            event_stream(rx)
                        }
                    };
                    Ok::<_, Infallible>(r)
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
            tokio::time::sleep(every).await;
        }
    });
    format!("http://{addr}/sse")
}
