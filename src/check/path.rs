//! Checks of the network path: what proxies, load balancers and CDNs
//! between the client and the server do to a stream. They apply to channel
//! and plain endpoints alike, and say most when run through the proxy.

use std::time::{Duration, SystemTime};

use http::Version;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Url;
use tokio::time::Instant;

use super::Ctx;
use super::channel::{Echoed, echo_of};
use super::probe::{self, Read, Stream};
use super::verdict::Verdict;

type Checked = Result<Verdict, Verdict>;

/// Echoes timed by `path.buffering`.
const ECHOES: u64 = 5;
/// An echo slower than this (POST to event) is worth a warning.
const SLOW_ECHO: Duration = Duration::from_millis(250);
/// Events a plain stream is read for, at most, to judge buffering.
const RAW_EVENTS: usize = 20;
/// What turns a proxy's buffering of event streams off.
pub(super) const BUFFERING_FIX: &str = "nginx: `proxy_buffering off` (or send \
    `X-Accel-Buffering: no`); other proxies: turn response buffering off for text/event-stream";

/// The stream URL of this mode: a fresh channel's, or the URL as given.
fn stream_url(cx: &Ctx, check: &str) -> Url {
    if cx.opts.raw { cx.opts.url.clone() } else { cx.channel(check).stream_url() }
}

async fn open(cx: &Ctx, client: &reqwest::Client, check: &str) -> Result<Stream, Verdict> {
    cx.get(client, stream_url(cx, check), None, None).await?.expect_event_stream().await
}

pub async fn buffering(cx: &Ctx) -> Checked {
    if let Some(held) = &cx.held {
        return Ok(held.verdict());
    }
    if cx.opts.raw {
        return buffering_raw(cx).await;
    }
    if let Some(b) = &cx.echo().await.buffered {
        return Ok(b.verdict());
    }
    let check = "path.buffering";
    let ch = cx.channel(check);
    let mut s = cx.open(&ch, None).await?;
    let mut times = Vec::new();
    for n in 0..ECHOES {
        let message = format!("ssechan check: {check} {n}");
        let sent = Instant::now();
        cx.send_ok(&ch, n, &message).await?;
        match echo_of(cx, &ch, &mut s, &message, sent, ECHOES).await {
            Echoed::Came(_, Some(burst)) => return Ok(burst.verdict()),
            Echoed::Came(m, None) => times.push(m.at.saturating_duration_since(sent)),
            Echoed::Not(why) => return Ok(Verdict::broken(format!("echo {n}: {why}"))),
        }
    }
    let (lo, hi) = (times.iter().min().copied(), times.iter().max().copied());
    let (lo, hi) = (lo.unwrap_or_default(), hi.unwrap_or_default());
    let seen = format!("{ECHOES} echoes, {:.1}–{:.1} ms from POST to event", ms(lo), ms(hi));
    if hi > SLOW_ECHO {
        return Ok(Verdict::warn(
            seen,
            "events arrive late: something on the path holds them a while",
            "look for response buffering or compression on proxies (nginx: `proxy_buffering off`)",
        ));
    }
    Ok(Verdict::pass(seen))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A plain stream: timestamps in the ids when there are, else the shape
/// of the reads.
async fn buffering_raw(cx: &Ctx) -> Checked {
    let mut s = open(cx, &cx.http, "path.buffering").await?;
    let deadline = cx.deadline();
    let mut stamped = Vec::new();
    let mut n = 0;
    while n < RAW_EVENTS {
        match s.next(deadline).await {
            Some((super::probe::Item::Event(ev), _)) => {
                n += 1;
                stamped.push((ev.last_event_id, SystemTime::now()));
            }
            None | Some((super::probe::Item::End(_), _)) => break,
            Some(_) => {}
        }
    }
    Ok(judge_raw(&s.reads, &stamped))
}

/// Judges buffering from what a plain stream gave: ids that are Unix
/// times in milliseconds tell each event's delay; otherwise many events
/// per read in large reads look like a buffer flushing.
pub fn judge_raw(reads: &[Read], stamped: &[(String, SystemTime)]) -> Verdict {
    let fix = BUFFERING_FIX;
    let delays: Option<Vec<f64>> = stamped.iter().map(|(id, at)| delay_ms(id, *at)).collect();
    if let Some(mut d) = delays.filter(|d| d.len() >= 2) {
        d.sort_by(f64::total_cmp);
        let median = d[d.len() / 2];
        let seen = format!(
            "{} events arrived a median {median:.0} ms after the time in their ids (clocks assumed in sync)",
            d.len()
        );
        if median > 1000.0 {
            return Verdict::fail(
                seen,
                "events are held back on the way: a proxy buffers the stream",
                fix,
            );
        }
        return Verdict::pass(seen);
    }
    let with_events: Vec<&Read> = reads.iter().filter(|r| r.events > 0).collect();
    let events: u32 = with_events.iter().map(|r| r.events).sum();
    if events < 3 {
        return Verdict::skip(
            format!("{events} events in the wait"),
            "too few to tell; with an echo (channel mode) or ids holding Unix times in ms it can \
             be measured; raise --wait for a slow stream",
        );
    }
    let largest = with_events.iter().map(|r| r.bytes).max().unwrap_or(0);
    let seen = format!("{events} events in {} reads of up to {largest} bytes", with_events.len());
    if events as usize <= with_events.len() * 3 / 2 {
        return Verdict::pass(format!("{seen}: each arrived on its own"));
    }
    if largest >= 2048 {
        return Verdict::warn(
            seen,
            "events arrive in bursts: a proxy (or the server) buffers the stream",
            fix,
        );
    }
    Verdict::pass(format!("{seen}: small reads, the server writes a few at once"))
}

/// The delay of an event whose id is a Unix time in milliseconds (within a
/// day of now); `None` for any other id.
fn delay_ms(id: &str, at: SystemTime) -> Option<f64> {
    let stamp: u64 = id.parse().ok()?;
    let now = at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_millis() as u64;
    if stamp.abs_diff(now) > 86_400_000 {
        return None;
    }
    Some(now as f64 - stamp as f64)
}

pub async fn headers(cx: &Ctx) -> Checked {
    let url = stream_url(cx, "path.headers");
    let req = probe::stream_request(&cx.http, url, None, None)
        .header(ACCEPT_ENCODING, "gzip, deflate, br");
    let s = cx.send_get(req, cx.opts.timeout).await?.expect_event_stream().await?;
    Ok(judge_mangling(&s))
}

/// Headers a proxy adds or rewrites on a stream.
pub fn judge_mangling(s: &Stream) -> Verdict {
    if let Some(len) = s.headers.get(CONTENT_LENGTH) {
        return Verdict::fail(
            format!("Content-Length: {} on an event stream", len.to_str().unwrap_or("?")),
            "the client stops after that many bytes, and a proxy that sets it read the whole \
             response first",
            "let the stream go chunked or close-delimited (nginx: `proxy_buffering off`)",
        );
    }
    if let Some(enc) = s.headers.get(CONTENT_ENCODING) {
        return Verdict::warn(
            format!("Content-Encoding: {} on an event stream", enc.to_str().unwrap_or("?")),
            "a compressor holds events until its block fills unless it flushes every write",
            "turn compression off for text/event-stream (nginx: drop it from `gzip_types`)",
        );
    }
    let ct = s.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let lower = ct.to_ascii_lowercase();
    if lower.contains("charset") && !lower.contains("utf-8") {
        return Verdict::warn(
            format!("Content-Type: {ct}"),
            "event streams are always UTF-8; a proxy rewrote the charset",
            "leave Content-Type as `text/event-stream`",
        );
    }
    Verdict::pass(format!(
        "Content-Type: {ct}, no Content-Length, no Content-Encoding (asked for gzip, deflate, br)"
    ))
}

/// Whether the URL is https (ALPN) rather than http (prior knowledge).
pub(super) fn tls(cx: &Ctx) -> bool {
    cx.opts.url.scheme() == "https"
}

/// The client that speaks h2 to this URL: ALPN's choice on https, prior
/// knowledge on http; `Err` says why there is none. Found once per run.
async fn h2_client(cx: &Ctx) -> Result<&reqwest::Client, String> {
    let client = if tls(cx) { &cx.http } else { &cx.h2 };
    let found = cx
        .h2_found
        .get_or_init(|| async {
            // A server that does not speak h2c may just wait for more bytes.
            let req = probe::stream_request(client, stream_url(cx, "path.h2"), None, None);
            match cx.send_get(req, cx.opts.wait).await {
                Ok(s) if s.version == Version::HTTP_2 && s.is_event_stream() => Ok(()),
                Ok(s) if s.version == Version::HTTP_2 => Err(format!("h2 answered {}", s.status)),
                Ok(s) => Err(format!("ALPN chose {:?}", s.version)),
                Err(v) => Err(v.seen),
            }
        })
        .await;
    found.clone().map(|()| client)
}

pub async fn h2(cx: &Ctx) -> Checked {
    let found = h2_client(cx).await.map(|_| ());
    Ok(h2_verdict(found, tls(cx)))
}

/// Whether the endpoint speaks h2 (`found`: why not, when it does not),
/// judged alike for channel, plain and MCP endpoints.
pub(super) fn h2_verdict(found: Result<(), String>, tls: bool) -> Verdict {
    let limit = "browsers hold at most 6 streams per origin over HTTP/1.1, shared by all tabs: \
                 the 7th stream, and every POST behind it, waits";
    let fix = "serve over https with HTTP/2 where TLS ends (nginx: `listen 443 ssl http2;`)";
    match (found, tls) {
        (Ok(()), true) => Verdict::pass("h2 via ALPN"),
        (Ok(()), false) => {
            Verdict::pass("h2c with prior knowledge (browsers use h2 only over https)")
        }
        (Err(why), true) => Verdict::warn(format!("HTTP/1.1 only: {why}"), limit, fix),
        (Err(why), false) => Verdict::warn(
            format!("HTTP/1.1 only: h2c with prior knowledge failed ({why})"),
            limit,
            fix,
        ),
    }
}

/// Opens streams one after another while holding the earlier ones open;
/// returns how many opened before the first that did not.
async fn hold_open(cx: &Ctx, client: &reqwest::Client, n: usize) -> (usize, Option<String>) {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let opened = tokio::time::timeout(cx.opts.wait, open(cx, client, "path.streams")).await;
        match opened {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(v)) => return (held.len(), Some(v.seen)),
            Err(_) => {
                let w = humantime::format_duration(cx.opts.wait);
                return (held.len(), Some(format!("no answer within {w}")));
            }
        }
    }
    (held.len(), None)
}

pub async fn streams(cx: &Ctx) -> Checked {
    let n = cx.opts.streams;
    let (h1, h1_why) = hold_open(cx, &cx.http1, n).await;
    let mut seen = format!("HTTP/1.1: {h1} of {n} at once on separate connections");
    let mut short = h1_why.map(|w| format!("HTTP/1.1 stream {}: {w}", h1 + 1));
    match h2_client(cx).await {
        Ok(client) => {
            let (h2, why) = hold_open(cx, client, n).await;
            seen.push_str(&format!("; h2: {h2} of {n} on one connection"));
            if let Some(w) = why {
                short.get_or_insert(format!("h2 stream {}: {w}", h2 + 1));
            }
        }
        Err(_) => seen.push_str("; no h2 (see path.h2)"),
    }
    seen.push_str(" (a browser opens at most 6 per origin over HTTP/1.1)");
    Ok(match short {
        None => Verdict::pass(seen),
        Some(w) => Verdict::warn(
            format!("{seen}; {w}"),
            "a limit on streams per client (a connection limit per address, or h2's \
             SETTINGS_MAX_CONCURRENT_STREAMS) stops clients that open several",
            "raise the limit (nginx: `limit_conn`, `http2_max_concurrent_streams`)",
        ),
    })
}

pub async fn idle_timeout(cx: &Ctx) -> Checked {
    let probe = cx.opts.idle_probe;
    if probe.is_zero() {
        return Ok(Verdict::skip("--idle-probe 0", "the idle probe is off"));
    }
    // Behind a path that holds streams back the headers may come only
    // when the stream is cut: wait for them as long as the probe lasts.
    let req = probe::stream_request(&cx.http, stream_url(cx, "path.idle-timeout"), None, None);
    let mut s = cx.send_get(req, probe + cx.opts.timeout).await?.expect_event_stream().await?;
    Ok(judge_idle(&mut s, probe).await)
}

/// Holds `s` open for `probe`, reading what comes: passes if nothing cut
/// it (channel, plain and MCP streams alike).
pub(super) async fn judge_idle(s: &mut Stream, probe: Duration) -> Verdict {
    let deadline = s.requested + probe;
    let shown = humantime::format_duration(probe);
    match s.until_end(deadline).await {
        None => Verdict::pass(format!(
            "a quiet stream stayed open for {shown} ({} bytes came)",
            s.bytes
        )),
        Some((why, at)) => {
            let after = at.saturating_duration_since(s.requested);
            let quiet = match s.reads.last() {
                Some(r) => format!(
                    "{:.1}s after its last bytes",
                    at.saturating_duration_since(r.at).as_secs_f64()
                ),
                None => "before any bytes came".into(),
            };
            Verdict::fail(
                format!("the stream was cut after {:.1}s ({why}), {quiet}", after.as_secs_f64()),
                "a proxy or load balancer closes streams that are quiet that long \
                 (nginx: `proxy_read_timeout`, 60 s by default)",
                "raise the read timeout (nginx: `proxy_read_timeout 1h;`) or send heartbeats \
                 more often than it (ssechan serve --heartbeat 15s)",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::verdict::Status;

    fn reads(spec: &[(usize, u32)]) -> Vec<Read> {
        let t = Instant::now();
        spec.iter().map(|&(bytes, events)| Read { at: t, bytes, events }).collect()
    }

    #[test]
    fn raw_reads() {
        let one_each = reads(&[(30, 1), (30, 1), (30, 1), (30, 1)]);
        assert_eq!(judge_raw(&one_each, &[]).status, Status::Pass);
        let bursts = reads(&[(4096, 100), (4096, 100)]);
        assert_eq!(judge_raw(&bursts, &[]).status, Status::Warn);
        let few = reads(&[(30, 1)]);
        assert_eq!(judge_raw(&few, &[]).status, Status::Skip);
        let small = reads(&[(100, 4), (100, 4)]);
        assert_eq!(judge_raw(&small, &[]).status, Status::Pass);
    }

    #[test]
    fn raw_timestamps() {
        let now = SystemTime::now();
        let ms = |d: u64| {
            (now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64 - d).to_string()
        };
        let prompt = [(ms(3), now), (ms(2), now), (ms(4), now)];
        let v = judge_raw(&[], &prompt);
        assert_eq!(v.status, Status::Pass, "{v:?}");
        let late = [(ms(3000), now), (ms(2500), now), (ms(2000), now)];
        assert_eq!(judge_raw(&[], &late).status, Status::Fail);
        // Small numbers are counters, not times.
        assert!(delay_ms("41", now).is_none());
    }
}
