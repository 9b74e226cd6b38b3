//! Answers that arrive before the request is written. A server may refuse
//! a POST from its head (413 from `Content-Length`, 503 when busy) and
//! close with the body unread; its kernel then resets the connection, and a
//! client still writing the body fails with a broken pipe although the
//! answer is waiting in its socket. Like curl, ssechan's clients read it:
//! [`EarlyAnswer`] takes a write the peer refused as done, so hyper goes on
//! to read the answer (bench's POST connections, [`post_once`]); reqwest
//! lets no one near its connections, so a POST it lost that way is asked
//! again with [`post_once`], on a connection of its own (plain HTTP only:
//! over TLS the error stays).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderMap};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::debug;

use super::{REASON_MAX, reason_line};

/// Whether `e` says the peer closed the connection under a write.
fn refused_write(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// A client connection on which a write the peer refused by closing is
/// taken as written, and so is everything written after it: what the
/// peer answered before closing is then read as usual, and with no answer
/// there, reading fails and says so. Nothing waits longer than it would:
/// reading a closed connection ends at once.
pub(crate) struct EarlyAnswer<T> {
    inner: T,
    refused: bool,
}

impl<T> EarlyAnswer<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self { inner, refused: false }
    }

    /// A write's outcome, with a refusal by the peer taken as `written`.
    fn written(&mut self, r: Poll<io::Result<usize>>, written: usize) -> Poll<io::Result<usize>> {
        match r {
            Poll::Ready(Err(e)) if refused_write(&e) => {
                debug!("the server closed while the request was written ({e}); reading its answer");
                self.refused = true;
                Poll::Ready(Ok(written))
            }
            r => r,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for EarlyAnswer<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EarlyAnswer<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.refused {
            return Poll::Ready(Ok(buf.len()));
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(r, buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let all = bufs.iter().map(|b| b.len()).sum();
        if self.refused {
            return Poll::Ready(Ok(all));
        }
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(r, all)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.refused {
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.written(r.map_ok(|()| 0), 0).map_ok(|_| ())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.refused {
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.written(r.map_ok(|()| 0), 0).map_ok(|_| ())
    }
}

/// Whether reqwest lost a request because the server closed while it was
/// being written (the answer may have been waiting: ask [`post_once`]).
pub(crate) fn closed_while_sending(e: &reqwest::Error) -> bool {
    if e.is_connect() || e.is_timeout() {
        return false;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        next = match err.downcast_ref::<io::Error>() {
            Some(io) if refused_write(io) => return true,
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => err.source(),
        };
    }
    false
}

/// A server's answer to [`post_once`].
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The first line of the body (bounded), as [`super::first_line`].
    pub reason: String,
}

/// POSTs `body` to an `http://` `url` with `headers` on a new connection
/// that reads an answer given before the body was written, within
/// `within`. `Err` says why there was no answer.
pub(crate) async fn post_once(
    url: &Url,
    headers: &HeaderMap,
    body: Bytes,
    within: Duration,
) -> Result<Answer, String> {
    if url.scheme() != "http" {
        return Err(format!("{} is not plain HTTP", url.scheme()));
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut req = Request::post(target)
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    *req.headers_mut() = headers.clone();
    let host_value = HeaderValue::from_str(&authority).map_err(|_| "a bad host".to_owned())?;
    req.headers_mut().insert(HOST, host_value);
    let work = async {
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port);
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(EarlyAnswer::new(tcp));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        // Polled while the answer is read; ends with the connection.
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(req).await.map_err(|e| format!("request failed: {e}"));
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                conn.abort();
                return Err(e);
            }
        };
        let (parts, mut body) = resp.into_parts();
        let mut buf = Vec::new();
        while buf.len() < REASON_MAX {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        buf.extend_from_slice(&d[..d.len().min(REASON_MAX - buf.len())]);
                    }
                }
                _ => break,
            }
        }
        conn.abort();
        Ok(Answer { status: parts.status, headers: parts.headers, reason: reason_line(&buf) })
    };
    match tokio::time::timeout(within, work).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A server that answers 413 to every connection at once, before
    /// reading anything, and closes: the client's request then meets a
    /// closed socket (reset, broken pipe) with the answer waiting for it.
    async fn answering_at_once() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let answer = "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\
                              connection: close\r\n\r\ntoo big\r\n";
                let _ = tcp.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    /// A body far larger than the socket buffers: writing it must fail.
    fn big() -> Bytes {
        Bytes::from(vec![b'x'; 32 << 20])
    }

    #[tokio::test]
    async fn post_once_reads_an_early_answer() {
        let addr = answering_at_once().await;
        let url = Url::parse(&format!("http://{addr}/sse?sseClientId=c&messageId=0")).unwrap();
        for round in 0..10 {
            let answer = post_once(&url, &HeaderMap::new(), big(), Duration::from_secs(10)).await;
            let answer = answer.unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!((answer.status.as_u16(), answer.reason.as_str()), (413, "too big"));
        }
    }

    #[tokio::test]
    async fn a_lost_post_is_told_from_other_failures() {
        let refused = reqwest::Client::new().post("http://127.0.0.1:1/").send().await;
        assert!(!closed_while_sending(&refused.unwrap_err()), "a refused connection");
    }
}
