//! Listen mode: N streams from any SSE endpoint (a channel, or with `--raw`
//! plain SSE), counting events, time to first event and gaps in `id:`
//! sequences. One task per stream, polling its own connection.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::debug;

use super::Plan;
use super::conn::{ConnectError, OpenStream, StreamConn, open_stream};
use crate::protocol::parser::{EventStreamParser, Parsed};

const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// What one stream saw.
#[derive(Debug, Default, Clone)]
pub struct StreamResult {
    pub connected: bool,
    pub refused: bool,
    pub events: u64,
    /// Ids skipped by forward jumps.
    pub missing: u64,
    pub id_gaps: u64,
    /// Ids that went backwards.
    pub out_of_order: u64,
    pub resumes: u64,
    pub failed_resumes: u64,
    pub stream_ends: u64,
    /// Clock µs of the first and the last event.
    pub first_event_us: Option<u64>,
    pub last_event_us: u64,
    pub error: Option<String>,
}

/// Follows the id sequence of one stream across reconnects.
#[derive(Debug, Default)]
pub struct IdTracker {
    last: Option<u64>,
    pub missing: u64,
    pub gaps: u64,
    pub backwards: u64,
}

impl IdTracker {
    /// Notes the stream's last event id at an event. An unchanged id means
    /// the event had no `id:` field; non-numeric ids are not tracked.
    pub fn observe(&mut self, id: &str) {
        let Ok(id) = id.parse::<u64>() else { return };
        match self.last {
            Some(last) if id == last => return,
            Some(last) if id < last => self.backwards += 1,
            Some(last) if id > last + 1 => {
                self.gaps += 1;
                self.missing += id - last - 1;
            }
            _ => {}
        }
        self.last = Some(id);
    }
}

pub async fn run(index: usize, plan: Arc<Plan>, gate: Arc<Semaphore>) -> StreamResult {
    let mut r = StreamResult::default();
    let id = format!("{}-{index}", plan.run_id);
    let uri = plan.target.stream_uri((!plan.raw).then_some(id.as_str()));
    let deadline = plan.duration.map(|d| Instant::now() + d);
    let (first, opened_at) = {
        let _permit = gate.acquire().await;
        let opened_at = plan.clock.now_us();
        let t0 = std::time::Instant::now();
        let s = open_stream(&plan.target, plan.addr, uri.clone(), None, plan.connect_timeout).await;
        if s.is_ok() {
            plan.stats.local().connect.record_us(t0.elapsed().as_micros() as u64);
        }
        (s, opened_at)
    };
    let mut stream = match first {
        Ok(s) => Some(s),
        Err(e) => {
            r.refused = e.is_refused();
            r.error = Some(format!("connect: {e}"));
            return r;
        }
    };
    r.connected = true;
    let mut parser = EventStreamParser::new();
    let mut ids = IdTracker::default();
    let mut backoff = RETRY_MIN;
    let mut failing_since: Option<Instant> = None;
    let give_up = plan.drain.max(plan.connect_timeout);
    'run: loop {
        let Some(OpenStream { conn, body }) = stream.take() else { break };
        let mut conn: Option<StreamConn> = Some(conn);
        let mut body: Incoming = body;
        // Read until the stream ends, the deadline passes or enough came.
        let ended = loop {
            let next = poll_fn(|cx| {
                if let Some(c) = &mut conn
                    && Pin::new(c).poll(cx).is_ready()
                {
                    conn = None;
                }
                if let Poll::Ready(f) = Pin::new(&mut body).poll_frame(cx) {
                    return Poll::Ready(Some(f));
                }
                Poll::Pending
            });
            let frame = match deadline {
                Some(d) => match tokio::time::timeout_at(d, next).await {
                    Ok(f) => f,
                    Err(_) => break 'run,
                },
                None => next.await,
            };
            let chunk = match frame {
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
                Some(Some(Err(e))) => break Some(e.to_string()),
                Some(None) | None => break None,
            };
            // A stream that is always ready never lets the timeout fire.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break 'run;
            }
            let now = plan.clock.now_us();
            parser.feed(&chunk);
            let mut new = 0;
            loop {
                match parser.next_item() {
                    Ok(Some(Parsed::Event(ev))) => {
                        if ev.event == crate::protocol::CONTROL_EVENT
                            && ev.data == crate::protocol::CONTROL_CLOSE_DATA
                        {
                            plan.stats.counters().received.fetch_add(new, Ordering::Relaxed);
                            break 'run;
                        }
                        ids.observe(&ev.last_event_id);
                        new += 1;
                        r.events += 1;
                        if r.first_event_us.is_none() {
                            r.first_event_us = Some(now);
                            plan.stats.local().first_event.record_us(now - opened_at);
                        }
                        r.last_event_us = now;
                        if plan.duration.is_none() && r.events >= plan.messages {
                            plan.stats.counters().received.fetch_add(new, Ordering::Relaxed);
                            break 'run;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        r.error.get_or_insert_with(|| format!("event stream: {e}"));
                        break 'run;
                    }
                }
            }
            plan.stats.counters().received.fetch_add(new, Ordering::Relaxed);
        };
        debug!(stream = index, ?ended, "stream ended");
        drop(body);
        parser.reset_stream();
        r.stream_ends += 1;
        // Reconnect as EventSource does, resuming after the last id.
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break 'run;
            }
            plan.stats.counters().reconnects.fetch_add(1, Ordering::Relaxed);
            let last = parser.last_event_id().to_string();
            let res = open_stream(
                &plan.target,
                plan.addr,
                uri.clone(),
                Some(&last),
                plan.connect_timeout,
            );
            let res = match deadline {
                Some(d) => match tokio::time::timeout_at(d, res).await {
                    Ok(x) => x,
                    Err(_) => break 'run,
                },
                None => res.await,
            };
            match res {
                Ok(s) => {
                    r.resumes += 1;
                    backoff = RETRY_MIN;
                    failing_since = None;
                    stream = Some(s);
                    continue 'run;
                }
                // 204: the server says this stream is over.
                Err(ConnectError::NoContent) => break 'run,
                Err(e) => {
                    r.failed_resumes += 1;
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > give_up {
                        r.error = Some(format!("reconnect failed for {:?}: {e}", since.elapsed()));
                        break 'run;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }
    r.missing = ids.missing;
    r.id_gaps = ids.gaps;
    r.out_of_order = ids.backwards;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(ids: &[&str]) -> IdTracker {
        let mut t = IdTracker::default();
        for id in ids {
            t.observe(id);
        }
        t
    }

    #[test]
    fn contiguous_ids_have_no_gaps() {
        let t = track(&["1", "2", "3", "4"]);
        assert_eq!((t.gaps, t.missing, t.backwards), (0, 0, 0));
    }

    #[test]
    fn counts_gaps_and_missing_ids() {
        let t = track(&["1", "2", "5", "6", "8"]);
        assert_eq!((t.gaps, t.missing, t.backwards), (2, 3, 0));
    }

    #[test]
    fn repeated_id_is_an_event_without_id() {
        let t = track(&["3", "3", "3", "4"]);
        assert_eq!((t.gaps, t.missing, t.backwards), (0, 0, 0));
    }

    #[test]
    fn first_id_may_be_anything_and_non_numeric_is_ignored() {
        let t = track(&["", "abc", "100", "101", "x", "102"]);
        assert_eq!((t.gaps, t.missing, t.backwards), (0, 0, 0));
    }

    #[test]
    fn backwards_ids() {
        let t = track(&["5", "6", "2", "3"]);
        assert_eq!(t.backwards, 1);
    }
}
