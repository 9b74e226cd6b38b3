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
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            return false;
        }
        let Some(s) = &mut self.sleep else { return false };
        if s.as_mut().poll(cx).is_ready() {
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
