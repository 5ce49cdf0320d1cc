//! The typed REST client of the buildstate API, used by the CLI, the Concourse resource and the
//! GitHub Action.
//!
//! Every call has a timeout. Connection failures, 429 (honouring `Retry-After`, unless it asks
//! for more than [`MAX_RETRY_WAIT`]), 502, 503 and 504 are retried a bounded number of times
//! with exponential backoff; other 4xx never are.
//! Reports carry an `Idempotency-Key` that stays the same across retries, so a retried report
//! is applied at most once. Error answers are parsed back from the JSON envelope into
//! [`ClientError::Api`], whose message is the server's sentence.

use std::sync::Arc;
use std::time::{Duration, Instant};

use buildstate_domain::reports::{
    DurationReport, FailureReport, RecoveryReport, StuckReport, SuccessReport,
};
pub use buildstate_domain::wire::BuildQuery;
use buildstate_domain::wire::{
    Build, BuildPage, CreateToken, CreateUser, CreatedToken, ErrorBody, ErrorCode, GateAnswer,
    Health, HistoryPage, HistoryQuery, LeaseRequest, OperatorReason, ReportTransition, ResetBuild,
    StartBuild, StartedBuild, StatusOverview, TokenInfo, TransitionResult, User, Whoami,
};
use buildstate_domain::{BuildId, Lease, StageOutput, StateCode};
use futures_util::future::BoxFuture;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How to reach the server.
#[derive(Clone)]
pub struct ClientConfig {
    /// e.g. `http://127.0.0.1:8000`
    pub base_url: String,
    pub token: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// The first retry's wait; it doubles each time, at most [`MAX_RETRY_WAIT`].
    pub retry_base: Duration,
    /// PEM certificates trusted beside the built-in and system roots (a private CA).
    pub extra_root_pem: Option<Vec<u8>>,
    /// Proxies to use; `None` follows the process's `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.
    pub proxies: Option<Proxies>,
    /// Told one sentence before each retry, e.g. to log it; never sees the token.
    pub on_retry: Option<RetryLog>,
    /// Waits between two attempts: `tokio::time::sleep`, unless a test records the waits.
    pub sleep: Sleeper,
    /// Send the token over plain `http://` to a host other than this machine: anyone on the
    /// network path could read it. Off unless a person says so (`--allow-insecure`,
    /// [`ALLOW_INSECURE_VAR`]).
    pub allow_insecure: bool,
}

/// The environment variable that allows a token over plain `http://` (`1` or `true`).
pub const ALLOW_INSECURE_VAR: &str = "BUILDSTATE_ALLOW_INSECURE";

/// Whether `env` allows a token over plain `http://` to another host.
pub fn allow_insecure_from_env(env: crate::env::EnvLookup<'_>) -> bool {
    env(ALLOW_INSECURE_VAR).is_some_and(|value| {
        let value = value.trim();
        value == "1" || value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("yes")
    })
}

/// Receives a sentence about each retry.
pub type RetryLog = Arc<dyn Fn(&str) + Send + Sync>;

/// Waits the given time between two attempts.
pub type Sleeper = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// Proxies as the standard variables name them, for callers that pass the environment in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// `http_proxy`/`HTTP_PROXY`: for `http://` URLs.
    pub http: Option<String>,
    /// `https_proxy`/`HTTPS_PROXY`: for `https://` URLs.
    pub https: Option<String>,
    /// `no_proxy`/`NO_PROXY`: hosts reached directly.
    pub no_proxy: Option<String>,
}

impl Proxies {
    /// The proxies `env` names; the lower-case spelling wins, as in curl.
    pub fn from_env(env: crate::env::EnvLookup<'_>) -> Proxies {
        let either = |name: &str| env(name).or_else(|| env(&name.to_ascii_uppercase()));
        Proxies {
            http: either("http_proxy"),
            https: either("https_proxy"),
            no_proxy: either("no_proxy"),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("extra_root_pem", &self.extra_root_pem.is_some())
            .field("proxies", &self.proxies)
            .field("allow_insecure", &self.allow_insecure)
            .finish()
    }
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, token: Option<String>) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            token,
            timeout: Duration::from_secs(30),
            max_attempts: 4,
            retry_base: Duration::from_millis(250),
            extra_root_pem: None,
            proxies: None,
            on_retry: None,
            sleep: Arc::new(|wait| Box::pin(tokio::time::sleep(wait))),
            allow_insecure: false,
        }
    }
}

/// The host a token would reach over plain `http://` when `base_url` names another machine:
/// a bearer token over plain HTTP is readable by anyone on the way, and only this machine
/// (`localhost`, 127.0.0.0/8, `::1`) is safe to reach that way. `None` for `https://`, for
/// loopback, and for what is no URL (refused elsewhere). Front ends warn with it when their
/// user opted in.
pub fn insecure_host(base_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(base_url).ok()?;
    if url.scheme() != "http" {
        return None;
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    };
    (!loopback).then(|| url.host_str().unwrap_or_default().to_owned())
}

fn refuse_plain_http_to_another_host(base_url: &str) -> Result<()> {
    reqwest::Url::parse(base_url).map_err(|error| {
        ClientError::Config(format!("the API URL `{base_url}` is not a URL: {error}"))
    })?;
    match insecure_host(base_url) {
        Some(host) => Err(ClientError::Insecure { host }),
        None => Ok(()),
    }
}

/// The longest wait between two attempts. A `Retry-After` asking for longer ends the retries:
/// the call fails at once with the server's answer.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error envelope.
    #[error("{message}")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
        field: Option<String>,
        details: Option<serde_json::Value>,
    },
    /// No answer after every attempt.
    #[error("cannot reach the buildstate server at {url} after {attempts} attempt(s): {cause}")]
    Unreachable {
        url: String,
        attempts: u32,
        cause: String,
    },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from {url} (HTTP {status}): {detail}")]
    Protocol {
        url: String,
        status: u16,
        detail: String,
    },
    /// The client could not be set up.
    #[error("{0}")]
    Config(String),
    /// A token would go over plain `http://` to another machine and nobody opted in. How to
    /// opt in differs per front end (`failure::Hints::allow_insecure`).
    #[error(
        "refusing to send the API token over plain http:// to `{host}`: anyone on the network \
         path could read it and act as you"
    )]
    Insecure { host: String },
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The stable error code of an API error (`build_not_found`, `stage_already_completed`…).
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// No query string.
const NO_QUERY: &[(&str, String)] = &[];

/// The query string of a report's window.
fn window_pairs(days: Option<u32>) -> Vec<(&'static str, String)> {
    days.map(|days| vec![("days", days.to_string())])
        .unwrap_or_default()
}

/// A buildstate API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    config: ClientConfig,
}

type Result<T> = std::result::Result<T, ClientError>;

impl Client {
    pub fn new(mut config: ClientConfig) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "the API URL `{}` must start with http:// or https://",
                config.base_url
            )));
        }
        if config.token.is_some() && !config.allow_insecure {
            refuse_plain_http_to_another_host(&base)?;
        }
        config.base_url = base;
        config.max_attempts = config.max_attempts.max(1);
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("bldst/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.extra_root_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|error| {
                ClientError::Config(format!("the CA certificates are not valid PEM: {error}"))
            })?;
            if certificates.is_empty() {
                return Err(ClientError::Config(
                    "the CA certificates hold no PEM certificate".to_owned(),
                ));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(proxies) = &config.proxies {
            builder = with_proxies(builder.no_proxy(), proxies)?;
        }
        if !may_use_tls(&config.base_url, config.proxies.as_ref(), &|name| {
            std::env::var(name).ok()
        }) {
            builder = without_tls_roots(builder);
        }
        let http = builder
            .build()
            .map_err(|error| ClientError::Config(format!("cannot set up HTTP: {error}")))?;
        Ok(Client { http, config })
    }

    pub fn base_url(&self) -> &str {
        &self.config.base_url
    }

    // ----- builds -------------------------------------------------------------------------

    /// Starts a build, or resumes the unfinished one with the same key.
    pub async fn start_build(&self, request: &StartBuild) -> Result<StartedBuild> {
        self.send(Method::POST, "/builds", Some(request), NO_QUERY, None)
            .await
    }

    pub async fn get_build(&self, id: &BuildId) -> Result<Build> {
        self.send::<(), _>(Method::GET, &format!("/builds/{id}"), None, NO_QUERY, None)
            .await
    }

    pub async fn list_builds(&self, query: &BuildQuery) -> Result<BuildPage> {
        // The wire type serialized, as the server deserializes it: the parameters cannot
        // drift from its fields.
        self.send::<(), _>(Method::GET, "/builds", None, query, None)
            .await
    }

    /// Reports a transition. `idempotency_key` defaults to a fresh random key; pass your own to
    /// make a report safe to repeat across processes (e.g. a CI step that is re-run).
    pub async fn report_transition(
        &self,
        id: &BuildId,
        report: &ReportTransition,
        idempotency_key: Option<&str>,
    ) -> Result<TransitionResult> {
        let generated;
        let key = match idempotency_key {
            Some(key) => key,
            None => {
                generated = new_idempotency_key();
                &generated
            }
        };
        self.send(
            Method::POST,
            &format!("/builds/{id}/transitions"),
            Some(report),
            NO_QUERY,
            Some(key),
        )
        .await
    }

    /// History entries after `after` (0: from the start), at most `limit` (the server's
    /// default if `None`).
    pub async fn history_page(&self, id: &BuildId, query: &HistoryQuery) -> Result<HistoryPage> {
        let mut pairs = Vec::new();
        if let Some(after) = query.after {
            pairs.push(("after", after.to_string()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit", limit.to_string()));
        }
        self.send::<(), _>(
            Method::GET,
            &format!("/builds/{id}/history"),
            None,
            &pairs,
            None,
        )
        .await
    }

    /// History entries with `seq > after`, at most `limit`.
    pub async fn history(&self, id: &BuildId, after: i64, limit: u32) -> Result<HistoryPage> {
        let query = HistoryQuery {
            after: Some(after),
            limit: Some(limit),
        };
        self.history_page(id, &query).await
    }

    pub async fn gate(&self, id: &BuildId, stage: StateCode) -> Result<GateAnswer> {
        self.gate_for_run(id, stage, None).await
    }

    /// The gate for `stage`, asked by run `run` (the identity its reports send): the run that
    /// holds the stage's lease gets `run`, every other run `wait` while the lease lasts.
    pub async fn gate_for_run(
        &self,
        id: &BuildId,
        stage: StateCode,
        run: Option<&str>,
    ) -> Result<GateAnswer> {
        let mut pairs = vec![("state", stage.to_string())];
        if let Some(run) = run {
            pairs.push(("run", run.to_owned()));
        }
        self.send::<(), _>(
            Method::GET,
            &format!("/builds/{id}/gate"),
            None,
            &pairs,
            None,
        )
        .await
    }

    /// Extends the lease the run holds on `request.state` (a heartbeat). A lost answer is not
    /// sent again: the next heartbeat is the retry.
    pub async fn heartbeat(&self, id: &BuildId, request: &LeaseRequest) -> Result<Lease> {
        self.send(
            Method::POST,
            &format!("/builds/{id}/heartbeat"),
            Some(request),
            NO_QUERY,
            None,
        )
        .await
    }

    /// Gives the lease on `request.state` up without reporting on the stage.
    pub async fn release(&self, id: &BuildId, request: &LeaseRequest) -> Result<Build> {
        self.send(
            Method::POST,
            &format!("/builds/{id}/release"),
            Some(request),
            NO_QUERY,
            None,
        )
        .await
    }

    /// The build's merged outputs: every key once, with the stage that set it.
    pub async fn outputs(
        &self,
        id: &BuildId,
    ) -> Result<std::collections::BTreeMap<String, StageOutput>> {
        Ok(self.get_build(id).await?.outputs)
    }

    pub async fn retry_build(&self, id: &BuildId, reason: &str) -> Result<TransitionResult> {
        let body = OperatorReason {
            reason: reason.to_owned(),
        };
        self.send(
            Method::POST,
            &format!("/builds/{id}/retry"),
            Some(&body),
            NO_QUERY,
            None,
        )
        .await
    }

    pub async fn reset_build(
        &self,
        id: &BuildId,
        state: StateCode,
        reason: &str,
    ) -> Result<TransitionResult> {
        let body = ResetBuild {
            state,
            reason: reason.to_owned(),
        };
        self.send(
            Method::POST,
            &format!("/builds/{id}/reset"),
            Some(&body),
            NO_QUERY,
            None,
        )
        .await
    }

    pub async fn cancel_build(&self, id: &BuildId, reason: &str) -> Result<TransitionResult> {
        let body = OperatorReason {
            reason: reason.to_owned(),
        };
        self.send(
            Method::POST,
            &format!("/builds/{id}/cancel"),
            Some(&body),
            NO_QUERY,
            None,
        )
        .await
    }

    // ----- reports ------------------------------------------------------------------------

    /// Success rate by platform and by image type over builds started in the last `days` (the
    /// server's default window, 7 days, when `None`).
    pub async fn success_report(&self, days: Option<u32>) -> Result<SuccessReport> {
        self.report("/reports/success", &window_pairs(days)).await
    }

    /// Failures, builds and retries by stage code in the window.
    pub async fn failure_report(&self, days: Option<u32>) -> Result<FailureReport> {
        self.report("/reports/failures", &window_pairs(days)).await
    }

    /// Stage durations (p50, p90, max) per code over completions in the window.
    pub async fn duration_report(&self, days: Option<u32>) -> Result<DurationReport> {
        self.report("/reports/durations", &window_pairs(days)).await
    }

    /// Stuck and blocked builds. `after_secs` and `after_by_code` (`CODE=SECONDS` pairs
    /// separated by `,`) replace the server's configured thresholds when given.
    pub async fn stuck_report(
        &self,
        after_secs: Option<u64>,
        after_by_code: Option<&str>,
    ) -> Result<StuckReport> {
        let mut pairs = Vec::new();
        if let Some(secs) = after_secs {
            pairs.push(("after_secs", secs.to_string()));
        }
        if let Some(by_code) = after_by_code {
            pairs.push(("after_by_code", by_code.to_owned()));
        }
        self.report("/reports/stuck", &pairs).await
    }

    /// Time to recover from a stage's first failure, per code and overall, in the window.
    pub async fn recovery_report(&self, days: Option<u32>) -> Result<RecoveryReport> {
        self.report("/reports/recovery", &window_pairs(days)).await
    }

    /// What resuming saved over resumes in the window.
    pub async fn savings_report(
        &self,
        days: Option<u32>,
    ) -> Result<buildstate_domain::resumes::SavingsReport> {
        self.report("/reports/savings", &window_pairs(days)).await
    }

    async fn report<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        self.send::<(), _>(Method::GET, path, None, query, None)
            .await
    }

    // ----- events -------------------------------------------------------------------------

    /// The configuration this client was made with (the follow loop reads its retry policy).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    // ----- accounts and health ------------------------------------------------------------

    pub async fn create_user(&self, request: &CreateUser) -> Result<User> {
        self.send(Method::POST, "/users", Some(request), NO_QUERY, None)
            .await
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        self.send::<(), _>(Method::GET, "/users", None, NO_QUERY, None)
            .await
    }

    pub async fn create_token(&self, request: &CreateToken) -> Result<CreatedToken> {
        self.send(Method::POST, "/tokens", Some(request), NO_QUERY, None)
            .await
    }

    pub async fn list_tokens(&self, username: Option<&str>) -> Result<Vec<TokenInfo>> {
        let pairs: Vec<(&str, String)> = username
            .map(|name| vec![("username", name.to_owned())])
            .unwrap_or_default();
        self.send::<(), _>(Method::GET, "/tokens", None, &pairs, None)
            .await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo> {
        self.send::<(), _>(
            Method::DELETE,
            &format!("/tokens/{id}"),
            None,
            NO_QUERY,
            None,
        )
        .await
    }

    pub async fn whoami(&self) -> Result<Whoami> {
        self.send::<(), _>(Method::GET, "/auth/whoami", None, NO_QUERY, None)
            .await
    }

    pub async fn health(&self) -> Result<Health> {
        self.send::<(), _>(Method::GET, "/health", None, NO_QUERY, None)
            .await
    }

    pub async fn status(&self) -> Result<StatusOverview> {
        self.send::<(), _>(Method::GET, "/status", None, NO_QUERY, None)
            .await
    }

    // ----- transport ----------------------------------------------------------------------

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        query: &(impl Serialize + ?Sized),
        idempotency_key: Option<&str>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.config.base_url);
        // A request whose answer was lost may have been applied: only reads and requests with
        // an idempotency key are sent again after a 502, a 504 or a timeout.
        let repeatable = method == Method::GET || idempotency_key.is_some();
        let response = self
            .send_retrying(&method, path, repeatable, || {
                let mut request: RequestBuilder = self.http.request(method.clone(), &url);
                // An empty query leaves the URL without `?` (reqwest drops it).
                request = request.query(query);
                if let Some(token) = &self.config.token {
                    request = request.bearer_auth(token);
                }
                if let Some(key) = idempotency_key {
                    request = request.header("Idempotency-Key", key);
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                request
            })
            .await?;
        read_answer(&url, response).await
    }

    /// The one retry loop of every call: sends the request `build` makes until an answer is
    /// final, and returns it (a success, or an error answer for the caller to read). 429 and
    /// 503 are tried again, and 502, 504 and timeouts too when the request is `repeatable`;
    /// each wait is the server's `Retry-After` when it sends one (an answer asking for more
    /// than [`MAX_RETRY_WAIT`] is final), else an exponential backoff. A server that never
    /// answers is [`ClientError::Unreachable`] after `max_attempts`.
    pub(crate) async fn send_retrying(
        &self,
        method: &Method,
        path: &str,
        repeatable: bool,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{path}", self.config.base_url);
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let outcome = build().send().await;
            let retry_after = match outcome {
                Ok(response) => {
                    let status = response.status();
                    tracing::debug!(
                        target: "bldst::http",
                        "{method} {url} -> {} in {:?} (attempt {attempt})",
                        status.as_u16(),
                        started.elapsed()
                    );
                    if !is_retryable(status, repeatable) || attempt >= self.config.max_attempts {
                        return Ok(response);
                    }
                    let retry_after = retry_after_header(&response);
                    // Asked to wait longer than this client ever waits: a retry sooner would be
                    // refused again, so the server's answer (which says how long) is final.
                    if retry_after.is_some_and(|wait| wait > MAX_RETRY_WAIT) {
                        return Ok(response);
                    }
                    retry_after
                }
                Err(error) => {
                    tracing::debug!(
                        target: "bldst::http",
                        "{method} {url} -> no answer in {:?} (attempt {attempt}): {error}",
                        started.elapsed()
                    );
                    let safe = error.is_connect() || (repeatable && error.is_timeout());
                    if !safe || attempt >= self.config.max_attempts {
                        return Err(ClientError::Unreachable {
                            url: self.config.base_url.clone(),
                            attempts: attempt,
                            cause: error_chain(&error),
                        });
                    }
                    None
                }
            };
            if let Some(log) = &self.config.on_retry {
                let why = match retry_after {
                    Some(_) => "the server asked to retry later",
                    None => "no usable answer",
                };
                log(&format!(
                    "{method} {path}: {why} (attempt {attempt} of {}); retrying",
                    self.config.max_attempts
                ));
            }
            let backoff = self
                .config
                .retry_base
                .saturating_mul(1 << (attempt - 1).min(16));
            let wait = retry_after.unwrap_or(backoff).min(MAX_RETRY_WAIT);
            (self.config.sleep)(wait).await;
            attempt += 1;
        }
    }
}

/// Whether a client for `base` may open a TLS connection: to the server, or to a proxy reached
/// over `https://`. Without `proxies` of its own a client uses the ones the process's
/// environment names (reqwest reads them: `env` is that environment).
fn may_use_tls(
    base: &str,
    proxies: Option<&Proxies>,
    env: &dyn Fn(&str) -> Option<String>,
) -> bool {
    let is_https = |url: &str| {
        url.get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    };
    let proxy_urls: Vec<String> = match proxies {
        Some(proxies) => [&proxies.http, &proxies.https]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
        None => REQWEST_PROXY_VARIABLES
            .iter()
            .filter_map(|name| env(name))
            .collect(),
    };
    is_https(base) || proxy_urls.iter().any(|url| is_https(url))
}

/// The variables reqwest takes a client's proxies from when it is given none.
const REQWEST_PROXY_VARIABLES: [&str; 6] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// A client that never opens TLS need not load the system's root certificates: reading and
/// parsing the bundle and every file of /etc/ssl/certs was the largest part of a short
/// command's CPU against an `http://` server (BENCHMARKS.md, "`bldst build run`: the per-stage
/// overhead"). A redirect to `https://` is then not followed (the 3xx answer is reported as
/// it is), instead of failing on a certificate no root could verify.
fn without_tls_roots(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().scheme() == "https" {
                attempt.stop()
            } else if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }))
}

/// reqwest's default limit, kept by [`without_tls_roots`]'s policy.
const MAX_REDIRECTS: usize = 10;

/// Routes `http://` and `https://` requests through the named proxies, except `no_proxy` hosts.
fn with_proxies(
    mut builder: reqwest::ClientBuilder,
    proxies: &Proxies,
) -> Result<reqwest::ClientBuilder> {
    let no_proxy = proxies
        .no_proxy
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    let invalid = |which: &str, error: reqwest::Error| {
        ClientError::Config(format!("the {which} proxy URL is not valid: {error}"))
    };
    if let Some(url) = &proxies.http {
        let proxy = reqwest::Proxy::http(url).map_err(|error| invalid("HTTP", error))?;
        builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
    }
    if let Some(url) = &proxies.https {
        let proxy = reqwest::Proxy::https(url).map_err(|error| invalid("HTTPS", error))?;
        builder = builder.proxy(proxy.no_proxy(no_proxy));
    }
    Ok(builder)
}

/// 429 and 503 mean the request was not handled; 502 and 504 leave it unknown.
fn is_retryable(status: StatusCode, repeatable: bool) -> bool {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => true,
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => repeatable,
        _ => false,
    }
}

fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

pub(crate) async fn read_answer<T: DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|error| ClientError::Protocol {
            url: url.to_owned(),
            status: status.as_u16(),
            detail: format!("the body could not be read: {error}"),
        })?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|error| ClientError::Protocol {
            url: url.to_owned(),
            status: status.as_u16(),
            detail: format!("the body is not the documented JSON: {error}"),
        });
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(ErrorBody { error }) => Err(ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
            field: error.field,
            details: error.details,
        }),
        Err(_) => Err(ClientError::Protocol {
            url: url.to_owned(),
            status: status.as_u16(),
            detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        }),
    }
}

/// Where a person reads build `id` on the server at `api_url`: its page in the dashboard the
/// server serves (`/dashboard/`, which asks for the token itself; the JSON API's
/// `/builds/{id}` would answer a browser 401).
pub fn dashboard_url(api_url: &str, id: &BuildId) -> String {
    format!("{}/dashboard/#/builds/{id}", api_url.trim_end_matches('/'))
}

/// A fresh random idempotency key.
pub fn new_idempotency_key() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "bldst-{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
    )
}

/// The error and its causes, on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod insecure_tests {
    use super::*;

    fn client(url: &str, token: Option<&str>, allow_insecure: bool) -> Result<Client> {
        let mut config = ClientConfig::new(url, token.map(str::to_owned));
        config.allow_insecure = allow_insecure;
        Client::new(config)
    }

    #[test]
    fn a_token_over_plain_http_to_another_host_is_refused_saying_why() {
        for url in [
            "http://buildstate.example.com:8000",
            "http://10.1.2.3:8000",
            "http://[2001:db8::1]:8000",
        ] {
            let error = client(url, Some("bst_x"), false)
                .expect_err(url)
                .to_string();
            assert!(
                error.contains("refusing to send the API token over plain http://"),
                "{error}"
            );
            assert!(error.contains("could read it"), "{error}");
            // How to opt in is each front end's own (`failure::Hints::allow_insecure`).
            assert!(
                matches!(
                    client(url, Some("bst_x"), false),
                    Err(ClientError::Insecure { .. })
                ),
                "{url}"
            );
            assert!(insecure_host(url).is_some(), "{url}");
        }
        for url in [
            "https://h.example",
            "http://127.0.0.1:1",
            "http://localhost:1",
        ] {
            assert_eq!(insecure_host(url), None, "{url}");
        }
    }

    #[test]
    fn https_loopback_no_token_or_an_explicit_allowance_are_accepted() {
        for (url, token, allow) in [
            ("https://buildstate.example.com", Some("bst_x"), false),
            ("http://127.0.0.1:8000", Some("bst_x"), false),
            ("http://127.9.9.9:8000", Some("bst_x"), false),
            ("http://localhost:8000", Some("bst_x"), false),
            ("http://[::1]:8000", Some("bst_x"), false),
            ("http://buildstate.example.com:8000", None, false),
            ("http://buildstate.example.com:8000", Some("bst_x"), true),
        ] {
            assert!(client(url, token, allow).is_ok(), "{url} {token:?} {allow}");
        }
    }

    #[test]
    fn the_allowance_is_read_from_the_environment() {
        for (value, allowed) in [
            ("1", true),
            ("true", true),
            ("YES", true),
            ("0", false),
            ("no", false),
        ] {
            let env = |name: &str| (name == ALLOW_INSECURE_VAR).then(|| value.to_owned());
            assert_eq!(allow_insecure_from_env(&env), allowed, "{value}");
        }
        assert!(!allow_insecure_from_env(&|_| None));
    }
}

#[cfg(test)]
mod tls_roots_tests {
    use super::*;

    #[test]
    fn tls_roots_are_loaded_only_when_the_server_or_a_proxy_is_reached_over_https() {
        let proxies = |http: Option<&str>, https: Option<&str>| Proxies {
            http: http.map(str::to_owned),
            https: https.map(str::to_owned),
            no_proxy: None,
        };
        let no_env = |_: &str| None;
        assert!(may_use_tls("https://buildstate.example", None, &no_env));
        assert!(may_use_tls("HTTPS://buildstate.example", None, &no_env));
        assert!(!may_use_tls("http://127.0.0.1:8000", None, &no_env));
        assert!(!may_use_tls(
            "http://127.0.0.1:8000",
            Some(&proxies(
                Some("http://proxy:3128"),
                Some("http://proxy:3128")
            )),
            &no_env
        ));
        assert!(may_use_tls(
            "http://127.0.0.1:8000",
            Some(&proxies(Some("https://proxy:3128"), None)),
            &no_env
        ));
        assert!(may_use_tls(
            "http://127.0.0.1:8000",
            Some(&proxies(None, Some("https://proxy:3128"))),
            &no_env
        ));
        // Without proxies of its own, the environment's (which reqwest then reads) decide.
        for name in REQWEST_PROXY_VARIABLES {
            let env = |asked: &str| (asked == name).then(|| "https://proxy:3128".to_owned());
            assert!(may_use_tls("http://127.0.0.1:8000", None, &env), "{name}");
            let plain = |asked: &str| (asked == name).then(|| "http://proxy:3128".to_owned());
            assert!(
                !may_use_tls("http://127.0.0.1:8000", None, &plain),
                "{name}"
            );
        }
        // Proxies of its own replace the environment's.
        let env = |_: &str| Some("https://proxy:3128".to_owned());
        assert!(!may_use_tls(
            "http://127.0.0.1:8000",
            Some(&proxies(None, None)),
            &env
        ));
    }
}
