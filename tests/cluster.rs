//! Several `ssechan serve --redis` instances sharing channels (PROTOCOL.md
//! §8): the real binary, Debian's redis-server and haproxy, all started
//! here on free ports.

#[path = "support/cluster.rs"]
mod cluster;
mod util;

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster::{Haproxy, RedisServer, Routes, addr, free_port, instances, metrics_url, scrape};
use futures_util::future::join_all;
use serde_json::Value;
use ssechan::protocol::query::channel_query;
use tokio::sync::Notify;
use util::*;

/// Waits for the JSON stdout event `event` of client `who`, skipping others.
async fn event_of(s: &mut Serve, event: &str, who: &str) -> Value {
    loop {
        let v = s.out_json().await;
        if v["event"] == event && v["client"] == who {
            return v;
        }
    }
}

/// Stops an instance (SIGTERM) and returns everything it printed on
/// stdout and stderr from now on, once it has exited.
async fn stop(mut s: Serve) -> (Vec<String>, Vec<String>) {
    s.signal(libc::SIGTERM);
    let status = tokio::time::timeout(WAIT, s.child.wait()).await.expect("exits in time");
    assert!(status.expect("wait").success(), "serve exits 0 on SIGTERM");
    let mut out = Vec::new();
    while let Some(l) = s.stdout.recv().await {
        out.push(l);
    }
    let mut err = Vec::new();
    while let Some(l) = s.stderr.recv().await {
        err.push(l);
    }
    (out, err)
}

fn closes_of(lines: &[String], who: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "close" && v["client"] == who)
        .collect()
}

/// Sends a stdin command to an instance.
async fn say(s: &mut Serve, v: Value) {
    s.send_line(&v.to_string()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn posts_of_one_client_across_three_instances_arrive_in_order_once() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 3, &["--format", "json", "--reorder-window", "64"]).await;
    let _stream = open(&inst[0].url, "c", None).await;
    event_of(&mut inst[0], "connect", "c").await;
    // Every message twice, shuffled, all in flight at once, to A, B and C
    // in turn.
    let mut ids: Vec<u64> = (0..40).chain(0..40).collect();
    fastrand::seed(9);
    fastrand::shuffle(&mut ids);
    let urls: Vec<String> = inst.iter().map(|s| s.url.clone()).collect();
    let client = http();
    let answers = join_all(ids.iter().enumerate().map(|(i, id)| {
        let (client, url) = (client.clone(), urls[i % 3].clone());
        async move { post(&client, &url, "c", *id, &format!("m{id}")).await }
    }))
    .await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    // Past the window: refused, and the refusal is this POST's answer.
    let (status, why) = post_text(&urls[1], "c", 40 + 65, "too far").await;
    assert_eq!(status, 429, "{why}");
    assert!(why.contains("ahead of the next expected id 40"), "{why}");
    assert_eq!(post_text(&urls[2], "c", 40, "m40").await.0, 200);
    assert_eq!(post_text(&urls[0], "c", 41, "m41").await.0, 200);
    for id in 0..=41 {
        let v = event_of(&mut inst[0], "message", "c").await;
        assert_eq!(v["data"], format!("m{id}"), "message {id}");
    }
    // Nothing after them: no message was delivered twice.
    let home = inst.remove(0);
    let (out, _) = stop(home).await;
    let later: Vec<&String> = out.iter().filter(|l| l.contains("\"message\"")).collect();
    assert!(later.is_empty(), "delivered again: {later:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_dropped_on_one_instance_resumes_on_another_with_replay() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 3, &["--format", "json", "--keep-alive", "30s"]).await;
    let mut a = open(&inst[0].url, "c", None).await;
    event_of(&mut inst[0], "connect", "c").await;
    for i in 1..=3 {
        say(&mut inst[0], serde_json::json!({"client": "c", "data": format!("e{i}")})).await;
    }
    let seen = a.msgs(3).await;
    assert_eq!(seen.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2, 3]);
    say(&mut inst[0], serde_json::json!({"client": "c", "drop": true})).await;
    let tail = a.until_end().await;
    assert!(tail.iter().all(|e| e.event != "control"), "a drop is not a close: {tail:?}");
    event_of(&mut inst[0], "suspend", "c").await;
    // Written while no stream is open.
    for i in 4..=5 {
        say(&mut inst[0], serde_json::json!({"client": "c", "data": format!("e{i}")})).await;
    }
    // The client saw only up to 2 (event 3 was lost with the connection).
    let mut b = open(&inst[1].url, "c", Some(2)).await;
    event_of(&mut inst[0], "resume", "c").await;
    say(&mut inst[0], serde_json::json!({"client": "c", "data": "e6"})).await;
    let got = b.msgs(4).await;
    let got: Vec<(u64, &str)> = got.iter().map(|m| (m.id, m.data.as_str())).collect();
    assert_eq!(got, [(3, "e3"), (4, "e4"), (5, "e5"), (6, "e6")]);
}

/// With a COMMAND, a channel's process runs on its home only: a resume on
/// another instance starts none there. That instance's one process place
/// is taken, so starting one for the resume would be refused with 503.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_on_another_instance_starts_no_process_there() {
    let redis = RedisServer::start();
    let args = ["--keep-alive", "30s", "--max-processes", "1", "--", "cat"];
    let inst = instances(&redis, 2, &args).await;
    let _x = open(&inst[1].url, "x", None).await;
    let mut a = open(&inst[0].url, "c", None).await;
    assert_eq!(post_text(&inst[0].url, "c", 0, "one").await.0, 200);
    assert_eq!(a.next_msg().await.data, "one");
    drop(a);
    let mut b = open(&inst[1].url, "c", Some(1)).await;
    assert_eq!(post_text(&inst[1].url, "c", 1, "two").await.0, 200);
    assert_eq!(b.next_msg().await.data, "two");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_on_another_instance_takes_over() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 2, &["--format", "json"]).await;
    let mut a = open(&inst[0].url, "t", None).await;
    event_of(&mut inst[0], "connect", "t").await;
    say(&mut inst[0], serde_json::json!({"client": "t", "data": "one"})).await;
    assert_eq!(a.next_msg().await, Msg { id: 1, data: "one".into() });
    let mut b = open(&inst[1].url, "t", Some(1)).await;
    let tail = a.until_end().await;
    assert!(tail.is_empty(), "the old stream just ends: {tail:?}");
    say(&mut inst[0], serde_json::json!({"client": "t", "data": "two"})).await;
    assert_eq!(b.next_msg().await, Msg { id: 2, data: "two".into() });
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_expiry_and_control_close_are_decided_once() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 3, &["--format", "json", "--keep-alive", "1s"]).await;
    // "k": homed on A, its stream moved to B, then gone: one expiry.
    let a = open(&inst[0].url, "k", None).await;
    event_of(&mut inst[0], "connect", "k").await;
    let b = open(&inst[1].url, "k", None).await;
    drop(a);
    drop(b);
    let close = event_of(&mut inst[0], "close", "k").await;
    assert_eq!(close["reason"], "keep-alive expired");
    // "x": homed on A, streaming through C, closed by A's application.
    let first = open(&inst[0].url, "x", None).await;
    event_of(&mut inst[0], "connect", "x").await;
    let mut c = open(&inst[2].url, "x", None).await;
    drop(first);
    say(&mut inst[0], serde_json::json!({"client": "x", "data": "bye"})).await;
    say(&mut inst[0], serde_json::json!({"client": "x", "close": true})).await;
    let events = c.until_end().await;
    let kinds: Vec<(&str, &str)> =
        events.iter().map(|e| (e.event.as_str(), e.data.as_str())).collect();
    assert_eq!(kinds, [("message", "\"bye\""), ("control", "close")]);
    let close = event_of(&mut inst[0], "close", "x").await;
    assert_eq!(close["reason"], "closed by server");
    // Nobody else decided anything about them.
    let mut all = Vec::new();
    for s in inst.drain(..) {
        all.push(stop(s).await.0);
    }
    for who in ["k", "x"] {
        let closes: usize = all.iter().map(|out| closes_of(out, who).len()).sum();
        assert_eq!(closes, 0, "no second close of {who}: {all:?}");
    }
}

/// A client's DELETE on an instance that neither is its channel's home nor
/// holds its stream closes the channel once, for every instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_on_another_instance_closes_the_channel() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 3, &["--format", "json", "--keep-alive", "30s"]).await;
    let mut first = open(&inst[0].url, "del", None).await;
    event_of(&mut inst[0], "connect", "del").await;
    let mut held = open(&inst[1].url, "del", None).await;
    assert!(first.until_end().await.is_empty());
    say(&mut inst[0], serde_json::json!({"client": "del", "data": "hi"})).await;
    assert_eq!(held.next_msg().await, Msg { id: 1, data: "hi".into() });
    let delete = |url: &str| {
        let request = http().delete(format!("{url}?{}", channel_query("del", None))).send();
        async move { request.await.expect("delete").status().as_u16() }
    };
    assert_eq!(delete(&inst[2].url).await, 204);
    assert!(held.until_end().await.is_empty(), "no control event: nobody listens");
    let close = event_of(&mut inst[0], "close", "del").await;
    assert_eq!(close["reason"], "closed by client", "{close}");
    assert_eq!(post_text(&inst[1].url, "del", 0, "late").await.0, 404);
    assert_eq!(delete(&inst[0].url).await, 404, "closed already");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_from_one_stdin_reaches_every_instance_once() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 3, &["--format", "json"]).await;
    let mut streams = Vec::new();
    for (i, s) in inst.iter_mut().enumerate() {
        let who = format!("b{i}");
        streams.push(open(&s.url, &who, None).await);
        event_of(s, "connect", &who).await;
        // A message through the instance's inbound stream: its reader has
        // made its first read, from which it follows the broadcasts.
        assert_eq!(post_text(&s.url, &who, 0, "hi").await.0, 200);
        event_of(s, "message", &who).await;
    }
    say(&mut inst[1], serde_json::json!({"data": "to all"})).await;
    for st in &mut streams {
        assert_eq!(st.next_msg().await, Msg { id: 1, data: "to all".into() });
    }
    // Each home then writes its own client: no second copy came between.
    for (i, s) in inst.iter_mut().enumerate() {
        say(s, serde_json::json!({"client": format!("b{i}"), "data": "after"})).await;
    }
    for st in &mut streams {
        assert_eq!(st.next_msg().await, Msg { id: 2, data: "after".into() });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_instance_holding_a_stream_loses_nothing() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 3, &["--format", "json", "--keep-alive", "30s"]).await;
    let first = open(&inst[0].url, "h", None).await;
    event_of(&mut inst[0], "connect", "h").await;
    let mut held = open(&inst[1].url, "h", None).await;
    drop(first);
    for i in 1..=3 {
        say(&mut inst[0], serde_json::json!({"client": "h", "data": format!("e{i}")})).await;
    }
    // The client saw 1 and 2; 3 was on its way when B died.
    assert_eq!(held.msgs(2).await.len(), 2);
    inst[1].signal(libc::SIGKILL);
    for i in 4..=5 {
        say(&mut inst[0], serde_json::json!({"client": "h", "data": format!("e{i}")})).await;
    }
    let mut c = open(&inst[2].url, "h", Some(2)).await;
    let got: Vec<u64> = c.msgs(3).await.iter().map(|m| m.id).collect();
    assert_eq!(got, [3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_home_closes_its_channels_within_the_lease() {
    let redis = RedisServer::start();
    let mut inst =
        instances(&redis, 2, &["--format", "json", "--keep-alive", "30s", "--redis-lease", "2s"])
            .await;
    let first = open(&inst[0].url, "d", None).await;
    event_of(&mut inst[0], "connect", "d").await;
    let mut on_b = open(&inst[1].url, "d", None).await;
    drop(first);
    inst[0].signal(libc::SIGKILL);
    let killed = Instant::now();
    let events = on_b.until_end().await;
    let took = killed.elapsed();
    assert_eq!(
        events.last().map(|e| (e.event.as_str(), e.data.as_str())),
        Some(("control", "close"))
    );
    // The lease and its check (a tenth of it): about 2.2 s, later on a busy
    // machine; well before the keep-alive (30 s), which would close it too.
    assert!(took < Duration::from_secs(15), "closed after {took:?}");
    let (status, why) = post_text(&inst[1].url, "d", 0, "late").await;
    assert_eq!(status, 404, "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_under_load_answers_503_loses_nothing_and_recovers() {
    let redis = RedisServer::start();
    let inst = instances(&redis, 3, &["--echo", "--keep-alive", "30s"]).await;
    let urls: Vec<String> = inst.iter().map(|s| s.url.clone()).collect();
    const CLIENTS: usize = 6;
    const MESSAGES: u64 = 80;
    let mut streams = Vec::new();
    for i in 0..CLIENTS {
        streams.push(open(&urls[i % 3], &format!("o{i}"), Some(0)).await);
    }
    // Progress the outage waits on: messages acknowledged, and which
    // clients have been refused.
    let acked = AtomicUsize::new(0);
    let refused_clients = AtomicUsize::new(0);
    let progress = Notify::new();
    let senders = (0..CLIENTS).map(|i| {
        let (urls, acked, refused_clients, progress) = (&urls, &acked, &refused_clients, &progress);
        async move {
            let client = http();
            let (mut refused, mut slowest) = (0u32, Duration::ZERO);
            for id in 0..MESSAGES {
                let mut attempt = 0;
                loop {
                    let url = &urls[(i + id as usize + attempt) % 3];
                    let t = Instant::now();
                    let status = post(&client, url, &format!("o{i}"), id, &format!("m{id}")).await;
                    if status == 200 {
                        acked.fetch_add(1, Ordering::SeqCst);
                        progress.notify_waiters();
                        break;
                    }
                    assert_eq!(status, 503, "only 503 while the store is away");
                    refused += 1;
                    slowest = slowest.max(t.elapsed());
                    refused_clients.fetch_or(1 << i, Ordering::SeqCst);
                    progress.notify_waiters();
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await; // a client's backoff
                }
                tokio::time::sleep(Duration::from_millis(25)).await; // a client's pace
            }
            (refused, slowest)
        }
    });
    // The store goes away in the middle of the load (every client has
    // messages left), and comes back once every client has been refused,
    // after at least two of the instances' lease refreshes, and after
    // longer than a refusal may take (below): a POST held until the store
    // is back would show.
    let outage = async {
        let enough = || acked.load(Ordering::SeqCst) >= CLIENTS * 10;
        until(&progress, "ten messages of each client acknowledged", enough).await;
        redis.pause();
        let paused = Instant::now();
        let all = || refused_clients.load(Ordering::SeqCst) == (1 << CLIENTS) - 1;
        until(&progress, "every client refused while the store is away", all).await;
        tokio::time::sleep_until((paused + Duration::from_secs(5)).into()).await;
        redis.resume();
    };
    let (results, ()) = tokio::join!(join_all(senders), outage);
    let slowest = results.iter().map(|r| r.1).max().unwrap_or_default();
    // The store's timeout (750 ms), and a busy machine's slack.
    assert!(slowest < Duration::from_secs(3), "a refusal took {slowest:?}");
    // Every acknowledged message comes back once, in order, on the stream
    // that stayed open through the outage.
    for (i, st) in streams.iter_mut().enumerate() {
        let got = st.msgs(MESSAGES as usize).await;
        let data: Vec<String> = got.iter().map(|m| m.data.clone()).collect();
        let want: Vec<String> = (0..MESSAGES).map(|id| format!("m{id}")).collect();
        assert_eq!(data, want, "client o{i}");
        assert!(!st.ended, "client o{i}'s stream stayed open");
    }
}

/// Waits until `done`, checked whenever `progress` is notified.
async fn until(progress: &Notify, what: &str, done: impl Fn() -> bool) {
    let wait = async {
        loop {
            let next = progress.notified();
            if done() {
                return;
            }
            next.await;
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap_or_else(|_| panic!("not in time: {what}"));
}

/// During an outage, what an instance owes the store (attaches to undo,
/// streams that ended) waits in a bounded number of retries: past
/// --max-connections it is dropped with a warning, and the instance still
/// recovers when Redis is back.
#[tokio::test(flavor = "multi_thread")]
async fn what_is_owed_to_an_absent_store_is_bounded() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 1, &["--echo", "--max-connections", "4"]).await;
    let mut s = inst.remove(0);
    // Joined: a stream opens.
    let _joined = eventually_open(&s.url, "joined").await;
    redis.pause();
    let client = http();
    for i in 0..5 {
        let url = format!("{}?{}", s.url, channel_query(&format!("away{i}"), None));
        let r = client.get(url).header("accept", "text/event-stream").send().await.expect("get");
        assert_eq!(r.status(), 503, "GET {i} while Redis is away");
    }
    s.err_line_with("requests already wait for the store; this one is dropped").await;
    redis.resume();
    let mut back = eventually_open(&s.url, "back").await;
    assert_eq!(post(&client, &s.url, "back", 0, "again").await, 200);
    assert_eq!(back.next_msg().await.data, "again");
}

/// Opens a stream, retrying while the instance answers 503 (reconnecting).
async fn eventually_open(url: &str, who: &str) -> Stream {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = http()
            .get(format!("{url}?{}", channel_query(who, None)))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("get");
        if r.status() == 200 {
            return Stream::new(r);
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "the instance did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// bench's clients through haproxy, their streams cut every 200 ms or so:
/// nothing lost, duplicated or out of order. haproxy sends new channels to
/// A and reconnects (with `Last-Event-ID`) to B and C, so that a reconnect
/// reaches another instance than its channel's home by construction; each
/// is served as a resume or a takeover, whichever the instance sees first
/// (the old stream's end or the new request), both exact.
#[tokio::test(flavor = "multi_thread")]
async fn bench_through_haproxy_with_drops_loses_nothing() {
    let redis = RedisServer::start();
    let args = ["--echo", "--keep-alive", "30s", "--metrics", "127.0.0.1:0"];
    let mut inst = instances(&redis, 3, &args).await;
    let addrs: Vec<_> = inst.iter().map(addr).collect();
    let routes = Routes { new_streams: &addrs[..1], reconnects: &addrs[1..], rest: &addrs };
    let haproxy = Haproxy::start_routed(&routes);
    let mut metrics = Vec::new();
    for s in &mut inst {
        metrics.push(metrics_url(s).await);
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["bench", &haproxy.url(), "--clients", "100", "--rate", "1000"])
        .args(["--duration", "6s", "--drop-every", "200ms", "--drain", "20s", "--json", "-"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("bench in time");
    let out = out.expect("run bench");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    for k in ["lost", "duplicated", "out_of_order", "corrupted", "failed_resumes"] {
        assert_eq!(report[k], 0, "{k}: {report}");
    }
    assert_eq!(report["passed"], true, "{report}");
    let drops = report["drops"].as_u64().unwrap_or(0);
    assert!(drops > 500, "{report}");
    // What each instance did: A made every channel; B and C served the
    // reconnects, most of them (a stream cut before its first event
    // comes back without Last-Event-ID, to A).
    let mut opened = Vec::new();
    let mut reconnects = Vec::new();
    for url in &metrics {
        let m = scrape(url).await;
        opened.push(m("ssechan_channels_opened_total"));
        reconnects.push(m("ssechan_resumes_total") + m("ssechan_takeovers_total"));
    }
    assert_eq!(opened, [100.0, 0.0, 0.0], "channels made per instance");
    let elsewhere = reconnects[1] + reconnects[2];
    assert!(
        elsewhere * 2.0 > drops as f64,
        "reconnects per instance {reconnects:?}, {drops} drops"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_redis_at_start_is_one_clear_error() {
    let port = free_port();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &format!("redis://127.0.0.1:{port}/0"),
        ])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, out).await.expect("exits in time").expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0]
            .starts_with(&format!("ssechan: cannot reach Redis at redis://127.0.0.1:{port}/0: ")),
        "{err}"
    );
    assert!(lines[0].contains("--redis-wait"), "{err}");
    // Not a Redis URL: a usage error.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", "http://127.0.0.1/"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_wait_waits_for_redis_to_come_up() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let port = free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "-v", "--listen", "127.0.0.1:0", "--redis-wait", "30s"])
        .args(["--redis", &format!("redis://127.0.0.1:{port}/0")])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut wait_for = async |needle: &str| loop {
        let line = tokio::time::timeout(WAIT, err.next_line()).await.expect("a line in time");
        if line.expect("read").expect("still running").contains(needle) {
            return;
        }
    };
    wait_for("is not reachable yet").await;
    let _redis = RedisServer::start_on(port);
    wait_for("ssechan: listening on").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_url_may_come_from_the_environment() {
    let redis = RedisServer::start();
    let mut s = Serve::spawn_env(&["--format", "json"], &[("SSECHAN_REDIS", &redis.url())]).await;
    let _stream = open(&s.url, "env", None).await;
    event_of(&mut s, "connect", "env").await;
    assert!(redis.command(&["SISMEMBER", "ssechan:live", "env"]).starts_with(":1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_the_channels_of_the_instance_and_its_round_trips_to_redis() {
    let redis = RedisServer::start();
    let mut s =
        Serve::spawn(&["--redis", &redis.url(), "--echo", "--metrics", "127.0.0.1:0"]).await;
    let metrics = metrics_url(&mut s).await;
    let mut stream = open(&s.url, "m", None).await;
    for i in 0..3 {
        assert_eq!(post(&http(), &s.url, "m", i, "hi").await, 200);
    }
    stream.msgs(3).await;
    let m = scrape(&metrics).await;
    assert_eq!(m("ssechan_channels"), 1.0);
    assert_eq!(m("ssechan_streams_open"), 1.0);
    assert_eq!(m("ssechan_messages_in_total"), 3.0);
    assert_eq!(m("ssechan_events_written_total"), 3.0);
    let trips = m("ssechan_redis_round_trip_seconds_count");
    assert!(trips >= 4.0, "an attach, three POSTs and the sends: {trips}");
    assert!(m("ssechan_redis_round_trip_seconds_sum") > 0.0);
    assert_eq!(m("ssechan_redis_errors_total"), 0.0);
    // Redis away: a POST is refused, and the failed round trip counted.
    // The call carrying the POST gives up on its own clock, a moment after
    // the POST's answer: Redis stays away until it has, or it could still
    // answer that call in time.
    redis.pause();
    let (status, why) = post_text(&s.url, "m", 3, "late").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let m = loop {
        let m = scrape(&metrics).await;
        if m("ssechan_redis_errors_total") >= 1.0 || tokio::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    redis.resume();
    assert_eq!(status, 503, "{why}");
    assert!(why.starts_with("store unavailable: Redis did not answer"), "{why}");
    assert!(m("ssechan_redis_errors_total") >= 1.0, "the failed round trip is counted");
    assert!(m("ssechan_redis_round_trip_seconds_count") > trips);
    assert_eq!(m("ssechan_refusals_total{status=\"503\"}"), 1.0);
}

/// An instance that stops (SIGTERM) closes every channel it had, and
/// leaves the store: nothing of it is left for the others to reap.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_stops_leaves_nothing_behind() {
    let redis = RedisServer::start();
    // A lease shorter than the wait below, for when leaving fails.
    let mut inst = instances(&redis, 2, &["--echo", "--redis-lease", "5s"]).await;
    let a = inst.remove(0);
    // More channels than one batch of the leave script (256), for what
    // the closes leave to it.
    let ids: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    let streams = join_all(ids.iter().map(|id| open(&a.url, id, None))).await;
    assert!(redis.command(&["SCARD", "ssechan:live"]).starts_with(":300"));
    let (_, err) = stop(a).await;
    drop(streams);
    let clean = || {
        let live = redis.command(&["SCARD", "ssechan:live"]);
        let inst = redis.command(&["HLEN", "ssechan:inst"]);
        (live == ":0\r\n" && inst == ":1\r\n").then_some(())
    };
    if err.iter().any(|l| l.contains("could not leave the store cleanly")) {
        // Redis did not answer in time (a busy machine): what is left goes
        // with the lease, taken by the other instance.
        eventually("the other instance to close what the leaver left", clean).await;
    } else {
        assert_eq!(clean(), Some(()), "nothing left but the other instance");
    }
}

/// A resume on another instance from before what the store still keeps
/// (`--replay`): the events it has, and a gap told to the home's
/// application, as on one instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_resume_older_than_the_kept_events_is_a_gap_across_instances() {
    let redis = RedisServer::start();
    let args = ["--format", "json", "--keep-alive", "30s", "--replay", "2"];
    let mut inst = instances(&redis, 2, &args).await;
    let mut s = open(&inst[0].url, "g", None).await;
    event_of(&mut inst[0], "connect", "g").await;
    for i in 1..=6 {
        say(&mut inst[0], serde_json::json!({"client": "g", "data": format!("m{i}")})).await;
    }
    assert_eq!(s.msgs(6).await.len(), 6);
    // The store keeps what no stream has taken yet: wait until the
    // instance has said the stream took them, and the store trimmed.
    let kept = || {
        let keys = redis.command(&["KEYS", "ssechan:o:*"]);
        let key = keys.lines().find(|l| l.starts_with("ssechan:o:"))?.to_owned();
        let len = redis.command(&["XLEN", &key]);
        (len.trim() == ":2").then_some(())
    };
    eventually("the store keeps 2 events", kept).await;
    drop(s);
    event_of(&mut inst[0], "suspend", "g").await;
    let mut b = open(&inst[1].url, "g", Some(1)).await;
    assert_eq!(b.msgs(2).await.iter().map(|m| m.id).collect::<Vec<_>>(), [5, 6]);
    let gap = event_of(&mut inst[0], "gap", "g").await;
    assert_eq!(gap["lost"], 3, "{gap}");
}

/// Many clients' messages in one script call, the shape an instance's
/// batching gives concurrent POSTs, reach their home as one packed inbound
/// entry: every message once, each client's in order. The call is made here,
/// straight to Redis, so that it carries them all by construction.
#[tokio::test(flavor = "multi_thread")]
async fn many_clients_messages_in_one_script_call_arrive_once_in_order() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 1, &["--format", "json", "--keep-alive", "30s"]).await;
    let url = inst[0].url.clone();
    let clients: Vec<String> = (0..20).map(|k| format!("c{k}")).collect();
    let mut streams = Vec::new();
    for c in &clients {
        streams.push(open(&url, c, None).await);
        event_of(&mut inst[0], "connect", c).await;
    }
    let (library, me) = (library(&redis), inst_name(&redis));
    let mut args = vec!["FCALL", &library, "0", "ssechan:", "batch", &me, "10000", "0", BOUNDS];
    let msgs: Vec<(String, String, String)> = (0..3)
        .flat_map(|id| {
            clients.iter().map(move |c| (c.clone(), id.to_string(), format!("{c}-m{id}")))
        })
        .collect();
    for (c, id, m) in &msgs {
        args.extend(["post", c, id, m]);
    }
    // One message again, in the same call: a duplicate.
    args.extend(["post", &msgs[0].0, &msgs[0].1, &msgs[0].2]);
    let reply = redis.command(&args);
    assert_eq!(reply.matches("ok").count(), msgs.len(), "{reply}");
    assert_eq!(reply.matches("dup").count(), 1, "{reply}");
    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut n = 0;
    while n < msgs.len() {
        let v = inst[0].out_json().await;
        if v["event"] == "message" {
            n += 1;
            let who = v["client"].as_str().expect("client").to_owned();
            got.entry(who).or_default().push(v["data"].as_str().expect("data").to_owned());
        }
    }
    for c in &clients {
        let want: Vec<String> = (0..3).map(|id| format!("{c}-m{id}")).collect();
        assert_eq!(got.get(c), Some(&want), "{c}: every message once, in order");
    }
    let (out, _) = stop(inst.remove(0)).await;
    let again: Vec<&String> = out.iter().filter(|l| l.contains("\"message\"")).collect();
    assert!(again.is_empty(), "delivered again: {again:?}");
}

/// Notices go packed only to instances that read them so (each says it with
/// its lease): to one of an older version sharing the Redis, here a home
/// that never said so, a message goes field by field, as that version
/// reads it.
#[tokio::test(flavor = "multi_thread")]
async fn notices_to_an_instance_that_does_not_read_them_packed_go_field_by_field() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 1, &["--format", "json", "--keep-alive", "30s"]).await;
    let _stream = open(&inst[0].url, "c", None).await;
    event_of(&mut inst[0], "connect", "c").await;
    let library = library(&redis);
    // The channel's home becomes an instance that is alive and has never
    // said it reads packed notices.
    redis.command(&["HSET", "ssechan:inst", "older", "99999999999999"]);
    redis.command(&["HSET", "ssechan:m:c", "home", "older"]);
    let reply = redis.command(&[
        "FCALL", &library, "0", "ssechan:", "batch", "test", "10000", "0", BOUNDS, "post", "c",
        "0", "hello",
    ]);
    assert!(reply.contains("ok"), "{reply}");
    let entries = redis.command(&["XRANGE", "ssechan:i:older", "-", "+"]);
    let fields: Vec<&str> = entries.split("\r\n").filter(|l| !l.starts_with(['*', '$'])).collect();
    assert_eq!(
        fields[1..],
        ["t", "m", "c", "c", "s", "1", "n", "0", "d", "hello", ""],
        "{entries}"
    );
    // The instance itself reads them packed.
    let packed = redis.command(&["SISMEMBER", "ssechan:pk", &inst_name(&redis)]);
    assert_eq!(packed, ":1\r\n");
}

/// A send to a stream held by the writer's own instance (one instance, or
/// sticky routing) comes back in the writer's reply, not as a notice through
/// the inbound stream: the call is made here as that instance's writer, so
/// the reply is the test's to read. The event is in the event stream all
/// the same (what a resume anywhere replays), and the same batch sent again
/// (its reply lost) tells the stream how far the store has events.
#[tokio::test(flavor = "multi_thread")]
async fn a_send_to_a_stream_held_by_the_writer_comes_back_in_its_reply() {
    let redis = RedisServer::start();
    let mut inst = instances(&redis, 1, &["--format", "json", "--keep-alive", "30s"]).await;
    let _stream = open(&inst[0].url, "c", None).await;
    event_of(&mut inst[0], "connect", "c").await;
    let (library, me) = (library(&redis), inst_name(&redis));
    let tok = redis.command(&["HGET", "ssechan:m:c", "tok"]);
    let tok = tok.lines().nth(1).expect("the stream's token");
    assert!(tok.starts_with(&me), "the stream is held by {me}: {tok}");
    let data = "data: e1\n\n";
    let ops = ["FCALL", &library, "0", "ssechan:", "ops", &me, "10000", "0", BOUNDS];
    let call = [&ops[..], &["S", "c", "1", "1000", data]].concat();
    let reply = redis.command(&call);
    let cum = data.len();
    assert_eq!(
        reply,
        format!("*2\r\n*0\r\n*4\r\n:0\r\n${}\r\n{tok}\r\n:1\r\n:{cum}\r\n", tok.len()),
        "the send's event id and bytes, for the stream held by the caller"
    );
    let inbound = format!("ssechan:i:{me}");
    assert_eq!(redis.command(&["EXISTS", &inbound]), ":0\r\n", "no notice was written");
    let stored = redis.command(&["XRANGE", "ssechan:o:1", "-", "+"]);
    assert!(stored.contains("0-1") && stored.contains(data), "in the event stream: {stored}");
    // Sent again, as after a lost reply: skipped, and the stream hears how
    // far the store has events.
    let again = redis.command(&call);
    assert_eq!(again, format!("*2\r\n*0\r\n*4\r\n:-1\r\n${}\r\n{tok}\r\n:1\r\n:-1\r\n", tok.len()));
    assert_eq!(redis.command(&["HGET", "ssechan:m:c", "ne"]), "$1\r\n2\r\n", "applied once");
}

/// The script library as the instances loaded it.
fn library(redis: &RedisServer) -> String {
    let list = redis.command(&["FUNCTION", "LIST"]);
    let at = list.find("ssechan_").expect("the library is loaded");
    list[at..at + "ssechan_".len() + 16].to_owned()
}

/// Bounds for a script call made by a test: window, bytes and counts far
/// above what it holds (in the order channels.lua's `bounds` reads them).
const BOUNDS: &str =
    "4096,16777216,4096,16777216,16384,262144,128,65536,16777216,268435456,67108864,1000";

/// The one instance's name among the instances.
fn inst_name(redis: &RedisServer) -> String {
    let keys = redis.command(&["HKEYS", "ssechan:inst"]);
    let names: Vec<&str> =
        keys.split("\r\n").filter(|l| !l.starts_with(['*', '$']) && *l != "older").collect();
    names.first().expect("an instance").to_string()
}
