//! What the request that opened a connection said, for the application
//! (the CGI-style environment of `serve -- COMMAND` is built from it).

use std::net::SocketAddr;

use http::{HeaderMap, header};

/// The facts of the stream request (`GET`) that created a connection.
/// Later resumes do not change them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// The peer's address.
    pub remote: SocketAddr,
    /// The `Host` header (or h2 `:authority`), as sent.
    pub host: Option<String>,
    /// The request path (the channel path).
    pub path: String,
    /// The raw query string, without `?` (empty when there was none).
    pub query: String,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
}

impl StreamRequest {
    pub(crate) fn new(
        remote: SocketAddr,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Self {
        let get = |name: header::HeaderName| {
            headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        StreamRequest {
            remote,
            host: get(header::HOST),
            path: path.to_owned(),
            query: query.unwrap_or("").to_owned(),
            origin: get(header::ORIGIN),
            user_agent: get(header::USER_AGENT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_headers_it_names_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "example.test:8080".parse().unwrap());
        h.insert(header::USER_AGENT, "curl/8".parse().unwrap());
        h.insert(header::COOKIE, "secret=1".parse().unwrap());
        let remote = "127.0.0.1:5000".parse().unwrap();
        let r = StreamRequest::new(remote, "/sse", Some("sseClientId=a&x=%20"), &h);
        assert_eq!(
            r,
            StreamRequest {
                remote,
                host: Some("example.test:8080".into()),
                path: "/sse".into(),
                query: "sseClientId=a&x=%20".into(),
                origin: None,
                user_agent: Some("curl/8".into()),
            }
        );
        assert_eq!(StreamRequest::new(remote, "/sse", None, &HeaderMap::new()).query, "");
    }
}
