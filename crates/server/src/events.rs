//! Transitions as they happen, for the event stream, the metrics and the webhooks.
//!
//! Every change a handler commits is [`EventHub::publish`]ed: subscribers in this process get
//! it at once through a broadcast channel. On PostgreSQL the store has also announced the change
//! with `pg_notify` on [`CHANNEL`] in the transaction that recorded it (payload: the process that
//! made it, the build, and its first and last new sequence numbers), so the announcement goes
//! out exactly when the change commits; every other server process `LISTEN`s, reads those
//! entries back and
//! hands them to its own subscribers — the same mechanism as token revocations
//! ([`crate::revocations`]), no extra component. Events carry whether they were made here, so
//! webhooks fire once (from the process that recorded the change), not once per process.
//!
//! A subscriber that falls behind is dropped; the stream's client then reconnects with
//! `Last-Event-ID` and reads what it missed from the history.

use std::sync::Arc;
use std::time::Duration;

use buildstate_domain::wire::{Build, HistoryEntry};
use buildstate_domain::BuildId;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::db::Database;

/// The channel transitions are announced on.
pub const CHANNEL: &str = "buildstate_transition";

/// How many events a slow subscriber may fall behind before it is dropped.
const BACKLOG: usize = 1024;

/// How long to wait before listening again after the connection could not be re-established.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// One history entry with its build as it stood right after it (a wire type: the clients
/// read the same shape from the event stream).
pub use buildstate_domain::wire::BuildEvent;

/// An event and whether this process recorded it.
#[derive(Debug, Clone)]
pub struct Published {
    pub event: Arc<BuildEvent>,
    pub made_here: bool,
}

/// Where transitions are published and subscribed to. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    sender: broadcast::Sender<Published>,
    /// Identifies this process in announcements, to skip its own.
    process: Arc<str>,
    /// On PostgreSQL: the database URL to listen on and the store to read announced entries from.
    postgres: Option<(Arc<str>, Database)>,
    /// Entries published lately (build id, seq): a report replayed for its idempotency key
    /// answers with the entries it recorded the first time, which must not be published twice.
    published: moka::sync::Cache<(String, i64), ()>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("EventHub")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl EventHub {
    /// A hub for `db`; on PostgreSQL (`database_url`) it also spans processes.
    pub fn new(db: &Database, database_url: &str) -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        let postgres = (db.dialect() == crate::db::Dialect::Postgres)
            .then(|| (Arc::from(database_url), db.clone()));
        EventHub {
            sender,
            process: Arc::from(db.process()),
            postgres,
            published: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
        }
    }

    /// New events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.sender.subscribe()
    }

    /// Hands `entries` (just committed on `build`) to this process's subscribers (the store
    /// announced them to the other processes as it committed them). `false` when there was
    /// nothing new.
    pub fn publish(&self, build: &Build, entries: &[HistoryEntry]) -> bool {
        let Some(last) = entries.last() else {
            return false;
        };
        let key = (build.id.to_string(), last.seq);
        if self.published.contains_key(&key) {
            return false;
        }
        self.published.insert(key, ());
        for entry in entries {
            // No subscriber is fine.
            let _ = self.sender.send(Published {
                event: Arc::new(BuildEvent {
                    build: build.clone(),
                    entry: entry.clone(),
                }),
                made_here: true,
            });
        }
        true
    }

    /// On PostgreSQL, starts following other processes' announcements (returns once
    /// listening, or after logging why not); `None` elsewhere.
    pub async fn follow(&self) -> Option<tokio::task::JoinHandle<()>> {
        let (url, db) = self.postgres.clone()?;
        let listener = match listen(&url).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(error = %error, "cannot follow other server processes' transitions yet (retrying)");
                None
            }
        };
        let hub = self.clone();
        Some(tokio::spawn(async move {
            hub.relay(listener, &url, &db).await;
        }))
    }

    async fn relay(&self, mut listener: Option<PgListener>, url: &str, db: &Database) {
        loop {
            let Some(connected) = listener.as_mut() else {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                listener = listen(url).await.ok();
                continue;
            };
            match connected.recv().await {
                Ok(notification) => {
                    if let Err(error) = self.relay_one(notification.payload(), db).await {
                        tracing::warn!(error = %error, "failed to relay a transition from another server process");
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, "lost the connection that follows other server processes' transitions; reconnecting");
                    listener = None;
                }
            }
        }
    }

    async fn relay_one(&self, payload: &str, db: &Database) -> anyhow::Result<()> {
        let mut parts = payload.split(' ');
        let (Some(process), Some(build), Some(first), Some(last)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("unreadable announcement `{payload}`");
        };
        if process == &*self.process || self.sender.receiver_count() == 0 {
            return Ok(());
        }
        let id: BuildId = build
            .parse()
            .map_err(|error| anyhow::anyhow!("announced build `{build}`: {error}"))?;
        let build = db.get_build(&id).await?;
        let entries = db
            .history_between(&id, first.parse()?, last.parse()?)
            .await?;
        for entry in entries {
            let _ = self.sender.send(Published {
                event: Arc::new(BuildEvent {
                    build: build.clone(),
                    entry,
                }),
                made_here: false,
            });
        }
        Ok(())
    }
}

async fn listen(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
