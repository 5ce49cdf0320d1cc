//! Users and their API tokens: creating and listing them, revoking a token with every token it
//! created, and resolving a token's secret hash to the [`Actor`] a request acts as.

use buildstate_domain::wire::{CreatedToken, TokenInfo, User};
use buildstate_domain::{Role, Scope, Username};
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::rows::{optional_time, parsed, token_from_row, user_from_row, TOKEN_COLUMNS};
use super::{Database, Dialect, StoreError, StoreResult};

/// The PostgreSQL channel a revocation is announced on, in the statement that revokes (see
/// [`Database::revoke_token`]); the payload is the token's id. [`crate::peers`] listens on it.
pub const TOKEN_REVOKED: &str = "buildstate_token_revoked";

/// Who is acting: recorded in the history of every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub token_id: String,
    pub user_id: String,
    pub username: Username,
    pub role: Role,
    pub scope: Scope,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Database {
    /// Creates a user; a taken username is a conflict.
    pub async fn create_user(
        &self,
        username: &Username,
        email: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> StoreResult<User> {
        let id = format!("u_{}", crate::secrets::random_id(16));
        let inserted = sqlx::query(
            "INSERT INTO users (id, username, email, role, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(username.as_str())
        .bind(email)
        .bind(role.as_str())
        .bind(now.timestamp_millis())
        .execute(&self.writer)
        .await;
        match inserted {
            Ok(_) => self.user_by_name(username).await,
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => Err(
                StoreError::Conflict(format!("user `{username}` already exists")),
            ),
            Err(error) => Err(error.into()),
        }
    }

    /// One user by name.
    pub async fn user_by_name(&self, username: &Username) -> StoreResult<User> {
        let row = sqlx::query(
            "SELECT id, username, email, role, created_at FROM users WHERE username = $1",
        )
        .bind(username.as_str())
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "user",
            id: username.to_string(),
        })?;
        user_from_row(&row)
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query(
            "SELECT id, username, email, role, created_at FROM users ORDER BY username",
        )
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// The server's start: keeps the check of the key it hashes tokens with. The first time,
    /// the tokens made before checks were kept get it too (made with this key, or they never
    /// worked). A different check is a new key: it replaces the old one, and the tokens made
    /// with the old key no longer count as working (logged).
    pub async fn keep_key_check(&self, check: &str) -> StoreResult<()> {
        async {
            match self.stored_key_check().await? {
                Some(stored) if stored == check => return Ok(()),
                Some(_) => tracing::warn!(
                    "SECRET_KEY differs from the key this database's tokens were made with: \
                     every token made before now is refused; create new ones (`bldst server token create`)"
                ),
                None => {}
            }
            self.record_key_check(check).await
        }
        .await
        .map_err(StoreError::during(|| "keep the key check".to_owned()))
    }

    /// A command beside the server (`bootstrap`, `token create`): whether `check` is the check
    /// of the key the server keeps, or none is kept yet (then it is kept now: a fresh install
    /// bootstrapped before its first start).
    pub async fn same_key_as_the_server(&self, check: &str) -> StoreResult<bool> {
        async {
            match self.stored_key_check().await? {
                Some(stored) => Ok(stored == check),
                None => self.record_key_check(check).await.map(|()| true),
            }
        }
        .await
        .map_err(StoreError::during(|| "compare the key check".to_owned()))
    }

    async fn stored_key_check(&self) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT key_check FROM key_check WHERE id = 1")
                .fetch_optional(&self.writer)
                .await?,
        )
    }

    async fn record_key_check(&self, check: &str) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO key_check (id, key_check, recorded_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET key_check = excluded.key_check, \
             recorded_at = excluded.recorded_at",
        )
        .bind(check)
        .bind(Utc::now().timestamp_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE api_tokens SET key_check = $1 WHERE key_check IS NULL")
            .bind(check)
            .execute(&mut *tx)
            .await?;
        tx.commit().await.map_err(StoreError::at_commit)?;
        Ok(())
    }

    /// How many users have the admin role.
    pub async fn count_admins(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
            .fetch_one(&self.writer)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Creates a token for `user`, created by the token `created_by` (`None`: out of band); the
    /// secret is returned once and stored only as a hash.
    ///
    /// The creator must still be live when the token is written: a creator revoked meanwhile
    /// is [`StoreError::CreatorRevoked`], so no token outlives a revocation of its creator. On
    /// PostgreSQL the creator's row is share-locked, which a concurrent revocation waits for.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_token(
        &self,
        user: &User,
        description: &str,
        scope: Scope,
        expires_at: Option<DateTime<Utc>>,
        created_by: Option<&str>,
        hasher: &crate::secrets::TokenHasher,
        now: DateTime<Utc>,
    ) -> StoreResult<CreatedToken> {
        let id = format!("t_{}", crate::secrets::random_id(16));
        let secret = crate::secrets::new_token_secret();
        let mut tx = self.writer.begin().await?;
        if let Some(creator) = created_by {
            let live = sqlx::query(&format!(
                "SELECT id FROM api_tokens WHERE id = $1 AND revoked_at IS NULL{}",
                self.dialect.for_share()
            ))
            .bind(creator)
            .fetch_optional(&mut *tx)
            .await?;
            if live.is_none() {
                return Err(StoreError::CreatorRevoked);
            }
        }
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, secret_hash, description, scope, created_at, \
             expires_at, created_by, key_check) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(&user.id)
        .bind(hasher.hash(&secret))
        .bind(description)
        .bind(scope.as_str())
        .bind(now.timestamp_millis())
        .bind(expires_at.map(|at| at.timestamp_millis()))
        .bind(created_by)
        .bind(hasher.key_check())
        .execute(&mut *tx)
        .await?;
        tx.commit().await.map_err(StoreError::at_commit)?;
        let token = self.token_info(&id).await?;
        Ok(CreatedToken { token, secret })
    }

    /// Tokens, newest first, optionally of one user. Never their secrets.
    pub async fn list_tokens(&self, username: Option<&Username>) -> StoreResult<Vec<TokenInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE ($1 IS NULL OR u.username = $1) ORDER BY t.created_at DESC, t.id"
        ))
        .bind(username.map(Username::as_str))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// One token by id, never its secret.
    pub async fn token_info(&self, id: &str) -> StoreResult<TokenInfo> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "token",
            id: id.to_owned(),
        })?;
        token_from_row(&row)
    }

    /// Revokes a token and every token it created, transitively; revoking twice is fine, an
    /// unknown id is not found. Refused with [`StoreError::LastAdminToken`] when it would leave
    /// no live admin token.
    ///
    /// On PostgreSQL the live admin tokens are locked first (in id order, so two revocations
    /// cannot deadlock), so two revocations racing for the last two cannot both succeed. The
    /// tree is revoked until a pass finds nothing more: a token created while the first pass
    /// ran (its creator share-locked, see [`Database::create_token`]) is caught by the next.
    /// On PostgreSQL the same statements announce each revocation to every server process
    /// sharing the database (see [`crate::peers`]); the announcements go out when the
    /// revocation commits, never without it (not when the last admin token is refused).
    ///
    /// Only tokens that can work count as live admin tokens: unrevoked, unexpired, and made
    /// with the key whose check is `key_check` (the server's).
    pub async fn revoke_token(
        &self,
        id: &str,
        key_check: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<TokenInfo> {
        let mut tx = self.writer.begin().await?;
        let exists = sqlx::query("SELECT id FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "token",
                id: id.to_owned(),
            });
        }
        let live_admins = |lock: &'static str| {
            format!(
                "SELECT t.id FROM api_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.scope = 'admin' AND u.role = 'admin' AND t.revoked_at IS NULL \
                 AND (t.expires_at IS NULL OR t.expires_at > $1) \
                 AND (t.key_check IS NULL OR t.key_check = $2) ORDER BY t.id{lock}"
            )
        };
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE OF t",
        };
        let admins_before: Vec<String> = sqlx::query_scalar(&live_admins(lock))
            .bind(now.timestamp_millis())
            .bind(key_check)
            .fetch_all(&mut *tx)
            .await?;
        const TREE: &str = "WITH RECURSIVE tree (id) AS ( \
             SELECT id FROM api_tokens WHERE id = $1 \
             UNION SELECT t.id FROM api_tokens t JOIN tree ON t.created_by = tree.id)";
        const REVOKE_TREE: &str = "UPDATE api_tokens SET revoked_at = $2 \
             WHERE revoked_at IS NULL AND id IN (SELECT id FROM tree)";
        loop {
            let revoked = match self.dialect {
                Dialect::Sqlite => sqlx::query(&format!("{TREE} {REVOKE_TREE}"))
                    .bind(id)
                    .bind(now.timestamp_millis())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                Dialect::Postgres => {
                    // A SELECT in a WITH runs only if referenced: the COUNT makes it run.
                    let announce = format!(
                        "{TREE}, revoked AS ({REVOKE_TREE} RETURNING id), \
                         announced AS (SELECT pg_notify($3, id) FROM revoked) \
                         SELECT COUNT(*) FROM announced"
                    );
                    let count: i64 = sqlx::query_scalar(&announce)
                        .bind(id)
                        .bind(now.timestamp_millis())
                        .bind(TOKEN_REVOKED)
                        .fetch_one(&mut *tx)
                        .await?;
                    u64::try_from(count).unwrap_or(0)
                }
            };
            if revoked == 0 {
                break;
            }
        }
        let admins_after: Vec<String> = sqlx::query_scalar(&live_admins(""))
            .bind(now.timestamp_millis())
            .bind(key_check)
            .fetch_all(&mut *tx)
            .await?;
        if admins_after.is_empty() && !admins_before.is_empty() {
            // Dropping the transaction rolls the revocation back.
            return Err(StoreError::LastAdminToken { id: id.to_owned() });
        }
        tx.commit().await.map_err(StoreError::at_commit)?;
        self.token_info(id).await
    }

    /// The live (unrevoked) token with this secret hash, with its user.
    pub async fn actor_by_token_hash(&self, secret_hash: &str) -> StoreResult<Option<Actor>> {
        let row = sqlx::query(
            "SELECT t.id, t.user_id, u.username, u.role, t.scope, t.expires_at, t.last_used_at \
             FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.secret_hash = $1 AND t.revoked_at IS NULL",
        )
        .bind(secret_hash)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| {
            Ok(Actor {
                token_id: row.try_get("id")?,
                user_id: row.try_get("user_id")?,
                username: parsed(&row, "username")?,
                role: parsed(&row, "role")?,
                scope: parsed(&row, "scope")?,
                expires_at: optional_time(&row, "expires_at")?,
                last_used_at: optional_time(&row, "last_used_at")?,
            })
        })
        .transpose()
    }

    /// Whether token `token_id` still works at `now`: not revoked, not expired.
    pub async fn token_is_live(&self, token_id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
        let live: Option<String> = sqlx::query_scalar(
            "SELECT id FROM api_tokens WHERE id = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(token_id)
        .bind(now.timestamp_millis())
        .fetch_optional(&self.reader)
        .await
        .map_err(|error| {
            StoreError::during(|| format!("check whether token `{token_id}` works"))(error.into())
        })?;
        Ok(live.is_some())
    }

    /// Records that a token was used.
    pub async fn touch_token(&self, token_id: &str, now: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now.timestamp_millis())
            .bind(token_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
