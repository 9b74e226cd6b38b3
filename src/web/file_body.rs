//! A file (or a part of one) as a response body, read in chunks: a large
//! file costs one chunk of memory per download, not its size.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// What is read (and sent) at a time.
pub(crate) const CHUNK: usize = 64 * 1024;

/// `len` bytes of a file from `start`.
pub struct FileBody {
    /// `None` once the whole part was read at once (a part of one chunk):
    /// the file and its place are given back before the response is sent.
    file: Option<(tokio::fs::File, OwnedSemaphorePermit)>,
    remaining: u64,
    buf: Vec<u8>,
}

impl FileBody {
    /// From a file already opened (and checked). With a `place` (a
    /// descriptor's), the file stays open while it is sent; without, the
    /// part is read now and the file closed.
    pub async fn new(
        file: std::fs::File,
        start: u64,
        len: u64,
        place: Option<OwnedSemaphorePermit>,
    ) -> io::Result<FileBody> {
        let mut file = tokio::fs::File::from_std(file);
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        if let Some(place) = place {
            return Ok(FileBody { file: Some((file, place)), remaining: len, buf: Vec::new() });
        }
        let mut buf = vec![0; len as usize];
        file.read_exact(&mut buf).await?;
        Ok(FileBody { file: None, remaining: len, buf })
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let Some((file, _)) = &mut this.file else {
            this.remaining = 0;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(std::mem::take(&mut this.buf))))));
        };
        let want = this.remaining.min(CHUNK as u64) as usize;
        this.buf.resize(want, 0);
        let mut rb = ReadBuf::new(&mut this.buf);
        ready!(Pin::new(file).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            // The file shrank under us: end the response as broken rather
            // than short of its Content-Length.
            return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
        }
        this.remaining -= n as u64;
        let chunk = Bytes::copy_from_slice(&this.buf[..n]);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
