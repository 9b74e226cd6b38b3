//! The stores a channel can live in, for behaviours written once and run
//! on each (tests/store_conformance.rs): in this process, and in Redis (the
//! test binary's one redis-server, with a key prefix per server so that
//! tests share nothing).
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use ssechan::server::{Redis, RedisOptions, Server, ServerConfig};

use super::cluster::RedisServer;
use super::util::{Link, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `MemoryStore`: the channels of one process.
    Memory,
    /// `RedisStore`: channels shared by instances through a real redis-server.
    Redis,
}

impl Store {
    /// `config` served by this store: for Redis, a new instance of its own
    /// under a prefix no other server uses.
    pub async fn config(self, mut config: ServerConfig) -> ServerConfig {
        if self == Store::Redis {
            let options = RedisOptions {
                prefix: unique_prefix(),
                ..RedisOptions::new(RedisServer::shared().url())
            };
            let redis = Redis::connect(options).await.expect("connect to the test's redis-server");
            config.redis = Some(redis);
        }
        config
    }

    /// A server on this store, reached the `transport` way.
    pub async fn serve(self, transport: Transport, config: ServerConfig) -> (Server, Link) {
        transport.serve(self.config(config).await).await
    }
}

/// A Redis key prefix not used before in this test binary.
pub fn unique_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("t{}:", NEXT.fetch_add(1, Ordering::Relaxed))
}
