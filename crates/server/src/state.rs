//! What every handler shares ([`AppState`]): the store, the token hasher and cache, the
//! retry policy, the limits, and where committed changes are published. Assembled once at
//! start (`startup`), read by the API, the dashboard and the background tasks.

use std::sync::Arc;
use std::time::Duration;

use buildstate_domain::reports::StuckThresholds;
use buildstate_domain::wire::{Build, HistoryEntry};
use buildstate_domain::RetryPolicy;

use crate::db::Database;
use crate::events::EventHub;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::ratelimit::RateLimiter;
use crate::secrets::TokenHasher;
use crate::serving::{Limits, Tls};
use crate::token_cache::RecentTokens;
use crate::webhooks::Webhooks;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppInner>);

#[derive(Debug)]
pub struct AppInner {
    pub db: Database,
    pub hasher: TokenHasher,
    pub retry_policy: RetryPolicy,
    pub default_max_retries: u32,
    /// How long answers to idempotent reports are kept.
    pub idempotency_ttl: Duration,
    /// Tokens seen in the last moment, so a busy pipeline does not look its token up per request.
    pub recent_tokens: RecentTokens,
    /// On PostgreSQL: the other server processes, whose revocations and transitions this one
    /// follows.
    pub peers: Option<Peers>,
    /// What one client may take: body size, timeouts, connections.
    pub limits: Limits,
    /// Failed authentications per address and writes per token ([`crate::ratelimit`]).
    pub rate_limits: RateLimiter,
    /// The header a trusted proxy puts the client's address in, if any.
    pub client_address_header: Option<axum::http::HeaderName>,
    /// Set: the listener speaks HTTPS.
    pub tls: Option<Tls>,
    /// Where committed changes are published (event stream, webhooks).
    pub events: EventHub,
    pub metrics: Arc<Metrics>,
    /// When an unfinished build counts as stuck.
    pub stuck_thresholds: StuckThresholds,
    pub webhooks: Webhooks,
    /// How often to look for builds that became stuck.
    pub stuck_check: Duration,
    /// How often to look for failed builds whose retry is due ([`crate::retries`]); zero:
    /// never.
    pub retry_check: Duration,
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        AppState(Arc::new(inner))
    }

    /// After a change commits: count it and publish it (event stream, webhooks, the other
    /// server processes). `build` is the build right after `entries`.
    pub fn announce(&self, build: &Build, entries: &[HistoryEntry]) {
        if self.events.publish(build, entries) {
            self.metrics.observe(build, entries);
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}
