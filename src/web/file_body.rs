//! A file (or a part of one) as a response body, read in chunks: a large
//! file costs one chunk of memory per download, not its size.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

const CHUNK: usize = 64 * 1024;

/// `len` bytes of a file from `start`.
pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: Vec<u8>,
}

impl FileBody {
    /// From a file already opened (and checked).
    pub async fn new(file: std::fs::File, start: u64, len: u64) -> io::Result<FileBody> {
        let mut file = tokio::fs::File::from_std(file);
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        Ok(FileBody { file, remaining: len, buf: Vec::new() })
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
        let want = this.remaining.min(CHUNK as u64) as usize;
        this.buf.resize(want, 0);
        let mut rb = ReadBuf::new(&mut this.buf);
        ready!(Pin::new(&mut this.file).poll_read(cx, &mut rb))?;
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
