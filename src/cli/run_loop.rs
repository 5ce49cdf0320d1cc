//! `bldst build run`'s attempts: one, or with `--retry` one more each time the server makes
//! the failed stage's retry due, until the command succeeds or the build is blocked.
//!
//! The loop never decides when a retry may start: it waits for the `retry_due` entry the
//! server records once the backoff has elapsed ([`buildstate_client::retry_wait`]), so a
//! retry started here is the same retry every other front end and the history see. Each
//! attempt is one [`run_stage::run_once`]; each wait is reported on stderr.

use std::time::Duration;

use buildstate_client::retry_wait::{
    needs_a_person, next_attempt_words, wait_for_retry_due, RetryPolicy, RetryWait,
};
use buildstate_domain::wire::Build;

use super::context::Context;
use super::error::CliError;
use super::output::time;
use super::run::{self as run_stage, RunArgs};

/// Runs `bldst build run`; the `u8` is the exit code: the last attempt's.
pub async fn run(args: RunArgs, context: &Context<'_>) -> Result<u8, CliError> {
    let client = context.client()?;
    let run = run_stage::run_identity(&args, context);
    let (id, stage) = (&args.id, args.state);
    let policy = RetryPolicy {
        max_wait: args.max_wait,
        poll: args.retry_poll,
    };
    // The latest resume an attempt's claim recorded: the run's last line says what it saved.
    let mut resumed = None;
    let code = loop {
        let attempt = run_stage::run_once(&args, context, &client, &run).await?;
        resumed = attempt.resumed.or(resumed);
        let Some(failed) = attempt.failed.filter(|_| args.retry) else {
            break attempt.code;
        };
        let mut on_wait = |build: &Build, wait: Duration| {
            context.printer.note(&format!(
                "bldst: stage {stage} of build `{id}` failed; {} is due at {}: waiting {}s",
                next_attempt_words(build),
                build
                    .next_attempt_at
                    .as_ref()
                    .map_or_else(String::new, time),
                wait.as_secs()
            ));
        };
        let waited = if failed.status == buildstate_domain::BuildStatus::Blocked {
            RetryWait::Blocked(failed)
        } else {
            wait_for_retry_due(&client, id, policy, &mut on_wait).await?
        };
        match waited {
            RetryWait::Due(build) => {
                context.printer.note(&format!(
                    "bldst: the retry of stage {stage} of build `{id}` is due: running {}",
                    next_attempt_words(&build)
                ));
            }
            RetryWait::Blocked(build) => {
                context.printer.note(&format!(
                    "bldst: stage {stage} of build `{id}` failed {} times, more than the {} retries allowed: the build is blocked and {}",
                    build.failures,
                    build.max_retries,
                    needs_a_person(id)
                ));
                break attempt.code;
            }
            RetryWait::NotFailed(build) => {
                context.printer.note(&format!(
                    "bldst: build `{id}` is {} at stage {} now (another run or an operator moved it): not retrying here",
                    build.status, build.state
                ));
                break attempt.code;
            }
            RetryWait::TooLate { build, due_at } => {
                let when = match due_at {
                    Some(at) if at > chrono::Utc::now() => format!("is due at {}", time(&at)),
                    _ => "was not made due by the server".to_owned(),
                };
                context.printer.note(&format!(
                    "bldst: not retrying stage {stage} of build `{id}`: {} {when}, beyond --max-wait {}s; re-run later",
                    next_attempt_words(&build),
                    args.max_wait.as_secs()
                ));
                break attempt.code;
            }
        }
    };
    if let Some(resume) = resumed {
        context
            .printer
            .note(&format!("bldst: {}", resume.describe()));
    }
    Ok(code)
}
