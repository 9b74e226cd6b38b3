//! The writer: what the applications homed here do (send, close, drop…)
//! reaches the store in order, batched. Each home keeps its operations,
//! numbered in its order, until the writer takes them ([`OpSource`]); a
//! home with operations waiting is listed once ([`Writer::list`]). The
//! writer takes from the listed homes whatever is waiting into one script
//! call, and the next batch waits for its answer. A batch that fails is
//! sent again, whole and first, until the store takes it; the store skips
//! what it had already applied (by each home's numbers), so nothing is
//! applied twice and nothing overtakes.
//!
//! A send to a stream held on this instance (one instance, or sticky
//! routing) comes back in the call's reply (its event id) instead of as a
//! notice read back through the inbound stream: the writer hands the event
//! to the stream itself ([`Holders`]). The event is in the channel's event
//! stream either way, so a resume anywhere replays it, and the stream
//! orders what it gets by id and fills a gap from the store.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::link::{self, Link, StoreError};
use super::notice::{self, Notice, reason_code};
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

/// The streams held here, as the writer sees them: where the events of
/// sends to them go.
pub(crate) trait Holders: Send + Sync {
    /// A notice for a stream held here (`Events`, `Stored`).
    fn to_held(&self, n: Notice);
}

/// Where homes say they have operations waiting.
#[derive(Clone)]
pub(crate) struct Writer {
    // Bounded by the homes: each is listed at most once at a time.
    tx: mpsc::UnboundedSender<Arc<dyn OpSource>>,
}

impl Writer {
    /// Starts the writer; it runs until `stop`.
    pub(crate) fn start(
        link: Link,
        holders: Weak<dyn Holders>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(link, holders, rx, stop));
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
    holders: Weak<dyn Holders>,
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
            Ok(Applied { missing, here }) => {
                if failing {
                    failing = false;
                    info!("the store takes the applications' messages again");
                }
                retry.succeeded();
                if let Some(holders) = holders.upgrade() {
                    for n in to_held(&batch, here) {
                        holders.to_held(n);
                    }
                }
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

/// What the store said of a batch.
#[derive(Debug, Default, PartialEq, Eq)]
struct Applied {
    /// Client ids whose channel the store no longer has.
    missing: HashSet<String>,
    /// Sends to streams held here, in the batch's order.
    here: Vec<Here>,
}

/// A send to a stream held here, as the reply gives it.
#[derive(Debug, PartialEq, Eq)]
enum Here {
    /// The send at `at` in the batch is event `id` of stream `tok`, the
    /// channel's data bytes through it `cum`.
    Event { at: usize, tok: String, id: u64, cum: u64 },
    /// A send already applied (a batch sent again): the store has the
    /// stream's events through `last`.
    Stored { tok: String, last: u64 },
}

/// One batch in one script call.
async fn apply(link: &Link, batch: &Batch) -> Result<Applied, StoreError> {
    let reply = link
        .call_within(BATCH_TIMEOUT, "ops", |inv| {
            for (source, op) in batch {
                let (cid, ser) = source.target();
                let (code, arg) = op.code_and_arg();
                inv.arg(code).arg(cid).arg(ser).arg(op.seq).arg(arg.as_ref());
            }
        })
        .await?;
    parse_applied(&reply).ok_or(StoreError::Reply)
}

/// `{missing client ids, {place, token, event id, bytes through it}...}`
/// (`channels.lua`'s `ops`).
fn parse_applied(v: &Value) -> Option<Applied> {
    let [missing, here] = notice::array(v)? else { return None };
    let missing = notice::array(missing)?.iter().filter_map(notice::text).collect();
    let here = notice::array(here)?
        .chunks_exact(4)
        .map(|e| {
            let tok = notice::text(&e[1])?;
            Some(match &e[0] {
                Value::Int(-1) => Here::Stored { tok, last: notice::int(&e[2])? },
                at => Here::Event {
                    at: usize::try_from(notice::int(at)?).ok()?,
                    tok,
                    id: notice::int(&e[2])?,
                    cum: notice::int(&e[3])?,
                },
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Applied { missing, here })
}

/// The notices for the streams held here: consecutive events of one
/// stream as one `Events`, their data from the batch.
fn to_held(batch: &Batch, here: Vec<Here>) -> Vec<Notice> {
    let mut out: Vec<Notice> = Vec::new();
    for h in here {
        match h {
            Here::Event { at, tok, id, cum } => {
                let Some((_, Op { kind: OpKind::Send(d), .. })) = batch.get(at) else {
                    warn!(at, "the store's reply names a send the batch does not have");
                    continue;
                };
                if let Some(Notice::Events { tok: t, first, cum: c, data }) = out.last_mut()
                    && *t == tok
                    && *first + data.len() as u64 == id
                {
                    data.push(d.clone());
                    *c = cum;
                    continue;
                }
                out.push(Notice::Events { tok, first: id, cum, data: vec![d.clone()] });
            }
            Here::Stored { tok, last } => out.push(Notice::Stored { tok, last }),
        }
    }
    out
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

    fn sends(cid: &'static str, data: &[&'static str]) -> Batch {
        let source: Arc<dyn OpSource> = Arc::new(Source(cid, Mutex::default()));
        let op = |(i, d): (usize, &&'static str)| Op {
            seq: i as u64 + 1,
            kind: OpKind::Send(Bytes::from_static(d.as_bytes())),
        };
        data.iter().enumerate().map(|(i, d)| (source.clone(), op((i, d)))).collect()
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_reply_names_the_missing_channels_and_the_sends_held_here() {
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("gone")]),
            Value::Array(vec![
                Value::Int(0),
                bulk("me/1"),
                Value::Int(7),
                Value::Int(30),
                Value::Int(-1),
                bulk("me/2"),
                Value::Int(4),
                Value::Int(-1),
            ]),
        ]);
        let applied = parse_applied(&reply).expect("understood");
        assert_eq!(applied.missing, HashSet::from(["gone".to_owned()]));
        assert_eq!(
            applied.here,
            [
                Here::Event { at: 0, tok: "me/1".into(), id: 7, cum: 30 },
                Here::Stored { tok: "me/2".into(), last: 4 },
            ]
        );
        assert_eq!(parse_applied(&Value::Array(vec![bulk("gone")])), None, "not this shape");
    }

    #[test]
    fn consecutive_sends_to_one_stream_reach_it_as_one_notice_with_their_data() {
        let mut batch = sends("a", &["x1", "x22"]);
        batch.extend(sends("b", &["y1"]));
        let ev = |at: usize, tok: &str, id, cum| Here::Event { at, tok: tok.into(), id, cum };
        let here = vec![ev(0, "t/a", 5, 12), ev(1, "t/a", 6, 15), ev(2, "t/b", 1, 2)];
        let data =
            |d: &[&'static str]| d.iter().map(|d| Bytes::from_static(d.as_bytes())).collect();
        assert_eq!(
            to_held(&batch, here),
            [
                Notice::Events { tok: "t/a".into(), first: 5, cum: 15, data: data(&["x1", "x22"]) },
                Notice::Events { tok: "t/b".into(), first: 1, cum: 2, data: data(&["y1"]) },
            ]
        );
        // Not consecutive (a send in between went elsewhere): two notices.
        let here = vec![ev(0, "t/a", 5, 12), ev(1, "t/a", 7, 15)];
        assert_eq!(to_held(&batch, here).len(), 2);
        // A place the batch does not have is skipped, not a panic.
        assert!(to_held(&batch, vec![ev(9, "t/a", 5, 12)]).is_empty());
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
