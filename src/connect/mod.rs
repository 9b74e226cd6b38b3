//! `ssechan connect`: REPL on a terminal, pipe client otherwise, plain SSE reader.

mod output;
mod pipe;
pub mod record;
mod repl;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::anyhow;
use tracing::warn;

use crate::UsageError;
use crate::cli::ConnectArgs;
use crate::client::{
    ChannelClient, ClientConfig, ClientError, ClientEvent, Mode, RetryPolicy, client_id,
    load_ca_certs, parse_headers,
};

/// Longest stdin line (and so message) in pipe mode.
const MAX_LINE: usize = 16 << 20;

/// Runs `connect`; exit 0 done or closed by the server, 1 failed or gave up.
pub async fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let config = config(&args)?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (client, events) = ChannelClient::start(config)?;
    if interactive {
        repl::run(&args, client, events).await
    } else {
        pipe::run(&args, client, events).await
    }
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
