//! The broadcast log: every broadcast event of a store once, in order, each
//! with a sequence number. A broadcast batch is encoded once ([`Events`])
//! and every channel queues it as one reference to it, not a reference per
//! event; a channel keeps the broadcast events it sent as runs of sequence
//! numbers ([`super::Channel`]), and a resume looks them up here; so what
//! replay holds of a broadcast is held, and counted, once for all channels.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::REPLAY_OVERHEAD;
use crate::server::config::Limits;

/// One broadcast batch: its events' `data:` tails back to back, numbered
/// from `first_seq` in the log.
#[derive(Debug)]
pub(crate) struct Events {
    first_seq: u64,
    data: Bytes,
    /// Where each event ends in `data`.
    ends: Box<[usize]>,
}

impl Events {
    fn new(first_seq: u64, batch: &[Bytes]) -> Self {
        let mut data = BytesMut::with_capacity(batch.iter().map(Bytes::len).sum());
        let ends = batch
            .iter()
            .map(|d| {
                data.put_slice(d);
                data.len()
            })
            .collect();
        Self { first_seq, data: data.freeze(), ends }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] }
    }

    /// Event `i`'s bytes.
    pub(crate) fn event(&self, i: usize) -> &[u8] {
        &self.data[self.start(i)..self.ends[i]]
    }

    /// The bytes of events `from..to`, back to back.
    pub(crate) fn span(&self, from: usize, to: usize) -> &[u8] {
        if from >= to {
            return &[];
        }
        &self.data[self.start(from)..self.ends[to - 1]]
    }

    /// How many of events `from..to` fit, from `from` on, in `budget` bytes.
    pub(crate) fn fitting(&self, from: usize, to: usize, budget: usize) -> usize {
        let base = self.start(from);
        self.ends[from..to].partition_point(|&end| end - base <= budget)
    }
}

/// The last broadcast events, bounded in count and in weight (bytes and
/// [`REPLAY_OVERHEAD`] per event, as in a channel's replay).
#[derive(Debug)]
pub(crate) struct BroadcastLog {
    /// The oldest sequence number held; numbers start at 1.
    first: u64,
    /// The batches holding `first` and after (the oldest may be held in
    /// part).
    batches: VecDeque<Arc<Events>>,
    /// Events held.
    held: usize,
    weight: usize,
    pub(super) max_events: usize,
    pub(super) max_weight: usize,
}

/// An empty log, for attaches that resume nothing.
pub(crate) static EMPTY: BroadcastLog = BroadcastLog::new(0, 0);

impl BroadcastLog {
    pub(crate) const fn new(max_events: usize, max_weight: usize) -> Self {
        Self { first: 1, batches: VecDeque::new(), held: 0, weight: 0, max_events, max_weight }
    }

    /// The log a store keeps: whatever a channel may still need, that is
    /// its replay window (`--replay`, `--replay-bytes`) behind what it has
    /// queued and not sent yet (at most `--max-queue` events of
    /// `--max-queue-bytes`). A stream that lags behind the broadcasts by
    /// as much as its queue allows still resumes with its whole window.
    pub(crate) fn for_limits(limits: &Limits) -> Self {
        let queued = limits
            .outgoing_bytes
            .saturating_add(limits.outgoing_messages.saturating_mul(REPLAY_OVERHEAD));
        Self::new(
            limits.replay_events.saturating_add(limits.outgoing_messages),
            limits.replay_bytes.saturating_add(queued),
        )
    }

    /// Appends `batch`, encoded once, dropping the oldest events past the
    /// bounds; returns it for the channels to queue.
    pub(crate) fn append(&mut self, batch: &[Bytes]) -> Arc<Events> {
        let events = Arc::new(Events::new(self.next(), batch));
        if events.len() == 0 {
            return events;
        }
        self.held += events.len();
        self.weight += events.data.len() + events.len() * REPLAY_OVERHEAD;
        self.batches.push_back(events.clone());
        while self.held > self.max_events || self.weight > self.max_weight {
            let Some(oldest) = self.batches.front() else { break };
            let i = (self.first - oldest.first_seq) as usize;
            self.weight -= oldest.event(i).len() + REPLAY_OVERHEAD;
            self.held -= 1;
            self.first += 1;
            if i + 1 == oldest.len() {
                self.batches.pop_front();
            }
        }
        events
    }

    /// Forgets every event (no channel can refer to them any more); the
    /// numbering goes on.
    pub(crate) fn clear(&mut self) {
        self.first = self.next();
        self.batches.clear();
        self.held = 0;
        self.weight = 0;
    }

    /// The batch holding event `seq` and its index there, unless dropped.
    pub(crate) fn get(&self, seq: u64) -> Option<(&Arc<Events>, usize)> {
        if seq < self.first || seq >= self.next() {
            return None;
        }
        let b = self.batches.partition_point(|b| b.first_seq <= seq).checked_sub(1)?;
        let events = &self.batches[b];
        Some((events, (seq - events.first_seq) as usize))
    }

    /// The oldest sequence number still held (the next one when empty).
    pub(crate) fn oldest(&self) -> u64 {
        self.first
    }

    /// The number the next event gets.
    fn next(&self) -> u64 {
        self.first + self.held as u64
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held
    }

    /// Bytes held, [`REPLAY_OVERHEAD`] per event included.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> usize {
        self.weight
    }
}
