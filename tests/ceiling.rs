//! examples/ceiling.rs, the bare-hyper ceilings `scripts/perf.sh compare`
//! (scripts/perf_compare.sh) measures ssechan against: each mode does what
//! the script relies on, and keeps the bounds every listener keeps.

mod util;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use util::WAIT;

/// The example `cargo test` builds next to the binary under test.
fn ceiling_exe() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ssechan"));
    let dir = bin.parent().expect("the binary's directory");
    let exe = dir.join("examples").join("ceiling");
    assert!(
        exe.is_file(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build --example ceiling`)",
        exe.display()
    );
    exe
}

/// `ceiling MODE 127.0.0.1:0 ARGS…`, and the address it says it listens on.
async fn ceiling(mode: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(ceiling_exe())
        .arg(mode)
        .arg("127.0.0.1:0")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ceiling");
    let mut err = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(WAIT, err.next_line())
        .await
        .expect("the listening line in time")
        .expect("stderr")
        .expect("the listening line before exit");
    let addr = line.strip_prefix("listening on http://").unwrap_or_else(|| panic!("{line:?}"));
    (child, addr.to_owned())
}

/// Reads `r`'s body until `text` has come; everything read.
async fn read_until(r: &mut reqwest::Response, got: &mut String, text: &str) {
    while !got.contains(text) {
        let chunk = tokio::time::timeout(WAIT, r.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {text:?} in time; read {got:?}"))
            .expect("read")
            .unwrap_or_else(|| panic!("ended before {text:?}; read {got:?}"));
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn ceiling_post_answers_every_post_200_over_http1_and_h2c() {
    let (_child, addr) = ceiling("post", &[]).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().expect("client");
    for (client, version) in
        [(util::http(), reqwest::Version::HTTP_11), (h2, reqwest::Version::HTTP_2)]
    {
        for i in 0..20 {
            let r = client
                .post(format!("http://{addr}/sse?sseClientId=c&messageId={i}"))
                .body(format!("\"m{i}\""))
                .send()
                .await
                .expect("POST");
            assert_eq!((r.status().as_u16(), r.version()), (200, version));
            assert_eq!(r.bytes().await.expect("body"), "", "an empty answer");
        }
    }
}

#[tokio::test]
async fn ceiling_echo_writes_each_post_to_its_clients_stream() {
    let (_child, addr) = ceiling("echo", &[]).await;
    let url = format!("http://{addr}/sse");
    let client = util::http();
    let mut stream = client.get(format!("{url}?sseClientId=a")).send().await.expect("GET");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut got = String::new();
    for i in 0..3 {
        let r = client
            .post(format!("{url}?sseClientId=a&messageId={i}"))
            .body(format!("\"m{i}\""))
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 200);
        read_until(&mut stream, &mut got, &format!("id: {}\ndata: \"m{i}\"\n\n", i + 1)).await;
    }
    assert_eq!(got, "id: 1\ndata: \"m0\"\n\nid: 2\ndata: \"m1\"\n\nid: 3\ndata: \"m2\"\n\n");

    let status = |r: reqwest::Response| r.status().as_u16();
    let post = |who: &str, body: Vec<u8>| {
        client.post(format!("{url}?sseClientId={who}&messageId=9")).body(body).send()
    };
    assert_eq!(status(post("nobody", b"x".to_vec()).await.expect("POST")), 404, "no stream");
    assert_eq!(status(client.get(url.clone()).send().await.expect("GET")), 400, "no id");
    // Bodies as `serve`'s default bound: 64 KiB is taken, one byte more is 413.
    assert_eq!(status(post("a", vec![b'x'; 64 * 1024]).await.expect("POST")), 200);
    assert_eq!(status(post("a", vec![b'x'; 64 * 1024 + 1]).await.expect("POST")), 413);
    read_until(&mut stream, &mut got, "id: 4\ndata: xxx").await;
}

/// 65,536 client ids at once (streams open over h2c, 200 to a connection,
/// hyper's default): the next GET gets 503; once one stream ended, its id
/// leaves and a new one is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceiling_echo_refuses_client_ids_past_its_bound() {
    const IDS: usize = 65_536;
    const PER_CONNECTION: usize = 200;
    let (_child, addr) = ceiling("echo", &[]).await;
    let mut tasks = Vec::new();
    for c in 0..IDS.div_ceil(PER_CONNECTION) {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .expect("h2c handshake");
            tokio::spawn(conn);
            let first = c * PER_CONNECTION;
            let opens = (first..IDS.min(first + PER_CONNECTION)).map(|i| {
                let mut send = send.clone();
                let req = hyper::Request::get(format!("http://{addr}/sse?sseClientId=i{i}"))
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                async move {
                    send.ready().await.expect("connection ready");
                    let r = send.send_request(req).await.expect("GET");
                    assert_eq!(r.status(), 200, "id i{i} within the bound");
                    r
                }
            });
            let streams = futures_util::future::join_all(opens).await;
            (send, streams)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.push(
            tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("opened in time")
                .expect("task"),
        );
    }
    let client = util::http();
    let get = |who: String| client.get(format!("http://{addr}/sse?sseClientId={who}")).send();
    assert_eq!(get("one-more".into()).await.expect("GET").status(), 503, "past the bound");
    // One stream ends (its h2 stream reset); its id leaves first.
    let ended = held[0].1.pop().expect("a stream");
    drop(ended);
    let mut tries = 0;
    loop {
        let r = get(format!("after-{tries}")).await.expect("GET");
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503);
        tries += 1;
        assert!(tries < 500, "the ended stream's id never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
}

/// `fanout ADDR N` answers its first N streams together, then every stream
/// is the fan-out events (its own ids, the shared data line); `count` reads
/// N streams, says `open N` on stderr, and prints the JSON line
/// perf_compare.sh reads (`events_per_s`, `ended_early`).
#[tokio::test]
async fn ceiling_fanout_streams_events_and_count_counts_them() {
    let (_child, addr) = ceiling("fanout", &["2"]).await;
    let url = format!("http://{addr}/sse");
    let out = Command::new(ceiling_exe()).args(["count", &url, "2", "0.5"]).output();
    let out = tokio::time::timeout(WAIT, out).await.expect("count ended in time").expect("count");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.lines().any(|l| l == "open 2"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(json["streams"], 2, "{json}");
    assert_eq!(json["ended_early"], 0, "{json}");
    assert!(json["events"].as_u64().expect("events") > 0, "{json}");
    assert!(json["events_per_s"].as_f64().expect("events_per_s") > 0.0, "{json}");

    // Past the gate a stream starts at once, with the events as `serve`
    // writes the fan-out row's line.
    let mut r = util::http().get(format!("{url}?sseClientId=x")).send().await.expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let line = "fan-out message .................................";
    let mut got = String::new();
    read_until(&mut r, &mut got, "id: 3\n").await;
    let want = format!("id: 1\ndata: \"{line}\"\n\nid: 2\ndata: \"{line}\"\n\nid: 3\n");
    assert!(got.starts_with(&want), "{got:?}");
}
