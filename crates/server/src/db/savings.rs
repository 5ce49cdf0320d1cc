//! The savings report's queries (`GET /reports/savings`): the resumes of a window
//! (`build_resumes`, written with each resume by `builds.rs`) added up, by platform, by image
//! type and per build. Each query reads one range of migration 0014's time index.

use std::collections::BTreeMap;

use buildstate_domain::resumes::{
    BuildSavings, SavingsGroup, SavingsReport, SavingsTotals, SAVINGS_TOP_BUILDS,
};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::rows::parsed;
use super::{Database, StoreError, StoreResult};

/// The sums every query selects, named as [`totals_from_row`] reads them.
const SUMS: &str = "COUNT(*) AS resumes, CAST(SUM(stages_not_rerun) AS BIGINT) AS stages, \
     CAST(SUM(saved_ms) AS BIGINT) AS saved, CAST(SUM(unknown_durations) AS BIGINT) AS unknown";

fn totals_from_row(row: &AnyRow) -> StoreResult<SavingsTotals> {
    let number = |column: &str| -> StoreResult<u64> {
        // SUM over no rows is NULL.
        let value: Option<i64> = row.try_get(column)?;
        Ok(value
            .and_then(|value| u64::try_from(value).ok())
            .unwrap_or(0))
    };
    Ok(SavingsTotals {
        resumes: number("resumes")?,
        stages_not_rerun: number("stages")?,
        saved_ms: number("saved")?,
        unknown_durations: number("unknown")?,
    })
}

fn in_report(error: sqlx::Error) -> StoreError {
    StoreError::during(|| "read the savings report".to_owned())(error.into())
}

impl Database {
    /// What resuming saved over the resumes since `since` (a window of `days`).
    pub async fn savings_report(
        &self,
        since: DateTime<Utc>,
        days: u32,
    ) -> StoreResult<SavingsReport> {
        let since_millis = since.timestamp_millis();
        let total = sqlx::query(&format!(
            "SELECT {SUMS} FROM build_resumes WHERE resumed_at >= $1"
        ))
        .bind(since_millis)
        .fetch_one(&self.reader)
        .await
        .map_err(in_report)?;
        let group = |column: &'static str| async move {
            let rows = sqlx::query(&format!(
                "SELECT {column} AS name, {SUMS} FROM build_resumes WHERE resumed_at >= $1 \
                 GROUP BY {column}"
            ))
            .bind(since_millis)
            .fetch_all(&self.reader)
            .await
            .map_err(in_report)?;
            let groups = rows
                .iter()
                .map(|row| {
                    let name: String = row.try_get("name")?;
                    Ok((
                        name.clone(),
                        SavingsGroup {
                            name,
                            totals: totals_from_row(row)?,
                        },
                    ))
                })
                .collect::<StoreResult<BTreeMap<String, SavingsGroup>>>()?;
            StoreResult::Ok(groups.into_values().collect::<Vec<_>>())
        };
        // The window's rows first (one range of the time index), then grouped by build:
        // without MATERIALIZED, SQLite groups the whole table along its primary key instead
        // (a scan that grows with the history, whatever the window).
        let top = sqlx::query(&format!(
            "WITH in_window AS MATERIALIZED (SELECT build_id, platform, image_type, \
             stages_not_rerun, saved_ms, unknown_durations FROM build_resumes \
             WHERE resumed_at >= $1) \
             SELECT build_id, MIN(platform) AS platform, MIN(image_type) AS image_type, {SUMS} \
             FROM in_window GROUP BY build_id \
             ORDER BY saved DESC, stages DESC, build_id LIMIT $2"
        ))
        .bind(since_millis)
        .bind(i64::from(SAVINGS_TOP_BUILDS))
        .fetch_all(&self.reader)
        .await
        .map_err(in_report)?;
        let top_builds = top
            .iter()
            .map(|row| {
                Ok(BuildSavings {
                    id: parsed(row, "build_id")?,
                    platform: parsed(row, "platform")?,
                    image_type: parsed(row, "image_type")?,
                    totals: totals_from_row(row)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let mut report = SavingsReport {
            since,
            days,
            totals: totals_from_row(&total)?,
            by_platform: group("platform").await?,
            by_image_type: group("image_type").await?,
            top_builds,
            summary: String::new(),
        };
        report.summary = report.describe();
        Ok(report)
    }
}
