//! The server→client side: one GET at a time, fed through the event-stream
//! parser, re-opened with `Last-Event-ID` until the client stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use reqwest::Url;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{ClientEvent, Mode, Shared, State, describe, first_line};
use crate::protocol::parser::Parsed;
use crate::protocol::{CONTROL_CLOSE_DATA, CONTROL_EVENT, decode_message_body, query};
use crate::reader::{Next, Reader, Refusal};
use crate::text::escape_controls;

/// Why opening a stream did not give an open response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OpenError {
    /// Not worth a retry (a TLS handshake that failed).
    Fatal(String),
    /// Network trouble: the reader decides.
    Network(String),
}

/// How an open stream ended.
#[derive(Debug)]
enum End {
    /// EOF or a read error: reconnect after the reconnection time.
    Lost(String),
    /// `drop_stream`: reconnect at once.
    Dropped,
    /// `event: control` / `data: close`.
    ControlClose,
    /// The client was closed by its owner.
    Stopped,
    /// The stream broke a parser bound: retrying would only repeat it.
    Broken(String),
}

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

/// Sends the stream request (a GET, or in raw mode `-X`/`-d`); the
/// response is judged by the reader.
async fn open(
    shared: &Shared,
    url: &Url,
    last_event_id: &str,
) -> Result<reqwest::Response, OpenError> {
    let mut headers = http::HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if !last_event_id.is_empty() {
        match HeaderValue::from_str(last_event_id) {
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
    let timeout = config.timeout;
    let sent =
        shared.request(config.method.clone(), url.clone(), headers, config.body.clone(), None);
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

/// The stream task: runs until a terminal event, then stops the client.
pub(super) async fn run(shared: Arc<Shared>, events: mpsc::Sender<ClientEvent>) {
    let terminal = drive(&shared, &events).await;
    shared.stop();
    let _ = events.send(terminal).await;
}

fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Opens, reads and re-opens streams; returns the terminal event.
async fn drive(shared: &Shared, events: &mpsc::Sender<ClientEvent>) -> ClientEvent {
    let url = stream_url(&shared.config.url, &shared.config.mode);
    let mut reader = Reader::new(shared.config.retry, shared.config.max_event_bytes);
    if let Some(id) = &shared.config.last_event_id {
        reader.set_last_event_id(id);
    }
    let mut drops = shared.drop_requests.subscribe();
    loop {
        if shared.is_stopped() {
            return ClientEvent::Closed;
        }
        let attempt = reader.attempt();
        let _ = events.send(ClientEvent::Connecting { attempt }).await;
        let opened = tokio::select! {
            r = open(shared, &url, match shared.config.mode {
                Mode::Channel { .. } => reader.channel_last_event_id(),
                Mode::Raw => reader.last_event_id(),
            }) => r,
            _ = shared.until_stopped() => return ClientEvent::Closed,
        };
        let resp = match opened {
            Ok(r) => r,
            Err(OpenError::Fatal(reason)) => return ClientEvent::Failed { reason },
            Err(OpenError::Network(reason)) => {
                let delay = match reader.connect_failed(now()) {
                    Next::Fail => return ClientEvent::Failed { reason },
                    Next::GiveUp => {
                        let _ = events
                            .send(ClientEvent::AttemptFailed { attempt, reason: reason.clone() })
                            .await;
                        let attempts = reader.backoff().failures();
                        return ClientEvent::GaveUp { attempts, reason };
                    }
                    Next::RetryIn(delay) => delay,
                };
                let _ = events.send(ClientEvent::AttemptFailed { attempt, reason }).await;
                shared.state.send_replace(State::Reconnecting);
                let attempt = reader.attempt();
                let _ = events.send(ClientEvent::Reconnecting { attempt, delay }).await;
                if !sleep_unless_stopped(shared, delay).await {
                    return ClientEvent::Closed;
                }
                continue;
            }
        };
        let content_type = resp.headers().get(CONTENT_TYPE).map(HeaderValue::as_bytes);
        match reader.response(resp.status(), content_type, now()) {
            Ok(()) => {}
            Err(Refusal::NoContent) => return ClientEvent::NoContent,
            Err(refusal) => {
                let why = refusal.to_string();
                let body = if resp.status() == StatusCode::OK {
                    String::new()
                } else {
                    first_line(resp).await
                };
                let reason = if body.is_empty() { why } else { format!("{why}: {body}") };
                return ClientEvent::Failed { reason };
            }
        }
        let opened_event = if reader.opens() > 1 {
            shared.reconnects.fetch_add(1, Ordering::SeqCst);
            let id = reader.last_event_id();
            ClientEvent::Resumed { last_event_id: (!id.is_empty()).then(|| id.to_owned()) }
        } else {
            ClientEvent::Open
        };
        shared.state.send_replace(State::Open);
        let _ = events.send(opened_event).await;
        // A drop asked for while no stream was open does not count.
        drops.borrow_and_update();
        let end = read(shared, resp, &mut reader, &mut drops, events).await;
        let delay = match end {
            End::ControlClose => return ClientEvent::ClosedByServer,
            End::Stopped => return ClientEvent::Closed,
            End::Broken(reason) => return ClientEvent::Failed { reason },
            End::Dropped => {
                reader.dropped();
                let reason = "stream dropped on purpose".to_owned();
                shared.state.send_replace(State::Reconnecting);
                let _ = events.send(ClientEvent::Disconnected { reason }).await;
                Duration::ZERO
            }
            End::Lost(reason) => {
                shared.state.send_replace(State::Reconnecting);
                let next = reader.stream_ended(now());
                let reason = if reader.quick_ends() > 0 {
                    format!("{reason} before any event")
                } else {
                    reason
                };
                let _ = events.send(ClientEvent::Disconnected { reason: reason.clone() }).await;
                match next {
                    Next::RetryIn(delay) => delay,
                    Next::GiveUp | Next::Fail => {
                        let attempts = reader.backoff().failures();
                        return ClientEvent::GaveUp { attempts, reason };
                    }
                }
            }
        };
        let attempt = reader.attempt();
        let _ = events.send(ClientEvent::Reconnecting { attempt, delay }).await;
        if !sleep_unless_stopped(shared, delay).await {
            return ClientEvent::Closed;
        }
    }
}

/// Sleeps `delay`; false if the client stopped meanwhile.
async fn sleep_unless_stopped(shared: &Shared, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shared.until_stopped() => false,
    }
}

/// Reads one open stream to its end.
async fn read(
    shared: &Shared,
    mut resp: reqwest::Response,
    reader: &mut Reader,
    drops: &mut tokio::sync::watch::Receiver<u64>,
    events: &mpsc::Sender<ClientEvent>,
) -> End {
    let idle = shared.config.idle_timeout;
    // The idle timer: armed once, re-armed only when it fires early. Each
    // chunk only stores the time it was handled (after its events were
    // handed on, so a caller slow to take them does not count as silence).
    let mut last_data = Instant::now();
    let timer = tokio::time::sleep(idle.unwrap_or(Duration::ZERO));
    tokio::pin!(timer);
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = drops.changed() => return End::Dropped,
            _ = shared.until_stopped() => return End::Stopped,
            () = &mut timer, if idle.is_some() => {
                let idle = idle.unwrap_or_default();
                if let Some(end) = idle_end(last_data, idle, timer.as_mut()) {
                    return end;
                }
                continue;
            }
        };
        match chunk {
            Ok(Some(bytes)) => reader.feed(&bytes),
            Ok(None) => return End::Lost("the server ended the stream".into()),
            Err(e) => return End::Lost(describe(&e)),
        }
        loop {
            let item = match reader.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => return End::Broken(e.to_string()),
            };
            match item {
                Parsed::Retry(ms) => debug!("server retry: {ms} ms"),
                Parsed::Comment(c) => {
                    let _ = events.send(ClientEvent::Comment(c)).await;
                }
                Parsed::Event(ev) => {
                    if let Ok(mut id) = shared.last_event_id.lock() {
                        id.clone_from(&ev.last_event_id);
                    }
                    if let Some(end) = dispatch(shared, ev, events).await {
                        return end;
                    }
                }
            }
        }
        if idle.is_some() {
            last_data = Instant::now();
        }
    }
}

/// The idle timer fired: the stream is lost when nothing came for `idle`
/// since `last_data`; otherwise the timer is re-armed for `idle` after it.
fn idle_end(
    last_data: Instant,
    idle: Duration,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Option<End> {
    let silent = last_data.elapsed();
    if silent >= idle {
        return Some(End::Lost(format!("no data for {}", humantime::format_duration(idle))));
    }
    timer.reset(last_data + idle);
    None
}

/// Hands one event to the caller; `Some` when it ends the stream.
async fn dispatch(
    shared: &Shared,
    ev: crate::protocol::Event,
    events: &mpsc::Sender<ClientEvent>,
) -> Option<End> {
    let out = match &shared.config.mode {
        Mode::Raw => ClientEvent::Event(ev),
        Mode::Channel { .. } if ev.event == CONTROL_EVENT => {
            if ev.data == CONTROL_CLOSE_DATA {
                return Some(End::ControlClose);
            }
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

    #[tokio::test]
    async fn idle_timer_fires_only_after_silence() {
        let idle = Duration::from_secs(45);
        let timer = tokio::time::sleep(idle);
        tokio::pin!(timer);
        // Data came 10 s ago: not idle yet, re-armed for 35 s from now.
        let last = Instant::now() - Duration::from_secs(10);
        assert!(idle_end(last, idle, timer.as_mut()).is_none());
        assert_eq!(timer.deadline(), last + idle);
        let last = Instant::now() - Duration::from_secs(46);
        match idle_end(last, idle, timer.as_mut()) {
            Some(End::Lost(why)) => assert_eq!(why, "no data for 45s"),
            other => panic!("{other:?}"),
        }
    }

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
