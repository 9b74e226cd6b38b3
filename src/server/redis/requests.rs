//! An instance's requests to the store (POSTs, attaches, stream ends…)
//! go in batches: whatever is waiting when a call can go is one call, and
//! its replies are handed back in order. Under load a call carries many
//! requests, so Redis and this instance pay the per-call cost (parsing,
//! wake-ups, the function's setup) once for all; alone, a request is a call
//! of its own. Each request still waits at most [`REQUEST_TIMEOUT`].

use std::sync::Arc;

use redis::{Cmd, Value};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::link::{Link, REQUEST_TIMEOUT, StoreError};

/// Requests per call at most, and bytes of messages.
const MAX_REQUESTS: usize = 512;
const MAX_BYTES: usize = 1 << 20;
/// Calls in flight at once: one is being answered while the next fills.
const IN_FLIGHT: usize = 2;

/// What a holder tells the store when its stream ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub cid: Arc<str>,
    pub ser: u64,
    pub tok: Arc<str>,
    /// What the stream handed to its socket: the last event id, and the
    /// channel's data bytes through it.
    pub sent: u64,
    pub sent_cum: u64,
    /// It wrote the control close.
    pub flushed: bool,
    /// For a closing channel: its home, the reason and what never reached
    /// the client, for telling the home if the channel is gone meanwhile.
    pub home: String,
    pub reason: &'static str,
    pub undelivered: u64,
}

/// One request, as `ops.batch` in `channels.lua` takes it.
pub(crate) enum Request {
    Attach { cid: Arc<str>, tok: Arc<str>, last: i64, keep_alive: u64, may_create: bool },
    Post { cid: String, id: u64, message: String },
    Ended(Ended),
    Abandon { cid: Arc<str>, tok: Arc<str>, orphan: bool },
    ClientClosed { cid: String },
    Lost { cid: Arc<str>, ser: u64, first: u64, last: u64 },
}

impl Request {
    fn add_to(&self, cmd: &mut Cmd) {
        match self {
            Request::Attach { cid, tok, last, keep_alive, may_create } => {
                cmd.arg("attach").arg(&**cid).arg(&**tok).arg(*last).arg(*keep_alive);
                cmd.arg(if *may_create { "1" } else { "0" });
            }
            Request::Post { cid, id, message } => {
                cmd.arg("post").arg(cid).arg(*id).arg(message);
            }
            Request::Ended(e) => {
                cmd.arg("ended").arg(&*e.cid).arg(e.ser).arg(&*e.tok).arg(e.sent).arg(e.sent_cum);
                cmd.arg(if e.flushed { "1" } else { "0" }).arg(&e.home).arg(e.reason);
                cmd.arg(e.undelivered);
            }
            Request::Abandon { cid, tok, orphan } => {
                cmd.arg("abandon").arg(&**cid).arg(&**tok).arg(if *orphan { "1" } else { "0" });
            }
            Request::ClientClosed { cid } => {
                cmd.arg("cclose").arg(cid);
            }
            Request::Lost { cid, ser, first, last } => {
                cmd.arg("lost").arg(&**cid).arg(*ser).arg(*first).arg(*last);
            }
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Request::Post { message, .. } => message.len(),
            _ => 64,
        }
    }
}

struct Waiting {
    request: Request,
    reply: oneshot::Sender<Result<Value, StoreError>>,
}

/// Where requests are handed in.
#[derive(Clone)]
pub(crate) struct Requests {
    tx: mpsc::UnboundedSender<Waiting>,
}

impl Requests {
    /// Starts the batching tasks; they end with `stop`.
    pub(crate) fn start(link: Link, stop: watch::Receiver<bool>) -> Self {
        // Bounded by its senders: one per HTTP request or stream in
        // progress, each given up after REQUEST_TIMEOUT (and not sent
        // once its caller has gone).
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..IN_FLIGHT {
            tokio::spawn(run(link.clone(), rx.clone(), stop.clone()));
        }
        Self { tx }
    }

    /// The request's reply, within [`REQUEST_TIMEOUT`].
    pub(crate) async fn call(&self, request: Request) -> Result<Value, StoreError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Waiting { request, reply }).is_err() {
            return Err(StoreError::Stopped);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::Timeout(REQUEST_TIMEOUT)),
        }
    }
}

async fn run(
    link: Link,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Waiting>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = tokio::select! {
                rx = rx.lock() => rx,
                _ = stop.changed() => return,
            };
            let first = tokio::select! {
                w = rx.recv() => w,
                _ = stop.changed() => return,
            };
            let Some(first) = first else { return };
            let mut bytes = first.request.bytes();
            batch.push(first);
            while batch.len() < MAX_REQUESTS && bytes < MAX_BYTES {
                let Ok(w) = rx.try_recv() else { break };
                bytes += w.request.bytes();
                batch.push(w);
            }
        }
        // Requests whose caller gave up (timed out) are not sent.
        batch.retain(|w| !w.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let reply = link
            .call_within(REQUEST_TIMEOUT, "batch", |cmd| {
                for w in &batch {
                    w.request.add_to(cmd);
                }
            })
            .await;
        match reply {
            Ok(v) => match v {
                Value::Array(replies) | Value::Set(replies) if replies.len() == batch.len() => {
                    for (w, r) in batch.into_iter().zip(replies) {
                        let _ = w.reply.send(Ok(r));
                    }
                }
                _ => {
                    for w in batch {
                        let _ = w.reply.send(Err(StoreError::Reply));
                    }
                }
            },
            Err(e) => {
                for w in batch {
                    let _ = w.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
