//! One client id's channel as a plain value: the outgoing queue and replay
//! log with their event ids, the stream generation, the incoming re-order
//! buffer, the application's inbox, and the keep-alive and first-message
//! deadlines. Every input is a method; every method returns the
//! [`Effects`] the I/O layer must apply once it has released its lock
//! (wake the stream or the application, arm or cancel a deadline, retire
//! the channel, log). No I/O, no time source, no locks: tested with plain
//! values, and the memory store wraps it in a mutex.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::app::{CloseInfo, CloseReason, ConnectionEvent, SendError};
use super::config::Limits;
use crate::protocol::event;
use crate::protocol::reorder::{Offer, ReorderBuffer, ReorderLimits};
pub(crate) use broadcast::{BroadcastLog, Events};

/// What keeping one event for replay costs besides its bytes (the queue
/// entry and the shared buffer's header): many tiny events weigh what
/// they take.
pub(crate) const REPLAY_OVERHEAD: usize = 48;

pub(crate) mod broadcast;

/// How a channel behaves; the same for every channel of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub limits: Limits,
    pub keep_alive: Option<Duration>,
    pub first_message_wait: Duration,
    /// Largest batch handed to a stream at once: big enough to batch a
    /// burst into few writes, small enough not to stall other streams.
    pub max_frame: usize,
}

/// A deadline a channel asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    Arm(Duration),
    Cancel,
}

/// Which deadline fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Deadline {
    /// The keep-alive period of suspension `epoch` ran out.
    KeepAlive { epoch: u64 },
    /// A new id's first messages did not come in time.
    FirstMessage,
}

/// What the I/O layer must do after a transition, in this order: release
/// the lock, wake, arm/cancel, retire, log.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Effects {
    /// The attached stream has something new: data, an end, a detach.
    pub wake_stream: bool,
    /// The application's inbox has something new.
    pub wake_app: bool,
    /// Room was freed for incoming messages: waiting POSTs may go on.
    pub room: bool,
    /// The keep-alive deadline, with the suspension epoch it belongs to.
    pub keep_alive: Option<(u64, Timer)>,
    pub first_message: Option<Timer>,
    /// The channel stopped taking POSTs: take its re-order state
    /// ([`Channel::take_inbound`]) for the memory of closed ids, and let a
    /// new `GET` of the id start afresh.
    pub retire: bool,
    /// The channel has just closed: whoever waits for that may go on.
    pub closed: bool,
    /// The attached stream lags: its queue has just passed half its
    /// bounds ([`Channel::send_all`]); broadcasts wait for it a while.
    pub backlogged: bool,
    /// A lagging stream caught up (its queue is down to a quarter of its
    /// bounds) or went away.
    pub caught_up: bool,
    /// Messages moved into the application's inbox (for the counters).
    pub delivered: u64,
    /// Events queued again for a replay (for the counters).
    pub replayed: u64,
    pub logs: Vec<Log>,
}

/// What happened that is worth a log line; formatted by the I/O layer with
/// the client id, outside every lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Log {
    Resumed,
    TookOver,
    StreamLost {
        keep_alive: Duration,
    },
    Dropped,
    Closing(CloseReason),
    Closed(CloseInfo),
    /// A resume asked for events the replay buffer no longer has.
    Gap {
        first: u64,
        last: u64,
    },
    LastEventIdAhead {
        last: u64,
        sent_up_to: u64,
    },
    SlowConsumer {
        queued: usize,
        queued_bytes: usize,
    },
    /// The first-message wait ran out: delivery starts at `start`.
    SkippedToFirst {
        start: u64,
        wait: Duration,
    },
    /// The application dropped its side with messages unread.
    UnreadMessages {
        count: usize,
    },
}

/// What [`Channel::next_batch`] hands the stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Batch {
    /// Event bytes to write, and how many events they hold.
    Data(Bytes, u64),
    /// The control close: the last frame of this stream.
    Final,
    /// This stream is over (taken over, dropped, closed).
    End,
    /// Nothing yet: the stream waits to be woken.
    Pending,
}

/// Why a channel cannot take a POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InboundError {
    /// Closing or closed: the id is unknown from now on.
    Closed,
    /// The application dropped its side.
    AppGone,
    TooFarAhead {
        next: u64,
        window: u64,
    },
    ReorderFull {
        bytes: usize,
    },
}

/// A channel's life; the Redis store's home keeps one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    /// Stream lost, keep-alive running; `epoch` tells stale timers apart.
    Suspended {
        epoch: u64,
    },
    /// Flushing the queue; the control close follows (with Redis: the
    /// store's close notice, once the stream has flushed).
    Closing(CloseReason),
    Closed,
}

impl Phase {
    /// Open or suspended: the application may still send.
    pub(crate) fn is_live(self) -> bool {
        matches!(self, Phase::Open | Phase::Suspended { .. })
    }

    pub(crate) fn is_suspended(self) -> bool {
        matches!(self, Phase::Suspended { .. })
    }
}

/// How many broadcasts in a row a lagging stream may hold up
/// ([`Effects::backlogged`]): with the store's wait of 50 ms each, about a
/// second. Then it is waited for no more until it is down to a quarter of
/// its queue, so one slow (or hostile) reader cannot pace every other
/// stream; if it stays behind, its full queue disconnects it.
pub(crate) const LAG_BROADCASTS: u32 = 20;

/// A stream's place behind the broadcasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lag {
    /// Keeping up (or no stream).
    None,
    /// Past half its queue, counted by the store's broadcasts: each
    /// broadcast it is sent while behind may wait for it.
    Behind { held_up: u32 },
    /// Held up [`LAG_BROADCASTS`] broadcasts without catching up: no longer
    /// waited for until it does.
    Excused,
}

/// One channel's state. See the module docs.
#[derive(Debug)]
pub(crate) struct Channel {
    settings: Settings,
    phase: Phase,
    /// The id the next queued event gets; ids start at 1.
    next_event_id: u64,
    /// Events not handed to a stream yet: a broadcast batch is one entry.
    queue: VecDeque<Queued>,
    /// Events in `queue`, and their bytes (`id:` lines not counted).
    queue_events: usize,
    queue_bytes: usize,
    /// Events handed to a stream, kept for `Last-Event-ID` replay: the
    /// channel's own with their bytes, broadcasts as runs of the log.
    replay: VecDeque<Kept>,
    /// Events in `replay`, those of runs included.
    replay_events: usize,
    /// Weight of `replay`: each own event's bytes and [`REPLAY_OVERHEAD`]
    /// per entry (a run's bytes are the log's, counted there once).
    replay_weight: usize,
    generations: u64,
    attached: Option<u64>,
    suspensions: u64,
    inbound: ReorderBuffer<String>,
    /// A new id with nothing delivered yet and no first-message wait armed.
    fresh: bool,
    first_wait_armed: bool,
    inbox: Inbox,
    /// POSTs that may add a message to the inbox, and their body bytes.
    reserved: usize,
    reserved_bytes: usize,
    app_gone: bool,
    retired: bool,
    /// Events that will never reach the client besides the queue: lost in gaps
    /// before resumes, or refused when the client turned out a slow consumer.
    lost: u64,
    /// The highest event id reported lost in a gap.
    gap_reported_through: u64,
    /// Whether the attached stream lags behind the broadcasts
    /// ([`Effects::backlogged`]).
    lag: Lag,
    /// Close once a stream has taken the queue ([`Channel::close_when_delivered`]
    /// while suspended).
    close_on_resume: Option<CloseReason>,
}

impl Channel {
    /// A channel; `remembered` is the re-order state of a closed id that
    /// came back (it keeps counting where it was), `None` for a new id.
    pub(crate) fn new(settings: Settings, remembered: Option<ReorderBuffer<String>>) -> Self {
        let fresh = remembered.is_none();
        let inbound = remembered.unwrap_or_else(|| {
            ReorderBuffer::new(
                0,
                ReorderLimits {
                    window: settings.limits.reorder_window,
                    max_bytes: settings.limits.reorder_bytes,
                },
            )
        });
        Self {
            settings,
            phase: Phase::Open,
            next_event_id: 1,
            queue: VecDeque::new(),
            queue_events: 0,
            queue_bytes: 0,
            replay: VecDeque::new(),
            replay_events: 0,
            replay_weight: 0,
            generations: 0,
            attached: None,
            suspensions: 0,
            inbound,
            fresh,
            first_wait_armed: false,
            inbox: Inbox::default(),
            reserved: 0,
            reserved_bytes: 0,
            app_gone: false,
            retired: false,
            lost: 0,
            gap_reported_through: 0,
            close_on_resume: None,
            lag: Lag::None,
        }
    }

    /// A new channel's events are numbered from `first` instead of 1 (a
    /// protocol layer encodes in its ids which stream they belong to).
    pub(crate) fn starting_at(mut self, first: u64) -> Self {
        self.next_event_id = first.max(1);
        self.gap_reported_through = self.next_event_id - 1;
        self
    }

    /// Open or suspended: the application may still send.
    pub(crate) fn is_live(&self) -> bool {
        self.phase.is_live()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.phase.is_suspended()
    }

    /// The messageId expected next from the client.
    pub(crate) fn next_message_id(&self) -> u64 {
        self.inbound.next_id()
    }

    /// Whether a stream is attached.
    pub(crate) fn has_stream(&self) -> bool {
        self.attached.is_some()
    }

    /// Whether stream `generation` is the attached one.
    pub(crate) fn is_attached(&self, generation: u64) -> bool {
        self.attached == Some(generation)
    }

    /// Bytes held for incoming messages: reserved bodies, the inbox, and
    /// out-of-order messages. The server bounds their sum over channels.
    pub(crate) fn held_bytes(&self) -> usize {
        self.reserved_bytes + self.inbox.bytes() + self.inbound.buffered_bytes()
    }

    /// The re-order state, for the memory of closed ids; the channel takes
    /// no POST after [`Effects::retire`].
    pub(crate) fn take_inbound(&mut self) -> ReorderBuffer<String> {
        let limits = ReorderLimits { window: 0, max_bytes: 0 };
        let next = self.inbound.next_id();
        std::mem::replace(&mut self.inbound, ReorderBuffer::new(next, limits))
    }

    // --- streams ---------------------------------------------------------

    /// A `GET` attaches a new stream; returns its generation, or `None`
    /// when the channel is closing (the caller starts a new channel).
    /// With `last_event_id`, a resumed or taken-over channel first re-sends
    /// what the replay log holds after it, broadcasts from `log`.
    pub(crate) fn attach(
        &mut self,
        last_event_id: Option<u64>,
        log: &BroadcastLog,
    ) -> (Option<u64>, Effects) {
        let mut fx = Effects::default();
        let continued = match self.phase {
            Phase::Closing(_) | Phase::Closed => return (None, fx),
            Phase::Suspended { epoch } => {
                fx.keep_alive = Some((epoch, Timer::Cancel));
                self.push_lifecycle(ConnectionEvent::Resumed, &mut fx);
                fx.logs.push(Log::Resumed);
                true
            }
            Phase::Open if self.attached.is_some() => {
                fx.wake_stream = true; // the old stream sees it is detached
                fx.logs.push(Log::TookOver);
                true
            }
            Phase::Open => false,
        };
        self.generations += 1;
        self.attached = Some(self.generations);
        self.phase = Phase::Open;
        if let (Some(last), true) = (last_event_id, continued) {
            self.requeue_after(last, log, &mut fx);
        }
        if let Some(reason) = self.close_on_resume.take() {
            // What was queued (and replayed) goes out first, then the end.
            self.phase = Phase::Closing(reason);
            self.retire(&mut fx);
            fx.logs.push(Log::Closing(reason));
        }
        (Some(self.generations), fx)
    }

    /// Moves replayable events with id > `last` back to the front of the
    /// queue; what the replay log no longer has is a gap, reported.
    fn requeue_after(&mut self, last: u64, log: &BroadcastLog, fx: &mut Effects) {
        let sent_up_to = self.queue.front().map_or(self.next_event_id, Queued::first_id) - 1;
        if last >= sent_up_to {
            if last > sent_up_to {
                fx.logs.push(Log::LastEventIdAhead { last, sent_up_to });
            }
            return;
        }
        self.forget_before_dropped(log);
        let oldest = self.replay.front().map_or(sent_up_to + 1, Kept::first_id);
        // Each lost event is reported once, however often a client asks
        // for it again.
        let first = (last + 1).max(self.gap_reported_through + 1);
        if first < oldest {
            let lost = oldest - first;
            self.lost += lost;
            self.gap_reported_through = oldest - 1;
            fx.logs.push(Log::Gap { first, last: oldest - 1 });
            self.inbox.push_gap(lost);
            fx.wake_app = true;
        }
        loop {
            match self.replay.back_mut() {
                Some(Kept::Own(id, _)) if *id > last => {
                    if let Some(Kept::Own(id, data)) = self.replay.pop_back() {
                        self.replay_events -= 1;
                        self.replay_weight -= data.len() + REPLAY_OVERHEAD;
                        self.queue_events += 1;
                        self.queue_bytes += data.len();
                        self.queue.push_front(Queued::Own(id, data));
                        fx.replayed += 1;
                    }
                }
                Some(Kept::Broadcast(run)) if run.last_id() > last => {
                    // Its events after `last`, from the log.
                    let n = (run.last_id() - last).min(run.count);
                    run.count -= n;
                    let tail = Run {
                        first_id: run.first_id + run.count,
                        first_seq: run.first_seq + run.count,
                        count: n,
                    };
                    if run.count == 0 {
                        self.replay.pop_back();
                        self.replay_weight -= REPLAY_OVERHEAD;
                    }
                    self.replay_events -= n as usize;
                    self.requeue_run(tail, log);
                    fx.replayed += n;
                }
                _ => break,
            }
        }
    }

    /// Puts broadcast events `run` back at the front of the queue, their
    /// bytes from `log` (which has them all: see
    /// [`Channel::forget_before_dropped`]), one entry per batch of the log.
    fn requeue_run(&mut self, run: Run, log: &BroadcastLog) {
        // From the last event back, a batch of the log at a time.
        let mut left = run.count;
        while left > 0 {
            let seq = run.first_seq + left - 1;
            let Some((events, last)) = log.get(seq) else {
                debug_assert!(false, "a dropped broadcast in the replay");
                return;
            };
            let n = (last as u64 + 1).min(left);
            let from = last + 1 - n as usize;
            left -= n;
            self.queue_events += n as usize;
            self.queue_bytes += events.span(from, last + 1).len();
            self.queue.push_front(Queued::Broadcast {
                first_id: run.first_id + left,
                events: events.clone(),
                from,
                to: last + 1,
            });
        }
    }

    /// Forgets what the replay holds up to the newest broadcast event the
    /// log has dropped: a resume gets an unbroken run of events or a gap
    /// before them, never a hole in the middle (so that a gap reported
    /// once is all that is lost before it). With the log's bounds
    /// ([`BroadcastLog::for_limits`]) this drops nothing but under
    /// concurrent broadcasts or a channel replay longer in bytes than the
    /// log.
    fn forget_before_dropped(&mut self, log: &BroadcastLog) {
        let oldest = log.oldest();
        let dropped_through = self
            .replay
            .iter()
            .filter_map(|k| match k {
                Kept::Broadcast(r) if r.first_seq < oldest => {
                    Some(r.first_id + (oldest - r.first_seq).min(r.count) - 1)
                }
                _ => None,
            })
            .max();
        if let Some(through) = dropped_through {
            self.trim_replay_through(through);
        }
    }

    /// Drops the replay's events with ids up to `through`.
    fn trim_replay_through(&mut self, through: u64) {
        while let Some(front) = self.replay.front_mut() {
            if front.first_id() > through {
                break;
            }
            if let Kept::Broadcast(run) = front
                && run.last_id() > through
            {
                let k = through + 1 - run.first_id;
                run.drop_front(k);
                self.replay_events -= k as usize;
                break;
            }
            self.pop_replay_front();
        }
    }

    /// Drops the oldest entry of the replay.
    fn pop_replay_front(&mut self) {
        if let Some(kept) = self.replay.pop_front() {
            self.replay_events -= kept.events();
            self.replay_weight -= kept.weight();
        }
    }

    /// The next bytes for stream `generation`, batched.
    pub(crate) fn next_batch(&mut self, generation: u64) -> (Batch, Effects) {
        let mut fx = Effects::default();
        if self.attached != Some(generation) {
            return (Batch::End, fx);
        }
        if !self.queue.is_empty() {
            let (bytes, n) = self.drain_batch();
            let l = self.settings.limits;
            if self.queue_events * 4 <= l.outgoing_messages
                && self.queue_bytes * 4 <= l.outgoing_bytes
            {
                self.caught_up(&mut fx);
            }
            return (Batch::Data(bytes, n), fx);
        }
        if let Phase::Closing(reason) = self.phase {
            self.attached = None;
            self.finish(reason, &mut fx);
            return (Batch::Final, fx);
        }
        (Batch::Pending, fx)
    }

    fn drain_batch(&mut self) -> (Bytes, u64) {
        // Sized exactly first (a frame whose buffer is full freezes
        // without a header of its own), then written: the entries taken
        // whole, then part of the next.
        let max_frame = self.settings.max_frame;
        let (mut len, mut whole, mut part) = (0, 0, 0);
        for q in &self.queue {
            let (n, bytes) = q.fitting(max_frame.saturating_sub(len), len == 0);
            len += bytes;
            if n < q.events() {
                part = n;
                break;
            }
            whole += 1;
        }
        let mut buf = BytesMut::with_capacity(len);
        let mut batched = 0;
        for _ in 0..whole {
            let n = self.queue.front().map_or(0, Queued::events);
            batched += self.take_front(n, &mut buf);
        }
        if part > 0 {
            batched += self.take_front(part, &mut buf);
        }
        debug_assert_eq!(buf.len(), buf.capacity());
        let limits = self.settings.limits;
        while self.replay_events > limits.replay_events || self.replay_weight > limits.replay_bytes
        {
            match self.replay.front_mut() {
                None => break,
                // Only the count is over: drop just enough of the run.
                Some(Kept::Broadcast(run)) if self.replay_weight <= limits.replay_bytes => {
                    let over = (self.replay_events - limits.replay_events) as u64;
                    if over < run.count {
                        run.drop_front(over);
                        self.replay_events -= over as usize;
                        break;
                    }
                    self.pop_replay_front();
                }
                Some(_) => self.pop_replay_front(),
            }
        }
        (buf.freeze(), batched)
    }

    /// Writes the first `n` events of the queue's front entry into `buf`
    /// and moves them to the replay; returns `n`.
    fn take_front(&mut self, n: usize, buf: &mut BytesMut) -> u64 {
        let Some(front) = self.queue.front_mut() else { return 0 };
        self.queue_events -= n;
        self.replay_events += n;
        let run = match front {
            Queued::Own(id, data) => {
                event::put_id_line(buf, *id);
                buf.extend_from_slice(data);
                self.queue_bytes -= data.len();
                if let Some(Queued::Own(id, data)) = self.queue.pop_front() {
                    self.replay_weight += data.len() + REPLAY_OVERHEAD;
                    self.replay.push_back(Kept::Own(id, data));
                }
                return n as u64;
            }
            Queued::Broadcast { first_id, events, from, to } => {
                let mut id = event::IdLines::starting_at(*first_id);
                for i in *from..*from + n {
                    buf.extend_from_slice(id.line());
                    buf.extend_from_slice(events.event(i));
                    id.advance();
                }
                self.queue_bytes -= events.span(*from, *from + n).len();
                let run = Run {
                    first_id: *first_id,
                    first_seq: events.first_seq() + *from as u64,
                    count: n as u64,
                };
                *first_id += n as u64;
                *from += n;
                if *from == *to {
                    self.queue.pop_front();
                }
                run
            }
        };
        // A broadcast: the replay keeps its numbers, not its bytes.
        match self.replay.back_mut() {
            Some(Kept::Broadcast(last)) if last.follows_with(run.first_id, run.first_seq) => {
                last.count += run.count
            }
            _ => {
                self.replay_weight += REPLAY_OVERHEAD;
                self.replay.push_back(Kept::Broadcast(run));
            }
        }
        n as u64
    }

    /// Stream `generation` went away (client gone, write failed, taken
    /// over, or ended by us).
    pub(crate) fn stream_ended(&mut self, generation: u64) -> Effects {
        let mut fx = Effects::default();
        if self.attached == Some(generation) {
            self.attached = None;
            self.lose_stream(&mut fx);
        }
        fx
    }

    /// The attached stream is gone: suspend under keep-alive, else close.
    fn lose_stream(&mut self, fx: &mut Effects) {
        self.caught_up(fx);
        match (self.phase, self.settings.keep_alive) {
            (Phase::Open, Some(period)) => {
                self.suspensions += 1;
                let epoch = self.suspensions;
                self.phase = Phase::Suspended { epoch };
                fx.keep_alive = Some((epoch, Timer::Arm(period)));
                self.push_lifecycle(ConnectionEvent::Suspended, fx);
                fx.logs.push(Log::StreamLost { keep_alive: period });
            }
            (Phase::Open, None) => self.finish(CloseReason::StreamEnded, fx),
            (Phase::Closing(reason), _) => self.finish(reason, fx),
            (Phase::Suspended { .. } | Phase::Closed, _) => {}
        }
    }

    /// Ends the stream without the control event: the client reconnects
    /// and, with keep-alive, resumes.
    pub(crate) fn drop_stream(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.phase == Phase::Open && self.attached.is_some() {
            self.attached = None;
            fx.wake_stream = true;
            fx.logs.push(Log::Dropped);
            self.lose_stream(&mut fx);
        }
        fx
    }

    // --- the application's side -------------------------------------------

    /// Queues broadcast batch `events` (appended to the store's
    /// [`BroadcastLog`]) as one entry, with one wake-up: as many as fit,
    /// like [`Channel::send`] for each in order, the first that does not
    /// fit closing the channel as a slow consumer. Returns how many were
    /// queued.
    pub(crate) fn send_all(&mut self, events: &Arc<Events>) -> (usize, Effects) {
        let mut fx = Effects::default();
        if !self.is_live() {
            return (0, fx);
        }
        let limits = self.settings.limits;
        let all = events.len();
        let room = limits.outgoing_messages.saturating_sub(self.queue_events).min(all);
        let n = events.fitting(0, room, limits.outgoing_bytes.saturating_sub(self.queue_bytes));
        if n > 0 {
            self.queue.push_back(Queued::Broadcast {
                first_id: self.next_event_id,
                events: events.clone(),
                from: 0,
                to: n,
            });
            self.next_event_id += n as u64;
            self.queue_events += n;
            self.queue_bytes += events.span(0, n).len();
            fx.wake_stream = self.attached.is_some();
            let l = limits;
            match self.lag {
                Lag::None
                    if self.attached.is_some()
                        && (self.queue_events * 2 > l.outgoing_messages
                            || self.queue_bytes * 2 > l.outgoing_bytes) =>
                {
                    self.lag = Lag::Behind { held_up: 0 };
                    fx.backlogged = true;
                }
                Lag::Behind { held_up } if held_up + 1 >= LAG_BROADCASTS => {
                    self.lag = Lag::Excused;
                    fx.caught_up = true;
                }
                Lag::Behind { held_up } => self.lag = Lag::Behind { held_up: held_up + 1 },
                _ => {}
            }
        }
        if n < all {
            self.slow_consumer(&mut fx);
        }
        (n, fx)
    }

    /// Queues an encoded `data:` tail for the client. Past the queue's
    /// bounds the client is a slow consumer and is disconnected.
    pub(crate) fn send(&mut self, data: Bytes) -> (Result<(), SendError>, Effects) {
        let mut fx = Effects::default();
        if !self.is_live() {
            return (Err(SendError::Closed), fx);
        }
        let limits = self.settings.limits;
        if self.queue_events >= limits.outgoing_messages
            || self.queue_bytes + data.len() > limits.outgoing_bytes
        {
            self.slow_consumer(&mut fx);
            return (Err(SendError::SlowConsumer), fx);
        }
        let id = self.next_event_id;
        self.next_event_id += 1;
        self.queue_events += 1;
        self.queue_bytes += data.len();
        self.queue.push_back(Queued::Own(id, data));
        fx.wake_stream = self.attached.is_some();
        (Ok(()), fx)
    }

    /// An event found the queue full: the client is disconnected.
    fn slow_consumer(&mut self, fx: &mut Effects) {
        fx.logs
            .push(Log::SlowConsumer { queued: self.queue_events, queued_bytes: self.queue_bytes });
        fx.wake_stream |= self.attached.take().is_some();
        self.lost += 1; // this message is not delivered either
        self.finish(CloseReason::SlowConsumer, fx);
    }

    /// Control close: flush the queue, send the close event, end the
    /// stream. Without a stream the channel closes at once.
    pub(crate) fn close(&mut self, reason: CloseReason) -> Effects {
        let mut fx = Effects::default();
        match self.phase {
            Phase::Open if self.attached.is_some() => {
                self.phase = Phase::Closing(reason);
                fx.wake_stream = true;
                // Gone from the registry at once: a new GET starts afresh.
                self.retire(&mut fx);
                fx.logs.push(Log::Closing(reason));
            }
            Phase::Open | Phase::Suspended { .. } => self.finish(reason, &mut fx),
            Phase::Closing(_) | Phase::Closed => {}
        }
        fx
    }

    /// Closes once what is queued has reached a stream: now (flushing
    /// first) when one is attached, else at the next resume, which replays
    /// as usual; the keep-alive still bounds the wait. MCP's response
    /// streams end so, and a client whose stream was cut before the answer
    /// resumes to fetch it.
    pub(crate) fn close_when_delivered(&mut self, reason: CloseReason) -> Effects {
        if self.is_suspended() {
            self.close_on_resume.get_or_insert(reason);
            return Effects::default();
        }
        self.close(reason)
    }

    /// The client closed for good: no control event (it is not listening),
    /// whatever the keep-alive.
    pub(crate) fn client_closed(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.is_live() {
            fx.wake_stream = self.attached.take().is_some();
            self.finish(CloseReason::ClosedByClient, &mut fx);
        }
        fx
    }

    /// Shutdown's grace ran out: whatever is still open or flushing closes
    /// now, its queue counted undelivered.
    pub(crate) fn force_close(&mut self) -> Effects {
        let mut fx = Effects::default();
        let reason = match self.phase {
            Phase::Closed => return fx,
            Phase::Closing(reason) => reason,
            Phase::Open | Phase::Suspended { .. } => CloseReason::Shutdown,
        };
        fx.wake_stream = self.attached.take().is_some();
        self.finish(reason, &mut fx);
        fx
    }

    /// A deadline the channel armed has come.
    pub(crate) fn deadline(&mut self, which: Deadline) -> Effects {
        let mut fx = Effects::default();
        match which {
            Deadline::KeepAlive { epoch } => {
                if self.phase == (Phase::Suspended { epoch }) {
                    self.finish(CloseReason::KeepAliveExpired, &mut fx);
                }
            }
            Deadline::FirstMessage => {
                if !self.first_wait_armed || self.retired {
                    return fx;
                }
                self.first_wait_armed = false;
                // Still nothing delivered: start from the first message held.
                if let Some(start) = self.inbound.skip_gap() {
                    fx.logs.push(Log::SkippedToFirst {
                        start,
                        wait: self.settings.first_message_wait,
                    });
                    self.take_released(&mut fx);
                }
            }
        }
        fx
    }

    /// The stream no longer lags (caught up, or gone: a channel without a
    /// stream holds no broadcast up).
    fn caught_up(&mut self, fx: &mut Effects) {
        if let Lag::Behind { .. } = self.lag {
            fx.caught_up = true;
        }
        self.lag = Lag::None;
    }

    /// Marks the channel closed and tells the application.
    fn finish(&mut self, reason: CloseReason, fx: &mut Effects) {
        self.caught_up(fx);
        if let Some(epoch) = self.suspended_epoch() {
            fx.keep_alive = Some((epoch, Timer::Cancel));
        }
        if self.first_wait_armed {
            self.first_wait_armed = false;
            fx.first_message = Some(Timer::Cancel);
        }
        self.phase = Phase::Closed;
        let info = CloseInfo { reason, undelivered: self.queue_events as u64 + self.lost };
        self.queue.clear();
        self.queue_events = 0;
        self.queue_bytes = 0;
        self.replay.clear();
        self.replay_events = 0;
        self.replay_weight = 0;
        self.inbox.push(ConnectionEvent::Closed(info));
        fx.wake_app = true;
        fx.closed = true;
        fx.room = self.reserved > 0; // waiting POSTs learn it is closed
        self.retire(fx);
        fx.logs.push(Log::Closed(info));
    }

    fn suspended_epoch(&self) -> Option<u64> {
        match self.phase {
            Phase::Suspended { epoch } => Some(epoch),
            _ => None,
        }
    }

    fn retire(&mut self, fx: &mut Effects) {
        if !self.retired {
            self.retired = true;
            fx.retire = true;
        }
    }

    fn push_lifecycle(&mut self, ev: ConnectionEvent, fx: &mut Effects) {
        fx.wake_app |= self.inbox.push_lifecycle(ev);
    }

    /// The application takes its next event.
    pub(crate) fn recv(&mut self) -> (Option<ConnectionEvent>, Effects) {
        let (ev, room) = self.inbox.recv();
        (ev, Effects { room, ..Effects::default() })
    }

    /// Whether the application has taken `Closed`: nothing follows.
    pub(crate) fn is_done(&self) -> bool {
        self.inbox.is_done()
    }

    /// The application dropped its side: its unread messages are gone and
    /// POSTs are refused from now on.
    pub(crate) fn app_dropped(&mut self) -> Effects {
        let mut fx = Effects::default();
        self.app_gone = true;
        let unread = self.inbox.clear();
        if unread > 0 {
            fx.logs.push(Log::UnreadMessages { count: unread });
        }
        fx.room = true;
        fx
    }

    // --- POSTs -------------------------------------------------------------

    /// A POST asks for room before its body is read, so bodies waiting for
    /// a slow application are never held whole. `Ok(false)`: full, wait
    /// for [`Effects::room`]. One POST always gets in when nothing is held.
    pub(crate) fn reserve(&mut self, bytes: usize) -> Result<bool, InboundError> {
        self.check_inbound()?;
        let limits = self.settings.limits;
        let idle = self.reserved == 0 && self.inbox.messages() == 0;
        let fits = self.inbox.messages() + self.reserved < limits.incoming_messages
            && self.inbox.bytes() + self.reserved_bytes + bytes <= limits.incoming_bytes;
        if !(idle || fits) {
            return Ok(false);
        }
        self.reserved += 1;
        self.reserved_bytes += bytes;
        Ok(true)
    }

    /// A reserved POST ended without offering (bad body, timeout).
    pub(crate) fn unreserve(&mut self, bytes: usize) -> Effects {
        self.reserved -= 1;
        self.reserved_bytes -= bytes;
        Effects { room: true, ..Effects::default() }
    }

    fn check_inbound(&self) -> Result<(), InboundError> {
        if self.retired {
            return Err(InboundError::Closed);
        }
        if self.app_gone {
            return Err(InboundError::AppGone);
        }
        Ok(())
    }

    /// Message `id` of a reserved POST: into the re-order buffer, and in
    /// order into the application's inbox.
    pub(crate) fn offer(
        &mut self,
        id: u64,
        message: String,
        reserved_bytes: usize,
    ) -> (Result<Offer, InboundError>, Effects) {
        let mut fx = self.unreserve(reserved_bytes);
        if let Err(e) = self.check_inbound() {
            return (Err(e), fx);
        }
        let offer = self.inbound.offer(id, message);
        let result = match offer {
            Offer::Ready => {
                self.fresh = false;
                if self.first_wait_armed {
                    self.first_wait_armed = false;
                    fx.first_message = Some(Timer::Cancel);
                }
                self.take_released(&mut fx);
                Ok(offer)
            }
            Offer::Buffered => {
                if self.fresh {
                    self.fresh = false;
                    self.first_wait_armed = true;
                    fx.first_message = Some(Timer::Arm(self.settings.first_message_wait));
                }
                Ok(offer)
            }
            Offer::Duplicate => Ok(offer),
            Offer::TooFarAhead => Err(InboundError::TooFarAhead {
                next: self.inbound.next_id(),
                window: self.settings.limits.reorder_window,
            }),
            Offer::BufferFull => {
                Err(InboundError::ReorderFull { bytes: self.inbound.buffered_bytes() })
            }
        };
        (result, fx)
    }

    /// Moves messages the re-order buffer released into the inbox.
    fn take_released(&mut self, fx: &mut Effects) {
        while let Some(m) = self.inbound.pop_ready() {
            self.inbox.push(ConnectionEvent::Message(m));
            fx.wake_app = true;
            fx.delivered += 1;
        }
    }
}

/// Broadcast events with consecutive ids and consecutive numbers in the
/// [`BroadcastLog`]: a channel that only broadcasts keeps one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    first_id: u64,
    first_seq: u64,
    count: u64,
}

impl Run {
    fn last_id(&self) -> u64 {
        self.first_id + self.count - 1
    }

    /// Whether event `id`, numbered `seq`, comes right after this run.
    fn follows_with(&self, id: u64, seq: u64) -> bool {
        self.first_id + self.count == id && self.first_seq + self.count == seq
    }

    fn drop_front(&mut self, n: u64) {
        self.first_id += n;
        self.first_seq += n;
        self.count -= n;
    }
}

/// One entry of a channel's queue.
#[derive(Debug)]
enum Queued {
    /// An event of this channel's own: its id and bytes.
    Own(u64, Bytes),
    /// Events `from..to` of a broadcast batch, the first with id `first_id`.
    Broadcast { first_id: u64, events: Arc<Events>, from: usize, to: usize },
}

impl Queued {
    fn first_id(&self) -> u64 {
        match self {
            Queued::Own(id, _) | Queued::Broadcast { first_id: id, .. } => *id,
        }
    }

    fn events(&self) -> usize {
        match self {
            Queued::Own(..) => 1,
            Queued::Broadcast { from, to, .. } => to - from,
        }
    }

    /// How many of its events, from the first, fit in `budget` bytes once
    /// encoded (at least one if `first`: a frame holds at least one
    /// event), and their encoded bytes.
    fn fitting(&self, budget: usize, first: bool) -> (usize, usize) {
        match self {
            Queued::Own(id, data) => {
                let len = event::id_line_len(*id) + data.len();
                if first || len <= budget { (1, len) } else { (0, 0) }
            }
            Queued::Broadcast { first_id, events, from, to } => {
                let all = event::id_lines_len(*first_id, (to - from) as u64)
                    + events.span(*from, *to).len();
                if all <= budget {
                    return (to - from, all);
                }
                let (mut n, mut len) = (0, 0);
                for i in *from..*to {
                    let one = event::id_line_len(*first_id + n as u64) + events.event(i).len();
                    if len + one > budget && !(first && n == 0) {
                        break;
                    }
                    len += one;
                    n += 1;
                }
                (n, len)
            }
        }
    }
}

/// One entry of a channel's replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kept {
    /// An event of this channel's own, with its bytes.
    Own(u64, Bytes),
    /// Broadcast events, whose bytes the log holds.
    Broadcast(Run),
}

impl Kept {
    fn first_id(&self) -> u64 {
        match self {
            Kept::Own(id, _) => *id,
            Kept::Broadcast(r) => r.first_id,
        }
    }

    fn events(&self) -> usize {
        match self {
            Kept::Own(..) => 1,
            Kept::Broadcast(r) => r.count as usize,
        }
    }

    /// What it counts against `--replay-bytes`.
    fn weight(&self) -> usize {
        match self {
            Kept::Own(_, data) => data.len() + REPLAY_OVERHEAD,
            Kept::Broadcast(_) => REPLAY_OVERHEAD,
        }
    }
}

/// Moves events from the front of `queue` into one buffer of `id:` lines
/// and data, at most `max_frame` bytes (at least one event), handing each
/// event moved to `moved`. Returns the bytes and how many events they hold.
pub(crate) fn encode_batch(
    queue: &mut VecDeque<(u64, Bytes)>,
    max_frame: usize,
    mut moved: impl FnMut(u64, Bytes),
) -> (Bytes, u64) {
    // Sized exactly by what one frame takes (a full buffer freezes without
    // a header of its own), not by the whole queue: a long queue (a fast
    // broadcast to a slow reader) is not walked on every batch.
    let (mut len, mut count) = (0, 0);
    for (id, d) in queue.iter() {
        let one = event::id_line_len(*id) + d.len();
        if count > 0 && len + one > max_frame {
            break;
        }
        len += one;
        count += 1;
    }
    let mut buf = BytesMut::with_capacity(len);
    for _ in 0..count {
        let Some((id, data)) = queue.pop_front() else { break };
        event::put_id_line(&mut buf, id);
        buf.extend_from_slice(&data);
        moved(id, data);
    }
    (buf.freeze(), count as u64)
}

/// What the application has not taken yet: messages in order, lifecycle
/// events, gaps, and the close. Bounded by the POSTs' room checks; a resume
/// cancels an unread suspension and gaps merge, so reconnects cannot flood
/// an application that does not read.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    events: VecDeque<ConnectionEvent>,
    messages: usize,
    bytes: usize,
    /// `Closed` has been taken.
    done: bool,
}

impl Inbox {
    /// Messages waiting, and their bytes.
    pub(crate) fn messages(&self) -> usize {
        self.messages
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Queues a message or the close.
    pub(crate) fn push(&mut self, ev: ConnectionEvent) {
        if let ConnectionEvent::Message(m) = &ev {
            self.messages += 1;
            self.bytes += m.len();
        }
        self.events.push_back(ev);
    }

    /// Queues `Suspended` or `Resumed`; a resume cancels an unread
    /// suspension. Returns whether there is something new to read.
    pub(crate) fn push_lifecycle(&mut self, ev: ConnectionEvent) -> bool {
        if ev == ConnectionEvent::Resumed && self.events.back() == Some(&ConnectionEvent::Suspended)
        {
            self.events.pop_back();
            return false;
        }
        self.events.push_back(ev);
        true
    }

    /// Reports `lost` events, merged with a gap not read yet.
    pub(crate) fn push_gap(&mut self, lost: u64) {
        match self.events.back_mut() {
            Some(ConnectionEvent::Gap { lost: pending }) => *pending += lost,
            _ => self.events.push_back(ConnectionEvent::Gap { lost }),
        }
    }

    /// The next event, and whether taking it freed room for messages.
    pub(crate) fn recv(&mut self) -> (Option<ConnectionEvent>, bool) {
        let ev = self.events.pop_front();
        let mut room = false;
        match &ev {
            Some(ConnectionEvent::Message(m)) => {
                self.messages -= 1;
                self.bytes -= m.len();
                room = true;
            }
            Some(ConnectionEvent::Closed(_)) => self.done = true,
            _ => {}
        }
        (ev, room)
    }

    /// Whether the application has taken `Closed`: nothing follows.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Forgets everything (the application left); returns the messages it
    /// never read, unless it had already taken the close.
    pub(crate) fn clear(&mut self) -> usize {
        let unread = if self.done { 0 } else { self.messages };
        self.events.clear();
        self.messages = 0;
        self.bytes = 0;
        unread
    }
}

#[cfg(test)]
mod tests;
