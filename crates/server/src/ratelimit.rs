//! Rate limits: failed authentications per client address, and writes per token.
//!
//! Both are fixed windows counted in one store: Redis when `REDIS_URL` is set, so every
//! replica behind a load balancer shares one count, or this process's memory otherwise.
//! Redis costs one round trip per counted request (a pipeline: `INCR`, `PEXPIRE … NX`), bounded
//! by a short timeout. When Redis fails or is slow the
//! process counts on its own instead — it never answers 5xx for a limit — logs the switch
//! once, shows it in `/status`, and a background probe switches back (logged once) as soon as
//! Redis answers again. Counts do not carry over between the two stores: a switch starts
//! fresh windows, which errs towards serving.
//!
//! What is limited, and why so:
//! - **Failed authentications per address.** Past the limit in a window, the address's
//!   *failing* attempts are answered 429 until a cool-down ends; a good token from the same
//!   address is still served. CI workers share addresses (NAT, a runner host, the load
//!   balancer itself when no forwarded-for header is trusted), so one job with a revoked token
//!   must not lock out every other pipeline behind it. Guessing gains nothing from that: a token
//!   holds about 238 random bits.
//! - **Writes per token** (every authenticated POST, PUT, PATCH and DELETE): one runaway
//!   script cannot flood the database on behalf of everyone else.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buildstate_domain::wire::{RateLimitStatus, RateLimitStore};
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The limits, as configured (`bldst server --help`, README: Rate limits; the defaults are
/// the flags'). A zero count turns that limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Failed authentications one address may have in [`Self::failed_auth_window`].
    pub failed_auths: u32,
    pub failed_auth_window: Duration,
    /// Once over the limit, how long the address's failing attempts are answered 429.
    pub failed_auth_cooldown: Duration,
    /// Writes one token may make in [`Self::writes_window`].
    pub writes: u32,
    pub writes_window: Duration,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    FailedAuthentications,
    Writes,
}

/// A request over a limit: what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    pub limit: Limit,
    /// The configured count and its window.
    pub allowed: u32,
    pub window: Duration,
    /// When the client may try again (the `Retry-After` header, rounded up to seconds).
    pub retry_after: Duration,
    /// The first request refused in this window: worth a log line (the rest are not).
    pub first_refusal: bool,
}

/// Redis counts with one pipelined round trip per counted request, `INCR` and
/// `PEXPIRE … NX`: the counter's window starts with its first request (`NX` sets a life only on
/// a counter that has none; Redis 7). Neither needs to be atomic with the other: if the counter
/// expires between the two, `PEXPIRE` finds nothing and the next `INCR` starts a new window.
/// Only a refused request asks more: the first one of a window starts the cool-down
/// (`PEXPIRE`), the others ask the remaining life (`PTTL`) for `Retry-After`. A Lua script
/// doing all of it cost Redis twice the instructions of this pipeline (BENCHMARKS.md).
/// The Redis keys' prefix, so the counters are easy to find (and to leave alone) in a shared
/// Redis.
const KEY_PREFIX: &str = "buildstate:ratelimit";

/// How often the background probe asks an unreachable Redis whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The most counters kept in memory at once (addresses and tokens); the least recently used
/// go first, so a flood of addresses cannot exhaust memory.
const MAX_LOCAL_COUNTERS: u64 = 100_000;

/// The rate limiter every request shares. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter(Arc<Inner>);

struct Inner {
    settings: RateLimitSettings,
    local: moka::sync::Cache<String, Window>,
    shared: Option<Shared>,
}

struct Shared {
    client: redis::Client,
    /// Set once connected; the manager reconnects by itself after that.
    connection: Mutex<Option<ConnectionManager>>,
    /// The longest a counted request waits for Redis before counting locally.
    timeout: Duration,
    reachable: AtomicBool,
    /// When Redis stopped answering (shown in `/status`), while it does not.
    unreachable_since: Mutex<Option<DateTime<Utc>>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the Redis URL: it may hold a password.
        f.debug_struct("RateLimiter")
            .field("settings", &self.0.settings)
            .field("status", &self.status())
            .finish()
    }
}

/// One counter in memory: the same fixed window and cool-down as [`COUNT_SCRIPT`].
#[derive(Debug, Clone, Copy)]
struct Window {
    count: u64,
    ends: Instant,
}

struct WindowExpiry;

impl moka::Expiry<String, Window> for WindowExpiry {
    fn expire_after_create(&self, _: &String, window: &Window, now: Instant) -> Option<Duration> {
        Some(window.ends.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        window: &Window,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(window.ends.saturating_duration_since(now))
    }
}

/// A request counted: its place in the window and the window's remaining life.
#[derive(Debug, Clone, Copy)]
struct Counted {
    count: u64,
    remaining: Duration,
}

impl RateLimiter {
    /// Limits counted in this process's memory only.
    pub fn per_process(settings: RateLimitSettings) -> Self {
        RateLimiter(Arc::new(Inner {
            settings,
            local: local_counters(),
            shared: None,
        }))
    }

    /// Limits shared through the Redis at `url` (`redis://` or `rediss://`), waiting at most
    /// `timeout` for each count. An unreachable Redis is not an error: the limits are counted
    /// per process until it answers (the switch is logged). A malformed URL is.
    pub async fn shared(
        settings: RateLimitSettings,
        url: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|error| {
            // The URL is not repeated: it may hold a password.
            anyhow::anyhow!("REDIS_URL is not a usable Redis URL (redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://…): {error}")
        })?;
        let limiter = RateLimiter(Arc::new(Inner {
            settings,
            local: local_counters(),
            shared: Some(Shared {
                client,
                connection: Mutex::new(None),
                timeout,
                reachable: AtomicBool::new(false),
                unreachable_since: Mutex::new(None),
            }),
        }));
        if let Some(shared) = &limiter.0.shared {
            match shared.probe().await {
                Ok(()) => {
                    shared.reachable.store(true, Ordering::Release);
                    tracing::info!("rate limits are shared through Redis");
                }
                Err(error) => {
                    shared.lost(&error);
                }
            }
        }
        Ok(limiter)
    }

    pub fn settings(&self) -> &RateLimitSettings {
        &self.0.settings
    }

    /// Which store counts right now, for `/status`.
    pub fn status(&self) -> RateLimitStatus {
        match &self.0.shared {
            None => RateLimitStatus {
                store: RateLimitStore::Process,
                redis_configured: false,
                redis_unreachable_since: None,
            },
            Some(shared) => {
                let reachable = shared.reachable.load(Ordering::Acquire);
                RateLimitStatus {
                    store: if reachable {
                        RateLimitStore::Redis
                    } else {
                        RateLimitStore::Process
                    },
                    redis_configured: true,
                    redis_unreachable_since: *lock(&shared.unreachable_since),
                }
            }
        }
    }

    /// Counts a failed authentication from `address`; `Err` once the address is over its
    /// limit (the caller answers 429 instead of 401).
    pub async fn failed_authentication(&self, address: IpAddr) -> Result<(), OverLimit> {
        let settings = &self.0.settings;
        self.check(
            Limit::FailedAuthentications,
            || format!("{KEY_PREFIX}:failed-auth:{address}"),
            settings.failed_auths,
            settings.failed_auth_window,
            settings.failed_auth_cooldown,
        )
        .await
    }

    /// Counts a write with the token `token_id`; `Err` once the token is over its limit.
    pub async fn write(&self, token_id: &str) -> Result<(), OverLimit> {
        let settings = &self.0.settings;
        self.check(
            Limit::Writes,
            || format!("{KEY_PREFIX}:writes:{token_id}"),
            settings.writes,
            settings.writes_window,
            Duration::ZERO,
        )
        .await
    }

    /// Counts one request against `limit` (`allowed` per `window`, 0: no limit) on the counter
    /// `key` names; `Err` once it is over.
    async fn check(
        &self,
        limit: Limit,
        key: impl FnOnce() -> String,
        allowed: u32,
        window: Duration,
        cooldown: Duration,
    ) -> Result<(), OverLimit> {
        if allowed == 0 {
            return Ok(());
        }
        let counted = self.count(&key(), window, cooldown, allowed).await;
        over(counted, limit, allowed, window)
    }

    /// Counts one request on `key`, in Redis while it answers, else here.
    async fn count(
        &self,
        key: &str,
        window: Duration,
        cooldown: Duration,
        allowed: u32,
    ) -> Counted {
        if let Some(shared) = &self.0.shared {
            if shared.reachable.load(Ordering::Acquire) {
                match shared.count(key, window, cooldown, allowed).await {
                    Ok(counted) => return counted,
                    Err(error) => {
                        if shared.lost(&error) {
                            // Counts start afresh at each switch: what this process counted
                            // during an earlier outage (a cool-down, say) is not this one's.
                            self.0.local.invalidate_all();
                        }
                    }
                }
            }
        }
        self.count_locally(key, window, cooldown, allowed)
    }

    fn count_locally(
        &self,
        key: &str,
        window: Duration,
        cooldown: Duration,
        allowed: u32,
    ) -> Counted {
        let now = Instant::now();
        let entry = self
            .0
            .local
            .entry(key.to_owned())
            .and_upsert_with(|existing| match existing.map(|entry| entry.into_value()) {
                Some(current) if current.ends > now => {
                    let count = current.count + 1;
                    let ends = if count == u64::from(allowed) + 1 && !cooldown.is_zero() {
                        now + cooldown
                    } else {
                        current.ends
                    };
                    Window { count, ends }
                }
                _ => Window {
                    count: 1,
                    ends: now + window,
                },
            });
        let window = entry.into_value();
        Counted {
            count: window.count,
            remaining: window.ends.saturating_duration_since(now),
        }
    }

    /// While Redis is configured: every [`PROBE_INTERVAL`], if it stopped answering, asks
    /// again, and switches back to it (logged once) when it does. Runs until aborted.
    pub async fn watch_redis(self) {
        let Some(shared) = &self.0.shared else {
            return;
        };
        let mut every = tokio::time::interval(PROBE_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if shared.reachable.load(Ordering::Acquire) {
                continue;
            }
            if shared.probe().await.is_ok() {
                let since = lock(&shared.unreachable_since).take();
                // What was counted here meanwhile is Redis's to count now.
                self.0.local.invalidate_all();
                // Said before it is so: `/status` never shows Redis back before the log does.
                tracing::info!(
                    unreachable_since = since.map(|since| since.to_rfc3339()),
                    "Redis answers again: rate limits are shared by every server process again"
                );
                shared.reachable.store(true, Ordering::Release);
            }
        }
    }
}

fn local_counters() -> moka::sync::Cache<String, Window> {
    moka::sync::Cache::builder()
        .max_capacity(MAX_LOCAL_COUNTERS)
        .expire_after(WindowExpiry)
        .build()
}

fn over(counted: Counted, limit: Limit, allowed: u32, window: Duration) -> Result<(), OverLimit> {
    if counted.count <= u64::from(allowed) {
        return Ok(());
    }
    // Whole seconds, rounded up, at least one: `Retry-After` has no fractions, and an answer of
    // 0 would invite an immediate retry that is refused again.
    let secs = counted.remaining.as_millis().div_ceil(1000).max(1);
    Err(OverLimit {
        limit,
        allowed,
        window,
        retry_after: Duration::from_secs(u64::try_from(secs).unwrap_or(u64::MAX)),
        first_refusal: counted.count == u64::from(allowed) + 1,
    })
}

/// A poisoned lock only means another request panicked mid-update of a plain value.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Counts one request on `key`: one pipeline, and a second trip to start the cool-down on
    /// the first refusal, each within the timeout.
    async fn count(
        &self,
        key: &str,
        window: Duration,
        cooldown: Duration,
        allowed: u32,
    ) -> anyhow::Result<Counted> {
        let Some(mut connection) = lock(&self.connection).clone() else {
            anyhow::bail!("not connected");
        };
        let no_answer = || anyhow::anyhow!("no answer within {} ms", self.timeout.as_millis());
        let mut pipeline = redis::pipe();
        pipeline
            .incr(key, 1)
            .cmd("PEXPIRE")
            .arg(key)
            .arg(millis(window))
            .arg("NX")
            .ignore();
        let (count,): (i64,) =
            tokio::time::timeout(self.timeout, pipeline.query_async(&mut connection))
                .await
                .map_err(|_| no_answer())??;
        let count = u64::try_from(count).unwrap_or(0);
        let remaining = if count <= u64::from(allowed) {
            // Not refused: `Retry-After` is not needed.
            window
        } else if count == u64::from(allowed) + 1 && !cooldown.is_zero() {
            // The first refused request: the counter lives on for the cool-down, from now.
            let _: i64 = tokio::time::timeout(
                self.timeout,
                redis::cmd("PEXPIRE")
                    .arg(key)
                    .arg(millis(cooldown))
                    .query_async(&mut connection),
            )
            .await
            .map_err(|_| no_answer())??;
            cooldown
        } else {
            let remaining_ms: i64 = tokio::time::timeout(
                self.timeout,
                redis::cmd("PTTL").arg(key).query_async(&mut connection),
            )
            .await
            .map_err(|_| no_answer())??;
            if remaining_ms == -1 {
                // A counter without a life (set by hand?) would refuse forever: give it one.
                let _: i64 = tokio::time::timeout(
                    self.timeout,
                    redis::cmd("PEXPIRE")
                        .arg(key)
                        .arg(millis(window))
                        .arg("NX")
                        .query_async(&mut connection),
                )
                .await
                .map_err(|_| no_answer())??;
            }
            // Negative: the counter just expired (a new window has begun) or had no life.
            u64::try_from(remaining_ms).map_or(window, Duration::from_millis)
        };
        Ok(Counted { count, remaining })
    }

    /// Connects if not yet connected, and pings.
    async fn probe(&self) -> anyhow::Result<()> {
        // Long enough for a Redis across a network; the probe runs in the background.
        let patience = self.timeout.max(Duration::from_millis(500));
        let existing = lock(&self.connection).clone();
        let mut connection = match existing {
            Some(connection) => connection,
            None => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(patience)
                    .set_response_timeout(patience)
                    .set_number_of_retries(1);
                let connection = tokio::time::timeout(
                    patience * 3,
                    ConnectionManager::new_with_config(self.client.clone(), config),
                )
                .await
                .map_err(|_| {
                    anyhow::anyhow!("no connection within {} ms", (patience * 3).as_millis())
                })??;
                *lock(&self.connection) = Some(connection.clone());
                connection
            }
        };
        let pong: String =
            tokio::time::timeout(patience, redis::cmd("PING").query_async(&mut connection))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("no answer to PING within {} ms", patience.as_millis())
                })??;
        anyhow::ensure!(pong == "PONG", "PING answered `{pong}`");
        Ok(())
    }

    /// Redis failed to answer: count per process from now on, and say so once an outage.
    /// Marks Redis unreachable; true when that is news (the switch to counting here).
    fn lost(&self, error: &anyhow::Error) -> bool {
        self.reachable.store(false, Ordering::Release);
        let mut since = lock(&self.unreachable_since);
        if since.is_some() {
            return false;
        }
        *since = Some(Utc::now());
        tracing::warn!(
            error = format!("{error:#}"),
            "Redis does not answer: each server process now enforces the rate limits on its own until it does"
        );
        true
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(failed_auths: u32, writes: u32) -> RateLimitSettings {
        RateLimitSettings {
            failed_auths,
            failed_auth_window: Duration::from_secs(60),
            failed_auth_cooldown: Duration::from_secs(300),
            writes,
            writes_window: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn the_writes_past_the_limit_are_refused_with_the_rest_of_the_window() {
        let limiter = RateLimiter::per_process(settings(0, 2));
        assert!(limiter.write("t_a").await.is_ok());
        assert!(limiter.write("t_a").await.is_ok());
        let refused = limiter.write("t_a").await.expect_err("third write refused");
        assert_eq!(refused.limit, Limit::Writes);
        assert!(refused.retry_after <= Duration::from_secs(60));
        assert!(refused.retry_after >= Duration::from_secs(1));
        assert!(
            limiter.write("t_b").await.is_ok(),
            "another token counts apart"
        );
    }

    #[tokio::test]
    async fn failed_authentications_past_the_limit_start_the_cool_down() {
        let limiter = RateLimiter::per_process(settings(1, 0));
        let address: IpAddr = "10.0.0.7".parse().expect("address");
        assert!(limiter.failed_authentication(address).await.is_ok());
        let refused = limiter
            .failed_authentication(address)
            .await
            .expect_err("second failure refused");
        assert_eq!(refused.limit, Limit::FailedAuthentications);
        assert!(
            refused.retry_after > Duration::from_secs(60),
            "the cool-down (300 s), not the window: {:?}",
            refused.retry_after
        );
    }

    /// A second outage starts its counts afresh: a cool-down counted here during the first
    /// one does not come back with the second.
    #[tokio::test]
    async fn each_switch_to_counting_in_the_process_starts_afresh() {
        // Nothing listens on port 1: Redis is unreachable from the start.
        let limiter = RateLimiter::shared(
            settings(1, 0),
            "redis://127.0.0.1:1",
            Duration::from_millis(50),
        )
        .await
        .expect("a well-formed URL");
        let address: IpAddr = "10.0.0.8".parse().expect("address");
        assert!(limiter.failed_authentication(address).await.is_ok());
        assert!(
            limiter.failed_authentication(address).await.is_err(),
            "the first outage's cool-down"
        );
        // Redis came back (as the probe would find) and then went away again.
        let shared = limiter.0.shared.as_ref().expect("shared");
        lock(&shared.unreachable_since).take();
        shared.reachable.store(true, Ordering::Release);

        assert!(
            limiter.failed_authentication(address).await.is_ok(),
            "the second outage counts from zero"
        );
        assert_eq!(limiter.status().store, RateLimitStore::Process);
    }

    #[tokio::test]
    async fn a_zero_limit_is_off() {
        let limiter = RateLimiter::per_process(settings(0, 0));
        for _ in 0..100 {
            assert!(limiter.write("t_a").await.is_ok());
        }
        assert_eq!(limiter.status().store, RateLimitStore::Process);
    }
}
