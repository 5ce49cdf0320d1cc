//! The environment as a lookup passed in by the caller: the CLI hands over the process's,
//! the Concourse resource and the GitHub Action hand over theirs, tests hand over a map.

use std::collections::BTreeMap;

/// Reads an environment variable; empty values count as unset. Passed in, so that tests and
/// callers decide what the environment is.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty variables treated as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// An environment held in a map, with empty values treated as unset like [`process_env`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvMap(BTreeMap<String, String>);

impl EnvMap {
    /// The variable `name`, unless unset or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|value| !value.is_empty()).cloned()
    }

    /// A copy of the process environment (variables that are not UTF-8 are left out).
    pub fn from_process() -> Self {
        EnvMap(
            std::env::vars_os()
                .filter_map(|(name, value)| {
                    Some((name.into_string().ok()?, value.into_string().ok()?))
                })
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for EnvMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        EnvMap(
            pairs
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let env: EnvMap = [("SET", "x"), ("EMPTY", "")].into_iter().collect();
        assert_eq!(env.get("SET").as_deref(), Some("x"));
        assert_eq!(env.get("EMPTY"), None);
        assert_eq!(env.get("MISSING"), None);
    }
}
