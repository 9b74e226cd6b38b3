//! Test support: a real server on loopback, a reader of its event stream,
//! POSTs, and the real `ssechan serve` binary as a child process.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use ssechan::protocol::parser::{EventStreamParser, Parsed};
use ssechan::protocol::query::channel_query;
use ssechan::server::{Server, ServerConfig};

#[path = "../support/tls_cert.rs"]
pub mod tls_cert;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Generous: these machines are slow and busy. Waits poll for a condition.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn server(config: ServerConfig) -> Server {
    Server::bind("127.0.0.1:0", config).await.expect("bind")
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client")
}

/// Posts a raw body; returns status and body text.
pub async fn post_raw(url: &str, query: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let r = http().post(format!("{url}?{query}")).body(body).send().await.expect("post");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// Posts message `id` of `who` as package:sse does; returns status and
/// body text (the reason of a refusal).
pub async fn post_text(url: &str, who: &str, id: u64, msg: &str) -> (u16, String) {
    let body = ssechan::protocol::encode_message_body(msg);
    post_raw(url, &channel_query(who, Some(id)), body).await
}

/// Posts message `id` of `client` as package:sse does.
pub async fn post(client: &reqwest::Client, url: &str, who: &str, id: u64, msg: &str) -> u16 {
    let body = ssechan::protocol::encode_message_body(msg);
    let r = client
        .post(format!("{url}?{}", channel_query(who, Some(id))))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body)
        .send()
        .await
        .expect("post");
    r.status().as_u16()
}

/// A message event as the stream carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub id: u64,
    pub data: String,
}

/// One open event stream, read with the crate's WHATWG parser.
pub struct Stream {
    pub response: reqwest::Response,
    parser: EventStreamParser,
    pub comments: Vec<String>,
    pub retry: Option<u64>,
    pub raw: Vec<u8>,
    pub chunks: usize,
    pub ended: bool,
}

pub async fn open(url: &str, who: &str, last_event_id: Option<u64>) -> Stream {
    let mut req = http()
        .get(format!("{url}?{}", channel_query(who, None)))
        .header("accept", "text/event-stream");
    if let Some(l) = last_event_id {
        req = req.header("last-event-id", l.to_string());
    }
    let response = req.send().await.expect("get");
    assert_eq!(response.status(), 200, "GET {url} for {who}");
    Stream::new(response)
}

impl Stream {
    pub fn new(response: reqwest::Response) -> Self {
        Stream {
            response,
            parser: EventStreamParser::new(),
            comments: Vec::new(),
            retry: None,
            raw: Vec::new(),
            chunks: 0,
            ended: false,
        }
    }

    /// Next event of any type, or `None` at end of stream / on timeout.
    pub async fn next_event(&mut self, within: Duration) -> Option<ssechan::protocol::Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(item) = self.parser.next_item().expect("parse") {
                match item {
                    Parsed::Event(e) => return Some(e),
                    Parsed::Retry(ms) => self.retry = Some(ms),
                    Parsed::Comment(c) => self.comments.push(c),
                }
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(chunk))) => {
                    self.chunks += 1;
                    self.raw.extend_from_slice(&chunk);
                    self.parser.feed(&chunk);
                }
                Ok(_) => self.ended = true,
            }
        }
    }

    /// Next message event, decoded; panics on anything else.
    pub async fn next_msg(&mut self) -> Msg {
        let e = self.next_event(WAIT).await.expect("a message event");
        assert_eq!(e.event, "message", "{e:?}");
        let data = ssechan::protocol::decode_message_body(e.data.as_bytes()).expect("JSON string");
        Msg { id: e.last_event_id.parse().expect("numeric id"), data }
    }

    pub async fn msgs(&mut self, n: usize) -> Vec<Msg> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.next_msg().await);
        }
        v
    }

    /// Waits for the end of the stream; returns the events seen before it.
    pub async fn until_end(&mut self) -> Vec<ssechan::protocol::Event> {
        let mut v = Vec::new();
        while let Some(e) = self.next_event(WAIT).await {
            v.push(e);
        }
        assert!(self.ended, "stream did not end within {WAIT:?}");
        v
    }
}

/// The real `ssechan serve` binary.
pub struct Serve {
    pub child: Child,
    pub url: String,
    pub stdin: Option<ChildStdin>,
    pub stdout: mpsc::UnboundedReceiver<String>,
    pub stderr: mpsc::UnboundedReceiver<String>,
}

impl Serve {
    pub async fn spawn(args: &[&str]) -> Serve {
        Self::spawn_with("127.0.0.1:0", args, &[]).await
    }

    pub async fn spawn_at(listen: &str, args: &[&str]) -> Serve {
        Self::spawn_with(listen, args, &[]).await
    }

    /// Like [`Serve::spawn`], with these variables added to its environment.
    pub async fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Serve {
        Self::spawn_with("127.0.0.1:0", args, env).await
    }

    pub async fn spawn_with(listen: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ssechan"))
            // What it logs is what its flags say, whatever the caller's.
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .arg("serve")
            .args(["--listen", listen])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ssechan serve");
        let stdout = lines(child.stdout.take().expect("stdout"));
        let mut stderr = lines(child.stderr.take().expect("stderr"));
        let url = loop {
            let line = tokio::time::timeout(WAIT, stderr.recv())
                .await
                .expect("listening line in time")
                .expect("listening line before exit");
            if let Some(url) = line.strip_prefix("ssechan: listening on ") {
                break url.to_owned();
            }
        };
        let stdin = child.stdin.take();
        Serve { child, url, stdin, stdout, stderr }
    }

    pub async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.expect("write stdin");
        stdin.write_all(b"\n").await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    pub async fn out_line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.stdout.recv())
            .await
            .expect("a stdout line in time")
            .expect("stdout open")
    }

    /// Next stdout line parsed as JSON.
    pub async fn out_json(&mut self) -> serde_json::Value {
        let line = self.out_line().await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
    }

    /// Waits for a stderr line containing `needle`.
    pub async fn err_line_with(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(WAIT, self.stderr.recv())
                .await
                .unwrap_or_else(|_| panic!("no stderr line with {needle:?} in time"))
                .unwrap_or_else(|| panic!("stderr closed before a line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig);
    }
}

/// Sends signal `sig` to a child of the test.
pub fn signal(child: &Child, sig: i32) {
    let pid = child.id().expect("running") as i32;
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Each line of `r`, as it comes.
pub fn lines<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    r: R,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut r = BufReader::new(r).lines();
        while let Ok(Some(l)) = r.next_line().await {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The pids of `pid`'s children, all threads included.
pub fn children(pid: u32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return vec![] };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|l| l.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<_>>())
        .collect()
}

/// Polls `f` until it returns `Some`, up to [`WAIT`].
pub async fn eventually<T, F: FnMut() -> Option<T>>(what: &str, mut f: F) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How a test stream reaches the server: each stream behaviour must hold on
/// every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A new connection whose first request is the GET: ssechan's own
    /// close-delimited writer.
    Fresh,
    /// An HTTP/1.1 connection that already served a request: hyper, chunked.
    KeptAlive,
    /// HTTP/2 without TLS (prior knowledge): hyper, multiplexed.
    H2c,
    /// HTTP/2 over TLS (ALPN), as browsers use it.
    H2Tls,
}

/// A server reached one [`Transport`] way, with the client that goes with it.
pub struct Link {
    transport: Transport,
    cert: Option<tls_cert::Cert>,
}

impl Transport {
    /// A server for `config`, with TLS for [`Transport::H2Tls`].
    pub async fn serve(self, mut config: ServerConfig) -> (Server, Link) {
        let cert = (self == Transport::H2Tls).then(tls_cert::Cert::new);
        if let Some(c) = &cert {
            config.tls =
                Some(ssechan::server::TlsConfig::from_pem_files(&c.cert, &c.key).expect("tls"));
        }
        (server(config).await, Link { transport: self, cert })
    }
}

impl Link {
    /// A client for POSTs and the like (trusting the test certificate).
    pub fn http(&self) -> reqwest::Client {
        match &self.cert {
            Some(c) => c.client(false),
            None => http(),
        }
    }

    pub async fn post(&self, url: &str, who: &str, id: u64, msg: &str) -> u16 {
        post(&self.http(), url, who, id, msg).await
    }

    /// Opens the channel stream of `who` this way and checks it took the
    /// path it names.
    pub async fn open(&self, url: &str, who: &str, last_event_id: Option<u64>) -> Stream {
        let query = channel_query(who, None);
        let url = format!("{url}?{query}");
        let client = match self.transport {
            Transport::KeptAlive => None,
            Transport::Fresh => Some(http()),
            Transport::H2c => {
                Some(reqwest::Client::builder().http2_prior_knowledge().build().expect("client"))
            }
            Transport::H2Tls => Some(self.http()),
        };
        let response = if let Some(client) = client {
            let mut req = client.get(&url).header("accept", "text/event-stream");
            if let Some(l) = last_event_id {
                req = req.header("last-event-id", l.to_string());
            }
            req.send().await.expect("get")
        } else {
            get_after_a_head(&url, last_event_id).await
        };
        let t = self.transport;
        assert_eq!(response.status(), 200, "GET {url} for {who} over {t:?}");
        let h = response.headers();
        let close_delimited = h.get("connection").is_some_and(|v| v == "close");
        match t {
            Transport::Fresh => assert!(close_delimited, "{h:?}"),
            Transport::KeptAlive => {
                assert!(!close_delimited, "{h:?}");
                assert_eq!(h.get("transfer-encoding").map(|v| v.as_bytes()), Some(&b"chunked"[..]));
            }
            Transport::H2c | Transport::H2Tls => {
                assert_eq!(response.version(), reqwest::Version::HTTP_2)
            }
        }
        Stream::new(response)
    }
}

/// A stream `GET` as the second request of an HTTP/1.1 connection, after a
/// `HEAD` (which has no side effect). One hyper connection, so that the GET
/// cannot go out on a new one, as it could through a pool that has not had
/// the first connection back yet.
async fn get_after_a_head(url: &str, last_event_id: Option<u64>) -> reqwest::Response {
    use http_body_util::Empty;
    let uri: hyper::Uri = url.parse().expect("url");
    let host = uri.authority().expect("host").as_str().to_owned();
    let target = uri.path_and_query().expect("path").as_str().to_owned();
    let tcp = tokio::net::TcpStream::connect(&host).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("handshake");
    tokio::spawn(conn);
    let request =
        |method| hyper::Request::builder().method(method).uri(&target).header("host", &host);
    let empty = Empty::<bytes::Bytes>::new;
    let head = request(hyper::Method::HEAD).body(empty()).expect("request");
    let head = sender.send_request(head).await.expect("head");
    assert_eq!(head.status(), 200);
    sender.ready().await.expect("the connection takes a second request");
    let mut get = request(hyper::Method::GET).header("accept", "text/event-stream");
    if let Some(l) = last_event_id {
        get = get.header("last-event-id", l.to_string());
    }
    let response = sender.send_request(get.body(empty()).expect("request")).await.expect("get");
    reqwest::Response::from(response.map(reqwest::Body::wrap))
}
