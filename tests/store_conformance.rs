//! One behaviour, every store: each channel behaviour of PROTOCOL.md §3–§5
//! is written once here and run against the in-process store and against
//! the Redis store (a real redis-server), with the same assertions; those
//! that touch the stream's path also over every transport. What needs
//! several instances stays in tests/cluster.rs.
//!
//! Nothing here waits by sleeping: every wait is for an event, bounded by
//! [`WAIT`]. The Redis store does not follow tokio's paused time, so the
//! keep-alive test uses a short real one.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/stores.rs"]
mod stores;
mod util;

use std::time::Duration;

use futures_util::future::join_all;
use ssechan::server::{
    CloseInfo, CloseReason, Connection, ConnectionEvent, Limits, SendError, Server, ServerConfig,
};
use stores::Store;
use util::{Link, Msg, Transport, WAIT};

/// Where a behaviour runs: a store, and how its streams are reached.
#[derive(Debug, Clone, Copy)]
struct On {
    store: Store,
    transport: Transport,
}

impl On {
    async fn serve(self, config: ServerConfig) -> (Server, Link) {
        self.store.serve(self.transport, config).await
    }
}

/// A channel's wait for messageId 0 when later ones come first (then it
/// starts from the first it has, as for a returning client id), for tests
/// whose POSTs arrive shuffled: longer than any test, however late a busy
/// machine lets a POST arrive (a SYN dropped from a full backlog is sent
/// again 1 s later, then 3 s).
const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(3600);

fn keep_alive() -> ServerConfig {
    ServerConfig { keep_alive: Some(Duration::from_secs(60)), ..ServerConfig::default() }
}

async fn next_event(conn: &mut Connection) -> ConnectionEvent {
    tokio::time::timeout(WAIT, conn.recv()).await.expect("event in time").expect("open")
}

fn closed(reason: CloseReason, undelivered: u64) -> ConnectionEvent {
    ConnectionEvent::Closed(CloseInfo { reason, undelivered })
}

fn ids(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter().map(|m| m.id).collect()
}

fn channel_url(url: &str, who: &str) -> String {
    format!("{url}?{}", ssechan::protocol::query::channel_query(who, None))
}

/// POSTs message `id` of `who`: the answer's status and its reason.
async fn post(http: &reqwest::Client, url: &str, who: &str, id: u64, msg: &str) -> (u16, String) {
    let query = ssechan::protocol::query::channel_query(who, Some(id));
    let body = ssechan::protocol::encode_message_body(msg);
    let r = http.post(format!("{url}?{query}")).body(body).send().await.expect("post");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// Every answer that was not a 200, with its reason.
fn refusals(answers: &[(u16, String)]) -> Vec<&(u16, String)> {
    answers.iter().filter(|(status, _)| *status != 200).collect()
}

// --- the stream's path: every store, every transport --------------------------

async fn resume_replays_from_last_event_id(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut s = t.open(&url, "r", None).await;
    let mut conn = server.accept().await.unwrap();
    for m in ["a", "b", "c"] {
        conn.send(m).unwrap();
    }
    assert_eq!(ids(&s.msgs(3).await), [1, 2, 3]);
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    conn.send("written while away").unwrap();
    let mut s = t.open(&url, "r", Some(1)).await;
    let got = s.msgs(3).await;
    assert_eq!(ids(&got), [2, 3, 4]);
    assert_eq!(got[2].data, "written while away");
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Resumed);
    // POSTs go on as before.
    assert_eq!(t.post(&url, "r", 0, "up").await, 200);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("up".into()));
}

async fn resume_without_last_event_id_continues_with_the_queue(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut s = t.open(&url, "q", None).await;
    let mut conn = server.accept().await.unwrap();
    conn.send("seen").unwrap();
    s.msgs(1).await;
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    conn.send("queued").unwrap();
    let mut s = t.open(&url, "q", None).await;
    assert_eq!(s.next_msg().await, Msg { id: 2, data: "queued".into() });
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Resumed);
}

async fn a_second_stream_takes_over(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut first = t.open(&url, "t", None).await;
    let mut conn = server.accept().await.unwrap();
    conn.send("one").unwrap();
    first.msgs(1).await;
    let mut second = t.open(&url, "t", Some(1)).await;
    assert!(first.until_end().await.is_empty(), "the old stream just ends");
    conn.send("two").unwrap();
    assert_eq!(second.next_msg().await, Msg { id: 2, data: "two".into() });
    // The application saw no suspension: its next event is the client's.
    assert_eq!(t.post(&url, "t", 0, "up").await, 200);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("up".into()));
}

async fn a_reader_that_stops_reading_is_disconnected(on: On) {
    let limits = Limits { outgoing_messages: 64, ..Limits::default() };
    let (mut server, t) = on.serve(ServerConfig { limits, ..keep_alive() }).await;
    let _s = t.open(&server.url(), "slow", None).await; // never read
    let mut conn = server.accept().await.unwrap();
    let big = "x".repeat(64 * 1024);
    let deadline = tokio::time::Instant::now() + WAIT;
    while conn.send(&big).is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "never disconnected");
        tokio::task::yield_now().await;
    }
    loop {
        match next_event(&mut conn).await {
            ConnectionEvent::Closed(CloseInfo { reason, undelivered }) => {
                assert_eq!(reason, CloseReason::SlowConsumer);
                assert!(undelivered > 0);
                break;
            }
            ConnectionEvent::Suspended | ConnectionEvent::Resumed => {}
            other => panic!("{other:?}"),
        }
    }
}

async fn heartbeat_on_idle_streams(on: On) {
    let config = ServerConfig { heartbeat: Some(Duration::from_millis(50)), ..keep_alive() };
    let (server, t) = on.serve(config).await;
    let mut s = t.open(&server.url(), "hb", None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.comments.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat");
        assert_eq!(s.next_event(Duration::from_millis(100)).await, None, "only comments");
        assert!(!s.ended);
    }
    assert_eq!(s.comments[0].trim(), "ping");
}

async fn peer_eof_is_noticed_without_writes(on: On) {
    // No heartbeat and nothing to send: only the read side can tell.
    let (mut server, t) = on.serve(ServerConfig { heartbeat: None, ..keep_alive() }).await;
    let s = t.open(&server.url(), "eof", None).await;
    let mut conn = server.accept().await.unwrap();
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
}

async fn control_close_ends_the_stream_and_the_connection(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut s = t.open(&url, "c", None).await;
    let mut conn = server.accept().await.unwrap();
    conn.send("last").unwrap();
    conn.close();
    assert_eq!(s.next_msg().await.data, "last");
    let rest = s.until_end().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!((rest[0].event.as_str(), rest[0].data.as_str()), ("control", "close"));
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::Closed, 0));
    assert!(conn.recv().await.is_none());
    assert_eq!(t.post(&url, "c", 0, "x").await, 404, "a closed id takes no POST");
}

async fn drop_stream_ends_without_control_and_resumes(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut s = t.open(&url, "d", None).await;
    let mut conn = server.accept().await.unwrap();
    conn.send("before").unwrap();
    s.msgs(1).await;
    conn.drop_stream();
    assert!(s.until_end().await.is_empty(), "no control event on a drop");
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    let mut s = t.open(&url, "d", Some(1)).await;
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Resumed);
    conn.send("after").unwrap();
    assert_eq!(s.next_msg().await, Msg { id: 2, data: "after".into() });
}

async fn a_resume_past_the_replay_is_a_gap_reported_to_the_application(on: On) {
    let limits = Limits { replay_events: 2, ..Limits::default() };
    let (mut server, t) = on.serve(ServerConfig { limits, ..keep_alive() }).await;
    let url = server.url();
    let mut s = t.open(&url, "g", None).await;
    let mut conn = server.accept().await.unwrap();
    for i in 0..6 {
        conn.send(&i.to_string()).unwrap();
    }
    s.msgs(6).await;
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    let mut s = t.open(&url, "g", Some(1)).await;
    assert_eq!(ids(&s.msgs(2).await), [5, 6]);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Resumed);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Gap { lost: 3 });
    conn.close();
    s.until_end().await;
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::Closed, 3));
}

// --- every store -----------------------------------------------------------------

/// More events than one attach carries (the Redis store pages a replay),
/// with the application sending while the replay is being read.
async fn a_replay_longer_than_a_page_comes_whole_and_in_order(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut s = t.open(&url, "long", None).await;
    let mut conn = server.accept().await.unwrap();
    let send = |conn: &Connection, ids: std::ops::RangeInclusive<u64>| {
        for i in ids {
            conn.send(&format!("e{i}")).unwrap();
        }
    };
    send(&conn, 1..=300);
    assert_eq!(ids(&s.msgs(300).await), (1..=300).collect::<Vec<_>>());
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    send(&conn, 301..=305);
    let mut s = t.open(&url, "long", Some(10)).await;
    send(&conn, 306..=325);
    let got = s.msgs(315).await;
    let want: Vec<Msg> = (11..=325).map(|id| Msg { id, data: format!("e{id}") }).collect();
    assert_eq!(got, want);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Resumed);
}

async fn last_event_id_on_a_new_connection_is_ignored(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let mut s = t.open(&server.url(), "fresh", Some(40)).await;
    let conn = server.accept().await.unwrap();
    conn.send("x").unwrap();
    assert_eq!(s.next_msg().await, Msg { id: 1, data: "x".into() });
}

/// Every message twice, shuffled, all in flight at once (1000 POSTs, as
/// many as package:sse lets a client have): each reaches the application
/// once, in messageId order.
async fn shuffled_and_duplicated_posts_arrive_in_order_once(on: On) {
    let config = ServerConfig { first_message_wait: FIRST_MESSAGE_WAIT, ..ServerConfig::default() };
    let (mut server, t) = on.serve(config).await;
    let url = server.url();
    let _s = t.open(&url, "order", None).await;
    let mut conn = server.accept().await.unwrap();
    let n = 500u64;
    let mut ids: Vec<u64> = (0..n).collect();
    fastrand::seed(7);
    fastrand::shuffle(&mut ids);
    let http = t.http();
    let posts = ids.iter().chain(ids.iter().rev()).map(|&i| {
        let (http, url) = (&http, &url);
        async move { post(http, url, "order", i, &format!("m{i}")).await }
    });
    let answers = join_all(posts).await;
    assert!(refusals(&answers).is_empty(), "{:?}", refusals(&answers));
    // Then one more: the next event is it, so no duplicate came between.
    assert_eq!(t.post(&url, "order", n, &format!("m{n}")).await, 200);
    for i in 0..=n {
        assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message(format!("m{i}")));
    }
}

/// Past the re-order window or its bytes: 429, and the refusal is that
/// POST's answer only (what was held stays, the window moves on).
async fn a_post_too_far_ahead_is_refused_with_429(on: On) {
    let limits = Limits { reorder_window: 10, reorder_bytes: 4096, ..Limits::default() };
    let (mut server, t) = on.serve(ServerConfig { limits, ..ServerConfig::default() }).await;
    let url = server.url();
    let _s = t.open(&url, "far", None).await;
    let mut conn = server.accept().await.unwrap();
    let http = t.http();
    let post = |id: u64, body: String| {
        let (http, url) = (http.clone(), url.clone());
        async move { post(&http, &url, "far", id, &body).await }
    };
    let (status, why) = post(11, "m11".into()).await;
    assert_eq!(status, 429, "{why}");
    assert!(why.contains("messageId 11 is more than 10 ahead of the next expected id 0"), "{why}");
    assert_eq!(post(10, "m10".into()).await.0, 200, "at the window's edge");
    let (status, why) = post(5, "y".repeat(5000)).await;
    assert_eq!(status, 429, "{why}");
    assert!(why.contains("re-order buffer full"), "{why}");
    for id in 0..10 {
        assert_eq!(post(id, format!("m{id}")).await.0, 200);
    }
    for id in 0..=10 {
        assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message(format!("m{id}")));
    }
    let (status, why) = post(22, "m22".into()).await;
    assert_eq!(status, 429, "{why}");
    assert!(why.contains("ahead of the next expected id 11"), "{why}");
    assert_eq!(post(21, "m21".into()).await.0, 200);
}

async fn keep_alive_expiry_reports_undelivered(on: On) {
    let config = ServerConfig { keep_alive: Some(Duration::from_millis(300)), ..keep_alive() };
    let (mut server, t) = on.serve(config).await;
    let url = server.url();
    let s = t.open(&url, "gone", None).await;
    let mut conn = server.accept().await.unwrap();
    let handle = conn.handle();
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    assert!(handle.is_live(), "suspended is still live");
    conn.send("lost 1").unwrap();
    conn.send("lost 2").unwrap();
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::KeepAliveExpired, 2));
    assert!(conn.recv().await.is_none());
    assert!(!handle.is_live());
    assert_eq!(handle.send("after"), Err(SendError::Closed));
    assert_eq!(t.post(&url, "gone", 0, "late").await, 404);
}

/// Messages the application sent before a client's `DELETE` are all
/// counted among the undelivered, even when the store applies sends apart
/// from the `DELETE` (Redis: the writer's batches, the close a call of
/// its own).
async fn a_delete_counts_every_message_sent_before_it(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let s = t.open(&url, "many", None).await;
    let mut conn = server.accept().await.unwrap();
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    // 6 MB: several of the Redis writer's batches (1 MiB each), one
    // after the other, so the `DELETE` comes while some are still to go.
    const SENT: u64 = 300;
    let text = "x".repeat(20_000);
    for _ in 0..SENT {
        conn.send(&text).unwrap();
    }
    let status = t.http().delete(channel_url(&url, "many")).send().await.expect("delete").status();
    assert_eq!(status.as_u16(), 204);
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::ClosedByClient, SENT));
}

/// `DELETE`: the client leaves for good, streaming or suspended.
async fn a_client_delete_closes_the_channel(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let delete = |who: &str| {
        let request = t.http().delete(channel_url(&url, who)).send();
        async move { request.await.expect("delete").status().as_u16() }
    };
    let mut s = t.open(&url, "bye", None).await;
    let mut conn = server.accept().await.unwrap();
    conn.send("seen").unwrap();
    s.msgs(1).await;
    assert_eq!(delete("bye").await, 204);
    assert!(s.until_end().await.is_empty(), "no control event: nobody listens");
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::ClosedByClient, 0));
    assert_eq!(t.post(&url, "bye", 0, "late").await, 404);
    assert_eq!(delete("bye").await, 404, "gone already");
    // Suspended, with a message the client will never get.
    let s = t.open(&url, "away", None).await;
    let mut conn = server.accept().await.unwrap();
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    conn.send("never read").unwrap();
    assert_eq!(delete("away").await, 204);
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::ClosedByClient, 1));
}

/// Shutdown closes every channel at once, keep-alive or not: streams get
/// the control close after what was queued, applications hear why.
async fn shutdown_closes_every_channel(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut a = t.open(&url, "a", None).await;
    let mut ca = server.accept().await.unwrap();
    let mut b = t.open(&url, "b", None).await;
    let mut cb = server.accept().await.unwrap();
    let c = t.open(&url, "c", None).await;
    let mut cc = server.accept().await.unwrap();
    drop(c);
    assert_eq!(next_event(&mut cc).await, ConnectionEvent::Suspended);
    cc.send("never read").unwrap();
    ca.send("last words").unwrap();
    server.shutdown().await;
    let kinds = |events: Vec<ssechan::protocol::Event>| -> Vec<(String, String)> {
        events.into_iter().map(|e| (e.event, e.data)).collect()
    };
    let control = ("control".to_owned(), "close".to_owned());
    let words = ("message".to_owned(), "\"last words\"".to_owned());
    assert_eq!(kinds(a.until_end().await), [words, control.clone()]);
    assert_eq!(kinds(b.until_end().await), [control]);
    assert_eq!(next_event(&mut ca).await, closed(CloseReason::Shutdown, 0));
    assert_eq!(next_event(&mut cb).await, closed(CloseReason::Shutdown, 0));
    assert_eq!(next_event(&mut cc).await, closed(CloseReason::Shutdown, 1));
}

async fn without_keep_alive_a_lost_stream_closes_at_once(on: On) {
    let (mut server, t) = on.serve(ServerConfig::default()).await;
    let s = t.open(&server.url(), "short", None).await;
    let mut conn = server.accept().await.unwrap();
    drop(s);
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::StreamEnded, 0));
}

/// package:sse never resets its counter: a client id that comes back
/// after its channel closed goes on where it was.
async fn a_returning_client_id_keeps_counting(on: On) {
    let (mut server, t) = on.serve(ServerConfig::default()).await;
    let url = server.url();
    let s = t.open(&url, "back", None).await;
    let mut conn = server.accept().await.unwrap();
    for i in 0..3 {
        assert_eq!(t.post(&url, "back", i, &format!("m{i}")).await, 200);
    }
    for i in 0..3 {
        assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message(format!("m{i}")));
    }
    drop(s);
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::StreamEnded, 0));
    let _s = t.open(&url, "back", None).await;
    let mut conn = server.accept().await.unwrap();
    assert_eq!(t.post(&url, "back", 3, "m3").await, 200);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("m3".into()));
}

/// Messages acknowledged out of order are not lost with the channel: the
/// client's next channel delivers them once the gap is filled.
async fn acknowledged_out_of_order_messages_survive_a_close(on: On) {
    let (mut server, t) = on.serve(ServerConfig::default()).await;
    let url = server.url();
    let s = t.open(&url, "ooo", None).await;
    let mut conn = server.accept().await.unwrap();
    for (id, m) in [(0, "m0"), (2, "m2"), (3, "m3")] {
        assert_eq!(t.post(&url, "ooo", id, m).await, 200);
    }
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("m0".into()));
    drop(s);
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::StreamEnded, 0));
    assert_eq!(t.post(&url, "ooo", 1, "m1").await, 404, "no channel now");
    let _s = t.open(&url, "ooo", None).await;
    let mut conn = server.accept().await.unwrap();
    assert_eq!(t.post(&url, "ooo", 1, "m1").await, 200);
    for m in ["m1", "m2", "m3"] {
        assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message(m.into()));
    }
}

/// A suspended channel whose queue passes its bound is closed as a slow
/// consumer, everything queued counted undelivered.
async fn a_suspended_channel_past_its_queue_bound_is_closed(on: On) {
    let limits = Limits { outgoing_messages: 10, ..Limits::default() };
    let (mut server, t) = on.serve(ServerConfig { limits, ..keep_alive() }).await;
    let s = t.open(&server.url(), "full", None).await;
    let mut conn = server.accept().await.unwrap();
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    for i in 0..10 {
        conn.send(&i.to_string()).unwrap();
    }
    // Refused at once where the queue is in this process; through Redis,
    // taken and refused by the store. Either way the channel closes.
    let eleventh = conn.send("one too many");
    match on.store {
        Store::Memory => assert_eq!(eleventh, Err(SendError::SlowConsumer)),
        Store::Redis => assert!(matches!(eleventh, Ok(()) | Err(SendError::SlowConsumer))),
    }
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::SlowConsumer, 11));
    assert_eq!(conn.send("after"), Err(SendError::Closed));
}

async fn a_broadcast_reaches_every_channel_once(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut a = t.open(&url, "a", None).await;
    let ca = server.accept().await.unwrap();
    let mut b = t.open(&url, "b", None).await;
    let cb = server.accept().await.unwrap();
    assert_eq!(server.handle().broadcast("all").await, 2);
    ca.send("after a").unwrap();
    cb.send("after b").unwrap();
    assert_eq!(
        a.msgs(2).await,
        [Msg { id: 1, data: "all".into() }, Msg { id: 2, data: "after a".into() }]
    );
    assert_eq!(
        b.msgs(2).await,
        [Msg { id: 1, data: "all".into() }, Msg { id: 2, data: "after b".into() }]
    );
}

/// Broadcasts and a channel's own events interleaved; one of two streams
/// is cut after reading part of them and resumes with `Last-Event-ID`
/// while more are broadcast: it gets exactly what it missed, in order (the
/// memory store keeps a broadcast once, in its log, for every channel).
async fn a_cut_stream_resumes_with_exactly_the_broadcasts_it_missed(on: On) {
    let (mut server, t) = on.serve(keep_alive()).await;
    let url = server.url();
    let mut a = t.open(&url, "a", None).await;
    let mut ca = server.accept().await.unwrap();
    let mut b = t.open(&url, "b", None).await;
    let _cb = server.accept().await.unwrap();
    let handle = server.handle();
    // What `a` is owed, in order, with its ids.
    let mut owed_a = Vec::new();
    let mut all = Vec::new();
    let mut broadcast = async |from: u64, to: u64, owed_a: &mut Vec<String>| {
        let batch: Vec<String> = (from..=to).map(|i| format!("all {i}")).collect();
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        assert_eq!(handle.broadcast_all(&refs).await, 2);
        owed_a.extend(batch.iter().cloned());
        all.extend(batch);
    };
    for round in 0..10u64 {
        broadcast(round * 30 + 1, round * 30 + 30, &mut owed_a).await;
        ca.send(&format!("own {round}")).unwrap();
        owed_a.push(format!("own {round}"));
    }
    let seen = a.msgs(100).await;
    assert_eq!(seen.iter().map(|m| m.data.as_str()).collect::<Vec<_>>(), owed_a[..100]);
    drop(a);
    assert_eq!(next_event(&mut ca).await, ConnectionEvent::Suspended);
    broadcast(301, 350, &mut owed_a).await;
    ca.send("own while away").unwrap();
    owed_a.push("own while away".into());
    let mut a = t.open(&url, "a", Some(100)).await;
    let rest = a.msgs(owed_a.len() - 100).await;
    let want: Vec<Msg> =
        owed_a[100..].iter().zip(101..).map(|(data, id)| Msg { id, data: data.clone() }).collect();
    assert_eq!(rest, want);
    assert_eq!(next_event(&mut ca).await, ConnectionEvent::Resumed);
    // Nothing was lost, so nothing is reported: the next event is the
    // client's POST.
    assert_eq!(t.post(&url, "a", 0, "up").await, 200);
    assert_eq!(next_event(&mut ca).await, ConnectionEvent::Message("up".into()));
    // The other stream, never cut, got every broadcast once.
    let got = b.msgs(all.len()).await;
    assert_eq!(got.iter().map(|m| m.data.as_str()).collect::<Vec<_>>(), all);
    assert_eq!(ids(&got), (1..=all.len() as u64).collect::<Vec<_>>());
}

/// A resume older than what is kept of the broadcasts is a gap, reported
/// to the application once, however often the client asks again.
async fn a_resume_past_the_kept_broadcasts_is_a_gap_reported_once(on: On) {
    let limits = Limits { replay_events: 2, ..Limits::default() };
    let (mut server, t) = on.serve(ServerConfig { limits, ..keep_alive() }).await;
    let url = server.url();
    let mut s = t.open(&url, "g", None).await;
    let mut conn = server.accept().await.unwrap();
    let msgs = ["0", "1", "2", "3", "4", "5"];
    assert_eq!(server.handle().broadcast_all(&msgs).await, 1);
    s.msgs(6).await;
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    let mut s = t.open(&url, "g", Some(1)).await;
    let got = s.msgs(2).await;
    assert_eq!(got, [Msg { id: 5, data: "4".into() }, Msg { id: 6, data: "5".into() }]);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Resumed);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Gap { lost: 3 });
    // Asked for again: the same two, no second report.
    let mut again = t.open(&url, "g", Some(1)).await;
    assert!(s.until_end().await.is_empty(), "taken over");
    assert_eq!(ids(&again.msgs(2).await), [5, 6]);
    conn.close();
    again.until_end().await;
    assert_eq!(next_event(&mut conn).await, closed(CloseReason::Closed, 3));
}

// --- the model: exact delivery under any interleaving ------------------------------

/// One step of a client and its application, as [`exact_delivery`] plays
/// them.
#[derive(Debug, Clone)]
enum Step {
    /// The application sends this many messages.
    Send(u8),
    /// The client POSTs its next `count` messageIds, shuffled (by `seed`),
    /// `twice` of them twice, all at once; they stay in flight while the
    /// steps after this one run.
    Post { count: u8, twice: u8, seed: u64 },
    /// The client reads up to this many of the events it is owed.
    Read(u8),
    /// The client loses its stream and comes back with Last-Event-ID: at
    /// once (a resume or a takeover, whichever the server sees), or once
    /// the server has noticed (a resume).
    ClientDrop { wait: bool },
    /// The application drops the stream; the client comes back when it
    /// sees the end.
    ServerDrop,
    /// A second stream with Last-Event-ID replaces the first.
    Takeover,
}

fn steps() -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    use proptest::prelude::*;
    let step = prop_oneof![
        3 => (1u8..8).prop_map(Step::Send),
        3 => (1u8..12, 0u8..4, any::<u64>())
            .prop_map(|(count, twice, seed)| Step::Post { count, twice, seed }),
        3 => (1u8..10).prop_map(Step::Read),
        1 => any::<bool>().prop_map(|wait| Step::ClientDrop { wait }),
        1 => Just(Step::ServerDrop),
        1 => Just(Step::Takeover),
    ];
    proptest::collection::vec(step, 1..30)
}

const WHO: &str = "model";

/// The client's side: what it has seen of the stream, and how many events
/// it found skipped (a gap, which the application must hear of).
struct ModelClient<'a> {
    link: &'a Link,
    url: String,
    stream: Option<util::Stream>,
    last: u64,
    skipped: u64,
}

impl ModelClient<'_> {
    /// Comes back with Last-Event-ID, as EventSource does.
    async fn reconnect(&mut self) {
        self.stream = Some(self.link.open(&self.url, WHO, Some(self.last)).await);
    }

    /// The next message event, reconnecting whenever the stream ends. Each
    /// is the one after the last seen, or further on (a gap).
    async fn next(&mut self) {
        loop {
            if self.stream.is_none() {
                self.reconnect().await;
            }
            let s = self.stream.as_mut().expect("a stream");
            let Some(e) = s.next_event(WAIT).await else {
                assert!(s.ended, "no event within {WAIT:?}; last seen {}", self.last);
                self.stream = None;
                continue;
            };
            assert_eq!(e.event, "message", "{e:?}");
            let id: u64 = e.last_event_id.parse().expect("an event id");
            let data = ssechan::protocol::decode_message_body(e.data.as_bytes()).expect("JSON");
            assert!(id > self.last, "event {id} again (last seen {})", self.last);
            assert_eq!(data, format!("e{id}"), "event {id}");
            self.skipped += id - self.last - 1;
            self.last = id;
            return;
        }
    }
}

/// The application's side: its events, checked as they come.
struct ModelApp {
    events: tokio::sync::mpsc::UnboundedReceiver<ConnectionEvent>,
    messages: u64,
    suspended: bool,
    gaps: u64,
    closed: Option<CloseInfo>,
    /// Every event but the messages, for failure messages.
    history: Vec<ConnectionEvent>,
}

impl ModelApp {
    async fn until(&mut self, done: impl Fn(&ModelApp) -> bool) {
        while !done(self) {
            let e = tokio::time::timeout(WAIT, self.events.recv()).await;
            let e = e.expect("an application event in time").expect("events until done");
            assert!(self.closed.is_none(), "{e:?} after the close");
            if !matches!(e, ConnectionEvent::Message(_)) {
                self.history.push(e.clone());
            }
            match e {
                ConnectionEvent::Message(m) => {
                    assert_eq!(m, format!("m{}", self.messages), "messages in order, once");
                    self.messages += 1;
                }
                ConnectionEvent::Suspended => {
                    let again = std::mem::replace(&mut self.suspended, true);
                    assert!(!again, "suspended twice: {:?}", self.history);
                }
                ConnectionEvent::Resumed => {
                    let was = std::mem::replace(&mut self.suspended, false);
                    assert!(was, "resumed, not suspended: {:?}", self.history);
                }
                ConnectionEvent::Gap { lost } => self.gaps += lost,
                ConnectionEvent::Closed(info) => self.closed = Some(info),
            }
        }
    }
}

/// Random interleavings of sends, POSTs, drops, resumes and takeovers
/// (with the default replay, or one of 4 events, where resumes find gaps):
/// every event reaches the client once and in order or is reported to the
/// application as a gap, every POST's message reaches the application once
/// and in order, and the close counts exactly what never arrived.
fn exact_delivery(store: Store) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let config =
        Config { cases, max_shrink_iters: 64, failure_persistence: None, ..Config::default() };
    let transport = prop_oneof![
        Just(Transport::Fresh),
        Just(Transport::KeptAlive),
        Just(Transport::H2c),
        Just(Transport::H2Tls),
    ];
    let case = (transport, any::<bool>(), steps());
    let result = TestRunner::new(config).run(&case, |(transport, short_replay, steps)| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(play(On { store, transport }, short_replay, steps));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn play(on: On, short_replay: bool, steps: Vec<Step>) {
    let mut limits = Limits::default();
    if short_replay {
        limits.replay_events = 4;
    }
    let config = ServerConfig { limits, first_message_wait: FIRST_MESSAGE_WAIT, ..keep_alive() };
    let (mut server, link) = on.serve(config).await;
    let url = server.url();
    let mut client =
        ModelClient { link: &link, url: url.clone(), stream: None, last: 0, skipped: 0 };
    client.stream = Some(link.open(&url, WHO, None).await);
    let mut conn = server.accept().await.expect("a connection");
    let handle = conn.handle();
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(e) = conn.recv().await {
            let _ = tx.send(e);
        }
    });
    let mut app = ModelApp {
        events,
        messages: 0,
        suspended: false,
        gaps: 0,
        closed: None,
        history: Vec::new(),
    };
    let (mut sent, mut posted) = (0u64, 0u64);
    let mut posts = Vec::new();
    let send = |sent: &mut u64, n: u8| {
        for _ in 0..n {
            *sent += 1;
            handle.send(&format!("e{sent}")).expect("send");
        }
    };
    for step in steps {
        match step {
            Step::Send(n) => send(&mut sent, n),
            Step::Post { count, twice, seed } => {
                let mut ids: Vec<u64> = (posted..posted + u64::from(count)).collect();
                ids.extend_from_within(..usize::from(twice.min(count)));
                fastrand::Rng::with_seed(seed).shuffle(&mut ids);
                posted += u64::from(count);
                let (http, url) = (link.http(), url.clone());
                posts.push(tokio::spawn(join_all(ids.into_iter().map(move |id| {
                    let (http, url) = (http.clone(), url.clone());
                    async move { (id, post(&http, &url, WHO, id, &format!("m{id}")).await) }
                }))));
            }
            Step::Read(n) => {
                for _ in 0..n {
                    if client.last >= sent {
                        break;
                    }
                    client.next().await;
                }
            }
            Step::ClientDrop { wait } => {
                client.stream = None;
                if wait {
                    let handle = server.handle();
                    let suspended = || (handle.counts().suspended == 1).then_some(());
                    util::eventually("the server to see the stream gone", suspended).await;
                }
                client.reconnect().await;
            }
            Step::ServerDrop => handle.drop_stream(),
            Step::Takeover => {
                let old = client.stream.take();
                client.reconnect().await;
                drop(old);
            }
        }
    }
    // Then everything arrives. The last event comes after every drop the
    // application asked for.
    for answers in join_all(posts).await {
        for (id, (status, why)) in answers.expect("POSTs") {
            assert_eq!(status, 200, "POST {id}: {why}");
        }
    }
    send(&mut sent, 1);
    while client.last < sent {
        client.next().await;
    }
    // And a POST after it, which reaches the application after the news
    // of the stream it came through (a resume).
    let (status, why) = post(&link.http(), &url, WHO, posted, &format!("m{posted}")).await;
    assert_eq!(status, 200, "POST {posted}: {why}");
    posted += 1;
    app.until(|app| app.messages == posted).await;
    assert!(!app.suspended, "the last stream is attached: {:?}", app.history);
    handle.close();
    let rest = client.stream.as_mut().expect("a stream").until_end().await;
    let rest: Vec<(&str, &str)> =
        rest.iter().map(|e| (e.event.as_str(), e.data.as_str())).collect();
    assert_eq!(rest, [("control", "close")]);
    app.until(|app| app.closed.is_some()).await;
    assert_eq!(app.gaps, client.skipped, "every event skipped is reported, once");
    let undelivered = client.skipped;
    assert_eq!(app.closed, Some(CloseInfo { reason: CloseReason::Closed, undelivered }));
    let after = tokio::time::timeout(WAIT, app.events.recv()).await.expect("the end in time");
    assert_eq!(after, None, "nothing after the close");
}

macro_rules! conformance {
    (
        every transport: [$($t:ident),* $(,)?],
        every store: [$($s:ident),* $(,)?],
        model: [$($m:ident),* $(,)?] $(,)?
    ) => {
        conformance!(@store memory, Memory, [$($t),*], [$($s),*], [$($m),*]);
        conformance!(@store redis, Redis, [$($t),*], [$($s),*], [$($m),*]);
    };
    (@store $name:ident, $store:ident, [$($t:ident),*], [$($s:ident),*], [$($m:ident),*]) => {
        mod $name {
            conformance!(@transport fresh, Fresh, $store, [$($t),*]);
            conformance!(@transport kept_alive, KeptAlive, $store, [$($t),*]);
            conformance!(@transport h2c, H2c, $store, [$($t),*]);
            conformance!(@transport h2_tls, H2Tls, $store, [$($t),*]);
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $s() {
                    let on = crate::On {
                        store: crate::Store::$store,
                        transport: crate::Transport::Fresh,
                    };
                    crate::$s(on).await
                }
            )*
            $(
                #[test]
                fn $m() {
                    crate::$m(crate::Store::$store)
                }
            )*
        }
    };
    (@transport $name:ident, $transport:ident, $store:ident, [$($t:ident),*]) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $t() {
                    let on = crate::On {
                        store: crate::Store::$store,
                        transport: crate::Transport::$transport,
                    };
                    crate::$t(on).await
                }
            )*
        }
    };
}

conformance! {
    every transport: [
        resume_replays_from_last_event_id,
        resume_without_last_event_id_continues_with_the_queue,
        a_second_stream_takes_over,
        a_reader_that_stops_reading_is_disconnected,
        heartbeat_on_idle_streams,
        peer_eof_is_noticed_without_writes,
        control_close_ends_the_stream_and_the_connection,
        drop_stream_ends_without_control_and_resumes,
        a_resume_past_the_replay_is_a_gap_reported_to_the_application,
    ],
    every store: [
        a_replay_longer_than_a_page_comes_whole_and_in_order,
        last_event_id_on_a_new_connection_is_ignored,
        shuffled_and_duplicated_posts_arrive_in_order_once,
        a_post_too_far_ahead_is_refused_with_429,
        keep_alive_expiry_reports_undelivered,
        a_client_delete_closes_the_channel,
        a_delete_counts_every_message_sent_before_it,
        shutdown_closes_every_channel,
        without_keep_alive_a_lost_stream_closes_at_once,
        a_returning_client_id_keeps_counting,
        acknowledged_out_of_order_messages_survive_a_close,
        a_suspended_channel_past_its_queue_bound_is_closed,
        a_broadcast_reaches_every_channel_once,
        a_cut_stream_resumes_with_exactly_the_broadcasts_it_missed,
        a_resume_past_the_kept_broadcasts_is_a_gap_reported_once,
    ],
    model: [exact_delivery],
}
