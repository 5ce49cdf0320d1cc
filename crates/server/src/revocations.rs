//! Token revocations reach every server process at once: PostgreSQL `LISTEN`/`NOTIFY`.
//!
//! Each process trusts a checked token for a short window ([`crate::api::RecentTokens`]), which
//! would let a token revoked through one process keep working on the others for that long.
//! A revocation therefore sends a notification on [`CHANNEL`] in the same statement that
//! revokes (see `Database::revoke_token`), and every process follows the channel on a
//! connection of its own and forgets its trusted tokens when one arrives. If that connection
//! drops, the process forgets everything too (a notification may have been missed) and
//! reconnects; meanwhile the trust window is the bound. SQLite is one process: nothing to
//! follow.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::api::RecentTokens;

/// The channel revocations are announced on; the payload is the token's id.
pub const CHANNEL: &str = "buildstate_token_revoked";

/// How long to wait before reconnecting after the connection could not be re-established.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Where to listen: a PostgreSQL URL. Its `Debug` never shows the URL (it may hold a password).
#[derive(Clone)]
pub struct RevocationFeed {
    url: String,
}

impl std::fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevocationFeed")
    }
}

impl RevocationFeed {
    /// A feed for `database_url`, or `None` when the database is not PostgreSQL.
    pub fn for_database(database_url: &str) -> Option<Self> {
        (database_url.starts_with("postgres:") || database_url.starts_with("postgresql:")).then(
            || RevocationFeed {
                url: database_url.to_owned(),
            },
        )
    }

    /// Starts listening. Returns once the process listens (so no revocation committed after
    /// this returns can be missed), or after logging why it could not; then follows the
    /// channel in the background until the returned task is aborted.
    pub async fn follow(self, tokens: RecentTokens) -> tokio::task::JoinHandle<()> {
        let listener = match self.listen().await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(error = %error, "cannot follow token revocations yet (retrying): a token revoked through another server process may work here for the token cache window");
                None
            }
        };
        tokio::spawn(self.forget_on_revocation(listener, tokens))
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        Ok(listener)
    }

    async fn forget_on_revocation(self, mut listener: Option<PgListener>, tokens: RecentTokens) {
        loop {
            let Some(connected) = listener.as_mut() else {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                if let Ok(connected) = self.listen().await {
                    tracing::info!("following token revocations again");
                    tokens.forget_all();
                    listener = Some(connected);
                }
                continue;
            };
            match connected.try_recv().await {
                Ok(Some(notification)) => {
                    tracing::debug!(token = notification.payload(), "token revoked elsewhere");
                    tokens.forget_all();
                }
                // The connection dropped: a revocation may have gone unseen. The next
                // `try_recv` reconnects and listens again.
                Ok(None) => {
                    tracing::warn!(
                        "lost the connection that follows token revocations; reconnecting"
                    );
                    tokens.forget_all();
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot follow token revocations (retrying): a token revoked through another server process may work here for the token cache window");
                    tokens.forget_all();
                    listener = None;
                }
            }
        }
    }
}
