//! A stream attached on this instance, whatever the channel's home. Its
//! events come as notices (each with the store's event id), in order; a
//! gap in the ids (notices that came before the stream was set up, or a
//! replay longer than the attach's reply) is filled from the channel's
//! event stream in Redis. What it has handed to the socket is reported to
//! the store (the cursor that bounds the queue and the replay), and when it
//! ends, the store hears it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, warn};

use super::Shared;
use super::link;
use super::notice::{self, Notice, StoredEvent, reason_code};
use crate::server::app::CloseReason;
use crate::server::channel::encode_batch;
use crate::server::metrics::Counters;
use crate::server::store::{StreamItem, StreamSource};
use crate::server::stream::DetachProbe;
use crate::text::escape_controls;

/// Events asked of the store per read when filling a gap.
const FILL_PAGE: usize = 512;

/// How the channel told this stream to end with the control close.
#[derive(Debug, Clone)]
struct FinalInfo {
    last: u64,
    reason: CloseReason,
    lost: u64,
    home: String,
}

pub(crate) struct Held {
    me: Weak<Held>,
    pub(crate) cid: Arc<str>,
    pub(crate) tok: Arc<str>,
    state: Mutex<HeldState>,
    store: Weak<Shared>,
    /// In the reporter's list of streams whose cursor moved.
    listed: AtomicBool,
}

struct HeldState {
    ser: u64,
    /// The channel's home; `None` until the attach is answered.
    home: Option<Arc<str>>,
    /// The id of the next event to queue.
    next: u64,
    /// The highest event id known to be in the store.
    known: u64,
    queue: VecDeque<(u64, Bytes)>,
    /// Data bytes of the channel through each queued event.
    cums: VecDeque<u64>,
    /// Events that came ahead of a gap.
    early: BTreeMap<u64, (Bytes, u64)>,
    filling: bool,
    final_info: Option<FinalInfo>,
    final_written: bool,
    detached: bool,
    /// Handed to the socket: the last event id, and the channel's data
    /// bytes through it (`None` before this stream wrote anything).
    written: u64,
    written_cum: Option<u64>,
    reported: u64,
    waker: Option<Waker>,
}

impl Held {
    /// A stream being attached: notices for `tok` are kept until the
    /// attach is answered ([`Held::start`]).
    pub(crate) fn new(cid: Arc<str>, tok: Arc<str>, store: Weak<Shared>) -> Arc<Held> {
        Arc::new_cyclic(|me| Held {
            me: me.clone(),
            cid,
            tok,
            state: Mutex::new(HeldState {
                ser: 0,
                home: None,
                next: 1,
                known: 0,
                queue: VecDeque::new(),
                cums: VecDeque::new(),
                early: BTreeMap::new(),
                filling: false,
                final_info: None,
                final_written: false,
                detached: false,
                written: 0,
                written_cum: None,
                reported: 0,
                waker: None,
            }),
            store,
            listed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HeldState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The attach was answered: send from `start`; the store has events
    /// through `last`, the first of which are `events`.
    pub(crate) fn start(
        &self,
        ser: u64,
        home: Arc<str>,
        start: u64,
        last: u64,
        events: Vec<StoredEvent>,
    ) {
        let mut st = self.lock();
        st.ser = ser;
        st.home = Some(home);
        st.next = start;
        st.written = start.saturating_sub(1);
        st.reported = st.written;
        st.known = st.known.max(last);
        for (id, data, cum) in events {
            st.early.insert(id, (data, cum));
        }
        self.advance(st);
    }

    /// Whether it is set up and still the channel's stream.
    pub(crate) fn is_attached(&self) -> bool {
        let st = self.lock();
        st.home.is_some() && !st.detached
    }

    pub(crate) fn home(&self) -> Option<Arc<str>> {
        self.lock().home.clone()
    }

    /// What the channel's home told this stream.
    pub(crate) fn notice(&self, n: Notice) {
        let mut st = self.lock();
        match n {
            Notice::Events { first, cum, data, .. } => {
                for (id, d, c) in notice::with_cums(first, cum, data) {
                    st.known = st.known.max(id);
                    if id >= st.next {
                        st.early.insert(id, (d, c));
                    }
                }
            }
            Notice::Detach { .. } => st.detached = true,
            Notice::Final { last, reason, lost, home, .. } => {
                st.known = st.known.max(last);
                st.final_info = Some(FinalInfo { last, reason, lost, home });
            }
            _ => return,
        }
        self.advance(st);
    }

    /// Queues what continues the stream, starts filling a gap, wakes.
    fn advance(&self, mut st: MutexGuard<'_, HeldState>) {
        if st.home.is_some() {
            let HeldState { early, queue, cums, next, .. } = &mut *st;
            while let Some(entry) = early.first_entry() {
                let id = *entry.key();
                if id > *next {
                    break;
                }
                let (data, cum) = entry.remove();
                if id == *next {
                    queue.push_back((id, data));
                    cums.push_back(cum);
                    *next += 1;
                }
            }
        }
        let fill =
            (st.home.is_some() && !st.filling && !st.detached && st.next <= st.known).then(|| {
                let to = st.early.keys().next().map_or(st.known, |k| k - 1);
                st.filling = true;
                (st.ser, st.next, to)
            });
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
        if let (Some((ser, from, to)), Some(me), Some(store)) =
            (fill, self.me.upgrade(), self.store.upgrade())
        {
            tokio::spawn(async move { me.fill(store, ser, from, to).await });
        }
    }

    /// Reads events `from..=to` from the store into the queue; what it no
    /// longer has is lost, and reported to the home.
    async fn fill(self: Arc<Self>, store: Arc<Shared>, ser: u64, from: u64, to: u64) {
        let key = store.link.key(&format!("o:{ser}"));
        let mut at = from;
        let mut retry = link::retry(Duration::from_secs(1));
        let mut lost = Vec::new();
        while at <= to {
            if self.lock().detached {
                break;
            }
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&key).arg(format!("0-{at}")).arg(format!("0-{to}")).arg("COUNT").arg(FILL_PAGE);
            // A reply not understood is retried, not taken for lost events.
            let events = match store.link.command(&cmd).await.map(|v| notice::stored_events(&v)) {
                Ok(Some(events)) => events,
                Ok(None) => {
                    warn!(client = %escape_controls(&self.cid), "events read from the store not understood; retrying");
                    tokio::time::sleep(retry.wait()).await;
                    continue;
                }
                Err(e) => {
                    debug!(client = %escape_controls(&self.cid), "reading events from the store: {e}; retrying");
                    tokio::time::sleep(retry.wait()).await;
                    continue;
                }
            };
            retry.succeeded();
            let page_full = events.len() == FILL_PAGE;
            let mut st = self.lock();
            for (id, data, cum) in events {
                if id > at {
                    lost.push((at, id - 1));
                }
                st.early.insert(id, (data, cum));
                at = id + 1;
            }
            if !page_full && at <= to {
                lost.push((at, to));
                at = to + 1;
            }
            drop(st);
        }
        let mut st = self.lock();
        for &(first, last) in &lost {
            if st.next >= first && st.next <= last {
                st.next = last + 1;
            }
        }
        st.filling = false;
        self.advance(st);
        for (first, last) in lost {
            warn!(client = %escape_controls(&self.cid), "events {first}..={last} were no longer in the store: lost");
            store.report_lost(self.cid.clone(), ser, first, last);
        }
    }

    /// The cursor to report, if it moved: event id and bytes through it.
    pub(crate) fn cursor(&self) -> Option<(u64, u64, u64)> {
        self.listed.store(false, Ordering::Release);
        let mut st = self.lock();
        let cum = st.written_cum?;
        if st.written <= st.reported {
            return None;
        }
        st.reported = st.written;
        Some((st.ser, st.written, cum))
    }

    /// A report that failed: sent again next time.
    pub(crate) fn unreport(&self) {
        self.lock().reported = 0;
        self.list();
    }

    fn list(&self) {
        if !self.listed.swap(true, Ordering::AcqRel)
            && let (Some(store), Some(me)) = (self.store.upgrade(), self.me.upgrade())
        {
            store.list_cursor(me);
        }
    }

    /// Ends the stream from this side (shutdown of an instance that is not
    /// the channel's home): the store suspends or closes the channel.
    pub(crate) fn end_here(&self) {
        let mut st = self.lock();
        if !st.detached {
            st.detached = true;
            let w = st.waker.take();
            drop(st);
            self.tell_ended();
            if let Some(w) = w {
                w.wake();
            }
        }
    }

    /// Tells the store this stream ended (retried until it hears it).
    fn tell_ended(&self) {
        let Some(store) = self.store.upgrade() else { return };
        let st = self.lock();
        let (flushed, fin) = (st.final_written, st.final_info.clone());
        let args = super::Ended {
            cid: self.cid.clone(),
            ser: st.ser,
            tok: self.tok.clone(),
            sent: st.written_cum.map_or(0, |_| st.written),
            sent_cum: st.written_cum.unwrap_or(0),
            flushed,
            home: fin.as_ref().map(|f| f.home.clone()).unwrap_or_default(),
            reason: fin.as_ref().map_or("", |f| reason_code(f.reason)),
            undelivered: fin.as_ref().map_or(0, |f| {
                let unsent = if flushed { 0 } else { f.last.saturating_sub(st.written) };
                unsent + f.lost
            }),
        };
        drop(st);
        store.tell_ended(args);
    }
}

/// The [`StreamSource`] of a held stream; dropping it ends the stream.
pub(crate) struct HeldStream {
    pub(crate) held: Arc<Held>,
    pub(crate) max_frame: usize,
}

impl StreamSource for HeldStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<StreamItem> {
        let held = &self.held;
        let mut st = held.lock();
        if st.detached {
            return Poll::Ready(StreamItem::End);
        }
        if !st.queue.is_empty() {
            let HeldState { queue, cums, written, written_cum, .. } = &mut *st;
            let (bytes, events) = encode_batch(queue, self.max_frame, |id, _| {
                *written = id;
                *written_cum = cums.pop_front().or(*written_cum);
            });
            drop(st);
            held.list();
            if let Some(store) = held.store.upgrade() {
                let c = store.stats();
                Counters::add(&c.frames, 1);
                Counters::add(&c.events, events);
                Counters::add(&c.bytes_out, bytes.len() as u64);
            }
            return Poll::Ready(StreamItem::Data(bytes));
        }
        if let Some(f) = &st.final_info
            && st.next > f.last
            && !st.filling
        {
            st.final_written = true;
            st.detached = true;
            return Poll::Ready(StreamItem::Final);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn probe(&self) -> DetachProbe {
        let held = self.held.clone();
        Arc::new(move |cx| {
            let mut st = held.lock();
            if st.detached && !st.final_written {
                return true;
            }
            match &st.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.waker = Some(cx.waker().clone()),
            }
            false
        })
    }
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        let held = &self.held;
        let mut st = held.lock();
        let tell = !st.detached || st.final_written;
        st.detached = true;
        drop(st);
        if let Some(store) = held.store.upgrade() {
            store.forget_held(held);
        }
        if tell {
            held.tell_ended();
        }
    }
}
