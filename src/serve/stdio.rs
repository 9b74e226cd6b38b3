//! `serve`'s stdin/stdout wiring, text and JSON.

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::cli::Format;
use crate::lines::{Line, buffered_line, read_line};
use crate::server::{Connection, ConnectionEvent, ServerHandle};
use crate::text::escape_controls;

/// Forwards one connection's events to the stdout writer.
pub(super) async fn forward(mut conn: Connection, format: Format, out: mpsc::Sender<String>) {
    // The id is the connection's, not a copy: this task lives as long as
    // its stream, idle ones included.
    if format == Format::Json {
        let remote = conn.remote_addr().to_string();
        let line = json!({"event": "connect", "client": conn.id(), "remote": remote}).to_string();
        if put(&out, line).await.is_err() {
            return;
        }
    }
    while let Some(ev) = conn.recv().await {
        let id = conn.id();
        let line = match (format, ev) {
            (Format::Text, ConnectionEvent::Message(m)) => m,
            (Format::Text, _) => continue,
            (Format::Json, ConnectionEvent::Message(m)) => {
                json!({"event": "message", "client": id, "data": m}).to_string()
            }
            (Format::Json, ConnectionEvent::Suspended) => {
                json!({"event": "suspend", "client": id}).to_string()
            }
            (Format::Json, ConnectionEvent::Resumed) => {
                json!({"event": "resume", "client": id}).to_string()
            }
            (Format::Json, ConnectionEvent::Gap { lost }) => {
                json!({"event": "gap", "client": id, "lost": lost}).to_string()
            }
            (Format::Json, ConnectionEvent::Closed(info)) => json!({
                "event": "close",
                "client": id,
                "undelivered": info.undelivered,
                "reason": info.reason.to_string(),
            })
            .to_string(),
        };
        if put(&out, line).await.is_err() {
            warn!(client = %id, "stdout is gone; message not written");
            return;
        }
    }
}

/// Queues `line` for the stdout writer, waiting while its queue is full.
/// The wait is boxed: [`forward`]'s task lives as long as its stream, and
/// a send's state (a semaphore waiter) kept in it would be paid by every
/// idle stream.
async fn put(out: &mpsc::Sender<String>, line: String) -> Result<(), ()> {
    match out.try_send(line) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(line)) => Box::pin(out.send(line)).await.map_err(drop),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}

/// Writes lines to stdout, flushing whenever no more are waiting, so a
/// burst costs few writes. On a `terminal` what clients sent has its
/// control characters escaped: it must not retitle, clear or program the
/// operator's terminal. A pipe gets the bytes as they are.
pub(super) async fn write_stdout(
    mut rx: mpsc::Receiver<String>,
    terminal: bool,
) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, tokio::io::stdout());
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(line) = next {
            let line = if terminal { escape_controls(&line) } else { line.as_str().into() };
            w.write_all(line.as_bytes()).await?;
            w.write_all(b"\n").await?;
            next = rx.try_recv().ok();
        }
        w.flush().await?;
    }
    w.flush().await
}

/// The JSON stdin lines there are, for the errors that refuse one.
const JSON_SHAPES: &str = r#"a line is {"data":"text"} (to every client), {"client":"ID","data":"text"}, {"client":"ID","close":true} or {"client":"ID","drop":true}"#;

/// One stdin command in JSON mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    client: Option<String>,
    data: Option<String>,
    #[serde(default)]
    close: bool,
    #[serde(default)]
    drop: bool,
}

/// Reads stdin until EOF (which does not stop the server) and sends what
/// it says. Bad lines get a one-line error on stderr.
pub(super) async fn read_stdin(server: ServerHandle, format: Format, max: usize) {
    let mut stdin = BufReader::with_capacity(STDIN_BUFFER, tokio::io::stdin());
    let mut buf = Vec::new();
    let mut n = 0u64;
    // Text lines the pipe delivered together, broadcast as one batch.
    let mut batch: Vec<String> = Vec::new();
    loop {
        let line = match read_line(&mut stdin, &mut buf, max).await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                eprintln!("ssechan: cannot read stdin: {e}");
                break;
            }
        };
        let mut next = Some(line);
        while let Some(line) = next.take() {
            n += 1;
            match line {
                Line::TooLong(len) => eprintln!(
                    "ssechan: stdin line {n}: {len} bytes is over the message limit of {max}; not sent"
                ),
                Line::Text(t) if format == Format::Text => batch.push(t),
                Line::Text(t) => {
                    if let Err(e) = json_command(&server, &t).await {
                        eprintln!("ssechan: stdin line {n}: {e}");
                    }
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = buffered_line(&mut stdin, &mut buf, max);
            }
        }
        if !batch.is_empty() {
            let lines: Vec<&str> = batch.iter().map(String::as_str).collect();
            if server.broadcast_all(&lines).await == 0 {
                let first = n + 1 - batch.len() as u64;
                let which =
                    if first == n { format!("line {n}") } else { format!("lines {first}-{n}") };
                eprintln!("ssechan: stdin {which}: no client connected; message dropped");
            }
            batch.clear();
        }
    }
    info!("stdin closed; still serving");
}

/// The stdin buffer: what a pipe delivers at once (64 KiB on Linux).
const STDIN_BUFFER: usize = 64 << 10;
/// Lines broadcast at most as one batch.
const MAX_BATCH: usize = 1024;

/// Echo mode has no use for stdin: says so once when something is typed,
/// then discards the rest, so a pipe writer is not blocked either.
pub(super) async fn ignore_stdin() {
    // `ssechan serve --echo &` must keep serving, not be stopped for
    // reading its terminal from the background.
    crate::sys::never_stop_on_terminal_read();
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 8192];
    let mut told = false;
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) => break,
            Ok(_) if !told => {
                told = true;
                eprintln!(
                    "ssechan: stdin is not used with --echo (every message goes back to its sender); input ignored"
                );
            }
            Ok(_) => {}
            Err(e) => {
                debug!("stdin not read further: {e}");
                return;
            }
        }
    }
    info!("stdin closed; still serving");
}

async fn broadcast_one(server: &ServerHandle, message: &str) -> Result<(), String> {
    match server.broadcast(message).await {
        0 => Err("no client connected; message dropped".into()),
        _ => Ok(()),
    }
}

async fn json_command(server: &ServerHandle, line: &str) -> Result<(), String> {
    if line.trim().is_empty() {
        return Ok(());
    }
    let cmd: Command =
        serde_json::from_str(line).map_err(|e| format!("bad JSON command ({e}): {JSON_SHAPES}"))?;
    let actions = usize::from(cmd.data.is_some()) + usize::from(cmd.close) + usize::from(cmd.drop);
    if actions != 1 {
        return Err(format!(
            "a command needs exactly one of \"data\", \"close\": true, \"drop\": true: {JSON_SHAPES}"
        ));
    }
    let Some(client) = cmd.client else {
        return match cmd.data {
            Some(data) => broadcast_one(server, &data).await,
            None => Err("\"close\" and \"drop\" need a \"client\"".into()),
        };
    };
    let conn = server.connection(&client).ok_or_else(|| format!("no client {client:?}"))?;
    if let Some(data) = cmd.data {
        conn.send(&data).map_err(|e| format!("client {client:?}: {e}"))
    } else if cmd.close {
        conn.close();
        Ok(())
    } else {
        conn.drop_stream();
        Ok(())
    }
}
