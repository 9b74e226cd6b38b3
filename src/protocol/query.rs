//! The query string of channel requests: `sseClientId` and `messageId`.

use std::borrow::Cow;

use thiserror::Error;

use super::{CLIENT_ID_PARAM, MESSAGE_ID_PARAM};

/// Why a channel request's query was refused (HTTP 400).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QueryError {
    #[error("missing sseClientId query parameter")]
    MissingClientId,
    #[error("sseClientId is empty")]
    EmptyClientId,
    #[error("sseClientId is {len} bytes, over the limit of {max}")]
    ClientIdTooLong { len: usize, max: usize },
    #[error("sseClientId contains control characters or invisible ones (bidi, zero-width)")]
    ControlCharacters,
    #[error("messageId {0:?} is not a non-negative integer")]
    BadMessageId(String),
}

/// The parsed query of a channel request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelQuery {
    /// The percent-decoded client id, opaque otherwise.
    pub client_id: String,
    /// `messageId`, 0 when absent as package:sse does.
    pub message_id: u64,
}

impl ChannelQuery {
    /// Parses `query` (the part after `?`, without it). The first occurrence
    /// of each parameter wins.
    pub fn parse(query: Option<&str>, max_client_id_len: usize) -> Result<Self, QueryError> {
        let q = ChannelQueryRef::parse(query, max_client_id_len)?;
        Ok(Self { client_id: q.client_id.into_owned(), message_id: q.message_id })
    }
}

/// [`ChannelQuery`] borrowing its client id from the query unless it is
/// percent-encoded: a POST needs the id only while it is handled, so it
/// costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelQueryRef<'a> {
    pub client_id: Cow<'a, str>,
    pub message_id: u64,
}

impl<'a> ChannelQueryRef<'a> {
    /// See [`ChannelQuery::parse`].
    pub(crate) fn parse(
        query: Option<&'a str>,
        max_client_id_len: usize,
    ) -> Result<Self, QueryError> {
        let mut client_id = None;
        let mut message_id = None;
        for (k, v) in pairs(query.unwrap_or("")) {
            if k == CLIENT_ID_PARAM && client_id.is_none() {
                client_id = Some(v);
            } else if k == MESSAGE_ID_PARAM && message_id.is_none() {
                message_id = Some(v);
            }
        }
        let client_id = client_id.ok_or(QueryError::MissingClientId)?;
        if client_id.is_empty() {
            return Err(QueryError::EmptyClientId);
        }
        if client_id.len() > max_client_id_len {
            return Err(QueryError::ClientIdTooLong {
                len: client_id.len(),
                max: max_client_id_len,
            });
        }
        // They would reach logs, terminals and process environments, and
        // bidi overrides would show there an id other than the real one.
        let hidden = if client_id.is_ascii() {
            client_id.bytes().any(|b| b.is_ascii_control())
        } else {
            client_id.chars().any(crate::text::is_hidden_or_control)
        };
        if hidden {
            return Err(QueryError::ControlCharacters);
        }
        let message_id = match message_id {
            None => 0,
            Some(s) => parse_u64(&s).ok_or_else(|| QueryError::BadMessageId(s.into_owned()))?,
        };
        Ok(Self { client_id, message_id })
    }
}

/// The `application/x-www-form-urlencoded` pairs of `query`, as
/// `form_urlencoded::parse` yields them. Without `%` or `+` decoding
/// changes nothing, and splitting is all there is to do: ~15 times fewer
/// instructions than the general parser for package:sse's
/// `sseClientId=...&messageId=N`, which every POST carries.
fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    let plain = !query.bytes().any(|b| b == b'%' || b == b'+');
    let split = plain.then(|| {
        query.split('&').filter(|p| !p.is_empty()).map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (Cow::Borrowed(k), Cow::Borrowed(v))
        })
    });
    let general = (!plain).then(|| form_urlencoded::parse(query.as_bytes()));
    split.into_iter().flatten().chain(general.into_iter().flatten())
}

/// Digits only: `u64::from_str` would also take a leading `+`.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Builds `path?sseClientId=ID[&messageId=N]` with `id` percent-encoded.
pub fn channel_query(client_id: &str, message_id: Option<u64>) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    ser.append_pair(CLIENT_ID_PARAM, client_id);
    if let Some(n) = message_id {
        ser.append_pair(MESSAGE_ID_PARAM, itoa::Buffer::new().format(n));
    }
    ser.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let q = ChannelQuery::parse(Some("sseClientId=a%20b%2Fc&messageId=7"), 256).unwrap();
        assert_eq!(q, ChannelQuery { client_id: "a b/c".into(), message_id: 7 });
        let q = ChannelQuery::parse(Some("x=1&sseClientId=z"), 256).unwrap();
        assert_eq!(q.message_id, 0);
    }

    #[test]
    fn errors() {
        assert_eq!(ChannelQuery::parse(None, 256), Err(QueryError::MissingClientId));
        assert_eq!(ChannelQuery::parse(Some("sseClientId="), 256), Err(QueryError::EmptyClientId));
        assert_eq!(
            ChannelQuery::parse(Some("sseClientId=abcd"), 3),
            Err(QueryError::ClientIdTooLong { len: 4, max: 3 })
        );
        for bad in [
            "a%0d%0ab",
            "%1b[31m",
            "tab%09",
            "del%7f",
            "nel%c2%85",
            "rlo%e2%80%aegpj.exe",
            "lri%e2%81%a6x",
            "zwsp%e2%80%8b",
            "bom%ef%bb%bf",
        ] {
            let q = format!("sseClientId={bad}");
            assert_eq!(
                ChannelQuery::parse(Some(&q), 256),
                Err(QueryError::ControlCharacters),
                "{bad}"
            );
        }
        for bad in ["-1", "+1", "x", "", "99999999999999999999999"] {
            let q = format!("sseClientId=a&messageId={bad}");
            assert!(matches!(ChannelQuery::parse(Some(&q), 256), Err(QueryError::BadMessageId(_))));
        }
    }

    #[test]
    fn plain_queries_split_as_the_general_parser_does() {
        for q in [
            "",
            "&",
            "&&a=1&&",
            "a",
            "=",
            "a=",
            "=b",
            "a==b",
            "a=1&a=2&b",
            "sseClientId=c0&messageId=7",
            "x=y&sseClientId=\u{e9}t\u{e9}",
            "a=1;b=2",
            "a%20b=c+d",
            "a=%zz&+=+",
        ] {
            let general: Vec<_> = form_urlencoded::parse(q.as_bytes()).collect();
            assert_eq!(pairs(q).collect::<Vec<_>>(), general, "{q:?}");
        }
    }

    #[test]
    fn a_plain_client_id_is_borrowed_an_encoded_one_decoded() {
        let q = ChannelQueryRef::parse(Some("sseClientId=c0&messageId=12"), 256).unwrap();
        assert!(matches!(q.client_id, Cow::Borrowed("c0")));
        assert_eq!(q.message_id, 12);
        let q = ChannelQueryRef::parse(Some("sseClientId=a%20b"), 256).unwrap();
        assert!(matches!(q.client_id, Cow::Owned(ref id) if id == "a b"));
    }

    #[test]
    fn round_trip() {
        let q = channel_query("id with spaces&=", Some(3));
        let p = ChannelQuery::parse(Some(&q), 256).unwrap();
        assert_eq!((p.client_id.as_str(), p.message_id), ("id with spaces&=", 3));
    }
}
