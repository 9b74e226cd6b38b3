//! Logs go through `tracing` to stderr; stdout is for data only.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `-v`/`-q` pick the default level; `RUST_LOG` overrides; colour only on a
/// terminal and never with `NO_COLOR` set.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("ssechan={level},warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_color(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Whether to colour output on `stream`: a terminal, and `NO_COLOR` unset.
pub fn use_color(stream: &impl IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
