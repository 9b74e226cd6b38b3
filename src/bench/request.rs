//! Listen mode with `-X`/`--data`: each stream is the answer to a request
//! (LLM-style APIs stream their answer to a POST). A stream that ends is a
//! completed request, not a loss to reconnect from; an error status, a
//! broken stream or one that stays silent for `--drain` is a failed one.
//! Each client makes its requests one after another: `--streams` of them,
//! or until `--duration`; with `--rate`, new requests start on a schedule
//! (spread over the clients as echo mode spreads messages) and a late one
//! is timed from when it was due.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::Plan;
use super::conn::{ConnectError, open_with, retry_later};
use super::halt::{self, Halt};
use super::ids::IdTracker;
use super::listen::until;
use crate::client::driver::Chunks as _;
use crate::protocol::parser::{EventStreamParser, Parsed};
use crate::reader::Refusal;

/// The request of every stream.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: http::Method,
    pub body: Bytes,
    /// Requests per client without `--duration`.
    pub per_client: u64,
}

/// What one client's requests did.
#[derive(Debug, Default)]
pub struct RequestsResult {
    pub connected: bool,
    pub requests: u64,
    pub completed: u64,
    pub failed: u64,
    pub events: u64,
    pub bytes: u64,
    /// Summed over the streams (each a fresh id sequence).
    pub ids: IdTracker,
    /// Events per second of each stream with two events or more.
    pub rates: Vec<f64>,
    /// Clock µs of the last event.
    pub last_event_us: u64,
    pub error: Option<String>,
}

/// How one request ended.
enum Outcome {
    Completed,
    Failed(String),
    /// The run's deadline came first.
    Cut,
}

/// Runs client `index`'s requests.
pub async fn run(
    index: usize,
    plan: Arc<Plan>,
    spec: Arc<RequestSpec>,
    gate: Arc<Semaphore>,
    deadline: Option<Instant>,
) -> RequestsResult {
    let mut r = RequestsResult::default();
    let start = Instant::now();
    let mut halt = plan.halting.watch(Halt::Interrupt);
    // Open loop: this client's k-th request is due at offset + k × interval.
    let schedule = plan.rate_per_client.map(|rate| {
        let interval = 1.0 / rate;
        let offset = interval * index as f64 / plan.clients as f64;
        (Duration::from_secs_f64(offset), Duration::from_secs_f64(interval))
    });
    for k in 0.. {
        if deadline.is_none() && k >= spec.per_client {
            break;
        }
        let due = match schedule {
            Some((offset, interval)) => start + offset + interval.mul_f64(k as f64),
            None => Instant::now(),
        };
        if deadline.is_some_and(|d| due >= d) {
            break;
        }
        if halt::unless(&mut halt, tokio::time::sleep_until(due)).await.is_none() {
            break;
        }
        // Timed from when it was due: a late start counts (no coordinated
        // omission).
        let sent = due.min(Instant::now());
        r.requests += 1;
        match one(&plan, &spec, &gate, deadline, &mut halt, sent, &mut r).await {
            Outcome::Completed => r.completed += 1,
            Outcome::Failed(why) => {
                r.failed += 1;
                r.error.get_or_insert(why);
            }
            Outcome::Cut => {
                r.requests -= 1;
                break;
            }
        }
    }
    r
}

/// One request and its stream, to the end.
async fn one(
    plan: &Plan,
    spec: &RequestSpec,
    gate: &Semaphore,
    deadline: Option<Instant>,
    halt: &mut halt::Watch,
    sent: Instant,
    r: &mut RequestsResult,
) -> Outcome {
    let opened = async {
        let _permit = gate.acquire().await;
        let req = plan.target.request_with_body(&spec.method, &spec.body);
        open_with(&plan.dialer, req, plan.connect_timeout).await
    };
    let mut stream = match until(deadline, halt, opened).await {
        None => return Outcome::Cut,
        Some(Ok(s)) => s,
        // An answer, if not a stream: the target is there, the request failed.
        Some(Err(ConnectError::Refused(why))) => {
            r.connected = true;
            return match why {
                Refusal::NoContent => Outcome::Completed,
                why => {
                    // Refused for good before any request of the run got
                    // a stream: the others would be too; the run ends now.
                    let permanent = match &why {
                        Refusal::Status(s) => !retry_later(*s),
                        _ => true,
                    };
                    if permanent && !plan.accepted.load(Ordering::Relaxed) {
                        plan.halting.stop(None);
                    }
                    Outcome::Failed(format!("request: {why}"))
                }
            };
        }
        Some(Err(e)) => return Outcome::Failed(format!("request: {e}")),
    };
    r.connected = true;
    if !plan.accepted.load(Ordering::Relaxed) {
        plan.accepted.store(true, Ordering::Relaxed);
    }
    plan.stats.local().connect.record_us(sent.elapsed().as_micros() as u64);
    let mut parser = EventStreamParser::new();
    let mut ids = IdTracker::default();
    let (mut events, mut first, mut last) = (0u64, None::<u64>, 0u64);
    let mut quiet_since = Instant::now();
    let outcome = 'read: loop {
        let next = poll_fn(|cx| stream.poll_chunk(cx));
        // Silent for --drain (before the first event too): failed.
        let limit = quiet_since + plan.drain;
        let limit = deadline.map_or(limit, |d| d.min(limit));
        let frame = match tokio::time::timeout_at(limit, halt::unless(halt, next)).await {
            Ok(Some(f)) => f,
            Ok(None) => break Outcome::Cut,
            Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => break Outcome::Cut,
            Err(_) => {
                break Outcome::Failed(format!(
                    "no event for {:?} after {events} events",
                    plan.drain
                ));
            }
        };
        let chunk = match frame {
            None => break Outcome::Completed,
            Some(Err(e)) => {
                break Outcome::Failed(format!("stream broken after {events} events: {e}"));
            }
            Some(Ok(d)) => d,
        };
        r.bytes += chunk.len() as u64;
        parser.feed(&chunk);
        let now = plan.clock.now_us();
        let mut new = 0;
        loop {
            match parser.next_item() {
                Ok(Some(Parsed::Event(ev))) => {
                    ids.observe(&ev.last_event_id);
                    new += 1;
                    if first.is_none() {
                        first = Some(now);
                        plan.stats.local().first_event.record_us(sent.elapsed().as_micros() as u64);
                    }
                    last = now;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                // What this request received so far still counts.
                Err(e) => break 'read Outcome::Failed(format!("event stream: {e}")),
            }
        }
        if new > 0 {
            quiet_since = Instant::now();
        }
        events += new;
        plan.stats.counters().received.fetch_add(new, Ordering::Relaxed);
    };
    if matches!(outcome, Outcome::Completed) {
        plan.stats.local().stream.record_us(sent.elapsed().as_micros() as u64);
    }
    r.events += events;
    if let Some(f) = first {
        r.last_event_us = r.last_event_us.max(last);
        let span = last.saturating_sub(f) as f64 / 1e6;
        if events > 1 && span > 0.0 {
            r.rates.push((events - 1) as f64 / span);
        }
    }
    r.ids.add(&ids);
    outcome
}
