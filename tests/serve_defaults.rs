//! `ssechan serve` as a user starts it: safe defaults, warnings when a
//! configuration is open to more than its user, and a shutdown that
//! reports every client.

mod util;

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use util::{Serve, WAIT, http, open, post};

#[tokio::test]
async fn a_command_answers_only_its_own_pages_by_default() {
    let mut serve =
        Serve::spawn(&["--", "sh", "-c", "while read -r l; do echo \"ran $l\"; done"]).await;
    let url = serve.url.clone();
    let evil = http()
        .get(format!("{url}?sseClientId=victim"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let r = http()
        .post(format!("{url}?sseClientId=victim&messageId=0"))
        .header("origin", "https://evil.example")
        .body("\"id\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // DNS rebinding: the page's own origin, a foreign Host.
    let port = url.split(':').nth(2).and_then(|p| p.split('/').next()).unwrap();
    let mut tcp = TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
    let req = format!(
        "GET /sse?sseClientId=rebound HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 403"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    // The server's own page, and non-browser clients, still work.
    let own = url.trim_end_matches("/sse").to_string();
    let mut s = http()
        .get(format!("{url}?sseClientId=own"))
        .header("origin", own)
        .send()
        .await
        .map(util::Stream::new)
        .unwrap();
    assert_eq!(post(&http(), &url, "own", 0, "ok").await, 200);
    assert_eq!(s.next_msg().await.data, "ran ok");
    serve.signal(libc::SIGTERM);
    let _ = serve.child.wait().await;
}

#[tokio::test]
async fn open_configurations_are_warned_about() {
    let mut serve = Serve::spawn(&["--allow-origin", "*", "--", "cat"]).await;
    serve.err_line_with("any web page the user visits can run it").await;
    serve.signal(libc::SIGTERM);
    let _ = serve.child.wait().await;
    let mut serve = Serve::spawn_at("0.0.0.0:0", &["--echo"]).await;
    serve.err_line_with("every origin allowed").await;
    serve.signal(libc::SIGTERM);
    let _ = serve.child.wait().await;
}

#[tokio::test]
async fn sigterm_reports_every_client_even_those_that_never_read() {
    let mut serve = Serve::spawn(&["--format", "json", "--keep-alive", "30s"]).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let addr = serve.url.trim_start_matches("http://").trim_end_matches("/sse").to_string();
    let mut sockets = Vec::new();
    for i in 0..100 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let req = format!("GET /sse?sseClientId=c{i} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        sockets.push(tcp);
    }
    for _ in 0..100 {
        assert_eq!(serve.out_json().await["event"], "connect");
    }
    // Far more than the sockets take: their queues cannot drain.
    let big = "x".repeat(200_000);
    for _ in 0..10 {
        serve.send_line(&format!("{{\"data\":\"{big}\"}}")).await;
    }
    serve.signal(libc::SIGTERM);
    let mut closed = std::collections::BTreeSet::new();
    while closed.len() < 100 {
        let ev = serve.out_json().await;
        if ev["event"] == "close" {
            assert_eq!(ev["reason"], "server shutdown", "{ev}");
            assert!(ev["undelivered"].as_u64().unwrap() > 0, "{ev}");
            closed.insert(ev["client"].as_str().unwrap().to_string());
        }
    }
    let status = tokio::time::timeout(WAIT, serve.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    drop(sockets);
}

#[tokio::test]
async fn a_gap_is_reported_on_stdout() {
    let mut serve =
        Serve::spawn(&["--format", "json", "--keep-alive", "30s", "--replay", "2"]).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let mut s = open(&serve.url, "g", None).await;
    assert_eq!(serve.out_json().await["event"], "connect");
    for i in 0..6 {
        serve.send_line(&format!("{{\"client\":\"g\",\"data\":\"m{i}\"}}")).await;
    }
    s.msgs(6).await;
    drop(s);
    assert_eq!(serve.out_json().await["event"], "suspend");
    let mut s = open(&serve.url, "g", Some(1)).await;
    assert_eq!(s.msgs(2).await.iter().map(|m| m.id).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(serve.out_json().await["event"], "resume");
    let gap = serve.out_json().await;
    assert_eq!((gap["event"].as_str(), gap["lost"].as_u64()), (Some("gap"), Some(3)), "{gap}");
    serve.send_line("{\"client\":\"g\",\"close\":true}").await;
    let close = loop {
        let ev = serve.out_json().await;
        if ev["event"] == "close" {
            break ev;
        }
    };
    assert_eq!(close["undelivered"], 3, "the gap counts as undelivered: {close}");
    let _ = tokio::time::timeout(Duration::from_secs(1), s.until_end()).await;
}

#[tokio::test]
async fn metrics_are_served_on_their_own_address_and_move() {
    let mut serve =
        Serve::spawn(&["--echo", "--keep-alive", "30s", "--metrics", "127.0.0.1:0"]).await;
    let line = serve.err_line_with("metrics on ").await;
    let metrics_url = line.split("metrics on ").nth(1).unwrap().trim().to_string();
    let scrape = || async {
        let r = http().get(&metrics_url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4")
        );
        let text = r.text().await.unwrap();
        move |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
                .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
                .parse()
                .unwrap()
        }
    };
    let before = scrape().await;
    assert_eq!(before("ssechan_streams_open"), 0);
    let mut s = open(&serve.url, "m", None).await;
    for i in 0..3 {
        assert_eq!(post(&http(), &serve.url, "m", i, "hi").await, 200);
    }
    s.msgs(3).await;
    assert_eq!(util::post_raw(&serve.url, "sseClientId=nobody", "\"x\"").await.0, 404);
    drop(s);
    let mut s = open(&serve.url, "m", Some(1)).await;
    s.msgs(2).await;
    let after = scrape().await;
    assert_eq!(after("ssechan_streams_open"), 1);
    assert_eq!(after("ssechan_channels"), 1);
    assert_eq!(after("ssechan_channels_opened_total"), 1);
    assert_eq!(after("ssechan_messages_in_total"), 3);
    assert_eq!(after("ssechan_messages_out_total"), 3);
    assert_eq!(after("ssechan_events_written_total"), 5, "3, then 2 replayed");
    assert_eq!(after("ssechan_replayed_events_total"), 2);
    // The new stream resumed, or took over if it came before the server
    // saw the old one end.
    assert_eq!(after("ssechan_resumes_total") + after("ssechan_takeovers_total"), 1);
    assert!(after("ssechan_bytes_out_total") > 5 * 10);
    assert_eq!(after("ssechan_refusals_total{status=\"404\"}"), 1);
    // Only /metrics, and only for loopback names.
    let r = http().get(metrics_url.replace("/metrics", "/other")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    serve.signal(libc::SIGTERM);
    let _ = serve.child.wait().await;
}
