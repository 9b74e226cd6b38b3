//! The WHATWG "server-sent events" event-stream parser: bytes in, events out.
//!
//! It follows HTML's "Parsing an event stream" and "Interpreting an event
//! stream" to the letter, without I/O: [`EventStreamParser::feed`] takes bytes
//! in any chunking, [`EventStreamParser::next_item`] pulls what they complete.
//! Chunk boundaries never change the result: a BOM, a CRLF or a UTF-8
//! sequence may be split anywhere.
//!
//! Lines are decoded on their own, lossily. That equals decoding the whole
//! stream first because CR, LF, `:` and space are ASCII, which never occur
//! inside a UTF-8 sequence and end any invalid one.

use std::borrow::Cow;
use std::mem;

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

impl Event {
    /// package:sse's `event: control` / `data: close`: the server closed
    /// the channel for good (no reconnect).
    pub fn is_control_close(&self) -> bool {
        self.event == super::CONTROL_EVENT && self.data == super::CONTROL_CLOSE_DATA
    }
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

/// The UTF-8 byte order mark, stripped once at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Capacity above which [`EventStreamParser::reset_stream`] frees the line
/// buffer, so one huge line does not pin its memory for the next connection.
const KEEP_CAPACITY: usize = 64 << 10;

/// Incremental event-stream parser.
///
/// Call [`next_item`](Self::next_item) until it returns `Ok(None)` after each
/// [`feed`](Self::feed): the parser then holds at most one partial line, of
/// at most `max` bytes (plus a few). An error is sticky: `next_item` repeats
/// it and `feed` drops bytes until [`reset_stream`](Self::reset_stream).
#[derive(Debug)]
pub struct EventStreamParser {
    /// Received bytes; `..pos` is consumed and compacted away lazily in
    /// `feed`, not per line, so a chunk of many events costs one move.
    buf: Vec<u8>,
    /// Start of the first unconsumed line in `buf`.
    pos: usize,
    /// `pos..scan` is known to hold no CR or LF: a long partial line is not
    /// re-scanned on every `next_item`.
    scan: usize,
    /// The last line ended with CR: a following LF, maybe in the next chunk,
    /// belongs to the same line end (CRLF).
    skip_lf: bool,
    /// Nothing of this stream consumed yet: a leading BOM is to be stripped.
    at_start: bool,
    /// Start of the partial line at the end of `buf` (after its last CR or
    /// LF), for `feed` to bound it.
    tail: usize,
    /// `feed` cut a partial line past the bound: the error is certain once
    /// `next_item` gets there, and later bytes are dropped.
    overflowed: bool,
    max: usize,
    failed: Option<ParseError>,
    fields: Fields,
}

/// The buffers of "Interpreting an event stream".
#[derive(Debug, Default)]
struct Fields {
    data: String,
    event_type: String,
    /// The "last event ID buffer": set by `id:`, committed at a blank line.
    id_buffer: String,
    /// The "last event ID string": the committed id, kept across streams.
    last_event_id: String,
    /// An `id:` field came since the stream began.
    id_in_stream: bool,
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
    pub fn with_limit(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            skip_lf: false,
            at_start: true,
            tail: 0,
            overflowed: false,
            max,
            failed: None,
            fields: Fields::default(),
        }
    }

    /// Appends bytes from the stream.
    ///
    /// A partial line is buffered up to one byte past the bound, enough for
    /// `next_item` to fail on it; the rest is dropped, so an endless line
    /// never grows the buffer, even if `next_item` is not called.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.failed.is_some() || self.overflowed || chunk.is_empty() {
            return;
        }
        self.compact();
        // The length of the partial line at the end once `chunk` is added.
        let run = match chunk.iter().rposition(|&b| is_line_end(b)) {
            Some(last) => {
                self.tail = self.buf.len() + last + 1;
                chunk.len() - last - 1
            }
            None => self.buf.len() - self.tail.max(self.pos) + chunk.len(),
        };
        // A BOM still to be stripped does not count toward the line.
        let allowed = self.max.saturating_add(if self.at_start { BOM.len() } else { 0 });
        if run > allowed {
            // The earlier part of the run is at most `allowed`, else
            // `overflowed` would be set: the excess is within `chunk`.
            let excess = run - allowed - 1;
            self.buf.extend_from_slice(&chunk[..chunk.len().saturating_sub(excess)]);
            self.overflowed = true;
        } else {
            self.buf.extend_from_slice(chunk);
        }
    }

    /// Takes the next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<Parsed>, ParseError> {
        loop {
            if let Some(err) = &self.failed {
                return Err(err.clone());
            }
            if self.at_start {
                let rest = &self.buf[self.pos..];
                let n = rest.len().min(BOM.len());
                if rest[..n] != BOM[..n] {
                    self.at_start = false;
                } else if n == BOM.len() {
                    self.pos += n;
                    self.at_start = false;
                } else {
                    return Ok(None); // a BOM prefix so far: wait for the rest
                }
            }
            if self.skip_lf {
                match self.buf.get(self.pos) {
                    None => return Ok(None),
                    Some(&b) => {
                        if b == b'\n' {
                            self.pos += 1;
                        }
                        self.skip_lf = false;
                    }
                }
            }
            let from = self.scan.max(self.pos);
            let Some(offset) = self.buf[from..].iter().position(|&b| is_line_end(b)) else {
                self.scan = self.buf.len();
                if self.buf.len() - self.pos > self.max {
                    return Err(self.fail(ParseError::LineTooLong(self.max)));
                }
                return Ok(None);
            };
            let (start, end) = (self.pos, from + offset);
            self.skip_lf = self.buf[end] == b'\r';
            self.pos = end + 1;
            self.scan = self.pos;
            if end - start > self.max {
                return Err(self.fail(ParseError::LineTooLong(self.max)));
            }
            match self.fields.line(&self.buf[start..end], self.max) {
                Ok(Some(item)) => return Ok(Some(item)),
                Ok(None) => {}
                Err(err) => return Err(self.fail(err)),
            }
        }
    }

    /// The last event id, to send as `Last-Event-ID` on reconnect.
    ///
    /// It is the id committed by the last blank line: an `id:` of an event
    /// that never completed does not count, as in browsers.
    pub fn last_event_id(&self) -> &str {
        &self.fields.last_event_id
    }

    /// Whether an `id:` field came since the stream began (the last
    /// [`reset_stream`](Self::reset_stream)): if not, an event's
    /// `last_event_id` is the one carried over from an earlier stream.
    pub fn stream_had_id(&self) -> bool {
        self.fields.id_in_stream
    }

    /// Sets the last event id as if a stream had sent it (a client that
    /// starts from a known id, e.g. `connect --last-event-id`).
    pub fn set_last_event_id(&mut self, id: &str) {
        id.clone_into(&mut self.fields.last_event_id);
    }

    /// Bytes held for lines not yet parsed (at most about the bound when
    /// [`next_item`](Self::next_item) is drained after each feed).
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Forgets any partial line and event (end of stream: an unfinished event
    /// is dropped) but keeps the last event id, as a reconnect does.
    pub fn reset_stream(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        self.pos = 0;
        self.scan = 0;
        self.skip_lf = false;
        self.at_start = true;
        self.tail = 0;
        self.overflowed = false;
        self.failed = None;
        let fields = &mut self.fields;
        fields.data.clear();
        if fields.data.capacity() > KEEP_CAPACITY {
            fields.data = String::new();
        }
        fields.event_type.clear();
        fields.id_in_stream = false;
        // An `id:` of the dropped event is forgotten with it.
        fields.id_buffer.clone_from(&fields.last_event_id);
    }

    /// Drops the consumed prefix of `buf`.
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.copy_within(self.pos.., 0);
            self.buf.truncate(self.buf.len() - self.pos);
        }
        self.scan = self.scan.saturating_sub(self.pos);
        self.tail = self.tail.saturating_sub(self.pos);
        self.pos = 0;
    }

    /// Makes `err` sticky and frees the buffered bytes, which are useless now.
    fn fail(&mut self, err: ParseError) -> ParseError {
        self.buf.clear();
        self.pos = 0;
        self.scan = 0;
        self.tail = 0;
        self.failed = Some(err.clone());
        err
    }
}

fn is_line_end(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

fn decode(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

impl Fields {
    /// Interprets one line (without its terminator).
    fn line(&mut self, line: &[u8], max: usize) -> Result<Option<Parsed>, ParseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return Ok(Some(Parsed::Comment(decode(&line[1..]).into_owned()))),
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        // Byte comparison is exact: no invalid sequence decodes to ASCII.
        match name {
            b"data" => {
                let value = decode(value);
                // Bound the decoded size: U+FFFD takes 3 bytes per bad byte.
                if self.data.len().saturating_add(value.len()).saturating_add(1) > max {
                    return Err(ParseError::EventTooLarge(max));
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&decode(value));
            }
            // U+0000 is encoded as the byte 0 only.
            b"id" if !value.contains(&0) => {
                self.id_in_stream = true;
                self.id_buffer.clear();
                self.id_buffer.push_str(&decode(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // All digits, so only an overflow fails: ignored like bogus input.
                if let Some(ms) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                    return Ok(Some(Parsed::Retry(ms)));
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// A blank line: commits the id and dispatches the event, if it has data.
    fn dispatch(&mut self) -> Option<Parsed> {
        if self.last_event_id != self.id_buffer {
            self.last_event_id.clone_from(&self.id_buffer);
        }
        if self.data.is_empty() {
            self.event_type.clear();
            return None;
        }
        let mut data = mem::take(&mut self.data);
        data.pop(); // the LF after the last data line
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            mem::take(&mut self.event_type)
        };
        Some(Parsed::Event(Event { event, data, last_event_id: self.last_event_id.clone() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(parser: &mut EventStreamParser, input: &[u8]) -> Vec<Parsed> {
        parser.feed(input);
        let mut items = Vec::new();
        while let Some(item) = parser.next_item().expect("no parse error") {
            items.push(item);
        }
        items
    }

    fn parse(input: &[u8]) -> Vec<Parsed> {
        parse_with(&mut EventStreamParser::new(), input)
    }

    fn ev(event: &str, data: &str, id: &str) -> Parsed {
        Parsed::Event(Event { event: event.into(), data: data.into(), last_event_id: id.into() })
    }

    #[test]
    fn typical_event() {
        assert_eq!(parse(b"id: 123\ndata: \"hello\"\n\n"), [ev("message", "\"hello\"", "123")]);
    }

    #[test]
    fn multi_line_data_and_named_event() {
        assert_eq!(parse(b"event: control\ndata: a\ndata:b\n\n"), [ev("control", "a\nb", "")]);
    }

    #[test]
    fn type_buffer_resets_after_dispatch() {
        assert_eq!(
            parse(b"event: x\ndata: 1\n\ndata: 2\n\n"),
            [ev("x", "1", ""), ev("message", "2", "")]
        );
    }

    #[test]
    fn blank_line_without_data_resets_type() {
        assert_eq!(parse(b"event: x\n\ndata: 2\n\n"), [ev("message", "2", "")]);
    }

    #[test]
    fn comment_keeps_text() {
        assert_eq!(
            parse(b": ping\n:\n::x\n"),
            [
                Parsed::Comment(" ping".into()),
                Parsed::Comment(String::new()),
                Parsed::Comment(":x".into())
            ]
        );
    }

    #[test]
    fn retry_valid_and_invalid() {
        assert_eq!(
            parse(b"retry: 03000\nretry:1000x\nretry\nretry:\nretry:-1\nretry:1.5\nretry:  5\n"),
            [Parsed::Retry(3000)]
        );
        assert_eq!(parse(b"retry:18446744073709551616\n"), []);
        assert_eq!(parse(b"retry:18446744073709551615\n"), [Parsed::Retry(u64::MAX)]);
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        assert_eq!(parse(b"data:  a\ndata:\tb\n\n"), [ev("message", " a\n\tb", "")]);
    }

    #[test]
    fn id_persists_and_commits_on_blank_line() {
        let mut p = EventStreamParser::new();
        assert_eq!(parse_with(&mut p, b"id: 7\n"), []);
        assert_eq!(p.last_event_id(), "", "an id is committed by the blank line only");
        assert_eq!(parse_with(&mut p, b"\n"), []);
        assert_eq!(p.last_event_id(), "7");
        assert_eq!(parse_with(&mut p, b"data: x\n\n"), [ev("message", "x", "7")]);
        assert_eq!(parse_with(&mut p, b"id\n\n"), []);
        assert_eq!(p.last_event_id(), "");
    }

    #[test]
    fn id_with_nul_is_ignored() {
        assert_eq!(parse(b"id: 1\n\nid: a\0b\ndata: x\n\n"), [ev("message", "x", "1")]);
    }

    #[test]
    fn crlf_split_across_feeds_is_one_line_end() {
        let mut p = EventStreamParser::new();
        assert_eq!(parse_with(&mut p, b"data: a\r"), []);
        assert_eq!(parse_with(&mut p, b"\n"), []);
        assert_eq!(parse_with(&mut p, b"\r\n"), [ev("message", "a", "")]);
    }

    #[test]
    fn bom_stripped_once_even_byte_by_byte() {
        let input = b"\xEF\xBB\xBFdata: 1\n\n\xEF\xBB\xBFdata: 2\n\ndata: 3\n\n";
        let mut p = EventStreamParser::new();
        let mut items = Vec::new();
        for &b in input {
            items.extend(parse_with(&mut p, &[b]));
        }
        assert_eq!(items, [ev("message", "1", ""), ev("message", "3", "")]);
    }

    #[test]
    fn bom_prefix_that_is_not_a_bom_is_data() {
        assert_eq!(parse(b"\xEF\xBBdata: 1\n\n"), []);
        assert_eq!(parse(b"data: \xEF\xBB\n\n"), [ev("message", "\u{FFFD}", "")]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(parse(b"data: \xFF\xE2\x80\n\n"), [ev("message", "\u{FFFD}\u{FFFD}", "")]);
    }

    #[test]
    fn unfinished_event_is_dropped_on_reset() {
        let mut p = EventStreamParser::new();
        assert_eq!(parse_with(&mut p, b"id: 1\n\nid: 2\ndata: lost\nda"), []);
        p.reset_stream();
        assert_eq!(p.last_event_id(), "1");
        assert_eq!(parse_with(&mut p, b"data: new\n\n"), [ev("message", "new", "1")]);
    }

    #[test]
    fn line_too_long_is_sticky_until_reset() {
        let mut p = EventStreamParser::with_limit(4);
        p.feed(b"data: 12345\n");
        assert_eq!(p.next_item(), Err(ParseError::LineTooLong(4)));
        assert_eq!(p.next_item(), Err(ParseError::LineTooLong(4)));
        p.feed(b"\n");
        assert_eq!(p.buffered_len(), 0);
        p.reset_stream();
        assert_eq!(parse_with(&mut p, b"id:1\n"), []);
    }

    #[test]
    fn line_of_exactly_max_bytes_is_allowed() {
        let mut p = EventStreamParser::with_limit(7);
        assert_eq!(parse_with(&mut p, b"data:ab"), []);
        assert_eq!(parse_with(&mut p, b"\n\n"), [ev("message", "ab", "")]);
    }

    #[test]
    fn event_too_large() {
        let mut p = EventStreamParser::with_limit(8);
        p.feed(b"data:abc\ndata:def\ndata:g\n");
        assert_eq!(p.next_item(), Err(ParseError::EventTooLarge(8)));
    }

    #[test]
    fn errors_have_one_line_messages() {
        assert_eq!(ParseError::LineTooLong(3).to_string(), "event stream line longer than 3 bytes");
        assert_eq!(
            ParseError::EventTooLarge(3).to_string(),
            "event stream event larger than 3 bytes"
        );
    }
}
