//! How every benchmark binary runs: one thread drives every client, because the load
//! generator shares the machine's cores with the servers and the database and must cost as
//! little CPU as it can (pgbench also runs one thread); an error is printed with its causes.

use std::future::Future;
use std::process::ExitCode;

/// Runs `main` on a current-thread runtime and turns its result into the exit code.
pub fn run(main: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
