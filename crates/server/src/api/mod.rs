//! The HTTP API: routes, shared state and the OpenAPI document generated from the handlers.

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
use buildstate_domain::RetryPolicy;
use tower::timeout::TimeoutLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::db::Database;
use crate::secrets::TokenHasher;
use error::ApiError;
use openapi::StandardAnswers;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppInner>);

#[derive(Debug)]
pub struct AppInner {
    pub db: Database,
    pub hasher: TokenHasher,
    pub retry_policy: RetryPolicy,
    pub default_max_retries: u32,
    /// How long answers to idempotent reports are kept.
    pub idempotency_ttl: std::time::Duration,
    /// Tokens seen in the last moment, so a busy pipeline does not look its token up per request.
    pub recent_tokens: RecentTokens,
    /// On PostgreSQL: the other server processes, whose revocations and transitions this one
    /// follows.
    pub peers: Option<crate::peers::Peers>,
    /// What one client may take: body size, timeouts, connections.
    pub limits: crate::serving::Limits,
    /// The open event streams, bounded per token and in total.
    pub streams: crate::streams::Streams,
    /// Failed authentications per address and writes per token ([`crate::ratelimit`]).
    pub rate_limits: crate::ratelimit::RateLimiter,
    /// The header a trusted proxy puts the client's address in, if any.
    pub client_address_header: Option<axum::http::HeaderName>,
    /// Set: the listener speaks HTTPS.
    pub tls: Option<crate::serving::Tls>,
    /// Where committed changes are published (event stream, webhooks).
    pub events: crate::events::EventHub,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// When an unfinished build counts as stuck.
    pub stuck_thresholds: buildstate_domain::reports::StuckThresholds,
    pub webhooks: crate::webhooks::Webhooks,
    /// How often to look for builds that became stuck.
    pub stuck_check: std::time::Duration,
}

/// The body size limit, as a request extension: [`extract::ApiJson`] names it when refusing.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A per-process cache of authenticated tokens, kept for a short time (a second by default).
///
/// Every request needs its token checked; looking it up in the database each time costs a
/// fifth of a report's database work. Revoking through this process forgets every entry at
/// once; on PostgreSQL a revocation through another process does too, as soon as its
/// notification arrives ([`crate::peers`]); the window bounds how long a token revoked
/// elsewhere can work here should that notification be missed. Expiry is checked on every
/// request.
#[derive(Clone)]
pub struct RecentTokens(Option<moka::sync::Cache<String, crate::db::Actor>>);

impl std::fmt::Debug for RecentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are token hashes: nothing to show.
        f.write_str("RecentTokens")
    }
}

impl RecentTokens {
    /// Keeps each token for `ttl`; zero turns the cache off.
    pub fn new(ttl: std::time::Duration) -> Self {
        RecentTokens((!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build()
        }))
    }

    pub fn get(&self, secret_hash: &str) -> Option<crate::db::Actor> {
        self.0.as_ref()?.get(secret_hash)
    }

    pub fn remember(&self, secret_hash: String, actor: &crate::db::Actor) {
        if let Some(cache) = &self.0 {
            cache.insert(secret_hash, actor.clone());
        }
    }

    /// After a revocation: no cached token may outlive it here.
    pub fn forget_all(&self) {
        if let Some(cache) = &self.0 {
            cache.invalidate_all();
        }
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        AppState(Arc::new(inner))
    }

    /// After a change commits: count it and publish it (event stream, webhooks, the other
    /// server processes). `build` is the build right after `entries`.
    pub fn announce(
        &self,
        build: &buildstate_domain::wire::Build,
        entries: &[buildstate_domain::wire::HistoryEntry],
    ) {
        if self.events.publish(build, entries) {
            self.metrics.observe(build, entries);
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

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
