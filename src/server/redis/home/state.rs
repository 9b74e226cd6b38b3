//! A home's side of a channel as a plain value: what the application has
//! not read yet, what it did that the store has not taken yet (its
//! operations, numbered in order), and the channel's phase as the store's
//! notices told it. Every input is a method returning the [`Effects`] the
//! I/O layer applies once it has released its lock (wake the application,
//! hand operations to the writer, arm or cancel a deadline, lower the held
//! bytes, count, log). No I/O, no time source, no locks.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::super::notice::Notice;
use super::super::ops::{Op, OpKind};
use crate::server::app::{CloseInfo, CloseReason, ConnectionEvent, SendError};
use crate::server::channel::{Inbox, Phase, Timer};

/// How a home behaves; the same for every home of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HomeSettings {
    pub keep_alive: Option<Duration>,
    pub first_message_wait: Duration,
    /// How long a close may go unconfirmed by the store before the home
    /// closes alone.
    pub close_watchdog: Duration,
    /// Sends the store has not taken yet, and their bytes, before the
    /// client counts as a slow consumer (the store's queue is bounded so).
    pub outgoing_messages: usize,
    pub outgoing_bytes: usize,
}

/// A deadline a home asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Due {
    /// The keep-alive period of suspension `epoch`.
    KeepAlive(u64),
    /// A new id's first messages.
    FirstMessage,
    /// A close the store has not confirmed.
    Watchdog,
}

/// What the I/O layer must do after a transition, once the lock is
/// released.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Effects {
    pub wake_app: bool,
    /// Operations wait and the home is not listed with the writer: list it.
    pub write: bool,
    /// The application took messages and the home is not listed with the
    /// reporter: list it.
    pub report: bool,
    pub timers: Vec<(Due, Timer)>,
    /// Bytes of incoming messages no longer held here (taken, dropped):
    /// the server's count of held bytes goes down by as much.
    pub released: usize,
    /// The channel has just closed: its waiters go on, it leaves the
    /// homes of this instance.
    pub closed: Option<CloseInfo>,
    /// Messages moved into the application's inbox.
    pub delivered: u64,
    /// Events reported lost to the application.
    pub gap_events: u64,
    /// Messages the application queued for the client.
    pub sent: u64,
    pub logs: Vec<Log>,
}

/// What happened that is worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Log {
    /// Messages before `start` never came within the first-message wait.
    Skipped {
        start: u64,
    },
    /// Messages for an application that left, or a closed channel.
    Dropped {
        count: usize,
    },
    Suspended {
        keep_alive: Duration,
    },
    Resumed,
    Gap {
        first: u64,
        lost: u64,
    },
    Closed(CloseInfo),
    /// The store has not taken the sends: disconnected.
    SlowConsumer,
    /// The close was never confirmed by the store: closed here.
    Unconfirmed,
    StreamDropped,
    /// The application dropped its side with messages unread.
    UnreadMessages {
        count: usize,
    },
}

/// One home's state. See the module docs.
#[derive(Debug)]
pub(crate) struct HomeState {
    settings: HomeSettings,
    inbox: Inbox,
    phase: Phase,
    /// The messageId expected next.
    next_message: u64,
    /// Number of the last operation queued.
    seq: u64,
    /// Operations the writer has not taken yet, in order.
    outbox: VecDeque<Op>,
    /// Listed with the writer (it takes from `outbox`).
    write_listed: bool,
    /// Sends the store has not applied yet, and their bytes.
    unflushed: usize,
    unflushed_bytes: usize,
    app_gone: bool,
    /// Messages taken by the application since the last report.
    taken: u64,
    taken_bytes: u64,
    report_listed: bool,
}

impl HomeState {
    /// A new channel whose next messageId is `next_message`.
    pub(crate) fn new(settings: HomeSettings, next_message: u64) -> Self {
        Self {
            settings,
            inbox: Inbox::default(),
            phase: Phase::Open,
            next_message,
            seq: 0,
            outbox: VecDeque::new(),
            write_listed: false,
            unflushed: 0,
            unflushed_bytes: 0,
            app_gone: false,
            taken: 0,
            taken_bytes: 0,
            report_listed: false,
        }
    }

    /// The channel's phase, as the store's notices told it.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the application has taken `Closed`: nothing follows.
    pub(crate) fn is_done(&self) -> bool {
        self.inbox.is_done()
    }

    fn push(&mut self, kind: OpKind, fx: &mut Effects) {
        self.seq += 1;
        self.outbox.push_back(Op { seq: self.seq, kind });
        if !self.write_listed {
            self.write_listed = true;
            fx.write = true;
        }
    }

    // --- the store's notices ------------------------------------------------

    /// Applies what the store decided. The bytes of a `Messages` notice
    /// are counted held before it is applied; what it does not keep is in
    /// [`Effects::released`].
    pub(crate) fn notice(&mut self, n: Notice) -> Effects {
        let mut fx = Effects::default();
        match n {
            Notice::Messages { first, messages, .. } => self.messages(first, messages, &mut fx),
            Notice::Suspended { epoch, .. } => {
                if self.phase == Phase::Open {
                    self.phase = Phase::Suspended { epoch };
                    fx.wake_app = self.inbox.push_lifecycle(ConnectionEvent::Suspended);
                    let keep_alive = self.settings.keep_alive.unwrap_or_default();
                    fx.timers.push((Due::KeepAlive(epoch), Timer::Arm(keep_alive)));
                    fx.logs.push(Log::Suspended { keep_alive });
                }
            }
            Notice::Resumed { .. } => {
                if let Phase::Suspended { epoch } = self.phase {
                    self.phase = Phase::Open;
                    fx.wake_app = self.inbox.push_lifecycle(ConnectionEvent::Resumed);
                    fx.timers.push((Due::KeepAlive(epoch), Timer::Cancel));
                    fx.logs.push(Log::Resumed);
                }
            }
            Notice::Gap { lost, first, .. } => {
                fx.gap_events = lost;
                if self.phase != Phase::Closed {
                    self.inbox.push_gap(lost);
                    fx.wake_app = true;
                    fx.logs.push(Log::Gap { first, lost });
                }
            }
            Notice::FirstWait { .. } => {
                let wait = self.settings.first_message_wait;
                fx.timers.push((Due::FirstMessage, Timer::Arm(wait)));
            }
            Notice::Closed { reason, undelivered, .. } => {
                self.closed_notice(CloseInfo { reason, undelivered }, &mut fx);
            }
            Notice::Events { .. }
            | Notice::Detach { .. }
            | Notice::Stored { .. }
            | Notice::Final { .. }
            | Notice::Forgotten { .. } => {}
        }
        fx
    }

    /// Messages from messageId `first` on, in order; those already here are
    /// skipped.
    fn messages(&mut self, first: u64, messages: Vec<String>, fx: &mut Effects) {
        if self.app_gone || self.phase == Phase::Closed {
            fx.released = messages.iter().map(String::len).sum();
            fx.logs.push(Log::Dropped { count: messages.len() });
            return;
        }
        if first > self.next_message {
            fx.logs.push(Log::Skipped { start: first });
        }
        for (id, m) in (first..).zip(messages) {
            if id >= self.next_message {
                self.inbox.push(ConnectionEvent::Message(m));
                fx.wake_app = true;
                fx.delivered += 1;
                self.next_message = id + 1;
            } else {
                fx.released += m.len();
            }
        }
    }

    /// The channel is closed: the application's last event.
    fn closed_notice(&mut self, info: CloseInfo, fx: &mut Effects) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Phase::Suspended { epoch } = self.phase {
            fx.timers.push((Due::KeepAlive(epoch), Timer::Cancel));
        }
        self.phase = Phase::Closed;
        self.inbox.push(ConnectionEvent::Closed(info));
        fx.wake_app = true;
        fx.timers.push((Due::FirstMessage, Timer::Cancel));
        fx.timers.push((Due::Watchdog, Timer::Cancel));
        fx.closed = Some(info);
        fx.logs.push(Log::Closed(info));
    }

    /// Closed without the store's word (shutdown, when the store did not
    /// confirm in time).
    pub(crate) fn close_here(&mut self, info: CloseInfo) -> Effects {
        let mut fx = Effects::default();
        self.closed_notice(info, &mut fx);
        fx
    }

    fn watchdog(&self, fx: &mut Effects) {
        fx.timers.push((Due::Watchdog, Timer::Arm(self.settings.close_watchdog)));
    }

    /// A deadline this home armed has come.
    pub(crate) fn deadline(&mut self, due: Due) -> Effects {
        let mut fx = Effects::default();
        match due {
            Due::KeepAlive(epoch) => {
                if self.phase == (Phase::Suspended { epoch }) {
                    self.push(OpKind::Expire(epoch), &mut fx);
                }
            }
            Due::FirstMessage => self.push(OpKind::First, &mut fx),
            Due::Watchdog => {
                let reason = match self.phase {
                    Phase::Closed => return fx,
                    Phase::Closing(r) => r,
                    Phase::Open | Phase::Suspended { .. } => CloseReason::StoreLost,
                };
                fx.logs.push(Log::Unconfirmed);
                self.closed_notice(CloseInfo { reason, undelivered: 0 }, &mut fx);
            }
        }
        fx
    }

    /// The store no longer has this channel (an operation found it gone):
    /// its close notice should be on the way; if none comes, it is lost.
    pub(crate) fn missing(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.phase != Phase::Closed {
            self.watchdog(&mut fx);
        }
        fx
    }

    /// Shutdown's grace is over: closed in the store at once.
    pub(crate) fn force_close(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.phase != Phase::Closed {
            self.push(OpKind::ForceClose, &mut fx);
        }
        fx
    }

    /// Shutdown begins: the control close, whatever the keep-alive.
    pub(crate) fn shutdown(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.phase.is_live() {
            self.phase = Phase::Closing(CloseReason::Shutdown);
            self.push(OpKind::Close(CloseReason::Shutdown), &mut fx);
        }
        fx
    }

    // --- the application ------------------------------------------------------

    /// The application takes its next event.
    pub(crate) fn recv(&mut self) -> (Option<ConnectionEvent>, Effects) {
        let mut fx = Effects::default();
        let (ev, _) = self.inbox.recv();
        if let Some(ConnectionEvent::Message(m)) = &ev {
            self.taken += 1;
            self.taken_bytes += m.len() as u64;
            fx.released = m.len();
            self.list_report(&mut fx);
        }
        (ev, fx)
    }

    /// Queues an encoded `data:` tail for the store. What the store has not
    /// taken yet is bounded as its queue is: a store that stays away makes
    /// a slow consumer.
    pub(crate) fn send(&mut self, data: Bytes) -> (Result<(), SendError>, Effects) {
        let mut fx = Effects::default();
        if !self.phase.is_live() {
            return (Err(SendError::Closed), fx);
        }
        let s = self.settings;
        if self.unflushed >= s.outgoing_messages
            || self.unflushed_bytes + data.len() > s.outgoing_bytes
        {
            self.phase = Phase::Closing(CloseReason::SlowConsumer);
            self.push(OpKind::SlowConsumer, &mut fx);
            fx.logs.push(Log::SlowConsumer);
            self.watchdog(&mut fx);
            return (Err(SendError::SlowConsumer), fx);
        }
        self.unflushed += 1;
        self.unflushed_bytes += data.len();
        self.push(OpKind::Send(data), &mut fx);
        fx.sent = 1;
        (Ok(()), fx)
    }

    /// Control close: the store flushes the stream, then closes.
    pub(crate) fn close(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.phase.is_live() {
            self.phase = Phase::Closing(CloseReason::Closed);
            self.push(OpKind::Close(CloseReason::Closed), &mut fx);
            self.watchdog(&mut fx);
        }
        fx
    }

    /// Ends the stream without the control event.
    pub(crate) fn drop_stream(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.phase == Phase::Open {
            self.push(OpKind::Drop, &mut fx);
            fx.logs.push(Log::StreamDropped);
        }
        fx
    }

    /// The application dropped its side: its unread messages are gone and
    /// the store refuses POSTs from now on.
    pub(crate) fn app_dropped(&mut self) -> Effects {
        let mut fx = Effects::default();
        self.app_gone = true;
        fx.released = self.inbox.bytes();
        let unread = self.inbox.clear();
        if self.phase != Phase::Closed {
            self.push(OpKind::Gone, &mut fx);
        }
        if unread > 0 {
            fx.logs.push(Log::UnreadMessages { count: unread });
        }
        fx
    }

    // --- the writer and the reporter --------------------------------------

    /// Moves waiting operations, oldest first, into `into`: at most
    /// `max_ops`, and no more once `max_bytes` of sent data are taken.
    /// Returns whether some are left (the home stays listed).
    pub(crate) fn take_ops(
        &mut self,
        into: &mut Vec<Op>,
        max_ops: usize,
        max_bytes: usize,
    ) -> bool {
        let (mut ops, mut bytes) = (0, 0);
        while ops < max_ops && bytes < max_bytes {
            let Some(op) = self.outbox.pop_front() else { break };
            bytes += op.bytes();
            ops += 1;
            into.push(op);
        }
        self.write_listed = !self.outbox.is_empty();
        self.write_listed
    }

    /// Sends not yet applied by the store (queued or in flight).
    pub(crate) fn unflushed(&self) -> usize {
        self.unflushed
    }

    /// The store applied one of our sends.
    pub(crate) fn flushed(&mut self, bytes: usize) {
        self.unflushed = self.unflushed.saturating_sub(1);
        self.unflushed_bytes = self.unflushed_bytes.saturating_sub(bytes);
    }

    /// Messages taken since the last report, and their bytes; reset.
    pub(crate) fn take_taken(&mut self) -> (u64, u64) {
        self.report_listed = false;
        (std::mem::take(&mut self.taken), std::mem::take(&mut self.taken_bytes))
    }

    /// A report that failed: counted again next time.
    pub(crate) fn untake(&mut self, count: u64, bytes: u64) -> Effects {
        let mut fx = Effects::default();
        self.taken += count;
        self.taken_bytes += bytes;
        self.list_report(&mut fx);
        fx
    }

    fn list_report(&mut self, fx: &mut Effects) {
        if !self.report_listed {
            self.report_listed = true;
            fx.report = true;
        }
    }
}

#[cfg(test)]
mod tests;
