//! `serve --static DIR`: GET and HEAD of paths other than the channel's
//! serve files from DIR.
//!
//! The decisions are pure functions of the request and the file's
//! metadata ([`relative_path`], [`content_type`], [`Validators`],
//! [`not_modified`], [`byte_range`]), tested with plain values; [`serve`]
//! does the I/O. Choices: a directory serves its `index.html` (a directory
//! path without its trailing slash is redirected to it, so relative links
//! work) and is never listed; a path with `..`, a dot segment (`.git`,
//! `.env`), an encoded `/`, `\` or NUL, or one that leads out of DIR or
//! to a hidden name through a symlink is 404 (not 403: nothing is
//! revealed). What is checked is the file opened, once: a symlink swapped
//! in after the check is not followed. Responses carry
//! `ETag`, `Last-Modified`, `Cache-Control: no-cache` (revalidate: this is
//! for development) and `X-Content-Type-Options: nosniff`; one byte range
//! is honoured (`206`, or `416` when unsatisfiable), several are answered
//! with the whole file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{Either, Full};

use tokio::sync::Semaphore;

use super::file_body::{CHUNK, FileBody};

/// A response of the web module: small bodies in memory, files streamed.
pub type WebBody = Either<Full<Bytes>, FileBody>;

/// The path below DIR that `url_path` (still percent-encoded) names, or
/// `None` when it must not be served.
pub fn relative_path(url_path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for raw in url_path.split('/') {
        let seg = percent_decode(raw)?;
        if seg.is_empty() {
            continue;
        }
        // ".", "..", and hidden files alike.
        if seg.starts_with('.') || seg.contains(['/', '\\', '\0']) {
            return None;
        }
        out.push(seg);
    }
    Some(out)
}

/// `%XX`-decodes one path segment; `None` for a bad escape or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `Content-Type` for a file name, by extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// A file's cache validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    pub etag: String,
    pub last_modified: String,
}

impl Validators {
    /// From the file's length and modification time: a changed file gets
    /// a new `ETag`.
    pub fn new(len: u64, modified: SystemTime) -> Validators {
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        Validators {
            etag: format!("\"{len:x}-{:x}\"", since.as_nanos()),
            last_modified: http_date(since.as_secs()),
        }
    }
}

/// Whether a conditional GET may be answered `304`. `If-None-Match` wins
/// over `If-Modified-Since`, which must repeat our `Last-Modified` exactly
/// (browsers send back the value they were given).
pub fn not_modified(headers: &HeaderMap, v: &Validators) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH) {
        let Ok(inm) = inm.to_str() else { return false };
        let ours = v.etag.trim_start_matches("W/");
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == ours);
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .is_some_and(|ims| ims.as_bytes() == v.last_modified.as_bytes())
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No (usable) range: the whole file.
    Whole,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Outside the file: `416`.
    Unsatisfiable,
}

/// Reads a `Range` header (RFC 9110 §14.1.2): one range is honoured; a
/// malformed header or several ranges get the whole file.
pub fn byte_range(range: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return ByteRange::Whole };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (a.is_empty(), num(a), num(b)) {
        // "-N": the last N bytes.
        (true, _, Some(n)) => match n {
            0 => ByteRange::Unsatisfiable,
            _ if len == 0 => ByteRange::Unsatisfiable,
            _ => ByteRange::Part { start: len.saturating_sub(n), end: len - 1 },
        },
        (false, Some(start), end) if b.is_empty() || end.is_some() => {
            if start >= len {
                return ByteRange::Unsatisfiable;
            }
            match end {
                Some(e) if e < start => ByteRange::Whole,
                Some(e) => ByteRange::Part { start, end: e.min(len - 1) },
                None => ByteRange::Part { start, end: len - 1 },
            }
        }
        _ => ByteRange::Whole,
    }
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) of a Unix time.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Canonicalises DIR once at start; `Err` says why it cannot be served.
pub fn check_root(dir: &Path) -> Result<PathBuf, String> {
    let root = dir.canonicalize().map_err(|e| format!("--static {}: {e}", dir.display()))?;
    if !root.is_dir() {
        return Err(format!("--static {}: not a directory", dir.display()));
    }
    Ok(root)
}

/// Where files are served from.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// Canonical (see [`check_root`]).
    pub root: &'a Path,
    /// The URLs hold a secret: pages must not send them on as `Referer`.
    pub private: bool,
    /// A place per file open; a download that would hold one without a
    /// place is refused (`503`) rather than take a descriptor.
    pub open_files: &'a Arc<Semaphore>,
}

/// Answers a request for a path other than the channel's from the site
/// (`path` is below any secret prefix).
pub async fn serve(
    site: &Site<'_>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response<WebBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = small(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let not_found = || small(StatusCode::NOT_FOUND, "not found\n");
    let Some(rel) = relative_path(path) else { return not_found() };
    let root = site.root;
    let (opened, meta, file) = match locate(root, &rel).await {
        Some(Found::File(o, m, f)) => (o, m, f),
        Some(Found::Dir) if path.ends_with('/') => {
            match locate(root, &rel.join("index.html")).await {
                Some(Found::File(o, m, f)) => (o, m, f),
                _ => return not_found(), // no index.html: no listing either
            }
        }
        Some(Found::Dir) => {
            // Relative links in its index.html need the slash.
            let to = slash_redirect(path, query);
            let mut r = small(StatusCode::MOVED_PERMANENTLY, "");
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
        None => return not_found(),
    };
    let len = meta.len();
    let v = Validators::new(len, meta.modified().unwrap_or(UNIX_EPOCH));
    let mut h = HeaderMap::new();
    let mut set = |name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(header::ETAG, &v.etag);
    set(header::LAST_MODIFIED, &v.last_modified);
    set(header::CACHE_CONTROL, "no-cache");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::ACCEPT_RANGES, "bytes");
    if site.private {
        set(header::REFERRER_POLICY, "no-referrer");
    }
    if not_modified(headers, &v) {
        return with(StatusCode::NOT_MODIFIED, h, Either::Left(Full::new(Bytes::new())));
    }
    set(header::CONTENT_TYPE, content_type(&file));
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // If-Range with another validator: the file changed, send it whole.
    let if_range_ok =
        headers.get(header::IF_RANGE).is_none_or(|ir| ir.as_bytes() == v.etag.as_bytes());
    let range = if if_range_ok { byte_range(range_header, len) } else { ByteRange::Whole };
    let (status, start, end) = match range {
        ByteRange::Whole => (StatusCode::OK, 0, len),
        ByteRange::Part { start, end } => {
            set(header::CONTENT_RANGE, &format!("bytes {start}-{end}/{len}"));
            (StatusCode::PARTIAL_CONTENT, start, end + 1)
        }
        ByteRange::Unsatisfiable => {
            let mut r = small(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(cr) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, cr);
            }
            return r;
        }
    };
    set(header::CONTENT_LENGTH, &(end - start).to_string());
    if method == Method::HEAD {
        return with(status, h, Either::Left(Full::new(Bytes::new())));
    }
    // A part of one chunk is read at once and its file closed; a larger
    // one keeps its file open while it is sent, in a place of its own.
    let place = match end - start > CHUNK as u64 {
        false => None,
        true => match site.open_files.clone().try_acquire_owned() {
            Ok(place) => Some(place),
            Err(_) => {
                let mut r =
                    small(StatusCode::SERVICE_UNAVAILABLE, "too many files being sent at once\n");
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
        },
    };
    match FileBody::new(opened, start, end - start, place).await {
        Ok(body) => with(status, h, Either::Right(body)),
        Err(_) => not_found(),
    }
}

/// The `Location` that adds the slash to a directory's path: relative to
/// the request (`./NAME/`), so that no path (`//host`, `/\\host`) can make
/// it name another host.
pub fn slash_redirect(path: &str, query: Option<&str>) -> String {
    let last = path.rsplit('/').next().unwrap_or_default();
    match query {
        Some(q) => format!("./{last}/?{q}"),
        None => format!("./{last}/"),
    }
}

fn with(status: StatusCode, headers: HeaderMap, body: WebBody) -> Response<WebBody> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

enum Found {
    /// The file opened, its metadata, and its real path.
    File(std::fs::File, Box<std::fs::Metadata>, PathBuf),
    Dir,
}

/// What `rel` names inside `root`, following symlinks only while they
/// stay inside `root` and lead to no hidden name; opened once, and the
/// open file is what is checked.
async fn locate(root: &Path, rel: &Path) -> Option<Found> {
    let (root, rel) = (root.to_owned(), rel.to_owned());
    tokio::task::spawn_blocking(move || open_inside(&root, &rel)).await.ok()?
}

fn open_inside(root: &Path, rel: &Path) -> Option<Found> {
    open_checked(&resolve(root, rel)?)
}

/// The real path `rel` leads to, if it is inside `root` and hidden nowhere
/// on the way.
fn resolve(root: &Path, rel: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(root.join(rel)).ok()?;
    let inside = real.strip_prefix(root).ok()?;
    // `relative_path` refused hidden names in the URL; a symlink may
    // still lead to one (`config -> .env`).
    if inside.components().any(|c| c.as_os_str().as_encoded_bytes().starts_with(b".")) {
        return None;
    }
    Some(real)
}

/// Opens `real` as [`resolve`] found it, or nothing if it changed since.
fn open_checked(real: &Path) -> Option<Found> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // A symlink swapped in for the last name since is not followed; one
    // for a directory on the way shows in the open file's own path. No
    // wait on a FIFO, no controlling terminal from a device.
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(real)
        .ok()?;
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    if opened != real {
        return None;
    }
    let meta = file.metadata().ok()?;
    if meta.is_dir() {
        Some(Found::Dir)
    } else if meta.is_file() {
        Some(Found::File(file, Box::new(meta), real.to_owned()))
    } else {
        None // sockets, devices, FIFOs
    }
}

fn small(status: StatusCode, body: &'static str) -> Response<WebBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))));
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_dir() {
        let ok = |p: &str| relative_path(p).map(|r| r.to_string_lossy().into_owned());
        assert_eq!(ok("/"), Some("".into()));
        assert_eq!(ok("/index.html"), Some("index.html".into()));
        assert_eq!(ok("/a//b/./c.js").as_deref(), None, "a dot segment is refused");
        assert_eq!(ok("/a//b/c.js"), Some("a/b/c.js".into()));
        assert_eq!(ok("/my%20file.txt"), Some("my file.txt".into()));
        assert_eq!(ok("/caf%C3%A9"), Some("café".into()));
        for bad in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/x",
            "/a/%2e%2e%2f%2e%2e%2fetc",
            "/..%2fetc",
            "/a%2fb",
            "/a%5c..%5cb",
            "/a%00.html",
            "/.git/config",
            "/.env",
            "/%zz",
            "/%4",
            "/%ff",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn directory_redirects_stay_on_this_host() {
        assert_eq!(slash_redirect("/docs", None), "./docs/");
        assert_eq!(slash_redirect("/a/b", Some("x=1")), "./b/?x=1");
        assert_eq!(slash_redirect("//evil.example", None), "./evil.example/");
        assert_eq!(slash_redirect("/a:b", None), "./a:b/");
    }

    #[test]
    fn symlinks_lead_nowhere_hidden_or_outside() {
        let (root, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let r = root.path().canonicalize().unwrap();
        std::fs::write(r.join(".env"), "TOKEN=1").unwrap();
        std::fs::create_dir(r.join(".git")).unwrap();
        std::fs::write(r.join(".git/config"), "x").unwrap();
        std::fs::write(r.join("page.html"), "ok").unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let link = |to: &Path, name: &str| std::os::unix::fs::symlink(to, r.join(name)).unwrap();
        link(&r.join(".env"), "config.txt");
        link(&r.join(".git"), "repo");
        link(&outside.path().join("secret"), "leak");
        link(&r.join("page.html"), "alias.html");
        for hidden in ["config.txt", "repo/config", "leak"] {
            assert!(open_inside(&r, Path::new(hidden)).is_none(), "{hidden}");
        }
        assert!(matches!(open_inside(&r, Path::new("alias.html")), Some(Found::File(..))));
    }

    #[test]
    fn what_is_opened_is_what_was_checked() {
        let (root, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let r = root.path().canonicalize().unwrap();
        std::fs::create_dir(r.join("sub")).unwrap();
        std::fs::write(r.join("sub/page.html"), "ok").unwrap();
        std::fs::write(r.join("page.html"), "ok").unwrap();
        std::fs::write(outside.path().join("page.html"), "secret").unwrap();
        // Checked, then the file becomes a symlink to a secret.
        let checked = resolve(&r, Path::new("page.html")).unwrap();
        std::fs::remove_file(r.join("page.html")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("page.html"), r.join("page.html")).unwrap();
        assert!(open_checked(&checked).is_none(), "followed a symlink swapped in for the file");
        // Checked, then a directory on the way becomes a symlink.
        let checked = resolve(&r, Path::new("sub/page.html")).unwrap();
        std::fs::rename(r.join("sub"), r.join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("sub")).unwrap();
        assert!(open_checked(&checked).is_none(), "followed a directory swapped for a symlink");
        // Unchanged, it opens.
        let checked = resolve(&r, Path::new("moved/page.html")).unwrap();
        assert!(matches!(open_checked(&checked), Some(Found::File(..))));
    }

    #[test]
    fn content_types_by_extension() {
        let ct = |p: &str| content_type(Path::new(p));
        assert_eq!(ct("index.html"), "text/html; charset=utf-8");
        assert_eq!(ct("APP.JS"), "text/javascript; charset=utf-8");
        assert_eq!(ct("a.css"), "text/css; charset=utf-8");
        assert_eq!(ct("a.svg"), "image/svg+xml");
        assert_eq!(ct("a.wasm"), "application/wasm");
        assert_eq!(ct("Makefile"), "application/octet-stream");
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn conditional_requests() {
        let v = Validators::new(10, UNIX_EPOCH + std::time::Duration::from_secs(784_111_777));
        assert_eq!(v.last_modified, "Sun, 06 Nov 1994 08:49:37 GMT");
        let h = |pairs: &[(header::HeaderName, &str)]| {
            let mut m = HeaderMap::new();
            for (k, val) in pairs {
                m.insert(k.clone(), val.parse().unwrap());
            }
            m
        };
        assert!(!not_modified(&h(&[]), &v));
        assert!(not_modified(&h(&[(header::IF_NONE_MATCH, &v.etag)]), &v));
        assert!(not_modified(&h(&[(header::IF_NONE_MATCH, &format!("\"x\", W/{}", v.etag))]), &v));
        assert!(not_modified(&h(&[(header::IF_NONE_MATCH, "*")]), &v));
        assert!(!not_modified(&h(&[(header::IF_NONE_MATCH, "\"other\"")]), &v));
        assert!(not_modified(&h(&[(header::IF_MODIFIED_SINCE, &v.last_modified)]), &v));
        // If-None-Match decides when both are present.
        let both =
            [(header::IF_NONE_MATCH, "\"other\""), (header::IF_MODIFIED_SINCE, &v.last_modified)];
        assert!(!not_modified(&h(&both), &v));
        let changed = Validators::new(11, UNIX_EPOCH + std::time::Duration::from_secs(784_111_777));
        assert_ne!(changed.etag, v.etag, "a new length is a new ETag");
    }

    #[test]
    fn byte_ranges() {
        use ByteRange::*;
        let r = |h: &str| byte_range(Some(h), 100);
        assert_eq!(byte_range(None, 100), Whole);
        assert_eq!(r("bytes=0-9"), Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=90-500"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-10"), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-500"), Part { start: 0, end: 99 });
        assert_eq!(r("bytes=100-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(byte_range(Some("bytes=0-"), 0), Unsatisfiable);
        for whole in ["bytes=0-1,5-6", "bytes=5-1", "items=0-1", "bytes=a-b", "bytes=-", "bytes=1"]
        {
            assert_eq!(r(whole), Whole, "{whole}");
        }
    }
}
