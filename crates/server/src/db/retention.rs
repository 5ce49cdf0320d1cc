//! Retention and backup: `bldst server prune` removes finished builds (with their history) in
//! small batches, each its own short transaction, so reports on other builds never wait long;
//! `bldst server backup` copies a SQLite database while the server runs.

use std::io::Write;

use buildstate_domain::BuildId;
use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{Database, Dialect, StoreError, StoreResult};

/// Statuses after which a build takes no more reports (an operator may still `reset` a
/// completed one: each batch re-checks the status as it deletes).
const FINISHED: &str = "('completed', 'cancelled')";

/// The tables holding rows of a build, children first.
const BUILD_TABLES: [&str; 4] = [
    "stuck_alerts",
    "idempotency_keys",
    "build_history",
    "build_resumes",
];

impl Database {
    /// Removes builds that finished (completed or cancelled) before `cutoff`, `batch` builds
    /// per transaction. With `export`, each build and its whole history is first written as
    /// one JSON line (`{"build": …, "history": […]}`) and flushed, so nothing is removed
    /// that was not written. Returns how many builds were removed.
    pub async fn prune_finished_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
        mut export: Option<&mut (dyn Write + Send)>,
    ) -> StoreResult<u64> {
        let mut removed = 0;
        loop {
            let ids: Vec<String> = sqlx::query(&format!(
                "SELECT id FROM builds WHERE status IN {FINISHED} AND updated_at < $1 \
                 ORDER BY updated_at, id LIMIT $2"
            ))
            .bind(cutoff.timestamp_millis())
            .bind(i64::from(batch.max(1)))
            .fetch_all(&self.reader)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(removed);
            }
            if let Some(export) = export.as_deref_mut() {
                for id in &ids {
                    self.export_build(id, export).await?;
                }
                export
                    .flush()
                    .map_err(|error| anyhow::anyhow!("cannot write the export: {error}"))?;
            }
            removed += self.remove_finished(&ids, cutoff).await?;
        }
    }

    async fn export_build(&self, id: &str, export: &mut (dyn Write + Send)) -> StoreResult<()> {
        let id: BuildId = id
            .parse()
            .map_err(|_| anyhow::anyhow!("stored build id `{id}` is not valid"))?;
        let build = self.get_build(&id).await?;
        let mut history = Vec::new();
        let mut after = 0;
        loop {
            let page = self.history_after(&id, after, 1000).await?;
            let Some(last) = page.entries.last() else {
                break;
            };
            after = last.seq;
            history.extend(page.entries);
        }
        let line = serde_json::json!({ "build": build, "history": history });
        writeln!(export, "{line}")
            .map_err(|error| anyhow::anyhow!("cannot write the export: {error}"))?;
        Ok(())
    }

    /// Deletes the builds of `ids` that are still finished before `cutoff`, in one
    /// transaction; returns how many.
    async fn remove_finished(&self, ids: &[String], cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let list = (0..ids.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let still_finished = format!(
            "SELECT id FROM builds WHERE id IN ({list}) AND status IN {FINISHED} \
             AND updated_at < $1"
        );
        let mut transaction = self.writer.begin().await?;
        let mut removed = 0;
        let statements = BUILD_TABLES
            .iter()
            .map(|table| format!("DELETE FROM {table} WHERE build_id IN ({still_finished})"))
            .chain([format!("DELETE FROM builds WHERE id IN ({still_finished})")]);
        for statement in statements {
            let mut delete = sqlx::query(&statement).bind(cutoff.timestamp_millis());
            for id in ids {
                delete = delete.bind(id);
            }
            // The builds table comes last: its count is the answer.
            removed = delete.execute(&mut *transaction).await?.rows_affected();
        }
        transaction.commit().await.map_err(StoreError::at_commit)?;
        Ok(removed)
    }

    /// Writes a consistent copy of a SQLite database to `path` while it is in use
    /// (`VACUUM INTO`); the file must not exist. PostgreSQL has its own tools (`pg_dump`).
    pub async fn backup_to(&self, path: &std::path::Path) -> StoreResult<()> {
        if self.dialect != Dialect::Sqlite {
            return Err(StoreError::Conflict(
                "`bldst server backup` copies a SQLite database; back PostgreSQL up with its own tools (pg_dump, or your provider's snapshots)".into(),
            ));
        }
        if path.exists() {
            return Err(StoreError::Conflict(format!(
                "`{}` already exists: back up to a new file",
                path.display()
            )));
        }
        let target = path
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("the backup path `{}` is not UTF-8", path.display()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.reader)
            .await
            .map_err(|error| {
                anyhow::anyhow!("failed to back the database up to `{target}`: {error}")
            })?;
        Ok(())
    }
}
