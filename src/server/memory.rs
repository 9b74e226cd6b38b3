//! The in-process [`ChannelStore`]: a registry of channels, each a
//! [`Channel`] state machine behind a mutex. The [`Registry`] is the only
//! code that touches the maps; its lock is held for map work only, and
//! everything a transition asks for (wakes, deadlines, retiring, logs) is
//! done by [`Conn::apply`] after the channel's lock is released.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::app::{
    ChannelApp, CloseReason, Connection, ConnectionEvent, ConnectionHandle, RequestInfo, SendError,
};
use super::channel::broadcast::{self, BroadcastLog};
use super::channel::{Batch, Channel, Deadline, Effects, InboundError, Log, Settings, Timer};
use super::deadlines::Deadlines;
use super::metrics::{Counters, hold_within};
use super::store::{
    ChannelStore, Counts, PostSlot, PostStep, Refusal, StoreFuture, StreamItem, StreamRequest,
    StreamSource,
};
use super::wait;
use crate::protocol::reorder::ReorderBuffer;
use crate::text::escape_controls;

/// The longest a broadcast waits for lagging streams to catch up.
const BROADCAST_WAIT: Duration = Duration::from_millis(50);

/// What remembering one closed id costs besides its key and held messages.
pub(crate) const CLOSED_ENTRY_OVERHEAD: usize = 128;

/// What the store needs from the server's configuration.
#[derive(Debug, Clone)]
pub(crate) struct MemoryConfig {
    pub settings: Settings,
    /// How long the next expected messageId of a closed id is kept.
    pub closed_id_memory: Duration,
    /// How long a POST waits for room before it is refused.
    pub post_wait: Duration,
}

/// Keys of the deadline map: a channel's serial and which deadline, or
/// the sweep of remembered closed ids (serial 0).
type DueKey = (u64, DueKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum DueKind {
    KeepAlive,
    FirstMessage,
    ClosedIds,
}

enum Due {
    Channel(Weak<Conn>, Deadline),
    ClosedIds,
}

/// Where a new channel's application side goes.
enum AppSide {
    Accept(tokio::sync::mpsc::OwnedPermit<Connection>),
    Layer(tokio::sync::oneshot::Sender<Connection>),
}

pub(crate) struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    config: MemoryConfig,
    registry: Mutex<Registry>,
    /// The broadcast events channels may replay, held once for all. Locked
    /// last: after the registry, or a channel (a resume reads it), never
    /// before either.
    broadcasts: Mutex<BroadcastLog>,
    /// Held by a broadcast from before its append to the log until every
    /// channel has its batch: channels get batches in the log's order.
    /// Taken before the registry and the log.
    broadcasting: Mutex<()>,
    /// Channels whose stream lags behind the broadcasts
    /// ([`Effects::backlogged`]), and their catching up.
    backlogged: AtomicUsize,
    caught_up: Notify,
    deadlines: Arc<Deadlines<DueKey, Due>>,
    serials: AtomicU64,
    accept: Mutex<Option<mpsc::Sender<Connection>>>,
    stats: Arc<Counters>,
    shutting_down: AtomicBool,
    /// Channels that were open when shutdown began.
    closing: Mutex<Vec<Arc<Conn>>>,
    closed_one: Notify,
}

impl MemoryStore {
    /// A store handing new connections to `accept`; its deadline task
    /// runs on the current runtime until the store is dropped.
    pub(crate) fn new(
        config: MemoryConfig,
        accept: mpsc::Sender<Connection>,
        stats: Arc<Counters>,
    ) -> Self {
        let broadcasts = Mutex::new(BroadcastLog::for_limits(&config.settings.limits));
        let shared = Arc::new(Shared {
            config,
            registry: Mutex::new(Registry::default()),
            broadcasts,
            broadcasting: Mutex::new(()),
            backlogged: AtomicUsize::new(0),
            caught_up: Notify::new(),
            deadlines: Arc::new(Deadlines::new()),
            serials: AtomicU64::new(1),
            accept: Mutex::new(Some(accept)),
            stats,
            shutting_down: AtomicBool::new(false),
            closing: Mutex::new(Vec::new()),
            closed_one: Notify::new(),
        });
        let (deadlines, weak) = (shared.deadlines.clone(), Arc::downgrade(&shared));
        // Holds the store only while firing; `MemoryStore::drop` stops it.
        tokio::spawn(async move {
            deadlines
                .run(|_, due| match due {
                    Due::Channel(conn, which) => {
                        if let Some(conn) = conn.upgrade() {
                            conn.update(|c| ((), c.deadline(which)));
                        }
                    }
                    Due::ClosedIds => {
                        if let Some(s) = weak.upgrade() {
                            s.sweep_closed();
                        }
                    }
                })
                .await
        });
        Self { shared }
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.shared.deadlines.stop();
    }
}

impl Shared {
    fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_broadcasts(&self) -> MutexGuard<'_, BroadcastLog> {
        self.broadcasts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settings(&self) -> Settings {
        self.config.settings
    }

    /// Applies a channel's deadline requests.
    fn timers(&self, conn: &Conn, keep_alive: Option<(u64, Timer)>, first: Option<Timer>) {
        let now = Instant::now();
        if let Some((epoch, t)) = keep_alive {
            let key = (conn.serial, DueKind::KeepAlive);
            match t {
                Timer::Arm(after) => self.deadlines.arm(
                    key,
                    now + after,
                    Due::Channel(conn.me.clone(), Deadline::KeepAlive { epoch }),
                ),
                Timer::Cancel => self.deadlines.cancel(&key),
            }
        }
        if let Some(t) = first {
            let key = (conn.serial, DueKind::FirstMessage);
            match t {
                Timer::Arm(after) => self.deadlines.arm(
                    key,
                    now + after,
                    Due::Channel(conn.me.clone(), Deadline::FirstMessage),
                ),
                Timer::Cancel => self.deadlines.cancel(&key),
            }
        }
    }

    /// Removes a closing channel and remembers its re-order state.
    fn retire(&self, conn: &Conn, inbound: ReorderBuffer<String>) {
        let limits = self.config.settings.limits;
        let remember = !self.config.closed_id_memory.is_zero();
        let mut reg = self.lock_registry();
        let (forgotten, dropped, arm) = reg.retire(
            conn,
            inbound,
            remember,
            Instant::now(),
            self.config.closed_id_memory,
            ClosedBounds { count: limits.max_clients, bytes: limits.closed_id_bytes },
        );
        drop(reg);
        if let Some(at) = arm {
            self.deadlines.arm((0, DueKind::ClosedIds), at, Due::ClosedIds);
        }
        if forgotten > 0 {
            warn!(
                messages = forgotten,
                "forgot acknowledged out-of-order messages of closed client ids (closed-id memory full)"
            );
        }
        if dropped > 0 {
            warn!(client = %escape_controls(&conn.id), messages = dropped, "acknowledged out-of-order messages dropped with their connection");
        }
    }

    fn sweep_closed(&self) {
        let mut reg = self.lock_registry();
        let (forgotten, next) = reg.sweep(Instant::now(), self.config.closed_id_memory);
        drop(reg);
        if let Some(at) = next {
            self.deadlines.arm((0, DueKind::ClosedIds), at, Due::ClosedIds);
        }
        if forgotten > 0 {
            warn!(
                messages = forgotten,
                "forgot acknowledged out-of-order messages of closed client ids (memory period over)"
            );
        }
    }

    fn all_conns(&self) -> Vec<Arc<Conn>> {
        self.lock_registry().live.values().cloned().collect()
    }

    /// Appends `batch` to the log and queues it, one entry, in every live
    /// channel; returns how many channels took some of it. One broadcast
    /// at a time, so that two at once cannot reach a channel in the other
    /// order than the log's (its replay would map ids to the log out of
    /// order, and a gap could be reported early). `appended` runs between
    /// the append and the hand-off, `blocked` when another broadcast holds
    /// the turn: tests hold a broadcast there.
    fn broadcast(&self, batch: &[Bytes], appended: impl FnOnce(), blocked: impl FnOnce()) -> usize {
        let _turn = match self.broadcasting.try_lock() {
            Ok(turn) => turn,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                blocked();
                self.broadcasting.lock().unwrap_or_else(|e| e.into_inner())
            }
        };
        let conns = self.all_conns();
        if conns.is_empty() {
            // No channel refers to the log (checked under the registry
            // lock, which a new channel takes): a later one starts afresh.
            let reg = self.lock_registry();
            if reg.live.is_empty() {
                self.lock_broadcasts().clear();
            }
            return 0;
        }
        let events = self.lock_broadcasts().append(batch);
        appended();
        let (mut took, mut sent) = (0, 0);
        for c in &conns {
            let n = c.update(|ch| ch.send_all(&events));
            took += usize::from(n > 0);
            sent += n as u64;
        }
        Counters::add(&self.stats.messages_out, sent);
        took
    }
}

// --- the registry -----------------------------------------------------------

/// The live channels and the remembered closed ids, behind the store's
/// registry lock: the counts admission reads here (clients against
/// `max_clients`, remembered ids and bytes against their bounds) are
/// checked and changed under that one lock, so they are exact. A closing
/// channel counts as a client until it is retired (it still holds memory).
#[derive(Default)]
struct Registry {
    live: HashMap<Arc<str>, Arc<Conn>>,
    /// Re-order state of recently closed client ids (PROTOCOL §3): the next
    /// expected messageId and any acknowledged out-of-order messages.
    closed: HashMap<Arc<str>, (Instant, ReorderBuffer<String>)>,
    closed_order: VecDeque<(Instant, Arc<str>)>,
    /// What `closed` weighs: keys, held messages and entry overhead.
    closed_bytes: usize,
    sweep_armed: bool,
}

#[derive(Clone, Copy)]
struct ClosedBounds {
    count: usize,
    bytes: usize,
}

fn closed_weight(id: &str, r: &ReorderBuffer<String>) -> usize {
    id.len() + r.buffered_bytes() + CLOSED_ENTRY_OVERHEAD
}

impl Registry {
    /// The live channel of `id`, if any.
    fn get(&self, id: &str) -> Option<Arc<Conn>> {
        self.live.get(id).cloned()
    }

    /// Takes the remembered re-order state of a closed id coming back.
    fn take_remembered(&mut self, id: &str) -> Option<ReorderBuffer<String>> {
        let (_, r) = self.closed.remove(id)?;
        self.closed_bytes -= closed_weight(id, &r);
        Some(r)
    }

    fn insert(&mut self, conn: Arc<Conn>) {
        self.live.insert(conn.id.clone(), conn);
    }

    /// Removes `conn` if it is still the live channel of its id and keeps
    /// its re-order state. Returns messages forgotten to make room, those
    /// dropped because nothing is remembered, and when to sweep next.
    fn retire(
        &mut self,
        conn: &Conn,
        inbound: ReorderBuffer<String>,
        remember: bool,
        now: Instant,
        memory: Duration,
        bounds: ClosedBounds,
    ) -> (usize, usize, Option<Instant>) {
        let current = self.live.get(&conn.id).is_some_and(|c| std::ptr::eq(Arc::as_ptr(c), conn));
        if current {
            self.live.remove(&conn.id);
        }
        if !current || !remember {
            return (0, inbound.buffered(), None);
        }
        self.remember(&conn.id, inbound, now, memory, bounds)
    }

    /// Keeps the re-order state of a closed `id` for `memory`, forgetting
    /// the oldest to stay within `bounds`.
    fn remember(
        &mut self,
        id: &Arc<str>,
        inbound: ReorderBuffer<String>,
        now: Instant,
        memory: Duration,
        bounds: ClosedBounds,
    ) -> (usize, usize, Option<Instant>) {
        let weight = closed_weight(id, &inbound);
        let mut forgotten = 0;
        while self.closed_bytes + weight > bounds.bytes || self.closed.len() >= bounds.count {
            let Some((at, old)) = self.closed_order.pop_front() else { break };
            forgotten += self.forget_if_from(&old, at);
        }
        if weight > bounds.bytes {
            return (forgotten, inbound.buffered(), None);
        }
        if let Some((_, old)) = self.closed.insert(id.clone(), (now, inbound)) {
            self.closed_bytes -= closed_weight(id, &old);
        }
        self.closed_bytes += weight;
        self.closed_order.push_back((now, id.clone()));
        // An id that comes back leaves a stale entry behind: an id closing
        // and returning in a loop must not grow the order without bound.
        if self.closed_order.len() > 2 * self.closed.len() + 64 {
            let closed = &self.closed;
            self.closed_order.retain(|(at, id)| closed.get(id).is_some_and(|(t, _)| t == at));
        }
        let arm = (!self.sweep_armed).then(|| {
            self.sweep_armed = true;
            now + memory
        });
        (forgotten, 0, arm)
    }

    /// Forgets `id` if its entry is still the one remembered `at` (else the
    /// id came back, and maybe closed again since); returns the messages it
    /// held.
    fn forget_if_from(&mut self, id: &Arc<str>, at: Instant) -> usize {
        if self.closed.get(id).is_none_or(|(t, _)| *t != at) {
            return 0;
        }
        match self.closed.remove(id) {
            Some((_, r)) => {
                self.closed_bytes -= closed_weight(id, &r);
                r.buffered()
            }
            None => 0,
        }
    }

    /// Forgets what has been remembered for `memory`; returns the messages
    /// forgotten and when to sweep next.
    fn sweep(&mut self, now: Instant, memory: Duration) -> (usize, Option<Instant>) {
        let mut forgotten = 0;
        while let Some((at, id)) = self.closed_order.front().cloned() {
            if now.duration_since(at) < memory {
                self.sweep_armed = true;
                return (forgotten, Some(at + memory));
            }
            self.closed_order.pop_front();
            forgotten += self.forget_if_from(&id, at);
        }
        self.sweep_armed = false;
        (forgotten, None)
    }
}

// --- one channel ------------------------------------------------------------

/// A channel and the wakers of the tasks waiting on it.
struct Slot {
    chan: Channel,
    stream_waker: Option<Waker>,
    app_waker: Option<Waker>,
    /// The channel's part of the server's held-bytes total.
    held: HeldShare,
}

/// A locked [`Slot`]: unlocking brings the server's held-bytes total along
/// to what the channel holds, whatever the transition was, so no change to
/// the total is applied after the lock that decided it.
struct Locked<'a> {
    slot: MutexGuard<'a, Slot>,
    total: &'a AtomicUsize,
}

impl<'a> Locked<'a> {
    fn new(slot: &'a Mutex<Slot>, total: &'a AtomicUsize) -> Self {
        // A panic while holding this lock leaves plain data behind: go on.
        Self { slot: slot.lock().unwrap_or_else(|e| e.into_inner()), total }
    }

    /// Room for a POST: see [`Slot::reserve`].
    fn reserve(&mut self, bytes: usize, limit: usize) -> Result<bool, NoRoom> {
        let total = self.total;
        self.slot.reserve(bytes, limit, total)
    }
}

impl std::ops::Deref for Locked<'_> {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        &self.slot
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Slot {
        &mut self.slot
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Runs before the guard (a field) unlocks.
        let total = self.total;
        self.slot.settle(total);
    }
}

/// See [`Slot::take_for`]: wakers to wake and the re-order state of a
/// retiring channel, handled once the slot is unlocked.
struct Taken {
    stream: Option<Waker>,
    app: Option<Waker>,
    inbound: Option<ReorderBuffer<String>>,
}

/// Why a POST got no room.
#[derive(Debug, PartialEq, Eq)]
enum NoRoom {
    /// The server's total would pass `--max-incoming-total`.
    Busy,
    Refused(InboundError),
}

impl Slot {
    fn new(chan: Channel, total: &AtomicUsize) -> Self {
        let mut slot = Slot { chan, stream_waker: None, app_waker: None, held: HeldShare(0) };
        // A returning id brings its remembered out-of-order messages.
        slot.settle(total);
        slot
    }

    /// Brings the server's total along to what the channel holds now (done
    /// by [`Locked`] on unlocking).
    fn settle(&mut self, total: &AtomicUsize) {
        self.held.settle(self.chan.held_bytes(), total);
    }

    /// What a transition's effects take from the slot before it unlocks.
    fn take_for(&mut self, fx: &Effects) -> Taken {
        Taken {
            stream: if fx.wake_stream { self.stream_waker.take() } else { None },
            app: if fx.wake_app { self.app_waker.take() } else { None },
            inbound: fx.retire.then(|| self.chan.take_inbound()),
        }
    }

    /// Room for a POST of `bytes`: in the channel, and in the server's
    /// total up to `limit`, both decided here. `Ok(false)`: the channel is
    /// full, wait for room.
    fn reserve(&mut self, bytes: usize, limit: usize, total: &AtomicUsize) -> Result<bool, NoRoom> {
        match self.chan.reserve(bytes) {
            Ok(true) if self.held.admit(bytes, limit, total) => Ok(true),
            Ok(true) => {
                // Undone before anyone could see it: no room to announce.
                let _ = self.chan.unreserve(bytes);
                Err(NoRoom::Busy)
            }
            Ok(false) => Ok(false),
            Err(e) => Err(NoRoom::Refused(e)),
        }
    }
}

/// A channel's part of the server's held-bytes total ([`Counters::held`],
/// which admission reads). It lives in the [`Slot`], so it changes only
/// with the channel locked, and every change reaches the total before the
/// lock is released: the total is, at every instant, the sum of the parts.
/// (Applying a change after the lock let a decrease land before its
/// increase: the unsigned total wrapped, and a POST elsewhere read it as
/// full.) Checked for every interleaving in `tests::held_total`.
#[derive(Debug, Default)]
struct HeldShare(usize);

impl HeldShare {
    /// The channel now holds `held`: the total follows.
    fn settle(&mut self, held: usize, total: &AtomicUsize) {
        if held > self.0 {
            total.fetch_add(held - self.0, Ordering::Relaxed);
        } else if held < self.0 {
            // This part is in the total, so the total cannot go below 0.
            total.fetch_sub(self.0 - held, Ordering::Relaxed);
        }
        self.0 = held;
    }

    /// Takes `bytes` more if the total stays within `limit`.
    fn admit(&mut self, bytes: usize, limit: usize, total: &AtomicUsize) -> bool {
        let taken = hold_within(total, bytes, limit);
        if taken {
            self.0 += bytes;
        }
        taken
    }
}

/// The shared state of one connection: the stream, the POST handlers and
/// the application all reach it.
pub(crate) struct Conn {
    /// This connection, for deadlines that must not keep it alive.
    me: Weak<Conn>,
    id: Arc<str>,
    /// Unique per channel, unlike ids, which come back.
    serial: u64,
    info: RequestInfo,
    slot: Mutex<Slot>,
    /// Room for incoming messages was freed.
    room: Notify,
    /// The channel closed.
    closed: Notify,
    stats: Arc<Counters>,
    store: Weak<Shared>,
}

impl Conn {
    fn lock(&self) -> Locked<'_> {
        Locked::new(&self.slot, &self.stats.held)
    }

    /// Runs one transition and applies its effects.
    fn update<R>(&self, f: impl FnOnce(&mut Channel) -> (R, Effects)) -> R {
        let mut slot = self.lock();
        let (r, fx) = f(&mut slot.chan);
        self.apply(slot, fx);
        r
    }

    /// Everything a transition asked for, in order, after the lock: the
    /// one place where wakers are taken, deadlines armed, channels retired
    /// and transitions logged.
    fn apply(&self, mut slot: Locked<'_>, fx: Effects) {
        let Taken { stream, app, inbound } = slot.take_for(&fx);
        // Counted before the unlock: its catching up, counted after some
        // later unlock, cannot come first.
        let store = (fx.backlogged || fx.caught_up).then(|| self.store.upgrade()).flatten();
        if let Some(s) = &store
            && fx.backlogged
        {
            s.backlogged.fetch_add(1, Ordering::SeqCst);
        }
        drop(slot);
        if let Some(s) = store
            && fx.caught_up
        {
            s.backlogged.fetch_sub(1, Ordering::SeqCst);
            s.caught_up.notify_waiters();
        }
        if let Some(w) = stream {
            w.wake();
        }
        if let Some(w) = app {
            w.wake();
        }
        if fx.room {
            self.room.notify_waiters();
        }
        if fx.closed {
            self.closed.notify_waiters();
            // A shutdown waits for every channel's end, not for its grace.
            if let Some(s) = self.store.upgrade()
                && s.shutting_down.load(Ordering::SeqCst)
            {
                s.closed_one.notify_waiters();
            }
        }
        // Counters are the Conn's own Arc: the hot paths (a send, a batch)
        // touch no shared reference count.
        let c = &*self.stats;
        Counters::add(&c.messages_in, fx.delivered);
        Counters::add(&c.replayed, fx.replayed);
        for log in &fx.logs {
            match log {
                Log::Resumed => Counters::add(&c.resumes, 1),
                Log::TookOver => Counters::add(&c.takeovers, 1),
                Log::SlowConsumer { .. } => Counters::add(&c.slow_consumers, 1),
                Log::Gap { first, last } => Counters::add(&c.gap_events, last - first + 1),
                _ => {}
            }
        }
        let timers = fx.keep_alive.is_some() || fx.first_message.is_some();
        let store = (timers || inbound.is_some()).then(|| self.store.upgrade()).flatten();
        if let Some(store) = store {
            if timers {
                store.timers(self, fx.keep_alive, fx.first_message);
            }
            if let Some(inbound) = inbound {
                store.retire(self, inbound);
            }
        }
        for log in &fx.logs {
            self.log(log);
        }
    }

    fn log(&self, log: &Log) {
        let client = escape_controls(&self.id);
        let remote = self.info.remote;
        match log {
            Log::Resumed => info!(%client, %remote, "resumed"),
            Log::TookOver => info!(%client, %remote, "stream taken over by a new request"),
            Log::StreamLost { keep_alive } => {
                info!(%client, "stream lost; keep-alive {}", humantime::format_duration(*keep_alive))
            }
            Log::Dropped => info!(%client, "stream dropped by server"),
            Log::Closing(reason) => {
                if *reason != CloseReason::Closed {
                    info!(%client, "closing: {reason}")
                }
            }
            Log::Closed(c) if c.undelivered > 0 => {
                warn!(%client, undelivered = c.undelivered, "closed ({}) with undelivered messages", c.reason)
            }
            Log::Closed(c) => info!(%client, "closed ({})", c.reason),
            Log::Gap { first, last } => warn!(
                %client,
                lost = last - first + 1,
                "resume from Last-Event-ID {} is older than the replay buffer: events {first}..={last} are lost",
                first - 1
            ),
            Log::LastEventIdAhead { last, sent_up_to } => {
                warn!(%client, last, sent_up_to, "Last-Event-ID is ahead of what was sent; ignored")
            }
            Log::SlowConsumer { queued, queued_bytes } => warn!(
                %client, queued, queued_bytes, "slow consumer: outgoing queue full, disconnecting"
            ),
            Log::SkippedToFirst { start, wait } => warn!(
                %client,
                "messages 0..{start} never arrived in {wait:?} (a client that outlived a server restart?); starting from messageId {start}"
            ),
            Log::UnreadMessages { count } => {
                warn!(%client, count, "the application dropped the connection with messages unread")
            }
        }
    }
}

impl ChannelApp for Conn {
    fn id(&self) -> &str {
        &self.id
    }

    fn info(&self) -> &RequestInfo {
        &self.info
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        let mut slot = self.lock();
        let (ev, fx) = slot.chan.recv();
        match ev {
            Some(ev) => {
                drop(slot);
                if fx.room {
                    self.room.notify_waiters();
                }
                Poll::Ready(Some(ev))
            }
            None if slot.chan.is_done() => Poll::Ready(None),
            None => {
                wait::register(&mut slot.app_waker, cx);
                Poll::Pending
            }
        }
    }

    fn send_encoded(&self, data: Bytes) -> Result<(), SendError> {
        let sent = self.update(|c| c.send(data));
        if sent.is_ok() {
            Counters::add(&self.stats.messages_out, 1);
        }
        sent
    }

    fn close(&self) {
        self.update(|c| ((), c.close(CloseReason::Closed)))
    }

    fn close_when_delivered(&self) {
        self.update(|c| ((), c.close_when_delivered(CloseReason::Closed)))
    }

    fn drop_stream(&self) {
        self.update(|c| ((), c.drop_stream()))
    }

    fn is_live(&self) -> bool {
        self.lock().chan.is_live()
    }

    fn app_gone(&self) {
        self.update(|c| ((), c.app_dropped()))
    }

    fn closed(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            wait::until(&self.closed, None, || self.lock().chan.is_closed()).await;
        })
    }
}

// --- streams and POSTs --------------------------------------------------------

struct MemoryStream {
    conn: Arc<Conn>,
    generation: u64,
}

impl StreamSource for MemoryStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<StreamItem> {
        let mut slot = self.conn.lock();
        let (batch, fx) = slot.chan.next_batch(self.generation);
        let item = match batch {
            Batch::Pending => {
                wait::register(&mut slot.stream_waker, cx);
                return Poll::Pending;
            }
            Batch::Data(bytes, events) => {
                Counters::add(&self.conn.stats.frames, 1);
                Counters::add(&self.conn.stats.events, events);
                Counters::add(&self.conn.stats.bytes_out, bytes.len() as u64);
                StreamItem::Data(bytes)
            }
            Batch::Final => StreamItem::Final,
            Batch::End => StreamItem::End,
        };
        self.conn.apply(slot, fx);
        Poll::Ready(item)
    }

    fn probe(&self) -> super::stream::DetachProbe {
        let (conn, generation) = (self.conn.clone(), self.generation);
        Arc::new(move |cx| {
            let mut slot = conn.lock();
            if !slot.chan.is_attached(generation) {
                return true;
            }
            wait::register(&mut slot.stream_waker, cx);
            false
        })
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        let generation = self.generation;
        self.conn.update(|c| ((), c.stream_ended(generation)));
    }
}

/// Room reserved in a channel for one POST's message.
struct MemoryPost {
    conn: Arc<Conn>,
    bytes: usize,
    delivered: bool,
}

impl PostSlot for MemoryPost {
    fn deliver(
        mut self: Box<Self>,
        message_id: u64,
        message: String,
    ) -> PostStep<'static, Result<(), Refusal>> {
        self.delivered = true;
        let bytes = self.bytes;
        let result = self.conn.update(|c| c.offer(message_id, message, bytes));
        PostStep::ready(match result {
            Ok(_) => Ok(()),
            Err(e) => Err(inbound_refusal(e, &self.conn.id, message_id)),
        })
    }
}

impl Drop for MemoryPost {
    fn drop(&mut self) {
        if !self.delivered {
            let bytes = self.bytes;
            self.conn.update(|c| ((), c.unreserve(bytes)));
        }
    }
}

pub(crate) fn inbound_refusal(e: InboundError, client_id: &str, message_id: u64) -> Refusal {
    use http::StatusCode;
    match e {
        InboundError::Closed => Refusal::unknown_client(client_id),
        InboundError::AppGone => {
            Refusal::unavailable("the application is not reading this client's messages")
        }
        InboundError::TooFarAhead { next, window } => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "messageId {message_id} is more than {window} ahead of the next expected id {next}"
            ),
        ),
        InboundError::ReorderFull { bytes } => Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("re-order buffer full ({bytes} bytes waiting for earlier messages)"),
        ),
    }
}

impl MemoryStore {
    /// A new channel for `req`, registered; its application side goes to
    /// the accept queue, or to the protocol layer that opened it.
    fn create(
        &self,
        reg: &mut Registry,
        req: &mut StreamRequest,
    ) -> Result<(Arc<Conn>, u64, AppSide), Refusal> {
        let s = &self.shared;
        let limits = s.config.settings.limits;
        if reg.live.len() >= limits.max_clients {
            return Err(Refusal::unavailable(format!(
                "too many clients (limit {})",
                limits.max_clients
            )));
        }
        let (app, first_event_id) = match req.layer.as_mut() {
            None => (AppSide::Accept(self.accept_permit()?), 1),
            Some(layer) => match layer.create.take() {
                Some(new) => (AppSide::Layer(new.app), new.first_event_id),
                None => return Err(Refusal::unknown_client(&req.client_id)),
            },
        };
        let remembered = reg.take_remembered(&req.client_id);
        let mut chan = Channel::new(s.settings(), remembered).starting_at(first_event_id);
        let (generation, fx) = chan.attach(None, &broadcast::EMPTY);
        debug_assert!(fx == Effects::default());
        let generation = generation.unwrap_or(1);
        let conn = Arc::new_cyclic(|me| Conn {
            me: me.clone(),
            id: Arc::from(req.client_id.as_str()),
            serial: s.serials.fetch_add(1, Ordering::Relaxed),
            info: req.info.clone(),
            slot: Mutex::new(Slot::new(chan, &s.stats.held)),
            room: Notify::new(),
            closed: Notify::new(),
            stats: s.stats.clone(),
            store: Arc::downgrade(s),
        });
        reg.insert(conn.clone());
        Counters::add(&s.stats.channels_opened, 1);
        Ok((conn, generation, app))
    }

    /// Room in the accept queue for one new connection.
    fn accept_permit(&self) -> Result<tokio::sync::mpsc::OwnedPermit<Connection>, Refusal> {
        let permit = self
            .shared
            .accept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|tx| tx.clone().try_reserve_owned());
        match permit {
            Some(Ok(p)) => Ok(p),
            Some(Err(_)) => Err(Refusal::unavailable(
                "the application is not accepting new connections (accept queue full)",
            )),
            None => Err(Refusal::unavailable("server is shutting down")),
        }
    }

    fn stream(&self, conn: Arc<Conn>, generation: u64) -> Box<dyn StreamSource> {
        Box::new(MemoryStream { conn, generation })
    }
}

impl ChannelStore for MemoryStore {
    fn open_stream(
        &self,
        req: StreamRequest,
    ) -> StoreFuture<'_, Result<Box<dyn StreamSource>, Refusal>> {
        let result = self.open_now(req);
        Box::pin(std::future::ready(result))
    }

    fn reserve<'a>(
        &'a self,
        client_id: &'a str,
        bytes: usize,
    ) -> PostStep<'a, Result<Box<dyn PostSlot>, Refusal>> {
        let s = &self.shared;
        let conn = s.lock_registry().get(client_id);
        let Some(conn) = conn else {
            return PostStep::ready(Err(Refusal::unknown_client(client_id)));
        };
        let total = s.config.settings.limits.incoming_total;
        let reserve = move |conn: &Conn| match conn.lock().reserve(bytes, total) {
            Ok(room) => Ok(room),
            Err(NoRoom::Busy) => Err(Refusal::unavailable(format!(
                "server busy: incoming messages held reached the limit of {total} bytes"
            ))),
            Err(NoRoom::Refused(e)) => Err(inbound_refusal(e, client_id, 0)),
        };
        let post = move |conn| -> Box<dyn PostSlot> {
            Box::new(MemoryPost { conn, bytes, delivered: false })
        };
        // The common case takes one lock and decides at once: no waiter,
        // no clock, no boxed future.
        match reserve(&conn) {
            Ok(true) => return PostStep::ready(Ok(post(conn))),
            Err(r) => return PostStep::ready(Err(r)),
            Ok(false) => {}
        }
        PostStep::waits(async move {
            debug!(client = %escape_controls(client_id), "application queue full; POST waits");
            let deadline = Instant::now() + s.config.post_wait;
            loop {
                // Registered before the check: room freed in between wakes it.
                let room = conn.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                if reserve(&conn)? {
                    break;
                }
                if tokio::time::timeout_at(deadline, room).await.is_err() {
                    return Err(Refusal::app_behind(s.config.post_wait));
                }
            }
            Ok(post(conn))
        })
    }

    fn client_closed<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, Result<(), Refusal>> {
        let conn = self.shared.lock_registry().get(client_id);
        let result = match conn {
            Some(conn) => {
                conn.update(|c| ((), c.client_closed()));
                Ok(())
            }
            None => Err(Refusal::unknown_client(client_id)),
        };
        Box::pin(std::future::ready(result))
    }

    fn broadcast(&self, batch: Vec<Bytes>) -> StoreFuture<'_, usize> {
        let s = &self.shared;
        let took = s.broadcast(&batch, || {}, || {});
        Box::pin(async move {
            // A source faster than the streams (a pipe on stdin) waits
            // for them, a while: the streams are not made slow consumers
            // by the server's own pace. One slow reader holds up
            // `LAG_BROADCASTS` broadcasts in a row at most, this long each
            // (channel::Lag), then fills its queue and is disconnected.
            if s.backlogged.load(Ordering::SeqCst) > 0 {
                let deadline = Instant::now() + BROADCAST_WAIT;
                wait::until(&s.caught_up, Some(deadline), || {
                    s.backlogged.load(Ordering::SeqCst) == 0
                })
                .await;
            }
            took
        })
    }

    fn is_open<'a>(&'a self, client_id: &'a str) -> StoreFuture<'a, bool> {
        let open = self.lookup(client_id).is_some();
        Box::pin(std::future::ready(open))
    }

    fn lookup(&self, client_id: &str) -> Option<ConnectionHandle> {
        let conn = self.shared.lock_registry().get(client_id)?;
        Some(ConnectionHandle { chan: conn })
    }

    fn counts(&self) -> Counts {
        let s = &self.shared;
        let (conns, remembered_ids, remembered_bytes) = {
            let reg = s.lock_registry();
            (reg.live.values().cloned().collect::<Vec<_>>(), reg.closed.len(), reg.closed_bytes)
        };
        let (mut suspended, mut streams) = (0, 0);
        for c in &conns {
            let slot = c.lock();
            suspended += usize::from(slot.chan.is_suspended());
            streams += usize::from(slot.chan.has_stream());
        }
        Counts {
            channels: conns.len(),
            suspended,
            streams,
            incoming_bytes: s.stats.held.load(Ordering::Relaxed),
            remembered_ids,
            remembered_bytes,
        }
    }

    fn begin_shutdown(&self) {
        let s = &self.shared;
        if s.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        // No new connections: `Server::accept` ends once the queue drains.
        s.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        let conns = s.all_conns();
        for c in &conns {
            c.update(|ch| ((), ch.close(CloseReason::Shutdown)));
        }
        s.closing.lock().unwrap_or_else(|e| e.into_inner()).extend(conns);
    }

    fn finish_shutdown(&self, grace: Duration) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let s = &self.shared;
            let closing = std::mem::take(&mut *s.closing.lock().unwrap_or_else(|e| e.into_inner()));
            let deadline = Instant::now() + grace;
            let all_closed = || closing.iter().all(|c| c.lock().chan.is_closed());
            wait::until(&s.closed_one, Some(deadline), all_closed).await;
            // Opened meanwhile, or still flushing: close them now.
            for c in closing.iter().chain(s.all_conns().iter()) {
                c.update(|ch| ((), ch.force_close()));
            }
        })
    }
}

impl MemoryStore {
    fn open_now(&self, mut req: StreamRequest) -> Result<Box<dyn StreamSource>, Refusal> {
        let s = &self.shared;
        if s.shutting_down.load(Ordering::SeqCst) {
            return Err(Refusal::unavailable("server is shutting down"));
        }
        let mut reg = s.lock_registry();
        if let Some(conn) = reg.get(&req.client_id) {
            let mut slot = conn.lock();
            let (generation, fx) = match req.last_event_id {
                // The log after the channel: a broadcast never holds it
                // while it locks a channel.
                Some(_) => slot.chan.attach(req.last_event_id, &s.lock_broadcasts()),
                None => slot.chan.attach(None, &broadcast::EMPTY),
            };
            if let Some(generation) = generation {
                drop(reg);
                conn.apply(slot, fx);
                return Ok(self.stream(conn, generation));
            }
            // Closing: it leaves the registry by itself; start afresh.
            drop(slot);
            reg.live.remove(req.client_id.as_str());
        }
        let (conn, generation, app) = self.create(&mut reg, &mut req)?;
        drop(reg);
        match app {
            AppSide::Accept(permit) => {
                let first = conn.lock().chan.next_message_id();
                info!(client = %escape_controls(&conn.id), remote = %req.info.remote, first_message_id = first, "connected");
                permit.send(Connection::new(conn.clone()));
            }
            AppSide::Layer(tx) => {
                debug!(client = %escape_controls(&conn.id), "channel opened");
                // A layer that gave up meanwhile drops the Connection, which
                // refuses the channel's POSTs; its stream ends with the body.
                let _ = tx.send(Connection::new(conn.clone()));
            }
        }
        Ok(self.stream(conn, generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The held-bytes total under every interleaving of a few POSTs (one
    /// out of order, so that its buffered weight is released by another),
    /// the application's reads and a close, on two channels sharing the
    /// total: each step is one critical section of the real code (a
    /// [`Locked`] slot and the channel's transition), the order of steps
    /// is all that varies. Plain values and an exhaustive walk rather than
    /// loom: the total is one atomic location whose every change happens
    /// under a channel's lock, so coherence makes the order of critical
    /// sections the only thing that matters, and loom would need its own
    /// Mutex and atomics swapped into the production code.
    mod held_total {
        use super::*;
        use crate::server::Limits;

        /// What a POST reserves: its declared length.
        const CHARGE: usize = 1000;
        /// Room for two reservations and a little more.
        const LIMIT: usize = 2500;

        #[derive(Clone, Copy, Debug)]
        enum Step {
            /// A POST on channel `.0` asks for room.
            Reserve(usize),
            /// ...and offers messageId `.1` (skipped if it got none).
            Offer(usize, u64),
            /// The application of channel `.0` reads.
            Recv(usize),
            /// The client of channel `.0` closes it.
            Close(usize),
        }
        use Step::*;

        /// How the total follows the channels.
        #[derive(Clone, Copy, PartialEq)]
        enum Accounting {
            /// The store's: changes settle as the lock is released.
            UnderLock,
            /// The store before the fix: the change was worked out under
            /// the lock and applied after it, as a step of its own.
            AfterLock,
        }

        struct World {
            slots: Vec<Mutex<Slot>>,
            total: Arc<AtomicUsize>,
            /// AfterLock: each channel's held bytes as last worked out.
            seen: Vec<usize>,
            /// AfterLock: each thread's change not applied yet.
            pending: Vec<Option<(usize, usize)>>,
            /// Per thread: its POST got room.
            room: Vec<bool>,
            accepted: usize,
            delivered: usize,
            wrapped: bool,
        }

        fn settings() -> Settings {
            let limits = Limits { incoming_total: LIMIT, ..Limits::default() };
            Settings {
                limits,
                keep_alive: None,
                first_message_wait: Duration::from_secs(60),
                max_frame: 1 << 16,
            }
        }

        impl World {
            fn new(channels: usize, threads: usize) -> Self {
                let total = Arc::new(AtomicUsize::new(0));
                let slots = (0..channels)
                    .map(|_| {
                        let mut chan = Channel::new(settings(), None);
                        let _ = chan.attach(None, &broadcast::EMPTY);
                        Mutex::new(Slot::new(chan, &total))
                    })
                    .collect();
                World {
                    slots,
                    total,
                    seen: vec![0; channels],
                    pending: vec![None; threads],
                    room: vec![false; threads],
                    accepted: 0,
                    delivered: 0,
                    wrapped: false,
                }
            }

            /// What the channels hold, read without the accounting.
            fn truth(&self) -> usize {
                self.slots.iter().map(|s| s.lock().unwrap().chan.held_bytes()).sum()
            }

            /// The transition of `step` on a locked slot; `false`: refused
            /// for want of room in the total.
            fn transition(
                &mut self,
                slot: &mut Slot,
                thread: usize,
                step: Step,
                how: Accounting,
            ) -> bool {
                let fx = match step {
                    Reserve(_) => {
                        let reserved = match how {
                            Accounting::UnderLock => slot.reserve(CHARGE, LIMIT, &self.total),
                            Accounting::AfterLock => {
                                if self.total.load(Ordering::Relaxed).wrapping_add(CHARGE) > LIMIT {
                                    Err(NoRoom::Busy)
                                } else {
                                    slot.chan.reserve(CHARGE).map_err(NoRoom::Refused)
                                }
                            }
                        };
                        assert_ne!(reserved, Ok(false), "the channel's own bounds are far");
                        self.room[thread] = reserved == Ok(true);
                        return reserved != Err(NoRoom::Busy);
                    }
                    Offer(_, id) => {
                        let (offered, fx) = slot.chan.offer(id, format!("m{id}"), CHARGE);
                        self.accepted += usize::from(offered.is_ok());
                        fx
                    }
                    Recv(_) => {
                        let (ev, fx) = slot.chan.recv();
                        self.delivered +=
                            usize::from(matches!(ev, Some(ConnectionEvent::Message(_))));
                        fx
                    }
                    Close(_) => slot.chan.client_closed(),
                };
                let _ = slot.take_for(&fx);
                true
            }

            /// Runs `thread`'s `step`; checks what must hold after it.
            fn step(&mut self, thread: usize, step: Step, how: Accounting) {
                if let Some((before, after)) = self.pending[thread].take() {
                    // AfterLock: the change worked out earlier lands now.
                    if after >= before {
                        self.total.fetch_add(after - before, Ordering::Relaxed);
                    } else {
                        let old = self.total.fetch_sub(before - after, Ordering::Relaxed);
                        self.wrapped |= old < before - after;
                    }
                    return;
                }
                let (Reserve(c) | Offer(c, _) | Recv(c) | Close(c)) = step;
                if matches!(step, Offer(..)) && !self.room[thread] {
                    return;
                }
                let truth = self.truth();
                let slots = std::mem::take(&mut self.slots);
                let admitted = match how {
                    Accounting::UnderLock => {
                        let total = self.total.clone();
                        let mut slot = Locked::new(&slots[c], &total);
                        self.transition(&mut slot, thread, step, how)
                    }
                    Accounting::AfterLock => {
                        let mut slot = slots[c].lock().unwrap();
                        let admitted = self.transition(&mut slot, thread, step, how);
                        let held = slot.chan.held_bytes();
                        let before = std::mem::replace(&mut self.seen[c], held);
                        self.pending[thread] = Some((before, held));
                        admitted
                    }
                };
                self.slots = slots;
                if how == Accounting::UnderLock {
                    assert_eq!(self.total.load(Ordering::Relaxed), self.truth(), "after {step:?}");
                    assert!(
                        admitted || truth + CHARGE > LIMIT,
                        "{step:?} refused with {truth} held"
                    );
                }
            }
        }

        /// Calls `f` with every interleaving of threads of `lens` steps
        /// (each a list of thread indices).
        fn interleavings(lens: &[usize], f: &mut impl FnMut(&[usize])) {
            fn walk(left: &mut [usize], order: &mut Vec<usize>, f: &mut impl FnMut(&[usize])) {
                if left.iter().all(|n| *n == 0) {
                    return f(order);
                }
                for t in 0..left.len() {
                    if left[t] > 0 {
                        left[t] -= 1;
                        order.push(t);
                        walk(left, order, f);
                        order.pop();
                        left[t] += 1;
                    }
                }
            }
            walk(&mut lens.to_vec(), &mut Vec::new(), f)
        }

        /// Runs every interleaving of `threads`; returns how many there
        /// were and whether the total wrapped in any.
        fn explore(channels: usize, threads: &[Vec<Step>], how: Accounting) -> (usize, bool) {
            // AfterLock: each step is followed by its late update.
            let per_step = if how == Accounting::AfterLock { 2 } else { 1 };
            let lens: Vec<usize> = threads.iter().map(|t| t.len() * per_step).collect();
            let (mut runs, mut wrapped) = (0, false);
            interleavings(&lens, &mut |order| {
                let mut w = World::new(channels, threads.len());
                let mut pc = vec![0; threads.len()];
                for &t in order {
                    w.step(t, threads[t][pc[t] / per_step], how);
                    pc[t] += 1;
                }
                if how == Accounting::UnderLock {
                    // The applications read what is left: nothing is held.
                    for c in 0..channels {
                        while let Some(ev) = Locked::new(&w.slots[c], &w.total).chan.recv().0 {
                            w.delivered += usize::from(matches!(ev, ConnectionEvent::Message(_)));
                        }
                    }
                    assert_eq!(w.total.load(Ordering::Relaxed), w.truth(), "{order:?}");
                    let buffered: usize = w
                        .slots
                        .iter()
                        .map(|s| s.lock().unwrap().chan.take_inbound().buffered())
                        .sum();
                    assert_eq!(w.delivered + buffered, w.accepted, "{order:?}");
                }
                runs += 1;
                wrapped |= w.wrapped;
            });
            (runs, wrapped)
        }

        #[test]
        fn the_total_is_the_sum_of_the_channels_in_every_interleaving() {
            let threads = vec![
                vec![Reserve(0), Offer(0, 1)],
                vec![Reserve(0), Offer(0, 0)],
                vec![Reserve(1), Offer(1, 0)],
                vec![Recv(0), Recv(0)],
                vec![Close(1)],
            ];
            let (runs, wrapped) = explore(2, &threads, Accounting::UnderLock);
            assert_eq!(runs, 22_680);
            assert!(!wrapped);
        }

        #[test]
        fn the_old_accounting_wraps_in_some_interleaving() {
            // The walk finds the bug the store had: a message buffered out
            // of order weighs more than its reservation, and the POST that
            // releases it takes that weight off the total before the
            // buffering POST's late update has added it.
            let threads = vec![vec![Reserve(0), Offer(0, 1)], vec![Reserve(0), Offer(0, 0)]];
            let (runs, wrapped) = explore(1, &threads, Accounting::AfterLock);
            assert_eq!(runs, 70);
            assert!(wrapped, "no interleaving wrapped the total");
        }
    }

    /// A broadcast is held once, in the store's log, its bytes shared
    /// with every channel's queue; the log empties once no channel is left.
    /// A store, and its accept queue (kept: new channels need one).
    fn test_store() -> (MemoryStore, mpsc::Receiver<Connection>) {
        test_store_with(crate::server::Limits::default().outgoing_messages)
    }

    /// A store whose queues hold `queue` events.
    fn test_store_with(queue: usize) -> (MemoryStore, mpsc::Receiver<Connection>) {
        let settings = Settings {
            limits: crate::server::Limits {
                max_clients: 10,
                outgoing_messages: queue,
                ..Default::default()
            },
            keep_alive: None,
            first_message_wait: Duration::from_secs(5),
            max_frame: 1 << 16,
        };
        let config = MemoryConfig {
            settings,
            closed_id_memory: Duration::ZERO,
            post_wait: Duration::from_secs(1),
        };
        let (tx, accepted) = mpsc::channel(8);
        (MemoryStore::new(config, tx, Arc::new(Counters::default())), accepted)
    }

    /// Opens a stream for each of `ids`.
    async fn open_streams(store: &MemoryStore, ids: &[&str]) -> Vec<Box<dyn StreamSource>> {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
        let info = RequestInfo {
            remote: addr,
            local: addr,
            host: None,
            path: "/sse".into(),
            query: None,
            origin: None,
            user_agent: None,
            admitted: Default::default(),
        };
        let mut streams = Vec::new();
        for id in ids {
            let req = StreamRequest {
                client_id: (*id).into(),
                last_event_id: None,
                info: info.clone(),
                layer: None,
            };
            streams.push(store.open_stream(req).await.expect("opened"));
        }
        streams
    }

    fn encoded(msgs: &[&str]) -> Vec<Bytes> {
        msgs.iter().map(|m| crate::protocol::event::encode_data(m)).collect()
    }

    /// A broadcast is held once, in the store's log, and every channel's
    /// queue shares it (one reference per channel, not per event); the
    /// log empties once no channel is left.
    #[tokio::test]
    async fn the_broadcast_log_holds_a_broadcast_once_and_empties_with_the_last_channel() {
        let (store, _accepted) = test_store();
        let streams = open_streams(&store, &["a", "b"]).await;
        let batch = encoded(&["x", "y"]);
        assert_eq!(store.broadcast(batch.clone()).await, 2);
        {
            let log = store.shared.lock_broadcasts();
            assert_eq!(log.len(), 2);
            let (events, _) = log.get(1).expect("held");
            assert_eq!(events.event(1), &batch[1][..]);
            assert_eq!(Arc::strong_count(events), 3, "the log's and one per channel");
        }
        // Without keep-alive a stream's end closes and retires its channel.
        drop(streams);
        assert!(store.shared.lock_registry().live.is_empty());
        assert_eq!(store.broadcast(batch).await, 0);
        assert_eq!(store.shared.lock_broadcasts().len(), 0);
    }

    /// A broadcast that leaves a stream past half its queue waits until
    /// the stream catches up, or for [`BROADCAST_WAIT`] at most.
    #[tokio::test(start_paused = true)]
    async fn a_broadcast_waits_for_a_lagging_stream_a_while() {
        let (store, _accepted) = test_store_with(8);
        let mut streams = open_streams(&store, &["a"]).await;
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        // 4 of 8 queued: no wait.
        let start = Instant::now();
        assert_eq!(store.broadcast(encoded(&["1", "2", "3", "4"])).await, 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // 8 of 8: it waits, until the stream has taken them.
        let mut waiting = store.broadcast(encoded(&["5", "6", "7", "8"]));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(matches!(streams[0].poll_next(&mut cx), Poll::Ready(StreamItem::Data(_))));
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(1));
        assert_eq!(start.elapsed(), Duration::ZERO);
        // A stream that does not read holds it up for the wait at most.
        let start = Instant::now();
        assert_eq!(store.broadcast(encoded(&["1", "2", "3", "4", "5"])).await, 1);
        assert_eq!(start.elapsed(), BROADCAST_WAIT);
        // One that goes away, not at all.
        let mut waiting = store.broadcast(encoded(&["6"]));
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        drop(streams);
        assert_eq!(waiting.as_mut().poll(&mut cx), Poll::Ready(1));
        assert_eq!(store.shared.backlogged.load(Ordering::SeqCst), 0);
    }

    /// A stream that never reads holds broadcasts up for
    /// [`LAG_BROADCASTS`] waits at most, not for as long as its queue
    /// has room: one reader cannot pace every other stream.
    #[tokio::test(start_paused = true)]
    async fn a_stream_that_never_reads_holds_broadcasts_up_a_bounded_while() {
        use crate::server::channel::LAG_BROADCASTS;
        let (store, _accepted) = test_store_with(1000);
        let _streams = open_streams(&store, &["a"]).await;
        let start = Instant::now();
        for i in 0..900 {
            assert_eq!(store.broadcast(encoded(&[&i.to_string()])).await, 1);
        }
        assert_eq!(start.elapsed(), BROADCAST_WAIT * LAG_BROADCASTS);
        assert_eq!(store.shared.backlogged.load(Ordering::SeqCst), 0);
    }

    /// Two broadcasts at once reach every channel in the log's order: the
    /// second waits while the first, appended, has not handed its batch
    /// to the channels yet.
    #[tokio::test]
    async fn concurrent_broadcasts_reach_channels_in_the_order_of_the_log() {
        use std::sync::mpsc::channel;
        let (store, _accepted) = test_store();
        let mut streams = open_streams(&store, &["a", "b"]).await;
        let shared = store.shared.clone();
        let (appended_tx, appended) = channel();
        let (go, go_rx) = channel::<()>();
        let first = std::thread::spawn(move || {
            let hold = || {
                let _ = appended_tx.send(());
                let _ = go_rx.recv();
            };
            shared.broadcast(&encoded(&["1", "2"]), hold, || {})
        });
        appended.recv().expect("the first broadcast appended");
        // The second, while the first holds between its append and its
        // hand-off: it either waits its turn or (unordered) runs through.
        let (shared, (said, heard)) = (store.shared.clone(), channel());
        let blocked = said.clone();
        let second = std::thread::spawn(move || {
            let n = shared.broadcast(
                &encoded(&["3"]),
                || {},
                || {
                    let _ = blocked.send("waits its turn");
                },
            );
            let _ = said.send("ran ahead");
            n
        });
        assert_eq!(heard.recv().expect("the second broadcast"), "waits its turn");
        go.send(()).expect("the first broadcast goes on");
        assert_eq!((first.join().expect("first"), second.join().expect("second")), (2, 2));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for stream in &mut streams {
            let Poll::Ready(StreamItem::Data(bytes)) = stream.poll_next(&mut cx) else {
                panic!("no data")
            };
            assert_eq!(
                &bytes[..],
                b"id: 1\ndata: \"1\"\n\nid: 2\ndata: \"2\"\n\nid: 3\ndata: \"3\"\n\n"
            );
        }
    }

    #[test]
    fn an_id_closing_and_coming_back_in_a_loop_keeps_the_closed_ids_bounded() {
        let mut reg = Registry::default();
        let (memory, t0) = (Duration::from_secs(300), Instant::now());
        let bounds = ClosedBounds { count: 10, bytes: 1 << 20 };
        let id: Arc<str> = "loop".into();
        let limits = crate::protocol::reorder::ReorderLimits::default();
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i);
            reg.remember(&id, ReorderBuffer::new(0, limits), now, memory, bounds);
            assert!(reg.take_remembered(&id).is_some());
        }
        assert!(reg.closed_order.len() <= 2 * reg.closed.len() + 65, "{}", reg.closed_order.len());
        // A stale entry does not evict a newer memory of its id.
        let other: Arc<str> = "other".into();
        let t1 = t0 + Duration::from_secs(1);
        for k in 0..9u32 {
            let n: Arc<str> = format!("n{k}").into();
            reg.remember(&n, ReorderBuffer::new(0, limits), t1, memory, bounds);
            if k == 0 {
                reg.remember(&id, ReorderBuffer::new(0, limits), t1, memory, bounds);
            }
        }
        reg.remember(&other, ReorderBuffer::new(0, limits), t1, memory, bounds);
        assert_eq!(reg.closed.len(), 10);
        assert!(reg.closed.contains_key(&id), "a stale entry evicted a newer memory");
        assert!(!reg.closed.contains_key("n0"), "the oldest real entry goes first");
        assert_eq!(reg.sweep(t1 + memory, memory).1, None);
        assert!(reg.closed.is_empty() && reg.closed_order.is_empty());
    }
}
