//! Builds and their transitions: starting, reading and listing builds and their history, and
//! every change to one (reports, operator actions, leases), each made under the build's row lock.

use std::collections::BTreeMap;

use anyhow::Context as _;
use buildstate_domain::resumes::{self, PassEntry, PreviousEntry, Resume, Saved};
use buildstate_domain::wire::{
    Build, BuildPage, HistoryEntry, HistoryPage, StartBuild, StatusOverview, TransitionResult,
};
use buildstate_domain::{
    apply_operator_action_under, apply_report_under, notes, BuildId, BuildRetryPolicy, Event,
    Lease, OperatorAction, Progress, Refusal, Report, RetryPolicy, StateCode, Transition,
};

/// The retry policy of a build that has none: every stage keeps the build's defaults.
static NO_POLICY: BuildRetryPolicy = BuildRetryPolicy::none();
use chrono::{DateTime, Utc};
use sqlx::{Any, Row, Transaction};

use super::rows::{
    bind_history, bind_values, build_not_found, history_entries, history_from_row,
    history_placeholders, insert_history, optional_time, optional_u32, parsed, state_column, time,
    ChangedOutputs, HistoryRow, MergedOutputs, NewBuildRow, ResumeRow, StoredOutputs,
    BUILD_COLUMNS, BUILD_COLUMNS_BUT_OUTPUTS, HISTORY_COLUMNS,
};
use super::{Actor, Database, Dialect, StoreError, StoreResult};

/// Filters of `GET /builds`: the domain's, parsed from the query string by its rules.
pub use buildstate_domain::wire::BuildFilter;

/// A report to record, with what the rules need beside it.
#[derive(Debug, Clone)]
pub struct TransitionRequest {
    pub report: Report,
    pub message: Option<String>,
    pub source: Option<String>,
    /// With the hash of the request body it came with.
    pub idempotency: Option<(String, String)>,
}

impl Database {
    /// Starts a build with its `started` entry, or returns the unfinished build with the same
    /// key.
    pub async fn start_build(
        &self,
        request: &StartBuild,
        max_retries: u32,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<Started> {
        super::rerun_on_contention(|| async {
            if let Some(key) = &request.key {
                if let Some(build) = self.unfinished_build_with_key(key.as_str()).await? {
                    return Ok(Started::Resumed(build));
                }
            }
            let id = format!("b_{}", crate::secrets::random_id(20));
            let labels = serde_json::to_string(request.labels.as_map()).context("labels")?;
            // An empty policy is no policy: the column stays NULL.
            let retry_policy = request
                .retry_policy
                .as_ref()
                .filter(|policy| !policy.is_empty())
                .map(serde_json::to_string)
                .transpose()
                .context("retry policy")?;
            let mut tx = self.writer.begin().await?;
            let now_ms = now.timestamp_millis();
            let row = NewBuildRow {
                id: &id,
                build_key: request.key.as_ref().map(|key| key.as_str()),
                platform: request.platform.as_str(),
                image_type: request.image_type.as_str(),
                description: request.description.as_deref(),
                labels: &labels,
                state: i64::from(StateCode::TRIGGERED),
                status: buildstate_domain::BuildStatus::Running.as_str(),
                failures: 0,
                max_retries: i64::from(max_retries),
                next_attempt_at: None,
                last_message: None,
                last_seq: 1,
                created_at: now_ms,
                updated_at: now_ms,
                retry_policy: retry_policy.as_deref(),
            };
            let sql = NewBuildRow::insert_sql(1);
            let inserted = bind_values(sqlx::query(&sql), row.values())
                .execute(&mut *tx)
                .await;
            match inserted {
                Ok(_) => {}
                // Another request started the same key first: resume that build.
                Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                    drop(tx);
                    let key = request.key.as_ref().map(|key| key.as_str()).unwrap_or("");
                    return match self.unfinished_build_with_key(key).await? {
                        Some(build) => Ok(Started::Resumed(build)),
                        None => Err(StoreError::Conflict(format!(
                            "a build with key `{key}` was started concurrently; try again"
                        ))),
                    };
                }
                Err(error) => return Err(error.into()),
            }
            let started = Event::plain(StateCode::TRIGGERED, buildstate_domain::EventKind::Started);
            let mut entries = history_entries(
                1,
                &[started],
                request.description.as_deref(),
                None,
                Some(actor),
                now,
            );
            insert_history(&mut tx, &id, &entries, None).await?;
            let build = self.build_in(&mut tx, &id, false).await?;
            tx.commit().await.map_err(StoreError::at_commit)?;
            let started = entries
                .pop()
                .context("a new build has its `started` entry")?;
            Ok(Started::New { build, started })
        })
        .await
        .map_err(StoreError::during(|| "start a build".to_owned()))
    }

    async fn unfinished_build_with_key(&self, key: &str) -> StoreResult<Option<Build>> {
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE build_key = $1 \
             AND status NOT IN ('completed', 'cancelled')"
        ))
        .bind(key)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| self.build_from_row(&row)).transpose()
    }

    /// One build by id.
    pub async fn get_build(&self, id: &BuildId) -> StoreResult<Build> {
        self.get_build_unnamed(id)
            .await
            .map_err(StoreError::during(|| format!("read build `{id}`")))
    }

    async fn get_build_unnamed(&self, id: &BuildId) -> StoreResult<Build> {
        let row = sqlx::query(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| build_not_found(id.as_str()))?;
        self.build_from_row(&row)
    }

    async fn build_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        lock: bool,
    ) -> StoreResult<Build> {
        let lock = if lock { self.dialect.for_update() } else { "" };
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1{lock}"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| build_not_found(id))?;
        self.build_from_row(&row)
    }

    /// The build, locked, its per-stage outputs as stored (a change decodes those only if it
    /// may touch them, see [`StoredOutputs::after`]), when its last history entry was
    /// recorded (what the next completion's duration counts from) and its pending stop
    /// (`stopped_seq`, [`resumes::stop_after`]).
    async fn locked_build_and_outputs(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        lock: RowLock,
    ) -> StoreResult<(Build, StoredOutputs, Option<DateTime<Utc>>, Option<i64>)> {
        let (lock_clause, not_there) = match lock {
            RowLock::Wait => (self.dialect.for_update(), build_not_found(id)),
            // SKIP LOCKED returns no row when another transaction holds it.
            RowLock::SkipIfLocked => (
                self.dialect.for_update_skip_locked(),
                StoreError::Conflict(format!("build `{id}` is being changed by another request")),
            ),
        };
        // The last entry comes with the row, by its primary key: no extra round trip.
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS_BUT_OUTPUTS}, retry_policy, outputs, stage_outputs, stopped_seq, \
             (SELECT h.recorded_at FROM build_history h \
              WHERE h.build_id = builds.id AND h.seq = builds.last_seq) AS last_recorded_at \
             FROM builds WHERE id = $1{lock_clause}"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(not_there)?;
        let stored = StoredOutputs {
            per_stage: row.try_get("stage_outputs")?,
        };
        Ok((
            self.build_from_row(&row)?,
            stored,
            optional_time(&row, "last_recorded_at")?,
            row.try_get("stopped_seq")?,
        ))
    }

    /// Builds matching `filter`, newest first.
    pub async fn list_builds(
        &self,
        filter: &BuildFilter,
        limit: u32,
        offset: u64,
    ) -> StoreResult<BuildPage> {
        // Only the filters given go into the query, each compared with a bound parameter. A
        // catch-all `($1 IS NULL OR platform = $1)` would hide the column from the planner
        // (SQLite plans a statement once, without its values): a filtered list walked the
        // whole newest-first index, 240 ms at 100,000 builds, instead of the status and
        // platform indexes of migration 0008.
        enum Value<'a> {
            Text(&'a str),
            Number(i64),
        }
        let filters: Vec<(&str, Value)> = [
            (
                "platform",
                filter.platform.as_ref().map(|v| Value::Text(v.as_str())),
            ),
            (
                "image_type",
                filter.image_type.as_ref().map(|v| Value::Text(v.as_str())),
            ),
            ("status", filter.status.map(|v| Value::Text(v.as_str()))),
            ("state", filter.state.map(|v| Value::Number(i64::from(v)))),
            (
                "build_key",
                filter.key.as_ref().map(|v| Value::Text(v.as_str())),
            ),
        ]
        .into_iter()
        .filter_map(|(column, value)| Some((column, value?)))
        .collect();
        let conditions: Vec<String> = filters
            .iter()
            .enumerate()
            .map(|(n, (column, _))| format!("{column} = ${}", n + 1))
            .collect();
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {BUILD_COLUMNS} FROM builds {where_clause} \
             ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
            filters.len() + 1,
            filters.len() + 2
        );
        let mut query = sqlx::query(&sql);
        for (_, value) in filters {
            query = match value {
                Value::Text(text) => query.bind(text),
                Value::Number(number) => query.bind(number),
            };
        }
        let rows = query
            .bind(i64::from(limit) + 1)
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await?;
        let more = rows.len() > limit as usize;
        let builds = rows
            .iter()
            .take(limit as usize)
            .map(|row| self.build_from_row(row))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_offset = more.then(|| offset + u64::from(limit));
        Ok(BuildPage {
            builds,
            next_offset,
        })
    }

    /// Applies a report under the build's row lock and appends its history, or returns the
    /// first answer again when its idempotency key was already applied
    /// ([`Change::Replayed`]: nothing recorded now). The rules see the clock as read under the
    /// lock.
    pub async fn record_transition(
        &self,
        id: &BuildId,
        request: &TransitionRequest,
        policy: &RetryPolicy,
        actor: &Actor,
    ) -> StoreResult<Change> {
        let idempotency = request.idempotency.as_ref();
        self.change_build(id, RowLock::Wait, idempotency, Some(actor), |build, now| {
            let defaults = RetryPolicy {
                max_retries: build.max_retries,
                ..*policy
            };
            let stages = build.retry_policy.as_ref().unwrap_or(&NO_POLICY);
            Ok(
                match apply_report_under(
                    &build.progress(),
                    &request.report,
                    &defaults,
                    stages,
                    now,
                )? {
                    Transition::AlreadyDone { stage, .. } => Decision::AlreadyDone {
                        note: notes::already_completed(stage, &build.progress()),
                    },
                    Transition::Applied { progress, events } => Decision::Apply {
                        progress,
                        events,
                        message: request.message.as_deref(),
                        source: request.source.as_deref(),
                        last_message: request.message.as_deref(),
                    },
                },
            )
        })
        .await
        .map_err(StoreError::during(|| {
            format!("record a transition on build `{id}`")
        }))
    }

    /// Retry, reset or cancel a build, recording the operator's reason.
    pub async fn apply_operator_action(
        &self,
        id: &BuildId,
        action: OperatorAction,
        reason: &str,
        actor: &Actor,
    ) -> StoreResult<TransitionResult> {
        self.change_build(id, RowLock::Wait, None, Some(actor), |build, _now| {
            let stages = build.retry_policy.as_ref().unwrap_or(&NO_POLICY);
            let (progress, events) =
                apply_operator_action_under(&build.progress(), action, stages)?;
            Ok(Decision::Apply {
                progress,
                events,
                message: Some(reason),
                source: None,
                last_message: None,
            })
        })
        .await
        // Without an idempotency key nothing is replayed: the answer is what was recorded.
        .map(Change::into_answer)
        .map_err(StoreError::during(|| match action {
            OperatorAction::Retry => format!("retry build `{id}`"),
            OperatorAction::Reset { to } => format!("reset build `{id}` to stage {to}"),
            OperatorAction::Cancel => format!("cancel build `{id}`"),
        }))
    }

    /// Changes a build by the rules, the one way reports, operator actions and the retry
    /// scheduler do: begins a transaction, locks the build (waiting for the lock, or with
    /// [`RowLock::SkipIfLocked`] refusing with a conflict when another change holds it), reads
    /// the clock, answers again a request whose `idempotency` key (with the hash of its body)
    /// was already applied, lets `decide` rule on the build as locked at that time, saves what
    /// it decided with its history entries (made by `actor`, `None` for the server itself),
    /// remembers the answer under the idempotency key, and commits.
    ///
    /// A transaction PostgreSQL aborts for a serialization failure or a deadlock is run again
    /// from the start (it kept nothing and answered nobody), so `decide` may be called again.
    pub(super) async fn change_build<'a>(
        &self,
        id: &BuildId,
        lock: RowLock,
        idempotency: Option<&(String, String)>,
        actor: Option<&Actor>,
        decide: impl Fn(&Build, DateTime<Utc>) -> StoreResult<Decision<'a>>,
    ) -> StoreResult<Change> {
        super::rerun_on_contention(|| self.change_build_once(id, lock, idempotency, actor, &decide))
            .await
    }

    async fn change_build_once<'a>(
        &self,
        id: &BuildId,
        lock: RowLock,
        idempotency: Option<&(String, String)>,
        actor: Option<&Actor>,
        decide: &impl Fn(&Build, DateTime<Utc>) -> StoreResult<Decision<'a>>,
    ) -> StoreResult<Change> {
        let mut tx = self.writer.begin().await?;
        let (mut build, stored_outputs, last_recorded_at, stopped_seq) = self
            .locked_build_and_outputs(&mut tx, id.as_str(), lock)
            .await?;
        // Read the clock only once the row is ours: a report that waited for the lock must not
        // judge a backoff that was set after it arrived.
        let now = Utc::now();
        if let Some((key, request_hash)) = idempotency {
            let earlier = sqlx::query(
                "SELECT request_hash, response_body FROM idempotency_keys \
                 WHERE build_id = $1 AND idempotency_key = $2",
            )
            .bind(id.as_str())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(earlier) = earlier {
                let earlier_hash: String = earlier.try_get("request_hash")?;
                if &earlier_hash != request_hash {
                    return Err(StoreError::Conflict(format!(
                        "idempotency key `{key}` was already used for a different report on build `{id}`"
                    )));
                }
                let body: String = earlier.try_get("response_body")?;
                let first: TransitionResult = serde_json::from_str(&body)
                    .context("stored idempotent answer is unreadable")?;
                return Ok(Change::Replayed(first));
            }
        }
        let decision = match decide(&build, now) {
            // A re-run reporting on a stage that completed learns where the build stands in
            // the same answer.
            Err(StoreError::Refused(refusal @ Refusal::StageAlreadyCompleted { .. })) => {
                let last_entry = self.last_entry_in(&mut tx, &build).await?;
                return Err(StoreError::RefusedAt {
                    refusal,
                    build: Box::new(build),
                    last_entry: Box::new(last_entry),
                });
            }
            decided => decided?,
        };
        let result = match decision {
            Decision::AlreadyDone { note } => TransitionResult {
                resumed: None,
                last_entry: Some(self.last_entry_in(&mut tx, &build).await?),
                note,
                build,
                changed: false,
                recorded: Vec::new(),
            },
            Decision::Apply {
                progress,
                events,
                message,
                source,
                last_message,
            } => {
                let recorded =
                    history_entries(build.last_seq + 1, &events, message, source, actor, now);
                let resume = match resumes::resumes_at(&build.progress(), stopped_seq, &events) {
                    Some(stage) => {
                        let saved = self.saved_before_in(&mut tx, id.as_str(), stage).await?;
                        let report = recorded.last().context("a report records its entry")?;
                        Resume::recorded(stage, report.recorded_at, report.seq, saved)
                    }
                    None => None,
                };
                let resume_columns = ResumeColumns {
                    stopped_seq: resumes::stop_after(stopped_seq, build.last_seq + 1, &events),
                    last_resume: resume
                        .as_ref()
                        .map(serde_json::to_string)
                        .transpose()
                        .context("serialize the resume")?,
                };
                if let Some(resume) = &resume {
                    self.insert_resume(&mut tx, &build, resume).await?;
                }
                let last_message = last_message.or(build.last_message.as_deref());
                let outputs = match stored_outputs.after(&events)? {
                    Some(changed) => OutputsAfter::Changed(changed),
                    None => OutputsAfter::Unchanged(std::mem::take(&mut build.outputs)),
                };
                let mut updated = self
                    .save_progress(
                        &mut tx,
                        id.as_str(),
                        &progress,
                        (&recorded, last_recorded_at),
                        last_message,
                        outputs,
                        resume_columns,
                        now,
                    )
                    .await?;
                // The policy never changes: the build read under the lock has it, parsed.
                updated.retry_policy = build.retry_policy.take();
                TransitionResult {
                    resumed: resume,
                    last_entry: None,
                    note: notes::describe_transition(
                        &events,
                        &updated.progress(),
                        updated.allowed_retries(),
                    ),
                    build: updated,
                    changed: true,
                    recorded,
                }
            }
        };
        if let Some((key, request_hash)) = idempotency {
            sqlx::query(
                "INSERT INTO idempotency_keys (build_id, idempotency_key, request_hash, \
                 response_body, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.as_str())
            .bind(key)
            .bind(request_hash)
            .bind(serde_json::to_string(&result).context("serialize answer")?)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await.map_err(StoreError::at_commit)?;
        Ok(Change::Recorded(result))
    }

    /// The newest history entry of `build` (as locked in `tx`).
    async fn last_entry_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        build: &Build,
    ) -> StoreResult<HistoryEntry> {
        let row = sqlx::query(&format!(
            "SELECT {HISTORY_COLUMNS} FROM build_history WHERE build_id = $1 AND seq = $2"
        ))
        .bind(build.id.as_str())
        .bind(build.last_seq)
        .fetch_one(&mut **tx)
        .await?;
        history_from_row(&row)
    }

    /// A heartbeat: the caller (run `run`, or the holder of lease `fence`) extends its lease on
    /// `stage`. Appends no history: a thousand running stages beating every few seconds would
    /// drown it.
    pub async fn renew_lease(
        &self,
        id: &BuildId,
        stage: StateCode,
        run: Option<&str>,
        fence: Option<i64>,
        policy: &RetryPolicy,
    ) -> StoreResult<Lease> {
        super::rerun_on_contention(|| async {
            let mut tx = self.writer.begin().await?;
            let build = self.build_in(&mut tx, id.as_str(), true).await?;
            // As for reports: the clock is read once the row is ours.
            let now = Utc::now();
            let lease =
                buildstate_domain::renew_lease(&build.progress(), stage, run, fence, policy, now)?;
            sqlx::query("UPDATE builds SET lease_expires_at = $1 WHERE id = $2")
                .bind(lease.expires_at.timestamp_millis())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
            tx.commit().await.map_err(StoreError::at_commit)?;
            Ok(lease)
        })
        .await
        .map_err(StoreError::during(|| {
            format!("renew the lease on stage {stage} of build `{id}`")
        }))
    }

    /// The holder gives its lease on `stage` up without a report: the build stays
    /// `in_progress` and any run may claim the stage at once.
    pub async fn release_lease(
        &self,
        id: &BuildId,
        stage: StateCode,
        run: Option<&str>,
        fence: Option<i64>,
    ) -> StoreResult<Build> {
        super::rerun_on_contention(|| async {
            let mut tx = self.writer.begin().await?;
            let build = self.build_in(&mut tx, id.as_str(), true).await?;
            let now = Utc::now();
            let released =
                buildstate_domain::release_lease(&build.progress(), stage, run, fence, now)?;
            // The run was interrupted: the next run's report on the stage resumes the build.
            let row = sqlx::query(&format!(
                "UPDATE builds SET lease_holder = NULL, lease_fence = NULL, \
                 lease_expires_at = NULL, updated_at = $1, stopped_seq = $3 WHERE id = $2 \
                 RETURNING {BUILD_COLUMNS}"
            ))
            .bind(now.timestamp_millis())
            .bind(id.as_str())
            .bind(released.fence)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await.map_err(StoreError::at_commit)?;
            self.build_from_row(&row)
        })
        .await
        .map_err(StoreError::during(|| {
            format!("release the lease on stage {stage} of build `{id}`")
        }))
    }

    /// Appends `recorded` to the build's history (the entry before them recorded at the time
    /// given beside them) and saves its new progress (and its outputs, when they changed),
    /// returning the updated build. The outputs are not read back: `outputs` says what the row
    /// now holds. On PostgreSQL both go in one statement (an INSERT in a `WITH`), saving a
    /// round trip while the row lock is held; SQLite cannot modify in a `WITH`, and its writes
    /// are local calls anyway.
    #[allow(clippy::too_many_arguments)]
    async fn save_progress(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        progress: &Progress,
        (recorded, previous): (&[HistoryEntry], Option<DateTime<Utc>>),
        last_message: Option<&str>,
        outputs: OutputsAfter,
        resume: ResumeColumns,
        now: DateTime<Utc>,
    ) -> StoreResult<Build> {
        let last_seq = recorded.last().map_or(0, |entry| entry.seq);
        let lease = progress.lease.as_ref();
        let (written, merged) = match outputs {
            OutputsAfter::Changed(changed) => (Some(changed.json), changed.merged),
            OutputsAfter::Unchanged(merged) => (None, merged),
        };
        // RETURNING hands back the updated row in the same round trip (SQLite has it since 3.35).
        let update = format!(
            "UPDATE builds SET state = $1, status = $2, failures = $3, next_attempt_at = $4, \
             last_message = $5, last_seq = $6, updated_at = $7, lease_holder = $8, \
             lease_fence = $9, lease_expires_at = $10, \
             stage_outputs = COALESCE($11, stage_outputs), outputs = COALESCE($12, outputs), \
             retry_due_seq = $14, stopped_seq = $15, last_resume = COALESCE($16, last_resume), \
             reopened_until = $17 WHERE id = $13 RETURNING {BUILD_COLUMNS_BUT_OUTPUTS}"
        );
        let sql = match self.dialect {
            Dialect::Postgres => format!(
                "WITH appended AS (INSERT INTO build_history ({columns}) VALUES {placeholders}) \
                 {update}",
                columns = HistoryRow::COLUMNS,
                placeholders = history_placeholders(18, recorded.len()),
            ),
            Dialect::Sqlite => {
                insert_history(tx, id, recorded, previous).await?;
                update
            }
        };
        let mut query = sqlx::query(&sql)
            .bind(i64::from(progress.state))
            .bind(progress.status.as_str())
            .bind(i64::from(progress.failures))
            .bind(progress.next_attempt_at.map(|at| at.timestamp_millis()))
            .bind(last_message)
            .bind(last_seq)
            .bind(now.timestamp_millis())
            .bind(lease.map(|lease| lease.holder.as_str()))
            .bind(lease.map(|lease| lease.fence))
            .bind(lease.map(|lease| lease.expires_at.timestamp_millis()))
            .bind(written.as_ref().map(|json| json.per_stage.as_str()))
            .bind(written.as_ref().map(|json| json.merged.as_str()))
            .bind(id)
            .bind(progress.retry_due_seq)
            .bind(resume.stopped_seq)
            .bind(resume.last_resume)
            .bind(progress.reopened_until.map(i64::from));
        if self.dialect == Dialect::Postgres {
            query = bind_history(query, id, recorded, previous);
        }
        let row = query.fetch_one(&mut **tx).await?;
        self.build_with_outputs(&row, merged)
    }

    /// What a resume at `stage` of build `id` saved, from its history as locked in `tx`: every
    /// completion and skip before `stage`, each with the entry just before it
    /// ([`resumes::saved_before`] picks the current pass's and their durations).
    async fn saved_before_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        stage: StateCode,
    ) -> StoreResult<Saved> {
        let rows = sqlx::query(
            "SELECT c.seq, c.state, c.kind, c.attempt, c.recorded_at, p.state AS p_state, \
             p.kind AS p_kind, p.attempt AS p_attempt, p.recorded_at AS p_recorded_at \
             FROM build_history c LEFT JOIN build_history p \
             ON p.build_id = c.build_id AND p.seq = c.seq - 1 \
             WHERE c.build_id = $1 AND c.state < $2 AND c.kind IN ('completed', 'skipped')",
        )
        .bind(id)
        .bind(i64::from(stage))
        .fetch_all(&mut **tx)
        .await?;
        let entries = rows
            .iter()
            .map(|row| {
                let previous = match optional_time(row, "p_recorded_at")? {
                    Some(at) => Some(PreviousEntry {
                        state: state_column(row, "p_state")?,
                        kind: parsed(row, "p_kind")?,
                        attempt: optional_u32(row, "p_attempt")?,
                        at,
                    }),
                    None => None,
                };
                Ok(PassEntry {
                    seq: row.try_get("seq")?,
                    state: state_column(row, "state")?,
                    kind: parsed(row, "kind")?,
                    attempt: optional_u32(row, "attempt")?,
                    at: time(row, "recorded_at")?,
                    previous,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(resumes::saved_before(stage, entries))
    }

    /// Keeps `resume` of `build` for the savings report.
    async fn insert_resume(
        &self,
        tx: &mut Transaction<'static, Any>,
        build: &Build,
        resume: &Resume,
    ) -> StoreResult<()> {
        let row = ResumeRow {
            build_id: build.id.as_str(),
            seq: resume.seq,
            resumed_at: resume.at.timestamp_millis(),
            stage: i64::from(resume.stage),
            platform: build.platform.as_str(),
            image_type: build.image_type.as_str(),
            stages_not_rerun: i64::from(resume.stages_not_rerun),
            saved_ms: i64::try_from(resume.saved_ms).unwrap_or(i64::MAX),
            unknown_durations: i64::from(resume.unknown_durations),
        };
        bind_values(sqlx::query(&ResumeRow::insert_sql(1)), row.values())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// History entries with `seq > after`, oldest first, at most `limit`.
    pub async fn history_after(
        &self,
        id: &BuildId,
        after: i64,
        limit: u32,
    ) -> StoreResult<HistoryPage> {
        async {
            // Distinguish "no such build" from "no entries after `after`".
            self.get_build_unnamed(id).await?;
            let rows = sqlx::query(
                "SELECT seq, state, kind, message, attempt, reported_by, token_id, source, \
                 recorded_at, outputs FROM build_history WHERE build_id = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3",
            )
            .bind(id.as_str())
            .bind(after)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.reader)
            .await?;
            let more = rows.len() > limit as usize;
            let entries = rows
                .iter()
                .take(limit as usize)
                .map(history_from_row)
                .collect::<StoreResult<Vec<_>>>()?;
            let next_after = if more {
                entries.last().map(|entry| entry.seq)
            } else {
                None
            };
            Ok(HistoryPage {
                entries,
                next_after,
            })
        }
        .await
        .map_err(StoreError::during(|| {
            format!("read the history of build `{id}`")
        }))
    }

    /// Counts by status and by platform.
    pub async fn status_overview(&self) -> StoreResult<StatusOverview> {
        let count_by = |column: &'static str| async move {
            let rows = sqlx::query(&format!(
                "SELECT {column} AS name, COUNT(*) AS n FROM builds GROUP BY {column}"
            ))
            .fetch_all(&self.reader)
            .await?;
            rows.iter()
                .map(|row| {
                    let name: String = row.try_get("name")?;
                    let count: i64 = row.try_get("n")?;
                    Ok((name, u64::try_from(count).unwrap_or(0)))
                })
                .collect::<StoreResult<BTreeMap<String, u64>>>()
        };
        let by_status = count_by("status").await?;
        let by_platform = count_by("platform").await?;
        Ok(StatusOverview {
            builds: by_status.values().sum(),
            by_status,
            by_platform,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }

    /// Forgets the answers of idempotent reports recorded before `cutoff`; returns how many.
    /// A client retries within minutes, so keeping a day of answers is plenty, and without
    /// this the table would grow with every report.
    pub async fn forget_idempotency_keys_before(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(cutoff.timestamp_millis())
            .execute(&self.writer)
            .await?;
        Ok(deleted.rows_affected())
    }
}

/// What [`Database::start_build`] did.
#[derive(Debug)]
pub enum Started {
    /// Started a new build, recording `started`, its first history entry (as a read of its
    /// history would return it).
    New { build: Build, started: HistoryEntry },
    /// Found the unfinished build with the same key: nothing recorded.
    Resumed(Build),
}

/// What a report's answer is: recorded just now, or an earlier request's answer returned again
/// for its idempotency key. Only the first has anything new to publish.
#[derive(Debug)]
pub enum Change {
    /// Decided and committed by this call: `recorded` holds the entries it appended.
    Recorded(TransitionResult),
    /// The first answer to the same idempotency key, again; nothing was recorded now, and its
    /// `recorded` entries were published when they were.
    Replayed(TransitionResult),
}

impl Change {
    /// The build as the answer shows it.
    pub fn build(&self) -> &Build {
        &self.answer().build
    }

    /// The entries this call appended to the history: none for a replay.
    pub fn recorded_now(&self) -> &[HistoryEntry] {
        match self {
            Change::Recorded(result) => &result.recorded,
            Change::Replayed(_) => &[],
        }
    }

    /// The resume this call recorded: none for a replay.
    pub fn resumed_now(&self) -> Option<&Resume> {
        match self {
            Change::Recorded(result) => result.resumed.as_ref(),
            Change::Replayed(_) => None,
        }
    }

    pub fn answer(&self) -> &TransitionResult {
        match self {
            Change::Recorded(result) | Change::Replayed(result) => result,
        }
    }

    /// The answer for the client: the same whether recorded now or replayed.
    pub fn into_answer(self) -> TransitionResult {
        match self {
            Change::Recorded(result) | Change::Replayed(result) => result,
        }
    }
}

/// What a change does to a build's outputs: rewrites both columns, or leaves them as the
/// build (read under the lock) shows them.
enum OutputsAfter {
    Changed(ChangedOutputs),
    Unchanged(MergedOutputs),
}

/// What a change writes about resumes: the pending stop after it, and the resume it recorded
/// (JSON; `None` keeps the build's latest).
struct ResumeColumns {
    stopped_seq: Option<i64>,
    last_resume: Option<String>,
}

/// How [`Database::change_build`] takes the build's row lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RowLock {
    /// Waits until the change holding it commits: a report or an operator action must apply.
    Wait,
    /// On PostgreSQL, does not wait (`SKIP LOCKED`): the change is refused with a conflict,
    /// which the retry scheduler takes as "another process or a report has this build now".
    /// SQLite has one writer, so nothing else ever holds it.
    SkipIfLocked,
}

/// What the rules decide a change does to a build (see [`Database::change_build`]).
pub(super) enum Decision<'a> {
    /// Nothing: the build and its history stay as they are (a report of a stage already
    /// completed); `note` says so.
    AlreadyDone { note: String },
    /// The build moves to `progress` and `events` are appended to its history, with `message`
    /// and `source`; `last_message` replaces the build's last message (`None` keeps it).
    Apply {
        progress: Progress,
        events: Vec<Event>,
        message: Option<&'a str>,
        source: Option<&'a str>,
        last_message: Option<&'a str>,
    },
}
