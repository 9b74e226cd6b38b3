//! `ssechan bench`: load generation, verification, statistics and report.
//!
//! [`run`] checks the flags, raises the open-file limit, starts the embedded
//! echo server when no URL is given, connects every client (bounded
//! concurrency, so the accept backlog is not overrun), starts the load at
//! one instant, and judges the merged results against the gates.

mod conn;
mod dashboard;
mod halt;
mod html;
mod ids;
mod lanes;
mod listen;
mod mcp;
pub mod merge;
pub mod payload;
mod progress;
mod reason;
pub mod report;
mod request;
mod runtimes;
pub mod scenario;
pub mod shard;
pub mod stats;
mod timeline;
mod timer;
mod tls;
pub mod verify;
mod worker;

use std::io::Write as _;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{info, warn};

use crate::cli::{BenchArgs, BenchCommand, BenchMode, GateArgs, ReportArgs};
use crate::exit::UsageError;
use crate::server::{Server, ServerConfig};
use conn::{Dialer, Target};
use halt::Halting;
use report::{Gates, Mode, Report, StreamRates};
use shard::Shard;
use stats::{Clock, Stats};

/// Clients connecting at once: well under the usual accept backlog (4096)
/// and SYN queue, so 10,000 clients connect without drops and retries.
pub(crate) const CONNECT_CONCURRENCY: usize = 128;
/// Shortest `--drain` and `--connect-timeout`.
const MIN_WAIT: Duration = Duration::from_millis(10);
/// Distinct error messages kept for the report.
const ERROR_SAMPLES: usize = 5;
/// Echo mode's run without --messages or --duration: long enough for its
/// figures to repeat within about 10% (measured: see docs/performance.md).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Listen mode's events per stream without --messages or --duration.
const DEFAULT_EVENTS: u64 = 1000;

/// What every client of a run shares (read-only but for the stats).
pub(crate) struct Plan {
    pub target: Target,
    pub dialer: Dialer,
    /// As given (for messages).
    pub url: String,
    /// Clients of the whole run (all shards): open-loop send times are
    /// spread over them, so a shard's clients keep their place in it.
    pub clients: usize,
    /// This shard's clients (their indices in the whole run).
    pub local: Range<usize>,
    pub run_id: String,
    pub size: usize,
    pub messages: u64,
    pub duration: Option<Duration>,
    /// Open loop: messages per second of each client.
    pub rate_per_client: Option<f64>,
    pub window: u64,
    pub drop_every: Option<Duration>,
    pub connect_timeout: Duration,
    pub drain: Duration,
    /// `--start-at`: the load starts then (or at once, if it has passed).
    pub start_at: Option<SystemTime>,
    pub raw: bool,
    /// Shared POST connections, when the open-file limit is too low for one
    /// per client.
    pub lanes: Option<lanes::Lanes>,
    pub clock: Clock,
    pub stats: Arc<Stats>,
    /// Ctrl-C, or a permanent error: every client watches it.
    pub halting: Arc<Halting>,
    /// Some POST (or, with -X/--data, some request) was taken: a permanent
    /// refusal after that is one client's, not the whole run's.
    pub accepted: AtomicBool,
    /// The run second by second, from the load's start.
    sampler: std::sync::Mutex<Option<timeline::Sampler>>,
    /// Where the sampler shows the run as it goes (the dashboard).
    live: Option<watch::Sender<timeline::Live>>,
}

impl Plan {
    /// Starts the timeline at clock µs `start_us` (the load's start).
    pub(crate) fn start_sampler(&self, start_us: u64) {
        let s =
            timeline::Sampler::start(self.stats.clone(), self.clock, start_us, self.live.clone());
        *self.sampler.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// The timeline, once the load is over.
    async fn timeline(&self) -> timeline::Timeline {
        let s = self.sampler.lock().unwrap_or_else(|e| e.into_inner()).take();
        match s {
            Some(s) => s.finish().await,
            None => timeline::Timeline::new(),
        }
    }
}

/// What `validate` derived from the flags.
struct Setup {
    /// Listen with -X/--data: the request of every stream.
    request: Option<Arc<request::RequestSpec>>,
    shard: Option<Shard>,
    start_at: Option<SystemTime>,
    messages: u64,
    duration: Option<Duration>,
}

/// Runs `bench` (or `bench merge`); exit 0 all checks passed, 1 a check
/// failed, 2 usage error or unreachable target.
pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(cmd) = args.command {
        let BenchCommand::Merge(m) = *cmd;
        return merge::run(m).await;
    }
    let setup = validate(&args)?;
    let local = setup.shard.unwrap_or(Shard::ALL).clients(args.clients);
    let halting = Arc::new(Halting::default());
    // What every report says of its run, whatever the mode.
    let about = Report {
        mode: if args.mcp {
            Mode::Mcp
        } else if args.scenario.is_some() {
            Mode::Scenario
        } else if args.mode == BenchMode::Listen {
            Mode::Listen
        } else {
            Mode::Echo
        },
        url: args.url.clone().unwrap_or_default(),
        clients: local.len() as u64,
        command: report::command_line(std::env::args()),
        machine: report::Machine::this(),
        ..Report::default()
    };
    let dashboard = match args.dashboard {
        Some(addr) => {
            let first = Report { live: true, ..about.clone() }.to_json_line();
            let d = Arc::new(dashboard::Dashboard::start(addr, first).await?);
            eprintln!("ssechan: dashboard at {}", d.url);
            Some(d)
        }
        None => None,
    };
    let ctrl_c = halt::on_ctrl_c(halting.clone());
    let result = run_mode(&args, &setup, local, &halting, &about, dashboard.as_ref()).await;
    if let Some(t) = ctrl_c {
        t.abort();
    }
    let report = match result {
        Ok(Some(mut report)) => {
            report.command = about.command.clone();
            report.machine = about.machine.clone();
            report.judge(&gates(&args.gates));
            write_report(&args.output, &report)?;
            Some(report)
        }
        Ok(None) => None,
        Err(e) => {
            if let Some(d) = &dashboard {
                d.finish(Report { failures: vec![format!("{e:#}")], ..about }.to_json_line()).await;
            }
            return Err(e);
        }
    };
    if let Some(d) = &dashboard {
        let last = match &report {
            Some(r) => r.to_json_line(),
            None => Report {
                failures: vec![
                    halting.fatal().unwrap_or_else(|| "the target cannot be reached".into()),
                ],
                ..about
            }
            .to_json_line(),
        };
        d.finish(last).await;
    }
    Ok(report.as_ref().map_or(ExitCode::from(2), exit_code))
}

/// 0 passed, 1 a check failed, 130 interrupted (the report is of the run
/// so far, whatever it says).
pub(crate) fn exit_code(report: &Report) -> ExitCode {
    match (report.interrupted, report.passed) {
        (true, _) => ExitCode::from(130),
        (false, true) => ExitCode::SUCCESS,
        (false, false) => ExitCode::from(1),
    }
}

/// The run of `--scenario` or of a mode.
async fn run_mode(
    args: &BenchArgs,
    setup: &Setup,
    local: Range<usize>,
    halting: &Arc<Halting>,
    about: &Report,
    dashboard: Option<&Arc<dashboard::Dashboard>>,
) -> anyhow::Result<Option<Report>> {
    if let Some(path) = &args.scenario {
        crate::sys::raise_open_file_limit(local.len() as u64 * 2 + SPARE_FILES);
        let report = scenario::run(args, path, local, setup.start_at, halting).await?;
        return Ok(report.map(|mut r| {
            r.shards = setup.shard.map(|s| vec![s.to_string()]).unwrap_or_default();
            r
        }));
    }
    let clients = local.len();
    if args.mcp {
        crate::sys::raise_open_file_limit(clients as u64 * 4 + SPARE_FILES);
        return run_mcp(args, setup, local, halting, about).await;
    }
    let files = crate::sys::raise_open_file_limit(FileBudget::new(args, clients as u64).own());
    let (url, embedded) = match &args.url {
        Some(u) => (u.clone(), None),
        None => {
            let s = EmbeddedServer::start(args.keep_alive).await?;
            (s.url.clone(), Some(s))
        }
    };
    let about = Report { url: url.clone(), embedded: embedded.is_some(), ..about.clone() };
    let result = bench(args, setup, &about, files, halting, dashboard).await;
    if let Some(s) = embedded {
        s.stop().await;
    }
    result
}

/// `--mcp`: sessions calling a tool; `None` when none could open (said
/// on stderr).
async fn run_mcp(
    args: &BenchArgs,
    setup: &Setup,
    local: Range<usize>,
    halting: &Arc<Halting>,
    about: &Report,
) -> anyhow::Result<Option<Report>> {
    let url = args.url.clone().unwrap_or_default();
    let (tool, tool_args) = mcp::tool_of(args)?;
    let plan = Arc::new(mcp::McpPlan {
        config: mcp::config(args, &url)?,
        tool,
        args: tool_args,
        size: args.size,
        run_id: format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        clients: args.clients,
        calls: setup.messages,
        duration: setup.duration,
        rate_per_client: args.rate.map(|r| r / args.clients as f64),
        window: args.window,
        drop_every: args.drop_every,
        connect_timeout: args.connect_timeout,
        drain: args.drain,
        clock: Clock::new(),
        stats: Stats::new(),
        halting: halting.clone(),
    });
    let mut report = mcp::run(plan, local.len()).await;
    if report.connected == 0 && !halting.interrupted() {
        let why =
            report.error_samples.first().cloned().unwrap_or_else(|| "no session opened".into());
        eprintln!("ssechan: cannot reach {url}: {why}");
        return Ok(None);
    }
    report.url = url;
    report.shards = setup.shard.map(|s| vec![s.to_string()]).unwrap_or_default();
    note_short_run(&mut report);
    let _ = about;
    Ok(Some(report))
}

pub(crate) fn gates(g: &GateArgs) -> Gates {
    Gates {
        max_lost: g.max_lost,
        max_duplicated: g.max_duplicated,
        max_refusals: g.max_refusals,
        max_p99: g.max_p99,
        min_throughput: g.min_throughput,
        min_events: g.min_events,
    }
}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

fn validate(a: &BenchArgs) -> anyhow::Result<Setup> {
    let listen = a.mode == BenchMode::Listen;
    if a.mcp && listen {
        return Err(usage("--mcp calls a tool in each session: --mode listen does not apply"));
    }
    if a.raw && !listen {
        return Err(usage("--raw needs --mode listen (echo mode speaks the channel protocol)"));
    }
    if listen && a.url.is_none() {
        return Err(usage("--mode listen needs a URL (the embedded server only echoes)"));
    }
    if a.scenario.is_some() {
        if listen || a.raw || a.rate.is_some() || a.drop_every.is_some() || a.duration.is_some() {
            return Err(usage(
                "--scenario replays the recording's own timing: --mode listen, --raw, --rate, \
                 --drop-every and --duration do not apply (the record says raw or channel)",
            ));
        }
        if !(a.speed.is_finite() && a.speed > 0.0) {
            return Err(usage("--speed must be a positive factor (2 plays twice as fast)"));
        }
    }
    let requests = a.method.is_some() || a.data.is_some();
    if requests && !(listen && a.raw) {
        return Err(usage(
            "-X/--data need --mode listen --raw (streams answering a request to a plain SSE endpoint)",
        ));
    }
    if listen && (a.rate.is_some() && !requests || a.drop_every.is_some()) {
        return Err(usage(
            "--rate applies to echo mode and to listen mode with -X/--data; --drop-every to echo mode",
        ));
    }
    if a.streams == 0 {
        return Err(usage("--streams must be at least 1 (or give --duration)"));
    }
    let request = requests.then(|| request_spec(a)).transpose()?.map(Arc::new);
    if a.clients == 0 || a.clients > payload::MAX_CLIENTS {
        return Err(usage(format!("--clients must be between 1 and {}", payload::MAX_CLIENTS)));
    }
    if a.window == 0 {
        return Err(usage("--window must be at least 1"));
    }
    if a.messages == Some(0) {
        return Err(usage("--messages must be at least 1 (or give --duration)"));
    }
    if a.duration.is_some_and(|d| d.is_zero()) {
        return Err(usage("--duration must be more than 0"));
    }
    if let Some(r) = a.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(usage("--rate must be a positive number of messages per second"));
    }
    // Below this a wait cannot tell a slow answer from none: with --drain 0
    // every echo past the window would be given up at once.
    if a.drain < MIN_WAIT {
        return Err(usage(format!(
            "--drain must be at least {MIN_WAIT:?} (how long an echo or a quiet stream is waited for)"
        )));
    }
    if a.connect_timeout < MIN_WAIT {
        return Err(usage(format!("--connect-timeout must be at least {MIN_WAIT:?}")));
    }
    if a.drop_every.is_some_and(|d| d < Duration::from_millis(1)) {
        return Err(usage("--drop-every must be at least 1ms"));
    }
    if !listen && a.size < payload::HEADER_LEN {
        return Err(usage(format!(
            "--size {} is too small: a bench message needs at least {} bytes for its header",
            a.size,
            payload::HEADER_LEN
        )));
    }
    if let Some(t) = a.gates.min_throughput
        && !t.is_finite()
    {
        return Err(usage("--min-throughput must be a number"));
    }
    if a.gates.min_events.is_some() && !listen {
        return Err(usage("--min-events applies to listen mode (echo mode counts every message)"));
    }
    check_outputs(&a.output)?;
    let job_index = std::env::var(shard::JOB_INDEX_VAR).ok();
    let shard = a
        .shard
        .as_deref()
        .map(|s| Shard::parse(s, job_index.as_deref()))
        .transpose()
        .map_err(usage)?;
    if let Some(s) = shard
        && s.clients(a.clients).is_empty()
    {
        return Err(usage(format!(
            "shard {s} of {} clients has none: give at least {} clients",
            a.clients, s.count
        )));
    }
    let start_at = a
        .start_at
        .as_deref()
        .map(|t| {
            let at = shard::parse_start_at(t, SystemTime::now())?;
            shard::wait_until(at, SystemTime::now()).map(|_| at)
        })
        .transpose()
        .map_err(usage)?;
    let duration = match (a.duration, a.messages) {
        (None, None) if !listen => Some(DEFAULT_DURATION),
        (d, _) => d,
    };
    Ok(Setup { request, shard, start_at, messages: a.messages.unwrap_or(DEFAULT_EVENTS), duration })
}

/// At most one report goes to stdout.
pub(crate) fn check_outputs(o: &ReportArgs) -> anyhow::Result<()> {
    let to_stdout = [&o.json, &o.junit, &o.html]
        .iter()
        .filter(|p| p.as_ref().is_some_and(|p| p.as_os_str() == "-"))
        .count();
    if to_stdout > 1 {
        return Err(usage("only one of --json, --junit and --html can write to stdout (-)"));
    }
    Ok(())
}

/// `-X`, `--data` (`@FILE`, `@-` for stdin, or the text itself).
fn request_spec(a: &BenchArgs) -> anyhow::Result<request::RequestSpec> {
    let body = match a.data.as_deref() {
        None => bytes::Bytes::new(),
        Some(d) => crate::cli::request_body(d)?,
    };
    let method = match &a.method {
        Some(m) => crate::cli::http_method(m)?,
        None => http::Method::POST,
    };
    Ok(request::RequestSpec { method, body, per_client: a.streams })
}

/// Runs the workload; `None` when the target cannot be reached or refuses
/// the run for good (already said on stderr, in one line).
async fn bench(
    args: &BenchArgs,
    setup: &Setup,
    about: &Report,
    files: u64,
    halting: &Arc<Halting>,
    dashboard: Option<&Arc<dashboard::Dashboard>>,
) -> anyhow::Result<Option<Report>> {
    let (url, embedded) = (about.url.as_str(), about.embedded);
    let target = Target::parse(url, &args.headers).map_err(|e| usage(e.to_string()))?;
    let tls = target
        .tls
        .then(|| {
            let connector = tls::connector(args.cacert.as_deref(), args.insecure)?;
            Ok::<_, String>((connector, tls::server_name(&target.host)?))
        })
        .transpose()
        .map_err(usage)?;
    if args.insecure && target.tls {
        warn!(
            "--insecure: the server's certificate is not checked; anyone in between can read \
             and change the traffic"
        );
    }
    let unreachable = |why: String| {
        eprintln!("ssechan: cannot reach {url}: {why}");
        Ok(None)
    };
    // A resolver that does not answer must not hold the run either.
    let addr = match tokio::time::timeout(args.connect_timeout, target.resolve()).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return unreachable(e.to_string()),
        Err(_) => {
            return unreachable(format!(
                "{} not resolved within {:?}",
                target.host, args.connect_timeout
            ));
        }
    };
    let dialer = match tls {
        Some((connector, name)) => Dialer::tls(addr, connector, name, args.cacert.is_some()),
        None => Dialer::plain(addr),
    };
    let listen = args.mode == BenchMode::Listen;
    let run_id = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // First contact, before any client: a refused connection, a TLS
    // failure or (echo mode) a POST refused for good ends the run now.
    let probe = (!listen).then(|| format!("{run_id}-probe"));
    match first_contact(&target, &dialer, probe.as_deref(), args.connect_timeout).await {
        Ok(()) => {}
        Err(FirstContact::Unreachable(why)) => return unreachable(why),
        Err(FirstContact::Refused(status, why)) => {
            eprintln!("ssechan: {}", worker::not_taken(url, status, &why));
            return Ok(None);
        }
    }
    let local = setup.shard.unwrap_or(Shard::ALL).clients(args.clients);
    let rts = runtimes::Runtimes::start(args.threads).context("cannot start the client threads")?;
    let lanes = (!listen)
        .then(|| FileBudget::new(args, local.len() as u64).lanes(files))
        .flatten()
        .map(|n| {
            warn!(
                "open-file limit {files} is too low for a POST connection per client: \
                     {n} shared POST connections instead"
            );
            lanes::Lanes::start(n, local.len(), &dialer, args.connect_timeout, &rts)
        });
    let post_connections = match (&lanes, listen) {
        (_, true) => 0,
        (Some(l), _) => l.len() as u64,
        (None, _) => local.len() as u64,
    };
    let stats = Stats::new();
    let plan = Arc::new(Plan {
        target,
        dialer,
        url: url.to_string(),
        clients: args.clients,
        local: local.clone(),
        run_id,
        size: args.size,
        messages: setup.messages,
        duration: setup.duration,
        start_at: setup.start_at,
        rate_per_client: args.rate.map(|r| r / args.clients as f64),
        window: args.window as u64,
        drop_every: args.drop_every,
        connect_timeout: args.connect_timeout,
        drain: args.drain,
        raw: args.raw,
        lanes,
        clock: Clock::new(),
        stats: stats.clone(),
        halting: halting.clone(),
        accepted: AtomicBool::new(false),
        sampler: std::sync::Mutex::new(None),
        live: dashboard.map(|d| show_live(d.clone(), about.clone())),
    });
    info!(clients = local.len(), %url, "connecting");
    let progress = progress::Progress::start(stats.clone(), listen);
    let mut cpu0 = stats::process_cpu();
    let mut report = if let Some(spec) = &setup.request {
        run_requests(&plan, spec, &rts).await
    } else if listen {
        run_listen(&plan, &rts).await
    } else {
        run_echo(&plan, &rts, &mut cpu0).await
    };
    progress.finish();
    rts.stop();
    let cpu = (stats::process_cpu() - cpu0).as_secs_f64();
    report.timeline = plan.timeline().await;
    if let Some(line) = halting.fatal() {
        eprintln!("ssechan: {line}");
        return Ok(None);
    }
    if report.connected == 0 && !halting.interrupted() {
        let why =
            report.error_samples.first().cloned().unwrap_or_else(|| "no client connected".into());
        return unreachable(why);
    }
    report.mode = if listen { Mode::Listen } else { Mode::Echo };
    report.url = url.to_string();
    report.embedded = embedded;
    report.interrupted = halting.interrupted();
    report.shards = setup.shard.map(|s| vec![s.to_string()]).unwrap_or_default();
    report.post_connections = post_connections;
    report.clients = local.len() as u64;
    report.bench_cpu_s = cpu;
    report.set_histograms(stats.merged());
    report.refusals = stats.refusals();
    report.set_rates();
    if halting.now() == halt::Halt::Stop {
        report.warnings.push(
            "the run ended at the first request refused for good (none had succeeded): the \
             others would have been refused too"
                .into(),
        );
    }
    note_short_run(&mut report);
    Ok(Some(report))
}

/// Where the sampler's view of the run goes: each second, the dashboard
/// shows `about` with the figures so far.
fn show_live(dashboard: Arc<dashboard::Dashboard>, about: Report) -> watch::Sender<timeline::Live> {
    let (tx, mut rx) = watch::channel(timeline::Live::default());
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let live = rx.borrow_and_update().clone();
            let t = &live.totals;
            let mut r = Report { live: true, ..about.clone() };
            r.duration_s = live.timeline.samples.last().map_or(0.0, |s| s.t);
            (r.sent, r.received, r.events) = (t.sent, t.received, t.received);
            (r.drops, r.resumes, r.post_errors) = (t.drops, t.reconnects, t.unanswered);
            r.refusals = live.refusals;
            r.latency_ms = live.latency_ms;
            r.recovery_ms = live.recovery_ms;
            r.timeline = live.timeline;
            r.set_rates();
            dashboard.show(r.to_json_line());
        }
    });
    tx
}

/// Why the first contact ended the run.
enum FirstContact {
    Unreachable(String),
    /// The probe POST was refused for good: status and reason.
    Refused(http::StatusCode, String),
}

/// Connects once (TLS included) and, with a `probe` client id, POSTs one
/// message for it: that id has no stream, so a channel server answers 404
/// (unknown client) and keeps nothing, while a server without POST (405,
/// 501) or one that refuses the run (401, 403…) says so before a single
/// client connects. An answer that may change (404, 408, 429, 5xx "later")
/// or none within the timeout lets the run go on: the clients will see.
async fn first_contact(
    target: &Target,
    dialer: &Dialer,
    probe: Option<&str>,
    timeout: Duration,
) -> Result<(), FirstContact> {
    let io = match tokio::time::timeout(timeout, dialer.connect()).await {
        Ok(Ok(io)) => io,
        Ok(Err(conn::ConnectError::Tcp { source, .. })) => {
            return Err(FirstContact::Unreachable(source.to_string()));
        }
        Ok(Err(e)) => return Err(FirstContact::Unreachable(e.to_string())),
        Err(_) => {
            return Err(FirstContact::Unreachable(format!("no connection within {timeout:?}")));
        }
    };
    let Some(id) = probe else { return Ok(()) };
    let post = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let uri = format!("{}0", target.post_prefix(id)).parse().ok()?;
        let req = target.post_request(uri, bytes::Bytes::from_static(b"\"ssechan bench probe\""));
        lanes::read_response(sender.send_request(req)).await.ok()
    };
    match tokio::time::timeout(timeout, post).await {
        Ok(Some((status, body)))
            if !status.is_success()
                && status != http::StatusCode::NOT_FOUND
                && !conn::retry_later(status) =>
        {
            let why =
                if body.is_empty() { status.to_string() } else { format!("{status}: {body}") };
            Err(FirstContact::Refused(status, why))
        }
        _ => Ok(()),
    }
}

/// Runs the echo clients; `cpu0` becomes the CPU time at the load's start,
/// so that connecting thousands of clients does not count per message.
async fn run_echo(plan: &Arc<Plan>, rts: &runtimes::Runtimes, cpu0: &mut Duration) -> Report {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let ready = Arc::new(Semaphore::new(0));
    let (start_tx, start_rx) = watch::channel(None);
    let tasks: Vec<_> = plan
        .local
        .clone()
        .map(|i| {
            let (plan, gate, ready, start) =
                (plan.clone(), gate.clone(), ready.clone(), start_rx.clone());
            rts.spawn(i, worker::run(i, plan, gate, ready, start))
        })
        .collect();
    // Everyone connected (or failed): start the load at one instant.
    let n = u32::try_from(plan.local.len()).unwrap_or(u32::MAX);
    let _ = ready.acquire_many(n).await;
    if let Some(at) = plan.start_at {
        let mut halted = plan.halting.watch(halt::Halt::Interrupt);
        let _ = halt::unless(&mut halted, wait_for_start(at)).await;
    }
    let start_us = plan.clock.now_us();
    *cpu0 = stats::process_cpu();
    plan.start_sampler(start_us);
    let _ = start_tx.send(Some(start_us));
    info!("all clients connected; load started");
    let mut r = Report::default();
    let mut last_us = start_us;
    for t in tasks {
        let c = match t.await {
            Ok(c) => c,
            Err(e) => {
                warn!("client task failed: {e}");
                r.errors += 1;
                continue;
            }
        };
        r.connected += u64::from(c.connected);
        r.sent += c.sent;
        r.received += c.received;
        r.lost += c.lost;
        r.duplicated += c.duplicated;
        r.out_of_order += c.out_of_order;
        r.corrupted += c.corrupted;
        r.drops += c.drops;
        r.resumes += c.resumes;
        r.failed_resumes += c.failed_resumes;
        r.stream_ends += c.stream_ends;
        r.post_errors += c.post_errors;
        r.posts += c.posts;
        r.timeouts += c.timeouts;
        if let Some(e) = c.error.or_else(|| {
            c.closed_early.then(|| "closed by the server before the end of the run".to_string())
        }) {
            r.errors += 1;
            push_sample(&mut r.error_samples, e);
        }
        last_us = last_us.max(c.last_receive_us);
    }
    let end = if r.received > 0 { last_us } else { plan.clock.now_us() };
    r.duration_s = end.saturating_sub(start_us) as f64 / 1e6;
    r.started_at = rfc3339(plan.clock.wall_at(start_us));
    r
}

/// Waits for `--start-at`; says so when it passed before the clients were
/// ready (shards then do not start together).
pub(crate) async fn wait_for_start(at: SystemTime) {
    let wait = shard::wait_until(at, SystemTime::now()).unwrap_or_default();
    if wait.is_zero() {
        let late = SystemTime::now().duration_since(at).unwrap_or_default();
        if late > Duration::from_millis(100) {
            warn!("--start-at passed {late:?} ago: starting now");
        }
        return;
    }
    info!("waiting {wait:?} for --start-at");
    tokio::time::sleep(wait).await;
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// Runs the listen streams. Streams count from the moment they open, so
/// there is no common start as in echo mode; `--duration` is one deadline
/// from the load's start for all of them, connecting included.
async fn run_listen(plan: &Arc<Plan>, rts: &runtimes::Runtimes) -> Report {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    if let Some(at) = plan.start_at {
        wait_for_start(at).await;
    }
    let deadline = plan.duration.map(|d| tokio::time::Instant::now() + d);
    plan.start_sampler(plan.clock.now_us());
    let tasks: Vec<_> = plan
        .local
        .clone()
        .map(|i| rts.spawn(i, listen::run(i, plan.clone(), gate.clone(), deadline)))
        .collect();
    let mut r = Report::default();
    let mut ids = ids::IdTracker::default();
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut rates = Vec::with_capacity(plan.local.len());
    for t in tasks {
        let s = match t.await {
            Ok(s) => s,
            Err(e) => {
                warn!("stream task failed: {e}");
                r.errors += 1;
                continue;
            }
        };
        r.connected += u64::from(s.connected);
        r.events += s.events;
        ids.add(&s.ids);
        r.resumes += s.resumes;
        r.failed_resumes += s.failed_resumes;
        r.stream_ends += s.stream_ends;
        if let Some(f) = s.first_event_us {
            first = first.min(f);
            last = last.max(s.last_event_us);
            let span = s.last_event_us.saturating_sub(f) as f64 / 1e6;
            if s.events > 1 && span > 0.0 {
                rates.push((s.events - 1) as f64 / span);
            }
        }
        if s.idle {
            // Not a failed client: its server went quiet. It fails the run
            // only by the events it lacks.
            r.idle += 1;
            r.events_short += plan.messages.saturating_sub(s.events);
        } else if s.error.is_some() {
            r.errors += 1;
        }
        if let Some(e) = s.error {
            push_sample(&mut r.error_samples, e);
        }
    }
    set_ids(&mut r, &ids);
    r.received = r.events;
    r.duration_s = if first <= last { (last - first) as f64 / 1e6 } else { 0.0 };
    if first <= last {
        r.started_at = rfc3339(plan.clock.wall_at(first));
    }
    if !rates.is_empty() {
        let (min, max) = rates.iter().fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        r.stream_events_per_s = StreamRates { min, mean, max, streams: rates.len() as u64 };
    }
    r
}

/// Runs the request streams (listen with -X/--data); `--duration` is one
/// deadline for all.
async fn run_requests(
    plan: &Arc<Plan>,
    spec: &Arc<request::RequestSpec>,
    rts: &runtimes::Runtimes,
) -> Report {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    if let Some(at) = plan.start_at {
        wait_for_start(at).await;
    }
    let start_us = plan.clock.now_us();
    let deadline = plan.duration.map(|d| tokio::time::Instant::now() + d);
    plan.start_sampler(start_us);
    let tasks: Vec<_> = plan
        .local
        .clone()
        .map(|i| rts.spawn(i, request::run(i, plan.clone(), spec.clone(), gate.clone(), deadline)))
        .collect();
    let mut r = Report::default();
    let mut ids = ids::IdTracker::default();
    let mut rates = Vec::new();
    let mut last = start_us;
    for t in tasks {
        let c = match t.await {
            Ok(c) => c,
            Err(e) => {
                warn!("request task failed: {e}");
                r.errors += 1;
                continue;
            }
        };
        r.connected += u64::from(c.connected);
        r.requests += c.requests;
        r.completed += c.completed;
        r.failed_requests += c.failed;
        r.events += c.events;
        r.bytes += c.bytes;
        ids.add(&c.ids);
        rates.extend(c.rates);
        last = last.max(c.last_event_us);
        if let Some(e) = c.error {
            push_sample(&mut r.error_samples, e);
        }
    }
    set_ids(&mut r, &ids);
    r.received = r.events;
    // From the load's start: requests are the load, not only their events.
    r.duration_s = last.saturating_sub(start_us) as f64 / 1e6;
    r.started_at = rfc3339(plan.clock.wall_at(start_us));
    if !rates.is_empty() {
        let (min, max) = rates.iter().fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        r.stream_events_per_s = StreamRates { min, mean, max, streams: rates.len() as u64 };
    }
    r
}

/// The id sequences' counts, in the report.
fn set_ids(r: &mut Report, ids: &ids::IdTracker) {
    r.lost = ids.missing;
    r.id_gaps = ids.gaps;
    r.out_of_order = ids.backwards;
    r.id_restarts = ids.restarts;
    r.ids_unordered = ids.unordered;
    r.ids_absent = ids.absent;
    r.id_format = ids.format.unwrap_or_default().to_string();
}

/// Keeps `e` unless it is already there or enough are.
pub(crate) fn push_sample(samples: &mut Vec<String>, e: String) {
    if samples.len() < ERROR_SAMPLES {
        // Samples quote servers' error pages, and end up on a terminal.
        let e = crate::text::escape_controls(&e).into_owned();
        if !samples.contains(&e) {
            samples.push(e);
        }
    }
}

/// Shortest run whose figures repeat within about 10% on this project's
/// machine (see docs/performance.md), and fewest round trips for a p99.9 with ten
/// samples above it.
const STABLE_DURATION: Duration = Duration::from_secs(5);
const STABLE_SAMPLES: u64 = 10_000;

/// Says so when a run is too short for its figures to mean much.
fn note_short_run(r: &mut Report) {
    if r.mode == Mode::Scenario {
        return;
    }
    let samples = match r.mode {
        Mode::Echo | Mode::Scenario | Mode::Mcp => r.received,
        Mode::Listen => r.events,
    };
    let secs = STABLE_DURATION.as_secs_f64();
    if r.duration_s < secs || samples < STABLE_SAMPLES {
        let unit = if matches!(r.mode, Mode::Echo | Mode::Mcp) { "round trips" } else { "events" };
        r.warnings.push(format!(
            "short run ({:.2} s, {samples} {unit}): figures vary from run to run below \
             {secs:.0} s and {STABLE_SAMPLES} {unit}; use a longer --duration",
            r.duration_s
        ));
    }
}

/// The JSON (`--json`) and JUnit (`--junit`) reports go to their files;
/// the one given as `-` goes to stdout and the text for people to stderr,
/// else the text goes to stdout.
pub(crate) fn write_report(out: &ReportArgs, report: &Report) -> anyhow::Result<()> {
    let mut to_stdout = None;
    for (path, text) in [
        (&out.json, out.json.as_ref().map(|_| report.to_json())),
        (&out.junit, out.junit.as_ref().map(|_| report.to_junit())),
        (&out.html, out.html.as_ref().map(|_| html::page(&report.to_json_line(), None))),
    ] {
        let (Some(p), Some(text)) = (path, text) else { continue };
        if p.as_os_str() == "-" {
            to_stdout = Some(text);
        } else {
            let text = if text.ends_with('\n') { text } else { text + "\n" };
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
        }
    }
    let human = report.human();
    let mut stdout = std::io::stdout().lock();
    match to_stdout {
        Some(text) => {
            eprint!("{human}");
            writeln!(stdout, "{}", text.trim_end())
        }
        None => write!(stdout, "{human}"),
    }
    .and_then(|()| stdout.flush())
    .context("cannot write the report to stdout")?;
    Ok(())
}

/// Open files a run needs: each client's stream (and, by default, its own
/// POST connection); the embedded server holds the other ends.
struct FileBudget {
    clients: u64,
    per_socket: u64,
    listen: bool,
}

/// Files kept for everything but client sockets.
const SPARE_FILES: u64 = 256;
/// Most shared POST connections (lanes) a run uses.
const MAX_LANES: u64 = 1024;

impl FileBudget {
    /// For `clients` (this shard's) of `a`.
    fn new(a: &BenchArgs, clients: u64) -> Self {
        Self {
            clients,
            per_socket: if a.url.is_none() { 2 } else { 1 },
            listen: a.mode == BenchMode::Listen,
        }
    }

    /// Files for a POST connection per client.
    fn own(&self) -> u64 {
        let sockets = if self.listen { 1 } else { 2 };
        self.clients * sockets * self.per_socket + SPARE_FILES
    }

    /// `None` when `limit` allows a POST connection per client; else how
    /// many shared ones fit (at least 1).
    fn lanes(&self, limit: u64) -> Option<usize> {
        if self.listen || limit >= self.own() {
            return None;
        }
        let left = limit.saturating_sub(self.clients * self.per_socket + SPARE_FILES);
        Some((left / self.per_socket).clamp(1, MAX_LANES.min(self.clients)) as usize)
    }
}

/// The in-process `serve --echo` used when no URL is given.
struct EmbeddedServer {
    url: String,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl EmbeddedServer {
    async fn start(keep_alive: Duration) -> anyhow::Result<Self> {
        let config = ServerConfig { keep_alive: Some(keep_alive), ..ServerConfig::default() };
        let server = Server::bind("127.0.0.1:0", config)
            .await
            .context("cannot start the embedded echo server")?;
        let url = server.url();
        info!(%url, "embedded echo server");
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(server.run(async move { stopped.notified().await }, |c| {
            tokio::spawn(crate::serve::echo(c));
        }));
        Ok(Self { url, stop, task })
    }

    async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn error_samples_escape_what_a_terminal_would_obey() {
        let mut samples = Vec::new();
        push_sample(&mut samples, "500 \u{1b}]0;owned\u{7}\u{1b}[2J".into());
        push_sample(&mut samples, "500 \u{1b}]0;owned\u{7}\u{1b}[2J".into());
        assert_eq!(samples, ["500 ^[]0;owned^G^[[2J"]);
    }

    use super::*;

    fn budget(clients: u64, embedded: bool, listen: bool) -> FileBudget {
        FileBudget { clients, per_socket: if embedded { 2 } else { 1 }, listen }
    }

    #[test]
    fn own_post_connections_when_the_limit_allows() {
        let b = budget(100, false, false);
        assert_eq!(b.own(), 200 + SPARE_FILES);
        assert_eq!(b.lanes(200 + SPARE_FILES), None);
        assert_eq!(budget(100, true, false).own(), 400 + SPARE_FILES);
    }

    #[test]
    fn shared_lanes_fill_what_is_left() {
        // 10,000 clients under 20,000 files: streams take 10,000.
        let b = budget(10_000, false, false);
        assert_eq!(b.lanes(20_000), Some(MAX_LANES as usize));
        assert_eq!(b.lanes(10_000 + SPARE_FILES + 10), Some(10));
        // Not even the streams fit: one lane, clients will fail and say so.
        assert_eq!(b.lanes(100), Some(1));
        // The embedded server holds the other end of every socket.
        assert_eq!(budget(100, true, false).lanes(200 + SPARE_FILES + 20), Some(10));
    }

    #[test]
    fn listen_needs_no_post_connections() {
        let b = budget(1000, false, true);
        assert_eq!(b.own(), 1000 + SPARE_FILES);
        assert_eq!(b.lanes(10), None);
    }
}
