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

/// Longest report message, operator reason or description kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16 * 1024;
/// Longest build description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

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
    pub code: String,
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
