//! What resuming saved (docs/rules.md, "What resuming saved"): when a run *resumes* a build,
//! which stages it did not run again, and how long those took when they ran. Pure, like the
//! rules: the store calls [`resumes_at`], [`stop_after`] and [`saved_before`] under the build's
//! row lock, in the transaction of the report that resumes, and keeps the [`Resume`] they
//! describe; the savings report and every front end read that record, never recompute it.
//!
//! A build *stops* short of the end when a stage fails (`failed`, or `blocked`), when an
//! operator retries or resets it, or when the run working on a stage gives its lease up without
//! reporting (an interrupted `bldst build run`); it also stopped when the lease of the run
//! working on a stage expired (that run is gone). The first report from a run after a stop —
//! `in_progress`, `completed` or `failed`, on the stage the build stopped at or past it — is the
//! resume: one per stop, whatever the front end, however many calls it makes (a start-or-resume
//! on a key, gates and reads record nothing). The stop is then used up.
//!
//! What it saved: the stages before the one it resumed at whose latest entry is a `completed`
//! reported by a run (not stages skipped by a jump, not stage 0 completed by a jump), each with
//! the time from its `in_progress` to its `completed` in the attempt that completed it. A
//! completion with no `in_progress` of the same attempt just before it has no recorded
//! duration: it counts as *unknown*, never as zero.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fields::{BuildId, ImageType, Platform};
use crate::rules::{Event, Progress};
use crate::state::StateCode;
use crate::status::EventKind;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// How many builds `GET /reports/savings` lists, by time saved.
pub const SAVINGS_TOP_BUILDS: u32 = 20;

/// Whether a report's history `events` (as [`crate::apply_report`] decided them for a build at
/// `before`) resume the build, and at which stage: the build's stage before the report. It does
/// when a stop is pending (`stopped_seq`, see [`stop_after`]) or when the report takes over an
/// expired lease. Only a run's own report resumes: its entry carries an attempt.
pub fn resumes_at(
    before: &Progress,
    stopped_seq: Option<i64>,
    events: &[Event],
) -> Option<StateCode> {
    let reported = events.iter().any(|event| {
        event.attempt.is_some()
            && matches!(
                event.kind,
                EventKind::InProgress | EventKind::Completed | EventKind::Failed
            )
    });
    let took_over = events
        .iter()
        .any(|event| event.kind == EventKind::TakenOver);
    (reported && (stopped_seq.is_some() || took_over)).then_some(before.state)
}

/// The pending stop after a change appends `events` (numbered from `first_seq`) to a build
/// whose pending stop was `stopped_seq`: the sequence number of the newest entry that stops the
/// build (a failure, an operator retry or reset), `None` once a run reported (the stop is used
/// up) or the build was cancelled, else unchanged (a `retry_due` keeps it).
pub fn stop_after(stopped_seq: Option<i64>, first_seq: i64, events: &[Event]) -> Option<i64> {
    events
        .iter()
        .zip(first_seq..)
        .fold(stopped_seq, |stopped, (event, seq)| match event.kind {
            EventKind::Failed | EventKind::Retried | EventKind::Reset => Some(seq),
            EventKind::InProgress | EventKind::Completed | EventKind::Cancelled => None,
            _ => stopped,
        })
}

/// One `completed` or `skipped` history entry, with the entry just before it, as
/// [`saved_before`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassEntry {
    pub seq: i64,
    pub state: StateCode,
    pub kind: EventKind,
    pub attempt: Option<u32>,
    pub at: DateTime<Utc>,
    /// The entry with the sequence number before it, if there is one.
    pub previous: Option<PreviousEntry>,
}

/// The entry before a [`PassEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousEntry {
    pub state: StateCode,
    pub kind: EventKind,
    pub attempt: Option<u32>,
    pub at: DateTime<Utc>,
}

/// What a resume saved: the stages not run again, the sum of their known durations, and how
/// many had none recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Saved {
    pub stages_not_rerun: u32,
    pub saved_ms: u64,
    pub unknown_durations: u32,
}

/// What a resume at `resume_stage` saved, given a build's `completed` and `skipped` entries
/// (any order, any stage: those at or after `resume_stage` never count). Per stage, its latest
/// such entry is the current pass's; it counts when it is a run's completion (it has an
/// attempt), with the time since the `in_progress` of the same stage and attempt just before
/// it, or as unknown when there is none.
pub fn saved_before(
    resume_stage: StateCode,
    entries: impl IntoIterator<Item = PassEntry>,
) -> Saved {
    let mut latest: std::collections::BTreeMap<StateCode, PassEntry> = Default::default();
    for entry in entries {
        if entry.state >= resume_stage
            || !matches!(entry.kind, EventKind::Completed | EventKind::Skipped)
        {
            continue;
        }
        match latest.get(&entry.state) {
            Some(kept) if kept.seq > entry.seq => {}
            _ => {
                latest.insert(entry.state, entry);
            }
        }
    }
    let mut saved = Saved::default();
    for entry in latest.into_values() {
        if entry.kind != EventKind::Completed || entry.attempt.is_none() {
            continue;
        }
        saved.stages_not_rerun += 1;
        let started = entry.previous.as_ref().filter(|previous| {
            previous.kind == EventKind::InProgress
                && previous.state == entry.state
                && previous.attempt == entry.attempt
        });
        match started.map(|previous| (entry.at - previous.at).num_milliseconds()) {
            Some(millis) if millis >= 0 => saved.saved_ms += millis as u64,
            _ => saved.unknown_durations += 1,
        }
    }
    saved
}

/// One resume, as recorded with the report that made it (`Build.last_resume`, and the
/// report's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Resume {
    /// The stage the build resumed at (where it had stopped).
    pub stage: StateCode,
    /// When: the time of the report that resumed.
    pub at: DateTime<Utc>,
    /// The sequence number of that report's history entry.
    pub seq: i64,
    /// Stages completed before `stage` in this pass that were not run again.
    pub stages_not_rerun: u32,
    /// The sum of their recorded durations, in milliseconds (unknown ones excluded).
    pub saved_ms: u64,
    /// How many of them have no recorded duration (completed without an `in_progress`).
    pub unknown_durations: u32,
}

impl Resume {
    /// The resume a report at `at`, appending the entry `seq`, made at `stage`; `None` when it
    /// saved no stage (nothing to report: every stage before it runs again or was skipped).
    pub fn recorded(stage: StateCode, at: DateTime<Utc>, seq: i64, saved: Saved) -> Option<Self> {
        (saved.stages_not_rerun > 0).then_some(Resume {
            stage,
            at,
            seq,
            stages_not_rerun: saved.stages_not_rerun,
            saved_ms: saved.saved_ms,
            unknown_durations: saved.unknown_durations,
        })
    }

    /// The sentence every front end shows: "resumed at stage 45: 9 stages not re-run, about
    /// 2 h 13 min saved", saying how many durations are unknown when some are.
    pub fn describe(&self) -> String {
        let stages = plural(u64::from(self.stages_not_rerun), "stage");
        let saved = describe_saved(
            self.saved_ms,
            u64::from(self.stages_not_rerun),
            u64::from(self.unknown_durations),
        );
        format!(
            "resumed at stage {}: {stages} not re-run, {saved}",
            self.stage
        )
    }
}

/// "about 2 h 13 min saved", "about 2 h 13 min saved (3 stages without a recorded duration)",
/// or "time saved unknown (no recorded durations)" when none is known.
fn describe_saved(saved_ms: u64, stages: u64, unknown: u64) -> String {
    if stages > 0 && unknown >= stages {
        return "time saved unknown (no recorded durations)".to_owned();
    }
    // Seconds are said as they are; minutes are rounded, so "about".
    let about = if saved_ms < 60_000 {
        format!("{} saved", human_duration(saved_ms))
    } else {
        format!("about {} saved", human_duration(saved_ms))
    };
    if unknown == 0 {
        about
    } else {
        format!(
            "{about} ({} without a recorded duration)",
            plural(unknown, "stage")
        )
    }
}

fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// A duration as people read it, to the minute: "37 h 12 min", "45 min", or seconds under a
/// minute ("40 s", "under a second").
pub fn human_duration(millis: u64) -> String {
    let secs = millis / 1000;
    if millis > 0 && secs == 0 {
        return "under a second".to_owned();
    }
    if secs < 60 {
        return format!("{secs} s");
    }
    let minutes = (millis + 30_000) / 60_000;
    match (minutes / 60, minutes % 60) {
        (0, minutes) => format!("{minutes} min"),
        (hours, 0) => format!("{hours} h"),
        (hours, minutes) => format!("{hours} h {minutes} min"),
    }
}

/// Resumes added up: over a window, a platform, an image type or a build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SavingsTotals {
    pub resumes: u64,
    pub stages_not_rerun: u64,
    /// Recorded durations of the stages not re-run, in milliseconds.
    pub saved_ms: u64,
    /// Stages not re-run without a recorded duration (not counted in `saved_ms`).
    pub unknown_durations: u64,
}

/// Savings of one platform or image type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SavingsGroup {
    pub name: String,
    #[serde(flatten)]
    pub totals: SavingsTotals,
}

/// Savings of one build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BuildSavings {
    pub id: BuildId,
    pub platform: Platform,
    pub image_type: ImageType,
    #[serde(flatten)]
    pub totals: SavingsTotals,
}

/// `GET /reports/savings`: what resuming saved, over resumes in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SavingsReport {
    pub since: DateTime<Utc>,
    /// The window, in days.
    pub days: u32,
    pub totals: SavingsTotals,
    pub by_platform: Vec<SavingsGroup>,
    pub by_image_type: Vec<SavingsGroup>,
    /// The builds that saved most, most first (at most 20).
    pub top_builds: Vec<BuildSavings>,
    // (Made by `SavingsReport::describe`, so every front end says the same.)
    /// The totals in one sentence, as the dashboard shows them: "resuming saved 37 h 12 min
    /// in the last 30 days, 212 stages not re-run".
    pub summary: String,
}

impl SavingsReport {
    /// The dashboard's and the CLI's sentence: "resuming saved 37 h 12 min in the last 30
    /// days, 212 stages not re-run", with the unknown durations when there are some.
    pub fn describe(&self) -> String {
        let totals = &self.totals;
        let window = if self.days == 1 {
            "the last day".to_owned()
        } else {
            format!("the last {} days", self.days)
        };
        if totals.resumes == 0 {
            return format!("no build resumed in {window}");
        }
        let stages = plural(totals.stages_not_rerun, "stage");
        let unknown = match totals.unknown_durations {
            0 => String::new(),
            n => format!(" ({n} without a recorded duration)"),
        };
        format!(
            "resuming saved {} in {window}, {stages} not re-run{unknown}",
            human_duration(totals.saved_ms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::BuildStatus;

    fn code(value: i64) -> StateCode {
        StateCode::new(value).expect("code")
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("in range")
    }

    fn progress(state: i64, status: BuildStatus) -> Progress {
        Progress {
            state: code(state),
            status,
            ..Progress::started()
        }
    }

    fn reported(state: i64, kind: EventKind, attempt: u32) -> Event {
        Event {
            attempt: Some(attempt),
            ..Event::plain(code(state), kind)
        }
    }

    #[test]
    fn a_run_report_after_a_stop_or_a_takeover_resumes_once() {
        use BuildStatus::{Failed, InProgress, Running};
        use EventKind as K;
        // (case, build before, pending stop, the report's entries, resumes at)
        type Case = (&'static str, Progress, Option<i64>, Vec<Event>, Option<i64>);
        let table: Vec<Case> = vec![
            (
                "the failed stage run again",
                progress(25, Failed),
                Some(40),
                vec![reported(25, K::InProgress, 2)],
                Some(25),
            ),
            (
                "completed without in_progress after a failure",
                progress(25, Failed),
                Some(40),
                vec![reported(25, K::Completed, 2)],
                Some(25),
            ),
            (
                "a failed report on its own (a hook) after a failure",
                progress(25, Failed),
                Some(40),
                vec![reported(25, K::Failed, 2)],
                Some(25),
            ),
            (
                "after an operator reset, a jump past the stage",
                progress(10, Running),
                Some(40),
                vec![
                    Event::plain(code(10), K::Skipped),
                    reported(15, K::InProgress, 1),
                ],
                Some(10),
            ),
            (
                "an expired lease taken over",
                progress(25, InProgress),
                None,
                vec![
                    Event::plain(code(25), K::TakenOver),
                    reported(25, K::InProgress, 1),
                ],
                Some(25),
            ),
            (
                "no stop: the next stage of the same run",
                progress(25, Running),
                None,
                vec![reported(25, K::InProgress, 1)],
                None,
            ),
            (
                "the server's own retry_due is not a run",
                progress(25, Failed),
                Some(40),
                vec![Event::plain(code(25), K::RetryDue)],
                None,
            ),
            (
                "an operator action is not a run",
                progress(25, Failed),
                Some(40),
                vec![Event::plain(code(25), K::Retried)],
                None,
            ),
        ];
        for (name, before, stopped, events, expected) in table {
            assert_eq!(
                resumes_at(&before, stopped, &events),
                expected.map(code),
                "{name}"
            );
        }
    }

    #[test]
    fn a_stop_is_set_by_failures_and_operators_and_used_up_by_a_run() {
        use EventKind as K;
        // (case, pending stop, the change's entries from seq 10, pending stop after)
        type Case = (&'static str, Option<i64>, Vec<Event>, Option<i64>);
        let table: Vec<Case> = vec![
            (
                "a failure",
                None,
                vec![reported(25, K::Failed, 1)],
                Some(10),
            ),
            (
                "an operator retry",
                Some(9),
                vec![Event::plain(code(25), K::Retried)],
                Some(10),
            ),
            (
                "an operator reset",
                None,
                vec![Event::plain(code(5), K::Reset)],
                Some(10),
            ),
            (
                "a failure that reopens earlier stages (restart_from) stops at the failure",
                None,
                vec![
                    reported(25, K::Failed, 1),
                    Event::plain(code(10), K::Reopened),
                ],
                Some(10),
            ),
            (
                "an operator retry that reopens stops at the retry",
                Some(9),
                vec![
                    Event::plain(code(25), K::Retried),
                    Event::plain(code(10), K::Reopened),
                ],
                Some(10),
            ),
            (
                "retry_due keeps it",
                Some(9),
                vec![Event::plain(code(25), K::RetryDue)],
                Some(9),
            ),
            (
                "a run's in_progress uses it up",
                Some(9),
                vec![reported(25, K::InProgress, 2)],
                None,
            ),
            (
                "a run that fails again stops it anew",
                Some(9),
                vec![reported(25, K::Failed, 2)],
                Some(10),
            ),
            (
                "a takeover and its claim use it up",
                Some(9),
                vec![
                    Event::plain(code(25), K::TakenOver),
                    reported(25, K::InProgress, 1),
                ],
                None,
            ),
            (
                "a cancel ends it",
                Some(9),
                vec![Event::plain(code(25), K::Cancelled)],
                None,
            ),
        ];
        for (name, stopped, events, expected) in table {
            assert_eq!(stop_after(stopped, 10, &events), expected, "{name}");
        }
    }

    fn pair(seq: i64, state: i64, attempt: u32, started: i64, took: i64) -> PassEntry {
        PassEntry {
            seq,
            state: code(state),
            kind: EventKind::Completed,
            attempt: Some(attempt),
            at: at(started + took),
            previous: Some(PreviousEntry {
                state: code(state),
                kind: EventKind::InProgress,
                attempt: Some(attempt),
                at: at(started),
            }),
        }
    }

    #[test]
    fn saved_stages_are_the_runs_completions_before_the_resume_stage() {
        // 0..20 completed with in_progress/completed pairs of 60 s each; then 25 failed.
        let entries: Vec<PassEntry> = (0..5)
            .map(|n| pair(2 + 2 * n, 5 * n, 1, 100 * n, 60))
            .collect();
        assert_eq!(
            saved_before(code(25), entries.clone()),
            Saved {
                stages_not_rerun: 5,
                saved_ms: 300_000,
                unknown_durations: 0
            }
        );
        // A stage at or after the resume stage never counts (a reopened one included).
        assert_eq!(saved_before(code(15), entries.clone()).stages_not_rerun, 3);
        assert_eq!(saved_before(code(0), entries).stages_not_rerun, 0);
    }

    #[test]
    fn a_completion_without_its_in_progress_is_unknown_not_zero() {
        let mut bare = pair(4, 5, 1, 0, 60);
        bare.previous = Some(PreviousEntry {
            state: code(0),
            kind: EventKind::Completed,
            attempt: Some(1),
            at: at(0),
        });
        let mut other_attempt = pair(8, 10, 2, 100, 60);
        if let Some(previous) = other_attempt.previous.as_mut() {
            previous.attempt = Some(1);
        }
        let mut first_entry = pair(9, 15, 1, 200, 60);
        first_entry.previous = None;
        let saved = saved_before(
            code(25),
            [pair(2, 0, 1, 0, 30), bare, other_attempt, first_entry],
        );
        assert_eq!(
            saved,
            Saved {
                stages_not_rerun: 4,
                saved_ms: 30_000,
                unknown_durations: 3
            }
        );
    }

    #[test]
    fn the_latest_entry_per_stage_decides_skips_and_jumps_aside() {
        // Stage 10 completed, then (after a reset to 5) skipped by a jump: not saved. Stage 5
        // completed twice: the later completion's duration counts. Stage 0 completed by a jump
        // (no attempt): the trigger, not a stage a run ran.
        let jump_zero = PassEntry {
            seq: 2,
            state: code(0),
            kind: EventKind::Completed,
            attempt: None,
            at: at(1),
            previous: None,
        };
        let skipped_ten = PassEntry {
            seq: 20,
            state: code(10),
            kind: EventKind::Skipped,
            attempt: None,
            at: at(500),
            previous: None,
        };
        let saved = saved_before(
            code(15),
            [
                pair(19, 5, 1, 400, 90),
                jump_zero,
                pair(4, 5, 1, 0, 10),
                pair(6, 10, 1, 20, 10),
                skipped_ten,
            ],
        );
        assert_eq!(
            saved,
            Saved {
                stages_not_rerun: 1,
                saved_ms: 90_000,
                unknown_durations: 0
            }
        );
    }

    #[test]
    fn a_resume_that_saved_nothing_is_not_recorded_and_one_that_did_says_so() {
        assert_eq!(Resume::recorded(code(5), at(0), 3, Saved::default()), None);
        let resume = Resume::recorded(
            code(45),
            at(0),
            30,
            Saved {
                stages_not_rerun: 9,
                saved_ms: (2 * 3600 + 13 * 60) * 1000,
                unknown_durations: 0,
            },
        )
        .expect("saved stages");
        assert_eq!(
            resume.describe(),
            "resumed at stage 45: 9 stages not re-run, about 2 h 13 min saved"
        );
        let some_unknown = Resume {
            unknown_durations: 2,
            ..resume.clone()
        };
        assert_eq!(
            some_unknown.describe(),
            "resumed at stage 45: 9 stages not re-run, about 2 h 13 min saved (2 stages without a recorded duration)"
        );
        let all_unknown = Resume {
            stages_not_rerun: 1,
            saved_ms: 0,
            unknown_durations: 1,
            ..resume
        };
        assert_eq!(
            all_unknown.describe(),
            "resumed at stage 45: 1 stage not re-run, time saved unknown (no recorded durations)"
        );
    }

    #[test]
    fn durations_read_to_the_minute() {
        for (millis, text) in [
            (0, "0 s"),
            (450, "under a second"),
            (40_000, "40 s"),
            (60_000, "1 min"),
            (45 * 60_000 + 10_000, "45 min"),
            (3_600_000, "1 h"),
            ((37 * 60 + 12) * 60_000, "37 h 12 min"),
            ((2 * 60 + 12) * 60_000 + 45_000, "2 h 13 min"),
        ] {
            assert_eq!(human_duration(millis), text, "{millis}");
        }
    }

    #[test]
    fn the_savings_sentence_names_the_window_and_the_stages() {
        let report = SavingsReport {
            since: at(0),
            days: 30,
            totals: SavingsTotals {
                resumes: 40,
                stages_not_rerun: 212,
                saved_ms: (37 * 60 + 12) * 60_000,
                unknown_durations: 0,
            },
            by_platform: Vec::new(),
            by_image_type: Vec::new(),
            top_builds: Vec::new(),
            summary: String::new(),
        };
        assert_eq!(
            report.describe(),
            "resuming saved 37 h 12 min in the last 30 days, 212 stages not re-run"
        );
        let none = SavingsReport {
            days: 7,
            totals: SavingsTotals::default(),
            ..report
        };
        assert_eq!(none.describe(), "no build resumed in the last 7 days");
    }
}
