//! The writer: what the applications homed here do (send, close, drop…)
//! reaches the store in order, batched. Each home keeps its operations,
//! numbered in its order, until the writer takes them ([`OpSource`]); a
//! home with operations waiting is listed once ([`Writer::list`]). The
//! writer takes from the listed homes whatever is waiting into one script
//! call, and the next batch waits for its answer. A batch that fails is
//! sent again, whole and first, until the store takes it; the store skips
//! what it had already applied (by each home's numbers), so nothing is
//! applied twice and nothing overtakes.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::link::{self, Link, StoreError};
use super::notice::{self, reason_code};
use crate::server::app::CloseReason;

/// Operations per batch at most, and bytes of sent data.
const MAX_OPS: usize = 1024;
const MAX_BYTES: usize = 1 << 20;
/// How long a batch may take: many operations, and a busy store.
const BATCH_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
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

/// One operation of a home, numbered in the home's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Op {
    pub seq: u64,
    pub kind: OpKind,
}

impl Op {
    /// Bytes of sent data it carries.
    pub(crate) fn bytes(&self) -> usize {
        match &self.kind {
            OpKind::Send(d) => d.len(),
            _ => 0,
        }
    }

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

/// A home as the writer sees it.
pub(crate) trait OpSource: Send + Sync {
    /// The channel's client id and serial.
    fn target(&self) -> (&str, u64);
    /// Moves waiting operations, oldest first, into `into`, at most
    /// `max_ops` of them and (past the first) `max_bytes` of sent data;
    /// returns whether some are left.
    fn take_ops(&self, into: &mut Vec<Op>, max_ops: usize, max_bytes: usize) -> bool;
    /// The store applied a send of `bytes`.
    fn flushed(&self, bytes: usize);
    /// The store no longer has the channel.
    fn missing(&self);
}

/// Where homes say they have operations waiting.
#[derive(Clone)]
pub(crate) struct Writer {
    // Bounded by the homes: each is listed at most once at a time.
    tx: mpsc::UnboundedSender<Arc<dyn OpSource>>,
}

impl Writer {
    /// Starts the writer; it runs until `stop`.
    pub(crate) fn start(link: Link, stop: watch::Receiver<bool>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(link, rx, stop));
        Self { tx }
    }

    /// `source` has operations waiting (and was not listed).
    pub(crate) fn list(&self, source: Arc<dyn OpSource>) {
        let _ = self.tx.send(source);
    }
}

type Batch = Vec<(Arc<dyn OpSource>, Op)>;

async fn run(
    link: Link,
    mut rx: mpsc::UnboundedReceiver<Arc<dyn OpSource>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listed: VecDeque<Arc<dyn OpSource>> = VecDeque::new();
    let mut batch: Batch = Vec::new();
    let mut retry = link::retry(Duration::from_secs(1));
    let mut failing = false;
    loop {
        if batch.is_empty() {
            if listed.is_empty() {
                tokio::select! {
                    source = rx.recv() => match source {
                        Some(s) => listed.push_back(s),
                        None => return,
                    },
                    _ = stop.changed() => return,
                }
            }
            while let Ok(s) = rx.try_recv() {
                listed.push_back(s);
            }
            fill(&mut batch, &mut listed);
            if batch.is_empty() {
                continue;
            }
        }
        match apply(&link, &batch).await {
            Ok(missing) => {
                if failing {
                    failing = false;
                    info!("the store takes the applications' messages again");
                }
                retry.succeeded();
                for (source, op) in batch.drain(..) {
                    if let OpKind::Send(d) = &op.kind {
                        source.flushed(d.len());
                    }
                    if missing.contains(source.target().0) {
                        source.missing();
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

/// Takes from the listed homes, in turn, what one batch holds; a home with
/// operations left (the batch is full) goes to the back of the line, so
/// that a busy home does not hold up the others.
fn fill(batch: &mut Batch, listed: &mut VecDeque<Arc<dyn OpSource>>) {
    let (mut bytes, mut ops) = (0, Vec::new());
    while let Some(source) = listed.pop_front() {
        let more =
            source.take_ops(&mut ops, MAX_OPS - batch.len(), MAX_BYTES.saturating_sub(bytes));
        for op in ops.drain(..) {
            bytes += op.bytes();
            batch.push((source.clone(), op));
        }
        if more {
            listed.push_back(source);
        }
        if batch.len() >= MAX_OPS || bytes >= MAX_BYTES {
            return;
        }
    }
}

/// One batch in one script call; returns the client ids the store no
/// longer has.
async fn apply(link: &Link, batch: &Batch) -> Result<HashSet<String>, StoreError> {
    let reply = link
        .call_within(BATCH_TIMEOUT, "ops", |inv| {
            for (source, op) in batch {
                let (cid, ser) = source.target();
                let (code, arg) = op.code_and_arg();
                inv.arg(code).arg(cid).arg(ser).arg(op.seq).arg(arg.as_ref());
            }
        })
        .await?;
    let missing = match &reply {
        Value::Nil => Vec::new(),
        v => notice::array(v).ok_or(StoreError::Reply)?.iter().filter_map(notice::text).collect(),
    };
    Ok(missing.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A home reduced to its operations.
    struct Source(&'static str, Mutex<VecDeque<Op>>);

    impl Source {
        fn listed(cid: &'static str, n: u64) -> Arc<dyn OpSource> {
            let ops = (1..=n).map(|seq| Op { seq, kind: OpKind::Drop }).collect();
            Arc::new(Source(cid, Mutex::new(ops)))
        }
    }

    impl OpSource for Source {
        fn target(&self) -> (&str, u64) {
            (self.0, 1)
        }

        fn take_ops(&self, into: &mut Vec<Op>, max_ops: usize, _max_bytes: usize) -> bool {
            let mut ops = self.1.lock().expect("ops");
            while into.len() < max_ops {
                let Some(op) = ops.pop_front() else { break };
                into.push(op);
            }
            !ops.is_empty()
        }

        fn flushed(&self, _: usize) {}

        fn missing(&self) {}
    }

    fn cids(batch: &Batch) -> Vec<&str> {
        let mut v: Vec<&str> = batch.iter().map(|(s, _)| s.target().0).collect();
        v.dedup();
        v
    }

    #[test]
    fn a_busy_home_does_not_hold_up_the_others() {
        let mut listed: VecDeque<_> =
            [Source::listed("busy", 3000), Source::listed("quiet", 1)].into();
        let mut batch = Vec::new();
        fill(&mut batch, &mut listed);
        assert_eq!((batch.len(), cids(&batch)), (MAX_OPS, vec!["busy"]));
        batch.clear();
        fill(&mut batch, &mut listed);
        assert_eq!(cids(&batch), ["quiet", "busy"], "the quiet home's turn comes first");
        // Each home's operations stay in their order.
        let seqs: Vec<u64> = batch[1..].iter().map(|(_, op)| op.seq).collect();
        assert_eq!(seqs, (MAX_OPS as u64 + 1..2 * MAX_OPS as u64).collect::<Vec<_>>());
    }
}
