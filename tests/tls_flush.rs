//! HTTPS/1.1 streams written straight from their queue (src/server/direct.rs)
//! over rustls: bytes rustls accepted while the socket was full must go out
//! once the socket has room, even when the body has nothing more to send.

mod util;

use std::sync::Arc;
use std::time::Duration;

use ssechan::protocol::query::channel_query;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use util::tls_cert::Cert;
use util::*;

/// One message's text: big enough to fill the socket in a few hundred
/// events, small enough that two fit in rustls's buffer for a stream.
const CHUNK: usize = 4000;
/// The start of the event the test waits for (the number it ends with
/// makes it the only one that says it).
const LAST: &str = "the-last-event";

/// `ssechan_events_written_total` from the metrics listener.
async fn events_written(metrics: &str) -> u64 {
    let text = reqwest::get(metrics).await.expect("metrics").text().await.expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("ssechan_events_written_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no events_written in {text}"))
}

/// Waits until the server has handed `n` events to streams.
async fn handed(metrics: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while events_written(metrics).await < n {
        assert!(tokio::time::Instant::now() < deadline, "event {n} never handed to the stream");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes the server's end of the connection `server` -> `client` has
/// taken from the server so far (acknowledged by the client's kernel, or
/// queued to send), from the kernel's own view (`ss -ti`: `bytes_acked`
/// and the send queue). A write the socket refuses leaves it unchanged.
fn taken_by_socket(server_port: u16, client_port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( sport = :{server_port} and dport = :{client_port} )"))
        .output()
        .expect("ss (iproute2) runs");
    assert!(out.status.success(), "ss: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    // With a state filter the columns are Recv-Q, Send-Q, local, peer.
    let queued: u64 = fields.nth(1).and_then(|q| q.parse().ok()).unwrap_or_else(|| {
        panic!("no send queue in {text:?}");
    });
    let acked: u64 = fields
        .find_map(|f| f.strip_prefix("bytes_acked:").and_then(|v| v.parse().ok()))
        .unwrap_or(0); // absent until the first byte is acknowledged
    acked + queued
}

/// The bug this guards: tokio-rustls's write takes plaintext into rustls
/// when the socket is full and reports it written; if the writer then waits
/// on the body without flushing, the last event stays in rustls until a
/// later write (with heartbeats off, never). The client stops reading until
/// the server's socket is full, the last event goes in after that, then the
/// client reads everything and must get it.
#[tokio::test]
async fn an_https1_stream_flushes_what_rustls_holds_once_the_socket_has_room() {
    let cert = Cert::new();
    let mut args = cert.args();
    args.extend(["--echo", "--heartbeat", "0", "--metrics", "127.0.0.1:0"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut serve = Serve::spawn(&args).await;
    let line = serve.err_line_with("metrics on ").await;
    let metrics = line.split("metrics on ").nth(1).expect("a URL").trim().to_owned();
    let url = reqwest::Url::parse(&serve.url).expect("URL");
    let port = url.port().expect("port");

    // A raw TLS client (its local port names the connection to `ss`) that
    // asks HTTP/1.1 only: the stream is written by the direct writer.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let client_port = tcp.local_addr().expect("local").port();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(cert.der.clone())).expect("root");
    let mut config = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls =
        TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
    let who = "flush";
    let head = format!(
        "GET {}?{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n",
        url.path(),
        channel_query(who, None)
    );
    tls.write_all(head.as_bytes()).await.expect("send GET");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf)).await.expect("head").expect("read");
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    assert!(String::from_utf8_lossy(&got).contains("connection: close"), "not the direct writer");

    // Not reading: events until the socket refuses one (takes less than
    // its text: rustls holds the rest). Each is handed to the stream before
    // the socket is looked at. Then a short one, the last, which the socket
    // refuses too (its tail segment is full, and nothing is acknowledged
    // while the client reads nothing): rustls keeps it. Should the socket
    // have taken it after all (the write was still under way when looked
    // at), go on.
    let poster = cert.client(true);
    let mut sent = 0u64;
    let body = "x".repeat(CHUNK);
    let mut taken = taken_by_socket(port, client_port);
    let last = loop {
        assert!(sent < 20_000, "the socket never filled ({sent} events)");
        assert_eq!(post(&poster, &serve.url, who, sent, &body).await, 200);
        sent += 1;
        handed(&metrics, sent).await;
        let before = std::mem::replace(&mut taken, taken_by_socket(port, client_port));
        if taken - before >= CHUNK as u64 {
            continue;
        }
        let last = format!("{LAST}-{sent}");
        assert_eq!(post(&poster, &serve.url, who, sent, &last).await, 200);
        sent += 1;
        handed(&metrics, sent).await;
        let before = std::mem::replace(&mut taken, taken_by_socket(port, client_port));
        if taken - before < last.len() as u64 {
            break format!("\"{last}\""); // as its data line says it
        }
    };

    // Everything is read; the last event arrives (the server has nothing
    // more to send, and no heartbeat would push it out).
    let deadline = tokio::time::Instant::now() + WAIT;
    while !got.windows(last.len()).any(|w| w == last.as_bytes()) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let n = tokio::time::timeout(left, tls.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the last event never arrived: {} bytes read after {sent} events, held by rustls",
                    got.len()
                )
            })
            .expect("read");
        assert!(n > 0, "the stream closed before the last event");
        got.extend_from_slice(&buf[..n]);
    }
    let events = String::from_utf8_lossy(&got).matches("\nid: ").count();
    assert_eq!(events as u64, sent, "every event arrived once");
}
