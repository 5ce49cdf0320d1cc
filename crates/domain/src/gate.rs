//! Gating: should a pipeline run stage S of a build now? One answer for every front end.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::Progress;
use crate::state::StateCode;
use crate::status::BuildStatus;

/// The answer to "should stage S run?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum GateDecision {
    /// S is at or past the build's state and the build may proceed.
    Run,
    /// S already completed (or was skipped).
    Skip,
    /// S is the failed stage and its backoff has not elapsed, or another run holds the
    /// stage being worked on.
    Wait,
    /// The build is blocked, cancelled or completed, or S comes after a stage that failed:
    /// S should not run now.
    Stop,
}

impl GateDecision {
    /// The wire spelling, also used in files and step outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            GateDecision::Run => "run",
            GateDecision::Skip => "skip",
            GateDecision::Wait => "wait",
            GateDecision::Stop => "stop",
        }
    }
}

/// A gate decision with what a person needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub decision: GateDecision,
    /// For `wait`: seconds (rounded up) until the stage may be attempted.
    pub wait_seconds: Option<u64>,
    pub reason: String,
}

/// Decides whether `stage` should run on a build at `current`, as of `now`, for the run `run`
/// (its identity, as its reports send it; `None` if unknown): while another run holds the
/// stage being worked on, that stage and every later one wait for the lease to end.
pub fn gate(current: &Progress, stage: StateCode, run: Option<&str>, now: DateTime<Utc>) -> Gate {
    let answer = |decision, reason: String| Gate {
        decision,
        wait_seconds: None,
        reason,
    };
    match current.status {
        BuildStatus::Completed => {
            return answer(GateDecision::Stop, "the build is completed".into());
        }
        BuildStatus::Cancelled => {
            return answer(GateDecision::Stop, "the build was cancelled".into());
        }
        BuildStatus::Blocked => {
            return answer(
                GateDecision::Stop,
                format!(
                    "the build is blocked at stage {} after {} failures and needs intervention",
                    current.state, current.failures
                ),
            );
        }
        _ => {}
    }
    // The finished statuses answered above, so this is a stage before the build's state.
    if current.has_completed(stage) {
        return answer(
            GateDecision::Skip,
            format!(
                "stage {stage} already completed; the build is at {}",
                current.state
            ),
        );
    }
    // A reopened pass retries its failed stage: the stages after it wait for it, whatever the
    // status.
    if let Some(until) = current.reopened_until.filter(|&until| stage > until) {
        return answer(
            GateDecision::Stop,
            format!(
                "stage {until} failed and the stages from {} were reopened to retry it; it must complete again before stage {stage} runs",
                current.state
            ),
        );
    }
    if stage > current.state && current.status == BuildStatus::Failed {
        return answer(
            GateDecision::Stop,
            format!(
                "stage {} failed and must complete before stage {stage} runs",
                current.state
            ),
        );
    }
    if stage == current.state && current.status == BuildStatus::Failed {
        // The first stage of a reopened pass answers for the stage that failed.
        let failed = match current.reopened_until {
            Some(until) if until != stage => {
                format!("stage {stage} was reopened to retry stage {until}, which failed")
            }
            _ => format!("stage {stage} failed"),
        };
        if let Some(next_attempt_at) = current.next_attempt_at {
            let millis = (next_attempt_at - now).num_milliseconds();
            if millis > 0 {
                let wait_seconds = u64::try_from(millis).unwrap_or(0).div_ceil(1000);
                return Gate {
                    decision: GateDecision::Wait,
                    wait_seconds: Some(wait_seconds),
                    reason: format!(
                        "{failed} {} time(s); next attempt in {wait_seconds}s",
                        current.failures
                    ),
                };
            }
        }
        return answer(
            GateDecision::Run,
            format!("{failed} {} time(s); retry it now", current.failures),
        );
    }
    if let Some(lease) = current
        .lease
        .as_ref()
        .filter(|lease| current.status == BuildStatus::InProgress && lease.stage == current.state)
        .filter(|lease| run != Some(lease.holder.as_str()))
    {
        if let Some(wait_seconds) = lease.seconds_left(now) {
            return Gate {
                decision: GateDecision::Wait,
                wait_seconds: Some(wait_seconds),
                reason: format!(
                    "stage {} is held by run `{}` for {wait_seconds}s more (lease {})",
                    lease.stage, lease.holder, lease.fence
                ),
            };
        }
    }
    if stage == current.state {
        answer(
            GateDecision::Run,
            format!("stage {stage} is the next stage to run"),
        )
    } else {
        answer(
            GateDecision::Run,
            format!(
                "stage {stage} is ahead of the build (at {}); the stages between will be recorded as skipped",
                current.state
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(n: i64) -> StateCode {
        StateCode::new(n).expect("valid")
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid timestamp")
    }

    fn at(state: i64, status: BuildStatus) -> Progress {
        Progress {
            state: code(state),
            status,
            failures: 1,
            next_attempt_at: None,
            lease: None,
            last_seq: 9,
            retry_due_seq: None,
            reopened_until: None,
        }
    }

    fn held_by(run: &str, state: i64, seconds_left: i64) -> Progress {
        Progress {
            lease: Some(crate::rules::Lease {
                stage: code(state),
                holder: run.to_owned(),
                fence: 9,
                expires_at: now() + chrono::Duration::seconds(seconds_left),
            }),
            ..at(state, BuildStatus::InProgress)
        }
    }

    #[test]
    fn every_gate_answer() {
        use BuildStatus::*;
        use GateDecision as D;
        let backing_off = Progress {
            next_attempt_at: Some(now() + chrono::Duration::milliseconds(4_001)),
            ..at(30, Failed)
        };
        let elapsed = Progress {
            next_attempt_at: Some(now() - chrono::Duration::seconds(1)),
            ..at(30, Failed)
        };
        let held = held_by("run-a", 30, 40);
        let lapsed = held_by("run-a", 30, -1);
        let cases = [
            ("the current stage runs", at(30, Running), 30, D::Run),
            (
                "a stage being worked on runs again",
                at(30, InProgress),
                30,
                D::Run,
            ),
            ("a later stage runs", at(30, Running), 45, D::Run),
            ("an earlier stage is skipped", at(30, Running), 25, D::Skip),
            (
                "an earlier stage of a failed build is skipped",
                backing_off.clone(),
                10,
                D::Skip,
            ),
            (
                "the failed stage waits out its backoff",
                backing_off.clone(),
                30,
                D::Wait,
            ),
            (
                "a stage after a failed one stops until it completes",
                backing_off.clone(),
                35,
                D::Stop,
            ),
            (
                "a stage after a failed one stops even once the backoff elapsed",
                elapsed.clone(),
                35,
                D::Stop,
            ),
            (
                "the failed stage runs once the backoff elapsed",
                elapsed.clone(),
                30,
                D::Run,
            ),
            ("a blocked build stops", at(30, Blocked), 30, D::Stop),
            (
                "a blocked build stops even for earlier stages",
                at(30, Blocked),
                10,
                D::Stop,
            ),
            ("a cancelled build stops", at(30, Cancelled), 35, D::Stop),
            ("a completed build stops", at(100, Completed), 100, D::Stop),
            ("a stage another run holds waits", held.clone(), 30, D::Wait),
            (
                "a stage past one another run holds waits",
                held.clone(),
                35,
                D::Wait,
            ),
            (
                "an earlier stage is still skipped while one is held",
                held.clone(),
                25,
                D::Skip,
            ),
            (
                "a stage whose lease expired runs",
                lapsed.clone(),
                30,
                D::Run,
            ),
        ];
        for (name, progress, stage, expected) in cases {
            let answer = gate(&progress, code(stage), Some("run-b"), now());
            assert_eq!(answer.decision, expected, "{name}: {}", answer.reason);
            assert_eq!(answer.wait_seconds.is_some(), expected == D::Wait, "{name}");
        }
        assert_eq!(
            gate(&backing_off, code(30), None, now()).wait_seconds,
            Some(5),
            "rounded up"
        );
        let waiting = gate(&held, code(30), None, now());
        assert_eq!(waiting.wait_seconds, Some(40), "an unknown run waits too");
        assert!(waiting.reason.contains("`run-a`"), "{}", waiting.reason);
        assert_eq!(
            gate(&held, code(30), Some("run-a"), now()).decision,
            D::Run,
            "the holder itself runs"
        );
    }

    #[test]
    fn the_gates_of_a_reopened_pass() {
        use BuildStatus::*;
        use GateDecision as D;
        // Stage 25 failed with `restart_from: 10`: the build is back at 10, failed, backing off.
        let reopened = Progress {
            next_attempt_at: Some(now() + chrono::Duration::seconds(30)),
            reopened_until: Some(code(25)),
            ..at(10, Failed)
        };
        let due = Progress {
            next_attempt_at: Some(now() - chrono::Duration::seconds(1)),
            ..reopened.clone()
        };
        // Stage 10 ran again: the pass goes on at 15.
        let going = Progress {
            reopened_until: Some(code(25)),
            ..at(15, Running)
        };
        let cases = [
            (
                "a stage before the pass is skipped",
                reopened.clone(),
                5,
                D::Skip,
            ),
            (
                "the first reopened stage waits out the backoff",
                reopened.clone(),
                10,
                D::Wait,
            ),
            (
                "the first reopened stage runs once it ends",
                due.clone(),
                10,
                D::Run,
            ),
            (
                "a later reopened stage waits for the first",
                due.clone(),
                15,
                D::Stop,
            ),
            (
                "the failed stage waits for the first",
                due.clone(),
                25,
                D::Stop,
            ),
            (
                "a stage after the failed one stops",
                due.clone(),
                30,
                D::Stop,
            ),
            (
                "a reopened stage that ran again is skipped",
                going.clone(),
                10,
                D::Skip,
            ),
            ("the next reopened stage runs", going.clone(), 15, D::Run),
            (
                "the failed stage may run (stages between skipped)",
                going.clone(),
                25,
                D::Run,
            ),
            (
                "no stage after the failed one runs until it completes",
                going.clone(),
                30,
                D::Stop,
            ),
        ];
        for (name, progress, stage, expected) in cases {
            let answer = gate(&progress, code(stage), None, now());
            assert_eq!(answer.decision, expected, "{name}: {}", answer.reason);
        }
        let waiting = gate(&reopened, code(10), None, now());
        assert_eq!(waiting.wait_seconds, Some(30));
        assert_eq!(
            waiting.reason,
            "stage 10 was reopened to retry stage 25, which failed 1 time(s); next attempt in 30s"
        );
        assert_eq!(
            gate(&going, code(30), None, now()).reason,
            "stage 25 failed and the stages from 15 were reopened to retry it; it must complete again before stage 30 runs"
        );
    }
}
