//! The connections to Redis: one multiplexed connection (reconnected by
//! redis-rs' connection manager) that carries every script call of this
//! instance, pipelined, each bounded by a timeout; and the dedicated one of
//! the reader, whose `XREAD BLOCK` would hold up everything else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Value};
use thiserror::Error;

use crate::backoff::Backoff;

/// The function library every change of a channel goes through; its
/// `__LIBRARY__` is replaced by a name that changes with its text, so that
/// instances of different versions sharing a Redis each call their own.
const LIBRARY: &str = include_str!("channels.lua");

/// The library as loaded, and the name of its one function.
fn library() -> (String, String) {
    // The weights the memory store counts, so that both bound alike.
    let text = LIBRARY
        .replace("__ENTRY_OVERHEAD__", &crate::protocol::reorder::ENTRY_OVERHEAD.to_string())
        .replace("__REPLAY_OVERHEAD__", &crate::server::channel::REPLAY_OVERHEAD.to_string())
        .replace("__CLOSED_OVERHEAD__", &crate::server::memory::CLOSED_ENTRY_OVERHEAD.to_string());
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let name = format!("ssechan_{hash:016x}");
    (text.replace("__LIBRARY__", &name), name)
}

/// How long a request waits for Redis before its caller gives up (a POST
/// or a new stream then gets 503): well within the second the protocol
/// promises, and long enough for a busy Redis.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_millis(750);
/// How long the reader's `XREAD` blocks in Redis when nothing comes.
pub(crate) const READ_BLOCK: Duration = Duration::from_secs(1);

/// Why a request to Redis failed.
#[derive(Debug, Clone, Error)]
pub(crate) enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis is out of memory (its maxmemory is reached)")]
    Full,
    #[error("Redis: {0}")]
    Redis(String),
    #[error("Redis gave an answer this version of ssechan does not understand")]
    Reply,
    #[error("the server is stopping")]
    Stopped,
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if e.code() == Some("OOM") {
            return StoreError::Full;
        }
        StoreError::Redis(e.to_string())
    }
}

/// Operations called through the library's second function, which Redis
/// runs even when it is out of memory: they keep the instances alive and
/// free memory (a lease, a report that trims, leaving). Everything else is
/// refused then, so a POST gets 503 instead of growing a full Redis.
const WHEN_FULL: [&str; 3] = ["beat", "report", "leave"];

/// What every script call carries first.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub prefix: String,
    pub me: String,
    pub lease_ms: u64,
    pub memory_ms: u64,
    /// The bounds the library applies, as `channels.lua`'s `bounds` takes
    /// them: one argument, parsed once by the library.
    pub bounds: String,
}

impl Header {
    /// The bounds of `limits`, in the library's order, as one argument.
    pub(crate) fn bounds_of(limits: &crate::server::config::Limits, attach_page: usize) -> String {
        let n = |v: usize| v as u64;
        let all = [
            limits.reorder_window,
            n(limits.reorder_bytes),
            n(limits.incoming_messages),
            n(limits.incoming_bytes),
            n(limits.replay_events),
            n(limits.replay_bytes),
            n(attach_page),
            n(limits.outgoing_messages),
            n(limits.outgoing_bytes),
            n(limits.incoming_total),
            n(limits.closed_id_bytes),
            n(limits.max_clients),
        ];
        all.map(|v| v.to_string()).join(",")
    }
}

/// A connected Redis and what is needed to call the library.
#[derive(Clone)]
pub(crate) struct Link {
    client: Client,
    conn: ConnectionManager,
    /// The library's code and function name.
    library: Arc<(String, String)>,
    pub(crate) header: Arc<Header>,
    pub(crate) metrics: Arc<super::RedisMetrics>,
}

impl Link {
    /// Connects once (within `timeout`), then keeps the connection up.
    pub(crate) async fn connect(
        client: Client,
        header: Header,
        timeout: Duration,
    ) -> Result<Link, StoreError> {
        // One plain attempt first: its error is the clearest there is.
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut probe = client.get_multiplexed_async_connection_with_config(&cfg).await?;
        let _: Value = redis::cmd("PING").query_async(&mut probe).await?;
        let library = library();
        load(&mut probe, &library.0).await?;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REQUEST_TIMEOUT))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(5);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Link {
            client,
            conn,
            library: Arc::new(library),
            header: Arc::new(header),
            metrics: Arc::default(),
        })
    }

    /// Calls operation `op` of the library with the arguments `args` adds,
    /// within `timeout`. A Redis that lost the library (restarted without
    /// it) gets it again.
    pub(crate) async fn call_within(
        &self,
        timeout: Duration,
        op: &str,
        args: impl FnOnce(&mut Cmd),
    ) -> Result<Value, StoreError> {
        let h = &self.header;
        let mut cmd = redis::cmd("FCALL");
        if WHEN_FULL.contains(&op) {
            cmd.arg(format!("{}_free", self.library.1));
        } else {
            cmd.arg(&self.library.1);
        }
        cmd.arg(0).arg(&h.prefix).arg(op).arg(&h.me).arg(h.lease_ms).arg(h.memory_ms);
        cmd.arg(&h.bounds);
        args(&mut cmd);
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let attempt = async {
            match cmd.query_async::<Value>(&mut conn).await {
                Err(e) if e.to_string().contains("Function not found") => {
                    load(&mut conn, &self.library.0).await?;
                    cmd.query_async::<Value>(&mut conn).await
                }
                r => r,
            }
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Timeout(timeout)),
        };
        self.metrics.observe(started.elapsed(), result.is_ok());
        result
    }

    /// [`Self::call_within`] the [`REQUEST_TIMEOUT`].
    pub(crate) async fn call(
        &self,
        op: &str,
        args: impl FnOnce(&mut Cmd),
    ) -> Result<Value, StoreError> {
        self.call_within(REQUEST_TIMEOUT, op, args).await
    }

    /// A plain command (reads of the event streams) within the timeout.
    pub(crate) async fn command(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let result = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            cmd.query_async::<Value>(&mut conn),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(StoreError::Timeout(REQUEST_TIMEOUT)),
        };
        self.metrics.observe(started.elapsed(), result.is_ok());
        result
    }

    /// A connection of its own for the reader's blocking reads.
    pub(crate) async fn reader_connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REQUEST_TIMEOUT))
            .set_response_timeout(Some(READ_BLOCK + Duration::from_secs(2)));
        let connect = self.client.get_multiplexed_async_connection_with_config(&cfg);
        match tokio::time::timeout(REQUEST_TIMEOUT * 2, connect).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Timeout(REQUEST_TIMEOUT * 2)),
        }
    }

    pub(crate) fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.header.prefix)
    }
}

/// Loads (or replaces) the library.
async fn load(conn: &mut impl redis::aio::ConnectionLike, code: &str) -> redis::RedisResult<()> {
    redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(code).query_async::<Value>(conn).await?;
    Ok(())
}

/// The wait schedule of everything retried against Redis: 50 ms doubling
/// to `max`, never giving up.
pub(crate) fn retry(max: Duration) -> Backoff {
    Backoff::forever(Duration::from_millis(50), max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::Limits;

    #[test]
    fn bounds_go_in_the_order_the_library_reads_them() {
        let limits = Limits {
            reorder_window: 1,
            reorder_bytes: 2,
            incoming_messages: 3,
            incoming_bytes: 4,
            replay_events: 5,
            replay_bytes: 6,
            outgoing_messages: 8,
            outgoing_bytes: 9,
            incoming_total: 10,
            closed_id_bytes: 11,
            max_clients: 12,
            ..Limits::default()
        };
        assert_eq!(Header::bounds_of(&limits, 7), "1,2,3,4,5,6,7,8,9,10,11,12");
        let order = "WINDOW, QMAX, INMAX, INBMAX, REV, RBYTES, PAGE, OUTMAX, OUTBMAX, INTOT, CLOSEDMAX, CLOSEDIDS = unpack(b, 1, 12)";
        assert!(LIBRARY.contains(order), "channels.lua reads them in this order");
    }
}
