//! A server that dies without closing: it answers each GET with a valid
//! event stream, sends one event, then says nothing ever again and keeps
//! the connection open, as a powered-off host or a NAT that forgot the
//! connection looks to the client (no FIN, no RST).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One GET seen by [`SilentServer`].
#[derive(Debug, Clone)]
pub struct Get {
    pub request_line: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// When its head had arrived.
    pub at: Instant,
}

impl Get {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

pub struct SilentServer {
    pub url: String,
    seen: Arc<Mutex<Vec<Get>>>,
}

impl SilentServer {
    /// The n-th stream (from 1) carries `id: n` and the message `"event n"`
    /// (a JSON string, so channel clients take it too).
    pub fn start() -> SilentServer {
        Self::start_with(None)
    }

    /// Like [`SilentServer::start`], but each stream, after `pause` of
    /// silence, carries one more event (`"again n"`, id `n` too), then
    /// falls silent for good: a test waits for that event, not for time.
    pub fn start_speaking_after(pause: Duration) -> SilentServer {
        Self::start_with(Some(pause))
    }

    fn start_with(again: Option<Duration>) -> SilentServer {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("nonblocking listener");
        let url = format!("http://{}/sse", std_listener.local_addr().expect("local addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        // The thread outlives the test; the process ends with the test binary.
        thread::spawn(move || {
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                let mut n = 0u64;
                while let Ok((stream, _)) = listener.accept().await {
                    n += 1;
                    tokio::spawn(serve_one(stream, n, again, log.clone()));
                }
            })
        });
        SilentServer { url, seen }
    }

    pub fn gets(&self) -> Vec<Get> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits up to `within` for at least `count` GETs.
    pub fn wait_for_gets(&self, count: usize, within: Duration) -> Vec<Get> {
        let deadline = Instant::now() + within;
        loop {
            let gets = self.gets();
            if gets.len() >= count || Instant::now() > deadline {
                return gets;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

async fn serve_one(
    mut stream: TcpStream,
    n: u64,
    again: Option<Duration>,
    log: Arc<Mutex<Vec<Get>>>,
) {
    let Some(get) = read_head(&mut stream).await else { return };
    log.lock().expect("lock").push(get);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n\
         retry: 10\n\nid: {n}\ndata: \"event {n}\"\n\n"
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    if let Some(pause) = again {
        tokio::time::sleep(pause).await;
        let more = format!("id: {n}\ndata: \"again {n}\"\n\n");
        if stream.write_all(more.as_bytes()).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
    // Silence: hold the connection open for good without writing or closing.
    // Reading (and dropping) what the client may send keeps its side happy;
    // its FIN ends the read but not the hold.
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(k) if k > 0) {}
    std::future::pending::<()>().await;
}

async fn read_head(stream: &mut TcpStream) -> Option<Get> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 64 * 1024 || stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Get { request_line, headers, at: Instant::now() })
}
