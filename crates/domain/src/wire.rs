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
use crate::rules::Lease;
use crate::state::{Phase, StateCode};
use crate::status::{BuildStatus, EventKind, ReportStatus, Role, Scope};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

// Kept here too: callers have long named them `wire::MAX_MESSAGE_CHARS`.
pub use crate::limits::{MAX_DESCRIPTION_CHARS, MAX_MESSAGE_CHARS};

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
}

impl Build {
    /// The part of the build the transition and gating rules read.
    pub fn progress(&self) -> crate::rules::Progress {
        crate::rules::Progress {
            state: self.state,
            status: self.status,
            failures: self.failures,
            next_attempt_at: self.next_attempt_at,
            lease: self.lease.clone(),
            last_seq: self.last_seq,
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
    pub description: Option<String>,
    #[serde(default)]
    pub key: Option<BuildKey>,
    #[serde(default)]
    pub labels: Labels,
    /// Failures a stage may have before the build is blocked (the server's default if absent).
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// The answer to [`StartBuild`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StartedBuild {
    pub build: Build,
    /// True when `key` matched an unfinished build, which is returned instead of a new one.
    pub resumed: bool,
}

/// `POST /builds/{id}/transitions`: a report about one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportTransition {
    pub state: StateCode,
    pub status: ReportStatus,
    #[serde(default)]
    pub message: Option<String>,
    /// Compare-and-set: refuse the report unless the build is at this state.
    #[serde(default)]
    pub expected_state: Option<StateCode>,
    /// Where the report comes from: a CI run URL, a Concourse build, a GitHub run.
    #[serde(default)]
    pub source: Option<String>,
    /// The reporting run's identity for leases; `source` stands in when absent. An
    /// `in_progress` report from an identified run claims the stage for it; a report from
    /// neither claims nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The fencing value of the lease this run holds (`lease.fence` from the answer to its
    /// `in_progress`): refused with `lease_lost` once another run has taken the stage over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub run: Option<String>,
    /// The lease's fencing value.
    #[serde(default)]
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
/// entry and its build as it stood right after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildEvent {
    pub build: Build,
    pub entry: HistoryEntry,
}

impl BuildEvent {
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
    pub reason: String,
}

/// `POST /builds/{id}/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResetBuild {
    /// The current or an earlier stage.
    pub state: StateCode,
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
    pub description: String,
    #[serde(default = "default_scope")]
    pub scope: Scope,
    /// Seconds until the token expires; it never does if absent.
    #[serde(default)]
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
    /// Facts a program can act on: `next_state`, `wait_seconds`, `actual_state`.
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
    /// Another run holds the stage (409, `details.holder`, `details.expires_at`,
    /// `details.wait_seconds`).
    StageLeased,
    /// The report's or heartbeat's `fence` is no longer the stage's lease (409,
    /// `details.holder` and `details.current_fence` when another run holds it now).
    LeaseLost,
    /// A heartbeat or release for a stage this run does not hold (409).
    NotLeased,
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
    StageLeased => "stage_leased",
    LeaseLost => "lease_lost",
    NotLeased => "not_leased",
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
/// everything. The server parses `status` and `state` itself so that a bad value is a 422
/// naming the parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct BuildQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_type: Option<String>,
    /// One of running, in_progress, failed, blocked, completed, cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A state code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// At most 500; 50 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// `GET /builds/{id}/history`: where to start and how many entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only entries with a larger sequence number (0 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// At most 1000; 100 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
