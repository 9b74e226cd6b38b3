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
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    let len = if total > max + 2 { total } else { buf.len() };
    if len > max {
        return Ok(Some(Line::TooLong(len)));
    }
    Ok(Some(Line::Text(String::from_utf8_lossy(buf).into_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

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
