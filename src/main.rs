use std::process::ExitCode;

use clap::Parser;
use ssechan::cli::Cli;

fn main() -> ExitCode {
    // `serve -- COMMAND` re-executes this binary as each process's guard.
    if let Some(code) = ssechan::serve::guard::main_if_guard() {
        return code;
    }
    let cli = Cli::parse();
    ssechan::logging::init(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ssechan: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(ssechan::run(cli));
    // Don't wait for tasks still blocked on stdin.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ssechan: {e:#}");
            ssechan::exit::code_of(&e)
        }
    }
}
