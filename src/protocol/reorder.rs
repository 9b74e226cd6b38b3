//! Client→server ordering and exactly-once delivery (PROTOCOL.md §3).
//!
//! POSTs race each other, so messages arrive out of order. The buffer hands
//! them on strictly by `messageId`, each once, and refuses to hold more than a
//! bounded window of the future. Unlike package:sse, a duplicate never moves
//! the counter backwards, which is what makes a client's retry safe.

use std::collections::VecDeque;

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

/// What holding one out-of-order message costs besides its bytes (its
/// slot and the string header), so that many tiny messages weigh what
/// they take.
pub const ENTRY_OVERHEAD: usize = 64;

/// Slots per chunk. Held messages live in chunks of this many ids,
/// allocated only where a message arrives: a client that posts one
/// message far ahead costs one chunk, not a slot per id of the window.
const CHUNK: usize = 64;

/// What allocating one chunk costs (its slots and its place in the ring),
/// counted in [`ReorderBuffer::buffered_bytes`] while it exists.
pub const CHUNK_OVERHEAD: usize = CHUNK * 24 + 64;

struct Chunk<T> {
    slots: [Option<T>; CHUNK],
    held: usize,
}

/// Re-orders messages numbered 0, 1, 2… (or from any starting id).
///
/// Held messages sit in a ring of lazily allocated chunks: as fast as a
/// dense array for the usual, nearly ordered arrivals, and sparse for a
/// client that posts only far ahead.
pub struct ReorderBuffer<T = String> {
    /// The id the application expects next.
    next: u64,
    /// The id of slot 0 of `chunks[0]`: a multiple of [`CHUNK`], and
    /// `base <= next < base + CHUNK`.
    base: u64,
    chunks: VecDeque<Option<Box<Chunk<T>>>>,
    /// Messages held.
    held: usize,
    /// Weight of the held messages and of the chunks allocated.
    held_bytes: usize,
    /// Messages released in order, not yet taken by `pop_ready`.
    ready: VecDeque<T>,
    limits: ReorderLimits,
}

impl<T> std::fmt::Debug for ReorderBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReorderBuffer")
            .field("next", &self.next)
            .field("held", &self.held)
            .field("held_bytes", &self.held_bytes)
            .field("ready", &self.ready.len())
            .finish()
    }
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
            base: first - first % CHUNK as u64,
            chunks: VecDeque::new(),
            held: 0,
            held_bytes: 0,
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
        self.held
    }

    /// Weight of what is held: the messages' bytes plus [`ENTRY_OVERHEAD`]
    /// each, and [`CHUNK_OVERHEAD`] per chunk allocated.
    pub fn buffered_bytes(&self) -> usize {
        self.held_bytes
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
        let idx = (id - self.base) as usize;
        let (ci, si) = (idx / CHUNK, idx % CHUNK);
        let chunk = self.chunks.get(ci).and_then(Option::as_ref);
        if chunk.is_some_and(|c| c.slots[si].is_some()) {
            return Offer::Duplicate;
        }
        let weight =
            message.weight() + ENTRY_OVERHEAD + if chunk.is_none() { CHUNK_OVERHEAD } else { 0 };
        if self.held_bytes + weight > self.limits.max_bytes {
            return Offer::BufferFull;
        }
        if self.chunks.len() <= ci {
            self.chunks.resize_with(ci + 1, || None);
        }
        let chunk = self.chunks[ci].get_or_insert_with(|| {
            Box::new(Chunk { slots: std::array::from_fn(|_| None), held: 0 })
        });
        chunk.slots[si] = Some(message);
        chunk.held += 1;
        self.held += 1;
        self.held_bytes += weight;
        Offer::Buffered
    }

    /// Moves held messages that continue the sequence to `ready`, and
    /// frees the chunks left behind.
    fn release_contiguous(&mut self) {
        loop {
            while self.next - self.base >= CHUNK as u64 {
                if let Some(Some(_)) = self.chunks.pop_front() {
                    self.held_bytes -= CHUNK_OVERHEAD; // empty: all below `next`
                }
                self.base += CHUNK as u64;
            }
            let si = (self.next - self.base) as usize;
            let Some(Some(chunk)) = self.chunks.front_mut() else { return };
            let Some(m) = chunk.slots[si].take() else { return };
            chunk.held -= 1;
            if chunk.held == 0 {
                self.chunks[0] = None;
                self.held_bytes -= CHUNK_OVERHEAD;
            }
            self.held -= 1;
            self.held_bytes -= m.weight() + ENTRY_OVERHEAD;
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
        let (ci, chunk) =
            self.chunks.iter().enumerate().find_map(|(i, c)| c.as_ref().map(|c| (i, c)))?;
        let si = chunk.slots.iter().position(Option::is_some)?;
        let start = self.base + (ci * CHUNK + si) as u64;
        self.next = start;
        self.release_contiguous();
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room for ten bytes of messages besides their overhead (one chunk).
    fn buf() -> ReorderBuffer {
        let max_bytes = 10 + 2 * ENTRY_OVERHEAD + CHUNK_OVERHEAD;
        ReorderBuffer::new(0, ReorderLimits { window: 8, max_bytes })
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
            ReorderBuffer::new(0, ReorderLimits { window: 8, max_bytes: 10_000 });
        assert_eq!(b.skip_gap(), None);
        b.offer(3, "d".into());
        b.offer(4, "e".into());
        b.offer(6, "g".into());
        assert_eq!(b.skip_gap(), Some(3));
        assert_eq!(drain(&mut b), ["d", "e"]);
        assert_eq!(
            (b.next_id(), b.buffered(), b.buffered_bytes()),
            (5, 1, 1 + ENTRY_OVERHEAD + CHUNK_OVERHEAD)
        );
        assert_eq!(b.offer(1, "late".into()), Offer::Duplicate);
        assert_eq!(b.offer(5, "f".into()), Offer::Ready);
        assert_eq!(drain(&mut b), ["f", "g"]);
    }

    #[test]
    fn far_ahead_messages_cost_what_they_hold() {
        // One message at the far edge of the window holds one chunk, not a
        // slot per id before it (a VecDeque of slots took ~98 KB here).
        let mut b: ReorderBuffer = ReorderBuffer::new(0, ReorderLimits::default());
        assert_eq!(b.offer(4096, "x".into()), Offer::Buffered);
        assert_eq!((b.buffered(), b.buffered_bytes()), (1, 1 + ENTRY_OVERHEAD + CHUNK_OVERHEAD));
        // Released, it and its chunk weigh nothing.
        for id in 0..4096 {
            b.offer(id, String::new());
        }
        assert_eq!((b.buffered(), b.buffered_bytes(), b.next_id()), (0, 0, 4097));
        // Tiny messages are bounded by their overhead too.
        let max_bytes = 10 * ENTRY_OVERHEAD + CHUNK_OVERHEAD;
        let mut b: ReorderBuffer = ReorderBuffer::new(0, ReorderLimits { window: 4096, max_bytes });
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

    use proptest::prelude::*;

    proptest! {
        /// Any arrival order, with duplicates, across many chunks: each id
        /// comes out once, in order, and nothing is left weighed.
        #[test]
        fn any_order_comes_out_once_in_order(
            order in Just((0u64..700).collect::<Vec<_>>()).prop_shuffle(),
            dups in proptest::collection::vec(0u64..700, 0..100),
        ) {
            let mut b: ReorderBuffer = ReorderBuffer::new(0, ReorderLimits { window: 700, max_bytes: usize::MAX });
            let mut out = Vec::new();
            for id in order.iter().chain(dups.iter()) {
                let o = b.offer(*id, id.to_string());
                prop_assert_ne!(o, Offer::TooFarAhead);
                out.extend(std::iter::from_fn(|| b.pop_ready()));
            }
            let want: Vec<String> = (0..700).map(|i| i.to_string()).collect();
            prop_assert_eq!(out, want);
            prop_assert_eq!((b.buffered(), b.buffered_bytes()), (0, 0));
        }
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
