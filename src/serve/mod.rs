//! `ssechan serve`: a channel endpoint wired to stdin/stdout, an echo, or a
//! process per client.

mod exec;
mod stdio;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, mpsc};
use tracing::info;

use crate::cli::{Format, ServeArgs};
use crate::server::{Limits, Server, ServerConfig};

/// How long to wait for the last output lines after shutdown began.
const FLUSH_GRACE: Duration = Duration::from_millis(400);

impl ServeArgs {
    /// The server settings these flags describe.
    pub fn config(&self) -> ServerConfig {
        ServerConfig {
            path: self.path.clone(),
            keep_alive: self.keep_alive,
            heartbeat: (!self.heartbeat.is_zero()).then_some(self.heartbeat),
            retry: self.retry,
            allowed_origins: (!self.allow_origins.is_empty()).then(|| self.allow_origins.clone()),
            limits: Limits {
                max_message_bytes: self.max_message_size,
                reorder_window: self.reorder_window,
                reorder_bytes: self.reorder_bytes,
                outgoing_messages: self.max_queue,
                outgoing_bytes: self.max_queue_bytes,
                replay_events: self.replay,
                replay_bytes: self.replay_bytes,
                max_clients: self.max_clients,
                max_client_id_len: self.max_client_id,
                incoming_messages: self.max_incoming,
            },
            ..ServerConfig::default()
        }
    }
}

/// Runs `serve` until SIGINT/SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !args.path.starts_with('/') {
        return Err(
            crate::UsageError(format!("--path must start with '/', got {:?}", args.path)).into()
        );
    }
    let signalled = shutdown_signal().context("cannot listen for signals")?;
    // A stream and a POST connection per client, and some to spare.
    crate::sys::raise_open_file_limit(args.max_clients.saturating_mul(2).saturating_add(64) as u64);
    let server = Server::bind(args.listen, args.config()).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => " (use --listen 127.0.0.1:0 for a free port)",
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {}: {e}{hint}", args.listen)
    })?;
    let url = server.url();
    eprintln!("ssechan: listening on {url}");
    let (out_tx, out_rx) = mpsc::channel::<String>(1024);
    if args.format == Format::Json && !args.echo {
        let _ =
            out_tx.send(serde_json::json!({"event": "listening", "url": url}).to_string()).await;
    }
    let mut writer = tokio::spawn(stdio::write_stdout(out_rx));
    let mode = if args.echo {
        tokio::spawn(stdio::ignore_stdin());
        Mode::Echo
    } else if !args.command.is_empty() {
        Mode::Exec(args.command.clone())
    } else {
        let handle = server.handle();
        let max = args.max_message_size;
        tokio::spawn(stdio::read_stdin(handle, args.format, max));
        Mode::Stdio(args.format)
    };
    let stop = Arc::new(Notify::new());
    let serving = tokio::spawn(serve_connections(
        server,
        mode,
        out_tx.clone(),
        args.max_message_size,
        stop.clone(),
    ));
    drop(out_tx);
    let mut result = Ok(());
    tokio::select! {
        _ = signalled => info!("shutting down"),
        r = &mut writer => {
            result = match r {
                Ok(Err(e)) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
                _ => Ok(()),
            };
        }
    }
    // serve_connections owns the server: tell it to stop, then wait for it.
    stop.notify_one();
    let _ = serving.await;
    let _ = tokio::time::timeout(FLUSH_GRACE, writer).await;
    result
}

#[derive(Clone)]
enum Mode {
    Echo,
    Stdio(Format),
    Exec(Vec<String>),
}

async fn serve_connections(
    mut server: Server,
    mode: Mode,
    out: mpsc::Sender<String>,
    max_line: usize,
    stop: Arc<Notify>,
) {
    loop {
        tokio::select! {
            conn = server.accept() => {
                let Some(conn) = conn else { break };
                match &mode {
                    Mode::Echo => { tokio::spawn(echo(conn)); }
                    Mode::Stdio(format) => { tokio::spawn(stdio::forward(conn, *format, out.clone())); }
                    Mode::Exec(cmd) => { tokio::spawn(exec::run(conn, cmd.clone(), max_line)); }
                }
            }
            _ = stop.notified() => break,
        }
    }
    let handle = server.handle();
    handle.begin_shutdown();
    // Keep accepting so that the close events of connections opened during
    // shutdown still reach stdout.
    let drain = async {
        while let Some(conn) = server.accept().await {
            if let Mode::Stdio(format) = &mode {
                tokio::spawn(stdio::forward(conn, *format, out.clone()));
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(100), drain).await;
    server.shutdown().await;
}

/// Sends every message back to its sender until the connection closes.
pub async fn echo(mut conn: crate::server::Connection) {
    while let Some(m) = conn.recv_message().await {
        if conn.send(&m).is_err() {
            break;
        }
    }
}

/// SIGINT or SIGTERM. Registered before the listening line is printed, so
/// a signal sent as soon as a script sees it is never the default (fatal)
/// action.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};
    use crate::server::Limits;

    fn config(args: &[&str]) -> crate::server::ServerConfig {
        let cli = Cli::try_parse_from([&["ssechan", "serve"], args].concat()).unwrap();
        let Command::Serve(serve) = cli.command else { panic!("not serve") };
        serve.config()
    }

    #[test]
    fn defaults_are_the_protocols() {
        let c = config(&[]);
        assert_eq!(c.limits, Limits::default());
        assert_eq!((c.path.as_str(), c.keep_alive), ("/sse", None));
        assert_eq!(c.heartbeat, Some(std::time::Duration::from_secs(15)));
        assert_eq!(c.allowed_origins, None);
    }

    #[test]
    fn every_limit_flag_reaches_the_server() {
        let c = config(&[
            "--path=/chan",
            "--keep-alive=30s",
            "--heartbeat=0",
            "--retry=250ms",
            "--allow-origin=http://a",
            "--allow-origin=http://b",
            "--max-message-size=2K",
            "--reorder-window=7",
            "--reorder-bytes=3K",
            "--max-queue=11",
            "--max-queue-bytes=4K",
            "--replay=13",
            "--replay-bytes=5K",
            "--max-clients=17",
            "--max-client-id=19",
            "--max-incoming=23",
        ]);
        assert_eq!(c.path, "/chan");
        assert_eq!(c.keep_alive, Some(std::time::Duration::from_secs(30)));
        assert_eq!(c.heartbeat, None);
        assert_eq!(c.retry, std::time::Duration::from_millis(250));
        assert_eq!(c.allowed_origins, Some(vec!["http://a".into(), "http://b".into()]));
        assert_eq!(
            c.limits,
            Limits {
                max_message_bytes: 2048,
                reorder_window: 7,
                reorder_bytes: 3072,
                outgoing_messages: 11,
                outgoing_bytes: 4096,
                replay_events: 13,
                replay_bytes: 5120,
                max_clients: 17,
                max_client_id_len: 19,
                incoming_messages: 23,
            }
        );
    }
}
