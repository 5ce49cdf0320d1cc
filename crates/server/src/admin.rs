//! Admin operations that run beside the API rather than through it, on the server's own
//! configuration (its `DATABASE_URL` and `SECRET_KEY`): `bldst server bootstrap` and
//! `bldst server token create`.

use std::time::Duration;

use buildstate_domain::tokens;
use buildstate_domain::wire::CreatedToken;
use buildstate_domain::{Email, Role, Scope, Username};
use chrono::Utc;

use crate::db::StoreError;
use crate::state::AppState;

/// Creates the first admin user and an admin token on a fresh install, returning the token's
/// secret. Refuses once any admin exists: from then on, admins create users and tokens
/// through the API.
pub async fn bootstrap_admin(
    state: &AppState,
    username: &Username,
    email: &Email,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        state.db.count_admins().await? == 0,
        "an admin user already exists: create more users and tokens with an admin token (`bldst user create`, `bldst token create`)"
    );
    let now = Utc::now();
    let user = state
        .db
        .create_user(username, email.as_str(), Role::Admin, now)
        .await?;
    let created = state
        .db
        .create_token(
            &user,
            "bootstrap admin token",
            Scope::Admin,
            None,
            None,
            &state.hasher,
            now,
        )
        .await?;
    Ok(created.secret)
}

/// `bldst server token create`: creates a token for `username` straight in the database, with
/// no token to authorize it. Whoever can run it holds the server's `DATABASE_URL` and
/// `SECRET_KEY` already, so it is the way back in when every admin token is revoked, expired
/// or lost. The token is a root: it records no creator, so revoking another token never
/// revokes it.
pub async fn create_token_out_of_band(
    state: &AppState,
    username: &Username,
    scope: Scope,
    description: &str,
    expires_in: Option<Duration>,
) -> anyhow::Result<CreatedToken> {
    // The API's rules (domain `tokens`), but the creator's: there is none to outlive.
    tokens::check_description(description)?;
    let user = state.db.user_by_name(username).await.map_err(|error| match error {
        StoreError::NotFound { .. } => anyhow::anyhow!(
            "user `{username}` not found: `bldst server token create` makes tokens for existing users"
        ),
        other => anyhow::Error::new(other),
    })?;
    let now = Utc::now();
    // Whole seconds, as the API takes them: zero is refused as it is there.
    let expires_at = tokens::grant_root_token(
        username,
        user.role,
        scope,
        expires_in.map(|lifetime| lifetime.as_secs()),
        now,
    )?;
    let created = state
        .db
        .create_token(
            &user,
            description,
            scope,
            expires_at,
            None,
            &state.hasher,
            now,
        )
        .await?;
    tracing::info!(token_id = %created.token.id, username = %username, scope = %scope, "token created out of band");
    Ok(created)
}
