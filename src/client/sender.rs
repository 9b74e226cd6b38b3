//! The client→server side: messages numbered from 0, POSTed in parallel up
//! to `in_flight`, each retried with its own messageId until the server
//! takes it. Retrying is safe because the server drops duplicates
//! (PROTOCOL.md §3); it is also why ids are never reused or skipped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{CONTENT_TYPE, USER_AGENT};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use super::stream::with_query;
use super::{
    ClientEvent, Mode, Outgoing, PostOutcome, SendError, Shared, State, describe, early, first_line,
};
use crate::protocol::query::channel_query;
use crate::reader::{Backoff, Next};

/// What a POST's answer means for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Accepted,
    /// Try again later: overloaded or in between (408, 429, 502, 503, 504).
    Retry,
    /// 404: the server does not know the client: yet or any more around a
    /// reconnect (retry), for good while its stream stays open (final).
    UnknownClient,
    /// A status that will not change (400, 405, 413, 500, 501…): retrying
    /// would loop forever (a plain SSE server answers every POST 501).
    Refused,
}

pub(super) fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Accepted,
        404 => Verdict::UnknownClient,
        408 | 429 | 502..=504 => Verdict::Retry,
        _ => Verdict::Refused,
    }
}

/// The sender task: runs until the queue closes or the client stops.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<ClientEvent>,
) {
    let in_flight = shared.config.in_flight.max(1);
    let mut next_id = 0u64;
    let mut posts: JoinSet<(u64, Result<(), String>)> = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shared.until_stopped() => return,
            Some(done) = posts.join_next(), if !posts.is_empty() => {
                settle(&shared, &events, done).await;
            }
            item = rx.recv(), if posts.len() < in_flight => {
                let Some(item) = item else { break };
                match item {
                    Outgoing::Message { body, _permit } => {
                        let id = next_id;
                        next_id += 1;
                        if let Some(hook) = &shared.config.on_send {
                            (hook.0)(id, &body);
                        }
                        let (shared, events) = (shared.clone(), events.clone());
                        posts.spawn(async move {
                            let r = post_with_retry(&shared, &events, id, body).await;
                            drop(_permit);
                            (id, r)
                        });
                    }
                    Outgoing::Raw { body, reply } => {
                        // A barrier: the raw body gets the next id only if
                        // the server takes it, so nothing may be in flight.
                        while let Some(done) = posts.join_next().await {
                            settle(&shared, &events, done).await;
                        }
                        let r = post(&shared, next_id, body.clone()).await;
                        // Counted either way, so /status shows a refused probe.
                        shared.sent.fetch_add(1, Ordering::SeqCst);
                        let accepted = matches!(&r, Ok(o) if verdict(o.status) == Verdict::Accepted);
                        shared.settle(accepted);
                        if accepted {
                            if let Some(hook) = &shared.config.on_send {
                                (hook.0)(next_id, &body);
                            }
                            next_id += 1;
                        }
                        let _ = reply.send(r);
                    }
                }
            }
        }
    }
    while let Some(done) = posts.join_next().await {
        settle(&shared, &events, done).await;
    }
}

async fn settle(
    shared: &Shared,
    events: &mpsc::Sender<ClientEvent>,
    done: Result<(u64, Result<(), String>), tokio::task::JoinError>,
) {
    match done {
        Ok((_, Ok(()))) => shared.settle(true),
        // Abandoned because the client stopped: the terminal event says
        // why; a failure here would only race it.
        Ok((_, Err(_))) if shared.is_stopped() => {}
        Ok((message_id, Err(reason))) => {
            shared.settle(false);
            let _ = events.send(ClientEvent::SendFailed { message_id, reason }).await;
        }
        // Only aborted at shutdown; nothing to count.
        Err(e) => debug!("POST task ended: {e}"),
    }
}

/// POSTs message `id` until the server accepts or refuses it for good.
/// Waits while no stream is open: a server only knows open clients. The
/// retry budget counts failures while one stream is open, so POSTs that
/// raced a reconnect (404 from a server that already forgot the client)
/// start afresh on the next stream rather than giving up. Every answer
/// other than 2xx is a [`ClientEvent::Refused`], retried or not.
async fn post_with_retry(
    shared: &Shared,
    events: &mpsc::Sender<ClientEvent>,
    id: u64,
    body: Vec<u8>,
) -> Result<(), String> {
    let mut backoff = Backoff::new(shared.config.retry);
    let mut stream_generation = shared.reconnects.load(Ordering::SeqCst);
    let mut state = shared.state.subscribe();
    loop {
        if state.wait_for(|s| matches!(s, State::Open | State::Closed)).await.is_err()
            || shared.is_stopped()
        {
            return Err("the client stopped".into());
        }
        let answer = post(shared, id, body.clone()).await;
        let refused = |retried: bool| {
            let ev = answer.as_ref().ok().map(|o| ClientEvent::Refused {
                message_id: id,
                status: o.status,
                reason: o.reason.clone(),
                retried,
            });
            tell(shared, events, ev)
        };
        let reason = match &answer {
            Ok(o) => {
                let why = format!("server answered {}: {}", o.status, o.reason);
                match verdict(o.status) {
                    Verdict::Accepted => return Ok(()),
                    Verdict::Refused => {
                        refused(false).await;
                        return Err(why);
                    }
                    Verdict::Retry => why,
                    Verdict::UnknownClient => {
                        // The stream may have ended with the server's memory
                        // of the client before this side noticed: wait for
                        // that, up to the timeout, and retry on the next one.
                        let open_since = shared.reconnects.load(Ordering::SeqCst)
                            == stream_generation
                            && *state.borrow() == State::Open;
                        let limit = shared.config.timeout;
                        if open_since
                            && tokio::time::timeout(limit, state.wait_for(|s| *s != State::Open))
                                .await
                                .is_err()
                        {
                            refused(false).await;
                            return Err(format!(
                                "{why} (the server does not know this client id though its stream is open)"
                            ));
                        }
                        why
                    }
                }
            }
            Err(e) => e.clone(),
        };
        debug!(message_id = id, "POST failed, will retry: {reason}");
        let generation = shared.reconnects.load(Ordering::SeqCst);
        if generation != stream_generation {
            stream_generation = generation;
            backoff = Backoff::new(shared.config.retry);
        }
        match backoff.failed(tokio::time::Instant::now().into_std()) {
            Next::GiveUp | Next::Fail => {
                refused(false).await;
                return Err(format!("gave up after {} attempts: {reason}", backoff.failures()));
            }
            Next::RetryIn(delay) => {
                refused(true).await;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.until_stopped() => return Err("the client stopped".into()),
                }
            }
        }
    }
}

/// Sends an event, unless the client stops first (nobody may read it).
async fn tell(shared: &Shared, events: &mpsc::Sender<ClientEvent>, ev: Option<ClientEvent>) {
    if let Some(ev) = ev {
        tokio::select! {
            _ = events.send(ev) => {}
            _ = shared.until_stopped() => {}
        }
    }
}

/// One POST of message `id`, its answer counted; `Err` only for network
/// trouble.
async fn post(shared: &Shared, id: u64, body: Vec<u8>) -> Result<PostOutcome, String> {
    let Mode::Channel { client_id } = &shared.config.mode else {
        return Err("a plain SSE reader sends no messages".into());
    };
    let url = with_query(&shared.config.url, &channel_query(client_id, Some(id)));
    let mut headers = http::HeaderMap::new();
    // What browsers send; servers must not depend on it.
    headers.insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain;charset=UTF-8"));
    let timeout = shared.config.timeout;
    let body = bytes::Bytes::from(body);
    let sent = super::request(
        &shared.http,
        &shared.config,
        http::Method::POST,
        url.clone(),
        headers.clone(),
        Some(body.clone()),
        Some(timeout),
    );
    let resp = match sent.await {
        Ok(resp) => resp,
        // The server answered and closed while the body was still being
        // written (a 413 from the declared length): read that answer, as
        // curl does, instead of retrying into the same refusal.
        Err(SendError::Http(e)) if early::closed_while_sending(&e) && url.scheme() == "http" => {
            headers.extend(shared.config.headers.clone());
            headers.insert(USER_AGENT, http::HeaderValue::from_static(super::USER_AGENT));
            let a = early::post_once(&url, &headers, body, timeout).await;
            let a = a.map_err(|why| format!("{} (asked again: {why})", describe(&e)))?;
            shared.answered(a.status.as_u16());
            return Ok(PostOutcome { message_id: id, status: a.status.as_u16(), reason: a.reason });
        }
        Err(e) => return Err(e.describe()),
    };
    let status = resp.status().as_u16();
    shared.answered(status);
    let reason = first_line(resp).await;
    Ok(PostOutcome { message_id: id, status, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let v = verdict;
        assert_eq!(v(200), Verdict::Accepted);
        assert_eq!(v(204), Verdict::Accepted);
        for n in [408, 429, 502, 503, 504] {
            assert_eq!(v(n), Verdict::Retry, "{n}");
        }
        assert_eq!(v(404), Verdict::UnknownClient);
        for n in [400, 403, 405, 413, 301, 500, 501, 505] {
            assert_eq!(v(n), Verdict::Refused, "{n}");
        }
    }
}
