//! Bounded line reading: a peer or a pipe cannot make us buffer an endless line.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, its `\n` or `\r\n` stripped (lossy UTF-8).
    Text(String),
    /// A line longer than the limit; its bytes were skipped.
    TooLong(usize),
}

/// Reads one line of at most `max` bytes; `None` at EOF. A longer line is
/// consumed without being kept and reported as [`Line::TooLong`].
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            break;
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        total += take;
        if total <= max + 2 {
            buf.extend_from_slice(&chunk[..take]);
        }
        reader.consume(take);
        if done {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(finish(buf, total, max)))
}

/// The next line if the reader's buffer already holds all of it (no
/// read): a caller takes what a pipe delivered at once as one batch.
pub fn buffered_line<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut tokio::io::BufReader<R>,
    buf: &mut Vec<u8>,
    max: usize,
) -> Option<Line> {
    let chunk = reader.buffer();
    let take = chunk.iter().position(|&b| b == b'\n')? + 1;
    buf.clear();
    if take <= max + 2 {
        buf.extend_from_slice(&chunk[..take]);
    }
    std::pin::Pin::new(&mut *reader).consume(take);
    Some(finish(buf, take, max))
}

/// `buf` (at most `max` + 2 of the line's `total` bytes) as a [`Line`].
fn finish(buf: &mut Vec<u8>, total: usize, max: usize) -> Line {
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    let len = if total > max + 2 { total } else { buf.len() };
    if len > max {
        return Line::TooLong(len);
    }
    Line::Text(String::from_utf8_lossy(buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffered_lines_are_taken_without_a_read() {
        let input: &[u8] = b"a\r\n0123456789abc\nbb\npartial";
        let mut r = tokio::io::BufReader::new(input);
        let mut buf = Vec::new();
        assert_eq!(buffered_line(&mut r, &mut buf, 10), None, "nothing read yet");
        assert_eq!(read_line(&mut r, &mut buf, 10).await.unwrap(), Some(Line::Text("a".into())));
        assert_eq!(buffered_line(&mut r, &mut buf, 10), Some(Line::TooLong(14)));
        assert_eq!(buffered_line(&mut r, &mut buf, 10), Some(Line::Text("bb".into())));
        assert_eq!(buffered_line(&mut r, &mut buf, 10), None, "no complete line left");
        let last = read_line(&mut r, &mut buf, 10).await.unwrap();
        assert_eq!(last, Some(Line::Text("partial".into())));
    }

    #[tokio::test]
    async fn lines_and_bounds() {
        let input: &[u8] = b"a\r\nbb\n0123456789abc\nlast";
        let mut r = tokio::io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some(l) = read_line(&mut r, &mut buf, 10).await.unwrap() {
            got.push(l);
        }
        assert_eq!(
            got,
            [
                Line::Text("a".into()),
                Line::Text("bb".into()),
                Line::TooLong(14),
                Line::Text("last".into())
            ]
        );
    }
}
