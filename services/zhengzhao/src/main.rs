//! `zhengzhao`: the all-in-one server (every service in one process, one
//! port, embedded SQLite by default) and the operator's command-line client.
//! Exit codes are listed in `cli/mod.rs` and the README.

#![forbid(unsafe_code)]

/// mimalloc: the read path allocates per call, and the system allocator
/// cost a measurable share of the CPU under load (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing more to say.
        Err(e) if cli::stdout_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            cli::output::note!("error: {}", cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
