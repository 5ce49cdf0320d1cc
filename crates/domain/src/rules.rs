//! The transition rules (docs/rules.md): what a report or an operator action does to a build.
//!
//! Everything here is pure: the caller passes the build's current [`Progress`], the request and
//! the clock, and gets back the new progress plus the history [`Event`]s to append, or the
//! [`Refusal`] that explains why nothing may change. The server runs these inside the
//! transaction that holds the build's row lock; no front end re-implements them.
//!
//! Leases: an `in_progress` report from an identified run (its `run`, else its `source`)
//! claims the stage for [`RetryPolicy::lease_duration`]; the same run's repeated `in_progress`
//! or a heartbeat ([`renew_lease`]) extends it. While it is live, every other run's report on
//! that stage (or past it) is refused with [`Refusal::StageLeased`]; once it has expired,
//! another run may take the stage over, and the history records that it did. The lease's
//! fencing value is the sequence number of the history entry that claimed it: a report that
//! carries a fence which is not the current lease's is refused ([`Refusal::LeaseLost`]), so a
//! run that lost its lease cannot write. A report from an unidentified run claims nothing:
//! builds nobody leases behave exactly as before leases existed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::outputs::{Outputs, StageOutputs};
use crate::policy::{BuildRetryPolicy, StageRetry};
use crate::state::StateCode;
use crate::status::{BuildStatus, EventKind, ReportStatus};

/// The part of a build the rules read and write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub state: StateCode,
    pub status: BuildStatus,
    /// Failures counted at `state` since it was last reached, retried or reset.
    pub failures: u32,
    /// When `status` is `failed`: the earliest time the stage may be attempted again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// With `in_progress`: the run that claimed `state`, if an identified run did.
    pub lease: Option<Lease>,
    /// The sequence number of the newest history entry (fences are sequence numbers).
    pub last_seq: i64,
    /// With `failed`: the sequence number of the `retry_due` entry that announced the failed
    /// stage's next attempt, once the server recorded it ([`crate::retries`]). Every change
    /// that moves the build clears it, so each failure gets its own.
    pub retry_due_seq: Option<i64>,
    /// During a reopened pass ([`crate::policy`], `restart_from`): the failed stage the pass
    /// retries, which must complete again before the build moves past it. Until it does,
    /// failures are counted for it and its retry policy applies. `None` otherwise.
    pub reopened_until: Option<StateCode>,
}

impl Progress {
    /// A build that was just triggered: state 0, `running`, its `started` entry recorded.
    pub fn started() -> Self {
        Progress {
            state: StateCode::TRIGGERED,
            status: BuildStatus::Running,
            failures: 0,
            next_attempt_at: None,
            lease: None,
            last_seq: 1,
            retry_due_seq: None,
            reopened_until: None,
        }
    }

    /// The stage whose failures `failures` counts, and whose retry policy applies to them: the
    /// failed stage a reopened pass retries, else the build's state.
    pub fn retried_stage(&self) -> StateCode {
        self.reopened_until.unwrap_or(self.state)
    }

    /// Whether `stage` is done on this build: see [`stage_has_completed`].
    pub fn has_completed(&self, stage: StateCode) -> bool {
        stage_has_completed(self.state, self.status, stage)
    }

    /// The lease on the stage being worked on, live or expired.
    fn current_lease(&self) -> Option<&Lease> {
        self.lease
            .as_ref()
            .filter(|lease| self.status == BuildStatus::InProgress && lease.stage == self.state)
    }
}

/// Whether `stage` is done on a build at `state` with `status`: completed, or skipped by a
/// pipeline that jumped past it. Every stage before the build's state is; the state itself is
/// only once the build completed (stage 100).
pub fn stage_has_completed(state: StateCode, status: BuildStatus, stage: StateCode) -> bool {
    stage < state || status == BuildStatus::Completed
}

/// One run's claim on the stage it is working on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// The stage held.
    pub stage: StateCode,
    /// The run that holds it: the claiming report's `run`, else its `source`.
    pub holder: String,
    /// The fencing value: the sequence number of the history entry that claimed the lease.
    /// Reports and heartbeats that carry it prove they come from the holder.
    pub fence: i64,
    /// When the lease ends unless a heartbeat or `in_progress` report extends it.
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// How often its holder heartbeats this lease, granted (by the server's clock) at
    /// `granted_at`: a third of the time granted ([`heartbeat_interval`]), whatever lease
    /// the server is set to.
    pub fn heartbeat_every(&self, granted_at: DateTime<Utc>) -> Duration {
        heartbeat_interval((self.expires_at - granted_at).to_std().unwrap_or_default())
    }

    /// Seconds (rounded up) until the lease ends, or `None` once it has.
    pub fn seconds_left(&self, now: DateTime<Utc>) -> Option<u64> {
        seconds_until(self.expires_at, now)
    }
}

/// Seconds (rounded up) from `now` until `at`, or `None` if `at` has passed.
fn seconds_until(at: DateTime<Utc>, now: DateTime<Utc>) -> Option<u64> {
    let millis = u64::try_from((at - now).num_milliseconds()).ok()?;
    (millis > 0).then(|| millis.div_ceil(1000))
}

fn deadline(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|duration| now.checked_add_signed(duration))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How failures are retried: exponential backoff, then `blocked`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failures a stage may have before the build is `blocked` (the next one blocks it).
    pub max_retries: u32,
    /// The wait after the first failure; it doubles with each further one.
    pub backoff_base: Duration,
    /// The longest wait, however many failures.
    pub backoff_cap: Duration,
    /// How long an `in_progress` claim, or a heartbeat, holds the stage for its run.
    pub lease_duration: Duration,
}

/// The lease time when the server is not told otherwise: six heartbeats of the CLI's 10 s
/// interval, so a run survives a few lost requests and a crashed one frees the stage soon.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(60);

/// The shortest lease a server may grant: a third of it, the heartbeat cadence, is still
/// [`HEARTBEAT_FLOOR`], so a run holds its stage across a lost heartbeat and a slow answer.
pub const MIN_LEASE_DURATION: Duration = Duration::from_secs(1);

/// The shortest heartbeat cadence: below it a heartbeat would mostly wait on its own round
/// trip.
pub const HEARTBEAT_FLOOR: Duration = Duration::from_millis(250);

/// The longest heartbeat cadence: a sixth of the default lease, as clients always did.
pub const HEARTBEAT_CEILING: Duration = Duration::from_secs(10);

/// How often a run heartbeats a lease the server granted for `granted`: a third of it, so one
/// lost heartbeat still leaves a third of the lease, within [`HEARTBEAT_FLOOR`] and
/// [`HEARTBEAT_CEILING`]. A lease shorter than [`MIN_LEASE_DURATION`] cannot be held this way
/// (servers refuse to grant one).
pub fn heartbeat_interval(granted: Duration) -> Duration {
    (granted / 3).clamp(HEARTBEAT_FLOOR, HEARTBEAT_CEILING)
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(3600),
            lease_duration: DEFAULT_LEASE_DURATION,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure: `base × 2^(failures−1)`, at most the cap.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        self.backoff_base
            .checked_mul(1u32 << exponent)
            .map_or(self.backoff_cap, |wait| wait.min(self.backoff_cap))
    }
}

/// A client's report about one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub state: StateCode,
    pub status: ReportStatus,
    /// Compare-and-set: the state the client believes the build is at.
    pub expected_state: Option<StateCode>,
    /// The reporting run's identity (the request's `run`, else its `source`); `None` claims
    /// no lease.
    pub run: Option<String>,
    /// The fencing value of the lease the run believes it holds.
    pub fence: Option<i64>,
    /// What a completed stage produced (empty otherwise).
    pub outputs: Outputs,
}

impl Report {
    /// A report from an unidentified run, with no expectation, fence or outputs.
    pub fn new(state: StateCode, status: ReportStatus) -> Self {
        Report {
            state,
            status,
            expected_state: None,
            run: None,
            fence: None,
            outputs: Outputs::default(),
        }
    }
}

/// One history entry the rules ask the store to append (message and reporter are the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub state: StateCode,
    pub kind: EventKind,
    /// The attempt at `state` this event is about (1 for the first run); `None` for skipped
    /// stages, stage 0 completed by a jump, and operator actions.
    pub attempt: Option<u32>,
    /// The rules' own message for this entry (a lease takeover says whose lease expired);
    /// `None` leaves it to the caller.
    pub note: Option<String>,
    /// With `completed`: the outputs the stage completed with.
    pub outputs: Option<Outputs>,
}

impl Event {
    /// An entry with no attempt, note or outputs.
    pub fn plain(state: StateCode, kind: EventKind) -> Self {
        Event {
            state,
            kind,
            attempt: None,
            note: None,
            outputs: None,
        }
    }
}

/// What an accepted report does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The build moves to `progress`, and `events` are appended to its history, in order.
    Applied {
        progress: Progress,
        events: Vec<Event>,
    },
    /// The stage was already completed: success, nothing changes, nothing is appended.
    AlreadyDone {
        stage: StateCode,
        current: StateCode,
    },
}

/// Why a report or operator action may not change the build (an HTTP 409 at the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("stage {stage} already completed; the next stage to run is {next}")]
    StageAlreadyCompleted { stage: StateCode, next: StateCode },
    #[error("the build is {status}; it takes no more reports")]
    BuildFinished { status: BuildStatus },
    #[error("stage {state} failed more than the allowed retries; the build needs intervention (an operator can retry, reset or cancel it)")]
    BuildBlocked { state: StateCode },
    #[error("the build is at state {actual}, not the expected {expected}")]
    StaleExpectedState {
        expected: StateCode,
        actual: StateCode,
    },
    #[error("stage {failed} failed and has not completed since; run it again before stage {stage} (or an operator can reset or cancel the build)")]
    FailedStageFirst { failed: StateCode, stage: StateCode },
    #[error("stage {state} is backing off after a failure; retry in {wait_seconds}s")]
    RetryTooSoon { state: StateCode, wait_seconds: u64 },
    #[error("the build is {status}; only a blocked or failed build can be retried")]
    NothingToRetry { status: BuildStatus },
    #[error("cannot reset forward to {target}: the build is at {current}; reset moves to the current or an earlier stage")]
    ResetForward {
        target: StateCode,
        current: StateCode,
    },
    #[error("stage {stage} is held by run `{holder}` until {} ({wait_seconds}s left); wait for it, or report from that run", .expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))]
    StageLeased {
        stage: StateCode,
        holder: String,
        fence: i64,
        expires_at: DateTime<Utc>,
        wait_seconds: u64,
    },
    #[error("lease {fence} on stage {stage} is no longer held: {}; this run must stop reporting on it", describe_holder(.holder.as_deref(), *.current_fence))]
    LeaseLost {
        stage: StateCode,
        fence: i64,
        holder: Option<String>,
        current_fence: Option<i64>,
    },
    #[error("stage {stage} is not leased by {}: the build is {status} at {state}{}", describe_run(.run.as_deref()), match .holder { Some(holder) => format!(" and run `{holder}` holds it"), None => String::new() })]
    NotLeased {
        stage: StateCode,
        run: Option<String>,
        holder: Option<String>,
        state: StateCode,
        status: BuildStatus,
    },
}

fn describe_holder(holder: Option<&str>, fence: Option<i64>) -> String {
    match (holder, fence) {
        (Some(holder), Some(fence)) => format!("run `{holder}` holds it now (lease {fence})"),
        _ => "no run holds it now".to_owned(),
    }
}

fn describe_run(run: Option<&str>) -> String {
    match run {
        Some(run) => format!("run `{run}`"),
        None => "this run".to_owned(),
    }
}

/// What the history a change appends does to a build's per-stage outputs. It lives beside
/// [`Event`] (the rules' history entry) so that `outputs` need not import the rules that import
/// it.
impl StageOutputs {
    /// Whether `events` can change a build's per-stage outputs, judged without them:
    /// `none_stored` says the build has none. Only a completion with outputs can add some, and
    /// only a completion or a reset can remove some. When this is false a store need not read,
    /// decode or rewrite them (most reports: `in_progress`, `failed`); when it is true,
    /// [`apply`](StageOutputs::apply) says whether they did change.
    pub fn may_change(events: &[Event], none_stored: bool) -> bool {
        events.iter().any(|event| match event.kind {
            EventKind::Completed => {
                !none_stored || event.outputs.as_ref().is_some_and(|o| !o.is_empty())
            }
            EventKind::Reset | EventKind::Reopened => !none_stored,
            _ => false,
        })
    }

    /// Follows the history `events` a change appends: a completion with outputs replaces its
    /// stage's outputs; a reset to S drops the outputs of S and every later stage (they are
    /// reopened and will run again). Returns whether anything changed.
    pub fn apply(&mut self, events: &[Event]) -> bool {
        let mut changed = false;
        for event in events {
            match event.kind {
                EventKind::Completed => {
                    // A stage completing again (after a reset) replaces what it produced
                    // before, even with nothing.
                    let outputs = event.outputs.clone().unwrap_or_default();
                    let previous = if outputs.is_empty() {
                        self.0.remove(&event.state)
                    } else {
                        self.0.insert(event.state, outputs.clone())
                    };
                    changed |= previous != (!outputs.is_empty()).then_some(outputs);
                }
                // The history keeps what the reopened stages produced; the build's outputs
                // no longer offer it to a resumed run.
                EventKind::Reset | EventKind::Reopened => {
                    let reopened = self.0.split_off(&event.state);
                    changed |= !reopened.is_empty();
                }
                _ => {}
            }
        }
        changed
    }
}

/// Applies a client's report to a build at `current`, as of `now`, with `policy` for every
/// stage: a build without a retry policy of its own.
pub fn apply_report(
    current: &Progress,
    report: &Report,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    apply_report_under(current, report, policy, &BuildRetryPolicy::default(), now)
}

/// Applies a client's report to a build at `current`, as of `now`: `defaults` (the build's
/// `max_retries`, the server's backoff and lease) apply to the stages the build's retry policy
/// `stages` does not name.
///
/// A failure counts for the build's [`Progress::retried_stage`] and is judged by that stage's
/// policy ([`BuildRetryPolicy::for_stage`]); when that has `restart_from` R and the build is not
/// blocked, the build moves back to R (`failed`, with the backoff of the failed stage) and a
/// `reopened` entry follows the `failed` one: a reopened pass, which ends when the failed stage
/// completes again. During it no report moves past that stage and failures keep counting.
pub fn apply_report_under(
    current: &Progress,
    report: &Report,
    defaults: &RetryPolicy,
    stages: &BuildRetryPolicy,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    let policy = defaults;
    let stage = report.state;
    if current.status == BuildStatus::Cancelled {
        return Err(Refusal::BuildFinished {
            status: current.status,
        });
    }
    // A compare-and-set is answered by what it compares, before anything else: a client that
    // says where it believes the build is learns that it is elsewhere, even when its report
    // would have changed nothing.
    if let Some(expected) = report.expected_state {
        if expected != current.state {
            return Err(Refusal::StaleExpectedState {
                expected,
                actual: current.state,
            });
        }
    }
    // A completion that is already in the past is the retried CI step: it must succeed and
    // change nothing.
    if report.status == ReportStatus::Completed && current.has_completed(stage) {
        return Ok(Transition::AlreadyDone {
            stage,
            current: current.state,
        });
    }
    if current.status == BuildStatus::Completed {
        return Err(Refusal::BuildFinished {
            status: current.status,
        });
    }
    if stage < current.state {
        return Err(Refusal::StageAlreadyCompleted {
            stage,
            next: current.state,
        });
    }
    if current.status == BuildStatus::Blocked {
        return Err(Refusal::BuildBlocked {
            state: current.state,
        });
    }
    // A jump records the stages between as skipped: that is for stages a pipeline does not
    // use, never a way past a stage that failed (its failure would read as "skipped").
    if current.status == BuildStatus::Failed && stage > current.state {
        return Err(Refusal::FailedStageFirst {
            failed: current.state,
            stage,
        });
    }
    // A reopened pass retries its failed stage: nothing moves past it until it completes again.
    if let Some(until) = current.reopened_until.filter(|&until| stage > until) {
        return Err(Refusal::FailedStageFirst {
            failed: until,
            stage,
        });
    }
    if report.status != ReportStatus::Completed && stage == current.state {
        if let Some(wait_seconds) = backoff_remaining(current, now) {
            return Err(Refusal::RetryTooSoon {
                state: stage,
                wait_seconds,
            });
        }
    }
    // Leases: who may report on the stage being worked on (and on any stage past it).
    let lease = current.current_lease();
    let mut kept_lease: Option<&Lease> = None;
    let mut events: Vec<Event> = Vec::new();
    if let Some(fence) = report.fence {
        match lease {
            Some(lease) if lease.fence == fence => kept_lease = Some(lease),
            _ => {
                return Err(Refusal::LeaseLost {
                    stage,
                    fence,
                    holder: lease.map(|lease| lease.holder.clone()),
                    current_fence: lease.map(|lease| lease.fence),
                })
            }
        }
    } else if let Some(lease) = lease {
        if report.run.as_deref() == Some(lease.holder.as_str()) {
            kept_lease = Some(lease);
        } else if let Some(wait_seconds) = lease.seconds_left(now) {
            return Err(Refusal::StageLeased {
                stage: lease.stage,
                holder: lease.holder.clone(),
                fence: lease.fence,
                expires_at: lease.expires_at,
                wait_seconds,
            });
        } else {
            events.push(Event {
                note: Some(format!(
                    "the lease of run `{}` (lease {}) expired at {}; taken over by {}",
                    lease.holder,
                    lease.fence,
                    lease
                        .expires_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    describe_run(report.run.as_deref()),
                )),
                ..Event::plain(lease.stage, EventKind::TakenOver)
            });
        }
    }

    // Stage 0 is "triggered": creating the build did it, so a pipeline whose first report is a
    // later stage completed it rather than skipped it.
    events.extend(current.state.up_to(stage).map(|passed| {
        let kind = if passed == StateCode::TRIGGERED {
            EventKind::Completed
        } else {
            EventKind::Skipped
        };
        Event::plain(passed, kind)
    }));
    // Failures count per stage: a jump lands on a stage that has not failed yet. A reopened
    // pass is one retry of its failed stage, so its count goes on through the pass.
    let failures_so_far = if stage == current.state || current.reopened_until.is_some() {
        current.failures
    } else {
        0
    };
    let attempt = Some(failures_so_far + 1);
    // The entry this report is about comes last: its sequence number is the new last_seq,
    // and the fence of a lease it claims.
    let last_seq = current.last_seq + events.len() as i64 + 1;
    let finished_with = |state, status, failures, next_attempt_at| Progress {
        state,
        status,
        failures,
        next_attempt_at,
        lease: None,
        last_seq,
        retry_due_seq: None,
        reopened_until: current.reopened_until,
    };
    let progress = match report.status {
        ReportStatus::Completed => {
            events.push(Event {
                attempt,
                outputs: (!report.outputs.is_empty()).then(|| report.outputs.clone()),
                ..Event::plain(stage, EventKind::Completed)
            });
            // Before the failed stage a reopened pass goes on, still counting its failures;
            // the failed stage completing ends it.
            let pass = current.reopened_until.filter(|&until| stage < until);
            let failures = pass.map_or(0, |_| current.failures);
            let progress = match stage.next() {
                Some(next) => finished_with(next, BuildStatus::Running, failures, None),
                None => finished_with(stage, BuildStatus::Completed, failures, None),
            };
            Progress {
                reopened_until: pass,
                ..progress
            }
        }
        ReportStatus::InProgress => {
            events.push(Event {
                attempt,
                ..Event::plain(stage, EventKind::InProgress)
            });
            // The holder keeps its lease (and fence) on the same stage; anyone identified
            // who reaches a stage afresh claims it.
            let lease = match kept_lease {
                Some(lease) if lease.stage == stage => Some(Lease {
                    expires_at: deadline(now, policy.lease_duration),
                    ..lease.clone()
                }),
                kept => kept
                    .map(|lease| lease.holder.clone())
                    .or_else(|| report.run.clone())
                    .map(|holder| Lease {
                        stage,
                        holder,
                        fence: last_seq,
                        expires_at: deadline(now, policy.lease_duration),
                    }),
            };
            Progress {
                lease,
                ..finished_with(stage, BuildStatus::InProgress, failures_so_far, None)
            }
        }
        ReportStatus::Failed => {
            events.push(Event {
                attempt,
                ..Event::plain(stage, EventKind::Failed)
            });
            let failures = failures_so_far + 1;
            let retried = current.reopened_until.unwrap_or(stage);
            let StageRetry {
                policy,
                restart_from,
            } = stages.for_stage(retried, defaults);
            if failures > policy.max_retries {
                finished_with(stage, BuildStatus::Blocked, failures, None)
            } else {
                // Always a time, however long the configured backoff: the scheduler finds
                // failed builds by it, and one without would never be retried.
                let next_attempt_at = Some(deadline(now, policy.backoff(failures)));
                match restart_from {
                    Some(from) => {
                        events.push(Event {
                            note: Some(reopen_note(stage, retried, from)),
                            ..Event::plain(from, EventKind::Reopened)
                        });
                        Progress {
                            last_seq: current.last_seq + events.len() as i64,
                            reopened_until: Some(retried),
                            ..finished_with(from, BuildStatus::Failed, failures, next_attempt_at)
                        }
                    }
                    None => finished_with(stage, BuildStatus::Failed, failures, next_attempt_at),
                }
            }
        }
    };
    Ok(Transition::Applied { progress, events })
}

/// The message of a `reopened` entry: `failed` failed while `retried` was being retried (the
/// same stage outside a reopened pass), whose result does not survive without `from`.
fn reopen_note(failed: StateCode, retried: StateCode, from: StateCode) -> String {
    let during = if failed == retried {
        String::new()
    } else {
        format!(" during the retry of stage {retried}")
    };
    format!(
        "stage {failed} failed{during}; the result of stage {retried} does not survive without \
         stage {from} (restart_from): stages {from} to {retried} run again"
    )
}

/// Finds the lease on `stage` that `run` (or the holder of lease `fence`) holds, live or
/// expired-but-not-taken-over: the check behind heartbeats and releases.
fn held_lease<'p>(
    current: &'p Progress,
    stage: StateCode,
    run: Option<&str>,
    fence: Option<i64>,
    now: DateTime<Utc>,
) -> Result<&'p Lease, Refusal> {
    let lease = current.current_lease().filter(|lease| lease.stage == stage);
    let not_leased = |holder: Option<String>| Refusal::NotLeased {
        stage,
        run: run.map(str::to_owned),
        holder,
        state: current.state,
        status: current.status,
    };
    let Some(lease) = lease else {
        return match fence {
            Some(fence) => Err(Refusal::LeaseLost {
                stage,
                fence,
                holder: None,
                current_fence: None,
            }),
            None => Err(not_leased(None)),
        };
    };
    if let Some(fence) = fence {
        return if lease.fence == fence {
            Ok(lease)
        } else {
            Err(Refusal::LeaseLost {
                stage,
                fence,
                holder: Some(lease.holder.clone()),
                current_fence: Some(lease.fence),
            })
        };
    }
    if run == Some(lease.holder.as_str()) {
        return Ok(lease);
    }
    match lease.seconds_left(now) {
        Some(wait_seconds) => Err(Refusal::StageLeased {
            stage,
            holder: lease.holder.clone(),
            fence: lease.fence,
            expires_at: lease.expires_at,
            wait_seconds,
        }),
        None => Err(not_leased(Some(lease.holder.clone()))),
    }
}

/// A heartbeat: the holder of the lease on `stage` (named by `run` or proved by `fence`)
/// extends it to `now + lease_duration`. A lease that expired but was not taken over is
/// still the holder's to renew. Appends no history.
pub fn renew_lease(
    current: &Progress,
    stage: StateCode,
    run: Option<&str>,
    fence: Option<i64>,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<Lease, Refusal> {
    let lease = held_lease(current, stage, run, fence, now)?;
    Ok(Lease {
        expires_at: deadline(now, policy.lease_duration),
        ..lease.clone()
    })
}

/// The holder gives the stage up without reporting on it (its command was interrupted):
/// the build stays `in_progress`, and any run may claim the stage at once.
pub fn release_lease(
    current: &Progress,
    stage: StateCode,
    run: Option<&str>,
    fence: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Lease, Refusal> {
    held_lease(current, stage, run, fence, now).cloned()
}

/// Seconds (rounded up) until a failed build's backoff ends, or `None` if it has.
fn backoff_remaining(current: &Progress, now: DateTime<Utc>) -> Option<u64> {
    if current.status != BuildStatus::Failed {
        return None;
    }
    let remaining = current.next_attempt_at? - now;
    let millis = u64::try_from(remaining.num_milliseconds()).ok()?;
    (millis > 0).then(|| millis.div_ceil(1000))
}

/// What an operator (an admin token) may do to a build; each carries a required reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// Clear the failures of a blocked or failed stage so it runs again.
    Retry,
    /// Move the build back to `to` (the current stage or an earlier one), `running`.
    Reset { to: StateCode },
    /// Give the build up.
    Cancel,
}

/// Applies an operator action to a build without a retry policy of its own at `current`.
pub fn apply_operator_action(
    current: &Progress,
    action: OperatorAction,
) -> Result<(Progress, Event), Refusal> {
    let (progress, mut events) =
        apply_operator_action_under(current, action, &BuildRetryPolicy::default())?;
    // Without `restart_from`, every action records exactly one entry.
    Ok((progress, events.remove(0)))
}

/// Applies an operator action to a build at `current` whose retry policy is `stages`. A retry
/// of a stage whose policy has `restart_from` R reopens the build from R, as the failure did
/// not (it blocked the build): a `retried` entry, then a `reopened` one, and the build is
/// `running` at R in a reopened pass of that stage. A reset ends any pass.
pub fn apply_operator_action_under(
    current: &Progress,
    action: OperatorAction,
    stages: &BuildRetryPolicy,
) -> Result<(Progress, Vec<Event>), Refusal> {
    let last_seq = current.last_seq + 1;
    let running_at = |state| Progress {
        state,
        status: BuildStatus::Running,
        failures: 0,
        next_attempt_at: None,
        lease: None,
        last_seq,
        retry_due_seq: None,
        reopened_until: None,
    };
    match action {
        OperatorAction::Retry => match current.status {
            BuildStatus::Blocked | BuildStatus::Failed => {
                let retried_event = Event::plain(current.state, EventKind::Retried);
                let retried = current.retried_stage();
                Ok(match stages.restart_from(retried) {
                    Some(from) => (
                        Progress {
                            last_seq: last_seq + 1,
                            reopened_until: Some(retried),
                            ..running_at(from)
                        },
                        vec![
                            retried_event,
                            Event {
                                note: Some(format!(
                                    "an operator retried stage {retried}, whose result does not \
                                     survive without stage {from} (restart_from): stages {from} \
                                     to {retried} run again"
                                )),
                                ..Event::plain(from, EventKind::Reopened)
                            },
                        ],
                    ),
                    None => (running_at(current.state), vec![retried_event]),
                })
            }
            status => Err(Refusal::NothingToRetry { status }),
        },
        OperatorAction::Reset { to } => {
            if current.status == BuildStatus::Cancelled {
                return Err(Refusal::BuildFinished {
                    status: current.status,
                });
            }
            if to > current.state {
                return Err(Refusal::ResetForward {
                    target: to,
                    current: current.state,
                });
            }
            Ok((running_at(to), vec![Event::plain(to, EventKind::Reset)]))
        }
        OperatorAction::Cancel => {
            if current.status.is_finished() {
                return Err(Refusal::BuildFinished {
                    status: current.status,
                });
            }
            Ok((
                Progress {
                    status: BuildStatus::Cancelled,
                    next_attempt_at: None,
                    lease: None,
                    last_seq,
                    retry_due_seq: None,
                    ..current.clone()
                },
                vec![Event::plain(current.state, EventKind::Cancelled)],
            ))
        }
    }
}

#[cfg(test)]
mod heartbeat_tests {
    use super::*;

    #[test]
    fn heartbeats_come_three_times_a_lease_within_the_floor_and_ceiling() {
        let ms = Duration::from_millis;
        let table = [
            // (granted lease, heartbeat every)
            (MIN_LEASE_DURATION, ms(333)),
            (ms(2_000), ms(666)),
            (ms(10_000), ms(3_333)),
            (ms(30_000), ms(10_000)),
            (DEFAULT_LEASE_DURATION, HEARTBEAT_CEILING),
            (Duration::from_secs(86_400), HEARTBEAT_CEILING),
            (ms(300), HEARTBEAT_FLOOR),
            (Duration::ZERO, HEARTBEAT_FLOOR),
        ];
        for (granted, every) in table {
            let got = heartbeat_interval(granted);
            assert!(
                got.abs_diff(every) <= ms(1),
                "a {granted:?} lease: heartbeat every {got:?}, expected {every:?}"
            );
            if granted >= MIN_LEASE_DURATION {
                assert!(got * 3 <= granted + ms(1), "{granted:?}: {got:?}");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use BuildStatus::{Blocked, Cancelled, Completed, Failed, InProgress, Running};

    /// A state code the test knows is valid (the other rule modules' tests use it too).
    pub(crate) fn code(n: i64) -> StateCode {
        StateCode::new(n).expect("test codes are valid")
    }

    /// The rule tests' fixed clock.
    pub(crate) fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
    }

    fn at(state: i64, status: BuildStatus, failures: u32) -> Progress {
        Progress {
            state: code(state),
            status,
            failures,
            next_attempt_at: None,
            lease: None,
            last_seq: 7,
            retry_due_seq: None,
            reopened_until: None,
        }
    }

    #[test]
    fn a_stage_has_completed_before_the_state_and_on_a_completed_build() {
        let cases = [
            ("a stage before the state", at(20, Running, 0), 15, true),
            (
                "the first stage of a build past it",
                at(20, Failed, 2),
                0,
                true,
            ),
            (
                "the state of a running build",
                at(20, Running, 0),
                20,
                false,
            ),
            (
                "the state of a build working on it",
                at(20, InProgress, 0),
                20,
                false,
            ),
            ("the failed stage", at(20, Failed, 1), 20, false),
            (
                "the stage a blocked build is stuck at",
                at(20, Blocked, 4),
                20,
                false,
            ),
            ("a stage after the state", at(20, Running, 0), 25, false),
            (
                "the stages of a cancelled build not reached",
                at(20, Cancelled, 0),
                20,
                false,
            ),
            (
                "the last stage of a completed build",
                at(100, Completed, 0),
                100,
                true,
            ),
            (
                "an early stage of a completed build",
                at(100, Completed, 0),
                5,
                true,
            ),
        ];
        for (name, progress, stage, expected) in cases {
            assert_eq!(progress.has_completed(code(stage)), expected, "{name}");
            assert_eq!(
                stage_has_completed(progress.state, progress.status, code(stage)),
                expected,
                "{name}"
            );
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(60),
            lease_duration: Duration::from_secs(60),
        }
    }

    fn report(state: i64, status: ReportStatus) -> Report {
        Report::new(code(state), status)
    }

    fn event(state: i64, kind: EventKind, attempt: Option<u32>) -> Event {
        Event {
            attempt,
            ..Event::plain(code(state), kind)
        }
    }

    /// What each case expects: the new progress (state, status, failures) and the events'
    /// (state, kind) pairs, or the refusal, or "already done".
    #[derive(Debug)]
    enum Expect {
        Moves(i64, BuildStatus, u32, &'static [(i64, EventKind)]),
        Unchanged,
        Refused(fn(&Refusal) -> bool),
    }

    #[test]
    fn every_report_rule_of_the_product_contract() {
        use EventKind as K;
        use ReportStatus as R;
        let cases: Vec<(&str, Progress, Report, Expect)> = vec![
            (
                "completing the current stage advances to the next",
                at(10, Running, 0),
                report(10, R::Completed),
                Expect::Moves(15, Running, 0, &[(10, K::Completed)]),
            ),
            (
                "completing after in_progress advances",
                at(10, InProgress, 0),
                report(10, R::Completed),
                Expect::Moves(15, Running, 0, &[(10, K::Completed)]),
            ),
            (
                "completing a failed stage resets the failure count",
                at(10, Failed, 2),
                report(10, R::Completed),
                Expect::Moves(15, Running, 0, &[(10, K::Completed)]),
            ),
            (
                "completing 100 completes the build",
                at(100, Running, 0),
                report(100, R::Completed),
                Expect::Moves(100, Completed, 0, &[(100, K::Completed)]),
            ),
            (
                "a jump records the stages between as skipped",
                at(5, Running, 0),
                report(15, R::Completed),
                Expect::Moves(
                    20,
                    Running,
                    0,
                    &[(5, K::Skipped), (10, K::Skipped), (15, K::Completed)],
                ),
            ),
            (
                "a jump from 0 records 0 as completed (triggered by the build's creation)",
                at(0, Running, 0),
                report(10, R::Completed),
                Expect::Moves(
                    15,
                    Running,
                    0,
                    &[(0, K::Completed), (5, K::Skipped), (10, K::Completed)],
                ),
            ),
            (
                "a jump straight to 100 completes the build",
                at(90, Running, 0),
                report(100, R::Completed),
                Expect::Moves(
                    100,
                    Completed,
                    0,
                    &[(90, K::Skipped), (95, K::Skipped), (100, K::Completed)],
                ),
            ),
            (
                "completing an earlier stage changes nothing",
                at(20, Running, 0),
                report(10, R::Completed),
                Expect::Unchanged,
            ),
            (
                "completing an earlier stage of a failed build changes nothing",
                at(20, Failed, 1),
                report(10, R::Completed),
                Expect::Unchanged,
            ),
            (
                "completing on a completed build changes nothing",
                at(100, Completed, 0),
                report(100, R::Completed),
                Expect::Unchanged,
            ),
            (
                "in_progress marks the current stage",
                at(30, Running, 0),
                report(30, R::InProgress),
                Expect::Moves(30, InProgress, 0, &[(30, K::InProgress)]),
            ),
            (
                "in_progress on a later stage skips the ones between",
                at(30, Running, 0),
                report(40, R::InProgress),
                Expect::Moves(
                    40,
                    InProgress,
                    0,
                    &[(30, K::Skipped), (35, K::Skipped), (40, K::InProgress)],
                ),
            ),
            (
                "in_progress on a failed stage keeps its failure count",
                at(30, Failed, 2),
                report(30, R::InProgress),
                Expect::Moves(30, InProgress, 2, &[(30, K::InProgress)]),
            ),
            (
                "a failure stays at the stage and counts",
                at(25, Running, 0),
                report(25, R::Failed),
                Expect::Moves(25, Failed, 1, &[(25, K::Failed)]),
            ),
            (
                "a failure after in_progress counts",
                at(25, InProgress, 1),
                report(25, R::Failed),
                Expect::Moves(25, Failed, 2, &[(25, K::Failed)]),
            ),
            (
                "the failure past max_retries blocks the build",
                at(25, Failed, 3),
                report(25, R::Failed),
                Expect::Moves(25, Blocked, 4, &[(25, K::Failed)]),
            ),
            (
                "a failure on a later stage skips the ones between and counts once",
                at(25, Running, 0),
                report(35, R::Failed),
                Expect::Moves(
                    35,
                    Failed,
                    1,
                    &[(25, K::Skipped), (30, K::Skipped), (35, K::Failed)],
                ),
            ),
            (
                "no report may jump past a failed stage",
                at(25, Failed, 1),
                report(35, R::Completed),
                Expect::Refused(
                    |r| matches!(r, Refusal::FailedStageFirst { failed, .. } if failed.value() == 25),
                ),
            ),
            (
                "no attempt may start past a failed stage",
                at(25, Failed, 1),
                report(30, R::InProgress),
                Expect::Refused(|r| matches!(r, Refusal::FailedStageFirst { .. })),
            ),
            (
                "failing an earlier stage is a conflict naming the next stage",
                at(20, Running, 0),
                report(10, R::Failed),
                Expect::Refused(
                    |r| matches!(r, Refusal::StageAlreadyCompleted { next, .. } if next.value() == 20),
                ),
            ),
            (
                "in_progress on an earlier stage is a conflict",
                at(20, Running, 0),
                report(15, R::InProgress),
                Expect::Refused(|r| matches!(r, Refusal::StageAlreadyCompleted { .. })),
            ),
            (
                "any other report on a completed build is a conflict",
                at(100, Completed, 0),
                report(100, R::Failed),
                Expect::Refused(|r| matches!(r, Refusal::BuildFinished { status: Completed })),
            ),
            (
                "any report on a cancelled build is a conflict",
                at(20, Cancelled, 0),
                report(10, R::Completed),
                Expect::Refused(|r| matches!(r, Refusal::BuildFinished { status: Cancelled })),
            ),
            (
                "a new attempt on a blocked build is a conflict",
                at(25, Blocked, 4),
                report(25, R::InProgress),
                Expect::Refused(|r| matches!(r, Refusal::BuildBlocked { .. })),
            ),
            (
                "a completion on a blocked build is a conflict too",
                at(25, Blocked, 4),
                report(25, R::Completed),
                Expect::Refused(|r| matches!(r, Refusal::BuildBlocked { .. })),
            ),
            (
                "an earlier completion on a blocked build changes nothing",
                at(25, Blocked, 4),
                report(20, R::Completed),
                Expect::Unchanged,
            ),
        ];
        for (name, current, report, expect) in cases {
            let outcome = apply_report(&current, &report, &policy(), now());
            match (expect, outcome) {
                (
                    Expect::Moves(state, status, failures, events),
                    Ok(Transition::Applied {
                        progress,
                        events: got,
                    }),
                ) => {
                    assert_eq!(
                        (progress.state, progress.status, progress.failures),
                        (code(state), status, failures),
                        "{name}"
                    );
                    let got: Vec<(i64, EventKind)> =
                        got.iter().map(|e| (i64::from(e.state), e.kind)).collect();
                    assert_eq!(got, events, "{name}");
                }
                (Expect::Unchanged, Ok(Transition::AlreadyDone { .. })) => {}
                (Expect::Refused(check), Err(refusal)) => {
                    assert!(check(&refusal), "{name}: {refusal:?}")
                }
                (expect, outcome) => panic!("{name}: expected {expect:?}, got {outcome:?}"),
            }
        }
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let policy = policy();
        let waits: Vec<u64> = (1..=5).map(|n| policy.backoff(n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        assert_eq!(policy.backoff(u32::MAX).as_secs(), 60, "no overflow");

        let Ok(Transition::Applied { progress, events }) = apply_report(
            &at(25, Failed, 1),
            &report(25, ReportStatus::Failed),
            &policy,
            now(),
        ) else {
            panic!("a second failure is applied");
        };
        assert_eq!(
            progress.next_attempt_at,
            Some(now() + chrono::Duration::seconds(20))
        );
        assert_eq!(
            events,
            [event(25, EventKind::Failed, Some(2))],
            "second attempt"
        );
    }

    #[test]
    fn a_new_attempt_inside_the_backoff_is_refused_with_the_wait() {
        let backing_off = Progress {
            next_attempt_at: Some(now() + chrono::Duration::milliseconds(12_500)),
            ..at(25, Failed, 1)
        };
        for status in [ReportStatus::InProgress, ReportStatus::Failed] {
            let refusal = apply_report(&backing_off, &report(25, status), &policy(), now())
                .expect_err("inside the backoff");
            assert_eq!(
                refusal,
                Refusal::RetryTooSoon {
                    state: code(25),
                    wait_seconds: 13
                }
            );
        }
        // Completing it (someone fixed it by hand) is always accepted.
        assert!(matches!(
            apply_report(
                &backing_off,
                &report(25, ReportStatus::Completed),
                &policy(),
                now()
            ),
            Ok(Transition::Applied { .. })
        ));
        // Once the backoff has elapsed the attempt goes ahead.
        let later = now() + chrono::Duration::seconds(13);
        assert!(apply_report(
            &backing_off,
            &report(25, ReportStatus::InProgress),
            &policy(),
            later
        )
        .is_ok());
    }

    #[test]
    fn the_expected_state_makes_a_report_a_compare_and_set() {
        let current = at(20, Running, 0);
        let stale = Report {
            expected_state: Some(code(15)),
            ..report(20, ReportStatus::Completed)
        };
        assert_eq!(
            apply_report(&current, &stale, &policy(), now()),
            Err(Refusal::StaleExpectedState {
                expected: code(15),
                actual: code(20)
            })
        );
        let fresh = Report {
            expected_state: Some(code(20)),
            ..stale.clone()
        };
        assert!(apply_report(&current, &fresh, &policy(), now()).is_ok());
        // A completion of a stage already completed, sent with a stale expectation, is refused
        // naming the build's state, as any other mismatch: the compare comes first.
        let stale_completion = Report {
            state: code(15),
            ..stale.clone()
        };
        assert_eq!(
            apply_report(&current, &stale_completion, &policy(), now()),
            Err(Refusal::StaleExpectedState {
                expected: code(15),
                actual: code(20)
            })
        );
        // Without an expectation (or with the right one) it is the retried CI step: success.
        let retried = Report {
            state: code(15),
            expected_state: None,
            ..stale
        };
        assert!(matches!(
            apply_report(&current, &retried, &policy(), now()),
            Ok(Transition::AlreadyDone { .. })
        ));
    }

    #[test]
    fn the_attempt_number_is_one_more_than_the_failures_so_far() {
        let Ok(Transition::Applied { events, .. }) = apply_report(
            &at(40, Failed, 2),
            &report(40, ReportStatus::InProgress),
            &policy(),
            now(),
        ) else {
            panic!("applied");
        };
        assert_eq!(events, [event(40, EventKind::InProgress, Some(3))]);
    }

    #[test]
    fn every_operator_rule() {
        let retried = apply_operator_action(&at(25, Blocked, 4), OperatorAction::Retry)
            .expect("retry blocked");
        assert_eq!(
            retried,
            (
                Progress {
                    last_seq: 8,
                    ..at(25, Running, 0)
                },
                event(25, EventKind::Retried, None)
            )
        );
        assert!(apply_operator_action(&at(25, Failed, 1), OperatorAction::Retry).is_ok());
        assert_eq!(
            apply_operator_action(&at(25, Running, 0), OperatorAction::Retry),
            Err(Refusal::NothingToRetry { status: Running })
        );

        let reset =
            apply_operator_action(&at(60, Blocked, 4), OperatorAction::Reset { to: code(40) })
                .expect("reset back");
        assert_eq!(
            reset,
            (
                Progress {
                    last_seq: 8,
                    ..at(40, Running, 0)
                },
                event(40, EventKind::Reset, None)
            )
        );
        assert!(apply_operator_action(
            &at(100, Completed, 0),
            OperatorAction::Reset { to: code(95) }
        )
        .is_ok());
        assert_eq!(
            apply_operator_action(&at(40, Running, 0), OperatorAction::Reset { to: code(45) }),
            Err(Refusal::ResetForward {
                target: code(45),
                current: code(40)
            })
        );
        assert!(apply_operator_action(
            &at(40, Cancelled, 0),
            OperatorAction::Reset { to: code(0) }
        )
        .is_err());

        let (cancelled, cancel_event) =
            apply_operator_action(&at(40, Failed, 2), OperatorAction::Cancel).expect("cancel");
        assert_eq!(
            (cancelled.state, cancelled.status, cancelled.next_attempt_at),
            (code(40), Cancelled, None)
        );
        assert_eq!(cancel_event.kind, EventKind::Cancelled);
        for finished in [Completed, Cancelled] {
            assert_eq!(
                apply_operator_action(&at(100, finished, 0), OperatorAction::Cancel),
                Err(Refusal::BuildFinished { status: finished })
            );
        }
    }

    fn held(holder: &str, fence: i64, seconds_left: i64) -> Progress {
        Progress {
            lease: Some(Lease {
                stage: code(30),
                holder: holder.to_owned(),
                fence,
                expires_at: now() + chrono::Duration::seconds(seconds_left),
            }),
            ..at(30, InProgress, 0)
        }
    }

    fn from(run: Option<&str>, fence: Option<i64>, state: i64, status: ReportStatus) -> Report {
        Report {
            run: run.map(str::to_owned),
            fence,
            ..report(state, status)
        }
    }

    /// What a lease case expects: the lease afterwards `(holder, fence, seconds left)` and the
    /// events' kinds, or the refusal.
    #[derive(Debug)]
    enum LeaseExpect {
        Holds(Option<(&'static str, i64, i64)>, &'static [EventKind]),
        Unchanged,
        Refused(fn(&Refusal) -> bool),
    }

    #[test]
    fn every_lease_rule() {
        use EventKind as K;
        use LeaseExpect::{Holds, Refused, Unchanged};
        use ReportStatus as R;
        let cases: Vec<(&str, Progress, Report, LeaseExpect)> = vec![
            (
                "an identified in_progress claims the stage; the fence is its entry's seq",
                at(30, Running, 0),
                from(Some("a"), None, 30, R::InProgress),
                Holds(Some(("a", 8, 60)), &[K::InProgress]),
            ),
            (
                "an unidentified in_progress claims nothing (builds without leases work as before)",
                at(30, Running, 0),
                from(None, None, 30, R::InProgress),
                Holds(None, &[K::InProgress]),
            ),
            (
                "a claim on a later stage gets the fence after the skipped entries",
                at(20, Running, 0),
                from(Some("a"), None, 30, R::InProgress),
                Holds(
                    Some(("a", 10, 60)),
                    &[K::Skipped, K::Skipped, K::InProgress],
                ),
            ),
            (
                "the holder's repeated in_progress extends the lease and keeps the fence",
                held("a", 5, 10),
                from(Some("a"), None, 30, R::InProgress),
                Holds(Some(("a", 5, 60)), &[K::InProgress]),
            ),
            (
                "the holder may renew even after the lease lapsed, if nobody took over",
                held("a", 5, -30),
                from(Some("a"), None, 30, R::InProgress),
                Holds(Some(("a", 5, 60)), &[K::InProgress]),
            ),
            (
                "the holder's completion releases the lease",
                held("a", 5, 10),
                from(Some("a"), None, 30, R::Completed),
                Holds(None, &[K::Completed]),
            ),
            (
                "the holder's failure releases the lease",
                held("a", 5, 10),
                from(Some("a"), None, 30, R::Failed),
                Holds(None, &[K::Failed]),
            ),
            (
                "the current fence proves the holder, whatever the run says",
                held("a", 5, 10),
                from(None, Some(5), 30, R::Completed),
                Holds(None, &[K::Completed]),
            ),
            (
                "another run's in_progress on a held stage names the holder and the wait",
                held("a", 5, 10),
                from(Some("b"), None, 30, R::InProgress),
                Refused(
                    |r| matches!(r, Refusal::StageLeased { holder, fence: 5, wait_seconds: 10, .. } if holder == "a"),
                ),
            ),
            (
                "another run's completion on a held stage is refused",
                held("a", 5, 10),
                from(Some("b"), None, 30, R::Completed),
                Refused(|r| matches!(r, Refusal::StageLeased { .. })),
            ),
            (
                "another run's failure on a held stage is refused",
                held("a", 5, 10),
                from(Some("b"), None, 30, R::Failed),
                Refused(|r| matches!(r, Refusal::StageLeased { .. })),
            ),
            (
                "an unidentified report on a held stage is refused",
                held("a", 5, 10),
                from(None, None, 30, R::Completed),
                Refused(|r| matches!(r, Refusal::StageLeased { .. })),
            ),
            (
                "no run may jump past a held stage",
                held("a", 5, 10),
                from(Some("b"), None, 40, R::Completed),
                Refused(|r| matches!(r, Refusal::StageLeased { stage, .. } if stage.value() == 30)),
            ),
            (
                "an expired lease is taken over, and the history says so",
                held("a", 5, -1),
                from(Some("b"), None, 30, R::InProgress),
                Holds(Some(("b", 9, 60)), &[K::TakenOver, K::InProgress]),
            ),
            (
                "another run may complete a stage whose lease expired",
                held("a", 5, -1),
                from(Some("b"), None, 30, R::Completed),
                Holds(None, &[K::TakenOver, K::Completed]),
            ),
            (
                "a fence from a lease that was taken over is refused naming the new holder",
                held("b", 9, 50),
                from(Some("a"), Some(5), 30, R::Completed),
                Refused(
                    |r| matches!(r, Refusal::LeaseLost { fence: 5, holder: Some(h), current_fence: Some(9), .. } if h == "b"),
                ),
            ),
            (
                "a fence when no lease is held is refused",
                at(30, Running, 0),
                from(Some("a"), Some(5), 30, R::InProgress),
                Refused(|r| matches!(r, Refusal::LeaseLost { holder: None, .. })),
            ),
            (
                "a retried completion is success even with a fence that is gone",
                at(35, Running, 0),
                from(Some("a"), Some(5), 30, R::Completed),
                Unchanged,
            ),
        ];
        for (name, current, report, expect) in cases {
            match (expect, apply_report(&current, &report, &policy(), now())) {
                (Holds(lease, kinds), Ok(Transition::Applied { progress, events })) => {
                    let got = progress.lease.as_ref().map(|l| {
                        (
                            l.holder.as_str(),
                            l.fence,
                            (l.expires_at - now()).num_seconds(),
                        )
                    });
                    assert_eq!(got, lease, "{name}");
                    let got: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
                    assert_eq!(got, kinds, "{name}");
                    assert_eq!(
                        progress.last_seq,
                        current.last_seq + events.len() as i64,
                        "{name}: last_seq follows the entries"
                    );
                }
                (Unchanged, Ok(Transition::AlreadyDone { .. })) => {}
                (Refused(check), Err(refusal)) => assert!(check(&refusal), "{name}: {refusal:?}"),
                (expect, outcome) => panic!("{name}: expected {expect:?}, got {outcome:?}"),
            }
        }
    }

    #[test]
    fn a_takeover_entry_names_the_old_holder_and_the_new_run() {
        let Ok(Transition::Applied { events, .. }) = apply_report(
            &held("a", 5, -1),
            &from(Some("b"), None, 30, ReportStatus::InProgress),
            &policy(),
            now(),
        ) else {
            panic!("applied");
        };
        let note = events[0].note.as_deref().expect("a takeover note");
        assert!(
            note.contains("run `a` (lease 5) expired") && note.contains("run `b`"),
            "{note}"
        );
    }

    #[test]
    fn refusals_name_the_holder_and_when_the_lease_ends() {
        let refusal = apply_report(
            &held("ci/run/7", 5, 10),
            &from(Some("ci/run/8"), None, 30, ReportStatus::InProgress),
            &policy(),
            now(),
        )
        .expect_err("held");
        assert_eq!(
            refusal.to_string(),
            "stage 30 is held by run `ci/run/7` until 2027-01-15T08:00:10Z (10s left); wait for it, or report from that run"
        );
        let lost = apply_report(
            &held("ci/run/8", 9, 50),
            &from(Some("ci/run/7"), Some(5), 30, ReportStatus::Completed),
            &policy(),
            now(),
        )
        .expect_err("fenced");
        assert_eq!(
            lost.to_string(),
            "lease 5 on stage 30 is no longer held: run `ci/run/8` holds it now (lease 9); this run must stop reporting on it"
        );
    }

    #[test]
    fn a_completion_carries_its_outputs_on_its_entry_only() {
        let outputs = Outputs::try_from(std::collections::BTreeMap::from([(
            "ami_id".to_owned(),
            "ami-0abc".to_owned(),
        )]))
        .expect("valid");
        let Ok(Transition::Applied { events, .. }) = apply_report(
            &at(0, Running, 0),
            &Report {
                outputs: outputs.clone(),
                ..report(10, ReportStatus::Completed)
            },
            &policy(),
            now(),
        ) else {
            panic!("applied");
        };
        let carried: Vec<(i64, bool)> = events
            .iter()
            .map(|e| (i64::from(e.state), e.outputs.is_some()))
            .collect();
        assert_eq!(carried, [(0, false), (5, false), (10, true)]);
        assert_eq!(events[2].outputs.as_ref(), Some(&outputs));
    }

    #[test]
    fn heartbeats_extend_only_the_holders_lease() {
        let policy = policy();
        let renewed = |current: &Progress, run: Option<&str>, fence: Option<i64>| {
            renew_lease(current, code(30), run, fence, &policy, now())
        };
        let by_run = renewed(&held("a", 5, 10), Some("a"), None).expect("holder by name");
        assert_eq!(
            (by_run.fence, by_run.expires_at),
            (5, now() + chrono::Duration::seconds(60))
        );
        assert!(
            renewed(&held("a", 5, 10), None, Some(5)).is_ok(),
            "holder by fence"
        );
        assert!(
            renewed(&held("a", 5, -5), Some("a"), None).is_ok(),
            "a lapsed lease nobody took over is still the holder's"
        );
        assert!(matches!(
            renewed(&held("a", 5, 10), Some("b"), None),
            Err(Refusal::StageLeased { holder, .. }) if holder == "a"
        ));
        assert!(matches!(
            renewed(&held("a", 5, -5), Some("b"), None),
            Err(Refusal::NotLeased {
                holder: Some(_),
                ..
            })
        ));
        assert!(matches!(
            renewed(&held("b", 9, 10), Some("a"), Some(5)),
            Err(Refusal::LeaseLost {
                current_fence: Some(9),
                ..
            })
        ));
        assert!(matches!(
            renewed(&at(30, Running, 0), Some("a"), None),
            Err(Refusal::NotLeased { holder: None, .. })
        ));
        assert!(
            matches!(
                renew_lease(&held("a", 5, 10), code(35), Some("a"), None, &policy, now()),
                Err(Refusal::NotLeased { .. })
            ),
            "a heartbeat names the stage held"
        );
        assert!(release_lease(&held("a", 5, 10), code(30), Some("a"), None, now()).is_ok());
        assert!(release_lease(&held("a", 5, 10), code(30), Some("b"), None, now()).is_err());
    }

    #[test]
    fn operator_actions_end_any_lease() {
        for action in [
            OperatorAction::Reset { to: code(30) },
            OperatorAction::Cancel,
        ] {
            let (progress, _) = apply_operator_action(&held("a", 5, 10), action).expect("applies");
            assert_eq!(progress.lease, None, "{action:?}");
        }
    }

    // ----- retry policies: reopening stages for a retry (restart_from) -------------------

    /// Kickstart (5) retried 3 times with a long backoff; 15-45 twice, restarting from 10.
    fn stage_policy() -> BuildRetryPolicy {
        serde_json::from_str(
            r#"{"rules": [
                {"stages": 5, "max_retries": 3, "backoff_base_secs": 600, "backoff_cap_secs": 3600},
                {"stages": "15-45", "max_retries": 2, "backoff_base_secs": 100, "restart_from": 10}
            ]}"#,
        )
        .expect("valid policy")
    }

    /// A build in the pass that retries stage 25 from 10, at `state` with `failures`.
    fn in_pass(state: i64, status: BuildStatus, failures: u32) -> Progress {
        Progress {
            reopened_until: Some(code(25)),
            ..at(state, status, failures)
        }
    }

    /// What a case expects: (state, status, failures, reopened_until) and the entries' (state,
    /// kind), or a refusal.
    #[derive(Debug)]
    enum Pass {
        Moves(
            (i64, BuildStatus, u32, Option<i64>),
            &'static [(i64, EventKind)],
        ),
        Refused(fn(&Refusal) -> bool),
    }

    #[test]
    fn every_rule_of_a_reopened_pass() {
        use EventKind as K;
        use ReportStatus as R;
        let cases: Vec<(&str, Progress, Report, Pass)> = vec![
            (
                "a failure at a stage with restart_from reopens the build from that stage",
                at(25, InProgress, 0),
                report(25, R::Failed),
                Pass::Moves((10, Failed, 1, Some(25)), &[(25, K::Failed), (10, K::Reopened)]),
            ),
            (
                "a failure reached by a jump reopens too",
                at(20, Running, 0),
                report(25, R::Failed),
                Pass::Moves(
                    (10, Failed, 1, Some(25)),
                    &[(20, K::Skipped), (25, K::Failed), (10, K::Reopened)],
                ),
            ),
            (
                "the failure past the failed stage's max_retries blocks it there, reopening nothing",
                in_pass(25, InProgress, 2),
                report(25, R::Failed),
                Pass::Moves((25, Blocked, 3, Some(25)), &[(25, K::Failed)]),
            ),
            (
                "a stage without restart_from stays where it failed",
                at(5, Running, 0),
                report(5, R::Failed),
                Pass::Moves((5, Failed, 1, None), &[(5, K::Failed)]),
            ),
            (
                "a stage the policy does not name keeps the build's allowance",
                at(50, Failed, 3),
                report(50, R::Failed),
                Pass::Moves((50, Blocked, 4, None), &[(50, K::Failed)]),
            ),
            (
                "completing the first reopened stage keeps the failure count",
                in_pass(10, Failed, 1),
                report(10, R::Completed),
                Pass::Moves((15, Running, 1, Some(25)), &[(10, K::Completed)]),
            ),
            (
                "in_progress in the pass keeps the count",
                in_pass(20, Running, 1),
                report(20, R::InProgress),
                Pass::Moves((20, InProgress, 1, Some(25)), &[(20, K::InProgress)]),
            ),
            (
                "completing the failed stage ends the pass and resets the count",
                in_pass(25, InProgress, 1),
                report(25, R::Completed),
                Pass::Moves((30, Running, 0, None), &[(25, K::Completed)]),
            ),
            (
                "a jump inside the pass records the stages between as skipped and ends it at the failed stage",
                in_pass(15, Running, 1),
                report(25, R::Completed),
                Pass::Moves(
                    (30, Running, 0, None),
                    &[(15, K::Skipped), (20, K::Skipped), (25, K::Completed)],
                ),
            ),
            (
                "no completion may jump past the failed stage of the pass",
                in_pass(15, Running, 1),
                report(30, R::Completed),
                Pass::Refused(
                    |r| matches!(r, Refusal::FailedStageFirst { failed, stage } if failed.value() == 25 && stage.value() == 30),
                ),
            ),
            (
                "no attempt may start past the failed stage of the pass",
                in_pass(20, Running, 1),
                report(35, R::InProgress),
                Pass::Refused(|r| matches!(r, Refusal::FailedStageFirst { .. })),
            ),
            (
                "no report may jump past the first reopened stage while it waits",
                in_pass(10, Failed, 1),
                report(15, R::InProgress),
                Pass::Refused(
                    |r| matches!(r, Refusal::FailedStageFirst { failed, .. } if failed.value() == 10),
                ),
            ),
            (
                "a failure at a reopened stage counts for the failed stage and reopens again",
                in_pass(15, InProgress, 1),
                report(15, R::Failed),
                Pass::Moves((10, Failed, 2, Some(25)), &[(15, K::Failed), (10, K::Reopened)]),
            ),
            (
                "a failure in the pass past the failed stage's allowance blocks where it happened",
                in_pass(15, InProgress, 2),
                report(15, R::Failed),
                Pass::Moves((15, Blocked, 3, Some(25)), &[(15, K::Failed)]),
            ),
            (
                "a failure of the first reopened stage counts for the failed stage",
                in_pass(10, Running, 1),
                report(10, R::Failed),
                Pass::Moves((10, Failed, 2, Some(25)), &[(10, K::Failed), (10, K::Reopened)]),
            ),
        ];
        for (name, current, report, expect) in cases {
            let outcome = apply_report_under(&current, &report, &policy(), &stage_policy(), now());
            match (expect, outcome) {
                (Pass::Moves(expected, kinds), Ok(Transition::Applied { progress, events })) => {
                    let (state, status, failures, until) = expected;
                    assert_eq!(
                        (
                            progress.state,
                            progress.status,
                            progress.failures,
                            progress.reopened_until
                        ),
                        (code(state), status, failures, until.map(code)),
                        "{name}"
                    );
                    let got: Vec<(i64, EventKind)> = events
                        .iter()
                        .map(|e| (i64::from(e.state), e.kind))
                        .collect();
                    assert_eq!(got, kinds, "{name}");
                    assert_eq!(
                        progress.last_seq,
                        current.last_seq + events.len() as i64,
                        "{name}: last_seq follows the entries"
                    );
                }
                (Pass::Refused(check), Err(refusal)) => {
                    assert!(check(&refusal), "{name}: {refusal:?}")
                }
                (expect, outcome) => panic!("{name}: expected {expect:?}, got {outcome:?}"),
            }
        }
    }

    #[test]
    fn a_reopening_backs_off_as_the_failed_stage_and_says_why() {
        let Ok(Transition::Applied { progress, events }) = apply_report_under(
            &in_pass(10, Running, 1),
            &report(10, ReportStatus::Failed),
            &policy(),
            &stage_policy(),
            now(),
        ) else {
            panic!("applied");
        };
        // Stage 25's backoff (base 100 s, the build's cap 60 s): its second failure waits 60 s.
        assert_eq!(
            progress.next_attempt_at,
            Some(now() + chrono::Duration::seconds(60))
        );
        assert_eq!(
            events[1].note.as_deref(),
            Some("stage 10 failed during the retry of stage 25; the result of stage 25 does not survive without stage 10 (restart_from): stages 10 to 25 run again")
        );
        let Ok(Transition::Applied { progress, events }) = apply_report_under(
            &at(25, Running, 0),
            &report(25, ReportStatus::Failed),
            &policy(),
            &stage_policy(),
            now(),
        ) else {
            panic!("applied");
        };
        assert_eq!(
            progress.next_attempt_at,
            Some(now() + chrono::Duration::seconds(60)),
            "capped by the build's default cap, which the rule leaves"
        );
        assert_eq!(
            events[1].note.as_deref(),
            Some("stage 25 failed; the result of stage 25 does not survive without stage 10 (restart_from): stages 10 to 25 run again")
        );
        // Kickstart's own long backoff.
        let Ok(Transition::Applied { progress, .. }) = apply_report_under(
            &at(5, Running, 0),
            &report(5, ReportStatus::Failed),
            &policy(),
            &stage_policy(),
            now(),
        ) else {
            panic!("applied");
        };
        assert_eq!(
            progress.next_attempt_at,
            Some(now() + chrono::Duration::seconds(600))
        );
    }

    #[test]
    fn a_reopened_pass_cannot_loop_forever() {
        // Fail 25, run 10 again, fail 15, run 10 again, fail 25: the third failure of the pass
        // blocks the build, though no stage failed three times on its own.
        let mut build = at(25, Running, 0);
        let steps = [
            (25, ReportStatus::Failed),
            (10, ReportStatus::Completed),
            (15, ReportStatus::Failed),
            (10, ReportStatus::Completed),
        ];
        let later = now() + chrono::Duration::hours(1);
        for (stage, status) in &steps {
            match apply_report_under(
                &build,
                &report(*stage, *status),
                &policy(),
                &stage_policy(),
                later,
            ) {
                Ok(Transition::Applied { progress, .. }) => build = progress,
                other => panic!("{stage} {status}: {other:?}"),
            }
        }
        assert_eq!((build.state, build.failures), (code(15), 2));
        let Ok(Transition::Applied { progress, .. }) = apply_report_under(
            &build,
            &report(25, ReportStatus::Failed),
            &policy(),
            &stage_policy(),
            later,
        ) else {
            panic!("applied");
        };
        assert_eq!(
            (progress.state, progress.status, progress.failures),
            (code(25), Blocked, 3)
        );
    }

    #[test]
    fn an_operator_retry_of_a_stage_with_restart_from_reopens_the_build() {
        let blocked = in_pass(25, Blocked, 3);
        let (progress, events) =
            apply_operator_action_under(&blocked, OperatorAction::Retry, &stage_policy())
                .expect("retried");
        assert_eq!(
            (
                progress.state,
                progress.status,
                progress.failures,
                progress.reopened_until
            ),
            (code(10), Running, 0, Some(code(25)))
        );
        let kinds: Vec<(i64, EventKind)> = events
            .iter()
            .map(|e| (i64::from(e.state), e.kind))
            .collect();
        assert_eq!(kinds, [(25, EventKind::Retried), (10, EventKind::Reopened)]);
        assert_eq!(progress.last_seq, blocked.last_seq + 2);
        // Blocked inside the pass (at 15): the retry is still stage 25's, from 10.
        let (progress, _) = apply_operator_action_under(
            &in_pass(15, Blocked, 3),
            OperatorAction::Retry,
            &stage_policy(),
        )
        .expect("retried");
        assert_eq!(
            (progress.state, progress.reopened_until),
            (code(10), Some(code(25)))
        );
        // A stage without restart_from is retried where it is.
        let (progress, events) =
            apply_operator_action_under(&at(5, Blocked, 4), OperatorAction::Retry, &stage_policy())
                .expect("retried");
        assert_eq!(
            (progress.state, progress.reopened_until, events.len()),
            (code(5), None, 1)
        );
        // A reset ends a pass: the operator chose where the build goes.
        let (progress, _) = apply_operator_action_under(
            &in_pass(15, Running, 1),
            OperatorAction::Reset { to: code(10) },
            &stage_policy(),
        )
        .expect("reset");
        assert_eq!(
            (progress.state, progress.failures, progress.reopened_until),
            (code(10), 0, None)
        );
    }

    #[test]
    fn a_reopening_supersedes_the_outputs_of_the_reopened_stages() {
        let mut stages = StageOutputs::default();
        stages.apply(&[
            output_event(5, EventKind::Completed, Some(outputs(&[("ks", "1")]))),
            output_event(
                10,
                EventKind::Completed,
                Some(outputs(&[("ami_id", "ami-A")])),
            ),
            output_event(
                20,
                EventKind::Completed,
                Some(outputs(&[("vm_ip", "10.0.0.9")])),
            ),
        ]);
        let reopened = [
            output_event(25, EventKind::Failed, None),
            output_event(10, EventKind::Reopened, None),
        ];
        assert!(StageOutputs::may_change(&reopened, stages.is_empty()));
        assert!(stages.apply(&reopened));
        let merged = stages.merged();
        assert_eq!(merged.keys().collect::<Vec<_>>(), ["ks"]);
    }

    // ----- what events do to a build's per-stage outputs ---------------------------------

    use crate::outputs::StageOutput;

    fn outputs(pairs: &[(&str, &str)]) -> Outputs {
        let map: std::collections::BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Outputs::try_from(map).expect("valid outputs")
    }

    fn output_event(state: i64, kind: EventKind, outputs: Option<Outputs>) -> Event {
        Event {
            state: code(state),
            kind,
            attempt: None,
            note: None,
            outputs,
        }
    }

    #[test]
    fn the_merged_view_lets_a_later_stage_win_and_names_the_stage() {
        let mut stages = StageOutputs::default();
        stages.apply(&[
            output_event(
                10,
                EventKind::Completed,
                Some(outputs(&[("ami_id", "ami-A"), ("region", "eu")])),
            ),
            output_event(15, EventKind::Skipped, None),
            output_event(
                20,
                EventKind::Completed,
                Some(outputs(&[("ami_id", "ami-B")])),
            ),
        ]);
        let merged = stages.merged();
        assert_eq!(
            merged.get("ami_id"),
            Some(&StageOutput {
                value: "ami-B".into(),
                stage: code(20)
            })
        );
        assert_eq!(
            merged.get("region"),
            Some(&StageOutput {
                value: "eu".into(),
                stage: code(10)
            })
        );
    }

    #[test]
    fn a_reset_drops_the_outputs_of_the_stages_it_reopens() {
        let mut stages = StageOutputs::default();
        stages.apply(&[
            output_event(
                10,
                EventKind::Completed,
                Some(outputs(&[("ami_id", "ami-A")])),
            ),
            output_event(
                20,
                EventKind::Completed,
                Some(outputs(&[("ami_id", "ami-B"), ("ip", "10.0.0.1")])),
            ),
        ]);
        assert!(stages.apply(&[output_event(15, EventKind::Reset, None)]));
        let merged = stages.merged();
        // Stage 10's value comes back: only stage 20 was reopened.
        assert_eq!(
            merged.get("ami_id").map(|o| o.value.as_str()),
            Some("ami-A")
        );
        assert_eq!(merged.get("ip"), None);
        // A reset to the stage itself reopens it too.
        assert!(stages.apply(&[output_event(10, EventKind::Reset, None)]));
        assert!(stages.is_empty());
        // A stage completing again replaces its outputs, even with none.
        stages.apply(&[output_event(
            10,
            EventKind::Completed,
            Some(outputs(&[("a", "1")])),
        )]);
        stages.apply(&[output_event(10, EventKind::Completed, None)]);
        assert!(stages.is_empty());
    }

    #[test]
    fn may_change_is_false_only_where_apply_changes_nothing() {
        let with_outputs = || Some(outputs(&[("ami_id", "ami-A")]));
        let stored_10 = || {
            let mut stages = StageOutputs::default();
            stages.apply(&[output_event(10, EventKind::Completed, with_outputs())]);
            stages
        };
        // (events, stored outputs, may_change)
        let cases: Vec<(Vec<Event>, StageOutputs, bool)> = vec![
            (
                vec![output_event(15, EventKind::InProgress, None)],
                stored_10(),
                false,
            ),
            (
                vec![output_event(15, EventKind::Failed, None)],
                stored_10(),
                false,
            ),
            (
                vec![output_event(15, EventKind::Skipped, None)],
                stored_10(),
                false,
            ),
            (
                vec![output_event(15, EventKind::Retried, None)],
                stored_10(),
                false,
            ),
            (
                vec![output_event(15, EventKind::TakenOver, None)],
                stored_10(),
                false,
            ),
            (
                vec![output_event(15, EventKind::Completed, None)],
                StageOutputs::default(),
                false,
            ),
            (
                vec![output_event(5, EventKind::Reset, None)],
                StageOutputs::default(),
                false,
            ),
            (
                vec![output_event(15, EventKind::Completed, with_outputs())],
                StageOutputs::default(),
                true,
            ),
            // Conservative: a completion or a reset may touch outputs that are stored.
            (
                vec![output_event(15, EventKind::Completed, None)],
                stored_10(),
                true,
            ),
            (
                vec![output_event(20, EventKind::Reset, None)],
                stored_10(),
                true,
            ),
            (
                vec![output_event(5, EventKind::Reset, None)],
                stored_10(),
                true,
            ),
            (
                vec![
                    output_event(15, EventKind::Skipped, None),
                    output_event(20, EventKind::Completed, with_outputs()),
                ],
                StageOutputs::default(),
                true,
            ),
        ];
        for (events, stored, expected) in cases {
            let may_change = StageOutputs::may_change(&events, stored.is_empty());
            assert_eq!(may_change, expected, "{events:?} on {stored:?}");
            let mut after = stored.clone();
            if !after.apply(&events) {
                continue;
            }
            assert!(may_change, "{events:?} changed {stored:?} unannounced");
        }
    }
}
