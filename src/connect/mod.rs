//! `ssechan connect`: REPL on a terminal, pipe client otherwise, plain SSE reader.

mod mcp;
mod output;
mod pipe;
pub mod record;
mod repl;

use std::io::IsTerminal;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::anyhow;
use tracing::warn;

use crate::cli::{ConnectArgs, Format};
use crate::client::{
    ChannelClient, ClientConfig, ClientError, ClientEvent, Mode, RetryPolicy, SendHook, Status,
    client_id, load_ca_certs, parse_headers, refusals_sentence, refused,
};
use crate::exit::UsageError;
use output::View;
use record::{Header, RecordMode, Recorder};

/// Longest stdin line (and so message) in pipe mode.
const MAX_LINE: usize = 16 << 20;

/// Runs `connect`; exit 0 done or closed by the server, 1 failed or gave
/// up. `quiet` (`-q`) silences the status lines of pipe mode.
pub async fn run(args: ConnectArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if args.mcp {
        return mcp::run(&args, quiet).await;
    }
    let mut config = config(&args)?;
    let recorder = match &args.record {
        Some(path) => {
            let mode = if args.raw { RecordMode::Raw } else { RecordMode::Channel };
            let header = Header::new(
                config.url.as_str(),
                config.client_id(),
                mode,
                std::time::SystemTime::now(),
            );
            let rec = Recorder::create(path, &header).map_err(|e| {
                UsageError(format!("cannot write --record {}: {e}", path.display()))
            })?;
            let rec = Arc::new(rec);
            let hook = rec.clone();
            config.on_send = Some(SendHook(Arc::new(move |id, body| {
                if let Err(e) = hook.send(id, body) {
                    warn!("cannot write the record: {e}");
                }
            })));
            Some(rec)
        }
        None => None,
    };
    let terminal = std::io::stdout().is_terminal();
    let interactive = std::io::stdin().is_terminal() && terminal;
    let view = View {
        json: args.format == Format::Json,
        timestamps: args.timestamps,
        show_comments: args.show_comments,
        types: args.events.clone(),
        quiet,
        recorder,
        client_id: config.client_id().map(str::to_owned),
        terminal,
    };
    let (client, events) = ChannelClient::start(config)?;
    let counts = client.clone();
    let result = if interactive {
        repl::run(&args, &view, client, events).await
    } else {
        pipe::run(&args, &view, client, events).await
    };
    // Retries hide a server that refuses healthy traffic: say it at the end.
    if let Some(line) = refusals_line(&counts.status())
        && !quiet
    {
        eprintln!("{line}");
    }
    result
}

/// The exit line when the server refused any POST, retried or not.
fn refusals_line(s: &Status) -> Option<String> {
    (refused(&s.refusals) > 0)
        .then(|| format!("refusals: {}", refusals_sentence(&s.refusals, s.posts)))
}

/// The client settings the flags describe; bad input is a usage error.
fn config(args: &ConnectArgs) -> anyhow::Result<ClientConfig> {
    let usage = |e: ClientError| anyhow::Error::new(UsageError(e.to_string()));
    let mode = if args.raw {
        if args.client_id.is_some() || args.debug_key.is_some() || !args.send.is_empty() {
            return Err(UsageError(
                "--raw reads plain SSE: --client-id, --debug-key and --send do not apply".into(),
            )
            .into());
        }
        Mode::Raw
    } else {
        Mode::Channel {
            client_id: client_id(args.client_id.as_deref(), args.debug_key.as_deref())
                .map_err(usage)?,
        }
    };
    let mut config = ClientConfig::new(&args.url, mode).map_err(usage)?;
    config.headers = parse_headers(&args.headers).map_err(usage)?;
    // --retry-max is a promise that no wait is longer: it caps the first
    // delay too (the default 250ms under `--retry-max 10ms`).
    config.retry = RetryPolicy {
        initial: args.retry_initial.min(args.retry_max),
        max: args.retry_max,
        max_retries: Some(args.max_retries),
        give_up_after: None,
        retry_first: args.retry_first,
    };
    if args.in_flight == 0 {
        return Err(UsageError("--in-flight must be at least 1".into()).into());
    }
    if args.timeout.is_zero() {
        // Every request would time out before it is sent.
        return Err(UsageError("--timeout must be more than 0".into()).into());
    }
    config.in_flight = args.in_flight;
    config.timeout = args.timeout;
    // Unset keeps the mode's default (45s for a channel, off for --raw).
    if let Some(idle) = args.idle_timeout {
        config.idle_timeout = (!idle.is_zero()).then_some(idle);
    }
    if let Some(path) = &args.cacert {
        config.ca_certs = load_ca_certs(path).map_err(usage)?;
    }
    if let Some(data) = &args.data {
        config.body = Some(crate::cli::request_body(data)?);
    }
    config.method = match &args.method {
        Some(m) => crate::cli::http_method(m)?,
        None if config.body.is_some() => http::Method::POST,
        None => http::Method::GET,
    };
    config.last_event_id = args.last_event_id.clone();
    config.location_trusted = args.location_trusted;
    config.location = args.location;
    if args.insecure {
        warn!(
            "--insecure: the server's certificate is not checked; anyone in between can read and change the traffic"
        );
        config.insecure = true;
    }
    Ok(config)
}

/// The exit status a terminal event stands for; `Err` carries the one-line
/// message for stderr (exit 1).
fn exit_status(ev: &ClientEvent) -> anyhow::Result<ExitCode> {
    match ev {
        ClientEvent::GaveUp { .. } => Err(anyhow!("{}", output::give_up_text(ev))),
        ClientEvent::Failed { reason } => Err(anyhow!("connection failed: {reason}")),
        _ => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn config_of(args: &[&str]) -> ClientConfig {
        let all = ["ssechan", "connect"].iter().chain(args).chain(&["http://127.0.0.1:1/sse"]);
        let Command::Connect(args) = Cli::try_parse_from(all).expect("valid flags").command else {
            panic!("not connect");
        };
        config(&args).expect("valid config")
    }

    #[test]
    fn idle_timeout_default_flag_and_zero() {
        assert_eq!(config_of(&[]).idle_timeout, None);
        assert_eq!(config_of(&["--raw"]).idle_timeout, None);
        let ms = Some(Duration::from_millis(300));
        assert_eq!(config_of(&["--idle-timeout", "300ms"]).idle_timeout, ms);
        assert_eq!(config_of(&["--raw", "--idle-timeout", "300ms"]).idle_timeout, ms);
        assert_eq!(config_of(&["--idle-timeout", "0"]).idle_timeout, None);
        assert_eq!(config_of(&["--idle-timeout", "0s"]).idle_timeout, None);
    }
}
