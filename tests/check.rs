//! `ssechan check` end to end: the real binary against `ssechan serve`, a
//! package:sse-like server, plain SSE servers, and Debian's nginx as a
//! reverse proxy, configured wrong and right.

#[path = "support/check_servers.rs"]
mod check_servers;
#[path = "support/mcp_peers.rs"]
mod mcp_peers;
mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use check_servers::{PlainOpts, pkg_like, plain};
use serde_json::Value;
use tokio::process::Command;
use util::Serve;

/// The longest a whole check run may take here (the idle probes are short).
const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Run {
    code: i32,
    lines: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// id → status of every check line.
    fn statuses(&self) -> BTreeMap<String, String> {
        self.lines
            .iter()
            .filter(|l| l["event"] == "check")
            .map(|l| {
                (l["id"].as_str().unwrap().to_owned(), l["status"].as_str().unwrap().to_owned())
            })
            .collect()
    }

    fn check(&self, id: &str) -> &Value {
        self.lines
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {}", self.stdout))
    }
}

async fn check(args: &[&str]) -> Run {
    let out = tokio::time::timeout(
        RUN_LIMIT,
        Command::new(env!("CARGO_BIN_EXE_ssechan"))
            .arg("check")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("check finished in time")
    .expect("run ssechan check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = if args.contains(&"json") {
        stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    } else {
        Vec::new()
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        lines,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts the exact verdict of every check: `expected` lists the ones
/// that are not `pass`.
fn assert_verdicts(run: &Run, all: &[&str], expected: &[(&str, &str)]) {
    assert_verdicts_but(run, all, expected, &[]);
}

/// Like [`assert_verdicts`], with `racy` checks allowed to pass or fail:
/// their outcome against that server depends on timing by nature.
fn assert_verdicts_but(run: &Run, all: &[&str], expected: &[(&str, &str)], racy: &[&str]) {
    let mut got = run.statuses();
    let mut want: BTreeMap<String, String> =
        all.iter().map(|id| ((*id).to_owned(), "pass".to_owned())).collect();
    for (id, status) in expected {
        assert!(want.contains_key(*id), "{id} is not among the checks");
        want.insert((*id).to_owned(), (*status).to_owned());
    }
    for id in racy {
        let status = got.get(*id).map(String::as_str);
        assert!(matches!(status, Some("pass" | "fail")), "{id}: {status:?}");
        got.remove(*id);
        want.remove(*id);
    }
    assert_eq!(got, want, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
}

const CHANNEL_CHECKS: &[&str] = &[
    "stream.headers",
    "stream.retry",
    "stream.event-ids",
    "post.bad-json",
    "post.unknown-client",
    "post.oversize",
    "post.far-ahead",
    "order.shuffled-posts",
    "order.duplicate-posts",
    "resume.keep-alive",
    "resume.replay",
    "resume.takeover",
    "close.control",
    "cors.credentials",
    "cors.preflight",
    "path.buffering",
    "path.headers",
    "path.h2",
    "path.streams",
    "stream.heartbeat",
    "path.idle-timeout",
];

const RAW_CHECKS: &[&str] = &[
    "raw.headers",
    "raw.line-ends",
    "raw.event-ids",
    "raw.last-event-id",
    "raw.retry",
    "raw.no-content",
    "path.buffering",
    "path.headers",
    "path.h2",
    "path.streams",
    "path.idle-timeout",
];

fn xmllint_valid(file: &Path) {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit-10.xsd");
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&xsd)
        .arg(file)
        .output()
        .expect("xmllint (Debian's libxml2-utils) runs");
    assert!(
        out.status.success(),
        "JUnit file not valid: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

#[tokio::test]
async fn every_check_passes_against_serve() {
    let serve = Serve::spawn(&["--echo", "--keep-alive", "30s"]).await;
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("check.xml");
    let run = check(&[
        &serve.url,
        "--format",
        "json",
        "--wait",
        "5s",
        "--idle-probe",
        "2s",
        "--heartbeat-within",
        "25s",
        "--junit",
        junit.to_str().unwrap(),
    ])
    .await;
    // No application closes an echo channel: nothing to see (the next test).
    assert_verdicts(&run, CHANNEL_CHECKS, &[("close.control", "skip")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = run.lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!((summary["passed"].as_u64(), summary["skipped"].as_u64()), (Some(20), Some(1)));
    assert!(run.check("path.h2")["seen"].as_str().unwrap().contains("h2c"));
    xmllint_valid(&junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"tests="21" failures="0" errors="0" skipped="1""#), "{xml}");
}

#[tokio::test]
async fn a_control_close_from_an_exiting_process_passes() {
    // One process per client: it echoes one line and exits, so serve sends
    // the control close and ends the stream.
    let serve = Serve::spawn(&["--", "sh", "-c", "read line; echo \"$line\""]).await;
    let run = check(&[&serve.url, "--format", "json", "--only", "close.control"]).await;
    assert_eq!(run.check("close.control")["status"], "pass", "{}", run.stdout);
    assert_eq!(run.code, 0);
}

#[tokio::test]
async fn echo_checks_skip_against_a_server_that_does_not_echo() {
    // stdin/stdout mode: messages go to the operator, nothing comes back.
    let mut serve = Serve::spawn(&["--keep-alive", "30s"]).await;
    let only = "order,stream.event-ids,post.bad-json";
    let run = check(&[&serve.url, "--format", "json", "--wait", "1s", "--only", only]).await;
    for id in ["order.shuffled-posts", "order.duplicate-posts", "stream.event-ids"] {
        let v = run.check(id);
        assert_eq!(v["status"], "skip", "{v}");
        assert!(v["seen"].as_str().unwrap().contains("does not echo"), "{v}");
        assert!(v["reason"].as_str().unwrap().contains("needs a server that echoes"), "{v}");
    }
    assert_eq!(run.check("post.bad-json")["status"], "pass");
    assert_eq!(run.code, 0);
    // The one message that looked for an echo reached the application,
    // marked as check's; no padding followed it (the stream was not held).
    assert_eq!(serve.out_line().await, "ssechan check: echo 0");
}

#[tokio::test]
async fn a_package_sse_like_server_gets_exactly_its_faults() {
    let server = pkg_like(Duration::from_secs(30)).await;
    let junit = tempfile::NamedTempFile::new().unwrap();
    let run = check(&[
        &server.url,
        "--format",
        "json",
        "--wait",
        "3s",
        "--idle-probe",
        "1s",
        "--heartbeat-within",
        "1s",
        "--junit",
        junit.path().to_str().unwrap(),
    ])
    .await;
    // resume.keep-alive: a POST just after the drop is echoed into the dead
    // stream when it beats the server's noticing the drop; without replay
    // that echo is lost, so against this server the check may fail.
    assert_verdicts_but(
        &run,
        CHANNEL_CHECKS,
        &[
            ("stream.retry", "warn"),
            ("stream.event-ids", "warn"),
            ("post.bad-json", "warn"),
            ("post.unknown-client", "warn"),
            ("post.oversize", "warn"),
            ("post.far-ahead", "warn"),
            ("order.duplicate-posts", "fail"),
            ("resume.replay", "fail"),
            // A second GET starts a new connection whose counter restarts
            // at 0: the client's next message waits for ids it never sends.
            ("resume.takeover", "fail"),
            ("close.control", "skip"),
            ("cors.preflight", "warn"),
            ("path.h2", "warn"),
            ("stream.heartbeat", "warn"),
        ],
        &["resume.keep-alive"],
    );
    assert_eq!(run.code, 1);
    // Each WARN and FAIL says why and what fixes it.
    for l in run.lines.iter().filter(|l| l["status"] == "warn" || l["status"] == "fail") {
        assert!(l["reason"].is_string() && l["fix"].is_string(), "{l}");
    }
    let dup = run.check("order.duplicate-posts");
    assert!(dup["seen"].as_str().unwrap().contains("echoes: 0, 1, 1, 0"), "{dup}");
    xmllint_valid(junit.path());
}

/// Debian's nginx, started on a free port with its files in a temp dir;
/// stopped (workers included) when dropped.
struct Nginx {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// `location` is the body of `location /`; `listen` what follows the
    /// address (e.g. `ssl http2`), `server` more server-level lines.
    async fn start(upstream: &str, listen: &str, server: &str, location: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        // Run as root, nginx's workers are `nobody`: they must reach the
        // temp files a buffering proxy spills into.
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(dir.path(), mode).unwrap();
        let port = free_port();
        let d = dir.path().display();
        let upstream = upstream.trim_end_matches("/sse");
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             \x20 server {{\n    listen 127.0.0.1:{port} {listen};\n    {server}\n\
             \x20   location / {{\n      proxy_pass {upstream};\n      {location}\n    }}\n  }}\n}}\n"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, conf).unwrap();
        let child = std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&file)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian's package) starts: .ci/run installs it");
        let scheme = if listen.contains("ssl") { "https" } else { "http" };
        let mut nginx = Nginx { child, url: format!("{scheme}://127.0.0.1:{port}/sse"), _dir: dir };
        nginx.wait_listening(port).await;
        nginx
    }

    async fn wait_listening(&mut self, port: u16) {
        let deadline = tokio::time::Instant::now() + util::WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self._dir.path().join("error.log"));
                panic!("nginx exited with {status}: {}", log.unwrap_or_default());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "nginx did not listen in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits. (SIGKILL would
        // leave the workers running.)
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the pid of our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn nginx_that_buffers_and_cuts_idle_streams_is_caught() {
    let serve = Serve::spawn(&["--echo", "--keep-alive", "30s"]).await;
    // serve sends `X-Accel-Buffering: no`, which would turn nginx's
    // buffering off for its streams: ignoring it is the misconfiguration.
    let nginx = Nginx::start(
        &serve.url,
        "",
        "",
        "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; proxy_read_timeout 3s;",
    )
    .await;
    let run = check(&[&nginx.url, "--format", "json", "--wait", "1s", "--idle-probe", "8s"]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let buffering = run.check("path.buffering");
    assert_eq!(buffering["status"], "fail", "{buffering}");
    assert!(buffering["seen"].as_str().unwrap().contains("bursts of"), "{buffering}");
    assert!(buffering["fix"].as_str().unwrap().contains("proxy_buffering off"), "{buffering}");
    let idle = run.check("path.idle-timeout");
    assert_eq!(idle["status"], "fail", "{idle}");
    assert!(idle["fix"].as_str().unwrap().contains("proxy_read_timeout"), "{idle}");
    let seen = idle["seen"].as_str().unwrap();
    let after: f64 =
        seen["the stream was cut after ".len()..].split('s').next().unwrap().parse().unwrap();
    assert!((2.5..7.5).contains(&after), "cut after {after}s, nginx's timeout is 3s: {seen}");
}

#[tokio::test]
async fn nginx_that_buffers_events_but_not_headers_is_caught() {
    let serve = Serve::spawn(&["--echo", "--keep-alive", "30s"]).await;
    // `postpone_output 0` lets the headers through at once: only the
    // events wait in the proxy's buffer, so the echoes are late.
    let nginx = Nginx::start(
        &serve.url,
        "",
        "postpone_output 0;",
        "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;",
    )
    .await;
    let args = [&nginx.url[..], "--format", "json", "--wait", "2s", "--idle-probe", "0"];
    let run = check(&[&args[..], &["--heartbeat-within", "1s"]].concat()).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let buffering = run.check("path.buffering");
    assert_eq!(buffering["status"], "fail", "{buffering}");
    assert!(buffering["seen"].as_str().unwrap().contains("an echo came"), "{buffering}");
    assert!(buffering["fix"].as_str().unwrap().contains("proxy_buffering off"), "{buffering}");
    // Echoes that a buffer holds cannot be ordered or timed: skipped, each
    // pointing at path.buffering, instead of failing for the wrong reason.
    for id in ["stream.event-ids", "order.shuffled-posts", "resume.replay"] {
        let v = run.check(id);
        assert_eq!(v["status"], "skip", "{v}");
        assert!(v["reason"].as_str().unwrap().contains("path.buffering"), "{v}");
    }
    assert_eq!(run.statuses().values().filter(|s| *s == "fail").count(), 1, "{}", run.stdout);
}

/// PEM files of a self-signed certificate for 127.0.0.1.
fn self_signed(dir: &Path) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test]
async fn nginx_configured_for_sse_passes() {
    let serve = Serve::spawn(&["--echo", "--keep-alive", "30s"]).await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    let nginx = Nginx::start(
        &serve.url,
        "ssl http2",
        &format!("ssl_certificate {cert}; ssl_certificate_key {key};"),
        "proxy_http_version 1.1; proxy_set_header Connection \"\"; \
         proxy_buffering off; proxy_read_timeout 1h;",
    )
    .await;
    let run = check(&[
        &nginx.url,
        "--cacert",
        &cert,
        "--format",
        "json",
        "--wait",
        "5s",
        "--idle-probe",
        "5s",
        "--heartbeat-within",
        "25s",
    ])
    .await;
    assert_verdicts(&run, CHANNEL_CHECKS, &[("close.control", "skip")]);
    assert_eq!(run.code, 0);
    assert_eq!(run.check("path.h2")["seen"], "h2 via ALPN");
}

#[tokio::test]
async fn a_plain_stream_that_resumes_passes() {
    let server = plain(PlainOpts::default()).await;
    let run = check(&["--raw", &server.url, "--format", "json", "--idle-probe", "1s"]).await;
    assert_verdicts(
        &run,
        RAW_CHECKS,
        &[("raw.line-ends", "skip"), ("raw.no-content", "skip"), ("path.h2", "warn")],
    );
    assert_eq!(run.code, 0);
    let resume = run.check("raw.last-event-id")["seen"].as_str().unwrap().to_owned();
    assert!(resume.contains("Last-Event-ID: 1 the stream went on at id 2"), "{resume}");
}

#[tokio::test]
async fn a_plain_stream_without_retry_or_resume_warns() {
    let opts = PlainOpts { retry: false, resume: false, ..PlainOpts::default() };
    let server = plain(opts).await;
    let only = "raw.retry,raw.last-event-id,raw.event-ids";
    let run = check(&["--raw", &server.url, "--format", "json", "--only", only]).await;
    let s = run.statuses();
    assert_eq!(s["raw.retry"], "warn", "{}", run.stdout);
    assert_eq!(s["raw.last-event-id"], "warn", "{}", run.stdout);
    assert!(run.check("raw.last-event-id")["seen"].as_str().unwrap().contains("began at id 1"));
    assert_eq!(s["raw.event-ids"], "pass");
    assert_eq!(run.code, 0, "warnings do not fail the run");

    let server = plain(PlainOpts { ids: false, ..PlainOpts::default() }).await;
    let run = check(&["--raw", &server.url, "--format", "json", "--only", only]).await;
    let s = run.statuses();
    assert_eq!((s["raw.event-ids"].as_str(), s["raw.last-event-id"].as_str()), ("warn", "skip"));
}

#[tokio::test]
async fn a_204_is_a_stop_signal() {
    let server = plain(PlainOpts { no_content: true, ..PlainOpts::default() }).await;
    let run = check(&["--raw", &server.url, "--format", "json", "--only", "raw"]).await;
    let s = run.statuses();
    assert_eq!(s["raw.no-content"], "pass", "{}", run.stdout);
    assert_eq!(s["raw.headers"], "fail");
    assert_eq!(run.code, 1);
}

#[tokio::test]
async fn text_output_is_a_line_per_check_and_a_summary() {
    let serve = Serve::spawn(&["--echo", "--keep-alive", "30s"]).await;
    let run =
        check(&[&serve.url, "--only", "stream.headers,post.*", "--skip", "post.oversize"]).await;
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", run.stdout);
    for (line, id) in lines.iter().zip([
        "stream.headers",
        "post.bad-json",
        "post.unknown-client",
        "post.far-ahead",
    ]) {
        assert!(line.starts_with("PASS  "), "{line}");
        assert_eq!(line.split_whitespace().nth(1), Some(id), "{line}");
    }
    assert!(lines[4].starts_with("4 passed, 0 warned, 0 failed, 0 skipped in "), "{}", lines[4]);
    assert_eq!(run.code, 0);
}

#[tokio::test]
async fn usage_errors_and_unreachable_targets_exit_2() {
    let closed = format!("http://127.0.0.1:{}/sse", free_port());
    let run = check(&[&closed]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot reach") && run.stderr.contains("connect"),
        "{}",
        run.stderr
    );

    let serve = Serve::spawn(&["--echo"]).await;
    let wrong_path = serve.url.replace("/sse", "/nope");
    let run = check(&[&wrong_path]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("404"), "{}", run.stderr);

    for args in [
        &["--only", "nope", "http://127.0.0.1:1/sse"][..],
        &["--only", "raw.*", "http://127.0.0.1:1/sse"],
        &["ftp://example.com/x"],
        &["--streams", "0", "http://127.0.0.1:1/sse"],
        &[],
    ] {
        let run = check(args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty());
    }
}

#[tokio::test]
async fn list_shows_the_checks_of_the_mode() {
    let run = check(&["--list"]).await;
    assert_eq!(run.code, 0);
    let ids: Vec<&str> = run.stdout.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(ids, CHANNEL_CHECKS);
    let run = check(&["--list", "--raw", "--format", "json"]).await;
    let ids: Vec<&str> = run.lines.iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids, RAW_CHECKS);
    assert!(run.lines.iter().all(|l| l["proves"].is_string()));
    // The table of docs/check.md is the catalogue's.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/check.md"))
            .unwrap();
    let modes = [
        &["--list", "--format", "json"][..],
        &["--list", "--raw", "--format", "json"],
        &["--list", "--mcp", "--format", "json"],
    ];
    for mode in modes {
        for l in check(mode).await.lines {
            let (id, proves) = (l["id"].as_str().unwrap(), l["proves"].as_str().unwrap());
            let row = readme.lines().find(|r| r.starts_with(&format!("| `{id}` |")));
            let row = row.unwrap_or_else(|| panic!("docs/check.md has no row for {id}"));
            assert!(
                row.ends_with(&format!("| {proves} |")),
                "docs/check.md row of {id} is stale: {row}"
            );
        }
    }
    let run = check(&["--list", "--only", "resume"]).await;
    assert_eq!(run.stdout.lines().count(), 3);
    assert!(run.stdout.contains("echo"));
}

const MCP_CHECKS: &[&str] = &[
    "mcp.era",
    "mcp.initialize",
    "mcp.accept",
    "mcp.notification",
    "mcp.answers",
    "mcp.event-ids",
    "mcp.resume",
    "mcp.resume-scoped",
    "mcp.get-stream",
    "mcp.delete",
    "mcp.version-header",
    "mcp.origin",
    "mcp.headers",
    "mcp.h2",
    "mcp.buffering",
    "mcp.idle-timeout",
];

#[tokio::test(flavor = "multi_thread")]
async fn every_mcp_check_passes_through_serve_mcp() {
    let args = mcp_peers::bridge_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let serve = Serve::spawn(&args).await;
    let args = ["--mcp", "--format", "json", "--wait", "5s", "--idle-probe", "2s", &serve.url];
    let run = check(&args).await;
    assert_verdicts(&run, MCP_CHECKS, &[]);
    assert_eq!(run.code, 0);
    let resumed = run.check("mcp.resume")["seen"].as_str().unwrap();
    assert!(resumed.contains("progress [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 1 result"), "{resumed}");
}

/// The reference server's own Streamable HTTP transport departs from the
/// specification in four places, each seen by hand (docs/mcp.md): it
/// answers 400, not 404, for an ended session; it validates neither
/// Origin nor Host; and its event store (server-everything's
/// transports/streamableHttp.js) replays every event after the id,
/// whatever its stream, and maps the resumed stream under an event id,
/// so a running call's later messages go to the cut stream.
#[tokio::test(flavor = "multi_thread")]
async fn the_mcp_checks_fail_the_reference_server_where_it_departs_from_the_spec() {
    let reference = mcp_peers::Reference::start().await;
    let args = ["--mcp", "--format", "json", "--wait", "5s", "--idle-probe", "2s", &reference.url];
    let run = check(&args).await;
    let departs = [
        ("mcp.resume", "fail"),
        ("mcp.resume-scoped", "fail"),
        ("mcp.delete", "fail"),
        ("mcp.origin", "fail"),
        // Not a departure: node's http speaks no h2c.
        ("mcp.h2", "warn"),
    ];
    assert_verdicts(&run, MCP_CHECKS, &departs);
    assert_eq!(run.code, 1);
    let deleted = run.check("mcp.delete")["seen"].as_str().unwrap();
    assert!(deleted.contains("then answered 400 Bad Request"), "{deleted}");
    // Another stream's events replayed, or the rest of the call lost:
    // which of the two comes first depends on when B's events fall.
    let scoped = run.check("mcp.resume-scoped")["reason"].as_str().unwrap();
    assert!(scoped.contains("another request's") || scoped.contains("never came"), "{scoped}");
}

/// The proxy path's read timeout, on an MCP session's quiet `GET` stream:
/// nginx cutting streams quiet for 3 s fails `mcp.idle-timeout` with the
/// fix; with heartbeats more often than that, the stream stays open.
#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_get_stream_cut_by_a_proxy_read_timeout_is_caught() {
    let location = "proxy_http_version 1.1; proxy_set_header Connection \"\"; \
                    proxy_buffering off; proxy_read_timeout 3s;";
    for (heartbeat, cut) in [("1h", true), ("1s", false)] {
        let args = mcp_peers::bridge_args(&["--heartbeat", heartbeat]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let serve = Serve::spawn(&args).await;
        let nginx = Nginx::start(serve.url.trim_end_matches("/mcp"), "", "", location).await;
        let url = nginx.url.replace("/sse", "/mcp");
        let args =
            ["--mcp", "--format", "json", "--idle-probe", "6s", "--only", "mcp.idle-timeout"];
        let run = check(&[&args[..], &[url.as_str()]].concat()).await;
        let idle = run.check("mcp.idle-timeout");
        if cut {
            assert_eq!(idle["status"], "fail", "{idle}");
            assert!(idle["fix"].as_str().unwrap().contains("proxy_read_timeout"), "{idle}");
            assert_eq!(run.code, 1);
        } else {
            assert_eq!(idle["status"], "pass", "{idle}");
            assert_eq!(run.code, 0, "{}", run.stdout);
        }
    }
}

/// The path's checks on MCP streams, through nginx: buffering that holds a
/// long call's progress until the call ends fails `mcp.buffering` with the
/// fix; nginx configured for event streams passes it and `mcp.headers`.
#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_stream_buffered_by_a_proxy_is_caught() {
    let args = mcp_peers::bridge_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let serve = Serve::spawn(&args).await;
    let upstream = serve.url.trim_end_matches("/mcp");
    let http11 = "proxy_http_version 1.1; proxy_set_header Connection \"\";";
    for (buffers, location) in [
        (true, "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;".to_string()),
        (false, format!("{http11} proxy_buffering off;")),
    ] {
        let nginx = Nginx::start(upstream, "", "", &location).await;
        let url = nginx.url.replace("/sse", "/mcp");
        let args =
            ["--mcp", "--format", "json", "--only", "mcp.buffering", "--only", "mcp.headers"];
        let run = check(&[&args[..], &[url.as_str()]].concat()).await;
        let buffering = run.check("mcp.buffering");
        if buffers {
            assert_eq!(buffering["status"], "fail", "{buffering}");
            let seen = buffering["seen"].as_str().unwrap();
            assert!(seen.contains("10 progress events of a 5 s call came over 0."), "{seen}");
            assert!(
                buffering["fix"].as_str().unwrap().contains("proxy_buffering off"),
                "{buffering}"
            );
            assert_eq!(run.code, 1);
        } else {
            assert_verdicts(&run, &["mcp.buffering", "mcp.headers"], &[]);
            assert_eq!(run.code, 0, "{}", run.stdout);
        }
    }
}
