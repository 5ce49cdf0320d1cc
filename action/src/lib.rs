//! buildstate's GitHub Action: one step of a workflow starts or resumes a build, reports a
//! stage, gates a step, reads the build or re-runs a failed run once its retry is due, with
//! step outputs, a job summary, error annotations and, optionally, a commit status.
//!
//! It is a Docker container action (`action.yml` at the repository root) whose image runs the
//! `bldst` binary under the name `bldst-action` (see `src/main.rs`). The protocol is the
//! runner's: inputs in `INPUT_*` variables, workflow commands on stdout, outputs in the
//! `$GITHUB_OUTPUT` file, Markdown in `$GITHUB_STEP_SUMMARY`. Everything that talks to the
//! buildstate server is `buildstate-client`'s; the rules are the server's.
//!
//! - [`run`]: one step, with its I/O and environment passed in; it dispatches to one module
//!   per command (`start`, `report`, `gate`, `get`, `retry`: after a failed run, wait for its
//!   builds' retries, then re-run its failed jobs), which share `step`'s helpers.
//! - [`inputs`]: `INPUT_*` parsed and checked before any network call.
//! - [`commands`]: workflow commands, escaping, masks, balanced groups.
//! - [`files`]: `$GITHUB_OUTPUT` (heredocs) and `$GITHUB_STEP_SUMMARY`.
//! - [`summary`]: the build's ladder as Markdown.
//! - [`github`]: the run's identity: report source, idempotency key, default build key.
//! - [`github_api`]: GitHub's REST API through octocrab, for the commit status and re-runs.
//! - [`commit_status`]: the build as a commit status, through octocrab.

pub mod commands;
pub mod commit_status;
pub mod files;
mod gate;
mod get;
pub mod github;
pub mod github_api;
pub mod inputs;
mod report;
mod retry;
mod run;
mod start;
mod step;
pub mod summary;

pub use run::run;

/// The name the image's entrypoint starts the binary under (`/usr/local/bin/bldst-action`).
pub const PROGRAM_NAME: &str = "bldst-action";

/// Runs one step in this process's environment and standard streams: what `bldst-action` does.
pub fn main() -> std::process::ExitCode {
    let env = buildstate_client::env::EnvMap::from_process();
    let mut stdout = std::io::stdout().lock();
    // A current-thread runtime: a gate step is on every stage of every run, so start fast.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            use std::io::Write as _;
            let line = commands::annotation(
                commands::Level::Error,
                commands::TITLE,
                &format!("cannot start the async runtime: {error}"),
            );
            let _ = writeln!(stdout, "{line}");
            return std::process::ExitCode::from(buildstate_client::failure::exit::FAILURE);
        }
    };
    let code = runtime.block_on(run(
        &mut std::io::stdin().lock(),
        &mut stdout,
        &mut std::io::stderr().lock(),
        &env,
    ));
    std::process::ExitCode::from(code)
}
