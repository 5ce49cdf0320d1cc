//! The sentences a change is told in: the one-line note of a report's answer
//! (`TransitionResult::note`) and the messages the history gives entries nobody wrote a message
//! for (stages skipped by a jump, stage 0 completed by one). Pure, so every store and front end
//! says the same thing, and tested here rather than through a database.

use crate::fields::BuildId;
use crate::rules::{Event, Progress};
use crate::state::StateCode;
use crate::status::{BuildStatus, EventKind};

/// The history message of a stage recorded as skipped by a later report.
pub const SKIPPED_BY_A_LATER_REPORT: &str = "not used by this pipeline: skipped by a later report";

/// The history message of stage 0 when a jump completes it.
pub const TRIGGERED_AT_CREATION: &str = "triggered when the build was created";

/// The message of the `index`-th of a change's `count` history entries: the rules' own note
/// when they gave one; otherwise skipped stages and stage 0 completed by a jump get a sentence
/// of their own, and the reporter's `message` goes on the last entry (the one the report is
/// about).
pub fn entry_message(
    event: &Event,
    index: usize,
    count: usize,
    message: Option<&str>,
) -> Option<String> {
    let is_last = index + 1 == count;
    match (event.kind, is_last) {
        _ if event.note.is_some() => event.note.clone(),
        (EventKind::Skipped, _) => Some(SKIPPED_BY_A_LATER_REPORT.to_owned()),
        // Only a jump completes stage 0 without it being the reported stage.
        (EventKind::Completed, false) if event.state == StateCode::TRIGGERED => {
            Some(TRIGGERED_AT_CREATION.to_owned())
        }
        (_, true) => message.map(str::to_owned),
        (_, false) => None,
    }
}

/// The note of a report that changed nothing: `stage` was already completed (`build`: where
/// the build is).
pub fn already_completed(stage: StateCode, build: &Progress) -> String {
    if build.status == BuildStatus::Completed {
        format!("stage {stage} was already completed; the build is completed")
    } else {
        format!(
            "stage {stage} was already completed; the build is at {}",
            build.state
        )
    }
}

/// One sentence on what a change (its `events`) did to a build: `build` is where it stands
/// after the change, `max_retries` its allowance of failures.
pub fn describe_transition(events: &[Event], build: &Progress, max_retries: u32) -> String {
    use EventKind as K;
    let skipped = events.iter().filter(|e| e.kind == K::Skipped).count();
    let skipped = if skipped > 0 {
        format!(" ({skipped} stage(s) recorded as skipped)")
    } else {
        String::new()
    };
    let Some(last) = events.last() else {
        return "nothing changed".to_owned();
    };
    let what = match (last.kind, build.status) {
        (K::Completed, BuildStatus::Completed) => {
            "stage 100 completed: the build is completed".to_owned()
        }
        (K::Completed, _) => format!(
            "stage {} completed; next stage is {}",
            last.state, build.state
        ),
        (K::InProgress, _) => format!("stage {} is in progress", last.state),
        (K::Failed, BuildStatus::Blocked) => format!(
            "stage {} failed {} times, more than the {} allowed retries: the build is blocked",
            last.state, build.failures, max_retries
        ),
        (K::Failed, _) => format!(
            "stage {} failed ({} of {} retries used); it will be retried",
            last.state, build.failures, max_retries
        ),
        (K::Reopened, BuildStatus::Failed) => format!(
            "stage {} failed ({} of {} retries used); stages {} to {} will run again",
            events
                .iter()
                .rev()
                .find(|e| e.kind == K::Failed)
                .map_or(last.state, |e| e.state),
            build.failures,
            max_retries,
            last.state,
            build.retried_stage()
        ),
        (K::Reopened, _) => format!(
            "stage {} will be retried: stages {} to {} run again",
            build.retried_stage(),
            last.state,
            build.retried_stage()
        ),
        (K::Retried, _) => format!("stage {} will be retried", last.state),
        (K::RetryDue, _) => last
            .note
            .clone()
            .unwrap_or_else(|| format!("a retry of stage {} is due", last.state)),
        (K::Reset, _) => format!("the build was reset to stage {}", last.state),
        (K::Cancelled, _) => "the build was cancelled".to_owned(),
        (kind, _) => format!("recorded {kind} at stage {}", last.state),
    };
    what + &skipped
}

/// What to do with a build that is blocked at `state`: the three operator commands, each
/// with its arguments, for an alert or a summary to show as is.
pub fn blocked_next_step(id: &BuildId, state: StateCode) -> String {
    format!(
        "build `{id}` is blocked at stage {state} and needs a person: run it again with \
         `bldst build retry {id} --reason TEXT`, go back with \
         `bldst build reset {id} --state CODE --reason TEXT` (CODE at most {state}), or give \
         it up with `bldst build cancel {id} --reason TEXT` (admin token)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(value: i64) -> StateCode {
        StateCode::new(value).expect("valid code")
    }

    fn at(state: i64, status: BuildStatus, failures: u32) -> Progress {
        Progress {
            state: code(state),
            status,
            failures,
            next_attempt_at: None,
            lease: None,
            last_seq: 1,
            retry_due_seq: None,
            reopened_until: None,
        }
    }

    fn event(state: i64, kind: EventKind) -> Event {
        Event::plain(code(state), kind)
    }

    #[test]
    fn a_jump_names_the_next_stage_and_counts_the_skipped_ones() {
        let events = [
            event(0, EventKind::Completed),
            event(5, EventKind::Skipped),
            event(10, EventKind::Skipped),
            event(15, EventKind::Completed),
        ];
        assert_eq!(
            describe_transition(&events, &at(20, BuildStatus::Running, 0), 3),
            "stage 15 completed; next stage is 20 (2 stage(s) recorded as skipped)"
        );
        let messages: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(index, event)| entry_message(event, index, events.len(), Some("ok")))
            .collect();
        assert_eq!(
            messages,
            [
                Some(TRIGGERED_AT_CREATION.to_owned()),
                Some(SKIPPED_BY_A_LATER_REPORT.to_owned()),
                Some(SKIPPED_BY_A_LATER_REPORT.to_owned()),
                Some("ok".to_owned())
            ]
        );
    }

    #[test]
    fn failures_say_how_many_retries_are_used_or_that_the_build_is_blocked() {
        let failed = [event(10, EventKind::Failed)];
        assert_eq!(
            describe_transition(&failed, &at(10, BuildStatus::Failed, 2), 3),
            "stage 10 failed (2 of 3 retries used); it will be retried"
        );
        assert_eq!(
            describe_transition(&failed, &at(10, BuildStatus::Blocked, 4), 3),
            "stage 10 failed 4 times, more than the 3 allowed retries: the build is blocked"
        );
    }

    #[test]
    fn a_reopening_names_the_failed_stage_and_the_stages_that_run_again() {
        let in_pass = |status, failures| Progress {
            reopened_until: Some(code(25)),
            ..at(10, status, failures)
        };
        assert_eq!(
            describe_transition(
                &[event(25, EventKind::Failed), event(10, EventKind::Reopened)],
                &in_pass(BuildStatus::Failed, 1),
                2
            ),
            "stage 25 failed (1 of 2 retries used); stages 10 to 25 will run again"
        );
        assert_eq!(
            describe_transition(
                &[
                    event(25, EventKind::Retried),
                    event(10, EventKind::Reopened)
                ],
                &in_pass(BuildStatus::Running, 0),
                2
            ),
            "stage 25 will be retried: stages 10 to 25 run again"
        );
    }

    #[test]
    fn the_last_stage_and_operator_actions_have_their_own_sentences() {
        let cases = [
            (
                event(100, EventKind::Completed),
                BuildStatus::Completed,
                "stage 100 completed: the build is completed",
            ),
            (
                event(10, EventKind::InProgress),
                BuildStatus::InProgress,
                "stage 10 is in progress",
            ),
            (
                event(10, EventKind::Retried),
                BuildStatus::Running,
                "stage 10 will be retried",
            ),
            (
                event(5, EventKind::Reset),
                BuildStatus::Running,
                "the build was reset to stage 5",
            ),
            (
                event(5, EventKind::Cancelled),
                BuildStatus::Cancelled,
                "the build was cancelled",
            ),
            (
                Event {
                    note: Some("retry 1 of 3 of stage 15 is due".to_owned()),
                    ..event(15, EventKind::RetryDue)
                },
                BuildStatus::Failed,
                "retry 1 of 3 of stage 15 is due",
            ),
        ];
        for (event, status, sentence) in cases {
            let state = i64::from(event.state);
            assert_eq!(
                describe_transition(&[event], &at(state, status, 0), 3),
                sentence
            );
        }
        assert_eq!(
            describe_transition(&[], &at(0, BuildStatus::Running, 0), 3),
            "nothing changed"
        );
    }

    #[test]
    fn a_message_goes_on_the_last_entry_unless_the_rules_wrote_one() {
        let mut takeover = event(10, EventKind::TakenOver);
        takeover.note = Some("the lease of run `a` expired".to_owned());
        let started = event(10, EventKind::InProgress);
        assert_eq!(
            entry_message(&takeover, 0, 2, Some("mine")),
            Some("the lease of run `a` expired".to_owned())
        );
        assert_eq!(
            entry_message(&started, 1, 2, Some("mine")),
            Some("mine".to_owned())
        );
        assert_eq!(entry_message(&started, 0, 2, Some("mine")), None);
    }

    #[test]
    fn a_repeated_completion_says_where_the_build_is() {
        assert_eq!(
            already_completed(code(10), &at(25, BuildStatus::Running, 0)),
            "stage 10 was already completed; the build is at 25"
        );
        assert_eq!(
            already_completed(code(100), &at(100, BuildStatus::Completed, 0)),
            "stage 100 was already completed; the build is completed"
        );
    }

    #[test]
    fn a_blocked_build_names_the_three_commands_with_its_id_and_stage() {
        let id: BuildId = "b_abc".parse().expect("id");
        assert_eq!(
            blocked_next_step(&id, code(15)),
            "build `b_abc` is blocked at stage 15 and needs a person: run it again with \
             `bldst build retry b_abc --reason TEXT`, go back with \
             `bldst build reset b_abc --state CODE --reason TEXT` (CODE at most 15), or give it \
             up with `bldst build cancel b_abc --reason TEXT` (admin token)"
        );
    }
}
