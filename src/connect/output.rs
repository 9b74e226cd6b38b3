//! How client events look: data lines, JSON lines, human status lines.

use serde::Serialize;

use crate::client::ClientEvent;
use crate::text::escape_controls;

/// One `--format json` line; `event` comes first so lines read well.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(super) enum JsonLine<'a> {
    Message {
        #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
        kind: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        data: &'a str,
    },
    Connecting {
        attempt: u32,
    },
    Open {
        #[serde(skip_serializing_if = "Option::is_none")]
        client: Option<&'a str>,
    },
    Resumed {
        last_event_id: Option<&'a str>,
    },
    Disconnected {
        reason: &'a str,
    },
    AttemptFailed {
        attempt: u32,
        reason: &'a str,
    },
    Reconnecting {
        attempt: u32,
        delay_ms: u64,
    },
    Refused {
        message_id: u64,
        status: u16,
        reason: &'a str,
        retried: bool,
    },
    SendFailed {
        message_id: u64,
        reason: &'a str,
    },
    Closed {
        by: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
    },
    Failed {
        reason: &'a str,
    },
    GaveUp {
        attempts: u32,
        reason: &'a str,
    },
    Comment {
        text: &'a str,
    },
    Hint {
        text: &'a str,
    },
}

/// The event as one JSON line (`--format json`); every event has one.
pub(super) fn json_line(ev: &ClientEvent, client_id: Option<&str>) -> String {
    let line = match ev {
        ClientEvent::Message(data) => JsonLine::Message { kind: None, id: None, data },
        ClientEvent::Event(e) => {
            JsonLine::Message { kind: Some(&e.event), id: Some(&e.last_event_id), data: &e.data }
        }
        ClientEvent::Connecting { attempt } => JsonLine::Connecting { attempt: *attempt },
        ClientEvent::Open => JsonLine::Open { client: client_id },
        ClientEvent::Resumed { last_event_id } => {
            JsonLine::Resumed { last_event_id: last_event_id.as_deref() }
        }
        ClientEvent::Disconnected { reason } => JsonLine::Disconnected { reason },
        ClientEvent::AttemptFailed { attempt, reason } => {
            JsonLine::AttemptFailed { attempt: *attempt, reason }
        }
        ClientEvent::Reconnecting { attempt, delay } => JsonLine::Reconnecting {
            attempt: *attempt,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        },
        ClientEvent::Refused { message_id, status, reason, retried } => JsonLine::Refused {
            message_id: *message_id,
            status: *status,
            reason,
            retried: *retried,
        },
        ClientEvent::SendFailed { message_id, reason } => {
            JsonLine::SendFailed { message_id: *message_id, reason }
        }
        ClientEvent::ClosedByServer => JsonLine::Closed { by: "server", status: None },
        ClientEvent::NoContent => JsonLine::Closed { by: "server", status: Some(204) },
        ClientEvent::Failed { reason } => JsonLine::Failed { reason },
        ClientEvent::GaveUp { attempts, reason } => {
            JsonLine::GaveUp { attempts: *attempts, reason }
        }
        ClientEvent::Closed => JsonLine::Closed { by: "client", status: None },
        ClientEvent::Comment(text) => JsonLine::Comment { text },
        ClientEvent::Hint(text) => JsonLine::Hint { text },
    };
    // Strings and numbers only: serializing cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

/// A status line for people; `None` for data events.
pub(super) fn status_line(ev: &ClientEvent, client_id: Option<&str>) -> Option<String> {
    Some(match ev {
        ClientEvent::Message(_) | ClientEvent::Event(_) | ClientEvent::Comment(_) => return None,
        ClientEvent::Hint(text) => text.clone(),
        ClientEvent::Connecting { attempt: 1 } => "connecting…".into(),
        ClientEvent::Connecting { attempt } => format!("connecting (attempt {attempt})…"),
        ClientEvent::Open => match client_id {
            Some(id) => format!("connected as {id}"),
            None => "connected".into(),
        },
        // The id is the server's text, bound for a terminal.
        ClientEvent::Resumed { last_event_id: Some(id) } => {
            format!("resumed after event {}", escape_controls(id))
        }
        ClientEvent::Resumed { last_event_id: None } => "resumed".into(),
        ClientEvent::Disconnected { reason } => format!("disconnected: {reason}"),
        ClientEvent::AttemptFailed { attempt, reason } => {
            format!("attempt {attempt} failed: {reason}")
        }
        ClientEvent::Reconnecting { delay, .. } if delay.is_zero() => "reconnecting now".into(),
        ClientEvent::Reconnecting { delay, .. } => {
            format!("reconnecting in {}", humantime::format_duration(*delay))
        }
        ClientEvent::Refused { message_id, status, reason, retried } => {
            let then = if *retried { "retrying" } else { "not retried" };
            format!("message {message_id}: server answered {status}: {reason} ({then})")
        }
        ClientEvent::SendFailed { message_id, reason } => {
            format!("message {message_id} not delivered: {reason}")
        }
        ClientEvent::ClosedByServer => "closed by the server".into(),
        ClientEvent::NoContent => "the server answered 204 No Content: not reconnecting".into(),
        ClientEvent::Failed { reason } => format!("connection failed: {reason}"),
        ClientEvent::GaveUp { .. } => give_up_text(ev),
        ClientEvent::Closed => "closed".into(),
    })
}

/// Why the client gave up; zero attempts means no retry was allowed.
pub(super) fn give_up_text(ev: &ClientEvent) -> String {
    match ev {
        ClientEvent::GaveUp { attempts: 0, reason } => {
            format!("{reason}; not reconnecting (--max-retries 0)")
        }
        ClientEvent::GaveUp { attempts, reason } => {
            format!("gave up after {attempts} failed attempts in a row: {reason}")
        }
        _ => String::new(),
    }
}

/// What a data event prints in text mode: the message, or a raw event's data.
pub(super) fn data_text(ev: &ClientEvent) -> Option<&str> {
    match ev {
        ClientEvent::Message(m) => Some(m),
        ClientEvent::Event(e) => Some(&e.data),
        _ => None,
    }
}

/// How `connect` shows events: the flags that shape output, and the record.
pub(super) struct View {
    pub json: bool,
    /// `--timestamps`: the receive time on each stdout line.
    pub timestamps: bool,
    /// `--show-comments` (text mode; JSON always has them).
    pub show_comments: bool,
    /// `--event TYPE`: only these event types (empty: all).
    pub types: Vec<String>,
    /// `-q`: no status lines on stderr.
    pub quiet: bool,
    pub recorder: Option<std::sync::Arc<super::record::Recorder>>,
    pub client_id: Option<String>,
    /// stdout is a terminal: the server's text gets its control characters
    /// escaped, whether stdin is a terminal (the REPL) or not (a pipe).
    pub terminal: bool,
}

impl View {
    /// Whether `--event` lets a data event through.
    pub fn wanted(&self, ev: &ClientEvent) -> bool {
        let kind = match ev {
            ClientEvent::Message(_) => "message",
            ClientEvent::Event(e) => &e.event,
            _ => return true,
        };
        self.types.is_empty() || self.types.iter().any(|t| t == kind)
    }

    /// Records the event (all of them, unfiltered) when `--record` is on.
    pub fn record(&self, ev: &ClientEvent) {
        if let Some(rec) = &self.recorder
            && let Err(e) = rec.event(&json_line(ev, self.client_id.as_deref()))
        {
            tracing::warn!("cannot write the record: {e}");
        }
    }

    /// The stdout line of an event, if it has one; escaped for a terminal.
    pub fn stdout_line(&self, ev: &ClientEvent) -> Option<String> {
        let line = self.raw_stdout_line(ev)?;
        Some(if self.terminal { escape_controls(&line).into_owned() } else { line })
    }

    fn raw_stdout_line(&self, ev: &ClientEvent) -> Option<String> {
        if !self.wanted(ev) {
            return None;
        }
        let time = self
            .timestamps
            .then(|| humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string());
        if self.json {
            let mut line = json_line(ev, self.client_id.as_deref());
            if let Some(t) = time {
                line.pop();
                line.push_str(&format!(",\"time\":\"{t}\"}}"));
            }
            return Some(line);
        }
        let text = match ev {
            ClientEvent::Comment(c) if self.show_comments => format!(":{c}"),
            ev => data_text(ev)?.to_owned(),
        };
        Some(match time {
            Some(t) => format!("{t} {text}"),
            None => text,
        })
    }

    /// A plain status line for stderr (text mode, not `-q`): connects,
    /// disconnects, resumes, hints. Terminal failures are left to the
    /// caller's one-line error.
    pub fn stderr_line(&self, ev: &ClientEvent) -> Option<String> {
        if self.json || self.quiet {
            return None;
        }
        match ev {
            ClientEvent::Open
            | ClientEvent::Resumed { .. }
            | ClientEvent::Disconnected { .. }
            | ClientEvent::AttemptFailed { .. }
            | ClientEvent::Hint(_)
            | ClientEvent::ClosedByServer
            | ClientEvent::NoContent => status_line(ev, self.client_id.as_deref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn status_lines_escape_server_text() {
        let ev = ClientEvent::Resumed { last_event_id: Some("7\x1b[2J".into()) };
        assert_eq!(status_line(&ev, None).as_deref(), Some("resumed after event 7^[[2J"));
    }

    fn view(json: bool, terminal: bool) -> View {
        View {
            json,
            timestamps: false,
            show_comments: true,
            types: vec![],
            quiet: false,
            recorder: None,
            client_id: None,
            terminal,
        }
    }

    #[test]
    fn a_terminal_gets_server_text_escaped_a_pipe_gets_it_whole() {
        let ev = ClientEvent::Message("\x1b]0;PWNED\x07\u{202e}x".into());
        let on_terminal = view(false, true).stdout_line(&ev).unwrap();
        assert_eq!(on_terminal, "^[]0;PWNED^G\\u{202e}x");
        assert_eq!(view(false, false).stdout_line(&ev).unwrap(), "\x1b]0;PWNED\x07\u{202e}x");
        let json = view(true, true).stdout_line(&ev).unwrap();
        assert_eq!(json, r#"{"event":"message","data":"\u001b]0;PWNED\u0007\u{202e}x"}"#);
        let comment = view(false, true).stdout_line(&ClientEvent::Comment("\x1b[2J".into()));
        assert_eq!(comment.as_deref(), Some(":^[[2J"));
    }

    #[test]
    fn json_lines() {
        let m = json_line(&ClientEvent::Message("a\nb".into()), Some("x"));
        assert_eq!(m, r#"{"event":"message","data":"a\nb"}"#);
        let ev = crate::protocol::Event {
            event: "tick".into(),
            data: "1".into(),
            last_event_id: "7".into(),
        };
        assert_eq!(
            json_line(&ClientEvent::Event(ev), None),
            r#"{"event":"message","type":"tick","id":"7","data":"1"}"#
        );
        let r = json_line(
            &ClientEvent::Reconnecting { attempt: 2, delay: Duration::from_millis(250) },
            None,
        );
        assert_eq!(r, r#"{"event":"reconnecting","attempt":2,"delay_ms":250}"#);
        assert_eq!(json_line(&ClientEvent::Open, Some("x")), r#"{"event":"open","client":"x"}"#);
        let refused = ClientEvent::Refused {
            message_id: 3,
            status: 503,
            reason: "busy".into(),
            retried: true,
        };
        assert_eq!(
            json_line(&refused, None),
            r#"{"event":"refused","message_id":3,"status":503,"reason":"busy","retried":true}"#
        );
        assert_eq!(
            status_line(&refused, None).as_deref(),
            Some("message 3: server answered 503: busy (retrying)")
        );
        assert_eq!(
            json_line(&ClientEvent::ClosedByServer, None),
            r#"{"event":"closed","by":"server"}"#
        );
    }
}
