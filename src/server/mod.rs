//! The channel server: accept loop, routing, connections and keep-alive.
//!
//! [`Server::bind`] starts serving at once; the application takes new
//! connections with [`Server::accept`] and talks to each through its
//! [`Connection`], or to all at once through a [`ServerHandle`].

mod body;
mod config;
mod connection;
mod direct;
mod http;
mod request;
mod tls;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

pub use config::{Limits, ServerConfig};
pub use connection::{
    CloseInfo, CloseReason, Connection, ConnectionEvent, ConnectionHandle, SendError,
};
pub use request::StreamRequest;
pub use tls::{TlsConfig, TlsError};

use crate::protocol::reorder::ReorderBuffer;
use connection::Conn;

/// How long shutdown waits for streams to flush their close event.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// A running channel server.
pub struct Server {
    handle: ServerHandle,
    local_addr: SocketAddr,
    accept_rx: mpsc::UnboundedReceiver<Connection>,
    accept_task: JoinHandle<()>,
}

/// Shared access to a running server: broadcast, look up, shut down.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
}

pub(crate) struct ServerShared {
    pub(crate) config: ServerConfig,
    pub(crate) runtime: tokio::runtime::Handle,
    registry: Mutex<Registry>,
    accept_tx: mpsc::UnboundedSender<Connection>,
    shutdown: watch::Sender<bool>,
    shutting_down: AtomicBool,
    pub(crate) stats: Arc<Counters>,
}

/// Totals since the server started, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Message events handed to streams (replays count again).
    pub events: u64,
    /// Body frames (batches) handed to hyper: few per burst, not one per event.
    pub frames: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) events: AtomicU64,
    pub(crate) frames: AtomicU64,
}

#[derive(Default)]
struct Registry {
    live: HashMap<Arc<str>, Arc<Conn>>,
    /// Re-order state of recently closed client ids (PROTOCOL §3): the next
    /// expected messageId and any acknowledged out-of-order messages.
    closed: HashMap<Arc<str>, (Instant, ReorderBuffer<String>)>,
    closed_order: VecDeque<(Instant, Arc<str>)>,
    /// Bytes of messages held in `closed`.
    closed_bytes: usize,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        Self::from_listener(listener, config)
    }

    /// Serves on an already bound listener.
    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> std::io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let (accept_tx, accept_rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(ServerShared {
            config,
            runtime: tokio::runtime::Handle::current(),
            registry: Mutex::new(Registry::default()),
            accept_tx,
            shutdown,
            shutting_down: AtomicBool::new(false),
            stats: Arc::default(),
        });
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown_rx));
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

    /// The next new connection; `None` after shutdown.
    pub async fn accept(&mut self) -> Option<Connection> {
        self.accept_rx.recv().await
    }

    /// A handle for use from other tasks.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Control-closes every connection, ignoring keep-alive, lets the streams
    /// flush the close event (bounded wait) and stops listening.
    pub async fn shutdown(self) {
        self.handle.begin_shutdown();
        let _ = self.accept_task.await;
    }
}

impl ServerHandle {
    /// Connections at the moment, suspended ones included.
    pub fn client_count(&self) -> usize {
        self.shared.lock_registry().live.len()
    }

    /// Totals since start.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            events: self.shared.stats.events.load(Ordering::Relaxed),
            frames: self.shared.stats.frames.load(Ordering::Relaxed),
        }
    }

    /// Queues `message` for every live connection; returns how many took it.
    pub fn broadcast(&self, message: &str) -> usize {
        let data = crate::protocol::event::encode_data(message);
        let conns: Vec<Arc<Conn>> = self.shared.lock_registry().live.values().cloned().collect();
        conns.iter().filter(|c| c.send_encoded(data.clone()).is_ok()).count()
    }

    /// The live connection of `client_id`, if any.
    pub fn connection(&self, client_id: &str) -> Option<ConnectionHandle> {
        let conn = self.shared.lock_registry().live.get(client_id).cloned()?;
        Some(ConnectionHandle { conn })
    }

    /// Starts shutdown without waiting for it; see [`Server::shutdown`].
    pub fn begin_shutdown(&self) {
        if self.shared.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let conns: Vec<Arc<Conn>> = self.shared.lock_registry().live.values().cloned().collect();
        for c in &conns {
            c.close(CloseReason::Shutdown);
        }
        let _ = self.shared.shutdown.send(true);
    }
}

impl ServerShared {
    fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes a closing connection and remembers its re-order state.
    fn retire(&self, conn: &Conn, state: ReorderBuffer<String>) {
        let mut reg = self.lock_registry();
        let current = reg.live.get(&conn.id).is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), conn));
        if current {
            reg.live.remove(&conn.id);
        }
        let now = Instant::now();
        let memory = self.config.closed_id_memory;
        let max_bytes = self.config.limits.reorder_bytes;
        let incoming = state.buffered_bytes();
        // Bounded by time, by count (id churn) and by the bytes it holds.
        while let Some((at, old)) = reg.closed_order.front().cloned() {
            let full = reg.closed_order.len() >= self.config.limits.max_clients
                || reg.closed_bytes + incoming > max_bytes;
            if now.duration_since(at) < memory && !full {
                break;
            }
            reg.closed_order.pop_front();
            // A stale entry: the id came back (and maybe closed again since).
            if reg.closed.get(&old).is_none_or(|(t, _)| *t != at) {
                continue;
            }
            if let Some((_, gone)) = reg.closed.remove(&old) {
                reg.closed_bytes -= gone.buffered_bytes();
                if gone.buffered() > 0 {
                    warn!(client = %old, messages = gone.buffered(), "forgot acknowledged out-of-order messages of a closed client id");
                }
            }
        }
        if !current || memory.is_zero() {
            if state.buffered() > 0 {
                warn!(client = %conn.id, messages = state.buffered(), "acknowledged out-of-order messages dropped with their connection");
            }
            return;
        }
        reg.closed_bytes += incoming;
        if let Some((_, old)) = reg.closed.insert(conn.id.clone(), (now, state)) {
            reg.closed_bytes -= old.buffered_bytes();
        }
        reg.closed_order.push_back((now, conn.id.clone()));
    }
}

/// Serves one connection with hyper until it ends (or shutdown ends it).
async fn serve_hyper<IO>(
    io: IO,
    remote: SocketAddr,
    shared: Arc<ServerShared>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| http::handle(shared.clone(), remote, req));
    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
    if let Err(e) = watcher.watch(conn).await {
        debug!(%remote, "connection ended: {e}");
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ServerShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let (shared, builder, watcher) = (shared.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            if let Some(tls) = shared.config.tls.clone() {
                // HTTPS: hyper only (h2 or HTTP/1.1), see tls.rs.
                if let Some(io) = tls.accept(stream).await {
                    serve_hyper(io, remote, shared, &builder, watcher).await;
                }
                return;
            }
            if let Some(direct::Routed::Hyper(io)) = direct::route(stream, remote, &shared).await {
                serve_hyper(io, remote, shared, &builder, watcher).await;
            }
        });
    }
    drop(listener);
    drop(shared.accept_tx.clone());
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        info!("shutdown: some connections did not finish in time");
    }
}
