//! What a client connects to and how: URL, identity, headers, limits.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;

use super::ClientError;
use crate::reader::RetryPolicy;

/// Channel client (package:sse protocol) or plain SSE reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `?sseClientId=ID` on every request, messages POSTed, data JSON-decoded.
    Channel { client_id: String },
    /// Any SSE endpoint: the URL as given, no POSTs, data passed on as is.
    Raw,
}

/// Everything a [`ChannelClient`](super::ChannelClient) needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub url: Url,
    pub mode: Mode,
    /// Sent on every request to the URL's origin (`-H`).
    pub headers: HeaderMap,
    pub retry: RetryPolicy,
    /// POSTs in flight at once; the server re-orders them.
    pub in_flight: usize,
    /// Limit for connecting (until response headers) and for each POST.
    pub timeout: Duration,
    /// An open stream that delivers no bytes at all (no event, no comment or
    /// heartbeat) for this long is treated as lost and re-opened with
    /// `Last-Event-ID`: a server that died without closing the connection
    /// (power loss, a cut network, a NAT that dropped its state) is noticed.
    /// `None` (the default) waits, leaving dead peers to TCP keepalive; see
    /// [`SUGGESTED_IDLE_TIMEOUT`].
    pub idle_timeout: Option<Duration>,
    /// Messages accepted by `send` but not yet acknowledged.
    pub max_queued: usize,
    /// Bytes accepted by `send` but not yet acknowledged; also the largest message.
    pub max_queued_bytes: usize,
    /// Longest event-stream line and largest event the parser accepts.
    pub max_event_bytes: usize,
    /// Accept any server certificate (`-k`). Encryption stays, authentication
    /// goes: meant for test servers with throwaway certificates.
    pub insecure: bool,
    /// Trusted in addition to the built-in roots (`--cacert`), so a private
    /// CA or a self-signed server works without turning checks off.
    pub ca_certs: Vec<reqwest::Certificate>,
    /// Told of each message as the sender numbers it (`connect --record`).
    pub on_send: Option<SendHook>,
    /// Raw mode: the stream request's method and body (a POST-streaming
    /// API); the body is sent again on every reconnect.
    pub method: http::Method,
    pub body: Option<bytes::Bytes>,
    /// Sent as `Last-Event-ID` with the first GET, as after a reconnect.
    pub last_event_id: Option<String>,
    /// Send the `-H` headers to other hosts a redirect leads to as well.
    pub location_trusted: bool,
    /// Follow a redirect of a request with a body (a POST) to another
    /// origin, body included (`-L`); by default it is an error, since the
    /// server could send the body to any host, internal ones included.
    pub location: bool,
}

/// Called with a message's id and POST body (a JSON string) when the
/// sender takes it, before it is POSTed.
#[derive(Clone)]
pub struct SendHook(pub std::sync::Arc<SendFn>);

/// What a [`SendHook`] calls: message id and POST body.
pub type SendFn = dyn Fn(u64, &[u8]) + Send + Sync;

impl std::fmt::Debug for SendHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendHook")
    }
}

/// A good [`ClientConfig::idle_timeout`] against `ssechan serve`: three of
/// its 15 s heartbeats missed in a row. Not the default: package:sse's Dart
/// server sends no heartbeat, so a quiet channel would be re-opened every
/// time; TCP keepalive notices dead peers without it.
pub const SUGGESTED_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// Idle time before the OS probes a client connection (`SO_KEEPALIVE`); with
/// [`TCP_KEEPALIVE_INTERVAL`] and [`TCP_KEEPALIVE_RETRIES`] a dead peer is
/// noticed about a minute after the last traffic, even without an idle timeout.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Time between unanswered keepalive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the OS drops the connection.
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;

impl ClientConfig {
    /// Defaults for `url` in `mode`; the URL must be http or https.
    pub fn new(url: &str, mode: Mode) -> Result<Self, ClientError> {
        Ok(Self {
            url: parse_url(url)?,
            mode,
            headers: HeaderMap::new(),
            retry: RetryPolicy::default(),
            in_flight: 64,
            timeout: Duration::from_secs(10),
            idle_timeout: None,
            max_queued: 4096,
            max_queued_bytes: 32 << 20,
            max_event_bytes: 16 << 20,
            insecure: false,
            ca_certs: Vec::new(),
            on_send: None,
            method: http::Method::GET,
            body: None,
            last_event_id: None,
            location_trusted: false,
            location: false,
        })
    }

    /// The client id in channel mode.
    pub fn client_id(&self) -> Option<&str> {
        match &self.mode {
            Mode::Channel { client_id } => Some(client_id),
            Mode::Raw => None,
        }
    }
}

/// Parses an http(s) URL; other schemes cannot carry an event stream.
pub fn parse_url(url: &str) -> Result<Url, ClientError> {
    // `localhost:8080/sse` parses with the scheme "localhost", and
    // `127.0.0.1:8080/sse` not at all: both meant http://.
    let hint = || match Url::parse(&format!("http://{url}")) {
        Ok(u) if u.host().is_some() && !url.contains("://") => format!(" (did you mean {u}?)"),
        _ => String::new(),
    };
    let parsed =
        Url::parse(url).map_err(|e| ClientError::BadUrl(format!("{url:?}: {e}{}", hint())))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(ClientError::BadUrl(format!(
            "{url:?}: scheme {other:?} is not http or https{}",
            hint()
        ))),
    }
}

/// Parses `-H 'Name: value'` (curl syntax): the value is trimmed.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), ClientError> {
    let bad = |why: &str| ClientError::BadHeader(format!("{s:?}: {why} (expected 'Name: value')"));
    let (name, value) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad("bad header name"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad("bad header value"))?;
    Ok((name, value))
}

/// Parses every `-H` into one map; a repeated name adds a value.
pub fn parse_headers<S: AsRef<str>>(list: &[S]) -> Result<HeaderMap, ClientError> {
    let mut map = HeaderMap::new();
    for h in list {
        let (name, value) = parse_header(h.as_ref())?;
        map.append(name, value);
    }
    Ok(map)
}

/// Reads the certificates of a PEM file for [`ClientConfig::ca_certs`].
/// Each is checked here, not when the client starts, so a wrong file is
/// reported as such (e.g. a key file holds no certificate).
pub fn load_ca_certs(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let bad = |why: String| ClientError::BadCaCert(format!("{}: {why}", path.display()));
    let pem = read_ca_file(path)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(root_cause(&e)))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into()));
    }
    for (n, cert) in certs.iter().enumerate() {
        // Parsing happens when a client is built: build a bare one per
        // certificate to find the bad one now.
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert.clone())
            .build()
            .map_err(|e| bad(format!("certificate {}: {}", n + 1, root_cause(&e))))?;
    }
    Ok(certs)
}

/// The bytes of a `--cacert` file. A CA bundle is kilobytes; the bound
/// keeps a wrong path (a device, a huge file) from being read whole.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    let bad = |why: String| ClientError::BadCaCert(format!("{}: {why}", path.display()));
    const MAX: u64 = 16 << 20;
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut pem = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX + 1), &mut pem)
        .map_err(|e| bad(e.to_string()))?;
    if pem.len() as u64 > MAX {
        return Err(bad(format!("larger than {MAX} bytes, not a PEM certificate file")));
    }
    Ok(pem)
}

/// The innermost cause of an error: the part that says what went wrong.
pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(s) = inner.source() {
        inner = s;
    }
    inner.to_string()
}

/// The client id: `explicit` as given, else `KEY-<uuid>` for a debug key (as
/// package:sse's `debugKey`), else a random v4 UUID (the uuid crate draws it
/// from the OS CSPRNG, so ids cannot be guessed and hijacked).
pub fn client_id(explicit: Option<&str>, debug_key: Option<&str>) -> Result<String, ClientError> {
    match (explicit, debug_key) {
        (Some(""), _) => Err(ClientError::BadClientId("--client-id is empty".into())),
        (Some(id), _) => Ok(id.to_owned()),
        (None, Some(key)) => Ok(format!("{key}-{}", uuid::Uuid::new_v4())),
        (None, None) => Ok(uuid::Uuid::new_v4().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_like_curl() {
        let (n, v) = parse_header("Authorization:  Bearer x ").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("authorization", "Bearer x"));
        let (n, v) = parse_header("X-Empty:").unwrap();
        assert_eq!((n.as_str(), v.as_bytes()), ("x-empty", &b""[..]));
        let map = parse_headers(&["A: 1", "a: 2"]).unwrap();
        assert_eq!(map.get_all("a").iter().count(), 2);
        for bad in ["NoColon", ": value", "Bad Name: v", "X: a\nb", ""] {
            assert!(matches!(parse_header(bad), Err(ClientError::BadHeader(_))), "{bad:?}");
        }
    }

    #[test]
    fn urls_must_be_http() {
        assert!(parse_url("http://127.0.0.1:1/sse").is_ok());
        assert!(parse_url("https://example.com/sse?x=1").is_ok());
        for bad in ["localhost:8080/sse", "ftp://x/", "not a url", ""] {
            assert!(matches!(parse_url(bad), Err(ClientError::BadUrl(_))), "{bad:?}");
        }
        let why = parse_url("localhost:8080/sse").unwrap_err().to_string();
        assert!(why.ends_with("(did you mean http://localhost:8080/sse?)"), "{why}");
        let why = parse_url("127.0.0.1:8080/sse").unwrap_err().to_string();
        assert!(why.ends_with("(did you mean http://127.0.0.1:8080/sse?)"), "{why}");
        assert!(!parse_url("ftp://x/").unwrap_err().to_string().contains("did you mean"));
    }

    #[test]
    fn idle_timeout_defaults_per_mode() {
        let channel = ClientConfig::new("http://h/sse", Mode::Channel { client_id: "c".into() });
        assert_eq!(channel.unwrap().idle_timeout, None);
        assert_eq!(ClientConfig::new("http://h/sse", Mode::Raw).unwrap().idle_timeout, None);
    }

    #[test]
    fn client_ids() {
        assert_eq!(client_id(Some("me"), None).unwrap(), "me");
        assert!(client_id(Some(""), None).is_err());
        let a = client_id(None, None).unwrap();
        let b = client_id(None, None).unwrap();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 4);
        let d = client_id(None, Some("dbg")).unwrap();
        let rest = d.strip_prefix("dbg-").unwrap();
        assert_eq!(uuid::Uuid::parse_str(rest).unwrap().get_version_num(), 4);
    }
}
