//! Per-client delivery check: which sequence numbers came back, how often,
//! and in what order. Pure bookkeeping, no I/O.

use std::collections::VecDeque;

/// How far past the lowest missing sequence number arrivals are tracked
/// (in 64-bit words: 4 M messages, at most 512 KiB per client). Only a
/// server that loses a message and then delivers millions more gets here.
const MAX_WORDS: usize = 1 << 16;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time seen, after everything sent before it.
    InOrder,
    /// First time seen, but something sent later arrived first.
    OutOfOrder,
    /// Seen before.
    Duplicate,
}

/// Tracks the arrivals of one client's sequence numbers 0, 1, 2…
///
/// Memory is a bitmap from the lowest sequence number not yet seen to the
/// highest seen, so it stays empty while delivery is in order.
#[derive(Debug, Default)]
pub struct Verifier {
    /// Sequence number of bit 0 of `words[0]`; a multiple of 64.
    front: u64,
    /// Arrival bits from `front` on; bits below `base` are all set.
    words: VecDeque<u64>,
    /// Lowest sequence number not seen yet.
    base: u64,
    /// Highest sequence number seen plus one.
    high: u64,
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Sequence numbers given up on because the bitmap would pass its bound;
    /// if they arrive later they count as duplicates.
    pub abandoned: u64,
}

impl Verifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the arrival of `seq`.
    pub fn record(&mut self, seq: u64) -> Arrival {
        if seq < self.base {
            self.duplicated += 1;
            return Arrival::Duplicate;
        }
        if seq == self.base && self.words.is_empty() {
            // The common case: in order, nothing pending.
            self.base += 1;
            self.front = self.base & !63;
            self.high = self.high.max(self.base);
            self.unique += 1;
            self.settle_empty();
            return Arrival::InOrder;
        }
        if self.words.is_empty() {
            // A gap opens: start the bitmap at `base` (all below are seen).
            self.front = self.base & !63;
            let below = self.base - self.front;
            self.words.push_back(low_bits(below));
        }
        let mut word = ((seq - self.front) / 64) as usize;
        while word >= MAX_WORDS {
            self.give_up_front_word();
            word = ((seq - self.front) / 64) as usize;
        }
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << ((seq - self.front) % 64);
        if self.words[word] & bit != 0 {
            self.duplicated += 1;
            return Arrival::Duplicate;
        }
        self.words[word] |= bit;
        self.unique += 1;
        let arrival = if seq < self.high { Arrival::OutOfOrder } else { Arrival::InOrder };
        if arrival == Arrival::OutOfOrder {
            self.out_of_order += 1;
        }
        self.high = self.high.max(seq + 1);
        if seq == self.base {
            self.advance();
        }
        arrival
    }

    /// Lowest sequence number not seen yet.
    pub fn next_missing(&self) -> u64 {
        self.base
    }

    /// How many of `0..sent` never arrived.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.unique.min(sent))
    }

    fn advance(&mut self) {
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.front += 64;
        }
        match self.words.front() {
            Some(&w) => self.base = self.front + u64::from(w.trailing_ones()),
            None => self.base = self.front,
        }
        if self.words.len() == 1 && self.base >= self.high {
            self.words.clear();
            self.settle_empty();
        }
    }

    /// With no bitmap, `front` is kept at `base` rounded down.
    fn settle_empty(&mut self) {
        self.front = self.base & !63;
    }

    fn give_up_front_word(&mut self) {
        if let Some(w) = self.words.pop_front() {
            self.abandoned += u64::from(w.count_zeros());
        }
        self.front += 64;
        self.base = self.base.max(self.front);
        self.advance();
        if self.words.is_empty() {
            let below = self.base - self.front;
            self.words.push_back(low_bits(below));
        }
    }
}

fn low_bits(n: u64) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> Verifier {
        let mut v = Verifier::new();
        for &s in seqs {
            v.record(s);
        }
        v
    }

    #[test]
    fn in_order_uses_no_bitmap() {
        let v = run(&(0..1000).collect::<Vec<_>>());
        assert_eq!((v.unique, v.duplicated, v.out_of_order), (1000, 0, 0));
        assert_eq!(v.next_missing(), 1000);
        assert!(v.words.is_empty());
        assert_eq!(v.lost(1000), 0);
    }

    #[test]
    fn counts_loss() {
        let v = run(&[0, 1, 3, 4, 6]);
        assert_eq!((v.unique, v.duplicated, v.out_of_order), (5, 0, 0));
        assert_eq!(v.lost(7), 2);
        assert_eq!(v.next_missing(), 2);
    }

    #[test]
    fn counts_duplicates_before_and_after_the_base() {
        let v = run(&[0, 0, 1, 5, 5, 1]);
        assert_eq!((v.unique, v.duplicated), (3, 3));
    }

    #[test]
    fn counts_out_of_order_once_each() {
        let mut v = Verifier::new();
        assert_eq!(v.record(0), Arrival::InOrder);
        assert_eq!(v.record(2), Arrival::InOrder);
        assert_eq!(v.record(1), Arrival::OutOfOrder);
        assert_eq!(v.record(3), Arrival::InOrder);
        assert_eq!(v.record(1), Arrival::Duplicate);
        assert_eq!((v.unique, v.out_of_order, v.duplicated), (4, 1, 1));
        assert_eq!(v.next_missing(), 4);
        assert!(v.words.is_empty(), "bitmap released once the gap closed");
    }

    #[test]
    fn swapped_pairs_over_word_boundaries() {
        let mut seqs = Vec::new();
        for i in (0..500).step_by(2) {
            seqs.push(i + 1);
            seqs.push(i);
        }
        let v = run(&seqs);
        assert_eq!((v.unique, v.out_of_order, v.duplicated), (500, 250, 0));
        assert_eq!(v.next_missing(), 500);
    }

    #[test]
    fn gap_far_ahead_then_filled() {
        let mut seqs: Vec<u64> = (1..300).collect();
        seqs.push(0);
        let v = run(&seqs);
        assert_eq!((v.unique, v.out_of_order), (300, 1));
        assert_eq!(v.next_missing(), 300);
    }

    #[test]
    fn bitmap_is_bounded() {
        let mut v = Verifier::new();
        v.record(1);
        v.record(MAX_WORDS as u64 * 64 + 10);
        assert!(v.words.len() <= MAX_WORDS);
        assert!(v.abandoned >= 1);
    }

    #[test]
    fn matches_a_set_model() {
        // A small deterministic shuffle with repeats against a HashSet model.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..50 {
            let n = rng.u64(1..400);
            let seqs: Vec<u64> = (0..n * 2).map(|_| rng.u64(0..n)).collect();
            let v = run(&seqs);
            let mut seen = std::collections::HashSet::new();
            let (mut dup, mut ooo, mut high) = (0, 0, 0);
            for &s in &seqs {
                if !seen.insert(s) {
                    dup += 1;
                } else {
                    if s < high {
                        ooo += 1;
                    }
                    high = high.max(s + 1);
                }
            }
            assert_eq!((v.unique, v.duplicated, v.out_of_order), (seen.len() as u64, dup, ooo));
            let missing = (0..).find(|s| !seen.contains(s)).unwrap();
            assert_eq!(v.next_missing(), missing);
        }
    }
}
