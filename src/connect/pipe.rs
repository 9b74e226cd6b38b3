//! Pipe mode: stdin lines out as messages, received messages to stdout.
//!
//! The run ends when the server closes (0), the client gives up (1),
//! `--count` messages arrived (0), or stdin ended, every message was
//! acknowledged and `--wait` passed without anything else to do (0). When
//! it ends by itself it tells the server (`ChannelClient::close`). State
//! changes are plain lines on stderr in text mode (`-q` silences them).

use std::io::ErrorKind;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter, Stdout};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use super::output::{View, data_text};
use super::{MAX_LINE, exit_status};
use crate::cli::ConnectArgs;
use crate::client::{ChannelClient, ClientError, ClientEvent};
use crate::lines::{Line, read_line};

/// Where the run stands on the way to a clean exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Still reading stdin (or `--raw`: reading until the stream ends).
    Sending,
    /// stdin ended: waiting for every message to be acknowledged.
    Settling,
    /// Acknowledged: receiving until this moment.
    Waiting(Instant),
}

pub(super) async fn run(
    args: &ConnectArgs,
    view: &View,
    client: ChannelClient,
    mut events: mpsc::Receiver<ClientEvent>,
) -> anyhow::Result<ExitCode> {
    let mut out = BufWriter::with_capacity(64 * 1024, tokio::io::stdout());
    let (eof_tx, mut eof_rx) = oneshot::channel::<()>();
    if !args.raw {
        tokio::spawn(feed(client.clone(), args.send.clone(), eof_tx));
    }
    let mut drop_signal = DropSignal::new();
    let mut phase = Phase::Sending;
    let mut opened = false;
    let mut received = 0u64;
    loop {
        let deadline = match phase {
            Phase::Waiting(at) => Some(at),
            _ => None,
        };
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { return Ok(ExitCode::SUCCESS) };
                opened |= matches!(ev, ClientEvent::Open | ClientEvent::Resumed { .. });
                view.record(&ev);
                if let Some(line) = view.stderr_line(&ev) {
                    eprintln!("{line}");
                }
                if let Some(line) = view.stdout_line(&ev)
                    && !write_line(&mut out, &line).await?
                {
                    client.stop();
                    return Ok(ExitCode::SUCCESS);
                }
                // `--count` counts what `--event` lets through.
                if data_text(&ev).is_some() && view.wanted(&ev) {
                    received += 1;
                }
                let count_done = args.count.is_some_and(|n| received >= n);
                let send_failed = matches!(ev, ClientEvent::SendFailed { .. });
                if ev.is_terminal() || count_done || send_failed || events.is_empty() {
                    flush(&mut out).await?;
                }
                if ev.is_terminal() {
                    return exit_status(&ev);
                }
                if count_done {
                    close(&client, view).await;
                    return Ok(ExitCode::SUCCESS);
                }
                if let ClientEvent::SendFailed { message_id, reason } = &ev {
                    // Later messages wait behind it at the server, in order:
                    // carrying on would only look like success.
                    client.stop();
                    return Err(anyhow!("message {message_id} not delivered: {reason}"));
                }
            }
            _ = &mut eof_rx, if phase == Phase::Sending => phase = Phase::Settling,
            _ = client.wait_settled(), if phase == Phase::Settling && opened => {
                phase = Phase::Waiting(Instant::now() + args.wait);
            }
            _ = drop_signal.recv() => client.drop_stream(),
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                flush(&mut out).await?;
                close(&client, view).await;
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}

/// Ends the run by itself: tells the server, and records the close.
pub(super) async fn close(client: &ChannelClient, view: &View) {
    client.close().await;
    view.record(&ClientEvent::Closed);
}

/// SIGUSR1: end the stream on purpose, so a script can watch a resume
/// (what `/drop` does in the REPL). Never fires where there is no such
/// signal, or if it cannot be watched.
pub(super) struct DropSignal {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl DropSignal {
    pub(super) fn new() -> Self {
        #[cfg(unix)]
        {
            let kind = tokio::signal::unix::SignalKind::user_defined1();
            let signal = tokio::signal::unix::signal(kind)
                .inspect_err(|e| warn!("cannot watch SIGUSR1: {e}"))
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    pub(super) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

/// Writes one line; `false` when stdout is gone (a closed pipe ends the
/// run quietly, as `head` expects).
pub(super) async fn write_line(out: &mut BufWriter<Stdout>, line: &str) -> anyhow::Result<bool> {
    let r = async {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await
    }
    .await;
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

pub(super) async fn flush(out: &mut BufWriter<Stdout>) -> anyhow::Result<()> {
    match out.flush().await {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

/// Sends `--send` messages, then every stdin line; signals stdin's end.
async fn feed(client: ChannelClient, first: Vec<String>, eof: oneshot::Sender<()>) {
    for m in &first {
        if !send(&client, m).await {
            return;
        }
    }
    let mut stdin = StdinLines::new();
    while let Some((_, line)) = stdin.next(|| client.is_stopped()).await {
        if !send(&client, &line).await {
            return;
        }
    }
    if stdin.ended {
        let _ = eof.send(());
    }
}

/// stdin, line by line: a line over [`MAX_LINE`] is said and skipped.
pub(super) struct StdinLines {
    stdin: BufReader<tokio::io::Stdin>,
    buf: Vec<u8>,
    /// The number of the line last read, from 1.
    n: u64,
    /// stdin ended (or could not be read): no more lines.
    pub ended: bool,
}

impl StdinLines {
    pub(super) fn new() -> Self {
        Self { stdin: BufReader::new(tokio::io::stdin()), buf: Vec::new(), n: 0, ended: false }
    }

    /// The next line and its number; `None` at the end, or when reading
    /// failed because the client has `stopped` (the runtime cancels a
    /// blocked read at exit).
    pub(super) async fn next(&mut self, stopped: impl Fn() -> bool) -> Option<(u64, String)> {
        loop {
            self.n += 1;
            let n = self.n;
            match read_line(&mut self.stdin, &mut self.buf, MAX_LINE).await {
                Ok(Some(Line::Text(line))) => return Some((n, line)),
                Ok(Some(Line::TooLong(len))) => {
                    warn!("stdin line {n}: {len} bytes is over the limit of {MAX_LINE}; not sent");
                }
                Ok(None) => {
                    self.ended = true;
                    return None;
                }
                Err(_) if stopped() => return None,
                Err(e) => {
                    warn!("cannot read stdin: {e}");
                    self.ended = true;
                    return None;
                }
            }
        }
    }
}

/// Queues one message; `false` once the client has stopped.
async fn send(client: &ChannelClient, message: &str) -> bool {
    match client.send(message).await {
        Ok(()) => true,
        Err(ClientError::Stopped) => false,
        Err(e) => {
            warn!("not sent: {e}");
            true
        }
    }
}
