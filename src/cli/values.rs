//! Value parsers for flags whose values the command line knows in advance (stage codes,
//! statuses, scopes, roles): they parse with the domain's `FromStr`, so a bad value gets the
//! domain's sentence, and they list the values, so shell completions offer them. Durations
//! (`90s`, `15m`, `30d`) are parsed here too.

use std::ffi::OsStr;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use buildstate_domain::{BuildStatus, ReportStatus, Role, Scope, StateCode};
use clap::builder::{PossibleValue, StringValueParser, TypedValueParser};

/// The state codes as text, for [`PossibleValue`] (which takes `'static` text); a test checks
/// them against [`StateCode::all`].
const STATE_CODES: [&str; 21] = [
    "0", "5", "10", "15", "20", "25", "30", "35", "40", "45", "50", "55", "60", "65", "70", "75",
    "80", "85", "90", "95", "100",
];

/// Parses a `T` with its `FromStr` and offers `values` to completions.
#[derive(Clone, Debug)]
pub struct Known<T> {
    values: Vec<PossibleValue>,
    parsed: PhantomData<fn() -> T>,
}

impl<T> Known<T> {
    fn new(values: impl IntoIterator<Item = PossibleValue>) -> Self {
        Known {
            values: values.into_iter().collect(),
            parsed: PhantomData,
        }
    }
}

impl<T> TypedValueParser for Known<T>
where
    T: FromStr + Clone + Send + Sync + 'static,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        // Clap's own parser for `FromStr` types, so the error reads as for any other flag.
        StringValueParser::new()
            .try_map(|text| text.parse::<T>())
            .parse_ref(command, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.values.iter().cloned()))
    }
}

/// `--state`: 0 to 100 in steps of 5, each with its default stage name.
pub fn state_code() -> Known<StateCode> {
    Known::new(
        STATE_CODES
            .iter()
            .zip(StateCode::all())
            .map(|(text, code)| PossibleValue::new(*text).help(code.default_name())),
    )
}

/// `build update --status`.
pub fn report_status() -> Known<ReportStatus> {
    Known::new(
        ReportStatus::ALL
            .iter()
            .map(|s| PossibleValue::new(s.as_str())),
    )
}

/// `build list --status`.
pub fn build_status() -> Known<BuildStatus> {
    Known::new(
        BuildStatus::ALL
            .iter()
            .map(|s| PossibleValue::new(s.as_str())),
    )
}

/// `token create --scope`.
pub fn scope() -> Known<Scope> {
    Known::new(Scope::ALL.iter().map(|s| PossibleValue::new(s.as_str())))
}

/// `user create --role`.
pub fn role() -> Known<Role> {
    Known::new(Role::ALL.iter().map(|r| PossibleValue::new(r.as_str())))
}

/// Parses a duration such as `90`, `90s`, `15m`, `12h` or `30d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || {
        format!("`{text}` is not a duration: use a number with s, m, h or d, e.g. 90s, 15m, 30d")
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(unit_seconds)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_code_texts_are_the_domains_codes() {
        let codes: Vec<String> = StateCode::all().map(|c| c.value().to_string()).collect();
        assert_eq!(codes, STATE_CODES);
    }

    #[test]
    fn every_offered_value_parses() {
        let command = clap::Command::new("t");
        for value in state_code().possible_values().expect("values") {
            let parsed = state_code().parse_ref(&command, None, OsStr::new(value.get_name()));
            assert!(parsed.is_ok(), "{}", value.get_name());
        }
        for value in report_status().possible_values().expect("values") {
            let parsed = report_status().parse_ref(&command, None, OsStr::new(value.get_name()));
            assert!(parsed.is_ok(), "{}", value.get_name());
        }
    }

    #[test]
    fn a_value_not_offered_gets_the_domains_sentence() {
        let command = clap::Command::new("t");
        let error = state_code()
            .parse_ref(&command, None, OsStr::new("7"))
            .expect_err("7 is not a state code");
        assert!(
            error.to_string().contains("valid codes are 0 to 100"),
            "{error}"
        );
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        for bad in ["", "m", "1w", "-5", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
