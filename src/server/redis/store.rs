//! The [`ChannelStore`] through Redis: a `GET` attaches (resume,
//! takeover) or makes a channel homed here, a POST is one request to the
//! store, a `DELETE` too; broadcasts, counts and shutdown. The parts it
//! wires together each have one owner: the registry of homes and streams
//! ([`super::registry`]), the writer ([`super::ops`]), the reporter
//! ([`super::report`]), the lease ([`super::lease`]), the reader
//! ([`super::inbound`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::held::{Held, HeldEnv, HeldExit, HeldStream};
use super::home::{Home, HomeEnv, HomeExit, HomeSettings, Timers};
use super::link::{Header, Link, REQUEST_TIMEOUT, StoreError};
use super::notice::{self, Attached, How, Posted};
use super::ops::{Holders, Writer};
use super::owed::Owed;
use super::registry::Registry;
use super::report::Reporter;
use super::requests::{Request, Requests};
use super::{Redis, RedisConfig, inbound, lease};
use crate::server::app::{CloseInfo, CloseReason, Connection, ConnectionHandle};
use crate::server::channel::InboundError;
use crate::server::config::Limits;
use crate::server::deadlines::Deadlines;
use crate::server::memory::inbound_refusal;
use crate::server::metrics::{Counters, hold_within, release};
use crate::server::store::{
    ChannelStore, Counts, PostSlot, PostStep, Refusal, StoreFuture, StreamRequest, StreamSource,
};
use crate::server::wait;
use crate::text::escape_controls;

/// Events the attach's reply carries at most; a longer replay is read
/// from the store by the stream.
const ATTACH_PAGE: usize = 128;
/// Broadcasts kept in their stream for instances that lag behind.
const BROADCASTS_KEPT: usize = 10_000;
/// Highest messageId the store counts exactly (Lua numbers are doubles).
const MAX_MESSAGE_ID: u64 = 1 << 53;

/// What the store's requests use.
struct Parts {
    link: Link,
    requests: Requests,
    registry: Arc<Registry>,
    owed: Arc<Owed>,
    timers: Arc<Timers>,
    home_env: Arc<HomeEnv>,
    held_env: Arc<HeldEnv>,
    limits: Limits,
    keep_alive: Option<Duration>,
    post_wait: Duration,
    accept: Mutex<Option<mpsc::Sender<Connection>>>,
    stats: Arc<Counters>,
    shutting_down: AtomicBool,
    tokens: AtomicU64,
    /// True once the lease was first refreshed.
    joined: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct RedisStore {
    parts: Arc<Parts>,
}

impl RedisStore {
    /// A store handing new connections to `accept`; its tasks run on the
    /// current runtime until the store is shut down or dropped.
    pub(crate) fn start(
        redis: &Redis,
        config: RedisConfig,
        accept: mpsc::Sender<Connection>,
        stats: Arc<Counters>,
    ) -> Self {
        let settings = config.settings;
        let limits = settings.limits;
        let mut link = redis.link.clone();
        let mut header = (*link.header).clone();
        header.memory_ms = config.closed_id_memory.as_millis() as u64;
        header.bounds = Header::bounds_of(&limits, ATTACH_PAGE);
        link.header = Arc::new(header);
        let lease = Duration::from_millis(link.header.lease_ms);
        let (stop, stop_rx) = watch::channel(false);
        let (joined_tx, joined) = watch::channel(false);
        let requests = Requests::start(link.clone(), stop_rx.clone());
        let owed = Arc::new(Owed::new(requests.clone(), limits.max_connections, stop_rx.clone()));
        let reporter = Arc::new(Reporter::default());
        let registry = Arc::new(Registry::default());
        let timers: Arc<Timers> = Arc::new(Deadlines::new());
        let home_exit: Weak<dyn HomeExit> = Arc::downgrade(&registry) as _;
        let held_exit: Weak<dyn HeldExit> = Arc::downgrade(&registry) as _;
        let holders: Weak<dyn Holders> = Arc::downgrade(&registry) as _;
        let home_env = Arc::new(HomeEnv {
            settings: HomeSettings {
                keep_alive: settings.keep_alive,
                first_message_wait: settings.first_message_wait,
                close_watchdog: config.write_timeout + lease * 2,
                outgoing_messages: limits.outgoing_messages,
                outgoing_bytes: limits.outgoing_bytes,
            },
            writer: Writer::start(link.clone(), holders, stop_rx.clone()),
            timers: timers.clone(),
            stats: stats.clone(),
            reporter: Arc::downgrade(&reporter),
            exit: home_exit,
        });
        let held_env = Arc::new(HeldEnv {
            link: link.clone(),
            owed: owed.clone(),
            reporter: Arc::downgrade(&reporter),
            exit: held_exit,
            stats: stats.clone(),
            max_frame: settings.max_frame,
        });
        let parts = Arc::new(Parts {
            link: link.clone(),
            requests,
            registry: registry.clone(),
            owed: owed.clone(),
            timers: timers.clone(),
            home_env,
            held_env,
            limits,
            keep_alive: settings.keep_alive,
            post_wait: config.post_wait,
            accept: Mutex::new(Some(accept)),
            stats,
            shutting_down: AtomicBool::new(false),
            tokens: AtomicU64::new(1),
            joined,
            stop,
        });
        tokio::spawn(async move {
            timers
                .run(|(_, due), home: Weak<Home>| {
                    if let Some(home) = home.upgrade() {
                        home.fire(due);
                    }
                })
                .await
        });
        tokio::spawn(reporter.clone().run(link.clone(), owed, stop_rx.clone()));
        tokio::spawn(lease::heartbeat(link.clone(), lease, joined_tx, stop_rx.clone()));
        tokio::spawn(inbound::read_loop(link, registry, reporter, stop_rx));
        Self { parts }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        let _ = self.parts.stop.send(true);
        self.parts.timers.stop();
    }
}

fn unavailable(e: &StoreError) -> Refusal {
    Refusal::unavailable(format!("store unavailable: {e}"))
}

/// Room held for one POST's message here (its body while it is read).
struct RedisPost {
    parts: Arc<Parts>,
    cid: String,
    bytes: usize,
}

impl Drop for RedisPost {
    fn drop(&mut self) {
        release(&self.parts.stats.held, self.bytes);
    }
}

impl PostSlot for RedisPost {
    fn deliver(
        self: Box<Self>,
        message_id: u64,
        message: String,
    ) -> PostStep<'static, Result<(), Refusal>> {
        PostStep::waits(async move {
            let p = &self.parts;
            let window = p.limits.reorder_window;
            if message_id > MAX_MESSAGE_ID {
                let far = InboundError::TooFarAhead { next: 0, window };
                return Err(inbound_refusal(far, &self.cid, message_id));
            }
            let give_up = Instant::now() + p.post_wait;
            let mut pause = Duration::from_millis(5);
            loop {
                let post = Request::Post {
                    cid: self.cid.clone(),
                    id: message_id,
                    message: message.clone(),
                };
                let reply = p.requests.call(post).await.map_err(|e| unavailable(&e))?;
                let refused = |e| Err(inbound_refusal(e, &self.cid, message_id));
                match Posted::parse(&reply) {
                    Some(Posted::Stored | Posted::Duplicate) => return Ok(()),
                    Some(Posted::Unknown) => return refused(InboundError::Closed),
                    Some(Posted::AppGone) => return refused(InboundError::AppGone),
                    Some(Posted::TooFarAhead { next }) => {
                        return refused(InboundError::TooFarAhead { next, window });
                    }
                    Some(Posted::ReorderFull { bytes }) => {
                        return refused(InboundError::ReorderFull { bytes: bytes as usize });
                    }
                    Some(Posted::Full { limit }) => {
                        return Err(Refusal::unavailable(format!(
                            "server busy: out-of-order messages held in the store reached the limit of {limit} bytes"
                        )));
                    }
                    Some(Posted::HomeDead) => {
                        return Err(Refusal::unavailable(
                            "the instance serving this client's application is gone; its channel closes shortly",
                        ));
                    }
                    Some(Posted::Busy) => {
                        if Instant::now() + pause > give_up {
                            return Err(Refusal::app_behind(p.post_wait));
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(100));
                    }
                    None => return Err(unavailable(&StoreError::Reply)),
                }
            }
        })
    }
}

impl ChannelStore for RedisStore {
    fn open_stream(
        &self,
        req: StreamRequest,
    ) -> StoreFuture<'_, Result<Box<dyn StreamSource>, Refusal>> {
        Box::pin(self.open(req))
    }

    fn reserve<'a>(
        &'a self,
        client_id: &'a str,
        bytes: usize,
    ) -> PostStep<'a, Result<Box<dyn PostSlot>, Refusal>> {
        let p = &self.parts;
        let total = p.limits.incoming_total;
        let result = if p.shutting_down.load(Ordering::SeqCst) {
            Err(Refusal::unavailable("server is shutting down"))
        } else if !hold_within(&p.stats.held, bytes, total) {
            Err(Refusal::unavailable(format!(
                "server busy: incoming messages held reached the limit of {total} bytes"
            )))
        } else {
            let slot: Box<dyn PostSlot> =
                Box::new(RedisPost { parts: p.clone(), cid: client_id.to_owned(), bytes });
            Ok(slot)
        };
        PostStep::ready(result)
    }

    fn client_closed<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, Result<(), Refusal>> {
        Box::pin(async move {
            // Sends made here before the DELETE reach the store first.
            if let Some(home) = self.parts.registry.lookup(client_id) {
                home.sends_applied(Instant::now() + REQUEST_TIMEOUT).await;
            }
            let close = Request::ClientClosed { cid: client_id.to_owned() };
            let v = self.parts.requests.call(close).await.map_err(|e| unavailable(&e))?;
            match notice::int(&v) {
                Some(1) => Ok(()),
                _ => Err(Refusal::unknown_client(client_id)),
            }
        })
    }

    fn broadcast(&self, batch: Vec<Bytes>) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let mut took = 0;
            for data in batch {
                took = took.max(self.broadcast_one(data).await);
            }
            took
        })
    }

    fn metrics(&self) -> String {
        self.parts.link.metrics.render()
    }

    fn lookup(&self, client_id: &str) -> Option<ConnectionHandle> {
        let home = self.parts.registry.lookup(client_id)?;
        Some(ConnectionHandle { chan: home })
    }

    fn is_open<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            if self.lookup(client_id).is_some() {
                return true;
            }
            let link = &self.parts.link;
            let live = format!("{}live", link.header.prefix);
            let mut cmd = redis::cmd("SISMEMBER");
            cmd.arg(live).arg(client_id);
            match link.command(&cmd).await {
                Ok(redis::Value::Int(n)) => n == 1,
                Ok(other) => {
                    debug!(?other, "SISMEMBER answered no integer: taken as a new channel");
                    false
                }
                Err(e) => {
                    debug!("cannot tell whether the channel is open elsewhere ({e}): taken as new");
                    false
                }
            }
        })
    }

    fn counts(&self) -> Counts {
        let p = &self.parts;
        let homes = p.registry.live_homes();
        Counts {
            channels: homes.len(),
            suspended: homes.iter().filter(|h| h.is_suspended()).count(),
            streams: p.registry.helds().iter().filter(|h| h.is_attached()).count(),
            incoming_bytes: p.stats.held.load(Ordering::Relaxed),
            remembered_ids: 0,
            remembered_bytes: 0,
        }
    }

    fn begin_shutdown(&self) {
        let p = &self.parts;
        if p.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        lock(&p.accept).take();
        for h in p.registry.live_homes() {
            h.shutdown();
        }
        // Streams of channels homed elsewhere end without the control
        // close: their clients resume on another instance.
        let me = p.link.header.me.as_str();
        for h in p.registry.helds() {
            if h.home().is_some_and(|home| &*home != me) {
                h.end_here();
            }
        }
    }

    fn finish_shutdown(&self, grace: Duration) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let p = &self.parts;
            let (registry, closed) = (&p.registry, p.registry.closed_one());
            let deadline = Instant::now() + grace;
            wait::until(closed, Some(deadline), || registry.live_homes().is_empty()).await;
            let left = registry.live_homes();
            for h in &left {
                h.force_close();
            }
            // The store closes them and says so; what it does not confirm
            // in time is closed here (the store's side goes with `leave`).
            let confirm = Instant::now() + REQUEST_TIMEOUT * 2;
            wait::until(closed, Some(confirm), || left.iter().all(|h| h.is_closed())).await;
            for h in left {
                h.close_here(CloseInfo { reason: CloseReason::Shutdown, undelivered: 0 });
            }
            lease::leave(&p.link).await;
            let _ = p.stop.send(true);
        })
    }
}

impl RedisStore {
    /// One broadcast message: to the channels homed here first, in order
    /// with what this application sends them; the others through the store.
    async fn broadcast_one(&self, data: Bytes) -> usize {
        let p = &self.parts;
        let here = p.registry.broadcast_here(&data);
        let r = p
            .link
            .call("bcast", |inv| {
                inv.arg(data.as_ref()).arg(BROADCASTS_KEPT);
            })
            .await;
        match r.as_ref().ok().and_then(notice::array).and_then(|a| a.get(1).and_then(notice::int)) {
            Some(live) => (live as usize).max(here),
            None => {
                let why =
                    r.err().map_or_else(|| "a reply not understood".into(), |e| e.to_string());
                warn!("broadcast reached only the {here} channels homed on this instance: {why}");
                here
            }
        }
    }

    async fn open(&self, req: StreamRequest) -> Result<Box<dyn StreamSource>, Refusal> {
        let p = &self.parts;
        if p.shutting_down.load(Ordering::SeqCst) {
            return Err(Refusal::unavailable("server is shutting down"));
        }
        if req.layer.is_some() {
            // `serve --mcp` refuses --redis: see docs/mcp.md.
            return Err(Refusal::new(
                http::StatusCode::NOT_IMPLEMENTED,
                "this protocol's channels are not shared through Redis",
            ));
        }
        let mut joined = p.joined.clone();
        if tokio::time::timeout(REQUEST_TIMEOUT, joined.wait_for(|j| *j)).await.is_err() {
            return Err(Refusal::unavailable(
                "store unavailable: this instance has not joined yet",
            ));
        }
        let me = p.link.header.me.clone();
        let tok: Arc<str> = format!("{me}/{}", p.tokens.fetch_add(1, Ordering::Relaxed)).into();
        let cid: Arc<str> = Arc::from(req.client_id.as_str());
        let held = Held::new(cid.clone(), tok.clone(), p.held_env.clone());
        p.registry.add_held(held.clone());
        // May a new channel be made here? Decided before asking (its place
        // taken), used only if the store has none live for this id.
        let max = p.limits.max_clients;
        let room = p.registry.take_place(max);
        let permit = room
            .then(|| lock(&p.accept).as_ref().map(|tx| tx.clone().try_reserve_owned()))
            .flatten();
        if room && !matches!(permit, Some(Ok(_))) {
            p.registry.give_place();
        }
        let full = match (&permit, room) {
            (_, false) => format!("too many clients (limit {max})"),
            (None, true) => "server is shutting down".into(),
            (Some(Err(_)), true) => {
                "the application is not accepting new connections (accept queue full)".into()
            }
            (Some(Ok(_)), true) => String::new(),
        };
        let permit = permit.and_then(Result::ok);
        p.registry.attaching(&cid);
        let keep_alive = p.keep_alive.map_or(0, |k| k.as_millis() as u64);
        let last = req.last_event_id.map_or(-1, |l| l.min(MAX_MESSAGE_ID) as i64);
        let attach = Request::Attach {
            cid: cid.clone(),
            tok: tok.clone(),
            last,
            keep_alive,
            may_create: permit.is_some(),
        };
        let reply = p.requests.call(attach).await;
        let attached = reply.and_then(|v| Attached::parse(&v).ok_or(StoreError::Reply));
        // The place is the new home's, or given back.
        if permit.is_some() && !matches!(attached, Ok(Attached::New { .. })) {
            p.registry.give_place();
        }
        let client = escape_controls(&cid);
        let remote = req.info.remote;
        match attached {
            Err(e) => {
                let (_, homed) = p.registry.attached(&cid, None);
                p.registry.forget_held(&held);
                let (cid, tok, orphan) = (cid.clone(), tok.clone(), !homed);
                p.owed.retry_until_done("undoing an attach that timed out", move || {
                    Request::Abandon { cid: cid.clone(), tok: tok.clone(), orphan }
                });
                Err(unavailable(&e))
            }
            Ok(Attached::Full) => {
                let _ = p.registry.attached(&cid, None);
                p.registry.forget_held(&held);
                Err(Refusal::unavailable(full))
            }
            Ok(Attached::New { ser, next_message }) => {
                let home = Home::new(cid.clone(), ser, req.info, next_message, p.home_env.clone());
                let (kept, _) = p.registry.attached(&cid, Some(&home));
                for n in kept {
                    if n.home_target().is_some_and(|(_, s)| s == ser) {
                        home.notice(n);
                    }
                }
                held.start(ser, Arc::from(me.as_str()), 1, 0, Vec::new());
                info!(%client, %remote, first_message_id = next_message, "connected");
                Counters::add(&p.stats.channels_opened, 1);
                if let Some(permit) = permit {
                    permit.send(Connection::new(home));
                }
                Ok(Box::new(HeldStream { held }))
            }
            Ok(Attached::Existing { ser, home, start, last, how, ahead, replayed, events }) => {
                let _ = p.registry.attached(&cid, None);
                Counters::add(&p.stats.replayed, replayed);
                match how {
                    How::Resumed => {
                        Counters::add(&p.stats.resumes, 1);
                        info!(%client, %remote, home = %home, "resumed")
                    }
                    How::TookOver => {
                        Counters::add(&p.stats.takeovers, 1);
                        info!(%client, %remote, home = %home, "stream taken over by a new request")
                    }
                    How::Attached => debug!(%client, %remote, home = %home, "attached"),
                }
                if start <= last {
                    debug!(%client, start, last, "replaying from the store");
                }
                if ahead {
                    warn!(%client, last_event_id = req.last_event_id, sent_up_to = last, "Last-Event-ID is ahead of what was sent; ignored");
                }
                held.start(ser, Arc::from(home.as_str()), start, last, events);
                Ok(Box::new(HeldStream { held }))
            }
        }
    }
}
