//! The target and its HTTP/1.1 connections: one for a client's event stream,
//! one keep-alive connection for its POSTs, both straight over a
//! `TcpStream`, or TLS over it for `https://` (no pool: each client owns
//! its sockets).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::client::driver::{Chunks, Driver, DriverConfig, OpenError};
use crate::client::early::EarlyAnswer;
use crate::protocol::query::channel_query;
use crate::reader::{Refusal, check_response};

pub type Io = TokioIo<Stream>;
/// The connection that carries one event stream.
/// (An empty `Full` body is no body: a GET goes out without one.)
pub type StreamConn = http1::Connection<Io, Full<Bytes>>;
/// The keep-alive connection that carries a client's POSTs; it reads an
/// answer given before the body was written (see `client::early`).
pub type PostConn = http1::Connection<TokioIo<EarlyAnswer<Stream>>, Full<Bytes>>;
pub type PostSender = http1::SendRequest<Full<Bytes>>;

/// Why a connection or a stream could not be opened.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("connect to {addr}: {source}")]
    Tcp { addr: SocketAddr, source: std::io::Error },
    /// The handshake failed: said for people (see [`super::tls::describe`]).
    #[error("{0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// Not an event stream (the reader's verdict), or 204: stop.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl ConnectError {
    /// An answer (or a handshake) that trying again will not change: not
    /// an event stream, 204, a status other than the ones that say "later"
    /// (408, 429, 502, 503, 504), or a certificate that is not trusted.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectError::Refused(Refusal::Status(s)) => !retry_later(*s),
            ConnectError::Refused(_) | ConnectError::Tls(_) => true,
            _ => false,
        }
    }
}

/// Statuses that say "not now": the same request may succeed later.
pub fn retry_later(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 502..=504)
}

/// Why the command line's URL or headers cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("bad URL {0:?}: {1}")]
    Url(String, String),
    #[error("{0}")]
    Header(String),
    /// The URL is no http(s) URL (`connect`'s words).
    #[error("{0}")]
    Scheme(String),
}

/// Where the bench sends its requests.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `https://`.
    pub tls: bool,
    /// The `Host` header value.
    host_header: HeaderValue,
    /// The path and any query of the URL.
    path_and_query: String,
    /// `path?query&` or `path?`, ready for the channel query.
    channel_base: String,
    headers: HeaderMap,
}

impl Target {
    /// Parses an `http://` or `https://` URL and `Name: value` headers.
    pub fn parse(url: &str, headers: &[String]) -> Result<Self, TargetError> {
        // The same words as `connect`, with its hint for a missing scheme.
        crate::client::parse_url(url).map_err(|e| TargetError::Scheme(e.to_string()))?;
        let bad = |why: &str| TargetError::Url(url.to_string(), why.to_string());
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("expected http(s)://HOST[:PORT]/PATH")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| bad("no host"))?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
        let host_header = HeaderValue::from_str(authority).map_err(|_| bad("bad host"))?;
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let channel_base = match uri.query() {
            Some(q) if !q.is_empty() => format!("{}?{q}&", uri.path()),
            _ => format!("{}?", uri.path()),
        };
        let map = crate::client::config::parse_headers(headers)
            .map_err(|e| TargetError::Header(e.to_string()))?;
        Ok(Self {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            tls,
            host_header,
            path_and_query,
            channel_base,
            headers: map,
        })
    }

    /// The stream URI of channel client `id`, or of the raw URL.
    pub fn stream_uri(&self, client_id: Option<&str>) -> Uri {
        let s = match client_id {
            Some(id) => format!("{}{}", self.channel_base, channel_query(id, None)),
            None => self.path_and_query.clone(),
        };
        // Built from a URI that parsed and a form-encoded query: valid.
        s.parse().unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// `path?[query&]sseClientId=` + the encoded id + `&messageId=`: the
    /// fixed part of a client's POST URIs, so each POST only appends digits.
    pub fn post_prefix(&self, client_id: &str) -> String {
        let q = channel_query(client_id, None);
        format!("{}{q}&{}=", self.channel_base, crate::protocol::MESSAGE_ID_PARAM)
    }

    /// A POST of `body` (already a JSON string) to `uri`.
    pub fn post_request(&self, uri: Uri, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(header::HOST, self.host_header.clone());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain;charset=UTF-8"));
        for (k, v) in &self.headers {
            h.append(k, v.clone());
        }
        req
    }

    /// A request whose answer is an event stream (`-X`, `--data`): to the
    /// URL as given, JSON unless `-H` names another content type.
    pub fn request_with_body(&self, method: &http::Method, body: &Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = method.clone();
        *req.uri_mut() = self.stream_uri(None);
        let h = req.headers_mut();
        h.insert(header::HOST, self.host_header.clone());
        h.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        if !body.is_empty() && !self.headers.contains_key(header::CONTENT_TYPE) {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (k, v) in &self.headers {
            h.append(k, v.clone());
        }
        req
    }

    fn stream_request(&self, uri: Uri, last_event_id: Option<&str>) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(header::HOST, self.host_header.clone());
        h.insert(header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Some(id) = last_event_id.filter(|id| !id.is_empty())
            && let Ok(v) = HeaderValue::from_str(id)
        {
            h.insert("last-event-id", v);
        }
        for (k, v) in &self.headers {
            h.append(k, v.clone());
        }
        req
    }

    /// Resolves the host to the first address (once, at start).
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "host has no address"))
    }
}

/// A connection: plain TCP, or TLS over it. Both are `Unpin`; each call
/// goes to the one it is (vectored writes included, which hyper uses when
/// the stream supports them).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a run reaches its target: the address resolved at start, and TLS
/// for `https://`.
#[derive(Clone)]
pub struct Dialer {
    pub addr: SocketAddr,
    /// The connector, the name to check, and whether `--cacert` was given.
    tls: Option<(TlsConnector, ServerName<'static>, bool)>,
}

impl Dialer {
    pub fn plain(addr: SocketAddr) -> Self {
        Self { addr, tls: None }
    }

    pub fn tls(
        addr: SocketAddr,
        connector: TlsConnector,
        name: ServerName<'static>,
        cacert: bool,
    ) -> Self {
        Self { addr, tls: Some((connector, name, cacert)) }
    }

    /// A new connection (and its handshake).
    pub async fn connect(&self) -> Result<Io, ConnectError> {
        Ok(TokioIo::new(self.stream().await?))
    }

    /// A new connection (and its handshake), not yet wrapped for hyper.
    pub async fn stream(&self) -> Result<Stream, ConnectError> {
        let addr = self.addr;
        let s =
            TcpStream::connect(addr).await.map_err(|source| ConnectError::Tcp { addr, source })?;
        // Small requests and events: never wait for Nagle.
        let _ = s.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(s),
            Some((connector, name, cacert)) => Stream::Tls(Box::new(
                connector
                    .connect(name.clone(), s)
                    .await
                    .map_err(|e| ConnectError::Tls(super::tls::describe(&e, *cacert)))?,
            )),
        };
        Ok(stream)
    }
}

/// An open event stream: the connection to poll and the body to read.
pub struct OpenStream {
    /// `None` once it ended: the body still yields what it delivered.
    pub conn: Option<StreamConn>,
    pub body: Incoming,
}

/// The one driver reads an open stream by polling its connection (this
/// task drives it: no task per connection) and then its body.
impl Chunks for OpenStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        if let Some(c) = &mut self.conn
            && Pin::new(c).poll(cx).is_ready()
        {
            // Dropping the connection tells the body at once.
            self.conn = None;
        }
        use hyper::body::Body as _;
        loop {
            return match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Err(e)) => Poll::Ready(Some(Err(e.to_string()))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_) => continue,
                },
            };
        }
    }
}

/// A future re-opening a stream.
pub type Reopening = Pin<Box<dyn Future<Output = Result<OpenStream, OpenError>> + Send>>;
/// What re-opens a stream, given its `Last-Event-ID`.
pub type Reopen = Box<dyn FnMut(&str) -> Reopening + Send>;
/// The one driver over a bench stream.
pub type StreamDriver = Driver<Reopen, OpenStream, Reopening>;

/// The driver of stream `first` (opened and timed by the caller), which
/// re-opens it at `uri` with `Last-Event-ID`. A resume that fails is
/// retried as the policy says, whatever the answer (a server restarting
/// or overloaded answers 503 for a while), but for 204: stop.
pub fn stream_driver(
    plan: Arc<super::Plan>,
    uri: Uri,
    config: DriverConfig,
    first: OpenStream,
) -> StreamDriver {
    let reopen: Reopen = Box::new(move |last: &str| {
        let (plan, uri, last) = (plan.clone(), uri.clone(), last.to_owned());
        Box::pin(async move {
            let timeout = plan.connect_timeout;
            let opened = open_stream(&plan.target, &plan.dialer, uri, Some(&last), timeout).await;
            opened.map_err(|e| match e {
                ConnectError::Refused(Refusal::NoContent) => Refusal::NoContent.into(),
                e => OpenError::Network(e.to_string()),
            })
        })
    });
    Driver::with_open_stream(config, reopen, first)
}

/// Connects and sends the stream GET (with `Last-Event-ID` when resuming);
/// returns once the 200 response headers are in, within `timeout`.
pub async fn open_stream(
    target: &Target,
    dialer: &Dialer,
    uri: Uri,
    last_event_id: Option<&str>,
    timeout: Duration,
) -> Result<OpenStream, ConnectError> {
    open_with(dialer, target.stream_request(uri, last_event_id), timeout).await
}

/// Connects, sends `req` and returns once a `200 text/event-stream`
/// answer's headers are in, within `timeout`.
pub async fn open_with(
    dialer: &Dialer,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<OpenStream, ConnectError> {
    let work = async {
        let io = dialer.connect().await?;
        let (mut sender, mut conn) = http1::handshake::<_, Full<Bytes>>(io).await?;
        let resp = sender.send_request(req);
        tokio::pin!(resp);
        // The connection must be polled for the response to arrive.
        let resp = tokio::select! {
            r = &mut resp => r?,
            r = &mut conn => {
                r?;
                // Closed before answering: the response future now fails;
                // take its error.
                resp.await?
            }
        };
        let content_type = resp.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
        check_response(resp.status(), content_type)?;
        Ok(OpenStream { conn: Some(conn), body: resp.into_body() })
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| ConnectError::Timeout(timeout))?
}

/// Opens the keep-alive connection a client's POSTs go over.
pub async fn open_post(
    dialer: &Dialer,
    timeout: Duration,
) -> Result<(PostSender, PostConn), ConnectError> {
    let work = async {
        let io = TokioIo::new(EarlyAnswer::new(dialer.stream().await?));
        Ok(http1::Builder::new().handshake::<_, Full<Bytes>>(io).await?)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| ConnectError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/sse", &[]).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!(t.stream_uri(Some("a b")).to_string(), "/sse?sseClientId=a+b");
        assert_eq!(t.stream_uri(None).to_string(), "/sse");
        assert_eq!(t.post_prefix("x"), "/sse?sseClientId=x&messageId=");
        let t = Target::parse("http://h/p?token=1", &["X-A: b".into()]).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("h", 80));
        assert_eq!(t.stream_uri(Some("x")).to_string(), "/p?token=1&sseClientId=x");
        assert_eq!(t.stream_uri(None).to_string(), "/p?token=1");
        assert_eq!(t.headers["x-a"], "b");
        let t = Target::parse("http://[::1]:9/", &[]).unwrap();
        assert_eq!(t.host, "::1");
    }

    #[test]
    fn refuses_bad_urls_and_headers() {
        for bad in ["", "ftp://h/", "127.0.0.1:80/sse", "http:///x", "not a url"] {
            assert!(Target::parse(bad, &[]).is_err(), "{bad:?}");
        }
        // What `connect` says, hint included.
        let why = Target::parse("localhost:8080/sse", &[]).unwrap_err().to_string();
        assert!(why.ends_with("(did you mean http://localhost:8080/sse?)"), "{why}");
        let t = Target::parse("https://h/sse", &[]).unwrap();
        assert!(t.tls && t.port == 443);
        assert!(matches!(
            Target::parse("http://h/", &["nocolon".into()]),
            Err(TargetError::Header(_))
        ));
        assert!(matches!(
            Target::parse("http://h/", &["bad name: v".into()]),
            Err(TargetError::Header(_))
        ));
    }
}
