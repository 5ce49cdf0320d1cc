//! The JSON the server speaks and the clients read: one definition, so the two cannot drift.
//!
//! Field names here are a public contract (the CLI's `--output json`, the Concourse resource's
//! files and the action's outputs repeat them): rename nothing without a new API version.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fields::{BuildId, BuildKey, Email, ImageType, Labels, Platform, Username};
use crate::gate::GateDecision;
use crate::state::{Phase, StateCode};
use crate::status::{BuildStatus, EventKind, ReportStatus, Role, Scope};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Longest report message, operator reason or description kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16 * 1024;
/// Longest build description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Longest report source (a CI run URL), in characters.
pub const MAX_SOURCE_CHARS: usize = 2048;
/// Longest token description, in characters.
pub const MAX_TOKEN_DESCRIPTION_CHARS: usize = 512;
/// The most failures a build may allow per stage (`max_retries`).
pub const MAX_RETRIES_LIMIT: u32 = 100;

/// The OpenAPI schemas of the free-text fields: the rules `check_free_text` applies.
#[cfg(feature = "openapi")]
mod schemas {
    use utoipa::openapi::schema::Schema;

    use crate::fields::free_text_schema;

    pub fn build_description() -> Schema {
        free_text_schema(super::MAX_DESCRIPTION_CHARS, false, true)
    }

    pub fn message() -> Schema {
        free_text_schema(super::MAX_MESSAGE_CHARS, false, true)
    }

    pub fn source() -> Schema {
        free_text_schema(super::MAX_SOURCE_CHARS, false, true)
    }

    pub fn reason() -> Schema {
        free_text_schema(super::MAX_MESSAGE_CHARS, true, false)
    }

    pub fn token_description() -> Schema {
        free_text_schema(super::MAX_TOKEN_DESCRIPTION_CHARS, true, false)
    }
}

/// Optional whole numbers that accept `480.0` as well as `480`: JSON Schema counts both as
/// integers, so a client (or a fuzzer) that writes the first must not be refused. `480.5`,
/// negative numbers and numbers beyond the field's type are refused, saying which.
mod whole_number {
    use serde::de::{Deserializer, Error, Visitor};
    use std::fmt;
    use std::marker::PhantomData;

    pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        struct Whole<T>(PhantomData<T>);

        impl<'de, T: TryFrom<u64>> Visitor<'de> for Whole<T> {
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
                T::try_from(value)
                    .map(Some)
                    .map_err(|_| E::custom(format!("`{value}` is too large")))
            }

            fn visit_i64<E: Error>(self, value: i64) -> Result<Self::Value, E> {
                let value = u64::try_from(value)
                    .map_err(|_| E::custom(format!("`{value}` is negative")))?;
                self.visit_u64(value)
            }

            fn visit_f64<E: Error>(self, value: f64) -> Result<Self::Value, E> {
                if value.fract() != 0.0 || !value.is_finite() {
                    return Err(E::custom(format!("`{value}` is not a whole number")));
                }
                if value < 0.0 {
                    return Err(E::custom(format!("`{value}` is negative")));
                }
                if value >= u64::MAX as f64 {
                    return Err(E::custom(format!("`{value}` is too large")));
                }
                // Whole, non-negative and below u64::MAX: the cast is exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                self.visit_u64(value as u64)
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Build {
    /// The part of the build the transition and gating rules read.
    pub fn progress(&self) -> crate::rules::Progress {
        crate::rules::Progress {
            state: self.state,
            status: self.status,
            failures: self.failures,
            next_attempt_at: self.next_attempt_at,
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
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::message))]
    pub message: Option<String>,
    /// Compare-and-set: refuse the report unless the build is at this state.
    #[serde(default)]
    pub expected_state: Option<StateCode>,
    /// Where the report comes from: a CI run URL, a Concourse build, a GitHub run.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = schemas::source))]
    pub source: Option<String>,
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
        let too_many: Result<StartBuild, _> = serde_json::from_str(
            r#"{"platform":"aws","image_type":"rhel8","max_retries":4294967296}"#,
        );
        assert!(too_many.is_err(), "beyond u32");
    }
}
