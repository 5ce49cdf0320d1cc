//! buildstate's REST service: configuration, start-up and shutdown.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests bind port 0 and stop the
//! server cleanly; `bldst server` calls [`run`].

pub mod api;
pub mod dashboard;
pub mod db;
pub mod events;
pub mod metrics;
pub mod names;
pub mod peers;
pub mod ratelimit;
pub mod secrets;
pub mod serving;
pub mod streams;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use buildstate_domain::reports::StuckThresholds;
use buildstate_domain::{Email, RetryPolicy, Role, Scope, Username};
use chrono::Utc;
use tokio::net::TcpListener;

use crate::api::{AppInner, AppState};
use crate::db::Database;
use crate::names::StateNames;
use crate::secrets::TokenHasher;

/// The token-hashing key used when `SECRET_KEY` is unset (development only; logged as such).
const DEVELOPMENT_SECRET_KEY: &str = "buildstate-development-key";

/// `bldst server`: flags, each also read from the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// `sqlite://PATH` (created on first start) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://buildstate.db")]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "BUILDSTATE_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Key for hashing API tokens; changing it invalidates every token. Set it in production.
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Failures a stage may have before its build is blocked (a build may choose its own).
    #[arg(long, env = "BUILDSTATE_MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
    /// Seconds to wait after a stage's first failure; doubles with each further failure.
    #[arg(long, env = "BUILDSTATE_BACKOFF_BASE_SECS", default_value_t = 30)]
    pub backoff_base_secs: u64,
    /// The longest wait between attempts, in seconds.
    #[arg(long, env = "BUILDSTATE_BACKOFF_CAP_SECS", default_value_t = 3600)]
    pub backoff_cap_secs: u64,
    /// Stage name overrides: `CODE=NAME` pairs separated by `;`.
    #[arg(long, env = "BUILDSTATE_STATE_NAMES")]
    pub state_names: Option<String>,
    /// How long the first answer to a report with an `Idempotency-Key` is kept, in seconds.
    #[arg(
        long,
        env = "BUILDSTATE_IDEMPOTENCY_TTL_SECS",
        default_value_t = 86_400
    )]
    pub idempotency_ttl_secs: u64,
    /// How long, in milliseconds, a checked token is trusted without asking the database
    /// again. Revocations reach every process at once (PostgreSQL NOTIFY); this bounds a
    /// revoked token's life elsewhere only should that announcement be missed. 0 checks every
    /// request.
    #[arg(long, env = "BUILDSTATE_TOKEN_CACHE_MILLIS", default_value_t = 1000)]
    pub token_cache_millis: u64,
    /// A PEM certificate chain: serve HTTPS (with `--tls-key`) instead of plain HTTP.
    #[arg(
        long,
        env = "BUILDSTATE_TLS_CERT",
        requires = "tls_key",
        value_name = "PATH"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "BUILDSTATE_TLS_KEY",
        requires = "tls_cert",
        value_name = "PATH"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// The largest request body accepted, in bytes (a report's message is at most 16 KiB).
    #[arg(long, env = "BUILDSTATE_MAX_BODY_BYTES", default_value_t = 65_536)]
    pub max_body_bytes: usize,
    /// Seconds a client may take to send a request's headers, from its first byte (or, for
    /// a new connection, from its opening: one that sends nothing is closed then).
    #[arg(long, env = "BUILDSTATE_HEADER_READ_TIMEOUT_SECS", default_value_t = 5)]
    pub header_read_timeout_secs: u64,
    /// Seconds from a request's arrival to its answer (reading the body included); longer is
    /// answered 503.
    #[arg(long, env = "BUILDSTATE_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Connections open at once. At the cap, a new one closes the oldest that has no request
    /// in progress; only when every connection is busy does it wait to be accepted.
    #[arg(long, env = "BUILDSTATE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Seconds a kept-alive connection may sit without a request before it is closed.
    #[arg(long, env = "BUILDSTATE_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Event streams open at once (not counted against `--max-connections`); more are
    /// answered 503 `unavailable`.
    #[arg(long, env = "BUILDSTATE_MAX_STREAMS", default_value_t = 256)]
    pub max_streams: usize,
    /// Event streams one token may hold open at once; more are answered 429 `rate_limited`.
    #[arg(long, env = "BUILDSTATE_MAX_STREAMS_PER_TOKEN", default_value_t = 8)]
    pub max_streams_per_token: usize,
    /// How long an `in_progress` report or a heartbeat holds a stage for its run, in seconds
    /// (fractions allowed; at least 1). Clients heartbeat a third of the way through it; a run
    /// that stops heartbeating loses the stage to the next run once it ends.
    #[arg(long, env = "BUILDSTATE_LEASE_SECS", default_value_t = 60.0, value_parser = parse_lease_secs)]
    pub lease_secs: f64,
    /// The most PostgreSQL connections this process opens (its pool); each server process
    /// holds up to this many of the database's `max_connections`. SQLite ignores it (one
    /// writer, four readers).
    #[arg(
        long,
        env = "BUILDSTATE_DATABASE_MAX_CONNECTIONS",
        default_value_t = DEFAULT_DATABASE_MAX_CONNECTIONS,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub database_max_connections: u32,
    /// Seconds without any report after which an unfinished build counts as stuck (reports,
    /// metrics and the `stuck` alert); at most 99999999.
    #[arg(
        long,
        env = "BUILDSTATE_STUCK_AFTER_SECS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(..=buildstate_domain::reports::MAX_STUCK_AFTER_SECS)
    )]
    pub stuck_after_secs: u64,
    /// Per-stage stuck thresholds: `CODE=SECONDS` pairs separated by `;` or `,` (e.g.
    /// `10=7200;55=600`; seconds at most 99999999).
    #[arg(long, env = "BUILDSTATE_STUCK_AFTER_BY_CODE")]
    pub stuck_after_by_code: Option<String>,
    /// A JSON file listing webhooks: `[{"url": …, "secret": …, "alerts": ["blocked", "stuck",
    /// "failed", "completed"]}]` (README: Alerts).
    #[arg(long, env = "BUILDSTATE_WEBHOOKS_FILE")]
    pub webhooks_file: Option<std::path::PathBuf>,
    /// How often, in seconds, to look for builds that became stuck (for the `stuck` alert).
    #[arg(long, env = "BUILDSTATE_STUCK_CHECK_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub stuck_check_secs: u64,
    /// The wait, in milliseconds, before retrying a failed webhook delivery; it doubles with
    /// each further failure (at most 5 minutes), for 6 attempts in all.
    #[arg(
        long,
        env = "BUILDSTATE_WEBHOOK_RETRY_BASE_MILLIS",
        default_value_t = 1000
    )]
    pub webhook_retry_base_millis: u64,
    /// `redis://[:PASSWORD@]HOST[:PORT][/DB]` (or `rediss://` for TLS): share the rate limits
    /// with every server process using the same Redis. Unset: each process counts alone.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The longest, in milliseconds, a request waits for Redis to count it; slower, and the
    /// process counts on its own until Redis answers again.
    #[arg(long, env = "BUILDSTATE_REDIS_TIMEOUT_MILLIS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub redis_timeout_millis: u64,
    /// Failed authentications (unknown, revoked or expired token) one client address may have
    /// per window before its failing attempts are answered 429 for the cool-down; 0: no limit.
    #[arg(long, env = "BUILDSTATE_RATE_LIMIT_FAILED_AUTHS", default_value_t = 30)]
    pub rate_limit_failed_auths: u32,
    /// The window of `--rate-limit-failed-auths`, in seconds.
    #[arg(long, env = "BUILDSTATE_RATE_LIMIT_FAILED_AUTH_WINDOW_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rate_limit_failed_auth_window_secs: u64,
    /// How long, in seconds, an address over `--rate-limit-failed-auths` has its failing
    /// attempts answered 429 (a valid token is still served).
    #[arg(long, env = "BUILDSTATE_RATE_LIMIT_FAILED_AUTH_COOLDOWN_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rate_limit_failed_auth_cooldown_secs: u64,
    /// Writes (POST, PUT, PATCH, DELETE) one token may make per window; 0: no limit.
    #[arg(long, env = "BUILDSTATE_RATE_LIMIT_WRITES", default_value_t = 3000)]
    pub rate_limit_writes: u32,
    /// The window of `--rate-limit-writes`, in seconds.
    #[arg(long, env = "BUILDSTATE_RATE_LIMIT_WRITES_WINDOW_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rate_limit_writes_window_secs: u64,
    /// Behind a proxy or load balancer: the header it puts the client's address in (e.g.
    /// `X-Forwarded-For`; its last entry is used). Unset: the connection's address. Set it only
    /// when every request comes through that proxy, or clients could claim any address.
    #[arg(long, env = "BUILDSTATE_CLIENT_ADDRESS_HEADER", value_name = "HEADER",
          value_parser = parse_header_name)]
    pub client_address_header: Option<axum::http::HeaderName>,
}

fn parse_header_name(text: &str) -> Result<axum::http::HeaderName, String> {
    axum::http::HeaderName::try_from(text.trim())
        .map_err(|_| format!("`{text}` is not an HTTP header name (e.g. X-Forwarded-For)"))
}

/// A lease time in seconds, as `--lease-secs` takes it ([`lease_duration`]).
fn parse_lease_secs(text: &str) -> Result<f64, String> {
    let secs = text.parse::<f64>().map_err(|_| {
        format!("`{text}` is not a lease time: give seconds, at least 1 and at most 86400")
    })?;
    lease_duration(secs).map(|_| secs)
}

/// A lease time, refused when it is not one or is shorter than a run can hold by heartbeats
/// ([`buildstate_domain::MIN_LEASE_DURATION`]).
fn lease_duration(secs: f64) -> Result<Duration, String> {
    let shortest = buildstate_domain::MIN_LEASE_DURATION;
    match Duration::try_from_secs_f64(secs) {
        Ok(lease) if lease > Duration::ZERO && lease < shortest => Err(format!(
            "a lease of {secs} s is too short to hold: runs heartbeat a third of the way through \
             their lease, at most every 250 ms; give at least {} s",
            shortest.as_secs_f64()
        )),
        Ok(lease) if lease >= shortest && lease <= Duration::from_secs(86_400) => Ok(lease),
        _ => Err(format!(
            "`{secs}` is not a lease time: give seconds, at least 1 and at most 86400"
        )),
    }
}

/// The PostgreSQL pool size unless configured: enough for the 64-client benchmark to keep the
/// database busy (BENCHMARKS.md), a third of PostgreSQL's default `max_connections`.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 32;

impl ServerConfig {
    /// The defaults, for a database URL (as tests and tools build it).
    pub fn for_database(database_url: impl Into<String>) -> Self {
        ServerConfig {
            database_url: database_url.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret_key: None,
            max_retries: 3,
            backoff_base_secs: 30,
            backoff_cap_secs: 3600,
            state_names: None,
            idempotency_ttl_secs: 86_400,
            token_cache_millis: 1000,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 65_536,
            header_read_timeout_secs: 5,
            request_timeout_secs: 30,
            max_connections: 1024,
            idle_timeout_secs: 60,
            max_streams: 256,
            max_streams_per_token: 8,
            lease_secs: buildstate_domain::DEFAULT_LEASE_DURATION.as_secs_f64(),
            database_max_connections: DEFAULT_DATABASE_MAX_CONNECTIONS,
            stuck_after_secs: 3600,
            stuck_after_by_code: None,
            webhooks_file: None,
            stuck_check_secs: 60,
            webhook_retry_base_millis: 1000,
            redis_url: None,
            redis_timeout_millis: 50,
            rate_limit_failed_auths: 30,
            rate_limit_failed_auth_window_secs: 60,
            rate_limit_failed_auth_cooldown_secs: 300,
            rate_limit_writes: 3000,
            rate_limit_writes_window_secs: 60,
            client_address_header: None,
        }
    }

    /// The rate limits these flags set.
    pub fn rate_limit_settings(&self) -> ratelimit::RateLimitSettings {
        ratelimit::RateLimitSettings {
            failed_auths: self.rate_limit_failed_auths,
            failed_auth_window: Duration::from_secs(self.rate_limit_failed_auth_window_secs),
            failed_auth_cooldown: Duration::from_secs(self.rate_limit_failed_auth_cooldown_secs),
            writes: self.rate_limit_writes,
            writes_window: Duration::from_secs(self.rate_limit_writes_window_secs),
        }
    }

    /// The rate limiter: through Redis when `REDIS_URL` is set, else per process.
    pub async fn rate_limiter(&self) -> anyhow::Result<ratelimit::RateLimiter> {
        let settings = self.rate_limit_settings();
        match self.redis_url.as_deref().map(str::trim) {
            None | Some("") => Ok(ratelimit::RateLimiter::per_process(settings)),
            Some(url) => {
                ratelimit::RateLimiter::shared(
                    settings,
                    url,
                    Duration::from_millis(self.redis_timeout_millis),
                )
                .await
            }
        }
    }

    /// The per-client limits these flags set.
    pub fn limits(&self) -> serving::Limits {
        serving::Limits {
            max_body_bytes: self.max_body_bytes,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_connections: self.max_connections,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
        }
    }

    fn hasher(&self) -> TokenHasher {
        match &self.secret_key {
            Some(key) if !key.is_empty() => TokenHasher::new(key),
            _ => {
                tracing::warn!("SECRET_KEY is not set: API tokens are hashed with a built-in development key; set SECRET_KEY in production");
                TokenHasher::new(DEVELOPMENT_SECRET_KEY)
            }
        }
    }

    /// Connects to the database (applying migrations) and assembles the handlers' state.
    pub async fn app_state(&self) -> anyhow::Result<AppState> {
        let names = StateNames::parse(self.state_names.as_deref().unwrap_or(""))?;
        let stuck_thresholds = StuckThresholds::parse(
            Duration::from_secs(self.stuck_after_secs),
            self.stuck_after_by_code.as_deref().unwrap_or(""),
        )
        .map_err(|error| anyhow::anyhow!("invalid BUILDSTATE_STUCK_AFTER_BY_CODE entry {error}"))?;
        let hooks = match &self.webhooks_file {
            Some(path) => webhooks::read_hooks(path)?,
            None => Vec::new(),
        };
        let webhooks = webhooks::Webhooks::new(
            hooks,
            webhooks::RetryPlan {
                attempts: 6,
                base: Duration::from_millis(self.webhook_retry_base_millis),
                cap: Duration::from_secs(300),
            },
        )?;
        let rate_limits = self.rate_limiter().await?;
        let db =
            Database::connect(&self.database_url, names, self.database_max_connections).await?;
        Ok(AppState::new(AppInner {
            events: events::EventHub::new(&db),
            peers: peers::Peers::for_database(&db, &self.database_url),
            metrics: std::sync::Arc::new(metrics::Metrics::new()),
            stuck_thresholds,
            webhooks,
            stuck_check: Duration::from_secs(self.stuck_check_secs),
            db,
            hasher: self.hasher(),
            retry_policy: RetryPolicy {
                max_retries: self.max_retries,
                backoff_base: Duration::from_secs(self.backoff_base_secs),
                backoff_cap: Duration::from_secs(self.backoff_cap_secs),
                lease_duration: lease_duration(self.lease_secs)
                    .map_err(anyhow::Error::msg)
                    .context("invalid `BUILDSTATE_LEASE_SECS`")?,
            },
            default_max_retries: self.max_retries,
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs),
            recent_tokens: api::RecentTokens::new(Duration::from_millis(self.token_cache_millis)),
            limits: self.limits(),
            streams: streams::Streams::new(streams::StreamLimits {
                total: self.max_streams,
                per_token: self.max_streams_per_token,
            }),
            rate_limits,
            client_address_header: self.client_address_header.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(serving::Tls::from_pem_files(cert, key)?),
                _ => None,
            },
        }))
    }
}

/// Serves the API on `listener` until `shutdown` completes, then drains and closes the
/// database.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = state.db.clone();
    let peers = match state.peers.clone() {
        Some(peers) => Some(
            peers
                .follow(peers::Followers {
                    tokens: state.recent_tokens.clone(),
                    events: state.events.clone(),
                    streams: state.streams.clone(),
                })
                .await,
        ),
        None => None,
    };
    let housekeeping = tokio::spawn(forget_old_idempotency_keys(
        db.clone(),
        state.idempotency_ttl,
    ));
    let followers = [
        Some(tokio::spawn(state.rate_limits.clone().watch_redis())),
        state.events.start(),
        (!state.webhooks.is_empty()).then(|| state.webhooks.follow(&state.events)),
        (!state.webhooks.is_empty()).then(|| {
            state.webhooks.watch_stuck(
                db.clone(),
                state.stuck_thresholds.clone(),
                state.stuck_check,
            )
        }),
    ];
    let limits = state.limits.clone();
    let tls = state.tls.clone();
    let events = state.events.clone();
    let streams = state.streams.clone();
    // Event streams never finish on their own: end them as the server stops accepting, so
    // the drain waits only for real requests (their clients reconnect with `Last-Event-ID`).
    let shutdown = async move {
        shutdown.await;
        streams.shut_down();
    };
    serving::serve_connections(listener, api::router(state), limits, tls, shutdown).await;
    events.flush().await;
    housekeeping.abort();
    if let Some(peers) = peers {
        peers.abort();
    }
    for follower in followers.into_iter().flatten() {
        follower.abort();
    }
    db.close().await;
    Ok(())
}

/// Every hour (and at start), drops idempotent answers older than `ttl`.
async fn forget_old_idempotency_keys(db: Database, ttl: Duration) {
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        let cutoff = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| Utc::now().checked_sub_signed(ttl));
        let Some(cutoff) = cutoff else { continue };
        match db.forget_idempotency_keys_before(cutoff).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, "forgot old idempotency keys"),
            Err(error) => tracing::warn!(error = %error, "failed to forget old idempotency keys"),
        }
    }
}

/// `bldst server`: binds the configured address and serves until Ctrl-C or SIGTERM.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    // Held until the process exits: the lock is released with the file.
    let _only_server = db::claim_sqlite_file(&config.database_url)?;
    let state = config.app_state().await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to listen on {}", config.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        database = state.db.dialect().name(),
        tls = state.tls.is_some(),
        rate_limits = if state.rate_limits.status().redis_configured {
            "redis"
        } else {
            "process"
        },
        "buildstate server listening"
    );
    if state.db.count_admins().await? == 0 {
        tracing::warn!("no admin user yet: create one and its first token with `bldst server bootstrap --username NAME --email ADDRESS`");
    }
    serve(listener, state, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

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
) -> anyhow::Result<buildstate_domain::wire::CreatedToken> {
    buildstate_domain::fields::check_free_text("description", description, 512)?;
    anyhow::ensure!(
        !description.trim().is_empty(),
        "the description must say what the token is for"
    );
    let user = state.db.user_by_name(username).await.map_err(|error| match error {
        db::StoreError::NotFound { .. } => anyhow::anyhow!(
            "user `{username}` not found: `bldst server token create` makes tokens for existing users"
        ),
        other => anyhow::Error::new(other),
    })?;
    anyhow::ensure!(
        user.role.max_scope().allows(scope),
        "user `{username}` has the `{}` role, which cannot hold `{scope}` tokens",
        user.role
    );
    let now = Utc::now();
    let expires_at = expires_in
        .map(|lifetime| {
            chrono::Duration::from_std(lifetime)
                .ok()
                .and_then(|lifetime| now.checked_add_signed(lifetime))
                .context("the expiry is too far away")
        })
        .transpose()?;
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
