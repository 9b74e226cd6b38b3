//! Who can reach `ssechan serve -- COMMAND`, and what reaches the
//! operator's terminal (issue 17): DNS rebinding, LAN peers without the
//! secret, cross-site pages, process floods, descriptor exhaustion, line
//! and terminal injection. The real binary on loopback; listeners on
//! 0.0.0.0 are only ever reached through 127.0.0.1.

mod util;

#[path = "support/client_procs.rs"]
mod procs;

use std::process::Stdio;
use std::time::{Duration, Instant};

use ssechan::protocol::query::channel_query;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use util::{Serve, Stream, WAIT, http, open, post};

/// Prints each line back; what a client POSTs is what it gets.
const ECHO: &str = r#"while read -r l; do echo "got:$l"; done"#;

/// Appends its client id to the file named by `$0` when it starts, then
/// says so and echoes: the file counts the processes ever started.
const COUNTED: &str = r#"echo "$SSECHAN_CLIENT_ID" >> "$0"; echo started; exec cat"#;

/// `127.0.0.1:PORT` of a server listening anywhere.
fn local_addr(url: &str) -> String {
    let port = url.split(':').nth(2).and_then(|p| p.split('/').next()).expect("port");
    format!("127.0.0.1:{port}")
}

/// The URL of a server listening anywhere, reached through loopback.
fn local_url(url: &str) -> String {
    url.replacen("0.0.0.0", "127.0.0.1", 1)
}

/// One HTTP/1.1 exchange written by hand, so that `Host` and `Origin` are
/// exactly what a rebinding page's browser sends.
struct Raw {
    tcp: TcpStream,
    text: String,
}

impl Raw {
    async fn send(addr: &str, head: &str) -> Raw {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Raw { tcp, text: String::new() };
        raw.read_until("\r\n\r\n").await;
        raw
    }

    fn status(&self) -> u16 {
        self.text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line")
    }

    /// Reads until `needle` has arrived; panics after `WAIT` or at EOF.
    async fn read_until(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while !self.text.contains(needle) {
            let n = tokio::time::timeout_at(deadline, self.tcp.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in time: {:?}", self.text))
                .expect("read");
            assert!(n > 0, "EOF before {needle:?}: {:?}", self.text);
            self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

fn get_head(path: &str, host: &str, origin: Option<&str>) -> String {
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n{origin}\r\n")
}

fn post_head(path: &str, host: &str, origin: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn stop(mut serve: Serve) {
    serve.signal(libc::SIGTERM);
    let _ = tokio::time::timeout(WAIT, serve.child.wait()).await;
}

// --- finding 1: who may reach a COMMAND ---------------------------------

#[tokio::test]
async fn a_command_on_a_network_address_does_not_start_without_the_secret() {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "--listen", "0.0.0.0:0", "--", "cat"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run).await.expect("it does not start").unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("add --secret") && err.contains("--insecure-no-secret"), "{err}");
    assert!(!err.contains("listening"), "{err}");
}

#[tokio::test]
async fn dns_rebinding_reaches_no_command_on_a_network_listener() {
    let mut serve =
        Serve::spawn_at("0.0.0.0:0", &["--insecure-no-secret", "--", "sh", "-c", ECHO]).await;
    let warned = serve.err_line_with("--insecure-no-secret:").await;
    assert!(
        warned.contains("anyone who can reach 0.0.0.0:") && warned.contains("run sh"),
        "{warned}"
    );
    let addr = local_addr(&serve.url);
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let (host, origin) = (format!("rebind.evil:{port}"), format!("http://rebind.evil:{port}"));
    // The page's GET (same-origin to its browser: no Origin), then its POST.
    let get = Raw::send(&addr, &get_head("/sse?sseClientId=rebound", &host, None)).await;
    assert_eq!(get.status(), 403, "{}", get.text);
    let path = format!("/sse?{}", channel_query("rebound", Some(0)));
    let post = Raw::send(&addr, &post_head(&path, &host, &origin, "\"id\"")).await;
    assert_eq!(post.status(), 403, "{}", post.text);
    // An address as Host is answered, but the rebinding origin is not its own.
    let get = Raw::send(&addr, &get_head("/sse?sseClientId=x", &addr, Some(&origin))).await;
    assert_eq!(get.status(), 403, "{}", get.text);
    // Pages of the server's own address, and other clients, do work.
    let url = local_url(&serve.url);
    let mut s = open(&url, "lan", None).await;
    let own = format!("http://{addr}");
    let path = format!("/sse?{}", channel_query("lan", Some(0)));
    let ok = Raw::send(&addr, &post_head(&path, &addr, &own, "\"hi\"")).await;
    assert_eq!(ok.status(), 200, "{}", ok.text);
    assert_eq!(s.next_msg().await.data, "got:hi");
    stop(serve).await;
}

#[tokio::test]
async fn dns_rebinding_on_loopback_is_refused_and_any_host_is_warned_about() {
    let serve = Serve::spawn(&["--", "sh", "-c", ECHO]).await;
    let addr = local_addr(&serve.url);
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let (host, origin) = (format!("rebind.evil:{port}"), format!("http://rebind.evil:{port}"));
    let get = Raw::send(&addr, &get_head("/sse?sseClientId=r", &host, Some(&origin))).await;
    assert_eq!(get.status(), 403, "{}", get.text);
    stop(serve).await;

    // `--allow-host '*'` answers the rebinding name, as asked, and says
    // what that means; its origin is still not the server's own.
    let mut serve = Serve::spawn(&["--allow-host", "*", "--", "sh", "-c", ECHO]).await;
    let warned = serve.err_line_with("--allow-host '*' with a COMMAND").await;
    assert!(warned.contains("any web page") && warned.contains("DNS rebinding"), "{warned}");
    let addr = local_addr(&serve.url);
    let mut stream = Raw::send(&addr, &get_head("/sse?sseClientId=r", &host, None)).await;
    assert_eq!(stream.status(), 200, "{}", stream.text);
    let path = format!("/sse?{}", channel_query("r", Some(0)));
    let post = Raw::send(&addr, &post_head(&path, &host, &origin, "\"pwned\"")).await;
    assert_eq!(post.status(), 403, "same origin judged against a rebinding Host: {}", post.text);
    // Its own origin on loopback still may: the next line is that one.
    let own = format!("http://{addr}");
    let ok = Raw::send(&addr, &post_head(&path, &addr, &own, "\"mine\"")).await;
    assert_eq!(ok.status(), 200, "{}", ok.text);
    stream.read_until("got:mine").await;
    assert!(!stream.text.contains("pwned"), "{}", stream.text);
    stop(serve).await;
}

#[tokio::test]
async fn the_secret_url_is_the_only_way_in() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "<h1>app</h1>").unwrap();
    let dir = site.path().to_str().unwrap();
    let mut serve = Serve::spawn_at(
        "0.0.0.0:0",
        &["--secret", "--static", dir, "--devconsole", "--", "sh", "-c", ECHO],
    )
    .await;
    let url = local_url(&serve.url);
    let secret = url.split('/').nth(3).expect("a secret segment").to_owned();
    assert!(secret.len() >= 32 && url.ends_with(&format!("/{secret}/sse")), "{url}");
    let addr = local_addr(&url);
    let guessed = format!("{}x", &secret[..secret.len() - 1]);
    for path in [
        "/sse?sseClientId=a".to_string(),
        format!("/{guessed}/sse?sseClientId=a"),
        format!("/{secret}x/sse?sseClientId=a"),
        "/index.html".into(),
        format!("/{guessed}/index.html"),
    ] {
        let r = Raw::send(&addr, &get_head(&path, &addr, None)).await;
        assert_eq!(r.status(), 404, "{path}: {}", r.text);
    }
    // What package:sse's client does with the URL it is given: append
    // `?sseClientId=` for the stream and the POSTs.
    let mut s = open(&url, "holder", None).await;
    assert_eq!(post(&http(), &url, "holder", 0, "hi").await, 200);
    assert_eq!(s.next_msg().await.data, "got:hi");
    let base = url.trim_end_matches("/sse");
    let page = http().get(format!("{base}/index.html")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer", "the URL holds the secret");
    assert_eq!(page.text().await.unwrap(), "<h1>app</h1>");
    let console = http().get(&url).header("accept", "text/html").send().await.unwrap();
    assert_eq!(console.status(), 200);
    assert_eq!(console.headers()["referrer-policy"], "no-referrer");
    // Nothing else of the secret is logged.
    serve.signal(libc::SIGTERM);
    let _ = tokio::time::timeout(WAIT, serve.child.wait()).await;
    while let Ok(Some(line)) = tokio::time::timeout(WAIT, serve.stderr.recv()).await {
        // The URL of each address of a wildcard listener is given at start.
        let url = line.strip_prefix("ssechan: listening on http://");
        assert!(url.is_some() || !line.contains(&secret), "the secret in a log line: {line}");
    }

    // SSECHAN_SECRET gives several instances the same one; a weak one is refused.
    let fixed = "0123456789abcdef-shared";
    let serve = Serve::spawn_with("0.0.0.0:0", &["--", "cat"], &[("SSECHAN_SECRET", fixed)]).await;
    assert!(serve.url.ends_with(&format!("/{fixed}/sse")), "{}", serve.url);
    stop(serve).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--secret=short"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}

// --- finding 2: processes started by whom, how many, how fast ------------

/// `serve FLAGS -- sh -c COUNTED FILE`, and the file.
async fn serve_counted(flags: &[&str]) -> (Serve, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("started");
    let mut args = flags.to_vec();
    args.extend_from_slice(&["--", "sh", "-c", COUNTED, file.to_str().unwrap()]);
    (Serve::spawn(&args).await, dir, file)
}

fn started(file: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

/// A stream whose process has started (and so written the file).
async fn open_started(url: &str, who: &str) -> Stream {
    let mut s = open(url, who, None).await;
    assert_eq!(s.next_msg().await.data, "started", "{who}");
    s
}

/// A GET refused with `status`; the reason it gave.
async fn refused(url: &str, who: &str, status: u16) -> String {
    let r = http()
        .get(format!("{url}?{}", channel_query(who, None)))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), status, "{who}");
    r.text().await.unwrap()
}

#[tokio::test]
async fn cross_site_blind_requests_start_no_process() {
    let (serve, _dir, file) = serve_counted(&[]).await;
    let client = http();
    // What <img src>, a no-cors fetch and a link to the URL send.
    for (i, mode) in ["no-cors", "navigate"].iter().cycle().take(40).enumerate() {
        let r = client
            .get(format!("{}?sseClientId=cs{i}", serve.url))
            .header("accept", "*/*")
            .header("sec-fetch-site", "cross-site")
            .header("sec-fetch-mode", *mode)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{mode}");
        assert!(r.text().await.unwrap().contains("another site"));
    }
    // Processes start before their stream is answered: once this one's
    // has written the file, every refused request's would have too.
    let _s = open_started(&serve.url, "probe").await;
    assert_eq!(started(&file), ["probe"]);
    stop(serve).await;
}

#[tokio::test]
async fn the_process_cap_holds_until_a_process_is_reaped() {
    let (serve, _dir, file) =
        serve_counted(&["--max-processes", "2", "--kill-grace", "200ms"]).await;
    let a = open_started(&serve.url, "a").await;
    let _b = open_started(&serve.url, "b").await;
    let why = refused(&serve.url, "c", 503).await;
    assert!(why.contains("too many processes running (limit 2)"), "{why}");
    assert_eq!(started(&file), ["a", "b"]);
    // A's client leaves: its process ends, is reaped, and frees its place.
    drop(a);
    let client = http();
    let mut again = None;
    let deadline = Instant::now() + WAIT;
    while again.is_none() {
        assert!(Instant::now() < deadline, "a's place never came back");
        let r = client
            .get(format!("{}?sseClientId=c", serve.url))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => again = Some(Stream::new(r)),
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(again.unwrap().next_msg().await.data, "started");
    assert_eq!(started(&file), ["a", "b", "c"]);
    stop(serve).await;
}

#[tokio::test]
async fn the_spawn_rate_holds() {
    // Three at once, then one every twenty minutes: no test lasts that long.
    let (serve, _dir, file) = serve_counted(&["--spawn-rate", "3/h"]).await;
    for who in ["r0", "r1", "r2"] {
        drop(open_started(&serve.url, who).await);
    }
    for who in ["r3", "r4"] {
        let why = refused(&serve.url, who, 503).await;
        assert!(why.contains("starting too fast (limit 3 per 1h)"), "{why}");
    }
    assert_eq!(started(&file), ["r0", "r1", "r2"]);
    stop(serve).await;
}

#[tokio::test]
async fn under_a_low_descriptor_limit_every_get_has_a_process_or_a_503() {
    // 800 descriptors: 544 past the reserve, 90 processes at six each
    // with their socket. With four each (the old count) 136 were let in
    // and about 125 processes could start: the rest got a 200 with nothing
    // behind it. Room for every connection, so that the processes decide.
    let script = r#"ulimit -n 800 && exec "$0" serve --listen 127.0.0.1:0 --spawn-rate 0 --max-connections 200 -- sh -c 'echo started; exec cat'"#;
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", script, env!("CARGO_BIN_EXE_ssechan")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = tokio::time::timeout(WAIT, err.next_line()).await.unwrap().unwrap();
        let line = line.expect("the listening line");
        if let Some(u) = line.strip_prefix("ssechan: listening on ") {
            break u.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
    let client = http();
    let gets = (0..160).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let r = client
                .get(format!("{url}?sseClientId=fd{i}"))
                .header("accept", "text/event-stream")
                .send()
                .await
                .unwrap_or_else(|e| panic!("fd{i}: {e:?}"));
            match r.status().as_u16() {
                200 => {
                    let mut s = Stream::new(r);
                    let first = s.next_event(WAIT).await;
                    let data = first.as_ref().map(|e| e.data.as_str());
                    assert_eq!(data, Some("\"started\""), "fd{i}: a 200 without a process");
                    Ok(s)
                }
                503 => Err(r.text().await.unwrap()),
                other => panic!("fd{i}: status {other}"),
            }
        })
    });
    let mut streams = Vec::new();
    let mut reasons = Vec::new();
    for g in gets.collect::<Vec<_>>() {
        match g.await.unwrap() {
            Ok(s) => streams.push(s),
            Err(why) => reasons.push(why),
        }
    }
    assert!(!streams.is_empty() && streams.len() <= 90, "{} streams", streams.len());
    assert_eq!(streams.len() + reasons.len(), 160);
    for why in &reasons {
        assert!(why.contains("limit"), "a 503 says why: {why:?}");
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(WAIT, child.wait()).await;
}

// --- finding 3: line and terminal injection -------------------------------

#[tokio::test]
async fn a_message_is_one_line_in_text_mode() {
    let serve = Serve::spawn(&["--", "sh", "-c", ECHO]).await;
    let mut s = open(&serve.url, "lines", None).await;
    for bad in ["a\nb", "a\rb", "x\r\n"] {
        let body = ssechan::protocol::encode_message_body(bad);
        let (status, why) = util::post_raw(&serve.url, "sseClientId=lines&messageId=0", body).await;
        assert_eq!(status, 400, "{bad:?}");
        assert!(why.contains("line break"), "{why}");
    }
    assert_eq!(post(&http(), &serve.url, "lines", 0, "whole").await, 200);
    assert_eq!(s.next_msg().await.data, "got:whole", "nothing of the refused ones arrived");
    stop(serve).await;

    // stdin/stdout: refused in text mode unless asked, carried in JSON.
    let mut serve = Serve::spawn(&[]).await;
    let _s = open(&serve.url, "t", None).await;
    assert_eq!(post(&http(), &serve.url, "t", 0, "two\nlines").await, 400);
    assert_eq!(post(&http(), &serve.url, "t", 0, "one").await, 200);
    assert_eq!(serve.out_line().await, "one");
    stop(serve).await;
    let mut serve = Serve::spawn(&["--line-breaks", "pass"]).await;
    let _s = open(&serve.url, "t", None).await;
    assert_eq!(post(&http(), &serve.url, "t", 0, "two\nlines").await, 200);
    assert_eq!((serve.out_line().await, serve.out_line().await), ("two".into(), "lines".into()));
    stop(serve).await;
    let mut serve = Serve::spawn(&["--format", "json"]).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let _s = open(&serve.url, "j", None).await;
    assert_eq!(serve.out_json().await["event"], "connect");
    assert_eq!(post(&http(), &serve.url, "j", 0, "two\nlines").await, 200);
    assert_eq!(serve.out_json().await["data"], "two\nlines");
    stop(serve).await;
}

#[tokio::test]
async fn client_ids_and_hosts_that_hide_what_they_are_are_refused() {
    let serve = Serve::spawn(&[]).await;
    for id in ["admin%E2%80%AEnimda", "a%E2%81%A6b", "zw%E2%80%8Bsp", "%EF%BB%BFbom"] {
        let (status, why) = util::post_raw(&serve.url, &format!("sseClientId={id}"), "\"x\"").await;
        assert_eq!(status, 400, "{id}");
        assert!(why.contains("invisible"), "{why}");
        let r = http()
            .get(format!("{}?sseClientId={id}", serve.url))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{id}");
    }
    let addr = local_addr(&serve.url);
    for host in ["[::1]evil", "[::1]evil:80", "[127.0.0.1]x"] {
        let r = Raw::send(&addr, &get_head("/sse?sseClientId=h", host, None)).await;
        assert_eq!(r.status(), 403, "{host}: {}", r.text);
    }
    stop(serve).await;
}

/// Output of a program on a pseudo-terminal, gathered as it comes.
struct Pty {
    session: expectrl::session::OsSession,
    seen: Vec<u8>,
}

impl Pty {
    fn spawn(mut cmd: std::process::Command) -> Pty {
        cmd.env("NO_COLOR", "1").env("TERM", "xterm").env_remove("RUST_LOG");
        let mut session = expectrl::Session::spawn(cmd).expect("spawn on a pty");
        session.set_expect_timeout(Some(Duration::from_millis(100)));
        Pty { session, seen: Vec::new() }
    }

    /// Reads until `needle` shows; the text before it.
    fn wait_for(&mut self, needle: &str) -> String {
        use expectrl::Expect;
        let deadline = Instant::now() + procs::WAIT;
        loop {
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            if let Some(i) = text.find(needle) {
                return text[..i].to_owned();
            }
            assert!(Instant::now() < deadline, "no {needle:?} on the terminal: {text:?}");
            match self.session.expect(expectrl::Regex("(?s-u).+")) {
                Ok(c) => self.seen.extend_from_slice(c.as_bytes()),
                Err(expectrl::Error::ExpectTimeout) => {}
                Err(e) => panic!("reading the terminal: {e}; so far {text:?}"),
            }
        }
    }

    fn raw_escapes(&self) -> bool {
        self.seen.windows(2).any(|w| w == b"\x1b]" || w == b"\x1b[") || self.seen.contains(&7)
    }
}

/// A hostile message: a window title (OSC), a screen clear, a bidi override.
const HOSTILE: &str = "\u{1b}]0;PWNED\u{7}\u{1b}[2J\u{202e}gnp.exe";
const DEFUSED: &str = "^[]0;PWNED^G^[[2J\\u{202e}gnp.exe";

/// A blocking request on loopback; the status.
fn std_request(addr: &str, head: &str) -> (u16, std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(procs::WAIT)).unwrap();
    tcp.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    (text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), tcp)
}

#[test]
fn serve_on_a_terminal_shows_what_clients_send_escaped() {
    let mut cmd = std::process::Command::new(procs::bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    let mut pty = Pty::spawn(cmd);
    pty.wait_for("listening on http://");
    let line = pty.wait_for("/sse");
    let addr = line.rsplit("http://").next().unwrap().trim().to_owned();
    let (status, _stream) = std_request(&addr, &get_head("/sse?sseClientId=t", &addr, None));
    assert_eq!(status, 200);
    let body = ssechan::protocol::encode_message_body(HOSTILE);
    let body = String::from_utf8(body.to_vec()).unwrap();
    let plain = format!(
        "POST /sse?sseClientId=t HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(std_request(&addr, &plain).0, 200);
    pty.wait_for(DEFUSED);
    assert!(!pty.raw_escapes(), "raw escapes reached the terminal: {:?}", pty.seen);
}

#[test]
fn connect_escapes_server_text_on_a_terminal_even_when_stdin_is_not_one() {
    let mut serve = procs::Serve::start(&[]);
    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        r#"exec "$0" connect --count 1 --wait 60s "$1" < /dev/null"#,
        procs::bin(),
        &serve.url,
    ]);
    let mut pty = Pty::spawn(cmd);
    let id = serve.client();
    serve.command(serde_json::json!({"client": id, "data": HOSTILE}));
    pty.wait_for(DEFUSED);
    assert!(!pty.raw_escapes(), "raw escapes reached the terminal: {:?}", pty.seen);
}
