//! `serve --tls-cert --tls-key`: HTTPS with ALPN h2 and http/1.1 from the
//! command line, and bad certificate files refused at start. Every stream
//! behaviour over h2 with TLS is in store_conformance.rs.

mod util;

use std::path::PathBuf;

use reqwest::Version;
use ssechan::protocol::query::channel_query;
use util::tls_cert::Cert;
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

/// A fresh HTTPS/1.1 stream is written straight from its queue as over
/// plain TCP (close-delimited, no hyper buffers: issue 18's memory row),
/// and a POST on a kept-alive HTTPS/1.1 connection still goes to hyper.
#[tokio::test]
async fn an_https1_stream_is_close_delimited_and_posts_still_work() {
    let cert = Cert::new();
    let serve = serve_tls(&cert, &["--echo"]).await;
    let client = cert.client(true);
    let r = client
        .get(format!("{}?{}", serve.url, channel_query("direct", None)))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), Version::HTTP_11);
    assert_eq!(r.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    assert!(r.headers().get("transfer-encoding").is_none(), "{:?}", r.headers());
    let mut s = Stream::new(r);
    for i in 0..20 {
        assert_eq!(post(&client, &serve.url, "direct", i, &format!("m{i}")).await, 200);
    }
    for i in 0..20u64 {
        assert_eq!(s.next_msg().await, Msg { id: i + 1, data: format!("m{i}") });
    }
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

/// `ssechan connect` against `serve --tls-cert`: the hint after a failed
/// handshake fits its cause. A certificate marked CA:TRUE (OpenSSL 3's
/// `req -x509` default) cannot serve however it is trusted: the hint says
/// how to make one that can, not to pass the --cacert that was passed.
#[tokio::test]
async fn connect_names_the_fix_for_each_certificate_failure() {
    let connect = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
            .arg("connect")
            .args(["--timeout", "5s"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        err
    };
    let s = |p: &PathBuf| p.display().to_string();
    let ca = Cert::openssl_ca_marked();
    let serve = serve_tls(&ca, &["--echo"]).await;
    let err = connect(vec!["--cacert".into(), s(&ca.cert), serve.url.clone()]).await;
    assert!(err.contains("CaUsedAsEndEntity"), "{err}");
    assert!(err.contains("-addext basicConstraints=critical,CA:FALSE"), "{err}");
    assert!(!err.contains("--cacert FILE"), "{err}");

    let cert = Cert::new();
    let other = Cert::new();
    let serve = serve_tls(&cert, &["--echo"]).await;
    let err = connect(vec![serve.url.clone()]).await;
    assert!(err.contains("UnknownIssuer (--cacert FILE trusts it, -k skips the check)"), "{err}");
    let err = connect(vec!["--cacert".into(), s(&other.cert), serve.url.clone()]).await;
    assert!(err.contains("the --cacert file holds neither"), "{err}");
}

/// `ssechan bench` over https gives the same hints as `connect`: the first
/// contact with a server whose certificate is marked CA:TRUE names the
/// OpenSSL option, not the `--cacert` that was given.
#[tokio::test]
async fn bench_names_the_fix_for_a_certificate_marked_as_a_cas() {
    let ca = Cert::openssl_ca_marked();
    let serve = serve_tls(&ca, &["--echo"]).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["bench", &serve.url, "--cacert", ca.cert.to_str().unwrap(), "-c", "1", "-m", "1"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("CaUsedAsEndEntity"), "{err}");
    assert!(err.contains("-addext basicConstraints=critical,CA:FALSE"), "{err}");
    assert!(!err.contains("--cacert FILE"), "{err}");
}
