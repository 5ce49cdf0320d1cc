//! The HTTP API: its routes and the OpenAPI document generated from the handlers.

pub mod accounts;
pub mod builds;
pub mod error;
pub mod events;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod reports;
pub mod request_checks;
pub mod request_id;

use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::routing::{delete, get, post};
use axum::{BoxError, Extension};
use axum::{Json, Router};
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;
use error::ApiError;
use extract::BodyLimit;
use openapi::StandardAnswers;

#[derive(OpenApi)]
#[openapi(
    info(title = "buildstate", description = "Records how far each image build got, so a re-run resumes at the failed step."),
    paths(
        health::health, health::ready, health::status,
        builds::start_build, builds::list_builds, builds::get_build, builds::report_transition,
        builds::heartbeat, builds::release_lease, builds::get_history, builds::gate_stage, builds::retry_build, builds::reset_build,
        builds::cancel_build,
        accounts::create_user, accounts::list_users, accounts::create_token,
        accounts::list_tokens, accounts::revoke_token, accounts::whoami,
        reports::success_report, reports::failure_report, reports::duration_report,
        reports::stuck_report, reports::recovery_report,
        events::build_events, events::all_events, metrics::metrics,
    ),
    // The `data` of every server-sent event (see `openapi::describe_event_streams`).
    components(schemas(buildstate_domain::wire::BuildEvent)),
    modifiers(&BearerAuth, &StandardAnswers),
)]
#[derive(Debug)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut document = serde_json::to_value(doc).expect("the OpenAPI document is JSON");
    openapi::add_links(&mut document);
    openapi::add_cross_field_rules(&mut document);
    openapi::describe_event_streams(&mut document);
    document
}

/// Every route of the API, with the per-request limits of `state.limits`.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let timeout = limits.request_timeout;
    // Shared, not owned: axum clones the whole router for every connection it accepts, and an
    // owned document (about half a megabyte) was deep-copied with it.
    let document = Arc::new(openapi());
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/status", get(health::status))
        .route(
            "/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { Json(document) }
            }),
        )
        .route(
            "/builds",
            post(builds::start_build).get(builds::list_builds),
        )
        .route("/builds/{id}", get(builds::get_build))
        .route("/builds/{id}/transitions", post(builds::report_transition))
        .route("/builds/{id}/heartbeat", post(builds::heartbeat))
        .route("/builds/{id}/release", post(builds::release_lease))
        .route("/builds/{id}/history", get(builds::get_history))
        .route("/builds/{id}/gate", get(builds::gate_stage))
        .route("/builds/{id}/retry", post(builds::retry_build))
        .route("/builds/{id}/reset", post(builds::reset_build))
        .route("/builds/{id}/cancel", post(builds::cancel_build))
        .route(
            "/users",
            post(accounts::create_user).get(accounts::list_users),
        )
        .route(
            "/tokens",
            post(accounts::create_token).get(accounts::list_tokens),
        )
        .route("/tokens/{id}", delete(accounts::revoke_token))
        .route("/auth/whoami", get(accounts::whoami))
        .route("/reports/success", get(reports::success_report))
        .route("/reports/failures", get(reports::failure_report))
        .route("/reports/durations", get(reports::duration_report))
        .route("/reports/stuck", get(reports::stuck_report))
        .route("/reports/recovery", get(reports::recovery_report))
        .route("/builds/{id}/events", get(events::build_events))
        .route("/events", get(events::all_events))
        .route("/metrics", get(metrics::metrics))
        .merge(crate::dashboard::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::observe_requests,
        ))
        .fallback(|uri: Uri| async move { ApiError::route_not_found(uri.path()) })
        .layer(axum::middleware::from_fn(move |request, next| {
            request_checks::refuse_unservable(limits.max_body_bytes, request, next)
        }))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(Extension(BodyLimit(limits.max_body_bytes)))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |_: BoxError| async move {
                    ApiError::request_timeout(timeout)
                }))
                .layer(TimeoutLayer::new(timeout)),
        )
        .layer(TraceLayer::new_for_http().make_span_with(request_id::span::<axum::body::Body>))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(request_id::NewRequestId))
        .layer(axum::middleware::map_request(request_id::drop_unusable))
        .with_state(state)
}
