//! The JSON the server speaks and the clients read: one definition, so the two cannot drift.
//!
//! Field names here are a public contract (the CLI's `--output json`, the Concourse resource's
//! files and the action's outputs repeat them): rename nothing without a new API version.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fields::{BuildId, BuildKey, Email, ImageType, Labels, Platform, Username};
use crate::gate::GateDecision;
use crate::outputs::{Outputs, StageOutput};
use crate::policy::BuildRetryPolicy;
use crate::rules::Lease;
use crate::state::{Phase, StateCode};
use crate::status::{BuildStatus, EventKind, ReportStatus, Role, Scope};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

// Kept here too: callers have long named them `wire::MAX_MESSAGE_CHARS`.
pub use crate::limits::{MAX_DESCRIPTION_CHARS, MAX_MESSAGE_CHARS};

/// The OpenAPI schemas of the free-text fields: the rules `check_free_text` applies.
#[cfg(feature = "openapi")]
pub mod schemas {
    use utoipa::openapi::schema::Schema;

    use crate::fields::free_text_schema;

    pub fn build_description() -> Schema {
        free_text_schema(crate::limits::MAX_DESCRIPTION_CHARS, false, true)
    }

    pub fn message() -> Schema {
        free_text_schema(crate::limits::MAX_MESSAGE_CHARS, false, true)
    }

    pub fn source() -> Schema {
        free_text_schema(crate::limits::MAX_SOURCE_CHARS, false, true)
    }

    pub fn reason() -> Schema {
        free_text_schema(crate::limits::MAX_MESSAGE_CHARS, true, false)
    }

    pub fn run() -> Schema {
        free_text_schema(crate::limits::MAX_RUN_CHARS, true, true)
    }

    pub fn token_description() -> Schema {
        free_text_schema(crate::limits::MAX_TOKEN_DESCRIPTION_CHARS, true, false)
    }
}

/// Optional whole numbers that accept `480.0` as well as `480`: JSON Schema counts both as
/// integers, so a client (or a fuzzer) that writes the first must not be refused. `480.5`,
/// negative numbers for an unsigned field and numbers beyond the field's type are refused,
/// saying which. One visitor serves every integer type: each JSON number is widened to `i128`
/// (which holds every `i64` and `u64`) and then narrowed to the field's type.
pub(crate) mod whole_number {
    use serde::de::{Deserializer, Error, Visitor};
    use std::fmt;
    use std::marker::PhantomData;

    pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        struct Whole<T>(PhantomData<T>);

        impl<T: TryFrom<i128>> Whole<T> {
            fn narrow<E: Error>(value: i128, shown: impl fmt::Display) -> Result<Option<T>, E> {
                T::try_from(value)
                    .map(Some)
                    .map_err(|_| Self::out_of_range(value < 0, shown))
            }

            /// Only an unsigned field refuses -1: there a negative value is "negative", whatever
            /// its size.
            fn out_of_range<E: Error>(negative: bool, shown: impl fmt::Display) -> E {
                if negative && T::try_from(-1).is_err() {
                    E::custom(format!("`{shown}` is negative"))
                } else {
                    E::custom(format!("`{shown}` is too large"))
                }
            }
        }

        impl<'de, T: TryFrom<i128>> Visitor<'de> for Whole<T> {
            type Value = Option<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }

            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_u64<E: Error>(self, value: u64) -> Result<Self::Value, E> {
                Self::narrow(i128::from(value), value)
            }

            fn visit_i64<E: Error>(self, value: i64) -> Result<Self::Value, E> {
                Self::narrow(i128::from(value), value)
            }

            fn visit_f64<E: Error>(self, value: f64) -> Result<Self::Value, E> {
                if value.fract() != 0.0 || !value.is_finite() {
                    return Err(E::custom(format!("`{value}` is not a whole number")));
                }
                // Beyond ±2^127 no integer field can hold it; within, the cast is exact.
                if value.abs() >= i128::MAX as f64 {
                    return Err(Self::out_of_range(value < 0.0, value));
                }
                #[allow(clippy::cast_possible_truncation)]
                Self::narrow(value as i128, value)
            }
        }

        deserializer.deserialize_any(Whole(PhantomData))
    }
}

/// A build as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Build {
    pub id: BuildId,
    pub key: Option<BuildKey>,
    pub platform: Platform,
    pub image_type: ImageType,
    pub description: Option<String>,
    pub labels: Labels,
    /// With `running`: the next stage to run; otherwise the stage the status is about.
    pub state: StateCode,
    /// The configured name of `state`.
    pub state_name: String,
    pub phase: Phase,
    pub status: BuildStatus,
    /// Failures counted at `state`.
    pub failures: u32,
    pub max_retries: u32,
    /// With `failed`: the earliest time `state` may be attempted again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The message of the last accepted report.
    pub last_message: Option<String>,
    /// The sequence number of the newest history entry.
    pub last_seq: i64,
    /// With `failed`: the sequence number of the `retry_due` entry the server recorded once
    /// the failed stage's backoff ended (its next attempt is due now); absent before that.
    #[serde(default)]
    pub retry_due_seq: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The outputs of the completed stages, merged: where two stages set a key, the later
    /// stage's value wins; `stage` says which stage set it. A reset drops the outputs of the
    /// stages it reopens.
    #[serde(default)]
    pub outputs: BTreeMap<String, StageOutput>,
    /// With `in_progress`: the run holding `state`, if an identified run claimed it. It may
    /// have expired (compare `expires_at`); the next report from another run then takes over.
    #[serde(default)]
    pub lease: Option<Lease>,
    /// The latest time a run resumed this build (docs/rules.md, "What resuming saved"): where,
    /// and the stages it did not run again; absent until one did.
    #[serde(default)]
    pub last_resume: Option<crate::resumes::Resume>,
    /// During a reopened pass (a failure at a stage whose retry policy has `restart_from`):
    /// the failed stage the pass retries. No stage after it runs until it completes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_until: Option<StateCode>,
    /// The build's retry policy, set when it started; absent when it has none (every stage
    /// then has `max_retries` and the server's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<BuildRetryPolicy>,
}

impl Build {
    /// Whether `stage` is done on this build (completed, or jumped past): the domain's
    /// [`crate::rules::stage_has_completed`].
    pub fn has_completed(&self, stage: StateCode) -> bool {
        crate::rules::stage_has_completed(self.state, self.status, stage)
    }

    /// The failures the build may have at the stage it is retrying
    /// ([`crate::rules::Progress::retried_stage`]) before it is blocked: that stage's
    /// `max_retries` under the build's retry policy, else the build's own.
    pub fn allowed_retries(&self) -> u32 {
        let stage = self.progress().retried_stage();
        self.retry_policy
            .as_ref()
            .map_or(self.max_retries, |policy| {
                policy.max_retries(stage, self.max_retries)
            })
    }

    /// The part of the build the transition and gating rules read.
    pub fn progress(&self) -> crate::rules::Progress {
        crate::rules::Progress {
            state: self.state,
            status: self.status,
            failures: self.failures,
            next_attempt_at: self.next_attempt_at,
            lease: self.lease.clone(),
            last_seq: self.last_seq,
            retry_due_seq: self.retry_due_seq,
            reopened_until: self.reopened_until,
        }
    }
}

/// `POST /builds`: start a build, or resume the unfinished one with the same `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartBuild {
    pub platform: Platform,
    pub image_type: ImageType,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::build_description))]
    pub description: Option<String>,
    #[serde(default)]
    pub key: Option<BuildKey>,
    #[serde(default)]
    pub labels: Labels,
    /// Failures a stage may have before the build is blocked (the server's default if absent).
    /// At most 100 (`MAX_RETRIES_LIMIT`).
    #[serde(default, deserialize_with = "whole_number::option")]
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub max_retries: Option<u32>,
    /// What the build allows per stage or range of stages: retries, backoff and
    /// `restart_from` (docs/rules.md, "Retry policies"). Set when the build starts: a build
    /// that is resumed keeps the policy it started with, whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<BuildRetryPolicy>,
}

impl StartBuild {
    /// What to tell the caller when `build`, which this request resumed, keeps a retry policy
    /// other than the one the request carries (a build keeps the policy it started with);
    /// `None` when they agree or the request carries none.
    pub fn policy_not_applied(&self, build: &Build) -> Option<String> {
        let asked = self
            .retry_policy
            .as_ref()
            .filter(|policy| !policy.is_empty())?;
        if build.retry_policy.as_ref() == Some(asked) {
            return None;
        }
        let kept = if build.retry_policy.is_some() {
            "the retry policy it started with"
        } else {
            "no retry policy, as it started"
        };
        Some(format!(
            "build `{}` was resumed and keeps {kept}: the `retry_policy` of this request was not applied",
            build.id
        ))
    }
}

/// The answer to [`StartBuild`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StartedBuild {
    pub build: Build,
    /// True when `key` matched an unfinished build, which is returned instead of a new one.
    pub resumed: bool,
    /// Said when the request asked for what a resumed build does not change: its
    /// `retry_policy` differs from the one the build started with, which it keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `POST /builds/{id}/transitions`: a report about one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportTransition {
    pub state: StateCode,
    pub status: ReportStatus,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::message))]
    pub message: Option<String>,
    /// Compare-and-set: refuse the report unless the build is at this state.
    #[serde(default)]
    pub expected_state: Option<StateCode>,
    /// Where the report comes from: a CI run URL, a Concourse build, a GitHub run.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::source))]
    pub source: Option<String>,
    /// The reporting run's identity for leases; `source` stands in when absent. An
    /// `in_progress` report from an identified run claims the stage for it; a report from
    /// neither claims nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::run))]
    pub run: Option<String>,
    /// The fencing value of the lease this run holds (`lease.fence` from the answer to its
    /// `in_progress`): refused with `lease_lost` once another run has taken the stage over.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number::option"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(
            minimum = -9_223_372_036_854_775_808_i64,
            maximum = 9_223_372_036_854_775_807_i64
        )
    )]
    pub fence: Option<i64>,
    /// With `completed` only: what the stage produced, for the runs that resume the build
    /// (at most 32 entries; keys are environment-variable names of at most 64 characters;
    /// values are 1 to 1024 bytes of single-line text). Not for secrets: anyone who can read
    /// the build reads them.
    #[serde(default, skip_serializing_if = "Outputs::is_empty")]
    pub outputs: Outputs,
}

impl ReportTransition {
    /// A bare report on `state`, to fill in with struct-update syntax.
    pub fn new(state: StateCode, status: ReportStatus) -> Self {
        ReportTransition {
            state,
            status,
            message: None,
            expected_state: None,
            source: None,
            run: None,
            fence: None,
            outputs: Outputs::default(),
        }
    }

    /// The run identity leases use: `run`, else `source`.
    pub fn run_identity(&self) -> Option<&str> {
        self.run.as_deref().or(self.source.as_deref())
    }
}

/// The rules' view of a report: what `apply_report` decides on. The message and the source are
/// the history's, not the rules', so they stay with the request.
impl From<&ReportTransition> for crate::rules::Report {
    fn from(report: &ReportTransition) -> Self {
        crate::rules::Report {
            state: report.state,
            status: report.status,
            expected_state: report.expected_state,
            run: report.run_identity().map(str::to_owned),
            fence: report.fence,
            outputs: report.outputs.clone(),
        }
    }
}

/// `POST /builds/{id}/heartbeat` and `/release`: the holder of a stage's lease extends it
/// or gives it up. Name the run (`run`) or prove it with the lease's `fence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The stage the lease is on.
    pub state: StateCode,
    /// The run identity the lease was claimed with.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::run))]
    pub run: Option<String>,
    /// The lease's fencing value.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            minimum = -9_223_372_036_854_775_808_i64,
            maximum = 9_223_372_036_854_775_807_i64
        )
    )]
    pub fence: Option<i64>,
}

/// The answer to [`ReportTransition`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TransitionResult {
    pub build: Build,
    /// False when the stage was already completed and nothing changed.
    pub changed: bool,
    /// One sentence on what happened.
    pub note: String,
    /// The history entries this report appended, in order (none when `changed` is false).
    pub recorded: Vec<HistoryEntry>,
    /// With `changed: false`: the build's newest history entry (`seq` is `build.last_seq`), so
    /// a client can say where the build stands without reading its history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_entry: Option<HistoryEntry>,
    /// Set when this report resumed the build: the stages it need not run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<crate::resumes::Resume>,
}

/// The `details` of a `stage_already_completed` refusal (409): the report's stage, the stage
/// to run next, and where the build stands, so a client with nothing to do at that stage (a
/// re-run reporting `in_progress` on it) needs no second call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StageAlreadyCompletedDetails {
    /// The stage reported on.
    pub stage: StateCode,
    /// The build's state: the next stage to run.
    pub next_state: StateCode,
    /// The build as the refusal found it.
    pub build: Build,
    /// Its newest history entry (`seq` is `build.last_seq`).
    pub last_entry: HistoryEntry,
}

/// One entry of a build's history; history is append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HistoryEntry {
    /// Strictly increasing per build, starting at 1.
    pub seq: i64,
    pub state: StateCode,
    pub kind: EventKind,
    pub message: Option<String>,
    /// The attempt at `state` (1 for the first run); absent for skipped stages and operator
    /// actions.
    pub attempt: Option<u32>,
    /// The user whose token made the report.
    pub reported_by: Option<String>,
    /// The id of that token.
    pub token_id: Option<String>,
    pub source: Option<String>,
    pub recorded_at: DateTime<Utc>,
    /// With `completed`: the outputs the stage completed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
}

/// One event of `GET /builds/{id}/events` and `GET /events` (`event: transition`): a history
/// entry and its build as it stood right after it. On the wire it is the event's `data`: one
/// line of JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BuildEvent {
    pub build: Build,
    pub entry: HistoryEntry,
}

impl BuildEvent {
    /// Whether following the build can stop at this event: after it the build is settled
    /// ([`BuildStatus::is_settled`]). Only the build's latest entry counts: a replayed entry
    /// carries the build as it is now, not as it was.
    pub fn settles_the_build(&self) -> bool {
        self.entry.seq >= self.build.last_seq && self.build.status.is_settled()
    }

    /// The event's id in the stream of every build, `recorded-at-ms:build-id:seq`: ordered as
    /// the history is replayed. (A build's own stream uses the entry's `seq`.)
    pub fn stream_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.entry.recorded_at.timestamp_millis(),
            self.build.id,
            self.entry.seq
        )
    }
}

/// `GET /builds/{id}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// Pass as `after` to read on; absent when this page reached the end.
    pub next_after: Option<i64>,
}

/// `GET /builds/{id}/gate?state=S`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GateAnswer {
    pub build_id: BuildId,
    /// The stage asked about.
    pub state: StateCode,
    pub decision: GateDecision,
    /// For `wait`: seconds until the stage may be attempted.
    pub wait_seconds: Option<u64>,
    pub reason: String,
    pub build_state: StateCode,
    pub build_status: BuildStatus,
}

/// `GET /builds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BuildPage {
    /// Newest first.
    pub builds: Vec<Build>,
    /// Pass as `offset` to read on; absent at the end.
    pub next_offset: Option<u64>,
}

/// `POST /builds/{id}/retry` and `/cancel`: operator actions need a reason for the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OperatorReason {
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::reason))]
    pub reason: String,
}

/// `POST /builds/{id}/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResetBuild {
    /// The current or an earlier stage.
    pub state: StateCode,
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::reason))]
    pub reason: String,
}

/// `POST /users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: Username,
    pub email: Email,
    #[serde(default = "default_role")]
    pub role: Role,
}

fn default_role() -> Role {
    Role::Member
}

/// A user as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct User {
    pub id: String,
    pub username: Username,
    pub email: Email,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

/// `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub username: Username,
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::token_description))]
    pub description: String,
    #[serde(default = "default_scope")]
    pub scope: Scope,
    /// Seconds until the token expires, at most 100 years; if absent, it never does, or when
    /// the token creating it expires, if that one does. Never later than that token.
    #[serde(default, deserialize_with = "whole_number::option")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3_155_760_000_u64))]
    pub expires_in_seconds: Option<u64>,
}

fn default_scope() -> Scope {
    Scope::Write
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub username: Username,
    pub description: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The id of the token that created this one; absent for tokens made out of band
    /// (`bldst server bootstrap`, `bldst server token create`). Revoking a token revokes the
    /// tokens it created.
    #[serde(default)]
    pub created_by: Option<String>,
}

/// The answer to [`CreateToken`]: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedToken {
    pub token: TokenInfo,
    /// The bearer token. It is stored only as a hash and cannot be shown again.
    pub secret: String,
}

/// `GET /auth/whoami`: who the presented token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Whoami {
    pub username: Username,
    pub role: Role,
    pub token_id: String,
    pub scope: Scope,
    pub expires_at: Option<DateTime<Utc>>,
}

/// `GET /health` and `GET /ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// `ok`, or `unavailable` (with a 503) when not ready.
    pub status: String,
    pub version: String,
    /// `/ready` only: the database backend (`sqlite` or `postgres`).
    pub database: Option<String>,
}

/// `GET /status`: an overview of all builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StatusOverview {
    pub builds: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_platform: BTreeMap<String, u64>,
    pub version: String,
}

/// `GET /status`: the overview, and how this process enforces the rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StatusAnswer {
    #[serde(flatten)]
    pub overview: StatusOverview,
    /// Absent from servers older than the rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimitStatus>,
    /// Every stage code with the name this server gives it (names may be configured), so that
    /// a client can label stages a build has not reached. Absent from older servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageName>,
}

/// One stage code, its configured name and its phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StageName {
    pub code: StateCode,
    pub name: String,
    pub phase: Phase,
}

/// Where the rate limits are counted right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RateLimitStatus {
    /// `redis`: shared by every server process; `process`: this process counts alone
    /// (no `REDIS_URL`, or Redis does not answer).
    pub store: RateLimitStore,
    /// Whether `REDIS_URL` is set.
    pub redis_configured: bool,
    /// Since when Redis has not answered, while it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_unreachable_since: Option<DateTime<Utc>>,
}

/// Where the rate limits are counted: `redis` (shared) or `process` (this process alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RateLimitStore {
    Redis,
    Process,
}

/// Every 4xx and 5xx answer: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for people (`message`) and programs (`code`, `field`, `details`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_field`, `build_not_found`,
    /// `stage_already_completed`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub code: ErrorCode,
    /// A sentence a person can act on.
    pub message: String,
    /// The request field that was wrong, as a path such as `state` or `labels.git sha`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Facts a program can act on: `next_state`, `wait_seconds`, `actual_state`; for
    /// `stage_already_completed`, a `StageAlreadyCompletedDetails`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Value>,
}

/// The stable `code` of an error answer: one list the server answers with and the clients
/// match on, so a renamed or misspelled code is a compile error, not a silent mismatch.
///
/// On the wire it is the snake_case string. A code this version does not know (from a newer
/// server) reads as [`ErrorCode::Other`] with its text, so an old client still shows the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A request field broke a rule (422, with `field`).
    InvalidField,
    /// The body is not JSON (400).
    MalformedJson,
    /// The body is not `application/json` (415).
    UnsupportedMediaType,
    /// The body is over the size limit (413).
    BodyTooLarge,
    /// The body could not be read (400).
    UnreadableBody,
    /// The query string is malformed or has an unknown parameter (400).
    InvalidQuery,
    /// No build with that id (404).
    BuildNotFound,
    /// No user or token with that id (404).
    NotFound,
    /// No endpoint at that path (404).
    RouteNotFound,
    /// No bearer token (401).
    MissingToken,
    /// The token is unknown or revoked (401).
    InvalidToken,
    /// The token has expired (401).
    TokenExpired,
    /// The token's scope is too narrow (403).
    InsufficientScope,
    /// The caller may not do this (403).
    Forbidden,
    /// The change conflicts with stored data, e.g. an existing user (409).
    Conflict,
    /// A rule refused the change, without a more precise code (409).
    Refused,
    /// The stage was already completed (409, `details.next_state`).
    StageAlreadyCompleted,
    /// The build is completed or cancelled (409).
    BuildFinished,
    /// The build needs an operator (409).
    BuildBlocked,
    /// `expected_state` did not match (409, `details.actual_state`).
    StaleExpectedState,
    /// An earlier stage failed and must be run first (409, `details.next_state`).
    FailedStageFirst,
    /// The stage is backing off (409, `details.wait_seconds`).
    RetryTooSoon,
    /// `retry` on a build that is neither failed nor blocked (409).
    NothingToRetry,
    /// `reset` to a later stage (409).
    ResetForward,
    /// Revoking the token would leave no live admin token (409).
    LastAdminToken,
    /// Another run holds the stage (409, `details.holder`, `details.expires_at`,
    /// `details.wait_seconds`).
    StageLeased,
    /// The report's or heartbeat's `fence` is no longer the stage's lease (409,
    /// `details.holder` and `details.current_fence` when another run holds it now).
    LeaseLost,
    /// A heartbeat or release for a stage this run does not hold (409).
    NotLeased,
    /// Too many failed authentications from the address, or too many writes with the token
    /// (429, with `Retry-After` and `details.limit`, `details.retry_after_seconds`).
    RateLimited,
    /// The server failed (500); the cause is in its log.
    InternalError,
    /// The server cannot serve now, e.g. its database is down (503).
    Unavailable,
    /// A code this version does not know.
    Other(String),
}

macro_rules! error_codes {
    ($($variant:ident => $text:literal),+ $(,)?) => {
        impl ErrorCode {
            /// Every code this version knows, in declaration order.
            pub const KNOWN: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $text,)+
                    ErrorCode::Other(text) => text,
                }
            }

            /// The code spelled `text`; never fails ([`ErrorCode::Other`] for the unknown).
            pub fn from_wire(text: &str) -> ErrorCode {
                match text {
                    $($text => ErrorCode::$variant,)+
                    other => ErrorCode::Other(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
    InvalidField => "invalid_field",
    MalformedJson => "malformed_json",
    UnsupportedMediaType => "unsupported_media_type",
    BodyTooLarge => "body_too_large",
    UnreadableBody => "unreadable_body",
    InvalidQuery => "invalid_query",
    BuildNotFound => "build_not_found",
    NotFound => "not_found",
    RouteNotFound => "route_not_found",
    MissingToken => "missing_token",
    InvalidToken => "invalid_token",
    TokenExpired => "token_expired",
    InsufficientScope => "insufficient_scope",
    Forbidden => "forbidden",
    Conflict => "conflict",
    Refused => "refused",
    StageAlreadyCompleted => "stage_already_completed",
    BuildFinished => "build_finished",
    BuildBlocked => "build_blocked",
    StaleExpectedState => "stale_expected_state",
    FailedStageFirst => "failed_stage_first",
    RetryTooSoon => "retry_too_soon",
    NothingToRetry => "nothing_to_retry",
    ResetForward => "reset_forward",
    LastAdminToken => "last_admin_token",
    StageLeased => "stage_leased",
    LeaseLost => "lease_lost",
    NotLeased => "not_leased",
    RateLimited => "rate_limited",
    InternalError => "internal_error",
    Unavailable => "unavailable",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ErrorCode::from_wire(&text))
    }
}

/// `GET /builds`: filters and paging, as the query string spells them. `None` matches
/// everything. The server parses each filter by the rules of the field it filters on (a 422
/// naming the parameter otherwise), which is what the declared schemas say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct BuildQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<Platform>))]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<ImageType>))]
    pub image_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<BuildStatus>))]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<StateCode>))]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<BuildKey>))]
    pub key: Option<String>,
    /// Builds per page: 1 to 500 (`BUILD_PAGE_MAX`); 50 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500))]
    pub limit: Option<u32>,
    /// Builds to skip (the previous page's `next_offset`); at most `MAX_OFFSET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)
    )]
    pub offset: Option<u64>,
}

impl BuildQuery {
    /// The query string for the builds `filter` matches, `limit` per page from `offset`:
    /// what a client sends.
    pub fn new(filter: &BuildFilter, limit: Option<u32>, offset: Option<u64>) -> Self {
        BuildQuery {
            platform: filter.platform.as_ref().map(ToString::to_string),
            image_type: filter.image_type.as_ref().map(ToString::to_string),
            status: filter.status.map(|status| status.as_str().to_owned()),
            state: filter.state.map(|state| state.to_string()),
            key: filter.key.as_ref().map(ToString::to_string),
            limit,
            offset,
        }
    }

    /// The filters, each parsed by the rules of the field it filters on: a value no build can
    /// hold (a NUL byte, an unknown status) is refused naming the parameter, rather than
    /// being a query that matches nothing or that the database refuses. What the server does.
    pub fn filter(&self) -> Result<BuildFilter, InvalidQueryParam> {
        fn parse<T: std::str::FromStr>(
            field: &'static str,
            raw: Option<&str>,
        ) -> Result<Option<T>, InvalidQueryParam>
        where
            T::Err: std::fmt::Display,
        {
            raw.map(|raw| {
                raw.parse::<T>().map_err(|error| InvalidQueryParam {
                    field,
                    message: error.to_string(),
                })
            })
            .transpose()
        }
        Ok(BuildFilter {
            status: parse("status", self.status.as_deref())?,
            state: parse("state", self.state.as_deref())?,
            platform: parse("platform", self.platform.as_deref())?,
            image_type: parse("image_type", self.image_type.as_deref())?,
            key: parse("key", self.key.as_deref())?,
        })
    }
}

/// The filters of `GET /builds`, parsed ([`BuildQuery::filter`]): what the store matches
/// builds on. `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildFilter {
    pub platform: Option<Platform>,
    pub image_type: Option<ImageType>,
    pub status: Option<BuildStatus>,
    pub state: Option<StateCode>,
    pub key: Option<BuildKey>,
}

/// A `GET /builds` parameter no build can match: which one (`field`), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidQueryParam {
    pub field: &'static str,
    pub message: String,
}

/// The largest `offset` of [`BuildQuery`] (SQL takes a signed 64-bit number).
pub const MAX_OFFSET: u64 = i64::MAX as u64;

/// `GET /builds/{id}/history`: where to start and how many entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only entries with a larger sequence number (0 if absent; the previous page's
    /// `next_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        param(
            minimum = -9_223_372_036_854_775_808_i64,
            maximum = 9_223_372_036_854_775_807_i64
        )
    )]
    pub after: Option<i64>,
    /// Entries per page: 1 to 1000 (`HISTORY_PAGE_MAX`); 100 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires: &str) -> Result<CreateToken, serde_json::Error> {
        serde_json::from_str(&format!(
            r#"{{"username":"ci","description":"d","expires_in_seconds":{expires}}}"#
        ))
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        for (json, seconds) in [("480", Some(480)), ("480.0", Some(480)), ("null", None)] {
            let parsed = token(json).expect(json);
            assert_eq!(parsed.expires_in_seconds, seconds, "{json}");
        }
        for (json, reason) in [
            ("480.5", "is not a whole number"),
            ("-1", "is negative"),
            ("-1.0", "is negative"),
            ("1e30", "is too large"),
            ("\"480\"", "expected a whole number"),
        ] {
            let error = token(json).expect_err(json);
            assert!(error.to_string().contains(reason), "{json}: {error}");
        }
        let lease: LeaseRequest =
            serde_json::from_str(r#"{"state":0,"fence":-130.0}"#).expect("a whole fence");
        assert_eq!(lease.fence, Some(-130));
        for (json, reason) in [
            ("9223372036854775808", "is too large"),
            ("-1e30", "is too large"),
            ("1e40", "is too large"),
            ("-130.5", "is not a whole number"),
        ] {
            let error =
                serde_json::from_str::<LeaseRequest>(&format!(r#"{{"state":0,"fence":{json}}}"#))
                    .expect_err(json);
            assert!(error.to_string().contains(reason), "{json}: {error}");
        }
        let error = token("-1e40").expect_err("far below zero");
        assert!(error.to_string().contains("is negative"), "{error}");
        let too_many: Result<StartBuild, _> = serde_json::from_str(
            r#"{"platform":"aws","image_type":"rhel8","max_retries":4294967296}"#,
        );
        assert!(too_many.is_err(), "beyond u32");
    }

    #[test]
    fn every_error_code_reads_back_from_its_spelling() {
        for code in ErrorCode::KNOWN {
            let json = serde_json::to_string(code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(&back, code);
        }
    }

    #[test]
    fn an_unknown_error_code_keeps_its_text() {
        let code: ErrorCode = serde_json::from_str("\"lease_held\"").expect("deserialize");
        assert_eq!(code, ErrorCode::Other("lease_held".to_owned()));
        assert_eq!(code.to_string(), "lease_held");
    }

    #[test]
    fn a_list_query_is_parsed_back_into_the_filter_it_was_made_from() {
        let filter = BuildFilter {
            platform: Some("aws".parse().expect("platform")),
            status: Some(BuildStatus::Blocked),
            state: Some(StateCode::new(15).expect("code")),
            key: Some("aws/rhel8".parse().expect("key")),
            ..BuildFilter::default()
        };
        let query = BuildQuery::new(&filter, Some(5), None);
        assert_eq!(query.limit, Some(5));
        assert_eq!(query.filter(), Ok(filter));
    }

    #[test]
    fn a_list_query_that_no_build_can_match_names_its_parameter() {
        let cases = [
            ("status", "done"),
            ("state", "7"),
            ("state", "abc"),
            ("platform", "aws\0"),
            ("image_type", ""),
            ("key", "a\u{1b}b"),
        ];
        for (field, value) in cases {
            let query: BuildQuery =
                serde_json::from_value(serde_json::json!({ field: value })).expect("query");
            let error = query.filter().expect_err(field);
            assert_eq!(error.field, field, "{value:?}");
        }
    }

    #[test]
    fn a_list_query_leaves_out_what_is_not_set() {
        let query = BuildQuery {
            status: Some("failed".to_owned()),
            limit: Some(10),
            ..BuildQuery::default()
        };
        assert_eq!(
            serde_json::to_value(&query).expect("serialize"),
            serde_json::json!({"status": "failed", "limit": 10})
        );
    }
}
