//! Every deadline of a server in one ordered map, served by one task: it
//! fires what is due, then sleeps until the next deadline or until an
//! earlier one is armed. No task per suspended connection, no polling.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Deadlines by key `K`, each carrying a value `V` for whoever fires it.
/// Arming a key again replaces its deadline.
pub(crate) struct Deadlines<K, V> {
    state: Mutex<State<K, V>>,
    changed: Notify,
}

struct State<K, V> {
    by_time: BTreeSet<(Instant, K)>,
    armed: HashMap<K, (Instant, V)>,
    stopped: bool,
}

impl<K: Ord + Hash + Clone, V> Deadlines<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                by_time: BTreeSet::new(),
                armed: HashMap::new(),
                stopped: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fires `key` with `value` at `at` (replacing any deadline it had).
    pub(crate) fn arm(&self, key: K, at: Instant, value: V) {
        let mut s = self.lock();
        let earliest = s.by_time.first().map(|(t, _)| *t);
        if let Some((old, _)) = s.armed.insert(key.clone(), (at, value)) {
            s.by_time.remove(&(old, key.clone()));
        }
        s.by_time.insert((at, key));
        drop(s);
        if earliest.is_none_or(|e| at < e) {
            self.changed.notify_one();
        }
    }

    /// Forgets `key`'s deadline, if it has one.
    pub(crate) fn cancel(&self, key: &K) {
        let mut s = self.lock();
        if let Some((at, _)) = s.armed.remove(key) {
            s.by_time.remove(&(at, key.clone()));
        }
    }

    /// Deadlines armed and not yet fired.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().armed.len()
    }

    /// Makes [`Self::run`] return.
    pub(crate) fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_one();
    }

    /// Removes and returns what is due at `now`, earliest first.
    fn take_due(&self, now: Instant) -> (Vec<(K, V)>, Option<Instant>, bool) {
        let mut s = self.lock();
        let mut due = Vec::new();
        while let Some((at, _)) = s.by_time.first() {
            if *at > now {
                break;
            }
            let Some((_, key)) = s.by_time.pop_first() else { break };
            if let Some((_, value)) = s.armed.remove(&key) {
                due.push((key, value));
            }
        }
        (due, s.by_time.first().map(|(t, _)| *t), s.stopped)
    }

    /// Fires deadlines as they come, outside the lock, until stopped.
    pub(crate) async fn run(&self, mut fire: impl FnMut(K, V)) {
        loop {
            let (due, next, stopped) = self.take_due(Instant::now());
            for (key, value) in due {
                fire(key, value);
            }
            if stopped {
                return;
            }
            // Arming notifies: a deadline armed between take_due and here
            // leaves a permit, so this wait returns at once.
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    type Fired = mpsc::UnboundedReceiver<(u32, &'static str)>;

    fn start() -> (Arc<Deadlines<u32, &'static str>>, Fired) {
        let d = Arc::new(Deadlines::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = d.clone();
        tokio::spawn(async move { runner.run(|k, v| tx.send((k, v)).unwrap_or(())).await });
        (d, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn fires_in_order_of_time_not_of_arming() {
        let (d, mut fired) = start();
        let t0 = Instant::now();
        d.arm(1, t0 + Duration::from_secs(30), "late");
        d.arm(2, t0 + Duration::from_secs(5), "early");
        assert_eq!(fired.recv().await, Some((2, "early")));
        assert_eq!(Instant::now() - t0, Duration::from_secs(5));
        assert_eq!(fired.recv().await, Some((1, "late")));
        assert_eq!(Instant::now() - t0, Duration::from_secs(30));
        assert_eq!(d.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn rearming_replaces_and_cancel_forgets() {
        let (d, mut fired) = start();
        let t0 = Instant::now();
        d.arm(1, t0 + Duration::from_secs(5), "first");
        d.arm(1, t0 + Duration::from_secs(10), "moved");
        d.arm(2, t0 + Duration::from_secs(7), "cancelled");
        d.cancel(&2);
        d.arm(3, t0 + Duration::from_secs(20), "last");
        assert_eq!(fired.recv().await, Some((1, "moved")));
        assert_eq!(Instant::now() - t0, Duration::from_secs(10));
        assert_eq!(fired.recv().await, Some((3, "last")));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_sleeping_task() {
        let (d, mut fired) = start();
        let t0 = Instant::now();
        d.arm(1, t0 + Duration::from_secs(3600), "hour");
        tokio::task::yield_now().await; // the task now sleeps for an hour
        d.arm(2, t0 + Duration::from_secs(1), "second");
        assert_eq!(fired.recv().await, Some((2, "second")));
        assert_eq!(Instant::now() - t0, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_task() {
        let d: Arc<Deadlines<u32, ()>> = Arc::new(Deadlines::new());
        let runner = d.clone();
        let task = tokio::spawn(async move { runner.run(|_, _| {}).await });
        d.arm(1, Instant::now() + Duration::from_secs(60), ());
        d.stop();
        task.await.expect("run returns");
    }
}
