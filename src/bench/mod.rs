//! `ssechan bench`: load generation, verification, statistics and report.

use std::process::ExitCode;

use crate::cli::BenchArgs;

/// Runs `bench`; exit 0 all checks passed, 1 a check failed, 2 usage error
/// or unreachable target.
pub async fn run(_args: BenchArgs) -> anyhow::Result<ExitCode> {
    eprintln!("ssechan: bench is not built yet; see the README");
    Ok(ExitCode::from(2))
}
