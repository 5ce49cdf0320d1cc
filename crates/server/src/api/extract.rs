//! Request extractors that turn every bad input into an [`ApiError`] naming what was wrong:
//! JSON bodies (with the failing field's path), query strings and bearer tokens.

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawPathParams, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use buildstate_domain::wire::ErrorCode;
use buildstate_domain::{BuildId, Scope, TokenId};
use chrono::{Duration, Utc};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

use super::error::ApiError;
use crate::db::Actor;
use crate::state::AppState;

/// The body size limit, as a request extension (the router adds it): [`ApiJson`] names it when
/// refusing a body over it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body, rejected with the path of the field that failed to parse.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<BodyLimit>().map(|limit| limit.0);
        if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or("(not text)");
            let essence = content_type.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err(ApiError::unsupported_media_type(content_type));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::body_too_large(limit.unwrap_or_default())
                } else {
                    ApiError::bad_request(ErrorCode::UnreadableBody, rejection.body_text())
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a body holding exactly one JSON document, naming the failing field on a type or rule
/// error, and refusing anything after the document (`{...} xyz`, or a second document whose
/// change would otherwise be silently dropped).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let value = parse_document(deserializer)?;
    // `end` skips trailing whitespace and fails on anything else.
    if deserializer.end().is_err() {
        return Err(ApiError::trailing_data(trailing_data(bytes)));
    }
    Ok(value)
}

/// What follows the first JSON document of `bytes`, for the refusal: the first few characters,
/// whitespace trimmed.
fn trailing_data(bytes: &[u8]) -> String {
    let mut stream =
        serde_json::Deserializer::from_slice(bytes).into_iter::<serde::de::IgnoredAny>();
    let _ = stream.next();
    let rest = String::from_utf8_lossy(&bytes[stream.byte_offset()..]);
    let rest = rest.trim();
    match rest.char_indices().nth(32) {
        Some((at, _)) => format!("{}…", &rest[..at]),
        None => rest.to_owned(),
    }
}

fn parse_document<'de, T: DeserializeOwned>(
    deserializer: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = without_position(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = field_named_in(&message, &path)
                    .or_else(|| subfield_named_in(&message, &path))
                    .unwrap_or(path);
                ApiError::invalid_field(field, message)
            }
            _ => ApiError::malformed_json(message),
        }
    })
}

/// serde_json appends " at line L column C"; the field path says more to a person.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// "missing field `platform`" and "unknown field `x`" happen at the parent's path: name the
/// field itself, inside its parent when that is not the body (`retry_policy.rules[0].x`).
fn field_named_in(message: &str, path: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    let field = rest.split('`').next()?;
    // An unknown field's path already ends with it; a missing one's is its parent's.
    Some(match path {
        "" | "." => field.to_owned(),
        path if path == field || path.ends_with(&format!(".{field}")) => path.to_owned(),
        parent => format!("{parent}.{field}"),
    })
}

/// A rule error such as "invalid outputs.ami_id: …" raised while parsing `outputs` names a
/// field inside it: report that one.
fn subfield_named_in(message: &str, path: &str) -> Option<String> {
    let (field, _) = message.strip_prefix("invalid ")?.split_once(": ")?;
    let inside = field.strip_prefix(path)?;
    (inside.starts_with('.') && !path.is_empty()).then(|| field.to_owned())
}

/// A query string, rejected with what failed to parse.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                ApiError::bad_request(ErrorCode::InvalidQuery, rejection.body_text())
            })
    }
}

/// An id a route takes in its path, and how the API answers one that names nothing.
pub trait PathId: std::str::FromStr + Send {
    /// The answer for `raw`, which is no such resource.
    fn not_found(raw: &str) -> ApiError;
}

impl PathId for BuildId {
    fn not_found(raw: &str) -> ApiError {
        ApiError::build_not_found(raw)
    }
}

impl PathId for TokenId {
    fn not_found(raw: &str) -> ApiError {
        ApiError::not_found("token", raw)
    }
}

/// The `{id}` of a route, parsed: the one place every route reads its id.
///
/// A malformed id (`..%2Fetc`, a NUL byte, not UTF-8 once decoded) is answered exactly as a
/// well-formed id that names nothing, 404 with the resource's `*_not_found` code: no
/// resource can have it, and a 404 is what the OpenAPI document promises for a path id
/// (`openapi::StandardAnswers`). It never reaches the database. Extracted after the token
/// (401 comes first) and before the body and the scope check.
#[derive(Debug)]
pub struct Id<T>(pub T);

impl<T: PathId, S: Send + Sync> FromRequestParts<S> for Id<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(raw)) => raw,
            // Not UTF-8 once percent-decoded: named as it was sent.
            Err(_) => RawPathParams::from_request_parts(parts, state)
                .await
                .ok()
                .and_then(|params| params.iter().next().map(|(_, raw)| raw.to_owned()))
                .unwrap_or_default(),
        };
        raw.parse().map(Id).map_err(|_| T::not_found(&raw))
    }
}

/// The actor behind a valid bearer token. Handlers then call [`Authenticated::require`].
#[derive(Debug)]
pub struct Authenticated(pub Actor);

/// How stale `last_used_at` may get before a request refreshes it (saves a write per request).
const LAST_USED_RESOLUTION: Duration = Duration::seconds(60);

impl Authenticated {
    /// Refuses with 403 unless the token's scope includes `needed`.
    pub fn require(&self, needed: Scope) -> Result<&Actor, ApiError> {
        if self.0.scope.allows(needed) {
            Ok(&self.0)
        } else {
            Err(ApiError::insufficient_scope(needed, self.0.scope))
        }
    }
}

/// The secret of the request's `Authorization: Bearer …` header, trimmed; `None` when there
/// is none or it is empty. The one place that reads it: authentication and the report
/// handler's "an output must not be the caller's own token" check.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let secret = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!secret.is_empty()).then_some(secret)
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // No token at all is a client set up wrong, not a guess: it is not counted.
        let secret = bearer_token(&parts.headers).ok_or_else(ApiError::missing_token)?;
        let secret_hash = state.hasher.hash(secret);
        let found = match state.recent_tokens.get(&secret_hash) {
            Some(actor) => Some(actor),
            None => state.db.actor_by_token_hash(&secret_hash).await?,
        };
        let now = Utc::now();
        let mut actor = match found {
            None => {
                return Err(failed_authentication(parts, state, ApiError::invalid_token()).await)
            }
            Some(actor) if actor.expires_at.is_some_and(|expires_at| expires_at <= now) => {
                return Err(failed_authentication(parts, state, ApiError::token_expired()).await)
            }
            Some(actor) => actor,
        };
        if is_write(&parts.method) {
            state
                .rate_limits
                .write(&actor.token_id)
                .await
                .map_err(|over| ApiError::rate_limited(&over, None))?;
        }
        let stale = actor
            .last_used_at
            .is_none_or(|used| now - used > LAST_USED_RESOLUTION);
        if stale {
            state.db.touch_token(&actor.token_id, now).await?;
            actor.last_used_at = Some(now);
        }
        state.recent_tokens.remember(secret_hash, &actor);
        Ok(Authenticated(actor))
    }
}

/// Whether a request changes state, for the per-token write limit.
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Counts a failed authentication against the client's address: `refusal` (401) while the
/// address is under its limit, 429 naming it and the cool-down once over.
async fn failed_authentication(parts: &Parts, state: &AppState, refusal: ApiError) -> ApiError {
    let address = client_address(parts, state.client_address_header.as_ref());
    match state.rate_limits.failed_authentication(address).await {
        Ok(()) => refusal,
        Err(over) => {
            if over.first_refusal {
                tracing::warn!(
                    client = %address,
                    cooldown_secs = over.retry_after.as_secs(),
                    "too many failed authentications from one address: its failing requests are refused until the cool-down ends"
                );
            }
            ApiError::rate_limited(&over, Some(&refusal))
        }
    }
}

/// The client's address: the last address in `header` when the server is told to trust one
/// (a proxy in front appends the address it saw; what comes before it, the client could have
/// written), else the connection's peer.
pub fn client_address(parts: &Parts, header: Option<&HeaderName>) -> IpAddr {
    let forwarded = header
        .and_then(|name| parts.headers.get_all(name).iter().next_back())
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok());
    forwarded
        .or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip())
        })
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}
