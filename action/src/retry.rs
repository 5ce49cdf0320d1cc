//! `command: retry`: retries that happen by themselves in GitHub Actions, which has no job
//! retry of its own. A workflow triggered by `workflow_run` (`types: [completed]`) runs it
//! after the image build's run failed: for each build of that run it waits until the server
//! makes the failed stage's retry due (the `retry_due` history entry, recorded once the backoff
//! has elapsed), then asks GitHub once to re-run the run's failed jobs, which resume the build
//! at the failed stage. A blocked build is never re-run: the summary says it needs a person.
//!
//! The builds of a run are found by key: the `key` lines, or the key `start` gives by default
//! (`REPOSITORY/RUN_ID/PLATFORM/IMAGE_TYPE`) with the failed run's id.

use std::time::Duration;

use buildstate_client::env::EnvMap;
use buildstate_client::failure::{self, exit};
use buildstate_client::retry_wait::{
    needs_a_person, next_attempt_words, wait_for_retry_due, RetryPolicy, RetryWait,
};
use buildstate_client::{Client, ClientError};
use buildstate_domain::wire::{Build, BuildQuery};
use buildstate_domain::{BuildKey, BuildStatus};

use crate::commands::{Level, Log};
use crate::files::{OutputFile, SummaryFile};
use crate::github::Run;
use crate::github_api::{self, CallError};
use crate::inputs::{Inputs, Summary};

/// Why the step failed: the exit code and one sentence for the `::error` annotation.
#[derive(Debug)]
pub struct RetryError {
    pub code: u8,
    pub message: String,
}

impl RetryError {
    fn new(code: u8, message: impl Into<String>) -> Self {
        RetryError {
            code,
            message: message.into(),
        }
    }

    fn api(attempted: &str, error: &ClientError) -> Self {
        RetryError::new(
            failure::exit_code(error),
            format!(
                "{attempted}: {}",
                failure::describe(error, &crate::run::HINTS)
            ),
        )
    }
}

/// Where the step writes: its log, outputs and job summary, and the run it is part of.
pub struct Step<'s, 'o> {
    pub log: &'s mut Log<'o>,
    pub outputs: &'s OutputFile,
    pub summary: &'s SummaryFile,
    pub run: &'s Run,
    pub env: &'s EnvMap,
}

impl std::fmt::Debug for Step<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("log", &self.log)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// What became of one build of the failed run.
enum Outcome {
    /// Its retry is due: re-run the failed jobs.
    Due(Build),
    /// Blocked: a person must act.
    Blocked(Build),
    /// Not failed: nothing to retry (completed, running, cancelled).
    Nothing(Build),
    /// The retry is due later than `max-wait`.
    TooLate(Build),
    /// No build has the key.
    Missing(BuildKey),
}

/// Runs `command: retry`.
pub async fn retry(
    client: &Client,
    inputs: &Inputs,
    step: &mut Step<'_, '_>,
) -> Result<u8, RetryError> {
    let run_id = failed_run_id(inputs, step.env)?;
    let keys = keys(inputs, step.run, run_id)?;
    step.log.group(&format!(
        "buildstate: retry the builds of workflow run {run_id}"
    ));
    let policy = RetryPolicy {
        max_wait: inputs.max_wait,
        ..RetryPolicy::default()
    };
    let mut outcomes = Vec::new();
    for key in keys {
        let outcome = match newest_build(client, &key).await? {
            None => Outcome::Missing(key),
            Some(build) => wait_for(client, build, policy, step.log).await?,
        };
        outcomes.push(outcome);
    }
    let due = outcomes
        .iter()
        .any(|outcome| matches!(outcome, Outcome::Due(_)));
    let rerun = if due {
        rerun_failed_jobs(inputs, step, run_id).await
    } else {
        Ok(false)
    };
    step.log.end_group();
    let rerun_done = *rerun.as_ref().unwrap_or(&false);
    set(step, "rerun", if rerun_done { "true" } else { "false" })?;
    if inputs.summary != Summary::None {
        let markdown = summary(&outcomes, run_id, rerun_done, inputs.max_wait);
        let markdown = step.log.redact(&markdown);
        step.summary
            .append(&markdown)
            .map_err(|problem| RetryError::new(exit::FAILURE, problem))?;
    }
    for outcome in &outcomes {
        if let Outcome::Blocked(build) = outcome {
            step.log.annotate(
                Level::Warning,
                &format!(
                    "build `{}` is blocked at stage {} after {} failures and is not re-run: it {}",
                    build.id,
                    build.state,
                    build.failures,
                    needs_a_person(&build.id)
                ),
            );
        }
    }
    rerun?;
    let late: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::TooLate(build) => Some(format!("`{}`", build.id)),
            _ => None,
        })
        .collect();
    if !late.is_empty() && !rerun_done {
        return Err(RetryError::new(
            exit::GATE_WAIT,
            format!(
                "the retry of build(s) {} is not due within `max-wait` ({}s): the failed jobs were not re-run; re-run them by hand once it is due, or raise `max-wait`",
                late.join(", "),
                inputs.max_wait.as_secs()
            ),
        ));
    }
    Ok(exit::SUCCESS)
}

/// The failed run: `run-id`, else the `workflow_run` event's run.
fn failed_run_id(inputs: &Inputs, env: &EnvMap) -> Result<u64, RetryError> {
    if let Some(id) = inputs.run_id {
        return Ok(id);
    }
    let missing = || {
        RetryError::new(
            exit::USAGE,
            "input `run-id`: required outside a `workflow_run` event, e.g. `${{ github.event.workflow_run.id }}`",
        )
    };
    let path = env.get("GITHUB_EVENT_PATH").ok_or_else(missing)?;
    let text = std::fs::read_to_string(&path).map_err(|error| {
        RetryError::new(
            exit::FAILURE,
            format!("cannot read the event at GITHUB_EVENT_PATH `{path}`: {error}"),
        )
    })?;
    let event: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
        RetryError::new(
            exit::FAILURE,
            format!("the event at GITHUB_EVENT_PATH `{path}` is not JSON: {error}"),
        )
    })?;
    event
        .pointer("/workflow_run/id")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(missing)
}

/// The keys of the failed run's builds: the `key` lines, or the default key with that run.
fn keys(inputs: &Inputs, run: &Run, run_id: u64) -> Result<Vec<BuildKey>, RetryError> {
    if !inputs.keys.is_empty() {
        return Ok(inputs.keys.clone());
    }
    let (Some(platform), Some(image_type)) = (&inputs.platform, &inputs.image_type) else {
        return Err(RetryError::new(exit::USAGE, "input `key`: required"));
    };
    let failed_run = Run {
        run_id: Some(run_id.to_string()),
        ..run.clone()
    };
    failed_run
        .default_key(platform, image_type)
        .map(|key| vec![key])
        .ok_or_else(|| {
            RetryError::new(
                exit::USAGE,
                "input `key`: required outside a workflow run (GITHUB_REPOSITORY makes the default key)",
            )
        })
}

async fn newest_build(client: &Client, key: &BuildKey) -> Result<Option<Build>, RetryError> {
    let query = BuildQuery {
        key: Some(key.to_string()),
        limit: Some(1),
        ..BuildQuery::default()
    };
    client
        .list_builds(&query)
        .await
        .map(|page| page.builds.into_iter().next())
        .map_err(|error| {
            RetryError::api(
                &format!("cannot look up the build with key `{key}`"),
                &error,
            )
        })
}

/// Waits, within the policy, for the failed build's retry to be due.
async fn wait_for(
    client: &Client,
    build: Build,
    policy: RetryPolicy,
    log: &mut Log<'_>,
) -> Result<Outcome, RetryError> {
    match build.status {
        BuildStatus::Failed => {}
        BuildStatus::Blocked => return Ok(Outcome::Blocked(build)),
        _ => {
            log.line(&format!(
                "build `{}` is {} at stage {}: nothing to retry",
                build.id, build.status, build.state
            ));
            return Ok(Outcome::Nothing(build));
        }
    }
    let id = build.id.clone();
    let mut on_wait = |build: &Build, wait: Duration| {
        log.line(&format!(
            "build `{id}`: stage {} failed; {} is due in {}s: waiting",
            build.state,
            next_attempt_words(build),
            wait.as_secs()
        ));
    };
    let waited = wait_for_retry_due(client, &id, policy, &mut on_wait)
        .await
        .map_err(|error| {
            RetryError::api(&format!("cannot follow the retry of build `{id}`"), &error)
        })?;
    Ok(match waited {
        RetryWait::Due(build) => {
            log.line(&format!(
                "build `{id}`: the retry of stage {} is due ({})",
                build.state,
                next_attempt_words(&build)
            ));
            Outcome::Due(build)
        }
        RetryWait::Blocked(build) => Outcome::Blocked(build),
        RetryWait::NotFailed(build) => {
            log.line(&format!(
                "build `{id}` is {} at stage {} now: nothing to retry",
                build.status, build.state
            ));
            Outcome::Nothing(build)
        }
        RetryWait::TooLate { build, .. } => Outcome::TooLate(build),
    })
}

/// Asks GitHub to re-run the failed jobs of run `run_id`: `Ok(true)` when it accepted.
/// A 403 is the missing `actions: write` permission, said so in the error.
async fn rerun_failed_jobs(
    inputs: &Inputs,
    step: &mut Step<'_, '_>,
    run_id: u64,
) -> Result<bool, RetryError> {
    let Some(repository) = step.run.repository.clone() else {
        return Err(RetryError::new(
            exit::USAGE,
            "GITHUB_REPOSITORY is not set: run `command: retry` from a workflow",
        ));
    };
    let Some((owner, name)) = repository.split_once('/') else {
        return Err(RetryError::new(
            exit::USAGE,
            format!("GITHUB_REPOSITORY `{repository}` is not `owner/name`"),
        ));
    };
    let token = inputs.github_token.clone().unwrap_or_default();
    let api_url = step
        .run
        .api_url
        .clone()
        .unwrap_or_else(|| "https://api.github.com".to_owned());
    let github = github_api::client(&api_url, &token)
        .map_err(|problem| RetryError::new(exit::USAGE, problem))?;
    match github
        .workflows(owner, name)
        .rerun_failed_jobs(run_id.into())
        .await
        .map_err(|error| github_api::call_error(error, &api_url))
    {
        Ok(()) => {
            step.log.line(&format!(
                "asked GitHub to re-run the failed jobs of run {run_id}"
            ));
            Ok(true)
        }
        Err(CallError::Refused { status: 403, message }) => Err(RetryError::new(
            exit::AUTH,
            format!(
                "GitHub refused to re-run the failed jobs of run {run_id} (403: {message}): give the workflow `permissions: actions: write` (the `github-token` input needs it)"
            ),
        )),
        Err(CallError::Refused { status, message }) => Err(RetryError::new(
            exit::FAILURE,
            format!(
                "GitHub answered {status} to re-running the failed jobs of run {run_id}: {message}"
            ),
        )),
        Err(CallError::Failed(message)) => Err(RetryError::new(exit::FAILURE, message)),
    }
}

fn set(step: &mut Step<'_, '_>, name: &str, value: &str) -> Result<(), RetryError> {
    step.log.debug(&format!("output {name}={value}"));
    step.outputs
        .set(name, value)
        .map_err(|problem| RetryError::new(exit::FAILURE, problem))
}

/// The job summary: one line per build of the run.
fn summary(outcomes: &[Outcome], run_id: u64, rerun: bool, max_wait: Duration) -> String {
    let mut markdown = format!("### buildstate: retries of run {run_id}\n\n");
    for outcome in outcomes {
        let line = match outcome {
            Outcome::Due(build) => format!(
                "🔁 build `{}`: stage {} ({}), {} due{}",
                build.id,
                build.state,
                build.state_name,
                next_attempt_words(build),
                if rerun {
                    " — failed jobs re-run".to_owned()
                } else {
                    " — the re-run was refused (see the error)".to_owned()
                }
            ),
            Outcome::Blocked(build) => format!(
                "🛑 build `{}`: stage {} ({}) failed {} times, blocked — {}",
                build.id,
                build.state,
                build.state_name,
                build.failures,
                needs_a_person(&build.id)
            ),
            Outcome::Nothing(build) => format!(
                "✅ build `{}`: {} at stage {} ({}), nothing to retry",
                build.id, build.status, build.state, build.state_name
            ),
            Outcome::TooLate(build) => format!(
                "⏳ build `{}`: stage {} ({}) failed; {} is not due within `max-wait` ({}s){}",
                build.id,
                build.state,
                build.state_name,
                next_attempt_words(build),
                max_wait.as_secs(),
                build
                    .next_attempt_at
                    .map(|at| format!(": due at {}", at.to_rfc3339()))
                    .unwrap_or_default()
            ),
            Outcome::Missing(key) => format!("❔ no build has the key `{key}`"),
        };
        markdown.push_str("- ");
        markdown.push_str(&line);
        markdown.push('\n');
    }
    markdown
}
