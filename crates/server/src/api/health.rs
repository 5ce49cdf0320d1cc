//! Liveness, readiness and the status overview.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use buildstate_domain::wire::{ErrorBody, Health, StatusAnswer};
use buildstate_domain::Scope;

use super::error::ApiError;
use super::extract::Authenticated;
use crate::state::AppState;

fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Alive: the process answers. No token needed.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: version(),
        database: None,
    })
}

/// Ready: the database answers and every migration is applied. No token needed.
#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let database = Some(state.db.dialect().name().to_owned());
    match state.db.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
                version: version(),
                database,
            }),
        ),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                    version: version(),
                    database,
                }),
            )
        }
    }
}

/// Overview: build counts by status and by platform, and where this process counts the rate
/// limits (`redis`, or `process` with since when Redis has not answered).
#[utoipa::path(get, path = "/status", tag = "health",
    responses((status = 200, body = StatusAnswer), (status = 401, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn status(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<StatusAnswer>, ApiError> {
    auth.require(Scope::Read)?;
    Ok(Json(StatusAnswer {
        overview: state.db.status_overview().await?,
        rate_limits: Some(state.rate_limits.status()),
    }))
}
