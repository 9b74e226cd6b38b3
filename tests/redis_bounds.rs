//! What the Redis store keeps in Redis is bounded as the memory store's
//! memory is: out-of-order messages by --max-incoming-total and closed ids
//! by --max-closed-ids-bytes, one budget kept in Redis for every instance
//! sharing it; a Redis that is full refuses with 503 instead of losing what
//! it acknowledged; and the clients an instance admits never pass
//! --max-clients, however many arrive at once. The real binary (or server)
//! and Debian's redis-server.

#[path = "support/cluster.rs"]
mod cluster;
mod util;

use std::time::Duration;

use cluster::{RedisServer, instances};
use ssechan::protocol::query::channel_query;
use ssechan::protocol::reorder::ENTRY_OVERHEAD;
use ssechan::server::{ConnectionEvent, Limits, Redis, RedisOptions, Server, ServerConfig};
use util::*;

/// What remembering a closed id costs besides its id and messages
/// (`CLOSED_ENTRY_OVERHEAD` in src/server/memory.rs).
const CLOSED_OVERHEAD: u64 = 128;
const MSG: usize = 60_000;
/// What one out-of-order message of MSG bytes weighs.
const W: u64 = MSG as u64 + ENTRY_OVERHEAD as u64;

/// An integer key of the store (0 when absent).
fn int(redis: &RedisServer, key: &str) -> u64 {
    let reply = redis.command(&["GET", &format!("ssechan:{key}")]);
    match reply.split("\r\n").collect::<Vec<_>>()[..] {
        ["$-1", ..] => 0,
        [_, v, ..] => v.parse().unwrap_or_else(|_| panic!("{key}: {reply:?}")),
        _ => panic!("{key}: {reply:?}"),
    }
}

fn exists(redis: &RedisServer, key: &str) -> bool {
    redis.command(&["EXISTS", &format!("ssechan:{key}")]).starts_with(":1")
}

fn used_memory(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "memory"]);
    let line = info.lines().find(|l| l.starts_with("used_memory:")).expect("used_memory");
    line["used_memory:".len()..].trim().parse().expect("a number")
}

/// Waits until the budget counts `held` and `closedb`: a DELETE of a
/// streaming client completes once its holder has ended the stream.
async fn settled(redis: &RedisServer, held: u64, closedb: u64) {
    let what = format!("held {held}, closedb {closedb}");
    eventually(&what, || {
        let now = (int(redis, "held"), int(redis, "closedb"));
        assert!(now.0 <= 1 << 20 && now.1 <= 512 << 10, "over a limit: {now:?}");
        (now == (held, closedb)).then_some(())
    })
    .await;
}

async fn delete(url: &str, who: &str) -> u16 {
    let r = http().delete(format!("{url}?{}", channel_query(who, None))).send().await;
    r.expect("delete").status().as_u16()
}

/// Out-of-order bytes of every channel share one budget in Redis, whichever
/// instance takes the POST: past it a POST gets 503 with the reason; the
/// count is exact and never over the limit; a close moves what it held to
/// the closed-id memory (within its own budget, the oldest forgotten first,
/// what cannot fit dropped) and a returning id takes it back.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_order_messages_and_closed_ids_share_one_budget_in_redis() {
    let redis = RedisServer::start();
    let flags = ["--echo", "--max-incoming-total", "1M", "--max-closed-ids-bytes", "512K"];
    let mut inst = instances(&redis, 2, &flags).await;
    let urls: Vec<String> = inst.iter().map(|s| s.url.clone()).collect();
    let client = http();
    let msg = "x".repeat(MSG);
    let _a = open(&urls[0], "a", None).await;
    let _b = open(&urls[1], "b", None).await;
    // a and b in turn, each through both instances, until the budget is
    // spent: 17 weigh 1,021,088 bytes, an 18th would pass 1 MiB.
    let (mut next, mut counted, mut refusal) = ([2u64, 2], 0u64, None);
    for k in 0..40 {
        let (who, i) = (["a", "b"][k % 2], k % 2);
        let url = &urls[(k / 2) % 2];
        let body = ssechan::protocol::encode_message_body(&msg);
        let (status, why) = post_raw(url, &channel_query(who, Some(next[i])), body).await;
        if status != 200 {
            refusal = Some((status, why.trim_end().to_owned()));
            break;
        }
        next[i] += 2;
        counted += W;
        assert_eq!(int(&redis, "held"), counted, "the budget counts each message once");
    }
    assert_eq!(
        refusal,
        Some((
            503,
            "server busy: out-of-order messages held in the store reached the limit of 1048576 bytes"
                .into()
        ))
    );
    assert_eq!(counted, 17 * W);
    assert!(int(&redis, "held") <= 1 << 20);
    // b (8 messages) closes: remembered, as its weight fits 512 KiB.
    assert_eq!(delete(&urls[0], "b").await, 204);
    let b_weight = 8 * W + 1 + CLOSED_OVERHEAD;
    settled(&redis, 9 * W, b_weight).await;
    assert!(exists(&redis, "q:b"), "b's messages are remembered");
    // Room again for a; then a (10 messages) closes: too big to remember,
    // dropped, and nothing of it stays.
    assert_eq!(post(&client, &urls[1], "a", next[0], &msg).await, 200);
    assert_eq!(int(&redis, "held"), 10 * W);
    assert_eq!(delete(&urls[1], "a").await, 204);
    settled(&redis, 0, b_weight).await;
    assert!(!exists(&redis, "q:a") && !exists(&redis, "m:a"), "a left nothing behind");
    // Logged where the close completed: the instance holding a's stream.
    inst[0].err_line_with("acknowledged out-of-order messages dropped with their connection").await;
    // c closes with as much: the oldest memory (b) is forgotten for it.
    let _c = open(&urls[0], "c", None).await;
    for id in (2..=16).step_by(2) {
        assert_eq!(post(&client, &urls[id as usize / 2 % 2], "c", id, &msg).await, 200);
    }
    assert_eq!(delete(&urls[0], "c").await, 204);
    settled(&redis, 0, b_weight).await;
    assert!(!exists(&redis, "q:b") && !exists(&redis, "m:b"), "b is forgotten");
    let line = inst[0].err_line_with("closed-id memory full").await;
    assert!(line.contains("messages=8"), "{line}");
    // c comes back: its messages count as held again, and it keeps counting.
    let mut c = open(&urls[1], "c", None).await;
    settled(&redis, 8 * W, 0).await;
    for id in [1, 0] {
        assert_eq!(post(&client, &urls[0], "c", id, &format!("m{id}")).await, 200);
    }
    let got = c.msgs(3).await;
    assert_eq!(got[0].data, "m0");
    assert_eq!(got[1].data, "m1");
    assert_eq!(got[2].data, msg, "message 2, held since before the close, follows");
    assert_eq!(int(&redis, "held"), 7 * W);
    assert_eq!(delete(&urls[1], "c").await, 204);
    settled(&redis, 0, 7 * W + 1 + CLOSED_OVERHEAD).await;
}

/// A Redis at its maxmemory (noeviction) refuses what would grow it: a POST
/// gets 503 saying so, never 200 for a message that is then lost; once it
/// has room again every acknowledged message arrives, once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_redis_refuses_posts_and_loses_nothing_it_acknowledged() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 1, &["--echo", "--keep-alive", "30s"]).await;
    let url = inst[0].url.clone();
    let client = http();
    let mut x = open(&url, "x", None).await;
    let _y = open(&url, "y", None).await;
    assert_eq!(post(&client, &url, "x", 0, "warm").await, 200);
    assert_eq!(x.next_msg().await.data, "warm");
    let room = used_memory(&redis) + (2 << 20);
    for (k, v) in [("maxmemory-policy", "noeviction".to_string()), ("maxmemory", room.to_string())]
    {
        assert!(redis.command(&["CONFIG", "SET", k, &v]).starts_with("+OK"), "CONFIG SET {k}");
    }
    // x posts in order (echoed back), y out of order and big, until Redis
    // is full.
    let (mut acked, mut refused) = (vec!["warm".to_string()], None);
    let big = "y".repeat(200_000);
    for id in 1..200u64 {
        let m = format!("m{id}-{}", "x".repeat(10_000));
        let (status, why) = post_text(&url, "x", id, &m).await;
        if status != 200 {
            refused = Some((id, m, status, why));
            break;
        }
        acked.push(m);
        let (status, why) = post_text(&url, "y", 2 * id, &big).await;
        assert!(status == 200 || status == 503, "{status} {why}");
    }
    let (id, m, status, why) = refused.expect("Redis filled up");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("Redis is out of memory"), "{why}");
    // Room again (as an operator would make): the refused POST goes in,
    // and the stream gets everything acknowledged, in order, once.
    assert!(redis.command(&["CONFIG", "SET", "maxmemory", "0"]).starts_with("+OK"));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, why) = post_text(&url, "x", id, &m).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{why}");
        assert!(tokio::time::Instant::now() < deadline, "Redis had room again: {why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acked.push(m);
    let got: Vec<String> = x.msgs(acked.len() - 1).await.into_iter().map(|m| m.data).collect();
    assert_eq!(got, acked[1..], "every acknowledged message, in order, once");
    assert!(!x.ended);
    drop(inst.remove(0));
}

/// What is remembered of a closed id goes after the memory period (swept
/// by the instances' heartbeats), budget and keys alike.
#[tokio::test(flavor = "multi_thread")]
async fn closed_ids_are_forgotten_after_the_memory_period() {
    let redis = RedisServer::start();
    let config =
        ServerConfig { closed_id_memory: Duration::from_millis(300), ..ServerConfig::default() };
    let mut server = with_redis(&redis, config).await;
    let url = server.url();
    let _s = open(&url, "s", None).await;
    let _app = server.accept().await.expect("the channel");
    assert_eq!(post(&http(), &url, "s", 2, &"x".repeat(MSG)).await, 200);
    assert_eq!(delete(&url, "s").await, 204);
    eventually("s to be remembered", || {
        (int(&redis, "closedb") == W + 1 + CLOSED_OVERHEAD && exists(&redis, "q:s")).then_some(())
    })
    .await;
    eventually("the closed id to be forgotten", || {
        (int(&redis, "closedb") == 0 && !exists(&redis, "q:s") && !exists(&redis, "m:s"))
            .then_some(())
    })
    .await;
    let closed = redis.command(&["ZCARD", "ssechan:closed"]);
    assert!(closed.starts_with(":0"), "{closed}");
}

/// An in-process server sharing its channels through `redis`.
async fn with_redis(redis: &RedisServer, config: ServerConfig) -> Server {
    let store = Redis::connect(RedisOptions::new(redis.url())).await.expect("connect");
    server(ServerConfig { redis: Some(store), ..config }).await
}

/// A stream's GET, answered (its body not read).
async fn get(client: &reqwest::Client, url: &str, who: String) -> reqwest::Response {
    let url = format!("{url}?{}", channel_query(&who, None));
    client.get(url).header("accept", "text/event-stream").send().await.expect("get")
}

/// New clients arriving at once are admitted against --max-clients in one
/// step each: never more than the limit, the rest refused 503 with the
/// reason; a client that leaves makes room for one more.
#[tokio::test(flavor = "multi_thread")]
async fn clients_arriving_at_once_never_pass_max_clients() {
    let redis = RedisServer::start();
    let limits = Limits { max_clients: 3, ..Limits::default() };
    let mut server = with_redis(&redis, ServerConfig { limits, ..ServerConfig::default() }).await;
    let url = server.url();
    let client = http();
    let gets = (0..24).map(|i| get(&client, &url, format!("n{i}")));
    let answers = futures_util::future::join_all(gets).await;
    let (open, refused): (Vec<_>, Vec<_>) = answers.into_iter().partition(|r| r.status() == 200);
    assert_eq!(open.len(), 3, "admitted at once");
    for r in refused {
        assert_eq!(r.status(), 503);
        assert_eq!(r.text().await.expect("reason").trim_end(), "too many clients (limit 3)");
    }
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(server.accept().await.expect("a channel"));
    }
    // One leaves: its application hears the close once its place is free;
    // then one more fits, and only one.
    let gone = apps[0].id().to_owned();
    assert_eq!(delete(&url, &gone).await, 204);
    loop {
        let ev = tokio::time::timeout(WAIT, apps[0].recv()).await.expect("the close in time");
        match ev.expect("the close before the end") {
            ConnectionEvent::Closed(_) => break,
            _ => continue,
        }
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let _later = loop {
        let r = get(&client, &url, "later".into()).await;
        if r.status() == 200 {
            break r;
        }
        // Between the close's wake-up and the place given back.
        assert_eq!(r.status(), 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place of the client that left is free again"
        );
    };
    let r = get(&client, &url, "one-too-many".into()).await;
    assert_eq!(r.status(), 503, "full again");
    drop((open, r));
}
