//! The retries the scheduler announces (`crate::retries`): which failed builds' backoff has
//! ended without their `retry_due` entry, and recording that entry.
//!
//! Exactly once, however many server processes scan: the entry is recorded through
//! [`Database::change_build`], which locks the build's row and only then asks the domain rule
//! ([`buildstate_domain::record_retry_due`]) whether the retry is still due. The rule reads the
//! build's `retry_due_seq`, set by the entry in the same transaction, so a second process that
//! gets the row after the first committed finds nothing to do. On PostgreSQL the lock is taken
//! with `SKIP LOCKED`: a process never waits on a row another process (or a report) holds; it
//! moves on to the next build, and the holder decides.

use buildstate_domain::wire::TransitionResult;
use buildstate_domain::{record_retry_due, BuildId};
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::builds::{Change, Decision, RowLock};
use super::{Database, StoreError, StoreResult};

/// Where a scan of due retries stopped: the last build it returned, by `(next_attempt_at in
/// Unix milliseconds, id)`, the order it reads them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueCursor {
    next_attempt_at: i64,
    id: String,
}

impl DueCursor {
    /// Before every build.
    pub fn start() -> Self {
        DueCursor {
            next_attempt_at: i64::MIN,
            id: String::new(),
        }
    }
}

impl Database {
    /// Up to `limit` failed builds whose backoff ended by `now` and whose retry has not been
    /// announced, after `after`, soonest due first: each id with the cursor to continue from.
    /// One range of the `builds_retries_to_announce` index (migration 0010): a scan that finds
    /// nothing reads nothing, however many builds there are.
    pub async fn builds_with_retry_due(
        &self,
        now: DateTime<Utc>,
        after: &DueCursor,
        limit: u32,
    ) -> StoreResult<Vec<(BuildId, DueCursor)>> {
        async {
            // The predicate repeats the index's own, word for word: SQLite uses a partial index
            // only for a query whose WHERE visibly implies the index's.
            let rows = sqlx::query(
                "SELECT id, next_attempt_at FROM builds \
                 WHERE status = 'failed' AND retry_due_seq IS NULL AND next_attempt_at <= $1 \
                 AND (next_attempt_at > $2 OR (next_attempt_at = $2 AND id > $3)) \
                 ORDER BY next_attempt_at, id LIMIT $4",
            )
            .bind(now.timestamp_millis())
            .bind(after.next_attempt_at)
            .bind(after.id.as_str())
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
            rows.iter()
                .map(|row| {
                    let id: String = row.try_get("id")?;
                    let cursor = DueCursor {
                        next_attempt_at: row.try_get("next_attempt_at")?,
                        id: id.clone(),
                    };
                    let id = id
                        .parse::<BuildId>()
                        .map_err(|error| anyhow::anyhow!("stored build id `{id}`: {error}"))?;
                    Ok((id, cursor))
                })
                .collect::<StoreResult<Vec<_>>>()
        }
        .await
        .map_err(StoreError::during(|| "look for due retries".to_owned()))
    }

    /// Records the `retry_due` entry of build `id` if its retry is still due once its row is
    /// locked, and returns the change. `None` when there is nothing to do: another process
    /// recorded it first, a report or an operator moved the build on, or (PostgreSQL) another
    /// transaction holds the row right now — whichever it is, the next scan sees the build
    /// again if it still needs its entry.
    pub async fn record_retry_due(&self, id: &BuildId) -> StoreResult<Option<TransitionResult>> {
        let changed = self
            .change_build(id, RowLock::SkipIfLocked, None, None, |build, now| {
                Ok(
                    match record_retry_due(&build.progress(), build.allowed_retries(), now) {
                        Some((progress, event)) => Decision::Apply {
                            progress,
                            events: vec![event],
                            message: None,
                            source: None,
                            last_message: None,
                        },
                        None => Decision::AlreadyDone {
                            note: "no retry is due".to_owned(),
                        },
                    },
                )
            })
            .await;
        // Without an idempotency key nothing is replayed: the answer is what was recorded.
        match changed.map(Change::into_answer) {
            Ok(result) if result.changed => Ok(Some(result)),
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(None),
            Err(error) => Err(StoreError::during(|| {
                format!("record the due retry of build `{id}`")
            })(error)),
        }
    }
}
