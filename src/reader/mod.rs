//! The reconnecting event-stream reader of every client: the WHATWG
//! EventSource model without I/O.
//!
//! [`Reader`] holds the parser, the last event id and the retry schedule,
//! and decides; the one driver, [`crate::client::driver::Driver`], does
//! the I/O around it for `connect`, the library client, `bench` and the
//! MCP client:
//!
//! 1. it opens a stream with [`Reader::last_event_id`] as `Last-Event-ID`;
//! 2. an answer judged by [`response::check_response`] (status and
//!    content type) is [`Reader::opened`]; a network error goes to
//!    [`Reader::connect_failed`];
//! 3. it feeds the body to [`Reader::feed`] and takes events from
//!    [`Reader::next_item`], which also applies `retry:`;
//! 4. at the end of the body it asks [`Reader::stream_ended`] how long to
//!    wait (or [`Reader::dropped`] after ending it on purpose), and goes
//!    to 1.
//!
//! Beyond WHATWG, for a tool that must not spin or hang: the server's
//! `retry:` has a floor ([`SERVER_RETRY_FLOOR`]), and a stream that ends
//! within [`QUICK_END`] of opening without an event counts as a failed
//! attempt, so `retry: 0` plus an instant close backs off and gives up
//! like a refused connection instead of looping forever.

pub mod response;

use std::time::{Duration, Instant};

pub use crate::backoff::{Backoff, Next, RetryPolicy, SERVER_RETRY_FLOOR};
pub use response::{Refusal, check_response, is_event_stream};

use crate::protocol::parser::{EventStreamParser, ParseError, Parsed};

/// A stream that ends this soon after opening, without an event, was no
/// real connection: it counts as a failed attempt.
pub const QUICK_END: Duration = Duration::from_secs(1);

/// One reconnecting event stream, without I/O.
#[derive(Debug)]
pub struct Reader {
    parser: EventStreamParser,
    backoff: Backoff,
    /// When the current stream opened; `None` while none is open.
    open_since: Option<Instant>,
    /// The current stream has dispatched an event.
    delivered: bool,
    /// Streams opened so far.
    opens: u64,
    /// Streams in a row that ended quickly without an event.
    quick_ends: u32,
}

impl Reader {
    /// A reader whose parser bounds lines and events at `max_event_bytes`.
    pub fn new(policy: RetryPolicy, max_event_bytes: usize) -> Self {
        Self {
            parser: EventStreamParser::with_limit(max_event_bytes),
            backoff: Backoff::new(policy),
            open_since: None,
            delivered: false,
            opens: 0,
            quick_ends: 0,
        }
    }

    /// Starts from a known event id (`--last-event-id`), sent with the
    /// first GET as it would be after a reconnect.
    pub fn set_last_event_id(&mut self, id: &str) {
        self.parser.set_last_event_id(id);
    }

    /// The `Last-Event-ID` to send (empty: send none).
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// The `Last-Event-ID` of a channel stream (PROTOCOL.md §4): after the
    /// first open, `0` when no event came yet, so that the server replays
    /// what a dead stream swallowed before its first event arrived. Plain
    /// SSE sends [`Self::last_event_id`] as it is.
    pub fn channel_last_event_id(&self) -> &str {
        match self.last_event_id() {
            "" if self.opens > 0 => "0",
            id => id,
        }
    }

    /// The number of the next attempt since the last good stream, from 1.
    pub fn attempt(&self) -> u32 {
        self.backoff.failures().saturating_add(1)
    }

    /// Streams opened so far: after the first, an open is a resume.
    pub fn opens(&self) -> u64 {
        self.opens
    }

    /// Whether the current stream sent an `id:` yet: if not, an event's
    /// `last_event_id` is the one an earlier stream left.
    pub fn stream_had_id(&self) -> bool {
        self.parser.stream_had_id()
    }

    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }

    /// Streams in a row that ended quickly without an event.
    pub fn quick_ends(&self) -> u32 {
        self.quick_ends
    }

    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// A stream is open, its answer judged by [`check_response`].
    pub fn opened(&mut self, now: Instant) {
        self.parser.reset_stream();
        self.open_since = Some(now);
        self.delivered = false;
        self.opens += 1;
    }

    /// Opening failed on the way (DNS, refused, reset, timeout): retry,
    /// give up, or, for the first connection of a run without
    /// `retry_first`, fail at once.
    pub fn connect_failed(&mut self, now: Instant) -> Next {
        if self.opens == 0 && !self.backoff.policy().retry_first {
            return Next::Fail;
        }
        self.backoff.failed(now)
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.parser.feed(chunk);
    }

    /// The next item of the stream; `retry:` is applied before it is
    /// returned, and an event marks the stream as a real one.
    pub fn next_item(&mut self) -> Result<Option<Parsed>, ParseError> {
        let item = self.parser.next_item()?;
        match &item {
            Some(Parsed::Event(_)) if !self.delivered => {
                self.delivered = true;
                self.quick_ends = 0;
                self.backoff.succeeded();
            }
            Some(Parsed::Retry(ms)) => self.backoff.set_server_retry(*ms),
            _ => {}
        }
        Ok(item)
    }

    /// The open stream ended (EOF, a network error, an idle timeout): how
    /// long to wait before the next GET, or give up. A stream that lasted
    /// or delivered is a loss (the base delay, the retry count starts
    /// over); one that ended at once without an event is a failure.
    pub fn stream_ended(&mut self, now: Instant) -> Next {
        let since = self.open_since.take();
        self.parser.reset_stream();
        let lasted = since.is_some_and(|s| now.saturating_duration_since(s) >= QUICK_END);
        if self.delivered || lasted {
            self.quick_ends = 0;
            self.backoff.lost(now)
        } else {
            self.quick_ends = self.quick_ends.saturating_add(1);
            self.backoff.failed(now)
        }
    }

    /// The stream was ended on purpose by the client (to exercise resume):
    /// reconnect at once; nothing failed.
    pub fn dropped(&mut self) {
        self.open_since = None;
        self.parser.reset_stream();
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    const ES: Option<&[u8]> = Some(b"text/event-stream");

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn reader(retries: u32) -> Reader {
        let policy = RetryPolicy {
            initial: ms(250),
            max: ms(5000),
            max_retries: Some(retries),
            ..RetryPolicy::default()
        };
        Reader::new(policy, 1 << 20)
    }

    /// The answer to a GET, judged, then the stream opened.
    fn answer(
        r: &mut Reader,
        status: StatusCode,
        content_type: Option<&[u8]>,
        t: Instant,
    ) -> Result<(), Refusal> {
        check_response(status, content_type)?;
        r.opened(t);
        Ok(())
    }

    fn events(r: &mut Reader, bytes: &[u8]) -> Vec<Parsed> {
        r.feed(bytes);
        std::iter::from_fn(|| r.next_item().unwrap()).collect()
    }

    #[test]
    fn first_connection_fails_fast_unless_asked() {
        let t = Instant::now();
        let mut r = reader(3);
        assert_eq!(r.connect_failed(t), Next::Fail);
        let mut r = Reader::new(RetryPolicy { retry_first: true, ..RetryPolicy::default() }, 64);
        assert_eq!(r.connect_failed(t), Next::RetryIn(ms(250)));
        assert_eq!(r.attempt(), 2);
    }

    #[test]
    fn a_channel_resumed_before_its_first_event_asks_from_0() {
        let t = Instant::now();
        let mut r = reader(3);
        assert_eq!(r.channel_last_event_id(), "", "a new channel sends none");
        answer(&mut r, StatusCode::OK, ES, t).unwrap();
        r.dropped();
        assert_eq!((r.last_event_id(), r.channel_last_event_id()), ("", "0"));
        answer(&mut r, StatusCode::OK, ES, t).unwrap();
        events(&mut r, b"id: 3\ndata: x\n\n");
        assert_eq!(r.channel_last_event_id(), "3");
    }

    #[test]
    fn a_stream_that_delivered_is_resumed_with_its_last_id_after_retry() {
        let t = Instant::now();
        let mut r = reader(3);
        r.set_last_event_id("41");
        assert_eq!(r.last_event_id(), "41");
        answer(&mut r, StatusCode::OK, ES, t).unwrap();
        assert!(r.is_open());
        let got = events(&mut r, b"retry: 700\n\nid: 42\ndata: x\n\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(r.stream_ended(t + ms(10)), Next::RetryIn(ms(700)));
        assert!(!r.is_open());
        assert_eq!(r.last_event_id(), "42");
        // A failure after it doubles from the server's base.
        assert_eq!(r.connect_failed(t), Next::RetryIn(ms(700)));
        assert_eq!(r.connect_failed(t), Next::RetryIn(ms(1400)));
        assert_eq!(r.connect_failed(t), Next::GiveUp);
        assert_eq!(r.opens(), 1);
    }

    #[test]
    fn retry_zero_and_instant_closes_back_off_and_give_up() {
        let t = Instant::now();
        let mut r = reader(3);
        let mut waits = Vec::new();
        loop {
            answer(&mut r, StatusCode::OK, ES, t).unwrap();
            events(&mut r, b"retry: 0\n\n: nothing else\n\n");
            match r.stream_ended(t + ms(5)) {
                Next::RetryIn(d) => waits.push(d),
                other => {
                    assert_eq!(other, Next::GiveUp);
                    break;
                }
            }
        }
        assert_eq!(waits, [ms(100), ms(200), ms(400)]);
        assert_eq!(r.quick_ends(), 4);
    }

    #[test]
    fn a_quiet_stream_that_lasted_is_no_failure() {
        let t = Instant::now();
        let mut r = reader(1);
        for n in 0..5 {
            let opened = t + Duration::from_secs(10 * n);
            answer(&mut r, StatusCode::OK, ES, opened).unwrap();
            events(&mut r, b": ping\n\n");
            assert_eq!(r.stream_ended(opened + QUICK_END), Next::RetryIn(ms(250)));
        }
        assert_eq!(r.quick_ends(), 0);
    }

    #[test]
    fn an_event_resets_the_failures() {
        let t = Instant::now();
        let mut r = reader(2);
        answer(&mut r, StatusCode::OK, ES, t).unwrap();
        assert!(matches!(r.stream_ended(t), Next::RetryIn(_)));
        assert_eq!(r.attempt(), 2);
        answer(&mut r, StatusCode::OK, ES, t).unwrap();
        events(&mut r, b"data: x\n\n");
        assert_eq!(r.attempt(), 1);
        assert_eq!(r.stream_ended(t), Next::RetryIn(ms(250)));
    }

    #[test]
    fn refusals_and_drops() {
        let t = Instant::now();
        let mut r = reader(3);
        assert_eq!(answer(&mut r, StatusCode::NO_CONTENT, None, t), Err(Refusal::NoContent));
        assert!(matches!(
            answer(&mut r, StatusCode::OK, Some(b"text/event-streamx"), t),
            Err(Refusal::ContentType(_))
        ));
        assert!(!r.is_open());
        answer(&mut r, StatusCode::OK, ES, t).unwrap();
        // Half an event, then a drop: it is forgotten, the id is kept.
        events(&mut r, b"id: 1\ndata: a\n\nid: 2\ndata: b");
        r.dropped();
        assert!(!r.is_open());
        assert_eq!(r.last_event_id(), "1");
        answer(&mut r, StatusCode::OK, ES, t).unwrap();
        assert!(events(&mut r, b"\n\n").is_empty());
        assert_eq!(r.opens(), 2);
    }

    /// What happens to a reader, for the property test.
    #[derive(Debug, Clone)]
    enum Input {
        /// A stream opens, maybe sends `retry:`, sends `events` events and
        /// ends after `lasts_ms`.
        Stream { retry: Option<u64>, events: u8, lasts_ms: u64 },
        /// Connecting fails.
        Refused,
    }

    fn input() -> impl proptest::strategy::Strategy<Value = Input> {
        use proptest::prelude::*;
        prop_oneof![
            (proptest::option::of(0u64..3000), 0u8..3, 0u64..2000)
                .prop_map(|(retry, events, lasts_ms)| Input::Stream { retry, events, lasts_ms }),
            Just(Input::Refused),
        ]
    }

    proptest::proptest! {
        /// Whatever a server does: no wait is longer than `max`, none is
        /// shorter than the floor once the server sent `retry:`, and the
        /// reader gives up exactly when `max_retries` retries in a row
        /// went without an event or a lasting stream.
        #[test]
        fn the_schedule_is_bounded(
            inputs in proptest::collection::vec(input(), 1..60),
            max_retries in 0u32..6,
            initial in 1u64..500,
            max in 1u64..3000,
        ) {
            let policy = RetryPolicy {
                initial: ms(initial),
                max: ms(max),
                max_retries: Some(max_retries),
                give_up_after: None,
                retry_first: true,
            };
            let mut r = Reader::new(policy, 1 << 16);
            let mut t = Instant::now();
            let mut retries = 0u32;
            let mut hinted = false;
            for input in inputs {
                let next = match input {
                    Input::Stream { retry, events: n, lasts_ms } => {
                        answer(&mut r, StatusCode::OK, ES, t).unwrap();
                        if let Some(ms) = retry {
                            events(&mut r, format!("retry: {ms}\n\n").as_bytes());
                            hinted = true;
                        }
                        for _ in 0..n {
                            events(&mut r, b"data: x\n\n");
                        }
                        t += ms(lasts_ms);
                        if n > 0 || ms(lasts_ms) >= QUICK_END {
                            retries = 0;
                        }
                        r.stream_ended(t)
                    }
                    Input::Refused => r.connect_failed(t),
                };
                match next {
                    Next::RetryIn(d) => {
                        proptest::prop_assert!(retries < max_retries);
                        retries += 1;
                        proptest::prop_assert!(d <= ms(max), "{d:?}");
                        let least = if hinted { SERVER_RETRY_FLOOR } else { ms(initial) };
                        proptest::prop_assert!(d >= least.min(ms(max)), "{d:?}");
                        t += d;
                    }
                    Next::GiveUp => {
                        proptest::prop_assert_eq!(retries, max_retries);
                        break;
                    }
                    Next::Fail => proptest::prop_assert!(false, "retry_first is on"),
                }
            }
        }
    }
}
