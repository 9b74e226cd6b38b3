//! The writer: what the applications homed here do (send, close, drop…)
//! reaches the store in order, batched: everything waiting goes in one
//! script call, and the next batch waits for its answer. A batch that
//! fails is sent again, whole and first, until the store takes it; the
//! store skips what it had already applied (each home numbers its
//! operations), so nothing is applied twice and nothing overtakes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::home::Home;
use super::link::{Link, Retry, StoreError};
use super::notice::{self, Notice, reason_code};
use crate::server::app::CloseReason;
use crate::server::config::Limits;

/// Operations per batch at most, and bytes of sent data.
const MAX_OPS: usize = 1024;
const MAX_BYTES: usize = 1 << 20;
/// How long a batch may take: many operations, and a busy store.
const BATCH_TIMEOUT: Duration = Duration::from_secs(3);

pub(crate) enum OpKind {
    Send(Bytes),
    Close(CloseReason),
    Drop,
    /// The keep-alive of suspension `epoch` ran out.
    Expire(u64),
    /// The first-message wait ran out.
    First,
    /// The application left.
    Gone,
    /// The store has not taken the sends for too long.
    SlowConsumer,
    /// Shutdown's grace is over.
    ForceClose,
}

pub(crate) struct Op {
    pub home: Arc<Home>,
    pub seq: u64,
    pub kind: OpKind,
    /// Messages (count, bytes) the application took, told with this
    /// operation (set when its batch is formed; sent again with it).
    pub taken: (u64, u64),
}

impl Op {
    fn code_and_arg(&self) -> (&'static str, Bytes) {
        match &self.kind {
            OpKind::Send(d) => ("S", d.clone()),
            OpKind::Close(r) => ("C", Bytes::from_static(reason_code(*r).as_bytes())),
            OpKind::Drop => ("D", Bytes::new()),
            OpKind::Expire(epoch) => ("E", Bytes::from(epoch.to_string())),
            OpKind::First => ("F", Bytes::new()),
            OpKind::Gone => ("G", Bytes::new()),
            OpKind::SlowConsumer => ("W", Bytes::new()),
            OpKind::ForceClose => ("X", Bytes::new()),
        }
    }
}

/// Runs until `stop`, then applies what is still queued (bounded).
pub(crate) async fn run(
    link: Link,
    limits: Limits,
    mut rx: mpsc::UnboundedReceiver<Op>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch: Vec<Op> = Vec::new();
    let mut retry = Retry::new(Duration::from_secs(1));
    let mut failing = false;
    loop {
        if batch.is_empty() {
            tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => batch.push(op),
                    None => return,
                },
                _ = stop.changed() => return,
            }
            let mut bytes = 0;
            while batch.len() < MAX_OPS && bytes < MAX_BYTES {
                let Ok(op) = rx.try_recv() else { break };
                if let OpKind::Send(d) = &op.kind {
                    bytes += d.len();
                }
                batch.push(op);
            }
            // What each application took goes with its last operation:
            // an echo's send carries the room its message made.
            let mut seen = HashSet::new();
            for op in batch.iter_mut().rev() {
                if seen.insert(Arc::as_ptr(&op.home)) {
                    op.taken = op.home.take_taken();
                }
            }
        }
        match apply(&link, limits, &batch).await {
            Ok((missing, direct)) => {
                if let Some(store) = batch.first().and_then(|op| op.home.store()) {
                    for n in direct {
                        store.dispatch(n);
                    }
                }
                if failing {
                    failing = false;
                    info!("the store takes the applications' messages again");
                }
                retry.reset();
                for op in batch.drain(..) {
                    if let OpKind::Send(d) = &op.kind {
                        op.home.flushed(d.len());
                    }
                    if missing.contains(&*op.home.cid) {
                        op.home.missing();
                    }
                }
            }
            Err(e) => {
                if !failing {
                    failing = true;
                    warn!("the store does not take the applications' messages ({e}); retrying");
                }
                let wait = retry.wait();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// One batch in one script call; returns the client ids the store no
/// longer has, and the events for streams attached here.
async fn apply(
    link: &Link,
    limits: Limits,
    batch: &[Op],
) -> Result<(HashSet<String>, Vec<Notice>), StoreError> {
    let reply = link
        .call_within(BATCH_TIMEOUT, "ops", |inv| {
            inv.arg(limits.outgoing_messages).arg(limits.outgoing_bytes);
            for op in batch {
                let (code, arg) = op.code_and_arg();
                inv.arg(code).arg(&*op.home.cid).arg(op.home.ser).arg(op.seq).arg(arg.as_ref());
                inv.arg(op.taken.0).arg(op.taken.1);
            }
        })
        .await?;
    let [missing, direct] = notice::array(&reply).ok_or(StoreError::Reply)? else {
        return Err(StoreError::Reply);
    };
    let missing = notice::array(missing).unwrap_or_default().iter().filter_map(notice::text);
    let direct = notice::array(direct).unwrap_or_default().iter().filter_map(notice::direct_events);
    Ok((missing.collect(), direct.collect()))
}
