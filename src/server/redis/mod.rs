//! The [`ChannelStore`](super::store::ChannelStore) shared by several
//! instances through Redis (PROTOCOL.md §8). Each channel's shared state
//! lives in Redis and changes only through `channels.lua`, one atomic
//! script call per change, whichever instance makes it:
//!
//! - A channel has a *home*, the instance that got its first `GET`: its
//!   application lives there ([`home`]). Its stream and its POSTs may reach
//!   any instance.
//! - A POST is one script call: deduplicated, re-ordered and bounded in
//!   Redis, and its message, once in order, appended to the home's inbound
//!   stream. So exactly-once and order hold whichever instance gets it.
//! - What the application sends is appended to the channel's event stream
//!   in Redis (our event id is the entry id, `0-N`) by the home's writer
//!   ([`ops`], batched, in order), and a notice with the events goes to the
//!   instance holding the stream ([`held`]), which writes them. A resume on
//!   any instance replays from the event stream after `Last-Event-ID`.
//! - Each instance reads one inbound stream ([`inbound`]) for everything
//!   addressed to it: messages for its homes, events and detaches for its
//!   streams, lifecycle for its homes, plus the broadcast stream.
//! - Each instance refreshes a lease ([`lease`]); the others close the
//!   channels homed on an instance whose lease ran out (control close) and
//!   suspend those whose stream it held.
//! - Out-of-order messages and closed ids kept in Redis count against
//!   budgets kept in Redis, changed in the same call as the data.
//! - Redis unreachable: every request gives up after [`link::REQUEST_TIMEOUT`]
//!   (503 with the reason); open streams go on; everything else retries with
//!   backoff and recovers by itself.
//!
//! What is decided where: the script decides what must be atomic across
//! instances (which stream is the channel's, suspension and close, the
//! order and deduplication of messages, the budgets); what one instance
//! keeps is a plain value that takes an input and returns effects, applied
//! after its lock ([`home`]'s `HomeState`, [`held`]'s `HeldState`). One
//! owner per part: [`store`] implements the seam, [`registry`] owns the
//! maps of homes and streams, [`ops`] writes, [`report`] reports progress,
//! [`owed`] retries what must reach the store, [`lease`] and [`inbound`]
//! run the instance's tasks.

mod held;
mod home;
mod inbound;
mod lease;
mod link;
mod metrics;
mod notice;
mod ops;
mod owed;
mod registry;
mod report;
mod requests;
mod store;

use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;
use tracing::info;

use super::channel::Settings;
use link::{Header, Link};
pub use metrics::{LATENCY_BOUNDS, RedisMetrics};
pub(crate) use store::RedisStore;

/// Where the instances share their channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://` for TLS.
    pub url: String,
    /// An instance that has not refreshed its lease for this long is dead:
    /// the others close the channels homed on it. A store outage shorter
    /// than this (less a tenth) closes no channel.
    pub lease: Duration,
    /// Prefix of every key, so that separate clusters can share a Redis.
    pub prefix: String,
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), lease: Duration::from_secs(10), prefix: "ssechan:".into() }
    }
}

/// Why Redis could not be used.
#[derive(Debug, Error)]
pub enum RedisError {
    #[error("bad Redis URL {url}: {reason} (expected redis://HOST:PORT/DB or rediss://…)")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

/// A connected Redis: set it as [`super::ServerConfig::redis`] and the
/// server shares its channels with every other server using the same
/// Redis and prefix. Each server needs its own (it is the server's
/// identity among the instances).
#[derive(Clone)]
pub struct Redis {
    link: Link,
    shown: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.shown)
            .field("instance", &self.instance())
            .finish()
    }
}

/// `url` without its password, for messages.
fn shown_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() => {
            let host = &url[at + 1..];
            let user = rest.split_once('@').map(|(u, _)| u).unwrap_or_default();
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

impl Redis {
    /// Connects once; an unreachable Redis is an error at once.
    pub async fn connect(options: RedisOptions) -> Result<Redis, RedisError> {
        Self::connect_waiting(options, Duration::ZERO).await
    }

    /// Connects, trying again with backoff for up to `wait` while Redis is
    /// unreachable (it may be starting too).
    pub async fn connect_waiting(
        options: RedisOptions,
        wait: Duration,
    ) -> Result<Redis, RedisError> {
        let shown = shown_url(&options.url);
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| RedisError::BadUrl { url: shown.clone(), reason: e.to_string() })?;
        let me = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let header = Header {
            prefix: options.prefix.clone(),
            me,
            lease_ms: options.lease.as_millis() as u64,
            memory_ms: 0,
            // The store's, once it starts: nothing is called before.
            bounds: String::new(),
        };
        let give_up = Instant::now() + wait;
        let mut retry = link::retry(Duration::from_secs(2));
        loop {
            match Link::connect(client.clone(), header.clone(), Duration::from_secs(2)).await {
                Ok(link) => return Ok(Redis { link, shown }),
                Err(e) => {
                    let pause = retry.wait();
                    if Instant::now() + pause > give_up {
                        return Err(RedisError::Unreachable { url: shown, reason: e.to_string() });
                    }
                    info!("Redis at {shown} is not reachable yet ({e}); trying again");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// This server's name among the instances.
    pub fn instance(&self) -> &str {
        &self.link.header.me
    }

    /// The URL, without a password.
    pub fn url(&self) -> &str {
        &self.shown
    }
}

/// What the store needs from the server's configuration.
#[derive(Debug, Clone)]
pub(crate) struct RedisConfig {
    pub settings: Settings,
    /// How long the next expected messageId of a closed id is kept.
    pub closed_id_memory: Duration,
    /// How long a POST waits for the application to make room.
    pub post_wait: Duration,
    /// A stream that makes no progress this long ends.
    pub write_timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(shown_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(shown_url("redis://:secret@host:1/2"), "redis://:***@host:1/2");
        assert_eq!(shown_url("rediss://me:p@ss@host"), "rediss://me:***@host");
    }
}
