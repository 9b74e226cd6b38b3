//! The web-platform-tests `eventsource/format-*` cases, plus bounds and
//! property tests, against [`EventStreamParser`].
//!
//! Each WPT case is the body its server script sends: `message.py` answers
//! `message + ("\n\n" unless newline=none) + "\n"` (see [`wpt_message`]). A
//! reconnect is a new stream after [`EventStreamParser::reset_stream`].
//!
//! The `format-mime-*` cases are not here: they test the Content-Type check,
//! which is the HTTP client's job, not the parser's.

use proptest::prelude::*;
use ssechan::protocol::parser::{Event, EventStreamParser, ParseError, Parsed};

// ---------------------------------------------------------------- helpers

/// Feeds `chunks` and drains the parser after each one; panics on an error.
fn drain(parser: &mut EventStreamParser, chunks: &[&[u8]], items: &mut Vec<Parsed>) {
    for chunk in chunks {
        parser.feed(chunk);
        while let Some(item) = parser.next_item().expect("no parse error") {
            items.push(item);
        }
    }
}

/// Runs `streams` (one per connection) through one parser, each stream cut
/// by `cut`; returns the items and the last event id after each stream.
fn run(streams: &[&[u8]], cut: &dyn Fn(&[u8]) -> Vec<Vec<u8>>) -> (Vec<Parsed>, Vec<String>) {
    let mut parser = EventStreamParser::new();
    let mut items = Vec::new();
    let mut ids = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        if i > 0 {
            parser.reset_stream();
        }
        let chunks = cut(stream);
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        drain(&mut parser, &chunks, &mut items);
        ids.push(parser.last_event_id().to_owned());
    }
    (items, ids)
}

/// Asserts that `streams` yield `expected` fed (a) whole, (b) byte by byte
/// and (c) split into two chunks at every position; returns the last event
/// id after each stream (the same for every chunking, else it panics).
fn check_streams(streams: &[&[u8]], expected: &[Parsed]) -> Vec<String> {
    let (items, ids) = run(streams, &|s| vec![s.to_vec()]);
    assert_eq!(items, expected, "fed whole");
    let (items, byte_ids) = run(streams, &|s| s.iter().map(|&b| vec![b]).collect());
    assert_eq!(items, expected, "fed byte by byte");
    assert_eq!(byte_ids, ids, "last event ids fed byte by byte");
    let longest = streams.iter().map(|s| s.len()).max().unwrap_or(0);
    for at in 0..=longest {
        let (items, split_ids) = run(streams, &|s| {
            let at = at.min(s.len());
            vec![s[..at].to_vec(), s[at..].to_vec()]
        });
        assert_eq!(items, expected, "split at {at}");
        assert_eq!(split_ids, ids, "last event ids split at {at}");
    }
    ids
}

/// [`check_streams`] for a single stream; returns the final last event id.
fn check(stream: impl AsRef<[u8]>, expected: &[Parsed]) -> String {
    check_streams(&[stream.as_ref()], expected).pop().unwrap_or_default()
}

/// The body of WPT's `resources/message.py?message=<msg>`.
fn wpt_message(msg: &str) -> Vec<u8> {
    format!("{msg}\n\n\n").into_bytes()
}

/// The body of WPT's `resources/message.py?message=<msg>&newline=none`.
fn wpt_message_none(msg: &str) -> Vec<u8> {
    format!("{msg}\n").into_bytes()
}

fn ev(data: &str) -> Parsed {
    ev_full("message", data, "")
}

fn ev_id(data: &str, id: &str) -> Parsed {
    ev_full("message", data, id)
}

fn ev_full(event: &str, data: &str, id: &str) -> Parsed {
    Parsed::Event(Event { event: event.into(), data: data.into(), last_event_id: id.into() })
}

fn comment(text: &str) -> Parsed {
    Parsed::Comment(text.into())
}

// ------------------------------------------------------------ WPT format-*

#[test]
fn format_bom() {
    // The second BOM is part of the line: field "\u{FEFF}data" is unknown.
    check(wpt_message("\u{FEFF}data:1\n\n\u{FEFF}data:2\n\ndata:3"), &[ev("1"), ev("3")]);
}

#[test]
fn format_bom_2() {
    // Only one BOM is stripped: the first event's field is "\u{FEFF}data".
    check(wpt_message("\u{FEFF}\u{FEFF}data:1\n\ndata:2\n\ndata:3"), &[ev("2"), ev("3")]);
}

#[test]
fn bom_is_stripped_at_the_start_of_each_stream() {
    let stream = "\u{FEFF}data:1\n\n".as_bytes();
    check_streams(&[stream, stream], &[ev("1"), ev("1")]);
}

#[test]
fn bom_alone_then_data() {
    check("\u{FEFF}\ndata:1\n\n", &[ev("1")]);
    check("\u{FEFF}", &[]);
}

#[test]
fn format_comments() {
    let long = "x".repeat(2 * 1024);
    let msg = format!("data:1\r:\0\n:\r\ndata:2\n:{long}\rdata:3\n:data:fail\r:{long}\ndata:4\n");
    check(
        wpt_message_none(&msg),
        &[
            comment("\0"),
            comment(""),
            comment(&long),
            comment("data:fail"),
            comment(&long),
            ev("1\n2\n3\n4"),
        ],
    );
}

#[test]
fn comments_ended_by_cr_lf_and_crlf() {
    check(
        ":a\r: b\n:c\r\n:\r\r\ndata:x\n\n",
        &[comment("a"), comment(" b"), comment("c"), comment(""), ev("x")],
    );
}

#[test]
fn format_data_before_final_empty_line() {
    // The unfinished event (and its id) is dropped when the stream ends; the
    // reconnected stream starts again from the committed id "".
    let stream = wpt_message_none("retry:1000\ndata:test1\n\nid:test\ndata:test2");
    let ids = check_streams(
        &[&stream, &stream],
        &[Parsed::Retry(1000), ev("test1"), Parsed::Retry(1000), ev("test1")],
    );
    assert_eq!(ids, ["", ""]);
}

#[test]
fn format_field_data() {
    check(wpt_message("data:\n\ndata\ndata\n\ndata:test"), &[ev(""), ev("\n"), ev("test")]);
}

#[test]
fn format_field_event_empty() {
    check(wpt_message("event: \ndata:data"), &[ev("data")]);
}

#[test]
fn format_field_event() {
    check(wpt_message("event:test\ndata:x\n\ndata:x"), &[ev_full("test", "x", ""), ev("x")]);
}

#[test]
fn format_field_id() {
    // resources/last-event-id.py: the reconnect carries Last-Event-ID "…",
    // which the server echoes as data.
    let first = "id: …\nretry: 200\ndata: hello\n\n".as_bytes();
    let second = "data: …\n\n".as_bytes();
    let ids = check_streams(
        &[first, second],
        &[Parsed::Retry(200), ev_id("hello", "…"), ev_id("…", "…")],
    );
    assert_eq!(ids, ["…", "…"]);
}

#[test]
fn format_field_id_2() {
    let first = "id: …\nretry: 200\ndata: hello\n\n".as_bytes();
    let again = "data: …\n\n".as_bytes();
    let ids = check_streams(
        &[first, again, again],
        &[Parsed::Retry(200), ev_id("hello", "…"), ev_id("…", "…"), ev_id("…", "…")],
    );
    assert_eq!(ids, ["…", "…", "…"]);
}

#[test]
fn format_field_id_3_persists() {
    let id = check("id: 1\ndata: 1\n\ndata:2\n\n", &[ev_id("1", "1"), ev_id("2", "1")]);
    assert_eq!(id, "1");
}

#[test]
fn format_field_id_3_changes_and_persists() {
    let id = check(
        "id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
        &[ev_id("1", "1"), ev_id("2", "2"), ev_id("3", "2")],
    );
    assert_eq!(id, "2");
}

#[test]
fn format_field_id_3_resets() {
    let id = check(
        "id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
        &[ev_id("1", "1"), ev_id("2", ""), ev_id("3", "")],
    );
    assert_eq!(id, "");
}

#[test]
fn format_field_id_null() {
    // format-field-id-null.window.js: an id holding U+0000 is ignored, so
    // the reconnect sends no Last-Event-ID and gets "hello" again.
    for value in ["\0\0", "x\0", "\0x", "x\0x", " \0"] {
        let stream = format!("id: {value}\nretry: 200\ndata: hello\n\n");
        let ids = check_streams(
            &[stream.as_bytes(), stream.as_bytes()],
            &[Parsed::Retry(200), ev("hello"), Parsed::Retry(200), ev("hello")],
        );
        assert_eq!(ids, ["", ""], "id value {value:?}");
    }
}

#[test]
fn id_with_nul_keeps_the_previous_id() {
    check("id: 1\n\nid: x\0\ndata: y\n\n", &[ev_id("y", "1")]);
}

#[test]
fn format_field_parsing() {
    let msg = "data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n";
    check(wpt_message_none(msg), &[ev("\0\n 2\n1\n3\n\n4")]);
}

#[test]
fn field_names_are_exact_and_case_sensitive() {
    check(
        "Data:a\ndata\0:b\n data:c\ndataa:d\nDATA:e\nEvent:x\nID:9\nRetry:5\ndata:ok\n\n",
        &[ev("ok")],
    );
}

#[test]
fn format_field_retry_bogus() {
    check(wpt_message("retry:2000\nretry:1000x\ndata:x"), &[Parsed::Retry(2000), ev("x")]);
}

#[test]
fn format_field_retry_empty() {
    check(wpt_message("retry\ndata:test"), &[ev("test")]);
}

#[test]
fn format_field_retry() {
    check(wpt_message("retry:02000\ndata:x"), &[Parsed::Retry(2000), ev("x")]);
}

#[test]
fn retry_values() {
    check(
        "retry:03000\nretry: 5\nretry:  6\nretry:\nretry\nretry:-1\nretry:+1\nretry:1.5\n\
         retry:1e3\nretry:99999999999999999999\nretry:٣\nretry:0\n",
        &[Parsed::Retry(3000), Parsed::Retry(5), Parsed::Retry(0)],
    );
}

#[test]
fn format_field_unknown() {
    check(
        wpt_message(
            "data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test",
        ),
        &[comment("thisisacommentyay"), ev("test\n\ntest")],
    );
}

#[test]
fn format_leading_space() {
    check(wpt_message("data:\ttest\rdata: \ndata:test"), &[ev("\ttest\n\ntest")]);
}

#[test]
fn format_newlines() {
    check(wpt_message_none("data:test\r\ndata\ndata:test\r\n\r"), &[ev("test\n\ntest")]);
}

#[test]
fn mixed_line_ends() {
    check(
        "data:a\rdata:b\ndata:c\r\ndata:d\r\rdata:e\n\ndata:f\r\n\r\n",
        &[ev("a\nb\nc\nd"), ev("e"), ev("f")],
    );
}

#[test]
fn cr_cr_lf_is_two_line_ends() {
    // CR, then CRLF: the blank line between dispatches.
    check("data:a\r\r\ndata:b\n\n", &[ev("a"), ev("b")]);
}

#[test]
fn format_null_character() {
    check(wpt_message("data:\0\n\n"), &[ev("\0")]);
}

#[test]
fn format_utf_8() {
    check(wpt_message("data:ok…"), &[ev("ok…")]);
}

#[test]
fn utf_8_multi_byte_characters() {
    // 2-, 3- and 4-byte sequences, split everywhere by the check helper.
    check("event:é\ndata:ü…😀\nid:€\n\n", &[ev_full("é", "ü…😀", "€")]);
}

#[test]
fn invalid_utf_8_becomes_replacement_characters() {
    // A truncated sequence is one U+FFFD, each stray byte another.
    check(b"data:a\xE2\x80b\xFF\xC0\n\n", &[ev("a\u{FFFD}b\u{FFFD}\u{FFFD}")]);
    // A truncated sequence before the line end does not eat the LF.
    check(b"data:\xF0\x9F\x98\n\n", &[ev("\u{FFFD}")]);
}

#[test]
fn unfinished_last_event_is_dropped() {
    check("data:a\n\ndata:b\n", &[ev("a")]);
    check("data:a\n\ndata:b", &[ev("a")]);
    check_streams(&[&b"data:a\n\nid:5\ndata:b\n"[..], &b"data:c\n\n"[..]], &[ev("a"), ev("c")]);
}

#[test]
fn blank_lines_without_data_dispatch_nothing() {
    check("\n\n\r\n\revent:x\n\nid:1\n\n", &[]);
}

// ------------------------------------------------------------------ bounds

const MAX: usize = 64 << 10;
/// What the parser may hold past the bound: a BOM and the byte that fails.
const SLACK: usize = 4;

#[test]
fn endless_line_errors_while_drained() {
    let mut parser = EventStreamParser::with_limit(MAX);
    let chunk = [b'a'; 1000];
    let mut error = None;
    for _ in 0..(4 * MAX / chunk.len()) {
        parser.feed(&chunk);
        assert!(parser.buffered_len() <= MAX + SLACK, "buffered {}", parser.buffered_len());
        match parser.next_item() {
            Ok(None) => {}
            Ok(Some(item)) => panic!("unexpected {item:?}"),
            Err(err) => {
                error = Some(err);
                break;
            }
        }
    }
    assert_eq!(error, Some(ParseError::LineTooLong(MAX)));
    parser.feed(&chunk);
    assert_eq!(parser.buffered_len(), 0, "bytes after an error are dropped");
    assert_eq!(parser.next_item(), Err(ParseError::LineTooLong(MAX)), "the error is sticky");
}

#[test]
fn endless_line_errors_even_if_never_drained() {
    let mut parser = EventStreamParser::with_limit(MAX);
    parser.feed(b"data: ");
    for _ in 0..(4 * MAX / 1000) {
        parser.feed(&[b'a'; 1000]);
        assert!(parser.buffered_len() <= MAX + SLACK, "buffered {}", parser.buffered_len());
    }
    assert_eq!(parser.next_item(), Err(ParseError::LineTooLong(MAX)));
}

#[test]
fn short_lines_in_a_large_chunk_are_not_too_long() {
    // Only a line counts toward the bound, not a chunk of many lines.
    let mut parser = EventStreamParser::with_limit(16);
    let mut items = Vec::new();
    let chunk = b":0123456789abcde\r".repeat(100);
    drain(&mut parser, &[&chunk, b"\n"], &mut items);
    assert_eq!(items, vec![comment("0123456789abcde"); 100]);
}

#[test]
fn line_of_max_bytes_passes_and_one_more_fails() {
    let line = format!("data:{}", "x".repeat(MAX - 5));
    let mut parser = EventStreamParser::with_limit(MAX);
    let mut items = Vec::new();
    drain(&mut parser, &[line.as_bytes(), b"\n\n"], &mut items);
    assert_eq!(items, [ev(&"x".repeat(MAX - 5))]);

    let mut parser = EventStreamParser::with_limit(MAX);
    parser.feed(line.as_bytes());
    parser.feed(b"y\n\n");
    assert_eq!(parser.next_item(), Err(ParseError::LineTooLong(MAX)));
}

#[test]
fn many_data_lines_error_with_event_too_large() {
    let mut parser = EventStreamParser::with_limit(MAX);
    let line = b"data: 0123456789abcdef\n";
    let mut error = None;
    for _ in 0..(2 * MAX / line.len()) {
        parser.feed(line);
        match parser.next_item() {
            Ok(None) => {}
            Ok(Some(item)) => panic!("unexpected {item:?}"),
            Err(err) => {
                error = Some(err);
                break;
            }
        }
    }
    assert_eq!(error, Some(ParseError::EventTooLarge(MAX)));
}

#[test]
fn event_data_up_to_the_bound_passes() {
    // 4 lines of 4 bytes data + LF = 20 bytes buffered, the bound.
    let mut parser = EventStreamParser::with_limit(20);
    let mut items = Vec::new();
    drain(&mut parser, &[b"data:aaaa\ndata:bbbb\ndata:cccc\ndata:dddd\n\n"], &mut items);
    assert_eq!(items, [ev("aaaa\nbbbb\ncccc\ndddd")]);
}

#[test]
fn reset_after_an_error_resumes_with_the_last_event_id() {
    let mut parser = EventStreamParser::with_limit(32);
    let mut items = Vec::new();
    drain(&mut parser, &[b"id: 7\ndata: a\n\n"], &mut items);
    parser.feed(&[b'z'; 100]);
    assert_eq!(parser.next_item(), Err(ParseError::LineTooLong(32)));
    parser.reset_stream();
    drain(&mut parser, &[b"data: b\n\n"], &mut items);
    assert_eq!(items, [ev_id("a", "7"), ev_id("b", "7")]);
}

// ---------------------------------------------------------- property tests

/// Feeds `chunks` with bound `max`; collects items up to the first error.
fn outcome(max: usize, chunks: &[&[u8]]) -> (Vec<Result<Parsed, ParseError>>, String) {
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
    (out, parser.last_event_id().to_owned())
}

/// The spec's algorithm written plainly: decode the whole stream, strip one
/// BOM, split complete lines, interpret them. The reference for the parser.
fn reference(stream: &[u8]) -> (Vec<Result<Parsed, ParseError>>, String) {
    let text = String::from_utf8_lossy(stream);
    let mut rest = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    let (mut data, mut event_type, mut id_buffer, mut last_id) =
        (String::new(), String::new(), String::new(), String::new());
    let mut out = Vec::new();
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        rest = &rest[end + if rest[end..].starts_with("\r\n") { 2 } else { 1 }..];
        if line.is_empty() {
            last_id = id_buffer.clone();
            if !data.is_empty() {
                data.pop();
                let event = if event_type.is_empty() { "message".into() } else { event_type };
                let data = std::mem::take(&mut data);
                out.push(Ok(ev_full(&event, &data, &last_id)));
            }
            data.clear();
            event_type = String::new();
            continue;
        }
        if let Some(text) = line.strip_prefix(':') {
            out.push(Ok(comment(text)));
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match name {
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "event" => event_type = value.to_owned(),
            "id" if !value.contains('\0') => id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    out.push(Ok(Parsed::Retry(ms)));
                }
            }
            _ => {}
        }
    }
    (out, last_id)
}

fn line_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(b"\n".to_vec()), Just(b"\r".to_vec()), Just(b"\r\n".to_vec()), Just(vec![])]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z0-9 \t:\0]{0,8}".prop_map(String::into_bytes),
        "[0-9]{0,21}".prop_map(String::into_bytes),
        "[é…😀\u{FEFF}x ]{0,4}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..6),
    ]
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("data"),
        Just("data"),
        Just("event"),
        Just("id"),
        Just("retry"),
        Just("Data"),
        Just("data\0"),
        Just(" data"),
        Just("dataa"),
        Just("\u{FEFF}data"),
        Just(""),
    ];
    let sep = prop_oneof![Just(""), Just(":"), Just(": "), Just(":  "), Just(":\t")];
    let body = prop_oneof![
        6 => (name, sep, value()).prop_map(|(n, s, v)| [n.as_bytes(), s.as_bytes(), &v].concat()),
        2 => Just(Vec::new()),
        1 => value().prop_map(|v| [b":".as_slice(), &v].concat()),
        1 => Just(b"\xEF\xBB\xBF".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    (body, line_end()).prop_map(|(b, e)| [b, e].concat())
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), prop::collection::vec(line(), 0..24)).prop_map(|(bom, lines)| {
        let mut out = if bom { b"\xEF\xBB\xBF".to_vec() } else { Vec::new() };
        out.extend(lines.concat());
        out
    })
}

fn cut_at(stream: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    at.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in at.into_iter().chain([stream.len()]) {
        chunks.push(stream[start..cut].to_vec());
        start = cut;
    }
    chunks
}

proptest! {
    #[test]
    fn chunking_never_changes_the_items(
        stream in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        small in any::<bool>(),
        limit in 1usize..48,
    ) {
        // A small bound makes errors happen; they must not move either.
        let max = if small { limit } else { EventStreamParser::DEFAULT_MAX };
        let chunks = cut_at(&stream, &cuts);
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(outcome(max, &chunks), outcome(max, &[&stream]));
    }

    #[test]
    fn parser_matches_the_reference(
        stream in stream(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let chunks = cut_at(&stream, &cuts);
        let chunks: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(outcome(EventStreamParser::DEFAULT_MAX, &chunks), reference(&stream));
    }
}
