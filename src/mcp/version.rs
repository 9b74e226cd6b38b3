//! Protocol revisions and the two eras of Streamable HTTP.
//!
//! Up to 2025-11-25 (the *session era*) a client opens a session with
//! `initialize` and names its revision in `MCP-Protocol-Version` on every
//! later request. From 2026-07-28 on (the *per-request era*) there is no
//! session: each request carries its revision in `_meta` and in the
//! header, and a server that does not speak it answers 400 with an
//! `UnsupportedProtocolVersionError` listing what it does speak, which is
//! how a client that speaks both finds the era of a server.

use serde_json::{Value, json};

use super::codes;
use super::message::Message;

/// The revisions a session may have negotiated, newest first: those whose
/// `MCP-Protocol-Version` header a session's requests may carry (the
/// TypeScript SDK's list).
pub const SESSION_ERA: [&str; 5] =
    ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05", "2024-10-07"];

/// The first revision without sessions.
pub const FIRST_PER_REQUEST: &str = "2026-07-28";

/// What a session's requests are taken to speak until it says otherwise
/// (the specification's default for a request without the header).
pub const DEFAULT: &str = "2025-03-26";

/// The revision from which streams start with a priming event (an id and
/// empty data) and a `retry` (SEP-1699).
const PRIMING_FROM: &str = "2025-11-25";

/// Whether `v` looks like a revision (`YYYY-MM-DD`); such strings order
/// by date.
fn is_revision(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// Whether a session's request may carry this `MCP-Protocol-Version`.
pub fn session_accepts(v: &str) -> bool {
    SESSION_ERA.contains(&v)
}

/// Whether `v` is a revision of the per-request era.
pub fn is_per_request(v: &str) -> bool {
    is_revision(v) && v >= FIRST_PER_REQUEST
}

/// Whether a stream of a session that negotiated `v` starts with the
/// priming event.
pub fn primes(v: &str) -> bool {
    is_revision(v) && v >= PRIMING_FROM
}

/// What a POST without `Mcp-Session-Id` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// `initialize`: a new session.
    Initialize,
    /// A request of the per-request era, declaring this revision.
    PerRequest(String),
    /// A session-era message without its session.
    NoSession,
}

/// Classifies a POST without a session, from its `MCP-Protocol-Version`
/// header and its message.
pub fn opening(header: Option<&str>, msg: &Message) -> Opening {
    if msg.is_initialize() {
        return Opening::Initialize;
    }
    let declared = msg.meta_protocol_version().or(header.filter(|h| is_per_request(h)));
    match declared {
        Some(v) => Opening::PerRequest(v.to_owned()),
        None => Opening::NoSession,
    }
}

/// The headers a per-request-era POST mirrors from its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mirrored<'a> {
    pub protocol_version: Option<&'a str>,
    pub method: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// 2026-07-28's server validation: `MCP-Protocol-Version`, `Mcp-Method`
/// and `Mcp-Name` present and equal to the body's values (a `Mcp-Name` in
/// the `=?base64?…?=` form decoded first), so that what a proxy routed on
/// is what the server runs. `Err`: why, for a `HeaderMismatch` error.
pub fn check_mirrored(h: Mirrored<'_>, msg: &Message) -> Result<(), String> {
    let body_version = msg.meta_protocol_version();
    match (h.protocol_version, body_version) {
        (Some(a), Some(b)) if a == b => {}
        (a, b) => {
            return Err(format!(
                "MCP-Protocol-Version header {a:?} does not match the body's _meta protocolVersion {b:?}"
            ));
        }
    }
    let Some(method) = msg.method() else { return Ok(()) };
    if h.method != Some(method) {
        return Err(format!(
            "Mcp-Method header {:?} does not match the body's method {method:?}",
            h.method
        ));
    }
    let field = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return Ok(()),
    };
    let want = msg.value.get("params").and_then(|p| p.get(field)).and_then(Value::as_str);
    let got = h.name.map(decode_sentinel);
    match (got, want) {
        (Some(Some(got)), Some(want)) if got == want => Ok(()),
        _ => Err(format!(
            "Mcp-Name header {:?} does not match the body's params.{field} {want:?}",
            h.name
        )),
    }
}

/// A header value, `=?base64?…?=` decoded; `None` if that form is broken.
fn decode_sentinel(v: &str) -> Option<String> {
    use base64::Engine;
    match v.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        None => Some(v.to_owned()),
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok()
        }
    }
}

/// 2026-07-28's `HeaderMismatch` answer (400).
pub fn header_mismatch(id: Option<Value>, why: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": { "code": codes::HEADER_MISMATCH, "message": format!("Header mismatch: {why}") },
    })
    .to_string()
}

/// The 400 answer to a request of a revision not served here:
/// 2026-07-28's `UnsupportedProtocolVersionError`, listing the session
/// revisions, which a client of both eras takes as "use `initialize`".
pub fn unsupported(id: Option<Value>, requested: &str) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(Value::Null),
        "error": {
            "code": codes::UNSUPPORTED_VERSION,
            "message": format!(
                "Unsupported protocol version {requested}: this bridge serves sessions (initialize); supported: {}",
                SESSION_ERA.join(", ")
            ),
            "data": { "supported": SESSION_ERA, "requested": requested },
        },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Message {
        Message::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn eras_and_revisions() {
        assert!(session_accepts("2025-11-25") && session_accepts("2025-03-26"));
        assert!(!session_accepts("2026-07-28") && !session_accepts("1900-01-01"));
        assert!(is_per_request("2026-07-28") && is_per_request("2027-01-01"));
        assert!(!is_per_request("2025-11-25") && !is_per_request("latest"));
        assert!(primes("2025-11-25") && !primes("2025-06-18") && !primes("junk"));
    }

    #[test]
    fn what_a_post_without_a_session_opens() {
        let init = msg(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#);
        assert_eq!(opening(None, &init), Opening::Initialize);
        assert_eq!(opening(Some("2026-07-28"), &init), Opening::Initialize);
        let list = msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(opening(None, &list), Opening::NoSession);
        assert_eq!(opening(Some("2025-11-25"), &list), Opening::NoSession);
        assert_eq!(opening(Some("2026-07-28"), &list), Opening::PerRequest("2026-07-28".into()));
        let meta = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        assert_eq!(opening(None, &meta), Opening::PerRequest("2026-07-28".into()));
    }

    #[test]
    fn mirrored_headers_must_match_the_body() {
        let call = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"héllo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let ok = Mirrored {
            protocol_version: Some("2026-07-28"),
            method: Some("tools/call"),
            name: Some("=?base64?aMOpbGxv?="),
        };
        assert_eq!(check_mirrored(ok, &call), Ok(()));
        for bad in [
            Mirrored { protocol_version: None, ..ok },
            Mirrored { protocol_version: Some("2027-01-01"), ..ok },
            Mirrored { method: None, ..ok },
            Mirrored { method: Some("tools/list"), ..ok },
            Mirrored { name: None, ..ok },
            Mirrored { name: Some("hello"), ..ok },
            Mirrored { name: Some("=?base64?!!?="), ..ok },
        ] {
            assert!(check_mirrored(bad, &call).is_err(), "{bad:?}");
        }
        let list = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        );
        let plain = Mirrored {
            protocol_version: Some("2026-07-28"),
            method: Some("tools/list"),
            name: None,
        };
        assert_eq!(check_mirrored(plain, &list), Ok(()));
        let v: Value = serde_json::from_str(&header_mismatch(Some(json!(1)), "x")).unwrap();
        assert_eq!((v["error"]["code"].as_i64(), v["id"].as_i64()), (Some(-32020), Some(1)));
    }

    #[test]
    fn the_unsupported_version_error_lists_the_session_revisions() {
        let v: Value = serde_json::from_str(&unsupported(Some(json!(4)), "2026-07-28")).unwrap();
        assert_eq!(v["id"], 4);
        assert_eq!(v["error"]["code"], -32022);
        assert_eq!(v["error"]["data"]["requested"], "2026-07-28");
        assert_eq!(v["error"]["data"]["supported"][0], "2025-11-25");
    }
}
