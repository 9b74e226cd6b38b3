//! POST outcomes, and shared POST connections ("lanes") for runs whose
//! open-file limit cannot give every client a POST connection of its own
//! (10,000 clients under a 20,000 limit). Browsers share a few connections
//! per host the same way. Each lane is one keep-alive connection serving
//! the clients `index % lanes` in turn; clients never share a lock.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use tokio::sync::{mpsc, oneshot};

use super::conn::{PostSender, open_post};
use super::runtimes::Runtimes;

/// The longest error body kept for a message.
const MAX_ERROR_BODY: usize = 1024;

/// A POST's status and (error) body text, or why it got no answer.
pub type PostOutcome = Result<(StatusCode, String), String>;

/// Awaits a response and reads its (small) body, so the connection stays
/// reusable whatever the status.
pub async fn read_response(
    resp: impl Future<Output = hyper::Result<Response<Incoming>>>,
) -> PostOutcome {
    let resp = resp.await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if resp.body().is_end_stream() {
        return Ok((status, String::new()));
    }
    let body = Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map_err(|e| format!("{status}, body unreadable: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).trim().to_string()))
}

struct Job {
    req: Request<Full<Bytes>>,
    reply: oneshot::Sender<PostOutcome>,
}

/// The shared POST connections of a run.
pub struct Lanes {
    lanes: Vec<mpsc::Sender<Job>>,
}

impl Lanes {
    /// Starts `n` lanes for `clients` clients; each client has at most one
    /// POST in flight, so a lane's queue never holds more than its clients.
    pub fn start(
        n: usize,
        clients: usize,
        addr: SocketAddr,
        timeout: Duration,
        rts: &Runtimes,
    ) -> Self {
        let per_lane = clients.div_ceil(n.max(1)) + 1;
        let lanes = (0..n.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(per_lane);
                rts.spawn(i, lane(addr, timeout, rx));
                tx
            })
            .collect();
        Self { lanes }
    }

    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Queues client `index`'s POST on its lane.
    pub fn post(
        &self,
        index: usize,
        req: Request<Full<Bytes>>,
    ) -> impl Future<Output = PostOutcome> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = self.lanes[index % self.lanes.len()]
            .try_send(Job { req, reply })
            .map_err(|e| format!("POST lane: {e}"));
        async move {
            queued?;
            rx.await.unwrap_or_else(|_| Err("POST lane stopped".into()))
        }
    }
}

async fn lane(addr: SocketAddr, timeout: Duration, mut rx: mpsc::Receiver<Job>) {
    let mut sender: Option<PostSender> = None;
    while let Some(job) = rx.recv().await {
        // A POST that is never answered would stall every client of the lane.
        let out = tokio::time::timeout(timeout, send(&mut sender, addr, timeout, job.req))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        if out.is_err() {
            sender = None;
        }
        let _ = job.reply.send(out);
    }
}

async fn send(
    slot: &mut Option<PostSender>,
    addr: SocketAddr,
    timeout: Duration,
    req: Request<Full<Bytes>>,
) -> PostOutcome {
    let sender = match slot {
        Some(s) if !s.is_closed() => s,
        _ => {
            let (s, conn) = open_post(addr, timeout).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            slot.insert(s)
        }
    };
    sender.ready().await.map_err(|e| e.to_string())?;
    read_response(sender.send_request(req)).await
}
