//! The WHATWG "server-sent events" event-stream parser: bytes in, events out.
//!
//! STUB: the API is fixed here; the implementation follows.

use thiserror::Error;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, `"message"` when absent or empty.
    pub event: String,
    /// The `data:` lines joined by LF (the final LF removed).
    pub data: String,
    /// The stream's last event id at dispatch time (persists across events).
    pub last_event_id: String,
}

/// What the parser produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A dispatched event.
    Event(Event),
    /// A valid `retry:` field: the new reconnection time in milliseconds.
    Retry(u64),
    /// A comment line (the text after `:`), e.g. a heartbeat.
    Comment(String),
}

/// The stream broke a bound of the parser.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    #[error("event stream line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("event stream event larger than {0} bytes")]
    EventTooLarge(usize),
}

/// Incremental event-stream parser.
#[derive(Debug)]
pub struct EventStreamParser {
    _private: (),
}

impl Default for EventStreamParser {
    fn default() -> Self {
        Self::new()
    }
}

impl EventStreamParser {
    /// Default bound of one line and of one event's data: 16 MiB.
    pub const DEFAULT_MAX: usize = 16 << 20;

    pub fn new() -> Self {
        Self::with_limit(Self::DEFAULT_MAX)
    }

    /// A parser that errors when a line or an event's data passes `max` bytes.
    pub fn with_limit(_max: usize) -> Self {
        Self { _private: () }
    }

    /// Appends bytes from the stream.
    pub fn feed(&mut self, _chunk: &[u8]) {}

    /// Takes the next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<Parsed>, ParseError> {
        Ok(None)
    }

    /// The last event id, to send as `Last-Event-ID` on reconnect.
    pub fn last_event_id(&self) -> &str {
        ""
    }

    /// Forgets any partial line and event (end of stream: an unfinished event
    /// is dropped) but keeps the last event id, as a reconnect does.
    pub fn reset_stream(&mut self) {}
}
