//! `bldst-bench`: measures how many transition reports per second a release `bldst server`
//! accepts, and their latency, at several client counts on SQLite and PostgreSQL; then runs the
//! same database work through `pgbench` to show the database's own ceiling beside it.
//!
//! It builds nothing: `bench/run.sh` builds the release binary and passes it in. See
//! `BENCHMARKS.md` at the repository root for what is measured and the results.

mod load;
mod options;
mod pgbench;
mod phase;
mod postgres;
mod procfs;
mod rate_limits;
mod report;
mod run;
mod server;
mod single_thread;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    single_thread::run(run::run(options::Options::parse()))
}
