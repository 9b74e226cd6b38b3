//! Checks of a plain SSE endpoint (`--raw`): the URL as given, read as
//! EventSource reads it, with no client id and no POSTs.

use http::StatusCode;
use tokio::time::Instant;

use super::Ctx;
use super::channel::{first_retry, judge_headers, judge_ids};
use super::probe::{Item, Stream};
use super::verdict::Verdict;

type Checked = Result<Verdict, Verdict>;

/// Events read at most by the id checks.
const EVENTS: usize = 5;

async fn open(cx: &Ctx, last_event_id: Option<&str>) -> Result<Stream, Verdict> {
    cx.get(&cx.http, cx.opts.url.clone(), last_event_id, None).await?.expect_event_stream().await
}

/// Up to `max` events (any type) before `deadline`.
pub async fn events(
    s: &mut Stream,
    max: usize,
    deadline: Instant,
) -> Vec<(crate::protocol::Event, Instant)> {
    let mut got = Vec::new();
    while got.len() < max {
        match s.next(deadline).await {
            Some((Item::Event(ev), at)) => got.push((ev, at)),
            None | Some((Item::End(_), _)) => break,
            Some(_) => {}
        }
    }
    got
}

fn too_few(cx: &Ctx, n: usize) -> Verdict {
    Verdict::skip(
        format!("{n} events within {}", humantime::format_duration(cx.opts.wait)),
        "too few to judge; raise --wait for a slow stream",
    )
}

pub async fn headers(cx: &Ctx) -> Checked {
    Ok(judge_headers(&open(cx, None).await?))
}

pub async fn line_ends(_cx: &Ctx) -> Checked {
    Ok(Verdict::skip(
        "not checked",
        "tolerating a BOM and CR, LF or CRLF line ends is the client's business: every WHATWG \
         parser (ssechan's included) accepts them all",
    ))
}

pub async fn event_ids(cx: &Ctx) -> Checked {
    let mut s = open(cx, None).await?;
    let got = events(&mut s, EVENTS, cx.deadline()).await;
    if got.len() < 2 {
        return Ok(too_few(cx, got.len()));
    }
    let ids: Vec<&str> = got.iter().map(|(e, _)| e.last_event_id.as_str()).collect();
    Ok(judge_ids(&ids))
}

pub async fn last_event_id(cx: &Ctx) -> Checked {
    let mut s = open(cx, None).await?;
    let got = events(&mut s, 2, cx.deadline()).await;
    drop(s);
    if got.len() < 2 {
        return Ok(too_few(cx, got.len()));
    }
    let (first, next) = (got[0].0.last_event_id.clone(), got[1].0.last_event_id.clone());
    if first.is_empty() {
        return Ok(Verdict::skip(
            "events carry no `id:`",
            "nothing to resume from (see raw.event-ids)",
        ));
    }
    let mut s = open(cx, Some(&first)).await?;
    let Some((ev, _)) = events(&mut s, 1, cx.deadline()).await.pop() else {
        return Ok(too_few(cx, 0));
    };
    Ok(judge_resume(&first, &next, &ev.last_event_id))
}

/// After `Last-Event-ID: first` (whose successor was `next`), the stream
/// began with `got`.
pub fn judge_resume(first: &str, next: &str, got: &str) -> Verdict {
    let fix = "resume after the id in Last-Event-ID (keep recent events to resend)";
    let seen =
        format!("after Last-Event-ID: {first} (followed by {next}) the stream began at id {got}");
    if got == next {
        return Verdict::pass(format!(
            "after Last-Event-ID: {first} the stream went on at id {got}"
        ));
    }
    match (first.parse::<u64>(), next.parse::<u64>(), got.parse::<u64>()) {
        (Ok(f), _, Ok(g)) if g <= f => Verdict::warn(
            seen,
            "the server ignores Last-Event-ID and starts over: a reconnecting client sees events twice",
            fix,
        ),
        (_, Ok(n), Ok(g)) if g > n => Verdict::warn(
            seen,
            "the server ignores Last-Event-ID: what was sent while the client was away is lost",
            fix,
        ),
        _ => Verdict::skip(seen, "opaque ids: cannot tell whether it continued"),
    }
}

pub async fn retry(cx: &Ctx) -> Checked {
    let mut s = open(cx, None).await?;
    Ok(match first_retry(cx, &mut s).await {
        Some(ms) => Verdict::pass(format!("retry: {ms} ms")),
        None => Verdict::warn(
            format!("no `retry:` within {}", humantime::format_duration(cx.opts.wait)),
            "clients reconnect after their own default (3 s in Chrome, 5 s in Firefox)",
            "send `retry: MS` when the stream starts",
        ),
    })
}

pub async fn no_content(cx: &Ctx) -> Checked {
    let s = cx.get(&cx.http, cx.opts.url.clone(), None, None).await?;
    if s.status != StatusCode::NO_CONTENT {
        return Ok(Verdict::skip(
            format!("the server answered {}", s.status),
            "204 is how a server tells EventSource to stop reconnecting; it did not use it here",
        ));
    }
    let body = s.reason().await;
    if body.is_empty() {
        return Ok(Verdict::pass("204 with no body: EventSource stops reconnecting"));
    }
    Ok(Verdict::warn(
        format!("204 with a body ({body:?})"),
        "a 204 has no body by definition; clients and proxies may misread the connection",
        "send 204 with an empty body",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::verdict::Status;

    #[test]
    fn resumes() {
        assert_eq!(judge_resume("5", "6", "6").status, Status::Pass);
        assert_eq!(judge_resume("5", "6", "1").status, Status::Warn);
        assert_eq!(judge_resume("5", "6", "9").status, Status::Warn);
        assert_eq!(judge_resume("a", "b", "b").status, Status::Pass);
        assert_eq!(judge_resume("a", "b", "z").status, Status::Skip);
    }
}
