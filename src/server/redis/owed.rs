//! What the instance owes the store and must not lose (the end of a
//! stream, an attach to undo, events found lost): each request is sent
//! again until the store takes it or the store stops, by at most
//! `--max-connections` tasks at once; past that it is dropped with a
//! warning (the instance's lease settles its channels when it leaves).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};

use super::link;
use super::requests::{Request, Requests};

pub(crate) struct Owed {
    requests: Requests,
    /// Requests being retried.
    count: AtomicUsize,
    limit: usize,
    stop: watch::Receiver<bool>,
}

impl Owed {
    pub(crate) fn new(requests: Requests, limit: usize, stop: watch::Receiver<bool>) -> Self {
        Self { requests, count: AtomicUsize::new(0), limit, stop }
    }

    /// Sends `request` until the store takes it (or the store stops).
    pub(crate) fn retry_until_done(
        self: &Arc<Self>,
        what: &'static str,
        request: impl Fn() -> Request + Send + 'static,
    ) {
        // Counted before the task exists, uncounted after it ends.
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            warn!(
                "{what}: {} requests already wait for the store; this one is dropped (the instance's lease settles its channels when it leaves)",
                self.limit
            );
            return;
        }
        let (me, mut stop) = (self.clone(), self.stop.clone());
        tokio::spawn(async move {
            me.retry(what, request, &mut stop).await;
            me.count.fetch_sub(1, Ordering::AcqRel);
        });
    }

    async fn retry(
        &self,
        what: &'static str,
        request: impl Fn() -> Request,
        stop: &mut watch::Receiver<bool>,
    ) {
        let mut retry = link::retry(Duration::from_secs(1));
        loop {
            match self.requests.call(request()).await {
                Ok(_) => return,
                Err(e) => debug!("{what}: {e}; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry.wait()) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
