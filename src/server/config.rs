//! Server settings. Every bound of PROTOCOL.md §6, and every bound a remote
//! peer could otherwise push, lives here with its default.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use super::policy::{Admission, Admitted, LineBreaks, OriginPolicy};

/// How a [`crate::server::Server`] behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The channel endpoint's path.
    pub path: String,
    /// How long a connection outlives its stream; `None` closes at once.
    pub keep_alive: Option<Duration>,
    /// Idle time after which a `: ping` comment is sent; `None` for never.
    pub heartbeat: Option<Duration>,
    /// The `retry:` sent at stream start. Keep it well under 5 s: the
    /// package:sse client gives up for good 5 s after an error.
    pub retry: Duration,
    /// Which browser origins may use the channel.
    pub origins: OriginPolicy,
    /// `Host` names answered besides loopback ones (`*`: any). A loopback
    /// listener answers only loopback names and these (against DNS
    /// rebinding); another listener answers any host unless this is set.
    pub allowed_hosts: Vec<String>,
    /// How long the next expected messageId of a closed client id is kept,
    /// so that a client that comes back keeps counting where it was.
    pub closed_id_memory: Duration,
    /// How long a new client id's out-of-order messages wait for the ones
    /// before them when nothing has been delivered yet. A client that
    /// outlived a server restart goes on counting from where it was, and
    /// the new server would otherwise wait for messageId 0 forever; after
    /// this it starts from the first message it has, and logs the gap.
    pub first_message_wait: Duration,
    /// Time a connection has for each request head, for a POST body, and
    /// for a POST waiting for the application to make room; also how long
    /// a connection may stay open without a first request (a silent h2c
    /// preface).
    pub request_timeout: Duration,
    /// A socket write that makes no progress this long ends its connection
    /// (a peer that stopped reading).
    pub write_timeout: Duration,
    /// Serve other paths (GET/HEAD) from this directory, canonical (see
    /// [`crate::web::static_files::check_root`]); `None` answers 404.
    pub static_dir: Option<PathBuf>,
    /// Answer a browser navigating to the channel path with the console
    /// page ([`crate::web::devconsole`]) instead of 406.
    pub devconsole: bool,
    /// Serve HTTPS (h2 and HTTP/1.1) with this certificate.
    pub tls: Option<super::TlsConfig>,
    /// Share channels with other servers through this Redis (PROTOCOL.md
    /// §8); `None` keeps them in this process.
    pub redis: Option<super::Redis>,
    /// Whether messages may carry line breaks (an application that reads
    /// one message per line refuses them).
    pub line_breaks: LineBreaks,
    /// Every path, the channel's included, lies below `/SECRET`; any other
    /// is 404. Only who was given the URL can reach anything. Set it with
    /// [`ServerConfig::with_secret`], which prefixes `path` too.
    pub secret: Option<String>,
    /// Asked before a `GET` opens a new channel (see [`Admission`]).
    pub admission: Option<Arc<dyn Admission>>,
    /// The protocol the endpoint speaks.
    pub protocol: Protocol,
    pub limits: Limits,
}

impl ServerConfig {
    /// Puts everything below `/SECRET` (see [`ServerConfig::secret`]).
    pub fn with_secret(mut self, secret: &str) -> Self {
        self.path = format!("/{secret}{}", self.path);
        self.secret = Some(secret.to_owned());
        self
    }
}

/// Which protocol the endpoint speaks; the channel core is the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Protocol {
    /// Dart package:sse's channels (PROTOCOL.md).
    #[default]
    Sse,
    /// MCP's Streamable HTTP (docs/mcp.md): each application side is a
    /// session, each of its SSE streams a channel.
    Mcp(McpConfig),
}

/// The bounds of MCP sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpConfig {
    /// A session with no request in flight and no stream open this long
    /// ends (its process too).
    pub session_idle: Duration,
    /// Streams a session may have open at once (each request answered as a
    /// stream, and the `GET` stream); more requests get 429.
    pub max_streams: usize,
    /// How long a request answered as `application/json` waits for its
    /// response.
    pub json_wait: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(600),
            max_streams: 64,
            json_wait: Duration::from_secs(300),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            path: "/sse".into(),
            keep_alive: None,
            heartbeat: Some(Duration::from_secs(15)),
            retry: Duration::from_millis(1000),
            origins: OriginPolicy::Any,
            allowed_hosts: Vec::new(),
            closed_id_memory: Duration::from_secs(300),
            first_message_wait: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            static_dir: None,
            devconsole: false,
            tls: None,
            redis: None,
            line_breaks: LineBreaks::Pass,
            secret: None,
            admission: None,
            protocol: Protocol::Sse,
            limits: Limits::default(),
        }
    }
}

/// Bounds on everything a peer can make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest POST body; bigger ones get 413 without being read.
    pub max_message_bytes: usize,
    /// How far past the next expected messageId a POST may be (else 429).
    pub reorder_window: u64,
    /// Bytes of out-of-order messages held per connection (else 429), each
    /// counted with a fixed overhead.
    pub reorder_bytes: usize,
    /// Messages queued for a connection's stream before it counts as a slow
    /// consumer and is disconnected.
    pub outgoing_messages: usize,
    /// Bytes queued for a connection's stream, likewise.
    pub outgoing_bytes: usize,
    /// Recent events kept per connection for `Last-Event-ID` replay.
    pub replay_events: usize,
    /// Bytes of recent events kept per connection for replay, each counted
    /// with a fixed overhead. The kernel send buffer of every connection is
    /// set to an eighth of this, so that what a dying connection swallows
    /// is still in the replay log when its client resumes.
    pub replay_bytes: usize,
    /// Connections at once, suspended ones included (else 503); 0 derives
    /// it from the open-file limit.
    pub max_clients: usize,
    /// TCP connections at once (else an immediate 503), so that accepting
    /// never fails for lack of descriptors; 0 derives it from the
    /// open-file limit, keeping [`FD_RESERVE`] spare.
    pub max_connections: usize,
    /// Longest accepted `sseClientId`, in bytes.
    pub max_client_id_len: usize,
    /// Received messages waiting for the application per connection; POSTs
    /// wait (backpressure) while it is full.
    pub incoming_messages: usize,
    /// Bytes of received messages waiting for the application per
    /// connection, bodies being read included; likewise.
    pub incoming_bytes: usize,
    /// Bytes of incoming messages held over all connections (waiting for
    /// the application, out of order, or being read): past it POSTs get 503.
    pub incoming_total: usize,
    /// Bytes remembered of closed client ids (their next messageId and
    /// acknowledged out-of-order messages); the oldest are forgotten first.
    pub closed_id_bytes: usize,
    /// New connections waiting for the application's `accept` (else 503).
    pub accept_queue: usize,
}

/// Descriptors kept spare when limits are derived from the open-file limit:
/// the listener, stdio, files, log output, and the refusals themselves.
pub const FD_RESERVE: usize = 256;

/// `--static` files open at once (within [`FD_RESERVE`]): a download larger
/// than a chunk holds its file until it ends, so slow readers could
/// otherwise take every descriptor. Past it: `503`, try again.
pub const STATIC_FILES_OPEN: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            reorder_window: 4096,
            reorder_bytes: 16 << 20,
            outgoing_messages: 65_536,
            outgoing_bytes: 16 << 20,
            replay_events: 16_384,
            replay_bytes: 256 << 10,
            max_clients: 0,
            max_connections: 0,
            max_client_id_len: 256,
            incoming_messages: 4096,
            incoming_bytes: 16 << 20,
            incoming_total: 256 << 20,
            closed_id_bytes: 64 << 20,
            accept_queue: 1024,
        }
    }
}

impl Limits {
    /// Fills in the bounds derived from `fd_limit`, the open-file limit in
    /// force: each client holds at least one socket and `extra_fds` more
    /// (a process per client holds three pipes).
    pub fn resolve(mut self, fd_limit: u64, extra_fds: usize) -> Self {
        let usable =
            usize::try_from(fd_limit).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE).max(1);
        if self.max_clients == 0 {
            self.max_clients = (usable / (1 + extra_fds)).max(1);
        }
        if self.max_connections == 0 {
            self.max_connections =
                usable.saturating_sub(self.max_clients.saturating_mul(extra_fds)).max(1);
        }
        self
    }

    /// The kernel send buffer asked for each connection: an eighth of the
    /// replay bytes, so the replay log covers what sits in the kernel.
    pub fn send_buffer(&self) -> usize {
        (self.replay_bytes / 8).clamp(8 << 10, 256 << 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_from_the_open_file_limit() {
        let l = Limits::default().resolve(20_000, 0);
        assert_eq!((l.max_clients, l.max_connections), (20_000 - FD_RESERVE, 20_000 - FD_RESERVE));
        // A process per client: three pipes each.
        let l = Limits::default().resolve(20_000, 3);
        assert_eq!(l.max_clients, (20_000 - FD_RESERVE) / 4);
        assert_eq!(l.max_connections, 20_000 - FD_RESERVE - 3 * l.max_clients);
        // What is set stays.
        let l = Limits { max_clients: 7, max_connections: 9, ..Limits::default() }.resolve(100, 3);
        assert_eq!((l.max_clients, l.max_connections), (7, 9));
        // No limit readable: still finite.
        let l = Limits::default().resolve(u64::MAX, 0);
        assert!(l.max_clients > 0 && l.max_connections > 0);
    }

    #[test]
    fn send_buffer_follows_replay() {
        assert_eq!(Limits::default().send_buffer(), 32 << 10);
        assert_eq!(Limits { replay_bytes: 0, ..Limits::default() }.send_buffer(), 8 << 10);
        assert_eq!(Limits { replay_bytes: 1 << 30, ..Limits::default() }.send_buffer(), 256 << 10);
    }
}
