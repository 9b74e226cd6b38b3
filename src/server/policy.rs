//! Who may talk to the server: `Host` (against DNS rebinding) and `Origin`
//! (CORS) decisions, as pure functions of the request's headers.
//!
//! A listener on loopback is reachable by every web page its user visits:
//! a page on `evil.example` whose name resolves to 127.0.0.1 sends
//! `Host: evil.example`, so a loopback listener answers only `Host` values
//! that name loopback, plus what `--allow-host` adds.

use std::net::{IpAddr, SocketAddr};

/// Which origins may use the channel from a browser. A request without
/// `Origin` is not a cross-origin browser request and always passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Every origin but `null`, as package:sse allows.
    #[default]
    Any,
    /// Only pages served by this server itself (scheme, host and port of
    /// the request's `Host`).
    SameOrigin,
    /// Exactly these (`*` among them means every origin but `null`;
    /// `null` passes only when listed).
    List(Vec<String>),
}

impl OriginPolicy {
    /// `--allow-origin` values: none means `default`.
    pub fn from_list(list: &[String], default: OriginPolicy) -> Self {
        if list.is_empty() { default } else { OriginPolicy::List(list.to_vec()) }
    }

    /// Whether every (non-null) origin passes.
    pub fn allows_any(&self) -> bool {
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::SameOrigin => false,
            OriginPolicy::List(l) => l.iter().any(|o| o == "*"),
        }
    }
}

/// Which `Host` values the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPolicy {
    any: bool,
    names: Vec<String>,
}

impl HostPolicy {
    /// For a listener on `local`: a loopback listener answers loopback
    /// names and `allowed`; another answers any host unless `allowed` is
    /// given. `*` in `allowed` answers any host.
    pub(crate) fn new(local: SocketAddr, allowed: &[String]) -> Self {
        let any =
            allowed.iter().any(|h| h == "*") || (!is_loopback(local.ip()) && allowed.is_empty());
        let names = allowed.iter().map(|h| normalize(h)).collect();
        Self { any, names }
    }

    /// `Ok` when `host` (a `Host` or `:authority` value) may be answered.
    pub(crate) fn check(&self, host: Option<&str>) -> Result<(), &'static str> {
        if self.any {
            return Ok(());
        }
        let Some(host) = host else { return Err("missing Host header") };
        let name = bare(host_name(host));
        if names_loopback(name) || self.names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            Ok(())
        } else {
            Err("Host is not this server (add it with --allow-host)")
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The host part of `host[:port]` or `[v6]:port`.
pub(crate) fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A host name without spaces, a trailing dot or IPv6 brackets.
fn bare(name: &str) -> &str {
    let name = name.trim().trim_end_matches('.');
    name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name)
}

fn normalize(name: &str) -> String {
    bare(name).to_ascii_lowercase()
}

/// `localhost`, `*.localhost` (browsers pin both to loopback), and
/// loopback address literals; any case.
fn names_loopback(name: &str) -> bool {
    const SUFFIX: &str = ".localhost";
    let n = name.len();
    name.eq_ignore_ascii_case("localhost")
        || (n > SUFFIX.len()
            && name.is_char_boundary(n - SUFFIX.len())
            && name[n - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX))
        || name.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// The decision on a request's `Origin`: `Ok` with the value for
/// `Access-Control-Allow-Origin` (the origin, or the `Host` when a
/// browser omitted `Origin`, as package:sse does), `Err` when refused.
pub(crate) fn check_origin<'a>(
    policy: &OriginPolicy,
    origin: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    tls: bool,
) -> Result<Option<&'a [u8]>, &'static str> {
    let Some(origin) = origin else { return Ok(host) };
    let ok = match policy {
        _ if origin == b"null" => {
            matches!(policy, OriginPolicy::List(l) if l.iter().any(|o| o == "null"))
        }
        OriginPolicy::Any => true,
        OriginPolicy::SameOrigin => host.is_some_and(|h| same_origin(origin, h, tls)),
        OriginPolicy::List(list) => list.iter().any(|o| o == "*" || o.as_bytes() == origin),
    };
    if ok { Ok(Some(origin)) } else { Err("origin not allowed") }
}

/// Whether `origin` is `http(s)://` + `host`, default ports made explicit.
fn same_origin(origin: &[u8], host: &[u8], tls: bool) -> bool {
    let (Ok(origin), Ok(host)) = (std::str::from_utf8(origin), std::str::from_utf8(host)) else {
        return false;
    };
    let scheme = if tls { "https" } else { "http" };
    let Some(rest) = origin.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) else {
        return false;
    };
    let default_port = if tls { "443" } else { "80" };
    let with_port = |h: &str| -> String {
        let h = h.to_ascii_lowercase();
        if host_name(&h).len() == h.len() || h.ends_with(']') {
            format!("{h}:{default_port}")
        } else {
            h
        }
    };
    with_port(rest) == with_port(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_listeners_answer_loopback_names_only() {
        let p = HostPolicy::new(addr("127.0.0.1:8080"), &[]);
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "127.0.0.1:1",
            "127.3.2.1",
            "[::1]:8080",
            "[::1]",
            "app.localhost:3000",
        ] {
            assert_eq!(p.check(Some(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1",
            "[::2]:80",
            "",
        ] {
            assert!(p.check(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(p.check(None), Err("missing Host header"));
        let p = HostPolicy::new(addr("[::1]:8080"), &["dev.test".into()]);
        assert_eq!(p.check(Some("dev.test:8080")), Ok(()));
        assert_eq!(p.check(Some("DEV.test")), Ok(()));
        assert!(p.check(Some("other.test")).is_err());
    }

    #[test]
    fn other_listeners_answer_any_host_unless_told() {
        assert_eq!(HostPolicy::new(addr("0.0.0.0:80"), &[]).check(Some("anything")), Ok(()));
        assert_eq!(HostPolicy::new(addr("0.0.0.0:80"), &[]).check(None), Ok(()));
        let p = HostPolicy::new(addr("0.0.0.0:80"), &["chat.example".into()]);
        assert_eq!(p.check(Some("chat.example")), Ok(()));
        assert_eq!(p.check(Some("localhost")), Ok(()));
        assert!(p.check(Some("evil.example")).is_err());
        let p = HostPolicy::new(addr("127.0.0.1:80"), &["*".into()]);
        assert_eq!(p.check(Some("evil.example")), Ok(()));
    }

    #[test]
    fn origins() {
        let host = Some(&b"127.0.0.1:8080"[..]);
        let any = OriginPolicy::Any;
        assert_eq!(
            check_origin(&any, Some(b"https://a.example"), host, false),
            Ok(Some(&b"https://a.example"[..]))
        );
        assert_eq!(check_origin(&any, None, host, false), Ok(host));
        assert!(check_origin(&any, Some(b"null"), host, false).is_err());

        let same = OriginPolicy::SameOrigin;
        assert!(check_origin(&same, Some(b"http://127.0.0.1:8080"), host, false).is_ok());
        assert!(check_origin(&same, Some(b"https://127.0.0.1:8080"), host, false).is_err());
        assert!(check_origin(&same, Some(b"http://evil.example"), host, false).is_err());
        assert!(
            check_origin(&same, Some(b"http://localhost"), Some(b"localhost:80"), false).is_ok()
        );
        assert!(
            check_origin(&same, Some(b"https://localhost:443"), Some(b"localhost"), true).is_ok()
        );
        assert!(check_origin(&same, Some(b"http://[::1]:80"), Some(b"[::1]"), false).is_ok());
        assert!(check_origin(&same, Some(b"null"), host, false).is_err());
        assert_eq!(check_origin(&same, None, host, false), Ok(host));

        let list = OriginPolicy::List(vec!["http://a.test".into(), "null".into()]);
        assert!(check_origin(&list, Some(b"http://a.test"), host, false).is_ok());
        assert!(check_origin(&list, Some(b"null"), host, false).is_ok());
        assert!(check_origin(&list, Some(b"http://b.test"), host, false).is_err());
        let star = OriginPolicy::List(vec!["*".into()]);
        assert!(check_origin(&star, Some(b"http://b.test"), host, false).is_ok());
        assert!(check_origin(&star, Some(b"null"), host, false).is_err());
        assert!(star.allows_any() && any.allows_any() && !same.allows_any());
    }
}
