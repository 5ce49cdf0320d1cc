//! The `bldst` command line: argument parsing, logging set-up and the exit codes.

#[cfg(feature = "server")]
mod server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, documented in the README and `bldst --help`.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// Something failed that has no code of its own (including a server 5xx).
    pub const FAILURE: u8 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: u8 = 2;
}

/// Records how far each image build got, so a re-run resumes at the failed step.
#[derive(Debug, Parser)]
#[command(name = "bldst", version, propagate_version = true)]
pub struct Cli {
    /// Log each request (never the token) on stderr.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the REST server (SQLite by default, PostgreSQL when DATABASE_URL says so).
    #[cfg(feature = "server")]
    Server(server::ServerArgs),
}

/// Parses the process's arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Runs one parsed command; the `u8` is the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        #[cfg(feature = "server")]
        Command::Server(args) => server::run(args).await,
    }
}

/// `--verbose` or `BUILDSTATE_DEBUG=1` turn on request logging; `RUST_LOG` overrides both.
fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let debug = verbose
        || std::env::var("BUILDSTATE_DEBUG").is_ok_and(|value| !value.is_empty() && value != "0");
    let default = if debug {
        "info,bldst=debug,buildstate=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
