//! Server settings. Every bound of PROTOCOL.md §6 lives here with its default.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Origins allowed to use the channel; `None` allows every origin, as
    /// package:sse does.
    pub allowed_origins: Option<Vec<String>>,
    /// How long the next expected messageId of a closed client id is kept,
    /// so that a client that comes back keeps counting where it was.
    pub closed_id_memory: Duration,
    /// How long a new client id's out-of-order messages wait for the ones
    /// before them when nothing has been delivered yet. A client that
    /// outlived a server restart goes on counting from where it was, and
    /// the new server would otherwise wait for messageId 0 forever; after
    /// this it starts from the first message it has, and logs the gap.
    pub first_message_wait: Duration,
    /// Serve other paths (GET/HEAD) from this directory, canonical (see
    /// [`crate::web::static_files::check_root`]); `None` answers 404.
    pub static_dir: Option<PathBuf>,
    /// Answer a browser navigating to the channel path with the console
    /// page ([`crate::web::devconsole`]) instead of 406.
    pub devconsole: bool,
    /// Serve HTTPS (h2 and HTTP/1.1) with this certificate.
    pub tls: Option<super::TlsConfig>,
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            path: "/sse".into(),
            keep_alive: None,
            heartbeat: Some(Duration::from_secs(15)),
            retry: Duration::from_millis(1000),
            allowed_origins: None,
            closed_id_memory: Duration::from_secs(300),
            first_message_wait: Duration::from_secs(5),
            static_dir: None,
            devconsole: false,
            tls: None,
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
    /// Bytes of out-of-order messages held per connection (else 429).
    pub reorder_bytes: usize,
    /// Messages queued for a connection's stream before it counts as a slow
    /// consumer and is disconnected.
    pub outgoing_messages: usize,
    /// Bytes queued for a connection's stream, likewise.
    pub outgoing_bytes: usize,
    /// Recent events kept per connection for `Last-Event-ID` replay.
    pub replay_events: usize,
    /// Bytes of recent events kept per connection for replay.
    pub replay_bytes: usize,
    /// Connections at once, suspended ones included (else 503).
    pub max_clients: usize,
    /// Longest accepted `sseClientId`, in bytes.
    pub max_client_id_len: usize,
    /// Received messages waiting for the application per connection; POSTs
    /// wait (backpressure) while it is full.
    pub incoming_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 1 << 20,
            reorder_window: 4096,
            reorder_bytes: 16 << 20,
            outgoing_messages: 65_536,
            outgoing_bytes: 16 << 20,
            replay_events: 1024,
            replay_bytes: 1 << 20,
            max_clients: 100_000,
            max_client_id_len: 256,
            incoming_messages: 4096,
        }
    }
}
