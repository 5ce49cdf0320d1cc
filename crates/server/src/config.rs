//! `bldst server`'s configuration: every setting is a flag that can also be given through the
//! environment, and its default is written once, on the flag.
//!
//! [`ServerConfig::for_database`] (tests and tools) takes the same defaults from the flags
//! rather than from a second list, and the `Debug` output leaves out every secret, so the
//! configuration can be logged.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ratelimit::RateLimitSettings;
use crate::secrets::TokenHasher;
use crate::serving::Limits;

/// The token-hashing key used when `SECRET_KEY` is unset (development only; logged as such).
const DEVELOPMENT_SECRET_KEY: &str = "buildstate-development-key";

/// `bldst server`: flags, each also read from the environment.
#[derive(Clone, clap::Args)]
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
    #[arg(long, env = "BUILDSTATE_LEASE_SECS",
          default_value_t = buildstate_domain::DEFAULT_LEASE_DURATION.as_secs_f64(),
          value_parser = parse_lease_secs)]
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
          value_parser = rate_limit_secs())]
    pub rate_limit_failed_auth_window_secs: u64,
    /// How long, in seconds, an address over `--rate-limit-failed-auths` has its failing
    /// attempts answered 429 (a valid token is still served).
    #[arg(long, env = "BUILDSTATE_RATE_LIMIT_FAILED_AUTH_COOLDOWN_SECS", default_value_t = 300,
          value_parser = rate_limit_secs())]
    pub rate_limit_failed_auth_cooldown_secs: u64,
    /// Writes (POST, PUT, PATCH, DELETE) one token may make per window; 0: no limit.
    #[arg(long, env = "BUILDSTATE_RATE_LIMIT_WRITES", default_value_t = 3000)]
    pub rate_limit_writes: u32,
    /// The window of `--rate-limit-writes`, in seconds.
    #[arg(long, env = "BUILDSTATE_RATE_LIMIT_WRITES_WINDOW_SECS", default_value_t = 60,
          value_parser = rate_limit_secs())]
    pub rate_limit_writes_window_secs: u64,
    /// Behind a proxy or load balancer: the header it puts the client's address in (e.g.
    /// `X-Forwarded-For`; its last entry is used). Unset: the connection's address. Set it only
    /// when every request comes through that proxy, or clients could claim any address.
    #[arg(long, env = "BUILDSTATE_CLIENT_ADDRESS_HEADER", value_name = "HEADER",
          value_parser = parse_header_name)]
    pub client_address_header: Option<axum::http::HeaderName>,
    /// How often, in milliseconds, this process looks for failed builds whose backoff has
    /// ended and records their `retry_due` entry (each at most this long after it is due);
    /// 0: never (retries then wait for a client to make them).
    #[arg(long, env = "BUILDSTATE_RETRY_CHECK_MILLIS",
          default_value_t = crate::retries::DEFAULT_RETRY_CHECK_MILLIS,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub retry_check_millis: u64,
}

/// The seconds of a rate limit's window or cool-down: at least 1, at most a day.
fn rate_limit_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=86_400)
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
pub(crate) fn lease_duration(secs: f64) -> Result<Duration, String> {
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
    /// The flags' defaults, for a database URL (as tests and tools build it), listening on a
    /// port the system picks. Nothing is read from the environment.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        const NAME: &str = "bldst-server";
        // The defaults live on the flags: parse an empty command line with the environment
        // turned off, rather than keep a second list that could drift from the first.
        let command = <Self as clap::Args>::augment_args(clap::Command::new(NAME))
            .mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from([NAME, "--listen", "127.0.0.1:0"])
            .expect("every server flag has a default or is optional");
        let mut config = <Self as clap::FromArgMatches>::from_arg_matches(&matches)
            .expect("the defaults are valid settings");
        config.database_url = database_url.into();
        config
    }

    /// The rate limits these flags set.
    pub fn rate_limit_settings(&self) -> RateLimitSettings {
        RateLimitSettings {
            failed_auths: self.rate_limit_failed_auths,
            failed_auth_window: Duration::from_secs(self.rate_limit_failed_auth_window_secs),
            failed_auth_cooldown: Duration::from_secs(self.rate_limit_failed_auth_cooldown_secs),
            writes: self.rate_limit_writes,
            writes_window: Duration::from_secs(self.rate_limit_writes_window_secs),
        }
    }

    /// The per-client limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body_bytes: self.max_body_bytes,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            max_connections: self.max_connections,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
        }
    }

    /// What hashes API tokens: `SECRET_KEY`, or a built-in development key (logged as such).
    /// A `SECRET_KEY` shorter than [`crate::secrets::MIN_SECRET_KEY_BYTES`] is refused.
    pub(crate) fn hasher(&self) -> anyhow::Result<TokenHasher> {
        match &self.secret_key {
            Some(key) if !key.is_empty() => {
                crate::secrets::check_secret_key(key).map_err(anyhow::Error::msg)?;
                Ok(TokenHasher::new(key))
            }
            _ => {
                tracing::warn!("SECRET_KEY is not set: API tokens are hashed with a built-in development key; set SECRET_KEY in production");
                Ok(TokenHasher::new(DEVELOPMENT_SECRET_KEY))
            }
        }
    }
}

/// A URL as it may be shown: without its password and query (where a password can hide too);
/// one that does not parse is not shown at all.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("redacted"));
            }
            url.set_query(None);
            url.to_string()
        }
        Err(_) => "[not shown]".to_owned(),
    }
}

/// Every setting but the secrets: `SECRET_KEY` is only said to be set, and the URLs lose their
/// passwords. Written out field by field (the destructuring makes a new field a compile error
/// here until it is decided whether it may be shown).
impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ServerConfig {
            database_url,
            listen,
            secret_key,
            max_retries,
            backoff_base_secs,
            backoff_cap_secs,
            state_names,
            idempotency_ttl_secs,
            token_cache_millis,
            tls_cert,
            tls_key,
            max_body_bytes,
            header_read_timeout_secs,
            request_timeout_secs,
            max_connections,
            idle_timeout_secs,
            max_streams,
            max_streams_per_token,
            lease_secs,
            database_max_connections,
            stuck_after_secs,
            stuck_after_by_code,
            webhooks_file,
            stuck_check_secs,
            webhook_retry_base_millis,
            redis_url,
            redis_timeout_millis,
            rate_limit_failed_auths,
            rate_limit_failed_auth_window_secs,
            rate_limit_failed_auth_cooldown_secs,
            rate_limit_writes,
            rate_limit_writes_window_secs,
            client_address_header,
            retry_check_millis,
        } = self;
        let secret_key =
            secret_key
                .as_deref()
                .map(|key| if key.is_empty() { "[empty]" } else { "[set]" });
        f.debug_struct("ServerConfig")
            .field("database_url", &shown_url(database_url))
            .field("listen", listen)
            .field("secret_key", &secret_key)
            .field("max_retries", max_retries)
            .field("backoff_base_secs", backoff_base_secs)
            .field("backoff_cap_secs", backoff_cap_secs)
            .field("state_names", state_names)
            .field("idempotency_ttl_secs", idempotency_ttl_secs)
            .field("token_cache_millis", token_cache_millis)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("max_body_bytes", max_body_bytes)
            .field("header_read_timeout_secs", header_read_timeout_secs)
            .field("request_timeout_secs", request_timeout_secs)
            .field("max_connections", max_connections)
            .field("idle_timeout_secs", idle_timeout_secs)
            .field("max_streams", max_streams)
            .field("max_streams_per_token", max_streams_per_token)
            .field("lease_secs", lease_secs)
            .field("database_max_connections", database_max_connections)
            .field("stuck_after_secs", stuck_after_secs)
            .field("stuck_after_by_code", stuck_after_by_code)
            .field("webhooks_file", webhooks_file)
            .field("stuck_check_secs", stuck_check_secs)
            .field("webhook_retry_base_millis", webhook_retry_base_millis)
            .field("redis_url", &redis_url.as_deref().map(shown_url))
            .field("redis_timeout_millis", redis_timeout_millis)
            .field("rate_limit_failed_auths", rate_limit_failed_auths)
            .field(
                "rate_limit_failed_auth_window_secs",
                rate_limit_failed_auth_window_secs,
            )
            .field(
                "rate_limit_failed_auth_cooldown_secs",
                rate_limit_failed_auth_cooldown_secs,
            )
            .field("rate_limit_writes", rate_limit_writes)
            .field(
                "rate_limit_writes_window_secs",
                rate_limit_writes_window_secs,
            )
            .field("client_address_header", client_address_header)
            .field("retry_check_millis", retry_check_millis)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_for_a_database_are_the_flags_defaults() {
        let config = ServerConfig::for_database("sqlite://defaults.db");
        assert_eq!(config.database_url, "sqlite://defaults.db");
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(config.secret_key, None);
        assert_eq!(config.max_retries, 3);
        assert_eq!(config.backoff_base_secs, 30);
        assert_eq!(config.idempotency_ttl_secs, 86_400);
        assert_eq!(config.token_cache_millis, 1000);
        assert_eq!(config.max_body_bytes, 65_536);
        assert_eq!(
            config.lease_secs,
            buildstate_domain::DEFAULT_LEASE_DURATION.as_secs_f64()
        );
        assert_eq!(
            config.database_max_connections,
            DEFAULT_DATABASE_MAX_CONNECTIONS
        );
        assert_eq!(config.stuck_after_secs, 3600);
        assert_eq!(config.rate_limit_writes, 3000);
        assert_eq!(config.client_address_header, None);
        assert_eq!(
            config.retry_check_millis,
            crate::retries::DEFAULT_RETRY_CHECK_MILLIS
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut config = ServerConfig::for_database(
            "postgres://buildstate:db-password@db:5432/bst?password=q-password",
        );
        config.secret_key = Some("the-secret-key".to_owned());
        config.redis_url = Some("redis://:redis-password@cache:6379/0".to_owned());
        let shown = format!("{config:?}");
        for secret in [
            "db-password",
            "q-password",
            "the-secret-key",
            "redis-password",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(
            shown.contains("postgres://buildstate:redacted@db:5432/bst"),
            "{shown}"
        );
        assert!(shown.contains("redis://:redacted@cache:6379/0"), "{shown}");
        assert!(shown.contains("secret_key: Some(\"[set]\")"), "{shown}");
        assert!(shown.contains("max_retries: 3"), "{shown}");
    }
}
