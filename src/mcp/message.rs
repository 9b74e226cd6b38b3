//! JSON-RPC 2.0 messages as MCP carries them: one object per POST body or
//! per stdio line, classified as a request, a notification or a response.

use serde_json::Value;
use thiserror::Error;

/// A JSON-RPC id as its JSON text, so that `1` and `"1"` stay apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);

impl RequestId {
    /// The id of `v`, a string or a number (`null` too for a response:
    /// an error about a message that had none).
    fn of(v: &Value, null_ok: bool) -> Option<Self> {
        match v {
            Value::String(_) | Value::Number(_) => Some(Self(v.to_string())),
            Value::Null if null_ok => Some(Self(v.to_string())),
            _ => None,
        }
    }

    /// The id of string `s`.
    pub fn of_str(s: &str) -> Self {
        Self(Value::from(s).to_string())
    }

    /// The id of number `n`.
    pub fn of_number(n: u64) -> Self {
        Self(n.to_string())
    }

    /// The id as JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The id as a JSON value (to build a message that names it).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// A request's own names, kept while a shared process knows it by another.
#[derive(Debug, Clone, PartialEq)]
pub struct Renamed {
    id: Option<Value>,
    progress_token: Option<Value>,
    bridge: String,
}

/// What a message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Request { id: RequestId, method: String },
    Notification { method: String },
    Response { id: RequestId },
}

/// Why a body or a line is not a message this transport carries.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error(
        "a JSON array (a batch): batches were removed in 2025-06-18; send one message per POST"
    )]
    Batch,
    #[error("not a JSON-RPC 2.0 message: {0}")]
    NotJsonRpc(&'static str),
}

/// One parsed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: Kind,
    pub value: Value,
}

impl Message {
    /// Parses and classifies one JSON-RPC message.
    pub fn parse(bytes: &[u8]) -> Result<Message, MessageError> {
        let text = std::str::from_utf8(bytes).map_err(|_| MessageError::NotUtf8)?;
        let value: Value =
            serde_json::from_str(text).map_err(|e| MessageError::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Message, MessageError> {
        let obj = match &value {
            Value::Object(o) => o,
            Value::Array(_) => return Err(MessageError::Batch),
            _ => return Err(MessageError::NotJsonRpc("not an object")),
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(MessageError::NotJsonRpc("\"jsonrpc\" is not \"2.0\""));
        }
        let kind = match (obj.get("method"), obj.get("id")) {
            (Some(Value::String(m)), None) => Kind::Notification { method: m.clone() },
            (Some(Value::String(m)), Some(id)) => Kind::Request {
                id: RequestId::of(id, false).ok_or(MessageError::NotJsonRpc(
                    "a request's id must be a string or a number",
                ))?,
                method: m.clone(),
            },
            (Some(_), _) => return Err(MessageError::NotJsonRpc("\"method\" is not a string")),
            (None, Some(id)) if obj.contains_key("result") || obj.contains_key("error") => {
                Kind::Response {
                    id: RequestId::of(id, true).ok_or(MessageError::NotJsonRpc(
                        "a response's id must be a string, a number or null",
                    ))?,
                }
            }
            (None, _) => {
                return Err(MessageError::NotJsonRpc(
                    "neither a request, a notification nor a response",
                ));
            }
        };
        Ok(Message { kind, value })
    }

    /// The message as one line of JSON, as stdio carries it (a body may
    /// hold newlines between its tokens; the line never does).
    pub fn to_line(&self) -> String {
        self.value.to_string()
    }

    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request { method, .. } | Kind::Notification { method } => Some(method),
            Kind::Response { .. } => None,
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.kind, Kind::Request { .. })
    }

    pub fn is_initialize(&self) -> bool {
        matches!(&self.kind, Kind::Request { method, .. } if method == "initialize")
    }

    fn params(&self) -> Option<&Value> {
        self.value.get("params")
    }

    /// The progress token a request asks its progress to be reported
    /// under (`params._meta.progressToken`), or the one a
    /// `notifications/progress` reports under (`params.progressToken`),
    /// as JSON text.
    pub fn progress_token(&self) -> Option<String> {
        let params = self.params()?;
        let token = match &self.kind {
            Kind::Request { .. } => params.get("_meta")?.get("progressToken")?,
            Kind::Notification { method } if method == "notifications/progress" => {
                params.get("progressToken")?
            }
            _ => return None,
        };
        matches!(token, Value::String(_) | Value::Number(_)).then(|| token.to_string())
    }

    /// The request a `notifications/cancelled` cancels.
    pub fn cancelled_request(&self) -> Option<RequestId> {
        match &self.kind {
            Kind::Notification { method } if method == "notifications/cancelled" => {
                RequestId::of(self.params()?.get("requestId")?, false)
            }
            _ => None,
        }
    }

    /// `result.protocolVersion` (an InitializeResult's).
    pub fn result_protocol_version(&self) -> Option<&str> {
        self.value.get("result")?.get("protocolVersion")?.as_str()
    }

    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`: the
    /// version a request of the per-request-metadata era (2026-07-28 on)
    /// declares.
    pub fn meta_protocol_version(&self) -> Option<&str> {
        self.params()?.get("_meta")?.get("io.modelcontextprotocol/protocolVersion")?.as_str()
    }

    /// `params._meta["io.modelcontextprotocol/subscriptionId"]`: the
    /// `subscriptions/listen` request a notification belongs to.
    pub fn subscription_id(&self) -> Option<RequestId> {
        let id = self.params()?.get("_meta")?.get(SUBSCRIPTION_ID)?;
        RequestId::of(id, false)
    }

    /// Gives request `self` the id `bridge` (and its progress token, if
    /// any, the same), for a process that several clients share; returns
    /// what to put back in what the process sends for it.
    pub fn rename(&mut self, bridge: &str) -> Renamed {
        let mut renamed = Renamed { id: None, progress_token: None, bridge: bridge.to_owned() };
        if let Kind::Request { id, .. } = &mut self.kind {
            renamed.id = Some(id.to_value());
            *id = RequestId(Value::String(bridge.to_owned()).to_string());
            self.value["id"] = Value::String(bridge.to_owned());
        }
        let token = self
            .value
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(|m| m.get_mut("progressToken"));
        if let Some(token) = token {
            renamed.progress_token =
                Some(std::mem::replace(token, Value::String(bridge.to_owned())));
        }
        renamed
    }

    /// Puts the client's names back in a message the process sent for a
    /// renamed request: the response's id, a progress token, a
    /// subscription id.
    pub fn restore(&mut self, renamed: &Renamed) {
        let bridge = Value::String(renamed.bridge.clone());
        if let (Kind::Response { .. }, Some(id)) = (&self.kind, &renamed.id)
            && self.value.get("id") == Some(&bridge)
        {
            self.value["id"] = id.clone();
            self.kind = Kind::Response { id: RequestId(id.to_string()) };
        }
        let Some(params) = self.value.get_mut("params") else { return };
        if let (Some(t), Some(original)) =
            (params.get_mut("progressToken"), &renamed.progress_token)
            && *t == bridge
        {
            *t = original.clone();
        }
        let sub = params.get_mut("_meta").and_then(|m| m.get_mut(SUBSCRIPTION_ID));
        if let (Some(sub), Some(id)) = (sub, &renamed.id)
            && *sub == bridge
        {
            *sub = id.clone();
        }
    }

    /// `notifications/cancelled` for request `id`, as a client would send
    /// it: tells a server to stop work nobody can receive any more.
    pub fn cancel(id: &RequestId, reason: &str) -> String {
        serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": id.to_value(), "reason": reason },
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, MessageError> {
        Message::parse(s.as_bytes())
    }

    #[test]
    fn classification() {
        let m = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(
            m.kind,
            Kind::Request { id: RequestId("1".into()), method: "tools/list".into() }
        );
        let m = parse(r#"{"jsonrpc":"2.0","id":"1","method":"initialize","params":{}}"#).unwrap();
        assert!(m.is_initialize());
        assert_ne!(
            m.kind,
            parse(r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#).unwrap().kind
        );
        let m = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(m.kind, Kind::Notification { method: "notifications/initialized".into() });
        let m = parse(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#).unwrap();
        assert_eq!(m.kind, Kind::Response { id: RequestId("7".into()) });
        let m = parse(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"x"}}"#).unwrap();
        assert_eq!(m.kind, Kind::Response { id: RequestId("null".into()) });
    }

    #[test]
    fn what_is_refused() {
        assert_eq!(parse("[]"), Err(MessageError::Batch));
        assert!(matches!(parse("{"), Err(MessageError::NotJson(_))));
        assert_eq!(Message::parse(b"\xff"), Err(MessageError::NotUtf8));
        for bad in [
            r#""text""#,
            r#"{"id":1,"method":"x"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","method":3}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
        ] {
            assert!(matches!(parse(bad), Err(MessageError::NotJsonRpc(_))), "{bad}");
        }
    }

    #[test]
    fn a_body_over_several_lines_becomes_one_line() {
        let m = parse("{\n \"jsonrpc\": \"2.0\",\n \"method\": \"a\\nb\"\n}").unwrap();
        let line = m.to_line();
        assert!(!line.contains('\n'));
        assert_eq!(Message::parse(line.as_bytes()).unwrap(), m);
    }

    #[test]
    fn a_renamed_request_gets_its_names_back() {
        let mut call = parse(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p"}}}"#,
        )
        .unwrap();
        let renamed = call.rename("ssechan-3");
        assert_eq!(call.value["id"], "ssechan-3");
        assert_eq!(call.value["params"]["_meta"]["progressToken"], "ssechan-3");
        assert_eq!(Message::parse(call.to_line().as_bytes()).unwrap(), call);
        let mut answer = parse(r#"{"jsonrpc":"2.0","id":"ssechan-3","result":{}}"#).unwrap();
        answer.restore(&renamed);
        assert_eq!(answer.value["id"], 7);
        assert_eq!(answer.kind, Kind::Response { id: RequestId("7".into()) });
        let mut progress = parse(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"ssechan-3","progress":1}}"#,
        )
        .unwrap();
        progress.restore(&renamed);
        assert_eq!(progress.value["params"]["progressToken"], "p");
        let mut sub = parse(
            r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":"ssechan-3"}}}"#,
        )
        .unwrap();
        assert_eq!(sub.subscription_id(), Some(RequestId("\"ssechan-3\"".into())));
        sub.restore(&renamed);
        assert_eq!(sub.value["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 7);
        // Another request's messages are left alone.
        let mut other = parse(r#"{"jsonrpc":"2.0","id":"ssechan-4","result":{}}"#).unwrap();
        other.restore(&renamed);
        assert_eq!(other.value["id"], "ssechan-4");
    }

    #[test]
    fn metadata() {
        let call = parse(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p1"}}}"#,
        )
        .unwrap();
        assert_eq!(call.progress_token().as_deref(), Some("\"p1\""));
        let progress = parse(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p1","progress":1}}"#,
        )
        .unwrap();
        assert_eq!(progress.progress_token(), call.progress_token());
        let numeric = parse(
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1}}"#,
        )
        .unwrap();
        assert_eq!(numeric.progress_token().as_deref(), Some("1"));
        let cancel = parse(
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#,
        )
        .unwrap();
        assert_eq!(cancel.cancelled_request(), Some(RequestId("3".into())));
        let made = parse(&Message::cancel(&RequestId("\"a\"".into()), "gone")).unwrap();
        assert_eq!(made.cancelled_request(), Some(RequestId("\"a\"".into())));
        let init =
            parse(r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25"}}"#).unwrap();
        assert_eq!(init.result_protocol_version(), Some("2025-11-25"));
        let modern = parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        assert_eq!(modern.meta_protocol_version(), Some("2026-07-28"));
    }
}
