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

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use buildstate_domain::wire::{
    Build, BuildPage, CreatedToken, HistoryEntry, HistoryPage, StartBuild, StatusOverview,
    TokenInfo, TransitionResult, User,
};
use buildstate_domain::{
    apply_operator_action, apply_report, notes, BuildId, BuildKey, BuildStatus, Event, ImageType,
    Lease, OperatorAction, Outputs, Platform, Progress, Refusal, Report, RetryPolicy, Role, Scope,
    StageOutput, StageOutputs, StateCode, Transition, Username,
};
use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Row, Transaction};

use crate::names::StateNames;

mod retention;

mod feed;
mod reports;

pub use feed::FeedPoint;
pub use reports::MAX_ATTENTION_BUILDS;

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

    /// The suffix that keeps the selected rows from changing until the transaction ends, while
    /// letting others read-lock them too. (SQLite needs neither: one writer at a time.)
    fn for_share(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE",
        }
    }
}

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

/// Filters of `GET /builds`.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    pub platform: Option<Platform>,
    pub image_type: Option<ImageType>,
    pub status: Option<BuildStatus>,
    pub state: Option<StateCode>,
    pub key: Option<BuildKey>,
}

/// A report to record, with what the rules need beside it.
#[derive(Debug, Clone)]
pub struct TransitionRequest {
    pub report: Report,
    pub message: Option<String>,
    pub source: Option<String>,
    /// With the hash of the request body it came with.
    pub idempotency: Option<(String, String)>,
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

    // ----- builds -------------------------------------------------------------------------

    /// Starts a build, or returns the unfinished build with the same key (`true`: resumed).
    pub async fn start_build(
        &self,
        request: &StartBuild,
        max_retries: u32,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> StoreResult<(Build, bool)> {
        if let Some(key) = &request.key {
            if let Some(build) = self.unfinished_build_with_key(key.as_str()).await? {
                return Ok((build, true));
            }
        }
        let id = format!("b_{}", crate::secrets::random_id(20));
        let labels = serde_json::to_string(request.labels.as_map()).context("labels")?;
        let mut tx = self.writer.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO builds (id, build_key, platform, image_type, description, labels, state, \
             status, failures, max_retries, next_attempt_at, last_message, last_seq, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, 'running', 0, $7, NULL, NULL, 1, $8, $8)",
        )
        .bind(&id)
        .bind(request.key.as_ref().map(|key| key.as_str()))
        .bind(request.platform.as_str())
        .bind(request.image_type.as_str())
        .bind(request.description.as_deref())
        .bind(labels)
        .bind(i64::from(max_retries))
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Another request started the same key first: resume that build.
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                drop(tx);
                let key = request.key.as_ref().map(|key| key.as_str()).unwrap_or("");
                return match self.unfinished_build_with_key(key).await? {
                    Some(build) => Ok((build, true)),
                    None => Err(StoreError::Conflict(format!(
                        "a build with key `{key}` was started concurrently; try again"
                    ))),
                };
            }
            Err(error) => return Err(error.into()),
        }
        let started = Event::plain(StateCode::TRIGGERED, buildstate_domain::EventKind::Started);
        let entries = history_entries(
            1,
            &[started],
            request.description.as_deref(),
            None,
            actor,
            now,
        );
        insert_history(&mut tx, &id, &entries, None).await?;
        let build = self.build_in(&mut tx, &id, false).await?;
        tx.commit().await?;
        Ok((build, false))
    }

    async fn unfinished_build_with_key(&self, key: &str) -> StoreResult<Option<Build>> {
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE build_key = $1 \
             AND status NOT IN ('completed', 'cancelled')"
        ))
        .bind(key)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| self.build_from_row(&row)).transpose()
    }

    /// One build by id.
    pub async fn get_build(&self, id: &BuildId) -> StoreResult<Build> {
        let row = sqlx::query(&format!("SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
            .ok_or_else(|| build_not_found(id.as_str()))?;
        self.build_from_row(&row)
    }

    async fn build_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        lock: bool,
    ) -> StoreResult<Build> {
        let lock = if lock { self.dialect.for_update() } else { "" };
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS} FROM builds WHERE id = $1{lock}"
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| build_not_found(id))?;
        self.build_from_row(&row)
    }

    /// The build, locked, its per-stage outputs as stored (a change decodes those only if it
    /// may touch them, see [`StoredOutputs::after`]) and when its last history entry was
    /// recorded (what the next completion's duration counts from).
    async fn locked_build_and_outputs(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
    ) -> StoreResult<(Build, StoredOutputs, Option<DateTime<Utc>>)> {
        // The last entry comes with the row, by its primary key: no extra round trip.
        let row = sqlx::query(&format!(
            "SELECT {BUILD_COLUMNS_BUT_OUTPUTS}, outputs, stage_outputs, \
             (SELECT h.recorded_at FROM build_history h \
              WHERE h.build_id = builds.id AND h.seq = builds.last_seq) AS last_recorded_at \
             FROM builds WHERE id = $1{}",
            self.dialect.for_update()
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| build_not_found(id))?;
        let stored = StoredOutputs {
            per_stage: row.try_get("stage_outputs")?,
        };
        Ok((
            self.build_from_row(&row)?,
            stored,
            optional_time(&row, "last_recorded_at")?,
        ))
    }

    /// Builds matching `filter`, newest first.
    pub async fn list_builds(
        &self,
        filter: &BuildFilter,
        limit: u32,
        offset: u64,
    ) -> StoreResult<BuildPage> {
        // Only the filters given go into the query, each compared with a bound parameter. A
        // catch-all `($1 IS NULL OR platform = $1)` would hide the column from the planner
        // (SQLite plans a statement once, without its values): a filtered list walked the
        // whole newest-first index, 240 ms at 100,000 builds, instead of the status and
        // platform indexes of migration 0008.
        enum Value<'a> {
            Text(&'a str),
            Number(i64),
        }
        let filters: Vec<(&str, Value)> = [
            (
                "platform",
                filter.platform.as_ref().map(|v| Value::Text(v.as_str())),
            ),
            (
                "image_type",
                filter.image_type.as_ref().map(|v| Value::Text(v.as_str())),
            ),
            ("status", filter.status.map(|v| Value::Text(v.as_str()))),
            ("state", filter.state.map(|v| Value::Number(i64::from(v)))),
            (
                "build_key",
                filter.key.as_ref().map(|v| Value::Text(v.as_str())),
            ),
        ]
        .into_iter()
        .filter_map(|(column, value)| Some((column, value?)))
        .collect();
        let conditions: Vec<String> = filters
            .iter()
            .enumerate()
            .map(|(n, (column, _))| format!("{column} = ${}", n + 1))
            .collect();
        let where_clause = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {BUILD_COLUMNS} FROM builds {where_clause} \
             ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
            filters.len() + 1,
            filters.len() + 2
        );
        let mut query = sqlx::query(&sql);
        for (_, value) in filters {
            query = match value {
                Value::Text(text) => query.bind(text),
                Value::Number(number) => query.bind(number),
            };
        }
        let rows = query
            .bind(i64::from(limit) + 1)
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await?;
        let more = rows.len() > limit as usize;
        let builds = rows
            .iter()
            .take(limit as usize)
            .map(|row| self.build_from_row(row))
            .collect::<StoreResult<Vec<_>>>()?;
        let next_offset = more.then(|| offset + u64::from(limit));
        Ok(BuildPage {
            builds,
            next_offset,
        })
    }

    /// Applies a report under the build's row lock and appends its history, or returns the
    /// first answer again when its idempotency key was already applied. The rules see the
    /// clock as read under the lock.
    pub async fn record_transition(
        &self,
        id: &BuildId,
        request: &TransitionRequest,
        policy: &RetryPolicy,
        actor: &Actor,
    ) -> StoreResult<TransitionResult> {
        self.record_transition_unnamed(id, request, policy, actor)
            .await
            .map_err(StoreError::during(|| {
                format!("record a transition on build `{id}`")
            }))
    }

    async fn record_transition_unnamed(
        &self,
        id: &BuildId,
        request: &TransitionRequest,
        policy: &RetryPolicy,
        actor: &Actor,
    ) -> StoreResult<TransitionResult> {
        let mut tx = self.writer.begin().await?;
        let (mut build, stored_outputs, last_recorded_at) =
            self.locked_build_and_outputs(&mut tx, id.as_str()).await?;
        // Read the clock only once the row is ours: a report that waited for the lock must not
        // judge a backoff that was set after it arrived.
        let now = Utc::now();
        if let Some((key, request_hash)) = &request.idempotency {
            let earlier = sqlx::query(
                "SELECT request_hash, response_body FROM idempotency_keys \
                 WHERE build_id = $1 AND idempotency_key = $2",
            )
            .bind(id.as_str())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(earlier) = earlier {
                let earlier_hash: String = earlier.try_get("request_hash")?;
                if &earlier_hash != request_hash {
                    return Err(StoreError::Conflict(format!(
                        "idempotency key `{key}` was already used for a different report on build `{id}`"
                    )));
                }
                let body: String = earlier.try_get("response_body")?;
                let first: TransitionResult = serde_json::from_str(&body)
                    .context("stored idempotent answer is unreadable")?;
                return Ok(first);
            }
        }
        let policy = RetryPolicy {
            max_retries: build.max_retries,
            ..*policy
        };
        let result = match apply_report(&build.progress(), &request.report, &policy, now)? {
            Transition::AlreadyDone { stage, .. } => TransitionResult {
                note: notes::already_completed(stage, &build.progress()),
                build,
                changed: false,
                recorded: Vec::new(),
            },
            Transition::Applied { progress, events } => {
                let recorded = history_entries(
                    build.last_seq + 1,
                    &events,
                    request.message.as_deref(),
                    request.source.as_deref(),
                    actor,
                    now,
                );
                let last_message = request.message.as_deref().or(build.last_message.as_deref());
                let outputs = match stored_outputs.after(&events)? {
                    Some(changed) => OutputsAfter::Changed(changed),
                    None => OutputsAfter::Unchanged(std::mem::take(&mut build.outputs)),
                };
                let updated = self
                    .save_progress(
                        &mut tx,
                        id.as_str(),
                        &progress,
                        (&recorded, last_recorded_at),
                        last_message,
                        outputs,
                        now,
                    )
                    .await?;
                TransitionResult {
                    note: notes::describe_transition(
                        &events,
                        &updated.progress(),
                        updated.max_retries,
                    ),
                    build: updated,
                    changed: true,
                    recorded,
                }
            }
        };
        if let Some((key, request_hash)) = &request.idempotency {
            sqlx::query(
                "INSERT INTO idempotency_keys (build_id, idempotency_key, request_hash, \
                 response_body, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.as_str())
            .bind(key)
            .bind(request_hash)
            .bind(serde_json::to_string(&result).context("serialize answer")?)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(result)
    }

    /// Retry, reset or cancel a build, recording the operator's reason.
    pub async fn apply_operator_action(
        &self,
        id: &BuildId,
        action: OperatorAction,
        reason: &str,
        actor: &Actor,
    ) -> StoreResult<TransitionResult> {
        self.apply_operator_action_unnamed(id, action, reason, actor)
            .await
            .map_err(StoreError::during(|| match action {
                OperatorAction::Retry => format!("retry build `{id}`"),
                OperatorAction::Reset { to } => format!("reset build `{id}` to stage {to}"),
                OperatorAction::Cancel => format!("cancel build `{id}`"),
            }))
    }

    async fn apply_operator_action_unnamed(
        &self,
        id: &BuildId,
        action: OperatorAction,
        reason: &str,
        actor: &Actor,
    ) -> StoreResult<TransitionResult> {
        let mut tx = self.writer.begin().await?;
        let (mut build, stored_outputs, last_recorded_at) =
            self.locked_build_and_outputs(&mut tx, id.as_str()).await?;
        let now = Utc::now();
        let (progress, event) = apply_operator_action(&build.progress(), action)?;
        let events = [event];
        let recorded = history_entries(build.last_seq + 1, &events, Some(reason), None, actor, now);
        let outputs = match stored_outputs.after(&events)? {
            Some(changed) => OutputsAfter::Changed(changed),
            None => OutputsAfter::Unchanged(std::mem::take(&mut build.outputs)),
        };
        let updated = self
            .save_progress(
                &mut tx,
                id.as_str(),
                &progress,
                (&recorded, last_recorded_at),
                build.last_message.as_deref(),
                outputs,
                now,
            )
            .await?;
        tx.commit().await?;
        Ok(TransitionResult {
            note: notes::describe_transition(&events, &updated.progress(), updated.max_retries),
            build: updated,
            changed: true,
            recorded,
        })
    }

    /// A heartbeat: the caller (run `run`, or the holder of lease `fence`) extends its lease on
    /// `stage`. Appends no history: a thousand running stages beating every few seconds would
    /// drown it.
    pub async fn renew_lease(
        &self,
        id: &BuildId,
        stage: StateCode,
        run: Option<&str>,
        fence: Option<i64>,
        policy: &RetryPolicy,
    ) -> StoreResult<Lease> {
        let mut tx = self.writer.begin().await?;
        let build = self.build_in(&mut tx, id.as_str(), true).await?;
        // As for reports: the clock is read once the row is ours.
        let now = Utc::now();
        let lease =
            buildstate_domain::renew_lease(&build.progress(), stage, run, fence, policy, now)?;
        sqlx::query("UPDATE builds SET lease_expires_at = $1 WHERE id = $2")
            .bind(lease.expires_at.timestamp_millis())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(lease)
    }

    /// The holder gives its lease on `stage` up without a report: the build stays
    /// `in_progress` and any run may claim the stage at once.
    pub async fn release_lease(
        &self,
        id: &BuildId,
        stage: StateCode,
        run: Option<&str>,
        fence: Option<i64>,
    ) -> StoreResult<Build> {
        let mut tx = self.writer.begin().await?;
        let build = self.build_in(&mut tx, id.as_str(), true).await?;
        let now = Utc::now();
        buildstate_domain::release_lease(&build.progress(), stage, run, fence, now)?;
        let row = sqlx::query(&format!(
            "UPDATE builds SET lease_holder = NULL, lease_fence = NULL, \
             lease_expires_at = NULL, updated_at = $1 WHERE id = $2 RETURNING {BUILD_COLUMNS}"
        ))
        .bind(now.timestamp_millis())
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        self.build_from_row(&row)
    }

    /// Appends `recorded` to the build's history (the entry before them recorded at the time
    /// given beside them) and saves its new progress (and its outputs, when they changed),
    /// returning the updated build. The outputs are not read back: `outputs` says what the row
    /// now holds. On PostgreSQL both go in one statement (an INSERT in a `WITH`), saving a
    /// round trip while the row lock is held; SQLite cannot modify in a `WITH`, and its writes
    /// are local calls anyway.
    #[allow(clippy::too_many_arguments)]
    async fn save_progress(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        progress: &Progress,
        (recorded, previous): (&[HistoryEntry], Option<DateTime<Utc>>),
        last_message: Option<&str>,
        outputs: OutputsAfter,
        now: DateTime<Utc>,
    ) -> StoreResult<Build> {
        let last_seq = recorded.last().map_or(0, |entry| entry.seq);
        let lease = progress.lease.as_ref();
        let (written, merged) = match outputs {
            OutputsAfter::Changed(changed) => (Some(changed.json), changed.merged),
            OutputsAfter::Unchanged(merged) => (None, merged),
        };
        // RETURNING hands back the updated row in the same round trip (SQLite has it since 3.35).
        let update = format!(
            "UPDATE builds SET state = $1, status = $2, failures = $3, next_attempt_at = $4, \
             last_message = $5, last_seq = $6, updated_at = $7, lease_holder = $8, \
             lease_fence = $9, lease_expires_at = $10, \
             stage_outputs = COALESCE($11, stage_outputs), outputs = COALESCE($12, outputs) \
             WHERE id = $13 RETURNING {BUILD_COLUMNS_BUT_OUTPUTS}"
        );
        let sql = match self.dialect {
            Dialect::Postgres => format!(
                "WITH appended AS (INSERT INTO build_history ({HISTORY_COLUMNS}, duration_ms) \
                 VALUES {placeholders}) {update}",
                placeholders = history_placeholders(14, recorded.len()),
            ),
            Dialect::Sqlite => {
                insert_history(tx, id, recorded, previous).await?;
                update
            }
        };
        let mut query = sqlx::query(&sql)
            .bind(i64::from(progress.state))
            .bind(progress.status.as_str())
            .bind(i64::from(progress.failures))
            .bind(progress.next_attempt_at.map(|at| at.timestamp_millis()))
            .bind(last_message)
            .bind(last_seq)
            .bind(now.timestamp_millis())
            .bind(lease.map(|lease| lease.holder.as_str()))
            .bind(lease.map(|lease| lease.fence))
            .bind(lease.map(|lease| lease.expires_at.timestamp_millis()))
            .bind(written.as_ref().map(|json| json.per_stage.as_str()))
            .bind(written.as_ref().map(|json| json.merged.as_str()))
            .bind(id);
        if self.dialect == Dialect::Postgres {
            query = bind_history(query, id, recorded, previous);
        }
        let row = query.fetch_one(&mut **tx).await?;
        self.build_with_outputs(&row, merged)
    }

    /// History entries with `seq > after`, oldest first, at most `limit`.
    pub async fn history_after(
        &self,
        id: &BuildId,
        after: i64,
        limit: u32,
    ) -> StoreResult<HistoryPage> {
        // Distinguish "no such build" from "no entries after `after`".
        self.get_build(id).await?;
        let rows = sqlx::query(
            "SELECT seq, state, kind, message, attempt, reported_by, token_id, source, \
             recorded_at, outputs FROM build_history WHERE build_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(id.as_str())
        .bind(after)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reader)
        .await?;
        let more = rows.len() > limit as usize;
        let entries = rows
            .iter()
            .take(limit as usize)
            .map(history_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let next_after = if more {
            entries.last().map(|entry| entry.seq)
        } else {
            None
        };
        Ok(HistoryPage {
            entries,
            next_after,
        })
    }

    /// Counts by status and by platform.
    pub async fn status_overview(&self) -> StoreResult<StatusOverview> {
        let count_by = |column: &'static str| async move {
            let rows = sqlx::query(&format!(
                "SELECT {column} AS name, COUNT(*) AS n FROM builds GROUP BY {column}"
            ))
            .fetch_all(&self.reader)
            .await?;
            rows.iter()
                .map(|row| {
                    let name: String = row.try_get("name")?;
                    let count: i64 = row.try_get("n")?;
                    Ok((name, u64::try_from(count).unwrap_or(0)))
                })
                .collect::<StoreResult<BTreeMap<String, u64>>>()
        };
        let by_status = count_by("status").await?;
        let by_platform = count_by("platform").await?;
        Ok(StatusOverview {
            builds: by_status.values().sum(),
            by_status,
            by_platform,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }

    fn build_from_row(&self, row: &AnyRow) -> StoreResult<Build> {
        self.build_with_outputs(row, merged_outputs_from_row(row)?)
    }

    /// A build from a row of [`BUILD_COLUMNS_BUT_OUTPUTS`] (or more) and its merged outputs.
    fn build_with_outputs(&self, row: &AnyRow, outputs: MergedOutputs) -> StoreResult<Build> {
        let state = state_column(row, "state")?;
        let labels: String = row.try_get("labels")?;
        let labels: BTreeMap<String, String> =
            serde_json::from_str(&labels).context("stored labels are not JSON")?;
        Ok(Build {
            id: parsed(row, "id")?,
            key: optional_parsed(row, "build_key")?,
            platform: parsed(row, "platform")?,
            image_type: parsed(row, "image_type")?,
            description: row.try_get("description")?,
            labels: labels.try_into().context("stored labels are invalid")?,
            state_name: self.names.name(state).to_owned(),
            phase: state.phase(),
            state,
            status: parsed(row, "status")?,
            failures: u32_column(row, "failures")?,
            max_retries: u32_column(row, "max_retries")?,
            next_attempt_at: optional_time(row, "next_attempt_at")?,
            last_message: row.try_get("last_message")?,
            last_seq: row.try_get("last_seq")?,
            created_at: time(row, "created_at")?,
            updated_at: time(row, "updated_at")?,
            outputs,
            lease: lease_from_row(row)?,
        })
    }

    // ----- users and tokens ---------------------------------------------------------------

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
             expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&user.id)
        .bind(hasher.hash(&secret))
        .bind(description)
        .bind(scope.as_str())
        .bind(now.timestamp_millis())
        .bind(expires_at.map(|at| at.timestamp_millis()))
        .bind(created_by)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
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
    /// sharing the database (see [`crate::revocations`]); the announcements go out when the
    /// revocation commits, never without it (not when the last admin token is refused).
    pub async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> StoreResult<TokenInfo> {
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
                 AND (t.expires_at IS NULL OR t.expires_at > $1) ORDER BY t.id{lock}"
            )
        };
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE OF t",
        };
        let admins_before: Vec<String> = sqlx::query_scalar(&live_admins(lock))
            .bind(now.timestamp_millis())
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
                        .bind(crate::revocations::CHANNEL)
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
            .fetch_all(&mut *tx)
            .await?;
        if admins_after.is_empty() && !admins_before.is_empty() {
            // Dropping the transaction rolls the revocation back.
            return Err(StoreError::LastAdminToken { id: id.to_owned() });
        }
        tx.commit().await?;
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

    /// Forgets the answers of idempotent reports recorded before `cutoff`; returns how many.
    /// A client retries within minutes, so keeping a day of answers is plenty, and without
    /// this the table would grow with every report.
    pub async fn forget_idempotency_keys_before(&self, cutoff: DateTime<Utc>) -> StoreResult<u64> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(cutoff.timestamp_millis())
            .execute(&self.writer)
            .await?;
        Ok(deleted.rows_affected())
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

/// Every column of a build but its per-stage outputs (a write that knows them already need not
/// read them back).
macro_rules! build_columns_but_outputs {
    () => {
        "id, build_key, platform, image_type, description, labels, state, status, failures, \
         max_retries, next_attempt_at, last_message, last_seq, created_at, updated_at, \
         lease_holder, lease_fence, lease_expires_at"
    };
}
const BUILD_COLUMNS_BUT_OUTPUTS: &str = build_columns_but_outputs!();
/// Every column a build is read from: the merged outputs, and the per-stage ones only for a
/// build whose merged view was not written yet (it had outputs before migration 0007).
const BUILD_COLUMNS: &str = concat!(
    build_columns_but_outputs!(),
    ", outputs, CASE WHEN outputs IS NULL THEN stage_outputs END AS stage_outputs"
);

fn build_not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        what: "build",
        id: id.to_owned(),
    }
}

const HISTORY_COLUMNS: &str = "build_id, seq, state, kind, message, attempt, reported_by, \
     token_id, source, recorded_at, outputs";
/// Parameters per history row written, in the order of [`HISTORY_COLUMNS`] and `duration_ms`.
const HISTORY_PARAMS: usize = 12;

/// The history rows `events` become, numbered from `first_seq`, with the messages
/// [`notes::entry_message`] gives them.
fn history_entries(
    first_seq: i64,
    events: &[Event],
    message: Option<&str>,
    source: Option<&str>,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Vec<HistoryEntry> {
    // Stored in milliseconds: answer with what a later read returns.
    let recorded_at = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    events
        .iter()
        .enumerate()
        .map(|(offset, event)| {
            let message = notes::entry_message(event, offset, events.len(), message);
            HistoryEntry {
                seq: first_seq + offset as i64,
                state: event.state,
                kind: event.kind,
                message,
                attempt: event.attempt,
                reported_by: Some(actor.username.to_string()),
                token_id: Some(actor.token_id.clone()),
                source: source.map(str::to_owned),
                recorded_at,
                outputs: event.outputs.clone(),
            }
        })
        .collect()
}

/// `($first, …, $first+9), (…)`: numbered placeholders for `rows` history rows.
fn history_placeholders(first: usize, rows: usize) -> String {
    (0..rows)
        .map(|row| {
            let start = first + row * HISTORY_PARAMS;
            let params: Vec<String> = (start..start + HISTORY_PARAMS)
                .map(|n| format!("${n}"))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binds `rows` in the order of [`history_placeholders`], with each one's stage duration
/// (counted from `previous`, when the entry before them was recorded).
fn bind_history<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    build_id: &'q str,
    rows: &'q [HistoryEntry],
    previous: Option<DateTime<Utc>>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let durations = buildstate_domain::reports::completion_durations(
        previous,
        rows.iter().map(|row| (row.kind, row.recorded_at)),
    );
    for (row, duration) in rows.iter().zip(durations) {
        query = query
            .bind(build_id)
            .bind(row.seq)
            .bind(i64::from(row.state))
            .bind(row.kind.as_str())
            .bind(row.message.as_deref())
            .bind(row.attempt.map(i64::from))
            .bind(row.reported_by.as_deref())
            .bind(row.token_id.as_deref())
            .bind(row.source.as_deref())
            .bind(row.recorded_at.timestamp_millis())
            .bind(
                row.outputs
                    .as_ref()
                    .and_then(|outputs| serde_json::to_string(outputs).ok()),
            )
            .bind(duration);
    }
    query
}

/// Appends history rows in one statement (`previous`: when the entry before them was recorded).
async fn insert_history(
    tx: &mut Transaction<'static, Any>,
    build_id: &str,
    rows: &[HistoryEntry],
    previous: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO build_history ({HISTORY_COLUMNS}, duration_ms) VALUES {}",
        history_placeholders(1, rows.len())
    );
    bind_history(sqlx::query(&sql), build_id, rows, previous)
        .execute(&mut **tx)
        .await?;
    Ok(())
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

fn parsed<T>(row: &AnyRow, column: &str) -> StoreResult<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column)?;
    text.parse()
        .map_err(|error| anyhow::anyhow!("column `{column}` holds `{text}`: {error}").into())
}

fn optional_parsed<T>(row: &AnyRow, column: &str) -> StoreResult<Option<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| {
        text.parse()
            .map_err(|error| anyhow::anyhow!("column `{column}` holds `{text}`: {error}").into())
    })
    .transpose()
}

fn state_column(row: &AnyRow, column: &str) -> StoreResult<StateCode> {
    let value: i64 = row.try_get(column)?;
    StateCode::new(value).map_err(|error| anyhow::Error::new(error).into())
}

fn u32_column(row: &AnyRow, column: &str) -> StoreResult<u32> {
    let value: i64 = row.try_get(column)?;
    u32::try_from(value).map_err(|_| anyhow::anyhow!("column `{column}` holds {value}").into())
}

fn from_millis(millis: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| anyhow::anyhow!("timestamp {millis} is out of range").into())
}

fn time(row: &AnyRow, column: &str) -> StoreResult<DateTime<Utc>> {
    from_millis(row.try_get(column)?)
}

fn optional_time(row: &AnyRow, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
    let millis: Option<i64> = row.try_get(column)?;
    millis.map(from_millis).transpose()
}

fn history_from_row(row: &AnyRow) -> StoreResult<HistoryEntry> {
    let attempt: Option<i64> = row.try_get("attempt")?;
    Ok(HistoryEntry {
        seq: row.try_get("seq")?,
        state: state_column(row, "state")?,
        kind: parsed(row, "kind")?,
        message: row.try_get("message")?,
        attempt: attempt.and_then(|n| u32::try_from(n).ok()),
        reported_by: row.try_get("reported_by")?,
        token_id: row.try_get("token_id")?,
        source: row.try_get("source")?,
        recorded_at: time(row, "recorded_at")?,
        outputs: row
            .try_get::<Option<String>, _>("outputs")?
            .map(|json| serde_json::from_str::<Outputs>(&json))
            .transpose()
            .context("stored history outputs are invalid")?,
    })
}

/// A build's outputs as the API shows them: each key once, with the stage that set it.
type MergedOutputs = BTreeMap<String, StageOutput>;

/// The merged outputs of a row of [`BUILD_COLUMNS`]: the `outputs` column, or for a build whose
/// outputs last changed before it existed, the merge of its per-stage outputs.
fn merged_outputs_from_row(row: &AnyRow) -> StoreResult<MergedOutputs> {
    match row.try_get::<Option<String>, _>("outputs")? {
        Some(json) => Ok(serde_json::from_str(&json).context("stored merged outputs are invalid")?),
        None => {
            let per_stage: Option<String> = row.try_get("stage_outputs")?;
            let per_stage =
                per_stage.context("a build without merged outputs lacks its stage outputs")?;
            Ok(decode_stage_outputs(&per_stage)?.merged())
        }
    }
}

/// The per-stage outputs column: `{"10": {"ami_id": "…"}, …}`.
fn decode_stage_outputs(json: &str) -> StoreResult<StageOutputs> {
    let stages: BTreeMap<String, Outputs> =
        serde_json::from_str(json).context("stored stage outputs are invalid")?;
    let stages = stages
        .into_iter()
        .map(|(stage, outputs)| {
            let stage = stage
                .parse::<StateCode>()
                .context("stored stage outputs name an invalid stage")?;
            Ok((stage, outputs))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    Ok(stages.into())
}

fn encode_stage_outputs(stage_outputs: &StageOutputs) -> StoreResult<String> {
    let by_code: BTreeMap<String, &Outputs> = stage_outputs
        .stages()
        .iter()
        .map(|(stage, outputs)| (stage.to_string(), outputs))
        .collect();
    Ok(serde_json::to_string(&by_code).context("serialize stage outputs")?)
}

/// A build's per-stage outputs as stored, still encoded: most changes leave them alone, and
/// decoding them (every stage's every key) was most of what outputs cost a report.
struct StoredOutputs {
    per_stage: String,
}

impl StoredOutputs {
    /// The outputs after `events`, encoded for the row, if `events` change them.
    fn after(&self, events: &[Event]) -> StoreResult<Option<ChangedOutputs>> {
        if !StageOutputs::may_change(events, self.per_stage == "{}") {
            return Ok(None);
        }
        let mut stages = decode_stage_outputs(&self.per_stage)?;
        if !stages.apply(events) {
            return Ok(None);
        }
        let merged = stages.merged();
        Ok(Some(ChangedOutputs {
            json: OutputsJson {
                per_stage: encode_stage_outputs(&stages)?,
                merged: serde_json::to_string(&merged).context("serialize merged outputs")?,
            },
            merged,
        }))
    }
}

/// Both outputs columns of a changed build, and the merged view the answer shows.
struct ChangedOutputs {
    json: OutputsJson,
    merged: MergedOutputs,
}

struct OutputsJson {
    per_stage: String,
    merged: String,
}

/// What a change does to a build's outputs: rewrites both columns, or leaves them as the
/// build (read under the lock) shows them.
enum OutputsAfter {
    Changed(ChangedOutputs),
    Unchanged(MergedOutputs),
}

fn lease_from_row(row: &AnyRow) -> StoreResult<Option<Lease>> {
    let holder: Option<String> = row.try_get("lease_holder")?;
    let fence: Option<i64> = row.try_get("lease_fence")?;
    let Some((holder, fence)) = holder.zip(fence) else {
        return Ok(None);
    };
    Ok(Some(Lease {
        stage: state_column(row, "state")?,
        holder,
        fence,
        expires_at: optional_time(row, "lease_expires_at")?.unwrap_or(DateTime::<Utc>::MIN_UTC),
    }))
}

const TOKEN_COLUMNS: &str = "t.id, u.username, t.description, t.scope, t.created_at, \
     t.expires_at, t.last_used_at, t.revoked_at, t.created_by";

fn token_from_row(row: &AnyRow) -> StoreResult<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        username: parsed(row, "username")?,
        description: row.try_get("description")?,
        scope: parsed(row, "scope")?,
        created_at: time(row, "created_at")?,
        expires_at: optional_time(row, "expires_at")?,
        last_used_at: optional_time(row, "last_used_at")?,
        revoked_at: optional_time(row, "revoked_at")?,
        created_by: row.try_get("created_by")?,
    })
}

fn user_from_row(row: &AnyRow) -> StoreResult<User> {
    Ok(User {
        id: row.try_get("id")?,
        username: parsed(row, "username")?,
        email: parsed(row, "email")?,
        role: parsed(row, "role")?,
        created_at: time(row, "created_at")?,
    })
}
