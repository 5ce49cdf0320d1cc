//! Waiting for the server to make a failed stage's retry due: the front ends that perform
//! retries (`bldst build run --retry`, the action's `retry` command) wait here for the
//! `retry_due` history entry the server records once the backoff has elapsed, instead of
//! deciding for themselves when a retry may start. The server decides once, for every front
//! end; a blocked build never gets one.

use std::time::Duration;

use buildstate_domain::wire::Build;
use buildstate_domain::{BuildId, BuildStatus};
use chrono::{DateTime, Utc};

use crate::api::{Client, ClientError};

/// How long to wait for a retry to become due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The most time spent waiting for one retry, the backoff included.
    pub max_wait: Duration,
    /// How often to ask once the backoff has elapsed: the server records `retry_due` within
    /// one tick of its scheduler after the due time.
    pub poll: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_wait: Duration::from_secs(900),
            poll: Duration::from_secs(1),
        }
    }
}

/// Where waiting for a retry ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryWait {
    /// The server recorded `retry_due` on the failed stage (the build's `retry_due_seq`):
    /// run it again.
    Due(Build),
    /// The build is blocked: no retry will be due, a person must retry, reset or cancel it.
    Blocked(Build),
    /// The build is not failed (any more): someone else ran the stage, an operator acted, or
    /// it finished. Nothing to retry.
    NotFailed(Build),
    /// The retry is not due within the policy's `max_wait`: due at `due_at`, or (when that
    /// time has passed) the server has not recorded it.
    TooLate {
        build: Build,
        due_at: Option<DateTime<Utc>>,
    },
}

/// Waits until the failed stage of build `id` has its `retry_due` entry, the build is blocked
/// or no longer failed, or the policy's `max_wait` would be exceeded. Before each wait for the
/// backoff to elapse, `on_wait` is told the build and how long the wait is.
///
/// Fails only when an API call fails.
pub async fn wait_for_retry_due(
    client: &Client,
    id: &BuildId,
    policy: RetryPolicy,
    on_wait: &mut dyn FnMut(&Build, Duration),
) -> Result<RetryWait, ClientError> {
    let mut waited = Duration::ZERO;
    loop {
        let build = client.get_build(id).await?;
        match build.status {
            BuildStatus::Failed => {}
            BuildStatus::Blocked => return Ok(RetryWait::Blocked(build)),
            _ => return Ok(RetryWait::NotFailed(build)),
        }
        // The server sets `retry_due_seq` with the entry, and clears it with any other change.
        if build.retry_due_seq.is_some() {
            return Ok(RetryWait::Due(build));
        }
        let until_due = build
            .next_attempt_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO);
        let wait = if until_due.is_zero() {
            policy.poll
        } else {
            until_due
        };
        if waited + wait > policy.max_wait {
            let due_at = build.next_attempt_at;
            return Ok(RetryWait::TooLate { build, due_at });
        }
        if !until_due.is_zero() {
            on_wait(&build, wait);
        }
        tokio::time::sleep(wait).await;
        waited += wait;
    }
}

/// "attempt K of N" for the attempt the build's failed stage is on next: the first run is
/// attempt 1, each failure allowed by `max_retries` adds one.
pub fn next_attempt_words(build: &Build) -> String {
    format!(
        "attempt {} of {}",
        build.failures.saturating_add(1),
        build.max_retries.saturating_add(1)
    )
}

/// What a person can do with a blocked build, as the commands to run.
pub fn needs_a_person(id: &BuildId) -> String {
    format!(
        "needs a person: `bldst build retry {id} --reason ...` (run the stage again), \
         `bldst build reset {id} --state N --reason ...` (go back to stage N) or \
         `bldst build cancel {id} --reason ...` (give it up)"
    )
}
