//! Users and API tokens: who may call the API, and with which scope.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use buildstate_domain::tokens::{self, Holder};
use buildstate_domain::wire::{
    CreateToken, CreateUser, CreatedToken, ErrorBody, TokenInfo, User, Whoami,
};
use buildstate_domain::{Scope, TokenId, Username};
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Authenticated, Id};
use crate::state::AppState;

/// Create a user (admin).
#[utoipa::path(post, path = "/users", tag = "accounts", request_body = CreateUser,
    responses((status = 201, body = User), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub async fn create_user(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(request): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    auth.require(Scope::Admin)?;
    let user = state
        .db
        .create_user(
            &request.username,
            request.email.as_str(),
            request.role,
            Utc::now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// List users (admin).
#[utoipa::path(get, path = "/users", tag = "accounts",
    responses((status = 200, body = Vec<User>)), security(("bearer" = ["admin"])))]
pub async fn list_users(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Vec<User>>, ApiError> {
    auth.require(Scope::Admin)?;
    Ok(Json(state.db.list_users().await?))
}

/// Create an API token; the secret is in this answer only.
///
/// Needs a `write` token for the caller's own user, `admin` for another user. The new token's
/// scope is at most the caller's (and its user's role allows), and it expires no later than
/// the caller's token: without `expires_in_seconds` it gets the caller's expiry, if any. It
/// records the caller's token as `created_by`, and is revoked with it.
#[utoipa::path(post, path = "/tokens", tag = "accounts", request_body = CreateToken,
    responses(
        (status = 201, body = CreatedToken, links(
            ("RevokeToken" = (operation_id = "revoke_token", parameters(("id" = "$response.body#/token/id")))),
        )),
        (status = 403, description = "the token may not create this token (scope, or another user's)", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = ["write"])))]
pub async fn create_token(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(request): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let actor = &auth.0;
    let creator = Holder {
        username: &actor.username,
        scope: actor.scope,
        expires_at: actor.expires_at,
    };
    tokens::authorize_token_creation(&creator, &request.username, request.scope)
        .map_err(ApiError::token_refused)?;
    tokens::check_description(&request.description).map_err(ApiError::token_refused)?;
    let user = state.db.user_by_name(&request.username).await?;
    let now = Utc::now();
    let expires_at = tokens::grant_token(
        &creator,
        &user.username,
        user.role,
        request.scope,
        request.expires_in_seconds,
        now,
    )
    .map_err(ApiError::token_refused)?;
    let created = state
        .db
        .create_token(
            &user,
            &request.description,
            request.scope,
            expires_at,
            Some(&actor.token_id),
            &state.hasher,
            now,
        )
        .await?;
    tracing::info!(token_id = %created.token.id, username = %user.username, scope = %request.scope, created_by = %actor.token_id, "token created");
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TokenListQuery {
    /// Only this user's tokens (admin); other tokens always see only their own user's.
    #[param(value_type = Option<Username>)]
    username: Option<String>,
}

/// List tokens, never their secrets.
#[utoipa::path(get, path = "/tokens", tag = "accounts", params(TokenListQuery),
    responses((status = 200, body = Vec<TokenInfo>)), security(("bearer" = ["read"])))]
pub async fn list_tokens(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<TokenListQuery>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let actor = auth.require(Scope::Read)?;
    // Parsed even where it is then ignored, so a malformed name is always the same 422.
    let asked: Option<Username> = query
        .username
        .map(|name| {
            name.parse()
                .map_err(|error: buildstate_domain::InvalidField| {
                    ApiError::invalid_field("username", error.to_string())
                })
        })
        .transpose()?;
    let username = if actor.scope == Scope::Admin {
        asked
    } else {
        Some(actor.username.clone())
    };
    Ok(Json(state.db.list_tokens(username.as_ref()).await?))
}

/// Revoke a token and every token it created; they stop working at once.
///
/// Needs a `write` token; a token that is not `admin` revokes only its own user's tokens of at
/// most its own scope. Revoking the last live admin token is refused (409): the install would
/// have nobody left to manage it.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "accounts",
    params(("id" = String, Path, description = "token id")),
    responses(
        (status = 200, description = "revoked, with the tokens it created", body = TokenInfo),
        (status = 403, description = "the token may not revoke this token", body = ErrorBody),
        (status = 404, description = "no such token, or another user's", body = ErrorBody),
        (status = 409, description = "`last_admin_token`: it would leave no live admin token", body = ErrorBody),
    ),
    security(("bearer" = ["write"])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    auth: Authenticated,
    Id(id): Id<TokenId>,
) -> Result<Json<TokenInfo>, ApiError> {
    let actor = &auth.0;
    let holder = Holder {
        username: &actor.username,
        scope: actor.scope,
        expires_at: actor.expires_at,
    };
    if !actor.scope.allows(Scope::Write) {
        return Err(ApiError::insufficient_scope(Scope::Write, actor.scope));
    }
    let id = id.as_str();
    let target = state.db.token_info(id).await?;
    tokens::authorize_revocation(&holder, &target.username, target.scope).map_err(|refusal| {
        match refusal {
            Some(refusal) => ApiError::token_refused(refusal),
            // Not "forbidden": whether someone else's token id exists is not ours to tell.
            None => ApiError::not_found("token", id),
        }
    })?;
    let token = state
        .db
        .revoke_token(id, &state.hasher.key_check(), Utc::now())
        .await?;
    state.recent_tokens.forget_all();
    state.streams.token_revoked();
    tracing::info!(token_id = %token.id, by = %actor.username, "token revoked, with the tokens it created");
    Ok(Json(token))
}

/// Who the presented token belongs to.
#[utoipa::path(get, path = "/auth/whoami", tag = "accounts",
    responses((status = 200, body = Whoami), (status = 401, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn whoami(auth: Authenticated) -> Result<Json<Whoami>, ApiError> {
    let actor = auth.require(Scope::Read)?;
    Ok(Json(Whoami {
        username: actor.username.clone(),
        role: actor.role,
        token_id: actor.token_id.clone(),
        scope: actor.scope,
        expires_at: actor.expires_at,
    }))
}
