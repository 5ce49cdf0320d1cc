//! The reports' queries: success rates, failures, stage durations, stuck and blocked builds,
//! time to recover. The arithmetic (rates, percentiles, thresholds) is the domain's
//! (`buildstate_domain::reports`); this module only reads rows, with the same parameterized
//! SQL on both dialects, each query served by an index of migration 0006.

use std::collections::BTreeMap;

use buildstate_domain::reports::{
    AttentionBuild, DurationReport, DurationStats, FailureReport, RecoveryReport, StageDurations,
    StageFailures, StageRecovery, StageRecoveryTotal, StuckReport, StuckThresholds, SuccessCounts,
    SuccessReport,
};
use buildstate_domain::{BuildStatus, StateCode};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{parsed, state_column, time, u32_column, Database, StoreError, StoreResult};

/// The most stuck (and, separately, blocked) builds one report lists, oldest first.
pub const MAX_ATTENTION_BUILDS: u32 = 500;

fn count(row: &AnyRow, column: &str) -> StoreResult<u64> {
    let value: i64 = row.try_get(column)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Names the report a database error came from.
fn in_report(report: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| {
        StoreError::Other(
            anyhow::Error::new(error).context(format!("failed to read the {report} report")),
        )
    }
}

impl Database {
    /// Builds started since `since`, by platform and by image type.
    pub async fn success_report(&self, since: DateTime<Utc>) -> StoreResult<SuccessReport> {
        let group = |column: &'static str| async move {
            let rows = sqlx::query(&format!(
                "SELECT {column} AS name, status, COUNT(*) AS n FROM builds \
                 WHERE created_at >= $1 GROUP BY {column}, status"
            ))
            .bind(since.timestamp_millis())
            .fetch_all(&self.reader)
            .await
            .map_err(in_report("success"))?;
            let mut groups: BTreeMap<String, SuccessCounts> = BTreeMap::new();
            for row in &rows {
                let name: String = row.try_get("name")?;
                let status: BuildStatus = parsed(row, "status")?;
                groups
                    .entry(name.clone())
                    .or_insert_with(|| SuccessCounts::named(name))
                    .add(status, count(row, "n")?);
            }
            StoreResult::Ok(groups.into_values().collect::<Vec<_>>())
        };
        Ok(SuccessReport {
            since,
            by_platform: group("platform").await?,
            by_image_type: group("image_type").await?,
        })
    }

    /// Failures and retries by stage code since `since`, with the builds blocked there now.
    pub async fn failure_report(&self, since: DateTime<Utc>) -> StoreResult<FailureReport> {
        // Failures per (build, stage) first, so "builds" and "retries" come out of one scan.
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS builds, CAST(SUM(n) AS BIGINT) AS failures FROM \
             (SELECT build_id, state, COUNT(*) AS n FROM build_history \
              WHERE kind = 'failed' AND recorded_at >= $1 GROUP BY build_id, state) per_build \
             GROUP BY state",
        )
        .bind(since.timestamp_millis())
        .fetch_all(&self.reader)
        .await
        .map_err(in_report("failures"))?;
        let operator_retries = self
            .count_by_state(
                "SELECT state, COUNT(*) AS n FROM build_history \
                 WHERE kind = 'retried' AND recorded_at >= $1 GROUP BY state",
                Some(since),
            )
            .await?;
        let blocked_now = self
            .count_by_state(
                "SELECT state, COUNT(*) AS n FROM builds WHERE status = 'blocked' GROUP BY state",
                None,
            )
            .await?;
        let mut stages: BTreeMap<StateCode, StageFailures> = BTreeMap::new();
        for row in &rows {
            let state = state_column(row, "state")?;
            let failures = count(row, "failures")?;
            let builds = count(row, "builds")?;
            stages.insert(
                state,
                StageFailures {
                    state,
                    state_name: self.names.name(state).to_owned(),
                    failures,
                    builds,
                    retries: failures - builds.min(failures)
                        + operator_retries.get(&state).copied().unwrap_or(0),
                    blocked_now: 0,
                },
            );
        }
        for (state, blocked) in blocked_now {
            stages
                .entry(state)
                .or_insert_with(|| StageFailures {
                    state,
                    state_name: self.names.name(state).to_owned(),
                    failures: 0,
                    builds: 0,
                    retries: operator_retries.get(&state).copied().unwrap_or(0),
                    blocked_now: 0,
                })
                .blocked_now = blocked;
        }
        Ok(FailureReport {
            since,
            stages: stages.into_values().collect(),
        })
    }

    async fn count_by_state(
        &self,
        sql: &str,
        since: Option<DateTime<Utc>>,
    ) -> StoreResult<BTreeMap<StateCode, u64>> {
        let mut query = sqlx::query(sql);
        if let Some(since) = since {
            query = query.bind(since.timestamp_millis());
        }
        let rows = query
            .fetch_all(&self.reader)
            .await
            .map_err(in_report("failures"))?;
        rows.iter()
            .map(|row| Ok((state_column(row, "state")?, count(row, "n")?)))
            .collect()
    }

    /// p50/p90 of each stage's duration, over completions since `since`.
    pub async fn duration_report(&self, since: DateTime<Utc>) -> StoreResult<DurationReport> {
        // The previous report of the same build, skipped stages aside (they are recorded with
        // the report that jumps past them). Entries of the same report share a timestamp, so a
        // stage completed by a jump (stage 0) has no duration of its own: `recorded_at > prev`.
        let rows = sqlx::query(
            "SELECT state, recorded_at - prev AS millis FROM \
             (SELECT state, kind, recorded_at, \
              LAG(recorded_at) OVER (PARTITION BY build_id ORDER BY seq) AS prev \
              FROM build_history WHERE recorded_at >= $1 AND kind <> 'skipped') steps \
             WHERE kind = 'completed' AND prev IS NOT NULL AND recorded_at > prev",
        )
        .bind(since.timestamp_millis())
        .fetch_all(&self.reader)
        .await
        .map_err(in_report("durations"))?;
        let mut by_state: BTreeMap<StateCode, Vec<i64>> = BTreeMap::new();
        for row in &rows {
            by_state
                .entry(state_column(row, "state")?)
                .or_default()
                .push(row.try_get("millis")?);
        }
        let stages = by_state
            .into_iter()
            .filter_map(|(state, millis)| {
                DurationStats::of_millis(millis).map(|stats| StageDurations {
                    state,
                    state_name: self.names.name(state).to_owned(),
                    stats,
                })
            })
            .collect();
        Ok(DurationReport { since, stages })
    }

    /// Builds still going with nothing recorded for longer than their threshold, and blocked
    /// builds; oldest first, at most [`MAX_ATTENTION_BUILDS`] of each.
    pub async fn stuck_report(
        &self,
        thresholds: &StuckThresholds,
        now: DateTime<Utc>,
    ) -> StoreResult<StuckReport> {
        // Thresholds are bounded (`MAX_STUCK_AFTER_SECS`), so this never falls off the
        // calendar; if it did, every build would be a candidate (the epoch), never a panic.
        let quiet_since = chrono::Duration::from_std(thresholds.smallest())
            .ok()
            .and_then(|threshold| now.checked_sub_signed(threshold))
            .unwrap_or_default();
        let columns = "id, platform, image_type, state, status, failures, last_message, \
                       updated_at, next_attempt_at";
        // Candidates by the smallest threshold; each one's own threshold is applied below.
        let candidates = sqlx::query(&format!(
            "SELECT {columns} FROM builds WHERE status IN ('running', 'in_progress', 'failed') \
             AND updated_at < $1 ORDER BY updated_at LIMIT $2"
        ))
        .bind(quiet_since.timestamp_millis())
        .bind(i64::from(MAX_ATTENTION_BUILDS) * 4)
        .fetch_all(&self.reader)
        .await
        .map_err(in_report("stuck builds"))?;
        let blocked = sqlx::query(&format!(
            "SELECT {columns} FROM builds WHERE status = 'blocked' ORDER BY updated_at LIMIT $1"
        ))
        .bind(i64::from(MAX_ATTENTION_BUILDS))
        .fetch_all(&self.reader)
        .await
        .map_err(in_report("stuck builds"))?;
        let mut stuck = Vec::new();
        for row in &candidates {
            let build = self.attention_build(row, now)?;
            if thresholds.is_stuck(build.state, build.quiet_since, now) {
                stuck.push(build);
            }
        }
        stuck.truncate(MAX_ATTENTION_BUILDS as usize);
        Ok(StuckReport {
            stuck_after_secs: thresholds.default.as_secs(),
            stuck_after_by_code: thresholds
                .by_code
                .iter()
                .map(|(code, after)| (code.to_string(), after.as_secs()))
                .collect(),
            stuck,
            blocked: blocked
                .iter()
                .map(|row| self.attention_build(row, now))
                .collect::<StoreResult<_>>()?,
        })
    }

    fn attention_build(&self, row: &AnyRow, now: DateTime<Utc>) -> StoreResult<AttentionBuild> {
        let state = state_column(row, "state")?;
        let updated_at = time(row, "updated_at")?;
        // A failed build waiting out its backoff is quiet on purpose until the backoff ends.
        let next_attempt_at: Option<i64> = row.try_get("next_attempt_at")?;
        let idle_since = next_attempt_at
            .and_then(DateTime::from_timestamp_millis)
            .map_or(updated_at, |at| at.max(updated_at));
        Ok(AttentionBuild {
            id: parsed(row, "id")?,
            platform: parsed(row, "platform")?,
            image_type: parsed(row, "image_type")?,
            state,
            state_name: self.names.name(state).to_owned(),
            status: parsed(row, "status")?,
            failures: u32_column(row, "failures")?,
            last_message: row.try_get("last_message")?,
            updated_at,
            quiet_since: idle_since,
            idle_secs: u64::try_from((now - idle_since).num_seconds()).unwrap_or(0),
        })
    }

    /// Time from each stage's first failure in a build (since `since`) to its completion.
    pub async fn recovery_report(&self, since: DateTime<Utc>) -> StoreResult<RecoveryReport> {
        let rows = sqlx::query(
            "SELECT f.state, f.failed_at, MIN(c.recorded_at) AS recovered_at FROM \
             (SELECT build_id, state, MIN(seq) AS first_seq, MIN(recorded_at) AS failed_at \
              FROM build_history WHERE kind = 'failed' AND recorded_at >= $1 \
              GROUP BY build_id, state) f \
             LEFT JOIN build_history c ON c.build_id = f.build_id AND c.seq > f.first_seq \
              AND c.state = f.state AND c.kind = 'completed' \
             GROUP BY f.build_id, f.state, f.failed_at",
        )
        .bind(since.timestamp_millis())
        .fetch_all(&self.reader)
        .await
        .map_err(in_report("recovery"))?;
        let mut by_state: BTreeMap<StateCode, (Vec<i64>, u64)> = BTreeMap::new();
        let (mut all, mut all_unrecovered) = (Vec::new(), 0);
        for row in &rows {
            let entry = by_state.entry(state_column(row, "state")?).or_default();
            let failed_at: i64 = row.try_get("failed_at")?;
            match row.try_get::<Option<i64>, _>("recovered_at")? {
                Some(recovered_at) => {
                    entry.0.push(recovered_at - failed_at);
                    all.push(recovered_at - failed_at);
                }
                None => {
                    entry.1 += 1;
                    all_unrecovered += 1;
                }
            }
        }
        let stages = by_state
            .into_iter()
            .map(|(state, (millis, unrecovered))| StageRecovery {
                state,
                state_name: self.names.name(state).to_owned(),
                recovered: millis.len() as u64,
                unrecovered,
                time_to_recover: DurationStats::of_millis(millis),
            })
            .collect();
        Ok(RecoveryReport {
            since,
            overall: StageRecoveryTotal {
                recovered: all.len() as u64,
                unrecovered: all_unrecovered,
                time_to_recover: DurationStats::of_millis(all),
            },
            stages,
        })
    }
}
