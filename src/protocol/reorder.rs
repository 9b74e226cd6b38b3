//! Client→server ordering and exactly-once delivery (PROTOCOL.md §3).
//!
//! POSTs race each other, so messages arrive out of order. The buffer hands
//! them on strictly by `messageId`, each once, and refuses to hold more than a
//! bounded window of the future. Unlike package:sse, a duplicate never moves
//! the counter backwards, which is what makes a client's retry safe.

use std::collections::{BTreeMap, VecDeque};

/// What [`ReorderBuffer::offer`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The message was the next expected one: it and any now-contiguous
    /// successors are ready in [`ReorderBuffer::pop_ready`].
    Ready,
    /// A message from the future, held until the gap before it fills.
    Buffered,
    /// Already delivered or already buffered: acknowledge and drop it.
    Duplicate,
    /// Further ahead than the window allows.
    TooFarAhead,
    /// Within the window, but buffering it would pass the byte bound.
    BufferFull,
}

/// Limits of a [`ReorderBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReorderLimits {
    /// How many ids past the next expected one may be buffered.
    pub window: u64,
    /// How many bytes of out-of-order messages may be buffered, each
    /// counted with [`ENTRY_OVERHEAD`].
    pub max_bytes: usize,
}

impl Default for ReorderLimits {
    fn default() -> Self {
        Self { window: 4096, max_bytes: 16 << 20 }
    }
}

/// What holding one out-of-order message costs besides its bytes (the map
/// entry and the string header), so that many tiny messages, or a single
/// one far ahead, weigh what they really take.
pub const ENTRY_OVERHEAD: usize = 64;

/// Re-orders messages numbered 0, 1, 2… (or from any starting id).
///
/// Held messages live in a sparse map: a client that posts only far-ahead
/// ids costs what it sent, not a slot per id of the window.
#[derive(Debug)]
pub struct ReorderBuffer<T = String> {
    /// The id the application expects next.
    next: u64,
    /// Messages from the future, by id.
    pending: BTreeMap<u64, T>,
    /// Weight of `pending`, overhead included.
    pending_bytes: usize,
    /// Messages released in order, not yet taken by `pop_ready`.
    ready: VecDeque<T>,
    limits: ReorderLimits,
}

/// What a buffered message weighs against [`ReorderLimits::max_bytes`].
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for String {
    fn weight(&self) -> usize {
        self.len()
    }
}

impl Weigh for Vec<u8> {
    fn weight(&self) -> usize {
        self.len()
    }
}

impl<T: Weigh> ReorderBuffer<T> {
    /// A buffer that expects `first` next (0 for a new client id).
    pub fn new(first: u64, limits: ReorderLimits) -> Self {
        Self {
            next: first,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            ready: VecDeque::new(),
            limits,
        }
    }

    /// The id expected next: everything below it has been released.
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// Number of out-of-order messages held.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Weight of the out-of-order messages held: their bytes plus
    /// [`ENTRY_OVERHEAD`] each.
    pub fn buffered_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Offers message `id`. See [`Offer`] for the outcomes.
    pub fn offer(&mut self, id: u64, message: T) -> Offer {
        if id < self.next {
            return Offer::Duplicate;
        }
        let offset = id - self.next;
        if offset == 0 {
            self.ready.push_back(message);
            self.next += 1;
            self.release_contiguous();
            return Offer::Ready;
        }
        if offset > self.limits.window {
            return Offer::TooFarAhead;
        }
        if self.pending.contains_key(&id) {
            return Offer::Duplicate;
        }
        let weight = message.weight() + ENTRY_OVERHEAD;
        if self.pending_bytes + weight > self.limits.max_bytes {
            return Offer::BufferFull;
        }
        self.pending.insert(id, message);
        self.pending_bytes += weight;
        Offer::Buffered
    }

    /// Moves held messages that continue the sequence to `ready`.
    fn release_contiguous(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let m = entry.remove();
            self.pending_bytes -= m.weight() + ENTRY_OVERHEAD;
            self.ready.push_back(m);
            self.next += 1;
        }
    }

    /// Takes the next message released in order.
    pub fn pop_ready(&mut self) -> Option<T> {
        self.ready.pop_front()
    }

    /// Gives up on the gap before the first buffered message: it becomes the
    /// next expected id and it and its contiguous successors are released.
    /// Returns the id skipped to, `None` when nothing is buffered.
    pub fn skip_gap(&mut self) -> Option<u64> {
        let start = *self.pending.keys().next()?;
        self.next = start;
        self.release_contiguous();
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room for ten bytes of messages besides their overhead.
    fn buf() -> ReorderBuffer {
        ReorderBuffer::new(0, ReorderLimits { window: 8, max_bytes: 10 + 2 * ENTRY_OVERHEAD })
    }

    fn drain(b: &mut ReorderBuffer) -> Vec<String> {
        std::iter::from_fn(|| b.pop_ready()).collect()
    }

    #[test]
    fn in_order_passes_through() {
        let mut b = buf();
        assert_eq!(b.offer(0, "a".into()), Offer::Ready);
        assert_eq!(b.offer(1, "b".into()), Offer::Ready);
        assert_eq!(drain(&mut b), ["a", "b"]);
        assert_eq!(b.next_id(), 2);
    }

    #[test]
    fn gap_fills_release_successors() {
        let mut b = buf();
        assert_eq!(b.offer(2, "c".into()), Offer::Buffered);
        assert_eq!(b.offer(1, "b".into()), Offer::Buffered);
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.buffered(), 2);
        assert_eq!(b.offer(0, "a".into()), Offer::Ready);
        assert_eq!(drain(&mut b), ["a", "b", "c"]);
        assert_eq!((b.buffered(), b.buffered_bytes(), b.next_id()), (0, 0, 3));
    }

    #[test]
    fn duplicates_never_move_backwards() {
        let mut b = buf();
        b.offer(0, "a".into());
        b.offer(2, "c".into());
        assert_eq!(b.offer(0, "a".into()), Offer::Duplicate);
        assert_eq!(b.offer(2, "c".into()), Offer::Duplicate);
        assert_eq!(drain(&mut b), ["a"]);
        assert_eq!(b.next_id(), 1);
    }

    #[test]
    fn window_and_bytes_are_bounded() {
        let mut b = buf();
        assert_eq!(b.offer(9, "x".into()), Offer::TooFarAhead);
        assert_eq!(b.offer(8, "123456789".into()), Offer::Buffered);
        assert_eq!(b.offer(7, "12".into()), Offer::BufferFull);
        assert_eq!(b.offer(7, "1".into()), Offer::Buffered);
    }

    #[test]
    fn skipping_a_gap_releases_what_follows() {
        let mut b: ReorderBuffer =
            ReorderBuffer::new(0, ReorderLimits { window: 8, max_bytes: 1000 });
        assert_eq!(b.skip_gap(), None);
        b.offer(3, "d".into());
        b.offer(4, "e".into());
        b.offer(6, "g".into());
        assert_eq!(b.skip_gap(), Some(3));
        assert_eq!(drain(&mut b), ["d", "e"]);
        assert_eq!((b.next_id(), b.buffered(), b.buffered_bytes()), (5, 1, 1 + ENTRY_OVERHEAD));
        assert_eq!(b.offer(1, "late".into()), Offer::Duplicate);
        assert_eq!(b.offer(5, "f".into()), Offer::Ready);
        assert_eq!(drain(&mut b), ["f", "g"]);
    }

    #[test]
    fn far_ahead_messages_cost_what_they_hold() {
        // One message at the far edge of the window holds one entry, not a
        // slot per id before it (a VecDeque of slots took ~98 KB here).
        let mut b: ReorderBuffer = ReorderBuffer::new(0, ReorderLimits::default());
        assert_eq!(b.offer(4096, "x".into()), Offer::Buffered);
        assert_eq!((b.buffered(), b.buffered_bytes()), (1, 1 + ENTRY_OVERHEAD));
        // Tiny messages are bounded by their overhead too.
        let mut b: ReorderBuffer =
            ReorderBuffer::new(0, ReorderLimits { window: 4096, max_bytes: 10 * ENTRY_OVERHEAD });
        for id in 1..=10 {
            assert_eq!(b.offer(id, String::new()), Offer::Buffered);
        }
        assert_eq!(b.offer(11, String::new()), Offer::BufferFull);
    }

    #[test]
    fn starts_anywhere() {
        let mut b: ReorderBuffer = ReorderBuffer::new(57, ReorderLimits::default());
        assert_eq!(b.offer(3, "old".into()), Offer::Duplicate);
        assert_eq!(b.offer(58, "b".into()), Offer::Buffered);
        assert_eq!(b.offer(57, "a".into()), Offer::Ready);
        assert_eq!(drain(&mut b), ["a", "b"]);
    }

    #[test]
    fn every_permutation_comes_out_in_order() {
        // A deterministic shuffle of 200 ids (multiplicative step, coprime).
        let n = 200u64;
        let mut b: ReorderBuffer =
            ReorderBuffer::new(0, ReorderLimits { window: n, max_bytes: usize::MAX });
        let mut out = Vec::new();
        for i in 0..n {
            let id = (i * 73) % n;
            b.offer(id, id.to_string());
            b.offer(id, id.to_string());
            out.extend(std::iter::from_fn(|| b.pop_ready()));
        }
        let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(out, want);
    }
}
