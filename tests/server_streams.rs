//! Every stream behaviour on every path a stream can take: a fresh
//! connection (ssechan's own writer), a kept-alive HTTP/1.1 connection, h2c
//! and h2 over TLS (hyper). One stream policy means the same results on all.

mod util;

use std::time::Duration;

use ssechan::server::{CloseInfo, CloseReason, Connection, ConnectionEvent, Limits, ServerConfig};
use util::{Transport, WAIT};

fn keep_alive() -> ServerConfig {
    ServerConfig { keep_alive: Some(Duration::from_secs(60)), ..ServerConfig::default() }
}

async fn next_event(conn: &mut Connection) -> ConnectionEvent {
    tokio::time::timeout(WAIT, conn.recv()).await.expect("event in time").expect("open")
}

fn ids(msgs: &[util::Msg]) -> Vec<u64> {
    msgs.iter().map(|m| m.id).collect()
}

async fn resume_replays_from_last_event_id(t: Transport) {
    let (mut server, t) = t.serve(keep_alive()).await;
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

async fn resume_without_last_event_id_continues_with_the_queue(t: Transport) {
    let (mut server, t) = t.serve(keep_alive()).await;
    let url = server.url();
    let mut s = t.open(&url, "q", None).await;
    let mut conn = server.accept().await.unwrap();
    conn.send("seen").unwrap();
    s.msgs(1).await;
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    conn.send("queued").unwrap();
    let mut s = t.open(&url, "q", None).await;
    let m = s.next_msg().await;
    assert_eq!((m.id, m.data.as_str()), (2, "queued"));
}

async fn a_second_stream_takes_over(t: Transport) {
    let (mut server, t) = t.serve(keep_alive()).await;
    let url = server.url();
    let mut first = t.open(&url, "t", None).await;
    let mut conn = server.accept().await.unwrap();
    conn.send("one").unwrap();
    first.msgs(1).await;
    let mut second = t.open(&url, "t", Some(1)).await;
    first.until_end().await;
    conn.send("two").unwrap();
    let m = second.next_msg().await;
    assert_eq!((m.id, m.data.as_str()), (2, "two"));
    // The application saw no suspension: the connection went on.
    assert!(tokio::time::timeout(Duration::from_millis(50), conn.recv()).await.is_err());
}

async fn a_reader_that_stops_reading_is_disconnected(t: Transport) {
    let limits = Limits { outgoing_messages: 64, ..Limits::default() };
    let (mut server, t) = t.serve(ServerConfig { limits, ..keep_alive() }).await;
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

async fn heartbeat_on_idle_streams(t: Transport) {
    let config = ServerConfig { heartbeat: Some(Duration::from_millis(50)), ..keep_alive() };
    let (server, t) = t.serve(config).await;
    let mut s = t.open(&server.url(), "hb", None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.comments.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat");
        let _ = s.next_event(Duration::from_millis(100)).await;
    }
    assert_eq!(s.comments[0].trim(), "ping");
}

async fn peer_eof_is_noticed_without_writes(t: Transport) {
    // No heartbeat and nothing to send: only the read side can tell.
    let (mut server, t) = t.serve(ServerConfig { heartbeat: None, ..keep_alive() }).await;
    let s = t.open(&server.url(), "eof", None).await;
    let mut conn = server.accept().await.unwrap();
    drop(s);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
}

async fn control_close_ends_the_stream_and_the_connection(t: Transport) {
    let (mut server, t) = t.serve(keep_alive()).await;
    let mut s = t.open(&server.url(), "c", None).await;
    let mut conn = server.accept().await.unwrap();
    conn.send("last").unwrap();
    conn.close();
    assert_eq!(s.next_msg().await.data, "last");
    let rest = s.until_end().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!((rest[0].event.as_str(), rest[0].data.as_str()), ("control", "close"));
    assert_eq!(
        next_event(&mut conn).await,
        ConnectionEvent::Closed(CloseInfo { reason: CloseReason::Closed, undelivered: 0 })
    );
    let r = t.http().post(format!("{}?sseClientId=c", server.url())).body("\"x\"").send();
    assert_eq!(r.await.unwrap().status(), 404, "a closed id takes no POST");
}

async fn drop_stream_ends_without_control_and_resumes(t: Transport) {
    let (mut server, t) = t.serve(keep_alive()).await;
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
    assert_eq!(s.next_msg().await.data, "after");
}

async fn a_resume_past_the_replay_is_a_gap_reported_to_the_application(t: Transport) {
    let limits = Limits { replay_events: 2, ..Limits::default() };
    let (mut server, t) = t.serve(ServerConfig { limits, ..keep_alive() }).await;
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
    assert_eq!(
        next_event(&mut conn).await,
        ConnectionEvent::Closed(CloseInfo { reason: CloseReason::Closed, undelivered: 3 })
    );
}

macro_rules! on_every_transport {
    ($($test:ident),* $(,)?) => {
        mod fresh {
            $(#[tokio::test] async fn $test() { super::$test(super::Transport::Fresh).await })*
        }
        mod kept_alive {
            $(#[tokio::test] async fn $test() { super::$test(super::Transport::KeptAlive).await })*
        }
        mod h2c {
            $(#[tokio::test] async fn $test() { super::$test(super::Transport::H2c).await })*
        }
        mod h2_tls {
            $(#[tokio::test] async fn $test() { super::$test(super::Transport::H2Tls).await })*
        }
    };
}

on_every_transport!(
    resume_replays_from_last_event_id,
    resume_without_last_event_id_continues_with_the_queue,
    a_second_stream_takes_over,
    a_reader_that_stops_reading_is_disconnected,
    heartbeat_on_idle_streams,
    peer_eof_is_noticed_without_writes,
    control_close_ends_the_stream_and_the_connection,
    drop_stream_ends_without_control_and_resumes,
    a_resume_past_the_replay_is_a_gap_reported_to_the_application,
);
