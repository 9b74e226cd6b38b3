//! `serve --static DIR` and `--devconsole` on the real binary: files,
//! validators, ranges, and every way out of DIR refused.

mod util;

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use util::*;

/// A site: index, a script, a sub-directory with and without an index, a
/// hidden file, a symlink inside and one to a secret outside.
fn site() -> (tempfile::TempDir, tempfile::TempDir) {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(d.join("app.js"), "console.log(1)").unwrap();
    std::fs::create_dir(d.join("docs")).unwrap();
    std::fs::write(d.join("docs/index.html"), "<h1>docs</h1>").unwrap();
    std::fs::create_dir(d.join("empty")).unwrap();
    std::fs::write(d.join(".env"), "TOKEN=1").unwrap();
    std::fs::write(d.join("digits.txt"), "0123456789").unwrap();
    std::os::unix::fs::symlink(d.join("app.js"), d.join("alias.js")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), d.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), d.join("out")).unwrap();
    // Inside DIR, but leading to hidden names.
    std::fs::create_dir(d.join(".git")).unwrap();
    std::fs::write(d.join(".git/config"), "TOKEN=2").unwrap();
    std::os::unix::fs::symlink(d.join(".env"), d.join("settings.txt")).unwrap();
    std::os::unix::fs::symlink(d.join(".git"), d.join("repo")).unwrap();
    std::fs::create_dir(d.join("assets")).unwrap();
    std::fs::write(d.join("assets/index.html"), "<h1>assets</h1>").unwrap();
    (dir, outside)
}

fn base(serve: &Serve) -> String {
    serve.url.trim_end_matches("/sse").to_owned()
}

/// The whole answer to one request written by hand, so that no client
/// normalises the path.
async fn raw_answer(base: &str, target: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn raw_status(base: &str, target: &str) -> u16 {
    let text = raw_answer(base, target).await;
    assert!(!text.contains("secret") && !text.contains("TOKEN"), "{target} leaked: {text}");
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{text}"))
}

async fn serve_site(dir: &Path, extra: &[&str]) -> Serve {
    let mut args = vec!["--static", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    Serve::spawn(&args).await
}

#[tokio::test]
async fn files_with_types_validators_and_ranges() {
    let (dir, _outside) = site();
    let serve = serve_site(dir.path(), &[]).await;
    let base = base(&serve);
    let client = http();

    let r = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let modified = r.headers()["last-modified"].to_str().unwrap().to_owned();
    assert_eq!(r.text().await.unwrap(), "<h1>home</h1>");

    let js = client.get(format!("{base}/app.js")).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(js.text().await.unwrap(), "console.log(1)");
    let alias = client.get(format!("{base}/alias.js")).send().await.unwrap();
    assert_eq!(
        (alias.status().as_u16(), alias.text().await.unwrap()),
        (200, "console.log(1)".into())
    );

    // Revalidation: 304 without a body, by ETag or by Last-Modified.
    let again = client
        .get(format!("{base}/index.html"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    let again = client
        .get(format!("{base}/index.html"))
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    std::fs::write(dir.path().join("index.html"), "<h1>home, changed</h1>").unwrap();
    let changed = client
        .get(format!("{base}/index.html"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.text().await.unwrap(), "<h1>home, changed</h1>");

    // A directory: its index with the slash, a redirect without.
    let docs = client.get(format!("{base}/docs/")).send().await.unwrap();
    assert_eq!(docs.text().await.unwrap(), "<h1>docs</h1>");
    let no_follow =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let moved = no_follow.get(format!("{base}/docs?x=1")).send().await.unwrap();
    assert_eq!(moved.status(), 301);
    assert_eq!(moved.headers()["location"], "./docs/?x=1");
    let there = reqwest::Url::parse(&format!("{base}/docs?x=1")).unwrap().join("./docs/?x=1");
    assert_eq!(there.unwrap().as_str(), format!("{base}/docs/?x=1"));

    // Ranges.
    let part =
        client.get(format!("{base}/digits.txt")).header("range", "bytes=2-4").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 2-4/10");
    assert_eq!(part.text().await.unwrap(), "234");
    let tail =
        client.get(format!("{base}/digits.txt")).header("range", "bytes=-3").send().await.unwrap();
    assert_eq!(tail.text().await.unwrap(), "789");
    let past =
        client.get(format!("{base}/digits.txt")).header("range", "bytes=10-").send().await.unwrap();
    assert_eq!(past.status(), 416);
    assert_eq!(past.headers()["content-range"], "bytes */10");

    // HEAD: the headers of GET, no body.
    let head = client.head(format!("{base}/digits.txt")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "10");
    assert!(head.bytes().await.unwrap().is_empty());

    let post = client.post(format!("{base}/app.js")).body("x").send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn nothing_outside_dir_no_hidden_files_no_listings() {
    let (dir, _outside) = site();
    let serve = serve_site(dir.path(), &[]).await;
    let base = base(&serve);
    for target in [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/etc/passwd",
        "/docs/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/..%2fsecret.txt",
        "/docs%2f..%2f..%2fsecret.txt",
        "/leak.txt",
        "/out/secret.txt",
        "/out/",
        "/.env",
        "/%2eenv",
        "/empty/",
        "/missing.html",
        "/app.js%00.html",
        "/settings.txt",
        "/repo/config",
        "/repo/",
    ] {
        assert_eq!(raw_status(&base, target).await, 404, "{target}");
    }
    // The channel path is still the channel.
    let _s = open(&serve.url, "static-chan", None).await;
}

#[tokio::test]
async fn a_directory_redirect_never_leads_to_another_host() {
    let (dir, _outside) = site();
    let serve = serve_site(dir.path(), &[]).await;
    let base = base(&serve);
    for (target, want) in
        [("//assets", "./assets/"), ("/assets", "./assets/"), ("//assets?q", "./assets/?q")]
    {
        let text = raw_answer(&base, target).await;
        assert!(text.starts_with("HTTP/1.1 301"), "{target}: {text}");
        let location = text
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("{target}: {text}"));
        assert_eq!(location, want, "{target}");
        // Where a browser goes: this host (`//assets/` would be http://assets/).
        let page = reqwest::Url::parse(&format!("{base}{target}")).unwrap();
        assert_eq!(page.join(location).unwrap().host_str(), Some("127.0.0.1"), "{target}");
    }
}

#[tokio::test]
async fn without_static_other_paths_are_404_and_a_bad_dir_is_a_usage_error() {
    let serve = Serve::spawn(&[]).await;
    assert_eq!(raw_status(&base(&serve), "/index.html").await, 404);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssechan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--static", "/nonexistent/site"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--static /nonexistent/site"), "{err}");
}

#[tokio::test]
async fn devconsole_answers_a_browser_and_leaves_clients_alone() {
    let nav = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let serve = Serve::spawn(&["--devconsole"]).await;
    // A browser navigating to the channel path, with or without a query.
    for url in [serve.url.clone(), format!("{}?sseClientId=nav", serve.url)] {
        let page = http().get(&url).header("accept", nav).send().await.unwrap();
        assert_eq!(page.status(), 200, "{url}");
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        let csp = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        // No other site may frame it and trick its user into typing.
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        assert!(
            page.text().await.unwrap().contains("new EventSource(url, { withCredentials: true })")
        );
    }
    // EventSource and curl still get the stream.
    let _s = open(&serve.url, "console-es", None).await;
    let curl = http()
        .get(format!("{}?sseClientId=console-curl", serve.url))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(curl.headers()["content-type"], "text/event-stream");

    let plain = Serve::spawn(&[]).await;
    let refused = http().get(&plain.url).header("accept", "text/html").send().await.unwrap();
    assert_eq!(refused.status(), 406);
}

/// Reads an answer's head (to the blank line), and nothing after it.
async fn read_head(tcp: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut b)).await.unwrap().unwrap();
        assert_eq!(n, 1, "the answer ended in its head: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A download larger than a chunk keeps its file open while it is sent: at
/// most 64 at once, so that readers who stop reading cannot take every
/// descriptor. Past it `503` with `Retry-After`; a small file (read at once,
/// its file closed) is still served; a place comes back when a download ends.
#[tokio::test]
async fn slow_downloads_hold_a_bounded_number_of_files() {
    let dir = tempfile::tempdir().unwrap();
    // Far more than the socket buffers take: a reader who stops reading
    // keeps the download, and its file, open.
    let big = 16 << 20;
    std::fs::write(dir.path().join("big.bin"), vec![7u8; big]).unwrap();
    std::fs::write(dir.path().join("small.txt"), "small").unwrap();
    let serve = serve_site(dir.path(), &[]).await;
    let base = base(&serve);
    let addr = base.trim_start_matches("http://").to_owned();
    let get = format!("GET /big.bin HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut slow = Vec::new();
    for _ in 0..64 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(get.as_bytes()).await.unwrap();
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        slow.push(tcp);
    }
    // A part larger than a chunk needs a place too.
    let part = || async {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET /big.bin HTTP/1.1\r\nHost: {addr}\r\nRange: bytes=0-99999\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut out)).await.unwrap().unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    let refused = part().await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"), "{refused}");
    assert!(refused.contains("too many files being sent at once"), "{refused}");
    assert_eq!(raw_status(&base, "/small.txt").await, 200);
    // One reader reads to the end: once the server is done with that
    // download, its place is free again.
    let mut done = slow.pop().unwrap();
    let mut body = vec![0u8; big];
    // A debug build on a busy machine sends it slowly.
    let read = done.read_exact(&mut body);
    tokio::time::timeout(WAIT * 6, read).await.unwrap().unwrap();
    assert!(body.iter().all(|b| *b == 7));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = part().await;
        if answer.starts_with("HTTP/1.1 206") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place came back: {answer:.200}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
