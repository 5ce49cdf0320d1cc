//! What the other server processes on one PostgreSQL database announce, followed on one
//! connection per process.
//!
//! Processes tell each other two things with `NOTIFY`:
//!
//! - **A token was revoked** ([`TOKEN_REVOKED`], the token's id as payload). Each process trusts
//!   a checked token for a short window ([`RecentTokens`]), which would let a token
//!   revoked through one process keep working on the others for that long. A revocation
//!   therefore notifies in the same statement that revokes (see `Database::revoke_token`), and
//!   every process forgets its trusted tokens when the notification arrives. If the connection
//!   drops, the process forgets everything too (a notification may have been missed) and
//!   reconnects; meanwhile the trust window is the bound.
//! - **Transitions were recorded** ([`crate::events::CHANNEL`]): handed to the [`EventHub`],
//!   which relays them to this process's live streams.
//!
//! One connection listens on both channels, not one per channel: PostgreSQL wakes every
//! listening connection of a database for every notification, whatever its channel, so each
//! listening connection more costs the database a wake-up per announcement (BENCHMARKS.md,
//! "One and three server processes"). SQLite is one process: nothing to follow.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgNotification};

use crate::db::{Database, Dialect, TOKEN_REVOKED};
use crate::events::EventHub;
use crate::token_cache::RecentTokens;

/// How long to wait before reconnecting after the connection could not be re-established.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Where to listen: a PostgreSQL URL. Its `Debug` never shows the URL (it may hold a password).
#[derive(Clone)]
pub struct Peers {
    url: String,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peers")
    }
}

/// What an announcement changes in this process.
#[derive(Debug, Clone)]
pub struct Followers {
    pub tokens: RecentTokens,
    pub events: EventHub,
    /// Streams whose token was revoked elsewhere must end here too.
    pub streams: crate::streams::Streams,
}

impl Followers {
    /// A revocation may have happened elsewhere: trust no cached token, and let every
    /// stream check its own.
    fn forget_tokens(&self) {
        self.tokens.forget_all();
        self.streams.token_revoked();
    }
}

impl Peers {
    /// The peers of a process on `db` (opened from `database_url`), or `None` when the
    /// database is not PostgreSQL.
    pub fn for_database(db: &Database, database_url: &str) -> Option<Self> {
        (db.dialect() == Dialect::Postgres).then(|| Peers {
            url: database_url.to_owned(),
        })
    }

    /// Starts listening. Returns once the process listens (so nothing announced after this
    /// returns can be missed), or after logging why it could not; then follows both channels in
    /// the background until the returned task is aborted.
    pub async fn follow(self, followers: Followers) -> tokio::task::JoinHandle<()> {
        let listener = match self.listen().await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(error = %error, "cannot follow the other server processes yet (retrying): a token revoked through another one may work here for the token cache window, and their transitions miss this process's live streams");
                None
            }
        };
        tokio::spawn(self.dispatch(listener, followers))
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect(&self.url).await?;
        listener
            .listen_all([TOKEN_REVOKED, crate::events::CHANNEL])
            .await?;
        Ok(listener)
    }

    async fn dispatch(self, mut listener: Option<PgListener>, followers: Followers) {
        loop {
            let Some(connected) = listener.as_mut() else {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                if let Ok(connected) = self.listen().await {
                    tracing::info!("following the other server processes again");
                    followers.forget_tokens();
                    listener = Some(connected);
                }
                continue;
            };
            match connected.try_recv().await {
                Ok(Some(notification)) => followers.take(&notification),
                // The connection dropped: a revocation may have gone unseen. The next
                // `try_recv` reconnects and listens again.
                Ok(None) => {
                    tracing::warn!(
                        "lost the connection that follows the other server processes; reconnecting"
                    );
                    followers.forget_tokens();
                }
                Err(error) => {
                    tracing::warn!(error = %error, "cannot follow the other server processes (retrying): a token revoked through another one may work here for the token cache window");
                    followers.forget_tokens();
                    listener = None;
                }
            }
        }
    }
}

impl Followers {
    fn take(&self, notification: &PgNotification) {
        match notification.channel() {
            TOKEN_REVOKED => {
                tracing::debug!(token = notification.payload(), "token revoked elsewhere");
                self.forget_tokens();
            }
            crate::events::CHANNEL => self.events.relay(notification.payload()),
            other => tracing::warn!(channel = other, "notification on an unexpected channel"),
        }
    }
}
