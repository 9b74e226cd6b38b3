//! `serve --tls-cert --tls-key`: HTTPS with ALPN h2 and http/1.1, the
//! stream behaviours over h2, and bad certificate files refused at start.

#[path = "support/tls_cert.rs"]
mod tls_cert;
mod util;

use std::path::PathBuf;

use reqwest::Version;
use serde_json::json;
use ssechan::protocol::query::channel_query;
use tls_cert::Cert;
use util::*;

async fn serve_tls(cert: &Cert, extra: &[&str]) -> Serve {
    let args = cert.args();
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    let serve = Serve::spawn(&all).await;
    assert!(serve.url.starts_with("https://127.0.0.1:"), "{}", serve.url);
    serve
}

async fn open_with(
    client: &reqwest::Client,
    url: &str,
    who: &str,
    last: Option<u64>,
) -> (Stream, Version) {
    let mut req = client
        .get(format!("{url}?{}", channel_query(who, None)))
        .header("accept", "text/event-stream");
    if let Some(l) = last {
        req = req.header("last-event-id", l.to_string());
    }
    let r = req.send().await.expect("GET");
    assert_eq!(r.status(), 200);
    let v = r.version();
    (Stream::new(r), v)
}

#[tokio::test]
async fn https_speaks_h2_and_http1_with_the_same_channel() {
    let cert = Cert::new();
    let serve = serve_tls(&cert, &["--echo"]).await;
    for (http1, version) in [(false, Version::HTTP_2), (true, Version::HTTP_11)] {
        let client = cert.client(http1);
        let who = format!("tls-{http1}");
        let (mut s, v) = open_with(&client, &serve.url, &who, None).await;
        assert_eq!(v, version);
        for i in 0..50 {
            assert_eq!(post(&client, &serve.url, &who, i, &format!("m{i}")).await, 200);
        }
        for i in 0..50u64 {
            assert_eq!(s.next_msg().await, Msg { id: i + 1, data: format!("m{i}") });
        }
    }
    // Plain HTTP on the HTTPS port is refused, not served.
    let plain = serve.url.replace("https://", "http://");
    assert!(reqwest::get(format!("{plain}?sseClientId=x")).await.is_err());
}

#[tokio::test]
async fn over_h2_resume_replays_takeover_ends_the_old_stream_and_heartbeats_flow() {
    let cert = Cert::new();
    let mut serve =
        serve_tls(&cert, &["--format", "json", "--keep-alive", "10s", "--heartbeat", "200ms"])
            .await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let client = cert.client(false);
    let (mut s, v) = open_with(&client, &serve.url, "h2", None).await;
    assert_eq!(v, Version::HTTP_2);
    assert_eq!(serve.out_json().await["event"], "connect");
    for i in 1..=3 {
        serve.send_line(&json!({"client": "h2", "data": format!("e{i}")}).to_string()).await;
    }
    assert_eq!(s.msgs(3).await.last().unwrap().id, 3);

    // Heartbeats on an idle h2 stream.
    let deadline = std::time::Instant::now() + WAIT;
    while s.comments.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no heartbeat in {WAIT:?}");
        let ev = s.next_event(std::time::Duration::from_millis(300)).await;
        assert!(ev.is_none(), "{ev:?}");
    }
    assert_eq!(s.comments[0].trim(), "ping");

    // The stream is reset (the h2 connection stays): suspend; a resume
    // from Last-Event-ID 1 replays 2 and 3, then what was queued.
    drop(s);
    assert_eq!(serve.out_json().await, json!({"event": "suspend", "client": "h2"}));
    serve.send_line(r#"{"client":"h2","data":"queued"}"#).await;
    let (mut s, _) = open_with(&client, &serve.url, "h2", Some(1)).await;
    assert_eq!(serve.out_json().await, json!({"event": "resume", "client": "h2"}));
    let got: Vec<(u64, String)> = s.msgs(3).await.into_iter().map(|m| (m.id, m.data)).collect();
    assert_eq!(got, [(2, "e2".into()), (3, "e3".into()), (4, "queued".into())]);

    // Takeover on the same h2 connection: the old stream ends.
    let (mut newer, _) = open_with(&client, &serve.url, "h2", Some(4)).await;
    assert!(s.until_end().await.is_empty());
    serve.send_line(r#"{"client":"h2","data":"to the newer"}"#).await;
    assert_eq!(newer.next_msg().await, Msg { id: 5, data: "to the newer".into() });
}

#[tokio::test]
async fn over_h2_a_slow_consumer_is_disconnected() {
    let cert = Cert::new();
    let mut serve = serve_tls(&cert, &["--format", "json", "--max-queue", "100"]).await;
    serve.out_json().await; // listening
    let client = cert.client(false);
    let (_never_read, _) = open_with(&client, &serve.url, "slow", None).await;
    serve.out_json().await; // connect
    // h2 flow control stops the writes once the window is full; the queue
    // then passes --max-queue.
    let line = json!({"client": "slow", "data": "x".repeat(4096)}).to_string();
    let mut close = None;
    for _ in 0..100_000 {
        serve.send_line(&line).await;
        if let Ok(l) = serve.stdout.try_recv() {
            close = Some(serde_json::from_str::<serde_json::Value>(&l).unwrap());
            break;
        }
    }
    let close = close.expect("a close event");
    assert_eq!(close["event"], "close");
    assert_eq!(close["reason"], "slow consumer: outgoing queue full");
}

#[tokio::test]
async fn bad_certificate_files_are_one_clear_error_and_exit_2() {
    let cert = Cert::new();
    let other = Cert::new();
    let missing = cert.dir.path().join("missing.pem");
    let s = |p: &PathBuf| p.display().to_string();
    for (cert_file, key_file, want) in [
        (s(&missing), s(&cert.key), "--tls-cert"),
        (s(&cert.cert), s(&missing), "--tls-key"),
        (s(&cert.key), s(&cert.key), "no PEM certificate"),
        (s(&cert.cert), s(&cert.cert), "no PEM private key"),
        (s(&cert.cert), s(&other.key), "the private key is not the certificate's"),
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                &cert_file,
                "--tls-key",
                &key_file,
            ])
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want), "{want}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("listening"), "{err}");
    }
    let half = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "--tls-cert", &s(&cert.cert)])
        .output()
        .await
        .unwrap();
    assert_eq!(half.status.code(), Some(2));
}
