//! Event ids that name their stream.
//!
//! Within a session every event id must be unique across its streams, and
//! a `Last-Event-ID` must lead back to the stream it came from (replay from
//! that stream only). So an id carries its stream's number in its high 32
//! bits and the event's number within the stream in the low 32: stream 0
//! (the session's `GET` stream) counts 1, 2, 3…; stream 5 counts from
//! 5·2³² + 1. The channel core numbers each stream's events from its first
//! id, and what it writes is a plain decimal `id:`.

/// The id of stream `stream`'s first event.
pub fn first_id(stream: u32) -> u64 {
    (u64::from(stream) << 32) | 1
}

/// The stream an event id belongs to.
pub fn stream_of(id: u64) -> u32 {
    (id >> 32) as u32
}

/// A `Last-Event-ID` as this server wrote it: the id and its stream;
/// `None` for anything else.
pub fn parse(text: &str) -> Option<(u64, u32)> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u64 = text.parse().ok()?;
    Some((id, stream_of(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_lead_back_to_their_stream() {
        assert_eq!(first_id(0), 1);
        assert_eq!(first_id(5), (5u64 << 32) + 1);
        for stream in [0, 1, 7, u32::MAX] {
            for seq in [1u64, 2, 1000, u64::from(u32::MAX)] {
                let id = (u64::from(stream) << 32) + seq;
                assert_eq!(parse(&id.to_string()), Some((id, stream)));
            }
        }
        assert_eq!(parse(" 42 "), Some((42, 0)));
        assert_eq!(parse(""), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("abc"), None);
        assert_eq!(parse("99999999999999999999999"), None);
    }
}
