//! One echo-mode client: its event stream and its POSTs, driven by a single
//! task that polls both HTTP connections itself (no task per connection, no
//! channel between reader and sender), so an echo and the POST it releases
//! cost no cross-task wake-up.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri};

use super::lanes::{PostOutcome, read_response};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Plan;
use super::conn::{
    ConnectError, PostConn, PostSender, StreamDriver, open_post, open_stream, retry_later,
    stream_driver,
};
use super::halt::{self, Halt};
use super::payload::{self, Header};
use super::timer::{Timer, poll_slot};
use super::verify::{Arrival, Verifier};
use crate::client::driver::{DriverConfig, OpenError, Resume, Step};
use crate::protocol::Event;
use crate::protocol::parser::{EventStreamParser, Parsed};
use crate::reader::{Backoff, Next, RetryPolicy};

/// First wait before retrying a failed resume or POST: short, since a
/// chaos drop is resumed at once and its recovery time is measured.
const RETRY_MIN: Duration = Duration::from_millis(20);
/// Longest wait between two attempts: keeps a recovered target from idling
/// while the client sleeps.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Re-opening streams and re-sending POSTs: a target that keeps failing for
/// `give_up` ends the client.
fn retry_policy(give_up: Duration) -> RetryPolicy {
    RetryPolicy {
        initial: RETRY_MIN,
        max: RETRY_MAX,
        max_retries: None,
        give_up_after: Some(give_up),
        retry_first: false,
    }
}

fn now_std() -> std::time::Instant {
    Instant::now().into_std()
}
/// How early open-loop sends are woken: tokio rounds a deadline up to its
/// next 1 ms tick, and the runtime then sleeps in `epoll_wait`, whose
/// timeout is whole milliseconds rounded up again, so a timer can fire up
/// to 2 ms after the instant asked for. A send woken early is timed from
/// when it leaves, one woken late from when it was due (no coordinated
/// omission), so a slack under 2 ms put the timer's own lateness into the
/// latency tail: with 1 ms, p99 at 5,000 msgs/s was 1.2-1.3 ms against a
/// bare echo server, whose p50 is 0.25 ms.
const TIMER_SLACK_US: u64 = 2000;
/// Stream chunks handled before everything else gets the first turn.
const FAIR_STREAK: u32 = 64;
/// How long an interrupted client waits for the echoes in flight.
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);

/// The one-line verdict of a run whose first POSTs were refused for good.
pub(super) fn not_taken(url: &str, status: StatusCode, why: &str) -> String {
    if matches!(status, StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED) {
        // A server without POST: a plain SSE endpoint.
        return format!(
            "{url}: not a package:sse channel endpoint (POST answered {}); to read a plain SSE \
             stream use --mode listen --raw",
            status.as_u16()
        );
    }
    format!("{url}: POST answered {why}")
}

/// Said when a server answers POSTs but sends no message back at all.
pub const NO_ECHO: &str = "the server does not echo: start it with `ssechan serve --echo`";

/// What one client did; summed into the report.
#[derive(Debug, Default, Clone)]
pub struct ClientResult {
    pub connected: bool,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub corrupted: u64,
    pub drops: u64,
    pub resumes: u64,
    pub failed_resumes: u64,
    /// Streams the server ended without a control close.
    pub stream_ends: u64,
    /// POST attempts that got no answer (each retried).
    pub post_errors: u64,
    /// POSTs answered, whatever the status.
    pub posts: u64,
    /// Closed-loop window slots released because an echo never came.
    pub timeouts: u64,
    /// The server sent a control close before this client was done.
    pub closed_early: bool,
    /// Why this client stopped early, if it did.
    pub error: Option<String>,
    /// When the last new echo arrived (clock µs).
    pub last_receive_us: u64,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Connects client `index`, waits for the common start, runs its workload.
pub async fn run(
    index: usize,
    plan: Arc<Plan>,
    gate: Arc<Semaphore>,
    ready: Arc<Semaphore>,
    mut start: watch::Receiver<Option<u64>>,
) -> ClientResult {
    let mut result = ClientResult::default();
    let id = format!("{}-{index}", plan.run_id);
    let stream_uri = plan.target.stream_uri(Some(&id));
    // A halted run (Ctrl-C, or another client's permanent error) ends the
    // connecting too: a server slow to accept must not hold it.
    let mut halted = plan.halting.watch(Halt::Interrupt);
    let opened = halt::unless(&mut halted, async {
        let _permit = gate.acquire().await;
        let t0 = std::time::Instant::now();
        let s =
            open_stream(&plan.target, &plan.dialer, stream_uri.clone(), None, plan.connect_timeout)
                .await?;
        plan.stats.local().connect.record_us(t0.elapsed().as_micros() as u64);
        if plan.lanes.is_some() {
            // POSTs go over the shared lanes.
            return Ok((s, None));
        }
        let p = open_post(&plan.dialer, plan.connect_timeout).await?;
        Ok::<_, ConnectError>((s, Some(p)))
    })
    .await;
    ready.add_permits(1);
    let (stream, post) = match opened {
        Some(Ok(x)) => x,
        Some(Err(e)) => {
            if e.is_permanent() {
                // Every client would get the same: the run ends now.
                plan.halting.stop(Some(format!("cannot reach {}: connect: {e}", plan.url)));
            }
            result.error = Some(format!("connect: {e}"));
            return result;
        }
        None => return result,
    };
    result.connected = true;
    let start_us = match halt::unless(&mut halted, start.wait_for(Option::is_some)).await {
        Some(Ok(v)) => v.unwrap_or(0),
        _ => return result,
    };
    let post_prefix = plan.target.post_prefix(&id);
    // A target that keeps failing for this long ends the client.
    let give_up = plan.drain.max(plan.connect_timeout);
    let (sender, post_conn) = match post {
        Some((s, c)) => (Some(s), Some(c)),
        None => (None, None),
    };
    let mut client = Client {
        index,
        plan: plan.clone(),
        post_prefix,
        start_us,
        result,
        stream: {
            let config = DriverConfig {
                retry: retry_policy(give_up),
                max_event_bytes: EventStreamParser::DEFAULT_MAX,
                idle_timeout: None,
                resume: Resume::Channel,
            };
            stream_driver(plan.clone(), stream_uri, config, stream)
        },
        last_resume_error: None,
        verifier: Verifier::new(),
        recovering_since: None,
        sender,
        post_conn,
        connecting_post: None,
        post_backoff: Backoff::new(retry_policy(give_up)),
        want_ready: false,
        inflight: None,
        inflight_since: 0,
        current: None,
        next_seq: 0,
        released: 0,
        sending_done: false,
        last_progress_us: start_us,
        gave_up_since_echo: false,
        data_streak: 0,
        fair_turn: false,
        body_buf: Vec::new(),
        uri_buf: String::new(),
        send_timer: Timer::default(),
        drop_timer: Timer::default(),
        post_retry: Timer::default(),
        stall_timer: Timer::default(),
        drain_timer: Timer::default(),
        post_timer: Timer::default(),
        echo_watch: Timer::default(),
        any_post_ok: false,
        any_message: false,
        halt: halted,
        finished: false,
    };
    client.run().await;
    client.result
}

struct Client {
    index: usize,
    plan: Arc<Plan>,
    post_prefix: String,
    start_us: u64,
    result: ClientResult,
    /// The event stream, re-opened with `Last-Event-ID` when it ends.
    stream: StreamDriver,
    /// Why re-opening it failed last, since it last opened.
    last_resume_error: Option<String>,
    verifier: Verifier,
    /// Clock µs of the drop or stream end a resume is recovering from.
    recovering_since: Option<u64>,
    sender: Option<PostSender>,
    post_conn: Option<PostConn>,
    connecting_post: Option<Boxed<Result<(PostSender, PostConn), ConnectError>>>,
    post_backoff: Backoff,
    /// A POST waits for the connection to take a request.
    want_ready: bool,
    inflight: Option<Boxed<PostOutcome>>,
    /// Clock µs at which the POST in flight was sent.
    inflight_since: u64,
    /// The message being POSTed: sequence number and send time.
    current: Option<(u64, u64)>,
    next_seq: u64,
    released: u64,
    sending_done: bool,
    last_progress_us: u64,
    /// A message was given up (stall) and no message event (echo, even a
    /// corrupted one) has come since.
    gave_up_since_echo: bool,
    /// Stream chunks handled since everything else last had the first
    /// turn (not reset when the body is pending: that may be tokio's budget
    /// running out, which leaves the rest unpolled too).
    data_streak: u32,
    /// The client yielded so that the rest goes first on a fresh budget.
    fair_turn: bool,
    body_buf: Vec<u8>,
    uri_buf: String,
    send_timer: Timer,
    drop_timer: Timer,
    post_retry: Timer,
    stall_timer: Timer,
    drain_timer: Timer,
    /// Watches the POST in flight: a server that never answers must not
    /// hold the client (and the run) forever. Re-armed once per timeout
    /// period, not per POST, to keep the timer wheel off the hot path.
    post_timer: Timer,
    /// From the first accepted POST: a server that sends no message at all
    /// within `--drain` does not echo.
    echo_watch: Timer,
    any_post_ok: bool,
    /// A message event came (an echo, even a corrupted one).
    any_message: bool,
    /// Ready when the run is halted: first at an interrupt (the client
    /// winds down), then, re-armed, when it is stopped at once.
    halt: halt::Watch,
    finished: bool,
}

enum Wake {
    Stream(Step),
    PostDone(PostOutcome),
    /// Boxed: the connection is large and comes once per client.
    PostConnected(Box<Result<(PostSender, PostConn), ConnectError>>),
    /// Something may now be sendable: the connection is ready or lost, a
    /// send time, retry time or stall timeout came.
    Send,
    Drop,
    Stall,
    Drain,
    PostTimeout,
    NoEcho,
    Halt,
}

impl Client {
    async fn run(&mut self) {
        self.arm_drop();
        self.pump();
        while !self.finished {
            let wake = poll_fn(|cx| self.poll_wake(cx)).await;
            match wake {
                Wake::Stream(step) => self.on_stream(step),
                Wake::PostDone(r) => self.on_post_done(r),
                Wake::PostConnected(r) => self.on_post_connected(*r),
                Wake::Send => {}
                Wake::Drop => self.on_drop(),
                Wake::Stall => self.on_stall(),
                Wake::Drain => self.finished = true,
                Wake::PostTimeout => self.on_post_timer(),
                Wake::NoEcho => self.on_no_echo(),
                Wake::Halt => self.on_halt(),
            }
            self.pump();
        }
        self.finish();
    }

    /// Everything this client waits for, in one poll: the connections first
    /// (they move the bytes), then what they deliver, then the timers.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        // A stream that is always ready (a server flooding it) would starve
        // everything polled after it: POST answers and every timer, so the
        // run would never end. And after the stream spent tokio's budget,
        // the rest reads Pending even when ready. So every FAIR_STREAK
        // chunks the client yields, and then polls the rest first.
        if self.data_streak >= FAIR_STREAK {
            if !self.fair_turn {
                self.fair_turn = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.fair_turn = false;
            self.data_streak = 0;
            // By the clock: the time driver may not have run since.
            if let Poll::Ready(w) = self.poll_rest(cx, Some(Instant::now())) {
                return Poll::Ready(w);
            }
            return self.poll_stream(cx);
        }
        if let Poll::Ready(w) = self.poll_stream(cx) {
            return Poll::Ready(w);
        }
        self.poll_rest(cx, None)
    }

    /// The event stream: what it delivered, or what happened to it.
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        match self.stream.poll_next(cx) {
            Poll::Ready(Some(step)) => {
                if matches!(step, Step::Item(_)) {
                    self.data_streak += 1;
                }
                Poll::Ready(Wake::Stream(step))
            }
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    /// Everything but the event stream: POSTs, timers (with `now`, also
    /// those past by the clock: see [`Timer::poll_fired`]).
    fn poll_rest(&mut self, cx: &mut Context<'_>, now: Option<Instant>) -> Poll<Wake> {
        if let Some(c) = &mut self.post_conn
            && Pin::new(c).poll(cx).is_ready()
        {
            self.post_conn = None;
            self.sender = None;
            if self.want_ready {
                return Poll::Ready(Wake::Send);
            }
        }
        if let Poll::Ready(r) = poll_slot(&mut self.inflight, cx) {
            return Poll::Ready(Wake::PostDone(r));
        }
        if let Poll::Ready(r) = poll_slot(&mut self.connecting_post, cx) {
            return Poll::Ready(Wake::PostConnected(Box::new(r)));
        }
        if self.want_ready
            && let Some(s) = &mut self.sender
            && s.poll_ready(cx).is_ready()
        {
            self.want_ready = false;
            return Poll::Ready(Wake::Send);
        }
        if self.send_timer.poll_fired(cx, now) || self.post_retry.poll_fired(cx, now) {
            return Poll::Ready(Wake::Send);
        }
        if self.drop_timer.poll_fired(cx, now) {
            return Poll::Ready(Wake::Drop);
        }
        if self.stall_timer.poll_fired(cx, now) {
            return Poll::Ready(Wake::Stall);
        }
        if self.drain_timer.poll_fired(cx, now) {
            return Poll::Ready(Wake::Drain);
        }
        if self.post_timer.poll_fired(cx, now) {
            return Poll::Ready(Wake::PostTimeout);
        }
        if self.echo_watch.poll_fired(cx, now) {
            return Poll::Ready(Wake::NoEcho);
        }
        if Pin::new(&mut self.halt).poll(cx).is_ready() {
            return Poll::Ready(Wake::Halt);
        }
        Poll::Pending
    }

    fn now_us(&self) -> u64 {
        self.plan.clock.now_us()
    }

    fn at(&self, us: u64) -> Instant {
        Instant::from_std(self.plan.clock.instant_at(us))
    }

    // ----- receiving

    fn on_stream(&mut self, step: Step) {
        match step {
            Step::Item(Parsed::Event(ev)) => {
                // A chunk's events in one turn, with one clock read.
                let now = self.now_us();
                let mut next = Some(Step::Item(Parsed::Event(ev)));
                while let Some(step) = next.take() {
                    match step {
                        Step::Item(Parsed::Event(ev)) => {
                            if !self.on_event(&ev, now) {
                                return;
                            }
                        }
                        Step::Item(_) => {}
                        other => return self.on_stream(other),
                    }
                    next = self.stream.next_buffered();
                }
                if self.sending_done && self.outstanding() == 0 {
                    self.finished = true;
                }
            }
            Step::Item(_) | Step::Waiting { .. } => {}
            Step::Broken { reason } => {
                // Ended by the driver, which re-opens it.
                warn!(client = self.index, "event stream: {reason}");
                self.result.error.get_or_insert_with(|| format!("event stream: {reason}"));
                self.drop_timer.disarm();
            }
            // As EventSource does: re-opened after the server's `retry:`,
            // backing off when streams end at once.
            Step::Lost { reason } => {
                debug!(client = self.index, reason, "stream ended");
                self.drop_timer.disarm();
                self.result.stream_ends += 1;
                self.recovering_since.get_or_insert(self.now_us());
            }
            Step::Connecting { .. } => {
                self.plan.stats.counters().reconnects.fetch_add(1, Ordering::Relaxed);
            }
            Step::Open { .. } => {
                self.result.resumes += 1;
                self.last_resume_error = None;
                if let Some(since) = self.recovering_since {
                    let took = self.now_us().saturating_sub(since);
                    self.plan.stats.local().resume.record_us(took);
                }
                self.arm_drop();
            }
            Step::OpenFailed { reason, .. } => {
                debug!(client = self.index, "resume failed: {reason}");
                self.result.failed_resumes += 1;
                self.last_resume_error = Some(reason);
            }
            Step::NoContent => {
                self.result.failed_resumes += 1;
                self.result.error.get_or_insert_with(|| "resume: server answered 204".into());
                self.finished = true;
            }
            Step::Refused { refusal, body } => {
                self.result.failed_resumes += 1;
                let why = OpenError::Refused { refusal, body };
                self.fail(format!("resume: {why}"));
                self.finished = true;
            }
            Step::Failed { reason } => {
                self.fail(format!("resume: {reason}"));
                self.finished = true;
            }
            Step::GaveUp { .. } => {
                let reader = self.stream.reader();
                let why = match self.last_resume_error.take() {
                    Some(e) => {
                        let budget = reader.backoff().policy().give_up_after.unwrap_or_default();
                        format!("resume failed for over {budget:?}: {e}")
                    }
                    None => {
                        let n = reader.quick_ends();
                        format!("the server ended the stream {n} times in a row at once")
                    }
                };
                self.fail(why);
                self.finished = true;
            }
        }
    }

    /// One event at `now`; `false` when it ended the client (a control
    /// close).
    fn on_event(&mut self, ev: &Event, now: u64) -> bool {
        if let Some(since) = self.recovering_since.take() {
            self.plan.stats.local().recovery.record_us(now.saturating_sub(since));
        }
        if ev.event == crate::protocol::CONTROL_EVENT {
            if ev.is_control_close() {
                debug!(client = self.index, "closed by the server");
                self.result.closed_early = self.more_to_do(now);
                self.finished = true;
                return false;
            }
            return true;
        }
        self.on_message(&ev.data, now);
        true
    }

    fn on_message(&mut self, data: &str, now: u64) {
        // The server still echoes, if badly: a corrupted echo is reported
        // as such, not as an end of echoes.
        self.gave_up_since_echo = false;
        self.any_message = true;
        let Some(text) = json_string(data) else {
            self.result.corrupted += 1;
            return;
        };
        let h = match payload::decode(text.as_bytes(), self.plan.size) {
            Ok(h) if h.client as usize == self.index && h.seq < self.next_seq => h,
            Ok(h) => {
                debug!(client = self.index, ?h, "echo of a message this client never sent");
                self.result.corrupted += 1;
                return;
            }
            Err(e) => {
                debug!(client = self.index, "corrupted echo: {e}");
                self.result.corrupted += 1;
                return;
            }
        };
        if self.verifier.record(h.seq) == Arrival::Duplicate {
            return;
        }
        self.plan.stats.local().latency.record_us(now.saturating_sub(h.sent_us));
        self.plan.stats.counters().received.fetch_add(1, Ordering::Relaxed);
        self.result.last_receive_us = now;
        self.last_progress_us = now;
    }

    /// Chaos: cut the stream as a network failure would; it resumes.
    fn on_drop(&mut self) {
        if !self.stream.is_open() || self.sending_done {
            return;
        }
        self.result.drops += 1;
        self.plan.stats.counters().drops.fetch_add(1, Ordering::Relaxed);
        self.drop_timer.disarm();
        self.stream.drop_stream();
        self.recovering_since = Some(self.now_us());
    }

    fn arm_drop(&mut self) {
        if let Some(every) = self.plan.drop_every
            && !self.sending_done
        {
            // Uniform in [D/2, 3D/2]: drops land at every phase of the load.
            let us = every.as_micros() as u64;
            let wait = us / 2 + fastrand::u64(0..=us);
            self.drop_timer.arm(Instant::now() + Duration::from_micros(wait));
        }
    }

    // ----- sending

    /// Whether the client still had messages to send or echoes to wait
    /// for at `now`: a server's close then cuts the run short. (The last
    /// echo may come before its POST's answer, so `sending_done` is not
    /// yet set then.)
    fn more_to_do(&self, now: u64) -> bool {
        let to_send = match self.plan.duration {
            Some(d) => !self.sending_done && now < self.start_us + d.as_micros() as u64,
            None => self.next_seq < self.plan.messages,
        };
        to_send || self.outstanding() > 0
    }

    /// Messages sent whose echo has not come (nor been given up on).
    fn outstanding(&self) -> u64 {
        self.next_seq.saturating_sub(self.verifier.unique + self.released)
    }

    /// Sends what can be sent now, arms the timer for what comes later, and
    /// notices when the client is done.
    fn pump(&mut self) {
        if self.finished {
            return;
        }
        if self.inflight.is_none() && !self.post_retry.is_armed() {
            if self.current.is_none() && !self.sending_done {
                self.next_message();
            }
            if self.current.is_some() {
                self.post_current();
            }
        }
        if self.sending_done && self.current.is_none() && self.inflight.is_none() {
            if self.outstanding() == 0 {
                self.finished = true;
            } else if !self.drain_timer.is_armed() {
                self.drain_timer.arm(Instant::now() + self.plan.drain);
            }
        }
    }

    /// Decides whether the next message is due, and when.
    fn next_message(&mut self) {
        let plan = &self.plan;
        let seq = self.next_seq;
        if plan.duration.is_none() && seq >= plan.messages {
            self.stop_sending();
            return;
        }
        let end_us = plan.duration.map(|d| self.start_us + d.as_micros() as u64);
        let now = self.now_us();
        let sent_us = match plan.rate_per_client {
            Some(rate) => {
                let interval = 1e6 / rate;
                let offset = interval * self.index as f64 / plan.clients as f64;
                let due = self.start_us + (offset + interval * seq as f64) as u64;
                if end_us.is_some_and(|end| due >= end) {
                    self.stop_sending();
                    return;
                }
                if due > now + TIMER_SLACK_US {
                    self.send_timer.arm(self.at(due - TIMER_SLACK_US));
                    return;
                }
                // Late: measured from the intended time (no coordinated
                // omission). Early by less than the timer's granularity:
                // measured from now, so timer lateness never counts as
                // server latency.
                due.min(now)
            }
            None => {
                if end_us.is_some_and(|end| now >= end) {
                    self.stop_sending();
                    return;
                }
                if self.outstanding() >= plan.window {
                    if !self.stall_timer.is_armed() {
                        self.stall_timer.arm(self.at(self.last_progress_us) + plan.drain);
                    }
                    return;
                }
                now
            }
        };
        if end_us.is_some() && plan.rate_per_client.is_none() && !self.send_timer.is_armed() {
            // Closed loop for a duration: wake at the end even when idle.
            if let Some(end) = end_us {
                self.send_timer.arm(self.at(end));
            }
        }
        self.current = Some((seq, sent_us));
        self.next_seq += 1;
        self.plan.stats.counters().sent.fetch_add(1, Ordering::Relaxed);
    }

    fn stop_sending(&mut self) {
        self.sending_done = true;
        self.send_timer.disarm();
        self.stall_timer.disarm();
        self.drop_timer.disarm();
    }

    /// A full window that saw no echo for `--drain`: give that message up.
    /// If no echo came since the last one given up either, the server has
    /// stopped echoing: stop sending (else `--messages` × `--drain`).
    fn on_stall(&mut self) {
        let now = self.now_us();
        let stall = self.plan.drain.as_micros() as u64;
        if self.outstanding() < self.plan.window {
            return;
        }
        if now.saturating_sub(self.last_progress_us) >= stall {
            if !self.any_message {
                self.on_no_echo();
                return;
            }
            if self.gave_up_since_echo {
                let waited = self.plan.drain * 2;
                self.fail(format!("no echo for {waited:?}: the server stopped echoing"));
                return;
            }
            self.gave_up_since_echo = true;
            self.released += 1;
            self.result.timeouts += 1;
            self.last_progress_us = now;
        } else {
            self.stall_timer.arm(self.at(self.last_progress_us) + self.plan.drain);
        }
    }

    fn post_current(&mut self) {
        let Some((seq, sent_us)) = self.current else { return };
        if self.plan.lanes.is_none() {
            let Some(sender) = &mut self.sender else {
                if self.connecting_post.is_none() {
                    let plan = self.plan.clone();
                    self.connecting_post = Some(Box::pin(async move {
                        open_post(&plan.dialer, plan.connect_timeout).await
                    }));
                }
                return;
            };
            if !sender.is_ready() {
                self.want_ready = true;
                return;
            }
        }
        self.body_buf.clear();
        self.body_buf.push(b'"');
        let h = Header { client: self.index as u32, seq, sent_us };
        payload::encode(&mut self.body_buf, h, self.plan.size);
        self.body_buf.push(b'"');
        self.uri_buf.clear();
        self.uri_buf.push_str(&self.post_prefix);
        self.uri_buf.push_str(itoa::Buffer::new().format(seq));
        let uri = match Uri::try_from(self.uri_buf.as_str()) {
            Ok(u) => u,
            Err(e) => {
                self.fail(format!("cannot build POST URI: {e}"));
                return;
            }
        };
        let req = self.plan.target.post_request(uri, Bytes::copy_from_slice(&self.body_buf));
        match (&self.plan.lanes, &mut self.sender) {
            (Some(lanes), _) => self.inflight = Some(Box::pin(lanes.post(self.index, req))),
            // The response's body is read in the same future: this task
            // polls the connection too, so the connection stays reusable.
            (None, Some(sender)) => {
                self.inflight = Some(Box::pin(read_response(sender.send_request(req))))
            }
            (None, None) => return,
        }
        self.inflight_since = self.now_us();
        if !self.post_timer.is_armed() {
            self.post_timer.arm(Instant::now() + self.plan.connect_timeout);
        }
    }

    /// The POST watch fired: give up a POST unanswered for the timeout
    /// (its connection is then unusable) and retry it; else watch on.
    fn on_post_timer(&mut self) {
        if self.inflight.is_none() {
            return;
        }
        let limit = self.plan.connect_timeout;
        let due = self.inflight_since + limit.as_micros() as u64;
        if self.now_us() < due {
            self.post_timer.arm(self.at(due));
            return;
        }
        self.inflight = None;
        self.close_post();
        self.unanswered(&format!("no answer within {limit:?}"));
    }

    /// No message at all came within `--drain` of the first accepted POST.
    fn on_no_echo(&mut self) {
        if !self.any_message && !self.finished {
            self.fail(NO_ECHO.into());
            self.finished = true;
        }
    }

    fn on_post_done(&mut self, r: PostOutcome) {
        let seq = self.current.map_or(0, |c| c.0);
        if let Ok((status, _)) = &r {
            self.result.posts += 1;
            if !status.is_success() {
                // Counted whether retried or not: a retry that succeeds
                // must not hide a server refusing healthy traffic.
                self.plan.stats.refused(status.as_u16());
            }
        }
        let (status, body) = match r {
            Ok((status, _)) if status.is_success() => {
                self.current = None;
                self.post_backoff.succeeded();
                if !self.any_post_ok {
                    self.any_post_ok = true;
                    self.plan.accepted.store(true, Ordering::Relaxed);
                    if !self.any_message {
                        self.echo_watch.arm(Instant::now() + self.plan.drain);
                    }
                }
                return;
            }
            Ok(x) => x,
            Err(e) => {
                debug!(client = self.index, "POST failed: {e}");
                self.close_post();
                self.unanswered(&e);
                return;
            }
        };
        let why = if body.is_empty() { status.to_string() } else { format!("{status}: {body}") };
        // A resume race (404), overload or a proxy between restarts: the
        // same POST may succeed later.
        if status == StatusCode::NOT_FOUND || retry_later(status) {
            self.retry_post(&why);
            return;
        }
        // Any other answer will not change. Before any POST of the run was
        // taken, every client would get it: the run ends now, in one line.
        if !self.plan.accepted.load(Ordering::Relaxed) {
            self.plan.halting.stop(Some(not_taken(&self.plan.url, status, &why)));
            self.finished = true;
        }
        self.fail(format!("POST of message {seq} refused: {why}"));
    }

    /// Ctrl-C: stop sending, give the echoes in flight a moment (at most
    /// `--drain`, a second at most); a stop ends the client at once.
    fn on_halt(&mut self) {
        if self.plan.halting.now() == Halt::Stop {
            self.finished = true;
            return;
        }
        self.stop_sending();
        self.drain_timer.arm(Instant::now() + self.plan.drain.min(INTERRUPT_GRACE));
        self.halt = self.plan.halting.watch(Halt::Stop);
    }

    /// A POST attempt got no answer (network error, timeout, no
    /// connection): counted, then retried.
    fn unanswered(&mut self, why: &dyn std::fmt::Display) {
        self.result.post_errors += 1;
        self.plan.stats.counters().unanswered.fetch_add(1, Ordering::Relaxed);
        self.retry_post(why);
    }

    fn retry_post(&mut self, why: &dyn std::fmt::Display) {
        let now = now_std();
        let Next::RetryIn(wait) = self.post_backoff.failed(now) else {
            let seq = self.current.map_or(0, |c| c.0);
            // The budget, not the exact time: the same failure of many
            // clients is then one line of the report.
            let budget = self.post_backoff.policy().give_up_after.unwrap_or_default();
            self.fail(format!("POST of message {seq} failed for over {budget:?}: {why}"));
            return;
        };
        self.post_retry.arm(Instant::now() + wait);
    }

    fn close_post(&mut self) {
        self.sender = None;
        self.post_conn = None;
        self.want_ready = false;
    }

    fn on_post_connected(&mut self, r: Result<(PostSender, PostConn), ConnectError>) {
        match r {
            Ok((s, c)) => {
                self.sender = Some(s);
                self.post_conn = Some(c);
            }
            Err(e) => {
                debug!(client = self.index, "POST connection failed: {e}");
                self.unanswered(&e);
            }
        }
    }

    /// A message cannot be sent at all: stop sending, keep receiving.
    fn fail(&mut self, why: String) {
        // The report says it once, not once per client.
        debug!(client = self.index, "{why}");
        self.result.error.get_or_insert(why);
        self.current = None;
        self.post_retry.disarm();
        self.stop_sending();
    }

    fn finish(&mut self) {
        self.stream.stop();
        self.inflight = None;
        self.close_post();
        let r = &mut self.result;
        // A message still being POSTed at the end counts as sent: it may be
        // lost, never quietly forgotten.
        r.sent = self.next_seq;
        r.received = self.verifier.unique;
        r.lost = self.verifier.lost(self.next_seq);
        r.duplicated = self.verifier.duplicated;
        r.out_of_order = self.verifier.out_of_order;
        if self.verifier.abandoned > 0 {
            debug!(
                client = self.index,
                abandoned = self.verifier.abandoned,
                "verifier window overflowed"
            );
        }
    }
}

/// The string a message event's data encodes: borrowed when it holds no
/// escapes (always so for bench payloads), decoded otherwise.
fn json_string(data: &str) -> Option<Cow<'_, str>> {
    let inner = data.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains(['\\', '"']) {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(data).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings() {
        assert_eq!(json_string("\"abc\"").as_deref(), Some("abc"));
        assert_eq!(json_string("\"a\\u0062c\"").as_deref(), Some("abc"));
        assert_eq!(json_string("\"a\\\"\"").as_deref(), Some("a\""));
        assert_eq!(json_string("abc"), None);
        assert_eq!(json_string("\"a\"b\""), None);
        assert_eq!(json_string("\""), None);
    }
}
