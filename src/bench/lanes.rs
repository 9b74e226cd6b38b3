//! POST outcomes, and shared POST connections ("lanes") for runs whose
//! open-file limit cannot give every client a POST connection of its own
//! (10,000 clients under a 20,000 limit). Browsers share a few connections
//! per host the same way. Each lane is one keep-alive connection serving
//! the clients `index % lanes` in turn; clients never share a lock.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use tokio::sync::{mpsc, oneshot};

use super::conn::{Dialer, PostSender, open_post};
use super::runtimes::Runtimes;

/// The longest error body kept for a message.
const MAX_ERROR_BODY: usize = 1024;

/// A POST's status and the reason its body gives (see [`super::reason`]),
/// or why it got no answer.
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
    Ok((status, super::reason::reason(&String::from_utf8_lossy(&body))))
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
        dialer: &Dialer,
        timeout: Duration,
        rts: &Runtimes,
    ) -> Self {
        let per_lane = clients.div_ceil(n.max(1)) + 1;
        let lanes = (0..n.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(per_lane);
                rts.spawn(i, lane(dialer.clone(), timeout, rx));
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

async fn lane(dialer: Dialer, timeout: Duration, mut rx: mpsc::Receiver<Job>) {
    let mut sender: Option<PostSender> = None;
    while let Some(job) = rx.recv().await {
        // Its client gave up waiting (and will retry, queueing it again):
        // sending it anyway would put a stale POST before every live one,
        // and a lane slow once would fall further behind with each retry.
        if job.reply.is_closed() {
            continue;
        }
        // A POST that is never answered would stall every client of the lane.
        let out = tokio::time::timeout(timeout, send(&mut sender, &dialer, timeout, job.req))
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
    dialer: &Dialer,
    timeout: Duration,
    req: Request<Full<Bytes>>,
) -> PostOutcome {
    let sender = match slot {
        Some(s) if !s.is_closed() => s,
        _ => {
            let (s, conn) = open_post(dialer, timeout).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            slot.insert(s)
        }
    };
    sender.ready().await.map_err(|e| e.to_string())?;
    read_response(sender.send_request(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A keep-alive HTTP server that answers every request 200 and counts
    /// the requests it got (each ends with an empty body here).
    async fn counting_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            c.fetch_add(1, Ordering::SeqCst);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if s.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, count)
    }

    fn job(reply: oneshot::Sender<PostOutcome>) -> Job {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_static("/sse?sseClientId=a&messageId=0");
        req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("h"));
        Job { req, reply }
    }

    #[tokio::test]
    async fn a_post_its_client_gave_up_is_not_sent() {
        let (addr, count) = counting_server().await;
        let (tx, rx) = mpsc::channel(4);
        // Queued before the lane runs: the first one's client gave up.
        let (gone, dropped) = oneshot::channel();
        drop(dropped);
        tx.send(job(gone)).await.unwrap();
        let (live, answer) = oneshot::channel();
        tx.send(job(live)).await.unwrap();
        tokio::spawn(lane(Dialer::plain(addr), Duration::from_secs(10), rx));
        let (status, _) = answer.await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(count.load(Ordering::SeqCst), 1, "only the live POST went out");
    }
}
