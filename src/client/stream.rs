//! The server→client side: one GET at a time, re-opened with
//! `Last-Event-ID` until the client stops, by the one [`Driver`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use reqwest::Url;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::driver::{Chunks, Driver, DriverConfig, OpenError, Resume, Step};
use super::{ClientConfig, ClientEvent, Mode, Shared, State, describe, first_line};
use crate::protocol::parser::Parsed;
use crate::protocol::{decode_message_body, query};
use crate::reader::check_response;
use crate::text::escape_controls;

/// The GET URL: the given URL, plus `sseClientId` in channel mode (kept
/// after any query the URL already has).
pub(super) fn stream_url(url: &Url, mode: &Mode) -> Url {
    let Mode::Channel { client_id } = mode else { return url.clone() };
    with_query(url, &query::channel_query(client_id, None))
}

/// `url` with `extra` appended to its query string.
pub(crate) fn with_query(url: &Url, extra: &str) -> Url {
    let mut u = url.clone();
    let q = match url.query() {
        Some(q) if !q.is_empty() => format!("{q}&{extra}"),
        _ => extra.to_owned(),
    };
    u.set_query(Some(&q));
    u
}

/// Sends the stream request (a GET, or in raw mode `-X`/`-d`) and judges
/// the answer as EventSource does.
pub(super) async fn open(
    shared: &Shared,
    url: &Url,
    last_event_id: String,
) -> Result<ReqwestBody, OpenError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if !last_event_id.is_empty() {
        match HeaderValue::from_str(&last_event_id) {
            Ok(v) => {
                headers.insert("last-event-id", v);
            }
            Err(_) => debug!("last event id {last_event_id:?} cannot be a header; not sent"),
        }
    }
    let config = &shared.config;
    if config.body.is_some() && !config.headers.contains_key(CONTENT_TYPE) {
        // As curl -d does.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
    }
    let sent = super::request(
        &shared.http,
        config,
        config.method.clone(),
        url.clone(),
        headers,
        config.body.clone(),
        None,
    );
    let resp = sent_within(config, sent).await?;
    judge(resp).await
}

/// The answer of `sent`, within the config's timeout: a TLS failure is
/// fatal (with a hint that fits it), any other failure network trouble.
pub(super) async fn sent_within(
    config: &ClientConfig,
    sent: impl Future<Output = Result<reqwest::Response, super::SendError>>,
) -> Result<reqwest::Response, OpenError> {
    let timeout = config.timeout;
    match tokio::time::timeout(timeout, sent).await {
        Err(_) => Err(OpenError::Network(format!(
            "no response within {}",
            humantime::format_duration(timeout)
        ))),
        Ok(Err(e)) if e.is_tls_failure() => {
            let mut why = e.describe();
            if let Some(hint) = super::tls_hint(&why, !config.ca_certs.is_empty()) {
                why = format!("{why} ({hint})");
            }
            Err(OpenError::Fatal(why))
        }
        Ok(Err(e)) => Err(OpenError::Network(e.describe())),
        Ok(Ok(r)) => Ok(r),
    }
}

/// An answer as an event stream, or why it is none (with the first line
/// of an error's body).
pub(super) async fn judge(resp: reqwest::Response) -> Result<ReqwestBody, OpenError> {
    let content_type = resp.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes);
    match check_response(resp.status(), content_type) {
        Ok(()) => Ok(ReqwestBody::new(resp)),
        Err(refusal) => {
            let body = if resp.status() == StatusCode::OK {
                String::new()
            } else {
                first_line(resp).await
            };
            Err(OpenError::Refused { refusal, body })
        }
    }
}

/// A reqwest body, chunk by chunk, its errors described.
pub struct ReqwestBody(reqwest::Body);

impl ReqwestBody {
    pub fn new(resp: reqwest::Response) -> Self {
        Self(reqwest::Body::from(resp))
    }
}

impl Chunks for ReqwestBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        use http_body::Body as _;
        loop {
            return match std::task::ready!(std::pin::Pin::new(&mut self.0).poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Err(e)) => Poll::Ready(Some(Err(describe(&e)))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_) => continue,
                },
            };
        }
    }
}

/// The stream task: runs until a terminal event, then stops the client.
pub(super) async fn run(shared: Arc<Shared>, events: mpsc::Sender<ClientEvent>) {
    let terminal = drive(&shared, &events).await;
    shared.stop();
    let _ = events.send(terminal).await;
}

/// Reads and re-opens streams; returns the terminal event.
async fn drive(shared: &Shared, events: &mpsc::Sender<ClientEvent>) -> ClientEvent {
    let url = stream_url(&shared.config.url, &shared.config.mode);
    let config = DriverConfig {
        retry: shared.config.retry,
        max_event_bytes: shared.config.max_event_bytes,
        idle_timeout: shared.config.idle_timeout,
        resume: match shared.config.mode {
            Mode::Channel { .. } => Resume::Channel,
            Mode::Raw => Resume::Plain,
        },
    };
    let mut driver = Driver::new(config, |id: &str| open(shared, &url, id.to_owned()));
    if let Some(id) = &shared.config.last_event_id {
        driver.set_last_event_id(id);
    }
    let mut drops = shared.drop_requests.subscribe();
    loop {
        let step = tokio::select! {
            step = driver.next() => step,
            _ = shared.until_stopped() => return ClientEvent::Closed,
            _ = drops.changed() => {
                // A drop asked for while no stream is open does not count.
                if driver.drop_stream() {
                    shared.state.send_replace(State::Reconnecting);
                    let reason = "stream dropped on purpose".to_owned();
                    let _ = events.send(ClientEvent::Disconnected { reason }).await;
                    let attempt = driver.reader().attempt();
                    let _ = events.send(ClientEvent::Reconnecting { attempt, delay: Duration::ZERO }).await;
                }
                continue;
            }
        };
        let event = match step {
            None => return ClientEvent::Closed,
            Some(Step::Connecting { attempt }) => ClientEvent::Connecting { attempt },
            Some(Step::Open { resumed, last_event_id }) => {
                shared.state.send_replace(State::Open);
                if resumed {
                    shared.reconnects.fetch_add(1, Ordering::SeqCst);
                    ClientEvent::Resumed { last_event_id }
                } else {
                    ClientEvent::Open
                }
            }
            Some(Step::Item(Parsed::Retry(ms))) => {
                debug!("server retry: {ms} ms");
                continue;
            }
            Some(Step::Item(Parsed::Comment(c))) => ClientEvent::Comment(c),
            Some(Step::Item(Parsed::Event(ev))) => {
                if let Ok(mut id) = shared.last_event_id.lock() {
                    id.clone_from(&ev.last_event_id);
                }
                match dispatch(shared, ev, events).await {
                    Some(terminal) => return terminal,
                    None => continue,
                }
            }
            Some(Step::Lost { reason }) => {
                shared.state.send_replace(State::Reconnecting);
                ClientEvent::Disconnected { reason }
            }
            Some(Step::OpenFailed { attempt, reason }) => {
                shared.state.send_replace(State::Reconnecting);
                ClientEvent::AttemptFailed { attempt, reason }
            }
            Some(Step::Waiting { attempt, delay }) => ClientEvent::Reconnecting { attempt, delay },
            Some(Step::Broken { reason } | Step::Failed { reason }) => {
                return ClientEvent::Failed { reason };
            }
            Some(Step::Refused { refusal, body }) => {
                let reason = OpenError::Refused { refusal, body }.to_string();
                return ClientEvent::Failed { reason };
            }
            Some(Step::NoContent) => return ClientEvent::NoContent,
            Some(Step::GaveUp { attempts, reason }) => {
                return ClientEvent::GaveUp { attempts, reason };
            }
        };
        let _ = events.send(event).await;
    }
}

/// Hands one event to the caller; `Some`: the terminal event it means.
async fn dispatch(
    shared: &Shared,
    ev: crate::protocol::Event,
    events: &mpsc::Sender<ClientEvent>,
) -> Option<ClientEvent> {
    let out = match &shared.config.mode {
        Mode::Raw => ClientEvent::Event(ev),
        Mode::Channel { .. } if ev.is_control_close() => return Some(ClientEvent::ClosedByServer),
        Mode::Channel { .. } if ev.event == crate::protocol::CONTROL_EVENT => {
            // package:sse clients throw here; a probe should say and go on.
            warn!("ignoring unknown control event {:?}", ev.data);
            return None;
        }
        Mode::Channel { .. } if ev.event == "message" => {
            match decode_message_body(ev.data.as_bytes()) {
                Ok(text) => ClientEvent::Message(text),
                Err(e) => {
                    debug!("ignoring event whose data is not a JSON string ({e}): {:?}", ev.data);
                    hint(shared, events, "message data that is not a JSON string").await;
                    return None;
                }
            }
        }
        Mode::Channel { .. } => {
            debug!("ignoring event of type {:?}", ev.event);
            let why = format!("events of type {:?}", escape_controls(&ev.event));
            hint(shared, events, &why).await;
            return None;
        }
    };
    shared.received.fetch_add(1, Ordering::SeqCst);
    let _ = events.send(out).await;
    None
}

/// Once, and only while no channel message came: the stream carries what
/// a plain SSE endpoint sends, not channel messages.
async fn hint(shared: &Shared, events: &mpsc::Sender<ClientEvent>, seen: &str) {
    if shared.received.load(Ordering::SeqCst) > 0 || shared.hinted.swap(true, Ordering::SeqCst) {
        return;
    }
    let text =
        format!("this looks like a plain SSE endpoint ({seen}, no channel message): try --raw");
    let _ = events.send(ClientEvent::Hint(text)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_query() {
        let mode = Mode::Channel { client_id: "a b".into() };
        let u = Url::parse("http://h/sse").unwrap();
        assert_eq!(stream_url(&u, &mode).as_str(), "http://h/sse?sseClientId=a+b");
        let u = Url::parse("http://h/sse?token=x").unwrap();
        assert_eq!(stream_url(&u, &mode).as_str(), "http://h/sse?token=x&sseClientId=a+b");
        assert_eq!(stream_url(&u, &Mode::Raw).as_str(), "http://h/sse?token=x");
    }
}
