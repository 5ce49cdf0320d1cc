//! Retries that happen by themselves (docs/rules.md, "Retries"): is a failed stage's next
//! attempt due, and what the history records when it is.
//!
//! Pure like the other rules: the server's scheduler asks [`record_retry_due`] about each
//! failed build it finds past its backoff, under the build's row lock, and appends the one
//! `retry_due` entry it answers with. The rule reads the build's `retry_due_seq`, which that
//! entry sets and every other change clears, so a failure that already has its entry gets no
//! second one: exactly one per failure, however many server processes ask, and none for a
//! build that is blocked, cancelled, completed, or moving again.

use chrono::{DateTime, Utc};

use crate::rules::{Event, Progress};
use crate::state::StateCode;
use crate::status::{BuildStatus, EventKind};

/// A retry whose time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueRetry {
    /// The stage that runs again: the failed one, or the first stage of a reopened pass.
    pub stage: StateCode,
    /// The failed stage this is a retry of ([`Progress::retried_stage`]).
    pub retried: StateCode,
    /// The attempt now due at `stage` (the failures so far, plus one).
    pub attempt: u32,
    /// Which retry this is: the failures so far, of the build's `max_retries`.
    pub retry: u32,
    pub max_retries: u32,
}

impl DueRetry {
    /// The history message of its `retry_due` entry, e.g. "retry 2 of 3 of stage 15 is due",
    /// or "retry 1 of 2 of stage 25 is due: stages 10 to 25 run again" in a reopened pass.
    pub fn message(&self) -> String {
        let due = format!(
            "retry {} of {} of stage {} is due",
            self.retry, self.max_retries, self.retried
        );
        if self.stage == self.retried {
            due
        } else {
            format!("{due}: stages {} to {} run again", self.stage, self.retried)
        }
    }
}

/// The retry due on a build at `current` as of `now`, if any: the build is `failed`, its
/// backoff has elapsed (`next_attempt_at <= now`), it has retries left (`failures <=
/// max_retries`, the allowance of the build's [`Progress::retried_stage`] under its retry
/// policy), and this failure has no `retry_due` entry yet.
/// Never for `blocked`, `cancelled`, `completed`, `running` or `in_progress` builds.
pub fn retry_due(current: &Progress, max_retries: u32, now: DateTime<Utc>) -> Option<DueRetry> {
    if current.status != BuildStatus::Failed || current.retry_due_seq.is_some() {
        return None;
    }
    // A failed build always has failures; more than allowed would have blocked it. Both are
    // checked anyway: the rule must not depend on the store having kept them consistent.
    if current.failures == 0 || current.failures > max_retries {
        return None;
    }
    // No backoff time (a wait too long to represent was never set) reads as elapsed, as the
    // gate reads it.
    if current.next_attempt_at.is_some_and(|at| at > now) {
        return None;
    }
    Some(DueRetry {
        stage: current.state,
        retried: current.retried_stage(),
        attempt: current.failures + 1,
        retry: current.failures,
        max_retries,
    })
}

/// What recording a due retry does to a build at `current`: the build stays `failed` at the
/// stage, with the new entry's sequence number as its `retry_due_seq`, and one `retry_due`
/// [`Event`] (the attempt now due, the message of [`DueRetry::message`]) is appended. `None`
/// when no retry is due ([`retry_due`]): nothing changes.
pub fn record_retry_due(
    current: &Progress,
    max_retries: u32,
    now: DateTime<Utc>,
) -> Option<(Progress, Event)> {
    let due = retry_due(current, max_retries, now)?;
    let seq = current.last_seq + 1;
    Some((
        Progress {
            last_seq: seq,
            retry_due_seq: Some(seq),
            ..current.clone()
        },
        Event {
            attempt: Some(due.attempt),
            note: Some(due.message()),
            ..Event::plain(due.stage, EventKind::RetryDue)
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::{code, now};
    use crate::rules::{apply_operator_action, apply_report, OperatorAction, Report, RetryPolicy};
    use crate::status::ReportStatus;
    use crate::Transition;
    use std::time::Duration;
    use BuildStatus::{Blocked, Cancelled, Completed, Failed, InProgress, Running};

    /// A build at stage 15 with `failures`, whose backoff ends `ends_in` seconds from now.
    fn at(status: BuildStatus, failures: u32, ends_in: Option<i64>) -> Progress {
        Progress {
            state: code(15),
            status,
            failures,
            next_attempt_at: ends_in.map(|secs| now() + chrono::Duration::seconds(secs)),
            lease: None,
            last_seq: 6,
            retry_due_seq: None,
            reopened_until: None,
        }
    }

    /// A case: its name, the build, its `max_retries`, and the `(retry, attempt)` due if any.
    type Case = (&'static str, Progress, u32, Option<(u32, u32)>);

    #[test]
    fn when_a_retry_is_due_and_which() {
        let announced = Progress {
            retry_due_seq: Some(6),
            ..at(Failed, 1, Some(-5))
        };
        let cases: Vec<Case> = vec![
            (
                "a first failure past its backoff: retry 1, attempt 2",
                at(Failed, 1, Some(-5)),
                3,
                Some((1, 2)),
            ),
            (
                "the backoff ends exactly now: due",
                at(Failed, 2, Some(0)),
                3,
                Some((2, 3)),
            ),
            (
                "the last allowed retry is due",
                at(Failed, 3, Some(-1)),
                3,
                Some((3, 4)),
            ),
            (
                "inside the backoff: not yet",
                at(Failed, 1, Some(1)),
                3,
                None,
            ),
            (
                "a failure that already has its retry_due: never a second",
                announced,
                3,
                None,
            ),
            (
                "no backoff time reads as elapsed, as the gate reads it",
                at(Failed, 1, None),
                3,
                Some((1, 2)),
            ),
            (
                "more failures than the build allows: none (it is blocked by then)",
                at(Failed, 2, Some(-1)),
                1,
                None,
            ),
            (
                "a failed build with no failures counted is not a retry",
                at(Failed, 0, Some(-1)),
                3,
                None,
            ),
            ("blocked waits for a person", at(Blocked, 4, None), 3, None),
            ("cancelled: never", at(Cancelled, 1, Some(-1)), 3, None),
            ("completed: never", at(Completed, 0, None), 3, None),
            (
                "running (an operator retried it): nothing to announce",
                at(Running, 0, None),
                3,
                None,
            ),
            (
                "in progress (a run took the retry): nothing to announce",
                at(InProgress, 1, None),
                3,
                None,
            ),
        ];
        for (name, progress, max_retries, expected) in cases {
            let due = retry_due(&progress, max_retries, now());
            assert_eq!(due.map(|due| (due.retry, due.attempt)), expected, "{name}");
            if let Some(due) = due {
                assert_eq!(due.stage, code(15), "{name}");
                assert_eq!(due.max_retries, max_retries, "{name}");
            }
        }
    }

    #[test]
    fn recording_keeps_the_build_failed_at_its_stage_and_appends_one_entry() {
        let failed = at(Failed, 2, Some(-1));
        let (progress, event) = record_retry_due(&failed, 3, now()).expect("due");
        assert_eq!(
            progress,
            Progress {
                last_seq: 7,
                retry_due_seq: Some(7),
                ..failed.clone()
            }
        );
        assert_eq!(
            (event.state, event.kind, event.attempt),
            (code(15), EventKind::RetryDue, Some(3))
        );
        assert_eq!(
            event.note.as_deref(),
            Some("retry 2 of 3 of stage 15 is due")
        );
        assert_eq!(
            record_retry_due(&progress, 3, now()),
            None,
            "recorded once: asking again changes nothing"
        );
        assert_eq!(record_retry_due(&at(Failed, 2, Some(9)), 3, now()), None);
    }

    #[test]
    fn a_reopened_pass_is_announced_as_a_retry_of_its_failed_stage() {
        let reopened = Progress {
            state: code(10),
            reopened_until: Some(code(25)),
            ..at(Failed, 1, Some(-1))
        };
        let (progress, event) = record_retry_due(&reopened, 2, now()).expect("due");
        assert_eq!((progress.state, progress.status), (code(10), Failed));
        assert_eq!((event.state, event.attempt), (code(10), Some(2)));
        assert_eq!(
            event.note.as_deref(),
            Some("retry 1 of 2 of stage 25 is due: stages 10 to 25 run again")
        );
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 2,
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(60),
            lease_duration: Duration::from_secs(60),
        }
    }

    fn reported(current: &Progress, status: ReportStatus, at: DateTime<Utc>) -> Progress {
        match apply_report(current, &Report::new(code(15), status), &policy(), at) {
            Ok(Transition::Applied { progress, .. }) => progress,
            other => panic!("{status} on {current:?}: {other:?}"),
        }
    }

    #[test]
    fn each_failure_gets_its_own_retry_and_the_one_past_the_allowance_none() {
        let policy = policy();
        let later = |secs| now() + chrono::Duration::seconds(secs);
        let mut build = Progress {
            state: code(15),
            ..at(Running, 0, None)
        };
        let mut kinds = Vec::new();
        for round in 0..3 {
            build = reported(&build, ReportStatus::InProgress, later(100 * round));
            build = reported(&build, ReportStatus::Failed, later(100 * round + 1));
            kinds.push(EventKind::Failed);
            if let Some((next, event)) =
                record_retry_due(&build, policy.max_retries, later(100 * round + 99))
            {
                kinds.push(event.kind);
                build = next;
            }
        }
        assert_eq!(
            kinds,
            [
                EventKind::Failed,
                EventKind::RetryDue,
                EventKind::Failed,
                EventKind::RetryDue,
                EventKind::Failed,
            ]
        );
        assert_eq!(build.status, Blocked);
        assert_eq!(
            record_retry_due(&build, policy.max_retries, later(10_000)),
            None
        );
    }

    #[test]
    fn every_other_change_clears_the_announcement() {
        let announced = record_retry_due(&at(Failed, 1, Some(-1)), 3, now())
            .expect("due")
            .0;
        let in_progress = reported(&announced, ReportStatus::InProgress, now());
        let failed_again = reported(&announced, ReportStatus::Failed, now());
        let completed = reported(&announced, ReportStatus::Completed, now());
        let (retried, _) = apply_operator_action(&announced, OperatorAction::Retry).expect("retry");
        let (cancelled, _) =
            apply_operator_action(&announced, OperatorAction::Cancel).expect("cancel");
        for after in [in_progress, failed_again, completed, retried, cancelled] {
            assert_eq!(after.retry_due_seq, None, "{after:?}");
        }
    }
}
