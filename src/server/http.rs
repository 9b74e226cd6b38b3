//! Routing and the HTTP side of the protocol: who may ask (Host, Origin),
//! status codes, CORS, bodies, and package:sse's requests mapped onto the
//! store (MCP's are [`super::mcp`]'s: one translation per protocol, one
//! channel core). Every decision on channel state is the store's
//! ([`super::store::ChannelStore`]); this module only translates.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use tracing::{debug, info};

use super::ServerShared;
use super::app::{Handoff, RequestInfo};
use super::config::Protocol;
use super::idle::{InFlight, Tracked};
use super::policy::{check_fetch_metadata, check_message, check_origin, site_path};
use super::store::{Refusal, StreamRequest};
use super::stream::{EventStreamBody, GuardSlot, stream_headers, with_cors};
use crate::protocol::event::{decode_message_body, retry_event};
use crate::protocol::query::{ChannelQuery, ChannelQueryRef};
use crate::text::escape_controls;
use crate::web::{FileBody, devconsole, static_files};

pub(crate) type ResponseBody = Either<Full<Bytes>, Either<EventStreamBody, FileBody>>;

const ALLOW: &str = "GET, HEAD, POST, DELETE, OPTIONS";

/// What a request handler knows of its connection.
#[derive(Clone)]
pub(crate) struct ConnCtx {
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// The stream whose detach ends a stuck write (HTTP/1 via hyper).
    pub guard: GuardSlot,
    /// HTTP/2 carries many streams: one stuck stream must not end the rest.
    pub multiplexed: bool,
}

/// A request's refusal decided before hyper saw it (by the direct stream
/// path), with the CORS origin if it had passed the Host and Origin checks.
pub(crate) struct Decided {
    pub refusal: Refusal,
    pub cors: Option<HeaderValue>,
}

/// Answers one request; `decided`: its refusal, already decided; `flight`:
/// the exchange, which lasts as long as the response body.
pub(crate) async fn handle(
    shared: Arc<ServerShared>,
    ctx: ConnCtx,
    req: Request<Incoming>,
    decided: Option<Decided>,
    flight: InFlight,
) -> Result<Response<Tracked<ResponseBody>>, Infallible> {
    let method = req.method().clone();
    let http1 = req.version() < ::http::Version::HTTP_2;
    // Set once the request has passed the Host and Origin checks: only
    // then do refusals carry the CORS headers.
    let mut cors = None;
    let res = match decided {
        Some(d) => {
            cors = d.cors;
            Err(d.refusal)
        }
        None => route(&shared, &ctx, req, &mut cors).await,
    };
    Ok(res
        .unwrap_or_else(|r| {
            let remote = ctx.remote;
            info!(%remote, %method, "rejected: {} {}", r.status.as_u16(), r.reason);
            shared.stats.refused(r.status);
            let mut resp = match shared.config.protocol {
                Protocol::Sse => text(r.status, format!("{}\n", r.reason), cors.as_ref()),
                Protocol::Mcp(_) => super::mcp::refusal(&r, cors.as_ref()),
            };
            if r.status == StatusCode::METHOD_NOT_ALLOWED {
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            }
            if r.body_unread && http1 {
                // hyper closes such a connection after the answer; a client
                // that pools connections must not send another request on it.
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        })
        .map(|body| Tracked::new(body, flight)))
}

async fn route(
    shared: &Arc<ServerShared>,
    ctx: &ConnCtx,
    req: Request<Incoming>,
    cors: &mut Option<HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let host = request_host(req.headers(), req.uri());
    *cors = admit(shared, ctx, req.headers(), host, req.uri().path())?;
    if req.uri().path() != shared.config.path {
        let Some(root) = &shared.config.static_dir else {
            return Err(Refusal::new(StatusCode::NOT_FOUND, "not found"));
        };
        let (method, uri) = (req.method(), req.uri());
        let secret = shared.config.secret.as_deref();
        let path = site_path(secret, uri.path()).unwrap_or_default();
        let site = static_files::Site {
            root,
            private: secret.is_some(),
            open_files: &shared.static_files,
        };
        let files = static_files::serve(&site, method, path, uri.query(), req.headers());
        return Ok(web_response(files.await));
    }
    let cors = cors.as_ref();
    if let Protocol::Mcp(_) = shared.config.protocol {
        return super::mcp::route(shared, ctx, req, cors).await;
    }
    match *req.method() {
        Method::GET => open_stream(shared, ctx, &req, cors).await,
        Method::HEAD => stream_head(shared, &req, cors),
        Method::POST => post_message(shared, req, cors).await,
        Method::DELETE => client_close(shared, &req, cors).await,
        Method::OPTIONS => Ok(preflight(&req, cors)),
        _ => Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
    }
}

/// `Host`, or the `:authority` of an HTTP/2 request.
pub(crate) fn request_host<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> Option<&'a str> {
    match headers.get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => uri.authority().map(|a| a.as_str()),
    }
}

/// The secret, Host and Origin checks every request passes; `Ok` with the
/// value for `Access-Control-Allow-Origin`.
pub(crate) fn admit(
    shared: &ServerShared,
    ctx: &ConnCtx,
    headers: &HeaderMap,
    host: Option<&str>,
    path: &str,
) -> Result<Option<HeaderValue>, Refusal> {
    if site_path(shared.config.secret.as_deref(), path).is_none() {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "not found"));
    }
    let forbidden = |why: &str| Refusal::new(StatusCode::FORBIDDEN, why);
    shared.hosts.check(host).map_err(|why| {
        debug!(host = %escape_controls(host.unwrap_or("")), "{why}");
        forbidden(why)
    })?;
    let origin = headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
    let (policy, hosts) = (&shared.config.origins, &shared.hosts);
    let allowed =
        check_origin(policy, hosts, origin, host.map(str::as_bytes), ctx.tls).map_err(|why| {
            let shown = String::from_utf8_lossy(origin.unwrap_or_default()).into_owned();
            debug!(origin = %escape_controls(&shown), "{why}");
            forbidden(why)
        })?;
    Ok(allowed.and_then(|v| allowed_origin(headers, v)))
}

/// The `Access-Control-Allow-Origin` value: the request's own `Origin` or
/// `Host` header when it is one of them, shared with the request's buffer,
/// so that neither this nor each clone of it for the response allocates.
fn allowed_origin(headers: &HeaderMap, value: &[u8]) -> Option<HeaderValue> {
    [header::ORIGIN, header::HOST]
        .into_iter()
        .filter_map(|name| headers.get(name))
        .find(|h| std::ptr::eq(h.as_bytes(), value))
        .cloned()
        .or_else(|| HeaderValue::from_bytes(value).ok())
}

pub(crate) fn text(
    status: StatusCode,
    body: String,
    cors: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    if status != StatusCode::OK {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    with_cors(r.headers_mut(), cors);
    r
}

pub(crate) fn bad_request(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, e.to_string())
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    // Browsers send exactly `text/event-stream`; accept any list holding it,
    // and clients (curl) that send none or `*/*`.
    let Some(accept) = headers.get(header::ACCEPT) else { return true };
    let Ok(accept) = accept.to_str() else { return false };
    accept.split(',').any(|part| {
        let media = part.split(';').next().unwrap_or("").trim();
        media.eq_ignore_ascii_case("text/event-stream")
            || media == "*/*"
            || media.eq_ignore_ascii_case("text/*")
    })
}

/// A stream request that passed every check and is attached to its
/// channel: what either stream path needs to start writing.
pub(crate) struct StreamStart {
    pub(crate) body: EventStreamBody,
    pub(crate) headers: HeaderMap,
}

/// The checks of a channel `GET` or `HEAD` short of the store: `Ok` with
/// the client id and `Last-Event-ID`.
fn check_stream_request(
    shared: &ServerShared,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(String, Option<u64>), Refusal> {
    if shared.config.devconsole && devconsole::wants_console(headers) {
        // A browser navigating here: the console page (hyper path).
        return Err(Refusal::new(StatusCode::NOT_ACCEPTABLE, "a browser page, not a stream"));
    }
    check_fetch_metadata(&shared.config.origins, headers)
        .map_err(|why| Refusal::new(StatusCode::FORBIDDEN, why))?;
    if !accepts_event_stream(headers) {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            "Accept must include text/event-stream",
        ));
    }
    let q =
        ChannelQuery::parse(query, shared.config.limits.max_client_id_len).map_err(bad_request)?;
    let last_event_id = headers.get("last-event-id").and_then(|v| {
        let v = v.to_str().ok()?.trim();
        let parsed = v.parse::<u64>().ok();
        if parsed.is_none() {
            debug!(client = %q.client_id, "ignoring non-numeric Last-Event-ID {:?}", escape_controls(v));
        }
        parsed
    });
    Ok((q.client_id, last_event_id))
}

/// What the application learns of the request that opened its connection.
pub(crate) fn request_info(
    ctx: &ConnCtx,
    headers: &HeaderMap,
    host: Option<&str>,
    path: &str,
    query: Option<&str>,
) -> RequestInfo {
    let text = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    RequestInfo {
        remote: ctx.remote,
        local: ctx.local,
        host: host.map(str::to_owned),
        path: path.to_owned(),
        query: query.map(str::to_owned),
        origin: text(header::ORIGIN),
        user_agent: text(header::USER_AGENT),
        admitted: Handoff::default(),
    }
}

/// What [`start_stream`] needs of a channel `GET` that passed [`admit`]
/// (the caller's one pass over Host and Origin).
pub(crate) struct StreamAsk<'a> {
    pub headers: &'a HeaderMap,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub cors: Option<&'a HeaderValue>,
}

/// Decides on a `GET` of the channel path, for both stream paths, and
/// attaches (resume, takeover) or opens the channel. No side effect unless
/// it returns `Ok`.
pub(crate) async fn start_stream(
    shared: &Arc<ServerShared>,
    ctx: &ConnCtx,
    ask: StreamAsk<'_>,
) -> Result<StreamStart, Refusal> {
    let StreamAsk { headers, host, path, query, cors } = ask;
    let (client_id, last_event_id) = check_stream_request(shared, headers, query)?;
    let mut info = request_info(ctx, headers, host, path, query);
    // A new channel only: a resume or takeover, here or on another
    // instance, has what it needs.
    if let Some(admission) = &shared.config.admission
        && !shared.store.is_open(&client_id).await
    {
        let admitted = admission.admit(&client_id, &info).await.map_err(Refusal::unavailable)?;
        info.admitted = Handoff::new(admitted);
    }
    let source = shared
        .store
        .open_stream(StreamRequest { client_id, last_event_id, info, layer: None })
        .await?;
    let body = EventStreamBody::new(
        source,
        retry_event(shared.config.retry.as_millis() as u64),
        shared.config.heartbeat,
    );
    Ok(StreamStart { body, headers: stream_headers(cors) })
}

async fn open_stream(
    shared: &Arc<ServerShared>,
    ctx: &ConnCtx,
    req: &Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    if shared.config.devconsole && devconsole::wants_console(req.headers()) {
        return Ok(web_response(devconsole::page()));
    }
    let (headers, uri) = (req.headers(), req.uri());
    let host = request_host(headers, uri);
    let ask = StreamAsk { headers, host, path: uri.path(), query: uri.query(), cors };
    let StreamStart { body, headers } = start_stream(shared, ctx, ask).await?;
    if !ctx.multiplexed {
        ctx.guard.set(body.probe());
    }
    let mut r = Response::new(Either::Right(Either::Left(body)));
    *r.headers_mut() = headers;
    Ok(r)
}

/// `HEAD`: the headers a `GET` would get, with no side effect at all (it
/// neither opens, resumes nor takes over a stream).
fn stream_head(
    shared: &ServerShared,
    req: &Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    check_stream_request(shared, req.headers(), req.uri().query())?;
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.headers_mut() = stream_headers(cors);
    Ok(r)
}

/// A refused POST's body up to this size, declared, is read and dropped so
/// that its connection can carry the next request; a bigger or chunked one
/// is left unread and the connection closes.
const DRAIN_MAX: u64 = 64 * 1024;

async fn post_message(
    shared: &Arc<ServerShared>,
    req: Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let limits = shared.config.limits;
    let timeout = shared.config.request_timeout;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let query = parts.uri.query();
    let mut body = Some(body);
    // Refused before its body was read: drain a small one, else close.
    let refuse = async |r: Refusal, body: &mut Option<Incoming>| -> Refusal {
        let Some(b) = body.take() else { return r };
        let drained = match declared {
            Some(n) if n <= DRAIN_MAX => {
                matches!(tokio::time::timeout(timeout, b.collect()).await, Ok(Ok(_)))
            }
            _ => false,
        };
        if drained { r } else { r.body_unread() }
    };
    let q = match ChannelQueryRef::parse(query, limits.max_client_id_len) {
        Ok(q) => q,
        Err(e) => return Err(refuse(bad_request(e), &mut body).await),
    };
    if declared.is_some_and(|n| n > limits.max_message_bytes as u64) {
        return Err(too_large(limits.max_message_bytes).body_unread());
    }
    // Room first, body second: a POST waiting for a slow application holds
    // its headers, not its body.
    let charge = declared.map_or(limits.max_message_bytes, |n| n as usize);
    let slot = match shared.store.reserve(&q.client_id, charge).await {
        Ok(slot) => slot,
        Err(r) => return Err(refuse(r, &mut body).await),
    };
    let Some(body) = body else { return Err(bad_request("no body")) };
    let body = read_body(body, limits.max_message_bytes, timeout).await?;
    let message = decode_message_body(&body).map_err(bad_request)?;
    check_message(shared.config.line_breaks, &message).map_err(bad_request)?;
    slot.deliver(q.message_id, message).await?;
    Ok(text(StatusCode::OK, String::new(), cors))
}

fn too_large(max: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("message body over the limit of {max} bytes"),
    )
}

/// A refusal when the declared `Content-Length` is over `max` (the body is
/// left unread).
pub(crate) fn check_declared_length(headers: &HeaderMap, max: usize) -> Result<(), Refusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => Err(too_large(max).body_unread()),
        _ => Ok(()),
    }
}

/// Reads a request body of at most `max` bytes within `timeout`.
pub(crate) async fn read_body(
    body: Incoming,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, Refusal> {
    let mut read = std::pin::pin!(collect_within(body, max));
    // A small body has come with its head (hyper hands it over before the
    // handler runs): no clock read and no timer for it.
    let now = std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
    match now {
        std::task::Poll::Ready(read) => read,
        std::task::Poll::Pending => match tokio::time::timeout(timeout, read).await {
            Ok(read) => read,
            Err(_) => {
                let why = format!("body not received within {timeout:?}");
                Err(Refusal::new(StatusCode::REQUEST_TIMEOUT, why).body_unread())
            }
        },
    }
}

/// The body's data, refused past `max` bytes. A body of one frame (a small
/// one) is the `Bytes` hyper read it into, with no copy and no list.
async fn collect_within(mut body: Incoming, max: usize) -> Result<Bytes, Refusal> {
    let mut whole = Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| bad_request(format!("failed to read body: {e}")).body_unread())?;
        let Ok(data) = frame.into_data() else { continue }; // trailers
        let len = joined.as_ref().map_or(whole.len(), |j| j.len());
        if data.len() > max - len {
            return Err(too_large(max).body_unread());
        }
        match &mut joined {
            Some(j) => j.extend_from_slice(&data),
            None if whole.is_empty() => whole = data,
            None => {
                let mut j = bytes::BytesMut::with_capacity(whole.len() + data.len());
                j.extend_from_slice(&whole);
                j.extend_from_slice(&data);
                joined = Some(j);
            }
        }
    }
    Ok(joined.map_or(whole, bytes::BytesMut::freeze))
}

/// `DELETE`: the client leaves for good (an ssechan extension; package:sse
/// clients just stop, which looks like a lost stream).
async fn client_close(
    shared: &Arc<ServerShared>,
    req: &Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Refusal> {
    let q = ChannelQueryRef::parse(req.uri().query(), shared.config.limits.max_client_id_len)
        .map_err(bad_request)?;
    shared.store.client_closed(&q.client_id).await?;
    let mut r = text(StatusCode::NO_CONTENT, String::new(), cors);
    r.headers_mut().remove(header::CONTENT_TYPE);
    Ok(r)
}

fn web_response(r: Response<static_files::WebBody>) -> Response<ResponseBody> {
    r.map(|b| match b {
        Either::Left(full) => Either::Left(full),
        Either::Right(file) => Either::Right(Either::Right(file)),
    })
}

pub(crate) fn preflight(
    req: &Request<Incoming>,
    cors: Option<&HeaderValue>,
) -> Response<ResponseBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE"));
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    with_cors(h, cors);
    r
}
