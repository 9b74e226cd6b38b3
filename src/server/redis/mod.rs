//! The [`ChannelStore`] shared by several instances through Redis
//! (PROTOCOL.md §8). Each channel's state lives in Redis and changes only
//! through `channels.lua`, one atomic script call per change, whichever
//! instance makes it:
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
//! - Each instance reads one inbound stream (`XREAD BLOCK` on a connection
//!   of its own) for everything addressed to it: messages for its homes,
//!   events and detaches for its streams, lifecycle for its homes, plus the
//!   broadcast stream.
//! - Each instance refreshes a lease; the others close the channels homed
//!   on an instance whose lease ran out (control close) and suspend those
//!   whose stream it held.
//! - Redis unreachable: every request gives up after [`link::REQUEST_TIMEOUT`]
//!   (503 with the reason); open streams go on; everything else retries with
//!   backoff and recovers by itself.

mod held;
mod home;
mod link;
mod notice;
mod ops;
mod requests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use thiserror::Error;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::app::{Connection, ConnectionHandle};
use super::channel::{InboundError, Settings};
use super::config::Limits;
use super::deadlines::Deadlines;
use super::memory::inbound_refusal;
use super::metrics::Counters;
use super::store::{
    ChannelStore, Counts, PostSlot, Refusal, StoreFuture, StreamRequest, StreamSource,
};
use crate::text::escape_controls;
use held::{Held, HeldStream};
use home::Home;
use link::{Header, Link, REQUEST_TIMEOUT, StoreError};
use notice::{Attached, Broadcast, How, Notice, Posted};
use ops::Op;
use requests::{Request, Requests};

/// Events the attach's reply carries at most; a longer replay is read
/// from the store by the stream.
const ATTACH_PAGE: usize = 128;
/// How often streams' cursors and applications' progress go to the store.
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// Channels of a dead instance handled per heartbeat.
const REAP_BATCH: usize = 256;
/// Broadcasts kept in their stream for instances that lag behind.
const BROADCASTS_KEPT: usize = 10_000;
/// Highest messageId the store counts exactly (Lua numbers are doubles).
const MAX_MESSAGE_ID: u64 = 1 << 53;

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

/// Round trips to Redis: how many, how long, how many failed.
#[derive(Debug, Default)]
pub struct RedisMetrics {
    /// Counts of round trips at or under each bound of [`LATENCY_BOUNDS`],
    /// and above the last.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    errors: AtomicU64,
}

/// Bounds of the latency histogram, in seconds.
pub const LATENCY_BOUNDS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

impl RedisMetrics {
    fn observe(&self, took: Duration, ok: bool) {
        let s = took.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|b| s <= *b).unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus exposition of these figures.
    fn render(&self) -> String {
        use std::fmt::Write as _;
        let (cumulative, sum, errors) = self.snapshot();
        let name = "ssechan_redis_round_trip_seconds";
        let mut out = format!(
            "# HELP {name} Round trips to Redis (script calls and reads), failed ones included.\n# TYPE {name} histogram\n"
        );
        for (bound, n) in LATENCY_BOUNDS.iter().zip(&cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let total = cumulative.last().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {total}\n{name}_sum {sum}\n{name}_count {total}"
        );
        let errors_name = "ssechan_redis_errors_total";
        let _ = writeln!(
            out,
            "# HELP {errors_name} Round trips to Redis that failed or timed out.\n# TYPE {errors_name} counter\n{errors_name} {errors}"
        );
        out
    }

    /// Cumulative counts per bound of [`LATENCY_BOUNDS`] (then the total),
    /// the sum of the latencies in seconds, and the failures.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum, self.errors.load(Ordering::Relaxed))
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

/// Deadlines of homes: keep-alive (by epoch), first message, and the
/// watchdog of a close the store has not confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum DueKind {
    KeepAlive(u64),
    FirstMessage,
    Watchdog,
}

pub(crate) struct Due {
    home: Weak<Home>,
    kind: DueKind,
}

pub(crate) struct StoreConfig {
    pub settings: Settings,
    pub post_wait: Duration,
    /// How long a close may go unconfirmed before the home closes alone.
    pub close_watchdog: Duration,
    pub lease: Duration,
}

#[derive(Default)]
struct Homes {
    by_ser: HashMap<u64, Arc<Home>>,
    /// The newest live channel of each client id homed here.
    by_cid: HashMap<Arc<str>, u64>,
    /// Notices for channels being made here (attaches in flight by id).
    pending: HashMap<Arc<str>, (usize, Vec<Notice>)>,
}

/// What a holder tells the store when its stream ends.
#[derive(Clone)]
pub(crate) struct Ended {
    cid: Arc<str>,
    ser: u64,
    tok: Arc<str>,
    sent: u64,
    sent_cum: u64,
    flushed: bool,
    home: String,
    reason: &'static str,
    undelivered: u64,
}

type LostEvents = (Arc<str>, u64, u64, u64);

pub(crate) struct Shared {
    link: Link,
    requests: Requests,
    config: StoreConfig,
    homes: Mutex<Homes>,
    held: Mutex<HashMap<Arc<str>, Arc<Held>>>,
    ops: mpsc::UnboundedSender<Op>,
    deadlines: Arc<Deadlines<(u64, DueKind), Due>>,
    accept: Mutex<Option<mpsc::Sender<Connection>>>,
    stats: Arc<Counters>,
    shutting_down: AtomicBool,
    tokens: AtomicU64,
    /// Requests being retried until the store takes them (bounded by
    /// --max-connections: each is the end of a stream or an attach).
    owed: AtomicUsize,
    cursors: Mutex<Vec<Arc<Held>>>,
    taken: Mutex<Vec<Arc<Home>>>,
    /// Events found missing by streams: client id, serial, first, last.
    lost: Mutex<Vec<LostEvents>>,
    /// The inbound stream is read through this id (for trimming it).
    read_through: Mutex<Option<String>>,
    registered: watch::Sender<bool>,
    closed_one: Notify,
    stop: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct RedisStore {
    shared: Arc<Shared>,
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
        let mut link = redis.link.clone();
        let mut header = (*link.header).clone();
        header.memory_ms = config.closed_id_memory.as_millis() as u64;
        link.header = Arc::new(header);
        let lease = Duration::from_millis(link.header.lease_ms);
        // Bounded by its senders: each home holds at most its outgoing
        // queue's messages and bytes unapplied (a slow consumer past that).
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            requests: Requests::start(link.clone(), config.settings.limits, stop_rx.clone()),
            link: link.clone(),
            config: StoreConfig {
                settings: config.settings,
                post_wait: config.post_wait,
                close_watchdog: config.write_timeout + lease * 2,
                lease,
            },
            homes: Mutex::default(),
            held: Mutex::default(),
            ops: ops_tx,
            deadlines: Arc::new(Deadlines::new()),
            accept: Mutex::new(Some(accept)),
            stats,
            shutting_down: AtomicBool::new(false),
            tokens: AtomicU64::new(1),
            owed: AtomicUsize::new(0),
            cursors: Mutex::default(),
            taken: Mutex::default(),
            lost: Mutex::default(),
            read_through: Mutex::default(),
            registered: watch::channel(false).0,
            closed_one: Notify::new(),
            stop,
        });
        let deadlines = shared.deadlines.clone();
        tokio::spawn(async move {
            deadlines
                .run(|_, due: Due| {
                    if let Some(home) = due.home.upgrade() {
                        home.fire(due.kind);
                    }
                })
                .await
        });
        tokio::spawn(ops::run(link, config.settings.limits, ops_rx, stop_rx.clone()));
        tokio::spawn(heartbeat(shared.clone(), stop_rx.clone()));
        tokio::spawn(read_loop(shared.clone(), stop_rx.clone()));
        tokio::spawn(report_loop(shared.clone(), stop_rx));
        Self { shared }
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        let _ = self.shared.stop.send(true);
        self.shared.deadlines.stop();
    }
}

impl Shared {
    fn limits(&self) -> Limits {
        self.config.settings.limits
    }

    pub(crate) fn submit(&self, op: Op) {
        let _ = self.ops.send(op);
    }

    pub(crate) fn list_taken(&self, home: Arc<Home>) {
        lock(&self.taken).push(home);
    }

    pub(crate) fn list_cursor(&self, held: Arc<Held>) {
        lock(&self.cursors).push(held);
    }

    /// Bytes of incoming messages held here: POST bodies being stored
    /// and the applications' inboxes (the gauge `incoming_total` bounds).
    pub(crate) fn adjust_held(&self, by: isize) {
        let held = &self.stats.held;
        if by >= 0 {
            held.fetch_add(by as usize, Ordering::Relaxed);
        } else {
            let less = by.unsigned_abs();
            let _ = held.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(less))
            });
        }
    }

    pub(crate) fn stats(&self) -> &Counters {
        &self.stats
    }

    pub(crate) fn arm(&self, ser: u64, kind: DueKind, at: Option<(Duration, Due)>) {
        match at {
            Some((after, due)) => self.deadlines.arm((ser, kind), Instant::now() + after, due),
            None => self.deadlines.cancel(&(ser, kind)),
        }
    }

    pub(crate) fn home_closed(&self, home: &Home) {
        let mut homes = lock(&self.homes);
        homes.by_ser.remove(&home.ser);
        if homes.by_cid.get(&home.cid) == Some(&home.ser) {
            homes.by_cid.remove(&home.cid);
        }
        drop(homes);
        self.closed_one.notify_waiters();
    }

    pub(crate) fn forget_held(&self, held: &Held) {
        let mut map = lock(&self.held);
        if map.get(&held.tok).is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), held)) {
            map.remove(&held.tok);
        }
    }

    pub(crate) fn report_lost(&self, cid: Arc<str>, ser: u64, first: u64, last: u64) {
        lock(&self.lost).push((cid, ser, first, last));
    }

    /// Sends `request` until the store takes it (or the store stops).
    fn retry_until_done(
        self: &Arc<Self>,
        what: &'static str,
        request: impl Fn() -> Request + Send + 'static,
    ) {
        let limit = self.limits().max_connections;
        if self.owed.fetch_add(1, Ordering::SeqCst) >= limit {
            self.owed.fetch_sub(1, Ordering::SeqCst);
            warn!(
                "{what}: {limit} requests already wait for the store; this one is dropped (the instance's lease settles its channels when it leaves)"
            );
            return;
        }
        let (me, mut stop) = (self.clone(), self.stop.subscribe());
        tokio::spawn(async move {
            me.retry(what, request, &mut stop).await;
            me.owed.fetch_sub(1, Ordering::SeqCst);
        });
    }

    async fn retry(
        &self,
        what: &'static str,
        request: impl Fn() -> Request,
        stop: &mut watch::Receiver<bool>,
    ) {
        let mut retry = link::retry(Duration::from_secs(1));
        loop {
            match self.requests.call(request()).await {
                Ok(_) => return,
                Err(e) => debug!("{what}: {e}; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry.wait()) => {}
                _ = stop.changed() => return,
            }
        }
    }

    pub(crate) fn tell_ended(self: &Arc<Self>, e: Ended) {
        let e = Arc::new(e);
        self.retry_until_done("telling the store a stream ended", move || {
            Request::Ended((*e).clone())
        });
    }

    fn live_homes(&self) -> Vec<Arc<Home>> {
        lock(&self.homes).by_ser.values().filter(|h| !h.is_closed()).cloned().collect()
    }

    /// A notice from the inbound stream, to its home or stream here.
    fn dispatch(&self, n: Notice) {
        if let Some(tok) = n.held_target() {
            let held = lock(&self.held).get(tok).cloned();
            match held {
                Some(h) => h.notice(n),
                None => debug!("notice for a stream no longer here: {n:?}"),
            }
            return;
        }
        let Some((cid, ser)) = n.home_target() else { return };
        let mut homes = lock(&self.homes);
        if let Some(h) = homes.by_ser.get(&ser).cloned() {
            drop(homes);
            h.notice(n);
        } else if let Some((_, buffered)) = homes.pending.get_mut(cid) {
            buffered.push(n);
        } else if let Notice::Messages { messages, .. } = &n {
            // The store still gave this instance messages of a channel it
            // has ended here (a shutdown, or a home that stopped answering).
            warn!(
                client = %escape_controls(cid),
                count = messages.len(),
                "messages for a channel no longer open here: dropped"
            );
        }
    }

    /// A broadcast from another instance: to every channel homed here.
    fn broadcast_here(&self, data: &Bytes) -> usize {
        self.live_homes()
            .iter()
            .filter(|h| {
                use super::app::ChannelApp;
                h.send_encoded(data.clone()).is_ok()
            })
            .count()
    }
}

// --- the instance's tasks -----------------------------------------------------

/// Refreshes the lease every tenth of it, and closes what instances whose
/// lease ran out left behind, but only once this instance has itself been
/// connected for half a lease: after an outage everyone gets the time to
/// refresh before anyone is declared dead.
async fn heartbeat(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let every = s.config.lease / 10;
    let mut connected_since: Option<Instant> = None;
    let mut failing = false;
    loop {
        let reap = connected_since.is_some_and(|t| t.elapsed() >= s.config.lease / 2);
        let r = s
            .link
            .call_within(every.max(REQUEST_TIMEOUT), "beat", |inv| {
                inv.arg(if reap { "1" } else { "0" }).arg(REAP_BATCH);
            })
            .await;
        match r {
            Ok(v) => {
                connected_since.get_or_insert_with(Instant::now);
                if std::mem::take(&mut failing) {
                    info!("the store is reachable again");
                }
                s.registered.send_replace(true);
                let handled = notice::int(&v).unwrap_or(0);
                if handled > 0 {
                    info!(
                        channels = handled,
                        "closed or suspended the channels of instances whose lease ran out"
                    );
                }
            }
            Err(e) => {
                connected_since = None;
                if !std::mem::replace(&mut failing, true) {
                    warn!(
                        "the store is unreachable ({e}): POSTs and new streams get 503 until it is back"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Reads this instance's inbound stream and the broadcasts.
async fn read_loop(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let me = s.link.header.me.clone();
    let (in_key, b_key) = (s.link.key(&format!("i:{me}")), s.link.key("b"));
    let mut last_in = "0-0".to_owned();
    let mut last_b: Option<String> = None;
    let mut last_seq: Option<u64> = None;
    let mut conn = None;
    let mut retry = link::retry(Duration::from_secs(1));
    loop {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match s.link.reader_connection().await {
                Ok(c) => c,
                Err(e) => {
                    debug!("reader: {e}; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry.wait()) => continue,
                        _ = stop.changed() => return,
                    }
                }
            },
        };
        let read = async {
            if last_b.is_none() {
                // Broadcasts from now on: channels homed here are new.
                let v: Value = redis::cmd("XREVRANGE")
                    .arg(&b_key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut c)
                    .await?;
                let newest = notice::entries(&v).and_then(|e| e.into_iter().next());
                last_b = Some(newest.map_or_else(|| "0-0".to_owned(), |(id, _)| id));
            }
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT").arg(1024).arg("BLOCK").arg(link::READ_BLOCK.as_millis() as u64);
            cmd.arg("STREAMS").arg(&in_key).arg(&b_key).arg(&last_in).arg(last_b.as_deref());
            cmd.query_async::<Value>(&mut c).await
        };
        let reply = tokio::select! {
            r = read => r,
            _ = stop.changed() => return,
        };
        let streams = match reply.map(|v| notice::xread(&v)) {
            Ok(Some(streams)) => streams,
            Ok(None) => {
                warn!("the store's reply to a read was not understood");
                continue;
            }
            Err(e) => {
                debug!("reader: {e}; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(retry.wait()) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        retry.succeeded();
        conn = Some(c);
        let mut read_in = false;
        for (key, entries) in streams {
            for (id, fields) in entries {
                if key == in_key {
                    for n in Notice::parse_all(&fields) {
                        match n {
                            Some(n) => s.dispatch(n),
                            None => warn!("ignored a notice this version does not know ({id})"),
                        }
                    }
                    last_in = id;
                    read_in = true;
                } else if key == b_key {
                    if let Some(b) = Broadcast::parse(&fields) {
                        if let Some(prev) = last_seq
                            && b.seq > prev + 1
                        {
                            warn!(
                                lost = b.seq - prev - 1,
                                "broadcasts were gone from the store before this instance read them"
                            );
                        }
                        last_seq = Some(b.seq);
                        if b.origin != me {
                            s.broadcast_here(&b.data);
                        }
                    }
                    last_b = Some(id);
                }
            }
        }
        // Only news is worth a trim: an idle instance makes no report.
        if read_in {
            *lock(&s.read_through) = notice::next_id(&last_in);
        }
    }
}

/// Every [`REPORT_EVERY`]: the streams' cursors (bounding the queue and
/// the replay in the store), what the applications took (room for more
/// POSTs), events found missing, and how far the inbound stream was read.
async fn report_loop(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPORT_EVERY) => {}
            _ = stop.changed() => return,
        }
        let helds = std::mem::take(&mut *lock(&s.cursors));
        let homes = std::mem::take(&mut *lock(&s.taken));
        let lost = std::mem::take(&mut *lock(&s.lost));
        let read = lock(&s.read_through).take();
        let cursors: Vec<_> = helds.iter().filter_map(|h| Some((h.clone(), h.cursor()?))).collect();
        let taken: Vec<_> = homes
            .iter()
            .map(|h| (h.clone(), h.take_taken()))
            .filter(|(_, (n, _))| *n > 0)
            .collect();
        for (cid, ser, first, last) in lost {
            s.retry_until_done("reporting lost events", move || Request::Lost {
                cid: cid.clone(),
                ser,
                first,
                last,
            });
        }
        if cursors.is_empty() && taken.is_empty() && read.is_none() {
            continue;
        }
        let limits = s.limits();
        let r = s
            .link
            .call("report", |inv| {
                inv.arg(limits.replay_events)
                    .arg(limits.replay_bytes)
                    .arg(read.as_deref().unwrap_or(""));
                inv.arg(cursors.len());
                for (h, (ser, sent, cum)) in &cursors {
                    inv.arg(&*h.cid).arg(ser).arg(sent).arg(cum);
                }
                inv.arg(taken.len());
                for (h, (n, bytes)) in &taken {
                    inv.arg(&*h.cid).arg(h.ser).arg(n).arg(bytes);
                }
            })
            .await;
        if let Err(e) = r {
            debug!("report: {e}; again next time");
            for (h, _) in &cursors {
                h.unreport();
            }
            for (h, (n, bytes)) in taken {
                h.untake(n, bytes);
            }
            let mut rt = lock(&s.read_through);
            if rt.is_none() {
                *rt = read;
            }
        }
    }
}

// --- the seam -------------------------------------------------------------------

fn unavailable(e: &StoreError) -> Refusal {
    Refusal::unavailable(format!("store unavailable: {e}"))
}

/// Room held for one POST's message here (its body while it is read).
struct RedisPost {
    shared: Arc<Shared>,
    cid: String,
    bytes: usize,
}

impl Drop for RedisPost {
    fn drop(&mut self) {
        self.shared.adjust_held(-(self.bytes as isize));
    }
}

impl PostSlot for RedisPost {
    fn deliver(
        self: Box<Self>,
        message_id: u64,
        message: String,
    ) -> StoreFuture<'static, Result<(), Refusal>> {
        Box::pin(async move {
            let s = &self.shared;
            let limits = s.limits();
            if message_id > MAX_MESSAGE_ID {
                let far = InboundError::TooFarAhead { next: 0, window: limits.reorder_window };
                return Err(inbound_refusal(far, &self.cid, message_id));
            }
            let give_up = Instant::now() + s.config.post_wait;
            let mut pause = Duration::from_millis(5);
            loop {
                let post = Request::Post {
                    cid: self.cid.clone(),
                    id: message_id,
                    message: message.clone(),
                };
                let reply = s.requests.call(post).await.map_err(|e| unavailable(&e))?;
                let refused = |e| Err(inbound_refusal(e, &self.cid, message_id));
                match Posted::parse(&reply) {
                    Some(Posted::Stored | Posted::Duplicate) => return Ok(()),
                    Some(Posted::Unknown) => return refused(InboundError::Closed),
                    Some(Posted::AppGone) => return refused(InboundError::AppGone),
                    Some(Posted::TooFarAhead { next }) => {
                        return refused(InboundError::TooFarAhead {
                            next,
                            window: limits.reorder_window,
                        });
                    }
                    Some(Posted::ReorderFull { bytes }) => {
                        return refused(InboundError::ReorderFull { bytes: bytes as usize });
                    }
                    Some(Posted::HomeDead) => {
                        return Err(Refusal::unavailable(
                            "the instance serving this client's application is gone; its channel closes shortly",
                        ));
                    }
                    Some(Posted::Busy) => {
                        if Instant::now() + pause > give_up {
                            return Err(Refusal::app_behind(s.config.post_wait));
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
        _client_id: &'a str,
        bytes: usize,
    ) -> StoreFuture<'a, Result<Box<dyn PostSlot>, Refusal>> {
        let s = &self.shared;
        let total = s.limits().incoming_total;
        let result = if s.shutting_down.load(Ordering::SeqCst) {
            Err(Refusal::unavailable("server is shutting down"))
        } else if s.stats.held.load(Ordering::Relaxed) + bytes > total {
            Err(Refusal::unavailable(format!(
                "server busy: incoming messages held reached the limit of {total} bytes"
            )))
        } else {
            s.adjust_held(bytes as isize);
            let slot: Box<dyn PostSlot> =
                Box::new(RedisPost { shared: s.clone(), cid: _client_id.to_owned(), bytes });
            Ok(slot)
        };
        Box::pin(std::future::ready(result))
    }

    fn client_closed<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, Result<(), Refusal>> {
        Box::pin(async move {
            let close = Request::ClientClosed { cid: client_id.to_owned() };
            let v = self.shared.requests.call(close).await.map_err(|e| unavailable(&e))?;
            match notice::int(&v) {
                Some(1) => Ok(()),
                _ => Err(Refusal::unknown_client(client_id)),
            }
        })
    }

    fn broadcast(&self, data: Bytes) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let s = &self.shared;
            // Channels homed here first, in order with what this
            // application sends them; the others through the store.
            let here = s.broadcast_here(&data);
            let r = s
                .link
                .call("bcast", |inv| {
                    inv.arg(data.as_ref()).arg(BROADCASTS_KEPT);
                })
                .await;
            match r
                .as_ref()
                .ok()
                .and_then(notice::array)
                .and_then(|a| a.get(1).and_then(notice::int))
            {
                Some(live) => (live as usize).max(here),
                None => {
                    let why =
                        r.err().map_or_else(|| "a reply not understood".into(), |e| e.to_string());
                    warn!(
                        "broadcast reached only the {here} channels homed on this instance: {why}"
                    );
                    here
                }
            }
        })
    }

    fn metrics(&self) -> String {
        self.shared.link.metrics.render()
    }

    fn lookup(&self, client_id: &str) -> Option<ConnectionHandle> {
        let homes = lock(&self.shared.homes);
        let ser = homes.by_cid.get(client_id)?;
        let home = homes.by_ser.get(ser)?.clone();
        Some(ConnectionHandle { chan: home })
    }

    fn counts(&self) -> Counts {
        let homes = self.shared.live_homes();
        Counts {
            channels: homes.len(),
            suspended: homes.iter().filter(|h| h.is_suspended()).count(),
            streams: lock(&self.shared.held).values().filter(|h| h.is_attached()).count(),
            incoming_bytes: self.shared.stats.held.load(Ordering::Relaxed),
            remembered_ids: 0,
            remembered_bytes: 0,
        }
    }

    fn begin_shutdown(&self) {
        let s = &self.shared;
        if s.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        lock(&s.accept).take();
        for h in s.live_homes() {
            h.shutdown();
        }
        // Streams of channels homed elsewhere end without the control
        // close: their clients resume on another instance.
        let me = s.link.header.me.as_str();
        let held: Vec<Arc<Held>> = lock(&s.held).values().cloned().collect();
        for h in held {
            if h.home().is_some_and(|home| &*home != me) {
                h.end_here();
            }
        }
    }

    fn finish_shutdown(&self, grace: Duration) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let s = &self.shared;
            let deadline = Instant::now() + grace;
            loop {
                let closed = s.closed_one.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if s.live_homes().is_empty() {
                    break;
                }
                if tokio::time::timeout_at(deadline, closed).await.is_err() {
                    break;
                }
            }
            let left = s.live_homes();
            for h in &left {
                h.force_close();
            }
            // The store closes them and says so; what it does not confirm
            // in time is closed here (the store's side goes with `leave`).
            let confirm = Instant::now() + REQUEST_TIMEOUT * 2;
            loop {
                let closed = s.closed_one.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if left.iter().all(|h| h.is_closed()) {
                    break;
                }
                if tokio::time::timeout_at(confirm, closed).await.is_err() {
                    break;
                }
            }
            for h in left {
                h.closed_notice(super::app::CloseInfo {
                    reason: super::app::CloseReason::Shutdown,
                    undelivered: 0,
                });
            }
            // A batch per call, all within the time one call may take.
            let left = async {
                loop {
                    let n = s.link.call("leave", |inv| {
                        inv.arg(REAP_BATCH);
                    });
                    if matches!(n.await?, Value::Int(0)) {
                        return Ok::<_, StoreError>(());
                    }
                }
            };
            let left = tokio::time::timeout(REQUEST_TIMEOUT, left).await;
            if let Err(e) = left.map_err(|_| StoreError::Timeout(REQUEST_TIMEOUT)).and_then(|r| r) {
                warn!(
                    "could not leave the store cleanly ({e}): the others will close what is left after the lease"
                );
            }
            let _ = s.stop.send(true);
        })
    }
}

impl RedisStore {
    async fn open(&self, req: StreamRequest) -> Result<Box<dyn StreamSource>, Refusal> {
        let s = &self.shared;
        if s.shutting_down.load(Ordering::SeqCst) {
            return Err(Refusal::unavailable("server is shutting down"));
        }
        if req.layer.is_some() {
            // `serve --mcp` refuses --redis: see docs/mcp.md.
            return Err(Refusal::new(
                http::StatusCode::NOT_IMPLEMENTED,
                "this protocol's channels are not shared through Redis",
            ));
        }
        let mut registered = s.registered.subscribe();
        if tokio::time::timeout(REQUEST_TIMEOUT, registered.wait_for(|r| *r)).await.is_err() {
            return Err(Refusal::unavailable(
                "store unavailable: this instance has not joined yet",
            ));
        }
        let me = s.link.header.me.clone();
        let tok: Arc<str> = format!("{me}/{}", s.tokens.fetch_add(1, Ordering::Relaxed)).into();
        let cid: Arc<str> = Arc::from(req.client_id.as_str());
        let held = Held::new(cid.clone(), tok.clone(), Arc::downgrade(s));
        lock(&s.held).insert(tok.clone(), held.clone());
        // May a new channel be made here? Decided before asking, used only
        // if the store has none live for this id.
        let limits = s.limits();
        // Closed homes leave `by_ser` (home_closed): no need to visit each.
        let room = lock(&s.homes).by_ser.len() < limits.max_clients;
        let permit = room
            .then(|| lock(&s.accept).as_ref().map(|tx| tx.clone().try_reserve_owned()))
            .flatten();
        let full = match (&permit, room) {
            (_, false) => format!("too many clients (limit {})", limits.max_clients),
            (None, true) => "server is shutting down".into(),
            (Some(Err(_)), true) => {
                "the application is not accepting new connections (accept queue full)".into()
            }
            (Some(Ok(_)), true) => String::new(),
        };
        let permit = permit.and_then(Result::ok);
        lock(&s.homes).pending.entry(cid.clone()).or_default().0 += 1;
        let keep_alive = s.config.settings.keep_alive.map_or(0, |k| k.as_millis() as u64);
        let last = req.last_event_id.map_or(-1, |l| l.min(MAX_MESSAGE_ID) as i64);
        let attach = Request::Attach {
            cid: cid.clone(),
            tok: tok.clone(),
            last,
            keep_alive,
            may_create: permit.is_some(),
        };
        let reply = s.requests.call(attach).await;
        let attached = reply.and_then(|v| Attached::parse(&v).ok_or(StoreError::Reply));
        let mut homes = lock(&s.homes);
        let buffered = match homes.pending.get_mut(&cid) {
            Some((n, buf)) => {
                *n -= 1;
                if *n == 0 {
                    homes.pending.remove(&cid).map(|(_, b)| b).unwrap_or_default()
                } else {
                    std::mem::take(buf)
                }
            }
            None => Vec::new(),
        };
        let attached =
            match attached {
                Ok(a) => a,
                Err(e) => {
                    let orphan = !homes.by_cid.contains_key(&cid);
                    drop(homes);
                    s.forget_held(&held);
                    let (cid, tok) = (cid.clone(), tok.clone());
                    s.retry_until_done("undoing an attach that timed out", move || {
                        Request::Abandon { cid: cid.clone(), tok: tok.clone(), orphan }
                    });
                    return Err(unavailable(&e));
                }
            };
        let client = escape_controls(&cid);
        let remote = req.info.remote;
        match attached {
            Attached::Full => {
                drop(homes);
                s.forget_held(&held);
                Err(Refusal::unavailable(full))
            }
            Attached::New { ser, next_message } => {
                let home = Home::new(cid.clone(), ser, req.info, next_message, Arc::downgrade(s));
                homes.by_ser.insert(ser, home.clone());
                homes.by_cid.insert(cid.clone(), ser);
                drop(homes);
                for n in buffered {
                    if n.home_target().is_some_and(|(_, s)| s == ser) {
                        home.notice(n);
                    }
                }
                held.start(ser, Arc::from(me.as_str()), 1, 0, Vec::new());
                info!(%client, %remote, first_message_id = next_message, "connected");
                Counters::add(&s.stats.channels_opened, 1);
                if let Some(p) = permit {
                    p.send(Connection::new(home));
                }
                Ok(self.stream(held))
            }
            Attached::Existing { ser, home, start, last, how, ahead, replayed, events } => {
                drop(homes);
                Counters::add(&s.stats.replayed, replayed);
                match how {
                    How::Resumed => {
                        Counters::add(&s.stats.resumes, 1);
                        info!(%client, %remote, home = %home, "resumed")
                    }
                    How::TookOver => {
                        Counters::add(&s.stats.takeovers, 1);
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
                Ok(self.stream(held))
            }
        }
    }

    fn stream(&self, held: Arc<Held>) -> Box<dyn StreamSource> {
        Box::new(HeldStream { held, max_frame: self.shared.config.settings.max_frame })
    }
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

    #[test]
    fn the_latency_histogram_is_cumulative() {
        let m = RedisMetrics::default();
        m.observe(Duration::from_micros(80), true);
        m.observe(Duration::from_millis(3), false);
        m.observe(Duration::from_secs(5), true);
        let (buckets, sum, errors) = m.snapshot();
        assert_eq!(buckets.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!((buckets[0], buckets[5], buckets[11], buckets[12]), (1, 2, 2, 3));
        assert_eq!(errors, 1);
        assert!((sum - 5.00308).abs() < 1e-6, "{sum}");
        let text = m.render();
        assert!(
            text.contains("ssechan_redis_round_trip_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ssechan_redis_round_trip_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("ssechan_redis_round_trip_seconds_count 3\n"), "{text}");
        assert!(text.contains("\nssechan_redis_errors_total 1\n"), "{text}");
    }
}
