//! One reconnecting event stream: the loop every client of ssechan runs
//! (`connect`, the library client, `bench`'s listeners and echo clients,
//! the MCP client's resumes), written once.
//!
//! [`Driver`] opens a stream with the caller's open function, feeds its
//! body to the [`Reader`], hands out what happens as [`Step`]s, and when
//! the stream ends waits as the reader says and opens again with the last
//! event id. It does no HTTP itself: the open function sends the request
//! (reqwest for `connect`, a hyper connection of its own for `bench`) and
//! judges the answer ([`crate::reader::check_response`]), so the driver
//! only sees bodies ([`Chunks`]). The caller decides what an event means
//! (a control close, an MCP response that completes its request) and
//! simply stops polling when it is done; [`Driver::drop_stream`] ends the
//! open stream on purpose (a test of resume).
//!
//! It is a state machine polled with [`Driver::poll_next`], so a task
//! that polls several things itself (`bench`'s echo client) drives it
//! without a task of its own; [`Driver::next`] is the `async` form.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, Sleep};

use crate::protocol::parser::Parsed;
use crate::reader::{Next, Reader, Refusal, RetryPolicy};

/// The body of an open stream, chunk by chunk.
pub trait Chunks: Send + Unpin {
    /// The next chunk; `None` at the end of the body; `Err`: why it broke.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>>;
}

/// Why an open function did not give an open stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The answer is no event stream (WHATWG: not retried); `body` is the
    /// first line of its body when there was one. 204 stops quietly.
    Refused { refusal: Refusal, body: String },
    /// Not worth a retry (a TLS handshake that failed).
    Fatal(String),
    /// Network trouble: retried as the schedule says.
    Network(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Refused { refusal, body } if body.is_empty() => write!(f, "{refusal}"),
            OpenError::Refused { refusal, body } => write!(f, "{refusal}: {body}"),
            OpenError::Fatal(why) | OpenError::Network(why) => f.write_str(why),
        }
    }
}

impl From<Refusal> for OpenError {
    fn from(refusal: Refusal) -> Self {
        OpenError::Refused { refusal, body: String::new() }
    }
}

/// Which `Last-Event-ID` a re-opened stream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The last id seen, or none (plain SSE, MCP).
    Plain,
    /// A package:sse channel (PROTOCOL.md §4): `0` when no event came yet,
    /// so that the server replays what a dead stream swallowed.
    Channel,
}

/// How a driver reads and reconnects.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    pub retry: RetryPolicy,
    /// Bound of a line and of an event.
    pub max_event_bytes: usize,
    /// An open stream that brings nothing for this long is lost.
    pub idle_timeout: Option<Duration>,
    pub resume: Resume,
}

/// What happened; the driver goes on after every step but the last ones
/// (after which [`Driver::poll_next`] gives `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Opening a stream; `attempt` counts from 1 since the last good one.
    Connecting { attempt: u32 },
    /// A stream is open; `resumed`: it is not the first, and was asked
    /// for with `last_event_id` (when any).
    Open { resumed: bool, last_event_id: Option<String> },
    /// An event, a comment or a `retry:` of the open stream (`retry:` is
    /// already applied to the schedule).
    Item(Parsed),
    /// The open stream ended without being asked to; a wait and a new
    /// attempt, or the end, follow.
    Lost { reason: String },
    /// The stream broke a bound of the parser and was ended; the driver
    /// re-opens it at once unless the caller stops.
    Broken { reason: String },
    /// Opening failed; a wait or the end follows.
    OpenFailed { attempt: u32, reason: String },
    /// The next attempt starts after `delay`.
    Waiting { attempt: u32, delay: Duration },
    // The last steps.
    /// 204: the server says stop reconnecting.
    NoContent,
    /// The answer is no event stream (WHATWG: no retry); `body`: the
    /// first line of its body.
    Refused { refusal: Refusal, body: String },
    /// Not an event stream, or a failure not worth a retry.
    Failed { reason: String },
    /// Out of retries.
    GaveUp { attempts: u32, reason: String },
}

type Opening<F> = Pin<Box<F>>;

enum Phase<B, F> {
    /// Open a stream at the next poll.
    Start,
    Opening(Opening<F>),
    Open(B),
    Waiting(Pin<Box<Sleep>>),
    Done,
}

/// One reconnecting stream. See the module docs.
pub struct Driver<O, B, F> {
    reader: Reader,
    open: O,
    phase: Phase<B, F>,
    config: DriverConfig,
    /// A step that follows the one just given (a wait after a loss).
    then: Option<Step>,
    /// The idle timer (armed once, moved only when it fires early) and
    /// the time the last chunk's events were all handed out.
    idle_timer: Option<Pin<Box<Sleep>>>,
    last_data: Instant,
    /// A chunk was fed whose events are not all handed out yet.
    feeding: bool,
    /// Bytes read from every stream so far.
    bytes_read: u64,
}

impl<O, B, F> Driver<O, B, F>
where
    O: FnMut(&str) -> F,
    F: Future<Output = Result<B, OpenError>>,
    B: Chunks,
{
    /// A driver whose first poll opens the first stream with `open`, which
    /// is given the `Last-Event-ID` to send (empty: none).
    pub fn new(config: DriverConfig, open: O) -> Self {
        Self {
            reader: Reader::new(config.retry, config.max_event_bytes),
            open,
            phase: Phase::Start,
            config,
            then: None,
            idle_timer: None,
            last_data: Instant::now(),
            feeding: false,
            bytes_read: 0,
        }
    }

    /// A driver of a stream the caller opened itself (a stream answering a
    /// POST, a first connection timed on its own): `open` re-opens it.
    pub fn with_open_stream(config: DriverConfig, open: O, body: B) -> Self {
        let mut d = Self::new(config, open);
        d.opened(body);
        d
    }

    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    /// Starts from a known event id (`--last-event-id`).
    pub fn set_last_event_id(&mut self, id: &str) {
        self.reader.set_last_event_id(id);
    }

    /// Bytes read from every stream so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Ends the open stream on purpose (as a network failure would) and
    /// re-opens it at once; false when no stream was open.
    pub fn drop_stream(&mut self) -> bool {
        if !self.is_open() {
            return false;
        }
        self.reader.dropped();
        self.feeding = false;
        self.phase = Phase::Start;
        self.then = None;
        true
    }

    /// Stops for good: nothing more is opened, polled or given.
    pub fn stop(&mut self) {
        self.phase = Phase::Done;
        self.then = None;
    }

    /// The next step, or `None` once the driver is done.
    pub async fn next(&mut self) -> Option<Step> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The next item of the open stream that is already parsed, without
    /// reading: lets a caller take a whole chunk's events in one turn.
    pub fn next_buffered(&mut self) -> Option<Step> {
        if self.then.is_some() || !self.is_open() {
            return None;
        }
        self.parsed()
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Step>> {
        if let Some(step) = self.then.take() {
            return Poll::Ready(Some(step));
        }
        loop {
            match &mut self.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::Start => {
                    let attempt = self.reader.attempt();
                    let id = match self.config.resume {
                        Resume::Plain => self.reader.last_event_id(),
                        Resume::Channel => self.reader.channel_last_event_id(),
                    };
                    self.phase = Phase::Opening(Box::pin((self.open)(id)));
                    return Poll::Ready(Some(Step::Connecting { attempt }));
                }
                Phase::Opening(fut) => {
                    let opened = std::task::ready!(fut.as_mut().poll(cx));
                    return Poll::Ready(Some(self.on_opened(opened)));
                }
                Phase::Waiting(sleep) => {
                    std::task::ready!(sleep.as_mut().poll(cx));
                    self.phase = Phase::Start;
                }
                Phase::Open(_) => {
                    if let Some(step) = self.parsed() {
                        return Poll::Ready(Some(step));
                    }
                    let Phase::Open(body) = &mut self.phase else { continue };
                    match body.poll_chunk(cx) {
                        Poll::Ready(Some(Ok(chunk))) => {
                            self.reader.feed(&chunk);
                            self.bytes_read += chunk.len() as u64;
                            self.feeding = true;
                        }
                        Poll::Ready(Some(Err(reason))) => {
                            return Poll::Ready(Some(self.lost(reason)));
                        }
                        Poll::Ready(None) => {
                            return Poll::Ready(Some(
                                self.lost("the server ended the stream".into()),
                            ));
                        }
                        Poll::Pending => return self.poll_idle(cx),
                    }
                }
            }
        }
    }

    /// The next parsed item of the open stream; a parse error ends it.
    /// Only after a chunk was fed: between chunks there is nothing to
    /// parse, and this is every event's path.
    #[inline]
    fn parsed(&mut self) -> Option<Step> {
        if !self.feeding {
            return None;
        }
        match self.reader.next_item() {
            Ok(Some(item)) => Some(Step::Item(item)),
            Ok(None) => {
                self.feeding = false;
                if self.config.idle_timeout.is_some() {
                    // Only now: a caller slow to take the events is no
                    // silence of the server.
                    self.last_data = Instant::now();
                }
                None
            }
            Err(e) => {
                self.reader.dropped();
                self.feeding = false;
                self.phase = Phase::Start;
                Some(Step::Broken { reason: e.to_string() })
            }
        }
    }

    /// Nothing to read: lost when nothing came for the idle timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<Step>> {
        let Some(idle) = self.config.idle_timeout else { return Poll::Pending };
        let due = self.last_data + idle;
        let timer = self.idle_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= due {
                let why = format!("no data for {}", humantime::format_duration(idle));
                return Poll::Ready(Some(self.lost(why)));
            }
            // Fired for an older deadline: data came since.
            timer.as_mut().reset(due);
        }
    }

    fn opened(&mut self, body: B) {
        self.reader.opened(now());
        self.phase = Phase::Open(body);
        self.feeding = false;
        self.last_data = Instant::now();
    }

    fn on_opened(&mut self, opened: Result<B, OpenError>) -> Step {
        match opened {
            Ok(body) => {
                self.opened(body);
                let resumed = self.reader.opens() > 1;
                let id = self.reader.last_event_id();
                let last_event_id = (resumed && !id.is_empty()).then(|| id.to_owned());
                Step::Open { resumed, last_event_id }
            }
            Err(OpenError::Refused { refusal: Refusal::NoContent, .. }) => {
                self.done(Step::NoContent)
            }
            Err(OpenError::Refused { refusal, body }) => self.done(Step::Refused { refusal, body }),
            Err(OpenError::Fatal(reason)) => self.done(Step::Failed { reason }),
            Err(OpenError::Network(reason)) => {
                let attempt = self.reader.attempt();
                match self.reader.connect_failed(now()) {
                    Next::Fail => self.done(Step::Failed { reason }),
                    Next::GiveUp => {
                        let attempts = self.reader.backoff().failures();
                        self.then = Some(Step::GaveUp { attempts, reason: reason.clone() });
                        self.phase = Phase::Done;
                        Step::OpenFailed { attempt, reason }
                    }
                    Next::RetryIn(delay) => {
                        self.wait(delay);
                        Step::OpenFailed { attempt, reason }
                    }
                }
            }
        }
    }

    /// The open stream ended by itself: a wait follows, or the end.
    fn lost(&mut self, reason: String) -> Step {
        let next = self.reader.stream_ended(now());
        let reason = if self.reader.quick_ends() > 0 {
            format!("{reason} before any event")
        } else {
            reason
        };
        match next {
            Next::RetryIn(delay) => self.wait(delay),
            Next::GiveUp | Next::Fail => {
                let attempts = self.reader.backoff().failures();
                self.then = Some(Step::GaveUp { attempts, reason: reason.clone() });
                self.phase = Phase::Done;
            }
        }
        Step::Lost { reason }
    }

    /// Schedules the next attempt after `delay`, said as the next step.
    fn wait(&mut self, delay: Duration) {
        self.then = Some(Step::Waiting { attempt: self.reader.attempt(), delay });
        self.phase = Phase::Waiting(Box::pin(tokio::time::sleep(delay)));
    }

    fn done(&mut self, step: Step) -> Step {
        self.phase = Phase::Done;
        step
    }
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A body of chunks given in turn, then its end (or pending forever).
    struct Script(VecDeque<&'static str>, bool);

    impl Chunks for Script {
        fn poll_chunk(&mut self, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
            match self.0.pop_front() {
                Some(c) => Poll::Ready(Some(Ok(Bytes::from_static(c.as_bytes())))),
                None if self.1 => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn config(idle: Option<Duration>, resume: Resume) -> DriverConfig {
        DriverConfig {
            retry: RetryPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
                max_retries: Some(2),
                give_up_after: None,
                retry_first: false,
            },
            max_event_bytes: 1 << 16,
            idle_timeout: idle,
            resume,
        }
    }

    type Asked = Arc<Mutex<Vec<String>>>;

    /// An open function answering from `answers` in turn, recording the
    /// `Last-Event-ID` of each call.
    fn opener(
        answers: Vec<Result<Script, OpenError>>,
        asked: Asked,
    ) -> impl FnMut(&str) -> std::future::Ready<Result<Script, OpenError>> {
        let mut answers = VecDeque::from(answers);
        move |id: &str| {
            asked.lock().unwrap().push(id.to_owned());
            std::future::ready(answers.pop_front().unwrap_or(Err(OpenError::Network("no".into()))))
        }
    }

    fn ends(chunks: &[&'static str]) -> Result<Script, OpenError> {
        Ok(Script(chunks.iter().copied().collect(), false))
    }

    fn data(step: &Step) -> Option<&str> {
        match step {
            Step::Item(Parsed::Event(e)) => Some(&e.data),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reopens_after_the_servers_retry_with_the_last_id() {
        let asked = Asked::default();
        let answers = vec![
            ends(&["retry: 300\nid: 1\ndata: a\n\nid: 2\nda", "ta: b\n\n"]),
            ends(&["id: 3\ndata: c\n\n"]),
        ];
        let mut d = Driver::new(config(None, Resume::Plain), opener(answers, asked.clone()));
        let mut steps = Vec::new();
        let t0 = Instant::now();
        while let Some(step) = d.next().await {
            let end = matches!(step, Step::GaveUp { .. });
            steps.push(step);
            if end {
                break;
            }
        }
        let got: Vec<&str> = steps.iter().filter_map(data).collect();
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(*asked.lock().unwrap(), ["", "2", "3", "3"]);
        assert!(steps.contains(&Step::Waiting { attempt: 1, delay: Duration::from_millis(300) }));
        assert!(steps.contains(&Step::Open { resumed: true, last_event_id: Some("2".into()) }));
        // 300 ms after each of two losses and after the failure that
        // follows (the server's base); the next failure gives up.
        assert_eq!(t0.elapsed(), Duration::from_millis(900));
        assert!(matches!(steps.last(), Some(Step::GaveUp { .. })), "{steps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_channel_resumes_from_0_and_drops_reopen_at_once() {
        let asked = Asked::default();
        let pending = |c: &[&'static str]| Ok(Script(c.iter().copied().collect(), true));
        let answers = vec![pending(&[": hi\n\n"]), pending(&["id: 5\ndata: x\n\n"])];
        let mut d = Driver::new(config(None, Resume::Channel), opener(answers, asked.clone()));
        assert_eq!(d.next().await, Some(Step::Connecting { attempt: 1 }));
        assert_eq!(d.next().await, Some(Step::Open { resumed: false, last_event_id: None }));
        assert_eq!(d.next().await, Some(Step::Item(Parsed::Comment(" hi".into()))));
        assert!(d.drop_stream());
        assert!(!d.drop_stream(), "nothing open any more");
        assert_eq!(d.next().await, Some(Step::Connecting { attempt: 1 }));
        assert_eq!(d.next().await, Some(Step::Open { resumed: true, last_event_id: None }));
        assert_eq!(d.next().await.as_ref().and_then(data), Some("x"));
        assert_eq!(*asked.lock().unwrap(), ["", "0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_end_it_and_the_first_failure_is_not_retried() {
        let refused = OpenError::Refused {
            refusal: Refusal::Status(http::StatusCode::NOT_FOUND),
            body: "no such channel".into(),
        };
        let mut d =
            Driver::new(config(None, Resume::Plain), opener(vec![Err(refused)], Asked::default()));
        d.next().await;
        let Some(Step::Refused { refusal, body }) = d.next().await else { panic!("refused") };
        let why = OpenError::Refused { refusal, body }.to_string();
        assert_eq!(why, "server answered 404 Not Found: no such channel");
        assert_eq!(d.next().await, None);
        let answers = vec![Err(Refusal::NoContent.into())];
        let mut d = Driver::new(config(None, Resume::Plain), opener(answers, Asked::default()));
        d.next().await;
        assert_eq!(d.next().await, Some(Step::NoContent));
        let answers = vec![Err(OpenError::Network("refused".into()))];
        let mut d = Driver::new(config(None, Resume::Plain), opener(answers, Asked::default()));
        d.next().await;
        assert_eq!(d.next().await, Some(Step::Failed { reason: "refused".into() }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_is_lost_after_the_idle_timeout() {
        let body = Script(VecDeque::from([": ping\n\n"]), true);
        let idle = Some(Duration::from_secs(5));
        let mut d = Driver::with_open_stream(
            config(idle, Resume::Plain),
            opener(vec![], Asked::default()),
            body,
        );
        let t0 = Instant::now();
        assert_eq!(d.next().await, Some(Step::Item(Parsed::Comment(" ping".into()))));
        assert_eq!(d.next().await, Some(Step::Lost { reason: "no data for 5s".into() }));
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_stream_is_said_and_reopened() {
        let mut c = config(None, Resume::Plain);
        c.max_event_bytes = 8;
        let answers = vec![ends(&["data: 0123456789\n\n"]), ends(&["data: ok\n\n"])];
        let mut d = Driver::new(c, opener(answers, Asked::default()));
        d.next().await;
        d.next().await;
        assert!(matches!(d.next().await, Some(Step::Broken { .. })));
        assert_eq!(d.next().await, Some(Step::Connecting { attempt: 1 }));
        d.next().await;
        assert_eq!(d.next().await.as_ref().and_then(data), Some("ok"));
    }
}
