//! `serve --metrics ADDR`: the listener rules of docs/security.md hold on
//! the metrics listener too: the `Host` rules (DNS rebinding), a bound on
//! its connections, one request per connection, and what it says when it
//! is on a network address.

mod util;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use util::*;

/// `serve --echo --metrics 127.0.0.1:0 ARGS`, and the metrics address.
async fn serve_with_metrics(args: &[&str]) -> (Serve, String) {
    let mut all = vec!["--echo", "--metrics", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut serve = Serve::spawn(&all).await;
    let line = serve.err_line_with("metrics on ").await;
    let url = line.split("metrics on http://").nth(1).expect("a URL").trim();
    (serve, url.trim_end_matches("/metrics").to_owned())
}

/// One request with `host` on a connection of its own: the status, and
/// whether the server then closed the connection (read to its end).
async fn scrape(addr: &str, host: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("request");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut got))
        .await
        .expect("the connection ends after its answer (one request each)")
        .expect("read");
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn the_metrics_listener_answers_only_its_own_names() {
    let (_serve, addr) = serve_with_metrics(&["--allow-host", "metrics.example"]).await;
    let port = addr.rsplit(':').next().expect("port");
    let (status, text) = scrape(&addr, &addr).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("ssechan_connections_open"), "{text}");
    assert_eq!(scrape(&addr, &format!("localhost:{port}")).await.0, 200);
    assert_eq!(scrape(&addr, "metrics.example").await.0, 200, "an --allow-host name");
    // A page whose name was made to resolve to 127.0.0.1 (DNS rebinding).
    let (status, text) = scrape(&addr, &format!("rebind.example:{port}")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.ends_with("Host is not this server\n"), "{text}");
}

/// Connections past the bound are closed as soon as accepted; one that
/// ends makes room again. Idle connections are held by the server until
/// the request timeout (60 s here, far beyond the test).
#[tokio::test]
async fn metrics_connections_past_the_bound_are_closed_at_once() {
    const BOUND: usize = 16;
    let (_serve, addr) = serve_with_metrics(&["--request-timeout", "60s"]).await;
    let mut idle = Vec::new();
    for _ in 0..BOUND {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // Accepted in order: this one after the 16 idle ones.
    let mut over = TcpStream::connect(&addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, over.read(&mut buf))
        .await
        .expect("the connection past the bound is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    // One idle connection ends: a scrape gets through again.
    drop(idle.pop());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut tcp = TcpStream::connect(&addr).await.expect("connect");
        tcp.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .expect("request");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut got)).await;
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no room made by the ended connection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_on_a_network_address_are_said_to_be_readable_by_anyone() {
    let mut serve = Serve::spawn(&["--echo", "--metrics", "0.0.0.0:0"]).await;
    let line = serve.err_line_with("--metrics").await;
    assert!(
        line.contains("network address") && line.contains("reads the server's counts"),
        "{line}"
    );
}
