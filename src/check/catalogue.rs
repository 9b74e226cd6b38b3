//! The checks as data: id, title, what each proves, whether it needs an
//! echo, where it applies, and the async function that runs it. `--list`,
//! the table of docs/check.md and `--only`/`--skip` all read this one table.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::verdict::Verdict;
use super::{Ctx, channel, mcp, path, raw};

/// Which endpoints a check applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// package:sse channel endpoints (the default).
    Channel,
    /// Plain SSE endpoints (`--raw`).
    Raw,
    /// Any channel or plain SSE endpoint: what the network path between
    /// does.
    Path,
    /// MCP Streamable HTTP endpoints (`--mcp`).
    Mcp,
}

/// What kind of endpoint a run checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Channel,
    Raw,
    Mcp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Channel => "channel",
            Mode::Raw => "raw",
            Mode::Mcp => "mcp",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Mode::Channel => "without --raw or --mcp",
            Mode::Raw => "with --raw",
            Mode::Mcp => "with --mcp",
        }
    }
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Channel => "channel",
            Group::Raw => "raw",
            Group::Path => "path",
            Group::Mcp => "mcp",
        }
    }

    /// Whether checks of this group run in the given mode. The path
    /// checks read channel or plain streams; an MCP endpoint has neither.
    pub fn runs_in(self, mode: Mode) -> bool {
        match self {
            Group::Channel => mode == Mode::Channel,
            Group::Raw => mode == Mode::Raw,
            Group::Path => mode != Mode::Mcp,
            Group::Mcp => mode == Mode::Mcp,
        }
    }
}

/// A running check: a boxed future, so the table can hold plain fns.
pub type Running = Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// One named check.
pub struct Check {
    /// Stable id, `area.name`: what `--only`/`--skip` and CI reports use.
    pub id: &'static str,
    pub group: Group,
    /// A few words.
    pub title: &'static str,
    /// What a PASS proves (the table of docs/check.md and `--list`).
    pub proves: &'static str,
    /// In channel mode: skipped with a reason when the server does not echo.
    pub needs_echo: bool,
    /// Waits long by design (heartbeat, idle probe): started at once and run
    /// beside the others instead of in turn.
    pub background: bool,
    pub run: fn(Arc<Ctx>) -> Running,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id)
    }
}

/// Boxes `$f(&ctx)`, an `async fn(&Ctx) -> Result<Verdict, Verdict>` whose
/// `Err` is an early verdict (usually a FAIL found half-way).
macro_rules! run {
    ($f:path) => {
        |cx: Arc<Ctx>| -> Running { Box::pin(async move { $f(&cx).await.unwrap_or_else(|v| v) }) }
    };
}

/// Every check, in the order they run and print.
pub static CHECKS: &[Check] = &[
    Check {
        id: "stream.headers",
        group: Group::Channel,
        title: "stream headers",
        proves: "a GET with a client id opens a 200 `text/event-stream` with `Cache-Control: no-cache`",
        needs_echo: false,
        background: false,
        run: run!(channel::headers),
    },
    Check {
        id: "stream.retry",
        group: Group::Channel,
        title: "retry field",
        proves: "`retry:` is sent and well under 5 s, before package:sse clients give up on an error",
        needs_echo: false,
        background: false,
        run: run!(channel::retry),
    },
    Check {
        id: "stream.event-ids",
        group: Group::Channel,
        title: "event ids",
        proves: "every message event has an `id:` and the ids increase, so a resume can say where it stopped",
        needs_echo: true,
        background: false,
        run: run!(channel::event_ids),
    },
    Check {
        id: "post.bad-json",
        group: Group::Channel,
        title: "bad body refused",
        proves: "a POST whose body is not a JSON string gets 400, not a silent 200",
        needs_echo: false,
        background: false,
        run: run!(channel::post_bad_json),
    },
    Check {
        id: "post.unknown-client",
        group: Group::Channel,
        title: "unknown client refused",
        proves: "a POST for a client id with no channel gets 404, not a silent 200",
        needs_echo: false,
        background: false,
        run: run!(channel::post_unknown_client),
    },
    Check {
        id: "post.oversize",
        group: Group::Channel,
        title: "oversize body refused",
        proves: "a POST over the message limit (`--message-limit`) gets 413",
        needs_echo: false,
        background: false,
        run: run!(channel::post_oversize),
    },
    Check {
        id: "post.far-ahead",
        group: Group::Channel,
        title: "far-ahead id refused",
        proves: "a POST a million ids ahead gets 429 instead of being held without bound",
        needs_echo: false,
        background: false,
        run: run!(channel::post_far_ahead),
    },
    Check {
        id: "order.shuffled-posts",
        group: Group::Channel,
        title: "shuffled POSTs in order",
        proves: "POSTs arriving in shuffled order are delivered in `messageId` order, each once",
        needs_echo: true,
        background: false,
        run: run!(channel::order_shuffled),
    },
    Check {
        id: "order.duplicate-posts",
        group: Group::Channel,
        title: "duplicate POSTs dropped",
        proves: "a repeated `messageId` is acknowledged (200) and not delivered again, so retries are safe",
        needs_echo: true,
        background: false,
        run: run!(channel::order_duplicates),
    },
    Check {
        id: "resume.keep-alive",
        group: Group::Channel,
        title: "resume within keep-alive",
        proves: "a message sent while the stream is down arrives after a reconnect with the same client id",
        needs_echo: true,
        background: false,
        run: run!(channel::resume_keep_alive),
    },
    Check {
        id: "resume.replay",
        group: Group::Channel,
        title: "Last-Event-ID replay",
        proves: "a reconnect with `Last-Event-ID: L` gets every event after L again (those a dropped stream lost)",
        needs_echo: true,
        background: false,
        run: run!(channel::resume_replay),
    },
    Check {
        id: "resume.takeover",
        group: Group::Channel,
        title: "takeover of a half-open stream",
        proves: "a second GET for a client id ends the older stream and carries the channel from then on",
        needs_echo: false,
        background: false,
        run: run!(channel::resume_takeover),
    },
    Check {
        id: "close.control",
        group: Group::Channel,
        title: "control close",
        proves: "a control event says `close` and ends the stream (package:sse clients throw on anything else)",
        needs_echo: false,
        background: false,
        run: run!(channel::close_control),
    },
    Check {
        id: "cors.credentials",
        group: Group::Channel,
        title: "CORS with credentials",
        proves: "a page on another origin (`--origin`) may read the stream and POST with credentials",
        needs_echo: false,
        background: false,
        run: run!(channel::cors_credentials),
    },
    Check {
        id: "cors.preflight",
        group: Group::Channel,
        title: "CORS preflight",
        proves: "`OPTIONS` answers 2xx allowing POST and `Content-Type` for the foreign origin",
        needs_echo: false,
        background: false,
        run: run!(channel::cors_preflight),
    },
    Check {
        id: "raw.headers",
        group: Group::Raw,
        title: "stream headers",
        proves: "the URL answers 200 `text/event-stream` with `Cache-Control: no-cache`",
        needs_echo: false,
        background: false,
        run: run!(raw::headers),
    },
    Check {
        id: "raw.line-ends",
        group: Group::Raw,
        title: "BOM and line ends",
        proves: "nothing: tolerating a BOM and CR, LF or CRLF is the client's business (always skipped)",
        needs_echo: false,
        background: false,
        run: run!(raw::line_ends),
    },
    Check {
        id: "raw.event-ids",
        group: Group::Raw,
        title: "event ids",
        proves: "events carry `id:` and, when numeric, the ids increase",
        needs_echo: false,
        background: false,
        run: run!(raw::event_ids),
    },
    Check {
        id: "raw.last-event-id",
        group: Group::Raw,
        title: "Last-Event-ID resume",
        proves: "a reconnect with `Last-Event-ID` continues after that id instead of starting over",
        needs_echo: false,
        background: false,
        run: run!(raw::last_event_id),
    },
    Check {
        id: "raw.retry",
        group: Group::Raw,
        title: "retry field",
        proves: "the stream sets its reconnect delay with `retry:`",
        needs_echo: false,
        background: false,
        run: run!(raw::retry),
    },
    Check {
        id: "raw.no-content",
        group: Group::Raw,
        title: "204 stops clients",
        proves: "when the server answers 204 (stop reconnecting) it sends no body",
        needs_echo: false,
        background: false,
        run: run!(raw::no_content),
    },
    Check {
        id: "mcp.era",
        group: Group::Mcp,
        title: "era",
        proves: "which era the server speaks: 2026-07-28's `server/discover` answered (per-request) or refused (sessions), as its Backward Compatibility says",
        needs_echo: false,
        background: false,
        run: run!(mcp::era),
    },
    Check {
        id: "mcp.initialize",
        group: Group::Mcp,
        title: "initialize and session id",
        proves: "`initialize` is answered with a `protocolVersion`, and `Mcp-Session-Id` is visible ASCII",
        needs_echo: false,
        background: false,
        run: run!(mcp::initialize),
    },
    Check {
        id: "mcp.accept",
        group: Group::Mcp,
        title: "Accept handling",
        proves: "a POST whose `Accept` takes neither JSON nor an event stream gets 406, not an answer the client cannot read",
        needs_echo: false,
        background: false,
        run: run!(mcp::accept),
    },
    Check {
        id: "mcp.notification",
        group: Group::Mcp,
        title: "202 for notifications",
        proves: "a notification POSTed gets 202 Accepted with no body",
        needs_echo: false,
        background: false,
        run: run!(mcp::notification),
    },
    Check {
        id: "mcp.answers",
        group: Group::Mcp,
        title: "JSON or SSE answers",
        proves: "a request is answered as `application/json` or `text/event-stream` carrying its response; a client taking only JSON gets JSON or 406",
        needs_echo: false,
        background: false,
        run: run!(mcp::answers),
    },
    Check {
        id: "mcp.event-ids",
        group: Group::Mcp,
        title: "event ids",
        proves: "every event of a request's stream has an `id:`, unique across the session's streams, so a cut stream can be resumed",
        needs_echo: false,
        background: false,
        run: run!(mcp::event_ids),
    },
    Check {
        id: "mcp.resume",
        group: Group::Mcp,
        title: "resume after a cut",
        proves: "a long call's stream cut after two progress events and resumed with `Last-Event-ID` brings every progress once, in order, then the result",
        needs_echo: false,
        background: false,
        run: run!(mcp::resume),
    },
    Check {
        id: "mcp.resume-scoped",
        group: Group::Mcp,
        title: "resume scoped to its stream",
        proves: "a resume replays only the cut stream's messages, never another request's",
        needs_echo: false,
        background: false,
        run: run!(mcp::resume_scoped),
    },
    Check {
        id: "mcp.get-stream",
        group: Group::Mcp,
        title: "GET stream or 405",
        proves: "a GET with the session opens a `text/event-stream` or is answered 405",
        needs_echo: false,
        background: false,
        run: run!(mcp::get_stream),
    },
    Check {
        id: "mcp.delete",
        group: Group::Mcp,
        title: "DELETE then 404",
        proves: "`DELETE` ends the session, after which its requests get 404 (the client's cue to start a new one)",
        needs_echo: false,
        background: false,
        run: run!(mcp::delete),
    },
    Check {
        id: "mcp.version-header",
        group: Group::Mcp,
        title: "protocol version header",
        proves: "a request with an unsupported `MCP-Protocol-Version` gets 400",
        needs_echo: false,
        background: false,
        run: run!(mcp::version_header),
    },
    Check {
        id: "mcp.origin",
        group: Group::Mcp,
        title: "Origin refused",
        proves: "a request from a foreign `Origin` gets 403, and one shaped as a DNS rebinding (foreign `Host` too) is refused",
        needs_echo: false,
        background: false,
        run: run!(mcp::origin),
    },
    Check {
        id: "mcp.headers",
        group: Group::Mcp,
        title: "headers not mangled",
        proves: "no `Content-Length`, no compression and an unchanged `Content-Type` reach the client on a POST's answer stream and the GET stream",
        needs_echo: false,
        background: false,
        run: run!(mcp::headers),
    },
    Check {
        id: "mcp.h2",
        group: Group::Mcp,
        title: "HTTP/2",
        proves: "the endpoint speaks HTTP/2 (ALPN on https, prior knowledge on http)",
        needs_echo: false,
        background: false,
        run: run!(mcp::h2),
    },
    Check {
        id: "path.buffering",
        group: Group::Path,
        title: "no buffering",
        proves: "each event arrives when it is written, not held until a buffer fills",
        needs_echo: true,
        background: false,
        run: run!(path::buffering),
    },
    Check {
        id: "path.headers",
        group: Group::Path,
        title: "headers not mangled",
        proves: "no `Content-Length`, no compression and an unchanged `Content-Type` reach the client",
        needs_echo: false,
        background: false,
        run: run!(path::headers),
    },
    Check {
        id: "path.h2",
        group: Group::Path,
        title: "HTTP/2",
        proves: "the endpoint speaks HTTP/2 (ALPN on https, prior knowledge on http)",
        needs_echo: false,
        background: false,
        run: run!(path::h2),
    },
    Check {
        id: "path.streams",
        group: Group::Path,
        title: "streams at once",
        proves: "`--streams` streams stay open at once over HTTP/1.1 and over h2",
        needs_echo: false,
        background: false,
        run: run!(path::streams),
    },
    Check {
        id: "stream.heartbeat",
        group: Group::Channel,
        title: "heartbeat",
        proves: "an idle stream gets a comment within `--heartbeat-within`, which keeps proxies from cutting it",
        needs_echo: false,
        background: true,
        run: run!(channel::heartbeat),
    },
    Check {
        id: "path.idle-timeout",
        group: Group::Path,
        title: "idle stream survives",
        proves: "a quiet stream stays open for `--idle-probe` (no proxy read timeout cuts it)",
        needs_echo: false,
        background: true,
        run: run!(path::idle_timeout),
    },
    Check {
        id: "mcp.buffering",
        group: Group::Mcp,
        title: "no buffering",
        proves: "a long call's progress events, written over seconds, arrive as they are written, not held until the call ends",
        needs_echo: false,
        // Its call lasts seconds: beside the others, in a session of its own.
        background: true,
        run: run!(mcp::buffering),
    },
    Check {
        id: "mcp.idle-timeout",
        group: Group::Mcp,
        title: "idle stream survives",
        proves: "a quiet `GET` stream stays open for `--idle-probe` (no proxy read timeout cuts it; heartbeats keep it)",
        needs_echo: false,
        background: true,
        run: run!(mcp::idle_timeout),
    },
];

/// The width of the longest id, for aligned output.
pub fn id_width() -> usize {
    CHECKS.iter().map(|c| c.id.len()).max().unwrap_or(0)
}

/// Whether `pattern` selects `id`: the id itself, its group (`resume`
/// selects `resume.*`), or a glob where `*` matches any run of characters.
pub fn matches(pattern: &str, id: &str) -> bool {
    if pattern.contains('*') {
        return glob(pattern.as_bytes(), id.as_bytes());
    }
    id == pattern || id.strip_prefix(pattern).is_some_and(|rest| rest.starts_with('.'))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((c, rest)) => s.split_first().is_some_and(|(d, srest)| c == d && glob(rest, srest)),
    }
}

/// The checks to run: those of the mode, kept by `only` (when given) and
/// not dropped by `skip`. A pattern that names no check at all is an error,
/// as is a selection that leaves nothing.
pub fn select(mode: Mode, only: &[String], skip: &[String]) -> Result<Vec<&'static Check>, String> {
    for p in only.iter().chain(skip) {
        if !CHECKS.iter().any(|c| matches(p, c.id)) {
            return Err(format!("no check matches {p:?} (see --list)"));
        }
    }
    let selected: Vec<_> = CHECKS
        .iter()
        .filter(|c| c.group.runs_in(mode))
        .filter(|c| only.is_empty() || only.iter().any(|p| matches(p, c.id)))
        .filter(|c| !skip.iter().any(|p| matches(p, c.id)))
        .collect();
    if selected.is_empty() {
        return Err(format!("no check left to run {} (see --list)", mode.flag()));
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut ids: Vec<_> = CHECKS.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), CHECKS.len());
        for c in CHECKS {
            let (area, name) = c.id.split_once('.').expect("area.name");
            assert!(!area.is_empty() && !name.is_empty(), "{}", c.id);
            assert!(
                c.id.bytes().all(|b| b.is_ascii_lowercase()
                    || b == b'.'
                    || b == b'-'
                    || b.is_ascii_digit())
            );
        }
        // Background checks come last, so lines print in table order
        // without waiting on them half-way.
        let first_bg = CHECKS.iter().position(|c| c.background).unwrap();
        assert!(CHECKS[first_bg..].iter().all(|c| c.background));
    }

    #[test]
    fn patterns() {
        assert!(matches("resume", "resume.replay"));
        assert!(matches("resume.replay", "resume.replay"));
        assert!(!matches("resume.re", "resume.replay"));
        assert!(!matches("res", "resume.replay"));
        assert!(matches("*.replay", "resume.replay"));
        assert!(matches("post.*", "post.bad-json"));
        assert!(matches("*", "path.h2"));
        assert!(!matches("post.*", "path.h2"));
        assert!(matches("p*h2", "path.h2"));
    }

    #[test]
    fn selection() {
        let ids = |v: Vec<&Check>| v.iter().map(|c| c.id).collect::<Vec<_>>();
        let all = select(Mode::Channel, &[], &[]).unwrap();
        assert!(all.iter().all(|c| c.group != Group::Raw));
        assert!(all.iter().any(|c| c.group == Group::Path));
        let raw = select(Mode::Raw, &[], &[]).unwrap();
        assert!(raw.iter().all(|c| c.group != Group::Channel));
        let mcp = select(Mode::Mcp, &[], &[]).unwrap();
        assert!(mcp.iter().all(|c| c.group == Group::Mcp));
        let only =
            select(Mode::Channel, &["resume".into(), "path.h2".into()], &["resume.replay".into()]);
        assert_eq!(ids(only.unwrap()), ["resume.keep-alive", "resume.takeover", "path.h2"]);
        let none = select(Mode::Channel, &["nope".into()], &[]).unwrap_err();
        assert!(none.contains("no check matches"));
        let raw = select(Mode::Channel, &["raw.*".into()], &[]).unwrap_err();
        assert!(raw.contains("without --raw"));
        assert!(select(Mode::Raw, &["mcp.*".into()], &[]).unwrap_err().contains("with --raw"));
    }
}
