//! Who may talk to the server: `Host` (against DNS rebinding) and `Origin`
//! (CORS) decisions, as pure functions of the request's headers.
//!
//! A listener on loopback is reachable by every web page its user visits:
//! a page on `evil.example` whose name resolves to 127.0.0.1 sends
//! `Host: evil.example`, so a loopback listener answers only `Host` values
//! that name loopback, plus what `--allow-host` adds.

use std::any::Any;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use http::HeaderMap;

use super::app::RequestInfo;

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

/// What an [`Admission`] gives a new channel's application (e.g. the
/// process it already started for it).
pub type Admitted = Box<dyn Any + Send>;

/// The application's say on a `GET` that would open a new channel, asked
/// before the store opens it (a resume or a takeover is not asked): it
/// prepares what the client needs, so that a client it cannot serve gets a
/// 503 with the reason instead of a 200 stream that never carries
/// anything. What it returns reaches the application with the connection
/// ([`super::Connection::take_admitted`]); dropped unused (a concurrent
/// request opened the channel first, or the store refused it), it must
/// undo itself.
pub trait Admission: std::fmt::Debug + Send + Sync + 'static {
    /// `Ok` lets the channel open; `Err` is the reason of the 503.
    fn admit<'a>(
        &'a self,
        client_id: &'a str,
        request: &'a RequestInfo,
    ) -> Pin<Box<dyn Future<Output = Result<Admitted, String>> + Send + 'a>>;
}

/// Which `Host` values the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPolicy {
    /// `--allow-host '*'`: any host is answered (but only named ones
    /// count as this server's own origin).
    any: bool,
    /// Whether IP address literals are answered: a listener on a network
    /// address is reached by its addresses, and no DNS answer (rebinding)
    /// can make a browser send an address as `Host`.
    addresses: bool,
    names: Vec<String>,
}

impl HostPolicy {
    /// For a listener on `local`: loopback names (`localhost`, loopback
    /// addresses), and `allowed`; a listener on another address answers
    /// IP address literals too. `*` in `allowed` answers any host.
    pub(crate) fn new(local: SocketAddr, allowed: &[String]) -> Self {
        let any = allowed.iter().any(|h| h == "*");
        let names = allowed.iter().filter(|h| *h != "*").map(|h| normalize(h)).collect();
        Self { any, addresses: !is_loopback(local.ip()), names }
    }

    /// `Ok` when `host` (a `Host` or `:authority` value) may be answered.
    pub(crate) fn check(&self, host: Option<&str>) -> Result<(), &'static str> {
        if self.any || host.is_some_and(|h| self.names(h)) {
            return Ok(());
        }
        match host {
            None => Err("missing Host header"),
            Some(_) => Err("Host is not this server (add it with --allow-host)"),
        }
    }

    /// Whether `host` is one of this server's names: a loopback name, a
    /// listed one, or an address on a network listener; never a name
    /// answered only because of `*`. Pages of such a host are the
    /// server's own origin; any other `Host` is the page's own doing (DNS
    /// rebinding) and proves nothing.
    pub(crate) fn names(&self, host: &str) -> bool {
        let name = bare(host_name(host));
        names_loopback(name)
            || (self.addresses && name.parse::<IpAddr>().is_ok())
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
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

/// The host part of `host[:port]` or `[v6][:port]`. Anything after a
/// closing bracket but a port leaves the value whole, which names nothing.
pub(crate) fn host_name(host: &str) -> &str {
    // An empty port (`host:`) is valid (RFC 3986).
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, "")) => v6,
            Some((v6, port)) if port.strip_prefix(':').is_some_and(digits) => v6,
            _ => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if digits(port) => name,
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
    hosts: &HostPolicy,
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
        // Judged against the request's own `Host` only when that is one of
        // the server's names: a rebinding page sends its own.
        OriginPolicy::SameOrigin => host.is_some_and(|h| {
            std::str::from_utf8(h).is_ok_and(|n| hosts.names(n)) && same_origin(origin, h, tls)
        }),
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

/// The Fetch Metadata decision on a channel `GET`: a browser sends
/// `Sec-Fetch-Site` and `Sec-Fetch-Mode` with every request (other clients
/// do not). A cross-site page's `<img>`, `<script>`, `no-cors` fetch or
/// navigation carries no `Origin` to check, so it opens a channel (and
/// starts a process) only when every origin is allowed; EventSource and
/// CORS fetches (mode `cors`) carry `Origin` and pass to that check.
pub(crate) fn check_fetch_metadata(
    policy: &OriginPolicy,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    let is = |name: &str, values: &[&str]| {
        headers
            .get(name)
            .is_some_and(|v| values.iter().any(|w| v.as_bytes().eq_ignore_ascii_case(w.as_bytes())))
    };
    if !policy.allows_any()
        && is("sec-fetch-site", &["cross-site", "same-site"])
        && is("sec-fetch-mode", &["no-cors", "navigate", "nested-navigate"])
    {
        return Err(
            "a page of another site may open the channel only with EventSource or a CORS fetch",
        );
    }
    Ok(())
}

/// How messages with line breaks are taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LineBreaks {
    /// Any text (JSON mode, echo, a library application).
    #[default]
    Pass,
    /// Refused (400): the application reads one message per line, and a
    /// line break would let a client forge a second message.
    Refuse,
}

/// `Err` with the reason (for a 400) when `message` may not be taken.
pub(crate) fn check_message(policy: LineBreaks, message: &str) -> Result<(), &'static str> {
    if policy == LineBreaks::Refuse && message.contains(['\n', '\r']) {
        return Err(
            "a message may not contain a line break (\\n or \\r) here: this channel's application reads one message per line",
        );
    }
    Ok(())
}

/// The path below the secret, if any: `path` itself without one, the rest
/// after `/SECRET` (e.g. `/sse`) with one, `None` when it is not below it.
pub(crate) fn site_path<'a>(secret: Option<&str>, path: &'a str) -> Option<&'a str> {
    match secret {
        None => Some(path),
        Some(s) => below_secret(s, path),
    }
}

/// The rest of `path` below `/SECRET` (e.g. `/sse`), or `None` when it
/// does not start with the secret. The secret is compared in constant
/// time, so that timing tells nothing of how much of a guess was right.
fn below_secret<'a>(secret: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix('/')?;
    let guess = rest.as_bytes().get(..secret.len())?;
    let diff = guess.iter().zip(secret.as_bytes()).fold(0u8, |d, (a, b)| d | (a ^ b));
    let after = rest.get(secret.len()..)?;
    (diff == 0 && (after.is_empty() || after.starts_with('/'))).then_some(after)
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
    fn other_listeners_answer_addresses_and_their_names() {
        let p = HostPolicy::new(addr("0.0.0.0:80"), &[]);
        for ok in ["192.168.1.5:80", "10.0.0.1", "[fe80::1]:8080", "localhost", "127.0.0.1"] {
            assert_eq!(p.check(Some(ok)), Ok(()), "{ok}");
        }
        // A name can be made to resolve anywhere (DNS rebinding).
        for bad in ["rebind.evil:80", "anything", "[::1]evil", "10.0.0.1.evil"] {
            assert!(p.check(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(p.check(None), Err("missing Host header"));
        let p = HostPolicy::new(addr("0.0.0.0:80"), &["chat.example".into()]);
        assert_eq!(p.check(Some("chat.example")), Ok(()));
        assert_eq!(p.check(Some("localhost")), Ok(()));
        assert!(p.check(Some("evil.example")).is_err());
        let p = HostPolicy::new(addr("127.0.0.1:80"), &["*".into()]);
        assert_eq!(p.check(Some("evil.example")), Ok(()));
        assert!(!p.names("evil.example"), "answered, but not one of its names");
        assert!(p.names("localhost:80"));
    }

    #[test]
    fn host_names_and_ports() {
        assert_eq!(host_name("example.test:9000"), "example.test");
        assert_eq!(host_name("example.test"), "example.test");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("[::1]:"), "::1");
        for whole in ["[::1]evil", "[::1]:80x", "[::1", "[::1]]:80", "a:b"] {
            assert_eq!(host_name(whole), whole);
        }
        let p = HostPolicy::new(addr("127.0.0.1:8080"), &[]);
        assert!(p.check(Some("[::1]evil")).is_err());
        assert!(p.check(Some("[127.0.0.1]x")).is_err());
    }

    #[test]
    fn origins() {
        let host = Some(&b"127.0.0.1:8080"[..]);
        let hosts = HostPolicy::new(addr("127.0.0.1:8080"), &[]);
        let check =
            |p: &OriginPolicy, o: Option<&'static [u8]>, h, tls| check_origin(p, &hosts, o, h, tls);
        let any = OriginPolicy::Any;
        assert_eq!(
            check(&any, Some(b"https://a.example"), host, false),
            Ok(Some(&b"https://a.example"[..]))
        );
        assert_eq!(check(&any, None, host, false), Ok(host));
        assert!(check(&any, Some(b"null"), host, false).is_err());

        let same = OriginPolicy::SameOrigin;
        assert!(check(&same, Some(b"http://127.0.0.1:8080"), host, false).is_ok());
        assert!(check(&same, Some(b"https://127.0.0.1:8080"), host, false).is_err());
        assert!(check(&same, Some(b"http://evil.example"), host, false).is_err());
        assert!(check(&same, Some(b"http://localhost"), Some(b"localhost:80"), false).is_ok());
        assert!(check(&same, Some(b"https://localhost:443"), Some(b"localhost"), true).is_ok());
        assert!(check(&same, Some(b"http://[::1]:80"), Some(b"[::1]"), false).is_ok());
        assert!(check(&same, Some(b"null"), host, false).is_err());
        assert_eq!(check(&same, None, host, false), Ok(host));

        let list = OriginPolicy::List(vec!["http://a.test".into(), "null".into()]);
        assert!(check(&list, Some(b"http://a.test"), host, false).is_ok());
        assert!(check(&list, Some(b"null"), host, false).is_ok());
        assert!(check(&list, Some(b"http://b.test"), host, false).is_err());
        let star = OriginPolicy::List(vec!["*".into()]);
        assert!(check(&star, Some(b"http://b.test"), host, false).is_ok());
        assert!(check(&star, Some(b"null"), host, false).is_err());
        assert!(star.allows_any() && any.allows_any() && !same.allows_any());
    }

    #[test]
    fn same_origin_is_judged_against_the_servers_names_only() {
        // A rebinding page's Host and Origin agree: that proves nothing.
        let same = OriginPolicy::SameOrigin;
        let rebind = (Some(&b"http://rebind.evil:8080"[..]), Some(&b"rebind.evil:8080"[..]));
        for hosts in [
            HostPolicy::new(addr("0.0.0.0:8080"), &[]),
            HostPolicy::new(addr("127.0.0.1:8080"), &["*".into()]),
        ] {
            assert!(check_origin(&same, &hosts, rebind.0, rebind.1, false).is_err());
            let ip = Some(&b"192.168.1.5:8080"[..]);
            let ok = check_origin(&same, &hosts, Some(b"http://192.168.1.5:8080"), ip, false);
            assert_eq!(ok.is_ok(), hosts.addresses, "{hosts:?}");
        }
        let named = HostPolicy::new(addr("0.0.0.0:8080"), &["chat.example".into()]);
        let h = Some(&b"chat.example:8080"[..]);
        assert!(check_origin(&same, &named, Some(b"http://chat.example:8080"), h, false).is_ok());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn fetch_metadata_keeps_blind_cross_site_requests_out() {
        let same = OriginPolicy::SameOrigin;
        let list = OriginPolicy::List(vec!["https://app.test".into()]);
        for (site, mode) in [
            ("cross-site", "no-cors"),
            ("cross-site", "navigate"),
            ("same-site", "no-cors"),
            ("Cross-Site", "No-Cors"),
        ] {
            let h = headers(&[("sec-fetch-site", site), ("sec-fetch-mode", mode)]);
            assert!(check_fetch_metadata(&same, &h).is_err(), "{site} {mode}");
            assert!(check_fetch_metadata(&list, &h).is_err(), "{site} {mode}");
            assert_eq!(check_fetch_metadata(&OriginPolicy::Any, &h), Ok(()));
            let star = OriginPolicy::List(vec!["*".into()]);
            assert_eq!(check_fetch_metadata(&star, &h), Ok(()));
        }
        for ok in [
            headers(&[]),
            headers(&[("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "cors")]),
            headers(&[("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "no-cors")]),
            headers(&[("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate")]),
        ] {
            assert_eq!(check_fetch_metadata(&same, &ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn line_breaks() {
        assert_eq!(check_message(LineBreaks::Refuse, "one line\ttab"), Ok(()));
        for bad in ["a\nb", "a\rb", "\r\n", "end\n"] {
            assert!(check_message(LineBreaks::Refuse, bad).is_err(), "{bad:?}");
            assert_eq!(check_message(LineBreaks::Pass, bad), Ok(()));
        }
    }

    #[test]
    fn secret_paths() {
        let s = Some("k3y");
        assert_eq!(site_path(None, "/sse"), Some("/sse"));
        assert_eq!(site_path(s, "/k3y/sse"), Some("/sse"));
        assert_eq!(site_path(s, "/k3y"), Some(""));
        assert_eq!(site_path(s, "/k3y/"), Some("/"));
        for bad in ["/sse", "/k3z/sse", "/k3yy/sse", "/k3", "/", "", "k3y/sse", "/K3Y/sse", "/é/x"]
        {
            assert_eq!(site_path(s, bad), None, "{bad}");
        }
        assert_eq!(site_path(Some("ab"), "/a\u{e9}"), None, "no slicing inside a character");
    }
}
