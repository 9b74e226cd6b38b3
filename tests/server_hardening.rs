//! What a hostile, broken or merely slow peer can do to the server, and
//! what it must not: each test is an attack that got through before.

mod util;

use std::net::SocketAddr;
use std::time::Duration;

use ssechan::server::{
    CloseInfo, CloseReason, Connection, ConnectionEvent, Limits, OriginPolicy, ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use util::{WAIT, eventually, http, open, post, post_raw, server};

async fn next_event(conn: &mut Connection) -> ConnectionEvent {
    tokio::time::timeout(WAIT, conn.recv()).await.expect("event in time").expect("open")
}

/// Sends `req` on a new connection and returns the whole answer.
async fn exchange(addr: SocketAddr, req: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("answer in time") {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if text.contains("\r\n\r\n") && !text.contains("text/event-stream") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// --- the application's side -------------------------------------------------------

#[tokio::test]
async fn accept_ends_after_shutdown_begins() {
    let mut server = server(ServerConfig::default()).await;
    let _s = open(&server.url(), "early", None).await;
    server.handle().begin_shutdown();
    // What was opened before is still handed out, then the loop ends.
    let conn = tokio::time::timeout(WAIT, server.accept()).await.unwrap();
    assert_eq!(conn.map(|c| c.id().to_string()).as_deref(), Some("early"));
    assert!(tokio::time::timeout(WAIT, server.accept()).await.unwrap().is_none());
}

#[tokio::test]
async fn run_returns_when_its_shutdown_future_does() {
    let server = server(ServerConfig::default()).await;
    let url = server.url();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(server.run(
        async move {
            let _ = stopped.await;
        },
        move |c| drop(seen_tx.send(c)),
    ));
    let _s = open(&url, "r", None).await;
    let mut conn = seen.recv().await.unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, task).await.expect("run returns").unwrap();
    assert_eq!(
        next_event(&mut conn).await,
        ConnectionEvent::Closed(CloseInfo { reason: CloseReason::Shutdown, undelivered: 0 })
    );
}

#[tokio::test]
async fn shutdown_closes_every_connection_with_its_reason_and_count() {
    // Clients that never read: their streams cannot flush the close event.
    let limits = Limits { max_connections: 500, ..Limits::default() };
    let mut server = server(ServerConfig { limits, ..ServerConfig::default() }).await;
    let addr = server.local_addr();
    let mut sockets = Vec::new();
    let mut conns = Vec::new();
    for i in 0..100 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /sse?sseClientId=c{i} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        sockets.push(tcp);
        conns.push(server.accept().await.unwrap());
    }
    let big = "x".repeat(256 * 1024);
    for c in &conns {
        // Far more than the kernel buffers take: some stays queued.
        for _ in 0..8 {
            c.send(&big).unwrap();
        }
    }
    let handle = server.handle();
    let shutdown = tokio::spawn(server.shutdown());
    for mut c in conns {
        loop {
            if let ConnectionEvent::Closed(info) = next_event(&mut c).await {
                assert_eq!(info.reason, CloseReason::Shutdown, "{}", c.id());
                assert!(info.undelivered > 0, "{}: {info:?}", c.id());
                break;
            }
        }
    }
    tokio::time::timeout(WAIT, shutdown).await.expect("shutdown ends").unwrap();
    assert_eq!(handle.client_count(), 0);
    drop(sockets);
}

#[tokio::test]
async fn a_dropped_connection_refuses_posts_instead_of_losing_them() {
    let limits = Limits { incoming_messages: 4, ..Limits::default() };
    let mut server = server(ServerConfig { limits, ..ServerConfig::default() }).await;
    let url = server.url();
    let _s = open(&url, "gone", None).await;
    drop(server.accept().await.unwrap());
    let client = http();
    // More than the inbox holds: none may hang, none may be acknowledged.
    for id in 0..10 {
        let r = client.post(format!("{url}?sseClientId=gone&messageId={id}")).body("\"m\"").send();
        let r = tokio::time::timeout(WAIT, r).await.expect("answered").unwrap();
        assert_eq!(r.status(), 503, "message {id}");
        assert!(r.text().await.unwrap().contains("not reading"));
    }
}

#[tokio::test]
async fn head_neither_attaches_nor_ends_a_stream() {
    let mut server = server(ServerConfig {
        keep_alive: Some(Duration::from_secs(30)),
        ..ServerConfig::default()
    })
    .await;
    let url = server.url();
    let mut s = open(&url, "live", None).await;
    let mut conn = server.accept().await.unwrap();
    let r = http().head(format!("{url}?sseClientId=live")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let r = http().head(format!("{url}?sseClientId=nobody")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    conn.send("still here").unwrap();
    assert_eq!(s.next_msg().await.data, "still here");
    assert!(tokio::time::timeout(Duration::from_millis(50), conn.recv()).await.is_err());
    assert_eq!(server.handle().client_count(), 1, "HEAD opened no channel");
}

#[tokio::test]
async fn delete_is_a_close_by_the_client() {
    let mut server = server(ServerConfig {
        keep_alive: Some(Duration::from_secs(30)),
        ..ServerConfig::default()
    })
    .await;
    let url = server.url();
    let mut s = open(&url, "bye", None).await;
    let mut conn = server.accept().await.unwrap();
    let r = http().delete(format!("{url}?sseClientId=bye")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        next_event(&mut conn).await,
        ConnectionEvent::Closed(CloseInfo { reason: CloseReason::ClosedByClient, undelivered: 0 })
    );
    assert!(s.until_end().await.is_empty(), "no control event to a client that left");
    let r = http().delete(format!("{url}?sseClientId=bye")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_full_accept_queue_refuses_new_clients() {
    let limits = Limits { accept_queue: 2, ..Limits::default() };
    let server = server(ServerConfig { limits, ..ServerConfig::default() }).await;
    let url = server.url();
    let _a = open(&url, "a", None).await;
    let _b = open(&url, "b", None).await;
    let r = http().get(format!("{url}?sseClientId=c")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("not accepting"));
}

// --- who may ask ----------------------------------------------------------------------

#[tokio::test]
async fn a_loopback_listener_answers_loopback_hosts_only() {
    let mut server = server(ServerConfig::default()).await;
    let addr = server.local_addr();
    for req in [
        "GET /sse?sseClientId=x HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        "GET /sse?sseClientId=x HTTP/1.1\r\nHost: evil.example:80\r\nOrigin: http://evil.example\r\n\r\n",
        "POST /sse?sseClientId=x HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 3\r\n\r\n\"a\"",
        "OPTIONS /sse HTTP/1.1\r\nHost: 10.1.2.3\r\n\r\n",
        "GET /sse?sseClientId=x HTTP/1.0\r\n\r\n",
    ] {
        let got = exchange(addr, req.as_bytes()).await;
        assert!(
            got.starts_with("HTTP/1.1 403") || got.starts_with("HTTP/1.0 403"),
            "{req:?} got {got}"
        );
        assert!(!got.contains("access-control-allow-origin"), "{got}");
    }
    for host in ["localhost", &format!("127.0.0.1:{}", addr.port()), "[::1]:1", "app.localhost"] {
        let req = format!("GET /sse?sseClientId={host} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(req.as_bytes()).await.unwrap();
        let conn = server.accept().await.unwrap();
        assert_eq!(conn.id(), host);
    }
    // --allow-host adds a name.
    let mut server = util::server(ServerConfig {
        allowed_hosts: vec!["dev.test".into()],
        ..ServerConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    tcp.write_all(b"GET /sse?sseClientId=d HTTP/1.1\r\nHost: dev.test:8080\r\n\r\n").await.unwrap();
    assert_eq!(server.accept().await.unwrap().id(), "d");
}

#[tokio::test]
async fn the_null_origin_is_refused_unless_listed() {
    let server = server(ServerConfig::default()).await;
    let url = server.url();
    let get = |origin: &'static str| {
        http().get(format!("{url}?sseClientId=n")).header("origin", origin).send()
    };
    assert_eq!(get("null").await.unwrap().status(), 403);
    let server = util::server(ServerConfig {
        origins: OriginPolicy::List(vec!["null".into()]),
        ..ServerConfig::default()
    })
    .await;
    let r = http()
        .get(format!("{}?sseClientId=n", server.url()))
        .header("origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "null");
}

#[tokio::test]
async fn same_origin_admits_only_the_servers_own_pages() {
    let server =
        server(ServerConfig { origins: OriginPolicy::SameOrigin, ..ServerConfig::default() }).await;
    let url = server.url();
    let own = format!("http://{}", server.local_addr());
    for (origin, status) in
        [(Some(own.as_str()), 200), (Some("https://evil.example"), 403), (None, 200)]
    {
        let mut req = http().get(format!("{url}?sseClientId=s"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        assert_eq!(req.send().await.unwrap().status(), status, "{origin:?}");
    }
    let r = http()
        .post(format!("{url}?sseClientId=s&messageId=0"))
        .header("origin", "https://evil.example")
        .body("\"rm -rf ~\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn control_characters_in_client_ids_are_refused() {
    let server = server(ServerConfig::default()).await;
    for id in ["a%0d%0aFAKE%20LOG", "%1b%5b31m", "x%00"] {
        let (status, body) = post_raw(&server.url(), &format!("sseClientId={id}"), "\"m\"").await;
        assert_eq!(status, 400, "{id}");
        assert!(body.contains("control characters") && !body.contains('\u{1b}'), "{body:?}");
        let r = http().get(format!("{}?sseClientId={id}", server.url())).send().await.unwrap();
        assert_eq!(r.status(), 400);
    }
}

// --- what a peer can make the server hold -----------------------------------------------

#[tokio::test]
async fn far_ahead_posts_cost_what_they_hold() {
    // Each id posts only messageId 4096: one small message held in one
    // chunk of slots, not a slot per id of the window (~98 KB per id).
    let config = ServerConfig {
        closed_id_memory: Duration::from_millis(300),
        limits: Limits { closed_id_bytes: 64 * 1024, ..Limits::default() },
        ..ServerConfig::default()
    };
    let mut server = server(config).await;
    let url = server.url();
    let client = http();
    let mut streams = Vec::new();
    let mut conns = Vec::new();
    for i in 0..300 {
        let who = format!("far{i}");
        streams.push(open(&url, &who, None).await);
        conns.push(server.accept().await.unwrap());
        assert_eq!(post(&client, &url, &who, 4096, "x").await, 200);
    }
    let held = server.handle().counts().incoming_bytes;
    let per =
        1 + ssechan::protocol::reorder::ENTRY_OVERHEAD + ssechan::protocol::reorder::CHUNK_OVERHEAD;
    assert!(held <= 300 * per, "{held} bytes held for 300 one-byte messages");
    assert!(per < 2048, "{per}");
    assert!(held >= 300, "{held}");
    // Closed, their state is remembered within its byte bound, then swept.
    drop(streams);
    for mut c in conns {
        while !matches!(next_event(&mut c).await, ConnectionEvent::Closed(_)) {}
    }
    let counts = server.handle().counts();
    assert_eq!(counts.incoming_bytes, 0);
    assert!(counts.remembered_bytes <= 64 * 1024, "{counts:?}");
    assert!(counts.remembered_ids > 0, "{counts:?}");
    let handle = server.handle();
    eventually("closed ids forgotten after their memory period", || {
        (handle.counts().remembered_ids == 0).then_some(())
    })
    .await;
    assert_eq!(handle.counts().remembered_bytes, 0);
}

#[tokio::test]
async fn posts_waiting_for_room_do_not_hold_their_bodies() {
    let config = ServerConfig {
        request_timeout: Duration::from_millis(500),
        limits: Limits { incoming_messages: 2, ..Limits::default() },
        ..ServerConfig::default()
    };
    let mut server = server(config).await;
    let url = server.url();
    let _s = open(&url, "busy", None).await;
    let _conn = server.accept().await.unwrap(); // never read
    let body = format!("\"{}\"", "x".repeat(256 * 1024));
    let mut posts = Vec::new();
    for id in 0..40 {
        let (url, body) = (url.clone(), body.clone());
        posts.push(tokio::spawn(async move {
            let r = http().post(format!("{url}?sseClientId=busy&messageId={id}")).body(body);
            r.send().await.unwrap().status().as_u16()
        }));
    }
    let handle = server.handle();
    let mut statuses = Vec::new();
    for p in posts {
        let held = handle.counts().incoming_bytes;
        assert!(held <= 3 * (body.len() + 64), "{held} bytes held while POSTs wait");
        statuses.push(tokio::time::timeout(WAIT, p).await.unwrap().unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
}

#[tokio::test]
async fn the_servers_incoming_total_is_bounded() {
    let config = ServerConfig {
        limits: Limits { incoming_total: 1000, ..Limits::default() },
        ..ServerConfig::default()
    };
    let mut server = server(config).await;
    let url = server.url();
    let _s = open(&url, "t", None).await;
    let _conn = server.accept().await.unwrap();
    let (status, _) =
        post_raw(&url, "sseClientId=t&messageId=0", format!("\"{}\"", "y".repeat(800))).await;
    assert_eq!(status, 200);
    let (status, body) =
        post_raw(&url, "sseClientId=t&messageId=1", format!("\"{}\"", "y".repeat(800))).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("server busy"), "{body}");
}

#[tokio::test]
async fn slow_bodies_and_silent_connections_are_cut() {
    let config =
        ServerConfig { request_timeout: Duration::from_millis(300), ..ServerConfig::default() };
    let mut server = server(config).await;
    let url = server.url();
    let _s = open(&url, "slow", None).await;
    let _conn = server.accept().await.unwrap();
    let addr = server.local_addr();
    // A body that never completes: 408, then the connection is closed.
    let got = exchange(
        addr,
        b"POST /sse?sseClientId=slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n\"",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    // A connection that sends nothing, or only the h2c preface.
    for first in [&b""[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(first).await.unwrap();
        let mut buf = [0u8; 1024];
        loop {
            let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
                .await
                .expect("closed by the server in time");
            if matches!(n, Ok(0) | Err(_)) {
                break;
            }
        }
    }
}

/// Reads `tcp` until the server closes it (or resets it); fails if that
/// takes longer than WAIT.
async fn read_until_closed(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("closed in time");
        match n {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_kept_alive_connection_gets_a_request_timeout_for_each_next_head() {
    let config =
        ServerConfig { request_timeout: Duration::from_millis(300), ..ServerConfig::default() };
    let mut server = server(config).await;
    let _s = open(&server.url(), "ka", None).await;
    let _conn = server.accept().await.unwrap();
    let addr = server.local_addr();
    let post = |id: u32| {
        format!(
            "POST /sse?sseClientId=ka&messageId={id} HTTP/1.1\r\nHost: localhost\r\n\
             Content-Length: 4\r\n\r\n\"m{id}\""
        )
    };
    // After an answer: a head that never ends, then nothing at all. Each
    // connection is answered, then closed by the server.
    for (first, then) in
        [(0, &b"POST /sse?sseClientId=ka&messageId=9 HTTP/1.1\r\nHost: l"[..]), (1, b"")]
    {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(post(first).as_bytes()).await.unwrap();
        tcp.write_all(then).await.unwrap();
        let got = read_until_closed(&mut tcp).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert_eq!(got.matches("HTTP/1.1").count(), 1, "{got}");
    }
}

#[tokio::test]
async fn past_the_connection_limit_new_connections_get_503_at_once() {
    let config = ServerConfig {
        limits: Limits { max_connections: 5, ..Limits::default() },
        ..ServerConfig::default()
    };
    let server = server(config).await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /sse").await.unwrap(); // a head that never ends
        held.push(tcp);
    }
    let handle = server.handle();
    eventually("five connections counted", || (handle.stats().connections == 5).then_some(()))
        .await;
    let got = exchange(addr, b"GET /sse?sseClientId=x HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("connection limit (5)"), "{got}");
    held.truncate(4);
    eventually("a slot freed", || (handle.stats().connections == 4).then_some(())).await;
    let r = http().get(format!("{}?sseClientId=ok", server.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn bare_lf_requests_are_answered_at_once() {
    // The head timeout is far above the wait: an answer must not wait for it.
    let config =
        ServerConfig { request_timeout: Duration::from_secs(120), ..ServerConfig::default() };
    let mut server = server(config).await;
    let addr = server.local_addr();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /sse?sseClientId=lf HTTP/1.1\nHost: localhost\n\n").await.unwrap();
    let conn = tokio::time::timeout(WAIT, server.accept()).await.expect("served").unwrap();
    conn.send("m").unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let got = exchange(
        addr,
        b"POST /sse?sseClientId=lf HTTP/1.1\nHost: localhost\nContent-Length: 3\n\n\"a\"",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 "), "{got}");
}

#[tokio::test]
async fn the_listen_backlog_fits_the_connection_limit() {
    let config = ServerConfig {
        limits: Limits { max_connections: 1000, ..Limits::default() },
        ..ServerConfig::default()
    };
    let server = server(config).await;
    let port = server.local_addr().port();
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number");
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let backlog: u32 = line.split_whitespace().nth(2).and_then(|s| s.parse().ok()).expect(&line);
    assert_eq!(backlog, 1000u32.min(somaxconn), "{line}");
}

// --- streams that cannot be written -------------------------------------------------------

/// A raw client that reads nothing: its windows fill up and writes stall.
async fn stuck_stream(addr: SocketAddr, who: &str, kept_alive: bool) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut tcp = sock.connect(addr).await.unwrap();
    if kept_alive {
        tcp.write_all(b"HEAD /sse?sseClientId=first HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let req = format!("GET /sse?sseClientId={who} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp
}

/// Reads until the server closes; fails if it does not within [`WAIT`].
async fn closed_by_server(tcp: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("closed in time") {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn a_stuck_stream_taken_over_is_closed_at_once(kept_alive: bool) {
    let config = ServerConfig {
        keep_alive: Some(Duration::from_secs(30)),
        write_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let mut server = server(config).await;
    let mut tcp = stuck_stream(server.local_addr(), "stuck", kept_alive).await;
    let conn = server.accept().await.unwrap();
    let chunk = "z".repeat(32 * 1024);
    for _ in 0..40 {
        conn.send(&chunk).unwrap(); // 1.3 MB: far past both kernel buffers
    }
    let handle = server.handle();
    let before = handle.stats().frames;
    eventually("the writer stalls", || (handle.stats().frames > before).then_some(())).await;
    let _new = open(&server.url(), "stuck", Some(0)).await;
    closed_by_server(&mut tcp).await;
}

#[tokio::test]
async fn a_stuck_fresh_stream_taken_over_is_closed_at_once() {
    a_stuck_stream_taken_over_is_closed_at_once(false).await;
}

#[tokio::test]
async fn a_stuck_kept_alive_stream_taken_over_is_closed_at_once() {
    a_stuck_stream_taken_over_is_closed_at_once(true).await;
}

async fn a_write_that_makes_no_progress_times_out(kept_alive: bool) {
    let config = ServerConfig {
        keep_alive: Some(Duration::from_secs(30)),
        write_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut server = server(config).await;
    let mut tcp = stuck_stream(server.local_addr(), "frozen", kept_alive).await;
    let mut conn = server.accept().await.unwrap();
    let chunk = "z".repeat(32 * 1024);
    for _ in 0..40 {
        conn.send(&chunk).unwrap();
    }
    assert_eq!(next_event(&mut conn).await, ConnectionEvent::Suspended);
    closed_by_server(&mut tcp).await;
}

#[tokio::test]
async fn a_fresh_stream_write_that_makes_no_progress_times_out() {
    a_write_that_makes_no_progress_times_out(false).await;
}

#[tokio::test]
async fn a_kept_alive_stream_write_that_makes_no_progress_times_out() {
    a_write_that_makes_no_progress_times_out(true).await;
}

// --- nothing lost without a word ------------------------------------------------------------

/// A slow reader whose connection is cut abruptly (RST) over and over,
/// resuming with `Last-Event-ID` each time: with the defaults, the replay
/// log covers whatever the kernel held, so nothing is lost. (The kernel
/// used to take megabytes into its send buffer, and 8,771 of 10,000
/// events were lost this way.)
#[tokio::test]
async fn a_slow_reader_cut_over_and_over_loses_nothing_with_the_defaults() {
    slow_reader_cut_over_and_over(false).await;
}

/// The same with broadcast events, which the memory store keeps once for
/// every channel in its broadcast log: a reader this far behind the
/// broadcasts still finds what its cut connection swallowed.
#[tokio::test]
async fn a_slow_reader_of_broadcasts_cut_over_and_over_loses_nothing_with_the_defaults() {
    slow_reader_cut_over_and_over(true).await;
}

async fn slow_reader_cut_over_and_over(broadcast: bool) {
    let config =
        ServerConfig { keep_alive: Some(Duration::from_secs(30)), ..ServerConfig::default() };
    let mut server = server(config).await;
    let addr = server.local_addr();
    let total = 10_000u64;
    let mut last = 0u64;
    let (mut conn, mut other) = (None, None);
    let mut cuts = 0;
    while last < total {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /sse?sseClientId=slow HTTP/1.1\r\nHost: localhost\r\nLast-Event-ID: {last}\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        if conn.is_none() {
            let c = server.accept().await.unwrap();
            let line = "e".repeat(100);
            if broadcast {
                // Another client takes them too, and reads none.
                let stream = open(&server.url(), "other", None).await;
                other = Some((stream, server.accept().await.unwrap()));
                let batch = vec![line.as_str(); 100];
                for _ in 0..total / 100 {
                    assert_eq!(server.handle().broadcast_all(&batch).await, 2);
                }
            } else {
                for _ in 0..total {
                    c.send(&line).unwrap();
                }
            }
            conn = Some(c);
        }
        // Read a little, slowly, then reset the connection under the data.
        let mut events = RawEvents::default();
        let mut buf = [0u8; 2048];
        for _ in 0..40 {
            if last == total {
                break;
            }
            let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.unwrap().unwrap();
            if n == 0 {
                break;
            }
            for e in events.feed(&buf[..n]) {
                let id: u64 = e.last_event_id.parse().unwrap();
                assert_eq!(id, last + 1, "after {cuts} cuts");
                last = id;
            }
            tokio::task::yield_now().await;
        }
        // A zero linger resets at once: nothing blocks on drop.
        #[allow(deprecated)]
        tcp.set_linger(Some(Duration::ZERO)).unwrap();
        drop(tcp);
        cuts += 1;
    }
    assert!(cuts > 5, "the test must cut the stream: {cuts}");
    assert_eq!(other.is_some(), broadcast);
    let mut conn = conn.unwrap();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), conn.recv()).await {
        assert!(!matches!(ev, ConnectionEvent::Gap { .. }), "{ev:?}");
    }
}

#[tokio::test]
async fn an_answer_that_leaves_the_body_unread_says_the_connection_closes() {
    let server = server(ServerConfig::default()).await;
    let addr = server.local_addr();
    for req in [
        "POST /sse?sseClientId=x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2000000\r\n\r\n\"",
        "POST /sse?sseClientId=nobody HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
        "POST /sse?sseClientId=nobody HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let got = exchange(addr, req.as_bytes()).await.to_ascii_lowercase();
        assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
    }
    // A small body refused before it was needed is read all the same, and
    // the connection goes on; so does one that was read.
    let got = exchange(
        addr,
        b"POST /sse?sseClientId=nobody HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\n\"a\"",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 404"), "{got}");
    assert!(!got.to_ascii_lowercase().contains("connection: close"), "{got}");
    let _s = open(&server.url(), "known", None).await;
    let got = exchange(
        addr,
        b"POST /sse?sseClientId=known HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nnot",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(!got.to_ascii_lowercase().contains("connection: close"), "{got}");
}

/// Bytes a client sends on its stream while a write waits are discarded,
/// and the write goes on: the events arrive whole. (The write used to be
/// abandoned half-way, and the rest of its batch lost.)
#[tokio::test]
async fn bytes_from_the_client_during_a_stalled_write_lose_no_event() {
    let mut server = server(ServerConfig::default()).await;
    let mut tcp = stuck_stream(server.local_addr(), "chatty", false).await;
    let conn = server.accept().await.unwrap();
    let line = "q".repeat(8 * 1024);
    let total = 100u64;
    for _ in 0..total {
        conn.send(&line).unwrap(); // 800 KB: far past both kernel buffers
    }
    let handle = server.handle();
    let before = handle.stats().frames;
    eventually("the writer stalls", || (handle.stats().frames > before).then_some(())).await;
    let mut events = RawEvents::default();
    let mut buf = [0u8; 4096];
    let mut last = 0u64;
    while last < total {
        // A byte now and then while the server waits to write.
        tcp.write_all(b"x").await.unwrap();
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("data").unwrap();
        assert!(n > 0, "closed after event {last}");
        for e in events.feed(&buf[..n]) {
            let id: u64 = e.last_event_id.parse().expect("numeric id");
            assert_eq!(id, last + 1, "an event lost or cut");
            assert_eq!(e.data, format!("\"{line}\""), "event {id} whole");
            last = id;
        }
    }
}

/// Events of a raw HTTP/1.1 stream response, read chunk by chunk.
#[derive(Default)]
struct RawEvents {
    head: Vec<u8>,
    in_body: bool,
    parser: ssechan::protocol::EventStreamParser,
}

impl RawEvents {
    fn feed(&mut self, chunk: &[u8]) -> Vec<ssechan::protocol::Event> {
        let mut body = chunk;
        if !self.in_body {
            self.head.extend_from_slice(chunk);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Vec::new();
            };
            self.in_body = true;
            let rest = self.head.split_off(end + 4);
            self.parser.feed(&rest);
            body = &[];
        }
        self.parser.feed(body);
        let mut out = Vec::new();
        while let Some(item) = self.parser.next_item().unwrap() {
            if let ssechan::protocol::parser::Parsed::Event(e) = item {
                out.push(e);
            }
        }
        out
    }
}

/// Counts its calls; refuses the ids that start with `no`.
#[derive(Debug, Default)]
struct CountingAdmission(std::sync::atomic::AtomicUsize);

impl ssechan::server::Admission for CountingAdmission {
    fn admit<'a>(
        &'a self,
        client_id: &'a str,
        _request: &'a ssechan::server::RequestInfo,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<ssechan::server::Admitted, String>> + Send + 'a>,
    > {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let refused = client_id.starts_with("no");
        Box::pin(
            async move { if refused { Err("not today".into()) } else { Ok(Box::new(()) as _) } },
        )
    }
}

/// A stream refused on the direct path (its first request on a fresh
/// connection) is answered by hyper with the refusal decided there: the
/// admission (with `serve --exec`, a process started) runs once, whether
/// it refuses or the store refuses after it.
#[tokio::test]
async fn a_refused_direct_get_runs_admission_once() {
    let admission = std::sync::Arc::new(CountingAdmission::default());
    let mut server = server(ServerConfig {
        admission: Some(admission.clone()),
        limits: Limits { max_clients: 1, ..Limits::default() },
        ..ServerConfig::default()
    })
    .await;
    let addr = server.local_addr();
    let get = |id: &str| {
        format!(
            "GET /sse?sseClientId={id} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
    };
    let calls = || admission.0.load(std::sync::atomic::Ordering::SeqCst);
    let answer = exchange(addr, get("no1").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("not today"), "{answer}");
    assert_eq!(calls(), 1, "the admission's refusal is not asked again");
    let _a = open(&server.url(), "a", None).await;
    let _ = server.accept().await;
    assert_eq!(calls(), 2);
    let answer = exchange(addr, get("b").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many clients"), "{answer}");
    assert_eq!(calls(), 3, "admitted once, refused by the store once");
}

/// Reads from `tcp` until `out` holds `needle` (after `from`); the index
/// just past it.
async fn read_until(tcp: &mut TcpStream, out: &mut Vec<u8>, from: usize, needle: &[u8]) -> usize {
    let mut buf = [0u8; 65536];
    loop {
        if let Some(i) = out[from..].windows(needle.len()).position(|w| w == needle) {
            return from + i + needle.len();
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("in time").unwrap();
        assert!(n > 0, "closed; read so far: {:?}", String::from_utf8_lossy(&out[from..]));
        out.extend_from_slice(&buf[..n]);
    }
}

/// A kept-alive HTTP/1 connection whose event stream has ended carries its
/// next answer whole: the ended stream's detach guard no longer fails that
/// answer's writes when the socket is full (a client receive buffer of 4
/// KiB fills it many times over for a 4 MiB file).
#[tokio::test]
async fn a_kept_alive_connection_outlives_the_guard_of_its_ended_stream() {
    const SIZE: usize = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), vec![b'x'; SIZE]).unwrap();
    let root = dir.path().canonicalize().unwrap();
    let mut server =
        server(ServerConfig { static_dir: Some(root), ..ServerConfig::default() }).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(server.local_addr()).await.unwrap();
    let mut out = Vec::new();
    // A HEAD first: the connection goes to hyper, not the direct path.
    tcp.write_all(b"HEAD /sse?sseClientId=k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut at = read_until(&mut tcp, &mut out, 0, b"\r\n\r\n").await;
    tcp.write_all(b"GET /sse?sseClientId=k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let conn = tokio::time::timeout(WAIT, server.accept()).await.unwrap().expect("connection");
    conn.close();
    // The control close, then the chunked body's end: the stream is over.
    at = read_until(&mut tcp, &mut out, at, b"\r\n0\r\n\r\n").await;
    tcp.write_all(b"GET /big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let body = read_until(&mut tcp, &mut out, at, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&out[at..body]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut buf = vec![0u8; 65536];
    while out.len() - body < SIZE {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("in time").unwrap();
        assert!(n > 0, "the answer was cut after {} of {SIZE} bytes", out.len() - body);
        out.extend_from_slice(&buf[..n]);
    }
}
