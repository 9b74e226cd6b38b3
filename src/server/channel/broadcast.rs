//! The broadcast log: every broadcast event of a store once, in order, each
//! with a sequence number. A channel keeps the broadcast events it sent as
//! runs of sequence numbers ([`super::Channel`]), not as a copy per
//! channel, and a resume looks their bytes up here; so what replay holds of
//! a broadcast is held, and counted, once for all channels.

use std::collections::VecDeque;

use bytes::Bytes;

use super::REPLAY_OVERHEAD;
use crate::server::config::Limits;

/// The last broadcast events, bounded in count and in weight (bytes and
/// [`REPLAY_OVERHEAD`] per event, as in a channel's replay).
#[derive(Debug)]
pub(crate) struct BroadcastLog {
    /// The sequence number of `events[0]`; numbers start at 1.
    first: u64,
    events: VecDeque<Bytes>,
    weight: usize,
    pub(super) max_events: usize,
    pub(super) max_weight: usize,
}

/// An empty log, for attaches that resume nothing.
pub(crate) static EMPTY: BroadcastLog = BroadcastLog::new(0, 0);

impl BroadcastLog {
    pub(crate) const fn new(max_events: usize, max_weight: usize) -> Self {
        Self { first: 1, events: VecDeque::new(), weight: 0, max_events, max_weight }
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

    /// Appends `batch`, dropping the oldest events past the bounds; returns
    /// the sequence number of the batch's first event.
    pub(crate) fn append(&mut self, batch: &[Bytes]) -> u64 {
        let first = self.next();
        for data in batch {
            self.weight += data.len() + REPLAY_OVERHEAD;
            self.events.push_back(data.clone());
        }
        while self.events.len() > self.max_events || self.weight > self.max_weight {
            let Some(old) = self.events.pop_front() else { break };
            self.weight -= old.len() + REPLAY_OVERHEAD;
            self.first += 1;
        }
        first
    }

    /// Forgets every event (no channel can refer to them any more); the
    /// numbering goes on.
    pub(crate) fn clear(&mut self) {
        self.first = self.next();
        self.events.clear();
        self.weight = 0;
    }

    /// Event `seq`, unless it was dropped.
    pub(crate) fn get(&self, seq: u64) -> Option<&Bytes> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.events.get(i)
    }

    /// The oldest sequence number still held (the next one when empty).
    pub(crate) fn oldest(&self) -> u64 {
        self.first
    }

    /// The number the next event gets.
    fn next(&self) -> u64 {
        self.first + self.events.len() as u64
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    /// Bytes held, [`REPLAY_OVERHEAD`] per event included.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> usize {
        self.weight
    }
}
