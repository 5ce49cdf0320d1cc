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
mod policies;
mod reports;
mod retention;
mod retries;
mod rows;
mod savings;

pub use accounts::{Actor, TOKEN_REVOKED};
pub use builds::{BuildFilter, Change, Started, TransitionRequest};
pub use feed::FeedPoint;
pub use reports::MAX_ATTENTION_BUILDS;
pub use retries::DueCursor;
/// The rows the store writes, for a seeder that writes builds, history and resumes in bulk
/// (the reports benchmark) with the store's own columns.
pub use rows::{
    bind_values, ColumnValue, HistoryRow, NewBuildRow, ResumeRow, HISTORY_ROW_WIDTH,
    NEW_BUILD_ROW_WIDTH, RESUME_ROW_WIDTH,
};

/// What went wrong in the store, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A refusal with where the build stood under the lock that refused it: given for a report
    /// on a stage that already completed, whose sender (a re-run) needs nothing more to carry on.
    #[error("{refusal}")]
    RefusedAt {
        refusal: Refusal,
        build: Box<buildstate_domain::wire::Build>,
        /// The build's newest history entry.
        last_entry: Box<buildstate_domain::wire::HistoryEntry>,
    },
    #[error("{0}")]
    Conflict(String),
    /// The token asking to create another was revoked while it asked.
    #[error("the token creating this one was revoked")]
    CreatorRevoked,
    /// The revocation would leave no live admin token: nobody could manage the install.
    #[error("token `{id}` is the last live admin token")]
    LastAdminToken { id: String },
    /// The database cannot answer now — the pool timed out, it has too many clients, the
    /// connection dropped, a lock was not granted in time, or a serialization failure or
    /// deadlock outlasted the retries — and nothing was changed: worth trying again shortly.
    #[error("the database is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let unavailable = trouble(&error).is_some();
        let error = anyhow::Error::new(error).context("database query failed");
        if unavailable {
            StoreError::Unavailable(error)
        } else {
            StoreError::Other(error)
        }
    }
}

/// Why the database could not do something that it may well do a moment later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// PostgreSQL aborted the transaction to serialize it against another (a serialization
    /// failure or a deadlock): nothing of it was kept, so running it again is safe.
    Contention,
    /// The database is away, full or too slow to lock: answered 503 so the client retries.
    Unavailable,
}

/// Classifies a database error by SQLSTATE (PostgreSQL) or result code (SQLite); `None` for a
/// failure that trying again would not cure.
fn trouble(error: &sqlx::Error) -> Option<Trouble> {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Some(Trouble::Unavailable),
        sqlx::Error::Database(error) => trouble_code(error.code()?.as_ref()),
        _ => None,
    }
}

/// See [`trouble`]: the code alone, so the table of codes can be tested without a database.
fn trouble_code(code: &str) -> Option<Trouble> {
    match code {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => Some(Trouble::Contention),
        // too_many_connections and the other "insufficient resources"; admin_shutdown,
        // crash_shutdown, cannot_connect_now; lock_not_available; every connection exception
        _ if code.starts_with("53") || code.starts_with("08") => Some(Trouble::Unavailable),
        "57P01" | "57P02" | "57P03" | "55P03" => Some(Trouble::Unavailable),
        // SQLite: SQLITE_BUSY (and its extended codes: another connection holds the write
        // lock past `busy_timeout`), SQLITE_LOCKED
        "5" | "6" | "261" | "517" | "773" => Some(Trouble::Unavailable),
        _ => None,
    }
}

/// How often a transaction aborted by [`Trouble::Contention`] is run again before the client
/// is told 503.
const CONTENTION_RETRIES: u32 = 8;

impl StoreError {
    /// Whether this is a serialization failure or deadlock, which a rerun of the whole
    /// transaction resolves.
    fn is_contention(&self) -> bool {
        let StoreError::Unavailable(error) = self else {
            return false;
        };
        error
            .downcast_ref::<sqlx::Error>()
            .and_then(trouble)
            .is_some_and(|trouble| trouble == Trouble::Contention)
    }

    /// For an error from `COMMIT`: a lost connection there leaves the outcome unknown (the
    /// commit may have happened), so it must not read as "nothing was changed, try again".
    fn at_commit(error: sqlx::Error) -> StoreError {
        match StoreError::from(error) {
            contention if contention.is_contention() => contention,
            StoreError::Unavailable(error) => {
                StoreError::Other(error.context("the outcome of the commit is unknown"))
            }
            other => other,
        }
    }
}

/// Runs `transaction` again (a few times, after a short random pause) when PostgreSQL aborted
/// it for a serialization failure or a deadlock: it was rolled back whole and nobody was
/// answered yet, so the rerun is as safe as the first run, and the client never sees it.
async fn rerun_on_contention<T, F, Fut>(mut transaction: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut reruns = 0;
    loop {
        match transaction().await {
            Err(error) if error.is_contention() && reruns < CONTENTION_RETRIES => {
                reruns += 1;
                // Random, so the transactions that collided do not collide again in step.
                let pause =
                    rand::Rng::gen_range(&mut rand::thread_rng(), 1..=5 * u64::from(reruns));
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            answer => return answer,
        }
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
            StoreError::Unavailable(error) => {
                StoreError::Unavailable(error.context(format!("failed to {}", what())))
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
    policies: policies::ParsedPolicies,
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
            policies: policies::ParsedPolicies::new(),
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

    /// The name this server gives stage `code` (configured, or the product's).
    pub fn state_name(&self, code: buildstate_domain::StateCode) -> &str {
        self.names.name(code)
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

/// The file a `sqlite:` URL opens, as sqlx reads it (`sqlite://PATH` or `sqlite:PATH`, up to
/// `?`; a relative path is relative to the current directory), or `None` for another scheme
/// or an in-memory database. Lets a command say which file it used, and whether it existed.
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// Makes this process the one server on a SQLite database file, or says why it cannot be.
///
/// A SQLite file takes one writer at a time: a second server process on it would answer
/// "database is locked" under load, so it is refused at start. The claim is an exclusive lock
/// on `PATH.lock` beside the database, held while the returned file is open (the kernel
/// releases it however the process ends). One-off commands (`bootstrap`, `token create`,
/// `prune`, `backup`) do not claim it: they run beside the server. `None` for PostgreSQL and
/// in-memory databases.
pub fn claim_sqlite_file(url: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = sqlite_path(url) else {
        return Ok(None);
    };
    let lock_path = {
        let mut name = path.clone().into_os_string();
        name.push(".lock");
        std::path::PathBuf::from(name)
    };
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("failed to open `{}`", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `bldst server` already serves the SQLite database `{}` (it holds `{}`): \
             a SQLite file is for one server process; to run several, give them one PostgreSQL \
             database (`DATABASE_URL=postgres://USER@HOST/DB`)",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("failed to lock `{}`", lock_path.display()))
        }
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

#[cfg(test)]
mod sqlite_path_tests {
    use super::sqlite_path;
    use std::path::PathBuf;

    #[test]
    fn a_sqlite_url_names_the_file_sqlx_opens() {
        for (url, path) in [
            ("sqlite://buildstate.db", Some("buildstate.db")),
            ("sqlite:buildstate.db", Some("buildstate.db")),
            (
                "sqlite:///var/lib/bst/db.sqlite?mode=rwc",
                Some("/var/lib/bst/db.sqlite"),
            ),
            ("sqlite::memory:", None),
            ("sqlite://x.db?mode=memory", None),
            ("postgres://ci@db/buildstate", None),
        ] {
            assert_eq!(sqlite_path(url), path.map(PathBuf::from), "{url}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_worth_retrying_are_told_apart_by_their_code() {
        let table = [
            // (code, what it is)
            ("40001", Some(Trouble::Contention)), // serialization_failure
            ("40P01", Some(Trouble::Contention)), // deadlock_detected
            ("53300", Some(Trouble::Unavailable)), // too_many_connections
            ("53200", Some(Trouble::Unavailable)), // out_of_memory
            ("08006", Some(Trouble::Unavailable)), // connection_failure
            ("57P01", Some(Trouble::Unavailable)), // admin_shutdown
            ("55P03", Some(Trouble::Unavailable)), // lock_not_available
            ("5", Some(Trouble::Unavailable)),    // SQLITE_BUSY
            ("517", Some(Trouble::Unavailable)),  // SQLITE_BUSY_SNAPSHOT
            ("23505", None),                      // unique_violation: a real conflict
            ("22P02", None),                      // invalid_text_representation: our bug
            ("19", None),                         // SQLITE_CONSTRAINT
        ];
        for (code, expected) in table {
            assert_eq!(trouble_code(code), expected, "{code}");
        }
        assert_eq!(
            trouble(&sqlx::Error::PoolTimedOut),
            Some(Trouble::Unavailable)
        );
        assert_eq!(trouble(&sqlx::Error::RowNotFound), None);
    }

    #[test]
    fn only_contention_is_run_again() {
        let busy = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(busy, StoreError::Unavailable(_)));
        assert!(!busy.is_contention());
        let described = StoreError::during(|| "record a transition".to_owned())(busy);
        assert!(matches!(described, StoreError::Unavailable(_)));
    }

    #[test]
    fn a_server_claims_its_sqlite_file_alone() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("b.db").display());
        let first = claim_sqlite_file(&url).expect("first claim");
        assert!(first.is_some());
        let second = claim_sqlite_file(&url).expect_err("second claim");
        assert!(second.to_string().contains("PostgreSQL"), "{second}");
        drop(first);
        assert!(claim_sqlite_file(&url).expect("claimed again").is_some());
        assert!(claim_sqlite_file("postgres://u@h/db")
            .expect("no file")
            .is_none());
        assert!(claim_sqlite_file("sqlite::memory:")
            .expect("no file")
            .is_none());
    }
}
