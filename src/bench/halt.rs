//! Ending a run early: Ctrl-C (a partial report, exit 130) and a
//! permanent error (one line, exit 2, within a second whatever
//! `--duration` says). Every client watches one signal, registered once
//! per task, so a halted run ends as soon as each task next wakes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::sync::watch;

/// What a run has been told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    Run,
    /// Ctrl-C: stop sending, take what is in flight for a moment, report.
    Interrupt,
    /// Stop at once: a permanent error (said in [`Halting::fatal`]).
    Stop,
}

/// The run's halt signal, and why it stopped when it did so at once.
pub struct Halting {
    tx: watch::Sender<Halt>,
    fatal: Mutex<Option<String>>,
}

impl Default for Halting {
    fn default() -> Self {
        Self { tx: watch::Sender::new(Halt::Run), fatal: Mutex::new(None) }
    }
}

impl Halting {
    pub fn now(&self) -> Halt {
        *self.tx.borrow()
    }

    pub fn interrupted(&self) -> bool {
        self.now() == Halt::Interrupt
    }

    /// Ctrl-C: the run winds down (unless already stopping).
    pub fn interrupt(&self) {
        self.tx.send_if_modified(|h| {
            let run = *h == Halt::Run;
            if run {
                *h = Halt::Interrupt;
            }
            run
        });
    }

    /// Stops every client now; `line` (the first one given) is the run's
    /// one-line verdict, or `None` when the report itself says it.
    pub fn stop(&self, line: Option<String>) {
        if let Some(l) = line {
            self.fatal.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(l);
        }
        self.tx.send_replace(Halt::Stop);
    }

    /// Why the run was stopped at once, if it was for an error.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A future ready once the run is told at least `level`.
    pub fn watch(&self, level: Halt) -> Watch {
        let mut rx = self.tx.subscribe();
        let rank = |h: Halt| match h {
            Halt::Run => 0,
            Halt::Interrupt => 1,
            Halt::Stop => 2,
        };
        Watch {
            fut: Some(Box::pin(async move {
                let _ = rx.wait_for(|h| rank(*h) >= rank(level)).await;
            })),
        }
    }
}

/// [`Halting::watch`]: ready for good once the level is reached (it may be
/// polled again after that).
pub struct Watch {
    fut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Watch {
    pub fn is_done(&self) -> bool {
        self.fut.is_none()
    }
}

impl Future for Watch {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(f) = &mut self.fut else { return Poll::Ready(()) };
        if f.as_mut().poll(cx).is_ready() {
            self.fut = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// `fut`'s output, or `None` when the run is halted first.
pub async fn unless<F: Future>(halt: &mut Watch, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        r = fut => Some(r),
        () = halt => None,
    }
}

/// Listens for Ctrl-C while the run lasts: the first interrupts it, a
/// second ends the process at once (exit 130, no report). The handler is
/// in place when this returns, so a Ctrl-C right after is not missed.
pub fn on_ctrl_c(halting: std::sync::Arc<Halting>) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch for Ctrl-C ({e}): it will end the run without a report");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        if sigint.recv().await.is_none() {
            return;
        }
        tracing::warn!("interrupted: reporting the run so far (Ctrl-C again to quit at once)");
        halting.interrupt();
        if sigint.recv().await.is_some() {
            eprintln!("ssechan: interrupted");
            std::process::exit(130);
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn levels_and_the_first_fatal_line() {
        let h = Halting::default();
        let mut interrupted = h.watch(Halt::Interrupt);
        let mut stopped = h.watch(Halt::Stop);
        assert_eq!(unless(&mut interrupted, async { 1 }).await, Some(1));
        h.interrupt();
        assert_eq!(unless(&mut interrupted, std::future::pending::<()>()).await, None);
        assert!(interrupted.is_done() && !stopped.is_done());
        // Ready for good: polled again, still ready.
        assert_eq!(unless(&mut interrupted, std::future::pending::<()>()).await, None);
        h.stop(Some("first".into()));
        h.stop(Some("second".into()));
        h.interrupt();
        assert_eq!(h.now(), Halt::Stop, "an interrupt does not undo a stop");
        assert_eq!(unless(&mut stopped, std::future::pending::<()>()).await, None);
        assert_eq!(h.fatal().as_deref(), Some("first"));
    }
}
