//! The WHATWG verdict on the answer to an event-stream GET: 200 with
//! `text/event-stream` opens the stream, 204 says "stop reconnecting", and
//! anything else fails the connection (no retry).

use thiserror::Error;

/// Why a response is not an event stream.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// 204: the server says stop, quietly.
    #[error("server answered 204 No Content: stop")]
    NoContent,
    #[error("server answered {0}")]
    Status(http::StatusCode),
    #[error("not an event stream: Content-Type is {0:?}, not text/event-stream")]
    ContentType(String),
}

/// Whether a `Content-Type` value is `text/event-stream` (parameters such
/// as `; charset=utf-8` allowed; `text/event-streamx` is not it).
pub fn is_event_stream(content_type: Option<&[u8]>) -> bool {
    let Some(v) = content_type else { return false };
    let essence = v.split(|&b| b == b';').next().unwrap_or_default();
    essence.trim_ascii().eq_ignore_ascii_case(b"text/event-stream")
}

/// Sorts a response per the WHATWG rules.
pub fn check_response(
    status: http::StatusCode,
    content_type: Option<&[u8]>,
) -> Result<(), Refusal> {
    if status == http::StatusCode::NO_CONTENT {
        return Err(Refusal::NoContent);
    }
    if status != http::StatusCode::OK {
        return Err(Refusal::Status(status));
    }
    if !is_event_stream(content_type) {
        let got = content_type.map_or("none".into(), |v| String::from_utf8_lossy(v).into_owned());
        return Err(Refusal::ContentType(got));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn content_types() {
        for ok in ["text/event-stream", "Text/Event-Stream", " text/event-stream ; charset=utf-8"] {
            assert!(is_event_stream(Some(ok.as_bytes())), "{ok:?}");
        }
        for bad in ["text/event-streamx", "text/event", "text/html", "", "text/event-stream,x"] {
            assert!(!is_event_stream(Some(bad.as_bytes())), "{bad:?}");
        }
        assert!(!is_event_stream(None));
    }

    #[test]
    fn responses_sorted_the_whatwg_way() {
        let es = Some(&b"text/event-stream; charset=utf-8"[..]);
        assert_eq!(check_response(StatusCode::OK, es), Ok(()));
        assert_eq!(check_response(StatusCode::NO_CONTENT, None), Err(Refusal::NoContent));
        assert_eq!(
            check_response(StatusCode::OK, Some(b"text/html")),
            Err(Refusal::ContentType("text/html".into()))
        );
        assert_eq!(check_response(StatusCode::OK, None), Err(Refusal::ContentType("none".into())));
        for s in [400, 404, 500, 503] {
            let status = StatusCode::from_u16(s).unwrap();
            assert_eq!(check_response(status, es), Err(Refusal::Status(status)), "{s}");
        }
    }
}
