//! What the resource reads and writes: `source`, `params`, and versions, each key documented in
//! `resource/README.md`. Unknown keys are refused with a message naming them, so a typo in a
//! pipeline fails the step instead of being ignored.

use std::collections::BTreeMap;

use buildstate_domain::wire::HistoryEntry;
use buildstate_domain::{
    BuildId, BuildKey, BuildRetryPolicy, EventKind, ImageType, Outputs, Platform, ReportStatus,
    StateCode,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The resource's `source`: which server, which build line, and how to talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The buildstate server, e.g. `https://buildstate.example.com`.
    pub api_url: String,
    /// An API token (`read` scope for check/in, `write` for out).
    pub token: Secret,
    /// Track this one build instead of a build line.
    #[serde(default)]
    pub build_id: Option<BuildId>,
    /// The build line: platform and image type, and optionally a key.
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub image_type: Option<ImageType>,
    /// The key `out` starts or resumes builds with; `<platform>/<image_type>` if absent.
    #[serde(default)]
    pub key: Option<BuildKey>,
    /// A description for builds `out` starts.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels for builds `out` starts, beside the Concourse ones.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Failures a stage may have before a build `out` starts is blocked.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// The retry policy of builds `out` starts (docs/rules.md, "Retry policies"): `rules`, each
    /// for `stages` (a code or `"15-45"`) with any of `max_retries`, `backoff_base_secs`,
    /// `backoff_cap_secs`, `restart_from`. A resumed build keeps the one it started with.
    #[serde(default)]
    pub retry_policy: Option<BuildRetryPolicy>,
    /// Emit only some transitions from `check`, e.g. `events: [retry_due]` for a resource
    /// that re-triggers the job when the server makes a failed stage's retry due.
    #[serde(default)]
    pub filter: Option<Filter>,
    /// The longest `out` waits out a failed stage's backoff before reporting on it (900 if
    /// absent; 0: fail at once with `retry_too_soon`). `params` may override it.
    #[serde(default)]
    pub backoff_max_wait_seconds: Option<u64>,
    /// Log each step on stderr (never the token).
    #[serde(default)]
    pub debug: bool,
    /// Per-request timeout in seconds (30 if absent).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Attempts per API call, the first included (4 if absent).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// PEM certificates to trust beside the system's (a private CA).
    #[serde(default)]
    pub ca_certs: Option<String>,
    /// Send the token over plain `http://` to a host other than the worker itself (an internal
    /// server without TLS): anyone on the network path can read it. Warned about on stderr.
    #[serde(default)]
    pub allow_insecure: bool,
}

/// Which transitions `check` emits; an empty or absent list matches everything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// History event kinds: `started`, `in_progress`, `completed`, `failed`, `skipped`,
    /// `retried`, `reset`, `cancelled`, `taken_over`, `retry_due` (the server made a failed
    /// stage's next attempt due: trigger the job on it to retry by itself), `reopened` (a
    /// failure moved the build back to its stage's `restart_from`).
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// State codes.
    #[serde(default)]
    pub states: Vec<StateCode>,
}

impl Filter {
    /// Whether `entry` passes the filter.
    pub fn matches(&self, entry: &HistoryEntry) -> bool {
        (self.events.is_empty() || self.events.contains(&entry.kind))
            && (self.states.is_empty() || self.states.contains(&entry.state))
    }
}

/// A secret string: its `Debug` never shows it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `check`'s request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub source: Source,
    #[serde(default, deserialize_with = "given_version")]
    pub version: Option<GivenVersion>,
}

/// `in`'s request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InRequest {
    pub source: Source,
    #[serde(default, deserialize_with = "given_version")]
    pub version: Option<GivenVersion>,
    #[serde(default)]
    pub params: Option<InParams>,
}

/// `in`'s `params`: none yet; absent, `null` and `{}` are all fine.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InParams {}

/// `out`'s request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutRequest {
    pub source: Source,
    #[serde(default)]
    pub params: Option<OutParams>,
}

/// `out`'s `params`: what to report. Without `state` (and without `file`), `out` only starts or
/// resumes the build.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutParams {
    /// The stage reported on.
    #[serde(default)]
    pub state: Option<StateCode>,
    /// `in_progress`, `completed` or `failed`.
    #[serde(default)]
    pub status: Option<ReportStatus>,
    /// Take the status from Concourse's `BUILD_STATUS` (set in hooks since Concourse 8.2):
    /// `succeeded` reports `completed`; `failed`, `errored` and `aborted` report `failed`.
    #[serde(default)]
    pub status_from_build: bool,
    /// What happened, for the history.
    #[serde(default)]
    pub message: Option<String>,
    /// A file under the put's input directory holding the message (its end is kept).
    #[serde(default)]
    pub message_file: Option<String>,
    /// A JSON file under the put's input directory with the report in it ([`ReportFile`]).
    #[serde(default)]
    pub file: Option<String>,
    /// Refuse the report unless the build is at this state.
    #[serde(default)]
    pub expected_state: Option<StateCode>,
    /// With `completed` only: what the stage produced (`{"ami_id": "ami-0abc"}`), handed to
    /// the runs that resume the build by their `in` (`outputs/<KEY>`, `outputs.json`).
    #[serde(default)]
    pub outputs: Option<Outputs>,
    /// This put's bound on waiting out the stage's backoff (`source.backoff_max_wait_seconds`
    /// if absent).
    #[serde(default)]
    pub backoff_max_wait_seconds: Option<u64>,
}

/// The report a task writes for `params.file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportFile {
    pub state: StateCode,
    #[serde(default)]
    pub status: Option<ReportStatus>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub expected_state: Option<StateCode>,
    /// With `completed` only: what the stage produced.
    #[serde(default)]
    pub outputs: Option<Outputs>,
}

/// A version as Concourse hands it back: a map of strings. One this resource emitted has
/// every key of [`Version`]; anything else is "unknown" (check answers with the latest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GivenVersion {
    Known(Version),
    Unknown(BTreeMap<String, String>),
}

/// One transition of one build: Concourse identifies versions by content, and `seq` makes each
/// transition's content unique (a second failure at the same stage is a new version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    pub build_id: String,
    /// The history sequence number, as a string.
    pub seq: String,
    pub state: String,
    pub event: String,
}

impl Version {
    /// The version of history entry `entry` of build `build_id`.
    pub fn of(build_id: &BuildId, entry: &HistoryEntry) -> Version {
        Version {
            build_id: build_id.to_string(),
            seq: entry.seq.to_string(),
            state: entry.state.to_string(),
            event: entry.kind.as_str().to_owned(),
        }
    }

    /// The sequence number.
    pub fn seq(&self) -> i64 {
        self.seq.parse().unwrap_or(0)
    }
}

/// `version`: absent, `null` and `{}` mean none; values must be strings.
fn given_version<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<GivenVersion>, D::Error> {
    let map = Option::<BTreeMap<String, String>>::deserialize(deserializer)?;
    Ok(map.filter(|map| !map.is_empty()).map(|map| {
        let field = |name: &str| map.get(name).cloned();
        let known = (|| {
            let version = Version {
                build_id: field("build_id")?,
                seq: field("seq")?,
                state: field("state")?,
                event: field("event")?,
            };
            let valid = map.len() == 4
                && version.build_id.parse::<BuildId>().is_ok()
                && version.seq.parse::<i64>().is_ok_and(|seq| seq > 0);
            valid.then_some(version)
        })();
        match known {
            Some(version) => GivenVersion::Known(version),
            None => GivenVersion::Unknown(map),
        }
    }))
}

/// Parses a request, naming the path of a bad or unknown key (`source.tokn`).
pub fn parse<T: DeserializeOwned>(request: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(request).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if path == "." {
            format!("invalid request: {inner}")
        } else {
            format!("invalid request: `{path}`: {inner}")
        }
    })
}

impl Source {
    /// Checks what serde cannot: a build line or a build id is named, and labels are valid.
    pub fn validate(&self) -> Result<(), String> {
        if self.build_id.is_none() && (self.platform.is_none() || self.image_type.is_none()) {
            return Err(
                "`source` must name a build line (`platform` and `image_type`, optionally `key`) or a `build_id`"
                    .to_owned(),
            );
        }
        if self.api_url.trim().is_empty() {
            return Err("`source.api_url` is empty".to_owned());
        }
        if self.token.expose().is_empty() {
            return Err("`source.token` is empty".to_owned());
        }
        buildstate_domain::Labels::try_from(self.labels.clone())
            .map_err(|error| format!("`source.labels`: {error}"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> serde_json::Value {
        json!({"api_url": "http://127.0.0.1:1", "token": "t", "platform": "aws", "image_type": "rhel8"})
    }

    #[test]
    fn an_unknown_source_key_is_named() {
        let mut source = source();
        source["tokn"] = json!("x");
        let error = parse::<CheckRequest>(json!({ "source": source })).expect_err("refused");
        assert!(
            error.contains("`source.tokn`: unknown field `tokn`"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_params_key_is_named() {
        let error = parse::<OutRequest>(json!({"source": source(), "params": {"stat": 5}}))
            .expect_err("refused");
        assert!(
            error.contains("`params.stat`: unknown field `stat`"),
            "{error}"
        );
    }

    #[test]
    fn an_absent_null_or_empty_version_is_none() {
        for version in [None, Some(json!(null)), Some(json!({}))] {
            let mut request = json!({ "source": source() });
            if let Some(version) = version {
                request["version"] = version;
            }
            let parsed = parse::<CheckRequest>(request).expect("parsed");
            assert_eq!(parsed.version, None);
        }
    }

    #[test]
    fn version_values_must_be_strings() {
        let error = parse::<CheckRequest>(json!({"source": source(), "version": {"seq": 3}}))
            .expect_err("refused");
        assert!(error.contains("`version"), "{error}");
    }

    #[test]
    fn a_version_from_elsewhere_is_unknown() {
        let parsed = parse::<CheckRequest>(json!({"source": source(), "version": {"ref": "abc"}}))
            .expect("parsed");
        assert!(matches!(parsed.version, Some(GivenVersion::Unknown(_))));
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let parsed = parse::<CheckRequest>(json!({"source": source()})).expect("parsed");
        assert!(!format!("{parsed:?}").contains("\"t\""));
    }
}
