//! How rows and the store's types map onto each other: the column lists the queries select and
//! insert, reading a build, a history entry, a lease, a token or a user from a row, writing
//! build and history rows ([`NewBuildRow`], [`HistoryRow`]: also what a benchmark seeder writes,
//! so it cannot fall behind the schema), and a build's per-stage and merged outputs as their
//! columns hold them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::Context as _;
use buildstate_domain::resumes::Resume;
use buildstate_domain::wire::{Build, HistoryEntry, TokenInfo, User};
use buildstate_domain::{notes, Event, Lease, Outputs, StageOutput, StageOutputs, StateCode};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Actor, Database, StoreError, StoreResult};

/// Every column of a build but its per-stage outputs and its retry policy (a write that knows
/// them already need not read them back: the policy never changes, and a report parses it once).
macro_rules! build_columns_but_outputs {
    () => {
        "id, build_key, platform, image_type, description, labels, state, status, failures, \
         max_retries, next_attempt_at, last_message, last_seq, created_at, updated_at, \
         lease_holder, lease_fence, lease_expires_at, retry_due_seq, last_resume, reopened_until"
    };
}
pub(super) const BUILD_COLUMNS_BUT_OUTPUTS: &str = build_columns_but_outputs!();
/// Every column a build is read from: the merged outputs, and the per-stage ones only for a
/// build whose merged view was not written yet (it had outputs before migration 0007).
pub(super) const BUILD_COLUMNS: &str = concat!(
    build_columns_but_outputs!(),
    ", retry_policy, outputs, CASE WHEN outputs IS NULL THEN stage_outputs END AS stage_outputs"
);

pub(super) fn build_not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        what: "build",
        id: id.to_owned(),
    }
}

/// The columns a history entry is read from.
macro_rules! history_columns {
    () => {
        "build_id, seq, state, kind, message, attempt, reported_by, token_id, source, \
         recorded_at, outputs"
    };
}
pub(super) const HISTORY_COLUMNS: &str = history_columns!();

/// One column's value as the store writes it: what a bound parameter (or a field of a bulk
/// `COPY`) is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue<'a> {
    Text(Option<Cow<'a, str>>),
    Integer(Option<i64>),
}

impl<'a> ColumnValue<'a> {
    fn text(value: Option<&'a str>) -> Self {
        ColumnValue::Text(value.map(Cow::Borrowed))
    }
}

/// A build's row as the store inserts it when the build starts: every column it writes, in the
/// order of [`NewBuildRow::COLUMNS`]. Timestamps are Unix milliseconds; `labels` is the JSON
/// object of the build's labels.
#[derive(Debug, Clone)]
pub struct NewBuildRow<'a> {
    pub id: &'a str,
    pub build_key: Option<&'a str>,
    pub platform: &'a str,
    pub image_type: &'a str,
    pub description: Option<&'a str>,
    pub labels: &'a str,
    pub state: i64,
    pub status: &'a str,
    pub failures: i64,
    pub max_retries: i64,
    pub next_attempt_at: Option<i64>,
    pub last_message: Option<&'a str>,
    pub last_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The build's retry policy as checked JSON, if it has one.
    pub retry_policy: Option<&'a str>,
}

/// How many columns a [`NewBuildRow`] writes.
pub const NEW_BUILD_ROW_WIDTH: usize = 16;

impl<'a> NewBuildRow<'a> {
    /// The columns [`NewBuildRow::values`] fills, in its order.
    pub const COLUMNS: &'static str = "id, build_key, platform, image_type, description, labels, \
         state, status, failures, max_retries, next_attempt_at, last_message, last_seq, \
         created_at, updated_at, retry_policy";

    /// The statement that inserts `rows` build rows, their values bound by [`bind_values`].
    pub fn insert_sql(rows: usize) -> String {
        format!(
            "INSERT INTO builds ({}) VALUES {}",
            Self::COLUMNS,
            placeholders(1, NEW_BUILD_ROW_WIDTH, rows)
        )
    }

    /// The row's values, in the order of [`NewBuildRow::COLUMNS`].
    pub fn values(self) -> [ColumnValue<'a>; NEW_BUILD_ROW_WIDTH] {
        [
            ColumnValue::text(Some(self.id)),
            ColumnValue::text(self.build_key),
            ColumnValue::text(Some(self.platform)),
            ColumnValue::text(Some(self.image_type)),
            ColumnValue::text(self.description),
            ColumnValue::text(Some(self.labels)),
            ColumnValue::Integer(Some(self.state)),
            ColumnValue::text(Some(self.status)),
            ColumnValue::Integer(Some(self.failures)),
            ColumnValue::Integer(Some(self.max_retries)),
            ColumnValue::Integer(self.next_attempt_at),
            ColumnValue::text(self.last_message),
            ColumnValue::Integer(Some(self.last_seq)),
            ColumnValue::Integer(Some(self.created_at)),
            ColumnValue::Integer(Some(self.updated_at)),
            ColumnValue::text(self.retry_policy),
        ]
    }
}

/// A history entry's row as the store appends it, in the order of [`HistoryRow::COLUMNS`]:
/// `recorded_at` in Unix milliseconds, `outputs` as JSON, and `duration_ms` the stage's
/// duration on a completion (`buildstate_domain::reports::completion_durations`).
#[derive(Debug, Clone)]
pub struct HistoryRow<'a> {
    pub build_id: &'a str,
    pub seq: i64,
    pub state: i64,
    pub kind: &'a str,
    pub message: Option<&'a str>,
    pub attempt: Option<i64>,
    pub reported_by: Option<&'a str>,
    pub token_id: Option<&'a str>,
    pub source: Option<&'a str>,
    pub recorded_at: i64,
    pub outputs: Option<String>,
    pub duration_ms: Option<i64>,
}

/// How many columns a [`HistoryRow`] writes.
pub const HISTORY_ROW_WIDTH: usize = 12;

impl<'a> HistoryRow<'a> {
    /// The columns [`HistoryRow::values`] fills, in its order.
    pub const COLUMNS: &'static str = concat!(history_columns!(), ", duration_ms");

    /// The statement that inserts `rows` history rows, their values bound by [`bind_values`].
    pub fn insert_sql(rows: usize) -> String {
        format!(
            "INSERT INTO build_history ({}) VALUES {}",
            Self::COLUMNS,
            history_placeholders(1, rows)
        )
    }

    /// The row's values, in the order of [`HistoryRow::COLUMNS`].
    pub fn values(self) -> [ColumnValue<'a>; HISTORY_ROW_WIDTH] {
        [
            ColumnValue::text(Some(self.build_id)),
            ColumnValue::Integer(Some(self.seq)),
            ColumnValue::Integer(Some(self.state)),
            ColumnValue::text(Some(self.kind)),
            ColumnValue::text(self.message),
            ColumnValue::Integer(self.attempt),
            ColumnValue::text(self.reported_by),
            ColumnValue::text(self.token_id),
            ColumnValue::text(self.source),
            ColumnValue::Integer(Some(self.recorded_at)),
            ColumnValue::Text(self.outputs.map(Cow::Owned)),
            ColumnValue::Integer(self.duration_ms),
        ]
    }
}

/// A resume's row as the store keeps it for the savings report, in the order of
/// [`ResumeRow::COLUMNS`]: `resumed_at` in Unix milliseconds; the build's platform and image
/// type are copied so the report groups without a join.
#[derive(Debug, Clone)]
pub struct ResumeRow<'a> {
    pub build_id: &'a str,
    pub seq: i64,
    pub resumed_at: i64,
    pub stage: i64,
    pub platform: &'a str,
    pub image_type: &'a str,
    pub stages_not_rerun: i64,
    pub saved_ms: i64,
    pub unknown_durations: i64,
}

/// How many columns a [`ResumeRow`] writes.
pub const RESUME_ROW_WIDTH: usize = 9;

impl<'a> ResumeRow<'a> {
    /// The columns [`ResumeRow::values`] fills, in its order.
    pub const COLUMNS: &'static str = "build_id, seq, resumed_at, stage, platform, image_type, \
         stages_not_rerun, saved_ms, unknown_durations";

    /// The statement that inserts `rows` resume rows, their values bound by [`bind_values`].
    pub fn insert_sql(rows: usize) -> String {
        format!(
            "INSERT INTO build_resumes ({}) VALUES {}",
            Self::COLUMNS,
            placeholders(1, RESUME_ROW_WIDTH, rows)
        )
    }

    /// The row's values, in the order of [`ResumeRow::COLUMNS`].
    pub fn values(self) -> [ColumnValue<'a>; RESUME_ROW_WIDTH] {
        [
            ColumnValue::text(Some(self.build_id)),
            ColumnValue::Integer(Some(self.seq)),
            ColumnValue::Integer(Some(self.resumed_at)),
            ColumnValue::Integer(Some(self.stage)),
            ColumnValue::text(Some(self.platform)),
            ColumnValue::text(Some(self.image_type)),
            ColumnValue::Integer(Some(self.stages_not_rerun)),
            ColumnValue::Integer(Some(self.saved_ms)),
            ColumnValue::Integer(Some(self.unknown_durations)),
        ]
    }
}

/// Binds `values` in order (a statement's parameters, as [`NewBuildRow::insert_sql`] and
/// [`HistoryRow::insert_sql`] number them).
pub fn bind_values<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    values: impl IntoIterator<Item = ColumnValue<'q>>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    for value in values {
        query = match value {
            ColumnValue::Text(Some(Cow::Borrowed(text))) => query.bind(Some(text)),
            ColumnValue::Text(Some(Cow::Owned(text))) => query.bind(Some(text)),
            ColumnValue::Text(None) => query.bind(None::<&str>),
            ColumnValue::Integer(number) => query.bind(number),
        };
    }
    query
}

/// `($first, …, $first+width-1), (…)`: numbered placeholders for `rows` rows of `width` values.
pub(super) fn placeholders(first: usize, width: usize, rows: usize) -> String {
    (0..rows)
        .map(|row| {
            let start = first + row * width;
            let params: Vec<String> = (start..start + width).map(|n| format!("${n}")).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The history rows `events` become, numbered from `first_seq`, with the messages
/// [`notes::entry_message`] gives them; `actor` is `None` for what the server records by
/// itself (a due retry).
pub(super) fn history_entries(
    first_seq: i64,
    events: &[Event],
    message: Option<&str>,
    source: Option<&str>,
    actor: Option<&Actor>,
    now: DateTime<Utc>,
) -> Vec<HistoryEntry> {
    // Stored in milliseconds: answer with what a later read returns.
    let recorded_at = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    events
        .iter()
        .enumerate()
        .map(|(offset, event)| {
            let message = notes::entry_message(event, offset, events.len(), message);
            HistoryEntry {
                seq: first_seq + offset as i64,
                state: event.state,
                kind: event.kind,
                message,
                attempt: event.attempt,
                reported_by: actor.map(|actor| actor.username.to_string()),
                token_id: actor.map(|actor| actor.token_id.clone()),
                source: source.map(str::to_owned),
                recorded_at,
                outputs: event.outputs.clone(),
            }
        })
        .collect()
}

/// Numbered placeholders, from `$first`, for `rows` history rows.
pub(super) fn history_placeholders(first: usize, rows: usize) -> String {
    placeholders(first, HISTORY_ROW_WIDTH, rows)
}

/// Binds `rows` in the order of [`history_placeholders`], with each one's stage duration
/// (counted from `previous`, when the entry before them was recorded).
pub(super) fn bind_history<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    build_id: &'q str,
    rows: &'q [HistoryEntry],
    previous: Option<DateTime<Utc>>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let durations = buildstate_domain::reports::completion_durations(
        previous,
        rows.iter().map(|row| (row.kind, row.recorded_at)),
    );
    for (row, duration_ms) in rows.iter().zip(durations) {
        let written = HistoryRow {
            build_id,
            seq: row.seq,
            state: i64::from(row.state),
            kind: row.kind.as_str(),
            message: row.message.as_deref(),
            attempt: row.attempt.map(i64::from),
            reported_by: row.reported_by.as_deref(),
            token_id: row.token_id.as_deref(),
            source: row.source.as_deref(),
            recorded_at: row.recorded_at.timestamp_millis(),
            outputs: row
                .outputs
                .as_ref()
                .and_then(|outputs| serde_json::to_string(outputs).ok()),
            duration_ms,
        };
        query = bind_values(query, written.values());
    }
    query
}

/// Appends history rows in one statement (`previous`: when the entry before them was recorded).
pub(super) async fn insert_history(
    tx: &mut Transaction<'static, Any>,
    build_id: &str,
    rows: &[HistoryEntry],
    previous: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = HistoryRow::insert_sql(rows.len());
    bind_history(sqlx::query(&sql), build_id, rows, previous)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) fn parsed<T>(row: &AnyRow, column: &str) -> StoreResult<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|error| anyhow::anyhow!("column `{column}` holds `{text}`: {error}").into())
}

fn optional_parsed<T>(row: &AnyRow, column: &str) -> StoreResult<Option<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| {
        text.parse()
            .map_err(|error| anyhow::anyhow!("column `{column}` holds `{text}`: {error}").into())
    })
    .transpose()
}

pub(super) fn state_column(row: &AnyRow, column: &str) -> StoreResult<StateCode> {
    let value: i64 = row.try_get(column)?;
    StateCode::new(value).map_err(|error| anyhow::Error::new(error).into())
}

pub(super) fn u32_column(row: &AnyRow, column: &str) -> StoreResult<u32> {
    let value: i64 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| anyhow::anyhow!("column `{column}` holds {value}").into())
}

pub(super) fn optional_u32(row: &AnyRow, column: &str) -> StoreResult<Option<u32>> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|value| {
            u32::try_from(value)
                .map_err(|_| anyhow::anyhow!("column `{column}` holds {value}").into())
        })
        .transpose()
}

fn from_millis(millis: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| anyhow::anyhow!("timestamp {millis} is out of range").into())
}

pub(super) fn time(row: &AnyRow, column: &str) -> StoreResult<DateTime<Utc>> {
    from_millis(row.try_get(column)?)
}

pub(super) fn optional_time(row: &AnyRow, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
    let millis: Option<i64> = row.try_get(column)?;
    millis.map(from_millis).transpose()
}

pub(super) fn history_from_row(row: &AnyRow) -> StoreResult<HistoryEntry> {
    let attempt: Option<i64> = row.try_get("attempt")?;
    Ok(HistoryEntry {
        seq: row.try_get("seq")?,
        state: state_column(row, "state")?,
        kind: parsed(row, "kind")?,
        message: row.try_get("message")?,
        attempt: attempt.and_then(|n| u32::try_from(n).ok()),
        reported_by: row.try_get("reported_by")?,
        token_id: row.try_get("token_id")?,
        source: row.try_get("source")?,
        recorded_at: time(row, "recorded_at")?,
        outputs: row
            .try_get::<Option<String>, _>("outputs")?
            .map(|json| serde_json::from_str::<Outputs>(&json))
            .transpose()
            .context("stored history outputs are invalid")?,
    })
}

/// A build's outputs as the API shows them: each key once, with the stage that set it.
pub(super) type MergedOutputs = BTreeMap<String, StageOutput>;

/// The merged outputs of a row of [`BUILD_COLUMNS`]: the `outputs` column, or for a build whose
/// outputs last changed before it existed, the merge of its per-stage outputs.
fn merged_outputs_from_row(row: &AnyRow) -> StoreResult<MergedOutputs> {
    match row.try_get::<Option<String>, _>("outputs")? {
        Some(json) => Ok(serde_json::from_str(&json).context("stored merged outputs are invalid")?),
        None => {
            let per_stage: Option<String> = row.try_get("stage_outputs")?;
            let per_stage =
                per_stage.context("a build without merged outputs lacks its stage outputs")?;
            Ok(decode_stage_outputs(&per_stage)?.merged())
        }
    }
}

/// The per-stage outputs column: `{"10": {"ami_id": "…"}, …}`.
fn decode_stage_outputs(json: &str) -> StoreResult<StageOutputs> {
    let stages: BTreeMap<String, Outputs> =
        serde_json::from_str(json).context("stored stage outputs are invalid")?;
    let stages = stages
        .into_iter()
        .map(|(stage, outputs)| {
            let stage = stage
                .parse::<StateCode>()
                .context("stored stage outputs name an invalid stage")?;
            Ok((stage, outputs))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    Ok(stages.into())
}

fn encode_stage_outputs(stage_outputs: &StageOutputs) -> StoreResult<String> {
    let by_code: BTreeMap<String, &Outputs> = stage_outputs
        .stages()
        .iter()
        .map(|(stage, outputs)| (stage.to_string(), outputs))
        .collect();
    Ok(serde_json::to_string(&by_code).context("serialize stage outputs")?)
}

/// A build's per-stage outputs as stored, still encoded: most changes leave them alone, and
/// decoding them (every stage's every key) was most of what outputs cost a report.
pub(super) struct StoredOutputs {
    pub(super) per_stage: String,
}

impl StoredOutputs {
    /// The outputs after `events`, encoded for the row, if `events` change them.
    pub(super) fn after(&self, events: &[Event]) -> StoreResult<Option<ChangedOutputs>> {
        if !StageOutputs::may_change(events, self.per_stage == "{}") {
            return Ok(None);
        }
        let mut stages = decode_stage_outputs(&self.per_stage)?;
        if !stages.apply(events) {
            return Ok(None);
        }
        let merged = stages.merged();
        Ok(Some(ChangedOutputs {
            json: OutputsJson {
                per_stage: encode_stage_outputs(&stages)?,
                merged: serde_json::to_string(&merged).context("serialize merged outputs")?,
            },
            merged,
        }))
    }
}

/// Both outputs columns of a changed build, and the merged view the answer shows.
pub(super) struct ChangedOutputs {
    pub(super) json: OutputsJson,
    pub(super) merged: MergedOutputs,
}

pub(super) struct OutputsJson {
    pub(super) per_stage: String,
    pub(super) merged: String,
}

fn lease_from_row(row: &AnyRow) -> StoreResult<Option<Lease>> {
    let holder: Option<String> = row.try_get("lease_holder")?;
    let fence: Option<i64> = row.try_get("lease_fence")?;
    let Some((holder, fence)) = holder.zip(fence) else {
        return Ok(None);
    };
    Ok(Some(Lease {
        stage: state_column(row, "state")?,
        holder,
        fence,
        expires_at: optional_time(row, "lease_expires_at")?.unwrap_or(DateTime::<Utc>::MIN_UTC),
    }))
}

pub(super) const TOKEN_COLUMNS: &str = "t.id, u.username, t.description, t.scope, t.created_at, \
     t.expires_at, t.last_used_at, t.revoked_at, t.created_by";

pub(super) fn token_from_row(row: &AnyRow) -> StoreResult<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        username: parsed(row, "username")?,
        description: row.try_get("description")?,
        scope: parsed(row, "scope")?,
        created_at: time(row, "created_at")?,
        expires_at: optional_time(row, "expires_at")?,
        last_used_at: optional_time(row, "last_used_at")?,
        revoked_at: optional_time(row, "revoked_at")?,
        created_by: row.try_get("created_by")?,
    })
}

pub(super) fn user_from_row(row: &AnyRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: parsed(row, "username")?,
        email: parsed(row, "email")?,
        role: parsed(row, "role")?,
        created_at: time(row, "created_at")?,
    })
}

/// The build's latest resume, kept as the domain's `Resume` in JSON.
fn last_resume_from_row(row: &AnyRow) -> StoreResult<Option<Resume>> {
    let json: Option<String> = row.try_get("last_resume")?;
    json.map(|json| {
        serde_json::from_str(&json)
            .context("stored last_resume is not a resume")
            .map_err(StoreError::from)
    })
    .transpose()
}

impl Database {
    /// A build from a row of [`BUILD_COLUMNS`] (or more): its retry policy included.
    pub(super) fn build_from_row(&self, row: &AnyRow) -> StoreResult<Build> {
        let mut build = self.build_with_outputs(row, merged_outputs_from_row(row)?)?;
        build.retry_policy = row
            .try_get::<Option<String>, _>("retry_policy")?
            .map(|json| self.policies.parse(&json))
            .transpose()
            .context("stored retry policy")?;
        Ok(build)
    }

    /// A build from a row of [`BUILD_COLUMNS_BUT_OUTPUTS`] (or more) and its merged outputs,
    /// without its retry policy (the caller has it, or reads it with [`Self::build_from_row`]).
    pub(super) fn build_with_outputs(
        &self,
        row: &AnyRow,
        outputs: MergedOutputs,
    ) -> StoreResult<Build> {
        let state = state_column(row, "state")?;
        let labels: String = row.try_get("labels")?;
        let labels: BTreeMap<String, String> =
            serde_json::from_str(&labels).context("stored labels are not JSON")?;
        Ok(Build {
            id: parsed(row, "id")?,
            key: optional_parsed(row, "build_key")?,
            platform: parsed(row, "platform")?,
            image_type: parsed(row, "image_type")?,
            description: row.try_get("description")?,
            labels: labels.try_into().context("stored labels are invalid")?,
            state_name: self.names.name(state).to_owned(),
            phase: state.phase(),
            state,
            status: parsed(row, "status")?,
            failures: u32_column(row, "failures")?,
            max_retries: u32_column(row, "max_retries")?,
            next_attempt_at: optional_time(row, "next_attempt_at")?,
            last_message: row.try_get("last_message")?,
            last_seq: row.try_get("last_seq")?,
            retry_due_seq: row.try_get("retry_due_seq")?,
            created_at: time(row, "created_at")?,
            updated_at: time(row, "updated_at")?,
            outputs,
            lease: lease_from_row(row)?,
            last_resume: last_resume_from_row(row)?,
            reopened_until: row
                .try_get::<Option<i64>, _>("reopened_until")?
                .map(StateCode::new)
                .transpose()
                .context("column `reopened_until`")?,
            retry_policy: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column_count(columns: &str) -> usize {
        columns
            .split(',')
            .filter(|name| !name.trim().is_empty())
            .count()
    }

    #[test]
    fn each_written_row_has_a_value_for_each_of_its_columns() {
        assert_eq!(column_count(NewBuildRow::COLUMNS), NEW_BUILD_ROW_WIDTH);
        assert_eq!(column_count(HistoryRow::COLUMNS), HISTORY_ROW_WIDTH);
        assert_eq!(column_count(ResumeRow::COLUMNS), RESUME_ROW_WIDTH);
    }

    #[test]
    fn placeholders_number_each_row_on_from_the_first() {
        assert_eq!(placeholders(3, 2, 2), "($3, $4), ($5, $6)");
        assert_eq!(
            history_placeholders(1, 1).matches('$').count(),
            HISTORY_ROW_WIDTH
        );
    }
}
