//! Reports over many builds: what they answer (wire types) and the arithmetic behind them
//! (success rates, percentiles, stuck thresholds), pure so the server, the CLI and the
//! dashboard agree on every number.
//!
//! Definitions (the API documents them as the same sentences):
//! - a build *succeeded* when it is `completed`; it *finished unsuccessfully* when `blocked` or
//!   `cancelled`; every other build is still going. The success rate is succeeded ÷ (succeeded
//!   + finished unsuccessfully), absent while nothing has finished.
//! - a stage's *duration* is the time from the build's previous report to the stage's
//!   completion (its `in_progress` report when there was one, else the previous stage's end).
//! - a build is *stuck* when it is still going (`running`, `in_progress`, or `failed` with its
//!   backoff over) and nothing was recorded for longer than its stage's threshold.
//! - *time to recover*: from a stage's first failure in a build to that stage's completion.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fields::{BuildId, ImageType, Platform};
use crate::state::StateCode;
use crate::status::{BuildStatus, EventKind};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The default window of a report, in days.
pub const DEFAULT_WINDOW_DAYS: u32 = 7;
/// The longest window a report may look back, in days.
pub const MAX_WINDOW_DAYS: u32 = 366;

/// Counts of builds in one group (a platform or an image type).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SuccessCounts {
    /// The platform or image type.
    pub name: String,
    pub builds: u64,
    pub completed: u64,
    pub blocked: u64,
    pub cancelled: u64,
    /// Still going: `running`, `in_progress` or `failed` (waiting for a retry).
    pub unfinished: u64,
    /// completed ÷ (completed + blocked + cancelled); absent while none has finished.
    pub success_rate: Option<f64>,
}

impl SuccessCounts {
    /// An empty group named `name`.
    pub fn named(name: impl Into<String>) -> Self {
        SuccessCounts {
            name: name.into(),
            ..SuccessCounts::default()
        }
    }

    /// Counts `count` builds with `status`.
    pub fn add(&mut self, status: BuildStatus, count: u64) {
        self.builds += count;
        match status {
            BuildStatus::Completed => self.completed += count,
            BuildStatus::Blocked => self.blocked += count,
            BuildStatus::Cancelled => self.cancelled += count,
            _ => self.unfinished += count,
        }
        let finished = self.completed + self.blocked + self.cancelled;
        self.success_rate = (finished > 0).then(|| self.completed as f64 / finished as f64);
    }
}

/// `GET /reports/success`: builds started in the window, by platform and by image type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SuccessReport {
    pub since: DateTime<Utc>,
    pub by_platform: Vec<SuccessCounts>,
    pub by_image_type: Vec<SuccessCounts>,
}

/// Failures at one stage code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StageFailures {
    pub state: StateCode,
    pub state_name: String,
    /// Failed reports at this stage in the window.
    pub failures: u64,
    /// Distinct builds with at least one of them.
    pub builds: u64,
    /// Attempts after a failure: failures beyond each build's first at this stage, plus
    /// operator retries.
    pub retries: u64,
    /// Builds blocked at this stage now.
    pub blocked_now: u64,
}

/// `GET /reports/failures`: where builds fail, by stage code (only codes with failures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FailureReport {
    pub since: DateTime<Utc>,
    pub stages: Vec<StageFailures>,
}

/// Percentiles of a set of durations, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DurationStats {
    pub count: u64,
    pub p50_secs: f64,
    pub p90_secs: f64,
    pub max_secs: f64,
}

impl DurationStats {
    /// Nearest-rank percentiles of `millis` (sorted here); `None` when empty.
    pub fn of_millis(mut millis: Vec<i64>) -> Option<Self> {
        if millis.is_empty() {
            return None;
        }
        millis.sort_unstable();
        let secs = |value: i64| value as f64 / 1000.0;
        Some(DurationStats {
            count: millis.len() as u64,
            p50_secs: secs(nearest_rank(&millis, 50)),
            p90_secs: secs(nearest_rank(&millis, 90)),
            max_secs: secs(*millis.last().unwrap_or(&0)),
        })
    }
}

/// The nearest-rank percentile `p` (1..=100) of sorted, non-empty `values`.
pub fn nearest_rank(sorted: &[i64], p: u32) -> i64 {
    let n = sorted.len();
    let rank = nearest_rank_position(n as u64, p) as usize;
    sorted[rank.min(n) - 1]
}

/// Which value (1-based, in ascending order) is the nearest-rank percentile `p` (1..=100) of
/// `n` values: ⌈p·n/100⌉, at least 1. The store picks the same positions in SQL: PostgreSQL's
/// `percentile_disc(p / 100)`, SQLite's ranks at `(p * n + 99) / 100`.
pub fn nearest_rank_position(n: u64, p: u32) -> u64 {
    (u64::from(p) * n).div_ceil(100).max(1)
}

impl DurationStats {
    /// Stats of `count` durations from the values at the positions
    /// [`nearest_rank_position`] gives for 50 and 90, and the largest: what a database that
    /// ranked the durations hands back, so the stats equal [`DurationStats::of_millis`] of the
    /// whole set.
    pub fn of_ranked_millis(count: u64, p50: i64, p90: i64, max: i64) -> Self {
        let secs = |value: i64| value as f64 / 1000.0;
        DurationStats {
            count,
            p50_secs: secs(p50),
            p90_secs: secs(p90),
            max_secs: secs(max),
        }
    }
}

/// The duration each entry of a build's history contributes to the durations report, given
/// the entries one report (or operator action) appends, in order, and when the entry before
/// them was recorded (`None`: unknown, e.g. pruned).
///
/// A completion took the time since the build's previous record, skipped stages aside (they
/// are written with the report that jumps past them); a completion with no time of its own
/// (the previous record in the same millisecond, as when a jump completes stage 0 and then the
/// reported stage) and every other kind of entry get `None`. The store keeps this with each
/// entry as it is written, so the report reads one indexed column instead of pairing each
/// completion with the record before it.
pub fn completion_durations(
    previous: Option<DateTime<Utc>>,
    entries: impl IntoIterator<Item = (EventKind, DateTime<Utc>)>,
) -> Vec<Option<i64>> {
    let mut previous = previous;
    entries
        .into_iter()
        .map(|(kind, at)| {
            if kind == EventKind::Skipped {
                return None;
            }
            let since = previous.replace(at);
            let millis = since.map(|since| (at - since).num_milliseconds());
            millis.filter(|&millis| kind == EventKind::Completed && millis > 0)
        })
        .collect()
}

/// Durations of one stage code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StageDurations {
    pub state: StateCode,
    pub state_name: String,
    #[serde(flatten)]
    pub stats: DurationStats,
}

/// `GET /reports/durations`: how long each stage takes (completions in the window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DurationReport {
    pub since: DateTime<Utc>,
    pub stages: Vec<StageDurations>,
}

/// A build that needs a look: stuck, or blocked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AttentionBuild {
    pub id: BuildId,
    pub platform: Platform,
    pub image_type: ImageType,
    pub state: StateCode,
    pub state_name: String,
    pub status: BuildStatus,
    pub failures: u32,
    pub last_message: Option<String>,
    pub updated_at: DateTime<Utc>,
    /// Since when it has been quiet: its last record, or the end of its backoff if later.
    pub quiet_since: DateTime<Utc>,
    /// Seconds since `quiet_since`.
    pub idle_secs: u64,
}

/// `GET /reports/stuck`: builds with nothing recorded for longer than their threshold, and
/// builds that are blocked (they wait for a person).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StuckReport {
    /// The threshold used for codes without their own, in seconds.
    pub stuck_after_secs: u64,
    /// Per-code thresholds, in seconds.
    pub stuck_after_by_code: BTreeMap<String, u64>,
    pub stuck: Vec<AttentionBuild>,
    pub blocked: Vec<AttentionBuild>,
}

/// Recovery times at one stage code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StageRecovery {
    pub state: StateCode,
    pub state_name: String,
    /// Failures (first per build and stage) that were later completed.
    pub recovered: u64,
    /// Failures not (yet) followed by a completion.
    pub unrecovered: u64,
    /// Time to recover, over the recovered ones; absent when none.
    pub time_to_recover: Option<DurationStats>,
}

/// `GET /reports/recovery`: time from a stage's first failure to its completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RecoveryReport {
    pub since: DateTime<Utc>,
    /// Over every stage.
    pub overall: StageRecoveryTotal,
    pub stages: Vec<StageRecovery>,
}

/// [`StageRecovery`] over every stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StageRecoveryTotal {
    pub recovered: u64,
    pub unrecovered: u64,
    pub time_to_recover: Option<DurationStats>,
}

/// When a build counts as stuck: a default and per-code overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckThresholds {
    pub default: Duration,
    pub by_code: BTreeMap<StateCode, Duration>,
}

/// The longest stuck threshold, in seconds: at most 8 digits (99 999 999 s, a little over three
/// years). Bounded so that `now - threshold` always fits a timestamp, and small enough to say
/// in the OpenAPI document's pattern for `after_by_code` ([`STUCK_AFTER_BY_CODE_PATTERN`]).
pub const MAX_STUCK_AFTER_SECS: u64 = 99_999_999;

/// The exact syntax [`StuckThresholds::parse`] accepts for its overrides, as a regular
/// expression (for the OpenAPI document): `CODE=SECONDS` pairs separated by `,` or `;`, spaces
/// allowed around each part, codes on the 0..=100 step-5 grid, seconds without a sign or
/// leading zero and at most [`MAX_STUCK_AFTER_SECS`]. Empty (or only spaces) means none.
pub const STUCK_AFTER_BY_CODE_PATTERN: &str = "^ *((0|5|[1-9][05]|100) *= *(0|[1-9][0-9]{0,7})( *[,;] *(0|5|[1-9][05]|100) *= *(0|[1-9][0-9]{0,7}))*)? *$";

/// Plain digits, no sign and no leading zero (except `0` itself), at most `max_digits` long:
/// what the OpenAPI patterns say, so the server accepts exactly what its document declares.
fn plain_digits(text: &str, max_digits: usize) -> Option<u64> {
    let plain = text == "0"
        || (!text.is_empty()
            && text.len() <= max_digits
            && !text.starts_with('0')
            && text.bytes().all(|byte| byte.is_ascii_digit()));
    if plain {
        text.parse().ok()
    } else {
        None
    }
}

impl StuckThresholds {
    /// `default` plus `CODE=SECS` pairs separated by `;` or `,` (e.g. `10=7200;55=600`), in
    /// exactly the syntax of [`STUCK_AFTER_BY_CODE_PATTERN`]; every threshold is at most
    /// [`MAX_STUCK_AFTER_SECS`].
    pub fn parse(default: Duration, overrides: &str) -> Result<Self, String> {
        if default.as_secs() > MAX_STUCK_AFTER_SECS {
            return Err(format!(
                "the default threshold must be at most {MAX_STUCK_AFTER_SECS} seconds"
            ));
        }
        let mut by_code = BTreeMap::new();
        let overrides = overrides.trim_matches(' ');
        if overrides.is_empty() {
            return Ok(StuckThresholds { default, by_code });
        }
        for pair in overrides
            .split([';', ','])
            .map(|pair| pair.trim_matches(' '))
        {
            if pair.is_empty() {
                return Err("an empty entry between separators".to_owned());
            }
            let (code, secs) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not CODE=SECONDS"))?;
            let code: StateCode = plain_digits(code.trim_end_matches(' '), 3)
                .and_then(|code| StateCode::new(i64::try_from(code).ok()?).ok())
                .ok_or_else(|| format!("`{pair}`: the code must be 0 to 100 in steps of 5"))?;
            let secs = plain_digits(secs.trim_start_matches(' '), 8).ok_or_else(|| {
                format!(
                    "`{pair}`: seconds must be a whole number from 0 to {MAX_STUCK_AFTER_SECS}, without sign or leading zero"
                )
            })?;
            by_code.insert(code, Duration::from_secs(secs));
        }
        Ok(StuckThresholds { default, by_code })
    }

    /// The threshold for a build at `state`.
    pub fn for_code(&self, state: StateCode) -> Duration {
        self.by_code.get(&state).copied().unwrap_or(self.default)
    }

    /// The smallest threshold of all: a build idle for less is stuck at no code.
    pub fn smallest(&self) -> Duration {
        self.by_code
            .values()
            .copied()
            .chain([self.default])
            .min()
            .unwrap_or(self.default)
    }

    /// Whether a build still going at `state`, idle since `idle_since`, is stuck at `now`.
    pub fn is_stuck(
        &self,
        state: StateCode,
        idle_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        let idle = (now - idle_since).to_std().unwrap_or(Duration::ZERO);
        idle > self.for_code(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_success_rate_counts_only_finished_builds() {
        let mut counts = SuccessCounts::named("linux");
        counts.add(BuildStatus::Running, 5);
        assert_eq!(counts.success_rate, None);
        counts.add(BuildStatus::Completed, 3);
        counts.add(BuildStatus::Blocked, 1);
        assert_eq!(counts.success_rate, Some(0.75));
        assert_eq!((counts.builds, counts.unfinished), (9, 5));
    }

    #[test]
    fn nearest_rank_percentiles_pick_a_member_of_the_set() {
        let sorted: Vec<i64> = (1..=10).collect();
        assert_eq!(nearest_rank(&sorted, 50), 5);
        assert_eq!(nearest_rank(&sorted, 90), 9);
        assert_eq!(nearest_rank(&[7], 90), 7);
        let stats = DurationStats::of_millis(vec![3000, 1000, 2000]).expect("not empty");
        assert_eq!(
            (stats.p50_secs, stats.p90_secs, stats.max_secs),
            (2.0, 3.0, 3.0)
        );
        assert_eq!(DurationStats::of_millis(Vec::new()), None);
    }

    #[test]
    // `(p * n + 99) / 100` is spelled as SQLite's query spells it, on purpose.
    #[allow(clippy::manual_div_ceil)]
    fn ranked_stats_equal_the_stats_of_the_whole_set() {
        for n in 1..=25_i64 {
            // Distinct values, shuffled, so a wrong position gives a wrong value.
            let values: Vec<i64> = (1..=n).map(|v| (v * 7919) % 1009 + v * 1000).collect();
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let at = |p: u32| sorted[nearest_rank_position(n as u64, p) as usize - 1];
            let n_u = n as u64;
            assert_eq!(
                (50 * n_u + 99) / 100,
                nearest_rank_position(n_u, 50),
                "the SQL formula, n = {n}"
            );
            assert_eq!((90 * n_u + 99) / 100, nearest_rank_position(n_u, 90));
            assert_eq!(
                Some(DurationStats::of_ranked_millis(
                    n_u,
                    at(50),
                    at(90),
                    sorted[sorted.len() - 1]
                )),
                DurationStats::of_millis(values),
                "n = {n}"
            );
        }
    }

    #[test]
    fn a_completion_lasts_from_the_previous_record_skipped_stages_aside() {
        use EventKind as K;
        let t = |millis: i64| DateTime::from_timestamp_millis(1_700_000_000_000 + millis);
        let at = |millis| t(millis).expect("in range");
        // In progress at 0, completed 1.5 s later.
        assert_eq!(
            completion_durations(t(0), [(K::Completed, at(1500))]),
            [Some(1500)]
        );
        // A jump: stage 0 completed, 5 skipped, 10 completed, all in one report. The first
        // completion takes the time since the build started; the second has none of its own.
        assert_eq!(
            completion_durations(
                t(0),
                [
                    (K::Completed, at(900)),
                    (K::Skipped, at(900)),
                    (K::Completed, at(900))
                ]
            ),
            [Some(900), None, None]
        );
        // Failures, starts and operator actions have no duration, but they are records: the
        // completion after them counts from them.
        assert_eq!(
            completion_durations(
                t(0),
                [
                    (K::Failed, at(100)),
                    (K::Retried, at(300)),
                    (K::Completed, at(1000))
                ]
            ),
            [None, None, Some(700)]
        );
        // Nothing known before (history pruned): no duration; the clock going back: none.
        assert_eq!(completion_durations(None, [(K::Completed, at(5))]), [None]);
        assert_eq!(completion_durations(t(10), [(K::Completed, at(5))]), [None]);
    }

    #[test]
    fn stuck_thresholds_take_per_code_overrides() {
        let thresholds =
            StuckThresholds::parse(Duration::from_secs(3600), "10=60; 55=7200").expect("valid");
        let code = |value: i64| StateCode::new(value).expect("code");
        assert_eq!(thresholds.for_code(code(10)), Duration::from_secs(60));
        assert_eq!(thresholds.for_code(code(20)), Duration::from_secs(3600));
        assert_eq!(thresholds.smallest(), Duration::from_secs(60));
        let now = Utc::now();
        let two_minutes_ago = now - chrono::Duration::seconds(120);
        assert!(thresholds.is_stuck(code(10), two_minutes_ago, now));
        assert!(!thresholds.is_stuck(code(20), two_minutes_ago, now));
    }

    #[test]
    fn a_bad_stuck_threshold_names_the_pair() {
        let error = StuckThresholds::parse(Duration::from_secs(1), "12=60").expect_err("bad code");
        assert!(error.starts_with("`12=60`:"), "{error}");
        let error = StuckThresholds::parse(Duration::from_secs(1), "10=soon").expect_err("bad");
        assert!(error.contains("whole number"), "{error}");
        let error = StuckThresholds::parse(Duration::from_secs(1), "10").expect_err("bad");
        assert_eq!(error, "`10` is not CODE=SECONDS");
    }

    #[test]
    fn stuck_thresholds_are_bounded_and_as_strict_as_their_pattern() {
        let default = Duration::from_secs(60);
        let max = format!("10={MAX_STUCK_AFTER_SECS}");
        let parsed = StuckThresholds::parse(default, &max).expect("the maximum is allowed");
        let code = StateCode::new(10).expect("code");
        assert_eq!(
            parsed.for_code(code),
            Duration::from_secs(MAX_STUCK_AFTER_SECS)
        );
        for bad in [
            "10=100000000",
            "10=+5",
            "10=05",
            "010=5",
            "10=5,",
            "10=9223372036854775808",
        ] {
            assert!(StuckThresholds::parse(default, bad).is_err(), "{bad}");
        }
        assert!(StuckThresholds::parse(default, "  ")
            .expect("blank")
            .by_code
            .is_empty());
        let too_long = Duration::from_secs(MAX_STUCK_AFTER_SECS + 1);
        assert!(StuckThresholds::parse(too_long, "").is_err());
    }
}
