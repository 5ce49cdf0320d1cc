//! `GET /reports/*`: success rates, failures, stage durations, stuck and blocked builds, time
//! to recover, what resuming saved. A read token is enough. Definitions:
//! `buildstate_domain::reports` and `buildstate_domain::resumes`.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use buildstate_domain::reports::{
    DurationReport, FailureReport, RecoveryReport, StuckReport, StuckThresholds, SuccessReport,
    DEFAULT_WINDOW_DAYS, MAX_STUCK_AFTER_SECS, MAX_WINDOW_DAYS,
};
use buildstate_domain::resumes::SavingsReport;
use buildstate_domain::wire::ErrorBody;
use buildstate_domain::Scope;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{ApiQuery, Authenticated};
use crate::state::AppState;

/// The window of a report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// How many days back to look (1 to 366; default 7).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<u32>,
}

impl WindowQuery {
    fn since(&self) -> Result<DateTime<Utc>, ApiError> {
        Ok(self.window()?.0)
    }

    /// When the window starts, and its length in days.
    fn window(&self) -> Result<(DateTime<Utc>, u32), ApiError> {
        let days = self.days.unwrap_or(DEFAULT_WINDOW_DAYS);
        if days == 0 || days > MAX_WINDOW_DAYS {
            return Err(ApiError::invalid_field(
                "days",
                format!("must be 1 to {MAX_WINDOW_DAYS}"),
            ));
        }
        Ok((Utc::now() - chrono::Duration::days(i64::from(days)), days))
    }
}

/// Thresholds for `GET /reports/stuck`; the server's configured ones when absent.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StuckQuery {
    /// Seconds without a report after which an unfinished build is stuck (0 to 99999999).
    #[param(minimum = 0, maximum = 99_999_999)]
    pub after_secs: Option<u64>,
    /// Per-code thresholds, `CODE=SECONDS` pairs separated by `,` or `;` (e.g.
    /// `10=7200,55=600`): codes 0 to 100 in steps of 5, seconds 0 to 99999999 without sign or
    /// leading zero, spaces allowed around each part.
    #[param(
        pattern = "^ *((0|5|[1-9][05]|100) *= *(0|[1-9][0-9]{0,7})( *[,;] *(0|5|[1-9][05]|100) *= *(0|[1-9][0-9]{0,7}))*)? *$"
    )]
    pub after_by_code: Option<String>,
}

/// Success rate by platform and by image type, over builds started in the window.
#[utoipa::path(get, path = "/reports/success", tag = "reports", params(WindowQuery),
    responses((status = 200, body = SuccessReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn success_report(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(window): ApiQuery<WindowQuery>,
) -> Result<Json<SuccessReport>, ApiError> {
    auth.require(Scope::Read)?;
    Ok(Json(state.db.success_report(window.since()?).await?))
}

/// Where builds fail: failures, builds and retries by stage code in the window, with the
/// builds blocked at each code now.
#[utoipa::path(get, path = "/reports/failures", tag = "reports", params(WindowQuery),
    responses((status = 200, body = FailureReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn failure_report(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(window): ApiQuery<WindowQuery>,
) -> Result<Json<FailureReport>, ApiError> {
    auth.require(Scope::Read)?;
    Ok(Json(state.db.failure_report(window.since()?).await?))
}

/// Stage durations (p50, p90, max) per code, over completions in the window.
#[utoipa::path(get, path = "/reports/durations", tag = "reports", params(WindowQuery),
    responses((status = 200, body = DurationReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn duration_report(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(window): ApiQuery<WindowQuery>,
) -> Result<Json<DurationReport>, ApiError> {
    auth.require(Scope::Read)?;
    Ok(Json(state.db.duration_report(window.since()?).await?))
}

/// Builds stuck (unfinished, nothing reported for longer than the threshold) and builds
/// blocked, oldest first (at most 500 of each).
#[utoipa::path(get, path = "/reports/stuck", tag = "reports", params(StuckQuery),
    responses((status = 200, body = StuckReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn stuck_report(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<StuckQuery>,
) -> Result<Json<StuckReport>, ApiError> {
    auth.require(Scope::Read)?;
    if query
        .after_secs
        .is_some_and(|secs| secs > MAX_STUCK_AFTER_SECS)
    {
        return Err(ApiError::invalid_field(
            "after_secs",
            format!("must be 0 to {MAX_STUCK_AFTER_SECS}"),
        ));
    }
    let thresholds = match (&query.after_secs, &query.after_by_code) {
        (None, None) => state.stuck_thresholds.clone(),
        (after, by_code) => StuckThresholds::parse(
            after.map_or(state.stuck_thresholds.default, Duration::from_secs),
            by_code.as_deref().unwrap_or(""),
        )
        .map_err(|error| ApiError::invalid_field("after_by_code", error))?,
    };
    Ok(Json(state.db.stuck_report(&thresholds, Utc::now()).await?))
}

/// Time to recover: from a stage's first failure in a build (in the window) to its completion.
#[utoipa::path(get, path = "/reports/recovery", tag = "reports", params(WindowQuery),
    responses((status = 200, body = RecoveryReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn recovery_report(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(window): ApiQuery<WindowQuery>,
) -> Result<Json<RecoveryReport>, ApiError> {
    auth.require(Scope::Read)?;
    Ok(Json(state.db.recovery_report(window.since()?).await?))
}

/// What resuming saved: over resumes in the window, the stages not re-run and their recorded
/// durations (unknown ones counted apart), in total, by platform, by image type, and the
/// builds that saved most (at most 20).
#[utoipa::path(get, path = "/reports/savings", tag = "reports", params(WindowQuery),
    responses((status = 200, body = SavingsReport), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn savings_report(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(window): ApiQuery<WindowQuery>,
) -> Result<Json<SavingsReport>, ApiError> {
    auth.require(Scope::Read)?;
    let (since, days) = window.window()?;
    Ok(Json(state.db.savings_report(since, days).await?))
}
