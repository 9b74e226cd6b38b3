//! A plain-value state machine behind a mutex, as every store holds its
//! channels: a transition runs under the lock and returns its effects,
//! which are applied once the lock is released (wakes, deadlines,
//! counters, logs), so no side effect ever runs under the lock.

use std::sync::{Mutex, MutexGuard};

pub(crate) trait Machine {
    /// What the mutex holds: the state, and the wakers beside it.
    type Slot;
    type State;
    type Effects;

    fn slot(&self) -> &Mutex<Self::Slot>;

    fn state(slot: &mut Self::Slot) -> &mut Self::State;

    /// Applies `fx`: releases `slot` first, then does what `fx` asks.
    fn apply(&self, slot: MutexGuard<'_, Self::Slot>, fx: Self::Effects);

    fn lock(&self) -> MutexGuard<'_, Self::Slot> {
        // A panic while holding this lock leaves plain data behind: go on.
        self.slot().lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one transition and applies its effects.
    fn update<R>(&self, f: impl FnOnce(&mut Self::State) -> (R, Self::Effects)) -> R {
        let mut slot = self.lock();
        let (r, fx) = f(Self::state(&mut slot));
        self.apply(slot, fx);
        r
    }
}
