//! `ssechan connect`: REPL on a terminal, pipe client otherwise, plain SSE reader.

use std::process::ExitCode;

use crate::cli::ConnectArgs;

/// Runs `connect`; exit 0 done or closed by the server, 1 failed or gave up.
pub async fn run(_args: ConnectArgs) -> anyhow::Result<ExitCode> {
    Err(crate::UsageError("connect is not built yet".into()).into())
}
