//! The server library on loopback, driven over real HTTP (PROTOCOL.md §1–6).
//!
//! Tests about time (a wait that must or must not run out) run on tokio's
//! paused clock: it moves only when every task waits and no socket has
//! anything to read, so what the server does with the bytes it was sent
//! happens before any deadline, however busy the machine.

mod util;

use std::time::Duration;

use ssechan::protocol::query::channel_query;
use ssechan::server::{ConnectionEvent, Limits, ServerConfig};
use util::*;

fn keep_alive(period_ms: u64) -> ServerConfig {
    ServerConfig { keep_alive: Some(Duration::from_millis(period_ms)), ..ServerConfig::default() }
}

async fn next_event(conn: &mut ssechan::server::Connection) -> ConnectionEvent {
    tokio::time::timeout(WAIT, conn.recv()).await.expect("event in time").expect("not closed")
}

#[tokio::test]
async fn stream_headers_cors_and_retry() {
    let mut server = server(ServerConfig::default()).await;
    let url = server.url();
    let r = http()
        .get(format!("{url}?sseClientId=a"))
        .header("accept", "text/html, text/event-stream;q=0.9")
        .header("origin", "http://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["access-control-allow-origin"], "http://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let conn = server.accept().await.unwrap();
    assert_eq!(conn.id(), "a");
    conn.send("hi").unwrap();
    let mut s = Stream::new(r);
    assert_eq!(s.next_msg().await, Msg { id: 1, data: "hi".into() });
    assert_eq!(s.retry, Some(1000));
    assert!(s.raw.starts_with(b"retry: 1000\n\nid: 1\ndata: \"hi\"\n\n"), "{:?}", s.raw);
}

#[tokio::test]
async fn host_is_the_origin_when_origin_is_missing() {
    let server = server(ServerConfig::default()).await;
    let (status, _) = post_raw(&server.url(), "sseClientId=nobody", "\"x\"").await;
    assert_eq!(status, 404);
    let r =
        http().post(format!("{}?sseClientId=n", server.url())).body("\"x\"").send().await.unwrap();
    let host = server.local_addr().to_string();
    assert_eq!(r.headers()["access-control-allow-origin"], host.as_str());
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
}

#[tokio::test]
async fn origin_allow_list() {
    let config = ServerConfig {
        origins: ssechan::server::OriginPolicy::List(vec!["http://good.example".into()]),
        ..ServerConfig::default()
    };
    let server = server(config).await;
    let url = server.url();
    let get = |origin: &'static str| {
        http().get(format!("{url}?sseClientId=a")).header("origin", origin).send()
    };
    let bad = get("http://evil.example").await.unwrap();
    assert_eq!(bad.status(), 403);
    assert!(bad.headers().get("access-control-allow-origin").is_none());
    assert_eq!(bad.text().await.unwrap(), "origin not allowed\n");
    let good = get("http://good.example").await.unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.headers()["access-control-allow-origin"], "http://good.example");
    let pre = http()
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 403);
}

#[tokio::test]
async fn preflight() {
    let server = server(ServerConfig::default()).await;
    let r = http()
        .request(reqwest::Method::OPTIONS, format!("{}?sseClientId=a", server.url()))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, x-custom")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-methods"], "GET, POST, DELETE");
    assert_eq!(h["access-control-allow-headers"], "content-type, x-custom");
    assert_eq!(h["access-control-allow-origin"], "http://app.example");
    assert_eq!(h["access-control-allow-credentials"], "true");
}

#[tokio::test]
async fn routing_errors() {
    let server = server(ServerConfig::default()).await;
    let url = server.url();
    let base = url.trim_end_matches("/sse");
    let r = http().get(format!("{base}/other?sseClientId=a")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        let r = http().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(r.status(), 405, "{method}");
        assert_eq!(r.headers()["allow"], "GET, HEAD, POST, DELETE, OPTIONS");
    }
    let r = http()
        .get(format!("{url}?sseClientId=a"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    for (q, reason) in [
        ("", "missing sseClientId"),
        ("sseClientId=", "sseClientId is empty"),
        (&format!("sseClientId={}", "x".repeat(257)), "over the limit of 256"),
    ] {
        let r = http().get(format!("{url}?{q}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(reason) && body.ends_with('\n') && body.lines().count() == 1,
            "{body}"
        );
    }
}

#[tokio::test]
async fn post_errors() {
    let mut server = server(ServerConfig {
        limits: Limits {
            max_message_bytes: 100,
            reorder_window: 10,
            reorder_bytes: 20,
            ..Limits::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let url = server.url();
    let _s = open(&url, "c", None).await;
    let _conn = server.accept().await.unwrap();
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        ("sseClientId=c&messageId=x".into(), b"\"a\"".to_vec(), 400, "messageId"),
        ("sseClientId=c&messageId=-1".into(), b"\"a\"".to_vec(), 400, "messageId"),
        ("messageId=0".into(), b"\"a\"".to_vec(), 400, "missing sseClientId"),
        ("sseClientId=c".into(), b"\xff\xfe".to_vec(), 400, "UTF-8"),
        ("sseClientId=c".into(), b"hello".to_vec(), 400, "not JSON"),
        ("sseClientId=c".into(), b"{\"a\":1}".to_vec(), 400, "not a string"),
        ("sseClientId=zz".into(), b"\"a\"".to_vec(), 404, "unknown client id"),
        ("sseClientId=c".into(), vec![b'"'; 101], 413, "over the limit of 100"),
        ("sseClientId=c&messageId=11".into(), b"\"a\"".to_vec(), 429, "more than 10 ahead"),
        (
            "sseClientId=c&messageId=5".into(),
            format!("\"{}\"", "y".repeat(25)).into_bytes(),
            429,
            "re-order buffer full",
        ),
    ];
    for (q, body, status, reason) in cases {
        let (got, text) = post_raw(&url, &q, body).await;
        assert_eq!(got, status, "{q}: {text}");
        assert!(text.contains(reason), "{q}: {text:?} lacks {reason:?}");
        assert_eq!(text.lines().count(), 1, "one-line reason: {text:?}");
    }
}

#[tokio::test]
async fn oversized_chunked_body_is_refused_while_reading() {
    let mut server = server(ServerConfig {
        limits: Limits { max_message_bytes: 1000, ..Limits::default() },
        ..ServerConfig::default()
    })
    .await;
    let url = server.url();
    let _s = open(&url, "c", None).await;
    let _conn = server.accept().await.unwrap();
    // A stream body has no Content-Length: the limit applies while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..100).map(|_| Ok(vec![b'a'; 100])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, text) = post_raw(&url, "sseClientId=c", body).await;
    assert_eq!(status, 413, "{text}");
}

#[tokio::test]
async fn a_thousand_messages_in_order_with_ids() {
    let mut server = server(ServerConfig::default()).await;
    let url = server.url();
    let mut s = open(&url, "big", None).await;
    let conn = server.accept().await.unwrap();
    for i in 0..1000 {
        conn.send(&format!("line {i}\nwith newline")).unwrap();
    }
    let got = s.msgs(1000).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, &Msg { id: i as u64 + 1, data: format!("line {i}\nwith newline") });
    }
    // Batching: the burst went out in far fewer writes than events.
    let stats = server.handle().stats();
    assert_eq!(stats.events, 1000);
    assert!(stats.frames <= 50, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_every_stream_with_control() {
    let mut server = server(keep_alive(30_000)).await;
    let url = server.url();
    let mut a = open(&url, "a", None).await;
    let mut b = open(&url, "b", None).await;
    let _ca = server.accept().await.unwrap();
    let _cb = server.accept().await.unwrap();
    let started = tokio::time::Instant::now();
    server.shutdown().await;
    // The streams flush at once: shutdown does not wait out its 1.5 s grace.
    assert!(started.elapsed() < Duration::from_millis(1200), "{:?}", started.elapsed());
    for s in [&mut a, &mut b] {
        let events = s.until_end().await;
        assert_eq!(events.last().map(|e| e.event.as_str()), Some("control"));
    }
}

#[tokio::test]
async fn max_clients_is_enforced() {
    let mut server = server(ServerConfig {
        limits: Limits { max_clients: 2, ..Limits::default() },
        ..ServerConfig::default()
    })
    .await;
    let url = server.url();
    let _a = open(&url, "a", None).await;
    let _b = open(&url, "b", None).await;
    let r = http().get(format!("{url}?sseClientId=c")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("too many clients"));
    let _ = (server.accept().await, server.accept().await);
    assert_eq!(server.handle().client_count(), 2);
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let mut server = server(ServerConfig::default()).await;
    let url = server.url();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("{url}?{}", channel_query("h2", None))).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let mut s = Stream::new(r);
    let mut conn = server.accept().await.unwrap();
    let body = ssechan::protocol::encode_message_body("over h2");
    let p =
        h2.post(format!("{url}?{}", channel_query("h2", Some(0)))).body(body).send().await.unwrap();
    assert_eq!(p.status(), 200);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("over h2".into()));
    conn.send("back").unwrap();
    assert_eq!(s.next_msg().await.data, "back");
}

#[tokio::test(start_paused = true)]
async fn posts_wait_while_the_application_is_behind() {
    let mut server = server(ServerConfig {
        limits: Limits { incoming_messages: 2, ..Limits::default() },
        ..ServerConfig::default()
    })
    .await;
    let url = server.url();
    let client = http();
    let _s = open(&url, "bp", None).await;
    let mut conn = server.accept().await.unwrap();
    assert_eq!(post(&client, &url, "bp", 0, "a").await, 200);
    assert_eq!(post(&client, &url, "bp", 1, "b").await, 200);
    let third = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { post(&client, &url, "bp", 2, "c").await }
    });
    // The clock moves once the third POST is at the server, waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "the third POST must wait for room");
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("a".into()));
    assert_eq!(tokio::time::timeout(WAIT, third).await.unwrap().unwrap(), 200);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("b".into()));
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("c".into()));
}

/// Reads from `tcp` until `needle` shows up; returns everything read.
async fn read_until(tcp: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("in time").unwrap();
        assert!(n > 0, "EOF before {needle:?}: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn a_fresh_connection_streams_close_delimited() {
    use tokio::io::AsyncWriteExt;
    let mut server = server(ServerConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(
        b"GET /sse?sseClientId=d HTTP/1.1\r\nHost: localhost\r\nOrigin: http://o.example\r\n\r\n",
    )
    .await
    .unwrap();
    let conn = server.accept().await.unwrap();
    conn.send("x").unwrap();
    let got = read_until(&mut tcp, "data: \"x\"\n\n").await;
    let (head, body) = got.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for h in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        "connection: close",
        "access-control-allow-origin: http://o.example",
        "access-control-allow-credentials: true",
    ] {
        assert!(head.contains(h), "{h} missing in {head}");
    }
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert_eq!(body, "retry: 1000\n\nid: 1\ndata: \"x\"\n\n");
    conn.close();
    let rest = read_until(&mut tcp, "data: close\n\n").await;
    assert_eq!(rest, "event: control\ndata: close\n\n");
}

#[tokio::test]
async fn a_stream_after_a_post_on_a_kept_alive_connection() {
    use tokio::io::AsyncWriteExt;
    let mut server = server(ServerConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(
        b"POST /sse?sseClientId=k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\n\"a\"",
    )
    .await
    .unwrap();
    let reply = read_until(&mut tcp, "unknown client id \"k\"\n").await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    // Same connection, now a stream: served chunked, as any HTTP/1.1 response.
    tcp.write_all(b"GET /sse?sseClientId=k HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let conn = server.accept().await.unwrap();
    conn.send("y").unwrap();
    let got = read_until(&mut tcp, "data: \"y\"\n\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{got}");
}

#[tokio::test(start_paused = true)]
async fn a_head_split_across_writes_and_pipelined_bytes_still_work() {
    use tokio::io::AsyncWriteExt;
    let mut server = server(ServerConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    for part in ["GET /sse?sse", "ClientId=split HT", "TP/1.1\r\nHost: localhost\r", "\n\r\n"] {
        tcp.write_all(part.as_bytes()).await.unwrap();
        tcp.flush().await.unwrap();
        // Paused: the server reads this part before the clock moves.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conn = server.accept().await.unwrap();
    assert_eq!(conn.id(), "split");
    conn.send("z").unwrap();
    read_until(&mut tcp, "data: \"z\"\n\n").await;
    // A head with bytes after it goes to hyper, which handles both requests.
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(
        b"GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\nGET /sse?sseClientId=p HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let conn = server.accept().await.unwrap();
    conn.send("p").unwrap();
    let got = read_until(&mut tcp, "data: \"p\"\n\n").await;
    assert!(got.starts_with("HTTP/1.1 404"), "{got}");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_outlived_a_server_restart_is_not_stuck() {
    // It goes on counting from 7; this server never saw 0..6.
    let mut server = server(ServerConfig {
        first_message_wait: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let url = server.url();
    let client = http();
    let _s = open(&url, "survivor", None).await;
    let mut conn = server.accept().await.unwrap();
    assert_eq!(post(&client, &url, "survivor", 8, "m8").await, 200);
    assert_eq!(post(&client, &url, "survivor", 7, "m7").await, 200);
    assert!(tokio::time::timeout(Duration::from_millis(100), conn.recv()).await.is_err());
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("m7".into()));
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("m8".into()));
    assert_eq!(post(&client, &url, "survivor", 0, "late").await, 200);
    assert_eq!(post(&client, &url, "survivor", 9, "m9").await, 200);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("m9".into()));
}

#[tokio::test(start_paused = true)]
async fn out_of_order_first_messages_still_wait_for_zero() {
    let mut server = server(ServerConfig {
        first_message_wait: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let url = server.url();
    let client = http();
    let _s = open(&url, "new", None).await;
    let mut conn = server.accept().await.unwrap();
    assert_eq!(post(&client, &url, "new", 1, "b").await, 200);
    assert_eq!(post(&client, &url, "new", 0, "a").await, 200);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("a".into()));
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("b".into()));
    tokio::time::sleep(Duration::from_millis(400)).await; // the wait ran out: no effect
    assert_eq!(post(&client, &url, "new", 3, "d").await, 200);
    assert_eq!(post(&client, &url, "new", 2, "c").await, 200);
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("c".into()));
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Message("d".into()));
}

#[tokio::test(start_paused = true)]
async fn non_http_bytes_get_400_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server(ServerConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    // The start of a TLS ClientHello: no line ends, ever.
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
        .await
        .unwrap();
    let mut reply = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut reply))
        .await
        .expect("an answer at once, not after the head timeout");
    assert!(n.is_ok());
    assert!(reply.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&reply));
}
