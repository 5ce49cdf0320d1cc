//! The API's one error type: its variant decides the HTTP status, and every error leaves as the
//! JSON envelope `{"error": {"code", "message", "field"?, "details"?}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use buildstate_domain::tokens::TokenRefusal;
use buildstate_domain::wire::{
    Build, ErrorBody, ErrorCode, ErrorDetail, HistoryEntry, StageAlreadyCompletedDetails,
};
use buildstate_domain::{BuildId, Refusal, Scope};
use serde_json::json;

use crate::db::StoreError;
use crate::ratelimit::{Limit, OverLimit};

/// How long a client should wait after the database could not answer: a pool frees up or a
/// connection comes back within a moment, and a longer wait would only stall the pipeline.
const DATABASE_RETRY_AFTER_SECS: u64 = 1;

/// How long a refused event stream waits before trying again: long enough for a stream to
/// end somewhere, short enough that a dashboard comes back soon.
const STREAM_RETRY_AFTER_SECS: u64 = 5;

/// An error answer. 5xx answers say little; their cause is logged once, here.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    field: Option<String>,
    details: Option<serde_json::Value>,
    cause: Option<anyhow::Error>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            details: None,
            cause: None,
        }
    }

    fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A request field broke a rule: 422 naming the field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut error = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidField,
            message,
        );
        error.field = Some(field.into());
        error
    }

    /// The body is not JSON at all.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedJson,
            format!("the request body is not valid JSON: {}", message.into()),
        )
    }

    /// The body holds more than one JSON document: 422 naming the body and what follows.
    pub fn trailing_data(found: String) -> Self {
        ApiError::invalid_field(
            "body",
            format!(
                "the request body must hold one JSON document and nothing after it; found `{}` after it",
                // The client's bytes: control characters escaped, the rest as sent.
                found
                    .chars()
                    .map(|c| if c.is_control() { c.escape_debug().to_string() } else { c.to_string() })
                    .collect::<String>()
            ),
        )
    }

    pub fn unsupported_media_type(found: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!("expected `Content-Type: application/json`, got `{found}`"),
        )
    }

    /// HTTP/1.1 without a `Host` header: 400 naming it.
    pub fn missing_host() -> Self {
        let mut error = ApiError::bad_request(
            ErrorCode::InvalidField,
            "an HTTP/1.1 request needs a `Host` header",
        );
        error.field = Some("Host".to_owned());
        error
    }

    /// A body compressed in a way the server does not read: 415 naming the encoding.
    pub fn unsupported_content_encoding(found: &str) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            format!(
                "`Content-Encoding: {}` is not supported: send the body uncompressed",
                found.escape_debug()
            ),
        )
    }

    pub fn body_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than the {limit}-byte limit"),
        )
    }

    /// The request was not answered within the server's request timeout.
    pub fn request_timeout(limit: std::time::Duration) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            format!(
                "the request was not answered within the server's {}-second limit; try again",
                limit.as_secs()
            ),
        )
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn build_not_found(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::BuildNotFound,
            // Escaped: the id is the client's text, and may hold a control character.
            format!("build `{}` not found", id.escape_debug()),
        )
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{what} `{}` not found", id.escape_debug()),
        )
    }

    pub fn route_not_found(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::RouteNotFound,
            format!("no endpoint at `{path}`; the API is described at /openapi.json"),
        )
    }

    pub fn missing_token() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::MissingToken,
            "this endpoint needs a bearer token: send `Authorization: Bearer <token>` \
             (create one with `bldst token create`)",
        )
    }

    pub fn invalid_token() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidToken,
            "the bearer token is unknown or revoked",
        )
    }

    pub fn token_expired() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::TokenExpired,
            "the bearer token has expired: create a new one with `bldst token create`",
        )
    }

    pub fn insufficient_scope(needed: Scope, held: Scope) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InsufficientScope,
            buildstate_domain::tokens::TokenRefusal::InsufficientScope { needed, held }.to_string(),
        )
    }

    /// A token rule refused a request to create or revoke a token: 403 for the scope rules,
    /// 422 naming the field for the others.
    pub fn token_refused(refusal: TokenRefusal) -> Self {
        match (&refusal, refusal.field()) {
            (TokenRefusal::InsufficientScope { needed, held }, _) => {
                ApiError::insufficient_scope(*needed, *held)
            }
            (_, Some(field)) => ApiError::invalid_field(field, refusal.to_string()),
            (_, None) => ApiError::forbidden(refusal.to_string()),
        }
    }

    /// Revoking `id` would leave no live admin token: 409 saying what to do instead.
    pub fn last_admin_token(id: &str) -> Self {
        ApiError::conflict(
            ErrorCode::LastAdminToken,
            format!(
                "revoking token `{id}` would leave no live admin token (it is the last one, or \
                 created the last ones), and nobody could manage users and tokens: create another \
                 admin token first (`bldst token create --username NAME --scope admin`), then \
                 revoke this one"
            ),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// A rule of the product contract refused the change: 409 with what to do next.
    pub fn refused(build: &BuildId, refusal: &Refusal) -> Self {
        let (code, details) = match refusal {
            Refusal::StageAlreadyCompleted { stage, next } => (
                ErrorCode::StageAlreadyCompleted,
                json!({ "stage": stage, "next_state": next }),
            ),
            Refusal::BuildFinished { status } => {
                (ErrorCode::BuildFinished, json!({ "status": status }))
            }
            Refusal::BuildBlocked { state } => (ErrorCode::BuildBlocked, json!({ "state": state })),
            Refusal::StaleExpectedState { expected, actual } => (
                ErrorCode::StaleExpectedState,
                json!({ "expected_state": expected, "actual_state": actual }),
            ),
            Refusal::FailedStageFirst { failed, stage } => (
                ErrorCode::FailedStageFirst,
                json!({ "state": stage, "next_state": failed }),
            ),
            Refusal::RetryTooSoon {
                state,
                wait_seconds,
            } => (
                ErrorCode::RetryTooSoon,
                json!({ "state": state, "wait_seconds": wait_seconds }),
            ),
            Refusal::NothingToRetry { status } => {
                (ErrorCode::NothingToRetry, json!({ "status": status }))
            }
            Refusal::ResetForward { target, current } => (
                ErrorCode::ResetForward,
                json!({ "state": target, "actual_state": current }),
            ),
            Refusal::StageLeased {
                stage,
                holder,
                fence,
                expires_at,
                wait_seconds,
            } => (
                ErrorCode::StageLeased,
                json!({
                    "state": stage,
                    "holder": holder,
                    "fence": fence,
                    "expires_at": expires_at,
                    "wait_seconds": wait_seconds,
                }),
            ),
            Refusal::LeaseLost {
                stage,
                fence,
                holder,
                current_fence,
            } => (
                ErrorCode::LeaseLost,
                json!({
                    "state": stage,
                    "fence": fence,
                    "holder": holder,
                    "current_fence": current_fence,
                }),
            ),
            Refusal::NotLeased {
                stage,
                run,
                holder,
                state,
                status,
            } => (
                ErrorCode::NotLeased,
                json!({
                    "state": stage,
                    "run": run,
                    "holder": holder,
                    "actual_state": state,
                    "status": status,
                }),
            ),
        };
        let hint = match refusal {
            Refusal::BuildBlocked { .. } => {
                format!(" (build needs intervention: `bldst build retry {build} --reason ...`)")
            }
            Refusal::StageAlreadyCompleted { next, .. } => format!(" (run stage {next})"),
            Refusal::NotLeased { .. } => {
                " (report `in_progress` with a `run` to claim the stage)".to_owned()
            }
            _ => String::new(),
        };
        ApiError::conflict(code, format!("build `{build}`: {refusal}{hint}")).with_details(details)
    }

    /// [`ApiError::refused`], saying also where the build stands when the client needs that
    /// to carry on: a `stage_already_completed` refusal's details are a
    /// [`StageAlreadyCompletedDetails`].
    pub fn refused_at(
        id: &BuildId,
        refusal: &Refusal,
        build: Build,
        last_entry: HistoryEntry,
    ) -> Self {
        let error = ApiError::refused(id, refusal);
        let Refusal::StageAlreadyCompleted { stage, next } = *refusal else {
            return error;
        };
        let details = StageAlreadyCompletedDetails {
            stage,
            next_state: next,
            build,
            last_entry,
        };
        match serde_json::to_value(details) {
            Ok(details) => error.with_details(details),
            // Not expected (wire types serialize); the plain details still say what to run.
            Err(_) => error,
        }
    }

    /// Something broke on our side: 500, logged with its cause, no detail in the body.
    pub fn internal(cause: anyhow::Error) -> Self {
        let mut error = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "the server failed to handle the request; the cause is in its log",
        );
        error.cause = Some(cause);
        error
    }

    /// A rate limit refused the request: 429 naming the limit, with `Retry-After`. `because`,
    /// for a failed authentication, is why it failed, so the cause is not hidden by the limit.
    pub fn rate_limited(over: &OverLimit, because: Option<&ApiError>) -> Self {
        let wait = over.retry_after.as_secs();
        let window = over.window.as_secs();
        let (limit, message) = match over.limit {
            Limit::FailedAuthentications => (
                "failed_authentications",
                format!(
                    "{}too many failed authentications from this address (more than {} in {window} s): \
                     requests from it that fail to authenticate are refused for {wait} s; \
                     a valid token is still accepted",
                    because.map(|error| format!("{}; ", error.message)).unwrap_or_default(),
                    over.allowed,
                ),
            ),
            Limit::Writes => (
                "writes",
                format!(
                    "too many writes with this token (more than {} in {window} s): retry in {wait} s",
                    over.allowed
                ),
            ),
        };
        // `Retry-After` is written from `retry_after_seconds` (see `into_response`): no field
        // of its own, so every handler's `Result<_, ApiError>` stays small.
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            message,
        )
        .with_details(json!({
            "limit": limit,
            "allowed": over.allowed,
            "window_seconds": window,
            "retry_after_seconds": wait.max(1),
        }))
    }

    /// The database could not answer now and nothing was changed: 503 with `Retry-After`,
    /// which every client retries; the cause is logged, not sent.
    pub fn database_unavailable(cause: anyhow::Error) -> Self {
        let mut error = ApiError::unavailable(
            "the database is busy or unreachable; nothing was changed: try again shortly",
        )
        .with_details(json!({ "retry_after_seconds": DATABASE_RETRY_AFTER_SECS }));
        error.cause = Some(cause);
        error
    }

    /// An event stream was refused over a limit: 429 for the token's own limit (it holds
    /// too many), 503 for the process's (it serves too many); both with `Retry-After`.
    pub fn too_many_streams(refusal: crate::streams::StreamRefusal) -> Self {
        use crate::streams::StreamRefusal;
        match refusal {
            StreamRefusal::PerToken { allowed } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!(
                    "this token already holds {allowed} open event streams, its limit: close one \
                     (or use another token) and try again"
                ),
            )
            .with_details(json!({
                "limit": "streams_per_token",
                "allowed": allowed,
                "retry_after_seconds": STREAM_RETRY_AFTER_SECS,
            })),
            StreamRefusal::Total { allowed } => ApiError::unavailable(format!(
                "the server already serves {allowed} event streams, its limit: try again shortly"
            ))
            .with_details(json!({
                "limit": "streams",
                "allowed": allowed,
                "retry_after_seconds": STREAM_RETRY_AFTER_SECS,
            })),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what: "build", id } => ApiError::build_not_found(&id),
            StoreError::NotFound { what, id } => ApiError::not_found(what, &id),
            StoreError::Conflict(message) => ApiError::conflict(ErrorCode::Conflict, message),
            StoreError::CreatorRevoked => ApiError::invalid_token(),
            StoreError::LastAdminToken { id } => ApiError::last_admin_token(&id),
            // Callers that know the build map refusals with `refused`; this is the fallback.
            StoreError::Refused(refusal) | StoreError::RefusedAt { refusal, .. } => {
                ApiError::conflict(ErrorCode::Refused, refusal.to_string())
            }
            StoreError::Unavailable(cause) => ApiError::database_unavailable(cause),
            StoreError::Other(cause) => ApiError::internal(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let (Some(cause), StatusCode::SERVICE_UNAVAILABLE) = (&self.cause, self.status) {
            tracing::warn!(
                code = self.code.as_str(),
                error = format!("{cause:#}"),
                "the database could not answer; told the client to retry"
            );
        } else if let Some(cause) = &self.cause {
            tracing::error!(
                code = self.code.as_str(),
                error = format!("{cause:#}"),
                "request failed"
            );
        }
        let retry_after = matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then(|| self.details.as_ref()?.get("retry_after_seconds")?.as_u64())
        .flatten();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
                details: self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(wait) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
