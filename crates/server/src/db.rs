//! The build-state store: one type with domain verbs over SQLite or PostgreSQL.
//!
//! The backend is chosen once, from the URL scheme. Both dialects run the same parameterized SQL
//! through sqlx's `Any` driver; the few differences (row locks, the single SQLite writer) are
//! decided by [`Dialect`]. Handlers never see sqlx types: every verb returns wire types or a
//! [`StoreError`].
//!
//! Reports on one build are serialized: on PostgreSQL by `SELECT … FOR UPDATE` on the build row
//! (which also holds across several server processes), on SQLite by funnelling every write
//! through one connection (SQLite allows one writer at a time anyway; WAL keeps readers going).
//!
//! This file opens the store. Its verbs live by what they store: `builds` (builds and their
//! transitions), `accounts` (users and tokens), `reports`, `feed`, `retention` and `retries`
//! (the retries the scheduler announces); `rows` holds the SQL column lists and the row mapping
//! they share.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use buildstate_domain::Refusal;
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{AnyConnection, AnyPool, Connection as _};

use crate::names::StateNames;

mod accounts;
mod builds;
mod feed;
mod reports;
mod retention;
mod retries;
mod rows;

pub use accounts::{Actor, TOKEN_REVOKED};
pub use builds::{BuildFilter, TransitionRequest};
pub use feed::FeedPoint;
pub use reports::MAX_ATTENTION_BUILDS;
pub use retries::DueCursor;

/// What went wrong in the store, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Conflict(String),
    /// The token asking to create another was revoked while it asked.
    #[error("the token creating this one was revoked")]
    CreatorRevoked,
    /// The revocation would leave no live admin token: nobody could manage the install.
    #[error("token `{id}` is the last live admin token")]
    LastAdminToken { id: String },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Other(anyhow::Error::new(error).context("database query failed"))
    }
}

type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Says what the store was doing when something failed underneath (a database error):
    /// "failed to record a transition on build `b_…`". Refusals, conflicts and not-found
    /// answers are the caller's to word and pass through unchanged.
    fn during(what: impl FnOnce() -> String) -> impl FnOnce(StoreError) -> StoreError {
        move |error| match error {
            StoreError::Other(error) => {
                StoreError::Other(error.context(format!("failed to {}", what())))
            }
            other => other,
        }
    }
}

/// Which SQL dialect the store talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// Chooses the dialect from a database URL's scheme.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Dialect::Postgres)
        } else {
            anyhow::bail!(
                "unsupported DATABASE_URL scheme: use `sqlite://PATH` or `postgres://USER@HOST/DB`"
            )
        }
    }

    /// The suffix that locks the selected rows until the transaction ends.
    fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Like [`Dialect::for_update`], but rows another transaction holds are left out instead
    /// of waited for.
    fn for_update_skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The suffix that keeps the selected rows from changing until the transaction ends, while
    /// letting others read-lock them too. (SQLite needs neither: one writer at a time.)
    fn for_share(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE",
        }
    }
}

/// The store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    dialect: Dialect,
    /// Serves reads; on PostgreSQL also writes.
    reader: AnyPool,
    /// Serves writes: on SQLite a single connection, see the module comment.
    writer: AnyPool,
    names: StateNames,
}

/// WAL lets readers run beside the writer; NORMAL sync is durable across crashes of the
/// process (not of the OS) in WAL mode, the usual trade for a service.
const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
];

/// A pooled connection idle longer than this is pinged before it is handed out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Replaces sqlx's `test_before_acquire`, which pings every connection it hands out: a round
/// trip to the database per acquire, two per report (a tenth of a report's cost on
/// PostgreSQL). sqlx already pings each connection as it returns to the pool, so only one that
/// has sat idle since (across a database restart, say) is worth testing again; a failed ping
/// makes the pool discard it and open another, as before.
fn ping_if_idle(
    connection: &mut AnyConnection,
    meta: PoolConnectionMetadata,
) -> Pin<Box<dyn Future<Output = Result<bool, sqlx::Error>> + Send + '_>> {
    Box::pin(async move {
        if meta.idle_for >= PING_WHEN_IDLE_FOR {
            connection.ping().await?;
        }
        Ok(true)
    })
}

impl Database {
    /// Connects to `url` (`sqlite://PATH` — the file is created if missing — or
    /// `postgres://…`) and applies the dialect's migrations. A PostgreSQL pool opens at most
    /// `max_connections`; SQLite always has one writer and four readers.
    pub async fn connect(
        url: &str,
        names: StateNames,
        max_connections: u32,
    ) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url)?;
        let (reader, writer) = match dialect {
            Dialect::Sqlite => {
                let url = sqlite_url_creating_file(url);
                let options = || {
                    AnyPoolOptions::new()
                        .acquire_timeout(Duration::from_secs(10))
                        .test_before_acquire(false)
                        .before_acquire(ping_if_idle)
                        .after_connect(|connection, _| {
                            Box::pin(async move {
                                for pragma in SQLITE_PRAGMAS {
                                    sqlx::query(pragma).execute(&mut *connection).await?;
                                }
                                Ok(())
                            })
                        })
                };
                let writer = options()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .context("failed to open the SQLite database")?;
                let reader = options()
                    .max_connections(4)
                    .connect(&url)
                    .await
                    .context("failed to open the SQLite database")?;
                (reader, writer)
            }
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(10))
                    .test_before_acquire(false)
                    .before_acquire(ping_if_idle)
                    .connect(url)
                    .await
                    .context("failed to connect to PostgreSQL")?;
                (pool.clone(), pool)
            }
        };
        let database = Database {
            dialect,
            reader,
            writer,
            names,
        };
        database.migrate().await?;
        Ok(database)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&self.writer)
            .await
            .context("failed to apply database migrations")
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Closes every connection (waits for the ones in use).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// Succeeds when the database answers and every migration is applied.
    pub async fn ping(&self) -> StoreResult<()> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.reader)
                .await?;
        let known = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite").iter().count(),
            Dialect::Postgres => sqlx::migrate!("migrations/postgres").iter().count(),
        };
        if usize::try_from(applied).unwrap_or(0) < known {
            return Err(anyhow::anyhow!("{applied} of {known} migrations applied").into());
        }
        Ok(())
    }
}

fn sqlite_url_creating_file(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}
