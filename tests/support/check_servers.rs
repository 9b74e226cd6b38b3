//! Test servers for `tests/check.rs`, real TCP servers on 127.0.0.1:0:
//! a channel server that behaves as package:sse's Dart `SseHandler` does
//! (see `seed-sse_handler.dart.txt`), echoing every message, and a plain
//! SSE server that ticks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Request heads larger than this end the connection.
const MAX_HEAD: usize = 16 << 10;
/// Request bodies larger than this end the connection (post.oversize
/// sends 1 MiB + 1).
const MAX_BODY: usize = 4 << 20;

/// One parsed HTTP/1.1 request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Reads one request; `None` at EOF or on garbage. `buf` keeps what was
/// read past it (the next pipelined request).
async fn read_request<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let parsed = req.parse(buf);
        if parsed.is_err() {
            return None; // e.g. an h2c preface: close, as an HTTP/1.1-only server does
        }
        if let Ok(httparse::Status::Complete(len)) = parsed {
            let (path, q) = req.path?.split_once('?').unwrap_or((req.path?, ""));
            let query = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
            let headers: HashMap<String, String> = req
                .headers
                .iter()
                .map(|h| {
                    (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned())
                })
                .collect();
            let method = req.method?.to_owned();
            let path = path.to_owned();
            let body_len: usize =
                headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            if body_len > MAX_BODY {
                return None;
            }
            buf.drain(..len);
            while buf.len() < body_len {
                let mut chunk = [0u8; 16 << 10];
                let n = r.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf.drain(..body_len).collect();
            return Some(Request { method, path, query, headers, body });
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn respond(w: &mut TcpStream, status: &str, headers: &[(&str, String)]) -> bool {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await.is_ok()
}

/// One client's connection, as `SseConnection` keeps it.
#[derive(Default)]
struct Conn {
    /// The current stream's writer; `None` while disconnected.
    sink: Option<mpsc::UnboundedSender<Bytes>>,
    /// Bumped per stream, so a stale stream's end does not detach a newer one.
    generation: u64,
    /// Messages waiting for a stream during the keep-alive period.
    queue: Vec<String>,
    /// `_lastProcessedId`.
    last: i64,
    /// `_pendingMessages`: duplicates allowed, as a heap would hold them.
    pending: Vec<(i64, String)>,
    /// In the keep-alive period.
    suspended: bool,
}

impl Conn {
    fn send(&mut self, message: String) {
        let event = Bytes::from(format!("data: {}\n\n", serde_json::Value::from(message.clone())));
        match &self.sink {
            Some(tx) if tx.send(event).is_ok() => {}
            _ if self.suspended => self.queue.push(message),
            _ => {}
        }
    }

    /// `_addIncomingMessage`, with its `id - last <= 1` rule: a duplicate
    /// is delivered again and moves the counter back.
    fn incoming(&mut self, id: i64, message: String) -> Vec<String> {
        self.pending.push((id, message));
        let mut out = Vec::new();
        while let Some(i) = (0..self.pending.len()).min_by_key(|&i| self.pending[i].0) {
            if self.pending[i].0 - self.last > 1 {
                break;
            }
            let (id, m) = self.pending.remove(i);
            self.last = id;
            out.push(m);
        }
        out
    }
}

type Conns = Arc<Mutex<HashMap<String, Arc<Mutex<Conn>>>>>;

/// A test server on 127.0.0.1:0: each accepted connection goes to
/// `handle`; dropping it stops accepting.
pub struct TestServer {
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start<F, Fut>(path: &str, handle: F) -> TestServer
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(handle(sock));
            }
        });
        TestServer { url: format!("http://{addr}{path}"), task }
    }
}

/// A package:sse-like echo server: 200 to every POST, no ids, no
/// heartbeat, no `retry:`, no replay, 404 to OPTIONS, no takeover, and a
/// keep-alive period like `SseHandler(keepAlive: …)`.
pub async fn pkg_like(keep_alive: Duration) -> TestServer {
    let conns: Conns = Arc::default();
    TestServer::start("/sse", move |sock| pkg_connection(sock, conns.clone(), keep_alive)).await
}

async fn pkg_connection(mut sock: TcpStream, conns: Conns, keep_alive: Duration) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let accept_sse = req.headers.get("accept").is_some_and(|a| a == "text/event-stream");
        let origin =
            req.headers.get("origin").or(req.headers.get("host")).cloned().unwrap_or_default();
        let cors = [
            ("access-control-allow-credentials", "true".to_owned()),
            ("access-control-allow-origin", origin.clone()),
        ];
        if req.path != "/sse" {
            if !respond(&mut sock, "404 Not Found", &[]).await {
                return;
            }
            continue;
        }
        if req.method == "GET" && accept_sse {
            let Some(id) = req.query.get("sseClientId").cloned() else { return };
            return pkg_stream(sock, &conns, id, &origin, keep_alive).await;
        }
        if req.method == "POST" && !accept_sse {
            pkg_post(&conns, &req);
            if !respond(&mut sock, "200 OK", &cors).await {
                return;
            }
            continue;
        }
        if !respond(&mut sock, "404 Not Found", &[]).await {
            return;
        }
    }
}

/// `_handleIncomingMessage`: any failure is swallowed, the answer is 200.
fn pkg_post(conns: &Conns, req: &Request) {
    let Some(id) = req.query.get("sseClientId") else { return };
    let message_id: i64 = match req.query.get("messageId") {
        Some(m) => match m.parse() {
            Ok(n) => n,
            Err(_) => return,
        },
        None => 0,
    };
    let Ok(serde_json::Value::String(message)) = serde_json::from_slice(&req.body) else {
        return;
    };
    let Some(conn) = conns.lock().unwrap().get(id).cloned() else { return };
    let mut c = conn.lock().unwrap();
    for m in c.incoming(message_id, message) {
        c.send(m); // the echo application
    }
}

/// A hijacked stream: headers as package:sse writes them (with its stray
/// blank line), then whatever the connection sends, until the socket ends.
async fn pkg_stream(
    sock: TcpStream,
    conns: &Conns,
    id: String,
    origin: &str,
    keep_alive: Duration,
) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         Connection: keep-alive\r\nAccess-Control-Allow-Credentials: true\r\n\
         Access-Control-Allow-Origin: {origin}\r\n\r\n\r\n"
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    let (conn, generation) = {
        let mut map = conns.lock().unwrap();
        let existing = map.get(&id).filter(|c| c.lock().unwrap().suspended).cloned();
        let conn = existing.unwrap_or_else(|| {
            let c = Arc::new(Mutex::new(Conn { last: -1, ..Conn::default() }));
            map.insert(id.clone(), c.clone());
            c
        });
        let mut c = conn.lock().unwrap();
        c.generation += 1;
        c.suspended = false;
        c.sink = Some(tx);
        for m in std::mem::take(&mut c.queue) {
            c.send(m);
        }
        let generation = c.generation;
        drop(c);
        (conn, generation)
    };
    let (mut r, mut w) = sock.into_split();
    if w.write_all(head.as_bytes()).await.is_ok() {
        let mut scratch = [0u8; 512];
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(b) => if w.write_all(&b).await.is_err() { break },
                    None => break,
                },
                n = r.read(&mut scratch) => if !matches!(n, Ok(n) if n > 0) { break },
            }
        }
    }
    // `_handleDisconnect`: keep the connection for `keep_alive`, then close.
    {
        let mut c = conn.lock().unwrap();
        if c.generation != generation {
            return;
        }
        c.sink = None;
        c.suspended = true;
    }
    tokio::time::sleep(keep_alive).await;
    let mut map = conns.lock().unwrap();
    let c = conn.lock().unwrap();
    if c.generation == generation
        && c.suspended
        && map.get(&id).is_some_and(|x| Arc::ptr_eq(x, &conn))
    {
        map.remove(&id);
    }
}

/// How the plain SSE server behaves.
#[derive(Debug, Clone, Copy)]
pub struct PlainOpts {
    /// `id: N` on each event.
    pub ids: bool,
    /// Continue after `Last-Event-ID` (else start at 1 again).
    pub resume: bool,
    /// `retry: 1000` first.
    pub retry: bool,
    /// Answer 204 to every GET.
    pub no_content: bool,
    pub every: Duration,
}

impl Default for PlainOpts {
    fn default() -> Self {
        PlainOpts {
            ids: true,
            resume: true,
            retry: true,
            no_content: false,
            every: Duration::from_millis(50),
        }
    }
}

/// A plain SSE server: `data: tick N` every `every`, close-delimited.
pub async fn plain(opts: PlainOpts) -> TestServer {
    TestServer::start("/events", move |sock| plain_stream(sock, opts)).await
}

async fn plain_stream(mut sock: TcpStream, o: PlainOpts) {
    let mut buf = Vec::new();
    let Some(req) = read_request(&mut sock, &mut buf).await else { return };
    if o.no_content {
        let _ = sock.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
        return;
    }
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
                connection: close\r\n\r\n";
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if o.retry && sock.write_all(b"retry: 1000\n\n").await.is_err() {
        return;
    }
    let after: u64 = match req.headers.get("last-event-id") {
        Some(l) if o.resume => l.parse().unwrap_or(0),
        _ => 0,
    };
    let mut tick = tokio::time::interval(o.every);
    for n in after + 1.. {
        tick.tick().await;
        let ev = if o.ids {
            format!("id: {n}\ndata: tick {n}\n\n")
        } else {
            format!("data: tick {n}\n\n")
        };
        if sock.write_all(ev.as_bytes()).await.is_err() {
            return;
        }
    }
}
