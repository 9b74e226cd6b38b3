//! Listen mode: N streams from any SSE endpoint (a channel, or with `--raw`
//! plain SSE), counting events, time to first event and gaps in `id:`
//! sequences. One task per stream, polling its own connection.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::debug;

use super::Plan;
use super::conn::{open_stream, stream_driver};
use super::halt::{self, Halt};
use super::ids::IdTracker;
use crate::client::driver::{DriverConfig, OpenError, Resume, Step};
use crate::protocol::parser::{EventStreamParser, Parsed};
use crate::reader::{Reader, RetryPolicy};

/// What one stream saw.
#[derive(Debug, Default)]
pub struct StreamResult {
    pub connected: bool,
    pub events: u64,
    /// The stream's id sequence: gaps, disorder, restarts, its form.
    pub ids: IdTracker,
    pub resumes: u64,
    pub failed_resumes: u64,
    pub stream_ends: u64,
    /// Clock µs of the first and the last event.
    pub first_event_us: Option<u64>,
    pub last_event_us: u64,
    /// Without `--duration`: the stream ended for having no event for
    /// `--drain` (and why, in `error`).
    pub idle: bool,
    pub error: Option<String>,
}

/// Runs stream `index` until `deadline` (the load's common end, for
/// `--duration`), `--messages` events, a control close or a 204; without
/// `--duration`, also until no event came for `--drain` (across reconnects:
/// a server that ends every stream at once must not hold the run).
pub async fn run(
    index: usize,
    plan: Arc<Plan>,
    gate: Arc<Semaphore>,
    deadline: Option<Instant>,
) -> StreamResult {
    let mut r = StreamResult::default();
    let id = format!("{}-{index}", plan.run_id);
    let uri = plan.target.stream_uri((!plan.raw).then_some(id.as_str()));
    // Waiting for a connect permit and connecting both count against the
    // deadline: late clients must not stretch the run.
    let connect = async {
        let _permit = gate.acquire().await;
        let opened_at = plan.clock.now_us();
        let t0 = std::time::Instant::now();
        let s =
            open_stream(&plan.target, &plan.dialer, uri.clone(), None, plan.connect_timeout).await;
        if s.is_ok() {
            plan.stats.local().connect.record_us(t0.elapsed().as_micros() as u64);
        }
        (s, opened_at)
    };
    // Any halt ends a stream: it has nothing in flight to wait for.
    let mut halt = plan.halting.watch(Halt::Interrupt);
    let (first, opened_at) = match until(deadline, &mut halt, connect).await {
        Some(x) => x,
        None if halt.is_done() => return r,
        None => {
            r.error = Some("connect: not connected before the end of --duration".into());
            return r;
        }
    };
    let first = match first {
        Ok(s) => s,
        Err(e) => {
            if e.is_permanent() {
                // Every stream would get the same: the run ends now.
                plan.halting.stop(Some(format!("cannot reach {}: connect: {e}", plan.url)));
            }
            r.error = Some(format!("connect: {e}"));
            return r;
        }
    };
    r.connected = true;
    let mut quiet = Quiet::new(plan.duration.is_none().then_some(plan.drain));
    let config = DriverConfig {
        retry: retry_policy(&plan),
        max_event_bytes: EventStreamParser::DEFAULT_MAX,
        idle_timeout: None,
        resume: Resume::Plain,
    };
    let mut driver = stream_driver(plan.clone(), uri, config, first);
    let mut ids = IdTracker::default();
    // Clock µs of the last stream end, until the first event after it.
    let mut ended_at: Option<u64> = None;
    // Why re-opening failed last, since the last stream opened.
    let mut last_error: Option<String> = None;
    loop {
        let Some(step) = until(quiet.limit(deadline), &mut halt, driver.next()).await else {
            quiet.bytes = driver.bytes_read();
            finish(&quiet, driver.reader(), &mut r, plan.messages);
            break;
        };
        let Some(step) = step else { break };
        match step {
            Step::Item(Parsed::Event(ev)) => {
                // A chunk's events in one turn: one clock read and one
                // shared count per chunk, as the hot path wants.
                let now = plan.clock.now_us();
                let mut new = 0;
                let mut next = Some(Step::Item(Parsed::Event(ev)));
                let mut done = false;
                while let Some(step) = next.take() {
                    match step {
                        Step::Item(Parsed::Event(ev)) => {
                            if ev.is_control_close() {
                                done = true;
                                break;
                            }
                            // Before this stream's first `id:`, the id is the
                            // one an earlier stream left: the event had none.
                            let had_id = driver.reader().stream_had_id();
                            ids.observe(if had_id { &ev.last_event_id } else { "" });
                            quiet.event(driver.bytes_read());
                            new += 1;
                            r.events += 1;
                            if r.first_event_us.is_none() {
                                r.first_event_us = Some(now);
                                plan.stats.local().first_event.record_us(now - opened_at);
                            }
                            if let Some(at) = ended_at.take() {
                                plan.stats.local().recovery.record_us(now.saturating_sub(at));
                            }
                            r.last_event_us = now;
                            if plan.duration.is_none() && r.events >= plan.messages {
                                done = true;
                                break;
                            }
                        }
                        Step::Broken { reason } => {
                            r.error.get_or_insert_with(|| format!("event stream: {reason}"));
                            done = true;
                            break;
                        }
                        _ => {}
                    }
                    next = driver.next_buffered();
                }
                plan.stats.counters().received.fetch_add(new, Ordering::Relaxed);
                // A stream that is always ready never lets the timeout fire.
                if !done && quiet.limit(deadline).is_some_and(|d| Instant::now() >= d) {
                    quiet.bytes = driver.bytes_read();
                    finish(&quiet, driver.reader(), &mut r, plan.messages);
                    done = true;
                }
                if done {
                    break;
                }
            }
            Step::Item(_) | Step::Waiting { .. } => {}
            Step::Broken { reason } => {
                r.error.get_or_insert_with(|| format!("event stream: {reason}"));
                break;
            }
            // No control close came: the server ended the stream (this is
            // how a server disconnects a slow consumer) or the connection
            // broke. It is re-opened as EventSource does: after the
            // server's `retry:` (or backing off when streams end at once),
            // resuming after the last id.
            Step::Lost { reason } => {
                debug!(stream = index, reason, "stream ended");
                r.stream_ends += 1;
                ended_at = Some(plan.clock.now_us());
                ids.reopen();
            }
            Step::Connecting { .. } => {
                plan.stats.counters().reconnects.fetch_add(1, Ordering::Relaxed);
            }
            Step::Open { .. } => {
                r.resumes += 1;
                last_error = None;
                if let Some(at) = ended_at {
                    plan.stats.local().resume.record_us(plan.clock.now_us().saturating_sub(at));
                }
            }
            Step::OpenFailed { reason, .. } => {
                r.failed_resumes += 1;
                last_error = Some(reason);
            }
            // 204: the server says this stream is over.
            Step::NoContent => break,
            Step::Refused { refusal, body } => {
                r.error = Some(OpenError::Refused { refusal, body }.to_string());
                break;
            }
            Step::Failed { reason } => {
                r.error = Some(reason);
                break;
            }
            Step::GaveUp { .. } => {
                let reader = driver.reader();
                let took = reader.backoff().policy().give_up_after.unwrap_or_default();
                r.error = Some(match last_error {
                    Some(e) => format!("reconnect failed for over {took:?}: {e}"),
                    None => ended_at_once(reader),
                });
                break;
            }
        }
    }
    r.ids = ids;
    r
}

/// How long a stream may go without an event (listen mode without
/// `--duration`, where nothing else ends a stream that stays open but
/// silent). Comments and heartbeats do not count: a server that only sends
/// those delivers no events either, and must not hold the run.
struct Quiet {
    limit: Option<Duration>,
    /// The last event, or the stream's opening before the first.
    since: Instant,
    /// Bytes read by then (all streams), and by the time it ran out.
    at_event: u64,
    bytes: u64,
}

impl Quiet {
    fn new(limit: Option<Duration>) -> Self {
        Self { limit, since: Instant::now(), at_event: 0, bytes: 0 }
    }

    /// An event came; `read`: the bytes read so far.
    fn event(&mut self, read: u64) {
        self.since = Instant::now();
        self.at_event = read;
    }

    /// The earlier of `deadline` and the end of the allowed quiet.
    fn limit(&self, deadline: Option<Instant>) -> Option<Instant> {
        let quiet = self.limit.map(|l| self.since + l);
        match (deadline, quiet) {
            (Some(d), Some(q)) => Some(d.min(q)),
            (d, q) => d.or(q),
        }
    }

    /// A wait ended at [`Quiet::limit`]: marks the stream idle if it was
    /// the quiet (not the deadline) that ran out.
    fn check(&self, r: &mut StreamResult, messages: u64) {
        let Some(limit) = self.limit else { return };
        if Instant::now() < self.since + limit {
            return;
        }
        r.idle = true;
        let what = match self.bytes.saturating_sub(self.at_event) {
            0 => "nothing at all".to_string(),
            n => format!("{n} bytes but no event"),
        };
        r.error.get_or_insert_with(|| {
            format!("no event for {limit:?} ({what}) after {} of {messages} events", r.events)
        });
    }
}

/// First wait before re-opening a stream when the server sent no `retry:`.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest wait between two attempts: keeps a recovered target from idling
/// while the stream sleeps.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Streams in a row that ended at once without an event, still so at the
/// end of the run: the stream could not stay open, which fails it.
const QUICK_ENDS_FAIL: u32 = 3;

/// How a listen stream reconnects: the server's `retry:` honoured (with
/// the reader's floor), failures backing off up to [`RETRY_MAX`], given up
/// after failing for `--drain` or `--connect-timeout`, whichever is longer.
fn retry_policy(plan: &Plan) -> RetryPolicy {
    RetryPolicy {
        initial: RETRY_MIN,
        max: RETRY_MAX,
        max_retries: None,
        give_up_after: Some(plan.drain.max(plan.connect_timeout)),
        retry_first: false,
    }
}

fn ended_at_once(reader: &Reader) -> String {
    format!(
        "the server ended the stream {} times in a row without an event (it cannot stay open)",
        reader.quick_ends()
    )
}

/// The run ended at a deadline or the quiet limit: an idle stream is
/// marked so; one whose streams kept ending at once failed.
fn finish(quiet: &Quiet, reader: &Reader, r: &mut StreamResult, messages: u64) {
    quiet.check(r, messages);
    if reader.quick_ends() >= QUICK_ENDS_FAIL && !r.idle {
        r.error.get_or_insert_with(|| ended_at_once(reader));
    }
}

/// `fut`'s output, or `None` when `deadline` passes or the run is halted
/// first.
pub(super) async fn until<F: Future>(
    deadline: Option<Instant>,
    halt: &mut halt::Watch,
    fut: F,
) -> Option<F::Output> {
    let raced = halt::unless(halt, fut);
    match deadline {
        Some(d) => tokio::time::timeout_at(d, raced).await.ok().flatten(),
        None => raced.await,
    }
}
