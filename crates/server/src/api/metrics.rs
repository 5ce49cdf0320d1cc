//! `GET /metrics`: Prometheus' text format ([`crate::metrics`]), and the middleware that
//! counts and times every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use buildstate_domain::wire::ErrorBody;
use buildstate_domain::Scope;
use chrono::Utc;

use super::error::ApiError;
use super::extract::Authenticated;
use crate::state::AppState;

/// Prometheus metrics: builds by status, transitions, retries, blocked and stuck builds, HTTP
/// requests. Needs a read token (Prometheus sends it with `authorization: credentials`).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn metrics(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    auth.require(Scope::Read)?;
    let overview = state.db.status_overview().await?;
    let attention = state
        .db
        .stuck_report(&state.stuck_thresholds, Utc::now())
        .await?;
    let blocked = overview.by_status.get("blocked").copied().unwrap_or(0);
    let text = state
        .metrics
        .render(&overview.by_status, blocked, attention.stuck.len() as u64)
        .map_err(|error| ApiError::from(crate::db::StoreError::Other(error)))?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}

/// Counts and times each request by method, route pattern and status.
pub async fn observe_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.observe_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
