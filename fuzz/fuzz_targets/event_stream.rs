//! The event-stream parser never panics, and chunking never changes what it
//! yields: the input is parsed whole, split in two and byte by byte.
//!
//! Input: byte 0 picks the bound (< 0x80: that many bytes, so the errors are
//! reached; else the default), bytes 1-2 the split position, the rest is
//! the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ssechan::protocol::parser::{EventStreamParser, ParseError, Parsed};

/// The items up to the first error, and the last event id at the end.
fn run(max: usize, chunks: &[&[u8]]) -> (Vec<Result<Parsed, ParseError>>, String) {
    let mut parser = EventStreamParser::with_limit(max);
    let mut out = Vec::new();
    'feed: for chunk in chunks {
        parser.feed(chunk);
        loop {
            match parser.next_item() {
                Ok(Some(item)) => out.push(Ok(item)),
                Ok(None) => break,
                Err(err) => {
                    out.push(Err(err));
                    break 'feed;
                }
            }
        }
    }
    // A reconnect after anything, error included, must not panic either.
    parser.reset_stream();
    parser.feed(b"data: x\n\n");
    let after_reset = parser.next_item();
    if max >= b"data: x".len() {
        assert!(
            matches!(&after_reset, Ok(Some(Parsed::Event(e))) if e.data == "x"),
            "{after_reset:?}"
        );
    } else {
        assert_eq!(after_reset, Err(ParseError::LineTooLong(max)));
    }
    (out, parser.last_event_id().to_owned())
}

fuzz_target!(|input: &[u8]| {
    let [bound, hi, lo, stream @ ..] = input else {
        return;
    };
    let max = if *bound < 0x80 { usize::from(*bound) } else { EventStreamParser::DEFAULT_MAX };
    let at = usize::from(u16::from_be_bytes([*hi, *lo])) % (stream.len() + 1);
    let (head, tail) = stream.split_at(at);

    let whole = run(max, &[stream]);
    assert_eq!(run(max, &[head, tail]), whole, "split at {at}");
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run(max, &bytes), whole, "byte by byte");
});
