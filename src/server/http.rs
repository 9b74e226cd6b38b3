//! Routing and the HTTP side of PROTOCOL.md §1–2: status codes, CORS, bodies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use tracing::{debug, info};

use super::ServerShared;
use super::body::EventStreamBody;
use super::connection::{Conn, DeliverError};
use super::request::StreamRequest;
use crate::protocol::event::{decode_message_body, retry_event};
use crate::protocol::query::ChannelQuery;
use crate::web::{devconsole, static_files};

pub(crate) type ResponseBody = Either<Full<Bytes>, Either<EventStreamBody, crate::web::FileBody>>;

const ALLOW: &str = "GET, POST, OPTIONS";

pub(crate) async fn handle(
    shared: Arc<ServerShared>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let method = req.method().clone();
    // Set once the request has passed the path and origin checks: only then
    // do refusals carry the CORS headers.
    let mut origin = None;
    let res = route(&shared, remote, req, &mut origin).await;
    Ok(res.unwrap_or_else(|(status, reason)| {
        info!(%remote, %method, "rejected: {} {reason}", status.as_u16());
        let mut r = text(status, format!("{reason}\n"), origin.as_ref());
        if status == StatusCode::METHOD_NOT_ALLOWED {
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        }
        r
    }))
}

async fn route(
    shared: &Arc<ServerShared>,
    remote: SocketAddr,
    req: Request<Incoming>,
    origin: &mut Option<HeaderValue>,
) -> Result<Response<ResponseBody>, Rejection> {
    if req.uri().path() != shared.config.path {
        if let Some(root) = &shared.config.static_dir {
            return Ok(web_response(
                static_files::serve(
                    root,
                    req.method(),
                    req.uri().path(),
                    req.uri().query(),
                    req.headers(),
                )
                .await,
            ));
        }
        return Err((StatusCode::NOT_FOUND, "not found".into()));
    }
    *origin = cors_origin(shared, req.headers())
        .map_err(|()| (StatusCode::FORBIDDEN, "origin not allowed".to_string()))?;
    let origin = origin.as_ref();
    match *req.method() {
        Method::GET | Method::HEAD => open_stream(shared, remote, &req),
        Method::POST => post_message(shared, req, origin).await,
        Method::OPTIONS => Ok(preflight(&req, origin)),
        _ => Err((StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into())),
    }
}

type Rejection = (StatusCode, String);

/// The value for `Access-Control-Allow-Origin`: the request's `Origin`, or
/// its `Host` (Firefox omits `Origin` on some requests; package:sse does the
/// same). `Err` when an allow-list is set and the origin is not on it.
fn cors_origin(shared: &ServerShared, headers: &HeaderMap) -> Result<Option<HeaderValue>, ()> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if let Some(allowed) = &shared.config.allowed_origins {
            let ok = origin.to_str().is_ok_and(|o| allowed.iter().any(|a| a == o || a == "*"));
            if !ok {
                return Err(());
            }
        }
        return Ok(Some(origin.clone()));
    }
    Ok(headers.get(header::HOST).cloned())
}

fn with_cors(headers: &mut HeaderMap, origin: Option<&HeaderValue>) {
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

fn text(status: StatusCode, body: String, origin: Option<&HeaderValue>) -> Response<ResponseBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    if status != StatusCode::OK {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    with_cors(r.headers_mut(), origin);
    r
}

fn bad_request(e: impl std::fmt::Display) -> Rejection {
    (StatusCode::BAD_REQUEST, e.to_string())
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
/// connection: what either stream path needs to start writing.
pub(crate) struct StreamStart {
    pub(crate) body: EventStreamBody,
    pub(crate) origin: Option<HeaderValue>,
}

/// Decides on a `GET` of the channel path, for both stream paths: checks
/// origin, `Accept` and query, then attaches (resume, takeover) or creates
/// the connection. No side effect unless it returns `Ok`.
pub(crate) fn start_stream(
    shared: &Arc<ServerShared>,
    remote: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<StreamStart, Rejection> {
    let origin = cors_origin(shared, headers)
        .map_err(|()| (StatusCode::FORBIDDEN, "origin not allowed".to_string()))?;
    if shared.config.devconsole && devconsole::wants_console(headers) {
        // Answered by open_stream (hyper path) with the console page.
        return Err((StatusCode::NOT_ACCEPTABLE, "a browser page, not a stream".into()));
    }
    if !accepts_event_stream(headers) {
        return Err((StatusCode::NOT_ACCEPTABLE, "Accept must include text/event-stream".into()));
    }
    let q =
        ChannelQuery::parse(query, shared.config.limits.max_client_id_len).map_err(bad_request)?;
    let last_event_id = headers.get("last-event-id").and_then(|v| {
        let v = v.to_str().ok()?.trim();
        let parsed = v.parse::<u64>().ok();
        if parsed.is_none() {
            debug!(client = %q.client_id, "ignoring non-numeric Last-Event-ID {v:?}");
        }
        parsed
    });
    if shared.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "server is shutting down".into()));
    }
    let request = || StreamRequest::new(remote, &shared.config.path, query, headers);
    let (conn, generation) = attach_or_create(shared, remote, q.client_id, last_event_id, request)?;
    let body = EventStreamBody::new(
        conn,
        generation,
        retry_event(shared.config.retry.as_millis() as u64),
        shared.config.heartbeat,
    );
    Ok(StreamStart { body, origin })
}

fn open_stream(
    shared: &Arc<ServerShared>,
    remote: SocketAddr,
    req: &Request<Incoming>,
) -> Result<Response<ResponseBody>, Rejection> {
    if shared.config.devconsole && devconsole::wants_console(req.headers()) {
        return Ok(web_response(devconsole::page()));
    }
    // h2 carries the host as :authority, not Host: what Host stands for
    // (the CORS fallback, the process environment) reads it from there.
    let with_host;
    let headers = match req.uri().authority() {
        Some(a) if !req.headers().contains_key(header::HOST) => {
            let mut h = req.headers().clone();
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
            with_host = h;
            &with_host
        }
        _ => req.headers(),
    };
    let StreamStart { body, origin } = start_stream(shared, remote, headers, req.uri().query())?;
    let mut r = Response::new(Either::Right(Either::Left(body)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    with_cors(h, origin.as_ref());
    Ok(r)
}

fn attach_or_create(
    shared: &Arc<ServerShared>,
    remote: SocketAddr,
    client_id: String,
    last_event_id: Option<u64>,
    request: impl FnOnce() -> StreamRequest,
) -> Result<(Arc<Conn>, u64), Rejection> {
    let mut reg = shared.lock_registry();
    if let Some(conn) = reg.live.get(client_id.as_str()).cloned() {
        if let Some(generation) = conn.attach(last_event_id) {
            return Ok((conn, generation));
        }
        // Closing: it leaves the registry by itself; start afresh.
        reg.live.remove(client_id.as_str());
    }
    if reg.live.len() >= shared.config.limits.max_clients {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many clients (limit {})", shared.config.limits.max_clients),
        ));
    }
    let id: Arc<str> = Arc::from(client_id);
    let remembered = reg.closed.remove(&id).map(|(_, r)| r);
    if let Some(r) = &remembered {
        reg.closed_bytes -= r.buffered_bytes();
    }
    let first = remembered.as_ref().map_or(0, |r| r.next_id());
    let (conn, app) = Conn::new(id.clone(), request(), shared, remembered);
    let Some(generation) = conn.attach(None) else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "connection closed".into()));
    };
    reg.live.insert(id.clone(), conn.clone());
    drop(reg);
    info!(client = %id, %remote, first_message_id = first, "connected");
    if shared.accept_tx.send(app).is_err() {
        debug!(client = %id, "no one is accepting connections");
    }
    Ok((conn, generation))
}

async fn post_message(
    shared: &Arc<ServerShared>,
    req: Request<Incoming>,
    origin: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Rejection> {
    let limits = shared.config.limits;
    let q =
        ChannelQuery::parse(req.uri().query(), limits.max_client_id_len).map_err(bad_request)?;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("message body over the limit of {} bytes", limits.max_message_bytes),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_message_bytes as u64) {
        return Err(too_large());
    }
    let conn = shared.lock_registry().live.get(q.client_id.as_str()).cloned();
    let Some(conn) = conn else {
        return Err((StatusCode::NOT_FOUND, format!("unknown client id {:?}", q.client_id)));
    };
    let body = match Limited::new(req.into_body(), limits.max_message_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => return Err(bad_request(format!("failed to read body: {e}"))),
    };
    let message = decode_message_body(&body).map_err(bad_request)?;
    match conn.deliver(q.message_id, message).await {
        Ok(_) => Ok(text(StatusCode::OK, String::new(), origin)),
        Err(DeliverError::TooFarAhead { next, window }) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "messageId {} is more than {window} ahead of the next expected id {next}",
                q.message_id
            ),
        )),
        Err(DeliverError::BufferFull { bytes }) => Err((
            StatusCode::TOO_MANY_REQUESTS,
            format!("re-order buffer full ({bytes} bytes waiting for earlier messages)"),
        )),
        Err(DeliverError::Closed) => {
            Err((StatusCode::NOT_FOUND, format!("client id {:?} is closed", q.client_id)))
        }
    }
}

fn web_response(r: Response<static_files::WebBody>) -> Response<ResponseBody> {
    r.map(|b| match b {
        Either::Left(full) => Either::Left(full),
        Either::Right(file) => Either::Right(Either::Right(file)),
    })
}

fn preflight(req: &Request<Incoming>, origin: Option<&HeaderValue>) -> Response<ResponseBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    with_cors(h, origin);
    r
}
