//! A stream attached on this instance as a plain value, whatever the
//! channel's home. Its events come as notices (each with the store's event
//! id), in order; a gap in the ids (notices that came before the stream was
//! set up, or a replay longer than the attach's reply) is filled from the
//! channel's event stream in the store. It knows what it handed to the
//! socket (the cursor reported to the store) and what to tell the store
//! when it ends. Every input returns the [`Effects`] the I/O layer applies
//! after its lock; no I/O, no locks.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::super::notice::{self, Notice, StoredEvent, reason_code};
use super::super::requests::Ended;
use crate::server::app::CloseReason;
use crate::server::channel::{Batch, encode_batch};

/// Events `from..=to` of channel serial `ser` to read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fill {
    pub ser: u64,
    pub from: u64,
    pub to: u64,
}

/// What the I/O layer must do after a transition, once the lock is
/// released.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub(crate) struct Effects {
    /// The stream's task may have something new.
    pub wake: bool,
    /// Read these events from the store ([`HeldState::filled`] after).
    pub fill: Option<Fill>,
    /// The cursor moved and the stream is not listed with the reporter:
    /// list it.
    pub report: bool,
    /// Tell the store the stream ended (until it hears it).
    pub ended: Option<Ended>,
}

/// How the channel told this stream to end with the control close.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FinalInfo {
    last: u64,
    reason: CloseReason,
    lost: u64,
    home: String,
}

/// One stream's state. See the module docs.
#[derive(Debug)]
pub(crate) struct HeldState {
    cid: Arc<str>,
    tok: Arc<str>,
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
    /// The client left: ended without the control close, and the store
    /// waits to hear what was written.
    quit: bool,
    /// Handed to the socket: the last event id, and the channel's data
    /// bytes through it (`None` before this stream wrote anything).
    written: u64,
    written_cum: Option<u64>,
    reported: u64,
    /// Listed with the reporter.
    listed: bool,
}

impl HeldState {
    /// A stream being attached: notices for it are kept until the attach
    /// is answered ([`HeldState::start`]).
    pub(crate) fn new(cid: Arc<str>, tok: Arc<str>) -> Self {
        Self {
            cid,
            tok,
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
            quit: false,
            written: 0,
            written_cum: None,
            reported: 0,
            listed: false,
        }
    }

    /// The attach was answered: send from `start`; the store has events
    /// through `last`, the first of which are `events`.
    pub(crate) fn start(
        &mut self,
        ser: u64,
        home: Arc<str>,
        start: u64,
        last: u64,
        events: Vec<StoredEvent>,
    ) -> Effects {
        self.ser = ser;
        self.home = Some(home);
        self.next = start;
        self.written = start.saturating_sub(1);
        self.reported = self.written;
        self.known = self.known.max(last);
        for (id, data, cum) in events {
            self.early.insert(id, (data, cum));
        }
        self.advance()
    }

    /// Whether it is set up and still the channel's stream.
    pub(crate) fn is_attached(&self) -> bool {
        self.home.is_some() && !self.detached
    }

    pub(crate) fn is_detached(&self) -> bool {
        self.detached
    }

    pub(crate) fn home(&self) -> Option<Arc<str>> {
        self.home.clone()
    }

    /// What the channel's home told this stream.
    pub(crate) fn notice(&mut self, n: Notice) -> Effects {
        match n {
            Notice::Events { first, cum, data, .. } => {
                for (id, d, c) in notice::with_cums(first, cum, data) {
                    self.known = self.known.max(id);
                    if id >= self.next {
                        self.early.insert(id, (d, c));
                    }
                }
            }
            Notice::Stored { last, .. } => self.known = self.known.max(last),
            Notice::Detach { .. } => self.detached = true,
            Notice::Final { last, reason, lost, home, quiet, .. } => {
                self.known = self.known.max(last);
                self.final_info = Some(FinalInfo { last, reason, lost, home });
                if quiet {
                    self.quit = true;
                    self.detached = true;
                }
            }
            _ => return Effects::default(),
        }
        self.advance()
    }

    /// Queues what continues the stream, starts filling a gap, wakes.
    fn advance(&mut self) -> Effects {
        if self.home.is_some() {
            while let Some(entry) = self.early.first_entry() {
                let id = *entry.key();
                if id > self.next {
                    break;
                }
                let (data, cum) = entry.remove();
                if id == self.next {
                    self.queue.push_back((id, data));
                    self.cums.push_back(cum);
                    self.next += 1;
                }
            }
        }
        let fill =
            (self.home.is_some() && !self.filling && !self.detached && self.next <= self.known)
                .then(|| {
                    let to = self.early.keys().next().map_or(self.known, |k| k - 1);
                    self.filling = true;
                    Fill { ser: self.ser, from: self.next, to }
                });
        Effects { wake: true, fill, ..Effects::default() }
    }

    /// A page of events read from the store while filling.
    pub(crate) fn filled(&mut self, events: Vec<StoredEvent>) {
        for (id, data, cum) in events {
            self.early.insert(id, (data, cum));
        }
    }

    /// Filling is over; `lost` are the events the store no longer had
    /// (first, last): the stream goes on after them.
    pub(crate) fn fill_done(&mut self, lost: &[(u64, u64)]) -> Effects {
        for &(first, last) in lost {
            if self.next >= first && self.next <= last {
                self.next = last + 1;
            }
        }
        self.filling = false;
        self.advance()
    }

    /// The next bytes for the socket, batched (at most `max_frame`).
    pub(crate) fn next_batch(&mut self, max_frame: usize) -> (Batch, Effects) {
        let mut fx = Effects::default();
        if self.detached {
            return (Batch::End, fx);
        }
        if !self.queue.is_empty() {
            let (queue, cums, written, written_cum) =
                (&mut self.queue, &mut self.cums, &mut self.written, &mut self.written_cum);
            let (bytes, events) = encode_batch(queue, max_frame, |id, _| {
                *written = id;
                *written_cum = cums.pop_front().or(*written_cum);
            });
            if !self.listed {
                self.listed = true;
                fx.report = true;
            }
            return (Batch::Data(bytes, events), fx);
        }
        if let Some(f) = &self.final_info
            && self.next > f.last
            && !self.filling
        {
            self.final_written = true;
            self.detached = true;
            return (Batch::Final, fx);
        }
        (Batch::Pending, fx)
    }

    /// Whether a writer blocked on a stuck socket should stop: the stream
    /// is no longer the channel's (and was not ended by its close event).
    pub(crate) fn probe(&self) -> bool {
        self.detached && !self.final_written
    }

    /// The cursor to report, if it moved: serial, event id and bytes
    /// through it.
    pub(crate) fn cursor(&mut self) -> Option<(u64, u64, u64)> {
        self.listed = false;
        let cum = self.written_cum?;
        if self.written <= self.reported {
            return None;
        }
        self.reported = self.written;
        Some((self.ser, self.written, cum))
    }

    /// A report that failed: sent again next time.
    pub(crate) fn unreport(&mut self) -> Effects {
        self.reported = 0;
        let report = !std::mem::replace(&mut self.listed, true);
        Effects { report, ..Effects::default() }
    }

    /// Ends the stream from this side (shutdown of an instance that is not
    /// the channel's home): the store suspends or closes the channel.
    pub(crate) fn end_here(&mut self) -> Effects {
        if self.detached {
            return Effects::default();
        }
        self.detached = true;
        Effects { wake: true, ended: Some(self.ended()), ..Effects::default() }
    }

    /// The stream's writer is gone (client left, write failed, or ended by
    /// us): the store hears it, unless the channel detached it first.
    pub(crate) fn dropped(&mut self) -> Effects {
        let tell = !self.detached || self.final_written || self.quit;
        self.detached = true;
        Effects { ended: tell.then(|| self.ended()), ..Effects::default() }
    }

    fn ended(&self) -> Ended {
        let fin = self.final_info.as_ref();
        let flushed = self.final_written;
        Ended {
            cid: self.cid.clone(),
            ser: self.ser,
            tok: self.tok.clone(),
            sent: self.written_cum.map_or(0, |_| self.written),
            sent_cum: self.written_cum.unwrap_or(0),
            flushed,
            home: fin.map(|f| f.home.clone()).unwrap_or_default(),
            reason: fin.map_or("", |f| reason_code(f.reason)),
            undelivered: fin.map_or(0, |f| {
                let unsent = if flushed { 0 } else { f.last.saturating_sub(self.written) };
                unsent + f.lost
            }),
        }
    }
}

/// One page of a fill, read from event `at` towards `to`: the ids it
/// holds, and whether it was full (more may follow). Returns where the
/// next page starts and the ranges the store no longer has.
pub(crate) fn page_gaps(
    mut at: u64,
    to: u64,
    ids: impl IntoIterator<Item = u64>,
    full: bool,
) -> (u64, Vec<(u64, u64)>) {
    let mut lost = Vec::new();
    for id in ids {
        if id > at {
            lost.push((at, id - 1));
        }
        at = id + 1;
    }
    if !full && at <= to {
        lost.push((at, to));
        at = to + 1;
    }
    (at, lost)
}

#[cfg(test)]
mod tests;
