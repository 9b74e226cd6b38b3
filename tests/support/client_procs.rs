//! Real processes for the connect tests: `ssechan serve` and `ssechan
//! connect` as children, their output read line by line on threads, every
//! wait bounded by a deadline.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous: the machine is small and shared.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ssechan")
}

/// A child whose stdout arrives as lines and whose stderr is collected.
pub struct Proc {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub stderr: Arc<Mutex<String>>,
    stderr_lines: Receiver<String>,
    /// The command line, for failure reports.
    args: String,
    /// Ends at stderr's EOF: joined so an exited child's stderr is complete.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ssechan");
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (etx, stderr_lines) = channel();
        let sink = stderr.clone();
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = etx.send(line);
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
            stderr,
            stderr_lines,
            args: args.join(" "),
            stderr_reader: Some(stderr_reader),
        }
    }

    /// The next stdout line, or `None` at EOF; panics after `WAIT`.
    pub fn line(&self) -> Option<String> {
        match self.lines.recv_timeout(WAIT) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no stdout line within {WAIT:?}; stderr:\n{}", self.stderr())
            }
        }
    }

    /// Reads stdout lines until one satisfies `pred`; panics at EOF or timeout.
    pub fn line_where(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("waiting for {what}: {e:?}; stderr:\n{}", self.stderr()),
            }
        }
    }

    /// Every stdout line still to come, up to EOF (the child exited or
    /// closed it); panics after `WAIT`.
    pub fn rest(&self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(RecvTimeoutError::Disconnected) => return lines,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "stdout still open after {WAIT:?}: {lines:?}; stderr:\n{}",
                        self.stderr()
                    )
                }
            }
        }
    }

    /// Reads JSON stdout lines until one has `"event": event`.
    pub fn json_event(&self, event: &str) -> Value {
        let line = self.line_where(event, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == event)
        });
        serde_json::from_str(&line).unwrap()
    }

    /// The next stderr line matching `pred`.
    pub fn stderr_where(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(e) => panic!("waiting for {what} on stderr: {e:?}; stderr:\n{}", self.stderr()),
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).expect("write to child stdin");
        stdin.flush().expect("flush child stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the exit; panics (after killing it) past `WAIT`.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {WAIT:?}; stderr:\n{}", self.stderr());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (e.g. `libc::SIGUSR1`) to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what every process it ran said.
        if thread::panicking() {
            eprintln!("--- stderr of {}:\n{}", self.args, self.stderr());
        }
    }
}

/// `ssechan serve --format json` on `listen`, with its URL and port.
pub struct Serve {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
}

impl Serve {
    pub fn start(extra: &[&str]) -> Serve {
        Self::start_on("127.0.0.1:0", extra)
    }

    pub fn start_on(listen: &str, extra: &[&str]) -> Serve {
        let mut args = vec!["serve", "--listen", listen, "--format", "json"];
        args.extend_from_slice(extra);
        let proc = Proc::spawn(&args, &[]);
        let line = proc.stderr_where("the listening line", |l| l.contains("listening on "));
        let url = line.rsplit("listening on ").next().unwrap().trim().to_owned();
        let port = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .and_then(|hp| hp.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("port in the listening URL");
        Serve { proc, url, port }
    }

    /// Sends one JSON command on serve's stdin.
    pub fn command(&mut self, cmd: Value) {
        self.proc.write(&format!("{cmd}\n"));
    }

    /// Waits for a client to connect; returns its id.
    pub fn client(&self) -> String {
        let ev = self.proc.json_event("connect");
        ev["client"].as_str().expect("client id").to_owned()
    }

    /// The data of the next `count` message events, in order.
    pub fn messages(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| {
                let ev = self.proc.json_event("message");
                ev["data"].as_str().expect("message data").to_owned()
            })
            .collect()
    }
}

/// `ssechan connect` with `args` (the URL included), in pipe mode.
pub fn connect(args: &[&str]) -> Proc {
    let mut all = vec!["connect"];
    all.extend_from_slice(args);
    Proc::spawn(&all, &[])
}

/// One request seen by [`SseServer`].
#[derive(Debug, Clone)]
pub struct Seen {
    pub request_line: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// When its head had arrived.
    pub at: Instant,
    /// The body, when a Content-Length announced one.
    pub body: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A tiny plain HTTP/1.1 server: the n-th request gets the n-th canned
/// response (the last one repeats), then the connection closes.
pub struct SseServer {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl SseServer {
    pub fn start(responses: Vec<String>) -> SseServer {
        Self::start_with(responses, true)
    }

    /// Answers each connection at once, before any request arrives (what a
    /// plain HTTP server does to bytes it cannot parse, e.g. a TLS hello).
    pub fn start_eager(responses: Vec<String>) -> SseServer {
        Self::start_with(responses, false)
    }

    fn start_with(responses: Vec<String>, read_first: bool) -> SseServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { break };
                let head = if read_first {
                    read_head(&mut stream)
                } else {
                    Seen {
                        request_line: String::new(),
                        headers: Vec::new(),
                        at: Instant::now(),
                        body: String::new(),
                    }
                };
                log.lock().unwrap().push(head);
                let resp = responses.get(n).or(responses.last()).cloned().unwrap_or_default();
                let _ = stream.write_all(resp.as_bytes());
                let _ = stream.flush();
            }
        });
        SseServer { url, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A 200 event stream whose body ends with the connection.
    pub fn stream(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{body}"
        )
    }

    pub fn status(status_line: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

fn read_head(stream: &mut std::net::TcpStream) -> Seen {
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let at = Instant::now();
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    let _ = stream.read_exact(&mut body);
    Seen { request_line, headers, at, body: String::from_utf8_lossy(&body).into_owned() }
}

/// A plain SSE endpoint (not a channel): every GET gets a stream of named
/// `tick` events, one every 50 ms, for good; every POST gets 501, as
/// most web servers answer a method they do not serve.
pub struct PlainSse {
    pub url: String,
    pub posts: Arc<Mutex<u64>>,
}

impl PlainSse {
    pub fn start() -> PlainSse {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let posts = Arc::new(Mutex::new(0));
        let count = posts.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let count = count.clone();
                thread::spawn(move || {
                    let seen = read_head(&mut stream);
                    if seen.request_line.starts_with("POST") {
                        *count.lock().unwrap() += 1;
                        let page = "<html><body>501 Not Implemented</body></html>";
                        let _ = write!(
                            stream,
                            "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                            page.len()
                        );
                        return;
                    }
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
                    );
                    for n in 1.. {
                        let ev = format!("event: tick\nid: {n}\ndata: {n}\n\n");
                        if stream.write_all(ev.as_bytes()).is_err() {
                            return;
                        }
                        thread::sleep(Duration::from_millis(50));
                    }
                });
            }
        });
        PlainSse { url, posts }
    }
}
