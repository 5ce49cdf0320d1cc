//! Stage outputs: the small string map a `completed` report may carry (an image id, an instance
//! address, a snapshot id) so that a resumed run gets back what the earlier stages produced.
//!
//! Outputs are not a secret store: they are shown to every token that can read the build, in
//! `bldst build outputs`, in history and in CI logs. A value that contains the reporting token
//! itself is refused, as the one secret the server can recognise.
//!
//! Keys are environment-variable names (`ami_id`, `INSTANCE_IP`) so that
//! `bldst build outputs --format env` can always print them as `KEY=value` lines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::StateCode;
use crate::status::ReportStatus;

/// Why a report's outputs were rejected: `field` is a path such as `outputs.ami_id`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidOutputs {
    pub field: String,
    pub reason: String,
}

/// What a completed stage produced, for the runs that resume the build: at most 32 entries;
/// keys are environment-variable names (a letter or `_`, then letters, digits and `_`; at most
/// 64 characters); values are 1 to 1024 bytes of single-line text (no control characters).
/// Not for secrets: anyone who can read the build reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, String>",
    into = "BTreeMap<String, String>"
)]
pub struct Outputs(BTreeMap<String, String>);

/// The rules of [`check_output_key`] and [`check_output_value`] as JSON Schema. One gap:
/// JSON Schema counts a value's length in characters, the rule in bytes, so a value of at most
/// 1024 characters but more than 1024 bytes passes the schema and is refused.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Outputs {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "What a completed stage produced: keys are environment-variable names, values 1 to 1024 bytes of single-line text",
            ))
            .max_properties(Some(Outputs::MAX_COUNT))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Za-z_][A-Za-z0-9_]{0,63}$")),
            ))
            .additional_properties(Some(AdditionalProperties::RefOr(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(Outputs::MAX_VALUE_BYTES))
                    .pattern(Some("^[^\\x00-\\x1f\\x7f-\\x9f]+$"))
                    .into(),
            )))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Outputs {}

impl Outputs {
    /// Most outputs one report may carry.
    pub const MAX_COUNT: usize = crate::limits::MAX_OUTPUTS;
    /// Longest key, in characters (keys are ASCII).
    pub const MAX_KEY_CHARS: usize = crate::limits::MAX_OUTPUT_KEY_CHARS;
    /// Longest value, in bytes of UTF-8.
    pub const MAX_VALUE_BYTES: usize = crate::limits::MAX_OUTPUT_VALUE_BYTES;

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Refuses the outputs if any value contains `token`, the bearer token the report was sent
    /// with: outputs are readable by anyone who can read the build.
    pub fn refuse_token(&self, token: &str) -> Result<(), InvalidOutputs> {
        if token.is_empty() {
            return Ok(());
        }
        match self.0.iter().find(|(_, value)| value.contains(token)) {
            Some((key, _)) => Err(InvalidOutputs {
                field: format!("outputs.{key}"),
                reason: "the value contains the API token this request was sent with; outputs \
                         are readable by anyone who can read the build, never put secrets in them"
                    .into(),
            }),
            None => Ok(()),
        }
    }

    /// Only a `completed` report carries outputs: they are what a finished stage produced.
    pub fn check_status(&self, status: ReportStatus) -> Result<(), InvalidOutputs> {
        if self.is_empty() || status == ReportStatus::Completed {
            return Ok(());
        }
        Err(InvalidOutputs {
            field: "outputs".into(),
            reason: format!("only a `completed` report carries outputs; this one is `{status}`"),
        })
    }
}

/// Checks one output key: an environment-variable name.
pub fn check_output_key(key: &str) -> Result<(), InvalidOutputs> {
    let invalid = |reason: String| {
        Err(InvalidOutputs {
            field: format!("outputs.{key}"),
            reason,
        })
    };
    let Some(first) = key.chars().next() else {
        return Err(InvalidOutputs {
            field: "outputs".into(),
            reason: "an output key must not be empty".into(),
        });
    };
    if key.chars().count() > Outputs::MAX_KEY_CHARS {
        return invalid(format!(
            "the key must be at most {} characters",
            Outputs::MAX_KEY_CHARS
        ));
    }
    if !(first.is_ascii_alphabetic() || first == '_') {
        return invalid(
            "the key must start with a letter or `_` (keys are environment-variable names)".into(),
        );
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return invalid(format!(
            "{} is not allowed in a key: use letters, digits and `_`",
            describe_char(bad)
        ));
    }
    Ok(())
}

/// Checks one output value: not empty, short, no control characters.
pub fn check_output_value(key: &str, value: &str) -> Result<(), InvalidOutputs> {
    let invalid = |reason: String| {
        Err(InvalidOutputs {
            field: format!("outputs.{key}"),
            reason,
        })
    };
    if value.is_empty() {
        return invalid("the value must not be empty".into());
    }
    if value.len() > Outputs::MAX_VALUE_BYTES {
        return invalid(format!(
            "the value must be at most {} bytes (it is {})",
            Outputs::MAX_VALUE_BYTES,
            value.len()
        ));
    }
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return invalid(format!(
            "the value contains the control character {}; outputs are single-line text",
            describe_char(bad)
        ));
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("`{c}`")
    }
}

impl TryFrom<BTreeMap<String, String>> for Outputs {
    type Error = InvalidOutputs;

    fn try_from(outputs: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        if outputs.len() > Self::MAX_COUNT {
            return Err(InvalidOutputs {
                field: "outputs".into(),
                reason: format!(
                    "at most {} outputs per report ({} given)",
                    Self::MAX_COUNT,
                    outputs.len()
                ),
            });
        }
        for (key, value) in &outputs {
            check_output_key(key)?;
            check_output_value(key, value)?;
        }
        Ok(Outputs(outputs))
    }
}

impl From<Outputs> for BTreeMap<String, String> {
    fn from(outputs: Outputs) -> Self {
        outputs.0
    }
}

/// One entry of a build's merged outputs: the value and the stage that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StageOutput {
    pub value: String,
    /// The completed stage whose report set this value.
    pub stage: StateCode,
}

/// The outputs of every completed stage of a build, by stage. The store keeps this; the API
/// shows its [`merged`](StageOutputs::merged) view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageOutputs(pub(crate) BTreeMap<StateCode, Outputs>);

impl From<BTreeMap<StateCode, Outputs>> for StageOutputs {
    fn from(stages: BTreeMap<StateCode, Outputs>) -> Self {
        StageOutputs(stages.into_iter().filter(|(_, o)| !o.is_empty()).collect())
    }
}

impl StageOutputs {
    /// Each stage that completed with outputs, in stage order.
    pub fn stages(&self) -> &BTreeMap<StateCode, Outputs> {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The outputs `stage` completed with, if any.
    pub fn of(&self, stage: StateCode) -> Option<&Outputs> {
        self.0.get(&stage)
    }

    /// Every key once: a later stage's value wins over an earlier stage's.
    pub fn merged(&self) -> BTreeMap<String, StageOutput> {
        let mut merged = BTreeMap::new();
        for (stage, outputs) in &self.0 {
            for (key, value) in outputs.as_map() {
                merged.insert(
                    key.clone(),
                    StageOutput {
                        value: value.clone(),
                        stage: *stage,
                    },
                );
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(pairs: &[(&str, &str)]) -> Outputs {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Outputs::try_from(map).expect("valid outputs")
    }

    #[test]
    fn every_output_rule() {
        let long_key = "k".repeat(Outputs::MAX_KEY_CHARS + 1);
        let long_value = "v".repeat(Outputs::MAX_VALUE_BYTES + 1);
        let too_many: Vec<(String, String)> = (0..=Outputs::MAX_COUNT)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        type Case = (&'static str, Vec<(String, String)>, Option<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "a plain pair",
                vec![("ami_id".into(), "ami-0abc".into())],
                None,
            ),
            (
                "upper case and digits",
                vec![("INSTANCE_IP4".into(), "10.0.0.7".into())],
                None,
            ),
            (
                "a leading underscore",
                vec![("_x".into(), "1".into())],
                None,
            ),
            (
                "non-ASCII text in a value",
                vec![("note".into(), "grün ✓".into())],
                None,
            ),
            (
                "an empty key",
                vec![(String::new(), "v".into())],
                Some("outputs"),
            ),
            (
                "an empty value",
                vec![("k".into(), String::new())],
                Some("outputs.k"),
            ),
            (
                "a key with a space",
                vec![("ami id".into(), "v".into())],
                Some("outputs.ami id"),
            ),
            (
                "a key with a dash",
                vec![("ami-id".into(), "v".into())],
                Some("outputs.ami-id"),
            ),
            (
                "a key starting with a digit",
                vec![("1st".into(), "v".into())],
                Some("outputs.1st"),
            ),
            (
                "a key too long",
                vec![(long_key.clone(), "v".into())],
                Some("outputs.kkkk"),
            ),
            (
                "a value too long",
                vec![("k".into(), long_value)],
                Some("outputs.k"),
            ),
            (
                "a newline in a value",
                vec![("k".into(), "a\nb".into())],
                Some("outputs.k"),
            ),
            (
                "a NUL in a value",
                vec![("k".into(), "a\0b".into())],
                Some("outputs.k"),
            ),
            (
                "an escape in a value",
                vec![("k".into(), "\u{1b}[31m".into())],
                Some("outputs.k"),
            ),
            ("too many outputs", too_many, Some("outputs")),
        ];
        for (name, pairs, rejected_field) in cases {
            let result = Outputs::try_from(pairs.into_iter().collect::<BTreeMap<_, _>>());
            match (rejected_field, result) {
                (None, Ok(_)) => {}
                (Some(field), Err(error)) => {
                    assert!(error.field.starts_with(field), "{name}: {error}")
                }
                (expected, got) => panic!("{name}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn rejections_say_what_is_wrong() {
        let error = Outputs::try_from(BTreeMap::from([("k".to_owned(), "a\tb".to_owned())]))
            .expect_err("tab");
        assert_eq!(
            error.to_string(),
            "invalid outputs.k: the value contains the control character U+0009; outputs are single-line text"
        );
        let error = Outputs::try_from(BTreeMap::from([("ami-id".to_owned(), "x".to_owned())]))
            .expect_err("dash");
        assert_eq!(
            error.to_string(),
            "invalid outputs.ami-id: `-` is not allowed in a key: use letters, digits and `_`"
        );
    }

    #[test]
    fn a_value_holding_the_callers_token_is_refused() {
        let token = "bst_0123456789abcdefghij0123456789abcdefghij";
        let leaked = outputs(&[("ok", "fine"), ("auth", &format!("Bearer {token}"))]);
        let error = leaked.refuse_token(token).expect_err("token in a value");
        assert_eq!(error.field, "outputs.auth");
        assert!(error.reason.contains("never put secrets"), "{error}");
        assert!(outputs(&[("ok", "fine")]).refuse_token(token).is_ok());
    }

    #[test]
    fn only_completions_carry_outputs() {
        let some = outputs(&[("ami_id", "ami-1")]);
        assert!(some.check_status(ReportStatus::Completed).is_ok());
        assert!(some.check_status(ReportStatus::InProgress).is_err());
        assert!(some.check_status(ReportStatus::Failed).is_err());
        assert!(Outputs::default()
            .check_status(ReportStatus::Failed)
            .is_ok());
    }
}
