//! Start-up and shutdown: assembling the handlers' state from the configuration (connecting to
//! the database, Redis, reading the webhooks), serving a listener until a shutdown future
//! completes, and the background tasks that run meanwhile.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests bind port 0 and stop the
//! server cleanly; `bldst server` calls [`run`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use buildstate_domain::reports::StuckThresholds;
use buildstate_domain::RetryPolicy;
use chrono::Utc;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::db::Database;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::names::StateNames;
use crate::peers::{Followers, Peers};
use crate::ratelimit::RateLimiter;
use crate::serving::Tls;
use crate::state::{AppInner, AppState};
use crate::token_cache::RecentTokens;
use crate::webhooks::{read_hooks, RetryPlan, Webhooks};
use crate::{api, serving};

impl ServerConfig {
    /// The rate limiter: through Redis when `REDIS_URL` is set, else per process.
    pub async fn rate_limiter(&self) -> anyhow::Result<RateLimiter> {
        let settings = self.rate_limit_settings();
        match self.redis_url.as_deref().map(str::trim) {
            None | Some("") => Ok(RateLimiter::per_process(settings)),
            Some(url) => {
                RateLimiter::shared(
                    settings,
                    url,
                    Duration::from_millis(self.redis_timeout_millis),
                )
                .await
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
            Some(path) => read_hooks(path)?,
            None => Vec::new(),
        };
        let webhooks = Webhooks::new(
            hooks,
            RetryPlan {
                attempts: 6,
                base: Duration::from_millis(self.webhook_retry_base_millis),
                cap: Duration::from_secs(300),
            },
        )?;
        let rate_limits = self.rate_limiter().await?;
        let db =
            Database::connect(&self.database_url, names, self.database_max_connections).await?;
        Ok(AppState::new(AppInner {
            events: EventHub::new(&db),
            peers: Peers::for_database(&db, &self.database_url),
            metrics: Arc::new(Metrics::new()),
            stuck_thresholds,
            webhooks,
            stuck_check: Duration::from_secs(self.stuck_check_secs),
            retry_check: Duration::from_millis(self.retry_check_millis),
            db,
            hasher: self.hasher(),
            retry_policy: RetryPolicy {
                max_retries: self.max_retries,
                backoff_base: Duration::from_secs(self.backoff_base_secs),
                backoff_cap: Duration::from_secs(self.backoff_cap_secs),
                lease_duration: Duration::try_from_secs_f64(self.lease_secs)
                    .context("invalid lease time")?,
            },
            default_max_retries: self.max_retries,
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_secs),
            recent_tokens: RecentTokens::new(Duration::from_millis(self.token_cache_millis)),
            limits: self.limits(),
            rate_limits,
            client_address_header: self.client_address_header.clone(),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(Tls::from_pem_files(cert, key)?),
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
                .follow(Followers {
                    tokens: state.recent_tokens.clone(),
                    events: state.events.clone(),
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
        (!state.retry_check.is_zero())
            .then(|| crate::retries::start(state.clone(), state.retry_check)),
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
