//! A channel's application side, on the instance that is its home (the one
//! that got its first `GET`). The channel's state is in Redis; here is what
//! the application has not read yet, and what it did that the store has
//! not applied yet. Its sends, closes and drops go to the store in order
//! through the instance's writer ([`super::ops`]); what the store decides
//! (messages, suspensions, resumes, gaps, the close) comes back as notices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::notice::Notice;
use super::ops::{Op, OpKind};
use super::{Due, DueKind, Shared};
use crate::server::app::{
    ChannelApp, CloseInfo, CloseReason, ConnectionEvent, RequestInfo, SendError,
};
use crate::server::channel::Inbox;
use crate::server::channel::Phase;
use crate::server::metrics::Counters;
use crate::server::store::StoreFuture;
use crate::text::escape_controls;

pub(crate) struct Home {
    me: Weak<Home>,
    pub(crate) cid: Arc<str>,
    pub(crate) ser: u64,
    info: RequestInfo,
    state: Mutex<HomeState>,
    closed: Notify,
    store: Weak<Shared>,
    /// In the reporter's list of homes whose application took messages.
    listed: AtomicBool,
}

struct HomeState {
    inbox: Inbox,
    waker: Option<Waker>,
    phase: Phase,
    /// The messageId expected next.
    next_message: u64,
    /// Number of the last operation handed to the writer.
    seq: u64,
    /// Sends not yet applied by the store, and their bytes.
    unflushed: usize,
    unflushed_bytes: usize,
    app_gone: bool,
    /// Messages taken by the application since the last report.
    taken: u64,
    taken_bytes: u64,
}

/// What a notice did that is worth a log line (written after the lock).
enum Log {
    Skipped { start: u64 },
    Dropped { count: usize },
    Suspended { keep_alive: Duration },
    Resumed,
    Gap { first: u64, lost: u64 },
    Closed(CloseInfo),
}

impl Home {
    pub(crate) fn new(
        cid: Arc<str>,
        ser: u64,
        info: RequestInfo,
        next_message: u64,
        store: Weak<Shared>,
    ) -> Arc<Home> {
        Arc::new_cyclic(|me| Home {
            me: me.clone(),
            cid,
            ser,
            info,
            state: Mutex::new(HomeState {
                inbox: Inbox::default(),
                waker: None,
                phase: Phase::Open,
                next_message,
                seq: 0,
                unflushed: 0,
                unflushed_bytes: 0,
                app_gone: false,
                taken: 0,
                taken_bytes: 0,
            }),
            closed: Notify::new(),
            store,
            listed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HomeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_suspended(&self) -> bool {
        matches!(self.lock().phase, Phase::Suspended { .. })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().phase == Phase::Closed
    }

    /// Hands an operation to the writer, numbered in order; called with
    /// the lock held so that numbers follow the order of the queue.
    fn submit(&self, st: &mut HomeState, kind: OpKind) {
        let (Some(store), Some(home)) = (self.store.upgrade(), self.me.upgrade()) else { return };
        st.seq += 1;
        store.submit(Op { home, seq: st.seq, kind });
    }

    /// The writer's batch holding one of our sends was applied.
    pub(crate) fn flushed(&self, bytes: usize) {
        let mut st = self.lock();
        st.unflushed = st.unflushed.saturating_sub(1);
        st.unflushed_bytes = st.unflushed_bytes.saturating_sub(bytes);
    }

    /// Messages taken since the last report, and their bytes; reset.
    pub(crate) fn take_taken(&self) -> (u64, u64) {
        self.listed.store(false, Ordering::Release);
        let mut st = self.lock();
        (std::mem::take(&mut st.taken), std::mem::take(&mut st.taken_bytes))
    }

    /// A report that failed: counted again next time.
    pub(crate) fn untake(&self, count: u64, bytes: u64) {
        let mut st = self.lock();
        st.taken += count;
        st.taken_bytes += bytes;
        drop(st);
        self.list();
    }

    fn list(&self) {
        if !self.listed.swap(true, Ordering::AcqRel)
            && let (Some(store), Some(me)) = (self.store.upgrade(), self.me.upgrade())
        {
            store.list_taken(me);
        }
    }

    fn deadline(&self, kind: DueKind, after: Option<Duration>) {
        let Some(store) = self.store.upgrade() else { return };
        store.arm(self.ser, kind, after.map(|a| (a, Due { home: self.me.clone(), kind })));
    }

    /// A deadline this home armed has come.
    pub(crate) fn fire(&self, kind: DueKind) {
        let mut st = self.lock();
        match kind {
            DueKind::KeepAlive(epoch) => {
                if st.phase == (Phase::Suspended { epoch }) {
                    self.submit(&mut st, OpKind::Expire(epoch));
                }
            }
            DueKind::FirstMessage => self.submit(&mut st, OpKind::First),
            DueKind::Watchdog => {
                let reason = match st.phase {
                    Phase::Closed => return,
                    Phase::Closing(r) => r,
                    _ => CloseReason::StoreLost,
                };
                drop(st);
                warn!(client = %escape_controls(&self.cid), "the store never confirmed the close; closing here");
                self.closed_notice(CloseInfo { reason, undelivered: 0 });
            }
        }
    }

    /// The store no longer has this channel (an operation found it gone):
    /// its close notice should be on the way; if none comes, it is lost.
    pub(crate) fn missing(&self) {
        if !self.is_closed() {
            self.watchdog();
        }
    }

    fn watchdog(&self) {
        let Some(store) = self.store.upgrade() else { return };
        self.deadline(DueKind::Watchdog, Some(store.config.close_watchdog));
    }

    /// Applies what the store decided.
    pub(crate) fn notice(&self, n: Notice) {
        let Some(store) = self.store.upgrade() else { return };
        let mut st = self.lock();
        let mut wake = false;
        let mut log = None;
        match n {
            Notice::Messages { first, messages, .. } => {
                if st.app_gone || st.phase == Phase::Closed {
                    log = Some(Log::Dropped { count: messages.len() });
                } else {
                    if first > st.next_message {
                        log = Some(Log::Skipped { start: first });
                    }
                    let (mut bytes, mut count) = (0, 0);
                    for (i, m) in messages.into_iter().enumerate() {
                        if first + i as u64 >= st.next_message {
                            bytes += m.len();
                            count += 1;
                            st.inbox.push(ConnectionEvent::Message(m));
                            wake = true;
                        }
                        st.next_message = st.next_message.max(first + i as u64 + 1);
                    }
                    store.adjust_held(bytes as isize);
                    Counters::add(&store.stats().messages_in, count);
                }
            }
            Notice::Suspended { epoch, .. } => {
                if st.phase == Phase::Open {
                    st.phase = Phase::Suspended { epoch };
                    wake = st.inbox.push_lifecycle(ConnectionEvent::Suspended);
                    let keep_alive = store.config.settings.keep_alive.unwrap_or_default();
                    self.deadline(DueKind::KeepAlive(epoch), Some(keep_alive));
                    log = Some(Log::Suspended { keep_alive });
                }
            }
            Notice::Resumed { .. } => {
                if let Phase::Suspended { epoch } = st.phase {
                    st.phase = Phase::Open;
                    wake = st.inbox.push_lifecycle(ConnectionEvent::Resumed);
                    self.deadline(DueKind::KeepAlive(epoch), None);
                    log = Some(Log::Resumed);
                }
            }
            Notice::Gap { lost, first, .. } => {
                Counters::add(&store.stats().gap_events, lost);
                if st.phase != Phase::Closed {
                    st.inbox.push_gap(lost);
                    wake = true;
                    log = Some(Log::Gap { first, lost });
                }
            }
            Notice::FirstWait { .. } => {
                self.deadline(
                    DueKind::FirstMessage,
                    Some(store.config.settings.first_message_wait),
                );
            }
            Notice::Closed { reason, undelivered, .. } => {
                drop(st);
                self.closed_notice(CloseInfo { reason, undelivered });
                return;
            }
            Notice::Events { .. } | Notice::Detach { .. } | Notice::Final { .. } => {}
        }
        let waker = if wake { st.waker.take() } else { None };
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(log) = log {
            self.log(&log, &store);
        }
    }

    /// The channel is closed: the application's last event.
    pub(crate) fn closed_notice(&self, info: CloseInfo) {
        let mut st = self.lock();
        if st.phase == Phase::Closed {
            return;
        }
        if let Phase::Suspended { epoch } = st.phase {
            self.deadline(DueKind::KeepAlive(epoch), None);
        }
        st.phase = Phase::Closed;
        st.inbox.push(ConnectionEvent::Closed(info));
        let waker = st.waker.take();
        drop(st);
        self.deadline(DueKind::FirstMessage, None);
        self.deadline(DueKind::Watchdog, None);
        if let Some(w) = waker {
            w.wake();
        }
        self.closed.notify_waiters();
        if let Some(store) = self.store.upgrade() {
            if info.reason == CloseReason::SlowConsumer {
                Counters::add(&store.stats().slow_consumers, 1);
            }
            store.home_closed(self);
            self.log(&Log::Closed(info), &store);
        }
    }

    /// Shutdown: closes it in the store at once (its grace is over).
    pub(crate) fn force_close(&self) {
        let mut st = self.lock();
        if st.phase != Phase::Closed {
            self.submit(&mut st, OpKind::ForceClose);
        }
    }

    /// Shutdown begins: the control close, whatever the keep-alive.
    pub(crate) fn shutdown(&self) {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Open | Phase::Suspended { .. }) {
            st.phase = Phase::Closing(CloseReason::Shutdown);
            self.submit(&mut st, OpKind::Close(CloseReason::Shutdown));
        }
    }

    fn log(&self, log: &Log, store: &Shared) {
        let client = escape_controls(&self.cid);
        match log {
            Log::Skipped { start } => warn!(
                %client,
                "messages before {start} never arrived in {:?} (a client that outlived a server restart?); starting from messageId {start}",
                store.config.settings.first_message_wait
            ),
            Log::Dropped { count } => {
                warn!(%client, count, "messages for a connection the application left were dropped")
            }
            Log::Suspended { keep_alive } => {
                info!(%client, "stream lost; keep-alive {}", humantime::format_duration(*keep_alive))
            }
            Log::Resumed => info!(%client, "resumed"),
            Log::Gap { first, lost } => warn!(
                %client,
                lost,
                "events {first}..={} were no longer in the store when the client asked for them: lost",
                first + lost - 1
            ),
            Log::Closed(c) if c.undelivered > 0 => {
                warn!(%client, undelivered = c.undelivered, "closed ({}) with undelivered messages", c.reason)
            }
            Log::Closed(c) => info!(%client, "closed ({})", c.reason),
        }
    }
}

impl ChannelApp for Home {
    fn id(&self) -> &str {
        &self.cid
    }

    fn info(&self) -> &RequestInfo {
        &self.info
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        let mut st = self.lock();
        let (ev, _) = st.inbox.recv();
        match ev {
            Some(ev) => {
                if let ConnectionEvent::Message(m) = &ev {
                    st.taken += 1;
                    st.taken_bytes += m.len() as u64;
                    let len = m.len();
                    drop(st);
                    if let Some(store) = self.store.upgrade() {
                        store.adjust_held(-(len as isize));
                    }
                    self.list();
                }
                Poll::Ready(Some(ev))
            }
            None if st.inbox.is_done() => Poll::Ready(None),
            None => {
                match &st.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    fn send_encoded(&self, data: Bytes) -> Result<(), SendError> {
        let Some(store) = self.store.upgrade() else { return Err(SendError::Closed) };
        let limits = store.config.settings.limits;
        let mut st = self.lock();
        if !matches!(st.phase, Phase::Open | Phase::Suspended { .. }) {
            return Err(SendError::Closed);
        }
        // What the store has not taken yet is bounded here as the queue is
        // there: a store that stays away makes a slow consumer.
        if st.unflushed >= limits.outgoing_messages
            || st.unflushed_bytes + data.len() > limits.outgoing_bytes
        {
            st.phase = Phase::Closing(CloseReason::SlowConsumer);
            self.submit(&mut st, OpKind::SlowConsumer);
            drop(st);
            warn!(client = %escape_controls(&self.cid), "slow consumer: outgoing messages not taken by the store, disconnecting");
            self.watchdog();
            return Err(SendError::SlowConsumer);
        }
        st.unflushed += 1;
        st.unflushed_bytes += data.len();
        self.submit(&mut st, OpKind::Send(data));
        drop(st);
        Counters::add(&store.stats().messages_out, 1);
        Ok(())
    }

    fn close(&self) {
        let mut st = self.lock();
        if matches!(st.phase, Phase::Open | Phase::Suspended { .. }) {
            st.phase = Phase::Closing(CloseReason::Closed);
            self.submit(&mut st, OpKind::Close(CloseReason::Closed));
            drop(st);
            self.watchdog();
        }
    }

    fn drop_stream(&self) {
        let mut st = self.lock();
        if st.phase == Phase::Open {
            self.submit(&mut st, OpKind::Drop);
            drop(st);
            info!(client = %escape_controls(&self.cid), "stream dropped by server");
        }
    }

    fn is_live(&self) -> bool {
        matches!(self.lock().phase, Phase::Open | Phase::Suspended { .. })
    }

    fn app_gone(&self) {
        let mut st = self.lock();
        st.app_gone = true;
        let bytes = st.inbox.bytes();
        let unread = st.inbox.clear();
        if st.phase != Phase::Closed {
            self.submit(&mut st, OpKind::Gone);
        }
        drop(st);
        if let Some(store) = self.store.upgrade() {
            store.adjust_held(-(bytes as isize));
        }
        if unread > 0 {
            warn!(client = %escape_controls(&self.cid), count = unread, "the application dropped the connection with messages unread");
        }
    }

    fn closed(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let closed = self.closed.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if self.is_closed() {
                    return;
                }
                closed.await;
            }
        })
    }
}
