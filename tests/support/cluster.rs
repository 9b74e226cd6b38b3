//! Debian's redis-server and haproxy, started by the tests on free ports
//! with their files in a temporary directory, stopped when dropped; and
//! `ssechan serve --redis` instances of the real binary. A test that cannot
//! start them fails: `.ci/run` installs both. They die with the thread that
//! started them (PR_SET_PDEATHSIG), so that a test binary killed halfway
//! leaves nothing running.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
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

/// Kills the child when the thread spawning it ends (the test, or the
/// whole binary killed by a timeout).
fn dies_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// Waits until `check` passes; `Err` with the exit status if `what`
/// exited first (its port was taken between `free_port` and its bind).
fn wait_until(
    what: &str,
    child: &mut Child,
    mut check: impl FnMut() -> bool,
) -> Result<(), std::process::ExitStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        if check() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        assert!(Instant::now() < deadline, "{what} did not start within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `what` on a free port, on another if that one was taken
/// meanwhile (by a test running alongside).
fn start_on_a_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> T {
    let mut failures = Vec::new();
    for _ in 0..5 {
        match start(free_port()) {
            Ok(t) => return t,
            Err(e) => failures.push(e),
        }
    }
    panic!("{what} did not start: {failures:?}")
}

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// A redis-server of its own: no persistence, loopback only.
    pub fn start() -> RedisServer {
        start_on_a_free_port("redis-server", Self::try_start_on)
    }

    pub fn start_on(port: u16) -> RedisServer {
        Self::try_start_on(port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_on(port: u16) -> Result<RedisServer, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = dies_with_parent(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(dir.path().join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("redis-server (Debian's redis-server package) starts: .ci/run installs it");
        match wait_until("redis-server", &mut child, || ping(port)) {
            Ok(()) => {
                let redis = RedisServer { child, port, dir };
                // The one answering is ours, not one another test started.
                let info = redis.command(&["INFO", "server"]);
                let pid = format!("process_id:{}\r\n", redis.child.id());
                if info.contains(&pid) { Ok(redis) } else { Err(format!("port {port} was taken")) }
            }
            Err(status) => {
                let log = std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default();
                Err(format!("redis-server on port {port} exited with {status}: {log}"))
            }
        }
    }

    /// One redis-server for the whole test binary, for tests that each
    /// keep to a key prefix of their own. Started on first use by a thread
    /// that lives as long as the process (the server dies with it), and
    /// stopped, its directory removed, when the binary exits.
    pub fn shared() -> &'static RedisServer {
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(RedisServer::start());
                loop {
                    std::thread::park();
                }
            });
            let redis = rx.recv().expect("the shared redis-server started");
            // SAFETY: registers a plain function without arguments.
            unsafe {
                libc::atexit(stop_shared);
            }
            redis
        })
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

static SHARED: OnceLock<RedisServer> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(r) = SHARED.get() {
        let pid = r.child.id() as i32;
        // SAFETY: kill(2) and waitpid(2) on our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(r.dir.path());
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

/// Where haproxy sends each request, balanced round-robin within each list,
/// no stickiness: every request is routed on its own.
pub struct Routes<'a> {
    /// Stream GETs without `Last-Event-ID`: new channels.
    pub new_streams: &'a [SocketAddr],
    /// Stream GETs with `Last-Event-ID`: reconnects.
    pub reconnects: &'a [SocketAddr],
    /// Everything else (POSTs, DELETEs).
    pub rest: &'a [SocketAddr],
}

/// haproxy in front of the instances.
pub struct Haproxy {
    child: Child,
    pub port: u16,
    dir: TempDir,
}

impl Haproxy {
    /// Every request to any of `backends`.
    pub fn start(backends: &[SocketAddr]) -> Haproxy {
        Self::start_routed(&Routes { new_streams: backends, reconnects: backends, rest: backends })
    }

    pub fn start_routed(routes: &Routes) -> Haproxy {
        start_on_a_free_port("haproxy", |port| Self::try_start_on(port, routes))
    }

    fn try_start_on(port: u16, routes: &Routes) -> Result<Haproxy, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config: Vec<String> = [
            "global",
            "  maxconn 8192",
            "defaults",
            "  mode http",
            "  timeout connect 5s",
            "  timeout client 60s",
            "  timeout server 60s",
            "frontend channel",
            &format!("  bind 127.0.0.1:{port}"),
            "  acl stream method GET",
            "  acl resuming req.hdr(last-event-id) -m found",
            "  use_backend reconnects if stream resuming",
            "  use_backend new_streams if stream",
            "  default_backend rest",
        ]
        .map(str::to_owned)
        .into();
        for (name, servers) in [
            ("new_streams", routes.new_streams),
            ("reconnects", routes.reconnects),
            ("rest", routes.rest),
        ] {
            config.push(format!("backend {name}\n  balance roundrobin"));
            config
                .extend(servers.iter().enumerate().map(|(i, a)| format!("  server {name}{i} {a}")));
        }
        let config = config.join("\n") + "\n";
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, config).expect("write haproxy.cfg");
        let mut child = dies_with_parent(
            Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("haproxy (Debian's haproxy package) starts: .ci/run installs it");
        let up = || TcpStream::connect(("127.0.0.1", port)).is_ok();
        match wait_until("haproxy", &mut child, up) {
            Ok(()) => Ok(Haproxy { child, port, dir }),
            Err(status) => Err(format!("haproxy on port {port} exited with {status}")),
        }
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

/// The URL of an instance's `--metrics` listener, from its stderr.
pub async fn metrics_url(s: &mut Serve) -> String {
    let line = s.err_line_with("metrics on ").await;
    line.split("metrics on ").nth(1).expect("a URL").trim().to_owned()
}

/// A scrape of `url`: the value of a sample by its full name (labels
/// included).
pub async fn scrape(url: &str) -> impl Fn(&str) -> f64 {
    let text = super::util::http().get(url).send().await.expect("scrape");
    let text = text.text().await.expect("text");
    move |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
            .parse()
            .expect("a number")
    }
}

/// The address an instance listens on.
pub fn addr(s: &Serve) -> SocketAddr {
    let hostport = s.url.trim_start_matches("http://").trim_end_matches("/sse");
    hostport.parse().expect("instance address")
}
