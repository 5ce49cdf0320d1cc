//! The reports' queries: success rates, failures, stage durations, stuck and blocked builds,
//! time to recover. The arithmetic (rates, percentiles, thresholds) is the domain's
//! (`buildstate_domain::reports`); this module only reads rows, with the same parameterized
//! SQL on both dialects, each query served by an index of migration 0006 (durations: 0008 on
//! PostgreSQL, 0009 on SQLite).

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

use super::rows::{parsed, state_column, time, u32_column};
use super::{Database, Dialect, StoreError, StoreResult};

/// The most stuck (and, separately, blocked) builds one report lists, oldest first.
pub const MAX_ATTENTION_BUILDS: u32 = 500;

fn count(row: &AnyRow, column: &str) -> StoreResult<u64> {
    let value: i64 = row.try_get(column)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Names the report a database error came from.
fn in_report(report: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| StoreError::during(|| format!("read the {report} report"))(error.into())
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
        let mut stages = match self.dialect {
            Dialect::Postgres => self.ranked_durations(since).await?,
            Dialect::Sqlite => self.durations_stage_by_stage(since).await?,
        };
        stages.sort_by_key(|stage| stage.state);
        Ok(DurationReport { since, stages })
    }

    /// PostgreSQL: each completion carries its duration (migration 0008), under a partial
    /// covering index on (recorded_at, state, duration_ms), and the ordered-set aggregate
    /// `percentile_disc(p)` picks the value at position ⌈p·n⌉, which is
    /// `nearest_rank_position` (exact in binary floating point for 0.5 and 0.9 at any count a
    /// window can hold): one row per stage, whatever the window holds, ~3× faster than
    /// ranking every row with window functions.
    async fn ranked_durations(&self, since: DateTime<Utc>) -> StoreResult<Vec<StageDurations>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n, \
             percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50, \
             percentile_disc(0.9) WITHIN GROUP (ORDER BY duration_ms) AS p90, \
             MAX(duration_ms) AS longest \
             FROM build_history WHERE recorded_at >= $1 AND duration_ms IS NOT NULL \
             GROUP BY state",
        )
        .bind(since.timestamp_millis())
        .fetch_all(&self.reader)
        .await
        .map_err(in_report("durations"))?;
        rows.iter()
            .map(|row| {
                let state = state_column(row, "state")?;
                Ok(StageDurations {
                    state,
                    state_name: self.names.name(state).to_owned(),
                    stats: DurationStats::of_ranked_millis(
                        count(row, "n")?,
                        row.try_get("p50")?,
                        row.try_get("p90")?,
                        row.try_get("longest")?,
                    ),
                })
            })
            .collect()
    }

    /// SQLite has no ordered-set aggregate, and ranking the window's completions with
    /// `ROW_NUMBER`/`COUNT` windows made it sort them all (~77,000 in 7 days at 100,000
    /// builds: most of 184 ms). Instead, one query per stage reads that stage's durations in
    /// the window straight off the partial index on (state, recorded_at, duration_ms)
    /// (migration 0009) — a range, no sort — as one `group_concat` string, and the percentiles
    /// are picked here (`DurationStats::of_millis`, the same nearest rank).
    async fn durations_stage_by_stage(
        &self,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<StageDurations>> {
        let mut stages = Vec::new();
        for state in StateCode::all() {
            let durations: Option<String> = sqlx::query_scalar(
                "SELECT group_concat(duration_ms) FROM build_history \
                 WHERE state = $1 AND recorded_at >= $2 AND duration_ms IS NOT NULL",
            )
            .bind(i64::from(state))
            .bind(since.timestamp_millis())
            .fetch_one(&self.reader)
            .await
            .map_err(in_report("durations"))?;
            let Some(durations) = durations else {
                continue;
            };
            let millis = durations
                .split(',')
                .map(|value| value.parse::<i64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| {
                    StoreError::Other(anyhow::Error::new(error).context(format!(
                        "stage {state}'s stored durations are not whole milliseconds"
                    )))
                })?;
            if let Some(stats) = DurationStats::of_millis(millis) {
                stages.push(StageDurations {
                    state,
                    state_name: self.names.name(state).to_owned(),
                    stats,
                });
            }
        }
        Ok(stages)
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
        // The completion after each first failure is a scalar subquery, run once per failed
        // stage through the history's primary key (build_id, seq > first failure): as a
        // LEFT JOIN, PostgreSQL's planner hashed every completion of the whole history
        // instead (a sequential scan of ~1.1 million rows at 100,000 builds: 0.9–1.3 s against
        // ~110 ms for 7 days).
        let rows = sqlx::query(
            "SELECT f.state, f.failed_at, \
             (SELECT MIN(c.recorded_at) FROM build_history c \
              WHERE c.build_id = f.build_id AND c.seq > f.first_seq \
              AND c.state = f.state AND c.kind = 'completed') AS recovered_at FROM \
             (SELECT build_id, state, MIN(seq) AS first_seq, MIN(recorded_at) AS failed_at \
              FROM build_history WHERE kind = 'failed' AND recorded_at >= $1 \
              GROUP BY build_id, state) f",
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

#[cfg(test)]
mod tests {
    //! Migration 0008 on history written before it: every completion gets the duration the
    //! write path gives a new one, and the durations report reads them. On a real SQLite file,
    //! and on a scratch PostgreSQL database when `BUILDSTATE_TEST_POSTGRES_URL` is set.

    use std::borrow::Cow;

    use buildstate_domain::reports::{completion_durations, DurationStats};
    use buildstate_domain::EventKind;
    use sqlx::{AnyPool, Connection as _};

    use crate::db::{Database, Dialect};
    use crate::names::StateNames;

    const T0: i64 = 1_900_000_000_000;

    /// One build's history as an older server wrote it: (seq, state, kind, ms after T0).
    const HISTORY: [(i64, i64, &str, i64); 11] = [
        (1, 0, "started", 0),
        (2, 0, "completed", 1_000),
        (3, 5, "in_progress", 1_500),
        (4, 5, "completed", 4_000),
        // A jump: 10 and 15 skipped, 20 completed, timed from stage 5's completion.
        (5, 10, "skipped", 6_000),
        (6, 15, "skipped", 6_000),
        (7, 20, "completed", 6_000),
        (8, 25, "failed", 7_000),
        (9, 25, "retried", 7_200),
        (10, 25, "completed", 9_200),
        // The same millisecond as the entry before it: no time of its own.
        (11, 30, "completed", 9_200),
    ];

    async fn backfills_the_durations_of_earlier_history(url: &str) {
        sqlx::any::install_default_drivers();
        let mut migrator = match Dialect::from_url(url).expect("dialect") {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        let all = migrator.migrations.clone();
        migrator.migrations = Cow::Owned(
            all.iter()
                .filter(|migration| migration.version < 8)
                .cloned()
                .collect(),
        );
        let pool = AnyPool::connect(url).await.expect("connect");
        migrator.run(&pool).await.expect("migrations before 0008");
        sqlx::query(
            "INSERT INTO builds (id, platform, image_type, labels, state, status, failures, \
             max_retries, last_seq, created_at, updated_at) \
             VALUES ('b_old', 'aws', 'rhel8', '{}', 35, 'running', 0, 3, 11, $1, $2)",
        )
        .bind(T0)
        .bind(T0 + 9_200)
        .execute(&pool)
        .await
        .expect("insert build");
        for (seq, state, kind, at) in HISTORY {
            sqlx::query(
                "INSERT INTO build_history (build_id, seq, state, kind, recorded_at) \
                 VALUES ('b_old', $1, $2, $3, $4)",
            )
            .bind(seq)
            .bind(state)
            .bind(kind)
            .bind(T0 + at)
            .execute(&pool)
            .await
            .expect("insert history");
        }
        pool.close().await;

        let db = Database::connect(url, StateNames::default(), 2)
            .await
            .expect("the server's migrations, 0008 included");
        let stored: Vec<Option<i64>> =
            sqlx::query_scalar("SELECT duration_ms FROM build_history ORDER BY seq")
                .fetch_all(&db.reader)
                .await
                .expect("durations");
        assert_eq!(
            stored,
            [
                None,
                Some(1_000),
                None,
                Some(2_500),
                None,
                None,
                Some(2_000),
                None,
                None,
                Some(2_000),
                None
            ]
        );
        let written = completion_durations(
            None,
            HISTORY.iter().map(|(_, _, kind, at)| {
                let kind: EventKind = kind.parse().expect("kind");
                let at = chrono::DateTime::from_timestamp_millis(T0 + at).expect("time");
                (kind, at)
            }),
        );
        assert_eq!(stored, written, "the backfill and the write path agree");

        let since = chrono::DateTime::from_timestamp_millis(T0).expect("time");
        let report = db.duration_report(since).await.expect("report");
        let by_stage: Vec<(i64, Option<DurationStats>)> = report
            .stages
            .into_iter()
            .map(|stage| (i64::from(stage.state), Some(stage.stats)))
            .collect();
        assert_eq!(
            by_stage,
            [
                (0, DurationStats::of_millis(vec![1_000])),
                (5, DurationStats::of_millis(vec![2_500])),
                (20, DurationStats::of_millis(vec![2_000])),
                (25, DurationStats::of_millis(vec![2_000])),
            ]
        );
        db.close().await;
    }

    #[tokio::test]
    async fn migration_0008_backfills_durations_on_sqlite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        backfills_the_durations_of_earlier_history(&url).await;
    }

    #[tokio::test]
    async fn migration_0008_backfills_durations_on_postgres() {
        let Ok(admin_url) = std::env::var("BUILDSTATE_TEST_POSTGRES_URL") else {
            eprintln!("BUILDSTATE_TEST_POSTGRES_URL is not set: PostgreSQL not tested");
            return;
        };
        let name = format!("bst_test_{}", crate::secrets::random_id(12).to_lowercase());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to BUILDSTATE_TEST_POSTGRES_URL");
        // The name is ours (letters and digits); identifiers cannot be bound.
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create scratch database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        backfills_the_durations_of_earlier_history(&format!("{base}/{name}")).await;
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .expect("drop scratch database");
    }
}
