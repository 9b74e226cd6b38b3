//! The instance's lease in the store. The heartbeat refreshes it every
//! tenth of it; in the same call it forgets the closed ids remembered for
//! longer than their memory, and, once this instance has itself been
//! connected for half a lease, closes or suspends the channels of the
//! instances whose lease ran out (reaping). At shutdown the instance
//! leaves: what is left of its channels goes as if it had died.

use std::time::Duration;

use redis::Value;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::link::{Link, REQUEST_TIMEOUT, StoreError};
use super::notice;

/// Channels of a dead instance (and closed ids) handled per call.
const REAP_BATCH: usize = 256;

/// Refreshes the lease until `stop`; `joined` turns true at the first
/// refresh (streams may be opened from then on). After an outage everyone
/// gets the time to refresh before anyone is declared dead.
pub(crate) async fn heartbeat(
    link: Link,
    lease: Duration,
    joined: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let every = lease / 10;
    let mut connected_since: Option<Instant> = None;
    let mut failing = false;
    loop {
        let reap = connected_since.is_some_and(|t| t.elapsed() >= lease / 2);
        let r = link
            .call_within(every.max(REQUEST_TIMEOUT), "beat", |inv| {
                inv.arg(if reap { "1" } else { "0" }).arg(REAP_BATCH);
            })
            .await;
        match r {
            Ok(v) => {
                connected_since.get_or_insert_with(Instant::now);
                if std::mem::take(&mut failing) {
                    info!("the store is reachable again");
                }
                joined.send_replace(true);
                let handled = notice::int(&v).unwrap_or(0);
                if handled > 0 {
                    info!(
                        channels = handled,
                        "closed or suspended the channels of instances whose lease ran out"
                    );
                }
            }
            Err(e) => {
                connected_since = None;
                if !std::mem::replace(&mut failing, true) {
                    warn!(
                        "the store is unreachable ({e}): POSTs and new streams get 503 until it is back"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Leaves the store: a batch per call (a script blocks every other client
/// of Redis while it runs), each call within its own timeout and all of
/// them within a few (a busy Redis delays shutdown by seconds, not more;
/// what is not left in time goes with the lease).
pub(crate) async fn leave(link: &Link) {
    let left = async {
        loop {
            let n = link.call("leave", |inv| {
                inv.arg(REAP_BATCH);
            });
            if matches!(n.await?, Value::Int(0)) {
                return Ok::<_, StoreError>(());
            }
        }
    };
    let bound = REQUEST_TIMEOUT * 4;
    let left = tokio::time::timeout(bound, left).await;
    if let Err(e) = left.map_err(|_| StoreError::Timeout(bound)).and_then(|r| r) {
        warn!(
            "could not leave the store cleanly ({e}): the others will close what is left after the lease"
        );
    }
}
