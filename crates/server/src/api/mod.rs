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
use axum::routing::get;
use axum::{BoxError, Extension};
use axum::{Json, Router};
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use error::ApiError;
use extract::BodyLimit;
use openapi::{LinkSpelling, StandardAnswers};

/// What the document says beyond its routes; each route's entry comes from its handler's
/// `#[utoipa::path]`, registered in [`documented_routes`].
#[derive(OpenApi)]
#[openapi(
    info(title = "buildstate", description = "Records how far each image build got, so a re-run resumes at the failed step."),
    // The `data` of every server-sent event (see `openapi::describe_event_streams`), and the
    // `details` of a `stage_already_completed` refusal.
    components(schemas(
        buildstate_domain::wire::BuildEvent,
        buildstate_domain::wire::StageAlreadyCompletedDetails
    )),
    modifiers(&BearerAuth),
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

/// Every documented route, each registered once: `routes!` takes the method, the path and the
/// OpenAPI entry from the handler's `#[utoipa::path]`, so the router and the document cannot
/// disagree. Handlers sharing a path go in one `routes!`.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::status))
        .routes(routes!(builds::start_build, builds::list_builds))
        .routes(routes!(builds::get_build))
        .routes(routes!(builds::report_transition))
        .routes(routes!(builds::heartbeat))
        .routes(routes!(builds::release_lease))
        .routes(routes!(builds::get_history))
        .routes(routes!(builds::gate_stage))
        .routes(routes!(builds::retry_build))
        .routes(routes!(builds::reset_build))
        .routes(routes!(builds::cancel_build))
        .routes(routes!(accounts::create_user, accounts::list_users))
        .routes(routes!(accounts::create_token, accounts::list_tokens))
        .routes(routes!(accounts::revoke_token))
        .routes(routes!(accounts::whoami))
        .routes(routes!(reports::success_report))
        .routes(routes!(reports::failure_report))
        .routes(routes!(reports::duration_report))
        .routes(routes!(reports::stuck_report))
        .routes(routes!(reports::recovery_report))
        .routes(routes!(reports::savings_report))
        .routes(routes!(events::build_events))
        .routes(routes!(events::all_events))
        .routes(routes!(metrics::metrics))
}

/// The finished document: what the shared extractors answer on every operation, the links
/// spelled as OpenAPI does, the version, and what utoipa's attributes cannot say ([`openapi`]'s
/// cross-field rules, streams).
fn document(mut doc: utoipa::openapi::OpenApi) -> serde_json::Value {
    StandardAnswers.modify(&mut doc);
    LinkSpelling.modify(&mut doc);
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let mut document = serde_json::to_value(doc).expect("the OpenAPI document is JSON");
    openapi::add_cross_field_rules(&mut document);
    openapi::describe_event_streams(&mut document);
    document
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi() -> serde_json::Value {
    document(documented_routes().into_openapi())
}

/// Every route of the API, with the per-request limits of `state.limits`.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let timeout = limits.request_timeout;
    let (routes, document) = documented_routes().split_for_parts();
    // Shared, not owned: axum clones the whole router for every connection it accepts, and an
    // owned document (about half a megabyte) was deep-copied with it.
    let document = Arc::new(self::document(document));
    routes
        .route(
            "/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { Json(document) }
            }),
        )
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
