//! `bench --dashboard ADDR`: the HTML report served while the run goes on,
//! fed once a second by an event stream from the bench itself.
//!
//! The run never waits for a viewer: each second's state replaces the last
//! in a `watch`, and each viewer is sent the newest state whenever it has
//! taken the one before (a viewer that lags skips states, never queues
//! them). The listener keeps the project's safe defaults: a bare port is
//! on loopback, a loopback listener answers loopback `Host` names only
//! (against DNS rebinding), viewers and connections are bounded, and a
//! request's head must come within a timeout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tracing::{debug, warn};

use super::html;
use crate::server::policy::HostPolicy;

/// Viewers at once (event streams); more get 503.
pub const MAX_VIEWERS: usize = 16;
/// Connections at once, viewers included: a peer cannot hold more.
const MAX_CONNECTIONS: usize = 64;
/// A request's head must come within this.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// At the end, how long viewers are given to take the final state.
const FINAL_GRACE: Duration = Duration::from_secs(1);

/// One state of the run, as the page's JSON; `last` once it is judged.
#[derive(Clone)]
struct State {
    json: Arc<String>,
    last: bool,
}

/// A running dashboard.
pub struct Dashboard {
    pub url: String,
    feed: watch::Sender<State>,
    viewers: Arc<AtomicUsize>,
    left: Arc<Notify>,
}

impl Dashboard {
    /// Binds `addr` and serves; `first` is the state shown until the run
    /// sends another.
    pub async fn start(addr: SocketAddr, first: String) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            crate::exit::UsageError(format!("--dashboard {addr}: cannot listen: {e}"))
        })?;
        let local = listener.local_addr().context("dashboard address")?;
        if !local.ip().is_loopback() {
            warn!(
                "--dashboard {local}: anyone who can reach this address sees the run (its URL, \
                 command line and figures); a bare port listens on loopback only"
            );
        }
        let (feed, _) = watch::channel(State { json: Arc::new(first), last: false });
        let me = Self {
            url: format!("http://{local}/"),
            feed,
            viewers: Arc::default(),
            left: Arc::default(),
        };
        let shared = Arc::new(Shared {
            hosts: HostPolicy::new(local, &[]),
            feed: me.feed.subscribe(),
            viewer_slots: Arc::new(Semaphore::new(MAX_VIEWERS)),
            viewers: me.viewers.clone(),
            left: me.left.clone(),
        });
        tokio::spawn(accept(listener, shared));
        Ok(me)
    }

    /// The run's state now (the page's JSON).
    pub fn show(&self, json: String) {
        self.feed.send_replace(State { json: Arc::new(json), last: false });
    }

    /// The judged report: sent to every viewer, who then stops listening;
    /// waits at most [`FINAL_GRACE`] for them to take it.
    pub async fn finish(&self, json: String) {
        let gone = self.left.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        self.feed.send_replace(State { json: Arc::new(json), last: true });
        let _ = tokio::time::timeout(FINAL_GRACE, async {
            while self.viewers.load(Ordering::SeqCst) > 0 {
                gone.as_mut().await;
                gone.set(self.left.notified());
                gone.as_mut().enable();
            }
        })
        .await;
    }
}

struct Shared {
    hosts: HostPolicy,
    feed: watch::Receiver<State>,
    viewer_slots: Arc<Semaphore>,
    viewers: Arc<AtomicUsize>,
    left: Arc<Notify>,
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else { return };
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of descriptors, say: try again shortly.
                debug!("dashboard accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
            drop(permit);
        });
    }
}

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Feed> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if let Err(why) = shared.hosts.check(host) {
        return text(StatusCode::FORBIDDEN, why);
    }
    if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    match req.uri().path() {
        "/" => {
            let state = shared.feed.borrow().clone();
            let mut r = Response::new(Feed::once(html::page(&state.json, Some("events"))));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, "text/html; charset=utf-8".parse().expect("static"));
            h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
            h.insert(
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; frame-ancestors 'none'"
                    .parse()
                    .expect("static"),
            );
            h.insert("x-content-type-options", "nosniff".parse().expect("static"));
            r
        }
        "/events" => {
            let Ok(slot) = shared.viewer_slots.clone().try_acquire_owned() else {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{MAX_VIEWERS} viewers already; try again later"),
                );
            };
            let (tx, rx) = mpsc::channel(1);
            let mut feed = shared.feed.clone();
            feed.mark_changed();
            shared.viewers.fetch_add(1, Ordering::SeqCst);
            let viewer =
                Viewer { _slot: slot, viewers: shared.viewers.clone(), left: shared.left.clone() };
            tokio::spawn(forward(feed, tx));
            let mut r = Response::new(Feed::stream(rx, viewer));
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, "text/event-stream".parse().expect("static"));
            h.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found: the dashboard is at /"),
    }
}

/// A viewer's events: the newest state each time the viewer has taken the
/// last (while it is slow, states replace each other in `feed`: it skips
/// them, nothing queues), until the last state. Dropping `tx` then ends
/// the body once its frames are out.
async fn forward(mut feed: watch::Receiver<State>, tx: mpsc::Sender<Bytes>) {
    if tx.send(Bytes::from_static(b"retry: 1000\n\n")).await.is_err() {
        return;
    }
    while feed.changed().await.is_ok() {
        let state = feed.borrow_and_update().clone();
        let frame = Bytes::from(format!("data: {}\n\n", state.json));
        if tx.send(frame).await.is_err() || state.last {
            break;
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Feed> {
    let mut r = Response::new(Feed::once(format!("{body}\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("static"));
    r
}

/// A viewer's place, given back when its response body is dropped (all
/// of it written, or the viewer gone).
struct Viewer {
    _slot: tokio::sync::OwnedSemaphorePermit,
    viewers: Arc<AtomicUsize>,
    left: Arc<Notify>,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.viewers.fetch_sub(1, Ordering::SeqCst);
        self.left.notify_waiters();
    }
}

/// A response body: one piece, or the frames of a viewer's channel.
pub struct Feed {
    once: Option<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
    _viewer: Option<Viewer>,
}

impl Feed {
    fn once(s: String) -> Self {
        Self { once: Some(Bytes::from(s)), rx: None, _viewer: None }
    }
    fn stream(rx: mpsc::Receiver<Bytes>, viewer: Viewer) -> Self {
        Self { once: None, rx: Some(rx), _viewer: Some(viewer) }
    }
}

impl Body for Feed {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.once.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match &mut self.rx {
            Some(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
            None => Poll::Ready(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u32, last: bool) -> State {
        State { json: Arc::new(n.to_string()), last }
    }

    #[tokio::test]
    async fn a_lagging_viewer_gets_the_latest_state_not_a_backlog() {
        let (feed, rx) = watch::channel(state(0, false));
        let (tx, mut frames) = mpsc::channel(1);
        let mut viewer = rx.clone();
        viewer.mark_changed();
        let task = tokio::spawn(forward(viewer, tx));
        // The viewer reads nothing while 100 states go by.
        for n in 1..=100 {
            feed.send_replace(state(n, false));
            tokio::task::yield_now().await;
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(frames.recv().await.unwrap());
        }
        assert_eq!(got[0], "retry: 1000\n\n");
        // At most the one it held when the viewer stopped reading, then
        // the newest.
        assert_eq!(got[2], "data: 100\n\n", "{got:?}");
        feed.send_replace(state(101, true));
        assert_eq!(frames.recv().await.unwrap(), "data: 101\n\n");
        assert_eq!(frames.recv().await, None, "the last state ends the stream");
        task.await.unwrap();
        drop(rx);
    }
}
