//! `serve --devconsole`: a browser that opens the channel path gets a
//! page of ours that connects to the channel as package:sse's client does
//! and shows everything that happens. Self-contained: no external assets.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response};
use http_body_util::{Either, Full};

use super::static_files::WebBody;

const PAGE: &str = include_str!("devconsole.html");

/// Whether a request for the channel path is a browser navigating to it
/// (its `Accept` names `text/html` and not `text/event-stream`), rather
/// than an EventSource or a command-line client (`*/*` or nothing).
pub fn wants_console(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()) else {
        return false;
    };
    let media = |m: &str| {
        accept.split(',').any(|p| p.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(m))
    };
    media("text/html") && !media("text/event-stream")
}

/// The console page.
pub fn page() -> Response<WebBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(PAGE.as_bytes()))));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Its own inline script and style, and this origin, nothing else; and
    // never inside another site's frame, where a page could trick its
    // user into typing into it (clickjacking).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Its URL may hold the secret path.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn browsers_navigating_get_the_console_clients_do_not() {
        // Chromium's and Firefox's navigation Accept headers.
        assert!(wants_console(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
        )));
        assert!(wants_console(&accept("TEXT/HTML")));
        assert!(!wants_console(&accept("text/event-stream")));
        assert!(!wants_console(&accept("text/html, text/event-stream")));
        assert!(!wants_console(&accept("*/*")));
        assert!(!wants_console(&HeaderMap::new()));
    }

    #[test]
    fn the_page_is_self_contained() {
        for external in ["src=", "href=", "@import", "url("] {
            assert!(!PAGE.contains(external), "{external}");
        }
        assert!(PAGE.contains("withCredentials: true"));
    }
}
