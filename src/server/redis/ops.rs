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
use redis::Value;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::home::Home;
use super::link::{self, Link};
use super::notice::{self, reason_code};
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
    let mut retry = link::retry(Duration::from_secs(1));
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
        }
        match apply(&link, limits, &batch).await {
            Ok(missing) => {
                if failing {
                    failing = false;
                    info!("the store takes the applications' messages again");
                }
                retry.succeeded();
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
/// longer has.
async fn apply(
    link: &Link,
    limits: Limits,
    batch: &[Op],
) -> Result<HashSet<String>, super::link::StoreError> {
    let reply = link
        .call_within(BATCH_TIMEOUT, "ops", |inv| {
            inv.arg(limits.outgoing_messages).arg(limits.outgoing_bytes);
            for op in batch {
                let (code, arg) = op.code_and_arg();
                inv.arg(code).arg(&*op.home.cid).arg(op.home.ser).arg(op.seq).arg(arg.as_ref());
            }
        })
        .await?;
    let missing = match &reply {
        Value::Nil => Vec::new(),
        v => notice::array(v)
            .ok_or(super::link::StoreError::Reply)?
            .iter()
            .filter_map(notice::text)
            .collect(),
    };
    Ok(missing.into_iter().collect())
}
