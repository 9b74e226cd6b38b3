//! The channel server.
//!
//! Where a byte enters, is decided on, and leaves:
//! - [`Server::bind`] listens; the accept loop (here) bounds connections
//!   and hands each to [`direct`] (a fresh channel `GET`, written without
//!   hyper) or to hyper and [`http`] (everything else).
//! - [`http`] decides who may ask (`Host`, `Origin`: [`policy`]) and maps
//!   package:sse's requests to the [`store`] seam ([`mcp`] maps MCP's), whose in-process implementation is
//!   [`memory`]: a registry of [`channel`] state machines; [`redis`] shares
//!   channels between instances through Redis.
//! - Streams leave through [`stream`], one policy for both paths.
//!
//! The application takes new connections with [`Server::accept`] (or
//! [`Server::run`]) and talks to each through its [`Connection`], or to
//! all at once through a [`ServerHandle`].

mod app;
mod channel;
mod config;
mod deadlines;
mod direct;
mod http;
mod idle;
mod linger;
mod machine;
mod mcp;
mod memory;
mod metrics;
pub(crate) mod policy;
pub mod redis;
mod store;
mod stream;
mod tls;
mod wait;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use app::{
    CloseInfo, CloseReason, Connection, ConnectionEvent, ConnectionHandle, RequestInfo, SendError,
};
pub use config::{
    Admission, Admitted, FD_RESERVE, Limits, LineBreaks, McpConfig, OriginPolicy, Protocol,
    ServerConfig,
};
pub use redis::{Redis, RedisError, RedisOptions};
pub use store::Counts;
pub use tls::{TlsConfig, TlsError};

use channel::Settings;
use linger::Lingering;
use memory::{MemoryConfig, MemoryStore};
use metrics::Counters;
use policy::HostPolicy;
use store::ChannelStore;
use stream::{GuardSlot, GuardedIo};

/// How long shutdown waits for streams to flush their close event before
/// closing the rest at once.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Then how long hyper's connections get to finish.
const HYPER_GRACE: Duration = Duration::from_millis(300);
/// Largest batch of events handed to a stream at once: about what the
/// kernel's send buffer takes in one write (see `--replay-bytes`), so a
/// frame is written while its bytes are still in the cache, and 1,000
/// lagging streams hold 32 MB of frames, not 256 MB.
const MAX_FRAME: usize = 32 * 1024;

/// A running channel server.
pub struct Server {
    handle: ServerHandle,
    local_addr: SocketAddr,
    accept_rx: mpsc::Receiver<Connection>,
    accept_task: JoinHandle<()>,
}

/// Shared access to a running server: broadcast, look up, shut down.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
}

pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    pub(crate) store: Box<dyn ChannelStore>,
    pub(crate) hosts: HostPolicy,
    pub(crate) stats: Arc<Counters>,
    /// MCP's sessions, when the endpoint speaks MCP.
    pub(crate) mcp: Option<Arc<mcp::Sessions>>,
    stop: watch::Sender<bool>,
    shutting_down: AtomicBool,
    /// TCP connections open, bounded by `max_connections`: taken by the
    /// accept loop only within the bound (one atomic step), given back by
    /// [`Open`] once the connection is closed. Never above the bound nor
    /// below what is open.
    open_connections: AtomicUsize,
    /// Places for `--static` files open at once ([`config::STATIC_FILES_OPEN`]).
    pub(crate) static_files: Arc<tokio::sync::Semaphore>,
}

/// Totals since the server started, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Message events handed to streams (replays count again).
    pub events: u64,
    /// Body frames (batches) handed to the socket: few per burst, not one
    /// per event.
    pub frames: u64,
    /// TCP connections open now.
    pub connections: usize,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and starts serving. The
    /// listen backlog fits `max_connections` (the kernel caps it at
    /// `somaxconn`), so a burst of new clients is not dropped.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> std::io::Result<Server> {
        let limits = resolved(&config).limits;
        let backlog = u32::try_from(limits.max_connections).unwrap_or(u32::MAX).clamp(128, 65_535);
        let mut last = None;
        for a in tokio::net::lookup_host(addr).await? {
            match listen(a, backlog) {
                Ok(l) => return Self::from_listener(l, config),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address to listen on")
        }))
    }

    /// Serves on an already bound listener.
    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> std::io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let config = resolved(&config);
        let limits = config.limits;
        let (accept_tx, accept_rx) = mpsc::channel(limits.accept_queue.max(1));
        let stats: Arc<Counters> = Arc::default();
        let settings = Settings {
            limits,
            keep_alive: config.keep_alive,
            first_message_wait: config.first_message_wait,
            max_frame: MAX_FRAME,
        };
        let mcp = match &config.protocol {
            config::Protocol::Sse => None,
            config::Protocol::Mcp(m) => {
                Some(mcp::Sessions::new(m.clone(), &config, accept_tx.clone(), stats.clone()))
            }
        };
        // Nothing of Redis runs unless it is asked for.
        let store: Box<dyn ChannelStore> = match &config.redis {
            None => Box::new(MemoryStore::new(
                MemoryConfig {
                    settings,
                    closed_id_memory: config.closed_id_memory,
                    post_wait: config.request_timeout,
                },
                accept_tx,
                stats.clone(),
            )),
            Some(r) => Box::new(redis::RedisStore::start(
                r,
                redis::RedisConfig {
                    settings,
                    closed_id_memory: config.closed_id_memory,
                    post_wait: config.request_timeout,
                    write_timeout: config.write_timeout,
                },
                accept_tx,
                stats.clone(),
            )),
        };
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(ServerShared {
            hosts: HostPolicy::new(local_addr, &config.allowed_hosts),
            config,
            store,
            stats,
            mcp,
            stop,
            shutting_down: AtomicBool::new(false),
            open_connections: AtomicUsize::new(0),
            static_files: Arc::new(tokio::sync::Semaphore::new(config::STATIC_FILES_OPEN)),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(Server { handle: ServerHandle { shared }, local_addr, accept_rx, accept_task })
    }

    /// The bound address, with the real port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://HOST:PORT/PATH` (`https://` with TLS) of the channel endpoint.
    pub fn url(&self) -> String {
        let config = &self.handle.shared.config;
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.local_addr, config.path)
    }

    /// The next new connection; `None` once shutdown has begun and every
    /// connection opened before it has been taken.
    pub async fn accept(&mut self) -> Option<Connection> {
        self.accept_rx.recv().await
    }

    /// A handle for use from other tasks.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until `shutdown` resolves, handing each new connection to
    /// `on_connection`, then shuts down (see [`Server::shutdown`]). The one
    /// entry point of `ssechan serve` and of `bench`'s embedded server.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut on_connection: impl FnMut(Connection),
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                c = self.accept() => match c {
                    Some(c) => on_connection(c),
                    None => break,
                },
                _ = &mut shutdown => break,
            }
        }
        self.handle.begin_shutdown();
        // Connections opened just before shutdown still get their close.
        while let Some(c) = self.accept().await {
            on_connection(c);
        }
        self.shutdown().await;
    }

    /// Control-closes every connection, ignoring keep-alive, lets the
    /// streams flush the close event (bounded wait), closes what is left,
    /// and stops listening. Every connection's application gets its
    /// `Closed` event, with reason "server shutdown" unless it was already
    /// closing for another.
    pub async fn shutdown(self) {
        self.handle.begin_shutdown();
        let shared = &self.handle.shared;
        shared.store.finish_shutdown(SHUTDOWN_GRACE).await;
        let _ = shared.stop.send(true);
        let _ = self.accept_task.await;
    }
}

impl ServerHandle {
    /// Connections at the moment, suspended ones included (MCP: sessions).
    pub fn client_count(&self) -> usize {
        match &self.shared.mcp {
            Some(m) => m.count(),
            None => self.shared.store.counts().channels,
        }
    }

    /// Channels open and suspended.
    pub fn counts(&self) -> Counts {
        self.shared.store.counts()
    }

    /// Totals since start.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            events: self.shared.stats.events.load(Ordering::Relaxed),
            frames: self.shared.stats.frames.load(Ordering::Relaxed),
            connections: self.shared.open_connections.load(Ordering::Relaxed),
        }
    }

    /// The bounds in force, those derived from the open-file limit included.
    pub fn limits(&self) -> Limits {
        self.shared.config.limits
    }

    /// Queues `message` for every live connection; returns how many took it.
    pub async fn broadcast(&self, message: &str) -> usize {
        self.broadcast_all(&[message]).await
    }

    /// Queues `messages`, in order, for every live connection; returns how
    /// many took them. The batch is encoded once and shared by every
    /// connection's queue; each connection is locked and woken once for
    /// it. With the memory store, returns once no stream lags past half
    /// its queue, or after 50 ms: a fast source goes at the streams' pace
    /// (a stream behind for 20 broadcasts in a row is waited for no more).
    pub async fn broadcast_all(&self, messages: &[&str]) -> usize {
        if let Some(m) = &self.shared.mcp {
            return messages.iter().map(|msg| m.broadcast(msg)).max().unwrap_or(0);
        }
        let batch = messages.iter().map(|m| crate::protocol::event::encode_data(m)).collect();
        self.shared.store.broadcast(batch).await
    }

    /// The live connection of `client_id` (MCP: session), if any.
    pub fn connection(&self, client_id: &str) -> Option<ConnectionHandle> {
        match &self.shared.mcp {
            Some(m) => m.lookup(client_id),
            None => self.shared.store.lookup(client_id),
        }
    }

    /// The Prometheus text exposition of what the server counts.
    pub fn metrics(&self) -> String {
        let s = &self.shared;
        let connections = s.open_connections.load(Ordering::Relaxed);
        let mut extra = s.store.metrics();
        if let Some(m) = &s.mcp {
            extra.push_str(&m.metrics());
        }
        s.stats.render(&s.store.counts(), connections, &extra)
    }

    /// Serves `GET /metrics` (the Prometheus exposition) on `listener`
    /// until the server shuts down.
    pub fn serve_metrics(&self, listener: TcpListener) -> JoinHandle<()> {
        tokio::spawn(metrics::serve(listener, self.clone()))
    }

    /// Starts shutdown without waiting for it: every connection is
    /// control-closed and no new one is accepted. See [`Server::shutdown`].
    pub fn begin_shutdown(&self) {
        if !self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            if let Some(m) = &self.shared.mcp {
                m.begin_shutdown();
            }
            self.shared.store.begin_shutdown();
        }
    }
}

/// The configuration with the bounds derived from the open-file limit.
fn resolved(config: &ServerConfig) -> ServerConfig {
    let mut c = config.clone();
    c.limits = c.limits.resolve(crate::sys::open_file_limit(), 0);
    c
}

fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Counts a TCP connection while it lives: dropped with the connection's
/// task, after its socket is closed.
struct Open(Arc<ServerShared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ServerShared>,
    mut stop: watch::Receiver<bool>,
) {
    let timeout = shared.config.request_timeout;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head deadline is the connection's own (idle.rs), not hyper's.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(timeout))
        .keep_alive_timeout(timeout);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let max = shared.config.limits.max_connections;
    let send_buffer = shared.config.limits.send_buffer();
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends (the reserve is gone: descriptors
                    // held elsewhere): back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        if !metrics::hold_within(&shared.open_connections, 1, max) {
            shared.stats.refused(::http::StatusCode::SERVICE_UNAVAILABLE);
            tokio::spawn(refuse_at_limit(tcp, max));
            continue;
        }
        let open = Open(shared.clone());
        let _ = tcp.set_nodelay(true);
        crate::sys::set_send_buffer(&tcp, send_buffer);
        let (shared, builder, watcher) = (shared.clone(), builder.clone(), graceful.watcher());
        // Two tasks of their own size: a plain connection's task is what
        // every idle stream keeps, so TLS and hyper state stay out of it.
        match shared.config.tls.clone() {
            Some(tls) => tokio::spawn(async move {
                serve_tls(tls, tcp, remote, open, shared, &builder, watcher).await;
            }),
            None => tokio::spawn(async move {
                serve_plain(tcp, remote, open, shared, &builder, watcher).await;
            }),
        };
    }
    drop(listener);
    if tokio::time::timeout(HYPER_GRACE, graceful.shutdown()).await.is_err() {
        info!("shutdown: some connections did not finish in time");
    }
}

fn conn_ctx(tcp: &TcpStream, remote: SocketAddr, tls: bool) -> http::ConnCtx {
    http::ConnCtx {
        remote,
        local: tcp.local_addr().unwrap_or(remote),
        tls,
        guard: GuardSlot::default(),
        multiplexed: false,
    }
}

/// A plain TCP connection: a fresh stream written by a task of its own
/// (see [`spawn_stream`]), or hyper (boxed: its state is only paid for by
/// connections that need it).
async fn serve_plain(
    tcp: TcpStream,
    remote: SocketAddr,
    open: Open,
    shared: Arc<ServerShared>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let ctx = conn_ctx(&tcp, remote, false);
    match direct::route(tcp, &ctx, &shared).await {
        Some(direct::Routed::Stream(tcp, start)) => spawn_stream(tcp, start, open),
        Some(direct::Routed::Hyper(io, decided)) => {
            Box::pin(serve_hyper(io, decided, ctx, shared, builder, watcher)).await;
        }
        None => {}
    }
}

/// Writes an open stream in a task of its own, sized to what an idle
/// stream keeps ([`direct::DirectStream`]: its socket, body and pending
/// bytes), while the task that read and decided its request (its head,
/// timers, the decision's state) ends here. Every idle stream pays for its
/// task: 1,664 B for the routing task, 384 B for this one (plain TCP).
fn spawn_stream<IO>(io: IO, start: http::StreamStart, open: Open)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timeout = open.0.config.write_timeout;
    tokio::spawn(direct::DirectStream::new(io, start, timeout, open));
}

/// HTTPS: h2 goes to hyper; HTTP/1.1 as plain TCP does (a fresh stream
/// written here, the rest hyper), see tls.rs.
async fn serve_tls(
    tls: TlsConfig,
    tcp: TcpStream,
    remote: SocketAddr,
    open: Open,
    shared: Arc<ServerShared>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let ctx = conn_ctx(&tcp, remote, true);
    // Boxed, and every TLS state past it in a box: this task lives as long
    // as a hyper connection, and a slot for the TLS state (1.2 KB) kept in
    // it across an await would be paid by every one (a stream's goes to
    // its own task).
    let next = Box::pin(async {
        let mut io = tls.accept(tcp, shared.config.request_timeout).await?;
        if io.get_ref().1.alpn_protocol() == Some(b"h2") {
            return Some(TlsNext::H2(Box::new(io)));
        }
        // What rustls may hold past the kernel for a stalled client.
        io.get_mut().1.set_buffer_limit(Some(tls::STREAM_BUFFER));
        Some(match direct::route(io, &ctx, &shared).await? {
            direct::Routed::Stream(io, start) => TlsNext::Stream(Box::new((io, start))),
            direct::Routed::Hyper(io, decided) => TlsNext::Hyper(Box::new(io), decided),
        })
    })
    .await;
    match next {
        Some(TlsNext::Stream(stream)) => {
            let (io, start) = *stream;
            spawn_stream(io, start, open);
        }
        Some(TlsNext::Hyper(io, decided)) => {
            Box::pin(serve_hyper(io, decided, ctx, shared, builder, watcher)).await;
        }
        Some(TlsNext::H2(io)) => {
            Box::pin(serve_hyper(io, None, ctx, shared, builder, watcher)).await
        }
        None => {}
    }
}

type TlsIo = tokio_rustls::server::TlsStream<TcpStream>;

/// A TLS connection after its handshake (and first head, for HTTP/1.1),
/// small enough to be held by the task: see [`serve_tls`].
enum TlsNext {
    Stream(Box<(TlsIo, http::StreamStart)>),
    Hyper(Box<direct::Rewind<TlsIo>>, Option<http::Decided>),
    H2(Box<TlsIo>),
}

/// Serves one connection with hyper until it ends (or shutdown ends it);
/// `decided`: the answer to its first request, decided already.
async fn serve_hyper<IO>(
    io: IO,
    decided: Option<http::Decided>,
    ctx: http::ConnCtx,
    shared: Arc<ServerShared>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (remote, timeout) = (ctx.remote, shared.config.request_timeout);
    let clock = idle::HeadClock::new();
    let heads = clock.clone();
    let io = GuardedIo::new(io, shared.config.write_timeout, ctx.guard.clone());
    // hyper shuts a connection down when done with it, maybe with a body
    // unread: a lingering close lets the client read the answer.
    let io = Lingering::new(io, linger::budget(shared.config.limits.max_message_bytes));
    let decided = std::sync::Mutex::new(decided);
    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
        let mut ctx = ctx.clone();
        ctx.multiplexed = req.version() == ::http::Version::HTTP_2;
        let flight = heads.begin(ctx.multiplexed);
        if !ctx.multiplexed {
            ctx.guard.clear();
        }
        let decided = decided.lock().unwrap_or_else(|e| e.into_inner()).take();
        http::handle(shared.clone(), ctx, req, decided, flight)
    });
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), svc).into_owned());
    tokio::pin!(conn);
    tokio::select! {
        r = &mut conn => if let Err(e) = r { debug!(%remote, "connection ended: {e}") },
        _ = clock.cut(timeout) => debug!(%remote, "no request head within {timeout:?}: closing"),
    }
}

/// Answers a connection past the limit at once, using a descriptor of the
/// reserve, so that accepting itself never fails for lack of descriptors.
async fn refuse_at_limit(mut tcp: TcpStream, max: usize) {
    let body = format!("server at its connection limit ({max})\n");
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // A lingering close, so that closing does not reset the connection
    // under the answer; all within a second, on a descriptor of the reserve.
    let write = async {
        if tcp.write_all(resp.as_bytes()).await.is_ok() && tcp.shutdown().await.is_ok() {
            linger::discard(&mut tcp, linger::budget(0), Duration::from_secs(1)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    debug!("refused a connection: at the limit of {max}");
}
