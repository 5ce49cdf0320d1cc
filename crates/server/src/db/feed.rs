//! Reads behind the event stream and the alerts: history across builds from a point in the
//! stream (to resume after `Last-Event-ID`), and the marks that make a stuck build alert
//! once however many server processes look.

use buildstate_domain::wire::{Build, HistoryEntry};
use buildstate_domain::BuildId;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::rows::{history_from_row, HISTORY_COLUMNS};
use super::{Database, StoreError, StoreResult};

/// A place in the stream of every build's history: the entries are ordered by the time they
/// were recorded, then build id, then sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPoint {
    pub recorded_at_ms: i64,
    pub build_id: String,
    pub seq: i64,
}

impl Database {
    /// Entries recorded after `after`, in stream order, at most `limit`, each with its build as
    /// it is now.
    pub async fn feed_after(
        &self,
        after: &FeedPoint,
        limit: u32,
    ) -> StoreResult<Vec<(Build, HistoryEntry)>> {
        let rows = sqlx::query(&format!(
            "SELECT {HISTORY_COLUMNS} FROM build_history WHERE recorded_at > $1 \
             OR (recorded_at = $1 AND (build_id > $2 OR (build_id = $2 AND seq > $3))) \
             ORDER BY recorded_at, build_id, seq LIMIT $4"
        ))
        .bind(after.recorded_at_ms)
        .bind(&after.build_id)
        .bind(after.seq)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(|error| {
            StoreError::during(|| "read the event stream's history".to_owned())(error.into())
        })?;
        let mut events = Vec::with_capacity(rows.len());
        let mut builds: std::collections::HashMap<String, Build> = Default::default();
        for row in &rows {
            let build_id: String = row.try_get("build_id")?;
            let build = match builds.get(&build_id) {
                Some(build) => build.clone(),
                None => {
                    let id: BuildId = build_id.parse().map_err(|error| {
                        anyhow::anyhow!("stored build id `{build_id}`: {error}")
                    })?;
                    let build = self.get_build(&id).await?;
                    builds.insert(build_id, build.clone());
                    build
                }
            };
            events.push((build, history_from_row(row)?));
        }
        Ok(events)
    }

    /// The entries of one build with `first <= seq <= last` (a change another process made).
    pub async fn history_between(
        &self,
        id: &BuildId,
        first: i64,
        last: i64,
    ) -> StoreResult<Vec<HistoryEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {HISTORY_COLUMNS} FROM build_history \
             WHERE build_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq"
        ))
        .bind(id.as_str())
        .bind(first)
        .bind(last)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(history_from_row).collect()
    }

    /// Sends `payload` on PostgreSQL's notification `channel` (every listening server process
    /// receives it once this autocommit statement commits).
    pub async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        async {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&self.writer)
                .await?;
            Ok(())
        }
        .await
        .map_err(StoreError::during(|| format!("notify `{channel}`")))
    }

    /// Marks `build` as alerted for being stuck since `quiet_since`; `true` only for the first
    /// caller (of any process), so each quiet spell alerts once.
    pub async fn mark_stuck_alerted(
        &self,
        build: &BuildId,
        quiet_since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        async {
            let inserted = sqlx::query(
                "INSERT INTO stuck_alerts (build_id, quiet_since, alerted_at) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(build.as_str())
            .bind(quiet_since.timestamp_millis())
            .bind(now.timestamp_millis())
            .execute(&self.writer)
            .await?;
            Ok(inserted.rows_affected() == 1)
        }
        .await
        .map_err(StoreError::during(|| {
            format!("mark build `{build}` as alerted for being stuck")
        }))
    }
}
