//! A client's side of Streamable HTTP as plain values: which revisions it
//! speaks, how it tells a server's era (2026-07-28's Backward
//! Compatibility), the per-request metadata of that era, and the
//! headers each request carries. `crate::client::mcp` does the I/O.

use base64::Engine as _;
use serde_json::{Value, json};

use super::codes;
use super::message::{Kind, Message};
use super::version::FIRST_PER_REQUEST;

/// The session-era revisions a client may negotiate, newest first: those
/// of Streamable HTTP (2024-11-05 used the older HTTP+SSE transport).
pub const SESSION_REVISIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The per-request revision this client speaks.
pub const PER_REQUEST_REVISION: &str = FIRST_PER_REQUEST;

/// What the era probe (a `server/discover` of the per-request era, sent
/// first) tells about a server.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// It answered: a server of the per-request era. `result` is its
    /// `DiscoverResult`.
    PerRequest { result: Value },
    /// A per-request-era error naming the revisions it serves, none of
    /// which is per-request: a session-era server that knows the new era
    /// (a bridge such as `ssechan serve --mcp`); initialize with the best
    /// of `supported`.
    Initialize { supported: Vec<String> },
    /// Anything else (an empty or foreign body, 404, 405): a server of
    /// the session era; initialize, as the specification says.
    Legacy { seen: String },
}

/// The `server/discover` request of the probe.
pub fn discover_request(id: &str, client: &ClientInfo) -> Message {
    let msg = json!({ "jsonrpc": "2.0", "id": id, "method": "server/discover", "params": {} });
    per_request(&from(msg), client)
}

/// Judges the probe's answer: its HTTP status and the JSON-RPC message of
/// its body, if it had one.
pub fn judge_probe(status: u16, id: &str, answer: Option<&Message>) -> Probe {
    let legacy = |seen: String| Probe::Legacy { seen };
    let Some(answer) = answer else {
        return legacy(format!("{status} without a JSON-RPC answer"));
    };
    let ours = matches!(&answer.kind, Kind::Response { id: got } if got.to_value() == json!(id));
    if status == 200 && ours {
        let result = answer.value.get("result");
        let modern = result
            .and_then(|r| r.get("supportedVersions"))
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(PER_REQUEST_REVISION)));
        if let (true, Some(result)) = (modern, result) {
            return Probe::PerRequest { result: result.clone() };
        }
        return legacy("200 with an answer that is no DiscoverResult".into());
    }
    let error = answer.value.get("error");
    if status == 400
        && error.and_then(|e| e.get("code")).and_then(Value::as_i64)
            == Some(codes::UNSUPPORTED_VERSION)
    {
        let supported: Vec<String> = error
            .and_then(|e| e.get("data"))
            .and_then(|d| d.get("supported"))
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        if !supported.is_empty() && !supported.iter().any(|v| v == PER_REQUEST_REVISION) {
            return Probe::Initialize { supported };
        }
    }
    let code = error.and_then(|e| e.get("code")).map_or("no error code".into(), Value::to_string);
    legacy(format!("{status} ({code})"))
}

/// The revision to offer in `initialize`: `wanted`, or the newest we speak
/// that the server listed (all of ours when it listed none).
pub fn offer(wanted: Option<&str>, supported: &[String]) -> Option<&'static str> {
    SESSION_REVISIONS
        .iter()
        .copied()
        .filter(|v| wanted.is_none_or(|w| w == *v))
        .find(|v| supported.is_empty() || supported.iter().any(|s| s == v))
}

/// Who the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub name: String,
    pub version: String,
}

impl ClientInfo {
    fn value(&self) -> Value {
        json!({ "name": self.name, "version": self.version })
    }
}

/// The `initialize` request offering revision `version`.
pub fn initialize_request(id: &str, version: &str, client: &ClientInfo) -> Message {
    from(json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": client.value(),
        },
    }))
}

/// `notifications/initialized`.
pub fn initialized() -> Message {
    from(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
}

/// `msg` as a request of the per-request era: its revision, the client's
/// identity and capabilities in `params._meta`.
pub fn per_request(msg: &Message, client: &ClientInfo) -> Message {
    let mut value = msg.value.clone();
    if msg.method().is_some() {
        let params = value.as_object_mut().map(|o| o.entry("params").or_insert_with(|| json!({})));
        if let Some(Value::Object(params)) = params {
            let meta = params.entry("_meta").or_insert_with(|| json!({}));
            if let Value::Object(meta) = meta {
                meta.insert(
                    "io.modelcontextprotocol/protocolVersion".into(),
                    json!(PER_REQUEST_REVISION),
                );
                meta.insert("io.modelcontextprotocol/clientInfo".into(), client.value());
                meta.insert("io.modelcontextprotocol/clientCapabilities".into(), json!({}));
            }
        }
    }
    Message { kind: msg.kind.clone(), value }
}

/// The headers of the per-request era that mirror the body: `Mcp-Method`
/// and, for the methods that name something, `Mcp-Name`.
pub fn mirrored_headers(msg: &Message) -> Vec<(&'static str, String)> {
    let Some(method) = msg.method() else { return Vec::new() };
    let mut out = vec![("mcp-method", header_value(method))];
    let source = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return out,
    };
    if let Some(name) = msg.value.get("params").and_then(|p| p.get(source)).and_then(Value::as_str)
    {
        out.push(("mcp-name", header_value(name)));
    }
    out
}

/// A value as a header: as it is when it is plain visible ASCII (spaces
/// inside), else in the Base64 sentinel form `=?base64?…?=`.
pub fn header_value(v: &str) -> String {
    let visible = v.bytes().all(|b| b == b' ' || (0x21..=0x7e).contains(&b));
    let padded = v.starts_with(' ') || v.ends_with(' ');
    let sentinel = v.starts_with("=?base64?") && v.ends_with("?=");
    let plain = !v.is_empty() && visible && !padded && !sentinel;
    if plain {
        v.to_owned()
    } else {
        format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(v))
    }
}

/// The server as `initialize` or `server/discover` described it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
    /// The negotiated revision (session era) or the one used (per-request).
    pub protocol_version: String,
    pub capabilities: Value,
    pub instructions: Option<String>,
}

impl ServerInfo {
    /// From an `InitializeResult`.
    pub fn of_initialize(result: &Value) -> Option<ServerInfo> {
        let info = result.get("serverInfo");
        Some(ServerInfo {
            name: text(info.and_then(|i| i.get("name"))),
            version: text(info.and_then(|i| i.get("version"))),
            protocol_version: result.get("protocolVersion")?.as_str()?.to_owned(),
            capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
            instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// From a `DiscoverResult`.
    pub fn of_discover(result: &Value) -> ServerInfo {
        let info = result.get("_meta").and_then(|m| m.get("io.modelcontextprotocol/serverInfo"));
        ServerInfo {
            name: text(info.and_then(|i| i.get("name"))),
            version: text(info.and_then(|i| i.get("version"))),
            protocol_version: PER_REQUEST_REVISION.into(),
            capabilities: result.get("capabilities").cloned().unwrap_or(json!({})),
            instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
        }
    }

    /// The capabilities in a few words: `tools (listChanged), resources
    /// (subscribe, listChanged), prompts, logging`.
    pub fn capability_list(&self) -> String {
        let Some(caps) = self.capabilities.as_object() else { return "none".into() };
        let parts: Vec<String> = caps
            .iter()
            .map(|(name, v)| {
                let flags: Vec<&str> = v
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(_, f)| f.as_bool() == Some(true))
                            .map(|(k, _)| k.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                if flags.is_empty() {
                    name.clone()
                } else {
                    format!("{name} ({})", flags.join(", "))
                }
            })
            .collect();
        if parts.is_empty() { "none".into() } else { parts.join(", ") }
    }
}

fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("?").to_owned()
}

/// A message this module builds (always valid).
fn from(value: Value) -> Message {
    Message::from_value(value).unwrap_or_else(|e| unreachable!("a message of ours: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Message {
        Message::parse(s.as_bytes()).unwrap()
    }

    fn client() -> ClientInfo {
        ClientInfo { name: "ssechan".into(), version: "1".into() }
    }

    #[test]
    fn the_probe_tells_the_era() {
        let ok = msg(
            r#"{"jsonrpc":"2.0","id":"p","result":{"supportedVersions":["2026-07-28"],"capabilities":{}}}"#,
        );
        assert!(matches!(judge_probe(200, "p", Some(&ok)), Probe::PerRequest { .. }));
        // Someone else's answer, or a result that is no DiscoverResult.
        assert!(matches!(judge_probe(200, "q", Some(&ok)), Probe::Legacy { .. }));
        let empty = msg(r#"{"jsonrpc":"2.0","id":"p","result":{}}"#);
        assert!(matches!(judge_probe(200, "p", Some(&empty)), Probe::Legacy { .. }));
        // ssechan serve --mcp: the session revisions, so initialize.
        let bridge = Message::parse(
            crate::mcp::version::unsupported(Some(json!("p")), "2026-07-28").as_bytes(),
        )
        .unwrap();
        assert_eq!(
            judge_probe(400, "p", Some(&bridge)),
            Probe::Initialize {
                supported: crate::mcp::version::SESSION_ERA.iter().map(|s| s.to_string()).collect()
            }
        );
        // A modern server that does not like something else: not legacy.
        let modern = msg(
            r#"{"jsonrpc":"2.0","id":"p","error":{"code":-32022,"message":"x","data":{"supported":["2026-07-28"]}}}"#,
        );
        assert!(matches!(judge_probe(400, "p", Some(&modern)), Probe::Legacy { .. }));
        // server-everything: 400 with its own error; a plain 404.
        let sdk =
            msg(r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request"},"id":null}"#);
        assert!(matches!(judge_probe(400, "p", Some(&sdk)), Probe::Legacy { .. }));
        assert!(matches!(judge_probe(404, "p", None), Probe::Legacy { .. }));
    }

    #[test]
    fn the_offer_is_the_newest_both_speak() {
        assert_eq!(offer(None, &[]), Some("2025-11-25"));
        let old = vec!["2025-06-18".to_string(), "2024-11-05".to_string()];
        assert_eq!(offer(None, &old), Some("2025-06-18"));
        assert_eq!(offer(Some("2025-03-26"), &[]), Some("2025-03-26"));
        assert_eq!(offer(Some("2025-03-26"), &old), None);
        assert_eq!(offer(Some("1999-01-01"), &[]), None);
    }

    #[test]
    fn per_request_metadata_and_headers() {
        let call = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather"}}"#,
        );
        let m = per_request(&call, &client());
        let meta = &m.value["params"]["_meta"];
        assert_eq!(meta["io.modelcontextprotocol/protocolVersion"], "2026-07-28");
        assert_eq!(meta["io.modelcontextprotocol/clientInfo"]["name"], "ssechan");
        assert_eq!(m.meta_protocol_version(), Some("2026-07-28"));
        assert_eq!(
            mirrored_headers(&m),
            [("mcp-method", "tools/call".to_string()), ("mcp-name", "get_weather".to_string())]
        );
        let read = msg(
            r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a b"}}"#,
        );
        assert_eq!(mirrored_headers(&read)[1].1, "file:///a b");
        let list =
            per_request(&msg(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#), &client());
        assert_eq!(
            list.value["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(mirrored_headers(&list).len(), 1);
        let d = discover_request("d", &client());
        assert_eq!(d.method(), Some("server/discover"));
        assert_eq!(d.meta_protocol_version(), Some("2026-07-28"));
    }

    #[test]
    fn header_values_unsafe_as_they_are_are_base64() {
        assert_eq!(header_value("us-west1"), "us-west1");
        assert_eq!(header_value("Hello, 世界"), "=?base64?SGVsbG8sIOS4lueVjA==?=");
        assert_eq!(header_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        assert_eq!(header_value("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(header_value("=?base64?literal?="), "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=");
    }

    #[test]
    fn server_info_and_capabilities() {
        let r = json!({
            "protocolVersion": "2025-11-25",
            "serverInfo": { "name": "everything", "version": "2.0.0" },
            "capabilities": { "tools": { "listChanged": true }, "logging": {}, "resources": { "subscribe": true, "listChanged": true } },
        });
        let info = ServerInfo::of_initialize(&r).unwrap();
        assert_eq!((info.name.as_str(), info.version.as_str()), ("everything", "2.0.0"));
        assert_eq!(
            info.capability_list(),
            "tools (listChanged), logging, resources (subscribe, listChanged)"
        );
        assert!(ServerInfo::of_initialize(&json!({})).is_none());
        let d = ServerInfo::of_discover(
            &json!({ "capabilities": {}, "_meta": { "io.modelcontextprotocol/serverInfo": { "name": "m", "version": "1" } } }),
        );
        assert_eq!(
            (d.name.as_str(), d.protocol_version.as_str(), d.capability_list().as_str()),
            ("m", "2026-07-28", "none")
        );
    }
}
