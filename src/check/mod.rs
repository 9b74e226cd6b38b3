//! `ssechan check URL`: named checks against a live endpoint, each a PASS,
//! WARN, FAIL or SKIP with what was seen, why it matters and the usual fix.
//!
//! The checks are data (`catalogue.rs`) plus an async function each
//! (`channel.rs` for package:sse channels, `raw.rs` for plain SSE, `mcp.rs`
//! for MCP's Streamable HTTP, `path.rs` for what proxies and CDNs do to
//! any stream); `verdict.rs` prints them.
//! Every check uses its own client ids, so checks never share server state,
//! and every wait is bounded by `--wait`, `--timeout`, `--heartbeat-within`
//! or `--idle-probe`. Checks run one after the other (timings stay clean),
//! except the two that wait long by design, which run beside them.

pub mod catalogue;
mod channel;
mod mcp;
mod path;
pub mod probe;
mod raw;
pub mod verdict;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use http::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use tokio::sync::{OnceCell, oneshot};
use tokio::time::Instant;

use self::catalogue::{Check, Mode};
use self::probe::{Channel, Flavour, Posted, Stream};
use self::verdict::{Outcome, Printer, Tally, Verdict};
use crate::cli::{CheckArgs, Format};
use crate::exit::UsageError;

/// Everything the checks are told, validated.
#[derive(Debug, Clone)]
pub struct Options {
    pub url: Url,
    pub raw: bool,
    pub mcp: bool,
    /// Longest wait for one expected echo, event or stream end.
    pub wait: Duration,
    /// Zero: no idle probe.
    pub idle_probe: Duration,
    pub heartbeat_within: Duration,
    /// Connecting and each request's answer.
    pub timeout: Duration,
    pub origin: String,
    pub streams: usize,
    pub message_limit: usize,
    pub headers: reqwest::header::HeaderMap,
    pub insecure: bool,
    pub ca_certs: Vec<reqwest::Certificate>,
}

/// Most streams `--streams` may ask for: enough to pass any browser or h2
/// limit worth knowing, few enough not to look like an attack.
const MAX_STREAMS: usize = 64;
/// Shortest `--wait`/`--timeout`: less cannot tell slow from never.
const MIN_WAIT: Duration = Duration::from_millis(10);

impl Options {
    pub fn from_args(a: &CheckArgs) -> Result<Self, UsageError> {
        let usage = |m: String| UsageError(m);
        let url = a.url.as_deref().ok_or_else(|| usage("a URL is needed".into()))?;
        let url = crate::client::parse_url(url).map_err(|e| usage(e.to_string()))?;
        let headers = crate::client::parse_headers(&a.headers).map_err(|e| usage(e.to_string()))?;
        let ca_certs = match &a.cacert {
            Some(p) => crate::client::load_ca_certs(p).map_err(|e| usage(e.to_string()))?,
            None => Vec::new(),
        };
        if a.wait < MIN_WAIT || a.timeout < MIN_WAIT {
            return Err(usage(format!("--wait and --timeout must be at least {MIN_WAIT:?}")));
        }
        if !(1..=MAX_STREAMS).contains(&a.streams) {
            return Err(usage(format!("--streams must be between 1 and {MAX_STREAMS}")));
        }
        if http::HeaderValue::from_str(&a.origin).is_err() || a.origin.is_empty() {
            return Err(usage(format!("--origin {:?} cannot be a header value", a.origin)));
        }
        Ok(Options {
            url,
            raw: a.raw,
            mcp: a.mcp,
            wait: a.wait,
            idle_probe: a.idle_probe,
            heartbeat_within: a.heartbeat_within,
            timeout: a.timeout,
            origin: a.origin.clone(),
            streams: a.streams,
            message_limit: a.message_limit,
            headers,
            insecure: a.insecure,
            ca_certs,
        })
    }
}

/// Whether the server echoes, found once per run by the first check that
/// needs to know.
#[derive(Debug, Clone)]
pub struct Echo {
    pub echoes: bool,
    /// What was seen, for the SKIP lines of echo checks.
    pub seen: String,
    /// The echo came only after more bytes were pushed after it: the path
    /// holds events back (see `path.buffering`).
    pub buffered: Option<channel::Burst>,
}

/// What every check gets: the options, HTTP clients and what the run has
/// learnt so far.
pub struct Ctx {
    pub opts: Options,
    /// HTTP/1.1 on http, ALPN's choice on https: what a browser gets.
    pub http: reqwest::Client,
    pub http1: reqwest::Client,
    /// h2 with prior knowledge.
    pub h2: reqwest::Client,
    /// A connection per request.
    pub unpooled: reqwest::Client,
    /// Every `control` event's data seen on any stream of the run.
    pub controls: Arc<Mutex<Vec<String>>>,
    /// The path held the first stream's headers back (a buffer waiting to
    /// fill): every other stream would hang the same way.
    pub held: Option<channel::Burst>,
    echo: OnceCell<Echo>,
    /// Whether h2 works (`path.h2`, `path.streams`).
    h2_found: OnceCell<Result<(), String>>,
    /// What the MCP checks learnt (the server's era).
    mcp: mcp::Known,
}

impl Ctx {
    pub fn new(opts: Options) -> anyhow::Result<Self> {
        let build = |f| probe::client(&opts, f).context("cannot build the HTTP client");
        Ok(Ctx {
            http: build(Flavour::Browser)?,
            http1: build(Flavour::Http1)?,
            h2: build(Flavour::H2)?,
            unpooled: build(Flavour::Unpooled)?,
            controls: Arc::new(Mutex::new(Vec::new())),
            held: None,
            echo: OnceCell::new(),
            h2_found: OnceCell::new(),
            mcp: mcp::Known::default(),
            opts,
        })
    }

    /// `--wait` from now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.opts.wait
    }

    /// A fresh channel for `check`.
    pub fn channel(&self, check: &str) -> Channel {
        Channel::new(&self.opts.url, check)
    }

    /// Opens `url` as EventSource would; a transport error is a FAIL.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        url: Url,
        last_event_id: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Stream, Verdict> {
        let req = probe::stream_request(client, url, last_event_id, origin);
        self.send_get(req, self.opts.timeout).await
    }

    /// Sends a stream request, waiting `within` for its headers.
    pub async fn send_get(
        &self,
        req: reqwest::RequestBuilder,
        within: Duration,
    ) -> Result<Stream, Verdict> {
        probe::open(req, within, &self.controls)
            .await
            .map_err(|e| Verdict::broken(format!("GET failed: {e}")))
    }

    /// Opens the channel's stream; anything but a 200 event stream is a FAIL.
    pub async fn open(&self, ch: &Channel, last_event_id: Option<&str>) -> Result<Stream, Verdict> {
        self.get(&self.http, ch.stream_url(), last_event_id, None)
            .await?
            .expect_event_stream()
            .await
    }

    /// POSTs `message` (JSON-encoded) as message `n`; a transport error is a FAIL.
    pub async fn send(&self, ch: &Channel, n: u64, message: &str) -> Result<Posted, Verdict> {
        let body = crate::protocol::encode_message_body(message);
        self.post(ch, n, body, None).await
    }

    /// POSTs `body` verbatim as message `n`; a transport error is a FAIL.
    pub async fn post(
        &self,
        ch: &Channel,
        n: u64,
        body: Vec<u8>,
        origin: Option<&str>,
    ) -> Result<Posted, Verdict> {
        self.post_with(&self.http, ch, n, body, origin).await
    }

    /// [`Ctx::post`] through `client`.
    pub async fn post_with(
        &self,
        client: &reqwest::Client,
        ch: &Channel,
        n: u64,
        body: Vec<u8>,
        origin: Option<&str>,
    ) -> Result<Posted, Verdict> {
        probe::post(client, &self.opts, ch, n, body, origin)
            .await
            .map_err(|e| Verdict::broken(format!("POST messageId={n} failed: {e}")))
    }

    /// Sends `message` as `n` and wants a 200 back.
    pub async fn send_ok(&self, ch: &Channel, n: u64, message: &str) -> Result<(), Verdict> {
        let p = self.send(ch, n, message).await?;
        if p.status != StatusCode::OK {
            return Err(Verdict::broken(format!(
                "POST messageId={n} answered {}{}",
                p.status,
                if p.reason.is_empty() { String::new() } else { format!(": {}", p.reason) }
            )));
        }
        Ok(())
    }

    /// Whether the server echoes (found once, by the first check that asks).
    pub async fn echo(&self) -> &Echo {
        self.echo.get_or_init(|| channel::detect_echo(self)).await
    }

    /// Whether echoes come back promptly enough to watch where they go.
    pub async fn echoes_promptly(&self) -> bool {
        let e = self.echo().await;
        e.echoes && e.buffered.is_none()
    }
}

/// Runs `check`; exit 0 nothing failed, 1 a check failed, 2 usage error or
/// unreachable target.
pub async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mode = match (args.raw, args.mcp) {
        (_, true) => Mode::Mcp,
        (true, false) => Mode::Raw,
        (false, false) => Mode::Channel,
    };
    let selected = catalogue::select(mode, &args.only, &args.skip).map_err(UsageError)?;
    let json = args.format == Format::Json;
    let printer = Printer {
        json,
        colour: !json && crate::logging::use_color(&std::io::stdout()),
        id_width: catalogue::id_width(),
    };
    if args.list {
        let mut out = std::io::stdout().lock();
        for c in &selected {
            writeln!(out, "{}", printer.list_line(c))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let opts = Options::from_args(&args)?;
    let url = opts.url.to_string();
    let mut cx = Ctx::new(opts)?;
    match reach(&cx).await {
        Ok(held) => cx.held = held,
        Err(why) => {
            eprintln!("ssechan: cannot reach {url}: {why}");
            return Ok(ExitCode::from(2));
        }
    }
    let cx = Arc::new(cx);
    let started = SystemTime::now();
    let t0 = Instant::now();
    let mut tally = Tally::default();
    let mut outcomes = Vec::with_capacity(selected.len());
    for o in execute(&cx, &selected).await {
        let o = o.await.context("a check stopped early")?;
        tally.add(o.verdict.status);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", printer.line(&o))?;
        out.flush()?;
        outcomes.push(o);
    }
    let elapsed = t0.elapsed();
    println!("{}", printer.summary(&tally, &url, mode.as_str(), elapsed));
    if let Some(path) = &args.junit {
        let xml = verdict::junit(&outcomes, started, elapsed);
        std::fs::write(path, xml)
            .with_context(|| format!("cannot write --junit {}", path.display()))?;
    }
    Ok(if tally.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// One GET: a transport error or a 404 means nothing here is worth
/// checking. Headers that take longer than `--wait` are pushed with an
/// echo's padding (channel mode): a path that only lets them through then
/// buffers, and is reported as such.
async fn reach(cx: &Ctx) -> Result<Option<channel::Burst>, String> {
    if cx.opts.mcp {
        // The era probe: a POST, as every MCP request is.
        return mcp::era_of(cx).await.map(|_| None);
    }
    let ch = cx.channel("reach");
    let url = if cx.opts.raw { cx.opts.url.clone() } else { ch.stream_url() };
    let req = probe::stream_request(&cx.http, url, None, None);
    let t0 = Instant::now();
    let get = probe::open(req, cx.opts.timeout, &cx.controls);
    tokio::pin!(get);
    let (mut s, held) = match tokio::time::timeout(cx.opts.wait, &mut get).await {
        Ok(r) => (r?, false),
        Err(_) => {
            if !cx.opts.raw {
                let _ = channel::push(cx, &ch, 0).await;
            }
            (get.await?, true)
        }
    };
    if s.status == StatusCode::NOT_FOUND {
        let ct = s.header(CONTENT_TYPE.as_str());
        return Err(format!("GET answered 404 Not Found (Content-Type {ct}): wrong path?"));
    }
    if !held {
        return Ok(None);
    }
    let after = t0.elapsed();
    let _ = s.next(cx.deadline()).await;
    let bytes = s.reads.first().map_or(0, |r| r.bytes);
    let pushed = if cx.opts.raw { 0 } else { channel::PUSHED };
    Ok(Some(channel::Burst { what: "the stream's headers", bytes, after, pushed }))
}

/// Starts the checks and returns, in table order, where each outcome will
/// arrive: background checks start at once, the others one after another.
async fn execute(cx: &Arc<Ctx>, selected: &[&'static Check]) -> Vec<oneshot::Receiver<Outcome>> {
    let mut receivers = Vec::with_capacity(selected.len());
    let mut queue = Vec::new();
    for &check in selected {
        let (tx, rx) = oneshot::channel();
        receivers.push(rx);
        if check.background {
            tokio::spawn(one(cx.clone(), check, tx));
        } else {
            queue.push((check, tx));
        }
    }
    let cx = cx.clone();
    tokio::spawn(async move {
        for (check, tx) in queue {
            one(cx.clone(), check, tx).await;
        }
    });
    receivers
}

/// Runs one check within its budget and sends its outcome.
async fn one(cx: Arc<Ctx>, check: &'static Check, tx: oneshot::Sender<Outcome>) {
    let t0 = Instant::now();
    let budget = budget(&cx.opts, check);
    let early = match held_back(&cx, check) {
        Some(v) => Some(v),
        None => skip_without_echo(&cx, check).await,
    };
    let verdict = match early {
        Some(v) => v,
        None => match tokio::time::timeout(budget, (check.run)(cx.clone())).await {
            Ok(v) => v,
            Err(_) => Verdict::broken(format!(
                "no verdict within {} (the server stopped answering?)",
                humantime::format_duration(budget)
            )),
        },
    };
    let _ = tx.send(Outcome { check, verdict, elapsed: t0.elapsed() });
}

/// Every check but the two that judge it, when the path holds streams back.
fn held_back(cx: &Ctx, check: &Check) -> Option<Verdict> {
    let burst = cx.held.as_ref()?;
    (!matches!(check.id, "path.buffering" | "path.idle-timeout")).then(|| {
        Verdict::skip(
            format!("{} came {:.1}s late", burst.what, burst.after.as_secs_f64()),
            "the path holds every stream back until a buffer fills (see path.buffering)",
        )
    })
}

/// An echo check in channel mode, against a server that does not echo or
/// a path that holds its echoes back (all but `path.buffering`, which
/// reports that).
async fn skip_without_echo(cx: &Ctx, check: &Check) -> Option<Verdict> {
    if !check.needs_echo || cx.opts.raw || cx.held.is_some() {
        return None;
    }
    let echo = cx.echo().await;
    if !echo.echoes {
        return Some(Verdict::skip(
            echo.seen.clone(),
            "needs a server that echoes each message to its sender (e.g. `ssechan serve --echo`)",
        ));
    }
    (echo.buffered.is_some() && check.id != "path.buffering").then(|| {
        Verdict::skip(
            echo.seen.clone(),
            "the path holds events back until a buffer fills (see path.buffering)",
        )
    })
}

/// The most a check may take: its own long waits, plus room for a few
/// requests and waits. Only a server that stops answering meets it.
fn budget(o: &Options, check: &Check) -> Duration {
    let base = o.timeout * 4 + o.wait * 8;
    if check.background { base + o.heartbeat_within.max(o.idle_probe) } else { base }
}
