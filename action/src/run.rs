//! One step of the action, from the runner's environment to printed lines, output and summary
//! files and an exit code: sets the step up and dispatches to the command its inputs name
//! ([`crate::start`], [`crate::report`], [`crate::gate`], [`crate::get`]). The API calls go
//! through `buildstate-client`; the rules are the server's.

use std::io::{Read, Write};
use std::path::PathBuf;

use buildstate_client::env::EnvMap;
use buildstate_client::failure::exit;
use buildstate_client::{Client, ClientConfig};

use crate::commands::{Level, Log};
use crate::files::{OutputFile, SummaryFile};
use crate::github::Run;
use crate::inputs::{self, Command};
use crate::step::{Failure, Step};

/// Runs one step of the action in the environment `env` (the runner's: `INPUT_*`, `GITHUB_*`,
/// `RUNNER_DEBUG`), printing to `stdout` and returning the exit code. `stdin` is read only for
/// `message-file: -`; nothing is printed on `stderr` (the runner shows both, and workflow
/// commands are read from stdout).
///
/// On every path: the tokens are masked before anything else is printed, groups are closed,
/// and a failure is one `::error title=buildstate::` annotation with a non-zero code; outputs
/// written before the failure stay valid.
pub async fn run(
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    _stderr: &mut dyn Write,
    env: &EnvMap,
) -> u8 {
    let mut log = Log::new(stdout, env.get("RUNNER_DEBUG").as_deref() == Some("1"));
    for secret in inputs::secrets(env) {
        log.add_mask(&secret);
    }
    let mut step = Step {
        outputs: OutputFile::new(env.get("GITHUB_OUTPUT").map(PathBuf::from)),
        summary: SummaryFile::new(env.get("GITHUB_STEP_SUMMARY").map(PathBuf::from)),
        run: Run::from_env(env),
        env,
        log: &mut log,
    };
    let code = match execute(&mut step, stdin).await {
        Ok(code) => code,
        Err(failure) => {
            step.log.annotate(Level::Error, &failure.message);
            failure.code
        }
    };
    log.finish();
    code
}

/// Runs the command the inputs name.
async fn execute(step: &mut Step<'_, '_>, stdin: &mut dyn Read) -> Result<u8, Failure> {
    let inputs = inputs::parse(step.env)?;
    if !step.outputs.is_set() {
        step.log.annotate(
            Level::Warning,
            "GITHUB_OUTPUT is not set, so this step has no outputs: run the action from a workflow",
        );
    }
    let mut config = ClientConfig::new(inputs.api_url.clone(), Some(inputs.api_token.clone()));
    config.max_attempts = 3;
    let client =
        Client::new(config).map_err(|error| Failure::new(exit::USAGE, error.to_string()))?;
    step.log.debug(&format!(
        "buildstate {} against {}",
        inputs.command.as_str(),
        client.base_url()
    ));
    match inputs.command {
        Command::Start => step.start(&client, &inputs).await,
        Command::Report => step.report(&client, &inputs, stdin).await,
        Command::Gate => step.gate(&client, &inputs).await,
        Command::Get => step.get(&client, &inputs).await,
        Command::Retry => step.retry(&client, &inputs).await,
    }
}
