//! One process per client, websocketd-style: the client's messages go to the
//! process's stdin one per line; each line it prints goes to the client.
//! When the process exits the client gets a control close; when the client
//! is gone the process sees EOF on stdin and is killed if it lingers.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::Command;
use tracing::{info, warn};

use crate::lines::{Line, read_line};
use crate::server::{Connection, ConnectionEvent};

/// How long a process may run on after its client is gone.
const EXIT_GRACE: Duration = Duration::from_secs(2);

pub(super) async fn run(mut conn: Connection, command: Vec<String>, max_line: usize) {
    let Some((program, args)) = command.split_first() else { return };
    let spawned = Command::new(program)
        .args(args)
        .env("SSECHAN_CLIENT_ID", conn.id())
        .env("SSECHAN_REMOTE_ADDR", conn.remote_addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            warn!(client = %conn.id(), "cannot run {program:?}: {e}");
            conn.close();
            return;
        }
    };
    let mut stdin = child.stdin.take();
    if let Some(stdout) = child.stdout.take() {
        let handle = conn.handle();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(Some(line)) = read_line(&mut r, &mut buf, max_line).await {
                match line {
                    Line::Text(t) => {
                        if handle.send(&t).is_err() {
                            break;
                        }
                    }
                    Line::TooLong(n) => {
                        warn!(client = %handle.id(), "process printed a {n}-byte line, over the message limit; not sent")
                    }
                }
            }
            // The process closed its stdout: the conversation is over.
            handle.close();
        });
    }
    while let Some(ev) = conn.recv().await {
        match ev {
            ConnectionEvent::Message(m) => {
                let Some(w) = stdin.as_mut() else { continue };
                let mut line = m.into_bytes();
                line.push(b'\n');
                if w.write_all(&line).await.is_err() || w.flush().await.is_err() {
                    warn!(client = %conn.id(), "process stdin closed; message not delivered");
                    stdin = None;
                }
            }
            ConnectionEvent::Closed(_) => break,
            _ => {}
        }
    }
    drop(stdin);
    match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        Ok(Ok(status)) => info!(client = %conn.id(), "process exited: {status}"),
        Ok(Err(e)) => warn!(client = %conn.id(), "waiting for process: {e}"),
        Err(_) => {
            warn!(client = %conn.id(), "process still running {EXIT_GRACE:?} after its client left; killing it");
            let _ = child.kill().await;
        }
    }
}
