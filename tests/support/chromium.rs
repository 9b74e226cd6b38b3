//! Debian's Chromium, headless, driven over the DevTools protocol on the
//! pipe Chromium opens with `--remote-debugging-pipe` (fd 3 in, fd 4 out,
//! one JSON message per NUL-terminated frame): no WebDriver, no browser
//! download, no crate beyond serde_json. A browser that cannot start fails
//! the test with its stderr.
#![allow(dead_code)]

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, oneshot};

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Generous, for a busy 2-core machine.
pub const BROWSER_WAIT: Duration = Duration::from_secs(20);

/// One Chromium at a time per test binary: each takes a core to start.
static ONE_AT_A_TIME: Semaphore = Semaphore::const_new(1);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

pub struct Browser {
    child: Child,
    to_browser: pipe::Sender,
    pending: Pending,
    next_id: u64,
    stderr: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
    _slot: tokio::sync::SemaphorePermit<'static>,
}

/// A tab, attached with its own session.
pub struct Page {
    pub target: String,
    session: String,
}

/// A pipe end for the child, moved above the descriptors it will get, so
/// that dup2 onto 3 and 4 cannot clobber it.
fn child_end(fd: OwnedFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    assert!(high >= 0, "fcntl: {}", std::io::Error::last_os_error());
    // SAFETY: just returned by fcntl and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(high) }
}

impl Browser {
    pub async fn launch() -> Browser {
        Self::launch_with(&[]).await
    }

    /// Starts Chromium with the flags CI uses, a fresh profile, and `extra`.
    pub async fn launch_with(extra: &[&str]) -> Browser {
        let slot = ONE_AT_A_TIME.acquire().await.expect("semaphore");
        let profile = tempfile::tempdir().expect("profile dir");
        let (to_tx, to_rx) = pipe::pipe().expect("pipe");
        let (from_tx, from_rx) = pipe::pipe().expect("pipe");
        let chrome_in = child_end(to_rx.into_blocking_fd().expect("fd"));
        let chrome_out = child_end(from_tx.into_blocking_fd().expect("fd"));
        let (cin, cout) = (chrome_in.as_raw_fd(), chrome_out.as_raw_fd());
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        // SAFETY: dup2 only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cin, 3) < 0 || libc::dup2(cout, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {CHROMIUM}: {e} (apt-get install chromium; .ci/run does)")
        });
        drop((chrome_in, chrome_out));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let keep = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut v = keep.lock().unwrap();
                    if v.len() < 200 {
                        v.push(l);
                    }
                }
            });
        }
        let pending: Pending = Arc::default();
        tokio::spawn(read_replies(from_rx, pending.clone()));
        let mut b = Browser {
            child,
            to_browser: to_tx,
            pending,
            next_id: 0,
            stderr,
            _profile: profile,
            _slot: slot,
        };
        let version = b.call(None, "Browser.getVersion", json!({})).await;
        assert!(version["product"].as_str().is_some_and(|p| p.contains("Chrome")), "{version}");
        b
    }

    /// Sends one command (to the browser, or to a page's session) and
    /// waits for its result; a protocol error or silence fails the test.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut frame = msg.to_string().into_bytes();
        frame.push(0);
        if let Err(e) = self.to_browser.write_all(&frame).await {
            panic!("Chromium is gone ({e}); its stderr:\n{}", self.stderr_text());
        }
        match tokio::time::timeout(BROWSER_WAIT, rx).await {
            Ok(Ok(Ok(v))) => v,
            Ok(Ok(Err(e))) => panic!("{method}: {e}"),
            Ok(Err(_)) => {
                panic!("{method}: Chromium closed the pipe; stderr:\n{}", self.stderr_text())
            }
            Err(_) => panic!("{method}: no answer in {BROWSER_WAIT:?}"),
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Opens `url` in a new tab.
    pub async fn open(&mut self, url: &str) -> Page {
        let t = self.call(None, "Target.createTarget", json!({"url": "about:blank"})).await;
        let target = t["targetId"].as_str().expect("targetId").to_owned();
        let a = self
            .call(None, "Target.attachToTarget", json!({"targetId": target, "flatten": true}))
            .await;
        let session = a["sessionId"].as_str().expect("sessionId").to_owned();
        let page = Page { target, session };
        self.call(Some(&page.session), "Page.enable", json!({})).await;
        let nav = self.call(Some(&page.session), "Page.navigate", json!({"url": url})).await;
        assert!(nav.get("errorText").is_none(), "navigate {url}: {nav}");
        self.wait_for(&page, "document.readyState === 'complete'", "the page to load").await;
        page
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its value.
    pub async fn eval(&mut self, page: &Page, expr: &str) -> Value {
        let r = self
            .call(
                Some(&page.session),
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("{expr}: {ex}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Polls `condition` (a JS expression) until it is truthy.
    pub async fn wait_for(&mut self, page: &Page, condition: &str, what: &str) -> Value {
        let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
        loop {
            let v = self.eval(page, condition).await;
            if !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("") {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let state =
                    self.eval(page, "JSON.stringify(window.sse ?? document.body.innerText)").await;
                panic!("timed out waiting for {what} ({condition}); page: {state}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Closes a tab, as a user closing it would.
    pub async fn close_tab(&mut self, page: Page) {
        self.call(None, "Target.closeTarget", json!({"targetId": page.target})).await;
    }

    /// A PNG of the page, for a person to look at.
    pub async fn screenshot(&mut self, page: &Page, path: &std::path::Path) {
        let r = self
            .call(Some(&page.session), "Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let data = r["data"].as_str().expect("data");
        std::fs::write(path, base64_decode(data)).expect("write screenshot");
    }

    /// A PNG of the whole page at `width` CSS pixels (as tall as it is).
    pub async fn screenshot_full(&mut self, page: &Page, width: u32, path: &std::path::Path) {
        let height = self.eval(page, "document.documentElement.scrollHeight").await;
        let height = height.as_u64().unwrap_or(1000).max(200);
        let metrics =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call(Some(&page.session), "Emulation.setDeviceMetricsOverride", metrics).await;
        let r = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let data = r["data"].as_str().expect("data");
        std::fs::write(path, base64_decode(data)).expect("write screenshot");
    }

    /// Renders the page as it would look printed (`print`) or in a dark
    /// theme (`dark`), until told otherwise.
    pub async fn emulate(&mut self, page: &Page, print: bool, dark: bool) {
        let scheme = if dark { "dark" } else { "light" };
        let params = json!({
            "media": if print { "print" } else { "" },
            "features": [{"name": "prefers-color-scheme", "value": scheme}],
        });
        self.call(Some(&page.session), "Emulation.setEmulatedMedia", params).await;
    }

    /// The page printed to PDF (A4), as Chromium's print does.
    pub async fn print_pdf(&mut self, page: &Page) -> Vec<u8> {
        let params = json!({"paperWidth": 8.27, "paperHeight": 11.69, "printBackground": true});
        let r = self.call(Some(&page.session), "Page.printToPDF", params).await;
        base64_decode(r["data"].as_str().expect("data"))
    }

    pub async fn close(mut self) {
        let _ = self.to_browser.write_all(b"{\"id\":0,\"method\":\"Browser.close\"}\0").await;
        if tokio::time::timeout(BROWSER_WAIT, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

async fn read_replies(from: pipe::Receiver, pending: Pending) {
    let mut r = BufReader::new(from);
    let mut frame = Vec::new();
    loop {
        frame.clear();
        match r.read_until(0, &mut frame).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if frame.last() == Some(&0) {
            frame.pop();
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&frame) else { continue };
        let Some(id) = msg.get("id").and_then(Value::as_u64) else { continue };
        if let Some(tx) = pending.lock().unwrap().remove(&id) {
            let _ = tx.send(match msg.get("error") {
                Some(e) => Err(e.to_string()),
                None => Ok(msg["result"].clone()),
            });
        }
    }
    // Chromium is gone: fail every call still waiting.
    pending.lock().unwrap().clear();
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, &c| (acc << 6) | u32::from(val(c)))
            << (6 * (4 - chunk.len()));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}
