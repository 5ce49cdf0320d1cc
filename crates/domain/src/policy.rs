//! Retry policies (docs/rules.md, "Retry policies"): what a build allows per stage or range of
//! stages — retries, backoff base and cap, and `restart_from`, the earlier stage whose result a
//! failure here does not survive.
//!
//! A build's policy is set when it starts and kept for its life (a resumed build keeps the one
//! it started with). It is parsed, and so validated, by deserializing [`BuildRetryPolicy`]:
//! every front end reads its YAML or JSON through the same type and gets the same sentences.
//! Stages the policy does not name keep the build's defaults (its `max_retries`, the server's
//! backoff), so a build without a policy behaves exactly as before policies existed.
//!
//! [`BuildRetryPolicy::for_stage`] is the one answer to "which retries, which backoff and which
//! `restart_from` apply to stage S"; the transition rules, the gate and the retry scheduler all
//! ask it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::limits::{MAX_BACKOFF_SECS, MAX_POLICY_RULES, MAX_RETRIES_LIMIT};
use crate::rules::RetryPolicy;
use crate::state::StateCode;

/// One stage (`25`) or an inclusive range of stages (`"15-45"`).
///
/// In JSON and YAML a single stage is a number (or its digits as text) and a range is text,
/// `"FIRST-LAST"`, the first stage not after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StageRange {
    pub first: StateCode,
    pub last: StateCode,
}

impl StageRange {
    /// Whether `stage` is one of the range's stages.
    pub fn contains(&self, stage: StateCode) -> bool {
        self.first <= stage && stage <= self.last
    }

    /// Whether the two ranges share a stage.
    pub fn overlaps(&self, other: &StageRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for StageRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The rejection of a `stages` value that is not a stage or a range of stages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a stage or a range of stages: {reason}")]
pub struct InvalidStageRange {
    pub value: String,
    pub reason: String,
}

impl FromStr for StageRange {
    type Err = InvalidStageRange;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| InvalidStageRange {
            value: text.to_owned(),
            reason,
        };
        let code = |part: &str| {
            part.trim()
                .parse::<StateCode>()
                .map_err(|error| invalid(error.to_string()))
        };
        let (first, last) = match text.split_once('-') {
            Some((first, last)) => (code(first)?, code(last)?),
            None => {
                let stage = code(text)?;
                (stage, stage)
            }
        };
        if first > last {
            return Err(invalid(format!(
                "the first stage ({first}) comes after the last ({last}); write `{last}-{first}`"
            )));
        }
        Ok(StageRange { first, last })
    }
}

impl Serialize for StageRange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.first == self.last {
            self.first.serialize(serializer)
        } else {
            serializer.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for StageRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RangeVisitor;

        impl serde::de::Visitor<'_> for RangeVisitor {
            type Value = StageRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a stage (`25`) or a range of stages (`\"15-45\"`)")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<StageRange, E> {
                // A valid code directly (a report reads its build's policy on its hot path); an
                // invalid one through the text rule, for its sentence.
                match StateCode::new(value) {
                    Ok(stage) => Ok(StageRange {
                        first: stage,
                        last: stage,
                    }),
                    Err(_) => value.to_string().parse().map_err(E::custom),
                }
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<StageRange, E> {
                match i64::try_from(value) {
                    Ok(value) => self.visit_i64(value),
                    Err(_) => value.to_string().parse().map_err(E::custom),
                }
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StageRange, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(RangeVisitor)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for StageRange {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(crate::state::state_code_number_schema())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^ *[0-9]{1,3} *(- *[0-9]{1,3} *)?$")),
            )
            .description(Some(
                "One stage (a state code) or an inclusive range of stages as text, `FIRST-LAST`",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for StageRange {}

/// What a build allows at one stage or range of stages. Every setting is optional: what a rule
/// leaves out is the build's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StageRule {
    /// The stage or range of stages the rule is for.
    pub stages: StageRange,
    /// Failures a stage may have before the build is blocked. At most 100.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::whole_number::option"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub max_retries: Option<u32>,
    /// The wait after a first failure, in seconds, doubled per further failure. At most a week.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::whole_number::option"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 604_800))]
    pub backoff_base_secs: Option<u64>,
    /// The longest wait, in seconds. At most a week.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::wire::whole_number::option"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 604_800))]
    pub backoff_cap_secs: Option<u64>,
    /// The earlier stage whose result a failure here does not survive: a failure reopens the
    /// stages from it to the failed one, which run again. Earlier than every stage of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_from: Option<StateCode>,
}

/// One line for people, in the words of the file: `stages 15-45: max_retries 2, restart_from 10`.
impl fmt::Display for StageRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stages {}:", self.stages)?;
        let settings = [
            ("max_retries", self.max_retries.map(u64::from)),
            ("backoff_base_secs", self.backoff_base_secs),
            ("backoff_cap_secs", self.backoff_cap_secs),
            (
                "restart_from",
                self.restart_from.map(|s| u64::from(s.value())),
            ),
        ];
        let mut first = true;
        for (name, value) in settings {
            if let Some(value) = value {
                let separator = if first { " " } else { ", " };
                write!(f, "{separator}{name} {value}")?;
                first = false;
            }
        }
        Ok(())
    }
}

/// A build's retry policy: at most 21 rules, whose stages do not overlap; unknown keys are
/// refused. Parsing checks every rule, so once parsed a policy is known good.
#[derive(Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// `deny_unknown_fields` here only tells the schema; the check is `UncheckedPolicy`'s.
#[serde(try_from = "UncheckedPolicy", deny_unknown_fields)]
pub struct BuildRetryPolicy {
    /// The rules, each for one stage or range of stages.
    #[cfg_attr(feature = "openapi", schema(max_items = 21))]
    rules: Vec<StageRule>,
    /// The JSON a store holds the policy as ([`Self::from_checked_json`]). Such a policy
    /// serializes as that text (a [`RawValue`], so through serde_json, which the server answers
    /// with): the server answers every report with the build and its policy, and writing 21
    /// rules anew each time cost a tenth of a report (BENCHMARKS.md, "Retry policies"). Any
    /// other policy is written field by field.
    #[serde(skip)]
    stored: Option<Arc<RawValue>>,
}

/// A policy as written, before [`BuildRetryPolicy::check`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UncheckedPolicy {
    rules: Vec<StageRule>,
}

/// What a policy's JSON holds: its rules.
#[derive(Serialize)]
struct PolicyJson<'a> {
    rules: &'a [StageRule],
}

impl Serialize for BuildRetryPolicy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.stored {
            Some(json) => json.serialize(serializer),
            None => PolicyJson { rules: &self.rules }.serialize(serializer),
        }
    }
}

/// Two policies are equal when their rules are, however they were written.
impl PartialEq for BuildRetryPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules
    }
}

impl Eq for BuildRetryPolicy {}

impl fmt::Debug for BuildRetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildRetryPolicy")
            .field("rules", &self.rules)
            .finish()
    }
}

impl TryFrom<UncheckedPolicy> for BuildRetryPolicy {
    type Error = InvalidPolicy;

    fn try_from(unchecked: UncheckedPolicy) -> Result<Self, Self::Error> {
        BuildRetryPolicy::new(unchecked.rules)
    }
}

/// Why a retry policy was refused: one sentence per problem, each naming the rule (its number,
/// from 1, and its stages) and the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry policy: {}", .problems.join("; "))]
pub struct InvalidPolicy {
    pub problems: Vec<String>,
}

/// What applies to one stage: the retries and backoff (with the server's lease), and the stage
/// a failure here reopens the build from, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageRetry {
    pub policy: RetryPolicy,
    pub restart_from: Option<StateCode>,
}

impl BuildRetryPolicy {
    /// The policy of no rules (a `const`, so a store can keep one in a `static`).
    pub const fn none() -> Self {
        BuildRetryPolicy {
            rules: Vec::new(),
            stored: None,
        }
    }

    /// A policy of `rules`, if [`check`](Self::check) finds nothing wrong with them.
    pub fn new(rules: Vec<StageRule>) -> Result<Self, InvalidPolicy> {
        let problems = Self::check(&rules);
        if problems.is_empty() {
            Ok(BuildRetryPolicy {
                rules,
                stored: None,
            })
        } else {
            Err(InvalidPolicy { problems })
        }
    }

    /// A policy as a store wrote it: the JSON of a policy that was checked when its build
    /// started, read back without checking it again (the server keeps what it parsed, by its
    /// text). Anything else is parsed with `Deserialize`, which checks.
    pub fn from_checked_json(json: &str) -> Result<Self, serde_json::Error> {
        let UncheckedPolicy { rules } = serde_json::from_str(json)?;
        // The stored text is what serializing the policy writes: keep it to answer with.
        let stored = RawValue::from_string(json.to_owned())?;
        Ok(BuildRetryPolicy {
            rules,
            stored: Some(Arc::from(stored)),
        })
    }

    /// The rules, in the order they were written.
    pub fn rules(&self) -> &[StageRule] {
        &self.rules
    }

    /// Whether the policy has no rule: every stage keeps the build's defaults.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What is wrong with `rules`, one sentence per problem (none: they make a policy). State
    /// codes and ranges are checked by their own parsing before this.
    pub fn check(rules: &[StageRule]) -> Vec<String> {
        let mut problems = Vec::new();
        if rules.len() > MAX_POLICY_RULES {
            problems.push(format!(
                "a retry policy has at most {MAX_POLICY_RULES} rules (one per stage); this one has {}",
                rules.len()
            ));
        }
        for (index, rule) in rules.iter().enumerate() {
            let name = format!("rule {} (stages {})", index + 1, rule.stages);
            if rule.max_retries.is_none()
                && rule.backoff_base_secs.is_none()
                && rule.backoff_cap_secs.is_none()
                && rule.restart_from.is_none()
            {
                problems.push(format!(
                    "{name} sets nothing: give it `max_retries`, `backoff_base_secs`, \
                     `backoff_cap_secs` or `restart_from`"
                ));
            }
            if let Some(max_retries) = rule.max_retries.filter(|&n| n > MAX_RETRIES_LIMIT) {
                problems.push(format!(
                    "{name}: `max_retries` is {max_retries}; it must be 0 to {MAX_RETRIES_LIMIT}"
                ));
            }
            for (field, secs) in [
                ("backoff_base_secs", rule.backoff_base_secs),
                ("backoff_cap_secs", rule.backoff_cap_secs),
            ] {
                if let Some(secs) = secs.filter(|&secs| secs > MAX_BACKOFF_SECS) {
                    problems.push(format!(
                        "{name}: `{field}` is {secs}; it must be at most {MAX_BACKOFF_SECS} (a week)"
                    ));
                }
            }
            if let (Some(base), Some(cap)) = (rule.backoff_base_secs, rule.backoff_cap_secs) {
                if base > cap {
                    problems.push(format!(
                        "{name}: `backoff_base_secs` ({base}) is more than `backoff_cap_secs` ({cap}); the first wait cannot be longer than the longest"
                    ));
                }
            }
            if let Some(restart_from) = rule.restart_from {
                if restart_from >= rule.stages.first {
                    problems.push(format!(
                        "{name}: `restart_from` {restart_from} must be earlier than stage {}, the rule's first stage",
                        rule.stages.first
                    ));
                }
            }
            for (other_index, other) in rules[..index].iter().enumerate() {
                if other.stages.overlaps(&rule.stages) {
                    problems.push(format!(
                        "{name} overlaps rule {} (stages {}): each stage may have one rule",
                        other_index + 1,
                        other.stages
                    ));
                }
            }
        }
        problems
    }

    /// The rule for `stage`, if the policy names it.
    pub fn rule_for(&self, stage: StateCode) -> Option<&StageRule> {
        self.rules.iter().find(|rule| rule.stages.contains(stage))
    }

    /// What applies to `stage`: its rule's settings, and `defaults` (the build's `max_retries`
    /// with the server's backoff and lease) for what the rule leaves out or for a stage the
    /// policy does not name.
    pub fn for_stage(&self, stage: StateCode, defaults: &RetryPolicy) -> StageRetry {
        let Some(rule) = self.rule_for(stage) else {
            return StageRetry {
                policy: *defaults,
                restart_from: None,
            };
        };
        StageRetry {
            policy: RetryPolicy {
                max_retries: rule.max_retries.unwrap_or(defaults.max_retries),
                backoff_base: rule
                    .backoff_base_secs
                    .map_or(defaults.backoff_base, Duration::from_secs),
                backoff_cap: rule
                    .backoff_cap_secs
                    .map_or(defaults.backoff_cap, Duration::from_secs),
                lease_duration: defaults.lease_duration,
            },
            restart_from: rule.restart_from,
        }
    }

    /// The failures `stage` may have before the build is blocked: its rule's `max_retries`, or
    /// the build's `default`.
    pub fn max_retries(&self, stage: StateCode, default: u32) -> u32 {
        self.rule_for(stage)
            .and_then(|rule| rule.max_retries)
            .unwrap_or(default)
    }

    /// The stage a failure at `stage` reopens the build from, if its rule says.
    pub fn restart_from(&self, stage: StateCode) -> Option<StateCode> {
        self.rule_for(stage).and_then(|rule| rule.restart_from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::code;

    fn parse(json: &str) -> Result<BuildRetryPolicy, String> {
        serde_json::from_str(json).map_err(|error| error.to_string())
    }

    fn defaults() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff_base: Duration::from_secs(30),
            backoff_cap: Duration::from_secs(3600),
            lease_duration: Duration::from_secs(60),
        }
    }

    /// The policy of the example pipelines: kickstart retried 3 times with a long backoff, the
    /// in-VM stages restarting from the green image.
    pub(crate) fn example() -> BuildRetryPolicy {
        parse(
            r#"{"rules": [
                {"stages": 5, "max_retries": 3, "backoff_base_secs": 600, "backoff_cap_secs": 3600},
                {"stages": "15-45", "max_retries": 2, "restart_from": 10}
            ]}"#,
        )
        .expect("valid")
    }

    #[test]
    fn the_effective_policy_of_a_stage_is_its_rule_over_the_defaults() {
        let policy = example();
        let secs = Duration::from_secs;
        // (stage, max_retries, backoff base, backoff cap, restart_from)
        let cases = [
            (0, 3, secs(30), secs(3600), None),
            (5, 3, secs(600), secs(3600), None),
            (10, 3, secs(30), secs(3600), None),
            (15, 2, secs(30), secs(3600), Some(10)),
            (25, 2, secs(30), secs(3600), Some(10)),
            (45, 2, secs(30), secs(3600), Some(10)),
            (50, 3, secs(30), secs(3600), None),
            (100, 3, secs(30), secs(3600), None),
        ];
        for (stage, max_retries, base, cap, restart_from) in cases {
            let got = policy.for_stage(code(stage), &defaults());
            assert_eq!(
                (
                    got.policy.max_retries,
                    got.policy.backoff_base,
                    got.policy.backoff_cap,
                    got.restart_from.map(i64::from)
                ),
                (max_retries, base, cap, restart_from),
                "stage {stage}"
            );
            assert_eq!(
                got.policy.lease_duration,
                secs(60),
                "the lease is the server's"
            );
        }
        let none = BuildRetryPolicy::default();
        assert_eq!(
            none.for_stage(code(25), &defaults()),
            StageRetry {
                policy: defaults(),
                restart_from: None
            },
            "no policy: the defaults"
        );
    }

    #[test]
    fn a_stored_policy_reads_back_as_it_was_written() {
        let json = serde_json::to_string(&example()).expect("serializes");
        assert_eq!(
            BuildRetryPolicy::from_checked_json(&json).expect("reads back"),
            example()
        );
    }

    /// A policy read back from a store answers with the stored text as it is, on its own,
    /// inside a build's JSON, as a value and after a clone; any other is written field by
    /// field (so it pretty-prints, as the resource's `retry_policy.json` is).
    #[test]
    fn a_policy_answers_with_the_json_it_was_written_as_wherever_it_is_serialized() {
        let written = serde_json::to_string(&example()).expect("serializes");
        // A text with other spacing shows that the stored text, not a rewrite, is answered.
        let stored = written.replace(',', ", ");
        let read = BuildRetryPolicy::from_checked_json(&stored).expect("reads back");

        let again = serde_json::to_string(&read.clone()).expect("serializes");
        #[derive(Serialize)]
        struct Holder<'a> {
            retry_policy: &'a BuildRetryPolicy,
        }
        let inside = serde_json::to_string(&Holder {
            retry_policy: &read,
        })
        .expect("serializes inside another value");
        let as_value = serde_json::to_value(&read).expect("a value");

        assert_eq!(again, stored);
        assert_eq!(inside, format!(r#"{{"retry_policy":{stored}}}"#));
        assert_eq!(
            as_value,
            serde_json::from_str::<serde_json::Value>(&written).expect("JSON")
        );
        assert_eq!(read, example(), "equal rules, however they were written");
        assert!(
            serde_json::to_string_pretty(&example())
                .expect("pretty")
                .contains("\n      \"stages\": 5,\n"),
            "a policy that was not stored is written field by field"
        );
    }

    #[test]
    fn text_that_is_not_json_is_not_a_stored_policy() {
        assert!(BuildRetryPolicy::from_checked_json(r#"{"rules":[]"#).is_err());
        assert!(BuildRetryPolicy::from_checked_json(r#"{"rules":[]} trailing"#).is_err());
    }

    #[test]
    fn a_rule_reads_as_one_line_in_the_words_of_the_file() {
        let lines: Vec<String> = example().rules().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "stages 5: max_retries 3, backoff_base_secs 600, backoff_cap_secs 3600",
                "stages 15-45: max_retries 2, restart_from 10",
            ]
        );
    }

    #[test]
    fn stages_are_one_code_or_a_range_written_first_to_last() {
        // (JSON, the first and last stage, or words of the refusal)
        type Case = (&'static str, Result<(i64, i64), &'static str>);
        let cases: [Case; 8] = [
            ("25", Ok((25, 25))),
            ("\"25\"", Ok((25, 25))),
            ("\"15-45\"", Ok((15, 45))),
            ("\" 15 - 45 \"", Ok((15, 45))),
            (
                "\"45-15\"",
                Err("the first stage (45) comes after the last (15)"),
            ),
            ("\"15-47\"", Err("`47` is not a state code")),
            ("7", Err("`7` is not a state code")),
            ("\"abc\"", Err("`abc` is not a state code")),
        ];
        for (json, expected) in cases {
            let got = serde_json::from_str::<StageRange>(json);
            match (got, expected) {
                (Ok(range), Ok((first, last))) => {
                    assert_eq!(
                        (i64::from(range.first), i64::from(range.last)),
                        (first, last),
                        "{json}"
                    );
                }
                (Err(error), Err(words)) => {
                    assert!(error.to_string().contains(words), "{json}: {error}");
                }
                (got, _) => panic!("{json}: {got:?}"),
            }
        }
        assert_eq!(
            serde_json::to_string(&example()).expect("serializes"),
            r#"{"rules":[{"stages":5,"max_retries":3,"backoff_base_secs":600,"backoff_cap_secs":3600},{"stages":"15-45","max_retries":2,"restart_from":10}]}"#,
            "a single stage is written as a number, a range as text"
        );
    }

    #[test]
    fn bad_policies_are_refused_with_a_sentence_naming_the_rule_and_the_setting() {
        let many: Vec<String> = (0..=20)
            .map(|n| format!(r#"{{"stages": {}, "max_retries": 1}}"#, n * 5))
            .collect();
        let too_many = format!(r#"{{"rules": [{}, {}]}}"#, many.join(","), many[0]);
        let cases = [
            (
                r#"{"rules": [{"stages": 25, "restart_from": 30}]}"#,
                "rule 1 (stages 25): `restart_from` 30 must be earlier than stage 25, the rule's first stage",
            ),
            (
                r#"{"rules": [{"stages": "15-45", "restart_from": 15}]}"#,
                "rule 1 (stages 15-45): `restart_from` 15 must be earlier than stage 15",
            ),
            (
                r#"{"rules": [{"stages": 25, "restart_from": 12}]}"#,
                "`12` is not a state code",
            ),
            (
                r#"{"rules": [{"stages": "15-45", "max_retries": 1}, {"stages": 25, "max_retries": 2}]}"#,
                "rule 2 (stages 25) overlaps rule 1 (stages 15-45): each stage may have one rule",
            ),
            (
                r#"{"rules": [{"stages": 25, "max_retries": 101}]}"#,
                "rule 1 (stages 25): `max_retries` is 101; it must be 0 to 100",
            ),
            (
                r#"{"rules": [{"stages": 25, "backoff_cap_secs": 604801}]}"#,
                "rule 1 (stages 25): `backoff_cap_secs` is 604801; it must be at most 604800 (a week)",
            ),
            (
                r#"{"rules": [{"stages": 25, "backoff_base_secs": 60, "backoff_cap_secs": 30}]}"#,
                "rule 1 (stages 25): `backoff_base_secs` (60) is more than `backoff_cap_secs` (30)",
            ),
            (
                r#"{"rules": [{"stages": 25}]}"#,
                "rule 1 (stages 25) sets nothing",
            ),
            (
                r#"{"rules": [{"stages": 25, "retries": 2}]}"#,
                "unknown field `retries`",
            ),
            (r#"{"rules": [], "extra": 1}"#, "unknown field `extra`"),
            (r#"{"rules": [{"max_retries": 2}]}"#, "missing field `stages`"),
            (
                r#"{"rules": [{"stages": 25, "max_retries": -1}]}"#,
                "`-1` is negative",
            ),
            (
                &too_many,
                "a retry policy has at most 21 rules (one per stage); this one has 22",
            ),
        ];
        for (json, words) in cases {
            let error = parse(json).expect_err(json);
            assert!(error.contains(words), "{json}:\n{error}");
        }
        // Every problem is named, not only the first.
        let error = parse(r#"{"rules": [{"stages": 25, "restart_from": 30, "max_retries": 101}]}"#)
            .expect_err("two problems");
        assert!(
            error.contains("`max_retries` is 101") && error.contains("`restart_from` 30"),
            "{error}"
        );
    }

    #[test]
    fn good_policies_are_accepted_at_the_limits() {
        let every_stage: Vec<String> = (0..=20)
            .map(|n| format!(r#"{{"stages": {}, "max_retries": 100}}"#, n * 5))
            .collect();
        let cases = [
            r#"{"rules": []}"#.to_owned(),
            format!(r#"{{"rules": [{}]}}"#, every_stage.join(",")),
            r#"{"rules": [{"stages": 5, "restart_from": 0}]}"#.to_owned(),
            r#"{"rules": [{"stages": 25, "backoff_base_secs": 604800, "backoff_cap_secs": 604800}]}"#.to_owned(),
            r#"{"rules": [{"stages": "15-20", "max_retries": 0}, {"stages": "25-45", "restart_from": 20}]}"#.to_owned(),
            r#"{"rules": [{"stages": 25, "max_retries": 2.0}]}"#.to_owned(),
        ];
        for json in cases {
            assert!(parse(&json).is_ok(), "{json}: {:?}", parse(&json));
        }
    }
}
