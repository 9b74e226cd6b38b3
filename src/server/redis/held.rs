//! A stream attached on this instance, whatever the channel's home: a
//! [`HeldState`] behind a mutex, with the waker of the task writing it.
//! Everything a transition asks for (wake the writer, read a gap's events
//! from the store, list the cursor for the reporter, tell the store the
//! stream ended) is done by [`Held::apply`], after the lock; the task that
//! fills a gap reports what the store no longer had.

mod state;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tracing::{debug, warn};

use state::{Effects, Fill, HeldState, page_gaps};

use super::link::{self, Link};
use super::notice::{self, Notice, StoredEvent};
use super::owed::Owed;
use super::report::{CursorSource, Reporter};
use super::requests::Request;
use crate::server::channel::Batch;
use crate::server::machine::Machine;
use crate::server::metrics::Counters;
use crate::server::store::{StreamItem, StreamSource};
use crate::server::stream::DetachProbe;
use crate::server::wait;
use crate::text::escape_controls;

/// Events asked of the store per read when filling a gap.
const FILL_PAGE: usize = 512;

/// Where a stream that ended is forgotten (the owner of the streams).
pub(crate) trait HeldExit: Send + Sync {
    fn forget_held(&self, held: &Held);
}

/// What every stream of an instance uses.
pub(crate) struct HeldEnv {
    pub link: Link,
    pub owed: Arc<Owed>,
    pub reporter: Weak<Reporter>,
    pub exit: Weak<dyn HeldExit>,
    pub stats: Arc<Counters>,
    /// Largest batch handed to the socket at once.
    pub max_frame: usize,
}

pub(crate) struct Slot {
    state: HeldState,
    waker: Option<Waker>,
}

pub(crate) struct Held {
    me: Weak<Held>,
    pub(crate) cid: Arc<str>,
    pub(crate) tok: Arc<str>,
    slot: Mutex<Slot>,
    env: Arc<HeldEnv>,
}

impl Held {
    /// A stream being attached: notices for `tok` are kept until the
    /// attach is answered ([`Held::start`]).
    pub(crate) fn new(cid: Arc<str>, tok: Arc<str>, env: Arc<HeldEnv>) -> Arc<Held> {
        let state = HeldState::new(cid.clone(), tok.clone());
        Arc::new_cyclic(|me| Held {
            me: me.clone(),
            cid,
            tok,
            slot: Mutex::new(Slot { state, waker: None }),
            env,
        })
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
        self.update(|s| ((), s.start(ser, home, start, last, events)));
    }

    /// Whether it is set up and still the channel's stream.
    pub(crate) fn is_attached(&self) -> bool {
        self.lock().state.is_attached()
    }

    pub(crate) fn home(&self) -> Option<Arc<str>> {
        self.lock().state.home()
    }

    /// What the channel's home told this stream.
    pub(crate) fn notice(&self, n: Notice) {
        self.update(|s| ((), s.notice(n)));
    }

    /// Ends the stream from this side (shutdown of an instance that is not
    /// the channel's home): the store suspends or closes the channel.
    pub(crate) fn end_here(&self) {
        self.update(|s| ((), s.end_here()));
    }

    /// Reads events `from..=to` from the store; what it no longer has is
    /// lost, and reported to the home.
    async fn fill(self: Arc<Self>, Fill { ser, from, to }: Fill) {
        let link = &self.env.link;
        let key = link.key(&format!("o:{ser}"));
        let mut at = from;
        let mut retry = link::retry(Duration::from_secs(1));
        let mut lost = Vec::new();
        while at <= to {
            if self.lock().state.is_detached() {
                break;
            }
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&key).arg(format!("0-{at}")).arg(format!("0-{to}")).arg("COUNT").arg(FILL_PAGE);
            // A reply not understood is retried, not taken for lost events.
            let events = match link.command(&cmd).await.map(|v| notice::stored_events(&v)) {
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
            let full = events.len() == FILL_PAGE;
            let (next, gaps) = page_gaps(at, to, events.iter().map(|e| e.0), full);
            (at, lost) = (next, [lost, gaps].concat());
            self.lock().state.filled(events);
        }
        self.update(|s| ((), s.fill_done(&lost)));
        for (first, last) in lost {
            warn!(client = %escape_controls(&self.cid), "events {first}..={last} were no longer in the store: lost");
            if let Some(reporter) = self.env.reporter.upgrade() {
                reporter.lost(self.cid.clone(), ser, first, last);
            }
        }
    }
}

impl Machine for Held {
    type Slot = Slot;
    type State = HeldState;
    type Effects = Effects;

    fn slot(&self) -> &Mutex<Slot> {
        &self.slot
    }

    fn state(slot: &mut Slot) -> &mut HeldState {
        &mut slot.state
    }

    /// Everything a transition asked for, after the lock.
    fn apply(&self, mut slot: MutexGuard<'_, Slot>, fx: Effects) {
        let waker = if fx.wake { slot.waker.take() } else { None };
        drop(slot);
        if let Some(w) = waker {
            w.wake();
        }
        let env = &self.env;
        if fx.report
            && let (Some(reporter), Some(me)) = (env.reporter.upgrade(), self.me.upgrade())
        {
            reporter.list_cursor(me);
        }
        if let (Some(fill), Some(me)) = (fx.fill, self.me.upgrade()) {
            tokio::spawn(me.fill(fill));
        }
        if let Some(ended) = fx.ended {
            let ended = Arc::new(ended);
            env.owed.retry_until_done("telling the store a stream ended", move || {
                Request::Ended((*ended).clone())
            });
        }
    }
}

impl CursorSource for Held {
    fn cid(&self) -> &str {
        &self.cid
    }

    fn cursor(&self) -> Option<(u64, u64, u64)> {
        self.lock().state.cursor()
    }

    fn unreport(&self) {
        self.update(|s| ((), s.unreport()));
    }
}

/// The [`StreamSource`] of a held stream; dropping it ends the stream.
pub(crate) struct HeldStream {
    pub(crate) held: Arc<Held>,
}

impl StreamSource for HeldStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<StreamItem> {
        let held = &self.held;
        let mut slot = held.lock();
        let (batch, fx) = slot.state.next_batch(held.env.max_frame);
        let item = match batch {
            Batch::Pending => {
                wait::register(&mut slot.waker, cx);
                return Poll::Pending;
            }
            Batch::Data(bytes, events) => {
                let c = &held.env.stats;
                Counters::add(&c.frames, 1);
                Counters::add(&c.events, events);
                Counters::add(&c.bytes_out, bytes.len() as u64);
                StreamItem::Data(bytes)
            }
            Batch::Final => StreamItem::Final,
            Batch::End => StreamItem::End,
        };
        held.apply(slot, fx);
        Poll::Ready(item)
    }

    fn probe(&self) -> DetachProbe {
        let held = self.held.clone();
        Arc::new(move |cx| {
            let mut slot = held.lock();
            if slot.state.probe() {
                return true;
            }
            wait::register(&mut slot.waker, cx);
            false
        })
    }
}

impl Drop for HeldStream {
    fn drop(&mut self) {
        let held = &self.held;
        if let Some(exit) = held.env.exit.upgrade() {
            exit.forget_held(held);
        }
        held.update(|s| ((), s.dropped()));
    }
}
