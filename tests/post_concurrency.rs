//! Many POSTs in flight for one channel, as package:sse's browser client
//! sends them (its pool allows 1,000 at once, and one failed POST ends its
//! session): 50 and 200 kept-alive HTTP/1.1 connections post messageIds 0,
//! 1, 2, … in turn to one client, on the multi-thread runtime, while the
//! client's stream is read as fast as it comes. A healthy server answers
//! every one 2xx, and its application gets each message once: the count it
//! received equals the 2xx answers. On the memory store and on Redis.

#[path = "support/cluster.rs"]
mod cluster;
mod util;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use ssechan::protocol::query::channel_query;
use ssechan::server::{ConnectionEvent, Limits, Redis, RedisOptions, Server, ServerConfig};
use tokio::task::JoinSet;

use cluster::RedisServer;

/// Messages posted in each run.
const MESSAGES: u64 = 20_000;
/// Bound on a whole run: posting, delivery and the stream.
const RUN: Duration = Duration::from_secs(120);

/// What the posters were answered.
#[derive(Default)]
struct Answers {
    ok: u64,
    /// Non-2xx answers: status and reason, the first few kept.
    refused: Vec<(u16, String)>,
    refusals: u64,
    /// 503s of the Redis store for a request Redis did not answer in time
    /// (its bound on every wait, reached when the machine is overloaded):
    /// asked again, as a client does, and counted apart.
    store_timeouts: u64,
}

/// Times one message is asked again after a store timeout.
const STORE_RETRIES: u32 = 20;

/// `conns` kept-alive connections post `MESSAGES` messages of client `c0`,
/// each taking the next messageId when its previous POST is answered.
async fn post_all(addr: SocketAddr, conns: usize) -> Answers {
    let next = Arc::new(AtomicU64::new(0));
    let mut posters = JoinSet::new();
    for _ in 0..conns {
        let next = next.clone();
        posters.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let (mut sender, conn) =
                http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await.expect("handshake");
            tokio::spawn(conn);
            let mut answers = Answers::default();
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= MESSAGES {
                    return answers;
                }
                let mut tries = 0;
                let (status, body) = loop {
                    sender.ready().await.expect("connection kept alive");
                    let body = ssechan::protocol::encode_message_body(&format!("m{id}"));
                    let req =
                        http::Request::post(format!("/sse?{}", channel_query("c0", Some(id))))
                            .header("host", addr.to_string())
                            .header("content-type", "text/plain;charset=UTF-8")
                            .body(Full::new(Bytes::from(body)))
                            .expect("request");
                    let resp = sender.send_request(req).await.expect("an answer");
                    let status = resp.status();
                    let body = resp.into_body().collect().await.expect("body").to_bytes();
                    let timed_out = status == 503 && body.starts_with(b"store unavailable:");
                    if !timed_out || tries == STORE_RETRIES {
                        break (status, body);
                    }
                    tries += 1;
                    answers.store_timeouts += 1;
                };
                if status.is_success() {
                    answers.ok += 1;
                } else {
                    answers.refusals += 1;
                    if answers.refused.len() < 5 {
                        let reason = String::from_utf8_lossy(&body).trim().to_owned();
                        answers
                            .refused
                            .push((status.as_u16(), format!("messageId {id}: {reason}")));
                    }
                }
            }
        });
    }
    let mut all = Answers::default();
    while let Some(done) = posters.join_next().await {
        let a = done.expect("poster");
        all.ok += a.ok;
        all.refusals += a.refusals;
        all.refused.extend(a.refused);
        all.store_timeouts += a.store_timeouts;
    }
    all
}

/// One run at a time: each fills both cores on its own, and runs side by
/// side would only slow each other's server.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs the load against a server with `config`: the application echoes
/// and counts what it receives, a reader drains the stream.
async fn run(config: ServerConfig, conns: usize) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut server = Server::bind("127.0.0.1:0", config).await.expect("bind");
    let (url, addr) = (server.url(), server.local_addr());
    let mut stream = util::open(&url, "c0", None).await;
    let mut conn = server.accept().await.expect("the connection of c0");
    let app = tokio::spawn(async move {
        let mut received = 0u64;
        while received < MESSAGES {
            match conn.recv().await {
                Some(ConnectionEvent::Message(m)) => {
                    received += 1;
                    conn.send(&m).expect("echo");
                }
                Some(ConnectionEvent::Closed(why)) => panic!("closed after {received}: {why:?}"),
                Some(_) => {}
                None => break,
            }
        }
        (received, conn)
    });
    let reader = tokio::spawn(async move {
        let mut read = 0u64;
        while read < MESSAGES {
            match stream.next_event(RUN).await {
                Some(e) if e.event == "message" => read += 1,
                Some(_) => {}
                None => break,
            }
        }
        read
    });
    // The gauge admission reads, watched while the POSTs run: it may never
    // pass the bound it enforces (a wrapped count would).
    let (handle, watching) = (server.handle(), Arc::new(AtomicBool::new(true)));
    let watch = std::thread::spawn({
        let watching = watching.clone();
        move || {
            let mut most = 0;
            while watching.load(Ordering::Relaxed) {
                most = most.max(handle.counts().incoming_bytes);
                std::thread::yield_now();
            }
            most
        }
    });
    let answers = tokio::time::timeout(RUN, post_all(addr, conns)).await.expect("POSTs answered");
    watching.store(false, Ordering::Relaxed);
    let most = watch.join().expect("watcher");
    let limit = server.handle().limits().incoming_total;
    assert!(most <= limit, "incoming bytes held seen at {most}, over the limit of {limit}");
    assert!(
        answers.refusals == 0,
        "{} of {MESSAGES} POSTs refused over {conns} connections, e.g. {:?}",
        answers.refusals,
        answers.refused
    );
    assert_eq!(answers.ok, MESSAGES);
    if answers.store_timeouts > 0 {
        eprintln!("{} POSTs asked again after a store timeout", answers.store_timeouts);
    }
    // Every 2xx is a message the application gets, once.
    let (received, conn) = tokio::time::timeout(RUN, app).await.expect("delivered").expect("app");
    assert_eq!(received, answers.ok, "delivered vs 2xx answers");
    let read = tokio::time::timeout(RUN, reader).await.expect("echoes read").expect("reader");
    assert_eq!(read, MESSAGES, "echoes on the stream");
    assert_eq!(server.handle().counts().incoming_bytes, 0, "nothing left held");
    drop(conn);
    server.shutdown().await;
}

/// The defaults, with a re-order window past the run's length. The window
/// (4,096 ids) bounds how far ahead of the oldest unanswered POST the others
/// may go; on a loaded machine one POST's task can stall for as long as
/// 4,096 others take, and the 429s that follow are the window doing its
/// job, not the accounting this test is about.
fn config() -> ServerConfig {
    let limits = Limits { reorder_window: MESSAGES, ..Limits::default() };
    ServerConfig { limits, ..ServerConfig::default() }
}

async fn redis_config(redis: &RedisServer) -> ServerConfig {
    let r = Redis::connect(RedisOptions::new(redis.url())).await.expect("connect to redis-server");
    ServerConfig { redis: Some(r), ..config() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_connections_posting_to_one_channel_are_all_taken_on_the_memory_store() {
    run(config(), 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_connections_posting_to_one_channel_are_all_taken_on_the_memory_store() {
    run(config(), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_connections_posting_to_one_channel_are_all_taken_with_redis() {
    let redis = RedisServer::start();
    run(redis_config(&redis).await, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_connections_posting_to_one_channel_are_all_taken_with_redis() {
    let redis = RedisServer::start();
    run(redis_config(&redis).await, 200).await;
}
