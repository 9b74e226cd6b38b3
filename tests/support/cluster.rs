//! Debian's redis-server and haproxy, started by the tests on free ports
//! with their files in a temporary directory, stopped when dropped; and
//! `ssechan serve --redis` instances of the real binary. A test that cannot
//! start them fails: `.ci/run` installs both.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::util::{Serve, WAIT};

/// A port free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with the pid of a child we own and a valid signal.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits until `check` passes or `what` is reported missing.
fn wait_until(what: &str, child: &mut Child, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        if check() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not start within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// A redis-server of its own: no persistence, loopback only.
    pub fn start() -> RedisServer {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) starts: .ci/run installs it");
        wait_until("redis-server", &mut child, || ping(port));
        RedisServer { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops answering without closing connections (SIGSTOP): the harshest
    /// outage, where requests hang.
    pub fn pause(&self) {
        signal(&self.child, libc::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(&self.child, libc::SIGCONT);
    }

    /// A command's reply, raw (RESP), for checks of what the store holds.
    pub fn command(&self, args: &[&str]) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        c.write_all(req.as_bytes()).expect("write");
        let mut buf = vec![0u8; 1 << 16];
        let n = c.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    c.write_all(b"PING\r\n").is_ok()
        && c.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// haproxy in front of `backends`: round-robin, no stickiness, every
/// request balanced on its own.
pub struct Haproxy {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl Haproxy {
    pub fn start(backends: &[SocketAddr]) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let servers: String =
            backends.iter().enumerate().map(|(i, a)| format!("  server s{i} {a}\n")).collect();
        let config = format!(
            "global\n  maxconn 8192\n\
             defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend channel\n  bind 127.0.0.1:{port}\n  default_backend instances\n\
             backend instances\n  balance roundrobin\n{servers}"
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).expect("write haproxy.cfg");
        let mut child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (Debian's haproxy package) starts: .ci/run installs it");
        wait_until("haproxy", &mut child, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        Haproxy { child, port, dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/sse", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` instances of `ssechan serve --redis`, each with `args`.
pub async fn instances(redis: &RedisServer, n: usize, args: &[&str]) -> Vec<Serve> {
    let url = redis.url();
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let mut all = vec!["--redis", &url];
        all.extend_from_slice(args);
        v.push(Serve::spawn(&all).await);
    }
    v
}

/// The address an instance listens on.
pub fn addr(s: &Serve) -> SocketAddr {
    let hostport = s.url.trim_start_matches("http://").trim_end_matches("/sse");
    hostport.parse().expect("instance address")
}
