//! State codes: how far a build got, 0..=100 in steps of 5, with their default names and phases.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One stage of an image build: a multiple of 5 from 0 (triggered) to 100 (published).
///
/// Once parsed, a `StateCode` is known good; anything else (7, 105, -5, "abc") is rejected with
/// [`InvalidStateCode`], whose message names the valid range.
///
/// In JSON it is a number; a string holding the number (`"10"`) is accepted too, because
/// Concourse `params` and GitHub Action inputs are strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "i64")]
pub struct StateCode(u8);

impl<'de> Deserialize<'de> for StateCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CodeVisitor;

        impl serde::de::Visitor<'_> for CodeVisitor {
            type Value = StateCode;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a state code: 0 to 100 in steps of 5")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<StateCode, E> {
                StateCode::new(value).map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<StateCode, E> {
                let invalid = || {
                    E::custom(InvalidStateCode {
                        value: value.to_string(),
                    })
                };
                let value = i64::try_from(value).map_err(|_| invalid())?;
                StateCode::new(value).map_err(|_| invalid())
            }

            /// `5.0` is the number 5 (JSON Schema counts it an integer too); `5.5` is no code.
            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<StateCode, E> {
                let invalid = || {
                    E::custom(InvalidStateCode {
                        value: value.to_string(),
                    })
                };
                if value.fract() != 0.0 || !(0.0..=100.0).contains(&value) {
                    return Err(invalid());
                }
                // In range and whole, so the cast is exact.
                #[allow(clippy::cast_possible_truncation)]
                StateCode::new(value as i64).map_err(|_| invalid())
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<StateCode, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(CodeVisitor)
    }
}

/// What [`StateCode::from_str`] accepts: one of the codes, in plain digits, perhaps padded
/// with spaces, tabs or newlines (a value read from a file or a CI variable).
#[cfg(feature = "openapi")]
const STATE_CODE_TEXT_PATTERN: &str =
    "^[ \\t\\n\\r]*(0|5|10|15|20|25|30|35|40|45|50|55|60|65|70|75|80|85|90|95|100)[ \\t\\n\\r]*$";

/// A state code as a JSON number, for the schemas that accept one (this one, a policy's
/// stages).
#[cfg(feature = "openapi")]
pub(crate) fn state_code_number_schema() -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(100))
        .multiple_of(Some(5))
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for StateCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        // Responses always carry the number; requests may send it as text, for Concourse
        // `params` and GitHub Action inputs, which are strings.
        OneOfBuilder::new()
            .item(state_code_number_schema())
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(STATE_CODE_TEXT_PATTERN)),
            )
            .description(Some(
                "A state code: 0 (triggered) to 100 (published) in steps of 5; requests may send it as a string of digits",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for StateCode {}

/// The rejection of a value that is not a state code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{value}` is not a state code: valid codes are 0 to 100 in steps of 5 (0, 5, 10, ..., 100)"
)]
pub struct InvalidStateCode {
    /// The rejected input, as the caller wrote it.
    pub value: String,
}

/// The part of the image pipeline a state code belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Phase {
    Initial,
    Infrastructure,
    Application,
    Validation,
    Delivered,
}

const DEFAULT_NAMES: [&str; 21] = [
    "triggered",
    "kickstart",
    "green image (bootable, SSH)",
    "base configuration",
    "cloud provider setup",
    "security baseline",
    "monitoring agents",
    "runtime prerequisites",
    "network configuration",
    "storage configuration",
    "user management",
    "service installation",
    "application deployment",
    "configuration management",
    "integration testing",
    "performance tuning",
    "backup setup",
    "documentation and metadata",
    "final validation",
    "image sealing",
    "published",
];

impl StateCode {
    /// 0: the pipeline was triggered; every build starts here.
    pub const TRIGGERED: StateCode = StateCode(0);
    /// 100: the image is published; completing it completes the build.
    pub const PUBLISHED: StateCode = StateCode(100);
    /// The distance between two consecutive codes.
    pub const STEP: u8 = 5;

    /// Every state code, in order.
    pub fn all() -> impl DoubleEndedIterator<Item = StateCode> + ExactSizeIterator {
        (0..=100u8).step_by(usize::from(Self::STEP)).map(StateCode)
    }

    /// Parses a number, rejecting anything off the 0..=100 step-5 grid.
    pub fn new(value: i64) -> Result<Self, InvalidStateCode> {
        match u8::try_from(value) {
            Ok(code) if code <= 100 && code % Self::STEP == 0 => Ok(StateCode(code)),
            _ => Err(InvalidStateCode {
                value: value.to_string(),
            }),
        }
    }

    /// The code as a number.
    pub fn value(self) -> u8 {
        self.0
    }

    /// The code after this one, or `None` at 100.
    pub fn next(self) -> Option<StateCode> {
        (self.0 < 100).then(|| StateCode(self.0 + Self::STEP))
    }

    /// The codes strictly between `self` (inclusive) and `end` (exclusive): the stages a jump
    /// from `self` to `end` skips.
    pub fn up_to(self, end: StateCode) -> impl Iterator<Item = StateCode> {
        (self.0..end.0)
            .step_by(usize::from(Self::STEP))
            .map(StateCode)
    }

    /// The default name of this stage (servers may override names by configuration).
    pub fn default_name(self) -> &'static str {
        DEFAULT_NAMES[usize::from(self.0 / Self::STEP)]
    }

    /// The phase of the pipeline this stage belongs to.
    pub fn phase(self) -> Phase {
        match self.0 {
            0 => Phase::Initial,
            5..=45 => Phase::Infrastructure,
            50..=80 => Phase::Application,
            85..=95 => Phase::Validation,
            _ => Phase::Delivered,
        }
    }
}

impl TryFrom<i64> for StateCode {
    type Error = InvalidStateCode;

    fn try_from(value: i64) -> Result<Self, Self::Error> {
        StateCode::new(value)
    }
}

impl From<StateCode> for i64 {
    fn from(code: StateCode) -> i64 {
        i64::from(code.0)
    }
}

impl FromStr for StateCode {
    type Err = InvalidStateCode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidStateCode {
            value: text.to_owned(),
        };
        // Plain digits only: no sign, no leading zero, no other padding than spaces, tabs and
        // newlines (what the OpenAPI document's pattern says).
        let digits = text.trim_matches([' ', '\t', '\n', '\r']);
        let plain = digits == "0"
            || (!digits.is_empty()
                && !digits.starts_with('0')
                && digits.bytes().all(|byte| byte.is_ascii_digit()));
        if !plain {
            return Err(invalid());
        }
        let number: i64 = digits.parse().map_err(|_| invalid())?;
        StateCode::new(number).map_err(|_| invalid())
    }
}

impl fmt::Display for StateCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_multiple_of_five_up_to_100_is_a_state_code() {
        let codes: Vec<u8> = StateCode::all().map(StateCode::value).collect();
        assert_eq!(codes.len(), 21);
        assert_eq!(codes.first(), Some(&0));
        assert_eq!(codes.last(), Some(&100));
        assert!(codes.windows(2).all(|pair| pair[1] - pair[0] == 5));
    }

    #[test]
    fn values_off_the_grid_are_rejected_with_the_valid_range() {
        for bad in [
            "7", "105", "-5", "abc", "", "5.0", "101", "+5", "05", "1e1", "\u{0}5",
        ] {
            let error = bad.parse::<StateCode>().expect_err(bad);
            assert_eq!(error.value, bad);
            assert!(
                error.to_string().contains("0 to 100 in steps of 5"),
                "{error}"
            );
        }
        assert!(StateCode::new(i64::MAX).is_err());
        assert!(StateCode::new(256).is_err(), "must not wrap into u8");
    }

    #[test]
    fn json_numbers_parse_and_bad_ones_name_the_range() {
        let code: StateCode = serde_json::from_str("45").expect("45 is a code");
        assert_eq!(code.value(), 45);
        assert_eq!(serde_json::to_string(&code).expect("serialize"), "45");
        for bad in ["7", "105", "-5", "\"abc\"", "5.5", "true", "null"] {
            let error = serde_json::from_str::<StateCode>(bad).expect_err(bad);
            assert!(error.to_string().contains("steps of 5"), "{bad}: {error}");
        }
        let from_text: StateCode = serde_json::from_str("\"10\"").expect("a numeric string");
        assert_eq!(from_text.value(), 10);
        let padded: StateCode = serde_json::from_str("\" 10\\n\"").expect("padding");
        assert_eq!(padded.value(), 10);
    }

    #[test]
    fn a_whole_json_number_written_with_a_fraction_is_that_code() {
        for (json, code) in [("5.0", 5), ("1e1", 10), ("100.0", 100), ("0.0", 0)] {
            let parsed: StateCode = serde_json::from_str(json).expect(json);
            assert_eq!(parsed.value(), code, "{json}");
        }
        for bad in ["5.5", "7.0", "105.0", "-5.0", "1e300"] {
            let error = serde_json::from_str::<StateCode>(bad).expect_err(bad);
            assert!(
                error.to_string().contains("is not a state code"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn names_and_phases_follow_the_product_table() {
        let code = |n| StateCode::new(n).expect("valid");
        assert_eq!(code(0).default_name(), "triggered");
        assert_eq!(code(10).default_name(), "green image (bootable, SSH)");
        assert_eq!(code(100).default_name(), "published");
        assert_eq!(code(0).phase(), Phase::Initial);
        assert_eq!(code(45).phase(), Phase::Infrastructure);
        assert_eq!(code(50).phase(), Phase::Application);
        assert_eq!(code(85).phase(), Phase::Validation);
        assert_eq!(code(100).phase(), Phase::Delivered);
    }

    #[test]
    fn next_stops_at_published_and_up_to_lists_the_skipped_stages() {
        assert_eq!(StateCode::PUBLISHED.next(), None);
        assert_eq!(StateCode::TRIGGERED.next().map(StateCode::value), Some(5));
        let skipped: Vec<u8> = StateCode::new(10)
            .expect("valid")
            .up_to(StateCode::new(25).expect("valid"))
            .map(StateCode::value)
            .collect();
        assert_eq!(skipped, [10, 15, 20]);
    }
}
