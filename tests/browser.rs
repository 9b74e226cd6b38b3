//! Real browsers: Debian's Chromium, headless, loads our test page (served
//! by `ssechan serve --static`), whose client behaves as package:sse's
//! browser client, and talks to a real `ssechan serve`. Chromium must be
//! installed (`.ci/run` installs it); without it these tests fail.

#[path = "support/chromium.rs"]
mod chromium;
mod util;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chromium::Browser;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use util::*;

fn site() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn origin(serve: &Serve) -> String {
    serve.url.trim_end_matches("/sse").to_owned()
}

/// A server with the test page and its JSON events on stdout.
async fn serve_page(extra: &[&str]) -> Serve {
    let dir = site();
    let mut args = vec!["--format", "json", "--static", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut serve = Serve::spawn(&args).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    serve
}

/// The next stdout event of `kind` for `client`, skipping the others.
async fn event(serve: &mut Serve, kind: &str, client: &str) -> Value {
    loop {
        let ev = serve.out_json().await;
        if ev["event"] == kind && ev["client"] == client {
            return ev;
        }
    }
}

#[tokio::test]
async fn round_trip_bulk_both_ways_two_tabs_and_a_closed_tab() {
    let mut serve = serve_page(&[]).await;
    let mut browser = Browser::launch().await;
    let site = origin(&serve);
    let a = browser.open(&format!("{site}/?id=tab-a")).await;
    browser.wait_for(&a, "window.sse.state === 'open'", "tab a to open").await;
    event(&mut serve, "connect", "tab-a").await;

    // Round trip.
    serve.send_line(r#"{"client":"tab-a","data":"hello browser"}"#).await;
    browser.wait_for(&a, "window.sse.received[0] === 'hello browser'", "the first message").await;
    assert_eq!(browser.eval(&a, "window.sse.send('hello server')").await, json!(200));
    assert_eq!(event(&mut serve, "message", "tab-a").await["data"], "hello server");

    // 7,000 messages server -> browser, in order, ids consecutive.
    for i in 0..7000 {
        serve.send_line(&format!(r#"{{"client":"tab-a","data":"down {i}"}}"#)).await;
    }
    browser.wait_for(&a, "window.sse.received.length === 7001", "7,000 messages").await;
    let in_order = browser
        .eval(
            &a,
            "window.sse.received.slice(1).every((m, i) => m === 'down ' + i) && \
             window.sse.ids.every((id, i) => id === String(i + 1))",
        )
        .await;
    assert_eq!(in_order, json!(true));

    // 100 messages browser -> server, all in flight at once, delivered in order.
    let statuses =
        browser.eval(&a, "window.sse.sendAll([...Array(100).keys()].map((i) => 'up ' + i))").await;
    assert_eq!(statuses, json!(vec![200; 100]));
    for i in 0..100 {
        assert_eq!(event(&mut serve, "message", "tab-a").await["data"], format!("up {i}"));
    }

    // A second tab is a second client; each gets its own messages.
    let b = browser.open(&format!("{site}/?id=tab-b")).await;
    browser.wait_for(&b, "window.sse.state === 'open'", "tab b to open").await;
    event(&mut serve, "connect", "tab-b").await;
    serve.send_line(r#"{"client":"tab-b","data":"only b"}"#).await;
    serve.send_line(r#"{"client":"tab-a","data":"only a"}"#).await;
    browser.wait_for(&b, "window.sse.received.length === 1", "b's message").await;
    browser.wait_for(&a, "window.sse.received.at(-1) === 'only a'", "a's message").await;
    assert_eq!(browser.eval(&b, "window.sse.received").await, json!(["only b"]));
    assert_eq!(browser.eval(&a, "window.sse.received.includes('only b')").await, json!(false));
    assert_eq!(browser.eval(&b, "window.sse.send('from b')").await, json!(200));
    assert_eq!(event(&mut serve, "message", "tab-b").await["data"], "from b");

    // Closing a tab: the server sees that client leave (no keep-alive).
    browser.close_tab(b).await;
    let close = event(&mut serve, "close", "tab-b").await;
    assert_eq!(close["reason"], "stream ended");
    browser.close().await;
}

/// A TCP proxy that can swallow what the server sends and then cut every
/// connection: events the server wrote are lost on the way, as when a
/// network path dies, so the browser must resume with `Last-Event-ID`
/// and the server must replay them.
struct CutProxy {
    url: String,
    swallow: Arc<AtomicBool>,
    swallowed: Arc<Mutex<Vec<u8>>>,
    conns: Arc<Mutex<JoinSet<()>>>,
}

impl CutProxy {
    async fn start(upstream: &str) -> CutProxy {
        let upstream = upstream.trim_start_matches("http://").split('/').next().unwrap().to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/sse", listener.local_addr().unwrap());
        let swallow = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let (sw, sd, cs) = (swallow.clone(), swallowed.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(&upstream).await else { continue };
                let (mut dr, mut dw) = down.into_split();
                let (mut ur, mut uw) = up.into_split();
                let mut set = cs.lock().unwrap();
                set.spawn(async move {
                    let _ = tokio::io::copy(&mut dr, &mut uw).await;
                });
                let (sw, sd) = (sw.clone(), sd.clone());
                set.spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = ur.read(&mut buf).await {
                        if sw.load(Ordering::SeqCst) {
                            sd.lock().unwrap().extend_from_slice(&buf[..n]);
                        } else if dw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CutProxy { url, swallow, swallowed, conns }
    }

    fn swallowed_text(&self) -> String {
        String::from_utf8_lossy(&self.swallowed.lock().unwrap()).into_owned()
    }

    /// Ends every connection at once, then lets new ones through.
    fn cut(&self) {
        self.conns.lock().unwrap().abort_all();
        self.swallow.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_lost_stream_resumes_with_last_event_id_replay_and_control_close_is_final() {
    let mut serve = serve_page(&["--keep-alive", "30s"]).await;
    let proxy = CutProxy::start(&serve.url).await;
    let mut browser = Browser::launch().await;
    // The page from the server, the channel through the proxy (another
    // origin: the default policy allows it).
    let page = browser.open(&format!("{}/?id=resumer&sse={}", origin(&serve), proxy.url)).await;
    browser.wait_for(&page, "window.sse.state === 'open'", "the stream").await;
    event(&mut serve, "connect", "resumer").await;
    serve.send_line(r#"{"client":"resumer","data":"before"}"#).await;
    browser.wait_for(&page, "window.sse.received.length === 1", "the first message").await;

    // Two events leave the server and never arrive; then the path dies.
    proxy.swallow.store(true, Ordering::SeqCst);
    serve.send_line(r#"{"client":"resumer","data":"lost 2"}"#).await;
    serve.send_line(r#"{"client":"resumer","data":"lost 3"}"#).await;
    eventually("both events swallowed", || proxy.swallowed_text().contains("lost 3").then_some(()))
        .await;
    assert_eq!(browser.eval(&page, "window.sse.received.length").await, json!(1));
    proxy.cut();

    // The same connection resumes, and the server replays from the
    // browser's Last-Event-ID.
    event(&mut serve, "suspend", "resumer").await;
    event(&mut serve, "resume", "resumer").await;
    browser.wait_for(&page, "window.sse.received.length === 3", "the replayed events").await;
    let got = browser.eval(&page, "[window.sse.received, window.sse.ids, window.sse.opens]").await;
    assert_eq!(got, json!([["before", "lost 2", "lost 3"], ["1", "2", "3"], 2]));
    serve.send_line(r#"{"client":"resumer","data":"after"}"#).await;
    browser.wait_for(&page, "window.sse.received.at(-1) === 'after'", "a live event").await;

    // Control close: the client closes for good; EventSource is CLOSED and
    // will not reconnect.
    serve.send_line(r#"{"client":"resumer","close":true}"#).await;
    let close = event(&mut serve, "close", "resumer").await;
    assert_eq!(
        (close["reason"].as_str(), close["undelivered"].as_u64()),
        (Some("closed by server"), Some(0))
    );
    browser.wait_for(&page, "window.sse.closedBy === 'control close'", "the control close").await;
    assert_eq!(browser.eval(&page, "client.es.readyState").await, json!(2));
    browser.close().await;
}

#[tokio::test]
async fn a_page_on_another_origin_is_served_by_default_and_refused_when_not_allowed() {
    let pages = serve_page(&[]).await;
    let mut open_channel = Serve::spawn(&["--format", "json"]).await;
    let mut closed_channel =
        Serve::spawn(&["-v", "--format", "json", "--allow-origin", "http://elsewhere.test"]).await;
    let mut browser = Browser::launch().await;

    let page =
        browser.open(&format!("{}/?id=cross&sse={}", origin(&pages), open_channel.url)).await;
    browser.wait_for(&page, "window.sse.state === 'open'", "the cross-origin stream").await;
    open_channel.send_line(r#"{"client":"cross","data":"across"}"#).await;
    browser.wait_for(&page, "window.sse.received[0] === 'across'", "the message").await;
    assert_eq!(browser.eval(&page, "window.sse.send('back')").await, json!(200));
    assert_eq!(event(&mut open_channel, "message", "cross").await["data"], "back");

    let refused =
        browser.open(&format!("{}/?id=refused&sse={}", origin(&pages), closed_channel.url)).await;
    // A refused EventSource fails for good (CLOSED), without a stream.
    browser
        .wait_for(&refused, "window.sse.errors > 0 && client.es.readyState === 2", "the refusal")
        .await;
    let log = closed_channel.err_line_with("rejected").await;
    assert!(log.contains("403 origin not allowed"), "{log}");
    assert_eq!(browser.eval(&refused, "window.sse.opens").await, json!(0));
    browser.close().await;
}

#[tokio::test]
async fn the_devconsole_loads_connects_sends_and_shows_a_message() {
    let mut serve = Serve::spawn(&["--format", "json", "--devconsole"]).await;
    assert_eq!(serve.out_json().await["event"], "listening");
    let mut browser = Browser::launch().await;
    let page = browser.open(&serve.url).await;
    browser
        .wait_for(&page, "document.getElementById('state').dataset.state === 'open'", "open")
        .await;
    let id = browser.eval(&page, "document.getElementById('client').textContent").await;
    let id = id.as_str().expect("client id").to_owned();
    event(&mut serve, "connect", &id).await;

    // Typed and sent as a person would.
    browser
        .eval(
            &page,
            "document.getElementById('input').value = 'typed in the console'; \
             document.getElementById('send').click()",
        )
        .await;
    assert_eq!(event(&mut serve, "message", &id).await["data"], "typed in the console");
    serve.send_line(&json!({"client": id, "data": "shown in the console"}).to_string()).await;
    let shown = "document.getElementById('log').innerText";
    browser
        .wait_for(&page, &format!("{shown}.includes('← shown in the console')"), "the message")
        .await;
    let log = browser.eval(&page, shown).await;
    assert!(log.as_str().unwrap().contains("→ typed in the console  messageId 0"), "{log}");
    assert_eq!(browser.eval(&page, "document.getElementById('in').textContent").await, json!("1"));
    if let Some(dir) = std::env::var_os("SSECHAN_SCREENSHOTS") {
        browser.screenshot(&page, &PathBuf::from(dir).join("devconsole.png")).await;
    }
    browser.close().await;
}

#[tokio::test]
async fn ten_tabs_at_once_over_https_h2() {
    // Over HTTP/1.1 Chromium opens at most six connections per host, so
    // the seventh tab's stream would wait; over h2 they share one.
    let cert = util::tls_cert::Cert::new();
    let tls = cert.args();
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.push("--keep-alive");
    args.push("10s");
    let mut serve = serve_page(&args).await;
    assert!(serve.url.starts_with("https://"));
    let mut browser = Browser::launch_with(&["--ignore-certificate-errors"]).await;
    let site = origin(&serve);
    let mut tabs = Vec::new();
    for i in 0..10 {
        let tab = browser.open(&format!("{site}/?id=h2-{i}")).await;
        let proto = "performance.getEntriesByType('navigation')[0].nextHopProtocol";
        assert_eq!(browser.eval(&tab, proto).await, json!("h2"));
        tabs.push(tab);
    }
    for (i, tab) in tabs.iter().enumerate() {
        browser.wait_for(tab, "window.sse.state === 'open'", &format!("tab {i} to open")).await;
    }
    for i in 0..10 {
        serve
            .send_line(&json!({"client": format!("h2-{i}"), "data": format!("to {i}")}).to_string())
            .await;
    }
    for (i, tab) in tabs.iter().enumerate() {
        browser
            .wait_for(
                tab,
                &format!("window.sse.received[0] === 'to {i}'"),
                &format!("tab {i}'s message"),
            )
            .await;
        assert_eq!(browser.eval(tab, &format!("window.sse.send('from {i}')")).await, json!(200));
        assert_eq!(
            event(&mut serve, "message", &format!("h2-{i}")).await["data"],
            format!("from {i}")
        );
    }
    // All ten still open at once, each with exactly its own message.
    for tab in &tabs {
        let got = browser
            .eval(tab, "[window.sse.state, window.sse.received.length, window.sse.opens]")
            .await;
        assert_eq!(got, json!(["open", 1, 1]));
    }
    browser.close().await;
}
