//! A channel's application side, on the instance that is its home (the one
//! that got its first `GET`). The channel's state is in Redis; here is a
//! [`HomeState`] behind a mutex: what the application has not read yet,
//! and what it did that the store has not taken yet. Its sends, closes and
//! drops reach the store in order through the writer ([`super::ops`]);
//! what the store decides (messages, suspensions, resumes, gaps, the
//! close) comes back as notices. Everything a transition asks for is done
//! by [`Home::apply`], after the lock.

mod state;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

pub(crate) use state::{Due, HomeSettings};
use state::{Effects, HomeState, Log};

use super::notice::Notice;
use super::ops::{Op, OpSource, Writer};
use super::report::{Reporter, TakenSource};
use crate::server::app::{
    ChannelApp, CloseInfo, CloseReason, ConnectionEvent, RequestInfo, SendError,
};
use crate::server::channel::{Phase, Timer};
use crate::server::deadlines::Deadlines;
use crate::server::machine::Machine;
use crate::server::metrics::{Counters, hold, release};
use crate::server::store::StoreFuture;
use crate::server::wait;
use crate::text::escape_controls;

/// The deadlines of the homes, by serial.
pub(crate) type Timers = Deadlines<(u64, Due), Weak<Home>>;

/// Where a home that closed is forgotten (the owner of the homes).
pub(crate) trait HomeExit: Send + Sync {
    fn home_closed(&self, cid: &Arc<str>, ser: u64);
}

/// What every home of an instance uses.
pub(crate) struct HomeEnv {
    pub settings: HomeSettings,
    pub writer: Writer,
    pub timers: Arc<Timers>,
    pub stats: Arc<Counters>,
    pub reporter: Weak<Reporter>,
    pub exit: Weak<dyn HomeExit>,
}

pub(crate) struct Slot {
    state: HomeState,
    waker: Option<Waker>,
}

pub(crate) struct Home {
    me: Weak<Home>,
    pub(crate) cid: Arc<str>,
    pub(crate) ser: u64,
    info: RequestInfo,
    slot: Mutex<Slot>,
    closed: Notify,
    /// The store has applied every send made so far ([`Home::sends_applied`]).
    applied: Notify,
    env: Arc<HomeEnv>,
}

impl Home {
    pub(crate) fn new(
        cid: Arc<str>,
        ser: u64,
        info: RequestInfo,
        next_message: u64,
        env: Arc<HomeEnv>,
    ) -> Arc<Home> {
        Arc::new_cyclic(|me| Home {
            me: me.clone(),
            cid,
            ser,
            info,
            slot: Mutex::new(Slot {
                state: HomeState::new(env.settings, next_message),
                waker: None,
            }),
            closed: Notify::new(),
            applied: Notify::new(),
            env,
        })
    }

    /// Until the store has applied every send the application made so far
    /// (or `deadline`): a client's `DELETE`, decided by another call, then
    /// counts them among the undelivered instead of finding them after the
    /// channel is gone.
    pub(crate) async fn sends_applied(&self, deadline: Instant) -> bool {
        wait::until(&self.applied, Some(deadline), || self.lock().state.unflushed() == 0).await
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.lock().state.phase().is_suspended()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().state.phase() == Phase::Closed
    }

    /// Applies what the store decided.
    pub(crate) fn notice(&self, n: Notice) {
        // Counted held before they are here, never after (admission reads
        // the count): what the inbox does not keep is released.
        if let Notice::Messages { messages, .. } = &n {
            hold(&self.env.stats.held, messages.iter().map(String::len).sum());
        }
        self.update(|s| ((), s.notice(n)));
    }

    /// A deadline this home armed has come.
    pub(crate) fn fire(&self, due: Due) {
        self.update(|s| ((), s.deadline(due)));
    }

    /// Shutdown: closes it in the store at once (its grace is over).
    pub(crate) fn force_close(&self) {
        self.update(|s| ((), s.force_close()));
    }

    /// Shutdown begins: the control close, whatever the keep-alive.
    pub(crate) fn shutdown(&self) {
        self.update(|s| ((), s.shutdown()));
    }

    /// Closed here without the store's word (shutdown, when the store did
    /// not confirm in time).
    pub(crate) fn close_here(&self, info: CloseInfo) {
        self.update(|s| ((), s.close_here(info)));
    }

    fn log(&self, log: &Log) {
        let client = escape_controls(&self.cid);
        match log {
            Log::Skipped { start } => warn!(
                %client,
                "messages before {start} never arrived in {:?} (a client that outlived a server restart?); starting from messageId {start}",
                self.env.settings.first_message_wait
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
            Log::SlowConsumer => warn!(
                %client,
                "slow consumer: outgoing messages not taken by the store, disconnecting"
            ),
            Log::Unconfirmed => {
                warn!(%client, "the store never confirmed the close; closing here")
            }
            Log::StreamDropped => info!(%client, "stream dropped by server"),
            Log::UnreadMessages { count } => warn!(
                %client,
                count, "the application dropped the connection with messages unread"
            ),
        }
    }
}

impl Machine for Home {
    type Slot = Slot;
    type State = HomeState;
    type Effects = Effects;

    fn slot(&self) -> &Mutex<Slot> {
        &self.slot
    }

    fn state(slot: &mut Slot) -> &mut HomeState {
        &mut slot.state
    }

    /// Everything a transition asked for, after the lock: the one place
    /// where the application is woken, operations listed, deadlines armed,
    /// held bytes lowered, counters bumped and transitions logged.
    fn apply(&self, mut slot: MutexGuard<'_, Slot>, fx: Effects) {
        let waker = if fx.wake_app { slot.waker.take() } else { None };
        drop(slot);
        let env = &*self.env;
        // Gone from the homes here before the application hears it: its
        // place is free by then.
        if let Some(info) = fx.closed {
            self.closed.notify_waiters();
            if info.reason == CloseReason::SlowConsumer {
                Counters::add(&env.stats.slow_consumers, 1);
            }
            if let Some(exit) = env.exit.upgrade() {
                exit.home_closed(&self.cid, self.ser);
            }
        }
        if let Some(w) = waker {
            w.wake();
        }
        if (fx.write || fx.report)
            && let Some(me) = self.me.upgrade()
        {
            if fx.write {
                env.writer.list(me.clone());
            }
            if fx.report
                && let Some(reporter) = env.reporter.upgrade()
            {
                reporter.list_taken(me);
            }
        }
        for (due, timer) in fx.timers {
            match timer {
                Timer::Arm(after) => {
                    env.timers.arm((self.ser, due), Instant::now() + after, self.me.clone())
                }
                Timer::Cancel => env.timers.cancel(&(self.ser, due)),
            }
        }
        release(&env.stats.held, fx.released);
        Counters::add(&env.stats.messages_in, fx.delivered);
        Counters::add(&env.stats.gap_events, fx.gap_events);
        Counters::add(&env.stats.messages_out, fx.sent);
        for log in &fx.logs {
            self.log(log);
        }
    }
}

impl OpSource for Home {
    fn target(&self) -> (&str, u64) {
        (&self.cid, self.ser)
    }

    fn take_ops(&self, into: &mut Vec<Op>, max_ops: usize, max_bytes: usize) -> bool {
        self.lock().state.take_ops(into, max_ops, max_bytes)
    }

    fn flushed(&self, bytes: usize) {
        let all = {
            let mut slot = self.lock();
            slot.state.flushed(bytes);
            slot.state.unflushed() == 0
        };
        if all {
            self.applied.notify_waiters();
        }
    }

    fn missing(&self) {
        self.update(|s| ((), s.missing()));
    }
}

impl TakenSource for Home {
    fn target(&self) -> (&str, u64) {
        (&self.cid, self.ser)
    }

    fn take_taken(&self) -> (u64, u64) {
        self.lock().state.take_taken()
    }

    fn untake(&self, count: u64, bytes: u64) {
        self.update(|s| ((), s.untake(count, bytes)));
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
        let mut slot = self.lock();
        let (ev, fx) = slot.state.recv();
        match ev {
            Some(ev) => {
                self.apply(slot, fx);
                Poll::Ready(Some(ev))
            }
            None if slot.state.is_done() => Poll::Ready(None),
            None => {
                wait::register(&mut slot.waker, cx);
                Poll::Pending
            }
        }
    }

    fn send_encoded(&self, data: Bytes) -> Result<(), SendError> {
        self.update(|s| s.send(data))
    }

    fn close(&self) {
        self.update(|s| ((), s.close()))
    }

    fn drop_stream(&self) {
        self.update(|s| ((), s.drop_stream()))
    }

    fn is_live(&self) -> bool {
        self.lock().state.phase().is_live()
    }

    fn app_gone(&self) {
        self.update(|s| ((), s.app_dropped()))
    }

    fn closed(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            wait::until(&self.closed, None, || self.is_closed()).await;
        })
    }
}
