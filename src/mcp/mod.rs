//! MCP's Streamable HTTP transport as plain values, without I/O: what a
//! JSON-RPC message is ([`message`]), which revision of the protocol a
//! request speaks ([`version`]), event ids that name their stream
//! ([`event_id`]), which stream each message of a session's server
//! belongs on ([`route`]), and the answered streams kept for a late
//! resume ([`answered`]). [`crate::server`] maps them onto its channels
//! (docs/mcp.md: "How ssechan maps MCP onto its channels").

pub mod answered;
pub mod client;
pub mod event_id;
pub mod message;
pub mod route;
pub mod version;

/// The data of a priming event (SEP-1699): an empty `data` field, which
/// dispatches nothing but gives the client an id to resume from (the `id:`
/// line is the channel's).
pub const PRIMING: &[u8] = b"data: \n\n";

/// One JSON-RPC message (one line of JSON) as the tail of an SSE event.
pub fn encode_event(json: &str) -> bytes::Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
    bytes::Bytes::from(out)
}

/// What a POST's answer may be, from its `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// `text/event-stream`: the response and what relates to it, resumable.
    Stream,
    /// `application/json` only: the response alone, as one JSON object.
    Json,
}

/// The answer format an `Accept` header allows: a stream when it lists
/// `text/event-stream` (or a wildcard that covers it, or no header at
/// all), JSON when it lists only `application/json`; `None`: neither.
pub fn answer_format(accept: Option<&str>) -> Option<AnswerFormat> {
    let Some(accept) = accept else { return Some(AnswerFormat::Stream) };
    let media = |m: &str| {
        accept.split(',').any(|part| {
            let t = part.split(';').next().unwrap_or("").trim();
            t.eq_ignore_ascii_case(m)
        })
    };
    if media("text/event-stream") || media("*/*") || media("text/*") {
        Some(AnswerFormat::Stream)
    } else if media("application/json") || media("application/*") {
        Some(AnswerFormat::Json)
    } else {
        None
    }
}

/// Whether `accept` takes an event stream (a `GET`).
pub fn accepts_stream(accept: Option<&str>) -> bool {
    answer_format(accept) == Some(AnswerFormat::Stream)
}

/// Whether a `Content-Type` is JSON. A browser can POST `text/plain`
/// across origins without asking first; requiring JSON makes it ask (a
/// CORS preflight), which the Origin policy then answers.
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `id` may be a session id: visible ASCII (0x21 to 0x7E), as the
/// specification requires, and not longer than `max`.
pub fn valid_session_id(id: &str, max: usize) -> bool {
    !id.is_empty() && id.len() <= max && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The JSON-RPC error object an HTTP refusal carries (`id` null: it
/// answers no request in particular).
pub fn error_body(code: i64, message: &str, data: Option<serde_json::Value>) -> String {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    serde_json::json!({ "jsonrpc": "2.0", "error": error, "id": null }).to_string()
}

/// JSON-RPC error codes used in refusals.
pub mod codes {
    /// Not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a JSON-RPC message the transport takes.
    pub const INVALID_REQUEST: i64 = -32600;
    /// A transport-level refusal (what the SDKs use).
    pub const SERVER_ERROR: i64 = -32000;
    /// The session is unknown or over (the SDKs' code).
    pub const SESSION_NOT_FOUND: i64 = -32001;
    /// 2026-07-28's UnsupportedProtocolVersionError.
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// 2026-07-28's HeaderMismatch: mirrored headers differ from the body.
    pub const HEADER_MISMATCH: i64 = -32020;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_decides_the_answer() {
        use AnswerFormat::*;
        assert_eq!(answer_format(Some("application/json, text/event-stream")), Some(Stream));
        assert_eq!(answer_format(Some("text/event-stream; q=0.5")), Some(Stream));
        assert_eq!(answer_format(Some("*/*")), Some(Stream));
        assert_eq!(answer_format(None), Some(Stream));
        assert_eq!(answer_format(Some("application/json")), Some(Json));
        assert_eq!(answer_format(Some("Application/JSON;charset=utf-8")), Some(Json));
        assert_eq!(answer_format(Some("text/html")), None);
        assert_eq!(answer_format(Some("")), None);
        assert!(accepts_stream(Some("text/event-stream")));
        assert!(!accepts_stream(Some("application/json")));
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(is_json_content_type(Some("application/json")));
        assert!(is_json_content_type(Some("application/json; charset=utf-8")));
        assert!(!is_json_content_type(Some("text/plain;charset=UTF-8")));
        assert!(!is_json_content_type(None));
    }

    #[test]
    fn session_ids_are_visible_ascii() {
        assert!(valid_session_id("3f2a-b", 64));
        assert!(!valid_session_id("", 64));
        assert!(!valid_session_id("a b", 64));
        assert!(!valid_session_id("é", 64));
        assert!(!valid_session_id(&"a".repeat(65), 64));
    }

    #[test]
    fn refusals_are_json_rpc_errors_without_id() {
        let v: serde_json::Value =
            serde_json::from_str(&error_body(-32001, "Session not found", None)).unwrap();
        assert_eq!(v["error"]["code"], -32001);
        assert!(v["id"].is_null());
        assert_eq!(v["jsonrpc"], "2.0");
    }
}
