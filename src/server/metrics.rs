//! What the server counts, and the Prometheus text it is shown as
//! (`serve --metrics ADDR`). Counters are plain atomics bumped where things
//! happen; gauges are read from the store when scraped.
//!
//! The rule for a shared count that admission reads (so that a healthy
//! server never refuses for a count that is momentarily wrong): it never
//! shows less than what it counts nor wraps, because each change is
//! applied under the lock that decided it, or the count is taken before
//! what it counts exists and given back after it is gone; and a decision
//! against a bound takes the room in the same atomic step as it checks
//! it ([`hold_within`]). The counts and where each keeps the rule:
//! - [`Counters::held`]: see its doc.
//! - TCP connections (`ServerShared::open_connections`, `mod.rs`): taken
//!   by the accept loop within `max_connections`, given back when the
//!   connection's task ends.
//! - Clients of the memory store: the registry's map, changed and checked
//!   against `max_clients` under the registry lock.
//! - Remembered closed ids and their bytes (`Registry::closed_bytes`):
//!   under the registry lock.
//! - Per channel (reservations, inbox, re-order buffer, queue, replay):
//!   fields of the [`super::channel::Channel`], under its lock.
//! - The accept queue: a bounded channel, whose permit is taken atomically.
//! - The Redis store's homes (`redis::registry`, against `max_clients`): a
//!   place taken with [`hold_within`] before the attach that may make one,
//!   given back when it made none or when its home closes. Out-of-order
//!   bytes and closed ids held in Redis: budgets kept in Redis, changed in
//!   the same script call as the data.
//!
//! The other gauges ([`Counts`]: channels, streams, remembered ids) are
//! read from the store's own state under its locks when scraped, and decide
//! nothing. The totals below (`*_total`) decide nothing: they are only added to,
//! where the thing happens, and a scrape may see one a moment before
//! another.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use http::StatusCode;

use super::store::Counts;

/// The refusal statuses counted one by one; anything else counts as
/// `other`.
const STATUSES: [u16; 10] = [400, 403, 404, 405, 406, 408, 413, 429, 503, 0];

/// Totals since the server started.
#[derive(Default)]
pub(crate) struct Counters {
    /// Message events handed to streams (replays count again).
    pub(crate) events: AtomicU64,
    /// Batches handed to streams.
    pub(crate) frames: AtomicU64,
    /// Bytes of event batches handed to streams.
    pub(crate) bytes_out: AtomicU64,
    /// Messages from clients delivered to the application, in order, once.
    pub(crate) messages_in: AtomicU64,
    /// Messages the application queued for clients (a broadcast counts once
    /// per client).
    pub(crate) messages_out: AtomicU64,
    pub(crate) channels_opened: AtomicU64,
    pub(crate) resumes: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    /// Events sent again after a `Last-Event-ID`.
    pub(crate) replayed: AtomicU64,
    /// Events a resume asked for that the replay log no longer had.
    pub(crate) gap_events: AtomicU64,
    pub(crate) slow_consumers: AtomicU64,
    /// Bytes held for incoming messages over all channels (a gauge), which
    /// POSTs are admitted against (`--max-incoming-total`). The memory
    /// store changes it only with a channel locked, before unlocking, by
    /// that channel's own part (`memory::HeldShare`), and admits a POST with
    /// [`hold_within`]: at every instant it is the sum of what the channels
    /// hold. MCP sessions (`mcp.rs`) change it under the session's lock, a
    /// POST admitted in one compare-and-add. The Redis store takes a POST's
    /// share with [`hold_within`] before its body is read and releases it
    /// when the POST ends; what the store hands a home is held ([`hold`])
    /// before it reaches the inbox and released after the application took
    /// it.
    pub(crate) held: AtomicUsize,
    refusals: [AtomicU64; STATUSES.len()],
}

/// Adds `n` to `count` if the sum stays within `limit`, in one atomic step
/// (two callers cannot both take the last room); whether it did.
pub(crate) fn hold_within(count: &AtomicUsize, n: usize, limit: usize) -> bool {
    count
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            c.checked_add(n).filter(|sum| *sum <= limit)
        })
        .is_ok()
}

/// Counts `n` more in `count`, before what they count is held (taken
/// before, given back after: a reader may see the count high for a moment,
/// never low).
pub(crate) fn hold(count: &AtomicUsize, n: usize) {
    if n > 0 {
        count.fetch_add(n, Ordering::Relaxed);
    }
}

/// Gives back `n` of `count`, once what they counted is no longer held.
/// Each follows the [`hold`] or [`hold_within`] it undoes, so the count
/// cannot go below zero; were one misplaced, it stops at zero instead of
/// wrapping to a huge value.
pub(crate) fn release(count: &AtomicUsize, n: usize) {
    if n > 0 {
        let r = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(n));
        debug_assert!(r.is_ok(), "{n} released from a count of less");
        if r.is_err() {
            count.store(0, Ordering::Relaxed);
        }
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn refused(&self, status: StatusCode) {
        let i = STATUSES.iter().position(|s| *s == status.as_u16()).unwrap_or(STATUSES.len() - 1);
        self.refusals[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (version 0.0.4) of these counters,
    /// the channel counts, the open TCP connections, and what the store
    /// adds (`extra`).
    pub(crate) fn render(&self, counts: &Counts, connections: usize, extra: &str) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric("ssechan_connections_open", "gauge", "TCP connections open.", connections as u64);
        metric(
            "ssechan_streams_open",
            "gauge",
            "Event streams attached to a channel.",
            counts.streams as u64,
        );
        metric("ssechan_channels", "gauge", "Channels open or suspended.", counts.channels as u64);
        metric(
            "ssechan_channels_suspended",
            "gauge",
            "Channels whose stream is lost and whose keep-alive runs.",
            counts.suspended as u64,
        );
        metric(
            "ssechan_channels_opened_total",
            "counter",
            "Channels created.",
            get(&self.channels_opened),
        );
        metric(
            "ssechan_messages_in_total",
            "counter",
            "Messages from clients delivered to the application.",
            get(&self.messages_in),
        );
        metric(
            "ssechan_messages_out_total",
            "counter",
            "Messages the application queued for clients.",
            get(&self.messages_out),
        );
        metric(
            "ssechan_events_written_total",
            "counter",
            "Message events handed to streams, replays included.",
            get(&self.events),
        );
        metric(
            "ssechan_bytes_out_total",
            "counter",
            "Bytes of events handed to streams.",
            get(&self.bytes_out),
        );
        metric(
            "ssechan_resumes_total",
            "counter",
            "Suspended channels resumed by a new stream.",
            get(&self.resumes),
        );
        metric(
            "ssechan_takeovers_total",
            "counter",
            "Streams taken over by a newer one.",
            get(&self.takeovers),
        );
        metric(
            "ssechan_replayed_events_total",
            "counter",
            "Events sent again after a Last-Event-ID.",
            get(&self.replayed),
        );
        metric(
            "ssechan_gap_events_total",
            "counter",
            "Events a resume asked for that replay no longer had.",
            get(&self.gap_events),
        );
        metric(
            "ssechan_slow_consumer_disconnects_total",
            "counter",
            "Clients disconnected for a full outgoing queue.",
            get(&self.slow_consumers),
        );
        metric(
            "ssechan_incoming_bytes",
            "gauge",
            "Bytes held for incoming messages.",
            counts.incoming_bytes as u64,
        );
        let _ = writeln!(out, "# HELP ssechan_refusals_total Requests refused, by status.");
        let _ = writeln!(out, "# TYPE ssechan_refusals_total counter");
        for (status, n) in STATUSES.iter().zip(&self.refusals) {
            let label = if *status == 0 { "other".to_string() } else { status.to_string() };
            let _ = writeln!(out, "ssechan_refusals_total{{status=\"{label}\"}} {}", get(n));
        }
        out.push_str(extra);
        out
    }
}

/// Connections the metrics listener serves at once; one more is closed as
/// soon as it is accepted (a scraper makes one at a time).
pub(crate) const METRICS_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` on `listener` until the server shuts down: the
/// exposition of `handle`'s server, on an address of its own so that it
/// can be firewalled apart from the channel. The listener rules of every
/// listener hold: the same `Host` rules, at most [`METRICS_CONNECTIONS`]
/// connections, one request each, and each connection ends within the
/// request timeout (its head read, the counts written).
pub(crate) async fn serve(listener: tokio::net::TcpListener, handle: super::ServerHandle) {
    use http_body_util::Full;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let local = listener.local_addr().ok();
    let hosts =
        local.map(|a| super::policy::HostPolicy::new(a, &handle.shared.config.allowed_hosts));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    let mut stop = handle.shared.stop.subscribe();
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics: {METRICS_CONNECTIONS} connections open; one more closed");
            continue;
        };
        let (handle, hosts) = (handle.clone(), hosts.clone());
        let timeout = handle.shared.config.request_timeout;
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok());
                    let (status, body) = if hosts.as_ref().is_some_and(|h| h.check(host).is_err()) {
                        (StatusCode::FORBIDDEN, "Host is not this server\n".to_string())
                    } else if req.uri().path() != "/metrics" {
                        (
                            StatusCode::NOT_FOUND,
                            "not found: the metrics are at /metrics\n".to_string(),
                        )
                    } else if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
                        (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".to_string())
                    } else {
                        (StatusCode::OK, handle.metrics())
                    };
                    let mut r = hyper::Response::new(Full::new(bytes::Bytes::from(body)));
                    *r.status_mut() = status;
                    let kind = if status == StatusCode::OK {
                        "text/plain; version=0.0.4; charset=utf-8"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    r.headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(kind));
                    std::future::ready(Ok::<_, std::convert::Infallible>(r))
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(timeout, conn).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn holding_within_a_limit_is_one_step() {
        let g = AtomicUsize::new(0);
        assert!(hold_within(&g, 60, 100));
        assert!(!hold_within(&g, 41, 100), "61 past the limit");
        assert!(hold_within(&g, 40, 100), "exactly the limit fits");
        assert!(!hold_within(&g, 1, 100));
        release(&g, 100);
        assert_eq!(g.load(Ordering::Relaxed), 0);
        hold(&g, 5);
        assert!(!hold_within(&g, usize::MAX, usize::MAX), "no wrap on overflow");
        release(&g, 5);
        // Threads take and give back at once: never past the limit, and
        // the count ends where it began.
        let g = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if hold_within(&g, 7, 1000) {
                            assert!(g.load(Ordering::Relaxed) <= 1000);
                            release(&g, 7);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert_eq!(g.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_exposition_is_well_formed_and_counts() {
        let c = Counters::default();
        Counters::add(&c.messages_in, 3);
        c.refused(StatusCode::NOT_FOUND);
        c.refused(StatusCode::NOT_FOUND);
        c.refused(StatusCode::IM_A_TEAPOT);
        let counts = Counts { channels: 2, suspended: 1, streams: 1, ..Counts::default() };
        let text = c.render(&counts, 5, "ssechan_store_extra 1\n");
        assert!(text.contains("\nssechan_messages_in_total 3\n"), "{text}");
        assert!(
            text.contains("\nssechan_channels 2\n")
                && text.contains("\nssechan_connections_open 5\n")
        );
        assert!(text.contains("ssechan_refusals_total{status=\"404\"} 2\n"), "{text}");
        assert!(text.contains("ssechan_refusals_total{status=\"other\"} 1\n"), "{text}");
        assert!(text.ends_with("ssechan_store_extra 1\n"));
        // Every sample line is NAME[{labels}] VALUE, after its HELP and TYPE.
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["gauge", "counter"].contains(&kind), "{line}");
                assert!(kind != "counter" || name.ends_with("_total"), "{line}");
                typed.insert(name.to_string());
            } else if !line.starts_with('#') && !line.starts_with("ssechan_store_extra") {
                let (name, value) = line.rsplit_once(' ').unwrap();
                let name = name.split('{').next().unwrap();
                assert!(typed.contains(name), "{line}");
                value.parse::<f64>().unwrap();
            }
        }
    }
}
