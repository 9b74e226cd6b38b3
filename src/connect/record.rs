//! The record format: what `connect --record FILE` writes and `bench
//! --scenario FILE` replays. One implementation for both sides.
//!
//! JSON lines. The first is a header:
//! `{"event":"record","version":1,"url":"…","client":"<id>"|null,"mode":"channel"|"raw"|"mcp","started":"<RFC 3339 UTC>"}`.
//! Every other line is exactly the object `connect --format json` prints
//! for an event (`event` first), plus `"t_ms"`: milliseconds since the run
//! started, with microsecond precision. What the client sent is a line
//! `{"event":"send","message_id":N,"data":"…","t_ms":…}`, written when the
//! message is handed to the sender (numbered).

use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The version this code writes and reads.
pub const VERSION: u64 = 1;

/// Longest line a reader accepts: a message is at most 16 MiB, escaped.
pub const MAX_LINE: usize = 64 << 20;

/// Whether the recorded run spoke the channel protocol, read plain SSE or
/// spoke MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    Channel,
    Raw,
    /// `connect --mcp`: sends and messages are JSON-RPC messages.
    Mcp,
}

/// The first line of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always `"record"`: the line reads like the others.
    pub event: String,
    pub version: u64,
    pub url: String,
    /// The client id (`null` in raw mode).
    pub client: Option<String>,
    pub mode: RecordMode,
    /// When the run started, RFC 3339 in UTC.
    pub started: String,
}

impl Header {
    pub fn new(url: &str, client: Option<&str>, mode: RecordMode, started: SystemTime) -> Self {
        Self {
            event: "record".into(),
            version: VERSION,
            url: url.into(),
            client: client.map(str::to_owned),
            mode,
            started: humantime::format_rfc3339_micros(started).to_string(),
        }
    }
}

/// One recorded line after the header.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Milliseconds since the run started.
    pub t_ms: f64,
    pub what: Recorded,
}

/// What a line records. The lifecycle events that a replay may not need
/// in detail are kept whole in [`Recorded::Other`].
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The client handed message `message_id` to the sender.
    Send { message_id: u64, data: String },
    /// A message arrived (raw mode: with the event's type and id).
    Message { data: String, kind: Option<String>, id: Option<String> },
    /// Any other `connect --format json` event (`open`, `disconnected`,
    /// `resumed`, `closed`, `comment`…): its name and the whole line.
    Other { event: String, line: Value },
}

impl Recorded {
    /// The `event` name of the line.
    pub fn event(&self) -> &str {
        match self {
            Recorded::Send { .. } => "send",
            Recorded::Message { .. } => "message",
            Recorded::Other { event, .. } => event,
        }
    }
}

/// Why a record cannot be read.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("cannot read the record: {0}")]
    Io(#[from] std::io::Error),
    #[error("record line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("not a ssechan record: the first line is not a record header ({0})")]
    Header(String),
    #[error("record version {0} is not supported (this ssechan reads version {VERSION})")]
    Version(u64),
}

/// Reads a whole record: its header and its steps, in order.
pub fn read(input: impl BufRead) -> Result<(Header, Vec<Step>), RecordError> {
    let mut lines = RecordLines { input, buf: Vec::new(), n: 0 };
    let first = lines.next_line()?.ok_or_else(|| RecordError::Header("empty file".into()))?;
    let header: Header =
        serde_json::from_slice(&first).map_err(|e| RecordError::Header(e.to_string()))?;
    if header.event != "record" {
        return Err(RecordError::Header(format!("\"event\" is {:?}", header.event)));
    }
    if header.version != VERSION {
        return Err(RecordError::Version(header.version));
    }
    let mut steps = Vec::new();
    while let Some(line) = lines.next_line()? {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let n = lines.n;
        steps.push(parse_step(&line).map_err(|why| RecordError::Line { line: n, why })?);
    }
    Ok((header, steps))
}

/// Reads a record file.
pub fn read_file(path: &Path) -> Result<(Header, Vec<Step>), RecordError> {
    read(std::io::BufReader::new(File::open(path)?))
}

struct RecordLines<R> {
    input: R,
    buf: Vec<u8>,
    /// Number of the line last read, from 1.
    n: usize,
}

impl<R: BufRead> RecordLines<R> {
    /// The next line without its end; bounded by [`MAX_LINE`].
    fn next_line(&mut self) -> Result<Option<Vec<u8>>, RecordError> {
        self.buf.clear();
        self.n += 1;
        let limit = (MAX_LINE + 1) as u64;
        let read = std::io::Read::take(&mut self.input, limit).read_until(b'\n', &mut self.buf)?;
        if read == 0 {
            return Ok(None);
        }
        if self.buf.len() > MAX_LINE {
            return Err(RecordError::Line {
                line: self.n,
                why: format!("longer than {MAX_LINE} bytes"),
            });
        }
        while self.buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            self.buf.pop();
        }
        Ok(Some(std::mem::take(&mut self.buf)))
    }
}

fn parse_step(line: &[u8]) -> Result<Step, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let event = obj.get("event").and_then(Value::as_str).ok_or("no \"event\" string")?;
    let t_ms = obj.get("t_ms").and_then(Value::as_f64).ok_or("no \"t_ms\" number")?;
    let text = |key: &str| obj.get(key).and_then(Value::as_str).map(str::to_owned);
    let what = match event {
        "send" => Recorded::Send {
            message_id: obj
                .get("message_id")
                .and_then(Value::as_u64)
                .ok_or("send without a \"message_id\" number")?,
            data: text("data").ok_or("send without a \"data\" string")?,
        },
        "message" => Recorded::Message {
            data: text("data").ok_or("message without a \"data\" string")?,
            kind: text("type"),
            id: text("id"),
        },
        other => Recorded::Other { event: other.to_owned(), line: value.clone() },
    };
    Ok(Step { t_ms, what })
}

/// Writes a record as the run goes. Shared by the event loop and the
/// sender (through [`Recorder::send`]); every line is flushed, so a run
/// that is killed leaves a record up to its last event.
pub struct Recorder {
    started: Instant,
    out: Mutex<BufWriter<File>>,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: &Path, header: &Header) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let rec = Self { started: Instant::now(), out: Mutex::new(BufWriter::new(file)) };
        let line = serde_json::to_string(header).map_err(std::io::Error::other)?;
        rec.write_line(line)?;
        Ok(rec)
    }

    /// Milliseconds since the run started, to the microsecond.
    pub fn t_ms(&self) -> f64 {
        self.started.elapsed().as_micros() as f64 / 1000.0
    }

    /// Records one `connect --format json` line (an object, `event` first).
    pub fn event(&self, json_line: &str) -> std::io::Result<()> {
        let Some(body) = json_line.strip_suffix('}') else {
            return Err(std::io::Error::other(format!("not a JSON object: {json_line}")));
        };
        self.write_line(format!("{body},\"t_ms\":{:.3}}}", self.t_ms()))
    }

    /// Records a message handed to the sender; `body` is its POST body,
    /// already a JSON string.
    pub fn send(&self, message_id: u64, body: &[u8]) -> std::io::Result<()> {
        // A raw probe (REPL `/json`) that a lenient server took may be any
        // bytes: then they are recorded as the text they are.
        let data = match serde_json::from_slice::<String>(body) {
            Ok(_) => String::from_utf8_lossy(body).into_owned(),
            Err(_) => serde_json::to_string(&String::from_utf8_lossy(body))
                .map_err(std::io::Error::other)?,
        };
        let t = self.t_ms();
        self.write_line(format!(
            "{{\"event\":\"send\",\"message_id\":{message_id},\"data\":{data},\"t_ms\":{t:.3}}}"
        ))
    }

    fn write_line(&self, line: String) -> std::io::Result<()> {
        let mut out = self.out.lock().map_err(|_| std::io::Error::other("record lock poisoned"))?;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_lines_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.jsonl");
        let header =
            Header::new("http://h/sse", Some("me"), RecordMode::Channel, SystemTime::now());
        let rec = Recorder::create(&path, &header).unwrap();
        rec.event(r#"{"event":"open","client":"me"}"#).unwrap();
        rec.send(0, br#""hello \"you\"""#).unwrap();
        rec.event(r#"{"event":"message","data":"a\nb"}"#).unwrap();
        rec.event(r#"{"event":"message","type":"tick","id":"7","data":"x"}"#).unwrap();
        drop(rec);
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        assert!(first.starts_with(r#"{"event":"record","version":1,"url":"http://h/sse","client":"me","mode":"channel","started":""#), "{first}");
        assert!(first.ends_with("Z\"}"), "RFC 3339 UTC: {first}");
        for line in text.lines().skip(1) {
            assert!(line.starts_with(r#"{"event":""#), "{line}");
        }
        let (h, steps) = read_file(&path).unwrap();
        assert_eq!(h, header);
        let whats: Vec<_> = steps.iter().map(|s| s.what.clone()).collect();
        assert_eq!(whats[1], Recorded::Send { message_id: 0, data: "hello \"you\"".into() });
        assert_eq!(whats[2], Recorded::Message { data: "a\nb".into(), kind: None, id: None });
        assert_eq!(
            whats[3],
            Recorded::Message { data: "x".into(), kind: Some("tick".into()), id: Some("7".into()) }
        );
        assert_eq!(whats[0].event(), "open");
        assert!(steps.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    }

    #[test]
    fn bad_records_say_where() {
        let err = |text: &str| read(text.as_bytes()).unwrap_err().to_string();
        assert!(err("").contains("empty file"));
        assert!(err("{\"event\":\"open\"}\n").contains("not a ssechan record"));
        let head =
            r#"{"event":"record","version":1,"url":"u","client":null,"mode":"raw","started":"x"}"#;
        assert!(err(&head.replace(":1,", ":2,")).contains("version 2"));
        assert_eq!(
            err(&format!("{head}\n{{\"event\":\"open\"}}\n")),
            "record line 2: no \"t_ms\" number"
        );
        assert!(err(&format!("{head}\n\nnot json\n")).starts_with("record line 3: not JSON"));
        let (h, steps) = read(format!("{head}\r\n").as_bytes()).unwrap();
        assert_eq!((h.client, h.mode, steps.len()), (None, RecordMode::Raw, 0));
    }
}
