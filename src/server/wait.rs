//! Waiting on shared state, written once for every store: the waker a
//! polled task leaves for the next change, and "wait until this holds or
//! the deadline passes" on a [`Notify`] without losing a wake-up that
//! comes between the check and the wait.

use std::task::{Context, Waker};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Keeps `cx`'s waker in `slot` for the next change (cloned only when it
/// is a different task's).
pub(crate) fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Waits until `done()` holds, checked again after each notification of
/// `changed`, or until `deadline` (`None`: no deadline). Returns whether
/// `done()` held. Whoever makes `done()` true must `notify_waiters` after.
pub(crate) async fn until(
    changed: &Notify,
    deadline: Option<Instant>,
    mut done: impl FnMut() -> bool,
) -> bool {
    loop {
        // Made before the check: a `notify_waiters` between the check and
        // the await is not lost (and enabled, for a `notify_one`).
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return true;
        }
        match deadline {
            Some(at) => {
                if tokio::time::timeout_at(at, notified).await.is_err() {
                    return done();
                }
            }
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn until_sees_a_change_made_between_its_check_and_its_wait() {
        let changed = Arc::new(Notify::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (c, f) = (changed.clone(), flag.clone());
        let mut checks = 0;
        let start = Instant::now();
        // The first check sets the flag and notifies before `until` waits:
        // a `Notified` made after the check would miss it and wait out the
        // deadline.
        let done = until(&changed, Some(Instant::now() + Duration::from_secs(3600)), || {
            checks += 1;
            if checks == 1 {
                f.store(true, Ordering::SeqCst);
                c.notify_waiters();
                return false;
            }
            flag.load(Ordering::SeqCst)
        })
        .await;
        assert!(done);
        assert_eq!(checks, 2);
        assert_eq!(Instant::now(), start, "woken by the notification, not the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn until_gives_up_at_the_deadline() {
        let changed = Notify::new();
        let start = Instant::now();
        let done = until(&changed, Some(start + Duration::from_secs(2)), || false).await;
        assert!(!done);
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn until_wakes_on_a_notification_from_another_task() {
        let changed = Arc::new(Notify::new());
        let flag = Arc::new(AtomicBool::new(false));
        let (c, f) = (changed.clone(), flag.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            f.store(true, Ordering::SeqCst);
            c.notify_waiters();
        });
        let start = Instant::now();
        assert!(until(&changed, None, || flag.load(Ordering::SeqCst)).await);
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }
}
