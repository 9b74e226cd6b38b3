//! `bench --mcp`: sessions of the MCP client ([`McpClient`], on the one
//! reconnect driver) calling a tool, closed loop (`--window` calls in
//! flight) or open loop (`--rate`), every answer verified: the response
//! to each id once, none to an id not asked or answered already, and
//! (the default `echo`) the text that was sent. `--drop-every` cuts each
//! session's open streams; they resume with `Last-Event-ID`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info};

use super::report::{Mode, Report};
use super::stats::{Clock, Stats};
use super::{halt, progress, push_sample, rfc3339, stats, timeline};
use crate::cli::BenchArgs;
use crate::client::mcp::{McpClient, McpError, McpEvent, McpOptions};
use crate::client::{ClientConfig, Mode as ClientMode};
use crate::mcp::message::{Kind, Message, RequestId};

/// Longest wait for one answer: a session whose call is never answered
/// must not hold the run (the answer is then counted lost).
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// What every session shares.
pub(super) struct McpPlan {
    pub config: ClientConfig,
    pub tool: String,
    /// `None`: the echo's `{"message": …}`, checked in the answer.
    pub args: Option<Value>,
    pub size: usize,
    pub run_id: String,
    /// Sessions of the run: open-loop calls are spread over them.
    pub clients: usize,
    /// Calls per session (closed loop without --duration).
    pub calls: u64,
    pub duration: Option<Duration>,
    pub rate_per_client: Option<f64>,
    pub window: usize,
    pub drop_every: Option<Duration>,
    pub connect_timeout: Duration,
    pub drain: Duration,
    pub clock: Clock,
    pub stats: Arc<Stats>,
    pub halting: Arc<halt::Halting>,
}

/// The tool and its arguments from the flags.
pub(super) fn tool_of(a: &BenchArgs) -> anyhow::Result<(String, Option<Value>)> {
    let tool = a.tool.clone().unwrap_or_else(|| "echo".into());
    let args = match &a.args {
        None if tool == "echo" => None,
        None => Some(json!({})),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Some(v),
            Ok(_) => return Err(super::usage("--args must be a JSON object")),
            Err(e) => return Err(super::usage(format!("--args is not JSON: {e}"))),
        },
    };
    Ok((tool, args))
}

/// What one session did.
#[derive(Debug, Default)]
struct Session {
    connected: bool,
    sent: u64,
    received: u64,
    lost: u64,
    duplicated: u64,
    corrupted: u64,
    /// Calls answered with a JSON-RPC error.
    errors: u64,
    drops: u64,
    resumes: u64,
    failed_resumes: u64,
    error: Option<String>,
    last_answer_us: u64,
}

/// Runs the sessions; the report of the run.
pub(super) async fn run(plan: Arc<McpPlan>, clients: usize) -> Report {
    let gate = Arc::new(Semaphore::new(super::CONNECT_CONCURRENCY));
    let ready = Arc::new(Semaphore::new(0));
    let (start_tx, start_rx) = watch::channel(None);
    info!(clients, url = %plan.config.url, "connecting MCP sessions");
    let progress = progress::Progress::start(plan.stats.clone(), false);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (plan, gate, ready, start) =
                (plan.clone(), gate.clone(), ready.clone(), start_rx.clone());
            tokio::spawn(session(i, plan, gate, ready, start))
        })
        .collect();
    let n = u32::try_from(clients).unwrap_or(u32::MAX);
    let _ = ready.acquire_many(n).await;
    let start_us = plan.clock.now_us();
    let cpu0 = stats::process_cpu();
    let sampler = timeline::Sampler::start(plan.stats.clone(), plan.clock, start_us, None);
    let _ = start_tx.send(Some(start_us));
    info!("all sessions open; load started");
    let mut r = Report { mode: Mode::Mcp, ..Report::default() };
    let mut last_us = start_us;
    for t in tasks {
        let s = match t.await {
            Ok(s) => s,
            Err(e) => {
                r.errors += 1;
                push_sample(&mut r.error_samples, format!("session task failed: {e}"));
                continue;
            }
        };
        r.connected += u64::from(s.connected);
        r.sent += s.sent;
        r.posts += s.sent;
        r.received += s.received;
        r.lost += s.lost;
        r.duplicated += s.duplicated;
        r.corrupted += s.corrupted;
        r.drops += s.drops;
        r.resumes += s.resumes;
        r.failed_resumes += s.failed_resumes;
        if s.errors > 0 {
            push_sample(&mut r.error_samples, format!("{} calls answered with an error", s.errors));
        }
        if let Some(e) = s.error {
            r.errors += 1;
            push_sample(&mut r.error_samples, e);
        }
        last_us = last_us.max(s.last_answer_us);
    }
    progress.finish();
    r.bench_cpu_s = (stats::process_cpu() - cpu0).as_secs_f64();
    r.timeline = sampler.finish().await;
    let end = if r.received > 0 { last_us } else { plan.clock.now_us() };
    r.duration_s = end.saturating_sub(start_us) as f64 / 1e6;
    r.started_at = rfc3339(plan.clock.wall_at(start_us));
    r.clients = clients as u64;
    r.post_connections = clients as u64;
    r.set_histograms(plan.stats.merged());
    r.refusals = plan.stats.refusals();
    r.interrupted = plan.halting.interrupted();
    r.set_rates();
    r
}

/// One session: connect, wait for the start, call, verify, end it.
async fn session(
    index: usize,
    plan: Arc<McpPlan>,
    gate: Arc<Semaphore>,
    ready: Arc<Semaphore>,
    mut start: watch::Receiver<Option<u64>>,
) -> Session {
    let mut s = Session::default();
    let connected = {
        let _permit = gate.acquire().await;
        let t0 = Instant::now();
        let options = McpOptions { listen: false, ..McpOptions::default() };
        let c = tokio::time::timeout(
            plan.connect_timeout,
            McpClient::connect(plan.config.clone(), options),
        )
        .await;
        if c.is_ok() {
            plan.stats.local().connect.record_us(t0.elapsed().as_micros() as u64);
        }
        c
    };
    ready.add_permits(1);
    let (client, events) = match connected {
        Ok(Ok((client, _info, events))) => (client, events),
        Ok(Err(e)) => {
            s.error = Some(format!("session {index}: {e}"));
            return s;
        }
        Err(_) => {
            s.error = Some(format!("session {index}: not open within {:?}", plan.connect_timeout));
            return s;
        }
    };
    s.connected = true;
    let Ok(Some(start_us)) = start.wait_for(Option::is_some).await.map(|v| *v) else {
        client.close().await;
        return s;
    };
    // Messages of the server that no call waits for: a response among
    // them is one to an id not asked, or answered already.
    let (unexpected_tx, unexpected) = watch::channel(0u64);
    let watcher = tokio::spawn(watch_events(events, unexpected_tx, plan.stats.clone()));
    let dropper = plan.drop_every.map(|every| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                tick.tick().await;
                client.drop_streams();
            }
        })
    });
    calls(index, &plan, &client, start_us, &mut s).await;
    if let Some(d) = dropper {
        d.abort();
    }
    let st = client.stats();
    s.drops = st.cuts.load(Ordering::Relaxed);
    s.resumes = st.resumes.load(Ordering::Relaxed);
    s.failed_resumes = st.failed_resumes.load(Ordering::Relaxed);
    for (status, n) in st.refusals_by_status() {
        for _ in 0..n {
            plan.stats.refused(status);
        }
    }
    client.close().await;
    // The watcher ends with the client's last clone (its tasks end as it
    // stops); bounded all the same.
    drop(client);
    let _ = tokio::time::timeout(plan.drain, watcher).await;
    s.duplicated += *unexpected.borrow();
    s
}

/// Counts responses no call waited for until the client stops, and
/// times each stream's resume from its cut.
async fn watch_events(
    mut events: mpsc::Receiver<McpEvent>,
    unexpected: watch::Sender<u64>,
    stats: Arc<Stats>,
) {
    let mut cut_at: HashMap<String, Instant> = HashMap::new();
    while let Some(e) = events.recv().await {
        match e {
            McpEvent::Cut { stream, .. } => {
                cut_at.insert(stream, Instant::now());
            }
            McpEvent::Resumed { stream, .. } => {
                if let Some(t) = cut_at.remove(&stream) {
                    let took = t.elapsed().as_micros() as u64;
                    stats.local().resume.record_us(took);
                    stats.local().recovery.record_us(took);
                }
            }
            McpEvent::Message(Message { kind: Kind::Response { id }, .. }) => {
                debug!(id = id.as_json(), "a response no call waited for");
                unexpected.send_modify(|n| *n += 1);
            }
            McpEvent::SessionEnded => break,
            _ => {}
        }
    }
}

/// One call's outcome: the id, when it was due (clock µs), the answer.
type Call = (u64, u64, Result<Result<Message, McpError>, tokio::time::error::Elapsed>);

/// Calls until the run's end, `--window` at once (or at `--rate`), then
/// waits for the answers still owed.
async fn calls(index: usize, plan: &McpPlan, client: &McpClient, start_us: u64, s: &mut Session) {
    let at = |us: u64| Instant::from_std(plan.clock.instant_at(us));
    let deadline = plan.duration.map(|d| at(start_us) + d);
    let mut halted = plan.halting.watch(halt::Halt::Interrupt);
    let mut in_flight: JoinSet<Call> = JoinSet::new();
    let mut answered: HashSet<u64> = HashSet::new();
    let mut next: u64 = 1;
    // Open loop: calls are due at a fixed pace from the start, spread
    // over the sessions; a late call is timed from when it was due.
    let pace = plan.rate_per_client.map(|r| Duration::from_secs_f64(1.0 / r));
    let share = index as f64 / plan.clients.max(1) as f64;
    let offset = pace.map(|p| p.mul_f64(share)).unwrap_or_default();
    let due_at = |n: u64| match pace {
        Some(p) => start_us + (offset + p * (n - 1) as u32).as_micros() as u64,
        None => 0,
    };
    loop {
        let more = match deadline {
            Some(d) => Instant::now() < d,
            None => next <= plan.calls,
        };
        let can_send = more && (pace.is_some() || in_flight.len() < plan.window);
        if can_send {
            let due = if pace.is_some() { due_at(next) } else { plan.clock.now_us() };
            let wait = at(due);
            if pace.is_none() || Instant::now() >= wait {
                in_flight.spawn(call(plan, client, next, due));
                s.sent += 1;
                plan.stats.counters().sent.fetch_add(1, Ordering::Relaxed);
                next += 1;
                continue;
            }
            tokio::select! {
                Some(done) = in_flight.join_next() => judge(plan, done, &mut answered, s),
                _ = tokio::time::sleep_until(wait) => {}
                () = &mut halted => break,
            }
            continue;
        }
        if in_flight.is_empty() && !more {
            break;
        }
        let until = deadline.filter(|_| more);
        tokio::select! {
            Some(done) = in_flight.join_next() => judge(plan, done, &mut answered, s),
            _ = async { match until { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {}
            () = &mut halted => break,
        }
    }
    // The run is over: the answers still owed get --drain.
    let drain = tokio::time::sleep(plan.drain);
    tokio::pin!(drain);
    while !in_flight.is_empty() {
        tokio::select! {
            Some(done) = in_flight.join_next() => judge(plan, done, &mut answered, s),
            _ = &mut drain => break,
        }
    }
    let owed = in_flight.len() as u64;
    if owed > 0 {
        s.lost += owed;
        s.error.get_or_insert_with(|| {
            format!(
                "session {index}: {owed} calls unanswered within --drain {:?} after the run",
                plan.drain
            )
        });
    }
}

/// Call `n`, due at clock µs `due`.
fn call(
    plan: &McpPlan,
    client: &McpClient,
    n: u64,
    due: u64,
) -> impl Future<Output = Call> + use<> {
    let arguments = match &plan.args {
        Some(a) => a.clone(),
        None => json!({ "message": echo_text(&plan.run_id, n, plan.size) }),
    };
    let msg = json!({ "jsonrpc": "2.0", "id": n, "method": "tools/call",
        "params": { "name": plan.tool, "arguments": arguments } });
    let client = client.clone();
    async move {
        let answer = match Message::from_value(msg) {
            Ok(m) => tokio::time::timeout(ANSWER_WAIT, client.request(m)).await,
            Err(e) => Ok(Err(McpError::Handshake(e.to_string()))),
        };
        (n, due, answer)
    }
}

/// The echo's message of call `n`: the run and call, padded to `size`.
fn echo_text(run_id: &str, n: u64, size: usize) -> String {
    let mut t = format!("{run_id}-{n}-");
    while t.len() < size {
        t.push('x');
    }
    t
}

/// Verifies one answer and counts it.
fn judge(
    plan: &McpPlan,
    done: Result<Call, tokio::task::JoinError>,
    answered: &mut HashSet<u64>,
    s: &mut Session,
) {
    let now = plan.clock.now_us();
    let Ok((n, due, answer)) = done else {
        s.lost += 1;
        s.error.get_or_insert_with(|| "a call's task failed".into());
        return;
    };
    let m = match answer {
        Err(_) => {
            s.lost += 1;
            s.error.get_or_insert_with(|| format!("call {n}: no answer within {ANSWER_WAIT:?}"));
            return;
        }
        Ok(Err(McpError::Unanswered(why))) if why.starts_with("refused: ") => {
            // Counted by status in the client's refusals.
            s.error.get_or_insert_with(|| format!("call {n}: {why}"));
            return;
        }
        Ok(Err(e)) => {
            s.lost += 1;
            s.error.get_or_insert_with(|| format!("call {n}: {e}"));
            return;
        }
        Ok(Ok(m)) => m,
    };
    if m.kind != (Kind::Response { id: RequestId::of_number(n) }) || !answered.insert(n) {
        s.duplicated += 1;
        return;
    }
    s.received += 1;
    s.last_answer_us = now;
    plan.stats.counters().received.fetch_add(1, Ordering::Relaxed);
    plan.stats.local().latency.record_us(now.saturating_sub(due));
    // A JSON-RPC error, or a tool's own (`isError`: MCP's way for a
    // tool that failed).
    let tool_error = m.value.pointer("/result/isError") == Some(&json!(true));
    if let Some(e) = m.value.get("error").or(tool_error.then(|| &m.value["result"])) {
        s.errors += 1;
        let e = crate::text::escape_controls(&e.to_string()).into_owned();
        s.error.get_or_insert_with(|| format!("call {n} answered with an error: {e}"));
        return;
    }
    if plan.args.is_none() {
        let text = m.value.pointer("/result/content/0/text").and_then(Value::as_str);
        let want = echo_text(&plan.run_id, n, plan.size);
        if !text.is_some_and(|t| t.ends_with(&want)) {
            s.corrupted += 1;
            s.error.get_or_insert_with(|| format!("call {n}: the echo is not the message sent"));
        }
    }
}

/// The client configuration of `--mcp` from the flags.
pub(super) fn config(a: &BenchArgs, url: &str) -> anyhow::Result<ClientConfig> {
    let mut c = ClientConfig::new(url, ClientMode::Raw).map_err(|e| super::usage(e.to_string()))?;
    c.headers =
        crate::client::parse_headers(&a.headers).map_err(|e| super::usage(e.to_string()))?;
    c.timeout = a.connect_timeout;
    c.in_flight = a.window.max(64);
    c.insecure = a.insecure;
    if let Some(p) = &a.cacert {
        c.ca_certs = crate::client::load_ca_certs(p).map_err(|e| super::usage(e.to_string()))?;
    }
    Ok(c)
}
