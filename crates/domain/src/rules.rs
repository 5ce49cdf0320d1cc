//! The transition rules of PRODUCT.md: what a report or an operator action does to a build.
//!
//! Everything here is pure: the caller passes the build's current [`Progress`], the request and
//! the clock, and gets back the new progress plus the history [`Event`]s to append, or the
//! [`Refusal`] that explains why nothing may change. The server runs these inside the
//! transaction that holds the build's row lock; no front end re-implements them.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::state::StateCode;
use crate::status::{BuildStatus, EventKind, ReportStatus};

/// The part of a build the rules read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub state: StateCode,
    pub status: BuildStatus,
    /// Failures counted at `state` since it was last reached, retried or reset.
    pub failures: u32,
    /// When `status` is `failed`: the earliest time the stage may be attempted again.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

impl Progress {
    /// A build that was just triggered: state 0, `running`.
    pub fn started() -> Self {
        Progress {
            state: StateCode::TRIGGERED,
            status: BuildStatus::Running,
            failures: 0,
            next_attempt_at: None,
        }
    }
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
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(3600),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub state: StateCode,
    pub status: ReportStatus,
    /// Compare-and-set: the state the client believes the build is at.
    pub expected_state: Option<StateCode>,
}

/// One history entry the rules ask the store to append (message and reporter are the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub state: StateCode,
    pub kind: EventKind,
    /// The attempt at `state` this event is about (1 for the first run); `None` for skipped
    /// stages, stage 0 completed by a jump, and operator actions.
    pub attempt: Option<u32>,
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
}

/// Applies a client's report to a build at `current`, as of `now`.
pub fn apply_report(
    current: &Progress,
    report: &Report,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<Transition, Refusal> {
    let stage = report.state;
    if current.status == BuildStatus::Cancelled {
        return Err(Refusal::BuildFinished {
            status: current.status,
        });
    }
    // A completion that is already in the past is the retried CI step: it must succeed and
    // change nothing, whatever the client expected the state to be.
    if report.status == ReportStatus::Completed
        && (stage < current.state || current.status == BuildStatus::Completed)
    {
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
    if let Some(expected) = report.expected_state {
        if expected != current.state {
            return Err(Refusal::StaleExpectedState {
                expected,
                actual: current.state,
            });
        }
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
    if report.status != ReportStatus::Completed && stage == current.state {
        if let Some(wait_seconds) = backoff_remaining(current, now) {
            return Err(Refusal::RetryTooSoon {
                state: stage,
                wait_seconds,
            });
        }
    }

    // Stage 0 is "triggered": creating the build did it, so a pipeline whose first report is a
    // later stage completed it rather than skipped it.
    let mut events: Vec<Event> = current
        .state
        .up_to(stage)
        .map(|passed| Event {
            state: passed,
            kind: if passed == StateCode::TRIGGERED {
                EventKind::Completed
            } else {
                EventKind::Skipped
            },
            attempt: None,
        })
        .collect();
    // Failures count per stage: a jump lands on a stage that has not failed yet.
    let failures_so_far = if stage == current.state {
        current.failures
    } else {
        0
    };
    let attempt = Some(failures_so_far + 1);
    let progress = match report.status {
        ReportStatus::Completed => {
            events.push(Event {
                state: stage,
                kind: EventKind::Completed,
                attempt,
            });
            match stage.next() {
                Some(next) => Progress {
                    state: next,
                    status: BuildStatus::Running,
                    failures: 0,
                    next_attempt_at: None,
                },
                None => Progress {
                    state: stage,
                    status: BuildStatus::Completed,
                    failures: 0,
                    next_attempt_at: None,
                },
            }
        }
        ReportStatus::InProgress => {
            events.push(Event {
                state: stage,
                kind: EventKind::InProgress,
                attempt,
            });
            Progress {
                state: stage,
                status: BuildStatus::InProgress,
                failures: failures_so_far,
                next_attempt_at: None,
            }
        }
        ReportStatus::Failed => {
            events.push(Event {
                state: stage,
                kind: EventKind::Failed,
                attempt,
            });
            let failures = failures_so_far + 1;
            if failures > policy.max_retries {
                Progress {
                    state: stage,
                    status: BuildStatus::Blocked,
                    failures,
                    next_attempt_at: None,
                }
            } else {
                let wait = chrono::Duration::from_std(policy.backoff(failures))
                    .unwrap_or(chrono::Duration::MAX);
                Progress {
                    state: stage,
                    status: BuildStatus::Failed,
                    failures,
                    next_attempt_at: now.checked_add_signed(wait),
                }
            }
        }
    };
    Ok(Transition::Applied { progress, events })
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

/// Applies an operator action to a build at `current`.
pub fn apply_operator_action(
    current: &Progress,
    action: OperatorAction,
) -> Result<(Progress, Event), Refusal> {
    let running_at = |state| Progress {
        state,
        status: BuildStatus::Running,
        failures: 0,
        next_attempt_at: None,
    };
    match action {
        OperatorAction::Retry => match current.status {
            BuildStatus::Blocked | BuildStatus::Failed => Ok((
                running_at(current.state),
                Event {
                    state: current.state,
                    kind: EventKind::Retried,
                    attempt: None,
                },
            )),
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
            Ok((
                running_at(to),
                Event {
                    state: to,
                    kind: EventKind::Reset,
                    attempt: None,
                },
            ))
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
                    ..*current
                },
                Event {
                    state: current.state,
                    kind: EventKind::Cancelled,
                    attempt: None,
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BuildStatus::{Blocked, Cancelled, Completed, Failed, InProgress, Running};

    fn code(n: i64) -> StateCode {
        StateCode::new(n).expect("test codes are valid")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
    }

    fn at(state: i64, status: BuildStatus, failures: u32) -> Progress {
        Progress {
            state: code(state),
            status,
            failures,
            next_attempt_at: None,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(60),
        }
    }

    fn report(state: i64, status: ReportStatus) -> Report {
        Report {
            state: code(state),
            status,
            expected_state: None,
        }
    }

    fn event(state: i64, kind: EventKind, attempt: Option<u32>) -> Event {
        Event {
            state: code(state),
            kind,
            attempt,
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
            ..stale
        };
        assert!(apply_report(&current, &fresh, &policy(), now()).is_ok());
        // A retried completion is success even with the stale expectation it was sent with.
        let retried = Report {
            state: code(15),
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
            (at(25, Running, 0), event(25, EventKind::Retried, None))
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
            (at(40, Running, 0), event(40, EventKind::Reset, None))
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
}
