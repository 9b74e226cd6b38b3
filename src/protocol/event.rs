//! Encoding of server→client events and of client→server message bodies.
//!
//! A message is always one `data:` line because JSON escapes newlines; the
//! per-connection `id:` line is written separately so that one encoded
//! payload can be shared by every connection of a broadcast.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// `event: control` + `data: close`: the package:sse client stops for good.
pub const CONTROL_CLOSE: &[u8] = b"event: control\ndata: close\n\n";

/// A comment event that keeps proxies from closing an idle stream.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

/// The `retry:` field sent once at stream start. A lone field and a blank
/// line dispatch nothing, so plain EventSource clients see no event.
pub fn retry_event(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// Encodes `message` as the shareable tail of a message event:
/// `data: <JSON string>\n\n`.
pub fn encode_data(message: &str) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 10);
    out.extend_from_slice(b"data: ");
    write_json_string(&mut out, message);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Appends `id: N\n` to `buf`.
pub fn put_id_line(buf: &mut BytesMut, id: u64) {
    let mut digits = itoa::Buffer::new();
    buf.put_slice(b"id: ");
    buf.put_slice(digits.format(id).as_bytes());
    buf.put_u8(b'\n');
}

/// Upper bound of the bytes [`put_id_line`] writes.
pub const ID_LINE_MAX: usize = 4 + 20 + 1;

/// The `id: N` lines of consecutive ids, each made from the one before by
/// adding one to its digits: a batch of events is not formatted id by id.
pub struct IdLines {
    id: u64,
    line: [u8; ID_LINE_MAX],
    len: usize,
}

impl IdLines {
    pub fn starting_at(id: u64) -> Self {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(id).as_bytes();
        let mut line = [0; ID_LINE_MAX];
        line[..4].copy_from_slice(b"id: ");
        line[4..4 + digits.len()].copy_from_slice(digits);
        line[4 + digits.len()] = b'\n';
        Self { id, line, len: digits.len() + 5 }
    }

    /// The current id's line.
    pub fn line(&self) -> &[u8] {
        &self.line[..self.len]
    }

    /// On to the next id (`u64::MAX` stays: no stream gets that far).
    pub fn advance(&mut self) {
        if self.id == u64::MAX {
            return;
        }
        self.id += 1;
        for i in (4..self.len - 1).rev() {
            if self.line[i] < b'9' {
                self.line[i] += 1;
                return;
            }
            self.line[i] = b'0';
        }
        // All nines: one digit more, a 1 and zeros.
        self.line[4] = b'1';
        self.line[self.len - 1] = b'0';
        self.line[self.len] = b'\n';
        self.len += 1;
    }
}

/// The bytes [`put_id_line`] writes for `id`.
pub fn id_line_len(id: u64) -> usize {
    4 + id.checked_ilog10().map_or(1, |d| d as usize + 1) + 1
}

/// The bytes [`put_id_line`] writes for ids `first..first + count`.
pub fn id_lines_len(first: u64, count: u64) -> usize {
    // Digit by digit count: the ids below each power of ten.
    let (mut total, mut id, end) = (0u64, first, first.saturating_add(count));
    while id < end {
        let digits = id.checked_ilog10().map_or(1, |d| d + 1);
        let next_power = 10u64.checked_pow(digits).unwrap_or(u64::MAX).min(end);
        total += (next_power - id) * (5 + u64::from(digits));
        id = next_power;
    }
    total as usize
}

/// Encodes a client→server message as the POST body: one JSON string.
pub fn encode_message_body(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 2);
    write_json_string(&mut out, message);
    out
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail: serde_json only errors on I/O
    // failures and on non-string map keys.
    serde_json::to_writer(out, s).expect("encoding a str into a Vec cannot fail");
}

/// Why a message body (POST body, or the data of a message event) was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BodyError {
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not a string (expected a JSON-encoded string such as \"hello\")")]
    NotString,
}

/// Decodes one JSON-encoded string, as a POST body or an event's data.
pub fn decode_message_body(body: &[u8]) -> Result<String, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    // The commonest case, a string with nothing escaped in it, is what is
    // between its quotes: no parser (~10 times fewer instructions).
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
        && !inner.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
    {
        return Ok(inner.to_owned());
    }
    // Then without building a `Value`; the slow path only words the error.
    if let Ok(s) = serde_json::from_str::<String>(text) {
        return Ok(s);
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(_) => Err(BodyError::NotString),
        Err(e) => Err(BodyError::NotJson(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_one_line_json() {
        assert_eq!(&encode_data("a\nb\"c")[..], b"data: \"a\\nb\\\"c\"\n\n");
        assert_eq!(&encode_data("")[..], b"data: \"\"\n\n");
    }

    #[test]
    fn unescaped_strings_decode_as_the_json_parser_does() {
        for body in [
            "\"\"",
            "\"m12\"",
            "\"h\u{e9}llo \u{1f600}\"",
            "\"a\\nb\"",
            "\"a\\\"b\"",
            "\"tab\there\"",
            "\"",
            "\"a\"b\"",
            " \"padded\" ",
            "\"\u{7f}\"",
            "12",
        ] {
            let json = serde_json::from_str::<String>(body).ok();
            assert_eq!(decode_message_body(body.as_bytes()).ok(), json, "{body:?}");
        }
    }

    #[test]
    fn id_line() {
        let mut b = BytesMut::new();
        put_id_line(&mut b, 0);
        put_id_line(&mut b, u64::MAX);
        assert_eq!(&b[..], b"id: 0\nid: 18446744073709551615\n");
        assert!(b.len() - 6 <= ID_LINE_MAX);
    }

    #[test]
    fn id_lines_count_up_as_put_id_line_writes_them() {
        for first in [0, 1, 8, 95, 998, 99_990, u64::MAX - 3] {
            let mut lines = IdLines::starting_at(first);
            for id in first..first.saturating_add(20) {
                let mut b = BytesMut::new();
                put_id_line(&mut b, id);
                assert_eq!(lines.line(), &b[..], "{id}");
                lines.advance();
            }
        }
        let mut last = IdLines::starting_at(u64::MAX);
        last.advance();
        assert_eq!(last.line(), b"id: 18446744073709551615\n");
    }

    #[test]
    fn id_line_lengths_are_exact() {
        let written = |ids: std::ops::Range<u64>| {
            let mut b = BytesMut::new();
            ids.for_each(|id| put_id_line(&mut b, id));
            b.len()
        };
        for id in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX / 2, u64::MAX] {
            let mut b = BytesMut::new();
            put_id_line(&mut b, id);
            assert_eq!(id_line_len(id), b.len(), "{id}");
        }
        for (first, count) in [(0, 0), (0, 1), (1, 9), (1, 10), (5, 200), (95, 1010), (999_990, 20)]
        {
            assert_eq!(
                id_lines_len(first, count),
                written(first..first + count),
                "{first}+{count}"
            );
        }
        assert_eq!(id_lines_len(u64::MAX - 1, 1), 25);
    }

    #[test]
    fn body_round_trip() {
        for s in ["", "hello", "line1\nline2", "ünï \u{2028} 😀", "\0"] {
            assert_eq!(decode_message_body(&encode_message_body(s)).unwrap(), s);
        }
    }

    #[test]
    fn body_errors() {
        assert_eq!(decode_message_body(b"\xff"), Err(BodyError::NotUtf8));
        assert!(matches!(decode_message_body(b"hello"), Err(BodyError::NotJson(_))));
        assert!(matches!(decode_message_body(b"\"open"), Err(BodyError::NotJson(_))));
        assert_eq!(decode_message_body(b"42"), Err(BodyError::NotString));
        assert_eq!(decode_message_body(b"[\"a\"]"), Err(BodyError::NotString));
        assert_eq!(decode_message_body(b" \"x\" ").unwrap(), "x");
    }
}
