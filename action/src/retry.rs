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

use buildstate_client::failure::exit;
use buildstate_client::retry_wait::{
    needs_a_person, next_attempt_words, wait_for_retry_due, RetryPolicy, RetryWait,
};
use buildstate_client::Client;
use buildstate_domain::wire::{Build, BuildQuery};
use buildstate_domain::{BuildKey, BuildStatus};

use crate::commands::{Level, Log};
use crate::github::Run;
use crate::github_api::{self, CallError};
use crate::inputs::{Inputs, Summary};
use crate::step::{Failure, Step};

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

impl Step<'_, '_> {
    /// Runs `command: retry`.
    pub(crate) async fn retry(&mut self, client: &Client, inputs: &Inputs) -> Result<u8, Failure> {
        let run_id = failed_run_id(inputs, self.env)?;
        let keys = keys(inputs, &self.run, run_id)?;
        self.log.group(&format!(
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
                Some(build) => wait_for(client, build, policy, self.log).await?,
            };
            outcomes.push(outcome);
        }
        let due = outcomes
            .iter()
            .any(|outcome| matches!(outcome, Outcome::Due(_)));
        let rerun = if due {
            self.rerun_failed_jobs(inputs, run_id).await
        } else {
            Ok(false)
        };
        self.log.end_group();
        let rerun_done = *rerun.as_ref().unwrap_or(&false);
        self.set("rerun", if rerun_done { "true" } else { "false" })?;
        if inputs.summary != Summary::None {
            self.write_summary(&summary(&outcomes, run_id, rerun_done, inputs.max_wait))?;
        }
        for outcome in &outcomes {
            if let Outcome::Blocked(build) = outcome {
                self.log.annotate(
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
            return Err(Failure::new(
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

    /// Asks GitHub to re-run the failed jobs of run `run_id`: `Ok(true)` when it accepted.
    /// A 403 is the missing `actions: write` permission, said so in the error.
    async fn rerun_failed_jobs(&mut self, inputs: &Inputs, run_id: u64) -> Result<bool, Failure> {
        let Some(repository) = self.run.repository.clone() else {
            return Err(Failure::new(
                exit::USAGE,
                "GITHUB_REPOSITORY is not set: run `command: retry` from a workflow",
            ));
        };
        let Some((owner, name)) = repository.split_once('/') else {
            return Err(Failure::new(
                exit::USAGE,
                format!("GITHUB_REPOSITORY `{repository}` is not `owner/name`"),
            ));
        };
        let token = inputs.github_token.clone().unwrap_or_default();
        let api_url = self
            .run
            .api_url
            .clone()
            .unwrap_or_else(|| "https://api.github.com".to_owned());
        let github = github_api::client(&api_url, &token)
            .map_err(|problem| Failure::new(exit::USAGE, problem))?;
        match github
            .workflows(owner, name)
            .rerun_failed_jobs(run_id.into())
            .await
            .map_err(|error| github_api::call_error(error, &api_url))
        {
            Ok(()) => {
                self.log.line(&format!(
                    "asked GitHub to re-run the failed jobs of run {run_id}"
                ));
                Ok(true)
            }
            Err(CallError::Refused { status: 403, message }) => Err(Failure::new(
                exit::AUTH,
                format!(
                    "GitHub refused to re-run the failed jobs of run {run_id} (403: {message}): give the workflow `permissions: actions: write` (the `github-token` input needs it)"
                ),
            )),
            Err(CallError::Refused { status, message }) => Err(Failure::new(
                exit::FAILURE,
                format!(
                    "GitHub answered {status} to re-running the failed jobs of run {run_id}: {message}"
                ),
            )),
            Err(CallError::Failed(message)) => Err(Failure::new(exit::FAILURE, message)),
        }
    }
}

/// The failed run: `run-id`, else the `workflow_run` event's run.
fn failed_run_id(inputs: &Inputs, env: &buildstate_client::env::EnvMap) -> Result<u64, Failure> {
    if let Some(id) = inputs.run_id {
        return Ok(id);
    }
    let missing = || {
        Failure::new(
            exit::USAGE,
            "input `run-id`: required outside a `workflow_run` event, e.g. `${{ github.event.workflow_run.id }}`",
        )
    };
    let path = env.get("GITHUB_EVENT_PATH").ok_or_else(missing)?;
    let text = std::fs::read_to_string(&path).map_err(|error| {
        Failure::new(
            exit::FAILURE,
            format!("cannot read the event at GITHUB_EVENT_PATH `{path}`: {error}"),
        )
    })?;
    let event: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
        Failure::new(
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
fn keys(inputs: &Inputs, run: &Run, run_id: u64) -> Result<Vec<BuildKey>, Failure> {
    if !inputs.keys.is_empty() {
        return Ok(inputs.keys.clone());
    }
    let (Some(platform), Some(image_type)) = (&inputs.platform, &inputs.image_type) else {
        return Err(Failure::new(exit::USAGE, "input `key`: required"));
    };
    let failed_run = Run {
        run_id: Some(run_id.to_string()),
        ..run.clone()
    };
    failed_run
        .default_key(platform, image_type)
        .map(|key| vec![key])
        .ok_or_else(|| {
            Failure::new(
                exit::USAGE,
                "input `key`: required outside a workflow run (GITHUB_REPOSITORY makes the default key)",
            )
        })
}

async fn newest_build(client: &Client, key: &BuildKey) -> Result<Option<Build>, Failure> {
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
            Failure::api(
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
) -> Result<Outcome, Failure> {
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
            Failure::api(&format!("cannot follow the retry of build `{id}`"), &error)
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
