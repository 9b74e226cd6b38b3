//! A re-armable deadline for a client's own poll loop: one `Sleep`,
//! allocated on first use and reset afterwards, never re-created.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

#[derive(Debug, Default)]
pub struct Timer {
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Timer {
    pub fn arm(&mut self, at: Instant) {
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        self.armed = true;
    }

    pub fn disarm(&mut self) {
        self.armed = false;
    }

    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// Ready once when an armed deadline passes; it is then disarmed.
    /// With `now`, a deadline already past by that clock counts too: tokio
    /// fires a `Sleep` only when its time driver runs, which a runtime
    /// whose tasks are always ready (a flooded stream) does only every few
    /// dozen tasks' turns, seconds late on a busy machine.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>, now: Option<Instant>) -> bool {
        if !self.armed {
            return false;
        }
        let Some(s) = &mut self.sleep else { return false };
        if now.is_some_and(|now| now >= s.deadline()) || s.as_mut().poll(cx).is_ready() {
            self.armed = false;
            return true;
        }
        false
    }
}

/// Polls an optional future in place; `Pending` while there is none.
pub fn poll_slot<F: Future + ?Sized>(
    slot: &mut Option<Pin<Box<F>>>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    match slot {
        Some(f) => match f.as_mut().poll(cx) {
            Poll::Ready(v) => {
                *slot = None;
                Poll::Ready(v)
            }
            Poll::Pending => Poll::Pending,
        },
        None => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_past_by_the_clock_fires_before_the_driver_runs() {
        // The test's task never yields, so tokio's time driver cannot run:
        // as for a client whose stream is always ready.
        let mut t = Timer::default();
        t.arm(Instant::now() + std::time::Duration::from_millis(5));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(!t.poll_fired(&mut cx, Some(Instant::now() - std::time::Duration::from_secs(1))));
        // Blocking, to let the clock pass the deadline without yielding.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!t.poll_fired(&mut cx, None), "the driver has not run");
        assert!(t.poll_fired(&mut cx, Some(Instant::now())));
        assert!(!t.is_armed() && !t.poll_fired(&mut cx, Some(Instant::now())), "fires once");
    }
}
