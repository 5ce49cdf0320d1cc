//! `bldst-bench`: measures how many transition reports per second a release `bldst server`
//! accepts, and their latency, at several client counts on SQLite and PostgreSQL; then runs the
//! same database work through `pgbench` to show the database's own ceiling beside it.
//!
//! It builds nothing: `bench/run.sh` builds the release binary and passes it in. See
//! `BENCHMARKS.md` at the repository root for what is measured and the results.

mod load;
mod options;
mod pgbench;
mod postgres;
mod procfs;
mod rate_limits;
mod report;
mod run;
mod server;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let options = options::Options::parse();
    // One thread drives every client: the load generator shares two cores with the server and
    // PostgreSQL, so it must cost as little CPU as it can (pgbench also runs one thread).
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
    match runtime.block_on(run::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
