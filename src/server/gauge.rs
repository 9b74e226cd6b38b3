//! A shared count that admission reads (the bytes of incoming messages
//! held over all channels). A reader must never see it below its true
//! value, or a request is admitted that should not be: so it is raised
//! before what it counts exists and lowered after that is gone (a reader
//! may see it high for a moment, never low), and a request's share is
//! checked against the limit and taken in one step.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Takes `n` if the count stays within `limit`; `false` (nothing taken)
/// otherwise.
pub(crate) fn try_take(count: &AtomicUsize, n: usize, limit: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            c.checked_add(n).filter(|total| *total <= limit)
        })
        .is_ok()
}

/// Counts `n` more, before they are held.
pub(crate) fn raise(count: &AtomicUsize, n: usize) {
    if n > 0 {
        count.fetch_add(n, Ordering::AcqRel);
    }
}

/// Counts `n` fewer, once they are no longer held. Each lowering follows
/// the raise it undoes, so the count cannot go below zero; were one
/// misplaced, it stops at zero instead of wrapping to a huge value.
pub(crate) fn lower(count: &AtomicUsize, n: usize) {
    if n > 0 {
        let r = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(n));
        debug_assert!(r.is_ok(), "a gauge lowered by {n} below zero");
        if r.is_err() {
            count.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn taking_is_bounded_by_the_limit() {
        let g = AtomicUsize::new(0);
        assert!(try_take(&g, 60, 100));
        assert!(!try_take(&g, 41, 100), "61 past the limit");
        assert!(try_take(&g, 40, 100), "exactly the limit fits");
        assert!(!try_take(&g, 1, 100));
        lower(&g, 100);
        assert_eq!(g.load(Ordering::Relaxed), 0);
        assert!(!try_take(&g, usize::MAX, usize::MAX - 1));
        raise(&g, 5);
        assert!(!try_take(&g, usize::MAX, usize::MAX), "no wrap on overflow");
    }

    /// Threads take and give back concurrently: the count never passes the
    /// limit, and ends where it began.
    #[test]
    fn concurrent_takers_never_pass_the_limit_together() {
        let g = Arc::new(AtomicUsize::new(0));
        let limit = 1000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if try_take(&g, 7, limit) {
                            assert!(g.load(Ordering::Acquire) <= limit);
                            lower(&g, 7);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert_eq!(g.load(Ordering::Relaxed), 0);
    }
}
